//! The one module that writes reports, all rendered from the result model
//! ([`Matrix`]), none deciding anything: the terminal table (cases down, kernels
//! and JIT modes across) with every disagreement spelled out, the Markdown table
//! for GitHub and `$GITHUB_STEP_SUMMARY`, the self-contained HTML page, the
//! one-line verdict, and `matrix.json` ([`json`]). [`write_reports`] writes the
//! report folder: `matrix.json`, `matrix.md` and `matrix.html`, all or none.
//!
//! A matrix with users' programs (`bpfmatrix check`) gets a second table in
//! every form, programs down (`object:program`), the same columns across, each
//! cell what the kernel did ([`program_summary`]), with each program's minimum
//! kernel ([`minimum_text`]), then each distinct refusal in the verifier's words
//! ([`refusals`]) and what verifying each accepted program cost ([`cost_text`]).
//! A table without rows is left out.
//!
//! A JIT mode a kernel was built without is a fact of the kernel, not of each
//! cell: its column is greyed, its cells say only [`NOT_APPLICABLE`], and what
//! the kernel lacks, with the evidence, is said once per kernel and mode
//! ([`lacking`]). A cell whose expectation is a kernel oops the facts document
//! ([`expected_kernel_bug`]) agrees, but is set apart from a plain pass in
//! every form: a crash worth seeing even when it is the expected one.

mod html;
pub mod json;
mod markdown;

pub(crate) use html::esc;
pub use html::html;
pub use markdown::markdown;

use crate::expect::{
    describe_expected, describe_outcome, errno_name, last_line, Checks, ExpectedOutcome, SeedCheck,
};
use crate::matrix::{Cell, KernelRun, Matrix, RunStatus, Verdict};
use crate::merge::{Gap, Required};
use crate::modes::ModeStatus;
use crate::programs::{minimum_kernels, MinimumKernel, ProgramCell};
use anyhow::{Context, Result};
use bpfmatrix_protocol::verifier_log;
use bpfmatrix_protocol::{
    CaseId, CostSource, Figure, JitMode, Measured, Outcome, VerifierCost, PROBE_TYPE_FEXIT,
};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Who wrote a report: this bpfmatrix.
pub fn generated_by() -> String {
    format!("bpfmatrix {}", env!("CARGO_PKG_VERSION"))
}

/// A short text for a cell: what the kernel did and the number that matters;
/// [`NOT_APPLICABLE`] in a mode the kernel lacks (whatever the agent said there).
pub fn cell_summary(c: &Cell) -> String {
    if let Verdict::NotApplicable { .. } = c.verdict {
        return NOT_APPLICABLE.to_string();
    }
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
/// side: the number that matters, or the errno of a refusal; [`NOT_APPLICABLE`]
/// in a mode the kernel lacks.
pub fn short_summary(c: &Cell) -> String {
    if let Verdict::NotApplicable { .. } = c.verdict {
        return NOT_APPLICABLE.to_string();
    }
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
        Verdict::NotApplicable { .. } => "-",
    }
}

fn ansi(v: &Verdict) -> &'static str {
    match v {
        Verdict::Agrees => "32",
        Verdict::Disagrees { .. } => "31",
        Verdict::NoAnswer { .. } => "33",
        Verdict::NotApplicable { .. } => "90",
    }
}

/// What a cell of a mode its kernel was built without says, in the terminal
/// and on the page: no mark, no reason (the kernel's note says it once).
pub(crate) const NOT_APPLICABLE: &str = "n/a";

/// The mark of a cell that agrees because the kernel oopsed as documented
/// ([`expected_kernel_bug`]), in the terminal and on the page.
pub(crate) const EXPECTED_BUG: &str = "⚠";

/// Whether the cell's expectation is a guest kernel oops: a kernel bug the
/// facts document (the seccomp demo interpreted on 6.9 and later, see
/// `interpreter_tail_call_stack`), which a cell agrees with by crashing.
pub(crate) fn expected_kernel_bug(c: &Cell) -> bool {
    matches!(
        c.expected.as_ref().map(|e| &e.outcome),
        Some(ExpectedOutcome::Accepted(Checks {
            seed: Some(SeedCheck::SeccompLines { oops: true, .. }),
            ..
        }))
    )
}

/// An expected kernel bug in words, for a legend: "expected kernel bug: the
/// kernel oopses as documented (011832b97b31)", naming the documented fact.
pub(crate) fn expected_bug_words() -> String {
    let f = crate::expect::features().get("interpreter_tail_call_stack");
    format!(
        "expected kernel bug: the kernel oopses as documented ({}, from {}), so the cell agrees",
        f.commit, f.first
    )
}

/// A case cell's text in the terminal and on the page: its mark and short
/// summary; [`NOT_APPLICABLE`] alone in a mode its kernel lacks;
/// [`EXPECTED_BUG`] and "expected" for a kernel oops that was expected.
pub(crate) fn cell_text(c: &Cell) -> String {
    match &c.verdict {
        Verdict::NotApplicable { .. } => NOT_APPLICABLE.to_string(),
        Verdict::Agrees if expected_kernel_bug(c) => {
            format!("{EXPECTED_BUG} expected {}", short_summary(c))
        }
        v => format!("{} {}", mark(v), short_summary(c)),
    }
}

/// The ANSI colour of a case cell: its verdict's, orange for an expected
/// kernel bug (not the green of a plain pass, not the yellow of no answer).
fn cell_ansi(c: &Cell) -> &'static str {
    match c.verdict {
        Verdict::Agrees if expected_kernel_bug(c) => "38;5;208",
        ref v => ansi(v),
    }
}

/// A JIT mode a tested kernel was built without: what it lacks and the
/// evidence, said once per kernel and mode in every report.
pub(crate) struct Lacking<'a> {
    pub kernel: &'a KernelRun,
    pub jit: JitMode,
    /// "no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y)".
    pub what: &'a str,
    /// Each side's evidence, the config's first.
    pub evidence: &'a [String],
}

/// Every mode a tested kernel of the matrix was built without, by kernel.
pub(crate) fn lacking(m: &Matrix) -> Vec<Lacking<'_>> {
    m.runs
        .iter()
        .filter(|k| k.tested())
        .flat_map(|k| {
            k.facts.modes.iter().filter_map(move |f| match &f.status {
                ModeStatus::Absent { what, evidence } => Some(Lacking {
                    kernel: k,
                    jit: f.jit,
                    what,
                    evidence,
                }),
                _ => None,
            })
        })
        .collect()
}

/// Whether a column is of a mode its kernel was built without (greyed).
pub(crate) fn column_absent((k, jit): &Column<'_>) -> bool {
    k.tested() && k.facts.absent(*jit).is_some()
}

