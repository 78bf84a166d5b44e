//! The wire protocol of a metadata node process: one TCP listener per node carries three kinds of
//! request, each answered by one reply frame of the matching kind (`net::tcp` frames, postcard).
//!
//! - `Raft`: a peer's Raft RPC, delivered to the node's Raft unless the node's peer filter
//!   blocks the sender (see `net::tcp_transport`).
//! - `Client`: a write, a linearizable read or a compare-and-set, answered by the node itself;
//!   a follower refuses with [`MetadataError::NotLeader`] and the leader it knows of.
//! - `Admin`: status, and the peer filter that makes partitions between local processes.

use serde::{Deserialize, Serialize};

use crate::metadata::{MetadataError, NodeId};
use crate::net::{RaftReply, RaftRequest};

/// A request to a metadata node process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NodeRequest {
    /// A Raft RPC from peer `from`.
    Raft {
        /// The sending node, as it declares itself.
        from: NodeId,
        /// The RPC.
        request: RaftRequest,
    },
    /// A client operation.
    Client(ClientRequest),
    /// An operator's or a nemesis's request.
    Admin(AdminRequest),
}

/// A metadata node's answer, of the kind of its request.
#[derive(Debug, Serialize, Deserialize)]
pub enum NodeReply {
    /// The answer to [`NodeRequest::Raft`].
    Raft(Result<RaftReply, PeerRefusal>),
    /// The answer to [`NodeRequest::Client`].
    Client(Result<ClientReply, MetadataError>),
    /// The answer to [`NodeRequest::Admin`].
    Admin(AdminReply),
}

/// Why a node did not hand a peer's Raft RPC to its Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRefusal {
    /// The receiver's peer filter blocks the sender: the message counts as lost.
    Filtered,
    /// The receiver's Raft is not running (starting or stopping).
    NotServing,
    /// The receiver's Raft failed to handle the RPC.
    Failed(String),
}

/// A client operation on the metadata key-value map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Set `key` to `value` through the log.
    Write {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// A linearizable read of `key` (leader with a lease, read index).
    Read {
        /// The key.
        key: String,
    },
    /// Set `key` to `new` if it holds `expected` (`None`: absent).
    CompareAndSet {
        /// The key.
        key: String,
        /// The value the key must hold.
        expected: Option<String>,
        /// The value written when it does.
        new: String,
    },
}

impl ClientRequest {
    /// Whether the operation can change the state, so that a lost reply leaves its outcome
    /// unknown.
    pub fn is_write(&self) -> bool {
        !matches!(self, Self::Read { .. })
    }
}

/// The success of a [`ClientRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// The write is committed and applied.
    Written,
    /// The value read (`None`: absent).
    Value(Option<String>),
    /// The compare-and-set is committed; whether the comparison held and the write applied.
    CompareAndSet(bool),
}

/// An operator's or a nemesis's request to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The node's [`NodeStatus`].
    Status,
    /// Adds peers to the node's peer filter: Raft messages to and from them are lost.
    BlockPeers(Vec<NodeId>),
    /// Empties the node's peer filter.
    UnblockAllPeers,
    /// Learns the address of a node being added to the group (sent to every member).
    AddPeer {
        /// The new node's id.
        id: NodeId,
        /// Its `host:port`.
        addr: String,
    },
    /// Makes node `id` a voter (sent to the leader; it must already know the address). Answered
    /// once the uniform configuration is committed.
    AddVoter {
        /// The new node's id.
        id: NodeId,
    },
}

/// The answer to an [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// The node's status.
    Status(NodeStatus),
    /// The peers the filter blocks after the request.
    BlockedPeers(Vec<NodeId>),
    /// The peers the node knows after an `AddPeer`.
    Peers(Vec<NodeId>),
    /// The answer to an `AddVoter`: the voters after the change, or why it failed.
    Voters(Result<Vec<NodeId>, MetadataError>),
}

/// What a node says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// The process id of the node's process.
    pub pid: u32,
    /// The leader the node believes in (openraft's view, without the lease check).
    pub leader: Option<NodeId>,
    /// The node's current term.
    pub term: u64,
    /// The index of the last entry applied to the state machine.
    pub last_applied_index: Option<u64>,
    /// The index of the last entry in the node's log.
    pub last_log_index: Option<u64>,
    /// Whether the node is leader and may serve now (lease held, its term's entry applied).
    pub is_leader: bool,
    /// The peers its filter blocks, in id order.
    pub blocked_peers: Vec<NodeId>,
    /// The voters of the membership it knows (empty before the group forms).
    #[serde(default)]
    pub voters: Vec<NodeId>,
}
