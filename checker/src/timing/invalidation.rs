//! Cache invalidation latency: how long reads through other nodes kept returning older values.
//!
//! Operations: `ok` writes (`write` or `put` of `value`, or `cas` of `[old, new]`, which writes
//! `new`) and `ok` reads (`read` or `get`, returning the value), per `key`, each naming the
//! `node` that served it. Operations without a node are skipped.
//!
//! - **Older**: a read of `k` returned an older value than an `ok` write `w` of `k` when the
//!   write it read completed before `w` was invoked (real-time precedence: every linearization
//!   orders it first), or when it read the initial `null` (unless some write wrote `null`).
//!   Two overlapping writes may take effect in either order, so a read of either is older than
//!   neither. A value written more than once counts as its latest write, so a read is never
//!   called stale for a duplicate value. A read of a value no `ok` write wrote (an `info`
//!   write's) has no version and is skipped.
//! - **Pair**: an `ok` write `w` of key `k` through node `n`, and another node `m` with at
//!   least one read of `k` that began after `w` completed.
//! - **Invalidation latency** of a pair: let `a` be the last read of `k` on `m` that began
//!   after `w` completed and returned an older value than `w`. With no such read it is 0.
//!   Otherwise it is the time from `w`'s completion to the invocation of the next read of `k`
//!   on `m` after `a` (set-full's stable latency, for registers). When `a` is the last read of
//!   `k` on `m`, the pair never converged: it counts as unconverged and has no latency.
//! - **Stale read**: an `ok` read of `k` on `m` that returned an older value than some `ok`
//!   write of `k` through another node that completed before the read began.
//!
//! Internally a read's version is the completion index of the write it read, plus one (0 for
//! the initial `null`), and it is older than `w` exactly when that version is at most `w`'s
//! invocation index. Cost: O((writes × nodes + reads) × log reads), with a min segment tree
//! over each (key, node)'s read versions to find the last older read after a point.
//!
//! [`analyze_with`] hands each pair to a visitor as well, so that a verdict built on these
//! definitions (the cache checker, [`crate::cache`]) reuses this analysis.

use super::{ms, Quantiles};
use crate::models::show_key;
use crate::ops::{Operation, Operations, Outcome};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// At most this many writes are listed in [`InvalidationReport::per_write`].
pub const MAX_LISTED_WRITES: usize = 100;

/// Invalidation latency over every (write, other node) pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InvalidationReport {
    /// `ok` writes with at least one pair.
    pub writes: usize,
    /// Pairs (write, other node with a read after the write).
    pub pairs: usize,
    /// Pairs in which some read returned an older value.
    pub stale_pairs: usize,
    /// Pairs whose last read still returned an older value.
    pub unconverged_pairs: usize,
    /// `ok` reads with a node and a known version.
    pub reads: usize,
    /// Reads that returned a value no `ok` write wrote; they have no version and are skipped.
    pub unordered_reads: usize,
    /// Stale reads (see the module docs).
    pub stale_reads: usize,
    /// Quantiles of the latency over converged pairs (0 for pairs never stale), in ms.
    pub latency_ms: Quantiles,
    /// The largest latency, ms (0 with no converged pair).
    pub max_ms: f64,
    /// The writes with a stale pair, worst first (at most [`MAX_LISTED_WRITES`]).
    pub per_write: Vec<WriteInvalidation>,
}

/// One write's invalidation across the other nodes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WriteInvalidation {
    /// The key, as reports show keys.
    pub key: Option<String>,
    /// The value written.
    pub value: Value,
    /// The write (an id into `ops`).
    pub write_op: usize,
    /// The node it went through.
    pub node: String,
    /// Other nodes with a read after it.
    pub pairs: usize,
    /// Of those, nodes where some read returned an older value.
    pub stale_nodes: usize,
    /// Of those, nodes whose last read still returned an older value.
    pub unconverged_nodes: usize,
    /// The largest latency over its converged pairs, ms.
    pub max_latency_ms: Option<f64>,
}

struct Write<'a> {
    op: &'a Operation,
    value: &'a Value,
    node: &'a str,
    complete_index: u64,
}

impl Write<'_> {
    /// The version a read of this write has: its completion index plus one.
    fn version(&self) -> u64 {
        self.complete_index + 1
    }

    /// Reads with a version below this are older than the write: they read a write that
    /// completed before this one was invoked (or the initial value).
    fn older_below(&self) -> u64 {
        self.op.invoke_index + 1
    }
}

/// One node's reads of one key, in invocation order.
#[derive(Default)]
struct NodeReads<'a> {
    ops: Vec<&'a Operation>,
    invoke_index: Vec<u64>,
    invoke_time: Vec<Option<u64>>,
    versions: Vec<u64>,
}

