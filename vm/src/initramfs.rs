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
pub(crate) mod tests {
    use super::*;

    /// One entry as a newc reader sees it.
    #[derive(Debug)]
    pub(crate) struct Listed {
        pub name: String,
        pub mode: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    /// Reads an archive back with the cpio crate's newc reader (its own parser,
    /// not the writer's code), up to the trailer, which must be there. Used
    /// instead of a `cpio` tool so the test needs nothing installed and never
    /// skips.
    pub(crate) fn list(archive: &Path) -> Vec<Listed> {
        let mut file = std::io::BufReader::new(File::open(archive).unwrap());
        let mut entries = Vec::new();
        loop {
            let mut reader = cpio::NewcReader::new(file).expect("a newc header");
            if reader.entry().is_trailer() {
                return entries;
            }
            let e = reader.entry();
            let (name, mode, rdev) = (
                e.name().to_string(),
                e.mode(),
                (e.rdev_major(), e.rdev_minor()),
            );
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
            entries.push(Listed {
                name,
                mode,
                rdev,
                data,
            });
            file = reader.finish().unwrap();
        }
    }

    #[test]
    fn archive_round_trips_through_a_newc_reader() {
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

        let entries = list(&archive);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
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
            "parents come before their children"
        );
        assert_eq!(entries[1].mode, 0o020600, "a character device, 0600");
        assert_eq!(entries[1].rdev, (5, 1));
        assert_eq!(entries[2].mode, 0o100755);
        assert_eq!(entries[2].data, b"#!/bin/true\n");
        assert_eq!(entries[4].data, b"{}");
        assert_eq!(entries[5].mode, 0o041777, "a directory with the sticky bit");
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
