//! One partition's section: its heading, what was left out of it, its lanes, and the list of
//! its linearization steps with the model state after each.

use super::lanes;
use super::nemesis::{FaultInterval, Marker};
use super::page::key_words;
use super::select::{self, Focus, Group};
use super::text::{excerpt, group as thousands, push_escaped};
use super::{Axis, MAX_TEXT_CHARS};
use crate::linear::Witness;
use crate::ops::{Operation, Operations};
use crate::verdict::Verdict;
use std::collections::HashMap;
use std::fmt::Write;

/// Most steps listed under an invalid or unknown partition; every drawn step also has its tooltip.
const MAX_LISTED_STEPS: usize = 200;
/// Most steps listed under a valid partition, whose steps matter less.
const MAX_LISTED_STEPS_VALID: usize = 50;

/// What every section shares, and what is particular to this one.
#[derive(Debug)]
pub(super) struct Context<'a> {
    /// The section's position on the page; element ids derive from it.
    pub number: usize,
    /// What the horizontal axis measures.
    pub axis: Axis,
    /// Nemesis operations, over the whole history.
    pub markers: &'a [Marker],
    /// Fault intervals, over the whole history.
    pub intervals: &'a [FaultInterval],
    /// The witness, when it lies in this partition.
    pub witness: Option<&'a Witness>,
}

/// One linearization step, placed on the axis.
#[derive(Clone, Debug)]
pub(super) struct Placed<'a> {
    /// Its position in the linearization, from 1.
    pub number: usize,
    /// Its linearization point on the axis: the earliest point inside the operation's
    /// interval that is not before the previous step's point.
    pub at: u64,
    /// The operation, in words.
    pub description: &'a str,
    /// The model state after it.
    pub state: &'a str,
}

/// The partition's linearization (or longest linearizable prefix), by operation id.
pub(super) fn place_steps<'a>(
    group: &Group<'a>,
    operations: &Operations,
    axis: Axis,
) -> HashMap<usize, Placed<'a>> {
    let Some(report) = group.report else {
        return HashMap::new();
    };
    let mut placed = HashMap::with_capacity(report.steps.len());
    let mut previous = 0;
    for (at, step) in report.steps.iter().enumerate() {
        let Some(op) = operations.ops.get(step.op) else {
            continue;
        };
        let mut point = axis.start(op).max(previous);
        if let Some(end) = axis.end(op) {
            point = point.min(end);
        }
        previous = point;
        placed.insert(
            step.op,
            Placed {
                number: at + 1,
                at: point,
                description: &step.description,
                state: &step.state,
            },
        );
    }
    placed
}

/// Renders the section with at most `cap` operations; returns it and how many it drew.
pub(super) fn render(
    context: &Context<'_>,
    group: &Group<'_>,
    placed: &HashMap<usize, Placed<'_>>,
    cap: usize,
) -> (String, usize) {
    let focus = match (context.witness, group.report) {
        (Some(witness), _) => Focus::Failure(witness.op),
        (None, Some(report)) if group.verdict != Verdict::Valid && !report.steps.is_empty() => {
            Focus::Stop(report.steps[report.steps.len() - 1].op)
        }
        _ => Focus::Start,
    };
    let window = select::window(&group.ops, cap, focus);
    let mut out = String::with_capacity(window.ops.len() * 320 + 1_024);
    heading(&mut out, context, group);
    if window.ops.len() < group.ops.len() {
        let place = match focus {
            Focus::Failure(_) => "around the failing operation",
            Focus::Stop(_) => "around where the search stopped",
            Focus::Start => "from the start",
        };
        let _ = write!(
            out,
            "<p class=\"cut\">Showing {} of {} operations of ",
            thousands(window.ops.len() as u64),
            thousands(group.ops.len() as u64)
        );
        push_escaped(&mut out, &key_words(&group.key));
        let _ = write!(out, " {place}");
        if window.n_running > 0 {
            let _ = write!(
                out,
                ", with {} earlier operations that were still running when it was invoked",
                thousands(window.n_running as u64)
            );
        }
        out.push_str(".</p>\n");
    }
    if window.ops.is_empty() {
        out.push_str("<p class=\"cut\">No operations of this partition are in the history.</p>\n");
    } else {
        lanes::draw(&mut out, context, &window, placed);
    }
    step_list(&mut out, context, group, &window.ops, placed);
    out.push_str("</section>\n");
    (out, window.ops.len())
}

