//! The change log a source node keeps for the ranges being moved away from it, so that writes
//! made during the bulk copy can be replayed onto the new owner (catch-up).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::sharding::RangeSet;

/// One recorded write: the table, the stored key and the full new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureEntry {
    /// The table.
    pub table: String,
    /// The stored key.
    pub key: Vec<u8>,
    /// The row's bytes after the write.
    pub value: Vec<u8>,
}

#[derive(Debug, Default)]
struct CaptureLog {
    /// Entries not yet replayed, in write order.
    /// Invariant: `entries.len() <= limit` while not broken.
    entries: VecDeque<CaptureEntry>,
    /// Why the log can no longer be trusted (node killed, overflow): the attempt must restart.
    broken: Option<String>,
}

/// A bounded change log for a set of ranges.
#[derive(Debug)]
pub struct ChangeCapture {
    ranges: RangeSet,
    limit: usize,
    log: Mutex<CaptureLog>,
}

impl ChangeCapture {
    /// A log of writes to `ranges`, holding at most `limit` unreplayed entries.
    pub fn new(ranges: RangeSet, limit: usize) -> Self {
        Self {
            ranges,
            limit,
            log: Mutex::new(CaptureLog::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CaptureLog> {
        self.log
            .lock()
            .expect("capture lock poisoned: a panic happened while it was held")
    }

    /// Whether writes to `hash` are recorded.
    pub fn covers(&self, hash: u64) -> bool {
        self.ranges.contains(hash)
    }

    /// Records a write; called under the node's write lock, right after the engine applied it.
    pub fn record(&self, entry: CaptureEntry) {
        let mut log = self.lock();
        if log.broken.is_some() {
            return;
        }
        if log.entries.len() >= self.limit {
            log.entries.clear();
            log.broken = Some(format!(
                "change log overflow: more than {} entries",
                self.limit
            ));
            return;
        }
        log.entries.push_back(entry);
    }

    /// Marks the log untrustworthy.
    pub fn break_with(&self, reason: &str) {
        let mut log = self.lock();
        log.entries.clear();
        log.broken.get_or_insert_with(|| reason.to_string());
    }

    /// Takes every unreplayed entry, or says why the log broke.
    pub fn drain(&self) -> Result<Vec<CaptureEntry>, String> {
        let mut log = self.lock();
        if let Some(reason) = &log.broken {
            return Err(reason.clone());
        }
        Ok(log.entries.drain(..).collect())
    }

    /// The number of unreplayed entries.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry awaits replay.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharding::HashRange;

    #[test]
    fn an_overflowing_log_breaks_instead_of_dropping_writes_silently() {
        let capture = ChangeCapture::new(RangeSet::new([HashRange { start: 0, end: 10 }]), 2);
        assert!(capture.covers(5) && !capture.covers(11));
        for i in 0..3u8 {
            capture.record(CaptureEntry {
                table: "t".into(),
                key: vec![i],
                value: vec![i],
            });
        }
        assert!(capture.drain().unwrap_err().contains("overflow"));
    }
}
