//! Runs one case in the current JIT mode and reports what the kernel did; it
//! holds no expectations (the host judges the records).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::Context;
use aya::maps::{Array, Map, MapData, ProgramArray};
use aya::programs::tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{
    Program, ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions,
};
use aya::util::KernelVersion;
use aya::{Btf, Ebpf, EbpfLoader};
use bpfmatrix_protocol::{
    verifier_log, CaseId, Measured, Outcome, Trigger, VerdictObservation, VerifierCost,
};

use crate::check;
use crate::kprobe_events::KprobeEvents;
use crate::objects;
use crate::prog_tracing::{self, TraceKind, TracingLoad};
use crate::relocated;
use crate::seeds;
use crate::sys;
use crate::verifier;

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const LOOPBACK_PACKETS: u32 = 5;
/// The most the loopback case waits for its packets to go through tc (a bound,
/// never the normal path: the run counter ends the wait).
const LOOPBACK_SETTLE: Duration = Duration::from_millis(500);

/// Why a case did not end as Accepted.
#[derive(Debug)]
pub enum Fail {
    Rejected {
        step: String,
        errno: i32,
        verifier_tail: String,
    },
    Unsupported(String),
    Error(String),
}

/// A step of setting the guest up for cases that failed, kept as every later
/// case's answer: the kernel's would not change.
#[derive(Clone, Debug)]
pub struct SetUpRefused {
    /// What was being done, for the record's step.
    pub step: String,
    /// The errno, when the kernel refused the step.
    pub errno: Option<i32>,
    pub message: String,
}

impl From<SetUpRefused> for Fail {
    fn from(e: SetUpRefused) -> Self {
        match e.errno {
            Some(errno) => Fail::Rejected {
                step: e.step,
                errno,
                verifier_tail: e.message,
            },
            None => Fail::Error(format!("{}: {}", e.step, e.message)),
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Self {
        Fail::Error(format!("{e:#}"))
    }
}

impl Fail {
    pub fn into_outcome(self) -> Outcome {
        match self {
            Fail::Rejected {
                step,
                errno,
                verifier_tail,
            } => Outcome::Rejected {
                step,
                errno,
                verifier_tail,
            },
            Fail::Unsupported(reason) => Outcome::Unsupported { reason },
            Fail::Error(message) => Outcome::Error { message },
        }
    }
}

pub(crate) type CaseResult = Result<(), Fail>;

/// A real Ethernet + IPv4 + UDP frame, 64 bytes (127.0.0.1:4000 -> :4001).
pub const FRAME: [u8; bpfmatrix_protocol::TEST_FRAME_LEN] = {
    let mut f = [0u8; 64];
    // Ethernet: dst, src (locally administered), EtherType IPv4.
    let hdr: [u8; 42] = [
        0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00, //
        // IPv4: v4 ihl5, tos, total 50, id, flags DF, ttl 64, UDP, checksum, src, dst
        0x45, 0x00, 0x00, 0x32, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x3c, 0xb8, 127, 0, 0, 1, 127,
        0, 0, 1, // UDP: sport 4000, dport 4001, len 30, checksum 0 (none)
        0x0f, 0xa0, 0x0f, 0xa1, 0x00, 0x1e, 0x00, 0x00,
    ];
    let mut i = 0;
    while i < hdr.len() {
        f[i] = hdr[i];
        i += 1;
    }
    let payload = *b"bpfmatrix test frame..";
    let mut j = 0;
    while j < payload.len() {
        f[42 + j] = payload[j];
        j += 1;
    }
    f
};

/// Mirrors `struct observation` in probes/bpf/fentry_tc.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Observation {
    fentry_hits: u64,
    fexit_hits: u64,
    fentry_skb_len: u64,
    by_verdict: [u64; 8],
    other_hits: u64,
    last_ret: i64,
}

// SAFETY: repr(C), only integers, no padding.
unsafe impl aya::Pod for Observation {}

impl Observation {
    fn into_verdict(self, trigger: Trigger, configured: u32) -> VerdictObservation {
        let mut saw: Vec<i64> = (0..8)
            .filter(|v| self.by_verdict[*v as usize] > 0)
            .collect();
        if self.other_hits > 0 {
            // Values outside 0..8 are not bucketed: the last one stands for them.
            saw.push(self.last_ret);
        }
        VerdictObservation {
            trigger,
            configured: configured as i32,
            returned: None,
            fexit_saw: saw,
            fexit_hits: self.fexit_hits,
            fentry_hits: self.fentry_hits,
            fentry_skb_len: (self.fentry_hits > 0 && self.fentry_skb_len > 0)
                .then_some(self.fentry_skb_len as u32),
            packets_sent: None,
            packets_received: None,
        }
    }
}

/// The loader, created before /sys is mounted: `EbpfLoader::new()` parses
/// /sys/kernel/btf/vmlinux on its own, and the agent already parses it once
/// for its CO-RE relocations; this way the one parse serves both.
pub fn early_loader<'a>() -> EbpfLoader<'a> {
    EbpfLoader::new()
}

/// Per-run state shared by every case: one loader (so aya parses the kernel
/// BTF once), the kernel BTF for our own CO-RE relocations, loopback set-up.
pub struct Runner<'a> {
    loader: EbpfLoader<'a>,
    kernel_btf: Option<&'a Btf>,
    loopback: Option<Result<(), String>>,
    /// The embedded objects made ready for statistics loads in this JIT mode,
    /// by name.
    stats_objects: StatsObjects<'a>,
    /// Sets made ready ahead (see [`Runner::prepare_ahead`]), one per JIT mode to
    /// come.
    ready_ahead: Vec<StatsObjects<'a>>,
    /// The embedded objects as the cases load them, by name: relocated once
    /// against the kernel BTF (see [`relocated`]), or as embedded (None).
    objects: HashMap<&'static str, Option<Vec<u8>>>,
    /// The seeds' kprobe events, registered once per guest.
    kprobe_events: KprobeEvents,
    lo_ingress: Option<Result<LoIngress, SetUpRefused>>,
}

