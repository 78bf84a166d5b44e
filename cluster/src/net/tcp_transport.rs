//! [`TcpTransport`]: the [`Transport`] of a metadata node that runs as its own process, over the
//! framed TCP of [`super::tcp`].
//!
//! Each node knows every peer's address (id → `host:port`, resolved when it connects, so names
//! work as well as addresses). A Raft RPC travels as `NodeRequest::Raft` to the peer's one node
//! listener (`crate::process`), which hands it to its Raft through [`TcpTransport::receive`].
//!
//! The [`PeerFilter`] makes partitions between local processes, where no firewall is at hand: a
//! node drops every Raft message to a blocked peer before sending it, and every message from a
//! blocked peer when it arrives (or its reply, if the peer became blocked meanwhile). A drop is
//! reported as [`TransportError::Lost`], as the simulated network reports a partition. Each side
//! of a partition sets its own filter, so a one-way partition is one node's filter alone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use openraft::Raft;

use super::tcp::{self, FrameOptions, FramedConnection};
use super::{serve, BoxFuture, RaftReply, RaftRequest, Transport, TransportError};
use crate::metadata::{NodeId, TypeConfig};
use crate::process::protocol::{NodeReply, NodeRequest, PeerRefusal};

/// Idle connections kept per peer; more concurrent RPCs open more, and the surplus is closed.
const MAX_IDLE_CONNECTIONS_PER_PEER: usize = 4;

type Connection = FramedConnection<NodeRequest, NodeReply>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("tcp transport lock poisoned: a panic happened while it was held")
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .expect("tcp transport lock poisoned: a panic happened while it was held")
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .expect("tcp transport lock poisoned: a panic happened while it was held")
}

/// The set of peers a node does not talk to; shared by its transport and its admin endpoint.
#[derive(Clone, Debug, Default)]
pub struct PeerFilter {
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl PeerFilter {
    /// Adds `peers` to the blocked set; returns the set after.
    pub fn block(&self, peers: &[NodeId]) -> Vec<NodeId> {
        let mut blocked = self.blocked.write().expect("peer filter lock poisoned");
        blocked.extend(peers.iter().copied());
        blocked.iter().copied().collect()
    }

    /// Empties the blocked set.
    pub fn unblock_all(&self) {
        self.blocked
            .write()
            .expect("peer filter lock poisoned")
            .clear();
    }

    /// Whether messages to and from `peer` are dropped.
    pub fn blocks(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .expect("peer filter lock poisoned")
            .contains(&peer)
    }

    /// The blocked peers, in id order.
    pub fn blocked(&self) -> Vec<NodeId> {
        self.blocked
            .read()
            .expect("peer filter lock poisoned")
            .iter()
            .copied()
            .collect()
    }
}

/// The bounds of Raft RPCs between processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpTransportOptions {
    /// Frame cap, connect and call bounds of each RPC. openraft bounds each RPC by its own
    /// time-to-live as well; this is the outer bound.
    pub frames: FrameOptions,
}

impl Default for TcpTransportOptions {
    fn default() -> Self {
        Self {
            frames: FrameOptions {
                connect_timeout: Duration::from_secs(1),
                call_timeout: Duration::from_secs(2),
                ..FrameOptions::default()
            },
        }
    }
}

struct Inner {
    id: NodeId,
    /// Every member's address, this node's included; grows when a node is added.
    peers: RwLock<BTreeMap<NodeId, String>>,
    filter: PeerFilter,
    options: TcpTransportOptions,
    /// The local Raft, while it runs.
    raft: RwLock<Option<Raft<TypeConfig>>>,
    /// Invariant: each holds no call in flight and no unread reply; at most
    /// `MAX_IDLE_CONNECTIONS_PER_PEER` per peer.
    idle: Mutex<BTreeMap<NodeId, Vec<Connection>>>,
}

/// One node's end of the Raft traffic between processes. Clones share the transport.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.inner.id)
            .field("peers", &self.inner.peers)
            .field("blocked", &self.inner.filter.blocked())
            .finish()
    }
}

