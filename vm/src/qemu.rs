//! Boots one guest under QEMU and reports what happened: owns the QEMU process and
//! its command line, turns its console and the guest's result port into typed
//! [`VmEvent`]s, and ends every boot in a [`BootEnd`] (powered off, panicked, timed
//! out, or QEMU failed), never hanging and never leaving a QEMU process behind.
//!
//! Two serial ports: ttyS0 is the console (QEMU's stdout, kernel messages and all);
//! ttyS1 is the result port, where only the agent writes. The result port is a unix
//! socket the host listens on and QEMU connects to as a client when it starts, before
//! the guest runs: unlike `-serial file:` nothing has to be tailed or polled, EOF
//! arrives when QEMU exits, and unlike QEMU-as-server no line can be lost before the
//! host connects. The kernel never prints to ttyS1, so the console cannot corrupt it.

use anyhow::{bail, Context};
use bpfmatrix_kernels::Kernel;
use bpfmatrix_probes::MAX_LINE_BYTES;
use serde::Serialize;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most the guest may send on the result port in one boot; beyond it the boot
/// ends as [`BootEnd::TooMuchOutput`] so a runaway guest cannot exhaust the host.
pub const MAX_RESULT_BYTES: u64 = 16 << 20;
/// Console lines kept for [`BootOutcome::console_tail`].
const CONSOLE_TAIL: usize = 300;
/// Longest console line kept; the console is for humans, longer lines are cut.
const MAX_CONSOLE_LINE: usize = 16 * 1024;
/// How long to keep reading the console after a panic line, for the backtrace.
const PANIC_GRACE: Duration = Duration::from_secs(1);
const PANIC_MARKER: &str = "Kernel panic - not syncing";

// TCG flags, measured (Debian 6.1 vmlinux through PVH, static C init that writes a
// line and powers off, wall time of QEMU, 3 runs each, 2-core machine, QEMU 7.2):
// default CPU model, full console 2.30-2.66 s; `quiet` 2.19-2.44 s; `loglevel=1`
// 2.16-2.29 s; `-cpu max` 2.35-2.52 s, with `quiet` 2.33-2.45 s; `-smp 2` no gain.
// So the default CPU model stays, and the console stays verbose: ~0.1 s is not worth
// losing the kernel's messages when a guest dies (callers can add `quiet` through
// `extra_append`). The KVM probe on these machines fails at once (`-cpu host`
// aborts on an MSR), or after `kvm_deadline` where KVM hangs instead.

/// Finds qemu-system-x86_64 on PATH.
pub fn find_qemu() -> anyhow::Result<PathBuf> {
    which::which("qemu-system-x86_64").map_err(|_| {
        anyhow::anyhow!(
            "qemu-system-x86_64 not found on PATH: install Debian's qemu-system-x86 (apt-get install qemu-system-x86)"
        )
    })
}

/// Which accelerator the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM when /dev/kvm opens read-write and the guest speaks in time, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for Accel {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Accel> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => bail!("unknown accelerator '{other}': use auto, kvm or tcg"),
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator a boot actually ran under.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccelUsed {
    Kvm,
    Tcg,
}

impl fmt::Display for AccelUsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelUsed::Kvm => "kvm",
            AccelUsed::Tcg => "tcg",
        })
    }
}

/// One boot to perform.
#[derive(Clone, Debug)]
pub struct BootSpec {
    pub kernel: Kernel,
    /// The newc cpio archive to pass with -initrd.
    pub initramfs: PathBuf,
    /// Appended to the kernel command line.
    pub extra_append: String,
    pub accel: Accel,
    pub memory_mib: u32,
    /// The whole boot, from QEMU's start to its exit.
    pub timeout: Duration,
    /// Under [`Accel::Auto`], how long KVM gets to produce the first guest line
    /// before the boot is retried under TCG. A healthy KVM boot speaks in about 1 s.
    pub kvm_deadline: Duration,
    /// The most the guest may write to the result port before the boot is ended
    /// as [`BootEnd::TooMuchOutput`] ([`MAX_RESULT_BYTES`] unless a test lowers it).
    pub max_result_bytes: u64,
    /// Until the agent's first line, the longest the console may stay silent
    /// before the guest is taken for dead ([`BootEnd::Silent`]). A booting kernel
    /// prints every few hundred milliseconds even under TCG; one that died early
    /// (a PVH entry it cannot take, a triple fault QEMU does not report, a hang
    /// before the console) prints nothing more, and waiting out `timeout` for it
    /// would cost minutes.
    pub silence_deadline: Duration,
}

