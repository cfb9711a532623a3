//! The integration trials (`cargo test --features vm`): one trial per kernel x JIT
//! mode x case, named `KERNEL::MODE::CASE` (filter with `6.1`, `fexit`,
//! `interpreter`...). Each kernel is booted once, by the first of its trials to
//! run; every trial then compares that real guest's record for its cell with the
//! expectation derived from the documented kernel facts.
//!
//! A kernel that cannot be had on this machine (its source is unreachable) has its
//! trials reported ignored, with the reason; one that fails to download or boot
//! fails them.
//!
//! Kernels: `$BPFMATRIX_KERNELS` (comma-separated catalog names or image paths),
//! default every kernel of the catalog. Accelerator: `$BPFMATRIX_ACCEL` (auto, kvm,
//! tcg), default auto.

use bpfmatrix::matrix::{KernelRun, Matrix, RunStatus, Verdict};
use bpfmatrix::report;
use bpfmatrix::run::{self, Backend, Progress, Settings};
use bpfmatrix::targets::{self, Target};
use bpfmatrix_kernels::catalog::FetchError;
use bpfmatrix_kernels::Kernel;
use bpfmatrix_protocol::{CaseId, JitMode};
use bpfmatrix_vm::qemu::{Accel, VmEvent};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

type Shared<T> = Arc<OnceLock<Result<T, String>>>;

/// What became of a kernel: a judged run, or the reason it cannot be had here.
enum Booted {
    Run(Box<KernelRun>),
    Unavailable(String),
}

fn main() {
    let args = Arguments::from_args();
    let names = std::env::var("BPFMATRIX_KERNELS").unwrap_or_else(|_| {
        let all: Vec<String> = targets::catalog().into_iter().map(|e| e.name).collect();
        all.join(",")
    });
    let accel: Accel = match std::env::var("BPFMATRIX_ACCEL") {
        Ok(a) => a.parse().unwrap_or_else(|e| panic!("BPFMATRIX_ACCEL: {e}")),
        Err(_) => Accel::Auto,
    };
    let settings = Arc::new(Settings {
        accel,
        ..Settings::default()
    });
    let agent: Shared<PathBuf> = Arc::default();
    let mut trials = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let target = match targets::resolve(name, None) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("{e:#}");
                trials.push(Trial::test(format!("{name}::kernel"), move || {
                    Err(msg.into())
                }));
                continue;
            }
        };
        let run: Shared<Booted> = Arc::default();
        for jit in &settings.jit_modes {
            for case in &settings.cases {
                let (target, run, agent, settings) =
                    (target.clone(), run.clone(), agent.clone(), settings.clone());
                let (jit, case) = (*jit, *case);
                trials.push(Trial::ignorable_test(
                    format!("{}::{jit}::{case}", target.name()),
                    move || {
                        let booted = run
                            .get_or_init(|| boot(&target, &agent, &settings))
                            .as_ref()
                            .map_err(|e| Failed::from(e.as_str()))?;
                        match booted {
                            Booted::Run(run) => {
                                judge(run, case, jit).map(|()| Completion::Completed)
                            }
                            Booted::Unavailable(why) => Ok(Completion::ignored_with(why)),
                        }
                    },
                ));
            }
        }
    }
    trials.push(vng_trial(agent.clone()));
    libtest_mimic::run(&args, trials).exit();
}

/// The virtme-ng backend, kept working: the same agent and plan on kernel 6.1
/// through `vng --run`, every cell agreeing as with the QEMU backend. virtme-ng is
/// installed from PyPI into the cache when it is not on PATH.
fn vng_trial(agent: Shared<PathBuf>) -> Trial {
    Trial::ignorable_test("vng::6.1::all_cases", move || {
        let target = targets::resolve("6.1", None).map_err(|e| format!("{e:#}"))?;
        let kernel = match obtain(&target)? {
            Ok(kernel) => kernel,
            Err(why) => return Ok(Completion::ignored_with(why)),
        };
        bpfmatrix_vm::vng::install_vng(&mut |m| eprintln!("[vng] {m}"))
            .map_err(|e| format!("cannot install virtme-ng: {e:#}"))?;
        let agent = built(&agent)?;
        let settings = Settings {
            backend: Backend::Vng,
            ..Settings::default()
        };
        let run = run::run_kernel(&kernel, agent, &settings, &mut |_| {});
        eprintln!("[vng 6.1] {}", report::kernel_line(&run));
        let matrix = Matrix::from_runs([run]);
        if matrix.all_agree() {
            Ok(Completion::Completed)
        } else {
            Err(report::terminal(&matrix, false).into())
        }
    })
}

/// The kernel, or (inner Err) why it cannot be had on this machine; the outer Err
/// is a failure to obtain it (a corrupt download...), which fails the trials.
fn obtain(target: &Target) -> Result<Result<Kernel, String>, String> {
    let name = target.name();
    match targets::obtain(target, &mut |m| eprintln!("[{name}] {m}")) {
        Ok(kernel) => Ok(Ok(kernel)),
        Err(FetchError::Unavailable(why)) => {
            eprintln!("[{name}] unavailable: {why}");
            Ok(Err(format!("kernel unavailable here: {why}")))
        }
        Err(e) => Err(format!("cannot obtain kernel {name}: {e}")),
    }
}

/// The guest agent, built once for all trials.
fn built(agent: &Shared<PathBuf>) -> Result<&PathBuf, String> {
    agent
        .get_or_init(|| {
            bpfmatrix_vm::agent::build_agent(&mut |m| eprintln!("[agent] {m}"))
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| format!("cannot build the guest agent: {e}"))
}

/// Obtains the kernel and boots it once; the run is shared by the kernel's trials.
fn boot(target: &Target, agent: &Shared<PathBuf>, settings: &Settings) -> Result<Booted, String> {
    let name = target.name().to_string();
    let kernel = match obtain(target)? {
        Ok(kernel) => kernel,
        Err(why) => return Ok(Booted::Unavailable(why)),
    };
    let agent = built(agent)?;
    let run = run::run_kernel(&kernel, agent, settings, &mut |p| match p {
        Progress::Step { kernel, what } => eprintln!("[{kernel}] {what}"),
        Progress::Vm {
            kernel,
            event: VmEvent::KvmFallback { reason },
        } => eprintln!("[{kernel}] KVM did not work, falling back to TCG: {reason}"),
        Progress::Vm { .. } => {}
    });
    eprintln!("[{name}] {}", report::kernel_line(&run));
    Ok(Booted::Run(Box::new(run)))
}

fn judge(run: &KernelRun, case: CaseId, jit: JitMode) -> Result<(), Failed> {
    let cell = run
        .cell(case, jit)
        .ok_or_else(|| Failed::from("the run has no cell for this trial"))?;
    // A guest that crashed, hung or broke the protocol fails every trial of its
    // kernel, even those whose record arrived before it went wrong.
    if let RunStatus::Failed { reason } = &run.status {
        return Err(format!(
            "kernel {}: the run failed: {reason}\n{}",
            run.kernel,
            report::explain(cell)
        )
        .into());
    }
    match &cell.verdict {
        Verdict::Agrees => Ok(()),
        _ => Err(format!(
            "kernel {} (guest {}):\n{}",
            run.kernel,
            run.guest_release.as_deref().unwrap_or("never said hello"),
            report::explain(cell)
        )
        .into()),
    }
}
