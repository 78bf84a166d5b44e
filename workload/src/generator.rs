//! The register workload's operation generator: seeded reads, writes and compare-and-sets.
//!
//! Values come from a small range so that a compare-and-set sometimes finds what it expects.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::history::Function;

/// One register operation, as a client is about to invoke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOp {
    /// Read the register.
    Read {
        /// The register.
        key: String,
    },
    /// Write `value`.
    Write {
        /// The register.
        key: String,
        /// The value to store.
        value: i64,
    },
    /// Set the register to `new` if it holds `expected`.
    Cas {
        /// The register.
        key: String,
        /// The value the register must hold.
        expected: i64,
        /// The value to store.
        new: i64,
    },
}

impl RegisterOp {
    /// The register this operation touches.
    pub fn key(&self) -> &str {
        match self {
            RegisterOp::Read { key }
            | RegisterOp::Write { key, .. }
            | RegisterOp::Cas { key, .. } => key,
        }
    }

    /// The history's `f`.
    pub fn function(&self) -> Function {
        match self {
            RegisterOp::Read { .. } => Function::Read,
            RegisterOp::Write { .. } => Function::Write,
            RegisterOp::Cas { .. } => Function::Cas,
        }
    }

    /// The history's `value` at invocation: `null` for a read, the integer for a write,
    /// `[expected, new]` for a compare-and-set.
    pub fn invoke_value(&self) -> serde_json::Value {
        match self {
            RegisterOp::Read { .. } => serde_json::Value::Null,
            RegisterOp::Write { value, .. } => serde_json::json!(value),
            RegisterOp::Cas { expected, new, .. } => serde_json::json!([expected, new]),
        }
    }
}

/// The names of `count` registers: `k0`, `k1`, ...
pub fn register_keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("k{i}")).collect()
}

/// Generates register operations from a seeded random stream.
#[derive(Debug)]
pub struct RegisterGenerator {
    rng: ChaCha8Rng,
    keys: Vec<String>,
    /// Values are drawn from `0..value_count`.
    value_count: i64,
}

impl RegisterGenerator {
    /// A generator over `keys` with values in `0..value_count`.
    pub fn new(rng: ChaCha8Rng, keys: Vec<String>, value_count: i64) -> RegisterGenerator {
        assert!(
            !keys.is_empty(),
            "a register generator needs at least one key"
        );
        assert!(
            value_count > 0,
            "a register generator needs at least one value"
        );
        RegisterGenerator {
            rng,
            keys,
            value_count,
        }
    }

    /// The next operation: reads, writes and compare-and-sets in equal measure, as Knossos's
    /// cas-register tests do.
    pub fn next_op(&mut self) -> RegisterOp {
        let key = self.keys[self.rng.gen_range(0..self.keys.len())].clone();
        match self.rng.gen_range(0..3) {
            0 => RegisterOp::Read { key },
            1 => RegisterOp::Write {
                key,
                value: self.rng.gen_range(0..self.value_count),
            },
            _ => RegisterOp::Cas {
                key,
                expected: self.rng.gen_range(0..self.value_count),
                new: self.rng.gen_range(0..self.value_count),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn generator_is_deterministic_for_a_seed_and_covers_every_function() {
        let keys = register_keys(5);
        let mut a = RegisterGenerator::new(ChaCha8Rng::seed_from_u64(7), keys.clone(), 5);
        let mut b = RegisterGenerator::new(ChaCha8Rng::seed_from_u64(7), keys.clone(), 5);
        let ops_a: Vec<_> = (0..300).map(|_| a.next_op()).collect();
        let ops_b: Vec<_> = (0..300).map(|_| b.next_op()).collect();
        assert_eq!(ops_a, ops_b);
        for f in [Function::Read, Function::Write, Function::Cas] {
            assert!(
                ops_a.iter().any(|op| op.function() == f),
                "{f:?} never generated"
            );
        }
        for key in &keys {
            assert!(ops_a.iter().any(|op| op.key() == key), "{key} never used");
        }
    }

    #[test]
    fn invoke_values_follow_the_history_format() {
        let key = "k0".to_owned();
        assert_eq!(
            RegisterOp::Read { key: key.clone() }.invoke_value(),
            serde_json::Value::Null
        );
        assert_eq!(
            RegisterOp::Write {
                key: key.clone(),
                value: 3
            }
            .invoke_value(),
            serde_json::json!(3)
        );
        assert_eq!(
            RegisterOp::Cas {
                key,
                expected: 1,
                new: 4
            }
            .invoke_value(),
            serde_json::json!([1, 4])
        );
    }
}
