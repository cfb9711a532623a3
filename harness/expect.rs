//! The rules of judgement: the expectation for any kernel version, JIT mode and
//! case ([`expected_for_release`]), derived from the feature table in
//! `features.toml` (first kernel version of each feature, with its upstream commit),
//! and the comparison of a guest's record against it ([`check`]). The rules are
//! applied in one place, [`crate::matrix::Cell::judge`], which turns them into a
//! verdict (the words are defined in `bpfmatrix_probes`).

use anyhow::{bail, Context, Result};
use bpfmatrix_probes::{
    control_retval, CaseId, CaseRecord, JitMode, Outcome, Trigger, EMPTY_SLOT_RETVAL,
    TEST_FRAME_LEN,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::OnceLock;

pub const EINVAL: i32 = 22;
pub const EACCES: i32 = 13;
pub const E2BIG: i32 = 7;

/// The oldest kernel expectations are derived for: the first with bpf2bpf calls,
/// and the oldest the mission covers (4.16.13 is the oldest kernel run). Older
/// kernels refuse earlier and in other ways nobody here has checked; their cells
/// are left unjudged rather than guessed.
pub const OLDEST_JUDGED: KernelVersion = KernelVersion(4, 16);

/// The verifier's own words, as the kernel prints them (printf formats cut at the
/// first `%`). Source: kernel/bpf/verifier.c, quoted in the project's notes.
pub mod msg {
    pub const MIX_BEFORE_5_10: &str =
        "tail_calls are not allowed in programs with bpf-to-bpf calls";
    pub const MIX_NON_JITED: &str =
        "tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls";
    /// The same refusal's words from 6.15 on (a2598045ead9).
    pub const MIX_NOT_SUPPORTED: &str =
        "mixing of tail_calls and bpf-to-bpf calls is not supported";
    pub const CALLER_STACK_TOO_LARGE: &str =
        "tail_calls are not allowed when call stack of previous frames is";
    pub const ONLY_JITED_TARGETS: &str = "Can attach to only JITed progs";
}

/// A kernel version as `major.minor`, the granularity features are documented at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelVersion(pub u32, pub u32);

impl KernelVersion {
    /// Parses `6.1`, `6.1.0-56-amd64`, `5.10.0-46-cloud-amd64`, `6.12.107+deb13-amd64`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = s.split(|c: char| !c.is_ascii_digit());
        let major = parts.next().and_then(|p| p.parse().ok());
        let minor = parts.next().and_then(|p| p.parse().ok());
        match (major, minor) {
            (Some(major), Some(minor)) => Ok(KernelVersion(major, minor)),
            _ => bail!("'{s}' is not a kernel version (expected MAJOR.MINOR...)"),
        }
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

#[derive(Deserialize, Debug)]
pub struct Feature {
    pub id: String,
    pub what: String,
    #[serde(deserialize_with = "de_version")]
    pub first: KernelVersion,
    pub commit: String,
}

#[derive(Deserialize, Debug)]
pub struct TailCallLimit {
    pub value: u32,
    pub commit: String,
}

#[derive(Deserialize, Debug)]
pub struct CallerStack {
    pub limit: u32,
    pub round: u32,
    pub commit: String,
}

#[derive(Deserialize, Debug)]
pub struct JitedLenOfSubprogs {
    #[serde(deserialize_with = "de_version")]
    pub first: KernelVersion,
    pub commit: String,
}

#[derive(Deserialize, Debug)]
pub struct SyscallTailZero {
    pub commit: String,
}

#[derive(Deserialize, Debug)]
pub struct FeatureTable {
    pub feature: Vec<Feature>,
    pub tail_call_limit: TailCallLimit,
    pub syscall_tail_zero: SyscallTailZero,
    pub jited_len_of_subprogs: JitedLenOfSubprogs,
    pub caller_stack: CallerStack,
    #[serde(default, rename = "override")]
    pub overrides: Vec<Override>,
}

/// A distribution kernel that differs from the mainline rule, and why.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub release_prefix: String,
    pub case: CaseId,
    pub jit: Option<JitMode>,
    pub tail_calls: Option<u32>,
    pub outcome: Option<OverrideOutcome>,
    pub errno: Option<i32>,
    pub message: Option<String>,
    /// The refused step; the case's own program load when not given.
    pub step: Option<String>,
    pub reason: String,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OverrideOutcome {
    Accepted,
    Rejected,
}

impl Override {
    fn applies(&self, case: CaseId, jit: JitMode, release: &str) -> bool {
        self.case == case
            && self.jit.is_none_or(|j| j == jit)
            && release.starts_with(&self.release_prefix)
    }

    fn apply(&self, base: Expectation) -> Expectation {
        let outcome = match (self.outcome, base.outcome) {
            (Some(OverrideOutcome::Rejected), _) => ExpectedOutcome::Rejected {
                step: self.step.clone().unwrap_or_else(|| self.case.load_step()),
                errno: self.errno.unwrap_or(EINVAL),
                message: self.message.clone(),
            },
            (Some(OverrideOutcome::Accepted), ExpectedOutcome::Accepted(c))
            | (None, ExpectedOutcome::Accepted(c)) => ExpectedOutcome::Accepted(Checks {
                tail_calls: self.tail_calls.or(c.tail_calls),
                ..c
            }),
            (Some(OverrideOutcome::Accepted), _) => ExpectedOutcome::Accepted(Checks {
                tail_calls: self.tail_calls,
                ..Checks::default()
            }),
            (None, other) => other,
        };
        Expectation {
            outcome,
            jited_len_unreported: base.jited_len_unreported,
            because: format!(
                "override for {}*: {} (mainline rule: {})",
                self.release_prefix, self.reason, base.because
            ),
        }
    }
}

fn de_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<KernelVersion, D::Error> {
    let s = String::deserialize(d)?;
    KernelVersion::parse(&s).map_err(serde::de::Error::custom)
}

impl FeatureTable {
    pub fn get(&self, id: &str) -> &Feature {
        self.feature
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("features.toml has no feature '{id}'"))
    }

    fn has(&self, id: &str, v: KernelVersion) -> bool {
        v >= self.get(id).first
    }

    /// Why a feature is (or is not) there, for the expectation's explanation.
    fn cite(&self, id: &str) -> String {
        let f = self.get(id);
        format!("{} since {} ({})", f.what, f.first, f.commit)
    }
}

/// The feature table shipped with the harness.
pub fn features() -> &'static FeatureTable {
    static TABLE: OnceLock<FeatureTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        toml::from_str(include_str!("features.toml"))
            .context("harness/features.toml does not parse")
            .unwrap()
    })
}