/// The terminal's lines for the modes kernels lack: "n/a 5.4 interpreter:
/// no interpreter in this kernel (...)", each piece of evidence beneath.
fn lacking_lines(m: &Matrix) -> String {
    let mut out = String::new();
    for l in lacking(m) {
        let _ = writeln!(
            out,
            "{NOT_APPLICABLE} {} {}: {}",
            l.kernel.kernel, l.jit, l.what
        );
        for e in l.evidence {
            let _ = writeln!(out, "  evidence: {e}");
        }
    }
    out
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
            if k.restored {
                // Its uptime is the saved guest's, counted from the boot that saved it.
                s.push_str(", started from its saved state");
            } else if let (Some(a), Some(d)) = (k.agent_start_ms, k.agent_done_ms) {
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

/// A row of the programs' table: the program (`object:program`), its cell in
/// each column, and its minimum kernel.
pub(crate) struct ProgramRow<'a> {
    pub label: String,
    pub cells: Vec<Option<&'a ProgramCell>>,
    pub minimum: String,
}

/// The columns and rows of the programs' table, for every renderer; as
/// [`grid`], the terminal leaves out kernels that could not be had.
pub(crate) fn program_grid(
    m: &Matrix,
    unavailable_too: bool,
) -> (Vec<Column<'_>>, Vec<ProgramRow<'_>>) {
    let columns: Vec<Column<'_>> = m
        .runs
        .iter()
        .filter(|k| unavailable_too || k.tested())
        .flat_map(|k| JitMode::ALL.into_iter().map(move |j| (k, j)))
        .filter(|(k, j)| k.programs.iter().any(|c| c.jit == *j))
        .collect();
    let minimums = minimum_kernels(m);
    let rows = programs(m)
        .into_iter()
        .map(|(object, program)| ProgramRow {
            label: format!("{object}:{program}"),
            cells: columns
                .iter()
                .map(|(k, jit)| {
                    k.programs
                        .iter()
                        .find(|c| c.object == object && c.program == program && c.jit == *jit)
                })
                .collect(),
            minimum: minimum_text(m, &minimums, object, program),
        })
        .collect();
    (columns, rows)
}

/// Every program of the matrix (object, program), in the order they first appear.
pub(crate) fn programs(m: &Matrix) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for c in m.runs.iter().flat_map(|k| &k.programs) {
        let key = (c.object.as_str(), c.program.as_str());
        if !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

/// What the programs' table's marks mean.
pub(crate) const PROGRAM_LEGEND: &str = "✓ accepted, with the instructions the verifier processed · ✗ refused, with the errno · – not loadable by bpfmatrix (says nothing of the kernel) · ⚠ not what was expected · no answer: the guest said nothing of it";

/// What the mark of a cell of a mode its kernel lacks means, for the legends.
pub(crate) const NOT_APPLICABLE_WORDS: &str =
    "not applicable: a JIT mode the kernel was built without (said once, with the evidence)";

/// A program cell in a few characters: "✓ 41 insns", "✗ EINVAL", "–" (not
/// loadable here), "no answer", [`NOT_APPLICABLE`] in a mode the kernel lacks;
/// "⚠" after it when it is not what was expected.
pub fn program_summary(c: &ProgramCell) -> String {
    if let Verdict::NotApplicable { .. } = c.verdict {
        return NOT_APPLICABLE.to_string();
    }
    let Some(r) = &c.record else {
        return "no answer".to_string();
    };
    let text = match &r.outcome {
        Outcome::Accepted => match r.cost.as_ref().and_then(insns) {
            Some((n, _)) => format!("✓ {n} insns"),
            None => "✓ accepted".to_string(),
        },
        Outcome::Rejected { errno, .. } => format!("✗ {}", errno_name(*errno)),
        Outcome::Unsupported { .. } => "✗ unsupported".to_string(),
        Outcome::NotLoadable { .. } => "–".to_string(),
        Outcome::Error { .. } => "error".to_string(),
    };
    match c.verdict {
        Verdict::Disagrees { .. } => text + " ⚠",
        _ => text,
    }
}

/// The instructions the verifier processed: from its log, or else from
/// `bpf_prog_info.verified_insns`.
fn insns(cost: &VerifierCost) -> Option<(u64, CostSource)> {
    cost.insns_processed
        .or(cost.verified_insns)
        .map(|f| (f.value, f.from))
}

/// A program cell spelled out, for a hover or an explanation: the kernel's
/// answer, the verifier's last words, the costs, the expectation and the verdict.
pub fn explain_program(c: &ProgramCell) -> String {
    let mut s = String::new();
    if let Some(e) = &c.expected {
        let _ = writeln!(
            s,
            "  expected: {}  [{}]",
            if e.accept { "accepted" } else { "refused" },
            e.because
        );
    }
    match &c.record {
        None => s += "  got:      no record\n",
        Some(r) => {
            let _ = writeln!(s, "  got:      {}", describe_outcome(&r.outcome));
            let _ = writeln!(s, "  section:  {}", r.section);
            if let Outcome::Rejected { .. } = r.outcome {
                for line in verifier_words(r).lines() {
                    let _ = writeln!(s, "  verifier: {line}");
                }
            }
            if let Some(cost) = &r.cost {
                for line in cost_lines(cost) {
                    let _ = writeln!(s, "  cost:     {line}");
                }
            }
        }
    }
    for d in c.verdict.reasons() {
        let _ = writeln!(s, "  - {d}");
    }
    s
}

/// How many of the verifier's last meaningful lines the reports show.
const VERIFIER_LINES: usize = 4;

/// The verifier's last meaningful lines for a refused program: the refusal and
/// the instructions that led to it, without the statistics (including the
/// "insns processed N" line newer kernels end their log with).
pub(crate) fn verifier_words(r: &bpfmatrix_protocol::ProgramRecord) -> String {
    let text = match &r.outcome {
        _ if !r.verifier_log.is_empty() => r.verifier_log.as_str(),
        Outcome::Rejected { verifier_tail, .. } => verifier_tail.as_str(),
        _ => "",
    };
    let lines = verifier_log::tail(text, usize::MAX, usize::MAX);
    let meaningful: Vec<&str> = lines
        .lines()
        .filter(|l| !l.starts_with("insns processed "))
        .collect();
    meaningful[meaningful.len().saturating_sub(VERIFIER_LINES)..].join("\n")
}

/// Each figure of a cost on a line of its own, with where it came from; figures
/// the kernel did not report are left out.
pub fn cost_lines(cost: &VerifierCost) -> Vec<String> {
    let figures: [(&str, Option<Figure>); 10] = [
        ("instructions processed", cost.insns_processed),
        ("verified instructions", cost.verified_insns),
        ("instruction limit", cost.insn_limit),
        ("states, total", cost.total_states),
        ("states, peak", cost.peak_states),
        ("states per instruction, most", cost.max_states_per_insn),
        ("mark_read", cost.mark_read),
        ("verification time, µs", cost.verification_usec),
        ("translated bytes", cost.xlated_bytes),
        ("JITed bytes", cost.jited_bytes),
    ];
    let mut lines: Vec<String> = figures
        .into_iter()
        .filter_map(|(what, f)| f.map(|f| format!("{what}: {} ({})", f.value, source(f.from))))
        .collect();
    if !cost.stack_depth.is_empty() {
        lines.push(format!(
            "stack depth, bytes per subprogram: {}{}",
            stack(cost),
            cost.stack_depth_from
                .map(|f| format!(" ({})", source(f)))
                .unwrap_or_default()
        ));
    }
    lines
}

fn source(from: CostSource) -> &'static str {
    match from {
        CostSource::VerifierLog => "verifier log",
        CostSource::ProgInfo => "bpf_prog_info",
    }
}

fn stack(cost: &VerifierCost) -> String {
    let depths: Vec<String> = cost.stack_depth.iter().map(u32::to_string).collect();
    depths.join("+")
}

/// The costs table's headings, and what [`cost_row`] puts under them.
pub(crate) const COST_HEADINGS: [&str; 6] = [
    "insns",
    "states (peak)",
    "stack bytes",
    "time µs",
    "xlated bytes",
    "jited bytes",
];

/// What a kernel does not report, in the costs table.
pub(crate) const NOT_REPORTED: &str = "n/a";

/// One accepted program's costs under [`COST_HEADINGS`]; [`NOT_REPORTED`] where
/// the kernel does not report a figure.
pub(crate) fn cost_row(cost: &VerifierCost) -> [String; 6] {
    let value = |f: Option<Figure>| f.map_or(NOT_REPORTED.to_string(), |f| f.value.to_string());
    let states = match (cost.total_states, cost.peak_states) {
        (Some(t), Some(p)) => format!("{} ({})", t.value, p.value),
        (t, _) => value(t),
    };
    [
        insns(cost).map_or(NOT_REPORTED.to_string(), |(n, _)| n.to_string()),
        states,
        if cost.stack_depth.is_empty() {
            NOT_REPORTED.to_string()
        } else {
            stack(cost)
        },
        value(cost.verification_usec),
        value(cost.xlated_bytes),
        value(cost.jited_bytes),
    ]
}

/// Where the costs table's figures came from, said once under it: "insns,
/// states (peak), stack bytes, time µs from the verifier log; ...".
pub(crate) fn cost_sources<'a>(costs: impl IntoIterator<Item = &'a VerifierCost>) -> String {
    let mut seen: Vec<Vec<CostSource>> = vec![vec![]; COST_HEADINGS.len()];
    for c in costs {
        let figures = [
            insns(c).map(|(_, f)| f),
            c.total_states.or(c.peak_states).map(|f| f.from),
            c.stack_depth_from,
            c.verification_usec.map(|f| f.from),
            c.xlated_bytes.map(|f| f.from),
            c.jited_bytes.map(|f| f.from),
        ];
        for (i, from) in figures.into_iter().enumerate() {
            if let Some(from) = from.filter(|f| !seen[i].contains(f)) {
                seen[i].push(from);
            }
        }
    }
    let mut groups: Vec<(Vec<CostSource>, Vec<&str>)> = Vec::new();
    for (heading, sources) in COST_HEADINGS.iter().zip(seen) {
        if sources.is_empty() {
            continue;
        }
        match groups.iter_mut().find(|(s, _)| *s == sources) {
            Some((_, names)) => names.push(heading),
            None => groups.push((sources, vec![heading])),
        }
    }
    let said: Vec<String> = groups
        .iter()
        .map(|(sources, names)| {
            let from: Vec<&str> = sources.iter().map(|f| source(*f)).collect();
            format!("{} from the {}", names.join(", "), from.join(" or the "))
        })
        .collect();
    format!(
        "{}; {NOT_REPORTED}: the kernel does not report it",
        said.join("; ")
    )
}

