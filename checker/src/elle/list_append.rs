//! List-append inference (Elle §4.1): version orders from reads, the anomalies that need no
//! cycle, and the ww, wr and rw edges.
//!
//! Appends are unique per key, so a read of a list names the exact appends it saw, in order.
//! Every read of a key must be a prefix of the longest read of it (else `incompatible-order`),
//! and the longest read, without duplicates, is the key's version order. An append that no
//! read ever saw, by a transaction that may have committed, still comes after every element
//! of that order: had it come earlier, the longest read would hold it.

use super::anomaly::{Collector, Why, INITIAL};
use super::graph::Edges;
use super::txn::{Mop, MopKind, Status, Txns};
use super::EdgeKind;
use hashbrown::{HashMap, HashSet};

/// One append: which txn made it, and what we learned about it.
#[derive(Clone, Copy, Debug)]
struct Append {
    txn: u32,
    element: u32,
    /// The txn appended to the same key again later, so this state is intermediate.
    intermediate: bool,
    /// Some read observed it.
    seen: bool,
}

/// Every append, indexed by (key, element); appends and reads grouped by key.
struct Index {
    appends: Vec<Append>,
    by_element: HashMap<(u32, u32), u32>,
    appends_by_key: Vec<Vec<u32>>,
    /// (txn, micro-op index) of every known read, by key.
    reads_by_key: Vec<Vec<(u32, u32)>>,
}

/// Infers version orders, reports anomalies to `collector`, and returns the dependency
/// edges. `Err` with the reason when appends are not unique, so no order can be inferred.
pub(crate) fn analyse(txns: &Txns, collector: &mut Collector) -> Result<Edges, String> {
    let index = build_index(txns, collector)?;
    let mut lost_updates: HashMap<(u32, u32, u32), Vec<u32>> = HashMap::new();
    for (t, txn) in txns.txns.iter().enumerate() {
        if txn.status == Status::Ok {
            check_within_txn(txns, t as u32, collector, &mut lost_updates);
        }
    }
    report_lost_updates(txns, lost_updates, collector);
    let mut edges = Edges::new(txns.txns.len());
    let mut index = index;
    let mut scratch = KeyScratch::default();
    for key in 0..index.reads_by_key.len() {
        analyse_key(
            txns,
            &mut index,
            key as u32,
            &mut scratch,
            collector,
            &mut edges,
        );
    }
    Ok(edges)
}

fn build_index(txns: &Txns, collector: &Collector) -> Result<Index, String> {
    let n_keys = txns.mops.iter().map(|m| m.key + 1).max().unwrap_or(0) as usize;
    let mut index = Index {
        appends: Vec::new(),
        by_element: HashMap::new(),
        appends_by_key: vec![Vec::new(); n_keys],
        reads_by_key: vec![Vec::new(); n_keys],
    };
    for (t, txn) in txns.txns.iter().enumerate() {
        let mops = txns.mops_of(txn);
        for (i, mop) in mops.iter().enumerate() {
            match mop.kind {
                MopKind::Append => {
                    let intermediate = mops[i + 1..]
                        .iter()
                        .any(|later| later.kind == MopKind::Append && later.key == mop.key);
                    let id = index.appends.len() as u32;
                    if let Some(&other) = index.by_element.get(&(mop.key, mop.value)) {
                        let first = index.appends[other as usize].txn;
                        return Err(format!(
                            "{} was appended to key {} more than once (by {} and {}); \
                             list-append needs every append to a key to be unique",
                            collector.value(mop.value),
                            collector.key(mop.key),
                            collector.txn_name(first),
                            collector.txn_name(t as u32)
                        ));
                    }
                    index.by_element.insert((mop.key, mop.value), id);
                    index.appends.push(Append {
                        txn: t as u32,
                        element: mop.value,
                        intermediate,
                        seen: false,
                    });
                    index.appends_by_key[mop.key as usize].push(id);
                }
                MopKind::Read if mop.is_known_read() => {
                    let position = txn.mops_start + i as u32;
                    index.reads_by_key[mop.key as usize].push((t as u32, position));
                }
                _ => {}
            }
        }
    }
    Ok(index)
}

