//! Turns a kernel image the user points at (a bzImage or an ELF vmlinux) into a
//! [`Kernel`], extracting the vmlinux from a bzImage into the cache so it boots
//! through PVH.

use crate::bzimage::{self, BzImageHeader};
use crate::{cache_dir, BootProtocol, Kernel};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Describes the kernel at `image` (a bzImage or an x86_64 ELF vmlinux with a PVH
/// note), with its modules at `modules_dir` (`.../lib/modules/<release>`) if given.
/// A bzImage's vmlinux is extracted once into `cache_dir()/images/<sha256>/`.
pub fn from_image(name: &str, image: &Path, modules_dir: Option<&Path>) -> anyhow::Result<Kernel> {
    from_image_in(&cache_dir(), name, image, modules_dir)
}

/// [`from_image`] with an explicit cache directory.
pub(crate) fn from_image_in(
    cache: &Path,
    name: &str,
    image: &Path,
    modules_dir: Option<&Path>,
) -> anyhow::Result<Kernel> {
    if !image.exists() {
        bail!("kernel image {} does not exist", image.display());
    }
    if let Some(dir) = modules_dir {
        if !dir.is_dir() {
            bail!(
                "modules directory {} does not exist (expected .../lib/modules/<release>)",
                dir.display()
            );
        }
    }
    let head = read_head(image)?;
    let (boot_image, boot_protocol, release) = if BzImageHeader::is_bzimage(&head) {
        let header = BzImageHeader::parse(&head)
            .with_context(|| {
                format!(
                    "kernel image {} has an unusable boot header",
                    image.display()
                )
            })?
            .expect("is_bzimage checked the magic");
        let dir = cache.join("images").join(sha256_file(image)?);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let (boot_image, protocol) = pvh_image_from_bzimage(image, &header, &dir)?;
        (boot_image, protocol, header.release())
    } else {
        match bzimage::elf_info(image)? {
            Some(info) if info.x86_64 && info.pvh => (image.to_path_buf(), BootProtocol::Pvh, None),
            Some(info) if info.x86_64 => bail!(
                "'{}' is an ELF vmlinux without a PVH entry note (CONFIG_PVH=n), which QEMU cannot boot directly: pass the bzImage (arch/x86/boot/bzImage) instead",
                image.display()
            ),
            _ => bail!(
                "'{}' is not a Linux kernel image (no bzImage header, not an ELF vmlinux)",
                image.display()
            ),
        }
    };
    let release = release.or_else(|| {
        modules_dir
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    });
    Ok(Kernel {
        name: name.to_owned(),
        release,
        image: image.to_path_buf(),
        boot_image,
        boot_protocol,
        modules_dir: modules_dir.map(Path::to_path_buf),
        source: format!("image {}", image.display()),
    })
}

/// Extracts the vmlinux of the bzImage `image` into `dir/vmlinux` (once: an
/// existing one is reused) and says how to boot: through PVH when the vmlinux is an
/// x86_64 ELF with the PVH note, else the bzImage itself.
pub(crate) fn pvh_image_from_bzimage(
    image: &Path,
    header: &BzImageHeader,
    dir: &Path,
) -> anyhow::Result<(PathBuf, BootProtocol)> {
    let vmlinux = dir.join("vmlinux");
    if !vmlinux.exists() {
        bzimage::extract_vmlinux(image, header, &vmlinux)?;
    }
    match bzimage::elf_info(&vmlinux)? {
        Some(info) if info.x86_64 && info.pvh => Ok((vmlinux, BootProtocol::Pvh)),
        // Built without CONFIG_PVH: the guest decompresses the bzImage itself.
        _ => Ok((image.to_path_buf(), BootProtocol::BzImage)),
    }
}

fn read_head(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file =
        File::open(path).with_context(|| format!("cannot open kernel image {}", path.display()))?;
    let mut head = Vec::with_capacity(BzImageHeader::READ_LEN);
    file.take(BzImageHeader::READ_LEN as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read kernel image {}", path.display()))?;
    Ok(head)
}

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
    use crate::bzimage::tests::{synthetic_bzimage, xz};

    fn with_cache<T>(f: impl FnOnce(&Path) -> T) -> T {
        let dir = tempfile::tempdir().unwrap();
        f(dir.path())
    }

    fn from_image(name: &str, image: &Path, modules_dir: Option<&Path>) -> anyhow::Result<Kernel> {
        let cache = image.parent().unwrap().join("cache");
        from_image_in(&cache, name, image, modules_dir)
    }

    #[test]
    fn missing_file_is_named() {
        let err = from_image("k", Path::new("/nonexistent/bzImage"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel image /nonexistent/bzImage does not exist"
        );
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        with_cache(|dir| {
            let path = dir.join("garbage");
            std::fs::write(&path, vec![0x42u8; 10_000]).unwrap();
            let err = from_image("k", &path, None).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "'{}' is not a Linux kernel image (no bzImage header, not an ELF vmlinux)",
                    path.display()
                )
            );
        });
    }

    #[test]
    fn bzimage_without_pvh_falls_back_to_bzimage_boot() {
        with_cache(|dir| {
            let payload = xz(b"not an ELF, so no PVH");
            let path = dir.join("bzImage");
            std::fs::write(&path, synthetic_bzimage(&payload, 0, None)).unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::BzImage);
            assert_eq!(kernel.boot_image, path);
            assert_eq!(kernel.release.as_deref(), Some("6.1.0-99-test"));
        });
    }

    #[test]
    fn truncated_bzimage_is_an_error_naming_the_file() {
        with_cache(|dir| {
            let payload = xz(&b"kernel".repeat(10_000));
            let full = synthetic_bzimage(&payload, 0, None);
            let path = dir.join("bzImage");
            std::fs::write(&path, &full[..full.len() - 100]).unwrap();
            let msg = format!("{:#}", from_image("k", &path, None).unwrap_err());
            assert!(
                msg.contains(&path.display().to_string()) && msg.contains("truncated"),
                "{msg}"
            );
        });
    }
}
