//! `StorageNode`: one node's shard of every table, its ownership view, and the hooks the
//! rebalancer uses (export, import, change capture, freeze).
//!
//! Ownership: a node serves a key only if the ring of its current view says it owns the key.
//! A request from a router with a newer epoch makes the node refresh its view from the metadata
//! group first. During a move's switch the rebalancer holds the view's write lock (the freeze),
//! so no read or write of the node interleaves with the final replay and the epoch commit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::{OwnedRwLockWriteGuard, RwLock, RwLockReadGuard};

use super::capture::{CaptureEntry, ChangeCapture};
use super::engine::{
    borrowed, key_bounds, key_hash, stored_key, EngineError, Entry, KeyBounds, StorageEngine,
};
use super::invalidation::InvalidationBus;
use super::memory::MemoryEngine;
use super::redb_engine::RedbEngine;
use crate::compute::two_phase::{ParticipantState, TxId};
use crate::sharding::{MetadataService, MetadataServiceError, Routing, StorageNodeId};
use crate::sql::{apply_assignments, AssignValue, Row, SqlValue, WriteOutcome};

/// Why a storage node did not serve a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The node is killed; nothing was done.
    #[error("storage node {node} is down")]
    Down {
        /// The node.
        node: StorageNodeId,
    },
    /// The node is cut off by a partition; the request was not delivered.
    #[error("storage node {node} is unreachable")]
    Unreachable {
        /// The node.
        node: StorageNodeId,
    },
    /// The node does not own the key at its epoch; nothing was done (the router refreshes).
    #[error("storage node {node} does not own the key at epoch {epoch}")]
    NotOwner {
        /// The node.
        node: StorageNodeId,
        /// The node's epoch.
        epoch: u64,
    },
    /// A scan asked for an epoch other than the node's; nothing was read.
    #[error("storage node {node} is at epoch {node_epoch}, the request at {request_epoch}")]
    EpochMismatch {
        /// The node.
        node: StorageNodeId,
        /// The node's epoch.
        node_epoch: u64,
        /// The request's epoch.
        request_epoch: u64,
    },
    /// An insert found a row with the same key; nothing was written.
    #[error("duplicate key {key} in table {table:?}")]
    DuplicateKey {
        /// The table.
        table: String,
        /// The key.
        key: SqlValue,
    },
    /// The engine failed.
    #[error("storage node {node}: {error}")]
    Engine {
        /// The node.
        node: StorageNodeId,
        /// The engine's error.
        error: EngineError,
    },
    /// A stored row does not decode.
    #[error("table {table:?}: stored row does not decode: {reason}")]
    CorruptRow {
        /// The table.
        table: String,
        /// The decoder's message.
        reason: String,
    },
    /// The node could not refresh its view from the metadata group.
    #[error("storage node could not refresh its shard map: {0}")]
    Metadata(#[from] MetadataServiceError),
    /// Another transaction holds a write intent on the key; nothing was done.
    #[error("key {key} of table {table:?} is locked by the write intent of {holder}")]
    Locked {
        /// The table.
        table: String,
        /// The key.
        key: SqlValue,
        /// The transaction holding the intent.
        holder: TxId,
    },
    /// The transaction is no longer taking writes on this node (it prepared, or a resolver
    /// aborted it); nothing was done.
    #[error("{tx} is {state:?} on storage node {node} and takes no more writes")]
    TransactionNotActive {
        /// The node.
        node: StorageNodeId,
        /// The transaction.
        tx: TxId,
        /// Its state on the node.
        state: ParticipantState,
    },
}

impl NodeError {
    /// Whether a write that failed with this error may nevertheless have been applied.
    pub fn outcome_is_unknown(&self) -> bool {
        // Every other error is raised before the engine is touched.
        matches!(self, Self::Engine { .. })
    }
}

mod tx;

pub use tx::TxWrite;

/// The view a node serves under: `None` until fetched (after a start or restart).
type View = Option<Arc<Routing>>;

struct NodeInner {
    id: StorageNodeId,
    name: String,
    addr: String,
    /// Where the redb file lives; `None` for an in-memory node.
    data_dir: Option<PathBuf>,
    /// The in-memory engine, kept across kill and restart as a disk would be.
    memory: Option<Arc<MemoryEngine>>,
    /// The engine in use.
    /// Invariant: `Some` exactly while `up`.
    engine: Mutex<Option<Arc<dyn StorageEngine>>>,
    /// The ownership view; its write lock is the switch's freeze.
    view: Arc<RwLock<View>>,
    /// Serializes point writes, so a duplicate check, the engine write and the change-log
    /// record happen as one step.
    write_lock: Mutex<()>,
    /// Change logs of moves away from this node.
    captures: Mutex<Vec<Arc<ChangeCapture>>>,
    up: AtomicBool,
    reachable: AtomicBool,
    metadata: MetadataService,
    /// Where committed writes are announced to compute nodes; unset for a bare node.
    invalidations: OnceLock<InvalidationBus>,
    /// Write intents and per-transaction participant states (see `node/tx.rs`).
    /// Lock order: `write_lock` before `transactions`.
    transactions: Mutex<tx::TxTable>,
    /// Test aid, deliberately unsafe: reads return other transactions' intents (dirty reads).
    unsafe_dirty_reads: AtomicBool,
}

