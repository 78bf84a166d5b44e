//! `ComputeNode`: takes the seed's SQL, serves point reads from a row cache, and coordinates
//! transactions.
//!
//! Cache freshness (seed CACHE-001/002). Storage publishes every committed write on the
//! invalidation bus before acknowledging it. A listener task applies invalidations to the
//! cache as they arrive, so rows disappear within milliseconds. A read first notes the bus's
//! published seq and waits (bounded) until its node has applied every invalidation up to it,
//! so a row older than a write acknowledged before the read began is never served. A node that
//! lagged past the bus's capacity, or could not catch up within the bound, drops its cache.
//!
//! Faults (`faults.rs`). A killed node refuses every call, drops its cache and stops its
//! listener and its recovery task; a restart serves again with an empty cache subscribed from
//! the bus's current seq. A paused node holds every call, every commit step and its listener
//! at a gate until resumed. An isolated node refuses every call and misses invalidations (its
//! listener stops), so healing drops the cache and subscribes afresh before it serves.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::cache::RowCache;
use super::error::{ComputeError, CrashPoint};
use super::faults::NodeFaults;
use super::records::CommitRecords;
use super::transaction::Transaction;
use super::two_phase::{Decision, TxId};
use crate::sql::{bind_row, parse_statement, Projection, Row, SqlStatement, SqlValue, ToSqlValue};
use crate::storage::{Invalidation, NodeError};
use crate::storage_cluster::{project, ClusterError, QueryResult, ResultRow, StorageCluster};

/// How a compute node behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComputeOptions {
    /// Most rows in the cache.
    pub cache_capacity: usize,
    /// The longest a read waits for its node to apply the invalidations published before it
    /// began; past it the node drops its cache and reads storage.
    pub sync_timeout: Duration,
    /// The longest a write waits for another transaction's intent on its key.
    pub lock_wait_timeout: Duration,
    /// A transaction whose intent blocks a writer this long, with no recorded decision, is
    /// presumed abandoned (its coordinator crashed): the waiter records an abort for it.
    pub abandoned_after: Duration,
    /// The longest one commit-record call retries.
    pub record_timeout: Duration,
    /// How often the node looks for transactions abandoned by crashed coordinators (intents
    /// older than `abandoned_after`) and settles them from their commit records; `None`: only
    /// when a writer is blocked or [`ComputeNode::recover_transactions`] is called.
    pub recovery_interval: Option<Duration>,
    /// Test aid, deliberately unsafe (`--unsafe skip-invalidation`): invalidations are
    /// ignored and reads do not wait for them, so cached rows go stale.
    pub unsafe_skip_invalidation: bool,
    /// Test aid, deliberately unsafe (`--unsafe no-2pc`): commit tells each participant in
    /// turn to apply its intents, with no prepare and no commit record, so a coordinator that
    /// dies between two participants leaves a half-applied transaction that recovery cannot
    /// complete (it aborts the rest).
    pub unsafe_no_2pc: bool,
}

impl Default for ComputeOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
            sync_timeout: Duration::from_secs(1),
            lock_wait_timeout: Duration::from_secs(2),
            abandoned_after: Duration::from_secs(1),
            record_timeout: Duration::from_secs(10),
            recovery_interval: Some(Duration::from_millis(250)),
            unsafe_skip_invalidation: false,
            unsafe_no_2pc: false,
        }
    }
}

/// How often a blocked writer looks again.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(5);

pub(crate) struct ComputeInner {
    pub(crate) index: u32,
    pub(crate) cluster: StorageCluster,
    pub(crate) cache: Arc<RowCache>,
    /// The seq of the last invalidation the listener applied.
    /// Invariant: never decreases, across restarts and heals too.
    applied: Arc<watch::Sender<u64>>,
    pub(crate) options: ComputeOptions,
    next_tx: AtomicU64,
    pub(crate) records: CommitRecords,
    pub(crate) faults: NodeFaults,
    /// The invalidation listener; `None` while the node is killed or isolated.
    listener: Mutex<Option<JoinHandle<()>>>,
    /// The recovery daemon; `None` while killed or without `recovery_interval`.
    recovery: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("compute node lock poisoned: a panic happened while it was held")
}

/// Aborts the task in `slot`, if any.
fn stop(slot: &Mutex<Option<JoinHandle<()>>>) {
    if let Some(task) = lock(slot).take() {
        task.abort();
    }
}

