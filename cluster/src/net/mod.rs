//! How metadata nodes talk: the [`Transport`] trait, its Raft messages, and the openraft network
//! adapter that runs over any transport (the simulated network, or TCP between processes).

// The error types are fixed by openraft's storage and network traits; boxing them is not ours
// to choose.
#![allow(clippy::result_large_err)]

pub mod bus;
mod sim;
pub mod tcp;
pub mod tcp_transport;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};

use crate::metadata::{NodeId, TypeConfig};

pub use sim::{NetworkSimulator, PauseGate};

/// A boxed, sendable future, so that [`Transport`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A Raft request from one metadata node to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Replicate entries, or a heartbeat when empty (Raft §5.3).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Ask for a vote (Raft §5.2).
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot (Raft §7).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRequest`], of the matching variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// Answer to [`RaftRequest::AppendEntries`].
    AppendEntries(AppendEntriesResponse<NodeId>),
    /// Answer to [`RaftRequest::Vote`].
    Vote(VoteResponse<NodeId>),
    /// Answer to [`RaftRequest::InstallSnapshot`].
    InstallSnapshot(InstallSnapshotResponse<NodeId>),
}

/// Why a request got no reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No node listens under that id (it was killed, or never started).
    #[error("node {to} is unreachable")]
    Unreachable {
        /// The addressee.
        to: NodeId,
    },
    /// The request or its reply was lost (partition or random drop); the request may have been
    /// delivered.
    #[error("message between node {from} and node {to} was lost")]
    Lost {
        /// The sender of the request.
        from: NodeId,
        /// The addressee of the request.
        to: NodeId,
    },
    /// The addressee received the request but its Raft failed to handle it.
    #[error("node {to} failed to handle the request: {reason}")]
    Remote {
        /// The addressee.
        to: NodeId,
        /// The remote error text.
        reason: String,
    },
}

/// Carries Raft requests between metadata nodes.
///
/// An implementation delivers each request to the Raft registered under the addressee's id with
/// [`Transport::listen`], and returns its reply.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` from node `from` to node `to` and waits for the reply.
    fn send(
        &self,
        from: NodeId,
        to: NodeId,
        request: RaftRequest,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>>;

    /// Starts delivering requests addressed to `id` to `raft`.
    fn listen(&self, id: NodeId, raft: Raft<TypeConfig>);

    /// Stops delivering requests to `id`; requests to it fail as unreachable.
    fn close(&self, id: NodeId);
}

/// Hands a request to the local Raft and returns its reply; the receiving half of any transport.
pub async fn serve(raft: &Raft<TypeConfig>, request: RaftRequest) -> Result<RaftReply, String> {
    match request {
        RaftRequest::AppendEntries(rpc) => raft
            .append_entries(rpc)
            .await
            .map(RaftReply::AppendEntries)
            .map_err(|e| e.to_string()),
        RaftRequest::Vote(rpc) => raft
            .vote(rpc)
            .await
            .map(RaftReply::Vote)
            .map_err(|e| e.to_string()),
        RaftRequest::InstallSnapshot(rpc) => raft
            .install_snapshot(rpc)
            .await
            .map(RaftReply::InstallSnapshot)
            .map_err(|e| e.to_string()),
    }
}

/// A transport that can be bound after the node is built, as the seed builds nodes first and
/// connects them with `NetworkSimulator::connect_all` afterwards.
#[derive(Clone, Default)]
pub struct TransportSlot {
    /// Invariant: once set, only replaced by `bind`, never unset.
    inner: Arc<RwLock<Option<Arc<dyn Transport>>>>,
}

impl TransportSlot {
    /// Binds the slot to `transport`.
    pub fn bind(&self, transport: Arc<dyn Transport>) {
        *self.inner.write().expect("transport slot lock poisoned") = Some(transport);
    }

    /// The bound transport, if any.
    pub fn get(&self) -> Option<Arc<dyn Transport>> {
        self.inner
            .read()
            .expect("transport slot lock poisoned")
            .clone()
    }
}

/// How long a replication stream waits before retrying an unreachable peer.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);

/// The openraft network factory of node `from`: one [`PeerConnection`] per peer.
#[derive(Clone)]
pub struct TransportNetworkFactory {
    /// The node that owns this factory.
    pub from: NodeId,
    /// The transport its connections use.
    pub slot: TransportSlot,
}

impl RaftNetworkFactory<TypeConfig> for TransportNetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        PeerConnection {
            from: self.from,
            to: target,
            slot: self.slot.clone(),
        }
    }
}

/// One node's openraft connection to a peer, over a [`Transport`].
pub struct PeerConnection {
    from: NodeId,
    to: NodeId,
    slot: TransportSlot,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn call<E: std::error::Error>(&self, request: RaftRequest) -> RpcResult<RaftReply, E> {
        let Some(transport) = self.slot.get() else {
            let error = TransportError::Unreachable { to: self.to };
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        };
        match transport.send(self.from, self.to, request).await {
            Ok(reply) => Ok(reply),
            Err(error @ TransportError::Unreachable { .. }) => {
                Err(RPCError::Unreachable(Unreachable::new(&error)))
            }
            Err(error) => Err(RPCError::Network(NetworkError::new(&error))),
        }
    }

    fn mismatched<T, E: std::error::Error>(&self, reply: &RaftReply) -> RpcResult<T, E> {
        let error = TransportError::Remote {
            to: self.to,
            reason: format!("reply of the wrong kind: {reply:?}"),
        };
        Err(RPCError::Network(NetworkError::new(&error)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.call(RaftRequest::AppendEntries(rpc)).await? {
            RaftReply::AppendEntries(response) => Ok(response),
            other => self.mismatched(&other),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(RaftRequest::InstallSnapshot(rpc)).await? {
            RaftReply::InstallSnapshot(response) => Ok(response),
            other => self.mismatched(&other),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(RaftRequest::Vote(rpc)).await? {
            RaftReply::Vote(response) => Ok(response),
            other => self.mismatched(&other),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }
}
