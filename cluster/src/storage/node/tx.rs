//! The participant side of two-phase commit on a storage node: write intents, per-transaction
//! participant states, and the invalidation hook of the write path.
//!
//! An intent is a transaction's uncommitted row for one key. Reads by other transactions skip
//! it and see the committed row (read committed); writes by other transactions are refused with
//! [`NodeError::Locked`] until the intent is committed or aborted. Intents live in the node's
//! memory beside its engine: they survive an in-process kill and restart, as the in-memory
//! engine does, but not the loss of the process of a redb-backed node; a participant that
//! lost them votes no, so the transaction aborts rather than half-applies.
//!
//! A lock-only intent (`SELECT ... FOR UPDATE`) holds the committed row unchanged: it blocks
//! other writers like any intent, and committing it writes nothing and announces nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{decode, encode, lock, NodeError, StorageNode};
use crate::compute::two_phase::{ParticipantState, TxId, Vote};
use crate::sql::{apply_assignments, AssignValue, Row, SqlValue, WriteOutcome};
use crate::storage::engine::{key_hash, stored_key};
use crate::storage::InvalidationBus;

/// (table, stored key).
type IntentKey = (String, Vec<u8>);

/// One uncommitted row.
#[derive(Debug)]
struct Intent {
    tx: TxId,
    key: SqlValue,
    row: Row,
    /// Whether the transaction wrote the row; `false` for a lock-only intent, whose `row` is
    /// the committed row it locked.
    changed: bool,
}

/// One transaction's state on this node.
#[derive(Debug)]
struct ParticipantTx {
    state: ParticipantState,
    /// Invariant: every key here has an intent of this transaction in `TxTable::intents`.
    keys: BTreeSet<IntentKey>,
    started: Instant,
}

/// Intents and participant states of one node.
#[derive(Debug, Default)]
pub(crate) struct TxTable {
    intents: BTreeMap<IntentKey, Intent>,
    participants: BTreeMap<TxId, ParticipantTx>,
}

/// A transactional write of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxWrite {
    /// Insert a new row; a committed row or an own intent under the key is a duplicate.
    Insert(Row),
    /// Apply assignments (`c = x`, `c = c + x`, ...) to the row visible to the transaction,
    /// evaluated against it; nothing if there is none.
    Update(Vec<(String, AssignValue<SqlValue>)>),
    /// Lock the row visible to the transaction without changing it (`SELECT ... FOR
    /// UPDATE`); nothing if there is none.
    Lock,
}

impl StorageNode {
    /// Sets the bus committed writes are announced on (once; later calls are ignored).
    pub fn set_invalidation_bus(&self, bus: InvalidationBus) {
        let _ = self.inner.invalidations.set(bus);
    }

    /// Test aid, deliberately unsafe (`--unsafe dirty-reads`): reads return other
    /// transactions' uncommitted intents.
    pub fn set_unsafe_dirty_reads(&self, on: bool) {
        self.inner.unsafe_dirty_reads.store(on, Ordering::SeqCst);
    }

    /// Announces a committed write. Called before the write is acknowledged, so a compute node
    /// that drains its subscription before reading never serves a row older than it.
    pub(super) fn publish_invalidation(&self, table: &str, key: &SqlValue) {
        if let Some(bus) = self.inner.invalidations.get() {
            bus.publish(table, key);
        }
    }

    /// Refuses a plain write to a key that holds an intent (no dirty write, G0).
    pub(super) fn check_unlocked(
        &self,
        table: &str,
        key: &SqlValue,
        stored: &[u8],
    ) -> Result<(), NodeError> {
        let transactions = lock(&self.inner.transactions);
        match transactions
            .intents
            .get(&(table.to_string(), stored.to_vec()))
        {
            Some(intent) => Err(NodeError::Locked {
                table: table.to_string(),
                key: key.clone(),
                holder: intent.tx,
            }),
            None => Ok(()),
        }
    }

    /// The intent row under the key, whoever holds it (only the dirty-read mode asks).
    pub(super) fn any_intent_row(&self, table: &str, stored: &[u8]) -> Option<Row> {
        lock(&self.inner.transactions)
            .intents
            .get(&(table.to_string(), stored.to_vec()))
            .map(|intent| intent.row.clone())
    }

    /// `SELECT ... FOR UPDATE`: locks the row under `key` for `tx` with a lock-only intent
    /// (unless `tx` holds an intent there already) and returns the row as `tx` sees it. A
    /// missing row returns `None` and takes no lock.
    pub async fn tx_lock(
        &self,
        epoch: u64,
        tx: TxId,
        table: &str,
        key: &SqlValue,
    ) -> Result<Option<Row>, NodeError> {
        match self.tx_write(epoch, tx, table, key, &TxWrite::Lock).await? {
            WriteOutcome::Written(row) => Ok(Some(row)),
            WriteOutcome::Missing => Ok(None),
            WriteOutcome::Refused(error) => {
                unreachable!("a lock evaluates no expression, yet it was refused: {error}")
            }
        }
    }

