//! Renders kernel runs for a person: the terminal table (cases down, kernels and
//! JIT modes across), the list of disagreements with both sides and the verifier's
//! words, and a one-line verdict.

use crate::expect::{describe_expected, describe_outcome, errno_name, last_line};
use crate::matrix::{Cell, KernelRun, RunStatus, Verdict};
use bpfmatrix_probes::{CaseId, JitMode, Outcome};
use std::fmt::Write;

/// A short text for a cell: what the kernel did and the number that matters.
pub fn cell_summary(cell: &Cell) -> String {
    let Some(record) = &cell.record else {
        return "no answer".to_string();
    };
    match &record.outcome {
        Outcome::Accepted => {
            let m = &record.measured;
            let mut s = "accepted".to_string();
            if let Some(n) = m.tail_calls {
                let _ = write!(s, ", {n} tail calls");
            }
            if let Some(f) = m.fell_through {
                s += if f { ", falls through" } else { ", no fall-through" };
            }
            if !m.verdicts.is_empty() {
                let seen: Vec<String> = m
                    .verdicts
                    .iter()
                    .map(|v| {
                        let saw: Vec<String> = v.fexit_saw.iter().map(i64::to_string).collect();
                        format!("{}→{}", v.configured, saw.join("/"))
                    })
                    .collect();
                let _ = write!(s, ", fexit {}", seen.join(" "));
            }
            s
        }
        Outcome::Rejected { errno, .. } => format!("rejected {}", errno_name(*errno)),
        Outcome::Unsupported { .. } => "unsupported".to_string(),
        Outcome::Error { .. } => "error".to_string(),
    }
}

fn mark(cell: &Cell) -> &'static str {
    match cell.verdict {
        Verdict::Agrees => "✓",
        Verdict::Disagrees { .. } => "✗",
        Verdict::NoAnswer { .. } => "?",
    }
}

