//! The seeds' kprobes as tracefs kprobe events: each probed symbol registered
//! once per guest (`p:bpfmatrix/SYMBOL SYMBOL` in kprobe_events), and a program
//! attached to one through a tracepoint perf event (PERF_EVENT_IOC_SET_BPF).
//!
//! Why not aya's `KProbe::attach`: from 4.17 it opens a perf kprobe by name for
//! every attach, and the kernel resolves that name with `kallsyms_lookup_name`,
//! a linear scan of every symbol, twice (the notrace check, then
//! `register_kprobe`; read in 5.4.286's kernel/trace/trace_kprobe.c and
//! kernel/kprobes.c). Under TCG a 5.10 guest spent 9 to 27 ms an attach on it,
//! six attaches a run: about 110 ms of a 0.7 s run started from a saved state.
//! A registered event has its address resolved once (before a waiting guest says
//! ready, so never in a restored run).
//!
//! Each event also keeps one perf event of its own open, disabled, for the
//! guest's life, so a case's perf event is never the event's only one: the first
//! perf event of a trace event arms its kprobe, and closing the last one disarms
//! it and waits out `tracepoint_synchronize_unregister()`, an SRCU and an RCU
//! grace period (`perf_trace_event_reg`/`_unreg` in 5.4.286's
//! kernel/trace/trace_event_perf.c). Under TCG a latest (7.2) guest took 32 ms
//! to attach the tcpconn demo's two kprobes and 30 ms to detach them; with the
//! kept perf events, 2 ms and 13 to 17 ms. The kprobes stay armed with no
//! program: their handler finds no program and no enabled perf event.
//!
//! The program runs from the same kprobe handler either way (`kprobe_perf_func`
//! calls `trace_call_bpf`). This is the path aya itself takes before 4.17, and
//! the legacy kprobes of libbpf and cilium/ebpf.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::cases::SetUpRefused;
use aya_obj::generated::{
    perf_event_attr, perf_type_id, PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF,
    PERF_FLAG_FD_CLOEXEC,
};

/// The tracefs group of the agent's events (kprobe_events' `p:GROUP/EVENT`).
const GROUP: &str = "bpfmatrix";

/// The events registered in this guest, by symbol.
#[derive(Default)]
pub struct KprobeEvents {
    events: HashMap<String, Result<Registered, SetUpRefused>>,
}

/// A registered event: its tracepoint id, and the perf event that keeps it armed.
struct Registered {
    id: u64,
    _keeper: OwnedFd,
}

impl KprobeEvents {
    /// The tracepoint id of `symbol`'s event, registering it on first use. A
    /// refusal is kept too: the kernel's answer would not change.
    pub fn id(&mut self, symbol: &str) -> Result<u64, SetUpRefused> {
        match self
            .events
            .entry(symbol.to_string())
            .or_insert_with(|| register(symbol))
        {
            Ok(registered) => Ok(registered.id),
            Err(e) => Err(e.clone()),
        }
    }
}

/// tracefs's directory: its own mount, or under debugfs (older kernels).
fn tracefs() -> Option<&'static Path> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("kprobe_events").exists())
}

/// kprobe_events' line for `symbol`'s event: a probe at its first instruction.
fn definition(symbol: &str) -> String {
    format!("p:{GROUP}/{symbol} {symbol}\n")
}

fn event_dir(tracefs: &Path, symbol: &str) -> PathBuf {
    tracefs.join("events").join(GROUP).join(symbol)
}

fn register(symbol: &str) -> Result<Registered, SetUpRefused> {
    let step = format!("register kprobe event {GROUP}/{symbol}");
    let fail = |errno: Option<i32>, message: String| SetUpRefused {
        step: step.clone(),
        errno,
        message,
    };
    let tracefs = tracefs().ok_or_else(|| {
        fail(
            None,
            "no kprobe_events in /sys/kernel/tracing or /sys/kernel/debug/tracing".into(),
        )
    })?;
    let dir = event_dir(tracefs, symbol);
    // An event left by an earlier agent in this guest is taken as it is.
    if !dir.exists() {
        let events = tracefs.join("kprobe_events");
        // Appended: opening kprobe_events for writing without O_APPEND clears
        // every event.
        OpenOptions::new()
            .append(true)
            .open(&events)
            .and_then(|mut f| f.write_all(definition(symbol).as_bytes()))
            .map_err(|e| fail(e.raw_os_error(), format!("{}: {e}", events.display())))?;
    }
    let id_path = dir.join("id");
    let text = fs::read_to_string(&id_path)
        .map_err(|e| fail(e.raw_os_error(), format!("{}: {e}", id_path.display())))?;
    let id = text
        .trim()
        .parse()
        .map_err(|e| fail(None, format!("{}: {text:?}: {e}", id_path.display())))?;
    let keeper = open_perf_event(id, true).map_err(|e| SetUpRefused {
        step: format!("open a perf event on {GROUP}/{symbol}"),
        errno: e.raw_os_error(),
        message: e.to_string(),
    })?;
    Ok(Registered {
        id,
        _keeper: keeper,
    })
}

/// Attaches the kprobe program `prog` to the event `id`: a tracepoint perf event
/// on CPU 0 (the program runs on every CPU; as aya opens it), the program set on
/// it, then enabled. Closing the returned fd detaches the program; the kprobe
/// stays armed for the event's own perf event.
pub fn attach(prog: BorrowedFd<'_>, id: u64) -> io::Result<OwnedFd> {
    let perf = open_perf_event(id, false)?;
    for (request, arg) in [
        (PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd() as libc::c_ulong),
        (PERF_EVENT_IOC_ENABLE, 0),
    ] {
        // SAFETY: ioctl(2) on the perf fd owned here, with an integer argument.
        if unsafe { libc::ioctl(perf.as_raw_fd(), request as _, arg) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(perf)
}

/// A perf event on tracepoint `id`, CPU 0, all processes, as aya opens one.
fn open_perf_event(id: u64, disabled: bool) -> io::Result<OwnedFd> {
    // SAFETY: perf_event_attr is plain data; all-zero is its documented default.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = perf_type_id::PERF_TYPE_TRACEPOINT as u32;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    attr.config = id;
    attr.__bindgen_anon_2.wakeup_events = 1;
    attr.set_disabled(disabled.into());
    // SAFETY: perf_event_open(2) with a valid attr; the fd is owned at once.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const perf_event_attr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_probe_at_the_symbol_in_the_agents_group() {
        assert_eq!(
            definition("tcp_connect"),
            "p:bpfmatrix/tcp_connect tcp_connect\n"
        );
        assert_eq!(
            event_dir(Path::new("/sys/kernel/tracing"), "__seccomp_filter"),
            Path::new("/sys/kernel/tracing/events/bpfmatrix/__seccomp_filter")
        );
    }
}
