//! Register and compare-and-set register models: `read`, `write`, and `cas [expected new]`.

use super::{show, show_key, Model, ModelInstance, PartitionKey, ShapeError, ValueInterner};
use crate::ops::Operation;
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
        }
    }
}

/// One partition of a register history.
#[derive(Debug)]
pub struct RegisterInstance {
    interner: ValueInterner,
    initial: u32,
    cas: bool,
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
                Some([expected, new]) => Ok(Some(RegisterOp::Cas(
                    self.interner.intern(expected),
                    self.interner.intern(new),
                ))),
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
}
