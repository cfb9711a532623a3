//! Small helpers the other modules share for writing files and running programs
//! safely: atomic writes under per-process temporary names, a file's SHA256, and
//! children (apt-get, curl) that die with bpfmatrix.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary sibling renamed into place, so a
/// reader never sees a half-written file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = tmp_sibling(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Makes the command's process die with this one (Linux's parent-death signal), so
/// a killed bpfmatrix leaves no apt-get or curl behind still holding apt's lock or
/// writing into the cache.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl,
    // getppid, kill).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have died before the line above.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL)?;
            }
            Ok(())
        });
    }
}

/// `path` with `.tmp.<pid>` appended: unique per process, so two concurrent runs
/// filling the same cache do not write into each other's temporary files.
pub(crate) fn tmp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// The SHA256 of the file at `path`, in lowercase hex.
pub(crate) fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_sibling_stays_in_the_same_directory() {
        let tmp = tmp_sibling(Path::new("/a/b/vmlinux"));
        assert_eq!(tmp.parent(), Some(Path::new("/a/b")));
        assert!(tmp
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("vmlinux.tmp."));
    }
}
