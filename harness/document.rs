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
    /// appears twice is an error: two jobs claimed the same cells.
    pub fn merge(docs: Vec<Document>) -> Result<Self> {
        let mut merged = Document::from_runs(&[]);
        for doc in docs {
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
    /// cells agrees, and at least one cell was checked.
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
