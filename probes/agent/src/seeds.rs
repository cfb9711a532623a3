//! The seed articles' own demos (issue 11), run as the articles run them with aya
//! as the loader (probes/bpf/seed_*.c):
//!
//! - seed.tcpconn_tail_call: the tail-call notes' kprobes on tcp_connect and
//!   inet_csk_complete_hashdance, tail-calling handle_new_connection, which sends
//!   each connection's addresses and ports through a perf event array; provoked
//!   by a loopback TCP listener and a client connecting to it.
//! - seed.fentry_fexit_tc_icmp: the fentry/fexit-on-tc article's tc program at
//!   clsact ingress on lo, traced by its fentry and fexit programs; provoked by
//!   an ICMP echo to 127.0.0.1 from a raw socket (the guest has no ping).
//! - seed.seccomp_tail_call: the tail-call-vs-bpf2bpf article's kprobe on
//!   __seccomp_filter, tail-calling one program per syscall number, each
//!   printing with bpf_trace_printk; provoked by a child with an allow-all
//!   seccomp filter calling write, read, open (the raw syscall: libc opens with
//!   openat) and getpid (no program: the fall-through line).
//!
//! aya loads the programs; their kprobes attach through tracefs kprobe events
//! registered once per guest ([`kprobe_events`] says why).
//!
//! Each case records what the demo showed (the events, the trace lines) and what
//! the agent did to provoke it (the ports, the echo, the calls); the host judges.
//! A probed symbol that /proc/kallsyms does not list (absent, or inlined into its
//! callers) makes the case Unsupported, naming it.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aya::maps::perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer};
use aya::maps::{MapData, ProgramArray};
use aya::programs::{KProbe, Program, ProgramError, SchedClassifier};
use aya::Ebpf;
use bpfmatrix_protocol::{
    CaseId, ConnEvent, IcmpEcho, Measured, PacketEvent, SeedObserved, SyscallMade, TcpPorts,
    NO_KERNEL_BTF, SECCOMP_DEMO_COMM,
};

use crate::cases::{self, CaseResult, Fail, Runner};
use crate::kprobe_events;

/// The most a demo waits for its events once it has provoked them (a bound, never
/// the normal path: the events are written before the provoking call returns).
const SETTLE: Duration = Duration::from_millis(500);

/// The kernel functions the demos put kprobes on.
pub(crate) const PROBED: [&str; 3] = [
    "tcp_connect",
    "inet_csk_complete_hashdance",
    "__seccomp_filter",
];

/// seed.tcpconn_tail_call.
pub fn tcpconn_tail_call(r: &mut Runner<'_>, m: &mut Measured) -> CaseResult {
    r.loopback()?;
    let mut bpf = r.load_object(CaseId::SeedTcpconnTailCall)?;
    for prog in [
        "handle_new_connection",
        "k_tcp_connect",
        "k_icsk_complete_hashdance",
    ] {
        cases::load_program(&mut bpf, prog, m)?;
    }
    if r.kernel_btf().is_none() {
        return Err(Fail::Unsupported(format!(
            "{NO_KERNEL_BTF}: handle_new_connection's CO-RE reads of struct sock (__sk_common.skc_rcv_saddr, skc_daddr, skc_num, skc_dport) cannot be relocated; the kernel accepted the programs as compiled, whose offsets are not the kernel's"
        )));
    }
    // The article's Go: progs[0] = handle_new_connection, then the two kprobes.
    let mut progs = prog_array(&mut bpf, "progs")?;
    set_slot(&bpf, &mut progs, 0, "handle_new_connection")?;
    let mut perf = PerfReader::open(&mut bpf, "events")?;
    let kprobes = [
        attach_kprobe(r, &bpf, "k_tcp_connect", "tcp_connect")?,
        attach_kprobe(
            r,
            &bpf,
            "k_icsk_complete_hashdance",
            "inet_csk_complete_hashdance",
        )?,
    ];

    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Fail::Error(format!("TCP listener on 127.0.0.1: {e}")))?;
    let listen_addr = listener
        .local_addr()
        .map_err(|e| Fail::Error(format!("listener address: {e}")))?;
    let client = TcpStream::connect(listen_addr)
        .map_err(|e| Fail::Error(format!("connect to {listen_addr}: {e}")))?;
    // accept() returns once the handshake's last ACK made the child socket, which
    // is inet_csk_complete_hashdance's work: both events are out by then.
    let (accepted, _) = listener
        .accept()
        .map_err(|e| Fail::Error(format!("accept on {listen_addr}: {e}")))?;
    let client_port = client
        .local_addr()
        .map_err(|e| Fail::Error(format!("client address: {e}")))?
        .port();
    let seed = observed(m);
    seed.tcp_ports = Some(TcpPorts {
        listener: listen_addr.port(),
        client: client_port,
    });
    let samples = perf.collect(|s| s.len() >= 2);
    seed.perf_lost = Some(perf.lost);
    seed.conn_events = samples
        .iter()
        .map(|s| decode_conn(s))
        .collect::<Result<_, _>>()?;
    drop((client, accepted, listener));
    drop(kprobes);
    drop(perf);
    drop(progs);
    Ok(())
}

