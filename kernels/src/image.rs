//! Turns a kernel image the user points at (a bzImage or an ELF vmlinux) into a
//! [`Kernel`], booting it through PVH where that is safe ([`crate::protocol`]): a
//! bzImage's vmlinux is then extracted into the cache, a vmlinux is booted as it is.

use crate::bzimage::{self, BzImageHeader};
use crate::protocol::{self, Choice};
use crate::{cache_dir, BootProtocol, Kernel};
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Describes the kernel at `image` (a bzImage or an x86_64 ELF vmlinux with a PVH
/// note), with its modules at `modules_dir` (`.../lib/modules/<release>`) if given.
/// A bzImage of Linux 5.0 or newer has its vmlinux extracted once into
/// `cache_dir()/images/<sha256>/`; an older one boots as the bzImage. A vmlinux
/// boots only if it is 5.0 or newer (its `linux_banner` says so) or a config beside
/// it (`config-<release>`, `.config`) has CONFIG_PVH=y: an older one's PVH note is
/// Xen's, and without a bzImage there is nothing safe to boot.
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
    // The user's modules folder is named after the release it was built for.
    let modules_release = modules_dir
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().into_owned());
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
        let release = header.release().or(modules_release);
        let config = config_beside(image, release.as_deref());
        let dir = cache.join("images").join(sha256_file(image)?);
        let boot = boot_bzimage(image, release.as_deref(), config.as_deref(), &dir)?;
        (boot.image, boot.choice.protocol, release)
    } else {
        match bzimage::elf_info(image)? {
            Some(info) if info.x86_64 && info.pvh => {
                let release = bzimage::vmlinux_release(image)?.or(modules_release);
                let config = config_beside(image, release.as_deref());
                let choice = protocol::choose(release.as_deref(), config.as_deref());
                if choice.protocol != BootProtocol::Pvh {
                    bail!(
                        "'{}' is an ELF vmlinux that cannot be booted safely: {}. Before Linux 5.0 a vmlinux's PVH entry note is Xen's own (CONFIG_XEN_PVH), and a guest that is not Xen dies booting through it. Pass the kernel's bzImage instead (arch/x86/boot/bzImage, or /boot/vmlinuz-<release>), or put its config, with CONFIG_PVH=y, beside it as .config",
                        image.display(),
                        choice.why
                    );
                }
                (image.to_path_buf(), BootProtocol::Pvh, release)
            }
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

/// How a bzImage boots: the image QEMU gets and the choice behind it.
pub(crate) struct Boot {
    pub image: PathBuf,
    pub choice: Choice,
}

/// Decides how the bzImage `image` of `release` (with its config text, if found)
/// boots. Where PVH is safe its vmlinux is extracted into `dir/vmlinux` (once: an
/// existing one is reused) and booted if it carries the PVH note; otherwise the
/// bzImage boots and nothing is extracted.
pub(crate) fn boot_bzimage(
    image: &Path,
    release: Option<&str>,
    config: Option<&str>,
    dir: &Path,
) -> anyhow::Result<Boot> {
    let choice = protocol::choose(release, config);
    if choice.protocol != BootProtocol::Pvh {
        return Ok(Boot {
            image: image.to_path_buf(),
            choice,
        });
    }
    let header = BzImageHeader::parse(&read_head(image)?)?
        .with_context(|| format!("{} has no bzImage header", image.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let vmlinux = dir.join("vmlinux");
    if !vmlinux.exists() {
        bzimage::extract_vmlinux(image, &header, &vmlinux)?;
    }
    Ok(match bzimage::elf_info(&vmlinux)? {
        Some(info) if info.x86_64 && info.pvh => Boot {
            image: vmlinux,
            choice,
        },
        // Built without CONFIG_PVH: the guest decompresses the bzImage itself.
        _ => Boot {
            image: image.to_path_buf(),
            choice: Choice {
                protocol: BootProtocol::BzImage,
                why: "its vmlinux has no PVH entry note (built without CONFIG_PVH)".to_owned(),
            },
        },
    })
}

/// A config for the kernel at `image`, found beside it: `config-<release>` (as in
/// /boot and in kernel packages) or a build tree's `.config`. At most 16 MB is
/// read; configs are a few hundred kB.
fn config_beside(image: &Path, release: Option<&str>) -> Option<String> {
    let dir = image.parent()?;
    let named = release.map(|r| dir.join(format!("config-{r}")));
    named
        .into_iter()
        .chain([dir.join(".config")])
        .find_map(|path| read_config(&path))
}

/// The text of the kernel config at `path`, if it is there and readable.
pub(crate) fn read_config(path: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(16 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
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
    use crate::bzimage::tests::{synthetic_bzimage, synthetic_bzimage_of, synthetic_vmlinux, xz};

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

    /// A bzImage of `release` whose vmlinux carries the PVH note.
    fn bzimage_with_pvh_note(release: &str) -> Vec<u8> {
        let vmlinux = synthetic_vmlinux(Some(release), true, true);
        synthetic_bzimage_of(&format!("{release} (b@h) #1 SMP"), &xz(&vmlinux), 0, None)
    }

    #[test]
    fn a_4_x_bzimage_boots_as_a_bzimage_even_with_a_pvh_note() {
        with_cache(|dir| {
            let path = dir.join("vmlinuz-4.16.13-custom");
            std::fs::write(&path, bzimage_with_pvh_note("4.16.13-custom")).unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::BzImage);
            assert_eq!(kernel.boot_image, path);
            assert_eq!(kernel.release.as_deref(), Some("4.16.13-custom"));
            assert!(!dir.join("cache").exists(), "nothing extracted");

            // Its config beside it, with a backported CONFIG_PVH, allows PVH.
            std::fs::write(dir.join("config-4.16.13-custom"), "CONFIG_PVH=y\n").unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
            assert!(kernel.boot_image.starts_with(dir.join("cache/images")));
            assert_eq!(
                bzimage::elf_info(&kernel.boot_image)
                    .unwrap()
                    .map(|i| i.pvh),
                Some(true)
            );
        });
    }

    #[test]
    fn a_5_x_bzimage_boots_its_vmlinux_through_pvh() {
        with_cache(|dir| {
            let path = dir.join("bzImage");
            std::fs::write(&path, bzimage_with_pvh_note("5.4.0-050400-generic")).unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
            assert_eq!(kernel.boot_image.file_name().unwrap(), "vmlinux");
            // A config that says no wins over the version.
            std::fs::write(
                dir.join(".config"),
                "# Linux/x86 5.4.0 Kernel Configuration\n# CONFIG_PVH is not set\n",
            )
            .unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::BzImage);
        });
    }

    #[test]
    fn a_vmlinux_boots_only_where_its_version_or_config_says_pvh_is_generic() {
        with_cache(|dir| {
            let path = dir.join("vmlinux");
            std::fs::write(&path, synthetic_vmlinux(Some("6.1.0-56-amd64"), true, true)).unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
            assert_eq!(kernel.boot_image, path);
            assert_eq!(kernel.release.as_deref(), Some("6.1.0-56-amd64"));

            // 4.16 built with CONFIG_XEN_PVH=y: the note is there, and Xen's.
            std::fs::write(&path, synthetic_vmlinux(Some("4.16.13"), true, false)).unwrap();
            let msg = from_image("k", &path, None).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("'{}' is an ELF vmlinux that cannot be booted safely: Linux 4.16 is older than 5.0", path.display())),
                "{msg}"
            );
            assert!(msg.contains("Pass the kernel's bzImage instead"), "{msg}");
            // A .config for another kernel does not help.
            std::fs::write(
                dir.join(".config"),
                "# Linux/x86 5.4.0 Kernel Configuration\nCONFIG_PVH=y\n",
            )
            .unwrap();
            let msg = from_image("k", &path, None).unwrap_err().to_string();
            assert!(
                msg.contains("the config beside it is for Linux 5.4, so it was not used"),
                "{msg}"
            );
            // Its own, with a backported CONFIG_PVH, does.
            std::fs::write(
                dir.join(".config"),
                "# Linux/x86 4.16.13 Kernel Configuration\nCONFIG_PVH=y\n",
            )
            .unwrap();
            assert_eq!(
                from_image("k", &path, None).unwrap().boot_protocol,
                BootProtocol::Pvh
            );
            std::fs::remove_file(dir.join(".config")).unwrap();

            // No banner: the version is unknown, unless the modules folder names it.
            std::fs::write(&path, synthetic_vmlinux(None, true, true)).unwrap();
            let msg = from_image("k", &path, None).unwrap_err().to_string();
            assert!(msg.contains("its version is unknown"), "{msg}");
            let modules = dir.join("lib/modules/5.10.0-35-amd64");
            std::fs::create_dir_all(&modules).unwrap();
            let kernel = from_image("k", &path, Some(&modules)).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
            assert_eq!(kernel.release.as_deref(), Some("5.10.0-35-amd64"));

            // No note at all is refused as before.
            std::fs::write(&path, synthetic_vmlinux(Some("6.1.0"), false, true)).unwrap();
            let msg = from_image("k", &path, None).unwrap_err().to_string();
            assert!(msg.contains("without a PVH entry note"), "{msg}");
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
