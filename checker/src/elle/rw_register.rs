//! Read-write register inference (Elle §4.1, `elle.rw-register`): version orders, the
//! anomalies that need no cycle, and the ww, wr and rw edges.
//!
//! Writes are unique per key, so a read names the write it saw. A register's read does not
//! reveal the versions before it, so the version order of a key is a partial order built from
//! the initial state (nil precedes every write) and, when asked, from writes that follow reads
//! within a txn and from realtime order on linearizable keys. A cycle in it is
//! `cyclic-versions`.

use super::anomaly::{Collector, Why, INITIAL};
use super::graph::Edges;
use super::txn::{MopKind, Status, Txns};
use super::{EdgeKind, ElleOptions};
use crate::models::ValueInterner;
use crate::ops::Operations;
use hashbrown::{HashMap, HashSet};
use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::BTreeMap;

/// The version nil, the initial state of every key.
const NIL: u32 = ValueInterner::NULL;

/// One write: its txn, and whether the txn wrote the key again later.
#[derive(Clone, Copy, Debug)]
struct Write {
    txn: u32,
    intermediate: bool,
}

/// Infers version orders, reports anomalies to `collector`, and returns the dependency
/// edges. `Err` with the reason when writes are not unique.
pub(crate) fn analyse(
    history: &Operations,
    txns: &Txns,
    options: &ElleOptions,
    collector: &mut Collector,
) -> Result<Edges, String> {
    let writes = index_writes(txns, collector)?;
    // External reads (key, value) of committed txns, and the final write of each key of
    // every txn that may have committed.
    let mut external_reads: Vec<(u32, u32, u32)> = Vec::new();
    let mut final_writes: Vec<(u32, u32, u32)> = Vec::new();
    let mut lost_updates: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    for (t, txn) in txns.txns.iter().enumerate() {
        let t = t as u32;
        if txn.status == Status::Fail {
            continue;
        }
        let mops = txns.mops_of(txn);
        let mut state: Vec<(u32, u32, bool)> = Vec::new(); // key, value, written
        for mop in mops {
            let slot = state.iter().position(|s| s.0 == mop.key);
            match mop.kind {
                MopKind::Write => match slot {
                    Some(s) => {
                        if !state[s].2 && txn.status == Status::Ok {
                            lost_updates
                                .entry((mop.key, state[s].1))
                                .or_default()
                                .push(t);
                        }
                        state[s] = (mop.key, mop.value, true);
                    }
                    None => state.push((mop.key, mop.value, true)),
                },
                MopKind::Read if mop.is_known_read() => match slot {
                    Some(s) => {
                        let (_, expected, _) = state[s];
                        if expected != mop.value {
                            report_internal(t, mop.key, mop.value, expected, collector);
                        }
                        state[s].1 = mop.value;
                    }
                    None => {
                        state.push((mop.key, mop.value, false));
                        external_reads.push((t, mop.key, mop.value));
                    }
                },
                _ => {}
            }
        }
        for mop in mops.iter().filter(|m| m.kind == MopKind::Write) {
            let w = writes[&(mop.key, mop.value)];
            if !w.intermediate {
                final_writes.push((t, mop.key, mop.value));
            }
        }
    }
    report_lost_updates(txns, lost_updates, collector);
    let mut edges = Edges::new(txns.txns.len());
    let mut readers: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    for &(t, key, value) in &external_reads {
        readers.entry((key, value)).or_default().push(t);
        if value != NIL {
            read_from(txns, &writes, t, key, value, collector, &mut edges);
        }
    }
    let versions = version_orders(history, txns, options, &external_reads, &final_writes);
    for (&key, order) in &versions {
        report_cyclic_versions(key, order, collector);
        for &(v1, v2) in order {
            let Some(w2) = committed_writer(txns, &writes, key, v2) else {
                continue;
            };
            let a = if v1 == NIL { INITIAL } else { v1 };
            let why = Why { key, a, b: v2 };
            if let Some(w1) = committed_writer(txns, &writes, key, v1) {
                edges.push(w1, w2, EdgeKind::Ww, why);
            }
            for &reader in readers.get(&(key, v1)).into_iter().flatten() {
                edges.push(reader, w2, EdgeKind::Rw, why);
            }
        }
    }
    Ok(edges)
}

