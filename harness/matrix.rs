//! The result model, the one every part of the host reads: a [`Matrix`] holds one
//! [`KernelRun`] per kernel, and each run one [`Cell`] per JIT mode x case, with
//! the guest's record (its outcome and what it measured), the expectation and the
//! verdict. The words are those of the protocol crate's doc (`bpfmatrix_protocol`).
//!
//! - Cells are judged in one place, [`Cell::judge`], by the rules of
//!   [`crate::expect`]: when a guest's lines are collected ([`KernelRun::judge`]) and
//!   again whenever a `matrix.json` is read ([`crate::report::json`]), which refuses a
//!   document whose stored verdicts are not the ones its records get.
//! - Whether the matrix agrees is decided in one place, [`Matrix::all_agree`].
//! - `matrix.json` is this model serialised ([`crate::report::json`]); the reports,
//!   the CLI and the test trials render the model and decide nothing.

use crate::collect::{Collected, JitSwitch, ProgramKey};
use crate::expect::{self, Expectation, KernelVersion};
use crate::merge::{Coverage, Gap};
use crate::modes::{ConfigFacts, KernelFacts, MissingModule, ModeStatus};
use crate::programs::{ProgramCell, ProgramRules};
use bpfmatrix_protocol::{CaseId, CaseRecord, JitMode, ObjectSpec, ProgramRecord};
use std::collections::BTreeMap;

/// What became of a kernel's run as a whole (how its boot ended, `BootEnd`, is
/// one of the things that decide it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// The guest booted, said hello and done, and broke no rule of the protocol
    /// (cells may still disagree).
    Completed,
    /// The kernel could not be had here; no cell is a pass.
    Unavailable { reason: String },
    /// Booting or running the guest failed (panic, timeout, protocol violation...).
    Failed { reason: String },
}

impl RunStatus {
    /// The status's name in `matrix.json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Completed => "completed",
            RunStatus::Unavailable { .. } => "unavailable",
            RunStatus::Failed { .. } => "failed",
        }
    }

    /// Why the run did not complete.
    pub fn reason(&self) -> Option<&str> {
        match self {
            RunStatus::Completed => None,
            RunStatus::Unavailable { reason } | RunStatus::Failed { reason } => Some(reason),
        }
    }
}

/// Whether a cell's outcome agrees with its expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The kernel did what the documented facts say.
    Agrees,
    /// The kernel answered, differently from the documented facts.
    Disagrees { differences: Vec<String> },
    /// Nothing to judge: no record for this cell (kernel unavailable, guest died,
    /// record missing), no expectation for its kernel, or an error that says
    /// nothing of the kernel (a module the guest lacked, config and guest at odds).
    NoAnswer { reason: String },
    /// The kernel was built without the cell's JIT mode (see [`crate::modes`]):
    /// a fact of the kernel, neither a pass nor a failure.
    NotApplicable { reason: String },
}

impl Verdict {
    /// The verdict's name in `matrix.json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Agrees => "agrees",
            Verdict::Disagrees { .. } => "disagrees",
            Verdict::NoAnswer { .. } => "no_answer",
            Verdict::NotApplicable { .. } => "not_applicable",
        }
    }

    /// Why the cell does not agree: each difference, or why there is no answer.
    pub fn reasons(&self) -> &[String] {
        match self {
            Verdict::Agrees => &[],
            Verdict::Disagrees { differences } => differences,
            Verdict::NoAnswer { reason } | Verdict::NotApplicable { reason } => {
                std::slice::from_ref(reason)
            }
        }
    }
}

/// One kernel x JIT mode x case.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub case: CaseId,
    pub jit: JitMode,
    /// The guest's record as it sent it: the outcome and what was measured.
    pub record: Option<CaseRecord>,
    pub expected: Option<Expectation>,
    pub verdict: Verdict,
}

