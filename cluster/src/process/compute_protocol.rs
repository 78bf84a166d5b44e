//! The wire protocol of a compute node process, and the cache lease that ties its row cache to
//! the shard members it reads from.
//!
//! - `Client`: a SQL statement, creating a table (its shard key goes to the metadata group), or
//!   whether a key is cached (the seed's `cache_contains`).
//! - `Invalidate`: the primary of a replicated shard names the keys of entries it has seen
//!   committed (or, when it has just become primary, asks for the whole cache to go); the
//!   compute node drops those rows, then acknowledges.
//! - `Admin`: status.
//!
//! The lease (see `process::cache_leases` for the member's side): a compute node subscribes to
//! every data member of every shard and renews each subscription well inside
//! [`Lease::duration_ms`]. While a lease is live, a member acting as primary delivers the keys
//! of every entry it sees committed, and it exposes nothing (a write acknowledged, a read answered) until each
//! subscriber with a live lease acknowledged the keys up to that index. The compute node serves
//! a shard's rows from its cache only while it holds a live lease from each of the shard's
//! data members, and drops its cache whenever a lease lapsed or a member granted a new one.

use serde::{Deserialize, Serialize};

use crate::replication::LogIndex;
use crate::storage::remote::WireValue;

/// One lease session between a compute node and a data member. A member that restarts, or
/// whose subscriber let a lease lapse, grants a new id; the same id means the member delivered
/// every invalidation since the session began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseId {
    /// Drawn at random when the member process starts.
    pub incarnation: u64,
    /// Counts the sessions the member granted in this incarnation.
    pub session: u64,
}

/// A lease granted or renewed by a data member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The session.
    pub id: LeaseId,
    /// How long the lease lasts from the moment the member took the request; the subscriber
    /// counts from before it sent the request, so its view ends first.
    pub duration_ms: u64,
}

/// A request to a compute node process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ComputeRequest {
    /// A client's request.
    Client(ComputeClientRequest),
    /// Keys of entries a data member saw committed, up to `through`.
    Invalidate(Invalidation),
    /// An operator's request.
    Admin(ComputeAdminRequest),
}

/// Keys a data member saw committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invalidation {
    /// The shard.
    pub shard: usize,
    /// The member, by its id within the shard.
    pub member: u64,
    /// The lease session the member delivers under.
    pub lease: LeaseId,
    /// Every entry up to this index is included.
    pub through: LogIndex,
    /// The shard-level keys written by the entries.
    pub keys: Vec<Vec<u8>>,
    /// Drop every cached row: the member became primary, and the old primary may have
    /// committed entries it never delivered.
    pub drop_all: bool,
}

/// A client's request to a compute node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComputeClientRequest {
    /// One SQL statement (`SELECT`, `INSERT`, `UPDATE`; point statements by shard key).
    Sql(String),
    /// Creates `table` with `shard_key` as its key column, recorded in the metadata group.
    CreateTable {
        /// The table.
        table: String,
        /// Its key column.
        shard_key: String,
    },
    /// Whether any table's row under `key` is in this node's cache.
    CacheContains(WireValue),
    /// Opens a transaction on this node (read committed); answered with its id.
    Begin,
    /// One statement inside the open transaction `txn`: its writes stay invisible to others
    /// until it commits; `SELECT ... FOR UPDATE` locks the row.
    InTransaction {
        /// The id [`ComputeClientReply::Began`] gave (it carries the node's incarnation, so
        /// an id from before a restart names no later transaction).
        txn: String,
        /// The statement.
        sql: String,
    },
    /// Commits transaction `txn` on every shard it wrote, or on none.
    Commit(String),
    /// Rolls transaction `txn` back; none of its writes ever becomes visible.
    Rollback(String),
}

/// The answer to a [`ComputeClientRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComputeClientReply {
    /// A statement's result.
    Rows {
        /// The rows of a `SELECT`: columns in projection order.
        rows: Vec<Vec<(String, WireValue)>>,
        /// Rows inserted or updated.
        rows_affected: u64,
    },
    /// The table exists.
    Created,
    /// The answer to [`ComputeClientRequest::CacheContains`].
    Cached(bool),
    /// A transaction is open.
    Began {
        /// Its id, which later requests name it by: its commit record is `txn/<id>` in the
        /// metadata group.
        id: String,
    },
    /// The transaction committed; `shards` lists the shards it wrote or locked rows on.
    Committed {
        /// The participants, in order.
        shards: Vec<usize>,
    },
    /// The transaction was rolled back.
    RolledBack,
}

/// Why a compute node refused or failed a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ComputeFailure {
    /// What went wrong, for people.
    pub message: String,
    /// Whether a write may have taken effect anyway.
    pub outcome_unknown: bool,
}

impl ComputeFailure {
    /// The same failure, outcome-unknown if `maybe_applied` (a write before it may have taken
    /// effect).
    pub fn unknown_if(self, maybe_applied: bool) -> Self {
        Self {
            outcome_unknown: self.outcome_unknown || maybe_applied,
            ..self
        }
    }
}

/// An operator's request to a compute node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComputeAdminRequest {
    /// The node's [`ComputeStatus`].
    Status,
}

/// What a compute node says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeStatus {
    /// The node's id.
    pub id: u32,
    /// The process id.
    pub pid: u32,
    /// Rows in the cache.
    pub cached_rows: usize,
    /// How many times the whole cache was dropped (a lease lapsed or was renewed afresh).
    pub cache_drops: u64,
    /// Invalidation batches applied.
    pub invalidations: u64,
    /// The shards whose rows the node may serve from its cache now (a live lease from each
    /// data member).
    pub cacheable_shards: Vec<usize>,
    /// Transactions open on the node now.
    pub open_transactions: usize,
    /// Transactions of other nodes that this node found abandoned (their locks held for
    /// [`super::compute_server::ABANDON_AFTER`] while it waited) and aborted.
    pub aborted_abandoned: u64,
    /// Statements of this node's transactions that met a row locked by an older transaction
    /// and gave way (wait-die), failing their transaction's statement.
    pub wait_die_aborts: u64,
    /// Compare-and-sets refused behind an entry of the shard's primary that was not replicated
    /// yet (the committed cell was still the one expected), and tried again once it settled.
    pub unreplicated_refusals: u64,
}

/// A compute node's answer, of the kind of its request.
#[derive(Debug, Serialize, Deserialize)]
pub enum ComputeReply {
    /// The answer to [`ComputeRequest::Client`].
    Client(Result<ComputeClientReply, ComputeFailure>),
    /// The acknowledgement of [`ComputeRequest::Invalidate`]: applied.
    Invalidated,
    /// The answer to [`ComputeRequest::Admin`].
    Admin(ComputeStatus),
}