/// Resolves `host:port` (or an IP address and port) within `bound`.
pub async fn resolve(addr: &str, bound: Duration) -> Result<SocketAddr, String> {
    if let Ok(parsed) = addr.parse() {
        return Ok(parsed);
    }
    let lookup = tokio::time::timeout(bound, tokio::net::lookup_host(addr.to_string()))
        .await
        .map_err(|_| format!("resolving {addr} timed out after {bound:?}"))?
        .map_err(|e| format!("resolving {addr}: {e}"))?;
    let mut addrs: Vec<SocketAddr> = lookup.collect();
    // Prefer IPv4, which every loopback and container network here has.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

impl TcpTransport {
    /// The transport of node `id` among `peers` (every member, `id` included).
    ///
    /// # Panics
    /// If `peers` does not hold `id`: a caller's bug (the CLI checks the flag first).
    pub fn new(
        id: NodeId,
        peers: BTreeMap<NodeId, String>,
        filter: PeerFilter,
        options: TcpTransportOptions,
    ) -> Self {
        assert!(
            peers.contains_key(&id),
            "node {id} is not among its own peers {peers:?}"
        );
        Self {
            inner: Arc::new(Inner {
                id,
                peers: RwLock::new(peers),
                filter,
                options,
                raft: RwLock::new(None),
                idle: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Learns (or relearns) the address of peer `id`, a node being added to the group.
    pub fn add_peer(&self, id: NodeId, addr: String) {
        write(&self.inner.peers).insert(id, addr);
    }

    /// Every peer's address, this node's included.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        read(&self.inner.peers).clone()
    }

    /// The node's peer filter.
    pub fn filter(&self) -> &PeerFilter {
        &self.inner.filter
    }

    /// Hands a peer's Raft RPC to the local Raft, unless the filter drops it (on arrival, or
    /// its reply if the sender became blocked while it was handled).
    pub async fn receive(
        &self,
        from: NodeId,
        request: RaftRequest,
    ) -> Result<RaftReply, PeerRefusal> {
        if self.inner.filter.blocks(from) {
            return Err(PeerRefusal::Filtered);
        }
        let raft = self
            .inner
            .raft
            .read()
            .expect("tcp transport raft lock poisoned")
            .clone();
        let Some(raft) = raft else {
            return Err(PeerRefusal::NotServing);
        };
        let reply = serve(&raft, request).await.map_err(PeerRefusal::Failed)?;
        if self.inner.filter.blocks(from) {
            return Err(PeerRefusal::Filtered);
        }
        Ok(reply)
    }

    fn take_idle(&self, to: NodeId) -> Option<Connection> {
        lock(&self.inner.idle).get_mut(&to).and_then(Vec::pop)
    }

    fn put_idle(&self, to: NodeId, connection: Connection) {
        let mut idle = lock(&self.inner.idle);
        let pool = idle.entry(to).or_default();
        if pool.len() < MAX_IDLE_CONNECTIONS_PER_PEER {
            pool.push(connection);
        }
    }

    async fn connect(&self, to: NodeId) -> Result<Connection, TransportError> {
        let unreachable = TransportError::Unreachable { to };
        let Some(addr) = read(&self.inner.peers).get(&to).cloned() else {
            return Err(unreachable);
        };
        let frames = self.inner.options.frames.clone();
        let socket_addr = resolve(&addr, frames.connect_timeout)
            .await
            .map_err(|_| unreachable.clone())?;
        Connection::connect(socket_addr, frames)
            .await
            .map_err(|_| unreachable)
    }

    /// Sends one RPC to `to` and waits, within the call bound, for its reply.
    async fn call(
        self,
        from: NodeId,
        to: NodeId,
        request: RaftRequest,
    ) -> Result<RaftReply, TransportError> {
        let lost = TransportError::Lost { from, to };
        if self.inner.filter.blocks(to) {
            return Err(lost);
        }
        let mut connection = match self.take_idle(to) {
            Some(connection) => connection,
            None => self.connect(to).await?,
        };
        let reply = tcp::call(&mut connection, &NodeRequest::Raft { from, request }).await;
        // A failed call leaves the connection out of step: it is dropped, not pooled.
        let Ok(reply) = reply else {
            return Err(lost);
        };
        self.put_idle(to, connection);
        if self.inner.filter.blocks(to) {
            return Err(lost);
        }
        match reply {
            NodeReply::Raft(Ok(reply)) => Ok(reply),
            NodeReply::Raft(Err(PeerRefusal::Filtered)) => Err(lost),
            NodeReply::Raft(Err(PeerRefusal::NotServing)) => {
                Err(TransportError::Unreachable { to })
            }
            NodeReply::Raft(Err(PeerRefusal::Failed(reason))) => {
                Err(TransportError::Remote { to, reason })
            }
            other => Err(TransportError::Remote {
                to,
                reason: format!("reply of the wrong kind to a raft rpc: {other:?}"),
            }),
        }
    }
}

impl Transport for TcpTransport {
    fn send(
        &self,
        from: NodeId,
        to: NodeId,
        request: RaftRequest,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>> {
        assert_eq!(
            from, self.inner.id,
            "node {from} sent through the transport of node {}",
            self.inner.id
        );
        Box::pin(self.clone().call(from, to, request))
    }

    fn listen(&self, id: NodeId, raft: Raft<TypeConfig>) {
        assert_eq!(
            id, self.inner.id,
            "node {id} listened on another node's transport"
        );
        *self
            .inner
            .raft
            .write()
            .expect("tcp transport raft lock poisoned") = Some(raft);
    }

    fn close(&self, id: NodeId) {
        assert_eq!(
            id, self.inner.id,
            "node {id} closed another node's transport"
        );
        *self
            .inner
            .raft
            .write()
            .expect("tcp transport raft lock poisoned") = None;
        lock(&self.inner.idle).clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};

    use super::*;
    use crate::metadata::MetadataCommand;
    use crate::net::tcp::{decode, encode, DEFAULT_MAX_FRAME_BYTES};

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn every_raft_message_round_trips_through_postcard() {
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], None);
        let entries = vec![
            Entry::<TypeConfig> {
                log_id: log_id(1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, 2),
                payload: EntryPayload::Normal(MetadataCommand::CompareAndSet {
                    key: "k".into(),
                    expected: None,
                    new: "v".into(),
                }),
            },
            Entry {
                log_id: log_id(1, 3),
                payload: EntryPayload::Membership(membership),
            },
        ];
        let requests = [
            RaftRequest::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(1, 1),
                prev_log_id: Some(log_id(1, 0)),
                entries,
                leader_commit: Some(log_id(1, 2)),
            }),
            RaftRequest::Vote(VoteRequest::new(Vote::new(2, 3), Some(log_id(1, 3)))),
        ];
        for request in requests {
            let message = NodeRequest::Raft { from: 3, request };
            let frame = encode(&message, DEFAULT_MAX_FRAME_BYTES).expect("encodes");
            let back: NodeRequest = decode(&frame).expect("decodes");
            assert_eq!(format!("{back:?}"), format!("{message:?}"));
        }
    }

    #[test]
    fn the_filter_blocks_what_it_was_told_until_cleared() {
        let filter = PeerFilter::default();
        assert_eq!(filter.block(&[3, 1]), vec![1, 3]);
        assert!(filter.blocks(3) && filter.blocks(1) && !filter.blocks(2));
        filter.unblock_all();
        assert!(filter.blocked().is_empty());
    }

    #[tokio::test]
    async fn a_blocked_peer_is_lost_without_a_connection_and_an_unknown_one_is_unreachable() {
        // Port 9 on loopback: nothing listens, so reaching the network would be Unreachable.
        let peers = BTreeMap::from([(1, "127.0.0.1:9".to_string()), (2, "127.0.0.1:9".into())]);
        let transport = TcpTransport::new(1, peers, PeerFilter::default(), Default::default());
        transport.filter().block(&[2]);
        let vote = || RaftRequest::Vote(VoteRequest::new(Vote::new(1, 1), None));
        let error = transport.send(1, 2, vote()).await.expect_err("blocked");
        assert_eq!(error, TransportError::Lost { from: 1, to: 2 });
        let error = transport
            .send(1, 5, vote())
            .await
            .expect_err("no such peer");
        assert_eq!(error, TransportError::Unreachable { to: 5 });
        transport.filter().unblock_all();
        let error = transport
            .send(1, 2, vote())
            .await
            .expect_err("nothing listens");
        assert_eq!(error, TransportError::Unreachable { to: 2 });
        let refused = transport.receive(2, vote()).await.expect_err("no raft yet");
        assert_eq!(refused, PeerRefusal::NotServing);
        transport.filter().block(&[2]);
        let refused = transport.receive(2, vote()).await.expect_err("filtered");
        assert_eq!(refused, PeerRefusal::Filtered);
    }
}
