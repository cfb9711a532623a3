//! The one module that writes reports, all rendered from the result model
//! ([`Matrix`]), none deciding anything: the terminal table (cases down, kernels
//! and JIT modes across) with every disagreement spelled out, the Markdown table
//! for GitHub and `$GITHUB_STEP_SUMMARY`, the self-contained HTML page, the
//! one-line verdict, and `matrix.json` ([`json`]). [`write_reports`] writes the
//! report folder: `matrix.json`, `matrix.md` and `matrix.html`, all or none.

mod html;
pub mod json;
mod markdown;

pub use html::html;
pub use markdown::markdown;

use crate::expect::{describe_expected, errno_name, last_line};
use crate::matrix::{Cell, KernelRun, Matrix, RunStatus, Verdict};
use crate::merge::Gap;
use anyhow::{Context, Result};
use bpfmatrix_protocol::{CaseId, JitMode, Measured, Outcome, PROBE_TYPE_FEXIT};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Who wrote a report: this bpfmatrix.
pub fn generated_by() -> String {
    format!("bpfmatrix {}", env!("CARGO_PKG_VERSION"))
}

/// A short text for a cell: what the kernel did and the number that matters.
pub fn cell_summary(c: &Cell) -> String {
    let Some(record) = &c.record else {
        return "no answer".to_string();
    };
    let m = &record.measured;
    match &record.outcome {
        Outcome::Accepted if m.seed.is_some() => format!("accepted, {}", seed_seen(c.case, m)),
        Outcome::Accepted => {
            let mut s = "accepted".to_string();
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
            s
        }
        Outcome::Rejected { errno, .. } => format!("rejected {}", errno_name(*errno)),
        other => other.kind().to_string(),
    }
}

/// The cell in a few characters, for a terminal that shows many kernels side by
/// side: the number that matters, or the errno of a refusal.
pub fn short_summary(c: &Cell) -> String {
    let Some(record) = &c.record else {
        return "no answer".to_string();
    };
    let m = &record.measured;
    match &record.outcome {
        Outcome::Accepted if m.seed.is_some() => seed_seen(c.case, m),
        Outcome::Accepted if !m.verdicts.is_empty() => fexit_seen(m),
        Outcome::Accepted if m.fell_through.is_some() => if m.fell_through == Some(true) {
            "falls through"
        } else {
            "no fall-through"
        }
        .to_string(),
        Outcome::Accepted => match (m.tail_calls, m.retval) {
            (Some(n), _) => format!("{n} tail calls"),
            (None, Some(rv)) => format!("returns {rv}"),
            (None, None) => "accepted".to_string(),
        },
        Outcome::Rejected { errno, .. } => format!("rejected {}", errno_name(*errno)),
        other => other.kind().to_string(),
    }
}

/// What a seed demo showed, in a few words: the events its article prints.
fn seed_seen(case: CaseId, m: &Measured) -> String {
    let Some(seed) = m.seed.as_deref() else {
        return "accepted".to_string();
    };
    match case {
        CaseId::SeedTcpconnTailCall => format!("{} conn events", seed.conn_events.len()),
        CaseId::SeedFentryFexitTcIcmp => {
            let fexit = seed
                .packet_events
                .iter()
                .filter(|e| e.probe_type == PROBE_TYPE_FEXIT)
                .count();
            format!(
                "{} fentry + {fexit} fexit",
                seed.packet_events.len() - fexit
            )
        }
        CaseId::SeedSeccompTailCall => match seed.child_signal {
            Some(sig) if !seed.kernel_oops.is_empty() => format!("oops (signal {sig})"),
            Some(sig) => format!("child killed (signal {sig})"),
            None => format!("{} trace lines", seed.trace_lines.len()),
        },
        _ => "accepted".to_string(),
    }
}

/// Each configured tc verdict and what fexit saw for it: "fexit 0→0 2→2".
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

