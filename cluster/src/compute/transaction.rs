//! `Transaction`: a read-committed transaction across shards. Statements write intents on the
//! owning storage nodes (`SELECT ... FOR UPDATE` a lock-only intent); `commit` runs two-phase
//! commit (`transaction/commit.rs`); `rollback` removes the intents everywhere.
//!
//! A transaction belongs to its compute node's incarnation: once the node is killed, its
//! statements and commit are refused and dropping it rolls nothing back, as a dead process
//! cannot; recovery settles its intents from the commit record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::error::ComputeError;
use super::node::{result_of, ComputeNode};
use super::two_phase::{Coordinator, CoordinatorState, TxId};
use crate::sharding::StorageNodeId;
use crate::sql::{
    bind_row, parse_statement, Operand, Projection, Row, SqlError, SqlStatement, SqlValue,
};
use crate::storage::TxWrite;
use crate::storage_cluster::{validate_row, ClusterError, QueryResult, StorageCluster};

mod commit;

/// A transaction handle. Dropping it before commit or rollback rolls it back (unless its
/// compute node was killed or cut off meanwhile; a paused node rolls back once resumed).
pub struct Transaction {
    compute: ComputeNode,
    id: TxId,
    /// The compute node's incarnation when the transaction began.
    incarnation: u64,
    coordinator: Mutex<Coordinator>,
    /// Set once commit, rollback or a crash (simulated, or the node's) has taken over the
    /// intents.
    ended: AtomicBool,
    /// Set once a statement wrote a row (not merely locked one): its commit has writes at stake.
    wrote: AtomicBool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.id)
            .field("state", self.coordinator().state())
            .finish()
    }
}

impl Transaction {
    pub(crate) fn new(compute: ComputeNode, id: TxId, incarnation: u64) -> Self {
        Self {
            compute,
            id,
            incarnation,
            coordinator: Mutex::new(Coordinator::new(id)),
            ended: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
        }
    }

    /// The transaction's id.
    pub fn id(&self) -> TxId {
        self.id
    }

    fn coordinator(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator
            .lock()
            .expect("coordinator lock poisoned: a panic happened while it was held")
    }

    fn check_active(&self) -> Result<(), ComputeError> {
        if self.ended.load(Ordering::SeqCst) || !self.coordinator().is_active() {
            return Err(ComputeError::TransactionEnded { tx: self.id });
        }
        Ok(())
    }

    /// Passes when the node serves this transaction: refused when it is killed, isolated or
    /// restarted since the transaction began, held while it is paused.
    async fn gate(&self) -> Result<(), ComputeError> {
        self.compute.inner.faults.gate(Some(self.incarnation)).await
    }