/// seed.fentry_fexit_tc_icmp.
pub fn fentry_fexit_tc_icmp(r: &mut Runner<'_>, m: &mut Measured) -> CaseResult {
    r.loopback()?;
    r.lo_ingress()?;
    icmp_on_lo_ingress(r, m)
}

fn icmp_on_lo_ingress(r: &mut Runner<'_>, m: &mut Measured) -> CaseResult {
    let mut bpf = r.load_object(CaseId::SeedFentryFexitTcIcmp)?;
    cases::load_program(&mut bpf, "dummy", m)?;
    // The agent loads the tracers itself (prog_tracing), pointing them at the perf
    // event array aya created: its fd, taken before the array leaves aya's hands.
    let map_fds = cases::map_fds(&bpf);
    let tc: &mut SchedClassifier = program_mut(&mut bpf, "dummy")?;
    let link = cases::attach_at_lo_ingress(tc).map_err(|e| Fail::Rejected {
        step: "attach dummy".into(),
        errno: cases::program_errno(&e),
        verifier_tail: cases::chain(&e),
    })?;
    let result = trace_icmp(r, &mut bpf, &map_fds, m);
    let tc: &mut SchedClassifier = program_mut(&mut bpf, "dummy")?;
    tc.detach(link)
        .map_err(|e| Fail::Error(format!("detach dummy: {e}")))?;
    result
}

fn trace_icmp(
    r: &mut Runner<'_>,
    bpf: &mut Ebpf,
    map_fds: &HashMap<String, RawFd>,
    m: &mut Measured,
) -> CaseResult {
    let mut perf = PerfReader::open(bpf, "events")?;
    let kernel_btf = r.kernel_btf();
    // As the article's Go does with AttachTarget/AttachTo.
    let tracers = cases::attach_tracers(
        &*bpf,
        "dummy",
        r.object(CaseId::SeedFentryFexitTcIcmp)?,
        kernel_btf,
        map_fds,
        &|name| {
            format!(
            "{NO_KERNEL_BTF}: the kernel accepted {name}, but its CO-RE reads of sk_buff, ethhdr and iphdr cannot be relocated"
        )
        },
        m,
    )?;
    let echo = icmp_echo()?;
    let seed = observed(m);
    seed.icmp_echo = Some(echo);
    // Each packet through ingress (the request, then the reply) gives a fentry
    // and a fexit event, all written before the reply reaches the socket.
    let want = 4 * echo.replies as usize;
    let samples = perf.collect(|s| s.len() >= want.max(2));
    seed.perf_lost = Some(perf.lost);
    seed.packet_events = samples
        .iter()
        .map(|s| decode_packet(s))
        .collect::<Result<_, _>>()?;
    drop(tracers);
    Ok(())
}

