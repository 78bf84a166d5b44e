//! Collects anomalies and explains them in words: transactions by operation id and process,
//! keys and values as the history spells them, one line per edge or fact.

use super::txn::Txns;
use super::{Anomaly, CycleStep, EdgeKind, ElleReport};
use crate::models::{show, show_key};
use crate::ops::Operations;
use std::collections::BTreeMap;

/// No value: the initial state of a key, before any write.
pub(crate) const INITIAL: u32 = u32::MAX;

/// Why one edge exists, in interned ids; what `a` and `b` mean depends on the edge kind.
///
/// ww: `b` was written after `a` on `key`. wr: the reader read `a` (the last element, for a
/// list). rw: the reader read version `a` (`INITIAL` for the initial state), which the writer
/// overwrote by writing `b`. Process and realtime edges carry nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Why {
    pub key: u32,
    pub a: u32,
    pub b: u32,
}

impl Why {
    /// The reason of an edge that needs none (process, realtime).
    pub const NONE: Why = Why {
        key: INITIAL,
        a: INITIAL,
        b: INITIAL,
    };
}

/// Gathers anomalies by name, keeping at most [`ElleReport::MAX_WITNESSES`] of each.
pub(crate) struct Collector<'a> {
    ops: &'a Operations,
    txns: &'a Txns,
    /// The verb of a write: "append" or "write".
    write_verb: &'static str,
    anomalies: BTreeMap<String, Vec<Anomaly>>,
    counts: BTreeMap<String, usize>,
}

impl<'a> Collector<'a> {
    pub fn new(ops: &'a Operations, txns: &'a Txns) -> Collector<'a> {
        let write_verb = if txns
            .mops
            .iter()
            .any(|m| m.kind == super::txn::MopKind::Write)
        {
            "write"
        } else {
            "append"
        };
        Collector {
            ops,
            txns,
            write_verb,
            anomalies: BTreeMap::new(),
            counts: BTreeMap::new(),
        }
    }

    /// True when another witness of `name` would still be kept.
    pub fn wants(&self, name: &str) -> bool {
        self.counts.get(name).copied().unwrap_or(0) < ElleReport::MAX_WITNESSES
    }

    /// Records one instance of `name`; `explain` builds the witness's lines and the txns
    /// involved, and runs only while witnesses of `name` are still kept.
    pub fn add(&mut self, name: &str, explain: impl FnOnce(&Self) -> (Vec<String>, Vec<u32>)) {
        let keep = self.wants(name);
        *self.counts.entry(name.to_string()).or_insert(0) += 1;
        if keep {
            let (explanation, txns) = explain(self);
            let ops = txns.iter().map(|&t| self.op_id(t)).collect();
            self.anomalies
                .entry(name.to_string())
                .or_default()
                .push(Anomaly {
                    name: name.to_string(),
                    explanation,
                    cycle: None,
                    ops,
                });
        }
    }

    /// Records a cycle anomaly: `steps` are (from txn, to txn, kind, why), in cycle order.
    pub fn add_cycle(&mut self, name: &str, steps: &[(u32, u32, EdgeKind, Why)]) {
        let keep = self.wants(name);
        *self.counts.entry(name.to_string()).or_insert(0) += 1;
        if !keep {
            return;
        }
        let cycle: Vec<CycleStep> = steps
            .iter()
            .map(|&(from, to, kind, why)| CycleStep {
                from: self.op_id(from),
                to: self.op_id(to),
                kind,
                why: self.explain_edge(from, to, kind, why),
            })
            .collect();
        let explanation = cycle.iter().map(|step| step.why.clone()).collect();
        let ops = cycle.iter().map(|step| step.from).collect();
        self.anomalies
            .entry(name.to_string())
            .or_default()
            .push(Anomaly {
                name: name.to_string(),
                explanation,
                cycle: Some(cycle),
                ops,
            });
    }

    pub fn into_parts(self) -> (BTreeMap<String, Vec<Anomaly>>, BTreeMap<String, usize>) {
        (self.anomalies, self.counts)
    }

    /// The `Operation` id of a transaction.
    pub fn op_id(&self, txn: u32) -> usize {
        self.txns.txns[txn as usize].op as usize
    }

    /// `T12 (process 4)`.
    pub fn txn_name(&self, txn: u32) -> String {
        let op = &self.ops.ops[self.op_id(txn)];
        format!("T{} (process {})", op.id, op.process)
    }

    /// A key as the history spells it.
    pub fn key(&self, key: u32) -> String {
        show_key(self.txns.keys.value(key))
    }

    /// A value as the history spells it; `nil` for the initial state.
    pub fn value(&self, value: u32) -> String {
        if value == INITIAL {
            "nil".to_string()
        } else {
            show(self.txns.values.value(value))
        }
    }

    /// A list of values: `[1, 2, 3]`.
    pub fn list(&self, values: &[u32]) -> String {
        let shown: Vec<String> = values.iter().map(|&v| self.value(v)).collect();
        format!("[{}]", shown.join(", "))
    }

    /// One edge in words: "T1 (process 2) < T3 (process 7) because ...".
    pub fn explain_edge(&self, from: u32, to: u32, kind: EdgeKind, why: Why) -> String {
        let (a, b) = (self.txn_name(from), self.txn_name(to));
        let short = |txn: u32| format!("T{}", self.op_id(txn));
        let verb = self.write_verb;
        let reason = match kind {
            EdgeKind::Ww => format!(
                "{}'s {verb} of {} to key {} follows {}'s {verb} of {} (ww)",
                short(to),
                self.value(why.b),
                self.key(why.key),
                short(from),
                self.value(why.a)
            ),
            EdgeKind::Wr => format!(
                "{} read {}'s {verb} of {} to key {} (wr)",
                short(to),
                short(from),
                self.value(why.a),
                self.key(why.key)
            ),
            EdgeKind::Rw => {
                let read = if why.a == INITIAL {
                    format!("read key {} in its initial state", self.key(why.key))
                } else if verb == "append" {
                    format!("read key {} up to {}", self.key(why.key), self.value(why.a))
                } else {
                    format!("read {} from key {}", self.value(why.a), self.key(why.key))
                };
                format!(
                    "{} {read}, before {}'s {verb} of {} (rw)",
                    short(from),
                    short(to),
                    self.value(why.b)
                )
            }
            EdgeKind::Process => {
                let op = &self.ops.ops[self.op_id(from)];
                format!(
                    "process {} ran {} before {} (process)",
                    op.process,
                    short(from),
                    short(to)
                )
            }
            EdgeKind::Realtime => format!(
                "{} completed before {} was invoked (realtime)",
                short(from),
                short(to)
            ),
        };
        format!("{a} < {b} because {reason}")
    }
}