/// Internal consistency, future reads and lost-update candidates of one committed txn.
/// These need two micro-ops on one key, so most txns are skipped at once.
fn check_within_txn(
    txns: &Txns,
    t: u32,
    collector: &mut Collector,
    lost_updates: &mut HashMap<(u32, u32, u32), Vec<u32>>,
) {
    let mops = txns.mops_of(&txns.txns[t as usize]);
    let repeats = mops
        .iter()
        .enumerate()
        .any(|(i, m)| mops[..i].iter().any(|earlier| earlier.key == m.key));
    if !repeats {
        return;
    }
    // Cerone et al.'s INT: what each key must read, given this txn's own earlier micro-ops.
    // `known == false` means only the suffix this txn appended is known.
    let mut expected: Vec<(u32, bool, Vec<u32>)> = Vec::new();
    // Keys this txn appended to, and the first read of each key before any append to it.
    let mut written: Vec<u32> = Vec::new();
    let mut external_reads: Vec<(u32, u32, u32)> = Vec::new();
    for (i, mop) in mops.iter().enumerate() {
        let slot = expected.iter().position(|e| e.0 == mop.key);
        match mop.kind {
            MopKind::Append => {
                future_read(txns, t, mops, i, collector);
                if !written.contains(&mop.key) {
                    written.push(mop.key);
                    if let Some(&version) = external_reads.iter().find(|r| r.0 == mop.key) {
                        lost_updates.entry(version).or_default().push(t);
                    }
                }
                match slot {
                    Some(s) => expected[s].2.push(mop.value),
                    None => expected.push((mop.key, false, vec![mop.value])),
                }
            }
            MopKind::Read => {
                let read = txns.read_list(mop);
                let key = mop.key;
                if !written.contains(&key) && !external_reads.iter().any(|r| r.0 == key) {
                    let last = read.last().copied().unwrap_or(INITIAL);
                    external_reads.push((key, read.len() as u32, last));
                }
                if let Some(s) = slot {
                    let (_, known, elements) = &expected[s];
                    let consistent = if *known {
                        read == elements.as_slice()
                    } else {
                        read.ends_with(elements)
                    };
                    if !consistent {
                        let wanted = if *known {
                            collector.list(elements)
                        } else {
                            format!("a list ending in {}", collector.list(elements))
                        };
                        collector.add("internal", |c| {
                            (
                                vec![
                                    format!(
                                        "{} read key {} = {}",
                                        c.txn_name(t),
                                        c.key(mop.key),
                                        c.list(read)
                                    ),
                                    format!(
                                        "but its own earlier micro-ops mean it should have read {wanted}"
                                    ),
                                ],
                                vec![t],
                            )
                        });
                    }
                    expected[s] = (mop.key, true, read.to_vec());
                } else {
                    expected.push((mop.key, true, read.to_vec()));
                }
            }
            MopKind::Write => {}
        }
    }
}

/// A future read: an earlier read of this txn already holds the element it appends at `i`.
fn future_read(txns: &Txns, t: u32, mops: &[Mop], i: usize, collector: &mut Collector) {
    let append = mops[i];
    let earlier = mops[..i].iter().find(|m| {
        m.kind == MopKind::Read && m.key == append.key && txns.read_list(m).contains(&append.value)
    });
    if let Some(read) = earlier {
        collector.add("future-read", |c| {
            (
                vec![
                    format!(
                        "{} read key {} = {}, which holds {}",
                        c.txn_name(t),
                        c.key(append.key),
                        c.list(txns.read_list(read)),
                        c.value(append.value)
                    ),
                    format!(
                        "but T{} itself appends {} to key {} only later",
                        c.op_id(t),
                        c.value(append.value),
                        c.key(append.key)
                    ),
                ],
                vec![t],
            )
        });
    }
}

