//! Writes the report folder: `matrix.json`, `matrix.md` and `matrix.html`. Each file
//! is written under a temporary name and renamed into place only when all three are
//! written, so a failure never leaves a partial report that looks complete.

use crate::document::Document;
use crate::report;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub const FILES: [&str; 3] = ["matrix.json", "matrix.md", "matrix.html"];

/// Fails early, before any guest boots, when `dir` cannot take the report.
pub fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the report folder {}", dir.display()))?;
    tempfile::tempfile_in(dir)
        .map(drop)
        .with_context(|| format!("the report folder {} is not writable", dir.display()))
}

/// Writes the three files; returns their paths.
pub fn write_reports(doc: &Document, dir: &Path) -> Result<Vec<PathBuf>> {
    check_writable(dir)?;
    let contents = [
        serde_json::to_string_pretty(doc)? + "\n",
        report::markdown(doc),
        report::html(doc),
    ];
    let mut staged = Vec::new();
    for (name, text) in FILES.iter().zip(contents) {
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .tempfile_in(dir)
            .with_context(|| format!("cannot write into {}", dir.display()))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())
            .with_context(|| format!("cannot write {name} into {}", dir.display()))?;
        staged.push((tmp, dir.join(name)));
    }
    let mut written = Vec::new();
    for (tmp, path) in staged {
        tmp.persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn all_three_files_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let doc = Document::from_runs(&[run("6.1", 33)]);
        let paths = write_reports(&doc, dir.path()).unwrap();
        assert_eq!(paths.len(), 3);
        assert_eq!(Document::read(&paths[0]).unwrap(), doc);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn an_unwritable_folder_is_a_clear_error_and_leaves_nothing() {
        if nix_is_root() {
            // root ignores directory permissions; a path under a regular file
            // cannot be created by anyone.
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("file");
            std::fs::write(&file, "x").unwrap();
            let err = format!("{:#}", check_writable(&file.join("reports")).unwrap_err());
            assert!(err.contains("cannot create the report folder"), "{err}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
        let err = format!("{:#}", check_writable(dir.path()).unwrap_err());
        assert!(err.contains("is not writable"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    fn nix_is_root() -> bool {
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
    }
}
