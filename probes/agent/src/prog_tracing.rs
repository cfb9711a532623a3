//! Loads fentry/fexit programs whose target is another BPF program, which aya
//! 0.14 cannot do (its FEntry/FExit resolve targets in vmlinux BTF only).
//!
//! The path mirrors libbpf's `bpf_program__set_attach_target()`: find the FUNC
//! of the target program in the target's own BTF as the kernel holds it, load
//! the tracing program with `attach_prog_fd` + `attach_btf_id`, and attach it
//! with `BPF_RAW_TRACEPOINT_OPEN` (available from 5.5, unlike BPF_LINK_CREATE).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{anyhow, bail, Context, Result};
use aya_obj::btf::{Btf, BtfKind};
use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_btf_info, bpf_cmd, bpf_insn, bpf_prog_type,
};
use aya_obj::Object;

use crate::verifier::{self, LogLevels, Refused, Verified};

/// Which trampoline slot a tracing program takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceKind {
    Fentry,
    Fexit,
}

impl TraceKind {
    fn attach_type(self) -> bpf_attach_type {
        match self {
            TraceKind::Fentry => bpf_attach_type::BPF_TRACE_FENTRY,
            TraceKind::Fexit => bpf_attach_type::BPF_TRACE_FEXIT,
        }
    }
}

/// Everything BPF_PROG_LOAD needs for one tracing program.
pub struct TracingLoad<'a> {
    pub name: &'a str,
    pub kind: TraceKind,
    pub insns: &'a [bpf_insn],
    pub license: &'a CStr,
    pub attach_prog_fd: RawFd,
    pub attach_btf_id: u32,
}

pub(crate) fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: attr is a fully initialised bpf_attr; the kernel reads (and for
    // some commands writes) at most size_of::<bpf_attr>() bytes of it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn owned_fd(ret: i64) -> OwnedFd {
    // SAFETY: the commands used here return a new fd the caller owns.
    unsafe { OwnedFd::from_raw_fd(ret as RawFd) }
}

/// Builds the BPF_PROG_LOAD attr, without its log (see [`verifier::load`]). The
/// pointers in it borrow `load`.
pub fn prog_load_attr(load: &TracingLoad<'_>) -> bpf_attr {
    // SAFETY: bpf_attr is plain old data; all-zero is its "unset" state.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing fields of the BPF_PROG_LOAD member of a zeroed union.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
    u.expected_attach_type = load.kind.attach_type() as u32;
    u.insns = load.insns.as_ptr() as u64;
    u.insn_cnt = load.insns.len() as u32;
    u.license = load.license.as_ptr() as u64;
    let name = load.name.as_bytes();
    let n = name.len().min(u.prog_name.len() - 1);
    for (dst, src) in u.prog_name.iter_mut().zip(&name[..n]) {
        *dst = *src as libc::c_char;
    }
    u.__bindgen_anon_1.attach_prog_fd = load.attach_prog_fd as u32;
    u.attach_btf_id = load.attach_btf_id;
    attr
}

/// BPF_PROG_LOAD for a fentry/fexit program on a BPF program target, with the
/// verifier's statistics on an acceptance and its words on a refusal.
pub fn load_tracing(load: &TracingLoad<'_>) -> Result<Verified, Refused> {
    verifier::load(&prog_load_attr(load), LogLevels::of_running_kernel())
}

/// Attaches a loaded fentry/fexit program to its target (detached on drop).
pub fn raw_tracepoint_open(prog_fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: zeroed bpf_attr, then the raw_tracepoint member is filled.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // name stays 0 (NULL): tracing programs attach to their own target.
    attr.raw_tracepoint.name = 0;
    attr.raw_tracepoint.prog_fd = prog_fd.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).map(owned_fd)
}

/// The raw BTF blob the kernel holds under `btf_id` (a program's own BTF).
pub fn kernel_btf_blob(btf_id: u32) -> Result<Vec<u8>> {
    // SAFETY: zeroed attr; the BTF_GET_FD_BY_ID member takes the id.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_6.__bindgen_anon_1.btf_id = btf_id;
    let fd = sys_bpf(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut attr)
        .map(owned_fd)
        .with_context(|| format!("BPF_BTF_GET_FD_BY_ID {btf_id}"))?;

    // First ask for the size (btf_size 0), then fetch the data.
    let mut info: bpf_btf_info = unsafe { std::mem::zeroed() };
    btf_info(fd.as_raw_fd(), &mut info)?;
    let mut blob = vec![0u8; info.btf_size as usize];
    let mut info: bpf_btf_info = unsafe { std::mem::zeroed() };
    info.btf = blob.as_mut_ptr() as u64;
    info.btf_size = blob.len() as u32;
    btf_info(fd.as_raw_fd(), &mut info)?;
    blob.truncate(info.btf_size as usize);
    Ok(blob)
}

fn btf_info(fd: RawFd, info: &mut bpf_btf_info) -> Result<()> {
    // SAFETY: zeroed attr; the info member points at a live bpf_btf_info.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd as u32;
    attr.info.info = info as *mut bpf_btf_info as u64;
    attr.info.info_len = std::mem::size_of::<bpf_btf_info>() as u32;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("BPF_OBJ_GET_INFO_BY_FD (btf)")?;
    Ok(())
}

