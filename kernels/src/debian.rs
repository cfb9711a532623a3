//! The Debian source: fetches a kernel's packages (`[kernel.debian]` in the catalog)
//! with apt through a private configuration inside the cache (its own sources list,
//! state and package cache; the system's apt sources and state are never read or
//! touched) into the kernel folder the catalog has locked, and makes the kernel of
//! them with [`crate::layout`]. apt verifies the Release signature against Debian's
//! archive keyring and every package's checksum, so nothing unverified is booted.

use crate::cache::{self, cache_dir};
use crate::error::Unreachable;
use crate::kernel::Kernel;
use crate::layout::kernel_from_debs;
use crate::util::sha256_file;
use crate::version::version_cmp;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which Debian kernel to fetch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DebianSpec {
    /// Names the cache entry (`cache_dir()/kernels/<name>/`), e.g. "debian-6.1".
    pub name: String,
    /// A Debian suite with a main component, e.g. "bookworm".
    pub suite: String,
    /// An apt (POSIX extended) regex on package names; the newest match wins, e.g.
    /// `^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$`. With `companions`, its first
    /// group `( )` must match the kernel's release, e.g.
    /// `^linux-binary-unsigned-([0-9.]+\+deb[0-9]+-amd64)$`.
    pub package_regex: String,
    /// Packages of the same build fetched with it, `{release}` standing for what the
    /// first group of `package_regex` matched, e.g. `linux-modules-{release}`: Debian
    /// splits its 7.x kernels into linux-binary-R (the image), linux-modules-R and
    /// linux-base-R (config, modules.builtin, modules.order). Each must have the
    /// image package's version.
    #[serde(default)]
    pub companions: Vec<String>,
}

