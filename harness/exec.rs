//! `bpfmatrix exec -- CMD`: the user's own command, run as root in each kernel's
//! guest (restored from the kernel's saved state where there is one), with the
//! host's filesystem visible read-only at the same paths. Its output streams home
//! as it comes; how it ended in each kernel and JIT mode becomes a matrix of its
//! own ([`ExecMatrix`]): one row for the command, or with `--format libtest` one
//! row per test its libtest output names ("test NAME ... ok|FAILED|ignored").
//! The guest's side is `probes/agent/src/exec.rs`.

use crate::collect::{self, Exit, Line};
use crate::matrix::{HostFacts, RunStatus};
use crate::modes::KernelFacts;
use crate::run::{self, Guest, Progress, Settings, GUEST_MODULES};
use anyhow::{Context, Result};
use bpfmatrix_kernels::Kernel;
use bpfmatrix_protocol::{ExecSpec, GuestMessage, JitMode, Plan, Stream, PROTOCOL_VERSION};
use bpfmatrix_vm::qemu::VmEvent;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the guest needs to mount the host's root: the virtio PCI transport
/// (a module in Debian's kernels) and virtio-9p, with what they depend on (netfs
/// or fscache), resolved from the modules' own dependencies.
pub const SHARE_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// Environment variables that name things only the host has (its display, its
/// agents' sockets, its per-user runtime folder) or that the guest sets itself
/// (TMPDIR: the guest's /tmp is its own); the rest is passed through as it is.
pub const HOST_ONLY_ENV: &[&str] = &[
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GPG_AGENT_INFO",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "TMPDIR",
];

/// How the command's output is read into rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One row: the command, judged by its exit status.
    Plain,
    /// One row per test of libtest's "test NAME ... ok|FAILED|ignored" lines
    /// (a `cargo test` binary), and one for the exit status.
    Libtest,
}

/// A test's result as libtest printed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestOutcome {
    Ok,
    Failed,
    Ignored,
}

/// The command in one kernel and JIT mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecCell {
    pub jit: JitMode,
    /// How it ended; none when the guest never said (its run failed).
    pub exit: Option<Exit>,
    /// What the kernel lacks of the mode, when it was built without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<String>,
    /// Its standard output and error, as the guest sent them.
    pub stdout: String,
    pub stderr: String,
    /// The tests libtest's lines name, in order (`--format libtest`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<(String, TestOutcome)>,
}

impl ExecCell {
    /// Exit code 0, and no test failed.
    pub fn passed(&self) -> bool {
        self.exit.as_ref().is_some_and(|e| e.code == Some(0))
            && !self.tests.iter().any(|(_, o)| *o == TestOutcome::Failed)
    }

    /// The exit in a few words: "0", "3", "signal 9", "not started: ...".
    pub fn exit_text(&self) -> String {
        match &self.exit {
            _ if self.not_applicable.is_some() => "n/a".into(),
            None => "no exit".into(),
            Some(Exit {
                code: Some(127),
                error: Some(_),
                ..
            }) => "127 (not found)".into(),
            Some(Exit { code: Some(c), .. }) => c.to_string(),
            Some(Exit {
                signal: Some(s), ..
            }) => format!("signal {s}"),
            Some(Exit { error: Some(_), .. }) => "not run".into(),
            Some(_) => "no status".into(),
        }
    }
}

/// One kernel's runs of the command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecRun {
    pub kernel: String,
    pub source: String,
    /// `completed`, `unavailable` or `failed`, as for the cases.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub guest_release: Option<String>,
    pub restored: bool,
    pub boot_wall_ms: Option<u64>,
    pub cells: Vec<ExecCell>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl ExecRun {
    fn with_status(kernel: &str, source: &str, status: &RunStatus) -> ExecRun {
        ExecRun {
            kernel: kernel.into(),
            source: source.into(),
            status: status.as_str().into(),
            reason: status.reason().map(str::to_string),
            guest_release: None,
            restored: false,
            boot_wall_ms: None,
            cells: vec![],
            warnings: vec![],
        }
    }

    /// A kernel that could not be had: no cell, and no pass.
    pub fn unavailable(kernel: &str, source: &str, reason: String) -> ExecRun {
        Self::with_status(kernel, source, &RunStatus::Unavailable { reason })
    }

    pub fn failed(kernel: &str, source: &str, reason: String) -> ExecRun {
        Self::with_status(kernel, source, &RunStatus::Failed { reason })
    }

    pub fn tested(&self) -> bool {
        self.status != "unavailable"
    }

    /// Completed, and the command passed in every mode the kernel has.
    pub fn passed(&self) -> bool {
        self.status == "completed"
            && !self.cells.is_empty()
            && self
                .cells
                .iter()
                .all(|c| c.not_applicable.is_some() || c.passed())
            && self.cells.iter().any(|c| c.not_applicable.is_none())
    }
}

