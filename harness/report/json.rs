//! `matrix.json`: the result model ([`Matrix`]) serialised, versioned and flat,
//! the form CI jobs exchange and `bpfmatrix merge` reads back. Reading it judges
//! every record again ([`Cell::judge`], [`ProgramCell::judge`]) and refuses a
//! document that does not hold up.
//!
//! Schema `bpfmatrix-matrix/4`:
//! - `schema`: this string; readers refuse other values.
//! - `generated_by`: the bpfmatrix version that wrote it.
//! - `kernels[]`: one entry per kernel: `name`, `source`, `status` (`completed`,
//!   `unavailable`, `failed`: the run status), `reason` (why not completed),
//!   `guest_release` (`uname -r` in the guest), `accel` (`kvm`/`tcg`), `kvm_fallback`
//!   (why KVM was left), `boot_wall_ms` (QEMU start to exit), `restored` (true
//!   when the guest started from the kernel's saved state instead of booting;
//!   absent otherwise), `agent_start_ms` /
//!   `agent_done_ms` (guest uptime), `warnings` (the agent's), `problems` (protocol
//!   violations), `plan` (what the run asked the guest for: `cases`, `jit_modes`,
//!   and `objects[]`, each a user object's `name` and `programs`; `records[]` has
//!   exactly one record per case x mode of it, `programs[]` exactly one per
//!   program x mode), `jit_switches` (the agent's switches of `bpf_jit_enable`:
//!   `mode`, `sysctl_readback`, `error`), `config` (the host's evidence, absent
//!   when no config was found: `source`, where it was read, and `lines`, its own
//!   lines for CONFIG_BPF_JIT, CONFIG_BPF_JIT_ALWAYS_ON, CONFIG_NET_SCH_INGRESS
//!   and CONFIG_NET_CLS_BPF), `missing_modules[]` (modules the cases need that the
//!   guest was not given: `name`, `config_line`, `remedy`), and `modes[]`, each
//!   mode the kernel does not simply run, decided from `config` and
//!   `jit_switches` (`jit`; `status` `absent` with `what`, "no interpreter in this
//!   kernel (CONFIG_BPF_JIT_ALWAYS_ON=y)", and `evidence[]`, the config's and the
//!   guest's; or `contradicted` with `reason`, naming both); a reader decides
//!   them again and refuses a document whose stored ones differ.
//! - `records[]`: one per kernel x JIT mode x case: `kernel`, `jit` (`jit` or
//!   `interpreter`), `case`; the guest's record as it sent it, flattened: `outcome`
//!   (`accepted`, `rejected`, `unsupported`, `not_loadable`, `error`, or null when
//!   the guest sent none), `step`, `errno` and `verifier` (the last lines of the
//!   verifier log) for rejections, `detail` (the reason or error message),
//!   `measured` (`tail_calls`, `fell_through`, `retval`, `verdicts[]`, `costs` (each
//!   accepted program's verifier cost, as in `programs[].cost`)...), `duration_ms`;
//!   then `errno_name` (derived from `errno`), `expected` and `expected_because`
//!   (the expectation and the documented fact it comes from), `verdict` (`agrees`,
//!   `disagrees`, `no_answer`, `not_applicable`: the kernel was built without
//!   the mode) and `differences` (each disagreement, or why there is no answer or
//!   none applies).
//! - `programs[]` (`bpfmatrix check`): one per kernel x JIT mode x program of a
//!   user object: `kernel`, `jit`, `object`, `program`; the guest's record,
//!   flattened: `section` (the program's ELF section, which says its type),
//!   `outcome`, `step`, `errno`, `verifier` and `detail` as in `records[]`,
//!   `verifier_log` (the verifier's log: the whole log of a refusal, the
//!   statistics of an acceptance, its last 64 KiB at most) and `log_cut_bytes`
//!   (what was cut from its start), `cost` (what verifying it cost:
//!   `insns_processed`, `verified_insns`, `insn_limit`, `max_states_per_insn`,
//!   `total_states`, `peak_states`, `mark_read`, `verification_usec`,
//!   `xlated_bytes`, `jited_bytes`, each `{value, from}` with `from` one of
//!   `verifier_log`, `prog_info`; `stack_depth` (bytes per subprogram) and
//!   `stack_depth_from`; a figure a kernel does not report is absent, never 0),
//!   `duration_ms`; then `errno_name`, `expected` (`accepted` or `refused`),
//!   `expected_because` (the rule, and the file it is in), `verdict` and
//!   `differences` as in `records[]`.
//! - `program_rules`: what the programs were judged by (`bpfmatrix check
//!   --expect`): `file` (as the user named it, absent without one) and `program[]`
//!   (`program`, optional `object`, `first_kernel`), so a reader can judge again.
//! - `minimum_kernels[]`: per program and JIT mode (`object`, `program`, `jit`),
//!   `oldest_accepting` (the oldest kernel that accepted it, by its guest's
//!   version; null when none did) and `flips[]` (each kernel, oldest first, whose
//!   acceptance (`accepted`) differs from the next older kernel that answered).
//!   Derived from `programs[]`; a reader computes it again and refuses a document
//!   whose stored one differs.
//! - `coverage` (optional, written by `bpfmatrix merge --require`): `require`, the
//!   kernels that must be covered, and `allow_unavailable`, those of them that may
//!   be unavailable instead. It holds the requirement, never its outcome: whether
//!   each required kernel is covered is computed from `kernels[]`, `records[]` and
//!   `programs[]` whenever the document is judged
//!   ([`crate::merge::Coverage::gaps`]).
//!
//! `/4` is `/3` with the kernels' `config`, `missing_modules` and `modes` and
//! the verdict `not_applicable`; a `/3` document is refused, since its cells of a
//! mode the kernel lacks were judged as disagreements.
//!
//! `/3` is `/2` with `kernels[].plan.objects`, `programs[]`, `program_rules` and
//! `minimum_kernels` added (always present, empty for a run of the built-in cases
//! alone), `not_loadable` among the outcomes and `measured.costs`; every field of
//! `/2` keeps its shape and meaning. `/2` documents are refused (they cannot say
//! whether a run was asked for programs), as are `/1` documents (without the
//! plan, a record deleted from a document cannot be told from a cell that was
//! never asked for).
//!
//! What a reader checks, so that a document cannot claim what its guests did not
//! say ([`from_json`], [`read`]): every record is judged again from the guest's
//! record and the feature table, every program record from the guest's record and
//! `program_rules`, and its `expected`, `expected_because`, `verdict` and
//! `differences` (and every other field) must be what that gives; every case x
//! mode and every program x mode of a kernel's plan has exactly one record, and no
//! record lies outside it; a completed run has a guest release and no problems;
//! the minimum kernels are what the program records give. Each failure names the
//! kernel, the JIT mode and the case or program.

