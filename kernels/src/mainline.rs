//! The Ubuntu mainline source: fetches a build of <https://kernel.ubuntu.com/mainline/>
//! (`[kernel.ubuntu_mainline]` in the catalog) into the kernel folder the catalog has
//! locked, and makes the kernel of its packages with [`crate::layout`]. The site is
//! read as it really lays builds out:
//!
//! - Where the files are. Folders built before June 2020 (v5.6.17 and v5.7-rc7 were
//!   the last, and the 5.4.y of that time, e.g. v5.4.42) hold every architecture's
//!   files at the top, with one CHECKSUMS. Later ones (v5.6.18+, v5.7+, and the late
//!   5.4.y, e.g. v5.4.49, v5.4.220) keep them in per-architecture folders:
//!   `amd64/…deb` and `amd64/CHECKSUMS`; their page links to `amd64/` and lists the
//!   amd64 files as `amd64/<file>`. The layout is read from the page, not guessed
//!   from the version: bkw777/mainline decides by version (last flat: 5.6.17 /
//!   5.7-rc7) and so would look for v5.4.220's files at the top, where they are not;
//!   pimlie/ubuntu-mainline-kernel.sh reads the page's links, as this does.
//! - Which packages. The 4.x builds have one image package holding the kernel and
//!   its modules (v4.16: `linux-image-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb`,
//!   no `-unsigned`, no `linux-modules`); later ones split them into
//!   `linux-image-unsigned-*` (boot/vmlinuz-*) and `linux-modules-*`
//!   (`lib/modules/<release>/`). Public scripts disagree on v5.4's image name: most
//!   fetch `linux-image-unsigned-5.4.0-050400-generic_…`, one (polycube's docs) names
//!   `linux-image-5.4.0-050400-generic_…`; the catalog's pattern takes either.
//! - The ABI number packs the version in two digits each (5.4.0 → 050400), so from
//!   patch level 100 on it has seven digits (5.4.220 → 0504220).
//! - CHECKSUMS has a `# Checksums-Sha1:` section, then a `# Checksums-Sha256:` one
//!   listing the same files; only the second is used.
//! - A folder can hold more than one build (v5.16 had …202201091830 and
//!   …202201092355): the image and modules are taken from the newest build that has
//!   every package wanted, never mixed.
//!
//! Downloads go through `curl` with connect and total timeouts, to temporary names,
//! and are renamed into place only once their SHA256 matches CHECKSUMS (and the
//! catalog's pin when there is one).

use crate::error::Unreachable;
use crate::kernel::Kernel;
use crate::layout::kernel_from_debs;
use crate::util::sha256_file;
use crate::version::version_cmp;
use anyhow::{bail, Context};
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Which mainline build to fetch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MainlineSpec {
    /// The build's folder, e.g. `https://kernel.ubuntu.com/mainline/v5.4/`.
    pub folder: String,
    /// A regex on the amd64 file names in the folder picking the image package.
    pub image: String,
    /// The same for the modules package, when the build has one.
    #[serde(default)]
    pub modules: Option<String>,
    /// Expected SHA256 of the image package, checked as well as CHECKSUMS.
    #[serde(default)]
    pub image_sha256: Option<String>,
    #[serde(default)]
    pub modules_sha256: Option<String>,
}

impl MainlineSpec {
    /// The regexes compile and the pins look like SHA256 sums.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        Regex::new(&self.image).context("bad image regex")?;
        if let Some(m) = &self.modules {
            Regex::new(m).context("bad modules regex")?;
        }
        for pin in [&self.image_sha256, &self.modules_sha256]
            .into_iter()
            .flatten()
        {
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("'{pin}' is not a SHA256 sum (64 hex digits)");
            }
        }
        if !self.folder.ends_with('/') {
            bail!("folder '{}' must end with /", self.folder);
        }
        Ok(())
    }
}

/// How files are fetched; curl in real use, a fake in tests.
pub(crate) trait Transport {
    /// The body at `url`. A folder that does not exist (404) is [`Unreachable`]; a
    /// failure worth another try is [`Transient`].
    fn text(&mut self, url: &str) -> anyhow::Result<String>;
    /// Downloads `url` to `dest` (a temporary name the caller renames).
    fn download(&mut self, url: &str, dest: &Path) -> anyhow::Result<()>;
    /// Waits before another try.
    fn pause(&mut self, pause: Duration) {
        std::thread::sleep(pause);
    }
}

