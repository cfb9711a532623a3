//! Loads every program of a user's object on its own (`bpfmatrix check`) and
//! reports, per program, what the kernel said and what verifying it cost.
//!
//! The steps are aya 0.14's `EbpfLoader::load`, taken apart so that one
//! program's trouble is that program's outcome, never the object's: the
//! object's BTF, sanitised for this kernel, is loaded where the kernel takes
//! BTF; every map is created on its own (a map the kernel refuses is the
//! outcome of the programs that use it); CO-RE relocations are made against
//! the guest's own kernel BTF; maps and calls are linked; then each program is
//! loaded alone with the type its ELF section gives. The built-in cases use
//! the same path for their costs ([`log_costs`]), since aya keeps no log of an
//! accepted load.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use aya::util::KernelVersion;
use aya::Btf;
use aya_obj::btf::BtfKind;
use aya_obj::generated::{
    bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_map_type, bpf_prog_type, BPF_F_SLEEPABLE,
    BPF_F_XDP_HAS_FRAGS, BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE,
};
use aya_obj::{EbpfSectionKind, Object, ProgramSection};
use bpfmatrix_protocol::{
    verifier_log, JitMode, ObjectSpec, Outcome, ProgramRecord, VerifierCost, MAX_VERIFIER_LOG_BYTES,
};

use crate::cases::{chain, verifier_tail};
use crate::elf;
use crate::panic_text;
use crate::prog_tracing::{owned_fd, sys_bpf};
use crate::verifier::{self, LogLevels};

/// What [`check_object`] has to say, as it goes.
pub enum Report {
    Program(Box<ProgramRecord>),
    /// Something about the object as a whole (its BTF refused...), said once.
    Warning(String),
}

/// Loads every program `spec` names, in its order, in the current JIT mode,
/// from a fresh load of the object; every fd is closed before it returns.
/// `mode_error` (the JIT mode could not be set) makes each program an Error.
pub fn check_object(
    spec: &ObjectSpec,
    jit: JitMode,
    mode_error: Option<&str>,
    kernel_btf: Option<&Btf>,
    report: &mut dyn FnMut(Report),
) {
    let record = |program: &str, section: String, outcome: Outcome| ProgramRecord {
        object: spec.name.clone(),
        program: program.to_string(),
        section,
        jit,
        outcome,
        verifier_log: String::new(),
        log_cut_bytes: None,
        cost: None,
        duration_ms: 0,
    };
    let every_program_fails = |message: String, report: &mut dyn FnMut(Report)| {
        for program in &spec.programs {
            report(Report::Program(Box::new(record(
                program,
                String::new(),
                Outcome::Error {
                    message: message.clone(),
                },
            ))));
        }
    };
    if let Some(e) = mode_error {
        return every_program_fails(format!("cannot switch to {jit}: {e}"), report);
    }
    let started = Instant::now();
    let bytes = match std::fs::read(&spec.path) {
        Ok(b) => b,
        Err(e) => return every_program_fails(format!("read {}: {e}", spec.path), report),
    };
    // aya_obj panics on some malformed objects (a todo!() in its call
    // linker): a user's object must cost only its own records.
    let prepared = match catch_unwind(AssertUnwindSafe(|| {
        Prepared::new(&bytes, kernel_btf, &|_| true)
    })) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return every_program_fails(format!("{}: {e:#}", spec.name), report),
        Err(p) => {
            return every_program_fails(
                format!(
                    "{}: aya panicked preparing it: {}",
                    spec.name,
                    panic_text(&*p)
                ),
                report,
            )
        }
    };
    for w in &prepared.warnings {
        report(Report::Warning(format!("{}: {w}", spec.name)));
    }
    eprintln!(
        "bpfmatrix-agent: {} [{jit}] prepared in {} ms",
        spec.name,
        started.elapsed().as_millis()
    );
    for program in &spec.programs {
        let started = Instant::now();
        let loaded =
            catch_unwind(AssertUnwindSafe(|| prepared.load(program))).unwrap_or_else(|p| {
                Loaded::without_load(
                    "",
                    Outcome::Error {
                        message: format!("the agent panicked loading it: {}", panic_text(&*p)),
                    },
                )
            });
        report(Report::Program(Box::new(ProgramRecord {
            verifier_log: loaded.log,
            log_cut_bytes: loaded.log_cut,
            cost: loaded.cost,
            // The program's own steps; the object's shared set-up is not in it.
            duration_ms: started.elapsed().as_millis() as u64,
            ..record(program, loaded.section, loaded.outcome)
        })));
    }
}

/// An embedded probe object made ready once (maps created, relocated) for the
/// statistics loads that give the built-in cases' costs: aya keeps no log of an
/// accepted load, so each program a case loaded is loaded once more here, in
/// the same JIT mode. Only the verifier log's figures are meant to be taken
/// from it: the case's own program fd gives the bpf_prog_info ones. Its maps
/// stay open while it lives; the programs are closed as soon as measured.
pub struct StatsObject<'k>(Prepared<'k>);

impl<'k> StatsObject<'k> {
    pub fn new(object: &[u8], kernel_btf: Option<&'k Btf>) -> Result<Self, String> {
        // The tracers (fentry/fexit on a BPF program) are loaded by the agent
        // itself, their log at hand (prog_tracing); leaving them out spares
        // the CO-RE relocation, which only they need, its tens of ms under TCG,
        // where the object comes unrelocated (no kernel BTF, or relocating it
        // ahead failed: see relocated.rs).
        let aya_loads = |s: &ProgramSection| {
            !matches!(
                s,
                ProgramSection::FEntry { .. } | ProgramSection::FExit { .. }
            )
        };
        Prepared::new(object, kernel_btf, &aya_loads)
            .map(StatsObject)
            .map_err(|e| format!("{e:#}"))
    }