impl BootSpec {
    /// A spec with the defaults: Auto accelerator, 512 MiB, 120 s, KVM deadline 8 s,
    /// silence deadline 10 s.
    pub fn new(kernel: Kernel, initramfs: PathBuf) -> BootSpec {
        BootSpec {
            kernel,
            initramfs,
            extra_append: String::new(),
            accel: Accel::Auto,
            memory_mib: 512,
            timeout: Duration::from_secs(120),
            kvm_deadline: Duration::from_secs(8),
            max_result_bytes: MAX_RESULT_BYTES,
            silence_deadline: Duration::from_secs(10),
        }
    }
}

/// What a boot started: QEMU itself, or virtme-ng's `vng` (which starts QEMU).
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    Qemu,
    Vng,
}

impl fmt::Display for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runner::Qemu => "QEMU",
            Runner::Vng => "virtme-ng",
        })
    }
}

/// What a boot reports while it runs, in order.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum VmEvent {
    /// QEMU (or vng) is being started (once per attempt). Nothing has run in the
    /// guest yet: QEMU may still abort, or the kernel die before the agent speaks.
    Starting {
        runner: Runner,
        accel: AccelUsed,
        command: String,
    },
    /// The guest's first result line (the agent's hello) arrived, `after` QEMU's
    /// (or vng's) start: the guest is really running (once per attempt).
    GuestSpoke {
        accel: AccelUsed,
        #[serde(serialize_with = "secs")]
        after: Duration,
    },
    /// KVM did not work; the boot is being retried under TCG (and later boots of this
    /// process go straight to TCG).
    KvmFallback { reason: String },
    /// A line of the guest's console (kernel messages, the agent's stderr).
    Console(String),
    /// A line from the result port.
    GuestLine(GuestLine),
}

/// One line from the result port, without its newline.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct GuestLine {
    pub text: String,
    /// The line was longer than [`MAX_LINE_BYTES`]; `text` is its start.
    pub truncated: bool,
}

/// How a boot ended.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BootEnd {
    /// The guest powered off and QEMU exited on its own.
    PoweredOff,
    /// The kernel panicked; the console from the panic line on.
    Panicked { lines: Vec<String> },
    /// Before the agent's first line, the guest went silent (no console output
    /// for [`BootSpec::silence_deadline`]) and QEMU was killed: a kernel that died
    /// early without a panic message, or never started. `last_console` is the
    /// last console line seen, if any.
    Silent {
        #[serde(serialize_with = "secs")]
        after: Duration,
        last_console: Option<String>,
    },
    /// The overall timeout expired and QEMU was killed.
    TimedOut {
        #[serde(serialize_with = "secs")]
        after: Duration,
    },
    /// The guest wrote more than [`MAX_RESULT_BYTES`] to the result port.
    TooMuchOutput { limit_bytes: u64 },
    /// QEMU failed to start or exited with an error.
    QemuFailed { status: String, stderr: String },
}