/// lo's ingress as the cases' tc programs find it. From 6.6 aya attaches them
/// with TCX. Before that it adds a filter to the clsact qdisc, and the chain's
/// first filter coming or going makes the kernel swap the qdisc's filter list
/// and wait in `rcu_barrier()` (`mini_qdisc_pair_swap`, net/sched/sch_generic.c;
/// read in 5.4.286): under TCG 5.10 spent 6 to 20 ms on each attach and 12 to 16
/// on each detach, four of each a run. So clsact and a pass-through filter
/// (probes/bpf/tc_pass.c) stay for the guest's life, and a case's program joins
/// the pass-through's priority: cls_bpf puts it at the head of its list, its
/// verdict is the one taken, and the chain's first filter never changes.
enum LoIngress {
    Tcx,
    Netlink { _pass: Ebpf },
}

/// The priority of the pass-through filter and of the cases' filters beside it:
/// the one the kernel gives a chain's first filter when asked for none.
const LO_INGRESS_PRIORITY: u16 = 0xC000;

fn tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

impl LoIngress {
    /// `loader` is the run's, whose kernel BTF is already parsed: a new
    /// `EbpfLoader` parses /sys/kernel/btf/vmlinux again (80 ms of a booted
    /// 5.10 guest under TCG).
    fn new(loader: &mut EbpfLoader<'_>) -> Result<Self, SetUpRefused> {
        if tcx() {
            return Ok(LoIngress::Tcx);
        }
        if let Err(e) = aya::programs::tc::qdisc_add_clsact("lo") {
            let exists = matches!(&e, aya::programs::tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(libc::EEXIST));
            if !exists {
                return Err(SetUpRefused {
                    step: "add clsact qdisc on lo".into(),
                    errno: Some(netlink_errno(&e)),
                    message: chain(&e),
                });
            }
        }
        let refused = |step: &str, errno: Option<i32>, message: String| SetUpRefused {
            step: step.into(),
            errno,
            message,
        };
        let by_kernel = |e: &ProgramError| Some(program_errno(e)).filter(|&errno| errno != 0);
        let mut pass = loader
            .load(objects::TC_PASS)
            .map_err(|e| refused("load tc_pass", None, chain(&e)))?;
        let program: &mut SchedClassifier = pass
            .program_mut("pass")
            .ok_or_else(|| refused("load tc_pass", None, "no program pass".into()))?
            .try_into()
            .map_err(|e: ProgramError| refused("load tc_pass", None, e.to_string()))?;
        program
            .load()
            .map_err(|e| refused("load tc_pass", by_kernel(&e), chain(&e)))?;
        attach_at_lo_ingress(program)
            .map_err(|e| refused("attach tc_pass", by_kernel(&e), chain(&e)))?;
        Ok(LoIngress::Netlink { _pass: pass })
    }
}

/// Attaches `tc` at lo's ingress (made ready by [`Runner::lo_ingress`]).
pub(crate) fn attach_at_lo_ingress(
    tc: &mut SchedClassifier,
) -> Result<SchedClassifierLinkId, ProgramError> {
    if tcx() {
        return tc.attach("lo", TcAttachType::Ingress);
    }
    tc.attach_with_options(
        "lo",
        TcAttachType::Ingress,
        TcAttachOptions::Netlink(NlOptions {
            priority: LO_INGRESS_PRIORITY,
            ..Default::default()
        }),
    )
}

type StatsObjects<'a> = HashMap<&'static str, Result<check::StatsObject<'a>, String>>;

