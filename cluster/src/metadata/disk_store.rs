//! The on-disk half of a metadata node's storage: one redb file in the node's data directory.
//!
//! [`super::store::DurableStorage`] keeps the whole state in memory and, when it has a
//! [`DiskStore`], writes every mutation through to the file before the openraft call that made
//! it returns. So the openraft storage traits are implemented once, in `store.rs`, for the
//! simulation and for processes alike, and this file only knows the schema:
//!
//! - `raft_log`: log index → the entry (JSON);
//! - `raft_state`: named singletons (JSON): the vote, the committed log id, the last purged log
//!   id, the state machine's last applied log id, its membership and shard map, the current
//!   snapshot and the number of snapshots built;
//! - `kv`: the state machine's key-value map, one row per key.
//!
//! Every write transaction is fsynced on commit (redb's default durability), except the
//! committed log id, which openraft does not require to persist (it is re-learned from the
//! leader) and which rides along with the next durable commit.
//!
//! JSON rather than postcard on disk: openraft's types round-trip through it without caring
//! whether a serde attribute needs a self-describing format, and the file stays inspectable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{Entry, LogId, SnapshotMeta, Vote};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableError,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::store::StateMachineData;
use super::types::{NodeId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const RAFT_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");
const KV: TableDefinition<&str, &str> = TableDefinition::new("kv");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const LAST_APPLIED: &str = "last_applied";
const LAST_MEMBERSHIP: &str = "last_membership";
const SHARD_MAP: &str = "shard_map";
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";
const SNAPSHOTS_BUILT: &str = "n_snapshots_built";

/// The file name of a metadata node's store inside its data directory.
pub const METADATA_FILE_NAME: &str = "metadata.redb";

/// Why the metadata store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum DiskStoreError {
    /// The file or its directory could not be opened or created (another process may hold it:
    /// redb locks the file).
    #[error("{path}: cannot open the metadata store: {reason}")]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// A transaction on the file failed; what it was writing may not be durable.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// A stored record does not decode: the file is corrupt or from an incompatible version.
    #[error("{path}: stored {what} does not decode: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which record.
        what: String,
        /// The decoder's message.
        reason: String,
    },
}

/// Everything a metadata store held when it was opened.
#[derive(Debug, Default)]
pub struct LoadedState {
    /// The last vote saved.
    pub vote: Option<Vote<NodeId>>,
    /// The last committed log id saved (may lag the truth; see the module doc).
    pub committed: Option<LogId<NodeId>>,
    /// The last log id purged from the front of the log.
    pub last_purged: Option<LogId<NodeId>>,
    /// The log entries, by index.
    pub log: BTreeMap<u64, Entry<TypeConfig>>,
    /// The applied state machine.
    pub state_machine: StateMachineData,
    /// The current snapshot's metadata and data.
    pub snapshot: Option<(SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>)>,
    /// How many snapshots this node built.
    pub n_snapshots_built: u64,
}

/// A metadata node's redb file.
#[derive(Debug)]
pub struct DiskStore {
    path: PathBuf,
    /// Invariant: the only handle to the file in this process (redb locks it).
    db: Database,
}

impl DiskStore {
    /// Opens (or creates) `data_dir/metadata.redb` and reads everything it holds.
    pub fn open(data_dir: &Path) -> Result<(Self, LoadedState), DiskStoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| DiskStoreError::Open {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let path = data_dir.join(METADATA_FILE_NAME);
        let db = Database::create(&path).map_err(|e| DiskStoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let store = Self { path, db };
        let loaded = store.load()?;
        Ok((store, loaded))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, error: impl std::fmt::Display) -> DiskStoreError {
        DiskStoreError::Io {
            path: self.path.clone(),
            reason: error.to_string(),
        }
    }

    fn corrupt(&self, what: impl Into<String>, error: impl std::fmt::Display) -> DiskStoreError {
        DiskStoreError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
            reason: error.to_string(),
        }
    }

