//! A dependency cycle drawn as a graph: transactions as nodes on a circle, dependencies as
//! curved, labelled arrows coloured by kind, each with its explanation as a tooltip.
//!
//! Drawn by hand: a cycle is a ring, so a circle layout draws every cycle without crossings,
//! and no layout crate is needed (nor worth a dependency) for it. Arrows bend to one side of
//! the chord between their ends, so the two arrows of a two-transaction cycle stay apart.

use super::MAX_TEXT_CHARS;
use crate::elle::{CycleStep, EdgeKind};
use crate::ops::Operations;
use crate::view::text::{excerpt, push_escaped, Px};
use std::f64::consts::PI;
use std::fmt::Write;

/// A node's radius, and the margin around the circle for labels.
const NODE_RADIUS: f64 = 20.0;
const MARGIN: f64 = 56.0;
/// Room along the circle for one node and its arrows.
const NODE_SPACING: f64 = 110.0;

/// The class (and colour) of an edge kind.
pub(super) fn kind_class(kind: EdgeKind) -> &'static str {
    kind.name()
}

/// Draws `steps` as one SVG; `None` when the cycle is empty or longer than `max_nodes`.
pub(super) fn render(
    steps: &[CycleStep],
    operations: Option<&Operations>,
    max_nodes: usize,
) -> Option<String> {
    let mut nodes: Vec<usize> = Vec::new();
    for step in steps {
        for id in [step.from, step.to] {
            if !nodes.contains(&id) {
                nodes.push(id);
            }
        }
    }
    if nodes.is_empty() || nodes.len() > max_nodes {
        return None;
    }
    let n = nodes.len();
    let radius = (NODE_SPACING * n as f64 / (2.0 * PI)).max(70.0);
    let size = 2.0 * (radius + MARGIN);
    let center = size / 2.0;
    let place = |id: usize| -> (f64, f64) {
        let at = nodes.iter().position(|&node| node == id).unwrap_or(0);
        let angle = -PI / 2.0 + 2.0 * PI * at as f64 / n as f64;
        (center + radius * angle.cos(), center + radius * angle.sin())
    };
    let mut svg = String::with_capacity(2_048);
    let _ = writeln!(
        svg,
        "<svg class=\"cycle\" width=\"{0}\" height=\"{0}\" viewBox=\"0 0 {0} {0}\" data-nodes=\"{n}\" data-edges=\"{1}\" role=\"img\" aria-label=\"dependency cycle\">",
        Px(size),
        steps.len()
    );
    for (number, step) in steps.iter().enumerate() {
        // Steps between the same two transactions in the same direction bend further apart.
        let repeats = steps[..number]
            .iter()
            .filter(|earlier| earlier.from == step.from && earlier.to == step.to)
            .count();
        edge(
            &mut svg,
            step,
            place(step.from),
            place(step.to),
            repeats,
            center,
        );
    }
    for &id in &nodes {
        let (x, y) = place(id);
        svg.push_str("<g class=\"txn\"><title>");
        push_escaped(&mut svg, &describe(id, operations));
        let _ = writeln!(
            svg,
            "</title><circle class=\"txn\" cx=\"{}\" cy=\"{}\" r=\"{NODE_RADIUS}\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">T{id}</text></g>",
            Px(x),
            Px(y),
            Px(x),
            Px(y + 4.0)
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// One arrow from `a` to `b`, bent to its left, with its kind as label and `why` as tooltip.
fn edge(
    svg: &mut String,
    step: &CycleStep,
    a: (f64, f64),
    b: (f64, f64),
    repeats: usize,
    center: f64,
) {
    let class = kind_class(step.kind);
    svg.push_str("<g class=\"edge-g\"><title>");
    push_escaped(svg, &excerpt(&step.why, MAX_TEXT_CHARS * 2));
    svg.push_str("</title>");
    let (path, label) = if step.from == step.to {
        // A transaction that depends on itself: a loop outside the circle.
        let (dx, dy) = (a.0 - center, a.1 - center);
        let length = dx.hypot(dy).max(1.0);
        let (ux, uy) = (dx / length, dy / length);
        let far = (a.0 + ux * 70.0, a.1 + uy * 70.0);
        let side = (-uy * 28.0, ux * 28.0);
        let start = (
            a.0 + ux * NODE_RADIUS + side.0 * 0.5,
            a.1 + uy * NODE_RADIUS + side.1 * 0.5,
        );
        let end = (
            a.0 + ux * (NODE_RADIUS + 3.0) - side.0 * 0.5,
            a.1 + uy * (NODE_RADIUS + 3.0) - side.1 * 0.5,
        );
        let path = format!(
            "M{} {}C{} {} {} {} {} {}",
            Px(start.0),
            Px(start.1),
            Px(far.0 + side.0),
            Px(far.1 + side.1),
            Px(far.0 - side.0),
            Px(far.1 - side.1),
            Px(end.0),
            Px(end.1)
        );
        (path, (far.0 + ux * 8.0, far.1 + uy * 8.0))
    } else {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let length = dx.hypot(dy).max(1.0);
        let (nx, ny) = (dy / length, -dx / length);
        let bend = length * 0.22 * (1.0 + 0.7 * repeats as f64);
        let control = ((a.0 + b.0) / 2.0 + nx * bend, (a.1 + b.1) / 2.0 + ny * bend);
        let toward = |from: (f64, f64), gap: f64| {
            let (cx, cy) = (control.0 - from.0, control.1 - from.1);
            let distance = cx.hypot(cy).max(1.0);
            (from.0 + cx / distance * gap, from.1 + cy / distance * gap)
        };
        let start = toward(a, NODE_RADIUS);
        let end = toward(b, NODE_RADIUS + 3.0);
        let path = format!(
            "M{} {}Q{} {} {} {}",
            Px(start.0),
            Px(start.1),
            Px(control.0),
            Px(control.1),
            Px(end.0),
            Px(end.1)
        );
        let middle = (
            0.25 * start.0 + 0.5 * control.0 + 0.25 * end.0,
            0.25 * start.1 + 0.5 * control.1 + 0.25 * end.1,
        );
        (path, middle)
    };
    let _ = writeln!(
        svg,
        "<path class=\"edge {class}\" d=\"{path}\" marker-end=\"url(#arrow-{class})\"/><text class=\"elabel {class}\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text></g>",
        Px(label.0),
        Px(label.1 + 4.0),
        step.kind.name()
    );
}

/// A transaction in words for its tooltip: its process, its micro-operations and outcome.
fn describe(id: usize, operations: Option<&Operations>) -> String {
    let Some(op) = operations.and_then(|operations| operations.ops.get(id)) else {
        return format!("T{id}");
    };
    let value = op.output.as_ref().unwrap_or(&op.input);
    let text = serde_json::to_string(value).unwrap_or_default();
    let outcome = format!("{:?}", op.outcome).to_lowercase();
    excerpt(
        &format!("T{id}: process {} {} {text} ({outcome})", op.process, op.f),
        MAX_TEXT_CHARS,
    )
}
