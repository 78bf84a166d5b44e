//! What the page draws: the partitions in order of interest, and a bounded window of each.
//!
//! Invalid partitions come first (the witness's own partition before any other), then unknown
//! ones, then valid ones. A partition with more operations than its share is cut to a window:
//! around the failing operation for an invalid partition, around where the search stopped
//! for an unknown one, and from the start for a valid one.

use crate::check::Report;
use crate::linear::PartitionReport;
use crate::models::{show_key, ModelSpec, PartitionKey};
use crate::ops::{Operation, Operations, Outcome};
use crate::verdict::Verdict;
use std::collections::BTreeMap;

/// One partition of the history, with the operations that belong to it.
#[derive(Debug)]
pub(crate) struct Group<'a> {
    /// The partition's key.
    pub key: PartitionKey,
    /// Its verdict.
    pub verdict: Verdict,
    /// What the checker said about it, when the report kept that.
    pub report: Option<&'a PartitionReport>,
    /// Its operations, failed ones included, in invocation order.
    pub ops: Vec<&'a Operation>,
}

/// The partitions of `report`, most interesting first, with their operations.
pub(crate) fn groups<'a>(report: &'a Report, operations: &'a Operations) -> Vec<Group<'a>> {
    let linear = report.linearizability.as_ref();
    let reported: BTreeMap<&PartitionKey, &PartitionReport> = linear
        .map(|l| l.partitions.iter().map(|p| (&p.key, p)).collect())
        .unwrap_or_default();
    let spec = report
        .model
        .as_deref()
        .and_then(|name| ModelSpec::parse(name).ok());
    let mut members: BTreeMap<PartitionKey, Vec<&Operation>> = BTreeMap::new();
    for op in &operations.ops {
        let key = match &spec {
            Some(spec) => spec.partition(op),
            None => {
                let by_key = op.key.as_ref().map(show_key);
                if !reported.contains_key(&by_key) && reported.contains_key(&None) {
                    None
                } else {
                    by_key
                }
            }
        };
        members.entry(key).or_default().push(op);
    }
    for key in reported.keys() {
        members.entry((*key).clone()).or_default();
    }
    // Partitions the report left out were valid (it keeps every partition that is not).
    let default_verdict = if linear.is_some() {
        Verdict::Valid
    } else {
        Verdict::Unknown
    };
    let mut groups: Vec<Group<'a>> = members
        .into_iter()
        .map(|(key, mut ops)| {
            ops.sort_by_key(|op| op.id);
            let report = reported.get(&key).copied();
            Group {
                verdict: report.map_or(default_verdict, |r| r.verdict),
                key,
                report,
                ops,
            }
        })
        .collect();
    let witness_key = linear.and_then(|l| l.witness.as_ref()).map(|w| &w.key);
    let rank = |verdict: Verdict| match verdict {
        Verdict::Invalid => 0,
        Verdict::Unknown => 1,
        Verdict::Valid => 2,
    };
    groups.sort_by_key(|group| (rank(group.verdict), Some(&group.key) != witness_key));
    groups
}

/// Where a window of a partition should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Focus {
    /// Around the operation (an id) that cannot be linearized.
    Failure(usize),
    /// Around the operation (an id) where the search stopped without a verdict.
    Stop(usize),
    /// From the start.
    Start,
}

/// A bounded selection of a partition's operations.
#[derive(Debug)]
pub(crate) struct Window<'a> {
    /// The operations drawn, in invocation order.
    pub ops: Vec<&'a Operation>,
    /// How many of them come from before the contiguous part, because they were still running
    /// when the failing operation was invoked. They come first in `ops`.
    pub n_running: usize,
}

impl Window<'_> {
    /// The contiguous part of the window, without the earlier running operations.
    pub fn contiguous(&self) -> &[&Operation] {
        &self.ops[self.n_running..]
    }
}

