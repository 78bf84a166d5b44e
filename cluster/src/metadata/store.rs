//! Durable storage of one metadata node: its vote, Raft log, state machine and snapshot.
//!
//! The storage outlives the openraft instance that uses it: killing a node shuts its Raft down,
//! and restarting it hands the same [`DurableStorage`] to a fresh Raft, exactly as a process
//! restart would reopen its data directory.
//!
//! The state always lives in memory. A node with a data directory ([`DurableStorage::open_dir`])
//! also has a [`DiskStore`], and every mutation (`save_vote`, `save_committed`, `append`,
//! `truncate`, `purge`, `apply`, snapshots) is written through to it, under the same lock and
//! before the openraft call returns, so what openraft was told is durable is on disk, in the
//! order it happened. A process killed with SIGKILL reopens the directory and finds its vote,
//! log and state machine. The simulation uses the same code without a file.

// The error types are fixed by openraft's storage and network traits; boxing them is not ours
// to choose.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::disk_store::{DiskStore, DiskStoreError, LoadedState};
use super::types::{MetadataCommand, MetadataResponse, NodeId, TypeConfig};
use crate::sharding::ShardMap;

/// The key-value state of the metadata state machine, plus what Raft needs to resume it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StateMachineData {
    /// The id of the last applied log entry.
    /// Invariant: `last_applied <= committed` of the log that fed it.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership configuration applied.
    pub last_membership: StoredMembership<NodeId, openraft::BasicNode>,
    /// The key-value map. A `BTreeMap` so that iteration order (and so snapshots) is deterministic.
    pub kv: BTreeMap<String, String>,
    /// Tables, storage nodes and the ownership epoch (sharding). Absent from snapshots taken
    /// before sharding existed, hence the default.
    #[serde(default)]
    pub shard_map: ShardMap,
}

impl StateMachineData {
    /// Applies one command and returns its response (the pure part of the state machine).
    pub fn apply_command(&mut self, command: &MetadataCommand) -> MetadataResponse {
        match command {
            MetadataCommand::Set { key, value } => {
                let previous = self.kv.insert(key.clone(), value.clone());
                MetadataResponse {
                    applied: true,
                    previous,
                    shard_map: None,
                }
            }
            MetadataCommand::CompareAndSet { key, expected, new } => {
                let previous = self.kv.get(key).cloned();
                let applied = previous == *expected;
                if applied {
                    self.kv.insert(key.clone(), new.clone());
                }
                MetadataResponse {
                    applied,
                    previous,
                    shard_map: None,
                }
            }
            MetadataCommand::ShardMap(command) => {
                let outcome = self.shard_map.apply(command);
                MetadataResponse {
                    applied: outcome.is_ok(),
                    previous: None,
                    shard_map: Some(outcome),
                }
            }
        }
    }
}

/// A snapshot as stored: its metadata and the serialized [`StateMachineData`].
#[derive(Clone, Debug)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// Everything a metadata node persists.
#[derive(Debug, Default)]
pub struct StorageState {
    /// The instance allowed to use this storage; bumped when a node is restarted.
    /// Invariant: only handles whose `generation` equals this one may read or write, so a shut
    /// down Raft that still has a task in flight can never touch its successor's state.
    generation: u64,
    /// The last vote this node granted or made (Raft §5.2: persisted before answering).
    vote: Option<Vote<NodeId>>,
    /// The last committed log id this node knows of (an optimisation, not required for safety).
    committed: Option<LogId<NodeId>>,
    /// The log entries, by index.
    /// Invariant: indexes are contiguous and all greater than `last_purged`'s.
    log: BTreeMap<u64, Entry<TypeConfig>>,
    /// The last log id removed from the front of the log.
    last_purged: Option<LogId<NodeId>>,
    /// The applied state machine.
    state_machine: StateMachineData,
    /// The most recent snapshot built or installed.
    snapshot: Option<StoredSnapshot>,
    /// How many snapshots were built, to make snapshot ids unique.
    n_snapshots_built: u64,
}

