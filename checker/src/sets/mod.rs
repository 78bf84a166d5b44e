//! Lost writes: Jepsen's `set-full` checker, per key, with its duplicate count fixed.
//!
//! # Operations
//!
//! - `add` (or `insert`, as SQL workloads record it) of one element, carried in `value`.
//!   An add with a `null` or absent value is a [`ShapeError`].
//! - `read` whose `ok` completion returns the whole set as a list. Any other result of an `ok`
//!   read is a [`ShapeError`]. Reads that `fail`, `info` or never complete are ignored.
//! - Each `key` is an independent set; operations without a key form one set.
//!   Other functions are ignored, so a history may mix in other operations.
//!
//! # Definitions
//!
//! Order is real-time order, which is event (`index`) order: a read *began after* an event
//! when its invoke event comes later in the history. Times (`time`, ns) are used only to
//! measure latencies, so a history without times is checked exactly the same way, and only
//! its latencies are missing (the report's `time_basis` and `note` say so).
//!
//! - **Element**: a (key, value) with at least one add whose outcome is not `fail`.
//! - **Known**: an element becomes *known* at the earlier of the completion of an `ok` add of
//!   it and the completion of the first read that returned it. An add of unknown outcome
//!   (`info` or pending) makes nothing known by itself; the element becomes known only when a
//!   read returns it.
//! - **Evidence**: a read *counts* for an element if it returned the element (a read that
//!   observes an element proves it exists, even if it began before the add completed), or if
//!   it began after the element was known and did not return it. A read that began before the
//!   element was known and missed it may have taken effect before the add, so it says nothing.
//! - **last present** / **last absent**: the latest-invoked counting read that did / did not
//!   return the element.
//! - **stable**: there is a last present read and it began after the last absent read (or
//!   there is no absent one): from some read on, every counting read returned it.
//! - **stale**: a stable element that some read beginning after it was known missed.
//!   Its *stable latency* is the time from known to the invocation of the first read after
//!   the last absent one (the first read from which it is present in every later read). A
//!   stable element that no counting read missed has stable latency 0, as in Jepsen.
//! - **lost**: there is a last absent read and it began after the last present read (or the
//!   element was never read): it was acknowledged (or seen), then missing from every later
//!   read, including the final one. Its *lost latency* is the time from known to the
//!   invocation of the last read that returned it, or 0 when no read returned it.
//! - **never-read**: no read counts: no read began after it was known, and none returned it.
//!   This includes elements never known (an `info` add that no read returned).
//! - **duplicated**: an element that one read returned more than once. Jepsen's set-full
//!   keeps only multiplicities `< 1`, so it always reports none; this checker counts them.
//! - **unexpected**: a value that a read returned although no add of it could have taken
//!   effect: it was never added, or every add of it failed.
//!
//! Latencies differ from Jepsen's in one way: Jepsen approximates the stable time by the
//! invocation of the last absent read plus 1 ns; this checker takes the invocation of the read
//! after it, as defined above.
//!
//! # Verdict
//!
//! `invalid` if any element is lost, duplicated or unexpected, or (with
//! [`SetOptions::linearizable`]) stale; else `unknown` if no element is stable (nothing was
//! read after it was known); else `valid`.
//!
//! # Cost
//!
//! One pass over the operations in invocation order, O(1) expected work per element of each
//! read and O(elements) memory beyond the history: for each element the checker keeps its last
//! present read, the start of the gap before it, and its last absent read, found as the read
//! before the gap when that read began after the element was known. It never visits an
//! element that a read did not return, so it costs the size of the history, not
//! reads × elements. [`SetChecker`] takes the operations one at a time, so a caller can check
//! a history that it never holds in memory.

mod checker;

pub use checker::SetChecker;

use crate::models::ShapeError;
use crate::ops::{Operation, Operations, Outcome};
use crate::timing::{Quantiles, TimeBasis};
use crate::verdict::Verdict;
use serde::Serialize;
use std::time::Instant;

/// At most this many elements are listed per category; the counts are always exact.
pub const MAX_LISTED: usize = 1000;

/// How strictly to judge a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SetOptions {
    /// Stale elements make the verdict `invalid`, as with set-full's `:linearizable? true`.
    pub linearizable: bool,
}

/// What the lost-writes checker found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SetReport {
    /// `invalid` on any lost, duplicated or unexpected element (or stale, when linearizable).
    pub verdict: Verdict,
    /// Elements: distinct (key, value) pairs with an add that did not fail.
    pub n_elements: usize,
    /// `ok` reads.
    pub n_reads: usize,
    /// Keys (sets) with at least one add or read.
    pub n_keys: usize,
    /// Lost elements, in key and add order (at most [`MAX_LISTED`]).
    pub lost: Vec<ElementReport>,
    /// Stale elements, worst stable latency first (at most [`MAX_LISTED`]).
    pub stale: Vec<ElementReport>,
    /// Never-read elements, in key and add order (at most [`MAX_LISTED`]).
    pub never_read: Vec<ElementReport>,
    /// Elements some read returned more than once (at most [`MAX_LISTED`]).
    pub duplicated: Vec<DuplicateReport>,
    /// Values read that no add could have produced (at most [`MAX_LISTED`]).
    pub unexpected: Vec<UnexpectedReport>,
    /// Stable elements, stale ones included.
    pub stable_count: usize,
    /// Lost elements.
    pub lost_count: usize,
    /// Stale elements (a subset of the stable ones).
    pub stale_count: usize,
    /// Never-read elements.
    pub never_read_count: usize,
    /// Duplicated elements.
    pub duplicated_count: usize,
    /// Unexpected values.
    pub unexpected_count: usize,
    /// Stable latencies in ms, at 0, 0.5, 0.95, 0.99 and 1; 0 means no read missed it.
    pub stable_latency_ms: Quantiles,
    /// Lost latencies in ms, at 0, 0.5, 0.95, 0.99 and 1.
    pub lost_latency_ms: Quantiles,
    /// Whether latencies are measured in nanoseconds or unavailable (no times).
    pub time_basis: TimeBasis,
    /// Why latencies are missing, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The definitions used, in words, for the report.
    pub definitions: std::collections::BTreeMap<String, String>,
    /// Wall time of the check.
    pub elapsed_ms: f64,
}

