//! Errors of the replicated store's node and client APIs.

use std::time::Duration;

use super::message::Epoch;
use crate::metadata::NodeId;

/// Why a replicated read or write did not succeed.
///
/// For a write, [`ReplicationError::outcome_is_unknown`] tells a definite failure (Jepsen `fail`:
/// the write certainly did not take effect) from an indeterminate one (Jepsen `info`: it may
/// take effect at any later time, or never).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ReplicationError {
    /// This node is not the primary (it is a mirror, a witness or a deposed primary); `primary`
    /// is the primary of `epoch` as far as it knows. Nothing was written.
    #[error("node is not the primary (primary: {primary:?}, epoch {epoch})")]
    NotPrimary {
        /// The primary this node believes in, if any.
        primary: Option<NodeId>,
        /// The newest epoch this node knows.
        epoch: Epoch,
    },
    /// This node is primary of `epoch` but its lease has lapsed: it heard from neither the
    /// mirror nor the witness recently, so another node may have been promoted. Nothing was
    /// written.
    #[error("primary of epoch {epoch} holds no lease")]
    NoLease {
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// Too many writes are waiting for the mirror; nothing was written.
    #[error("primary is overloaded: {pending} writes pending")]
    Overloaded {
        /// The writes waiting.
        pending: usize,
    },
    /// The write was appended, but the node learned of a newer epoch before it was
    /// acknowledged; the new primary may or may not hold it.
    #[error("primary stepped down with the write pending (primary: {primary:?}, epoch {epoch})")]
    SteppedDown {
        /// The new primary.
        primary: Option<NodeId>,
        /// The new epoch.
        epoch: Epoch,
    },
    /// The write was appended, but the primary's lease lapsed before the mirror confirmed it.
    #[error("lease of epoch {epoch} lapsed with the write pending")]
    LeaseLost {
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// The node did not answer in time (paused, partitioned from its mirror, overloaded). A
    /// write may still take effect.
    #[error("request timed out after {after:?}")]
    Timeout {
        /// How long the request waited.
        after: Duration,
    },
    /// The node is down (killed); the request was not delivered.
    #[error("node {node} is down")]
    NodeDown {
        /// The node addressed.
        node: NodeId,
    },
    /// The node died with the request in flight; a write may still take effect.
    #[error("node {node} stopped with the request in flight")]
    Interrupted {
        /// The node addressed.
        node: NodeId,
    },
    /// A witness holds no data, so it cannot serve a read.
    #[error("node {node} is a witness and holds no data")]
    WitnessHoldsNoData {
        /// The witness.
        node: NodeId,
    },
    /// No node of the shard accepted the request before the deadline, and every attempt failed
    /// definitely; `last` is the last attempt's error.
    #[error("no primary for shard {shard} within {after:?} (last error: {last})")]
    NoPrimary {
        /// The shard.
        shard: usize,
        /// How long the client tried.
        after: Duration,
        /// The last definite error seen.
        last: Box<ReplicationError>,
    },
    /// The caller named a node the cluster does not have.
    #[error("no node {node} in the cluster")]
    UnknownNode {
        /// The id given.
        node: NodeId,
    },
    /// A conditional write found another latest value for its key; nothing was written.
    #[error("the key's value is not the one the write expected")]
    ConditionFailed {
        /// The key's latest value on the primary (`None`: never written).
        current: Option<Vec<u8>>,
    },
    /// The request was routed by a ring older than the shard's fence (see
    /// [`super::FENCE_KEY`]): keys may have moved to another shard. Nothing was written or read;
    /// the client must learn the newer ring and route again.
    #[error("routed by a ring older than the shard's fence (epoch {fence})")]
    StaleRing {
        /// The ring epoch the shard is fenced at.
        fence: u64,
    },
    /// The caller named a shard the cluster does not have.
    #[error("no shard {shard} in a cluster of {shards}")]
    UnknownShard {
        /// The shard given.
        shard: usize,
        /// How many shards there are.
        shards: usize,
    },
}

impl ReplicationError {
    /// Whether a write that failed with this error may nevertheless take effect.
    pub fn outcome_is_unknown(&self) -> bool {
        matches!(
            self,
            Self::SteppedDown { .. }
                | Self::LeaseLost { .. }
                | Self::Timeout { .. }
                | Self::Interrupted { .. }
        )
    }

    /// The primary this error names, if any: where a client should try next.
    pub fn primary_hint(&self) -> Option<NodeId> {
        match self {
            Self::NotPrimary { primary, .. } | Self::SteppedDown { primary, .. } => *primary,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_after_the_write_was_appended_are_indeterminate() {
        let definite = [
            ReplicationError::NotPrimary {
                primary: Some(1),
                epoch: 2,
            },
            ReplicationError::NoLease { epoch: 1 },
            ReplicationError::Overloaded { pending: 9 },
            ReplicationError::NodeDown { node: 0 },
            ReplicationError::WitnessHoldsNoData { node: 2 },
            ReplicationError::ConditionFailed { current: None },
        ];
        assert!(definite.iter().all(|e| !e.outcome_is_unknown()));
        let unknown = [
            ReplicationError::SteppedDown {
                primary: None,
                epoch: 3,
            },
            ReplicationError::LeaseLost { epoch: 1 },
            ReplicationError::Timeout {
                after: Duration::from_millis(5),
            },
            ReplicationError::Interrupted { node: 0 },
        ];
        assert!(unknown.iter().all(ReplicationError::outcome_is_unknown));
    }
}
