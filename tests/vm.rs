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
//! Each guest also loads the programs of the objects in `tests/objects/`, compiled
//! here with clang as a user would (`bpfmatrix check`'s path): one trial per kernel
//! x JIT mode x program, `KERNEL::MODE::OBJECT:PROGRAM`, judged by the rules of
//! `tests/objects/expect.toml`; `check::minimum_kernel` compares each program's
//! minimum kernel across the kernels booted with those rules, and
//! `check::refuses::*` prove that a file that is not a BPF object is refused,
//! exit 2, before any guest starts.
//!
//! Each kernel also runs examples/aya-app's integration tests (an aya loader
//! and its cargo tests, built here on the host) through `bpfmatrix exec`:
//! `KERNEL::exec::aya_app_tests`, which fails unless every one of its tests passes
//! in that guest.
//!
//! Kernels: `$BPFMATRIX_KERNELS` (comma-separated catalog names or image paths),
//! default every kernel of the catalog. Accelerator: `$BPFMATRIX_ACCEL` (auto, kvm,
//! tcg), default auto.

use bpfmatrix::exec;
use bpfmatrix::expect::KernelVersion;
use bpfmatrix::matrix::{KernelRun, Matrix, RunStatus, Verdict};
use bpfmatrix::objects::{self, UserObject};
use bpfmatrix::programs::{self, ProgramRules};
use bpfmatrix::report;
use bpfmatrix::run::{self, Backend, Progress, Settings};
use bpfmatrix::targets::{self, Target};
use bpfmatrix_kernels::catalog::FetchError;
use bpfmatrix_kernels::Kernel;
use bpfmatrix_protocol::{CaseId, JitMode};
use bpfmatrix_vm::qemu::{Accel, VmEvent};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;
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
    let objects_dir = tempfile::tempdir().expect("a temporary directory for the objects");
    let mut trials = Vec::new();
    let (objects, program_rules) = match test_objects(objects_dir.path()) {
        Ok(o) => o,
        Err(e) => {
            trials.push(Trial::test("check::objects", move || Err(e.into())));
            (vec![], ProgramRules::default())
        }
    };
    let settings = Arc::new(Settings {
        accel,
        objects,
        program_rules,
        ..Settings::default()
    });
    let agent: Shared<PathBuf> = Arc::default();
    let example: Shared<PathBuf> = Arc::default();
    let mut booted_kernels: Vec<(Target, Shared<Booted>)> = Vec::new();
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
        booted_kernels.push((target.clone(), run.clone()));
        trials.push(exec_trial(
            target.clone(),
            agent.clone(),
            example.clone(),
            settings.clone(),
        ));
        trials.push(restored_equals_booted(
            target.clone(),
            agent.clone(),
            settings.clone(),
        ));
        for jit in &settings.jit_modes {
            let jit = *jit;
            for case in &settings.cases {
                let case = *case;
                trials.push(guest_trial(
                    format!("{}::{jit}::{case}", target.name()),
                    (&target, &run, &agent, &settings),
                    move |run| judge(run, case, jit),
                ));
            }
            for object in &settings.objects {
                for program in &object.spec.programs {
                    let (object, program) = (object.spec.name.clone(), program.clone());
                    trials.push(guest_trial(
                        format!("{}::{jit}::{object}:{program}", target.name()),
                        (&target, &run, &agent, &settings),
                        move |run| judge_program(run, &object, &program, jit),
                    ));
                }
            }
        }
    }
    if !settings.objects.is_empty() {
        trials.push(minimum_kernel_trial(
            booted_kernels,
            agent.clone(),
            settings.clone(),
        ));
        trials.extend(refusal_trials(&settings.objects[0].file));
    }
    trials.push(vng_trial(agent.clone()));
    let conclusion = libtest_mimic::run(&args, trials);
    drop(objects_dir);
    conclusion.exit();
}

/// One trial judged on `target`'s run, which the first of its trials to run
/// boots for all of them; a kernel that cannot be had ignores the trial, saying
/// why.
fn guest_trial(
    name: String,
    (target, run, agent, settings): (&Target, &Shared<Booted>, &Shared<PathBuf>, &Arc<Settings>),
    judge: impl FnOnce(&KernelRun) -> Result<Completion, Failed> + Send + 'static,
) -> Trial {
    let (target, run, agent, settings) =
        (target.clone(), run.clone(), agent.clone(), settings.clone());
    Trial::ignorable_test(name, move || {
        let booted = run
            .get_or_init(|| boot(&target, &agent, &settings))
            .as_ref()
            .map_err(|e| Failed::from(e.as_str()))?;
        match booted {
            Booted::Run(run) => judge(run),
            Booted::Unavailable(why) => Ok(Completion::ignored_with(why)),
        }
    })
}

