//! The Markdown matrix: reads well on GitHub and in `$GITHUB_STEP_SUMMARY`.
//!
//! Markdown has no colour: a JIT mode a kernel was built without is its cells'
//! mark alone ([`NOT_APPLICABLE`]) and one note per kernel and mode under the
//! table, with the evidence; a kernel oops the facts expect has its own mark
//! ([`EXPECTED_BUG`]) and words, not the tick of a plain pass.

use super::{
    cell_summary, columns_text, cost_row, cost_sources, costs, coverage_lines, expected_bug_words,
    expected_kernel_bug, grid, header, kernel_line, lacking, program_grid, program_rules_line,
    program_summary, program_wrongs, refusals, seed_articles, short_summary, tested_only,
    verdict_line, COST_HEADINGS, MISSING, NOT_APPLICABLE_WORDS, PROGRAM_LEGEND,
};
use crate::expect::{errno_name, last_line};
use crate::matrix::{Cell, Matrix, Verdict};
use bpfmatrix_protocol::Outcome;
use std::fmt::Write;

/// The mark of a cell without an answer (or without a cell at all).
const NO_ANSWER: &str = "⚪";
/// The mark of a cell of a mode the kernel was built without.
const NOT_APPLICABLE: &str = "➖";
/// The mark of a cell that agrees because the kernel oopsed as documented.
const EXPECTED_BUG: &str = "⚠️";

fn emoji(v: &Verdict) -> &'static str {
    match v {
        Verdict::Agrees => "✅",
        Verdict::Disagrees { .. } => "❌",
        Verdict::NoAnswer { .. } => NO_ANSWER,
        Verdict::NotApplicable { .. } => NOT_APPLICABLE,
    }
}

/// A case cell: its mark and summary; the mark alone in a mode the kernel
/// lacks; [`EXPECTED_BUG`] and "expected" for an expected kernel oops.
fn case_cell(c: &Cell) -> String {
    match &c.verdict {
        Verdict::NotApplicable { .. } => NOT_APPLICABLE.to_string(),
        Verdict::Agrees if expected_kernel_bug(c) => {
            format!("{EXPECTED_BUG} expected {}", cell(&short_summary(c)))
        }
        v => format!("{} {}", emoji(v), cell(&cell_summary(c))),
    }
}

/// Each mode a kernel was built without, once, with its evidence: a list
/// under the first table.
fn lacking_notes(m: &Matrix) -> String {
    let mut out = String::new();
    for l in lacking(m) {
        let _ = writeln!(
            out,
            "- {NOT_APPLICABLE} {} {}: {}",
            cell(&l.kernel.kernel),
            l.jit,
            cell(l.what)
        );
        for e in l.evidence {
            let _ = writeln!(out, "  - {}", cell(e));
        }
    }
    if !out.is_empty() {
        out.insert(0, '\n');
    }
    out
}

