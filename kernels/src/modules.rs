//! Picks the kernel modules a guest must load, in dependency order, from a kernel's
//! modules directory. Debian's packages ship no modules.dep (depmod runs at install
//! time), so dependencies come from each module's own `.modinfo` section.

use crate::cache::cache_dir;
use crate::kernel::Kernel;
use anyhow::{bail, Context};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A module ready to go into an initramfs: an uncompressed `.ko`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ModuleFile {
    /// The module's name as the kernel knows it (`-` spelled `_`), e.g. "cls_bpf".
    pub name: String,
    pub path: PathBuf,
}

/// The modules `names` need, dependencies first, each once, skipping those built into
/// the kernel (listed in modules.builtin). A kernel without a modules directory gives
/// an empty list: whatever it has is built in, and the guest reports what is missing.
pub fn resolve_modules(kernel: &Kernel, names: &[&str]) -> anyhow::Result<Vec<ModuleFile>> {
    resolve_modules_in(kernel, names, &cache_dir())
}

/// Makes sure `kernel`'s modules directory has a modules.dep, which modprobe
/// needs and Debian's packages do not ship: runs `depmod -b BASE RELEASE` on a
/// directory laid out as `BASE/lib/modules/RELEASE` (as the cache's are). A
/// kernel without modules, or one whose folder has its modules.dep, is left as
/// it is; so is one whose folder is not laid out that way (said in the error).
pub fn ensure_modules_dep(kernel: &Kernel) -> anyhow::Result<()> {
    let Some(dir) = &kernel.modules_dir else {
        return Ok(());
    };
    if dir.join("modules.dep").is_file() {
        return Ok(());
    }
    let release = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = dir
        .parent()
        .filter(|p| p.ends_with("lib/modules"))
        .and_then(|p| p.parent()?.parent())
        .with_context(|| {
            format!(
                "{} has no modules.dep and is not laid out as BASE/lib/modules/RELEASE for depmod",
                dir.display()
            )
        })?;
    let out = std::process::Command::new("depmod")
        .arg("-b")
        .arg(base)
        .arg(&release)
        .output()
        .context("cannot run depmod to index the kernel's modules (apt-get install kmod)")?;
    if !out.status.success() {
        bail!(
            "depmod -b {} {release} failed ({}): {}",
            base.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// [`resolve_modules`] with an explicit cache directory.
pub(crate) fn resolve_modules_in(
    kernel: &Kernel,
    names: &[&str],
    cache: &Path,
) -> anyhow::Result<Vec<ModuleFile>> {
    let Some(dir) = &kernel.modules_dir else {
        return Ok(Vec::new());
    };
    let index = ModuleIndex::scan(dir)?;
    let key = kernel
        .release
        .clone()
        .unwrap_or_else(|| kernel.name.clone())
        .replace('/', "_");
    let unpack_dir = cache.join("modules").join(key);
    let order = dependency_order(names, &index.builtin, |name| {
        let path = index.path(name, dir)?;
        Ok(modinfo_depends(&read_module(path)?))
    })?;
    order
        .into_iter()
        .map(|name| {
            let source = index.path(&name, dir)?;
            let path = uncompressed(source, &unpack_dir, &name)?;
            Ok(ModuleFile { name, path })
        })
        .collect()
}

/// The kernel's name for a module file or a name a user typed.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

const SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

struct ModuleIndex {
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    /// Every module the kernel was built with (modules.order), name → path in the
    /// tree, to tell a module that was not unpacked from one that does not exist.
    built: BTreeMap<String, String>,
}

impl ModuleIndex {
    fn scan(dir: &Path) -> anyhow::Result<ModuleIndex> {
        let mut files = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d)
                .with_context(|| format!("cannot read modules directory {}", d.display()))?;
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                    continue;
                }
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if let Some(stem) = SUFFIXES.iter().find_map(|s| file_name.strip_suffix(s)) {
                    files.insert(normalize(stem), path);
                }
            }
        }
        let builtin = match std::fs::read_to_string(dir.join("modules.builtin")) {
            Ok(text) => parse_builtin(&text),
            Err(_) => BTreeSet::new(),
        };
        let built = match std::fs::read_to_string(dir.join("modules.order")) {
            Ok(text) => parse_order(&text),
            Err(_) => BTreeMap::new(),
        };
        Ok(ModuleIndex {
            files,
            builtin,
            built,
        })
    }

    fn path(&self, name: &str, dir: &Path) -> anyhow::Result<&Path> {
        match (self.files.get(name), self.built.get(name)) {
            (Some(p), _) => Ok(p),
            (None, Some(file)) => bail!(
                "kernel module {name} ({file}) was built for this kernel but is not in {}: bpfmatrix unpacks only kernel/net/ of a fetched kernel's modules (see `wanted` in kernels/src/debian.rs), so widen that, or pass the kernel's full modules directory with --modules",
                dir.display()
            ),
            (None, None) => bail!(
                "kernel module {name} is neither in {} nor listed in its modules.builtin",
                dir.display()
            ),
        }
    }
}