use crate::collect::JitSwitch;
use crate::expect::{describe_expected, errno_name};
use crate::matrix::{Cell, KernelRun, Matrix, RunStatus, Verdict};
use crate::merge::Coverage;
use crate::modes::{ConfigFacts, KernelFacts, MissingModule, ModeFact};
use crate::programs::{minimum_kernels, Flip, MinimumKernel, ProgramCell, ProgramRules};
use anyhow::{bail, Context, Result};
use bpfmatrix_protocol::{
    CaseId, CaseRecord, JitMode, Measured, Outcome, ProgramRecord, VerifierCost,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SCHEMA: &str = "bpfmatrix-matrix/4";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Document {
    schema: String,
    generated_by: String,
    kernels: Vec<KernelEntry>,
    records: Vec<Record>,
    programs: Vec<ProgramEntry>,
    program_rules: ProgramRules,
    minimum_kernels: Vec<MinimumEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coverage: Option<Coverage>,
}

/// `kernels[].status`: the run status's name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum StatusName {
    Completed,
    Unavailable,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct KernelEntry {
    name: String,
    source: String,
    status: StatusName,
    reason: Option<String>,
    guest_release: Option<String>,
    accel: Option<String>,
    kvm_fallback: Option<String>,
    boot_wall_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    restored: bool,
    agent_start_ms: Option<u64>,
    agent_done_ms: Option<u64>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    problems: Vec<String>,
    plan: PlanEntry,
    #[serde(default)]
    jit_switches: Vec<JitSwitch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<ConfigFacts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    missing_modules: Vec<MissingModule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    modes: Vec<ModeFact>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct PlanEntry {
    cases: Vec<CaseId>,
    jit_modes: Vec<JitMode>,
    objects: Vec<ObjectEntry>,
}

/// A user object of the plan: its name and its programs, in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ObjectEntry {
    name: String,
    programs: Vec<String>,
}

/// `records[].outcome`: the outcome's kind.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum OutcomeName {
    Accepted,
    Rejected,
    Unsupported,
    NotLoadable,
    Error,
}

/// `records[].verdict`: the verdict's name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum VerdictName {
    Agrees,
    Disagrees,
    NoAnswer,
    NotApplicable,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Record {
    kernel: String,
    jit: JitMode,
    case: CaseId,
    outcome: Option<OutcomeName>,
    step: Option<String>,
    errno: Option<i32>,
    errno_name: Option<String>,
    verifier: Option<String>,
    detail: Option<String>,
    measured: Option<Measured>,
    duration_ms: Option<u64>,
    expected: Option<String>,
    expected_because: Option<String>,
    verdict: VerdictName,
    #[serde(default)]
    differences: Vec<String>,
}

/// `programs[]`: one program of a user object in one kernel and JIT mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct ProgramEntry {
    kernel: String,
    jit: JitMode,
    object: String,
    program: String,
    section: Option<String>,
    outcome: Option<OutcomeName>,
    step: Option<String>,
    errno: Option<i32>,
    errno_name: Option<String>,
    verifier: Option<String>,
    verifier_log: Option<String>,
    log_cut_bytes: Option<u64>,
    detail: Option<String>,
    cost: Option<VerifierCost>,
    duration_ms: Option<u64>,
    expected: Option<String>,
    expected_because: Option<String>,
    verdict: VerdictName,
    #[serde(default)]
    differences: Vec<String>,
}

/// `minimum_kernels[]`: [`MinimumKernel`] as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct MinimumEntry {
    object: String,
    program: String,
    jit: JitMode,
    oldest_accepting: Option<String>,
    flips: Vec<FlipEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct FlipEntry {
    kernel: String,
    accepted: bool,
}

impl From<MinimumKernel> for MinimumEntry {
    fn from(m: MinimumKernel) -> Self {
        MinimumEntry {
            object: m.object,
            program: m.program,
            jit: m.jit,
            oldest_accepting: m.oldest_accepting,
            flips: m
                .flips
                .into_iter()
                .map(|Flip { kernel, accepted }| FlipEntry { kernel, accepted })
                .collect(),
        }
    }
}

/// `matrix.json`'s text for `matrix`.
pub fn to_json(matrix: &Matrix) -> String {
    let doc = Document {
        schema: SCHEMA.to_string(),
        generated_by: super::generated_by(),
        kernels: matrix.runs.iter().map(entry).collect(),
        records: matrix
            .cells()
            .map(|(run, cell)| record(&run.kernel, cell))
            .collect(),
        programs: matrix
            .runs
            .iter()
            .flat_map(|run| run.programs.iter().map(|c| program_entry(&run.kernel, c)))
            .collect(),
        program_rules: matrix.program_rules.clone(),
        minimum_kernels: minimum_kernels(matrix)
            .into_iter()
            .map(MinimumEntry::from)
            .collect(),
        coverage: matrix.coverage.clone(),
    };
    serde_json::to_string_pretty(&doc).expect("a matrix serialises") + "\n"
}