    /// What verifying `program` cost, if the kernel accepted it again.
    pub fn cost(&self, program: &str) -> Result<VerifierCost, String> {
        let loaded = self.0.load(program);
        match (loaded.outcome, loaded.cost) {
            (Outcome::Accepted, Some(cost)) => Ok(cost),
            (outcome, _) => Err(format!("the statistics load ended {outcome:?}")),
        }
    }
}

/// One program's load, ready to become a record.
struct Loaded {
    section: String,
    outcome: Outcome,
    log: String,
    log_cut: Option<u64>,
    cost: Option<VerifierCost>,
}

impl Loaded {
    fn without_load(section: &str, outcome: Outcome) -> Self {
        Loaded {
            section: section.to_string(),
            outcome,
            log: String::new(),
            log_cut: None,
            cost: None,
        }
    }
}

/// Why a map the programs reference has no fd.
#[derive(Clone, Debug)]
enum MapTrouble {
    /// The kernel refused a step of making it (`create map NAME`...).
    Refused { step: String, errno: i32 },
    /// This loader cannot make it.
    NotLoadable(String),
}

/// An object with its maps created and its programs linked, ready to load
/// program by program. Dropping it closes every fd.
struct Prepared<'k> {
    obj: Object,
    sections: Vec<elf::Section>,
    /// The maps' fds, open for as long as programs are loaded.
    _maps: Vec<OwnedFd>,
    /// Maps without an fd, by the placeholder their references carry.
    troubled_maps: HashMap<i32, (String, MapTrouble)>,
    btf_fd: Option<OwnedFd>,
    /// Programs that cannot be CO-RE relocated, and why.
    unrelocated: HashMap<String, String>,
    kernel_btf: Option<&'k Btf>,
    kernel: Option<KernelVersion>,
    levels: LogLevels,
    warnings: Vec<String>,
}

impl<'k> Prepared<'k> {
    /// Only the programs `for_programs` takes will be loaded: when none of them
    /// has a CO-RE relocation, the object is not CO-RE relocated at all.
    fn new(
        bytes: &[u8],
        kernel_btf: Option<&'k Btf>,
        for_programs: &dyn Fn(&ProgramSection) -> bool,
    ) -> anyhow::Result<Self> {
        let mut obj = Object::parse(bytes).map_err(|e| anyhow::anyhow!("parse: {}", chain(&e)))?;
        let sections = elf::sections(bytes)?;
        let sites = elf::core_sites(bytes, &sections)?;
        let kernel = KernelVersion::current().ok();
        let features = aya::features();
        let mut warnings = Vec::new();

        // The object's BTF, as aya loads it: only where the kernel takes BTF,
        // sanitised of the kinds this kernel lacks. A refusal is said once and
        // the programs load without it (func_info and line_info need it).
        let btf_fd = match features.btf() {
            None => None,
            Some(btf_features) => match obj.fixup_and_sanitize_btf(btf_features) {
                Ok(None) => None,
                Ok(Some(btf)) => match load_btf(&btf.to_bytes()) {
                    Ok(fd) => Some(fd),
                    Err(why) => {
                        warnings.push(format!(
                            "the kernel refused the object's BTF, its programs load without it: {why}"
                        ));
                        None
                    }
                },
                Err(e) => {
                    warnings.push(format!(
                        "the object's BTF could not be fixed up for this kernel, its programs load without it: {}",
                        chain(&e)
                    ));
                    None
                }
            },
        };

        let unrelocated = relocate_core(&mut obj, &sections, &sites, kernel_btf, for_programs)?;

        let text_sections: HashSet<usize> =
            obj.functions.keys().map(|(section, _)| *section).collect();
        let maps = std::mem::take(&mut obj.maps);
        let mut fds = Vec::new();
        let mut troubled_maps = HashMap::new();
        // Sorted so placeholders and fds do not depend on hash order.
        let mut names: Vec<&String> = maps.keys().collect();
        names.sort();
        let mut refs: Vec<(&str, RawFd, &aya_obj::Map)> = Vec::new();
        for name in names {
            let map = &maps[name];
            let made = create_map(name, map, btf_fd.as_ref(), kernel);
            let fd = match made {
                Ok(fd) => {
                    let raw = fd.as_raw_fd();
                    fds.push(fd);
                    raw
                }
                Err(trouble) => {
                    // Never a real fd: a program carrying it is never loaded.
                    let placeholder = i32::MIN + troubled_maps.len() as i32;
                    troubled_maps.insert(placeholder, (name.clone(), trouble));
                    placeholder
                }
            };
            refs.push((name.as_str(), fd, map));
        }
        obj.relocate_maps(refs.into_iter(), &text_sections)
            .map_err(|e| anyhow::anyhow!("map relocation: {}", chain(&e)))?;
        obj.relocate_calls(&text_sections)
            .map_err(|e| anyhow::anyhow!("call relocation: {}", chain(&e)))?;
        // As aya does: bpf_probe_read_{kernel,user}[_str] become bpf_probe_read[_str]
        // on kernels without them (before 5.5), as libbpf does too.
        obj.sanitize_functions(features);

        Ok(Prepared {
            obj,
            sections,
            _maps: fds,
            troubled_maps,
            btf_fd,
            unrelocated,
            kernel_btf,
            kernel,
            levels: LogLevels::of_running_kernel(),
            warnings,
        })
    }