/// Every accepted program cell with its costs, by program, then kernel and mode.
pub(crate) fn costs<'a>(
    columns: &[Column<'a>],
    rows: &[ProgramRow<'a>],
) -> Vec<(String, Column<'a>, &'a VerifierCost)> {
    let mut out = Vec::new();
    for row in rows {
        for (cell, column) in row.cells.iter().zip(columns) {
            let cost = cell
                .filter(|c| !matches!(c.verdict, Verdict::NotApplicable { .. }))
                .and_then(|c| c.record.as_ref())
                .filter(|r| r.outcome == Outcome::Accepted)
                .and_then(|r| r.cost.as_ref());
            if let Some(cost) = cost {
                out.push((row.label.clone(), *column, cost));
            }
        }
    }
    out
}

/// One program's minimum kernel: the oldest kernel that accepts it ("≤ 5.10"
/// when the oldest kernel that answered already does, so the true minimum may be
/// older; "none" when no kernel does), with every kernel after it where
/// acceptance flips ("✗ from 6.1, ✓ from 6.12"); each JIT mode named when the
/// JIT and the interpreter differ.
pub(crate) fn minimum_text(
    m: &Matrix,
    minimums: &[MinimumKernel],
    object: &str,
    program: &str,
) -> String {
    let texts: Vec<(JitMode, String)> = minimums
        .iter()
        .filter(|k| k.object == object && k.program == program)
        .map(|k| (k.jit, minimum_one(m, k)))
        .collect();
    match texts.as_slice() {
        [] => "no answer".to_string(),
        [(_, t), rest @ ..] if rest.iter().all(|(_, r)| r == t) => t.clone(),
        _ => texts
            .iter()
            .map(|(jit, t)| format!("{jit}: {t}"))
            .collect::<Vec<_>>()
            .join(" · "),
    }
}

fn minimum_one(m: &Matrix, k: &MinimumKernel) -> String {
    let answered = m.runs.iter().any(|run| {
        run.facts.absent(k.jit).is_none()
            && run.programs.iter().any(|c| {
                (c.object == k.object && c.program == k.program && c.jit == k.jit)
                    && c.accepted().is_some()
            })
    });
    let has_mode = m.runs.iter().any(|run| {
        run.tested()
            && run.facts.absent(k.jit).is_none()
            && run.programs.iter().any(|c| c.jit == k.jit)
    });
    let flipped_in = |kernel: &str| k.flips.iter().any(|f| f.kernel == kernel && f.accepted);
    let mut text = match &k.oldest_accepting {
        Some(oldest) if flipped_in(oldest) => oldest.clone(),
        Some(oldest) => format!("≤ {oldest}"),
        None if answered => "none".to_string(),
        None if !has_mode => format!(
            "not measured: no tested kernel has {}",
            match k.jit {
                JitMode::Jit => "a JIT",
                JitMode::Interpreter => "an interpreter",
            }
        ),
        None => "no answer".to_string(),
    };
    let later: Vec<String> = k
        .flips
        .iter()
        .filter(|f| !(f.accepted && Some(&f.kernel) == k.oldest_accepting.as_ref()))
        .map(|f| format!("{} from {}", if f.accepted { "✓" } else { "✗" }, f.kernel))
        .collect();
    if !later.is_empty() {
        let _ = write!(text, " ({})", later.join(", "));
    }
    text
}

/// One refusal, said once for every column where a program got it.
pub(crate) struct Refusal<'a> {
    /// `object:program`.
    pub label: String,
    /// The kernel's answer: "rejected at load stamp_tai, EACCES", "not loadable...".
    pub what: String,
    /// The verifier's last meaningful lines (or the reason, when no verifier spoke).
    pub words: String,
    pub columns: Vec<Column<'a>>,
    /// The whole verifier log (as the guest kept it) of the first of them.
    pub log: &'a str,
}

impl Refusal<'_> {
    /// The kernels it happened on: "5.4, 5.10" (both modes), "6.1 interpreter".
    pub fn kernels(&self, all: &[Column<'_>]) -> String {
        columns_text(&self.columns, all)
    }
}

/// The columns of kernels that could be tested, and the rows cut to them: the
/// notes under the page's programs table speak of those kernels only (the
/// table itself says which were unavailable).
pub(crate) fn tested_only<'a>(
    columns: &[Column<'a>],
    rows: Vec<ProgramRow<'a>>,
) -> (Vec<Column<'a>>, Vec<ProgramRow<'a>>) {
    keep_columns(columns.to_vec(), rows, |(k, _)| k.tested())
}

/// The columns for which `keep` holds, and each row's cells cut to them.
fn keep_columns<'a>(
    mut columns: Vec<Column<'a>>,
    rows: Vec<ProgramRow<'a>>,
    keep: impl Fn(&Column<'a>) -> bool,
) -> (Vec<Column<'a>>, Vec<ProgramRow<'a>>) {
    let kept: Vec<bool> = columns.iter().map(&keep).collect();
    let rows = rows
        .into_iter()
        .map(|mut row| {
            let mut kept = kept.iter();
            row.cells.retain(|_| *kept.next().unwrap_or(&true));
            row
        })
        .collect();
    columns.retain(keep);
    (columns, rows)
}

