//! Sequential specifications (models) that the linearizability search steps through.
//!
//! A [`Model`] says how to split a history into independent partitions (P-compositionality)
//! and makes one [`ModelInstance`] per partition. An instance encodes operations into a
//! compact form, and steps a compact state. Instances own their interners, so partitions can
//! be checked in parallel without sharing anything mutable.

mod intern;
mod kv;
mod multi_register;
mod mutex;
mod register;
mod set;
mod spec;

pub use intern::ValueInterner;
pub use kv::KvModel;
pub use multi_register::MultiRegisterModel;
pub use mutex::MutexModel;
pub use register::RegisterModel;
pub use set::SetModel;
pub use spec::ModelSpec;

use crate::linear::search::PartitionOp;
use crate::ops::Operation;
use serde_json::Value;
use std::fmt::Debug;
use std::hash::Hash;

/// An operation whose value does not have the shape the model needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    /// The source line of the offending event.
    pub line: u64,
    /// The field at fault.
    pub field: &'static str,
    /// What was expected and what was found.
    pub message: String,
}

impl ShapeError {
    /// A shape error in the invoke (`output == false`) or the completion of `op`.
    pub fn new(op: &Operation, on_completion: bool, field: &'static str, message: String) -> Self {
        let line = if on_completion {
            op.complete_line
        } else {
            op.invoke_line
        };
        ShapeError {
            line,
            field,
            message,
        }
    }
}

/// A key that names one independent partition of a history.
pub type PartitionKey = Option<String>;

/// A sequential specification, and how to split histories for it.
pub trait Model: Send + Sync {
    /// The per-partition checker state.
    type Instance: ModelInstance;

    /// A short name for reports: `cas-register(nil)`, `kv`, ...
    fn name(&self) -> String;

    /// The partition an operation belongs to; every operation of one partition is checked
    /// together and partitions are independent. `None` puts everything in one partition.
    fn partition(&self, op: &Operation) -> PartitionKey;

    /// A fresh instance for one partition.
    fn instance(&self) -> Self::Instance;
}

/// How an operation changes the state of its object, for the search's pruning rules
/// (`linear::search`, rules 2 and 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It never changes the state (a read).
    ReadOnly,
    /// It sets its object's state whatever that state was (a write, a put).
    Reset,
    /// Anything else, or not known.
    Update,
}

/// A model specialised to one partition: it encodes operations and steps states.
pub trait ModelInstance: Send {
    /// The model state. Cloned on every step, so keep it small.
    type State: Clone + Eq + Hash + Debug + Send;
    /// An operation in compact form: its input and, when known, its output.
    type Op: Clone + Debug + Send;

    /// Encodes an operation that did not fail. `Ok(None)` drops it: an operation with an
    /// unknown outcome and no effect on the state (an `info` read) constrains nothing.
    fn encode(&mut self, op: &Operation) -> Result<Option<Self::Op>, ShapeError>;

    /// The initial state.
    fn init(&mut self) -> Self::State;

