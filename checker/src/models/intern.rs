//! Interns JSON values as small integers, so that model states are cheap to clone, hash and compare.

use hashbrown::HashMap;
use serde_json::Value;

/// Maps values to dense `u32` ids. Id 0 is always `null` (nil).
///
/// Invariant: `values[id]` is the value interned as `id`, and each value has one id.
#[derive(Clone, Debug)]
pub struct ValueInterner {
    integers: HashMap<i64, u32>,
    strings: HashMap<String, u32>,
    others: HashMap<String, u32>,
    values: Vec<Value>,
    /// Bytes of text held by `strings` and `others` (each text twice: key and value).
    text_bytes: u64,
}

impl Default for ValueInterner {
    fn default() -> Self {
        ValueInterner {
            integers: HashMap::new(),
            strings: HashMap::new(),
            others: HashMap::new(),
            values: vec![Value::Null],
            text_bytes: 0,
        }
    }
}

impl ValueInterner {
    /// The id of `null`.
    pub const NULL: u32 = 0;

    /// The id of `value`, allocating one the first time it is seen.
    pub fn intern(&mut self, value: &Value) -> u32 {
        let next = u32::try_from(self.values.len()).expect("more than 2^32 distinct values");
        let id = match value {
            Value::Null => return Self::NULL,
            Value::Number(number) if number.is_i64() => {
                let integer = number.as_i64().expect("is_i64 was checked");
                *self.integers.entry(integer).or_insert(next)
            }
            Value::String(text) => match self.strings.get(text.as_str()) {
                Some(&id) => id,
                None => {
                    self.strings.insert(text.clone(), next);
                    self.text_bytes += 2 * text.len() as u64;
                    next
                }
            },
            other => {
                let text = other.to_string();
                let length = text.len() as u64;
                let id = *self.others.entry(text).or_insert(next);
                if id == next {
                    self.text_bytes += 2 * length;
                }
                id
            }
        };
        if id == next {
            self.values.push(value.clone());
        }
        id
    }

    /// Bytes held, roughly from above: the tables' slots and the texts, for the memory cap.
    pub fn bytes(&self) -> u64 {
        let slot = std::mem::size_of::<(String, u32)>() as u64 + 1;
        let slots = (self.integers.capacity() + self.strings.capacity() + self.others.capacity())
            as u64
            * slot;
        slots
            + self.values.capacity() as u64 * std::mem::size_of::<Value>() as u64
            + self.text_bytes
    }

    /// The number of distinct values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always false: `null` is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The id of a string, allocating one the first time it is seen.
    pub fn intern_str(&mut self, text: &str) -> u32 {
        match self.strings.get(text) {
            Some(&id) => id,
            None => self.intern(&Value::String(text.to_string())),
        }
    }

    /// The value with id `id`. Panics on an id this interner never gave out (a bug).
    pub fn value(&self, id: u32) -> &Value {
        &self.values[id as usize]
    }

    /// The string with id `id`, or `""` for a non-string.
    pub fn text(&self, id: u32) -> &str {
        self.values[id as usize].as_str().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_share_an_id_and_null_is_zero() {
        let mut interner = ValueInterner::default();
        assert_eq!(interner.intern(&Value::Null), 0);
        let three = interner.intern(&json!(3));
        let text = interner.intern(&json!("3"));
        let list = interner.intern(&json!([3, 0]));
        assert_ne!(three, text);
        assert_ne!(three, list);
        assert_eq!(interner.intern(&json!(3)), three);
        assert_eq!(interner.intern_str("3"), text);
        assert_eq!(interner.intern(&json!([3, 0])), list);
        assert_eq!(interner.value(list), &json!([3, 0]));
    }
}
