//! A replica's durable log of writes and the key-value state that applying a prefix of it
//! gives.

use std::collections::BTreeMap;

use super::message::{Entry, Epoch, LogIndex};

/// The entries a replica holds durably, in order.
#[derive(Clone, Debug, Default)]
pub struct ReplicaLog {
    /// Invariant: `entries[i].index == i + 1`, and epochs never decrease along the log.
    entries: Vec<Entry>,
    /// The lowest index appended or removed since [`ReplicaLog::take_changed_from`] last ran:
    /// what a disk copy must rewrite (every entry from there on) to match the log again.
    changed_from: Option<LogIndex>,
}

impl PartialEq for ReplicaLog {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for ReplicaLog {}

/// Why an append did not fit the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrevMismatch;

impl ReplicaLog {
    /// A log holding `entries` (read back from disk), or why they do not form a log.
    pub fn from_entries(entries: Vec<Entry>) -> Result<Self, String> {
        let mut last_epoch = 0;
        for (i, entry) in entries.iter().enumerate() {
            if entry.index != i as LogIndex + 1 {
                return Err(format!("entry {} found at position {}", entry.index, i + 1));
            }
            if entry.epoch < last_epoch {
                return Err(format!("epoch decreases at index {}", entry.index));
            }
            last_epoch = entry.epoch;
        }
        Ok(Self {
            entries,
            changed_from: None,
        })
    }

    /// The lowest index appended or removed since the last call (`None`: unchanged), and
    /// starts tracking afresh.
    pub fn take_changed_from(&mut self) -> Option<LogIndex> {
        self.changed_from.take()
    }

    fn mark_changed(&mut self, index: LogIndex) {
        self.changed_from = Some(self.changed_from.map_or(index, |from| from.min(index)));
    }

    /// The index of the last entry, 0 when empty.
    pub fn last_index(&self) -> LogIndex {
        self.entries.len() as LogIndex
    }

    /// The epoch of the entry at `index`; 0 for index 0; `None` past the end.
    pub fn epoch_at(&self, index: LogIndex) -> Option<Epoch> {
        if index == 0 {
            return Some(0);
        }
        self.entries.get(index as usize - 1).map(|e| e.epoch)
    }

    /// The entry at `index`, if any.
    pub fn get(&self, index: LogIndex) -> Option<&Entry> {
        index
            .checked_sub(1)
            .and_then(|i| self.entries.get(i as usize))
    }

    /// Up to `limit` entries from `from` on.
    pub fn entries_from(&self, from: LogIndex, limit: usize) -> Vec<Entry> {
        let start = (from.max(1) - 1) as usize;
        self.entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Appends a new write at the end, in `epoch`; returns its index.
    ///
    /// # Panics
    /// If `epoch` is older than the last entry's, a bug in the caller.
    pub fn push(&mut self, epoch: Epoch, key: Vec<u8>, value: Vec<u8>) -> LogIndex {
        let last_epoch = self.epoch_at(self.last_index()).unwrap_or(0);
        assert!(
            epoch >= last_epoch,
            "append in epoch {epoch} after an entry of epoch {last_epoch}"
        );
        let index = self.last_index() + 1;
        self.mark_changed(index);
        self.entries.push(Entry {
            epoch,
            index,
            key,
            value,
        });
        index
    }

    /// Raft's append rule (§5.3): if the entry at `prev_index` has `prev_epoch`, keeps every
    /// entry that agrees with `entries`, cuts the log at the first that conflicts, and appends
    /// the rest. Never cuts an entry that agrees, so a late, shorter batch cannot undo what a
    /// later one appended. Returns the lowest index removed, if any.
    pub fn append_after(
        &mut self,
        prev_index: LogIndex,
        prev_epoch: Epoch,
        entries: &[Entry],
    ) -> Result<Option<LogIndex>, PrevMismatch> {
        if self.epoch_at(prev_index) != Some(prev_epoch) {
            return Err(PrevMismatch);
        }
        let mut removed_from = None;
        for (offset, entry) in entries.iter().enumerate() {
            let index = prev_index + 1 + offset as LogIndex;
            assert_eq!(entry.index, index, "replicated batch is not consecutive");
            match self.epoch_at(index) {
                Some(epoch) if epoch == entry.epoch => continue,
                Some(_) => {
                    self.truncate_after(index - 1);
                    removed_from.get_or_insert(index);
                }
                None => {}
            }
            self.mark_changed(index);
            self.entries.push(entry.clone());
        }
        Ok(removed_from)
    }

    /// Removes every entry after `index`.
    pub fn truncate_after(&mut self, index: LogIndex) {
        if index < self.last_index() {
            self.mark_changed(index + 1);
        }
        self.entries.truncate(index as usize);
    }

    /// Checks the log's invariant.
    ///
    /// # Panics
    /// If it does not hold, which only a bug can cause.
    pub fn validate(&self) {
        let mut last_epoch = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            assert_eq!(entry.index, i as LogIndex + 1, "log index gap at {i}");
            assert!(entry.epoch >= last_epoch, "log epoch decreases at {i}");
            last_epoch = entry.epoch;
        }
    }
}

/// The key-value state that applying the log up to `applied_index` gives. An entry with an
/// empty value deletes its key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvState {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Invariant: `map` is exactly the result of applying entries `1..=applied_index` in order.
    applied_index: LogIndex,
}