/// A failure of a page or CHECKSUMS fetch that another try may not meet: the
/// server answered 5xx, or the connection broke mid-answer.
#[derive(Debug)]
pub(crate) struct Transient {
    /// What happened this time, for the progress line.
    pub why: String,
    /// What to report when no try succeeds (the source is then unavailable).
    pub unavailable: String,
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Transient {}

/// The pauses between the tries of a page or CHECKSUMS fetch (so three tries).
/// Short, and only for [`Transient`] failures: a host name that does not resolve or
/// a connection refused or timed out is reported at once.
const RETRY_PAUSES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

pub(crate) fn fetch_into(
    name: &str,
    spec: &MainlineSpec,
    kdir: &Path,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Kernel> {
    fetch_with(&mut curl_for(name, spec), name, spec, kdir, progress)
}

/// What [`fetch_into`] would download for `spec` today, read from the build's
/// page(s) and CHECKSUMS with curl, without downloading a package. The same errors
/// as a fetch: a host that cannot be reached is [`Unreachable`].
pub(crate) fn resolve(
    name: &str,
    spec: &MainlineSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Resolution> {
    resolve_with(&mut curl_for(name, spec), spec, progress)
}

fn curl_for(name: &str, spec: &MainlineSpec) -> Curl {
    Curl {
        host: host_of(&spec.folder),
        name: name.to_owned(),
    }
}

/// What a build folder offers for a [`MainlineSpec`]: the packages of one build and
/// the SHA256 each must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolution {
    /// The folder holding the amd64 packages and their CHECKSUMS (ends with `/`):
    /// the catalog's folder, or its `amd64/`.
    pub folder: String,
    /// The SHA256 of that CHECKSUMS file's text (ASCII: its bytes).
    pub checksums_sha256: String,
    /// File name and SHA256 (from CHECKSUMS, agreeing with the catalog's pins): the
    /// image package, then the modules package when the build has one.
    pub files: Vec<(String, String)>,
}

/// [`resolve`] through `transport`: the one resolution [`fetch_with`] downloads.
pub(crate) fn resolve_with(
    transport: &mut dyn Transport,
    spec: &MainlineSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Resolution> {
    spec.check()?;
    let image_re = Regex::new(&spec.image)?;
    let listing = list_amd64(transport, &spec.folder, &image_re, progress)?;
    let folder = &listing.folder;
    let modules_re = spec.modules.as_deref().map(Regex::new).transpose()?;
    let Some(pick) = pick_build(&listing.names, &image_re, modules_re.as_ref()) else {
        bail!(
            "no file in {folder} matches /{}/: the build may have failed for amd64 (see its BUILD.LOG), or the catalog's pattern is wrong",
            spec.image
        );
    };
    if pick.builds > 1 {
        progress(&format!(
            "{folder} holds {} builds: using {}, image and modules alike",
            pick.builds, pick.build
        ));
    }
    let mut wanted = vec![(pick.image, spec.image_sha256.clone())];
    match (pick.modules, &spec.modules) {
        (Some(file), _) => wanted.push((file, spec.modules_sha256.clone())),
        (None, Some(modules)) => progress(&format!(
            "no modules package in {folder} (/{modules}/): using the modules in the image package"
        )),
        (None, None) => {}
    }
    let checksums_url = format!("{folder}CHECKSUMS");
    let text = text_retrying(transport, &checksums_url, progress)
        .with_context(|| format!("cannot read {checksums_url}"))?;
    let checksums = parse_checksums(&text);
    let mut files = Vec::new();
    for (file, pin) in wanted {
        let expected = checksums.get(&file).with_context(|| {
            format!("{checksums_url} lists no SHA256 for {file}: refusing to use it unverified")
        })?;
        if let Some(pin) = &pin {
            if !pin.eq_ignore_ascii_case(expected) {
                bail!("{checksums_url} gives {file} the SHA256 {expected}, but the catalog pins {pin}");
            }
        }
        files.push((file, expected.clone()));
    }
    Ok(Resolution {
        folder: listing.folder,
        checksums_sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
        files,
    })
}

/// Downloads what [`resolve_with`] gives, each file checked against its SHA256, and
/// makes the kernel of it.
pub(crate) fn fetch_with(
    transport: &mut dyn Transport,
    name: &str,
    spec: &MainlineSpec,
    kdir: &Path,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Kernel> {
    let Resolution { folder, files, .. } = resolve_with(transport, spec, progress)?;
    let checksums_url = format!("{folder}CHECKSUMS");
    let mut debs = Vec::new();
    for (file, expected) in &files {
        let deb = kdir.join(file);
        // A package left by an interrupted run is used only if it still verifies.
        if deb.exists() && !sha256_file(&deb)?.eq_ignore_ascii_case(expected) {
            std::fs::remove_file(&deb)?;
        }
        if !deb.exists() {
            progress(&format!("downloading {folder}{file}"));
            let tmp = crate::util::tmp_sibling(&deb);
            let result = transport
                .download(&format!("{folder}{file}"), &tmp)
                .and_then(|()| {
                    let got = sha256_file(&tmp)?;
                    if !got.eq_ignore_ascii_case(expected) {
                        bail!(
                            "{file} from {folder} has SHA256 {got}, but {checksums_url} says {expected}: the download is corrupt or was tampered with"
                        );
                    }
                    Ok(())
                });
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &deb)?;
        }
        debs.push(deb);
    }
    let mut kernel = kernel_from_debs(kdir, &debs, name, progress)?;
    let files: Vec<&str> = files.iter().map(|(file, _)| file.as_str()).collect();
    if kernel.modules_dir.is_none() && spec.modules.is_some() {
        bail!(
            "{} hold no lib/modules/{}: neither an image package with modules nor a modules package matching /{}/ was found in {folder}",
            files.join(" + "),
            kernel.release.as_deref().unwrap_or("<release>"),
            spec.modules.as_deref().unwrap_or_default()
        );
    }
    kernel.source = source_line(&folder, &files);
    Ok(kernel)
}

/// A mainline kernel's source as reports and the cache marker give it:
/// "ubuntu mainline FOLDER IMAGE + MODULES".
pub(crate) fn source_line(folder: &str, files: &[&str]) -> String {
    format!("ubuntu mainline {folder} {}", files.join(" + "))
}

/// `transport.text(url)`, tried again after each of [`RETRY_PAUSES`] while it fails
/// with a [`Transient`] error; then the source is [`Unreachable`].
fn text_retrying(
    transport: &mut dyn Transport,
    url: &str,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<String> {
    let mut pauses = RETRY_PAUSES.iter();
    loop {
        let err = match transport.text(url) {
            Ok(text) => return Ok(text),
            Err(e) => e,
        };
        let Some(transient) = err.downcast_ref::<Transient>() else {
            return Err(err);
        };
        match pauses.next() {
            Some(&pause) => {
                progress(&format!(
                    "{url}: {}; trying again in {} s",
                    transient.why,
                    pause.as_secs()
                ));
                transport.pause(pause);
            }
            None => {
                return Err(Unreachable(format!(
                    "{} ({} tries)",
                    transient.unavailable,
                    RETRY_PAUSES.len() + 1
                ))
                .into())
            }
        }
    }
}

/// Where a folder's amd64 files are and what they are called.
struct Listing {
    /// The folder holding the amd64 packages and their CHECKSUMS (ends with `/`).
    folder: String,
    /// The file names in it.
    names: Vec<String>,
}

/// Reads the build's page and finds its amd64 files: at the top (older builds), or
/// under `amd64/`, from the links the page gives to `amd64/<file>` when one of them
/// is the `image` package, else from the `amd64/` folder's own page.
fn list_amd64(
    transport: &mut dyn Transport,
    top: &str,
    image: &Regex,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Listing> {
    progress(&format!("reading {top}"));
    let links = index_links(&text_retrying(transport, top, progress)?);
    let files_in = |links: &[String], prefix: &str| -> Vec<String> {
        links
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .map(str::to_owned)
            .collect()
    };
    if !links.iter().any(|l| l.starts_with("amd64/")) {
        return Ok(Listing {
            folder: top.to_owned(),
            names: files_in(&links, ""),
        });
    }
    let folder = format!("{top}amd64/");
    let mut names = files_in(&links, "amd64/");
    if !names.iter().any(|n| image.is_match(n)) {
        progress(&format!("reading {folder}"));
        names = files_in(
            &index_links(&text_retrying(transport, &folder, progress)?),
            "",
        );
    }
    Ok(Listing { folder, names })
}

/// What an HTML folder index links to, as paths relative to the folder
/// (percent-decoded; folders keep their trailing `/`), without sorting links, links
/// up or elsewhere (absolute paths, other hosts) or fragments.
pub(crate) fn index_links(html: &str) -> Vec<String> {
    let href = Regex::new(r#"(?i)href\s*=\s*(?:"([^"]*)"|'([^']*)')"#).unwrap();
    let mut links: Vec<String> = Vec::new();
    for cap in href.captures_iter(html) {
        let link = cap.get(1).or_else(|| cap.get(2)).unwrap().as_str();
        let link = link.trim_start_matches("./");
        if link.is_empty()
            || link.contains('?')
            || link.contains("://")
            || link.starts_with('#')
            || link.starts_with('/')
            || link.split('/').any(|seg| seg == "..")
        {
            continue;
        }
        let link = percent_decode(link);
        if !links.contains(&link) {
            links.push(link);
        }
    }
    links
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The build a package file belongs to: the Debian version in its name
/// (`name_version_arch.deb`), e.g. "4.16.0-041600.201804012230". Package names and
/// versions hold no `_`.
fn build_of(file: &str) -> Option<&str> {
    let mut parts = file.strip_suffix(".deb")?.split('_');
    let (_name, version, _arch) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some(version)
}

/// The packages of one build.
#[derive(Debug, PartialEq, Eq)]
struct Pick {
    image: String,
    modules: Option<String>,
    build: String,
    /// How many builds the folder holds images of.
    builds: usize,
}

/// The image and (when `modules` is given and the build has one) the modules
/// package of one build: the newest build that has both, or, when no build has a
/// modules package, the newest build's image, whose package then holds the modules
/// (Ubuntu's 4.x builds). Never an image of one build with the modules of another.
fn pick_build(names: &[String], image: &Regex, modules: Option<&Regex>) -> Option<Pick> {
    let mut builds: BTreeMap<&str, (Vec<&String>, Vec<&String>)> = BTreeMap::new();
    for name in names {
        let Some(build) = build_of(name) else {
            continue;
        };
        if image.is_match(name) {
            builds.entry(build).or_default().0.push(name);
        } else if modules.is_some_and(|m| m.is_match(name)) {
            builds.entry(build).or_default().1.push(name);
        }
    }
    builds.retain(|_, (images, _)| !images.is_empty());
    let mut order: Vec<&str> = builds.keys().copied().collect();
    order.sort_by(|a, b| version_cmp(b, a));
    let newest = |files: &[&String]| {
        files
            .iter()
            .max_by(|a, b| version_cmp(a, b))
            .map(|f| f.to_string())
    };
    let complete = order
        .iter()
        .find(|b| modules.is_none() || !builds[**b].1.is_empty())
        .or(order.first())?;
    let (images, module_files) = &builds[complete];
    Some(Pick {
        image: newest(images)?,
        modules: newest(module_files),
        build: complete.to_string(),
        builds: order.len(),
    })
}

/// File name → SHA256 from a mainline CHECKSUMS file: "<hash>  <file>" lines under
/// a "# Checksums-Sha1:" header, then the same files under "# Checksums-Sha256:".
/// Only lines of the SHA256 section are taken, and only 64-hex-digit sums.
pub(crate) fn parse_checksums(text: &str) -> BTreeMap<String, String> {
    let mut sums = BTreeMap::new();
    let mut in_sha256 = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('#') {
            let h = header.to_ascii_lowercase().replace(['-', ' ', '_'], "");
            // "# Checksums-Sha256:" (and "# SHA256:") open the section; any other
            // hash's header closes it. Other comment lines leave it as it is.
            if h.ends_with(':') {
                if h.contains("sha256") {
                    in_sha256 = true;
                } else if ["sha1", "sha512", "md5", "sha384", "sha224"]
                    .iter()
                    .any(|x| h.contains(x))
                {
                    in_sha256 = false;
                }
            }
            continue;
        }
        if !in_sha256 {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(hash), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        // "hash *file" marks binary mode in sha256sum's format.
        let file = file.trim_start_matches('*');
        if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            sums.insert(file.to_owned(), hash.to_ascii_lowercase());
        }
    }
    sums
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// Downloads with curl: bounded connect time, bounded total time, aborts stalled
/// transfers. Pages and CHECKSUMS are tried again by [`text_retrying`] only after
/// [`Transient`] failures, so an absent network is reported in seconds; package
/// downloads are retried twice by curl itself.
struct Curl {
    host: String,
    /// The catalog name, for the user's next step in messages.
    name: String,
}

impl Curl {
    fn run(&self, url: &str, out: Option<&Path>, index: bool) -> anyhow::Result<Vec<u8>> {
        if which::which("curl").is_err() {
            return Err(Unreachable(format!(
                "curl is not on PATH, and bpfmatrix downloads {}'s kernels with it (apt-get install curl); on a machine that has it, `bpfmatrix fetch {}` downloads it, or pass a kernel image with --kernel PATH",
                self.host, self.name
            ))
            .into());
        }
        let mut cmd = Command::new("curl");
        crate::util::die_with_parent(&mut cmd);
        cmd.args([
            "--fail",
            "--location",
            "--silent",
            "--show-error",
            "--connect-timeout",
            "10",
            "--speed-limit",
            "1024",
            "--speed-time",
            "60",
        ]);
        if index {
            cmd.args(["--max-time", "60"]);
        } else {
            cmd.args(["--max-time", "1800", "--retry", "2"]);
        }
        if let Some(out) = out {
            cmd.arg("--output").arg(out);
        }
        cmd.arg(url).env("LC_ALL", "C");
        let result = cmd.output().context("cannot run curl")?;
        if result.status.success() {
            return Ok(result.stdout);
        }
        let stderr = String::from_utf8_lossy(&result.stderr);
        let message = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        Err(curl_error(
            result.status.code(),
            &message,
            url,
            &self.host,
            &self.name,
            index,
        ))
    }
}

/// Sorts a curl failure: the network or the folder is not there (→ [`Unreachable`]),
/// a page fetch that may work next time (→ [`Transient`]), or something that must
/// be reported as a failure.
fn curl_error(
    code: Option<i32>,
    message: &str,
    url: &str,
    host: &str,
    name: &str,
    index: bool,
) -> anyhow::Error {
    // "curl: (6) Could not resolve host: x" → "Could not resolve host: x"
    let detail = message
        .strip_prefix("curl: ")
        .map(|m| m.split_once(") ").map_or(m, |(_, rest)| rest))
        .unwrap_or(message);
    let next = format!(
        "on a machine that can, `bpfmatrix fetch {name}` downloads it, or pass a kernel image with --kernel PATH"
    );
    let unreachable = |why: String| anyhow::Error::from(Unreachable(why));
    let server_error = ["500", "502", "503", "504"]
        .iter()
        .any(|c| detail.contains(c));
    match code {
        // 22 with 5xx: the server is there but failing; 52: empty reply; 56:
        // connection reset; 18: cut short; 16, 92: HTTP/2 framing. Another try may
        // get through (downloads have curl's own --retry).
        Some(22) if index && server_error => Transient {
            why: format!("curl: {detail}"),
            unavailable: format!("{host} does not answer properly (curl: {detail}); {next}"),
        }
        .into(),
        Some(16 | 18 | 52 | 56 | 92) if index => Transient {
            why: format!("curl: {detail}"),
            unavailable: format!(
                "{host} cannot be reached from this machine (curl: {detail}); {next}"
            ),
        }
        .into(),
        // 5/6: proxy or host name does not resolve; 7: connection refused or no
        // route; 28: timed out; 35: TLS handshake cut (a filtering firewall); 56: a
        // download's connection reset. Trying again would only repeat them, slowly.
        Some(5 | 6 | 7 | 28 | 35 | 56) => unreachable(format!(
            "{host} cannot be reached from this machine (curl: {detail}); {next}"
        )),
        Some(22) if index && ["404", "403", "410"].iter().any(|c| detail.contains(c)) => {
            unreachable(format!(
                "{url} is not there ({detail}): {host} no longer offers this build; {next} from a mirror, or pass a kernel image with --kernel PATH"
            ))
        }
        _ => anyhow::anyhow!("downloading {url} failed (curl exit {code:?}: {detail})"),
    }
}

impl Transport for Curl {
    fn text(&mut self, url: &str) -> anyhow::Result<String> {
        let body = self.run(url, None, true)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn download(&mut self, url: &str, dest: &Path) -> anyhow::Result<()> {
        self.run(url, Some(dest), false).map(drop)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bzimage::tests::{synthetic_bzimage_of, synthetic_vmlinux, xz};
    use crate::deb::tests::synthetic_deb;
    use crate::kernel::BootProtocol;

    // The pages below are shaped after what public parsers of kernel.ubuntu.com
    // expect (pimlie/ubuntu-mainline-kernel.sh, bkw777/mainline, cappelikan/mainline)
    // and the file names after scripts that download from it: Apache folder indexes
    // whose older pages list every architecture's files at the top, and whose newer
    // pages add the build report (HEADER.html) linking `amd64/<file>`, plus folder
    // rows for `amd64/` and the other architectures.

    /// v4.16: flat, one image package per flavour (no -unsigned, no modules package).
    const V4_16: &str = r#"<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Index of /mainline/v4.16</title></head><body>
<h1>Index of /mainline/v4.16</h1>
Build for amd64 succeeded (see BUILD.LOG.amd64):<br>
&nbsp;&nbsp;<a href="linux-headers-4.16.0-041600_4.16.0-041600.201804012230_all.deb">linux-headers-4.16.0-041600_4.16.0-041600.201804012230_all.deb</a><br>
&nbsp;&nbsp;<a href="linux-headers-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb">linux-headers-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb</a><br>
&nbsp;&nbsp;<a href="linux-image-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb">linux-image-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb</a><br>
<br>
<table>
<tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="/mainline/">Parent Directory</a></td></tr>
<tr><td><a href="BUILD.LOG.amd64">BUILD.LOG.amd64</a></td><td align="right">2018-04-02 03:33  </td></tr>
<tr><td><a href="CHECKSUMS">CHECKSUMS</a></td></tr>
<tr><td><a href="CHECKSUMS.gpg">CHECKSUMS.gpg</a></td></tr>
<tr><td><a href="linux-headers-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb">linux-headers-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb</a></td></tr>
<tr><td><a href="linux-headers-4.16.0-041600-generic_4.16.0-041600.201804012230_i386.deb">linux-headers-4.16.0-041600-generic_4.16.0-041600.201804012230_i386.deb</a></td></tr>
<tr><td><a href="linux-headers-4.16.0-041600_4.16.0-041600.201804012230_all.deb">linux-headers-4.16.0-041600_4.16.0-041600.201804012230_all.deb</a></td></tr>
<tr><td><a href="linux-image-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb">linux-image-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb</a></td></tr>
<tr><td><a href="linux-image-4.16.0-041600-generic_4.16.0-041600.201804012230_i386.deb">linux-image-4.16.0-041600-generic_4.16.0-041600.201804012230_i386.deb</a></td></tr>
<tr><td><a href="linux-image-4.16.0-041600-lowlatency_4.16.0-041600.201804012230_amd64.deb">linux-image-4.16.0-041600-lowlatency_4.16.0-041600.201804012230_amd64.deb</a></td></tr>
</table></body></html>
"#;

    /// v5.4: still flat (built in November 2019), split image and modules
    /// packages, six-digit ABI.
    const V5_4: &str = r#"<html><head><title>Index of /mainline/v5.4</title></head><body>
<h1>Index of /mainline/v5.4</h1>
Build for amd64 succeeded (see BUILD.LOG.amd64):<br>
<table>
<tr><td><a href="/mainline/">Parent Directory</a></td></tr>
<tr><td><a href="BUILD.LOG.amd64">BUILD.LOG.amd64</a></td></tr>
<tr><td><a href="BUILD.LOG.arm64">BUILD.LOG.arm64</a></td></tr>
<tr><td><a href="CHECKSUMS">CHECKSUMS</a></td></tr>
<tr><td><a href="CHECKSUMS.gpg">CHECKSUMS.gpg</a></td></tr>
<tr><td><a href="linux-headers-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb">linux-headers-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb</a></td></tr>
<tr><td><a href="linux-headers-5.4.0-050400_5.4.0-050400.201911242031_all.deb">linux-headers-5.4.0-050400_5.4.0-050400.201911242031_all.deb</a></td></tr>
<tr><td><a href="linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb">linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb</a></td></tr>
<tr><td><a href="linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_arm64.deb">linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_arm64.deb</a></td></tr>
<tr><td><a href="linux-image-unsigned-5.4.0-050400-lowlatency_5.4.0-050400.201911242031_amd64.deb">linux-image-unsigned-5.4.0-050400-lowlatency_5.4.0-050400.201911242031_amd64.deb</a></td></tr>
<tr><td><a href="linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb">linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb</a></td></tr>
<tr><td><a href="linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_arm64.deb">linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_arm64.deb</a></td></tr>
<tr><td><a href="linux-modules-5.4.0-050400-lowlatency_5.4.0-050400.201911242031_amd64.deb">linux-modules-5.4.0-050400-lowlatency_5.4.0-050400.201911242031_amd64.deb</a></td></tr>
</table></body></html>
"#;

    /// v5.4.220: a late 5.4.y (October 2022) under amd64/, seven-digit ABI. Its
    /// page links the amd64 files, so no second page is read.
    const V5_4_220: &str = r#"<html><head><title>Index of /mainline/v5.4.220</title></head><body>
<h1>Index of /mainline/v5.4.220</h1>
Test amd64/build succeeded (rc=0, on=amd64, time=0:12:32, log=amd64/log)<br>
&nbsp;&nbsp;<a href="amd64/linux-headers-5.4.220-0504220-generic_5.4.220-0504220.202210261259_amd64.deb">amd64/linux-headers-5.4.220-0504220-generic_5.4.220-0504220.202210261259_amd64.deb</a><br>
&nbsp;&nbsp;<a href="amd64/linux-headers-5.4.220-0504220_5.4.220-0504220.202210261259_all.deb">amd64/linux-headers-5.4.220-0504220_5.4.220-0504220.202210261259_all.deb</a><br>
&nbsp;&nbsp;<a href="amd64/linux-image-unsigned-5.4.220-0504220-generic_5.4.220-0504220.202210261259_amd64.deb">amd64/linux-image-unsigned-5.4.220-0504220-generic_5.4.220-0504220.202210261259_amd64.deb</a><br>
&nbsp;&nbsp;<a href="amd64/linux-modules-5.4.220-0504220-generic_5.4.220-0504220.202210261259_amd64.deb">amd64/linux-modules-5.4.220-0504220-generic_5.4.220-0504220.202210261259_amd64.deb</a><br>
<br>
Test arm64/build succeeded (rc=0, on=arm64, time=0:14:02, log=arm64/log)<br>
&nbsp;&nbsp;<a href="arm64/linux-image-unsigned-5.4.220-0504220-generic_5.4.220-0504220.202210261259_arm64.deb">arm64/linux-image-unsigned-5.4.220-0504220-generic_5.4.220-0504220.202210261259_arm64.deb</a><br>
<br>
<table>
<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="/mainline/">Parent Directory</a></td></tr>
<tr><td valign="top"><img src="/icons/folder.gif" alt="[DIR]"></td><td><a href="amd64/">amd64/</a></td><td align="right">2022-10-26 15:05  </td><td align="right">  - </td><td>&nbsp;</td></tr>
<tr><td valign="top"><img src="/icons/folder.gif" alt="[DIR]"></td><td><a href="arm64/">arm64/</a></td><td align="right">2022-10-26 15:29  </td><td align="right">  - </td><td>&nbsp;</td></tr>
<tr><td valign="top"><img src="/icons/text.gif" alt="[TXT]"></td><td><a href="HEADER.html">HEADER.html</a></td></tr>
</table></body></html>
"#;

    /// v6.13's page when it names only the per-architecture folders: the files
    /// come from the amd64/ folder's own page, [`V6_13_AMD64`].
    const V6_13: &str = r#"<html><head><title>Index of /mainline/v6.13</title></head><body>
<h1>Index of /mainline/v6.13</h1><pre>
<a href="../">../</a>
<a href="amd64/">amd64/</a>                     2025-01-30 23:40    -
<a href="arm64/">arm64/</a>                     2025-01-31 00:12    -
<a href='HEADER.html'>HEADER.html</a>
</pre></body></html>"#;

    const V6_13_AMD64: &str = r#"<html><head><title>Index of /mainline/v6.13/amd64</title></head><body><pre>
<a href="../">../</a>
<a href="CHECKSUMS">CHECKSUMS</a>
<a href="CHECKSUMS.gpg">CHECKSUMS.gpg</a>
<a href="linux-headers-6.13.0-061300-generic_6.13.0-061300.202501302155_amd64.deb">linux-headers-6.13.0-061300-generic_6.13.0-061300.202501302155_amd64.deb</a>
<a href="linux-headers-6.13.0-061300_6.13.0-061300.202501302155_all.deb">linux-headers-6.13.0-061300_6.13.0-061300.202501302155_all.deb</a>
<a href="linux-image-unsigned-6.13.0-061300-generic_6.13.0-061300.202501302155_amd64.deb">linux-image-unsigned-6.13.0-061300-generic_6.13.0-061300.202501302155_amd64.deb</a>
<a href="linux-modules-6.13.0-061300-generic_6.13.0-061300.202501302155_amd64.deb">linux-modules-6.13.0-061300-generic_6.13.0-061300.202501302155_amd64.deb</a>
<a href="log">log</a>
<a href="status">status</a>
</pre></body></html>"#;

    /// v5.16's amd64 files: two builds, the second a rebuild three hours later.
    const V5_16_TWO_BUILDS: [&str; 6] = [
        "linux-image-unsigned-5.16.0-051600-generic_5.16.0-051600.202201091830_amd64.deb",
        "linux-image-unsigned-5.16.0-051600-generic_5.16.0-051600.202201092355_amd64.deb",
        "linux-modules-5.16.0-051600-generic_5.16.0-051600.202201091830_amd64.deb",
        "linux-modules-5.16.0-051600-generic_5.16.0-051600.202201092355_amd64.deb",
        "linux-headers-5.16.0-051600-generic_5.16.0-051600.202201091830_amd64.deb",
        "linux-headers-5.16.0-051600_5.16.0-051600.202201092355_all.deb",
    ];

    /// A CHECKSUMS file as the site writes them (v6.13's, with other sums).
    fn checksums(files: &[(&str, &[u8])]) -> String {
        let mut text = "# Checksums, check with the command below:\n#     shasum -c CHECKSUMS\n#\n# Checksums-Sha1:\n".to_owned();
        for (file, body) in files {
            text += &format!("{}  {file}\n", sha1_like(body));
        }
        text += "#\n# Checksums-Sha256:\n";
        for (file, body) in files {
            text += &format!("{}  {file}\n", sha(body));
        }
        text
    }

    /// 40 hex digits standing in for a SHA1 (the SHA1 section is never used).
    fn sha1_like(body: &[u8]) -> String {
        sha(body)[..40].to_owned()
    }

    /// The catalog's entry for `name` ("4.16" or "5.4"), written out here so that
    /// this source's tests need no catalog; the catalog's tests check that it says
    /// the same.
    pub(crate) fn entry(name: &str) -> MainlineSpec {
        spec_for(
            &format!("https://kernel.ubuntu.com/mainline/v{name}/"),
            &format!("{name}.0"),
        )
    }

    /// A spec like the catalog's, for another folder and version.
    fn spec_for(folder: &str, version: &str) -> MainlineSpec {
        let v = version.replace('.', r"\.");
        MainlineSpec {
            folder: folder.to_owned(),
            image: format!(r"^linux-image-(unsigned-)?{v}-[0-9]+-generic_[^/_]+_amd64\.deb$"),
            modules: Some(format!(
                r"^linux-modules-{v}-[0-9]+-generic_[^/_]+_amd64\.deb$"
            )),
            image_sha256: None,
            modules_sha256: None,
        }
    }

    fn names(links: &[String]) -> Vec<String> {
        links.iter().filter(|l| !l.contains('/')).cloned().collect()
    }

    #[test]
    fn the_catalog_patterns_pick_one_builds_generic_amd64_packages() {
        let links = index_links(V4_16);
        assert!(links.contains(&"CHECKSUMS".to_owned()), "{links:?}");
        assert!(!links
            .iter()
            .any(|n| n.contains('?') || n.contains("mainline")));
        let spec = entry("4.16");
        let modules = Regex::new(spec.modules.as_ref().unwrap()).unwrap();
        let pick = pick_build(
            &names(&links),
            &Regex::new(&spec.image).unwrap(),
            Some(&modules),
        )
        .unwrap();
        assert_eq!(
            pick,
            Pick {
                image: "linux-image-4.16.0-041600-generic_4.16.0-041600.201804012230_amd64.deb"
                    .into(),
                // The image package holds the modules.
                modules: None,
                build: "4.16.0-041600.201804012230".into(),
                builds: 1,
            }
        );

        let spec = entry("5.4");
        let modules = Regex::new(spec.modules.as_ref().unwrap()).unwrap();
        let pick = pick_build(
            &names(&index_links(V5_4)),
            &Regex::new(&spec.image).unwrap(),
            Some(&modules),
        )
        .unwrap();
        assert_eq!(
            pick.image,
            "linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb"
        );
        assert_eq!(
            pick.modules.as_deref(),
            Some("linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb")
        );

        let spec = spec_for("https://kernel.ubuntu.com/mainline/v5.4.220/", "5.4.220");
        let late: Vec<String> = index_links(V5_4_220)
            .iter()
            .filter_map(|l| l.strip_prefix("amd64/"))
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        let pick = pick_build(
            &late,
            &Regex::new(&spec.image).unwrap(),
            Some(&Regex::new(spec.modules.as_ref().unwrap()).unwrap()),
        )
        .unwrap();
        assert_eq!(pick.build, "5.4.220-0504220.202210261259");
        assert!(pick
            .modules
            .unwrap()
            .starts_with("linux-modules-5.4.220-0504220-generic_"),);
        assert_eq!(percent_decode("a%2Bb%zz%4"), "a+b%zz%4");
    }

    #[test]
    fn links_are_relative_paths_and_folders_keep_their_slash() {
        let top = index_links(V6_13);
        assert_eq!(top, ["amd64/", "arm64/", "HEADER.html"]);
        let late = index_links(V5_4_220);
        assert!(late.contains(&"amd64/".to_owned()), "{late:?}");
        assert!(late.contains(
            &"amd64/linux-modules-5.4.220-0504220-generic_5.4.220-0504220.202210261259_amd64.deb"
                .to_owned()
        ));
        assert_eq!(
            index_links(
                r##"<a href="./x%2By.deb">x</a><a href="../y/">y</a><a href="#top">t</a>"##
            ),
            ["x+y.deb"]
        );
    }

    #[test]
    fn several_builds_give_one_builds_image_and_modules() {
        let names: Vec<String> = V5_16_TWO_BUILDS.iter().map(|s| s.to_string()).collect();
        let spec = spec_for("https://kernel.ubuntu.com/mainline/v5.16/", "5.16.0");
        let image = Regex::new(&spec.image).unwrap();
        let modules = Regex::new(spec.modules.as_ref().unwrap()).unwrap();
        let pick = pick_build(&names, &image, Some(&modules)).unwrap();
        assert_eq!(pick.build, "5.16.0-051600.202201092355");
        assert!(pick.image.contains(".202201092355_"), "{pick:?}");
        assert!(pick.modules.unwrap().contains(".202201092355_"));
        assert_eq!(pick.builds, 2);

        // The newest build lacks its modules package: the older, complete one is
        // taken whole rather than the newest image with the older modules.
        let partial: Vec<String> = names
            .iter()
            .filter(|n| *n != V5_16_TWO_BUILDS[3])
            .cloned()
            .collect();
        let pick = pick_build(&partial, &image, Some(&modules)).unwrap();
        assert_eq!(pick.build, "5.16.0-051600.202201091830");
        assert!(pick.image.contains(".202201091830_"), "{pick:?}");
        assert!(pick.modules.unwrap().contains(".202201091830_"));

        assert_eq!(
            build_of("linux-headers-5.16.0-051600_5.16.0-051600.202201092355_all.deb"),
            Some("5.16.0-051600.202201092355")
        );
        assert_eq!(build_of("CHECKSUMS"), None);
        assert_eq!(build_of("a_b.deb"), None);
        assert_eq!(
            pick_build(&names, &Regex::new("^nothing$").unwrap(), None),
            None
        );
    }

    #[test]
    fn checksums_give_the_sha256_section_only() {
        let image =
            "linux-image-unsigned-6.13.0-061300-generic_6.13.0-061300.202501302155_amd64.deb";
        let modules = "linux-modules-6.13.0-061300-generic_6.13.0-061300.202501302155_amd64.deb";
        let text = checksums(&[(image, b"image"), (modules, b"modules")]);
        assert!(
            text.contains("# Checksums-Sha1:\n") && text.contains("\n#\n# Checksums-Sha256:\n")
        );
        let sums = parse_checksums(&text);
        assert_eq!(sums.len(), 2, "{sums:?}");
        assert_eq!(sums[image], sha(b"image"));
        assert_eq!(sums[modules], sha(b"modules"));

        // A 64-digit line in the SHA1 section, or before any section, is not a SHA256.
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let text = format!(
            "{}  early.deb\n# Checksums-Sha1:\n3f786850e387550fdab836ed7e6dc881de23001b  image.deb\n{}  sha1-section-but-long.deb\n#\n# Checksums-Sha256:\n{a}  image.deb\n{b} *modules.deb\n\nnot a line\n",
            "d".repeat(64),
            "c".repeat(64)
        );
        let sums = parse_checksums(&text);
        assert_eq!(sums.len(), 2, "{sums:?}");
        assert_eq!(sums["image.deb"], a);
        assert_eq!(sums["modules.deb"], "b".repeat(64));
        // Short headers work too.
        let sums = parse_checksums(&format!(
            "# SHA1:\n{}  x.deb\n# SHA256:\n{a}  x.deb\n",
            "e".repeat(40)
        ));
        assert_eq!(sums["x.deb"], a);
        assert!(parse_checksums(&format!("{a}  x.deb\n")).is_empty());
    }

    #[test]
    fn curl_failures_are_sorted() {
        let e = curl_error(
            Some(6),
            "curl: (6) Could not resolve host: kernel.ubuntu.com",
            "https://kernel.ubuntu.com/mainline/v4.16/",
            "kernel.ubuntu.com",
            "4.16",
            true,
        );
        let Some(Unreachable(why)) = e.downcast_ref::<Unreachable>() else {
            panic!("{e}")
        };
        assert_eq!(
            why,
            "kernel.ubuntu.com cannot be reached from this machine (curl: Could not resolve host: kernel.ubuntu.com); on a machine that can, `bpfmatrix fetch 4.16` downloads it, or pass a kernel image with --kernel PATH"
        );
        let msg = "curl: (22) The requested URL returned error: 404";
        assert!(curl_error(Some(22), msg, "u", "h", "n", true)
            .downcast_ref::<Unreachable>()
            .is_some());
        // A file the index lists but the server will not give is a failure.
        assert!(curl_error(Some(22), msg, "u", "h", "n", false)
            .downcast_ref::<Unreachable>()
            .is_none());
        assert!(
            curl_error(Some(23), "curl: (23) write error", "u", "h", "n", false)
                .downcast_ref::<Unreachable>()
                .is_none()
        );
        // A page answered with 503, or cut off, is worth another try; a name that
        // does not resolve, a refused or timed-out connection are not.
        let busy = "curl: (22) The requested URL returned error: 503";
        assert!(curl_error(Some(22), busy, "u", "h", "n", true)
            .downcast_ref::<Transient>()
            .is_some());
        assert!(curl_error(
            Some(56),
            "curl: (56) Recv failure: Connection reset by peer",
            "u",
            "h",
            "n",
            true
        )
        .downcast_ref::<Transient>()
        .is_some());
        for code in [5, 6, 7, 28, 35] {
            let e = curl_error(Some(code), "curl: (x) no", "u", "h", "n", true);
            assert!(e.downcast_ref::<Unreachable>().is_some(), "{code}");
        }
        // Downloads retry inside curl; what reaches here is final.
        assert!(curl_error(Some(22), busy, "u", "h", "n", false)
            .downcast_ref::<Transient>()
            .is_none());
    }

    /// Serves files from a map; counts downloads; `flaky` pages fail with a
    /// [`Transient`] error that many times first; pauses are recorded, not slept.
    pub(crate) struct FakeServer {
        pub files: BTreeMap<String, Vec<u8>>,
        pub downloads: usize,
        pub flaky: BTreeMap<String, usize>,
        pub pauses: Vec<Duration>,
        pub pages: Vec<String>,
    }

    impl FakeServer {
        pub(crate) fn new(files: BTreeMap<String, Vec<u8>>) -> FakeServer {
            FakeServer {
                files,
                downloads: 0,
                flaky: BTreeMap::new(),
                pauses: Vec::new(),
                pages: Vec::new(),
            }
        }
    }

    impl Transport for FakeServer {
        fn text(&mut self, url: &str) -> anyhow::Result<String> {
            self.pages.push(url.to_owned());
            if let Some(left) = self.flaky.get_mut(url).filter(|n| **n > 0) {
                *left -= 1;
                return Err(Transient {
                    why: "curl: The requested URL returned error: 503".into(),
                    unavailable: "h does not answer properly (curl: 503)".into(),
                }
                .into());
            }
            match self.files.get(url) {
                Some(b) => Ok(String::from_utf8_lossy(b).into_owned()),
                None => Err(Unreachable(format!("{url}: 404")).into()),
            }
        }
        fn download(&mut self, url: &str, dest: &Path) -> anyhow::Result<()> {
            self.downloads += 1;
            let body = self.files.get(url).context("404")?;
            std::fs::write(dest, body)?;
            Ok(())
        }
        fn pause(&mut self, pause: Duration) {
            self.pauses.push(pause);
        }
    }

    fn sha(bytes: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A kernel image package's files: boot/vmlinuz-<release> (a bzImage whose
    /// vmlinux carries the PVH note, as Ubuntu's do from 4.x on: CONFIG_XEN_PVH=y)
    /// and boot/config-<release>.
    fn image_files(release: &str, config: &str) -> Vec<(String, Vec<u8>)> {
        let vmlinux = synthetic_vmlinux(Some(release), true, true);
        let bzimage = synthetic_bzimage_of(
            &format!("{release} (kernel@kathleen) #202201092355 SMP"),
            &xz(&vmlinux),
            0,
            None,
        );
        vec![
            (format!("./boot/vmlinuz-{release}"), bzimage),
            (
                format!("./boot/config-{release}"),
                config.as_bytes().to_vec(),
            ),
        ]
    }

    /// A modules tree's files for `release`: a guest module and one left out.
    fn module_files(release: &str) -> Vec<(String, Vec<u8>)> {
        vec![
            (
                format!("./lib/modules/{release}/kernel/net/sched/cls_bpf.ko"),
                b"\x7fELF not really".to_vec(),
            ),
            (
                format!("./lib/modules/{release}/kernel/drivers/big.ko"),
                vec![0u8; 1000],
            ),
            (
                format!("./lib/modules/{release}/modules.builtin"),
                b"kernel/net/sched/sch_ingress.ko\n".to_vec(),
            ),
        ]
    }

    fn deb(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
        synthetic_deb(&refs)
    }

    /// A fake folder: its page(s), CHECKSUMS and packages. `files_at` is where the
    /// packages and CHECKSUMS live (the folder, or its amd64/); `pages` are the
    /// folder pages by URL; `packages` are file name → contents.
    fn fake_folder(
        files_at: &str,
        pages: &[(&str, &str)],
        packages: Vec<(String, Vec<u8>)>,
    ) -> FakeServer {
        let mut files = BTreeMap::new();
        for (url, html) in pages {
            files.insert(url.to_string(), html.as_bytes().to_vec());
        }
        let listed: Vec<(&str, &[u8])> = packages
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        files.insert(
            format!("{files_at}CHECKSUMS"),
            checksums(&listed).into_bytes(),
        );
        for (name, body) in packages {
            files.insert(format!("{files_at}{name}"), body);
        }
        FakeServer::new(files)
    }

    const XEN_PVH_CONFIG: &str =
        "# Linux/x86 4.16.0 Kernel Configuration\nCONFIG_XEN=y\nCONFIG_XEN_PVH=y\n";
    const PVH_CONFIG: &str =
        "# Linux/x86 5.4.0 Kernel Configuration\nCONFIG_PVH=y\nCONFIG_XEN_PVH=y\n";

    /// The flat v5.4 folder of [`V5_4`]: an image and a modules package (the
    /// modules' CHECKSUMS line wrong if `corrupt_modules`), with the catalog's spec.
    pub(crate) fn server(corrupt_modules: bool) -> (FakeServer, MainlineSpec) {
        let release = "5.4.0-050400-generic";
        let base = "https://kernel.ubuntu.com/mainline/v5.4/";
        let image_name =
            format!("linux-image-unsigned-{release}_5.4.0-050400.201911242031_amd64.deb");
        let modules_name = format!("linux-modules-{release}_5.4.0-050400.201911242031_amd64.deb");
        let mut server = fake_folder(
            base,
            &[(base, V5_4)],
            vec![
                (image_name, deb(&image_files(release, PVH_CONFIG))),
                (modules_name.clone(), deb(&module_files(release))),
            ],
        );
        if corrupt_modules {
            let key = format!("{base}CHECKSUMS");
            let text = String::from_utf8(server.files[&key].clone()).unwrap();
            let good = sha(&server.files[&format!("{base}{modules_name}")]);
            server
                .files
                .insert(key, text.replace(&good, &"0".repeat(64)).into_bytes());
        }
        (server, entry("5.4"))
    }

    fn fetch(server: &mut FakeServer, spec: &MainlineSpec, dir: &Path) -> (Kernel, Vec<String>) {
        let mut lines = Vec::new();
        let kernel = fetch_with(server, "k", spec, dir, &mut |l| lines.push(l.to_owned()))
            .unwrap_or_else(|e| panic!("{e:#}\n{lines:#?}"));
        (kernel, lines)
    }

    #[test]
    fn a_flat_5_4_folder_gives_a_pvh_kernel_with_only_the_net_modules() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, spec) = server(false);
        let (kernel, lines) = fetch(&mut server, &spec, dir.path());
        assert_eq!(server.downloads, 2);
        assert_eq!(kernel.release.as_deref(), Some("5.4.0-050400-generic"));
        let modules = kernel.modules_dir.clone().unwrap();
        assert!(modules.join("kernel/net/sched/cls_bpf.ko").is_file());
        assert!(!modules.join("kernel/drivers").exists());
        assert_eq!(
            kernel.source,
            "ubuntu mainline https://kernel.ubuntu.com/mainline/v5.4/ linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb + linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb"
        );
        assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
        assert_eq!(kernel.boot_image, dir.path().join("vmlinux"));
        let config = kernel.config.clone().unwrap();
        assert_eq!(
            config.path,
            kernel.image.with_file_name("config-5.4.0-050400-generic")
        );
        assert_eq!(
            config.describe(),
            "boot/config-5.4.0-050400-generic of the package"
        );
        assert!(lines.iter().any(|l| l.contains("downloading")), "{lines:?}");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("booting the vmlinux through PVH: ")),
            "{lines:?}"
        );
        assert_eq!(
            server.pages,
            [
                "https://kernel.ubuntu.com/mainline/v5.4/",
                "https://kernel.ubuntu.com/mainline/v5.4/CHECKSUMS"
            ]
        );
        let modules =
            crate::modules::resolve_modules(&kernel, &["sch_ingress", "cls_bpf"]).unwrap();
        assert_eq!(modules.len(), 1, "sch_ingress is built in: {modules:?}");
    }

    #[test]
    fn a_flat_4_16_folder_gives_one_package_with_modules_booted_as_bzimage() {
        let dir = tempfile::tempdir().unwrap();
        let release = "4.16.0-041600-generic";
        let base = "https://kernel.ubuntu.com/mainline/v4.16/";
        let image_name = format!("linux-image-{release}_4.16.0-041600.201804012230_amd64.deb");
        let mut files = image_files(release, XEN_PVH_CONFIG);
        files.extend(module_files(release));
        let mut server = fake_folder(
            base,
            &[(base, V4_16)],
            vec![(image_name.clone(), deb(&files))],
        );
        let (kernel, lines) = fetch(&mut server, &entry("4.16"), dir.path());
        assert_eq!(server.downloads, 1);
        assert_eq!(kernel.release.as_deref(), Some(release));
        assert!(kernel
            .modules_dir
            .as_ref()
            .unwrap()
            .join("kernel/net/sched/cls_bpf.ko")
            .is_file());
        // Its vmlinux has the PVH note, but 4.16's is CONFIG_XEN_PVH's.
        assert_eq!(kernel.boot_protocol, BootProtocol::BzImage);
        assert_eq!(kernel.boot_image, kernel.image);
        assert!(!dir.path().join("vmlinux").exists(), "nothing extracted");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("booting the bzImage: ") && l.contains("CONFIG_XEN_PVH")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("using the modules in the image package")),
            "{lines:?}"
        );
        assert!(
            kernel.source.ends_with(&format!("v4.16/ {image_name}")),
            "{}",
            kernel.source
        );
    }

    #[test]
    fn an_image_package_without_modules_and_no_modules_package_fails() {
        let dir = tempfile::tempdir().unwrap();
        let release = "4.16.0-041600-generic";
        let base = "https://kernel.ubuntu.com/mainline/v4.16/";
        let image_name = format!("linux-image-{release}_4.16.0-041600.201804012230_amd64.deb");
        let mut server = fake_folder(
            base,
            &[(base, V4_16)],
            vec![(image_name, deb(&image_files(release, XEN_PVH_CONFIG)))],
        );
        let err =
            fetch_with(&mut server, "4.16", &entry("4.16"), dir.path(), &mut |_| {}).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("hold no lib/modules/4.16.0-041600-generic"),
            "{msg}"
        );
    }

    #[test]
    fn a_late_5_4_y_folder_keeps_its_files_under_amd64() {
        let dir = tempfile::tempdir().unwrap();
        let release = "5.4.220-0504220-generic";
        let base = "https://kernel.ubuntu.com/mainline/v5.4.220/";
        let at = format!("{base}amd64/");
        let build = "5.4.220-0504220.202210261259";
        let mut server = fake_folder(
            &at,
            &[(base, V5_4_220)],
            vec![
                (
                    format!("linux-image-unsigned-{release}_{build}_amd64.deb"),
                    deb(&image_files(release, PVH_CONFIG)),
                ),
                (
                    format!("linux-modules-{release}_{build}_amd64.deb"),
                    deb(&module_files(release)),
                ),
            ],
        );
        let (kernel, _) = fetch(&mut server, &spec_for(base, "5.4.220"), dir.path());
        assert_eq!(server.downloads, 2);
        // The page named the files: the amd64/ page was not read.
        assert_eq!(server.pages, [base.to_owned(), format!("{at}CHECKSUMS")]);
        assert_eq!(kernel.release.as_deref(), Some(release));
        assert!(
            kernel.source.contains("/v5.4.220/amd64/ "),
            "{}",
            kernel.source
        );
        assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
    }

    #[test]
    fn a_6_13_folder_is_read_through_its_amd64_page() {
        let dir = tempfile::tempdir().unwrap();
        let release = "6.13.0-061300-generic";
        let base = "https://kernel.ubuntu.com/mainline/v6.13/";
        let at = format!("{base}amd64/");
        let build = "6.13.0-061300.202501302155";
        let mut image = image_files(release, "");
        image.pop(); // no config: the version decides
        let mut server = fake_folder(
            &at,
            &[(base, V6_13), (&at, V6_13_AMD64)],
            vec![
                (
                    format!("linux-image-unsigned-{release}_{build}_amd64.deb"),
                    deb(&image),
                ),
                (
                    format!("linux-modules-{release}_{build}_amd64.deb"),
                    deb(&module_files(release)),
                ),
            ],
        );
        let (kernel, _) = fetch(&mut server, &spec_for(base, "6.13.0"), dir.path());
        assert_eq!(
            server.pages,
            [base.to_owned(), at.clone(), format!("{at}CHECKSUMS")]
        );
        assert_eq!(kernel.release.as_deref(), Some(release));
        assert_eq!(kernel.boot_protocol, BootProtocol::Pvh);
        assert!(kernel.modules_dir.is_some());
        // No config in the package, none in the image.
        assert_eq!(kernel.config, None);
    }

    /// What a fetch would take, read without downloading: the folder holding the
    /// files, their sums, and the SHA256 of that CHECKSUMS; the fetch then takes
    /// exactly that, and its marker's source names it.
    #[test]
    fn resolving_reads_pages_and_checksums_and_downloads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let release = "6.13.0-061300-generic";
        let base = "https://kernel.ubuntu.com/mainline/v6.13/";
        let at = format!("{base}amd64/");
        let build = "6.13.0-061300.202501302155";
        let image = format!("linux-image-unsigned-{release}_{build}_amd64.deb");
        let modules = format!("linux-modules-{release}_{build}_amd64.deb");
        let mut server = fake_folder(
            &at,
            &[(base, V6_13), (&at, V6_13_AMD64)],
            vec![
                (image.clone(), deb(&image_files(release, ""))),
                (modules.clone(), deb(&module_files(release))),
            ],
        );
        let spec = spec_for(base, "6.13.0");
        let resolution = resolve_with(&mut server, &spec, &mut |_| {}).unwrap();
        assert_eq!(server.downloads, 0);
        assert_eq!(resolution.folder, at);
        assert_eq!(
            resolution.checksums_sha256,
            sha(&server.files[&format!("{at}CHECKSUMS")])
        );
        assert_eq!(
            resolution.files,
            [
                (image.clone(), sha(&server.files[&format!("{at}{image}")])),
                (
                    modules.clone(),
                    sha(&server.files[&format!("{at}{modules}")])
                ),
            ]
        );
        let (kernel, _) = fetch(&mut server, &spec, dir.path());
        assert_eq!(server.downloads, 2);
        assert_eq!(kernel.source, source_line(&at, &[&image, &modules]));
    }

    #[test]
    fn pages_that_fail_for_a_moment_are_read_again_and_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, spec) = server(false);
        server.flaky.insert(spec.folder.clone(), 2);
        let mut lines = Vec::new();
        fetch_with(&mut server, "5.4", &spec, dir.path(), &mut |l| {
            lines.push(l.to_owned())
        })
        .unwrap();
        assert_eq!(server.pauses, RETRY_PAUSES);
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("trying again in"))
                .count(),
            2,
            "{lines:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let (mut busy, spec) = self::server(false);
        busy.flaky.insert(format!("{}CHECKSUMS", spec.folder), 3);
        let err = fetch_with(&mut busy, "5.4", &spec, dir.path(), &mut |_| {}).unwrap_err();
        let Some(Unreachable(why)) = err.chain().find_map(|e| e.downcast_ref::<Unreachable>())
        else {
            panic!("{err:#}")
        };
        assert_eq!(why, "h does not answer properly (curl: 503) (3 tries)");
        assert_eq!(busy.pauses.len(), 2);
        assert_eq!(busy.downloads, 0);
    }

    #[test]
    fn a_checksum_mismatch_fails_and_leaves_nothing_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, spec) = server(true);
        let err = fetch_with(&mut server, "5.4", &spec, dir.path(), &mut |_| {}).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("has SHA256") && msg.contains("CHECKSUMS says"),
            "{msg}"
        );
        assert!(err.downcast_ref::<Unreachable>().is_none());
        // The verified image stays for the next run; the bad download is gone.
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert!(left[0].starts_with("linux-image-unsigned-"), "{left:?}");
    }

    #[test]
    fn a_pin_that_disagrees_with_checksums_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, mut spec) = server(false);
        spec.image_sha256 = Some("f".repeat(64));
        let err = fetch_with(&mut server, "5.4", &spec, dir.path(), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("the catalog pins"), "{err}");
        assert_eq!(server.downloads, 0);
    }

    /// Real: curl against a host name that never resolves (.invalid is reserved).
    /// Needs curl on PATH: without it the reason given differs and this fails.
    #[test]
    fn an_unreachable_host_is_unavailable_within_seconds() {
        let spec = MainlineSpec {
            folder: "https://kernel.ubuntu.com.invalid/mainline/v4.16/".into(),
            ..entry("4.16")
        };
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        let err = fetch_into("4.16", &spec, dir.path(), &mut |_| {}).unwrap_err();
        let elapsed = start.elapsed();
        let Some(Unreachable(why)) = err.downcast_ref::<Unreachable>() else {
            panic!("{err:#}")
        };
        assert!(
            why.starts_with(
                "kernel.ubuntu.com.invalid cannot be reached from this machine (curl: "
            ),
            "{why}"
        );
        assert!(why.contains("bpfmatrix fetch 4.16"), "{why}");
        assert!(elapsed.as_secs() < 15, "{elapsed:?}");
    }
}
