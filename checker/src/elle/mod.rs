//! Elle-style isolation checking of transactional histories: list-append and rw-register.
//!
//! The pipeline follows Kingsbury and Alvaro, "Elle: Inferring Isolation Anomalies from
//! Experimental Observations" (VLDB 2020):
//!
//! 1. [`txn`] parses every `f: "txn"` operation into compact micro-operations, with keys and
//!    values interned as dense integers.
//! 2. [`list_append`] or [`rw_register`] infers each key's version order, reports the
//!    anomalies that need no cycle (G1a, G1b, dirty update, incompatible order, ...), and
//!    emits the ww, wr and rw dependency edges between transactions.
//! 3. [`graph`] adds process and realtime edges when asked, finds strongly connected
//!    components with petgraph, and searches each one for the cycles that name an anomaly
//!    (G0, G1c, G-single, G-nonadjacent, G2-item, and their `-process`/`-realtime` variants).
//! 4. [`consistency`] says which anomalies the chosen consistency model forbids; the verdict
//!    is `invalid` when one of those was found, `unknown` when a budget ran out first.

mod anomaly;
mod consistency;
mod graph;
mod list_append;
mod rw_register;
mod txn;

pub use consistency::Consistency;

use crate::models::ShapeError;
use crate::ops::Operations;
use crate::verdict::Verdict;
use anomaly::Collector;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The transactional workload a history records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxnWorkload {
    /// Micro-ops `["append", k, v]` and `["r", k, [v1, v2, ...]]` over lists.
    ListAppend,
    /// Micro-ops `["w", k, v]` and `["r", k, v]` over registers (also `write`/`read`).
    RwRegister,
}

impl TxnWorkload {
    /// The workload's name, as reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            TxnWorkload::ListAppend => "list-append",
            TxnWorkload::RwRegister => "rw-register",
        }
    }
}

/// What to check, and within which limits.
#[derive(Clone, Debug)]
pub struct ElleOptions {
    /// The consistency model the history must satisfy.
    pub consistency: Consistency,
    /// Add realtime edges (T1 completed before T2 was invoked). Always on for
    /// strict-serializable, whose anomalies need them.
    pub realtime_edges: bool,
    /// Add process edges (one process ran T1, then T2).
    pub process_edges: bool,
    /// Give up after this long in total; the verdict is then `unknown` unless a forbidden
    /// anomaly was already found.
    pub timeout: Option<Duration>,
    /// The cycle search's time budget for one strongly connected component.
    pub cycle_search_budget_per_component: Duration,
    /// rw-register only: a transaction that read `v1` of a key and then wrote `v2` to it
    /// puts `v1` before `v2` in the version order (Elle's `wfr-keys?`).
    pub infer_writes_follow_reads: bool,
    /// rw-register only: assume each key is linearizable, so an operation that completed
    /// before another was invoked saw or wrote an earlier version (Elle's
    /// `linearizable-keys?`).
    pub infer_linearizable_keys: bool,
}

impl Default for ElleOptions {
    fn default() -> Self {
        ElleOptions {
            consistency: Consistency::ReadCommitted,
            realtime_edges: false,
            process_edges: false,
            timeout: None,
            cycle_search_budget_per_component: Duration::from_secs(1),
            infer_writes_follow_reads: false,
            infer_linearizable_keys: false,
        }
    }
}

/// The kind of a dependency edge between two transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    /// Write-write: T2 overwrote (or appended after) a version T1 wrote.
    Ww,
    /// Write-read: T2 read a version T1 wrote.
    Wr,
    /// Read-write (anti-dependency): T1 read a version that T2 then overwrote.
    Rw,
    /// One process ran T1, then T2.
    Process,
    /// T1 completed before T2 was invoked.
    Realtime,
}

impl EdgeKind {
    /// The edge's name: `ww`, `wr`, `rw`, `process` or `realtime`.
    pub fn name(self) -> &'static str {
        match self {
            EdgeKind::Ww => "ww",
            EdgeKind::Wr => "wr",
            EdgeKind::Rw => "rw",
            EdgeKind::Process => "process",
            EdgeKind::Realtime => "realtime",
        }
    }
}

/// One edge of a dependency cycle, explained.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CycleStep {
    /// The `Operation` id of the earlier transaction.
    pub from: usize,
    /// The `Operation` id of the later transaction.
    pub to: usize,
    /// Why `from` precedes `to`.
    pub kind: EdgeKind,
    /// The same, in words: "T1 (process 2) < T3 (process 7) because ...".
    pub why: String,
}

/// One instance of an anomaly, with its witness.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Anomaly {
    /// `G0`, `G1a`, `G-single`, `incompatible-order`, ...
    pub name: String,
    /// The witness in words, one line per edge or fact.
    pub explanation: Vec<String>,
    /// The cycle, for cycle anomalies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<Vec<CycleStep>>,
    /// The `Operation` ids involved.
    pub ops: Vec<usize>,
}

