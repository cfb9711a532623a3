//! The contract between host and guest: which cases exist, what the host asks the
//! guest to run (a [`Plan`]), and the one typed result format the guest agent sends
//! home ([`GuestMessage`], one JSON object per line on the result port).
//!
//! The BPF C programs live beside this crate in `probes/bpf/`; the guest agent that
//! loads them with aya lives in `probes/agent/`. The host never links aya: it only
//! needs these types.
//!
//! # Words
//!
//! bpfmatrix uses one word for each thing, here, on the host, in `matrix.json` and
//! in every report:
//!
//! - **case**: one question asked of the kernel ([`CaseId`]), run once per **JIT
//!   mode** ([`JitMode`]); a **cell** is one kernel x JIT mode x case, and the
//!   **matrix** is every cell of every kernel (the host's `matrix::Matrix`, written
//!   out as `matrix.json`).
//! - **outcome**: what the guest saw when it ran a case: accepted, rejected (the
//!   refused step, the errno, the verifier's words), unsupported, or an error of the
//!   agent itself ([`Outcome`]). With what it **measured** ([`Measured`]) it makes
//!   the guest's **record** of the case ([`CaseRecord`]), sent home as it is.
//! - **expectation**: what the documented kernel facts say the outcome and the
//!   measured values of a cell should be (the host's `expect::Expectation`, derived
//!   from `harness/features.toml`).
//! - **verdict**: whether outcome and expectation agree: agrees, disagrees (with
//!   each difference), or no answer (no record, or no expectation for the kernel)
//!   (the host's `matrix::Verdict`). Only the host gives verdicts, in one place
//!   (`matrix::Cell::judge`), and gives them again whenever it reads a
//!   `matrix.json`; the guest never judges.
//! - **run status**: what became of a kernel's run as a whole: completed,
//!   unavailable (the kernel could not be had), or failed (the host's
//!   `matrix::RunStatus`). How the VM's boot ended (`bpfmatrix_vm`'s `BootEnd`:
//!   powered off, panicked, timed out...) is one of the things it is decided from.
//!
//! The tc programs of the `fentry_fexit_tc` cases return a **tc verdict**
//! (`TC_ACT_OK`, `TC_ACT_SHOT`) that fexit observes ([`VerdictObservation`],
//! [`Measured::verdicts`]): always called the tc verdict, it is a measured value,
//! never a verdict in the sense above. A [`Fault`] is a misbehaviour the fault suite
//! asks of the agent, not a result.

pub mod verifier_log;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// Bumped whenever a message or plan changes shape; the host refuses other versions.
pub const PROTOCOL_VERSION: u32 = 7;

/// Where the host puts the plan inside the initramfs.
pub const PLAN_PATH: &str = "/bpfmatrix/plan.json";

/// Where the host puts the [`BootConfig`] of a guest that waits for its plan on
/// the result port (the guests bpfmatrix saves and restores; see [`GuestMessage::Ready`]).
pub const BOOT_CONFIG_PATH: &str = "/bpfmatrix/boot.json";

/// What a guest that waits for its plan needs before it has one: everything about
/// it that does not depend on the plan, so its saved state serves every plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    pub protocol: u32,
    /// Names the agent build (the host's hash of it); the agent repeats it in
    /// `Ready` and `Hello`, so a guest restored from another build's state is
    /// known for what it is.
    pub agent_id: String,
    /// Kernel modules to load before saying ready, as [`Plan::modules`].
    pub modules: Vec<String>,
    /// The result port, where the agent also reads its plan.
    pub result_port: String,
    /// The guest is for `bpfmatrix exec`: the command's root, all of it but
    /// the host's share (which cannot be mounted in a saved guest), is made
    /// before ready.
    #[serde(default)]
    pub exec_root: bool,
}

/// What the host sends a waiting agent on the result port: this as one JSON line,
/// then each object of the plan zlib-compressed (RFC 1950), back to back,
/// `object_bytes` long each (the port is raw: no other encoding). The UART
/// carries about 3 µs a byte to a TCG guest, and BPF objects shrink 3x to 5x:
/// an 82 KB object took 5.10 260 ms as it is, 35 ms compressed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PlanDelivery {
    pub plan: Plan,
    /// Each object's compressed length: the bytes that follow the line.
    pub object_bytes: Vec<u64>,
    /// Each object's own length, which its decompressed bytes must have.
    pub object_sizes: Vec<u64>,
}

/// Where the host puts the user's objects (`bpfmatrix check`) inside the initramfs;
/// each plan [`ObjectSpec::path`] is under it.
pub const OBJECTS_DIR: &str = "/bpfmatrix/objects";