/// seed.seccomp_tail_call.
pub fn seccomp_tail_call(r: &mut Runner<'_>, m: &mut Measured) -> CaseResult {
    const SLOTS: [(&str, libc::c_long); 3] = [
        ("bpf_func_SYS__NR_write", libc::SYS_write),
        ("bpf_func_SYS__NR_read", libc::SYS_read),
        ("bpf_func_SYS__NR_open", libc::SYS_open),
    ];
    let mut bpf = r.load_object(CaseId::SeedSeccompTailCall)?;
    cases::load_program(&mut bpf, "__seccomp_filter", m)?;
    for (prog, _) in SLOTS {
        cases::load_program(&mut bpf, prog, m)?;
    }
    let trace = trace_file().ok_or_else(|| {
        Fail::Unsupported(
            "no tracefs (neither /sys/kernel/tracing/trace nor /sys/kernel/debug/tracing/trace): bpf_trace_printk's lines cannot be read".into(),
        )
    })?;
    // tracex5_user.c: each per-syscall program at its syscall number.
    let mut progs = prog_array(&mut bpf, "progs")?;
    for (prog, nr) in SLOTS {
        set_slot(&bpf, &mut progs, nr as u32, prog)?;
    }
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(trace)
        .map_err(|e| Fail::Error(format!("clearing {trace}: {e}")))?;
    let kprobe = attach_kprobe(r, &bpf, "__seccomp_filter", "__seccomp_filter")?;
    let child = seccomp_child()?;
    // Detached before reading, so nothing else can add lines.
    drop(kprobe);
    drop(bpf);
    drop(progs);
    let seed = observed(m);
    seed.syscalls = child.calls;
    seed.trace_lines = trace_messages(trace, child.pid)?;
    if let Some(signal) = child.signal {
        // A kernel that faults in the child's syscall kills it with SIGSEGV: the
        // programs ran, and what they did to the kernel is the observation.
        seed.child_signal = Some(signal);
        seed.kernel_oops = kernel_log()
            .map(|log| oops_of(&log, child.pid))
            .unwrap_or_else(|e| vec![format!("(reading the kernel log: {e})")]);
    }
    Ok(())
}

/// The record's seed observations, created on first use.
fn observed(m: &mut Measured) -> &mut SeedObserved {
    m.seed.get_or_insert_with(Box::default)
}

fn program_mut<'b, T>(bpf: &'b mut Ebpf, name: &str) -> Result<&'b mut T, Fail>
where
    &'b mut T: TryFrom<&'b mut Program, Error = ProgramError>,
{
    bpf.program_mut(name)
        .ok_or_else(|| Fail::Error(format!("no program {name} in the object")))?
        .try_into()
        .map_err(|e: ProgramError| Fail::Error(format!("{name}: {e}")))
}

/// Attaches kprobe `prog` to `symbol`'s event (see [`kprobe_events`]); closing
/// the returned fd detaches it. A symbol the kernel would not put a kprobe on
/// that /proc/kallsyms does not list (an inlined or missing function) is a cell
/// naming the symbol; kallsyms is read only then, since reading it costs a guest
/// under TCG about a quarter of a second.
fn attach_kprobe(
    r: &mut Runner<'_>,
    bpf: &Ebpf,
    prog: &str,
    symbol: &str,
) -> Result<OwnedFd, Fail> {
    let id = r
        .kprobe_event(symbol)
        .map_err(|e| match require_symbol(symbol) {
            Err(unsupported) => unsupported,
            Ok(()) => Fail::from(e),
        })?;
    let kp: &KProbe = bpf
        .program(prog)
        .ok_or_else(|| Fail::Error(format!("no program {prog} in the object")))?
        .try_into()
        .map_err(|e: ProgramError| Fail::Error(format!("{prog}: {e}")))?;
    let fd = kp
        .fd()
        .map_err(|e| Fail::Error(format!("{prog} fd: {e}")))?;
    kprobe_events::attach(fd.as_fd(), id).map_err(|e| Fail::Rejected {
        step: format!("attach {prog} to kprobe event {symbol}"),
        errno: e.raw_os_error().unwrap_or(0),
        verifier_tail: e.to_string(),
    })
}

fn prog_array(bpf: &mut Ebpf, name: &str) -> Result<ProgramArray<MapData>, Fail> {
    let map = bpf
        .take_map(name)
        .ok_or_else(|| Fail::Error(format!("no map {name}")))?;
    ProgramArray::try_from(map).map_err(|e| Fail::Error(format!("{name}: {e}")))
}

