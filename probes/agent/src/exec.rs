//! `bpfmatrix exec` inside the guest: the user's own command, run as root in the
//! host's filesystem. The host shares its root read-only over virtio-9p; the
//! agent mounts it (only now: QEMU cannot save a guest with a 9p export mounted,
//! so a saved guest has the 9p modules loaded and nothing mounted), gives it the
//! guest's own /proc, /sys (bpffs, debugfs, tracefs), /dev and a private
//! writable /tmp and /run, and runs the command chrooted into it, so a binary
//! built on the host finds its libraries and data at the host's paths. Its output
//! goes home as it comes, then how it ended.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result};
use bpfmatrix_protocol::{
    ExecSpec, GuestMessage, JitMode, Stream, HOST_ROOT_TAG, MAX_EXEC_OUTPUT_BYTES,
};
use nix::mount::{mount, MsFlags};

/// Where the host's root is mounted over 9p.
const HOST: &str = "/hostfs";
/// The command's root: a tmpfs holding the host's top-level folders bound in
/// from [`HOST`], and the guest's own /proc, /sys, /dev, /tmp and /run.
const ROOT: &str = "/host";
/// Where the command finds its kernel's modules (`lib/modules/RELEASE` under it):
/// `MODPROBE_OPTIONS=-d` this root tells modprobe.
const MODULES_ROOT: &str = "/run/bpfmatrix-modules";

/// Top-level folders the guest gives the command itself, never the host's.
const OWN: [&str; 5] = ["proc", "sys", "dev", "tmp", "run"];

fn mount_at(
    source: Option<&Path>,
    source_name: &str,
    at: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let result = match source {
        Some(path) => mount(Some(path), at, fstype, flags, data),
        None => mount(Some(source_name), at, fstype, flags, data),
    };
    match result {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(e)
            .with_context(|| format!("mount {} on {}", fstype.unwrap_or("a bind"), at.display())),
    }
}