/// The most bytes of user objects one guest carries (they live in the guest's RAM,
/// inside the initramfs): `bpfmatrix check` refuses more before any boot.
pub const MAX_OBJECTS_BYTES: u64 = 64 << 20;

/// The most bytes of one program's verifier log a [`ProgramRecord`] keeps (the
/// end of the log, where the refusal is). It crosses a UART that carries about
/// 130-200 KB/s under TCG, and each record is one line of at most
/// [`MAX_LINE_BYTES`].
pub const MAX_VERIFIER_LOG_BYTES: usize = 64 * 1024;

const _: () = assert!(MAX_VERIFIER_LOG_BYTES * 2 < MAX_LINE_BYTES);

/// Longest line the host accepts from the guest; anything longer is garbage.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Length of the frame every BPF_PROG_TEST_RUN case feeds its tc programs
/// (Ethernet + IPv4 + UDP).
pub const TEST_FRAME_LEN: usize = 64;

/// What `bpf2bpf.control`'s `__noinline` subprogram returns for a frame of `len`
/// bytes (probes/bpf/bpf2bpf_tail_mix.c computes `len * 3 + 7`): a value only the
/// subprogram call can produce.
pub const fn control_retval(len: u32) -> u32 {
    len * 3 + 7
}

/// What `tail_call.empty_slot`'s program returns once it has run past its failed
/// tail call (probes/bpf/tail_call.c, FELL_THROUGH_RETVAL).
pub const EMPTY_SLOT_RETVAL: u32 = 0x5a;

/// How a case's programs are executed: by the x86_64 JIT or by the interpreter
/// (`net.core.bpf_jit_enable` = 1 or 0 while the programs are loaded).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum JitMode {
    Jit,
    Interpreter,
}

impl JitMode {
    pub const ALL: [JitMode; 2] = [JitMode::Jit, JitMode::Interpreter];

    pub fn as_str(self) -> &'static str {
        match self {
            JitMode::Jit => "jit",
            JitMode::Interpreter => "interpreter",
        }
    }

    /// The value written to `/proc/sys/net/core/bpf_jit_enable`.
    pub fn sysctl_value(self) -> &'static str {
        match self {
            JitMode::Jit => "1",
            JitMode::Interpreter => "0",
        }
    }
}

impl fmt::Display for JitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every case the agent knows. One case = one question asked of the kernel; the
/// probe C source that answers it is named by [`CaseId::object`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CaseId {
    /// An entry program tail-calls through a PROG_ARRAY into a program that counts
    /// its runs and tail-calls itself until the kernel stops it. Measures the limit.
    #[serde(rename = "tail_call.chain")]
    TailCallChain,
    /// A tail call to an empty PROG_ARRAY slot falls through to the next instruction.
    #[serde(rename = "tail_call.empty_slot")]
    TailCallEmptySlot,
    /// A plain bpf2bpf subprogram call, no tail call: the control for the mix cases.
    #[serde(rename = "bpf2bpf.control")]
    Bpf2bpfControl,
    /// A `__noinline` subprogram makes the tail call (bpf2bpf mixed with tail calls).
    #[serde(rename = "bpf2bpf.tail_call_in_subprog")]
    Bpf2bpfTailCallInSubprog,
    /// As above, but the caller's frame is 320 bytes: over the 256-byte limit.
    #[serde(rename = "bpf2bpf.big_caller_frame")]
    Bpf2bpfBigCallerFrame,
    /// A 224-byte caller frame (7 x 32): just under the limit.
    #[serde(rename = "bpf2bpf.caller_frame_224")]
    Bpf2bpfCallerFrame224,
    /// A 240-byte caller frame, which the verifier rounds up to 256: at the limit.
    #[serde(rename = "bpf2bpf.caller_frame_240")]
    Bpf2bpfCallerFrame240,
    /// fentry + fexit attached to a tc program, triggered by BPF_PROG_TEST_RUN.
    #[serde(rename = "fentry_fexit_tc.test_run")]
    FentryTcTestRun,
    /// fentry + fexit attached to a tc program at clsact ingress on loopback,
    /// triggered by real UDP packets.
    #[serde(rename = "fentry_fexit_tc.loopback")]
    FentryTcLoopback,
    /// The tail-call notes' demo: kprobes on tcp_connect and
    /// inet_csk_complete_hashdance tail-call handle_new_connection, which reads
    /// the sock with CO-RE and reports each connection through a perf event array.
    #[serde(rename = "seed.tcpconn_tail_call")]
    SeedTcpconnTailCall,
    /// The fentry/fexit-on-tc article's demo: its tc program at clsact ingress on
    /// lo, traced by its fentry and fexit programs during an ICMP echo.
    #[serde(rename = "seed.fentry_fexit_tc_icmp")]
    SeedFentryFexitTcIcmp,
    /// The tail-call-vs-bpf2bpf article's demo (tracex5 in CO-RE): a kprobe on
    /// __seccomp_filter tail-calls into one program per syscall number, each
    /// printing the call's arguments with bpf_trace_printk.
    #[serde(rename = "seed.seccomp_tail_call")]
    SeedSeccompTailCall,
}

