//! Kernels given by path (`-k PATH`, `-k NAME=A.deb,B.deb`): kernel packages on
//! disk, which the catalog fetches like any source (its `Source::DebFiles`)
//! but caches under their content, and kernel images (a bzImage or an ELF vmlinux,
//! [`from_image`]), which need no fetching.

use crate::bzimage::{self, BzImageHeader};
use crate::cache::{self, cache_dir};
use crate::error::FetchError;
use crate::ikconfig::embedded_config;
use crate::image::{boot_bzimage, read_config, read_head};
use crate::kernel::{BootProtocol, ConfigSource, Kernel, KernelConfig};
use crate::layout::kernel_from_debs;
use crate::protocol;
use crate::util::sha256_file;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Packages on disk are cached under the SHA256 of their contents
/// (`<cache>/by-content/<key>/`), never under the name the user gives them: the same
/// name may stand for other packages the next time (`-k cloud=A.deb`, then
/// `-k cloud=B.deb`), and the same packages may come under another name. The files
/// are hashed on every run (a second or less for a kernel's 130 MB), so a package
/// replaced in place is seen too.
pub(crate) fn fetch_deb_files(
    cache: &Path,
    name: &str,
    debs: &[PathBuf],
    progress: &mut dyn FnMut(&str),
) -> Result<Kernel, FetchError> {
    cache::kernel_dir(Path::new("/"), name).map_err(FetchError::Failed)?;
    if debs.is_empty() {
        return Err(FetchError::Failed(anyhow::anyhow!(
            "kernel {name} names no package"
        )));
    }
    for deb in debs {
        if !deb.is_file() {
            return Err(FetchError::Failed(anyhow::anyhow!(
                "kernel package {} does not exist",
                deb.display()
            )));
        }
    }
    let key = content_key(debs).map_err(FetchError::Failed)?;
    let kdir = by_content_dir(cache, &key);
    let kernel = cache::fetch_locked_in(&kdir, name, progress, &mut |kdir, progress| {
        from_deb_files(name, debs, kdir, progress)
    })?;
    Ok(as_given(kernel, name, debs, &key))
}