impl Cell {
    /// The one place a verdict is given. `release` is the guest's `uname -r`, which
    /// the expectation is derived from (with the caller frame the record measured);
    /// `no_record` says why there is no record, when there is none; `facts` say
    /// which modes the kernel has and which modules its guest lacked.
    pub fn judge(
        case: CaseId,
        jit: JitMode,
        release: Option<&str>,
        record: Option<CaseRecord>,
        no_record: &str,
        facts: &KernelFacts,
    ) -> Cell {
        let mode = match facts.mode(jit) {
            ModeStatus::Runs => None,
            ModeStatus::Absent { what, .. } => Some(Verdict::NotApplicable {
                reason: what.clone(),
            }),
            ModeStatus::Contradicted { reason } => Some(Verdict::NoAnswer {
                reason: reason.clone(),
            }),
        };
        if let Some(verdict) = mode {
            return Cell {
                case,
                jit,
                record,
                expected: None,
                verdict,
            };
        }
        let Some(rec) = &record else {
            return Cell::no_answer(case, jit, no_record.to_string());
        };
        debug_assert_eq!((rec.case, rec.jit), (case, jit));
        let expected = release.map(|r| {
            expect::expected_for_release(
                expect::features(),
                case,
                jit,
                r,
                rec.measured.caller_frame_bytes,
            )
            .map_err(|e| format!("{e:#}"))
        });
        let version = release.and_then(|r| KernelVersion::parse(r).ok());
        let missing = Some(facts.missing_for(case, version))
            .filter(|m| !m.is_empty() && rec.outcome != bpfmatrix_protocol::Outcome::Accepted);
        let (expected, verdict) = match expected {
            Some(Ok(e)) => {
                let verdict = match (missing, expect::check(&e, rec)) {
                    (_, Ok(())) => Verdict::Agrees,
                    (Some(modules), Err(_)) => Verdict::NoAnswer {
                        reason: crate::modes::describe_missing(modules),
                    },
                    (None, Err(differences)) => Verdict::Disagrees { differences },
                };
                (Some(e), verdict)
            }
            Some(Err(reason)) => (None, Verdict::NoAnswer { reason }),
            None => (
                None,
                Verdict::NoAnswer {
                    reason: "no kernel version to derive an expectation from".into(),
                },
            ),
        };
        Cell {
            case,
            jit,
            record,
            expected,
            verdict,
        }
    }

    /// A cell without the guest's record, and why.
    pub fn no_answer(case: CaseId, jit: JitMode, reason: String) -> Cell {
        Cell {
            case,
            jit,
            record: None,
            expected: None,
            verdict: Verdict::NoAnswer { reason },
        }
    }

    pub fn agrees(&self) -> bool {
        self.verdict == Verdict::Agrees
    }

    /// Agrees, or is not applicable: what a kernel's every cell must be.
    pub fn passes(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Agrees | Verdict::NotApplicable { .. }
        )
    }
}