fn set_slot(bpf: &Ebpf, array: &mut ProgramArray<MapData>, slot: u32, prog: &str) -> CaseResult {
    let fd = bpf
        .program(prog)
        .ok_or_else(|| Fail::Error(format!("no program {prog} in the object")))?
        .fd()
        .map_err(|e| Fail::Error(format!("{prog} fd: {e}")))?;
    array
        .set(slot, fd, 0)
        .map_err(|e| Fail::Error(format!("progs[{slot}] = {prog}: {e}")))
}

/// One perf ring per online CPU of a perf event array (the programs write with
/// BPF_F_CURRENT_CPU), read without polling: the demos' events are written
/// before the calls that provoke them return.
struct PerfReader {
    bufs: Vec<PerfEventArrayBuffer<MapData>>,
    lost: u64,
}

impl PerfReader {
    fn open(bpf: &mut Ebpf, name: &str) -> Result<Self, Fail> {
        let map = bpf
            .take_map(name)
            .ok_or_else(|| Fail::Error(format!("no map {name}")))?;
        let mut array = PerfEventArray::try_from(map)
            .map_err(|e| Fail::Error(format!("{name}: {}", cases::chain(&e))))?;
        let cpus = aya::util::online_cpus()
            .map_err(|(path, e)| Fail::Error(format!("online CPUs ({path}): {e}")))?;
        let mut bufs = Vec::new();
        for cpu in cpus {
            bufs.push(array.open(cpu, None).map_err(|e| {
                Fail::Error(format!(
                    "{name}: perf ring of CPU {cpu}: {}",
                    cases::chain(&e)
                ))
            })?);
        }
        Ok(PerfReader { bufs, lost: 0 })
    }

