//! Set model: `add` an element, `read` the whole set.

use super::{
    show, show_key, Effect, Model, ModelInstance, PartitionKey, ShapeError, ValueInterner,
};
use crate::linear::search::PartitionOp;
use crate::ops::Operation;
use hashbrown::HashSet;

/// A set per key, initially empty. A read returns every element, in any order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetModel;

impl Model for SetModel {
    type Instance = SetInstance;

    fn name(&self) -> String {
        "set".to_string()
    }

    fn partition(&self, op: &Operation) -> PartitionKey {
        op.key.as_ref().map(show_key)
    }

    fn instance(&self) -> SetInstance {
        SetInstance {
            elements: ValueInterner::default(),
            observed: HashSet::new(),
        }
    }
}

/// One partition's interned elements.
#[derive(Debug)]
pub struct SetInstance {
    elements: ValueInterner,
    /// Elements some `ok` read holds (`prepare`).
    observed: HashSet<u32>,
}

/// A set operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetOp {
    /// Adds an element.
    Add(u32),
    /// A read that returned these elements, sorted (duplicates kept, so that they fail).
    Read(Vec<u32>),
}

impl ModelInstance for SetInstance {
    /// The elements, sorted.
    type State = Vec<u32>;
    type Op = SetOp;

    fn encode(&mut self, op: &Operation) -> Result<Option<SetOp>, ShapeError> {
        match op.f.as_str() {
            "add" => Ok(Some(SetOp::Add(self.elements.intern(&op.input)))),
            "read" => {
                let Some(output) = &op.output else {
                    return Ok(None);
                };
                let Some(items) = output.as_array() else {
                    return Err(ShapeError::new(
                        op,
                        true,
                        "value",
                        format!("a set read returns a list, found {}", show(output)),
                    ));
                };
                let mut ids: Vec<u32> = items
                    .iter()
                    .map(|item| self.elements.intern(item))
                    .collect();
                // Not deduplicated: a read that returns an element twice matches no set.
                ids.sort_unstable();
                Ok(Some(SetOp::Read(ids)))
            }
            other => Err(ShapeError::new(
                op,
                false,
                "f",
                format!("the set model has no operation {other:?}; expected add|read"),
            )),
        }
    }

    fn init(&mut self) -> Vec<u32> {
        Vec::new()
    }

    fn step(&mut self, state: &Vec<u32>, op: &SetOp) -> Option<Vec<u32>> {
        match op {
            SetOp::Add(element) => match state.binary_search(element) {
                Ok(_) => Some(state.clone()),
                Err(at) => {
                    let mut next = state.clone();
                    next.insert(at, *element);
                    Some(next)
                }
            },
            SetOp::Read(elements) => (elements == state).then(|| state.clone()),
        }
    }

    fn describe_state(&self, state: &Vec<u32>) -> String {
        let items: Vec<String> = state
            .iter()
            .map(|&id| show(self.elements.value(id)))
            .collect();
        format!("#{{{}}}", items.join(" "))
    }
    fn effect(&self, op: &SetOp) -> Effect {
        match op {
            SetOp::Read(_) => Effect::ReadOnly,
            SetOp::Add(_) => Effect::Update,
        }
    }

    /// Adds only grow the set, so a read is out of reach unless it holds every element the
    /// set holds now.
    fn doomed(&mut self, state: &Vec<u32>, observer: &SetOp) -> bool {
        match observer {
            SetOp::Read(elements) => state
                .iter()
                .any(|element| elements.binary_search(element).is_err()),
            SetOp::Add(_) => false,
        }
    }

    fn prepare(&mut self, ops: &[PartitionOp<SetOp>]) {
        for op in ops {
            if let (SetOp::Read(elements), Some(_)) = (&op.op, op.ret) {
                self.observed.extend(elements.iter().copied());
            }
        }
    }

    /// An add is unobserved when no `ok` read holds its element. Once added, the element
    /// stays, so any read placed after it would hold it; none does, so nothing but adds can
    /// follow it, and adds are legal in any state. Rule 1: one of unknown outcome may be
    /// dropped.
    fn unobserved(&self, op: &SetOp) -> bool {
        match op {
            SetOp::Add(element) => !self.observed.contains(element),
            SetOp::Read(_) => false,
        }
    }

    fn heap_bytes(&self) -> u64 {
        self.elements.bytes() + self.observed.capacity() as u64 * 5
    }

    fn state_heap_bytes(&self, state: &Vec<u32>) -> u64 {
        state.capacity() as u64 * 4
    }
}