/// What a case must show when the verifier accepts it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    pub tail_calls: Option<u32>,
    pub fell_through: Option<bool>,
    /// BPF_PROG_TEST_RUN's return value.
    pub retval: Option<u32>,
    /// fexit saw exactly the verdict the tc program returned, for OK and SHOT, via
    /// this trigger; on loopback OK packets arrive and SHOT packets do not.
    pub verdicts: Option<Trigger>,
}

/// The outcome an expectation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedOutcome {
    Accepted(Checks),
    /// `step` refused with this errno; the verifier log contains `message`, or,
    /// when there is none, is empty (the kernel refused before its verifier ran).
    Rejected {
        step: String,
        errno: i32,
        message: Option<String>,
    },
}

/// What the documented kernel facts say a cell's outcome should be, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub outcome: ExpectedOutcome,
    /// Which documented fact the expectation comes from.
    pub because: String,
    /// Set where the kernel cannot show a JITed program's size (its
    /// bpf_prog_info reports 0 for programs with subprograms): a zero
    /// `jited_prog_len` under the JIT is then no disagreement, for this reason.
    pub jited_len_unreported: Option<String>,
}

/// The expected cell for the kernel whose `uname -r` is `release`: the mainline
/// rule for its version, unless an override in the feature table names it.
/// `frame` is the caller frame the compiled object really has (the record's
/// `caller_frame_bytes`); without it the case's intended frame is assumed.
pub fn expected_for_release(
    table: &FeatureTable,
    case: CaseId,
    jit: JitMode,
    release: &str,
    frame: Option<u32>,
) -> Result<Expectation> {
    let v = KernelVersion::parse(release)?;
    if v < OLDEST_JUDGED {
        bail!(
            "no expectations for kernels before {OLDEST_JUDGED} ({}): bpf2bpf calls start there ({})",
            release,
            table.get("bpf2bpf_calls").commit
        );
    }
    let base = expected_in(table, case, jit, v, frame);
    Ok(
        match table
            .overrides
            .iter()
            .find(|o| o.applies(case, jit, release))
        {
            Some(o) => o.apply(base),
            None => base,
        },
    )
}

/// The expected cell for `case` on a mainline kernel of version `v` (at least
/// [`OLDEST_JUDGED`]) in JIT mode `jit`, with the case's intended caller frame.
pub fn expected(case: CaseId, jit: JitMode, v: KernelVersion) -> Expectation {
    expected_in(features(), case, jit, v, None)
}