/// One (write, other node) pair, as [`analyze_with`] hands it to a visitor: what the
/// analysis found, and a way to look further into the node's reads after the write.
pub struct Pair<'p, 'a> {
    /// The key, as reports show keys.
    pub key: &'p Option<String>,
    /// The `ok` write.
    pub write: &'a Operation,
    /// The value it wrote.
    pub value: &'a Value,
    /// The node it went through.
    pub write_node: &'a str,
    /// The other node: it has at least one read of the key that began after the write completed.
    pub node: &'p str,
    /// The last read of the key on `node` that began after the write completed and returned an
    /// older version than the write's; `None` when no such read did (the pair was never stale).
    pub last_stale_read: Option<&'a Operation>,
    /// The pair's invalidation latency in ms (see the module docs); `None` when it never
    /// converged or the history has no times.
    pub latency_ms: Option<f64>,
    converged: bool,
    reads: &'p NodeReads<'a>,
    tree: &'p MinTree,
    /// The position in `reads` of the first read that began after the write completed.
    first: usize,
    version: u64,
}

impl<'a> Pair<'_, 'a> {
    /// True when the node's last read of the key still returned an older version.
    pub fn never_converged(&self) -> bool {
        !self.converged
    }

    /// The first read of the key on `node`, invoked at or after `time_ns` (and after the write
    /// completed), that returned an older version than the write's.
    ///
    /// Invocation times normally grow with event order, as the recorder writes them; where
    /// they do not, this still returns only such a read, though perhaps not the first one.
    pub fn first_stale_read_from(&self, time_ns: u64) -> Option<&'a Operation> {
        let times = &self.reads.invoke_time[self.first..];
        let mut from = self.first + times.partition_point(|time| time.is_none_or(|t| t < time_ns));
        // Bounded by the node's reads: each round moves `from` forward.
        while let Some(found) = self.tree.leftmost_below(from, self.version) {
            if self.reads.invoke_time[found].is_some_and(|time| time >= time_ns) {
                return Some(self.reads.ops[found]);
            }
            from = found + 1;
        }
        None
    }
}

/// Writes and reads of one key.
#[derive(Default)]
struct KeyOps<'a> {
    writes: Vec<Write<'a>>,
    reads: Vec<&'a Operation>,
}

fn written_value(op: &Operation) -> Option<&Value> {
    match op.f.as_str() {
        "write" | "put" => Some(&op.input),
        "cas" => op
            .input
            .as_array()
            .filter(|pair| pair.len() == 2)
            .map(|pair| &pair[1]),
        _ => None,
    }
}

/// The invalidation analysis, or `None` when fewer than two nodes served reads and writes.
pub fn analyze(history: &Operations) -> Option<InvalidationReport> {
    analyze_with(history, |_| {})
}

/// [`analyze`], calling `visit` once per (write, other node) pair, in key, then write
/// completion, then node order. A verdict built on this analysis (the cache checker) judges
/// the pairs without computing them again.
pub fn analyze_with<'a>(
    history: &'a Operations,
    mut visit: impl FnMut(&Pair<'_, 'a>),
) -> Option<InvalidationReport> {
    let mut keys: BTreeMap<Option<String>, KeyOps> = BTreeMap::new();
    let mut nodes: Vec<&str> = Vec::new();
    for op in &history.ops {
        let (Outcome::Ok, Some(node), Some(complete_index)) =
            (op.outcome, op.node.as_deref(), op.complete_index)
        else {
            continue;
        };
        let key = op.key.as_ref().map(show_key);
        if let Some(value) = written_value(op) {
            nodes.push(node);
            keys.entry(key).or_default().writes.push(Write {
                op,
                value,
                node,
                complete_index,
            });
        } else if matches!(op.f.as_str(), "read" | "get") {
            nodes.push(node);
            keys.entry(key).or_default().reads.push(op);
        }
    }
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.len() < 2 {
        return None;
    }
    let mut tally = Tally::default();
    for (key, ops) in &mut keys {
        analyze_key(key, ops, &mut tally, &mut visit);
    }
    if tally.pairs == 0 {
        return None;
    }
    // Worst first: a write some node never caught up with ranks above any finite latency.
    let badness = |write: &WriteInvalidation| {
        if write.unconverged_nodes > 0 {
            f64::INFINITY
        } else {
            write.max_latency_ms.unwrap_or(0.0)
        }
    };
    tally.per_write.sort_by(|a, b| {
        badness(b)
            .total_cmp(&badness(a))
            .then(a.write_op.cmp(&b.write_op))
    });
    tally.per_write.truncate(MAX_LISTED_WRITES);
    let max_ms = tally.latencies.iter().copied().fold(0.0, f64::max);
    Some(InvalidationReport {
        writes: tally.writes,
        pairs: tally.pairs,
        stale_pairs: tally.stale_pairs,
        unconverged_pairs: tally.unconverged_pairs,
        reads: tally.reads,
        unordered_reads: tally.unordered_reads,
        stale_reads: tally.stale_reads,
        latency_ms: Quantiles::of(tally.latencies),
        max_ms,
        per_write: tally.per_write,
    })
}

