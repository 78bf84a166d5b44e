//! The in-memory engine of the simulated cluster.
//!
//! It plays the part of a disk: a killed node's engine object is kept and handed back on
//! restart, as the metadata nodes' `DurableStorage` is.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::engine::{EngineError, Entry, StorageEngine};

/// Table name to its ordered byte map.
type Tables = HashMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Tables of ordered byte maps, behind one lock.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    tables: RwLock<Tables>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.tables
            .read()
            .expect("memory engine lock poisoned: a panic happened while it was held")
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables
            .write()
            .expect("memory engine lock poisoned: a panic happened while it was held")
    }
}

impl StorageEngine for MemoryEngine {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        Ok(self.read().get(table).and_then(|t| t.get(key).cloned()))
    }

    fn put_batch(&self, table: &str, entries: &[Entry]) -> Result<(), EngineError> {
        let mut tables = self.write();
        let map = tables.entry(table.to_string()).or_default();
        for (key, value) in entries {
            map.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    fn scan(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, EngineError> {
        let tables = self.read();
        let Some(map) = tables.get(table) else {
            return Ok(Vec::new());
        };
        Ok(map
            .range::<[u8], _>((start, end))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn count(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<usize, EngineError> {
        let tables = self.read();
        Ok(tables
            .get(table)
            .map(|map| map.range::<[u8], _>((start, end)).count())
            .unwrap_or(0))
    }

    fn delete_range(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<(), EngineError> {
        let mut tables = self.write();
        if let Some(map) = tables.get_mut(table) {
            let doomed: Vec<Vec<u8>> = map
                .range::<[u8], _>((start, end))
                .map(|(k, _)| k.clone())
                .collect();
            for key in doomed {
                map.remove(&key);
            }
        }
        Ok(())
    }
}