impl DebianSpec {
    /// The regex compiles (as Rust reads it: the same syntax as apt's for the
    /// patterns the catalog uses), and has a group when there are companions.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let re = regex::Regex::new(&self.package_regex)
            .with_context(|| format!("bad package regex '{}'", self.package_regex))?;
        if !self.companions.is_empty() && re.captures_len() < 2 {
            bail!(
                "package regex '{}' has companions ({}) but no group ( ) to give their {{release}}",
                self.package_regex,
                self.companions.join(", ")
            );
        }
        for c in &self.companions {
            if !c.contains("{release}") {
                bail!("companion package '{c}' does not name {{release}}: it would not be of the same build");
            }
        }
        Ok(())
    }

    /// The companions' names for the image package `package`.
    pub(crate) fn companion_names(&self, package: &str) -> anyhow::Result<Vec<String>> {
        if self.companions.is_empty() {
            return Ok(Vec::new());
        }
        let re = regex::Regex::new(&self.package_regex)?;
        let release = re
            .captures(package)
            .and_then(|c| c.get(1))
            .with_context(|| {
                format!(
                    "apt chose {package}, which '{}' does not match with its group",
                    self.package_regex
                )
            })?
            .as_str();
        Ok(self
            .companions
            .iter()
            .map(|c| c.replace("{release}", release))
            .collect())
    }
}

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Downloads and unpacks the package into `kdir`, which the caller has locked and
/// cleared of anything incomplete; the caller writes the marker.
pub(crate) fn fetch_into(
    spec: &DebianSpec,
    kdir: &Path,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Kernel> {
    let mirror = usable_mirror(spec)?;
    fetch_from(spec, kdir, &cache_dir().join("apt"), &mirror, progress)
}

/// What [`fetch_into`] would download for `spec` today, read from the suite's
/// signed index through the same private apt (`apt-get update`, `apt-cache`),
/// without downloading a package. The same errors as a fetch: a mirror that cannot
/// be reached is [`Unreachable`].
pub(crate) fn resolve(
    spec: &DebianSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Resolution> {
    let mirror = usable_mirror(spec)?;
    Ok(AptSession::open(spec, &cache_dir().join("apt"), &mirror, progress)?.finish())
}

/// The mirror to fetch from, once apt and Debian's keyring are known to be here.
fn usable_mirror(spec: &DebianSpec) -> anyhow::Result<String> {
    if which::which("apt-get").is_err() || which::which("apt-cache").is_err() {
        return Err(Unreachable(format!(
            "apt-get is not on PATH: fetching Debian kernels needs apt (a Debian or Ubuntu host); on a machine that has it, `bpfmatrix fetch {}` downloads it, or pass a kernel image with --kernel PATH",
            spec.name
        ))
        .into());
    }
    if !Path::new(KEYRING).exists() {
        return Err(Unreachable(format!(
            "{KEYRING} not found: apt needs Debian's archive keyring to verify packages (apt-get install debian-archive-keyring), or pass a kernel image with --kernel PATH"
        ))
        .into());
    }
    Ok(std::env::var("BPFMATRIX_DEBIAN_MIRROR")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned()))
}

/// [`fetch_into`] from `mirror`, with apt's private state under `apt_root/<suite>`.
fn fetch_from(
    spec: &DebianSpec,
    kdir: &Path,
    apt_root: &Path,
    mirror: &str,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Kernel> {
    let session = AptSession::open(spec, apt_root, mirror, progress)?;
    let debs = session
        .resolution
        .packages
        .iter()
        .map(|p| p.download(&session.apt, kdir, &session.host, &spec.name, progress))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let resolution = session.finish();

    let mut kernel = kernel_from_debs(kdir, &debs, &spec.name, progress)?;
    kernel.source = resolution.source(&spec.suite);
    Ok(kernel)
}

/// What a suite offers for a [`DebianSpec`], as its signed index describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolution {
    /// The newest package matching the spec's pattern, then its companions (each
    /// of its version).
    pub packages: Vec<AptPackage>,
    /// The dates of the suite's Release file when it had expired and was used
    /// anyway.
    pub stale: Option<String>,
}

impl Resolution {
    /// The kernel's source as reports and the cache marker give it: [`source_line`],
    /// then the expired Release file's dates when it was one.
    fn source(&self, suite: &str) -> String {
        let (image, companions) = self
            .packages
            .split_first()
            .expect("a resolution has its image package");
        let names: Vec<&str> = companions.iter().map(|p| p.name.as_str()).collect();
        let mut source = source_line(suite, &image.name, &image.version, &names);
        if let Some(dates) = &self.stale {
            source += &format!(" (from an expired Release file: {dates})");
        }
        source
    }
}

/// "debian SUITE PACKAGE VERSION", first as for a kernel in one package, then
/// " (with A and B of that version)" when companions came with it.
pub(crate) fn source_line(
    suite: &str,
    package: &str,
    version: &str,
    companions: &[&str],
) -> String {
    let mut line = format!("debian {suite} {package} {version}");
    if !companions.is_empty() {
        line += &format!(" (with {} of that version)", companions.join(" and "));
    }
    line
}

/// Whether a cache marker's `source` is that of a fetch of exactly these packages
/// ([`source_line`]), from a current Release file or an expired one.
pub(crate) fn source_holds(
    source: &str,
    suite: &str,
    package: &str,
    version: &str,
    companions: &[&str],
) -> bool {
    let line = source_line(suite, package, version, companions);
    source == line
        || source
            .strip_prefix(&line)
            .is_some_and(|rest| rest.starts_with(" (from an expired Release file: "))
}

/// The private apt of one suite, locked against other bpfmatrix processes, updated,
/// and what it offers for one spec: the one resolution a fetch and a plan share.
struct AptSession {
    apt: PrivateApt,
    apt_dir: PathBuf,
    /// The mirror's host, for messages.
    host: String,
    resolution: Resolution,
    _lock: cache::DirLock,
}

impl AptSession {
    fn open(
        spec: &DebianSpec,
        apt_root: &Path,
        mirror: &str,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<AptSession> {
        spec.check()?;
        // Two kernels from one suite share the private apt state; apt's own lock would
        // make the second fail rather than wait.
        let apt_dir = apt_root.join(&spec.suite);
        let lock = cache::lock_dir(&apt_dir, &mut || {
            progress(&format!(
                "waiting for another bpfmatrix using apt for {}",
                spec.suite
            ))
        })?;
        let mut apt = PrivateApt::prepare(&apt_dir, mirror, &spec.suite)?;
        let host = mirror_host(mirror);

        progress(&format!("apt-get update {} ({mirror})", spec.suite));
        let update_failed = |e: anyhow::Error| {
            e.context(format!(
                "apt-get update for Debian {} from {mirror} failed: check the suite name, or set BPFMATRIX_DEBIAN_MIRROR",
                spec.suite
            ))
        };
        let mut stale = None;
        if let Err(e) = apt.run("apt-get", &["-q", "update"], None, &host, &spec.name) {
            let Some(Expired(line)) = e.chain().find_map(|c| c.downcast_ref::<Expired>()) else {
                return Err(update_failed(e));
            };
            // Unstable's Release is valid for a week and replaced several times a day;
            // a mirror that stopped updating serves one past its Valid-Until. Its
            // signature and checksums still hold, so it is used, and said to be old.
            let line = line.clone();
            apt.options
                .push(("Acquire::Check-Valid-Until".into(), "false".into()));
            apt.run("apt-get", &["-q", "update"], None, &host, &spec.name)
                .map_err(update_failed)?;
            let dates = release_dates(&apt_dir, &spec.suite).unwrap_or(line);
            progress(&format!(
                "the {} Release file of {host} has expired ({dates}): the mirror has not been updated since; using it anyway, its signature and every checksum still checked, so this is the newest kernel of that older {}",
                spec.suite, spec.suite
            ));
            stale = Some(dates);
        }

        let found = apt.run(
            "apt-cache",
            &["search", "--names-only", &spec.package_regex],
            None,
            &host,
            &spec.name,
        )?;
        let package = newest_name(found.lines().filter_map(|l| l.split_whitespace().next())).with_context(|| {
            format!(
                "no package in Debian {} matches '{}': check the suite and the pattern (apt-cache search --names-only)",
                spec.suite, spec.package_regex
            )
        })?;
        let image = AptPackage::show(&apt, &package, &host, &spec.name)?;
        let mut packages = vec![image];
        for companion in spec.companion_names(&package)? {
            let found = AptPackage::show(&apt, &companion, &host, &spec.name).with_context(|| {
                format!(
                    "Debian {} has {package} but not {companion}, which the catalog fetches with it",
                    spec.suite
                )
            })?;
            if found.version != packages[0].version {
                bail!(
                    "Debian {} has {package} {} but {companion} {}: not one build (the suite may be mid-update; try again later)",
                    spec.suite,
                    packages[0].version,
                    found.version
                );
            }
            packages.push(found);
        }
        Ok(AptSession {
            apt,
            apt_dir,
            host,
            resolution: Resolution { packages, stale },
            _lock: lock,
        })
    }

    /// The resolution, once apt's work is done; releases the suite's lock.
    fn finish(self) -> Resolution {
        // apt's binary caches (70 MB a suite) only speed up the apt calls above; the
        // next `apt-get update` builds them again in a second or two. The package
        // lists stay, so that update downloads only what changed.
        for bin in ["pkgcache.bin", "srcpkgcache.bin"] {
            let _ = std::fs::remove_file(self.apt_dir.join("cache").join(bin));
        }
        self.resolution
    }
}

/// One package as the suite's signed index describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AptPackage {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub size_mb: u64,
}

impl AptPackage {
    fn show(apt: &PrivateApt, name: &str, host: &str, kernel: &str) -> anyhow::Result<AptPackage> {
        let show = apt.run(
            "apt-cache",
            &["show", "--no-all-versions", name],
            None,
            host,
            kernel,
        )?;
        let field = |field: &str| {
            show.lines()
                .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.trim().to_owned())
        };
        Ok(AptPackage {
            name: name.to_owned(),
            version: field("Version")
                .with_context(|| format!("apt-cache show {name} gave no Version"))?,
            sha256: field("SHA256")
                .with_context(|| format!("apt-cache show {name} gave no SHA256"))?,
            size_mb: field("Size")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                / 1_000_000,
        })
    }

    /// The package in `kdir`, downloaded unless a verified copy is there already.
    fn download(
        &self,
        apt: &PrivateApt,
        kdir: &Path,
        host: &str,
        kernel: &str,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<PathBuf> {
        let AptPackage {
            name,
            version,
            sha256,
            size_mb,
        } = self;
        // A package left by an earlier, interrupted run is used only if its checksum
        // is still the one apt's signed index gives.
        let deb_name = format!("{name}_{}_amd64.deb", version.replace(':', "%3a"));
        let deb = kdir.join(&deb_name);
        if deb.exists() && sha256_file(&deb)? != *sha256 {
            progress(&format!(
                "{deb_name} in the cache is damaged: downloading it again"
            ));
            std::fs::remove_file(&deb)?;
        }
        if deb.exists() {
            return Ok(deb);
        }
        progress(&format!("downloading {name} {version} ({size_mb} MB)"));
        // apt-get download writes into the current directory; a fresh per-process
        // directory keeps a half download from ever being taken for a finished one.
        let tmp = crate::util::tmp_sibling(&kdir.join("download"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        apt.run(
            "apt-get",
            &["-q", "download", name],
            Some(&tmp),
            host,
            kernel,
        )
        .with_context(|| format!("downloading {name} {version} failed"))?;
        let got = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .with_context(|| {
                format!("apt-get download {name} left no .deb in {}", tmp.display())
            })?;
        let got_sha = sha256_file(&got)?;
        if got_sha != *sha256 {
            bail!("{deb_name} has SHA256 {got_sha}, but Debian's signed index says {sha256}");
        }
        std::fs::rename(&got, &deb)?;
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(deb)
    }
}

/// The Date and Valid-Until of the suite's Release file apt keeps, for messages.
fn release_dates(apt_dir: &Path, suite: &str) -> Option<String> {
    let lists = apt_dir.join("state/lists");
    let suffix = format!("_dists_{suite}_InRelease");
    let file = std::fs::read_dir(&lists)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))?;
    let text = std::fs::read_to_string(file.path()).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_owned())
    };
    Some(format!(
        "dated {}, valid until {}",
        field("Date")?,
        field("Valid-Until")?
    ))
}