/// A guest started from the kernel's saved state gives the records a booted one
/// gives: the same outcomes (the verifier's words included), the same verdicts,
/// the same measured values, for every case and program in both JIT modes. Left
/// out are what differs between any two boots: durations, verification times
/// (and so the statistics lines of accepted programs' logs; the refusals' words are
/// compared in their outcomes),
/// and the seed demos' ports and addresses (their checks still compare, through
/// the verdicts).
fn restored_equals_booted(
    target: Target,
    agent: Shared<PathBuf>,
    settings: Arc<Settings>,
) -> Trial {
    Trial::ignorable_test(
        format!("{}::restored_equals_booted", target.name()),
        move || {
            let kernel = match obtain(&target)? {
                Ok(kernel) => kernel,
                Err(why) => return Ok(Completion::ignored_with(why)),
            };
            let agent = built(&agent)?;
            let run_with = |snapshots: bool| {
                let mut restored = false;
                let settings = Settings {
                    snapshots,
                    ..(*settings).clone()
                };
                let run = run::run_kernel(&kernel, agent, &settings, &mut |p| {
                    if let Progress::Vm {
                        event: VmEvent::Restored { .. },
                        ..
                    } = p
                    {
                        restored = true;
                    }
                });
                (run, restored)
            };
            let (booted, _) = run_with(false);
            // The first run with saved states may be the one that saves it.
            let (mut restored, mut was_restored) = run_with(true);
            if !was_restored {
                (restored, was_restored) = run_with(true);
            }
            if !was_restored {
                return Err(format!(
                    "two runs with saved states on, and neither was restored: {:?}",
                    restored.status
                )
                .into());
            }
            let mut wrong = Vec::new();
            for (what, run) in [("booted", &booted), ("restored", &restored)] {
                if run.status != RunStatus::Completed {
                    wrong.push(format!("the {what} run: {:?}", run.status));
                }
            }
            for (b, r) in booted.cells.iter().zip(&restored.cells) {
                let (b_rec, r_rec) = (comparable(&b.record), comparable(&r.record));
                if (b.case, b.jit) != (r.case, r.jit) || b_rec != r_rec || b.verdict != r.verdict {
                    wrong.push(format!(
                        "{} / {}: booted {b_rec} ({:?}), restored {r_rec} ({:?})",
                        b.case, b.jit, b.verdict, r.verdict
                    ));
                }
            }
            for (b, r) in booted.programs.iter().zip(&restored.programs) {
                let (b_rec, r_rec) = (comparable(&b.record), comparable(&r.record));
                if b_rec != r_rec || b.verdict != r.verdict {
                    wrong.push(format!(
                        "{}:{} / {}: booted {b_rec} ({:?}), restored {r_rec} ({:?})",
                        b.object, b.program, b.jit, b.verdict, r.verdict
                    ));
                }
            }
            if booted.cells.len() != restored.cells.len()
                || booted.programs.len() != restored.programs.len()
            {
                wrong.push("the runs have different cells".into());
            }
            if wrong.is_empty() {
                Ok(Completion::Completed)
            } else {
                Err(wrong.join("\n").into())
            }
        },
    )
}

/// A record as JSON without what differs between any two boots.
fn comparable<T: serde::Serialize>(record: &Option<T>) -> serde_json::Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for volatile in ["duration_ms", "verification_usec", "verifier_log", "seed"] {
                    map.remove(volatile);
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            serde_json::Value::String(s) => *s = without_kernel_addresses(s),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// `text` with every kernel address (`0xffff...`, a map's address in the
/// verifier's log) replaced: they differ between any two boots.
fn without_kernel_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("0xffff") {
        out.push_str(&rest[..at]);
        let hex = rest[at + 2..]
            .find(|c: char| !c.is_ascii_hexdigit())
            .map_or(rest.len(), |n| at + 2 + n);
        out.push_str("0xADDRESS");
        rest = &rest[hex..];
    }
    out.push_str(rest);
    out
}

/// The trial objects (tests/objects/*.c) compiled into `dir`, vetted as
/// `bpfmatrix check` vets them, and the rules of tests/objects/expect.toml.
fn test_objects(dir: &Path) -> Result<(Vec<UserObject>, ProgramRules), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/objects");
    let mut paths = Vec::new();
    for name in ["clock", "ringbuf"] {
        let out = dir.join(format!("{name}.o"));
        let c = src.join(format!("{name}.c"));
        let result = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf"])
            // Debian keeps asm/types.h in the multiarch folder.
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(&c)
            .arg("-o")
            .arg(&out)
            .output()
            .map_err(|e| format!("cannot run clang (apt-get install clang libbpf-dev): {e}"))?;
        if !result.status.success() {
            return Err(format!(
                "clang failed on {} ({}): {}",
                c.display(),
                result.status,
                String::from_utf8_lossy(&result.stderr)
            ));
        }
        paths.push(out);
    }
    let objects = objects::load(&paths).map_err(|e| format!("{e:#}"))?;
    let rules = ProgramRules::load(&src.join("expect.toml")).map_err(|e| format!("{e:#}"))?;
    let specs: Vec<_> = objects.iter().map(|o| o.spec.clone()).collect();
    rules.check_against(&specs).map_err(|e| format!("{e:#}"))?;
    Ok((objects, rules))
}

