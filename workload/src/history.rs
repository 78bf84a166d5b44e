//! The history event model and its JSON Lines encoding (DESIGN.md, "The history format (JSON Lines, version 1)").
//!
//! Field order on the wire is fixed by the declaration order of [`Event`]:
//! `index, time, type, process, f, key, value, node, error`.

use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// The version written in the header's `helios_history` field.
pub const HISTORY_FORMAT_VERSION: u64 = 1;

/// Jepsen's four event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// An operation starts.
    Invoke,
    /// The operation took effect.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome is unknown: the operation may take effect at any later time, or never.
    Info,
}

impl EventType {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }
}

/// Who issued an event: a logical client process, or the nemesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    /// A client process. Invariant: a process has at most one operation outstanding,
    /// and a process that got `info` never invokes again.
    Client(u64),
    /// The fault injector.
    Nemesis,
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Client(u64),
            Name(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Client(id) => Ok(Process::Client(id)),
            Wire::Name(name) if name == "nemesis" => Ok(Process::Nemesis),
            Wire::Name(name) => Err(serde::de::Error::custom(format!(
                "process {name:?}: expected a client number or \"nemesis\""
            ))),
        }
    }
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(id) => serializer.serialize_u64(*id),
            Process::Nemesis => serializer.serialize_str("nemesis"),
        }
    }
}

/// The operation's function, `f` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    /// Read a register; invokes with `null` and completes with the value read.
    Read,
    /// Write an integer to a register.
    Write,
    /// Compare-and-set: the value is `[expected, new]`.
    Cas,
    /// Add one element to a set (the set workload's insert of a unique id).
    Add,
    /// A transaction of micro-operations (`["r", k, v]`, `["w", k, v]`, `["append", k, v]`).
    Txn,
    /// A bank transfer: the value is `{"from": a, "to": b, "amount": n}`.
    Transfer,
    /// The nemesis cut the network into the groups in `value`.
    StartPartition,
    /// The nemesis healed the network.
    StopPartition,
    /// The nemesis killed a node.
    Kill,
    /// The nemesis restarted a killed node.
    Restart,
    /// The nemesis paused a node.
    Pause,
    /// The nemesis resumed a paused node.
    Resume,
    /// The nemesis added a storage node; the rebalance it starts runs in the background, so
    /// the fault has no end event.
    AddNode,
}

impl Function {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
            Function::Add => "add",
            Function::Txn => "txn",
            Function::Transfer => "transfer",
            Function::StartPartition => "start-partition",
            Function::StopPartition => "stop-partition",
            Function::Kill => "kill",
            Function::Restart => "restart",
            Function::Pause => "pause",
            Function::Resume => "resume",
            Function::AddNode => "add-node",
        }
    }

    /// Whether this function starts a fault (as opposed to ending one or being a client operation).
    /// `add-node` starts a fault that no event ends: its rebalance runs to the end of the run.
    pub fn starts_fault(self) -> bool {
        matches!(
            self,
            Function::StartPartition | Function::Kill | Function::Pause | Function::AddNode
        )
    }

    /// Whether this function ends a fault.
    pub fn ends_fault(self) -> bool {
        matches!(
            self,
            Function::StopPartition | Function::Restart | Function::Resume
        )
    }
}

/// One line of the history, in wire order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Dense position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the run started, from a monotonic clock.
    #[serde(rename = "time")]
    pub time_ns: u64,
    /// Invoke, ok, fail or info.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The client process, or the nemesis.
    pub process: Process,
    /// The operation.
    pub f: Function,
    /// The register's key; absent for nemesis events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The operation's value (`null` for a read's invocation).
    pub value: serde_json::Value,
    /// The node that served the operation, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The error text of a `fail` or `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An event before the recorder gave it an index and a time.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    /// Invoke, ok, fail or info.
    pub event_type: EventType,
    /// The client process, or the nemesis.
    pub process: Process,
    /// The operation.
    pub f: Function,
    /// The register's key; `None` for nemesis events.
    pub key: Option<String>,
    /// The operation's value.
    pub value: serde_json::Value,
    /// The node that served the operation.
    pub node: Option<String>,
    /// The error text of a `fail` or `info`.
    pub error: Option<String>,
}

impl EventDraft {
    /// A nemesis `info` event with its targets in `value`.
    pub fn nemesis(f: Function, value: serde_json::Value) -> Self {
        EventDraft {
            event_type: EventType::Info,
            process: Process::Nemesis,
            f,
            key: None,
            value,
            node: None,
            error: None,
        }
    }
}

/// The first line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryHeader {
    /// Always [`HISTORY_FORMAT_VERSION`].
    pub helios_history: u64,
    /// The workload's name, e.g. `register`.
    pub workload: String,
    /// The seed that drove every random choice of the run.
    pub seed: u64,
    /// The names of the cluster's nodes, as used in `node` and in nemesis targets.
    pub nodes: Vec<String>,
    /// The model the checker should use for this workload.
    pub model: String,
    /// The keys the clients used.
    pub keys: Vec<String>,
    /// The number of concurrent logical clients.
    pub concurrency: usize,
    /// The fault kinds the nemesis could choose from.
    pub nemesis: Vec<String>,
    /// Whether the cluster ran with stale reads enabled (a deliberately broken mode).
    pub unsafe_stale_reads: bool,
}

/// The wire name of a node, e.g. `m2` for metadata node 2.
pub fn node_name(id: u64) -> String {
    format!("m{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_are_written_in_wire_order() {
        let event = Event {
            index: 1,
            time_ns: 2_250_911,
            event_type: EventType::Ok,
            process: Process::Client(3),
            f: Function::Write,
            key: Some("k7".to_owned()),
            value: serde_json::json!(5),
            node: Some(node_name(1)),
            error: None,
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"index":1,"time":2250911,"type":"ok","process":3,"f":"write","key":"k7","value":5,"node":"m1"}"#
        );
    }

    #[test]
    fn nemesis_events_have_no_key_and_a_string_process() {
        let draft = EventDraft::nemesis(
            Function::StartPartition,
            serde_json::json!({"groups": [["m0"], ["m1", "m2"]]}),
        );
        let event = Event {
            index: 0,
            time_ns: 7,
            event_type: draft.event_type,
            process: draft.process,
            f: draft.f,
            key: draft.key,
            value: draft.value,
            node: None,
            error: None,
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"index":0,"time":7,"type":"info","process":"nemesis","f":"start-partition","value":{"groups":[["m0"],["m1","m2"]]}}"#
        );
    }

    #[test]
    fn function_names_match_serde_names() {
        for f in [
            Function::Read,
            Function::Write,
            Function::Cas,
            Function::Add,
            Function::Txn,
            Function::Transfer,
            Function::StartPartition,
            Function::StopPartition,
            Function::Kill,
            Function::Restart,
            Function::Pause,
            Function::Resume,
            Function::AddNode,
        ] {
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::json!(f.as_str())
            );
        }
    }
}
