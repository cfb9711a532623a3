//! The guest agent: /init (PID 1) of the test initramfs. Reads the plan, runs
//! every case in every JIT mode with aya and loads every program of the plan's
//! objects (`bpfmatrix check`), sends one JSON line per result on the result
//! port, then powers the guest off. It never exits and never panics out.

mod cases;
mod check;
mod elf;
mod exec;
mod hosted;
mod kprobe_events;
mod objects;
mod prog_tracing;
mod relocated;
mod seeds;
mod sys;
mod verifier;
mod waiting;

use std::fs::File;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use bpfmatrix_protocol::{
    BootConfig, CaseId, CaseRecord, Fault, GuestMessage, JitMode, Measured, Outcome, Plan,
    ENORMOUS_LINE_BYTES, FLOOD_BYTES, PLAN_PATH, PROTOCOL_VERSION,
};

const JIT_SYSCTL: &str = "/proc/sys/net/core/bpf_jit_enable";
const DEFAULT_PORT: &str = "/dev/ttyS1";

/// Sends GuestMessages, one JSON object per line, flushed per line. Falls back
/// to stderr if the port could not be opened (the host will see a dead guest,
/// the console at least shows why).
struct Reporter {
    port: Option<File>,
}

impl Reporter {
    fn send(&mut self, msg: &GuestMessage) {
        match serde_json::to_string(msg) {
            Ok(line) => self.raw(&format!("{line}\n")),
            Err(e) => eprintln!("bpfmatrix-agent: cannot serialise a message: {e}"),
        }
    }

    fn raw(&mut self, text: &str) {
        self.raw_bytes(text.as_bytes());
    }

    fn raw_bytes(&mut self, bytes: &[u8]) {
        match &mut self.port {
            Some(port) => {
                if let Err(e) = port.write_all(bytes).and_then(|()| port.flush()) {
                    eprintln!("bpfmatrix-agent: result port write failed: {e}");
                }
            }
            None => eprint!("{}", String::from_utf8_lossy(bytes)),
        }
    }

    /// Waits until the UART has sent everything written so far, so nothing is lost
    /// to the power-off that follows.
    fn drain(&mut self) {
        if let Some(port) = &self.port {
            let _ = nix::sys::termios::tcdrain(port);
        }
    }

    fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        eprintln!("bpfmatrix-agent: warning: {message}");
        self.send(&GuestMessage::Warning { message });
    }
}

fn main() {
    let start_uptime = sys::uptime_ms();
    eprintln!("bpfmatrix-agent: started at {start_uptime} ms");
    std::panic::set_hook(Box::new(|info| {
        eprintln!("bpfmatrix-agent: panic: {info}");
    }));
    let mut reporter = Reporter { port: None };
    let outcome = catch_unwind(AssertUnwindSafe(|| agent(&mut reporter, start_uptime)));
    if outcome.is_err() {
        reporter.warn("the agent panicked outside any case; stopping early");
        reporter.send(&GuestMessage::Done {
            uptime_ms: sys::uptime_ms(),
        });
    }
    reporter.drain();
    if !hosted::is_init() {
        // Someone else's guest (virtme-ng): its init powers off, not the agent.
        std::process::exit(0);
    }
    eprintln!("bpfmatrix-agent: powering off");
    sys::sync_and_power_off();
}

/// The plan to run, once the hello is out: none when it could not be read (said
/// as a warning, then done); one of another protocol version is run anyway,
/// with a warning.
fn usable_plan(reporter: &mut Reporter, plan: Result<Plan, String>) -> Option<Plan> {
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            reporter.warn(format!("no usable plan: {e}"));
            reporter.send(&GuestMessage::Done {
                uptime_ms: sys::uptime_ms(),
            });
            return None;
        }
    };
    if plan.protocol != PROTOCOL_VERSION {
        reporter.warn(format!(
            "plan protocol {} differs from the agent's {PROTOCOL_VERSION}; running it anyway",
            plan.protocol
        ));
    }
    Some(plan)
}