/// What one kernel answered, or why it did not.
#[derive(Clone, Debug, PartialEq)]
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
    /// The guest was started from the kernel's saved state, not booted.
    pub restored: bool,
    pub agent_start_ms: Option<u64>,
    pub agent_done_ms: Option<u64>,
    /// The agent's switches of `bpf_jit_enable`, as it reported them.
    pub jit_switches: Vec<JitSwitch>,
    /// Which modes the kernel has and which modules its guest lacked, decided
    /// from its config and the switches above.
    pub facts: KernelFacts,
    pub warnings: Vec<String>,
    /// What went wrong with the run as a whole.
    pub problems: Vec<String>,
    /// One per JIT mode x case of the plan, modes outermost, in the plan's order.
    pub cells: Vec<Cell>,
    /// One per JIT mode x program of the user's objects (`bpfmatrix check`),
    /// modes outermost, then objects and programs in the plan's order.
    pub programs: Vec<ProgramCell>,
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

    /// A run with its status and nothing else, its cells to be filled in.
    pub fn empty(kernel: &str, source: &str, status: RunStatus) -> Self {
        KernelRun {
            kernel: kernel.to_string(),
            source: source.to_string(),
            status,
            guest_release: None,
            accel: None,
            kvm_fallback: None,
            boot_wall_ms: None,
            restored: false,
            agent_start_ms: None,
            agent_done_ms: None,
            jit_switches: vec![],
            facts: KernelFacts::default(),
            warnings: vec![],
            problems: vec![],
            cells: vec![],
            programs: vec![],
        }
    }

    /// Judges what a guest said. `boot_failure` is set when the guest did not end
    /// cleanly (panic, timeout...): then the run failed whatever the records say,
    /// and cells without a record say why. `host` is what the host knew of the
    /// kernel before the boot (see [`HostFacts`]).
    pub fn judge(
        kernel: &str,
        source: &str,
        cases: &[CaseId],
        modes: &[JitMode],
        mut collected: Collected,
        boot_failure: Option<String>,
        host: HostFacts,
    ) -> Self {
        let facts = KernelFacts::decide(
            host.config,
            host.missing_modules,
            &collected.jit_switches,
            modes,
        );
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
                cells.push(Cell::judge(
                    case,
                    jit,
                    release.as_deref(),
                    record,
                    &missing,
                    &facts,
                ));
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
            facts,
            warnings: collected.warnings,
            problems,
            cells,
            ..Self::empty(kernel, source, status)
        }
    }

    /// Gives the run one program cell per JIT mode x program of `objects`, judged
    /// by `rules` from the guest's `records`; a program without a record says why
    /// (the run's failure, or the guest's silence about it).
    pub fn judge_programs(
        &mut self,
        objects: &[ObjectSpec],
        modes: &[JitMode],
        mut records: BTreeMap<ProgramKey, ProgramRecord>,
        rules: &ProgramRules,
    ) {
        let missing = match &self.status {
            RunStatus::Completed => "the guest sent no record for it".to_string(),
            RunStatus::Unavailable { reason } => format!("kernel unavailable: {reason}"),
            RunStatus::Failed { reason } => reason.clone(),
        };
        for &jit in modes {
            for object in objects {
                for program in &object.programs {
                    let record = records.remove(&(object.name.clone(), program.clone(), jit));
                    self.programs.push(ProgramCell::judge(
                        &object.name,
                        program,
                        jit,
                        self.guest_release.as_deref(),
                        record,
                        rules,
                        &missing,
                        &self.facts,
                    ));
                }
            }
        }
    }

    pub fn cell(&self, case: CaseId, jit: JitMode) -> Option<&Cell> {
        self.cells.iter().find(|c| c.case == case && c.jit == jit)
    }

    /// The plan the run's cells answer: its JIT modes and its cases, in order.
    pub fn plan(&self) -> (Vec<JitMode>, Vec<CaseId>) {
        let (mut modes, mut cases) = (Vec::new(), Vec::new());
        for c in &self.cells {
            if !modes.contains(&c.jit) {
                modes.push(c.jit);
            }
            if !cases.contains(&c.case) {
                cases.push(c.case);
            }
        }
        (modes, cases)
    }

    /// Whether the kernel could be tested here: a run that is not unavailable.
    pub fn tested(&self) -> bool {
        !matches!(self.status, RunStatus::Unavailable { .. })
    }

    /// The run completed and every one of its cells agrees, but for those of a
    /// mode the kernel was built without: what [`Matrix::all_agree`] asks of each
    /// kernel it tested. A kernel with no mode at all does not agree.
    pub fn agrees(&self) -> bool {
        self.status == RunStatus::Completed
            && self.cells.iter().all(Cell::passes)
            && self.programs.iter().all(ProgramCell::passes)
            && self.has_a_mode()
    }

    /// Whether any mode the run asked for is one the kernel has.
    pub fn has_a_mode(&self) -> bool {
        let (modes, _) = self.plan();
        let modes = if modes.is_empty() {
            self.programs.iter().map(|p| p.jit).collect()
        } else {
            modes
        };
        modes.is_empty() || modes.iter().any(|&m| self.facts.absent(m).is_none())
    }
}

