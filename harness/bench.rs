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
//! - optionally the whole matrix, as the user runs it (a command, e.g. `bpfmatrix run
//!   -k 6.1 -k 5.10 -k 6.12`), warm and once cold (with an empty cache);
//! - optionally `bpfmatrix check` of one object on three kernels, warm
//!   ([`check_command`]: the README's example object, compiled with clang).
//!
//! Repetitions are interleaved (floor, bpfmatrix, vng, floor, ...) so load from other
//! processes falls on all of them alike; the machine is noisy, so the ratios within
//! one run are what count. [`BenchReport`] serialises to JSON and renders as a table
//! ([`BenchReport::table`]).

use crate::matrix::KernelRun;
use crate::run::{self, Progress, Settings};
use anyhow::{Context, Result};
use bpfmatrix_kernels::Kernel;
use bpfmatrix_protocol::GuestMessage;
use bpfmatrix_vm::qemu::{self, AccelUsed, BootEnd, BootSpec, VmEvent};
use bpfmatrix_vm::Initramfs;
use serde::Serialize;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bumped when the JSON report changes shape.
pub const BENCH_SCHEMA: u32 = 1;

/// The issue's targets (#4), checked on every run.
pub const TARGET_VERDICTS_OVER_FLOOR: f64 = 1.5;
pub const TARGET_VNG_OVER_VERDICTS: f64 = 4.0;
/// The warm matrix of three kernels, from their saved states (#13).
pub const TARGET_WARM_MATRIX_SECS: f64 = 2.0;
/// A restored run, QEMU's start to all verdicts, over the bare boot floor (#13).
pub const TARGET_RESTORED_OVER_FLOOR: f64 = 0.5;

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
    /// Every repetition's run completed with every cell agreeing.
    pub all_verdicts_agree: bool,
    pub timeline: GuestTimeline,
    /// Why a measurement is missing or a run failed.
    pub problems: Vec<String>,
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
            kernel: kernel.name.clone(),
            release: kernel.release.clone(),
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
            all_verdicts_agree: true,
            timeline: GuestTimeline::default(),
            problems: vng_problem.iter().cloned().collect(),
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
                Ok(o) if o.end == BootEnd::PoweredOff => {
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
        kernels: out,
        matrix,
        check,
        targets,
    })
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
        let _ = writeln!(
            t,
            "{:<8} {:<5} {:>13} {:>13} {:>13} {:>13} {:>15} {:>18} {:>18} {:>18}",
            "kernel",
            "accel",
            "floor",
            "verdicts",
            "exit",
            "restored",
            "vng exec true",
            "verdicts/floor",
            "restored/floor",
            "vng/verdicts"
        );
        for k in &self.kernels {
            let _ = writeln!(
                t,
                "{:<8} {:<5} {:>13} {:>13} {:>13} {:>13} {:>15} {:>18} {:>18} {:>18}",
                k.kernel,
                k.accel.map_or("-".into(), |a| a.to_string()),
                pair(&k.floor),
                pair(&k.verdicts),
                pair(&k.exit),
                pair(&k.restored),
                pair(&k.vng_exec_true),
                ratio(&k.verdicts_over_floor),
                ratio(&k.restored_over_floor),
                ratio(&k.vng_over_verdicts),
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
}