/// What a run asked its guest for: [`KernelRun::plan`]'s modes and cases, with
/// the modes of its program cells (one plan gives both their modes) and its user
/// objects, each in the order the cells have them.
fn plan_of(run: &KernelRun) -> PlanEntry {
    let (mut jit_modes, cases) = run.plan();
    let mut objects: Vec<ObjectEntry> = Vec::new();
    for c in &run.programs {
        if !jit_modes.contains(&c.jit) {
            jit_modes.push(c.jit);
        }
        match objects.iter_mut().find(|o| o.name == c.object) {
            Some(o) if o.programs.contains(&c.program) => {}
            Some(o) => o.programs.push(c.program.clone()),
            None => objects.push(ObjectEntry {
                name: c.object.clone(),
                programs: vec![c.program.clone()],
            }),
        }
    }
    PlanEntry {
        cases,
        jit_modes,
        objects,
    }
}

fn entry(run: &KernelRun) -> KernelEntry {
    KernelEntry {
        name: run.kernel.clone(),
        source: run.source.clone(),
        status: match run.status {
            RunStatus::Completed => StatusName::Completed,
            RunStatus::Unavailable { .. } => StatusName::Unavailable,
            RunStatus::Failed { .. } => StatusName::Failed,
        },
        reason: run.status.reason().map(str::to_string),
        guest_release: run.guest_release.clone(),
        accel: run.accel.clone(),
        kvm_fallback: run.kvm_fallback.clone(),
        boot_wall_ms: run.boot_wall_ms,
        restored: run.restored,
        agent_start_ms: run.agent_start_ms,
        agent_done_ms: run.agent_done_ms,
        warnings: run.warnings.clone(),
        problems: run.problems.clone(),
        plan: plan_of(run),
        jit_switches: run.jit_switches.clone(),
        config: run.facts.config.clone(),
        missing_modules: run.facts.missing_modules.clone(),
        modes: run.facts.modes.clone(),
    }
}

/// An outcome's fields as `records[]` and `programs[]` flatten them.
#[derive(Default)]
struct FlatOutcome {
    outcome: Option<OutcomeName>,
    step: Option<String>,
    errno: Option<i32>,
    verifier: Option<String>,
    detail: Option<String>,
}

fn flatten(outcome: Option<&Outcome>) -> FlatOutcome {
    let Some(o) = outcome else {
        return FlatOutcome::default();
    };
    let mut flat = FlatOutcome {
        outcome: Some(match o {
            Outcome::Accepted => OutcomeName::Accepted,
            Outcome::Rejected { .. } => OutcomeName::Rejected,
            Outcome::Unsupported { .. } => OutcomeName::Unsupported,
            Outcome::NotLoadable { .. } => OutcomeName::NotLoadable,
            Outcome::Error { .. } => OutcomeName::Error,
        }),
        ..FlatOutcome::default()
    };
    match o {
        Outcome::Rejected {
            step,
            errno,
            verifier_tail,
        } => {
            flat.step = Some(step.clone());
            flat.errno = Some(*errno);
            flat.verifier = Some(verifier_tail.clone());
        }
        Outcome::Unsupported { reason } | Outcome::NotLoadable { reason } => {
            flat.detail = Some(reason.clone());
        }
        Outcome::Error { message } => flat.detail = Some(message.clone()),
        Outcome::Accepted => {}
    }
    flat
}

/// The flat record of one cell of kernel `kernel`.
fn record(kernel: &str, cell: &Cell) -> Record {
    let FlatOutcome {
        outcome,
        step,
        errno,
        verifier,
        detail,
    } = flatten(cell.record.as_ref().map(|r| &r.outcome));
    Record {
        kernel: kernel.to_string(),
        jit: cell.jit,
        case: cell.case,
        outcome,
        step,
        errno,
        errno_name: errno.map(errno_name),
        verifier,
        detail,
        measured: cell.record.as_ref().map(|r| r.measured.clone()),
        duration_ms: cell.record.as_ref().map(|r| r.duration_ms),
        expected: cell
            .expected
            .as_ref()
            .map(|e| describe_expected(&e.outcome)),
        expected_because: cell.expected.as_ref().map(|e| e.because.clone()),
        verdict: verdict_name(&cell.verdict),
        differences: cell.verdict.reasons().to_vec(),
    }
}

fn verdict_name(v: &Verdict) -> VerdictName {
    match v {
        Verdict::Agrees => VerdictName::Agrees,
        Verdict::Disagrees { .. } => VerdictName::Disagrees,
        Verdict::NoAnswer { .. } => VerdictName::NoAnswer,
        Verdict::NotApplicable { .. } => VerdictName::NotApplicable,
    }
}

/// The flat record of one program cell of kernel `kernel`.
fn program_entry(kernel: &str, cell: &ProgramCell) -> ProgramEntry {
    let rec = cell.record.as_ref();
    let FlatOutcome {
        outcome,
        step,
        errno,
        verifier,
        detail,
    } = flatten(rec.map(|r| &r.outcome));
    ProgramEntry {
        kernel: kernel.to_string(),
        jit: cell.jit,
        object: cell.object.clone(),
        program: cell.program.clone(),
        section: rec.map(|r| r.section.clone()),
        outcome,
        step,
        errno,
        errno_name: errno.map(errno_name),
        verifier,
        verifier_log: rec
            .map(|r| r.verifier_log.clone())
            .filter(|l| !l.is_empty()),
        log_cut_bytes: rec.and_then(|r| r.log_cut_bytes),
        detail,
        cost: rec.and_then(|r| r.cost.clone()),
        duration_ms: rec.map(|r| r.duration_ms),
        expected: cell
            .expected
            .as_ref()
            .map(|e| if e.accept { "accepted" } else { "refused" }.to_string()),
        expected_because: cell.expected.as_ref().map(|e| e.because.clone()),
        verdict: verdict_name(&cell.verdict),
        differences: cell.verdict.reasons().to_vec(),
    }
}

/// Reads a `matrix.json` and judges it again (see the module's doc); the errors
/// name the file.
pub fn read(path: &Path) -> Result<Matrix> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc = parse(&text, &path.display().to_string())?;
    judge_again(doc).with_context(|| format!("{} is refused", path.display()))
}

