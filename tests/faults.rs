//! The fault suite (project issue 5): "A test harness is trusted only if it never
//! reports a pass it did not see and never hangs a CI job. Guest output is input
//! from an untrusted program."
//!
//! Every trial provokes one fault and checks the verdict bpfmatrix gives it, how
//! long the verdict took (printed as `[faults] NAME: ... after X s`), that the run
//! fails (a non-zero exit for the user), that no cell passes without a guest record
//! saying so, and that no QEMU process is left behind.
//!
//! - `cli::*` trials run the `bpfmatrix` binary and start no guest: files that are
//!   not kernels, missing tools (a PATH lacking exactly one of them), a report
//!   folder that cannot be created. They must fail before booting anything, with
//!   exit 2 (a setup error; a kernel that cannot be fetched here may instead be
//!   reported unavailable, exit 1), naming the file or the missing tool.
//! - `guest::*` trials boot the catalog kernel 6.1 under TCG with the real agent in
//!   a fault mode (`bpfmatrix_protocol::Fault`): kernel panic, hang, garbage, an
//!   enormous line, a flood, silence, a record cut short; plus the KVM fallback
//!   (the real one, and a deterministic KVM hang through a QEMU wrapper) and two
//!   CLI runs sharing one cache.
//!
//! - `snapshot::*` trials run kernel 6.1 from saved states in a store of their
//!   own: a state cut short (caught by its length, and one whose length was made
//!   to match, which QEMU refuses), a state of another agent build, a restored
//!   guest that stays silent, and two runs racing to save one state. Each must end
//!   in a boot that agrees, never in a wrong or missing answer.
//!
//! - `exec::*` trials run `bpfmatrix exec -k 6.1` under TCG, from the user's saved
//!   state as exec does by default, on a command that misbehaves: one that is not
//!   found, one that hangs, one that panics the kernel, one that prints without
//!   end, one whose library the guest cannot see; and bpfmatrix killed (SIGTERM,
//!   SIGINT) while its command sleeps. Each must end in a named verdict, with the
//!   command's exit status wherever it has one, within a bound, no QEMU left.
//!
//! `cargo test --features vm --test faults` (filter by name, e.g. `guest::hang`).

use bpfmatrix::collect::Exit;
use bpfmatrix::exec::{ExecCell, ExecMatrix, ExecRun};
use bpfmatrix::matrix::{KernelRun, Matrix, RunStatus, Verdict};
use bpfmatrix::report::json;
use bpfmatrix::run::{self, Progress, Settings};
use bpfmatrix::targets;
use bpfmatrix_kernels::Kernel;
use bpfmatrix_protocol::{CaseId, Fault, JitMode, MAX_EXEC_OUTPUT_BYTES, MAX_LINE_BYTES};
use bpfmatrix_vm::qemu::{Accel, VmEvent, MAX_RESULT_BYTES};
use libtest_mimic::{Arguments, Failed, Trial};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

type Outcome = Result<(), Failed>;

/// How long a guest that should finish normally may take (the machines are small
/// and shared; a normal boot is about 4 s).
const NORMAL_TIMEOUT: Duration = Duration::from_secs(90);
/// The deadline of the hang trial.
const HANG_TIMEOUT: Duration = Duration::from_secs(15);
/// The deadline of the flood trial (see [`flood`]).
const FLOOD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a CLI invocation may take before the trial kills it and fails.
const CLI_DEADLINE: Duration = Duration::from_secs(180);

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test("cli::kernel_image_truncated_bzimage", truncated_bzimage),
        Trial::test("cli::kernel_image_truncated_vmlinux", truncated_vmlinux),
        Trial::test("cli::kernel_image_not_a_kernel", not_a_kernel),
        Trial::test("cli::kernel_image_deb_without_kernel", deb_without_kernel),
        Trial::test("cli::missing_qemu", missing_qemu),
        Trial::test("cli::missing_clang", missing_clang),
        Trial::test("cli::missing_apt_get", missing_apt_get),
        Trial::test(
            "cli::report_folder_not_creatable",
            report_folder_not_creatable,
        ),
        Trial::test("guest::panic", panic),
        Trial::test("guest::hang", hang),
        Trial::test("guest::kvm_fallback", kvm_fallback),
        Trial::test("guest::kvm_hang_fallback", kvm_hang_fallback),
        Trial::test(
            "guest::kvm_fallback_two_kernels_at_once",
            kvm_fallback_two_kernels_at_once,
        ),
        Trial::test("guest::garbage", garbage),
        Trial::test("guest::enormous_line", enormous_line),
        Trial::test("guest::flood", flood),
        Trial::test("guest::silent", silent),
        Trial::test("guest::dies_early", dies_early),
        Trial::test("guest::cut_short", cut_short),
        Trial::test("guest::two_runs_share_the_cache", two_runs_share_the_cache),
        Trial::test("guest::killed_with_its_guests", killed_with_its_guests),
        Trial::test(
            "guest::killed_hard_with_its_guests",
            killed_hard_with_its_guests,
        ),
        Trial::test("exec::command_not_found", exec_command_not_found),
        Trial::test("exec::hang", exec_hang),
        Trial::test("exec::panic", exec_panic),
        Trial::test("exec::flood", exec_flood),
        Trial::test(
            "exec::libraries_not_in_the_guest",
            exec_libraries_not_in_the_guest,
        ),
        Trial::test("exec::killed_with_its_guest", exec_killed_with_its_guest),
        Trial::test("snapshot::cut_short", snapshot_cut_short),
        Trial::test("snapshot::refused_by_qemu", snapshot_refused_by_qemu),
        Trial::test(
            "snapshot::another_agent_build",
            snapshot_another_agent_build,
        ),
        Trial::test(
            "snapshot::restored_guest_silent",
            snapshot_restored_guest_silent,
        ),
        Trial::test("snapshot::two_runs_race_to_save", snapshot_two_runs_race),
    ];
    libtest_mimic::run(&args, trials).exit();
}

// ---------------------------------------------------------------------------
// Shared pieces: the kernel, the agent, guest runs, CLI runs, process checks.
// ---------------------------------------------------------------------------

/// The catalog kernel 6.1, obtained once (from the cache when it is there). The one
/// place this suite names the targets API.
fn kernel() -> Result<&'static Kernel, Failed> {
    static KERNEL: OnceLock<Result<Kernel, String>> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            let target = targets::resolve("6.1", None).map_err(|e| format!("{e:#}"))?;
            targets::obtain(&target, &mut |m| eprintln!("[6.1] {m}"))
                .map_err(|e| format!("cannot obtain kernel 6.1: {e:#}"))
        })
        .as_ref()
        .map_err(|e| Failed::from(e.as_str()))
}

/// The guest agent, built once.
fn agent() -> Result<&'static Path, Failed> {
    static AGENT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            bpfmatrix_vm::agent::build_agent(&mut |m| eprintln!("[agent] {m}"))
                .map_err(|e| format!("cannot build the guest agent: {e:#}"))
        })
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(|e| Failed::from(e.as_str()))
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// What one guest run gave.
struct GuestRun {
    run: KernelRun,
    doc: Matrix,
    /// From the call to the verdict.
    took: Duration,
    /// `KvmFallback` events seen.
    fallbacks: Vec<String>,
    qemu: QemuWatch,
}

/// Boots kernel 6.1 with the agent in `fault` mode and judges it.
fn guest(
    fault: Option<Fault>,
    cases: &[CaseId],
    accel: Accel,
    timeout: Duration,
) -> Result<GuestRun, Failed> {
    guest_capped(fault, cases, accel, timeout, MAX_RESULT_BYTES)
}

/// As [`guest`], with the cap on what the guest may send lowered.
fn guest_capped(
    fault: Option<Fault>,
    cases: &[CaseId],
    accel: Accel,
    timeout: Duration,
    max_result_bytes: u64,
) -> Result<GuestRun, Failed> {
    let kernel = kernel()?;
    let agent = agent()?;
    let settings = Settings {
        fault,
        cases: cases.to_vec(),
        jit_modes: vec![JitMode::Jit],
        accel,
        timeout,
        max_result_bytes,
        // Booted guests: saved states have trials of their own (snapshot::*).
        snapshots: false,
        ..Settings::default()
    };
    let mut qemu = QemuWatch::default();
    let mut fallbacks = Vec::new();
    let started = Instant::now();
    let run = run::run_kernel(kernel, agent, &settings, &mut |p| {
        if let Progress::Vm { event, .. } = p {
            qemu.see(event);
            if let VmEvent::KvmFallback { reason } = event {
                fallbacks.push(reason.clone());
            }
        }
    });
    let took = started.elapsed();
    let doc = Matrix::from_runs(std::slice::from_ref(&run));
    let result = GuestRun {
        run,
        doc,
        took,
        fallbacks,
        qemu,
    };
    result.invariants()?;
    Ok(result)
}

impl GuestRun {
    /// What every guest run must satisfy, whatever its fault.
    fn invariants(&self) -> Outcome {
        for cell in &self.run.cells {
            if cell.verdict == Verdict::Agrees {
                check!(
                    cell.record.is_some(),
                    "{} / {} agrees without a guest record",
                    cell.case,
                    cell.jit
                );
            }
        }
        for r in self.json()["records"].as_array().ok_or("no records")? {
            if r["verdict"] == "agrees" {
                check!(
                    !r["outcome"].is_null(),
                    "matrix.json says {} / {} agrees without an outcome",
                    r["case"],
                    r["jit"]
                );
            }
        }
        if let RunStatus::Failed { .. } = self.run.status {
            check!(!self.doc.all_agree(), "a failed run counted as all agree");
        }
        self.qemu.none_left()
    }