    /// The samples delivered until `enough` holds, or [`SETTLE`] has passed.
    fn collect(&mut self, enough: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + SETTLE;
        let mut samples = Vec::new();
        loop {
            let PerfReader { bufs, lost } = self;
            for buf in bufs.iter_mut() {
                buf.for_each(|event| match event {
                    PerfEvent::Sample { head, tail } => samples.push([head, tail].concat()),
                    PerfEvent::Lost { count } => *lost += count,
                });
            }
            if enough(&samples) || Instant::now() >= deadline {
                return samples;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The article's `event_t` of seed_tcpconn.c (packed, 12 bytes): the addresses in
/// network order, the ports as the program stored them (host order).
fn decode_conn(sample: &[u8]) -> Result<ConnEvent, Fail> {
    let b = event_bytes(sample, 12)?;
    Ok(ConnEvent {
        saddr: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        daddr: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
        sport: u16::from_ne_bytes([b[8], b[9]]),
        dport: u16::from_ne_bytes([b[10], b[11]]),
    })
}

/// The article's `event_t` of seed_fentry_fexit_tc.c (packed, 12 bytes).
fn decode_packet(sample: &[u8]) -> Result<PacketEvent, Fail> {
    let b = event_bytes(sample, 12)?;
    Ok(PacketEvent {
        saddr: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
        daddr: Ipv4Addr::new(b[4], b[5], b[6], b[7]),
        probe_type: b[8],
        verdict: b[9],
    })
}

/// A sample holds the event followed by the kernel's alignment padding.
fn event_bytes(sample: &[u8], len: usize) -> Result<&[u8], Fail> {
    sample.get(..len).ok_or_else(|| {
        Fail::Error(format!(
            "a perf sample of {} bytes, shorter than the {len}-byte event",
            sample.len()
        ))
    })
}

/// Which of [`PROBED`] /proc/kallsyms lists, each with every symbol of its name
/// or a compiler clone of it (`name.isra.0`, `name.constprop.0`...); read once.
fn kallsyms() -> &'static Result<HashMap<&'static str, Vec<String>>, String> {
    static SYMBOLS: OnceLock<Result<HashMap<&'static str, Vec<String>>, String>> = OnceLock::new();
    SYMBOLS.get_or_init(|| {
        let file = fs::File::open("/proc/kallsyms").map_err(|e| format!("/proc/kallsyms: {e}"))?;
        let mut found: HashMap<&'static str, Vec<String>> =
            PROBED.iter().map(|s| (*s, Vec::new())).collect();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("reading /proc/kallsyms: {e}"))?;
            let Some(name) = line.split_whitespace().nth(2) else {
                continue;
            };
            for sym in PROBED {
                let clone = name
                    .strip_prefix(sym)
                    .is_some_and(|rest| rest.starts_with('.'));
                if name == sym || clone {
                    found.entry(sym).or_default().push(name.to_string());
                }
            }
        }
        Ok(found)
    })
}

/// Ok when `sym` is in /proc/kallsyms under its own name, where a kprobe can be
/// put on it; else the case is Unsupported, naming it.
fn require_symbol(sym: &str) -> CaseResult {
    let symbols = kallsyms().as_ref().map_err(|e| Fail::Error(e.clone()))?;
    let names = symbols.get(sym).map(Vec::as_slice).unwrap_or_default();
    if names.iter().any(|n| n == sym) {
        return Ok(());
    }
    let clones = if names.is_empty() {
        String::new()
    } else {
        format!(" (only {})", names.join(", "))
    };
    Err(Fail::Unsupported(format!(
        "kprobe target {sym} is not in /proc/kallsyms{clones}: this kernel inlined it or does not have it"
    )))
}

/// The raw ICMP echo the article's demo gets from ping: one request to
/// 127.0.0.1, and its reply waited for (up to [`SETTLE`]).
fn icmp_echo() -> Result<IcmpEcho, Fail> {
    const ICMP_ECHO: u8 = 8;
    const ICMP_ECHOREPLY: u8 = 0;
    let err = |what: &str| Fail::Error(format!("{what}: {}", io::Error::last_os_error()));
    // SAFETY: a plain socket(2); the fd is owned at once.
    let sock = unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        );
        if fd < 0 {
            return Err(err("raw ICMP socket"));
        }
        OwnedFd::from_raw_fd(fd)
    };
    let id = (std::process::id() as u16) ^ 0x5eed;
    let seq: u16 = 1;
    let mut packet = [0u8; 8 + 24];
    packet[0] = ICMP_ECHO;
    packet[4..6].copy_from_slice(&id.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    packet[8..].copy_from_slice(b"bpfmatrix seed icmp echo");
    let sum = inet_checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    // SAFETY: a zeroed sockaddr_in filled with 127.0.0.1, the packet borrowed.
    let sent = unsafe {
        let mut to: libc::sockaddr_in = std::mem::zeroed();
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr.s_addr = u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets());
        libc::sendto(
            sock.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if sent != packet.len() as isize {
        return Err(err("sending the ICMP echo to 127.0.0.1"));
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: a valid timeval for SO_RCVTIMEO.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    // A raw socket sees every ICMP packet delivered, our request included.
    let deadline = Instant::now() + SETTLE;
    let mut replies = 0;
    let mut buf = [0u8; 1500];
    while replies == 0 && Instant::now() < deadline {
        // SAFETY: recv into a buffer we own.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if let Some(icmp) = buf[..n].get(ihl..ihl + 8) {
            let is_reply = icmp[0] == ICMP_ECHOREPLY
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes();
            if is_reply {
                replies += 1;
            }
        }
    }
    Ok(IcmpEcho {
        requests: 1,
        replies,
    })
}

/// The Internet checksum (RFC 1071) of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// bpf_trace_printk's output: tracefs's `trace` (read, not consumed, unlike
/// trace_pipe), at its own mount or under debugfs (older kernels).
fn trace_file() -> Option<&'static str> {
    [
        "/sys/kernel/tracing/trace",
        "/sys/kernel/debug/tracing/trace",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

/// The messages `pid` printed, from the trace buffer: each line is
/// `COMM-PID [CPU] FLAGS TIME: bpf_trace_printk: MESSAGE` (`0x...: MESSAGE`, or
/// `0: MESSAGE`, before 5.x's trace event for it), and the article's messages
/// hold no ": ".
fn trace_messages(trace: &str, pid: i32) -> Result<Vec<String>, Fail> {
    let text =
        fs::read_to_string(trace).map_err(|e| Fail::Error(format!("reading {trace}: {e}")))?;
    Ok(messages_of(&text, pid))
}

fn messages_of(text: &str, pid: i32) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (task, _) = l.trim_start().split_once('[')?;
            let (_, task_pid) = task.trim_end().rsplit_once('-')?;
            if task_pid.parse::<i32>().ok()? != pid {
                return None;
            }
            let (_, message) = l.rsplit_once(": ")?;
            Some(message.trim_end().to_string())
        })
        .collect()
}

