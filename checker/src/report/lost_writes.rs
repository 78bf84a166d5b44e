//! The lost-writes section (set-full): counts by category, stable and lost latency quantiles,
//! and the elements of each bad category with the reads that decided them.

use super::{and_more, maybe_ms, open_section, push_key, push_value, quantile_cells};
use super::{MAX_ROWS, MAX_TEXT_CHARS, QUANTILE_HEADINGS};
use crate::sets::{ElementReport, SetReport};
use crate::view::text::{excerpt, group, push_escaped};
use std::fmt::Write;

/// The lost-writes section.
pub(super) fn render(out: &mut String, report: &SetReport) {
    let note = format!(
        "{} elements in {} sets, {} ok reads, checked in {:.1} ms",
        group(report.n_elements as u64),
        group(report.n_keys as u64),
        group(report.n_reads as u64),
        report.elapsed_ms
    );
    open_section(
        out,
        "lost-writes",
        "Lost writes",
        Some(report.verdict),
        &note,
    );
    out.push_str("<table class=\"counts\"><tr>");
    let counts = [
        ("stable", report.stable_count, false),
        ("lost", report.lost_count, true),
        ("stale", report.stale_count, false),
        ("never read", report.never_read_count, false),
        ("duplicated", report.duplicated_count, true),
        ("unexpected", report.unexpected_count, true),
    ];
    for (name, _, _) in counts {
        let _ = write!(out, "<th>{name}</th>");
    }
    out.push_str("</tr><tr>");
    for (_, count, bad) in counts {
        let class = if bad && count > 0 { " bad" } else { "" };
        let _ = write!(
            out,
            "<td class=\"n big{class}\">{}</td>",
            group(count as u64)
        );
    }
    out.push_str("</tr></table>\n");
    let _ = write!(
        out,
        "<table class=\"num\"><tr><th>latency ms</th>{QUANTILE_HEADINGS}</tr><tr><td>stable</td>"
    );
    quantile_cells(out, &report.stable_latency_ms);
    out.push_str("</tr><tr><td>lost</td>");
    quantile_cells(out, &report.lost_latency_ms);
    out.push_str("</tr></table>\n");
    if let Some(note) = &report.note {
        out.push_str("<p class=\"why\">");
        push_escaped(out, &excerpt(note, 1_000));
        out.push_str("</p>\n");
    }
    elements(out, "Lost", &report.lost, report.lost_count);
    duplicated(out, report);
    unexpected(out, report);
    elements(out, "Stale", &report.stale, report.stale_count);
    elements(
        out,
        "Never read",
        &report.never_read,
        report.never_read_count,
    );
    out.push_str("</section>\n");
}

/// One category's elements, with the explanation of each.
fn elements(out: &mut String, title: &str, listed: &[ElementReport], total: usize) {
    if listed.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h3>{title} <small>{}</small></h3>\n<table><tr><th>key</th><th>element</th><th>latency ms</th><th>explanation</th></tr>",
        group(total as u64)
    );
    for element in listed.iter().take(MAX_ROWS) {
        out.push_str("<tr><td>");
        push_key(out, &element.key);
        out.push_str("</td><td><code>");
        push_value(out, &element.element);
        let _ = write!(
            out,
            "</code></td><td class=\"n\">{}</td><td class=\"expl\">",
            maybe_ms(element.latency_ms)
        );
        push_escaped(out, &excerpt(&element.explanation, MAX_TEXT_CHARS));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    and_more(out, listed.len().min(MAX_ROWS), total, "elements");
}

fn duplicated(out: &mut String, report: &SetReport) {
    if report.duplicated.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h3>Duplicated <small>{}</small></h3>\n<table><tr><th>key</th><th>element</th><th>most copies</th><th>reads</th><th>explanation</th></tr>",
        group(report.duplicated_count as u64)
    );
    for duplicate in report.duplicated.iter().take(MAX_ROWS) {
        out.push_str("<tr><td>");
        push_key(out, &duplicate.key);
        out.push_str("</td><td><code>");
        push_value(out, &duplicate.element);
        let _ = write!(
            out,
            "</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"expl\">",
            duplicate.max_multiplicity, duplicate.n_reads
        );
        push_escaped(out, &excerpt(&duplicate.explanation, MAX_TEXT_CHARS));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    and_more(
        out,
        report.duplicated.len().min(MAX_ROWS),
        report.duplicated_count,
        "elements",
    );
}

fn unexpected(out: &mut String, report: &SetReport) {
    if report.unexpected.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h3>Unexpected <small>{}</small></h3>\n<table><tr><th>key</th><th>value</th><th>explanation</th></tr>",
        group(report.unexpected_count as u64)
    );
    for value in report.unexpected.iter().take(MAX_ROWS) {
        out.push_str("<tr><td>");
        push_key(out, &value.key);
        out.push_str("</td><td><code>");
        push_value(out, &value.element);
        out.push_str("</code></td><td class=\"expl\">");
        push_escaped(out, &excerpt(&value.explanation, MAX_TEXT_CHARS));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    and_more(
        out,
        report.unexpected.len().min(MAX_ROWS),
        report.unexpected_count,
        "values",
    );
}