    fn load(&self, name: &str) -> Loaded {
        let Some(prog) = self.obj.programs.get(name) else {
            return Loaded::without_load(
                "",
                Outcome::Error {
                    message: format!("no program {name} in the object as the guest parsed it"),
                },
            );
        };
        let section = self
            .sections
            .get(prog.section_index)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let Some(function) = self.obj.functions.get(&prog.function_key()) else {
            return Loaded::without_load(
                &section,
                Outcome::Error {
                    message: format!("no function for program {name}"),
                },
            );
        };
        let kind = match ProgKind::of(&prog.section, &section) {
            Ok(k) => k,
            Err(reason) => return Loaded::without_load(&section, Outcome::NotLoadable { reason }),
        };
        if let Some((map, trouble)) = self.first_troubled_map(&function.instructions) {
            let outcome = match trouble {
                MapTrouble::Refused { step, errno } => Outcome::Rejected {
                    step: step.clone(),
                    errno: *errno,
                    verifier_tail: String::new(),
                },
                MapTrouble::NotLoadable(why) => Outcome::NotLoadable {
                    reason: format!("it uses map {map}, which {why}"),
                },
            };
            return Loaded::without_load(&section, outcome);
        }
        if let Some(reason) = self.unrelocated.get(name) {
            return Loaded::without_load(
                &section,
                Outcome::Unsupported {
                    reason: reason.clone(),
                },
            );
        }
        let attach_btf_id = match &kind.target {
            None => 0,
            Some((target, btf_kind)) => match self.kernel_btf {
                None => {
                    return Loaded::without_load(
                        &section,
                        Outcome::Unsupported {
                            reason: format!(
                                "this kernel has no BTF (/sys/kernel/btf/vmlinux) to find the attach target {target} in"
                            ),
                        },
                    )
                }
                Some(btf) => match btf.id_by_type_name_kind(target, *btf_kind) {
                    Ok(id) => id,
                    Err(_) => {
                        return Loaded::without_load(
                            &section,
                            Outcome::Unsupported {
                                reason: format!(
                                    "no {} {target} in this kernel's BTF (vmlinux; modules are not searched)",
                                    if *btf_kind == BtfKind::Typedef { "typedef" } else { "function" }
                                ),
                            },
                        )
                    }
                },
            },
        };

        let func_info = function.func_info.func_info_bytes();
        let line_info = function.line_info.line_info_bytes();
        // SAFETY: bpf_attr is plain old data; zero is "unset" for every field.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: filling the BPF_PROG_LOAD member of a zeroed union; every
        // pointer borrows `function`, `prog`, `func_info` or `line_info`, which
        // outlive the load below.
        let u = unsafe { &mut attr.__bindgen_anon_3 };
        u.prog_type = kind.prog_type as u32;
        u.expected_attach_type = self.expected_attach_type(kind.attach);
        u.prog_flags = kind.flags;
        u.insns = function.instructions.as_ptr() as u64;
        u.insn_cnt = function.instructions.len() as u32;
        u.license = prog.license.as_ptr() as u64;
        // As aya: the object's "version" section, else this kernel's
        // LINUX_VERSION_CODE (kprobes needed it to match before 5.0).
        u.kern_version = prog
            .kernel_version
            .unwrap_or_else(|| self.kernel.map_or(0, KernelVersion::code));
        if aya::features().bpf_name() {
            // Names are 15 bytes and a NUL (4.15+); C identifiers need no escaping.
            for (dst, src) in u.prog_name.iter_mut().zip(name.bytes().take(15)) {
                *dst = src as libc::c_char;
            }
        }
        if let Some(btf_fd) = &self.btf_fd {
            u.prog_btf_fd = btf_fd.as_raw_fd() as u32;
            if function.func_info_rec_size > 0 && function.func_info.len() > 0 {
                u.func_info = func_info.as_ptr() as u64;
                u.func_info_cnt = function.func_info.len() as u32;
                u.func_info_rec_size = function.func_info_rec_size as u32;
            }
            if function.line_info_rec_size > 0 && function.line_info.len() > 0 {
                u.line_info = line_info.as_ptr() as u64;
                u.line_info_cnt = function.line_info.len() as u32;
                u.line_info_rec_size = function.line_info_rec_size as u32;
            }
        }
        u.attach_btf_id = attach_btf_id;

        match verifier::load(&attr, self.levels) {
            Ok(verified) => {
                let cost = verifier::cost(&verified);
                let log = verifier_log::stats_lines(&verified.log);
                drop(verified);
                Loaded {
                    section,
                    outcome: Outcome::Accepted,
                    log,
                    log_cut: None,
                    cost: Some(cost),
                }
            }
            Err(refused) => {
                let (log, capped) = verifier_log::last_bytes(&refused.log, MAX_VERIFIER_LOG_BYTES);
                let cut = match (refused.cut, capped) {
                    (None, 0) => None,
                    (kernel_cut, capped) => Some(kernel_cut.unwrap_or(0) + capped as u64),
                };
                Loaded {
                    section,
                    outcome: Outcome::Rejected {
                        step: format!("load {name}"),
                        errno: refused.errno,
                        verifier_tail: verifier_tail(&refused.log),
                    },
                    log: log.to_string(),
                    log_cut: cut,
                    cost: None,
                }
            }
        }
    }