/// A guest that waits for its plan (see waiting.rs): everything that does not
/// depend on a plan, then `ready`, then the plan from the result port. The host
/// may save the guest while it waits; a guest restored from that state wakes up
/// reading the plan, and goes on from there as a booted one does.
fn waiting_agent(reporter: &mut Reporter, config: anyhow::Result<BootConfig>) {
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            if let Ok(f) = sys::open_port(DEFAULT_PORT) {
                reporter.port = Some(f);
            }
            reporter.send(&GuestMessage::Hello {
                protocol: PROTOCOL_VERSION,
                agent_id: None,
                kernel_release: sys::kernel_release(),
                uptime_ms: sys::uptime_ms(),
            });
            reporter.warn(format!("no usable boot config: {e:#}"));
            reporter.send(&GuestMessage::Done {
                uptime_ms: sys::uptime_ms(),
            });
            return;
        }
    };
    // Warnings wait for the hello: nothing but `ready` may come before it. Kept
    // in memory, they are said again by every guest restored from this one.
    let mut warnings = Vec::new();
    if let Err(e) = sys::mount_dev(&config.result_port) {
        warnings.push(format!("{e:#}"));
    }
    match sys::open_port(&config.result_port) {
        Ok(f) => reporter.port = Some(f),
        Err(e) => eprintln!("bpfmatrix-agent: {e:#}; results go to the console"),
    }
    let loader = cases::early_loader();
    warnings.extend(sys::mount_rest());
    sys::fill_receive_fifo(&config.result_port);
    if let Err(e) = sys::raise_memlock() {
        warnings.push(format!("{e:#}"));
    }
    for module in &config.modules {
        if let Err(e) = sys::load_module(module) {
            warnings.push(format!("{e:#}"));
        }
    }
    // An exec guest runs no case: the kernel's BTF (tens of MB once parsed),
    // aya's probes and the statistics objects would only make its saved state
    // bigger and every fork of the agent (the command's) slower.
    let kernel_btf = match config.exec_root {
        true => None,
        false => match aya::Btf::from_sys_fs() {
            Ok(btf) => Some(btf),
            Err(e) => {
                warnings.push(format!("no kernel BTF: {e}"));
                None
            }
        },
    };
    let mut runner = cases::Runner::new(loader, kernel_btf.as_ref());
    if config.exec_root {
        if let Err(e) = exec::prepare_root() {
            warnings.push(format!("{e:#}"));
        }
    } else {
        // Plan-independent work the saved state should hold: aya's probing of
        // the kernel's features (on its first load otherwise), lo, the
        // statistics objects of both JIT modes.
        let _ = aya::features();
        runner.prepare_ahead(JitMode::ALL.len());
    }
    reporter.send(&GuestMessage::Ready {
        protocol: PROTOCOL_VERSION,
        agent_id: config.agent_id.clone(),
        uptime_ms: sys::uptime_ms(),
    });
    eprintln!(
        "bpfmatrix-agent: ready at {} ms, waiting for the plan",
        sys::uptime_ms()
    );
    let plan = match &reporter.port {
        Some(port) => waiting::receive_plan(port),
        None => Err(anyhow::anyhow!("no result port to read a plan from")),
    };
    if matches!(&plan, Ok(p) if p.fault == Some(Fault::HangBeforeHello)) {
        eprintln!("bpfmatrix-agent: fault injection: hanging before the hello");
        sys::sleep_forever()
    }
    reporter.send(&GuestMessage::Hello {
        protocol: PROTOCOL_VERSION,
        agent_id: Some(config.agent_id.clone()),
        kernel_release: sys::kernel_release(),
        uptime_ms: sys::uptime_ms(),
    });
    for w in warnings {
        reporter.warn(w);
    }
    let Some(plan) = usable_plan(reporter, plan.map_err(|e| format!("{e:#}"))) else {
        return;
    };
    // The host keeps other fault runs on the booted path: several faults act
    // before a plan could be read from the port.
    run_plan(reporter, &plan, &mut runner, false);
    reporter.send(&GuestMessage::Done {
        uptime_ms: sys::uptime_ms(),
    });
    eprintln!("bpfmatrix-agent: done at {} ms", sys::uptime_ms());
}

