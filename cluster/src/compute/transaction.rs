//! `Transaction`: a read-committed transaction across shards. Statements write intents on the
//! owning storage nodes; `commit` runs two-phase commit, driving the [`Coordinator`] state
//! machine and executing its commands; `rollback` removes the intents everywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::error::{ComputeError, CrashPoint};
use super::node::{result_of, ComputeNode};
use super::two_phase::{Command, Coordinator, CoordinatorState, Decision, TxId, Vote};
use crate::sharding::StorageNodeId;
use crate::sql::{parse_statement, Operand, Projection, Row, SqlError, SqlStatement, SqlValue};
use crate::storage::TxWrite;
use crate::storage_cluster::{validate_row, ClusterError, QueryResult};

/// A transaction handle. Dropping it before commit or rollback rolls it back.
pub struct Transaction {
    compute: ComputeNode,
    id: TxId,
    coordinator: Mutex<Coordinator>,
    /// Set once commit, rollback or a simulated crash has taken over the intents.
    ended: AtomicBool,
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
    pub(crate) fn new(compute: ComputeNode, id: TxId) -> Self {
        Self {
            compute,
            id,
            coordinator: Mutex::new(Coordinator::new(id)),
            ended: AtomicBool::new(false),
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

    /// The seed API: runs one statement inside the transaction. Writes become intents, visible
    /// only to this transaction until it commits.
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, ComputeError> {
        self.check_active()?;
        let statement = parse_statement(sql).map_err(ClusterError::from)?;
        let cluster = self.compute.cluster();
        match statement {
            SqlStatement::Select {
                table,
                projection,
                filter,
            } => self.select(&table, &projection, filter).await,
            SqlStatement::Insert {
                table,
                columns,
                rows,
            } => {
                let schema = cluster.schema(&table).await?;
                let mut inserted = 0;
                for values in rows {
                    let row: Row = columns
                        .iter()
                        .cloned()
                        .zip(values.iter().map(|o| o.bind(&[])))
                        .collect();
                    let key = validate_row(&schema, &row)?;
                    if self.write(&schema.name, &key, TxWrite::Insert(row)).await? {
                        inserted += 1;
                    }
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
                let bound: Vec<(String, SqlValue)> = assignments
                    .iter()
                    .map(|(target, operand)| (target.clone(), operand.bind(&[])))
                    .collect();
                // Type-check the key and every assigned value against the schema.
                let mut check: Row = bound.iter().cloned().collect();
                if check.contains_key(&schema.shard_key) {
                    return Err(ClusterError::ShardKeyUpdate {
                        table: schema.name.clone(),
                        column: schema.shard_key.clone(),
                    }
                    .into());
                }
                check.insert(schema.shard_key.clone(), key.clone());
                validate_row(&schema, &check)?;
                let updated = self
                    .write(&schema.name, &key, TxWrite::Update(bound))
                    .await?;
                Ok(QueryResult {
                    rows: Vec::new(),
                    rows_affected: u64::from(updated),
                })
            }
        }
    }

    /// Writes one intent on the owner of `key`; returns whether a row was written.
    async fn write(
        &self,
        table: &str,
        key: &SqlValue,
        write: TxWrite,
    ) -> Result<bool, ComputeError> {
        let (tx, cluster, write) = (self.id, self.compute.cluster(), &write);
        let (node, written) = self
            .compute
            .retry_locked(|| {
                cluster.route(key, |node, epoch| async move {
                    let written = node.tx_write(epoch, tx, table, key, write).await?;
                    Ok((node.id(), written))
                })
            })
            .await?;
        if written {
            self.coordinator().on_write(node);
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
        let row = cluster
            .route(&key, |node, epoch| {
                let key = &key;
                async move { node.tx_get(epoch, tx, table, key).await }
            })
            .await?;
        Ok(result_of(row, projection))
    }

    /// The seed API: two-phase commit. `Ok` means every participant applied the writes;
    /// [`ComputeError::Aborted`] means none did.
    pub async fn commit(self) -> Result<(), ComputeError> {
        self.run_commit(None).await
    }

    /// Test aid: runs commit up to `point` and stops there as if the coordinator crashed,
    /// leaving the intents for [`ComputeNode::recover_transactions`] or a blocked writer.
    pub async fn commit_then_crash(self, point: CrashPoint) -> Result<(), ComputeError> {
        self.run_commit(Some(point)).await
    }

    /// The seed API: removes the transaction's intents everywhere.
    pub async fn rollback(self) -> Result<(), ComputeError> {
        self.check_active()?;
        let command = self.coordinator().abort();
        self.drive(command, None).await.map(|_| ())
    }

    async fn run_commit(&self, crash: Option<CrashPoint>) -> Result<(), ComputeError> {
        self.check_active()?;
        let command = self.coordinator().begin_commit();
        match self.drive(command, crash).await? {
            Decision::Commit => Ok(()),
            Decision::Abort => Err(ComputeError::Aborted {
                tx: self.id,
                reason: "a participant voted no (its intents were resolved as abandoned)"
                    .to_string(),
            }),
        }
    }

    /// Executes the coordinator's commands until it finishes. Each command moves the machine
    /// forward, so the loop ends after at most four commands.
    async fn drive(
        &self,
        mut command: Command,
        crash: Option<CrashPoint>,
    ) -> Result<Decision, ComputeError> {
        for _ in 0..8 {
            command = match command {
                Command::Prepare(nodes) => {
                    let next = self.prepare(&nodes);
                    if crash == Some(CrashPoint::AfterPrepare) {
                        return Err(self.crash(CrashPoint::AfterPrepare));
                    }
                    next
                }
                Command::RecordDecision(decision) => {
                    let recorded = self.compute.inner.records.decide(self.id, decision).await?;
                    if crash == Some(CrashPoint::AfterDecision) {
                        return Err(self.crash(CrashPoint::AfterDecision));
                    }
                    self.coordinator().on_decision_recorded(recorded)
                }
                Command::Deliver(decision, nodes) => {
                    self.ended.store(true, Ordering::SeqCst);
                    self.deliver(decision, &nodes)?
                }
                Command::Finished(decision) => {
                    self.ended.store(true, Ordering::SeqCst);
                    return Ok(decision);
                }
            };
        }
        unreachable!(
            "2pc: the coordinator of {} did not finish in 8 steps",
            self.id
        )
    }

    fn crash(&self, point: CrashPoint) -> ComputeError {
        self.ended.store(true, Ordering::SeqCst);
        ComputeError::CoordinatorCrashed { tx: self.id, point }
    }

    /// Phase 1. An unreachable participant counts as a no vote: abort is always safe.
    fn prepare(&self, nodes: &[StorageNodeId]) -> Command {
        for &id in nodes {
            let vote = match self.compute.cluster().node(id) {
                Ok(node) => node.tx_prepare(self.id).unwrap_or(Vote::No),
                Err(_) => Vote::No,
            };
            if let Some(next) = self.coordinator().on_vote(id, vote) {
                return next;
            }
        }
        unreachable!(
            "2pc: every participant of {} voted and no decision came",
            self.id
        )
    }

    /// Phase 2.
    fn deliver(
        &self,
        decision: Decision,
        nodes: &[StorageNodeId],
    ) -> Result<Command, ComputeError> {
        let mut finished = None;
        for &id in nodes {
            let applied = self
                .compute
                .cluster()
                .node(id)
                .map_err(|e| e.to_string())
                .and_then(|node| {
                    match decision {
                        Decision::Commit => node.tx_commit(self.id),
                        Decision::Abort => node.tx_abort(self.id),
                    }
                    .map_err(|e| e.to_string())
                });
            if let Err(reason) = applied {
                return Err(ComputeError::Unresolved {
                    tx: self.id,
                    decision: decision.as_str(),
                    node: id,
                    reason,
                });
            }
            finished = self.coordinator().on_delivered(id);
        }
        Ok(finished.expect("2pc: the last delivery finishes the transaction"))
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        // Before a decision may have been recorded, aborting is always safe; after it, the
        // intents are left for recovery to settle from the record.
        let coordinator = self.coordinator();
        let undecided = matches!(
            coordinator.state(),
            CoordinatorState::Active | CoordinatorState::Preparing { .. }
        );
        if !undecided {
            return;
        }
        for &id in coordinator.participants() {
            if let Ok(node) = self.compute.cluster().node(id) {
                if let Err(error) = node.tx_abort(self.id) {
                    tracing::warn!(tx = %self.id, %error, "rollback on drop failed");
                }
            }
        }
    }
}