fn index_writes(txns: &Txns, collector: &Collector) -> Result<HashMap<(u32, u32), Write>, String> {
    let mut writes: HashMap<(u32, u32), Write> = HashMap::new();
    for (t, txn) in txns.txns.iter().enumerate() {
        let mops = txns.mops_of(txn);
        for (i, mop) in mops.iter().enumerate() {
            if mop.kind != MopKind::Write {
                continue;
            }
            let intermediate = mops[i + 1..]
                .iter()
                .any(|later| later.kind == MopKind::Write && later.key == mop.key);
            let write = Write {
                txn: t as u32,
                intermediate,
            };
            if let Some(other) = writes.insert((mop.key, mop.value), write) {
                return Err(format!(
                    "{} was written to key {} more than once (by {} and {}); rw-register needs \
                     every write to a key to be unique",
                    collector.value(mop.value),
                    collector.key(mop.key),
                    collector.txn_name(other.txn),
                    collector.txn_name(t as u32)
                ));
            }
        }
    }
    Ok(writes)
}

fn committed_writer(
    txns: &Txns,
    writes: &HashMap<(u32, u32), Write>,
    key: u32,
    value: u32,
) -> Option<u32> {
    let write = writes.get(&(key, value))?;
    (txns.txns[write.txn as usize].status != Status::Fail).then_some(write.txn)
}

fn report_internal(t: u32, key: u32, read: u32, expected: u32, collector: &mut Collector) {
    collector.add("internal", |c| {
        (
            vec![
                format!(
                    "{} read {} from key {}",
                    c.txn_name(t),
                    c.value(read),
                    c.key(key)
                ),
                format!(
                    "but its own earlier micro-ops mean it should have read {}",
                    c.value(expected)
                ),
            ],
            vec![t],
        )
    });
}

/// The wr edge of one external read, or the reason it has none: G1a, G1b, a future read or
/// a garbage read.
fn read_from(
    txns: &Txns,
    writes: &HashMap<(u32, u32), Write>,
    t: u32,
    key: u32,
    value: u32,
    collector: &mut Collector,
    edges: &mut Edges,
) {
    let Some(write) = writes.get(&(key, value)) else {
        collector.add("garbage-read", |c| {
            (
                vec![
                    format!(
                        "{} read {} from key {}",
                        c.txn_name(t),
                        c.value(value),
                        c.key(key)
                    ),
                    format!(
                        "no transaction wrote {} to key {}",
                        c.value(value),
                        c.key(key)
                    ),
                ],
                vec![t],
            )
        });
        return;
    };
    let writer = write.txn;
    let read_line = |c: &Collector| {
        format!(
            "{} read {} from key {}",
            c.txn_name(t),
            c.value(value),
            c.key(key)
        )
    };
    if writer == t {
        collector.add("future-read", |c| {
            (
                vec![
                    read_line(c),
                    format!(
                        "but T{} itself writes {} only later",
                        c.op_id(t),
                        c.value(value)
                    ),
                ],
                vec![t],
            )
        });
    } else if txns.txns[writer as usize].status == Status::Fail {
        collector.add("G1a", |c| {
            (
                vec![
                    read_line(c),
                    format!("{} wrote it, and failed (aborted read)", c.txn_name(writer)),
                ],
                vec![t, writer],
            )
        });
    } else {
        edges.push(
            writer,
            t,
            EdgeKind::Wr,
            Why {
                key,
                a: value,
                b: INITIAL,
            },
        );
        if write.intermediate {
            collector.add("G1b", |c| {
                (
                    vec![
                        read_line(c),
                        format!(
                            "{} wrote it, then wrote key {} again, so it is an intermediate \
                             state (intermediate read)",
                            c.txn_name(writer),
                            c.key(key)
                        ),
                    ],
                    vec![t, writer],
                )
            });
        }
    }
}

fn report_lost_updates(
    txns: &Txns,
    lost_updates: HashMap<(u32, u32), Vec<u32>>,
    collector: &mut Collector,
) {
    let mut cases: Vec<_> = lost_updates
        .into_iter()
        .filter(|(_, readers)| readers.len() >= 2)
        .collect();
    cases.sort_unstable();
    for ((key, value), readers) in cases {
        collector.add("lost-update", |c| {
            let mut lines = vec![format!(
                "{} transactions read {} from key {}, then wrote it:",
                readers.len(),
                c.value(value),
                c.key(key)
            )];
            for &t in &readers {
                let wrote: Vec<u32> = txns
                    .mops_of(&txns.txns[t as usize])
                    .iter()
                    .filter(|m| m.kind == MopKind::Write && m.key == key)
                    .map(|m| m.value)
                    .collect();
                lines.push(format!("{} wrote {}", c.txn_name(t), c.list(&wrote)));
            }
            lines.push("so one of them overwrote the other's update unseen".to_string());
            (lines, readers.clone())
        });
    }
}

