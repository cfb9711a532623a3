//! Judges the programs of users' objects (`bpfmatrix check`): the rules of an
//! `--expect` file ([`ProgramRules`]), one verdict per kernel x JIT mode x program
//! ([`ProgramCell::judge`], the only place such a verdict is given), and each
//! program's minimum kernel across a matrix ([`minimum_kernels`]).
//!
//! Without a rule a program must load on every kernel given. A rule names the
//! first kernel that must accept a program: it must be accepted from there on and
//! refused before it (a kernel older than the rule that accepts it means the rule
//! is out of date, which is worth a disagreement).

use crate::expect::{describe_outcome, KernelVersion};
use crate::matrix::{Matrix, Verdict};
use crate::modes::{KernelFacts, ModeStatus};
use anyhow::{bail, Context, Result};
use bpfmatrix_protocol::{JitMode, ObjectSpec, Outcome, ProgramRecord};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One rule of an `--expect` file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstKernel {
    /// The program's name.
    pub program: String,
    /// The object it is in (its file name), when the name alone is ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The first kernel (MAJOR.MINOR) that must accept it.
    pub first_kernel: String,
}

/// The rules of an `--expect` file, or none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRules {
    /// The file the rules came from, as the user named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, rename = "program")]
    pub rules: Vec<FirstKernel>,
}

/// What an `--expect` file looks like on disk.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    #[serde(default)]
    program: Vec<FirstKernel>,
}

impl ProgramRules {
    /// Reads an `--expect` file: `[[program]]` tables with `program`, optional
    /// `object` and `first_kernel`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the expect file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let parsed: ExpectFile =
            toml::from_str(text).with_context(|| format!("{file} is not a valid expect file"))?;
        for rule in &parsed.program {
            KernelVersion::parse(&rule.first_kernel)
                .with_context(|| format!("{file}: program {}: first_kernel", rule.program))?;
        }
        Ok(ProgramRules {
            file: Some(file.to_string()),
            rules: parsed.program,
        })
    }

    /// Refuses rules that name no program of `objects`, or name one ambiguously,
    /// or twice: a typo must not silently leave a program to the default.
    pub fn check_against(&self, objects: &[ObjectSpec]) -> Result<()> {
        let file = self.file.as_deref().unwrap_or("the expect file");
        for (i, rule) in self.rules.iter().enumerate() {
            let matches: Vec<&ObjectSpec> = objects
                .iter()
                .filter(|o| rule.object.as_deref().is_none_or(|n| n == o.name))
                .filter(|o| o.programs.contains(&rule.program))
                .collect();
            match matches.len() {
                0 => bail!(
                    "{file}: no object given has a program {}{}",
                    rule.program,
                    rule.object
                        .as_deref()
                        .map(|o| format!(" in {o}"))
                        .unwrap_or_default()
                ),
                1 => {}
                _ => bail!(
                    "{file}: program {} is in {} objects ({}); say which with object = \"...\"",
                    rule.program,
                    matches.len(),
                    matches
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            if self.rules[..i]
                .iter()
                .any(|r| r.program == rule.program && r.object == rule.object)
            {
                bail!("{file}: program {} has two rules", rule.program);
            }
        }
        Ok(())
    }

    /// The rule for `program` of `object`, if any.
    pub fn rule(&self, object: &str, program: &str) -> Option<&FirstKernel> {
        self.rules
            .iter()
            .find(|r| r.program == program && r.object.as_deref().is_none_or(|o| o == object))
    }

    /// What a kernel of `version` must do with the program.
    pub fn expectation(
        &self,
        object: &str,
        program: &str,
        version: KernelVersion,
    ) -> ProgramExpectation {
        let file = self.file.as_deref().unwrap_or("the expect file");
        match self
            .rule(object, program)
            .map(|r| (r, KernelVersion::parse(&r.first_kernel)))
        {
            Some((r, Ok(first))) => ProgramExpectation {
                accept: version >= first,
                because: format!("first kernel {} ({file})", r.first_kernel),
            },
            Some((r, Err(e))) => ProgramExpectation {
                // parse() refused such a file; a hand-edited matrix.json may not.
                accept: true,
                because: format!("unreadable first kernel {} ({e})", r.first_kernel),
            },
            None => ProgramExpectation {
                accept: true,
                because: match &self.file {
                    Some(f) => format!("no rule in {f}: every program must load on every kernel"),
                    None => "no --expect file: every program must load on every kernel".into(),
                },
            },
        }
    }
}

/// What a kernel must do with a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramExpectation {
    /// Whether it must accept it (otherwise it must refuse it).
    pub accept: bool,
    /// Why: the rule and where it came from.
    pub because: String,
}

/// One kernel x JIT mode x program of a user object.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramCell {
    pub object: String,
    pub program: String,
    pub jit: JitMode,
    /// The guest's record as it sent it.
    pub record: Option<ProgramRecord>,
    pub expected: Option<ProgramExpectation>,
    pub verdict: Verdict,
}

