//! The operation streams of the compute workloads: list-append and rw-register transactions
//! over rotating keys (Elle's generators), bank transfers and reads, and cache writes and reads.
//!
//! Values are unique per key across the whole run (one shared counter), as Elle's inference of
//! version orders needs. Keys rotate: once a key has taken `max_writes_per_key` writes it is
//! retired and a fresh key takes its place, so lists stay short and every key's history stays
//! small enough to infer.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// One micro-operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MicroOp {
    /// Read a key (a list for list-append, a register for rw-register).
    Read(i64),
    /// Append a value to a key's list.
    Append(i64, i64),
    /// Write a value to a key's register.
    Write(i64, i64),
}

impl MicroOp {
    /// The micro-operation as Elle writes it, `[f, key, value]`, with `read` the value read
    /// (`null` at invocation).
    pub fn to_json(&self, read: &Value) -> Value {
        match self {
            MicroOp::Read(key) => json!(["r", key, read]),
            MicroOp::Append(key, value) => json!(["append", key, value]),
            MicroOp::Write(key, value) => json!(["w", key, value]),
        }
    }
}

/// One operation of a compute workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// A transaction of list-append micro-operations (appends and reads of lists).
    ListAppend(Vec<MicroOp>),
    /// A transaction of rw-register micro-operations (writes and reads of registers).
    RwRegister(Vec<MicroOp>),
    /// Move `amount` from account `from` to account `to`.
    Transfer {
        /// The debited account.
        from: i64,
        /// The credited account.
        to: i64,
        /// How much; positive.
        amount: i64,
    },
    /// Read every account's balance in one transaction.
    ReadBalances,
    /// Write `value` to the cache workload's key, through the writer compute node.
    CacheWrite {
        /// The key.
        key: i64,
        /// The value; unique per key.
        value: i64,
    },
    /// Read the cache workload's key through a reader compute node.
    CacheRead {
        /// The key.
        key: i64,
    },
}

/// The keys in use and how many writes each has taken, shared by a run's clients.
#[derive(Debug)]
pub struct KeyPool {
    /// Invariant: `active.len()` never changes; each entry is `(key, writes taken)`.
    active: Mutex<Vec<(i64, u32)>>,
    next_key: AtomicI64,
    max_writes_per_key: u32,
    /// The next value to write; shared, so values are unique per key across the run.
    next_value: AtomicI64,
}

impl KeyPool {
    /// `key_count` active keys `0..key_count`, each retired after `max_writes_per_key` writes.
    pub fn new(key_count: usize, max_writes_per_key: u32) -> Arc<KeyPool> {
        assert!(key_count > 0, "a key pool needs keys");
        assert!(max_writes_per_key > 0, "keys must take at least one write");
        Arc::new(KeyPool {
            active: Mutex::new((0..key_count as i64).map(|key| (key, 0)).collect()),
            next_key: AtomicI64::new(key_count as i64),
            max_writes_per_key,
            next_value: AtomicI64::new(1),
        })
    }

    fn pick(&self, rng: &mut ChaCha8Rng, write: bool) -> i64 {
        let mut active = self.active.lock().expect("key pool lock poisoned");
        let slot = rng.gen_range(0..active.len());
        let (key, writes) = active[slot];
        if write {
            if writes + 1 >= self.max_writes_per_key {
                active[slot] = (self.next_key.fetch_add(1, Ordering::Relaxed), 0);
            } else {
                active[slot].1 += 1;
            }
        }
        key
    }

    fn value(&self) -> i64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }

    /// The highest key handed out so far, plus one.
    pub fn keys_used(&self) -> i64 {
        self.next_key.load(Ordering::Relaxed)
    }
}

/// A transaction of 1 to `max_len` micro-operations, each a read or (with probability 1/2)
/// an append (`append`) or a write.
pub fn txn(rng: &mut ChaCha8Rng, pool: &KeyPool, max_len: usize, append: bool) -> TxnOp {
    let len = rng.gen_range(1..=max_len.max(1));
    let ops = (0..len)
        .map(|_| {
            if rng.gen_bool(0.5) {
                MicroOp::Read(pool.pick(rng, false))
            } else {
                let key = pool.pick(rng, true);
                let value = pool.value();
                if append {
                    MicroOp::Append(key, value)
                } else {
                    MicroOp::Write(key, value)
                }
            }
        })
        .collect();
    if append {
        TxnOp::ListAppend(ops)
    } else {
        TxnOp::RwRegister(ops)
    }
}

