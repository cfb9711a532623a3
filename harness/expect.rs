//! The rules of judgement: the expectation for any kernel version, JIT mode and
//! case ([`expected_for_release`]), derived from the feature table in
//! `features.toml` (first kernel version of each feature, with its upstream commit),
//! and the comparison of a guest's record against it ([`check`]). The rules are
//! applied in one place, [`crate::matrix::Cell::judge`], which turns them into a
//! verdict (the words are defined in `bpfmatrix_protocol`).

use anyhow::{bail, Context, Result};
use bpfmatrix_protocol::{
    control_retval, CaseId, CaseRecord, ConnEvent, JitMode, Outcome, SeedObserved, Trigger,
    EMPTY_SLOT_RETVAL, NO_KERNEL_BTF, PROBE_TYPE_FENTRY, PROBE_TYPE_FEXIT, SECCOMP_DEMO_COMM,
    TEST_FRAME_LEN,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
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
    /// A seed demo showed what its article shows.
    pub seed: Option<SeedCheck>,
}

/// What a seed demo must show, judged from its observations (`Measured::seed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedCheck {
    /// seed.tcpconn_tail_call: an event for the outgoing connection (127.0.0.1 to
    /// 127.0.0.1, the client's port to the listener's: tcp_connect's sock) and one
    /// for the accepted connection (the listener's port to the client's:
    /// inet_csk_complete_hashdance's child sock).
    Connections,
    /// seed.fentry_fexit_tc_icmp: the echo answered, fentry and fexit events for
    /// its packets (as many of each), every one 127.0.0.1 to 127.0.0.1, fexit's
    /// with TC_ACT_OK.
    IcmpTraced,
    /// seed.seccomp_tail_call: the write, read and open programs' lines with the
    /// calls' arguments, the kprobe's fall-through line for getpid (no program at
    /// its number), and none for the three numbers that have one. With `args`
    /// false the programs read a NULL seccomp_data (x86_seccomp_data_null): no
    /// write or read line (their size checks see 0), open's with fd=0. With
    /// `oops` (interpreter_tail_call_stack) the kernel faults once the open
    /// program has printed its line: the child dies with SIGSEGV in open(), the
    /// kernel log has the oops for it, and getpid is never reached.
    SeccompLines { args: bool, oops: bool },
}