fn expected_in(
    t: &FeatureTable,
    case: CaseId,
    jit: JitMode,
    v: KernelVersion,
    frame: Option<u32>,
) -> Expectation {
    let limit = t.tail_call_limit.value;
    // Every program of bpf2bpf_tail_mix calls a subprogram.
    let jited_len_unreported = (case.object() == "bpf2bpf_tail_mix"
        && v < t.jited_len_of_subprogs.first)
        .then(|| {
            format!(
                "before {}, bpf_prog_info's jited_prog_len is 0 for a JITed program with subprograms ({})",
                t.jited_len_of_subprogs.first, t.jited_len_of_subprogs.commit
            )
        });
    let accepted = |checks: Checks, because: String| Expectation {
        outcome: ExpectedOutcome::Accepted(checks),
        because,
        jited_len_unreported: jited_len_unreported.clone(),
    };
    let rejected = |errno, message: Option<&str>, because: String| Expectation {
        outcome: ExpectedOutcome::Rejected {
            step: case.load_step(),
            errno,
            message: message.map(str::to_string),
        },
        because,
        jited_len_unreported: jited_len_unreported.clone(),
    };
    let mix = case.object() == "bpf2bpf_tail_mix" && case != CaseId::Bpf2bpfControl;
    match case {
        CaseId::TailCallChain => accepted(
            Checks {
                tail_calls: Some(limit),
                ..Checks::default()
            },
            format!(
                "{}; limit {limit} ({})",
                t.cite("tail_calls"),
                t.tail_call_limit.commit
            ),
        ),
        CaseId::TailCallEmptySlot => accepted(
            Checks {
                fell_through: Some(true),
                retval: Some(EMPTY_SLOT_RETVAL),
                ..Checks::default()
            },
            t.cite("tail_calls"),
        ),
        CaseId::Bpf2bpfControl => accepted(
            Checks {
                retval: Some(control_retval(TEST_FRAME_LEN as u32)),
                ..Checks::default()
            },
            t.cite("bpf2bpf_calls"),
        ),
        _ if mix && !t.has("tail_call_in_subprog", v) => rejected(
            EINVAL,
            Some(msg::MIX_BEFORE_5_10),
            format!(
                "before {}: the verifier refuses bpf_tail_call in any program with subprograms; {}",
                t.get("tail_call_in_subprog").first,
                t.cite("tail_call_in_subprog")
            ),
        ),
        // The non-JITed check runs before the stack-depth check, so every mix case
        // gets it with the interpreter; its words changed in 6.15.
        _ if mix && jit == JitMode::Interpreter => {
            let (words, reworded) = if t.has("mix_refusal_reworded", v) {
                (
                    msg::MIX_NOT_SUPPORTED,
                    format!("; {}", t.cite("mix_refusal_reworded")),
                )
            } else {
                (msg::MIX_NON_JITED, String::new())
            };
            rejected(
                EINVAL,
                Some(words),
                format!("interpreter: {}{reworded}", t.cite("tail_call_in_subprog")),
            )
        }
        CaseId::Bpf2bpfTailCallInSubprog
        | CaseId::Bpf2bpfBigCallerFrame
        | CaseId::Bpf2bpfCallerFrame224
        | CaseId::Bpf2bpfCallerFrame240 => {
            let s = &t.caller_stack;
            // mix_entry's own frame is below the 32-byte rounding unit.
            let frame = frame.or(case.caller_frame_bytes()).unwrap_or(0);
            // Only JIT mode gets here (the interpreter is refused above).
            let round = if t.has("jit_stack_round_16", v) {
                16
            } else {
                s.round
            };
            let rounded = frame.max(1).div_ceil(round) * round;
            if rounded < s.limit {
                accepted(
                    Checks {
                        tail_calls: Some(limit),
                        ..Checks::default()
                    },
                    format!(
                        "{}; a {frame}-byte caller frame (rounded to {round}: {rounded}) is under the {}-byte limit ({})",
                        t.cite("tail_call_in_subprog"),
                        s.limit,
                        s.commit
                    ),
                )
            } else {
                let because = format!(
                    "a {frame}-byte caller frame rounded to {round} is {rounded} bytes, at or over the {}-byte limit ({})",
                    s.limit, s.commit
                );
                // A frame that is not a multiple of the rounding shows the rounding:
                // its number is checked. Elsewhere the number depends on the probe's
                // shape, so only the words are (as the kernel facts advise).
                let message = if !frame.is_multiple_of(round) {
                    format!("{} {rounded} bytes. Too large", msg::CALLER_STACK_TOO_LARGE)
                } else {
                    msg::CALLER_STACK_TOO_LARGE.to_string()
                };
                rejected(EACCES, Some(&message), because)
            }
        }
        CaseId::FentryTcTestRun | CaseId::FentryTcLoopback if !t.has("fentry_on_bpf_prog", v) => {
            rejected(
                E2BIG,
                None,
                format!(
                    "before {}: the kernel's bpf_attr ends before attach_prog_fd, and the bpf syscall refuses non-zero bytes past its end with E2BIG before the verifier runs ({}); {}",
                    t.get("fentry_on_bpf_prog").first,
                    t.syscall_tail_zero.commit,
                    t.cite("fentry_on_bpf_prog")
                ),
            )
        }
        CaseId::FentryTcTestRun | CaseId::FentryTcLoopback if jit == JitMode::Interpreter => {
            rejected(
                EINVAL,
                Some(msg::ONLY_JITED_TARGETS),
                format!(
                    "interpreter: the trampoline needs a JITed target; {}",
                    t.cite("fentry_on_bpf_prog")
                ),
            )
        }
        CaseId::FentryTcTestRun => accepted(
            Checks {
                verdicts: Some(Trigger::TestRun),
                ..Checks::default()
            },
            t.cite("fentry_on_bpf_prog"),
        ),
        CaseId::FentryTcLoopback => accepted(
            Checks {
                verdicts: Some(Trigger::Loopback),
                ..Checks::default()
            },
            t.cite("fentry_on_bpf_prog"),
        ),
    }
}

/// The verdicts a fentry_tc case configures, in order: TC_ACT_OK then TC_ACT_SHOT.
pub const CONFIGURED_VERDICTS: [i32; 2] = [0, 2];
const TC_ACT_OK: i32 = 0;

