//! The tree a kernel's packages are unpacked into (`<kernel folder>/root`), and the
//! [`Kernel`] it makes ([`kernel_from_debs`]): which of the packages' files are
//! kept ([`wanted`]), where the image is, how it boots.
//!
//! Packages come in either layout: the classic `boot/vmlinuz-R` (Debian up to 6.x,
//! Ubuntu), or the image beside its modules, `usr/lib/modules/R/vmlinuz` (Debian
//! 7.x's linux-binary-R, where linux-binary-unsigned-R names it `vmlinuz.unsigned`;
//! Fedora; Arch). Its modules are under `usr/lib/modules/R` (or `lib/modules/R`), in
//! the image's package or in a package of their own (linux-modules-R).
//!
//! [`arrange`] checks that the packages make one kernel (one image, modules of the
//! same release, no package's file hiding another's) and moves image and config to
//! the classic places, so every kernel's tree looks the same: `boot/vmlinuz-R`,
//! `boot/config-R`, `lib/modules/R` (the paths are kept without `usr/`).

use crate::bzimage::BzImageHeader;
use crate::deb::{self, Unpacked};
use crate::ikconfig::embedded_config;
use crate::image::{boot_bzimage, read_config};
use crate::kernel::{BootProtocol, ConfigSource, Kernel, KernelConfig};
use anyhow::{bail, Context};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Unpacks the guest's parts of `debs` into `kdir/root` (through a temporary
/// folder), finds the kernel image, decides how it boots (extracting its vmlinux
/// into `kdir` when it boots through PVH; the package's config counts), and
/// describes the result. The image and its modules may come in one package (Ubuntu's
/// 4.x mainline builds, Debian up to 6.x) or in several (later Ubuntu builds:
/// linux-image-* and linux-modules-*; Debian 7.x: linux-binary-R, linux-modules-R,
/// linux-base-R): all are unpacked into the same tree, which [`arrange`]
/// checks and brings into one shape whichever layout the packages use. Its config
/// is the packages' `boot/config-<release>`, else the one the image carries
/// (CONFIG_IKCONFIG=y), extracted into `kdir/config`. `source` is left empty for
/// the caller.
pub(crate) fn kernel_from_debs(
    kdir: &Path,
    debs: &[PathBuf],
    name: &str,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Kernel> {
    let root = kdir.join("root");
    let tmp_root = crate::util::tmp_sibling(&root);
    let _ = std::fs::remove_dir_all(&tmp_root);
    std::fs::create_dir_all(&tmp_root)
        .with_context(|| format!("cannot create {}", tmp_root.display()))?;
    let mut held = Vec::new();
    for deb in debs {
        progress(&format!(
            "unpacking {}",
            deb.file_name().unwrap_or_default().to_string_lossy()
        ));
        let files = deb::unpack_deb(deb, &tmp_root, &wanted)?;
        held.push(Held {
            deb: deb.clone(),
            files,
        });
    }
    let arranged = arrange(&tmp_root, &held, progress)?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp_root, &root)?;
    let moved = |p: &Path| root.join(p.strip_prefix(&tmp_root).expect("inside the tree"));
    let image = moved(&arranged.image);
    let release = arranged.release;
    let package = held
        .iter()
        .find(|h| {
            h.files
                .iter()
                .any(|f| image_release(&f.rel).as_deref() == Some(release.as_str()))
        })
        .map_or_else(
            || root.display().to_string(),
            |h| h.deb.display().to_string(),
        );

    let mut head = Vec::new();
    File::open(&image)?
        .take(BzImageHeader::READ_LEN as u64)
        .read_to_end(&mut head)?;
    let Some(header) = BzImageHeader::parse(&head)? else {
        bail!(
            "the kernel image of {release} in {package} has no bzImage header: not an x86 kernel?"
        );
    };
    // The kernel's own version string first; the file name is the packager's.
    let version = header.release().unwrap_or_else(|| release.clone());
    let config_path = root.join("boot").join(format!("config-{release}"));
    let config = read_config(&config_path);
    let boot = boot_bzimage(&image, Some(&version), config.as_deref(), kdir)?;
    progress(&match boot.choice.protocol {
        BootProtocol::Pvh => format!("booting the vmlinux through PVH: {}", boot.choice.why),
        BootProtocol::BzImage => format!("booting the bzImage: {}", boot.choice.why),
    });
    let (boot_image, boot_protocol) = (boot.image, boot.choice.protocol);
    let config = match config {
        Some(_) => Some(KernelConfig {
            path: config_path,
            source: ConfigSource::Package,
        }),
        // After the boot decision: a vmlinux it extracted into `kdir` is searched,
        // not decompressed again.
        None => embedded_config(&image, kdir)?,
    };
    Ok(Kernel {
        name: name.to_owned(),
        release: Some(release),
        image,
        boot_image,
        boot_protocol,
        modules_dir: arranged.modules_dir.as_deref().map(moved),
        source: String::new(),
        config,
    })
}

