//! Reads the verifier's statistics out of its log: the figures every kernel from
//! 4.16 prints at the end of a load ("processed N insns ..."), in both the old
//! one-line form and the 5.2+ form of `print_verification_stats()`.
//!
//! - 4.16 to 5.1 (log level 1): `processed 12 insns (limit 131072), stack depth 0+8`
//! - 5.2 on (with BPF_LOG_STATS): `verification time 31 usec`, `stack depth 0+8`,
//!   then `processed 12 insns (limit 1000000) max_states_per_insn 0 total_states 1
//!   peak_states 1 mark_read 1`

use crate::{CostSource, Figure, VerifierCost};

/// The statistics a log states, each marked [`CostSource::VerifierLog`]; figures
/// the log does not state stay absent. The last statement of each wins (a log
/// holds one load).
pub fn stats(log: &str) -> VerifierCost {
    let mut cost = VerifierCost::default();
    let fig = |value: u64| {
        Some(Figure {
            value,
            from: CostSource::VerifierLog,
        })
    };
    for line in log.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("verification time ") {
            if let Some(us) = rest
                .strip_suffix(" usec")
                .and_then(|n| n.trim().parse().ok())
            {
                cost.verification_usec = fig(us);
            }
        }
        if let Some(depths) = stack_depth(line) {
            cost.stack_depth = depths;
            cost.stack_depth_from = Some(CostSource::VerifierLog);
        }
        if let Some(rest) = line.strip_prefix("processed ") {
            let words: Vec<&str> = rest
                .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
                .filter(|w| !w.is_empty())
                .collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
                    .and_then(|n| n.parse::<u64>().ok())
            };
            let Some(insns) = words.first().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if words.get(1) != Some(&"insns") {
                continue;
            }
            cost.insns_processed = fig(insns);
            cost.insn_limit = after("limit").and_then(fig);
            cost.max_states_per_insn = after("max_states_per_insn").and_then(fig);
            cost.total_states = after("total_states").and_then(fig);
            cost.peak_states = after("peak_states").and_then(fig);
            cost.mark_read = after("mark_read").and_then(fig);
        }
    }
    cost
}

/// "stack depth 8+0", alone on its line (5.2+) or at the end of the "processed"
/// line (before 5.2).
fn stack_depth(line: &str) -> Option<Vec<u32>> {
    let at = line.find("stack depth ")?;
    if at > 0 && !line.starts_with("processed ") {
        return None;
    }
    // 7.x adds the rounded total after the depths ("stack depth 8 max 16"; 16
    // under the JIT, 32 under the interpreter): the depths are the first word.
    let depths = line[at + "stack depth ".len()..]
        .split_whitespace()
        .next()?;
    let parsed: Option<Vec<u32>> = depths.split('+').map(|d| d.trim().parse().ok()).collect();
    parsed.filter(|d| !d.is_empty())
}

/// The verifier's last meaningful lines, at most `max_lines` and `max_bytes` (kept
/// from the end). Statistics lines and precision-backtracking chatter are
/// dropped: the refusal itself is the line before them.
pub fn tail(log: &str, max_lines: usize, max_bytes: usize) -> String {
    let meaningful: Vec<&str> = log
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            !(l.starts_with("processed ")
                // 7.x also says "insns processed N" after a refusal.
                || l.starts_with("insns processed ")
                || l.starts_with("verification time")
                || l.starts_with("stack depth")
                || l.starts_with("Live regs before insn")
                || l.starts_with("-- END PROG LOAD LOG --")
                // Precision backtracking chatter (5.10+), not the verdict.
                || l.starts_with("regs=")
                || l.starts_with("last_idx ")
                || l.starts_with("parent didn't have regs")
                || l.starts_with("mark_precise:"))
        })
        .collect();
    let start = meaningful.len().saturating_sub(max_lines);
    let mut tail = meaningful[start..].join("\n");
    if tail.len() > max_bytes {
        let mut cut = tail.len() - max_bytes;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}

