//! Renders a matrix document for people: the terminal table (cases down, kernels
//! and JIT modes across) with every disagreement spelled out, the Markdown table for
//! GitHub and `$GITHUB_STEP_SUMMARY`, the self-contained HTML page, and a one-line
//! verdict.

mod html;
mod markdown;

pub use html::html;
pub use markdown::markdown;

use crate::document::{CellVerdict, Document, Gap, KernelEntry, Record, Status};
use crate::expect::last_line;
use bpfmatrix_probes::{CaseId, JitMode, Measured};
use std::fmt::Write;

/// A short text for a cell: what the kernel did and the number that matters.
pub fn cell_summary(r: &Record) -> String {
    let Some(outcome) = r.outcome.as_deref() else {
        return "no answer".to_string();
    };
    match outcome {
        "accepted" => {
            let mut s = "accepted".to_string();
            if let Some(m) = &r.measured {
                if let Some(n) = m.tail_calls {
                    let _ = write!(s, ", {n} tail calls");
                }
                if m.tail_calls.is_none() && m.fell_through.is_none() && m.verdicts.is_empty() {
                    if let Some(rv) = m.retval {
                        let _ = write!(s, ", returns {rv}");
                    }
                }
                if let Some(f) = m.fell_through {
                    s += if f {
                        ", falls through"
                    } else {
                        ", no fall-through"
                    };
                }
                if !m.verdicts.is_empty() {
                    let _ = write!(s, ", {}", fexit_seen(m));
                }
            }
            s
        }
        "rejected" => format!(
            "rejected {}",
            r.errno_name.as_deref().unwrap_or("(no errno)")
        ),
        other => other.to_string(),
    }
}

/// The cell in a few characters, for a terminal that shows many kernels side by
/// side: the number that matters, or the errno of a refusal.
pub fn short_summary(r: &Record) -> String {
    let (Some(outcome), Some(m)) = (r.outcome.as_deref(), &r.measured) else {
        return "no answer".to_string();
    };
    match outcome {
        "accepted" if !m.verdicts.is_empty() => fexit_seen(m),
        "accepted" if m.fell_through.is_some() => if m.fell_through == Some(true) {
            "falls through"
        } else {
            "no fall-through"
        }
        .to_string(),
        "accepted" => match (m.tail_calls, m.retval) {
            (Some(n), _) => format!("{n} tail calls"),
            (None, Some(rv)) => format!("returns {rv}"),
            (None, None) => "accepted".to_string(),
        },
        "rejected" => format!("rejected {}", r.errno_name.as_deref().unwrap_or("")),
        other => other.to_string(),
    }
}

/// Each configured verdict and what fexit saw for it: "fexit 0→0 2→2".
fn fexit_seen(m: &Measured) -> String {
    let seen: Vec<String> = m
        .verdicts
        .iter()
        .map(|v| {
            let saw: Vec<String> = v.fexit_saw.iter().map(i64::to_string).collect();
            format!("{}→{}", v.configured, saw.join("/"))
        })
        .collect();
    format!("fexit {}", seen.join(" "))
}

fn mark(r: &Record) -> &'static str {
    match r.verdict {
        CellVerdict::Agrees => "✓",
        CellVerdict::Disagrees => "✗",
        CellVerdict::NoAnswer => "?",
    }
}

fn ansi(r: &Record) -> &'static str {
    match r.verdict {
        CellVerdict::Agrees => "32",
        CellVerdict::Disagrees => "31",
        CellVerdict::NoAnswer => "33",
    }
}