    /// Writes an intent of `tx` and returns the intent's row; an update or lock of a missing
    /// row writes nothing, and an update whose expression fails against the row writes
    /// nothing either.
    pub async fn tx_write(
        &self,
        epoch: u64,
        tx: TxId,
        table: &str,
        key: &SqlValue,
        write: &TxWrite,
    ) -> Result<WriteOutcome, NodeError> {
        self.serving()?;
        let view = self.view_at_least(epoch).await?;
        self.check_owner(&view, key_hash(key))?;
        let engine = self.serving()?;
        let stored = stored_key(key);
        let intent_key = (table.to_string(), stored.clone());
        let _writes = lock(&self.inner.write_lock);
        let mut transactions = lock(&self.inner.transactions);
        let TxTable {
            intents,
            participants,
        } = &mut *transactions;
        if let Some(participant) = participants.get(&tx) {
            if !participant.state.accepts_writes() {
                return Err(NodeError::TransactionNotActive {
                    node: self.inner.id,
                    tx,
                    state: participant.state,
                });
            }
        }
        // The row as the writer sees it: its own intent, else the committed row.
        let (base, changed_before) = match intents.get(&intent_key) {
            Some(intent) if intent.tx != tx => {
                return Err(NodeError::Locked {
                    table: table.to_string(),
                    key: key.clone(),
                    holder: intent.tx,
                })
            }
            Some(intent) => (Some(intent.row.clone()), intent.changed),
            None => {
                let committed = engine
                    .get(table, &stored)
                    .map_err(|e| self.engine_error(e))?
                    .map(|bytes| decode(table, &bytes))
                    .transpose()?;
                (committed, false)
            }
        };
        let (row, changed) = match (write, base) {
            (TxWrite::Insert(_), Some(_)) => {
                return Err(NodeError::DuplicateKey {
                    table: table.to_string(),
                    key: key.clone(),
                })
            }
            (TxWrite::Insert(row), None) => (row.clone(), true),
            (TxWrite::Update(_) | TxWrite::Lock, None) => return Ok(WriteOutcome::Missing),
            (TxWrite::Update(assignments), Some(mut row)) => {
                let schema = view.as_ref().and_then(|routing| routing.table(table));
                if let Err(error) = apply_assignments(&mut row, assignments, schema) {
                    return Ok(WriteOutcome::Refused(error));
                }
                (row, true)
            }
            (TxWrite::Lock, Some(row)) => (row, changed_before),
        };
        let participant = participants.entry(tx).or_insert_with(|| ParticipantTx {
            state: ParticipantState::Working,
            keys: BTreeSet::new(),
            started: Instant::now(),
        });
        participant.keys.insert(intent_key.clone());
        intents.insert(
            intent_key,
            Intent {
                tx,
                key: key.clone(),
                row: row.clone(),
                changed,
            },
        );
        Ok(WriteOutcome::Written(row))
    }

    /// The row under `key` as `tx` sees it: its own intent, else the committed row. Other
    /// transactions' intents are skipped (read committed) unless dirty reads are on.
    pub async fn tx_get(
        &self,
        epoch: u64,
        tx: TxId,
        table: &str,
        key: &SqlValue,
    ) -> Result<Option<Row>, NodeError> {
        self.serving()?;
        let view = self.view_at_least(epoch).await?;
        self.check_owner(&view, key_hash(key))?;
        let engine = self.serving()?;
        let stored = stored_key(key);
        {
            let transactions = lock(&self.inner.transactions);
            if let Some(intent) = transactions
                .intents
                .get(&(table.to_string(), stored.clone()))
            {
                if intent.tx == tx || self.inner.unsafe_dirty_reads.load(Ordering::SeqCst) {
                    return Ok(Some(intent.row.clone()));
                }
            }
        }
        let bytes = engine
            .get(table, &stored)
            .map_err(|e| self.engine_error(e))?;
        bytes.map(|b| decode(table, &b)).transpose()
    }

    /// Phase 1: votes yes if `tx`'s intents are all still here. A node that never saw the
    /// transaction, lost it in a restart, or had it aborted by a resolver votes no.
    pub fn tx_prepare(&self, tx: TxId) -> Result<Vote, NodeError> {
        self.serving()?;
        let mut transactions = lock(&self.inner.transactions);
        Ok(match transactions.participants.get_mut(&tx) {
            Some(participant) => participant.state.prepare(),
            None => Vote::No,
        })
    }

