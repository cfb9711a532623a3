//! The HTML matrix: one self-contained page (no scripts, no external files), cells
//! coloured by the kernel's outcome, the verifier's words and the measured numbers
//! in each cell, disagreements outlined.

use super::{
    cell_summary, coverage_lines, explain, generated_by, grid, header, kernel_line, mark,
    seed_articles, verdict_line, MISSING,
};
use crate::expect::{describe_expected, last_line};
use crate::matrix::{Cell, Matrix, Verdict};
use bpfmatrix_protocol::Outcome;
use std::fmt::Write;

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 20px; } .verdict { font-weight: 600; margin: 8px 0 16px; }
.ok { color: #1a7f37; } .bad { color: #cf222e; }
ul.kernels, ul.coverage { padding-left: 18px; } ul.kernels li, ul.coverage li { margin: 2px 0; }
table { border-collapse: separate; border-spacing: 4px; }
th { text-align: left; font-weight: 600; padding: 4px 8px; white-space: nowrap; }
td { vertical-align: top; padding: 6px 8px; border-radius: 6px; min-width: 110px; max-width: 220px; }
td.case { font-family: ui-monospace, monospace; background: #f6f8fa; }
th.group { text-align: left; background: #eaeef2; font-weight: 600; }
td.accepted { background: #dafbe1; } td.rejected { background: #fff1c2; }
td.unsupported { background: #eaeef2; } td.error { background: #ffd8d3; }
td.none { background: #f6f8fa; color: #6e7781; }
td.disagrees { outline: 3px solid #cf222e; }
.mark { font-weight: 700; } .sum { font-weight: 600; }
.words { font-family: ui-monospace, monospace; font-size: 12px; color: #57606a; margin-top: 4px; word-break: break-word; }
.legend span { display: inline-block; padding: 2px 8px; border-radius: 4px; margin-right: 6px; }
";

fn td(c: &Cell) -> String {
    let outcome = c.record.as_ref().map(|r| &r.outcome);
    let mut class = outcome.map_or("none", Outcome::kind).to_string();
    if matches!(c.verdict, Verdict::Disagrees { .. }) {
        class += " disagrees";
    }
    let mut words = String::new();
    match outcome {
        Some(Outcome::Rejected { verifier_tail, .. }) => {
            let _ = write!(
                words,
                "<div class=\"words\">{}</div>",
                esc(last_line(verifier_tail))
            );
        }
        Some(
            Outcome::Unsupported { reason: d }
            | Outcome::NotLoadable { reason: d }
            | Outcome::Error { message: d },
        ) => {
            let _ = write!(words, "<div class=\"words\">{}</div>", esc(d));
        }
        Some(Outcome::Accepted) | None => {}
    }
    if let (Some(e), false) = (&c.expected, c.agrees()) {
        let _ = write!(
            words,
            "<div class=\"words\">expected: {}</div>",
            esc(&describe_expected(&e.outcome))
        );
    }
    for d in c.verdict.reasons() {
        let _ = write!(words, "<div class=\"words\">{}</div>", esc(d));
    }
    format!(
        "<td class=\"{class}\" title=\"{}\"><span class=\"mark\">{}</span> <span class=\"sum\">{}</span>{words}</td>",
        esc(&explain(c)),
        mark(&c.verdict),
        esc(&cell_summary(c)),
    )
}

pub fn html(m: &Matrix) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>bpfmatrix</title><style>{STYLE}</style></head><body>\n"
    );
    out += "<h1>bpfmatrix: which kernels accept and run these programs</h1>\n";
    let class = if m.all_agree() { "ok" } else { "bad" };
    let _ = writeln!(
        out,
        "<div class=\"verdict {class}\">{}</div>",
        esc(&verdict_line(m))
    );
    let coverage = coverage_lines(m);
    if !coverage.is_empty() {
        out += "<ul class=\"coverage\">";
        for line in coverage {
            let _ = write!(out, "<li>{}</li>", esc(&line));
        }
        out += "</ul>\n";
    }
    out += "<ul class=\"kernels\">";
    for k in &m.runs {
        let _ = write!(out, "<li>{}", esc(&kernel_line(k)));
        let notes = k
            .kvm_fallback
            .iter()
            .map(|f| format!("KVM fell back to TCG: {f}"))
            .chain(k.warnings.iter().map(|w| format!("guest warning: {w}")))
            .chain(k.problems.iter().cloned());
        for note in notes {
            let _ = write!(out, "<div class=\"words\">{}</div>", esc(&note));
        }
        out += "</li>";
    }
    out += "</ul>\n<table>\n<tr><th>case</th>";
    let (columns, rows) = grid(m, true);
    for column in &columns {
        let _ = write!(out, "<th>{}</th>", esc(&header(column)));
    }
    out += "</tr>\n";
    for (case, cells) in &rows {
        if cells.is_empty() {
            let _ = writeln!(
                out,
                "<tr><th class=\"group\" colspan=\"{}\">{}</th></tr>",
                columns.len() + 1,
                esc(case)
            );
            continue;
        }
        let _ = write!(out, "<tr><td class=\"case\">{}</td>", esc(case));
        for (c, (k, _)) in cells.iter().zip(&columns) {
            match c {
                // The reason is in the kernel's line above; cells stay short.
                Some(_) if !k.tested() => out += "<td class=\"none\">unavailable</td>",
                Some(c) => out += &td(c),
                None => {
                    let _ = write!(out, "<td class=\"none\">{MISSING}</td>");
                }
            }
        }
        out += "</tr>\n";
    }
    out += "</table>\n<p class=\"legend\"><span style=\"background:#dafbe1\">accepted</span><span style=\"background:#fff1c2\">rejected by the kernel</span><span style=\"background:#eaeef2\">unsupported</span><span style=\"background:#ffd8d3\">harness error</span><span style=\"background:#f6f8fa\">no answer</span><span style=\"outline:3px solid #cf222e\">disagrees with the documented facts</span></p>\n";
    let articles = seed_articles(&m.cases());
    if !articles.is_empty() {
        out += "<p>The seed demos' articles:</p><ul>";
        for a in articles {
            let _ = write!(out, "<li>{}</li>", esc(&a));
        }
        out += "</ul>\n";
    }
    if m.runs.iter().any(|k| !k.tested()) {
        out += "<p>Cells of unavailable kernels are not results: the kernel could not be had here.</p>\n";
    }
    let _ = writeln!(
        out,
        "<p class=\"words\">{}</p></body></html>",
        esc(&generated_by())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::run;

    #[test]
    fn the_page_is_self_contained_and_escapes_guest_text() {
        let mut r = run("6.1", 32);
        r.problems.push("<script>alert(1)</script>".into());
        r.warnings.push("<b>".into());
        let page = html(&Matrix::from_runs([r]));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)"), "{page}");
        assert!(!page.contains("src=") && !page.contains("href="));
        assert!(page.contains("class=\"accepted disagrees\""), "{page}");
        assert!(page.contains("tail calls: expected 33, got 32"), "{page}");
    }
}
