//! Turns the lines a guest sent home into typed results. Guest output is untrusted
//! input: every line that is not a well-formed message for the plan that was sent
//! becomes a named problem, never a result.

use bpfmatrix_protocol::{
    CaseId, CaseRecord, GuestMessage, JitMode, Plan, ProgramRecord, Stream, PROTOCOL_VERSION,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How much of a bad line a problem quotes.
const QUOTE: usize = 120;
/// How much of one agent warning is kept.
const WARNING_CHARS: usize = 1000;
/// How many problems (and warnings) a run keeps: a flooding guest must not turn
/// the report into megabytes.
const MAX_NOTES: usize = 20;

/// The agent's mode switch as it reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JitSwitch {
    pub mode: JitMode,
    pub sysctl_readback: Option<String>,
    pub error: Option<String>,
}

/// Everything usable a guest said, and everything wrong with what it said.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Collected {
    /// `uname -r` from the guest's hello.
    pub release: Option<String>,
    /// Guest uptime when the agent started and when it finished, milliseconds.
    pub agent_start_ms: Option<u64>,
    pub done_ms: Option<u64>,
    /// Guest uptime when an agent that waited for its plan said it was ready.
    pub ready_ms: Option<u64>,
    /// The agent build a guest that waited for its plan named in its hello.
    pub agent_id: Option<String>,
    pub records: BTreeMap<(CaseId, JitMode), CaseRecord>,
    /// Records of the user's programs, by object, program and JIT mode.
    pub programs: BTreeMap<ProgramKey, ProgramRecord>,
    pub jit_switches: Vec<JitSwitch>,
    /// Warnings the agent itself reported (a module that did not load...).
    pub warnings: Vec<String>,
    /// Lines that broke the protocol: garbage, truncation, unexpected records.
    pub problems: Vec<String>,
    /// The plan's command (`bpfmatrix exec`): its output, in the order it came,
    /// and how it ended, per JIT mode.
    pub output: Vec<(JitMode, Stream, String)>,
    pub exits: BTreeMap<JitMode, Exit>,
}

/// How a guest's command ended in one JIT mode, as the agent said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub output_dropped: u64,
    pub duration_ms: u64,
}

/// A program of a user object in one JIT mode: object name, program name, mode.
pub type ProgramKey = (String, String, JitMode);

/// One line from the result port: its text and whether the host cut it short.
pub struct Line<'a> {
    pub text: &'a str,
    pub truncated: bool,
}

