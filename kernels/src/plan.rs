//! Says what a fetch of catalog kernels would take today, without downloading a
//! kernel, and whether the cache holds exactly that: the document `bpfmatrix kernels
//! --json` prints ([`plan`] gives a [`Plan`]: each kernel's resolution, folder and
//! cache marker, and cache keys that change exactly when what the source offers
//! does), and the verdict of `bpfmatrix kernels --complete` on such a document after
//! a run ([`complete`]). The resolution is the sources' own, the one their fetch
//! downloads (`debian::resolve`, `mainline::resolve`), so CI files need not
//! re-implement how bpfmatrix chooses a package.

use crate::cache::{self, cache_dir, kernel_dir};
use crate::catalog::{catalog, CatalogEntry, Source};
use crate::debian;
use crate::error::FetchError;
use crate::mainline;
use crate::util::sha256_file;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The `schema` of a [`Plan`]; bumped when its meaning changes.
pub const SCHEMA: &str = "bpfmatrix-kernels/1";

/// What `bpfmatrix kernels --json` prints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// [`SCHEMA`].
    pub schema: String,
    /// The version of the bpfmatrix that made it.
    pub bpfmatrix: String,
    /// [`cache_dir`] when it was made.
    pub cache_dir: PathBuf,
    /// The QEMU binary guests run in, when one was found: saved guest states are
    /// only good for the binary that saved them.
    pub qemu: Option<Qemu>,
    /// The selected kernels, in the catalog's order.
    pub kernels: Vec<PlannedKernel>,
    /// The kernel folders and the key to cache them under.
    pub cache: KernelCache,
    /// The saved guest states and the key to cache them under.
    pub states: StateCache,
}

/// A QEMU binary and the SHA256 of its bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Qemu {
    pub path: PathBuf,
    pub sha256: String,
}

/// One catalog kernel: its entry, what its source offers today, and its cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PlannedKernel {
    pub name: String,
    pub version: String,
    pub note: String,
    /// The catalog entry's source table.
    pub source: PlannedSource,
    /// What a fetch would download, or `None` when that could not be read.
    pub resolved: Option<Resolved>,
    /// Why `resolved` is `None`, in the words a fetch would use.
    pub error: Option<String>,
    /// The kernel's cache folder.
    pub dir: PathBuf,
    /// The completed cache entry in `dir`, if there is one.
    pub cached: Option<Cached>,
}

/// A catalog entry's source table (`[kernel.debian]`, `[kernel.ubuntu_mainline]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlannedSource {
    Debian {
        suite: String,
        /// The pattern on package names; the newest match wins.
        package: String,
        companions: Vec<String>,
    },
    UbuntuMainline {
        folder: String,
        image: String,
        modules: Option<String>,
        image_sha256: Option<String>,
        modules_sha256: Option<String>,
    },
}

/// What a kernel's source offers today.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Resolved {
    Debian(DebianResolved),
    UbuntuMainline(MainlineResolved),
}

/// The packages a Debian fetch downloads, as the suite's signed index gives them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebianResolved {
    /// The newest package matching the entry's pattern.
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// The entry's companions of that package, each of its version.
    pub companions: Vec<DebianPackage>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DebianPackage {
    pub package: String,
    pub version: String,
    pub sha256: String,
}

/// The files a mainline fetch downloads, as the build folder's CHECKSUMS gives them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MainlineResolved {
    /// The folder holding the amd64 packages and CHECKSUMS: the entry's folder, or
    /// its `amd64/` for builds from mid-2020 on.
    pub folder: String,
    /// The SHA256 of that folder's CHECKSUMS file.
    pub checksums_sha256: String,
    /// The image package, then the modules package when the build has one.
    pub files: Vec<MainlineFile>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MainlineFile {
    pub file: String,
    pub sha256: String,
}

/// A completed cache entry: what its marker (`kernel.json`) says it holds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    /// The marker's source, e.g. "debian bookworm linux-image-6.1.0-50-amd64-unsigned 6.1.176-1".
    pub source: String,
    /// Whether it holds exactly what was resolved.
    pub matches: bool,
}

/// The kernels' cache folders and the key to cache them under.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KernelCache {
    pub paths: Vec<PathBuf>,
    /// `bpfmatrix-kernels-v1-<names>-<hash>`; `None` when a kernel is unresolved.
    pub key: Option<String>,
    /// `bpfmatrix-kernels-v1-<names>-`: older entries of the same kernels.
    pub restore_prefix: String,
}

