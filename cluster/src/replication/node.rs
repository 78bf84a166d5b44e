//! `ReplicaNode`: a handle on one node of a replicated shard (primary, mirror or witness), with
//! the seed's node-level `write` and `read`.

use std::sync::Arc;
use std::time::Duration;

use super::error::ReplicationError;
use super::message::{EpochRecord, LogIndex, WriteCondition};
use super::protocol::Role;
use super::runtime::{ClientOp, ClientOutput, Kind, NodeShared};
use crate::metadata::NodeId;

/// A handle on one node; cloning gives another handle to the same node.
#[derive(Clone, Debug)]
pub struct ReplicaNode {
    shared: Arc<NodeShared>,
    /// How long `write` waits for an acknowledgement.
    request_timeout: Duration,
}

impl ReplicaNode {
    pub(crate) fn new(shared: Arc<NodeShared>, request_timeout: Duration) -> Self {
        Self {
            shared,
            request_timeout,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The shard the node belongs to.
    pub fn shard(&self) -> usize {
        self.shared.shard
    }

    /// Whether this node is a witness (it holds no data).
    pub fn is_witness(&self) -> bool {
        matches!(self.shared.kind, Kind::Witness { .. })
    }

    /// Writes `value` under `key` through this node. It succeeds only if this node is the
    /// primary, holds its lease, and (in synchronous mode) the mirror made the write durable
    /// first. A mirror, witness or deposed primary answers
    /// [`ReplicationError::NotPrimary`] naming the primary it knows.
    pub async fn write(&self, key: &[u8], value: &[u8]) -> Result<(), ReplicationError> {
        self.write_at(key, value).await.map(|_| ())
    }

    /// Like [`ReplicaNode::write`], returning the log index of the acknowledged write.
    pub async fn write_at(&self, key: &[u8], value: &[u8]) -> Result<LogIndex, ReplicationError> {
        self.write_if(key, value, WriteCondition::Always).await
    }

    /// Like [`ReplicaNode::write_at`], appended only if `key`'s latest value meets `condition`
    /// (else [`ReplicationError::ConditionFailed`] with that value).
    pub async fn write_if(
        &self,
        key: &[u8],
        value: &[u8],
        condition: WriteCondition,
    ) -> Result<LogIndex, ReplicationError> {
        let op = ClientOp::Write {
            key: key.to_vec(),
            value: value.to_vec(),
            condition,
            ring_epoch: 0,
        };
        match self.shared.call(op, self.request_timeout).await? {
            ClientOutput::Written(index) => Ok(index),
            other => panic!("node {} answered a write with {other:?}", self.id()),
        }
    }

    /// A linearizable read through this node: only a primary holding its lease answers.
    pub async fn read_linearizable(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReplicationError> {
        let op = ClientOp::Read {
            key: key.to_vec(),
            ring_epoch: 0,
        };
        match self.shared.call(op, self.request_timeout).await? {
            ClientOutput::Read(value) => Ok(value),
            other => panic!("node {} answered a read with {other:?}", self.id()),
        }
    }

    /// Reads this replica's own copy of `key` (the seed's node-level `read`): on a primary, the
    /// acknowledged writes; on a mirror, every write it has made durable, so a write the primary
    /// acknowledged is visible here at once (REP-001). Not linearizable on a deposed primary;
    /// clients use [`ReplicaNode::read_linearizable`] or the cluster's routed `read`.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReplicationError> {
        let node = self.id();
        if self.is_witness() {
            return Err(ReplicationError::WitnessHoldsNoData { node });
        }
        // A paused process answers nothing until it resumes.
        let resumed = tokio::time::timeout(self.request_timeout, self.shared.gate.wait_resumed());
        if resumed.await.is_err() {
            return Err(ReplicationError::Timeout {
                after: self.request_timeout,
            });
        }
        self.shared
            .with_member(|member| {
                member
                    .as_replica()
                    .map(|replica| replica.local_read(key))
                    .ok_or(ReplicationError::WitnessHoldsNoData { node })
            })
            .unwrap_or(Err(ReplicationError::NodeDown { node }))
    }

    /// Whether the node runs (it was not killed, or was restarted).
    pub fn is_running(&self) -> bool {
        self.shared.with_member(|_| ()).is_some()
    }

    /// Whether the node acts as primary now: named primary by its record and holding a lease.
    pub fn is_primary(&self) -> bool {
        let now = self.shared.clock.now_ms();
        self.shared
            .with_member(|member| member.is_primary(now))
            .unwrap_or(false)
    }

    /// The node's role by its record; `None` for a witness or a node that is down.
    pub fn role(&self) -> Option<Role> {
        self.shared
            .with_member(|member| member.as_replica().map(|replica| replica.role()))
            .flatten()
    }

    /// The newest epoch record the node knows (from its durable state if it is down).
    pub fn record(&self) -> EpochRecord {
        self.shared.record()
    }

    /// `(commit index, last log index)` of a running data node.
    pub fn log_position(&self) -> Option<(LogIndex, LogIndex)> {
        self.shared
            .with_member(|member| {
                member
                    .as_replica()
                    .map(|replica| (replica.commit_index(), replica.last_index()))
            })
            .flatten()
    }

    /// Checks the running member's invariants.
    ///
    /// # Panics
    /// If one does not hold, which only a bug can cause.
    pub fn validate(&self) {
        self.shared.with_member(|member| member.validate());
    }

    pub(crate) async fn force_promotion(&self) -> Result<(), ReplicationError> {
        self.shared
            .call(ClientOp::ForcePromotion, self.request_timeout)
            .await
            .map(|_| ())
    }
}