/// One element's classification and the reads that decided it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ElementReport {
    /// The key (set) it belongs to, as reports show keys; `None` for the unkeyed set.
    pub key: Option<String>,
    /// The element.
    pub element: serde_json::Value,
    /// The first add of it that did not fail (an id into [`Operations::ops`]).
    pub add_op: usize,
    /// The event index at which it became known; `None` if it never did.
    pub known_index: Option<u64>,
    /// The time (ns) at which it became known, when known and timed.
    pub known_time: Option<u64>,
    /// The operation that made it known: its `ok` add or the first read that returned it.
    pub known_op: Option<usize>,
    /// The latest-invoked read that returned it.
    pub last_present: Option<usize>,
    /// The latest-invoked read that began after it was known and missed it.
    pub last_absent: Option<usize>,
    /// Stable latency (stable and stale elements) or lost latency (lost ones), in ms.
    pub latency_ms: Option<f64>,
    /// The verdict on this element in words, naming the operations.
    pub explanation: String,
}

/// An element that one read returned more than once.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DuplicateReport {
    /// The key (set).
    pub key: Option<String>,
    /// The element.
    pub element: serde_json::Value,
    /// The most copies one read returned.
    pub max_multiplicity: usize,
    /// A read that returned that many.
    pub read_op: usize,
    /// How many reads returned it more than once.
    pub n_reads: usize,
    /// In words.
    pub explanation: String,
}

/// A value that a read returned although no add of it could have taken effect.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UnexpectedReport {
    /// The key (set).
    pub key: Option<String>,
    /// The value.
    pub element: serde_json::Value,
    /// The first read that returned it.
    pub read_op: usize,
    /// True when it was added, but every add failed; false when it was never added.
    pub add_failed: bool,
    /// In words.
    pub explanation: String,
}

/// True for the functions that add an element.
pub fn is_add(f: &str) -> bool {
    matches!(f, "add" | "insert")
}

/// True for the function that reads a whole set.
pub fn is_read(f: &str) -> bool {
    f == "read"
}

/// True when the history has adds (or inserts) and at least one `ok` read returning a list.
pub fn applies(history: &Operations) -> bool {
    let has_add = history.ops.iter().any(|op| is_add(&op.f));
    let has_list_read = history.ops.iter().any(|op| {
        is_read(&op.f)
            && op.outcome == Outcome::Ok
            && op.output.as_ref().is_some_and(|output| output.is_array())
    });
    has_add && has_list_read
}

/// Checks every set in `history` for lost, stale, never-read, duplicated and unexpected
/// elements. Malformed adds and reads are a [`ShapeError`] naming the line and field.
pub fn check(history: &Operations, options: &SetOptions) -> Result<SetReport, ShapeError> {
    let started = Instant::now();
    let mut relevant: Vec<&Operation> = history
        .ops
        .iter()
        .filter(|op| is_add(&op.f) || is_read(&op.f))
        .collect();
    // `ops::pair` yields invocation order already; a stable sort keeps it and fixes hand-built
    // histories.
    relevant.sort_by_key(|op| op.invoke_index);
    let mut checker = SetChecker::new(*options);
    for op in relevant {
        checker.observe(op)?;
    }
    let mut report = checker.finish();
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// The definitions in words, as the report carries them.
pub fn definitions() -> std::collections::BTreeMap<String, String> {
    let pairs = [
        ("element", "a (key, value) with at least one add (or insert) whose outcome is not fail"),
        ("known", "an element is known from the earlier of the completion of an ok add of it and the completion of the first read that returned it; an info add alone makes nothing known"),
        ("counting read", "a read counts for an element if it returned it, or if it began after the element was known and missed it"),
        ("stable", "the latest counting read that returned the element began after the latest counting read that missed it (or none missed it)"),
        ("stale", "a stable element that some read beginning after it was known missed"),
        ("lost", "the latest counting read that missed the element began after the latest read that returned it (or none returned it)"),
        ("never-read", "no read counts for the element: none began after it was known, and none returned it"),
        ("duplicated", "one read returned the element more than once"),
        ("unexpected", "a read returned a value that was never added, or whose every add failed"),
        ("stable latency", "from known to the invocation of the first read after the last one that missed it; 0 if no counting read missed it"),
        ("lost latency", "from known to the invocation of the last read that returned it; 0 if none did"),
        ("order", "a read began after an event when its invoke event comes later in the history (event index order, which is real-time order); times are used only for latencies"),
    ];
    pairs
        .into_iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect()
}