pub fn collect<'a>(plan: &Plan, lines: impl IntoIterator<Item = Line<'a>>) -> Collected {
    let mut c = Collected::default();
    for (n, line) in lines.into_iter().enumerate() {
        let n = n + 1;
        let text = line.text.trim_end_matches(['\r', '\n']);
        if line.truncated {
            c.problems.push(format!(
                "line {n}: longer than the {} byte limit, cut: {}",
                bpfmatrix_protocol::MAX_LINE_BYTES,
                quote(text)
            ));
            continue;
        }
        if text.trim().is_empty() {
            continue;
        }
        let msg = match serde_json::from_str::<GuestMessage>(text) {
            Ok(msg) => msg,
            Err(e) => {
                c.problems.push(format!(
                    "line {n}: not a guest message ({e}): {}",
                    quote(text)
                ));
                continue;
            }
        };
        // A guest that waits for its plan says it is ready before its hello.
        if c.release.is_none()
            && !matches!(msg, GuestMessage::Hello { .. } | GuestMessage::Ready { .. })
        {
            c.problems.push(format!(
                "line {n}: a message before the hello: {}",
                quote(text)
            ));
            continue;
        }
        match msg {
            GuestMessage::Ready { uptime_ms, .. } => {
                if c.release.is_some() || c.ready_ms.is_some() {
                    c.problems
                        .push(format!("line {n}: a ready that is not the first message"));
                } else {
                    c.ready_ms = Some(uptime_ms);
                }
            }
            GuestMessage::Hello {
                protocol,
                kernel_release,
                uptime_ms,
                agent_id,
            } => {
                c.agent_id = agent_id;
                if protocol != PROTOCOL_VERSION {
                    c.problems.push(format!(
                        "line {n}: guest speaks protocol {protocol}, the host {PROTOCOL_VERSION}"
                    ));
                } else if c.release.is_some() {
                    c.problems.push(format!("line {n}: a second hello"));
                } else {
                    c.release = Some(kernel_release);
                    c.agent_start_ms = Some(uptime_ms);
                }
            }
            GuestMessage::Program(record) => {
                let planned = plan.jit_modes.contains(&record.jit)
                    && plan
                        .objects
                        .iter()
                        .any(|o| o.name == record.object && o.programs.contains(&record.program));
                let key = (record.object.clone(), record.program.clone(), record.jit);
                if !planned {
                    c.problems.push(format!(
                        "line {n}: a record for program {} of {} / {} that the plan did not ask for",
                        record.program, record.object, record.jit
                    ));
                } else {
                    match c.programs.entry(key) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            c.problems.push(format!(
                                "line {n}: a second record for program {} of {} / {}",
                                record.program, record.object, record.jit
                            ))
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(record);
                        }
                    }
                }
            }
            GuestMessage::JitMode {
                mode,
                sysctl_readback,
                error,
            } => c.jit_switches.push(JitSwitch {
                mode,
                sysctl_readback,
                error,
            }),
            GuestMessage::Output { jit, stream, text } => {
                if plan.exec.is_none() || !plan.jit_modes.contains(&jit) {
                    c.problems.push(format!(
                        "line {n}: command output that the plan did not ask for: {}",
                        quote(&text)
                    ));
                } else if c.exits.contains_key(&jit) {
                    c.problems
                        .push(format!("line {n}: command output after its exit ({jit})"));
                } else {
                    c.output.push((jit, stream, text));
                }
            }
            GuestMessage::Exited {
                jit,
                code,
                signal,
                error,
                output_dropped,
                duration_ms,
            } => {
                if plan.exec.is_none() || !plan.jit_modes.contains(&jit) {
                    c.problems.push(format!(
                        "line {n}: a command's exit that the plan did not ask for ({jit})"
                    ));
                } else {
                    match c.exits.entry(jit) {
                        std::collections::btree_map::Entry::Occupied(_) => c
                            .problems
                            .push(format!("line {n}: a second exit of the command ({jit})")),
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(Exit {
                                code,
                                signal,
                                error,
                                output_dropped,
                                duration_ms,
                            });
                        }
                    }
                }
            }
            GuestMessage::Case(record) => {
                let key = (record.case, record.jit);
                if !plan.cases.contains(&record.case) || !plan.jit_modes.contains(&record.jit) {
                    c.problems.push(format!(
                        "line {n}: a record for {} / {} that the plan did not ask for",
                        record.case, record.jit
                    ));
                } else {
                    match c.records.entry(key) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            c.problems.push(format!(
                                "line {n}: a second record for {} / {}",
                                record.case, record.jit
                            ))
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(record);
                        }
                    }
                }
            }
            GuestMessage::Warning { message } => c.warnings.push(cut(&message, WARNING_CHARS)),
            GuestMessage::Done { uptime_ms } => c.done_ms = Some(uptime_ms),
        }
    }
    for notes in [&mut c.problems, &mut c.warnings] {
        if notes.len() > MAX_NOTES {
            let more = notes.len() - MAX_NOTES;
            notes.truncate(MAX_NOTES);
            notes.push(format!("… and {more} more"));
        }
    }
    c
}

fn quote(text: &str) -> String {
    format!("{:?}", cut(text, QUOTE))
}