/// The verdict in one character.
pub(crate) fn mark(v: &Verdict) -> &'static str {
    match v {
        Verdict::Agrees => "✓",
        Verdict::Disagrees { .. } => "✗",
        Verdict::NoAnswer { .. } => "?",
    }
}

fn ansi(v: &Verdict) -> &'static str {
    match v {
        Verdict::Agrees => "32",
        Verdict::Disagrees { .. } => "31",
        Verdict::NoAnswer { .. } => "33",
    }
}

/// The kernel's run in a few words: what booted, how, and how long it took.
pub fn kernel_line(k: &KernelRun) -> String {
    let mut s = format!("{}: ", k.kernel);
    match &k.status {
        RunStatus::Completed => {
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
        RunStatus::Unavailable { reason } => {
            let _ = write!(s, "unavailable: {reason}");
        }
        RunStatus::Failed { reason } => {
            let _ = write!(s, "FAILED: {reason}");
        }
    }
    s
}

/// What a table shows where a kernel has no cell for a case at all.
pub(crate) const MISSING: &str = "missing";

/// A column of the matrix: a kernel in one JIT mode.
pub(crate) type Column<'a> = (&'a KernelRun, JitMode);

/// A row of the matrix: the case and its cell in each column. A row with no
/// cells is a group's heading (the seed demos), which renderers show as such.
pub(crate) type Row<'a> = (String, Vec<Option<&'a Cell>>);

/// The heading of the rows that run the articles' own demos.
pub(crate) const SEED_GROUP: &str =
    "seed demos: the programs of the articles the project grew from";

/// A case's row label: its name, and for a seed demo the article it comes from.
pub(crate) fn row_label(case: CaseId) -> String {
    match case.seed_article() {
        Some(a) => format!("{case} [{}]", a.name),
        None => case.to_string(),
    }
}

/// Each seed demo's article, one line each, for under the table.
pub(crate) fn seed_articles(cases: &[CaseId]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|c| c.seed_article())
        .map(|a| match a.link {
            Some(link) => format!("[{}] {} ({link})", a.name, a.title),
            None => format!("[{}] {}", a.name, a.title),
        })
        .collect()
}

/// The columns and rows of the matrix, for every renderer; the terminal leaves
/// out kernels that could not be had (their line above says why).
pub(crate) fn grid(m: &Matrix, unavailable_too: bool) -> (Vec<Column<'_>>, Vec<Row<'_>>) {
    let columns: Vec<Column<'_>> = m
        .columns()
        .into_iter()
        .filter(|(k, _)| unavailable_too || k.tested())
        .collect();
    let mut rows = Vec::new();
    let mut in_seeds = false;
    for case in m.cases() {
        let seed = case.seed_article().is_some();
        if seed && !in_seeds {
            rows.push((SEED_GROUP.to_string(), vec![]));
        }
        in_seeds = seed;
        let cells = columns.iter().map(|(k, jit)| k.cell(case, *jit)).collect();
        rows.push((row_label(case), cells));
    }
    (columns, rows)
}

/// A column's header: "6.1 jit".
pub(crate) fn header((k, jit): &Column<'_>) -> String {
    format!("{} {jit}", k.kernel)
}

