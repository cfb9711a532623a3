//! The result model: one [`KernelRun`] per kernel, one [`Cell`] per case and JIT
//! mode, each holding what the kernel did, what was expected and the verdict.
//! Reports, the CLI and the test trials all read this; none of them decides.

use crate::collect::{Collected, JitSwitch};
use crate::expect::{self, Expected, KernelVersion};
use bpfmatrix_probes::{CaseId, CaseRecord, JitMode};
use serde::Serialize;

/// Whether a kernel gave answers at all.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    /// The guest booted and sent its results (cells may still disagree).
    Completed,
    /// The kernel could not be had here; no cell is a pass.
    Unavailable { reason: String },
    /// Booting or running the guest failed (panic, timeout, protocol violation...).
    Failed { reason: String },
}

/// The verdict on one cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The kernel did what the documented facts say.
    Agrees,
    /// The kernel answered, differently from the documented facts.
    Disagrees { differences: Vec<String> },
    /// No answer for this cell (kernel unavailable, guest died, record missing).
    NoAnswer { reason: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    pub case: CaseId,
    pub jit: JitMode,
    pub record: Option<CaseRecord>,
    pub expected: Option<Expected>,
    pub verdict: Verdict,
}

impl Cell {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Agrees
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelRun {
    /// The catalog name or the name the user gave.
    pub kernel: String,
    /// Where the kernel came from.
    pub source: String,
    pub status: RunStatus,
    /// `uname -r` as the guest reported it.
    pub guest_release: Option<String>,
    /// The accelerator the guest finally ran under, and why KVM was left if it was.
    pub accel: Option<String>,
    pub kvm_fallback: Option<String>,
    /// Wall time from QEMU start to QEMU exit, and guest uptime when the agent
    /// started and finished, milliseconds.
    pub boot_wall_ms: Option<u64>,
    pub agent_start_ms: Option<u64>,
    pub agent_done_ms: Option<u64>,
    pub jit_switches: Vec<JitSwitch>,
    pub warnings: Vec<String>,
    /// What went wrong with the run as a whole.
    pub problems: Vec<String>,
    pub cells: Vec<Cell>,
}

impl KernelRun {
    /// A kernel that could not be had: every cell says so, none passes.
    pub fn unavailable(
        kernel: &str,
        source: &str,
        reason: String,
        cases: &[CaseId],
        modes: &[JitMode],
    ) -> Self {
        let mut run = Self::empty(
            kernel,
            source,
            RunStatus::Unavailable {
                reason: reason.clone(),
            },
        );
        run.cells = no_answers(cases, modes, &format!("kernel unavailable: {reason}"));
        run
    }

    /// A run that failed before any guest answered.
    pub fn failed(
        kernel: &str,
        source: &str,
        reason: String,
        cases: &[CaseId],
        modes: &[JitMode],
    ) -> Self {
        let mut run = Self::empty(
            kernel,
            source,
            RunStatus::Failed {
                reason: reason.clone(),
            },
        );
        run.cells = no_answers(cases, modes, &reason);
        run
    }

    fn empty(kernel: &str, source: &str, status: RunStatus) -> Self {
        KernelRun {
            kernel: kernel.to_string(),
            source: source.to_string(),
            status,
            guest_release: None,
            accel: None,
            kvm_fallback: None,
            boot_wall_ms: None,
            agent_start_ms: None,
            agent_done_ms: None,
            jit_switches: vec![],
            warnings: vec![],
            problems: vec![],
            cells: vec![],
        }
    }

