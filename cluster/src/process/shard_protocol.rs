//! The wire protocol of a shard member process (a data node or a witness of a replicated shard):
//! one TCP listener per member carries three kinds of request, each answered by one reply frame
//! of the matching kind (`net::tcp` frames, postcard).
//!
//! - `Peer`: a replication message from another member of the shard (one-way: the reply only
//!   says whether it was taken), dropped if the member's peer filter blocks the sender.
//! - `Client`: a write or a linearizable read through this member (only the primary with a
//!   lease serves them; others refuse with [`ReplicationError::NotPrimary`] naming the primary
//!   they know), or a read of this member's own copy (the seed's node-level `read`).
//! - `Admin`: status, the peer filter that makes partitions between local processes, and a
//!   forced promotion (the seed's manual failover).

use serde::{Deserialize, Serialize};

use super::compute_protocol::Lease;
use super::protocol::PeerRefusal;
use crate::metadata::NodeId;
use crate::replication::{EpochRecord, LogIndex, Message, ReplicationError, WriteCondition};

/// The most writes one [`ShardClientRequest::WriteBatch`] may carry.
pub const MAX_WRITE_BATCH: usize = 512;

/// A request to a shard member process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ShardRequest {
    /// A replication message from member `from`.
    Peer {
        /// The sending member, as it declares itself.
        from: NodeId,
        /// The message.
        message: Message,
    },
    /// A client operation.
    Client(ShardClientRequest),
    /// An operator's or a nemesis's request.
    Admin(ShardAdminRequest),
}

/// A shard member's answer, of the kind of its request.
#[derive(Debug, Serialize, Deserialize)]
pub enum ShardReply {
    /// The answer to [`ShardRequest::Peer`].
    Peer(Result<(), PeerRefusal>),
    /// The answer to [`ShardRequest::Client`].
    Client(Result<ShardClientReply, ReplicationError>),
    /// The answer to [`ShardRequest::Admin`].
    Admin(ShardAdminReply),
}

/// A client operation on the shard's registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardClientRequest {
    /// Write `value` under `key`; acknowledged once durable on the primary and (synchronous
    /// mode) on the mirror.
    Write {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// What the key's latest value must be (a compare-and-set when not `Always`).
        condition: WriteCondition,
        /// The epoch of the ring the client routed by (0 for a client that does not route by
        /// a ring); refused with [`ReplicationError::StaleRing`] when the shard is fenced at a
        /// newer one.
        ring_epoch: u64,
    },
    /// Many writes in one request (a rebalancer's page of copies or deletions), each with its
    /// own condition and answer; stepped together by the primary, so they share its saves.
    /// At most [`MAX_WRITE_BATCH`] writes.
    WriteBatch {
        /// Key, value (empty: delete) and condition of each write.
        writes: Vec<(Vec<u8>, Vec<u8>, WriteCondition)>,
        /// As for `Write`.
        ring_epoch: u64,
    },
    /// A linearizable read (primary with a lease).
    Read {
        /// The key.
        key: Vec<u8>,
        /// As for `Write`.
        ring_epoch: u64,
    },
    /// Up to `limit` keys and values of this member's own copy after `after`, in key order, with
    /// the fence of that copy; what a rebalancer moves. Consistent with the log through the
    /// copy's visible index, not linearizable.
    Scan {
        /// Start after this key (`None`: from the first).
        after: Option<Vec<u8>>,
        /// The most entries in the answer.
        limit: usize,
    },
    /// This member's own copy of `key`: acknowledged writes on a primary, every durable write
    /// on a mirror. Not linearizable.
    LocalRead {
        /// The key.
        key: Vec<u8>,
    },
    /// Ask this member (a mirror) to seek promotion now (the seed's manual failover).
    ForcePromotion,
    /// A compute node's cache lease: granted, or renewed while live (data nodes only; see
    /// [`super::compute_protocol`]).
    Subscribe {
        /// The compute node's id.
        compute: u32,
        /// Where it takes invalidations.
        addr: String,
    },
}

impl ShardClientRequest {
    /// Whether the operation can change the state, so that a lost reply leaves its outcome
    /// unknown.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Self::Write { .. } | Self::WriteBatch { .. } | Self::ForcePromotion
        )
    }
}

/// The success of a [`ShardClientRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardClientReply {
    /// The write is acknowledged at this log index.
    Written(LogIndex),
    /// The answer to each write of a [`ShardClientRequest::WriteBatch`], in order.
    WrittenBatch(Vec<Result<LogIndex, ReplicationError>>),
    /// The value read (`None`: never written).
    Value(Option<Vec<u8>>),
    /// The promotion request was taken.
    Accepted,
    /// The cache lease granted or renewed.
    Leased(Lease),
    /// A page of a [`ShardClientRequest::Scan`].
    Scanned {
        /// The fence in the copy scanned (see [`crate::replication::Replica::fence`]).
        fence: u64,
        /// Keys and values, in key order; fewer than the limit on the last page.
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

/// An operator's or a nemesis's request to a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardAdminRequest {
    /// The member's [`MemberStatus`].
    Status,
    /// Adds peers to the member's filter: messages to and from them are lost.
    BlockPeers(Vec<NodeId>),
    /// Empties the member's peer filter.
    UnblockAllPeers,
}

/// The answer to a [`ShardAdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardAdminReply {
    /// The member's status.
    Status(MemberStatus),
    /// The peers the filter blocks after the request.
    BlockedPeers(Vec<NodeId>),
}

/// What a member says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The shard.
    pub shard: usize,
    /// The member's id within the shard.
    pub id: NodeId,
    /// Whether it is the shard's witness.
    pub witness: bool,
    /// The process id.
    pub pid: u32,
    /// The newest epoch record it knows.
    pub record: EpochRecord,
    /// Whether it acts as primary now: named primary and holding a lease.
    pub is_primary: bool,
    /// A data node's commit index (`None` for a witness).
    pub commit_index: Option<LogIndex>,
    /// A data node's last log index (`None` for a witness).
    pub last_index: Option<LogIndex>,
    /// How many keys a data node's copy holds (`None` for a witness).
    pub keys: Option<usize>,
    /// Whether the member's event loop stopped (its disk failed); it then serves nothing.
    pub stopped: bool,
    /// How many fsynced saves it made since it started.
    pub saves: u64,
    /// The peers its filter blocks, in id order.
    pub blocked_peers: Vec<NodeId>,
    /// The compute nodes holding a live cache lease from it, in id order.
    pub cache_subscribers: Vec<u32>,
    /// How long its invalidations took, from the commit index passing an entry to a compute
    /// node's acknowledgement, per delivery and subscriber, since the member started (`None`
    /// before the first).
    pub invalidation_delivery: Option<LatencySummary>,
}

/// Quantiles of a latency, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many were measured.
    pub n: u64,
    /// The median.
    pub p50_us: u64,
    /// The 99th percentile.
    pub p99_us: u64,
    /// The largest.
    pub max_us: u64,
}