impl CaseId {
    pub const ALL: [CaseId; 12] = [
        CaseId::TailCallChain,
        CaseId::TailCallEmptySlot,
        CaseId::Bpf2bpfControl,
        CaseId::Bpf2bpfTailCallInSubprog,
        CaseId::Bpf2bpfBigCallerFrame,
        CaseId::Bpf2bpfCallerFrame224,
        CaseId::Bpf2bpfCallerFrame240,
        CaseId::FentryTcTestRun,
        CaseId::FentryTcLoopback,
        CaseId::SeedTcpconnTailCall,
        CaseId::SeedFentryFexitTcIcmp,
        CaseId::SeedSeccompTailCall,
    ];

    /// The stable name used in JSON, trial names and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseId::TailCallChain => "tail_call.chain",
            CaseId::TailCallEmptySlot => "tail_call.empty_slot",
            CaseId::Bpf2bpfControl => "bpf2bpf.control",
            CaseId::Bpf2bpfTailCallInSubprog => "bpf2bpf.tail_call_in_subprog",
            CaseId::Bpf2bpfBigCallerFrame => "bpf2bpf.big_caller_frame",
            CaseId::Bpf2bpfCallerFrame224 => "bpf2bpf.caller_frame_224",
            CaseId::Bpf2bpfCallerFrame240 => "bpf2bpf.caller_frame_240",
            CaseId::FentryTcTestRun => "fentry_fexit_tc.test_run",
            CaseId::FentryTcLoopback => "fentry_fexit_tc.loopback",
            CaseId::SeedTcpconnTailCall => "seed.tcpconn_tail_call",
            CaseId::SeedFentryFexitTcIcmp => "seed.fentry_fexit_tc_icmp",
            CaseId::SeedSeccompTailCall => "seed.seccomp_tail_call",
        }
    }

    /// The probe object (probes/bpf/<object>.c) whose programs the case loads.
    pub fn object(self) -> &'static str {
        match self {
            CaseId::TailCallChain | CaseId::TailCallEmptySlot => "tail_call",
            CaseId::Bpf2bpfControl
            | CaseId::Bpf2bpfTailCallInSubprog
            | CaseId::Bpf2bpfBigCallerFrame
            | CaseId::Bpf2bpfCallerFrame224
            | CaseId::Bpf2bpfCallerFrame240 => "bpf2bpf_tail_mix",
            CaseId::FentryTcTestRun | CaseId::FentryTcLoopback => "fentry_tc",
            CaseId::SeedTcpconnTailCall => "seed_tcpconn",
            CaseId::SeedFentryFexitTcIcmp => "seed_fentry_fexit_tc",
            CaseId::SeedSeccompTailCall => "seed_seccomp",
        }
    }

    /// The program whose load is the case's question: a refusal of this program is
    /// the case's verdict (a refusal of any other step is a finding of its own).
    pub fn program(self) -> &'static str {
        match self {
            CaseId::TailCallChain => "chain_entry",
            CaseId::TailCallEmptySlot => "empty_slot",
            CaseId::Bpf2bpfControl => "control_entry",
            CaseId::Bpf2bpfTailCallInSubprog => "mix_entry",
            CaseId::Bpf2bpfBigCallerFrame => "big_frame_entry",
            CaseId::Bpf2bpfCallerFrame224 => "frame224_entry",
            CaseId::Bpf2bpfCallerFrame240 => "frame240_entry",
            // The tc program is plain; the tracer attached to it is the question.
            CaseId::FentryTcTestRun | CaseId::FentryTcLoopback => "fentry_tc",
            // The tail-call target that reads the sock with CO-RE.
            CaseId::SeedTcpconnTailCall => "handle_new_connection",
            // As above: the tracer of the article's tc program.
            CaseId::SeedFentryFexitTcIcmp => "fentry_tc",
            // The kprobe that tail-calls into the per-syscall programs.
            CaseId::SeedSeccompTailCall => "__seccomp_filter",
        }
    }

    /// The seed article whose demo the case runs, for the seed demos.
    pub fn seed_article(self) -> Option<SeedArticle> {
        match self {
            CaseId::SeedTcpconnTailCall => Some(SeedArticle {
                name: "tail-call-notes-zh",
                title: "bpf_tail_call() notes (zh): bpf_tail_call() 例子一则, the tcp connection demo",
                link: None,
            }),
            CaseId::SeedFentryFexitTcIcmp => Some(SeedArticle {
                name: "fentry-fexit-on-tc-zh",
                title: "eBPF Talk: tracing a tc-bpf program with fentry/fexit (zh), trace tc-bpf 程序的 demo",
                link: Some("https://github.com/Asphaltt/learn-by-example/tree/main/ebpf/fentry_fexit-tc"),
            }),
            CaseId::SeedSeccompTailCall => Some(SeedArticle {
                name: "tail-call-vs-bpf2bpf-en",
                title: "Tail calls and BPF to BPF calls (Richard Li), 4. CO-RE Sample: tracex5 on __seccomp_filter",
                link: Some("https://www.ebpf.top/post/bpf2pbpf_tail_call"),
            }),
            _ => None,
        }
    }

    /// The step name the agent reports when the kernel refuses to load [`Self::program`].
    pub fn load_step(self) -> String {
        format!("load {}", self.program())
    }

    /// The caller frame the case is about (probes/bpf/bpf2bpf_tail_mix.c), for the
    /// caller-frame cases. This is the case's intent, used to name it and to notice
    /// a compiler that laid the frame out differently; expectations use the frame
    /// the compiled object really has ([`Measured::caller_frame_bytes`]).
    pub fn caller_frame_bytes(self) -> Option<u32> {
        match self {
            CaseId::Bpf2bpfBigCallerFrame => Some(320),
            CaseId::Bpf2bpfCallerFrame224 => Some(224),
            CaseId::Bpf2bpfCallerFrame240 => Some(240),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<CaseId> {
        CaseId::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the articles the project grew from, whose demo a seed case runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedArticle {
    /// The article's short name (its file among the project's seed articles).
    pub name: &'static str,
    /// Its title and the demo's section, as a reader would look for it.
    pub title: &'static str,
    /// Where it (or its demo's source) is published, when known.
    pub link: Option<&'static str>,
}

/// How a case that needs CO-RE says the kernel has no BTF to relocate against
/// (the start of its `Unsupported` reason).
pub const NO_KERNEL_BTF: &str = "no kernel BTF (/sys/kernel/btf/vmlinux)";

/// The name seed.seccomp_tail_call's child process gives itself (PR_SET_NAME), so
/// the article's fall-through line ("syscall=%d common=%s") names it.
pub const SECCOMP_DEMO_COMM: &str = "seccomp-demo";

/// The article's probe types in seed.fentry_fexit_tc_icmp's events (its
/// `enum probing_type`).
pub const PROBE_TYPE_FENTRY: u8 = 1;
pub const PROBE_TYPE_FEXIT: u8 = 2;

/// A test-only behaviour of the agent, used by the fault suite to prove the host
/// gives every misbehaving guest a verdict. Never set by a normal run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Crash the kernel through sysrq after saying hello.
    Panic,
    /// Sleep forever after saying hello.
    Hang,
    /// Write lines that are not protocol messages (text, a record cut in half, a
    /// record for a case the plan did not ask for), then finish normally.
    Garbage,
    /// After saying hello, send one well-formed warning message of
    /// [`ENORMOUS_LINE_BYTES`] (far over [`MAX_LINE_BYTES`]) as a single line, then
    /// finish normally.
    EnormousLine,
    /// After saying hello, send [`FLOOD_BYTES`] of well-formed warning lines (more
    /// than the host accepts from one guest), then finish normally.
    Flood,
    /// Send nothing at all on the result port, not even the hello, and power off.
    Silent,
    /// Run the plan, but send the last record only half written, without its
    /// newline and without `Done`, then power off: a guest dying mid-line.
    CutShort,
    /// Stop dead before a word on either port, as a kernel that dies early does:
    /// PID 1 sleeps forever and the console falls silent.
    DeadBeforeHello,
    /// A guest that waits for its plan reads it, then stops dead without its
    /// hello: a guest restored from a saved state that never answers.
    HangBeforeHello,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::Panic,
        Fault::Hang,
        Fault::Garbage,
        Fault::EnormousLine,
        Fault::Flood,
        Fault::Silent,
        Fault::CutShort,
        Fault::DeadBeforeHello,
        Fault::HangBeforeHello,
    ];
}

/// The length of [`Fault::EnormousLine`]'s line: 1 MiB, 4 times [`MAX_LINE_BYTES`].
/// (The result port is a 16550 UART: under TCG it carries about 130 KB/s, so 1 MiB
/// already costs the boot 8 s.)
pub const ENORMOUS_LINE_BYTES: usize = 1 << 20;

const _: () = assert!(ENORMOUS_LINE_BYTES >= 4 * MAX_LINE_BYTES);

/// How much [`Fault::Flood`] writes: 24 MiB, over the host's 16 MiB per boot. (At
/// the UART's 130 KB/s under TCG that takes minutes: a boot deadline shorter than
/// that ends the flood first.)
pub const FLOOD_BYTES: usize = 24 << 20;

/// What the host asks the guest to do; written to [`PLAN_PATH`] in the initramfs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub protocol: u32,
    /// Cases to run, in order, once per JIT mode.
    pub cases: Vec<CaseId>,
    /// JIT modes to run, in order.
    pub jit_modes: Vec<JitMode>,
    /// Kernel modules to load before any case (paths inside the initramfs), in
    /// dependency order: sch_ingress and cls_bpf for clsact on pre-TCX kernels.
    pub modules: Vec<String>,
    /// The device the agent writes its JSON lines to (the second serial port).
    pub result_port: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The user's objects (`bpfmatrix check`): every program of each is loaded on
    /// its own, once per JIT mode, after the cases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectSpec>,
    /// The user's command (`bpfmatrix exec`), run once per JIT mode after the
    /// cases (an exec plan has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecSpec>,
}