/// [`read`] for a document in memory.
pub fn from_json(text: &str) -> Result<Matrix> {
    judge_again(parse(text, "the text")?)
}

fn parse(text: &str, name: &str) -> Result<Document> {
    let value: serde_json::Value = serde_json::from_str(text)
        .with_context(|| format!("{name} is not a bpfmatrix matrix document"))?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(SCHEMA) => {}
        Some(other) => bail!(
            "{name} has schema '{other}', this bpfmatrix reads '{SCHEMA}'{}",
            match other {
                "bpfmatrix-matrix/1" => " (a /1 document does not say which cells its runs asked for: run its job again with this bpfmatrix)",
                "bpfmatrix-matrix/2" => " (a /2 document does not say whether its runs were asked for programs: run its job again with this bpfmatrix)",
                "bpfmatrix-matrix/3" => " (a /3 document does not carry the kernel's config, which decides whether a mode is not applicable: run its job again with this bpfmatrix)",
                _ => "",
            }
        ),
        None => bail!("{name} is not a bpfmatrix matrix document (it has no schema)"),
    }
    serde_json::from_value(value)
        .with_context(|| format!("{name} is not a bpfmatrix matrix document"))
}

/// The model a document describes, every cell judged again; an error, naming each
/// kernel, mode and case, where the document is not what its records give.
fn judge_again(doc: Document) -> Result<Matrix> {
    for (i, k) in doc.kernels.iter().enumerate() {
        if doc.kernels[..i].iter().any(|o| o.name == k.name) {
            bail!("kernel '{}' has more than one entry", k.name);
        }
    }
    for r in &doc.records {
        if !doc.kernels.iter().any(|k| k.name == r.kernel) {
            bail!(
                "a document has a record for kernel '{}' ({} {}) but no entry for that kernel",
                r.kernel,
                r.jit,
                r.case
            );
        }
        let same = |o: &&Record| o.kernel == r.kernel && o.jit == r.jit && o.case == r.case;
        if doc.records.iter().filter(same).count() > 1 {
            bail!(
                "kernel '{}' has more than one record for {} {}",
                r.kernel,
                r.jit,
                r.case
            );
        }
    }
    for p in &doc.programs {
        let at = format!("{} {}:{}", p.jit, p.object, p.program);
        if !doc.kernels.iter().any(|k| k.name == p.kernel) {
            bail!(
                "a document has a program record for kernel '{}' ({at}) but no entry for that kernel",
                p.kernel
            );
        }
        let same = |o: &&ProgramEntry| {
            (o.kernel == p.kernel && o.jit == p.jit)
                && (o.object == p.object && o.program == p.program)
        };
        if doc.programs.iter().filter(same).count() > 1 {
            bail!("kernel '{}' has more than one record for {at}", p.kernel);
        }
    }
    let mut wrong = Vec::new();
    let mut runs = Vec::new();
    for k in doc.kernels {
        let (name, plan) = (k.name.clone(), k.plan.clone());
        let mut run = run_of(k, &mut wrong);
        let records: Vec<&Record> = doc.records.iter().filter(|r| r.kernel == name).collect();
        for r in &records {
            if !plan.jit_modes.contains(&r.jit) || !plan.cases.contains(&r.case) {
                wrong.push(format!(
                    "kernel '{name}' has a record for {} {}, which its plan did not ask for",
                    r.jit, r.case
                ));
            }
        }
        for &jit in &plan.jit_modes {
            for &case in &plan.cases {
                let at = format!("kernel '{name}' {jit} {case}");
                let Some(stored) = records.iter().find(|r| r.jit == jit && r.case == case) else {
                    wrong.push(format!(
                        "kernel '{name}' has no record for {jit} {case}, which its plan asked for"
                    ));
                    continue;
                };
                let guest = match guest_record(stored) {
                    Ok(guest) => guest,
                    Err(why) => {
                        wrong.push(format!("{at}: {why}"));
                        continue;
                    }
                };
                // Without the guest's record the stored reason is all there is.
                let no_record = stored.differences.join("; ");
                let cell = Cell::judge(
                    case,
                    jit,
                    run.guest_release.as_deref(),
                    guest,
                    &no_record,
                    &run.facts,
                );
                let again = record(&name, &cell);
                if again != **stored {
                    wrong.push(format!(
                        "{at}: {}",
                        differences(stored, &again, "the feature table's")
                    ));
                }
                run.cells.push(cell);
            }
        }
        let programs: Vec<&ProgramEntry> =
            doc.programs.iter().filter(|p| p.kernel == name).collect();
        let planned = |p: &ProgramEntry| {
            plan.jit_modes.contains(&p.jit)
                && plan
                    .objects
                    .iter()
                    .any(|o| o.name == p.object && o.programs.contains(&p.program))
        };
        for p in programs.iter().filter(|p| !planned(p)) {
            wrong.push(format!(
                "kernel '{name}' has a record for {} {}:{}, which its plan did not ask for",
                p.jit, p.object, p.program
            ));
        }
        for &jit in &plan.jit_modes {
            for object in &plan.objects {
                for program in &object.programs {
                    let at = format!("kernel '{name}' {jit} {}:{program}", object.name);
                    let Some(stored) = programs
                        .iter()
                        .find(|p| p.jit == jit && p.object == object.name && &p.program == program)
                    else {
                        wrong.push(format!(
                            "kernel '{name}' has no record for {jit} {}:{program}, which its plan asked for",
                            object.name
                        ));
                        continue;
                    };
                    let guest = match guest_program(stored) {
                        Ok(guest) => guest,
                        Err(why) => {
                            wrong.push(format!("{at}: {why}"));
                            continue;
                        }
                    };
                    let cell = ProgramCell::judge(
                        &object.name,
                        program,
                        jit,
                        run.guest_release.as_deref(),
                        guest,
                        &doc.program_rules,
                        &stored.differences.join("; "),
                        &run.facts,
                    );
                    let again = program_entry(&name, &cell);
                    if again != **stored {
                        wrong.push(format!(
                            "{at}: {}",
                            differences(stored, &again, "the rules'")
                        ));
                    }
                    run.programs.push(cell);
                }
            }
        }
        runs.push(run);
    }
    let matrix = Matrix {
        runs,
        coverage: doc.coverage,
        program_rules: doc.program_rules,
    };
    let minimum: Vec<MinimumEntry> = minimum_kernels(&matrix)
        .into_iter()
        .map(MinimumEntry::from)
        .collect();
    if wrong.is_empty() && minimum != doc.minimum_kernels {
        let show = |m: &[MinimumEntry]| serde_json::to_string(m).expect("serialises");
        wrong.push(format!(
            "minimum_kernels: stored {}, the program records give {}",
            show(&doc.minimum_kernels),
            show(&minimum)
        ));
    }
    if !wrong.is_empty() {
        bail!(
            "judged again from its guests' records, the feature table and its program rules, it does not hold up:\n  {}",
            wrong.join("\n  ")
        );
    }
    Ok(matrix)
}

