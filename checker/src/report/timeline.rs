//! The timeline: the run on one axis, every nemesis fault as a shaded interval with its
//! recovery point marked, and the share of operation outcomes per bucket of time.
//!
//! Drawn by hand in SVG: a Gantt row per fault needs a label and a tooltip per row, which a
//! plotting library gives no better than a few rectangles do.

use super::plots::{outcome_buckets, OutcomeBuckets};
use super::span::Span;
use super::{ms, open_section, MAX_ROWS};
use crate::check::Report;
use crate::timing::{FaultRecovery, TimingReport};
use crate::view::text::{excerpt, group, nanos, push_escaped, tick_step, Px};
use std::fmt::Write;

/// The drawing's width, the label column within it, and the right margin.
const WIDTH: f64 = 1_100.0;
const LABELS: f64 = 200.0;
const RIGHT: f64 = 20.0;
/// The height of one fault row and of the outcome strip.
const ROW: f64 = 20.0;
const STRIP: f64 = 70.0;
/// Most fault rows drawn; every fault is still shaded, and all are in the fault table.
const MAX_FAULT_ROWS: usize = 40;

/// Where things are on the horizontal axis: times (ns) or, without times, event indices.
#[derive(Clone, Copy, Debug)]
struct Scale {
    end: u64,
    timed: bool,
}

impl Scale {
    fn x(self, position: u64) -> f64 {
        let fraction = position.min(self.end) as f64 / self.end.max(1) as f64;
        LABELS + fraction * (WIDTH - LABELS - RIGHT)
    }

    fn show(self, position: u64) -> String {
        if position == 0 {
            "0".to_string()
        } else if self.timed {
            nanos(position)
        } else {
            format!("event {}", group(position))
        }
    }

    /// A fault's start and end on this scale; an unhealed fault runs to the end.
    fn interval(self, fault: &FaultRecovery) -> (u64, u64, bool) {
        let (start, end) = if self.timed {
            (fault.start_ns.unwrap_or(0), fault.end_ns)
        } else {
            (fault.start_index, fault.end_index)
        };
        (start, end.unwrap_or(self.end).max(start), end.is_none())
    }

    fn recovered_at(self, fault: &FaultRecovery) -> Option<u64> {
        if self.timed {
            fault.recovered_at_ns
        } else {
            fault.recovered_at_index
        }
    }
}

/// The timeline section.
pub(super) fn render(
    out: &mut String,
    report: &Report,
    timing: &TimingReport,
    span: Option<&Span>,
) {
    let scale = match span {
        Some(span) => Scale {
            end: span.end_ns,
            timed: true,
        },
        None => Scale {
            end: report.n_events.max(1),
            timed: false,
        },
    };
    let note = match span {
        Some(span) => format!(
            "{} of run, {} faults",
            nanos(span.end_ns),
            timing.faults.len()
        ),
        None => format!("by event index (no times), {} faults", timing.faults.len()),
    };
    open_section(out, "timeline", "Timeline", None, &note);
    if let Some(note) = &timing.note {
        out.push_str("<p class=\"why\">");
        push_escaped(out, note);
        out.push_str("</p>\n");
    }
    let buckets = span.and_then(|span| outcome_buckets(report, timing, span));
    let n_rows = timing.faults.len().min(MAX_FAULT_ROWS);
    let rows_top = 28.0;
    let strip_top = rows_top + n_rows as f64 * ROW + 14.0;
    let height = strip_top + if buckets.is_some() { STRIP + 16.0 } else { 0.0 };
    let _ = writeln!(
        out,
        "<div class=\"scroll\"><svg class=\"timeline\" width=\"{WIDTH}\" height=\"{}\" aria-label=\"timeline\">",
        Px(height)
    );
    axis(out, scale, height);
    for fault in &timing.faults {
        let (start, end, _) = scale.interval(fault);
        let _ = write!(
            out,
            "<rect class=\"fault\" x=\"{}\" y=\"18\" width=\"{}\" height=\"{}\"/>",
            Px(scale.x(start)),
            Px((scale.x(end) - scale.x(start)).max(1.5)),
            Px(height - 18.0)
        );
    }
    out.push('\n');
    for (row, fault) in timing.faults.iter().take(MAX_FAULT_ROWS).enumerate() {
        fault_row(out, scale, fault, rows_top + row as f64 * ROW);
    }
    if let Some(buckets) = &buckets {
        strip(out, buckets, strip_top);
    }
    out.push_str("</svg></div>\n");
    if timing.faults.len() > MAX_FAULT_ROWS {
        let _ = writeln!(
            out,
            "<p class=\"cut\">{} more faults are shaded but not given a row; the fault table lists up to {MAX_ROWS}.</p>",
            group((timing.faults.len() - MAX_FAULT_ROWS) as u64)
        );
    }
    out.push_str(
        "<p class=\"legend-line\"><span class=\"sw fault-sw\"></span>fault interval \
         <span class=\"sw rec-sw\"></span>recovered (first ok operation after the last disruption) \
         <span class=\"sw ok-sw\"></span>ok <span class=\"sw fail-sw\"></span>fail \
         <span class=\"sw info-sw\"></span>info (share of completions per bucket)</p>\n</section>\n",
    );
}

