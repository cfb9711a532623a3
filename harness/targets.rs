//! Which kernels a run covers: names from the catalog of known kernels, or kernel
//! images the user points at, and obtaining each (download, cache, validate).

use anyhow::{bail, Result};
use bpfmatrix_kernels::catalog::{self, CatalogEntry, FetchError, Source};
use bpfmatrix_kernels::Kernel;
use std::path::{Path, PathBuf};

/// The kernels bpfmatrix knows by name (kernels/catalog.toml).
pub fn catalog() -> Vec<CatalogEntry> {
    catalog::catalog()
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
            Target::Catalog(e) => &e.name,
            Target::Image { name, .. } => name,
        }
    }

    /// A kernel the user pointed at on disk (an image or a .deb), not a catalog
    /// name: what goes wrong with it is bad input, reported before any guest runs.
    pub fn is_user_path(&self) -> bool {
        match self {
            Target::Catalog(e) => matches!(e.source, Source::DebFiles(_)),
            Target::Image { .. } => true,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Catalog(e) => e.note.clone(),
            Target::Image { image, .. } => format!("kernel image {}", image.display()),
        }
    }
}

/// `arg` is a catalog name (`6.1`), or a path to a bzImage, a vmlinux or a kernel
/// .deb (anything with a `/` or that exists on disk), or several .debs of one kernel
/// separated by commas (image and modules: `linux-binary-R.deb,linux-modules-R.deb`).
/// Paths are named after their (first) file unless the user writes `NAME=PATH`.
pub fn resolve(arg: &str, modules: Option<&Path>) -> Result<Target> {
    if let Some(entry) = catalog::find(arg) {
        return Ok(Target::Catalog(entry));
    }
    let (name, spec) = match arg.split_once('=') {
        Some((n, p)) => (Some(n.to_string()), p),
        None => (None, arg),
    };
    // A file whose name has a comma is one path; otherwise commas separate packages.
    let paths: Vec<PathBuf> = if spec.contains(',') && !Path::new(spec).exists() {
        spec.split(',').map(PathBuf::from).collect()
    } else {
        vec![PathBuf::from(spec)]
    };
    let name = name.unwrap_or_else(|| {
        paths[0]
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| arg.to_string())
    });
    let is_deb = |p: &PathBuf| p.extension().is_some_and(|e| e == "deb");
    if paths.len() > 1 {
        if let Some(other) = paths.iter().find(|p| !is_deb(p)) {
            bail!(
                "kernel '{arg}': only .deb packages can be given together (image and modules, separated by commas), and '{}' is not one",
                other.display()
            );
        }
    }
    if paths.iter().all(is_deb) {
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Ok(Target::Catalog(CatalogEntry {
            version: String::new(),
            note: format!(
                "kernel package{} {}",
                if paths.len() > 1 { "s" } else { "" },
                list.join(" + ")
            ),
            source: Source::DebFiles(paths),
            name,
        }));
    }
    let path = paths.into_iter().next().expect("one path");
    if path.components().count() > 1 || path.exists() {
        return Ok(Target::Image {
            name,
            image: path,
            modules: modules.map(Path::to_path_buf),
        });
    }
    let known: Vec<String> = catalog().into_iter().map(|e| e.name).collect();
    bail!(
        "unknown kernel '{arg}': known kernels are {}; or give a path to a bzImage or vmlinux",
        known.join(", ")
    )
}

/// Downloads (or finds in the cache) and validates the kernel. A source this
/// machine cannot reach is [`FetchError::Unavailable`]; everything else that goes
/// wrong (a corrupt image, a checksum mismatch) is a failure to show.
pub fn obtain(target: &Target, progress: &mut dyn FnMut(&str)) -> Result<Kernel, FetchError> {
    match target {
        Target::Catalog(entry) => catalog::fetch(entry, progress),
        Target::Image {
            name,
            image,
            modules,
        } => bpfmatrix_kernels::from_image(name, image, modules.as_deref())
            .map_err(FetchError::Failed),
    }
}

/// Whether the kernel can be had here, judged without downloading anything: in
/// the cache; or its source's host resolves and the tool that fetches from it is
/// installed. "available" is a good guess, not a promise; "unavailable" says why.
pub fn availability(target: &Target) -> String {
    if is_cached(target) {
        return "cached".to_string();
    }
    let Target::Catalog(entry) = target else {
        return "on disk".to_string();
    };
    let (tool, url) = match &entry.source {
        Source::Debian(_) => (
            "apt-get",
            std::env::var("BPFMATRIX_DEBIAN_MIRROR")
                .unwrap_or_else(|_| "http://deb.debian.org/debian".to_string()),
        ),
        Source::UbuntuMainline(m) => ("curl", m.folder.clone()),
        Source::DebFiles(_) => return "on disk".to_string(),
    };
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default()
        .to_string();
    if which::which(tool).is_err() {
        return format!("unavailable: {tool} is not installed");
    }
    match std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 443)) {
        Ok(_) => format!("available from {host}"),
        Err(e) => format!("unavailable: {host} does not resolve ({e})"),
    }
}

/// Whether the kernel is in the cache already (no network involved).
pub fn is_cached(target: &Target) -> bool {
    match target {
        Target::Catalog(entry) => catalog::cached(entry).is_some(),
        Target::Image { .. } => true,
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
        let t = resolve("/srv/linux-image-6.8.0-generic_amd64.deb", None).unwrap();
        assert!(matches!(
            t,
            Target::Catalog(CatalogEntry {
                source: Source::DebFiles(_),
                ..
            })
        ));
        let t = resolve(
            "sid=/d/linux-binary-7.2.13.deb,/d/linux-modules-7.2.13.deb",
            None,
        )
        .unwrap();
        assert_eq!(t.name(), "sid");
        let Target::Catalog(CatalogEntry {
            source: Source::DebFiles(debs),
            ..
        }) = &t
        else {
            panic!("{t:?}")
        };
        assert_eq!(
            debs,
            &[
                PathBuf::from("/d/linux-binary-7.2.13.deb"),
                PathBuf::from("/d/linux-modules-7.2.13.deb")
            ]
        );
        assert_eq!(
            t.describe(),
            "kernel packages /d/linux-binary-7.2.13.deb + /d/linux-modules-7.2.13.deb"
        );
        let t = resolve(
            "/d/linux-binary-7.2.13.deb,/d/linux-modules-7.2.13.deb",
            None,
        )
        .unwrap();
        assert_eq!(t.name(), "linux-binary-7.2.13.deb");
        let err = resolve("x=/d/a.deb,/boot/vmlinuz", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'/boot/vmlinuz' is not one"), "{err}");
        assert_eq!(resolve("latest", None).unwrap().name(), "latest");
        let err = resolve("6.2", None).unwrap_err().to_string();
        assert!(err.contains("unknown kernel '6.2'"), "{err}");
        assert!(err.contains("6.1"), "{err}");
    }
}
