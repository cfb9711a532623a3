//! Boots one guest under QEMU and reports what happened: owns QEMU's command line
//! and the choice of accelerator (the KVM probe and the fallback to TCG), and hands
//! the process to [`crate::supervisor`], which turns its console and the guest's
//! result port into typed [`VmEvent`]s and ends every boot in a [`BootEnd`]
//! (powered off, panicked, timed out, or QEMU failed), never hanging and never
//! leaving a QEMU process behind.
//!
//! Two serial ports: ttyS0 is the console (QEMU's stdout, kernel messages and all);
//! ttyS1 is the result port, where only the agent writes. The result port is a unix
//! socket the host listens on and QEMU connects to as a client when it starts, before
//! the guest runs: unlike `-serial file:` nothing has to be tailed or polled, EOF
//! arrives when QEMU exits, and unlike QEMU-as-server no line can be lost before the
//! host connects. The kernel never prints to ttyS1, so the console cannot corrupt it.

use crate::snapshot::{self, Key, KeyParts, Qmp};
use crate::supervisor::{supervise, Conversation, ResultPort, Supervised, Supervision};
pub use crate::supervisor::{
    AccelUsed, BootEnd, BootOutcome, GuestLine, Runner, VmEvent, MAX_RESULT_BYTES,
};
use anyhow::{bail, Context};
use bpfmatrix_kernels::Kernel;
use bpfmatrix_protocol::GuestMessage;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

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
    /// For a guest that waits for its plan (its initramfs has a
    /// `bpfmatrix_protocol::BootConfig`): what to hand it and what to do with its
    /// state.
    pub handshake: Option<Handshake>,
    /// A host directory shared read-only over virtio-9p under
    /// `bpfmatrix_protocol::HOST_ROOT_TAG` (`bpfmatrix exec` shares `/`). The
    /// device is part of the guest's shape, so such guests have saved states of
    /// their own; QEMU saves them as long as the guest has not mounted it.
    pub host_share: Option<PathBuf>,
}

/// The host's side of a guest that waits for its plan on the result port.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// Written to the result port when the guest is ready (or, restored, as soon
    /// as it runs): a `PlanDelivery` line and the objects' bytes.
    pub delivery: Vec<u8>,
    /// Save the guest's state here when it says it is ready, keyed by everything
    /// that shaped it (a boot, not a restore).
    pub save: Option<snapshot::Store>,
    /// Start from this saved state (`-incoming`) instead of booting.
    pub restore: Option<PathBuf>,
}

impl BootSpec {
    /// A spec with the defaults: Auto accelerator, 512 MiB, 120 s, KVM deadline 8 s,
    /// silence deadline 8 s.
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
            silence_deadline: Duration::from_secs(8),
            handshake: None,
            host_share: None,
        }
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

/// Starts `spec`'s guest from the saved state in its handshake under `accel` (the
/// accelerator the state was saved under), and runs it as [`boot`] does. The
/// guest must speak within `deadline` of QEMU's start, or it is killed and the
/// run ends [`BootEnd::TimedOut`]: a restored guest answers at once or never.
pub fn restore(
    spec: &BootSpec,
    accel: AccelUsed,
    deadline: Duration,
    on_event: &mut dyn FnMut(&VmEvent),
) -> anyhow::Result<BootOutcome> {
    let qemu = find_qemu()?;
    match &spec.handshake {
        Some(Handshake {
            restore: Some(state),
            ..
        }) if state.is_file() => {}
        _ => bail!("nothing to restore: no saved state in the spec"),
    }
    attempt(&qemu, spec, accel, Some(deadline), on_event).map(|a| a.outcome)
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
    if let Some(dir) = &spec.host_share {
        // QEMU's -fsdev options are comma-separated; a comma in a path is doubled.
        // The host's filesystems each number their inodes from 1 or 2: without
        // multidevs=remap the guest takes its /proc, /sys and /dev for one folder.
        let path = dir.to_string_lossy().replace(',', ",,");
        push(&[
            "-fsdev",
            &format!(
                "local,id=hostshare,path={path},security_model=none,readonly=on,multidevs=remap"
            ),
            "-device",
            &format!(
                "virtio-9p-pci,fsdev=hostshare,mount_tag={}",
                bpfmatrix_protocol::HOST_ROOT_TAG
            ),
        ]);
    }
    push(&["-kernel", &spec.kernel.boot_image.to_string_lossy()]);
    push(&["-initrd", &spec.initramfs.to_string_lossy()]);
    push(&["-append", &kernel_append(&spec.extra_append)]);
    args
}