/// A command the guest runs as root (`bpfmatrix exec`), in the host's own
/// filesystem: the host shares its root read-only over virtio-9p under
/// [`HOST_ROOT_TAG`], and the command runs chrooted into it, with the guest's own
/// /proc, /sys, /dev, and a private writable /tmp and /run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExecSpec {
    /// The program and its arguments; a program without a `/` is looked up in
    /// the `PATH` of `env`.
    pub argv: Vec<String>,
    /// The working directory, the host's own.
    pub cwd: String,
    /// The whole environment of the command.
    pub env: Vec<(String, String)>,
    /// The host's folder of the kernel's modules (`.../lib/modules/RELEASE`, with
    /// its modules.dep), shown to the command under a root of its own that
    /// `MODPROBE_OPTIONS=-d` points modprobe at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules_dir: Option<String>,
}

/// The virtio-9p mount tag of the host's root in a guest that runs a command.
pub const HOST_ROOT_TAG: &str = "bpfmatrix-host";

/// The most bytes of a command's output a guest sends home per JIT mode; past it
/// the rest is read and dropped, and the guest says how much. It crosses the UART
/// JSON-encoded, up to 6 times longer (a control byte is `\u0000`), and the host
/// takes at most 16 MiB from a guest (`bpfmatrix_vm::qemu::MAX_RESULT_BYTES`):
/// two modes of 1 MiB stay under it. 8 MiB of 3 MB of zero bytes went over it.
pub const MAX_EXEC_OUTPUT_BYTES: u64 = 1 << 20;

