//! Mutex model (Knossos's mutex): `acquire` succeeds only when free, `release` only when held.

use super::{Model, ModelInstance, PartitionKey, ShapeError};
use crate::ops::Operation;

/// A lock per key, initially free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MutexModel;

impl Model for MutexModel {
    type Instance = MutexModel;

    fn name(&self) -> String {
        "mutex".to_string()
    }

    fn partition(&self, op: &Operation) -> PartitionKey {
        op.key.as_ref().map(super::show_key)
    }

    fn instance(&self) -> MutexModel {
        MutexModel
    }
}

impl ModelInstance for MutexModel {
    /// True while the lock is held.
    type State = bool;
    /// True for `acquire`, false for `release`.
    type Op = bool;

    fn encode(&mut self, op: &Operation) -> Result<Option<bool>, ShapeError> {
        match op.f.as_str() {
            "acquire" | "lock" => Ok(Some(true)),
            "release" | "unlock" => Ok(Some(false)),
            other => Err(ShapeError::new(
                op,
                false,
                "f",
                format!("the mutex model has no operation {other:?}; expected acquire|release"),
            )),
        }
    }

    fn init(&mut self) -> bool {
        false
    }

    fn step(&mut self, held: &bool, acquire: &bool) -> Option<bool> {
        (*held != *acquire).then_some(*acquire)
    }

    fn describe_state(&self, held: &bool) -> String {
        if *held { "held" } else { "free" }.to_string()
    }
}