/// Escapes what would break a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(m: &Matrix) -> String {
    let mut out = String::from("## bpfmatrix: which kernels accept and run these programs\n\n");
    let _ = writeln!(out, "**{}**\n", verdict_line(m));
    for k in &m.runs {
        let _ = writeln!(out, "- {}", cell(&kernel_line(k)));
    }
    out.push('\n');
    let coverage = coverage_lines(m);
    if !coverage.is_empty() {
        out += "### Coverage\n\n";
        for line in coverage {
            let _ = writeln!(out, "- {}", cell(&line));
        }
        out.push('\n');
    }
    let (columns, rows) = grid(m, true);
    let headers: Vec<String> = columns.iter().map(header).collect();
    if rows.is_empty() {
        out += &programs(m, true);
        return out;
    }
    let _ = writeln!(out, "| case | {} |", headers.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(headers.len()));
    for (case, cells) in &rows {
        if cells.is_empty() {
            let _ = writeln!(out, "| **{}** |{}", cell(case), " |".repeat(headers.len()));
            continue;
        }
        let texts: Vec<String> = cells
            .iter()
            .zip(&columns)
            .map(|(c, (k, _))| match c {
                Some(_) if !k.tested() => "unavailable".to_string(),
                Some(c) => case_cell(c),
                None => format!("{NO_ANSWER} {MISSING}"),
            })
            .collect();
        let _ = writeln!(out, "| `{case}` | {} |", texts.join(" | "));
    }
    let shown = || {
        rows.iter()
            .flat_map(|(_, cells)| cells.iter().zip(&columns))
            .filter(|(_, (k, _))| k.tested())
            .filter_map(|(c, _)| *c)
    };
    out += "\n✅ agrees with the documented kernel facts · ❌ disagrees · ⚪ no answer";
    if shown().any(|c| matches!(c.verdict, Verdict::NotApplicable { .. })) {
        let _ = write!(out, " · {NOT_APPLICABLE} {NOT_APPLICABLE_WORDS}");
    }
    if shown().any(|c| expected_kernel_bug(c) && c.agrees()) {
        let _ = write!(out, " · {EXPECTED_BUG} {}", expected_bug_words());
    }
    out.push('\n');
    out += &lacking_notes(m);
    let articles = seed_articles(&m.cases());
    if !articles.is_empty() {
        out += "\nThe seed demos' articles:\n\n";
        for a in articles {
            let _ = writeln!(out, "- {}", cell(&a));
        }
    }

    // What an agent said in a mode the kernel lacks is said nowhere.
    let tested = || {
        m.cells()
            .filter(|(k, c)| k.tested() && !matches!(c.verdict, Verdict::NotApplicable { .. }))
    };
    let rejected: Vec<_> = tested()
        .filter_map(|(k, c)| match c.record.as_ref().map(|r| &r.outcome) {
            Some(Outcome::Rejected {
                errno,
                verifier_tail,
                ..
            }) => Some((k, c, errno, verifier_tail)),
            _ => None,
        })
        .collect();
    if !rejected.is_empty() {
        out += "\n### The verifier's words\n\n| kernel | mode | case | errno | verifier |\n|---|---|---|---|---|\n";
        for (k, c, errno, verifier_tail) in rejected {
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {} | `{}` |",
                cell(&k.kernel),
                c.jit,
                c.case,
                errno_name(*errno),
                cell(last_line(verifier_tail)).replace('`', "'")
            );
        }
    }
    let wrong: Vec<_> = tested().filter(|(_, c)| !c.passes()).collect();
    if !wrong.is_empty() {
        out += "\n### Disagreements and missing answers\n\n";
        for (k, c) in wrong {
            let _ = writeln!(
                out,
                "<details><summary>{} {} <code>{}</code></summary>\n\n```\n{}```\n</details>\n",
                k.kernel,
                c.jit,
                c.case,
                super::explain(c)
            );
        }
    }
    out + &programs(m, false)
}

/// The programs' part: their table with each minimum kernel (and, with
/// `say_lacking`, the modes kernels lack, when no table of cases said them),
/// each distinct refusal in the verifier's words, what did not agree, and the
/// costs.
fn programs(m: &Matrix, say_lacking: bool) -> String {
    let (columns, rows) = program_grid(m, true);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n### Programs\n\n");
    let headers: Vec<String> = columns.iter().map(header).collect();
    let _ = writeln!(
        out,
        "| program | {} | minimum kernel |",
        headers.join(" | ")
    );
    let _ = writeln!(out, "|---|{}---|", "---|".repeat(headers.len()));
    for row in &rows {
        let texts: Vec<String> = row
            .cells
            .iter()
            .zip(&columns)
            .map(|(c, (k, _))| match c {
                Some(_) if !k.tested() => "unavailable".to_string(),
                Some(c) if matches!(c.verdict, Verdict::NotApplicable { .. }) => {
                    NOT_APPLICABLE.to_string()
                }
                Some(c) => cell(&program_summary(c)),
                None => MISSING.to_string(),
            })
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            row.label,
            texts.join(" | "),
            cell(&row.minimum)
        );
    }
    let not_applicable = rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .any(|c| matches!(c.verdict, Verdict::NotApplicable { .. }));
    let _ = write!(out, "\n{PROGRAM_LEGEND}");
    if not_applicable {
        let _ = write!(out, " · {NOT_APPLICABLE} {NOT_APPLICABLE_WORDS}");
    }
    out.push('\n');
    if say_lacking {
        out += &lacking_notes(m);
    }
    let _ = writeln!(out, "\n{}", program_rules_line(m));
    let (tested, rows) = tested_only(&columns, rows);
    let refused = refusals(&tested, &rows);
    if !refused.is_empty() {
        out += "\n#### Why programs were not loaded, in the verifier's words\n\n";
        for r in refused {
            let _ = writeln!(
                out,
                "- `{}` on {}: {}",
                r.label,
                cell(&r.kernels(&tested)),
                cell(&r.what)
            );
            if !r.words.is_empty() {
                let _ = writeln!(out, "\n  ```\n{}\n  ```", indent(&r.words));
            }
        }
    }
    let wrong = program_wrongs(&tested, &rows);
    if !wrong.is_empty() {
        out += "\n#### Programs that are not what was expected, or without an answer\n\n";
        for (label, why, these) in wrong {
            let _ = writeln!(
                out,
                "- `{label}` on {}: {}",
                cell(&columns_text(&these, &tested)),
                cell(&why)
            );
        }
    }
    let costs = costs(&tested, &rows);
    if !costs.is_empty() {
        out += "\n<details><summary>What verifying each accepted program cost</summary>\n\n";
        let _ = writeln!(out, "| program | kernel | {} |", COST_HEADINGS.join(" | "));
        let _ = writeln!(out, "|---|---|{}", "---|".repeat(COST_HEADINGS.len()));
        for (label, column, cost) in &costs {
            let _ = writeln!(
                out,
                "| `{label}` | {} | {} |",
                header(column),
                cost_row(cost).join(" | ")
            );
        }
        let _ = writeln!(
            out,
            "\n{}\n</details>",
            cost_sources(costs.iter().map(|c| c.2))
        );
    }
    out
}

