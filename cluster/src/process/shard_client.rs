//! [`ShardClient`]: a client of the members of replicated shards running as processes, with
//! the node-level API of the in-process [`crate::replication::ReplicaNode`] (`write_at`,
//! `read_linearizable`, `read`) plus status and the peer filter.
//!
//! Transport failures become the [`ReplicationError`] the simulation would give, so callers
//! classify outcomes the same way: a request that was never sent (the process is dead, so the
//! connection is refused) is [`ReplicationError::NodeDown`], a definite failure; a request sent
//! without an answer is [`ReplicationError::Timeout`] or [`ReplicationError::Interrupted`], whose
//! outcome is unknown. Each call opens a fresh connection, for the reason given in
//! [`super::client`]: a pooled connection to a killed process fails only after the request is
//! written.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::client::{call_once, CallError};
use super::compute_protocol::Lease;
use super::shard_protocol::{
    MemberStatus, ShardAdminReply, ShardAdminRequest, ShardClientReply, ShardClientRequest,
    ShardReply, ShardRequest,
};
use crate::metadata::NodeId;
use crate::net::tcp::{FrameOptions, TcpError};
use crate::replication::{LogIndex, ReplicationError, WriteCondition};

/// Where each member of each shard listens: `(shard, member id) -> host:port`.
pub type MemberAddrs = BTreeMap<(usize, NodeId), String>;

/// A page of a member's copy (see [`ShardClient::scan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// The fence of the copy scanned.
    pub fence: u64,
    /// Keys and values in key order; fewer than asked on the last page.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A client of shard member processes. Clones share their address book, so members added
/// through one ([`ShardClient::add_members`]) are known to all.
#[derive(Clone, Debug)]
pub struct ShardClient {
    addrs: Arc<RwLock<MemberAddrs>>,
    frames: FrameOptions,
}

impl ShardClient {
    /// A client of the members at `addrs`; one call (connect, request, whole reply) is bounded
    /// by `call_timeout`, and should outlast the members' own request timeout.
    pub fn new(addrs: MemberAddrs, call_timeout: Duration) -> Self {
        Self {
            addrs: Arc::new(RwLock::new(addrs)),
            frames: FrameOptions {
                connect_timeout: Duration::from_millis(500),
                call_timeout,
                ..FrameOptions::default()
            },
        }
    }

    /// Every member's address.
    pub fn addrs(&self) -> MemberAddrs {
        self.book().clone()
    }

    /// Learns the addresses of more members (a shard added at run time), or new addresses of
    /// known ones.
    pub fn add_members(&self, addrs: &MemberAddrs) {
        let mut book = self
            .addrs
            .write()
            .expect("shard address book poisoned: a panic happened while it was held");
        book.extend(addrs.iter().map(|(member, addr)| (*member, addr.clone())));
    }

