//! [`NodeServer`]: one metadata node as a process would run it: storage in a data directory, a
//! [`TcpTransport`] to its peers, and one listener that serves peers, clients and the admin
//! endpoint (see [`super::protocol`]).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::protocol::{
    AdminReply, AdminRequest, ClientReply, ClientRequest, NodeReply, NodeRequest, NodeStatus,
};
use crate::metadata::NodeSettings;
use crate::metadata::{DiskStoreError, DurableStorage, MetadataError, MetadataNode, NodeId};
use crate::net::tcp::{self, ServeOptions};
use crate::net::tcp_transport::{PeerFilter, TcpTransport, TcpTransportOptions};

/// The bound on adding a voter: catching the learner up, then two membership commits.
const ADD_VOTER_BOUND: Duration = Duration::from_secs(10);

/// When a node forms the group (openraft `initialize` with every peer as a voter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitPolicy {
    /// The node with the lowest id forms the group if its data directory is pristine (it never
    /// voted, logged or applied anything). A restarted node never re-forms the group, and the
    /// other nodes simply wait to hear from a leader. The default.
    LowestIdWhenPristine,
    /// This node forms the group if its data directory is pristine, whatever its id.
    WhenPristine,
    /// Never: the node waits to be contacted by a leader.
    Never,
}

/// Everything a metadata node process needs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's id; a key of `peers`.
    pub id: NodeId,
    /// Where the node listens (peers, clients, admin).
    pub listen: SocketAddr,
    /// Every member's address, `id` included: the group's voters.
    pub peers: BTreeMap<NodeId, String>,
    /// Addresses of nodes that are not members yet but may be added later (a spare container
    /// whose name is fixed in advance); known to the transport, never voters at formation.
    pub spare_peers: BTreeMap<NodeId, String>,
    /// Where the vote, log and state machine live.
    pub data_dir: PathBuf,
    /// Raft timings and the client request bound.
    pub settings: NodeSettings,
    /// When to form the group.
    pub init: InitPolicy,
    /// Bounds of RPCs to peers.
    pub transport: TcpTransportOptions,
    /// Bounds of the listener.
    pub serve: ServeOptions,
}

