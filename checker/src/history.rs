//! The history model: events as recorded (`Invoke | Ok | Fail | Info`), and the header line.
//!
//! This is the contract between `workload` (which writes histories) and `checker` (which
//! reads them). The on-disk form is JSON Lines, version 1, described in `DESIGN.md`; the
//! reader and writer live in [`crate::jsonl`]. The importers of other formats produce the
//! same [`Event`] values.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// The kind of an event, following Jepsen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The start of an operation.
    Invoke,
    /// The operation took effect, with the completion's value as its result.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// The outcome is unknown: the operation may take effect at any later time, or never.
    Info,
}

impl EventType {
    /// The lowercase name used in every format.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }

    /// Parses the name of a type, as written in JSON (`ok`) or EDN/logs without the colon.
    pub fn parse(name: &str) -> Option<EventType> {
        match name {
            "invoke" => Some(EventType::Invoke),
            "ok" => Some(EventType::Ok),
            "fail" => Some(EventType::Fail),
            "info" => Some(EventType::Info),
            _ => None,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who performed an event: a client process, or a named one such as `"nemesis"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Process {
    /// A client process. Invariant: one process has at most one operation outstanding.
    Client(u64),
    /// A named process; `"nemesis"` injects faults.
    Named(String),
}

impl Process {
    /// The process that injects faults.
    pub fn nemesis() -> Process {
        Process::Named("nemesis".to_string())
    }

    /// True for the fault injector, whose events are not client operations.
    pub fn is_nemesis(&self) -> bool {
        matches!(self, Process::Named(name) if name == "nemesis")
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(id) => write!(f, "{id}"),
            Process::Named(name) => f.write_str(name),
        }
    }
}

/// One line of a history: an invocation, a completion, or a nemesis event.
///
/// Field order is the on-disk order of DESIGN.md, so that writing an event read from a
/// canonical file reproduces the line byte for byte.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Dense position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the run started (monotonic), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
    /// `invoke`, `ok`, `fail` or `info`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The process that performed the event.
    pub process: Process,
    /// The operation's function: `read`, `write`, `cas`, `txn`, `start-partition`, ...
    pub f: String,
    /// The key the operation touches, for keyed workloads.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub key: Option<Value>,
    /// The operation's argument (on invoke) or result (on completion). `Some(Null)` is an
    /// explicit `null`; `None` means the field was absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub value: Option<Value>,
    /// The node that served the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The error text of a `fail` or `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// A transaction id.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub tx: Option<Value>,
    /// Fields this version does not know, kept so that nothing is lost on a round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The 1-based line of the source file this event came from (0 when built in memory).
    #[serde(skip)]
    pub line: u64,
}

/// Deserializes a present field as `Some`, even when it is `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Event {
    /// A client or nemesis event with no optional fields set.
    pub fn new(index: u64, kind: EventType, process: Process, f: impl Into<String>) -> Event {
        Event {
            index,
            time: None,
            kind,
            process,
            f: f.into(),
            key: None,
            value: None,
            node: None,
            error: None,
            tx: None,
            extra: Map::new(),
            line: 0,
        }
    }

    /// The value, with an absent field read as `null`.
    pub fn value_or_null(&self) -> &Value {
        const NULL: Value = Value::Null;
        self.value.as_ref().unwrap_or(&NULL)
    }
}

/// The optional first line of a history, naming the workload, the seed and the nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The format version; 1 for this one.
    pub helios_history: u64,
    /// The workload that produced the history (`register`, `set`, `list-append`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// The seed that drove every random choice of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The nodes of the cluster under test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<Value>>,
    /// Other header fields (the model, the nemesis, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A whole history in memory: the header, if any, and the events in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The header line, when the history has one.
    pub header: Option<Header>,
    /// The events, in the order the recorder observed them.
    pub events: Vec<Event>,
}