fn agent(reporter: &mut Reporter, start_uptime: u64) {
    if hosted::is_init() {
        if let Some(config) = waiting::boot_config() {
            return waiting_agent(reporter, config);
        }
    }
    let plan_path = hosted::plan_path(PLAN_PATH);
    let plan: Result<Plan, String> = std::fs::read(&plan_path)
        .map_err(|e| format!("read {plan_path}: {e}"))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("parse {plan_path}: {e}")));
    if matches!(&plan, Ok(p) if matches!(p.fault, Some(Fault::DeadBeforeHello | Fault::HangBeforeHello)))
    {
        sys::sleep_forever()
    }
    if matches!(&plan, Ok(p) if p.fault == Some(Fault::Silent)) {
        eprintln!("bpfmatrix-agent: fault injection: silent, powering off without a word");
        return;
    }
    let port_path = plan
        .as_ref()
        .map(|p| p.result_port.as_str())
        .unwrap_or(DEFAULT_PORT)
        .to_string();
    let dev_mount = match hosted::is_init() {
        true => sys::mount_dev(&port_path),
        false => Ok(()),
    };
    match sys::open_port(&port_path) {
        Ok(f) => reporter.port = Some(f),
        Err(e) => eprintln!("bpfmatrix-agent: {e:#}; results go to the console"),
    }
    reporter.send(&GuestMessage::Hello {
        protocol: PROTOCOL_VERSION,
        agent_id: None,
        kernel_release: sys::kernel_release(),
        uptime_ms: start_uptime,
    });
    if let Err(e) = dev_mount {
        reporter.warn(format!("{e:#}"));
    }
    let loader = cases::early_loader();
    for w in hosted::is_init().then(sys::mount_rest).unwrap_or_default() {
        reporter.warn(w);
    }
    let Some(plan) = usable_plan(reporter, plan) else {
        return;
    };
    match plan.fault {
        Some(Fault::Panic) => {
            eprintln!("bpfmatrix-agent: fault injection: kernel panic via sysrq");
            let _ = sys::write_file("/proc/sys/kernel/sysrq", "1");
            let _ = sys::write_file("/proc/sysrq-trigger", "c");
            // Only reached if sysrq did not crash the kernel.
            reporter.warn("sysrq-trigger did not crash the kernel");
        }
        Some(Fault::Hang) => {
            eprintln!("bpfmatrix-agent: fault injection: hanging");
            sys::sleep_forever()
        }
        Some(Fault::Garbage) => write_garbage(reporter, &plan),
        Some(Fault::EnormousLine) => write_enormous_line(reporter),
        Some(Fault::Flood) => flood(reporter),
        Some(Fault::Silent)
        | Some(Fault::CutShort)
        | Some(Fault::DeadBeforeHello)
        | Some(Fault::HangBeforeHello)
        | None => {}
    }
    if let Err(e) = sys::raise_memlock() {
        reporter.warn(format!("{e:#}"));
    }
    for module in &plan.modules {
        if let Err(e) = sys::load_module(module) {
            reporter.warn(format!("{e:#}"));
        }
    }
    let t = Instant::now();
    let kernel_btf = match aya::Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(e) => {
            reporter.warn(format!("no kernel BTF: {e}"));
            None
        }
    };
    eprintln!(
        "bpfmatrix-agent: kernel BTF parsed in {} ms",
        t.elapsed().as_millis()
    );
    let mut runner = cases::Runner::new(loader, kernel_btf.as_ref());
    let cut_short = plan.fault == Some(Fault::CutShort);
    run_plan(reporter, &plan, &mut runner, cut_short);
    if cut_short {
        eprintln!("bpfmatrix-agent: fault injection: last record cut, no done");
        return;
    }
    reporter.send(&GuestMessage::Done {
        uptime_ms: sys::uptime_ms(),
    });
    eprintln!("bpfmatrix-agent: done at {} ms", sys::uptime_ms());
}

