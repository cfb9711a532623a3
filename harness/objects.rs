//! The user's BPF objects (`bpfmatrix check`): read and vetted on the host before
//! any kernel is fetched or booted, so a file that is not a BPF object is a usage
//! error naming it, never a failed guest. Each becomes an [`ObjectSpec`] (its
//! name, its place in the guest, its programs) and the file the guest carries.

use anyhow::{bail, Context, Result};
use bpfmatrix_protocol::{ObjectSpec, MAX_OBJECTS_BYTES, OBJECTS_DIR};
use std::path::{Path, PathBuf};

/// ELF's e_machine for BPF.
const EM_BPF: u16 = 247;

/// One object the guest will load, vetted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserObject {
    pub spec: ObjectSpec,
    /// The file on the host.
    pub file: PathBuf,
}

/// Reads and vets every object, in the order given. Names are the files' names,
/// made unique ("a.o", then "dir/a.o" for a second a.o).
pub fn load(paths: &[PathBuf]) -> Result<Vec<UserObject>> {
    let mut objects: Vec<UserObject> = Vec::new();
    let mut total = 0u64;
    for (i, path) in paths.iter().enumerate() {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        total += bytes.len() as u64;
        if total > MAX_OBJECTS_BYTES {
            bail!(
                "{}: the objects add up to more than {} MiB, the most one guest carries (they live in its memory)",
                path.display(),
                MAX_OBJECTS_BYTES >> 20
            );
        }
        let programs = programs_of(&bytes).with_context(|| path.display().to_string())?;
        let mut name = file_name(path);
        if objects.iter().any(|o| o.spec.name == name) {
            name = path.display().to_string();
        }
        if objects.iter().any(|o| o.spec.name == name) {
            bail!("{} is given twice", path.display());
        }
        objects.push(UserObject {
            spec: ObjectSpec {
                name,
                path: format!("{OBJECTS_DIR}/{i}.o"),
                programs,
            },
            file: path.clone(),
        });
    }
    Ok(objects)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The programs of a BPF object, in the object's order (section, then offset);
/// an error that says what the bytes are when they are not a BPF object.
pub fn programs_of(bytes: &[u8]) -> Result<Vec<String>> {
    if bytes.is_empty() {
        bail!("empty file: not a BPF object");
    }
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        bail!(
            "not a BPF object: {} (compile it with `clang -O2 -g -target bpf -c prog.c -o prog.o`)",
            if bytes.starts_with(b"\x7fELF") {
                "an ELF file cut short before the end of its header".to_string()
            } else {
                format!("no ELF header ({} bytes)", bytes.len())
            }
        );
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        bail!("not a BPF object: a 32-bit or big-endian ELF file (BPF objects here are 64-bit little-endian)");
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != EM_BPF {
        bail!("not a BPF object: an ELF file for machine {machine} (BPF is {EM_BPF}); was it compiled with -target bpf?");
    }
    let obj = aya_obj::Object::parse(bytes)
        .map_err(|e| anyhow::anyhow!("not a usable BPF object (truncated or damaged?): {e}"))?;
    let mut programs: Vec<(usize, u64, String)> = obj
        .programs
        .iter()
        .map(|(name, p)| (p.section_index, p.address, name.clone()))
        .collect();
    if programs.is_empty() {
        bail!("a BPF object without programs: nothing to load");
    }
    programs.sort();
    Ok(programs.into_iter().map(|(_, _, n)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", programs_of(bytes).unwrap_err())
    }

    #[test]
    fn what_is_not_a_bpf_object_is_named_for_what_it_is() {
        assert!(err(b"").contains("empty file"));
        assert!(err(b"#!/bin/sh\necho hi\n").contains("no ELF header"));
        assert!(err(b"\x7fELF\x02\x01").contains("cut short"));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62; // EM_X86_64
        assert!(err(&elf).contains("machine 62"), "{}", err(&elf));
        elf[18] = 247;
        assert!(err(&elf).contains("truncated or damaged"), "{}", err(&elf));
    }

    #[test]
    fn the_host_itself_is_not_a_bpf_object() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(err(&me).contains("machine 62"), "{}", err(&me));
    }

    #[test]
    fn names_are_unique_and_files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.o");
        std::fs::write(&empty, b"").unwrap();
        let e = format!("{:#}", load(std::slice::from_ref(&empty)).unwrap_err());
        assert!(e.contains("empty.o") && e.contains("empty file"), "{e}");
        let missing = dir.path().join("missing.o");
        let e = format!("{:#}", load(&[missing]).unwrap_err());
        assert!(e.contains("missing.o"), "{e}");
    }
}