/// The version order of each key, as edges (earlier, later) between value ids.
fn version_orders(
    history: &Operations,
    txns: &Txns,
    options: &ElleOptions,
    external_reads: &[(u32, u32, u32)],
    final_writes: &[(u32, u32, u32)],
) -> BTreeMap<u32, Vec<(u32, u32)>> {
    let mut orders: BTreeMap<u32, HashSet<(u32, u32)>> = BTreeMap::new();
    if options.infer_writes_follow_reads {
        // A txn that read v1 and then wrote v2 to the same key installed v2 after v1.
        let reads: HashMap<(u32, u32), u32> = external_reads
            .iter()
            .map(|&(t, key, value)| ((t, key), value))
            .collect();
        for &(t, key, value) in final_writes {
            if let Some(&read) = reads.get(&(t, key)) {
                if read != value {
                    orders.entry(key).or_default().insert((read, value));
                }
            }
        }
    }
    if options.infer_linearizable_keys {
        linearizable_orders(history, txns, external_reads, final_writes, &mut orders);
    }
    // The initial state precedes every write that nothing else is known to precede.
    for &(_, key, value) in final_writes {
        let order = orders.entry(key).or_default();
        if !order.iter().any(|&(_, later)| later == value) {
            order.insert((NIL, value));
        }
    }
    orders
        .into_iter()
        .map(|(key, set)| {
            let mut pairs: Vec<(u32, u32)> = set.into_iter().collect();
            pairs.sort_unstable();
            (key, pairs)
        })
        .collect()
}

/// On a linearizable key, whatever an operation saw or wrote precedes what any operation
/// invoked after it completed saw or wrote (when the two differ). Transitively reduced with a
/// frontier of completed operations, as for realtime edges.
fn linearizable_orders(
    history: &Operations,
    txns: &Txns,
    external_reads: &[(u32, u32, u32)],
    final_writes: &[(u32, u32, u32)],
    orders: &mut BTreeMap<u32, HashSet<(u32, u32)>>,
) {
    // Per key: (history index, is completion, value, the operation's invoke index).
    let mut events: HashMap<u32, Vec<(u64, bool, u32, u64)>> = HashMap::new();
    for &(t, key, value) in external_reads.iter().chain(final_writes) {
        let txn = txns.txns[t as usize];
        let op = &history.ops[txn.op as usize];
        let list = events.entry(key).or_default();
        list.push((op.invoke_index, false, value, op.invoke_index));
        if txn.status == Status::Ok {
            if let Some(complete) = op.complete_index {
                list.push((complete, true, value, op.invoke_index));
            }
        }
    }
    for (key, mut list) in events {
        list.sort_unstable();
        let order = orders.entry(key).or_default();
        // (completion index, value) of completed operations no other completed one follows.
        let mut frontier: Vec<(u64, u32)> = Vec::new();
        for (index, is_completion, value, invoked) in list {
            if is_completion {
                frontier.retain(|&(done, _)| done > invoked);
                frontier.push((index, value));
            } else {
                for &(_, earlier) in &frontier {
                    if earlier != value {
                        order.insert((earlier, value));
                    }
                }
            }
        }
    }
}

fn report_cyclic_versions(key: u32, order: &[(u32, u32)], collector: &mut Collector) {
    let mut nodes: HashMap<u32, NodeIndex> = HashMap::new();
    let mut graph: DiGraph<u32, ()> = DiGraph::new();
    for &(a, b) in order {
        let a = *nodes.entry(a).or_insert_with(|| graph.add_node(a));
        let b = *nodes.entry(b).or_insert_with(|| graph.add_node(b));
        graph.add_edge(a, b, ());
    }
    for component in kosaraju_scc(&graph) {
        if component.len() < 2 {
            continue;
        }
        let mut values: Vec<u32> = component.iter().map(|&n| graph[n]).collect();
        values.sort_unstable();
        collector.add("cyclic-versions", |c| {
            let shown: Vec<String> = values.iter().map(|&v| c.value(v)).collect();
            (
                vec![
                    format!(
                        "the versions {} of key {} each precede one another in the inferred \
                         version order",
                        shown.join(", "),
                        c.key(key)
                    ),
                    "so no total order of writes explains the reads".to_string(),
                ],
                Vec::new(),
            )
        });
    }
}
