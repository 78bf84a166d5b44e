//! Key-value model of Porcupine's kv tests: `get`, `put` and `append` on string values.

use super::{show, show_key, Model, ModelInstance, PartitionKey, ShapeError, ValueInterner};
use crate::ops::Operation;
use hashbrown::HashMap;
use smallvec::SmallVec;
use std::hash::{Hash, Hasher};

/// A map from keys to strings, initially empty strings.
///
/// With `split_by_key` (the default), each key is its own partition and the state is one
/// string. Without it the whole history is one partition and the state is a map of every
/// key, which is what Porcupine's unpartitioned benchmark checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvModel {
    /// Check each key separately (P-compositionality).
    pub split_by_key: bool,
}

impl Model for KvModel {
    type Instance = KvInstance;

    fn name(&self) -> String {
        if self.split_by_key {
            "kv".to_string()
        } else {
            "kv-single".to_string()
        }
    }

    fn partition(&self, op: &Operation) -> PartitionKey {
        if self.split_by_key {
            op.key.as_ref().map(show_key)
        } else {
            None
        }
    }

    fn instance(&self) -> KvInstance {
        let mut strings = ValueInterner::default();
        let empty = strings.intern_str("");
        KvInstance {
            strings,
            keys: HashMap::new(),
            key_names: Vec::new(),
            appends: HashMap::new(),
            empty,
        }
    }
}

/// One partition of a kv history. Strings are interned and an append's result is memoised.
#[derive(Debug)]
pub struct KvInstance {
    strings: ValueInterner,
    keys: HashMap<String, u16>,
    key_names: Vec<String>,
    appends: HashMap<(u32, u32), u32>,
    empty: u32,
}

/// A kv operation on key number `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// A get that returned the string.
    Get {
        /// The key's number.
        key: u16,
        /// The string read.
        value: u32,
    },
    /// A put of the string.
    Put {
        /// The key's number.
        key: u16,
        /// The string written.
        value: u32,
    },
    /// An append of the string.
    Append {
        /// The key's number.
        key: u16,
        /// The suffix appended.
        value: u32,
    },
}

/// The state: the string of every key, by key number, with a hash kept up to date.
///
/// The strings sit inline for up to 16 keys, so a step copies a few cache lines and never
/// allocates, and the hash is updated in O(1) when one key changes (Zobrist hashing).
///
/// Invariant: `hash` is the XOR of `slot_hash(key, values[key])` over every key whose string
/// is not the empty one.
#[derive(Debug)]
pub struct KvState {
    hash: u64,
    values: SmallVec<[u32; 16]>,
}

impl Clone for KvState {
    fn clone(&self) -> Self {
        // `from_slice` copies in one go; the derived clone extends element by element.
        KvState {
            hash: self.hash,
            values: SmallVec::from_slice(&self.values),
        }
    }
}

impl PartialEq for KvState {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.values == other.values
    }
}

impl Eq for KvState {}

impl Hash for KvState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal states have equal hashes, so hashing the hash alone is consistent with Eq.
        state.write_u64(self.hash);
    }
}

/// The Zobrist key of one key holding one string.
fn slot_hash(key: u16, value: u32) -> u64 {
    super::mix64((u64::from(key) << 32) | u64::from(value))
}

impl KvInstance {
    fn key(&mut self, op: &Operation) -> Result<u16, ShapeError> {
        let name = match &op.key {
            Some(key) => show_key(key),
            None => {
                return Err(ShapeError::new(
                    op,
                    false,
                    "key",
                    "kv operations need a key".into(),
                ))
            }
        };
        if let Some(&id) = self.keys.get(&name) {
            return Ok(id);
        }
        let id = u16::try_from(self.key_names.len()).map_err(|_| {
            ShapeError::new(
                op,
                false,
                "key",
                "more than 65536 keys in one partition".into(),
            )
        })?;
        self.keys.insert(name.clone(), id);
        self.key_names.push(name);
        Ok(id)
    }

    fn string(&mut self, op: &Operation, on_completion: bool) -> Result<u32, ShapeError> {
        let value = if on_completion {
            op.output.as_ref()
        } else {
            Some(&op.input)
        };
        match value {
            Some(serde_json::Value::String(text)) => Ok(self.strings.intern_str(text)),
            Some(serde_json::Value::Null) => Ok(self.empty),
            other => Err(ShapeError::new(
                op,
                on_completion,
                "value",
                format!(
                    "kv values are strings, found {}",
                    other.map(show).unwrap_or_default()
                ),
            )),
        }
    }

    fn set(&self, state: &KvState, key: u16, value: u32) -> KvState {
        let mut next = state.clone();
        let old = next.values[key as usize];
        if old != self.empty {
            next.hash ^= slot_hash(key, old);
        }
        if value != self.empty {
            next.hash ^= slot_hash(key, value);
        }
        next.values[key as usize] = value;
        next
    }
}

impl ModelInstance for KvInstance {
    type State = KvState;
    type Op = KvOp;

    fn encode(&mut self, op: &Operation) -> Result<Option<KvOp>, ShapeError> {
        let key = self.key(op)?;
        match op.f.as_str() {
            "get" | "read" => match op.output {
                None => Ok(None),
                Some(_) => Ok(Some(KvOp::Get {
                    key,
                    value: self.string(op, true)?,
                })),
            },
            "put" | "write" => Ok(Some(KvOp::Put {
                key,
                value: self.string(op, false)?,
            })),
            "append" => Ok(Some(KvOp::Append {
                key,
                value: self.string(op, false)?,
            })),
            other => Err(ShapeError::new(
                op,
                false,
                "f",
                format!("the kv model has no operation {other:?}; expected get|put|append"),
            )),
        }
    }

    fn init(&mut self) -> KvState {
        KvState {
            hash: 0,
            values: SmallVec::from_elem(self.empty, self.key_names.len()),
        }
    }

    fn step(&mut self, state: &KvState, op: &KvOp) -> Option<KvState> {
        match *op {
            KvOp::Get { key, value } => {
                (state.values[key as usize] == value).then(|| state.clone())
            }
            KvOp::Put { key, value } => Some(self.set(state, key, value)),
            KvOp::Append { key, value } => {
                let old = state.values[key as usize];
                let new = match self.appends.get(&(old, value)) {
                    Some(&new) => new,
                    None => {
                        let text =
                            format!("{}{}", self.strings.text(old), self.strings.text(value));
                        let new = self.strings.intern_str(&text);
                        self.appends.insert((old, value), new);
                        new
                    }
                };
                Some(self.set(state, key, new))
            }
        }
    }

    fn describe_state(&self, state: &KvState) -> String {
        let pairs: Vec<String> = state
            .values
            .iter()
            .enumerate()
            .filter(|&(_, &value)| value != self.empty)
            .map(|(key, &value)| format!("{}: {:?}", self.key_names[key], self.strings.text(value)))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    }
}
