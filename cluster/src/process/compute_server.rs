//! [`ComputeServer`]: a compute node as a process. It takes the seed's point SQL over TCP,
//! keeps rows of the replicated shards in a [`RowCache`], and holds a cache lease from every
//! data member of every shard (see [`super::compute_protocol`]), so that a row served from its
//! cache is never older than a write any member has exposed.
//!
//! Rows live in the replicated shards' registers: the key is `(table, shard key value)`, the
//! value a cell holding the row (postcard bytes, see `cells`); a consistent-hash ring over the
//! shards places each key. A table's shard key is recorded in the metadata group
//! (`table/<name>`), so every compute node agrees on it. Every write is a compare-and-set of
//! the cell it read, so `UPDATE` expressions (`c = c + 1`) lose no concurrent update, and
//! `INSERT` over an existing row fails as a duplicate key; cross-shard read-committed
//! transactions put intents in cells and commit by one record in the metadata group.
//!
//! What this node does not do, and the in-process [`crate::compute::ComputeNode`] does: scans
//! and `COUNT(*)` over a whole table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

mod cells;
mod routing;

pub use cells::ABANDON_AFTER;
use cells::{Mutation, Transactions};
use routing::Routing;

use super::client::{ClientOptions, MetadataClient};
use super::compute_protocol::{
    ComputeAdminRequest, ComputeClientReply, ComputeClientRequest, ComputeFailure, ComputeReply,
    ComputeRequest, ComputeStatus, Invalidation, LeaseId,
};
use super::ring_record::RingRecord;
use super::shard_client::{MemberAddrs, ShardClient};
use crate::compute::RowCache;
use crate::metadata::NodeId;
use crate::net::tcp::{self, ServeOptions};
use crate::sql::{
    apply_assignments, bind_row, parse_statement, Projection, Row, SqlStatement, SqlValue,
};
use crate::storage::remote::WireValue;

/// Everything a compute node process needs.
#[derive(Clone, Debug)]
pub struct ComputeConfig {
    /// The node's id (its name is `compute-<id>`).
    pub id: u32,
    /// Where it listens (clients, invalidations, admin).
    pub listen: SocketAddr,
    /// The address data members deliver invalidations to; default: `listen`.
    pub advertise: Option<String>,
    /// Every data node of every shard (not the witnesses): `(shard, member id) -> host:port`.
    pub shards: MemberAddrs,
    /// The metadata group's nodes, where table schemas live.
    pub metadata: BTreeMap<NodeId, String>,
    /// Most rows in the cache.
    pub cache_capacity: usize,
    /// The bound on one statement, every attempt included.
    pub statement_timeout: Duration,
    /// The bound on one call to a shard member; it outlasts the member's own request bound.
    pub storage_call_timeout: Duration,
    /// How often each lease is renewed; well inside the members' lease.
    pub renew_interval: Duration,
    /// Taken off each lease, on top of counting it from before the request was sent.
    pub lease_margin: Duration,
    /// Bounds of the listener.
    pub serve: ServeOptions,
    /// Test aid, deliberately unsafe (`--unsafe-skip-invalidation`): invalidations are
    /// acknowledged but not applied, so cached rows go stale.
    pub unsafe_skip_invalidation: bool,
    /// Test aid, deliberately unsafe (`--unsafe-dirty-reads`): a statement reads the row of
    /// another transaction's intent before that transaction commits, and caches it.
    pub unsafe_dirty_reads: bool,
}

impl ComputeConfig {
    /// A node with default bounds.
    pub fn new(
        id: u32,
        listen: SocketAddr,
        shards: MemberAddrs,
        metadata: BTreeMap<NodeId, String>,
    ) -> Self {
        Self {
            id,
            listen,
            advertise: None,
            shards,
            metadata,
            cache_capacity: 100_000,
            statement_timeout: Duration::from_secs(3),
            storage_call_timeout: Duration::from_millis(2_500),
            renew_interval: Duration::from_millis(100),
            lease_margin: Duration::from_millis(20),
            serve: ServeOptions::default(),
            unsafe_skip_invalidation: false,
            unsafe_dirty_reads: false,
        }
    }
}

/// Why a compute node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ComputeServerError {
    /// The configuration is inconsistent.
    #[error("bad compute node configuration: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}

/// A lease as this node counts it.
#[derive(Clone, Copy, Debug)]
struct HeldLease {
    id: LeaseId,
    /// Invariant: no later than the member's own end of the lease.
    until: Instant,
}

