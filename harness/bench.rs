//! The speed benchmark: on the same kernels, in one run, it measures
//!
//! - the bare boot floor: the kernel booted by the same QEMU command line with an
//!   init that powers off at once ([`FLOOR_INIT`], a 150-byte static ELF);
//! - bpfmatrix booted: [`crate::run::run_kernel`] with every case in both JIT modes
//!   and saved states off, timed from QEMU's start to the guest's `done` line (all
//!   verdicts) and to QEMU's exit;
//! - bpfmatrix restored: the same run started from the kernel's saved state (saved
//!   by a first run before the repetitions), QEMU's start to all verdicts;
//! - virtme-ng's `vng --run KERNEL --exec true` on the same kernel (installed into a
//!   virtualenv in the cache when it is not on PATH and can be);
//! - `bpfmatrix exec -k KERNEL -- true` as the user runs it (this executable, a
//!   subprocess), restored from the kernel's saved state: one run first to save it,
//!   then each timed run must say it was restored and exit 0 ([`exec_true_verdict`]);
//! - vmtest's `vmtest -k IMAGE -- true` on the same kernel image (`cargo install`ed
//!   into the cache when it is not on PATH), with /dev/kvm hidden when the guests run
//!   under TCG ([`HIDE_KVM`]; vmtest passes -enable-kvm whenever /dev/kvm exists).
//!   vmtest boots without an initramfs, so it needs virtio and 9p built into the
//!   kernel; where they are modules (Debian's kernels) it gets, through its config
//!   file's `extra_args`, an initramfs whose only content is a modprobe that loads
//!   them ([`vmtest_loader`]), and boots as it would otherwise;
//! - optionally the whole matrix, as the user runs it (a command, e.g. `bpfmatrix run
//!   -k 6.1 -k 5.10 -k 6.12`), warm and once cold (with an empty cache);
//! - optionally `bpfmatrix check` of one object on three kernels, warm
//!   ([`check_command`]: the README's example object, compiled with clang).
//!
//! Repetitions are interleaved (floor, bpfmatrix, vng, floor, ...) so load from other
//! processes falls on all of them alike; the machine is noisy, so the ratios within
//! one run are what count. exec and vmtest come last, after the matrix and check,
//! interleaved with each other (exec, vmtest, exec, ...). (exec's guest, with the
//! host's root shared, keeps a saved state of its own beside `run`'s.)
//! [`BenchReport`] serialises to JSON and renders as a table ([`BenchReport::table`]).

use crate::matrix::KernelRun;
use crate::run::{self, Progress, Settings};
use anyhow::{Context, Result};
use bpfmatrix_kernels::{Kernel, ModuleFile};
use bpfmatrix_protocol::GuestMessage;
use bpfmatrix_vm::qemu::{self, Accel, AccelUsed, BootSpec, VmEvent};
use bpfmatrix_vm::Initramfs;
use serde::Serialize;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bumped when the JSON report changes shape.
pub const BENCH_SCHEMA: u32 = 2;

/// The issue's targets (#4), checked on every run.
pub const TARGET_VERDICTS_OVER_FLOOR: f64 = 1.5;
pub const TARGET_VNG_OVER_VERDICTS: f64 = 4.0;
/// The warm matrix of three kernels, from their saved states (#13).
pub const TARGET_WARM_MATRIX_SECS: f64 = 2.0;
/// A restored run, QEMU's start to all verdicts, over the bare boot floor (#13).
pub const TARGET_RESTORED_OVER_FLOOR: f64 = 0.5;
/// `bpfmatrix exec -k KERNEL -- true`, restored, start to exit (median), seconds.
pub const TARGET_EXEC_TRUE_SECS: f64 = 1.0;
/// vmtest's `-k IMAGE -- true` over `bpfmatrix exec -- true` on the same kernel.
pub const TARGET_VMTEST_OVER_EXEC: f64 = 5.0;

/// The vmtest release the benchmark installs (its config file's `[[target]]` with
/// `kernel`, `command` and `[target.vm] extra_args` is what [`vmtest_config`] writes).
pub const VMTEST_VERSION: &str = "0.18.0";
/// vmtest under TCG takes ~40 s for `true`; its own guest-agent wait is 120 s.
const VMTEST_MIN_TIMEOUT: Duration = Duration::from_secs(300);
/// What vmtest's kernel mode needs of the kernel (its README): virtio PCI, the
/// virtio console (its guest agent's port), virtio-9p and 9p (the host's root).
pub const VMTEST_MODULES: &[&str] = &["virtio_pci", "virtio_console", "9pnet_virtio", "9p"];

/// A static x86_64 ELF that calls reboot(POWER_OFF) and spins: the floor's /init.
///
/// ```text
/// mov edi, 0xfee1dead ; mov esi, 0x28121969 ; mov edx, 0x4321fedc (POWER_OFF)
/// xor r10d, r10d ; mov eax, 169 (reboot) ; syscall ; jmp $
/// ```
pub const FLOOR_INIT: [u8; 150] = floor_init();

const fn floor_init() -> [u8; 150] {
    const CODE: [u8; 30] = [
        0xbf, 0xad, 0xde, 0xe1, 0xfe, // mov edi, LINUX_REBOOT_MAGIC1
        0xbe, 0x69, 0x19, 0x12, 0x28, // mov esi, LINUX_REBOOT_MAGIC2
        0xba, 0xdc, 0xfe, 0x21, 0x43, // mov edx, LINUX_REBOOT_CMD_POWER_OFF
        0x45, 0x31, 0xd2, // xor r10d, r10d
        0xb8, 0xa9, 0x00, 0x00, 0x00, // mov eax, SYS_reboot
        0x0f, 0x05, // syscall
        0xeb, 0xfe, // jmp $
        0x90, 0x90, 0x90,
    ];
    const BASE: u64 = 0x40_0000;
    const ENTRY: u64 = BASE + 64 + 56;
    let f = [0u8; 150];
    // ELF header: 64-bit, little endian, version 1, ET_EXEC, x86_64.
    let f = put(f, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    let f = put(f, 16, &2u16.to_le_bytes());
    let f = put(f, 18, &62u16.to_le_bytes());
    let f = put(f, 20, &1u32.to_le_bytes());
    let f = put(f, 24, &ENTRY.to_le_bytes());
    let f = put(f, 32, &64u64.to_le_bytes()); // e_phoff
    let f = put(f, 52, &64u16.to_le_bytes()); // e_ehsize
    let f = put(f, 54, &56u16.to_le_bytes()); // e_phentsize
    let f = put(f, 56, &1u16.to_le_bytes()); // e_phnum

    // One PT_LOAD, R+X, the whole file at BASE.
    let f = put(f, 64, &1u32.to_le_bytes());
    let f = put(f, 68, &5u32.to_le_bytes());
    let f = put(f, 80, &BASE.to_le_bytes());
    let f = put(f, 88, &BASE.to_le_bytes());
    let f = put(f, 96, &150u64.to_le_bytes());
    let f = put(f, 104, &150u64.to_le_bytes());
    let f = put(f, 112, &0x1000u64.to_le_bytes());
    put(f, 120, &CODE)
}

const fn put(mut f: [u8; 150], at: usize, bytes: &[u8]) -> [u8; 150] {
    let mut i = 0;
    while i < bytes.len() {
        f[at + i] = bytes[i];
        i += 1;
    }
    f
}

/// A command that runs the whole matrix (e.g. this executable with `run -k 6.1 -k
/// 5.10 -k 6.12`); its wall time is the matrix time.
#[derive(Clone, Debug)]
pub struct MatrixCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Kernel names, for the report.
    pub kernels: Vec<String>,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Repetitions of every per-kernel measurement and of the warm matrix.
    pub repetitions: usize,
    /// Cases, JIT modes, accelerator, timeout, memory of the bpfmatrix runs; the
    /// floor and virtme-ng use the same accelerator and memory.
    pub settings: Settings,
    /// Measure virtme-ng (install it into the cache's virtualenv if missing).
    pub vng: bool,
    /// Measure the whole matrix with this command.
    pub matrix: Option<MatrixCommand>,
    /// Measure `bpfmatrix check` of one object with this command (warm only).
    pub check: Option<MatrixCommand>,
    /// Also run the matrix once with an empty cache (`BPFMATRIX_CACHE` set to a
    /// fresh directory), so every kernel is downloaded and extracted again.
    pub cold: bool,
    /// Time `exec -k KERNEL -- true` with this executable, per kernel.
    pub exec: Option<ExecTrueCommand>,
    /// Measure vmtest (install it into the cache with cargo if missing).
    pub vmtest: bool,
}

/// `PROGRAM exec -k ARG ... -- true`: bpfmatrix's own `exec`, as the user runs it.
#[derive(Clone, Debug)]
pub struct ExecTrueCommand {
    pub program: PathBuf,
    /// Per kernel: its `-k` argument (a catalog name, or NAME=IMAGE) and its name.
    pub kernels: Vec<(OsString, String)>,
}

