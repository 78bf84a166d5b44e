//! The durable engine: one redb file per storage node.
//!
//! redb rather than fjall: a single-file B-tree with ACID write transactions that are fsynced
//! on commit by default, so "acknowledged" means "on disk" with no journal mode to get wrong;
//! ordered range scans are native (a ring range is one interval); and it is pure Rust with no
//! background compaction threads, which keeps simulated runs deterministic.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition, TableError};

use super::engine::{EngineError, Entry, StorageEngine};

fn io(error: impl std::fmt::Display) -> EngineError {
    EngineError::Io {
        reason: error.to_string(),
    }
}

fn definition(table: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(table)
}

/// A redb database holding every table of one node.
#[derive(Debug)]
pub struct RedbEngine {
    path: PathBuf,
    /// Invariant: the only handle to the file in this process (redb locks it).
    db: Database,
}

impl RedbEngine {
    /// Opens (or creates) `data_dir/storage.redb`.
    pub fn open(data_dir: &Path) -> Result<Self, EngineError> {
        std::fs::create_dir_all(data_dir).map_err(|e| EngineError::Io {
            reason: format!("{}: {e}", data_dir.display()),
        })?;
        let path = data_dir.join("storage.redb");
        let db = Database::create(&path).map_err(|e| EngineError::Io {
            reason: format!("{}: {e}", path.display()),
        })?;
        Ok(Self { path, db })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StorageEngine for RedbEngine {
    fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = match txn.open_table(definition(table)) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let value = table.get(key).map_err(io)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn put_batch(&self, table: &str, entries: &[Entry]) -> Result<(), EngineError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(definition(table)).map_err(io)?;
            for (key, value) in entries {
                table.insert(key.as_slice(), value.as_slice()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    fn scan(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, EngineError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = match txn.open_table(definition(table)) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut entries = Vec::new();
        for item in table.range::<&[u8]>((start, end)).map_err(io)?.take(limit) {
            let (key, value) = item.map_err(io)?;
            entries.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(entries)
    }

    fn count(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<usize, EngineError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = match txn.open_table(definition(table)) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        let mut n = 0;
        for item in table.range::<&[u8]>((start, end)).map_err(io)? {
            item.map_err(io)?;
            n += 1;
        }
        Ok(n)
    }

    fn delete_range(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<(), EngineError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(definition(table)).map_err(io)?;
            table
                .retain_in::<&[u8], _>((start, end), |_, _| false)
                .map_err(io)?;
        }
        txn.commit().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledged_writes_survive_closing_and_reopening_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let engine = RedbEngine::open(dir.path()).unwrap();
            engine
                .put_batch("t", &[(b"k1".to_vec(), b"v1".to_vec())])
                .unwrap();
        }
        let engine = RedbEngine::open(dir.path()).unwrap();
        assert_eq!(engine.get("t", b"k1").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(engine.get("missing", b"k1").unwrap(), None);
        assert_eq!(
            engine
                .count("t", Bound::Unbounded, Bound::Unbounded)
                .unwrap(),
            1
        );
        engine
            .delete_range("t", Bound::Unbounded, Bound::Unbounded)
            .unwrap();
        assert_eq!(engine.get("t", b"k1").unwrap(), None);
    }
}
