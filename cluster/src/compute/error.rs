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
    /// The first participant applied the commit; the others have not. Under
    /// [`super::ComputeOptions::unsafe_no_2pc`] there is no record, so recovery aborts the
    /// rest (a half-applied transaction); under two-phase commit the record is there and
    /// recovery commits the rest. With one participant there is no such point and the commit
    /// completes.
    BetweenShardCommits,
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
    /// The compute node is killed (or was restarted since the transaction began); nothing
    /// was done.
    #[error("compute node c{node} is down")]
    NodeDown {
        /// The compute node's index.
        node: u32,
    },
    /// The compute node is cut off by a partition; nothing was done.
    #[error("compute node c{node} is unreachable")]
    Unreachable {
        /// The compute node's index.
        node: u32,
    },
    /// The coordinating compute node was killed or cut off in the middle of a commit, after
    /// the commit decision may have been recorded (or, without two-phase commit, after a
    /// participant may have applied it). Nothing was cleaned up: recovery settles the
    /// intents from the commit record.
    #[error("commit of {tx} was cut off midway: {cause}")]
    CommitInterrupted {
        /// The transaction.
        tx: TxId,
        /// [`Self::NodeDown`] or [`Self::Unreachable`].
        cause: Box<ComputeError>,
    },
    /// Test aid, deliberately unsafe (`--unsafe no-2pc`): some participants applied the
    /// commit, then one failed; with no commit record, recovery aborts the rest.
    #[error(
        "{tx} committed on storage nodes [{}] but not on storage node {node} (unsafe no-2pc): \
         {reason}",
        node_list(.committed)
    )]
    PartialCommit {
        /// The transaction.
        tx: TxId,
        /// The participants that applied the commit, in order.
        committed: Vec<StorageNodeId>,
        /// The participant that failed.
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

/// `s0, s2`.
fn node_list(nodes: &[StorageNodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    names.join(", ")
}

impl ComputeError {
    /// Whether a write that failed with this error may nevertheless have taken effect.
    pub fn outcome_is_unknown(&self) -> bool {
        match self {
            Self::Cluster(error) => error.outcome_is_unknown(),
            Self::Record(_)
            | Self::Unresolved { .. }
            | Self::CoordinatorCrashed { .. }
            | Self::CommitInterrupted { .. }
            | Self::PartialCommit { .. } => true,
            Self::WriteConflict { .. }
            | Self::TransactionEnded { .. }
            | Self::Aborted { .. }
            | Self::NodeDown { .. }
            | Self::Unreachable { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_is_a_failure_and_a_commit_cut_midway_is_unknown() {
        let down = ComputeError::NodeDown { node: 0 };
        let unreachable = ComputeError::Unreachable { node: 1 };
        assert!(!down.outcome_is_unknown());
        assert!(!unreachable.outcome_is_unknown());
        assert_eq!(down.to_string(), "compute node c0 is down");
        for cause in [down, unreachable] {
            let cut = ComputeError::CommitInterrupted {
                tx: TxId(9),
                cause: Box::new(cause),
            };
            assert!(cut.outcome_is_unknown(), "{cut}");
        }
        let partial = ComputeError::PartialCommit {
            tx: TxId(2),
            committed: vec![StorageNodeId(0)],
            node: StorageNodeId(1),
            reason: "storage node 1 is down".to_string(),
        };
        assert!(partial.outcome_is_unknown());
    }
}