#[derive(Debug)]
struct Shared {
    id: u32,
    advertise: String,
    statement_timeout: Duration,
    lease_margin: Duration,
    unsafe_skip_invalidation: bool,
    unsafe_dirty_reads: bool,
    cache: RowCache,
    storage: ShardClient,
    /// A shorter-bounded client for lease renewals.
    lease_client: ShardClient,
    metadata: MetadataClient,
    /// The ring this node routes rows by.
    routing: Mutex<Routing>,
    primaries: Mutex<BTreeMap<usize, NodeId>>,
    leases: Mutex<BTreeMap<(usize, NodeId), HeldLease>>,
    schemas: Mutex<BTreeMap<String, String>>,
    invalidation_seq: AtomicU64,
    /// Tells this run's transaction ids from an earlier run's.
    incarnation: u64,
    transactions: Mutex<Transactions>,
    aborted_abandoned: AtomicU64,
    /// Cells this node wrote, for their tags.
    cell_writes: AtomicU64,
    /// Statements of this node's transactions that gave way to an older transaction.
    wait_die_aborts: AtomicU64,
    /// Compare-and-sets refused behind an unreplicated entry, tried again.
    unreplicated_refusals: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("compute node lock poisoned: a panic happened while it was held")
}

/// A running compute node with its listener.
#[derive(Debug)]
pub struct ComputeServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// Invariant: these run until `shutdown` (the listener, the lease and ring supervisor).
    tasks: Vec<JoinHandle<()>>,
}

impl ComputeServer {
    /// Binds the listener, starts renewing leases, and serves.
    pub async fn start(config: ComputeConfig) -> Result<Self, ComputeServerError> {
        if config.shards.is_empty() {
            return Err(ComputeServerError::Config(
                "no shard members given".to_string(),
            ));
        }
        if config.metadata.is_empty() {
            return Err(ComputeServerError::Config(
                "no metadata nodes given".to_string(),
            ));
        }
        let (listener, local_addr) =
            tcp::bind(config.listen)
                .await
                .map_err(|source| ComputeServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let shared = Arc::new(Shared {
            id: config.id,
            advertise: config
                .advertise
                .clone()
                .unwrap_or_else(|| local_addr.to_string()),
            statement_timeout: config.statement_timeout,
            lease_margin: config.lease_margin,
            unsafe_skip_invalidation: config.unsafe_skip_invalidation,
            unsafe_dirty_reads: config.unsafe_dirty_reads,
            cache: RowCache::new(config.cache_capacity.max(1)),
            storage: ShardClient::new(config.shards.clone(), config.storage_call_timeout),
            lease_client: ShardClient::new(config.shards.clone(), config.renew_interval * 2),
            metadata: MetadataClient::new(
                config.metadata.clone(),
                ClientOptions {
                    op_timeout: config.statement_timeout,
                    ..ClientOptions::default()
                },
            ),
            routing: Mutex::new(Routing::new(RingRecord::initial(&config.shards))),
            primaries: Mutex::new(BTreeMap::new()),
            leases: Mutex::new(BTreeMap::new()),
            schemas: Mutex::new(BTreeMap::new()),
            invalidation_seq: AtomicU64::new(0),
            incarnation: incarnation(),
            transactions: Mutex::new(Transactions::default()),
            aborted_abandoned: AtomicU64::new(0),
            cell_writes: AtomicU64::new(0),
            wait_die_aborts: AtomicU64::new(0),
            unreplicated_refusals: AtomicU64::new(0),
        });
        let mut tasks = vec![tokio::spawn(routing::supervise(
            Arc::clone(&shared),
            config.renew_interval,
        ))];
        let handler_shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(tcp::serve(
            listener,
            config.serve.clone(),
            move |request| {
                let shared = Arc::clone(&handler_shared);
                async move { handle(&shared, request).await }
            },
        )));
        tracing::info!(
            node = config.id,
            addr = %local_addr,
            shards = config.shards.len(),
            unsafe_skip_invalidation = config.unsafe_skip_invalidation,
            unsafe_dirty_reads = config.unsafe_dirty_reads,
            "compute node serving"
        );
        Ok(Self {
            shared,
            local_addr,
            tasks,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The node's status, as the admin endpoint reports it.
    pub fn status(&self) -> ComputeStatus {
        status(&self.shared)
    }

    /// Stops serving; a compute node keeps nothing durable.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(node = self.shared.id, "compute node stopped");
    }
}

/// Renews this node's lease from one data member, forever.
async fn renew(shared: Arc<Shared>, shard: usize, member: NodeId, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let granted = shared
            .lease_client
            .subscribe(shard, member, shared.id, &shared.advertise)
            .await;
        let Ok(lease) = granted else {
            continue;
        };
        let now = Instant::now();
        let until = (sent + Duration::from_millis(lease.duration_ms))
            .checked_sub(shared.lease_margin)
            .unwrap_or(sent);
        let mut leases = lock(&shared.leases);
        let previous = leases.insert(
            (shard, member),
            HeldLease {
                id: lease.id,
                until,
            },
        );
        // A lapse or a new session may have missed invalidations: nothing cached is trusted.
        let fresh_session = previous.is_some_and(|held| held.id != lease.id || held.until <= now);
        if fresh_session {
            shared.cache.clear();
            drop(leases);
            tracing::debug!(
                node = shared.id,
                shard,
                member,
                "lease renewed afresh; cache dropped"
            );
        }
    }
}

impl Shared {
    /// Whether rows of `shard` may be served from the cache now.
    fn cacheable(&self, shard: usize) -> bool {
        let now = Instant::now();
        self.all_members_of(shard, |member| {
            lock(&self.leases)
                .get(&(shard, member))
                .is_some_and(|held| held.until > now)
        })
    }