impl ExecTrueCommand {
    /// The arguments that run `true` on the kernel named `name`, if it is one of
    /// [`Self::kernels`].
    pub fn args(&self, name: &str, accel: Accel, timeout: Duration) -> Option<Vec<OsString>> {
        let (arg, _) = self.kernels.iter().find(|(_, n)| n == name)?;
        Some(exec_true_args(arg, accel, timeout))
    }
}

/// `exec -k ARG --accel ACCEL --timeout SECS -- true`.
pub fn exec_true_args(kernel_arg: &OsStr, accel: Accel, timeout: Duration) -> Vec<OsString> {
    vec![
        "exec".into(),
        "-k".into(),
        kernel_arg.into(),
        "--accel".into(),
        accel.to_string().into(),
        "--timeout".into(),
        timeout.as_secs().max(1).to_string().into(),
        "--".into(),
        "true".into(),
    ]
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            repetitions: 3,
            settings: Settings::default(),
            vng: true,
            matrix: None,
            check: None,
            cold: false,
            exec: None,
            vmtest: true,
        }
    }
}

/// Samples of one measurement, seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Samples {
    pub samples: Vec<f64>,
    pub min: Option<f64>,
    pub median: Option<f64>,
}

impl Samples {
    fn push(&mut self, d: Duration) {
        self.samples.push(d.as_secs_f64());
        let mut sorted = self.samples.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        self.min = sorted.first().copied();
        let n = sorted.len();
        self.median = Some(if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        });
    }
}

/// A ratio of two measurements: of their minimums, of their medians, and the
/// median of the per-repetition ratios. The measurements of one repetition run
/// back to back, so `paired` is the one a noisy machine disturbs least; the
/// targets are judged on it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ratio {
    pub min: Option<f64>,
    pub median: Option<f64>,
    pub paired: Option<f64>,
}

impl Ratio {
    fn of(num: &Samples, den: &Samples) -> Ratio {
        let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        // Only when every repetition gave both samples do the indexes pair up.
        let paired = (num.samples.len() == den.samples.len()).then(|| {
            let mut per_rep = Samples::default();
            for (n, d) in num.samples.iter().zip(&den.samples) {
                if *d > 0.0 {
                    per_rep.push(Duration::from_secs_f64(n / d));
                }
            }
            per_rep.median
        });
        Ratio {
            min: div(num.min, den.min),
            median: div(num.median, den.median),
            paired: paired.flatten(),
        }
    }
}

/// Where the time of one bpfmatrix guest went (the last repetition).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GuestTimeline {
    /// Host: run_kernel's start to QEMU's start (plan, modules, initramfs).
    pub prepare_s: Option<f64>,
    /// Host: QEMU's start to the agent's hello, to its done line, to QEMU's exit.
    pub hello_s: Option<f64>,
    pub done_s: Option<f64>,
    pub exit_s: Option<f64>,
    /// Guest uptime when the agent started and when it sent done, ms.
    pub agent_start_uptime_ms: Option<u64>,
    pub agent_done_uptime_ms: Option<u64>,
    /// Each case's duration in the guest, ms, in the order run ("case [jit]").
    pub cases_ms: Vec<(String, u64)>,
    /// QEMU read a saved state instead of booting the kernel, this long after its
    /// start.
    pub restored_s: Option<f64>,
}

/// One kernel's measurements.
#[derive(Clone, Debug, Serialize)]
pub struct KernelBench {
    pub kernel: String,
    pub release: Option<String>,
    pub accel: Option<AccelUsed>,
    /// QEMU start to exit with the power-off init.
    pub floor: Samples,
    /// QEMU start to the agent's done line: every verdict is in.
    pub verdicts: Samples,
    /// QEMU start to exit.
    pub exit: Samples,
    /// `vng --run IMAGE --exec true`, start to exit.
    pub vng_exec_true: Samples,
    /// Started from the kernel's saved state: QEMU start to the done line.
    pub restored: Samples,
    pub verdicts_over_floor: Ratio,
    pub vng_over_verdicts: Ratio,
    pub restored_over_floor: Ratio,
    /// The last restored run's timeline.
    pub restored_timeline: GuestTimeline,
    /// `bpfmatrix exec -k KERNEL -- true`, restored, start to exit.
    pub exec_true: Samples,
    /// vmtest's `-k IMAGE -- true`, start to exit.
    pub vmtest_true: Samples,
    pub vmtest_over_exec: Ratio,
    /// The exec command as run.
    pub exec_command: Option<String>,
    /// How vmtest was run on this kernel (command, initramfs, /dev/kvm hidden).
    pub vmtest_command: Option<String>,
    /// Every repetition's run completed with every cell agreeing.
    pub all_verdicts_agree: bool,
    pub timeline: GuestTimeline,
    /// Why a measurement is missing or a run failed.
    pub problems: Vec<String>,
}

impl KernelBench {
    /// Nothing measured yet, no problem, every verdict agreeing until one does not.
    fn new(kernel: String, release: Option<String>) -> KernelBench {
        KernelBench {
            kernel,
            release,
            accel: None,
            floor: Samples::default(),
            verdicts: Samples::default(),
            exit: Samples::default(),
            vng_exec_true: Samples::default(),
            restored: Samples::default(),
            verdicts_over_floor: Ratio::default(),
            vng_over_verdicts: Ratio::default(),
            restored_over_floor: Ratio::default(),
            restored_timeline: GuestTimeline::default(),
            exec_true: Samples::default(),
            vmtest_true: Samples::default(),
            vmtest_over_exec: Ratio::default(),
            exec_command: None,
            vmtest_command: None,
            all_verdicts_agree: true,
            timeline: GuestTimeline::default(),
            problems: vec![],
        }
    }
}

impl KernelBench {
    /// A measured run must agree in every cell (agrees() also requires it to
    /// have completed); one that does not is a problem and spoils the targets.
    fn judge_run(&mut self, what: &str, run: &KernelRun) {
        if !run.agrees() {
            self.all_verdicts_agree = false;
            self.problems.push(format!(
                "{what}: {:?}, all cells agree: {}",
                run.status,
                run.agrees()
            ));
        }
    }
}

/// The whole matrix as the user runs it.
#[derive(Clone, Debug, Serialize)]
pub struct MatrixBench {
    pub kernels: Vec<String>,
    pub command: String,
    pub warm: Samples,
    pub cold: Option<f64>,
    pub problems: Vec<String>,
}

/// One of the issue's targets.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub target: String,
    /// The measured value it was checked against (median ratios, median seconds).
    pub value: Option<f64>,
    pub met: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub schema: u32,
    pub cores: usize,
    pub repetitions: usize,
    pub cases: usize,
    pub jit_modes: usize,
    pub vng: Option<String>,
    /// The vmtest executable and its `--version`.
    pub vmtest: Option<String>,
    pub kernels: Vec<KernelBench>,
    pub matrix: Option<MatrixBench>,
    /// `bpfmatrix check` of one object (no cold run).
    pub check: Option<MatrixBench>,
    pub targets: Vec<TargetCheck>,
}

