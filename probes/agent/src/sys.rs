//! What PID 1 must do for itself in an initramfs: mounts, limits, the result
//! port, kernel modules, sysctls, loopback set-up, power off.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};

/// Guest uptime in milliseconds (CLOCK_BOOTTIME: needs no /proc).
pub fn uptime_ms() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: uname fills a zeroed utsname; release is NUL-terminated.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

fn mount_fs(source: &str, target: &str, fstype: &str) -> Result<()> {
    let _ = fs::create_dir_all(target);
    match mount(
        Some(source),
        target,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    ) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => bail!("mount {fstype} on {target}: {e}"),
    }
}

/// devtmpfs on /dev unless the initramfs already has the port's node; this is
/// needed before the result port can be opened, so it comes first.
pub fn mount_dev(port: &str) -> Result<()> {
    if Path::new(port).exists() {
        return Ok(());
    }
    mount_fs("devtmpfs", "/dev", "devtmpfs")
}

/// proc, sysfs, bpffs, debugfs, tracefs. Returns warnings for the ones that failed.
pub fn mount_rest() -> Vec<String> {
    let mut warnings = Vec::new();
    for (src, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("bpf", "/sys/fs/bpf", "bpf"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
    ] {
        if let Err(e) = mount_fs(src, target, fstype) {
            warnings.push(format!("{e:#}"));
        }
    }
    warnings
}

pub fn raise_memlock() -> Result<()> {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).context("RLIMIT_MEMLOCK")
}

/// Opens the result port in raw mode, so the tty adds no \r and eats nothing.
pub fn open_port(path: &str) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("open {path}"))?;
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    if let Ok(mut t) = tcgetattr(&file) {
        cfmakeraw(&mut t);
        tcsetattr(&file, SetArg::TCSANOW, &t).with_context(|| format!("raw mode on {path}"))?;
    }
    Ok(file)
}

/// Lets a UART's receive FIFO fill to 14 bytes (the 16550A's highest trigger)
/// before it interrupts, instead of 8: QEMU hands the guest at most the
/// trigger's worth of bytes per interrupt, and a waiting guest's plan and the
/// objects of `check` come this way (11 KB took 5.10 under TCG about 95 ms at
/// 8, about 80 at 14). Needs /sys; a port without the attribute is left as
/// it is.
pub fn fill_receive_fifo(port: &str) {
    let Some(name) = port.strip_prefix("/dev/") else {
        return;
    };
    let trigger = format!("/sys/class/tty/{name}/rx_trig_bytes");
    if let Err(e) = std::fs::write(&trigger, "14") {
        eprintln!("bpfmatrix-agent: {trigger}: {e}");
    }
}

/// finit_module; compressed modules (.ko.xz/.zst/.gz) ask the kernel to
/// decompress (MODULE_INIT_COMPRESSED_FILE, 5.17+). EEXIST is success.
pub fn load_module(path: &str) -> Result<()> {
    const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;
    let file = File::open(path).with_context(|| format!("open {path}"))?;
    let compressed = [".xz", ".zst", ".gz"].iter().any(|ext| path.ends_with(ext));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = CString::default();
    // SAFETY: a valid fd, a NUL-terminated (empty) parameter string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if ret != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            bail!("finit_module {path}: {err}");
        }
    }
    Ok(())
}

pub fn write_file(path: &str, value: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {path}"))?;
    f.write_all(value.as_bytes())
        .with_context(|| format!("write {value:?} to {path}"))?;
    Ok(())
}

pub fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Brings `lo` up with 127.0.0.1/8 (an initramfs has no `ip`; ioctls suffice).
pub fn loopback_up() -> Result<()> {
    // SAFETY: plain ioctls on a datagram socket with a zeroed, named ifreq.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            bail!("socket: {}", io::Error::last_os_error());
        }
        let _close = scopeguard(sock);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        std::ptr::write_unaligned(&mut ifr.ifr_ifru as *mut _ as *mut libc::sockaddr_in, sin);
        if libc::ioctl(sock, libc::SIOCSIFADDR as _, &ifr) < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                bail!("SIOCSIFADDR lo: {e}");
            }
        }
        let mut ifr_flags: libc::ifreq = std::mem::zeroed();
        ifr_flags.ifr_name = ifr.ifr_name;
        if libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut ifr_flags) < 0 {
            bail!("SIOCGIFFLAGS lo: {}", io::Error::last_os_error());
        }
        ifr_flags.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &ifr_flags) < 0 {
            bail!("SIOCSIFFLAGS lo: {}", io::Error::last_os_error());
        }
    }
    Ok(())
}

struct FdGuard(libc::c_int);
impl Drop for FdGuard {
    fn drop(&mut self) {
        // SAFETY: the guard owns the fd.
        unsafe { libc::close(self.0) };
    }
}
fn scopeguard(fd: libc::c_int) -> FdGuard {
    FdGuard(fd)
}

pub fn sync_and_power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Only reached if power-off failed; PID 1 must not exit.
    sleep_forever()
}

/// What PID 1 does instead of exiting (a fault that hangs, a failed power-off).
pub fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