    /// The shard key column of `table`, from the metadata group the first time.
    async fn shard_key(&self, table: &str) -> Result<String, ComputeFailure> {
        if let Some(key) = lock(&self.schemas).get(table) {
            return Ok(key.clone());
        }
        let stored = self
            .metadata
            .read(&schema_key(table))
            .await
            .map_err(|error| definite(format!("table {table}: metadata: {error}")))?;
        let Some(key) = stored else {
            return Err(definite(format!("no table named {table:?}")));
        };
        lock(&self.schemas).insert(table.to_string(), key.clone());
        Ok(key)
    }

    async fn create_table(&self, table: &str, shard_key: &str) -> Result<(), ComputeFailure> {
        self.metadata
            .write(&schema_key(table), shard_key)
            .await
            .map_err(|error| ComputeFailure {
                message: format!("create table {table}: {error}"),
                outcome_unknown: error.outcome_is_unknown(),
            })?;
        lock(&self.schemas).insert(table.to_string(), shard_key.to_string());
        Ok(())
    }

    /// The committed row of `table` under `key`, from the cache when its leases allow; a
    /// row no transaction locks fills the cache.
    async fn read_row(
        &self,
        table: &str,
        key: &SqlValue,
        deadline: Instant,
    ) -> Result<Option<Row>, ComputeFailure> {
        let bytes = row_key(table, key)?;
        let shard = self.shard_of(&bytes);
        let stamp = self.cache.stamp();
        if self.cacheable(shard) {
            if let Some(row) = self.cache.get(table, key) {
                return Ok(Some(row));
            }
        }
        let stored = self.read_cell(&bytes, deadline).await?;
        let row = self.visible(&stored, None).await?;
        // The row may have been read from another shard than `shard` if the ring changed.
        let shard = self.shard_of(&bytes);
        let may_cache = stored.may_cache(self.unsafe_dirty_reads);
        if let (true, true, Some(row)) = (self.cacheable(shard), may_cache, &row) {
            self.cache.fill(table, key, row.clone(), stamp);
        }
        Ok(row)
    }

    fn apply(&self, invalidation: &Invalidation) {
        let seq = self.invalidation_seq.fetch_add(1, Ordering::SeqCst) + 1;
        if invalidation.drop_all && !self.unsafe_skip_invalidation {
            self.cache.clear();
        }
        for key in &invalidation.keys {
            match decode_key(key) {
                Ok((table, value)) => self.cache.apply_invalidation(
                    seq,
                    &table,
                    &value,
                    self.unsafe_skip_invalidation,
                ),
                // A key this node cannot read is no row it caches; drop everything to be sure.
                Err(_) => self.cache.clear(),
            }
        }
    }

