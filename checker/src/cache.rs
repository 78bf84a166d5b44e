//! Cache property: once a write is acknowledged, every compute node stops serving older values
//! of its key within a bound (the seed's CACHE-001 waits 100 ms, then requires every node's
//! cache to be invalidated).
//!
//! # Operations
//!
//! Register writes and reads per `key` (`write`, `read`; `put`, `get` and `cas` are accepted as
//! [`crate::timing::invalidation`] accepts them), each `ok` one naming in `node` the compute
//! node that served it. An `ok` read or write without a node is a [`ShapeError`]: without it
//! the property cannot be judged, and skipping the operation could hide a stale read.
//!
//! # Definitions
//!
//! This checker is a verdict on top of [`crate::timing::invalidation`] and uses its
//! definitions unchanged (version order, pair, stale read, invalidation latency); it reuses
//! that analysis through [`crate::timing::invalidation::analyze_with`]. The **bound** `B` comes
//! from [`CacheOptions`]: given (`helios check --invalidation-bound`), else the header's
//! `invalidation_bound_ms`, else [`DEFAULT_BOUND_MS`]. For a pair (write `w`, other node `m`):
//!
//! - **stale for**: from `w`'s completion to the invocation of the last read on `m` that began
//!   after `w` completed and returned an older version. The node provably still served an
//!   older value this long after the acknowledgement: a lower bound on its invalidation
//!   latency. The invalidation latency itself (the invocation of the next read) is the upper
//!   bound.
//! - **late stale read**: a stale read that began at least `B` after the write it missed was
//!   acknowledged. Its pair is **late**: stale for at least `B`.
//! - **undecided**: a pair stale for less than `B` whose invalidation latency exceeds `B`, or
//!   that never converged: the node turned fresh (if ever) at a time the reads do not pin down,
//!   before or after the bound.
//!
//! # Verdict
//!
//! `invalid` when some pair is late, with the first late stale read (in invocation order) as
//! the witness: the read, the write it missed, the node, and how late it was. A pair that never
//! converged and whose last stale read was late is reported so. Else `unknown` when some pair is
//! undecided, when no pair could be judged (fewer than two nodes served the key, or no read
//! followed a write on another node), or when the history has no times. Else `valid`.
//!
//! Stale reads that began within the bound are counted but allowed here: the bound is the
//! property this checker judges. With `B = 0` every stale read is late, and so forbidden. For
//! cache histories the linearizability checker (register per key) runs too, and it forbids
//! every stale read whatever the bound.

use crate::history::Header;
use crate::models::{show, show_key, ShapeError};
use crate::ops::{Operation, Operations, Outcome};
use crate::timing::invalidation::{self, Pair};
use crate::timing::{ms, Quantiles};
use crate::verdict::Verdict;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The bound when neither the options nor the header give one: the seed's 100 ms.
pub const DEFAULT_BOUND_MS: f64 = 100.0;

/// At most this many late reads and undecided pairs are listed; counts are always exact.
pub const MAX_LISTED: usize = 100;

/// The invalidation bound and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CacheOptions {
    /// Every node must stop serving older values this long after a write is acknowledged.
    pub bound: Duration,
    /// Where the bound came from, in words.
    pub bound_source: String,
}

impl CacheOptions {
    /// The bound: `given` if any, else the header's `invalidation_bound_ms` (a non-negative
    /// number of ms), else [`DEFAULT_BOUND_MS`]. A header bound that is not such a number is a
    /// [`ShapeError`] at line 1.
    pub fn resolve(
        given: Option<Duration>,
        header: Option<&Header>,
    ) -> Result<CacheOptions, ShapeError> {
        if let Some(bound) = given {
            return Ok(CacheOptions {
                bound,
                bound_source: "given".to_string(),
            });
        }
        let from_header = header.and_then(|header| header.extra.get("invalidation_bound_ms"));
        let (bound_ms, bound_source) = match from_header {
            None | Some(Value::Null) => (DEFAULT_BOUND_MS, "the default, the seed's floor"),
            Some(value) => match value.as_f64() {
                Some(bound_ms) if bound_ms.is_finite() && bound_ms >= 0.0 => {
                    (bound_ms, "the history's header")
                }
                _ => {
                    return Err(ShapeError {
                        line: 1,
                        field: "invalidation_bound_ms",
                        message: format!("expected a non-negative number of ms, found {value}"),
                    })
                }
            },
        };
        Ok(CacheOptions {
            bound: Duration::from_secs_f64(bound_ms / 1e3),
            bound_source: bound_source.to_string(),
        })
    }
}