#[derive(Default)]
struct Tally {
    writes: usize,
    pairs: usize,
    stale_pairs: usize,
    unconverged_pairs: usize,
    reads: usize,
    unordered_reads: usize,
    stale_reads: usize,
    latencies: Vec<f64>,
    per_write: Vec<WriteInvalidation>,
}

fn analyze_key<'a>(
    key: &Option<String>,
    ops: &mut KeyOps<'a>,
    tally: &mut Tally,
    visit: &mut impl FnMut(&Pair<'_, 'a>),
) {
    ops.writes.sort_by_key(|write| write.complete_index);
    ops.reads.sort_by_key(|read| read.invoke_index);
    // Version of each value: that of its latest write (see the module docs).
    let mut versions: HashMap<String, u64> = HashMap::new();
    for write in &ops.writes {
        versions.insert(write.value.to_string(), write.version());
    }
    let version_of = |value: &Value| match versions.get(&value.to_string()) {
        Some(&version) => Some(version),
        None => value.is_null().then_some(0),
    };
    // Over each prefix of the writes (in completion order), the largest `older_below` and its
    // node, and the largest from any other node: what a read on a given node can be stale to.
    // Invariant: `second` is the largest over writes whose node is not `top_node`.
    let mut best: Vec<((u64, &str), u64)> = Vec::with_capacity(ops.writes.len());
    for write in &ops.writes {
        let (value, node) = (write.older_below(), write.node);
        let ((top, top_node), second) = best.last().copied().unwrap_or(((0, ""), 0));
        best.push(if node == top_node {
            ((top.max(value), top_node), second)
        } else if value > top {
            // The old top came from another node than this write's, and bounds everything.
            ((value, node), top)
        } else {
            ((top, top_node), second.max(value))
        });
    }
    let mut by_node: BTreeMap<&str, NodeReads> = BTreeMap::new();
    for read in &ops.reads {
        let node = read.node.as_deref().unwrap_or_default();
        let Some(version) = version_of(read.output.as_ref().unwrap_or(&Value::Null)) else {
            tally.unordered_reads += 1;
            continue;
        };
        tally.reads += 1;
        // The writes completed before this read began, through another node: is the read
        // older than one of them?
        let completed = ops
            .writes
            .partition_point(|write| write.complete_index < read.invoke_index);
        let bound = completed.checked_sub(1).map_or(0, |last| {
            let ((top, top_node), second) = best[last];
            if top_node != node {
                top
            } else {
                second
            }
        });
        if version < bound {
            tally.stale_reads += 1;
        }
        let reads = by_node.entry(node).or_default();
        reads.ops.push(read);
        reads.invoke_index.push(read.invoke_index);
        reads.invoke_time.push(read.invoke_time);
        reads.versions.push(version);
    }
    let trees: BTreeMap<&str, MinTree> = by_node
        .iter()
        .map(|(node, reads)| (*node, MinTree::new(&reads.versions)))
        .collect();
    for write in ops.writes.iter() {
        let version = write.older_below();
        let mut entry = WriteInvalidation {
            key: key.clone(),
            value: write.value.clone(),
            write_op: write.op.id,
            node: write.node.to_string(),
            pairs: 0,
            stale_nodes: 0,
            unconverged_nodes: 0,
            max_latency_ms: None,
        };
        for (node, reads) in &by_node {
            if *node == write.node {
                continue;
            }
            let first = reads
                .invoke_index
                .partition_point(|&index| index <= write.complete_index);
            if first == reads.invoke_index.len() {
                continue;
            }
            entry.pairs += 1;
            let tree = &trees[node];
            let last_stale = tree.rightmost_below(first, version);
            let (latency, converged) = match last_stale {
                None => (write.op.complete_time.map(|_| 0.0), true),
                Some(stale) => {
                    entry.stale_nodes += 1;
                    match reads.invoke_time.get(stale + 1) {
                        Some(&time) => (
                            time.zip(write.op.complete_time)
                                .map(|(read, written)| ms(read.saturating_sub(written))),
                            true,
                        ),
                        None => {
                            entry.unconverged_nodes += 1;
                            (None, false)
                        }
                    }
                }
            };
            if let Some(latency) = latency {
                tally.latencies.push(latency);
                entry.max_latency_ms = Some(entry.max_latency_ms.unwrap_or(0.0).max(latency));
            }
            visit(&Pair {
                key,
                write: write.op,
                value: write.value,
                write_node: write.node,
                node,
                last_stale_read: last_stale.map(|position| reads.ops[position]),
                latency_ms: latency,
                converged,
                reads,
                tree,
                first,
                version,
            });
        }
        if entry.pairs > 0 {
            tally.writes += 1;
            tally.pairs += entry.pairs;
            tally.stale_pairs += entry.stale_nodes;
            tally.unconverged_pairs += entry.unconverged_nodes;
            if entry.stale_nodes > 0 {
                tally.per_write.push(entry);
            }
        }
    }
}

