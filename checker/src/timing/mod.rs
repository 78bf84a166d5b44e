//! Timing from the same history: latency, throughput, recovery time per fault, and cache
//! invalidation latency.
//!
//! # Definitions
//!
//! These are also in [`TimingReport::definitions`], word for word, so a report carries them.
//!
//! - **Latency** of an operation: completion time − invocation time, for operations that
//!   completed (`ok`, `fail` or `info`; a pending one has none). Grouped per `f` and outcome in
//!   an HDR histogram of nanoseconds with 3 significant digits, reported in ms.
//! - **Throughput**: completions per 1 s bucket of completion time (`floor(time / 1 s)`), by
//!   outcome. Buckets run from second 0 to the last completion, empty ones included.
//! - **Disruption**: an `info` or `fail`-with-an-error operation, observed at its completion
//!   (when the client learned that it failed or that its outcome is unknown), or an operation
//!   still pending at the end, observed at its invocation. A `fail` without an error (a cas that
//!   found another value) is the system answering, not failing, and is no disruption.
//! - **Fault interval**: from a nemesis event that starts a fault to the event that heals it
//!   (see [`faults`] for the pairs); unhealed faults run to the end of the history.
//! - **Window** of a fault: from its start until the start of the first fault that begins
//!   after it is healed (after it started, for a fault that is never healed, such as an
//!   add-node), or the end of the history. For a healed fault in a timed history the window
//!   closes earlier once the system has *settled*: at the first disruption observed at least
//!   [`faults::SETTLE_NS`] (1 s) after the heal, or after the last disruption that followed
//!   the heal, when at least one `ok` operation was served in that quiet span. The fault's
//!   *affected operations* are the disruptions in its window, so failures that outlast the heal
//!   still count, and overlapping faults share them; disruptions after the system settled are
//!   not charged to the fault (they are counted as its `later_disruptions`), so a hiccup many
//!   seconds after a healed fault does not become that fault's recovery time.
//! - **RTO** (recovery time objective, as measured): from the fault's start to the completion
//!   of the first `ok` operation invoked after the invocation of the last-invoked disruption in
//!   the fault's window: the moment a client was served again by a request that the outage did
//!   not already doom. 0 when the window has no disruption; none (not recovered) when no `ok`
//!   operation was invoked after it.
//! - **Invalidation latency** (see [`invalidation`]): per acknowledged write and other node,
//!   the time from the write's completion until reads of that key through that node stop
//!   returning older values.
//!
//! Order is event (`index`) order, which is real-time order; times (ns) only measure. A
//! history without times gets no latencies, throughput, RTO or invalidation latency, and the
//! report's `note` says so.

pub mod faults;
pub mod invalidation;
mod quantiles;

pub use faults::FaultRecovery;
pub use invalidation::{InvalidationReport, WriteInvalidation};
pub use quantiles::{ms, Quantiles};

use crate::ops::{Operations, Outcome};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// At most this many throughput buckets are dense (about 28 hours); past it, only non-empty
/// buckets are listed.
pub const MAX_DENSE_BUCKETS: u64 = 100_000;

/// What the timing analyses measure against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeBasis {
    /// Every operation has times (ns); latencies are measured.
    Nanoseconds,
    /// Some operation has no time: ordering uses event indices and latencies are unavailable.
    EventIndex,
}

/// Everything the timing analyses say about one history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimingReport {
    /// Whether the history has times.
    pub time_basis: TimeBasis,
    /// Why parts are missing, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Latency per `f` and outcome, ordered by `f` then outcome.
    pub latency: Vec<LatencyRow>,
    /// Completions per second, by outcome.
    pub throughput: Vec<ThroughputBucket>,
    /// One entry per fault interval, in start order, with its recovery time.
    pub faults: Vec<FaultRecovery>,
    /// Heal events that matched no open fault.
    pub unmatched_heals: usize,
    /// Invalidation latency, when operations name the node that served them on two or more
    /// nodes.
    pub invalidation: Option<InvalidationReport>,
    /// The definitions used, in words.
    pub definitions: BTreeMap<String, String>,
}

/// Latency of the operations with one `f` and one outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyRow {
    /// The function.
    pub f: String,
    /// `ok`, `fail` or `info`.
    pub outcome: Outcome,
    /// Operations measured.
    pub count: u64,
    /// Median latency, ms.
    pub latency_ms_p50: f64,
    /// 90th percentile, ms.
    pub latency_ms_p90: f64,
    /// 99th percentile, ms.
    pub latency_ms_p99: f64,
    /// The largest, ms.
    pub latency_ms_max: f64,
}

/// Completions in one second of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThroughputBucket {
    /// Seconds since the run started: completions at `[second, second + 1)` s.
    pub second: u64,
    /// `ok` completions.
    pub ok: u64,
    /// `fail` completions.
    pub fail: u64,
    /// `info` completions.
    pub info: u64,
}

