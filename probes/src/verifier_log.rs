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
    let depths = line[at + "stack depth ".len()..].trim();
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
}
