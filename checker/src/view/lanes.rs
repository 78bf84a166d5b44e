//! The lanes of one partition as SVG: one lane per process, a bar per operation on a shared
//! axis, the linearization as numbered points joined in order, and the nemesis's faults.

use super::nemesis::{FaultInterval, Marker};
use super::section::{Context, Placed};
use super::select::Window;
use super::text::{escape, excerpt, group, nanos, push_escaped, tick_step, Px};
use super::{Axis, MAX_TEXT_CHARS};
use crate::history::Process;
use crate::linear::describe_located;
use crate::ops::{Operation, Outcome};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// Width of the column of lane names, which stays in place while the lanes scroll.
const NAMES_WIDTH: f64 = 92.0;
/// Left margin of the plotting area.
const LEFT: f64 = 10.0;
/// Height of one lane.
const LANE: f64 = 28.0;
/// Height of the axis row above the lanes.
const TOP: f64 = 26.0;
/// Height of the nemesis label rows, when the section has nemesis operations.
const NEMESIS_ROWS: f64 = 34.0;
/// Width per drawn operation on a time axis, within [`MIN_WIDTH`, `MAX_WIDTH`].
const WIDTH_PER_OP: f64 = 9.0;
/// Width per event slot on an event-index axis, within [`MIN_WIDTH`, `MAX_WIDTH`].
const WIDTH_PER_EVENT: f64 = 7.0;
/// Narrowest plotting area.
const MIN_WIDTH: f64 = 1_100.0;
/// Widest plotting area.
const MAX_WIDTH: f64 = 14_000.0;
/// Most nemesis markers and fault intervals drawn in one section.
const MAX_MARKERS: usize = 300;

/// The horizontal scale of one section.
///
/// On a time axis, positions are placed linearly. On an event-index axis only the order of
/// events means anything, so, as in Porcupine's visualizer, each event drawn gets an equal
/// slot, and the other partitions' events take no room.
struct Scale {
    /// The first position on the axis.
    first: u64,
    /// The last position: a little past the last completion, so that operations of unknown
    /// outcome visibly run on.
    last: u64,
    /// Width of the plotting area in pixels.
    width: f64,
    /// On an event-index axis, the positions drawn, sorted and distinct; empty on a time axis.
    stops: Vec<u64>,
}

impl Scale {
    fn x(&self, position: u64) -> f64 {
        let position = position.clamp(self.first, self.last);
        if self.stops.is_empty() {
            let span = (self.last - self.first).max(1) as f64;
            return LEFT + (position - self.first) as f64 / span * self.width;
        }
        let rank = self.stops.partition_point(|&stop| stop < position);
        let slots = self.stops.len() + self.stops.len() / 25 + 1;
        LEFT + (rank as f64 + 0.5) / slots as f64 * self.width
    }

    /// The right end of the axis, where operations of unknown outcome end.
    fn end(&self) -> f64 {
        LEFT + self.width
    }
}