/// The saved guest states (`<cache>/snapshots`) and the key to cache them under.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StateCache {
    pub path: PathBuf,
    /// `restore_prefix` and a hash of the QEMU binary, the kernels' key and the
    /// bpfmatrix version; `None` without a kernels' key or without QEMU.
    pub key: Option<String>,
    /// `bpfmatrix-states-v1-<names>-<first 16 hex of QEMU's SHA256>-`: states of the
    /// same QEMU binary; `None` without QEMU.
    pub restore_prefix: Option<String>,
}

/// The catalog's entries named in `names`, in the catalog's order (so that a
/// plan's keys do not depend on the order the names were given, nor on repeats);
/// the whole catalog when `names` is empty.
pub fn select(names: &[String]) -> anyhow::Result<Vec<CatalogEntry>> {
    select_from(catalog(), names)
}

fn select_from(all: Vec<CatalogEntry>, names: &[String]) -> anyhow::Result<Vec<CatalogEntry>> {
    if let Some(unknown) = names.iter().find(|n| !all.iter().any(|e| &e.name == *n)) {
        let known: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
        bail!(
            "no kernel '{unknown}' in the catalog: `kernels --json -k NAME` takes the catalog's names ({})",
            known.join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|e| names.is_empty() || names.contains(&e.name))
        .collect())
}

/// Resolves each of `entries` the way its fetch would (without downloading a
/// kernel), reads its cache marker, and computes the cache keys. `bpfmatrix` is the
/// running bpfmatrix's version; `qemu` the QEMU binary guests run in, when there is
/// one. Progress lines go to `progress(kernel name, line)`. A kernel whose source
/// cannot be read is in the plan with its error; an error here is a bad input (an
/// entry of packages given by path, an unreadable QEMU).
pub fn plan(
    entries: &[CatalogEntry],
    bpfmatrix: &str,
    qemu: Option<&Path>,
    progress: &mut dyn FnMut(&str, &str),
) -> anyhow::Result<Plan> {
    let cache = cache_dir();
    let qemu = qemu
        .map(|path| {
            Ok::<_, anyhow::Error>(Qemu {
                path: path.to_path_buf(),
                sha256: sha256_file(path).context("cannot hash the QEMU binary")?,
            })
        })
        .transpose()?;
    let mut kernels = Vec::new();
    for entry in entries {
        let source = planned_source(entry)?;
        let dir = kernel_dir(&cache, &entry.name)?;
        let (resolved, error) = match resolve(entry, &mut |line| progress(&entry.name, line)) {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut kernel = PlannedKernel {
            name: entry.name.clone(),
            version: entry.version.clone(),
            note: entry.note.clone(),
            source,
            resolved,
            error,
            dir,
            cached: None,
        };
        kernel.cached = cache::completed(&kernel.dir).map(|k| Cached {
            matches: kernel.judge(Some(&k.source)).is_ok(),
            source: k.source,
        });
        kernels.push(kernel);
    }
    Ok(assemble(&cache, bpfmatrix, qemu, kernels))
}

/// The plan of resolved `kernels`: its keys computed.
fn assemble(
    cache: &Path,
    bpfmatrix: &str,
    qemu: Option<Qemu>,
    kernels: Vec<PlannedKernel>,
) -> Plan {
    let names = key_names(kernels.iter().map(|k| k.name.as_str()));
    let kernels_prefix = format!("bpfmatrix-kernels-v1-{names}-");
    let kernels_key = kernels
        .iter()
        .all(|k| k.resolved.is_some())
        .then(|| format!("{kernels_prefix}{}", kernels_hash(&kernels)));
    let states_prefix = qemu.as_ref().map(|q| {
        format!(
            "bpfmatrix-states-v1-{names}-{}-",
            &q.sha256[..16.min(q.sha256.len())]
        )
    });
    let states_key = match (&states_prefix, &qemu, &kernels_key) {
        (Some(prefix), Some(qemu), Some(kernels_key)) => Some(format!(
            "{prefix}{}",
            hash24(&serde_json::json!({
                "qemu_sha256": qemu.sha256,
                "kernels_key": kernels_key,
                "bpfmatrix": bpfmatrix,
            }))
        )),
        _ => None,
    };
    Plan {
        schema: SCHEMA.to_owned(),
        bpfmatrix: bpfmatrix.to_owned(),
        cache_dir: cache.to_path_buf(),
        qemu,
        cache: KernelCache {
            paths: kernels.iter().map(|k| k.dir.clone()).collect(),
            key: kernels_key,
            restore_prefix: kernels_prefix,
        },
        states: StateCache {
            path: cache.join("snapshots"),
            key: states_key,
            restore_prefix: states_prefix,
        },
        kernels,
    }
}

/// The kernels' names for a cache key: joined with `_`, anything but letters,
/// digits and `.` `_` `-` made `-` (catalog names may hold `+`).
fn key_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| {
            n.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("_")
}

/// What the kernels' key stands for: per kernel, its catalog entry and its
/// resolution (not its folder, which differs between machines, nor its cache).
fn kernels_hash(kernels: &[PlannedKernel]) -> String {
    let parts: Vec<Value> = kernels
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.name,
                "version": k.version,
                "note": k.note,
                "source": k.source,
                "resolved": k.resolved,
            })
        })
        .collect();
    hash24(&Value::Array(parts))
}