/// Module names from modules.builtin ("kernel/net/sched/sch_ingress.ko" per line).
fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let file = line.trim().rsplit('/').next()?;
            SUFFIXES
                .iter()
                .find_map(|s| file.strip_suffix(s))
                .map(normalize)
        })
        .collect()
}

/// modules.order: one "kernel/net/sched/cls_bpf.ko" per line → name → path.
fn parse_order(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let path = line.trim();
            let file = path.rsplit('/').next()?;
            let stem = SUFFIXES.iter().find_map(|s| file.strip_suffix(s))?;
            Some((normalize(stem), path.to_owned()))
        })
        .collect()
}

/// Orders `roots` and their dependencies so every module comes after what it needs.
/// `depends` gives a module's direct dependencies; built-in modules are left out.
fn dependency_order(
    roots: &[&str],
    builtin: &BTreeSet<String>,
    mut depends: impl FnMut(&str) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<Vec<String>> {
    fn visit(
        name: &str,
        builtin: &BTreeSet<String>,
        depends: &mut dyn FnMut(&str) -> anyhow::Result<Vec<String>>,
        done: &mut Vec<String>,
        path: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        if builtin.contains(name) || done.iter().any(|d| d == name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            bail!(
                "kernel modules depend on each other in a cycle: {} -> {name}",
                path.join(" -> ")
            );
        }
        let deps = depends(name).map_err(|e| match path.last() {
            Some(parent) => anyhow::anyhow!("{e:#} (needed by {parent})"),
            None => e,
        })?;
        path.push(name.to_owned());
        for dep in deps {
            visit(&dep, builtin, depends, done, path)?;
        }
        path.pop();
        done.push(name.to_owned());
        Ok(())
    }
    let mut done = Vec::new();
    for root in roots {
        visit(
            &normalize(root),
            builtin,
            &mut depends,
            &mut done,
            &mut Vec::new(),
        )?;
    }
    Ok(done)
}

/// The `depends=` entry of a module's `.modinfo` section (NUL-separated key=value
/// strings); empty if the module has none or is not an ELF.
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    use object::{Object, ObjectSection};
    let Ok(file) = object::File::parse(ko) else {
        return Vec::new();
    };
    let Some(data) = file.section_by_name(".modinfo").and_then(|s| s.data().ok()) else {
        return Vec::new();
    };
    parse_modinfo_depends(data)
}

fn parse_modinfo_depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|&b| b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|&b| b == b','))
        .filter(|d| !d.is_empty())
        .map(|d| normalize(&String::from_utf8_lossy(d)))
        .collect()
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open kernel module {}", path.display()))?;
    let name = path.to_string_lossy();
    let mut reader: Box<dyn Read> = if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new(file))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else if name.ends_with(".zst") {
        Box::new(ruzstd::decoding::StreamingDecoder::new(file).map_err(|e| anyhow::anyhow!("{e}"))?)
    } else {
        Box::new(file)
    };
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read kernel module {}", path.display()))?;
    Ok(bytes)
}