/// Appends the SVG of `window`.
pub(super) fn draw(
    out: &mut String,
    context: &Context<'_>,
    window: &Window<'_>,
    placed: &HashMap<usize, Placed<'_>>,
) {
    let axis = context.axis;
    let scale = scale(context, window, placed);
    let mut lanes: BTreeMap<&Process, usize> =
        window.ops.iter().map(|op| (&op.process, 0)).collect();
    for (row, lane) in lanes.values_mut().enumerate() {
        *lane = row;
    }
    let has_nemesis = context
        .markers
        .iter()
        .any(|marker| marker.at >= scale.first && marker.at <= scale.last);
    let top = if has_nemesis { TOP + NEMESIS_ROWS } else { TOP };
    let lane_y = |process: &Process| top + lanes.get(process).copied().unwrap_or(0) as f64 * LANE;
    let height = top + lanes.len() as f64 * LANE + 8.0;
    let width = LEFT + scale.width + 12.0;
    let _ = write!(
        out,
        "<div class=\"lanes\"><svg class=\"names\" width=\"{NAMES_WIDTH}\" height=\"{height:.0}\" viewBox=\"0 0 {NAMES_WIDTH} {height:.0}\">"
    );
    let mut stripes = String::new();
    for (process, row) in &lanes {
        let y = top + *row as f64 * LANE;
        if row % 2 == 1 {
            let _ = write!(out, "<rect class=\"stripe\" x=\"0\" y=\"{y:.1}\" width=\"{NAMES_WIDTH}\" height=\"{LANE}\"/>");
            let _ = write!(stripes, "<rect class=\"stripe\" x=\"0\" y=\"{y:.1}\" width=\"{width:.0}\" height=\"{LANE}\"/>");
        }
        let _ = write!(out, "<text class=\"lane\" x=\"6\" y=\"{:.1}\">", y + 21.0);
        push_escaped(out, &excerpt(&format!("process {process}"), 14));
        out.push_str("</text>");
    }
    let _ = write!(
        out,
        "</svg><div class=\"scroll\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\">"
    );
    out.push_str(&stripes);
    ticks(out, axis, &scale, height);
    faults(out, axis, &scale, context.intervals, height);
    markers(out, axis, &scale, context.markers, height);
    let mut points: Vec<Point<'_>> = Vec::new();
    for op in &window.ops {
        let y = lane_y(&op.process);
        let step = placed.get(&op.id);
        bar(out, context, &scale, op, y, step);
        if let Some(step) = step {
            let (x, y) = (scale.x(step.at), y);
            points.push(Point {
                step,
                x,
                y,
                op_id: op.id,
            });
        }
    }
    linearization(out, context.number, &mut points);
    if let Some(witness) = context.witness {
        if let Some(op) = window.ops.iter().find(|op| op.id == witness.op) {
            let y = lane_y(&op.process);
            let _ = write!(
                out,
                "<text class=\"wlabel\" x=\"{:.1}\" y=\"{:.1}\">✗ cannot linearize</text>",
                scale.x(axis.start(op)),
                y + 8.0
            );
        }
    }
    out.push_str("</svg></div></div>\n");
}

/// The axis: from the first invocation of the window's contiguous part to a little past the
/// last event drawn. Earlier operations still running are clipped at its start.
fn scale(context: &Context<'_>, window: &Window<'_>, placed: &HashMap<usize, Placed<'_>>) -> Scale {
    let axis = context.axis;
    let contiguous = window.contiguous();
    let first = contiguous
        .iter()
        .map(|op| axis.start(op))
        .min()
        .unwrap_or(0);
    let points = window
        .ops
        .iter()
        .filter_map(|op| placed.get(&op.id))
        .map(|step| step.at);
    let ends = window.ops.iter().filter_map(|op| axis.end(op));
    let starts = window.ops.iter().map(|op| axis.start(op));
    let last_event = starts
        .clone()
        .chain(ends.clone())
        .chain(points.clone())
        .max()
        .unwrap_or(first)
        .max(first);
    let last = last_event.saturating_add((last_event - first) / 25 + 1);
    if axis == Axis::Time {
        return Scale {
            first,
            last,
            width: (window.ops.len() as f64 * WIDTH_PER_OP).clamp(MIN_WIDTH, MAX_WIDTH),
            stops: Vec::new(),
        };
    }
    let nemesis = context
        .markers
        .iter()
        .flat_map(|marker| [marker.at, marker.last]);
    let mut stops: Vec<u64> = starts
        .chain(ends)
        .chain(points)
        .chain(nemesis)
        .filter(|&position| position >= first && position <= last_event)
        .collect();
    stops.sort_unstable();
    stops.dedup();
    Scale {
        first,
        last,
        width: (stops.len() as f64 * WIDTH_PER_EVENT).clamp(MIN_WIDTH, MAX_WIDTH),
        stops,
    }
}