/// Runs the benchmark on `kernels` with the agent at `agent`. Progress lines go to
/// `progress`. Errors are for the host (no QEMU); a failed measurement is a problem
/// in the report.
pub fn bench(
    kernels: &[Kernel],
    agent: &Path,
    opts: &BenchOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BenchReport> {
    qemu::find_qemu()?;
    let reps = opts.repetitions.max(1);
    let settings = &opts.settings;
    let (vng, vng_problem) = if opts.vng {
        match bpfmatrix_vm::vng::install_vng(&mut |l| progress(l))
            .and_then(|p| bpfmatrix_vm::vng::check_host().map(|()| p))
        {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(format!("virtme-ng not measured: {e:#}"))),
        }
    } else {
        (None, None)
    };
    let (vmtest, vmtest_problem) = if opts.vmtest {
        match install_vmtest(&mut |l| progress(l)).and_then(|p| check_vmtest_host().map(|()| p)) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(format!("vmtest not measured: {e:#}"))),
        }
    } else {
        (None, None)
    };
    let dir = tempfile::Builder::new()
        .prefix("bpfmatrix-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let floor_initramfs = dir.path().join("floor.cpio");
    Initramfs::new()
        .dir("/dev", 0o755)
        .char_dev("/dev/console", 5, 1, 0o600)
        .file("/init", FLOOR_INIT.to_vec(), 0o755)
        .write_to(&floor_initramfs)?;

    let mut out = Vec::new();
    for kernel in kernels {
        let mut kb = KernelBench {
            problems: vng_problem.iter().chain(&vmtest_problem).cloned().collect(),
            ..KernelBench::new(kernel.name.clone(), kernel.release.clone())
        };
        let booted = Settings {
            snapshots: false,
            ..settings.clone()
        };
        let restoring = Settings {
            snapshots: true,
            ..settings.clone()
        };
        // The first run with saved states on saves the kernel's guest (or finds
        // it saved), so every repetition's restored run has a state to start from.
        progress(&format!("{}: saving its guest's state", kernel.name));
        let (primed, _) = timed_run(kernel, agent, &restoring);
        if !primed.agrees() {
            kb.problems.push(format!(
                "the run that saved the guest's state: {:?}",
                primed.status
            ));
        }
        for rep in 1..=reps {
            progress(&format!("{}: repetition {rep}/{reps}: floor", kernel.name));
            let spec = BootSpec {
                accel: settings.accel,
                memory_mib: settings.memory_mib,
                timeout: settings.timeout,
                ..BootSpec::new(kernel.clone(), floor_initramfs.clone())
            };
            match qemu::boot(&spec, &mut |_| {}) {
                Ok(o) if o.end.is_clean() => {
                    kb.floor.push(o.wall);
                    kb.accel = Some(o.accel);
                }
                Ok(o) => kb.problems.push(format!("floor boot ended {:?}", o.end)),
                Err(e) => kb.problems.push(format!("floor boot: {e:#}")),
            }

            progress(&format!(
                "{}: repetition {rep}/{reps}: bpfmatrix",
                kernel.name
            ));
            let (run, timeline) = timed_run(kernel, agent, &booted);
            kb.judge_run(&format!("bpfmatrix run {rep}"), &run);
            match (timeline.done_s, timeline.exit_s) {
                (Some(done), Some(exit)) => {
                    kb.verdicts.push(Duration::from_secs_f64(done));
                    kb.exit.push(Duration::from_secs_f64(exit));
                }
                _ => kb
                    .problems
                    .push(format!("bpfmatrix run {rep}: no done line from the guest")),
            }
            if kb.accel.is_none() {
                kb.accel = run.accel.as_deref().map(|a| match a {
                    "kvm" => AccelUsed::Kvm,
                    _ => AccelUsed::Tcg,
                });
            }
            kb.timeline = timeline;

            progress(&format!(
                "{}: repetition {rep}/{reps}: bpfmatrix restored",
                kernel.name
            ));
            let (run, timeline) = timed_run(kernel, agent, &restoring);
            kb.judge_run(&format!("restored run {rep}"), &run);
            match (timeline.restored_s, timeline.done_s) {
                (Some(_), Some(done)) => kb.restored.push(Duration::from_secs_f64(done)),
                (None, _) => kb.problems.push(format!(
                    "restored run {rep}: the guest was booted, not restored"
                )),
                (_, None) => kb
                    .problems
                    .push(format!("restored run {rep}: no done line from the guest")),
            }
            kb.restored_timeline = timeline;

            if let Some(vng) = &vng {
                progress(&format!(
                    "{}: repetition {rep}/{reps}: vng --exec true",
                    kernel.name
                ));
                let accel = kb.accel.unwrap_or(AccelUsed::Tcg);
                match bpfmatrix_vm::vng::time_exec_true(
                    vng,
                    kernel,
                    accel,
                    settings.memory_mib,
                    settings.timeout,
                ) {
                    Ok(wall) => kb.vng_exec_true.push(wall),
                    Err(e) => kb.problems.push(format!("vng run {rep}: {e:#}")),
                }
            }
        }
        kb.verdicts_over_floor = Ratio::of(&kb.verdicts, &kb.floor);
        kb.vng_over_verdicts = Ratio::of(&kb.vng_exec_true, &kb.verdicts);
        kb.restored_over_floor = Ratio::of(&kb.restored, &kb.floor);
        out.push(kb);
    }

    let check = opts.check.as_ref().map(|m| {
        let mut mb = MatrixBench::new(m);
        for rep in 1..=reps {
            progress(&format!("check: warm {rep}/{reps}"));
            match time_command(m, None) {
                Ok(d) => mb.warm.push(d),
                Err(e) => mb.problems.push(format!("warm check {rep}: {e:#}")),
            }
        }
        mb
    });
    let matrix = opts.matrix.as_ref().map(|m| {
        let mut mb = MatrixBench::new(m);
        if opts.cold {
            progress("matrix: cold (empty cache)");
            match tempfile::Builder::new().prefix("bpfmatrix-cold-").tempdir() {
                Ok(cache) => match time_command(m, Some(cache.path())) {
                    Ok(d) => mb.cold = Some(d.as_secs_f64()),
                    Err(e) => mb.problems.push(format!("cold matrix: {e:#}")),
                },
                Err(e) => mb.problems.push(format!("cold matrix: no temp dir: {e}")),
            }
        }
        for rep in 1..=reps {
            progress(&format!("matrix: warm {rep}/{reps}"));
            match time_command(m, None) {
                Ok(d) => mb.warm.push(d),
                Err(e) => mb.problems.push(format!("warm matrix {rep}: {e:#}")),
            }
        }
        mb
    });

    // Last, after the matrix and check (whose `run` restores the state the runs
    // above saved): the saved-state store keeps one state per kernel and
    // accelerator, and exec's guest (with the host's root) is another, so exec's
    // first run replaces the `run` guest's state.
    for (kb, kernel) in out.iter_mut().zip(kernels) {
        exec_and_vmtest(kb, kernel, opts, vmtest.as_deref(), reps, progress);
    }

    let mut targets = Vec::new();
    for kb in &out {
        let v = kb.verdicts_over_floor.paired;
        targets.push(TargetCheck {
            target: format!(
                "{}: boot to all verdicts <= {TARGET_VERDICTS_OVER_FLOOR}x the floor",
                kb.kernel
            ),
            value: v,
            met: v.map(|v| v <= TARGET_VERDICTS_OVER_FLOOR && kb.all_verdicts_agree),
        });
        let v = kb.vng_over_verdicts.paired;
        targets.push(TargetCheck {
            target: format!(
                "{}: >= {TARGET_VNG_OVER_VERDICTS}x faster than vng --exec true",
                kb.kernel
            ),
            value: v,
            met: v.map(|v| v >= TARGET_VNG_OVER_VERDICTS),
        });
        let v = kb.restored_over_floor.paired;
        targets.push(TargetCheck {
            target: format!(
                "{}: restored run <= {TARGET_RESTORED_OVER_FLOOR}x the floor",
                kb.kernel
            ),
            value: v,
            met: v.map(|v| v <= TARGET_RESTORED_OVER_FLOOR && kb.all_verdicts_agree),
        });
        targets.extend(exec_targets(kb, reps));
    }
    if let Some(m) = &matrix {
        targets.push(TargetCheck {
            target: format!(
                "warm matrix of {} kernels from saved states < {TARGET_WARM_MATRIX_SECS} s",
                m.kernels.len()
            ),
            value: m.warm.median,
            met: m
                .warm
                .median
                .map(|v| v < TARGET_WARM_MATRIX_SECS && m.problems.is_empty()),
        });
    }
    Ok(BenchReport {
        schema: BENCH_SCHEMA,
        cores: run::default_parallelism(),
        repetitions: reps,
        cases: settings.cases.len(),
        jit_modes: settings.jit_modes.len(),
        vng: vng.map(|p| p.display().to_string()),
        vmtest: vmtest.map(|p| describe_vmtest(&p)),
        kernels: out,
        matrix,
        check,
        targets,
    })
}

