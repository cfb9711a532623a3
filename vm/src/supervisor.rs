//! The one VM process supervisor. Both backends are thin users of it: [`crate::qemu`]
//! hands it a QEMU command and the unix socket of the guest's result port,
//! [`crate::vng`] a `vng` command whose stdout carries the result lines. [`supervise`]
//! starts the process, reads the result lines and the console with caps, watches
//! for a kernel panic, the deadline, the result cap, the first-line deadline (the
//! KVM probe) and the pre-hello silence watchdog, and ends every run in a
//! [`BootEnd`], with the process and everything it started killed and reaped on
//! every path (an error, a host panic, an early return).
//!
//! # Process groups, and bpfmatrix's own death
//!
//! Each VM process runs in a process group of its own ([`ProcessGroup`]), so one
//! `killpg(SIGKILL)` takes it and whatever it started: vng runs `sh`, which runs
//! `virtme-run`, which forks QEMU, four processes deep. The group is killed and
//! reaped when the run ends and when the guard is dropped.
//!
//! When bpfmatrix itself dies (`kill -TERM`, `timeout`, a CI runner cancelling a
//! job, Ctrl-C, even SIGKILL) its guests die with it, through two mechanisms that
//! need no signal handler, no global state and nothing to run in the dying process:
//!
//! - The VM process is started with `PR_SET_PDEATHSIG = SIGKILL` (set between fork
//!   and exec, then the parent is checked to be still alive, closing the race with
//!   an early death). The kernel sends that signal when the *thread* that spawned
//!   the child exits; [`ProcessGroup`] is neither `Send` nor `Sync`, so it cannot
//!   leave the thread that spawned it, and [`supervise`] returns only after the
//!   group is dead: the spawning thread outlives the child by construction.
//! - PDEATHSIG reaches only the direct child (it is cleared on fork), not vng's
//!   QEMU. So each group is led by a keeper, `/bin/sh -c 'read _; kill -KILL 0'`,
//!   whose stdin is a pipe whose only write end bpfmatrix holds (close-on-exec, so
//!   no other program inherits it). When bpfmatrix's process ends, however it ends,
//!   the kernel closes that end, `read` sees end of file, and the keeper kills its
//!   own group: the VM process and every descendant. While bpfmatrix lives the
//!   keeper only waits; a normal end kills it with the rest of the group. Where no
//!   `/bin/sh` can be started the VM process leads its own group and PDEATHSIG
//!   still covers it.
//!
//! bpfmatrix's exit status is then the signal's own (a shell shows 128 + the
//! signal), which is what `timeout` and CI runners expect.