fn cut(text: &str, chars: usize) -> String {
    let mut q: String = text.chars().take(chars).collect();
    if q.len() < text.len() {
        q.push('…');
    }
    q
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bpfmatrix_protocol::{Measured, Outcome};

    /// A plan of one case in one JIT mode.
    pub(crate) fn plan() -> Plan {
        Plan {
            protocol: PROTOCOL_VERSION,
            cases: vec![CaseId::TailCallChain],
            jit_modes: vec![JitMode::Jit],
            modules: vec![],
            result_port: "/dev/ttyS1".into(),
            fault: None,
            objects: vec![],
            exec: None,
        }
    }

    fn lines(texts: &[String]) -> Vec<Line<'_>> {
        texts
            .iter()
            .map(|t| Line {
                text: t,
                truncated: false,
            })
            .collect()
    }

    fn hello() -> String {
        serde_json::to_string(&GuestMessage::Hello {
            protocol: PROTOCOL_VERSION,
            agent_id: None,
            kernel_release: "6.1.0-56-amd64".into(),
            uptime_ms: 2100,
        })
        .unwrap()
    }

    fn case(case: CaseId) -> String {
        serde_json::to_string(&GuestMessage::Case(CaseRecord {
            case,
            jit: JitMode::Jit,
            outcome: Outcome::Accepted,
            measured: Measured {
                tail_calls: Some(33),
                ..Measured::default()
            },
            duration_ms: 3,
        }))
        .unwrap()
    }

    #[test]
    fn a_clean_run_gives_records_and_no_problems() {
        let done = r#"{"type":"done","uptime_ms":2500}"#.to_string();
        let c = collect(
            &plan(),
            lines(&[hello(), case(CaseId::TailCallChain), done]),
        );
        assert_eq!(c.problems, Vec::<String>::new());
        assert_eq!(c.release.as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(c.done_ms, Some(2500));
        assert_eq!(
            c.records[&(CaseId::TailCallChain, JitMode::Jit)]
                .measured
                .tail_calls,
            Some(33)
        );
    }

    #[test]
    fn garbage_truncation_and_unasked_records_are_problems_not_results() {
        let full = case(CaseId::TailCallChain);
        let texts = vec![
            hello(),
            "\u{1b}[0m random console noise".to_string(),
            full[..full.len() / 2].to_string(),
            case(CaseId::FentryTcLoopback),
            full.clone(),
            full,
        ];
        let mut ls = lines(&texts);
        ls.push(Line {
            text: "{\"type\":\"ca",
            truncated: true,
        });
        let c = collect(&plan(), ls);
        assert_eq!(c.records.len(), 1);
        assert_eq!(c.problems.len(), 5, "{:#?}", c.problems);
        assert!(c.problems[0].starts_with("line 2: not a guest message"));
        assert!(c.problems[1].starts_with("line 3: not a guest message"));
        assert!(
            c.problems[2].contains("fentry_fexit_tc.loopback / jit that the plan did not ask for")
        );
        assert!(c.problems[3].contains("a second record"));
        assert!(c.problems[4].contains("longer than"));
    }

    #[test]
    fn a_flood_of_bad_lines_keeps_a_bounded_report() {
        let mut texts = vec![hello()];
        texts.extend((0..5000).map(|i| format!("noise {i}")));
        texts.push(format!(
            r#"{{"type":"warning","message":"{}"}}"#,
            "w".repeat(100_000)
        ));
        let c = collect(&plan(), lines(&texts));
        assert_eq!(c.problems.len(), MAX_NOTES + 1);
        assert_eq!(c.problems[MAX_NOTES], "… and 4980 more");
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].chars().count() <= WARNING_CHARS + 1);
    }

    #[test]
    fn nothing_before_hello_counts_and_other_protocols_are_refused() {
        let wrong = r#"{"type":"hello","protocol":99,"kernel_release":"x","uptime_ms":1}"#;
        let c = collect(
            &plan(),
            lines(&[case(CaseId::TailCallChain), wrong.to_string()]),
        );
        assert!(c.records.is_empty());
        assert_eq!(c.release, None);
        assert_eq!(c.problems.len(), 2, "{:#?}", c.problems);
        assert!(c.problems[1].contains("protocol 99"));
    }
}