/// Every program cell the kernel did not accept (refused, unsupported, not
/// loadable, an error), grouped: one entry per program and distinct answer in
/// the verifier's words, naming the columns that gave it.
pub(crate) fn refusals<'a>(columns: &[Column<'a>], rows: &[ProgramRow<'a>]) -> Vec<Refusal<'a>> {
    let mut out: Vec<Refusal<'a>> = Vec::new();
    for row in rows {
        for (cell, column) in row.cells.iter().zip(columns) {
            // What an agent said in a mode the kernel lacks is no refusal.
            let Some(r) = cell
                .filter(|c| !matches!(c.verdict, Verdict::NotApplicable { .. }))
                .and_then(|c| c.record.as_ref())
            else {
                continue;
            };
            let (what, words) = match &r.outcome {
                Outcome::Accepted => continue,
                Outcome::Rejected { step, errno, .. } => (
                    format!("rejected at {step}, {}", errno_name(*errno)),
                    verifier_words(r),
                ),
                other => (describe_outcome(other), String::new()),
            };
            match out
                .iter_mut()
                .find(|f| f.label == row.label && f.what == what && f.words == words)
            {
                Some(f) => f.columns.push(*column),
                None => out.push(Refusal {
                    label: row.label.clone(),
                    what,
                    words,
                    columns: vec![*column],
                    log: &r.verifier_log,
                }),
            }
        }
    }
    out
}

/// Every program cell that does not pass, grouped: one entry per program and
/// distinct reason, with the columns that gave it (the verifier's words are in
/// [`refusals`]).
pub(crate) fn program_wrongs<'a>(
    columns: &[Column<'a>],
    rows: &[ProgramRow<'a>],
) -> Vec<(String, String, Vec<Column<'a>>)> {
    let mut out: Vec<(String, String, Vec<Column<'a>>)> = Vec::new();
    for row in rows {
        for (cell, column) in row.cells.iter().zip(columns) {
            let Some(c) = cell.filter(|c| !c.passes()) else {
                continue;
            };
            let why = c.verdict.reasons().join("; ");
            match out
                .iter_mut()
                .find(|(label, w, _)| *label == row.label && *w == why)
            {
                Some((_, _, cols)) => cols.push(*column),
                None => out.push((row.label.clone(), why, vec![*column])),
            }
        }
    }
    out
}

/// The columns a finding holds for: "5.4, 5.10" (in every mode the kernel
/// has: a mode it was built without is not left out), "6.1 interpreter".
pub(crate) fn columns_text(these: &[Column<'_>], all: &[Column<'_>]) -> String {
    let mut names: Vec<String> = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for (k, _) in these {
        if done.contains(&k.kernel.as_str()) {
            continue;
        }
        done.push(&k.kernel);
        let mine: Vec<JitMode> = these
            .iter()
            .filter(|(o, _)| o.kernel == k.kernel)
            .map(|(_, j)| *j)
            .collect();
        let every = all
            .iter()
            .filter(|c| c.0.kernel == k.kernel && !column_absent(c))
            .all(|(_, j)| mine.contains(j));
        names.push(if every {
            k.kernel.clone()
        } else {
            let modes: Vec<&str> = mine.iter().map(|j| j.as_str()).collect();
            format!("{} {}", k.kernel, modes.join(", "))
        });
    }
    names.join(", ")
}

/// What the programs were judged by, in a line.
pub(crate) fn program_rules_line(m: &Matrix) -> String {
    match &m.program_rules.file {
        Some(f) => format!(
            "programs are judged by {f} (the first kernel that must accept each; a program it does not name must load on every kernel)"
        ),
        None => "programs are judged without an --expect file: every program must load on every kernel".to_string(),
    }
}

/// Facts every kernel that booted shares, said once above the tables rather
/// than per kernel: the accelerator, why KVM was left, a guest warning. A
/// single kernel shares nothing.
pub(crate) struct Shared {
    pub accel: Option<String>,
    pub kvm_fallback: Option<String>,
    pub warnings: Vec<String>,
}

impl Shared {
    pub fn of(m: &Matrix) -> Shared {
        let booted: Vec<&KernelRun> = m.runs.iter().filter(|k| k.accel.is_some()).collect();
        let all_same = |f: &dyn Fn(&KernelRun) -> Option<String>| {
            let first = booted.first().and_then(|k| f(k))?;
            (booted.len() > 1 && booted.iter().all(|k| f(k).as_ref() == Some(&first)))
                .then_some(first)
        };
        let warnings = match booted.first() {
            Some(first) if booted.len() > 1 => first
                .warnings
                .iter()
                .filter(|w| booted.iter().all(|k| k.warnings.contains(w)))
                .cloned()
                .collect(),
            _ => vec![],
        };
        Shared {
            accel: all_same(&|k| k.accel.clone()),
            kvm_fallback: all_same(&|k| k.kvm_fallback.clone()),
            warnings,
        }
    }

    /// The shared facts in words, one line each.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(a) = &self.accel {
            lines.push(format!("every kernel that booted ran under {a}"));
        }
        if let Some(why) = &self.kvm_fallback {
            lines.push(format!("on every kernel, KVM fell back to TCG: {why}"));
        }
        for w in &self.warnings {
            lines.push(format!("every guest warned: {w}"));
        }
        lines
    }

    /// What is a kernel's own, beside what every kernel shares: its notes
    /// (fallback, warnings, problems).
    pub fn own_notes(&self, k: &KernelRun) -> Vec<String> {
        k.kvm_fallback
            .iter()
            .filter(|f| self.kvm_fallback.as_ref() != Some(f))
            .map(|f| format!("KVM fell back to TCG: {f}"))
            .chain(
                k.warnings
                    .iter()
                    .filter(|w| !self.warnings.contains(w))
                    .map(|w| format!("guest warning: {w}")),
            )
            .chain(k.problems.iter().cloned())
            .collect()
    }
}

/// A kernel's run in a few words, leaving out what every kernel shares.
pub(crate) fn kernel_brief(k: &KernelRun, shared: &Shared) -> String {
    let mut s = format!("{}: ", k.kernel);
    match &k.status {
        RunStatus::Completed => {
            let _ = write!(s, "guest {}", k.guest_release.as_deref().unwrap_or("?"));
            if let Some(a) = k.accel.as_ref().filter(|_| shared.accel.is_none()) {
                let _ = write!(s, " under {a}");
            }
            if let Some(ms) = k.boot_wall_ms {
                let _ = write!(s, ", {:.1} s", ms as f64 / 1000.0);
            }
            if k.restored {
                s.push_str(" (from its saved state)");
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

/// A line of a terminal table: a group's heading, or one text per column with
/// the ANSI colour it gets.
enum TextLine {
    Heading(String),
    Cells(Vec<(String, Option<&'static str>)>),
}

/// A table for the terminal, columns padded to their widest text.
fn text_table(header: Vec<String>, lines: &[TextLine], color: bool) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .filter_map(|l| match l {
                    TextLine::Cells(cells) => cells.get(i).map(|(t, _)| t.chars().count()),
                    TextLine::Heading(_) => None,
                })
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |t: &str, w: usize| format!("{t:<w$}");
    let join = |cells: Vec<String>| cells.join("  ").trim_end().to_string() + "\n";
    let mut out = join(
        header
            .iter()
            .zip(&widths)
            .map(|(h, w)| pad(h, *w))
            .collect(),
    );
    out += &join(widths.iter().map(|w| "-".repeat(*w)).collect());
    for line in lines {
        match line {
            TextLine::Heading(label) => {
                let _ = writeln!(out, "-- {label}");
            }
            TextLine::Cells(cells) => {
                let texts = cells.iter().zip(&widths).map(|((t, ansi), w)| {
                    let padded = pad(t, *w);
                    match (ansi, color) {
                        (Some(a), true) => format!("\x1b[{a}m{padded}\x1b[0m"),
                        _ => padded,
                    }
                });
                out += &join(texts.collect());
            }
        }
    }
    out
}

/// The terminal report: a status line per kernel, the table of cases and the
/// table of programs (each when there are rows for it), every cell that did not
/// agree spelled out, then the verdict line.
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
    let (columns, rows) = grid(m, false);
    let mut lacking_said = false;
    if rows.iter().any(|(_, cells)| !cells.is_empty()) {
        let lines: Vec<TextLine> = rows
            .iter()
            .map(|(case, cells)| {
                if cells.is_empty() {
                    return TextLine::Heading(case.clone());
                }
                let texts = cells.iter().map(|c| match c {
                    Some(c) => (cell_text(c), Some(cell_ansi(c))),
                    None => (format!("? {MISSING}"), None),
                });
                TextLine::Cells(std::iter::once((case.clone(), None)).chain(texts).collect())
            })
            .collect();
        let headings = std::iter::once("case".to_string())
            .chain(columns.iter().map(header))
            .collect();
        out.push('\n');
        out += &text_table(headings, &lines, color);
        let cells = || rows.iter().flat_map(|(_, cells)| cells.iter().flatten());
        let mut legend =
            "✓ agrees with the documented kernel facts · ✗ disagrees · ? no answer".to_string();
        if cells().any(|c| matches!(c.verdict, Verdict::NotApplicable { .. })) {
            let _ = write!(legend, " · {NOT_APPLICABLE} {NOT_APPLICABLE_WORDS}");
        }
        if cells().any(|c| expected_kernel_bug(c) && c.agrees()) {
            let _ = write!(legend, " · {EXPECTED_BUG} {}", expected_bug_words());
        }
        let _ = writeln!(out, "{legend}");
        out += &lacking_lines(m);
        lacking_said = true;
    }
    let articles = seed_articles(&m.cases());
    if !articles.is_empty() {
        out.push('\n');
        for a in articles {
            let _ = writeln!(out, "{a}");
        }
    }
    out += &terminal_programs(m, color, !lacking_said);
    let mut silent_kernels = Vec::new();
    for k in m.runs.iter().filter(|k| k.tested()) {
        // A mode the kernel lacks is said once above, not per cell.
        let wrong: Vec<&Cell> = k.cells.iter().filter(|c| !c.passes()).collect();
        let wrong_programs: Vec<&ProgramCell> = k.programs.iter().filter(|c| !c.passes()).collect();
        // A guest that never answered gets one line, not one block per cell.
        let silent = wrong.iter().all(|c| c.record.is_none())
            && wrong_programs.iter().all(|c| c.record.is_none());
        if wrong.len() + wrong_programs.len() > 1 && silent {
            let why = match (wrong.first(), wrong_programs.first()) {
                (Some(c), _) => c.verdict.reasons().join("; "),
                (None, Some(c)) => c.verdict.reasons().join("; "),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "\n{}: no answer for {} cells: {why}",
                k.kernel,
                wrong.len() + wrong_programs.len()
            );
            silent_kernels.push(k.kernel.as_str());
            continue;
        }
        for c in wrong {
            let _ = write!(out, "\n{} {} {}:\n{}", k.kernel, c.jit, c.case, explain(c));
        }
    }
    // Program cells are told grouped across kernels: the same refusal of the
    // same program on five kernels is one finding.
    let (columns, rows) = program_grid(m, false);
    let (columns, rows) = keep_columns(columns, rows, |(k, _)| {
        !silent_kernels.contains(&k.kernel.as_str())
    });
    for (label, why, these) in program_wrongs(&columns, &rows) {
        let _ = writeln!(
            out,
            "\n{label} on {}:\n  - {why}",
            columns_text(&these, &columns)
        );
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

/// The programs' part of the terminal report: the table with each minimum
/// kernel (and, with `say_lacking`, the modes kernels lack, when no table of
/// cases said them), each distinct refusal in the verifier's words, and the
/// costs.
fn terminal_programs(m: &Matrix, color: bool, say_lacking: bool) -> String {
    let (columns, rows) = program_grid(m, false);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n");
    let lines: Vec<TextLine> = rows
        .iter()
        .map(|row| {
            let texts = row.cells.iter().map(|c| match c {
                Some(c) => (program_summary(c), Some(ansi(&c.verdict))),
                None => (MISSING.to_string(), None),
            });
            TextLine::Cells(
                std::iter::once((row.label.clone(), None))
                    .chain(texts)
                    .chain([(row.minimum.clone(), None)])
                    .collect(),
            )
        })
        .collect();
    let headings = std::iter::once("program".to_string())
        .chain(columns.iter().map(header))
        .chain(["minimum kernel".to_string()])
        .collect();
    out += &text_table(headings, &lines, color);
    let _ = write!(out, "{PROGRAM_LEGEND}");
    let not_applicable = rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .any(|c| matches!(c.verdict, Verdict::NotApplicable { .. }));
    if not_applicable {
        let _ = write!(out, " · {NOT_APPLICABLE} {NOT_APPLICABLE_WORDS}");
    }
    let _ = writeln!(out, "\n{}", program_rules_line(m));
    if say_lacking {
        out += &lacking_lines(m);
    }
    for r in refusals(&columns, &rows) {
        let _ = writeln!(out, "\n{} on {}: {}", r.label, r.kernels(&columns), r.what);
        for line in r.words.lines() {
            let _ = writeln!(out, "  | {line}");
        }
    }
    let costs = costs(&columns, &rows);
    if !costs.is_empty() {
        out += "\nWhat verifying each accepted program cost:\n";
        let lines: Vec<TextLine> = costs
            .iter()
            .map(|(label, column, cost)| {
                TextLine::Cells(
                    [(label.clone(), None), (header(column), None)]
                        .into_iter()
                        .chain(cost_row(cost).into_iter().map(|t| (t, None)))
                        .collect(),
                )
            })
            .collect();
        let headings = ["program", "kernel"]
            .into_iter()
            .chain(COST_HEADINGS)
            .map(str::to_string)
            .collect();
        out += &text_table(headings, &lines, false);
        let _ = writeln!(out, "{}", cost_sources(costs.iter().map(|c| c.2)));
    }
    out
}

/// Expected, got, the verifier's words and each difference, one per line; for
/// a mode the kernel lacks, only that (what its agent said there is moot).
pub fn explain(c: &Cell) -> String {
    let mut s = String::new();
    if let Verdict::NotApplicable { reason } = &c.verdict {
        let _ = writeln!(s, "  {NOT_APPLICABLE}: {reason}");
        return s;
    }
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
        "required: {} ({})",
        coverage.require.join(", "),
        Required::of(m).describe()
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
    // Covered by the modes it has: say which it lacks and why.
    let lacking = coverage
        .require
        .iter()
        .filter_map(|name| m.run(name))
        .flat_map(|k| {
            k.facts.modes.iter().filter_map(move |f| {
                let what = k.facts.absent(f.jit)?;
                let has: Vec<&str> = JitMode::ALL
                    .into_iter()
                    .filter(|&j| k.facts.absent(j).is_none())
                    .map(JitMode::as_str)
                    .collect();
                // The kernel's own line says `what` whole; this says why in short.
                let why = what.find('(').map_or(what, |at| &what[at..]);
                Some(format!(
                    "required kernel {}: covered in {}; {} {why}",
                    k.kernel,
                    if has.is_empty() {
                        "no mode".to_string()
                    } else {
                        has.join(" and ")
                    },
                    crate::modes::lacks(f.jit)
                ))
            })
        });
    std::iter::once(first)
        .chain(lacking)
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

/// How many of `verdicts` agree, disagree and have no answer, in words, and
/// how many are not applicable, with `absent` (what each kernel lacks) after.
fn tally<'a>(verdicts: impl Iterator<Item = &'a Verdict>, what: &str, absent: &str) -> String {
    let (mut agree, mut disagree, mut no_answer, mut not_applicable) = (0, 0, 0, 0);
    for v in verdicts {
        match v {
            Verdict::Agrees => agree += 1,
            Verdict::Disagrees { .. } => disagree += 1,
            Verdict::NoAnswer { .. } => no_answer += 1,
            Verdict::NotApplicable { .. } => not_applicable += 1,
        }
    }
    let mut s = format!("{agree} {what}, {disagree} disagree, {no_answer} without an answer");
    if not_applicable > 0 {
        let _ = write!(s, ", {not_applicable} not applicable ({absent})");
    }
    s
}

/// Each tested kernel's modes it was built without: "5.4: no interpreter".
pub fn absent_modes(m: &Matrix) -> Vec<String> {
    m.runs
        .iter()
        .filter(|k| k.tested())
        .flat_map(|k| {
            k.facts.modes.iter().filter_map(move |f| {
                k.facts
                    .absent(f.jit)
                    .map(|_| format!("{}: {}", k.kernel, crate::modes::lacks(f.jit)))
            })
        })
        .collect()
}

fn verdict_cells(m: &Matrix) -> String {
    let tested = || m.runs.iter().filter(|k| k.tested());
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
    let has_programs = m.runs.iter().any(|k| !k.programs.is_empty());
    let has_cases = m.runs.iter().any(|k| !k.cells.is_empty());
    let absent = absent_modes(m).join(", ");
    let mut parts = Vec::new();
    if has_cases || !has_programs {
        parts.push(tally(
            tested().flat_map(|k| k.cells.iter().map(|c| &c.verdict)),
            "cells agree with the documented kernel facts",
            &absent,
        ));
    }
    if has_programs {
        parts.push(tally(
            tested().flat_map(|k| k.programs.iter().map(|c| &c.verdict)),
            "program cells agree with their expectations",
            &absent,
        ));
    }
    let mut s = format!(
        "{}: {}",
        if m.all_agree() { "OK" } else { "FAILED" },
        parts.join("; ")
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
    use crate::programs::ProgramRules;
    use bpfmatrix_protocol::ProgramRecord;
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
            crate::matrix::HostFacts::default(),
        );
        run.accel = Some("tcg".into());
        run
    }

    /// The user object of the program fixtures.
    pub(crate) const OBJECT: &str = "probe.o";

    /// What a 5.2+ verifier says of a program it accepts after processing
    /// `insns` instructions.
    fn stats_log(insns: u64) -> String {
        format!("verification time 31 usec\nstack depth 8\nprocessed {insns} insns (limit 1000000) max_states_per_insn 0 total_states 3 peak_states 3 mark_read 1\n")
    }

    /// The guest's record of `program` accepted in mode `jit`, the verifier
    /// having processed `insns` instructions.
    pub(crate) fn accepted(program: &str, jit: JitMode, insns: u64) -> ProgramRecord {
        let log = stats_log(insns);
        let info = |value| Figure {
            value,
            from: CostSource::ProgInfo,
        };
        let cost = VerifierCost {
            xlated_bytes: Some(info(insns * 8)),
            jited_bytes: Some(info(if jit == JitMode::Jit { insns * 5 } else { 0 })),
            ..verifier_log::stats(&log)
        };
        ProgramRecord {
            object: OBJECT.into(),
            program: program.into(),
            section: "socket".into(),
            jit,
            outcome: Outcome::Accepted,
            verifier_log: log,
            log_cut_bytes: None,
            cost: Some(cost),
            duration_ms: 4,
        }
    }

    /// The guest's record of `program` refused with `errno`, the verifier's log
    /// ending in `words`.
    pub(crate) fn refused(program: &str, jit: JitMode, errno: i32, words: &str) -> ProgramRecord {
        let log = format!("func#0 @0\n0: R1=ctx() R10=fp0\n0: (b7) r1 = 4\n5: (85) call helper\n{words}\nprocessed 6 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n");
        ProgramRecord {
            outcome: Outcome::Rejected {
                step: format!("load {program}"),
                errno,
                verifier_tail: verifier_log::tail(&log, 3, 1000),
            },
            verifier_log: log,
            cost: None,
            ..accepted(program, jit, 0)
        }
    }

    /// The guest's record of `program`, which bpfmatrix cannot load.
    pub(crate) fn not_loadable(program: &str, jit: JitMode) -> ProgramRecord {
        ProgramRecord {
            section: "freplace/handler".into(),
            outcome: Outcome::NotLoadable {
                reason: "an freplace program needs a target program".into(),
            },
            verifier_log: String::new(),
            cost: None,
            ..accepted(program, jit, 0)
        }
    }

    /// A `bpfmatrix check` run of kernel `kernel` whose guest (`release`) sent
    /// `records`: one cell per mode x program of `programs`, judged by `rules`;
    /// a program without a record has no answer.
    pub(crate) fn check_run(
        kernel: &str,
        release: &str,
        programs: &[&str],
        mut records: Vec<ProgramRecord>,
        rules: &ProgramRules,
    ) -> KernelRun {
        let mut run = KernelRun::empty(kernel, "test", RunStatus::Completed);
        run.guest_release = Some(release.into());
        run.accel = Some("tcg".into());
        run.boot_wall_ms = Some(6100);
        for jit in JitMode::ALL {
            for program in programs {
                let record = records
                    .iter()
                    .position(|r| r.program == *program && r.jit == jit)
                    .map(|i| records.remove(i));
                run.programs.push(ProgramCell::judge(
                    OBJECT,
                    program,
                    jit,
                    Some(release),
                    record,
                    rules,
                    "the guest sent no record for it",
                    &crate::modes::KernelFacts::default(),
                ));
            }
        }
        assert!(records.is_empty(), "records of no program: {records:?}");
        run
    }

    pub(crate) const PROGRAMS: [&str; 5] = ["plain", "new_helper", "tail_mix", "flaky", "ext"];

    /// Five kernels checked in both modes: `plain` accepted everywhere;
    /// `new_helper` refused before 6.1 (as the rules say); `tail_mix` accepted
    /// by the JIT, refused by the interpreter (in two wordings); `flaky` refused
    /// by 6.1 alone, and never answered by latest's interpreter; `ext` not
    /// loadable by bpfmatrix.
    pub(crate) fn five_checked() -> Matrix {
        let rules = ProgramRules::parse(
            "[[program]]\nprogram = \"new_helper\"\nfirst_kernel = \"6.1\"\n",
            "expect.toml",
        )
        .unwrap();
        let kernels = [
            ("5.4", "5.4.0-1-generic"),
            ("5.10", "5.10.0-32-amd64"),
            ("6.1", "6.1.0-50-amd64"),
            ("6.12", "6.12.117+deb13-amd64"),
            ("latest", "7.2.13+deb14-amd64"),
        ];
        let runs: Vec<KernelRun> = kernels
            .iter()
            .enumerate()
            .map(|(i, (kernel, release))| {
                let mut records = Vec::new();
                for jit in JitMode::ALL {
                    records.push(accepted("plain", jit, 41 - i as u64));
                    records.push(if i < 2 {
                        refused("new_helper", jit, 22, "unknown func bpf_loop#181")
                    } else {
                        accepted("new_helper", jit, 57)
                    });
                    records.push(match (jit, *kernel) {
                        (JitMode::Jit, _) => accepted("tail_mix", jit, 33),
                        (JitMode::Interpreter, "latest") => refused(
                            "tail_mix",
                            jit,
                            22,
                            "mixing of tail_calls and bpf-to-bpf calls is not supported\ninsns processed 17",
                        ),
                        (JitMode::Interpreter, _) => refused(
                            "tail_mix",
                            jit,
                            22,
                            "tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls",
                        ),
                    });
                    match (*kernel, jit) {
                        ("6.1", _) => records.push(refused(
                            "flaky",
                            jit,
                            7,
                            "BPF program is too large. Processed 1000001 insn",
                        )),
                        ("latest", JitMode::Interpreter) => {}
                        _ => records.push(accepted("flaky", jit, 9000)),
                    }
                    records.push(not_loadable("ext", jit));
                }
                check_run(kernel, release, &PROGRAMS, records, &rules)
            })
            .collect();
        let mut m = Matrix::from_runs(runs);
        m.program_rules = rules;
        m
    }

    /// What kernels built with CONFIG_BPF_JIT_ALWAYS_ON=y lack, as the reports
    /// must say it: once.
    pub(crate) const NO_INTERPRETER: &str =
        "no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y)";

    /// What the agent says in each cell of a mode it could not switch to: the
    /// reports must not repeat it.
    pub(crate) const AGENT_COULD_NOT_SWITCH: &str =
        "the agent could not switch to the interpreter: bpf_jit_enable stays 1";

    /// A guest of `release` that answered every case in both modes as the
    /// facts say; with `always_on`, a kernel built with
    /// CONFIG_BPF_JIT_ALWAYS_ON=y, whose guest could not switch to the
    /// interpreter and whose agent said so in each of its cells.
    pub(crate) fn answered(kernel: &str, release: &str, always_on: bool) -> KernelRun {
        use crate::matrix::HostFacts;
        use crate::modes::ConfigFacts;
        let records = JitMode::ALL
            .into_iter()
            .flat_map(|m| CaseId::ALL.into_iter().map(move |c| (m, c)))
            .map(|(jit, case)| match jit {
                JitMode::Interpreter if always_on => bpfmatrix_protocol::CaseRecord {
                    case,
                    jit,
                    outcome: Outcome::Error {
                        message: AGENT_COULD_NOT_SWITCH.into(),
                    },
                    measured: Measured::default(),
                    duration_ms: 0,
                },
                _ => agreeing_record(case, jit, release),
            })
            .collect();
        let mut guest = collected(records);
        guest.release = Some(release.into());
        let config = if always_on {
            "CONFIG_BPF_JIT=y\nCONFIG_BPF_JIT_ALWAYS_ON=y\n"
        } else {
            "CONFIG_BPF_JIT=y\n# CONFIG_BPF_JIT_ALWAYS_ON is not set\n"
        };
        guest.jit_switches = crate::matrix::tests::switches(always_on);
        let mut run = KernelRun::judge(
            kernel,
            "test",
            &CaseId::ALL,
            &JitMode::ALL,
            guest,
            None,
            HostFacts {
                config: Some(ConfigFacts::from_text(
                    &format!("boot/config-{release}"),
                    config,
                )),
                missing_modules: vec![],
            },
        );
        run.accel = Some("tcg".into());
        run.boot_wall_ms = Some(7400);
        run
    }

    /// 5.4, built without the interpreter, and 6.12, where the seccomp demo
    /// interpreted oopses the kernel as documented: every cell passes.
    pub(crate) fn lacking_and_oops() -> Matrix {
        Matrix::from_runs([
            answered("5.4", "5.4.0-216-generic", true),
            answered("6.12", "6.12.107+deb13-amd64", false),
        ])
    }

    /// [`five_checked`] with 5.4 built without the interpreter: its
    /// interpreter's program cells judged again with its facts.
    pub(crate) fn five_checked_without_interpreter() -> Matrix {
        let mut m = five_checked();
        let facts = answered("5.4", "5.4.0-216-generic", true).facts;
        let k = &mut m.runs[0];
        for c in &mut k.programs {
            *c = ProgramCell::judge(
                &c.object.clone(),
                &c.program.clone(),
                c.jit,
                k.guest_release.as_deref(),
                c.record.take(),
                &m.program_rules,
                "the guest sent no record for it",
                &facts,
            );
        }
        k.facts = facts;
        m
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

    /// The row of `label` in a terminal report, its cells split on two spaces.
    fn terminal_row(text: &str, label: &str) -> Vec<String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{label} ")))
            .unwrap_or_else(|| panic!("no row {label}: {text}"));
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn program_rows_say_what_each_kernel_did_and_the_minimum_kernel() {
        let m = five_checked();
        let text = terminal(&m, false);
        let header = terminal_row(&text, "program");
        assert_eq!(header[1..3], ["5.4 jit", "5.4 interpreter"]);
        assert_eq!(header.last().unwrap(), "minimum kernel");
        let row = terminal_row(&text, "probe.o:plain");
        assert_eq!(row[1], "✓ 41 insns");
        assert_eq!(row[10], "✓ 37 insns");
        assert_eq!(row[11], "≤ 5.4", "the oldest kernel given accepts it");
        let row = terminal_row(&text, "probe.o:new_helper");
        assert_eq!(
            row[1..6],
            ["✗ EINVAL", "✗ EINVAL", "✗ EINVAL", "✗ EINVAL", "✓ 57 insns"]
        );
        assert_eq!(row[11], "6.1");
        let row = terminal_row(&text, "probe.o:tail_mix");
        assert_eq!(row[1..3], ["✓ 33 insns", "✗ EINVAL ⚠"]);
        assert_eq!(row[11], "jit: ≤ 5.4 · interpreter: none");
        let row = terminal_row(&text, "probe.o:flaky");
        assert_eq!(row[5..7], ["✗ E2BIG ⚠", "✗ E2BIG ⚠"]);
        assert_eq!(row[10], "no answer", "never a pass: {row:?}");
        assert_eq!(row[11], "≤ 5.4 (✗ from 6.1, ✓ from 6.12)");
        let row = terminal_row(&text, "probe.o:ext");
        assert_eq!(row[1..11], ["–"; 10]);
        assert_eq!(row[11], "no answer");
        assert!(text.contains(PROGRAM_LEGEND), "{text}");
        assert!(
            text.contains("programs are judged by expect.toml"),
            "{text}"
        );
        assert!(
            text.ends_with("FAILED: 32 program cells agree with their expectations, 7 disagree, 11 without an answer\n"),
            "{text}"
        );
        assert!(!text.contains("\ncase "), "no case table: {text}");
    }

    #[test]
    fn each_distinct_refusal_is_told_once_in_the_verifiers_words() {
        let text = terminal(&five_checked(), false);
        let block = |head: &str| {
            let at = text.find(head).unwrap_or_else(|| panic!("{head}: {text}"));
            text[at + 1..]
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("  | "))
                .map(|l| &l[4..])
                .collect::<Vec<_>>()
        };
        assert_eq!(
            block("\nprobe.o:new_helper on 5.4, 5.10: rejected at load new_helper, EINVAL\n"),
            [
                "0: R1=ctx() R10=fp0",
                "0: (b7) r1 = 4",
                "5: (85) call helper",
                "unknown func bpf_loop#181"
            ]
        );
        assert_eq!(
            text.matches("unknown func bpf_loop#181").count(),
            1,
            "{text}"
        );
        // The interpreter's two wordings are two refusals; the newer one without
        // the statistics line that follows it.
        assert!(text.contains("\nprobe.o:tail_mix on 5.4 interpreter, 5.10 interpreter, 6.1 interpreter, 6.12 interpreter: rejected at load tail_mix, EINVAL\n"), "{text}");
        assert_eq!(
            block("\nprobe.o:tail_mix on latest interpreter: ").last(),
            Some(&"mixing of tail_calls and bpf-to-bpf calls is not supported")
        );
        assert!(text.contains("\nprobe.o:ext on 5.4, 5.10, 6.1, 6.12, latest: not loadable by bpfmatrix: an freplace program needs a target program\n"), "{text}");
        // Disagreements are grouped the same way.
        assert!(text.contains("\nprobe.o:flaky on 6.1:\n  - expected accepted (no rule in expect.toml: every program must load on every kernel), got rejected at load flaky, E2BIG"), "{text}");
        assert!(
            text.contains(
                "\nprobe.o:flaky on latest interpreter:\n  - the guest sent no record for it\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn accepted_programs_costs_are_listed_with_their_sources() {
        let text = terminal(&five_checked(), false);
        let row = terminal_row(&text, "probe.o:plain       5.4 jit");
        assert_eq!(
            row,
            [
                "probe.o:plain",
                "5.4 jit",
                "41",
                "3 (3)",
                "8",
                "31",
                "328",
                "205"
            ]
        );
        assert!(text.contains("insns, states (peak), stack bytes, time µs from the verifier log; xlated bytes, jited bytes from the bpf_prog_info; n/a: the kernel does not report it"), "{text}");
        let mut bare = accepted("plain", JitMode::Jit, 41);
        let cost = bare.cost.as_mut().unwrap();
        cost.total_states = None;
        cost.peak_states = None;
        cost.verification_usec = None;
        assert_eq!(cost_row(cost)[1..4], ["n/a", "8", "n/a"]);
    }

    #[test]
    fn a_matrix_of_cases_alone_has_no_program_table_and_one_of_programs_no_case_table() {
        let cases = terminal(&Matrix::from_runs([run("6.1", 33)]), false);
        assert!(
            !cases.contains("minimum kernel") && !cases.contains("\nprogram "),
            "{cases}"
        );
        for text in [
            super::markdown::markdown(&five_checked()),
            super::html::html(&five_checked()),
        ] {
            assert!(
                !text.contains("<th>case</th>") && !text.contains("| case |"),
                "{text}"
            );
            assert!(text.contains("minimum kernel"), "{text}");
        }
        for text in [
            super::markdown::markdown(&Matrix::from_runs([run("6.1", 33)])),
            super::html::html(&Matrix::from_runs([run("6.1", 33)])),
        ] {
            assert!(!text.contains("minimum kernel"), "{text}");
        }
    }

    #[test]
    fn an_unavailable_kernel_is_no_pass_for_a_program() {
        let mut m = five_checked();
        let gone = &mut m.runs[0];
        gone.status = RunStatus::Unavailable {
            reason: "no source".into(),
        };
        for c in &mut gone.programs {
            *c = ProgramCell::judge(
                &c.object.clone(),
                &c.program.clone(),
                c.jit,
                None,
                None,
                &m.program_rules,
                "kernel unavailable: no source",
                &crate::modes::KernelFacts::default(),
            );
        }
        let text = terminal(&m, false);
        assert!(
            !terminal_row(&text, "program").contains(&"5.4 jit".to_string()),
            "{text}"
        );
        assert_eq!(
            terminal_row(&text, "probe.o:plain").last().unwrap(),
            "≤ 5.10"
        );
        let md = super::markdown::markdown(&m);
        assert!(
            md.contains("| `probe.o:plain` | unavailable | unavailable | ✓ 40 insns"),
            "{md}"
        );
    }

    /// Writes five-kernel `run` and `check` reports into $BPFMATRIX_SAMPLES
    /// (run/ and check/; modes/ and modes-check/ with 5.4 built without the
    /// interpreter and 6.12's expected oops), each with the terminal's text, to
    /// look at in a browser:
    /// `BPFMATRIX_SAMPLES=/tmp/s cargo test -p bpfmatrix --lib sample_reports -- --ignored`
    #[test]
    #[ignore = "writes files to look at; needs BPFMATRIX_SAMPLES"]
    fn sample_reports() {
        let dir = PathBuf::from(std::env::var("BPFMATRIX_SAMPLES").expect("BPFMATRIX_SAMPLES"));
        let fallback =
            "KVM did not answer within 10 s (/dev/kvm is there, but its guest never ran)";
        let mut runs: Vec<KernelRun> = ["5.4", "5.10", "6.1", "6.12", "latest"]
            .iter()
            .map(|k| crate::matrix::tests::complete_except(k, &[]))
            .collect();
        let mut checked = five_checked();
        for k in runs.iter_mut().chain(checked.runs.iter_mut()) {
            k.accel = Some("tcg".into());
            k.kvm_fallback = Some(fallback.into());
            k.boot_wall_ms = Some(7400);
        }
        let mut ran = Matrix::from_runs(runs);
        ran.runs[1].cells[0] = Cell::judge(
            CaseId::TailCallChain,
            JitMode::Jit,
            Some(crate::matrix::tests::RELEASE),
            Some({
                let mut r = agreeing_record(
                    CaseId::TailCallChain,
                    JitMode::Jit,
                    crate::matrix::tests::RELEASE,
                );
                r.measured.tail_calls = Some(32);
                r
            }),
            "unused",
            &crate::modes::KernelFacts::default(),
        );
        // 5.4 built without the interpreter, 6.12 with the expected oops.
        let modes = Matrix::from_runs(
            [
                ("5.4", "5.4.0-216-generic", true),
                ("5.10", "5.10.0-32-amd64", false),
                ("6.1", "6.1.0-56-amd64", false),
                ("6.12", "6.12.107+deb13-amd64", false),
                ("latest", "6.16.3+deb14-amd64", false),
            ]
            .map(|(k, release, always_on)| answered(k, release, always_on)),
        );
        let mut modes_checked = five_checked_without_interpreter();
        for k in &mut modes_checked.runs {
            k.accel = Some("tcg".into());
        }
        for (name, m) in [
            ("run", &ran),
            ("check", &checked),
            ("modes", &modes),
            ("modes-check", &modes_checked),
        ] {
            write_reports(m, &dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("terminal.txt"), terminal(m, false)).unwrap();
        }
    }

    #[test]
    fn seed_demos_are_grouped_under_a_heading_naming_their_articles() {
        let m = Matrix::from_runs([crate::matrix::tests::complete_except("6.1", &[])]);
        // The page sets the article under the case's name, to keep the column narrow.
        let page = super::html::html(&m)
            .replace(" <small>[", " [")
            .replace("]</small>", "]")
            .replace("<wbr>", "");
        for text in [terminal(&m, false), super::markdown::markdown(&m), page] {
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
            &crate::modes::KernelFacts::default(),
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

    #[test]
    fn a_mode_a_kernel_lacks_is_said_once_and_its_cells_are_grey() {
        let m = lacking_and_oops();
        assert!(m.all_agree(), "{}", verdict_line(&m));
        let text = terminal(&m, false);
        assert_eq!(text.matches(NO_INTERPRETER).count(), 1, "{text}");
        assert!(!text.contains(AGENT_COULD_NOT_SWITCH), "{text}");
        let header = terminal_row(&text, "case");
        assert_eq!(
            header[1..],
            ["5.4 jit", "5.4 interpreter", "6.12 jit", "6.12 interpreter"]
        );
        let row = terminal_row(&text, "tail_call.chain");
        assert_eq!(
            row[1..],
            [
                "✓ 33 tail calls",
                "n/a",
                "✓ 33 tail calls",
                "✓ 33 tail calls"
            ]
        );
        // Every cell of the column, and only those, are not applicable.
        for case in m.cases() {
            let row = terminal_row(&text, &row_label(case));
            assert_eq!(row[2], NOT_APPLICABLE, "{row:?}");
            assert!(
                !row[1..]
                    .iter()
                    .enumerate()
                    .any(|(i, c)| i != 1 && c == NOT_APPLICABLE),
                "{row:?}"
            );
        }
        assert!(
            text.contains(&format!("\nn/a 5.4 interpreter: {NO_INTERPRETER}\n  evidence: CONFIG_BPF_JIT_ALWAYS_ON=y, in boot/config-5.4.0-216-generic\n  evidence: the guest's write of 0 to net.core.bpf_jit_enable was refused: ")),
            "{text}"
        );
        assert!(
            text.contains(&format!(" · n/a {NOT_APPLICABLE_WORDS}")),
            "{text}"
        );
        // No cell of the column is told as if it had gone wrong.
        assert!(!text.contains("5.4 interpreter tail_call.chain:"), "{text}");
        assert!(
            text.ends_with("not applicable (5.4: no interpreter)\n"),
            "{text}"
        );
        // Grey in colour, the agent's words in no summary.
        let color = terminal(&m, true);
        assert!(color.contains("\x1b[90mn/a"), "{color}");
        let cell = m
            .cell("5.4", JitMode::Interpreter, CaseId::TailCallChain)
            .unwrap();
        assert_eq!(cell_summary(cell), NOT_APPLICABLE);
        assert_eq!(short_summary(cell), NOT_APPLICABLE);
    }

    #[test]
    fn an_expected_kernel_oops_is_set_apart_from_a_pass() {
        let m = lacking_and_oops();
        let bugs: Vec<(&str, JitMode, CaseId)> = m
            .cells()
            .filter(|(_, c)| expected_kernel_bug(c))
            .map(|(k, c)| (k.kernel.as_str(), c.jit, c.case))
            .collect();
        assert_eq!(
            bugs,
            [("6.12", JitMode::Interpreter, CaseId::SeedSeccompTailCall)]
        );
        let oops = m
            .cell("6.12", JitMode::Interpreter, CaseId::SeedSeccompTailCall)
            .unwrap();
        assert!(oops.agrees(), "{:?}", oops.verdict);
        let seen = oops
            .record
            .as_ref()
            .unwrap()
            .measured
            .seed
            .as_ref()
            .unwrap();
        assert!(!seen.kernel_oops.is_empty() && seen.child_signal == Some(11));
        let text = terminal(&m, false);
        let row = terminal_row(&text, &row_label(CaseId::SeedSeccompTailCall));
        assert_eq!(
            row[1..],
            [
                "✓ 5 trace lines",
                "n/a",
                "✓ 3 trace lines",
                "⚠ expected oops (signal 11)"
            ]
        );
        assert!(
            text.contains(&format!("⚠ {}", expected_bug_words())),
            "{text}"
        );
        assert!(
            expected_bug_words()
                .contains("the kernel oopses as documented (011832b97b31, from 6.9)"),
            "{}",
            expected_bug_words()
        );
        // Orange, neither the green of a pass nor the yellow of no answer.
        let color = terminal(&m, true);
        assert!(
            color.contains("\x1b[38;5;208m⚠ expected oops (signal 11)"),
            "{color}"
        );
        // Without an oops to expect, there is no legend for it.
        let plain = terminal(&Matrix::from_runs([run("6.1", 33)]), false);
        assert!(
            !plain.contains("expected kernel bug") && !plain.contains(" · n/a "),
            "{plain}"
        );
    }

    #[test]
    fn a_programs_mode_the_kernel_lacks_is_said_once_and_greyed() {
        let m = five_checked_without_interpreter();
        let text = terminal(&m, false);
        assert_eq!(text.matches(NO_INTERPRETER).count(), 1, "{text}");
        let row = terminal_row(&text, "probe.o:tail_mix");
        assert_eq!(row[1..3], ["✓ 33 insns", "n/a"], "{row:?}");
        // 5.4's interpreter refused tail_mix; with no interpreter that is no refusal.
        assert!(text.contains("\nprobe.o:tail_mix on 5.10 interpreter, 6.1 interpreter, 6.12 interpreter: rejected at load tail_mix, EINVAL\n"), "{text}");
        assert!(
            !text.contains("\nprobe.o:tail_mix on 5.4 interpreter:"),
            "{text}"
        );
        // 5.4 refused new_helper in the one mode it has: in every mode.
        assert!(
            text.contains(
                "\nprobe.o:new_helper on 5.4, 5.10: rejected at load new_helper, EINVAL\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(&format!("{PROGRAM_LEGEND} · n/a {NOT_APPLICABLE_WORDS}\n")),
            "{text}"
        );
        assert!(terminal(&m, true).contains("\x1b[90mn/a"));
    }

    #[test]
    fn a_mode_no_tested_kernel_has_is_not_measured_never_none() {
        let mut m = five_checked_without_interpreter();
        m.runs.truncate(1);
        let minimums = minimum_kernels(&m);
        assert_eq!(
            minimum_text(&m, &minimums, OBJECT, "tail_mix"),
            "jit: ≤ 5.4 · interpreter: not measured: no tested kernel has an interpreter"
        );
        // With a kernel that has one, the interpreter's minimum is measured again.
        let m = five_checked_without_interpreter();
        let minimums = minimum_kernels(&m);
        assert!(!minimum_text(&m, &minimums, OBJECT, "tail_mix").contains("not measured"));
    }

    fn nix_is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
    }
}
