//! The compiled BPF probe objects (probes/bpf/*.c, built by build.rs), embedded.

/// tail_call.c: the chain and the empty slot.
pub static TAIL_CALL: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tail_call.o"));
/// bpf2bpf_tail_mix.c: subprogram calls with and without tail calls.
pub static BPF2BPF_TAIL_MIX: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf2bpf_tail_mix.o"));
/// fentry_tc.c: the configurable tc verdict and its fentry/fexit tracers.
pub static FENTRY_TC: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fentry_tc.o"));

/// The object a case names with `CaseId::object()`.
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    match name {
        "tail_call" => Some(TAIL_CALL),
        "bpf2bpf_tail_mix" => Some(BPF2BPF_TAIL_MIX),
        "fentry_tc" => Some(FENTRY_TC),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_case_has_its_object() {
        for case in bpfmatrix_probes::CaseId::ALL {
            let bytes = super::by_name(case.object())
                .unwrap_or_else(|| panic!("no object {}", case.object()));
            assert_eq!(&bytes[..4], b"\x7fELF");
            aya_obj::Object::parse(bytes).expect("the object parses");
        }
    }
}