use anyhow::Context;
use bpfmatrix_protocol::{GuestMessage, MAX_LINE_BYTES};
use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most the guest may send on the result port in one boot, unless a test
/// lowers it ([`Supervision::max_result_bytes`]); beyond it the boot ends as
/// [`BootEnd::TooMuchOutput`] so a runaway guest cannot exhaust the host.
pub const MAX_RESULT_BYTES: u64 = 16 << 20;
/// Console lines kept for [`BootOutcome::console_tail`].
const CONSOLE_TAIL: usize = 300;
/// Longest console line kept; the console is for humans, longer lines are cut.
const MAX_CONSOLE_LINE: usize = 16 * 1024;
/// The end of the VM process's own stderr kept for [`BootEnd::QemuFailed`] (where
/// it is not the console). All of it is read, so a chatty process never blocks on
/// a full pipe.
const STDERR_TAIL: usize = 64 * 1024;
/// Where the console is the process's stderr (vng), how many of its last lines a
/// [`BootEnd::QemuFailed`] quotes.
const STDERR_LINES_FROM_CONSOLE: usize = 20;
/// How long to keep reading the console after a panic line, for the backtrace.
const PANIC_GRACE: Duration = Duration::from_secs(1);
const PANIC_MARKER: &str = "Kernel panic - not syncing";
/// How often the clocks and the process are looked at when nothing arrives.
const TICK: Duration = Duration::from_millis(20);
/// Once the process group is dead its pipes are at end of file; a reader still
/// running after this is left behind rather than waited for.
const READER_GRACE: Duration = Duration::from_secs(2);
/// The keeper's script: wait for end of file on stdin (bpfmatrix's exit), then
/// SIGKILL the whole process group (`kill 0`).
const KEEPER_SCRIPT: &str = "read _; kill -KILL 0";

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
    /// The guest's state was saved (bpfmatrix's QEMU, a guest waiting for its
    /// plan), `bytes` long, in `took`; the guest then went on.
    Saved {
        bytes: u64,
        #[serde(serialize_with = "secs")]
        took: Duration,
    },
    /// Saving the guest's state failed; the guest went on without it.
    SaveFailed { reason: String },
    /// QEMU read a saved state and the guest runs again, `after` QEMU's start.
    Restored {
        #[serde(serialize_with = "secs")]
        after: Duration,
    },
    /// A saved state was not used, and why; the guest is booted instead.
    StateDiscarded { reason: String },
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
    /// The guest powered off and QEMU (or vng) exited on its own.
    PoweredOff,
    /// The agent said it was done (its last message), and QEMU (or vng) was
    /// stopped then, without waiting for the guest's power-off.
    Finished,
    /// The kernel panicked; the console from the panic line on.
    Panicked { lines: Vec<String> },
    /// Before the agent's first line, the guest went silent (no console output
    /// for [`Supervision::silence_deadline`]) and QEMU was killed: a kernel that
    /// died early without a panic message, or never started. `last_console` is the
    /// last console line seen, if any.
    Silent {
        #[serde(serialize_with = "secs")]
        after: Duration,
        last_console: Option<String>,
    },
    /// The overall timeout expired (or, probing KVM, the first line did not come
    /// in time) and QEMU was killed.
    TimedOut {
        #[serde(serialize_with = "secs")]
        after: Duration,
    },
    /// The guest wrote more than its cap ([`MAX_RESULT_BYTES`] unless lowered) to
    /// the result port.
    TooMuchOutput { limit_bytes: u64 },
    /// QEMU (or vng) failed to start or exited with an error; `stderr` is the end
    /// of what it said there.
    QemuFailed { status: String, stderr: String },
    /// A guest started from a saved state could not be resumed or handed its plan
    /// (QEMU was killed).
    RestoreFailed { reason: String },
}