fn no_answers(cases: &[CaseId], modes: &[JitMode], reason: &str) -> Vec<Cell> {
    modes
        .iter()
        .flat_map(|&jit| {
            cases
                .iter()
                .map(move |&case| Cell::no_answer(case, jit, reason.to_string()))
        })
        .collect()
}

/// What the host knows of a kernel before its guest says a word: its config and
/// the modules its guest will lack (see [`crate::modes`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostFacts {
    pub config: Option<ConfigFacts>,
    pub missing_modules: Vec<MissingModule>,
}

/// Every kernel's run, and what a merge required of them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Matrix {
    pub runs: Vec<KernelRun>,
    /// What the merge that made this matrix required; `None` for a run's own
    /// matrix (then only the cells it has are judged). See [`Coverage`].
    pub coverage: Option<Coverage>,
    /// What the user's programs were judged by (`bpfmatrix check --expect`).
    pub program_rules: ProgramRules,
}

impl Matrix {
    pub fn from_runs(runs: impl Into<Vec<KernelRun>>) -> Self {
        Matrix {
            runs: runs.into(),
            coverage: None,
            program_rules: ProgramRules::default(),
        }
    }

    pub fn run(&self, kernel: &str) -> Option<&KernelRun> {
        self.runs.iter().find(|r| r.kernel == kernel)
    }

    pub fn cell(&self, kernel: &str, jit: JitMode, case: CaseId) -> Option<&Cell> {
        self.run(kernel).and_then(|r| r.cell(case, jit))
    }

    /// Every cell of every kernel, with its kernel.
    pub fn cells(&self) -> impl Iterator<Item = (&KernelRun, &Cell)> {
        self.runs
            .iter()
            .flat_map(|run| run.cells.iter().map(move |c| (run, c)))
    }

    /// The columns of the matrix: every kernel that has cells, by JIT mode.
    pub fn columns(&self) -> Vec<(&KernelRun, JitMode)> {
        self.runs
            .iter()
            .flat_map(|k| JitMode::ALL.into_iter().map(move |m| (k, m)))
            .filter(|(k, m)| k.cells.iter().any(|c| c.jit == *m))
            .collect()
    }

    /// The rows: every case that has cells, in catalog order.
    pub fn cases(&self) -> Vec<CaseId> {
        CaseId::ALL
            .into_iter()
            .filter(|c| self.cells().any(|(_, cell)| cell.case == *c))
            .collect()
    }

    /// Every required kernel that is not covered, and why (see [`Coverage`]).
    pub fn coverage_gaps(&self) -> Vec<Gap> {
        self.coverage.as_ref().map_or(vec![], |c| c.gaps(self))
    }

