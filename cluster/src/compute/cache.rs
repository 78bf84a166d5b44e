//! The row cache of one compute node: committed rows by (table, shard key), bounded, with the
//! seq of the last invalidation applied to each recent key so that a fill can tell whether it
//! raced a write of its own key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::sql::{Row, SqlValue};

#[derive(Debug, Default)]
struct CacheState {
    rows: BTreeMap<(String, SqlValue), Row>,
    /// Invariant: the seq of the last invalidation applied (or skipped); never decreases.
    applied_seq: u64,
    /// How many times the whole cache was dropped (lag, a missed sync, a partition).
    n_drops: u64,
    /// The seq of the last invalidation applied to each key, for keys invalidated since
    /// `forgotten_below`; bounded by [`RECENT_KEYS`].
    recent: HashMap<(String, SqlValue), u64>,
    /// Invalidations up to this seq are no longer in `recent`, so a fill stamped before it
    /// cannot tell whether it raced one.
    forgotten_below: u64,
}

/// Most keys whose last invalidation the cache remembers; past it, it forgets them all, and
/// only fills stamped before that moment are refused for it.
const RECENT_KEYS: usize = 65_536;

/// What a reader notes before it reads storage, so its fill can tell whether it raced an
/// invalidation or a drop of the whole cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStamp {
    applied_seq: u64,
    n_drops: u64,
}

/// A bounded row cache. Internally synchronized.
#[derive(Debug)]
pub struct RowCache {
    state: Mutex<CacheState>,
    /// Most rows held; a full cache evicts its lowest key to take a new row.
    capacity: usize,
}

impl RowCache {
    /// An empty cache of at most `capacity` rows.
    ///
    /// # Panics
    /// If `capacity` is 0, a bug in the caller's options.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a row cache needs room for a row");
        Self {
            state: Mutex::new(CacheState::default()),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state
            .lock()
            .expect("row cache lock poisoned: a panic happened while it was held")
    }

    /// The cached row of `table` under `key`.
    pub fn get(&self, table: &str, key: &SqlValue) -> Option<Row> {
        self.lock()
            .rows
            .get(&(table.to_string(), key.clone()))
            .cloned()
    }

    /// Whether any table's row under `key` is cached.
    pub fn contains_key(&self, key: &SqlValue) -> bool {
        self.lock().rows.keys().any(|(_, k)| k == key)
    }

    /// The number of cached rows.
    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stamp a reader takes before reading storage.
    pub fn stamp(&self) -> CacheStamp {
        let state = self.lock();
        CacheStamp {
            applied_seq: state.applied_seq,
            n_drops: state.n_drops,
        }
    }

    /// Marks every invalidation up to `seq` as applied (a subscription that starts there).
    pub fn start_at(&self, seq: u64) {
        let mut state = self.lock();
        state.applied_seq = state.applied_seq.max(seq);
    }

    /// The seq of the last invalidation applied.
    pub fn applied_seq(&self) -> u64 {
        self.lock().applied_seq
    }

    /// How many times the whole cache was dropped.
    pub fn n_drops(&self) -> u64 {
        self.lock().n_drops
    }

    /// Caches a row read from storage, unless an invalidation of this key was applied, or the
    /// cache was dropped, since `stamp_before_read` was taken: that invalidation may be newer
    /// than the row read. Invalidations of other keys do not matter. An invalidation not yet
    /// applied removes the row when it is.
    pub fn fill(&self, table: &str, key: &SqlValue, row: Row, stamp_before_read: CacheStamp) {
        let mut state = self.lock();
        let entry = (table.to_string(), key.clone());
        let raced = state
            .recent
            .get(&entry)
            .is_some_and(|&seq| seq > stamp_before_read.applied_seq);
        if raced
            || stamp_before_read.applied_seq < state.forgotten_below
            || state.n_drops != stamp_before_read.n_drops
        {
            return;
        }
        if state.rows.len() >= self.capacity {
            state.rows.pop_first();
        }
        state.rows.insert(entry, row);
    }

    /// Applies invalidation `seq`: removes the row (unless `skip`, the unsafe mode).
    pub fn apply_invalidation(&self, seq: u64, table: &str, key: &SqlValue, skip: bool) {
        let mut state = self.lock();
        let entry = (table.to_string(), key.clone());
        if !skip {
            state.rows.remove(&entry);
        }
        state.applied_seq = state.applied_seq.max(seq);
        if state.recent.len() >= RECENT_KEYS && !state.recent.contains_key(&entry) {
            state.recent.clear();
            state.forgotten_below = state.applied_seq;
        }
        let applied = state.applied_seq;
        state.recent.insert(entry, applied);
    }

    /// Drops every row: the node may have missed invalidations.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.rows.clear();
        state.n_drops += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: i64) -> Row {
        Row::from([("value".to_string(), SqlValue::Int(value))])
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_is_not_cached() {
        let cache = RowCache::new(8);
        let before = cache.stamp();
        cache.apply_invalidation(1, "t", &SqlValue::Int(1), false);
        cache.fill("t", &SqlValue::Int(1), row(1), before);
        assert!(!cache.contains_key(&SqlValue::Int(1)));
        let before = cache.stamp();
        cache.clear();
        cache.fill("t", &SqlValue::Int(1), row(1), before);
        assert!(!cache.contains_key(&SqlValue::Int(1)));
        cache.fill("t", &SqlValue::Int(1), row(2), cache.stamp());
        assert_eq!(cache.get("t", &SqlValue::Int(1)), Some(row(2)));
    }

    #[test]
    fn a_fill_is_refused_only_for_its_own_key_and_while_the_cache_remembers() {
        let cache = RowCache::new(8);
        let before = cache.stamp();
        cache.apply_invalidation(1, "t", &SqlValue::Int(2), false);
        cache.fill("t", &SqlValue::Int(1), row(1), before);
        assert!(
            cache.contains_key(&SqlValue::Int(1)),
            "another key's invalidation does not refuse the fill"
        );
        cache.fill("t", &SqlValue::Int(2), row(2), before);
        assert!(!cache.contains_key(&SqlValue::Int(2)));
        // Past the bound, every fill stamped before the cache forgot is refused.
        let before = cache.stamp();
        for key in 0..RECENT_KEYS as i64 + 1 {
            cache.apply_invalidation(2 + key as u64, "u", &SqlValue::Int(key), false);
        }
        cache.fill("t", &SqlValue::Int(3), row(3), before);
        assert!(!cache.contains_key(&SqlValue::Int(3)));
        cache.fill("t", &SqlValue::Int(3), row(3), cache.stamp());
        assert!(cache.contains_key(&SqlValue::Int(3)));
    }

    #[test]
    fn invalidation_removes_and_skip_mode_keeps_the_row() {
        let cache = RowCache::new(8);
        cache.fill("t", &SqlValue::Int(1), row(1), cache.stamp());
        cache.apply_invalidation(1, "t", &SqlValue::Int(1), true);
        assert!(cache.contains_key(&SqlValue::Int(1)));
        cache.apply_invalidation(2, "t", &SqlValue::Int(1), false);
        assert!(!cache.contains_key(&SqlValue::Int(1)));
        assert_eq!(cache.applied_seq(), 2);
    }

    #[test]
    fn a_full_cache_evicts_to_stay_bounded() {
        let cache = RowCache::new(2);
        for key in 0..5 {
            cache.fill("t", &SqlValue::Int(key), row(key), cache.stamp());
        }
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.n_drops(), 1);
    }
}