impl KvState {
    /// The value of `key`, if written.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }

    /// The last applied index.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// How many keys hold a value.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key holds a value.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Up to `limit` keys and values after `after` (from the first with `None`), in key order.
    pub fn range_after(&self, after: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        use std::ops::Bound;
        let start = match after {
            Some(key) => Bound::Excluded(key.to_vec()),
            None => Bound::Unbounded,
        };
        self.map
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// Makes the state that of `log` up to `index`, applying forward or rebuilding after a
    /// truncation.
    pub fn apply_to(&mut self, log: &ReplicaLog, index: LogIndex) {
        assert!(
            index <= log.last_index(),
            "apply to {index} past the log's end {}",
            log.last_index()
        );
        if index < self.applied_index {
            *self = Self::default();
        }
        for i in self.applied_index + 1..=index {
            let entry = log.get(i).expect("index within the log");
            if entry.value.is_empty() {
                self.map.remove(&entry.key);
            } else {
                self.map.insert(entry.key.clone(), entry.value.clone());
            }
        }
        self.applied_index = index;
    }

    /// Forgets what was applied after a truncation below `applied_index`.
    pub fn rebuild(&mut self, log: &ReplicaLog, index: LogIndex) {
        *self = Self::default();
        self.apply_to(log, index);
    }

    /// Checks that the state is the replay of `log` up to `applied_index` (O(log length)).
    ///
    /// # Panics
    /// If it is not, which only a bug can cause.
    pub fn validate(&self, log: &ReplicaLog) {
        let mut replay = Self::default();
        replay.apply_to(log, self.applied_index);
        assert!(
            replay == *self,
            "key-value state differs from a replay of the log to {}",
            self.applied_index
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: Epoch, index: LogIndex, value: &str) -> Entry {
        Entry {
            epoch,
            index,
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn append_after_keeps_agreeing_entries_and_cuts_conflicting_ones() {
        let mut log = ReplicaLog::default();
        log.push(1, b"k".to_vec(), b"a".to_vec());
        log.push(1, b"k".to_vec(), b"b".to_vec());
        log.push(1, b"k".to_vec(), b"c".to_vec());
        // A late batch that agrees with a prefix does not shorten the log.
        assert_eq!(log.append_after(0, 0, &[entry(1, 1, "a")]), Ok(None));
        assert_eq!(log.last_index(), 3);
        // A conflicting batch from epoch 2 replaces entries 2 and 3.
        assert_eq!(log.append_after(1, 1, &[entry(2, 2, "x")]), Ok(Some(2)));
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.epoch_at(2), Some(2));
        assert_eq!(log.append_after(5, 2, &[]), Err(PrevMismatch));
        log.validate();
    }

    #[test]
    fn kv_state_rebuilds_after_a_truncation() {
        let mut log = ReplicaLog::default();
        log.push(1, b"k".to_vec(), b"a".to_vec());
        log.push(1, b"k".to_vec(), b"b".to_vec());
        let mut kv = KvState::default();
        kv.apply_to(&log, 2);
        assert_eq!(kv.get(b"k"), Some(b"b".to_vec()));
        log.truncate_after(1);
        kv.apply_to(&log, 1);
        assert_eq!(kv.get(b"k"), Some(b"a".to_vec()));
        kv.validate(&log);
    }
}
