//! GitHub Actions annotations: one `::error` workflow command per cell that fails
//! a `run`, `check` or `exec` (and per kernel run that failed), so a pull request
//! shows each failure where it belongs: a user program's refusal at the line of
//! its C source, read from the object's BTF line info ([`program_sources`]).
//!
//! What fails is decided elsewhere ([`crate::matrix::Cell::passes`],
//! [`crate::programs::ProgramCell::passes`], [`KernelRun::agrees`],
//! [`Matrix::all_agree`], [`ExecMatrix::passed`]); this module only says it, with
//! a line for each way those verdicts fail, so there are lines exactly when the
//! command exits 1.

use crate::collect::Exit;
use crate::exec::{shell_words, ExecCell, ExecMatrix, ExecRun, TestOutcome};
use crate::expect::describe_expected;
use crate::matrix::{Cell, KernelRun, Matrix, RunStatus, Verdict};
use crate::objects::UserObject;
use crate::programs::ProgramCell;
use anyhow::{anyhow, bail, Context, Result};
use bpfmatrix_protocol::{verifier_log, JitMode, Outcome};
use object::{Object as _, ObjectSection as _};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The longest message, in characters: GitHub shows an annotation's message in
/// a narrow box, and the reports hold the whole story.
const MAX_MESSAGE_CHARS: usize = 400;
/// The longest name in a title (a long command would swamp the kernel and mode).
const MAX_NAME_CHARS: usize = 80;
/// The longest quote of the verifier's or the command's own words.
const MAX_QUOTE_CHARS: usize = 160;

/// Where a program's C source begins, as the object's BTF line info records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLine {
    /// The file as clang recorded it (absolute when clang was given a relative
    /// path: it prefixes the compile directory).
    pub file: String,
    pub line: u32,
}

/// The lines for `bpfmatrix run` and `check` (whose `objects` are the ones it was
/// given; empty for `run`): one per failing case or program cell, one per kernel
/// run that failed, one per other reason [`Matrix::all_agree`] is false. Program
/// cells point at the program's source line when the object has BTF line info,
/// else at the object (a `::warning` says so when its line info could not be
/// read); paths under `workspace` (GITHUB_WORKSPACE) are made relative to it, as
/// GitHub wants them. A program of an object not in `objects` names no file.
pub fn github_lines(
    matrix: &Matrix,
    objects: &[UserObject],
    workspace: Option<&Path>,
) -> Vec<String> {
    let mut places = Places::new(objects, workspace);
    let mut lines = Vec::new();
    for run in matrix.runs.iter().filter(|r| r.tested()) {
        let before = lines.len();
        if let RunStatus::Failed { reason } = &run.status {
            lines.push(error(
                None,
                &title(&run.kernel, None, None),
                &format!("the kernel run failed: {reason}"),
            ));
        }
        for cell in run.cells.iter().filter(|c| !c.passes()) {
            if covered_by_run(run, cell.record.is_some()) {
                continue;
            }
            lines.push(error(
                None,
                &title(&run.kernel, Some(cell.jit), Some(cell.case.as_str())),
                &case_message(cell),
            ));
        }
        for cell in run.programs.iter().filter(|c| !c.passes()) {
            if covered_by_run(run, cell.record.is_some()) {
                continue;
            }
            let (place, warning) = places.of(&cell.object, &cell.program);
            lines.extend(warning);
            let name = format!("{}:{}", cell.object, cell.program);
            lines.push(error(
                place.as_ref(),
                &title(&run.kernel, Some(cell.jit), Some(&name)),
                &program_message(cell),
            ));
        }
        if lines.len() == before && !run.agrees() {
            // Completed and every cell passes, yet the kernel does not agree:
            // the one reason left is that it has none of the modes asked for.
            lines.push(error(
                None,
                &title(&run.kernel, None, None),
                &no_mode_message(run),
            ));
        }
    }
    if !matrix.runs.iter().any(KernelRun::tested) {
        let why: Vec<String> = matrix
            .runs
            .iter()
            .map(|r| match r.status.reason() {
                Some(reason) => format!("{} unavailable ({reason})", r.kernel),
                None => format!("{} unavailable", r.kernel),
            })
            .collect();
        lines.push(error(
            None,
            "bpfmatrix",
            &if why.is_empty() {
                "no kernel was run".to_string()
            } else {
                format!("no kernel could be tested here: {}", why.join("; "))
            },
        ));
    }
    for gap in matrix.coverage_gaps() {
        lines.push(error(
            None,
            &title(gap_kernel(&gap), None, None),
            &gap.to_string(),
        ));
    }
    lines
}