/// Grid lines and their labels, about every 110 pixels.
fn ticks(out: &mut String, axis: Axis, scale: &Scale, height: f64) {
    let n_ticks = (scale.width / 110.0).max(1.0) as u64;
    let mut positions = Vec::new();
    if scale.stops.is_empty() {
        let step = tick_step(scale.last - scale.first, n_ticks);
        let mut at = scale.first.div_ceil(step).saturating_mul(step);
        while at <= scale.last {
            positions.push(at);
            at = match at.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
    } else {
        let every = (scale.stops.len() as u64).div_ceil(n_ticks).max(1) as usize;
        positions.extend(scale.stops.iter().step_by(every));
    }
    for at in positions {
        let x = scale.x(at);
        if x > scale.end() - 40.0 {
            break;
        }
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"18\" x2=\"{x:.1}\" y2=\"{height:.0}\"/><text class=\"tick\" x=\"{:.1}\" y=\"13\">{}</text>",
            x + 2.0,
            escape(&axis.show(at))
        );
    }
}

/// Shaded intervals between a fault and its heal, clipped to the axis.
fn faults(out: &mut String, axis: Axis, scale: &Scale, intervals: &[FaultInterval], height: f64) {
    let visible = intervals.iter().filter(|interval| {
        interval.start <= scale.last && interval.end.is_none_or(|end| end >= scale.first)
    });
    for interval in visible.take(MAX_MARKERS) {
        let x1 = scale.x(interval.start);
        let x2 = interval.end.map_or(scale.end(), |end| scale.x(end));
        let mut tip = format!("fault: {}", interval.fault);
        if !interval.value.is_empty() {
            let _ = write!(tip, " {}", excerpt(&interval.value, MAX_TEXT_CHARS));
        }
        let _ = write!(tip, "\nfrom {}", axis.show(interval.start));
        match (&interval.heal, interval.end) {
            (Some(heal), Some(end)) => {
                let _ = write!(tip, " until {heal} at {}", axis.show(end));
            }
            _ => tip.push_str(", never healed in this history"),
        }
        let _ = write!(
            out,
            "<rect class=\"fault\" x=\"{x1:.1}\" y=\"18\" width=\"{:.1}\" height=\"{:.0}\" data-t=\"{}\"/>",
            (x2 - x1).max(1.0),
            height - 18.0,
            escape(&tip)
        );
    }
}

/// A dashed vertical line and a label for every nemesis operation on the axis.
fn markers(out: &mut String, axis: Axis, scale: &Scale, markers: &[Marker], height: f64) {
    let visible = markers
        .iter()
        .filter(|marker| marker.at >= scale.first && marker.at <= scale.last);
    for (row, marker) in visible.take(MAX_MARKERS).enumerate() {
        let x = scale.x(marker.at);
        let mut tip = format!("nemesis: {}", marker.f);
        if !marker.value.is_empty() {
            let _ = write!(tip, " {}", excerpt(&marker.value, MAX_TEXT_CHARS));
        }
        let _ = write!(tip, "\nat {}", axis.show(marker.at));
        if marker.last != marker.at {
            let _ = write!(tip, " to {}", axis.show(marker.last));
        }
        let _ = write!(
            out,
            "<g data-t=\"{}\"><line class=\"nem\" x1=\"{x:.1}\" y1=\"18\" x2=\"{x:.1}\" y2=\"{height:.0}\"/><text class=\"nlabel\" x=\"{:.1}\" y=\"{}\">{}</text></g>",
            escape(&tip),
            x + 3.0,
            29 + 11 * (row % 3),
            escape(&excerpt(&marker.f, 24))
        );
    }
}

/// One operation's bar, with its tooltip.
fn bar(
    out: &mut String,
    context: &Context<'_>,
    scale: &Scale,
    op: &Operation,
    y: f64,
    step: Option<&Placed<'_>>,
) {
    let axis = context.axis;
    let failing = context.witness.is_some_and(|witness| witness.op == op.id);
    let start = axis.start(op);
    let x1 = scale.x(start);
    let x2 = axis.end(op).map_or(scale.end(), |end| scale.x(end));
    let mut class = String::from("op");
    if step.is_some() {
        class.push_str(" lin");
    }
    if op.outcome.is_unknown() {
        class.push_str(" unk");
    }
    if op.outcome == Outcome::Fail {
        class.push_str(" failed");
    }
    if start < scale.first {
        class.push_str(" clipped");
    }
    if failing {
        class.push_str(" witness");
    }
    let id = if failing {
        "witness-op".to_string()
    } else {
        format!("s{}-{}", context.number, op.id)
    };
    let _ = write!(
        out,
        "<rect id=\"{id}\" class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"14\" rx=\"2\" data-t=\"",
        Px(x1),
        Px(y + 10.0),
        Px((x2 - x1).max(4.0))
    );
    push_escaped(out, &tooltip(context, op, step, failing));
    out.push_str("\"/>");
}