impl Drop for ComputeInner {
    fn drop(&mut self) {
        stop(&self.listener);
        stop(&self.recovery);
    }
}

/// A compute node. Clones share it.
#[derive(Clone)]
pub struct ComputeNode {
    pub(crate) inner: Arc<ComputeInner>,
}

impl std::fmt::Debug for ComputeNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeNode")
            .field("index", &self.inner.index)
            .field("cached_rows", &self.inner.cache.len())
            .field("faults", &self.inner.faults.state())
            .finish()
    }
}

/// Applies invalidations until the bus closes or the task is aborted (the node is killed,
/// isolated or dropped). While the node is paused it applies nothing: the cache falls behind,
/// and reads wait for it (bounded) or drop it.
async fn listen(
    mut receiver: broadcast::Receiver<Invalidation>,
    cache: Arc<RowCache>,
    applied: Arc<watch::Sender<u64>>,
    faults: NodeFaults,
    skip: bool,
) {
    loop {
        faults.wait_while_paused().await;
        match receiver.recv().await {
            Ok(invalidation) => {
                cache.apply_invalidation(
                    invalidation.seq,
                    &invalidation.table,
                    &invalidation.key,
                    skip,
                );
                applied.send_replace(invalidation.seq);
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "compute node lagged on invalidations; dropping cache"
                );
                cache.clear();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl ComputeNode {
    /// Starts compute node `index` over `cluster`: subscribes to the invalidation bus and
    /// spawns its listener (needs a tokio runtime).
    pub fn start(index: u32, cluster: StorageCluster, options: ComputeOptions) -> Self {
        let records = CommitRecords::new(cluster.metadata().clone(), options.record_timeout);
        let node = Self {
            inner: Arc::new(ComputeInner {
                index,
                cache: Arc::new(RowCache::new(options.cache_capacity)),
                applied: Arc::new(watch::Sender::new(0)),
                options,
                next_tx: AtomicU64::new(1),
                records,
                faults: NodeFaults::new(index),
                listener: Mutex::new(None),
                recovery: Mutex::new(None),
                cluster,
            }),
        };
        node.subscribe(false);
        node.start_recovery();
        node
    }

    /// Subscribes to the invalidation bus from its current seq and (re)starts the listener.
    /// The cache must then hold nothing older than that seq: it is empty at start, and a
    /// restart or heal (`drop_cache`) drops it after subscribing and before a read waiting for
    /// the listener can pass.
    fn subscribe(&self, drop_cache: bool) {
        let inner = &self.inner;
        let mut listener = lock(&inner.listener);
        if let Some(old) = listener.take() {
            old.abort();
        }
        let (receiver, start_seq) = inner.cluster.invalidations().subscribe();
        if drop_cache {
            inner.cache.clear();
        }
        inner.cache.start_at(start_seq);
        inner
            .applied
            .send_modify(|applied| *applied = (*applied).max(start_seq));
        *listener = Some(tokio::spawn(listen(
            receiver,
            Arc::clone(&inner.cache),
            Arc::clone(&inner.applied),
            inner.faults.clone(),
            inner.options.unsafe_skip_invalidation,
        )));
    }

    /// (Re)starts the recovery daemon, if the options ask for one.
    fn start_recovery(&self) {
        let inner = &self.inner;
        let Some(interval) = inner.options.recovery_interval else {
            return;
        };
        let mut recovery = lock(&inner.recovery);
        if let Some(old) = recovery.take() {
            old.abort();
        }
        *recovery = Some(tokio::spawn(recover_periodically(
            inner.cluster.clone(),
            inner.records.clone(),
            inner.faults.clone(),
            interval,
            inner.options.abandoned_after,
        )));
    }

    /// The node's index in its cluster.
    pub fn index(&self) -> u32 {
        self.inner.index
    }

    /// The node's name, `c<index>`, as histories and nemesis records name it.
    pub fn name(&self) -> String {
        format!("c{}", self.inner.index)
    }

    /// Whether the node runs (it is not killed); a paused or isolated node is up.
    pub fn is_up(&self) -> bool {
        !self.inner.faults.state().killed
    }

    /// Whether the node is paused.
    pub fn is_paused(&self) -> bool {
        self.inner.faults.state().paused
    }

    /// Whether the node is reachable (not isolated).
    pub fn is_reachable(&self) -> bool {
        !self.inner.faults.state().isolated
    }

    /// Kills the node, like its process dying: every later call fails with
    /// [`ComputeError::NodeDown`], an in-flight commit stops at its next step with no cleanup
    /// (recovery settles its intents from the commit record), its transactions never roll
    /// back on drop, and it drops its cache and stops its listener and recovery task.
    pub async fn kill(&self) {
        tracing::info!(node = self.inner.index, "kill compute node");
        self.inner.faults.modify(|state| state.killed = true);
        stop(&self.inner.listener);
        stop(&self.inner.recovery);
        self.inner.cache.clear();
    }

    /// Restarts a killed node as a new process: an empty cache, subscribed to invalidations
    /// from the bus's current seq (so it never serves a row older than a write acknowledged
    /// before), and its recovery task. Transactions begun before the kill stay refused.
    pub async fn restart(&self) {
        if self.is_up() {
            return;
        }
        tracing::info!(node = self.inner.index, "restart compute node");
        if self.is_reachable() {
            self.subscribe(true);
        } else {
            // Still cut off: `heal` subscribes.
            self.inner.cache.clear();
        }
        self.start_recovery();
        self.inner.faults.modify(|state| {
            state.killed = false;
            state.incarnation += 1;
        });
    }

    /// Arms a crash: the next commit coordinated by this node that reaches `point` kills the
    /// node there (see [`Self::kill`]), with nothing after the point done. It targets the
    /// moments a random kill almost never hits, such as between two shards' commits. A crash
    /// that has not fired yet is disarmed by [`Self::disarm_crash`] or replaced by another.
    pub fn arm_crash(&self, point: CrashPoint) {
        tracing::info!(
            node = self.inner.index,
            ?point,
            "crash armed on compute node"
        );
        self.inner
            .faults
            .modify(|state| state.armed_crash = Some(point));
    }

    /// Disarms a crash that has not fired; returns whether one was armed.
    pub fn disarm_crash(&self) -> bool {
        let mut armed = false;
        self.inner.faults.modify(|state| {
            armed = state.armed_crash.take().is_some();
        });
        armed
    }

    /// Pauses the node, like `SIGSTOP`: every call, every in-flight commit step and the
    /// invalidation listener wait until [`Self::resume`] (each call bounded only by its
    /// caller's timeout).
    pub fn pause(&self) {
        tracing::info!(node = self.inner.index, "pause compute node");
        self.inner.faults.modify(|state| state.paused = true);
    }

    /// Resumes a paused node. Its cache may be behind; reads wait for the listener to catch up
    /// (bounded) or drop the cache, so none is stale.
    pub fn resume(&self) {
        tracing::info!(node = self.inner.index, "resume compute node");
        self.inner.faults.modify(|state| state.paused = false);
    }

    /// Cuts the node off from clients, storage, the metadata group and the invalidation bus:
    /// every call and in-flight step fails with [`ComputeError::Unreachable`].
    pub fn isolate(&self) {
        tracing::info!(node = self.inner.index, "isolate compute node");
        self.inner.faults.modify(|state| state.isolated = true);
        stop(&self.inner.listener);
    }

    /// Reconnects an isolated node. It missed invalidations, so it subscribes afresh and
    /// drops its cache before it serves again.
    pub fn heal(&self) {
        if self.is_reachable() {
            return;
        }
        tracing::info!(node = self.inner.index, "heal compute node");
        if self.is_up() {
            self.subscribe(true);
        } else {
            // Still killed: `restart` subscribes.
            self.inner.cache.clear();
        }
        self.inner.faults.modify(|state| state.isolated = false);
    }

    /// Passes when the node serves a call: refused when killed or isolated, held while paused.
    pub(crate) async fn gate(&self) -> Result<(), ComputeError> {
        self.inner.faults.gate(None).await
    }

    /// The storage cluster it serves.
    pub fn cluster(&self) -> &StorageCluster {
        &self.inner.cluster
    }

    /// The seed API: whether a row under shard key `key` (of any table) is cached.
    pub async fn cache_contains<K: ToSqlValue>(&self, key: K) -> bool {
        self.inner.cache.contains_key(&key.to_sql_value())
    }

    /// The number of cached rows.
    pub fn cached_rows(&self) -> usize {
        self.inner.cache.len()
    }

    /// The seq of the last invalidation this node applied to its cache (compare with the
    /// bus's `published_seq` to see how far behind it is).
    pub fn applied_invalidation_seq(&self) -> u64 {
        self.inner.cache.applied_seq()
    }

    /// How many times the node dropped its whole cache.
    pub fn cache_drops(&self) -> u64 {
        self.inner.cache.n_drops()
    }

    /// Waits until the node applied every invalidation published before now; `false` if the
    /// bound passed, after which the cache has been dropped.
    async fn sync_invalidations(&self) -> bool {
        let target = self.inner.cluster.invalidations().published_seq();
        let mut applied = self.inner.applied.subscribe();
        let caught_up = tokio::time::timeout(
            self.inner.options.sync_timeout,
            applied.wait_for(|seq| *seq >= target),
        )
        .await;
        match caught_up {
            Ok(Ok(_)) => true,
            _ => {
                tracing::warn!(
                    node = self.inner.index,
                    target,
                    "invalidations not applied in time; dropping cache"
                );
                self.inner.cache.clear();
                false
            }
        }
    }

    /// The committed row of `table` under `key`, from the cache when it is fresh.
    async fn read_point(&self, table: &str, key: &SqlValue) -> Result<Option<Row>, ClusterError> {
        let use_cache =
            self.inner.options.unsafe_skip_invalidation || self.sync_invalidations().await;
        let stamp = self.inner.cache.stamp();
        if use_cache {
            if let Some(row) = self.inner.cache.get(table, key) {
                return Ok(Some(row));
            }
        }
        let row = self
            .inner
            .cluster
            .route(key, |node, epoch| async move {
                node.get(epoch, table, key).await
            })
            .await?;
        if let (true, Some(row)) = (use_cache, &row) {
            self.inner.cache.fill(table, key, row.clone(), stamp);
        }
        Ok(row)
    }

    /// The seed API: runs one statement. Point selects by shard key use the cache; other
    /// selects scatter to storage; writes run as in [`Self::execute`].
    pub async fn query(&self, sql: &str) -> Result<QueryResult, ComputeError> {
        self.gate().await?;
        let statement = parse_statement(sql).map_err(ClusterError::from)?;
        self.run(sql, statement).await
    }

    /// The seed API: runs one write as its own statement; it waits (bounded) for another
    /// transaction's intent on its key, resolving it if that transaction was abandoned.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, ComputeError> {
        self.query(sql).await
    }

    async fn run(&self, sql: &str, statement: SqlStatement) -> Result<QueryResult, ComputeError> {
        match statement {
            SqlStatement::Select {
                for_update: true, ..
            } => Err(StorageCluster::for_update_outside_transaction().into()),
            SqlStatement::Select {
                table,
                projection,
                filter,
                for_update: false,
            } => {
                let schema = self.inner.cluster.schema(&table).await?;
                match filter {
                    Some((column, operand)) if column == schema.shard_key => {
                        let key = operand.bind(&[]);
                        let row = if key == SqlValue::Null {
                            None
                        } else {
                            self.read_point(&schema.name, &key).await?
                        };
                        Ok(result_of(row, &projection))
                    }
                    _ => Ok(self.inner.cluster.query(sql, &[] as &[SqlValue]).await?),
                }
            }
            SqlStatement::Insert {
                table,
                columns,
                rows,
            } => {
                let mut inserted = 0;
                for values in rows {
                    let row = bind_row(&columns, &values, &[]);
                    let cluster = &self.inner.cluster;
                    self.retry_locked(None, || cluster.insert_row(&table, row.clone()))
                        .await?;
                    inserted += 1;
                }
                Ok(QueryResult {
                    rows: Vec::new(),
                    rows_affected: inserted,
                })
            }
            SqlStatement::Update { .. } => {
                let cluster = &self.inner.cluster;
                self.retry_locked(None, || cluster.query(sql, &[] as &[SqlValue]))
                    .await
            }
        }
    }

    /// The seed API: begins a read-committed transaction coordinated by this node.
    /// The transaction belongs to the node's current incarnation: after a kill its statements
    /// and commit fail with [`ComputeError::NodeDown`], even once the node has restarted.
    pub async fn begin_transaction(&self) -> Transaction {
        // Ids are unique across compute nodes: the node index in the high bits.
        let n = self.inner.next_tx.fetch_add(1, Ordering::SeqCst);
        let id = TxId((u64::from(self.inner.index) << 40) | n);
        let incarnation = self.inner.faults.state().incarnation;
        Transaction::new(self.clone(), id, incarnation)
    }

    /// Runs `op` until it is not refused by another transaction's intent, at most
    /// `lock_wait_timeout`; resolves the holder when its decision is recorded, or records an
    /// abort for it once it has blocked us for `abandoned_after`. `incarnation` is the one a
    /// transaction began in (`None` outside a transaction).
    pub(crate) async fn retry_locked<T, F, Fut>(
        &self,
        incarnation: Option<u64>,
        mut op: F,
    ) -> Result<T, ComputeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClusterError>>,
    {
        let started = Instant::now();
        loop {
            // Each attempt passes the gate: a lock wait does not outlive a kill or isolation,
            // and holds while the node is paused.
            self.inner.faults.gate(incarnation).await?;
            match op().await {
                Err(ClusterError::Node(NodeError::Locked { table, key, holder })) => {
                    let waited = started.elapsed();
                    let presume_abandoned = waited >= self.inner.options.abandoned_after;
                    self.resolve(holder, &key, presume_abandoned).await?;
                    if waited >= self.inner.options.lock_wait_timeout {
                        return Err(ComputeError::WriteConflict {
                            table,
                            key,
                            holder,
                            waited,
                        });
                    }
                    tokio::time::sleep(LOCK_POLL_INTERVAL).await;
                }
                other => return other.map_err(ComputeError::from),
            }
        }
    }

    /// Settles `tx` on the owner of `key` from its commit record; with `presume_abandoned`,
    /// records an abort first if no decision is recorded. Returns the decision applied.
    pub(crate) async fn resolve(
        &self,
        tx: TxId,
        key: &SqlValue,
        presume_abandoned: bool,
    ) -> Result<Option<Decision>, ComputeError> {
        let decision = match self.inner.records.lookup(tx).await? {
            Some(decision) => decision,
            None if presume_abandoned => self.inner.records.decide(tx, Decision::Abort).await?,
            None => return Ok(None),
        };
        self.inner
            .cluster
            .route(key, |node, _epoch| async move {
                match decision {
                    Decision::Commit => node.tx_commit(tx),
                    Decision::Abort => node.tx_abort(tx),
                }
            })
            .await?;
        Ok(Some(decision))
    }

    /// Recovery after coordinator crashes: every transaction with intents older than
    /// `max_age` on any storage node is settled from its commit record (no record: an abort
    /// is recorded first). Returns how many (node, transaction) pairs were settled.
    pub async fn recover_transactions(&self, max_age: Duration) -> Result<usize, ComputeError> {
        self.gate().await?;
        recover(&self.inner.cluster, &self.inner.records, max_age).await
    }
}

/// Settles every transaction with intents older than `max_age`; see
/// [`ComputeNode::recover_transactions`].
async fn recover(
    cluster: &StorageCluster,
    records: &CommitRecords,
    max_age: Duration,
) -> Result<usize, ComputeError> {
    let mut settled = 0;
    for handle in cluster.node_handles() {
        let node = cluster.node(handle.id())?;
        for tx in node.stale_transactions(max_age) {
            let decision = match records.lookup(tx).await? {
                Some(decision) => decision,
                None => records.decide(tx, Decision::Abort).await?,
            };
            match decision {
                Decision::Commit => node.tx_commit(tx),
                Decision::Abort => node.tx_abort(tx),
            }
            .map_err(ClusterError::from)?;
            settled += 1;
        }
    }
    Ok(settled)
}

/// The recovery daemon: runs [`recover`] every `interval` until its node is killed or drops
/// (the task is aborted then). A failed round (a node down, no metadata leader) is retried
/// next round; a paused node's daemon waits, an isolated node's skips its rounds.
async fn recover_periodically(
    cluster: StorageCluster,
    records: CommitRecords,
    faults: NodeFaults,
    interval: Duration,
    abandoned_after: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if faults.gate(None).await.is_err() {
            continue;
        }
        match recover(&cluster, &records, abandoned_after).await {
            Ok(0) => {}
            Ok(settled) => tracing::info!(settled, "recovered abandoned transactions"),
            Err(error) => tracing::warn!(%error, "transaction recovery round failed"),
        }
    }
}

/// The result of a point select that found `row` (or nothing).
pub(crate) fn result_of(row: Option<Row>, projection: &Projection) -> QueryResult {
    let rows = match projection {
        Projection::Count(alias) => vec![ResultRow {
            columns: vec![(alias.clone(), SqlValue::Int(i64::from(row.is_some())))],
        }],
        _ => row.iter().map(|row| project(row, projection)).collect(),
    };
    QueryResult {
        rows,
        rows_affected: 0,
    }
}