/// The host's side of a conversation with a guest on its result port (a guest
/// that waits for its plan): told when the port connects and of every line, it
/// may write to the guest and drive QEMU. An error ends the run as
/// [`BootEnd::RestoreFailed`].
pub trait Conversation: Send + fmt::Debug {
    /// The result port connected (QEMU started); `port` writes to the guest.
    fn connected(
        &mut self,
        port: &mut UnixStream,
        since_start: Duration,
        on_event: &mut dyn FnMut(&VmEvent),
    ) -> anyhow::Result<()>;
    /// A line from the guest arrived (after it was recorded).
    fn line(
        &mut self,
        line: &GuestLine,
        port: &mut UnixStream,
        on_event: &mut dyn FnMut(&VmEvent),
    ) -> anyhow::Result<()>;
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

/// Where the guest's result lines arrive, which decides where its console is.
#[derive(Debug)]
pub enum ResultPort {
    /// A unix socket the VM process connects to as it starts (QEMU's second serial
    /// port). The console is the process's stdout; its stderr is its own
    /// complaints, read to the end and kept as a tail for [`BootEnd::QemuFailed`].
    Socket(UnixListener),
    /// The VM process's stdout (vng relays the agent's stdout there). The console
    /// is its stderr, whose last lines a [`BootEnd::QemuFailed`] quotes.
    Stdout,
}

/// How to run and watch one VM process.
#[derive(Debug)]
pub struct Supervision {
    /// What is started, for [`VmEvent::Starting`].
    pub runner: Runner,
    /// The accelerator it runs under, for the events and the outcome.
    pub accel: AccelUsed,
    pub results: ResultPort,
    /// The whole run, from the start to the process's exit: then
    /// [`BootEnd::TimedOut`].
    pub timeout: Duration,
    /// The most the guest may write to the result port: then
    /// [`BootEnd::TooMuchOutput`].
    pub max_result_bytes: u64,
    /// Until the first result line, the longest the console may stay silent
    /// before the guest is taken for dead ([`BootEnd::Silent`]). A booting kernel
    /// prints every few hundred milliseconds even under TCG; one that died early
    /// prints nothing more. None where the console is quiet while the guest boots
    /// (vng's, which carries only the agent's stderr).
    pub silence_deadline: Option<Duration>,
    /// The first result line must arrive within this, or the run ends as
    /// [`BootEnd::TimedOut`] with [`Supervised::missed_first_line`] set (the KVM
    /// probe).
    pub first_line_deadline: Option<Duration>,
    /// Talks to the guest on the result port (a [`ResultPort::Socket`] only).
    pub conversation: Option<Box<dyn Conversation>>,
}

/// What [`supervise`] saw.
#[derive(Debug)]
pub struct Supervised {
    pub outcome: BootOutcome,
    /// [`Supervision::first_line_deadline`] passed without a result line.
    pub missed_first_line: bool,
}

/// Starts `command` in a [`ProcessGroup`] (stdin from /dev/null, stdout and stderr
/// read here) and watches it as `how` says; `on_event` hears every event as it
/// happens, [`VmEvent::Starting`] first. Errors are for problems on the host (the
/// program cannot be started, the result socket fails); everything the guest or
/// the VM process does is a [`BootEnd`]. Whatever the path out, the process group
/// is dead and reaped when this returns.
pub fn supervise(
    mut command: Command,
    how: Supervision,
    on_event: &mut dyn FnMut(&VmEvent),
) -> anyhow::Result<Supervised> {
    let Supervision {
        runner,
        accel,
        results,
        timeout,
        max_result_bytes,
        silence_deadline,
        first_line_deadline,
        mut conversation,
    } = how;
    let mut port_writer: Option<UnixStream> = None;
    let listener = match results {
        ResultPort::Socket(listener) => {
            listener
                .set_nonblocking(true)
                .context("cannot poll the result socket")?;
            Some(listener)
        }
        ResultPort::Stdout => None,
    };
    on_event(&VmEvent::Starting {
        runner,
        accel,
        command: command_line(&command),
    });
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut group = ProcessGroup::spawn(&mut command)
        .with_context(|| format!("cannot start {}", command.get_program().to_string_lossy()))?;
    let (stdout, stderr) = group.take_pipes();

    let (tx, rx) = mpsc::channel();
    // The sender for the result reader, kept until the result socket connects.
    let mut pending_tx = None;
    let mut result_thread = None;
    let mut stderr_thread = None;
    let console_thread = if listener.is_some() {
        pending_tx = Some(tx.clone());
        stderr_thread = Some(std::thread::spawn(move || read_tail(stderr, STDERR_TAIL)));
        spawn_console_reader(stdout, tx)
    } else {
        result_thread = Some(spawn_result_reader(stdout, max_result_bytes, tx.clone()));
        spawn_console_reader(stderr, tx)
    };

    let mut run = Run {
        accel,
        max_result_bytes,
        start,
        lines: Vec::new(),
        console: VecDeque::new(),
        first_line_after: None,
        panic: None,
        done: false,
        last_sign: start,
    };
    let mut missed_first_line = false;
    let end = loop {
        // QEMU connects to the result socket while it starts, before the guest runs.
        if let (Some(listener), None) = (&listener, &result_thread) {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .context("cannot read the result socket")?;
                    let tx = pending_tx
                        .take()
                        .expect("sender kept until the result port connects");
                    if let Some(conv) = &mut conversation {
                        let mut writer = stream
                            .try_clone()
                            .context("cannot write to the result socket")?;
                        if let Err(e) = conv.connected(&mut writer, start.elapsed(), on_event) {
                            break BootEnd::RestoreFailed {
                                reason: format!("{e:#}"),
                            };
                        }
                        port_writer = Some(writer);
                    }
                    result_thread = Some(spawn_result_reader(stream, max_result_bytes, tx));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("accepting the result port's connection"),
            }
        }
        // Take what has arrived (a bounded batch, so a flood of console lines
        // cannot starve the exit and deadline checks below).
        let mut ended = None;
        let mut next = match rx.recv_timeout(TICK) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                // Every reader is done; the process may still be running.
                std::thread::sleep(TICK);
                None
            }
        };
        let mut batch = 0;
        while let Some(msg) = next.take() {
            let line = match (&msg, &conversation) {
                (Msg::Guest(line), Some(_)) => Some(line.clone()),
                _ => None,
            };
            if let Some(end) = run.handle(msg, on_event) {
                ended = Some(end);
                break;
            }
            if let (Some(line), Some(conv), Some(port)) =
                (line, &mut conversation, &mut port_writer)
            {
                if let Err(e) = conv.line(&line, port, on_event) {
                    ended = Some(BootEnd::RestoreFailed {
                        reason: format!("{e:#}"),
                    });
                    break;
                }
            }
            batch += 1;
            if batch < 1024 {
                next = rx.try_recv().ok();
            }
        }
        if let Some(end) = ended {
            break end;
        }
        // Once the agent's last message is in, nothing the guest does (its
        // power-off: 60 ms under TCG after the cases, 220 ms after an exec with
        // the host's root mounted, measured on 6.1) can change the result, so
        // the process is not waited for.
        let exited = if run.done { None } else { group.try_wait()? };
        if run.done || exited.is_some() {
            // Take down whatever the process left in its group, so that every
            // pipe reaches its end, then read what the readers still hold.
            group.kill();
            drop(pending_tx.take());
            join_within(console_thread, READER_GRACE);
            if let Some(t) = result_thread.take() {
                join_within(t, READER_GRACE);
            }
            let mut overflow = None;
            while let Ok(msg) = rx.try_recv() {
                if let Some(end) = run.handle(msg, on_event) {
                    overflow.get_or_insert(end);
                }
            }
            break if let Some(end) = overflow {
                end
            } else if let Some((_, lines)) = run.panic.take() {
                BootEnd::Panicked { lines }
            } else if let Some(status) = exited.filter(|s| !s.success()) {
                let stderr = match stderr_thread.take() {
                    Some(t) => join_within(t, READER_GRACE).unwrap_or_default(),
                    None => run.console_lines(STDERR_LINES_FROM_CONSOLE),
                };
                BootEnd::QemuFailed {
                    status: status.to_string(),
                    stderr,
                }
            } else if exited.is_some() {
                BootEnd::PoweredOff
            } else {
                BootEnd::Finished
            };
        }
        let elapsed = start.elapsed();
        if let Some((deadline, _)) = &run.panic {
            if Instant::now() >= *deadline {
                let (_, lines) = run.panic.take().expect("checked");
                break BootEnd::Panicked { lines };
            }
        }
        if let Some(deadline) = first_line_deadline {
            if run.lines.is_empty() && elapsed >= deadline {
                missed_first_line = true;
                break BootEnd::TimedOut { after: elapsed };
            }
        }
        if let Some(silence) = silence_deadline {
            if run.lines.is_empty() && run.panic.is_none() && run.last_sign.elapsed() >= silence {
                break BootEnd::Silent {
                    after: elapsed,
                    last_console: run.console.back().cloned(),
                };
            }
        }
        if elapsed >= timeout {
            break BootEnd::TimedOut { after: elapsed };
        }
    };
    // The readers are left to reach their end of file on their own.
    group.kill();
    // A restore that failed is most often QEMU refusing the saved state, and
    // exiting with the reason on its stderr: say it.
    let end = match (end, stderr_thread.take()) {
        (BootEnd::RestoreFailed { reason }, Some(t)) => {
            let said = join_within(t, READER_GRACE).unwrap_or_default();
            match said.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
                Some(last) => BootEnd::RestoreFailed {
                    reason: format!("{reason}; QEMU said: {last}"),
                },
                None => BootEnd::RestoreFailed { reason },
            }
        }
        (end, _) => end,
    };
    Ok(Supervised {
        outcome: run.finish(end),
        missed_first_line,
    })
}