/// At most `cap` operations of `ops` (in invocation order) around `focus`.
///
/// Around a failure, three quarters of the window come before the failing operation, since the
/// prefix explains the state it fails in; and up to a quarter of it goes to earlier operations
/// that were still running when the failing one was invoked, since they could still take effect.
pub(crate) fn window<'a>(ops: &[&'a Operation], cap: usize, focus: Focus) -> Window<'a> {
    let cap = cap.max(1);
    if ops.len() <= cap {
        return Window {
            ops: ops.to_vec(),
            n_running: 0,
        };
    }
    let center = match focus {
        Focus::Failure(id) | Focus::Stop(id) => ops.binary_search_by_key(&id, |op| op.id).ok(),
        Focus::Start => None,
    };
    let Some(center) = center else {
        return Window {
            ops: ops[..cap].to_vec(),
            n_running: 0,
        };
    };
    let around = |size: usize| {
        let start = center.saturating_sub(size * 3 / 4);
        let end = (start + size).min(ops.len());
        (end.saturating_sub(size), end)
    };
    let (start, _) = around(cap);
    let mut running: Vec<&Operation> = Vec::new();
    if let Focus::Failure(_) = focus {
        let failing = ops[center];
        running = ops[..start]
            .iter()
            .rev()
            .filter(|op| still_running(op, failing.invoke_index))
            .take(cap / 4)
            .copied()
            .collect();
        running.reverse();
    }
    let (start, end) = around(cap - running.len());
    let n_running = running.len();
    running.extend_from_slice(&ops[start..end]);
    Window {
        ops: running,
        n_running,
    }
}

/// True when `op` had not completed (or never did, as far as anyone knows) by event `index`.
fn still_running(op: &Operation, index: u64) -> bool {
    match op.outcome {
        Outcome::Fail => false,
        Outcome::Info | Outcome::Pending => true,
        Outcome::Ok => op.complete_index.is_none_or(|complete| complete >= index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Process;
    use serde_json::Value;

    fn op(id: usize, outcome: Outcome, complete_index: Option<u64>) -> Operation {
        Operation {
            id,
            process: Process::Client(id as u64),
            f: "write".to_string(),
            key: None,
            input: Value::from(id),
            output: None,
            outcome,
            invoke_index: id as u64 * 2,
            complete_index,
            invoke_time: None,
            complete_time: None,
            invoke_line: 0,
            complete_line: 0,
            node: None,
            error: None,
        }
    }

    fn sequential(n: usize) -> Vec<Operation> {
        (0..n)
            .map(|id| op(id, Outcome::Ok, Some(id as u64 * 2 + 1)))
            .collect()
    }

    #[test]
    fn a_small_partition_is_drawn_whole() {
        let ops = sequential(10);
        let refs: Vec<&Operation> = ops.iter().collect();
        let window = window(&refs, 100, Focus::Failure(3));
        assert_eq!(window.ops.len(), 10);
        assert_eq!(window.n_running, 0);
    }

    #[test]
    fn the_window_of_a_failure_is_mostly_its_past() {
        let ops = sequential(10_000);
        let refs: Vec<&Operation> = ops.iter().collect();
        let window = window(&refs, 1_000, Focus::Failure(5_000));
        let ids: Vec<usize> = window.ops.iter().map(|op| op.id).collect();
        assert_eq!(ids.len(), 1_000);
        assert_eq!((ids[0], ids[999]), (4_250, 5_249));
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn earlier_operations_still_running_at_the_failure_are_kept() {
        let mut ops = sequential(10_000);
        ops[10] = op(10, Outcome::Info, Some(21));
        ops[20] = op(20, Outcome::Pending, None);
        ops[30] = op(30, Outcome::Ok, Some(19_000));
        let refs: Vec<&Operation> = ops.iter().collect();
        let window = window(&refs, 1_000, Focus::Failure(9_000));
        assert_eq!(window.n_running, 3);
        let ids: Vec<usize> = window.ops.iter().map(|op| op.id).collect();
        assert_eq!(&ids[..4], &[10, 20, 30, 8_253]);
        assert_eq!(ids.len(), 1_000);
        assert_eq!(window.contiguous().len(), 997);
    }

    #[test]
    fn a_window_at_the_end_of_a_partition_stays_full() {
        let ops = sequential(5_000);
        let refs: Vec<&Operation> = ops.iter().collect();
        let window = window(&refs, 1_000, Focus::Stop(4_999));
        assert_eq!(window.ops.len(), 1_000);
        assert_eq!(window.ops[0].id, 4_000);
        let start = super::window(&refs, 1_000, Focus::Start);
        assert_eq!(start.ops.last().map(|op| op.id), Some(999));
    }
}
