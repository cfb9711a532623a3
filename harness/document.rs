//! The matrix document (`matrix.json`): the versioned, flat form of kernel runs that
//! every report is rendered from and that CI jobs exchange and merge.
//!
//! Schema `bpfmatrix-matrix/1`:
//! - `schema`: this string; readers refuse other values.
//! - `generated_by`: the bpfmatrix version that wrote it.
//! - `kernels[]`: one entry per kernel: `name`, `source`, `status` (`completed`,
//!   `unavailable`, `failed`), `reason` (why not completed), `guest_release`
//!   (`uname -r` in the guest), `accel` (`kvm`/`tcg`), `kvm_fallback` (why KVM was
//!   left), `boot_wall_ms` (QEMU start to exit), `agent_start_ms` / `agent_done_ms`
//!   (guest uptime), `warnings` (the agent's), `problems` (protocol violations).
//! - `records[]`: one per kernel x JIT mode x case: `kernel`, `jit` (`jit` or
//!   `interpreter`), `case`, `outcome` (`accepted`, `rejected`, `unsupported`,
//!   `error`, or null when the guest sent none), `step`, `errno`, `errno_name` and
//!   `verifier` (the last lines of the verifier log) for rejections, `detail` (the
//!   reason or error message), `measured` (`tail_calls`, `fell_through`, `retval`,
//!   `verdicts[]`), `expected` and `expected_because` (the documented fact),
//!   `verdict` (`agrees`, `disagrees`, `no_answer`) and `differences`.
//! - `coverage` (optional, written by `bpfmatrix merge --require`): `require`, the
//!   kernels that must be covered, and `allow_unavailable`, those of them that may
//!   be unavailable instead. It holds the requirement, never its outcome: whether
//!   each required kernel is covered is computed from `kernels[]` and `records[]`
//!   whenever the document is judged ([`Document::coverage_gaps`]).

use crate::expect::{describe_expected, errno_name};
use crate::matrix::{KernelRun, RunStatus, Verdict};
use anyhow::{bail, Context, Result};
use bpfmatrix_probes::{CaseId, JitMode, Measured, Outcome};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SCHEMA: &str = "bpfmatrix-matrix/1";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Document {
    pub schema: String,
    pub generated_by: String,
    pub kernels: Vec<KernelEntry>,
    pub records: Vec<Record>,
    /// What the merge that made this document required; absent for a run's own
    /// document (then only the cells it has are judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<Coverage>,
}

/// The coverage `bpfmatrix merge --require K,... --allow-unavailable K,...` asks
/// for. A required kernel is covered when its report is there and either
/// - it was obtained, and every case of [`CaseId::ALL`] in every mode of
///   [`JitMode::ALL`] has a record with the guest's answer in it (whatever the
///   kernel's status or the cells' verdicts, which are judged on their own); or
/// - it is unavailable (could not be obtained here) and is in `allow_unavailable`.
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
}

/// Why a required kernel is not covered: see [`Coverage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gap {
    /// No entry for the kernel in the document at all.
    NoReport { kernel: String },
    /// The kernel could not be obtained, and it is not allowed to be unavailable.
    Unavailable { kernel: String, reason: String },
    /// Cells without a guest record. `total` is every case x JIT mode; `status`
    /// and `reason` are the kernel entry's (a failed run says why); `allowed` is
    /// set when the kernel was only allowed to be unavailable.
    Missing {
        kernel: String,
        cells: Vec<(JitMode, CaseId)>,
        total: usize,
        status: Status,
        reason: Option<String>,
        allowed: bool,
    },
}