/// The terminal report: a status line per kernel, the table, every cell that did
/// not agree spelled out, then the verdict line.
pub fn terminal(m: &Matrix, color: bool) -> String {
    let mut out = String::new();
    let mut fallbacks_said = Vec::new();
    for k in &m.runs {
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
    let (columns, rows) = grid(m, false);
    let texts: Vec<Vec<String>> = rows
        .iter()
        .filter(|(_, cells)| !cells.is_empty())
        .map(|(case, cells)| {
            std::iter::once(case.clone())
                .chain(cells.iter().map(|c| match c {
                    Some(c) => format!("{} {}", mark(&c.verdict), short_summary(c)),
                    None => format!("? {MISSING}"),
                }))
                .collect()
        })
        .collect();
    let header: Vec<String> = std::iter::once("case".to_string())
        .chain(columns.iter().map(header))
        .collect();
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
    // `texts` holds the cell rows in order; headings are printed where their
    // group starts.
    let mut texts = texts.iter();
    for (label, cells) in &rows {
        if cells.is_empty() {
            let _ = writeln!(out, "-- {label}");
            continue;
        }
        let Some(text) = texts.next() else { break };
        let mut line = vec![pad(&text[0], widths[0])];
        for (i, cell) in cells.iter().enumerate() {
            let padded = pad(&text[i + 1], widths[i + 1]);
            line.push(match (cell, color) {
                (Some(c), true) => format!("\x1b[{}m{padded}\x1b[0m", ansi(&c.verdict)),
                _ => padded,
            });
        }
        out += &join(line);
    }
    let articles = seed_articles(&m.cases());
    if !articles.is_empty() {
        out.push('\n');
        for a in articles {
            let _ = writeln!(out, "{a}");
        }
    }
    for k in m.runs.iter().filter(|k| k.tested()) {
        let wrong: Vec<&Cell> = k.cells.iter().filter(|c| !c.agrees()).collect();
        // A guest that never answered gets one line, not one block per cell.
        if wrong.len() > 1 && wrong.iter().all(|c| c.record.is_none()) {
            let why = wrong[0].verdict.reasons().join("; ");
            let _ = writeln!(
                out,
                "\n{}: no answer for {} cells: {why}",
                k.kernel,
                wrong.len()
            );
            continue;
        }
        for c in wrong {
            let _ = write!(out, "\n{} {} {}:\n{}", k.kernel, c.jit, c.case, explain(c));
        }
    }
    let coverage = coverage_lines(m);
    if !coverage.is_empty() {
        out.push('\n');
    }
    for line in coverage {
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
    out += &verdict_line(m);
    out.push('\n');
    out
}

/// Expected, got, the verifier's words and each difference, one per line.
pub fn explain(c: &Cell) -> String {
    let mut s = String::new();
    if let Some(e) = &c.expected {
        let _ = writeln!(
            s,
            "  expected: {}  [{}]",
            describe_expected(&e.outcome),
            e.because
        );
    }
    let outcome = c.record.as_ref().map(|r| &r.outcome);
    let got = match outcome {
        None => "no record".to_string(),
        Some(Outcome::Rejected { step, errno, .. }) => {
            format!("rejected at {step}, {}", errno_name(*errno))
        }
        Some(o) => o.kind().to_string(),
    };
    let _ = writeln!(s, "  got:      {got}");
    if let Some(Outcome::Unsupported { reason: d } | Outcome::Error { message: d }) = outcome {
        let _ = writeln!(s, "  detail:   {d}");
    }
    if let Some(r) = &c.record {
        if let Ok(json) = serde_json::to_string(&r.measured) {
            if json != "{}" {
                let _ = writeln!(s, "  measured: {json}");
            }
        }
    }
    if let Some(Outcome::Rejected { verifier_tail, .. }) = outcome {
        let _ = writeln!(s, "  verifier: {}", last_line(verifier_tail));
    }
    for d in c.verdict.reasons() {
        let _ = writeln!(s, "  - {d}");
    }
    s
}

/// What the merge required and, for each required kernel that is not covered,
/// why; nothing for a matrix no merge required anything of.
pub fn coverage_lines(m: &Matrix) -> Vec<String> {
    let Some(coverage) = &m.coverage else {
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
    let gaps = m.coverage_gaps();
    if gaps.is_empty() {
        first += "; every required kernel is covered";
    }
    std::iter::once(first)
        .chain(gaps.iter().map(ToString::to_string))
        .collect()
}

/// One line a person (or a CI log) reads at a glance.
pub fn verdict_line(m: &Matrix) -> String {
    let gaps = m.coverage_gaps();
    let coverage = if gaps.is_empty() {
        String::new()
    } else {
        let short: Vec<String> = gaps.iter().map(Gap::short).collect();
        format!("; required but not covered: {}", short.join(", "))
    };
    verdict_cells(m) + &coverage
}

fn verdict_cells(m: &Matrix) -> String {
    let verdicts = || {
        m.cells()
            .filter(|(k, _)| k.tested())
            .map(|(_, c)| &c.verdict)
    };
    let agree = verdicts().filter(|v| matches!(v, Verdict::Agrees)).count();
    let disagree = verdicts()
        .filter(|v| matches!(v, Verdict::Disagrees { .. }))
        .count();
    let no_answer = verdicts()
        .filter(|v| matches!(v, Verdict::NoAnswer { .. }))
        .count();
    let failed = m
        .runs
        .iter()
        .filter(|k| matches!(k.status, RunStatus::Failed { .. }))
        .count();
    let unavailable: Vec<&str> = m
        .runs
        .iter()
        .filter(|k| !k.tested())
        .map(|k| k.kernel.as_str())
        .collect();
    if unavailable.len() == m.runs.len() {
        // Not a pass, and not a kernel that misbehaved either: nothing was tested.
        return format!(
            "NOTHING TESTED: no kernel could be had here (unavailable: {})",
            unavailable.join(", ")
        );
    }
    let mut s = format!(
        "{}: {} cells agree with the documented kernel facts, {} disagree, {} without an answer",
        if m.all_agree() { "OK" } else { "FAILED" },
        agree,
        disagree,
        no_answer,
    );
    if failed > 0 {
        let _ = write!(s, "; {failed} kernel run(s) failed");
    }
    if !unavailable.is_empty() {
        let _ = write!(s, "; unavailable here: {}", unavailable.join(", "));
    }
    s
}

/// The report folder's files, in the order [`write_reports`] returns them.
pub const FILES: [&str; 3] = ["matrix.json", "matrix.md", "matrix.html"];

/// Fails early, before any guest boots, when `dir` cannot take the report.
pub fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the report folder {}", dir.display()))?;
    tempfile::tempfile_in(dir)
        .map(drop)
        .with_context(|| format!("the report folder {} is not writable", dir.display()))
}

/// Writes the report folder: `matrix.json`, `matrix.md` and `matrix.html`, each
/// under a temporary name, renamed into place only when all three are written,
/// so a failure never leaves a partial report that looks complete. Returns their
/// paths.
pub fn write_reports(m: &Matrix, dir: &Path) -> Result<Vec<PathBuf>> {
    check_writable(dir)?;
    let contents = [json::to_json(m), markdown(m), html(m)];
    let mut staged = Vec::new();
    for (name, text) in FILES.iter().zip(contents) {
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .tempfile_in(dir)
            .with_context(|| format!("cannot write into {}", dir.display()))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())
            .with_context(|| format!("cannot write {name} into {}", dir.display()))?;
        staged.push((tmp, dir.join(name)));
    }
    let mut written = Vec::new();
    for (tmp, path) in staged {
        tmp.persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::matrix::tests::{agreeing_record, collected};
    use std::os::unix::fs::PermissionsExt;

    /// Kernel `kernel` (guest 6.1) that ran tail_call.chain with the JIT and
    /// counted `n` tail calls.
    pub(crate) fn run(kernel: &str, n: u32) -> KernelRun {
        let mut record = agreeing_record(CaseId::TailCallChain, JitMode::Jit, "6.1.0-56-amd64");
        record.measured.tail_calls = Some(n);
        let mut run = KernelRun::judge(
            kernel,
            "test",
            &[CaseId::TailCallChain],
            &[JitMode::Jit],
            collected(vec![record]),
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
    fn seed_demos_are_grouped_under_a_heading_naming_their_articles() {
        let m = Matrix::from_runs([crate::matrix::tests::complete_except("6.1", &[])]);
        for text in [
            terminal(&m, false),
            super::markdown::markdown(&m),
            super::html::html(&m),
        ] {
            let heading = text.find(SEED_GROUP).expect("the seed heading");
            let first_seed = text
                .find("seed.tcpconn_tail_call [tail-call-notes-zh]")
                .unwrap();
            let last_plain = text.find("fentry_fexit_tc.loopback").unwrap();
            assert!(last_plain < heading && heading < first_seed, "{text}");
            assert!(text.contains("seed.seccomp_tail_call [tail-call-vs-bpf2bpf-en]"));
            assert!(text.contains("https://www.ebpf.top/post/bpf2pbpf_tail_call"));
        }
    }

    #[test]
    fn an_agreeing_run_reads_ok() {
        let text = terminal(&Matrix::from_runs([run("6.1", 33)]), false);
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
        let text = terminal(&Matrix::from_runs([run("6.1", 32)]), false);
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
    fn a_refusal_is_explained_with_the_verifiers_words() {
        let mut record = agreeing_record(
            CaseId::Bpf2bpfTailCallInSubprog,
            JitMode::Interpreter,
            "6.1.0-56-amd64",
        );
        let Outcome::Rejected { errno, .. } = &mut record.outcome else {
            panic!("{record:?}")
        };
        *errno = 13;
        let cell = Cell::judge(
            record.case,
            record.jit,
            Some("6.1.0-56-amd64"),
            Some(record),
            "unused",
        );
        assert_eq!(cell_summary(&cell), "rejected EACCES");
        let text = explain(&cell);
        assert!(
            text.contains("  got:      rejected at load mix_entry, EACCES\n"),
            "{text}"
        );
        assert!(
            text.contains("  verifier: tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls\n"),
            "{text}"
        );
        assert!(
            text.contains("  - errno: expected EINVAL, got EACCES\n"),
            "{text}"
        );
    }

    #[test]
    fn unavailable_kernels_are_named_and_never_counted_as_passes() {
        let m = Matrix::from_runs([run("6.1", 33), unavailable("4.16")]);
        let text = terminal(&m, false);
        assert!(text.contains("4.16: unavailable: not reachable"), "{text}");
        assert!(text.contains("OK: 1 cells agree"), "{text}");
        assert!(text.contains("unavailable here: 4.16"), "{text}");
        let only = Matrix::from_runs([unavailable("4.16")]);
        assert!(!only.all_agree());
        assert_eq!(
            verdict_line(&only),
            "NOTHING TESTED: no kernel could be had here (unavailable: 4.16)"
        );
    }

    #[test]
    fn all_three_files_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let m = Matrix::from_runs([run("6.1", 33)]);
        let paths = write_reports(&m, dir.path()).unwrap();
        assert_eq!(paths.len(), 3);
        assert_eq!(json::read(&paths[0]).unwrap(), m);
        assert_eq!(std::fs::read_to_string(&paths[1]).unwrap(), markdown(&m));
        assert_eq!(std::fs::read_to_string(&paths[2]).unwrap(), html(&m));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn an_unwritable_folder_is_a_clear_error_and_leaves_nothing() {
        if nix_is_root() {
            // root ignores directory permissions; a path under a regular file
            // cannot be created by anyone.
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("file");
            std::fs::write(&file, "x").unwrap();
            let err = format!("{:#}", check_writable(&file.join("reports")).unwrap_err());
            assert!(err.contains("cannot create the report folder"), "{err}");
            let m = Matrix::from_runs([run("6.1", 33)]);
            assert!(write_reports(&m, &file.join("reports")).is_err());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let err = format!("{:#}", check_writable(dir.path()).unwrap_err());
        assert!(err.contains("is not writable"), "{err}");
        let m = Matrix::from_runs([run("6.1", 33)]);
        assert!(write_reports(&m, dir.path()).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    fn nix_is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
    }
}
