//! The Markdown matrix: reads well on GitHub and in `$GITHUB_STEP_SUMMARY`.

use super::{cell_summary, coverage_lines, grid, kernel_line, verdict_line, MISSING};
use crate::document::{CellVerdict, Document, Status};
use crate::expect::last_line;
use std::fmt::Write;

fn emoji(v: CellVerdict) -> &'static str {
    match v {
        CellVerdict::Agrees => "✅",
        CellVerdict::Disagrees => "❌",
        CellVerdict::NoAnswer => "⚪",
    }
}

/// Escapes what would break a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(doc: &Document) -> String {
    let mut out = String::from("## bpfmatrix: which kernels accept and run these programs\n\n");
    let _ = writeln!(out, "**{}**\n", verdict_line(doc));
    for k in &doc.kernels {
        let _ = writeln!(out, "- {}", cell(&kernel_line(k)));
    }
    out.push('\n');
    let coverage = coverage_lines(doc);
    if !coverage.is_empty() {
        out += "### Coverage\n\n";
        for line in coverage {
            let _ = writeln!(out, "- {}", cell(&line));
        }
        out.push('\n');
    }
    let tested = |name: &str| {
        doc.kernel(name)
            .is_some_and(|k| k.status != Status::Unavailable)
    };
    let (header, rows) = grid(doc, true);
    let _ = writeln!(out, "| case | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(header.len()));
    for (case, cells) in &rows {
        let texts: Vec<String> = cells
            .iter()
            .map(|c| match c {
                Some(r) if !tested(&r.kernel) => "unavailable".to_string(),
                Some(r) => format!("{} {}", emoji(r.verdict), cell(&cell_summary(r))),
                None => format!("{} {MISSING}", emoji(CellVerdict::NoAnswer)),
            })
            .collect();
        let _ = writeln!(out, "| `{case}` | {} |", texts.join(" | "));
    }
    out += "\n✅ agrees with the documented kernel facts · ❌ disagrees · ⚪ no answer\n";

    let rejected: Vec<_> = doc
        .records
        .iter()
        .filter(|r| tested(&r.kernel) && r.verifier.is_some())
        .collect();
    if !rejected.is_empty() {
        out += "\n### The verifier's words\n\n| kernel | mode | case | errno | verifier |\n|---|---|---|---|---|\n";
        for r in rejected {
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {} | `{}` |",
                cell(&r.kernel),
                r.jit,
                r.case,
                r.errno_name.as_deref().unwrap_or(""),
                cell(last_line(r.verifier.as_deref().unwrap_or(""))).replace('`', "'")
            );
        }
    }
    let wrong: Vec<_> = doc
        .records
        .iter()
        .filter(|r| tested(&r.kernel) && !r.agrees())
        .collect();
    if !wrong.is_empty() {
        out += "\n### Disagreements and missing answers\n\n";
        for r in wrong {
            let _ = writeln!(
                out,
                "<details><summary>{} {} <code>{}</code></summary>\n\n```\n{}```\n</details>\n",
                r.kernel,
                r.jit,
                r.case,
                super::explain(r)
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
        let md = markdown(&Document::from_runs(&[run("6.1", 33), run("5.10", 32), u]));
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
