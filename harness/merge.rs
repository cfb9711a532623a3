//! `bpfmatrix merge`: joins the matrices of several jobs (one kernel each, usually)
//! into one, with their users' programs (`bpfmatrix check`) and the rules those
//! were judged by, and judges whether the kernels the merge requires are covered.
//!
//! Nothing a document says about itself is trusted: every input is read through
//! [`crate::report::json::read`], which judges every record again from the guest's
//! outcome, the feature table and the document's program rules, and refuses a
//! document whose stored verdicts (or expectations) differ from the ones it gets,
//! or that lacks a record its own plan asked for. Inputs whose programs were
//! judged by different rules are refused: one matrix has one set of rules.
//! Coverage is computed from the cells every time the matrix is judged
//! ([`Coverage::gaps`]), never read from a stored flag.

use crate::matrix::{KernelRun, Matrix, RunStatus};
use crate::programs::{ProgramCell, ProgramRules};
use crate::report::json;
use anyhow::{bail, Result};
use bpfmatrix_protocol::{CaseId, JitMode};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The coverage `bpfmatrix merge --require K,... --allow-unavailable K,...` asks
/// for. A required kernel is covered when its report is there and either
/// - it was obtained, and every cell the matrix requires ([`Required::of`]: every
///   case of [`CaseId::ALL`], and every program of the matrix, in every mode of
///   [`JitMode::ALL`]) is there with the guest's record in it (whatever the
///   kernel's status or the cells' verdicts, which are judged on their own); or
/// - it is unavailable (could not be obtained here) and is in `allow_unavailable`.
///
/// A kernel built without a mode (no interpreter: CONFIG_BPF_JIT_ALWAYS_ON=y) is
/// covered by the modes it has: that mode's cells hold the guest's record and are
/// not applicable ([`crate::modes`]); one that runs no mode at all is not covered.
///
/// "Allowed unavailable" is not "allowed incomplete": an allowed kernel that was
/// obtained must have every cell, and one without any report (its job crashed)
/// is not unavailable either.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Coverage {
    pub require: Vec<String>,
    #[serde(default)]
    pub allow_unavailable: Vec<String>,
}

impl Coverage {
    /// Checks the names as given on the command line. Empty names are dropped (an
    /// empty list reads as none); an allowed kernel that is not required is a
    /// usage error: it would allow nothing, and is most likely a typo.
    pub fn new(require: Vec<String>, allow_unavailable: Vec<String>) -> Result<Self> {
        fn clean(names: Vec<String>) -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                if !out.iter().any(|o| o == n) {
                    out.push(n.to_string());
                }
            }
            out
        }
        let require = clean(require);
        let allow_unavailable = clean(allow_unavailable);
        let stray: Vec<&str> = allow_unavailable
            .iter()
            .filter(|a| !require.contains(a))
            .map(String::as_str)
            .collect();
        if !stray.is_empty() {
            bail!(
                "--allow-unavailable names {} but --require does not: only required kernels can be allowed to be unavailable{}",
                stray.join(", "),
                if require.is_empty() {
                    String::new()
                } else {
                    format!(" (required: {})", require.join(", "))
                }
            );
        }
        Ok(Coverage {
            require,
            allow_unavailable,
        })
    }

    pub fn allows_unavailable(&self, kernel: &str) -> bool {
        self.allow_unavailable.iter().any(|k| k == kernel)
    }

    /// Every required kernel of `matrix` that is not covered, and why, computed
    /// from the runs and their cells: a cell counts only when it holds the guest's
    /// record.
    pub fn gaps(&self, matrix: &Matrix) -> Vec<Gap> {
        let required = Required::of(matrix);
        let mut gaps = Vec::new();
        for name in &self.require {
            let Some(run) = matrix.run(name) else {
                gaps.push(Gap::NoReport {
                    kernel: name.clone(),
                });
                continue;
            };
            let allowed = self.allows_unavailable(name);
            if let RunStatus::Unavailable { reason } = &run.status {
                if !allowed {
                    gaps.push(Gap::Unavailable {
                        kernel: name.clone(),
                        reason: reason.clone(),
                    });
                }
                continue;
            }
            let cells: Vec<(JitMode, CaseId)> = JitMode::ALL
                .into_iter()
                .flat_map(|m| required.cases.iter().map(move |c| (m, *c)))
                .filter(|&(m, c)| run.cell(c, m).is_none_or(|cell| cell.record.is_none()))
                .collect();
            let programs: Vec<(JitMode, String)> = JitMode::ALL
                .into_iter()
                .flat_map(|m| required.programs.iter().map(move |p| (m, p)))
                .filter(|(m, (object, program))| {
                    !run.programs.iter().any(|c| {
                        (c.jit == *m && &c.object == object && &c.program == program)
                            && c.record.is_some()
                    })
                })
                .map(|(m, (object, program))| (m, format!("{object}:{program}")))
                .collect();
            if run.status == RunStatus::Completed && !run.has_a_mode() {
                gaps.push(Gap::NoMode {
                    kernel: name.clone(),
                    lacks: run
                        .facts
                        .modes
                        .iter()
                        .filter_map(|f| run.facts.absent(f.jit))
                        .map(str::to_string)
                        .collect(),
                });
            }
            if !cells.is_empty() || !programs.is_empty() {
                gaps.push(Gap::Missing {
                    kernel: name.clone(),
                    cells,
                    programs,
                    total: required.total(),
                    unit: required.unit(),
                    run_failed: match &run.status {
                        RunStatus::Failed { reason } => Some(reason.clone()),
                        _ => None,
                    },
                    allowed,
                });
            }
        }
        gaps
    }
}