/// Lost update (Adya's H_lu, as Elle detects it): committed txns that read the same version
/// of a key and then both appended to it.
fn report_lost_updates(
    txns: &Txns,
    lost_updates: HashMap<(u32, u32, u32), Vec<u32>>,
    collector: &mut Collector,
) {
    let mut cases: Vec<_> = lost_updates
        .into_iter()
        .filter(|(_, readers)| readers.len() >= 2)
        .collect();
    cases.sort_unstable();
    for ((key, len, last), readers) in cases {
        collector.add("lost-update", |c| {
            let version = if len == 0 {
                "in its initial (empty) state".to_string()
            } else {
                format!("with {len} elements, ending in {}", c.value(last))
            };
            let mut lines = vec![format!(
                "{} transactions read key {} {version}, then appended to it:",
                readers.len(),
                c.key(key)
            )];
            for &t in &readers {
                let appended: Vec<u32> = txns
                    .mops_of(&txns.txns[t as usize])
                    .iter()
                    .filter(|m| m.kind == MopKind::Append && m.key == key)
                    .map(|m| m.value)
                    .collect();
                lines.push(format!("{} appended {}", c.txn_name(t), c.list(&appended)));
            }
            lines.push("so one of them overwrote the other's update unseen".to_string());
            (lines, readers.clone())
        });
    }
}

/// Buffers reused from key to key.
#[derive(Default)]
struct KeyScratch {
    order: Vec<u32>,
    position: HashMap<u32, u32>,
    /// (version position, reader txn).
    readers: Vec<(u32, u32)>,
    set: HashSet<u32>,
}

fn analyse_key(
    txns: &Txns,
    index: &mut Index,
    key: u32,
    scratch: &mut KeyScratch,
    collector: &mut Collector,
    edges: &mut Edges,
) {
    let reads = std::mem::take(&mut index.reads_by_key[key as usize]);
    let longest: &[u32] = reads
        .iter()
        .map(|&(_, m)| txns.read_list(&txns.mops[m as usize]))
        .fold(
            &[],
            |best, read| if read.len() > best.len() { read } else { best },
        );
    let longest_reader = reads
        .iter()
        .find(|&&(_, m)| txns.mops[m as usize].len as usize == longest.len())
        .map(|&(t, _)| t);
    scratch.order.clear();
    scratch.position.clear();
    for &element in longest {
        if !scratch.position.contains_key(&element) {
            scratch.position.insert(element, scratch.order.len() as u32);
            scratch.order.push(element);
        }
    }
    let longest_has_duplicates = scratch.order.len() < longest.len();
    // The first position whose element nobody committed (aborted, or never appended).
    let mut first_bad = usize::MAX;
    for (p, &element) in scratch.order.iter().enumerate() {
        match index.by_element.get(&(key, element)) {
            Some(&id) => {
                index.appends[id as usize].seen = true;
                if txns.txns[index.appends[id as usize].txn as usize].status == Status::Fail {
                    first_bad = first_bad.min(p);
                }
            }
            None => first_bad = first_bad.min(p),
        }
    }
    scratch.readers.clear();
    for &(t, m) in &reads {
        let read = txns.read_list(&txns.mops[m as usize]);
        let is_prefix = longest.starts_with(read);
        if !is_prefix || longest_has_duplicates {
            report_duplicates(t, key, read, &mut scratch.set, collector);
        }
        if !is_prefix {
            let other = longest_reader.unwrap_or(t);
            collector.add("incompatible-order", |c| {
                (
                    vec![
                        format!("{} read key {} = {}", c.txn_name(t), c.key(key), c.list(read)),
                        format!("{} read key {} = {}", c.txn_name(other), c.key(key), c.list(longest)),
                        "neither is a prefix of the other, so no one order of appends explains both"
                            .to_string(),
                    ],
                    vec![t, other],
                )
            });
        }
        if !is_prefix || read.len() > first_bad {
            report_uncommitted_elements(txns, index, t, key, read, collector);
        }
        read_from(txns, index, t, key, read, collector, edges);
        let version = match read.last() {
            None => Some(0),
            Some(last) => scratch.position.get(last).map(|p| p + 1),
        };
        if let Some(version) = version {
            scratch.readers.push((version, t));
        }
    }
    scratch.readers.sort_unstable();
    order_edges(txns, index, key, scratch, edges);
    dirty_updates(txns, index, key, &scratch.order, collector);
    index.reads_by_key[key as usize] = reads;
}

