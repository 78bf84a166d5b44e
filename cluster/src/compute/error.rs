//! Errors of compute nodes and their transactions.

use std::time::Duration;

use super::records::RecordError;
use super::two_phase::TxId;
use crate::sharding::StorageNodeId;
use crate::sql::SqlValue;
use crate::storage_cluster::ClusterError;

/// Where a test makes a coordinator crash (`Transaction::commit_then_crash`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Every participant voted yes; no decision is recorded.
    AfterPrepare,
    /// The commit decision is recorded; no participant has applied it.
    AfterDecision,
}

/// Why a compute node or transaction request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ComputeError {
    /// The storage cluster refused or failed the request (including bad SQL).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Another transaction kept its write intent on the key for the whole lock-wait bound.
    #[error("write conflict on key {key} of table {table:?}: held by {holder} for {waited:?}")]
    WriteConflict {
        /// The table.
        table: String,
        /// The key.
        key: SqlValue,
        /// The transaction holding the intent.
        holder: TxId,
        /// How long this request waited.
        waited: Duration,
    },
    /// The transaction already committed, rolled back or failed; start a new one.
    #[error("{tx} has ended")]
    TransactionEnded {
        /// The transaction.
        tx: TxId,
    },
    /// The transaction was aborted instead of committed; none of its writes took effect.
    #[error("{tx} aborted: {reason}")]
    Aborted {
        /// The transaction.
        tx: TxId,
        /// Why.
        reason: String,
    },
    /// The commit record could not be read or written; the outcome is unknown until a
    /// resolver settles it from the record.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The decision is recorded, but a participant has not applied it yet; a resolver will.
    #[error("{tx} is recorded as {decision} but storage node {node} has not applied it: {reason}")]
    Unresolved {
        /// The transaction.
        tx: TxId,
        /// The recorded decision.
        decision: &'static str,
        /// The participant.
        node: StorageNodeId,
        /// Its error.
        reason: String,
    },
    /// Test aid: the coordinator stopped at `point`, as if it had crashed.
    #[error("coordinator of {tx} crashed at {point:?} (test aid)")]
    CoordinatorCrashed {
        /// The transaction.
        tx: TxId,
        /// Where it stopped.
        point: CrashPoint,
    },
}

impl ComputeError {
    /// Whether a write that failed with this error may nevertheless have taken effect.
    pub fn outcome_is_unknown(&self) -> bool {
        match self {
            Self::Cluster(error) => error.outcome_is_unknown(),
            Self::Record(_) | Self::Unresolved { .. } | Self::CoordinatorCrashed { .. } => true,
            _ => false,
        }
    }
}