    /// The first map the program references (in instruction order) that has no fd.
    fn first_troubled_map(&self, insns: &[bpf_insn]) -> Option<(&str, &MapTrouble)> {
        if self.troubled_maps.is_empty() {
            return None;
        }
        insns
            .iter()
            .filter(|i| {
                i.code == LD_IMM64
                    && matches!(
                        u32::from(i.src_reg()),
                        BPF_PSEUDO_MAP_FD | BPF_PSEUDO_MAP_VALUE
                    )
            })
            .find_map(|i| self.troubled_maps.get(&i.imm))
            .map(|(name, trouble)| (name.as_str(), trouble))
    }

    /// The attach type to send: before 4.17 bpf_attr has no expected_attach_type,
    /// and a kernel refuses a non-zero byte past the attr it knows (E2BIG). Where
    /// the attach type only restates the program type's one hook, it is left
    /// out there, as libbpf does; any other is sent, and such a kernel's refusal
    /// is its answer.
    fn expected_attach_type(&self, attach: Option<bpf_attach_type>) -> u32 {
        use bpf_attach_type::*;
        let Some(attach) = attach else { return 0 };
        let old = self
            .kernel
            .is_some_and(|k| k < KernelVersion::new(4, 17, 0));
        let implied = matches!(
            attach,
            BPF_XDP
                | BPF_CGROUP_SOCK_OPS
                | BPF_CGROUP_INET_INGRESS
                | BPF_CGROUP_INET_EGRESS
                | BPF_CGROUP_INET_SOCK_CREATE
                | BPF_CGROUP_DEVICE
        );
        if old && implied {
            0
        } else {
            attach as u32
        }
    }
}

const LD_IMM64: u8 = 0x18;

/// How a program is loaded, as its ELF section says.
#[derive(Debug)]
struct ProgKind {
    prog_type: bpf_prog_type,
    attach: Option<bpf_attach_type>,
    flags: u32,
    /// The attach target to find in the kernel's BTF (attach_btf_id).
    target: Option<(String, BtfKind)>,
}

impl ProgKind {
    /// The program type, attach type and flags aya 0.14's `load()` of that
    /// section's program uses; attach targets come from the section name, as
    /// libbpf reads them ("fentry/do_unlinkat").
    fn of(section: &ProgramSection, elf_name: &str) -> Result<Self, String> {
        use bpf_attach_type::*;
        use bpf_prog_type::*;
        use ProgramSection as S;
        let plain = |prog_type| {
            Ok(ProgKind {
                prog_type,
                attach: None,
                flags: 0,
                target: None,
            })
        };
        let with = |prog_type, attach: bpf_attach_type| {
            Ok(ProgKind {
                prog_type,
                attach: Some(attach),
                flags: 0,
                target: None,
            })
        };
        let sleepable = |s: bool| if s { BPF_F_SLEEPABLE } else { 0 };
        let target = |prefix: &str, kind: BtfKind| -> Result<Option<(String, BtfKind)>, String> {
            match elf_name.split_once('/') {
                Some((_, t)) if !t.is_empty() => Ok(Some((format!("{prefix}{t}"), kind))),
                _ => Err(format!(
                    "section {elf_name} names no attach target (e.g. {elf_name}/TARGET): the kernel needs one to load it"
                )),
            }
        };
        let traced = |prog_type, attach, flags, prefix: &str, kind| {
            Ok(ProgKind {
                prog_type,
                attach: Some(attach),
                flags,
                target: target(prefix, kind)?,
            })
        };
        match section {
            S::KProbe | S::KRetProbe => plain(BPF_PROG_TYPE_KPROBE),
            S::UProbe { sleepable: s } | S::URetProbe { sleepable: s } => Ok(ProgKind {
                flags: sleepable(*s),
                ..plain(BPF_PROG_TYPE_KPROBE)?
            }),
            S::TracePoint => plain(BPF_PROG_TYPE_TRACEPOINT),
            S::SocketFilter => plain(BPF_PROG_TYPE_SOCKET_FILTER),
            S::Xdp { frags, attach_type } => Ok(ProgKind {
                flags: if *frags { BPF_F_XDP_HAS_FRAGS } else { 0 },
                ..with(BPF_PROG_TYPE_XDP, (*attach_type).into())?
            }),
            S::SkMsg => with(BPF_PROG_TYPE_SK_MSG, BPF_SK_MSG_VERDICT),
            S::SkSkbStream { .. } => plain(BPF_PROG_TYPE_SK_SKB),
            S::SockOps => with(BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS),
            S::SchedClassifier => plain(BPF_PROG_TYPE_SCHED_CLS),
            S::CgroupSkb { attach_type } => Ok(ProgKind {
                attach: attach_type.map(Into::into),
                ..plain(BPF_PROG_TYPE_CGROUP_SKB)?
            }),
            S::CgroupSockAddr { attach_type } => {
                with(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, (*attach_type).into())
            }
            S::CgroupSysctl => with(BPF_PROG_TYPE_CGROUP_SYSCTL, BPF_CGROUP_SYSCTL),
            S::CgroupSockopt { attach_type } => {
                with(BPF_PROG_TYPE_CGROUP_SOCKOPT, (*attach_type).into())
            }
            S::LircMode2 => with(BPF_PROG_TYPE_LIRC_MODE2, BPF_LIRC_MODE2),
            S::PerfEvent => plain(BPF_PROG_TYPE_PERF_EVENT),
            S::RawTracePoint => plain(BPF_PROG_TYPE_RAW_TRACEPOINT),
            S::Lsm { sleepable: s } => traced(
                BPF_PROG_TYPE_LSM,
                BPF_LSM_MAC,
                sleepable(*s),
                "bpf_lsm_",
                BtfKind::Func,
            ),
            S::LsmCgroup => traced(
                BPF_PROG_TYPE_LSM,
                BPF_LSM_CGROUP,
                0,
                "bpf_lsm_",
                BtfKind::Func,
            ),
            S::BtfTracePoint => traced(
                BPF_PROG_TYPE_TRACING,
                BPF_TRACE_RAW_TP,
                0,
                "btf_trace_",
                BtfKind::Typedef,
            ),
            S::FEntry { sleepable: s } => traced(
                BPF_PROG_TYPE_TRACING,
                BPF_TRACE_FENTRY,
                sleepable(*s),
                "",
                BtfKind::Func,
            ),
            S::FExit { sleepable: s } => traced(
                BPF_PROG_TYPE_TRACING,
                BPF_TRACE_FEXIT,
                sleepable(*s),
                "",
                BtfKind::Func,
            ),
            S::Iter { sleepable: s } => traced(
                BPF_PROG_TYPE_TRACING,
                BPF_TRACE_ITER,
                sleepable(*s),
                "bpf_iter_",
                BtfKind::Func,
            ),
            S::FlowDissector => with(BPF_PROG_TYPE_FLOW_DISSECTOR, BPF_FLOW_DISSECTOR),
            S::Extension => Err(
                "freplace (BPF_PROG_TYPE_EXT) replaces a function of another loaded program; \
                 loading it needs that target program, which the object alone does not give"
                    .into(),
            ),
            S::SkLookup => with(BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP),
            S::SkReuseport { attach_type } => {
                with(BPF_PROG_TYPE_SK_REUSEPORT, (*attach_type).into())
            }
            S::CgroupSock { attach_type } => with(BPF_PROG_TYPE_CGROUP_SOCK, (*attach_type).into()),
            S::CgroupDevice => with(BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE),
        }
    }
}