impl<'a> Runner<'a> {
    /// `loader` should come from [`early_loader`]; the kernel BTF is handed to it here.
    pub fn new(mut loader: EbpfLoader<'a>, kernel_btf: Option<&'a Btf>) -> Self {
        loader
            .btf(kernel_btf)
            // Logs are requested on failure only (aya retries with a buffer),
            // so accepted loads stay cheap.
            .verifier_log_level(aya::VerifierLogLevel::DEBUG | aya::VerifierLogLevel::STATS);
        Runner {
            loader,
            kernel_btf,
            loopback: None,
            stats_objects: HashMap::new(),
            ready_ahead: Vec::new(),
            objects: HashMap::new(),
            kprobe_events: KprobeEvents::default(),
            lo_ingress: None,
        }
    }

    /// Does ahead what every run does the same way, whatever its plan: lo up,
    /// the embedded objects relocated, and made ready for the statistics loads
    /// of `modes` JIT modes (each mode needs its own maps). A guest that waits
    /// for its plan does it before saying ready, so every guest restored from it
    /// starts with it done (about 200 ms of a 5.10 run under TCG).
    pub fn prepare_ahead(&mut self, modes: usize) {
        if let Err(e) = self.loopback() {
            eprintln!("bpfmatrix-agent: bringing lo up ahead: {e:?}");
            self.loopback = None;
        }
        if let Err(e) = self.lo_ingress() {
            eprintln!("bpfmatrix-agent: making lo's ingress ready ahead: {e:?}");
        }
        for symbol in seeds::PROBED {
            if let Err(e) = self.kprobe_events.id(symbol) {
                eprintln!("bpfmatrix-agent: {}: {}", e.step, e.message);
            }
        }
        let kernel_btf = self.kernel_btf;
        for _ in 0..modes {
            let set: StatsObjects<'a> = CaseId::ALL
                .iter()
                .map(|c| c.object())
                .filter_map(|name| {
                    let bytes = embedded(&mut self.objects, kernel_btf, name).ok()?;
                    Some((name, check::StatsObject::new(bytes, kernel_btf)))
                })
                .collect();
            self.ready_ahead.push(set);
        }
    }

    /// Runs `case`, filling `measured` as far as it gets.
    pub fn run(&mut self, case: CaseId, measured: &mut Measured) -> Outcome {
        if case.caller_frame_bytes().is_some() {
            match objects::by_name(case.object())
                .ok_or_else(|| anyhow::anyhow!("no embedded object {}", case.object()))
                .and_then(|o| objects::stack_depth(o, case.program()))
            {
                Ok(depth) => measured.caller_frame_bytes = Some(depth),
                Err(e) => {
                    return Outcome::Error {
                        message: format!("reading {}'s frame: {e:#}", case.program()),
                    }
                }
            }
        }
        let result = match case {
            CaseId::TailCallChain => self.tail_call_chain(measured),
            CaseId::TailCallEmptySlot => self.tail_call_empty_slot(measured),
            CaseId::Bpf2bpfControl => self.bpf2bpf_control(measured),
            CaseId::Bpf2bpfTailCallInSubprog => self.mix_chain("mix_entry", 0, measured),
            CaseId::Bpf2bpfBigCallerFrame => self.mix_chain("big_frame_entry", 1, measured),
            CaseId::Bpf2bpfCallerFrame224 => self.mix_chain("frame224_entry", 2, measured),
            CaseId::Bpf2bpfCallerFrame240 => self.mix_chain("frame240_entry", 3, measured),
            CaseId::FentryTcTestRun => self.fentry_tc_test_run(measured),
            CaseId::FentryTcLoopback => self.fentry_tc_loopback(measured),
            CaseId::SeedTcpconnTailCall => seeds::tcpconn_tail_call(self, measured),
            CaseId::SeedFentryFexitTcIcmp => seeds::fentry_fexit_tc_icmp(self, measured),
            CaseId::SeedSeccompTailCall => seeds::seccomp_tail_call(self, measured),
        };
        self.add_log_costs(case, measured);
        match result {
            Ok(()) => Outcome::Accepted,
            Err(f) => f.into_outcome(),
        }
    }