    /// Runs one statement, inside open transaction `txn` or on its own.
    async fn sql(
        &self,
        sql: &str,
        txn: Option<&str>,
    ) -> Result<ComputeClientReply, ComputeFailure> {
        let deadline = Instant::now() + self.statement_timeout;
        if let Some(txn) = txn {
            self.check_open(txn)?;
        }
        let statement = parse_statement(sql).map_err(|error| definite(error.to_string()))?;
        if statement.n_params() > 0 {
            return Err(definite("parameters are not taken over TCP".to_string()));
        }
        match statement {
            SqlStatement::Select {
                table,
                projection,
                filter,
                for_update,
            } => {
                let shard_key = self.shard_key(&table).await?;
                let key = match filter {
                    Some((column, operand)) if column == shard_key => operand.bind(&[]),
                    _ => {
                        return Err(definite(format!(
                            "a compute process serves point selects by the shard key \
                             ({table}.{shard_key} = value); scans run in process only"
                        )))
                    }
                };
                let row = if key == SqlValue::Null {
                    None
                } else if for_update && txn.is_some() {
                    self.mutate(&table, &key, txn, deadline, |_| Ok(Mutation::Lock))
                        .await?
                } else if txn.is_some() {
                    let bytes = row_key(&table, &key)?;
                    let stored = self.read_cell(&bytes, deadline).await?;
                    self.visible(&stored, txn).await?
                } else {
                    self.read_row(&table, &key, deadline).await?
                };
                Ok(rows_reply(row.as_ref(), &projection))
            }
            SqlStatement::Insert {
                table,
                columns,
                rows,
            } => {
                let shard_key = self.shard_key(&table).await?;
                let mut inserted = 0;
                for values in rows {
                    let row = bind_row(&columns, &values, &[]);
                    let key = match row.get(&shard_key) {
                        Some(SqlValue::Null) | None => {
                            return Err(definite(format!(
                                "insert into {table}: no value for the shard key {shard_key}"
                            )))
                        }
                        Some(key) => key.clone(),
                    };
                    self.mutate(&table, &key, txn, deadline, |seen| match seen {
                        // As in process: a committed row, or the transaction's own, is there.
                        Some(_) => Err(definite(format!("duplicate key {key} in table {table:?}"))),
                        None => Ok(Mutation::Put(row.clone())),
                    })
                    .await
                    .map_err(|failure| after_some(failure, inserted))?;
                    inserted += 1;
                }
                Ok(ComputeClientReply::Rows {
                    rows: Vec::new(),
                    rows_affected: inserted,
                })
            }
            SqlStatement::Update {
                table,
                assignments,
                filter: (column, operand),
            } => {
                let shard_key = self.shard_key(&table).await?;
                if column != shard_key {
                    return Err(definite(format!(
                        "updates are by shard key ({table}.{shard_key} = value)"
                    )));
                }
                if assignments.iter().any(|(target, _)| *target == shard_key) {
                    return Err(definite(format!("the shard key {shard_key} cannot change")));
                }
                let bound: Vec<_> = assignments
                    .iter()
                    .map(|(target, assign)| (target.clone(), assign.bind(&[])))
                    .collect();
                let key = operand.bind(&[]);
                // The update reads and replaces the row by compare-and-set, so an expression
                // (`c = c + 1`) never loses a concurrent update.
                let seen = self
                    .mutate(&table, &key, txn, deadline, |seen| {
                        let Some(row) = seen else {
                            return Ok(Mutation::Nothing);
                        };
                        let mut row = row.clone();
                        apply_assignments(&mut row, &bound, None)
                            .map_err(|error| definite(error.to_string()))?;
                        Ok(Mutation::Put(row))
                    })
                    .await?;
                Ok(ComputeClientReply::Rows {
                    rows: Vec::new(),
                    rows_affected: u64::from(seen.is_some()),
                })
            }
        }
    }
}

/// A number no earlier run of a node on this machine used: the start time in nanoseconds,
/// mixed with the process id.
fn incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // Truncation keeps the fast-moving low bits, which is all an id needs.
    (nanos as u64) ^ (u64::from(std::process::id()) << 48)
}

fn definite(message: String) -> ComputeFailure {
    ComputeFailure {
        message,
        outcome_unknown: false,
    }
}

/// A multi-row insert that failed after writing some rows took effect in part.
fn after_some(failure: ComputeFailure, written: u64) -> ComputeFailure {
    failure.unknown_if(written > 0)
}

fn schema_key(table: &str) -> String {
    format!("table/{table}")
}

/// The shard-level key of a row.
fn row_key(table: &str, key: &SqlValue) -> Result<Vec<u8>, ComputeFailure> {
    postcard::to_stdvec(&(table, WireValue::from(key)))
        .map_err(|error| definite(format!("encode key: {error}")))
}

fn decode_key(bytes: &[u8]) -> Result<(String, SqlValue), postcard::Error> {
    let (table, key): (String, WireValue) = postcard::from_bytes(bytes)?;
    Ok((table, SqlValue::from(key)))
}