/// A node's durable storage, shared between the node handle and the Raft instance using it.
#[derive(Clone, Debug, Default)]
pub struct DurableStorage {
    shared: Arc<Mutex<StorageState>>,
    /// The file every mutation is written through to; `None` in the simulation.
    /// Invariant: when `Some`, it holds exactly what `shared` holds, except a `committed` that
    /// may lag (it is not forced to disk).
    disk: Option<Arc<DiskStore>>,
}

impl DurableStorage {
    /// Creates empty storage.
    pub fn new_in_memory() -> Self {
        Self::default()
    }

    /// Opens the storage kept in `data_dir` (created if missing): what a previous run of the
    /// node persisted is loaded, and every later mutation is written through to it.
    pub fn open_dir(data_dir: &Path) -> Result<Self, DiskStoreError> {
        let (disk, loaded) = DiskStore::open(data_dir)?;
        let LoadedState {
            vote,
            committed,
            last_purged,
            log,
            state_machine,
            snapshot,
            n_snapshots_built,
        } = loaded;
        let state = StorageState {
            generation: 0,
            vote,
            committed,
            log,
            last_purged,
            state_machine,
            snapshot: snapshot.map(|(meta, data)| StoredSnapshot { meta, data }),
            n_snapshots_built,
        };
        let storage = Self {
            shared: Arc::new(Mutex::new(state)),
            disk: Some(Arc::new(disk)),
        };
        storage
            .validate()
            .map_err(|reason| DiskStoreError::Corrupt {
                path: data_dir.to_path_buf(),
                what: "log".to_string(),
                reason,
            })?;
        Ok(storage)
    }

    /// Whether the storage is backed by a data directory.
    pub fn is_on_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// Whether nothing was ever stored: no vote, no log, nothing purged, nothing applied. A
    /// node over pristine storage has never been part of a cluster.
    pub fn is_pristine(&self) -> bool {
        let state = self.lock();
        state.vote.is_none()
            && state.log.is_empty()
            && state.last_purged.is_none()
            && state.state_machine.last_applied.is_none()
    }

    /// The index of the last log entry stored, if any.
    pub fn last_log_index(&self) -> Option<u64> {
        let state = self.lock();
        state
            .log
            .keys()
            .next_back()
            .copied()
            .or(state.last_purged.map(|id| id.index))
    }

    fn lock(&self) -> MutexGuard<'_, StorageState> {
        self.shared
            .lock()
            .expect("metadata storage lock poisoned: a panic happened while it was held")
    }

    /// Fences every earlier handle and returns the log and state machine stores of a new Raft
    /// instance.
    pub fn open(&self) -> (LogStore, StateMachineStore) {
        let generation = {
            let mut state = self.lock();
            state.generation += 1;
            state.generation
        };
        let handle = StoreHandle {
            shared: self.clone(),
            generation,
        };
        (LogStore(handle.clone()), StateMachineStore(handle))
    }

    /// The value of `key` in the applied state machine.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().state_machine.kv.get(key).cloned()
    }

    /// A copy of the applied key-value map.
    pub fn state(&self) -> BTreeMap<String, String> {
        self.lock().state_machine.kv.clone()
    }

    /// A copy of the applied shard map, with the id of the last entry applied to it.
    pub fn shard_map(&self) -> (ShardMap, Option<LogId<NodeId>>) {
        let state = self.lock();
        (
            state.state_machine.shard_map.clone(),
            state.state_machine.last_applied,
        )
    }

    /// A copy of the stored log entries, in index order.
    pub fn log_entries(&self) -> Vec<Entry<TypeConfig>> {
        self.lock().log.values().cloned().collect()
    }

    /// The id of the last entry applied to the state machine.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.lock().state_machine.last_applied
    }

    /// Checks the storage invariants; tests call it after every step.
    pub fn validate(&self) -> Result<(), String> {
        let state = self.lock();
        let mut expected_index = state.last_purged.map(|id| id.index + 1);
        for (index, entry) in &state.log {
            if *index != entry.log_id.index {
                return Err(format!("log slot {index} holds entry {}", entry.log_id));
            }
            if let Some(expected) = expected_index {
                if *index != expected {
                    return Err(format!("log gap: expected index {expected}, found {index}"));
                }
            }
            expected_index = Some(index + 1);
        }
        Ok(())
    }
}

