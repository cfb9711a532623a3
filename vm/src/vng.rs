//! The virtme-ng backend: runs the same agent and the same plan in a guest booted by
//! `vng --run KERNEL --exec 'AGENT --plan PLAN'`, for users who already live in
//! virtme-ng, and reports through the same [`BootOutcome`] as [`crate::qemu::boot`].
//!
//! virtme-ng (1.42 from PyPI) boots the kernel's bzImage with a small initramfs that
//! loads the 9p and virtio modules (it finds them next to the image: for
//! `<root>/boot/vmlinuz-R` it uses `<root>/lib/modules/R`), mounts the host's root
//! read-only over 9p and runs the command as root. So the agent binary, the plan and
//! the clsact modules are read straight from their host paths; the agent is not PID 1
//! there, so it mounts nothing and exits instead of powering off (see the agent's
//! `hosted` module). Its stdout reaches vng's stdout through a virtio-serial port,
//! without kernel messages (vng sends the console to /dev/null unless verbose), so
//! the plan's result port is `/dev/stdout` and vng's stdout lines are the result
//! lines; vng's stderr (the agent's stderr and vng's own complaints) is the console.
//!
//! [`install_vng`] puts virtme-ng into a virtualenv in the cache when it is not on
//! PATH (the benchmark uses it; the backend only [`find_vng`]s).

use crate::qemu::{
    shell_quote, AccelUsed, BootEnd, BootOutcome, GuestLine, VmEvent, MAX_RESULT_BYTES,
};
use anyhow::{bail, Context};
use bpfmatrix_kernels::{Kernel, ModuleFile};
use bpfmatrix_probes::{Plan, MAX_LINE_BYTES};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The virtme-ng release the benchmark installs and this backend was written for.
pub const VNG_VERSION: &str = "1.42";

/// Console (stderr) lines kept for [`BootOutcome::console_tail`].
const CONSOLE_TAIL: usize = 300;

/// One run under virtme-ng.
#[derive(Clone, Debug)]
pub struct VngSpec {
    pub kernel: Kernel,
    /// The agent binary on the host (static; the guest reads it over 9p).
    pub agent: PathBuf,
    /// The plan as for the QEMU backend; [`boot_vng`] rewrites its module paths to
    /// the host paths of `modules` and its result port to `/dev/stdout`.
    pub plan: Plan,
    pub modules: Vec<ModuleFile>,
    /// TCG (`--disable-kvm`) or KVM.
    pub accel: AccelUsed,
    pub memory_mib: u32,
    /// The whole run, vng's start to its exit.
    pub timeout: Duration,
    /// Appended to the kernel command line (`--append`).
    pub extra_append: String,
    /// The vng executable; [`find_vng`] when None.
    pub vng: Option<PathBuf>,
}

/// vng on PATH, else the one [`install_vng`] put into the cache.
pub fn find_vng() -> anyhow::Result<PathBuf> {
    if let Ok(path) = which::which("vng") {
        return Ok(path);
    }
    let cached = venv_dir().join("bin").join("vng");
    if cached.is_file() {
        return Ok(cached);
    }
    bail!(
        "vng (virtme-ng) not found on PATH nor in {}: install it with `pip install virtme-ng=={VNG_VERSION}` (it also needs Debian's kmod for depmod), or use the default QEMU backend",
        venv_dir().display()
    )
}

/// Where [`install_vng`] keeps its virtualenv.
pub fn venv_dir() -> PathBuf {
    bpfmatrix_kernels::cache_dir().join("virtme-ng")
}

/// [`find_vng`], else installs virtme-ng [`VNG_VERSION`] from PyPI into
/// [`venv_dir`] with `python3 -m venv` and pip.
pub fn install_vng(progress: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    if let Ok(path) = find_vng() {
        return Ok(path);
    }
    let venv = venv_dir();
    let python = which::which("python3").context(
        "python3 not found: virtme-ng is a Python program (install python3 and python3-venv)",
    )?;
    progress(&format!(
        "installing virtme-ng {VNG_VERSION} into {}",
        venv.display()
    ));
    let run = |cmd: &mut Command, what: &str| -> anyhow::Result<()> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    run(
        Command::new(&python).args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            &format!("virtme-ng=={VNG_VERSION}"),
        ]),
        "pip install virtme-ng",
    )?;
    find_vng()
}

/// vng's arguments, without the executable. `agent_cmd` is the command run in the
/// guest.
pub fn vng_args(spec: &VngSpec, agent_cmd: &str) -> Vec<String> {
    let mut args = vec![
        "--run".to_string(),
        spec.kernel.image.to_string_lossy().into_owned(),
        "--memory".to_string(),
        format!("{}M", spec.memory_mib),
    ];
    if spec.accel == AccelUsed::Tcg {
        args.push("--disable-kvm".into());
    }
    if !spec.extra_append.trim().is_empty() {
        args.push("--append".into());
        args.push(spec.extra_append.trim().into());
    }
    args.push("--exec".into());
    args.push(agent_cmd.into());
    args
}