/// Runs every timing analysis on `history`. Never fails: what the history lacks is left out
/// and named in the report's `note`.
pub fn analyze(history: &Operations) -> TimingReport {
    let timed = history.ops.iter().all(|op| {
        op.invoke_time.is_some() && (op.complete_index.is_none() || op.complete_time.is_some())
    }) && history.nemesis.iter().all(|event| event.time.is_some());
    let (time_basis, note) = if timed {
        (TimeBasis::Nanoseconds, None)
    } else {
        (
            TimeBasis::EventIndex,
            Some(
                "some events have no time: faults are paired by event index, and latency, \
                 throughput, RTO and invalidation latency are not available"
                    .to_string(),
            ),
        )
    };
    let (faults, unmatched_heals) = faults::recoveries(history);
    TimingReport {
        time_basis,
        note,
        latency: latency_rows(history),
        throughput: throughput(history),
        faults,
        unmatched_heals,
        invalidation: invalidation::analyze(history),
        definitions: definitions(),
    }
}

fn outcome_rank(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Info => 2,
        Outcome::Pending => 3,
    }
}

/// Latency rows per (f, outcome), from completed operations with both times.
pub fn latency_rows(history: &Operations) -> Vec<LatencyRow> {
    let mut histograms: BTreeMap<(&str, u8), (Outcome, Histogram<u64>)> = BTreeMap::new();
    for op in &history.ops {
        let (Some(invoked), Some(completed)) = (op.invoke_time, op.complete_time) else {
            continue;
        };
        let slot = histograms
            .entry((op.f.as_str(), outcome_rank(op.outcome)))
            .or_insert_with(|| {
                // 3 significant digits, auto-resizing: creation cannot fail.
                let histogram = Histogram::new(3).expect("3 significant digits is valid");
                (op.outcome, histogram)
            });
        let latency_ns = completed.saturating_sub(invoked);
        // `record` grows the histogram as needed; only a value beyond what any histogram can
        // track fails, and that one is clamped to the largest trackable value.
        if slot.1.record(latency_ns).is_err() {
            slot.1.saturating_record(latency_ns);
        }
    }
    histograms
        .into_iter()
        .map(|((f, _), (outcome, histogram))| LatencyRow {
            f: f.to_string(),
            outcome,
            count: histogram.len(),
            latency_ms_p50: ms(histogram.value_at_quantile(0.5)),
            latency_ms_p90: ms(histogram.value_at_quantile(0.9)),
            latency_ms_p99: ms(histogram.value_at_quantile(0.99)),
            latency_ms_max: ms(histogram.max()),
        })
        .collect()
}

/// Completions per second by outcome; dense up to [`MAX_DENSE_BUCKETS`].
pub fn throughput(history: &Operations) -> Vec<ThroughputBucket> {
    let mut buckets: BTreeMap<u64, ThroughputBucket> = BTreeMap::new();
    for op in &history.ops {
        let Some(completed) = op.complete_time else {
            continue;
        };
        let second = completed / 1_000_000_000;
        let bucket = buckets.entry(second).or_insert(ThroughputBucket {
            second,
            ..ThroughputBucket::default()
        });
        match op.outcome {
            Outcome::Ok => bucket.ok += 1,
            Outcome::Fail => bucket.fail += 1,
            Outcome::Info | Outcome::Pending => bucket.info += 1,
        }
    }
    let last = buckets.keys().next_back().copied();
    match last {
        Some(last) if last < MAX_DENSE_BUCKETS => (0..=last)
            .map(|second| {
                buckets.get(&second).copied().unwrap_or(ThroughputBucket {
                    second,
                    ..ThroughputBucket::default()
                })
            })
            .collect(),
        _ => buckets.into_values().collect(),
    }
}

/// The definitions in words, as the report carries them.
pub fn definitions() -> BTreeMap<String, String> {
    let pairs = [
        ("latency", "completion time minus invocation time of each completed operation, per f and outcome, from an HDR histogram of nanoseconds with 3 significant digits, in ms"),
        ("throughput", "completions per 1 s bucket of completion time, by outcome, from second 0 to the last completion"),
        ("disruption", "an info or fail-with-an-error operation, observed at its completion, or an operation pending at the end, observed at its invocation; a fail without an error (a cas that found another value) is no disruption"),
        ("fault interval", "from the nemesis event that starts a fault to the one that heals it (start-X/stop-X, start/stop, kill/restart or recover or start, pause/resume, isolate or partition/heal); unhealed faults run to the end"),
        ("window", "from a fault's start until the start of the first fault that begins after it is healed (after it started, for a fault never healed), or the end of the history; for a healed fault in a timed history it closes earlier, at the first disruption observed after the system settled: 1 s after the heal (or after the last disruption following it) with no disruption observed and at least one ok operation served; the disruptions in it are the fault's affected operations, and those cut off are counted as later_disruptions"),
        ("rto", "from the fault's start to the completion of the first ok operation invoked after the invocation of the last-invoked disruption observed in its window; 0 if its window has no disruption; none if no ok operation follows"),
        ("invalidation latency", "for each ok write of key k through node n and each other node m with a read of k beginning after the write completed: from the write's completion to the invocation of the first read of k on m after the last such read that returned an older value; 0 if none did; pairs whose last read is stale have none (unconverged)"),
        ("stale read", "an ok read of k on node m returning a value older, in completion order of writes, than an ok write of k through another node that completed before the read began"),
        ("order", "event index order, which is real-time order; times measure only"),
    ];
    pairs
        .into_iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect()
}