/// A plain `.ko` is used where it is; a compressed one is decompressed once into
/// `unpack_dir/<its SHA256>/`, since the guest's `finit_module` may not take
/// compressed modules. Keyed by content, not by name: two builds of one release
/// (two packages given by path) have modules of the same names.
fn uncompressed(source: &Path, unpack_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    if source.extension().is_some_and(|e| e == "ko") {
        return Ok(source.to_path_buf());
    }
    let dir = unpack_dir.join(&crate::util::sha256_file(source)?[..32]);
    let out = dir.join(format!("{name}.ko"));
    if !out.exists() {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        crate::util::write_atomically(&out, &read_module(source)?)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_depends_are_parsed() {
        let info = b"license=GPL\0depends=sch_ingress,nf-tables\0intree=Y\0name=cls_bpf\0";
        assert_eq!(parse_modinfo_depends(info), ["sch_ingress", "nf_tables"]);
        assert!(parse_modinfo_depends(b"license=GPL\0depends=\0").is_empty());
        assert!(parse_modinfo_depends(b"").is_empty());
    }

    #[test]
    fn dependencies_come_first_once_and_builtins_are_skipped() {
        let deps: BTreeMap<&str, Vec<&str>> = [
            ("cls_bpf", vec!["shared", "core"]),
            ("sch_ingress", vec!["core", "builtin_thing"]),
            ("shared", vec!["core"]),
            ("core", vec![]),
        ]
        .into();
        let builtin: BTreeSet<String> = ["builtin_thing".to_owned()].into();
        let order = dependency_order(&["sch-ingress", "cls_bpf"], &builtin, |n| {
            Ok(deps[n].iter().map(|s| s.to_string()).collect())
        })
        .unwrap();
        assert_eq!(order, ["core", "sch_ingress", "shared", "cls_bpf"]);
    }

    #[test]
    fn dependency_cycles_are_an_error() {
        let err = dependency_order(&["a"], &BTreeSet::new(), |n| {
            Ok(vec![if n == "a" { "b" } else { "a" }.to_owned()])
        })
        .unwrap_err();
        assert!(err.to_string().contains("a -> b -> a"), "{err}");
    }

    #[test]
    fn a_module_left_out_of_the_cache_is_named_with_who_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("kernel/net/sched")).unwrap();
        // A module whose .modinfo says it needs one from drivers/.
        let ko = b"\x7fELF".to_vec();
        std::fs::write(d.join("kernel/net/sched/cls_bpf.ko"), &ko).unwrap();
        std::fs::write(
            d.join("modules.order"),
            "kernel/net/sched/cls_bpf.ko\nkernel/drivers/foo/foo_core.ko\n",
        )
        .unwrap();
        let index = ModuleIndex::scan(d).unwrap();
        let err = dependency_order(&["cls_bpf"], &index.builtin, |name| {
            index.path(name, d)?;
            Ok(if name == "cls_bpf" {
                vec!["foo_core".to_owned()]
            } else {
                vec![]
            })
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("kernel module foo_core (kernel/drivers/foo/foo_core.ko) was built for this kernel but is not in"),
            "{err}"
        );
        assert!(
            err.contains("kernel/net/") && err.ends_with("(needed by cls_bpf)"),
            "{err}"
        );
        let err = index.path("nope", d).unwrap_err().to_string();
        assert!(err.contains("neither in"), "{err}");
    }

    #[test]
    fn builtin_list_gives_names() {
        let names = parse_builtin("kernel/net/sched/sch_ingress.ko\nkernel/drivers/foo-bar.ko\n\n");
        assert!(names.contains("sch_ingress") && names.contains("foo_bar"));
    }
}