/// The lines for `bpfmatrix exec`: one per failed test (`--format libtest`) and
/// per command that did not exit 0 in a kernel x JIT mode, one per kernel run
/// that failed, and one per other reason [`ExecMatrix::passed`] is false.
pub fn github_exec_lines(exec: &ExecMatrix) -> Vec<String> {
    let command = shell_words(&exec.command);
    let mut lines = Vec::new();
    for run in exec.runs.iter().filter(|r| r.tested()) {
        let before = lines.len();
        let completed = run.status == RunStatus::Completed.as_str();
        if !completed {
            lines.push(error(
                None,
                &title(&run.kernel, None, None),
                &format!(
                    "the kernel run {}: {}",
                    run.status,
                    run.reason.as_deref().unwrap_or("no reason given")
                ),
            ));
        }
        for cell in run
            .cells
            .iter()
            .filter(|c| c.not_applicable.is_none() && !c.passed())
        {
            for (test, _) in cell.tests.iter().filter(|(_, o)| *o == TestOutcome::Failed) {
                lines.push(error(
                    None,
                    &title(&run.kernel, Some(cell.jit), Some(test)),
                    "expected the test to pass, libtest said FAILED",
                ));
            }
            let exited_0 = cell.exit.as_ref().is_some_and(|e| e.code == Some(0));
            // A cell without an exit in a failed run is the run's line's to say.
            if !exited_0 && (completed || cell.exit.is_some()) {
                lines.push(error(
                    None,
                    &title(&run.kernel, Some(cell.jit), Some(&command)),
                    &exit_message(cell),
                ));
            }
        }
        if lines.len() == before && !run.passed() {
            lines.push(error(
                None,
                &title(&run.kernel, None, None),
                &exec_no_mode_message(run),
            ));
        }
    }
    if !exec.runs.iter().any(ExecRun::tested) {
        lines.push(error(None, "bpfmatrix", &crate::exec::verdict_line(exec)));
    }
    lines
}

/// Where each program of a BPF object begins, by program name: the first line
/// info record of its function. That is the function's signature when its first
/// instruction has no line of its own (clang then records the signature's), else
/// the line of that first instruction. Programs without line info (an object
/// compiled without `-g`) are left out; an error when the bytes are not a BPF
/// object or its BTF is damaged.
pub fn program_sources(bytes: &[u8]) -> Result<BTreeMap<String, SourceLine>> {
    let obj = aya_obj::Object::parse(bytes)
        .map_err(|e| anyhow!("not a usable BPF object (truncated or damaged?): {e}"))?;
    let elf = object::File::parse(bytes).context("not an ELF file")?;
    let Some(btf) = elf.section_by_name(".BTF") else {
        return Ok(BTreeMap::new());
    };
    let btf = btf.data().context("cannot read the .BTF section")?;
    let strings = btf_strings(btf)?;
    let mut sources = BTreeMap::new();
    for (name, program) in &obj.programs {
        let Some(first) = obj.functions.get(&program.function_key()).and_then(|f| {
            f.line_info
                .line_info
                .iter()
                // Line 0 is clang's "no line" (compiler-made code).
                .filter(|l| l.line_col >> 10 != 0)
                .min_by_key(|l| l.insn_off)
        }) else {
            continue;
        };
        let file = btf_string(strings, first.file_name_off)
            .with_context(|| format!("the line info of program {name}"))?;
        sources.insert(
            name.clone(),
            SourceLine {
                file,
                line: first.line_col >> 10,
            },
        );
    }
    Ok(sources)
}

/// `path` as GitHub wants it for a repository's file: relative to `workspace`
/// when it lies under it (".." resolved first, as clang records
/// "/ws/build/../src/x.c"); anything else, relative paths included, as it is.
pub fn workspace_relative(path: &str, workspace: Option<&Path>) -> String {
    let p = Path::new(path);
    let Some(ws) = workspace.filter(|_| p.is_absolute()) else {
        return path.to_string();
    };
    let normal = normalize(p);
    let under = |ws: &Path| {
        normal
            .strip_prefix(normalize(ws))
            .ok()
            .filter(|rest| !rest.as_os_str().is_empty())
            .map(|rest| rest.display().to_string())
    };
    // A workspace reached through a symlink names the same files by another path.
    under(ws)
        .or_else(|| {
            let real_ws = ws.canonicalize().ok()?;
            let real = normal.canonicalize().ok()?;
            real.strip_prefix(real_ws)
                .ok()
                .map(|rest| rest.display().to_string())
        })
        .unwrap_or_else(|| path.to_string())
}

/// A workflow command's message, escaped as GitHub's runner unescapes it.
pub fn escape_message(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value (file, title), escaped as GitHub's runner
/// unescapes it: a message's escapes, and `:` and `,`, which end a property.
pub fn escape_property(s: &str) -> String {
    escape_message(s).replace(':', "%3A").replace(',', "%2C")
}

/// What an annotation points at: a file, and its line when known.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Place {
    file: String,
    line: Option<u32>,
}