/// The host part of a mirror URL, for messages.
fn mirror_host(mirror: &str) -> String {
    let rest = mirror.split_once("://").map_or(mirror, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Why apt could not reach the mirror, from its messages, if that is what failed:
/// a name that does not resolve, a refused or timed-out connection.
fn apt_unreachable(stderr: &str) -> Option<String> {
    const SIGNS: [&str; 8] = [
        "Temporary failure resolving",
        "Could not resolve",
        "Could not connect",
        "Connection timed out",
        "Connection failed",
        "Unable to connect",
        "Network is unreachable",
        "No route to host",
    ];
    stderr
        .lines()
        .find(|l| SIGNS.iter().any(|s| l.contains(s)))
        .map(|l| l.trim().to_owned())
}

/// apt refused a suite's Release file because its Valid-Until has passed: apt's
/// line saying so.
#[derive(Debug)]
struct Expired(String);

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Expired {}

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
            // An unreachable mirror must fail in seconds, not apt's default minutes.
            ("Acquire::http::Timeout".into(), "20".into()),
            ("Acquire::Retries".into(), "2".into()),
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
    /// carrying the end of its stderr. When apt says the mirror (`host`) cannot be
    /// reached, even in a warning (`apt-get update` only warns), the error is an
    /// [`Unreachable`] naming the kernel (`name`) for the user's next step.
    fn run(
        &self,
        tool: &str,
        args: &[&str],
        cwd: Option<&Path>,
        host: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let mut cmd = Command::new(tool);
        crate::util::die_with_parent(&mut cmd);
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
        if let Some(line) = apt_unreachable(&stderr) {
            return Err(Unreachable(format!(
                "{host} cannot be reached from this machine ({tool}: {line}); on a machine that can, `bpfmatrix fetch {name}` downloads it, or pass a kernel image with --kernel PATH"
            ))
            .into());
        }
        if let Some(line) = stderr
            .lines()
            .find(|l| l.contains(" is expired (invalid since"))
        {
            return Err(Expired(line.trim_start_matches("E: ").trim().to_owned()).into());
        }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
    }

    #[test]
    fn companions_are_named_after_the_release_the_group_matched() {
        let spec = DebianSpec {
            name: "latest".into(),
            suite: "sid".into(),
            package_regex: r"^linux-binary-unsigned-([0-9]+\.[0-9.]+\+deb[0-9]+-amd64)$".into(),
            companions: vec![
                "linux-modules-{release}".into(),
                "linux-base-{release}".into(),
            ],
        };
        spec.check().unwrap();
        assert_eq!(
            spec.companion_names("linux-binary-unsigned-7.2.13+deb14-amd64")
                .unwrap(),
            [
                "linux-modules-7.2.13+deb14-amd64",
                "linux-base-7.2.13+deb14-amd64"
            ]
        );
        // The group is what keeps the flavours (-cloud-amd64, -rt-amd64) out.
        assert!(spec
            .companion_names("linux-binary-unsigned-7.2.13+deb14-cloud-amd64")
            .is_err());
        let no_group = DebianSpec {
            package_regex: r"^linux-binary-unsigned-[0-9.]+$".into(),
            ..spec.clone()
        };
        let err = no_group.check().unwrap_err().to_string();
        assert!(err.contains("no group"), "{err}");
        let no_release = DebianSpec {
            companions: vec!["linux-modules".into()],
            ..spec.clone()
        };
        let err = no_release.check().unwrap_err().to_string();
        assert!(err.contains("does not name {release}"), "{err}");
        let plain = DebianSpec {
            companions: vec![],
            ..spec
        };
        assert!(plain
            .companion_names("linux-binary-unsigned-7.2.13+deb14-amd64")
            .unwrap()
            .is_empty());
    }

    /// The source a fetch records (and reports show) is the one it always was, and
    /// a plan's check of a marker accepts exactly it.
    #[test]
    fn the_source_names_every_package_and_an_expired_release() {
        let package = |name: &str| AptPackage {
            name: name.into(),
            version: "7.2.13-1".into(),
            sha256: "ab".repeat(32),
            size_mb: 1,
        };
        let resolution = Resolution {
            packages: vec![
                package("linux-binary-unsigned-7.2.13+deb14-amd64"),
                package("linux-modules-7.2.13+deb14-amd64"),
                package("linux-base-7.2.13+deb14-amd64"),
            ],
            stale: Some(
                "dated Fri, 30 Oct 2026 08:08:01 UTC, valid until Fri, 06 Nov 2026 08:08:01 UTC"
                    .into(),
            ),
        };
        let source = resolution.source("sid");
        assert_eq!(
            source,
            "debian sid linux-binary-unsigned-7.2.13+deb14-amd64 7.2.13-1 (with linux-modules-7.2.13+deb14-amd64 and linux-base-7.2.13+deb14-amd64 of that version) (from an expired Release file: dated Fri, 30 Oct 2026 08:08:01 UTC, valid until Fri, 06 Nov 2026 08:08:01 UTC)"
        );
        let companions = [
            "linux-modules-7.2.13+deb14-amd64",
            "linux-base-7.2.13+deb14-amd64",
        ];
        let image = "linux-binary-unsigned-7.2.13+deb14-amd64";
        assert!(source_holds(&source, "sid", image, "7.2.13-1", &companions));
        assert!(!source_holds(
            &source,
            "sid",
            image,
            "7.2.13-1",
            &companions[..1]
        ));
        assert!(!source_holds(
            &source,
            "sid",
            image,
            "7.2.12-1",
            &companions
        ));
        let one = Resolution {
            packages: vec![AptPackage {
                name: "linux-image-6.1.0-50-amd64-unsigned".into(),
                version: "6.1.176-1".into(),
                ..package("x")
            }],
            stale: None,
        };
        assert_eq!(
            one.source("bookworm"),
            "debian bookworm linux-image-6.1.0-50-amd64-unsigned 6.1.176-1"
        );
    }

    /// apt's words for a Release file past its Valid-Until become [`Expired`], which
    /// [`fetch_from`] answers by updating again without the date check.
    #[test]
    fn apt_refusing_an_expired_release_is_recognised() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let apt = PrivateApt::prepare(&dir.path().join("apt"), DEFAULT_MIRROR, "sid").unwrap();
        let tool = dir.path().join("apt-get");
        std::fs::write(
            &tool,
            "#!/bin/sh\necho 'Get:1 http://deb.debian.org/debian sid InRelease [193 kB]'\necho 'E: Release file for http://deb.debian.org/debian/dists/sid/InRelease is expired (invalid since 17d 5h 15min 15s). Updates for this repository will not be applied.' >&2\nexit 100\n",
        )
        .unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = apt
            .run(
                tool.to_str().unwrap(),
                &["update"],
                None,
                "deb.debian.org",
                "latest",
            )
            .unwrap_err();
        let Some(Expired(line)) = err.downcast_ref::<Expired>() else {
            panic!("{err:#}")
        };
        assert!(
            line.starts_with("Release file for http://deb.debian.org/debian/dists/sid/InRelease is expired (invalid since 17d"),
            "{line}"
        );
    }

    #[test]
    fn an_expired_release_is_described_by_its_dates() {
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("state/lists");
        std::fs::create_dir_all(&lists).unwrap();
        assert_eq!(release_dates(dir.path(), "sid"), None);
        std::fs::write(
            lists.join("deb.debian.org_debian_dists_sid_InRelease"),
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: Debian\nSuite: unstable\nCodename: sid\nDate: Fri, 30 Oct 2026 08:08:01 UTC\nValid-Until: Fri, 06 Nov 2026 08:08:01 UTC\n",
        )
        .unwrap();
        assert_eq!(
            release_dates(dir.path(), "sid").as_deref(),
            Some("dated Fri, 30 Oct 2026 08:08:01 UTC, valid until Fri, 06 Nov 2026 08:08:01 UTC")
        );
        assert_eq!(release_dates(dir.path(), "trixie"), None);
    }

    /// Real: apt against a host name that never resolves (.invalid is reserved).
    /// Needs apt-get on PATH: without it this fails, "cannot run apt-get".
    #[test]
    fn an_unreachable_mirror_is_unavailable_within_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DebianSpec {
            name: "6.1".into(),
            suite: "bookworm".into(),
            package_regex: r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$".into(),
            companions: vec![],
        };
        let kdir = dir.path().join("k");
        std::fs::create_dir_all(&kdir).unwrap();
        let start = std::time::Instant::now();
        let err = fetch_from(
            &spec,
            &kdir,
            &dir.path().join("apt"),
            "http://deb.debian.org.invalid/debian",
            &mut |_| {},
        )
        .unwrap_err();
        let elapsed = start.elapsed();
        let Some(Unreachable(why)) = err.downcast_ref::<Unreachable>() else {
            panic!("{err:#}")
        };
        assert!(
            why.starts_with(
                "deb.debian.org.invalid cannot be reached from this machine (apt-get: "
            ),
            "{why}"
        );
        assert!(why.contains("`bpfmatrix fetch 6.1`"), "{why}");
        assert!(elapsed.as_secs() < 20, "{elapsed:?}");
        eprintln!("{elapsed:?}: {why}");
    }

    #[test]
    fn unreachable_mirrors_are_recognised_in_apt_messages() {
        let update = "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'\nW: Some index files failed to download. They have been ignored, or old ones used instead.\n";
        assert!(apt_unreachable(update)
            .unwrap()
            .contains("Temporary failure resolving 'deb.debian.org'"));
        assert_eq!(apt_unreachable("E: Unable to locate package foo\n"), None);
        assert_eq!(
            mirror_host("http://deb.debian.org/debian"),
            "deb.debian.org"
        );
    }
}