/// The SHA256 of the packages' SHA256s, in the order given (it is the order they
/// are unpacked in).
fn content_key(debs: &[PathBuf]) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut all = Sha256::new();
    for deb in debs {
        all.update(sha256_file(deb)?.as_bytes());
        all.update(b"\n");
    }
    Ok(all.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn by_content_dir(cache: &Path, key: &str) -> PathBuf {
    cache.join("by-content").join(key)
}

/// A kernel found under its packages' content, named as this run names it: the
/// entry may have been made under another name, from files elsewhere.
fn as_given(mut kernel: Kernel, name: &str, debs: &[PathBuf], key: &str) -> Kernel {
    kernel.name = name.to_owned();
    kernel.source = deb_files_source(debs, key);
    kernel
}

fn deb_files_source(debs: &[PathBuf], key: &str) -> String {
    let names: Vec<String> = debs.iter().map(|d| d.display().to_string()).collect();
    format!("packages {} (content {})", names.join(" + "), &key[..16])
}

/// The kernel of a completed earlier [`fetch_deb_files`] of the same packages
/// (whatever they were called then), named `name`; never touches the network.
pub(crate) fn cached_deb_files(cache: &Path, name: &str, debs: &[PathBuf]) -> Option<Kernel> {
    let key = content_key(debs).ok()?;
    let kernel = cache::completed(&by_content_dir(cache, &key))?;
    Some(as_given(kernel, name, debs, &key))
}

fn from_deb_files(
    name: &str,
    debs: &[PathBuf],
    kdir: &Path,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Kernel> {
    for deb in debs {
        if !deb.is_file() {
            anyhow::bail!("kernel package {} does not exist", deb.display());
        }
    }
    let mut kernel = kernel_from_debs(kdir, debs, name, progress)?;
    let names: Vec<String> = debs.iter().map(|d| d.display().to_string()).collect();
    kernel.source = format!("packages {}", names.join(" + "));
    Ok(kernel)
}

/// Describes the kernel at `image` (a bzImage or an x86_64 ELF vmlinux with a PVH
/// note), with its modules at `modules_dir` (`.../lib/modules/<release>`) if given.
/// A bzImage of Linux 5.0 or newer has its vmlinux extracted once into
/// `cache_dir()/images/<sha256>/`; an older one boots as the bzImage. A vmlinux
/// boots only if it is 5.0 or newer (its `linux_banner` says so) or a config beside
/// it (`config-<release>`, `.config`) has CONFIG_PVH=y: an older one's PVH note is
/// Xen's, and without a bzImage there is nothing safe to boot.
///
/// Its [`Kernel::config`] is the config beside it, unless that one's header names
/// another version than the image's; else the config the image carries
/// (CONFIG_IKCONFIG=y), extracted once into the same cache folder; else none. A
/// corrupt embedded config is an error only when there is no config beside it.
pub fn from_image(name: &str, image: &Path, modules_dir: Option<&Path>) -> anyhow::Result<Kernel> {
    from_image_in(&cache_dir(), name, image, modules_dir)
}

/// [`from_image`] with an explicit cache directory.
fn from_image_in(
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
    let image_dir =
        || -> anyhow::Result<PathBuf> { Ok(cache.join("images").join(sha256_file(image)?)) };
    let (boot_image, boot_protocol, release, config) = if BzImageHeader::is_bzimage(&head) {
        let header = BzImageHeader::parse(&head)
            .with_context(|| {
                format!(
                    "kernel image {} has an unusable boot header",
                    image.display()
                )
            })?
            .expect("is_bzimage checked the magic");
        let release = header.release().or(modules_release);
        let beside = config_beside(image, release.as_deref());
        let dir = image_dir()?;
        let boot = boot_bzimage(image, release.as_deref(), beside.text.as_deref(), &dir)?;
        let config = match beside.usable {
            Some(config) => Some(config),
            // After the boot decision: a vmlinux it extracted is searched, not
            // decompressed again.
            None => embedded_config(image, &dir)?,
        };
        (boot.image, boot.choice.protocol, release, config)
    } else {
        match bzimage::elf_info(image)? {
            Some(info) if info.x86_64 && info.pvh => {
                let release = bzimage::vmlinux_release(image)?.or(modules_release);
                let beside = config_beside(image, release.as_deref());
                let choice = protocol::choose(release.as_deref(), beside.text.as_deref());
                if choice.protocol != BootProtocol::Pvh {
                    bail!(
                        "'{}' is an ELF vmlinux that cannot be booted safely: {}. Before Linux 5.0 a vmlinux's PVH entry note is Xen's own (CONFIG_XEN_PVH), and a guest that is not Xen dies booting through it. Pass the kernel's bzImage instead (arch/x86/boot/bzImage, or /boot/vmlinuz-<release>), or put its config, with CONFIG_PVH=y, beside it as .config",
                        image.display(),
                        choice.why
                    );
                }
                let config = match beside.usable {
                    Some(config) => Some(config),
                    None => embedded_config(image, &image_dir()?)?,
                };
                (image.to_path_buf(), BootProtocol::Pvh, release, config)
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
        config,
    })
}

/// The configs found beside an image.
struct Beside {
    /// The first that is not for another version (its header names the image's
    /// version, or none): the kernel's config.
    usable: Option<KernelConfig>,
    /// For the boot decision: the text of the usable one, else of the first found,
    /// so [`protocol::choose`] can say why it was not used.
    text: Option<String>,
}

/// The configs for the kernel at `image`, found beside it: `config-<release>` (as in
/// /boot and in kernel packages) or a build tree's `.config`. At most 16 MB of each
/// is read; configs are a few hundred kB.
fn config_beside(image: &Path, release: Option<&str>) -> Beside {
    let dir = image.parent().unwrap_or(Path::new(""));
    let named = release.map(|r| dir.join(format!("config-{r}")));
    let found: Vec<(PathBuf, String)> = named
        .into_iter()
        .chain([dir.join(".config")])
        .filter_map(|path| read_config(&path).map(|text| (path, text)))
        .collect();
    let usable = found
        .iter()
        .find(|(_, text)| protocol::config_for_another(text, release).is_none());
    Beside {
        text: usable.or(found.first()).map(|(_, text)| text.clone()),
        usable: usable.map(|(path, _)| KernelConfig {
            path: path.clone(),
            source: ConfigSource::Beside,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bzimage::tests::{synthetic_bzimage, synthetic_bzimage_of, synthetic_vmlinux, xz};

    /// A kernel .deb at `path` with the classic layout: `boot/vmlinuz-<release>`
    /// (whose header says `release` too) and one module.
    fn write_image_deb(path: &Path, release: &str) -> Vec<u8> {
        let image = synthetic_bzimage_of(
            &format!("{release} (builder@example) #1 SMP"),
            &xz(format!("kernel {release}").as_bytes()),
            0,
            None,
        );
        std::fs::write(
            path,
            crate::deb::tests::synthetic_deb(&[
                (&format!("./boot/vmlinuz-{release}"), image.clone()),
                (
                    &format!("./lib/modules/{release}/kernel/net/sched/cls_bpf.ko"),
                    b"\x7fELF".to_vec(),
                ),
            ]),
        )
        .unwrap();
        image
    }

    /// `-k same=A.deb`, then `-k same=B.deb`: the second run gets B's kernel, also
    /// when B is written over A's file; and A under another name is A, from the
    /// cache, named as asked.
    #[test]
    fn a_kernel_given_by_path_is_cached_by_its_content_not_by_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        // Two different packages under the same file name.
        let deb_a = a.join("linux-image.deb");
        let deb_b = b.join("linux-image.deb");
        write_image_deb(&deb_a, "6.10.1-a");
        let image_b = write_image_deb(&deb_b, "6.10.2-b");
        let fetch = |name: &str, deb: &Path| {
            let mut lines = Vec::new();
            let kernel = fetch_deb_files(&cache, name, &[deb.to_path_buf()], &mut |l| {
                lines.push(l.to_owned())
            })
            .unwrap();
            (kernel, lines)
        };

        let (first, lines) = fetch("same", &deb_a);
        assert_eq!(first.release.as_deref(), Some("6.10.1-a"));
        assert!(!lines.is_empty(), "unpacked: {lines:?}");
        let (second, _) = fetch("same", &deb_b);
        assert_eq!(second.release.as_deref(), Some("6.10.2-b"));
        assert_eq!(second.name, "same");
        assert!(second.source.contains(&deb_b.display().to_string()));
        assert_ne!(first.image, second.image);
        assert_eq!(std::fs::read(&second.image).unwrap(), image_b);

        // The same file, its content replaced (same name, same path).
        write_image_deb(&deb_a, "6.10.3-c");
        let (third, _) = fetch("same", &deb_a);
        assert_eq!(third.release.as_deref(), Some("6.10.3-c"));

        // B again, under another name: from the cache, silently, named as asked.
        let (again, lines) = fetch("other", &deb_b);
        assert_eq!(lines, Vec::<String>::new());
        assert_eq!(again.name, "other");
        assert_eq!(again.release.as_deref(), Some("6.10.2-b"));
        assert_eq!(again.image, second.image);
        // Nothing was ever cached under a name.
        assert!(!cache.join("kernels").exists());
    }

    #[test]
    fn packages_given_by_path_must_exist_and_names_must_be_folder_safe() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone.deb");
        let err =
            fetch_deb_files(tmp.path(), "k", std::slice::from_ref(&gone), &mut |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("kernel package {} does not exist", gone.display())
        );
        let err = fetch_deb_files(tmp.path(), "a/b", &[gone], &mut |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("cannot name a cache folder"),
            "{err}"
        );
    }

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
            assert_eq!(kernel.config, None);

            // Its config beside it, with a backported CONFIG_PVH, allows PVH.
            std::fs::write(dir.join("config-4.16.13-custom"), "CONFIG_PVH=y\n").unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
            assert_eq!(kernel.config, beside(dir.join("config-4.16.13-custom")));
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

    fn beside(path: PathBuf) -> Option<KernelConfig> {
        Some(KernelConfig {
            path,
            source: ConfigSource::Beside,
        })
    }

    /// The image's own config beside it is its config; one whose header names
    /// another version is not, and the image's embedded one, if any, is taken.
    #[test]
    fn a_bzimage_s_config_is_the_one_beside_it_for_its_version_else_its_embedded_one() {
        use crate::ikconfig::tests::{ikconfig_blob, vmlinux_with_config, CONFIG_54};
        with_cache(|dir| {
            let path = dir.join("vmlinuz-5.4.286");
            let vmlinux = vmlinux_with_config("5.4.286", CONFIG_54);
            std::fs::write(
                &path,
                synthetic_bzimage_of("5.4.286 (b@h) #1 SMP", &xz(&vmlinux), 0, None),
            )
            .unwrap();
            let images = dir.join("cache/images").join(sha256_file(&path).unwrap());

            // Nothing beside it: the embedded one, extracted into the cache.
            let kernel = from_image("k", &path, None).unwrap();
            let embedded = Some(KernelConfig {
                path: images.join("config"),
                source: ConfigSource::Embedded,
            });
            assert_eq!(kernel.config, embedded);
            let text = kernel.config.as_ref().unwrap().read().unwrap();
            assert_eq!(text, CONFIG_54);
            assert_eq!(
                crate::kernel::config_value(&text, "CONFIG_BPF_JIT_ALWAYS_ON"),
                crate::kernel::ConfigValue::Yes
            );
            assert_eq!(
                kernel.config.unwrap().describe(),
                "the image's embedded config (CONFIG_IKCONFIG)"
            );

            // A build tree's .config of its version (its header says 5.4.286).
            let dot = dir.join(".config");
            let own = CONFIG_54.replace(
                "CONFIG_BPF_JIT_ALWAYS_ON=y",
                "# CONFIG_BPF_JIT_ALWAYS_ON is not set",
            );
            std::fs::write(&dot, &own).unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.config, beside(dot.clone()));
            assert_eq!(kernel.config.as_ref().unwrap().read().unwrap(), own);
            assert_eq!(
                kernel.config.unwrap().describe(),
                ".config beside the image"
            );

            // config-<release> comes first.
            let named = dir.join("config-5.4.286");
            std::fs::write(&named, "CONFIG_BPF=y\n").unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.config, beside(named.clone()));
            assert_eq!(
                kernel.config.unwrap().describe(),
                "config-5.4.286 beside the image"
            );

            // Another kernel's config-<release> is passed over for the .config...
            std::fs::write(
                &named,
                "# Linux/x86 6.1.158 Kernel Configuration\nCONFIG_BPF=y\n",
            )
            .unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.config, beside(dot.clone()));
            // ... and with another kernel's .config too, the embedded one is taken.
            std::fs::write(
                &dot,
                "#\n# Linux/x86 4.19.0 Kernel Configuration\n#\nCONFIG_BPF=y\n",
            )
            .unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.config, embedded);
            assert_eq!(kernel.config.unwrap().read().unwrap(), CONFIG_54);

            // A stale config beside an image without IKCONFIG: no config at all.
            let plain = dir.join("bzImage");
            std::fs::write(
                &plain,
                synthetic_bzimage_of(
                    "5.4.286 (b@h) #1 SMP",
                    &xz(&synthetic_vmlinux(Some("5.4.286"), true, true)),
                    0,
                    None,
                ),
            )
            .unwrap();
            let kernel = from_image("k", &plain, None).unwrap();
            assert_eq!(kernel.config, None);
            assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);

            // A corrupt embedded config does not matter beside a good config, and
            // is an error naming the image without one.
            let mut blob = ikconfig_blob(CONFIG_54);
            blob.truncate(blob.len() - 20);
            let mut broken = synthetic_vmlinux(Some("5.4.286"), true, true);
            broken.extend_from_slice(&blob);
            let corrupt = dir.join("vmlinuz-corrupt");
            std::fs::write(
                &corrupt,
                synthetic_bzimage_of("5.4.286 (b@h) #1 SMP", &xz(&broken), 0, None),
            )
            .unwrap();
            let msg = format!("{:#}", from_image("k", &corrupt, None).unwrap_err());
            assert!(
                msg.starts_with(&format!(
                    "the embedded config (CONFIG_IKCONFIG) of kernel image {} is corrupt",
                    corrupt.display()
                )),
                "{msg}"
            );
            std::fs::write(&dot, &own).unwrap();
            assert_eq!(
                from_image("k", &corrupt, None).unwrap().config,
                beside(dot.clone())
            );
        });
    }

    /// An ELF vmlinux given by path: the same rules, its embedded config read in
    /// place.
    #[test]
    fn a_vmlinux_s_config_is_the_one_beside_it_else_its_embedded_one() {
        use crate::ikconfig::tests::{vmlinux_with_config, CONFIG_54};
        with_cache(|dir| {
            let path = dir.join("vmlinux");
            std::fs::write(&path, vmlinux_with_config("5.4.286", CONFIG_54)).unwrap();
            let kernel = from_image("k", &path, None).unwrap();
            assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
            let images = dir.join("cache/images").join(sha256_file(&path).unwrap());
            assert_eq!(
                kernel.config,
                Some(KernelConfig {
                    path: images.join("config"),
                    source: ConfigSource::Embedded,
                })
            );
            assert_eq!(kernel.config.unwrap().read().unwrap(), CONFIG_54);
            let dot = dir.join(".config");
            std::fs::write(
                &dot,
                "# Linux/x86 5.4.286 Kernel Configuration\nCONFIG_PVH=y\n",
            )
            .unwrap();
            assert_eq!(from_image("k", &path, None).unwrap().config, beside(dot));
            // Without IKCONFIG and with nothing beside it: none.
            let plain = dir.join("sub/vmlinux");
            std::fs::create_dir_all(plain.parent().unwrap()).unwrap();
            std::fs::write(&plain, synthetic_vmlinux(Some("5.4.286"), true, true)).unwrap();
            assert_eq!(from_image("k", &plain, None).unwrap().config, None);
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
