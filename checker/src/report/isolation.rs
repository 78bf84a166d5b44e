//! The isolation section (Elle): each anomaly found, forbidden or allowed by the consistency
//! model checked, with its explanation and, for cycle anomalies, the cycle drawn.

use super::cycle;
use super::{and_more, open_section, MAX_CYCLES_DRAWN, MAX_CYCLE_NODES, MAX_ROWS, MAX_TEXT_CHARS};
use crate::check::Report;
use crate::elle::{Anomaly, ElleReport};
use crate::view::text::{excerpt, group, push_escaped};
use std::fmt::Write;

/// The isolation section.
pub(super) fn render(out: &mut String, report: &Report, elle: &ElleReport) {
    let note = format!(
        "{}, {} transactions of {}, checked in {:.1} ms",
        elle.consistency,
        group(elle.n_txns as u64),
        elle.workload.name(),
        elle.elapsed_ms
    );
    open_section(
        out,
        "isolation",
        "Isolation (Elle)",
        Some(elle.verdict),
        &note,
    );
    if let Some(reason) = &elle.unknown_reason {
        out.push_str("<p class=\"why\">Incomplete: ");
        push_escaped(out, &excerpt(reason, 1_000));
        out.push_str("</p>\n");
    }
    if elle.failing.is_empty() && elle.informational.is_empty() {
        out.push_str("<p>No anomaly was found.</p>\n</section>\n");
        return;
    }
    out.push_str(EDGE_LEGEND);
    let mut cycles_drawn = 0;
    let names = elle
        .failing
        .iter()
        .map(|name| (name, true))
        .chain(elle.informational.iter().map(|name| (name, false)));
    for (name, forbidden) in names {
        let count = elle.anomaly_counts.get(name).copied().unwrap_or(0);
        let (class, verdict) = if forbidden {
            ("forbidden", format!("forbidden by {}", elle.consistency))
        } else {
            (
                "allowed",
                format!(
                    "allowed by {}; only stronger models forbid it",
                    elle.consistency
                ),
            )
        };
        let _ = write!(out, "<div class=\"anomaly {class}\"><h3>");
        push_escaped(out, name);
        let _ = writeln!(
            out,
            " <span class=\"tag {class}\">{verdict}</span> <small>{} found</small></h3>",
            group(count as u64)
        );
        let instances = elle.anomalies.get(name).map_or(&[][..], Vec::as_slice);
        for (number, anomaly) in instances.iter().take(MAX_ROWS).enumerate() {
            instance(out, report, anomaly, number + 1, &mut cycles_drawn);
        }
        and_more(out, instances.len().min(MAX_ROWS), count, "instances");
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
}

/// One instance: its explanation lines beside its cycle graph.
fn instance(
    out: &mut String,
    report: &Report,
    anomaly: &Anomaly,
    number: usize,
    cycles_drawn: &mut usize,
) {
    out.push_str("<div class=\"instance\"><div class=\"lines\">");
    let _ = write!(out, "<b>#{number}</b>");
    if !anomaly.ops.is_empty() {
        let ids: Vec<String> = anomaly
            .ops
            .iter()
            .take(20)
            .map(|id| format!("T{id}"))
            .collect();
        let _ = write!(out, " <small>transactions {}</small>", ids.join(", "));
    }
    out.push_str("<ul class=\"expl-lines\">");
    for line in anomaly.explanation.iter().take(MAX_ROWS) {
        out.push_str("<li>");
        push_escaped(out, &excerpt(line, MAX_TEXT_CHARS * 2));
        out.push_str("</li>");
    }
    out.push_str("</ul>");
    and_more(
        out,
        anomaly.explanation.len().min(MAX_ROWS),
        anomaly.explanation.len(),
        "lines",
    );
    out.push_str("</div>");
    if let Some(steps) = &anomaly.cycle {
        if *cycles_drawn < MAX_CYCLES_DRAWN {
            match cycle::render(steps, report.operations.as_ref(), MAX_CYCLE_NODES) {
                Some(svg) => {
                    out.push_str("<div class=\"graph\">");
                    out.push_str(&svg);
                    out.push_str("</div>");
                    *cycles_drawn += 1;
                }
                None => {
                    let _ = write!(
                        out,
                        "<p class=\"cut\">This cycle has more than {MAX_CYCLE_NODES} transactions; it is explained in words only.</p>"
                    );
                }
            }
        } else if *cycles_drawn == MAX_CYCLES_DRAWN {
            let _ = write!(
                out,
                "<p class=\"cut\">The page draws at most {MAX_CYCLES_DRAWN} cycles; later ones are explained in words only.</p>"
            );
            *cycles_drawn += 1;
        }
    }
    out.push_str("</div>\n");
}

/// What each edge colour means.
const EDGE_LEGEND: &str = concat!(
    "<p class=\"legend-line\">edges: ",
    "<span class=\"ek ww\">ww</span> write-write ",
    "<span class=\"ek wr\">wr</span> write-read ",
    "<span class=\"ek rw\">rw</span> read-write (anti-dependency) ",
    "<span class=\"ek process\">process</span> same process, in order ",
    "<span class=\"ek realtime\">realtime</span> completed before invoked; ",
    "hover an arrow for why it holds, a node for its transaction</p>\n"
);