/// The run a kernel entry describes, without its cells; what is inconsistent in
/// the entry goes into `wrong`.
fn run_of(k: KernelEntry, wrong: &mut Vec<String>) -> KernelRun {
    let name = &k.name;
    let reason = || k.reason.clone().unwrap_or_default();
    if k.reason.is_none() && k.status != StatusName::Completed {
        wrong.push(format!("kernel '{name}' did not complete and says not why"));
    }
    let status = match k.status {
        StatusName::Completed => {
            if let Some(why) = &k.reason {
                wrong.push(format!(
                    "kernel '{name}' says completed, and gives a reason it did not: {why}"
                ));
            }
            if k.guest_release.is_none() {
                wrong.push(format!(
                    "kernel '{name}' says completed, but its guest never said hello"
                ));
            }
            if let Some(p) = k.problems.first() {
                wrong.push(format!(
                    "kernel '{name}' says completed, but its guest broke the protocol: {p}"
                ));
            }
            RunStatus::Completed
        }
        StatusName::Unavailable => RunStatus::Unavailable { reason: reason() },
        StatusName::Failed => RunStatus::Failed { reason: reason() },
    };
    let facts = KernelFacts::decide(
        k.config,
        k.missing_modules,
        &k.jit_switches,
        &k.plan.jit_modes,
    );
    if facts.modes != k.modes {
        let show = |m: &[ModeFact]| serde_json::to_string(m).expect("serialises");
        wrong.push(format!(
            "kernel '{name}' modes: stored {}, its config and JIT switches give {}",
            show(&k.modes),
            show(&facts.modes)
        ));
    }
    KernelRun {
        facts,
        guest_release: k.guest_release,
        accel: k.accel,
        kvm_fallback: k.kvm_fallback,
        boot_wall_ms: k.boot_wall_ms,
        restored: k.restored,
        agent_start_ms: k.agent_start_ms,
        agent_done_ms: k.agent_done_ms,
        jit_switches: k.jit_switches,
        warnings: k.warnings,
        problems: k.problems,
        ..KernelRun::empty(&k.name, &k.source, status)
    }
}

fn need<T>(field: Option<T>, kind: OutcomeName, what: &str) -> Result<T, String> {
    field.ok_or_else(|| format!("outcome {} without {what}", name(kind)))
}

/// The outcome a flattened record describes.
fn unflatten(kind: OutcomeName, flat: FlatOutcome) -> Result<Outcome, String> {
    Ok(match kind {
        OutcomeName::Accepted => Outcome::Accepted,
        OutcomeName::Rejected => Outcome::Rejected {
            step: need(flat.step, kind, "the refused step")?,
            errno: need(flat.errno, kind, "the errno")?,
            verifier_tail: need(flat.verifier, kind, "the verifier's words")?,
        },
        OutcomeName::Unsupported => Outcome::Unsupported {
            reason: need(flat.detail, kind, "its reason (detail)")?,
        },
        OutcomeName::NotLoadable => Outcome::NotLoadable {
            reason: need(flat.detail, kind, "its reason (detail)")?,
        },
        OutcomeName::Error => Outcome::Error {
            message: need(flat.detail, kind, "its message (detail)")?,
        },
    })
}

/// The guest's record, as it sent it, from its flattened form.
fn guest_record(r: &Record) -> Result<Option<CaseRecord>, String> {
    let Some(kind) = r.outcome else {
        return Ok(None);
    };
    let flat = FlatOutcome {
        outcome: r.outcome,
        step: r.step.clone(),
        errno: r.errno,
        verifier: r.verifier.clone(),
        detail: r.detail.clone(),
    };
    Ok(Some(CaseRecord {
        case: r.case,
        jit: r.jit,
        outcome: unflatten(kind, flat)?,
        measured: need(r.measured.clone(), kind, "what was measured")?,
        duration_ms: need(r.duration_ms, kind, "its duration")?,
    }))
}

/// The guest's program record, as it sent it, from its flattened form.
fn guest_program(p: &ProgramEntry) -> Result<Option<ProgramRecord>, String> {
    let Some(kind) = p.outcome else {
        return Ok(None);
    };
    let flat = FlatOutcome {
        outcome: p.outcome,
        step: p.step.clone(),
        errno: p.errno,
        verifier: p.verifier.clone(),
        detail: p.detail.clone(),
    };
    Ok(Some(ProgramRecord {
        object: p.object.clone(),
        program: p.program.clone(),
        section: need(p.section.clone(), kind, "its section")?,
        jit: p.jit,
        outcome: unflatten(kind, flat)?,
        verifier_log: p.verifier_log.clone().unwrap_or_default(),
        log_cut_bytes: p.log_cut_bytes,
        cost: p.cost.clone(),
        duration_ms: need(p.duration_ms, kind, "its duration")?,
    }))
}

