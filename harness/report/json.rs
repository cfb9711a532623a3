//! `matrix.json`: the result model ([`Matrix`]) serialised, versioned and flat,
//! the form CI jobs exchange and `bpfmatrix merge` reads back. Reading it judges
//! every record again ([`Cell::judge`]) and refuses a document that does not hold up.
//!
//! Schema `bpfmatrix-matrix/2`:
//! - `schema`: this string; readers refuse other values.
//! - `generated_by`: the bpfmatrix version that wrote it.
//! - `kernels[]`: one entry per kernel: `name`, `source`, `status` (`completed`,
//!   `unavailable`, `failed`: the run status), `reason` (why not completed),
//!   `guest_release` (`uname -r` in the guest), `accel` (`kvm`/`tcg`), `kvm_fallback`
//!   (why KVM was left), `boot_wall_ms` (QEMU start to exit), `agent_start_ms` /
//!   `agent_done_ms` (guest uptime), `warnings` (the agent's), `problems` (protocol
//!   violations), `plan` (`cases` and `jit_modes`: what the run asked the guest for;
//!   `records[]` has exactly one record per case x mode of it), `jit_switches` (the
//!   agent's switches of `bpf_jit_enable`: `mode`, `sysctl_readback`, `error`).
//! - `records[]`: one per kernel x JIT mode x case: `kernel`, `jit` (`jit` or
//!   `interpreter`), `case`; the guest's record as it sent it, flattened: `outcome`
//!   (`accepted`, `rejected`, `unsupported`, `error`, or null when the guest sent
//!   none), `step`, `errno` and `verifier` (the last lines of the verifier log) for
//!   rejections, `detail` (the reason or error message), `measured` (`tail_calls`,
//!   `fell_through`, `retval`, `verdicts[]`...), `duration_ms`; then `errno_name`
//!   (derived from `errno`), `expected` and `expected_because` (the expectation and
//!   the documented fact it comes from), `verdict` (`agrees`, `disagrees`,
//!   `no_answer`) and `differences` (each disagreement, or why there is no answer).
//! - `coverage` (optional, written by `bpfmatrix merge --require`): `require`, the
//!   kernels that must be covered, and `allow_unavailable`, those of them that may
//!   be unavailable instead. It holds the requirement, never its outcome: whether
//!   each required kernel is covered is computed from `kernels[]` and `records[]`
//!   whenever the document is judged ([`crate::merge::Coverage::gaps`]).
//!
//! `/2` is `/1` with `kernels[].plan` and `kernels[].jit_switches` added; every
//! field of `/1` keeps its shape and meaning. `/1` documents are refused: without
//! the plan, a record deleted from a document cannot be told from a cell that was
//! never asked for.
//!
//! What a reader checks, so that a document cannot claim what its guests did not
//! say ([`from_json`], [`read`]): every record is judged again from the guest's
//! record and the feature table, and its `expected`, `expected_because`, `verdict`
//! and `differences` (and every other field) must be what that gives; every case x
//! mode of a kernel's plan has exactly one record, and no record lies outside it; a
//! completed run has a guest release and no problems. Each failure names the
//! kernel, the JIT mode and the case.

use crate::collect::JitSwitch;
use crate::expect::{describe_expected, errno_name};
use crate::matrix::{Cell, KernelRun, Matrix, RunStatus, Verdict};
use crate::merge::Coverage;
use anyhow::{bail, Context, Result};
use bpfmatrix_protocol::{CaseId, CaseRecord, JitMode, Measured, Outcome};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const SCHEMA: &str = "bpfmatrix-matrix/2";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Document {
    schema: String,
    generated_by: String,
    kernels: Vec<KernelEntry>,
    records: Vec<Record>,
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
    agent_start_ms: Option<u64>,
    agent_done_ms: Option<u64>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    problems: Vec<String>,
    plan: PlanEntry,
    #[serde(default)]
    jit_switches: Vec<JitSwitch>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct PlanEntry {
    cases: Vec<CaseId>,
    jit_modes: Vec<JitMode>,
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
        coverage: matrix.coverage.clone(),
    };
    serde_json::to_string_pretty(&doc).expect("a matrix serialises") + "\n"
}

fn entry(run: &KernelRun) -> KernelEntry {
    let (jit_modes, cases) = run.plan();
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
        agent_start_ms: run.agent_start_ms,
        agent_done_ms: run.agent_done_ms,
        warnings: run.warnings.clone(),
        problems: run.problems.clone(),
        plan: PlanEntry { cases, jit_modes },
        jit_switches: run.jit_switches.clone(),
    }
}