/// The parts of `lib/modules/<release>/` that are unpacked: net/ for clsact (the
/// guest's sch_ingress and cls_bpf), and what virtme-ng loads to mount the host's
/// root over 9p (9p, netfs/fscache, overlayfs, virtio, its console).
const KEPT_MODULES: &[&str] = &[
    "kernel/net",
    "kernel/fs/9p",
    "kernel/fs/netfs",
    "kernel/fs/fscache",
    "kernel/fs/overlayfs",
    "kernel/drivers/virtio",
    "kernel/drivers/char/virtio_console.ko",
    "kernel/drivers/char/virtio_console.ko.xz",
    "kernel/drivers/char/virtio_console.ko.zst",
];

/// Where a file of the package goes under the unpack root, if the guest can need it:
/// boot/vmlinuz-*, boot/config-*, and of the modules tree (found under
/// /usr/lib/modules in merged-/usr packages, kept as lib/modules here) the image
/// and config kept beside the modules (vmlinuz, vmlinuz.unsigned, config: Debian
/// 7.x, Fedora, Arch), modules.builtin*, modules.order and the subtrees in
/// [`KEPT_MODULES`]: the guest
/// loads sch_ingress and cls_bpf (kernel/net/sched), and keeping all of net/ keeps
/// what they could depend on; the virtme-ng backend needs 9p, virtio and overlayfs.
/// That is under 10% of the tree (the whole is 400-600 MB unpacked).
/// [`crate::modules::resolve_modules`] names a module that lies outside what was kept.
fn wanted(path: &Path) -> Option<PathBuf> {
    if !path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let rel = rel
        .strip_prefix("usr")
        .map(Path::to_path_buf)
        .unwrap_or(rel);
    let text = rel.to_string_lossy();
    let keep = if let Some(file) = text.strip_prefix("boot/") {
        !file.contains('/') && (file.starts_with("vmlinuz-") || file.starts_with("config-"))
    } else if let Some(rest) = text.strip_prefix("lib/modules/") {
        // <release>/<inside>
        match rest.split_once('/') {
            None => true, // the release directory itself
            Some((_, inside)) => {
                (!inside.contains('/')
                    && (inside.starts_with("modules.builtin")
                        || inside == "modules.order"
                        || inside == "config"
                        || IMAGES_BESIDE_MODULES.contains(&inside)))
                    || KEPT_MODULES.iter().any(|kept| {
                        // The subtree itself, what is in it, and the folders above it.
                        inside == *kept
                            || inside.starts_with(&format!("{kept}/"))
                            || kept.starts_with(&format!("{inside}/"))
                    })
            }
        }
    } else {
        false
    };
    keep.then_some(rel)
}

/// What one package put into the tree.
struct Held {
    pub deb: PathBuf,
    pub files: Vec<Unpacked>,
}

/// The kernel found in the tree.
#[derive(Debug, PartialEq, Eq)]
struct Arranged {
    /// The release the packages name it by (`uname -r`, for Debian and Ubuntu).
    pub release: String,
    /// `<root>/boot/vmlinuz-<release>`.
    pub image: PathBuf,
    /// `<root>/lib/modules/<release>`, when the packages hold modules.
    pub modules_dir: Option<PathBuf>,
}