/// Whether `line` is the agent's `done`, its last message.
fn is_done(line: &GuestLine) -> bool {
    // Serialized with its tag first: only such lines are parsed.
    !line.truncated
        && line.text.starts_with(r#"{"type":"done""#)
        && matches!(
            serde_json::from_str::<GuestMessage>(&line.text),
            Ok(GuestMessage::Done { .. })
        )
}

impl BootEnd {
    /// The guest got to its end: it powered off, or said it was done.
    pub fn is_clean(&self) -> bool {
        matches!(self, BootEnd::PoweredOff | BootEnd::Finished)
    }
}

/// The command as a shell would take it, for [`VmEvent::Starting`].
fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes an argument for the shell, for the human-readable command in
/// [`VmEvent::Starting`] (and the command virtme-ng runs in its guest).
pub fn shell_quote(arg: &str) -> String {
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

/// Joins `thread` if it ends within `grace`; otherwise leaves it running.
fn join_within<T>(thread: JoinHandle<T>, grace: Duration) -> Option<T> {
    let deadline = Instant::now() + grace;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    thread.join().ok()
}

/// One VM process in a process group of its own, led by a keeper (see the module
/// documentation): killed (SIGKILL to the whole group) and reaped by
/// [`ProcessGroup::kill`] and when dropped, so no path out of a boot leaves any of
/// it running. Neither `Send` nor `Sync`: it stays on the thread that spawned the
/// process, which PDEATHSIG watches.
#[derive(Debug)]
pub struct ProcessGroup {
    child: Child,
    /// Leads the group; None where it could not be started.
    keeper: Option<Keeper>,
    pgid: Pid,
    /// The group was signalled; it is never signalled again (after its processes
    /// are reaped, its id could name another group).
    killed: bool,
    exited: bool,
    _this_thread: PhantomData<*const ()>,
}

impl ProcessGroup {
    /// Starts `command` in a new process group led by a keeper, with
    /// `PR_SET_PDEATHSIG = SIGKILL`. `command`'s process group and pre-exec hooks
    /// are set here.
    pub fn spawn(command: &mut Command) -> std::io::Result<ProcessGroup> {
        let keeper = Keeper::spawn();
        let parent = std::process::id();
        command.process_group(keeper.as_ref().map_or(0, |k| k.child.id() as i32));
        // SAFETY: the hook runs in the forked child before exec and makes only
        // async-signal-safe system calls (prctl, getppid), allocating nothing.
        unsafe {
            command.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The parent may have died before PDEATHSIG was armed.
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    return Err(std::io::Error::other("bpfmatrix exited while starting it"));
                }
                Ok(())
            });
        }
        // On an error the keeper, dropped, is killed and reaped.
        let child = command.spawn()?;
        let pgid = keeper.as_ref().map_or(child.id(), |k| k.child.id());
        Ok(ProcessGroup {
            child,
            keeper,
            pgid: Pid::from_raw(pgid as i32),
            killed: false,
            exited: false,
            _this_thread: PhantomData,
        })
    }

    /// The VM process's id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The process group's id.
    pub fn pgid(&self) -> u32 {
        self.pgid.as_raw() as u32
    }

    /// The VM process's stdout and stderr, when piped (once).
    fn take_pipes(&mut self) -> (ChildStdout, ChildStderr) {
        (
            self.child.stdout.take().expect("stdout is piped"),
            self.child.stderr.take().expect("stderr is piped"),
        )
    }

    /// The VM process's exit status, if it has exited (its group may live on).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        self.exited |= status.is_some();
        Ok(status)
    }

    /// SIGKILL to the whole group, then reaps the VM process and the keeper.
    pub fn kill(&mut self) {
        // Without a keeper the group's id is the VM process's, which must not be
        // signalled once reaped; the keeper, alive until signalled here, keeps the
        // id from being reused.
        if !self.killed && (self.keeper.is_some() || !self.exited) {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
        self.killed = true;
        if !self.exited {
            // Without a keeper nothing else may have signalled it.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.exited = true;
        drop(self.keeper.take());
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The leader of a [`ProcessGroup`]: `/bin/sh` reading a pipe whose write end only
/// this process holds, then killing its group when that end closes.
#[derive(Debug)]
struct Keeper {
    child: Child,
    /// Closing this (dropping it, or this process's exit) makes the keeper kill
    /// its group.
    _pipe: Option<OwnedFd>,
}

impl Keeper {
    fn spawn() -> Option<Keeper> {
        // Close-on-exec: no program this process starts inherits the write end.
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
        let child = Command::new("/bin/sh")
            .args(["-c", KEEPER_SCRIPT, "bpfmatrix-keeper"])
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()?;
        Some(Keeper {
            child,
            _pipe: Some(write),
        })
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages from the reader threads to the supervising loop.
enum Msg {
    Console(String),
    Guest(GuestLine),
    GuestOverflow,
}

/// The state of one run as messages arrive.
struct Run {
    accel: AccelUsed,
    max_result_bytes: u64,
    start: Instant,
    lines: Vec<GuestLine>,
    console: VecDeque<String>,
    first_line_after: Option<Duration>,
    /// Set by a panic line: until when to keep reading, and the lines so far.
    panic: Option<(Instant, Vec<String>)>,
    /// The agent's `done` arrived: it has nothing more to say.
    done: bool,
    /// When the guest last showed life (a console or result line; the process's
    /// start before the first).
    last_sign: Instant,
}

impl Run {
    /// Takes one message; returns how the run ends if this message ends it.
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
                self.done |= is_done(&line);
                on_event(&VmEvent::GuestLine(line.clone()));
                self.lines.push(line);
                None
            }
            Msg::GuestOverflow => Some(BootEnd::TooMuchOutput {
                limit_bytes: self.max_result_bytes,
            }),
        }
    }

    /// The last `n` console lines, one per line.
    fn console_lines(&self, n: usize) -> String {
        let skip = self.console.len().saturating_sub(n);
        self.console
            .iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
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

/// Reads result lines from `input` on a thread of their own, capped at
/// [`MAX_LINE_BYTES`] a line and `max_total` in all.
fn spawn_result_reader(
    input: impl Read + Send + 'static,
    max_total: u64,
    tx: Sender<Msg>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        read_capped_lines(Coalesced(input), MAX_LINE_BYTES, max_total, |msg| {
            tx.send(msg).is_ok()
        })
    })
}

/// A reader that lets a trickle pile up: after a read that brought less than
/// [`TRICKLE_BYTES`], it waits [`TRICKLE_WAIT`] before the next. QEMU's UARTs
/// hand each byte to the host with a write of its own, and a reader woken for
/// every byte took a core's worth of wake-ups from the guests: on 2 cores, the
/// warm 3-kernel matrix went from 2.4 s to 2.0 s with this (TCG, 5.10, 6.1 and
/// 6.12 from saved states). A line is late by at most the wait.
struct Coalesced<R>(R);

const TRICKLE_BYTES: usize = 256;
const TRICKLE_WAIT: Duration = Duration::from_millis(1);

impl<R: Read> Read for Coalesced<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        if n > 0 && n < TRICKLE_BYTES {
            std::thread::sleep(TRICKLE_WAIT);
        }
        Ok(n)
    }
}

