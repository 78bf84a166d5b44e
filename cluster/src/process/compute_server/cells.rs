//! How a compute node process stores rows and runs transactions on the replicated shards: each
//! row is one register holding a cell (the committed row, and the intent of at most one open
//! transaction), changed only by compare-and-set on the shard's primary; a transaction commits
//! by one record in the metadata group, so it takes effect on every shard it wrote or on none.
//!
//! - A statement outside a transaction reads the committed row and replaces it with one
//!   compare-and-set, so two concurrent read-modify-writes of one row never lose either.
//! - A statement inside a transaction puts an intent in the cell (its row, or a lock only for
//!   `SELECT ... FOR UPDATE`); the intent locks the row against every other writer. Readers see
//!   the committed row, or the intent's row once the record says committed (read committed).
//! - Commit writes `txn/<id> = committed` in the metadata group by compare-and-set, then moves
//!   each intent into its cell's committed row; rollback writes `aborted` first, then drops
//!   them. Whoever meets an intent settles it from the record.
//! - Locks follow wait-die: a transaction waits for a younger one, and a younger one gives way
//!   (its statement fails) if the older one's lock outlasts [`YOUNGER_PATIENCE`], so no
//!   deadlock outlasts that.
//! - A writer blocked by an intent whose transaction has no record for [`ABANDON_AFTER`] (or
//!   began that long ago) writes `aborted` by compare-and-set: a coordinator that was killed
//!   never blocks a row for long, and one that was only slow finds its commit refused, never
//!   half applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{definite, lock, row_from_wire, row_key, row_to_wire, Shared};
use crate::process::compute_protocol::ComputeFailure;
use crate::replication::{ReplicationError, WriteCondition};
use crate::sql::{Row, SqlValue};
use crate::storage::remote::WireValue;

/// How long a writer waits on another transaction's intent, with no commit record written,
/// before it presumes that transaction abandoned and aborts it (as in process).
pub const ABANDON_AFTER: Duration = Duration::from_secs(1);

/// How long a transaction waits on an older one's lock before it gives way (wait-die with a
/// little patience: most locks are let go within a few round trips, and giving way at once
/// failed most of the bank workload's five-row reads).
const YOUNGER_PATIENCE: Duration = Duration::from_millis(50);

/// How often a blocked writer looks at the cell again.
const BLOCKED_POLL: Duration = Duration::from_millis(10);

/// How many decided transactions a node remembers (decisions never change, so forgetting one
/// costs only a metadata read).
const DECIDED_CAPACITY: usize = 65_536;

/// Open transactions a node holds at once; `BEGIN` beyond it is refused.
pub(super) const MAX_OPEN_TRANSACTIONS: usize = 10_000;

const COMMITTED: &str = "committed";
const ABORTED: &str = "aborted";

type WireRow = Vec<(String, WireValue)>;

/// A row's register.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cell {
    /// The committed row (`None`: no row).
    committed: Option<WireRow>,
    /// The open transaction that locks the row, if any.
    intent: Option<Intent>,
    /// Unique to the write that made the cell (the writing node's incarnation and a count), so
    /// a compare-and-set that finds these very bytes knows an earlier attempt of its own wrote
    /// them, not another writer that happened to write the same row.
    tag: (u64, u64),
}

/// An open transaction's claim on a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Intent {
    /// The transaction's id (its record is `txn/<id>` in the metadata group).
    txn: String,
    /// The row it writes if it commits; `None`: a lock only.
    row: Option<WireRow>,
    /// When the transaction began (wall clock, ms since the epoch): its age, which orders
    /// transactions for wait-die and tells an abandoned one.
    started_ms: u64,
}

impl Cell {
    fn decode(bytes: Option<&[u8]>) -> Result<Cell, ComputeFailure> {
        bytes.map_or(Ok(Cell::default()), |bytes| {
            postcard::from_bytes(bytes)
                .map_err(|error| definite(format!("a stored row does not decode: {error}")))
        })
    }

    fn encode(&self) -> Result<Vec<u8>, ComputeFailure> {
        postcard::to_stdvec(self).map_err(|error| definite(format!("encode row: {error}")))
    }