    /// The verifier log's figures for the programs of the case that aya loaded
    /// (it keeps no log of an accepted load): a separate statistics load of the
    /// same program of the same embedded object, through check's loader, in
    /// the same JIT mode; each object is made ready once per mode. The
    /// bpf_prog_info figures stay those of the case's own program; the tracers
    /// the agent loads itself already have theirs.
    fn add_log_costs(&mut self, case: CaseId, measured: &mut Measured) {
        let wanted: Vec<String> = measured
            .costs
            .iter()
            .filter(|(_, c)| c.insns_processed.is_none())
            .map(|(name, _)| name.clone())
            .collect();
        if wanted.is_empty() {
            return;
        }
        let kernel_btf = self.kernel_btf;
        let embedded_objects = &mut self.objects;
        let object = self.stats_objects.entry(case.object()).or_insert_with(|| {
            embedded(embedded_objects, kernel_btf, case.object())
                .and_then(|bytes| check::StatsObject::new(bytes, kernel_btf))
        });
        for name in wanted {
            let from_log = object
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|o| o.cost(&name));
            match (from_log, measured.costs.get_mut(&name)) {
                (Ok(from_log), Some(cost)) => verifier::add_log_figures(cost, from_log),
                (Err(e), _) => {
                    eprintln!("bpfmatrix-agent: {case}: no verifier statistics for {name}: {e}")
                }
                (Ok(_), None) => {}
            }
        }
    }

    /// A JIT mode begins: the statistics objects of the last one are dropped. A
    /// prog array takes programs of the JIT-ness of its first user only, so
    /// sharing one across modes would refuse every tail-calling program
    /// (EINVAL) in the second.
    pub fn begin_mode(&mut self) {
        self.stats_objects = self.ready_ahead.pop().unwrap_or_default();
    }

    /// The embedded object of `case`, as the cases load it.
    pub(crate) fn object(&mut self, case: CaseId) -> Result<&[u8], Fail> {
        embedded(&mut self.objects, self.kernel_btf, case.object()).map_err(Fail::Error)
    }

    /// The tracepoint id of `symbol`'s kprobe event, registered on first use.
    pub(crate) fn kprobe_event(&mut self, symbol: &str) -> Result<u64, SetUpRefused> {
        self.kprobe_events.id(symbol)
    }

    /// The kernel's BTF, when it has one (/sys/kernel/btf/vmlinux).
    pub(crate) fn kernel_btf(&self) -> Option<&'a Btf> {
        self.kernel_btf
    }

    /// Brings lo up, once per run.
    pub(crate) fn loopback(&mut self) -> CaseResult {
        self.loopback
            .get_or_insert_with(|| sys::loopback_up().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| Fail::Error(format!("loopback set-up: {e}")))
    }

    /// Makes lo's ingress ready for the cases' tc programs, once per guest (see
    /// [`LoIngress`]).
    pub(crate) fn lo_ingress(&mut self) -> CaseResult {
        let loader = &mut self.loader;
        match self
            .lo_ingress
            .get_or_insert_with(|| LoIngress::new(loader))
        {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone().into()),
        }
    }

    pub(crate) fn load_object(&mut self, case: CaseId) -> Result<Ebpf, Fail> {
        let bytes =
            embedded(&mut self.objects, self.kernel_btf, case.object()).map_err(Fail::Error)?;
        self.loader
            .load(bytes)
            .map_err(|e| Fail::Error(format!("loading object {}: {}", case.object(), chain(&e))))
    }

    fn tail_call_chain(&mut self, m: &mut Measured) -> CaseResult {
        let mut bpf = self.load_object(CaseId::TailCallChain)?;
        load_program(&mut bpf, "chain_entry", m)?;
        load_program(&mut bpf, "chain_body", m)?;
        // Owned here so the array (and the chain) lives until the run is over.
        let mut jmp = prog_array(&mut bpf)?;
        set_slot(&bpf, &mut jmp, 0, "chain_body")?;
        let ret = test_run(&bpf, "chain_entry")?;
        let runs = counter(&bpf, 0)?;
        m.retval = Some(ret);
        m.tail_calls = Some(runs.saturating_sub(1) as u32);
        drop(jmp);
        Ok(())
    }

    fn tail_call_empty_slot(&mut self, m: &mut Measured) -> CaseResult {
        let mut bpf = self.load_object(CaseId::TailCallEmptySlot)?;
        load_program(&mut bpf, "empty_slot", m)?;
        let ret = test_run(&bpf, "empty_slot")?;
        m.retval = Some(ret);
        m.fell_through = Some(counter(&bpf, 1)? > 0);
        m.tail_calls = Some(counter(&bpf, 0)?.saturating_sub(1) as u32);
        Ok(())
    }

    fn bpf2bpf_control(&mut self, m: &mut Measured) -> CaseResult {
        let mut bpf = self.load_object(CaseId::Bpf2bpfControl)?;
        load_program(&mut bpf, "control_entry", m)?;
        m.retval = Some(test_run(&bpf, "control_entry")?);
        Ok(())
    }

    /// `prog` calls a subprogram that counts and tail-calls jmp_table[slot],
    /// where `prog` itself is put: a self chain through a subprogram.
    fn mix_chain(&mut self, prog: &str, slot: u32, m: &mut Measured) -> CaseResult {
        let mut bpf = self.load_object(CaseId::Bpf2bpfTailCallInSubprog)?;
        load_program(&mut bpf, prog, m)?;
        let mut jmp = prog_array(&mut bpf)?;
        set_slot(&bpf, &mut jmp, slot, prog)?;
        let ret = test_run(&bpf, prog)?;
        let runs = counter(&bpf, 0)?;
        m.retval = Some(ret);
        m.tail_calls = Some(runs.saturating_sub(1) as u32);
        drop(jmp);
        Ok(())
    }

    /// Loads and attaches fentry_tc and fexit_tc to the loaded tc_verdict (see
    /// [`attach_tracers`]).
    fn attach_tracers(&mut self, bpf: &Ebpf, m: &mut Measured) -> Result<Vec<OwnedFd>, Fail> {
        let kernel_btf = self.kernel_btf;
        attach_tracers(
            bpf,
            "tc_verdict",
            self.object(CaseId::FentryTcTestRun)?,
            kernel_btf,
            &map_fds(bpf),
            &|name| {
                format!(
                "the kernel accepted {name}, but it has no BTF (/sys/kernel/btf/vmlinux) to CO-RE relocate its sk_buff read against"
            )
            },
            m,
        )
    }

    fn fentry_tc_test_run(&mut self, m: &mut Measured) -> CaseResult {
        let mut bpf = self.load_object(CaseId::FentryTcTestRun)?;
        load_program(&mut bpf, "tc_verdict", m)?;
        // A refused tracer is the case's verdict, but the tc program still runs
        // so the record shows what it returned without tracers.
        let (tracers, refusal) = match self.attach_tracers(&bpf, m) {
            Ok(t) => (t, None),
            Err(f @ Fail::Rejected { .. }) => (Vec::new(), Some(f)),
            Err(f) => return Err(f),
        };
        for verdict in [TC_ACT_OK, TC_ACT_SHOT] {
            set_verdict(&mut bpf, verdict)?;
            reset_obs(&mut bpf)?;
            let ret = test_run(&bpf, "tc_verdict")?;
            let mut v = read_obs(&bpf)?.into_verdict(Trigger::TestRun, verdict);
            v.returned = Some(ret as i32);
            m.retval = Some(ret);
            m.verdicts.push(v);
        }
        drop(tracers);
        refusal.map_or(Ok(()), Err)
    }

    fn fentry_tc_loopback(&mut self, m: &mut Measured) -> CaseResult {
        self.loopback()?;
        self.lo_ingress()?;
        self.loopback_inner(m)
    }

    fn loopback_inner(&mut self, m: &mut Measured) -> CaseResult {
        let mut bpf = self.load_object(CaseId::FentryTcLoopback)?;
        load_program(&mut bpf, "tc_verdict", m)?;
        set_verdict(&mut bpf, TC_ACT_OK)?;
        let tc: &mut SchedClassifier = bpf
            .program_mut("tc_verdict")
            .ok_or_else(|| Fail::Error("no program tc_verdict".into()))?
            .try_into()
            .map_err(|e: ProgramError| Fail::Error(e.to_string()))?;
        let link = attach_at_lo_ingress(tc).map_err(|e| Fail::Rejected {
            step: "attach tc_verdict".into(),
            errno: program_errno(&e),
            verifier_tail: chain(&e),
        })?;
        let (tracers, refusal) = match self.attach_tracers(&bpf, m) {
            Ok(t) => (t, None),
            Err(f @ Fail::Rejected { .. }) => (Vec::new(), Some(f)),
            Err(f) => return Err(f),
        };
        let rx = UdpSocket::bind("127.0.0.1:0").context("bind receiver")?;
        let tx = UdpSocket::bind("127.0.0.1:0").context("bind sender")?;
        let dst = rx.local_addr().context("receiver address")?;
        // The tc program's run counter tells when every packet went through it, so
        // a dropped packet is known dropped without waiting out a receive timeout.
        // Without tracers it comes from the kernel's BPF stats (5.8+); with them,
        // fexit counts the same runs.
        let stats = if tracers.is_empty() {
            aya::sys::enable_stats(aya::sys::Stats::RunTime).ok()
        } else {
            None
        };
        for verdict in [TC_ACT_OK, TC_ACT_SHOT] {
            set_verdict(&mut bpf, verdict)?;
            reset_obs(&mut bpf)?;
            let runs_before = tc_runs(&bpf, &tracers, stats.is_some());
            let mut sent = 0;
            for i in 0..LOOPBACK_PACKETS {
                let payload = format!("bpfmatrix verdict {verdict} packet {i}");
                if tx.send_to(payload.as_bytes(), dst).is_ok() {
                    sent += 1;
                }
            }
            let counted = wait_for_runs(
                || tc_runs(&bpf, &tracers, stats.is_some()),
                runs_before,
                u64::from(sent),
            );
            let received = drain(&rx, sent, counted)?;
            let mut v = read_obs(&bpf)?.into_verdict(Trigger::Loopback, verdict);
            v.packets_sent = Some(sent);
            v.packets_received = Some(received);
            m.verdicts.push(v);
        }
        drop(stats);
        drop(tracers);
        let tc: &mut SchedClassifier = bpf
            .program_mut("tc_verdict")
            .ok_or_else(|| Fail::Error("no program tc_verdict".into()))?
            .try_into()
            .map_err(|e: ProgramError| Fail::Error(e.to_string()))?;
        tc.detach(link)
            .map_err(|e| Fail::Error(format!("detach tc_verdict: {e}")))?;
        refusal.map_or(Ok(()), Err)
    }
}

