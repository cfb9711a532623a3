//! The cache: where it is ([`cache_dir`]), one kernel's folder in it
//! (`cache_dir()/kernels/<name>/`), and the rules that keep that folder trustworthy
//! when downloads are interrupted or two bpfmatrix processes fetch the same kernel
//! at once, applied around a source's work by [`fetch_locked`]:
//!
//! - `kernel.json` (the marker) is written last, through a rename: while it is
//!   missing, nothing else in the folder is trusted.
//! - Everything is written under a temporary name (`*.tmp.<pid>`) and renamed into
//!   place when complete and verified.
//! - A fetch holds an exclusive lock on `<folder>/lock` (flock) from its first look
//!   at the folder to the marker. A second process waits, then finds the marker.
//!   The lock is released by the kernel when a process dies, so a killed fetch never
//!   blocks the next one; the next one, holding the lock, removes whatever the killed
//!   one left behind.
//! - An entry written under an older boot rule is read under today's: a kernel once
//!   booted through PVH whose PVH note turns out to be Xen's (before 5.0) boots its
//!   bzImage, which the entry holds anyway, with nothing fetched again. An entry
//!   from before kernels told their config gets its package's `boot/config-R`.

use crate::error::FetchError;
use crate::kernel::{BootProtocol, ConfigSource, Kernel, KernelConfig};
use anyhow::{bail, Context};
use std::fs::File;
use std::path::{Path, PathBuf};

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

/// Written last: its presence means everything else in the kernel's folder is
/// complete, and it holds the [`Kernel`] to return without touching the network.
pub(crate) const MARKER: &str = "kernel.json";
const LOCK: &str = "lock";

/// The folder of the kernel named `name` under `cache`.
pub(crate) fn kernel_dir(cache: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if !ok {
        bail!("'{name}' cannot name a cache folder: use letters, digits and . _ + -");
    }
    Ok(cache.join("kernels").join(name))
}

/// The kernel recorded by a completed earlier fetch in `kdir`, if its files are
/// still there. Never touches the network.
pub(crate) fn completed(kdir: &Path) -> Option<Kernel> {
    let text = std::fs::read_to_string(kdir.join(MARKER)).ok()?;
    let mut kernel: Kernel = serde_json::from_str(&text).ok()?;
    // Entries from before PVH was kept to 5.0 and CONFIG_PVH=y: Ubuntu's 4.16 was
    // recorded as PVH and dies booting that way. `image` is its bzImage.
    if kernel.boot_protocol == BootProtocol::Pvh && kernel.boot_image != kernel.image {
        let config = kernel.release.as_ref().and_then(|r| {
            crate::image::read_config(&kdir.join("root/boot").join(format!("config-{r}")))
        });
        let choice = crate::protocol::choose(kernel.release.as_deref(), config.as_deref());
        if choice.protocol != BootProtocol::Pvh {
            kernel.boot_image = kernel.image.clone();
            kernel.boot_protocol = BootProtocol::BzImage;
        }
    }
    // Entries from before `config` was recorded: the package's config, if it had one
    // (a config embedded in the image is not looked for here).
    if kernel.config.is_none() {
        let path = kernel
            .release
            .as_ref()
            .map(|r| kdir.join("root/boot").join(format!("config-{r}")))
            .filter(|p| p.is_file());
        kernel.config = path.map(|path| KernelConfig {
            path,
            source: ConfigSource::Package,
        });
    }
    let present = kernel.boot_image.exists()
        && kernel.image.exists()
        && kernel.modules_dir.as_ref().is_none_or(|d| d.is_dir())
        && kernel.config.as_ref().is_none_or(|c| c.path.is_file());
    present.then_some(kernel)
}

/// Records `kernel` as the completed content of `kdir`.
pub(crate) fn complete(kdir: &Path, kernel: &Kernel) -> anyhow::Result<()> {
    crate::util::write_atomically(
        &kdir.join(MARKER),
        serde_json::to_string_pretty(kernel)?.as_bytes(),
    )
}

/// An exclusive lock on a folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Locks `dir` (creating it), waiting for another process that holds it; `waiting`
/// is called once, before waiting, so the user knows why nothing happens.
pub fn lock_dir(dir: &Path, waiting: &mut dyn FnMut()) -> anyhow::Result<DirLock> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(LOCK);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            waiting();
            file.lock()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    Ok(DirLock { _file: file })
}