    fn committed_row(&self) -> Option<Row> {
        self.committed.as_deref().map(row_from_wire)
    }

    /// The row transaction `txn` sees: its own intent's row, else the committed row.
    fn row_for(&self, txn: Option<&str>) -> Option<Row> {
        match &self.intent {
            Some(intent) if Some(intent.txn.as_str()) == txn => intent
                .row
                .as_deref()
                .map(row_from_wire)
                .or_else(|| self.committed_row()),
            _ => self.committed_row(),
        }
    }

    /// The cell once its intent's transaction is decided.
    fn settled(&self, committed: bool) -> Cell {
        let committed_row = match &self.intent {
            Some(Intent { row: Some(row), .. }) if committed => Some(row.clone()),
            _ => self.committed.clone(),
        };
        Cell {
            committed: committed_row,
            intent: None,
            tag: (0, 0),
        }
    }

    /// The intent of a transaction other than `txn`, if one locks the row.
    fn foreign_intent(&self, txn: Option<&str>) -> Option<&Intent> {
        self.intent
            .as_ref()
            .filter(|intent| Some(intent.txn.as_str()) != txn)
    }
}

/// A row's register as read from its shard's primary: the bytes a compare-and-set expects, and
/// the cell they hold.
#[derive(Clone, Debug)]
pub(super) struct Stored {
    bytes: Option<Vec<u8>>,
    cell: Cell,
}

impl Stored {
    fn new(bytes: Option<Vec<u8>>) -> Result<Self, ComputeFailure> {
        let cell = Cell::decode(bytes.as_deref())?;
        Ok(Stored { bytes, cell })
    }

    /// Whether a row read from this cell may be cached: no transaction locks it, or a
    /// deliberately broken node caches dirty rows too.
    pub(super) fn may_cache(&self, unsafe_dirty_reads: bool) -> bool {
        unsafe_dirty_reads || self.cell.intent.is_none()
    }
}

/// What a statement does to the row it sees.
pub(super) enum Mutation {
    /// Write this row.
    Put(Row),
    /// Leave the row as it is; inside a transaction, lock it (`SELECT ... FOR UPDATE`).
    Lock,
    /// Leave the row as it is and do not lock it (an `UPDATE` that matched no row).
    Nothing,
}

/// How a transaction's record reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Committed,
    Aborted,
    Pending,
}

/// A transaction open on this node.
#[derive(Debug)]
pub(super) struct OpenTxn {
    /// Its id, unique across the node's restarts.
    id: String,
    /// When it began (wall clock, ms since the epoch).
    started_ms: u64,
    /// The rows it put intents on (or may have: the write's outcome was unknown), by shard,
    /// with the cell it last wrote there when that write is known to have been applied.
    intents: BTreeMap<(usize, Vec<u8>), Option<Stored>>,
}

/// The state of a node's transactions.
#[derive(Debug, Default)]
pub(super) struct Transactions {
    /// By id.
    open: HashMap<String, OpenTxn>,
    next: u64,
    /// Decided transactions (`true`: committed).
    decided: HashMap<String, bool>,
}

impl Transactions {
    pub(super) fn n_open(&self) -> usize {
        self.open.len()
    }
}

fn record_key(txn: &str) -> String {
    format!("txn/{txn}")
}

/// How a compare-and-set of a cell went.
enum Put {
    Written(Stored),
    /// Another value was there; it is the current (committed) one.
    Changed(Stored),
    /// An earlier attempt's answer was lost, and the cell holds another value now: whether
    /// that attempt wrote (and was overwritten) or not is unknown. The current one.
    Lost(Stored),
}

/// What a refused compare-and-set means, judged on the committed cell read after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// The committed cell holds this write's bytes: an earlier attempt wrote them.
    Written,
    /// Another writer's cell is committed, and no attempt of this write can have applied.
    Changed,
    /// Another writer's cell is committed, and an attempt whose answer was lost may have
    /// applied before it.
    Lost,
    /// The committed cell is still the expected one: a write (this one's earlier attempt, or
    /// another writer's) waits on the primary for its mirror, or was lost in a failover. Try
    /// again once it settles.
    Pending,
}