    /// Applies `op` to `state`. `None` means the operation is illegal in that state (its
    /// output disagrees with the specification). For an operation of unknown outcome the
    /// output is unchecked; it is stepped as though it took effect.
    fn step(&mut self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;

    /// A human form of a state, for witnesses and the linearization view.
    fn describe_state(&self, state: &Self::State) -> String;

    /// How `op` changes the state. `Update` (the default) is always safe: it turns rules 2
    /// and 3 of the search off for the operation.
    fn effect(&self, _op: &Self::Op) -> Effect {
        Effect::Update
    }

    /// The independent part of the state that `op` touches: the key of a kv-single partition.
    /// Operations on different objects never see each other's effects. Small and dense.
    fn object(&self, _op: &Self::Op) -> u32 {
        0
    }

    /// True only when no sequence of `Update` operations on `observer`'s object can take
    /// `state` to a state in which `observer` (a `ReadOnly` operation) is legal. `false` (the
    /// default) is always safe.
    fn doomed(&mut self, _state: &Self::State, _observer: &Self::Op) -> bool {
        false
    }

    /// False only when, after `reset` (a `Reset` operation on `observer`'s object), no
    /// sequence of `Update` operations can reach a state in which `observer` is legal. `true`
    /// (the default) is always safe.
    fn may_rescue(&mut self, _reset: &Self::Op, _observer: &Self::Op) -> bool {
        true
    }

    /// Called once with every operation of the partition before the search starts, so that
    /// the model can learn what the operations observe (for [`ModelInstance::unobserved`] and
    /// [`ModelInstance::garbage`]).
    fn prepare(&mut self, _ops: &[PartitionOp<Self::Op>]) {}

    /// True when no operation of the partition could ever observe `op`'s effect: an `info`
    /// one may then be linearized "never" (rule 1), and an `ok` one is wasted wherever its
    /// object holds garbage (rule 4). `false` (the default) is always safe.
    fn unobserved(&self, _op: &Self::Op) -> bool {
        false
    }

    /// True when the object `op` touches holds, in `state`, a value that no operation of the
    /// partition can observe, so that every such value behaves alike from here on (the
    /// state's equality treats them as one). `false` (the default) is always safe.
    fn garbage(&self, _state: &Self::State, _op: &Self::Op) -> bool {
        false
    }

    /// Heap bytes the instance holds (interners, caches), for the memory cap.
    fn heap_bytes(&self) -> u64 {
        0
    }

    /// Heap bytes one state holds beyond its inline size, for the memory cap.
    fn state_heap_bytes(&self, _state: &Self::State) -> u64 {
        0
    }
}

/// A 64-bit mix (SplitMix64's finaliser): spreads a key into a well-distributed hash.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Renders a value the way reports show it: `nil` for null, JSON otherwise.
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_string(),
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

/// Renders a key: a string bare (`k7`), anything else as JSON. A string that would read as
/// another JSON value (`"1"`, `"null"`) keeps its quotes, so that distinct keys never share a
/// name, and so never share a partition.
pub fn show_key(key: &Value) -> String {
    match key {
        Value::String(text) => {
            let ambiguous = text.is_empty()
                || matches!(text.as_str(), "null" | "true" | "false" | "nil")
                || text.starts_with(|c: char| {
                    c.is_ascii_digit() || matches!(c, '-' | '[' | '{' | '"')
                });
            if ambiguous {
                format!("{text:?}")
            } else {
                text.clone()
            }
        }
        other => other.to_string(),
    }
}

/// Describes an operation: `write 3`, `read k7 → 3`, `cas [1,2] (outcome unknown)`.
pub fn describe_op(op: &Operation) -> String {
    let mut text = op.f.clone();
    if let Some(key) = &op.key {
        text.push_str(&format!(" {}", show_key(key)));
    }
    let is_read = matches!(op.f.as_str(), "read" | "r" | "get");
    // A read's invocation value is not an argument (Knossos histories sometimes carry one).
    if !op.input.is_null() && !is_read {
        text.push_str(&format!(" {}", show(&op.input)));
    }
    match (&op.output, op.outcome) {
        (Some(output), _) if is_read || output != &op.input => {
            text.push_str(&format!(" → {}", show(output)))
        }
        (_, outcome) if outcome.is_unknown() => text.push_str(" (outcome unknown)"),
        _ => {}
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn distinct_keys_never_share_a_name() {
        assert_eq!(show_key(&json!("k7")), "k7");
        assert_eq!(show_key(&json!(1)), "1");
        assert_eq!(show_key(&json!("1")), "\"1\"");
        assert_eq!(show_key(&json!(null)), "null");
        assert_eq!(show_key(&json!("null")), "\"null\"");
        assert_eq!(show_key(&json!([1, 2])), "[1,2]");
        assert_eq!(show_key(&json!("[1,2]")), "\"[1,2]\"");
    }
}