const _: () = assert!(2 * 6 * MAX_EXEC_OUTPUT_BYTES < 16 << 20);

/// Which of a command's output streams.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One user object the guest carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The name records and reports use (the file's name, made unique in the
    /// plan by the host).
    pub name: String,
    /// Where the file is inside the guest, under [`OBJECTS_DIR`].
    pub path: String,
    /// The programs the host found in the object, in the object's order: the
    /// guest sends one [`ProgramRecord`] for each, per JIT mode.
    pub programs: Vec<String>,
}

/// One line from the guest. The first is always `Hello`, the last `Done`
/// (unless the guest dies, which the host reports as such).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GuestMessage {
    Hello {
        protocol: u32,
        /// [`BootConfig::agent_id`], for a guest that waited for its plan.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
        /// `uname -r` in the guest.
        kernel_release: String,
        /// Guest uptime when the agent started, in milliseconds.
        uptime_ms: u64,
    },
    /// A guest booted with a [`BootConfig`] is up (modules loaded, kernel BTF
    /// read) and waits for its [`PlanDelivery`] on the result port; the host may
    /// save its state now, and every guest restored from that state starts here.
    Ready {
        protocol: u32,
        agent_id: String,
        /// Guest uptime, milliseconds.
        uptime_ms: u64,
    },
    /// The agent switched `bpf_jit_enable` (or could not: then every case of the
    /// mode is an `Error` naming why, since no verdict of that mode can be trusted).
    JitMode {
        mode: JitMode,
        /// What `/proc/sys/net/core/bpf_jit_enable` read back after the write.
        sysctl_readback: Option<String>,
        error: Option<String>,
    },
    Case(CaseRecord),
    /// One program of a user object, in one JIT mode (`bpfmatrix check`).
    Program(ProgramRecord),
    /// Output of the plan's command, as it came (`bpfmatrix exec`): a chunk of
    /// one stream, lossily UTF-8.
    Output {
        jit: JitMode,
        stream: Stream,
        text: String,
    },
    /// How the plan's command ended in one JIT mode.
    Exited {
        jit: JitMode,
        /// Its exit code; 127 when it could not be started (`error` says why).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        /// The signal that killed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// Why it could not be started, or what went wrong around it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Output bytes dropped past [`MAX_EXEC_OUTPUT_BYTES`].
        #[serde(default, skip_serializing_if = "is_zero")]
        output_dropped: u64,
        duration_ms: u64,
    },
    /// A problem outside any case (a module that failed to load, a mount...).
    Warning {
        message: String,
    },
    Done {
        uptime_ms: u64,
    },
}