fn report_duplicates(
    t: u32,
    key: u32,
    read: &[u32],
    set: &mut HashSet<u32>,
    collector: &mut Collector,
) {
    set.clear();
    let duplicated: Vec<u32> = read.iter().copied().filter(|&e| !set.insert(e)).collect();
    if let Some(&element) = duplicated.first() {
        let times = read.iter().filter(|&&e| e == element).count();
        collector.add("duplicate-elements", |c| {
            (
                vec![
                    format!(
                        "{} read key {} = {}",
                        c.txn_name(t),
                        c.key(key),
                        c.list(read)
                    ),
                    format!(
                        "{} appears {times} times, but each value is appended once",
                        c.value(element)
                    ),
                ],
                vec![t],
            )
        });
    }
}

/// G1a (a read of an aborted txn's append) and garbage reads (of an element never appended).
fn report_uncommitted_elements(
    txns: &Txns,
    index: &mut Index,
    t: u32,
    key: u32,
    read: &[u32],
    collector: &mut Collector,
) {
    for &element in read {
        match index.by_element.get(&(key, element)) {
            Some(&id) => {
                let append = &mut index.appends[id as usize];
                append.seen = true;
                let writer = append.txn;
                if txns.txns[writer as usize].status == Status::Fail {
                    collector.add("G1a", |c| {
                        (
                            vec![
                                format!(
                                    "{} read key {} = {}",
                                    c.txn_name(t),
                                    c.key(key),
                                    c.list(read)
                                ),
                                format!(
                                    "{} was appended by {}, which failed (aborted read)",
                                    c.value(element),
                                    c.txn_name(writer)
                                ),
                            ],
                            vec![t, writer],
                        )
                    });
                }
            }
            None => collector.add("garbage-read", |c| {
                (
                    vec![
                        format!(
                            "{} read key {} = {}",
                            c.txn_name(t),
                            c.key(key),
                            c.list(read)
                        ),
                        format!(
                            "no transaction appended {} to key {}",
                            c.value(element),
                            c.key(key)
                        ),
                    ],
                    vec![t],
                )
            }),
        }
    }
}

/// The wr edge of one read (from the txn that appended its last element), and G1b when that
/// append was not the writer's final one to the key.
fn read_from(
    txns: &Txns,
    index: &Index,
    t: u32,
    key: u32,
    read: &[u32],
    collector: &mut Collector,
    edges: &mut Edges,
) {
    let Some(&last) = read.last() else {
        return;
    };
    let Some(&id) = index.by_element.get(&(key, last)) else {
        return;
    };
    let append = index.appends[id as usize];
    if append.txn == t || txns.txns[append.txn as usize].status == Status::Fail {
        return;
    }
    edges.push(
        append.txn,
        t,
        EdgeKind::Wr,
        Why {
            key,
            a: last,
            b: INITIAL,
        },
    );
    if append.intermediate {
        let writer = append.txn;
        let final_append = txns
            .mops_of(&txns.txns[writer as usize])
            .iter()
            .rev()
            .find(|m| m.kind == MopKind::Append && m.key == key)
            .map_or(INITIAL, |m| m.value);
        collector.add("G1b", |c| {
            (
                vec![
                    format!(
                        "{} read key {} = {}",
                        c.txn_name(t),
                        c.key(key),
                        c.list(read)
                    ),
                    format!(
                        "{} appended {} and later {} to key {}, so a state ending in {} is \
                         intermediate (intermediate read)",
                        c.txn_name(writer),
                        c.value(last),
                        c.value(final_append),
                        c.key(key),
                        c.value(last)
                    ),
                ],
                vec![t, writer],
            )
        });
    }
}