/// A bank operation: a read of every balance with probability `read_fraction`, else a transfer
/// of 1 to 5 between two distinct accounts of `0..accounts`.
pub fn bank(rng: &mut ChaCha8Rng, accounts: i64, read_fraction: f64) -> TxnOp {
    assert!(accounts >= 2, "a bank needs two accounts");
    if rng.gen_bool(read_fraction) {
        return TxnOp::ReadBalances;
    }
    let from = rng.gen_range(0..accounts);
    let mut to = rng.gen_range(0..accounts - 1);
    if to >= from {
        to += 1;
    }
    TxnOp::Transfer {
        from,
        to,
        amount: rng.gen_range(1..=5),
    }
}

/// Who issues a cache operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRole {
    /// Writer `index` of `writers`: it alone writes the keys `k` with `k % writers == index`,
    /// so a key's writes never overlap and every read is comparable with every write (the
    /// invalidation analysis cannot call a read of one of two overlapping writes stale).
    Writer {
        /// This writer's index.
        index: i64,
        /// How many writers there are. Invariant: `index < writers <= keys`.
        writers: i64,
    },
    /// A reader of any key.
    Reader,
}

/// A cache operation on one of `keys` keys: a write with a fresh value, or a read.
pub fn cache(rng: &mut ChaCha8Rng, pool: &KeyPool, keys: i64, role: CacheRole) -> TxnOp {
    match role {
        CacheRole::Writer { index, writers } => {
            assert!(
                index < writers && writers <= keys,
                "writer {index} of {writers} over {keys} keys"
            );
            let owned = (keys - index + writers - 1) / writers;
            TxnOp::CacheWrite {
                key: index + writers * rng.gen_range(0..owned),
                value: pool.value(),
            }
        }
        CacheRole::Reader => TxnOp::CacheRead {
            key: rng.gen_range(0..keys),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeMap;

    #[test]
    fn appended_values_are_unique_and_keys_retire_after_their_writes() {
        let pool = KeyPool::new(3, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        let mut writes: BTreeMap<i64, u32> = BTreeMap::new();
        for _ in 0..500 {
            let TxnOp::ListAppend(ops) = txn(&mut rng, &pool, 4, true) else {
                panic!("list-append makes transactions")
            };
            for op in ops {
                if let MicroOp::Append(key, value) = op {
                    assert!(seen.insert(value), "value {value} appended twice");
                    *writes.entry(key).or_default() += 1;
                }
            }
        }
        assert!(writes.values().all(|&n| n <= 4), "{writes:?}");
        assert!(pool.keys_used() > 3, "keys never rotated");
    }

    #[test]
    fn each_cache_key_has_exactly_one_writer() {
        let pool = KeyPool::new(1, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut writer_of: BTreeMap<i64, i64> = BTreeMap::new();
        for index in 0..3 {
            let role = CacheRole::Writer { index, writers: 3 };
            for _ in 0..200 {
                let TxnOp::CacheWrite { key, .. } = cache(&mut rng, &pool, 7, role) else {
                    panic!("writers write")
                };
                assert!((0..7).contains(&key));
                assert_eq!(*writer_of.entry(key).or_insert(index), index, "key {key}");
            }
        }
        assert_eq!(writer_of.len(), 7, "some key has no writer: {writer_of:?}");
    }

    #[test]
    fn transfers_move_a_positive_amount_between_distinct_accounts() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..1000 {
            if let TxnOp::Transfer { from, to, amount } = bank(&mut rng, 3, 0.2) {
                assert_ne!(from, to);
                assert!((0..3).contains(&from) && (0..3).contains(&to));
                assert!((1..=5).contains(&amount));
            }
        }
    }
}
