//! `MemberDisk`: what a shard member that runs as its own process keeps on disk, in one redb
//! file per data directory (`shard-member.redb`): its identity, its epoch record, and for a
//! data node its log and commit index.
//!
//! A member saves after every step that changed its durable state and before it acts on the
//! step (sends a message or answers a client), in one fsynced transaction, so a SIGKILL at any
//! point leaves on disk at least everything the member told anyone. The log is saved
//! incrementally: entries from the lowest index changed since the last save on
//! ([`ReplicaLog::take_changed_from`]) are rewritten, and entries past the end removed.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::log::ReplicaLog;
use super::message::{Entry, EpochRecord, LogIndex};
use super::protocol::ReplicaDurable;
use super::witness::WitnessDurable;
use crate::metadata::NodeId;

/// The file's name inside the data directory.
pub const MEMBER_FILE_NAME: &str = "shard-member.redb";

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const IDENTITY: &str = "identity";
const RECORD: &str = "record";
const COMMIT_INDEX: &str = "commit_index";

/// Why the member's file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MemberDiskError {
    /// The file could not be opened, read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The file holds something that does not decode, or a log that is not a log.
    #[error("{path}: {what} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The file belongs to another member (a data directory reused for another node).
    #[error("{path} belongs to {found}, not to {expected}")]
    WrongMember {
        /// The file.
        path: PathBuf,
        /// The member this process is.
        expected: String,
        /// The member the file names.
        found: String,
    },
}

/// Which member a file belongs to, as saved in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MemberIdentity {
    /// The shard.
    pub shard: usize,
    /// The node id within the shard's protocol.
    pub id: NodeId,
    /// Whether it is a witness (else a data node).
    pub witness: bool,
}

impl std::fmt::Display for MemberIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.witness { "witness" } else { "data node" };
        write!(f, "{kind} {} of shard {}", self.id, self.shard)
    }
}

/// What a member's file held when it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The saved record; `None` for a file never saved to (a first start).
    pub record: Option<EpochRecord>,
    /// The saved commit index (data nodes).
    pub commit_index: LogIndex,
    /// The saved log (data nodes).
    pub entries: Vec<Entry>,
    /// Whether the file named no member before this open: no earlier process ran as this
    /// member here (a process writes its identity before it serves anything).
    pub first_start: bool,
}

impl Stored {
    /// The data node's durable state, or `initial` when nothing was ever saved.
    pub fn replica_durable(
        self,
        initial: EpochRecord,
        path: &Path,
    ) -> Result<ReplicaDurable, MemberDiskError> {
        let log =
            ReplicaLog::from_entries(self.entries).map_err(|reason| MemberDiskError::Corrupt {
                path: path.to_path_buf(),
                what: "log".to_owned(),
                reason,
            })?;
        if self.commit_index > log.last_index() {
            return Err(MemberDiskError::Corrupt {
                path: path.to_path_buf(),
                what: COMMIT_INDEX.to_owned(),
                reason: format!(
                    "commit index {} past the log's end {}",
                    self.commit_index,
                    log.last_index()
                ),
            });
        }
        Ok(ReplicaDurable {
            record: self.record.unwrap_or(initial),
            log,
            commit_index: self.commit_index,
        })
    }

    /// The witness's durable state, or `initial` when nothing was ever saved.
    pub fn witness_durable(self, initial: EpochRecord) -> WitnessDurable {
        WitnessDurable {
            record: self.record.unwrap_or(initial),
        }
    }
}

/// A member's open file, and what it last saved (to skip saves that change nothing).
#[derive(Debug)]
pub struct MemberDisk {
    path: PathBuf,
    /// Invariant: the only handle to the file in this process (redb locks it).
    db: Database,
    saved_record: Option<EpochRecord>,
    saved_commit_index: LogIndex,
    saved_last_index: LogIndex,
    /// How many transactions were committed (each one fsync).
    n_saves: u64,
}

