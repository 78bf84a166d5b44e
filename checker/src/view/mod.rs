//! The linearization view: one self-contained HTML page (inline CSS, JS and SVG) for a report.
//!
//! In the manner of Porcupine's visualizer: per partition, one lane per process, each operation
//! a bar from its invocation to its completion, the linearization drawn as numbered points,
//! the operation that cannot be linearized in red, and the nemesis's faults on the time axis.
//! Unlike it, the page is bounded: Porcupine users reported 1.5 GB pages for 3,000 operations,
//! so this view draws a window of each partition, a bounded number of partitions and
//! operations, and a bounded number of bytes, and says on the page what it left out.
//!
//! The module is pure: [`render_html`] returns a `String`, and the CLI writes it.

mod lanes;
mod nemesis;
mod page;
mod section;
mod select;
pub(crate) mod text;

use crate::check::Report;
use crate::ops::{NemesisEvent, Operation, Operations};

/// Most operations drawn for one partition.
const MAX_OPS_PER_PARTITION: usize = 1_000;
/// Fewest operations a valid partition is given when many partitions share the page.
const MIN_OPS_PER_PARTITION: usize = 100;
/// Most operations drawn on the whole page.
const MAX_OPS_PER_PAGE: usize = 20_000;
/// Most partitions drawn; the others are listed in a table, up to the same number again.
const MAX_PARTITIONS_DRAWN: usize = 200;
/// The page stops drawing partitions once it would grow past this many bytes.
const MAX_PAGE_BYTES: usize = 9_000_000;
/// Most characters of one operation description or model state shown.
const MAX_TEXT_CHARS: usize = 200;

/// Renders one self-contained HTML page (inline CSS/JS/SVG, no network) for a report.
///
/// It never panics on a report: a report without operations (the check did not keep them)
/// gets the header and the verdicts of the partitions, without lanes.
pub fn render_html(report: &Report) -> String {
    page::render(report)
}

/// The view's style sheet and script, for a page that embeds its partitions with [`embed`].
pub(crate) use page::{CSS, SCRIPT};

/// Appends the view's body to a page that has its own header: the witness in words, the
/// legend, and the partition sections (or, without kept operations, their verdicts).
///
/// The page's byte budget counts what `out` already holds and the `bytes_after` that the
/// caller will append after this, so the whole page stays bounded. The caller adds [`CSS`]
/// in its head and [`SCRIPT`] (with a `<div id="tip">`) at its end.
pub(crate) fn embed(out: &mut String, report: &Report, bytes_after: usize) {
    page::embed(out, report, bytes_after);
}

/// What the horizontal axis measures: times (ns) when the history has them for every event
/// drawn, otherwise event indices, which order events just as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Axis {
    /// Nanoseconds since the run started.
    Time,
    /// Positions of events in the history.
    Index,
}

impl Axis {
    /// Times when every operation and nemesis event has them, event indices otherwise.
    pub(crate) fn for_operations(operations: &Operations) -> Axis {
        let ops_timed = operations.ops.iter().all(|op| {
            op.invoke_time.is_some() && (op.complete_index.is_none() || op.complete_time.is_some())
        });
        let nemesis_timed = operations.nemesis.iter().all(|event| event.time.is_some());
        if ops_timed && nemesis_timed && !operations.ops.is_empty() {
            Axis::Time
        } else {
            Axis::Index
        }
    }

    /// Where `op` was invoked.
    pub(crate) fn start(self, op: &Operation) -> u64 {
        match self {
            Axis::Time => op.invoke_time.unwrap_or(0),
            Axis::Index => op.invoke_index,
        }
    }

    /// Where `op` completed, or `None` when its outcome is unknown: an `info` or pending
    /// operation may take effect at any later time, so its bar runs to the end of the axis.
    pub(crate) fn end(self, op: &Operation) -> Option<u64> {
        if op.outcome.is_unknown() {
            return None;
        }
        let end = match self {
            Axis::Time => op.complete_time,
            Axis::Index => op.complete_index,
        };
        Some(end.unwrap_or(0).max(self.start(op)))
    }

    /// Where a nemesis event happened.
    pub(crate) fn nemesis(self, event: &NemesisEvent) -> Option<u64> {
        match self {
            Axis::Time => event.time,
            Axis::Index => Some(event.index),
        }
    }

    /// A position in words, for tooltips and tick labels: `12.5 ms` or `event 1,200`.
    pub(crate) fn show(self, position: u64) -> String {
        match self {
            Axis::Time => text::nanos(position),
            Axis::Index => format!("event {}", text::group(position)),
        }
    }
}