/// CO-RE: relocates the object against the kernel's BTF, and returns the
/// programs that cannot be relocated, with why. Which program a relocation
/// belongs to is read off a marked copy of the object (see [`core_sites_by_program`]).
fn relocate_core(
    obj: &mut Object,
    sections: &[elf::Section],
    sites: &[elf::CoreSite],
    kernel_btf: Option<&Btf>,
    for_programs: &dyn Fn(&ProgramSection) -> bool,
) -> anyhow::Result<HashMap<String, String>> {
    if sites.is_empty() {
        return Ok(HashMap::new());
    }
    let by_program = core_sites_by_program(obj, sections, sites)?;
    let wanted = |p: &str| {
        obj.programs
            .get(p)
            .is_some_and(|p| for_programs(&p.section))
    };
    if !by_program.iter().any(|(p, s)| !s.is_empty() && wanted(p)) {
        return Ok(by_program
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(p, _)| (p, "not CO-RE relocated: not loaded here".to_string()))
            .collect());
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let Some(kernel_btf) = kernel_btf else {
        return Ok(by_program
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(p, s)| {
                let n = s.len();
                (
                    p,
                    format!(
                        "cannot relocate: this kernel has no BTF (/sys/kernel/btf/vmlinux) to relocate the program's {n} CO-RE relocation{} against",
                        plural(n)
                    ),
                )
            })
            .collect());
    };
    let Err(e) = obj.relocate_btf(kernel_btf) else {
        return Ok(HashMap::new());
    };
    // aya relocates section by section in .BTF.ext order and stops at the first
    // it cannot relocate: programs with relocations there failed, programs with
    // relocations only in later sections were never relocated.
    let order: Vec<&str> = sites.iter().fold(Vec::new(), |mut v, s| {
        if !v.contains(&s.section.as_str()) {
            v.push(s.section.as_str());
        }
        v
    });
    let failed_at = order.iter().position(|s| *s == e.section).unwrap_or(0);
    let why = chain(&e);
    Ok(by_program
        .into_iter()
        .filter_map(|(program, site_ids)| {
            let secs: BTreeSet<usize> = site_ids
                .iter()
                .filter_map(|i| order.iter().position(|s| *s == sites[*i].section))
                .collect();
            if secs.contains(&failed_at) {
                Some((program, format!("cannot relocate: {why}")))
            } else {
                secs.iter().find(|s| **s > failed_at).map(|later| {
                    (
                        program,
                        format!(
                            "cannot relocate: aya stopped at the CO-RE relocations of section {} ({why}), before this program's in section {}",
                            order[failed_at], order[*later]
                        ),
                    )
                })
            }
        })
        .collect())
}