    /// The run's matrix.json.
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&json::to_json(&self.doc)).expect("matrix.json is JSON")
    }

    fn reason(&self) -> &str {
        match &self.run.status {
            RunStatus::Failed { reason } | RunStatus::Unavailable { reason } => reason,
            RunStatus::Completed => "",
        }
    }

    /// The run failed, its reason contains every one of `needles`, and the user's
    /// run would exit non-zero.
    fn failed_with(&self, needles: &[&str]) -> Outcome {
        check!(
            matches!(self.run.status, RunStatus::Failed { .. }),
            "expected a failed run, got {:?}\nproblems: {:#?}",
            self.run.status,
            self.run.problems
        );
        check!(
            self.json()["kernels"][0]["status"] == "failed",
            "matrix.json does not say failed"
        );
        for n in needles {
            check!(
                self.reason().contains(n),
                "the reason does not say {n:?}: {}",
                self.reason()
            );
        }
        check!(!self.doc.all_agree(), "the run would exit 0");
        Ok(())
    }

    fn has_problem(&self, needle: &str) -> Outcome {
        check!(
            self.run.problems.iter().any(|p| p.contains(needle)),
            "no problem says {needle:?}: {:#?}",
            self.run.problems
        );
        Ok(())
    }

    fn report(&self, name: &str) {
        let verdict = match &self.run.status {
            RunStatus::Completed => format!(
                "completed under {}, all agree: {}",
                self.run.accel.as_deref().unwrap_or("?"),
                self.doc.all_agree()
            ),
            other => format!("{other:?}"),
        };
        eprintln!(
            "[faults] {name}: {} after {:.1} s (QEMU start to exit {:.1} s, {} problems, {} warnings)",
            cut(&verdict, 300),
            self.took.as_secs_f64(),
            self.run.boot_wall_ms.unwrap_or(0) as f64 / 1000.0,
            self.run.problems.len(),
            self.run.warnings.len()
        );
    }
}

fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The QEMU processes a run started, found by the result socket path in their
/// command line, so that none may outlive the run (running, orphaned or zombie).
#[derive(Default)]
struct QemuWatch {
    sockets: Vec<String>,
    pids: Vec<u32>,
}

impl QemuWatch {
    fn see(&mut self, event: &VmEvent) {
        match event {
            VmEvent::Starting { command, .. } => {
                if let Some(path) = command
                    .split_whitespace()
                    .find_map(|a| a.split(",path=").nth(1))
                {
                    self.sockets.push(path.trim_matches('\'').to_string());
                }
            }
            VmEvent::Console(_) | VmEvent::GuestLine(_) => {
                if self.pids.len() < self.sockets.len() {
                    let socket = self.sockets.last().expect("checked");
                    if let Some(pid) = processes().find(|p| p.cmdline.contains(socket.as_str())) {
                        self.pids.push(pid.pid);
                    }
                }
            }
            VmEvent::KvmFallback { .. }
            | VmEvent::GuestSpoke { .. }
            | VmEvent::Saved { .. }
            | VmEvent::SaveFailed { .. }
            | VmEvent::Restored { .. }
            | VmEvent::StateDiscarded { .. } => {}
        }
    }

    fn none_left(&self) -> Outcome {
        check!(!self.sockets.is_empty(), "no QEMU was started");
        for p in processes() {
            if self.pids.contains(&p.pid) && (p.state == 'Z' || p.comm.contains("qemu")) {
                return Err(format!(
                    "QEMU {} outlived its run (state {}, parent {})",
                    p.pid, p.state, p.ppid
                )
                .into());
            }
            if let Some(s) = self.sockets.iter().find(|s| p.cmdline.contains(s.as_str())) {
                return Err(format!("process {} still runs with {s}", p.pid).into());
            }
        }
        Ok(())
    }
}

struct Proc {
    pid: u32,
    ppid: u32,
    state: char,
    comm: String,
    cmdline: String,
}

fn processes() -> impl Iterator<Item = Proc> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_string();
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            Some(Proc {
                pid,
                ppid,
                state,
                comm,
                cmdline,
            })
        })
}

/// The peak resident memory of this process, KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One finished invocation of the bpfmatrix binary.
struct Cli {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Cli {
    fn text(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Exit 2 (a setup error), the message contains every needle, and no guest was
    /// started.
    fn setup_error(&self, needles: &[&str]) -> Outcome {
        check!(self.code == Some(2), "expected exit 2:\n{}", self.text());
        for n in needles {
            check!(
                self.stderr.contains(n),
                "stderr does not say {n:?}:\n{}",
                self.text()
            );
        }
        for booted in ["QEMU started", "virtme-ng started", "starting "] {
            check!(
                !self.stderr.contains(booted),
                "a guest was started:\n{}",
                self.text()
            );
        }
        Ok(())
    }

    fn report(&self, name: &str) {
        let last = self
            .stderr
            .lines()
            .find(|l| l.contains("falling back to TCG") || l.contains("error:"))
            .or_else(|| self.stdout.lines().last())
            .unwrap_or("");
        eprintln!(
            "[faults] {name}: exit {:?} after {:.2} s: {}",
            self.code,
            self.took.as_secs_f64(),
            cut(last, 300)
        );
    }
}

/// Runs `bpfmatrix ARGS` with `env` (None removes a variable), in a process group
/// of its own that is killed if it outlives [`CLI_DEADLINE`].
fn cli(args: &[&str], env: &[(&str, Option<&str>)]) -> Result<Cli, Failed> {
    let child = cli_spawn(args, env)?;
    cli_wait(child)
}

/// A started bpfmatrix and when it started.
struct Running(std::process::Child, Instant);

fn cli_spawn(args: &[&str], env: &[(&str, Option<&str>)]) -> Result<Running, Failed> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bpfmatrix"));
    cmd.args(args);
    // These trials are about booted guests (their timing, their processes); saved
    // states have trials of their own (snapshot::*).
    if args.first() == Some(&"run") {
        cmd.arg("--no-snapshot");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .process_group(0);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let started = Instant::now();
    cmd.spawn()
        .map(|child| Running(child, started))
        .map_err(|e| format!("cannot start bpfmatrix: {e}").into())
}

fn cli_wait(running: Running) -> Result<Cli, Failed> {
    cli_wait_within(running, CLI_DEADLINE)
}

/// As [`cli_wait`], with another deadline.
fn cli_wait_within(
    Running(mut child, started): Running,
    deadline: Duration,
) -> Result<Cli, Failed> {
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > deadline {
            // The whole group: bpfmatrix and the QEMU it started.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return Err(format!("bpfmatrix ran longer than {deadline:?}; killed").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Cli {
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: started.elapsed(),
    })
}

/// A directory of symlinks to every program on this process's PATH except
/// `without`: a PATH that lacks exactly one tool.
fn path_without(dir: &Path, without: &str) -> Result<String, Failed> {
    let farm = dir.join(format!("path-without-{without}"));
    std::fs::create_dir_all(&farm).map_err(|e| e.to_string())?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name == without || farm.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), farm.join(&name));
        }
    }
    Ok(farm.to_string_lossy().into_owned())
}

/// Every file called `name` below `dir`.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(files_named(&path, name));
        } else if e.file_name() == name {
            found.push(path);
        }
    }
    found
}

fn tempdir() -> Result<tempfile::TempDir, Failed> {
    tempfile::Builder::new()
        .prefix("bpfmatrix-faults-")
        .tempdir()
        .map_err(|e| e.to_string().into())
}

fn write(path: &Path, bytes: &[u8]) -> Outcome {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()).into())
}

