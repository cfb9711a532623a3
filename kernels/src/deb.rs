//! Reads Debian packages (`.deb`: an ar archive holding a data.tar and a
//! control.tar, each plain or compressed with xz, zstd or gzip): unpacks the files
//! a caller wants and reads the control file's Package and Depends. What a kernel
//! needs of them is [`crate::layout`]'s business.

use anyhow::{bail, Context};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// A regular file unpacked from a package.
#[derive(Clone, Debug)]
pub(crate) struct Unpacked {
    /// Its path in the package, e.g. "usr/lib/modules/7.2.13+deb14-amd64/vmlinuz".
    pub in_package: String,
    /// Where it went in the tree, e.g. "lib/modules/7.2.13+deb14-amd64/vmlinuz".
    pub rel: PathBuf,
}

/// Unpacks the files of a .deb (an ar archive holding data.tar.{xz,zst,gz}) that
/// `wanted` gives a place for, relative to `dest`, and says which regular files it
/// unpacked. Paths leaving the package's root (`..`, absolute) are never unpacked.
pub(crate) fn unpack_deb(
    deb: &Path,
    dest: &Path,
    wanted: &dyn Fn(&Path) -> Option<PathBuf>,
) -> anyhow::Result<Vec<Unpacked>> {
    let mut unpacked = Vec::new();
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
            let path = item.path()?.into_owned();
            let inside = path
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            let Some(rel) = wanted(&path).filter(|_| inside) else {
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
                    let in_package = path
                        .components()
                        .filter(|c| matches!(c, Component::Normal(_)))
                        .collect::<PathBuf>();
                    unpacked.push(Unpacked {
                        in_package: in_package.display().to_string(),
                        rel,
                    });
                }
                // Links (build/source in some packages) point outside the package.
                _ => {}
            }
        }
        return Ok(unpacked);
    }
    bail!(
        "{} holds no data.tar.*: not a Debian package",
        deb.display()
    )
}

/// The fields of a package's control file that say what it is.
pub(crate) struct Control {
    pub package: String,
    pub depends: String,
}

/// `Package` and `Depends` from the control.tar.* of `deb`, for messages.
pub(crate) fn control(deb: &Path) -> Option<Control> {
    let mut archive = ar::Archive::new(std::fs::File::open(deb).ok()?);
    while let Some(entry) = archive.next_entry() {
        let entry = entry.ok()?;
        let id = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_owned();
        let data: Box<dyn Read> = match id.as_str() {
            "control.tar.xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            "control.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "control.tar.zst" => Box::new(ruzstd::decoding::StreamingDecoder::new(entry).ok()?),
            "control.tar" => Box::new(entry),
            _ => continue,
        };
        let mut tar = tar::Archive::new(data);
        for item in tar.entries().ok()? {
            let item = item.ok()?;
            let path = item.path().ok()?.into_owned();
            if path.file_name().is_some_and(|n| n == "control") {
                let mut text = String::new();
                item.take(1 << 20).read_to_string(&mut text).ok()?;
                let field = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                        .map(|v| v.trim().to_owned())
                };
                return Some(Control {
                    package: field("Package")?,
                    depends: field("Depends").unwrap_or_default(),
                });
            }
        }
        return None;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A .deb (ar archive: debian-binary, data.tar.xz) holding `files`.
    pub(crate) fn synthetic_deb(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        synthetic_deb_with_control(files, None)
    }

    pub(crate) fn tar_xz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, body) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, body.as_slice()).unwrap();
        }
        crate::bzimage::tests::xz(&tar.into_inner().unwrap())
    }

    /// [`synthetic_deb`] with a control.tar.xz holding `control` as ./control.
    pub(crate) fn synthetic_deb_with_control(
        files: &[(&str, Vec<u8>)],
        control: Option<&str>,
    ) -> Vec<u8> {
        let mut members = vec![("debian-binary", b"2.0\n".to_vec())];
        if let Some(control) = control {
            members.push((
                "control.tar.xz",
                tar_xz(&[("./control", control.as_bytes().to_vec())]),
            ));
        }
        members.push(("data.tar.xz", tar_xz(files)));
        let mut deb = ar::Builder::new(Vec::new());
        for (id, body) in members {
            let header = ar::Header::new(id.as_bytes().to_vec(), body.len() as u64);
            deb.append(&header, body.as_slice()).unwrap();
        }
        deb.into_inner().unwrap()
    }

    #[test]
    fn only_wanted_files_inside_the_package_are_unpacked_and_the_control_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("p.deb");
        std::fs::write(
            &deb,
            synthetic_deb_with_control(
                &[
                    ("./boot/vmlinuz-1", b"image".to_vec()),
                    ("./usr/share/doc/x", b"doc".to_vec()),
                ],
                Some("Package: linux-image-1\nDepends: linux-binary-1, kmod\n"),
            ),
        )
        .unwrap();
        let dest = dir.path().join("root");
        let everything = |p: &Path| Some(p.to_path_buf());
        let skip_doc = |p: &Path| everything(p).filter(|p| !p.ends_with("doc/x"));
        let unpacked = unpack_deb(&deb, &dest, &skip_doc).unwrap();
        let names: Vec<&str> = unpacked.iter().map(|u| u.in_package.as_str()).collect();
        assert_eq!(names, ["boot/vmlinuz-1"]);
        assert_eq!(
            std::fs::read(dest.join("boot/vmlinuz-1")).unwrap(),
            b"image"
        );
        assert!(!dest.join("usr").exists());
        let read = control(&deb).unwrap();
        assert_eq!(read.package, "linux-image-1");
        assert_eq!(read.depends, "linux-binary-1, kmod");

        std::fs::write(&deb, b"not an archive").unwrap();
        let err = unpack_deb(&deb, &dest, &everything).unwrap_err();
        assert!(format!("{err:#}").contains("p.deb"), "{err:#}");
        assert!(control(&deb).is_none());
    }
}