/// Runs every case in every mode, then loads every program of the plan's
/// objects in that mode. With `cut_last` (Fault::CutShort) the last record goes
/// out only half written, without its newline.
fn run_plan(reporter: &mut Reporter, plan: &Plan, runner: &mut cases::Runner<'_>, cut_last: bool) {
    let programs: usize = plan.objects.iter().map(|o| o.programs.len()).sum();
    let total = plan.jit_modes.len() * (plan.cases.len() + programs);
    let mut sent = 0;
    let mut object_warnings = std::collections::HashSet::new();
    let mut send_record = |reporter: &mut Reporter, msg: GuestMessage| {
        sent += 1;
        if cut_last && sent == total {
            let line = serde_json::to_string(&msg).unwrap_or_default();
            reporter.raw(&line[..line.len() / 2]);
        } else {
            reporter.send(&msg);
        }
    };
    for &mode in &plan.jit_modes {
        // The mode is proven by reading it back, not assumed from the write: a
        // kernel built with BPF_JIT_ALWAYS_ON refuses 0, one without a JIT has no
        // sysctl at all, and interprets everything. What that makes of the mode
        // is the host's to decide (harness/modes.rs), from this and the config.
        let present = std::path::Path::new(JIT_SYSCTL).exists();
        let switched = match (present, mode) {
            (false, JitMode::Interpreter) => Ok(()),
            _ => sys::write_file(JIT_SYSCTL, mode.sysctl_value()),
        };
        let readback = sys::read_trimmed(JIT_SYSCTL);
        let error = match (&switched, &readback) {
            (Err(e), _) => Some(format!(
                "{e:#} (bpf_jit_enable reads back {})",
                readback.as_deref().unwrap_or("nothing"),
            )),
            (Ok(()), None) if mode == JitMode::Interpreter => None,
            (Ok(()), Some(r)) if r == mode.sysctl_value() => None,
            (Ok(()), r) => Some(format!(
                "wrote {} to {JIT_SYSCTL}, it reads back {}",
                mode.sysctl_value(),
                r.as_deref().unwrap_or("nothing")
            )),
        };
        reporter.send(&GuestMessage::JitMode {
            mode,
            sysctl_readback: readback.clone(),
            error: error.clone(),
        });
        runner.begin_mode();
        for &case in &plan.cases {
            let mut record = match &error {
                Some(e) => CaseRecord {
                    case,
                    jit: mode,
                    outcome: Outcome::Error {
                        message: format!("cannot switch to {mode}: {e}"),
                    },
                    measured: Measured::default(),
                    duration_ms: 0,
                },
                None => run_one(runner, case, mode),
            };
            record.measured.bpf_jit_enable = readback.clone();
            eprintln!(
                "bpfmatrix-agent: {case} [{mode}] {} ({} ms)",
                record.outcome.kind(),
                record.duration_ms
            );
            send_record(reporter, GuestMessage::Case(record));
        }
        for object in &plan.objects {
            let mut on_report = |report: check::Report| match report {
                check::Report::Program(record) => {
                    eprintln!(
                        "bpfmatrix-agent: {}:{} [{mode}] {} ({} ms)",
                        record.object,
                        record.program,
                        record.outcome.kind(),
                        record.duration_ms
                    );
                    send_record(reporter, GuestMessage::Program(*record));
                }
                // Said once, though each mode loads the object afresh.
                check::Report::Warning(message) => {
                    if object_warnings.insert(message.clone()) {
                        reporter.warn(message)
                    }
                }
            };
            let checked = catch_unwind(AssertUnwindSafe(|| {
                check::check_object(
                    object,
                    mode,
                    error.as_deref(),
                    runner.kernel_btf(),
                    &mut on_report,
                )
            }));
            if let Err(p) = checked {
                // The records sent before the panic stand; the host sees the
                // rest missing and the warning says why.
                reporter.warn(format!(
                    "the agent panicked checking {} [{mode}]: {}",
                    object.name,
                    panic_text(p.as_ref())
                ));
            }
        }
        if let Some(spec) = &plan.exec {
            match &error {
                // The host decides what a mode the kernel cannot run makes of it.
                Some(e) => reporter.send(&GuestMessage::Exited {
                    jit: mode,
                    code: None,
                    signal: None,
                    error: Some(format!("cannot switch to {mode}: {e}")),
                    output_dropped: 0,
                    duration_ms: 0,
                }),
                None => exec::run(spec, mode, &mut |m| reporter.send(&m)),
            }
        }
    }
}