/// Embedded object `name` as the cases load it: relocated against the kernel
/// BTF on first use and kept in `cache`. Without kernel BTF, or when the
/// relocation fails, the object as embedded: aya then relocates (or refuses)
/// it itself, in its own words, at the case's load. An error names an object
/// the agent does not embed.
fn embedded<'c>(
    cache: &'c mut HashMap<&'static str, Option<Vec<u8>>>,
    kernel_btf: Option<&Btf>,
    name: &'static str,
) -> Result<&'c [u8], String> {
    let original = objects::by_name(name).ok_or_else(|| format!("no embedded object {name}"))?;
    let relocated = cache.entry(name).or_insert_with(|| {
        let btf = kernel_btf?;
        relocated::relocated(original, btf)
            .map_err(|e| eprintln!("bpfmatrix-agent: relocating {name} ahead: {e:#}"))
            .ok()
            .flatten()
    });
    Ok(relocated.as_deref().unwrap_or(original))
}

/// How many times tc_verdict has run so far: fexit's count when the tracers are
/// attached, else the kernel's run counter (needs BPF stats on), else unknown.
fn tc_runs(bpf: &Ebpf, tracers: &[OwnedFd], stats_on: bool) -> Option<u64> {
    if !tracers.is_empty() {
        return read_obs(bpf).ok().map(|o| o.fexit_hits);
    }
    if !stats_on {
        return None;
    }
    classifier(bpf, "tc_verdict")
        .ok()?
        .info()
        .ok()
        .map(|i| i.run_count())
}