/// Everything a boot produced.
#[derive(Serialize, Clone, Debug)]
pub struct BootOutcome {
    pub accel: AccelUsed,
    /// Why KVM was not used although it was asked for (Auto), if it was not.
    pub kvm_fallback: Option<String>,
    /// Lines from the result port, in order.
    pub lines: Vec<GuestLine>,
    /// The last lines of the console.
    pub console_tail: Vec<String>,
    pub end: BootEnd,
    /// Wall time of the final boot attempt (the one under `accel`).
    #[serde(serialize_with = "secs")]
    pub wall: Duration,
    /// From QEMU's start to the first result line.
    #[serde(serialize_with = "opt_secs")]
    pub first_line_after: Option<Duration>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// What this process learned about KVM. Auto boots hold the lock while the first
/// of them tries KVM, so guests booted in parallel wait for that verdict instead of
/// each paying the KVM deadline and announcing the fallback again.
#[derive(Clone)]
enum KvmState {
    Untried,
    Works,
    Broken(String),
}

static KVM_STATE: Mutex<KvmState> = Mutex::new(KvmState::Untried);

/// Boots `spec` and reports events to `on_event` as they happen. Errors are for
/// problems on the host (no QEMU, no socket); everything the guest or QEMU does is
/// a [`BootEnd`].
pub fn boot(spec: &BootSpec, on_event: &mut dyn FnMut(&VmEvent)) -> anyhow::Result<BootOutcome> {
    let qemu = find_qemu()?;
    for (what, path) in [
        ("kernel image", &spec.kernel.boot_image),
        ("initramfs", &spec.initramfs),
    ] {
        if !path.exists() {
            bail!("{what} {} does not exist", path.display());
        }
    }
    match spec.accel {
        Accel::Tcg => {
            return attempt(&qemu, spec, AccelUsed::Tcg, None, on_event).map(|a| a.outcome)
        }
        Accel::Kvm => {
            return attempt(&qemu, spec, AccelUsed::Kvm, None, on_event).map(|a| a.outcome)
        }
        Accel::Auto => {}
    }
    let mut state = KVM_STATE.lock().unwrap_or_else(|e| e.into_inner());
    let known = state.clone();
    let tried = match known {
        KvmState::Broken(reason) => Err(reason),
        KvmState::Works => {
            // KVM is known good: no need to hold others back while this guest runs.
            drop(state);
            let tried = try_kvm(&qemu, spec, on_event)?;
            state = KVM_STATE.lock().unwrap_or_else(|e| e.into_inner());
            tried
        }
        // The first Auto boot keeps the lock through its KVM attempt.
        KvmState::Untried => try_kvm(&qemu, spec, on_event)?,
    };
    let reason = match tried {
        Ok(outcome) => {
            *state = KvmState::Works;
            return Ok(outcome);
        }
        Err(reason) => reason,
    };
    let first_to_learn = !matches!(&*state, KvmState::Broken(_));
    *state = KvmState::Broken(reason.clone());
    drop(state);
    if first_to_learn {
        on_event(&VmEvent::KvmFallback {
            reason: reason.clone(),
        });
    }
    let mut outcome = attempt(&qemu, spec, AccelUsed::Tcg, None, on_event)?.outcome;
    outcome.kvm_fallback = Some(reason);
    Ok(outcome)
}

/// One boot under KVM with the deadline for the guest's first line: the outcome,
/// or why KVM did not work.
fn try_kvm(
    qemu: &Path,
    spec: &BootSpec,
    on_event: &mut dyn FnMut(&VmEvent),
) -> anyhow::Result<Result<BootOutcome, String>> {
    if let Err(reason) = kvm_usable() {
        return Ok(Err(reason));
    }
    let first = attempt(
        qemu,
        spec,
        AccelUsed::Kvm,
        Some(spec.kvm_deadline),
        on_event,
    )?;
    Ok(match first.kvm_failure {
        None => Ok(first.outcome),
        Some(reason) => Err(reason),
    })
}

/// Whether /dev/kvm can be opened read-write (the precondition, not proof: on these
/// nested machines it opens and guests still hang).
fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|e| format!("/dev/kvm cannot be opened read-write ({e})"))
}

/// The kernel command line. `console=ttyS0` for the console; `panic=-1` reboots at
/// once on a panic, which `-no-reboot` turns into QEMU exiting; the rest trims TCG
/// boot time (see vm-facts: 2.8 s -> 2.4 s for Debian 6.1 under PVH).
pub fn kernel_append(extra: &str) -> String {
    let mut append = String::from(
        "console=ttyS0 panic=-1 mitigations=off nokaslr no_timer_check tsc=reliable rcupdate.rcu_expedited=1 i8042.noaux",
    );
    if !extra.trim().is_empty() {
        append.push(' ');
        append.push_str(extra.trim());
    }
    append
}

/// QEMU's arguments for one attempt. `result_socket` is where the host listens for
/// the result port.
pub fn qemu_args(spec: &BootSpec, accel: AccelUsed, result_socket: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]
    .map(OsString::from)
    .into();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["-m", &spec.memory_mib.to_string()]);
    match accel {
        AccelUsed::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        // TCG: QEMU's default CPU model; see the measurements above find_qemu.
        AccelUsed::Tcg => push(&["-accel", "tcg"]),
    }
    let socket = result_socket.to_string_lossy();
    // ttyS0: the console on stdout. ttyS1: the result port.
    push(&["-serial", "stdio"]);
    push(&[
        "-chardev",
        &format!("socket,id=result,server=off,path={socket}"),
    ]);
    push(&["-serial", "chardev:result"]);
    push(&["-kernel", &spec.kernel.boot_image.to_string_lossy()]);
    push(&["-initrd", &spec.initramfs.to_string_lossy()]);
    push(&["-append", &kernel_append(&spec.extra_append)]);
    args
}

