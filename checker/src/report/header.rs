//! The page's header: the file, the combined verdict, each checker's verdict in one table, the
//! checkers that ran and why, the counts, and links to every section.

use super::{badge, MAX_TEXT_CHARS};
use crate::check::Report;
use crate::select::CheckerKind;
use crate::verdict::Verdict;
use crate::view::text::{excerpt, group, push_escaped};
use std::fmt::Write;

/// The header and the table of verdicts.
pub(super) fn render(out: &mut String, report: &Report) {
    let _ = write!(
        out,
        "<header class=\"top\">\n<h1>Helios report {}</h1>\n<dl class=\"facts\">",
        badge(report.verdict)
    );
    fact(out, "file", &excerpt(&report.file, MAX_TEXT_CHARS));
    fact(out, "format", report.format.name());
    if let Some(header) = &report.header {
        let text = serde_json::to_string(header).unwrap_or_default();
        fact(out, "history header", &excerpt(&text, MAX_TEXT_CHARS));
    }
    let checkers: Vec<String> = report.checkers.iter().map(ToString::to_string).collect();
    fact(
        out,
        "checkers",
        &format!(
            "{} ({})",
            checkers.join(", "),
            excerpt(&report.checkers_source, MAX_TEXT_CHARS)
        ),
    );
    if let Some(model) = &report.model {
        fact(
            out,
            "model",
            &format!(
                "{model} ({})",
                excerpt(&report.model_source, MAX_TEXT_CHARS)
            ),
        );
    }
    fact(
        out,
        "operations",
        &format!(
            "{} ({} events)",
            group(report.n_ops as u64),
            group(report.n_events)
        ),
    );
    fact(out, "checked in", &format!("{:.1} ms", report.elapsed_ms));
    out.push_str("</dl>\n");
    if let Some(note) = &report.note {
        out.push_str("<p class=\"why\">");
        push_escaped(out, &excerpt(note, 1_000));
        out.push_str("</p>\n");
    }
    verdicts(out, report);
    out.push_str("</header>\n");
}

fn fact(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "<dt>{name}</dt><dd>");
    push_escaped(out, value);
    out.push_str("</dd>");
}

/// One row per checker that ran: its verdict, what it found in a few words, and a link.
fn verdicts(out: &mut String, report: &Report) {
    out.push_str(
        "<table class=\"verdicts\"><tr><th>checker</th><th>verdict</th><th>found</th></tr>\n",
    );
    for kind in &report.checkers {
        let (anchor, verdict, found) = row(report, *kind);
        let verdict = verdict.map_or_else(
            || "<span class=\"badge none\">measures</span>".to_string(),
            badge,
        );
        let _ = write!(
            out,
            "<tr><td><a href=\"#{anchor}\">{kind}</a></td><td>{verdict}</td><td>"
        );
        push_escaped(out, &excerpt(&found, MAX_TEXT_CHARS));
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
}

/// The anchor, verdict and one-line finding of one checker.
fn row(report: &Report, kind: CheckerKind) -> (&'static str, Option<Verdict>, String) {
    match kind {
        CheckerKind::Linearizable => match &report.linearizability {
            Some(linear) => {
                let found = match &linear.witness {
                    Some(witness) => format!("cannot linearize {}", witness.description),
                    None => match linear.unknown_reason {
                        Some(reason) => format!("unknown because {}", reason.describe()),
                        None => format!(
                            "{} operations in {} partitions linearize",
                            group(linear.n_ops as u64),
                            group(linear.n_partitions as u64)
                        ),
                    },
                };
                ("linearizability", Some(linear.verdict), found)
            }
            None => (
                "linearizability",
                Some(Verdict::Unknown),
                "no model applies".to_string(),
            ),
        },
        CheckerKind::Isolation => match &report.isolation {
            Some(elle) => {
                let mut names: Vec<String> = elle.failing.clone();
                names.extend(
                    elle.informational
                        .iter()
                        .map(|name| format!("{name} (allowed)")),
                );
                let found = if names.is_empty() {
                    format!("no anomaly in {} transactions", group(elle.n_txns as u64))
                } else {
                    names.join(", ")
                };
                ("isolation", Some(elle.verdict), found)
            }
            None => ("isolation", None, "did not run".to_string()),
        },
        CheckerKind::LostWrites => match &report.lost_writes {
            Some(sets) => (
                "lost-writes",
                Some(sets.verdict),
                format!(
                    "{} elements: {} stable, {} lost, {} stale, {} duplicated, {} unexpected",
                    group(sets.n_elements as u64),
                    group(sets.stable_count as u64),
                    group(sets.lost_count as u64),
                    group(sets.stale_count as u64),
                    group(sets.duplicated_count as u64),
                    group(sets.unexpected_count as u64)
                ),
            ),
            None => ("lost-writes", None, "did not run".to_string()),
        },
        CheckerKind::Bank => match &report.bank {
            Some(bank) => {
                let found = match &bank.first_error {
                    Some(bad) => format!(
                        "{} of {} reads bad; first: {}",
                        group(bank.bad_reads as u64),
                        group(bank.reads_checked as u64),
                        bad.explanation
                    ),
                    None => format!(
                        "{} reads, each summing to the total",
                        group(bank.reads_checked as u64)
                    ),
                };
                ("bank", Some(bank.verdict), found)
            }
            None => ("bank", None, "did not run".to_string()),
        },
        CheckerKind::Cache => match &report.cache {
            Some(cache) => {
                let found = match (&cache.witness, &cache.note) {
                    (Some(late), _) => late.explanation.clone(),
                    (None, Some(note)) => note.clone(),
                    (None, None) => format!(
                        "{} (write, node) pairs invalidated within {} ms",
                        group(cache.pairs as u64),
                        cache.invalidation_bound_ms
                    ),
                };
                ("cache", Some(cache.verdict), found)
            }
            None => ("cache", None, "did not run".to_string()),
        },
        CheckerKind::Timing => match &report.timing {
            Some(timing) => (
                "timeline",
                None,
                format!(
                    "{} latency rows, {} faults",
                    timing.latency.len(),
                    timing.faults.len()
                ),
            ),
            None => ("timeline", None, "did not run".to_string()),
        },
    }
}