/// The guest's record of one case in one JIT mode: its outcome and what it
/// measured, the kernel's answer as the guest saw it (judged only by the host).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CaseRecord {
    pub case: CaseId,
    pub jit: JitMode,
    pub outcome: Outcome,
    #[serde(default)]
    pub measured: Measured,
    /// Guest time spent on the case, milliseconds.
    pub duration_ms: u64,
}

/// The outcome: what the guest saw when it ran a case. Whether the verifier
/// accepted the case's programs, in the kernel's own words when it did not.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Loaded (and attached where the case attaches) and ran.
    Accepted,
    /// The kernel refused a load or attach.
    Rejected {
        /// The refused step, e.g. "load mix_entry" or "load fentry_tc".
        step: String,
        errno: i32,
        /// The last lines of the verifier log (the kernel's own words), trimmed.
        verifier_tail: String,
    },
    /// The kernel lacks something the case needs (no BTF, no bpf_jit_enable...).
    Unsupported { reason: String },
    /// This loader cannot load the program, whatever the kernel: a program type
    /// it does not know, or one that needs a target program (freplace). Says
    /// nothing about the kernel.
    NotLoadable { reason: String },
    /// The harness itself failed (not a verdict about the kernel).
    Error { message: String },
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Unsupported { .. } => "unsupported",
            Outcome::NotLoadable { .. } => "not_loadable",
            Outcome::Error { .. } => "error",
        }
    }
}

/// How the tc program whose tc verdict fexit observes was run: by
/// BPF_PROG_TEST_RUN, or by real packets on loopback.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    TestRun,
    Loopback,
}

/// One tc verdict (`TC_ACT_*`, the tc program's return value) the tc program was
/// told to return, and what fexit saw.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VerdictObservation {
    pub trigger: Trigger,
    /// The verdict the tc program was configured to return (TC_ACT_OK 0, SHOT 2).
    pub configured: i32,
    /// What BPF_PROG_TEST_RUN reported as the return value (test_run only).
    pub returned: Option<i32>,
    /// The distinct values fexit recorded as ctx[1] for this step.
    pub fexit_saw: Vec<i64>,
    /// How many times fexit ran for this step.
    pub fexit_hits: u64,
    /// How many times fentry ran for this step.
    pub fentry_hits: u64,
    /// skb->len as fentry read it (last packet of the step).
    pub fentry_skb_len: Option<u32>,
    /// Packets sent and received on loopback (loopback only).
    pub packets_sent: Option<u32>,
    pub packets_received: Option<u32>,
}

/// The loopback TCP connection seed.tcpconn_tail_call made.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPorts {
    /// The listener's port (127.0.0.1).
    pub listener: u16,
    /// The client's ephemeral port (127.0.0.1).
    pub client: u16,
}

/// One event of seed.tcpconn_tail_call's perf event array, as
/// handle_new_connection filled it: the sock's local and remote addresses, its
/// local port (skc_num) and remote port (skc_dport, byte-swapped).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// The ICMP echo seed.fentry_fexit_tc_icmp sent to 127.0.0.1 from a raw socket.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpEcho {
    pub requests: u32,
    pub replies: u32,
}

/// One event of seed.fentry_fexit_tc_icmp's perf event array, as the article's
/// __handle_packet filled it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketEvent {
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    /// [`PROBE_TYPE_FENTRY`] or [`PROBE_TYPE_FEXIT`].
    pub probe_type: u8,
    /// The tc verdict fexit saw (fentry sends 0).
    pub verdict: u8,
}