/// Messages from the reader threads to the boot loop.
enum Msg {
    Console(String),
    Guest(GuestLine),
    GuestOverflow,
}

struct Attempt {
    outcome: BootOutcome,
    /// Set when this was a KVM probe (a deadline was given) and KVM showed no life.
    kvm_failure: Option<String>,
}

/// QEMU, killed and reaped when dropped, so no path out of a boot (error, host
/// panic) leaves it running.
struct QemuProcess {
    child: Child,
    done: bool,
}

impl QemuProcess {
    fn kill(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.done = true;
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn attempt(
    qemu: &Path,
    spec: &BootSpec,
    accel: AccelUsed,
    kvm_deadline: Option<Duration>,
    on_event: &mut dyn FnMut(&VmEvent),
) -> anyhow::Result<Attempt> {
    let dir = tempfile::Builder::new()
        .prefix("bpfmatrix-vm")
        .tempdir()
        .context("cannot create a temporary directory for the result socket")?;
    let socket = dir.path().join("result.sock");
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    listener.set_nonblocking(true)?;

    let args = qemu_args(spec, accel, &socket);
    let command = std::iter::once(qemu.as_os_str().to_owned())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    on_event(&VmEvent::Starting {
        runner: Runner::Qemu,
        accel,
        command,
    });

    let start = Instant::now();
    let child = Command::new(qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", qemu.display()))?;
    let mut proc = QemuProcess { child, done: false };

    let (tx, rx) = mpsc::channel();
    let stdout = proc.child.stdout.take().expect("stdout is piped");
    let stderr = proc.child.stderr.take().expect("stderr is piped");
    let console_thread = spawn_console_reader(stdout, tx.clone());
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        // QEMU's complaints are short; cap them anyway.
        let _ = stderr.take(64 * 1024).read_to_string(&mut text);
        text
    });

    let mut run = Run {
        accel,
        max_result_bytes: spec.max_result_bytes,
        start,
        lines: Vec::new(),
        console: VecDeque::new(),
        first_line_after: None,
        panic: None,
        last_sign: start,
    };
    let mut result_thread: Option<JoinHandle<()>> = None;
    let mut tx = Some(tx);

    let end = loop {
        // QEMU connects to the result socket while it starts, before the guest runs.
        if result_thread.is_none() {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false)?;
                    let tx = tx
                        .take()
                        .expect("sender kept until the result port connects");
                    let cap = spec.max_result_bytes;
                    result_thread = Some(std::thread::spawn(move || {
                        read_capped_lines(stream, MAX_LINE_BYTES, cap, |msg| tx.send(msg).is_ok())
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("accepting QEMU's result port connection"),
            }
        }
        // Take what has arrived (a bounded batch, so a flood of console lines
        // cannot starve the exit and timeout checks below).
        let mut ended = None;
        let mut next = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        };
        let mut batch = 0;
        while let Some(msg) = next.take() {
            if let Some(end) = run.handle(msg, on_event) {
                ended = Some(end);
                break;
            }
            batch += 1;
            if batch < 1024 {
                next = rx.try_recv().ok();
            }
        }
        if let Some(end) = ended {
            break end;
        }
        if let Some(status) = proc.child.try_wait()? {
            proc.done = true;
            // Drain what the readers still hold: they end at EOF now QEMU is gone.
            drop(tx.take());
            let _ = console_thread.join();
            if let Some(t) = result_thread.take() {
                let _ = t.join();
            }
            let mut overflow = None;
            while let Ok(msg) = rx.try_recv() {
                if let Some(end) = run.handle(msg, on_event) {
                    overflow.get_or_insert(end);
                }
            }
            let stderr = stderr_thread.join().unwrap_or_default();
            break if let Some(end) = overflow {
                end
            } else if let Some(lines) = run.panic.take().map(|p| p.1) {
                BootEnd::Panicked { lines }
            } else if status.success() {
                BootEnd::PoweredOff
            } else {
                BootEnd::QemuFailed {
                    status: status.to_string(),
                    stderr,
                }
            };
        }
        let elapsed = start.elapsed();
        if let Some((deadline, _)) = &run.panic {
            if Instant::now() >= *deadline {
                break BootEnd::Panicked {
                    lines: run.panic.take().unwrap().1,
                };
            }
        }
        if let Some(deadline) = kvm_deadline {
            if run.lines.is_empty() && elapsed >= deadline {
                proc.kill();
                let outcome = run.finish(BootEnd::TimedOut { after: elapsed });
                return Ok(Attempt {
                    outcome,
                    kvm_failure: Some(format!(
                        "no line from the guest within {:.1} s under KVM",
                        deadline.as_secs_f64()
                    )),
                });
            }
        }
        if run.lines.is_empty()
            && run.panic.is_none()
            && run.last_sign.elapsed() >= spec.silence_deadline
        {
            break BootEnd::Silent {
                after: elapsed,
                last_console: run.console.back().cloned(),
            };
        }
        if elapsed >= spec.timeout {
            break BootEnd::TimedOut { after: elapsed };
        }
    };
    proc.kill();
    let kvm_failure = match (&end, kvm_deadline) {
        (BootEnd::QemuFailed { status, stderr }, Some(_)) if run.lines.is_empty() => Some(format!(
            "QEMU failed under KVM ({status}): {}",
            stderr.lines().last().unwrap_or("").trim()
        )),
        _ => None,
    };
    Ok(Attempt {
        outcome: run.finish(end),
        kvm_failure,
    })
}

/// The state of one boot attempt as messages arrive.
struct Run {
    accel: AccelUsed,
    max_result_bytes: u64,
    start: Instant,
    lines: Vec<GuestLine>,
    console: VecDeque<String>,
    first_line_after: Option<Duration>,
    /// Set by a panic line: until when to keep reading, and the lines so far.
    panic: Option<(Instant, Vec<String>)>,
    /// When the guest last showed life (a console or result line; QEMU's start
    /// before the first).
    last_sign: Instant,
}

impl Run {
    /// Takes one message; returns how the boot ends if this message ends it.
    fn handle(&mut self, msg: Msg, on_event: &mut dyn FnMut(&VmEvent)) -> Option<BootEnd> {
        match msg {
            Msg::Console(line) => {
                self.last_sign = Instant::now();
                if let Some((_, lines)) = &mut self.panic {
                    lines.push(line.clone());
                } else if line.contains(PANIC_MARKER) {
                    self.panic = Some((Instant::now() + PANIC_GRACE, vec![line.clone()]));
                }
                if self.console.len() == CONSOLE_TAIL {
                    self.console.pop_front();
                }
                self.console.push_back(line.clone());
                on_event(&VmEvent::Console(line));
                None
            }
            Msg::Guest(line) => {
                self.last_sign = Instant::now();
                if self.first_line_after.is_none() {
                    let after = self.start.elapsed();
                    self.first_line_after = Some(after);
                    on_event(&VmEvent::GuestSpoke {
                        accel: self.accel,
                        after,
                    });
                }
                on_event(&VmEvent::GuestLine(line.clone()));
                self.lines.push(line);
                None
            }
            Msg::GuestOverflow => Some(BootEnd::TooMuchOutput {
                limit_bytes: self.max_result_bytes,
            }),
        }
    }