fn paint(text: &str, cell: &Cell, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let code = match cell.verdict {
        Verdict::Agrees => "32",
        Verdict::Disagrees { .. } => "31",
        Verdict::NoAnswer { .. } => "33",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn status_line(run: &KernelRun) -> String {
    let mut s = format!("{}: ", run.kernel);
    match &run.status {
        RunStatus::Completed => {
            let _ = write!(
                s,
                "guest {} under {}",
                run.guest_release.as_deref().unwrap_or("?"),
                run.accel.as_deref().unwrap_or("?")
            );
            if let Some(ms) = run.boot_wall_ms {
                let _ = write!(s, ", boot to exit {:.1} s", ms as f64 / 1000.0);
            }
            if let (Some(a), Some(d)) = (run.agent_start_ms, run.agent_done_ms) {
                let _ = write!(
                    s,
                    " (agent up at {:.2} s, done at {:.2} s guest time)",
                    a as f64 / 1000.0,
                    d as f64 / 1000.0
                );
            }
        }
        RunStatus::Unavailable { reason } => {
            let _ = write!(s, "unavailable: {reason}");
        }
        RunStatus::Failed { reason } => {
            let _ = write!(s, "FAILED: {reason}");
        }
    }
    if let Some(why) = &run.kvm_fallback {
        let _ = write!(s, "\n  KVM fell back to TCG: {why}");
    }
    s
}

/// The terminal report: a status line per kernel, the table, then every
/// disagreement and missing answer spelled out, then the verdict line.
pub fn terminal(runs: &[KernelRun], color: bool) -> String {
    let mut out = String::new();
    for run in runs {
        out += &status_line(run);
        out.push('\n');
        for w in &run.warnings {
            let _ = writeln!(out, "  guest warning: {w}");
        }
        for p in run.problems.iter().skip(1) {
            let _ = writeln!(out, "  also: {p}");
        }
    }
    out.push('\n');

    let columns: Vec<(&KernelRun, JitMode)> = runs
        .iter()
        .flat_map(|r| JitMode::ALL.into_iter().map(move |m| (r, m)))
        .filter(|(r, m)| r.cells.iter().any(|c| c.jit == *m))
        .collect();
    let cases: Vec<CaseId> = CaseId::ALL
        .into_iter()
        .filter(|c| runs.iter().any(|r| r.cells.iter().any(|x| x.case == *c)))
        .collect();
    let mut header = vec!["case".to_string()];
    header.extend(columns.iter().map(|(r, m)| format!("{} {}", r.kernel, m)));
    let mut rows: Vec<Vec<(String, Option<&Cell>)>> = Vec::new();
    for case in &cases {
        let mut row = vec![(case.to_string(), None)];
        for (run, mode) in &columns {
            row.push(match run.cell(*case, *mode) {
                Some(cell) => (format!("{} {}", mark(cell), cell_summary(cell)), Some(cell)),
                None => ("".to_string(), None),
            });
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].0.chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| -> String {
        cells.join("  ").trim_end().to_string() + "\n"
    };
    out += &line(
        header
            .iter()
            .zip(&widths)
            .map(|(h, w)| format!("{h:<w$}"))
            .collect(),
    );
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in &rows {
        out += &line(
            row.iter()
                .zip(&widths)
                .map(|((text, cell), w)| {
                    let padded = format!("{text:<w$}");
                    match cell {
                        Some(c) => paint(&padded, c, color),
                        None => padded,
                    }
                })
                .collect(),
        );
    }

    let mut details = String::new();
    for run in runs {
        if !matches!(run.status, RunStatus::Completed | RunStatus::Failed { .. }) {
            continue;
        }
        for cell in &run.cells {
            if cell.passed() {
                continue;
            }
            let _ = writeln!(details, "\n{} {} {}:", run.kernel, cell.jit, cell.case);
            details += &explain(cell);
        }
    }
    out += &details;
    out.push('\n');
    out += &verdict_line(runs);
    out.push('\n');
    out
}

/// Expected, got, and the verifier's words, one per line, for a cell that did
/// not agree.
pub fn explain(cell: &Cell) -> String {
    let mut s = String::new();
    if let Some(e) = &cell.expected {
        let _ = writeln!(
            s,
            "  expected: {}  [{}]",
            describe_expected(&e.outcome),
            e.because
        );
    }
    match &cell.record {
        Some(r) => {
            let _ = writeln!(s, "  got:      {}", describe_outcome(&r.outcome));
            if r.outcome == Outcome::Accepted {
                if let Ok(m) = serde_json::to_string(&r.measured) {
                    let _ = writeln!(s, "  measured: {m}");
                }
            }
            if let Outcome::Rejected { verifier_tail, .. } = &r.outcome {
                let _ = writeln!(s, "  verifier: {}", last_line(verifier_tail));
            }
        }
        None => s += "  got:      no record\n",
    }
    match &cell.verdict {
        Verdict::Disagrees { differences } => {
            for d in differences {
                let _ = writeln!(s, "  - {d}");
            }
        }
        Verdict::NoAnswer { reason } => {
            let _ = writeln!(s, "  - no answer: {reason}");
        }
        Verdict::Agrees => {}
    }
    s
}

/// One line a person (or CI log) can read at a glance.
pub fn verdict_line(runs: &[KernelRun]) -> String {
    let cells = runs.iter().filter(|r| !matches!(r.status, RunStatus::Unavailable { .. }));
    let (mut agree, mut disagree, mut missing) = (0, 0, 0);
    for c in cells.flat_map(|r| &r.cells) {
        match c.verdict {
            Verdict::Agrees => agree += 1,
            Verdict::Disagrees { .. } => disagree += 1,
            Verdict::NoAnswer { .. } => missing += 1,
        }
    }
    let failed = runs
        .iter()
        .filter(|r| matches!(r.status, RunStatus::Failed { .. }))
        .count();
    let unavailable: Vec<&str> = runs
        .iter()
        .filter(|r| matches!(r.status, RunStatus::Unavailable { .. }))
        .map(|r| r.kernel.as_str())
        .collect();
    let ok = disagree == 0 && missing == 0 && failed == 0 && agree > 0;
    let mut s = format!(
        "{}: {agree} cells agree with the documented kernel facts, {disagree} disagree, {missing} without an answer",
        if ok { "OK" } else { "FAILED" }
    );
    if failed > 0 {
        let _ = write!(s, "; {failed} kernel run(s) failed");
    }
    if !unavailable.is_empty() {
        let _ = write!(s, "; unavailable here: {}", unavailable.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::Collected;
    use bpfmatrix_probes::{CaseRecord, Measured};

    fn run(n: u32) -> KernelRun {
        let record = CaseRecord {
            case: CaseId::TailCallChain,
            jit: JitMode::Jit,
            outcome: Outcome::Accepted,
            measured: Measured {
                tail_calls: Some(n),
                ..Measured::default()
            },
            duration_ms: 1,
        };
        KernelRun::judge(
            "6.1",
            "test",
            &[CaseId::TailCallChain],
            &[JitMode::Jit],
            Collected {
                release: Some("6.1.0-56-amd64".into()),
                done_ms: Some(1),
                records: [((record.case, record.jit), record)].into(),
                ..Collected::default()
            },
            None,
        )
    }

    #[test]
    fn an_agreeing_run_reads_ok() {
        let text = terminal(&[run(33)], false);
        assert!(text.contains("tail_call.chain  ✓ accepted, 33 tail calls"), "{text}");
        assert!(text.ends_with("OK: 1 cells agree with the documented kernel facts, 0 disagree, 0 without an answer\n"), "{text}");
    }

    #[test]
    fn a_disagreement_shows_expected_and_got() {
        let text = terminal(&[run(32)], false);
        assert!(text.contains("✗ accepted, 32 tail calls"), "{text}");
        assert!(text.contains("  expected: accepted, 33 tail calls"), "{text}");
        assert!(text.contains("  - tail calls: expected 33, got 32"), "{text}");
        assert!(text.contains("FAILED: 0 cells agree"), "{text}");
    }

    #[test]
    fn unavailable_kernels_are_named_and_never_counted_as_passes() {
        let gone = KernelRun::unavailable(
            "4.16",
            "x",
            "not reachable".into(),
            &[CaseId::TailCallChain],
            &[JitMode::Jit],
        );
        let text = terminal(&[run(33), gone], false);
        assert!(text.contains("4.16: unavailable: not reachable"), "{text}");
        assert!(text.contains("unavailable here: 4.16"), "{text}");
        assert!(verdict_line(&[KernelRun::unavailable(
            "4.16",
            "x",
            "gone".into(),
            &[CaseId::TailCallChain],
            &[JitMode::Jit]
        )])
        .starts_with("FAILED"));
    }
}