/// The cells a required kernel must have, in each JIT mode of [`JitMode::ALL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Required {
    /// Every case; none in a matrix of users' programs alone (`bpfmatrix check`
    /// runs no case).
    pub cases: Vec<CaseId>,
    /// Every program (object, program) any kernel of the matrix was given, so a
    /// job that left an object out is a gap, not a smaller plan.
    pub programs: Vec<(String, String)>,
}

impl Required {
    pub fn of(matrix: &Matrix) -> Required {
        let mut programs: Vec<(String, String)> = Vec::new();
        for c in matrix.runs.iter().flat_map(|k| &k.programs) {
            let key = (c.object.clone(), c.program.clone());
            if !programs.contains(&key) {
                programs.push(key);
            }
        }
        let has_cases = matrix.runs.iter().any(|k| !k.cells.is_empty());
        Required {
            cases: if has_cases || programs.is_empty() {
                CaseId::ALL.to_vec()
            } else {
                vec![]
            },
            programs,
        }
    }

    /// Cells per kernel.
    pub fn total(&self) -> usize {
        (self.cases.len() + self.programs.len()) * JitMode::ALL.len()
    }

    /// What the cells are: "case x JIT mode", "program x JIT mode", or both.
    pub fn unit(&self) -> &'static str {
        match (self.cases.is_empty(), self.programs.is_empty()) {
            (false, true) | (true, true) => "case x JIT mode",
            (true, false) => "program x JIT mode",
            (false, false) => "case or program x JIT mode",
        }
    }

    /// The requirement in words: "every case in both JIT modes: 24 cells each".
    pub fn describe(&self) -> String {
        let what = match (self.cases.is_empty(), self.programs.is_empty()) {
            (false, true) | (true, true) => "every case",
            (true, false) => "every program",
            (false, false) => "every case and every program",
        };
        format!("{what} in both JIT modes: {} cells each", self.total())
    }
}

/// Why a required kernel is not covered: see [`Coverage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// No run of the kernel in the matrix at all.
    NoReport { kernel: String },
    /// The kernel was built without every mode the matrix asks for (no JIT and
    /// no interpreter): nothing of it can be judged.
    NoMode { kernel: String, lacks: Vec<String> },
    /// The kernel could not be obtained, and it is not allowed to be unavailable.
    Unavailable { kernel: String, reason: String },
    /// Cells without the guest's record: cases, and programs ("object:program").
    /// `total` is every cell required ([`Required::total`]), `unit` what they are;
    /// `run_failed` says why the run failed, if it did; `allowed` is set when the
    /// kernel was only allowed to be unavailable.
    Missing {
        kernel: String,
        cells: Vec<(JitMode, CaseId)>,
        programs: Vec<(JitMode, String)>,
        total: usize,
        unit: &'static str,
        run_failed: Option<String>,
        allowed: bool,
    },
}