const WRITE_LEN: usize = 5;
const READ_LEN: usize = 5;
const OPEN_PATH: &str = "/";

/// What became of the seccomp demo's child.
struct SeccompChild {
    pid: i32,
    /// The calls it made, with the return values of those it finished.
    calls: Vec<SyscallMade>,
    /// The signal that ended it, if one did.
    signal: Option<i32>,
}

/// Forks the child that makes the demo's calls under an allow-all seccomp
/// filter, and waits for it. Everything it touches is set up before the fork,
/// and it makes no call but its syscalls; it stores their return values in a
/// shared page, so no extra write shows in the trace.
fn seccomp_child() -> Result<SeccompChild, Fail> {
    let err = |what: &str| Fail::Error(format!("{what}: {}", io::Error::last_os_error()));
    let name = CString::new(SECCOMP_DEMO_COMM).map_err(|e| Fail::Error(e.to_string()))?;
    let path = CString::new(OPEN_PATH).map_err(|e| Fail::Error(e.to_string()))?;
    let mut filter = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    let wbuf = *b"seed\n";
    let mut rbuf = [0u8; READ_LEN];
    let mut pipe = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two fds, owned at once.
    let (pipe_r, pipe_w) = unsafe {
        if libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(err("pipe2"));
        }
        (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1]))
    };
    // SAFETY: an anonymous shared page for the child's return values.
    let shared = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if shared == libc::MAP_FAILED {
        return Err(err("mmap"));
    }
    let rets = shared.cast::<i64>();
    // SAFETY: the page is ours, 4096 bytes; slots never written stay NOT_RETURNED.
    unsafe {
        for i in 0..4 {
            *rets.add(i) = NOT_RETURNED;
        }
    }
    let (fd_r, fd_w) = (pipe_r.as_raw_fd(), pipe_w.as_raw_fd());
    // SAFETY: the child only makes raw syscalls on memory set up before the fork
    // and leaves with _exit; the parent waits for it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        // SAFETY: unmapping the page mapped above.
        unsafe { libc::munmap(shared, 4096) };
        return Err(err("fork"));
    }
    if pid == 0 {
        // SAFETY: see above; this is the child.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr());
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(10);
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                libc::_exit(11);
            }
            *rets.add(0) = libc::syscall(libc::SYS_write, fd_w, wbuf.as_ptr(), WRITE_LEN);
            *rets.add(1) = libc::syscall(libc::SYS_read, fd_r, rbuf.as_mut_ptr(), READ_LEN);
            *rets.add(2) = libc::syscall(libc::SYS_open, path.as_ptr(), libc::O_RDONLY);
            *rets.add(3) = libc::syscall(libc::SYS_getpid);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    // SAFETY: the child is gone; the page is read, then unmapped. A call the
    // child never finished left its slot at the marker.
    let ret = |i: usize| unsafe { *rets.add(i) };
    let rets_read = [ret(0), ret(1), ret(2), ret(3)];
    // SAFETY: unmapping the page mapped above.
    unsafe { libc::munmap(shared, 4096) };
    if waited != pid {
        return Err(err("waitpid"));
    }
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    if signal.is_none() && (!libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0) {
        let why = match libc::WEXITSTATUS(status) {
            10 => "PR_SET_NO_NEW_PRIVS failed".to_string(),
            11 => "installing its seccomp filter failed".to_string(),
            code => format!("exited with {code}"),
        };
        return Err(Fail::Error(format!("the seccomp demo's child: {why}")));
    }
    let call = |name: &str, nr: libc::c_long, args: Vec<u64>, ret: i64| SyscallMade {
        name: name.into(),
        nr: nr as u32,
        args,
        ret: (ret != NOT_RETURNED).then_some(ret),
    };
    let calls = vec![
        call(
            "write",
            libc::SYS_write,
            vec![fd_w as u64, wbuf.as_ptr() as u64, WRITE_LEN as u64],
            rets_read[0],
        ),
        call(
            "read",
            libc::SYS_read,
            vec![fd_r as u64, rbuf.as_ptr() as u64, READ_LEN as u64],
            rets_read[1],
        ),
        call(
            "open",
            libc::SYS_open,
            vec![path.as_ptr() as u64, libc::O_RDONLY as u64],
            rets_read[2],
        ),
        call("getpid", libc::SYS_getpid, vec![], rets_read[3]),
    ];
    Ok(SeccompChild { pid, calls, signal })
}