/// The statistics lines of a log (what [`stats`] reads), in their order: what an
/// accepted program's record keeps of its log (before 5.2 the kernel gives them
/// only at the end of the full level-1 trace).
pub fn stats_lines(log: &str) -> String {
    log.lines()
        .map(str::trim_end)
        .filter(|l| {
            l.starts_with("processed ")
                || l.starts_with("verification time ")
                || l.starts_with("stack depth ")
        })
        .fold(String::new(), |mut out, l| {
            out.push_str(l);
            out.push('\n');
            out
        })
}

/// The last `max_bytes` of `log` at most, starting on a character boundary,
/// and how many bytes were left out before it.
pub fn last_bytes(log: &str, max_bytes: usize) -> (&str, usize) {
    let mut cut = log.len().saturating_sub(max_bytes);
    while !log.is_char_boundary(cut) {
        cut += 1;
    }
    (&log[cut..], cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(cost: &Option<Figure>) -> Option<u64> {
        cost.map(|f| {
            assert_eq!(f.from, CostSource::VerifierLog);
            f.value
        })
    }

    #[test]
    fn reads_the_one_line_form_before_5_2() {
        let c = stats(
            "0: (b7) r0 = 0\n1: (95) exit\nprocessed 2 insns (limit 131072), stack depth 0+8\n",
        );
        assert_eq!(v(&c.insns_processed), Some(2));
        assert_eq!(v(&c.insn_limit), Some(131072));
        assert_eq!(c.stack_depth, [0, 8]);
        assert_eq!(v(&c.total_states), None, "absent, not zero");
        assert_eq!(v(&c.verification_usec), None);
    }

    #[test]
    fn reads_the_stats_form_from_5_2() {
        let c = stats(
            "verification time 31 usec\nstack depth 16\nprocessed 12 insns (limit 1000000) max_states_per_insn 1 total_states 3 peak_states 2 mark_read 1\n",
        );
        assert_eq!(v(&c.verification_usec), Some(31));
        assert_eq!(c.stack_depth, [16]);
        assert_eq!(
            [
                &c.insns_processed,
                &c.insn_limit,
                &c.max_states_per_insn,
                &c.total_states,
                &c.peak_states,
                &c.mark_read
            ]
            .map(v),
            [
                Some(12),
                Some(1_000_000),
                Some(1),
                Some(3),
                Some(2),
                Some(1)
            ]
        );
    }

    #[test]
    fn an_empty_or_foreign_log_states_nothing() {
        assert_eq!(stats(""), VerifierCost::default());
        assert_eq!(
            stats("processed the request\nR1 stack depth is fine\n"),
            VerifierCost::default()
        );
    }

    #[test]
    fn the_tail_is_the_refusal_without_statistics_or_backtracking() {
        let log = "func#0 @0\n0: R1=ctx() R10=fp0\n0: (85) call bpf_tail_call#12\n\
                   tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls\n\
                   processed 21 insns (limit 1000000) max_states_per_insn 0\n\
                   stack depth 8+0\nverification time 42 usec\n\n";
        assert_eq!(
            tail(log, 2, 2048),
            "0: (85) call bpf_tail_call#12\n\
             tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls"
        );
        let backtracking = "1: (85) call pc+2\nregs=40 stack=0 before 5: (bf) r7 = r1\n\
                            last_idx 20 first_idx 4\n\
                            tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls\n";
        assert_eq!(
            tail(backtracking, 2, 2048),
            "1: (85) call pc+2\n\
             tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls"
        );
        let long = "x".repeat(5000) + "\nlast line";
        let t = tail(&long, 4, 100);
        assert!(t.len() <= 100 && t.ends_with("last line"));
        assert_eq!(tail("", 4, 100), "");
    }

    #[test]
    fn the_last_bytes_start_on_a_character() {
        assert_eq!(last_bytes("abcdef", 4), ("cdef", 2));
        assert_eq!(last_bytes("abc", 10), ("abc", 0));
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(last_bytes("aébc", 3), ("bc", 3));
    }

    #[test]
    fn statistics_lines_are_kept_alone() {
        let log = "0: (b7) r0 = 0\n1: (95) exit\nprocessed 2 insns (limit 131072), stack depth 0\n";
        assert_eq!(
            stats_lines(log),
            "processed 2 insns (limit 131072), stack depth 0\n"
        );
        assert_eq!(stats_lines("R1 stack depth is fine\n"), "");
    }

    /// Real logs, as the kernels wrote them for tests/data/verifier-logs/'s
    /// programs: count_by_len (a socket filter calling a `__noinline` subprogram
    /// with a 40-byte frame, accepted), bad_stack_read (a variable-offset stack
    /// read, refused), stamp_tai (bpf_ktime_get_tai_ns, helper 208, which 5.10
    /// lacks). The figures below are read off the log text.
    mod real_logs {
        use super::*;

        const ACCEPTED_5_10: &str =
            include_str!("../../tests/data/verifier-logs/5.10-accepted-stats.log");
        const ACCEPTED_6_1: &str =
            include_str!("../../tests/data/verifier-logs/6.1-accepted-stats.log");
        const ACCEPTED_6_12: &str =
            include_str!("../../tests/data/verifier-logs/6.12-accepted-stats.log");
        const ACCEPTED_4_16: &str =
            include_str!("../../tests/data/verifier-logs/4.16-accepted-level1.log");
        const REJECTED_5_10: &str =
            include_str!("../../tests/data/verifier-logs/5.10-rejected-unknown-func.log");
        const REJECTED_6_1: &str =
            include_str!("../../tests/data/verifier-logs/6.1-rejected-stack-read.log");
        const REJECTED_6_12: &str =
            include_str!("../../tests/data/verifier-logs/6.12-rejected-stack-read.log");
        const REJECTED_4_16: &str =
            include_str!("../../tests/data/verifier-logs/4.16-rejected-stack-read.log");
        // Debian sid's 7.2.13: clock.o's count_packets (accepted, JIT) and a
        // socket filter calling helper 999 (refused).
        const ACCEPTED_7_2: &str =
            include_str!("../../tests/data/verifier-logs/7.2-accepted-stats.log");
        const REJECTED_7_2: &str =
            include_str!("../../tests/data/verifier-logs/7.2-rejected-unknown-func.log");

        /// insns, limit, max_states_per_insn, total, peak, mark_read, usec.
        fn figures(c: &VerifierCost) -> [Option<u64>; 7] {
            [
                &c.insns_processed,
                &c.insn_limit,
                &c.max_states_per_insn,
                &c.total_states,
                &c.peak_states,
                &c.mark_read,
                &c.verification_usec,
            ]
            .map(v)
        }

        #[test]
        fn accepted_statistics_from_5_10_6_1_and_6_12() {
            // "verification time 6322 usec", "stack depth 0+40", "processed 39
            // insns (limit 1000000) max_states_per_insn 1 total_states 3
            // peak_states 3 mark_read 1".
            let c = stats(ACCEPTED_5_10);
            assert_eq!(
                figures(&c),
                [
                    Some(39),
                    Some(1_000_000),
                    Some(1),
                    Some(3),
                    Some(3),
                    Some(1),
                    Some(6322)
                ]
            );
            assert_eq!(c.stack_depth, [0, 40]);
            assert_eq!(c.stack_depth_from, Some(CostSource::VerifierLog));
            // Same program, same counts; 25558 usec on 6.1, 14033 on 6.12.
            for (log, usec) in [(ACCEPTED_6_1, 25558), (ACCEPTED_6_12, 14033)] {
                let c = stats(log);
                assert_eq!(
                    figures(&c),
                    [
                        Some(39),
                        Some(1_000_000),
                        Some(1),
                        Some(3),
                        Some(3),
                        Some(1),
                        Some(usec)
                    ]
                );
                assert_eq!(c.stack_depth, [0, 40]);
            }
            // An accepted record keeps these three lines, the whole log here.
            assert_eq!(stats_lines(ACCEPTED_6_12), ACCEPTED_6_12);
        }

        #[test]
        fn accepted_level_1_trace_from_4_16() {
            // The last line of a 2.9 KB trace: "processed 65 insns (limit
            // 131072), stack depth 0+40"; no states, no time.
            let c = stats(ACCEPTED_4_16);
            assert_eq!(
                figures(&c),
                [Some(65), Some(131_072), None, None, None, None, None]
            );
            assert_eq!(c.stack_depth, [0, 40]);
            assert_eq!(
                stats_lines(ACCEPTED_4_16),
                "processed 65 insns (limit 131072), stack depth 0+40\n"
            );
        }

        #[test]
        fn rejected_unknown_helper_on_5_10() {
            assert_eq!(
                tail(REJECTED_5_10, 4, 2048),
                "2: (63) *(u32 *)(r10 -4) = r1\n\
                 ; __u64 now = bpf_ktime_get_tai_ns();\n\
                 3: (85) call unknown#208\n\
                 invalid func unknown#208"
            );
            // A refusal's log ends with the statistics too: "verification time
            // 96 usec", "stack depth 4", "processed 4 insns ... total_states 0".
            let c = stats(REJECTED_5_10);
            assert_eq!(
                figures(&c),
                [
                    Some(4),
                    Some(1_000_000),
                    Some(0),
                    Some(0),
                    Some(0),
                    Some(0),
                    Some(96)
                ]
            );
            assert_eq!(c.stack_depth, [4]);
        }

        #[test]
        fn rejected_stack_read_on_6_1_and_6_12() {
            let t = tail(REJECTED_6_1, 4, 2048);
            let lines: Vec<&str> = t.lines().collect();
            assert_eq!(lines.len(), 4);
            assert!(lines[0].starts_with("5: (07) r2 += -8 "), "{t}");
            assert_eq!(lines[2], "7: (71) r0 = *(u8 *)(r2 +0)");
            assert_eq!(
                lines[3],
                "invalid variable-offset read from stack R2 var_off=(0x0; 0x7f) size=1"
            );
            let c = stats(REJECTED_6_1);
            assert_eq!(
                (v(&c.insns_processed), v(&c.verification_usec)),
                (Some(8), Some(570))
            );
            assert_eq!(c.stack_depth, [8]);

            let t = tail(REJECTED_6_12, 1, 2048);
            assert_eq!(
                t,
                "invalid variable-offset read from stack R2 var_off=(0x0; 0x7f) off=-8 size=1"
            );
            let c = stats(REJECTED_6_12);
            assert_eq!(
                (v(&c.insns_processed), v(&c.verification_usec)),
                (Some(8), Some(745))
            );
            // The byte cap keeps the end, the refusal.
            assert!(tail(REJECTED_6_12, 4, 100).ends_with("off=-8 size=1"));
        }

        #[test]
        fn the_7_x_forms_stack_depth_max_and_insns_processed() {
            // "verification time 6530 usec", "stack depth 8 max 16", "processed 12
            // insns (limit 1000000) max_states_per_insn 0 total_states 1
            // peak_states 1 mark_read 0".
            let c = stats(ACCEPTED_7_2);
            assert_eq!(
                figures(&c),
                [
                    Some(12),
                    Some(1_000_000),
                    Some(0),
                    Some(1),
                    Some(1),
                    Some(0),
                    Some(6530)
                ]
            );
            assert_eq!(c.stack_depth, [8]);
            // The refusal is "invalid func unknown#999", not the "insns processed
            // 2" that follows it.
            assert_eq!(
                tail(REJECTED_7_2, 2, 2048),
                "1: (85) call unknown#999\ninvalid func unknown#999"
            );
            let c = stats(REJECTED_7_2);
            assert_eq!(
                (v(&c.insns_processed), v(&c.verification_usec)),
                (Some(2), Some(691))
            );
            assert_eq!(c.stack_depth, [0]);
        }

        #[test]
        fn rejected_on_4_16_states_no_figures() {
            // 4.16 prints its one statistics line only for an accepted program.
            assert_eq!(stats(REJECTED_4_16), VerifierCost::default());
            assert_eq!(
                tail(REJECTED_4_16, 2, 2048),
                "7: (71) r0 = *(u8 *)(r2 +0)\n\
                 variable stack access var_off=(0x0; 0x7f) off=-8 size=1"
            );
        }
    }
}