/// The arguments that shape a guest, for its snapshot key: [`qemu_args`] with the
/// per-run paths (result socket, initramfs file; its content is keyed apart) fixed.
pub fn shaping_args(spec: &BootSpec, accel: AccelUsed) -> Vec<OsString> {
    let mut fixed = spec.clone();
    fixed.initramfs = PathBuf::from("INITRAMFS");
    fixed.handshake = None;
    qemu_args(&fixed, accel, Path::new("RESULT"))
}

/// The snapshot key of `spec`'s guest under `accel`.
pub fn snapshot_key(qemu: &Path, spec: &BootSpec, accel: AccelUsed) -> anyhow::Result<Key> {
    Key::new(&KeyParts {
        kernel_name: &spec.kernel.name,
        boot_image: &spec.kernel.boot_image,
        initramfs: &spec.initramfs,
        qemu,
        accel,
        kind: if spec.host_share.is_some() {
            "exec"
        } else {
            "cases"
        },
        args: &shaping_args(spec, accel),
    })
}

/// How long a restored guest may take to be running again.
const RESTORE_WITHIN: Duration = Duration::from_secs(30);
/// How long saving a guest may take (about 70 MB; 0.5 s here under TCG).
const SAVE_WITHIN: Duration = Duration::from_secs(60);

/// [`Handshake`] at work in one attempt.
#[derive(Debug)]
struct Talk {
    delivery: Vec<u8>,
    qmp: PathBuf,
    save: Option<(snapshot::Store, Key)>,
    restore: bool,
    delivered: bool,
}

impl Talk {
    /// Writes the plan on a thread of its own: the UART takes it at its own pace
    /// (about 130 KB/s under TCG), and the supervisor must keep watching meanwhile.
    /// A guest that dies closes the socket, which ends the write.
    fn deliver(&mut self, port: &mut UnixStream) -> anyhow::Result<()> {
        let mut port = port
            .try_clone()
            .context("cannot write to the result socket")?;
        let delivery = std::mem::take(&mut self.delivery);
        std::thread::spawn(move || {
            let _ = port.write_all(&delivery).and_then(|()| port.flush());
        });
        self.delivered = true;
        Ok(())
    }

    fn save(&self, qmp: &mut Qmp) -> anyhow::Result<u64> {
        let (store, key) = self.save.as_ref().expect("only called to save");
        let pending = store.begin(key)?;
        qmp.save(pending.path(), SAVE_WITHIN)?;
        pending.commit()
    }
}

