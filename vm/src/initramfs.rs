//! Writes newc cpio archives, the format the kernel unpacks as its initramfs:
//! directories, files (from memory or from a host path) and character devices,
//! each parent directory created before its children.

use anyhow::Context;
use cpio::newc::{Builder, ModeFileType};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where a file's bytes come from.
#[derive(Clone, Debug)]
pub enum FileSource {
    Bytes(Vec<u8>),
    /// Read from the host when the archive is written (large files are streamed).
    Path(PathBuf),
}

impl From<Vec<u8>> for FileSource {
    fn from(bytes: Vec<u8>) -> Self {
        FileSource::Bytes(bytes)
    }
}
impl From<&[u8]> for FileSource {
    fn from(bytes: &[u8]) -> Self {
        FileSource::Bytes(bytes.to_vec())
    }
}
impl From<&str> for FileSource {
    fn from(text: &str) -> Self {
        FileSource::Bytes(text.as_bytes().to_vec())
    }
}
impl From<String> for FileSource {
    fn from(text: String) -> Self {
        FileSource::Bytes(text.into_bytes())
    }
}
impl From<&Path> for FileSource {
    fn from(path: &Path) -> Self {
        FileSource::Path(path.to_path_buf())
    }
}
impl From<PathBuf> for FileSource {
    fn from(path: PathBuf) -> Self {
        FileSource::Path(path)
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(FileSource),
    CharDev { major: u32, minor: u32 },
}

#[derive(Clone, Debug)]
struct Entry {
    /// Archive path without a leading slash ("dev/console").
    path: String,
    mode: u32,
    kind: Kind,
}

/// A newc cpio archive being assembled. Paths are absolute guest paths
/// ("/dev/console"); missing parent directories are added with mode 0755.
#[derive(Clone, Debug, Default)]
pub struct Initramfs {
    entries: Vec<Entry>,
}

impl Initramfs {
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Initramfs {
        self.push(path, mode, Kind::Dir);
        self
    }

    pub fn file(mut self, path: &str, source: impl Into<FileSource>, mode: u32) -> Initramfs {
        self.push(path, mode, Kind::File(source.into()));
        self
    }

    pub fn char_dev(mut self, path: &str, major: u32, minor: u32, mode: u32) -> Initramfs {
        self.push(path, mode, Kind::CharDev { major, minor });
        self
    }

    fn push(&mut self, path: &str, mode: u32, kind: Kind) {
        let path = path.trim_matches('/').to_owned();
        // The kernel's unpacker does not create parents: add them first.
        let mut parent = String::new();
        for part in path
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !self.entries.iter().any(|e| e.path == parent) {
                self.entries.push(Entry {
                    path: parent.clone(),
                    mode: 0o755,
                    kind: Kind::Dir,
                });
            }
        }
        match self.entries.iter_mut().find(|e| e.path == path) {
            // A later call for the same path wins (e.g. a dir first added as a parent).
            Some(existing) => {
                existing.mode = mode;
                existing.kind = kind;
            }
            None => self.entries.push(Entry { path, mode, kind }),
        }
    }

    /// Writes the archive to `out` (through a temporary file renamed into place).
    pub fn write_to(&self, out: &Path) -> anyhow::Result<()> {
        let mut name = out.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp.{}", std::process::id()));
        let tmp = out.with_file_name(name);
        let result = self.write_archive(&tmp);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        std::fs::rename(&tmp, out)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))
    }

    fn write_archive(&self, path: &Path) -> anyhow::Result<()> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut seen = BTreeSet::new();
        for (ino, entry) in self.entries.iter().enumerate() {
            if !seen.insert(&entry.path) {
                continue;
            }
            let builder = Builder::new(&entry.path)
                // Distinct inode numbers: the unpacker treats equal ones as hard links.
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mode(entry.mode & 0o7777);
            w = match &entry.kind {
                Kind::Dir => builder
                    .nlink(2)
                    .set_mode_file_type(ModeFileType::Directory)
                    .write(w, 0)
                    .finish()?,
                Kind::CharDev { major, minor } => builder
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor)
                    .set_mode_file_type(ModeFileType::Char)
                    .write(w, 0)
                    .finish()?,
                Kind::File(FileSource::Bytes(bytes)) => {
                    let mut writer = builder
                        .nlink(1)
                        .set_mode_file_type(ModeFileType::Regular)
                        .write(w, file_size(bytes.len() as u64, &entry.path)?);
                    writer.write_all(bytes)?;
                    writer.finish()?
                }
                Kind::File(FileSource::Path(source)) => {
                    let mut input = File::open(source)
                        .with_context(|| format!("cannot open {}", source.display()))?;
                    let len = input.metadata()?.len();
                    let mut writer = builder
                        .nlink(1)
                        .set_mode_file_type(ModeFileType::Regular)
                        .write(w, file_size(len, &entry.path)?);
                    let copied = std::io::copy(&mut input, &mut writer)
                        .with_context(|| format!("cannot read {}", source.display()))?;
                    anyhow::ensure!(
                        copied == len,
                        "{} changed size while being archived",
                        source.display()
                    );
                    writer.finish()?
                }
            };
        }
        let mut w = cpio::newc::trailer(w)?;
        w.flush()?;
        w.into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

fn file_size(len: u64, path: &str) -> anyhow::Result<u32> {
    u32::try_from(len)
        .map_err(|_| anyhow::anyhow!("/{path} is {len} bytes: newc cpio holds files up to 4 GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn archive_round_trips_through_the_cpio_tool() {
        if which::which("cpio").is_err() {
            eprintln!("skipped: no cpio tool");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let host_file = dir.path().join("agent");
        std::fs::write(&host_file, b"#!/bin/true\n").unwrap();
        let archive = dir.path().join("initramfs.cpio");
        Initramfs::new()
            .dir("/dev", 0o755)
            .char_dev("/dev/console", 5, 1, 0o600)
            .file("/init", host_file.as_path(), 0o755)
            .file("/bpfmatrix/plan.json", "{}", 0o644)
            .dir("/tmp", 0o1777)
            .write_to(&archive)
            .unwrap();

        let listing = Command::new("cpio")
            .args(["-itv", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(listing.status.success());
        let listing = String::from_utf8(listing.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        let names: Vec<&str> = lines
            .iter()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "bpfmatrix",
                "bpfmatrix/plan.json",
                "tmp"
            ],
            "{listing}"
        );
        assert!(
            lines[1].starts_with("crw-------") && lines[1].contains("5,"),
            "{listing}"
        );
        assert!(lines[2].starts_with("-rwxr-xr-x"), "{listing}");
        assert!(lines[5].starts_with("drwxrwxrwt"), "{listing}");

        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let unpack = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cpio -id --quiet --no-absolute-filenames < {}",
                archive.display()
            ))
            .current_dir(&out)
            .status()
            .unwrap();
        assert!(unpack.success());
        assert_eq!(std::fs::read(out.join("init")).unwrap(), b"#!/bin/true\n");
        assert_eq!(
            std::fs::read(out.join("bpfmatrix/plan.json")).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn missing_source_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("x.cpio");
        let err = Initramfs::new()
            .file("/init", Path::new("/nonexistent/agent"), 0o755)
            .write_to(&archive)
            .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/agent"));
        assert!(!archive.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary file left"
        );
    }
}