    fn finish(self, end: BootEnd) -> BootOutcome {
        BootOutcome {
            accel: self.accel,
            kvm_fallback: None,
            lines: self.lines,
            console_tail: self.console.into(),
            end,
            wall: self.start.elapsed(),
            first_line_after: self.first_line_after,
        }
    }
}

fn spawn_console_reader(stdout: impl Read + Send + 'static, tx: Sender<Msg>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        // The console is unbounded in total (QEMU stops when the boot ends), only
        // each line is capped; the tail kept is bounded by CONSOLE_TAIL.
        read_capped_lines(stdout, MAX_CONSOLE_LINE, u64::MAX, |msg| {
            let msg = match msg {
                Msg::Guest(line) => Msg::Console(line.text),
                other => other,
            };
            tx.send(msg).is_ok()
        })
    })
}

/// Reads `input` line by line, passing each line (newline and a trailing CR removed)
/// to `emit` as [`Msg::Guest`]. A line longer than `max_line` bytes is cut there and
/// marked truncated, and the rest of it is discarded unread into memory; once
/// `max_total` bytes have been read, [`Msg::GuestOverflow`] is emitted and reading
/// stops. Stops early if `emit` returns false.
fn read_capped_lines(
    input: impl Read,
    max_line: usize,
    max_total: u64,
    mut emit: impl FnMut(Msg) -> bool,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    let mut line: Vec<u8> = Vec::new();
    let mut truncated = false;
    let mut total: u64 = 0;
    let finish = |line: &mut Vec<u8>, truncated: &mut bool| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let msg = Msg::Guest(GuestLine {
            text: String::from_utf8_lossy(line).into_owned(),
            truncated: *truncated,
        });
        line.clear();
        *truncated = false;
        msg
    };
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let (chunk, consumed, ends_line) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = max_line.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(consumed);
        total += consumed as u64;
        if total > max_total {
            emit(Msg::GuestOverflow);
            return;
        }
        if ends_line && !emit(finish(&mut line, &mut truncated)) {
            return;
        }
    }
    if !line.is_empty() || truncated {
        emit(finish(&mut line, &mut truncated));
    }
}

