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
            observed: HashSet::new(),
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
    /// Values that some `ok` read returned or some compare-and-set expects (`prepare`).
    observed: HashSet<u32>,
}

/// Set on a state's value when no operation of the partition can observe it (garbage).
const GARBAGE: u32 = 1 << 31;

/// The register's value, marked when it is garbage: no `ok` read returns it and no
/// compare-and-set expects it, so that all such values behave alike from here on (reads and
/// compare-and-sets fail, writes replace them). Equality and hashing treat them as one value.
#[derive(Clone, Copy, Debug)]
pub struct RegisterState(u32);

impl RegisterState {
    fn canonical(self) -> u32 {
        if self.0 & GARBAGE != 0 {
            GARBAGE
        } else {
            self.0
        }
    }
}

impl PartialEq for RegisterState {
    fn eq(&self, other: &Self) -> bool {
        self.canonical() == other.canonical()
    }
}

impl Eq for RegisterState {}

impl std::hash::Hash for RegisterState {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical().hash(state);
    }
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

impl RegisterInstance {
    /// The state holding `value`, marked when it is garbage.
    fn holding(&self, value: u32) -> RegisterState {
        assert!(value < GARBAGE, "fewer than 2^31 distinct register values");
        if self.observed.contains(&value) {
            RegisterState(value)
        } else {
            RegisterState(value | GARBAGE)
        }
    }
}

impl ModelInstance for RegisterInstance {
    type State = RegisterState;
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

    fn init(&mut self) -> RegisterState {
        self.holding(self.initial)
    }

    fn step(&mut self, state: &RegisterState, op: &RegisterOp) -> Option<RegisterState> {
        // Values read or expected are never garbage, so comparing the marked value is exact.
        match *op {
            RegisterOp::Read(value) => (value == state.0).then_some(*state),
            RegisterOp::Write(value) => Some(self.holding(value)),
            RegisterOp::Cas(expected, new) => (expected == state.0).then(|| self.holding(new)),
        }
    }

    fn describe_state(&self, state: &RegisterState) -> String {
        show(self.interner.value(state.0 & !GARBAGE))
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
    fn doomed(&mut self, state: &RegisterState, observer: &RegisterOp) -> bool {
        match observer {
            RegisterOp::Read(value) => !self.has_cas && *value != state.0,
            _ => false,
        }
    }

    fn may_rescue(&mut self, reset: &RegisterOp, observer: &RegisterOp) -> bool {
        match (reset, observer) {
            (RegisterOp::Write(written), RegisterOp::Read(read)) => self.has_cas || written == read,
            _ => true,
        }
    }

    fn prepare(&mut self, ops: &[PartitionOp<RegisterOp>]) {
        for op in ops {
            match op.op {
                RegisterOp::Read(value) if op.ret.is_some() => {
                    self.observed.insert(value);
                }
                RegisterOp::Cas(expected, _) => {
                    self.observed.insert(expected);
                }
                _ => {}
            }
        }
    }

    /// An operation that sets value `v` (a write, or a compare-and-set to `v`) is unobserved
    /// when no `ok` read returned `v` and no compare-and-set expects `v`. Wherever it is
    /// placed, the register holds `v` until the next write or compare-and-set; in between, a
    /// read would have to return `v` and a compare-and-set would have to expect it, and none
    /// does, so only writes can follow it, and those are legal whatever the register held.
    /// Rule 1: one of unknown outcome may be dropped. Rule 4: on garbage it changes nothing.
    fn unobserved(&self, op: &RegisterOp) -> bool {
        match op {
            RegisterOp::Write(value) | RegisterOp::Cas(_, value) => !self.observed.contains(value),
            RegisterOp::Read(_) => false,
        }
    }

    fn garbage(&self, state: &RegisterState, _op: &RegisterOp) -> bool {
        state.0 & GARBAGE != 0
    }

    fn heap_bytes(&self) -> u64 {
        self.interner.bytes() + self.observed.capacity() as u64 * 5
    }
}