    /// Judges what a guest said. `boot_failure` is set when the guest did not end
    /// cleanly (panic, timeout...): then the run failed whatever the records say,
    /// and cells without a record say why.
    pub fn judge(
        kernel: &str,
        source: &str,
        cases: &[CaseId],
        modes: &[JitMode],
        mut collected: Collected,
        boot_failure: Option<String>,
    ) -> Self {
        let mut problems = std::mem::take(&mut collected.problems);
        if collected.release.is_some() && collected.done_ms.is_none() && boot_failure.is_none() {
            problems.push("the guest never said it was done".to_string());
        }
        let release = collected.release.clone();
        if let Some(Err(e)) = release.as_deref().map(KernelVersion::parse) {
            problems.push(format!("guest release: {e}"));
        }
        let missing = match (&boot_failure, &collected.release) {
            (Some(why), _) => why.clone(),
            (None, None) => "the guest never said hello".to_string(),
            (None, Some(_)) => "the guest sent no record for it".to_string(),
        };
        let mut cells = Vec::new();
        for &jit in modes {
            for &case in cases {
                let record = collected.records.remove(&(case, jit));
                let frame = record.as_ref().and_then(|r| r.measured.caller_frame_bytes);
                let expected = release.as_deref().map(|r| {
                    expect::expected_for_release(expect::features(), case, jit, r, frame)
                        .map_err(|e| format!("{e:#}"))
                });
                let (expected, no_expectation) = match expected {
                    Some(Ok(e)) => (Some(e), None),
                    Some(Err(why)) => (None, Some(why)),
                    None => (None, None),
                };
                let verdict = match (&record, &expected) {
                    (Some(r), Some(e)) => match expect::check(e, r) {
                        Ok(()) => Verdict::Agrees,
                        Err(differences) => Verdict::Disagrees { differences },
                    },
                    (Some(_), None) => Verdict::NoAnswer {
                        reason: no_expectation.clone().unwrap_or_else(|| {
                            "no kernel version to derive an expectation from".into()
                        }),
                    },
                    (None, _) => Verdict::NoAnswer {
                        reason: missing.clone(),
                    },
                };
                cells.push(Cell {
                    case,
                    jit,
                    record,
                    expected,
                    verdict,
                });
            }
        }
        let status = match boot_failure.or_else(|| problems.first().cloned()) {
            Some(reason) => RunStatus::Failed { reason },
            None if collected.release.is_none() => RunStatus::Failed {
                reason: missing.clone(),
            },
            None => RunStatus::Completed,
        };
        KernelRun {
            guest_release: collected.release,
            agent_start_ms: collected.agent_start_ms,
            agent_done_ms: collected.done_ms,
            jit_switches: collected.jit_switches,
            warnings: collected.warnings,
            problems,
            cells,
            ..Self::empty(kernel, source, status)
        }
    }

    pub fn cell(&self, case: CaseId, jit: JitMode) -> Option<&Cell> {
        self.cells.iter().find(|c| c.case == case && c.jit == jit)
    }

    /// True only when the guest completed and every cell agrees.
    pub fn all_agree(&self) -> bool {
        self.status == RunStatus::Completed && self.cells.iter().all(Cell::passed)
    }
}

fn no_answers(cases: &[CaseId], modes: &[JitMode], reason: &str) -> Vec<Cell> {
    modes
        .iter()
        .flat_map(|&jit| {
            cases.iter().map(move |&case| Cell {
                case,
                jit,
                record: None,
                expected: None,
                verdict: Verdict::NoAnswer {
                    reason: reason.to_string(),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfmatrix_probes::{Measured, Outcome};

    fn collected(records: Vec<CaseRecord>) -> Collected {
        Collected {
            release: Some("6.1.0-56-amd64".into()),
            agent_start_ms: Some(2000),
            done_ms: Some(2600),
            records: records.into_iter().map(|r| ((r.case, r.jit), r)).collect(),
            ..Collected::default()
        }
    }

    fn chain(jit: JitMode, n: u32) -> CaseRecord {
        CaseRecord {
            case: CaseId::TailCallChain,
            jit,
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
            duration_ms: 2,
        }
    }

    const CASES: &[CaseId] = &[CaseId::TailCallChain];

    #[test]
    fn a_missing_record_is_no_answer_never_a_pass() {
        let run = KernelRun::judge(
            "6.1",
            "test",
            CASES,
            &JitMode::ALL,
            collected(vec![chain(JitMode::Jit, 33)]),
            None,
        );
        assert_eq!(run.status, RunStatus::Completed);
        assert!(run
            .cell(CaseId::TailCallChain, JitMode::Jit)
            .unwrap()
            .passed());
        let interp = run
            .cell(CaseId::TailCallChain, JitMode::Interpreter)
            .unwrap();
        assert_eq!(
            interp.verdict,
            Verdict::NoAnswer {
                reason: "the guest sent no record for it".into()
            }
        );
        assert!(!run.all_agree());
    }

    #[test]
    fn a_crash_fails_the_run_even_with_good_records() {
        let run = KernelRun::judge(
            "6.1",
            "test",
            CASES,
            &[JitMode::Jit],
            collected(vec![chain(JitMode::Jit, 33)]),
            Some("guest kernel panicked".into()),
        );
        assert_eq!(
            run.status,
            RunStatus::Failed {
                reason: "guest kernel panicked".into()
            }
        );
        assert!(!run.all_agree());
    }

    #[test]
    fn a_disagreement_names_both_sides() {
        let run = KernelRun::judge(
            "6.1",
            "test",
            CASES,
            &[JitMode::Interpreter],
            collected(vec![chain(JitMode::Interpreter, 32)]),
            None,
        );
        assert_eq!(
            run.cells[0].verdict,
            Verdict::Disagrees {
                differences: vec!["tail calls: expected 33, got 32".into()]
            }
        );
    }

    #[test]
    fn unavailable_kernels_have_no_passing_cell() {
        let run = KernelRun::unavailable("4.16", "x", "no source".into(), CASES, &JitMode::ALL);
        assert_eq!(run.cells.len(), 2);
        assert!(run.cells.iter().all(|c| !c.passed()));
    }
}