/// Runs `spec` under vng and reports events as they happen; the outcome has the
/// same shape as a QEMU boot's: result lines from the agent's stdout, the console
/// tail from stderr, and [`BootEnd::PoweredOff`] when vng exits successfully.
pub fn boot_vng(spec: &VngSpec, on_event: &mut dyn FnMut(&VmEvent)) -> anyhow::Result<BootOutcome> {
    let vng = match &spec.vng {
        Some(path) => path.clone(),
        None => find_vng()?,
    };
    if !spec.agent.is_file() {
        bail!("guest agent {} does not exist", spec.agent.display());
    }
    check_modules(&spec.kernel)?;
    // A directory of our own for the plan; vng's guest sees the host's /tmp
    // through an overlay, so files written here before the boot are visible.
    let dir = tempfile::Builder::new()
        .prefix("bpfmatrix-vng-")
        .tempdir()
        .context("cannot create a temporary directory for the plan")?;
    let mut plan = spec.plan.clone();
    plan.result_port = "/dev/stdout".into();
    plan.modules = spec
        .modules
        .iter()
        .map(|m| m.path.to_string_lossy().into_owned())
        .collect();
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan)?)
        .with_context(|| format!("cannot write {}", plan_path.display()))?;
    let agent_cmd = format!(
        "{} --plan {}",
        shell_quote(&spec.agent.to_string_lossy()),
        shell_quote(&plan_path.to_string_lossy())
    );
    let args = vng_args(spec, &agent_cmd);
    let command = std::iter::once(vng.to_string_lossy().into_owned())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    on_event(&VmEvent::Starting {
        accel: spec.accel,
        command,
    });

    let start = Instant::now();
    let mut child = Command::new(&vng)
        .args(&args)
        .current_dir(dir.path())
        // vng finds virtme-run and friends next to itself.
        .env("PATH", path_with(vng.parent()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills vng and the QEMU it started.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", vng.display()))?;
    let pgid = child.id() as i32;

    enum Msg {
        Out(String, bool),
        Err(String),
        Overflow,
    }
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let tx_out = tx.clone();
    let out_thread = std::thread::spawn(move || {
        let mut total = 0u64;
        let mut reader = BufReader::new(stdout.take(MAX_RESULT_BYTES + 1));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n as u64;
                    if total > MAX_RESULT_BYTES {
                        let _ = tx_out.send(Msg::Overflow);
                        break;
                    }
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    let truncated = buf.len() > MAX_LINE_BYTES;
                    buf.truncate(MAX_LINE_BYTES);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if tx_out.send(Msg::Out(text, truncated)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(Msg::Err(line)).is_err() {
                break;
            }
        }
    });

    let mut lines = Vec::new();
    let mut console: VecDeque<String> = VecDeque::new();
    let mut first_line_after = None;
    let mut handle =
        |msg: Msg, lines: &mut Vec<GuestLine>, console: &mut VecDeque<String>| -> bool {
            match msg {
                Msg::Out(text, truncated) => {
                    first_line_after.get_or_insert_with(|| start.elapsed());
                    let line = GuestLine { text, truncated };
                    on_event(&VmEvent::GuestLine(line.clone()));
                    lines.push(line);
                    false
                }
                Msg::Err(line) => {
                    if console.len() == CONSOLE_TAIL {
                        console.pop_front();
                    }
                    console.push_back(line.clone());
                    on_event(&VmEvent::Console(line));
                    false
                }
                Msg::Overflow => true,
            }
        };
    let kill = |child: &mut std::process::Child| {
        // SAFETY: signals the process group this function created (pgid = vng's pid).
        unsafe { libc_killpg(pgid) };
        let _ = child.kill();
        let _ = child.wait();
    };
    let end = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(msg) => {
                if handle(msg, &mut lines, &mut console) {
                    kill(&mut child);
                    break BootEnd::TooMuchOutput {
                        limit_bytes: MAX_RESULT_BYTES,
                    };
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait()? {
            let _ = out_thread.join();
            let _ = err_thread.join();
            let mut overflow = false;
            while let Ok(msg) = rx.try_recv() {
                overflow |= handle(msg, &mut lines, &mut console);
            }
            break if overflow {
                BootEnd::TooMuchOutput {
                    limit_bytes: MAX_RESULT_BYTES,
                }
            } else if status.success() {
                BootEnd::PoweredOff
            } else {
                BootEnd::QemuFailed {
                    status: format!("vng {status}"),
                    stderr: console
                        .iter()
                        .rev()
                        .take(20)
                        .rev()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n"),
                }
            };
        }
        let elapsed = start.elapsed();
        if elapsed >= spec.timeout {
            kill(&mut child);
            break BootEnd::TimedOut { after: elapsed };
        }
    };
    Ok(BootOutcome {
        accel: spec.accel,
        kvm_fallback: None,
        lines,
        console_tail: console.into(),
        end,
        wall: start.elapsed(),
        first_line_after,
    })
}

/// Runs `vng --run KERNEL [--disable-kvm] --exec true` and returns its wall time:
/// the benchmark's virtme-ng reference.
pub fn time_exec_true(
    vng: &Path,
    kernel: &Kernel,
    accel: AccelUsed,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let dir = tempfile::Builder::new()
        .prefix("bpfmatrix-vng-")
        .tempdir()?;
    let mut args = vec!["--run".to_string(), kernel.image.to_string_lossy().into()];
    if accel == AccelUsed::Tcg {
        args.push("--disable-kvm".into());
    }
    args.extend(["--exec".to_string(), "true".to_string()]);
    let start = Instant::now();
    let mut child = Command::new(vng)
        .args(&args)
        .current_dir(dir.path())
        .env("PATH", path_with(vng.parent()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", vng.display()))?;
    let pgid = child.id() as i32;
    let stderr = child.stderr.take().expect("stderr is piped");
    let err_thread = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.take(64 * 1024).read_to_string(&mut text);
        text
    });
    loop {
        if let Some(status) = child.try_wait()? {
            let wall = start.elapsed();
            let stderr = err_thread.join().unwrap_or_default();
            if !status.success() {
                bail!("vng --exec true failed ({status}): {}", stderr.trim());
            }
            return Ok(wall);
        }
        if start.elapsed() >= timeout {
            // SAFETY: signals the process group created above.
            unsafe { libc_killpg(pgid) };
            let _ = child.kill();
            let _ = child.wait();
            bail!("vng --exec true took longer than {timeout:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// virtme-ng mounts the host's root over 9p from modules it loads out of the
/// kernel's modules directory: a kernel whose modules lack fs/9p (e.g. a cache entry
/// that unpacked only net/) fails at once with exit 255 and no message. Says so.
pub fn check_modules(kernel: &Kernel) -> anyhow::Result<()> {
    let Some(dir) = &kernel.modules_dir else {
        return Ok(());
    };
    if !dir.join("kernel/fs/9p").is_dir() {
        bail!(
            "kernel {}: {} has no kernel/fs/9p, which virtme-ng needs to mount its root; unpack the kernel's full modules for the vng backend",
            kernel.name,
            dir.display()
        );
    }
    Ok(())
}

/// SIGKILL to a process group.
///
/// # Safety
/// `pgid` must be a process group this process created.
unsafe fn libc_killpg(pgid: i32) {
    extern "C" {
        fn killpg(pgrp: i32, sig: i32) -> i32;
    }
    const SIGKILL: i32 = 9;
    if pgid > 1 {
        killpg(pgid, SIGKILL);
    }
}

/// PATH with `dir` in front (vng runs `virtme-run` from its own bin directory).
fn path_with(dir: Option<&Path>) -> std::ffi::OsString {
    let mut paths: Vec<PathBuf> = dir.map(Path::to_path_buf).into_iter().collect();
    if let Some(old) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfmatrix_kernels::BootProtocol;
    use bpfmatrix_probes::{CaseId, JitMode, PROTOCOL_VERSION};

    fn spec() -> VngSpec {
        VngSpec {
            kernel: Kernel {
                name: "k".into(),
                release: None,
                image: "/k/root/boot/vmlinuz-6.1".into(),
                boot_image: "/k/vmlinux".into(),
                boot_protocol: BootProtocol::Pvh,
                modules_dir: None,
                source: String::new(),
            },
            agent: "/a/bpfmatrix-agent".into(),
            plan: Plan {
                protocol: PROTOCOL_VERSION,
                cases: vec![CaseId::TailCallChain],
                jit_modes: vec![JitMode::Jit],
                modules: vec![],
                result_port: "/dev/ttyS1".into(),
                fault: None,
            },
            modules: vec![],
            accel: AccelUsed::Tcg,
            memory_mib: 512,
            timeout: Duration::from_secs(60),
            extra_append: String::new(),
            vng: None,
        }
    }

    #[test]
    fn vng_runs_the_bzimage_under_tcg_with_the_agent_command() {
        let args = vng_args(&spec(), "/a/bpfmatrix-agent --plan /t/plan.json");
        assert_eq!(
            args,
            [
                "--run",
                "/k/root/boot/vmlinuz-6.1",
                "--memory",
                "512M",
                "--disable-kvm",
                "--exec",
                "/a/bpfmatrix-agent --plan /t/plan.json"
            ]
        );
        let mut kvm = spec();
        kvm.accel = AccelUsed::Kvm;
        kvm.extra_append = "quiet".into();
        let args = vng_args(&kvm, "x");
        assert!(!args.contains(&"--disable-kvm".to_string()));
        assert!(args.windows(2).any(|w| w == ["--append", "quiet"]));
    }

    #[test]
    fn quoting_keeps_paths_plain() {
        assert_eq!(shell_quote("/a/b-c.json"), "/a/b-c.json");
        assert_eq!(shell_quote("a b"), "'a b'");
    }
}