    /// The matrix's verdict: true when at least one kernel could be tested, every
    /// kernel that could be completed and every one of its cells agrees
    /// ([`KernelRun::agrees`]), and every kernel the merge required is covered
    /// ([`Matrix::coverage_gaps`]). Unavailable kernels are no pass and no failure.
    pub fn all_agree(&self) -> bool {
        let mut tested = self.runs.iter().filter(|r| r.tested()).peekable();
        tested.peek().is_some() && tested.all(KernelRun::agrees) && self.coverage_gaps().is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::expect::{ExpectedOutcome, CONFIGURED_VERDICTS};
    use crate::modes::ConfigFacts;
    use bpfmatrix_protocol::{Measured, Outcome, Trigger, VerdictObservation, TEST_FRAME_LEN};

    pub(crate) const RELEASE: &str = "6.1.0-56-amd64";

    /// The record a guest of `release` sends when it does exactly what the
    /// documented facts say: its JIT mode proven, its frame as the case intends.
    pub(crate) fn agreeing_record(case: CaseId, jit: JitMode, release: &str) -> CaseRecord {
        let e = expect::expected_for_release(expect::features(), case, jit, release, None).unwrap();
        let mut measured = Measured {
            bpf_jit_enable: Some(jit.sysctl_value().into()),
            caller_frame_bytes: case.caller_frame_bytes(),
            ..Measured::default()
        };
        let outcome = match e.outcome {
            ExpectedOutcome::Rejected {
                step,
                errno,
                message,
            } => Outcome::Rejected {
                step,
                errno,
                verifier_tail: message.unwrap_or_default(),
            },
            ExpectedOutcome::Unsupported { reason } => Outcome::Unsupported { reason },
            ExpectedOutcome::Accepted(checks) => {
                measured.seed = checks
                    .seed
                    .map(|s| Box::new(expect::agreeing_observation(s)));
                let len = if jit == JitMode::Jit { 64 } else { 0 };
                measured.jited_bytes = [(case.program().to_string(), len)].into();
                measured.tail_calls = checks.tail_calls;
                measured.fell_through = checks.fell_through;
                measured.retval = checks.retval;
                if let Some(trigger) = checks.verdicts {
                    let loopback = trigger == Trigger::Loopback;
                    measured.verdicts = CONFIGURED_VERDICTS
                        .iter()
                        .map(|&c| VerdictObservation {
                            trigger,
                            configured: c,
                            returned: (!loopback).then_some(c),
                            fexit_saw: vec![i64::from(c)],
                            fexit_hits: 5,
                            fentry_hits: 5,
                            fentry_skb_len: Some(TEST_FRAME_LEN as u32),
                            packets_sent: loopback.then_some(5),
                            packets_received: loopback.then_some(if c == 0 { 5 } else { 0 }),
                        })
                        .collect();
                }
                Outcome::Accepted
            }
        };
        CaseRecord {
            case,
            jit,
            outcome,
            measured,
            duration_ms: 3,
        }
    }

    pub(crate) fn collected(records: Vec<CaseRecord>) -> Collected {
        Collected {
            release: Some(RELEASE.into()),
            agent_start_ms: Some(2000),
            done_ms: Some(2600),
            records: records.into_iter().map(|r| ((r.case, r.jit), r)).collect(),
            ..Collected::default()
        }
    }

    /// A kernel whose guest answered every case in both JIT modes as the facts
    /// say, except for the cells in `unanswered`.
    pub(crate) fn complete_except(kernel: &str, unanswered: &[(JitMode, CaseId)]) -> KernelRun {
        let records = JitMode::ALL
            .into_iter()
            .flat_map(|m| CaseId::ALL.into_iter().map(move |c| (m, c)))
            .filter(|cell| !unanswered.contains(cell))
            .map(|(m, c)| agreeing_record(c, m, RELEASE))
            .collect();
        KernelRun::judge(
            kernel,
            "src",
            &CaseId::ALL,
            &JitMode::ALL,
            collected(records),
            None,
            crate::matrix::HostFacts::default(),
        )
    }

    /// The config of a kernel built with CONFIG_BPF_JIT_ALWAYS_ON=y.
    pub(crate) const ALWAYS_ON: &str = "CONFIG_BPF_JIT=y\nCONFIG_BPF_JIT_ALWAYS_ON=y\n";

    /// A run of `cases` on a kernel built with `config`, whose guest switched as a
    /// kernel without an interpreter does: the JIT cells agree, and the
    /// interpreter's are the agent's errors (it could not switch).
    pub(crate) fn built_with(kernel: &str, cases: &[CaseId], config: &str) -> KernelRun {
        let mut records: Vec<CaseRecord> = cases
            .iter()
            .map(|&c| agreeing_record(c, JitMode::Jit, RELEASE))
            .collect();
        records.extend(cases.iter().map(|&case| CaseRecord {
            case,
            jit: JitMode::Interpreter,
            outcome: Outcome::Error {
                message: "cannot switch to interpreter: refused".into(),
            },
            measured: Measured {
                bpf_jit_enable: Some("1".into()),
                ..Measured::default()
            },
            duration_ms: 0,
        }));
        let mut c = collected(records);
        c.jit_switches = switches(true);
        let host = HostFacts {
            config: Some(ConfigFacts::from_text(
                "boot/config-R of the package",
                config,
            )),
            missing_modules: vec![],
        };
        KernelRun::judge(kernel, "src", cases, &JitMode::ALL, c, None, host)
    }

    /// The agent's switches of both modes: the interpreter's refused, as on a
    /// kernel without one (`always_on`), or taken.
    pub(crate) fn switches(always_on: bool) -> Vec<JitSwitch> {
        vec![
            JitSwitch {
                mode: JitMode::Jit,
                sysctl_readback: Some("1".into()),
                error: None,
            },
            JitSwitch {
                mode: JitMode::Interpreter,
                sysctl_readback: Some(if always_on { "1" } else { "0" }.into()),
                error: always_on.then(|| "write \"0\" to /proc/sys/net/core/bpf_jit_enable: Invalid argument (os error 22) (bpf_jit_enable reads back 1)".into()),
            },
        ]
    }

    /// [`built_with`] [`ALWAYS_ON`].
    pub(crate) fn always_on(kernel: &str, cases: &[CaseId]) -> KernelRun {
        built_with(kernel, cases, ALWAYS_ON)
    }

    #[test]
    fn a_mode_the_kernel_lacks_is_not_applicable_and_no_failure() {
        let run = always_on("5.4", &CaseId::ALL);
        assert!(run.cells.iter().all(|c| match c.jit {
            JitMode::Jit => c.agrees(),
            JitMode::Interpreter =>
                c.verdict
                    == Verdict::NotApplicable {
                        reason: "no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y)".into()
                    },
        }));
        assert!(run.agrees());
        assert!(Matrix::from_runs([run]).all_agree());
        // The same guest on a kernel whose config has an interpreter: errors, not
        // a pass, naming both sides.
        let run = built_with("5.4", &[CaseId::TailCallChain], "CONFIG_BPF_JIT=y\n");
        let cell = run
            .cell(CaseId::TailCallChain, JitMode::Interpreter)
            .unwrap();
        assert!(
            matches!(&cell.verdict, Verdict::NoAnswer { reason } if reason.contains("# CONFIG_BPF_JIT_ALWAYS_ON") || reason.contains("CONFIG_BPF_JIT_ALWAYS_ON not in the config")),
            "{:?}",
            cell.verdict
        );
        assert!(!run.agrees());
    }

    #[test]
    fn a_kernel_without_any_mode_does_not_agree() {
        let mut run = always_on("5.4", &[CaseId::TailCallChain]);
        run.facts.modes.push(crate::modes::ModeFact {
            jit: JitMode::Jit,
            status: crate::modes::ModeStatus::Absent {
                what: "no JIT in this kernel (CONFIG_BPF_JIT is not set)".into(),
                evidence: vec![],
            },
        });
        for c in run.cells.iter_mut() {
            c.verdict = Verdict::NotApplicable { reason: "x".into() };
        }
        assert!(!run.has_a_mode());
        assert!(!run.agrees());
    }

    #[test]
    fn a_loopback_case_without_its_module_is_an_error_not_a_disagreement() {
        let mut rec = agreeing_record(CaseId::FentryTcLoopback, JitMode::Jit, "5.4.286");
        rec.outcome = Outcome::Rejected {
            step: "add clsact qdisc on lo".into(),
            errno: 2,
            verifier_tail: "Specified qdisc not found".into(),
        };
        let facts = crate::modes::KernelFacts {
            missing_modules: crate::modes::missing_without_modules(
                &["sch_ingress", "cls_bpf"],
                Some(&ConfigFacts::from_text(
                    "x",
                    "CONFIG_NET_SCH_INGRESS=m\nCONFIG_NET_CLS_BPF=m\n",
                )),
                Some("5.4.286"),
            ),
            ..Default::default()
        };
        let cell = Cell::judge(
            CaseId::FentryTcLoopback,
            JitMode::Jit,
            Some("5.4.286"),
            Some(rec.clone()),
            "unused",
            &facts,
        );
        let Verdict::NoAnswer { reason } = &cell.verdict else {
            panic!("{:?}", cell.verdict);
        };
        assert!(reason.starts_with("needs kernel modules the guest could not load: sch_ingress (the kernel's config builds it as a module: CONFIG_NET_SCH_INGRESS=m), cls_bpf (the kernel's config builds it as a module: CONFIG_NET_CLS_BPF=m); pass the kernel's modules with --modules DIR"),
            "{reason}");
        // With its modules the same record is the kernel's answer: a disagreement.
        let cell = Cell::judge(
            CaseId::FentryTcLoopback,
            JitMode::Jit,
            Some("5.4.286"),
            Some(rec),
            "unused",
            &crate::modes::KernelFacts::default(),
        );
        assert!(
            matches!(cell.verdict, Verdict::Disagrees { .. }),
            "{:?}",
            cell.verdict
        );
    }

    fn chain(jit: JitMode, n: u32) -> CaseRecord {
        let mut r = agreeing_record(CaseId::TailCallChain, jit, RELEASE);
        r.measured.tail_calls = Some(n);
        r
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
            crate::matrix::HostFacts::default(),
        );
        assert_eq!(run.status, RunStatus::Completed);
        assert!(run
            .cell(CaseId::TailCallChain, JitMode::Jit)
            .unwrap()
            .agrees());
        let interp = run
            .cell(CaseId::TailCallChain, JitMode::Interpreter)
            .unwrap();
        assert_eq!(
            interp.verdict,
            Verdict::NoAnswer {
                reason: "the guest sent no record for it".into()
            }
        );
        assert!(!run.agrees());
        assert!(!Matrix::from_runs([run]).all_agree());
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
            crate::matrix::HostFacts::default(),
        );
        assert_eq!(
            run.status,
            RunStatus::Failed {
                reason: "guest kernel panicked".into()
            }
        );
        assert!(run.cells[0].agrees());
        assert!(!Matrix::from_runs([run]).all_agree());
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
            crate::matrix::HostFacts::default(),
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
        assert!(run.cells.iter().all(|c| !c.agrees()));
        // Nothing tested is no pass either.
        assert!(!Matrix::from_runs([run]).all_agree());
    }

    #[test]
    fn a_kernel_the_facts_do_not_cover_gets_no_verdict_rather_than_a_guess() {
        let record = chain(JitMode::Jit, 33);
        let cell = Cell::judge(
            CaseId::TailCallChain,
            JitMode::Jit,
            Some("4.15.0-1-generic"),
            Some(record.clone()),
            "unused",
            &crate::modes::KernelFacts::default(),
        );
        assert_eq!(cell.expected, None);
        assert_eq!(cell.record, Some(record));
        assert!(
            matches!(&cell.verdict, Verdict::NoAnswer { reason } if reason.starts_with("no expectations for kernels before 4.16")),
            "{:?}",
            cell.verdict
        );
    }

    #[test]
    fn the_fixture_agrees_in_every_cell() {
        let run = complete_except("6.1", &[]);
        let wrong: Vec<_> = run.cells.iter().filter(|c| !c.agrees()).collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(run.agrees());
        assert_eq!(run.plan(), (JitMode::ALL.to_vec(), CaseId::ALL.to_vec()));
    }
}