/// Judges a refusal from the committed cell `now`, the cell the write `expected`, the bytes it
/// writes (unique to it, by their tag) and whether an earlier attempt may have applied.
/// The primary's refusal names its newest entry, which may not be replicated yet and may yet be
/// lost; so it is never taken as what the cell holds.
fn judge_refusal(
    now: Option<&[u8]>,
    expected: Option<&[u8]>,
    ours: &[u8],
    maybe_applied: bool,
) -> Refusal {
    if now == Some(ours) {
        Refusal::Written
    } else if now == expected {
        Refusal::Pending
    } else if maybe_applied {
        Refusal::Lost
    } else {
        Refusal::Changed
    }
}

/// How long a writer refused behind an unreplicated entry waits before it tries again.
const PENDING_POLL: Duration = Duration::from_millis(2);

impl Shared {
    /// The cell of `key` as the primary of the shard that owns it has it now.
    pub(super) async fn read_cell(
        &self,
        key: &[u8],
        deadline: Instant,
    ) -> Result<Stored, ComputeFailure> {
        let bytes = self
            .on_owner(key, deadline, |shard, member, epoch| {
                self.storage.read_routed(shard, member, key, epoch)
            })
            .await?;
        Stored::new(bytes)
    }

    /// Replaces the cell `expected` holds by `cell`, if it still holds it. A write is
    /// `Written` only once it is committed (replicated): a refusal that names this write's own
    /// bytes (an earlier attempt's answer was lost) is confirmed by a read, and the cell a
    /// refusal hands back is the committed one, never the primary's unreplicated newest entry.
    async fn put_cell(
        &self,
        key: &[u8],
        expected: &Stored,
        mut cell: Cell,
        deadline: Instant,
    ) -> Result<Put, ComputeFailure> {
        cell.tag = (
            self.incarnation,
            self.cell_writes.fetch_add(1, Ordering::SeqCst),
        );
        let bytes = cell.encode()?;
        let maybe_applied = AtomicBool::new(false);
        // Once an attempt may have applied, every failure after it is outcome-unknown: that
        // attempt may still commit.
        let failed =
            |failure: ComputeFailure| failure.unknown_if(maybe_applied.load(Ordering::SeqCst));
        loop {
            let refused = self
                .on_owner(key, deadline, |shard, member, epoch| {
                    let condition = WriteCondition::IfCurrent(expected.bytes.clone());
                    let write =
                        self.storage
                            .write_routed(shard, member, (key, &bytes), condition, epoch);
                    let maybe_applied = &maybe_applied;
                    async move {
                        match write.await {
                            Ok(_) => Ok(false),
                            Err(ReplicationError::ConditionFailed { .. }) => Ok(true),
                            Err(error) => {
                                if error.outcome_is_unknown() {
                                    maybe_applied.store(true, Ordering::SeqCst);
                                }
                                Err(error)
                            }
                        }
                    }
                })
                .await
                .map_err(failed)?;
            if !refused {
                return Ok(Put::Written(Stored {
                    bytes: Some(bytes),
                    cell,
                }));
            }
            let now = self.read_cell(key, deadline).await.map_err(failed)?;
            let maybe_applied = maybe_applied.load(Ordering::SeqCst);
            match judge_refusal(
                now.bytes.as_deref(),
                expected.bytes.as_deref(),
                &bytes,
                maybe_applied,
            ) {
                Refusal::Written => return Ok(Put::Written(now)),
                Refusal::Changed => return Ok(Put::Changed(now)),
                Refusal::Lost => return Ok(Put::Lost(now)),
                Refusal::Pending => {
                    self.unreplicated_refusals.fetch_add(1, Ordering::SeqCst);
                    if Instant::now() + PENDING_POLL >= deadline {
                        return Err(ComputeFailure {
                            message: "the row's newest write was not replicated before the \
                                      statement's deadline"
                                .to_string(),
                            outcome_unknown: maybe_applied,
                        });
                    }
                    tokio::time::sleep(PENDING_POLL).await;
                }
            }
        }
    }