/// The kernel's status in a few words: what booted, how, and how long it took.
pub fn kernel_line(k: &KernelEntry) -> String {
    let mut s = format!("{}: ", k.name);
    match k.status {
        Status::Completed => {
            let _ = write!(
                s,
                "guest {} under {}",
                k.guest_release.as_deref().unwrap_or("?"),
                k.accel.as_deref().unwrap_or("?")
            );
            if let Some(ms) = k.boot_wall_ms {
                let _ = write!(s, ", QEMU start to exit {:.1} s", ms as f64 / 1000.0);
            }
            if let (Some(a), Some(d)) = (k.agent_start_ms, k.agent_done_ms) {
                let _ = write!(
                    s,
                    " (guest uptime: agent started {:.2} s, done {:.2} s)",
                    a as f64 / 1000.0,
                    d as f64 / 1000.0
                );
            }
        }
        Status::Unavailable => {
            let _ = write!(s, "unavailable: {}", k.reason.as_deref().unwrap_or("?"));
        }
        Status::Failed => {
            let _ = write!(s, "FAILED: {}", k.reason.as_deref().unwrap_or("?"));
        }
    }
    s
}

/// What a table shows where a kernel has no record for a cell at all.
pub(crate) const MISSING: &str = "missing";

/// A row of the matrix: the case and its record in each column.
pub(crate) type Row<'a> = (String, Vec<Option<&'a Record>>);

/// The column headers and rows of the matrix, for every renderer; the terminal
/// leaves out kernels that could not be had (their line above says why).
pub(crate) fn grid(doc: &Document, unavailable_too: bool) -> (Vec<String>, Vec<Row<'_>>) {
    let columns: Vec<_> = doc
        .columns()
        .into_iter()
        .filter(|(k, _)| unavailable_too || k.status != Status::Unavailable)
        .collect();
    let header = columns
        .iter()
        .map(|(k, m)| format!("{} {}", k.name, m))
        .collect();
    let rows = doc
        .cases()
        .into_iter()
        .map(|case| {
            let cells = columns
                .iter()
                .map(|(k, m)| doc.record(&k.name, *m, case))
                .collect();
            (case.to_string(), cells)
        })
        .collect();
    (header, rows)
}

