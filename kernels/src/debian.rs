//! Fetches a Debian kernel package with apt through a private configuration inside
//! the cache (its own sources list, state and package cache; the system's apt
//! sources and state are never read or touched), unpacks the parts a guest needs and
//! extracts the vmlinux for PVH boot. apt verifies the Release signature against
//! Debian's archive keyring and every package's checksum, so nothing unverified is
//! booted.

use crate::bzimage::BzImageHeader;
use crate::image::pvh_image_from_bzimage;
use crate::{cache_dir, write_atomically, Kernel};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Which Debian kernel to fetch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DebianSpec {
    /// Names the cache entry (`cache_dir()/kernels/<name>/`), e.g. "debian-6.1".
    pub name: String,
    /// A Debian suite with a main component, e.g. "bookworm".
    pub suite: String,
    /// An apt (POSIX extended) regex on package names; the newest match wins, e.g.
    /// `^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$`.
    pub package_regex: String,
}

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Written last: its presence means everything else in the kernel's directory is
/// complete, and it holds the [`Kernel`] to return without touching the network.
const MARKER: &str = "kernel.json";

/// Fetches (or finds in the cache) the newest package of `spec.suite` matching
/// `spec.package_regex` and returns it as a [`Kernel`]. The mirror is
/// `$BPFMATRIX_DEBIAN_MIRROR`, else <http://deb.debian.org/debian>. Progress lines go
/// to `progress`.
pub fn fetch_debian(spec: &DebianSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Kernel> {
    let kdir = cache_dir().join("kernels").join(&spec.name);
    if let Some(kernel) = cached(&kdir) {
        return Ok(kernel);
    }
    if which::which("apt-get").is_err() || which::which("apt-cache").is_err() {
        bail!(
            "apt-get not found: fetching Debian kernels needs apt (Debian/Ubuntu host); or pass a kernel image with --kernel PATH"
        );
    }
    if !Path::new(KEYRING).exists() {
        bail!("{KEYRING} not found: apt needs Debian's archive keyring to verify packages (apt-get install debian-archive-keyring)");
    }
    let mirror = std::env::var("BPFMATRIX_DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned());
    let apt = PrivateApt::prepare(
        &cache_dir().join("apt").join(&spec.suite),
        &mirror,
        &spec.suite,
    )?;

    progress(&format!("apt-get update {} ({mirror})", spec.suite));
    apt.run("apt-get", &["-q", "update"], None).with_context(|| {
        format!(
            "apt-get update for Debian {} from {mirror} failed: check network access, the suite name, or set BPFMATRIX_DEBIAN_MIRROR",
            spec.suite
        )
    })?;

    let found = apt.run(
        "apt-cache",
        &["search", "--names-only", &spec.package_regex],
        None,
    )?;
    let package = newest_name(found.lines().filter_map(|l| l.split_whitespace().next())).with_context(|| {
        format!(
            "no package in Debian {} matches '{}': check the suite and the pattern (apt-cache search --names-only)",
            spec.suite, spec.package_regex
        )
    })?;
    let show = apt.run("apt-cache", &["show", "--no-all-versions", &package], None)?;
    let field = |name: &str| {
        show.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_owned())
    };
    let version =
        field("Version").with_context(|| format!("apt-cache show {package} gave no Version"))?;
    let size_mb = field("Size")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        / 1_000_000;
    std::fs::create_dir_all(&kdir).with_context(|| format!("cannot create {}", kdir.display()))?;

    // apt-get download writes into the current directory; a fresh per-process
    // directory keeps a half download from ever being taken for a finished one.
    let deb_name = format!("{package}_{}_amd64.deb", version.replace(':', "%3a"));
    let deb = kdir.join(&deb_name);
    if !deb.exists() {
        progress(&format!("downloading {package} {version} ({size_mb} MB)"));
        let tmp = crate::tmp_sibling(&kdir.join("download"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        apt.run("apt-get", &["-q", "download", &package], Some(&tmp))
            .with_context(|| format!("downloading {package} {version} failed"))?;
        let got = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| {
                format!(
                    "apt-get download {package} left no .deb in {}",
                    tmp.display()
                )
            })?;
        std::fs::rename(&got, &deb)?;
        let _ = std::fs::remove_dir_all(&tmp);
    }

    progress(&format!("unpacking {deb_name}"));
    let root = kdir.join("root");
    let tmp_root = crate::tmp_sibling(&root);
    let _ = std::fs::remove_dir_all(&tmp_root);
    unpack_deb(&deb, &tmp_root)?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp_root, &root)?;

    let image = std::fs::read_dir(root.join("boot"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| {
            format!("{deb_name} holds no boot/vmlinuz-*: is '{package}' a kernel image package?")
        })?;
    let release = image.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_owned();

    progress(&format!("extracting vmlinux from {}", image.display()));
    let mut head = Vec::new();
    File::open(&image)?
        .take(BzImageHeader::READ_LEN as u64)
        .read_to_end(&mut head)?;
    let (boot_image, boot_protocol) = match BzImageHeader::parse(&head)? {
        Some(header) => pvh_image_from_bzimage(&image, &header, &kdir)?,
        None => bail!("{} in {deb_name} has no bzImage header", image.display()),
    };
    let modules_dir = root.join("lib/modules").join(&release);
    let kernel = Kernel {
        name: spec.name.clone(),
        release: Some(release),
        image,
        boot_image,
        boot_protocol,
        modules_dir: modules_dir.is_dir().then_some(modules_dir),
        source: format!("debian {} {package} {version}", spec.suite),
    };
    // Nothing but the marker is needed any more; the .deb is 70-100 MB.
    let _ = std::fs::remove_file(&deb);
    write_atomically(
        &kdir.join(MARKER),
        serde_json::to_string_pretty(&kernel)?.as_bytes(),
    )?;
    Ok(kernel)
}

/// The kernel recorded by a completed earlier fetch, if its files are still there.
fn cached(kdir: &Path) -> Option<Kernel> {
    let text = std::fs::read_to_string(kdir.join(MARKER)).ok()?;
    let kernel: Kernel = serde_json::from_str(&text).ok()?;
    (kernel.boot_image.exists() && kernel.image.exists()).then_some(kernel)
}

/// An apt configuration of its own under `dir`: every path apt would take from
/// /etc/apt or /var points inside `dir`.
struct PrivateApt {
    options: Vec<(String, String)>,
    config: PathBuf,
}

impl PrivateApt {
    fn prepare(dir: &Path, mirror: &str, suite: &str) -> anyhow::Result<PrivateApt> {
        let etc = dir.join("etc");
        let state = dir.join("state");
        let cache = dir.join("cache");
        for d in [
            etc.join("apt.conf.d"),
            etc.join("sources.list.d"),
            etc.join("preferences.d"),
            etc.join("trusted.gpg.d"),
            state.join("lists/partial"),
            cache.join("archives/partial"),
        ] {
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        let status = state.join("status");
        if !status.exists() {
            std::fs::write(&status, b"")?;
        }
        std::fs::write(
            etc.join("sources.list"),
            format!("deb [signed-by={KEYRING}] {mirror} {suite} main\n"),
        )?;
        let path = |p: &Path| format!("{}/", p.display());
        let mut options: Vec<(String, String)> = vec![
            // Dir::Etc moves sources.list, sources.list.d, preferences(.d), trusted
            // keys and apt.conf(.d) into our directory in one go; the explicit ones
            // below say so again for the reader and for older apts.
            ("Dir::Etc".into(), path(&etc)),
            (
                "Dir::Etc::SourceList".into(),
                etc.join("sources.list").display().to_string(),
            ),
            (
                "Dir::Etc::SourceParts".into(),
                path(&etc.join("sources.list.d")),
            ),
            ("Dir::Etc::Parts".into(), path(&etc.join("apt.conf.d"))),
            (
                "Dir::Etc::Preferences".into(),
                etc.join("preferences").display().to_string(),
            ),
            (
                "Dir::Etc::PreferencesParts".into(),
                path(&etc.join("preferences.d")),
            ),
            ("Dir::State".into(), path(&state)),
            ("Dir::State::status".into(), status.display().to_string()),
            ("Dir::Cache".into(), path(&cache)),
            ("Acquire::Languages".into(), "none".into()),
            ("APT::Architecture".into(), "amd64".into()),
            ("APT::Architectures".into(), "amd64".into()),
        ];
        if is_root() {
            // apt drops to the _apt user to download, which cannot enter a cache in
            // root's 0700 home; it would fall back with a warning anyway.
            options.push(("APT::Sandbox::User".into(), "root".into()));
        }
        // APT_CONFIG is read before /etc/apt/apt.conf.d, so pointing it at a file
        // that moves Dir::Etc keeps the system's configuration out entirely.
        let config = dir.join("apt.conf");
        let text: String = options
            .iter()
            .map(|(k, v)| format!("{k} \"{v}\";\n"))
            .collect();
        std::fs::write(&config, text)?;
        Ok(PrivateApt { options, config })
    }

    /// Runs an apt tool with the private configuration; its stdout, or an error
    /// carrying the end of its stderr.
    fn run(&self, tool: &str, args: &[&str], cwd: Option<&Path>) -> anyhow::Result<String> {
        let mut cmd = Command::new(tool);
        cmd.env("APT_CONFIG", &self.config).env("LC_ALL", "C");
        for (k, v) in &self.options {
            cmd.arg("-o").arg(format!("{k}={v}"));
        }
        cmd.args(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let out = cmd.output().with_context(|| format!("cannot run {tool}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success()
            || stderr
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W: GPG"))
        {
            let tail: Vec<&str> = stderr
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "{tool} {} failed ({}):\n{}",
                args.join(" "),
                out.status,
                tail.join("\n")
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The newest of some package names, comparing digit runs as numbers
/// (linux-image-6.1.0-56 is newer than linux-image-6.1.0-9).
fn newest_name<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    names.max_by(|a, b| version_cmp(a, b)).map(str::to_owned)
}

fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let split = |s: &'_ [u8]| {
                    s.iter()
                        .position(|c| !c.is_ascii_digit())
                        .unwrap_or(s.len())
                };
                let (na, nb) = (split(a), split(b));
                let strip = |s: &'_ [u8]| -> Vec<u8> {
                    s.iter().copied().skip_while(|&c| c == b'0').collect()
                };
                let (da, db) = (strip(&a[..na]), strip(&b[..nb]));
                let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(&db));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Where a file of the package goes under the unpack root, if the guest needs it:
/// boot/vmlinuz-*, boot/config-* and the modules tree (found under /usr/lib/modules
/// in merged-/usr packages, kept as lib/modules here).
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
    let keep = text.starts_with("boot/vmlinuz-")
        || text.starts_with("boot/config-")
        || text.starts_with("lib/modules/");
    keep.then_some(rel)
}

/// Unpacks the wanted parts of a .deb (an ar archive holding data.tar.{xz,zst,gz})
/// into `dest`.
fn unpack_deb(deb: &Path, dest: &Path) -> anyhow::Result<()> {
    let file = File::open(deb).with_context(|| format!("cannot open {}", deb.display()))?;
    let mut archive = ar::Archive::new(file);
    while let Some(entry) = archive.next_entry() {
        let entry =
            entry.with_context(|| format!("{} is not a valid .deb (ar archive)", deb.display()))?;
        let id = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_owned();
        let data: Box<dyn Read> = match id.as_str() {
            "data.tar.xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data.tar.zst" => Box::new(
                ruzstd::decoding::StreamingDecoder::new(entry)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            "data.tar" => Box::new(entry),
            _ => continue,
        };
        let mut tar = tar::Archive::new(data);
        for item in tar.entries()? {
            let mut item =
                item.with_context(|| format!("corrupt data archive in {}", deb.display()))?;
            let Some(rel) = wanted(&item.path()?) else {
                continue;
            };
            let target = dest.join(&rel);
            match item.header().entry_type() {
                tar::EntryType::Directory => std::fs::create_dir_all(&target)?,
                tar::EntryType::Regular => {
                    std::fs::create_dir_all(target.parent().unwrap())?;
                    item.unpack(&target).with_context(|| {
                        format!("cannot unpack {} from {}", rel.display(), deb.display())
                    })?;
                }
                // Links (build/source in some packages) point outside the package.
                _ => {}
            }
        }
        return Ok(());
    }
    bail!(
        "{} holds no data.tar.*: not a Debian package",
        deb.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BootProtocol;

    #[test]
    fn newest_name_compares_numbers_as_numbers() {
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-10-amd64-unsigned",
        ];
        assert_eq!(
            newest_name(names.into_iter()).unwrap(),
            "linux-image-6.1.0-56-amd64-unsigned"
        );
        assert_eq!(newest_name(std::iter::empty()), None);
        assert_eq!(version_cmp("a-010", "a-9"), Ordering::Greater);
    }

    #[test]
    fn only_boot_files_and_modules_are_wanted() {
        assert_eq!(
            wanted(Path::new("./boot/vmlinuz-6.1.0-56-amd64")),
            Some("boot/vmlinuz-6.1.0-56-amd64".into())
        );
        assert_eq!(
            wanted(Path::new("./usr/lib/modules/6.12.1/kernel/net/x.ko.xz")),
            Some("lib/modules/6.12.1/kernel/net/x.ko.xz".into())
        );
        assert_eq!(wanted(Path::new("./boot/System.map-6.1")), None);
        assert_eq!(wanted(Path::new("./usr/share/doc/x")), None);
        assert_eq!(wanted(Path::new("../boot/vmlinuz-evil")), None);
    }

    /// Fetches Debian bookworm's 6.1 kernel over the network. Run by hand:
    /// `BPFMATRIX_NETWORK_TESTS=1 cargo test -p bpfmatrix-kernels fetch -- --nocapture`.
    #[test]
    fn fetch_bookworm_61() {
        if std::env::var_os("BPFMATRIX_NETWORK_TESTS").is_none() {
            eprintln!("skipped: set BPFMATRIX_NETWORK_TESTS=1 to fetch from Debian");
            return;
        }
        let spec = DebianSpec {
            name: "debian-6.1".into(),
            suite: "bookworm".into(),
            package_regex: r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$".into(),
        };
        let start = std::time::Instant::now();
        let kernel = fetch_debian(&spec, &mut |line| eprintln!("{line}")).unwrap();
        eprintln!("cold: {:?} {kernel:#?}", start.elapsed());
        assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
        let start = std::time::Instant::now();
        let again = fetch_debian(&spec, &mut |line| {
            panic!("cached fetch must be silent: {line}")
        })
        .unwrap();
        eprintln!("warm: {:?}", start.elapsed());
        assert_eq!(again, kernel);
    }
}