impl Conversation for Talk {
    fn connected(
        &mut self,
        port: &mut UnixStream,
        since_start: Duration,
        on_event: &mut dyn FnMut(&VmEvent),
    ) -> anyhow::Result<()> {
        if !self.restore {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let mut qmp = Qmp::connect(&self.qmp, RESTORE_WITHIN)?;
        qmp.resume_incoming(RESTORE_WITHIN)?;
        on_event(&VmEvent::Restored {
            after: since_start + t.elapsed(),
        });
        self.deliver(port)
    }

    fn line(
        &mut self,
        line: &GuestLine,
        port: &mut UnixStream,
        on_event: &mut dyn FnMut(&VmEvent),
    ) -> anyhow::Result<()> {
        if self.delivered || !is_ready(&line.text) {
            return Ok(());
        }
        if self.save.is_some() {
            let t = std::time::Instant::now();
            let saved = Qmp::connect(&self.qmp, Duration::from_secs(5)).and_then(|mut qmp| {
                let saved = self.save(&mut qmp);
                // The guest goes on whether its state was saved or not (a stop
                // that failed leaves it running; cont then does nothing).
                qmp.cont()?;
                saved
            });
            on_event(&match saved {
                Ok(bytes) => VmEvent::Saved {
                    bytes,
                    took: t.elapsed(),
                },
                Err(e) => VmEvent::SaveFailed {
                    reason: format!("{e:#}"),
                },
            });
        }
        self.deliver(port)
    }
}

/// Whether a result line is the agent's `ready`.
fn is_ready(text: &str) -> bool {
    matches!(
        serde_json::from_str::<GuestMessage>(text),
        Ok(GuestMessage::Ready { .. })
    )
}

/// Leaves `fd` open in the QEMU that `command` starts (Rust opens every file
/// close-on-exec).
fn inherit_fd(command: &mut Command, fd: RawFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // SAFETY: between fork and exec the closure makes one fcntl, which is
    // async-signal-safe, on an fd the parent keeps open until the spawn.
    unsafe {
        command.pre_exec(move || {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

struct Attempt {
    outcome: BootOutcome,
    /// Set when this was a KVM probe (a deadline was given) and KVM showed no life.
    kvm_failure: Option<String>,
}

/// One boot attempt under `accel`: QEMU run by [`supervise`], the result port a
/// socket in a temporary directory. With `kvm_deadline` this is the KVM probe, and
/// the attempt says why KVM failed if it showed no life.
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
    let mut command = Command::new(qemu);
    command.args(qemu_args(spec, accel, &socket));
    let mut conversation: Option<Box<dyn Conversation>> = None;
    let mut state_file = None;
    if let Some(h) = &spec.handshake {
        let qmp = dir.path().join("qmp.sock");
        command
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        if let Some(state) = &h.restore {
            // Handed over as an open file: QEMU reads it straight, where
            // `exec:cat FILE` added a shell, a cat and a pipe, 25 ms of every
            // restore here (60 MB state, TCG). Open until QEMU has started.
            let file = std::fs::File::open(state)
                .with_context(|| format!("cannot open the saved state {}", state.display()))?;
            command
                .arg("-incoming")
                .arg(format!("fd:{}", file.as_raw_fd()));
            inherit_fd(&mut command, file.as_raw_fd());
            state_file = Some(file);
        }
        let save = match &h.save {
            Some(store) => Some((store.clone(), snapshot_key(qemu, spec, accel)?)),
            None => None,
        };
        conversation = Some(Box::new(Talk {
            delivery: h.delivery.clone(),
            qmp,
            save,
            restore: h.restore.is_some(),
            delivered: false,
        }));
    }
    let Supervised {
        outcome,
        missed_first_line,
    } = supervise(
        command,
        Supervision {
            runner: Runner::Qemu,
            accel,
            results: ResultPort::Socket(listener),
            timeout: spec.timeout,
            max_result_bytes: spec.max_result_bytes,
            silence_deadline: Some(spec.silence_deadline),
            first_line_deadline: kvm_deadline,
            conversation,
        },
        on_event,
    )?;
    drop(state_file);
    let kvm_failure = match (kvm_deadline, &outcome.end) {
        (Some(deadline), _) if missed_first_line => Some(format!(
            "no line from the guest within {:.1} s under KVM",
            deadline.as_secs_f64()
        )),
        (Some(_), BootEnd::QemuFailed { status, stderr }) if outcome.lines.is_empty() => {
            Some(format!(
                "QEMU failed under KVM ({status}): {}",
                stderr.lines().last().unwrap_or("").trim()
            ))
        }
        _ => None,
    };
    Ok(Attempt {
        outcome,
        kvm_failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfmatrix_kernels::BootProtocol;

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
            config: None,
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
}