fn heading(out: &mut String, context: &Context<'_>, group: &Group<'_>) {
    let verdict = group.verdict;
    let _ = write!(
        out,
        "<section class=\"part\" id=\"part-{}\"><h2><span class=\"badge {verdict}\">{verdict}</span> ",
        context.number
    );
    push_escaped(out, &key_words(&group.key));
    let _ = write!(
        out,
        " <small>{} operations",
        thousands(group.ops.len() as u64)
    );
    if let Some(report) = group.report {
        let _ = write!(
            out,
            " · {} checked · {} linearized · {} states memoised · {:.1} ms",
            thousands(report.n_ops as u64),
            thousands(report.steps.len() as u64),
            thousands(report.states_memoised),
            report.elapsed_ms
        );
    }
    out.push_str("</small></h2>\n");
    if let Some(reason) = group.report.and_then(|report| report.unknown_reason) {
        let _ = writeln!(
            out,
            "<p class=\"why\">The search stopped without a verdict: {}.</p>",
            reason.describe()
        );
    }
    let no_steps = group.report.is_none_or(|report| report.steps.is_empty());
    if no_steps && !group.ops.is_empty() && verdict == Verdict::Valid {
        out.push_str("<p class=\"cut\">The report does not hold this partition's linearization, so only its operations are drawn.</p>\n");
    }
}

/// The steps among the drawn operations, in order, with the state after each; for the
/// witness's partition, the failing operation last.
fn step_list(
    out: &mut String,
    context: &Context<'_>,
    group: &Group<'_>,
    drawn: &[&Operation],
    placed: &HashMap<usize, Placed<'_>>,
) {
    let mut steps: Vec<(usize, &Placed<'_>)> = drawn
        .iter()
        .filter_map(|op| placed.get(&op.id).map(|step| (op.id, step)))
        .collect();
    if steps.is_empty() && context.witness.is_none() {
        return;
    }
    steps.sort_by_key(|(_, step)| step.number);
    let n_steps = steps.len();
    let shown = if group.verdict == Verdict::Valid {
        &steps[..n_steps.min(MAX_LISTED_STEPS_VALID)]
    } else {
        &steps[n_steps.saturating_sub(MAX_LISTED_STEPS)..]
    };
    let open = if group.verdict == Verdict::Valid {
        ""
    } else {
        " open"
    };
    let _ = write!(
        out,
        "<details{open}><summary>Linearization: {} steps drawn",
        thousands(n_steps as u64)
    );
    if shown.len() < n_steps {
        let which = if group.verdict == Verdict::Valid {
            "first"
        } else {
            "last"
        };
        let _ = write!(
            out,
            ", the {which} {} listed (hover the points for the others)",
            shown.len()
        );
    }
    out.push_str("</summary>");
    let start = shown.first().map_or(1, |(_, step)| step.number);
    let _ = write!(out, "<ol class=\"steps\" start=\"{start}\">");
    for (op_id, step) in shown {
        let _ = write!(
            out,
            "<li value=\"{}\" data-ref=\"s{}-{op_id}\">",
            step.number, context.number
        );
        push_escaped(out, &excerpt(step.description, MAX_TEXT_CHARS));
        out.push_str(" <span class=\"st\">⇒ ");
        push_escaped(out, &excerpt(step.state, MAX_TEXT_CHARS));
        out.push_str("</span></li>");
    }
    if let Some(witness) = context.witness {
        out.push_str("<li class=\"fail\" data-ref=\"witness-op\">✗ cannot linearize ");
        push_escaped(out, &excerpt(&witness.description, MAX_TEXT_CHARS));
        out.push_str(" in state ");
        push_escaped(out, &excerpt(&witness.state, MAX_TEXT_CHARS));
        out.push_str("</li>");
    }
    out.push_str("</ol></details>\n");
}
