//! The bank section: the total and where it came from, bad reads per error kind, and the
//! first bad reads with their balances, sum and explanation.

use super::{and_more, open_section, push_value, MAX_ROWS, MAX_TEXT_CHARS};
use crate::bank::BankReport;
use crate::view::text::{excerpt, group, nanos, push_escaped};
use std::fmt::Write;

/// The bank section.
pub(super) fn render(out: &mut String, report: &BankReport) {
    let total = report
        .total
        .map_or_else(|| "unknown".to_string(), |total| total.to_string());
    let note = format!(
        "{} ok reads; total {total} ({}); transfers {} ok, {} fail, {} info; checked in {:.1} ms",
        group(report.reads_checked as u64),
        report.total_source,
        group(report.transfers.ok as u64),
        group(report.transfers.fail as u64),
        group(report.transfers.info as u64),
        report.elapsed_ms
    );
    open_section(out, "bank", "Bank", Some(report.verdict), &note);
    out.push_str("<table class=\"counts\"><tr>");
    let kinds = [
        "wrong-total",
        "negative-balance",
        "unexpected-account",
        "missing-balance",
    ];
    for kind in kinds {
        let _ = write!(out, "<th>{kind}</th>");
    }
    out.push_str("</tr><tr>");
    for kind in kinds {
        let count = report.error_counts.get(kind).copied().unwrap_or(0);
        let class = if count > 0 { " bad" } else { "" };
        let _ = write!(
            out,
            "<td class=\"n big{class}\">{}</td>",
            group(count as u64)
        );
    }
    out.push_str("</tr></table>\n");
    if report.negative_balances_allowed {
        out.push_str("<p class=\"note\">Negative balances are allowed in this history.</p>\n");
    }
    if let Some(note) = &report.note {
        out.push_str("<p class=\"why\">");
        push_escaped(out, &excerpt(note, 1_000));
        out.push_str("</p>\n");
    }
    if report.errors.is_empty() {
        out.push_str("<p>Every ok read sums to the total.</p>\n</section>\n");
        return;
    }
    let _ = writeln!(
        out,
        "<h3>Bad reads <small>{}, the first in completion order is the witness</small></h3>\n<table><tr><th>op</th><th>error</th><th>completed</th><th>balances</th><th>sum</th><th>explanation</th></tr>",
        group(report.bad_reads as u64)
    );
    for bad in report.errors.iter().take(MAX_ROWS) {
        let completed = match (bad.complete_time, bad.complete_index) {
            (Some(ns), _) => nanos(ns),
            (None, Some(index)) => format!("event {}", group(index)),
            (None, None) => "-".to_string(),
        };
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td class=\"bad\">{}</td><td>{completed}</td><td><code>",
            bad.op, bad.kind
        );
        push_value(
            out,
            &serde_json::to_value(&bad.balances).unwrap_or_default(),
        );
        let _ = write!(
            out,
            "</code></td><td class=\"n\">{}</td><td class=\"expl\">",
            bad.sum
        );
        push_escaped(out, &excerpt(&bad.explanation, MAX_TEXT_CHARS));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    and_more(
        out,
        report.errors.len().min(MAX_ROWS),
        report.bad_reads,
        "bad reads",
    );
    out.push_str("</section>\n");
}