/// A program's cell on one kernel: its verdict, and for an accepted program the
/// instruction count the issue asks every report to show.
fn judge_program(
    run: &KernelRun,
    object: &str,
    program: &str,
    jit: JitMode,
) -> Result<Completion, Failed> {
    let cell = run
        .programs
        .iter()
        .find(|c| c.object == object && c.program == program && c.jit == jit)
        .ok_or_else(|| Failed::from("the run has no cell for this program"))?;
    let record = format!("{:#?}", cell.record);
    if let RunStatus::Failed { reason } = &run.status {
        return Err(format!(
            "kernel {}: the run failed: {reason}
{record}",
            run.kernel
        )
        .into());
    }
    // A mode the kernel was built without is no pass: the trial says so, ignored.
    if let Verdict::NotApplicable { reason } = &cell.verdict {
        return Ok(Completion::ignored_with(format!(
            "kernel {}: {reason}",
            run.kernel
        )));
    }
    if !cell.agrees() {
        return Err(format!(
            "kernel {} (guest {}): {:?}
expected: {:?}
{record}",
            run.kernel,
            run.guest_release.as_deref().unwrap_or("never said hello"),
            cell.verdict,
            cell.expected
        )
        .into());
    }
    if cell.accepted() == Some(true) {
        let insns = cell
            .record
            .as_ref()
            .and_then(|r| r.cost.as_ref())
            .and_then(|c| c.insns_processed);
        match insns {
            Some(f) if f.value > 0 => {}
            _ => {
                return Err(format!(
                    "accepted, but without the verifier's instruction count:
{record}"
                )
                .into())
            }
        }
    }
    Ok(Completion::Completed)
}

/// Each program's minimum kernel across every kernel booted here must be the
/// oldest of them its rule lets accept it, and acceptance must flip only there.
fn minimum_kernel_trial(
    kernels: Vec<(Target, Shared<Booted>)>,
    agent: Shared<PathBuf>,
    settings: Arc<Settings>,
) -> Trial {
    Trial::ignorable_test("check::minimum_kernel", move || {
        let mut runs = Vec::new();
        for (target, run) in &kernels {
            let booted = run
                .get_or_init(|| boot(target, &agent, &settings))
                .as_ref()
                .map_err(|e| Failed::from(e.as_str()))?;
            if let Booted::Run(run) = booted {
                runs.push((**run).clone());
            }
        }
        if runs.len() < 2 {
            return Ok(Completion::ignored_with(format!(
                "a minimum kernel needs two kernels or more; {} could be booted here",
                runs.len()
            )));
        }
        let mut matrix = Matrix::from_runs(runs);
        matrix.program_rules = settings.program_rules.clone();
        let mut wrong = Vec::new();
        for m in programs::minimum_kernels(&matrix) {
            let mut versions: Vec<(KernelVersion, &str)> = matrix
                .runs
                .iter()
                .filter_map(|r| {
                    let v = KernelVersion::parse(r.guest_release.as_deref()?).ok()?;
                    Some((v, r.kernel.as_str()))
                })
                .collect();
            versions.sort();
            let first = settings
                .program_rules
                .rule(&m.object, &m.program)
                .and_then(|r| KernelVersion::parse(&r.first_kernel).ok());
            let oldest = versions
                .iter()
                .find(|(v, _)| first.is_none_or(|f| *v >= f))
                .map(|(_, k)| k.to_string());
            let flips_expected =
                usize::from(versions.first().map(|(v, _)| *v) < first && oldest.is_some());
            if m.oldest_accepting != oldest || m.flips.len() != flips_expected {
                wrong.push(format!(
                    "{}:{} ({}): oldest accepting {:?}, flips {:?}; the rules say {oldest:?} with {flips_expected} flip(s)",
                    m.object, m.program, m.jit, m.oldest_accepting, m.flips
                ));
            }
        }
        if wrong.is_empty() {
            Ok(Completion::Completed)
        } else {
            Err(wrong.join("\n").into())
        }
    })
}