/// An operation in words: what it did, how it ended, when, and where it is linearized.
fn tooltip(
    context: &Context<'_>,
    op: &Operation,
    step: Option<&Placed<'_>>,
    failing: bool,
) -> String {
    let axis = context.axis;
    let mut tip = excerpt(&describe_located(op), MAX_TEXT_CHARS);
    tip.push_str(match op.outcome {
        Outcome::Ok => "\noutcome: ok",
        Outcome::Fail => "\noutcome: fail (certainly did not take effect; not checked)",
        Outcome::Info => "\noutcome: info (unknown: may take effect at any later time, or never)",
        Outcome::Pending => "\noutcome: pending (never completed: unknown)",
    });
    let _ = write!(tip, "\ninvoked at {}", axis.show(axis.start(op)));
    match (axis.end(op), op.outcome) {
        (Some(end), _) => {
            let _ = write!(tip, ", completed at {}", axis.show(end));
            if axis == Axis::Time {
                let _ = write!(tip, " ({} later)", nanos(end - axis.start(op)));
            }
        }
        (None, Outcome::Info) => {
            let at = match axis {
                Axis::Time => op.complete_time,
                Axis::Index => op.complete_index,
            };
            if let Some(at) = at {
                let _ = write!(tip, ", info at {}", axis.show(at));
            }
        }
        _ => {}
    }
    if let Some(node) = &op.node {
        let _ = write!(tip, "\nnode: {}", excerpt(node, 60));
    }
    if let Some(error) = &op.error {
        let _ = write!(
            tip,
            "\nerror: {}",
            excerpt(&crate::models::show(error), MAX_TEXT_CHARS)
        );
    }
    if let Some(step) = step {
        let _ = write!(
            tip,
            "\nlinearization step {}; state after: {}",
            step.number,
            excerpt(step.state, MAX_TEXT_CHARS)
        );
    } else if failing {
        if let Some(witness) = context.witness {
            let _ = write!(
                tip,
                "\nCANNOT BE LINEARIZED after the {} steps of the longest prefix, in state {}",
                group(witness.prefix.len() as u64),
                excerpt(&witness.state, MAX_TEXT_CHARS)
            );
        }
    } else if op.outcome != Outcome::Fail && context.witness.is_some() {
        tip.push_str("\nnot in the longest linearizable prefix");
    }
    tip
}

/// A linearization point as drawn.
struct Point<'a> {
    step: &'a Placed<'a>,
    x: f64,
    /// The top of the point's lane.
    y: f64,
    op_id: usize,
}

/// The linearization: a faint line through the points in order, then the numbered points.
fn linearization(out: &mut String, number: usize, points: &mut [Point<'_>]) {
    if points.is_empty() {
        return;
    }
    points.sort_by_key(|point| point.step.number);
    out.push_str("<polyline class=\"order\" points=\"");
    for point in points.iter() {
        let _ = write!(out, "{},{} ", Px(point.x), Px(point.y + 17.0));
    }
    out.push_str("\"/><g class=\"pts\">");
    // A point shows its bar's tooltip (through `data-ref`), so that the text is on the page once.
    for point in points.iter() {
        let _ = write!(
            out,
            "<g data-ref=\"s{number}-{id}\"><circle cx=\"{x}\" cy=\"{}\" r=\"4\"/><text x=\"{x}\" y=\"{}\">{}</text></g>",
            Px(point.y + 17.0),
            Px(point.y + 8.0),
            point.step.number,
            id = point.op_id,
            x = Px(point.x),
        );
    }
    out.push_str("</g>");
}
