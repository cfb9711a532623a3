//! The `bpfmatrix` command: obtain kernels, run the cases in a guest per kernel,
//! print the table and write the JSON results.

use anyhow::Result;
use bpfmatrix::annotate;
use bpfmatrix::bench;
use bpfmatrix::exec;
use bpfmatrix::matrix::{KernelRun, Matrix, RunStatus};
use bpfmatrix::merge::{self, Coverage};
use bpfmatrix::objects::{self, UserObject};
use bpfmatrix::programs::ProgramRules;
use bpfmatrix::report;
use bpfmatrix::run::{self, Backend, Progress, Settings};
use bpfmatrix::targets::{self, Target};
use bpfmatrix_kernels::catalog::FetchError;
use bpfmatrix_kernels::Kernel;
use bpfmatrix_protocol::{CaseId, JitMode};
use bpfmatrix_vm::qemu::{Accel, VmEvent};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Which kernels accept and run your eBPF programs: boots real kernels in QEMU and runs tail-call, bpf2bpf and fentry/fexit-on-tc cases inside them with aya"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the cases on one or more kernels and print the matrix.
    Run(RunArgs),
    /// Load your own BPF objects' programs on each kernel: which accept each, and why not.
    ///
    /// Loads every program of your own BPF objects on one or more kernels, in both
    /// JIT modes: which kernels accept each, the verifier's words where one
    /// refuses, what verifying cost, and each program's minimum kernel. Exits 0
    /// when every program did what is expected of it (by default: load on every
    /// kernel; see --expect), 1 when one did not or a kernel run failed, 2 for bad
    /// input (a file that is not a BPF object, a bad expect file...), before any
    /// guest starts.
    Check(CheckArgs),
    /// Run your own command (e.g. a cargo test binary) in each kernel's guest.
    ///
    /// Runs your own command as root in each kernel's guest (restored from its saved
    /// state), with the host's filesystem read-only at the same paths, the same
    /// working directory and environment (but for host-only variables such as
    /// DISPLAY, SSH_AUTH_SOCK, XDG_RUNTIME_DIR, TMPDIR), a private writable /tmp,
    /// bpffs, tracefs and debugfs mounted and lo up. Its output streams back
    /// (prefixed [KERNEL] when several kernels run); its exit status per kernel
    /// (and JIT mode) is a matrix. As cargo's runner, it runs each test binary in
    /// every kernel: CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="bpfmatrix exec -k
    /// 6.1 -k 6.12 --format libtest --". Exits 0 when the command passed on every
    /// kernel that could be had, 1 when it failed on one, 2 for bad input. --jit
    /// defaults to the JIT alone here.
    Exec(ExecArgs),
    /// List the catalog's kernels; with --json or --complete, plan and check their cache.
    ///
    /// Without flags: each kernel bpfmatrix knows by name, and whether it is cached,
    /// available, or unavailable here and why (judged without downloading).
    ///
    /// --json [-k NAME]...: resolves each catalog kernel (default: all) the way
    /// `fetch` would choose, without downloading it (Debian: the private apt's
    /// `apt-get update` and `apt-cache`, the newest package matching the entry's
    /// pattern; Ubuntu mainline: the build folder's page and CHECKSUMS; progress on
    /// stderr), reads each kernel's cache marker, and prints one JSON document
    /// (schema "bpfmatrix-kernels/1"): per kernel its catalog entry, what was
    /// resolved (or null and the error a fetch would give), its cache folder and
    /// whether the cache holds exactly that; then `cache` (the folders, `key`
    /// "bpfmatrix-kernels-v1-NAMES-HASH", null when a kernel is unresolved, and
    /// `restore_prefix`) and `states` (the saved guest states, keyed by QEMU's
    /// binary, the kernels' key and this version), for actions/cache. Exits 0 when
    /// every kernel was resolved, 1 when one could not be (the document says why),
    /// 2 for an unknown name.
    ///
    /// --complete PLAN.json: reads a document --json printed, reads the cache
    /// markers again now, and prints one line, `complete=true` when every kernel of
    /// the plan was resolved and is cached with exactly what was resolved, else
    /// `complete=false` with each kernel's reason on stderr. Exits 0 either way (for
    /// `>> "$GITHUB_OUTPUT"`), 2 for a file that is not such a document.
    Kernels {
        /// Print what a fetch of each kernel would take today, its cache, and cache
        /// keys, as JSON.
        #[arg(long, conflicts_with = "complete")]
        json: bool,
        /// With --json: this catalog kernel (repeatable; default: every one).
        #[arg(short, long = "kernel", value_name = "NAME", requires = "json")]
        kernels: Vec<String>,
        /// Print complete=true when the cache holds every kernel of this plan (a
        /// document of --json) as resolved, else complete=false.
        #[arg(long, value_name = "PLAN.json")]
        complete: Option<PathBuf>,
    },
    /// Merge matrix.json files (one per CI job) into one report; check coverage.
    ///
    /// Merges matrix.json files (one per CI job) into one report folder. Every
    /// record is judged again from the guest's outcome and the feature table. Exits
    /// 1 when any cell disagrees with its expectation, a kernel run failed, or a
    /// required kernel is not covered (each such kernel is named with what it
    /// lacks); 2, writing nothing, when the options are wrong or an input is: not a
    /// matrix.json of this version, a stored verdict or expectation that is not
    /// what its record gets when judged again, or a cell of a kernel's plan
    /// without its record (each named by kernel, JIT mode and case).
    Merge {
        /// The matrix.json files to merge.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where to write the merged matrix.json, matrix.md and matrix.html.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Kernels that must be covered (comma-separated). Each must have a report
        /// (a missing one is a failed run: its job crashed), must have been
        /// obtained, and must have a guest record for every case in both JIT modes;
        /// otherwise the merge exits 1 naming the kernel and what is missing. The
        /// check is made from the records, not from any stored verdict.
        #[arg(long, value_name = "KERNELS", value_delimiter = ',')]
        require: Vec<String>,
        /// Required kernels that may be unavailable here (comma-separated): one whose
        /// report says it could not be obtained then passes the coverage check, and
        /// the reports still show it as unavailable, never as passed. It allows
        /// unavailable, not incomplete: a listed kernel that was obtained must still
        /// have every cell, and one with no report at all still fails. Every name
        /// must also be in --require, or it is a usage error (exit 2).
        #[arg(long, value_name = "KERNELS", value_delimiter = ',')]
        allow_unavailable: Vec<String>,
    },
    /// Measure boot, restore, exec and matrix times against their targets.
    ///
    /// Measures, in one run: the bare boot floor of each kernel, bpfmatrix's boot to
    /// all verdicts and to QEMU exit, the run started from the kernel's saved
    /// state, virtme-ng's `--exec true`, `bpfmatrix exec -- true` restored and
    /// vmtest's `true` on the same image, their ratios, the warm matrix of three
    /// kernels and `check` of one object; prints a table (and JSON with --json)
    /// and each target met or not. Exits 1 when a target is not met.
    Bench(BenchArgs),
    /// Download kernels into the cache without running anything.
    Fetch {
        /// Catalog names (default: all).
        kernels: Vec<String>,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Kernels to measure (catalog names or paths). Default: every catalog kernel
    /// that can be had here.
    #[arg(short, long = "kernel", value_name = "KERNEL")]
    kernels: Vec<String>,
    /// Repetitions of each measurement (minimum and median are reported).
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// Skip virtme-ng (otherwise installed from PyPI into the cache when missing).
    #[arg(long)]
    no_vng: bool,
    /// Skip vmtest (otherwise installed from crates.io into the cache with `cargo
    /// install` when missing).
    #[arg(long)]
    no_vmtest: bool,
    /// Also time the matrix with an empty cache (downloads every kernel again).
    #[arg(long)]
    cold: bool,
    #[arg(long, default_value = "auto")]
    accel: Accel,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExecArgs {
    /// How the command's output becomes rows: plain (one row, the exit status) or
    /// libtest (a row per "test NAME ... ok|FAILED|ignored" line, as a cargo test
    /// binary prints them, and the exit status).
    #[arg(long, value_enum, default_value = "plain")]
    format: exec::Format,
    #[command(flatten)]
    guests: GuestArgs,
    /// The command and its arguments, after --.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Run only these cases (e.g. tail_call.chain). Repeatable. Default: all.
    #[arg(short, long = "case", value_name = "CASE", value_parser = parse_case)]
    cases: Vec<CaseId>,
    #[command(flatten)]
    guests: GuestArgs,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The BPF objects (clang -target bpf ... -o OBJ.o) whose programs to load.
    #[arg(required = true, value_name = "OBJ.o")]
    objects: Vec<PathBuf>,
    /// A TOML file naming, per program, the first kernel that must accept it:
    /// `[[program]]` tables with `program = "NAME"`, `first_kernel = "6.1"` and,
    /// when the name is in several objects, `object = "FILE.o"`. Kernels before
    /// it must refuse it. Programs it does not name must load on every kernel.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    #[command(flatten)]
    guests: GuestArgs,
}

/// Which kernels, how to boot them and where the reports go: the same for `run`
/// and `check`.
#[derive(clap::Args)]
struct GuestArgs {
    /// A catalog name (see `bpfmatrix kernels`), a path to a bzImage, a vmlinux or a
    /// kernel .deb, or NAME=PATH. Repeatable. Default: every kernel of the catalog.
    #[arg(short, long = "kernel", value_name = "KERNEL")]
    kernels: Vec<String>,
    /// The lib/modules/<release> directory for kernels given by path (needed for
    /// the loopback case when clsact is built as modules).
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// Run only this JIT mode.
    #[arg(long, value_enum)]
    jit: Option<JitChoice>,
    /// auto tries KVM and falls back to TCG when the guest does not speak in time.
    #[arg(long, default_value = "auto")]
    accel: Accel,
    /// qemu: bpfmatrix's own microVM (fast); vng: the same agent and cases through
    /// virtme-ng, when it is installed.
    #[arg(long, value_enum, default_value = "qemu")]
    backend: Backend,
    /// Seconds a guest may take from QEMU start to exit before it is killed.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Write matrix.json, matrix.md and matrix.html into this folder.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// How many guests to boot at once (default: one per core).
    #[arg(long, value_name = "N")]
    parallel: Option<usize>,
    /// Show the guests' console output.
    #[arg(short, long)]
    verbose: bool,
    /// Boot every guest: neither start from a saved state nor save one. By default
    /// the first run of a kernel saves its guest once the agent is up (in the
    /// cache, keyed by kernel, agent, QEMU and command line), and later runs start
    /// from it, skipping the boot.
    #[arg(long)]
    no_snapshot: bool,
    /// Also print one annotation per failing or disagreeing cell in this CI's
    /// format (github: `::error file=...,line=...::...` workflow commands, the
    /// file and line of a check program's C source from its BTF line info),
    /// to stdout after the matrix.
    #[arg(long, value_enum, value_name = "FORMAT")]
    annotations: Option<Annotations>,
}

/// Where annotations go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Annotations {
    Github,
}