/// The command across kernels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecMatrix {
    pub schema: String,
    pub command: Vec<String>,
    pub format: Format,
    pub runs: Vec<ExecRun>,
}

pub const SCHEMA: &str = "bpfmatrix-exec/1";

impl ExecMatrix {
    /// At least one kernel could be had, and the command passed on every one
    /// that could.
    pub fn passed(&self) -> bool {
        let mut tested = self.runs.iter().filter(|r| r.tested()).peekable();
        tested.peek().is_some() && tested.all(ExecRun::passed)
    }

    /// The rows: the tests libtest named (in the order first seen), then the
    /// exit status; or the command alone.
    pub fn rows(&self) -> Vec<String> {
        let mut rows: Vec<String> = Vec::new();
        if self.format == Format::Libtest {
            for cell in self.runs.iter().flat_map(|r| &r.cells) {
                for (name, _) in &cell.tests {
                    if !rows.contains(name) {
                        rows.push(name.clone());
                    }
                }
            }
        }
        rows.push(self.exit_row());
        rows
    }

    /// The row of the command's exit status.
    pub fn exit_row(&self) -> String {
        match self.format {
            Format::Plain => shell_words(&self.command),
            Format::Libtest => "(exit status)".into(),
        }
    }
}

/// The command as a shell would show it.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// libtest's verdict lines in `stdout`: "test NAME ... ok", "... FAILED",
/// "... ignored" (with or without a reason).
pub fn libtest_results(stdout: &str) -> Vec<(String, TestOutcome)> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("test ")?;
            let (name, result) = rest.rsplit_once(" ... ")?;
            let outcome = match result.trim() {
                "ok" => TestOutcome::Ok,
                "FAILED" => TestOutcome::Failed,
                r if r == "ignored" || r.starts_with("ignored,") => TestOutcome::Ignored,
                _ => return None,
            };
            Some((name.to_string(), outcome))
        })
        .collect()
}

/// What `bpfmatrix exec` was asked for.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub spec: ExecSpec,
    pub format: Format,
}

impl ExecRequest {
    /// The command as the user gave it, with the caller's directory and its
    /// environment but for [`HOST_ONLY_ENV`].
    pub fn here(argv: Vec<String>, format: Format) -> Result<ExecRequest> {
        anyhow::ensure!(
            !argv.is_empty(),
            "no command: give it after --, e.g. bpfmatrix exec -k 6.1 -- uname -r"
        );
        // The guest's own folders hide the host's: a program there is not found.
        let hidden = ["/tmp/", "/run/", "/proc/", "/sys/", "/dev/"];
        if let Some(dir) = hidden.iter().find(|d| argv[0].starts_with(*d)) {
            anyhow::bail!(
                "{} is under the host's {}, which the guest does not see (its {} is its own): put it elsewhere (for cargo, a CARGO_TARGET_DIR outside it)",
                argv[0],
                dir.trim_end_matches('/'),
                dir.trim_end_matches('/')
            );
        }
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let env = std::env::vars()
            .filter(|(k, _)| !HOST_ONLY_ENV.contains(&k.as_str()))
            .collect();
        Ok(ExecRequest {
            spec: ExecSpec {
                argv,
                cwd: cwd.to_string_lossy().into_owned(),
                env,
                modules_dir: None,
            },
            format,
        })
    }
}