/// Reads console lines from `input` on a thread of their own.
fn spawn_console_reader(input: impl Read + Send + 'static, tx: Sender<Msg>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        // The console is unbounded in total (the process stops when the run ends),
        // only each line is capped; the tail kept is bounded by CONSOLE_TAIL.
        read_capped_lines(Coalesced(input), MAX_CONSOLE_LINE, u64::MAX, |msg| {
            let msg = match msg {
                Msg::Guest(line) => Msg::Console(line.text),
                other => other,
            };
            tx.send(msg).is_ok()
        })
    })
}

/// Reads `input` to its end, keeping only its last `cap` bytes (from the first
/// whole line within them, marked as cut), as text.
fn read_tail(mut input: impl Read, cap: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 8192];
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * cap {
                    tail.drain(..tail.len() - cap);
                    cut = true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if tail.len() > cap {
        tail.drain(..tail.len() - cap);
        cut = true;
    }
    if !cut {
        return String::from_utf8_lossy(&tail).into_owned();
    }
    let from = tail.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    format!("[…] {}", String::from_utf8_lossy(&tail[from..]))
}

/// Reads `input` line by line, passing each line (newline and a trailing CR removed)
/// to `emit` as [`Msg::Guest`]. A line longer than `max_line` bytes is cut there and
/// marked truncated, and the rest of it is discarded unread into memory; once
/// `max_total` bytes have been read, [`Msg::GuestOverflow`] is emitted and reading
/// stops. Bytes that are not UTF-8 are replaced, never an end. Stops early if
/// `emit` returns false.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bytes_that_are_not_utf8_do_not_end_the_lines() {
        let out = collect(b"ok\n\xff\xfe bad\nafter\n", 100, u64::MAX);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], line("after", false));
    }

    #[test]
    fn the_tail_keeps_the_end_from_a_whole_line() {
        assert_eq!(read_tail(&b"short\n"[..], 100), "short\n");
        let input: Vec<u8> = (0..10_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let tail = read_tail(&input[..], 100);
        assert!(tail.starts_with("[…] line "), "{tail}");
        assert!(tail.ends_with("line 9999\n"), "{tail}");
        assert!(tail.len() <= 100 + "[…] ".len(), "{}", tail.len());
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

    fn supervision(results: ResultPort, timeout: Duration) -> Supervision {
        Supervision {
            runner: Runner::Qemu,
            accel: AccelUsed::Tcg,
            results,
            timeout,
            max_result_bytes: MAX_RESULT_BYTES,
            silence_deadline: None,
            first_line_deadline: None,
            conversation: None,
        }
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    fn supervise_sh(script: &str, how: Supervision) -> (BootOutcome, Vec<VmEvent>) {
        let mut events = Vec::new();
        let s = supervise(sh(script), how, &mut |e| events.push(e.clone())).unwrap();
        (s.outcome, events)
    }

    /// The state of `pid` as /proc shows it, None once it is gone.
    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    /// Waits up to 5 s for `pid` to be dead (gone, or a zombie of an init that
    /// does not reap).
    fn dies(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(state(pid), None | Some('Z') | Some('X')) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn the_agents_done_ends_the_run_without_waiting_for_the_power_off() {
        // A guest that says done, then takes its time to power off: the run
        // ends at the done, with what came before it, and the process is gone.
        let (o, _) = supervise_sh(
            r#"echo '{"type":"hello_not","x":1}'; echo 'before' >&2; echo '{"type":"done","uptime_ms":5}'; exec sleep 30"#,
            supervision(ResultPort::Stdout, Duration::from_secs(20)),
        );
        assert_eq!(o.end, BootEnd::Finished);
        assert!(o.wall < Duration::from_secs(10), "{:?}", o.wall);
        assert_eq!(o.lines.len(), 2);
        assert_eq!(o.console_tail, ["before"]);
        // A line that only starts like a done is not one.
        let (o, _) = supervise_sh(
            r#"echo '{"type":"done_not"}'; echo '{"type":"done","uptime_ms":"x"}'"#,
            supervision(ResultPort::Stdout, Duration::from_secs(20)),
        );
        assert_eq!(o.end, BootEnd::PoweredOff);
    }

    #[test]
    fn stdout_results_stderr_console_and_a_clean_exit() {
        let (o, events) = supervise_sh(
            "echo hello; echo 'a console line' >&2; printf 'no newline'",
            supervision(ResultPort::Stdout, Duration::from_secs(30)),
        );
        assert_eq!(o.end, BootEnd::PoweredOff);
        assert_eq!(
            o.lines,
            [
                line("hello", false).unwrap(),
                line("no newline", false).unwrap()
            ]
        );
        assert_eq!(o.console_tail, ["a console line"]);
        assert!(o.first_line_after.is_some());
        assert!(
            matches!(&events[0], VmEvent::Starting { command, .. } if command.starts_with("/bin/sh -c 'echo hello;"))
        );
        assert!(events
            .iter()
            .any(|e| matches!(e, VmEvent::GuestSpoke { .. })));
    }

    #[test]
    fn a_failure_quotes_all_of_a_chatty_stderr_end() {
        // 1 MiB on stderr, far more than a pipe holds: read to the end, not stalled.
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("r.sock")).unwrap();
        let (o, _) = supervise_sh(
            "i=0; while [ $i -lt 16384 ]; do echo 'qemu-system-x86_64: a warning that repeats itself a lot' >&2; i=$((i+1)); done; echo 'the real reason' >&2; exit 3",
            supervision(ResultPort::Socket(listener), Duration::from_secs(60)),
        );
        match o.end {
            BootEnd::QemuFailed { status, stderr } => {
                assert!(status.contains('3'), "{status}");
                assert!(stderr.ends_with("the real reason\n"), "{stderr}");
                assert!(stderr.len() <= STDERR_TAIL + 8, "{}", stderr.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failure_with_the_console_on_stderr_quotes_its_last_lines() {
        let (o, _) = supervise_sh(
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22; do echo \"said $i\" >&2; done; exit 255",
            supervision(ResultPort::Stdout, Duration::from_secs(30)),
        );
        match o.end {
            BootEnd::QemuFailed { stderr, .. } => {
                assert!(stderr.starts_with("said 3\n"), "{stderr}");
                assert!(stderr.ends_with("said 22"), "{stderr}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_panic_line_ends_the_run_with_the_lines_after_it() {
        let (o, _) = supervise_sh(
            "echo hello; echo 'Kernel panic - not syncing: sysrq triggered crash' >&2; echo 'CPU: 0 PID: 1' >&2; exec sleep 60",
            supervision(ResultPort::Stdout, Duration::from_secs(30)),
        );
        assert_eq!(
            o.end,
            BootEnd::Panicked {
                lines: vec![
                    "Kernel panic - not syncing: sysrq triggered crash".into(),
                    "CPU: 0 PID: 1".into()
                ]
            }
        );
        assert!(o.wall < Duration::from_secs(10), "{:?}", o.wall);
    }

    #[test]
    fn the_result_cap_ends_the_run() {
        let mut how = supervision(ResultPort::Stdout, Duration::from_secs(30));
        how.max_result_bytes = 1000;
        let (o, _) = supervise_sh("while :; do echo 'a result line'; done", how);
        assert_eq!(o.end, BootEnd::TooMuchOutput { limit_bytes: 1000 });
    }

    #[test]
    fn silence_before_the_first_line_ends_the_run_and_a_line_disarms_it() {
        let mut how = supervision(ResultPort::Stdout, Duration::from_secs(30));
        how.silence_deadline = Some(Duration::from_millis(500));
        let (o, _) = supervise_sh("echo 'booting' >&2; exec sleep 60", how);
        match o.end {
            BootEnd::Silent {
                after,
                last_console,
            } => {
                assert!(after < Duration::from_secs(5), "{after:?}");
                assert_eq!(last_console.as_deref(), Some("booting"));
            }
            other => panic!("{other:?}"),
        }
        let mut how = supervision(ResultPort::Stdout, Duration::from_secs(2));
        how.silence_deadline = Some(Duration::from_millis(300));
        let (o, _) = supervise_sh("echo hello; exec sleep 60", how);
        assert!(matches!(o.end, BootEnd::TimedOut { .. }), "{:?}", o.end);
    }

    #[test]
    fn the_first_line_deadline_is_reported_as_missed() {
        let mut how = supervision(ResultPort::Stdout, Duration::from_secs(30));
        how.first_line_deadline = Some(Duration::from_millis(300));
        let s = supervise(sh("exec sleep 60"), how, &mut |_| {}).unwrap();
        assert!(s.missed_first_line);
        assert!(matches!(s.outcome.end, BootEnd::TimedOut { .. }));
    }

    #[test]
    fn a_timeout_kills_the_whole_group_and_reaps_it() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // A process that starts others, as vng does (sh, virtme-run, QEMU).
        let script = format!(
            "sh -c 'sleep 300 & echo $! >> {p}; wait' & echo $! >> {p}; echo $$ >> {p}; wait",
            p = pids.display()
        );
        let (o, _) = supervise_sh(
            &script,
            supervision(ResultPort::Stdout, Duration::from_millis(1500)),
        );
        assert!(matches!(o.end, BootEnd::TimedOut { .. }), "{:?}", o.end);
        let pids: Vec<u32> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(pids.len(), 3, "{pids:?}");
        for pid in pids {
            assert!(dies(pid), "{pid} outlived the run: {:?}", state(pid));
        }
    }

    #[test]
    fn the_keeper_kills_the_group_when_this_process_is_gone() {
        // What bpfmatrix's death does: the keeper's pipe closes without a kill.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let script = format!("sleep 300 & echo $! > {}; wait", file.display());
        let mut group = ProcessGroup::spawn(&mut sh(&script)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let grandchild: u32 = loop {
            let pid = std::fs::read_to_string(&file).unwrap_or_default();
            if let Ok(pid) = pid.trim().parse() {
                break pid;
            }
            assert!(Instant::now() < deadline, "the grandchild did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        let keeper = group.keeper.as_mut().expect("/bin/sh starts");
        assert_eq!(group.pgid, Pid::from_raw(keeper.child.id() as i32));
        drop(keeper._pipe.take());
        assert!(dies(grandchild), "the keeper did not kill the group");
        let status = group.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        group.exited = true;
        group.killed = true; // (the group is gone: never signal its id again)
    }

    #[test]
    fn the_child_dies_with_the_thread_that_started_it() {
        // PR_SET_PDEATHSIG: a thread that starts a VM process and ends without
        // killing it (what bpfmatrix's death is to its threads) takes it along.
        let pid = std::thread::spawn(|| {
            let group = ProcessGroup::spawn(&mut sh("exec sleep 300")).unwrap();
            let pid = group.id();
            std::mem::forget(group);
            pid
        })
        .join()
        .unwrap();
        assert!(dies(pid), "the child outlived its thread: {:?}", state(pid));
        // Reap it (it is this process's child); its keeper is left to this test
        // process's exit, which makes it kill its (now empty) group.
        let status = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Signaled(Pid::from_raw(pid as i32), Signal::SIGKILL, false)
        );
    }
}