impl ProgramCell {
    /// The one place a program's verdict is given. `release` is the guest's
    /// `uname -r`; `no_record` says why there is no record, when there is none;
    /// `facts` say which modes the kernel has.
    #[allow(clippy::too_many_arguments)]
    pub fn judge(
        object: &str,
        program: &str,
        jit: JitMode,
        release: Option<&str>,
        record: Option<ProgramRecord>,
        rules: &ProgramRules,
        no_record: &str,
        facts: &KernelFacts,
    ) -> ProgramCell {
        let mut cell = ProgramCell {
            object: object.to_string(),
            program: program.to_string(),
            jit,
            record: None,
            expected: None,
            verdict: Verdict::NoAnswer {
                reason: no_record.to_string(),
            },
        };
        match facts.mode(jit) {
            ModeStatus::Runs => {}
            ModeStatus::Absent { what, .. } => {
                cell.verdict = Verdict::NotApplicable {
                    reason: what.clone(),
                };
                cell.record = record;
                return cell;
            }
            ModeStatus::Contradicted { reason } => {
                cell.verdict = Verdict::NoAnswer {
                    reason: reason.clone(),
                };
                cell.record = record;
                return cell;
            }
        }
        let Some(rec) = record else { return cell };
        let version = match release.map(KernelVersion::parse) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                cell.verdict = Verdict::NoAnswer {
                    reason: format!("{e:#}"),
                };
                cell.record = Some(rec);
                return cell;
            }
            None => {
                cell.verdict = Verdict::NoAnswer {
                    reason: "no kernel version to derive an expectation from".into(),
                };
                cell.record = Some(rec);
                return cell;
            }
        };
        let e = rules.expectation(object, program, version);
        cell.verdict = match (&rec.outcome, e.accept) {
            (Outcome::Accepted, true) => Verdict::Agrees,
            (Outcome::Rejected { .. } | Outcome::Unsupported { .. }, false) => Verdict::Agrees,
            (Outcome::NotLoadable { reason }, _) => Verdict::NoAnswer {
                reason: format!("bpfmatrix cannot load it: {reason}"),
            },
            (Outcome::Accepted, false) => Verdict::Disagrees {
                differences: vec![format!(
                    "expected a refusal ({}), but {version} accepted it: the rule is out of date",
                    e.because
                )],
            },
            (other, _) => Verdict::Disagrees {
                differences: vec![format!(
                    "expected {} ({}), got {}",
                    if e.accept { "accepted" } else { "a refusal" },
                    e.because,
                    describe_outcome(other)
                )],
            },
        };
        cell.expected = Some(e);
        cell.record = Some(rec);
        cell
    }

    pub fn agrees(&self) -> bool {
        self.verdict == Verdict::Agrees
    }

    /// Agrees, or is not applicable (see [`crate::matrix::Cell::passes`]).
    pub fn passes(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Agrees | Verdict::NotApplicable { .. }
        )
    }

    /// Whether the kernel accepted the program; `None` when it gave no answer
    /// about it (no record, not loadable here, an error of the agent).
    pub fn accepted(&self) -> Option<bool> {
        match self.record.as_ref().map(|r| &r.outcome) {
            Some(Outcome::Accepted) => Some(true),
            Some(Outcome::Rejected { .. } | Outcome::Unsupported { .. }) => Some(false),
            _ => None,
        }
    }
}

/// One program's history across the kernels of a matrix, in one JIT mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MinimumKernel {
    pub object: String,
    pub program: String,
    pub jit: JitMode,
    /// The oldest kernel of the run that accepts the program (by its guest's
    /// version); none when no kernel did.
    pub oldest_accepting: Option<String>,
    /// Every kernel where acceptance differs from the next older kernel that
    /// answered, oldest first, with what it did there.
    pub flips: Vec<Flip>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Flip {
    pub kernel: String,
    pub accepted: bool,
}

/// Each program's minimum kernel and flips, per JIT mode, in the order the
/// programs first appear. Kernels without a version or an answer are left out.
pub fn minimum_kernels(m: &Matrix) -> Vec<MinimumKernel> {
    let mut keys: Vec<(&str, &str, JitMode)> = Vec::new();
    for run in &m.runs {
        for c in &run.programs {
            let key = (c.object.as_str(), c.program.as_str(), c.jit);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys.into_iter()
        .map(|(object, program, jit)| {
            let mut answers: Vec<(KernelVersion, &str, bool)> = m
                .runs
                .iter()
                // A kernel built without the mode says nothing of it.
                .filter(|run| run.facts.absent(jit).is_none())
                .filter_map(|run| {
                    let v = KernelVersion::parse(run.guest_release.as_deref()?).ok()?;
                    let cell = run
                        .programs
                        .iter()
                        .find(|c| c.object == object && c.program == program && c.jit == jit)?;
                    Some((v, run.kernel.as_str(), cell.accepted()?))
                })
                .collect();
            answers.sort_by_key(|(v, _, _)| *v);
            let oldest_accepting = answers
                .iter()
                .find(|(_, _, ok)| *ok)
                .map(|(_, k, _)| k.to_string());
            let flips = answers
                .windows(2)
                .filter(|w| w[0].2 != w[1].2)
                .map(|w| Flip {
                    kernel: w[1].1.to_string(),
                    accepted: w[1].2,
                })
                .collect();
            MinimumKernel {
                object: object.to_string(),
                program: program.to_string(),
                jit,
                oldest_accepting,
                flips,
            }
        })
        .collect()
}
