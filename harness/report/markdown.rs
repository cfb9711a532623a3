//! The Markdown matrix: reads well on GitHub and in `$GITHUB_STEP_SUMMARY`.

use super::{
    cell_summary, columns_text, cost_row, cost_sources, costs, coverage_lines, grid, header,
    kernel_line, program_grid, program_rules_line, program_summary, program_wrongs, refusals,
    seed_articles, tested_only, verdict_line, COST_HEADINGS, MISSING, PROGRAM_LEGEND,
};
use crate::expect::{errno_name, last_line};
use crate::matrix::{Matrix, Verdict};
use bpfmatrix_protocol::Outcome;
use std::fmt::Write;

/// The mark of a cell without an answer (or without a cell at all).
const NO_ANSWER: &str = "⚪";

fn emoji(v: &Verdict) -> &'static str {
    match v {
        Verdict::Agrees => "✅",
        Verdict::Disagrees { .. } => "❌",
        Verdict::NoAnswer { .. } => NO_ANSWER,
    }
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
        out += &programs(m);
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
                Some(c) => format!("{} {}", emoji(&c.verdict), cell(&cell_summary(c))),
                None => format!("{NO_ANSWER} {MISSING}"),
            })
            .collect();
        let _ = writeln!(out, "| `{case}` | {} |", texts.join(" | "));
    }
    out += "\n✅ agrees with the documented kernel facts · ❌ disagrees · ⚪ no answer\n";
    let articles = seed_articles(&m.cases());
    if !articles.is_empty() {
        out += "\nThe seed demos' articles:\n\n";
        for a in articles {
            let _ = writeln!(out, "- {}", cell(&a));
        }
    }

    let tested = || m.cells().filter(|(k, _)| k.tested());
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
    let wrong: Vec<_> = tested().filter(|(_, c)| !c.agrees()).collect();
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
    out + &programs(m)
}

/// The programs' part: their table with each minimum kernel, each distinct
/// refusal in the verifier's words, what did not agree, and the costs.
fn programs(m: &Matrix) -> String {
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
    let _ = writeln!(out, "\n{PROGRAM_LEGEND}\n\n{}", program_rules_line(m));
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
    use crate::report::tests::{run, unavailable};

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
}