/// The first 24 hex digits of the SHA256 of `value`'s [`canonical`] JSON.
fn hash24(value: &Value) -> String {
    format!("{:x}", Sha256::digest(canonical(value).as_bytes()))[..24].to_owned()
}

/// `value` as compact JSON with every object's keys sorted, so its hash does not
/// depend on how serde_json orders maps (a dependency may turn on preserve_order).
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

fn planned_source(entry: &CatalogEntry) -> anyhow::Result<PlannedSource> {
    Ok(match &entry.source {
        Source::Debian(spec) => PlannedSource::Debian {
            suite: spec.suite.clone(),
            package: spec.package_regex.clone(),
            companions: spec.companions.clone(),
        },
        Source::UbuntuMainline(spec) => PlannedSource::UbuntuMainline {
            folder: spec.folder.clone(),
            image: spec.image.clone(),
            modules: spec.modules.clone(),
            image_sha256: spec.image_sha256.clone(),
            modules_sha256: spec.modules_sha256.clone(),
        },
        Source::DebFiles(_) => bail!(
            "kernel {} is packages given by path: only catalog kernels have a source to plan",
            entry.name
        ),
    })
}

/// What `entry`'s fetch would download today, or why it cannot tell.
fn resolve(entry: &CatalogEntry, progress: &mut dyn FnMut(&str)) -> Result<Resolved, FetchError> {
    match &entry.source {
        Source::Debian(spec) => debian::resolve(spec, progress).map(|r| {
            let mut packages = r.packages.into_iter().map(|p| DebianPackage {
                package: p.name,
                version: p.version,
                sha256: p.sha256,
            });
            let image = packages.next().expect("a resolution has its image package");
            Resolved::Debian(DebianResolved {
                package: image.package,
                version: image.version,
                sha256: image.sha256,
                companions: packages.collect(),
            })
        }),
        Source::UbuntuMainline(spec) => mainline::resolve(&entry.name, spec, progress).map(|r| {
            Resolved::UbuntuMainline(MainlineResolved {
                folder: r.folder,
                checksums_sha256: r.checksums_sha256,
                files: r
                    .files
                    .into_iter()
                    .map(|(file, sha256)| MainlineFile { file, sha256 })
                    .collect(),
            })
        }),
        Source::DebFiles(_) => Err(anyhow::anyhow!(
            "packages given by path have no source to resolve"
        )),
    }
    .map_err(FetchError::classify)
}

impl PlannedKernel {
    /// Whether a cache entry whose marker gives `marker` as its source (`None`: no
    /// completed entry) holds exactly what was resolved; if not, why.
    fn judge(&self, marker: Option<&str>) -> Result<(), String> {
        let Some(resolved) = &self.resolved else {
            return Err(format!(
                "its source was not resolved ({})",
                self.error.as_deref().unwrap_or("no reason given")
            ));
        };
        let Some(marker) = marker else {
            return Err(format!(
                "no completed entry in {} (its kernel.json is missing, or names files that are gone): the fetch did not complete",
                self.dir.display()
            ));
        };
        let (holds, wanted) = match (resolved, &self.source) {
            (Resolved::Debian(r), PlannedSource::Debian { suite, .. }) => {
                let companions: Vec<&str> =
                    r.companions.iter().map(|c| c.package.as_str()).collect();
                (
                    debian::source_holds(marker, suite, &r.package, &r.version, &companions),
                    format!("{} {}", r.package, r.version),
                )
            }
            (Resolved::UbuntuMainline(r), PlannedSource::UbuntuMainline { .. }) => {
                let files: Vec<&str> = r.files.iter().map(|f| f.file.as_str()).collect();
                let line = mainline::source_line(&r.folder, &files);
                (marker == line, line)
            }
            _ => return Err("its resolution is not of its source's kind".to_owned()),
        };
        if holds {
            Ok(())
        } else {
            Err(format!(
                "{} holds \"{marker}\", not what was resolved ({wanted})",
                self.dir.join(cache::MARKER).display()
            ))
        }
    }
}