/// A system call seed.seccomp_tail_call's child made under its seccomp filter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyscallMade {
    pub name: String,
    /// Its x86_64 number: the PROG_ARRAY slot the article's programs sit at.
    pub nr: u32,
    /// Its arguments, as passed.
    pub args: Vec<u64>,
    /// What it returned; none when the child never came back from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<i64>,
}

/// Numbers a case measured; each case fills the fields it has.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Measured {
    /// Tail calls actually taken before the kernel stopped the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail_calls: Option<u32>,
    /// Whether execution continued after a tail call to an empty slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fell_through: Option<bool>,
    /// The tc program's return value from BPF_PROG_TEST_RUN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retval: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<VerdictObservation>,
    /// The caller-frame cases: the stack bytes the caller's frame uses, read from
    /// the compiled object's instructions (the deepest r10-relative access), so the
    /// expectation follows what clang really built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_frame_bytes: Option<u32>,
    /// What `/proc/sys/net/core/bpf_jit_enable` read back when the case ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_jit_enable: Option<String>,
    /// `jited_prog_len` from bpf_prog_info of every program the case loaded, by
    /// name: the proof of the JIT mode (above 0 when JITed, 0 when interpreted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jited_bytes: BTreeMap<String, u32>,
    /// What verifying each accepted program of the case cost, by program name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub costs: BTreeMap<String, VerifierCost>,
    /// The seed demos: what the article's programs showed, and what the agent did
    /// to make them show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Box<SeedObserved>>,
}

/// The guest's record of one program of a user object in one JIT mode: its
/// outcome (a map the program uses that the kernel cannot create is a `Rejected`
/// whose step is `create map NAME`; a CO-RE program on a kernel without BTF is
/// `Unsupported`, "cannot relocate ..."), the verifier's log and its costs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProgramRecord {
    /// [`ObjectSpec::name`].
    pub object: String,
    /// The program's name (its function's symbol).
    pub program: String,
    /// Its ELF section ("xdp", "tracepoint/syscalls/sys_enter_openat"...), which
    /// says its type.
    pub section: String,
    pub jit: JitMode,
    pub outcome: Outcome,
    /// The verifier's log of the load: the full log on a refusal, the statistics
    /// lines on an acceptance; its last [`MAX_VERIFIER_LOG_BYTES`] at most.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verifier_log: String,
    /// How many bytes were cut from the start of `verifier_log`, when any were
    /// (by the kernel's buffer or by the cap). Exact from 6.4, whose kernel keeps
    /// a full log's end and says its whole size; before, a log that filled the
    /// buffer is known only to be at least that long, so this is a lower bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_cut_bytes: Option<u64>,
    /// What verifying and translating it cost, for an accepted program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<VerifierCost>,
    /// Guest time spent on the program, milliseconds.
    pub duration_ms: u64,
}

/// Where a cost figure came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The verifier's statistics lines ("processed N insns ...", "verification
    /// time N usec", "stack depth A+B"), asked for with log level 4 (BPF_LOG_STATS,
    /// 5.2+) or level 1 before it.
    VerifierLog,
    /// `bpf_prog_info` of the loaded program (BPF_OBJ_GET_INFO_BY_FD).
    ProgInfo,
}

/// One figure and where it came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figure {
    pub value: u64,
    pub from: CostSource,
}

/// What the verifier charged for a program and what it became. Every field is
/// absent, never zero, when this kernel does not report it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifierCost {
    /// Instructions the verifier processed ("processed N insns").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insns_processed: Option<Figure>,
    /// The same count as `bpf_prog_info.verified_insns` (5.16+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<Figure>,
    /// The kernel's limit on processed instructions, as the log states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insn_limit: Option<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_states_per_insn: Option<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_states: Option<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_states: Option<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_read: Option<Figure>,
    /// Stack bytes of each subprogram, the main program first ("stack depth 8+0").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack_depth: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_depth_from: Option<CostSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_usec: Option<Figure>,
    /// Size of the translated (verifier-rewritten) program, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlated_bytes: Option<Figure>,
    /// Size of the JITed image, bytes (0 when the interpreter runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jited_bytes: Option<Figure>,
}

