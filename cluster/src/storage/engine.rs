//! The storage engine trait: an ordered byte map per table, and the layout of its keys.
//!
//! A stored key is the 8-byte big-endian ring hash of the shard key followed by the shard key's
//! canonical bytes, so one ring range is one contiguous interval of stored keys and a range
//! move is an ordered scan.

use std::fmt;
use std::ops::Bound;

use crate::sharding::{hash_bytes, HashRange};
use crate::sql::SqlValue;

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Why the engine failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The embedded store reported an error (IO, corruption, a full disk).
    #[error("storage engine error: {reason}")]
    Io {
        /// The store's message.
        reason: String,
    },
}

/// An ordered map of bytes to bytes, per table. Implementations are internally synchronized.
pub trait StorageEngine: Send + Sync + fmt::Debug {
    /// The value stored under `key`.
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Stores every entry, atomically and durably (for a durable engine) before returning.
    fn put_batch(&self, table: &str, entries: &[Entry]) -> Result<(), EngineError>;

    /// Up to `limit` entries in `[start, end]` bounds, in key order.
    fn scan(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, EngineError>;

    /// The number of entries within the bounds.
    fn count(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<usize, EngineError>;

    /// Removes every entry within the bounds.
    fn delete_range(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<(), EngineError>;
}

/// The ring hash of a shard key.
pub fn key_hash(key: &SqlValue) -> u64 {
    hash_bytes(&key.key_bytes())
}

/// The stored key of a shard key.
pub fn stored_key(key: &SqlValue) -> Vec<u8> {
    let key_bytes = key.key_bytes();
    let mut stored = Vec::with_capacity(8 + key_bytes.len());
    stored.extend_from_slice(&hash_bytes(&key_bytes).to_be_bytes());
    stored.extend_from_slice(&key_bytes);
    stored
}

/// The ring hash a stored key starts with.
///
/// # Panics
/// If the key is shorter than a hash, which only a bug in this module can cause.
pub fn stored_key_hash(stored: &[u8]) -> u64 {
    let prefix: [u8; 8] = stored[..8]
        .try_into()
        .expect("a stored key starts with its 8-byte hash");
    u64::from_be_bytes(prefix)
}

/// Owned stored-key bounds of one non-wrapping interval of hashes.
pub type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The stored-key intervals that hold exactly the keys whose hash is on `range`.
pub fn key_bounds(range: &HashRange) -> Vec<KeyBounds> {
    range
        .pieces()
        .into_iter()
        .filter_map(|(low, high)| {
            let start = match low {
                Bound::Included(h) => Bound::Included(h.to_be_bytes().to_vec()),
                Bound::Excluded(u64::MAX) => return None,
                Bound::Excluded(h) => Bound::Included((h + 1).to_be_bytes().to_vec()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let end = match high {
                Bound::Included(u64::MAX) | Bound::Unbounded => Bound::Unbounded,
                Bound::Included(h) => Bound::Excluded((h + 1).to_be_bytes().to_vec()),
                Bound::Excluded(h) => Bound::Excluded(h.to_be_bytes().to_vec()),
            };
            Some((start, end))
        })
        .collect()
}

/// Borrows owned bounds.
pub fn borrowed(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(b) => Bound::Included(b.as_slice()),
        Bound::Excluded(b) => Bound::Excluded(b.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bounds_select_exactly_the_range() {
        let keys: Vec<Vec<u8>> = (0..2000).map(|i| stored_key(&SqlValue::Int(i))).collect();
        let ranges = [
            HashRange {
                start: u64::MAX / 3,
                end: u64::MAX / 2,
            },
            HashRange {
                start: u64::MAX / 2,
                end: u64::MAX / 3,
            },
        ];
        for range in ranges {
            let bounds = key_bounds(&range);
            for key in &keys {
                let in_bounds = bounds
                    .iter()
                    .any(|(s, e)| within(borrowed(s), borrowed(e), key));
                assert_eq!(in_bounds, range.contains(stored_key_hash(key)));
            }
        }
    }

    fn within(start: Bound<&[u8]>, end: Bound<&[u8]>, key: &[u8]) -> bool {
        let above = match start {
            Bound::Included(s) => key >= s,
            Bound::Excluded(s) => key > s,
            Bound::Unbounded => true,
        };
        let below = match end {
            Bound::Included(e) => key <= e,
            Bound::Excluded(e) => key < e,
            Bound::Unbounded => true,
        };
        above && below
    }
}