/// ww and rw edges along the version order, then those of appends no read observed.
fn order_edges(txns: &Txns, index: &Index, key: u32, scratch: &KeyScratch, edges: &mut Edges) {
    let writer = |element: u32| -> Option<u32> {
        let id = *index.by_element.get(&(key, element))?;
        let txn = index.appends[id as usize].txn;
        (txns.txns[txn as usize].status != Status::Fail).then_some(txn)
    };
    let order = &scratch.order;
    let readers = &scratch.readers;
    let mut r = 0;
    for (p, &element) in order.iter().enumerate() {
        let previous = if p == 0 { INITIAL } else { order[p - 1] };
        let this_writer = writer(element);
        while r < readers.len() && (readers[r].0 as usize) < p {
            r += 1;
        }
        let Some(this_writer) = this_writer else {
            continue;
        };
        if p > 0 {
            if let Some(previous_writer) = writer(previous) {
                let why = Why {
                    key,
                    a: previous,
                    b: element,
                };
                edges.push(previous_writer, this_writer, EdgeKind::Ww, why);
            }
        }
        let mut q = r;
        while q < readers.len() && readers[q].0 as usize == p {
            let why = Why {
                key,
                a: previous,
                b: element,
            };
            edges.push(readers[q].1, this_writer, EdgeKind::Rw, why);
            q += 1;
        }
    }
    let last = order.last().copied();
    let last_writer = last.and_then(writer);
    let final_version = order.len() as u32;
    let first_final_reader = readers.partition_point(|&(v, _)| v < final_version);
    for &id in &index.appends_by_key[key as usize] {
        let append = index.appends[id as usize];
        if append.seen || txns.txns[append.txn as usize].status == Status::Fail {
            continue;
        }
        let previous = last.unwrap_or(INITIAL);
        let why = Why {
            key,
            a: previous,
            b: append.element,
        };
        if let Some(last_writer) = last_writer {
            edges.push(last_writer, append.txn, EdgeKind::Ww, why);
        }
        for &(_, reader) in &readers[first_final_reader..] {
            edges.push(reader, append.txn, EdgeKind::Rw, why);
        }
    }
}

/// Dirty update: a committed append that follows an aborted one in the version order.
fn dirty_updates(txns: &Txns, index: &Index, key: u32, order: &[u32], collector: &mut Collector) {
    let mut aborted: Option<(u32, u32)> = None;
    for &element in order {
        let Some(&id) = index.by_element.get(&(key, element)) else {
            continue;
        };
        let txn = index.appends[id as usize].txn;
        match txns.txns[txn as usize].status {
            Status::Fail => {
                aborted.get_or_insert((txn, element));
            }
            Status::Ok => {
                if let Some((failed, failed_element)) = aborted.take() {
                    collector.add("dirty-update", |c| {
                        (
                            vec![
                                format!(
                                    "{} appended {} to key {}, and failed",
                                    c.txn_name(failed),
                                    c.value(failed_element),
                                    c.key(key)
                                ),
                                format!(
                                    "{} committed its append of {}, which follows it in key {}'s \
                                     version order {}",
                                    c.txn_name(txn),
                                    c.value(element),
                                    c.key(key),
                                    c.list(order)
                                ),
                            ],
                            vec![failed, txn],
                        )
                    });
                }
            }
            // An append of unknown outcome proves nothing either way.
            Status::Info => {}
        }
    }
}
