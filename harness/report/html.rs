//! The HTML matrix: one self-contained page (no scripts, no external files) that
//! reads at a glance: five kernels in both JIT modes fit a 1400-px window. Cells
//! are short and coloured by the kernel's outcome, disagreements outlined; the
//! verifier's words, the measured numbers and the costs are in each cell's hover
//! (its title) and in the sections under the tables, which open on a click
//! (`<details>`). What every kernel shares (the accelerator, the KVM fallback) is
//! said once above the tables.
//!
//! A JIT mode a kernel was built without is its column greyed and hatched, each
//! cell "n/a", and what the kernel lacks said once, in the kernel's line above
//! the tables, its evidence a click away: twenty cells repeating one reason
//! would hide the cells that matter. A kernel oops the facts expect is amber,
//! neither the green of a plain pass nor the red outline of a disagreement.
//! Case names break only at their dots (`<wbr>`), never inside a word.

use super::{
    cell_summary, cell_text, column_absent, columns_text, cost_lines, cost_row, cost_sources,
    costs, coverage_lines, expected_bug_words, expected_kernel_bug, explain, explain_program,
    generated_by, grid, kernel_brief, kernel_line, lacking, program_grid, program_rules_line,
    program_summary, program_wrongs, refusals, seed_articles, tested_only, verdict_line, Column,
    Shared, COST_HEADINGS, EXPECTED_BUG, MISSING, NOT_APPLICABLE, NOT_APPLICABLE_WORDS,
    PROGRAM_LEGEND,
};
use crate::matrix::{Cell, KernelRun, Matrix, Verdict};
use crate::programs::ProgramCell;
use bpfmatrix_protocol::{CaseId, JitMode};
use std::fmt::Write;