/// The verifier's lines inside a list item's code block.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{
        five_checked_without_interpreter, lacking_and_oops, run, unavailable,
        AGENT_COULD_NOT_SWITCH, NO_INTERPRETER,
    };
    use bpfmatrix_protocol::CaseId;

    #[test]
    fn the_table_has_a_column_per_kernel_and_mode_and_escapes_pipes() {
        let mut u = unavailable("4.16");
        u.status = crate::matrix::RunStatus::Unavailable {
            reason: "no | source".into(),
        };
        let md = markdown(&Matrix::from_runs([run("6.1", 33), run("5.10", 32), u]));
        assert!(
            md.contains("| case | 6.1 jit | 5.10 jit | 4.16 jit |"),
            "{md}"
        );
        assert!(md.contains("| `tail_call.chain` | ✅ accepted, 33 tail calls | ❌ accepted, 32 tail calls | unavailable |"), "{md}");
        assert!(md.contains("no \\| source"), "{md}");
        assert!(
            md.contains("<summary>5.10 jit <code>tail_call.chain</code></summary>"),
            "{md}"
        );
        assert!(
            !md.contains("<summary>4.16"),
            "unavailable kernels are not listed as disagreements: {md}"
        );
    }

    #[test]
    fn a_mode_a_kernel_lacks_is_its_mark_and_one_note() {
        let md = markdown(&lacking_and_oops());
        assert_eq!(md.matches(NO_INTERPRETER).count(), 1, "{md}");
        assert!(!md.contains(AGENT_COULD_NOT_SWITCH), "{md}");
        assert!(
            md.contains("| case | 5.4 jit | 5.4 interpreter | 6.12 jit | 6.12 interpreter |"),
            "{md}"
        );
        let rows: Vec<Vec<&str>> = md
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| l.split(" | ").collect())
            .collect();
        assert_eq!(rows.len(), CaseId::ALL.len(), "{md}");
        for row in &rows {
            assert_eq!(row[2], NOT_APPLICABLE, "{row:?}");
            assert_eq!(
                row.iter().filter(|c| c.contains(NOT_APPLICABLE)).count(),
                1,
                "{row:?}"
            );
        }
        assert!(md.contains(&format!("\n- ➖ 5.4 interpreter: {NO_INTERPRETER}\n  - CONFIG_BPF_JIT_ALWAYS_ON=y, in boot/config-5.4.0-216-generic\n  - the guest's write of 0 to net.core.bpf_jit_enable was refused: ")), "{md}");
        assert!(
            md.contains(&format!(" · ➖ {NOT_APPLICABLE_WORDS}")),
            "{md}"
        );
        assert!(!md.contains("<summary>5.4 interpreter"), "{md}");
    }

    #[test]
    fn an_expected_kernel_oops_has_its_own_mark_and_words() {
        let md = markdown(&lacking_and_oops());
        let row = md
            .lines()
            .find(|l| l.starts_with("| `seed.seccomp_tail_call "))
            .unwrap();
        assert!(
            row.ends_with(" | ✅ accepted, 3 trace lines | ⚠️ expected oops (signal 11) |"),
            "{row}"
        );
        assert_eq!(md.matches("⚠️ expected oops").count(), 1, "{md}");
        assert!(md.contains(" · ⚠️ expected kernel bug: the kernel oopses as documented (011832b97b31, from 6.9), so the cell agrees\n"), "{md}");
        let plain = markdown(&Matrix::from_runs([run("6.1", 33)]));
        assert!(
            !plain.contains("expected kernel bug") && !plain.contains("➖"),
            "{plain}"
        );
    }

    #[test]
    fn a_programs_mode_the_kernel_lacks_is_its_mark_and_one_note() {
        let md = markdown(&five_checked_without_interpreter());
        assert_eq!(md.matches(NO_INTERPRETER).count(), 1, "{md}");
        assert!(
            md.contains("| `probe.o:tail_mix` | ✓ 33 insns | ➖ | ✓ 33 insns | ✗ EINVAL ⚠ |"),
            "{md}"
        );
        assert!(md.contains(&format!("{PROGRAM_LEGEND} · ➖ {NOT_APPLICABLE_WORDS}\n\n- ➖ 5.4 interpreter: {NO_INTERPRETER}\n")), "{md}");
    }
}