/// Each user object's programs' places, read once per object and only for
/// objects with a failing program.
struct Places<'a> {
    objects: &'a [UserObject],
    workspace: Option<&'a Path>,
    /// By object name; `None` when its line info could not be read.
    read: BTreeMap<String, Option<BTreeMap<String, SourceLine>>>,
}

impl<'a> Places<'a> {
    fn new(objects: &'a [UserObject], workspace: Option<&'a Path>) -> Self {
        Places {
            objects,
            workspace,
            read: BTreeMap::new(),
        }
    }

    /// Where `program` of the object named `object` is, and a warning the first
    /// time its object's line info could not be read (its failures then point at
    /// the object: an unreadable BTF must not hide them).
    fn of(&mut self, object: &str, program: &str) -> (Option<Place>, Option<String>) {
        let Some(user) = self.objects.iter().find(|o| o.spec.name == object) else {
            return (None, None);
        };
        let object_file = workspace_relative(&user.file.display().to_string(), self.workspace);
        let mut warning = None;
        let sources = self.read.entry(object.to_string()).or_insert_with(|| {
            let read = std::fs::read(&user.file)
                .with_context(|| format!("cannot read {}", user.file.display()))
                .and_then(|bytes| program_sources(&bytes));
            read.map_err(|e| {
                let text = format!(
                    "cannot read the BTF line info of {}: {e:#}; its failures point at the object",
                    user.file.display()
                );
                warning = Some(format!(
                    "::warning file={},title={}::{}",
                    escape_property(&object_file),
                    escape_property("bpfmatrix"),
                    escape_message(&one_line(&text, MAX_MESSAGE_CHARS))
                ));
            })
            .ok()
        });
        let place = match sources.as_ref().and_then(|s| s.get(program)) {
            Some(src) => Place {
                file: workspace_relative(&src.file, self.workspace),
                line: Some(src.line),
            },
            None => Place {
                file: object_file,
                line: None,
            },
        };
        (Some(place), warning)
    }
}

/// One `::error` workflow command.
fn error(place: Option<&Place>, title: &str, message: &str) -> String {
    let mut props = Vec::new();
    if let Some(p) = place {
        props.push(format!("file={}", escape_property(&p.file)));
        if let Some(line) = p.line {
            props.push(format!("line={line}"));
        }
    }
    props.push(format!("title={}", escape_property(title)));
    format!(
        "::error {}::{}",
        props.join(","),
        escape_message(&one_line(message, MAX_MESSAGE_CHARS))
    )
}

/// "bpfmatrix: KERNEL [MODE] NAME", with what is known.
fn title(kernel: &str, jit: Option<JitMode>, name: Option<&str>) -> String {
    let mut t = format!("bpfmatrix: {kernel}");
    if let Some(jit) = jit {
        t += &format!(" [{jit}]");
    }
    if let Some(name) = name {
        t.push(' ');
        t += &one_line(name, MAX_NAME_CHARS);
    }
    t
}

/// A cell without its record in a failed run: the run's own line says why.
fn covered_by_run(run: &KernelRun, has_record: bool) -> bool {
    matches!(run.status, RunStatus::Failed { .. }) && !has_record
}

fn case_message(cell: &Cell) -> String {
    let expected = cell
        .expected
        .as_ref()
        .map(|e| describe_expected(&e.outcome));
    let refusal = match cell.record.as_ref().map(|r| &r.outcome) {
        Some(Outcome::Rejected { verifier_tail, .. }) => refusal_line(verifier_tail),
        _ => None,
    };
    verdict_message(&cell.verdict, expected, refusal)
}

fn program_message(cell: &ProgramCell) -> String {
    let expected = cell.expected.as_ref().map(|e| {
        format!(
            "{} ({})",
            if e.accept { "accepted" } else { "a refusal" },
            e.because
        )
    });
    let refusal = cell.record.as_ref().and_then(|r| match &r.outcome {
        Outcome::Rejected { verifier_tail, .. } => {
            refusal_line(&r.verifier_log).or_else(|| refusal_line(verifier_tail))
        }
        _ => None,
    });
    verdict_message(&cell.verdict, expected, refusal)
}

/// A failing verdict in words: what was expected and what happened, with the
/// verifier's refusal when the verdict does not quote it already.
fn verdict_message(verdict: &Verdict, expected: Option<String>, refusal: Option<String>) -> String {
    let mut message = match verdict {
        Verdict::Disagrees { differences } => differences.join("; "),
        Verdict::NoAnswer { reason } => match expected {
            Some(e) => format!("expected {e}, got no answer: {reason}"),
            None => format!("no answer: {reason}"),
        },
        // Passing cells get no line; named all the same should one be asked for.
        Verdict::Agrees | Verdict::NotApplicable { .. } => verdict.as_str().to_string(),
    };
    if let Some(words) = refusal.filter(|w| !message.contains(w.as_str())) {
        message += &format!("; the verifier said \"{words}\"");
    }
    message
}