/// Runs the command on `kernel`'s guest; a guest that cannot be built or booted
/// is a failed run, never an error that hides the kernel.
pub fn exec_kernel(
    kernel: &Kernel,
    agent: &Path,
    settings: &Settings,
    request: &ExecRequest,
    progress: &mut dyn FnMut(Progress),
    output: &mut dyn FnMut(&str, JitMode, Stream, &str),
) -> ExecRun {
    match try_exec(kernel, agent, settings, request, progress, output) {
        Ok(run) => run,
        Err(e) => ExecRun::failed(&kernel.name, &kernel.source, format!("{e:#}")),
    }
}

fn try_exec(
    kernel: &Kernel,
    agent: &Path,
    settings: &Settings,
    request: &ExecRequest,
    progress: &mut dyn FnMut(Progress),
    output: &mut dyn FnMut(&str, JitMode, Stream, &str),
) -> Result<ExecRun> {
    let name = kernel.name.as_str();
    let wanted: Vec<&str> = GUEST_MODULES.iter().chain(SHARE_MODULES).copied().collect();
    let modules = bpfmatrix_kernels::resolve_modules(kernel, &wanted)
        .with_context(|| format!("cannot prepare the guest modules of kernel {name}"))?;
    let host: HostFacts = run::host_facts(kernel, progress);
    // modprobe in the guest reads modules.dep, which Debian's packages leave out.
    let mut spec = request.spec.clone();
    match bpfmatrix_kernels::ensure_modules_dep(kernel) {
        Ok(()) => {
            spec.modules_dir = kernel
                .modules_dir
                .as_ref()
                .map(|d| d.to_string_lossy().into_owned())
        }
        Err(e) => progress(Progress::Step {
            kernel: name,
            what: format!("{e:#}: modprobe in the guest will not find the kernel's modules"),
        }),
    }
    let plan = Plan {
        protocol: PROTOCOL_VERSION,
        cases: vec![],
        jit_modes: settings.jit_modes.clone(),
        modules: modules
            .iter()
            .map(bpfmatrix_vm::guest::plan_module_path)
            .collect(),
        result_port: "/dev/ttyS1".to_string(),
        fault: None,
        objects: vec![],
        exec: Some(spec),
    };
    progress(Progress::Step {
        kernel: name,
        what: format!(
            "running {} in {} ({})",
            shell_words(&request.spec.argv),
            kernel.boot_image.display(),
            settings
                .jit_modes
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    });
    let guest = Guest {
        plan: &plan,
        modules: &modules,
        object_files: &[],
        host_share: Some(PathBuf::from("/")),
    };
    let (outcome, restored) = run::boot_guest(kernel, agent, settings, &guest, &mut |event| {
        if let VmEvent::GuestLine(line) = event {
            if let Ok(GuestMessage::Output { jit, stream, text }) =
                serde_json::from_str::<GuestMessage>(&line.text)
            {
                output(name, jit, stream, &text);
            }
        }
        progress(Progress::Vm {
            kernel: name,
            event,
        })
    })?;
    let collected = collect::collect(
        &plan,
        outcome.lines.iter().map(|l| Line {
            text: &l.text,
            truncated: l.truncated,
        }),
    );
    let failure = run::boot_failure(&outcome.end, settings.backend)
        .or_else(|| collected.problems.first().cloned())
        .or_else(|| {
            collected
                .release
                .is_none()
                .then(|| "the guest never said hello".to_string())
        });
    let status = match failure {
        Some(reason) => RunStatus::Failed { reason },
        None => RunStatus::Completed,
    };
    let facts = KernelFacts::decide(
        host.config,
        host.missing_modules,
        &collected.jit_switches,
        &settings.jit_modes,
    );
    let mut run = ExecRun::with_status(name, &kernel.source, &status);
    run.guest_release = collected.release.clone();
    run.restored = restored;
    run.boot_wall_ms = Some(outcome.wall.as_millis() as u64);
    run.warnings = collected.warnings.clone();
    for &jit in &settings.jit_modes {
        let text = |want: Stream| -> String {
            collected
                .output
                .iter()
                .filter(|(j, s, _)| *j == jit && *s == want)
                .map(|(_, _, t)| t.as_str())
                .collect()
        };
        let stdout = text(Stream::Stdout);
        let tests = match request.format {
            Format::Libtest => libtest_results(&stdout),
            Format::Plain => vec![],
        };
        run.cells.push(ExecCell {
            jit,
            exit: collected.exits.get(&jit).cloned(),
            not_applicable: facts.absent(jit).map(str::to_string),
            stderr: text(Stream::Stderr),
            stdout,
            tests,
        });
    }
    Ok(run)
}

/// Writes the commands' output as it comes, whole lines at a time, each line
/// prefixed `[KERNEL] ` when several kernels run (their guests run at once), to
/// the stream it came on.
pub struct LinePrefixer {
    prefix: bool,
    partial: std::sync::Mutex<std::collections::BTreeMap<(String, bool), String>>,
}

impl LinePrefixer {
    pub fn new(prefix: bool) -> LinePrefixer {
        LinePrefixer {
            prefix,
            partial: Default::default(),
        }
    }

    fn emit(stream: Stream, text: &str) {
        use std::io::Write;
        let _ = match stream {
            Stream::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
            Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
        };
    }

    pub fn write(&self, kernel: &str, stream: Stream, text: &str) {
        if !self.prefix {
            return Self::emit(stream, text);
        }
        let key = (kernel.to_string(), stream == Stream::Stdout);
        let mut partial = self.partial.lock().expect("not poisoned");
        let buf = partial.entry(key).or_default();
        buf.push_str(text);
        while let Some(at) = buf.find('\n') {
            let line: String = buf.drain(..=at).collect();
            Self::emit(stream, &format!("[{kernel}] {line}"));
        }
    }

    /// Writes what is left of lines that never ended.
    pub fn finish(&self) {
        let mut partial = self.partial.lock().expect("not poisoned");
        for ((kernel, stdout), rest) in std::mem::take(&mut *partial) {
            if !rest.is_empty() {
                let stream = if stdout {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                Self::emit(stream, &format!("[{kernel}] {rest}\n"));
            }
        }
    }
}

/// One column of the matrix: a kernel that ran, in one JIT mode.
fn columns(m: &ExecMatrix) -> Vec<(&ExecRun, &ExecCell)> {
    m.runs
        .iter()
        .flat_map(|r| r.cells.iter().map(move |c| (r, c)))
        .collect()
}

fn header(m: &ExecMatrix, (run, cell): (&ExecRun, &ExecCell)) -> String {
    let modes = m
        .runs
        .iter()
        .flat_map(|r| &r.cells)
        .any(|c| c.jit != JitMode::Jit);
    if modes {
        format!("{} {}", run.kernel, cell.jit)
    } else {
        run.kernel.clone()
    }
}

/// A row's cell: a test's result, or the exit status with its mark.
fn cell_text(m: &ExecMatrix, row: &str, (run, cell): (&ExecRun, &ExecCell)) -> String {
    if cell.not_applicable.is_some() {
        return "n/a".into();
    }
    if row != m.exit_row() {
        return match cell.tests.iter().find(|(n, _)| n == row) {
            Some((_, TestOutcome::Ok)) => "✓ ok".into(),
            Some((_, TestOutcome::Failed)) => "✗ FAILED".into(),
            Some((_, TestOutcome::Ignored)) => "ignored".into(),
            None => "– not run".into(),
        };
    }
    let mark = match &cell.exit {
        _ if cell.passed() => "✓",
        None => "?",
        Some(_) => "✗",
    };
    let mut text = format!("{mark} {}", cell.exit_text());
    if cell.exit.is_none() && run.status != "completed" {
        text += " (run failed)";
    }
    text
}

/// The lines under a table: each failed run, each mode a kernel lacks, each
/// unavailable kernel, each command that could not start, and the verdict.
fn notes(m: &ExecMatrix) -> Vec<String> {
    let mut notes = Vec::new();
    for run in &m.runs {
        match (run.status.as_str(), &run.reason) {
            ("completed", _) => {}
            (status, reason) => notes.push(format!(
                "{}: {status}: {}",
                run.kernel,
                reason.as_deref().unwrap_or("")
            )),
        }
        for cell in &run.cells {
            if let Some(what) = &cell.not_applicable {
                notes.push(format!("{} {}: n/a, {what}", run.kernel, cell.jit));
            } else if let Some(Exit { error: Some(e), .. }) = &cell.exit {
                notes.push(format!("{} {}: {e}", run.kernel, cell.jit));
            }
            if let Some(Exit {
                output_dropped: n @ 1..,
                ..
            }) = &cell.exit
            {
                notes.push(format!(
                    "{} {}: {n} bytes of output past {} MiB were dropped",
                    run.kernel,
                    cell.jit,
                    bpfmatrix_protocol::MAX_EXEC_OUTPUT_BYTES >> 20
                ));
            }
        }
    }
    notes.push(verdict_line(m));
    notes
}

/// The verdict in one line.
pub fn verdict_line(m: &ExecMatrix) -> String {
    let tested: Vec<&ExecRun> = m.runs.iter().filter(|r| r.tested()).collect();
    let unavailable: Vec<&str> = m
        .runs
        .iter()
        .filter(|r| !r.tested())
        .map(|r| r.kernel.as_str())
        .collect();
    let passed = tested.iter().filter(|r| r.passed()).count();
    let mut line = if tested.is_empty() {
        "NOTHING RUN: no kernel could be had here".to_string()
    } else {
        format!(
            "{}: the command passed on {passed} of {} kernels",
            if m.passed() { "OK" } else { "FAILED" },
            tested.len()
        )
    };
    if !unavailable.is_empty() {
        line += &format!("; unavailable here: {}", unavailable.join(", "));
    }
    line
}

/// The matrix for a terminal: rows by kernel (x mode) columns, then the notes.
pub fn terminal(m: &ExecMatrix) -> String {
    let cols = columns(m);
    let rows = m.rows();
    let mut table: Vec<Vec<String>> = vec![std::iter::once(match m.format {
        Format::Plain => "command".to_string(),
        Format::Libtest => "test".to_string(),
    })
    .chain(cols.iter().map(|&c| header(m, c)))
    .collect()];
    for row in &rows {
        // A long command would push every column off the screen: its start
        // names it (the Markdown and HTML reports keep it whole).
        let label = match row.chars().count() {
            n if n > 60 => row.chars().take(59).collect::<String>() + "…",
            _ => row.clone(),
        };
        table.push(
            std::iter::once(label)
                .chain(cols.iter().map(|&c| cell_text(m, row, c)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += line.join("  ").trim_end();
        out.push('\n');
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out += &rule.join("  ");
            out.push('\n');
        }
    }
    for note in notes(m) {
        out += &note;
        out.push('\n');
    }
    out
}

/// The matrix in Markdown (for `$GITHUB_STEP_SUMMARY`).
pub fn markdown(m: &ExecMatrix) -> String {
    let esc = |t: &str| t.replace('|', "\\|").replace('\n', " ");
    let cols = columns(m);
    let mut out = format!("## bpfmatrix exec: `{}`\n\n", shell_words(&m.command));
    out += &format!("**{}**\n\n", verdict_line(m));
    if !cols.is_empty() {
        out += "| ";
        out += match m.format {
            Format::Plain => "command",
            Format::Libtest => "test",
        };
        for &c in &cols {
            out += &format!(" | {}", esc(&header(m, c)));
        }
        out += " |\n|---";
        out += &"|---".repeat(cols.len());
        out += "|\n";
        for row in m.rows() {
            out += &format!("| `{}`", esc(&row));
            for &c in &cols {
                out += &format!(" | {}", esc(&cell_text(m, &row, c)));
            }
            out += " |\n";
        }
        out.push('\n');
    }
    for note in notes(m).iter().rev().skip(1).rev() {
        out += &format!("- {}\n", esc(note));
    }
    out
}

/// The matrix as one self-contained page: each cell's output a hover (its
/// title) away, a mode the kernel lacks greyed.
pub fn html(m: &ExecMatrix) -> String {
    use crate::report::esc;
    let cols = columns(m);
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bpfmatrix exec</title><style>\n\
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #1d1d1f; }\n\
h1 { font-size: 20px; margin: 0 0 4px; } .ok { color: #1a7f37; } .bad { color: #cf222e; }\n\
table { border-collapse: separate; border-spacing: 2px; font-size: 13px; }\n\
th { padding: 2px 6px; white-space: nowrap; } td { padding: 3px 6px; border-radius: 4px; }\n\
td.row { font-family: ui-monospace, monospace; font-size: 12px; background: #f6f8fa; }\n\
td.pass { background: #dafbe1; } td.fail { background: #ffd8d3; } td.none { background: #f6f8fa; color: #6e7781; }\n\
td.na, th.na { background: #eaeef2; color: #8c959f; } td[title] { cursor: help; }\n\
</style></head><body>\n",
    );
    out += &format!(
        "<h1>bpfmatrix exec: <code>{}</code></h1>\n",
        esc(&shell_words(&m.command))
    );
    let class = if m.passed() { "ok" } else { "bad" };
    out += &format!(
        "<p class=\"{class}\"><b>{}</b></p>\n",
        esc(&verdict_line(m))
    );
    if !cols.is_empty() {
        out += "<table><tr><th></th>";
        for &c in &cols {
            let na = if c.1.not_applicable.is_some() {
                " class=\"na\""
            } else {
                ""
            };
            out += &format!("<th{na}>{}</th>", esc(&header(m, c)));
        }
        out += "</tr>\n";
        for row in m.rows() {
            out += &format!("<tr><td class=\"row\">{}</td>", esc(&row));
            for &(run, cell) in &cols {
                let text = cell_text(m, &row, (run, cell));
                let class = match text.chars().next() {
                    _ if cell.not_applicable.is_some() => "na",
                    Some('✓') => "pass",
                    Some('✗') => "fail",
                    _ => "none",
                };
                let title = format!("{}{}", cell.stdout, cell.stderr);
                let cut: String = title
                    .chars()
                    .rev()
                    .take(4000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                out += &format!(
                    "<td class=\"{class}\" title=\"{}\">{}</td>",
                    esc(&cut),
                    esc(&text)
                );
            }
            out += "</tr>\n";
        }
        out += "</table>\n";
    }
    out += "<ul>\n";
    for note in notes(m).iter().rev().skip(1).rev() {
        out += &format!("<li>{}</li>\n", esc(note));
    }
    out += "</ul>\n</body></html>\n";
    out
}

/// The report files [`write_reports`] writes, in its order.
pub const FILES: [&str; 3] = ["exec.json", "exec.md", "exec.html"];

/// Writes `exec.json` (this model, schema [`SCHEMA`]), `exec.md` and
/// `exec.html` into `dir`.
pub fn write_reports(m: &ExecMatrix, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the report folder {}", dir.display()))?;
    let texts = [
        serde_json::to_string_pretty(m)? + "\n",
        markdown(m),
        html(m),
    ];
    FILES
        .iter()
        .zip(texts)
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A cell that exited `code` (none: no exit) having printed `stdout`, read
    /// as `format` says.
    pub(crate) fn cell(jit: JitMode, code: Option<i32>, stdout: &str, format: Format) -> ExecCell {
        ExecCell {
            jit,
            exit: code.map(|code| Exit {
                code: Some(code),
                signal: None,
                error: None,
                output_dropped: 0,
                duration_ms: 5,
            }),
            not_applicable: None,
            stdout: stdout.into(),
            stderr: String::new(),
            tests: match format {
                Format::Libtest => libtest_results(stdout),
                Format::Plain => vec![],
            },
        }
    }

    #[test]
    fn libtests_lines_become_results_and_nothing_else_does() {
        let out = "\nrunning 4 tests\ntest a::one ... ok\ntest two ... FAILED\ntest three ... ignored\ntest four ... ignored, needs root\ntest result: FAILED. 1 passed; 1 failed; 2 ignored\ntest words ... hmm\n";
        assert_eq!(
            libtest_results(out),
            [
                ("a::one".to_string(), TestOutcome::Ok),
                ("two".to_string(), TestOutcome::Failed),
                ("three".to_string(), TestOutcome::Ignored),
                ("four".to_string(), TestOutcome::Ignored),
            ]
        );
    }

    #[test]
    fn a_command_is_shown_as_a_shell_would_take_it() {
        let argv: Vec<String> = ["sh", "-c", "exit 3", "it's"].map(String::from).into();
        assert_eq!(shell_words(&argv), r"sh -c 'exit 3' 'it'\''s'");
    }

    #[test]
    fn a_cell_passes_on_exit_0_without_a_failed_test() {
        let exit = |code| Exit {
            code: Some(code),
            signal: None,
            error: None,
            output_dropped: 0,
            duration_ms: 1,
        };
        let mut cell = ExecCell {
            jit: JitMode::Jit,
            exit: Some(exit(0)),
            not_applicable: None,
            stdout: String::new(),
            stderr: String::new(),
            tests: vec![("t".into(), TestOutcome::Ok)],
        };
        assert!(cell.passed());
        cell.tests.push(("u".into(), TestOutcome::Failed));
        assert!(!cell.passed());
        cell.tests.clear();
        cell.exit = Some(exit(3));
        assert!(!cell.passed());
        assert_eq!(cell.exit_text(), "3");
        cell.exit = None;
        assert!(!cell.passed());
    }

    #[test]
    fn no_command_is_bad_input() {
        let err = ExecRequest::here(vec![], Format::Plain).unwrap_err();
        assert!(err.to_string().starts_with("no command"), "{err}");
        let err = ExecRequest::here(vec!["/tmp/x/test-bin".into()], Format::Plain).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "/tmp/x/test-bin is under the host's /tmp, which the guest does not see"
            ),
            "{err}"
        );
        let req = ExecRequest::here(vec!["true".into()], Format::Plain).unwrap();
        assert!(req.spec.env.iter().all(|(k, _)| k != "TMPDIR"));
    }

    fn matrix(format: Format, cells: Vec<(&str, JitMode, i32, &str)>) -> ExecMatrix {
        let mut runs: Vec<ExecRun> = Vec::new();
        for (kernel, jit, code, stdout) in cells {
            if !runs.iter().any(|r| r.kernel == kernel) {
                let mut r = ExecRun::with_status(kernel, "src", &RunStatus::Completed);
                r.guest_release = Some(format!("{kernel}.0"));
                runs.push(r);
            }
            let run = runs.iter_mut().find(|r| r.kernel == kernel).unwrap();
            run.cells.push(cell(jit, Some(code), stdout, format));
        }
        ExecMatrix {
            schema: SCHEMA.into(),
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            format,
            runs,
        }
    }

    #[test]
    fn a_failing_kernel_shows_its_status_and_fails_the_matrix() {
        let m = matrix(
            Format::Plain,
            vec![("5.10", JitMode::Jit, 0, ""), ("6.1", JitMode::Jit, 3, "")],
        );
        assert!(!m.passed());
        let text = terminal(&m);
        assert!(text.contains("\nsh -c 'exit 3'  ✓ 0   ✗ 3\n"), "{text}");
        assert!(
            text.ends_with("FAILED: the command passed on 1 of 2 kernels\n"),
            "{text}"
        );
        let md = markdown(&m);
        assert!(md.contains("| `sh -c 'exit 3'` | ✓ 0 | ✗ 3 |"), "{md}");
        let page = html(&m);
        assert!(
            page.contains(
                "<td class=\"pass\" title=\"\">✓ 0</td><td class=\"fail\" title=\"\">✗ 3</td>"
            ),
            "{page}"
        );
        let dir = tempfile::tempdir().unwrap();
        let written = write_reports(&m, dir.path()).unwrap();
        assert_eq!(written.len(), 3);
        let back: ExecMatrix =
            serde_json::from_str(&std::fs::read_to_string(&written[0]).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn libtest_output_gives_a_row_per_test_and_one_for_the_exit() {
        let m = matrix(
            Format::Libtest,
            vec![
                (
                    "5.10",
                    JitMode::Jit,
                    0,
                    "test a ... ok\ntest b ... ignored\n",
                ),
                (
                    "6.1",
                    JitMode::Jit,
                    101,
                    "test a ... ok\ntest b ... FAILED\ntest c ... ok\n",
                ),
            ],
        );
        assert_eq!(m.rows(), ["a", "b", "c", "(exit status)"]);
        let text = terminal(&m);
        assert!(
            text.contains("\nb              ignored    ✗ FAILED\n"),
            "{text}"
        );
        assert!(
            text.contains("\nc              – not run  ✓ ok\n"),
            "{text}"
        );
        assert!(!m.passed());
        // Every kernel unavailable is nothing run, not a pass.
        let none = ExecMatrix {
            runs: vec![ExecRun::unavailable("4.16", "src", "no source".into())],
            ..m
        };
        assert!(!none.passed());
        assert!(verdict_line(&none).starts_with("NOTHING RUN"));
    }
}