/// `bpfmatrix exec -k KERNEL -- true` (once untimed, so the state it restores from
/// is saved, then `reps` timed runs that must each say they were restored) and
/// vmtest's `-- true` on the same kernel, interleaved, into `kb`.
fn exec_and_vmtest(
    kb: &mut KernelBench,
    kernel: &Kernel,
    opts: &BenchOptions,
    vmtest: Option<&Path>,
    reps: usize,
    progress: &(dyn Fn(&str) + Sync),
) {
    let settings = &opts.settings;
    let exec_timeout = settings.timeout * 2;
    let vmtest_timeout = settings.timeout.max(VMTEST_MIN_TIMEOUT);
    let exec = opts.exec.as_ref().and_then(|e| {
        let args = e.args(&kernel.name, settings.accel, settings.timeout);
        if args.is_none() {
            kb.problems.push(format!(
                "exec true not measured: no -k argument for kernel {}",
                kernel.name
            ));
        }
        args.map(|a| (e.program.clone(), a))
    });
    if let Some((program, args)) = &exec {
        kb.exec_command = Some(shell_line(program.as_os_str(), args));
        progress(&format!(
            "{}: exec true, once to save the guest's state",
            kernel.name
        ));
        let mut cmd = Command::new(program);
        cmd.args(args);
        match run_captured(cmd, exec_timeout) {
            Ok(f) if f.code() == Some(0) => {}
            Ok(f) => kb.problems.push(format!(
                "exec true, the run that saves the state: {}",
                f.failure(&f.stderr)
            )),
            Err(e) => kb
                .problems
                .push(format!("exec true, the run that saves the state: {e:#}")),
        }
    }
    let vmtest_job = vmtest.and_then(|v| {
        VmtestJob::prepare(v, kernel)
            .map_err(|e| {
                kb.problems
                    .push(format!("vmtest not measured on {}: {e:#}", kernel.name))
            })
            .ok()
    });
    // Per repetition, (vmtest true, exec true): the paired ratio takes only
    // repetitions that gave both.
    let mut pairs: Vec<(Option<f64>, Option<f64>)> = Vec::new();
    for rep in 1..=reps {
        let mut pair = (None, None);
        if let Some((program, args)) = &exec {
            progress(&format!(
                "{}: repetition {rep}/{reps}: exec true",
                kernel.name
            ));
            let mut cmd = Command::new(program);
            cmd.args(args);
            match run_captured(cmd, exec_timeout) {
                Ok(f) => match exec_true_verdict(f.code(), &f.stderr) {
                    Ok(()) => {
                        kb.exec_true.push(f.wall);
                        pair.1 = Some(f.wall.as_secs_f64());
                    }
                    Err(why) => kb.problems.push(format!(
                        "exec true {rep}: {}",
                        if f.timed_out {
                            f.failure(&f.stderr)
                        } else {
                            why
                        }
                    )),
                },
                Err(e) => kb.problems.push(format!("exec true {rep}: {e:#}")),
            }
        }
        if let Some(job) = &vmtest_job {
            progress(&format!(
                "{}: repetition {rep}/{reps}: vmtest true",
                kernel.name
            ));
            // vmtest passes -enable-kvm whenever /dev/kvm exists: hidden when the
            // guests here run under TCG.
            let hide_kvm = kb.accel.unwrap_or(AccelUsed::Tcg) == AccelUsed::Tcg
                && Path::new("/dev/kvm").exists();
            let (cmd, how) = job.command(hide_kvm);
            kb.vmtest_command = Some(how);
            match run_captured(cmd, vmtest_timeout) {
                Ok(f) => {
                    let output = format!("{}\n{}", f.stdout, f.stderr);
                    match vmtest_verdict(f.code(), &output, job.config.is_some()) {
                        Ok(()) => {
                            kb.vmtest_true.push(f.wall);
                            pair.0 = Some(f.wall.as_secs_f64());
                        }
                        Err(why) => kb.problems.push(format!(
                            "vmtest true {rep}: {}",
                            if f.timed_out { f.failure(&output) } else { why }
                        )),
                    }
                }
                Err(e) => kb.problems.push(format!("vmtest true {rep}: {e:#}")),
            }
        }
        pairs.push(pair);
    }
    kb.vmtest_over_exec = Ratio {
        paired: paired_ratio(&pairs),
        ..Ratio::of(&kb.vmtest_true, &kb.exec_true)
    };
}