/// A storage node. Clones share the node.
#[derive(Clone)]
pub struct StorageNode {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for StorageNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageNode")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .field("up", &self.is_up())
            .field("reachable", &self.is_reachable())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("storage node lock poisoned: a panic happened while it was held")
}

fn decode(table: &str, bytes: &[u8]) -> Result<Row, NodeError> {
    serde_json::from_slice(bytes).map_err(|e| NodeError::CorruptRow {
        table: table.to_string(),
        reason: e.to_string(),
    })
}

/// The stored bytes of a row.
pub(crate) fn encode(row: &Row) -> Vec<u8> {
    serde_json::to_vec(row).expect("a row of SQL values always serializes")
}

impl StorageNode {
    /// Starts a node: in memory, or over `data_dir/storage.redb` when a directory is given.
    pub fn start(
        id: StorageNodeId,
        name: &str,
        addr: &str,
        data_dir: Option<PathBuf>,
        metadata: MetadataService,
    ) -> Result<Self, NodeError> {
        let memory = data_dir.is_none().then(|| Arc::new(MemoryEngine::new()));
        let node = Self {
            inner: Arc::new(NodeInner {
                id,
                name: name.to_string(),
                addr: addr.to_string(),
                data_dir,
                memory,
                engine: Mutex::new(None),
                view: Arc::new(RwLock::new(None)),
                write_lock: Mutex::new(()),
                captures: Mutex::new(Vec::new()),
                up: AtomicBool::new(false),
                reachable: AtomicBool::new(true),
                metadata,
                invalidations: OnceLock::new(),
                transactions: Mutex::new(tx::TxTable::default()),
                unsafe_dirty_reads: AtomicBool::new(false),
            }),
        };
        node.open_engine()?;
        Ok(node)
    }

    fn open_engine(&self) -> Result<(), NodeError> {
        let engine: Arc<dyn StorageEngine> = match (&self.inner.memory, &self.inner.data_dir) {
            (Some(memory), _) => Arc::clone(memory) as Arc<dyn StorageEngine>,
            (None, Some(dir)) => {
                Arc::new(RedbEngine::open(dir).map_err(|error| NodeError::Engine {
                    node: self.inner.id,
                    error,
                })?)
            }
            (None, None) => unreachable!("a node without a data directory has a memory engine"),
        };
        *lock(&self.inner.engine) = Some(engine);
        self.inner.up.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The node's id.
    pub fn id(&self) -> StorageNodeId {
        self.inner.id
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Whether the node runs.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::SeqCst)
    }

