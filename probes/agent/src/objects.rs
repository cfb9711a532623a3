//! The compiled BPF probe objects (probes/bpf/*.c, built by build.rs), embedded.

/// tail_call.c: the chain and the empty slot.
pub static TAIL_CALL: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tail_call.o"));
/// bpf2bpf_tail_mix.c: subprogram calls with and without tail calls.
pub static BPF2BPF_TAIL_MIX: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bpf2bpf_tail_mix.o"));
/// fentry_tc.c: the configurable tc verdict and its fentry/fexit tracers.
pub static FENTRY_TC: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fentry_tc.o"));

/// seed_tcpconn.c: the tail-call notes' tcp_connect demo.
pub static SEED_TCPCONN: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/seed_tcpconn.o"));
/// seed_fentry_fexit_tc.c: the fentry/fexit-on-tc article's ICMP tracer.
pub static SEED_FENTRY_FEXIT_TC: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/seed_fentry_fexit_tc.o"));
/// seed_seccomp.c: the tail-call-vs-bpf2bpf article's __seccomp_filter demo.
pub static SEED_SECCOMP: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/seed_seccomp.o"));
/// tc_pass.c: the pass-through classifier kept on lo's clsact ingress.
pub static TC_PASS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_pass.o"));

/// The object a case names with `CaseId::object()`.
pub fn by_name(name: &str) -> Option<&'static [u8]> {
    match name {
        "tail_call" => Some(TAIL_CALL),
        "bpf2bpf_tail_mix" => Some(BPF2BPF_TAIL_MIX),
        "fentry_tc" => Some(FENTRY_TC),
        "seed_tcpconn" => Some(SEED_TCPCONN),
        "seed_fentry_fexit_tc" => Some(SEED_FENTRY_FEXIT_TC),
        "seed_seccomp" => Some(SEED_SECCOMP),
        _ => None,
    }
}

/// The stack bytes program `program` of `object` uses in its own frame: the
/// deepest access below the frame pointer (r10), directly or through a register
/// holding r10 plus a constant, as the verifier measures a subprogram's
/// `stack_depth`. Called subprograms are not counted: the caller-stack rule is
/// about each caller's own frame.
pub fn stack_depth(object: &[u8], program: &str) -> anyhow::Result<u32> {
    let obj = aya_obj::Object::parse(object).map_err(|e| anyhow::anyhow!("parsing object: {e}"))?;
    let prog = obj
        .programs
        .get(program)
        .ok_or_else(|| anyhow::anyhow!("no program {program} in the object"))?;
    let function = obj
        .functions
        .get(&prog.function_key())
        .ok_or_else(|| anyhow::anyhow!("no function for program {program}"))?;
    Ok(frame_depth(&function.instructions))
}

fn frame_depth(insns: &[aya_obj::generated::bpf_insn]) -> u32 {
    const FP: usize = 10;
    const CLASS_LDX: u8 = 0x01;
    const CLASS_ST: u8 = 0x02;
    const CLASS_STX: u8 = 0x03;
    const CLASS_ALU64: u8 = 0x07;
    const MOV64_X: u8 = 0xbf;
    const ADD64_K: u8 = 0x07;
    // Registers known to hold r10 + offset; any other write forgets them.
    let mut fp_off: [Option<i64>; 11] = [None; 11];
    fp_off[FP] = Some(0);
    let mut deepest: i64 = 0;
    let mut skip_next = false;
    for insn in insns {
        if std::mem::take(&mut skip_next) {
            continue; // second half of a 16-byte ld_imm64
        }
        let (code, dst, src) = (insn.code, insn.dst_reg() as usize, insn.src_reg() as usize);
        let (dst, src) = (dst.min(10), src.min(10));
        let class = code & 0x07;
        let access = match class {
            CLASS_LDX => fp_off[src].map(|o| o + i64::from(insn.off)),
            CLASS_ST | CLASS_STX => fp_off[dst].map(|o| o + i64::from(insn.off)),
            _ => None,
        };
        if let Some(at) = access {
            deepest = deepest.min(at);
        }
        match (class, code) {
            (_, MOV64_X) => fp_off[dst] = fp_off[src],
            (_, ADD64_K) => {
                fp_off[dst] = fp_off[dst].map(|o| o + i64::from(insn.imm));
                if let Some(at) = fp_off[dst] {
                    deepest = deepest.min(at);
                }
            }
            (CLASS_LDX, _) => fp_off[dst] = None,
            (CLASS_ST | CLASS_STX, _) => {}
            // ld_imm64 takes two slots and writes dst.
            (0x00, 0x18) => {
                fp_off[dst] = None;
                skip_next = true;
            }
            // Calls clobber r0-r5.
            (0x05, 0x85) => fp_off[..6].iter_mut().for_each(|r| *r = None),
            (0x04 | CLASS_ALU64, _) => fp_off[dst] = None,
            _ => {}
        }
        fp_off[FP] = Some(0);
    }
    (-deepest) as u32
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_case_has_its_object() {
        for case in bpfmatrix_protocol::CaseId::ALL {
            let bytes = super::by_name(case.object())
                .unwrap_or_else(|| panic!("no object {}", case.object()));
            assert_eq!(&bytes[..4], b"\x7fELF");
            aya_obj::Object::parse(bytes).expect("the object parses");
        }
    }

    #[test]
    fn caller_frames_are_read_from_the_compiled_object() {
        // The 224/240/320-byte frames are the cases' point: the object must have
        // them (a different clang laying them out otherwise is caught here, on the
        // host, before any guest boots), and the control entry has almost none.
        let depth = |p| super::stack_depth(super::BPF2BPF_TAIL_MIX, p).unwrap();
        assert_eq!(depth("frame224_entry"), 224);
        assert_eq!(depth("frame240_entry"), 240);
        assert_eq!(depth("big_frame_entry"), 320);
        assert!(depth("control_entry") < 32, "{}", depth("control_entry"));
        assert!(super::stack_depth(super::BPF2BPF_TAIL_MIX, "nope").is_err());
    }
}