/// A wire value's name as `matrix.json` writes it.
fn name(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// How a stored record (of `records[]` or `programs[]`) differs from the one its
/// cell, judged again, gives; `source` names where expectations come from ("the
/// feature table's", "the rules'").
fn differences(stored: &impl Serialize, again: &impl Serialize, source: &str) -> String {
    let (s, a) = (
        serde_json::to_value(stored).expect("a record serialises"),
        serde_json::to_value(again).expect("a record serialises"),
    );
    let null = serde_json::Value::Null;
    let field = |r: &'_ serde_json::Value, f: &str| r.get(f).unwrap_or(&null).clone();
    let verdict = |r: &serde_json::Value| {
        let v = field(r, "verdict");
        let v = v.as_str().unwrap_or("?");
        let d: Vec<String> = field(r, "differences")
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|x| x.as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        match d.as_slice() {
            [] => v.to_string(),
            d => format!("{v} ({})", d.join("; ")),
        }
    };
    let text = |r: &serde_json::Value, f: &str| match field(r, f) {
        serde_json::Value::String(t) => format!("\"{t}\""),
        _ => "none".to_string(),
    };
    let mut parts = Vec::new();
    if verdict(&s) != verdict(&a) {
        parts.push(format!(
            "stored verdict {}, re-judged {}",
            verdict(&s),
            verdict(&a)
        ));
    }
    if field(&s, "expected") != field(&a, "expected") {
        parts.push(format!(
            "stored expectation {}, {source} {}",
            text(&s, "expected"),
            text(&a, "expected")
        ));
    }
    if field(&s, "expected_because") != field(&a, "expected_because") {
        parts.push(format!(
            "stored reason for the expectation {}, {source} {}",
            text(&s, "expected_because"),
            text(&a, "expected_because")
        ));
    }
    // Anything else: a derived field edited, a field the outcome does not have.
    let judged = ["verdict", "differences", "expected", "expected_because"];
    if let (Some(s), Some(a)) = (s.as_object(), a.as_object()) {
        for (field, value) in s {
            let given = a.get(field).unwrap_or(&null);
            if !judged.contains(&field.as_str()) && given != value {
                parts.push(format!(
                    "{field}: stored {value}, the guest's record gives {given}"
                ));
            }
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::tests::{agreeing_record, collected, complete_except, RELEASE};
    use crate::merge;
    use crate::report::tests::{five_checked, PROGRAMS};

    fn unavailable(kernel: &str) -> Matrix {
        Matrix::from_runs([KernelRun::unavailable(
            kernel,
            "src",
            "no source".into(),
            &[CaseId::TailCallChain],
            &[JitMode::Jit],
        )])
    }

    #[test]
    fn documents_round_trip() {
        let failed = KernelRun::failed(
            "5.10",
            "src",
            "panic".into(),
            &[CaseId::TailCallChain],
            &JitMode::ALL,
        );
        let mut six = complete_except("6.1", &[(JitMode::Jit, CaseId::FentryTcLoopback)]);
        six.accel = Some("tcg".into());
        six.boot_wall_ms = Some(4100);
        six.warnings.push("a module did not load".into());
        six.jit_switches.push(JitSwitch {
            mode: JitMode::Jit,
            sysctl_readback: Some("1".into()),
            error: None,
        });
        let matrix = merge::merge(
            vec![Matrix::from_runs([six, failed]), unavailable("4.16")],
            merge::Coverage::new(vec!["6.1".into()], vec![]).unwrap(),
        )
        .unwrap();
        let text = to_json(&matrix);
        assert_eq!(from_json(&text).unwrap(), matrix);
        // Written again, the document is the same, but for who wrote it.
        assert_eq!(to_json(&from_json(&text).unwrap()), text);
    }

    #[test]
    fn program_cells_round_trip_with_their_rules_and_minimum_kernels() {
        let m = five_checked();
        let text = to_json(&m);
        assert_eq!(from_json(&text).unwrap(), m);
        assert_eq!(to_json(&from_json(&text).unwrap()), text);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc["program_rules"],
            serde_json::json!({"file": "expect.toml", "program": [{"program": "new_helper", "first_kernel": "6.1"}]})
        );
        assert_eq!(
            doc["kernels"][0]["plan"]["objects"],
            serde_json::json!([{"name": "probe.o", "programs": PROGRAMS}])
        );
        let flaky = doc["minimum_kernels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["program"] == "flaky" && k["jit"] == "jit")
            .unwrap();
        assert_eq!(
            *flaky,
            serde_json::json!({"object": "probe.o", "program": "flaky", "jit": "jit", "oldest_accepting": "5.4",
                "flips": [{"kernel": "6.1", "accepted": false}, {"kernel": "6.12", "accepted": true}]})
        );
        let refused = program(&doc, "5.4", "jit", "new_helper");
        assert_eq!(refused["outcome"], "rejected");
        assert_eq!(refused["errno_name"], "EINVAL");
        assert!(refused["verifier"]
            .as_str()
            .unwrap()
            .ends_with("unknown func bpf_loop#181"));
        assert!(refused["verifier_log"]
            .as_str()
            .unwrap()
            .starts_with("func#0 @0\n"));
        assert_eq!(refused["expected"], "refused");
        assert_eq!(
            refused["expected_because"],
            "first kernel 6.1 (expect.toml)"
        );
        assert_eq!(refused["verdict"], "agrees");
        let plain = program(&doc, "6.1", "jit", "plain");
        assert_eq!(
            plain["cost"]["insns_processed"],
            serde_json::json!({"value": 39, "from": "verifier_log"})
        );
        assert_eq!(
            plain["cost"]["jited_bytes"],
            serde_json::json!({"value": 195, "from": "prog_info"})
        );
        assert_eq!(plain["cost"]["stack_depth"], serde_json::json!([8]));
        assert_eq!(plain["section"], "socket");
        let silent = program(&doc, "latest", "interpreter", "flaky");
        assert_eq!(silent["outcome"], serde_json::Value::Null);
        assert_eq!(
            silent["differences"],
            serde_json::json!(["the guest sent no record for it"])
        );
        let ext = program(&doc, "6.1", "jit", "ext");
        assert_eq!(ext["outcome"], "not_loadable");
        assert_eq!(ext["verdict"], "no_answer");
        let mut fields: Vec<&str> = ext
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        let mut expected = [
            "kernel",
            "jit",
            "object",
            "program",
            "section",
            "outcome",
            "step",
            "errno",
            "errno_name",
            "verifier",
            "verifier_log",
            "log_cut_bytes",
            "detail",
            "cost",
            "duration_ms",
            "expected",
            "expected_because",
            "verdict",
            "differences",
        ];
        expected.sort_unstable();
        assert_eq!(fields, expected);
    }

    fn program<'a>(
        doc: &'a serde_json::Value,
        kernel: &str,
        jit: &str,
        program: &str,
    ) -> &'a serde_json::Value {
        doc["programs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["kernel"] == kernel && p["jit"] == jit && p["program"] == program)
            .unwrap()
    }

    fn program_mut<'a>(
        doc: &'a mut serde_json::Value,
        kernel: &str,
        jit: &str,
        program: &str,
    ) -> &'a mut serde_json::Value {
        doc["programs"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p["kernel"] == kernel && p["jit"] == jit && p["program"] == program)
            .unwrap()
    }

    #[test]
    fn program_records_that_do_not_hold_up_are_refused() {
        let doc: serde_json::Value = serde_json::from_str(&to_json(&five_checked())).unwrap();
        let refused =
            |doc: &serde_json::Value| format!("{:#}", from_json(&doc.to_string()).unwrap_err());
        // A refusal marked as agreeing: judged again, it does not.
        let mut verdict = doc.clone();
        let cell = program_mut(&mut verdict, "6.1", "jit", "flaky");
        cell["verdict"] = "agrees".into();
        cell["differences"] = serde_json::json!([]);
        let err = refused(&verdict);
        assert!(err.contains("kernel '6.1' jit probe.o:flaky: stored verdict agrees, re-judged disagrees (expected accepted (no rule in expect.toml"), "{err}");
        // Rules changed after the fact: every verdict they touch is named.
        let mut rules = doc.clone();
        rules["program_rules"]["program"][0]["first_kernel"] = "5.4".into();
        let err = refused(&rules);
        assert!(
            err.contains(
                "kernel '5.4' jit probe.o:new_helper: stored verdict agrees, re-judged disagrees"
            ),
            "{err}"
        );
        assert!(err.contains("stored reason for the expectation \"first kernel 6.1 (expect.toml)\", the rules' \"first kernel 5.4 (expect.toml)\""), "{err}");
        // An accepted program turned into a refusal: the minimum kernel moves.
        let mut outcome = doc.clone();
        let cell = program_mut(&mut outcome, "5.4", "jit", "plain");
        cell["outcome"] = "rejected".into();
        let err = refused(&outcome);
        assert!(
            err.contains(
                "kernel '5.4' jit probe.o:plain: outcome rejected without the refused step"
            ),
            "{err}"
        );
        let mut minimum = doc.clone();
        minimum["minimum_kernels"][0]["oldest_accepting"] = "5.10".into();
        let err = refused(&minimum);
        assert!(err.contains("minimum_kernels: stored [{\"object\":\"probe.o\",\"program\":\"plain\",\"jit\":\"jit\",\"oldest_accepting\":\"5.10\""), "{err}");
        // A record deleted, or one the plan never asked for.
        let mut gone = doc.clone();
        gone["programs"].as_array_mut().unwrap().retain(|p| {
            !(p["kernel"] == "6.12" && p["jit"] == "interpreter" && p["program"] == "ext")
        });
        let err = refused(&gone);
        assert!(
            err.contains(
                "kernel '6.12' has no record for interpreter probe.o:ext, which its plan asked for"
            ),
            "{err}"
        );
        let mut extra = doc.clone();
        extra["kernels"][1]["plan"]["objects"][0]["programs"]
            .as_array_mut()
            .unwrap()
            .retain(|p| p != "ext");
        let err = refused(&extra);
        assert!(
            err.contains(
                "kernel '5.10' has a record for jit probe.o:ext, which its plan did not ask for"
            ),
            "{err}"
        );
        let mut twice = doc;
        let dup = twice["programs"][0].clone();
        twice["programs"].as_array_mut().unwrap().push(dup);
        assert_eq!(
            refused(&twice),
            "kernel '5.4' has more than one record for jit probe.o:plain"
        );
    }

    #[test]
    fn the_guests_record_is_kept_as_it_sent_it() {
        let chain = agreeing_record(CaseId::TailCallChain, JitMode::Jit, RELEASE);
        let others = [
            Outcome::Rejected {
                step: "load chain_entry".into(),
                errno: 1,
                verifier_tail: "line 1\nline 2\n".into(),
            },
            Outcome::Unsupported {
                reason: "no kernel BTF".into(),
            },
            Outcome::Error {
                message: "the agent failed".into(),
            },
        ];
        let records =
            std::iter::once(chain.clone()).chain(others.into_iter().map(|outcome| CaseRecord {
                outcome,
                ..chain.clone()
            }));
        for guest in records {
            let run = KernelRun::judge(
                "6.1",
                "src",
                &[CaseId::TailCallChain],
                &[JitMode::Jit],
                collected(vec![guest.clone()]),
                None,
                crate::matrix::HostFacts::default(),
            );
            let read = from_json(&to_json(&Matrix::from_runs([run]))).unwrap();
            assert_eq!(read.runs[0].cells[0].record.as_ref(), Some(&guest));
        }
    }

    #[test]
    fn the_fields_keep_their_names_and_shapes() {
        let mut run = complete_except("6.1", &[]);
        run.cells.truncate(1);
        let doc: serde_json::Value =
            serde_json::from_str(&to_json(&Matrix::from_runs([run]))).unwrap();
        assert_eq!(doc["schema"], SCHEMA);
        let k = &doc["kernels"][0];
        assert_eq!(k["status"], "completed");
        assert_eq!(k["reason"], serde_json::Value::Null);
        assert_eq!(
            k["plan"],
            serde_json::json!({"cases": ["tail_call.chain"], "jit_modes": ["jit"], "objects": []})
        );
        assert_eq!(doc["programs"], serde_json::json!([]));
        assert_eq!(doc["program_rules"], serde_json::json!({"program": []}));
        assert_eq!(doc["minimum_kernels"], serde_json::json!([]));
        let r = &doc["records"][0];
        assert_eq!(r["outcome"], "accepted");
        assert_eq!(r["measured"]["tail_calls"], 33);
        assert_eq!(r["expected"], "accepted, 33 tail calls");
        assert_eq!(r["verdict"], "agrees");
        assert_eq!(r["differences"], serde_json::json!([]));
        let mut fields: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        let mut expected = [
            "kernel",
            "jit",
            "case",
            "outcome",
            "step",
            "errno",
            "errno_name",
            "verifier",
            "detail",
            "measured",
            "duration_ms",
            "expected",
            "expected_because",
            "verdict",
            "differences",
        ];
        expected.sort_unstable();
        assert_eq!(fields, expected);
    }

    #[test]
    fn malformed_inputs_are_refused() {
        let text = to_json(&Matrix::from_runs([complete_except("6.1", &[])]));
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut orphan = doc.clone();
        orphan["kernels"] = serde_json::json!([]);
        let err = from_json(&orphan.to_string()).unwrap_err().to_string();
        assert!(
            err.starts_with("a document has a record for kernel '6.1' (jit tail_call.chain) but no entry for that kernel"),
            "{err}"
        );
        let mut twice = doc.clone();
        let dup = twice["records"][0].clone();
        twice["records"].as_array_mut().unwrap().push(dup);
        let err = from_json(&twice.to_string()).unwrap_err().to_string();
        assert_eq!(
            err,
            "kernel '6.1' has more than one record for jit tail_call.chain"
        );
        let mut no_errno = doc.clone();
        let rejected = no_errno["records"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|r| r["outcome"] == "rejected")
            .unwrap();
        rejected["errno"] = serde_json::Value::Null;
        let err = format!("{:#}", from_json(&no_errno.to_string()).unwrap_err());
        assert!(
            err.contains(
                "kernel '6.1' jit bpf2bpf.big_caller_frame: outcome rejected without the errno"
            ),
            "{err}"
        );
        let mut derived = doc.clone();
        derived["records"][bpfmatrix_protocol::CaseId::ALL.len() + 3]["errno_name"] =
            "EPERM".into();
        let err = format!("{:#}", from_json(&derived.to_string()).unwrap_err());
        assert!(
            err.contains("kernel '6.1' interpreter bpf2bpf.tail_call_in_subprog: errno_name: stored \"EPERM\", the guest's record gives \"EINVAL\""),
            "{err}"
        );
        let mut failed = doc;
        failed["kernels"][0]["problems"] = serde_json::json!(["line 3: garbage"]);
        let err = format!("{:#}", from_json(&failed.to_string()).unwrap_err());
        assert!(
            err.contains(
                "kernel '6.1' says completed, but its guest broke the protocol: line 3: garbage"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_mode_the_kernel_lacks_round_trips_with_its_evidence_and_is_decided_again() {
        let m = Matrix::from_runs([crate::matrix::tests::always_on(
            "5.4",
            &[CaseId::TailCallChain],
        )]);
        assert!(m.all_agree(), "{:#?}", m.runs[0].cells);
        let text = to_json(&m);
        let read = from_json(&text).unwrap();
        assert_eq!(read, m);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["kernels"][0]["modes"][0]["status"], "absent");
        assert_eq!(
            doc["kernels"][0]["modes"][0]["what"],
            "no interpreter in this kernel (CONFIG_BPF_JIT_ALWAYS_ON=y)"
        );
        assert_eq!(doc["records"][1]["verdict"], "not_applicable");
        // A config edited to have an interpreter no longer gives the stored modes
        // nor the stored verdicts: config and guest now disagree.
        let mut edited = doc.clone();
        edited["kernels"][0]["config"]["lines"] =
            serde_json::json!(["CONFIG_BPF_JIT=y", "# CONFIG_BPF_JIT_ALWAYS_ON is not set"]);
        let err = format!("{:#}", from_json(&edited.to_string()).unwrap_err());
        assert!(err.contains("kernel '5.4' modes: stored"), "{err}");
        assert!(err.contains("\"status\":\"contradicted\""), "{err}");
        // Stored modes without the config behind them are refused too.
        let mut forged = doc;
        forged["kernels"][0]["config"] = serde_json::Value::Null;
        forged["kernels"][0]["jit_switches"] = serde_json::json!([]);
        let err = format!("{:#}", from_json(&forged.to_string()).unwrap_err());
        assert!(err.contains("kernel '5.4' modes: stored"), "{err}");
    }

    #[test]
    fn other_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        let text = to_json(&unavailable("4.16"));
        std::fs::write(&p, text.replace(SCHEMA, "bpfmatrix-matrix/1")).unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(
            err.contains("has schema 'bpfmatrix-matrix/1', this bpfmatrix reads 'bpfmatrix-matrix/4' (a /1 document does not say which cells its runs asked for"),
            "{err}"
        );
        std::fs::write(&p, text.replace(SCHEMA, "bpfmatrix-matrix/2")).unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(
            err.contains("has schema 'bpfmatrix-matrix/2', this bpfmatrix reads 'bpfmatrix-matrix/4' (a /2 document does not say whether its runs were asked for programs"),
            "{err}"
        );
        std::fs::write(&p, text.replace(SCHEMA, "bpfmatrix-matrix/3")).unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(
            err.contains("(a /3 document does not carry the kernel's config"),
            "{err}"
        );
        std::fs::write(&p, "{\"garbage\":1}").unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(err.contains("is not a bpfmatrix matrix document"), "{err}");
        std::fs::write(&p, "[1,").unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(err.contains("is not a bpfmatrix matrix document"), "{err}");
    }
}