/// The folder annotations' paths are made relative to: the workflow's checkout,
/// else here.
fn workspace() -> Option<PathBuf> {
    std::env::var_os("GITHUB_WORKSPACE")
        .filter(|w| !w.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
}

fn parse_case(s: &str) -> Result<CaseId, String> {
    CaseId::parse(s).ok_or_else(|| {
        let all: Vec<&str> = CaseId::ALL.iter().map(|c| c.as_str()).collect();
        format!("unknown case; known cases: {}", all.join(", "))
    })
}

/// Which JIT modes to run: `run` and `check` default to both, `exec` to the JIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum JitChoice {
    Jit,
    Interpreter,
    Both,
}

impl JitChoice {
    fn modes(self) -> Vec<JitMode> {
        match self {
            JitChoice::Jit => vec![JitMode::Jit],
            JitChoice::Interpreter => vec![JitMode::Interpreter],
            JitChoice::Both => JitMode::ALL.to_vec(),
        }
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bpfmatrix: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<bool> {
    match Cli::parse().command {
        Command::Kernels {
            json,
            kernels,
            complete,
        } => {
            use bpfmatrix_kernels::plan::{self, Plan};
            if let Some(path) = complete {
                let verdict = plan::complete(&Plan::read(&path)?);
                for (name, why) in &verdict.missing {
                    eprintln!("kernel {name}: {why}");
                }
                // Incomplete is an answer for the workflow's next step, not a failure.
                println!("complete={}", verdict.is_complete());
                return Ok(true);
            }
            if json {
                let entries = plan::select(&kernels)?;
                // No QEMU is no failure here: the plan then has no states key.
                let qemu = bpfmatrix_vm::qemu::find_qemu().ok();
                let plan = plan::plan(
                    &entries,
                    env!("CARGO_PKG_VERSION"),
                    qemu.as_deref(),
                    &mut |name, line| eprintln!("[{name}] {line}"),
                )?;
                println!("{}", plan.to_json());
                for kernel in &plan.kernels {
                    if let Some(error) = &kernel.error {
                        eprintln!("[{}] not resolved: {error}", kernel.name);
                    }
                }
                return Ok(plan.all_resolved());
            }
            for entry in targets::catalog() {
                let t = Target::Catalog(entry);
                println!("{:<6} {}", t.name(), t.describe());
                println!("       {}", targets::availability(&t));
            }
            Ok(true)
        }
        Command::Fetch { kernels } => {
            let names = if kernels.is_empty() {
                targets::catalog().into_iter().map(|e| e.name).collect()
            } else {
                kernels
            };
            let mut all = true;
            for name in names {
                let target = targets::resolve(&name, None)?;
                match targets::obtain(&target, &mut |m| eprintln!("[{name}] {m}")) {
                    Ok(kernel) => println!("{name}: {}", kernel.boot_image.display()),
                    Err(e) => {
                        println!("{name}: {e}");
                        all = false;
                    }
                }
            }
            Ok(all)
        }
        Command::Run(args) => {
            let cases = if args.cases.is_empty() {
                CaseId::ALL.to_vec()
            } else {
                args.cases.clone()
            };
            run(args.guests, cases, vec![], ProgramRules::default())
        }
        Command::Check(args) => {
            // Everything the user gave is vetted before any kernel is fetched.
            let objects = objects::load(&args.objects)?;
            let rules = match &args.expect {
                Some(path) => {
                    let rules = ProgramRules::load(path)?;
                    let specs: Vec<_> = objects.iter().map(|o| o.spec.clone()).collect();
                    rules.check_against(&specs)?;
                    rules
                }
                None => ProgramRules::default(),
            };
            run(args.guests, vec![], objects, rules)
        }
        Command::Bench(args) => bench(args),
        Command::Exec(args) => exec(args),
        Command::Merge {
            inputs,
            out,
            require,
            allow_unavailable,
        } => {
            let coverage = Coverage::new(require, allow_unavailable)?;
            let matrix = merge::merge_files(&inputs, coverage)?;
            print!("{}", report::terminal(&matrix, color()));
            for path in report::write_reports(&matrix, &out)? {
                eprintln!("wrote {}", path.display());
            }
            Ok(matrix.all_agree())
        }
    }
}

fn run(
    args: GuestArgs,
    cases: Vec<CaseId>,
    objects: Vec<UserObject>,
    program_rules: ProgramRules,
) -> Result<bool> {
    let targets = targets_of(&args)?;
    let settings = Settings {
        cases,
        objects,
        program_rules,
        ..settings_of(&args, JitChoice::Both)?
    };
    let slots = obtain_all(&targets)?;
    let verbose = args.verbose;
    let runs = boot_all(
        &slots,
        &args,
        settings.backend,
        |kernels, agent, parallel| {
            run::run_kernels(kernels, agent, &settings, parallel, &|p| show(p, verbose))
        },
    )?;
    let runs = each_slot(runs, &slots, |name, source, status| {
        let gone = match status {
            RunStatus::Unavailable { .. } => KernelRun::unavailable,
            _ => KernelRun::failed,
        };
        let why = status.reason().unwrap_or_default().to_string();
        settings.without_programs_answered(gone(
            name,
            source,
            why,
            &settings.cases,
            &settings.jit_modes,
        ))
    });
    let mut matrix = Matrix::from_runs(runs);
    matrix.program_rules = settings.program_rules.clone();
    print!("{}", report::terminal(&matrix, color()));
    if let Some(Annotations::Github) = args.annotations {
        let lines = annotate::github_lines(&matrix, &settings.objects, workspace().as_deref());
        for line in lines {
            println!("{line}");
        }
    }
    if let Some(dir) = &args.out {
        for path in report::write_reports(&matrix, dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(matrix.all_agree())
}

/// One result per slot: the run of a kernel that could be had, else what `gone`
/// makes of its name, source and why it is gone.
fn each_slot<R>(
    runs: Vec<Option<R>>,
    slots: &[Slot],
    gone: impl Fn(&String, &String, &RunStatus) -> R,
) -> Vec<R> {
    runs.into_iter()
        .zip(slots)
        .map(|(run, slot)| match (run, slot) {
            (Some(run), _) => run,
            (
                None,
                Slot::Gone {
                    name,
                    source,
                    status,
                },
            ) => gone(name, source, status),
            (None, Slot::Ready(_)) => unreachable!("every kernel that could be had was run"),
        })
        .collect()
}

/// A kernel to run on, or why there is none.
enum Slot {
    Ready(Kernel),
    Gone {
        name: String,
        source: String,
        status: RunStatus,
    },
}

/// Obtains every target before any guest starts: everything a user can get wrong
/// is an error here; a catalog kernel that cannot be had is "unavailable", and
/// one that failed to download a failed run, not an error.
fn obtain_all(targets: &[Target]) -> Result<Vec<Slot>> {
    let mut slots = Vec::new();
    for target in targets {
        let name = target.name().to_string();
        let gone = |status| Slot::Gone {
            name: name.clone(),
            source: target.describe(),
            status,
        };
        slots.push(
            match targets::obtain(target, &mut |m| eprintln!("[{name}] {m}")) {
                Ok(kernel) => Slot::Ready(kernel),
                Err(FetchError::Unavailable(reason)) => {
                    eprintln!("[{name}] unavailable: {reason}");
                    gone(RunStatus::Unavailable { reason })
                }
                Err(FetchError::Failed(e)) if target.is_user_path() => {
                    return Err(e.context(format!("kernel {name}")));
                }
                Err(FetchError::Failed(e)) => gone(RunStatus::Failed {
                    reason: format!("{e:#}"),
                }),
            },
        );
    }
    Ok(slots)
}

/// Runs `job` on the kernels of `slots` that could be had (after checking the
/// backend is there and building the agent), one result per slot: `None` for a
/// kernel that could not be had.
fn boot_all<T>(
    slots: &[Slot],
    args: &GuestArgs,
    backend: Backend,
    job: impl FnOnce(&[Kernel], &std::path::Path, usize) -> Vec<T>,
) -> Result<Vec<Option<T>>> {
    let kernels: Vec<Kernel> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Ready(k) => Some(k.clone()),
            Slot::Gone { .. } => None,
        })
        .collect();
    let mut done = Vec::new().into_iter();
    if !kernels.is_empty() {
        match backend {
            Backend::Qemu => drop(bpfmatrix_vm::qemu::find_qemu()?),
            Backend::Vng => drop(bpfmatrix_vm::vng::find_vng()?),
        }
        let agent = bpfmatrix_vm::agent::build_agent(&mut |m| eprintln!("[agent] {m}"))?;
        let parallel = args.parallel.unwrap_or_else(run::default_parallelism);
        done = job(&kernels, &agent, parallel).into_iter();
    }
    Ok(slots
        .iter()
        .map(|s| match s {
            Slot::Ready(_) => done.next(),
            Slot::Gone { .. } => None,
        })
        .collect())
}

/// How `args` asks the guests to run (`jit` when it names no mode), its report
/// folder checked writable before any guest starts.
fn settings_of(args: &GuestArgs, jit: JitChoice) -> Result<Settings> {
    if let Some(dir) = &args.out {
        report::check_writable(dir)?;
    }
    Ok(Settings {
        jit_modes: args.jit.unwrap_or(jit).modes(),
        accel: args.accel,
        backend: args.backend,
        timeout: Duration::from_secs(args.timeout),
        snapshots: !args.no_snapshot,
        ..Settings::default()
    })
}

/// The kernels `args` names (every catalog kernel by default), resolved.
fn targets_of(args: &GuestArgs) -> Result<Vec<Target>> {
    let names = if args.kernels.is_empty() {
        targets::catalog().into_iter().map(|e| e.name).collect()
    } else {
        args.kernels.clone()
    };
    names
        .iter()
        .map(|n| targets::resolve(n, args.modules.as_deref()))
        .collect()
}

fn exec(args: ExecArgs) -> Result<bool> {
    let request = exec::ExecRequest::here(args.command, args.format)?;
    let guests = args.guests;
    let targets = targets_of(&guests)?;
    let settings = Settings {
        cases: vec![],
        ..settings_of(&guests, JitChoice::Jit)?
    };
    let slots = obtain_all(&targets)?;
    let several = targets.len() > 1;
    let verbose = guests.verbose;
    let lines = exec::LinePrefixer::new(several);
    let runs = boot_all(
        &slots,
        &guests,
        settings.backend,
        |kernels, agent, parallel| {
            run::each_kernel(kernels, parallel, &|kernel| {
                exec::exec_kernel(
                    kernel,
                    agent,
                    &settings,
                    &request,
                    &mut |p| show(p, verbose),
                    &mut |k, _, stream, text| lines.write(k, stream, text),
                )
            })
        },
    )?;
    lines.finish();
    let runs = each_slot(runs, &slots, |name, source, status| match status {
        RunStatus::Unavailable { reason } => {
            exec::ExecRun::unavailable(name, source, reason.clone())
        }
        other => {
            exec::ExecRun::failed(name, source, other.reason().unwrap_or_default().to_string())
        }
    });
    let matrix = exec::ExecMatrix {
        schema: exec::SCHEMA.into(),
        command: request.spec.argv.clone(),
        format: request.format,
        runs,
    };
    print!("{}", exec::terminal(&matrix));
    if let Some(Annotations::Github) = guests.annotations {
        for line in annotate::github_exec_lines(&matrix) {
            println!("{line}");
        }
    }
    if let Some(dir) = &guests.out {
        for path in exec::write_reports(&matrix, dir)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(matrix.passed())
}

fn bench(args: BenchArgs) -> Result<bool> {
    let names = if args.kernels.is_empty() {
        targets::catalog().into_iter().map(|e| e.name).collect()
    } else {
        args.kernels.clone()
    };
    let mut kernels = Vec::new();
    for name in &names {
        let target = targets::resolve(name, None)?;
        match targets::obtain(&target, &mut |m| eprintln!("[{name}] {m}")) {
            Ok(kernel) => kernels.push(kernel),
            Err(FetchError::Unavailable(why)) => eprintln!("[{name}] not measured: {why}"),
            Err(FetchError::Failed(e)) => return Err(e.context(format!("kernel {name}"))),
        }
    }
    anyhow::ensure!(!kernels.is_empty(), "no kernel can be had here to measure");
    let agent = bpfmatrix_vm::agent::build_agent(&mut |m| eprintln!("[agent] {m}"))?;
    let kernel_args: Vec<(std::ffi::OsString, String)> = kernels
        .iter()
        .map(|k| {
            let by_name = targets::catalog().iter().any(|e| e.name == k.name);
            let arg = if by_name {
                k.name.clone().into()
            } else {
                format!("{}={}", k.name, k.image.display()).into()
            };
            (arg, k.name.clone())
        })
        .collect();
    // The warm matrix of three kernels, as issue 13 measures it (from their
    // saved states: `run`'s default).
    let matrix_kernels = &kernel_args[..kernel_args.len().min(3)];
    let mut matrix_args: Vec<std::ffi::OsString> = vec!["run".into()];
    for (arg, _) in matrix_kernels {
        matrix_args.push("-k".into());
        matrix_args.push(arg.clone());
    }
    let check_dir = tempfile::Builder::new()
        .prefix("bpfmatrix-bench-check-")
        .tempdir()?;
    let check = bench::check_command(std::env::current_exe()?, &kernel_args, check_dir.path())?;
    let opts = bench::BenchOptions {
        repetitions: args.repetitions,
        settings: Settings {
            accel: args.accel,
            ..Settings::default()
        },
        vng: !args.no_vng,
        vmtest: !args.no_vmtest,
        cold: args.cold,
        // `exec -k KERNEL -- true`, as the user runs it, per kernel.
        exec: Some(bench::ExecTrueCommand {
            program: std::env::current_exe()?,
            kernels: kernel_args.clone(),
        }),
        matrix: Some(bench::MatrixCommand {
            program: std::env::current_exe()?,
            args: matrix_args,
            kernels: matrix_kernels.iter().map(|(_, n)| n.clone()).collect(),
        }),
        check: Some(check),
    };
    let report = bench::bench(&kernels, &agent, &opts, &|l| eprintln!("bench: {l}"))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    // A target that is not met, or could not be measured, fails the bench.
    Ok(report.targets.iter().all(|t| t.met == Some(true)))
}

fn show(p: Progress, verbose: bool) {
    match p {
        Progress::Step { kernel, what } => eprintln!("[{kernel}] {what}"),
        Progress::Vm { kernel, event } => match event {
            VmEvent::Starting { runner, accel, .. } => {
                eprintln!("[{kernel}] {runner} started ({accel})")
            }
            VmEvent::GuestSpoke { accel, after } => eprintln!(
                "[{kernel}] guest spoke after {:.1} s ({accel})",
                after.as_secs_f64()
            ),
            VmEvent::KvmFallback { reason } => {
                eprintln!("[{kernel}] KVM did not work, falling back to TCG: {reason}")
            }
            VmEvent::Restored { after } => eprintln!(
                "[{kernel}] restored from its saved state in {:.2} s",
                after.as_secs_f64()
            ),
            VmEvent::Saved { bytes, took } => eprintln!(
                "[{kernel}] saved the guest's state ({} MB in {:.2} s): later runs start from it",
                bytes >> 20,
                took.as_secs_f64()
            ),
            VmEvent::SaveFailed { reason } => {
                eprintln!("[{kernel}] could not save the guest's state: {reason}")
            }
            VmEvent::StateDiscarded { reason } => {
                eprintln!("[{kernel}] saved state not used: {reason}; booting instead")
            }
            VmEvent::Console(line) if verbose => eprintln!("[{kernel}] | {line}"),
            VmEvent::GuestLine(line) if verbose => eprintln!("[{kernel}] > {}", line.text),
            _ => {}
        },
    }
}

fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_level_help_gives_each_command_one_short_line() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(
                !about.is_empty() && about.len() <= 90 && !about.contains('\n'),
                "`{}`: about is {} chars: {about:?}",
                sub.get_name(),
                about.len()
            );
            // The details are not lost: they are the command's own --help.
            let long = sub.get_long_about().map(|a| a.to_string());
            if let Some(long) = long {
                assert!(long.starts_with(&about), "`{}`", sub.get_name());
            }
        }
    }