impl NodeConfig {
    /// A node with default timings, bounds and init policy.
    pub fn new(
        id: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, String>,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            id,
            listen,
            peers,
            spare_peers: BTreeMap::new(),
            data_dir,
            settings: NodeSettings::default(),
            init: InitPolicy::LowestIdWhenPristine,
            transport: TcpTransportOptions::default(),
            serve: ServeOptions {
                // A peer or client that stops talking is closed well before the default 5 min.
                idle_timeout: Duration::from_secs(60),
                ..ServeOptions::default()
            },
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeServerError {
    /// The configuration is inconsistent.
    #[error("bad node configuration: {0}")]
    Config(String),
    /// The data directory could not be opened.
    #[error(transparent)]
    Storage(#[from] DiskStoreError),
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// Raft failed to start or to form the group.
    #[error("raft: {0}")]
    Raft(#[from] MetadataError),
}

struct Served {
    node: MetadataNode,
    transport: TcpTransport,
}

/// A running metadata node with its listener.
#[derive(Debug)]
pub struct NodeServer {
    node: MetadataNode,
    transport: TcpTransport,
    local_addr: SocketAddr,
    /// Invariant: runs until `shutdown`; aborting it closes every connection it serves.
    listener_task: JoinHandle<()>,
    initialized_group: bool,
}

impl NodeServer {
    /// Opens the data directory, binds the listener, starts Raft and serves; forms the group if
    /// the init policy says so.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeServerError> {
        let Some(&lowest) = config.peers.keys().next() else {
            return Err(NodeServerError::Config("no peers given".into()));
        };
        if !config.peers.contains_key(&config.id) {
            return Err(NodeServerError::Config(format!(
                "node id {} is not among the peers {:?}",
                config.id,
                config.peers.keys().collect::<Vec<_>>()
            )));
        }
        let storage = DurableStorage::open_dir(&config.data_dir)?;
        let pristine = storage.is_pristine();
        let (listener, local_addr) =
            tcp::bind(config.listen)
                .await
                .map_err(|source| NodeServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let transport = TcpTransport::new(
            config.id,
            config.peers.clone(),
            PeerFilter::default(),
            config.transport.clone(),
        );
        for (&id, addr) in &config.spare_peers {
            transport.add_peer(id, addr.clone());
        }
        let node = MetadataNode::with_storage(
            config.id,
            config.settings.clone(),
            storage,
            Some(Arc::new(transport.clone())),
        )
        .await?;
        let served = Arc::new(Served {
            node: node.clone(),
            transport: transport.clone(),
        });
        let listener_task = tokio::spawn(tcp::serve(listener, config.serve, move |request| {
            let served = Arc::clone(&served);
            async move { handle(&served, request).await }
        }));
        let initialize = pristine
            && match config.init {
                InitPolicy::LowestIdWhenPristine => config.id == lowest,
                InitPolicy::WhenPristine => true,
                InitPolicy::Never => false,
            };
        if initialize {
            let members: Vec<NodeId> = config.peers.keys().copied().collect();
            tracing::info!(node = config.id, ?members, "forming the metadata group");
            node.initialize(&members).await?;
        }
        tracing::info!(
            node = config.id,
            addr = %local_addr,
            data_dir = %config.data_dir.display(),
            pristine,
            "metadata node serving"
        );
        Ok(Self {
            node,
            transport,
            local_addr,
            listener_task,
            initialized_group: initialize,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metadata node.
    pub fn node(&self) -> &MetadataNode {
        &self.node
    }

    /// The node's peer filter.
    pub fn filter(&self) -> &PeerFilter {
        self.transport.filter()
    }

    /// Whether this start formed the group.
    pub fn initialized_group(&self) -> bool {
        self.initialized_group
    }

    /// The node's status, as the admin endpoint reports it.
    pub fn status(&self) -> NodeStatus {
        status(&self.node, &self.transport)
    }

    /// Stops serving and stops Raft; the data directory keeps everything acknowledged.
    pub async fn shutdown(self) {
        self.listener_task.abort();
        let _ = self.listener_task.await;
        self.node.shutdown().await;
        tracing::info!(node = self.node.id(), "metadata node stopped");
    }
}

fn status(node: &MetadataNode, transport: &TcpTransport) -> NodeStatus {
    let metrics = node.metrics();
    NodeStatus {
        id: node.id(),
        pid: std::process::id(),
        leader: metrics.as_ref().and_then(|m| m.current_leader),
        term: metrics.as_ref().map_or(0, |m| m.current_term),
        last_applied_index: metrics
            .as_ref()
            .and_then(|m| m.last_applied.map(|id| id.index)),
        last_log_index: metrics.as_ref().and_then(|m| m.last_log_index),
        is_leader: node.is_leader(),
        blocked_peers: transport.filter().blocked(),
        voters: node.voters(),
    }
}

async fn handle(served: &Served, request: NodeRequest) -> NodeReply {
    match request {
        NodeRequest::Raft { from, request } => {
            NodeReply::Raft(served.transport.receive(from, request).await)
        }
        NodeRequest::Client(request) => {
            NodeReply::Client(handle_client(&served.node, request).await)
        }
        NodeRequest::Admin(request) => NodeReply::Admin(handle_admin(served, request).await),
    }
}

async fn handle_client(
    node: &MetadataNode,
    request: ClientRequest,
) -> Result<ClientReply, MetadataError> {
    match request {
        ClientRequest::Write { key, value } => node
            .propose_change(&key, &value)
            .await
            .map(|()| ClientReply::Written),
        ClientRequest::Read { key } => node.read(&key).await.map(ClientReply::Value),
        ClientRequest::CompareAndSet { key, expected, new } => node
            .compare_and_set(&key, expected.as_deref(), &new)
            .await
            .map(ClientReply::CompareAndSet),
    }
}

async fn handle_admin(served: &Served, request: AdminRequest) -> AdminReply {
    match request {
        AdminRequest::Status => AdminReply::Status(status(&served.node, &served.transport)),
        AdminRequest::BlockPeers(peers) => {
            let blocked = served.transport.filter().block(&peers);
            tracing::warn!(node = served.node.id(), ?blocked, "peer filter: blocking");
            AdminReply::BlockedPeers(blocked)
        }
        AdminRequest::UnblockAllPeers => {
            served.transport.filter().unblock_all();
            tracing::warn!(node = served.node.id(), "peer filter: cleared");
            AdminReply::BlockedPeers(Vec::new())
        }
        AdminRequest::AddPeer { id, addr } => {
            tracing::warn!(node = served.node.id(), new = id, %addr, "learned a new peer");
            served.transport.add_peer(id, addr);
            AdminReply::Peers(served.transport.peers().into_keys().collect())
        }
        AdminRequest::AddVoter { id } => {
            tracing::warn!(node = served.node.id(), new = id, "adding a voter");
            let added = served.node.add_voter(id, ADD_VOTER_BOUND).await;
            AdminReply::Voters(added.map(|()| served.node.voters()))
        }
    }
}