/// Whether the cache holds every kernel of a plan as it was resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completeness {
    /// Each kernel that does not, and why.
    pub missing: Vec<(String, String)>,
}

impl Completeness {
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Reads each kernel's cache marker now and judges it against `plan`'s resolution.
pub fn complete(plan: &Plan) -> Completeness {
    judge_all(plan, &|dir| cache::completed(dir).map(|k| k.source))
}

/// [`complete`] with the markers read by `marker_of(kernel folder)`.
fn judge_all(plan: &Plan, marker_of: &dyn Fn(&Path) -> Option<String>) -> Completeness {
    let missing = plan
        .kernels
        .iter()
        .filter_map(|k| {
            let marker = marker_of(&k.dir);
            k.judge(marker.as_deref())
                .err()
                .map(|why| (k.name.clone(), why))
        })
        .collect();
    Completeness { missing }
}

impl Plan {
    /// Every kernel was resolved.
    pub fn all_resolved(&self) -> bool {
        self.kernels.iter().all(|k| k.resolved.is_some())
    }

    /// The plan as the pretty JSON `kernels --json` prints.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan serialises")
    }

    /// Reads a plan `kernels --json` printed from the file at `path`.
    pub fn read(path: &Path) -> anyhow::Result<Plan> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the plan {}", path.display()))?;
        Plan::parse(&text).with_context(|| format!("bad plan {}", path.display()))
    }

    /// A plan from the JSON `kernels --json` printed; refuses any other schema.
    pub fn parse(text: &str) -> anyhow::Result<Plan> {
        let value: Value = serde_json::from_str(text)
            .context("not JSON: make the plan with `bpfmatrix kernels --json > PLAN.json`")?;
        match value.get("schema").and_then(Value::as_str) {
            Some(SCHEMA) => {}
            Some(other) => bail!(
                "its schema is \"{other}\", not \"{SCHEMA}\": make the plan with this bpfmatrix's `kernels --json`"
            ),
            None => bail!(
                "it has no \"schema\": not a document of `bpfmatrix kernels --json`"
            ),
        }
        let plan: Plan = serde_json::from_value(value).with_context(|| {
            format!("not a {SCHEMA} document as `bpfmatrix kernels --json` prints it")
        })?;
        if plan.kernels.is_empty() {
            bail!("it lists no kernels: there is nothing to judge complete");
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn debian_kernel(name: &str, version: &str) -> PlannedKernel {
        PlannedKernel {
            name: name.into(),
            version: "6.1".into(),
            note: "Debian 12 bookworm's 6.1 kernel".into(),
            source: PlannedSource::Debian {
                suite: "bookworm".into(),
                package: r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$".into(),
                companions: vec![],
            },
            resolved: Some(Resolved::Debian(DebianResolved {
                package: "linux-image-6.1.0-50-amd64-unsigned".into(),
                version: version.into(),
                sha256: "ab".repeat(32),
                companions: vec![],
            })),
            error: None,
            dir: PathBuf::from(format!("/c/kernels/{name}")),
            cached: None,
        }
    }

    fn sid_kernel() -> PlannedKernel {
        let package = |p: &str| DebianPackage {
            package: format!("{p}-7.2.13+deb14-amd64"),
            version: "7.2.13-1".into(),
            sha256: "cd".repeat(32),
        };
        PlannedKernel {
            name: "latest".into(),
            version: "unstable".into(),
            note: "Debian unstable's newest kernel".into(),
            source: PlannedSource::Debian {
                suite: "sid".into(),
                package: r"^linux-binary-unsigned-([0-9]+\.[0-9.]+\+deb[0-9]+-amd64)$".into(),
                companions: vec![
                    "linux-modules-{release}".into(),
                    "linux-base-{release}".into(),
                ],
            },
            resolved: Some(Resolved::Debian(DebianResolved {
                package: "linux-binary-unsigned-7.2.13+deb14-amd64".into(),
                version: "7.2.13-1".into(),
                sha256: "ef".repeat(32),
                companions: vec![package("linux-modules"), package("linux-base")],
            })),
            error: None,
            dir: PathBuf::from("/c/kernels/latest"),
            cached: None,
        }
    }

    fn mainline_kernel() -> PlannedKernel {
        PlannedKernel {
            name: "5.4".into(),
            version: "5.4".into(),
            note: "Ubuntu mainline build of v5.4".into(),
            source: PlannedSource::UbuntuMainline {
                folder: "https://kernel.ubuntu.com/mainline/v5.4/".into(),
                image: r"^linux-image-(unsigned-)?5\.4\.0-[0-9]+-generic_[^/_]+_amd64\.deb$".into(),
                modules: Some(r"^linux-modules-5\.4\.0-[0-9]+-generic_[^/_]+_amd64\.deb$".into()),
                image_sha256: None,
                modules_sha256: None,
            },
            resolved: Some(Resolved::UbuntuMainline(MainlineResolved {
                folder: "https://kernel.ubuntu.com/mainline/v5.4/".into(),
                checksums_sha256: "12".repeat(32),
                files: vec![
                    MainlineFile {
                        file: "linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb".into(),
                        sha256: "34".repeat(32),
                    },
                    MainlineFile {
                        file: "linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb".into(),
                        sha256: "56".repeat(32),
                    },
                ],
            })),
            error: None,
            dir: PathBuf::from("/c/kernels/5.4"),
            cached: None,
        }
    }

    fn qemu() -> Option<Qemu> {
        Some(Qemu {
            path: "/usr/bin/qemu-system-x86_64".into(),
            sha256: "0123456789abcdef".repeat(4),
        })
    }

    fn planned(kernels: Vec<PlannedKernel>) -> Plan {
        assemble(Path::new("/c"), "0.1.0", qemu(), kernels)
    }

    #[test]
    fn keys_are_stable_and_name_their_kernels() {
        let plan = planned(vec![mainline_kernel(), debian_kernel("6.1", "6.1.176-1")]);
        let again = planned(vec![mainline_kernel(), debian_kernel("6.1", "6.1.176-1")]);
        assert_eq!(plan.cache, again.cache);
        assert_eq!(plan.states, again.states);
        let key = plan.cache.key.clone().unwrap();
        assert_eq!(plan.cache.restore_prefix, "bpfmatrix-kernels-v1-5.4_6.1-");
        let hash = key.strip_prefix(&plan.cache.restore_prefix).unwrap();
        assert_eq!(hash.len(), 24);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
        assert_eq!(
            plan.cache.paths,
            [
                PathBuf::from("/c/kernels/5.4"),
                PathBuf::from("/c/kernels/6.1")
            ]
        );
        assert_eq!(
            plan.states.restore_prefix.as_deref(),
            Some("bpfmatrix-states-v1-5.4_6.1-0123456789abcdef-")
        );
        let states = plan.states.key.clone().unwrap();
        assert_eq!(
            states
                .strip_prefix(plan.states.restore_prefix.as_deref().unwrap())
                .unwrap()
                .len(),
            24
        );
        assert_eq!(plan.states.path, Path::new("/c/snapshots"));
        // Pinned: a change to what the key covers or how it is hashed makes every
        // CI cache entry miss once, so it must be made on purpose.
        assert_eq!(key, "bpfmatrix-kernels-v1-5.4_6.1-c60d8891479e905dcd71d6a4");
        // Another machine's cache folder, or what its cache holds, is the same key.
        let mut elsewhere = debian_kernel("6.1", "6.1.176-1");
        elsewhere.dir = "/home/runner/.cache/bpfmatrix/kernels/6.1".into();
        elsewhere.cached = Some(Cached {
            source: "debian bookworm x 1".into(),
            matches: false,
        });
        let other = assemble(
            Path::new("/elsewhere"),
            "0.1.0",
            qemu(),
            vec![mainline_kernel(), elsewhere],
        );
        assert_eq!(other.cache.key, plan.cache.key);
        assert_eq!(other.states.key, plan.states.key);
    }

    #[test]
    fn keys_change_with_what_the_source_offers_and_the_entry() {
        let key = |kernels| planned(kernels).cache.key.unwrap();
        let base = key(vec![debian_kernel("6.1", "6.1.176-1")]);
        // A Debian point release.
        assert_ne!(key(vec![debian_kernel("6.1", "6.1.177-1")]), base);
        // The same package rebuilt: its SHA256.
        let mut rebuilt = debian_kernel("6.1", "6.1.176-1");
        let Some(Resolved::Debian(r)) = &mut rebuilt.resolved else {
            unreachable!()
        };
        r.sha256 = "ff".repeat(32);
        assert_ne!(key(vec![rebuilt]), base);
        // The catalog entry's pattern.
        let mut pattern = debian_kernel("6.1", "6.1.176-1");
        let PlannedSource::Debian { package, .. } = &mut pattern.source else {
            unreachable!()
        };
        package.push('x');
        assert_ne!(key(vec![pattern]), base);
        // A mainline folder's CHECKSUMS.
        let mainline = key(vec![mainline_kernel()]);
        let mut republished = mainline_kernel();
        let Some(Resolved::UbuntuMainline(r)) = &mut republished.resolved else {
            unreachable!()
        };
        r.checksums_sha256 = "99".repeat(32);
        assert_ne!(key(vec![republished]), mainline);
    }

    #[test]
    fn states_follow_qemu_the_kernels_and_bpfmatrix() {
        let kernels = || vec![debian_kernel("6.1", "6.1.176-1")];
        let base = planned(kernels()).states;
        let newer_qemu = Some(Qemu {
            path: "/usr/bin/qemu-system-x86_64".into(),
            sha256: "fedcba9876543210".repeat(4),
        });
        let other = assemble(Path::new("/c"), "0.1.0", newer_qemu, kernels()).states;
        assert_eq!(
            other.restore_prefix.as_deref(),
            Some("bpfmatrix-states-v1-6.1-fedcba9876543210-")
        );
        assert_ne!(other.key, base.key);
        let other_version = assemble(Path::new("/c"), "0.2.0", qemu(), kernels()).states;
        assert_eq!(other_version.restore_prefix, base.restore_prefix);
        assert_ne!(other_version.key, base.key);
        let new_kernel = planned(vec![debian_kernel("6.1", "6.1.177-1")]).states;
        assert_ne!(new_kernel.key, base.key);
        // No QEMU: no states to cache.
        let none = assemble(Path::new("/c"), "0.1.0", None, kernels());
        assert!(none.cache.key.is_some());
        assert_eq!((none.states.key, none.states.restore_prefix), (None, None));
    }

    #[test]
    fn an_unresolved_kernel_leaves_no_key_to_save_under() {
        let mut gone = mainline_kernel();
        gone.resolved = None;
        gone.error = Some("unavailable: kernel.ubuntu.com cannot be reached".into());
        let plan = planned(vec![gone, debian_kernel("6.1", "6.1.176-1")]);
        assert!(!plan.all_resolved());
        assert_eq!(plan.cache.key, None);
        assert_eq!(plan.cache.restore_prefix, "bpfmatrix-kernels-v1-5.4_6.1-");
        assert_eq!(plan.states.key, None);
        assert!(plan.states.restore_prefix.is_some());
    }

    #[test]
    fn names_in_keys_are_sanitised() {
        assert_eq!(
            key_names(["6.1", "rt+x", "a b/c", "v5.4_y-z"].into_iter()),
            "6.1_rt-x_a-b-c_v5.4_y-z"
        );
        let plan = planned(vec![debian_kernel("6.1+rt", "6.1.176-1")]);
        assert_eq!(plan.cache.restore_prefix, "bpfmatrix-kernels-v1-6.1-rt-");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), Value::from(1));
        inner.insert("a".into(), Value::from("x\"y"));
        let mut outer = serde_json::Map::new();
        outer.insert(
            "b".into(),
            Value::Array(vec![Value::Object(inner), Value::Null]),
        );
        outer.insert("a".into(), Value::Bool(true));
        assert_eq!(
            canonical(&Value::Object(outer)),
            r#"{"a":true,"b":[{"a":"x\"y","z":1},null]}"#
        );
    }

    #[test]
    fn a_debian_marker_must_name_the_resolved_package_and_version() {
        let k = debian_kernel("6.1", "6.1.176-1");
        assert_eq!(
            k.judge(Some(
                "debian bookworm linux-image-6.1.0-50-amd64-unsigned 6.1.176-1"
            )),
            Ok(())
        );
        // Fetched from an expired Release file: still the package resolved.
        assert_eq!(
            k.judge(Some("debian bookworm linux-image-6.1.0-50-amd64-unsigned 6.1.176-1 (from an expired Release file: dated Fri, 30 Oct 2026 08:08:01 UTC, valid until Fri, 06 Nov 2026 08:08:01 UTC)")),
            Ok(())
        );
        // An older point release, and one whose version merely starts the same (a
        // `grep -F` of the marker would take it).
        for marker in [
            "debian bookworm linux-image-6.1.0-49-amd64-unsigned 6.1.170-1",
            "debian bookworm linux-image-6.1.0-50-amd64-unsigned 6.1.176-10",
            "debian trixie linux-image-6.1.0-50-amd64-unsigned 6.1.176-1",
        ] {
            let why = k.judge(Some(marker)).unwrap_err();
            assert!(why.contains(&format!("holds \"{marker}\"")), "{why}");
            assert!(why.contains("/c/kernels/6.1/kernel.json"), "{why}");
            assert!(
                why.contains("(linux-image-6.1.0-50-amd64-unsigned 6.1.176-1)"),
                "{why}"
            );
        }
        let why = k.judge(None).unwrap_err();
        assert!(
            why.starts_with("no completed entry in /c/kernels/6.1"),
            "{why}"
        );
    }

    #[test]
    fn a_marker_of_a_kernel_in_several_packages_must_name_its_companions() {
        let k = sid_kernel();
        let line = "debian sid linux-binary-unsigned-7.2.13+deb14-amd64 7.2.13-1 (with linux-modules-7.2.13+deb14-amd64 and linux-base-7.2.13+deb14-amd64 of that version)";
        assert_eq!(k.judge(Some(line)), Ok(()));
        assert!(k
            .judge(Some(
                "debian sid linux-binary-unsigned-7.2.13+deb14-amd64 7.2.13-1"
            ))
            .is_err());
    }

    #[test]
    fn a_mainline_marker_must_name_the_folder_and_files_resolved() {
        let k = mainline_kernel();
        let ok = "ubuntu mainline https://kernel.ubuntu.com/mainline/v5.4/ linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb + linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb";
        assert_eq!(k.judge(Some(ok)), Ok(()));
        let rebuilt = ok.replace("201911242031", "201911250000");
        assert!(k.judge(Some(&rebuilt)).is_err());
        let elsewhere = ok.replace("/v5.4/", "/v5.4/amd64/");
        assert!(k.judge(Some(&elsewhere)).is_err());
    }

    #[test]
    fn an_unresolved_kernel_is_never_complete() {
        let mut k = debian_kernel("6.1", "6.1.176-1");
        k.resolved = None;
        k.error = Some("unavailable: deb.debian.org cannot be reached from this machine".into());
        let why = k
            .judge(Some(
                "debian bookworm linux-image-6.1.0-50-amd64-unsigned 6.1.176-1",
            ))
            .unwrap_err();
        assert_eq!(
            why,
            "its source was not resolved (unavailable: deb.debian.org cannot be reached from this machine)"
        );
    }

    #[test]
    fn complete_means_every_kernel_of_the_plan_is_held_as_resolved() {
        let plan = planned(vec![mainline_kernel(), debian_kernel("6.1", "6.1.176-1")]);
        let mut markers: BTreeMap<PathBuf, String> = BTreeMap::new();
        markers.insert(
            "/c/kernels/6.1".into(),
            "debian bookworm linux-image-6.1.0-50-amd64-unsigned 6.1.176-1".into(),
        );
        let verdict = judge_all(&plan, &|dir| markers.get(dir).cloned());
        assert!(!verdict.is_complete());
        assert_eq!(verdict.missing.len(), 1);
        assert_eq!(verdict.missing[0].0, "5.4");
        markers.insert(
            "/c/kernels/5.4".into(),
            "ubuntu mainline https://kernel.ubuntu.com/mainline/v5.4/ linux-image-unsigned-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb + linux-modules-5.4.0-050400-generic_5.4.0-050400.201911242031_amd64.deb".into(),
        );
        assert!(judge_all(&plan, &|dir| markers.get(dir).cloned()).is_complete());
    }

    #[test]
    fn a_plan_reads_back_as_printed_with_its_documented_shape() {
        let mut latest = sid_kernel();
        latest.cached = Some(Cached {
            source: "debian sid linux-binary-unsigned-7.2.12+deb14-amd64 7.2.12-1 (with ...)"
                .into(),
            matches: false,
        });
        let plan = planned(vec![
            mainline_kernel(),
            debian_kernel("6.1", "6.1.176-1"),
            latest,
        ]);
        let json = plan.to_json();
        assert_eq!(Plan::parse(&json).unwrap(), plan);
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["schema"], "bpfmatrix-kernels/1");
        assert_eq!(value["qemu"]["path"], "/usr/bin/qemu-system-x86_64");
        let k61 = &value["kernels"][1];
        assert_eq!(k61["source"]["kind"], "debian");
        assert_eq!(k61["source"]["suite"], "bookworm");
        assert_eq!(
            k61["resolved"]["package"],
            "linux-image-6.1.0-50-amd64-unsigned"
        );
        assert_eq!(k61["resolved"]["version"], "6.1.176-1");
        assert_eq!(k61["error"], Value::Null);
        assert_eq!(k61["cached"], Value::Null);
        assert_eq!(k61["dir"], "/c/kernels/6.1");
        let k54 = &value["kernels"][0];
        assert_eq!(k54["source"]["kind"], "ubuntu_mainline");
        assert_eq!(k54["resolved"]["checksums_sha256"], "12".repeat(32));
        assert_eq!(
            value["kernels"][2]["resolved"]["companions"][1]["package"],
            "linux-base-7.2.13+deb14-amd64"
        );
        assert_eq!(value["kernels"][2]["cached"]["matches"], false);
        assert_eq!(
            value["cache"]["restore_prefix"],
            "bpfmatrix-kernels-v1-5.4_6.1_latest-"
        );
        assert_eq!(value["states"]["path"], "/c/snapshots");
    }

    #[test]
    fn a_document_of_another_schema_is_refused() {
        let plan = planned(vec![debian_kernel("6.1", "6.1.176-1")]);
        let json = plan
            .to_json()
            .replace("bpfmatrix-kernels/1", "bpfmatrix-kernels/2");
        let err = Plan::parse(&json).unwrap_err().to_string();
        assert!(
            err.contains("its schema is \"bpfmatrix-kernels/2\", not \"bpfmatrix-kernels/1\""),
            "{err}"
        );
        let err = Plan::parse(r#"{"schema": "bpfmatrix-matrix/3", "kernels": []}"#).unwrap_err();
        assert!(err.to_string().contains("bpfmatrix-matrix/3"), "{err}");
        let err = Plan::parse(r#"{"kernels": []}"#).unwrap_err();
        assert!(err.to_string().contains("no \"schema\""), "{err}");
        let err = Plan::parse("complete=true\n").unwrap_err();
        assert!(err.to_string().starts_with("not JSON"), "{err}");
        // The right schema with the wrong content is refused too, naming the field.
        let err = Plan::parse(r#"{"schema": "bpfmatrix-kernels/1", "kernels": []}"#).unwrap_err();
        assert!(format!("{err:#}").contains("missing field"), "{err:#}");
        let mut empty = plan;
        empty.kernels.clear();
        let err = Plan::parse(&empty.to_json()).unwrap_err();
        assert!(err.to_string().contains("lists no kernels"), "{err}");
    }

    #[test]
    fn selection_is_by_catalog_name_in_catalog_order() {
        let names = |sel: Vec<CatalogEntry>| sel.into_iter().map(|e| e.name).collect::<Vec<_>>();
        let pick = |n: &[&str]| select(&n.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            names(pick(&["6.12", "6.1", "6.12"]).unwrap()),
            ["6.1", "6.12"]
        );
        assert_eq!(
            names(pick(&[]).unwrap()),
            ["4.16", "5.4", "5.10", "6.1", "6.12", "latest"]
        );
        let err = pick(&["6.1", "6.2"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "no kernel '6.2' in the catalog: `kernels --json -k NAME` takes the catalog's names (4.16, 5.4, 5.10, 6.1, 6.12, latest)"
        );
    }

    #[test]
    fn the_catalog_gives_every_entry_a_source_to_plan() {
        for entry in catalog() {
            let source = planned_source(&entry).unwrap();
            let json = serde_json::to_value(&source).unwrap();
            assert!(["debian", "ubuntu_mainline"].contains(&json["kind"].as_str().unwrap()));
        }
    }
}