/// Waits until the tc program has run `sent` more times than `before` (every
/// packet went through ingress), polling briefly; a bound of
/// [`LOOPBACK_SETTLE`] keeps a miscounting kernel from hanging the case. Returns
/// whether the count was reached (false: no counter, or it never got there).
fn wait_for_runs(runs: impl Fn() -> Option<u64>, before: Option<u64>, sent: u64) -> bool {
    let Some(before) = before else { return false };
    let deadline = Instant::now() + LOOPBACK_SETTLE;
    loop {
        match runs() {
            Some(now) if now.saturating_sub(before) >= sent => return true,
            Some(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => return false,
        }
    }
}

/// Receives what arrived. With the run count reached, every packet tc passed is
/// already queued on `rx` (on loopback the receive path finishes in the same
/// softirq as ingress), so the drain is non-blocking; without it, each missing
/// packet is waited for up to [`LOOPBACK_SETTLE`].
fn drain(rx: &UdpSocket, sent: u32, counted: bool) -> Result<u32, Fail> {
    let mut received = 0;
    let mut buf = [0u8; 256];
    if counted {
        rx.set_nonblocking(true).context("non-blocking receiver")?;
    } else {
        rx.set_nonblocking(false).context("blocking receiver")?;
        rx.set_read_timeout(Some(LOOPBACK_SETTLE))
            .context("receive timeout")?;
    }
    while received < sent && rx.recv_from(&mut buf).is_ok() {
        received += 1;
    }
    // With several CPUs the last packet's socket delivery may still be running
    // elsewhere when its fexit has counted: a short grace, never on one CPU.
    if counted && received < sent && std::thread::available_parallelism().map_or(1, usize::from) > 1
    {
        let until = Instant::now() + Duration::from_millis(10);
        while received < sent && Instant::now() < until {
            match rx.recv_from(&mut buf) {
                Ok(_) => received += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
    Ok(received)
}

/// An error with its causes ("failed to create map `x`: Invalid argument"): aya's
/// errors keep the errno in their source, which plain Display leaves out.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // Some errors already print their source; say each cause once.
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(&format!(": {c_text}"));
        }
        cause = c.source();
    }
    text
}

/// The verifier's last meaningful lines: what a `Rejected` outcome quotes.
pub(crate) fn verifier_tail(log: &str) -> String {
    verifier_log::tail(log, 4, 2048)
}

fn netlink_errno(e: &aya::programs::tc::TcError) -> i32 {
    match e {
        aya::programs::tc::TcError::NetlinkError(n) => n.raw_os_error().unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn program_errno(e: &ProgramError) -> i32 {
    match e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error().unwrap_or(0),
        ProgramError::TcError(t) => netlink_errno(t),
        _ => 0,
    }
}

/// The fds of the object's maps, by name, for the programs the agent loads itself
/// (prog_tracing), so they share the maps aya created.
pub(crate) fn map_fds(bpf: &Ebpf) -> HashMap<String, RawFd> {
    bpf.maps()
        .filter_map(|(name, map)| {
            let data: &MapData = match map {
                Map::Array(d)
                | Map::PerCpuArray(d)
                | Map::HashMap(d)
                | Map::ProgramArray(d)
                | Map::PerfEventArray(d) => d,
                _ => return None,
            };
            Some((name.to_string(), data.fd().as_fd().as_raw_fd()))
        })
        .collect()
}

/// Loads `object`'s fentry_tc and fexit_tc with `target` (a loaded classifier of
/// `bpf`) as their attach target and attaches them (aya 0.14 cannot: see
/// prog_tracing). Their JITed sizes go into `m`.
///
/// The kernel is always asked, whatever this guest lacks, so its own answer is
/// the cell: a kernel before 5.5 refuses the load (its bpf_attr has no
/// attach_prog_fd), one without BTF for the target refuses the target, the
/// interpreter refuses a target that is not JITed. Only when the kernel accepts a
/// tracer that could not be CO-RE relocated (no kernel BTF) is the case
/// `Unsupported`, with `unrelocated(name)` as the reason, since its reads would
/// be wrong.
pub(crate) fn attach_tracers(
    bpf: &Ebpf,
    target: &str,
    object: &[u8],
    kernel_btf: Option<&Btf>,
    map_fds: &HashMap<String, RawFd>,
    unrelocated: &dyn Fn(&str) -> String,
    m: &mut Measured,
) -> Result<Vec<OwnedFd>, Fail> {
    let tc = classifier(bpf, target)?;
    let info = tc
        .info()
        .map_err(|e| Fail::Error(format!("{target} info: {e}")))?;
    // No program BTF (a kernel before 5.0, or aya found BTF unusable): ask with no
    // target id, and let the kernel say what it makes of that.
    let func_id = match info.btf_id() {
        Some(btf_id) => {
            let blob = prog_tracing::kernel_btf_blob(btf_id)?;
            prog_tracing::func_btf_id(&blob, target)?
        }
        None => 0,
    };
    let names = ["fentry_tc", "fexit_tc"];
    let (license, insns) = prog_tracing::prepare_programs(object, kernel_btf, map_fds, &names)?;
    let tc_fd = tc
        .fd()
        .map_err(|e| Fail::Error(format!("{target} fd: {e}")))?;
    let mut fds = Vec::new();
    for (name, kind) in [
        ("fentry_tc", TraceKind::Fentry),
        ("fexit_tc", TraceKind::Fexit),
    ] {
        let load = TracingLoad {
            name,
            kind,
            insns: &insns[name],
            license: &license,
            attach_prog_fd: tc_fd.as_fd().as_raw_fd(),
            attach_btf_id: func_id,
        };
        let verified = prog_tracing::load_tracing(&load).map_err(|refused| Fail::Rejected {
            step: format!("load {name}"),
            errno: refused.errno,
            verifier_tail: verifier_tail(&refused.log),
        })?;
        // Loaded by the agent itself, so its accepted load's log is at hand:
        // the costs come from it and from the program's bpf_prog_info.
        let cost = verifier::cost(&verified);
        let jited = cost.jited_bytes.map(|f| f.value as u32);
        m.costs.insert(name.to_string(), cost);
        let prog = verified.fd;
        if kernel_btf.is_none() {
            return Err(Fail::Unsupported(unrelocated(name)));
        }
        let jited = jited.ok_or_else(|| Fail::Error(format!("no bpf_prog_info for {name}")))?;
        m.jited_bytes.insert(name.to_string(), jited);
        let link = prog_tracing::raw_tracepoint_open(prog.as_fd()).map_err(|e| Fail::Rejected {
            step: format!("attach {name}"),
            errno: e.raw_os_error().unwrap_or(0),
            verifier_tail: String::new(),
        })?;
        fds.push(link);
        fds.push(prog);
    }
    Ok(fds)
}

pub(crate) fn classifier<'b>(bpf: &'b Ebpf, name: &str) -> Result<&'b SchedClassifier, Fail> {
    bpf.program(name)
        .ok_or_else(|| Fail::Error(format!("no program {name} in the object")))?
        .try_into()
        .map_err(|e: ProgramError| Fail::Error(format!("{name}: {e}")))
}

