//! `ComputeNode`: takes the seed's SQL, serves point reads from a row cache, and coordinates
//! transactions.
//!
//! Cache freshness (seed CACHE-001/002). Storage publishes every committed write on the
//! invalidation bus before acknowledging it. A listener task applies invalidations to the
//! cache as they arrive, so rows disappear within milliseconds. A read first notes the bus's
//! published seq and waits (bounded) until its node has applied every invalidation up to it,
//! so a row older than a write acknowledged before the read began is never served. A node that
//! lagged past the bus's capacity, or could not catch up within the bound, drops its cache.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::cache::RowCache;
use super::error::ComputeError;
use super::records::CommitRecords;
use super::transaction::Transaction;
use super::two_phase::{Decision, TxId};
use crate::sql::{parse_statement, Projection, Row, SqlStatement, SqlValue, ToSqlValue};
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
    applied: watch::Receiver<u64>,
    pub(crate) options: ComputeOptions,
    next_tx: AtomicU64,
    pub(crate) records: CommitRecords,
    listener: JoinHandle<()>,
    recovery: Option<JoinHandle<()>>,
}

impl Drop for ComputeInner {
    fn drop(&mut self) {
        self.listener.abort();
        if let Some(recovery) = &self.recovery {
            recovery.abort();
        }
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
            .finish()
    }
}

/// Applies invalidations until the bus closes or the node drops.
async fn listen(
    mut receiver: broadcast::Receiver<Invalidation>,
    cache: Arc<RowCache>,
    applied: watch::Sender<u64>,
    skip: bool,
) {
    loop {
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
        let cache = Arc::new(RowCache::new(options.cache_capacity));
        let (receiver, start_seq) = cluster.invalidations().subscribe();
        cache.start_at(start_seq);
        let (applied_sender, applied) = watch::channel(start_seq);
        let listener = tokio::spawn(listen(
            receiver,
            Arc::clone(&cache),
            applied_sender,
            options.unsafe_skip_invalidation,
        ));
        let records = CommitRecords::new(cluster.metadata().clone(), options.record_timeout);
        let recovery = options.recovery_interval.map(|interval| {
            tokio::spawn(recover_periodically(
                cluster.clone(),
                records.clone(),
                interval,
                options.abandoned_after,
            ))
        });
        Self {
            inner: Arc::new(ComputeInner {
                index,
                cluster,
                cache,
                applied,
                options,
                next_tx: AtomicU64::new(1),
                records,
                listener,
                recovery,
            }),
        }
    }

    /// The node's index in its cluster.
    pub fn index(&self) -> u32 {
        self.inner.index
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

    /// How many times the node dropped its whole cache.
    pub fn cache_drops(&self) -> u64 {
        self.inner.cache.n_drops()
    }

    /// Waits until the node applied every invalidation published before now; `false` if the
    /// bound passed, after which the cache has been dropped.
    async fn sync_invalidations(&self) -> bool {
        let target = self.inner.cluster.invalidations().published_seq();
        let mut applied = self.inner.applied.clone();
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
                table,
                projection,
                filter,
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
                    let row: Row = columns
                        .iter()
                        .cloned()
                        .zip(values.iter().map(|o| o.bind(&[])))
                        .collect();
                    let cluster = &self.inner.cluster;
                    self.retry_locked(|| cluster.insert_row(&table, row.clone()))
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
                self.retry_locked(|| cluster.query(sql, &[] as &[SqlValue]))
                    .await
            }
        }
    }

    /// The seed API: begins a read-committed transaction coordinated by this node.
    pub async fn begin_transaction(&self) -> Transaction {
        // Ids are unique across compute nodes: the node index in the high bits.
        let n = self.inner.next_tx.fetch_add(1, Ordering::SeqCst);
        let id = TxId((u64::from(self.inner.index) << 40) | n);
        Transaction::new(self.clone(), id)
    }

    /// Runs `op` until it is not refused by another transaction's intent, at most
    /// `lock_wait_timeout`; resolves the holder when its decision is recorded, or records an
    /// abort for it once it has blocked us for `abandoned_after`.
    pub(crate) async fn retry_locked<T, F, Fut>(&self, mut op: F) -> Result<T, ComputeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClusterError>>,
    {
        let started = Instant::now();
        loop {
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

/// The recovery daemon: runs [`recover`] every `interval` until its node drops (the task is
/// aborted then). A failed round (a node down, no metadata leader) is retried next round.
async fn recover_periodically(
    cluster: StorageCluster,
    records: CommitRecords,
    interval: Duration,
    abandoned_after: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
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