fn head(path: &Path, n: usize) -> Result<Vec<u8>, Failed> {
    let mut bytes = Vec::with_capacity(n);
    std::fs::File::open(path)
        .and_then(|f| f.take(n as u64).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check!(
        bytes.len() == n,
        "{} is shorter than {n} bytes",
        path.display()
    );
    Ok(bytes)
}

/// `bpfmatrix run -k PATH` on a file that is not a bootable kernel: exit 2, the
/// message names the file and contains the needles, no guest starts. Runs with a
/// cache of its own so nothing is left in the user's.
fn refuse_image(name: &str, image: &Path, needles: &[&str]) -> Outcome {
    let cache = tempdir()?;
    let image_arg = image.to_string_lossy().into_owned();
    let out = cli(
        &[
            "run",
            "-k",
            &image_arg,
            "-c",
            "tail_call.chain",
            "--jit",
            "jit",
        ],
        &[("BPFMATRIX_CACHE", Some(&cache.path().to_string_lossy()))],
    )?;
    out.report(name);
    let mut all = vec![image_arg.as_str()];
    all.extend_from_slice(needles);
    out.setup_error(&all)
}

// ---------------------------------------------------------------------------
// cli::*: refused before any guest starts.
// ---------------------------------------------------------------------------

/// Fault 4: half a bzImage.
fn truncated_bzimage() -> Outcome {
    let dir = tempdir()?;
    let image = &kernel()?.image;
    let len = std::fs::metadata(image).map_err(|e| e.to_string())?.len() as usize;
    let path = dir.path().join("vmlinuz-truncated");
    write(&path, &head(image, len / 2)?)?;
    refuse_image("truncated bzImage", &path, &["truncated"])
}

/// Fault 4: a vmlinux cut after its PVH note (QEMU would load a partial kernel) and
/// one cut before it (the note is gone, which must not read as CONFIG_PVH=n).
fn truncated_vmlinux() -> Outcome {
    let dir = tempdir()?;
    let vmlinux = &kernel()?.boot_image;
    let len = std::fs::metadata(vmlinux).map_err(|e| e.to_string())?.len() as usize;
    let mut failures = Vec::new();
    for (what, n) in [("after the notes", len / 2), ("before the notes", 3 << 20)] {
        let path = dir.path().join(format!("vmlinux-cut-at-{n}"));
        write(&path, &head(vmlinux, n)?)?;
        if let Err(e) = refuse_image(
            &format!("truncated vmlinux ({what})"),
            &path,
            &["truncated"],
        ) {
            failures.push(format!(
                "vmlinux cut {what} ({n} of {len} bytes): {}",
                e.message().unwrap_or("")
            ));
        }
    }
    check!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// Fault 4: files that are no kernel at all.
fn not_a_kernel() -> Outcome {
    let dir = tempdir()?;
    let mut failures = Vec::new();
    let samples: [(&str, &[u8]); 4] = [
        ("notes.txt", b"these are my notes, not a kernel\n"),
        ("empty", b""),
        ("random.bin", &[0x5a; 4096]),
        // An ELF header for another machine (aarch64), nothing else.
        (
            "aarch64.elf",
            b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\xb7\0\x01\0\0\0",
        ),
    ];
    for (name, bytes) in samples {
        let path = dir.path().join(name);
        write(&path, bytes)?;
        if let Err(e) = refuse_image(&format!("not a kernel: {name}"), &path, &[]) {
            failures.push(e.message().unwrap_or("").to_string());
        }
    }
    check!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

/// Fault 4: a Debian package that holds no kernel. (`-k x.deb` may be read as an
/// image or as a package; either way: exit 2, named, nothing booted.)
fn deb_without_kernel() -> Outcome {
    let dir = tempdir()?;
    let root = dir.path().join("pkg");
    std::fs::create_dir_all(root.join("DEBIAN")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(root.join("usr/share/doc/not-a-kernel")).map_err(|e| e.to_string())?;
    write(
        &root.join("DEBIAN/control"),
        b"Package: not-a-kernel\nVersion: 1.0\nArchitecture: amd64\nMaintainer: bpfmatrix <faults@example.org>\nDescription: a package with no kernel in it\n",
    )?;
    write(
        &root.join("usr/share/doc/not-a-kernel/README"),
        b"no kernel here\n",
    )?;
    let deb = dir.path().join("linux-image-0.0-nokernel_1.0_amd64.deb");
    let built = Command::new("dpkg-deb")
        .arg("--build")
        .arg(&root)
        .arg(&deb)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("dpkg-deb (Debian's dpkg) is needed to build the sample .deb: {e}"))?;
    check!(built.success(), "dpkg-deb --build failed: {built}");
    refuse_image(".deb without a kernel", &deb, &[])
}

/// Fault 5: no qemu-system-x86_64 on PATH.
fn missing_qemu() -> Outcome {
    let dir = tempdir()?;
    let path = path_without(dir.path(), "qemu-system-x86_64")?;
    let vmlinux = kernel()?.boot_image.to_string_lossy().into_owned();
    let out = cli(
        &["run", "-k", &vmlinux, "-c", "tail_call.chain"],
        &[("PATH", Some(&path))],
    )?;
    out.report("no qemu-system-x86_64");
    out.setup_error(&[
        "qemu-system-x86_64 not found",
        "apt-get install qemu-system-x86",
    ])
}

/// Fault 5: no clang on PATH (the agent build checks it before anything else).
fn missing_clang() -> Outcome {
    let dir = tempdir()?;
    let path = path_without(dir.path(), "clang")?;
    let vmlinux = kernel()?.boot_image.to_string_lossy().into_owned();
    let out = cli(
        &["run", "-k", &vmlinux, "-c", "tail_call.chain"],
        &[("PATH", Some(&path))],
    )?;
    out.report("no clang");
    out.setup_error(&["clang not found", "install", "clang"])
}

/// Fault 5: no apt-get, with a kernel that is not cached.
fn missing_apt_get() -> Outcome {
    let dir = tempdir()?;
    let path = path_without(dir.path(), "apt-get")?;
    let cache = dir.path().join("empty-cache");
    std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let out = cli(
        &["run", "-k", "6.1", "-c", "tail_call.chain"],
        &[
            ("PATH", Some(&path)),
            ("BPFMATRIX_CACHE", Some(&cache.to_string_lossy())),
        ],
    )?;
    out.report("no apt-get, nothing cached");
    // The kernel cannot be had here: a setup error (2) or an unavailable kernel (1),
    // either way named, saying what is missing, and nothing booted.
    check!(
        matches!(out.code, Some(1) | Some(2)),
        "expected exit 1 or 2:\n{}",
        out.text()
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    for n in ["apt-get", "needs apt"] {
        check!(
            all.contains(n),
            "the output does not say {n:?}:\n{}",
            out.text()
        );
    }
    check!(!out.stderr.contains("QEMU started"), "a guest was started");
    let complete = files_named(&cache, "kernel.json");
    check!(
        complete.is_empty(),
        "the cache claims a kernel it could not fetch: {complete:?}"
    );
    Ok(())
}

/// Fault 9: `--out` below a regular file (root ignores permissions, so a chmod
/// would not stop it): exit 2, nothing written, nothing booted.
fn report_folder_not_creatable() -> Outcome {
    let dir = tempdir()?;
    let file = dir.path().join("a-regular-file");
    write(&file, b"not a folder\n")?;
    let out_dir = file.join("reports");
    let out = cli(
        &[
            "run",
            "-k",
            "6.1",
            "-c",
            "tail_call.chain",
            "--out",
            &out_dir.to_string_lossy(),
        ],
        &[],
    )?;
    out.report("report folder cannot be created");
    out.setup_error(&[
        &out_dir.to_string_lossy(),
        "cannot create the report folder",
    ])?;
    let content = std::fs::read(&file).map_err(|e| e.to_string())?;
    check!(content == b"not a folder\n", "the file was changed");
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    check!(entries.len() == 1, "something was written: {entries:?}");
    check!(
        out.took < Duration::from_secs(5),
        "took {:?}: it should fail before any slow step",
        out.took
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// guest::*: a real kernel, the real agent misbehaving.
// ---------------------------------------------------------------------------

const ONE: &[CaseId] = &[CaseId::TailCallChain];

/// Fault 1: the guest kernel panics (sysrq-trigger c) right after the hello.
fn panic() -> Outcome {
    let g = guest(Some(Fault::Panic), ONE, Accel::Tcg, NORMAL_TIMEOUT)?;
    g.report("kernel panic");
    g.failed_with(&["panicked", "Kernel panic - not syncing", "sysrq"])?;
    check!(
        g.took < Duration::from_secs(30),
        "the panic took {:?} to be reported",
        g.took
    );
    no_answers(&g.run, "panicked")
}

/// Fault 2: the agent sleeps forever after the hello.
fn hang() -> Outcome {
    let g = guest(Some(Fault::Hang), ONE, Accel::Tcg, HANG_TIMEOUT)?;
    g.report("hang");
    g.failed_with(&["timed out after 15 s", "QEMU killed"])?;
    check!(
        g.took >= HANG_TIMEOUT && g.took < HANG_TIMEOUT + Duration::from_secs(10),
        "the verdict came after {:?}, the deadline is {HANG_TIMEOUT:?}",
        g.took
    );
    check!(
        g.run.guest_release.is_some(),
        "the hello before the hang was lost"
    );
    check!(!g.qemu.pids.is_empty(), "the QEMU process was never seen");
    no_answers(&g.run, "timed out")
}

/// Fault 3: KVM as this machine has it (present, QEMU aborts or the guest hangs;
/// or working, where the runners have it). Two boots under auto: the fallback is
/// reported once, both runs complete and say why they left KVM.
fn kvm_fallback() -> Outcome {
    let first = guest(None, ONE, Accel::Auto, NORMAL_TIMEOUT)?;
    first.report("KVM auto, first boot");
    let second = guest(None, ONE, Accel::Auto, NORMAL_TIMEOUT)?;
    second.report("KVM auto, second boot");
    for (which, g) in [("first", &first), ("second", &second)] {
        check!(
            g.run.status == RunStatus::Completed && g.doc.all_agree(),
            "the {which} run did not complete: {:?}\n{:#?}",
            g.run.status,
            g.run.problems
        );
    }
    match first.run.accel.as_deref() {
        Some("kvm") => {
            // Where KVM works, auto must use it and announce nothing; the
            // fallback itself is forced in kvm_hang_fallback on every host.
            eprintln!("[faults] KVM works here: checking that auto used it silently");
            check!(
                first.fallbacks.is_empty(),
                "KVM ran, yet a fallback was reported"
            );
        }
        _ => {
            check!(
                first.fallbacks.len() == 1,
                "the fallback was reported {} times in the first run: {:?}",
                first.fallbacks.len(),
                first.fallbacks
            );
            check!(
                second.fallbacks.is_empty(),
                "the second run reported the fallback again"
            );
            for g in [&first, &second] {
                check!(
                    g.run.accel.as_deref() == Some("tcg"),
                    "accel {:?}",
                    g.run.accel
                );
                check!(
                    g.run.kvm_fallback.is_some(),
                    "the run does not say why it left KVM"
                );
            }
            eprintln!("[faults] KVM fallback reason: {}", first.fallbacks[0]);
        }
    }
    Ok(())
}

/// Fault 3, deterministic: a qemu-system-x86_64 wrapper first on PATH adds
/// `-cpu host,-arch-capabilities` under KVM, with which guests on these machines
/// hang instead of aborting. The CLI must wait out the KVM deadline, say so once,
/// finish under TCG and exit 0. The wrapper logs each QEMU's pid (it execs QEMU),
/// so none may outlive the run.
/// A `qemu-system-x86_64` first on PATH that logs its pid and, asked for KVM,
/// starts the real QEMU with its CPUs stopped (`-S`): a KVM guest that never
/// speaks, on any host, whether its KVM works (GitHub's runners) or not (here).
/// `-cpu host,-arch-capabilities` keeps QEMU from aborting at once on hosts like
/// this one (an MSR KVM refuses), so the hang, not the abort, is what is met.
/// Returns the PATH to use and the pid log.
fn kvm_hang_wrapper(dir: &Path) -> Result<(String, PathBuf), Failed> {
    let qemu =
        which::which("qemu-system-x86_64").map_err(|_| "qemu-system-x86_64 is not on PATH")?;
    let pids = dir.join("pids");
    let script = format!(
        "#!/bin/sh\necho $$ >> '{pids}'\ncase \" $* \" in\n  *' -accel kvm '*) exec '{qemu}' \"$@\" -cpu host,-arch-capabilities -S ;;\nesac\nexec '{qemu}' \"$@\"\n",
        pids = pids.display(),
        qemu = qemu.display()
    );
    Ok((qemu_wrapper(dir, &script)?, pids))
}

/// Writes `script` as a `qemu-system-x86_64` in `dir/bin` and returns a PATH that
/// finds it before the real one.
fn qemu_wrapper(dir: &Path, script: &str) -> Result<String, Failed> {
    let wrapper_dir = dir.join("bin");
    std::fs::create_dir_all(&wrapper_dir).map_err(|e| e.to_string())?;
    let wrapper = wrapper_dir.join("qemu-system-x86_64");
    write(&wrapper, script.as_bytes())?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| e.to_string())?;
    let path = std::env::join_paths(std::iter::once(wrapper_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .map_err(|e| e.to_string())?;
    Ok(path.to_string_lossy().into_owned())
}

fn kvm_hang_fallback() -> Outcome {
    let dir = tempdir()?;
    let (path, pids) = kvm_hang_wrapper(dir.path())?;
    let out = cli(
        &[
            "run",
            "-k",
            "6.1",
            "-c",
            "tail_call.chain",
            "--jit",
            "jit",
            "--accel",
            "auto",
        ],
        &[("PATH", Some(&path))],
    )?;
    out.report("KVM hangs (wrapper)");
    check!(out.code == Some(0), "expected exit 0:\n{}", out.text());
    let said = out.stderr.matches("falling back to TCG").count();
    // Where /dev/kvm cannot be opened, KVM is never started and the fallback
    // comes at once; wherever it starts, the stopped guest must be given up on.
    let kvm_ran = out.stderr.contains("QEMU started (kvm)");
    check!(
        said == 1,
        "the fallback was said {said} times:\n{}",
        out.text()
    );
    check!(out.stdout.contains("under tcg"), "{}", out.text());
    if kvm_ran {
        check!(
            out.stderr.contains("no line from the guest within"),
            "the KVM guest did not hang as expected:\n{}",
            out.text()
        );
    }
    let logged = std::fs::read_to_string(&pids).unwrap_or_default();
    let pids: Vec<u32> = logged
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    check!(!pids.is_empty(), "the wrapper never ran");
    for p in processes() {
        check!(
            !pids.contains(&p.pid) || (!p.comm.contains("qemu") && p.state != 'Z'),
            "QEMU {} outlived the CLI (state {})",
            p.pid,
            p.state
        );
    }
    Ok(())
}

/// Fault 3 with two kernels booting at once (`--parallel 2`): KVM is probed and its
/// failure announced once, not once per kernel; both kernels complete under TCG.
fn kvm_fallback_two_kernels_at_once() -> Outcome {
    let k = kernel()?;
    let alt = format!("alt={}", k.boot_image.display());
    let modules = k
        .modules_dir
        .as_ref()
        .ok_or("kernel 6.1 has no modules directory")?
        .to_string_lossy()
        .into_owned();
    // Both boots meet a KVM that never speaks (the wrapper), so both must fall
    // back, and the fallback must be announced once for the process.
    let dir = tempdir()?;
    let (path, _pids) = kvm_hang_wrapper(dir.path())?;
    let out = cli(
        &[
            "run",
            "-k",
            "6.1",
            "-k",
            &alt,
            "--modules",
            &modules,
            "-c",
            "tail_call.chain",
            "--jit",
            "jit",
            "--accel",
            "auto",
            "--parallel",
            "2",
        ],
        &[("PATH", Some(&path))],
    )?;
    out.report("KVM fallback, two kernels at once");
    check!(out.code == Some(0), "expected exit 0:\n{}", out.text());
    for name in ["6.1: guest", "alt: guest"] {
        check!(
            out.stdout.contains(name),
            "{name:?} did not complete:\n{}",
            out.text()
        );
    }
    let said = out.stderr.matches("falling back to TCG").count();
    let under_tcg = out.stdout.matches(" under tcg").count();
    eprintln!(
        "[faults] two kernels at once: {under_tcg} under TCG, fallback announced {said} times"
    );
    check!(
        said == 1,
        "the KVM fallback was announced {said} times for one process:\n{}",
        out.stderr
    );
    check!(
        under_tcg == 2,
        "{under_tcg} of the 2 kernels ran under TCG:\n{}",
        out.text()
    );
    Ok(())
}

/// Fault 6: garbage lines, a record cut in half, a record for a case the plan did
/// not ask for, bytes that are not UTF-8, a message type the protocol lacks.
fn garbage() -> Outcome {
    let g = guest(Some(Fault::Garbage), ONE, Accel::Tcg, NORMAL_TIMEOUT)?;
    g.report("garbage");
    g.failed_with(&["not a guest message"])?;
    g.has_problem("this line is not JSON")?;
    g.has_problem("neither is this")?;
    g.has_problem("binary")?;
    g.has_problem("unknown variant `all_passed`")?;
    g.has_problem("EOF while parsing")?;
    g.has_problem("tail_call.empty_slot / jit that the plan did not ask for")?;
    check!(
        g.run.problems.len() == 6,
        "expected 6 problems, one per bad line: {:#?}",
        g.run.problems
    );
    check!(
        g.run.cells.len() == 1 && g.run.cells[0].record.is_some(),
        "the real record after the garbage was lost: {:#?}",
        g.run.cells
    );
    Ok(())
}

/// Fault 6: a well-formed message as one line of 1 MiB, then a normal run: cut at
/// MAX_LINE_BYTES, named, and the host does not hold the rest.
fn enormous_line() -> Outcome {
    let before = peak_rss_kib();
    let g = guest(Some(Fault::EnormousLine), ONE, Accel::Tcg, NORMAL_TIMEOUT)?;
    let after = peak_rss_kib();
    g.report("enormous line");
    eprintln!("[faults] enormous line: host peak RSS {before} -> {after} KiB");
    let limit = format!("longer than the {MAX_LINE_BYTES} byte limit");
    g.failed_with(&[&limit])?;
    check!(
        g.run.problems.len() == 1,
        "expected only the long line as a problem: {:#?}",
        g.run.problems
    );
    check!(
        g.run.problems[0].len() < 1024,
        "the problem quotes {} bytes of the line",
        g.run.problems[0].len()
    );
    check!(
        g.run.cells[0].record.is_some(),
        "the record after the long line was lost"
    );
    Ok(())
}

/// Fault 6: a guest writing well-formed lines without end (24 MiB, more than the
/// host's MAX_RESULT_BYTES of 16 MiB): QEMU killed, the run failed, the host's
/// memory bounded. The result port carries about 130 KB/s under TCG, so the 16 MiB
/// cap takes about two minutes to reach here; within [`FLOOD_TIMEOUT`] the deadline
/// ends the flood instead (where the port is faster, e.g. under KVM, the cap may).
fn flood() -> Outcome {
    // The serial port carries only ~100 KB/s under TCG, so the real 16 MiB cap
    // would take minutes to reach; the same code path is exercised with a cap
    // the flood passes in a few seconds.
    const CAP: u64 = 256 * 1024;
    let before = peak_rss_kib();
    let g = guest_capped(Some(Fault::Flood), ONE, Accel::Tcg, FLOOD_TIMEOUT, CAP)?;
    let after = peak_rss_kib();
    g.report("flood");
    let terminal = bpfmatrix::report::terminal(&g.doc, false);
    let json = json::to_json(&g.doc);
    eprintln!(
        "[faults] flood: host peak RSS {before} -> {after} KiB; {} warnings kept; terminal report {} bytes, matrix.json {} bytes",
        g.run.warnings.len(),
        terminal.len(),
        json.len()
    );
    let capped = format!("more than {CAP} bytes of results (QEMU killed)");
    g.failed_with(&[&capped])?;
    let more = g.run.warnings.last().cloned().unwrap_or_default();
    check!(
        g.run.warnings.len() == 21 && more.starts_with("… and "),
        "the flood's warnings were not capped: {} kept, last {more:?}",
        g.run.warnings.len()
    );
    check!(
        terminal.len() < 64 * 1024 && json.len() < 64 * 1024,
        "the report grew with the flood: terminal {} bytes, json {} bytes",
        terminal.len(),
        json.len()
    );
    check!(
        after.saturating_sub(before) < 512 * 1024,
        "the host grew by {} MiB",
        after.saturating_sub(before) / 1024
    );
    no_answers(&g.run, &capped)
}

/// Fault 6: nothing at all on the result port, then power-off.
fn silent() -> Outcome {
    let g = guest(Some(Fault::Silent), ONE, Accel::Tcg, NORMAL_TIMEOUT)?;
    g.report("silent");
    g.failed_with(&["never said hello"])?;
    no_answers(&g.run, "never said hello")
}

/// Fault 6: the guest dies before its agent says a word and its console falls
/// silent (as a kernel that cannot take its entry point does): seen within
/// seconds, not after the whole boot timeout.
fn dies_early() -> Outcome {
    let g = guest(
        Some(Fault::DeadBeforeHello),
        ONE,
        Accel::Tcg,
        NORMAL_TIMEOUT,
    )?;
    g.report("dies early");
    g.failed_with(&["died early", "went silent", "QEMU killed"])?;
    // The boot to the agent (5-7 s under TCG) plus the 8 s silence deadline: 12.7
    // to 13.3 s alone, and past 15 s when the suite's other guests load the
    // machine; half the boot timeout still tells a silent death from a timeout.
    check!(
        g.took < NORMAL_TIMEOUT / 2,
        "the early death took {:?} to be reported (the boot timeout is {NORMAL_TIMEOUT:?})",
        g.took
    );
    check!(!g.qemu.pids.is_empty(), "the QEMU process was never seen");
    no_answers(&g.run, "died early")
}

/// Fault 6: the guest dies mid-record: the last record half written with no
/// newline, no done. The complete record before it stands; the cut one does not.
fn cut_short() -> Outcome {
    let cases = [CaseId::TailCallChain, CaseId::TailCallEmptySlot];
    let g = guest(Some(Fault::CutShort), &cases, Accel::Tcg, NORMAL_TIMEOUT)?;
    g.report("cut short");
    g.failed_with(&["not a guest message", "EOF while parsing"])?;
    g.has_problem("the guest never said it was done")?;
    let first = g
        .run
        .cell(CaseId::TailCallChain, JitMode::Jit)
        .ok_or("no cell")?;
    check!(first.record.is_some(), "the complete record was lost");
    let last = g
        .run
        .cell(CaseId::TailCallEmptySlot, JitMode::Jit)
        .ok_or("no cell")?;
    check!(
        last.record.is_none() && matches!(last.verdict, Verdict::NoAnswer { .. }),
        "the cut record counted: {:?}",
        last.verdict
    );
    Ok(())
}

/// Fault 8 (the cache's side is tested in kernels/): two CLI runs at once on the
/// same cache both complete with their report.
fn two_runs_share_the_cache() -> Outcome {
    kernel()?; // the cache holds 6.1 before the two start
    let dir = tempdir()?;
    let outs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("report-{i}")))
        .collect();
    let children = outs
        .iter()
        .map(|o| {
            cli_spawn(
                &[
                    "run",
                    "-k",
                    "6.1",
                    "-c",
                    "tail_call.chain",
                    "--out",
                    &o.to_string_lossy(),
                ],
                &[],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = children
        .into_iter()
        .map(cli_wait)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (r, o)) in results.iter().zip(&outs).enumerate() {
        r.report(&format!("concurrent run {i}"));
        check!(r.code == Some(0), "run {i}:\n{}", r.text());
        check!(
            r.stdout.contains("OK: "),
            "run {i} has no verdict line:\n{}",
            r.text()
        );
        let doc = json::read(&o.join("matrix.json")).map_err(|e| format!("run {i}: {e:#}"))?;
        check!(
            doc.all_agree() && doc.cells().count() == 2,
            "run {i}'s matrix.json: {doc:#?}"
        );
        for f in ["matrix.md", "matrix.html"] {
            check!(o.join(f).is_file(), "run {i} wrote no {f}");
        }
    }
    Ok(())
}

/// Every cell of a run that died before its records is a no-answer naming why.
fn no_answers(run: &KernelRun, why: &str) -> Outcome {
    for c in &run.cells {
        match &c.verdict {
            Verdict::NoAnswer { reason } if reason.contains(why) => {}
            other => {
                return Err(format!(
                    "{} / {}: expected no answer ({why}), got {other:?}",
                    c.case, c.jit
                )
                .into())
            }
        }
    }
    Ok(())
}

/// Issue 10: bpfmatrix killed with SIGTERM (`timeout`, a CI runner cancelling a
/// job, `kill`) while its guest hangs: its QEMU dies with it, within seconds.
fn killed_with_its_guests() -> Outcome {
    killed_while_its_guest_hangs("TERM", Hanging::Agent)
}

/// Issue 10: the same with SIGKILL, which bpfmatrix cannot catch: its QEMU still
/// dies with it.
fn killed_hard_with_its_guests() -> Outcome {
    killed_while_its_guest_hangs("KILL", Hanging::Agent)
}

/// What hangs while bpfmatrix is killed.
#[derive(Clone, Copy)]
enum Hanging {
    /// `bpfmatrix run`: its agent says hello and hangs ([`Fault::Hang`], through a
    /// QEMU wrapper).
    Agent,
    /// `bpfmatrix exec`: the user's command (`sleep`), in a guest started the way
    /// exec starts it (restored from its saved state when there is one).
    Command,
}

/// What the hanging command writes to its stderr before it sleeps.
const ASLEEP: &str = "bpfmatrix-faults: the command sleeps now";

/// Starts bpfmatrix on kernel 6.1 with something that hangs ([`Hanging`]), waits
/// until its QEMU runs as bpfmatrix's child and the hang has begun (the guest has
/// spoken; or the command said it sleeps), sends `signal` to bpfmatrix alone (not
/// its process group, as a terminal's Ctrl-C does not reach QEMU's group either),
/// and checks that bpfmatrix died of it and that neither QEMU nor anything else of
/// its process group runs 5 s later.
///
/// `run` has no way to inject a fault, and gets none: a qemu-system-x86_64
/// wrapper first on PATH logs its pid and arguments and execs the real QEMU (so
/// the pid is QEMU's) with the CLI's `-initrd` replaced by a guest built here with
/// the agent in [`Fault::Hang`]. `exec` needs none (the command hangs), nor a
/// wrapper, which would change the saved state's key: its QEMU is found as
/// bpfmatrix's child that has the host's root shared.
fn killed_while_its_guest_hangs(signal: &str, hanging: Hanging) -> Outcome {
    kernel()?; // the cache holds 6.1 before the CLI starts
    let agent = agent()?;
    let dir = tempdir()?;
    let hang = dir.path().join("hang-initramfs.cpio");
    let log = dir.path().join("qemu.log");
    let sleeps = format!("echo '{ASLEEP}' >&2; exec sleep 1000");
    let (args, env): (Vec<&str>, Vec<(&str, Option<String>)>) = match hanging {
        Hanging::Agent => {
            let plan = bpfmatrix_protocol::Plan {
                protocol: bpfmatrix_protocol::PROTOCOL_VERSION,
                cases: ONE.to_vec(),
                jit_modes: vec![JitMode::Jit],
                modules: vec![],
                result_port: "/dev/ttyS1".into(),
                fault: Some(Fault::Hang),
                objects: vec![],
                exec: None,
            };
            bpfmatrix_vm::guest::build_guest_initramfs(agent, &plan, &[], &[], &hang)
                .map_err(|e| format!("cannot build the hanging guest: {e:#}"))?;
            let qemu = which::which("qemu-system-x86_64")
                .map_err(|_| "qemu-system-x86_64 is not on PATH")?;
            let script = format!(
                "#!/bin/sh\necho \"$$ $*\" >> '{log}'\nn=$#\nprev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = -initrd ]; then a='{hang}'; fi\n  prev=$a\n  set -- \"$@\" \"$a\"\ndone\nshift $n\nexec '{qemu}' \"$@\"\n",
                log = log.display(),
                hang = hang.display(),
                qemu = qemu.display()
            );
            let path = qemu_wrapper(dir.path(), &script)?;
            (
                vec![
                    "run",
                    "-k",
                    "6.1",
                    "-c",
                    "tail_call.chain",
                    "--jit",
                    "jit",
                    "--accel",
                    "tcg",
                    "--timeout",
                    "600",
                ],
                vec![("PATH", Some(path))],
            )
        }
        Hanging::Command => (
            vec![
                "exec",
                "-k",
                "6.1",
                "--jit",
                "jit",
                "--accel",
                "tcg",
                "--timeout",
                "600",
                "--",
                "sh",
                "-c",
                &sleeps,
            ],
            vec![],
        ),
    };
    let env: Vec<(&str, Option<&str>)> = env.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    let Running(child, started) = cli_spawn(&args, &env)?;
    // Killed (with its process group) whatever happens below.
    let mut cli = KillOnDrop(child);
    let bpfmatrix = cli.0.id();
    if signal == "INT" {
        // A signal ignored on entry stays ignored across exec (a shell's `cmd &`
        // does that to SIGINT): then no Ctrl-C could reach bpfmatrix here.
        check!(
            !signal_ignored(bpfmatrix, 2),
            "bpfmatrix {bpfmatrix} inherited SIGINT ignored from this test process: Ctrl-C cannot be tried here"
        );
    }
    let stderr = cli.0.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let hung = match hanging {
        Hanging::Agent => "guest spoke after",
        Hanging::Command => ASLEEP,
    };
    // The command's own line is its text alone (bpfmatrix's own lines quote it).
    let has_hung = |l: &String| match hanging {
        Hanging::Agent => l.contains(hung),
        Hanging::Command => l == hung,
    };
    let mut said = Vec::new();
    let spoke = Instant::now() + CLI_DEADLINE;
    while !said.iter().any(has_hung) {
        let left = spoke.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => said.push(line),
            Err(_) => {
                return Err(format!(
                    "the guest never said {hung:?} within {CLI_DEADLINE:?}:\n{}",
                    said.join("\n")
                )
                .into())
            }
        }
    }
    // The guest hangs: QEMU runs, bpfmatrix's child.
    let (qemu_pid, socket) = match hanging {
        Hanging::Agent => {
            let logged =
                std::fs::read_to_string(&log).map_err(|e| format!("the wrapper never ran: {e}"))?;
            let (pid, args) = logged
                .lines()
                .last()
                .and_then(|l| l.split_once(' '))
                .ok_or("the wrapper logged nothing")?;
            let pid: u32 = pid.parse().map_err(|_| format!("bad pid {pid:?}"))?;
            let socket = args
                .split_whitespace()
                .find_map(|a| a.split(",path=").nth(1))
                .ok_or("no result socket in QEMU's arguments")?
                .to_string();
            (pid, socket)
        }
        Hanging::Command => {
            let qemus: Vec<Proc> = processes()
                .filter(|p| p.ppid == bpfmatrix && p.comm.contains("qemu") && p.state != 'Z')
                .collect();
            check!(
                qemus.len() == 1,
                "expected one QEMU child of bpfmatrix {bpfmatrix}, found {}",
                qemus.len()
            );
            let socket = qemus[0]
                .cmdline
                .split_whitespace()
                .find_map(|a| a.split(",path=").nth(1))
                .ok_or("no result socket in QEMU's arguments")?
                .to_string();
            (qemus[0].pid, socket)
        }
    };
    let p = processes()
        .find(|p| p.pid == qemu_pid)
        .ok_or("QEMU is not running")?;
    check!(
        p.comm.contains("qemu") && p.ppid == bpfmatrix && p.state != 'Z',
        "pid {qemu_pid} is not a running QEMU child of bpfmatrix {bpfmatrix}: {} (parent {}, state {})",
        p.comm,
        p.ppid,
        p.state
    );
    let group = process_group(qemu_pid).ok_or("QEMU has no process group")?;
    let (mark, what) = match hanging {
        Hanging::Agent => (
            hang.to_string_lossy().into_owned(),
            "boot the hanging guest",
        ),
        Hanging::Command => (
            format!("mount_tag={}", bpfmatrix_protocol::HOST_ROOT_TAG),
            "share the host's root",
        ),
    };
    check!(
        p.cmdline.contains(mark.as_str()),
        "QEMU does not {what}: {}",
        p.cmdline
    );

    let killed = Instant::now();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &bpfmatrix.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    check!(sent.success(), "kill -{signal} {bpfmatrix} failed");
    let status = loop {
        if let Some(status) = cli.0.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        check!(
            killed.elapsed() < Duration::from_secs(10),
            "bpfmatrix still runs 10 s after SIG{signal}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let died = killed.elapsed();
    let expected = match signal {
        "TERM" => 15,
        "INT" => 2,
        _ => 9,
    };
    check!(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(expected),
        "bpfmatrix did not die of SIG{signal}: {status}"
    );
    // Dead is gone, or a zombie: this machine's init may not reap orphans.
    let running = |p: &Proc| !matches!(p.state, 'Z' | 'X');
    let left = loop {
        let left: Vec<String> = processes()
            .filter(|p| running(p) && p.pid != bpfmatrix)
            .filter(|p| {
                p.pid == qemu_pid
                    || process_group(p.pid) == Some(group)
                    || p.cmdline.contains(socket.as_str())
                    || p.cmdline.contains(hang.to_string_lossy().as_ref())
            })
            .map(|p| {
                format!(
                    "{} {} (state {}, parent {}): {}",
                    p.pid,
                    p.comm,
                    p.state,
                    p.ppid,
                    cut(&p.cmdline, 200)
                )
            })
            .collect();
        if left.is_empty() || killed.elapsed() > died + Duration::from_secs(5) {
            break left;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let gone = killed.elapsed();
    eprintln!(
        "[faults] SIG{signal} to bpfmatrix {bpfmatrix} {:.1} s after its start, its {} hanging: bpfmatrix died of it after {} ms; QEMU {qemu_pid} and its process group {group} {} {} ms after the signal",
        killed.duration_since(started).as_secs_f64(),
        match hanging {
            Hanging::Agent => "guest",
            Hanging::Command => "command",
        },
        died.as_millis(),
        if left.is_empty() { "dead" } else { "still running" },
        gone.as_millis()
    );
    check!(
        left.is_empty(),
        "5 s after bpfmatrix died of SIG{signal}, its guest still runs:\n{}",
        left.join("\n")
    );
    Ok(())
}

/// Whether `signal` is ignored in process `pid` (its SigIgn mask, from /proc).
fn signal_ignored(pid: u32, signal: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// A started bpfmatrix, its process group killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.id())])
                .status();
            let _ = self.0.wait();
        }
    }
}

/// The process group of `pid`, from /proc.
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// exec::*: the user's own command misbehaving in the guest (`bpfmatrix exec`).
// ---------------------------------------------------------------------------

/// The deadline (`--timeout`) of exec runs whose command ends: a restored guest
/// answers in about 1 s, a booted one (the saved state missing, or discarded
/// after another trial's fault) in about 10 s.
const EXEC_TIMEOUT: Duration = NORMAL_TIMEOUT;
/// The deadline of the hanging command ([`exec_hang`]).
const EXEC_HANG_TIMEOUT: Duration = Duration::from_secs(20);
/// The deadline of [`exec_flood`], which takes about 2 minutes here (see there).
const EXEC_FLOOD_TIMEOUT: Duration = Duration::from_secs(300);
/// A restored guest whose run does not end cleanly (a timeout, a panic) is
/// discarded and the guest booted and run again (`snapshot::boot_or_restore`: a
/// restore never gives an answer a boot would not). So a command that hangs or
/// panics the kernel runs twice, and its verdict may take two deadlines and a
/// boot: this is the boot's share of the bound.
const EXEC_RETRY_SLACK: Duration = Duration::from_secs(45);

/// One finished `bpfmatrix exec -k 6.1` (JIT mode, TCG, the user's saved states):
/// the invocation, its exec.json, and the QEMU processes it started.
struct Exec {
    cli: Cli,
    /// exec.json from `--out`, when it was written.
    matrix: Option<ExecMatrix>,
    /// Every QEMU seen running as bpfmatrix's child.
    qemus: Vec<u32>,
}

/// Runs `bpfmatrix exec -k 6.1 ... -- COMMAND` with `--timeout timeout`, killed
/// (and the trial failed) if it outlives `deadline`; checks that none of its QEMU
/// processes outlives it.
fn exec(command: &[&str], timeout: Duration, deadline: Duration) -> Result<Exec, Failed> {
    kernel()?; // the cache holds 6.1 before the CLI starts
    agent()?; // and the agent is built: the CLI's own build is then a check
    let dir = tempdir()?;
    let out = dir.path().join("report");
    let out_arg = out.to_string_lossy().into_owned();
    let timeout_arg = timeout.as_secs().to_string();
    let mut args = vec![
        "exec",
        "-k",
        "6.1",
        "--jit",
        "jit",
        "--accel",
        "tcg",
        "--timeout",
        &timeout_arg,
        "--out",
        &out_arg,
        "--",
    ];
    args.extend_from_slice(command);
    let running = cli_spawn(&args, &[])?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, parent) = (stop.clone(), running.0.id());
        std::thread::spawn(move || qemu_children(parent, &stop))
    };
    let cli = cli_wait_within(running, deadline);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let qemus = watcher.join().map_err(|_| "the QEMU watcher panicked")?;
    let cli = cli?;
    let json = out.join("exec.json");
    let matrix = match std::fs::read_to_string(&json) {
        Ok(text) => {
            Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?)
        }
        Err(_) => None,
    };
    let done = Exec { cli, matrix, qemus };
    done.none_left()?;
    Ok(done)
}

/// The QEMU processes that run as children of `parent`, sampled until `stop`.
fn qemu_children(parent: u32, stop: &std::sync::atomic::AtomicBool) -> Vec<u32> {
    let mut seen = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for p in processes() {
            if p.ppid == parent && p.comm.contains("qemu") && !seen.contains(&p.pid) {
                seen.push(p.pid);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

impl Exec {
    fn none_left(&self) -> Outcome {
        check!(
            !self.qemus.is_empty(),
            "no QEMU was seen:\n{}",
            self.cli.text()
        );
        for p in processes() {
            check!(
                !self.qemus.contains(&p.pid) || (!p.comm.contains("qemu") && p.state != 'Z'),
                "QEMU {} outlived bpfmatrix exec (state {})",
                p.pid,
                p.state
            );
        }
        Ok(())
    }

    /// Kernel 6.1's run in exec.json.
    fn run(&self) -> Result<&ExecRun, Failed> {
        let m = self
            .matrix
            .as_ref()
            .ok_or_else(|| format!("no exec.json was written:\n{}", self.cli.text()))?;
        check!(
            m.runs.len() == 1 && m.runs[0].kernel == "6.1",
            "exec.json has runs {:?}",
            m.runs.iter().map(|r| &r.kernel).collect::<Vec<_>>()
        );
        Ok(&m.runs[0])
    }

    /// The JIT mode's cell of the run.
    fn cell(&self) -> Result<&ExecCell, Failed> {
        let run = self.run()?;
        check!(
            run.cells.len() == 1 && run.cells[0].jit == JitMode::Jit,
            "expected one cell (jit): {:#?}",
            run.cells
        );
        Ok(&run.cells[0])
    }

    /// How the command ended, as the guest said.
    fn exit(&self) -> Result<&Exit, Failed> {
        self.cell()?.exit.as_ref().ok_or_else(|| {
            format!(
                "the guest never said how the command ended:\n{}",
                self.cli.text()
            )
            .into()
        })
    }

    /// The terminal's table row of the command (plain format: the one row under
    /// the rule), which begins with the command, or as much of it as fits.
    fn row(&self) -> Result<&str, Failed> {
        let mut lines = self.cli.stdout.lines();
        lines
            .find(|l| l.starts_with("---"))
            .and_then(|_| lines.next())
            .ok_or_else(|| format!("no table in the terminal:\n{}", self.cli.stdout).into())
    }

    /// bpfmatrix exited 1, the run failed for a reason containing every one of
    /// `needles`, the terminal says the first, and no cell has an exit status.
    fn failed_with(&self, needles: &[&str]) -> Outcome {
        check!(
            self.cli.code == Some(1),
            "expected exit 1:\n{}",
            cut(&self.cli.text(), 4000)
        );
        let run = self.run()?;
        let reason = run.reason.as_deref().unwrap_or("");
        check!(
            run.status == "failed",
            "expected a failed run, got {} ({reason})",
            run.status
        );
        for n in needles {
            check!(
                reason.contains(n),
                "the reason does not say {n:?}: {reason}"
            );
        }
        check!(
            self.cli.stdout.contains(needles[0]),
            "the terminal does not say {:?}:\n{}",
            needles[0],
            self.cli.stdout
        );
        check!(
            run.cells.iter().all(|c| c.exit.is_none() && !c.passed()),
            "a failed run has an exit status: {:#?}",
            run.cells
        );
        Ok(())
    }

    fn report(&self, name: &str) {
        let (status, restored) = match self.run() {
            Ok(r) => (
                format!("{}: {}", r.status, r.reason.as_deref().unwrap_or("")),
                r.restored,
            ),
            Err(_) => ("no exec.json".to_string(), false),
        };
        let exit = self
            .exit()
            .map(|e| format!("{e:?}"))
            .unwrap_or_else(|_| "none".into());
        let discarded = self.cli.stderr.contains("saved state not used");
        eprintln!(
            "[faults] {name}: exit {:?} after {:.1} s: {}; command exit {exit}; {} QEMU started, last restored: {restored}, a saved state discarded: {discarded}",
            self.cli.code,
            self.cli.took.as_secs_f64(),
            cut(&status, 300),
            self.qemus.len()
        );
    }
}

/// exec: a command that is on no folder of the PATH it is given (the caller's):
/// exit 127 and a note naming it, in a run that completed; bpfmatrix exits 1.
fn exec_command_not_found() -> Outcome {
    const MISSING: &str = "bpfmatrix-faults-no-such-command";
    let e = exec(&[MISSING, "--version"], EXEC_TIMEOUT, CLI_DEADLINE)?;
    e.report("exec: command not found");
    check!(e.cli.code == Some(1), "expected exit 1:\n{}", e.cli.text());
    let run = e.run()?;
    check!(
        run.status == "completed",
        "the run did not complete: {} {:?}",
        run.status,
        run.reason
    );
    let exit = e.exit()?;
    let named = format!("{MISSING}: command not found");
    check!(
        exit.code == Some(127) && exit.signal.is_none(),
        "expected exit code 127: {exit:?}"
    );
    check!(
        exit.error.as_deref().is_some_and(|m| m.contains(&named)),
        "the error does not say {named:?}: {exit:?}"
    );
    check!(
        e.row()?.starts_with(MISSING) && e.row()?.contains("127"),
        "the command's cell does not show 127:\n{}",
        e.cli.stdout
    );
    check!(
        e.cli.stdout.contains(&named),
        "the terminal does not say {named:?}:\n{}",
        e.cli.stdout
    );
    check!(
        e.cli.took < EXEC_TIMEOUT,
        "took {:.1} s",
        e.cli.took.as_secs_f64()
    );
    Ok(())
}

/// exec: the command never ends (`sleep 1000`): the guest is killed at the
/// deadline, the run fails saying so, no exit status is made up, bpfmatrix
/// exits 1: after the deadline, or two and a boot when the guest was restored
/// ([`EXEC_RETRY_SLACK`]).
fn exec_hang() -> Outcome {
    let t = EXEC_HANG_TIMEOUT;
    let e = exec(&["sleep", "1000"], t, CLI_DEADLINE)?;
    e.report("exec: command hangs");
    let limit = format!("timed out after {} s", t.as_secs());
    e.failed_with(&[&limit, "QEMU killed"])?;
    check!(
        e.cli.took >= t && e.cli.took < 2 * t + EXEC_RETRY_SLACK,
        "the verdict came after {:.1} s, the deadline is {t:?}",
        e.cli.took.as_secs_f64()
    );
    Ok(())
}

/// exec: the command panics the guest's kernel (sysrq c): the run fails naming
/// the panic with the console's lines, bpfmatrix exits 1 (a restored guest's
/// panic is met twice: [`EXEC_RETRY_SLACK`]).
fn exec_panic() -> Outcome {
    let e = exec(
        &[
            "sh",
            "-c",
            "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger",
        ],
        EXEC_TIMEOUT,
        CLI_DEADLINE,
    )?;
    e.report("exec: command panics the guest");
    e.failed_with(&[
        "the guest kernel panicked",
        "Kernel panic - not syncing",
        "sysrq",
    ])?;
    check!(
        e.cli.took < EXEC_TIMEOUT,
        "the panic took {:.1} s to be reported",
        e.cli.took.as_secs_f64()
    );
    Ok(())
}

/// exec: a command that prints without end (`yes`, cut by `head` at 600 MB,
/// more than the guest's memory): the guest sends [`MAX_EXEC_OUTPUT_BYTES`] of it
/// and drops the rest, says how much, and the command's exit status still comes
/// home; nothing hangs. All of it must pass: a guest that kept what the port had
/// not yet taken ran out of memory, and its OOM killer took the command.
///
/// The result port carries about 100 to 130 KB/s under TCG here, so the MiB
/// that is sent takes about 10 s (`yes` prints lines of 100 bytes, which their
/// JSON message barely lengthens: `y\n`, escaped, would be half as long again),
/// and the rest passes through the guest in about 35 s more.
fn exec_flood() -> Outcome {
    const PRINTED: u64 = 600_000_000;
    let memory = u64::from(bpfmatrix::run::Settings::default().memory_mib) << 20;
    check!(
        PRINTED > memory,
        "{PRINTED} bytes would fit in the guest's {memory}"
    );
    const LINE: &str = "bpfmatrix-faults: a command that prints without end, these 100 bytes again and again and again and.";
    const _: () = assert!(LINE.len() == 99);
    let command = format!("yes '{LINE}' | head -c {PRINTED}");
    let e = exec(
        &["sh", "-c", &command],
        EXEC_FLOOD_TIMEOUT,
        EXEC_FLOOD_TIMEOUT + Duration::from_secs(60),
    )?;
    e.report("exec: output without end");
    let dropped = PRINTED - MAX_EXEC_OUTPUT_BYTES;
    let cell = e.cell()?;
    let exit = e.exit()?;
    eprintln!(
        "[faults] exec: output without end: {} bytes kept, {} dropped, the command took {:.1} s in the guest",
        cell.stdout.len(),
        exit.output_dropped,
        exit.duration_ms as f64 / 1000.0
    );
    check!(
        e.cli.code == Some(0),
        "expected exit 0 (the command passed):\n{}",
        cut(&e.cli.stderr, 4000)
    );
    check!(
        e.run()?.status == "completed" && exit.code == Some(0),
        "the command's exit status was lost: {exit:?}"
    );
    check!(
        exit.output_dropped == dropped,
        "expected {dropped} bytes dropped: {exit:?}"
    );
    check!(
        cell.stdout.len() as u64 == MAX_EXEC_OUTPUT_BYTES,
        "exec.json keeps {} bytes of output, the cap is {MAX_EXEC_OUTPUT_BYTES}",
        cell.stdout.len()
    );
    check!(
        cell.stdout.starts_with(LINE),
        "the output kept is not the command's"
    );
    let note = format!("{dropped} bytes of output past");
    check!(
        e.cli.stdout.contains(&note),
        "the terminal does not say {note:?}:\n{}",
        cut(
            e.cli
                .stdout
                .rsplit_once(LINE)
                .map_or(e.cli.stdout.as_str(), |(_, t)| t),
            4000
        )
    );
    // The streamed output: what the guest sent, and the table.
    let streamed = e.cli.stdout.len() as u64;
    check!(
        (MAX_EXEC_OUTPUT_BYTES..MAX_EXEC_OUTPUT_BYTES + 64 * 1024).contains(&streamed),
        "bpfmatrix printed {streamed} bytes"
    );
    check!(
        e.cli.took < EXEC_FLOOD_TIMEOUT,
        "took {:.1} s",
        e.cli.took.as_secs_f64()
    );
    Ok(())
}

/// exec: a program whose library lies in the host's /tmp, which the guest does
/// not see (its /tmp is its own): the loader's own error streams home on stderr
/// and its exit code 127 is in the matrix; bpfmatrix exits 1. The program itself
/// is in /var/tmp, which the guest sees, and runs on the host.
fn exec_libraries_not_in_the_guest() -> Outcome {
    const LIB: &str = "bpfmatrixfaults";
    let lib_dir = tempfile::Builder::new()
        .prefix("bpfmatrix-faults-lib-")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    // /var/tmp, which the guest sees wherever the checkout is (a clone under the
    // host's /tmp is not seen).
    let bin_dir = tempfile::Builder::new()
        .prefix("bpfmatrix-faults-")
        .tempdir_in("/var/tmp")
        .map_err(|e| e.to_string())?;
    let (lib_c, main_c) = (lib_dir.path().join("lib.c"), bin_dir.path().join("main.c"));
    write(
        &lib_c,
        b"int bpfmatrix_faults_answer(void) { return 42; }\n",
    )?;
    write(
        &main_c,
        b"#include <stdio.h>\nint bpfmatrix_faults_answer(void);\nint main(void) { printf(\"the answer is %d\\n\", bpfmatrix_faults_answer()); return 0; }\n",
    )?;
    let lib = lib_dir.path().join(format!("lib{LIB}.so"));
    let program = bin_dir.path().join("needs-a-library-in-tmp");
    let gcc = |args: Vec<std::ffi::OsString>| -> Outcome {
        let out = Command::new("gcc")
            .args(&args)
            .output()
            .map_err(|e| format!("gcc is needed to build the sample program: {e}"))?;
        check!(
            out.status.success(),
            "gcc {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    gcc(vec![
        "-shared".into(),
        "-fPIC".into(),
        "-o".into(),
        lib.clone().into(),
        lib_c.into(),
    ])?;
    gcc(vec![
        "-o".into(),
        program.clone().into(),
        main_c.into(),
        format!("-L{}", lib_dir.path().display()).into(),
        format!("-l{LIB}").into(),
        format!("-Wl,-rpath,{}", lib_dir.path().display()).into(),
    ])?;
    let here = Command::new(&program)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    check!(
        here.status.success() && String::from_utf8_lossy(&here.stdout).contains("answer is 42"),
        "the sample does not run on the host: {here:?}"
    );

    let program_arg = program.to_string_lossy().into_owned();
    let e = exec(&[&program_arg], EXEC_TIMEOUT, CLI_DEADLINE)?;
    e.report("exec: libraries not in the guest");
    check!(e.cli.code == Some(1), "expected exit 1:\n{}", e.cli.text());
    check!(
        e.run()?.status == "completed",
        "the run did not complete: {:?}",
        e.run()?.reason
    );
    let exit = e.exit()?;
    check!(exit.code == Some(127), "expected exit code 127: {exit:?}");
    let loader = "error while loading shared libraries";
    let so = format!("lib{LIB}.so");
    let stderr = &e.cell()?.stderr;
    check!(
        stderr.contains(loader) && stderr.contains(&so),
        "exec.json's stderr does not have the loader's error: {stderr:?}"
    );
    check!(
        e.cli.stderr.contains(loader) && e.cli.stderr.contains(&so),
        "the loader's error did not stream home on stderr:\n{}",
        e.cli.stderr
    );
    check!(
        !e.cli.stdout.contains("answer is"),
        "the program ran without its library"
    );
    check!(
        e.row()?.starts_with(&program_arg[..30]) && e.row()?.contains("127"),
        "the program's cell does not show 127:\n{}",
        e.cli.stdout
    );
    check!(
        e.cli.took < EXEC_TIMEOUT,
        "took {:.1} s",
        e.cli.took.as_secs_f64()
    );
    Ok(())
}

/// exec: bpfmatrix killed by SIGTERM (`timeout`, a CI runner cancelling a job),
/// then by SIGINT (Ctrl-C), while the user's command sleeps in the guest: each
/// time its QEMU dies with it.
fn exec_killed_with_its_guest() -> Outcome {
    killed_while_its_guest_hangs("TERM", Hanging::Command)?;
    killed_while_its_guest_hangs("INT", Hanging::Command)
}

// ---------------------------------------------------------------------------
// Saved states (snapshot::*): each trial has a store of its own.
// ---------------------------------------------------------------------------

/// One run of kernel 6.1 (two cases, JIT mode) from `store`, with saved states
/// on: the run, and the events that say how its guests were started.
struct StoreRun {
    run: KernelRun,
    events: Vec<VmEvent>,
    took: Duration,
}

impl StoreRun {
    fn restored(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, VmEvent::Restored { .. }))
    }

    fn boots(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, VmEvent::Starting { .. }))
            .count()
    }

    fn discarded(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                VmEvent::StateDiscarded { reason } => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }

    fn agrees(&self) -> Outcome {
        check!(
            self.run.agrees(),
            "the run does not agree: {:?}\n{:#?}",
            self.run.status,
            self.run.cells
        );
        Ok(())
    }
}

const STORE_CASES: &[CaseId] = &[CaseId::TailCallChain, CaseId::FentryTcTestRun];

fn store_run(
    store: &Path,
    agent: &Path,
    fault: Option<Fault>,
    timeout: Duration,
) -> Result<StoreRun, Failed> {
    let settings = Settings {
        fault,
        cases: STORE_CASES.to_vec(),
        jit_modes: vec![JitMode::Jit],
        accel: Accel::Tcg,
        timeout,
        snapshot_dir: Some(store.to_path_buf()),
        ..Settings::default()
    };
    let mut events = Vec::new();
    let started = Instant::now();
    let run = run::run_kernel(kernel()?, agent, &settings, &mut |p| {
        if let Progress::Vm { event, .. } = p {
            if !matches!(event, VmEvent::Console(_) | VmEvent::GuestLine(_)) {
                events.push(event.clone());
            }
        }
    });
    let done = StoreRun {
        run,
        events,
        took: started.elapsed(),
    };
    eprintln!(
        "[faults] store run: {} boot(s), restored: {}, {:.1} s, discarded: {:?}",
        done.boots(),
        done.restored(),
        done.took.as_secs_f64(),
        done.discarded()
    );
    Ok(done)
}

/// The store's saved states and sidecars (and anything else left in it).
fn store_files(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The one saved state in `store` (a first run put it there).
fn the_state(store: &Path) -> Result<PathBuf, Failed> {
    let states: Vec<String> = store_files(store)
        .into_iter()
        .filter(|n| n.ends_with(".state"))
        .collect();
    check!(
        states.len() == 1,
        "expected one saved state, the store has {:?}",
        store_files(store)
    );
    Ok(store.join(&states[0]))
}

/// A store with a saved state of kernel 6.1, made by a first run that booted.
fn store_with_state(agent: &Path) -> Result<(tempfile::TempDir, PathBuf), Failed> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let first = store_run(dir.path(), agent, None, NORMAL_TIMEOUT)?;
    first.agrees()?;
    check!(
        !first.restored(),
        "a first run in an empty store was restored"
    );
    let state = the_state(dir.path())?;
    Ok((dir, state))
}

/// After a fault: the run booted, agrees, said why it discarded the state (a
/// reason containing `reason`), and a whole state is back in the store.
fn booted_instead(after: &StoreRun, store: &Path, what: &str, reason: &str) -> Outcome {
    after.agrees()?;
    check!(
        !after.restored() || after.boots() >= 2,
        "{what}: no boot after the failed restore"
    );
    check!(
        after.discarded().iter().any(|r| r.contains(reason)),
        "{what}: not discarded for it (no reason saying {reason:?}): {:?}",
        after.discarded()
    );
    let state = the_state(store)?;
    let sidecar = state.with_extension("json");
    check!(sidecar.is_file(), "{what}: the new state has no sidecar");
    check!(
        !store_files(store).iter().any(|n| n.ends_with(".partial")),
        "{what}: a half-written state is left: {:?}",
        store_files(store)
    );
    Ok(())
}

/// Cuts a saved state to half its length, as a full disk or a crash would;
/// returns the new length.
fn cut_in_half(state: &Path) -> Result<u64, Failed> {
    let len = std::fs::metadata(state).map_err(|e| e.to_string())?.len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(state)
        .map_err(|e| e.to_string())?;
    f.set_len(len / 2).map_err(|e| e.to_string())?;
    Ok(len / 2)
}

/// A state cut short is caught by its length before QEMU sees it.
fn snapshot_cut_short() -> Outcome {
    let agent = agent()?;
    let (dir, state) = store_with_state(agent)?;
    cut_in_half(&state)?;
    let after = store_run(dir.path(), agent, None, NORMAL_TIMEOUT)?;
    check!(!after.restored(), "a state cut to half was restored");
    booted_instead(&after, dir.path(), "cut short", "its sidecar says")
}

/// A state cut short whose sidecar was made to agree: QEMU refuses the stream.
fn snapshot_refused_by_qemu() -> Outcome {
    let agent = agent()?;
    let (dir, state) = store_with_state(agent)?;
    let half = cut_in_half(&state)?;
    let sidecar = state.with_extension("json");
    let text = std::fs::read_to_string(&sidecar).map_err(|e| e.to_string())?;
    let mut doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    doc["bytes"] = half.into();
    std::fs::write(&sidecar, doc.to_string()).map_err(|e| e.to_string())?;
    let after = store_run(dir.path(), agent, None, NORMAL_TIMEOUT)?;
    check!(
        after.boots() >= 2,
        "QEMU was not started again after the refused state"
    );
    booted_instead(&after, dir.path(), "refused by QEMU", "restored from")
}

/// A state saved by another agent build, found under this build's key, is
/// known by the agent build its guest names, and discarded.
fn snapshot_another_agent_build() -> Outcome {
    let agent = agent()?;
    let (dir, state) = store_with_state(agent)?;
    // Another build: the same binary under another name, so another agent id
    // (and another key) in its guest.
    let other_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let other = other_dir.path().join("bpfmatrix-agent-anotherbuild");
    std::fs::copy(agent, &other).map_err(|e| e.to_string())?;
    let foreign_store = tempfile::tempdir().map_err(|e| e.to_string())?;
    let first = store_run(foreign_store.path(), &other, None, NORMAL_TIMEOUT)?;
    first.agrees()?;
    let foreign = the_state(foreign_store.path())?;
    check!(
        foreign.file_name() != state.file_name(),
        "the other build's state has this build's key"
    );
    std::fs::copy(&foreign, &state).map_err(|e| e.to_string())?;
    std::fs::copy(foreign.with_extension("json"), state.with_extension("json"))
        .map_err(|e| e.to_string())?;
    let after = store_run(dir.path(), agent, None, NORMAL_TIMEOUT)?;
    booted_instead(
        &after,
        dir.path(),
        "another agent build",
        "bpfmatrix-agent-anotherbuild",
    )
}

/// A restored guest that never answers is killed at the restore deadline and
/// the guest booted: here the plan makes the agent hang before its hello, so the
/// boot hangs too and the run fails at its timeout, but only after the restore
/// was given up within its deadline and a boot was tried.
fn snapshot_restored_guest_silent() -> Outcome {
    let agent = agent()?;
    let (dir, _) = store_with_state(agent)?;
    let after = store_run(
        dir.path(),
        agent,
        Some(Fault::HangBeforeHello),
        HANG_TIMEOUT,
    )?;
    check!(after.restored(), "the guest was not restored");
    check!(
        after.boots() == 2,
        "expected a restore and a boot, saw {} starts",
        after.boots()
    );
    let why = after.discarded().join(" | ");
    check!(
        why.contains("did not answer within"),
        "not discarded for its silence: {why}"
    );
    check!(
        matches!(after.run.status, RunStatus::Failed { .. }),
        "a hanging guest's run did not fail: {:?}",
        after.run.status
    );
    check!(
        after
            .run
            .cells
            .iter()
            .all(|c| c.record.is_none() && !c.agrees()),
        "a silent guest has cells with answers"
    );
    check!(
        after.took
            < HANG_TIMEOUT + bpfmatrix_vm::snapshot::RESTORE_DEADLINE + Duration::from_secs(20),
        "took {:.1} s",
        after.took.as_secs_f64()
    );
    Ok(())
}

/// Two runs on an empty store race to save the same state: each ends whole, one
/// wins, nothing half-written stays, and a third run is restored from it.
fn snapshot_two_runs_race() -> Outcome {
    let agent = agent()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| store_run(dir.path(), agent, None, NORMAL_TIMEOUT));
        let b = s.spawn(|| store_run(dir.path(), agent, None, NORMAL_TIMEOUT));
        (a.join(), b.join())
    });
    for r in [a, b] {
        let r = r.map_err(|_| "a racing run panicked")??;
        r.agrees()?;
    }
    let files = store_files(dir.path());
    check!(
        files.len() == 2 && files.iter().any(|n| n.ends_with(".state")),
        "expected one state and its sidecar, the store has {files:?}"
    );
    let third = store_run(dir.path(), agent, None, NORMAL_TIMEOUT)?;
    third.agrees()?;
    check!(
        third.restored() && third.boots() == 1,
        "the third run was not restored"
    );
    Ok(())
}
