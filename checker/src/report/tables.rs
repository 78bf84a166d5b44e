//! The timing tables: latency per function and outcome, every fault with its RTO, and cache
//! invalidation latency when the history names the nodes that served each operation.

use super::{and_more, maybe_ms, ms, open_section, push_key, push_value, quantile_cells};
use super::{MAX_ROWS, MAX_TEXT_CHARS, QUANTILE_HEADINGS};
use crate::ops::Outcome;
use crate::timing::{InvalidationReport, TimingReport};
use crate::view::text::{excerpt, group, nanos, push_escaped};
use std::fmt::Write;

/// The latency, fault and invalidation tables.
pub(super) fn render(out: &mut String, timing: &TimingReport) {
    open_section(out, "timing", "Latency, faults and recovery", None, "");
    latency(out, timing);
    faults(out, timing);
    if let Some(invalidation) = &timing.invalidation {
        invalidation_table(out, invalidation);
    }
    out.push_str("</section>\n");
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
        Outcome::Pending => "pending",
    }
}

fn latency(out: &mut String, timing: &TimingReport) {
    out.push_str("<h3 id=\"latency\">Latency (ms)</h3>\n");
    if timing.latency.is_empty() {
        out.push_str("<p class=\"why\">No operation has a measured latency.</p>\n");
        return;
    }
    out.push_str(
        "<table class=\"num\"><tr><th>f</th><th>outcome</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>\n",
    );
    for row in timing.latency.iter().take(MAX_ROWS) {
        out.push_str("<tr><td>");
        push_escaped(out, &excerpt(&row.f, 60));
        let outcome = outcome_name(row.outcome);
        let _ = writeln!(
            out,
            "</td><td class=\"o-{outcome}\">{outcome}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            group(row.count),
            ms(row.latency_ms_p50),
            ms(row.latency_ms_p90),
            ms(row.latency_ms_p99),
            ms(row.latency_ms_max)
        );
    }
    out.push_str("</table>\n");
    and_more(out, MAX_ROWS, timing.latency.len(), "rows");
}

fn faults(out: &mut String, timing: &TimingReport) {
    out.push_str("<h3 id=\"faults\">Faults and recovery time (RTO)</h3>\n");
    if timing.faults.is_empty() {
        out.push_str("<p class=\"note\">The history has no nemesis faults.</p>\n");
        return;
    }
    out.push_str(
        "<table><tr><th>#</th><th>fault</th><th>targets</th><th>from</th><th>healed</th><th>disrupted</th><th>RTO ms</th><th>explanation</th></tr>\n",
    );
    let at = |ns: Option<u64>, index: Option<u64>| match (ns, index) {
        (Some(ns), _) => nanos(ns),
        (None, Some(index)) => format!("event {}", group(index)),
        (None, None) => "-".to_string(),
    };
    for (number, fault) in timing.faults.iter().take(MAX_ROWS).enumerate() {
        let _ = write!(out, "<tr><td class=\"n\">{}</td><td>", number + 1);
        push_escaped(out, &excerpt(&fault.fault, 60));
        out.push_str("</td><td><code>");
        push_value(out, &fault.targets);
        let _ = write!(
            out,
            "</code></td><td>{}</td><td>",
            at(fault.start_ns, Some(fault.start_index))
        );
        match &fault.healed_by {
            Some(heal) => {
                push_escaped(out, &excerpt(heal, 60));
                let _ = write!(out, " at {}", at(fault.end_ns, fault.end_index));
            }
            None => out.push_str("never"),
        }
        let rto = match (fault.rto_ms, fault.recovered) {
            (Some(rto), _) => ms(rto),
            (None, true) => "- (no times)".to_string(),
            (None, false) => "<b class=\"bad\">not recovered</b>".to_string(),
        };
        let _ = write!(
            out,
            "</td><td class=\"n\">{}</td><td class=\"n\">{rto}</td><td class=\"expl\">",
            group(fault.affected_ops as u64)
        );
        push_escaped(out, &excerpt(&fault.explanation, MAX_TEXT_CHARS));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
    and_more(out, MAX_ROWS, timing.faults.len(), "faults");
    if timing.unmatched_heals > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} heal events matched no open fault.</p>",
            group(timing.unmatched_heals as u64)
        );
    }
}

fn invalidation_table(out: &mut String, report: &InvalidationReport) {
    out.push_str("<h3 id=\"invalidation\">Cache invalidation latency</h3>\n");
    let _ = writeln!(
        out,
        "<p>{} writes over {} (write, other node) pairs: {} pairs saw an older value, {} never converged; {} of {} reads were stale, {} read a value no ok write wrote.</p>",
        group(report.writes as u64),
        group(report.pairs as u64),
        group(report.stale_pairs as u64),
        group(report.unconverged_pairs as u64),
        group(report.stale_reads as u64),
        group(report.reads as u64),
        group(report.unordered_reads as u64)
    );
    let _ = write!(
        out,
        "<table class=\"num\"><tr><th>latency ms</th>{QUANTILE_HEADINGS}</tr><tr><td>converged pairs</td>"
    );
    quantile_cells(out, &report.latency_ms);
    out.push_str("</tr></table>\n");
    if report.per_write.is_empty() {
        return;
    }
    out.push_str(
        "<table><tr><th>key</th><th>value</th><th>node</th><th>pairs</th><th>stale nodes</th><th>unconverged</th><th>max ms</th></tr>\n",
    );
    for write in report.per_write.iter().take(MAX_ROWS) {
        out.push_str("<tr><td>");
        push_key(out, &write.key);
        out.push_str("</td><td><code>");
        push_value(out, &write.value);
        out.push_str("</code></td><td>");
        push_escaped(out, &excerpt(&write.node, 60));
        let _ = writeln!(
            out,
            "</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            write.pairs,
            write.stale_nodes,
            write.unconverged_nodes,
            maybe_ms(write.max_latency_ms)
        );
    }
    out.push_str("</table>\n");
    and_more(out, MAX_ROWS, report.per_write.len(), "writes");
}