    /// What transaction `txn`'s record says.
    async fn decision(&self, txn: &str) -> Result<Decision, ComputeFailure> {
        if let Some(&committed) = lock(&self.transactions).decided.get(txn) {
            return Ok(if committed {
                Decision::Committed
            } else {
                Decision::Aborted
            });
        }
        let record = self
            .metadata
            .read(&record_key(txn))
            .await
            .map_err(|error| definite(format!("transaction {txn}: metadata: {error}")))?;
        let decision = match record.as_deref() {
            Some(COMMITTED) => Decision::Committed,
            Some(_) => Decision::Aborted,
            None => Decision::Pending,
        };
        if decision != Decision::Pending {
            self.remember(txn, decision == Decision::Committed);
        }
        Ok(decision)
    }

    fn remember(&self, txn: &str, committed: bool) {
        let mut transactions = lock(&self.transactions);
        if transactions.decided.len() >= DECIDED_CAPACITY {
            transactions.decided.clear();
        }
        transactions.decided.insert(txn.to_string(), committed);
    }

    /// Records `decision` for `txn` unless a record is there already; what the record says
    /// after.
    async fn decide(&self, txn: &str, decision: &str) -> Result<Decision, ComputeFailure> {
        let applied = self
            .metadata
            .compare_and_set(&record_key(txn), None, decision)
            .await
            .map_err(|error| ComputeFailure {
                message: format!("transaction {txn}: record {decision}: {error}"),
                outcome_unknown: error.outcome_is_unknown(),
            })?;
        if applied {
            self.remember(txn, decision == COMMITTED);
            return Ok(if decision == COMMITTED {
                Decision::Committed
            } else {
                Decision::Aborted
            });
        }
        self.decision(txn).await
    }

    /// The row `txn` (or a statement outside transactions) reads under `key`: its own intent,
    /// else the committed row, or the row of an intent whose transaction committed.
    pub(super) async fn visible(
        &self,
        stored: &Stored,
        txn: Option<&str>,
    ) -> Result<Option<Row>, ComputeFailure> {
        if let Some(intent) = stored.cell.foreign_intent(txn) {
            if self.unsafe_dirty_reads || self.decision(&intent.txn).await? == Decision::Committed {
                return Ok(stored.cell.settled(true).committed_row());
            }
        }
        Ok(stored.cell.row_for(txn))
    }