/// A row as cells hold it.
fn row_to_wire(row: &Row) -> Vec<(String, WireValue)> {
    row.iter()
        .map(|(column, value)| (column.clone(), WireValue::from(value)))
        .collect()
}

fn row_from_wire(wire: &[(String, WireValue)]) -> Row {
    wire.iter()
        .map(|(column, value)| (column.clone(), SqlValue::from(value.clone())))
        .collect()
}

fn rows_reply(row: Option<&Row>, projection: &Projection) -> ComputeClientReply {
    let rows = match projection {
        Projection::Count(alias) => vec![vec![(
            alias.clone(),
            WireValue::Int(i64::from(row.is_some())),
        )]],
        Projection::All => row
            .iter()
            .map(|row| {
                row.iter()
                    .map(|(column, value)| (column.clone(), WireValue::from(value)))
                    .collect()
            })
            .collect(),
        Projection::Columns(columns) => row
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .map(|(column, alias)| {
                        let value = row.get(column).cloned().unwrap_or(SqlValue::Null);
                        (alias.clone(), WireValue::from(&value))
                    })
                    .collect()
            })
            .collect(),
    };
    ComputeClientReply::Rows {
        rows,
        rows_affected: 0,
    }
}

fn status(shared: &Shared) -> ComputeStatus {
    ComputeStatus {
        id: shared.id,
        pid: std::process::id(),
        cached_rows: shared.cache.len(),
        cache_drops: shared.cache.n_drops(),
        invalidations: shared.invalidation_seq.load(Ordering::SeqCst),
        cacheable_shards: shared
            .members()
            .into_keys()
            .filter(|&shard| shared.cacheable(shard))
            .collect(),
        open_transactions: lock(&shared.transactions).n_open(),
        aborted_abandoned: shared.aborted_abandoned.load(Ordering::SeqCst),
        wait_die_aborts: shared.wait_die_aborts.load(Ordering::SeqCst),
        unreplicated_refusals: shared.unreplicated_refusals.load(Ordering::SeqCst),
    }
}

async fn handle(shared: &Shared, request: ComputeRequest) -> ComputeReply {
    match request {
        ComputeRequest::Client(request) => ComputeReply::Client(match request {
            ComputeClientRequest::Sql(sql) => shared.sql(&sql, None).await,
            ComputeClientRequest::Begin => {
                shared.begin().map(|id| ComputeClientReply::Began { id })
            }
            ComputeClientRequest::InTransaction { txn, sql } => shared.sql(&sql, Some(&txn)).await,
            ComputeClientRequest::Commit(txn) => shared
                .commit(&txn)
                .await
                .map(|shards| ComputeClientReply::Committed { shards }),
            ComputeClientRequest::Rollback(txn) => shared
                .rollback(&txn)
                .await
                .map(|()| ComputeClientReply::RolledBack),
            ComputeClientRequest::CreateTable { table, shard_key } => shared
                .create_table(&table, &shard_key)
                .await
                .map(|()| ComputeClientReply::Created),
            ComputeClientRequest::CacheContains(key) => Ok(ComputeClientReply::Cached(
                shared.cache.contains_key(&SqlValue::from(key)),
            )),
        }),
        ComputeRequest::Invalidate(invalidation) => {
            shared.apply(&invalidation);
            ComputeReply::Invalidated
        }
        ComputeRequest::Admin(ComputeAdminRequest::Status) => ComputeReply::Admin(status(shared)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_rows_round_trip() {
        let key = SqlValue::Int(-7);
        let bytes = row_key("data", &key).expect("encodes");
        assert_eq!(
            decode_key(&bytes).expect("decodes"),
            ("data".to_string(), key)
        );
        let row = Row::from([
            ("id".to_string(), SqlValue::Int(1)),
            ("name".to_string(), SqlValue::Text("x".to_string())),
            ("gone".to_string(), SqlValue::Null),
        ]);
        assert_eq!(row_from_wire(&row_to_wire(&row)), row);
    }

    #[test]
    fn a_count_reports_whether_the_row_exists() {
        let row = Row::from([("id".to_string(), SqlValue::Int(1))]);
        let count = Projection::Count("cnt".to_string());
        assert_eq!(
            rows_reply(Some(&row), &count),
            ComputeClientReply::Rows {
                rows: vec![vec![("cnt".to_string(), WireValue::Int(1))]],
                rows_affected: 0
            }
        );
    }
}
