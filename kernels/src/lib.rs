//! Obtains Linux kernels and describes how to boot them: a kernel of the project's
//! catalog (`kernels/catalog.toml`: Debian packages fetched through a private apt
//! configuration, Ubuntu mainline builds fetched with curl; [`catalog::fetch`]), a
//! Debian package by pattern ([`fetch_debian`]), or an image the user points at
//! ([`from_image`]). Either way the result is a [`Kernel`]: the image QEMU
//! boots (an uncompressed vmlinux through PVH where its PVH entry is the generic one,
//! Linux 5.0 on or CONFIG_PVH=y, since that skips the in-guest decompression that
//! dominates a TCG boot; else the bzImage), its release, and its modules directory,
//! from which [`resolve_modules`] picks `.ko` files for the guest.
//!
//! Everything downloaded or derived lives under [`cache_dir`].

mod bzimage;
mod cache;
pub mod catalog;
mod deb;
mod debian;
mod error;
mod given;
mod image;
mod layout;
mod mainline;
mod modules;
mod protocol;
mod version;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use bzimage::{BzImageHeader, Compression};
pub use catalog::{cached, catalog, fetch, fetch_debian, find, CatalogEntry, Source};
pub use debian::DebianSpec;
pub use error::FetchError;
pub use given::from_image;
pub use mainline::MainlineSpec;
pub use modules::{resolve_modules, ModuleFile};

/// Where bpfmatrix keeps kernels, extracted vmlinux images and decompressed modules:
/// `$BPFMATRIX_CACHE` if set and non-empty, else `$XDG_CACHE_HOME/bpfmatrix`, else
/// `~/.cache/bpfmatrix` (falling back to the system temp dir when there is no home).
/// Deleting it is always safe: everything in it is fetched or derived again.
pub fn cache_dir() -> PathBuf {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("BPFMATRIX_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("bpfmatrix");
    }
    match non_empty("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("bpfmatrix"),
        None => std::env::temp_dir().join("bpfmatrix-cache"),
    }
}

/// How QEMU enters the kernel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BootProtocol {
    /// An uncompressed ELF vmlinux with a PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`):
    /// QEMU jumps straight into it, no in-guest decompression. Chosen only for Linux
    /// 5.0 and newer or a config with CONFIG_PVH=y: before 5.0 the note is
    /// CONFIG_XEN_PVH's, an entry only a Xen guest survives.
    Pvh,
    /// A classic bzImage: the guest decompresses itself first (seconds under TCG).
    /// Every kernel older than 5.0 boots this way, and any whose vmlinux lacks the
    /// PVH note.
    BzImage,
}

/// A kernel ready to boot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The user's name for it (e.g. "debian-6.1").
    pub name: String,
    /// `uname -r` of the kernel when known, e.g. "6.1.0-56-amd64".
    pub release: Option<String>,
    /// The image the package or the user gave (usually a bzImage).
    pub image: PathBuf,
    /// The image QEMU boots (the extracted vmlinux for PVH, else `image`).
    pub boot_image: PathBuf,
    /// Why this one: a fetch says so in its progress lines ("booting the bzImage:
    /// Linux 4.16 is older than 5.0, ..."); the rule is in [`BootProtocol`].
    pub boot_protocol: BootProtocol,
    /// `.../lib/modules/<release>` when modules are available.
    pub modules_dir: Option<PathBuf>,
    /// Where it came from, for reports, e.g.
    /// "debian bookworm linux-image-6.1.0-56-amd64-unsigned 6.1.192-2".
    pub source: String,
}

/// Writes `bytes` to `path` through a temporary sibling renamed into place, so a
/// reader never sees a half-written file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
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