/// The flat record of one cell of kernel `kernel`.
fn record(kernel: &str, cell: &Cell) -> Record {
    let outcome = cell.record.as_ref().map(|r| &r.outcome);
    let (step, errno, verifier, detail) = match outcome {
        Some(Outcome::Rejected {
            step,
            errno,
            verifier_tail,
        }) => (
            Some(step.clone()),
            Some(*errno),
            Some(verifier_tail.clone()),
            None,
        ),
        Some(Outcome::Unsupported { reason } | Outcome::NotLoadable { reason }) => {
            (None, None, None, Some(reason.clone()))
        }
        Some(Outcome::Error { message }) => (None, None, None, Some(message.clone())),
        Some(Outcome::Accepted) | None => (None, None, None, None),
    };
    Record {
        kernel: kernel.to_string(),
        jit: cell.jit,
        case: cell.case,
        outcome: outcome.map(|o| match o {
            Outcome::Accepted => OutcomeName::Accepted,
            Outcome::Rejected { .. } => OutcomeName::Rejected,
            Outcome::Unsupported { .. } => OutcomeName::Unsupported,
            Outcome::NotLoadable { .. } => OutcomeName::NotLoadable,
            Outcome::Error { .. } => OutcomeName::Error,
        }),
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
        verdict: match cell.verdict {
            Verdict::Agrees => VerdictName::Agrees,
            Verdict::Disagrees { .. } => VerdictName::Disagrees,
            Verdict::NoAnswer { .. } => VerdictName::NoAnswer,
        },
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
            if other == "bpfmatrix-matrix/1" {
                " (a /1 document does not say which cells its runs asked for: run its job again with this bpfmatrix)"
            } else {
                ""
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
                let cell = Cell::judge(case, jit, run.guest_release.as_deref(), guest, &no_record);
                let again = record(&name, &cell);
                if again != **stored {
                    wrong.push(format!("{at}: {}", differences(stored, &again)));
                }
                run.cells.push(cell);
            }
        }
        runs.push(run);
    }
    if !wrong.is_empty() {
        bail!(
            "judged again from its guests' records and the feature table, it does not hold up:\n  {}",
            wrong.join("\n  ")
        );
    }
    Ok(Matrix {
        runs,
        coverage: doc.coverage,
        program_rules: Default::default(),
    })
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
    KernelRun {
        guest_release: k.guest_release,
        accel: k.accel,
        kvm_fallback: k.kvm_fallback,
        boot_wall_ms: k.boot_wall_ms,
        agent_start_ms: k.agent_start_ms,
        agent_done_ms: k.agent_done_ms,
        jit_switches: k.jit_switches,
        warnings: k.warnings,
        problems: k.problems,
        ..KernelRun::empty(&k.name, &k.source, status)
    }
}

/// The guest's record, as it sent it, from its flattened form.
fn guest_record(r: &Record) -> Result<Option<CaseRecord>, String> {
    let Some(kind) = r.outcome else {
        return Ok(None);
    };
    fn need<T>(field: Option<T>, kind: OutcomeName, what: &str) -> Result<T, String> {
        field.ok_or_else(|| format!("outcome {} without {what}", name(kind)))
    }
    let outcome = match kind {
        OutcomeName::Accepted => Outcome::Accepted,
        OutcomeName::Rejected => Outcome::Rejected {
            step: need(r.step.clone(), kind, "the refused step")?,
            errno: need(r.errno, kind, "the errno")?,
            verifier_tail: need(r.verifier.clone(), kind, "the verifier's words")?,
        },
        OutcomeName::Unsupported => Outcome::Unsupported {
            reason: need(r.detail.clone(), kind, "its reason (detail)")?,
        },
        OutcomeName::NotLoadable => Outcome::NotLoadable {
            reason: need(r.detail.clone(), kind, "its reason (detail)")?,
        },
        OutcomeName::Error => Outcome::Error {
            message: need(r.detail.clone(), kind, "its message (detail)")?,
        },
    };
    Ok(Some(CaseRecord {
        case: r.case,
        jit: r.jit,
        outcome,
        measured: need(r.measured.clone(), kind, "what was measured")?,
        duration_ms: need(r.duration_ms, kind, "its duration")?,
    }))
}

/// A wire value's name as `matrix.json` writes it.
fn name(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// How a stored record differs from the one its cell, judged again, gives.
fn differences(stored: &Record, again: &Record) -> String {
    let verdict = |r: &Record| match r.differences.as_slice() {
        [] => name(r.verdict),
        d => format!("{} ({})", name(r.verdict), d.join("; ")),
    };
    let text = |t: &Option<String>| {
        t.as_deref()
            .map_or("none".to_string(), |t| format!("\"{t}\""))
    };
    let mut parts = Vec::new();
    if (stored.verdict, &stored.differences) != (again.verdict, &again.differences) {
        parts.push(format!(
            "stored verdict {}, re-judged {}",
            verdict(stored),
            verdict(again)
        ));
    }
    if stored.expected != again.expected {
        parts.push(format!(
            "stored expectation {}, the feature table's {}",
            text(&stored.expected),
            text(&again.expected)
        ));
    }
    if stored.expected_because != again.expected_because {
        parts.push(format!(
            "stored reason for the expectation {}, the feature table's {}",
            text(&stored.expected_because),
            text(&again.expected_because)
        ));
    }
    // Anything else: a derived field edited, a field the outcome does not have.
    let judged = ["verdict", "differences", "expected", "expected_because"];
    let (s, a) = (
        serde_json::to_value(stored).expect("a record serialises"),
        serde_json::to_value(again).expect("a record serialises"),
    );
    if let (Some(s), Some(a)) = (s.as_object(), a.as_object()) {
        for (field, value) in s {
            let given = a.get(field).unwrap_or(&serde_json::Value::Null);
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
            serde_json::json!({"cases": ["tail_call.chain"], "jit_modes": ["jit"]})
        );
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
    fn other_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        let text = to_json(&unavailable("4.16"));
        std::fs::write(&p, text.replace(SCHEMA, "bpfmatrix-matrix/1")).unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(
            err.contains("has schema 'bpfmatrix-matrix/1', this bpfmatrix reads 'bpfmatrix-matrix/2' (a /1 document does not say which cells its runs asked for"),
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
