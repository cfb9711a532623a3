//! Which kernels a run covers: names from the catalog of known kernels, or kernel
//! images the user points at, and obtaining each (download, cache, validate).

use anyhow::{bail, Result};
use bpfmatrix_kernels::{DebianSpec, Kernel};
use std::path::{Path, PathBuf};

/// Where a catalog kernel comes from.
#[derive(Clone, Debug)]
pub enum Source {
    Debian(DebianSpec),
}

#[derive(Clone, Debug)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub source: Source,
}

/// The kernels bpfmatrix knows by name.
pub fn catalog() -> Vec<CatalogEntry> {
    let debian = |name: &'static str, suite: &str, regex: &str| CatalogEntry {
        name,
        source: Source::Debian(DebianSpec {
            name: name.to_string(),
            suite: suite.to_string(),
            package_regex: regex.to_string(),
        }),
    };
    vec![debian(
        "6.1",
        "bookworm",
        r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
    )]
}

/// A kernel to run: a catalog name, or an image on disk.
#[derive(Clone, Debug)]
pub enum Target {
    Catalog(CatalogEntry),
    Image {
        name: String,
        image: PathBuf,
        modules: Option<PathBuf>,
    },
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Catalog(e) => e.name,
            Target::Image { name, .. } => name,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Catalog(CatalogEntry {
                source: Source::Debian(d),
                ..
            }) => format!("Debian {} /{}/", d.suite, d.package_regex),
            Target::Image { image, .. } => format!("image {}", image.display()),
        }
    }
}

/// `arg` is a catalog name (`6.1`) or a path to a bzImage / vmlinux (anything with
/// a `/` or that exists on disk). Images are named after their file unless the
/// user writes `NAME=PATH`.
pub fn resolve(arg: &str, modules: Option<&Path>) -> Result<Target> {
    if let Some(entry) = catalog().into_iter().find(|e| e.name == arg) {
        return Ok(Target::Catalog(entry));
    }
    let (name, path) = match arg.split_once('=') {
        Some((n, p)) => (n.to_string(), PathBuf::from(p)),
        None => {
            let p = PathBuf::from(arg);
            let n = p
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| arg.to_string());
            (n, p)
        }
    };
    if path.components().count() > 1 || path.exists() {
        return Ok(Target::Image {
            name,
            image: path,
            modules: modules.map(Path::to_path_buf),
        });
    }
    let known: Vec<&str> = catalog().iter().map(|e| e.name).collect();
    bail!(
        "unknown kernel '{arg}': known kernels are {}; or give a path to a bzImage or vmlinux",
        known.join(", ")
    )
}

/// Downloads (or finds in the cache) and validates the kernel.
pub fn obtain(target: &Target, progress: &mut dyn FnMut(&str)) -> Result<Kernel> {
    match target {
        Target::Catalog(CatalogEntry {
            source: Source::Debian(spec),
            ..
        }) => bpfmatrix_kernels::fetch_debian(spec, progress),
        Target::Image {
            name,
            image,
            modules,
        } => bpfmatrix_kernels::from_image(name, image, modules.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_paths_and_typos_resolve_as_a_user_expects() {
        assert_eq!(resolve("6.1", None).unwrap().name(), "6.1");
        let t = resolve("fleet=/boot/vmlinuz-6.8.0-generic", None).unwrap();
        assert_eq!(t.name(), "fleet");
        let t = resolve("/boot/vmlinuz-6.8.0-generic", None).unwrap();
        assert_eq!(t.name(), "vmlinuz-6.8.0-generic");
        let err = resolve("6.2", None).unwrap_err().to_string();
        assert!(err.contains("unknown kernel '6.2'"), "{err}");
        assert!(err.contains("6.1"), "{err}");
    }
}