impl Gap {
    /// A few words for the verdict line: "4.16 unavailable", "6.1 lacks 1 cell".
    pub fn short(&self) -> String {
        match self {
            Gap::NoReport { kernel } => format!("{kernel} has no report"),
            Gap::NoMode { kernel, .. } => format!("{kernel} runs no JIT mode"),
            Gap::Unavailable { kernel, .. } => format!("{kernel} unavailable"),
            Gap::Missing {
                kernel,
                cells,
                programs,
                total,
                ..
            } if cells.len() + programs.len() == *total => format!("{kernel} lacks every cell"),
            Gap::Missing {
                kernel,
                cells,
                programs,
                ..
            } => {
                let n = cells.len() + programs.len();
                format!("{kernel} lacks {n} cell{}", if n == 1 { "" } else { "s" })
            }
        }
    }
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gap::NoReport { kernel } => write!(
                f,
                "required kernel {kernel}: no report for it in any merged document"
            ),
            Gap::NoMode { kernel, lacks } => write!(
                f,
                "required kernel {kernel} runs none of the JIT modes: {}",
                lacks.join("; ")
            ),
            Gap::Unavailable { kernel, reason } => write!(
                f,
                "required kernel {kernel} is unavailable ({reason}) and not in --allow-unavailable"
            ),
            Gap::Missing {
                kernel,
                cells,
                programs,
                total,
                unit,
                run_failed,
                allowed,
            } => {
                write!(f, "required kernel {kernel}")?;
                if *allowed {
                    write!(
                        f,
                        " (allowed to be unavailable, but its report does not say unavailable, and allowed unavailable is not allowed incomplete)"
                    )?;
                }
                let names: Vec<String> = cells
                    .iter()
                    .map(|(m, c)| format!("{m} {c}"))
                    .chain(programs.iter().map(|(m, p)| format!("{m} {p}")))
                    .collect();
                if names.len() == *total {
                    write!(f, ": no guest record for any of its {total} {unit} cells")?;
                } else {
                    write!(
                        f,
                        ": no guest record for {} of its {total} {unit} cells: {}",
                        names.len(),
                        names.join(", ")
                    )?;
                }
                match run_failed {
                    Some(why) => write!(f, " (run failed: {why})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Joins matrices (named "input 1", "input 2"... in errors; see
/// [`merge_named`]).
pub fn merge(parts: Vec<Matrix>, coverage: Coverage) -> Result<Matrix> {
    let named = parts
        .into_iter()
        .enumerate()
        .map(|(i, m)| (format!("input {}", i + 1), m))
        .collect();
    merge_named(named, coverage)
}

/// Joins matrices, each with the name errors give it (its file). A kernel that
/// appears in two of them is an error: two jobs claimed the same cells. So are
/// programs judged by different rules (an input without programs has no say).
/// The inputs' own `coverage` is not carried over: a merge judges by what it is
/// asked. A required kernel with no run becomes a failed run ("no report from
/// this kernel's job") with every cell the merge requires ([`Required`]), so its
/// column shows, and the matrix keeps `coverage` for every judgement of it.
pub fn merge_named(parts: Vec<(String, Matrix)>, coverage: Coverage) -> Result<Matrix> {
    let mut rules: Option<(String, ProgramRules)> = None;
    for (name, m) in &parts {
        let judges = m.runs.iter().any(|k| !k.programs.is_empty())
            || m.program_rules != ProgramRules::default();
        match &rules {
            Some((first, r)) if judges && *r != m.program_rules => bail!(
                "{first} and {name} judged their programs by different rules ({} and {}): merge documents of one --expect file",
                describe_rules(r),
                describe_rules(&m.program_rules)
            ),
            None if judges => rules = Some((name.clone(), m.program_rules.clone())),
            _ => {}
        }
    }
    let program_rules = rules.map(|(_, r)| r).unwrap_or_default();
    let mut runs: Vec<KernelRun> = Vec::new();
    for (name, run) in parts
        .into_iter()
        .flat_map(|(name, m)| m.runs.into_iter().map(move |r| (name.clone(), r)))
    {
        if runs.iter().any(|r| r.kernel == run.kernel) {
            bail!(
                "kernel '{}' appears in more than one document (again in {name})",
                run.kernel
            );
        }
        runs.push(run);
    }
    let required = Required::of(&Matrix::from_runs(runs.clone()));
    for k in &coverage.require {
        if !runs.iter().any(|r| &r.kernel == k) {
            let why = "no report from this kernel's job";
            let mut run = KernelRun::failed(
                k,
                "required by the merge",
                why.into(),
                &required.cases,
                &JitMode::ALL,
            );
            for jit in JitMode::ALL {
                for (object, program) in &required.programs {
                    run.programs.push(ProgramCell::judge(
                        object,
                        program,
                        jit,
                        None,
                        None,
                        &program_rules,
                        why,
                        &run.facts,
                    ));
                }
            }
            runs.push(run);
        }
    }
    Ok(Matrix {
        runs,
        coverage: (!coverage.require.is_empty()).then_some(coverage),
        program_rules,
    })
}

/// Program rules in a few words, for an error.
fn describe_rules(r: &ProgramRules) -> String {
    match (&r.file, r.rules.len()) {
        (None, 0) => "no --expect file".to_string(),
        (Some(f), n) => format!("{f}, {n} rule{}", if n == 1 { "" } else { "s" }),
        (None, n) => format!("{n} rules of no file"),
    }
}

/// What `bpfmatrix merge` does with its inputs: reads every `matrix.json`, each
/// judged again and refused, naming the file and the cells, when it is not what
/// its guests' records give ([`json::read`]), then [`merge_named`]s them, each
/// named by its path.
pub fn merge_files(inputs: &[PathBuf], coverage: Coverage) -> Result<Matrix> {
    let parts = inputs
        .iter()
        .map(|p| Ok((p.display().to_string(), json::read(p)?)))
        .collect::<Result<Vec<_>>>()?;
    merge_named(parts, coverage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::tests::{agreeing_record, collected, complete_except};
    use crate::matrix::Verdict;
    use crate::report;
    use serde_json::Value;

    fn complete(kernel: &str) -> Matrix {
        Matrix::from_runs([complete_except(kernel, &[])])
    }

    fn unavailable(kernel: &str) -> Matrix {
        Matrix::from_runs([KernelRun::unavailable(
            kernel,
            "src",
            "kernel.ubuntu.com does not resolve".into(),
            &CaseId::ALL,
            &JitMode::ALL,
        )])
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn merged(parts: Vec<Matrix>, require: &[&str], allow: &[&str]) -> Matrix {
        let coverage = Coverage::new(names(require), names(allow)).unwrap();
        merge(parts, coverage).unwrap()
    }

    const CELLS: usize = CaseId::ALL.len() * JitMode::ALL.len();

    #[test]
    fn a_required_kernel_without_an_interpreter_is_covered_by_its_jit_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let run = crate::matrix::tests::always_on("5.4", &CaseId::ALL);
        let written = report::write_reports(&Matrix::from_runs([run]), dir.path()).unwrap();
        let coverage = Coverage::new(names(&["5.4"]), vec![]).unwrap();
        let m = merge_files(&written[..1], coverage).unwrap();
        assert!(m.coverage_gaps().is_empty(), "{:?}", m.coverage_gaps());
        assert!(m.all_agree());
        let n = CaseId::ALL.len();
        assert_eq!(
            report::verdict_line(&m),
            format!("OK: {n} cells agree with the documented kernel facts, 0 disagree, 0 without an answer, {n} not applicable (5.4: no interpreter)")
        );
        assert_eq!(
            report::coverage_lines(&m)[1],
            "required kernel 5.4: covered in jit; no interpreter (CONFIG_BPF_JIT_ALWAYS_ON=y)"
        );
    }

    #[test]
    fn a_required_kernel_that_runs_no_mode_is_not_covered() {
        let mut run = crate::matrix::tests::always_on("5.4", &[CaseId::TailCallChain]);
        run.facts.modes.push(crate::modes::ModeFact {
            jit: JitMode::Jit,
            status: crate::modes::ModeStatus::Absent {
                what: "no JIT in this kernel (CONFIG_BPF_JIT is not set)".into(),
                evidence: vec![],
            },
        });
        let m = merged(vec![Matrix::from_runs([run])], &["5.4"], &[]);
        let gaps = m.coverage_gaps();
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert_eq!(
            gaps[0].to_string(),
            "required kernel 5.4 runs none of the JIT modes: no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y); no JIT in this kernel (CONFIG_BPF_JIT is not set)"
        );
        assert!(!m.all_agree());
    }

    #[test]
    fn matrices_merge_and_a_kernel_twice_is_refused() {
        let a = Matrix::from_runs([KernelRun::unavailable(
            "4.16",
            "src",
            "no source".into(),
            &[CaseId::TailCallChain],
            &[JitMode::Jit],
        )]);
        let b = Matrix::from_runs([KernelRun::failed(
            "6.1",
            "src",
            "panic".into(),
            &[CaseId::TailCallChain],
            &[JitMode::Jit],
        )]);
        let m = merge(vec![a.clone(), b], Coverage::default()).unwrap();
        assert_eq!(m.runs.len(), 2);
        assert_eq!(m.cells().count(), 2);
        assert!(!m.all_agree());
        let err = merge(vec![a.clone(), a], Coverage::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than one document"), "{err}");
    }

    #[test]
    fn every_required_cell_present_passes() {
        let d = merged(
            vec![complete("6.1"), complete("6.12")],
            &["6.1", "6.12"],
            &[],
        );
        assert_eq!(d.coverage_gaps(), vec![]);
        assert!(d.all_agree());
        let line = report::verdict_line(&d);
        assert!(line.starts_with("OK: "), "{line}");
        let text = report::terminal(&d, false);
        assert!(
            text.contains("required: 6.1, 6.12 (every case in both JIT modes: ")
                && text.contains("; every required kernel is covered"),
            "{text}"
        );
    }

    #[test]
    fn a_required_unavailable_kernel_fails_the_merge_and_says_why() {
        let d = merged(
            vec![complete("6.1"), unavailable("4.16")],
            &["4.16", "6.1"],
            &[],
        );
        assert!(!d.all_agree());
        let gaps = d.coverage_gaps();
        assert_eq!(
            gaps,
            vec![Gap::Unavailable {
                kernel: "4.16".into(),
                reason: "kernel.ubuntu.com does not resolve".into()
            }]
        );
        assert_eq!(
            gaps[0].to_string(),
            "required kernel 4.16 is unavailable (kernel.ubuntu.com does not resolve) and not in --allow-unavailable"
        );
        let line = report::verdict_line(&d);
        assert!(line.starts_with("FAILED: "), "{line}");
        assert!(
            line.ends_with("; required but not covered: 4.16 unavailable"),
            "{line}"
        );
        for text in [report::terminal(&d, false), report::markdown(&d)] {
            assert!(
                text.contains("required kernel 4.16 is unavailable"),
                "{text}"
            );
        }
    }

    #[test]
    fn an_allowed_unavailable_kernel_passes_and_still_shows_as_unavailable() {
        let d = merged(
            vec![complete("6.1"), unavailable("4.16")],
            &["4.16", "6.1"],
            &["4.16"],
        );
        assert_eq!(d.coverage_gaps(), vec![]);
        assert!(d.all_agree());
        let old = d.run("4.16").unwrap();
        assert!(matches!(old.status, RunStatus::Unavailable { .. }));
        assert!(old.cells.iter().all(|c| !c.agrees() && c.record.is_none()));
        let line = report::verdict_line(&d);
        assert!(line.starts_with("OK: "), "{line}");
        assert!(line.ends_with("; unavailable here: 4.16"), "{line}");
        // The JSON keeps the kernel unavailable and the requirement, not a verdict.
        let json: Value = serde_json::from_str(&json::to_json(&d)).unwrap();
        assert_eq!(json["kernels"][1]["status"], "unavailable");
        assert_eq!(
            json["coverage"],
            serde_json::json!({"require": ["4.16", "6.1"], "allow_unavailable": ["4.16"]})
        );
        let md = report::markdown(&d);
        assert!(
            md.contains("- required: 4.16, 6.1 (every case in both JIT modes: ")
                && md.contains(
                    "; allowed to be unavailable: 4.16; every required kernel is covered"
                ),
            "{md}"
        );
        assert!(
            md.contains("| 6.1 jit | 6.1 interpreter | 4.16 jit | 4.16 interpreter |"),
            "{md}"
        );
        for row in md.lines().filter(|l| l.starts_with("| `")) {
            assert!(row.ends_with(" | unavailable | unavailable |"), "{row}");
        }
        let page = report::html(&d);
        assert_eq!(
            page.matches("<td class=\"none\">unavailable</td>").count(),
            CELLS,
            "{page}"
        );
    }

    #[test]
    fn a_missing_cell_fails_the_merge_naming_the_cell() {
        // Two cells without the guest's record: one it never sent, one whose
        // cell is gone from the run altogether.
        let mut six = complete_except("6.1", &[(JitMode::Jit, CaseId::Bpf2bpfControl)]);
        six.cells
            .retain(|c| !(c.jit == JitMode::Interpreter && c.case == CaseId::TailCallChain));
        let d = merged(vec![Matrix::from_runs([six])], &["6.1"], &[]);
        assert!(!d.all_agree());
        let gaps = d.coverage_gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        let Gap::Missing { cells, .. } = &gaps[0] else {
            panic!("{gaps:?}")
        };
        assert_eq!(
            cells,
            &[
                (JitMode::Jit, CaseId::Bpf2bpfControl),
                (JitMode::Interpreter, CaseId::TailCallChain)
            ]
        );
        assert_eq!(
            gaps[0].to_string(),
            format!("required kernel 6.1: no guest record for 2 of its {CELLS} case x JIT mode cells: jit bpf2bpf.control, interpreter tail_call.chain")
        );
        let line = report::verdict_line(&d);
        assert!(line.starts_with("FAILED: "), "{line}");
        assert!(
            line.ends_with("; required but not covered: 6.1 lacks 2 cells"),
            "{line}"
        );
        let md = report::markdown(&d);
        assert!(
            md.contains("| `tail_call.chain` | ✅ accepted, 33 tail calls | ⚪ missing |"),
            "{md}"
        );
        assert!(
            md.contains("| `bpf2bpf.control` | ⚪ no answer | ✅ accepted, returns 199 |"),
            "{md}"
        );
    }

    #[test]
    fn allowed_unavailable_is_not_allowed_incomplete() {
        let six = complete_except("6.1", &[(JitMode::Interpreter, CaseId::FentryTcLoopback)]);
        let d = merged(vec![Matrix::from_runs([six])], &["6.1"], &["6.1"]);
        assert!(!d.all_agree());
        let text = d.coverage_gaps()[0].to_string();
        assert!(
            text.starts_with("required kernel 6.1 (allowed to be unavailable, but its report does not say unavailable, and allowed unavailable is not allowed incomplete): no guest record for 1 of its"),
            "{text}"
        );
    }

    #[test]
    fn a_required_kernel_without_a_report_fails_even_when_allowed_unavailable() {
        for allow in [&[][..], &["5.10"][..]] {
            let d = merged(vec![complete("6.1")], &["5.10", "6.1"], allow);
            assert!(!d.all_agree());
            assert!(matches!(
                d.run("5.10").unwrap().status,
                RunStatus::Failed { .. }
            ));
            let gaps = d.coverage_gaps();
            assert_eq!(gaps.len(), 1, "{gaps:?}");
            let line = report::verdict_line(&d);
            assert!(
                line.ends_with("; required but not covered: 5.10 lacks every cell"),
                "{line}"
            );
            let text = gaps[0].to_string();
            assert!(
                text.starts_with("required kernel 5.10")
                    && text.ends_with(&format!(": no guest record for any of its {CELLS} case x JIT mode cells (run failed: no report from this kernel's job)")),
                "{text}"
            );
        }
    }

    #[test]
    fn a_failed_run_with_every_record_is_covered_but_not_a_pass() {
        let mut six = complete_except("6.1", &[]);
        six.status = RunStatus::Failed {
            reason: "the guest never said it was done".into(),
        };
        let d = merged(vec![Matrix::from_runs([six])], &["6.1"], &[]);
        assert_eq!(d.coverage_gaps(), vec![]);
        assert!(!d.all_agree());
    }

    #[test]
    fn allowing_a_kernel_that_is_not_required_is_a_usage_error() {
        let err = Coverage::new(names(&["6.1", "5.10"]), names(&["4.16"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--allow-unavailable names 4.16 but --require does not: only required kernels can be allowed to be unavailable (required: 6.1, 5.10)"
        );
        assert!(Coverage::new(vec![], names(&["4.16"])).is_err());
        // Empty names (an empty list from a script) and repeats are dropped.
        let c = Coverage::new(names(&["4.16", "", "4.16", " 6.1"]), names(&[""])).unwrap();
        assert_eq!(c.require, names(&["4.16", "6.1"]));
        assert!(c.allow_unavailable.is_empty());
    }

    #[test]
    fn a_merge_judges_by_its_own_requirements_not_the_inputs() {
        let six = complete_except("6.1", &[(JitMode::Interpreter, CaseId::FentryTcLoopback)]);
        let failed = merged(vec![Matrix::from_runs([six])], &["6.1"], &[]);
        assert!(!failed.all_agree());
        // Merged again without --require: the stored requirement is not inherited.
        let again = merge(vec![failed.clone()], Coverage::default()).unwrap();
        assert_eq!(again.coverage, None);
        // And a stored requirement is judged from the cells every time.
        let read = json::from_json(&json::to_json(&failed)).unwrap();
        assert_eq!(read.coverage, failed.coverage);
        assert_eq!(read.coverage_gaps(), failed.coverage_gaps());
        assert!(!read.all_agree());
    }

    /// `five_checked`'s kernels, one matrix each, as five `check` jobs write them.
    fn checked_jobs() -> Vec<Matrix> {
        let all = report::tests::five_checked();
        all.runs
            .iter()
            .map(|run| Matrix {
                runs: vec![run.clone()],
                coverage: None,
                program_rules: all.program_rules.clone(),
            })
            .collect()
    }

    const CHECKED: [&str; 5] = ["5.4", "5.10", "6.1", "6.12", "latest"];

    #[test]
    fn program_cells_and_their_rules_are_carried() {
        let d = merge(checked_jobs(), Coverage::default()).unwrap();
        assert_eq!(d, report::tests::five_checked());
        // A job of the built-in cases has no say in the programs' rules.
        let mut parts = checked_jobs();
        parts.push(complete("6.6"));
        let d = merge(parts, Coverage::default()).unwrap();
        assert_eq!(d.program_rules.file.as_deref(), Some("expect.toml"));
        assert_eq!(d.runs.len(), 6);
    }

    #[test]
    fn inputs_judged_by_different_rules_are_refused_naming_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, mut m) in checked_jobs().into_iter().take(2).enumerate() {
            if i == 1 {
                m.program_rules = ProgramRules::default();
                let run = &mut m.runs[0];
                for c in &mut run.programs {
                    *c = ProgramCell::judge(
                        &c.object.clone(),
                        &c.program.clone(),
                        c.jit,
                        run.guest_release.as_deref(),
                        c.record.clone(),
                        &m.program_rules,
                        "unused",
                        &crate::modes::KernelFacts::default(),
                    );
                }
            }
            let path = dir.path().join(format!("{i}.json"));
            std::fs::write(&path, json::to_json(&m)).unwrap();
            paths.push(path);
        }
        let err = format!(
            "{:#}",
            merge_files(&paths, Coverage::default()).unwrap_err()
        );
        assert_eq!(
            err,
            format!(
                "{} and {} judged their programs by different rules (expect.toml, 1 rule and no --expect file): merge documents of one --expect file",
                paths[0].display(),
                paths[1].display()
            )
        );
    }

    #[test]
    fn a_required_kernel_needs_every_program_in_both_modes_and_no_case_in_a_check() {
        let d = merged(checked_jobs(), &CHECKED, &[]);
        let gaps = d.coverage_gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(
            gaps[0].to_string(),
            "required kernel latest: no guest record for 1 of its 10 program x JIT mode cells: interpreter probe.o:flaky"
        );
        assert_eq!(gaps[0].short(), "latest lacks 1 cell");
        let text = report::terminal(&d, false);
        assert!(
            text.contains("required: 5.4, 5.10, 6.1, 6.12, latest (every program in both JIT modes: 10 cells each)"),
            "{text}"
        );
        // A job that left an object out is a gap, not a smaller plan.
        let mut jobs = checked_jobs();
        jobs[2].runs[0].programs.retain(|c| c.program != "ext");
        let d = merged(jobs, &["6.1"], &[]);
        assert_eq!(
            d.coverage_gaps()[0].to_string(),
            "required kernel 6.1: no guest record for 2 of its 10 program x JIT mode cells: jit probe.o:ext, interpreter probe.o:ext"
        );
        // A required kernel without a report gets every program, no case.
        let d = merged(checked_jobs(), &["6.6"], &[]);
        let missing = d.run("6.6").unwrap();
        assert!(missing.cells.is_empty());
        assert_eq!(missing.programs.len(), 10);
        assert!(missing
            .programs
            .iter()
            .all(|c| c.record.is_none() && !c.agrees()));
        assert_eq!(
            d.coverage_gaps()[0].to_string(),
            "required kernel 6.6: no guest record for any of its 10 program x JIT mode cells (run failed: no report from this kernel's job)"
        );
        let back = json::from_json(&json::to_json(&d)).unwrap();
        assert_eq!(back, d);
        // Cases and programs together: each is required.
        let mut parts = checked_jobs();
        parts.push(complete("6.6"));
        let d = merged(parts, &["6.6"], &[]);
        assert_eq!(
            d.coverage_gaps()[0].to_string(),
            format!("required kernel 6.6: no guest record for 10 of its {} case or program x JIT mode cells: jit probe.o:plain, jit probe.o:new_helper, jit probe.o:tail_mix, jit probe.o:flaky, jit probe.o:ext, interpreter probe.o:plain, interpreter probe.o:new_helper, interpreter probe.o:tail_mix, interpreter probe.o:flaky, interpreter probe.o:ext", CELLS + 10)
        );
    }

    // What `bpfmatrix merge` does with documents edited by hand.

    /// Kernel 6.1 whose JIT tail_call.chain cell disagrees (32 tail calls) and
    /// every other cell agrees, written to a matrix.json in `dir`; returns the
    /// document as JSON for the test to edit.
    fn written(dir: &std::path::Path) -> (PathBuf, Value) {
        let records = JitMode::ALL
            .into_iter()
            .flat_map(|m| CaseId::ALL.into_iter().map(move |c| (m, c)))
            .map(|(m, c)| {
                let mut r = agreeing_record(c, m, crate::matrix::tests::RELEASE);
                if (m, c) == (JitMode::Jit, CaseId::TailCallChain) {
                    r.measured.tail_calls = Some(32);
                }
                r
            })
            .collect();
        let run = KernelRun::judge(
            "6.1",
            "src",
            &CaseId::ALL,
            &JitMode::ALL,
            collected(records),
            None,
            crate::matrix::HostFacts::default(),
        );
        let paths = report::write_reports(&Matrix::from_runs([run]), dir).unwrap();
        let text = std::fs::read_to_string(&paths[0]).unwrap();
        (paths[0].clone(), serde_json::from_str(&text).unwrap())
    }

    fn record_mut<'a>(doc: &'a mut Value, jit: &str, case: &str) -> &'a mut Value {
        doc["records"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|r| r["jit"] == jit && r["case"] == case)
            .unwrap()
    }

    fn merge_edited(path: &std::path::Path, doc: &Value) -> Result<Matrix> {
        std::fs::write(path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
        merge_files(&[path.to_path_buf()], Coverage::default())
    }

    #[test]
    fn an_untouched_document_merges_with_its_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let (path, doc) = written(dir.path());
        let m = merge_edited(&path, &doc).unwrap();
        assert!(!m.all_agree());
        assert_eq!(
            m.cell("6.1", JitMode::Jit, CaseId::TailCallChain)
                .unwrap()
                .verdict,
            Verdict::Disagrees {
                differences: vec!["tail calls: expected 33, got 32".into()]
            }
        );
        assert_eq!(m.cells().filter(|(_, c)| c.agrees()).count(), CELLS - 1);
    }

    #[test]
    fn a_disagreeing_cell_marked_agreeing_by_hand_fails_the_merge_naming_the_cell() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut doc) = written(dir.path());
        let r = record_mut(&mut doc, "jit", "tail_call.chain");
        assert_eq!(r["verdict"], "disagrees");
        r["verdict"] = "agrees".into();
        r["differences"] = serde_json::json!([]);
        let err = format!("{:#}", merge_edited(&path, &doc).unwrap_err());
        assert!(
            err.starts_with(&format!("{} is refused", path.display())),
            "{err}"
        );
        assert!(
            err.contains("kernel '6.1' jit tail_call.chain: stored verdict agrees, re-judged disagrees (tail calls: expected 33, got 32)"),
            "{err}"
        );
        assert_eq!(err.matches("kernel '6.1'").count(), 1, "{err}");
    }

    #[test]
    fn an_agreeing_cell_marked_disagreeing_by_hand_fails_the_merge_naming_the_cell() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut doc) = written(dir.path());
        let r = record_mut(&mut doc, "interpreter", "bpf2bpf.caller_frame_240");
        assert_eq!(r["verdict"], "agrees");
        r["verdict"] = "disagrees".into();
        r["differences"] = serde_json::json!(["errno: expected EACCES, got EINVAL"]);
        let err = format!("{:#}", merge_edited(&path, &doc).unwrap_err());
        assert!(
            err.contains("kernel '6.1' interpreter bpf2bpf.caller_frame_240: stored verdict disagrees (errno: expected EACCES, got EINVAL), re-judged agrees"),
            "{err}"
        );
        assert_eq!(err.matches("kernel '6.1'").count(), 1, "{err}");
    }

