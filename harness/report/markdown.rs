//! The Markdown matrix: reads well on GitHub and in `$GITHUB_STEP_SUMMARY`.

use super::{
    cell_summary, coverage_lines, grid, header, kernel_line, seed_articles, verdict_line, MISSING,
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
    out
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
