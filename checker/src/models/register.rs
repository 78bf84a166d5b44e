//! Register and compare-and-set register models: `read`, `write`, and `cas [expected new]`.

use super::{
    show, show_key, Effect, Model, ModelInstance, PartitionKey, ShapeError, ValueInterner,
};
use crate::linear::search::PartitionOp;
use crate::ops::Operation;
use hashbrown::HashSet;
use serde_json::Value;

/// A single register per key, optionally with compare-and-set.
///
/// Operations carrying a `key` are split per key (P-compositionality: a history of
/// independent registers is linearizable iff each register's sub-history is).
///
/// With a nil initial value, nil is an ordinary value: a read of nil is legal only while
/// nothing (or nil) was written, as in Porcupine's etcd model. With a non-nil initial value
/// the register is never nil, so a read that returned nil is treated as a read whose value
/// is unknown, as in Knossos's `cas-register`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterModel {
    /// The value before any write (`null` is nil).
    pub initial: Value,
    /// Whether `cas` is allowed.
    pub cas: bool,
}

impl Model for RegisterModel {
    type Instance = RegisterInstance;

    fn name(&self) -> String {
        let kind = if self.cas { "cas-register" } else { "register" };
        format!("{kind}({})", show(&self.initial).trim_matches('"'))
    }

    fn partition(&self, op: &Operation) -> PartitionKey {
        op.key.as_ref().map(show_key)
    }

    fn instance(&self) -> RegisterInstance {
        let mut interner = ValueInterner::default();
        let initial = interner.intern(&self.initial);
        RegisterInstance {
            interner,
            initial,
            cas: self.cas,
            has_cas: false,
        }
    }
}

/// One partition of a register history.
#[derive(Debug)]
pub struct RegisterInstance {
    interner: ValueInterner,
    initial: u32,
    cas: bool,
    /// Whether any compare-and-set was encoded: without one, nothing but a write changes
    /// the value.
    has_cas: bool,
}

/// A register operation with interned values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned the value.
    Read(u32),
    /// A write of the value.
    Write(u32),
    /// A compare-and-set from the first value to the second.
    Cas(u32, u32),
}

impl ModelInstance for RegisterInstance {
    type State = u32;
    type Op = RegisterOp;

    fn encode(&mut self, op: &Operation) -> Result<Option<RegisterOp>, ShapeError> {
        match op.f.as_str() {
            "read" | "r" | "get" => match &op.output {
                // A read of unknown outcome has no effect and constrains nothing.
                None => Ok(None),
                // Knossos's convention: when the register starts with a value, it is never
                // nil, so a read that returned nil is a read whose value is unknown.
                Some(Value::Null) if self.initial != ValueInterner::NULL => Ok(None),
                Some(value) => Ok(Some(RegisterOp::Read(self.interner.intern(value)))),
            },
            "write" | "w" | "put" => Ok(Some(RegisterOp::Write(self.interner.intern(&op.input)))),
            "cas" if self.cas => match op.input.as_array().map(Vec::as_slice) {
                Some([expected, new]) => {
                    self.has_cas = true;
                    Ok(Some(RegisterOp::Cas(
                        self.interner.intern(expected),
                        self.interner.intern(new),
                    )))
                }
                _ => Err(ShapeError::new(
                    op,
                    false,
                    "value",
                    format!("cas expects [expected new], found {}", show(&op.input)),
                )),
            },
            other => {
                let expected = if self.cas {
                    "read|write|cas"
                } else {
                    "read|write"
                };
                Err(ShapeError::new(
                    op,
                    false,
                    "f",
                    format!("the register model has no operation {other:?}; expected {expected}"),
                ))
            }
        }
    }

    fn init(&mut self) -> u32 {
        self.initial
    }

    fn step(&mut self, state: &u32, op: &RegisterOp) -> Option<u32> {
        match *op {
            RegisterOp::Read(value) => (value == *state).then_some(*state),
            RegisterOp::Write(value) => Some(value),
            RegisterOp::Cas(expected, new) => (expected == *state).then_some(new),
        }
    }

    fn describe_state(&self, state: &u32) -> String {
        show(self.interner.value(*state))
    }

    fn effect(&self, op: &RegisterOp) -> Effect {
        match op {
            RegisterOp::Read(_) => Effect::ReadOnly,
            RegisterOp::Write(_) => Effect::Reset,
            RegisterOp::Cas(..) => Effect::Update,
        }
    }

    /// Without compare-and-set there are no updates, so the value stays as it is until a
    /// write: a read of anything else is out of reach.
    fn doomed(&mut self, state: &u32, observer: &RegisterOp) -> bool {
        match observer {
            RegisterOp::Read(value) => !self.has_cas && value != state,
            _ => false,
        }
    }

    fn may_rescue(&mut self, reset: &RegisterOp, observer: &RegisterOp) -> bool {
        match (reset, observer) {
            (RegisterOp::Write(written), RegisterOp::Read(read)) => self.has_cas || written == read,
            _ => true,
        }
    }

    /// Rule 1 for registers: an operation of unknown outcome that sets value `v` (a write, or
    /// a compare-and-set to `v`) is unobserved when no `ok` read returned `v` and no
    /// compare-and-set expects `v`. In a linearization that places it, the register holds
    /// `v` until the next write or successful compare-and-set; in between, a read would have
    /// to return `v` and a compare-and-set would have to expect it, and none does, so only
    /// writes can follow it, and those are legal whatever the register held. Dropping it
    /// leaves every other operation legal.
    fn unobserved(&mut self, ops: &[PartitionOp<RegisterOp>]) -> Vec<bool> {
        let mut observed: HashSet<u32> = HashSet::new();
        for op in ops {
            match op.op {
                RegisterOp::Read(value) if op.ret.is_some() => {
                    observed.insert(value);
                }
                RegisterOp::Cas(expected, _) => {
                    observed.insert(expected);
                }
                _ => {}
            }
        }
        ops.iter()
            .map(|op| {
                op.ret.is_none()
                    && match op.op {
                        RegisterOp::Write(value) | RegisterOp::Cas(_, value) => {
                            !observed.contains(&value)
                        }
                        RegisterOp::Read(_) => false,
                    }
            })
            .collect()
    }

    fn heap_bytes(&self) -> u64 {
        self.interner.bytes()
    }
}