    fn merge_lists(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let argv = ["bpfmatrix", "merge", "a.json", "--out", "o"];
        let cli = Cli::try_parse_from(argv.iter().chain(args)).unwrap();
        let Command::Merge {
            require,
            allow_unavailable,
            ..
        } = cli.command
        else {
            panic!("not the merge command");
        };
        (require, allow_unavailable)
    }

    #[test]
    fn merge_takes_comma_separated_require_and_allow_unavailable() {
        let (require, allow) = merge_lists(&[
            "--require",
            "4.16,5.4,6.1",
            "--allow-unavailable",
            "4.16,5.4",
        ]);
        assert_eq!(require, ["4.16", "5.4", "6.1"]);
        assert_eq!(allow, ["4.16", "5.4"]);
        let coverage = Coverage::new(require, allow).unwrap();
        assert!(coverage.allows_unavailable("5.4") && !coverage.allows_unavailable("6.1"));
        // An empty list, as a script passes it, allows nothing.
        let (require, allow) = merge_lists(&["--require", "6.1", "--allow-unavailable", ""]);
        assert!(Coverage::new(require, allow)
            .unwrap()
            .allow_unavailable
            .is_empty());
        let (require, allow) = merge_lists(&["--allow-unavailable", "4.16"]);
        assert!(Coverage::new(require, allow).is_err());
    }
}