    /// Phase 2, commit: applies `tx`'s intents, announces each write, and forgets the
    /// transaction. Idempotent: a transaction already resolved here is a no-op.
    pub fn tx_commit(&self, tx: TxId) -> Result<(), NodeError> {
        let engine = self.serving()?;
        let _writes = lock(&self.inner.write_lock);
        let mut transactions = lock(&self.inner.transactions);
        let Some(participant) = transactions.participants.get_mut(&tx) else {
            return Ok(());
        };
        participant.state.commit();
        let keys: Vec<IntentKey> = participant.keys.iter().cloned().collect();
        for intent_key in &keys {
            let intent = transactions
                .intents
                .get(intent_key)
                .expect("a participant's keys all hold its intents");
            if !intent.changed {
                // A lock-only intent: the row is as committed, nothing to write or announce.
                continue;
            }
            let (table, stored) = intent_key;
            // Apply before removing: a failed engine write leaves the intent for a retry.
            self.write_locked(
                engine.as_ref(),
                table,
                stored.clone(),
                key_hash(&intent.key),
                encode(&intent.row),
            )?;
            self.publish_invalidation(table, &intent.key);
        }
        for intent_key in &keys {
            transactions.intents.remove(intent_key);
        }
        transactions.participants.remove(&tx);
        Ok(())
    }

    /// Phase 2, abort (or rollback): removes `tx`'s intents and forgets it. Idempotent.
    pub fn tx_abort(&self, tx: TxId) -> Result<(), NodeError> {
        self.serving()?;
        let mut transactions = lock(&self.inner.transactions);
        let Some(mut participant) = transactions.participants.remove(&tx) else {
            return Ok(());
        };
        participant.state.abort();
        for intent_key in &participant.keys {
            transactions.intents.remove(intent_key);
        }
        Ok(())
    }

    /// Transactions with intents here that began more than `max_age` ago (candidates for
    /// resolution after a coordinator crash), in id order.
    pub fn stale_transactions(&self, max_age: Duration) -> Vec<TxId> {
        lock(&self.inner.transactions)
            .participants
            .iter()
            .filter(|(_, p)| p.started.elapsed() >= max_age)
            .map(|(tx, _)| *tx)
            .collect()
    }

    /// Where `tx` is on this node, if it holds intents here.
    pub fn tx_state(&self, tx: TxId) -> Option<ParticipantState> {
        lock(&self.inner.transactions)
            .participants
            .get(&tx)
            .map(|participant| participant.state)
    }