pub(crate) fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #1d1d1f; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 20px 0 6px; }
.verdict { font-weight: 600; margin: 4px 0 10px; }
.ok { color: #1a7f37; } .bad { color: #cf222e; }
ul.kernels, ul.coverage, ul.notes { padding-left: 18px; margin: 4px 0; }
ul.kernels li { display: inline-block; margin: 0 18px 2px 0; vertical-align: top; }
.shared { margin: 4px 0; color: #57606a; }
table.m { border-collapse: separate; border-spacing: 2px; font-size: 13px; }
table.m th { font-weight: 600; padding: 2px 4px; white-space: nowrap; text-align: center; }
table.m th.row { text-align: left; }
table.m td { vertical-align: top; padding: 3px 5px; border-radius: 4px; }
td.case { font-family: ui-monospace, monospace; font-size: 12px; background: #f6f8fa; max-width: 260px; overflow-wrap: normal; word-break: normal; }
td.case.program { overflow-wrap: anywhere; }
td.case small { display: block; color: #6e7781; }
th.group { text-align: left !important; background: #eaeef2; }
td.minimum { background: #f6f8fa; max-width: 200px; }
td.accepted { background: #dafbe1; } td.rejected { background: #fff1c2; }
td.unsupported, td.not_loadable { background: #eaeef2; } td.error { background: #ffd8d3; }
td.none { background: #f6f8fa; color: #6e7781; }
.kbug { background: #ffd8a8; box-shadow: inset 3px 0 0 #e8590c; }
.na { color: #8c959f; }
th.na { background: #eaeef2; font-weight: 400; }
td.na, span.na { background: repeating-linear-gradient(135deg, #f6f8fa 0 5px, #eaeef2 5px 10px); text-align: center; }
ul.kernels details.na { display: inline-block; vertical-align: top; margin: 0 0 0 6px; color: #57606a; font-size: 13px; }
span.badge { border-radius: 4px; padding: 0 5px; }
td.disagrees { outline: 2px solid #cf222e; outline-offset: -2px; }
td[title] { cursor: help; }
.words, pre { font-family: ui-monospace, monospace; font-size: 12px; color: #57606a; }
pre { background: #f6f8fa; padding: 6px 8px; margin: 4px 0 8px; white-space: pre-wrap; word-break: break-word; }
details { margin: 4px 0; } summary { cursor: pointer; }
table.costs { border-collapse: collapse; font-size: 13px; }
table.costs td, table.costs th { padding: 2px 8px; border-bottom: 1px solid #eaeef2; text-align: right; }
table.costs td:first-child, table.costs td:nth-child(2), table.costs th { text-align: left; }
.legend span { display: inline-block; padding: 1px 6px; border-radius: 4px; margin-right: 6px; }
";

/// A cell: its class (the outcome, and whether it disagrees), its short text,
/// and everything else in its title.
fn td(class: &str, verdict: &Verdict, text: &str, title: &str) -> String {
    let mut class = class.to_string();
    if matches!(verdict, Verdict::Disagrees { .. }) {
        class += " disagrees";
    }
    format!(
        "<td class=\"{class}\" title=\"{}\">{}</td>",
        esc(title),
        esc(text)
    )
}

/// A cell of a mode its kernel was built without: greyed, no reason (the
/// kernel's line says it once).
fn not_applicable_td() -> String {
    format!("<td class=\"na\">{NOT_APPLICABLE}</td>")
}

fn case_td(c: &Cell) -> String {
    if let Verdict::NotApplicable { .. } = c.verdict {
        return not_applicable_td();
    }
    let class = match &c.record {
        _ if expected_kernel_bug(c) => "kbug",
        Some(r) => r.outcome.kind(),
        None => "none",
    };
    td(
        class,
        &c.verdict,
        &cell_text(c),
        &format!("{}\n{}", cell_summary(c), explain(c)),
    )
}

fn program_td(c: &ProgramCell) -> String {
    if let Verdict::NotApplicable { .. } = c.verdict {
        return not_applicable_td();
    }
    let class = c.record.as_ref().map_or("none", |r| r.outcome.kind());
    td(class, &c.verdict, &program_summary(c), &explain_program(c))
}

/// A cell of a kernel that could not be had: not a result. The reason is in
/// the kernel's line above; cells stay short.
const UNAVAILABLE_TD: &str = "<td class=\"none\">unavailable</td>";

/// Where a kernel has no cell at all.
fn missing_td() -> String {
    format!("<td class=\"none\">{MISSING}</td>")
}

/// A JIT mode as the tables' headers name it.
fn short_mode(jit: JitMode) -> &'static str {
    match jit {
        JitMode::Jit => "jit",
        JitMode::Interpreter => "interp",
    }
}

/// A JIT mode in words, for a header's title.
fn long_mode(jit: JitMode) -> &'static str {
    match jit {
        JitMode::Jit => "the JIT",
        JitMode::Interpreter => "the interpreter",
    }
}

/// The header of a table: the kernels across (each over its JIT modes, its run
/// in the title), then the modes.
fn head(out: &mut String, first: &str, columns: &[Column<'_>], last: Option<&str>) {
    let mut kernels: Vec<(&KernelRun, usize)> = Vec::new();
    for (k, _) in columns {
        match kernels.last_mut() {
            Some((last, n)) if std::ptr::eq(*last, *k) => *n += 1,
            _ => kernels.push((k, 1)),
        }
    }
    let _ = write!(out, "<tr><th class=\"row\" rowspan=\"2\">{first}</th>");
    for (k, n) in &kernels {
        let _ = write!(
            out,
            "<th colspan=\"{n}\" title=\"{}\">{}</th>",
            esc(&kernel_line(k)),
            esc(&k.kernel)
        );
    }
    if let Some(last) = last {
        let _ = write!(out, "<th class=\"row\" rowspan=\"2\">{last}</th>");
    }
    out.push_str("</tr>\n<tr>");
    for column in columns {
        let (k, jit) = column;
        let (short, long) = (short_mode(*jit), long_mode(*jit));
        if column_absent(column) {
            let _ = write!(
                out,
                "<th class=\"na\" title=\"{long}: not applicable, {} was built without it (its line above says why)\">{short}</th>",
                esc(&k.kernel)
            );
        } else {
            let _ = write!(out, "<th title=\"{long}\">{short}</th>");
        }
    }
    out.push_str("</tr>\n");
}

/// A name that may break after its dots (and, with `also`, after those
/// characters too), never inside a word: `<wbr>` after each.
fn breakable(name: &str, also: &[char]) -> String {
    let mut out = String::new();
    for ch in name.chars() {
        out += &esc(&ch.to_string());
        if ch == '.' || also.contains(&ch) {
            out += "<wbr>";
        }
    }
    out
}

/// A case's row label: its name, broken only at its dots, and a seed demo's
/// article beneath it.
fn case_label(case: CaseId) -> String {
    let name = breakable(&case.to_string(), &[]);
    match case.seed_article() {
        Some(a) => format!("{name} <small>[{}]</small>", esc(a.name)),
        None => name,
    }
}

/// What a greyed cell means, where the page says why: the kernel's line.
fn not_applicable_words() -> String {
    NOT_APPLICABLE_WORDS.replace("(said once,", "(said once, in the kernel's line above,")
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
    let shared = Shared::of(m);
    for line in shared.lines() {
        let _ = writeln!(out, "<div class=\"shared\">{}</div>", esc(&line));
    }
    let lacking = lacking(m);
    out += "<ul class=\"kernels\">";
    for k in &m.runs {
        let _ = write!(
            out,
            "<li title=\"{}\">{}",
            esc(&kernel_line(k)),
            esc(&kernel_brief(k, &shared))
        );
        for note in shared.own_notes(k) {
            let _ = write!(out, "<div class=\"words\">{}</div>", esc(&note));
        }
        for l in lacking.iter().filter(|l| std::ptr::eq(l.kernel, k)) {
            let _ = write!(
                out,
                "<details class=\"na\" title=\"{}\"><summary><span class=\"badge na\">{} {NOT_APPLICABLE}</span> {}</summary>",
                esc(&l.evidence.join("\n")),
                short_mode(l.jit),
                esc(l.what)
            );
            for e in l.evidence {
                let _ = write!(out, "<div class=\"words\">{}</div>", esc(e));
            }
            out += "</details>";
        }
        out += "</li>";
    }
    out += "</ul>\n";
    out += &cases(m);
    out += &programs(m);
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

/// The table of cases, its legend, and what did not agree; nothing without cases.
fn cases(m: &Matrix) -> String {
    let (columns, rows) = grid(m, true);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("<table class=\"m\">\n");
    head(&mut out, "case", &columns, None);
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
        let id = m
            .cases()
            .into_iter()
            .find(|c| super::row_label(*c) == *case);
        let label = id.map_or_else(|| breakable(case, &[]), case_label);
        let _ = write!(out, "<tr><td class=\"case\">{label}</td>");
        for (c, (k, _)) in cells.iter().zip(&columns) {
            match c {
                Some(c) if k.tested() => out += &case_td(c),
                Some(_) => out += UNAVAILABLE_TD,
                None => out += &missing_td(),
            }
        }
        out += "</tr>\n";
    }
    let shown = || {
        rows.iter()
            .flat_map(|(_, cells)| cells.iter().zip(&columns))
            .filter(|(_, (k, _))| k.tested())
            .filter_map(|(c, _)| *c)
    };
    out += "</table>\n<p class=\"legend\"><span style=\"background:#dafbe1\">accepted</span><span style=\"background:#fff1c2\">rejected by the kernel</span><span style=\"background:#eaeef2\">unsupported</span><span style=\"background:#ffd8d3\">harness error</span><span style=\"background:#f6f8fa\">no answer</span><span style=\"outline:2px solid #cf222e\">disagrees with the documented facts</span> ✓ agrees · ✗ disagrees · ? no answer; hover a cell for what was expected, measured and refused";
    if shown().any(|c| expected_kernel_bug(c) && c.agrees()) {
        let _ = write!(
            out,
            "<br><span class=\"kbug\">{EXPECTED_BUG} {}</span>",
            esc(&expected_bug_words())
        );
    }
    if shown().any(|c| matches!(c.verdict, Verdict::NotApplicable { .. })) {
        let _ = write!(
            out,
            "<br><span class=\"na\">{NOT_APPLICABLE} {}</span>",
            esc(&not_applicable_words())
        );
    }
    out += "</p>\n";
    let articles = seed_articles(&m.cases());
    if !articles.is_empty() {
        out += "<details><summary>The seed demos' articles</summary><ul>";
        for a in articles {
            let _ = write!(out, "<li>{}</li>", esc(&a));
        }
        out += "</ul></details>\n";
    }
    let mut wrong = String::new();
    for k in m.runs.iter().filter(|k| k.tested()) {
        // A mode the kernel lacks is said once, in its line, not per cell.
        let cells: Vec<&Cell> = k.cells.iter().filter(|c| !c.passes()).collect();
        if cells.len() > 1 && cells.iter().all(|c| c.record.is_none()) {
            let _ = write!(
                wrong,
                "<li>{}: no answer for {} cells: {}</li>",
                esc(&k.kernel),
                cells.len(),
                esc(&cells[0].verdict.reasons().join("; "))
            );
            continue;
        }
        for c in cells {
            let _ = write!(
                wrong,
                "<li><details><summary>{} {} {}: {}</summary><pre>{}</pre></details></li>",
                esc(&k.kernel),
                c.jit,
                c.case,
                esc(&c.verdict.reasons().join("; ")),
                esc(&explain(c))
            );
        }
    }
    if !wrong.is_empty() {
        let _ = writeln!(
            out,
            "<h2>Cases not as documented, or without an answer</h2><ul class=\"notes\">{wrong}</ul>"
        );
    }
    out
}

/// The table of programs with each minimum kernel, then each distinct refusal
/// in the verifier's words (with the whole log a click away), what was not
/// expected, and the costs; nothing without programs.
fn programs(m: &Matrix) -> String {
    let (columns, rows) = program_grid(m, true);
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h2>Programs</h2>\n<table class=\"m\">\n");
    head(&mut out, "program", &columns, Some("minimum kernel"));
    for row in &rows {
        let _ = write!(
            out,
            "<tr><td class=\"case program\">{}</td>",
            breakable(&row.label, &[':'])
        );
        for (c, (k, _)) in row.cells.iter().zip(&columns) {
            match c {
                Some(c) if k.tested() => out += &program_td(c),
                Some(_) => out += UNAVAILABLE_TD,
                None => out += &missing_td(),
            }
        }
        let _ = writeln!(out, "<td class=\"minimum\">{}</td></tr>", esc(&row.minimum));
    }
    let not_applicable = rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten())
        .any(|c| matches!(c.verdict, Verdict::NotApplicable { .. }));
    let mut legend = esc(PROGRAM_LEGEND);
    if not_applicable {
        let _ = write!(
            legend,
            " · <span class=\"na\">{NOT_APPLICABLE} {}</span>",
            esc(&not_applicable_words())
        );
    }
    let _ = writeln!(
        out,
        "</table>\n<p class=\"legend\">{legend}; hover a cell for the verifier's words and the costs.<br>{}</p>",
        esc(&program_rules_line(m))
    );
    let (tested, rows) = tested_only(&columns, rows);
    let refused = refusals(&tested, &rows);
    if !refused.is_empty() {
        out += "<h2>Why programs were not loaded, in the verifier's words</h2>\n";
        for r in refused {
            let _ = write!(
                out,
                "<details open><summary><code>{}</code> on {}: {}</summary>",
                esc(&r.label),
                esc(&r.kernels(&tested)),
                esc(&r.what)
            );
            if !r.words.is_empty() {
                let _ = write!(out, "<pre>{}</pre>", esc(&r.words));
            }
            if !r.log.is_empty() {
                let (k, jit) = r.columns[0];
                let _ = write!(
                    out,
                    "<details><summary>the whole verifier log ({} {jit})</summary><pre>{}</pre></details>",
                    esc(&k.kernel),
                    esc(r.log)
                );
            }
            out += "</details>\n";
        }
    }
    let wrong = program_wrongs(&tested, &rows);
    if !wrong.is_empty() {
        out += "<h2>Programs not as expected, or without an answer</h2><ul class=\"notes\">";
        for (label, why, these) in wrong {
            let _ = write!(
                out,
                "<li><code>{}</code> on {}: {}</li>",
                esc(&label),
                esc(&columns_text(&these, &tested)),
                esc(&why)
            );
        }
        out += "</ul>\n";
    }
    let costs = costs(&tested, &rows);
    if !costs.is_empty() {
        out += "<details><summary>What verifying each accepted program cost</summary><table class=\"costs\"><tr><th>program</th><th>kernel</th>";
        for h in COST_HEADINGS {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out += "</tr>\n";
        for (label, (k, jit), cost) in &costs {
            let _ = write!(
                out,
                "<tr title=\"{}\"><td><code>{}</code></td><td>{} {jit}</td>",
                esc(&cost_lines(cost).join("\n")),
                esc(label),
                esc(&k.kernel)
            );
            for figure in cost_row(cost) {
                let _ = write!(out, "<td>{}</td>", esc(&figure));
            }
            out += "</tr>\n";
        }
        let _ = writeln!(
            out,
            "</table><p class=\"words\">{}</p></details>",
            esc(&cost_sources(costs.iter().map(|c| c.2)))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{
        five_checked, five_checked_without_interpreter, lacking_and_oops, run,
        AGENT_COULD_NOT_SWITCH, NO_INTERPRETER,
    };
    use bpfmatrix_protocol::Outcome;

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

    /// The title of every program cell of the page, in order.
    fn program_titles(page: &str) -> Vec<String> {
        let table = &page[page.find("<h2>Programs</h2>").unwrap()..];
        let table = &table[..table.find("</table>").unwrap()];
        table
            .split("<td class=\"")
            .skip(1)
            .filter_map(|td| {
                let at = td.find("title=\"")? + "title=\"".len();
                Some(td[at..at + td[at..].find('"').unwrap()].to_string())
            })
            .collect()
    }

    #[test]
    fn every_program_cell_holds_the_verifiers_words_or_the_costs() {
        let m = five_checked();
        let page = html(&m);
        let titles = program_titles(&page);
        let cells: Vec<&ProgramCell> = m
            .runs
            .iter()
            .flat_map(|k| JitMode::ALL.map(|j| (k, j)))
            .flat_map(|(k, j)| k.programs.iter().filter(move |c| c.jit == j))
            .collect();
        let mut in_page_order = Vec::new();
        for (object, program) in super::super::programs(&m) {
            for c in &cells {
                if c.object == object && c.program == program {
                    in_page_order.push(*c);
                }
            }
        }
        assert_eq!(titles.len(), in_page_order.len());
        for (title, c) in titles.iter().zip(in_page_order) {
            match c.record.as_ref().map(|r| &r.outcome) {
                Some(Outcome::Accepted) => {
                    assert!(
                        title.contains("cost:     instructions processed: ")
                            && title.contains(" (verifier log)")
                            && title.contains("JITed bytes: "),
                        "{title}"
                    );
                }
                Some(Outcome::Rejected { .. }) => {
                    let words = crate::report::verifier_words(c.record.as_ref().unwrap());
                    let last = words.lines().last().unwrap();
                    assert!(
                        title.contains(&format!("verifier: {}", esc(last))),
                        "{title}"
                    );
                }
                Some(Outcome::NotLoadable { reason }) => assert!(title.contains(reason), "{title}"),
                _ => assert!(title.contains("got:      no record"), "{title}"),
            }
        }
        // Each distinct refusal once, with its whole log a click away.
        assert_eq!(
            page.matches("on 5.4, 5.10: rejected at load new_helper, EINVAL</summary>")
                .count(),
            1,
            "{page}"
        );
        assert!(
            page.contains(
                "<details><summary>the whole verifier log (5.4 jit)</summary><pre>func#0 @0"
            ),
            "{page}"
        );
        assert!(
            page.contains("<td class=\"minimum\">≤ 5.4 (✗ from 6.1, ✓ from 6.12)</td>"),
            "{page}"
        );
        assert!(
            page.contains("<td class=\"rejected disagrees\" title="),
            "{page}"
        );
    }

    #[test]
    fn facts_every_kernel_shares_are_said_once() {
        let mut m = five_checked();
        for k in &mut m.runs {
            k.kvm_fallback = Some("/dev/kvm is missing".into());
        }
        m.runs[2].warnings.push("a module did not load".into());
        let page = html(&m);
        assert_eq!(page.matches("/dev/kvm is missing").count(), 1, "{page}");
        assert!(page.contains("<div class=\"shared\">on every kernel, KVM fell back to TCG: /dev/kvm is missing</div>"), "{page}");
        assert!(
            page.contains("<div class=\"shared\">every kernel that booted ran under tcg</div>"),
            "{page}"
        );
        assert!(
            page.contains("<div class=\"words\">guest warning: a module did not load</div>"),
            "{page}"
        );
        assert!(
            page.contains(">5.10: guest 5.10.0-32-amd64, 6.1 s</li>"),
            "{page}"
        );
    }

    /// The cells of the page's first table, row by row: each row's label and
    /// its cells' `<td ...>...</td>`.
    fn case_rows(page: &str) -> Vec<(String, Vec<String>)> {
        let table = &page[page.find("<table class=\"m\">").unwrap()..];
        let table = &table[..table.find("</table>").unwrap()];
        table
            .split("<tr><td class=\"case\">")
            .skip(1)
            .map(|row| {
                let (label, rest) = row.split_once("</td>").unwrap();
                let cells = rest
                    .split("</td>")
                    .filter(|c| c.starts_with("<td"))
                    .map(|c| format!("{c}</td>"))
                    .collect();
                (label.to_string(), cells)
            })
            .collect()
    }

    #[test]
    fn a_mode_a_kernel_lacks_is_a_greyed_column_said_once() {
        let m = lacking_and_oops();
        let page = html(&m);
        assert_eq!(page.matches(NO_INTERPRETER).count(), 1, "{page}");
        assert!(!page.contains(AGENT_COULD_NOT_SWITCH), "{page}");
        // Said in 5.4's line, its evidence a click (or a hover) away.
        assert!(page.contains("<details class=\"na\" title=\"CONFIG_BPF_JIT_ALWAYS_ON=y, in boot/config-5.4.0-216-generic\nthe guest's write of 0 to net.core.bpf_jit_enable was refused: write &quot;0&quot; to "), "{page}");
        assert!(page.contains(&format!("<summary><span class=\"badge na\">interp n/a</span> {NO_INTERPRETER}</summary><div class=\"words\">CONFIG_BPF_JIT_ALWAYS_ON=y, in boot/config-5.4.0-216-generic</div>")), "{page}");
        let line = &page[page.find("<li title=\"5.4: ").unwrap()..];
        assert!(line[..line.find("</li>").unwrap()].contains(NO_INTERPRETER));
        // The column's header is greyed, and says where the reason is.
        assert!(page.contains("<th title=\"the JIT\">jit</th><th class=\"na\" title=\"the interpreter: not applicable, 5.4 was built without it (its line above says why)\">interp</th><th title=\"the JIT\">jit</th><th title=\"the interpreter\">interp</th>"), "{page}");
        assert_eq!(page.matches("<th class=\"na\"").count(), 1, "{page}");
        // Its every cell, and no other, is greyed n/a without a reason.
        let rows = case_rows(&page);
        assert_eq!(rows.len(), CaseId::ALL.len());
        for (label, cells) in &rows {
            assert_eq!(cells.len(), 4, "{label}: {cells:?}");
            assert_eq!(cells[1], "<td class=\"na\">n/a</td>", "{label}");
            for (i, c) in cells.iter().enumerate().filter(|(i, _)| *i != 1) {
                assert!(
                    !c.contains("class=\"na\"") && !c.contains(">n/a<"),
                    "{label} {i}: {c}"
                );
            }
        }
        assert!(
            page.contains("td.na, span.na { background: repeating-linear-gradient("),
            "{page}"
        );
        assert!(page.contains("<span class=\"na\">n/a not applicable: a JIT mode the kernel was built without (said once, in the kernel's line above, with the evidence)</span>"), "{page}");
        // No cell of the column is listed as gone wrong.
        assert!(!page.contains("Cases not as documented"), "{page}");
    }

    #[test]
    fn an_expected_kernel_oops_has_its_own_colour() {
        let page = html(&lacking_and_oops());
        let rows = case_rows(&page);
        let (_, seccomp) = rows
            .iter()
            .find(|(label, _)| label.starts_with("seed.<wbr>seccomp_tail_call "))
            .unwrap();
        assert!(
            seccomp[3].starts_with(
                "<td class=\"kbug\" title=\"accepted, oops (signal 11)\n  expected: accepted"
            ),
            "{}",
            seccomp[3]
        );
        assert!(
            seccomp[3].ends_with("\">⚠ expected oops (signal 11)</td>"),
            "{}",
            seccomp[3]
        );
        assert!(
            seccomp[2].starts_with("<td class=\"accepted\" title="),
            "{}",
            seccomp[2]
        );
        assert_eq!(page.matches("<td class=\"kbug").count(), 1, "{page}");
        // Amber, with its own line in the legend.
        assert!(page.contains(".kbug { background: #ffd8a8;"), "{page}");
        assert!(page.contains("<span class=\"kbug\">⚠ expected kernel bug: the kernel oopses as documented (011832b97b31, from 6.9), so the cell agrees</span>"), "{page}");
        // Not there when no cell expects one.
        let plain = html(&Matrix::from_runs([run("6.1", 33)]));
        assert!(
            !plain.contains("<span class=\"kbug\">") && !plain.contains("<span class=\"na\">"),
            "{plain}"
        );
    }

    #[test]
    fn case_names_break_at_their_dots_only() {
        let page = html(&lacking_and_oops());
        assert!(
            page.contains("<td class=\"case\">bpf2bpf.<wbr>tail_call_in_subprog</td>"),
            "{page}"
        );
        assert!(page.contains("<td class=\"case\">seed.<wbr>seccomp_tail_call <small>[tail-call-vs-bpf2bpf-en]</small></td>"), "{page}");
        for (label, _) in case_rows(&page) {
            let name = label.split(" <small>").next().unwrap();
            assert_eq!(
                name.matches("<wbr>").count(),
                name.matches('.').count(),
                "{name}"
            );
            assert!(
                name.split("<wbr>")
                    .all(|part| part.is_empty() || part.ends_with('.') || !part.contains('.')),
                "{name}"
            );
        }
        // Nothing else may break a name: no breaking anywhere inside a word.
        assert!(page.contains("td.case { font-family: ui-monospace, monospace; font-size: 12px; background: #f6f8fa; max-width: 260px; overflow-wrap: normal; word-break: normal; }"), "{page}");
    }

    #[test]
    fn a_programs_mode_the_kernel_lacks_is_greyed_and_said_once() {
        let page = html(&five_checked_without_interpreter());
        assert_eq!(page.matches(NO_INTERPRETER).count(), 1, "{page}");
        let table = &page[page.find("<h2>Programs</h2>").unwrap()..];
        let table = &table[..table.find("</table>").unwrap()];
        assert_eq!(
            table.matches("<td class=\"na\">n/a</td>").count(),
            5,
            "{table}"
        );
        assert_eq!(table.matches("<th class=\"na\"").count(), 1, "{table}");
        assert!(
            page.contains(
                "<td class=\"case program\">probe.<wbr>o:<wbr>tail_mix</td><td class=\"accepted\""
            ),
            "{page}"
        );
        // What 5.4's agent said in the interpreter is no refusal.
        assert!(page.contains("<code>probe.o:tail_mix</code> on 5.10 interpreter, 6.1 interpreter, 6.12 interpreter: rejected at load tail_mix, EINVAL</summary>"), "{page}");
        assert!(
            page.contains(" · <span class=\"na\">n/a not applicable: "),
            "{page}"
        );
    }
}