    /// The seed API: runs one statement inside the transaction. Writes become intents, visible
    /// only to this transaction until it commits.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, ComputeError> {
        self.check_active()?;
        self.gate().await?;
        let statement = parse_statement(sql).map_err(ClusterError::from)?;
        let cluster = self.compute.cluster();
        match statement {
            SqlStatement::Select {
                table,
                projection,
                filter,
                for_update,
            } => self.select(&table, &projection, filter, for_update).await,
            SqlStatement::Insert {
                table,
                columns,
                rows,
            } => {
                let schema = cluster.schema(&table).await?;
                let mut inserted = 0;
                for values in rows {
                    let row = bind_row(&columns, &values, &[]);
                    let key = validate_row(&schema, &row)?;
                    inserted += self.write(&schema.name, &key, TxWrite::Insert(row)).await?;
                }
                Ok(QueryResult {
                    rows: Vec::new(),
                    rows_affected: inserted,
                })
            }
            SqlStatement::Update {
                table,
                assignments,
                filter: (column, operand),
            } => {
                let schema = cluster.schema(&table).await?;
                if column != schema.shard_key {
                    return Err(ClusterError::from(SqlError::Unsupported {
                        what: format!("UPDATE filtered on {column:?} (only the shard key)"),
                    })
                    .into());
                }
                let key = operand.bind(&[]);
                let bound = StorageCluster::bind_assignments(&schema, &assignments, &[])?;
                // Type-check the key against the schema.
                let check = Row::from([(schema.shard_key.clone(), key.clone())]);
                validate_row(&schema, &check)?;
                let updated = self
                    .write(&schema.name, &key, TxWrite::Update(bound))
                    .await?;
                Ok(QueryResult {
                    rows: Vec::new(),
                    rows_affected: updated,
                })
            }
        }
    }

    /// Writes one intent on the owner of `key`; returns how many rows were written (0 or 1).
    async fn write(
        &self,
        table: &str,
        key: &SqlValue,
        write: TxWrite,
    ) -> Result<u64, ComputeError> {
        let (tx, cluster, write) = (self.id, self.compute.cluster(), &write);
        let (node, outcome) = self
            .compute
            .retry_locked(Some(self.incarnation), || {
                cluster.route(key, |node, epoch| async move {
                    let outcome = node.tx_write(epoch, tx, table, key, write).await?;
                    Ok((node.id(), outcome))
                })
            })
            .await?;
        let written = StorageCluster::rows_written(outcome)?;
        if written > 0 {
            self.coordinator().on_write(node);
            self.wrote.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(written)
    }

    /// The seed API: a point select by shard key, seeing this transaction's own intents and
    /// other transactions' committed rows only (read committed).
    pub async fn query(&self, sql: &str) -> Result<QueryResult, ComputeError> {
        self.execute(sql).await
    }

    async fn select(
        &self,
        table: &str,
        projection: &Projection,
        filter: Option<(String, Operand)>,
        for_update: bool,
    ) -> Result<QueryResult, ComputeError> {
        let cluster = self.compute.cluster();
        let schema = cluster.schema(table).await?;
        let key = match filter {
            Some((column, operand)) if column == schema.shard_key => operand.bind(&[]),
            _ => {
                return Err(ClusterError::from(SqlError::Unsupported {
                    what: "SELECT inside a transaction without `shard_key = value`".to_string(),
                })
                .into())
            }
        };
        let tx = self.id;
        let table = schema.name.as_str();
        if for_update {
            return Ok(result_of(self.lock_row(table, &key).await?, projection));
        }
        let row = cluster
            .route(&key, |node, epoch| {
                let key = &key;
                async move { node.tx_get(epoch, tx, table, key).await }
            })
            .await?;
        Ok(result_of(row, projection))
    }

    /// `SELECT ... FOR UPDATE`: a lock-only intent on the owner of `key`, waiting for another
    /// transaction's intent like a writer; returns the row as locked. A missing row (or a NULL
    /// key) is no row and no lock.
    async fn lock_row(&self, table: &str, key: &SqlValue) -> Result<Option<Row>, ComputeError> {
        if *key == SqlValue::Null {
            return Ok(None);
        }
        let (tx, cluster) = (self.id, self.compute.cluster());
        let (node, row) = self
            .compute
            .retry_locked(Some(self.incarnation), || {
                cluster.route(key, |node, epoch| async move {
                    let row = node.tx_lock(epoch, tx, table, key).await?;
                    Ok((node.id(), row))
                })
            })
            .await?;
        if row.is_some() {
            self.coordinator().on_write(node);
        }
        Ok(row)
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        // Before a decision may have been recorded, aborting is always safe; after it, the
        // intents are left for recovery to settle from the record.
        let participants: Vec<_> = {
            let coordinator = self.coordinator();
            let undecided = matches!(
                coordinator.state(),
                CoordinatorState::Active | CoordinatorState::Preparing { .. }
            );
            if !undecided || coordinator.participants().is_empty() {
                return;
            }
            coordinator.participants().iter().copied().collect()
        };
        let faults = &self.compute.inner.faults;
        if faults.is_serving(Some(self.incarnation)) {
            abort_on(&self.compute, self.id, &participants);
            return;
        }
        // A paused node rolls back once resumed; a killed or cut-off one never does.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (compute, tx, incarnation) = (self.compute.clone(), self.id, self.incarnation);
        runtime.spawn(async move {
            let gate = compute.inner.faults.gate(Some(incarnation));
            if let Ok(Ok(())) = tokio::time::timeout(PAUSED_ROLLBACK_WAIT, gate).await {
                abort_on(&compute, tx, &participants);
            }
        });
    }
}

/// How long a transaction dropped on a paused node waits for the resume to roll back; past it,
/// recovery aborts its intents as abandoned.
const PAUSED_ROLLBACK_WAIT: Duration = Duration::from_secs(30);

/// Removes `tx`'s intents on `participants` (a rollback on drop).
fn abort_on(compute: &ComputeNode, tx: TxId, participants: &[StorageNodeId]) {
    for &id in participants {
        if let Ok(node) = compute.cluster().node(id) {
            if let Err(error) = node.tx_abort(tx) {
                tracing::warn!(%tx, %error, "rollback on drop failed");
            }
        }
    }
}