/// Ticks along the top and grid lines down the drawing.
fn axis(out: &mut String, scale: Scale, height: f64) {
    let step = tick_step(scale.end, 10);
    let mut at = 0u64;
    while at <= scale.end {
        let x = scale.x(at);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{0}\" y1=\"18\" x2=\"{0}\" y2=\"{1}\"/><text class=\"tick\" x=\"{0}\" y=\"12\" text-anchor=\"middle\">{2}</text>",
            Px(x),
            Px(height),
            scale.show(at)
        );
        match at.checked_add(step) {
            Some(next) => at = next,
            None => break,
        }
    }
    out.push('\n');
}

/// One fault: its label, its bar with the explanation as tooltip, and its recovery point.
fn fault_row(out: &mut String, scale: Scale, fault: &FaultRecovery, top: f64) {
    let (start, end, open) = scale.interval(fault);
    let targets = serde_json::to_string(&fault.targets).unwrap_or_default();
    let label = format!("{} {}", fault.fault, targets);
    let _ = write!(
        out,
        "<g class=\"frow\"><text class=\"flabel\" x=\"{}\" y=\"{}\" text-anchor=\"end\">",
        Px(LABELS - 8.0),
        Px(top + 14.0)
    );
    push_escaped(out, &excerpt(&label, 30));
    out.push_str("</text>");
    let rto = match fault.rto_ms {
        Some(rto) => format!("RTO {} ms", ms(rto)),
        None if fault.recovered => "RTO unknown (no times)".to_string(),
        None => "not recovered".to_string(),
    };
    let _ = write!(
        out,
        "<rect class=\"fbar{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"2\"><title>",
        if open { " open" } else { "" },
        Px(scale.x(start)),
        Px(top + 3.0),
        Px((scale.x(end) - scale.x(start)).max(2.0)),
        Px(ROW - 6.0)
    );
    let healed = match &fault.healed_by {
        Some(heal) => format!("healed by {heal} at {}", scale.show(end)),
        None => "never healed".to_string(),
    };
    push_escaped(
        out,
        &excerpt(
            &format!(
                "{label}\nfrom {} — {healed}\n{} operations disrupted; {rto}\n{}",
                scale.show(start),
                group(fault.affected_ops as u64),
                fault.explanation
            ),
            1_000,
        ),
    );
    out.push_str("</title></rect>");
    match scale.recovered_at(fault) {
        Some(at) => {
            let x = scale.x(at);
            let _ = write!(
                out,
                "<path class=\"rec\" d=\"M{0} {1}l5 7l-5 7l-5 -7z\"><title>recovered at {2}; {3}</title></path>",
                Px(x),
                Px(top + 3.0),
                scale.show(at),
                rto
            );
        }
        None => {
            let _ = write!(
                out,
                "<text class=\"norec\" x=\"{}\" y=\"{}\">✗ {rto}</text>",
                Px(scale.x(end) + 4.0),
                Px(top + 14.0)
            );
        }
    }
    out.push_str("</g>\n");
}

/// The share of ok, fail and info completions in each bucket, stacked to full height.
fn strip(out: &mut String, buckets: &OutcomeBuckets, top: f64) {
    let _ = write!(
        out,
        "<text class=\"flabel\" x=\"{}\" y=\"{}\" text-anchor=\"end\">outcomes per {}</text>",
        Px(LABELS - 8.0),
        Px(top + STRIP / 2.0 + 4.0),
        nanos(buckets.bucket_ns)
    );
    let scale = Scale {
        end: buckets.end_ns,
        timed: true,
    };
    for (number, counts) in buckets.counts.iter().enumerate() {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            continue;
        }
        let from = number as u64 * buckets.bucket_ns;
        let x0 = scale.x(from);
        let x1 = scale.x(from + buckets.bucket_ns);
        let width = (x1 - x0).max(0.6);
        let _ = write!(
            out,
            "<g><title>{} to {}: {} ok, {} fail, {} info</title>",
            nanos(from),
            nanos(from + buckets.bucket_ns),
            counts[0],
            counts[1],
            counts[2]
        );
        let mut y = top + STRIP;
        for (class, count) in ["sok", "sfail", "sinfo"].iter().zip(counts) {
            if *count == 0 {
                continue;
            }
            let h = STRIP * *count as f64 / total as f64;
            y -= h;
            let _ = write!(
                out,
                "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
                Px(x0),
                Px(y),
                Px(width),
                Px(h)
            );
        }
        out.push_str("</g>");
    }
    out.push('\n');
}