/// The verifier's refusal: its last meaningful line (statistics dropped).
fn refusal_line(log: &str) -> Option<String> {
    let line = verifier_log::tail(log, 1, usize::MAX);
    let line = line.trim();
    (!line.is_empty()).then(|| one_line(line, MAX_QUOTE_CHARS))
}

fn no_mode_message(run: &KernelRun) -> String {
    let (mut modes, _) = run.plan();
    if modes.is_empty() {
        modes = run.programs.iter().map(|p| p.jit).collect();
        modes.dedup();
    }
    let lacks: Vec<String> = modes
        .iter()
        .filter_map(|&m| run.facts.absent(m).map(|what| format!("{m}: {what}")))
        .collect();
    if lacks.is_empty() {
        "the kernel does not agree, though none of its cells fails".to_string()
    } else {
        format!(
            "the kernel has none of the JIT modes asked for ({})",
            lacks.join("; ")
        )
    }
}

fn exit_message(cell: &ExecCell) -> String {
    let mut m = format!("expected exit status 0, got {}", cell.exit_text());
    match &cell.exit {
        None => m += ": the guest never said how the command ended",
        Some(Exit { error: Some(e), .. }) => m += &format!(": {e}"),
        Some(_) => {}
    }
    let said = last_words(&cell.stderr).or_else(|| last_words(&cell.stdout));
    if let Some(words) = said {
        m += &format!("; its output ends \"{words}\"");
    }
    m
}

fn exec_no_mode_message(run: &ExecRun) -> String {
    let lacks: Vec<String> = run
        .cells
        .iter()
        .filter_map(|c| c.not_applicable.as_ref().map(|w| format!("{}: {w}", c.jit)))
        .collect();
    if lacks.is_empty() {
        "the guest ran the command in no JIT mode".to_string()
    } else {
        format!(
            "the command ran in none of the kernel's JIT modes ({})",
            lacks.join("; ")
        )
    }
}

/// The last non-empty line of a command's output, shortened.
fn last_words(output: &str) -> Option<String> {
    output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| one_line(l, MAX_QUOTE_CHARS))
}

fn gap_kernel(gap: &crate::merge::Gap) -> &str {
    use crate::merge::Gap;
    match gap {
        Gap::NoReport { kernel }
        | Gap::NoMode { kernel, .. }
        | Gap::Unavailable { kernel, .. }
        | Gap::Missing { kernel, .. } => kernel,
    }
}