/// What the cache checker found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheReport {
    /// `invalid` when some pair is late; `unknown` when undecided or nothing was judged.
    pub verdict: Verdict,
    /// The bound, ms.
    pub invalidation_bound_ms: f64,
    /// Where the bound came from.
    pub bound_source: String,
    /// `ok` writes with at least one pair.
    pub writes: usize,
    /// (write, other node) pairs.
    pub pairs: usize,
    /// `ok` reads with a node and a known version.
    pub reads: usize,
    /// Stale reads, late or not (the timing definition).
    pub stale_reads: usize,
    /// Pairs in which some read returned an older value.
    pub stale_pairs: usize,
    /// Pairs stale for at least the bound: the violations.
    pub late_pairs: usize,
    /// Pairs whose last read still returned an older value.
    pub unconverged_pairs: usize,
    /// Pairs the reads cannot decide (see the module docs).
    pub undecided_pairs: usize,
    /// The longest a node provably kept serving an older value after a write, ms.
    pub stale_for_ms_max: Option<f64>,
    /// Invalidation latency over converged pairs, ms (the timing definition).
    pub latency_ms: Quantiles,
    /// The witness: the first late stale read, in invocation order.
    pub witness: Option<LateRead>,
    /// Late pairs, by the invocation of their first late read (at most [`MAX_LISTED`]).
    pub late: Vec<LateRead>,
    /// Undecided pairs, in write order (at most [`MAX_LISTED`]).
    pub undecided: Vec<UndecidedPair>,
    /// Why the verdict is `unknown`, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The definitions used, in words, for the report.
    pub definitions: BTreeMap<String, String>,
    /// Wall time of the check.
    pub elapsed_ms: f64,
}

/// A late stale read: a node served an older value at least the bound after a write.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LateRead {
    /// The key, as reports show keys.
    pub key: Option<String>,
    /// The node that served the read.
    pub node: String,
    /// The read (an id into [`Operations::ops`]).
    pub read_op: usize,
    /// The source line of its completion.
    pub read_line: u64,
    /// The value it returned.
    pub read_value: Value,
    /// When it was invoked, ns.
    pub read_invoke_time: u64,
    /// The write it missed.
    pub write_op: usize,
    /// The node the write went through.
    pub write_node: String,
    /// The value written.
    pub write_value: Value,
    /// When the write was acknowledged, ns.
    pub write_complete_time: u64,
    /// How late the read was: from the write's acknowledgement to the read's invocation, ms.
    pub late_ms: f64,
    /// How long the pair was stale for, ms (at least `late_ms`).
    pub stale_for_ms: f64,
    /// The node's last read of the key still returned an older value.
    pub never_converged: bool,
    /// The violation in words.
    pub explanation: String,
}

/// A pair whose reads cannot tell whether the node caught up within the bound.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UndecidedPair {
    /// The key.
    pub key: Option<String>,
    /// The node.
    pub node: String,
    /// The write.
    pub write_op: usize,
    /// The value written.
    pub write_value: Value,
    /// How long the pair was stale for, ms (below the bound).
    pub stale_for_ms: f64,
    /// Its invalidation latency, ms (above the bound); `None` when it never converged.
    pub latency_ms: Option<f64>,
    /// Why it is undecided, in words.
    pub explanation: String,
}

