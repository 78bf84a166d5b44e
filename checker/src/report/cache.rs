//! The cache section: the bound and where it came from, pairs by what the reads show, the
//! invalidation latency, and the late stale reads and undecided pairs with their explanations.

use super::{and_more, maybe_ms, ms, open_section, push_key, push_value, quantile_cells};
use super::{MAX_ROWS, MAX_TEXT_CHARS, QUANTILE_HEADINGS};
use crate::cache::CacheReport;
use crate::view::text::{excerpt, group, push_escaped};
use std::fmt::Write;

/// The cache section.
pub(super) fn render(out: &mut String, report: &CacheReport) {
    let note = format!(
        "bound {} ms ({}); {} writes, {} ok reads; checked in {:.1} ms",
        ms(report.invalidation_bound_ms),
        report.bound_source,
        group(report.writes as u64),
        group(report.reads as u64),
        report.elapsed_ms
    );
    open_section(
        out,
        "cache",
        "Cache invalidation",
        Some(report.verdict),
        &note,
    );
    out.push_str("<table class=\"counts\"><tr>");
    let counts = [
        ("pairs", report.pairs, false),
        ("stale pairs", report.stale_pairs, false),
        ("late pairs", report.late_pairs, true),
        ("never converged", report.unconverged_pairs, true),
        ("undecided", report.undecided_pairs, true),
        ("stale reads", report.stale_reads, false),
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
        "<table class=\"num\"><tr><th>ms</th>{QUANTILE_HEADINGS}</tr><tr><td>invalidation latency</td>"
    );
    quantile_cells(out, &report.latency_ms);
    let _ = writeln!(
        out,
        "</tr></table>\n<p>Longest a node provably served an older value after a write: {} ms.</p>",
        maybe_ms(report.stale_for_ms_max)
    );
    if let Some(note) = &report.note {
        out.push_str("<p class=\"why\">");
        push_escaped(out, &excerpt(note, 1_000));
        out.push_str("</p>\n");
    }
    late(out, report);
    undecided(out, report);
    out.push_str("</section>\n");
}

fn late(out: &mut String, report: &CacheReport) {
    if report.late.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h3>Late stale reads <small>late (write, node) pairs: {}; the first read is the witness</small></h3>\n<table><tr><th>key</th><th>node</th><th>read</th><th>returned</th><th>missed write</th><th>late ms</th><th>explanation</th></tr>",
        group(report.late_pairs as u64)
    );
    for late in report.late.iter().take(MAX_ROWS) {
        out.push_str("<tr><td>");
        push_key(out, &late.key);
        out.push_str("</td><td>");
        push_escaped(out, &excerpt(&late.node, 60));
        let _ = write!(out, "</td><td class=\"n\">{}</td><td><code>", late.read_op);
        push_value(out, &late.read_value);
        let _ = write!(out, "</code></td><td>op {} of <code>", late.write_op);
        push_value(out, &late.write_value);
        out.push_str("</code> via ");
        push_escaped(out, &excerpt(&late.write_node, 60));
        let _ = write!(
            out,
            "</td><td class=\"n bad\">{}</td><td class=\"expl\">",
            ms(late.late_ms)
        );
        push_escaped(out, &excerpt(&late.explanation, MAX_TEXT_CHARS));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    and_more(
        out,
        report.late.len().min(MAX_ROWS),
        report.late_pairs,
        "late pairs",
    );
}

fn undecided(out: &mut String, report: &CacheReport) {
    if report.undecided.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h3>Undecided pairs <small>{}</small></h3>\n<table><tr><th>key</th><th>node</th><th>write</th><th>stale for ms</th><th>latency ms</th><th>explanation</th></tr>",
        group(report.undecided_pairs as u64)
    );
    for pair in report.undecided.iter().take(MAX_ROWS) {
        out.push_str("<tr><td>");
        push_key(out, &pair.key);
        out.push_str("</td><td>");
        push_escaped(out, &excerpt(&pair.node, 60));
        let _ = write!(out, "</td><td>op {} of <code>", pair.write_op);
        push_value(out, &pair.write_value);
        let _ = write!(
            out,
            "</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"expl\">",
            ms(pair.stale_for_ms),
            maybe_ms(pair.latency_ms)
        );
        push_escaped(out, &excerpt(&pair.explanation, MAX_TEXT_CHARS));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    and_more(
        out,
        report.undecided.len().min(MAX_ROWS),
        report.undecided_pairs,
        "undecided pairs",
    );
}