/// Loads a classifier or kprobe program and notes its JITed size; a kernel
/// refusal becomes `Rejected` with the verifier's words.
pub(crate) fn load_program(bpf: &mut Ebpf, name: &str, m: &mut Measured) -> CaseResult {
    let prog = bpf
        .program_mut(name)
        .ok_or_else(|| Fail::Error(format!("no program {name} in the object")))?;
    // What the loaded program became (bpf_prog_info): its JITed size proves the
    // mode; the verifier log's figures are added after the case (Runner::run).
    let info_cost = |fd: BorrowedFd<'_>| {
        let mut cost = VerifierCost::default();
        verifier::add_prog_info(&mut cost, fd).map(|()| cost)
    };
    let loaded = match prog {
        Program::SchedClassifier(p) => p.load().and_then(|()| Ok(info_cost(p.fd()?.as_fd()))),
        Program::KProbe(p) => p.load().and_then(|()| Ok(info_cost(p.fd()?.as_fd()))),
        _ => {
            return Err(Fail::Error(format!(
                "{name} is neither a classifier nor a kprobe"
            )))
        }
    };
    match loaded {
        Ok(cost) => {
            let cost = cost.map_err(|e| Fail::Error(format!("bpf_prog_info of {name}: {e}")))?;
            let jited = cost.jited_bytes.map_or(0, |f| f.value as u32);
            m.jited_bytes.insert(name.to_string(), jited);
            m.costs.insert(name.to_string(), cost);
            Ok(())
        }
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => Err(Fail::Rejected {
            step: format!("load {name}"),
            errno: io_error.raw_os_error().unwrap_or(0),
            verifier_tail: verifier_tail(&verifier_log.to_string()),
        }),
        Err(e) => Err(Fail::Error(format!("load {name}: {}", chain(&e)))),
    }
}