/// Marks every CO-RE relocation site of a copy of `obj` with an instruction
/// no compiler emits (its number in `sites` as the immediate), links the
/// copy's calls, and reads which marks each program's final instructions carry:
/// a relocation in a subprogram counts for every program that calls it.
fn core_sites_by_program(
    obj: &Object,
    sections: &[elf::Section],
    sites: &[elf::CoreSite],
) -> anyhow::Result<HashMap<String, BTreeSet<usize>>> {
    const MOV64_IMM: u8 = 0xb7;
    // A MOV's offset field is unused (sign-extending moves are register moves
    // with off 8/16/32), so this offset marks the instruction as ours.
    const MARK: i16 = 0x7c0e;
    let mut marked = obj.clone();
    for (n, site) in sites.iter().enumerate() {
        let Some(index) = sections.iter().position(|s| s.name == site.section) else {
            continue;
        };
        let off = site.insn_off as usize;
        let function = marked.functions.values_mut().find(|f| {
            f.section_index.0 == index
                && off >= f.section_offset
                && off < f.section_offset + f.instructions.len() * 8
        });
        if let Some(f) = function {
            let insn = &mut f.instructions[(off - f.section_offset) / 8];
            insn.code = MOV64_IMM;
            insn.set_dst_reg(0);
            insn.set_src_reg(0);
            insn.off = MARK;
            insn.imm = n as i32;
        }
    }
    let text_sections: HashSet<usize> = marked
        .functions
        .keys()
        .map(|(section, _)| *section)
        .collect();
    marked
        .relocate_calls(&text_sections)
        .map_err(|e| anyhow::anyhow!("call relocation: {}", chain(&e)))?;
    Ok(marked
        .programs
        .iter()
        .map(|(name, prog)| {
            let ids = marked
                .functions
                .get(&prog.function_key())
                .map(|f| {
                    f.instructions
                        .iter()
                        .filter(|i| i.code == MOV64_IMM && i.off == MARK)
                        .map(|i| i.imm as usize)
                        .filter(|n| *n < sites.len())
                        .collect()
                })
                .unwrap_or_default();
            (name.clone(), ids)
        })
        .collect())
}

/// BPF_BTF_LOAD of the object's sanitised BTF. On a refusal the kernel's BTF
/// log says why.
fn load_btf(btf: &[u8]) -> Result<OwnedFd, String> {
    let attempt = |log: &mut [u8]| {
        // SAFETY: zeroed attr; the BTF_LOAD member points at `btf` and `log`,
        // which outlive the call.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        let u = unsafe { &mut attr.__bindgen_anon_7 };
        u.btf = btf.as_ptr() as u64;
        u.btf_size = btf.len() as u32;
        if !log.is_empty() {
            u.btf_log_level = 1;
            u.btf_log_buf = log.as_mut_ptr() as u64;
            u.btf_log_size = log.len() as u32;
        }
        sys_bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr).map(owned_fd)
    };
    if let Ok(fd) = attempt(&mut []) {
        return Ok(fd);
    }
    let mut log = vec![0u8; 256 * 1024];
    match attempt(&mut log) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(format!("{e}: {}", verifier_tail(&text)))
        }
    }
}

/// Creates one map of the object as aya 0.14 would, with BPF_MAP_CREATE of
/// our own (aya's `MapData::create` sends a BTF-defined map's type ids even
/// when no BTF was loaded, which a kernel without BTF refuses: see
/// probes/bpf/legacy_maps.h), filled with its initial data (.data, .rodata,
/// .bss) and frozen when read-only.
fn create_map(
    name: &str,
    map: &aya_obj::Map,
    btf_fd: Option<&OwnedFd>,
    kernel: Option<KernelVersion>,
) -> Result<OwnedFd, MapTrouble> {
    use bpf_map_type::*;
    let refused = |step: &str, e: io::Error| MapTrouble::Refused {
        step: format!("{step} map {name}"),
        errno: e.raw_os_error().unwrap_or(0),
    };
    let at_least = |major, minor| kernel.is_some_and(|k| k >= KernelVersion::new(major, minor, 0));
    let mut map = map.clone();
    let map_type = map.map_type();
    let features = aya::features();
    let is = |t: bpf_map_type| map_type == t as u32;
    // aya's overrides (bpf.rs max_entries_override and value_size_override,
    // MapData::create_with_inner_map_fd), which libbpf makes too.
    if is(BPF_MAP_TYPE_PERF_EVENT_ARRAY) {
        if let Ok(cpus) = aya::util::nr_cpus() {
            let cpus = cpus as u32;
            if map.max_entries() == 0 || map.max_entries() > cpus {
                map.set_max_entries(cpus);
            }
        }
    }
    if is(BPF_MAP_TYPE_RINGBUF) {
        map.set_max_entries(ringbuf_size(map.max_entries(), page_size()));
        map.set_value_size(0);
    }
    if is(BPF_MAP_TYPE_CPUMAP) {
        map.set_value_size(if features.cpumap_prog_id() { 8 } else { 4 });
    }
    if is(BPF_MAP_TYPE_DEVMAP) || is(BPF_MAP_TYPE_DEVMAP_HASH) {
        map.set_value_size(if features.devmap_prog_id() { 8 } else { 4 });
    }
    let inner = if is(BPF_MAP_TYPE_ARRAY_OF_MAPS) || is(BPF_MAP_TYPE_HASH_OF_MAPS) {
        let Some(inner) = map.inner() else {
            return Err(MapTrouble::NotLoadable(
                "is a map of maps without an inner map definition this loader can read".into(),
            ));
        };
        // Only the outer map keeps the inner one's shape; this fd closes at the
        // end of the function.
        Some(
            map_create(&format!("{name}.inner"), &inner, btf_fd, None, kernel)
                .map_err(|e| refused("create inner", e))?,
        )
    } else {
        None
    };
    // Pinning (LIBBPF_PIN_BY_NAME) is ignored: every load here must be fresh.
    let fd =
        map_create(name, &map, btf_fd, inner.as_ref(), kernel).map_err(|e| refused("create", e))?;
    if !map.data().is_empty() {
        let key = 0u32;
        let mut data = map.data().to_vec();
        // SAFETY: zeroed attr; key and value point at live buffers of the map's
        // key and value sizes (a data map is one u32-keyed element of its
        // section's size).
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        let u = unsafe { &mut attr.__bindgen_anon_2 };
        u.map_fd = fd.as_raw_fd() as u32;
        u.key = &key as *const u32 as u64;
        u.__bindgen_anon_1.value = data.as_mut_ptr() as u64;
        sys_bpf(bpf_cmd::BPF_MAP_UPDATE_ELEM, &mut attr).map_err(|e| refused("fill", e))?;
    }
    if map.section_kind() == EbpfSectionKind::Rodata {
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_2.map_fd = fd.as_raw_fd() as u32;
        // BPF_MAP_FREEZE is 5.2 (87df15de441b); a kernel before it has only
        // BPF_F_RDONLY_PROG, which keeps programs from writing anyway.
        if let Err(e) = sys_bpf(bpf_cmd::BPF_MAP_FREEZE, &mut attr) {
            if at_least(5, 2) {
                return Err(refused("freeze", e));
            }
        }
    }
    Ok(fd)
}