    #[test]
    fn an_edited_outcome_or_expectation_fails_the_merge_naming_the_cell() {
        let dir = tempfile::tempdir().unwrap();
        let (path, doc) = written(dir.path());
        // The guest's answer changed, its stored verdict left: judged again, the
        // 33 tail calls agree.
        let mut outcome = doc.clone();
        record_mut(&mut outcome, "jit", "tail_call.chain")["measured"]["tail_calls"] = 33.into();
        let err = format!("{:#}", merge_edited(&path, &outcome).unwrap_err());
        assert!(
            err.contains("kernel '6.1' jit tail_call.chain: stored verdict disagrees (tail calls: expected 33, got 32), re-judged agrees"),
            "{err}"
        );
        // An expectation the feature table does not give.
        let mut expected = doc.clone();
        record_mut(&mut expected, "jit", "tail_call.chain")["expected"] =
            "accepted, 32 tail calls".into();
        let err = format!("{:#}", merge_edited(&path, &expected).unwrap_err());
        assert!(
            err.contains("kernel '6.1' jit tail_call.chain: stored expectation \"accepted, 32 tail calls\", the feature table's \"accepted, 33 tail calls\""),
            "{err}"
        );
    }

    #[test]
    fn a_document_missing_a_planned_cell_fails_the_merge_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut doc) = written(dir.path());
        doc["records"]
            .as_array_mut()
            .unwrap()
            .retain(|r| !(r["jit"] == "interpreter" && r["case"] == "fentry_fexit_tc.loopback"));
        let err = format!("{:#}", merge_edited(&path, &doc).unwrap_err());
        assert!(
            err.contains("kernel '6.1' has no record for interpreter fentry_fexit_tc.loopback, which its plan asked for"),
            "{err}"
        );
        // Nor can the plan be shrunk to hide it: a record outside the plan is
        // refused as well.
        doc["kernels"][0]["plan"]["cases"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c != "fentry_fexit_tc.loopback");
        let err = format!("{:#}", merge_edited(&path, &doc).unwrap_err());
        assert!(
            err.contains("kernel '6.1' has a record for jit fentry_fexit_tc.loopback, which its plan did not ask for"),
            "{err}"
        );
    }
}