    /// Applies `mutation` to the row of `table` under `key` as `txn` (or outside transactions)
    /// sees it, by compare-and-set until no one changed the cell in between; waits while
    /// another transaction locks the row, and aborts that transaction once it looks
    /// abandoned. Returns the row the mutation saw.
    pub(super) async fn mutate<F>(
        &self,
        table: &str,
        key: &SqlValue,
        txn_id: Option<&str>,
        deadline: Instant,
        mutation: F,
    ) -> Result<Option<Row>, ComputeFailure>
    where
        F: Fn(Option<&Row>) -> Result<Mutation, ComputeFailure>,
    {
        let bytes = row_key(table, key)?;
        let shard = self.shard_of(&bytes);
        let started_ms = match txn_id {
            Some(txn) => self.note_intent(txn, shard, &bytes)?,
            None => 0,
        };
        let mut blocked: Option<(String, Instant)> = None;
        let mut stored = self.read_cell(&bytes, deadline).await?;
        loop {
            if let Some(intent) = stored.cell.foreign_intent(txn_id) {
                let holder = intent.txn.clone();
                let decision = match self.decision(&holder).await? {
                    Decision::Pending => {
                        let since = match &blocked {
                            Some((txn, since)) if *txn == holder => *since,
                            _ => {
                                blocked = Some((holder.clone(), Instant::now()));
                                Instant::now()
                            }
                        };
                        let holder_age =
                            Duration::from_millis(wall_ms().saturating_sub(intent.started_ms));
                        let abandoned =
                            since.elapsed() >= ABANDON_AFTER || holder_age >= ABANDON_AFTER;
                        // Wait-die: a transaction waits for a younger one, and a younger one
                        // gives way (its statement fails) unless the older one lets go of the
                        // row within YOUNGER_PATIENCE; a cycle of waits (a deadlock) has a
                        // younger-waits-for-older edge, so it lasts at most that long. A
                        // statement outside transactions holds no lock, so it always waits.
                        let younger = txn_id.is_some_and(|txn| {
                            (started_ms, txn) > (intent.started_ms, holder.as_str())
                        });
                        if !abandoned && younger && since.elapsed() >= YOUNGER_PATIENCE {
                            self.wait_die_aborts.fetch_add(1, Ordering::SeqCst);
                            return Err(definite(format!(
                                "{table} row {key}: locked by the older transaction {holder}; \
                                 this transaction gives way (wait-die)"
                            )));
                        }
                        if !abandoned {
                            if Instant::now() + BLOCKED_POLL >= deadline {
                                return Err(definite(format!(
                                    "{table} row {key}: locked by transaction {holder}"
                                )));
                            }
                            tokio::time::sleep(BLOCKED_POLL).await;
                            stored = self.read_cell(&bytes, deadline).await?;
                            continue;
                        }
                        let decision = self.decide(&holder, ABORTED).await?;
                        if decision == Decision::Aborted {
                            self.aborted_abandoned.fetch_add(1, Ordering::SeqCst);
                            tracing::info!(node = self.id, txn = %holder, "aborted an abandoned transaction");
                        }
                        decision
                    }
                    decision => decision,
                };
                let settled = stored.cell.settled(decision == Decision::Committed);
                stored = match self.put_cell(&bytes, &stored, settled, deadline).await? {
                    Put::Written(now) | Put::Changed(now) | Put::Lost(now) => now,
                };
                continue;
            }
            let seen = stored.cell.row_for(txn_id);
            let cell = match (mutation(seen.as_ref())?, txn_id) {
                (Mutation::Nothing, _) | (Mutation::Lock, None) => return Ok(seen),
                (Mutation::Lock, Some(_)) if stored.cell.intent.is_some() => return Ok(seen),
                (Mutation::Put(row), None) => Cell {
                    committed: Some(row_to_wire(&row)),
                    intent: None,
                    tag: (0, 0),
                },
                (mutation, Some(txn)) => Cell {
                    committed: stored.cell.committed.clone(),
                    intent: Some(Intent {
                        txn: txn.to_string(),
                        started_ms,
                        row: match mutation {
                            Mutation::Put(row) => Some(row_to_wire(&row)),
                            // A lock keeps the transaction's own earlier write, if any.
                            _ => stored.cell.intent.as_ref().and_then(|i| i.row.clone()),
                        },
                    }),
                    tag: (0, 0),
                },
            };
            match self.put_cell(&bytes, &stored, cell, deadline).await? {
                Put::Written(written) => {
                    if let Some(txn) = txn_id {
                        self.wrote_intent(txn, shard, &bytes, written);
                    }
                    return Ok(seen);
                }
                Put::Changed(now) => stored = now,
                Put::Lost(_) => {
                    return Err(ComputeFailure {
                        message: format!(
                            "{table} row {key}: a write whose answer was lost may have been \
                             applied, and the row has changed since"
                        ),
                        outcome_unknown: true,
                    })
                }
            }
        }
    }

    /// Opens a transaction; its id, which names it in later requests. The id carries the
    /// node's incarnation, so an id from before a restart never names a later transaction.
    pub(super) fn begin(&self) -> Result<String, ComputeFailure> {
        let mut transactions = lock(&self.transactions);
        if transactions.open.len() >= MAX_OPEN_TRANSACTIONS {
            return Err(definite(format!(
                "{MAX_OPEN_TRANSACTIONS} transactions are open on this node"
            )));
        }
        transactions.next += 1;
        let id = format!("c{}.{:x}.{}", self.id, self.incarnation, transactions.next);
        transactions.open.insert(
            id.clone(),
            OpenTxn {
                id: id.clone(),
                started_ms: wall_ms(),
                intents: BTreeMap::new(),
            },
        );
        Ok(id)
    }

