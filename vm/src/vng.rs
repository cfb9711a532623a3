//! The virtme-ng backend: runs the same agent and the same plan in a guest booted by
//! `vng --run KERNEL --exec 'AGENT --plan PLAN'`, for users who already live in
//! virtme-ng, and reports through the same [`BootOutcome`] as [`crate::qemu::boot`].
//!
//! virtme-ng (1.42 from PyPI) boots the kernel image with a small initramfs that
//! loads the 9p and virtio modules, mounts the host's root read-only over 9p and
//! runs the command as root. It finds the modules next to the image: for
//! `<root>/boot/vmlinuz-R` it uses `<root>/lib/modules/R`, R being the release the
//! image itself reports (`file`'s reading of the bzImage header). So each run lays
//! out such a root of its own ([`lay_out_root`]: two symlinks, to the cached image
//! and modules), whatever the cache's layout or the kernel's origin. The agent
//! binary, the plan and the clsact modules are read straight from their host paths;
//! the agent is not PID 1 there, so it mounts nothing and exits instead of powering
//! off (see the agent's `hosted` module). Its stdout reaches vng's stdout through a
//! virtio-serial port, without kernel messages (vng sends the console to /dev/null
//! unless verbose), so the plan's result port is `/dev/stdout` and vng's stdout
//! lines are the result lines; vng's stderr (the agent's stderr and vng's own
//! complaints) is the console.
//!
//! What virtme-ng needs on the host besides itself, verified against 1.42's sources
//! ([`check_host`] says which is missing, and what to install): a statically linked
//! busybox for its initramfs (it refuses a dynamic one), `file` (it reads the
//! image's release and busybox's linkage with it) and udev: its guest runs the host's
//! `systemd-udevd` to create `/dev/virtio-ports/virtme.*`, the command's stdin,
//! stdout, stderr and exit-code ports. Without udevd the command runs on the
//! console, which is /dev/null, and vng exits 255 having said nothing.
//!
//! [`install_vng`] puts virtme-ng into a virtualenv in the cache when it is not on
//! PATH (the benchmark and the test trial use it; the backend only [`find_vng`]s).
//!
//! vng is run by [`crate::supervisor`], like QEMU: vng, the shell it starts,
//! `virtme-run` and the QEMU that one forks share one process group, killed
//! together at a timeout, at the result cap, and when bpfmatrix dies.

use crate::supervisor::{
    shell_quote, supervise, AccelUsed, BootEnd, BootOutcome, ResultPort, Runner, Supervision,
    VmEvent, MAX_RESULT_BYTES,
};
use anyhow::{bail, Context};
use bpfmatrix_kernels::{BzImageHeader, Kernel, ModuleFile};
use bpfmatrix_protocol::Plan;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The virtme-ng release the benchmark installs and this backend was written for.
pub const VNG_VERSION: &str = "1.42";

