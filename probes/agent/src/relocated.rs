//! CO-RE relocation done once per guest instead of at every load: the embedded
//! objects with their relocations against the kernel's BTF applied to their
//! instructions and dropped from `.BTF.ext`, so aya (and the agent's own
//! loaders) load them as they are.
//!
//! Why: aya_obj looks for each relocated type by scanning every type of the
//! kernel BTF, about 8 ms per type under TCG, and the cases load the same
//! objects again and again (each JIT mode, the tracers, the statistics loads):
//! about 100 ms of a 5.10 run. Done before a waiting guest says ready, it is
//! in every guest restored from it. The result is aya_obj's own relocation
//! (`Object::relocate_btf`), written back where the instructions came from, so
//! the kernel is handed the same instructions either way.

use anyhow::{anyhow, Context, Result};
use aya_obj::btf::Btf;
use aya_obj::generated::bpf_insn;

use crate::elf;

/// `object` relocated against `kernel_btf`; None when it has no CO-RE
/// relocation (nothing to gain).
pub fn relocated(object: &[u8], kernel_btf: &Btf) -> Result<Option<Vec<u8>>> {
    let sections = elf::sections(object)?;
    if elf::core_sites(object, &sections)?.is_empty() {
        return Ok(None);
    }
    let mut obj = aya_obj::Object::parse(object).map_err(|e| anyhow!("parsing object: {e}"))?;
    obj.relocate_btf(kernel_btf)
        .map_err(|e| anyhow!("CO-RE relocation against the kernel BTF: {e}"))?;
    let mut out = object.to_vec();
    for function in obj.functions.values() {
        let section = sections
            .get(function.section_index.0)
            .with_context(|| format!("no section for function {}", function.name))?;
        let start = section
            .file_range()
            .with_context(|| format!("function {} in a section without bytes", function.name))?
            .start
            + function.section_offset;
        let bytes = insn_bytes(&function.instructions);
        out.get_mut(start..start + bytes.len())
            .with_context(|| format!("function {} outside the file", function.name))?
            .copy_from_slice(bytes);
    }
    elf::drop_core_relocations(&mut out, &sections)?;
    Ok(Some(out))
}

fn insn_bytes(insns: &[bpf_insn]) -> &[u8] {
    // SAFETY: bpf_insn is repr(C), 8 bytes without padding (code, regs, off,
    // imm), as the instructions sit in the ELF section.
    unsafe { std::slice::from_raw_parts(insns.as_ptr().cast(), std::mem::size_of_val(insns)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::tests::sk_buff_btf;
    use crate::objects;

    fn function_bytes(obj: &aya_obj::Object) -> Vec<((usize, u64), Vec<u8>)> {
        obj.functions
            .iter()
            .map(|(key, f)| (*key, insn_bytes(&f.instructions).to_vec()))
            .collect()
    }

    #[test]
    fn the_kernel_is_handed_the_instructions_aya_would_have_relocated() {
        // fentry_tc reads skb->len through CO-RE; here it sits at byte 8.
        let target = Btf::parse(&sk_buff_btf(&[64]), aya::Endianness::default()).unwrap();
        let ahead = relocated(objects::FENTRY_TC, &target)
            .unwrap()
            .expect("fentry_tc.o has CO-RE relocations");
        let sections = elf::sections(&ahead).unwrap();
        assert_eq!(elf::core_sites(&ahead, &sections).unwrap(), []);

        let compiled = aya_obj::Object::parse(objects::FENTRY_TC).unwrap();
        let mut by_aya = compiled.clone();
        by_aya.relocate_btf(&target).unwrap();
        assert_ne!(function_bytes(&compiled), function_bytes(&by_aya));
        // What aya makes of the relocated object: no relocation left to do.
        let mut loaded = aya_obj::Object::parse(&ahead).unwrap();
        loaded.relocate_btf(&target).unwrap();
        assert_eq!(function_bytes(&loaded), function_bytes(&by_aya));
    }

    #[test]
    fn an_object_without_core_relocations_is_left_as_it_is() {
        let target = Btf::parse(&sk_buff_btf(&[64]), aya::Endianness::default()).unwrap();
        assert!(relocated(objects::TAIL_CALL, &target).unwrap().is_none());
    }

    #[test]
    fn a_relocation_aya_refuses_is_left_to_aya() {
        let target = Btf::parse(&sk_buff_btf(&[0, 64]), aya::Endianness::default()).unwrap();
        assert!(relocated(objects::FENTRY_TC, &target).is_err());
    }
}