/// Runs one kernel through [`run::run_kernel`] and times its steps from the events.
fn timed_run(kernel: &Kernel, agent: &Path, settings: &Settings) -> (KernelRun, GuestTimeline) {
    let called = Instant::now();
    let mut qemu_start: Option<Instant> = None;
    let mut restored: Option<Duration> = None;
    let mut hello: Option<Instant> = None;
    let mut done: Option<Instant> = None;
    let run = run::run_kernel(kernel, agent, settings, &mut |p| {
        if let Progress::Vm { event, .. } = p {
            match event {
                // The last Starting counts: a KVM attempt may come before TCG.
                VmEvent::Starting { .. } => {
                    qemu_start = Some(Instant::now());
                    hello = None;
                    done = None;
                    restored = None;
                }
                VmEvent::Restored { after } => restored = Some(*after),
                VmEvent::GuestLine(line) => {
                    let now = Instant::now();
                    match serde_json::from_str::<GuestMessage>(&line.text) {
                        Ok(GuestMessage::Hello { .. }) => hello = hello.or(Some(now)),
                        Ok(GuestMessage::Done { .. }) => done = done.or(Some(now)),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    });
    let since = |t: Option<Instant>| {
        qemu_start
            .zip(t)
            .map(|(s, t)| t.duration_since(s).as_secs_f64())
    };
    let timeline = GuestTimeline {
        prepare_s: qemu_start.map(|s| s.duration_since(called).as_secs_f64()),
        hello_s: since(hello),
        done_s: since(done),
        exit_s: run.boot_wall_ms.map(|ms| ms as f64 / 1000.0),
        agent_start_uptime_ms: run.agent_start_ms,
        agent_done_uptime_ms: run.agent_done_ms,
        restored_s: restored.map(|d| d.as_secs_f64()),
        cases_ms: run
            .cells
            .iter()
            .filter_map(|c| {
                c.record
                    .as_ref()
                    .map(|r| (format!("{} [{}]", c.case, c.jit), r.duration_ms))
            })
            .collect(),
    };
    (run, timeline)
}

impl MatrixBench {
    fn new(m: &MatrixCommand) -> Self {
        MatrixBench {
            kernels: m.kernels.clone(),
            command: std::iter::once(m.program.as_os_str())
                .chain(m.args.iter().map(OsString::as_os_str))
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            warm: Samples::default(),
            cold: None,
            problems: Vec::new(),
        }
    }
}

/// The object `bpfmatrix bench` checks: the README's example (two programs, one
/// that needs 6.1), with the rules of the trial objects that concern it.
const CHECK_OBJECT_C: &str = include_str!("../tests/objects/clock.c");
const CHECK_RULES: &str = include_str!("../tests/objects/expect.toml");

/// `program check OBJ --expect RULES -k ...` for the first three of `kernels`
/// (`-k` arguments as `run` takes them, and their names): the object is compiled
/// into `dir` with clang, and the trial objects' rules for its programs written
/// beside it, so the timed run is one that agrees.
pub fn check_command(
    program: PathBuf,
    kernels: &[(OsString, String)],
    dir: &Path,
) -> Result<MatrixCommand> {
    let c = dir.join("clock.c");
    let obj = dir.join("clock.o");
    std::fs::write(&c, CHECK_OBJECT_C)?;
    let out = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(&c)
        .arg("-o")
        .arg(&obj)
        .output()
        .context(
            "cannot run clang to build the object to check (apt-get install clang libbpf-dev)",
        )?;
    anyhow::ensure!(
        out.status.success(),
        "clang failed on the object to check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = crate::objects::load(std::slice::from_ref(&obj))?;
    let mut rules = crate::programs::ProgramRules::parse(CHECK_RULES, "tests/objects/expect.toml")?;
    rules
        .rules
        .retain(|r| objects[0].spec.programs.contains(&r.program));
    let rules_file = dir.join("expect.toml");
    // An expect file holds the rules only (`file` names where rules were read).
    rules.file = None;
    std::fs::write(&rules_file, toml::to_string(&rules)?)?;
    let mut args: Vec<OsString> = vec![
        "check".into(),
        obj.into(),
        "--expect".into(),
        rules_file.into(),
    ];
    let three = &kernels[..kernels.len().min(3)];
    for (arg, _) in three {
        args.push("-k".into());
        args.push(arg.clone());
    }
    Ok(MatrixCommand {
        program,
        args,
        kernels: three.iter().map(|(_, n)| n.clone()).collect(),
    })
}

/// Runs the matrix command, its output discarded, and returns its wall time; with
/// `cold_cache`, `BPFMATRIX_CACHE` points there.
fn time_command(m: &MatrixCommand, cold_cache: Option<&Path>) -> Result<Duration> {
    let mut cmd = Command::new(&m.program);
    cmd.args(&m.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(cache) = cold_cache {
        cmd.env("BPFMATRIX_CACHE", cache);
    }
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", m.program.display()))?;
    let wall = start.elapsed();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        anyhow::bail!(
            "exited {} after {:.1} s: {}",
            out.status,
            wall.as_secs_f64(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(wall)
}

/// The issue's exec targets for one kernel: `exec -- true`, restored, at most
/// [`TARGET_EXEC_TRUE_SECS`] (median; every one of `reps` repetitions measured), and
/// vmtest's `-- true` at least [`TARGET_VMTEST_OVER_EXEC`] times slower (paired).
fn exec_targets(kb: &KernelBench, reps: usize) -> [TargetCheck; 2] {
    let v = kb.exec_true.median;
    let every_rep = kb.exec_true.samples.len() == reps;
    let exec = TargetCheck {
        target: format!(
            "{}: exec true, restored <= {TARGET_EXEC_TRUE_SECS:.1} s",
            kb.kernel
        ),
        value: v,
        met: v.map(|v| v <= TARGET_EXEC_TRUE_SECS && every_rep),
    };
    let v = kb.vmtest_over_exec.paired;
    let vmtest = TargetCheck {
        target: format!("{}: vmtest / exec >= {TARGET_VMTEST_OVER_EXEC}", kb.kernel),
        value: v,
        met: v.map(|v| v >= TARGET_VMTEST_OVER_EXEC),
    };
    [exec, vmtest]
}

/// The median of the per-repetition ratios `num / den`, when every repetition gave
/// both (the same rule as [`Ratio::of`]'s `paired`, without trusting indexes of
/// samples that skip failed repetitions).
fn paired_ratio(reps: &[(Option<f64>, Option<f64>)]) -> Option<f64> {
    let mut per_rep = Samples::default();
    for pair in reps {
        match *pair {
            (Some(n), Some(d)) if d > 0.0 => per_rep.push(Duration::from_secs_f64(n / d)),
            _ => return None,
        }
    }
    per_rep.median
}

/// A command as one shell-like line, for the report.
fn shell_line(program: &OsStr, args: &[OsString]) -> String {
    std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a command run by [`run_captured`] ended.
struct Finished {
    status: std::process::ExitStatus,
    /// It outlived its timeout and was killed.
    timed_out: bool,
    /// Its start to its exit.
    wall: Duration,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// Its exit code; none when a signal ended it (a timeout's kill, say).
    fn code(&self) -> Option<i32> {
        if self.timed_out {
            None
        } else {
            self.status.code()
        }
    }

    /// Why it failed, with the last lines of `output`.
    fn failure(&self, output: &str) -> String {
        let how = if self.timed_out {
            format!("killed after {:.0} s", self.wall.as_secs_f64())
        } else {
            format!(
                "exited {} after {:.1} s",
                self.status,
                self.wall.as_secs_f64()
            )
        };
        format!("{how}: {}", last_lines(output, 6))
    }
}

/// The last `n` non-blank lines of `text`, joined with " | ", escape sequences
/// dropped; or that there were none.
fn last_lines(text: &str, n: usize) -> String {
    let mut tail: Vec<String> = text
        .lines()
        .rev()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .replace("[?2004h", "")
                .replace("[?2004l", "")
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .take(n)
        .collect();
    if tail.is_empty() {
        return "no output".into();
    }
    tail.reverse();
    tail.join(" | ")
}

/// Runs `cmd` in a process group of its own, stdin closed and output captured,
/// and times it from spawn to exit. At `timeout` the whole group is killed (vmtest's
/// QEMU with it); once it exits, whatever it left in its group is killed too, so
/// nothing holds the pipes.
fn run_captured(mut cmd: Command, timeout: Duration) -> Result<Finished> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", cmd.get_program().to_string_lossy()))?;
    let pgid = child.id();
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let (exited, exited_rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = exited_rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout);
        if late {
            kill_group(pgid);
        }
        late
    });
    let status = child.wait();
    let wall = start.elapsed();
    let _ = exited.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    kill_group(pgid);
    let status = status.context("cannot wait for the command")?;
    Ok(Finished {
        status,
        timed_out,
        wall,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// SIGKILL to process group `pgid` (one [`run_captured`] made); none left is fine.
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// What `bpfmatrix exec` prints on stderr when its guest started from the saved
/// state (`[KERNEL] restored from its saved state in 0.19 s`).
const RESTORED_LINE: &str = "restored from its saved state";

/// Whether a timed `bpfmatrix exec -k KERNEL -- true` counts: it exited 0 (`true`
/// passed in the guest) and its stderr says the guest was restored, not booted.
pub fn exec_true_verdict(code: Option<i32>, stderr: &str) -> Result<(), String> {
    match code {
        Some(0) => {}
        Some(c) => return Err(format!("exited {c}: {}", last_lines(stderr, 6))),
        None => return Err(format!("killed by a signal: {}", last_lines(stderr, 6))),
    }
    if !stderr.lines().any(|l| l.contains(RESTORED_LINE)) {
        return Err(format!(
            "the guest was booted, not restored from its saved state: {}",
            last_lines(stderr, 6)
        ));
    }
    Ok(())
}

/// Whether a vmtest run of `true` counts: exit 0 (vmtest exits with the command's
/// status, or 69 when it could not run it) and, with a config file, the `PASS` it
/// prints for a target whose command exited 0.
pub fn vmtest_verdict(code: Option<i32>, output: &str, config_mode: bool) -> Result<(), String> {
    match code {
        Some(0) => {}
        Some(c) => return Err(format!("vmtest exited {c}: {}", last_lines(output, 8))),
        None => {
            return Err(format!(
                "vmtest was killed by a signal: {}",
                last_lines(output, 8)
            ))
        }
    }
    if config_mode && !output.lines().any(|l| l.trim() == "PASS") {
        return Err(format!(
            "vmtest exited 0 without saying PASS: {}",
            last_lines(output, 8)
        ));
    }
    Ok(())
}

/// vmtest on PATH, else the one [`install_vmtest`] put into the cache.
pub fn find_vmtest() -> Option<PathBuf> {
    which::which("vmtest").ok().or_else(|| {
        let cached = vmtest_root().join("bin").join("vmtest");
        cached.is_file().then_some(cached)
    })
}

/// Where [`install_vmtest`] installs (`cargo install --root`).
pub fn vmtest_root() -> PathBuf {
    bpfmatrix_kernels::cache_dir().join("vmtest")
}

/// [`find_vmtest`], else `cargo install vmtest --version VMTEST_VERSION --locked
/// --root CACHE/vmtest` (crates.io; a few minutes on two cores).
pub fn install_vmtest(progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if let Some(path) = find_vmtest() {
        return Ok(path);
    }
    let root = vmtest_root();
    // `cargo run` tells its program which cargo it is.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    progress(&format!(
        "installing vmtest {VMTEST_VERSION} into {} (cargo install vmtest --version {VMTEST_VERSION} --locked --root {}; a few minutes)",
        root.display(),
        root.display()
    ));
    let out = Command::new(&cargo)
        .args([
            "install",
            "vmtest",
            "--version",
            VMTEST_VERSION,
            "--locked",
            "--root",
        ])
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    anyhow::ensure!(
        out.status.success(),
        "cargo install vmtest failed ({}): {}",
        out.status,
        last_lines(&String::from_utf8_lossy(&out.stderr), 8)
    );
    find_vmtest().with_context(|| {
        format!(
            "cargo install vmtest succeeded but {} is not there",
            root.join("bin/vmtest").display()
        )
    })
}

/// vmtest's guest runs the host's `qemu-ga` (its command channel) from the host's
/// root; without it vmtest cannot run anything.
fn check_vmtest_host() -> Result<()> {
    let found = which::which("qemu-ga").is_ok()
        || ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join("qemu-ga").is_file());
    anyhow::ensure!(
        found,
        "no qemu-ga on this host: vmtest's guest runs the host's QEMU guest agent to run its command (apt-get install qemu-guest-agent)"
    );
    Ok(())
}

/// `PATH (vmtest X.Y.Z)`.
fn describe_vmtest(path: &Path) -> String {
    let version = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "version unknown".into());
    format!("{} ({version})", path.display())
}

/// Run by `unshare -m sh -c HIDE_KVM sh DIR CMD ARGS...`: in the new mount namespace
/// (private: nothing leaks to the host), /dev becomes a tmpfs at DIR holding every
/// entry of the real /dev but kvm (directories and files bind-mounted, symlinks
/// copied), moved over /dev; then CMD runs. A bind mount over /dev/kvm would not
/// do: vmtest asks only whether the path exists.
pub const HIDE_KVM: &str = r#"set -eu
new=$1; shift
mkdir -p "$new"
mount -t tmpfs -o mode=755 bpfmatrix-dev "$new"
for e in /dev/* /dev/.[!.]*; do
  [ -e "$e" ] || [ -L "$e" ] || continue
  n=${e##*/}
  [ "$n" = kvm ] && continue
  if [ -L "$e" ]; then cp -P "$e" "$new/$n"
  elif [ -d "$e" ]; then mkdir "$new/$n" && mount --rbind "$e" "$new/$n"
  else : > "$new/$n" && mount --bind "$e" "$new/$n"
  fi
done
mount --move "$new" /dev
exec "$@"
"#;

/// The initramfs's /sbin/modprobe, which the kernel runs (through its usermode
/// helper) when it mounts the 9p root and finds no 9p: loads every module of
/// /modules in order, once.
pub const VMTEST_MODPROBE: &str = r#"#!/bin/busybox sh
# vmtest boots without an initramfs of its own and needs virtio and 9p built in;
# this kernel has them as modules. The kernel calls this for fs-9p while mounting
# vmtest's 9p root: load them all, once.
[ -e /modules/.loaded ] && exit 0
for m in /modules/*.ko; do /bin/busybox insmod "$m" || true; done
: > /modules/.loaded
exit 0
"#;

/// vmtest's loader initramfs: a static busybox, [`VMTEST_MODPROBE`] as
/// /sbin/modprobe and `modules` (dependencies first) as /modules/NNN-NAME.ko. It has
/// no /init, so the kernel goes on to mount vmtest's root and run vmtest's init as
/// it would without it.
pub fn vmtest_loader(busybox: &Path, modules: &[ModuleFile]) -> Initramfs {
    let mut initramfs = Initramfs::new()
        .dir("/dev", 0o755)
        .dir("/proc", 0o755)
        .dir("/root", 0o700)
        .file("/bin/busybox", busybox, 0o755)
        .file("/sbin/modprobe", VMTEST_MODPROBE, 0o755);
    for (i, m) in modules.iter().enumerate() {
        initramfs = initramfs.file(
            &format!("/modules/{:03}-{}.ko", i + 1, m.name),
            m.path.as_path(),
            0o644,
        );
    }
    initramfs
}

/// vmtest.toml: one target running `true` on `image`, with `initrd` passed to QEMU.
pub fn vmtest_config(name: &str, image: &Path, initrd: &Path) -> String {
    let target = toml::toml! {
        name = (name)
        kernel = (image.to_string_lossy().into_owned())
        command = "true"
        [vm]
        extra_args = ["-initrd", (initrd.to_string_lossy().into_owned())]
    };
    let mut doc = toml::Table::new();
    doc.insert(
        "target".into(),
        toml::Value::Array(vec![toml::Value::Table(target)]),
    );
    toml::to_string(&doc).unwrap_or_default()
}

/// A statically linked busybox on this host (virtme-ng needs one too: Debian's
/// busybox-static).
fn find_static_busybox() -> Result<PathBuf> {
    let dirs = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"];
    let mut seen = Vec::new();
    for name in ["busybox-static", "busybox.static", "busybox"] {
        let candidates = which::which(name)
            .ok()
            .into_iter()
            .chain(dirs.iter().map(|d| Path::new(d).join(name)));
        for path in candidates {
            if path.is_file() && !seen.contains(&path) {
                if std::fs::read(&path)
                    .ok()
                    .and_then(|b| bpfmatrix_vm::vng::elf_bytes_are_dynamic(&b))
                    == Some(false)
                {
                    return Ok(path);
                }
                seen.push(path);
            }
        }
    }
    anyhow::bail!(
        "no statically linked busybox to load the kernel's virtio and 9p modules with before vmtest mounts its root (apt-get install busybox-static){}",
        if seen.is_empty() {
            String::new()
        } else {
            format!(
                "; not static: {}",
                seen.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    )
}

/// vmtest on one kernel, ready to run: plain `vmtest -k IMAGE -- true` when the
/// kernel has what vmtest needs built in, else `vmtest -c DIR/vmtest.toml` with the
/// loader initramfs ([`vmtest_loader`]).
struct VmtestJob {
    vmtest: PathBuf,
    dir: tempfile::TempDir,
    /// The config file, when the loader is needed.
    config: Option<PathBuf>,
    image: PathBuf,
    /// The modules the loader loads.
    modules: Vec<String>,
}

impl VmtestJob {
    fn prepare(vmtest: &Path, kernel: &Kernel) -> Result<VmtestJob> {
        let modules = bpfmatrix_kernels::resolve_modules(kernel, VMTEST_MODULES)
            .context("cannot prepare the virtio and 9p modules vmtest needs")?;
        // In the host's /tmp, like vmtest's own files (its init script, sockets).
        let dir = tempfile::Builder::new()
            .prefix("bpfmatrix-vmtest-")
            .tempdir_in("/tmp")
            .context("cannot create a directory for vmtest")?;
        let config = if modules.is_empty() {
            None
        } else {
            let busybox = find_static_busybox()?;
            let initrd = dir.path().join("loader.cpio");
            vmtest_loader(&busybox, &modules).write_to(&initrd)?;
            let config = dir.path().join("vmtest.toml");
            std::fs::write(&config, vmtest_config(&kernel.name, &kernel.image, &initrd))
                .with_context(|| format!("cannot write {}", config.display()))?;
            Some(config)
        };
        Ok(VmtestJob {
            vmtest: vmtest.to_path_buf(),
            dir,
            config,
            image: kernel.image.clone(),
            modules: modules.into_iter().map(|m| m.name).collect(),
        })
    }

    /// The command, and how it runs in words for the report.
    fn command(&self, hide_kvm: bool) -> (Command, String) {
        let args: Vec<OsString> = match &self.config {
            Some(config) => vec!["-c".into(), config.into()],
            None => vec![
                "-k".into(),
                self.image.clone().into(),
                "--".into(),
                "true".into(),
            ],
        };
        let mut line = shell_line(self.vmtest.as_os_str(), &args);
        let mut cmd = if hide_kvm {
            let mut cmd = Command::new("unshare");
            cmd.args(["-m", "sh", "-c", HIDE_KVM, "sh"])
                .arg(self.dir.path().join("dev"))
                .arg(&self.vmtest);
            line = format!("unshare -m sh -c HIDE_KVM sh DIR/dev {line} (/dev/kvm hidden)");
            cmd
        } else {
            Command::new(&self.vmtest)
        };
        cmd.args(&args)
            .current_dir(self.dir.path())
            .env("VMTEST_NO_UI", "1");
        if self.config.is_some() {
            line = format!(
                "{line}; vmtest.toml: kernel {}, command true, [vm] extra_args -initrd with a modprobe loading {}",
                self.image.display(),
                self.modules.join(", ")
            );
        }
        (cmd, line)
    }
}

impl BenchReport {
    /// The report as a plain-text table, for the terminal.
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let pair = |s: &Samples| format!("{} / {}", f(s.min), f(s.median));
        let ratio = |r: &Ratio| format!("{} / {} / {}", f(r.min), f(r.median), f(r.paired));
        let mut t = String::new();
        let _ = writeln!(
            t,
            "bpfmatrix bench: {} repetitions, {} cases x {} JIT modes, {} cores; seconds as min / median, ratios as min / median / paired (median of per-repetition ratios, judged)",
            self.repetitions, self.cases, self.jit_modes, self.cores
        );
        if let Some(v) = &self.vmtest {
            let _ = writeln!(t, "vmtest: {v}");
        }
        let _ = writeln!(
            t,
            "{:<8} {:<5} {:>13} {:>13} {:>13} {:>13} {:>15} {:>13} {:>13} {:>18} {:>18} {:>18} {:>18}",
            "kernel",
            "accel",
            "floor",
            "verdicts",
            "exit",
            "restored",
            "vng exec true",
            "exec true",
            "vmtest true",
            "verdicts/floor",
            "restored/floor",
            "vng/verdicts",
            "vmtest/exec"
        );
        for k in &self.kernels {
            let _ = writeln!(
                t,
                "{:<8} {:<5} {:>13} {:>13} {:>13} {:>13} {:>15} {:>13} {:>13} {:>18} {:>18} {:>18} {:>18}",
                k.kernel,
                k.accel.map_or("-".into(), |a| a.to_string()),
                pair(&k.floor),
                pair(&k.verdicts),
                pair(&k.exit),
                pair(&k.restored),
                pair(&k.vng_exec_true),
                pair(&k.exec_true),
                pair(&k.vmtest_true),
                ratio(&k.verdicts_over_floor),
                ratio(&k.restored_over_floor),
                ratio(&k.vng_over_verdicts),
                ratio(&k.vmtest_over_exec),
            );
        }
        for k in &self.kernels {
            let tl = &k.timeline;
            let _ = writeln!(
                t,
                "  {}: prepare {} s, QEMU start -> hello {} s -> done {} s -> exit {} s; guest uptime at agent start {} ms, at done {} ms; verdicts agree: {}",
                k.kernel,
                f(tl.prepare_s),
                f(tl.hello_s),
                f(tl.done_s),
                f(tl.exit_s),
                tl.agent_start_uptime_ms.map_or("-".into(), |v| v.to_string()),
                tl.agent_done_uptime_ms.map_or("-".into(), |v| v.to_string()),
                k.all_verdicts_agree
            );
            if !tl.cases_ms.is_empty() {
                let cases: Vec<String> = tl
                    .cases_ms
                    .iter()
                    .map(|(c, ms)| format!("{c} {ms}"))
                    .collect();
                let _ = writeln!(t, "    cases (ms): {}", cases.join(", "));
            }
            let rt = &k.restored_timeline;
            let _ = writeln!(
                t,
                "    restored: QEMU start -> state read {} s -> hello {} s -> done {} s -> exit {} s",
                f(rt.restored_s),
                f(rt.hello_s),
                f(rt.done_s),
                f(rt.exit_s)
            );
            if let Some(c) = &k.exec_command {
                let _ = writeln!(t, "    exec true: {c}");
            }
            if let Some(c) = &k.vmtest_command {
                let _ = writeln!(t, "    vmtest true: {c}");
            }
            for p in &k.problems {
                let _ = writeln!(t, "    problem: {p}");
            }
        }
        if let Some(m) = &self.matrix {
            let _ = writeln!(
                t,
                "matrix ({}): warm {} s, cold {} s",
                m.kernels.join(", "),
                pair(&m.warm),
                f(m.cold)
            );
            for p in &m.problems {
                let _ = writeln!(t, "    problem: {p}");
            }
        }
        if let Some(m) = &self.check {
            let _ = writeln!(
                t,
                "check of one object ({}): warm {} s",
                m.kernels.join(", "),
                pair(&m.warm)
            );
            for p in &m.problems {
                let _ = writeln!(t, "    problem: {p}");
            }
        }
        for c in &self.targets {
            let mark = match c.met {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            let _ = writeln!(t, "target: {} -> {} ({mark})", c.target, f(c.value));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_init_is_an_x86_64_executable() {
        assert_eq!(&FLOOR_INIT[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([FLOOR_INIT[18], FLOOR_INIT[19]]), 62);
        let entry = u64::from_le_bytes(FLOOR_INIT[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120);
        // The entry is the reboot syscall set-up.
        assert_eq!(FLOOR_INIT[120], 0xbf);
        assert_eq!(&FLOOR_INIT[143..147], &[0x0f, 0x05, 0xeb, 0xfe]);
    }

    #[test]
    fn samples_and_ratios() {
        let mut a = Samples::default();
        for s in [3.0, 1.0, 2.0] {
            a.push(Duration::from_secs_f64(s));
        }
        assert_eq!((a.min, a.median), (Some(1.0), Some(2.0)));
        let mut b = Samples::default();
        for s in [2.0, 6.0] {
            b.push(Duration::from_secs_f64(s));
        }
        assert_eq!(b.median, Some(4.0));
        let r = Ratio::of(&b, &a);
        assert_eq!((r.min, r.median, r.paired), (Some(2.0), Some(2.0), None));
        let mut c = Samples::default();
        for s in [3.0, 3.0, 8.0] {
            c.push(Duration::from_secs_f64(s));
        }
        // Per repetition: 1.0, 3.0, 4.0.
        assert_eq!(Ratio::of(&c, &a).paired, Some(3.0));
        assert_eq!(Ratio::of(&b, &Samples::default()).median, None);
    }

    #[test]
    fn the_check_command_writes_an_expect_file_check_reads() {
        let dir = tempfile::tempdir().unwrap();
        let m = check_command(
            "bpfmatrix".into(),
            &[("6.1".into(), "6.1".into())],
            dir.path(),
        )
        .unwrap();
        assert_eq!(m.kernels, ["6.1"]);
        let rules = crate::programs::ProgramRules::load(&dir.path().join("expect.toml")).unwrap();
        assert_eq!(rules.rules.len(), 1, "{rules:?}");
        assert_eq!(
            (
                rules.rules[0].program.as_str(),
                rules.rules[0].first_kernel.as_str()
            ),
            ("stamp_tai", "6.1")
        );
    }

    #[test]
    fn report_renders_and_serialises() {
        let report = BenchReport {
            schema: BENCH_SCHEMA,
            cores: 2,
            repetitions: 1,
            cases: 7,
            jit_modes: 2,
            vng: None,
            vmtest: None,
            kernels: vec![],
            matrix: None,
            check: None,
            targets: vec![TargetCheck {
                target: "x".into(),
                value: Some(1.2),
                met: Some(true),
            }],
        };
        assert!(report.table().contains("target: x -> 1.20 (met)"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schema"], BENCH_SCHEMA);
    }

    #[test]
    fn the_exec_and_vmtest_columns_render_and_serialise() {
        let mut kb = kernel_bench(&[0.8, 1.0], &[40.0, 45.0]);
        kb.vmtest_command = Some("vmtest -k /k/vmlinuz -- true".into());
        let report = BenchReport {
            schema: BENCH_SCHEMA,
            cores: 2,
            repetitions: 2,
            cases: 12,
            jit_modes: 2,
            vng: None,
            vmtest: Some("/c/vmtest/bin/vmtest (vmtest 0.18.0)".into()),
            targets: exec_targets(&kb, 2).to_vec(),
            kernels: vec![kb],
            matrix: None,
            check: None,
        };
        let table = report.table();
        let header = table.lines().nth(2).unwrap();
        assert!(
            header.contains("exec true") && header.contains("vmtest true"),
            "{table}"
        );
        assert!(header.trim_end().ends_with("vmtest/exec"), "{table}");
        // exec 0.80 / 0.90; vmtest 40.00 / 42.50; vmtest/exec min 50, median
        // 47.22, paired (50 + 45) / 2 = 47.5.
        let row = table.lines().nth(3).unwrap();
        assert!(row.contains("0.80 / 0.90"), "{row}");
        assert!(row.contains("40.00 / 42.50"), "{row}");
        assert!(row.trim_end().ends_with("50.00 / 47.22 / 47.50"), "{row}");
        assert!(table.contains("vmtest: /c/vmtest/bin/vmtest (vmtest 0.18.0)"));
        assert!(table.contains("    vmtest true: vmtest -k /k/vmlinuz -- true"));
        assert!(table.contains("target: 6.1: exec true, restored <= 1.0 s -> 0.90 (met)"));
        assert!(table.contains("target: 6.1: vmtest / exec >= 5 -> 47.50 (met)"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["kernels"][0]["exec_true"]["median"], 0.9);
        assert_eq!(json["kernels"][0]["vmtest_true"]["samples"][1], 45.0);
        assert_eq!(json["kernels"][0]["vmtest_over_exec"]["paired"], 47.5);
    }

    fn samples(secs: &[f64]) -> Samples {
        let mut s = Samples::default();
        for v in secs {
            s.push(Duration::from_secs_f64(*v));
        }
        s
    }

    fn kernel_bench(exec: &[f64], vmtest: &[f64]) -> KernelBench {
        let exec_true = samples(exec);
        let vmtest_true = samples(vmtest);
        let pairs: Vec<_> = vmtest
            .iter()
            .zip(exec)
            .map(|(v, e)| (Some(*v), Some(*e)))
            .collect();
        KernelBench {
            accel: Some(AccelUsed::Tcg),
            vmtest_over_exec: Ratio {
                paired: paired_ratio(&pairs),
                ..Ratio::of(&vmtest_true, &exec_true)
            },
            exec_true,
            vmtest_true,
            ..KernelBench::new("6.1".into(), None)
        }
    }

    #[test]
    fn exec_targets_judge_the_median_and_the_paired_ratio() {
        // exec 0.8, 0.9, 1.2 s (median 0.9); vmtest 40, 45, 36 s: per repetition
        // 50, 50, 30 -> paired 50.
        let kb = kernel_bench(&[0.8, 0.9, 1.2], &[40.0, 45.0, 36.0]);
        let [exec, vmtest] = exec_targets(&kb, 3);
        assert_eq!(exec.target, "6.1: exec true, restored <= 1.0 s");
        assert_eq!((exec.value, exec.met), (Some(0.9), Some(true)));
        assert_eq!(vmtest.target, "6.1: vmtest / exec >= 5");
        assert_eq!((vmtest.value, vmtest.met), (Some(50.0), Some(true)));
        // Slower than a second at the median: not met.
        let kb = kernel_bench(&[1.4, 1.5], &[7.0, 7.0]);
        let [exec, vmtest] = exec_targets(&kb, 2);
        assert_eq!((exec.value, exec.met), (Some(1.45), Some(false)));
        // 7 / 1.4 = 5, 7 / 1.5 = 4.67: median 4.83 < 5.
        let v = vmtest.value.unwrap();
        assert!((v - (5.0 + 7.0 / 1.5) / 2.0).abs() < 1e-9, "{v}");
        assert_eq!(vmtest.met, Some(false));
        // A repetition of exec that failed: fast as the rest are, not met.
        let kb = kernel_bench(&[0.5], &[]);
        let [exec, vmtest] = exec_targets(&kb, 2);
        assert_eq!((exec.value, exec.met), (Some(0.5), Some(false)));
        // vmtest not measured: the target is neither met nor failed, but unmeasured.
        assert_eq!((vmtest.value, vmtest.met), (None, None));
    }

    #[test]
    fn a_paired_ratio_needs_both_figures_of_every_repetition() {
        assert_eq!(
            paired_ratio(&[(Some(40.0), Some(1.0)), (Some(30.0), Some(1.5))]),
            Some(30.0)
        );
        assert_eq!(
            paired_ratio(&[(Some(40.0), Some(1.0)), (None, Some(1.0))]),
            None
        );
        assert_eq!(
            paired_ratio(&[(Some(40.0), Some(1.0)), (Some(4.0), None)]),
            None
        );
        assert_eq!(paired_ratio(&[]), None);
    }

    #[test]
    fn exec_true_counts_only_when_restored_and_exited_0() {
        let restored = "[6.1] QEMU started (tcg)\n[6.1] restored from its saved state in 0.19 s\n[6.1] guest spoke after 0.3 s (tcg)\n";
        assert_eq!(exec_true_verdict(Some(0), restored), Ok(()));
        let booted = "[6.1] QEMU started (tcg)\n[6.1] guest spoke after 9.3 s (tcg)\n[6.1] saved the guest's state (77 MB in 0.76 s): later runs start from it\n";
        let why = exec_true_verdict(Some(0), booted).unwrap_err();
        assert!(
            why.starts_with("the guest was booted, not restored"),
            "{why}"
        );
        assert!(why.contains("saved the guest's state (77 MB"), "{why}");
        let why = exec_true_verdict(Some(1), restored).unwrap_err();
        assert!(why.starts_with("exited 1: "), "{why}");
        assert!(exec_true_verdict(None, restored).is_err());
    }

    #[test]
    fn vmtest_counts_only_on_exit_0_and_pass_with_a_config() {
        // vmtest 0.18's own words with a config file, `true` then `false`.
        let pass = "===> Setting up VM\n===> Running command\n\x1b[?2004hroot@(none):/#\nPASS\n";
        assert_eq!(vmtest_verdict(Some(0), pass, true), Ok(()));
        let failed = "===> Running command\nCommand failed with exit code: 1\nFAILED\n";
        let why = vmtest_verdict(Some(1), failed, true).unwrap_err();
        assert_eq!(
            why,
            "vmtest exited 1: ===> Running command | Command failed with exit code: 1 | FAILED"
        );
        // The one-liner prints no PASS; its exit status is the command's.
        assert_eq!(
            vmtest_verdict(Some(0), "===> Running command\n", false),
            Ok(())
        );
        let why = vmtest_verdict(Some(0), "===> Booting\n", true).unwrap_err();
        assert!(why.contains("without saying PASS"), "{why}");
        // 69: vmtest could not run the command (the kernel panicked, say).
        let panic =
            "Kernel panic - not syncing: VFS: Unable to mount root fs\nFailed to connect QGA\n";
        let why = vmtest_verdict(Some(69), panic, false).unwrap_err();
        assert!(why.starts_with("vmtest exited 69: Kernel panic"), "{why}");
    }

    #[test]
    fn the_exec_command_names_the_kernel_accel_and_timeout() {
        let e = ExecTrueCommand {
            program: "/b/bpfmatrix".into(),
            kernels: vec![
                ("6.1".into(), "6.1".into()),
                ("mine=/k/bzImage".into(), "mine".into()),
            ],
        };
        let args = e
            .args("mine", Accel::Tcg, Duration::from_secs(120))
            .unwrap();
        assert_eq!(
            args,
            [
                "exec",
                "-k",
                "mine=/k/bzImage",
                "--accel",
                "tcg",
                "--timeout",
                "120",
                "--",
                "true"
            ]
        );
        assert_eq!(
            shell_line(e.program.as_os_str(), &args),
            "/b/bpfmatrix exec -k mine=/k/bzImage --accel tcg --timeout 120 -- true"
        );
        assert_eq!(
            shell_line(OsStr::new("sh"), &["-c".into(), "echo 'a b'".into()]),
            r"sh -c 'echo '\''a b'\'''"
        );
        assert!(e
            .args("5.10", Accel::Auto, Duration::from_secs(1))
            .is_none());
    }

    #[test]
    fn the_vmtest_config_reads_back_as_one_target_with_the_initrd() {
        let text = vmtest_config(
            "6.1",
            Path::new("/c/boot/vmlinuz-6.1.0-50-amd64"),
            Path::new("/tmp/x/loader.cpio"),
        );
        let doc: toml::Table = toml::from_str(&text).unwrap();
        let targets = doc["target"].as_array().unwrap();
        assert_eq!(targets.len(), 1);
        let t = targets[0].as_table().unwrap();
        assert_eq!(t["name"].as_str(), Some("6.1"));
        assert_eq!(t["kernel"].as_str(), Some("/c/boot/vmlinuz-6.1.0-50-amd64"));
        assert_eq!(t["command"].as_str(), Some("true"));
        let extra: Vec<&str> = t["vm"]["extra_args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(extra, ["-initrd", "/tmp/x/loader.cpio"]);
    }

    #[test]
    fn elf_linkage_is_read_from_the_program_headers() {
        // The floor's init: one PT_LOAD, no interpreter.
        assert_eq!(
            bpfmatrix_vm::vng::elf_bytes_are_dynamic(&FLOOR_INIT),
            Some(false)
        );
        // The same with its program header turned into PT_INTERP.
        let mut dynamic = FLOOR_INIT;
        dynamic[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            bpfmatrix_vm::vng::elf_bytes_are_dynamic(&dynamic),
            Some(true)
        );
        assert_eq!(
            bpfmatrix_vm::vng::elf_bytes_are_dynamic(b"#!/bin/sh\n"),
            None
        );
        assert_eq!(
            bpfmatrix_vm::vng::elf_bytes_are_dynamic(&FLOOR_INIT[..40]),
            None
        );
    }

    #[test]
    fn the_vmtest_loader_holds_busybox_modprobe_and_the_modules_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let busybox = dir.path().join("busybox");
        std::fs::write(&busybox, FLOOR_INIT).unwrap();
        let module = |name: &str| {
            let path = dir.path().join(format!("{name}.ko"));
            std::fs::write(&path, name).unwrap();
            ModuleFile {
                name: name.into(),
                path,
            }
        };
        let modules = [module("virtio"), module("9pnet"), module("9p")];
        let out = dir.path().join("loader.cpio");
        vmtest_loader(&busybox, &modules).write_to(&out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        // newc: "070701", 13 fields of 8 hex digits (namesize the 12th, filesize
        // the 7th), the name and its NUL padded to 4 bytes, the data padded to 4.
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        let mut at = 0;
        let hex = |from: usize| {
            usize::from_str_radix(std::str::from_utf8(&bytes[from..from + 8]).unwrap(), 16).unwrap()
        };
        loop {
            assert_eq!(&bytes[at..at + 6], b"070701");
            let (filesize, namesize) = (hex(at + 54), hex(at + 94));
            let name =
                String::from_utf8(bytes[at + 110..at + 110 + namesize - 1].to_vec()).unwrap();
            let data_at = (at + 110 + namesize).next_multiple_of(4);
            if name == "TRAILER!!!" {
                break;
            }
            entries.push((name, bytes[data_at..data_at + filesize].to_vec()));
            at = (data_at + filesize).next_multiple_of(4);
        }
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        let files: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.contains('.') || n.contains("bin/"))
            .collect();
        assert_eq!(
            files,
            [
                "bin/busybox",
                "sbin/modprobe",
                "modules/001-virtio.ko",
                "modules/002-9pnet.ko",
                "modules/003-9p.ko"
            ]
        );
        let data = |name: &str| &entries.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(data("sbin/modprobe").as_slice(), VMTEST_MODPROBE.as_bytes());
        assert_eq!(data("modules/003-9p.ko").as_slice(), b"9p");
        assert_eq!(data("bin/busybox").as_slice(), FLOOR_INIT.as_slice());
        // No /init: the kernel mounts vmtest's root and runs vmtest's init itself.
        assert!(!names.contains(&"init"), "{names:?}");
        assert!(VMTEST_MODPROBE.starts_with("#!/bin/busybox sh\n"));
    }

    #[test]
    fn run_captured_times_captures_and_kills_the_group_at_its_timeout() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let f = run_captured(cmd, Duration::from_secs(30)).unwrap();
        assert_eq!((f.code(), f.timed_out), (Some(3), false));
        assert_eq!((f.stdout.as_str(), f.stderr.as_str()), ("out\n", "err\n"));
        // A child in the background holds the pipes: the whole group goes.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & echo started; sleep 30"]);
        let f = run_captured(cmd, Duration::from_millis(300)).unwrap();
        assert!(f.timed_out && f.code().is_none());
        assert!(f.wall < Duration::from_secs(10), "{:?}", f.wall);
        assert_eq!(f.stdout, "started\n");
        assert!(f
            .failure(&f.stdout)
            .starts_with("killed after 0 s: started"));
    }

    #[test]
    fn the_shell_scripts_parse() {
        for script in [HIDE_KVM, VMTEST_MODPROBE] {
            let out = Command::new("sh")
                .args(["-n", "-c", script])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