/// With the lock held and no completed entry: removes everything a killed or failed
/// fetch may have left in `kdir` (temporary files, a half-unpacked tree, a vmlinux
/// whose extraction was cut short, a marker whose files are gone), keeping only the
/// lock and the files `keep` accepts (downloads, which are verified again before use).
pub(crate) fn clear_incomplete(kdir: &Path, keep: &dyn Fn(&str) -> bool) -> anyhow::Result<()> {
    for entry in
        std::fs::read_dir(kdir).with_context(|| format!("cannot read {}", kdir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == LOCK || (!name.contains(".tmp.") && keep(&name)) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    Ok(())
}

/// Fills a locked, cleared kernel folder: `(folder, progress) -> kernel`.
pub(crate) type FillFn<'a> = dyn FnMut(&Path, &mut dyn FnMut(&str)) -> anyhow::Result<Kernel> + 'a;

/// The cache discipline around `work`, which fills the locked, cleared folder and
/// returns the kernel: a completed entry is returned at once; otherwise the folder
/// is locked (waiting for another process with a progress line), looked at again,
/// cleared of anything incomplete, filled, and marked complete.
pub(crate) fn fetch_locked(
    cache: &Path,
    name: &str,
    progress: &mut dyn FnMut(&str),
    work: &mut FillFn<'_>,
) -> Result<Kernel, FetchError> {
    let kdir = kernel_dir(cache, name).map_err(FetchError::Failed)?;
    fetch_locked_in(&kdir, name, progress, work)
}

/// [`fetch_locked`] into the folder `kdir`.
pub(crate) fn fetch_locked_in(
    kdir: &Path,
    name: &str,
    progress: &mut dyn FnMut(&str),
    work: &mut FillFn<'_>,
) -> Result<Kernel, FetchError> {
    let kdir = kdir.to_path_buf();
    if let Some(kernel) = completed(&kdir) {
        return Ok(kernel);
    }
    let _lock = lock_dir(&kdir, &mut || {
        progress(&format!("waiting for another bpfmatrix fetching {name}"))
    })
    .map_err(FetchError::Failed)?;
    // The other process may have completed it while this one waited.
    if let Some(kernel) = completed(&kdir) {
        return Ok(kernel);
    }
    // Downloaded packages are kept across a failed run and verified again before use.
    clear_incomplete(&kdir, &|file| file.ends_with(".deb")).map_err(FetchError::Failed)?;
    let kernel = work(&kdir, progress).map_err(FetchError::classify)?;
    complete(&kdir, &kernel).map_err(FetchError::Failed)?;
    // Nothing but the unpacked tree is needed any more; packages are 10-100 MB.
    clear_incomplete(&kdir, &|file| !file.ends_with(".deb")).map_err(FetchError::Failed)?;
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_escape_the_cache_are_refused() {
        let cache = Path::new("/c");
        assert_eq!(
            kernel_dir(cache, "6.12").unwrap(),
            Path::new("/c/kernels/6.12")
        );
        for bad in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(kernel_dir(cache, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clearing_keeps_only_the_lock_and_accepted_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(LOCK), b"").unwrap();
        std::fs::write(d.join("k.deb"), b"x").unwrap();
        std::fs::write(d.join("k.deb.tmp.123"), b"half").unwrap();
        std::fs::write(d.join("vmlinux"), b"half").unwrap();
        std::fs::create_dir_all(d.join("root.tmp.9/boot")).unwrap();
        std::fs::create_dir_all(d.join("root/boot")).unwrap();
        clear_incomplete(d, &|n| n.ends_with(".deb")).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["k.deb", "lock"]);
    }

    #[test]
    fn an_old_entry_booting_a_4_x_kernel_through_pvh_boots_its_bzimage() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("root/boot")).unwrap();
        let image = d.join("root/boot/vmlinuz-4.16.0-041600-generic");
        let vmlinux = d.join("vmlinux");
        std::fs::write(&image, b"bzImage").unwrap();
        std::fs::write(&vmlinux, b"\x7fELF").unwrap();
        let old = Kernel {
            name: "4.16".into(),
            release: Some("4.16.0-041600-generic".into()),
            image: image.clone(),
            boot_image: vmlinux.clone(),
            boot_protocol: BootProtocol::Pvh,
            modules_dir: None,
            source: "ubuntu mainline".into(),
            config: None,
        };
        complete(d, &old).unwrap();
        let now = completed(d).unwrap();
        assert_eq!(now.boot_protocol, BootProtocol::BzImage);
        assert_eq!(now.boot_image, image);
        // A backported CONFIG_PVH in the package's config keeps it on PVH; the
        // entry, written before kernels told their config, gets that one.
        let config = d.join("root/boot/config-4.16.0-041600-generic");
        std::fs::write(&config, "CONFIG_PVH=y\n").unwrap();
        let package_config = Some(KernelConfig {
            path: config.clone(),
            source: ConfigSource::Package,
        });
        assert_eq!(
            completed(d),
            Some(Kernel {
                config: package_config,
                ..old.clone()
            })
        );
        // A 5.x entry stays as it was.
        let new = Kernel {
            release: Some("5.4.0-050400-generic".into()),
            ..old
        };
        std::fs::remove_file(&config).unwrap();
        complete(d, &new).unwrap();
        assert_eq!(completed(d), Some(new.clone()));
        // A config the entry names must still be there.
        let with_config = Kernel {
            config: Some(KernelConfig {
                path: d.join("config"),
                source: ConfigSource::Embedded,
            }),
            ..new
        };
        complete(d, &with_config).unwrap();
        assert_eq!(completed(d), None);
        std::fs::write(d.join("config"), "CONFIG_BPF=y\n").unwrap();
        assert_eq!(completed(d), Some(with_config));
    }

    #[test]
    fn a_marker_whose_files_are_gone_is_not_a_completed_entry() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let image = d.join("vmlinuz");
        std::fs::write(&image, b"k").unwrap();
        let kernel = Kernel {
            name: "t".into(),
            release: None,
            image: image.clone(),
            boot_image: image.clone(),
            boot_protocol: BootProtocol::BzImage,
            modules_dir: None,
            source: "test".into(),
            config: None,
        };
        assert_eq!(completed(d), None);
        complete(d, &kernel).unwrap();
        assert_eq!(completed(d), Some(kernel));
        std::fs::remove_file(&image).unwrap();
        assert_eq!(completed(d), None);
        std::fs::write(d.join(MARKER), b"{ half").unwrap();
        assert_eq!(completed(d), None);
    }
}