    /// Fails unless `txn` is open on this node.
    pub(super) fn check_open(&self, txn: &str) -> Result<(), ComputeFailure> {
        if lock(&self.transactions).open.contains_key(txn) {
            Ok(())
        } else {
            Err(no_such_transaction(txn))
        }
    }

    /// Notes that `txn` is about to put an intent on `key`; when `txn` began.
    fn note_intent(&self, txn: &str, shard: usize, key: &[u8]) -> Result<u64, ComputeFailure> {
        let mut transactions = lock(&self.transactions);
        let open = transactions
            .open
            .get_mut(txn)
            .ok_or_else(|| no_such_transaction(txn))?;
        // Until the write is known to be applied, the cell it left is not known.
        open.intents.insert((shard, key.to_vec()), None);
        Ok(open.started_ms)
    }

    /// Notes the cell `txn`'s intent write left on `key`.
    fn wrote_intent(&self, txn: &str, shard: usize, key: &[u8], written: Stored) {
        if let Some(open) = lock(&self.transactions).open.get_mut(txn) {
            open.intents.insert((shard, key.to_vec()), Some(written));
        }
    }

    /// Commits `txn`: its record first, then its intents; the shards it touched.
    pub(super) async fn commit(&self, txn: &str) -> Result<Vec<usize>, ComputeFailure> {
        let txn = lock(&self.transactions)
            .open
            .remove(txn)
            .ok_or_else(|| no_such_transaction(txn))?;
        let shards: Vec<usize> = txn
            .intents
            .keys()
            .map(|(shard, _)| *shard)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if txn.intents.is_empty() {
            return Ok(shards);
        }
        match self.decide(&txn.id, COMMITTED).await? {
            Decision::Committed => {
                self.settle(txn, true).await;
                Ok(shards)
            }
            _ => {
                let aborted = definite(format!(
                    "transaction {} was aborted: a writer waiting on its locks for {:?} \
                     presumed it abandoned",
                    txn.id, ABANDON_AFTER
                ));
                self.settle(txn, false).await;
                Err(aborted)
            }
        }
    }

    /// Rolls `txn` back: its record says aborted, then its intents go.
    pub(super) async fn rollback(&self, txn: &str) -> Result<(), ComputeFailure> {
        let txn = lock(&self.transactions)
            .open
            .remove(txn)
            .ok_or_else(|| no_such_transaction(txn))?;
        if txn.intents.is_empty() {
            return Ok(());
        }
        // Only this node could commit it, and it no longer will: whatever the record says
        // after this, the transaction did not commit.
        let _ = self.decide(&txn.id, ABORTED).await?;
        self.settle(txn, false).await;
        Ok(())
    }

    /// Moves `txn`'s intents out of their cells, all at once; a failure leaves an intent to
    /// whoever meets it next, who settles it from the record.
    async fn settle(&self, txn: OpenTxn, committed: bool) {
        let deadline = Instant::now() + self.statement_timeout;
        let id = txn.id.as_str();
        let settles = txn.intents.into_iter().map(|((shard, key), written)| async move {
            if let Err(error) = self
                .settle_one(id, &key, written, committed, deadline)
                .await
            {
                tracing::warn!(node = self.id, txn = %id, shard, %error, "intent left to be settled by others");
            }
        });
        futures::future::join_all(settles).await;
    }

    /// Settles `txn`'s intent on `key`, starting from the cell it wrote there if known.
    async fn settle_one(
        &self,
        txn: &str,
        key: &[u8],
        written: Option<Stored>,
        committed: bool,
        deadline: Instant,
    ) -> Result<(), ComputeFailure> {
        let mut stored = match written {
            Some(stored) => stored,
            None => self.read_cell(key, deadline).await?,
        };
        while stored
            .cell
            .intent
            .as_ref()
            .is_some_and(|intent| intent.txn == txn)
        {
            let settled = stored.cell.settled(committed);
            match self.put_cell(key, &stored, settled, deadline).await? {
                Put::Written(_) => break,
                Put::Changed(now) | Put::Lost(now) => stored = now,
            }
        }
        Ok(())
    }
}