/// `text` on one line (every run of whitespace, line breaks included, one
/// space), at most `max` characters, the cut marked.
fn one_line(text: &str, max: usize) -> String {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() <= max {
        return joined;
    }
    let mut cut: String = joined.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// ".." and "." resolved without asking the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The string section of a `.BTF` section (little-endian, as every BPF object
/// bpfmatrix accepts).
fn btf_strings(btf: &[u8]) -> Result<&[u8]> {
    const HEADER_LEN: usize = 24;
    if btf.len() < HEADER_LEN {
        bail!(
            "the .BTF section is {} bytes, shorter than its header",
            btf.len()
        );
    }
    let u32_at = |at: usize| u32::from_le_bytes(btf[at..at + 4].try_into().unwrap()) as usize;
    let magic = u16::from_le_bytes([btf[0], btf[1]]);
    if magic != 0xeb9f {
        bail!("the .BTF section does not start with BTF's magic 0xeb9f (found {magic:#06x})");
    }
    let (hdr_len, str_off, str_len) = (u32_at(4), u32_at(16), u32_at(20));
    let start = hdr_len
        .checked_add(str_off)
        .filter(|s| s.checked_add(str_len).is_some_and(|end| end <= btf.len()));
    let Some(start) = start else {
        bail!(
            "the .BTF section's strings (at {hdr_len}+{str_off}, {str_len} bytes) lie past its end ({} bytes)",
            btf.len()
        );
    };
    Ok(&btf[start..start + str_len])
}

fn btf_string(strings: &[u8], offset: u32) -> Result<String> {
    let rest = strings.get(offset as usize..).ok_or_else(|| {
        anyhow!(
            "file name offset {offset} lies past the BTF strings ({} bytes)",
            strings.len()
        )
    })?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| anyhow!("the BTF string at {offset} has no end"))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ExecCell, Format, SCHEMA};
    use crate::matrix::tests::{agreeing_record, always_on, collected, complete_except, RELEASE};
    use crate::matrix::HostFacts;
    use crate::programs::ProgramRules;
    use bpfmatrix_protocol::{CaseId, ProgramRecord};
    use std::process::Command;

    fn manifest_dir() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    /// `src` compiled for BPF into `out` (with `-g`: with BTF and its line info).
    /// A missing clang fails the test: the location tests are worth nothing
    /// without a real object.
    fn compile(src: &Path, out: &Path, debug: bool) {
        let mut clang = Command::new("clang");
        clang.args(["-O2", "-target", "bpf"]);
        if debug {
            clang.arg("-g");
        }
        let result = clang
            // Debian keeps asm/types.h in the multiarch folder.
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run clang, which this test needs to build a BPF object (apt-get install clang libbpf-dev): {e}")
            });
        assert!(
            result.status.success(),
            "clang failed on {} ({}): {}",
            src.display(),
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }

    /// The 1-based line of `src` that starts with `start`.
    fn line_of(src: &Path, start: &str) -> u32 {
        let text = std::fs::read_to_string(src).unwrap();
        let n = text
            .lines()
            .position(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line of {} starts with {start:?}", src.display()));
        n as u32 + 1
    }

    fn clock_c() -> PathBuf {
        manifest_dir().join("tests/objects/clock.c")
    }

    #[test]
    fn messages_and_properties_are_escaped_as_github_unescapes_them() {
        assert_eq!(
            escape_message("50% done: a,b\r\nnext %0A"),
            "50%25 done: a,b%0D%0Anext %250A"
        );
        assert_eq!(
            escape_property("bpfmatrix: 6.1 [jit] a.o:p,q 50%\n"),
            "bpfmatrix%3A 6.1 [jit] a.o%3Ap%2Cq 50%25%0A"
        );
        let place = Place {
            file: "src/a,b.c".into(),
            line: Some(7),
        };
        assert_eq!(
            error(Some(&place), "bpfmatrix: 6.1", "x: 1%"),
            "::error file=src/a%2Cb.c,line=7,title=bpfmatrix%3A 6.1::x: 1%25"
        );
        assert_eq!(
            error(None, "bpfmatrix", "a\nb"),
            "::error title=bpfmatrix::a b"
        );
    }

    #[test]
    fn a_message_is_one_line_of_bounded_length() {
        let long = format!("first\nsecond\r\n\t{}", "x".repeat(1000));
        let line = one_line(&long, MAX_MESSAGE_CHARS);
        assert!(line.starts_with("first second xx"), "{line}");
        assert_eq!(line.chars().count(), MAX_MESSAGE_CHARS);
        assert!(line.ends_with('…'));
        assert_eq!(one_line("short", MAX_MESSAGE_CHARS), "short");
    }

    #[test]
    fn paths_under_the_workspace_become_relative_and_others_stay() {
        let ws = Some(Path::new("/ws/repo"));
        assert_eq!(workspace_relative("/ws/repo/src/x.c", ws), "src/x.c");
        assert_eq!(
            workspace_relative("/ws/repo/build/../src/./x.c", ws),
            "src/x.c"
        );
        assert_eq!(
            workspace_relative("/ws/repo/src/x.c", Some(Path::new("/ws/repo/"))),
            "src/x.c"
        );
        assert_eq!(
            workspace_relative("/ws/repository/x.c", ws),
            "/ws/repository/x.c"
        );
        assert_eq!(workspace_relative("/elsewhere/x.c", ws), "/elsewhere/x.c");
        assert_eq!(workspace_relative("src/x.c", ws), "src/x.c");
        assert_eq!(
            workspace_relative("/ws/repo/src/x.c", None),
            "/ws/repo/src/x.c"
        );
    }

    #[test]
    fn a_program_is_found_at_its_function_in_the_c_source() {
        let dir = tempfile::tempdir().unwrap();
        let obj = dir.path().join("clock.o");
        compile(&clock_c(), &obj, true);
        let sources = program_sources(&std::fs::read(&obj).unwrap()).unwrap();
        for program in ["count_packets", "stamp_tai"] {
            let src = sources
                .get(program)
                .unwrap_or_else(|| panic!("no line info for {program}: {sources:?}"));
            assert!(src.file.ends_with("/clock.c"), "{src:?}");
            assert_eq!(
                src.line,
                line_of(&clock_c(), &format!("int {program}(")),
                "{program}"
            );
        }
    }

    /// A program with no map: one aya reads without BTF, so it can be compiled
    /// without `-g` and still be checked.
    const NO_MAPS_C: &str = "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n\nSEC(\"socket\")\nint keep_length(struct __sk_buff *skb)\n{\n\treturn skb->len;\n}\n\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n";

    #[test]
    fn an_object_without_line_info_is_pointed_at_itself() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("plain.c");
        std::fs::write(&src, NO_MAPS_C).unwrap();
        // With -g the same source has a line in the function (its first
        // instruction's: it has one of its own): only -g makes the difference.
        let with_g = dir.path().join("with_g.o");
        compile(&src, &with_g, true);
        let sources = program_sources(&std::fs::read(&with_g).unwrap()).unwrap();
        let line = sources.get("keep_length").map(|s| s.line);
        let (start, end) = (line_of(&src, "int keep_length("), line_of(&src, "}"));
        assert!(
            line.is_some_and(|l| (start..=end).contains(&l)),
            "{line:?} not in {start}..={end}"
        );
        let obj = dir.path().join("plain.o");
        compile(&src, &obj, false);
        assert_eq!(
            program_sources(&std::fs::read(&obj).unwrap()).unwrap(),
            BTreeMap::new()
        );

        let objects = crate::objects::load(std::slice::from_ref(&obj)).unwrap();
        let mut run = KernelRun::empty("6.1", "src", RunStatus::Completed);
        run.guest_release = Some(RELEASE.into());
        let record = program_record(
            "plain.o",
            "keep_length",
            Outcome::Rejected {
                step: "load keep_length".into(),
                errno: 13,
                verifier_tail: "R1 invalid mem access 'scalar'".into(),
            },
        );
        judge(&mut run, &objects, vec![record]);
        let lines = github_lines(&Matrix::from_runs([run]), &objects, None);
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with(&format!(
                "::error file={},title=bpfmatrix%3A 6.1 [jit] plain.o%3Akeep_length::",
                escape_property(&obj.display().to_string())
            )),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn an_object_whose_line_info_cannot_be_read_is_pointed_at_with_one_warning() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("plain.c");
        std::fs::write(&src, NO_MAPS_C).unwrap();
        let obj = dir.path().join("plain.o");
        compile(&src, &obj, true);
        let objects = crate::objects::load(std::slice::from_ref(&obj)).unwrap();
        // Gone between the run and the annotations (a workspace cleaned up...).
        std::fs::remove_file(&obj).unwrap();
        let mut run = KernelRun::empty("6.1", "src", RunStatus::Completed);
        run.guest_release = Some(RELEASE.into());
        let refused = |jit| ProgramRecord {
            jit,
            ..program_record(
                "plain.o",
                "keep_length",
                Outcome::Rejected {
                    step: "load keep_length".into(),
                    errno: 13,
                    verifier_tail: "R1 invalid mem access 'scalar'".into(),
                },
            )
        };
        let specs: Vec<_> = objects.iter().map(|o| o.spec.clone()).collect();
        let records = JitMode::ALL
            .into_iter()
            .map(|m| {
                (
                    ("plain.o".to_string(), "keep_length".to_string(), m),
                    refused(m),
                )
            })
            .collect();
        run.judge_programs(&specs, &JitMode::ALL, records, &ProgramRules::default());
        let lines = github_lines(&Matrix::from_runs([run]), &objects, None);
        let file = escape_property(&obj.display().to_string());
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with(&format!(
                "::warning file={file},title=bpfmatrix::cannot read the BTF line info of {}: cannot read {}",
                obj.display(),
                obj.display()
            )),
            "{}",
            lines[0]
        );
        for (line, mode) in lines[1..].iter().zip(["jit", "interpreter"]) {
            assert!(
                line.starts_with(&format!(
                    "::error file={file},title=bpfmatrix%3A 6.1 [{mode}] plain.o%3Akeep_length::"
                )),
                "{line}"
            );
        }
    }

    fn program_record(object: &str, program: &str, outcome: Outcome) -> ProgramRecord {
        ProgramRecord {
            object: object.into(),
            program: program.into(),
            section: "socket".into(),
            jit: JitMode::Jit,
            outcome,
            verifier_log: String::new(),
            log_cut_bytes: None,
            cost: None,
            duration_ms: 2,
        }
    }

    /// Gives `run` its program cells in the JIT mode, judged without rules.
    fn judge(run: &mut KernelRun, objects: &[UserObject], records: Vec<ProgramRecord>) {
        let specs: Vec<_> = objects.iter().map(|o| o.spec.clone()).collect();
        let records = records
            .into_iter()
            .map(|r| ((r.object.clone(), r.program.clone(), r.jit), r))
            .collect();
        run.judge_programs(&specs, &[JitMode::Jit], records, &ProgramRules::default());
    }

    #[test]
    fn a_refused_program_is_annotated_at_its_source_with_the_verifiers_words() {
        let dir = tempfile::tempdir().unwrap();
        let obj = dir.path().join("clock.o");
        compile(&clock_c(), &obj, true);
        let objects = crate::objects::load(std::slice::from_ref(&obj)).unwrap();
        let mut run = KernelRun::empty("5.10", "src", RunStatus::Completed);
        run.guest_release = Some("5.10.0-30-amd64".into());
        let mut refused = program_record(
            "clock.o",
            "stamp_tai",
            Outcome::Rejected {
                step: "load stamp_tai".into(),
                errno: 22,
                verifier_tail: "invalid func unknown#208".into(),
            },
        );
        refused.verifier_log = "0: R1=ctx(off=0,imm=0) R10=fp0\n0: (85) call unknown#208\ninvalid func unknown#208\nprocessed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n".into();
        let accepted = program_record("clock.o", "count_packets", Outcome::Accepted);
        judge(&mut run, &objects, vec![refused, accepted]);
        let matrix = Matrix::from_runs([run]);
        let lines = github_lines(&matrix, &objects, Some(manifest_dir()));
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let line = line_of(&clock_c(), "int stamp_tai(");
        assert!(
            lines[0].starts_with(&format!(
                "::error file=tests/objects/clock.c,line={line},title=bpfmatrix%3A 5.10 [jit] clock.o%3Astamp_tai::expected accepted ("
            )),
            "{}",
            lines[0]
        );
        assert!(
            lines[0]
                .contains("got rejected at load stamp_tai, EINVAL, \"invalid func unknown#208\""),
            "{}",
            lines[0]
        );
        // Quoted once: the verdict already has the verifier's words.
        assert_eq!(lines[0].matches("invalid func unknown#208").count(), 1);
    }

    #[test]
    fn the_verifiers_refusal_is_added_when_the_verdict_does_not_quote_it() {
        let verdict = Verdict::Disagrees {
            differences: vec!["verifier message: expected it to contain \"R2 !read_ok\"".into()],
        };
        let log = "0: (bf) r0 = r2\nR2 !read_ok\nprocessed 1 insns (limit 1000000)\n";
        assert_eq!(
            verdict_message(&verdict, None, refusal_line("R0 invalid mem access\nprocessed 2 insns")),
            "verifier message: expected it to contain \"R2 !read_ok\"; the verifier said \"R0 invalid mem access\""
        );
        assert_eq!(
            verdict_message(&verdict, None, refusal_line(log)),
            "verifier message: expected it to contain \"R2 !read_ok\""
        );
        let no_answer = Verdict::NoAnswer {
            reason: "the guest sent no record for it".into(),
        };
        assert_eq!(
            verdict_message(&no_answer, Some("accepted, 33 tail calls".into()), None),
            "expected accepted, 33 tail calls, got no answer: the guest sent no record for it"
        );
    }

    #[test]
    fn only_disagreeing_and_unanswered_cells_annotate() {
        let second = CaseId::Bpf2bpfControl;
        let mut interp_chain =
            agreeing_record(CaseId::TailCallChain, JitMode::Interpreter, RELEASE);
        interp_chain.measured.tail_calls = Some(32);
        let records = vec![
            agreeing_record(CaseId::TailCallChain, JitMode::Jit, RELEASE),
            interp_chain,
            agreeing_record(second, JitMode::Interpreter, RELEASE),
        ];
        let answered = KernelRun::judge(
            "6.1",
            "src",
            &[CaseId::TailCallChain, second],
            &JitMode::ALL,
            collected(records),
            None,
            HostFacts::default(),
        );
        // Its interpreter cell is not applicable, its JIT cell agrees.
        let without_interpreter = always_on("5.4", &[CaseId::TailCallChain]);
        let verdicts: Vec<&str> = answered
            .cells
            .iter()
            .chain(&without_interpreter.cells)
            .map(|c| c.verdict.as_str())
            .collect();
        assert_eq!(
            verdicts,
            [
                "agrees",
                "no_answer",
                "disagrees",
                "agrees",
                "agrees",
                "not_applicable"
            ]
        );
        let matrix = Matrix::from_runs([answered, without_interpreter]);
        let lines = github_lines(&matrix, &[], None);
        assert_eq!(
            lines,
            [
                "::error title=bpfmatrix%3A 6.1 [jit] bpf2bpf.control::no answer: the guest sent no record for it",
                "::error title=bpfmatrix%3A 6.1 [interpreter] tail_call.chain::tail calls: expected 33, got 32",
            ]
        );
    }

    #[test]
    fn there_are_lines_exactly_when_the_matrix_fails() {
        let unavailable = || {
            KernelRun::unavailable(
                "4.16",
                "x",
                "no source".into(),
                &[CaseId::TailCallChain],
                &JitMode::ALL,
            )
        };
        let crashed = KernelRun::judge(
            "6.6",
            "src",
            &[CaseId::TailCallChain],
            &[JitMode::Jit],
            collected(vec![]),
            Some("guest kernel panicked".into()),
            HostFacts::default(),
        );
        let mut no_mode = always_on("5.4", &[CaseId::TailCallChain]);
        no_mode.facts.modes.push(crate::modes::ModeFact {
            jit: JitMode::Jit,
            status: crate::modes::ModeStatus::Absent {
                what: "no JIT in this kernel (CONFIG_BPF_JIT is not set)".into(),
                evidence: vec![],
            },
        });
        for c in no_mode.cells.iter_mut() {
            c.verdict = Verdict::NotApplicable { reason: "x".into() };
        }
        let cases: Vec<(Vec<KernelRun>, Vec<&str>)> = vec![
            (vec![complete_except("6.1", &[]), unavailable()], vec![]),
            (
                vec![complete_except("6.1", &[]), crashed],
                // One line for the run: its cells without a record say the same.
                vec!["::error title=bpfmatrix%3A 6.6::the kernel run failed: guest kernel panicked"],
            ),
            (
                vec![unavailable()],
                vec!["::error title=bpfmatrix::no kernel could be tested here: 4.16 unavailable (no source)"],
            ),
            (
                vec![no_mode],
                vec!["::error title=bpfmatrix%3A 5.4::the kernel has none of the JIT modes asked for (jit: no JIT in this kernel (CONFIG_BPF_JIT is not set); interpreter: no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y))"],
            ),
        ];
        for (runs, want) in cases {
            let matrix = Matrix::from_runs(runs);
            let lines = github_lines(&matrix, &[], None);
            assert_eq!(lines, want);
            assert_eq!(lines.is_empty(), matrix.all_agree(), "{lines:#?}");
        }
    }

    fn exec_cell(jit: JitMode, code: Option<i32>, stdout: &str) -> ExecCell {
        crate::exec::tests::cell(jit, code, stdout, Format::Libtest)
    }

    fn exec_run(kernel: &str, status: &str, cells: Vec<ExecCell>) -> ExecRun {
        ExecRun {
            kernel: kernel.into(),
            source: "src".into(),
            status: status.into(),
            reason: (status != "completed").then(|| format!("{kernel} {status} here")),
            guest_release: None,
            restored: false,
            boot_wall_ms: None,
            cells,
            warnings: vec![],
        }
    }

    #[test]
    fn exec_lines_name_each_failed_test_exit_and_run() {
        let mut na = exec_cell(JitMode::Interpreter, None, "");
        na.not_applicable = Some("no interpreter in this kernel".into());
        let runs = vec![
            exec_run(
                "5.10",
                "completed",
                vec![exec_cell(JitMode::Jit, Some(0), "test a ... ok\n")],
            ),
            exec_run(
                "6.1",
                "completed",
                vec![exec_cell(
                    JitMode::Jit,
                    Some(101),
                    "test a ... ok\ntest b ... FAILED\n\ntest result: FAILED. 1 passed; 1 failed\n",
                )],
            ),
            exec_run(
                "6.6",
                "completed",
                vec![
                    exec_cell(JitMode::Jit, Some(0), "test a ... ok\n"),
                    na.clone(),
                ],
            ),
            exec_run("4.19", "failed", vec![exec_cell(JitMode::Jit, None, "")]),
            exec_run("4.16", "unavailable", vec![]),
        ];
        let m = ExecMatrix {
            schema: SCHEMA.into(),
            command: vec![
                "target/debug/deps/t-1".into(),
                "--test-threads".into(),
                "1".into(),
            ],
            format: Format::Libtest,
            runs,
        };
        assert_eq!(
            github_exec_lines(&m),
            [
                "::error title=bpfmatrix%3A 6.1 [jit] b::expected the test to pass, libtest said FAILED",
                "::error title=bpfmatrix%3A 6.1 [jit] target/debug/deps/t-1 --test-threads 1::expected exit status 0, got 101; its output ends \"test result: FAILED. 1 passed; 1 failed\"",
                "::error title=bpfmatrix%3A 4.19::the kernel run failed: 4.19 failed here",
            ]
        );
        assert!(!m.passed());
        // Passing everywhere it could run: no line, as exec exits 0.
        let ok = ExecMatrix {
            runs: vec![m.runs[0].clone(), m.runs[2].clone(), m.runs[4].clone()],
            ..m.clone()
        };
        assert!(ok.passed());
        assert_eq!(github_exec_lines(&ok), Vec::<String>::new());
        // Only modes the kernel lacks, or nothing could be had: a line each.
        let only_na = ExecMatrix {
            runs: vec![exec_run("6.6", "completed", vec![na])],
            ..m.clone()
        };
        assert_eq!(
            github_exec_lines(&only_na),
            ["::error title=bpfmatrix%3A 6.6::the command ran in none of the kernel's JIT modes (interpreter: no interpreter in this kernel)"]
        );
        let none = ExecMatrix {
            runs: vec![m.runs[4].clone()],
            ..m
        };
        assert_eq!(
            github_exec_lines(&none),
            ["::error title=bpfmatrix::NOTHING RUN: no kernel could be had here; unavailable here: 4.16"]
        );
    }
}