/// The id of the FUNC named `func` in a raw BTF blob.
pub fn func_btf_id(blob: &[u8], func: &str) -> Result<u32> {
    let btf = Btf::parse(blob, aya::Endianness::default())
        .map_err(|e| anyhow!("parsing program BTF: {e}"))?;
    btf.id_by_type_name_kind(func, BtfKind::Func)
        .map_err(|e| anyhow!("no FUNC {func} in the program's BTF: {e}"))
}

/// Instructions of `programs` from `object`, ready to load: CO-RE relocated
/// against the kernel BTF (left as compiled when the kernel has none: such
/// instructions are only fit to hear the kernel's refusal), map references pointing at already created maps
/// (`map_fds` by name, so the tracers share maps with the traced program),
/// subprogram calls linked.
pub fn prepare_programs(
    object: &[u8],
    kernel_btf: Option<&Btf>,
    map_fds: &HashMap<String, RawFd>,
    programs: &[&str],
) -> Result<(CString, HashMap<String, Vec<bpf_insn>>)> {
    let mut obj = Object::parse(object).map_err(|e| anyhow!("parsing object: {e}"))?;
    if let Some(kernel_btf) = kernel_btf {
        obj.relocate_btf(kernel_btf)
            .map_err(|e| anyhow!("CO-RE relocation against the kernel BTF: {e}"))?;
    }
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    let maps = std::mem::take(&mut obj.maps);
    let mut with_fds = Vec::new();
    for (name, map) in &maps {
        let fd = *map_fds
            .get(name)
            .ok_or_else(|| anyhow!("map {name} was not created by the loader"))?;
        with_fds.push((name.as_str(), fd, map));
    }
    obj.relocate_maps(with_fds.into_iter(), &text_sections)
        .map_err(|e| anyhow!("map relocation: {e}"))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| anyhow!("call relocation: {e}"))?;
    let mut out = HashMap::new();
    for name in programs {
        let prog = obj
            .programs
            .get(*name)
            .ok_or_else(|| anyhow!("no program {name} in the object"))?;
        let Some(function) = obj.functions.get(&prog.function_key()) else {
            bail!("no function for program {name}");
        };
        out.insert((*name).to_string(), function.instructions.clone());
    }
    Ok((obj.license.clone(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya_obj::btf::{BtfParam, BtfType, Func, FuncLinkage, FuncProto, Int, IntEncoding};

    #[test]
    fn load_attr_carries_the_target() {
        let insns: [bpf_insn; 2] = unsafe { std::mem::zeroed() };
        let license = c"GPL";
        let load = TracingLoad {
            name: "a_rather_long_program_name",
            kind: TraceKind::Fexit,
            insns: &insns,
            license,
            attach_prog_fd: 7,
            attach_btf_id: 42,
        };
        let attr = prog_load_attr(&load);
        let u = unsafe { attr.__bindgen_anon_3 };
        assert_eq!(u.prog_type, bpf_prog_type::BPF_PROG_TYPE_TRACING as u32);
        assert_eq!(
            u.expected_attach_type,
            bpf_attach_type::BPF_TRACE_FEXIT as u32
        );
        assert_eq!(u.insn_cnt, 2);
        assert_eq!(u.insns, insns.as_ptr() as u64);
        assert_eq!(unsafe { u.__bindgen_anon_1.attach_prog_fd }, 7);
        assert_eq!(u.attach_btf_id, 42);
        // The log is verifier::load's to ask for.
        assert_eq!((u.log_level, u.log_size, u.log_buf), (0, 0, 0));
        // Name truncated to 15 bytes plus the NUL the kernel requires.
        let name: Vec<u8> = u.prog_name.iter().map(|c| *c as u8).collect();
        assert_eq!(&name[..15], b"a_rather_long_p");
        assert_eq!(name[15], 0);
    }

    #[test]
    fn finds_func_in_constructed_btf() {
        let mut btf = Btf::new();
        let int_name = btf.add_string("int");
        let int_id = btf.add_type(BtfType::Int(Int::new(int_name, 4, IntEncoding::Signed, 0)));
        let proto = btf.add_type(BtfType::FuncProto(FuncProto::new(
            vec![BtfParam {
                name_offset: 0,
                btf_type: int_id,
            }],
            int_id,
        )));
        let other = btf.add_string("other");
        btf.add_type(BtfType::Func(Func::new(other, proto, FuncLinkage::Global)));
        let name = btf.add_string("tc_verdict");
        let func_id = btf.add_type(BtfType::Func(Func::new(name, proto, FuncLinkage::Global)));
        let blob = btf.to_bytes();
        assert_eq!(func_btf_id(&blob, "tc_verdict").unwrap(), func_id);
        assert!(func_btf_id(&blob, "int").is_err(), "an INT is not a FUNC");
        assert!(func_btf_id(&blob, "missing").is_err());
    }

    #[test]
    fn finds_func_in_the_compiled_probe() {
        let obj = Object::parse(crate::objects::FENTRY_TC).unwrap();
        let btf = obj
            .btf
            .expect("fentry_tc.o is built with -g, so it has BTF");
        let id = func_btf_id(&btf.to_bytes(), "tc_verdict").unwrap();
        assert!(id > 0);
    }
}