/// The terminal report: a status line per kernel, the table, every cell that did
/// not agree spelled out, then the verdict line.
pub fn terminal(doc: &Document, color: bool) -> String {
    let mut out = String::new();
    let mut fallbacks_said = Vec::new();
    for k in &doc.kernels {
        out += &kernel_line(k);
        out.push('\n');
        if let Some(why) = &k.kvm_fallback {
            // Kernels of one run share the host's KVM verdict: say it once.
            if !fallbacks_said.contains(&why) {
                let _ = writeln!(out, "  KVM fell back to TCG: {why}");
                fallbacks_said.push(why);
            }
        }
        for w in &k.warnings {
            let _ = writeln!(out, "  guest warning: {w}");
        }
        for p in k.problems.iter().skip(1) {
            let _ = writeln!(out, "  also: {p}");
        }
    }
    out.push('\n');
    let (header, rows) = grid(doc, false);
    let texts: Vec<Vec<String>> = rows
        .iter()
        .map(|(case, cells)| {
            std::iter::once(case.clone())
                .chain(cells.iter().map(|c| match c {
                    Some(r) => format!("{} {}", mark(r), short_summary(r)),
                    None => format!("? {MISSING}"),
                }))
                .collect()
        })
        .collect();
    let header: Vec<String> = std::iter::once("case".to_string()).chain(header).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            texts
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |t: &str, w: usize| format!("{t:<w$}");
    let join = |cells: Vec<String>| cells.join("  ").trim_end().to_string() + "\n";
    out += &join(
        header
            .iter()
            .zip(&widths)
            .map(|(h, w)| pad(h, *w))
            .collect(),
    );
    out += &join(widths.iter().map(|w| "-".repeat(*w)).collect());
    for ((_, cells), text) in rows.iter().zip(&texts) {
        let mut line = vec![pad(&text[0], widths[0])];
        for (i, cell) in cells.iter().enumerate() {
            let padded = pad(&text[i + 1], widths[i + 1]);
            line.push(match (cell, color) {
                (Some(r), true) => format!("\x1b[{}m{padded}\x1b[0m", ansi(r)),
                _ => padded,
            });
        }
        out += &join(line);
    }
    for k in doc
        .kernels
        .iter()
        .filter(|k| k.status != Status::Unavailable)
    {
        let wrong: Vec<&Record> = doc
            .records
            .iter()
            .filter(|r| r.kernel == k.name && !r.agrees())
            .collect();
        // A guest that never answered gets one line, not one block per cell.
        if wrong.len() > 1 && wrong.iter().all(|r| r.outcome.is_none()) {
            let why = wrong[0].differences.join("; ");
            let _ = writeln!(
                out,
                "\n{}: no answer for {} cells: {why}",
                k.name,
                wrong.len()
            );
            continue;
        }
        for r in wrong {
            let _ = write!(out, "\n{} {} {}:\n{}", r.kernel, r.jit, r.case, explain(r));
        }
    }
    let coverage = coverage_lines(doc);
    if !coverage.is_empty() {
        out.push('\n');
    }
    for line in coverage {
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
    out += &verdict_line(doc);
    out.push('\n');
    out
}

/// Expected, got, the verifier's words and each difference, one per line.
pub fn explain(r: &Record) -> String {
    let mut s = String::new();
    if let Some(e) = &r.expected {
        let because = r.expected_because.as_deref().unwrap_or("");
        let _ = writeln!(s, "  expected: {e}  [{because}]");
    }
    let got = match (&r.outcome, &r.step) {
        (None, _) => "no record".to_string(),
        (Some(o), Some(step)) => format!(
            "{o} at {step}, {}",
            r.errno_name.as_deref().unwrap_or("no errno")
        ),
        (Some(o), None) => o.clone(),
    };
    let _ = writeln!(s, "  got:      {got}");
    if let Some(d) = &r.detail {
        let _ = writeln!(s, "  detail:   {d}");
    }
    if let Some(m) = &r.measured {
        if let Ok(json) = serde_json::to_string(m) {
            if json != "{}" {
                let _ = writeln!(s, "  measured: {json}");
            }
        }
    }
    if let Some(v) = &r.verifier {
        let _ = writeln!(s, "  verifier: {}", last_line(v));
    }
    for d in &r.differences {
        let _ = writeln!(s, "  - {d}");
    }
    s
}

/// What the merge required and, for each required kernel that is not covered,
/// why; nothing for a document no merge required anything of.
pub fn coverage_lines(doc: &Document) -> Vec<String> {
    let Some(coverage) = &doc.coverage else {
        return vec![];
    };
    let mut first = format!(
        "required: {} (every case in both JIT modes: {} cells each)",
        coverage.require.join(", "),
        CaseId::ALL.len() * JitMode::ALL.len()
    );
    if !coverage.allow_unavailable.is_empty() {
        let _ = write!(
            first,
            "; allowed to be unavailable: {}",
            coverage.allow_unavailable.join(", ")
        );
    }
    let gaps = doc.coverage_gaps();
    if gaps.is_empty() {
        first += "; every required kernel is covered";
    }
    std::iter::once(first)
        .chain(gaps.iter().map(ToString::to_string))
        .collect()
}

/// One line a person (or a CI log) reads at a glance.
pub fn verdict_line(doc: &Document) -> String {
    let gaps = doc.coverage_gaps();
    let coverage = if gaps.is_empty() {
        String::new()
    } else {
        let short: Vec<String> = gaps.iter().map(Gap::short).collect();
        format!("; required but not covered: {}", short.join(", "))
    };
    verdict_cells(doc) + &coverage
}

fn verdict_cells(doc: &Document) -> String {
    let tested = |r: &&Record| {
        doc.kernel(&r.kernel)
            .is_some_and(|k| k.status != Status::Unavailable)
    };
    let count = |v: CellVerdict| {
        doc.records
            .iter()
            .filter(tested)
            .filter(|r| r.verdict == v)
            .count()
    };
    let failed = doc
        .kernels
        .iter()
        .filter(|k| k.status == Status::Failed)
        .count();
    let unavailable: Vec<&str> = doc
        .kernels
        .iter()
        .filter(|k| k.status == Status::Unavailable)
        .map(|k| k.name.as_str())
        .collect();
    if unavailable.len() == doc.kernels.len() {
        // Not a pass, and not a kernel that misbehaved either: nothing was tested.
        return format!(
            "NOTHING TESTED: no kernel could be had here (unavailable: {})",
            unavailable.join(", ")
        );
    }
    let mut s = format!(
        "{}: {} cells agree with the documented kernel facts, {} disagree, {} without an answer",
        if doc.all_agree() { "OK" } else { "FAILED" },
        count(CellVerdict::Agrees),
        count(CellVerdict::Disagrees),
        count(CellVerdict::NoAnswer),
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
pub(crate) mod tests {
    use super::*;
    use crate::collect::Collected;
    use crate::matrix::KernelRun;
    use bpfmatrix_probes::{CaseId, CaseRecord, JitMode, Measured, Outcome};

    pub(crate) fn run(kernel: &str, n: u32) -> KernelRun {
        let jit = JitMode::Jit;
        let record = CaseRecord {
            case: CaseId::TailCallChain,
            jit: JitMode::Jit,
            outcome: Outcome::Accepted,
            measured: Measured {
                tail_calls: Some(n),
                bpf_jit_enable: Some(jit.sysctl_value().into()),
                jited_bytes: [(
                    "chain_body".to_string(),
                    if jit == JitMode::Jit { 64 } else { 0 },
                )]
                .into(),
                ..Measured::default()
            },
            duration_ms: 1,
        };
        let mut run = KernelRun::judge(
            kernel,
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
        );
        run.accel = Some("tcg".into());
        run
    }

    pub(crate) fn unavailable(kernel: &str) -> KernelRun {
        KernelRun::unavailable(
            kernel,
            "x",
            "not reachable".into(),
            &[CaseId::TailCallChain],
            &[JitMode::Jit],
        )
    }

    #[test]
    fn an_agreeing_run_reads_ok() {
        let text = terminal(&Document::from_runs(&[run("6.1", 33)]), false);
        assert!(text.contains("tail_call.chain  ✓ 33 tail calls"), "{text}");
        assert!(
            text.contains("6.1: guest 6.1.0-56-amd64 under tcg"),
            "{text}"
        );
        assert!(
            text.ends_with("OK: 1 cells agree with the documented kernel facts, 0 disagree, 0 without an answer\n"),
            "{text}"
        );
    }

    #[test]
    fn a_disagreement_shows_expected_and_got() {
        let text = terminal(&Document::from_runs(&[run("6.1", 32)]), false);
        assert!(text.contains("✗ 32 tail calls"), "{text}");
        assert!(
            text.contains("  expected: accepted, 33 tail calls"),
            "{text}"
        );
        assert!(
            text.contains("  - tail calls: expected 33, got 32"),
            "{text}"
        );
        assert!(text.contains("FAILED: 0 cells agree"), "{text}");
    }

    #[test]
    fn unavailable_kernels_are_named_and_never_counted_as_passes() {
        let doc = Document::from_runs(&[run("6.1", 33), unavailable("4.16")]);
        let text = terminal(&doc, false);
        assert!(text.contains("4.16: unavailable: not reachable"), "{text}");
        assert!(text.contains("OK: 1 cells agree"), "{text}");
        assert!(text.contains("unavailable here: 4.16"), "{text}");
        let only = Document::from_runs(&[unavailable("4.16")]);
        assert!(!only.all_agree());
        assert_eq!(
            verdict_line(&only),
            "NOTHING TESTED: no kernel could be had here (unavailable: 4.16)"
        );
    }
}