fn test_run(bpf: &Ebpf, name: &str) -> Result<u32, Fail> {
    let prog = classifier(bpf, name)?;
    let opts = TestRunOptions {
        data_in: Some(&FRAME),
        repeat: 1,
        ..Default::default()
    };
    prog.test_run(opts)
        .map(|r| r.return_value)
        .map_err(|e| Fail::Error(format!("BPF_PROG_TEST_RUN {name}: {}", chain(&e))))
}

fn prog_array(bpf: &mut Ebpf) -> Result<ProgramArray<MapData>, Fail> {
    let map = bpf
        .take_map("jmp_table")
        .ok_or_else(|| Fail::Error("no map jmp_table".into()))?;
    ProgramArray::try_from(map).map_err(|e| Fail::Error(format!("jmp_table: {e}")))
}

fn set_slot(bpf: &Ebpf, jmp: &mut ProgramArray<MapData>, slot: u32, prog: &str) -> CaseResult {
    let fd = classifier(bpf, prog)?
        .fd()
        .map_err(|e| Fail::Error(format!("{prog} fd: {e}")))?;
    jmp.set(slot, fd, 0)
        .map_err(|e| Fail::Error(format!("jmp_table[{slot}] = {prog}: {e}")))
}

fn counter(bpf: &Ebpf, idx: u32) -> Result<u64, Fail> {
    let map = bpf
        .map("counters")
        .ok_or_else(|| Fail::Error("no map counters".into()))?;
    let arr: Array<&MapData, u64> =
        Array::try_from(map).map_err(|e| Fail::Error(format!("counters: {e}")))?;
    arr.get(&idx, 0)
        .map_err(|e| Fail::Error(format!("counters[{idx}]: {e}")))
}

fn set_verdict(bpf: &mut Ebpf, verdict: u32) -> CaseResult {
    let map = bpf
        .map_mut("verdict_cfg")
        .ok_or_else(|| Fail::Error("no map verdict_cfg".into()))?;
    let mut arr: Array<&mut MapData, u32> =
        Array::try_from(map).map_err(|e| Fail::Error(format!("verdict_cfg: {e}")))?;
    arr.set(0, verdict, 0)
        .map_err(|e| Fail::Error(format!("verdict_cfg[0] = {verdict}: {e}")))
}

fn reset_obs(bpf: &mut Ebpf) -> CaseResult {
    let map = bpf
        .map_mut("obs")
        .ok_or_else(|| Fail::Error("no map obs".into()))?;
    let mut arr: Array<&mut MapData, Observation> =
        Array::try_from(map).map_err(|e| Fail::Error(format!("obs: {e}")))?;
    arr.set(0, Observation::default(), 0)
        .map_err(|e| Fail::Error(format!("reset obs: {e}")))
}

fn read_obs(bpf: &Ebpf) -> Result<Observation, Fail> {
    let map = bpf
        .map("obs")
        .ok_or_else(|| Fail::Error("no map obs".into()))?;
    let arr: Array<&MapData, Observation> =
        Array::try_from(map).map_err(|e| Fail::Error(format!("obs: {e}")))?;
    arr.get(&0, 0)
        .map_err(|e| Fail::Error(format!("read obs: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_ethernet_ipv4_udp_with_a_valid_ip_checksum() {
        assert_eq!(FRAME.len(), 64);
        assert_eq!(&FRAME[12..14], &[0x08, 0x00]);
        assert_eq!(FRAME[14] >> 4, 4);
        assert_eq!(FRAME[23], 17, "UDP");
        let ip = &FRAME[14..34];
        let mut sum: u32 = ip
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "IPv4 header checksum");
        assert_eq!(u16::from_be_bytes([FRAME[16], FRAME[17]]) as usize, 64 - 14);
        assert_eq!(u16::from_be_bytes([FRAME[38], FRAME[39]]) as usize, 64 - 34);
    }

    #[test]
    fn observation_buckets_become_distinct_values() {
        let mut o = Observation {
            fentry_hits: 2,
            fexit_hits: 3,
            fentry_skb_len: 64,
            ..Default::default()
        };
        o.by_verdict[0] = 1;
        o.by_verdict[2] = 2;
        o.other_hits = 1;
        o.last_ret = -1;
        let v = o.into_verdict(Trigger::TestRun, 2);
        assert_eq!(v.fexit_saw, vec![0, 2, -1]);
        assert_eq!(
            (v.fexit_hits, v.fentry_hits, v.fentry_skb_len),
            (3, 2, Some(64))
        );
        assert_eq!(std::mem::size_of::<Observation>(), 8 * 13);
    }
}