/// Builds the command's root without the host's share: a tmpfs with the
/// guest's own /proc, /sys (bpffs, debugfs, tracefs), /dev, a writable /tmp and
/// /run, and lo up. A guest that waits for its plan does it before it says
/// ready, so a restored one finds it done (the guest's preparation of a
/// restored `exec -- true` on 6.1 under TCG went from 210-250 ms to 130-195,
/// measured with throwaway timestamps); [`run`] does it otherwise. Once per
/// guest.
pub fn prepare_root() -> Result<()> {
    let root = Path::new(ROOT);
    if root.join("proc/self").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(root).with_context(|| format!("create {ROOT}"))?;
    mount_at(
        None,
        "tmpfs",
        root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
    for (source, target, fstype) in [
        ("proc", "proc", "proc"),
        ("sysfs", "sys", "sysfs"),
        ("devtmpfs", "dev", "devtmpfs"),
        ("tmpfs", "tmp", "tmpfs"),
        ("tmpfs", "run", "tmpfs"),
        ("bpf", "sys/fs/bpf", "bpf"),
        ("debugfs", "sys/kernel/debug", "debugfs"),
        ("tracefs", "sys/kernel/tracing", "tracefs"),
    ] {
        let at = root.join(target);
        std::fs::create_dir_all(&at).with_context(|| format!("create {}", at.display()))?;
        mount_at(None, source, &at, Some(fstype), MsFlags::empty(), None)?;
    }
    std::fs::set_permissions(
        root.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .context("chmod /tmp")?;
    crate::sys::loopback_up()
}

/// Mounts the host's root and binds its top-level folders into the command's
/// root ([`prepare_root`]), once per guest. The guest's own filesystems are not
/// mounted on folders of the 9p export: v9fs looks names up afresh, and a mount
/// on a dentry it drops vanishes (measured on 6.1: /proc came out empty). So the
/// command's root is a tmpfs: the host's top-level folders are bound into it,
/// its symlinks copied.
pub fn prepare(spec: &ExecSpec) -> Result<()> {
    static ATTACHED: OnceLock<Result<(), String>> = OnceLock::new();
    prepare_root()?;
    ATTACHED
        .get_or_init(|| attach_host(spec).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn attach_host(spec: &ExecSpec) -> Result<()> {
    let root = Path::new(ROOT);
    std::fs::create_dir_all(HOST).with_context(|| format!("create {HOST}"))?;
    mount(
        Some(HOST_ROOT_TAG),
        HOST,
        Some("9p"),
        MsFlags::MS_RDONLY,
        Some("trans=virtio,version=9p2000.L,msize=262144,cache=loose"),
    )
    .with_context(|| {
        format!(
            "mount the host's root (9p tag {HOST_ROOT_TAG}) on {HOST}: is the 9p module loaded?"
        )
    })?;
    let entries = std::fs::read_dir(HOST).with_context(|| format!("read {HOST}"))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("read {HOST}"))?;
        let name = entry.file_name();
        if OWN.iter().any(|own| name == *own) {
            continue;
        }
        let (from, to) = (entry.path(), root.join(&name));
        let kind = entry
            .file_type()
            .with_context(|| format!("stat {}", from.display()))?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&from)
                .with_context(|| format!("readlink {}", from.display()))?;
            std::os::unix::fs::symlink(&target, &to)
                .with_context(|| format!("symlink {}", to.display()))?;
            continue;
        }
        if kind.is_dir() {
            std::fs::create_dir(&to).with_context(|| format!("create {}", to.display()))?;
        } else {
            std::fs::write(&to, b"").with_context(|| format!("create {}", to.display()))?;
        }
        mount_at(
            Some(&from),
            "",
            &to,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    }
    if let Some(dir) = &spec.modules_dir {
        // The host's /lib/modules (read-only, the host's kernels' modules, absent
        // in a container) cannot take the guest kernel's: they go under a root
        // of their own on the guest's /run, where MODPROBE_OPTIONS points modprobe.
        let at = root
            .join(MODULES_ROOT.trim_start_matches('/'))
            .join("lib/modules")
            .join(crate::sys::kernel_release());
        std::fs::create_dir_all(&at).with_context(|| format!("create {}", at.display()))?;
        let from = Path::new(HOST).join(dir.trim_start_matches('/'));
        mount_at(
            Some(&from),
            "",
            &at,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
    }
    Ok(())
}

/// The program `argv[0]` names, as a path inside the command's root: as it is
/// when it has a `/`, else the first executable of that name in `PATH`.
fn resolve(program: &str, env: &[(String, String)]) -> Option<String> {
    if program.contains('/') {
        return Some(program.to_string());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let inside = Path::new(dir).join(program);
        let at = Path::new(ROOT).join(inside.strip_prefix("/").unwrap_or(&inside));
        use std::os::unix::fs::PermissionsExt;
        let exec = std::fs::metadata(&at)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        exec.then(|| inside.to_string_lossy().into_owned())
    })
}

/// Runs the command once in `jit` mode, sending its output and its end through
/// `send`.
pub fn run(spec: &ExecSpec, jit: JitMode, send: &mut dyn FnMut(GuestMessage)) {
    let start = Instant::now();
    let exited = |code: Option<i32>, signal: Option<i32>, error: Option<String>, dropped: u64| {
        GuestMessage::Exited {
            jit,
            code,
            signal,
            error,
            output_dropped: dropped,
            duration_ms: start.elapsed().as_millis() as u64,
        }
    };
    let Some(program) = spec.argv.first() else {
        return send(exited(None, None, Some("no command".into()), 0));
    };
    if let Err(e) = prepare(spec) {
        return send(exited(None, None, Some(format!("{e:#}")), 0));
    }
    let Some(resolved) = resolve(program, &spec.env) else {
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map_or("", |(_, v)| v.as_str());
        return send(exited(
            Some(127),
            None,
            Some(format!("{program}: command not found (PATH={path})")),
            0,
        ));
    };
    let cwd = PathBuf::from(&spec.cwd);
    let mut env = spec.env.clone();
    if spec.modules_dir.is_some() {
        let own = format!("-d {MODULES_ROOT}");
        match env.iter_mut().find(|(k, _)| k == "MODPROBE_OPTIONS") {
            Some((_, v)) => *v = format!("{own} {v}"),
            None => env.push(("MODPROBE_OPTIONS".into(), own)),
        }
    }
    let mut command = Command::new(&resolved);
    command
        .args(&spec.argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: chroot and chdir are async-signal-safe; nothing else runs between
    // fork and exec here.
    unsafe {
        command.pre_exec(move || {
            let root = std::ffi::CString::new(ROOT).expect("no NUL");
            if libc::chroot(root.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let dir = std::ffi::CString::new(cwd.as_os_str().as_encoded_bytes().to_vec())
                .unwrap_or_else(|_| std::ffi::CString::new("/").expect("no NUL"));
            if libc::chdir(dir.as_ptr()) != 0 && libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            return send(exited(
                Some(code),
                None,
                Some(format!("cannot start {resolved}: {e}")),
                0,
            ));
        }
    };
    // Bounded: while the UART (about 100 KB/s under TCG) carries what came,
    // the readers wait and the command blocks on its pipe, as on a slow
    // terminal. Unbounded, a command printing without end (`yes`) filled the
    // guest's memory until the OOM killer took the command (measured: 48 s).
    let (tx, rx) = mpsc::sync_channel::<(Stream, Vec<u8>)>(4);
    let readers: Vec<_> = [
        (
            Stream::Stdout,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            Stream::Stderr,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ]
    .into_iter()
    .filter_map(|(stream, pipe)| pipe.map(|p| (stream, p)))
    .map(|(stream, mut pipe)| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((stream, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    })
    .collect();
    drop(tx);
    let (mut sent, mut dropped) = (0u64, 0u64);
    // Chunks end on a character boundary: a split character would come home as
    // two replacement characters.
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (stream, bytes) in rx {
        let left = MAX_EXEC_OUTPUT_BYTES.saturating_sub(sent);
        let take = (bytes.len() as u64).min(left) as usize;
        dropped += (bytes.len() - take) as u64;
        sent += take as u64;
        if take == 0 {
            continue;
        }
        let buf = &mut pending[stream as usize];
        buf.extend_from_slice(&bytes[..take]);
        let cut = utf8_prefix(buf);
        if cut > 0 {
            let text = String::from_utf8_lossy(&buf[..cut]).into_owned();
            buf.drain(..cut);
            send(GuestMessage::Output { jit, stream, text });
        }
    }
    for (stream, buf) in [Stream::Stdout, Stream::Stderr].into_iter().zip(pending) {
        if !buf.is_empty() {
            let text = String::from_utf8_lossy(&buf).into_owned();
            send(GuestMessage::Output { jit, stream, text });
        }
    }
    for r in readers {
        let _ = r.join();
    }
    match child.wait() {
        Ok(status) => send(exited(status.code(), status.signal(), None, dropped)),
        Err(e) => send(exited(
            None,
            None,
            Some(format!("wait for {resolved}: {e}")),
            dropped,
        )),
    }
}

/// How much of `buf` is whole UTF-8 characters (all of it when invalid bytes
/// lie before the last 3, which lossy decoding then replaces).
fn utf8_prefix(buf: &[u8]) -> usize {
    match std::str::from_utf8(buf) {
        Ok(_) => buf.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => buf.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_on_character_boundaries() {
        let text = "é".as_bytes();
        assert_eq!(utf8_prefix(&text[..1]), 0);
        assert_eq!(utf8_prefix(text), 2);
        assert_eq!(utf8_prefix(b"ab\xff\xffcd"), 6);
    }
}