    fn book(&self) -> std::sync::RwLockReadGuard<'_, MemberAddrs> {
        self.addrs
            .read()
            .expect("shard address book poisoned: a panic happened while it was held")
    }

    async fn call(
        &self,
        shard: usize,
        node: NodeId,
        request: ShardRequest,
    ) -> Result<ShardReply, ReplicationError> {
        let Some(addr) = self.book().get(&(shard, node)).cloned() else {
            return Err(ReplicationError::UnknownNode { node });
        };
        call_once(&addr, &request, &self.frames)
            .await
            .map_err(|error| match error {
                CallError::NotSent { .. } => ReplicationError::NodeDown { node },
                CallError::NoReply {
                    source: TcpError::Timeout { after, .. },
                    ..
                } => ReplicationError::Timeout { after },
                CallError::NoReply { .. } => ReplicationError::Interrupted { node },
            })
    }

    async fn client(
        &self,
        shard: usize,
        node: NodeId,
        request: ShardClientRequest,
    ) -> Result<ShardClientReply, ReplicationError> {
        match self
            .call(shard, node, ShardRequest::Client(request))
            .await?
        {
            ShardReply::Client(result) => result,
            other => Err(foreign(node, &other)),
        }
    }

    /// Writes `value` under `key` through member `node` of `shard`; the log index of the
    /// acknowledged write.
    pub async fn write_at(
        &self,
        shard: usize,
        node: NodeId,
        key: &[u8],
        value: &[u8],
    ) -> Result<LogIndex, ReplicationError> {
        self.write_if(shard, node, key, value, WriteCondition::Always)
            .await
    }

    /// Like [`ShardClient::write_at`], appended only if `key`'s latest value on the primary
    /// meets `condition` (else [`ReplicationError::ConditionFailed`] with that value).
    pub async fn write_if(
        &self,
        shard: usize,
        node: NodeId,
        key: &[u8],
        value: &[u8],
        condition: WriteCondition,
    ) -> Result<LogIndex, ReplicationError> {
        self.write_routed(shard, node, (key, value), condition, 0)
            .await
    }

    /// Like [`ShardClient::write_if`] for a client that routes by a ring of epoch
    /// `ring_epoch`: refused with [`ReplicationError::StaleRing`] by a shard fenced at a newer
    /// one. An empty `value` deletes the key.
    pub async fn write_routed(
        &self,
        shard: usize,
        node: NodeId,
        (key, value): (&[u8], &[u8]),
        condition: WriteCondition,
        ring_epoch: u64,
    ) -> Result<LogIndex, ReplicationError> {
        let request = ShardClientRequest::Write {
            key: key.to_vec(),
            value: value.to_vec(),
            condition,
            ring_epoch,
        };
        match self.client(shard, node, request).await? {
            ShardClientReply::Written(index) => Ok(index),
            other => Err(unexpected(node, &other)),
        }
    }

    /// Many writes through member `node` of `shard` in one request (at most
    /// [`super::shard_protocol::MAX_WRITE_BATCH`]), each `(key, value, condition)`; the answer
    /// to each, in order.
    pub async fn write_batch(
        &self,
        shard: usize,
        node: NodeId,
        writes: Vec<(Vec<u8>, Vec<u8>, WriteCondition)>,
        ring_epoch: u64,
    ) -> Result<Vec<Result<LogIndex, ReplicationError>>, ReplicationError> {
        let request = ShardClientRequest::WriteBatch { writes, ring_epoch };
        match self.client(shard, node, request).await? {
            ShardClientReply::WrittenBatch(results) => Ok(results),
            other => Err(unexpected(node, &other)),
        }
    }

    /// Writes `value` under `key` through member `node` of `shard` if the key's newest entry
    /// there is none (a row moving to `shard`); whether it wrote (`false`: an entry was there,
    /// possibly not yet acknowledged).
    pub async fn copy_if_absent(
        &self,
        shard: usize,
        node: NodeId,
        (key, value): (&[u8], &[u8]),
        ring_epoch: u64,
    ) -> Result<bool, ReplicationError> {
        let condition = WriteCondition::IfCurrent(None);
        match self
            .write_routed(shard, node, (key, value), condition, ring_epoch)
            .await
        {
            Ok(_) => Ok(true),
            Err(ReplicationError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// A linearizable read through member `node` of `shard`.
    pub async fn read_linearizable(
        &self,
        shard: usize,
        node: NodeId,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, ReplicationError> {
        self.read_routed(shard, node, key, 0).await
    }

    /// Like [`ShardClient::read_linearizable`] for a client that routes by a ring of epoch
    /// `ring_epoch` (see [`ShardClient::write_routed`]).
    pub async fn read_routed(
        &self,
        shard: usize,
        node: NodeId,
        key: &[u8],
        ring_epoch: u64,
    ) -> Result<Option<Vec<u8>>, ReplicationError> {
        let request = ShardClientRequest::Read {
            key: key.to_vec(),
            ring_epoch,
        };
        match self.client(shard, node, request).await? {
            ShardClientReply::Value(value) => Ok(value),
            other => Err(unexpected(node, &other)),
        }
    }

    /// A page of member `node`'s own copy: up to `limit` keys and values after `after`, and
    /// the copy's fence.
    pub async fn scan(
        &self,
        shard: usize,
        node: NodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage, ReplicationError> {
        let request = ShardClientRequest::Scan {
            after: after.map(<[u8]>::to_vec),
            limit,
        };
        match self.client(shard, node, request).await? {
            ShardClientReply::Scanned { fence, entries } => Ok(ScanPage { fence, entries }),
            other => Err(unexpected(node, &other)),
        }
    }

    /// Member `node`'s own copy of `key` (the seed's node-level `read`).
    pub async fn read(
        &self,
        shard: usize,
        node: NodeId,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, ReplicationError> {
        let request = ShardClientRequest::LocalRead { key: key.to_vec() };
        match self.client(shard, node, request).await? {
            ShardClientReply::Value(value) => Ok(value),
            other => Err(unexpected(node, &other)),
        }
    }

    /// Asks data node `node` of `shard` to seek promotion now.
    pub async fn force_promotion(
        &self,
        shard: usize,
        node: NodeId,
    ) -> Result<(), ReplicationError> {
        match self
            .client(shard, node, ShardClientRequest::ForcePromotion)
            .await?
        {
            ShardClientReply::Accepted => Ok(()),
            other => Err(unexpected(node, &other)),
        }
    }

    /// Asks data node `node` of `shard` for a cache lease for compute node `compute`, which
    /// takes invalidations at `addr`; a live lease is renewed.
    pub async fn subscribe(
        &self,
        shard: usize,
        node: NodeId,
        compute: u32,
        addr: &str,
    ) -> Result<Lease, ReplicationError> {
        let request = ShardClientRequest::Subscribe {
            compute,
            addr: addr.to_string(),
        };
        match self.client(shard, node, request).await? {
            ShardClientReply::Leased(lease) => Ok(lease),
            other => Err(unexpected(node, &other)),
        }
    }

    async fn admin(
        &self,
        shard: usize,
        node: NodeId,
        request: ShardAdminRequest,
    ) -> Result<ShardAdminReply, ReplicationError> {
        match self.call(shard, node, ShardRequest::Admin(request)).await? {
            ShardReply::Admin(reply) => Ok(reply),
            other => Err(foreign(node, &other)),
        }
    }

    /// Member `node`'s status.
    pub async fn status(
        &self,
        shard: usize,
        node: NodeId,
    ) -> Result<MemberStatus, ReplicationError> {
        match self.admin(shard, node, ShardAdminRequest::Status).await? {
            ShardAdminReply::Status(status) => Ok(status),
            ShardAdminReply::BlockedPeers(_) => Err(ReplicationError::Interrupted { node }),
        }
    }

    /// Makes member `node` drop every message to and from `peers`; the peers it blocks after.
    pub async fn block_peers(
        &self,
        shard: usize,
        node: NodeId,
        peers: &[NodeId],
    ) -> Result<Vec<NodeId>, ReplicationError> {
        let request = ShardAdminRequest::BlockPeers(peers.to_vec());
        match self.admin(shard, node, request).await? {
            ShardAdminReply::BlockedPeers(blocked) => Ok(blocked),
            ShardAdminReply::Status(_) => Err(ReplicationError::Interrupted { node }),
        }
    }

    /// Empties member `node`'s peer filter.
    pub async fn unblock_all_peers(
        &self,
        shard: usize,
        node: NodeId,
    ) -> Result<(), ReplicationError> {
        self.admin(shard, node, ShardAdminRequest::UnblockAllPeers)
            .await
            .map(|_| ())
    }
}

fn foreign(node: NodeId, reply: &ShardReply) -> ReplicationError {
    tracing::error!(node, ?reply, "member answered with a reply of another kind");
    ReplicationError::Interrupted { node }
}

fn unexpected(node: NodeId, reply: &ShardClientReply) -> ReplicationError {
    tracing::error!(
        node,
        ?reply,
        "member answered with a reply of another operation"
    );
    ReplicationError::Interrupted { node }
}