/// `bpfmatrix check` refuses what is not a BPF object, exit 2 naming the file,
/// before any kernel is fetched or guest started.
fn refusal_trials(good_object: &Path) -> Vec<Trial> {
    let good = std::fs::read(good_object).unwrap_or_default();
    let cases: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        (
            "not_elf",
            b"#!/bin/sh\necho this is a shell script\n".to_vec(),
        ),
        ("truncated", good[..good.len() / 2].to_vec()),
    ];
    cases
        .into_iter()
        .map(|(name, bytes)| {
            Trial::test(format!("check::refuses::{name}"), move || {
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let file = dir.path().join(format!("{name}.o"));
                std::fs::write(&file, &bytes).map_err(|e| e.to_string())?;
                let out = Command::new(env!("CARGO_BIN_EXE_bpfmatrix"))
                    .arg("check")
                    .arg(&file)
                    .args(["-k", "6.1", "-k", "5.10"])
                    .output()
                    .map_err(|e| e.to_string())?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                let named = stderr.contains(&file.display().to_string());
                let booted = stderr.contains("QEMU started") || stderr.contains("starting ") || stderr.contains("downloading");
                if out.status.code() != Some(2) || !named || booted {
                    return Err(format!(
                        "expected exit 2 naming {} before any kernel or guest, got {} with:\n{stderr}",
                        file.display(),
                        out.status
                    )
                    .into());
                }
                Ok(())
            })
        })
        .collect()
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

/// examples/aya-app's integration-test binary (an aya loader of an XDP counter
/// and its tests), built once on the host as cargo would for its runner.
fn example_tests(example: &Shared<PathBuf>) -> Result<&PathBuf, String> {
    example
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/aya-app");
            // Built into the cache: a checkout under the host's /tmp would put
            // the binary where the guest does not look (its /tmp is its own).
            let target = bpfmatrix_kernels::cache_dir().join("examples/aya-app");
            let out = Command::new(env!("CARGO"))
                .args([
                    "test",
                    "--no-run",
                    "--message-format=json",
                    "--test",
                    "count",
                ])
                .env("CARGO_TARGET_DIR", &target)
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("cannot run cargo in {}: {e}", dir.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo test --no-run in {} failed ({}): {}",
                    dir.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|m| m["target"]["name"] == "count" && m["profile"]["test"] == true)
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .ok_or_else(|| "cargo built no test executable named count".to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The example's own `cargo test` binary run in the kernel's guest through
/// `bpfmatrix exec`'s path, as cargo's runner would: every test it has must
/// pass there, by libtest's own lines, and it must exit 0.
fn exec_trial(
    target: Target,
    agent: Shared<PathBuf>,
    example: Shared<PathBuf>,
    settings: Arc<Settings>,
) -> Trial {
    Trial::ignorable_test(
        format!("{}::exec::aya_app_tests", target.name()),
        move || {
            let kernel = match obtain(&target)? {
                Ok(kernel) => kernel,
                Err(why) => return Ok(Completion::ignored_with(why)),
            };
            let binary = example_tests(&example)?;
            let agent = built(&agent)?;
            let settings = Settings {
                cases: vec![],
                objects: vec![],
                jit_modes: vec![JitMode::Jit],
                ..(*settings).clone()
            };
            let request = exec::ExecRequest::here(
                vec![binary.to_string_lossy().into_owned()],
                exec::Format::Libtest,
            )
            .map_err(|e| format!("{e:#}"))?;
            let run = exec::exec_kernel(
                &kernel,
                agent,
                &settings,
                &request,
                &mut |p| {
                    if let Progress::Step { kernel, what } = p {
                        eprintln!("[{kernel}] {what}")
                    }
                },
                &mut |_, _, _, _| {},
            );
            let cell = run.cells.first().ok_or_else(|| {
                format!(
                    "kernel {}: {}",
                    run.kernel,
                    run.reason.clone().unwrap_or_default()
                )
            })?;
            let names: Vec<&str> = cell.tests.iter().map(|(n, _)| n.as_str()).collect();
            if names
                != [
                    "counts_every_datagram_to_its_port",
                    "ignores_datagrams_to_other_ports",
                    "kernel_reports_the_verified_xdp_program",
                ]
                || !run.passed()
            {
                return Err(format!(
                    "kernel {} ({}): exit {}, tests {:?}\nstdout:\n{}\nstderr:\n{}",
                    run.kernel,
                    run.reason.as_deref().unwrap_or("completed"),
                    cell.exit_text(),
                    cell.tests,
                    cell.stdout,
                    cell.stderr
                )
                .into());
            }
            Ok(Completion::Completed)
        },
    )
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

fn judge(run: &KernelRun, case: CaseId, jit: JitMode) -> Result<Completion, Failed> {
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
        Verdict::Agrees => Ok(Completion::Completed),
        // A mode the kernel was built without is no pass: the trial says so, ignored.
        Verdict::NotApplicable { reason } => Ok(Completion::ignored_with(format!(
            "kernel {}: {reason}",
            run.kernel
        ))),
        _ => Err(format!(
            "kernel {} (guest {}):\n{}",
            run.kernel,
            run.guest_release.as_deref().unwrap_or("never said hello"),
            report::explain(cell)
        )
        .into()),
    }
}
