//! What aya_obj reads from a BPF ELF object but keeps to itself: each section's
//! name (a program's section names its type and its attach target, e.g.
//! "fentry/do_unlinkat") and where the object's CO-RE relocations sit (`.BTF.ext`).

use anyhow::{bail, Context, Result};

/// One section of the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    offset: usize,
    size: usize,
    /// SHT_NOBITS (.bss) has a size but no bytes in the file.
    nobits: bool,
}

impl Section {
    /// Where the section's bytes are in the file (none for SHT_NOBITS).
    pub fn file_range(&self) -> Option<std::ops::Range<usize>> {
        (!self.nobits).then(|| self.offset..self.offset.saturating_add(self.size))
    }
}

/// One CO-RE relocation: the instruction at byte `insn_off` of section `section`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreSite {
    pub section: String,
    pub insn_off: u32,
}

/// The sections of a 64-bit little-endian ELF file, by index.
pub fn sections(elf: &[u8]) -> Result<Vec<Section>> {
    const SHT_NOBITS: u32 = 8;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        bail!("not a 64-bit little-endian ELF file");
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let shstrndx = u16_at(elf, 0x3e)? as usize;
    if shentsize < 64 {
        bail!("section headers of {shentsize} bytes");
    }
    let mut raw = Vec::with_capacity(shnum);
    for i in 0..shnum {
        let at = shoff + i * shentsize;
        raw.push((
            u32_at(elf, at)? as usize,
            u32_at(elf, at + 4)?,
            u64_at(elf, at + 24)? as usize,
            u64_at(elf, at + 32)? as usize,
        ));
    }
    let &(_, _, str_off, str_size) = raw.get(shstrndx).context("no section-name string table")?;
    let names = elf
        .get(str_off..str_off.saturating_add(str_size))
        .context("section-name string table outside the file")?;
    raw.into_iter()
        .map(|(name, ty, offset, size)| {
            Ok(Section {
                name: c_string(names, name)?,
                offset,
                size,
                nobits: ty == SHT_NOBITS,
            })
        })
        .collect()
}

/// The bytes of the section named `name`, if the object has it.
pub fn section_data<'a>(
    elf: &'a [u8],
    sections: &[Section],
    name: &str,
) -> Result<Option<&'a [u8]>> {
    let Some(s) = sections.iter().find(|s| s.name == name) else {
        return Ok(None);
    };
    if s.nobits {
        return Ok(Some(&[]));
    }
    elf.get(s.offset..s.offset.saturating_add(s.size))
        .map(Some)
        .with_context(|| format!("section {name} outside the file"))
}

/// Every CO-RE relocation of the object, in the order of `.BTF.ext` (the order
/// aya_obj relocates them in). None without `.BTF`/`.BTF.ext`.
pub fn core_sites(elf: &[u8], sections: &[Section]) -> Result<Vec<CoreSite>> {
    let (Some(btf), Some(ext)) = (
        section_data(elf, sections, ".BTF")?,
        section_data(elf, sections, ".BTF.ext")?,
    ) else {
        return Ok(Vec::new());
    };
    // struct btf_ext_header: magic, version, flags, hdr_len, func_info_off/len,
    // line_info_off/len, then (when hdr_len reaches it) core_relo_off/len.
    if u16_at(ext, 0)? != 0xeb9f {
        bail!(".BTF.ext has a bad magic number");
    }
    let hdr_len = u32_at(ext, 4)? as usize;
    if hdr_len < 32 {
        return Ok(Vec::new());
    }
    let relo_off = hdr_len + u32_at(ext, 24)? as usize;
    let relo_len = u32_at(ext, 28)? as usize;
    if relo_len == 0 {
        return Ok(Vec::new());
    }
    let relos = ext
        .get(relo_off..relo_off + relo_len)
        .context(".BTF.ext CO-RE relocations outside the section")?;
    // struct btf_header: magic, version, flags, hdr_len, type_off/len, str_off/len.
    let btf_hdr = u32_at(btf, 4)? as usize;
    let str_off = btf_hdr + u32_at(btf, 16)? as usize;
    let str_len = u32_at(btf, 20)? as usize;
    let strings = btf
        .get(str_off..str_off + str_len)
        .context(".BTF strings outside the section")?;
    let rec_size = u32_at(relos, 0)? as usize;
    if rec_size < 4 {
        bail!(".BTF.ext CO-RE records of {rec_size} bytes");
    }
    let mut sites = Vec::new();
    let mut at = 4;
    while at < relos.len() {
        let section = c_string(strings, u32_at(relos, at)? as usize)?;
        let count = u32_at(relos, at + 4)? as usize;
        at += 8;
        for _ in 0..count {
            sites.push(CoreSite {
                section: section.clone(),
                insn_off: u32_at(relos, at)?,
            });
            at += rec_size;
        }
    }
    Ok(sites)
}

/// Empties `.BTF.ext`'s CO-RE relocation subsection in place (its length set
/// to 0; func and line info untouched), for an object whose relocations were
/// already applied to its instructions.
pub fn drop_core_relocations(elf: &mut [u8], sections: &[Section]) -> Result<()> {
    let Some(range) = sections
        .iter()
        .find(|s| s.name == ".BTF.ext")
        .and_then(Section::file_range)
    else {
        return Ok(());
    };
    let ext = elf.get_mut(range).context(".BTF.ext outside the file")?;
    if u32_at(ext, 4)? < 32 {
        return Ok(());
    }
    ext.get_mut(28..32)
        .context(".BTF.ext header cut short")?
        .copy_from_slice(&0u32.to_le_bytes());
    Ok(())
}

fn c_string(table: &[u8], at: usize) -> Result<String> {
    let rest = table.get(at..).context("string offset outside its table")?;
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b.get(at..at + 2).context("ELF data cut short")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b.get(at..at + 4).context("ELF data cut short")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    let s = b.get(at..at + 8).context("ELF data cut short")?;
    Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects;

    #[test]
    fn names_every_program_section_as_aya_obj_indexes_it() {
        let obj = aya_obj::Object::parse(objects::FENTRY_TC).unwrap();
        let sections = sections(objects::FENTRY_TC).unwrap();
        let name_of = |prog: &str| sections[obj.programs[prog].section_index].name.clone();
        assert_eq!(name_of("tc_verdict"), "classifier");
        assert_eq!(name_of("fentry_tc"), "fentry/tc_verdict");
        assert_eq!(name_of("fexit_tc"), "fexit/tc_verdict");
    }

    #[test]
    fn finds_the_core_relocations_of_the_tracers() {
        // fentry_tc.c reads skb->len with BPF_CORE_READ in fentry_tc only.
        let sections = sections(objects::FENTRY_TC).unwrap();
        let sites = core_sites(objects::FENTRY_TC, &sections).unwrap();
        assert!(!sites.is_empty());
        assert!(
            sites.iter().all(|s| s.section == "fentry/tc_verdict"),
            "{sites:?}"
        );
        // tail_call.c has no CO-RE read.
        let plain = super::sections(objects::TAIL_CALL).unwrap();
        assert_eq!(core_sites(objects::TAIL_CALL, &plain).unwrap(), []);
    }

    #[test]
    fn refuses_what_is_not_elf() {
        assert!(sections(b"").is_err());
        assert!(sections(&[0u8; 64]).is_err());
        let mut cut = objects::TAIL_CALL.to_vec();
        cut.truncate(200);
        assert!(sections(&cut).is_err());
    }
}