impl MemberDisk {
    /// Opens (or creates) the file in `data_dir` for `identity`, and reads what it holds.
    pub fn open(
        data_dir: &Path,
        identity: &MemberIdentity,
    ) -> Result<(Self, Stored), MemberDiskError> {
        let path = data_dir.join(MEMBER_FILE_NAME);
        let io_at = |reason: String| MemberDiskError::Io {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| io_at(format!("create {}: {e}", data_dir.display())))?;
        let db = Database::create(&path).map_err(|e| io_at(e.to_string()))?;
        let mut disk = Self {
            path,
            db,
            saved_record: None,
            saved_commit_index: 0,
            saved_last_index: 0,
            n_saves: 0,
        };
        let (found, mut stored) = disk.load()?;
        stored.first_start = found.is_none();
        match found {
            Some(found) if found != *identity => {
                return Err(MemberDiskError::WrongMember {
                    path: disk.path.clone(),
                    expected: identity.to_string(),
                    found: found.to_string(),
                })
            }
            Some(_) => {}
            None => disk.write_identity(identity)?,
        }
        disk.saved_record = stored.record;
        disk.saved_commit_index = stored.commit_index;
        disk.saved_last_index = stored.entries.len() as LogIndex;
        Ok((disk, stored))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many fsynced transactions this handle committed.
    pub fn n_saves(&self) -> u64 {
        self.n_saves
    }

    fn io(&self, error: impl std::fmt::Display) -> MemberDiskError {
        MemberDiskError::Io {
            path: self.path.clone(),
            reason: error.to_string(),
        }
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, MemberDiskError> {
        postcard::from_bytes(bytes).map_err(|e| MemberDiskError::Corrupt {
            path: self.path.clone(),
            what: what.to_owned(),
            reason: e.to_string(),
        })
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, MemberDiskError> {
        postcard::to_allocvec(value).map_err(|e| self.io(format!("encode: {e}")))
    }

    fn load(&self) -> Result<(Option<MemberIdentity>, Stored), MemberDiskError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let mut stored = Stored::default();
        let mut identity = None;
        match txn.open_table(STATE) {
            Ok(table) => {
                if let Some(bytes) = table.get(IDENTITY).map_err(|e| self.io(e))? {
                    identity = Some(self.decode(IDENTITY, bytes.value())?);
                }
                if let Some(bytes) = table.get(RECORD).map_err(|e| self.io(e))? {
                    stored.record = Some(self.decode(RECORD, bytes.value())?);
                }
                if let Some(bytes) = table.get(COMMIT_INDEX).map_err(|e| self.io(e))? {
                    stored.commit_index = self.decode(COMMIT_INDEX, bytes.value())?;
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.io(e)),
        }
        match txn.open_table(LOG) {
            Ok(table) => {
                for item in table.iter().map_err(|e| self.io(e))? {
                    let (index, bytes) = item.map_err(|e| self.io(e))?;
                    let entry: Entry =
                        self.decode(&format!("log entry {}", index.value()), bytes.value())?;
                    stored.entries.push(entry);
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.io(e)),
        }
        Ok((identity, stored))
    }

    fn write_identity(&mut self, identity: &MemberIdentity) -> Result<(), MemberDiskError> {
        let bytes = self.encode(identity)?;
        let mut txn = self.db.begin_write().map_err(|e| self.io(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.io(e))?;
        {
            let mut table = txn.open_table(STATE).map_err(|e| self.io(e))?;
            table
                .insert(IDENTITY, bytes.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))?;
        self.n_saves += 1;
        Ok(())
    }

    /// Saves what changed of a data node's durable state: `log_changed_from` is what
    /// [`ReplicaLog::take_changed_from`] returned since the last save. Does nothing (and no
    /// fsync) when nothing changed.
    pub fn save_replica(
        &mut self,
        durable: &ReplicaDurable,
        log_changed_from: Option<LogIndex>,
    ) -> Result<(), MemberDiskError> {
        let record_changed = self.saved_record != Some(durable.record);
        let commit_changed = self.saved_commit_index != durable.commit_index;
        if !record_changed && !commit_changed && log_changed_from.is_none() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(|e| self.io(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.io(e))?;
        {
            let mut state = txn.open_table(STATE).map_err(|e| self.io(e))?;
            if record_changed {
                let bytes = self.encode(&durable.record)?;
                state
                    .insert(RECORD, bytes.as_slice())
                    .map_err(|e| self.io(e))?;
            }
            if commit_changed {
                let bytes = self.encode(&durable.commit_index)?;
                state
                    .insert(COMMIT_INDEX, bytes.as_slice())
                    .map_err(|e| self.io(e))?;
            }
            if let Some(from) = log_changed_from {
                let mut log = txn.open_table(LOG).map_err(|e| self.io(e))?;
                let last = durable.log.last_index();
                for index in from.max(1)..=last {
                    let entry = durable.log.get(index).expect("index within the log");
                    let bytes = self.encode(entry)?;
                    log.insert(index, bytes.as_slice())
                        .map_err(|e| self.io(e))?;
                }
                for index in (last + 1).max(from)..=self.saved_last_index {
                    log.remove(index).map_err(|e| self.io(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.io(e))?;
        self.n_saves += 1;
        self.saved_record = Some(durable.record);
        self.saved_commit_index = durable.commit_index;
        self.saved_last_index = durable.log.last_index();
        Ok(())
    }

    /// Saves a witness's record if it changed.
    pub fn save_witness(&mut self, durable: &WitnessDurable) -> Result<(), MemberDiskError> {
        if self.saved_record == Some(durable.record) {
            return Ok(());
        }
        let bytes = self.encode(&durable.record)?;
        let mut txn = self.db.begin_write().map_err(|e| self.io(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.io(e))?;
        {
            let mut state = txn.open_table(STATE).map_err(|e| self.io(e))?;
            state
                .insert(RECORD, bytes.as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))?;
        self.n_saves += 1;
        self.saved_record = Some(durable.record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RECORD_1: EpochRecord = EpochRecord {
        epoch: 1,
        primary: 0,
        synchronous: true,
    };

    fn identity() -> MemberIdentity {
        MemberIdentity {
            shard: 0,
            id: 0,
            witness: false,
        }
    }

    fn reopen(dir: &Path) -> ReplicaDurable {
        let (disk, stored) = MemberDisk::open(dir, &identity()).expect("reopen");
        stored
            .replica_durable(RECORD_1, disk.path())
            .expect("valid state")
    }

    #[test]
    fn a_replica_reads_back_exactly_what_it_saved_through_appends_and_truncations() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut disk, stored) = MemberDisk::open(dir.path(), &identity()).expect("open");
        let mut durable = stored
            .replica_durable(RECORD_1, disk.path())
            .expect("fresh");
        assert_eq!(durable.log.last_index(), 0);
        for value in ["a", "b", "c"] {
            durable
                .log
                .push(1, b"k".to_vec(), value.as_bytes().to_vec());
        }
        durable.commit_index = 1;
        let changed_from = durable.log.take_changed_from();
        disk.save_replica(&durable, changed_from).expect("save");
        drop(disk);
        let read = reopen(dir.path());
        assert_eq!(read, durable);

        // A new epoch cuts entries 2..3 and appends one of its own.
        let (mut disk, _) = MemberDisk::open(dir.path(), &identity()).expect("open");
        durable.record = EpochRecord {
            epoch: 2,
            primary: 1,
            synchronous: true,
        };
        durable.log.truncate_after(1);
        durable.log.push(2, b"k".to_vec(), b"x".to_vec());
        let changed_from = durable.log.take_changed_from();
        disk.save_replica(&durable, changed_from).expect("save");
        let saves = disk.n_saves();
        // Nothing changed: no transaction.
        let changed_from = durable.log.take_changed_from();
        disk.save_replica(&durable, changed_from).expect("save");
        assert_eq!(disk.n_saves(), saves);
        drop(disk);
        let read = reopen(dir.path());
        assert_eq!(read.log.last_index(), 2);
        assert_eq!(
            read.log.get(2).map(|e| e.value.clone()),
            Some(b"x".to_vec())
        );
        assert_eq!(read, durable);
    }

    /// One change to a data node's durable state, as the protocol makes them.
    #[derive(Clone, Debug)]
    enum Change {
        /// A primary appends a client write.
        Push { value: u8 },
        /// A mirror applies a primary's batch after `prev` (clamped to the log), with entries
        /// of a newer epoch, which cuts any conflicting suffix.
        Replicate { prev: u64, count: u8 },
        /// A deposed primary cuts back to `index` (clamped).
        Truncate { index: u64 },
        /// The commit index moves (clamped to the log).
        Commit { index: u64 },
        /// A save, and sometimes a reopen of the file.
        Save { reopen: bool },
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            4 => any::<u8>().prop_map(|value| Change::Push { value }),
            2 => (0..40u64, 1..5u8).prop_map(|(prev, count)| Change::Replicate { prev, count }),
            1 => (0..40u64).prop_map(|index| Change::Truncate { index }),
            2 => (0..40u64).prop_map(|index| Change::Commit { index }),
            3 => any::<bool>().prop_map(|reopen| Change::Save { reopen }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever sequence of appends, replicated batches, truncations and commits happens
        /// between saves, the file reads back exactly the state of the last save.
        #[test]
        fn incremental_saves_always_read_back_the_state_saved(
            changes in proptest::collection::vec(change(), 1..40)
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let (mut disk, stored) = MemberDisk::open(dir.path(), &identity()).expect("open");
            let mut durable = stored.replica_durable(RECORD_1, disk.path()).expect("fresh");
            let mut saved = durable.clone();
            let mut epoch = 1;
            for change in changes {
                let last = durable.log.last_index();
                match change {
                    Change::Push { value } => {
                        durable.log.push(epoch, b"k".to_vec(), vec![value]);
                    }
                    Change::Replicate { prev, count } => {
                        epoch += 1;
                        let prev = prev.min(last);
                        let prev_epoch = durable.log.epoch_at(prev).expect("within the log");
                        let entries: Vec<Entry> = (0..u64::from(count))
                            .map(|i| Entry {
                                epoch,
                                index: prev + 1 + i,
                                key: b"k".to_vec(),
                                value: vec![i as u8],
                            })
                            .collect();
                        durable
                            .log
                            .append_after(prev, prev_epoch, &entries)
                            .expect("the previous entry matches");
                    }
                    Change::Truncate { index } => durable.log.truncate_after(index.min(last)),
                    Change::Commit { index } => durable.commit_index = index.min(last),
                    Change::Save { reopen } => {
                        durable.commit_index = durable.commit_index.min(durable.log.last_index());
                        let changed_from = durable.log.take_changed_from();
                        disk.save_replica(&durable, changed_from).expect("save");
                        saved = durable.clone();
                        if reopen {
                            drop(disk);
                            let (again, stored) =
                                MemberDisk::open(dir.path(), &identity()).expect("reopen");
                            disk = again;
                            let read = stored
                                .replica_durable(RECORD_1, disk.path())
                                .expect("valid state");
                            prop_assert_eq!(&read, &saved);
                        }
                    }
                }
                durable.commit_index = durable.commit_index.min(durable.log.last_index());
            }
            drop(disk);
            prop_assert_eq!(reopen(dir.path()), saved);
        }
    }

    #[test]
    fn a_data_directory_of_another_member_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (disk, stored) = MemberDisk::open(dir.path(), &identity()).expect("open");
        assert!(stored.first_start);
        drop(disk);
        let (disk, stored) = MemberDisk::open(dir.path(), &identity()).expect("reopen");
        assert!(!stored.first_start, "a reopened file has had a member");
        drop(disk);
        let other = MemberIdentity {
            shard: 0,
            id: 2,
            witness: true,
        };
        let error = MemberDisk::open(dir.path(), &other).expect_err("foreign file");
        assert!(
            matches!(error, MemberDiskError::WrongMember { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_witness_keeps_its_last_vote() {
        let dir = tempfile::tempdir().expect("temp dir");
        let witness = MemberIdentity {
            shard: 3,
            id: 11,
            witness: true,
        };
        let (mut disk, stored) = MemberDisk::open(dir.path(), &witness).expect("open");
        let mut durable = stored.witness_durable(RECORD_1);
        durable.record.epoch = 7;
        disk.save_witness(&durable).expect("save");
        drop(disk);
        let (_, stored) = MemberDisk::open(dir.path(), &witness).expect("reopen");
        assert_eq!(stored.witness_durable(RECORD_1), durable);
    }
}