/// Compares a guest record with its expectation. `Ok(())` when they agree; else a
/// list of disagreements, each naming what was expected and what the kernel did.
/// Beyond the outcome, every record must prove its JIT mode, and a caller-frame
/// case must have been built with the frame it is about.
pub fn check(expected: &Expectation, record: &CaseRecord) -> Result<(), Vec<String>> {
    let mut wrong = Vec::new();
    match (&expected.outcome, &record.outcome) {
        (ExpectedOutcome::Accepted(checks), Outcome::Accepted) => {
            check_measured(checks, record, &mut wrong)
        }
        (
            ExpectedOutcome::Rejected {
                step,
                errno,
                message,
            },
            Outcome::Rejected {
                step: got_step,
                errno: got_errno,
                verifier_tail,
            },
        ) => {
            if step != got_step {
                wrong.push(format!(
                    "refused step: expected \"{step}\", got \"{got_step}\""
                ));
            }
            if errno != got_errno {
                wrong.push(format!(
                    "errno: expected {}, got {}",
                    errno_name(*errno),
                    errno_name(*got_errno)
                ));
            }
            match message {
                Some(m) if !verifier_tail.contains(m.as_str()) => {
                    wrong.push(format!("verifier message: expected it to contain \"{m}\""))
                }
                None if !verifier_tail.trim().is_empty() => wrong.push(format!(
                    "verifier message: expected none (refused before the verifier ran), got \"{}\"",
                    last_line(verifier_tail)
                )),
                _ => {}
            }
        }
        (want, _) => wrong.push(format!(
            "outcome: expected {}, got {}",
            describe_expected(want),
            describe_outcome(&record.outcome)
        )),
    }
    check_jit_proof(record, expected.jited_len_unreported.is_some(), &mut wrong);
    check_frame(record, &mut wrong);
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong)
    }
}

/// The JIT mode is what the kernel shows, not what was asked for: the sysctl read
/// back, and every loaded program's JITed size (above 0 with the JIT, 0 without).
fn check_jit_proof(record: &CaseRecord, len_unreported: bool, wrong: &mut Vec<String>) {
    let m = &record.measured;
    let jit = record.jit;
    if m.bpf_jit_enable.as_deref() != Some(jit.sysctl_value()) {
        wrong.push(format!(
            "JIT mode: bpf_jit_enable read back {}, expected {} for {jit}",
            m.bpf_jit_enable.as_deref().unwrap_or("nothing"),
            jit.sysctl_value()
        ));
    }
    if record.outcome == Outcome::Accepted && m.jited_bytes.is_empty() {
        wrong.push(format!(
            "JIT mode: no program's bpf_prog_info was read, so {jit} is unproven"
        ));
    }
    for (prog, &len) in &m.jited_bytes {
        match jit {
            JitMode::Jit if len == 0 && !len_unreported => wrong.push(format!(
                "JIT mode: {prog} was not JITed (jited_prog_len 0) with the JIT on"
            )),
            JitMode::Interpreter if len > 0 => wrong.push(format!(
                "JIT mode: {prog} was JITed ({len} bytes) with the JIT off"
            )),
            _ => {}
        }
    }
}

/// A caller-frame case is about one frame size; the compiled object must have it.
fn check_frame(record: &CaseRecord, wrong: &mut Vec<String>) {
    let Some(intended) = record.case.caller_frame_bytes() else {
        return;
    };
    match record.measured.caller_frame_bytes {
        Some(built) if built == intended => {}
        Some(built) => wrong.push(format!(
            "caller frame: the compiled {} uses {built} stack bytes, the case is about {intended} (a different clang?)",
            record.case.program()
        )),
        None => wrong.push(format!(
            "caller frame: the agent did not report {}'s frame size",
            record.case.program()
        )),
    }
}

fn check_measured(checks: &Checks, record: &CaseRecord, wrong: &mut Vec<String>) {
    let m = &record.measured;
    if let Some(want) = checks.tail_calls {
        if m.tail_calls != Some(want) {
            wrong.push(format!(
                "tail calls: expected {want}, got {}",
                opt(m.tail_calls)
            ));
        }
    }
    if let Some(want) = checks.fell_through {
        if m.fell_through != Some(want) {
            wrong.push(format!(
                "fell through after a tail call to an empty slot: expected {want}, got {}",
                opt(m.fell_through)
            ));
        }
    }
    if let Some(want) = checks.retval {
        if m.retval != Some(want) {
            wrong.push(format!(
                "return value: expected {want}, got {}",
                opt(m.retval)
            ));
        }
    }
    if let Some(trigger) = checks.verdicts {
        let seen: Vec<_> = m.verdicts.iter().filter(|v| v.trigger == trigger).collect();
        let configured: Vec<i32> = seen.iter().map(|v| v.configured).collect();
        if configured != CONFIGURED_VERDICTS {
            wrong.push(format!(
                "verdicts: expected steps {CONFIGURED_VERDICTS:?} via {trigger:?}, got {configured:?}"
            ));
        }
        for v in seen {
            let c = v.configured;
            if v.fexit_saw != [i64::from(c)] {
                wrong.push(format!(
                    "verdict {c}: fexit saw {:?}, expected exactly [{c}]",
                    v.fexit_saw
                ));
            }
            if v.fexit_hits == 0 || v.fentry_hits == 0 {
                wrong.push(format!(
                    "verdict {c}: fentry ran {} times and fexit {} times, expected both to run",
                    v.fentry_hits, v.fexit_hits
                ));
            }
            match trigger {
                Trigger::TestRun => {
                    if v.returned != Some(c) {
                        wrong.push(format!(
                            "verdict {c}: BPF_PROG_TEST_RUN returned {}, expected {c}",
                            opt(v.returned)
                        ));
                    }
                }
                Trigger::Loopback => {
                    let (sent, got) = (v.packets_sent.unwrap_or(0), v.packets_received);
                    let want = if c == TC_ACT_OK { sent } else { 0 };
                    if sent == 0 || got != Some(want) {
                        wrong.push(format!(
                            "verdict {c}: {sent} packets sent, {} received, expected {want}",
                            opt(got)
                        ));
                    }
                }
            }
        }
    }
}