    /// The number of write intents held here (lock-only intents included).
    pub fn intent_count(&self) -> usize {
        lock(&self.inner.transactions).intents.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage_cluster::StorageCluster;

    /// One storage node with table `t` holding `id = 1, n = 0`.
    async fn one_node() -> (StorageCluster, StorageNode, u64) {
        let cluster = StorageCluster::new_test(1).await;
        cluster.create_table("t", "id").await;
        cluster
            .insert("t", vec![("id", 1), ("n", 0)])
            .await
            .expect("insert into a healthy node");
        let node = cluster
            .node(cluster.node_handles()[0].id())
            .expect("the only node");
        let epoch = cluster.routing().epoch();
        (cluster, node, epoch)
    }

    fn increment() -> Vec<(String, AssignValue<SqlValue>)> {
        vec![("n".to_string(), AssignValue::Add(SqlValue::Int(1)))]
    }

    async fn stored_n(node: &StorageNode, epoch: u64) -> SqlValue {
        let row = node.get(epoch, "t", &SqlValue::Int(1)).await.unwrap();
        row.expect("row 1 exists")["n"].clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_plain_increments_are_never_lost() {
        let (cluster, node, epoch) = one_node().await;
        let (n_tasks, n_increments) = (8, 50);
        let tasks: Vec<_> = (0..n_tasks)
            .map(|_| {
                let node = node.clone();
                tokio::spawn(async move {
                    for _ in 0..n_increments {
                        let outcome = node
                            .update(epoch, "t", &SqlValue::Int(1), &increment())
                            .await
                            .unwrap();
                        assert!(matches!(outcome, WriteOutcome::Written(_)), "{outcome:?}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            stored_n(&node, epoch).await,
            SqlValue::Int(n_tasks * n_increments)
        );
        cluster.shutdown().await;
    }

    /// Runs one transactional increment of row 1 as `tx`, retrying while another holds it.
    async fn increment_in_transaction(node: &StorageNode, epoch: u64, tx: TxId) {
        loop {
            match node
                .tx_write(
                    epoch,
                    tx,
                    "t",
                    &SqlValue::Int(1),
                    &TxWrite::Update(increment()),
                )
                .await
            {
                Ok(WriteOutcome::Written(_)) => break,
                Err(NodeError::Locked { .. }) => tokio::task::yield_now().await,
                other => panic!("{tx}: unexpected {other:?}"),
            }
        }
        assert_eq!(node.tx_prepare(tx).unwrap(), Vote::Yes);
        node.tx_commit(tx).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_transactional_increments_are_never_lost() {
        let (cluster, node, epoch) = one_node().await;
        let next_tx = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (node, next_tx) = (node.clone(), Arc::clone(&next_tx));
                tokio::spawn(async move {
                    for _ in 0..25 {
                        let tx = TxId(next_tx.fetch_add(1, Ordering::SeqCst));
                        increment_in_transaction(&node, epoch, tx).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(stored_n(&node, epoch).await, SqlValue::Int(200));
        assert_eq!(node.intent_count(), 0);
        cluster.shutdown().await;
    }

    #[tokio::test]
    async fn an_increment_sees_the_transactions_own_intent() {
        let (cluster, node, epoch) = one_node().await;
        let key = SqlValue::Int(1);
        for _ in 0..3 {
            node.tx_write(epoch, TxId(7), "t", &key, &TxWrite::Update(increment()))
                .await
                .unwrap();
        }
        let own = node.tx_get(epoch, TxId(7), "t", &key).await.unwrap();
        assert_eq!(own.unwrap()["n"], SqlValue::Int(3));
        assert_eq!(
            stored_n(&node, epoch).await,
            SqlValue::Int(0),
            "read committed"
        );
        node.tx_commit(TxId(7)).unwrap();
        assert_eq!(stored_n(&node, epoch).await, SqlValue::Int(3));
        cluster.shutdown().await;
    }

    #[tokio::test]
    async fn a_failed_expression_writes_no_intent() {
        let (cluster, node, epoch) = one_node().await;
        let key = SqlValue::Int(1);
        let concat = vec![(
            "n".to_string(),
            AssignValue::Concat(SqlValue::Text("x".to_string())),
        )];
        let outcome = node
            .tx_write(epoch, TxId(3), "t", &key, &TxWrite::Update(concat.clone()))
            .await
            .unwrap();
        assert!(matches!(outcome, WriteOutcome::Refused(_)), "{outcome:?}");
        assert_eq!(node.intent_count(), 0);
        let plain = node.update(epoch, "t", &key, &concat).await.unwrap();
        assert!(matches!(plain, WriteOutcome::Refused(_)), "{plain:?}");
        assert_eq!(stored_n(&node, epoch).await, SqlValue::Int(0));
        cluster.shutdown().await;
    }

    #[tokio::test]
    async fn a_lock_only_intent_blocks_writers_and_commits_without_a_write() {
        let (cluster, node, epoch) = one_node().await;
        let bus = cluster.invalidations().clone();
        let key = SqlValue::Int(1);
        // A missing row is no row and no lock.
        let missing = node
            .tx_lock(epoch, TxId(1), "t", &SqlValue::Int(2))
            .await
            .unwrap();
        assert_eq!((missing, node.intent_count()), (None, 0));
        // The locked row is returned as committed, and other writers are refused.
        let locked = node.tx_lock(epoch, TxId(1), "t", &key).await.unwrap();
        assert_eq!(locked.unwrap()["n"], SqlValue::Int(0));
        let plain = node.update(epoch, "t", &key, &increment()).await;
        assert!(
            matches!(
                plain,
                Err(NodeError::Locked {
                    holder: TxId(1),
                    ..
                })
            ),
            "{plain:?}"
        );
        let other = node
            .tx_write(epoch, TxId(2), "t", &key, &TxWrite::Update(increment()))
            .await;
        assert!(matches!(other, Err(NodeError::Locked { .. })), "{other:?}");
        // Committing it changes nothing and announces nothing.
        let published = bus.published_seq();
        assert_eq!(node.tx_prepare(TxId(1)).unwrap(), Vote::Yes);
        node.tx_commit(TxId(1)).unwrap();
        assert_eq!(bus.published_seq(), published);
        assert_eq!(node.intent_count(), 0);
        // A lock, then an update by the same transaction, commits the update.
        node.tx_lock(epoch, TxId(4), "t", &key).await.unwrap();
        node.tx_write(epoch, TxId(4), "t", &key, &TxWrite::Update(increment()))
            .await
            .unwrap();
        node.tx_commit(TxId(4)).unwrap();
        assert_eq!(stored_n(&node, epoch).await, SqlValue::Int(1));
        assert_eq!(bus.published_seq(), published + 1);
        cluster.shutdown().await;
    }
}