/// A segment tree of minimums, to find the last position at or after `from` whose value is
/// below a bound in O(log n).
struct MinTree {
    /// Leaves start at `leaves`; padding leaves hold `u64::MAX`.
    leaves: usize,
    minimums: Vec<u64>,
}

impl MinTree {
    fn new(values: &[u64]) -> MinTree {
        let leaves = values.len().max(1).next_power_of_two();
        let mut minimums = vec![u64::MAX; 2 * leaves];
        minimums[leaves..leaves + values.len()].copy_from_slice(values);
        for node in (1..leaves).rev() {
            minimums[node] = minimums[2 * node].min(minimums[2 * node + 1]);
        }
        MinTree { leaves, minimums }
    }

    /// The largest position `p >= from` with `values[p] < bound`.
    fn rightmost_below(&self, from: usize, bound: u64) -> Option<usize> {
        self.descend(1, 0, self.leaves, from, bound)
    }

    /// The smallest position `p >= from` with `values[p] < bound`.
    fn leftmost_below(&self, from: usize, bound: u64) -> Option<usize> {
        self.descend_left(1, 0, self.leaves, from, bound)
    }

    fn descend_left(
        &self,
        node: usize,
        low: usize,
        high: usize,
        from: usize,
        bound: u64,
    ) -> Option<usize> {
        if high <= from || self.minimums[node] >= bound {
            return None;
        }
        if high - low == 1 {
            return Some(low);
        }
        let middle = (low + high) / 2;
        self.descend_left(2 * node, low, middle, from, bound)
            .or_else(|| self.descend_left(2 * node + 1, middle, high, from, bound))
    }

    fn descend(
        &self,
        node: usize,
        low: usize,
        high: usize,
        from: usize,
        bound: u64,
    ) -> Option<usize> {
        if high <= from || self.minimums[node] >= bound {
            return None;
        }
        if high - low == 1 {
            return Some(low);
        }
        let middle = (low + high) / 2;
        self.descend(2 * node + 1, middle, high, from, bound)
            .or_else(|| self.descend(2 * node, low, middle, from, bound))
    }
}

#[cfg(test)]
mod tests {
    use super::MinTree;

    #[test]
    fn the_min_tree_finds_the_last_value_below_a_bound_after_a_point() {
        let tree = MinTree::new(&[1, 5, 2, 7, 3, 9]);
        assert_eq!(tree.rightmost_below(0, 4), Some(4));
        assert_eq!(tree.rightmost_below(5, 4), None);
        assert_eq!(tree.rightmost_below(0, 2), Some(0));
        assert_eq!(tree.rightmost_below(1, 2), None);
        assert_eq!(tree.rightmost_below(3, 8), Some(4));
        assert_eq!(tree.rightmost_below(6, 100), None);
        let empty = MinTree::new(&[]);
        assert_eq!(empty.rightmost_below(0, 100), None);
    }

    #[test]
    fn the_min_tree_finds_the_first_value_below_a_bound_after_a_point() {
        let tree = MinTree::new(&[1, 5, 2, 7, 3, 9]);
        assert_eq!(tree.leftmost_below(0, 4), Some(0));
        assert_eq!(tree.leftmost_below(1, 4), Some(2));
        assert_eq!(tree.leftmost_below(3, 4), Some(4));
        assert_eq!(tree.leftmost_below(5, 4), None);
        assert_eq!(tree.leftmost_below(1, 2), None);
        assert_eq!(tree.leftmost_below(3, 8), Some(3));
        assert_eq!(tree.leftmost_below(6, 100), None);
        assert_eq!(MinTree::new(&[]).leftmost_below(0, 100), None);
    }
}