/// The wall clock in ms since the epoch (0 before it).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn no_such_transaction(txn: &str) -> ComputeFailure {
    definite(format!(
        "no open transaction {txn} on this node (it ended, or the node restarted)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: i64) -> Row {
        [
            ("id".to_string(), SqlValue::Int(1)),
            ("value".to_string(), SqlValue::Int(value)),
        ]
        .into_iter()
        .collect()
    }

    fn with_intent(committed: Option<i64>, txn: &str, intent: Option<i64>) -> Cell {
        Cell {
            committed: committed.map(|v| row_to_wire(&row(v))),
            intent: Some(Intent {
                txn: txn.to_string(),
                row: intent.map(|v| row_to_wire(&row(v))),
                started_ms: 5,
            }),
            tag: (1, 2),
        }
    }

    #[test]
    fn an_intent_is_seen_only_by_its_own_transaction() {
        let cell = with_intent(Some(1), "a", Some(2));
        assert_eq!(cell.row_for(Some("a")), Some(row(2)));
        assert_eq!(cell.row_for(Some("b")), Some(row(1)));
        assert_eq!(cell.row_for(None), Some(row(1)));
        let fresh = with_intent(None, "a", Some(2));
        assert_eq!(
            fresh.row_for(None),
            None,
            "an uncommitted insert is invisible"
        );
        let locked = with_intent(Some(1), "a", None);
        assert_eq!(
            locked.row_for(Some("a")),
            Some(row(1)),
            "a lock reads the committed row"
        );
    }

    #[test]
    fn settling_keeps_the_intent_only_when_committed() {
        let cell = with_intent(Some(1), "a", Some(2));
        assert_eq!(cell.settled(true).committed_row(), Some(row(2)));
        assert_eq!(cell.settled(false).committed_row(), Some(row(1)));
        assert_eq!(cell.settled(true).intent, None);
        let locked = with_intent(Some(1), "a", None);
        assert_eq!(locked.settled(true).committed_row(), Some(row(1)));
        let inserted = with_intent(None, "a", Some(3));
        assert_eq!(inserted.settled(false).committed_row(), None);
    }

    #[test]
    fn a_refused_write_is_judged_on_the_committed_cell_never_on_the_primarys_newest_entry() {
        let (expected, ours, other) = (&b"old"[..], &b"ours"[..], &b"other"[..]);
        // The committed cell holds our bytes: an earlier attempt wrote them, replicated.
        assert_eq!(
            judge_refusal(Some(ours), Some(expected), ours, true),
            Refusal::Written
        );
        // The committed cell is still the expected one, though the primary named our bytes (or
        // another's) as its newest: not written yet, and perhaps never; try again.
        for maybe_applied in [false, true] {
            assert_eq!(
                judge_refusal(Some(expected), Some(expected), ours, maybe_applied),
                Refusal::Pending
            );
        }
        assert_eq!(judge_refusal(None, None, ours, false), Refusal::Pending);
        // Another writer's cell: a plain conflict, unless an attempt whose answer was lost may
        // have applied first (then the write's outcome is unknown, and it is never re-applied).
        assert_eq!(
            judge_refusal(Some(other), Some(expected), ours, false),
            Refusal::Changed
        );
        assert_eq!(
            judge_refusal(Some(other), Some(expected), ours, true),
            Refusal::Lost
        );
        assert_eq!(
            judge_refusal(None, Some(expected), ours, true),
            Refusal::Lost
        );
    }

    #[test]
    fn cells_round_trip_and_a_foreign_value_is_refused() {
        let cell = with_intent(Some(1), "c0.1f.7", Some(2));
        let bytes = cell.encode().expect("encodes");
        assert_eq!(Cell::decode(Some(&bytes)), Ok(cell));
        assert_eq!(Cell::decode(None), Ok(Cell::default()));
        assert!(Cell::decode(Some(&[0xff, 0xff, 0xff])).is_err());
    }
}
