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

use crate::supervisor::{supervise, ResultPort, Supervised, Supervision};
pub use crate::supervisor::{
    AccelUsed, BootEnd, BootOutcome, GuestLine, Runner, VmEvent, MAX_RESULT_BYTES,
};
use anyhow::{bail, Context};
use bpfmatrix_kernels::Kernel;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::net::UnixListener;
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
        },
        on_event,
    )?;
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