/// One Raft instance's access to a [`DurableStorage`], fenced by generation.
#[derive(Clone, Debug)]
struct StoreHandle {
    shared: DurableStorage,
    /// Invariant: fixed for the handle's life; equal to the storage's generation while current.
    generation: u64,
}

impl StoreHandle {
    fn lock(&self) -> Result<MutexGuard<'_, StorageState>, StorageError<NodeId>> {
        let state = self.shared.lock();
        if state.generation != self.generation {
            let error = io::Error::other(format!(
                "storage handle of generation {} is fenced by generation {}",
                self.generation, state.generation
            ));
            return Err(StorageIOError::write(&error).into());
        }
        Ok(state)
    }

    /// Writes through to the node's file, if it has one; `to_error` says what was being
    /// written, for openraft (which stops the node on any storage error).
    fn persist(
        &self,
        write: impl FnOnce(&DiskStore) -> Result<(), DiskStoreError>,
        to_error: fn(openraft::AnyError) -> StorageIOError<NodeId>,
    ) -> Result<(), StorageError<NodeId>> {
        let Some(disk) = self.shared.disk.as_deref() else {
            return Ok(());
        };
        write(disk).map_err(|error| {
            tracing::error!(%error, "metadata storage write failed");
            to_error(openraft::AnyError::new(&error)).into()
        })
    }
}

/// The Raft log half of a node's storage (openraft `RaftLogStorage`).
#[derive(Clone, Debug)]
pub struct LogStore(StoreHandle);