/// Judges the pairs of [`invalidation::analyze_with`] against the bound (see the module docs).
pub fn check(history: &Operations, options: &CacheOptions) -> Result<CacheReport, ShapeError> {
    let started = Instant::now();
    let timed = check_shape(history)?;
    let bound_ns = u64::try_from(options.bound.as_nanos()).unwrap_or(u64::MAX);
    let mut judge = Judge {
        bound_ns,
        ..Judge::default()
    };
    let analysis = invalidation::analyze_with(history, |pair| {
        if timed {
            judge.pair(pair);
        }
    });
    judge.late.sort_by_key(|late| (late.read_op, late.write_op));
    judge.late.truncate(MAX_LISTED);
    judge
        .undecided
        .sort_by_key(|pair| (pair.write_op, pair.node.clone()));
    judge.undecided.truncate(MAX_LISTED);
    let (verdict, note) = judge.verdict(analysis.is_some(), timed);
    let analysis = analysis.unwrap_or_else(empty_analysis);
    Ok(CacheReport {
        verdict,
        invalidation_bound_ms: ms(bound_ns),
        bound_source: options.bound_source.clone(),
        writes: analysis.writes,
        pairs: analysis.pairs,
        reads: analysis.reads,
        stale_reads: analysis.stale_reads,
        stale_pairs: analysis.stale_pairs,
        late_pairs: judge.late_pairs,
        unconverged_pairs: analysis.unconverged_pairs,
        undecided_pairs: judge.undecided_pairs,
        stale_for_ms_max: judge.stale_for_ns_max.map(ms),
        latency_ms: analysis.latency_ms,
        witness: judge.late.first().cloned(),
        late: judge.late,
        undecided: judge.undecided,
        note,
        definitions: definitions(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Refuses an `ok` read or write without a node; returns whether every read and write has
/// its times.
fn check_shape(history: &Operations) -> Result<bool, ShapeError> {
    let mut timed = true;
    for op in &history.ops {
        if !matches!(op.f.as_str(), "read" | "get" | "write" | "put" | "cas") {
            continue;
        }
        timed &=
            op.invoke_time.is_some() && (op.complete_index.is_none() || op.complete_time.is_some());
        if op.outcome == Outcome::Ok && op.node.is_none() {
            return Err(ShapeError::new(
                op,
                true,
                "node",
                format!(
                    "an ok {} in a cache history must name the node that served it",
                    op.f
                ),
            ));
        }
    }
    Ok(timed)
}

fn empty_analysis() -> invalidation::InvalidationReport {
    invalidation::InvalidationReport {
        writes: 0,
        pairs: 0,
        stale_pairs: 0,
        unconverged_pairs: 0,
        reads: 0,
        unordered_reads: 0,
        stale_reads: 0,
        latency_ms: Quantiles::default(),
        max_ms: 0.0,
        per_write: Vec::new(),
    }
}

/// The judgment of pairs, one at a time.
#[derive(Default)]
struct Judge {
    bound_ns: u64,
    late_pairs: usize,
    undecided_pairs: usize,
    stale_for_ns_max: Option<u64>,
    late: Vec<LateRead>,
    undecided: Vec<UndecidedPair>,
}

impl Judge {
    /// The verdict, and why when it is `unknown`, once every pair was judged.
    fn verdict(&self, analysed: bool, timed: bool) -> (Verdict, Option<String>) {
        if !analysed {
            let why = "nothing to judge: no key was read through one node after a write through \
                       another";
            return (Verdict::Unknown, Some(why.to_string()));
        }
        if !timed {
            let why = "some operations have no time, so nothing can be measured against the bound";
            return (Verdict::Unknown, Some(why.to_string()));
        }
        if self.late_pairs > 0 {
            return (Verdict::Invalid, None);
        }
        if self.undecided_pairs > 0 {
            let why = format!(
                "undecided: {} (write, node) pairs were stale for less than the bound, but no \
                 read shows whether their node caught up within it",
                self.undecided_pairs
            );
            return (Verdict::Unknown, Some(why));
        }
        (Verdict::Valid, None)
    }

    fn pair(&mut self, pair: &Pair<'_, '_>) {
        let Some(stale) = pair.last_stale_read else {
            return;
        };
        let (Some(acked), Some(stale_at)) = (pair.write.complete_time, stale.invoke_time) else {
            return;
        };
        let stale_for = stale_at.saturating_sub(acked);
        self.stale_for_ns_max = Some(self.stale_for_ns_max.unwrap_or(0).max(stale_for));
        let key = pair.write.key.as_ref().map(show_key);
        if stale_for >= self.bound_ns {
            self.late_pairs += 1;
            let read = pair
                .first_stale_read_from(acked.saturating_add(self.bound_ns))
                .unwrap_or(stale);
            self.late.push(late_read(pair, key, read, acked, stale_for));
            if self.late.len() > 2 * MAX_LISTED {
                self.late.sort_by_key(|late| (late.read_op, late.write_op));
                self.late.truncate(MAX_LISTED);
            }
            return;
        }
        let bound_ms = ms(self.bound_ns);
        let over = pair.latency_ms.is_some_and(|latency| latency > bound_ms);
        if !pair.never_converged() && !over {
            return;
        }
        self.undecided_pairs += 1;
        if self.undecided.len() >= MAX_LISTED {
            // Pairs come in write order within a key; keeping the first ones is enough.
            return;
        }
        let explanation = match pair.latency_ms {
            Some(latency) => format!(
                "{} served an older value of {} until {} ms after write op {} was \
                 acknowledged, and the next read began at {} ms: it caught up in between, \
                 before or after the {bound_ms} ms bound",
                pair.node,
                key.as_deref().unwrap_or("the register"),
                ms(stale_for),
                pair.write.id,
                latency
            ),
            None => format!(
                "{} still served an older value of {} in its last read, {} ms after write \
                 op {} was acknowledged, within the {bound_ms} ms bound, and the history ends \
                 there",
                pair.node,
                key.as_deref().unwrap_or("the register"),
                ms(stale_for),
                pair.write.id
            ),
        };
        self.undecided.push(UndecidedPair {
            key,
            node: pair.node.to_string(),
            write_op: pair.write.id,
            write_value: pair.value.clone(),
            stale_for_ms: ms(stale_for),
            latency_ms: pair.latency_ms,
            explanation,
        });
    }
}

fn late_read(
    pair: &Pair<'_, '_>,
    key: Option<String>,
    read: &Operation,
    acked: u64,
    stale_for: u64,
) -> LateRead {
    let read_invoke_time = read.invoke_time.unwrap_or(acked);
    let late_ms = ms(read_invoke_time.saturating_sub(acked));
    let read_value = read.output.clone().unwrap_or(Value::Null);
    let mut explanation = format!(
        "read op {} of {} on {} (line {}), invoked {late_ms} ms after write op {} of {} \
         through {} was acknowledged, returned the older {}",
        read.id,
        key.as_deref().unwrap_or("the register"),
        pair.node,
        read.complete_line,
        pair.write.id,
        show(pair.value),
        pair.write_node,
        show(&read_value)
    );
    if pair.never_converged() {
        explanation.push_str(&format!(
            "; {} never caught up: its last read of the key, {} ms after the write, still \
             returned an older value",
            pair.node,
            ms(stale_for)
        ));
    }
    LateRead {
        key,
        node: pair.node.to_string(),
        read_op: read.id,
        read_line: read.complete_line,
        read_value,
        read_invoke_time,
        write_op: pair.write.id,
        write_node: pair.write_node.to_string(),
        write_value: pair.value.clone(),
        write_complete_time: acked,
        late_ms,
        stale_for_ms: ms(stale_for),
        never_converged: pair.never_converged(),
        explanation,
    }
}

/// The definitions in words, as the report carries them.
pub fn definitions() -> BTreeMap<String, String> {
    let pairs = [
        ("pair", "an ok write of key k through node n, and another node m with a read of k that began after the write completed (as in the timing definitions)"),
        ("bound", "how long after a write is acknowledged every other node may still serve an older value: --invalidation-bound, else the header's invalidation_bound_ms, else 100 ms (the seed's)"),
        ("stale for", "from a write's acknowledgement to the invocation of the last read on the other node that returned an older version: a lower bound on the pair's invalidation latency"),
        ("late stale read", "a read that returned an older version and began at least the bound after the write it missed was acknowledged; any one makes the verdict invalid"),
        ("undecided", "a pair stale for less than the bound whose invalidation latency exceeds it, or that never converged: the reads cannot tell whether the node caught up within the bound, so the verdict is unknown"),
        ("never converged", "the node's last read of the key still returned an older version"),
    ];
    pairs
        .into_iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect()
}