/// The names of the files where an image may be: `boot/vmlinuz-R`, and
/// `lib/modules/R/` + one of these.
const IMAGES_BESIDE_MODULES: [&str; 2] = ["vmlinuz", "vmlinuz.unsigned"];

const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// The release a kernel image at `rel` (a path in the tree) is for, if it is one.
fn image_release(rel: &Path) -> Option<String> {
    let text = rel.to_str()?;
    if let Some(release) = text.strip_prefix("boot/vmlinuz-") {
        return (!release.is_empty() && !release.contains('/')).then(|| release.to_owned());
    }
    let (release, file) = text.strip_prefix("lib/modules/")?.split_once('/')?;
    IMAGES_BESIDE_MODULES
        .contains(&file)
        .then(|| release.to_owned())
}

/// The release directory a file under `lib/modules/` is in.
fn modules_release(rel: &Path) -> Option<&str> {
    let (release, _) = rel
        .to_str()?
        .strip_prefix("lib/modules/")?
        .split_once('/')?;
    Some(release)
}

fn is_module(rel: &Path) -> bool {
    rel.to_str()
        .is_some_and(|t| MODULE_SUFFIXES.iter().any(|s| t.ends_with(s)))
}

fn file_name(deb: &Path) -> String {
    deb.file_name()
        .unwrap_or(deb.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// Checks and arranges the tree at `root` that `held` was unpacked into (see the
/// module's documentation). Every error names the package and the file.
fn arrange(root: &Path, held: &[Held], progress: &mut dyn FnMut(&str)) -> anyhow::Result<Arranged> {
    let all = || {
        held.iter()
            .map(|h| h.deb.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    };

    // One package's file must not have been overwritten by another's.
    let mut owner: BTreeMap<&Path, (&Path, &str)> = BTreeMap::new();
    for h in held {
        for f in &h.files {
            if let Some((other, in_other)) = owner.insert(&f.rel, (&h.deb, &f.in_package)) {
                if other != h.deb && (image_release(&f.rel).is_some() || is_module(&f.rel)) {
                    bail!(
                        "{} and {} both hold {} ({in_other}): give only one of them",
                        other.display(),
                        h.deb.display(),
                        f.in_package
                    );
                }
            }
        }
    }

    // Images, by release.
    let mut images: BTreeMap<String, Vec<(&Path, &Unpacked)>> = BTreeMap::new();
    for h in held {
        for f in &h.files {
            if let Some(release) = image_release(&f.rel) {
                images.entry(release).or_default().push((&h.deb, f));
            }
        }
    }
    let describe = |found: &[(&Path, &Unpacked)]| {
        found
            .iter()
            .map(|(deb, f)| format!("{} in {}", f.in_package, file_name(deb)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (release, found) = match images.len() {
        0 => bail!("{}", no_image(held, &all())),
        1 => images.into_iter().next().expect("one release"),
        _ => bail!(
            "{} hold kernel images of {} releases ({}): give the packages of one kernel",
            all(),
            images.len(),
            images
                .values()
                .map(|found| describe(found))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    // Two copies of the image (boot/ and lib/modules/) must be the same kernel.
    let read = |f: &Unpacked| {
        std::fs::read(root.join(&f.rel))
            .with_context(|| format!("cannot read {}", root.join(&f.rel).display()))
    };
    for other in &found[1..] {
        if read(other.1)? != read(found[0].1)? {
            bail!(
                "{} hold two different kernel images of {release} ({}): a signed and an unsigned build? Give one of them",
                all(),
                describe(&found)
            );
        }
    }
    let (image_deb, image_file) = found[0];

    // Everything under lib/modules/ must be for that release.
    for h in held {
        if let Some(f) = h
            .files
            .iter()
            .find(|f| modules_release(&f.rel).is_some_and(|r| r != release))
        {
            bail!(
                "{} holds files of release {} ({}), but the kernel image is of {release} ({} in {}): give packages of one build",
                h.deb.display(),
                modules_release(&f.rel).unwrap_or_default(),
                f.in_package,
                image_file.in_package,
                image_deb.display()
            );
        }
    }

    // The classic places.
    let boot = root.join("boot");
    std::fs::create_dir_all(&boot).with_context(|| format!("cannot create {}", boot.display()))?;
    let image = boot.join(format!("vmlinuz-{release}"));
    if !image.exists() {
        std::fs::rename(root.join(&image_file.rel), &image)
            .with_context(|| format!("cannot move the kernel image to {}", image.display()))?;
        progress(&format!(
            "kernel image {release}: {} in {}",
            image_file.in_package,
            file_name(image_deb)
        ));
    }
    let modules_dir = root.join("lib/modules").join(&release);
    for file in IMAGES_BESIDE_MODULES {
        let _ = std::fs::remove_file(modules_dir.join(file));
    }
    let config = boot.join(format!("config-{release}"));
    if !config.exists() && modules_dir.join("config").is_file() {
        std::fs::rename(modules_dir.join("config"), &config)
            .with_context(|| format!("cannot move the config to {}", config.display()))?;
    }

    let has_modules = held
        .iter()
        .flat_map(|h| &h.files)
        .any(|f| modules_release(&f.rel) == Some(&release) && is_module(&f.rel));
    if !has_modules {
        let config = read_config(&config);
        let as_modules: Vec<&str> = config
            .as_deref()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_suffix("=m"))
            .filter(|name| name.starts_with("CONFIG_"))
            .collect();
        let add = format!(
            "add its modules package (Debian 7.x and Ubuntu: linux-modules-{release}) to the same -k, separated by a comma: -k NAME={},MODULES.deb",
            held.iter()
                .map(|h| h.deb.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        if !as_modules.is_empty() {
            bail!(
                "{} hold the kernel image of {release} ({} in {}) but none of its modules (no usr/lib/modules/{release}/kernel/), and its config builds {} of them ({}, ...): {add}",
                all(),
                image_file.in_package,
                file_name(image_deb),
                as_modules.len(),
                as_modules[..as_modules.len().min(3)].join(", ")
            );
        }
        progress(&format!(
            "no modules of {release} in {}{}: the guest has only what is built into the kernel; if it needs modules, {add}",
            all(),
            if config.is_none() {
                " (and no config to tell whether it has any)"
            } else {
                ""
            }
        ));
    }
    Ok(Arranged {
        release,
        image,
        modules_dir: (has_modules && modules_dir.is_dir()).then_some(modules_dir),
    })
}

/// Why `held` gave no kernel image, package by package.
fn no_image(held: &[Held], all: &str) -> String {
    let mut why = Vec::new();
    for h in held {
        let releases: BTreeSet<&str> = h
            .files
            .iter()
            .filter_map(|f| modules_release(&f.rel))
            .collect();
        if !releases.is_empty() {
            let list: Vec<&str> = releases.into_iter().collect();
            why.push(format!(
                "{} holds files of usr/lib/modules/{}/ but no image: add the package with the image (Debian 7.x: linux-binary-{}; Debian 6.x and Ubuntu: linux-image-{})",
                file_name(&h.deb),
                list.join(", "),
                list[0],
                list[0]
            ));
        } else if h.files.is_empty() {
            why.push(match deb::control(&h.deb) {
                Some(c) if c.depends.contains("linux-binary-") => format!(
                    "{} is the metapackage {}: it holds no kernel, it depends on {}; give those packages instead (the image is in linux-binary-<release>, the modules in linux-modules-<release>)",
                    file_name(&h.deb),
                    c.package,
                    c.depends
                        .split(',')
                        .map(str::trim)
                        .filter(|d| d.starts_with("linux-"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(c) => format!(
                    "{} (package {}) holds no kernel files{}",
                    file_name(&h.deb),
                    c.package,
                    if c.depends.is_empty() {
                        String::new()
                    } else {
                        format!("; it depends on {}", c.depends)
                    }
                ),
                None => format!(
                    "{} holds no kernel files: is it a kernel package?",
                    file_name(&h.deb)
                ),
            });
        }
    }
    let head = format!(
        "{all} hold{} no kernel image (looked for boot/vmlinuz-<release> and usr/lib/modules/<release>/vmlinuz)",
        if held.len() == 1 { "s" } else { "" }
    );
    if why.is_empty() {
        format!("{head}: is it a kernel image package?")
    } else {
        format!("{head}. {}", why.join(". "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::tests::synthetic_deb_with_control;

    const R: &str = "7.2.13+deb14-amd64";

    fn image(release: &str, salt: &str) -> Vec<u8> {
        crate::bzimage::tests::synthetic_bzimage_of(
            &format!("{release} (debian-kernel@lists.debian.org) #1 SMP"),
            &crate::bzimage::tests::xz(format!("kernel {salt}").as_bytes()),
            0,
            None,
        )
    }

    /// Debian 7.x's packages of one kernel, as files in `dir`.
    struct Sid {
        dir: tempfile::TempDir,
    }

    impl Sid {
        fn new() -> Sid {
            Sid {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn deb(&self, file: &str, files: &[(&str, Vec<u8>)], control: Option<&str>) -> PathBuf {
            let path = self.dir.path().join(file);
            std::fs::write(&path, synthetic_deb_with_control(files, control)).unwrap();
            path
        }

        fn binary(&self, release: &str, file: &str, salt: &str) -> PathBuf {
            self.deb(
                &format!("linux-binary-{release}_{salt}_amd64.deb"),
                &[(
                    &format!("./usr/lib/modules/{release}/{file}"),
                    image(release, salt),
                )],
                None,
            )
        }

        fn modules(&self, release: &str) -> PathBuf {
            self.deb(
                &format!("linux-modules-{release}_1_amd64.deb"),
                &[
                    (
                        &format!("./usr/lib/modules/{release}/kernel/net/sched/cls_bpf.ko.xz"),
                        crate::bzimage::tests::xz(b"\x7fELF"),
                    ),
                    (
                        &format!("./usr/lib/modules/{release}/kernel/net/sched/sch_ingress.ko.xz"),
                        crate::bzimage::tests::xz(b"\x7fELF"),
                    ),
                ],
                None,
            )
        }

        fn base(&self, release: &str) -> PathBuf {
            self.deb(
                &format!("linux-base-{release}_1_amd64.deb"),
                &[
                    (
                        &format!("./usr/lib/modules/{release}/config"),
                        b"CONFIG_PVH=y\nCONFIG_NET_SCH_INGRESS=m\nCONFIG_NET_CLS_BPF=m\n".to_vec(),
                    ),
                    (
                        &format!("./usr/lib/modules/{release}/modules.order"),
                        b"kernel/net/sched/cls_bpf.ko\n".to_vec(),
                    ),
                    (
                        &format!("./usr/lib/modules/{release}/System.map"),
                        b"ffffffff81000000 T _text\n".to_vec(),
                    ),
                ],
                None,
            )
        }

        fn unpack(&self, debs: &[PathBuf]) -> (anyhow::Result<crate::kernel::Kernel>, Vec<String>) {
            let kdir = self.dir.path().join("k");
            std::fs::create_dir_all(&kdir).unwrap();
            let mut lines = Vec::new();
            let kernel = kernel_from_debs(&kdir, debs, "sid", &mut |l| lines.push(l.to_owned()));
            (kernel, lines)
        }

        fn error(&self, debs: &[PathBuf]) -> String {
            format!("{:#}", self.unpack(debs).0.unwrap_err())
        }
    }

    #[test]
    fn debian_7_packages_make_one_kernel_in_the_classic_shape() {
        let sid = Sid::new();
        for image_file in IMAGES_BESIDE_MODULES {
            let binary = sid.binary(R, image_file, "1");
            let debs = [sid.modules(R), binary, sid.base(R)];
            let (kernel, lines) = sid.unpack(&debs);
            let kernel = kernel.unwrap();
            let root = sid.dir.path().join("k/root");
            assert_eq!(kernel.release.as_deref(), Some(R));
            assert_eq!(kernel.image, root.join(format!("boot/vmlinuz-{R}")));
            assert_eq!(std::fs::read(&kernel.image).unwrap(), image(R, "1"));
            assert_eq!(
                kernel.modules_dir,
                Some(root.join(format!("lib/modules/{R}")))
            );
            assert!(root.join(format!("boot/config-{R}")).is_file());
            // The config moved there from beside the modules is the kernel's.
            assert_eq!(
                kernel.config,
                Some(KernelConfig {
                    path: root.join(format!("boot/config-{R}")),
                    source: ConfigSource::Package,
                })
            );
            assert_eq!(
                kernel.config.as_ref().unwrap().describe(),
                format!("boot/config-{R} of the package")
            );
            let in_modules = std::fs::read_dir(root.join(format!("lib/modules/{R}")))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect::<BTreeSet<_>>();
            assert_eq!(
                in_modules,
                ["kernel", "modules.order"].map(String::from).into()
            );
            assert!(
                lines.contains(&format!(
                    "kernel image {R}: usr/lib/modules/{R}/{image_file} in linux-binary-{R}_1_amd64.deb"
                )),
                "{lines:?}"
            );
            // Its modules are found for the guest.
            let modules = crate::modules::resolve_modules_in(
                &kernel,
                &["sch_ingress", "cls_bpf"],
                &sid.dir.path().join("cache"),
            )
            .unwrap();
            assert_eq!(
                modules.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
                ["sch_ingress", "cls_bpf"]
            );
        }
    }

    /// `-k sid=linux-binary-R.deb,linux-modules-R.deb`: no config, no
    /// modules.builtin, and still every module found.
    #[test]
    fn image_and_modules_packages_alone_are_enough() {
        let sid = Sid::new();
        let (kernel, _) = sid.unpack(&[sid.binary(R, "vmlinuz", "1"), sid.modules(R)]);
        let kernel = kernel.unwrap();
        assert!(kernel.modules_dir.is_some());
        assert_eq!(kernel.config, None);
        assert!(crate::modules::resolve_modules_in(
            &kernel,
            &["cls_bpf"],
            &sid.dir.path().join("cache")
        )
        .is_ok());
    }

    #[test]
    fn an_image_without_its_modules_is_refused_when_its_config_needs_them() {
        let sid = Sid::new();
        let binary = sid.binary(R, "vmlinuz", "1");
        let err = sid.error(&[binary.clone(), sid.base(R)]);
        assert!(
            err.contains(&format!("hold the kernel image of {R} (usr/lib/modules/{R}/vmlinuz in linux-binary-{R}_1_amd64.deb) but none of its modules")),
            "{err}"
        );
        assert!(
            err.contains("CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_BPF"),
            "{err}"
        );
        assert!(err.contains(&format!("linux-modules-{R}")), "{err}");
        // Without a config it cannot tell: it says so and goes on.
        let (kernel, lines) = sid.unpack(&[binary]);
        assert_eq!(kernel.unwrap().modules_dir, None);
        assert!(
            lines.iter().any(
                |l| l.starts_with(&format!("no modules of {R} in ")) && l.contains("no config")
            ),
            "{lines:?}"
        );
    }

    /// A package without a config whose image carries one (CONFIG_IKCONFIG=y):
    /// that one, extracted into the kernel's folder; the package's wins over it.
    #[test]
    fn a_package_without_a_config_gets_its_image_s_embedded_one() {
        use crate::ikconfig::tests::{vmlinux_with_config, CONFIG_54};
        let sid = Sid::new();
        let vmlinux = vmlinux_with_config(R, CONFIG_54);
        let image = crate::bzimage::tests::synthetic_bzimage_of(
            &format!("{R} (debian-kernel@lists.debian.org) #1 SMP"),
            &crate::bzimage::tests::xz(&vmlinux),
            0,
            None,
        );
        let binary = sid.deb(
            "linux-binary.deb",
            &[(&format!("./usr/lib/modules/{R}/vmlinuz"), image)],
            None,
        );
        let (kernel, _) = sid.unpack(&[binary.clone(), sid.modules(R)]);
        let kernel = kernel.unwrap();
        // 7.x boots through PVH: the config is found in the vmlinux extracted for it.
        assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
        let kdir = sid.dir.path().join("k");
        assert_eq!(
            kernel.config,
            Some(KernelConfig {
                path: kdir.join("config"),
                source: ConfigSource::Embedded,
            })
        );
        assert_eq!(kernel.config.unwrap().read().unwrap(), CONFIG_54);

        let (kernel, _) = sid.unpack(&[binary, sid.modules(R), sid.base(R)]);
        let config = kernel.unwrap().config.unwrap();
        assert_eq!(config.source, ConfigSource::Package);
        assert_eq!(
            config.read().unwrap(),
            "CONFIG_PVH=y\nCONFIG_NET_SCH_INGRESS=m\nCONFIG_NET_CLS_BPF=m\n"
        );
    }

    #[test]
    fn packages_without_an_image_say_what_they_are() {
        let sid = Sid::new();
        let meta = sid.deb(
            &format!("linux-image-{R}_7.2.13-1_amd64.deb"),
            &[("./usr/share/lintian/overrides/x", b"x".to_vec())],
            Some(&format!("Package: linux-image-{R}\nVersion: 7.2.13-1\nDepends: linux-base-{R} (= 7.2.13-1), linux-binary-{R} (= 7.2.13-1), linux-modules-{R} (= 7.2.13-1)\n")),
        );
        let err = sid.error(std::slice::from_ref(&meta));
        assert!(
            err.starts_with(&format!(
                "{} holds no kernel image (looked for boot/vmlinuz-<release> and usr/lib/modules/<release>/vmlinuz)",
                meta.display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("is the metapackage linux-image-{R}: it holds no kernel, it depends on linux-base-{R}")),
            "{err}"
        );
        let err = sid.error(&[sid.modules(R), sid.base(R)]);
        assert!(
            err.contains(&format!("linux-modules-{R}_1_amd64.deb holds files of usr/lib/modules/{R}/ but no image: add the package with the image (Debian 7.x: linux-binary-{R}")),
            "{err}"
        );
        let empty = sid.deb("empty.deb", &[], None);
        let err = sid.error(&[empty]);
        assert!(
            err.ends_with("empty.deb holds no kernel files: is it a kernel package?"),
            "{err}"
        );
    }

    #[test]
    fn packages_of_different_builds_are_refused_naming_both() {
        let sid = Sid::new();
        let other = "7.1.8+deb14-amd64";
        let err = sid.error(&[sid.binary(R, "vmlinuz", "1"), sid.modules(other)]);
        assert!(
            err.contains(&format!("linux-modules-{other}_1_amd64.deb holds files of release {other} (usr/lib/modules/{other}/kernel/net/sched/")),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "but the kernel image is of {R} (usr/lib/modules/{R}/vmlinuz in "
            )),
            "{err}"
        );
        let err = sid.error(&[
            sid.binary(R, "vmlinuz", "1"),
            sid.binary(other, "vmlinuz", "2"),
        ]);
        assert!(err.contains("kernel images of 2 releases"), "{err}");
        // A signed and an unsigned build of one release differ.
        let err = sid.error(&[
            sid.binary(R, "vmlinuz", "signed"),
            sid.binary(R, "vmlinuz.unsigned", "unsigned"),
        ]);
        assert!(
            err.contains(&format!("two different kernel images of {R}")),
            "{err}"
        );
        // Two packages holding the same file: the second would hide the first.
        let (a, b) = (sid.binary(R, "vmlinuz", "a"), sid.binary(R, "vmlinuz", "b"));
        let err = sid.error(&[a, b]);
        assert!(
            err.contains(&format!("both hold usr/lib/modules/{R}/vmlinuz")),
            "{err}"
        );
    }

    #[test]
    fn the_classic_layout_still_works_and_a_copy_beside_the_modules_is_the_same_kernel() {
        let sid = Sid::new();
        let both = sid.deb(
            "both.deb",
            &[
                (&format!("./boot/vmlinuz-{R}"), image(R, "1")),
                (&format!("./usr/lib/modules/{R}/vmlinuz"), image(R, "1")),
                (
                    &format!("./usr/lib/modules/{R}/kernel/net/sched/cls_bpf.ko"),
                    b"\x7fELF".to_vec(),
                ),
            ],
            None,
        );
        let (kernel, lines) = sid.unpack(&[both]);
        let kernel = kernel.unwrap();
        assert!(kernel.image.ends_with(format!("boot/vmlinuz-{R}")));
        assert!(
            !lines.iter().any(|l| l.starts_with("kernel image")),
            "{lines:?}"
        );
        assert!(!sid
            .dir
            .path()
            .join(format!("k/root/lib/modules/{R}/vmlinuz"))
            .exists());
    }

    #[test]
    fn images_are_found_in_both_layouts() {
        let r = |p: &str| image_release(Path::new(p));
        assert_eq!(
            r("boot/vmlinuz-6.1.0-56-amd64").as_deref(),
            Some("6.1.0-56-amd64")
        );
        assert_eq!(
            r("lib/modules/7.2.13+deb14-amd64/vmlinuz").as_deref(),
            Some("7.2.13+deb14-amd64")
        );
        assert_eq!(
            r("lib/modules/7.2.13+deb14-amd64/vmlinuz.unsigned").as_deref(),
            Some("7.2.13+deb14-amd64")
        );
        for no in [
            "boot/vmlinuz-",
            "boot/config-6.1",
            "lib/modules/7.2/kernel/vmlinuz",
            "lib/modules/7.2/System.map",
            "lib/modules/vmlinuz",
        ] {
            assert_eq!(r(no), None, "{no}");
        }
    }

    #[test]
    fn only_boot_files_and_the_modules_guests_load_are_wanted() {
        let keep = |p: &str| wanted(Path::new(p)).map(|p| p.display().to_string());
        assert_eq!(
            keep("./boot/vmlinuz-6.1.0-56-amd64").as_deref(),
            Some("boot/vmlinuz-6.1.0-56-amd64")
        );
        assert!(keep("./boot/config-6.1.0-56-amd64").is_some());
        // Debian 7.x, Fedora, Arch: image and config beside the modules.
        for beside in ["vmlinuz", "vmlinuz.unsigned", "config", "modules.order"] {
            assert_eq!(
                keep(&format!("./usr/lib/modules/7.2.13+deb14-amd64/{beside}")),
                Some(format!("lib/modules/7.2.13+deb14-amd64/{beside}")),
            );
        }
        assert_eq!(
            keep("./usr/lib/modules/7.2.13+deb14-amd64/System.map"),
            None
        );
        assert_eq!(
            keep("./usr/lib/modules/6.12.1/kernel/net/sched/cls_bpf.ko.xz").as_deref(),
            Some("lib/modules/6.12.1/kernel/net/sched/cls_bpf.ko.xz")
        );
        for yes in [
            "./lib/modules/4.16.0-041600-generic/kernel/net/sched/sch_ingress.ko",
            "./lib/modules/4.16.0-041600-generic/kernel/net/",
            "./lib/modules/4.16.0-041600-generic/modules.builtin",
            "./lib/modules/4.16.0-041600-generic/modules.builtin.modinfo",
            "./lib/modules/4.16.0-041600-generic/modules.order",
            "./lib/modules/4.16.0-041600-generic/",
            "./lib/modules/6.1.0-56-amd64/kernel/fs/9p/9p.ko",
            "./lib/modules/6.1.0-56-amd64/kernel/fs/",
            "./lib/modules/6.1.0-56-amd64/kernel/drivers/char/virtio_console.ko",
        ] {
            assert!(keep(yes).is_some(), "{yes}");
        }
        for no in [
            "./boot/System.map-6.1",
            "./usr/share/doc/x",
            "../boot/vmlinuz-evil",
            "./lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko",
            "./lib/modules/6.1.0-56-amd64/kernel/fs/ext4/ext4.ko",
            "./lib/modules/6.1.0-56-amd64/kernel/drivers/char/tpm/tpm.ko",
            "./lib/modules/6.1.0-56-amd64/kernel/network.ko",
            "./lib/modules/6.1.0-56-amd64/modules.dep",
        ] {
            assert_eq!(keep(no), None, "{no}");
        }
    }
}