fn opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "nothing".to_string(), |v| v.to_string())
}

pub fn describe_expected(e: &ExpectedOutcome) -> String {
    match e {
        ExpectedOutcome::Accepted(c) => {
            let mut s = "accepted".to_string();
            if let Some(n) = c.tail_calls {
                s += &format!(", {n} tail calls");
            }
            if let Some(r) = c.retval {
                s += &format!(", returns {r}");
            }
            if c.fell_through == Some(true) {
                s += ", falls through";
            }
            if let Some(t) = c.verdicts {
                s += &format!(", fexit sees each verdict ({t:?})");
            }
            s
        }
        ExpectedOutcome::Rejected {
            step,
            errno,
            message: Some(m),
        } => format!("rejected at {step}, {}, \"{m}\"", errno_name(*errno)),
        ExpectedOutcome::Rejected {
            step,
            errno,
            message: None,
        } => format!(
            "rejected at {step}, {}, before the verifier ran",
            errno_name(*errno)
        ),
    }
}

pub fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Accepted => "accepted".to_string(),
        Outcome::Rejected {
            step,
            errno,
            verifier_tail,
        } => format!(
            "rejected at {step}, {}, \"{}\"",
            errno_name(*errno),
            last_line(verifier_tail)
        ),
        Outcome::Unsupported { reason } => format!("unsupported: {reason}"),
        Outcome::Error { message } => format!("error: {message}"),
    }
}