/// The return value recorded for a call the child never finished.
const NOT_RETURNED: i64 = i64::MIN;

/// The kernel log (syslog(2) READ_ALL: no /dev/kmsg needed).
fn kernel_log() -> Result<String, String> {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
    // SAFETY: SIZE_BUFFER takes no buffer.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    let size = usize::try_from(size)
        .map_err(|_| format!("syslog(SIZE_BUFFER): {}", io::Error::last_os_error()))?;
    let mut buf = vec![0u8; size.max(4096)];
    // SAFETY: READ_ALL writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::klogctl(
            SYSLOG_ACTION_READ_ALL,
            buf.as_mut_ptr().cast(),
            buf.len() as libc::c_int,
        )
    };
    let n = usize::try_from(n)
        .map_err(|_| format!("syslog(READ_ALL): {}", io::Error::last_os_error()))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The last oops report for task `pid` in a kernel log: the fault line (the
/// first "BUG:", "Oops" or "general protection fault" line of the 8 before the
/// report's "PID: <pid> Comm:" line) to the end of its trace, at most 40 lines, without
/// the syslog level and timestamp prefixes.
fn oops_of(log: &str, pid: i32) -> Vec<String> {
    let lines: Vec<&str> = log.lines().map(strip_log_prefix).collect();
    let task = format!("PID: {pid} Comm: ");
    let Some(at) = lines.iter().rposition(|l| l.contains(&task)) else {
        return Vec::new();
    };
    let start = (at.saturating_sub(8)..at)
        .find(|&i| {
            let l = lines[i];
            l.starts_with("BUG:") || l.contains("Oops") || l.contains("general protection fault")
        })
        .unwrap_or(at);
    let mut block = Vec::new();
    for l in &lines[start..] {
        block.push(l.to_string());
        if l.starts_with("---[ end trace") || block.len() >= 40 {
            break;
        }
    }
    block
}

/// `<4>[    3.113062] text` -> `text`.
fn strip_log_prefix(line: &str) -> &str {
    let mut l = line;
    if let Some(rest) = l.strip_prefix('<').and_then(|r| r.split_once('>')) {
        l = rest.1;
    }
    if let Some(rest) = l.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        l = rest.1;
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects;

    #[test]
    fn trace_lines_of_the_child_only_old_and_new_formats() {
        let text = "# tracer: nop\n#\n\
            #           TASK-PID     CPU#  ||||   TIMESTAMP  FUNCTION\n\
            \x20   seccomp-demo-85      [001] d..31    12.345678: bpf_trace_printk: write(fd=4, buf=00000000a1b2c3d4, size=5)\n\
            \x20         <...>-85      [001] ....    12.345700: 0x00000001: read(fd=3, buf=(____ptrval____), size=5)\n\
            \x20bpfmatrix-agent-1      [000] ....    12.4: 0: syscall=39 common=bpfmatrix-agent\n\
            \x20   seccomp-demo-85      [001] d..31    12.5: bpf_trace_printk: syscall=39 common=seccomp-demo\n";
        assert_eq!(
            messages_of(text, 85),
            [
                "write(fd=4, buf=00000000a1b2c3d4, size=5)",
                "read(fd=3, buf=(____ptrval____), size=5)",
                "syscall=39 common=seccomp-demo"
            ]
        );
        assert!(messages_of(text, 86).is_empty());
    }

    #[test]
    fn the_oops_of_the_child_is_cut_from_the_kernel_log() {
        let log = "<6>[    2.0] bpfmatrix: something else\n\
            <4>[    3.113062] Oops: general protection fault: 0000 [#1] PREEMPT SMP NOPTI\n\
            <4>[    3.113465] CPU: 0 UID: 0 PID: 125 Comm: seccomp-demo Not tainted 6.12.117+deb13-amd64 #1\n\
            <4>[    3.113937] RIP: 0010:0xffff000a2970253d\n\
            <4>[    3.116095]  ? trace_call_bpf+0xbb/0x1b0\n\
            <4>[    3.118540] ---[ end trace 0000000000000000 ]---\n\
            <4>[    3.118694] RIP: 0010:0xffff000a2970253d\n";
        assert_eq!(
            oops_of(log, 125),
            [
                "Oops: general protection fault: 0000 [#1] PREEMPT SMP NOPTI",
                "CPU: 0 UID: 0 PID: 125 Comm: seccomp-demo Not tainted 6.12.117+deb13-amd64 #1",
                "RIP: 0010:0xffff000a2970253d",
                " ? trace_call_bpf+0xbb/0x1b0",
                "---[ end trace 0000000000000000 ]---"
            ]
        );
        assert!(oops_of(log, 126).is_empty());
        // Before 6.x the fault line has no "Oops:" and a page fault comes first.
        let old = "[  9.1] BUG: unable to handle kernel paging request at 0000000000000008\n\
            [  9.1] PGD 0 P4D 0\n[  9.1] Oops: 0000 [#1] SMP\n\
            [  9.1] CPU: 1 PID: 77 Comm: seccomp-demo Not tainted 5.4.286 #1\n";
        let old = oops_of(old, 77);
        assert_eq!(
            old[0],
            "BUG: unable to handle kernel paging request at 0000000000000008"
        );
        assert_eq!(old.len(), 4);
    }

    #[test]
    fn events_decode_as_the_articles_lay_them_out() {
        let mut conn = vec![127, 0, 0, 1, 127, 0, 0, 1];
        conn.extend_from_slice(&40000u16.to_ne_bytes());
        conn.extend_from_slice(&50000u16.to_ne_bytes());
        conn.extend_from_slice(&[0; 4]); // alignment padding
        let e = decode_conn(&conn).unwrap();
        assert_eq!(
            (e.saddr, e.daddr, e.sport, e.dport),
            (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, 40000, 50000)
        );
        let p = decode_packet(&[127, 0, 0, 1, 10, 0, 0, 2, 2, 0, 0, 0]).unwrap();
        assert_eq!(
            (p.saddr, p.daddr, p.probe_type, p.verdict),
            (Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 0, 2), 2, 0)
        );
        assert!(decode_packet(&[0; 8]).is_err());
    }

    #[test]
    fn the_echo_checksum_is_the_internet_checksum() {
        let mut packet = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'x'];
        let sum = inet_checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(inet_checksum(&packet), 0);
    }

    #[test]
    fn the_seed_objects_have_the_articles_programs() {
        for (object, progs) in [
            (
                objects::SEED_TCPCONN,
                &[
                    "handle_new_connection",
                    "k_tcp_connect",
                    "k_icsk_complete_hashdance",
                ][..],
            ),
            (
                objects::SEED_FENTRY_FEXIT_TC,
                &["dummy", "fentry_tc", "fexit_tc"][..],
            ),
            (
                objects::SEED_SECCOMP,
                &[
                    "__seccomp_filter",
                    "bpf_func_SYS__NR_write",
                    "bpf_func_SYS__NR_read",
                    "bpf_func_SYS__NR_open",
                ][..],
            ),
        ] {
            let obj = aya_obj::Object::parse(object).unwrap();
            for p in progs {
                assert!(obj.programs.contains_key(*p), "{p}");
            }
        }
    }
}
