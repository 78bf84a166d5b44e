//! The participant side of two-phase commit on a storage node: write intents, per-transaction
//! participant states, and the invalidation hook of the write path.
//!
//! An intent is a transaction's uncommitted row for one key. Reads by other transactions skip
//! it and see the committed row (read committed); writes by other transactions are refused with
//! [`NodeError::Locked`] until the intent is committed or aborted. Intents live in the node's
//! memory beside its engine: they survive an in-process kill and restart, as the in-memory
//! engine does, but not the loss of the process of a redb-backed node; a participant that
//! lost them votes no, so the transaction aborts rather than half-applies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{decode, encode, lock, NodeError, StorageNode};
use crate::compute::two_phase::{ParticipantState, TxId, Vote};
use crate::sql::{Row, SqlValue};
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
    /// Set columns of the row visible to the transaction; nothing if there is none.
    Update(Vec<(String, SqlValue)>),
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

    /// Writes an intent of `tx`; returns whether a row was written (an update of a missing
    /// row writes nothing).
    pub async fn tx_write(
        &self,
        epoch: u64,
        tx: TxId,
        table: &str,
        key: &SqlValue,
        write: &TxWrite,
    ) -> Result<bool, NodeError> {
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
        let base = match intents.get(&intent_key) {
            Some(intent) if intent.tx != tx => {
                return Err(NodeError::Locked {
                    table: table.to_string(),
                    key: key.clone(),
                    holder: intent.tx,
                })
            }
            Some(intent) => Some(intent.row.clone()),
            None => engine
                .get(table, &stored)
                .map_err(|e| self.engine_error(e))?
                .map(|bytes| decode(table, &bytes))
                .transpose()?,
        };
        let row = match (write, base) {
            (TxWrite::Insert(_), Some(_)) => {
                return Err(NodeError::DuplicateKey {
                    table: table.to_string(),
                    key: key.clone(),
                })
            }
            (TxWrite::Insert(row), None) => row.clone(),
            (TxWrite::Update(_), None) => return Ok(false),
            (TxWrite::Update(assignments), Some(mut row)) => {
                for (column, value) in assignments {
                    row.insert(column.clone(), value.clone());
                }
                row
            }
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
                row,
            },
        );
        Ok(true)
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

    /// The number of write intents held here.
    pub fn intent_count(&self) -> usize {
        lock(&self.inner.transactions).intents.len()
    }
}