/// The verifier log's last non-empty line: the refusal itself.
pub fn last_line(log: &str) -> &str {
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

pub fn errno_name(errno: i32) -> String {
    match errno {
        EINVAL => "EINVAL".to_string(),
        EACCES => "EACCES".to_string(),
        E2BIG => "E2BIG".to_string(),
        1 => "EPERM".to_string(),
        95 => "EOPNOTSUPP".to_string(),
        524 => "ENOTSUPP".to_string(),
        n => format!("errno {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfmatrix_probes::{Measured, VerdictObservation};
    use std::collections::BTreeMap;

    fn v(s: &str) -> KernelVersion {
        KernelVersion::parse(s).unwrap()
    }

    /// What a guest that proved its JIT mode reports, with `jited` as the one
    /// loaded program's JITed size.
    fn proven(jit: JitMode, measured: Measured) -> Measured {
        let len = match jit {
            JitMode::Jit => 120,
            JitMode::Interpreter => 0,
        };
        Measured {
            bpf_jit_enable: Some(jit.sysctl_value().to_string()),
            jited_bytes: BTreeMap::from([("prog".to_string(), len)]),
            ..measured
        }
    }

    fn record(case: CaseId, jit: JitMode, outcome: Outcome, measured: Measured) -> CaseRecord {
        CaseRecord {
            case,
            jit,
            outcome,
            measured: proven(jit, measured),
            duration_ms: 1,
        }
    }

    fn rejected(case: CaseId, errno: i32, message: Option<&str>) -> ExpectedOutcome {
        ExpectedOutcome::Rejected {
            step: case.load_step(),
            errno,
            message: message.map(str::to_string),
        }
    }

    fn refusal(case: CaseId, jit: JitMode, errno: i32, tail: &str) -> CaseRecord {
        record(
            case,
            jit,
            Outcome::Rejected {
                step: case.load_step(),
                errno,
                verifier_tail: tail.into(),
            },
            Measured {
                caller_frame_bytes: case.caller_frame_bytes(),
                ..Measured::default()
            },
        )
    }

    #[test]
    fn versions_parse_from_releases() {
        assert_eq!(v("6.1.0-56-amd64"), KernelVersion(6, 1));
        assert_eq!(v("5.10.0-46-cloud-amd64"), KernelVersion(5, 10));
        assert_eq!(v("6.12.107+deb13-amd64"), KernelVersion(6, 12));
        assert_eq!(v("4.16.0-041600-generic"), KernelVersion(4, 16));
        assert!(v("5.4") < v("5.10"));
        assert!(KernelVersion::parse("vmlinuz").is_err());
    }

    #[test]
    fn the_feature_table_parses_and_names_its_commits() {
        let t = features();
        assert_eq!(t.get("tail_call_in_subprog").first, KernelVersion(5, 10));
        assert_eq!(t.get("fentry_on_bpf_prog").first, KernelVersion(5, 5));
        assert_eq!(t.tail_call_limit.value, 33);
        assert!(t.feature.iter().all(|f| f.commit.len() == 12));
        assert_eq!(t.syscall_tail_zero.commit.len(), 12);
    }

    #[test]
    fn kernels_before_4_16_get_no_expectation_rather_than_a_guess() {
        let e = expected_for_release(
            features(),
            CaseId::TailCallChain,
            JitMode::Jit,
            "4.15.0-20-generic",
            None,
        );
        let why = format!("{:#}", e.unwrap_err());
        assert!(why.contains("before 4.16"), "{why}");
        assert!(expected_for_release(
            features(),
            CaseId::TailCallChain,
            JitMode::Jit,
            "4.16.13",
            None
        )
        .is_ok());
    }

    #[test]
    fn mixing_depends_on_version_and_jit() {
        let mix = CaseId::Bpf2bpfTailCallInSubprog;
        for old in ["4.16", "5.4", "5.9"] {
            for jit in JitMode::ALL {
                assert_eq!(
                    expected(mix, jit, v(old)).outcome,
                    rejected(mix, EINVAL, Some(msg::MIX_BEFORE_5_10)),
                    "{old} {jit}"
                );
            }
        }
        assert!(matches!(
            expected(mix, JitMode::Jit, v("5.10")).outcome,
            ExpectedOutcome::Accepted(Checks {
                tail_calls: Some(33),
                ..
            })
        ));
        assert_eq!(
            expected(mix, JitMode::Interpreter, v("6.12")).outcome,
            rejected(mix, EINVAL, Some(msg::MIX_NON_JITED))
        );
        // Reworded in 6.15 (a2598045ead9); refused the same way, for every mix case.
        for case in [
            mix,
            CaseId::Bpf2bpfBigCallerFrame,
            CaseId::Bpf2bpfCallerFrame224,
            CaseId::Bpf2bpfCallerFrame240,
        ] {
            for newer in ["6.15", "7.2"] {
                let e = expected(case, JitMode::Interpreter, v(newer));
                assert_eq!(
                    e.outcome,
                    rejected(case, EINVAL, Some(msg::MIX_NOT_SUPPORTED)),
                    "{case:?} {newer}"
                );
                assert!(e.because.contains("a2598045ead9"), "{}", e.because);
            }
            assert_eq!(
                expected(case, JitMode::Interpreter, v("6.14")).outcome,
                rejected(case, EINVAL, Some(msg::MIX_NON_JITED))
            );
        }
        let big = CaseId::Bpf2bpfBigCallerFrame;
        assert_eq!(
            expected(big, JitMode::Jit, v("6.1")).outcome,
            rejected(big, EACCES, Some(msg::CALLER_STACK_TOO_LARGE))
        );
    }

    #[test]
    fn caller_frames_round_up_to_32_bytes_against_the_256_byte_limit() {
        let at = |case| expected(case, JitMode::Jit, v("6.1")).outcome;
        assert!(matches!(
            at(CaseId::Bpf2bpfCallerFrame224),
            ExpectedOutcome::Accepted(Checks {
                tail_calls: Some(33),
                ..
            })
        ));
        let f240 = CaseId::Bpf2bpfCallerFrame240;
        assert_eq!(
            at(f240),
            rejected(
                f240,
                EACCES,
                Some(&format!(
                    "{} 256 bytes. Too large",
                    msg::CALLER_STACK_TOO_LARGE
                ))
            )
        );
        // From 6.9 JITed frames round to 16: 240 stays 240, under the limit.
        assert!(matches!(
            expected(f240, JitMode::Jit, v("6.9")).outcome,
            ExpectedOutcome::Accepted(_)
        ));
    }

    #[test]
    fn the_expectation_follows_the_frame_the_object_really_has() {
        // A clang that laid frame224_entry out in 232 bytes would cross the limit
        // on 6.1 (232 rounds to 256): the expectation says so, and the check
        // names the drift from the case's 224 bytes.
        let case = CaseId::Bpf2bpfCallerFrame224;
        let e = expected_for_release(features(), case, JitMode::Jit, "6.1.0-1-amd64", Some(232))
            .unwrap();
        assert_eq!(
            e.outcome,
            rejected(
                case,
                EACCES,
                Some(&format!(
                    "{} 256 bytes. Too large",
                    msg::CALLER_STACK_TOO_LARGE
                ))
            )
        );
        let mut rec = refusal(
            case,
            JitMode::Jit,
            EACCES,
            "tail_calls are not allowed when call stack of previous frames is 256 bytes. Too large",
        );
        rec.measured.caller_frame_bytes = Some(232);
        let errs = check(&e, &rec).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("uses 232 stack bytes, the case is about 224"),
            "{errs:?}"
        );
    }

    #[test]
    fn fentry_needs_5_5_and_the_jit() {
        let c = CaseId::FentryTcTestRun;
        for old in ["4.16", "5.4"] {
            for jit in JitMode::ALL {
                assert_eq!(expected(c, jit, v(old)).outcome, rejected(c, E2BIG, None));
            }
        }
        assert_eq!(
            expected(c, JitMode::Interpreter, v("6.1")).outcome,
            rejected(c, EINVAL, Some(msg::ONLY_JITED_TARGETS))
        );
        assert!(matches!(
            expected(c, JitMode::Jit, v("5.5")).outcome,
            ExpectedOutcome::Accepted(_)
        ));
    }

    #[test]
    fn a_refusal_before_the_verifier_must_come_without_words() {
        let c = CaseId::FentryTcLoopback;
        let e = expected(c, JitMode::Jit, v("5.4"));
        assert_eq!(check(&e, &refusal(c, JitMode::Jit, E2BIG, "")), Ok(()));
        let errs = check(
            &e,
            &refusal(c, JitMode::Jit, E2BIG, "R1 invalid mem access"),
        )
        .unwrap_err();
        assert!(errs[0].contains("expected none"), "{errs:?}");
        let errs = check(&e, &refusal(c, JitMode::Jit, EINVAL, "")).unwrap_err();
        assert_eq!(errs, vec!["errno: expected E2BIG, got EINVAL".to_string()]);
        // The tc program refused instead of the tracer: another question answered.
        let mut other = refusal(c, JitMode::Jit, E2BIG, "");
        other.outcome = Outcome::Rejected {
            step: "load tc_verdict".into(),
            errno: E2BIG,
            verifier_tail: String::new(),
        };
        let errs = check(&e, &other).unwrap_err();
        assert!(errs[0].starts_with("refused step"), "{errs:?}");
        // Unsupported is no longer a right answer for a kernel that predates it.
        let unsupported = record(
            c,
            JitMode::Jit,
            Outcome::Unsupported {
                reason: "no kernel BTF".into(),
            },
            Measured::default(),
        );
        assert!(check(&e, &unsupported).is_err());
    }

    fn override_table(extra: &str) -> FeatureTable {
        toml::from_str(&format!("{}\n{extra}", include_str!("features.toml"))).unwrap()
    }

    #[test]
    fn an_override_changes_only_the_kernels_and_cell_it_names() {
        let table = override_table(
            r#"
[[override]]
release_prefix = "5.4.0-1"
case = "tail_call.chain"
jit = "interpreter"
tail_calls = 32
reason = "stable backport"
"#,
        );
        let chain = CaseId::TailCallChain;
        let e = expected_for_release(
            &table,
            chain,
            JitMode::Interpreter,
            "5.4.0-100-generic",
            None,
        )
        .unwrap();
        assert!(matches!(
            e.outcome,
            ExpectedOutcome::Accepted(Checks {
                tail_calls: Some(32),
                ..
            })
        ));
        assert!(
            e.because
                .starts_with("override for 5.4.0-1*: stable backport"),
            "{}",
            e.because
        );
        for (jit, release) in [
            (JitMode::Jit, "5.4.0-100-generic"),
            (JitMode::Interpreter, "5.4.0-050400-generic"),
        ] {
            let e = expected_for_release(&table, chain, jit, release, None).unwrap();
            assert_eq!(e, expected(chain, jit, KernelVersion(5, 4)));
        }
        let bad = toml::from_str::<FeatureTable>(&format!(
            "{}\n[[override]]\nrelease_prefix = \"x\"\ncase = \"tail_call.chain\"\ntypo = 1\nreason = \"r\"\n",
            include_str!("features.toml")
        ));
        assert!(bad.is_err(), "unknown override fields are refused");
        let refused = toml::from_str::<FeatureTable>(&format!(
            "{}\n[[override]]\nrelease_prefix = \"x\"\ncase = \"tail_call.chain\"\noutcome = \"refused\"\nreason = \"r\"\n",
            include_str!("features.toml")
        ));
        assert!(refused.is_err(), "'any refusal' is not an outcome any more");
        assert!(features().overrides.is_empty());
    }

    #[test]
    fn changing_a_refusals_errno_fails_exactly_that_cell() {
        // Every 5.4 record as the kernel's facts say, judged once with the table
        // as shipped (all agree) and once with the interpreter's mixing errno
        // changed to EACCES (only that cell disagrees).
        let table = override_table(
            r#"
[[override]]
release_prefix = "5.4"
case = "bpf2bpf.tail_call_in_subprog"
jit = "interpreter"
outcome = "rejected"
errno = 13
message = "tail_calls are not allowed in programs with bpf-to-bpf calls"
reason = "a deliberately wrong errno"
"#,
        );
        let release = "5.4.286";
        let mut failing = Vec::new();
        for jit in JitMode::ALL {
            for case in CaseId::ALL {
                let shipped = expected_for_release(features(), case, jit, release, None).unwrap();
                let rec = match &shipped.outcome {
                    ExpectedOutcome::Rejected {
                        step,
                        errno,
                        message,
                    } => CaseRecord {
                        outcome: Outcome::Rejected {
                            step: step.clone(),
                            errno: *errno,
                            verifier_tail: message.clone().unwrap_or_default(),
                        },
                        ..refusal(case, jit, 0, "")
                    },
                    ExpectedOutcome::Accepted(_) => continue,
                };
                assert_eq!(check(&shipped, &rec), Ok(()), "{case} {jit}");
                let changed = expected_for_release(&table, case, jit, release, None).unwrap();
                if check(&changed, &rec).is_err() {
                    failing.push((case, jit));
                }
            }
        }
        assert_eq!(
            failing,
            vec![(CaseId::Bpf2bpfTailCallInSubprog, JitMode::Interpreter)]
        );
    }

    #[test]
    fn the_jit_mode_must_be_proven_by_the_kernel() {
        let e = expected(CaseId::TailCallChain, JitMode::Jit, v("5.10"));
        let good = record(
            CaseId::TailCallChain,
            JitMode::Jit,
            Outcome::Accepted,
            Measured {
                tail_calls: Some(33),
                ..Measured::default()
            },
        );
        assert_eq!(check(&e, &good), Ok(()));
        let mut interpreted = good.clone();
        interpreted
            .measured
            .jited_bytes
            .insert("chain_body".into(), 0);
        let errs = check(&e, &interpreted).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "JIT mode: chain_body was not JITed (jited_prog_len 0) with the JIT on".to_string()
            ]
        );
        let mut readback = good.clone();
        readback.measured.bpf_jit_enable = Some("0".into());
        assert!(check(&e, &readback).unwrap_err()[0].contains("read back 0"));
        let mut unproven = good;
        unproven.measured.jited_bytes.clear();
        assert!(check(&e, &unproven).unwrap_err()[0].contains("unproven"));
    }

    #[test]
    fn before_4_18_a_jited_program_with_subprograms_shows_no_jited_size() {
        let control = |release| {
            let e = expected_for_release(
                features(),
                CaseId::Bpf2bpfControl,
                JitMode::Jit,
                release,
                None,
            )
            .unwrap();
            let mut rec = record(
                CaseId::Bpf2bpfControl,
                JitMode::Jit,
                Outcome::Accepted,
                Measured {
                    retval: Some(control_retval(TEST_FRAME_LEN as u32)),
                    ..Measured::default()
                },
            );
            rec.measured.jited_bytes = BTreeMap::from([("control_entry".to_string(), 0)]);
            check(&e, &rec)
        };
        assert_eq!(control("4.16.13"), Ok(()));
        assert_eq!(
            control("5.4.286"),
            Err(vec![
                "JIT mode: control_entry was not JITed (jited_prog_len 0) with the JIT on"
                    .to_string()
            ])
        );
        // Programs without subprograms must still show their size on 4.16.
        let e = expected(CaseId::TailCallChain, JitMode::Jit, v("4.16"));
        assert!(e.jited_len_unreported.is_none());
    }

    #[test]
    fn a_wrong_tail_call_count_is_a_readable_mismatch() {
        let e = expected(CaseId::TailCallChain, JitMode::Interpreter, v("5.10"));
        let good = record(
            CaseId::TailCallChain,
            JitMode::Interpreter,
            Outcome::Accepted,
            Measured {
                tail_calls: Some(33),
                ..Measured::default()
            },
        );
        assert_eq!(check(&e, &good), Ok(()));
        let mut bad = good.clone();
        bad.measured.tail_calls = Some(32);
        assert_eq!(
            check(&e, &bad),
            Err(vec!["tail calls: expected 33, got 32".to_string()])
        );
    }

    #[test]
    fn an_empty_slot_must_fall_through_to_its_own_return_value() {
        let e = expected(CaseId::TailCallEmptySlot, JitMode::Jit, v("6.1"));
        let rec = |retval| {
            record(
                CaseId::TailCallEmptySlot,
                JitMode::Jit,
                Outcome::Accepted,
                Measured {
                    fell_through: Some(true),
                    retval: Some(retval),
                    ..Measured::default()
                },
            )
        };
        assert_eq!(check(&e, &rec(EMPTY_SLOT_RETVAL)), Ok(()));
        assert!(check(&e, &rec(0)).is_err());
    }

    #[test]
    fn a_rejection_must_carry_the_errno_and_the_words() {
        let case = CaseId::Bpf2bpfBigCallerFrame;
        let e = expected(case, JitMode::Jit, v("6.1"));
        let words = "tail_calls are not allowed when call stack of previous frames is 352 bytes. Too large\nverification time 60 usec";
        assert_eq!(
            check(&e, &refusal(case, JitMode::Jit, EACCES, words)),
            Ok(())
        );
        assert_eq!(
            check(&e, &refusal(case, JitMode::Jit, EINVAL, words))
                .unwrap_err()
                .len(),
            1
        );
        assert_eq!(
            check(&e, &refusal(case, JitMode::Jit, EACCES, "invalid insn")).unwrap_err(),
            vec![format!(
                "verifier message: expected it to contain \"{}\"",
                msg::CALLER_STACK_TOO_LARGE
            )]
        );
        let mut accepted = refusal(case, JitMode::Jit, 0, "");
        accepted.outcome = Outcome::Accepted;
        assert_eq!(
            check(&e, &accepted).unwrap_err(),
            vec![format!(
                "outcome: expected rejected at load big_frame_entry, EACCES, \"{}\", got accepted",
                msg::CALLER_STACK_TOO_LARGE
            )]
        );
    }

    #[test]
    fn verdicts_must_match_exactly_and_loopback_must_drop_shot() {
        let e = expected(CaseId::FentryTcLoopback, JitMode::Jit, v("6.1"));
        let obs = |configured, saw: Vec<i64>, received| VerdictObservation {
            trigger: Trigger::Loopback,
            configured,
            returned: None,
            fexit_saw: saw,
            fexit_hits: 5,
            fentry_hits: 5,
            fentry_skb_len: Some(60),
            packets_sent: Some(5),
            packets_received: Some(received),
        };
        let rec = |verdicts| {
            record(
                CaseId::FentryTcLoopback,
                JitMode::Jit,
                Outcome::Accepted,
                Measured {
                    verdicts,
                    ..Measured::default()
                },
            )
        };
        assert_eq!(
            check(&e, &rec(vec![obs(0, vec![0], 5), obs(2, vec![2], 0)])),
            Ok(())
        );
        let errs = check(&e, &rec(vec![obs(0, vec![0], 5), obs(2, vec![0, 2], 5)])).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(check(&e, &rec(vec![obs(0, vec![0], 5)])).is_err());
        assert!(check(&e, &rec(vec![])).is_err());
    }
}