/// The BPF_MAP_CREATE itself. BTF type ids go only with a loaded BTF and a
/// BTF-defined map, and not for the map types that take none (aya's
/// bpf_create_map, after libbpf issue 355).
fn map_create(
    name: &str,
    map: &aya_obj::Map,
    btf_fd: Option<&OwnedFd>,
    inner: Option<&OwnedFd>,
    kernel: Option<KernelVersion>,
) -> io::Result<OwnedFd> {
    use bpf_map_type::*;
    // SAFETY: bpf_attr is plain old data; zero is "unset".
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: filling the BPF_MAP_CREATE member of a zeroed union.
    let u = unsafe { &mut attr.__bindgen_anon_1 };
    u.map_type = map.map_type();
    u.key_size = map.key_size();
    u.value_size = map.value_size();
    u.max_entries = map.max_entries();
    u.map_flags = map.map_flags();
    u.map_extra = map.map_extra();
    if let Some(inner) = inner {
        u.inner_map_fd = inner.as_raw_fd() as u32;
    }
    if let (aya_obj::Map::Btf(m), Some(btf_fd)) = (map, btf_fd) {
        let no_btf_types = [
            BPF_MAP_TYPE_PERF_EVENT_ARRAY,
            BPF_MAP_TYPE_CGROUP_ARRAY,
            BPF_MAP_TYPE_STACK_TRACE,
            BPF_MAP_TYPE_ARRAY_OF_MAPS,
            BPF_MAP_TYPE_HASH_OF_MAPS,
            BPF_MAP_TYPE_DEVMAP,
            BPF_MAP_TYPE_DEVMAP_HASH,
            BPF_MAP_TYPE_CPUMAP,
            BPF_MAP_TYPE_XSKMAP,
            BPF_MAP_TYPE_SOCKMAP,
            BPF_MAP_TYPE_SOCKHASH,
            BPF_MAP_TYPE_QUEUE,
            BPF_MAP_TYPE_STACK,
            BPF_MAP_TYPE_RINGBUF,
        ];
        if !no_btf_types.iter().any(|t| *t as u32 == u.map_type) {
            u.btf_fd = btf_fd.as_raw_fd() as u32;
            // A bloom filter has no key: the kernel wants a void key type.
            if u.map_type != BPF_MAP_TYPE_BLOOM_FILTER as u32 {
                u.btf_key_type_id = m.def.btf_key_type_id;
            }
            u.btf_value_type_id = m.def.btf_value_type_id;
        }
    }
    // Map names are 4.15+ (ad5b177bd73f); a '.' in them is 5.2+ (3e0ddc4f3ff1),
    // anything but alphanumerics and '_' before.
    let named = kernel.is_some_and(|k| k >= KernelVersion::new(4, 15, 0));
    let dots = kernel.is_some_and(|k| k >= KernelVersion::new(5, 2, 0));
    if named {
        let kept = name
            .bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || (dots && *b == b'.'))
            .take(15);
        for (dst, src) in u.map_name.iter_mut().zip(kept) {
            *dst = src as libc::c_char;
        }
    }
    sys_bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr).map(owned_fd)
}