impl Gap {
    /// A few words for the verdict line: "4.16 unavailable", "6.1 lacks 1 cell".
    pub fn short(&self) -> String {
        match self {
            Gap::NoReport { kernel } => format!("{kernel} has no report"),
            Gap::Unavailable { kernel, .. } => format!("{kernel} unavailable"),
            Gap::Missing {
                kernel,
                cells,
                total,
                ..
            } if cells.len() == *total => format!("{kernel} lacks every cell"),
            Gap::Missing { kernel, cells, .. } => format!(
                "{kernel} lacks {} cell{}",
                cells.len(),
                if cells.len() == 1 { "" } else { "s" }
            ),
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
            Gap::Unavailable { kernel, reason } => write!(
                f,
                "required kernel {kernel} is unavailable ({reason}) and not in --allow-unavailable"
            ),
            Gap::Missing {
                kernel,
                cells,
                total,
                status,
                reason,
                allowed,
            } => {
                write!(f, "required kernel {kernel}")?;
                if *allowed {
                    write!(
                        f,
                        " (allowed to be unavailable, but its report does not say unavailable, and allowed unavailable is not allowed incomplete)"
                    )?;
                }
                if cells.len() == *total {
                    write!(
                        f,
                        ": no guest record for any of its {total} case x JIT mode cells"
                    )?;
                } else {
                    let names: Vec<String> =
                        cells.iter().map(|(m, c)| format!("{m} {c}")).collect();
                    write!(
                        f,
                        ": no guest record for {} of its {total} case x JIT mode cells: {}",
                        cells.len(),
                        names.join(", ")
                    )?;
                }
                match (status, reason) {
                    (Status::Completed, _) => Ok(()),
                    (_, Some(why)) => write!(f, " (run failed: {why})"),
                    (_, None) => write!(f, " (run failed)"),
                }
            }
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Completed,
    Unavailable,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KernelEntry {
    pub name: String,
    pub source: String,
    pub status: Status,
    pub reason: Option<String>,
    pub guest_release: Option<String>,
    pub accel: Option<String>,
    pub kvm_fallback: Option<String>,
    pub boot_wall_ms: Option<u64>,
    pub agent_start_ms: Option<u64>,
    pub agent_done_ms: Option<u64>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CellVerdict {
    Agrees,
    Disagrees,
    NoAnswer,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    pub kernel: String,
    pub jit: JitMode,
    pub case: CaseId,
    pub outcome: Option<String>,
    pub step: Option<String>,
    pub errno: Option<i32>,
    pub errno_name: Option<String>,
    pub verifier: Option<String>,
    pub detail: Option<String>,
    pub measured: Option<Measured>,
    pub duration_ms: Option<u64>,
    pub expected: Option<String>,
    pub expected_because: Option<String>,
    pub verdict: CellVerdict,
    #[serde(default)]
    pub differences: Vec<String>,
}

impl Record {
    pub fn agrees(&self) -> bool {
        self.verdict == CellVerdict::Agrees
    }

    /// Whether the guest answered this cell: an outcome the guest can send.
    pub fn has_guest_answer(&self) -> bool {
        matches!(
            self.outcome.as_deref(),
            Some("accepted" | "rejected" | "unsupported" | "error")
        )
    }
}

impl KernelEntry {
    fn from_run(run: &KernelRun) -> Self {
        let (status, reason) = match &run.status {
            RunStatus::Completed => (Status::Completed, None),
            RunStatus::Unavailable { reason } => (Status::Unavailable, Some(reason.clone())),
            RunStatus::Failed { reason } => (Status::Failed, Some(reason.clone())),
        };
        KernelEntry {
            name: run.kernel.clone(),
            source: run.source.clone(),
            status,
            reason,
            guest_release: run.guest_release.clone(),
            accel: run.accel.clone(),
            kvm_fallback: run.kvm_fallback.clone(),
            boot_wall_ms: run.boot_wall_ms,
            agent_start_ms: run.agent_start_ms,
            agent_done_ms: run.agent_done_ms,
            warnings: run.warnings.clone(),
            problems: run.problems.clone(),
        }
    }
}

/// The flat record of one cell of a run.
pub fn record(run: &KernelRun, cell: &crate::matrix::Cell) -> Record {
    let outcome = cell.record.as_ref().map(|r| &r.outcome);
    let (step, errno, verifier, detail) = match outcome {
        Some(Outcome::Rejected {
            step,
            errno,
            verifier_tail,
        }) => (
            Some(step.clone()),
            Some(*errno),
            Some(verifier_tail.clone()),
            None,
        ),
        Some(Outcome::Unsupported { reason }) => (None, None, None, Some(reason.clone())),
        Some(Outcome::Error { message }) => (None, None, None, Some(message.clone())),
        _ => (None, None, None, None),
    };
    let (verdict, differences) = match &cell.verdict {
        Verdict::Agrees => (CellVerdict::Agrees, vec![]),
        Verdict::Disagrees { differences } => (CellVerdict::Disagrees, differences.clone()),
        Verdict::NoAnswer { reason } => (CellVerdict::NoAnswer, vec![reason.clone()]),
    };
    Record {
        kernel: run.kernel.clone(),
        jit: cell.jit,
        case: cell.case,
        outcome: outcome.map(|o| o.kind().to_string()),
        step,
        errno,
        errno_name: errno.map(errno_name),
        verifier,
        detail,
        measured: cell.record.as_ref().map(|r| r.measured.clone()),
        duration_ms: cell.record.as_ref().map(|r| r.duration_ms),
        expected: cell
            .expected
            .as_ref()
            .map(|e| describe_expected(&e.outcome)),
        expected_because: cell.expected.as_ref().map(|e| e.because.clone()),
        verdict,
        differences,
    }
}

impl Document {
    pub fn from_runs(runs: &[KernelRun]) -> Self {
        Document {
            schema: SCHEMA.to_string(),
            generated_by: format!("bpfmatrix {}", env!("CARGO_PKG_VERSION")),
            kernels: runs.iter().map(KernelEntry::from_run).collect(),
            records: runs
                .iter()
                .flat_map(|run| run.cells.iter().map(move |c| record(run, c)))
                .collect(),
            coverage: None,
        }
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let doc: Document = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bpfmatrix matrix document", path.display()))?;
        if doc.schema != SCHEMA {
            bail!(
                "{} has schema '{}', this bpfmatrix reads '{SCHEMA}'",
                path.display(),
                doc.schema
            );
        }
        Ok(doc)
    }

    /// Joins documents from several jobs (one kernel each, usually). A kernel that
    /// appears twice is an error: two jobs claimed the same cells. So are records
    /// of a kernel its document does not list, and two records for one cell: the
    /// reports could show only one of them. The inputs' own `coverage` is not
    /// carried over: a merge judges by what it is asked ([`Document::merge_covering`]).
    pub fn merge(docs: Vec<Document>) -> Result<Self> {
        let mut merged = Document::from_runs(&[]);
        for doc in docs {
            for r in &doc.records {
                if doc.kernel(&r.kernel).is_none() {
                    bail!(
                        "a document has a record for kernel '{}' ({} {}) but no entry for that kernel",
                        r.kernel,
                        r.jit,
                        r.case
                    );
                }
                let same = |o: &&Record| o.kernel == r.kernel && o.jit == r.jit && o.case == r.case;
                if doc.records.iter().filter(same).count() > 1 {
                    bail!(
                        "kernel '{}' has more than one record for {} {}",
                        r.kernel,
                        r.jit,
                        r.case
                    );
                }
            }
            for k in doc.kernels {
                if merged.kernels.iter().any(|m| m.name == k.name) {
                    bail!("kernel '{}' appears in more than one document", k.name);
                }
                merged.kernels.push(k);
            }
            merged.records.extend(doc.records);
        }
        Ok(merged)
    }

    /// [`Document::merge`], then the coverage the merge requires: a required kernel
    /// with no report becomes a failed run ("no report from this kernel's job"), so
    /// its column shows, and the document keeps `coverage` for every judgement of it.
    pub fn merge_covering(docs: Vec<Document>, coverage: Coverage) -> Result<Self> {
        let mut merged = Document::merge(docs)?;
        let missing: Vec<KernelRun> = coverage
            .require
            .iter()
            .filter(|k| merged.kernel(k).is_none())
            .map(|k| {
                KernelRun::failed(
                    k,
                    "required by the merge",
                    "no report from this kernel's job".into(),
                    &CaseId::ALL,
                    &JitMode::ALL,
                )
            })
            .collect();
        let placeholders = Document::from_runs(&missing);
        merged.kernels.extend(placeholders.kernels);
        merged.records.extend(placeholders.records);
        if !coverage.require.is_empty() {
            merged.coverage = Some(coverage);
        }
        Ok(merged)
    }

    /// Every required kernel that is not covered, and why (see [`Coverage`]),
    /// computed from the kernel entries and the records themselves: a cell counts
    /// only when a record for it carries the guest's answer (an outcome).
    pub fn coverage_gaps(&self) -> Vec<Gap> {
        let Some(coverage) = &self.coverage else {
            return vec![];
        };
        let mut gaps = Vec::new();
        for name in &coverage.require {
            let Some(k) = self.kernel(name) else {
                gaps.push(Gap::NoReport {
                    kernel: name.clone(),
                });
                continue;
            };
            let allowed = coverage.allows_unavailable(name);
            if k.status == Status::Unavailable {
                if !allowed {
                    gaps.push(Gap::Unavailable {
                        kernel: name.clone(),
                        reason: k.reason.clone().unwrap_or_else(|| "no reason given".into()),
                    });
                }
                continue;
            }
            let cells: Vec<(JitMode, CaseId)> = JitMode::ALL
                .into_iter()
                .flat_map(|m| CaseId::ALL.into_iter().map(move |c| (m, c)))
                .filter(|&(m, c)| {
                    !self.records.iter().any(|r| {
                        r.kernel == *name && r.jit == m && r.case == c && r.has_guest_answer()
                    })
                })
                .collect();
            if !cells.is_empty() {
                gaps.push(Gap::Missing {
                    kernel: name.clone(),
                    cells,
                    total: JitMode::ALL.len() * CaseId::ALL.len(),
                    status: k.status,
                    reason: k.reason.clone(),
                    allowed,
                });
            }
        }
        gaps
    }

    pub fn kernel(&self, name: &str) -> Option<&KernelEntry> {
        self.kernels.iter().find(|k| k.name == name)
    }

    pub fn record(&self, kernel: &str, jit: JitMode, case: CaseId) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.kernel == kernel && r.jit == jit && r.case == case)
    }

    /// The columns of the matrix: every kernel that has records, by JIT mode.
    pub fn columns(&self) -> Vec<(&KernelEntry, JitMode)> {
        self.kernels
            .iter()
            .flat_map(|k| JitMode::ALL.into_iter().map(move |m| (k, m)))
            .filter(|(k, m)| {
                self.records
                    .iter()
                    .any(|r| r.kernel == k.name && r.jit == *m)
            })
            .collect()
    }

    /// The rows: every case that has records, in catalog order.
    pub fn cases(&self) -> Vec<CaseId> {
        CaseId::ALL
            .into_iter()
            .filter(|c| self.records.iter().any(|r| r.case == *c))
            .collect()
    }

    /// True when every kernel that could be had completed and every one of its
    /// cells agrees, at least one cell was checked, and every kernel the merge
    /// required is covered ([`Document::coverage_gaps`]).
    pub fn all_agree(&self) -> bool {
        let tested: Vec<&KernelEntry> = self
            .kernels
            .iter()
            .filter(|k| k.status != Status::Unavailable)
            .collect();
        !tested.is_empty()
            && tested.iter().all(|k| k.status == Status::Completed)
            && self
                .records
                .iter()
                .filter(|r| tested.iter().any(|k| k.name == r.kernel))
                .all(Record::agrees)
            && self.coverage_gaps().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(kernel: &str, status: RunStatus) -> Document {
        let run = match status {
            RunStatus::Unavailable { reason } => KernelRun::unavailable(
                kernel,
                "src",
                reason,
                &[CaseId::TailCallChain],
                &[JitMode::Jit],
            ),
            RunStatus::Failed { reason } => KernelRun::failed(
                kernel,
                "src",
                reason,
                &[CaseId::TailCallChain],
                &[JitMode::Jit],
            ),
            RunStatus::Completed => unreachable!(),
        };
        Document::from_runs(&[run])
    }

    #[test]
    fn documents_round_trip_and_merge() {
        let a = doc(
            "4.16",
            RunStatus::Unavailable {
                reason: "no source".into(),
            },
        );
        let b = doc(
            "6.1",
            RunStatus::Failed {
                reason: "panic".into(),
            },
        );
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Document>(&text).unwrap(), a);
        let merged = Document::merge(vec![a.clone(), b]).unwrap();
        assert_eq!(merged.kernels.len(), 2);
        assert_eq!(merged.records.len(), 2);
        assert!(!merged.all_agree());
        let err = Document::merge(vec![a.clone(), a]).unwrap_err().to_string();
        assert!(err.contains("more than one document"), "{err}");
    }

    #[test]
    fn only_unavailable_kernels_is_not_a_pass() {
        let a = doc(
            "4.16",
            RunStatus::Unavailable {
                reason: "no source".into(),
            },
        );
        assert!(!a.all_agree());
        assert_eq!(a.records[0].verdict, CellVerdict::NoAnswer);
    }

    /// A kernel whose guest answered every case in both JIT modes, and agreed:
    /// pure data, no expectation involved (the merge judges coverage, not cells).
    fn complete(kernel: &str) -> Document {
        let run = KernelRun::failed(kernel, "src", "x".into(), &CaseId::ALL, &JitMode::ALL);
        let mut d = Document::from_runs(&[run]);
        d.kernels[0].status = Status::Completed;
        d.kernels[0].reason = None;
        d.kernels[0].guest_release = Some("6.1.0-56-amd64".into());
        for r in &mut d.records {
            r.outcome = Some("accepted".into());
            r.verdict = CellVerdict::Agrees;
            r.differences.clear();
        }
        d
    }

    fn unavailable(kernel: &str) -> Document {
        Document::from_runs(&[KernelRun::unavailable(
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

    fn merge(docs: Vec<Document>, require: &[&str], allow: &[&str]) -> Document {
        let coverage = Coverage::new(names(require), names(allow)).unwrap();
        Document::merge_covering(docs, coverage).unwrap()
    }

    const CELLS: usize = CaseId::ALL.len() * JitMode::ALL.len();

    #[test]
    fn every_required_cell_present_passes() {
        let d = merge(
            vec![complete("6.1"), complete("6.12")],
            &["6.1", "6.12"],
            &[],
        );
        assert_eq!(d.coverage_gaps(), vec![]);
        assert!(d.all_agree());
        let line = crate::report::verdict_line(&d);
        assert!(line.starts_with("OK: "), "{line}");
        let text = crate::report::terminal(&d, false);
        assert!(
            text.contains("required: 6.1, 6.12 (every case in both JIT modes: ")
                && text.contains("; every required kernel is covered"),
            "{text}"
        );
    }

    #[test]
    fn a_required_unavailable_kernel_fails_the_merge_and_says_why() {
        let d = merge(
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
        let line = crate::report::verdict_line(&d);
        assert!(line.starts_with("FAILED: "), "{line}");
        assert!(
            line.ends_with("; required but not covered: 4.16 unavailable"),
            "{line}"
        );
        for text in [
            crate::report::terminal(&d, false),
            crate::report::markdown(&d),
        ] {
            assert!(
                text.contains("required kernel 4.16 is unavailable"),
                "{text}"
            );
        }
    }

    #[test]
    fn an_allowed_unavailable_kernel_passes_and_still_shows_as_unavailable() {
        let d = merge(
            vec![complete("6.1"), unavailable("4.16")],
            &["4.16", "6.1"],
            &["4.16"],
        );
        assert_eq!(d.coverage_gaps(), vec![]);
        assert!(d.all_agree());
        assert_eq!(d.kernel("4.16").unwrap().status, Status::Unavailable);
        assert!(d
            .records
            .iter()
            .filter(|r| r.kernel == "4.16")
            .all(|r| !r.agrees() && r.outcome.is_none()));
        let line = crate::report::verdict_line(&d);
        assert!(line.starts_with("OK: "), "{line}");
        assert!(line.ends_with("; unavailable here: 4.16"), "{line}");
        // The JSON keeps the kernel unavailable and the requirement, not a verdict.
        let json: serde_json::Value = serde_json::to_value(&d).unwrap();
        assert_eq!(json["kernels"][1]["status"], "unavailable");
        assert_eq!(
            json["coverage"],
            serde_json::json!({"require": ["4.16", "6.1"], "allow_unavailable": ["4.16"]})
        );
        let md = crate::report::markdown(&d);
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
        let page = crate::report::html(&d);
        assert_eq!(
            page.matches("<td class=\"none\">unavailable</td>").count(),
            CELLS,
            "{page}"
        );
    }

    #[test]
    fn a_missing_cell_fails_the_merge_naming_the_cell() {
        let mut six = complete("6.1");
        // One record gone, one present without the guest's answer (a stored
        // verdict of "agrees" does not make it one).
        six.records
            .retain(|r| !(r.jit == JitMode::Interpreter && r.case == CaseId::TailCallChain));
        let r = six
            .records
            .iter_mut()
            .find(|r| r.jit == JitMode::Jit && r.case == CaseId::Bpf2bpfControl)
            .unwrap();
        r.outcome = None;
        let d = merge(vec![six], &["6.1"], &[]);
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
        let line = crate::report::verdict_line(&d);
        assert!(line.starts_with("FAILED: "), "{line}");
        assert!(
            line.ends_with("; required but not covered: 6.1 lacks 2 cells"),
            "{line}"
        );
        let md = crate::report::markdown(&d);
        assert!(
            md.contains("| `tail_call.chain` | ✅ accepted | ⚪ missing |"),
            "{md}"
        );
    }

    #[test]
    fn allowed_unavailable_is_not_allowed_incomplete() {
        let mut six = complete("6.1");
        six.records.pop();
        let d = merge(vec![six], &["6.1"], &["6.1"]);
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
            let d = merge(vec![complete("6.1")], &["5.10", "6.1"], allow);
            assert!(!d.all_agree());
            assert_eq!(d.kernel("5.10").unwrap().status, Status::Failed);
            let gaps = d.coverage_gaps();
            assert_eq!(gaps.len(), 1, "{gaps:?}");
            let line = crate::report::verdict_line(&d);
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
        let mut six = complete("6.1");
        six.kernels[0].status = Status::Failed;
        six.kernels[0].reason = Some("the guest never said it was done".into());
        let d = merge(vec![six], &["6.1"], &[]);
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
        let mut six = complete("6.1");
        six.records.pop();
        let failed = merge(vec![six], &["6.1"], &[]);
        assert!(!failed.all_agree());
        // Merged again without --require: the stored requirement is not inherited.
        let again = Document::merge_covering(vec![failed.clone()], Coverage::default()).unwrap();
        assert_eq!(again.coverage, None);
        // And a stored requirement is judged from the records every time.
        let text = serde_json::to_string(&failed).unwrap();
        let read: Document = serde_json::from_str(&text).unwrap();
        assert_eq!(read.coverage_gaps(), failed.coverage_gaps());
        assert!(!read.all_agree());
    }

    #[test]
    fn malformed_inputs_are_refused_by_the_merge() {
        let mut orphan = complete("6.1");
        orphan.kernels.clear();
        let err = Document::merge(vec![orphan]).unwrap_err().to_string();
        assert!(
            err.starts_with("a document has a record for kernel '6.1' (jit tail_call.chain) but no entry for that kernel"),
            "{err}"
        );
        let mut twice = complete("6.1");
        let dup = twice.records[0].clone();
        twice.records.push(dup);
        let err = Document::merge(vec![twice]).unwrap_err().to_string();
        assert_eq!(
            err,
            "kernel '6.1' has more than one record for jit tail_call.chain"
        );
    }

    #[test]
    fn other_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        let mut d = doc("4.16", RunStatus::Unavailable { reason: "x".into() });
        d.schema = "bpfmatrix-matrix/0".into();
        std::fs::write(&p, serde_json::to_string(&d).unwrap()).unwrap();
        let err = format!("{:#}", Document::read(&p).unwrap_err());
        assert!(err.contains("schema 'bpfmatrix-matrix/0'"), "{err}");
        std::fs::write(&p, "{\"garbage\":1}").unwrap();
        let err = format!("{:#}", Document::read(&p).unwrap_err());
        assert!(err.contains("is not a bpfmatrix matrix document"), "{err}");
    }
}