/// Everything the checker found in one history.
#[derive(Clone, Debug, Serialize)]
pub struct ElleReport {
    /// `invalid` if a forbidden anomaly was found; `unknown` if a budget ran out (or the
    /// history cannot be analysed) before one was; `valid` otherwise.
    pub verdict: Verdict,
    /// The consistency model checked.
    pub consistency: Consistency,
    /// The workload the history records.
    pub workload: TxnWorkload,
    /// Transactions analysed (every `f: "txn"` operation, whatever its outcome).
    pub n_txns: usize,
    /// Every anomaly found, by name; at most [`ElleReport::MAX_WITNESSES`] instances each.
    pub anomalies: BTreeMap<String, Vec<Anomaly>>,
    /// How many instances of each anomaly were found. The cycle search stops looking for an
    /// anomaly once it holds [`ElleReport::MAX_WITNESSES`] witnesses, so cycle counts are
    /// lower bounds.
    pub anomaly_counts: BTreeMap<String, usize>,
    /// The names of anomalies found that the chosen consistency model forbids.
    pub failing: Vec<String>,
    /// The names of anomalies found that the chosen consistency model allows.
    pub informational: Vec<String>,
    /// Why the analysis is incomplete, when it is (a budget ran out, appends were not
    /// unique, there were no transactions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
    /// Wall time of the analysis.
    pub elapsed_ms: f64,
}

impl ElleReport {
    /// The most witnesses kept for one anomaly name.
    pub const MAX_WITNESSES: usize = 16;
}

/// Detects the workload: list-append when a txn appends or reads a list, rw-register when
/// one writes or reads a scalar; `None` when the history holds no txn.
pub fn detect(history: &Operations) -> Option<TxnWorkload> {
    let mut saw_txn = false;
    let mut scalar_read = false;
    for op in history.ops.iter().filter(|op| op.f == "txn") {
        saw_txn = true;
        for value in [Some(&op.input), op.output.as_ref()].into_iter().flatten() {
            for mop in value.as_array().into_iter().flatten() {
                let Some(parts) = mop.as_array() else {
                    continue;
                };
                match parts.first().and_then(|f| f.as_str()) {
                    Some("append") => return Some(TxnWorkload::ListAppend),
                    Some("w" | "write") => return Some(TxnWorkload::RwRegister),
                    Some("r" | "read") => match parts.get(2) {
                        Some(serde_json::Value::Array(_)) => return Some(TxnWorkload::ListAppend),
                        Some(serde_json::Value::Null) | None => {}
                        Some(_) => scalar_read = true,
                    },
                    _ => {}
                }
            }
        }
    }
    match (saw_txn, scalar_read) {
        (false, _) => None,
        (true, true) => Some(TxnWorkload::RwRegister),
        (true, false) => Some(TxnWorkload::ListAppend),
    }
}

/// Checks the `f: "txn"` operations of `history` for the anomalies `options.consistency`
/// forbids.
///
/// `Err(ShapeError)` names the line and the field of a txn with an unknown micro-op or a
/// malformed value. A history whose appends (or writes) are not unique per key cannot be
/// analysed, and gets `unknown` with the reason.
pub fn check(history: &Operations, options: &ElleOptions) -> Result<ElleReport, ShapeError> {
    let started = Instant::now();
    let deadline = options.timeout.map(|timeout| started + timeout);
    let workload = detect(history).unwrap_or(TxnWorkload::ListAppend);
    let txns = txn::Txns::parse(history, workload)?;
    let mut collector = Collector::new(history, &txns);
    let realtime = options.realtime_edges || options.consistency.needs_realtime();
    let process = options.process_edges || options.consistency.needs_process();
    let unknown_reason = if txns.txns.is_empty() {
        Some("the history holds no transactions".to_string())
    } else {
        let inferred = match workload {
            TxnWorkload::ListAppend => list_append::analyse(&txns, &mut collector),
            TxnWorkload::RwRegister => {
                rw_register::analyse(history, &txns, options, &mut collector)
            }
        };
        match inferred {
            Err(reason) => Some(reason),
            Ok(mut edges) => {
                if process {
                    graph::add_process_edges(history, &txns, &mut edges);
                }
                if realtime {
                    graph::add_realtime_edges(history, &txns, &mut edges);
                }
                let search = graph::CycleSearch {
                    consistency: options.consistency,
                    process,
                    realtime,
                    budget_per_component: options.cycle_search_budget_per_component,
                    deadline,
                };
                search.run(&edges, &mut collector)
            }
        }
    };
    Ok(finish(
        collector,
        options.consistency,
        workload,
        txns.txns.len(),
        unknown_reason,
        started,
    ))
}

fn finish(
    collector: Collector,
    consistency: Consistency,
    workload: TxnWorkload,
    n_txns: usize,
    unknown_reason: Option<String>,
    started: Instant,
) -> ElleReport {
    let (anomalies, anomaly_counts) = collector.into_parts();
    let (failing, informational): (Vec<String>, Vec<String>) = anomalies
        .keys()
        .cloned()
        .partition(|name| consistency.forbids(name));
    let verdict = if !failing.is_empty() {
        Verdict::Invalid
    } else if unknown_reason.is_some() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    ElleReport {
        verdict,
        consistency,
        workload,
        n_txns,
        anomalies,
        anomaly_counts,
        failing,
        informational,
        unknown_reason,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}