    fn encode<T: Serialize>(&self, what: &str, value: &T) -> Result<Vec<u8>, DiskStoreError> {
        serde_json::to_vec(value).map_err(|e| self.io(format!("encode {what}: {e}")))
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, DiskStoreError> {
        serde_json::from_slice(bytes).map_err(|e| self.corrupt(what, e))
    }

    fn load(&self) -> Result<LoadedState, DiskStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let mut loaded = LoadedState::default();
        let mut singletons: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        match txn.open_table(RAFT_STATE) {
            Ok(table) => {
                for item in table.iter().map_err(|e| self.io(e))? {
                    let (name, bytes) = item.map_err(|e| self.io(e))?;
                    singletons.insert(name.value().to_string(), bytes.value().to_vec());
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.io(e)),
        }
        let single = |name: &str| singletons.get(name).map(Vec::as_slice);
        if let Some(bytes) = single(VOTE) {
            loaded.vote = Some(self.decode(VOTE, bytes)?);
        }
        if let Some(bytes) = single(COMMITTED) {
            loaded.committed = self.decode(COMMITTED, bytes)?;
        }
        if let Some(bytes) = single(LAST_PURGED) {
            loaded.last_purged = self.decode(LAST_PURGED, bytes)?;
        }
        if let Some(bytes) = single(LAST_APPLIED) {
            loaded.state_machine.last_applied = self.decode(LAST_APPLIED, bytes)?;
        }
        if let Some(bytes) = single(LAST_MEMBERSHIP) {
            loaded.state_machine.last_membership = self.decode(LAST_MEMBERSHIP, bytes)?;
        }
        if let Some(bytes) = single(SHARD_MAP) {
            loaded.state_machine.shard_map = self.decode(SHARD_MAP, bytes)?;
        }
        if let (Some(meta), Some(data)) = (single(SNAPSHOT_META), single(SNAPSHOT_DATA)) {
            loaded.snapshot = Some((self.decode(SNAPSHOT_META, meta)?, data.to_vec()));
        }
        if let Some(bytes) = single(SNAPSHOTS_BUILT) {
            loaded.n_snapshots_built = self.decode(SNAPSHOTS_BUILT, bytes)?;
        }
        match txn.open_table(LOG) {
            Ok(table) => {
                for item in table.iter().map_err(|e| self.io(e))? {
                    let (index, bytes) = item.map_err(|e| self.io(e))?;
                    let index = index.value();
                    let entry = self.decode(&format!("log entry {index}"), bytes.value())?;
                    loaded.log.insert(index, entry);
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.io(e)),
        }
        match txn.open_table(KV) {
            Ok(table) => {
                for item in table.iter().map_err(|e| self.io(e))? {
                    let (key, value) = item.map_err(|e| self.io(e))?;
                    loaded
                        .state_machine
                        .kv
                        .insert(key.value().to_string(), value.value().to_string());
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.io(e)),
        }
        Ok(loaded)
    }

    /// Runs `write` in one write transaction and commits it with `durability`.
    fn write(
        &self,
        durability: Durability,
        write: impl FnOnce(&redb::WriteTransaction) -> Result<(), DiskStoreError>,
    ) -> Result<(), DiskStoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.io(e))?;
        txn.set_durability(durability).map_err(|e| self.io(e))?;
        write(&txn)?;
        txn.commit().map_err(|e| self.io(e))
    }

    fn put_singletons(
        &self,
        txn: &redb::WriteTransaction,
        singletons: &[(&str, Vec<u8>)],
    ) -> Result<(), DiskStoreError> {
        let mut table = txn.open_table(RAFT_STATE).map_err(|e| self.io(e))?;
        for (name, bytes) in singletons {
            table
                .insert(*name, bytes.as_slice())
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// Persists the vote (Raft §5.2: before the vote is answered or acted on).
    pub fn save_vote(&self, vote: &Vote<NodeId>) -> Result<(), DiskStoreError> {
        let bytes = self.encode(VOTE, vote)?;
        self.write(Durability::Immediate, |txn| {
            self.put_singletons(txn, &[(VOTE, bytes)])
        })
    }

    /// Records the committed log id, without forcing it to disk (see the module doc).
    pub fn save_committed(&self, committed: Option<LogId<NodeId>>) -> Result<(), DiskStoreError> {
        let bytes = self.encode(COMMITTED, &committed)?;
        self.write(Durability::None, |txn| {
            self.put_singletons(txn, &[(COMMITTED, bytes)])
        })
    }

    /// Persists log entries (they overwrite entries at the same indexes).
    pub fn append(&self, entries: &[Entry<TypeConfig>]) -> Result<(), DiskStoreError> {
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in entries {
            encoded.push((entry.log_id.index, self.encode("log entry", entry)?));
        }
        self.write(Durability::Immediate, |txn| {
            let mut table = txn.open_table(LOG).map_err(|e| self.io(e))?;
            for (index, bytes) in &encoded {
                table
                    .insert(*index, bytes.as_slice())
                    .map_err(|e| self.io(e))?;
            }
            Ok(())
        })
    }

    /// Removes the log entries at `from_index` and after (a conflicting suffix, Raft §5.3).
    pub fn truncate(&self, from_index: u64) -> Result<(), DiskStoreError> {
        self.write(Durability::Immediate, |txn| {
            let mut table = txn.open_table(LOG).map_err(|e| self.io(e))?;
            table
                .retain_in(from_index.., |_, _| false)
                .map_err(|e| self.io(e))
        })
    }

    /// Removes the log entries up to and including `upto` and records it as the last purged.
    pub fn purge(&self, upto: LogId<NodeId>) -> Result<(), DiskStoreError> {
        let bytes = self.encode(LAST_PURGED, &Some(upto))?;
        self.write(Durability::Immediate, |txn| {
            self.put_singletons(txn, &[(LAST_PURGED, bytes)])?;
            let mut table = txn.open_table(LOG).map_err(|e| self.io(e))?;
            table
                .retain_in(..=upto.index, |_, _| false)
                .map_err(|e| self.io(e))
        })
    }

    /// Persists the part of `machine` that one batch of applied entries changed: the values of
    /// `touched_keys`, the last applied log id and membership, and the shard map if it changed.
    pub fn save_applied(
        &self,
        machine: &StateMachineData,
        touched_keys: &BTreeSet<String>,
        shard_map_changed: bool,
    ) -> Result<(), DiskStoreError> {
        let mut singletons = vec![
            (
                LAST_APPLIED,
                self.encode(LAST_APPLIED, &machine.last_applied)?,
            ),
            (
                LAST_MEMBERSHIP,
                self.encode(LAST_MEMBERSHIP, &machine.last_membership)?,
            ),
        ];
        if shard_map_changed {
            singletons.push((SHARD_MAP, self.encode(SHARD_MAP, &machine.shard_map)?));
        }
        self.write(Durability::Immediate, |txn| {
            self.put_singletons(txn, &singletons)?;
            let mut kv = txn.open_table(KV).map_err(|e| self.io(e))?;
            for key in touched_keys {
                match machine.kv.get(key) {
                    Some(value) => kv.insert(key.as_str(), value.as_str()),
                    None => kv.remove(key.as_str()),
                }
                .map_err(|e| self.io(e))?;
            }
            Ok(())
        })
    }

    /// Persists a snapshot this node built.
    pub fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        data: &[u8],
        n_snapshots_built: u64,
    ) -> Result<(), DiskStoreError> {
        let singletons = [
            (SNAPSHOT_META, self.encode(SNAPSHOT_META, meta)?),
            (SNAPSHOT_DATA, data.to_vec()),
            (
                SNAPSHOTS_BUILT,
                self.encode(SNAPSHOTS_BUILT, &n_snapshots_built)?,
            ),
        ];
        self.write(Durability::Immediate, |txn| {
            self.put_singletons(txn, &singletons)
        })
    }

    /// Replaces the whole state machine with an installed snapshot's, in one transaction.
    pub fn install_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        data: &[u8],
        machine: &StateMachineData,
    ) -> Result<(), DiskStoreError> {
        let singletons = [
            (SNAPSHOT_META, self.encode(SNAPSHOT_META, meta)?),
            (SNAPSHOT_DATA, data.to_vec()),
            (
                LAST_APPLIED,
                self.encode(LAST_APPLIED, &machine.last_applied)?,
            ),
            (
                LAST_MEMBERSHIP,
                self.encode(LAST_MEMBERSHIP, &machine.last_membership)?,
            ),
            (SHARD_MAP, self.encode(SHARD_MAP, &machine.shard_map)?),
        ];
        self.write(Durability::Immediate, |txn| {
            self.put_singletons(txn, &singletons)?;
            let mut kv = txn.open_table(KV).map_err(|e| self.io(e))?;
            kv.retain(|_, _| false).map_err(|e| self.io(e))?;
            for (key, value) in &machine.kv {
                kv.insert(key.as_str(), value.as_str())
                    .map_err(|e| self.io(e))?;
            }
            Ok(())
        })
    }

    /// The number of log entries in the file (for tests and status).
    pub fn log_len(&self) -> Result<u64, DiskStoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        match txn.open_table(LOG) {
            Ok(table) => table.len().map_err(|e| self.io(e)),
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(self.io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::metadata::{
        DurableStorage, LogPayloadView, MetadataNode, NodeSettings, StateMachineData,
    };

    async fn wait_for_leader(node: &MetadataNode) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.is_leader() {
            assert!(Instant::now() < deadline, "a single node elects itself");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn acknowledged_writes_vote_and_log_survive_dropping_and_reopening_the_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Setup: a one-node group over the directory, two acknowledged writes and a cas.
        let (vote, log) = {
            let storage = DurableStorage::open_dir(dir.path()).expect("opens");
            assert!(storage.is_pristine());
            let node = MetadataNode::with_storage(7, NodeSettings::default(), storage, None)
                .await
                .expect("starts");
            node.initialize(&[7]).await.expect("initializes");
            wait_for_leader(&node).await;
            node.propose_change("a", "1").await.expect("write a");
            node.propose_change("b", "2").await.expect("write b");
            assert!(node
                .compare_and_set("a", Some("1"), "3")
                .await
                .expect("cas"));
            let vote = node.metrics().expect("running").vote;
            let log = node.get_log().await;
            node.shutdown().await;
            (vote, log)
        };
        // Reopen: the file alone holds the vote, the log and the applied state.
        let storage = DurableStorage::open_dir(dir.path()).expect("reopens");
        assert!(!storage.is_pristine());
        storage.validate().expect("reloaded log is contiguous");
        let state = storage.state();
        assert_eq!(state.get("a").map(String::as_str), Some("3"));
        assert_eq!(state.get("b").map(String::as_str), Some("2"));
        let reloaded_log: Vec<_> = storage
            .log_entries()
            .iter()
            .map(crate::metadata::LogEntryView::from_entry)
            .collect();
        assert_eq!(reloaded_log, log, "the log reloads entry for entry");
        assert!(matches!(
            reloaded_log.first().map(|e| &e.payload),
            Some(LogPayloadView::Membership(voters)) if voters == &[7]
        ));
        // Restart: the node comes back as the same group's leader, with a vote no older than the
        // one it persisted (Raft §5.2), and serves linearizable reads of what it acknowledged.
        let node = MetadataNode::with_storage(7, NodeSettings::default(), storage, None)
            .await
            .expect("restarts");
        wait_for_leader(&node).await;
        let metrics = node.metrics().expect("running");
        assert!(
            metrics.vote >= vote,
            "vote went back: {} < {vote}",
            metrics.vote
        );
        assert_eq!(node.read("a").await.expect("read a").as_deref(), Some("3"));
        node.propose_change("c", "4")
            .await
            .expect("write after restart");
        node.shutdown().await;
    }

    #[test]
    fn a_second_handle_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _first = DiskStore::open(dir.path()).expect("opens");
        let error = DiskStore::open(dir.path()).expect_err("the file is locked");
        assert!(matches!(error, DiskStoreError::Open { .. }), "{error}");
    }

    #[test]
    fn a_batch_persists_only_what_it_touched_and_a_snapshot_replaces_everything() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, loaded) = DiskStore::open(dir.path()).expect("opens");
        assert!(loaded.log.is_empty() && loaded.vote.is_none());
        let mut machine = StateMachineData::default();
        machine.kv.insert("x".into(), "1".into());
        machine.kv.insert("y".into(), "2".into());
        let touched = BTreeSet::from(["x".to_string()]);
        store
            .save_applied(&machine, &touched, false)
            .expect("saves");
        drop(store);
        let (store, loaded) = DiskStore::open(dir.path()).expect("reopens");
        let keys: Vec<_> = loaded.state_machine.kv.keys().cloned().collect();
        assert_eq!(keys, ["x"], "only the touched key was written");
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "s1".into(),
        };
        let mut snapshot_machine = StateMachineData::default();
        snapshot_machine.kv.insert("z".into(), "9".into());
        store
            .install_snapshot(&meta, b"data", &snapshot_machine)
            .expect("installs");
        drop(store);
        let (_store, loaded) = DiskStore::open(dir.path()).expect("reopens");
        let keys: Vec<_> = loaded.state_machine.kv.keys().cloned().collect();
        assert_eq!(keys, ["z"], "the snapshot replaced the whole map");
        assert_eq!(
            loaded.snapshot.map(|(m, d)| (m.snapshot_id, d)),
            Some(("s1".to_string(), b"data".to_vec()))
        );
    }
}