/// What a seed demo observed; each seed case fills the fields it has.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedObserved {
    /// seed.tcpconn_tail_call: the connection the agent made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_ports: Option<TcpPorts>,
    /// seed.tcpconn_tail_call: every event the perf event array delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conn_events: Vec<ConnEvent>,
    /// seed.fentry_fexit_tc_icmp: the echo the agent sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_echo: Option<IcmpEcho>,
    /// seed.fentry_fexit_tc_icmp: every event the perf event array delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packet_events: Vec<PacketEvent>,
    /// Samples the perf event array reported lost (seed cases with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perf_lost: Option<u64>,
    /// seed.seccomp_tail_call: the calls the child made under its filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<SyscallMade>,
    /// seed.seccomp_tail_call: the child's bpf_trace_printk lines from tracefs,
    /// the message only (what follows the trace's own prefix), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace_lines: Vec<String>,
    /// seed.seccomp_tail_call: the signal that ended the child, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_signal: Option<i32>,
    /// seed.seccomp_tail_call: when a signal ended the child, the kernel's oops
    /// report for it, if the kernel log has one (the task dies with SIGSEGV when
    /// the kernel faults in its context): from the fault line to the end of the
    /// trace, timestamps removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_oops: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_round_trip_through_json_and_parse() {
        for case in CaseId::ALL {
            let json = serde_json::to_string(&case).unwrap();
            assert_eq!(json, format!("\"{}\"", case.as_str()));
            assert_eq!(serde_json::from_str::<CaseId>(&json).unwrap(), case);
            assert_eq!(CaseId::parse(case.as_str()), Some(case));
        }
        assert_eq!(CaseId::parse("tail_call"), None);
    }

    #[test]
    fn the_seed_cases_name_their_articles_and_only_they_do() {
        for case in CaseId::ALL {
            let seed = case.as_str().starts_with("seed.");
            assert_eq!(case.seed_article().is_some(), seed, "{case}");
        }
        let names: Vec<&str> = CaseId::ALL
            .iter()
            .filter_map(|c| c.seed_article())
            .map(|a| a.name)
            .collect();
        assert_eq!(
            names,
            [
                "tail-call-notes-zh",
                "fentry-fexit-on-tc-zh",
                "tail-call-vs-bpf2bpf-en"
            ]
        );
    }

    #[test]
    fn seed_observations_round_trip_and_stay_out_of_other_records() {
        let seed = SeedObserved {
            tcp_ports: Some(TcpPorts {
                listener: 40000,
                client: 50000,
            }),
            conn_events: vec![ConnEvent {
                saddr: Ipv4Addr::LOCALHOST,
                daddr: Ipv4Addr::LOCALHOST,
                sport: 50000,
                dport: 40000,
            }],
            packet_events: vec![PacketEvent {
                saddr: Ipv4Addr::LOCALHOST,
                daddr: Ipv4Addr::LOCALHOST,
                probe_type: PROBE_TYPE_FEXIT,
                verdict: 0,
            }],
            syscalls: vec![SyscallMade {
                name: "write".into(),
                nr: 1,
                args: vec![4, 0x7ffd_0000_1000, 5],
                ret: Some(5),
            }],
            trace_lines: vec!["write(fd=4, buf=00000000a1b2c3d4, size=5)".into()],
            ..SeedObserved::default()
        };
        let m = Measured {
            seed: Some(Box::new(seed)),
            ..Measured::default()
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""saddr":"127.0.0.1""#), "{json}");
        assert_eq!(serde_json::from_str::<Measured>(&json).unwrap(), m);
        assert_eq!(serde_json::to_string(&Measured::default()).unwrap(), "{}");
    }

    #[test]
    fn faults_are_snake_case_in_the_plan() {
        let names: Vec<String> = Fault::ALL
            .iter()
            .map(|f| serde_json::to_string(f).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "\"panic\"",
                "\"hang\"",
                "\"garbage\"",
                "\"enormous_line\"",
                "\"flood\"",
                "\"silent\"",
                "\"cut_short\"",
                "\"dead_before_hello\"",
                "\"hang_before_hello\""
            ]
        );
        for f in Fault::ALL {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<Fault>(&json).unwrap(), f);
        }
    }

    #[test]
    fn messages_are_tagged_json_lines() {
        let msg = GuestMessage::Case(CaseRecord {
            case: CaseId::Bpf2bpfBigCallerFrame,
            jit: JitMode::Jit,
            outcome: Outcome::Rejected {
                step: "load big_frame_entry".into(),
                errno: 13,
                verifier_tail: "tail_calls are not allowed when call stack of previous frames is 352 bytes. Too large".into(),
            },
            measured: Measured::default(),
            duration_ms: 12,
        });
        let line = serde_json::to_string(&msg).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"type":"case","case":"bpf2bpf.big_caller_frame","jit":"jit","outcome":{"kind":"rejected""#), "{line}");
        assert_eq!(serde_json::from_str::<GuestMessage>(&line).unwrap(), msg);
    }
}