/// One run under virtme-ng.
#[derive(Clone, Debug)]
pub struct VngSpec {
    pub kernel: Kernel,
    /// The agent binary on the host (static; the guest reads it over 9p).
    pub agent: PathBuf,
    /// The plan as for the QEMU backend; [`boot_vng`] rewrites its module paths to
    /// the host paths of `modules`, its objects' paths to `object_files` and its
    /// result port to `/dev/stdout`.
    pub plan: Plan,
    pub modules: Vec<ModuleFile>,
    /// The host files of `plan.objects`, in order (the guest shares the host's root).
    pub object_files: Vec<PathBuf>,
    /// TCG (`--disable-kvm`) or KVM.
    pub accel: AccelUsed,
    pub memory_mib: u32,
    /// The whole run, vng's start to its exit.
    pub timeout: Duration,
    /// The most the agent may write to its result port (vng's stdout) before the
    /// run is ended as [`BootEnd::TooMuchOutput`] ([`MAX_RESULT_BYTES`] unless a
    /// test lowers it).
    pub max_result_bytes: u64,
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

/// Where virtme-ng 1.42 looks for busybox, in its order (`util.find_binary`): each
/// name on PATH, then in these directories.
const BUSYBOX_NAMES: [&str; 3] = ["busybox-static", "busybox.static", "busybox"];
const BUSYBOX_DIRS: [&str; 6] = [
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
];
/// Where virtme-ng-init looks for udevd in the guest, which sees the host's root:
/// these, then `udevd` in its PATH.
const UDEVD_PATHS: [&str; 2] = [
    "/usr/lib/systemd/systemd-udevd",
    "/lib/systemd/systemd-udevd",
];
const GUEST_PATH: [&str; 5] = ["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin"];

/// Checks that this host has what virtme-ng needs besides itself (see the module
/// documentation); the error names each missing piece and the Debian package that
/// brings it.
pub fn check_host() -> anyhow::Result<()> {
    let mut missing: Vec<(String, &str)> = Vec::new();
    match find_busybox() {
        None => missing.push((
            "no busybox (virtme-ng builds its initramfs around one)".into(),
            "busybox-static",
        )),
        Some(path) if elf_is_dynamic(&path) == Some(true) => missing.push((
            format!(
                "{} is dynamically linked (virtme-ng takes the first busybox it finds and needs it static)",
                path.display()
            ),
            "busybox-static",
        )),
        Some(_) => {}
    }
    if which::which("file").is_err() {
        missing.push((
            "no `file` (virtme-ng reads the kernel's release and busybox's linkage with it)".into(),
            "file",
        ));
    }
    let udevd = UDEVD_PATHS
        .iter()
        .map(PathBuf::from)
        .chain(GUEST_PATH.iter().map(|d| Path::new(d).join("udevd")))
        .any(|p| p.exists());
    if !udevd {
        missing.push((
            "no systemd-udevd (virtme-ng's guest runs the host's to create the command's ports, /dev/virtio-ports/virtme.*; without it vng exits 255 without a word)".into(),
            "udev",
        ));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.dedup();
    bail!(
        "virtme-ng cannot run on this host: {}. Install Debian's {} (`apt-get install {}`; `make test` and `make bench` do), or use the default QEMU backend",
        missing
            .iter()
            .map(|(what, _)| what.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        packages.join(" and "),
        packages.join(" ")
    )
}

/// The busybox virtme-ng would take.
fn find_busybox() -> Option<PathBuf> {
    BUSYBOX_NAMES.iter().find_map(|name| {
        which::which(name).ok().or_else(|| {
            BUSYBOX_DIRS
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
    })
}

/// Whether the 64-bit ELF at `path` asks for a program interpreter (is dynamically
/// linked); `None` when it is not one this can read.
fn elf_is_dynamic(path: &Path) -> Option<bool> {
    elf_bytes_are_dynamic(&std::fs::read(path).ok()?)
}

/// Whether the little-endian 64-bit ELF `bytes` asks for a program interpreter
/// (is dynamically linked); `None` when they are not one. The bench's vmtest
/// loader needs a static busybox too.
pub fn elf_bytes_are_dynamic(bytes: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let phoff =
        usize::try_from(u64::from_le_bytes(bytes.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    let mut dynamic = false;
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        dynamic |= p_type == PT_INTERP;
    }
    Some(dynamic)
}

/// The release virtme-ng reads from `image` (as `file` does: the bzImage header's
/// version string), else the kernel's known release, else its modules directory's
/// name.
fn image_release(kernel: &Kernel) -> Option<String> {
    let mut head = Vec::new();
    if let Ok(file) = std::fs::File::open(&kernel.image) {
        let _ = file
            .take(BzImageHeader::READ_LEN as u64)
            .read_to_end(&mut head);
    }
    BzImageHeader::parse(&head)
        .ok()
        .flatten()
        .and_then(|h| h.release())
        .or_else(|| kernel.release.clone())
        .or_else(|| {
            kernel
                .modules_dir
                .as_ref()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
}

/// Lays out in `dir` the root virtme-ng looks for: `dir/root/boot/vmlinuz-R`, a
/// symlink to the kernel's image, beside `dir/root/lib/modules/R`, a symlink to its
/// modules, R being the release the image reports. Returns the image path to give
/// `vng --run`. Without a modules directory it is the image itself, where virtme-ng
/// looks on its own (next to `/boot/vmlinuz-R` that is the host's /lib/modules/R).
/// `dir` must be one the guest sees (the host's /tmp is, through an overlay; so is
/// the cache, through the read-only root).
pub fn lay_out_root(kernel: &Kernel, dir: &Path) -> anyhow::Result<PathBuf> {
    let Some(modules) = &kernel.modules_dir else {
        return Ok(kernel.image.clone());
    };
    let release = image_release(kernel).with_context(|| {
        format!(
            "kernel {}: cannot tell the release of {}, which virtme-ng needs to find its modules",
            kernel.name,
            kernel.image.display()
        )
    })?;
    let absolute = |p: &Path| {
        std::fs::canonicalize(p).with_context(|| format!("cannot resolve {}", p.display()))
    };
    let (image, modules) = (absolute(&kernel.image)?, absolute(modules)?);
    let root = dir.join("root");
    let boot = root.join("boot");
    let lib_modules = root.join("lib").join("modules");
    for d in [&boot, &lib_modules] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let link = |target: &Path, at: PathBuf| -> anyhow::Result<PathBuf> {
        std::os::unix::fs::symlink(target, &at)
            .with_context(|| format!("cannot link {} to {}", at.display(), target.display()))?;
        Ok(at)
    };
    link(&modules, lib_modules.join(&release))?;
    link(&image, boot.join(format!("vmlinuz-{release}")))
}

/// A directory for one vng run, in the host's /tmp: vng overlays the guest's /tmp on
/// the host's, so what is written there before the boot is visible inside, whereas a
/// `$TMPDIR` elsewhere (/var/tmp, say) may be under one of the tmpfs virtme-ng mounts.
fn run_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("bpfmatrix-vng-")
        .tempdir_in("/tmp")
        .context("cannot create a temporary directory in /tmp for virtme-ng")
}

/// vng's arguments, without the executable: `image` is the kernel image as laid out
/// by [`lay_out_root`], `agent_cmd` the command run in the guest.
pub fn vng_args(spec: &VngSpec, image: &Path, agent_cmd: &str) -> Vec<String> {
    let mut args = vec![
        "--run".to_string(),
        image.to_string_lossy().into_owned(),
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
    check_host()?;
    // A directory of our own for the plan and the root virtme-ng reads the kernel
    // from.
    let dir = run_dir()?;
    let image = lay_out_root(&spec.kernel, dir.path())?;
    let mut plan = spec.plan.clone();
    plan.result_port = "/dev/stdout".into();
    plan.modules = spec
        .modules
        .iter()
        .map(|m| m.path.to_string_lossy().into_owned())
        .collect();
    if spec.object_files.len() != plan.objects.len() {
        bail!(
            "the plan names {} objects, but {} files were given for them",
            plan.objects.len(),
            spec.object_files.len()
        );
    }
    for (object, file) in plan.objects.iter_mut().zip(&spec.object_files) {
        object.path = std::path::absolute(file)
            .with_context(|| format!("cannot make {} absolute", file.display()))?
            .to_string_lossy()
            .into_owned();
    }
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan)?)
        .with_context(|| format!("cannot write {}", plan_path.display()))?;
    let agent_cmd = format!(
        "{} --plan {}",
        shell_quote(&spec.agent.to_string_lossy()),
        shell_quote(&plan_path.to_string_lossy())
    );
    let mut command = vng_command(&vng, dir.path());
    command.args(vng_args(spec, &image, &agent_cmd));
    let supervised = supervise(
        command,
        Supervision {
            runner: Runner::Vng,
            accel: spec.accel,
            results: ResultPort::Stdout,
            timeout: spec.timeout,
            max_result_bytes: spec.max_result_bytes,
            // vng's stderr carries the agent's stderr only: it is silent while the
            // guest boots (up to a minute under TCG), so no silence watchdog.
            silence_deadline: None,
            first_line_deadline: None,
            conversation: None,
        },
        on_event,
    )?;
    Ok(supervised.outcome)
}

/// `vng`, run from `dir` (its own directory for this run) with its own bin
/// directory first on PATH (it runs `virtme-run` and friends from there).
fn vng_command(vng: &Path, dir: &Path) -> Command {
    let mut command = Command::new(vng);
    command
        .current_dir(dir)
        .env("PATH", path_with(vng.parent()));
    command
}

/// Runs `vng --run KERNEL [--disable-kvm] --exec true` and returns its wall time:
/// the benchmark's virtme-ng reference.
pub fn time_exec_true(
    vng: &Path,
    kernel: &Kernel,
    accel: AccelUsed,
    memory_mib: u32,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    check_modules(kernel)?;
    check_host()?;
    let dir = run_dir()?;
    let image = lay_out_root(kernel, dir.path())?;
    let mut args = vec![
        "--run".to_string(),
        image.to_string_lossy().into(),
        "--memory".to_string(),
        format!("{memory_mib}M"),
    ];
    if accel == AccelUsed::Tcg {
        args.push("--disable-kvm".into());
    }
    args.extend(["--exec".to_string(), "true".to_string()]);
    let mut command = vng_command(vng, dir.path());
    command.args(&args);
    let outcome = supervise(
        command,
        Supervision {
            runner: Runner::Vng,
            accel,
            results: ResultPort::Stdout,
            timeout,
            max_result_bytes: MAX_RESULT_BYTES,
            silence_deadline: None,
            first_line_deadline: None,
            conversation: None,
        },
        &mut |_| {},
    )?
    .outcome;
    match outcome.end {
        BootEnd::PoweredOff | BootEnd::Finished => Ok(outcome.wall),
        BootEnd::TimedOut { .. } => {
            bail!("vng --exec true took longer than {timeout:?} and was killed")
        }
        BootEnd::QemuFailed { status, .. } => bail!(
            "vng --exec true failed ({status}): {}",
            last_words(outcome.console_tail.iter().map(String::as_str))
        ),
        other => bail!("vng --exec true ended unexpectedly: {other:?}"),
    }
}

/// What vng said last on stderr (up to 20 lines, joined with " | "), or that it said
/// nothing: virtme-ng exits 255 without a word when its guest cannot report back.
pub fn last_words<'a>(stderr: impl DoubleEndedIterator<Item = &'a str>) -> String {
    let mut tail: Vec<&str> = stderr
        .rev()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(20)
        .collect();
    if tail.is_empty() {
        return "it said nothing on stderr (virtme-ng is silent when its guest cannot report back; `vng --verbose` shows the guest's console)".into();
    }
    tail.reverse();
    format!("its last words: {}", tail.join(" | "))
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
    use bpfmatrix_protocol::{CaseId, JitMode, PROTOCOL_VERSION};

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
                config: None,
            },
            agent: "/a/bpfmatrix-agent".into(),
            plan: Plan {
                protocol: PROTOCOL_VERSION,
                cases: vec![CaseId::TailCallChain],
                jit_modes: vec![JitMode::Jit],
                modules: vec![],
                result_port: "/dev/ttyS1".into(),
                fault: None,
                objects: vec![],
                exec: None,
            },
            object_files: vec![],
            modules: vec![],
            accel: AccelUsed::Tcg,
            memory_mib: 512,
            timeout: Duration::from_secs(60),
            max_result_bytes: MAX_RESULT_BYTES,
            extra_append: String::new(),
            vng: None,
        }
    }

    #[test]
    fn vng_runs_the_bzimage_under_tcg_with_the_agent_command() {
        let args = vng_args(
            &spec(),
            Path::new("/t/root/boot/vmlinuz-6.1"),
            "/a/bpfmatrix-agent --plan /t/plan.json",
        );
        assert_eq!(
            args,
            [
                "--run",
                "/t/root/boot/vmlinuz-6.1",
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
        let args = vng_args(&kvm, Path::new("/i"), "x");
        assert!(!args.contains(&"--disable-kvm".to_string()));
        assert!(args.windows(2).any(|w| w == ["--append", "quiet"]));
    }

    #[test]
    fn the_root_puts_the_modules_beside_the_image_under_its_release() {
        let cache = tempfile::tempdir().unwrap();
        // A flat cache entry: neither file is where virtme-ng would look.
        let image = cache.path().join("bzImage");
        let mut head = vec![0u8; 0x600];
        head[0x1f1] = 1;
        head[0x202..0x206].copy_from_slice(b"HdrS");
        head[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        head[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let version = b"6.1.0-9-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        head[0x500..0x500 + version.len()].copy_from_slice(version);
        std::fs::write(&image, &head).unwrap();
        let modules = cache.path().join("mods");
        std::fs::create_dir_all(modules.join("kernel/fs/9p")).unwrap();
        let mut k = spec().kernel;
        k.image = image.clone();
        // The image's own word wins over the name the kernel was cached under.
        k.release = Some("something-else".into());
        k.modules_dir = Some(modules.clone());

        let dir = tempfile::tempdir().unwrap();
        let at = lay_out_root(&k, dir.path()).unwrap();
        let root = dir.path().join("root");
        assert_eq!(at, root.join("boot/vmlinuz-6.1.0-9-amd64"));
        assert_eq!(std::fs::read_link(&at).unwrap(), image);
        let lib = root.join("lib/modules/6.1.0-9-amd64");
        assert_eq!(std::fs::read_link(&lib).unwrap(), modules);
        assert!(lib.join("kernel/fs/9p").is_dir());

        // Without the header's word: the kernel's release.
        std::fs::write(&image, b"not a bzImage").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let at = lay_out_root(&k, dir.path()).unwrap();
        assert!(
            at.ends_with("boot/vmlinuz-something-else"),
            "{}",
            at.display()
        );

        // Without modules: the image as it is, for virtme-ng's own search.
        k.modules_dir = None;
        assert_eq!(lay_out_root(&k, dir.path()).unwrap(), image);
    }

    #[test]
    fn a_busybox_with_an_interpreter_is_dynamic() {
        // A 64-bit ELF header with two program headers, the second of type `t`.
        let elf = |t: u32| {
            let mut f = vec![0u8; 64 + 2 * 56];
            // 64-bit (2), little-endian (1), as every x86_64 program is.
            f[..6].copy_from_slice(b"\x7fELF\x02\x01");
            f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
            f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
            f[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
            f[64..68].copy_from_slice(&1u32.to_le_bytes());
            f[120..124].copy_from_slice(&t.to_le_bytes());
            f
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busybox");
        std::fs::write(&path, elf(3)).unwrap();
        assert_eq!(elf_is_dynamic(&path), Some(true));
        std::fs::write(&path, elf(1)).unwrap();
        assert_eq!(elf_is_dynamic(&path), Some(false));
        std::fs::write(&path, b"#!/bin/sh\n").unwrap();
        assert_eq!(elf_is_dynamic(&path), None);
    }

    #[test]
    fn last_words_or_the_silence() {
        assert!(last_words("\n  \n".lines()).contains("said nothing"));
        let many: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
        let said = last_words(many.iter().map(String::as_str));
        assert!(said.starts_with("its last words: line 10 | "), "{said}");
        assert!(said.ends_with("line 29"), "{said}");
    }

    #[test]
    fn quoting_keeps_paths_plain() {
        assert_eq!(shell_quote("/a/b-c.json"), "/a/b-c.json");
        assert_eq!(shell_quote("a b"), "'a b'");
    }
}
