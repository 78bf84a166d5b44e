//! The full report page: one self-contained HTML file (inline CSS, SVG and a small script, no
//! network) with every checker's verdict and findings, the run's timeline and plots, and the
//! linearization view.
//!
//! The page reads top to bottom as a reader investigates a run: the verdicts first, then what
//! happened over time (faults, outcomes, throughput, latency), then each checker's witness,
//! and last the definitions of every number. Everything from the history reaches the page
//! through [`crate::view::text::push_escaped`], and every list, plot and drawing is capped, so
//! that the page of a 1,000,000-operation history stays under 10 MB.
//!
//! The module is pure: [`render_report_html`] returns a `String`, and the CLI writes it.

mod bank;
mod cache;
mod cycle;
mod header;
mod isolation;
mod linear;
mod lost_writes;
mod plots;
mod span;
mod style;
mod tables;
mod timeline;

use crate::check::Report;
use crate::timing::Quantiles;
use crate::verdict::Verdict;
use crate::view::text::{excerpt, push_escaped};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Most rows of any table or list; the rest are counted as "and N more".
const MAX_ROWS: usize = 100;
/// Most cycles drawn as graphs on the page; later ones keep their explanation in words.
const MAX_CYCLES_DRAWN: usize = 20;
/// Most transactions in one drawn cycle; a longer cycle is explained in words only.
const MAX_CYCLE_NODES: usize = 40;
/// Most points in one plotted series.
const MAX_POINTS_PER_SERIES: usize = 2_000;
/// Most characters of one value, key, error or explanation line shown.
const MAX_TEXT_CHARS: usize = 300;

/// The full report page: verdicts, each checker's findings, plots, and the linearization view.
///
/// It never panics on a report: a section whose checker did not run is left out, and one
/// whose data is missing (no times, no kept operations) says what is missing and why.
pub fn render_report_html(report: &Report) -> String {
    let mut out = String::with_capacity(256 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
    );
    push_escaped(
        &mut out,
        &format!(
            "helios report · {} · {}",
            excerpt(&report.file, 120),
            report.verdict
        ),
    );
    out.push_str("</title>\n<style>");
    out.push_str(crate::view::CSS);
    out.push_str(style::CSS);
    out.push_str("</style>\n</head>\n<body>\n");
    out.push_str(style::DEFS);
    header::render(&mut out, report);
    let span = span::Span::of(report);
    if let Some(timing) = &report.timing {
        timeline::render(&mut out, report, timing, span.as_ref());
        plots::render(&mut out, report, timing, span.as_ref());
        tables::render(&mut out, timing);
    }
    if let Some(isolation) = &report.isolation {
        isolation::render(&mut out, report, isolation);
    }
    if let Some(sets) = &report.lost_writes {
        lost_writes::render(&mut out, sets);
    }
    if let Some(bank) = &report.bank {
        bank::render(&mut out, bank);
    }
    if let Some(cache) = &report.cache {
        cache::render(&mut out, cache);
    }
    let mut tail = String::new();
    definitions(&mut tail, report);
    tail.push_str("<div id=\"tip\" role=\"tooltip\"></div>\n<script>");
    tail.push_str(crate::view::SCRIPT);
    tail.push_str("</script>\n</body>\n</html>\n");
    if report.linearizability.is_some() || report.model.is_some() {
        linear::render(&mut out, report, tail.len());
    }
    out.push_str(&tail);
    out
}

/// The definitions every number on the page follows, folded away until asked for.
fn definitions(out: &mut String, report: &Report) {
    let lists: [(&str, Option<&BTreeMap<String, String>>); 4] = [
        (
            "Timing",
            report.timing.as_ref().map(|timing| &timing.definitions),
        ),
        (
            "Lost writes",
            report.lost_writes.as_ref().map(|sets| &sets.definitions),
        ),
        ("Bank", report.bank.as_ref().map(|bank| &bank.definitions)),
        (
            "Cache invalidation",
            report.cache.as_ref().map(|cache| &cache.definitions),
        ),
    ];
    if lists.iter().all(|(_, list)| list.is_none()) {
        return;
    }
    out.push_str(
        "<section id=\"definitions\" class=\"card\"><details><summary><h2>Definitions</h2> \
         <small>what each number on this page means</small></summary>\n",
    );
    for (title, list) in lists {
        let Some(list) = list else {
            continue;
        };
        let _ = write!(out, "<h3>{title}</h3><dl class=\"defs\">");
        for (name, text) in list {
            out.push_str("<dt>");
            push_escaped(out, name);
            out.push_str("</dt><dd>");
            push_escaped(out, text);
            out.push_str("</dd>");
        }
        out.push_str("</dl>\n");
    }
    out.push_str("</details></section>\n");
}

/// A verdict as a coloured badge.
fn badge(verdict: Verdict) -> String {
    format!("<span class=\"badge {verdict}\">{verdict}</span>")
}

/// A section's opening: `<section id=...><h2>title badge <small>note</small></h2>`.
fn open_section(out: &mut String, id: &str, title: &str, verdict: Option<Verdict>, note: &str) {
    let _ = write!(out, "<section id=\"{id}\" class=\"card\"><h2>{title}");
    if let Some(verdict) = verdict {
        out.push(' ');
        out.push_str(&badge(verdict));
    }
    if !note.is_empty() {
        out.push_str(" <small>");
        push_escaped(out, note);
        out.push_str("</small>");
    }
    out.push_str("</h2>\n");
}

/// Milliseconds with about three significant digits: `0.042`, `3.1`, `250`.
fn ms(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_string();
    }
    let abs = value.abs();
    if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// An optional number of ms, `-` when absent.
fn maybe_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), ms)
}

/// The cells `<td>n</td><td>min</td>...<td>max</td>` of a quantiles row.
fn quantile_cells(out: &mut String, quantiles: &Quantiles) {
    let _ = write!(
        out,
        "<td class=\"n\">{}</td>",
        crate::view::text::group(quantiles.count as u64)
    );
    for value in [
        quantiles.min,
        quantiles.p50,
        quantiles.p95,
        quantiles.p99,
        quantiles.max,
    ] {
        let _ = write!(out, "<td class=\"n\">{}</td>", maybe_ms(value));
    }
}

/// The header row matching [`quantile_cells`].
const QUANTILE_HEADINGS: &str =
    "<th>count</th><th>min</th><th>p50</th><th>p95</th><th>p99</th><th>max</th>";

/// A JSON value in one line, bounded and escaped.
fn push_value(out: &mut String, value: &serde_json::Value) {
    let text = serde_json::to_string(value).unwrap_or_default();
    push_escaped(out, &excerpt(&text, MAX_TEXT_CHARS));
}

/// A key as reports show it, or `-` for the unkeyed set.
fn push_key(out: &mut String, key: &Option<String>) {
    match key {
        Some(key) => push_escaped(out, &excerpt(key, MAX_TEXT_CHARS)),
        None => out.push('-'),
    }
}

/// "and N more" under a capped list, when it was capped.
fn and_more(out: &mut String, shown: usize, total: usize, what: &str) {
    if total > shown {
        let _ = writeln!(
            out,
            "<p class=\"cut\">and {} more {what}</p>",
            crate::view::text::group((total - shown) as u64)
        );
    }
}