    /// Whether the node is reachable (not isolated by a partition).
    pub fn is_reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::SeqCst)
    }

    /// Cuts the node off from clients and peers, or reconnects it.
    pub fn set_reachable(&self, reachable: bool) {
        self.inner.reachable.store(reachable, Ordering::SeqCst);
    }

    /// Kills the node: it stops serving, closes its engine (redb releases its file) and loses
    /// its volatile state (change logs, view). What it acknowledged stays in the engine.
    pub async fn kill(&self) {
        self.inner.up.store(false, Ordering::SeqCst);
        let _writes = lock(&self.inner.write_lock);
        *lock(&self.inner.engine) = None;
        for capture in lock(&self.inner.captures).drain(..) {
            capture.break_with("source node was killed");
        }
        drop(_writes);
        if let Ok(mut view) = self.inner.view.try_write() {
            *view = None;
        }
    }

    /// Restarts a killed node over what its engine holds; it fetches its view on first use.
    pub async fn restart(&self) -> Result<(), NodeError> {
        if self.is_up() {
            return Ok(());
        }
        *self.inner.view.write().await = None;
        self.open_engine()
    }

    pub(crate) fn serving(&self) -> Result<Arc<dyn StorageEngine>, NodeError> {
        if !self.is_reachable() {
            return Err(NodeError::Unreachable {
                node: self.inner.id,
            });
        }
        let engine = lock(&self.inner.engine).clone();
        match engine {
            Some(engine) if self.is_up() => Ok(engine),
            _ => Err(NodeError::Down {
                node: self.inner.id,
            }),
        }
    }

    fn engine_error(&self, error: EngineError) -> NodeError {
        NodeError::Engine {
            node: self.inner.id,
            error,
        }
    }

    /// The node's view, refreshed from the metadata group if older than `epoch`.
    async fn view_at_least(&self, epoch: u64) -> Result<RwLockReadGuard<'_, View>, NodeError> {
        for _ in 0..3 {
            let view = self.inner.view.read().await;
            if view.as_ref().is_some_and(|r| r.epoch() >= epoch) {
                return Ok(view);
            }
            drop(view);
            let fresh = self.inner.metadata.routing().await?;
            self.install_routing(fresh).await;
        }
        Err(NodeError::EpochMismatch {
            node: self.inner.id,
            node_epoch: self.epoch().await.unwrap_or(0),
            request_epoch: epoch,
        })
    }

    /// The epoch of the node's view, if it has one.
    pub async fn epoch(&self) -> Option<u64> {
        self.inner.view.read().await.as_ref().map(|r| r.epoch())
    }

    /// Installs `routing` if it is newer than the view.
    pub async fn install_routing(&self, routing: Arc<Routing>) {
        let mut view = self.inner.view.write().await;
        if view.as_ref().is_none_or(|r| r.epoch() < routing.epoch()) {
            *view = Some(routing);
        }
    }

    /// Freezes the node for a switch: no read or write runs until the guard drops. Install the
    /// new view through the guard before dropping it.
    pub async fn freeze(&self) -> OwnedRwLockWriteGuard<View> {
        Arc::clone(&self.inner.view).write_owned().await
    }

    fn check_owner(&self, view: &View, hash: u64) -> Result<(), NodeError> {
        let routing = view.as_ref().expect("view_at_least returns a view");
        if routing.owner(hash) == Some(self.inner.id) {
            Ok(())
        } else {
            Err(NodeError::NotOwner {
                node: self.inner.id,
                epoch: routing.epoch(),
            })
        }
    }

    /// Writes `value` under `key` and records it in every change log that covers it.
    fn write_locked(
        &self,
        engine: &dyn StorageEngine,
        table: &str,
        key: Vec<u8>,
        hash: u64,
        value: Vec<u8>,
    ) -> Result<(), NodeError> {
        let entry = (key, value);
        engine
            .put_batch(table, std::slice::from_ref(&entry))
            .map_err(|e| self.engine_error(e))?;
        for capture in lock(&self.inner.captures).iter() {
            if capture.covers(hash) {
                capture.record(CaptureEntry {
                    table: table.to_string(),
                    key: entry.0.clone(),
                    value: entry.1.clone(),
                });
            }
        }
        Ok(())
    }

    /// Inserts `row` under `key`; refuses a duplicate key.
    pub async fn insert(
        &self,
        epoch: u64,
        table: &str,
        key: &SqlValue,
        row: &Row,
    ) -> Result<(), NodeError> {
        self.serving()?;
        let hash = key_hash(key);
        let view = self.view_at_least(epoch).await?;
        self.check_owner(&view, hash)?;
        let engine = self.serving()?;
        let stored = stored_key(key);
        let _writes = lock(&self.inner.write_lock);
        self.check_unlocked(table, key, &stored)?;
        if engine
            .get(table, &stored)
            .map_err(|e| self.engine_error(e))?
            .is_some()
        {
            return Err(NodeError::DuplicateKey {
                table: table.to_string(),
                key: key.clone(),
            });
        }
        self.write_locked(engine.as_ref(), table, stored, hash, encode(row))?;
        self.publish_invalidation(table, key);
        Ok(())
    }

    /// Applies `assignments` to the row under `key`. Each expression (`c = c + x`) is evaluated
    /// here, against the committed row, under the write lock, so concurrent read-modify-writes
    /// are never lost; one that fails is [`WriteOutcome::Refused`] and writes nothing.
    pub async fn update(
        &self,
        epoch: u64,
        table: &str,
        key: &SqlValue,
        assignments: &[(String, AssignValue<SqlValue>)],
    ) -> Result<WriteOutcome, NodeError> {
        self.serving()?;
        let hash = key_hash(key);
        let view = self.view_at_least(epoch).await?;
        self.check_owner(&view, hash)?;
        let engine = self.serving()?;
        let stored = stored_key(key);
        let _writes = lock(&self.inner.write_lock);
        self.check_unlocked(table, key, &stored)?;
        let Some(bytes) = engine
            .get(table, &stored)
            .map_err(|e| self.engine_error(e))?
        else {
            return Ok(WriteOutcome::Missing);
        };
        let mut row = decode(table, &bytes)?;
        let schema = view.as_ref().and_then(|routing| routing.table(table));
        if let Err(error) = apply_assignments(&mut row, assignments, schema) {
            return Ok(WriteOutcome::Refused(error));
        }
        self.write_locked(engine.as_ref(), table, stored, hash, encode(&row))?;
        self.publish_invalidation(table, key);
        Ok(WriteOutcome::Written(row))
    }

    /// The row under `key`.
    pub async fn get(
        &self,
        epoch: u64,
        table: &str,
        key: &SqlValue,
    ) -> Result<Option<Row>, NodeError> {
        self.serving()?;
        let view = self.view_at_least(epoch).await?;
        self.check_owner(&view, key_hash(key))?;
        let engine = self.serving()?;
        if self.inner.unsafe_dirty_reads.load(Ordering::SeqCst) {
            if let Some(row) = self.any_intent_row(table, &stored_key(key)) {
                return Ok(Some(row));
            }
        }
        let bytes = engine
            .get(table, &stored_key(key))
            .map_err(|e| self.engine_error(e))?;
        bytes.map(|b| decode(table, &b)).transpose()
    }

    /// The stored-key intervals this node owns at exactly `epoch`, under the view's read lock.
    async fn owned_bounds(
        &self,
        epoch: u64,
    ) -> Result<(RwLockReadGuard<'_, View>, Vec<KeyBounds>), NodeError> {
        let view = self.view_at_least(epoch).await?;
        let routing = view.as_ref().expect("view_at_least returns a view");
        if routing.epoch() != epoch {
            return Err(NodeError::EpochMismatch {
                node: self.inner.id,
                node_epoch: routing.epoch(),
                request_epoch: epoch,
            });
        }
        let bounds = routing
            .ring
            .ranges_of(self.inner.id)
            .iter()
            .flat_map(key_bounds)
            .collect();
        Ok((view, bounds))
    }

    /// Every row of `table` this node owns at exactly `epoch`.
    pub async fn scan_owned(&self, epoch: u64, table: &str) -> Result<Vec<Row>, NodeError> {
        self.serving()?;
        let (_view, bounds) = self.owned_bounds(epoch).await?;
        let engine = self.serving()?;
        let mut rows = Vec::new();
        for (start, end) in &bounds {
            let entries = engine
                .scan(table, borrowed(start), borrowed(end), usize::MAX)
                .map_err(|e| self.engine_error(e))?;
            for (_, value) in entries {
                rows.push(decode(table, &value)?);
            }
        }
        Ok(rows)
    }

    /// The number of rows of `table` this node owns at exactly `epoch`.
    pub async fn count_owned(&self, epoch: u64, table: &str) -> Result<usize, NodeError> {
        self.serving()?;
        let (_view, bounds) = self.owned_bounds(epoch).await?;
        let engine = self.serving()?;
        let mut n = 0;
        for (start, end) in &bounds {
            n += engine
                .count(table, borrowed(start), borrowed(end))
                .map_err(|e| self.engine_error(e))?;
        }
        Ok(n)
    }

    /// Up to `limit` stored entries of `table` within the bounds, after `after` (exclusive).
    pub fn export(
        &self,
        table: &str,
        start: &std::ops::Bound<Vec<u8>>,
        end: &std::ops::Bound<Vec<u8>>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, NodeError> {
        let engine = self.serving()?;
        let start = match after {
            Some(key) => std::ops::Bound::Excluded(key),
            None => borrowed(start),
        };
        engine
            .scan(table, start, borrowed(end), limit)
            .map_err(|e| self.engine_error(e))
    }

    /// Stores entries copied from another node (they overwrite: replay is idempotent).
    pub fn import(&self, table: &str, entries: &[Entry]) -> Result<(), NodeError> {
        let engine = self.serving()?;
        engine
            .put_batch(table, entries)
            .map_err(|e| self.engine_error(e))
    }

    /// Deletes every entry of `table` within the intervals.
    pub fn delete_bounds(&self, table: &str, bounds: &[KeyBounds]) -> Result<(), NodeError> {
        let engine = self.serving()?;
        for (start, end) in bounds {
            engine
                .delete_range(table, borrowed(start), borrowed(end))
                .map_err(|e| self.engine_error(e))?;
        }
        Ok(())
    }

    /// Starts recording writes covered by `capture`; every later write is recorded.
    pub fn start_capture(&self, capture: Arc<ChangeCapture>) -> Result<(), NodeError> {
        self.serving()?;
        // Under the write lock, so no write is half-way between the engine and the log.
        let _writes = lock(&self.inner.write_lock);
        if !self.is_up() {
            return Err(NodeError::Down {
                node: self.inner.id,
            });
        }
        lock(&self.inner.captures).push(capture);
        Ok(())
    }

    /// Stops recording for `capture`.
    pub fn stop_capture(&self, capture: &Arc<ChangeCapture>) {
        lock(&self.inner.captures).retain(|c| !Arc::ptr_eq(c, capture));
    }
}
