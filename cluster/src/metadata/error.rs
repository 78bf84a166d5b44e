//! Errors of the metadata service's client API.

use std::time::Duration;

use super::types::NodeId;

/// Why a metadata request did not succeed.
///
/// For a write, [`MetadataError::outcome_is_unknown`] tells a definite failure (Jepsen `fail`)
/// from an indeterminate one (Jepsen `info`). It crosses the wire unchanged to clients of a node
/// process (`crate::process`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum MetadataError {
    /// This node is not the leader; `leader` is the leader it knows of, if any. Nothing was
    /// proposed.
    #[error("node is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader this node believes in.
        leader: Option<NodeId>,
    },
    /// This node is leader but could not confirm it with a quorum within its lease, so it
    /// refuses to serve a read.
    #[error("leader could not reach a quorum")]
    NoQuorum,
    /// The request did not complete in time (no quorum, a paused node, a lost leader). A write
    /// that timed out may still be committed later.
    #[error("request timed out after {after:?}")]
    Timeout {
        /// How long the request waited.
        after: Duration,
    },
    /// The node is shut down (killed); nothing was proposed.
    #[error("node is shut down")]
    Shutdown,
    /// The node stopped while the request was in flight; a write may still be committed by
    /// another leader.
    #[error("node stopped while the request was in flight: {reason}")]
    Interrupted {
        /// What openraft reported.
        reason: String,
    },
    /// Openraft returned an error that this API does not expect for the request.
    #[error("unexpected raft error: {reason}")]
    Raft {
        /// What openraft reported.
        reason: String,
    },
}

impl MetadataError {
    /// Whether a write that failed with this error may nevertheless take effect.
    pub fn outcome_is_unknown(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. } | Self::Interrupted { .. } | Self::Raft { .. }
        )
    }
}