/// The state machine half of a node's storage (openraft `RaftStateMachine`).
#[derive(Clone, Debug)]
pub struct StateMachineStore(StoreHandle);

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let state = self.0.lock()?;
        Ok(state
            .log
            .range(range)
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let state = self.0.lock()?;
        let last_log_id = state
            .log
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(state.last_purged);
        Ok(LogState {
            last_purged_log_id: state.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut state = self.0.lock()?;
        self.0
            .persist(|disk| disk.save_vote(vote), StorageIOError::write_vote)?;
        state.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.0.lock()?.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut state = self.0.lock()?;
        self.0
            .persist(|disk| disk.save_committed(committed), StorageIOError::write)?;
        state.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.0.lock()?.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut state = self.0.lock()?;
            let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
            self.0
                .persist(|disk| disk.append(&entries), StorageIOError::write_logs)?;
            for entry in entries {
                state.log.insert(entry.log_id.index, entry);
            }
        }
        // The append is durable: on disk when there is a file (fsynced), else in the map.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut state = self.0.lock()?;
        self.0.persist(
            |disk| disk.truncate(log_id.index),
            StorageIOError::write_logs,
        )?;
        let removed: Vec<u64> = state.log.range(log_id.index..).map(|(i, _)| *i).collect();
        for index in removed {
            state.log.remove(&index);
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut state = self.0.lock()?;
        assert!(
            state.last_purged <= Some(log_id),
            "purge must move forward: purged {:?}, asked {log_id}",
            state.last_purged
        );
        self.0
            .persist(|disk| disk.purge(log_id), StorageIOError::write_logs)?;
        state.last_purged = Some(log_id);
        let removed: Vec<u64> = state.log.range(..=log_id.index).map(|(i, _)| *i).collect();
        for index in removed {
            state.log.remove(&index);
        }
        Ok(())
    }
}

impl StateMachineStore {
    fn build(&self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let mut state = self.0.lock()?;
        let data = serde_json::to_vec(&state.state_machine)
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        state.n_snapshots_built += 1;
        let last_log_id = state.state_machine.last_applied;
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, state.n_snapshots_built),
            None => format!("empty-{}", state.n_snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: state.state_machine.last_membership.clone(),
            snapshot_id,
        };
        let n_built = state.n_snapshots_built;
        self.0.persist(
            |disk| disk.save_snapshot(&meta, &data, n_built),
            StorageIOError::write,
        )?;
        state.snapshot = Some(StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        self.build()
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StorageError<NodeId>,
    > {
        let state = self.0.lock()?;
        Ok((
            state.state_machine.last_applied,
            state.state_machine.last_membership.clone(),
        ))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetadataResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.0.lock()?;
        let mut responses = Vec::new();
        let mut touched_keys = BTreeSet::new();
        let mut shard_map_changed = false;
        for entry in entries {
            assert!(
                state.state_machine.last_applied < Some(entry.log_id),
                "entries are applied in log order: applied {:?}, got {}",
                state.state_machine.last_applied,
                entry.log_id
            );
            state.state_machine.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => MetadataResponse::default(),
                EntryPayload::Normal(command) => {
                    match &command {
                        MetadataCommand::Set { key, .. }
                        | MetadataCommand::CompareAndSet { key, .. } => {
                            touched_keys.insert(key.clone());
                        }
                        MetadataCommand::ShardMap(_) => shard_map_changed = true,
                    }
                    state.state_machine.apply_command(&command)
                }
                EntryPayload::Membership(membership) => {
                    state.state_machine.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership);
                    MetadataResponse::default()
                }
            };
            responses.push(response);
        }
        // The batch is applied in memory first, then persisted as one transaction; if the write
        // fails, openraft stops this node and nothing it applied is acknowledged.
        let machine = &state.state_machine;
        self.0.persist(
            |disk| disk.save_applied(machine, &touched_keys, shard_map_changed),
            StorageIOError::write_state_machine,
        )?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let machine: StateMachineData = serde_json::from_slice(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut state = self.0.lock()?;
        self.0.persist(
            |disk| disk.install_snapshot(meta, &data, &machine),
            StorageIOError::write_state_machine,
        )?;
        state.state_machine = machine;
        state.snapshot = Some(StoredSnapshot {
            meta: meta.clone(),
            data,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let state = self.0.lock()?;
        Ok(state.snapshot.as_ref().map(|stored| Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> MetadataCommand {
        MetadataCommand::Set {
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    #[test]
    fn compare_and_set_applies_only_when_expected_value_matches() {
        let mut machine = StateMachineData::default();
        let cas = |expected: Option<&str>, new: &str| MetadataCommand::CompareAndSet {
            key: "k".to_string(),
            expected: expected.map(str::to_string),
            new: new.to_string(),
        };
        assert!(machine.apply_command(&cas(None, "a")).applied);
        assert!(!machine.apply_command(&cas(None, "b")).applied);
        assert!(!machine.apply_command(&cas(Some("x"), "b")).applied);
        assert!(machine.apply_command(&cas(Some("a"), "b")).applied);
        assert_eq!(machine.kv.get("k").map(String::as_str), Some("b"));
        let response = machine.apply_command(&set("k", "c"));
        assert_eq!(response.previous.as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn reopening_storage_fences_the_previous_instance() {
        let storage = DurableStorage::new_in_memory();
        let (mut old_log, _) = storage.open();
        let vote = Vote::new(1, 0);
        old_log
            .save_vote(&vote)
            .await
            .expect("current handle may write");
        let (mut new_log, _) = storage.open();
        assert!(old_log.save_vote(&Vote::new(2, 0)).await.is_err());
        assert_eq!(new_log.read_vote().await.expect("readable"), Some(vote));
        storage.validate().expect("empty log is valid");
    }
}