/// A ring buffer's size as aya and libbpf make it: a power-of-two number of
/// pages (0 stays 0, for the kernel to refuse).
fn ringbuf_size(bytes: u32, page: u32) -> u32 {
    if bytes == 0 || page == 0 {
        return bytes;
    }
    page.saturating_mul(bytes.div_ceil(page).next_power_of_two())
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u32
    } else {
        4096
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::objects;

    #[test]
    fn ring_buffers_round_up_to_power_of_two_pages() {
        assert_eq!(ringbuf_size(0, 4096), 0);
        assert_eq!(ringbuf_size(1, 4096), 4096);
        assert_eq!(ringbuf_size(4096, 4096), 4096);
        assert_eq!(ringbuf_size(4097, 4096), 8192);
        assert_eq!(ringbuf_size(3 * 4096, 4096), 4 * 4096);
    }

    #[test]
    fn sections_give_type_attach_type_and_target() {
        let k = |s: &str| {
            let section: ProgramSection = s.parse().unwrap();
            ProgKind::of(&section, s)
        };
        let fentry = k("fentry/do_unlinkat").unwrap();
        assert_eq!(fentry.prog_type, bpf_prog_type::BPF_PROG_TYPE_TRACING);
        assert_eq!(fentry.attach, Some(bpf_attach_type::BPF_TRACE_FENTRY));
        assert_eq!(
            fentry.target,
            Some(("do_unlinkat".to_string(), BtfKind::Func))
        );
        let tp = k("tp_btf/sched_switch").unwrap();
        assert_eq!(
            tp.target,
            Some(("btf_trace_sched_switch".to_string(), BtfKind::Typedef))
        );
        assert_eq!(
            k("lsm.s/file_open").unwrap().flags,
            BPF_F_SLEEPABLE,
            "sleepable"
        );
        assert_eq!(
            k("lsm/file_open").unwrap().target.unwrap().0,
            "bpf_lsm_file_open"
        );
        let xdp = k("xdp.frags").unwrap();
        assert_eq!(
            (xdp.attach, xdp.flags),
            (Some(bpf_attach_type::BPF_XDP), BPF_F_XDP_HAS_FRAGS)
        );
        let cls = k("classifier").unwrap();
        assert_eq!(
            (cls.prog_type, cls.attach),
            (bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS, None)
        );
        assert!(k("fentry").unwrap_err().contains("no attach target"));
        assert!(k("freplace/handler")
            .unwrap_err()
            .contains("target program"));
    }

    #[test]
    fn core_relocations_belong_to_the_programs_that_reach_them() {
        let obj = Object::parse(objects::FENTRY_TC).unwrap();
        let sections = elf::sections(objects::FENTRY_TC).unwrap();
        let sites = elf::core_sites(objects::FENTRY_TC, &sections).unwrap();
        let by = core_sites_by_program(&obj, &sections, &sites).unwrap();
        assert_eq!(by["fentry_tc"].len(), sites.len());
        assert!(by["fexit_tc"].is_empty());
        assert!(by["tc_verdict"].is_empty());
    }

    #[test]
    fn without_kernel_btf_only_core_programs_are_unsupported() {
        let mut obj = Object::parse(objects::FENTRY_TC).unwrap();
        let sections = elf::sections(objects::FENTRY_TC).unwrap();
        let sites = elf::core_sites(objects::FENTRY_TC, &sections).unwrap();
        let un = relocate_core(&mut obj, &sections, &sites, None, &|_| true).unwrap();
        assert_eq!(un.len(), 1, "{un:?}");
        let n = sites.len();
        assert!(
            un["fentry_tc"].starts_with("cannot relocate: this kernel has no BTF")
                && un["fentry_tc"].contains(&format!("{n} CO-RE relocation")),
            "{}",
            un["fentry_tc"]
        );
    }

    fn records_of(spec: &ObjectSpec, mode_error: Option<&str>) -> Vec<ProgramRecord> {
        let mut out = Vec::new();
        check_object(spec, JitMode::Jit, mode_error, None, &mut |r| {
            if let Report::Program(r) = r {
                out.push(*r)
            }
        });
        out
    }

    #[test]
    fn an_object_that_cannot_be_had_is_an_error_for_each_named_program() {
        let dir = std::env::temp_dir().join(format!("bpfmatrix-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("cut.o");
        std::fs::write(&cut, &objects::TAIL_CALL[..300]).unwrap();
        let spec = |path: &std::path::Path| ObjectSpec {
            name: "x.o".into(),
            path: path.display().to_string(),
            programs: vec!["one".into(), "two".into()],
        };
        for (records, says) in [
            (records_of(&spec(&cut), None), "x.o: parse"),
            (records_of(&spec(&dir.join("absent.o")), None), "read "),
            (
                records_of(&spec(&cut), Some("EPERM")),
                "cannot switch to jit: EPERM",
            ),
        ] {
            let names: Vec<&str> = records.iter().map(|r| r.program.as_str()).collect();
            assert_eq!(names, ["one", "two"]);
            for r in &records {
                match &r.outcome {
                    Outcome::Error { message } => assert!(message.starts_with(says), "{message}"),
                    o => panic!("{o:?}"),
                }
                assert_eq!((r.object.as_str(), r.cost.is_none()), ("x.o", true));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Raw BTF of one `struct sk_buff { unsigned int len; }` per entry of
    /// `len_bits`, its `len` at that bit offset: with two, aya cannot choose
    /// between them.
    pub(crate) fn sk_buff_btf(len_bits: &[u32]) -> Vec<u8> {
        let strings = b"\0unsigned int\0sk_buff\0len\0";
        let (int_name, skb_name, len_name) = (1u32, 14u32, 22u32);
        let mut types: Vec<u32> = vec![
            // [1] INT "unsigned int", 4 bytes, 32 bits.
            int_name,
            1 << 24,
            4,
            32,
        ];
        for &len_bits in len_bits {
            // STRUCT "sk_buff", one member "len" of [1].
            types.extend([skb_name, (4 << 24) | 1, 16, len_name, 1, len_bits]);
        }
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut btf = Vec::new();
        btf.extend(0xeb9fu16.to_le_bytes());
        btf.extend([1u8, 0]);
        for w in [
            24u32,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            btf.extend(w.to_le_bytes());
        }
        btf.extend(type_bytes);
        btf.extend(strings);
        btf
    }

    #[test]
    fn a_relocation_aya_refuses_is_the_unsupported_outcome_of_its_programs_only() {
        let target = Btf::parse(&sk_buff_btf(&[0, 64]), aya::Endianness::default()).unwrap();
        let mut obj = Object::parse(objects::FENTRY_TC).unwrap();
        let sections = elf::sections(objects::FENTRY_TC).unwrap();
        let sites = elf::core_sites(objects::FENTRY_TC, &sections).unwrap();
        let un = relocate_core(&mut obj, &sections, &sites, Some(&target), &|_| true).unwrap();
        assert_eq!(un.keys().collect::<Vec<_>>(), ["fentry_tc"], "{un:?}");
        assert!(
            un["fentry_tc"].starts_with("cannot relocate: error relocating `fentry/tc_verdict`"),
            "{}",
            un["fentry_tc"]
        );
    }
}
