//! Multi-register transactions (Knossos's multi-register): `txn` of reads and writes on registers.

use super::{show, Effect, Model, ModelInstance, PartitionKey, ShapeError, ValueInterner};
use crate::linear::search::PartitionOp;
use crate::ops::Operation;
use hashbrown::HashSet;
use serde_json::Value;
use std::collections::HashMap;

/// Registers named by keys, all starting at `initial`, read and written by transactions
/// `[["read", k, v], ["write", k, v], ...]` that take effect atomically.
///
/// Transactions span keys, so the history is one partition.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiRegisterModel {
    /// The value of every register before any write.
    pub initial: Value,
}

impl Model for MultiRegisterModel {
    type Instance = MultiRegisterInstance;

    fn name(&self) -> String {
        format!("multi-register({})", show(&self.initial))
    }

    fn partition(&self, _op: &Operation) -> PartitionKey {
        None
    }

    fn instance(&self) -> MultiRegisterInstance {
        let mut values = ValueInterner::default();
        let initial = values.intern(&self.initial);
        MultiRegisterInstance {
            values,
            keys: HashMap::new(),
            key_names: Vec::new(),
            initial,
            observed: HashSet::new(),
        }
    }
}

/// One micro-operation: a read (with the value read) or a write, of key number `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MicroOp {
    /// True for a write.
    pub write: bool,
    /// The key's number.
    pub key: u32,
    /// The value written or read.
    pub value: u32,
}

/// One partition's interned keys and values.
#[derive(Debug)]
pub struct MultiRegisterInstance {
    values: ValueInterner,
    keys: HashMap<String, u32>,
    key_names: Vec<String>,
    initial: u32,
    /// `(register, value)` pairs some `ok` transaction read (`prepare`).
    observed: HashSet<(u32, u32)>,
}

impl MultiRegisterInstance {
    fn key(&mut self, key: &Value) -> u32 {
        let name = show(key);
        if let Some(&id) = self.keys.get(&name) {
            return id;
        }
        let id = u32::try_from(self.key_names.len()).expect("fewer than 2^32 keys");
        self.keys.insert(name.clone(), id);
        self.key_names.push(name);
        id
    }
}

impl ModelInstance for MultiRegisterInstance {
    type State = Vec<u32>;
    type Op = Vec<MicroOp>;

    fn encode(&mut self, op: &Operation) -> Result<Option<Vec<MicroOp>>, ShapeError> {
        if op.f != "txn" {
            return Err(ShapeError::new(
                op,
                false,
                "f",
                format!(
                    "the multi-register model has no operation {:?}; expected txn",
                    op.f
                ),
            ));
        }
        let on_completion = op.output.is_some();
        let source = op.output.as_ref().unwrap_or(&op.input);
        let Some(micro_ops) = source.as_array() else {
            return Err(ShapeError::new(
                op,
                on_completion,
                "value",
                format!("a txn is a list of [f key value], found {}", show(source)),
            ));
        };
        let mut encoded = Vec::with_capacity(micro_ops.len());
        for micro_op in micro_ops {
            let (write, key, value) = match micro_op.as_array().map(Vec::as_slice) {
                Some([Value::String(f), key, value]) if f == "read" || f == "r" => {
                    (false, key, value)
                }
                Some([Value::String(f), key, value]) if f == "write" || f == "w" => {
                    (true, key, value)
                }
                _ => {
                    return Err(ShapeError::new(
                        op,
                        on_completion,
                        "value",
                        format!("expected [read|write key value], found {}", show(micro_op)),
                    ))
                }
            };
            // The reads of a transaction of unknown outcome are unknown; only its writes matter.
            if !write && !on_completion {
                continue;
            }
            let key = self.key(key);
            let value = self.values.intern(value);
            encoded.push(MicroOp { write, key, value });
        }
        Ok((!encoded.is_empty()).then_some(encoded))
    }

    fn init(&mut self) -> Vec<u32> {
        vec![self.initial; self.key_names.len()]
    }

    fn step(&mut self, state: &Vec<u32>, op: &Vec<MicroOp>) -> Option<Vec<u32>> {
        let mut next = state.clone();
        for micro_op in op {
            let slot = &mut next[micro_op.key as usize];
            if micro_op.write {
                *slot = micro_op.value;
            } else if *slot != micro_op.value {
                return None;
            }
        }
        Some(next)
    }

    fn describe_state(&self, state: &Vec<u32>) -> String {
        let pairs: Vec<String> = state
            .iter()
            .enumerate()
            .map(|(key, &value)| {
                format!("{} {}", self.key_names[key], show(self.values.value(value)))
            })
            .collect();
        format!("{{{}}}", pairs.join(", "))
    }

    fn effect(&self, op: &Vec<MicroOp>) -> Effect {
        if op.iter().all(|micro_op| !micro_op.write) {
            Effect::ReadOnly
        } else {
            Effect::Update
        }
    }

    fn prepare(&mut self, ops: &[PartitionOp<Vec<MicroOp>>]) {
        for op in ops.iter().filter(|op| op.ret.is_some()) {
            for micro_op in op.op.iter().filter(|micro_op| !micro_op.write) {
                self.observed.insert((micro_op.key, micro_op.value));
            }
        }
    }

    /// Rule 1 for registers, per register: a transaction is unobserved when no `ok`
    /// transaction reads any value it writes to the register it writes (of one of unknown
    /// outcome only its writes are kept). Each register it wrote then holds a value nobody
    /// reads until the next write to it, so every transaction in between leaves that
    /// register unread, and stays legal without it.
    fn unobserved(&self, op: &Vec<MicroOp>) -> bool {
        op.iter().all(|micro_op| {
            micro_op.write && !self.observed.contains(&(micro_op.key, micro_op.value))
        })
    }

    fn heap_bytes(&self) -> u64 {
        self.values.bytes() + self.observed.capacity() as u64 * 9
    }

    fn state_heap_bytes(&self, state: &Vec<u32>) -> u64 {
        state.capacity() as u64 * 4
    }
}