fn run_one(runner: &mut cases::Runner<'_>, case: CaseId, jit: JitMode) -> CaseRecord {
    let started = Instant::now();
    let mut measured = Measured::default();
    let outcome = catch_unwind(AssertUnwindSafe(|| runner.run(case, &mut measured)))
        .unwrap_or_else(|p| Outcome::Error {
            message: format!("agent panicked: {}", panic_text(p.as_ref())),
        });
    CaseRecord {
        case,
        jit,
        outcome,
        measured,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// What a caught panic said.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Fault::Garbage: lines the host must survive, then a normal run.
fn write_garbage(reporter: &mut Reporter, plan: &Plan) {
    reporter.raw("this line is not JSON\n");
    reporter.raw("{{{ neither is this\n");
    // Bytes that are not UTF-8, a NUL and a terminal escape.
    reporter.raw_bytes(b"\xff\xfe\x00 binary \x1b[2J\n");
    // Well-formed JSON, but no message type the protocol knows.
    reporter.raw("{\"type\":\"all_passed\",\"cells\":\"every one\"}\n");
    let record = GuestMessage::Case(CaseRecord {
        case: CaseId::TailCallChain,
        jit: JitMode::Jit,
        outcome: Outcome::Accepted,
        measured: Measured::default(),
        duration_ms: 0,
    });
    let line = serde_json::to_string(&record).unwrap_or_default();
    reporter.raw(&format!("{}\n", &line[..line.len() / 2]));
    match CaseId::ALL.into_iter().find(|c| !plan.cases.contains(c)) {
        Some(stray) => reporter.send(&GuestMessage::Case(CaseRecord {
            case: stray,
            jit: JitMode::Jit,
            outcome: Outcome::Accepted,
            measured: Measured::default(),
            duration_ms: 0,
        })),
        // Every known case is planned: a well-formed record for an unknown one.
        None => reporter.raw(
            "{\"type\":\"case\",\"case\":\"no_such.case\",\"jit\":\"jit\",\"outcome\":{\"kind\":\"accepted\"},\"duration_ms\":0}\n",
        ),
    }
}

/// Fault::EnormousLine: one well-formed warning message, a single line of
/// ENORMOUS_LINE_BYTES, then a normal run.
fn write_enormous_line(reporter: &mut Reporter) {
    eprintln!("bpfmatrix-agent: fault injection: a line of {ENORMOUS_LINE_BYTES} bytes");
    let overhead = serde_json::to_string(&GuestMessage::Warning {
        message: String::new(),
    })
    .map_or(0, |l| l.len());
    let line = serde_json::to_string(&GuestMessage::Warning {
        message: "x".repeat(ENORMOUS_LINE_BYTES.saturating_sub(overhead)),
    })
    .unwrap_or_default();
    reporter.raw(&format!("{line}\n"));
}

/// Fault::Flood: FLOOD_BYTES of well-formed warning lines, written in 64 KiB
/// batches, then a normal run (the host should have stopped the guest long before).
fn flood(reporter: &mut Reporter) {
    eprintln!("bpfmatrix-agent: fault injection: flooding {FLOOD_BYTES} bytes");
    let mut written = 0;
    let mut n: u64 = 0;
    let mut batch = String::with_capacity(64 * 1024 + 256);
    while written < FLOOD_BYTES {
        while batch.len() < 64 * 1024 {
            n += 1;
            let line = serde_json::to_string(&GuestMessage::Warning {
                message: format!("flood line {n}: a runaway guest repeating itself"),
            })
            .unwrap_or_default();
            batch.push_str(&line);
            batch.push('\n');
        }
        reporter.raw(&batch);
        written += batch.len();
        batch.clear();
    }
    eprintln!("bpfmatrix-agent: flood of {written} bytes written ({n} lines)");
}