impl SeedCheck {
    fn describe(self) -> &'static str {
        match self {
            SeedCheck::Connections => {
                "events for the outgoing and the accepted connection, 127.0.0.1 and their ports"
            }
            SeedCheck::IcmpTraced => {
                "fentry and fexit events for the ICMP echo, 127.0.0.1, fexit TC_ACT_OK"
            }
            SeedCheck::SeccompLines { oops: true, .. } => {
                "open's line, then a kernel oops in the child's open() (SIGSEGV): the interpreter's stack overrun"
            }
            SeedCheck::SeccompLines { args: true, .. } => {
                "write, read and open lines with their arguments, getpid's fall-through line"
            }
            SeedCheck::SeccompLines { args: false, .. } => {
                "no write or read line, open(fd=0, ...), getpid's fall-through line (seccomp_data is NULL)"
            }
        }
    }
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
    /// The kernel lacks something the case needs: the agent says so, in words
    /// that contain `reason`.
    Unsupported {
        reason: String,
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
    let unsupported = |reason: &str, because: String| {
        let mut e = accepted(Checks::default(), because);
        e.outcome = ExpectedOutcome::Unsupported {
            reason: reason.to_string(),
        };
        e
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
        CaseId::FentryTcTestRun | CaseId::FentryTcLoopback | CaseId::SeedFentryFexitTcIcmp
            if !t.has("fentry_on_bpf_prog", v) =>
        {
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
        CaseId::FentryTcTestRun | CaseId::FentryTcLoopback | CaseId::SeedFentryFexitTcIcmp
            if jit == JitMode::Interpreter =>
        {
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
        // The seed demos: the articles' own programs (probes/bpf/seed_*.c).
        CaseId::SeedFentryFexitTcIcmp => accepted(
            Checks {
                seed: Some(SeedCheck::IcmpTraced),
                ..Checks::default()
            },
            format!(
                "{}; {}; {}",
                t.cite("fentry_on_bpf_prog"),
                t.cite("perf_event_output"),
                t.cite("kernel_btf")
            ),
        ),
        CaseId::SeedTcpconnTailCall if !t.has("kernel_btf", v) => unsupported(
            NO_KERNEL_BTF,
            format!(
                "before {}: no kernel BTF, so handle_new_connection's CO-RE reads of struct sock cannot be relocated; {}",
                t.get("kernel_btf").first,
                t.cite("kernel_btf")
            ),
        ),
        CaseId::SeedTcpconnTailCall => accepted(
            Checks {
                seed: Some(SeedCheck::Connections),
                ..Checks::default()
            },
            format!(
                "{}; {}, kprobe programs included; {}; {}",
                t.cite("kprobe_progs"),
                t.cite("tail_calls"),
                t.cite("perf_event_output"),
                t.cite("kernel_btf")
            ),
        ),
        CaseId::SeedSeccompTailCall => {
            let args = !t.has("x86_seccomp_data_null", v);
            let oops = jit == JitMode::Interpreter && t.has("interpreter_tail_call_stack", v);
            let mut because = format!(
                "{}; {}, kprobe programs included; {}",
                t.cite("kprobe_progs"),
                t.cite("tail_calls"),
                t.cite("trace_printk")
            );
            if !args {
                because += &format!(
                    "; the per-syscall programs read their arguments from a NULL seccomp_data: {}",
                    t.cite("x86_seccomp_data_null")
                );
            }
            if oops {
                because += &format!(
                    "; interpreter: the tail-called open program overruns the stack sized for __seccomp_filter, the kernel oopses: {}",
                    t.cite("interpreter_tail_call_stack")
                );
            }
            accepted(
                Checks {
                    seed: Some(SeedCheck::SeccompLines { args, oops }),
                    ..Checks::default()
                },
                because,
            )
        }
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
        (ExpectedOutcome::Unsupported { reason }, Outcome::Unsupported { reason: got_reason }) => {
            if !got_reason.contains(reason.as_str()) {
                wrong.push(format!(
                    "unsupported: expected the reason to contain \"{reason}\", got \"{got_reason}\""
                ));
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
    // A kernel without CONFIG_BPF_JIT has no sysctl and interprets everything;
    // the JITed sizes below still prove it.
    let no_sysctl_interprets = jit == JitMode::Interpreter && m.bpf_jit_enable.is_none();
    if m.bpf_jit_enable.as_deref() != Some(jit.sysctl_value()) && !no_sysctl_interprets {
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
    if let Some(seed) = checks.seed {
        match m.seed.as_deref() {
            Some(seen) => check_seed(seed, seen, wrong),
            None => wrong.push("seed demo: the agent reported no observations".to_string()),
        }
    }
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

/// An observation that agrees with `check`: what a guest shows when the demo
/// does exactly what its article (and the feature table) says. For fixtures that
/// build agreeing records from expectations (the host's own tests).
pub fn agreeing_observation(check: SeedCheck) -> SeedObserved {
    use bpfmatrix_protocol::{IcmpEcho, PacketEvent, SyscallMade, TcpPorts};
    let lo = Ipv4Addr::LOCALHOST;
    match check {
        SeedCheck::Connections => SeedObserved {
            tcp_ports: Some(TcpPorts {
                listener: 40000,
                client: 50000,
            }),
            conn_events: vec![
                ConnEvent {
                    saddr: lo,
                    daddr: lo,
                    sport: 50000,
                    dport: 40000,
                },
                ConnEvent {
                    saddr: lo,
                    daddr: lo,
                    sport: 40000,
                    dport: 50000,
                },
            ],
            perf_lost: Some(0),
            ..SeedObserved::default()
        },
        SeedCheck::IcmpTraced => SeedObserved {
            icmp_echo: Some(IcmpEcho {
                requests: 1,
                replies: 1,
            }),
            packet_events: [PROBE_TYPE_FENTRY, PROBE_TYPE_FEXIT]
                .repeat(2)
                .into_iter()
                .map(|probe_type| PacketEvent {
                    saddr: lo,
                    daddr: lo,
                    probe_type,
                    verdict: 0,
                })
                .collect(),
            perf_lost: Some(0),
            ..SeedObserved::default()
        },
        SeedCheck::SeccompLines { args, oops } => {
            let call = |name: &str, nr, args: Vec<u64>, ret| SyscallMade {
                name: name.into(),
                nr,
                args,
                ret: (!oops || nr == 1 || nr == 0).then_some(ret),
            };
            let mut lines: Vec<String> = Vec::new();
            if args {
                lines.push("write(fd=4, buf=(____ptrval____), size=5)".into());
                lines.push("read(fd=3, buf=(____ptrval____), size=5)".into());
                lines.push("open(fd=305419896, path=(null))".into());
            } else {
                lines.push("open(fd=0, path=0000000000000000)".into());
            }
            if !oops {
                lines.push(format!("syscall=39 common={SECCOMP_DEMO_COMM}"));
                lines.push(format!("syscall=231 common={SECCOMP_DEMO_COMM}"));
            }
            SeedObserved {
                syscalls: vec![
                    call("write", 1, vec![4, 0x7ffd_0000_1000, 5], 5),
                    call("read", 0, vec![3, 0x7ffd_0000_1008, 5], 5),
                    call("open", 2, vec![0x5555_1234_5678, 0], 5),
                    call("getpid", 39, vec![], 100),
                ],
                trace_lines: lines,
                child_signal: oops.then_some(11),
                kernel_oops: if oops {
                    vec![
                        "Oops: general protection fault: 0000 [#1] PREEMPT SMP NOPTI".into(),
                        format!("CPU: 0 UID: 0 PID: 100 Comm: {SECCOMP_DEMO_COMM} Not tainted"),
                    ]
                } else {
                    Vec::new()
                },
                ..SeedObserved::default()
            }
        }
    }
}

/// A seed demo against what its article shows.
fn check_seed(check: SeedCheck, seen: &SeedObserved, wrong: &mut Vec<String>) {
    const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
    const TC_ACT_OK: u8 = 0;
    match check {
        SeedCheck::Connections => {
            let Some(ports) = seen.tcp_ports else {
                wrong.push("tcp_connect demo: the agent reported no connection".to_string());
                return;
            };
            let conn = |sport, dport| ConnEvent {
                saddr: LOCALHOST,
                daddr: LOCALHOST,
                sport,
                dport,
            };
            for (what, want) in [
                (
                    "outgoing connection (tcp_connect)",
                    conn(ports.client, ports.listener),
                ),
                (
                    "accepted connection (inet_csk_complete_hashdance)",
                    conn(ports.listener, ports.client),
                ),
            ] {
                if !seen.conn_events.contains(&want) {
                    wrong.push(format!(
                        "tcp_connect demo: no event for the {what}, {}:{} -> {}:{}; the events: [{}]",
                        want.saddr,
                        want.sport,
                        want.daddr,
                        want.dport,
                        seen.conn_events
                            .iter()
                            .map(|e| format!("{}:{} -> {}:{}", e.saddr, e.sport, e.daddr, e.dport))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        SeedCheck::IcmpTraced => {
            match seen.icmp_echo {
                Some(echo) if echo.replies > 0 => {}
                Some(echo) => wrong.push(format!(
                    "ICMP demo: {} echo request(s) to 127.0.0.1, no reply",
                    echo.requests
                )),
                None => wrong.push("ICMP demo: the agent sent no echo".to_string()),
            }
            let count = |t| {
                seen.packet_events
                    .iter()
                    .filter(|e| e.probe_type == t)
                    .count()
            };
            let (fentry, fexit) = (count(PROBE_TYPE_FENTRY), count(PROBE_TYPE_FEXIT));
            if fentry == 0 || fexit == 0 || fentry != fexit {
                wrong.push(format!(
                    "ICMP demo: {fentry} fentry and {fexit} fexit events, expected as many of each, at least one"
                ));
            }
            for e in &seen.packet_events {
                let fine = e.saddr == LOCALHOST
                    && e.daddr == LOCALHOST
                    && match e.probe_type {
                        PROBE_TYPE_FENTRY | PROBE_TYPE_FEXIT => e.verdict == TC_ACT_OK,
                        _ => false,
                    };
                if !fine {
                    wrong.push(format!(
                        "ICMP demo: an event {} -> {}, probe type {}, verdict {}; expected 127.0.0.1 -> 127.0.0.1, fentry (1) or fexit (2), TC_ACT_OK (0)",
                        e.saddr, e.daddr, e.probe_type, e.verdict
                    ));
                }
            }
        }
        SeedCheck::SeccompLines { args, oops } => {
            const SIGSEGV: i32 = 11;
            let lines = &seen.trace_lines;
            if oops {
                let child_oops = seen
                    .kernel_oops
                    .iter()
                    .any(|l| l.contains(&format!("Comm: {SECCOMP_DEMO_COMM}")));
                if seen.child_signal != Some(SIGSEGV) || !child_oops {
                    wrong.push(format!(
                        "seccomp demo: expected the kernel to oops in the child (killed by SIGSEGV, an oops naming {SECCOMP_DEMO_COMM}), got signal {} and {} oops line(s)",
                        opt(seen.child_signal),
                        seen.kernel_oops.len()
                    ));
                }
            } else if let Some(signal) = seen.child_signal {
                wrong.push(format!(
                    "seccomp demo: the child was killed by signal {signal}{}",
                    seen.kernel_oops
                        .first()
                        .map(|l| format!(" ({l})"))
                        .unwrap_or_default()
                ));
            }
            let has = |pred: &dyn Fn(&str) -> bool| lines.iter().any(|l| pred(l));
            // bpf_trace_printk's %d prints the low 32 bits as an int.
            let int = |v: u64| v as u32 as i32;
            for name in ["write", "read", "open", "getpid"] {
                let Some(call) = seen.syscalls.iter().find(|c| c.name == name) else {
                    wrong.push(format!("seccomp demo: the child made no {name} call"));
                    continue;
                };
                let arg = |i: usize| call.args.get(i).copied().unwrap_or(0);
                let fall_through = format!("syscall={} common={SECCOMP_DEMO_COMM}", call.nr);
                if name == "getpid" && oops {
                    if has(&|l| l == fall_through) {
                        wrong.push(format!(
                            "seccomp demo: \"{fall_through}\": the child got past open(), expected the kernel to oops there"
                        ));
                    }
                    continue;
                }
                if name == "getpid" {
                    if !has(&|l| l == fall_through) {
                        wrong.push(format!(
                            "seccomp demo: no fall-through line \"{fall_through}\" for getpid (no program at {})",
                            call.nr
                        ));
                    }
                    continue;
                }
                if has(&|l| l == fall_through) {
                    wrong.push(format!(
                        "seccomp demo: \"{fall_through}\": {name} fell through, its tail call into progs[{}] was not taken",
                        call.nr
                    ));
                }
                let (prefix, suffix) = match (name, args) {
                    ("open", true) => (format!("open(fd={}, path=", int(arg(0))), String::new()),
                    ("open", false) => ("open(fd=0, path=".to_string(), String::new()),
                    (_, true) => (
                        format!("{name}(fd={}, buf=", int(arg(0))),
                        format!(", size={})", int(arg(2))),
                    ),
                    (_, false) => {
                        if has(&|l| l.starts_with(&format!("{name}("))) {
                            wrong.push(format!(
                                "seccomp demo: a {name} line, expected none: its program reads a NULL seccomp_data, so its size check fails"
                            ));
                        }
                        continue;
                    }
                };
                if !has(&|l| l.starts_with(&prefix) && l.ends_with(&suffix)) {
                    wrong.push(format!(
                        "seccomp demo: no line \"{prefix}...{suffix}\" from {name}'s program"
                    ));
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
            if let Some(seed) = c.seed {
                s += &format!(", {}", seed.describe());
            }
            s
        }
        ExpectedOutcome::Unsupported { reason } => format!("unsupported: {reason}"),
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
        Outcome::NotLoadable { reason } => format!("not loadable by bpfmatrix: {reason}"),
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
    use bpfmatrix_protocol::{Measured, VerdictObservation};
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
                    ExpectedOutcome::Accepted(_) | ExpectedOutcome::Unsupported { .. } => continue,
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

    fn seed_record(case: CaseId, seed: SeedObserved) -> CaseRecord {
        record(
            case,
            JitMode::Jit,
            Outcome::Accepted,
            Measured {
                seed: Some(Box::new(seed)),
                ..Measured::default()
            },
        )
    }

    #[test]
    fn the_seed_demos_follow_the_feature_table() {
        use bpfmatrix_protocol::CaseId::{
            SeedFentryFexitTcIcmp as Icmp, SeedSeccompTailCall as Seccomp,
            SeedTcpconnTailCall as Tcpconn,
        };
        // No kernel BTF before 5.4: the tcp_connect demo's CO-RE cannot relocate.
        for jit in JitMode::ALL {
            let e = expected(Tcpconn, jit, v("4.16"));
            assert_eq!(
                e.outcome,
                ExpectedOutcome::Unsupported {
                    reason: NO_KERNEL_BTF.into()
                }
            );
            assert!(e.because.contains("341dfcf8d78e"), "{}", e.because);
        }
        for ver in ["5.4", "5.10", "6.1"] {
            assert!(matches!(
                expected(Tcpconn, JitMode::Interpreter, v(ver)).outcome,
                ExpectedOutcome::Accepted(Checks {
                    seed: Some(SeedCheck::Connections),
                    ..
                })
            ));
        }
        // The ICMP tracer is fentry on a tc program: the fentry rules.
        assert_eq!(
            expected(Icmp, JitMode::Jit, v("5.4")).outcome,
            rejected(Icmp, E2BIG, None)
        );
        assert_eq!(
            expected(Icmp, JitMode::Interpreter, v("6.12")).outcome,
            rejected(Icmp, EINVAL, Some(msg::ONLY_JITED_TARGETS))
        );
        assert!(matches!(
            expected(Icmp, JitMode::Jit, v("6.1")).outcome,
            ExpectedOutcome::Accepted(Checks {
                seed: Some(SeedCheck::IcmpTraced),
                ..
            })
        ));
        // The seccomp demo runs everywhere; from 5.9 its programs read zeros, and
        // from 6.9 the interpreter's stack is too small for them.
        let lines = |jit, ver| match expected(Seccomp, jit, v(ver)).outcome {
            ExpectedOutcome::Accepted(Checks {
                seed: Some(SeedCheck::SeccompLines { args, oops }),
                ..
            }) => (args, oops),
            other => panic!("{other:?}"),
        };
        for jit in JitMode::ALL {
            for ver in ["4.16", "5.4", "5.8"] {
                assert_eq!(lines(jit, ver), (true, false), "{jit} {ver}");
            }
            for ver in ["5.9", "5.10", "6.1", "6.8"] {
                assert_eq!(lines(jit, ver), (false, false), "{jit} {ver}");
            }
        }
        for ver in ["6.9", "6.12", "7.2"] {
            assert_eq!(lines(JitMode::Jit, ver), (false, false));
            assert_eq!(lines(JitMode::Interpreter, ver), (false, true));
        }
        assert!(expected(Seccomp, JitMode::Jit, v("5.10"))
            .because
            .contains("27d6b4d14f5c"));
        assert!(expected(Seccomp, JitMode::Interpreter, v("6.12"))
            .because
            .contains("011832b97b31"));
    }

    #[test]
    fn the_agreeing_observations_agree() {
        for check in [
            SeedCheck::Connections,
            SeedCheck::IcmpTraced,
            SeedCheck::SeccompLines {
                args: true,
                oops: false,
            },
            SeedCheck::SeccompLines {
                args: false,
                oops: false,
            },
            SeedCheck::SeccompLines {
                args: false,
                oops: true,
            },
        ] {
            let mut wrong = Vec::new();
            check_seed(check, &agreeing_observation(check), &mut wrong);
            assert!(wrong.is_empty(), "{check:?}: {wrong:?}");
        }
    }

    #[test]
    fn an_unsupported_cell_must_say_what_the_kernel_lacks() {
        let case = CaseId::SeedTcpconnTailCall;
        let e = expected(case, JitMode::Jit, v("4.16"));
        let said = |reason: &str| {
            record(
                case,
                JitMode::Jit,
                Outcome::Unsupported {
                    reason: reason.into(),
                },
                Measured::default(),
            )
        };
        assert_eq!(
            check(&e, &said("no kernel BTF (/sys/kernel/btf/vmlinux): handle_new_connection's CO-RE reads cannot be relocated")),
            Ok(())
        );
        let errs = check(
            &e,
            &said("kprobe target tcp_connect is not in /proc/kallsyms"),
        )
        .unwrap_err();
        assert!(
            errs[0].starts_with("unsupported: expected the reason"),
            "{errs:?}"
        );
        let accepted = seed_record(case, SeedObserved::default());
        assert!(check(&e, &accepted).unwrap_err()[0].starts_with("outcome: expected unsupported"));
        // And a kernel with BTF that says it has none disagrees.
        let e = expected(case, JitMode::Jit, v("5.10"));
        assert!(check(&e, &said(NO_KERNEL_BTF)).is_err());
    }

    #[test]
    fn the_tcp_connect_demo_must_show_both_connections() {
        use bpfmatrix_protocol::TcpPorts;
        let case = CaseId::SeedTcpconnTailCall;
        let e = expected(case, JitMode::Jit, v("6.1"));
        let lo = Ipv4Addr::LOCALHOST;
        let ev = |sport, dport| ConnEvent {
            saddr: lo,
            daddr: lo,
            sport,
            dport,
        };
        let seen = |events| SeedObserved {
            tcp_ports: Some(TcpPorts {
                listener: 40000,
                client: 50000,
            }),
            conn_events: events,
            ..SeedObserved::default()
        };
        let both = vec![ev(50000, 40000), ev(40000, 50000)];
        assert_eq!(check(&e, &seed_record(case, seen(both))), Ok(()));
        let errs = check(&e, &seed_record(case, seen(vec![ev(50000, 40000)]))).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("accepted connection"), "{errs:?}");
        // Ports swapped in the outgoing event: wrong fields read.
        let errs = check(
            &e,
            &seed_record(case, seen(vec![ev(40000, 50000), ev(40000, 50000)])),
        )
        .unwrap_err();
        assert!(errs[0].contains("outgoing connection"), "{errs:?}");
        let mut none = seed_record(case, SeedObserved::default());
        assert!(check(&e, &none).is_err());
        none.measured.seed = None;
        assert!(check(&e, &none).unwrap_err()[0].contains("no observations"));
    }

    #[test]
    fn the_icmp_demo_must_trace_the_echo_with_its_verdict() {
        use bpfmatrix_protocol::{IcmpEcho, PacketEvent};
        let case = CaseId::SeedFentryFexitTcIcmp;
        let e = expected(case, JitMode::Jit, v("6.12"));
        let lo = Ipv4Addr::LOCALHOST;
        let ev = |probe_type, verdict| PacketEvent {
            saddr: lo,
            daddr: lo,
            probe_type,
            verdict,
        };
        let seen = |events, replies| SeedObserved {
            icmp_echo: Some(IcmpEcho {
                requests: 1,
                replies,
            }),
            packet_events: events,
            ..SeedObserved::default()
        };
        let good = vec![ev(1, 0), ev(2, 0), ev(1, 0), ev(2, 0)];
        assert_eq!(check(&e, &seed_record(case, seen(good.clone(), 1))), Ok(()));
        assert!(check(&e, &seed_record(case, seen(good, 0))).is_err());
        let shot = vec![ev(1, 0), ev(2, 2)];
        assert!(check(&e, &seed_record(case, seen(shot, 1))).unwrap_err()[0].contains("verdict 2"));
        let no_fexit = vec![ev(1, 0)];
        assert!(check(&e, &seed_record(case, seen(no_fexit, 1))).is_err());
    }

    #[test]
    fn the_seccomp_demo_must_print_each_programs_line() {
        use bpfmatrix_protocol::SyscallMade;
        let case = CaseId::SeedSeccompTailCall;
        let call = |name: &str, nr, args: Vec<u64>| SyscallMade {
            name: name.into(),
            nr,
            args,
            ret: Some(0),
        };
        let calls = vec![
            call("write", 1, vec![4, 0x7ffd_1234_0000, 5]),
            call("read", 0, vec![3, 0x7ffd_1234_0010, 5]),
            call("open", 2, vec![0x5555_9abc_def0, 0]),
            call("getpid", 39, vec![]),
        ];
        let seen = |lines: &[&str]| SeedObserved {
            syscalls: calls.clone(),
            trace_lines: lines.iter().map(|l| l.to_string()).collect(),
            ..SeedObserved::default()
        };
        // 0x9abcdef0 printed by %d: -1698898192.
        let with_args = [
            "write(fd=4, buf=00000000a1b2c3d4, size=5)",
            "read(fd=3, buf=00000000e5f60718, size=5)",
            "open(fd=-1698898192, path=(null))",
            "syscall=39 common=seccomp-demo",
            "syscall=231 common=seccomp-demo",
        ];
        let e = expected(case, JitMode::Jit, v("5.4"));
        assert_eq!(check(&e, &seed_record(case, seen(&with_args))), Ok(()));
        let errs = check(&e, &seed_record(case, seen(&with_args[1..]))).unwrap_err();
        assert_eq!(
            errs,
            vec!["seccomp demo: no line \"write(fd=4, buf=..., size=5)\" from write's program"]
        );
        // A tail call not taken: the kprobe's own line for write.
        let mut fell = with_args.to_vec();
        fell.push("syscall=1 common=seccomp-demo");
        assert!(check(&e, &seed_record(case, seen(&fell))).unwrap_err()[0].contains("fell through"));
        // From 5.9 the programs see zeros: no write or read line, open's fd is 0.
        let e = expected(case, JitMode::Jit, v("6.1"));
        let zeros = ["open(fd=0, path=(null))", "syscall=39 common=seccomp-demo"];
        assert_eq!(check(&e, &seed_record(case, seen(&zeros))), Ok(()));
        let errs = check(&e, &seed_record(case, seen(&with_args))).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        // A child killed where no oops is expected.
        let mut killed = seen(&zeros);
        killed.child_signal = Some(11);
        assert!(check(&e, &seed_record(case, killed)).unwrap_err()[0].contains("signal 11"));
        // From 6.9 with the interpreter: open's line, then the kernel's oops.
        let e = expected(case, JitMode::Interpreter, v("6.12"));
        let mut rec = seed_record(case, seen(&["open(fd=0, path=0000000000000000)"]));
        rec.jit = JitMode::Interpreter;
        rec.measured.bpf_jit_enable = Some("0".into());
        rec.measured.jited_bytes = BTreeMap::from([("prog".to_string(), 0)]);
        let crashed = |signal: Option<i32>, oops: &[&str]| {
            let mut r = rec.clone();
            let seed = r.measured.seed.as_mut().unwrap();
            seed.child_signal = signal;
            seed.kernel_oops = oops.iter().map(|l| l.to_string()).collect();
            r
        };
        let oops = [
            "Oops: general protection fault: 0000 [#1] PREEMPT SMP NOPTI",
            "CPU: 0 UID: 0 PID: 125 Comm: seccomp-demo Not tainted 6.12.117+deb13-amd64 #1",
        ];
        assert_eq!(check(&e, &crashed(Some(11), &oops)), Ok(()));
        assert!(
            check(&e, &crashed(None, &[])).unwrap_err()[0].contains("expected the kernel to oops")
        );
        assert!(check(&e, &crashed(Some(9), &oops)).is_err());
    }
}