/// Quotes an argument for the shell, for the human-readable command in
/// [`VmEvent::Starting`] (and the command virtme-ng runs in its guest).
pub(crate) fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfmatrix_kernels::BootProtocol;

    fn collect(input: &[u8], max_line: usize, max_total: u64) -> Vec<Result<GuestLine, ()>> {
        let mut out = Vec::new();
        read_capped_lines(input, max_line, max_total, |msg| {
            out.push(match msg {
                Msg::Guest(l) => Ok(l),
                Msg::GuestOverflow => Err(()),
                Msg::Console(_) => unreachable!(),
            });
            true
        });
        out
    }

    fn line(text: &str, truncated: bool) -> Result<GuestLine, ()> {
        Ok(GuestLine {
            text: text.into(),
            truncated,
        })
    }

    #[test]
    fn lines_are_split_and_capped() {
        let input = b"hello\r\nthis line is far too long\nok\nlast without newline";
        assert_eq!(
            collect(input, 8, u64::MAX),
            [
                line("hello", false),
                line("this lin", true),
                line("ok", false),
                line("last wit", true)
            ]
        );
    }

    #[test]
    fn a_long_line_split_across_reads_is_cut_once() {
        // Longer than the reader's buffer, so it arrives in several chunks.
        let mut input = vec![b'x'; 200_000];
        input.extend_from_slice(b"\nnext\n");
        let out = collect(&input, 1000, u64::MAX);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().unwrap().text.len(), 1000);
        assert!(out[0].as_ref().unwrap().truncated);
        assert_eq!(out[1], line("next", false));
    }

    #[test]
    fn total_cap_ends_reading() {
        let input = b"aaaa\nbbbb\ncccc\ndddd\n".repeat(10);
        let out = collect(&input, 100, 12);
        assert_eq!(out, [line("aaaa", false), line("bbbb", false), Err(())]);
    }

    #[test]
    fn command_line_has_console_result_port_and_accel() {
        let kernel = Kernel {
            name: "k".into(),
            release: None,
            image: "/k/bzImage".into(),
            boot_image: "/k/vmlinux".into(),
            boot_protocol: BootProtocol::Pvh,
            modules_dir: None,
            source: String::new(),
        };
        let mut spec = BootSpec::new(kernel, "/i/initramfs.cpio".into());
        spec.extra_append = "quiet".into();
        let args: Vec<String> = qemu_args(&spec, AccelUsed::Tcg, Path::new("/s/result.sock"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-accel tcg"), "{joined}");
        assert!(!joined.contains("kvm"), "{joined}");
        assert!(joined.contains("-serial stdio -chardev socket,id=result,server=off,path=/s/result.sock -serial chardev:result"), "{joined}");
        assert!(
            joined.contains("-kernel /k/vmlinux -initrd /i/initramfs.cpio"),
            "{joined}"
        );
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(append.starts_with("console=ttyS0 panic=-1 "), "{append}");
        assert!(append.ends_with(" quiet"), "{append}");

        let kvm =
            qemu_args(&spec, AccelUsed::Kvm, Path::new("/s")).join(OsString::from(" ").as_os_str());
        assert!(kvm.to_string_lossy().contains("-accel kvm -cpu host"));
    }

    #[test]
    fn accel_parses_and_displays() {
        for a in [Accel::Auto, Accel::Kvm, Accel::Tcg] {
            assert_eq!(a.to_string().parse::<Accel>().unwrap(), a);
        }
        assert!("hvf"
            .parse::<Accel>()
            .unwrap_err()
            .to_string()
            .contains("auto, kvm or tcg"));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(
            shell_quote("console=ttyS0 panic=-1"),
            "'console=ttyS0 panic=-1'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
