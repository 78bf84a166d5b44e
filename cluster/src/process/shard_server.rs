//! [`MemberServer`]: one member of a replicated shard (a data node or the witness) as a process
//! runs it: the same state machine as the simulation ([`crate::replication`]), stepped by the
//! same event loop, with its durable state in a data directory ([`MemberDisk`], saved and
//! fsynced after every step that changed it and before anything is sent) and its messages over
//! TCP instead of the message bus.
//!
//! Each peer has one outbound link: a bounded queue and a task that keeps one connection and
//! sends each message as a [`ShardRequest::Peer`]. A message the queue cannot take, or that a
//! blocked, dead or silent peer does not take, is lost, as on the bus; the protocol resends
//! what matters. A peer that cannot be reached is not retried for [`RECONNECT_BACKOFF`], so a
//! dead peer costs one refused connect per backoff, not one per message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cache_leases::{CacheLeaseOptions, CacheLeases};
use super::protocol::PeerRefusal;
use super::shard_protocol::{
    MemberStatus, ShardAdminReply, ShardAdminRequest, ShardClientReply, ShardClientRequest,
    ShardReply, ShardRequest, MAX_WRITE_BATCH,
};
use crate::metadata::NodeId;
use crate::net::tcp::{self, FrameOptions, FramedConnection, ServeOptions};
use crate::net::tcp_transport::{resolve, PeerFilter};
use crate::net::PauseGate;
use crate::replication::disk::{MemberDisk, MemberDiskError, MemberIdentity};
use crate::replication::runtime::{
    drive, ClientCall, ClientOp, ClientOutput, Clock, Host, Kind, Member,
};
use crate::replication::{
    Action, EpochRecord, Event, Message, ProtocolOptions, ReplicationError, WriteCondition,
};

/// How long an unreachable peer is not tried again.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(20);
/// How many messages wait for one peer; more are dropped, like a full socket buffer.
const LINK_QUEUE: usize = 1024;
/// How many messages from peers wait for the event loop.
const INBOX_CAPACITY: usize = 4096;
/// How many client calls wait for the event loop.
const CLIENT_QUEUE_CAPACITY: usize = 1024;
/// The most entries one scan page carries, whatever the client asks (rows are small; a page
/// stays far below the frame limit).
pub const MAX_SCAN_PAGE: usize = 1024;

/// What a member is, with the ids it needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// A data node; `peer` is the shard's other data node.
    DataNode {
        /// The other data node.
        peer: NodeId,
        /// The shard's witness.
        witness: NodeId,
    },
    /// The shard's witness.
    Witness {
        /// The shard's two data nodes.
        replicas: [NodeId; 2],
    },
}

/// Everything a shard member process needs.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// The shard.
    pub shard: usize,
    /// The member's id within the shard's protocol; a key of `peers`.
    pub id: NodeId,
    /// What it is.
    pub role: MemberRole,
    /// Where it listens (peers, clients, admin).
    pub listen: SocketAddr,
    /// The address of every member of the shard, this one included.
    pub peers: BTreeMap<NodeId, String>,
    /// Where its durable state lives.
    pub data_dir: PathBuf,
    /// The shard's first record: every member must be given the same one. Used only when the
    /// data directory is new.
    pub initial_primary: NodeId,
    /// Timings and limits, the same as in the simulation.
    pub protocol: ProtocolOptions,
    /// How long a client call may wait for the member's answer.
    pub request_timeout: Duration,
    /// Bounds of the links to peers (a call that overruns drops its connection).
    pub peer_frames: FrameOptions,
    /// Bounds of the listener.
    pub serve: ServeOptions,
    /// The compute nodes' cache leases (data nodes).
    pub cache_leases: CacheLeaseOptions,
}

impl MemberConfig {
    /// A member with default timings and bounds; the lower data node id is the first primary.
    pub fn new(
        shard: usize,
        id: NodeId,
        role: MemberRole,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, String>,
        data_dir: PathBuf,
    ) -> Self {
        let replicas = match role {
            MemberRole::DataNode { peer, .. } => [id.min(peer), id.max(peer)],
            MemberRole::Witness { replicas } => [replicas[0].min(replicas[1]), replicas[1]],
        };
        Self {
            shard,
            id,
            role,
            listen,
            peers,
            data_dir,
            initial_primary: replicas[0],
            protocol: ProtocolOptions::default(),
            request_timeout: Duration::from_secs(2),
            peer_frames: FrameOptions {
                connect_timeout: Duration::from_millis(200),
                call_timeout: Duration::from_millis(200),
                ..FrameOptions::default()
            },
            serve: ServeOptions {
                idle_timeout: Duration::from_secs(60),
                ..ServeOptions::default()
            },
            cache_leases: CacheLeaseOptions::default(),
        }
    }

    fn kind(&self) -> Kind {
        match self.role {
            MemberRole::DataNode { peer, witness } => Kind::Replica { peer, witness },
            MemberRole::Witness { replicas } => Kind::Witness { replicas },
        }
    }

    fn others(&self) -> Vec<NodeId> {
        match self.role {
            MemberRole::DataNode { peer, witness } => vec![peer, witness],
            MemberRole::Witness { replicas } => replicas.to_vec(),
        }
    }

    fn check(&self) -> Result<(), MemberServerError> {
        let mut ids = self.others();
        ids.push(self.id);
        for id in &ids {
            if !self.peers.contains_key(id) {
                return Err(MemberServerError::Config(format!(
                    "member {id} of shard {} has no address in the peers {:?}",
                    self.shard,
                    self.peers.keys().collect::<Vec<_>>()
                )));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != 3 {
            return Err(MemberServerError::Config(format!(
                "a shard has three distinct members, not {ids:?}"
            )));
        }
        let replicas = match self.role {
            MemberRole::DataNode { peer, .. } => [self.id, peer],
            MemberRole::Witness { replicas } => replicas,
        };
        if !replicas.contains(&self.initial_primary) {
            return Err(MemberServerError::Config(format!(
                "the first primary {} is not a data node of shard {} ({replicas:?})",
                self.initial_primary, self.shard
            )));
        }
        Ok(())
    }
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum MemberServerError {
    /// The configuration is inconsistent.
    #[error("bad shard member configuration: {0}")]
    Config(String),
    /// The data directory could not be used.
    #[error(transparent)]
    Disk(#[from] MemberDiskError),
    /// The listener could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
}

/// The member's state, shared by its event loop and the handlers that observe it.
#[derive(Debug)]
struct State {
    member: Member,
    disk: MemberDisk,
    /// Set when a save failed: the member stops acting, since it can no longer keep promises.
    stopped: bool,
}

/// What the listener's handlers share.
#[derive(Debug)]
struct Shared {
    shard: usize,
    id: NodeId,
    state: Mutex<State>,
    clock: Clock,
    filter: PeerFilter,
    inbox: mpsc::Sender<(NodeId, Message)>,
    client_queue: mpsc::Sender<ClientCall>,
    request_timeout: Duration,
    /// A data node's cache leases (`None` for a witness).
    leases: Option<Arc<CacheLeases>>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("member lock poisoned: a panic happened while it was held")
    }
}

/// The event loop's host: steps the member, saves, and sends over the links.
struct ProcessHost {
    shared: Arc<Shared>,
    links: BTreeMap<NodeId, mpsc::Sender<Message>>,
}

impl Host for ProcessHost {
    fn step(&mut self, event: Event) -> Option<Vec<Action>> {
        let now = self.shared.clock.now_ms();
        let mut state = self.shared.state();
        if state.stopped {
            return None;
        }
        Some(state.member.step(now, event))
    }

    fn persist(&mut self) -> bool {
        let mut state = self.shared.state();
        let State { member, disk, .. } = &mut *state;
        // Blocking on the disk is this task's job: nothing may be sent before the save.
        if let Err(error) = member.save_to(disk) {
            tracing::error!(node = self.shared.id, %error, "save failed; the member stops");
            state.stopped = true;
            return false;
        }
        // Committed entries go to the compute nodes before any answer can expose them.
        if let (Some(leases), Some(replica)) = (&self.shared.leases, member.as_replica()) {
            let record = replica.record();
            let committed = replica.commit_index();
            let published = leases.published();
            if record.primary != self.shared.id {
                // A mirror publishes nothing; it makes its subscribers drop all on promotion.
            } else if leases.primary_epoch() != Some(record.epoch) {
                leases.became_primary(record.epoch, committed);
            } else if committed > published {
                let log = &replica.durable().log;
                let keys = (published + 1..=committed)
                    .filter_map(|index| log.get(index).map(|entry| entry.key.clone()))
                    .collect();
                leases.publish(committed, keys);
            }
        }
        true
    }

    fn send(&self, to: NodeId, message: Message) {
        if self.shared.filter.blocks(to) {
            return;
        }
        if let Some(link) = self.links.get(&to) {
            // A full queue loses the message, as a full socket buffer would.
            let _ = link.try_send(message);
        }
    }
}

/// A running shard member with its listener.
#[derive(Debug)]
pub struct MemberServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    /// Invariant: these run until `shutdown` (the event loop, the links, the listener).
    tasks: Vec<JoinHandle<()>>,
}

impl MemberServer {
    /// Opens the data directory, recovers the member, binds the listener and serves.
    pub async fn start(config: MemberConfig) -> Result<Self, MemberServerError> {
        config.check()?;
        let identity = MemberIdentity {
            shard: config.shard,
            id: config.id,
            witness: matches!(config.role, MemberRole::Witness { .. }),
        };
        let (disk, stored) = MemberDisk::open(&config.data_dir, &identity)?;
        let pristine = stored.record.is_none();
        let first_start = stored.first_start;
        let initial = EpochRecord {
            epoch: 1,
            primary: config.initial_primary,
            synchronous: true,
        };
        let durable = match config.role {
            MemberRole::DataNode { .. } => crate::replication::runtime::Durable::Replica(Box::new(
                stored.replica_durable(initial, disk.path())?,
            )),
            MemberRole::Witness { .. } => {
                crate::replication::runtime::Durable::Witness(stored.witness_durable(initial))
            }
        };
        let (listener, local_addr) =
            tcp::bind(config.listen)
                .await
                .map_err(|source| MemberServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let clock = Clock::new();
        let member = Member::recover(
            config.id,
            config.kind(),
            config.protocol,
            durable,
            clock.now_ms(),
        );
        let leases = member.as_replica().map(|replica| {
            CacheLeases::new(
                config.shard,
                config.id,
                replica.commit_index(),
                !first_start,
                config.cache_leases.clone(),
            )
        });
        let (inbox_sender, inbox) = mpsc::channel(INBOX_CAPACITY);
        let (client_queue, client_calls) = mpsc::channel(CLIENT_QUEUE_CAPACITY);
        let filter = PeerFilter::default();
        let shared = Arc::new(Shared {
            shard: config.shard,
            id: config.id,
            state: Mutex::new(State {
                member,
                disk,
                stopped: false,
            }),
            clock,
            filter: filter.clone(),
            inbox: inbox_sender,
            client_queue,
            request_timeout: config.request_timeout,
            leases,
        });
        let mut tasks = Vec::new();
        let mut links = BTreeMap::new();
        for peer in config.others() {
            let (sender, queue) = mpsc::channel(LINK_QUEUE);
            links.insert(peer, sender);
            let addr = config.peers[&peer].clone();
            tasks.push(tokio::spawn(link(
                config.id,
                peer,
                addr,
                filter.clone(),
                config.peer_frames.clone(),
                queue,
            )));
        }
        let host = ProcessHost {
            shared: Arc::clone(&shared),
            links,
        };
        let tick = Duration::from_millis(config.protocol.timing.tick_ms);
        tasks.push(tokio::spawn(drive(
            host,
            tick,
            PauseGate::default(),
            inbox,
            client_calls,
        )));
        let handler_shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(tcp::serve(
            listener,
            config.serve,
            move |request| {
                let shared = Arc::clone(&handler_shared);
                async move { handle(&shared, request).await }
            },
        )));
        tracing::info!(
            shard = config.shard,
            node = config.id,
            role = ?config.role,
            addr = %local_addr,
            data_dir = %config.data_dir.display(),
            pristine,
            "shard member serving"
        );
        Ok(Self {
            shared,
            local_addr,
            tasks,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The member's status, as the admin endpoint reports it.
    pub fn status(&self) -> MemberStatus {
        status(&self.shared)
    }

    /// Stops serving; the data directory keeps everything the member ever told anyone.
    pub async fn shutdown(self) {
        if let Some(leases) = &self.shared.leases {
            leases.shutdown();
        }
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(
            shard = self.shared.shard,
            node = self.shared.id,
            "shard member stopped"
        );
    }
}

/// Sends each queued message to `to` as a peer request over one kept connection.
async fn link(
    from: NodeId,
    to: NodeId,
    addr: String,
    filter: PeerFilter,
    frames: FrameOptions,
    mut queue: mpsc::Receiver<Message>,
) {
    type Connection = FramedConnection<ShardRequest, ShardReply>;
    let mut connection: Option<Connection> = None;
    let mut unreachable_until: Option<Instant> = None;
    while let Some(message) = queue.recv().await {
        if filter.blocks(to) || unreachable_until.is_some_and(|until| Instant::now() < until) {
            continue;
        }
        if connection.is_none() {
            let connected = match resolve(&addr, frames.connect_timeout).await {
                Ok(socket) => Connection::connect(socket, frames.clone())
                    .await
                    .map_err(|e| e.to_string()),
                Err(reason) => Err(reason),
            };
            match connected {
                Ok(fresh) => connection = Some(fresh),
                Err(reason) => {
                    tracing::debug!(from, to, %reason, "peer unreachable");
                    unreachable_until = Some(Instant::now() + RECONNECT_BACKOFF);
                    continue;
                }
            }
        }
        let Some(open) = connection.as_mut() else {
            continue;
        };
        match tcp::call(open, &ShardRequest::Peer { from, message }).await {
            Ok(ShardReply::Peer(_)) => {}
            Ok(other) => {
                tracing::warn!(
                    from,
                    to,
                    ?other,
                    "peer answered a message with a foreign reply"
                );
                connection = None;
            }
            Err(error) => {
                tracing::debug!(from, to, %error, "message lost; reconnecting");
                connection = None;
            }
        }
    }
}

fn status(shared: &Shared) -> MemberStatus {
    let now = shared.clock.now_ms();
    let state = shared.state();
    let replica = state.member.as_replica();
    MemberStatus {
        shard: shared.shard,
        id: shared.id,
        witness: replica.is_none(),
        pid: std::process::id(),
        record: state.member.record(),
        is_primary: !state.stopped && state.member.is_primary(now),
        commit_index: replica.map(|r| r.commit_index()),
        last_index: replica.map(|r| r.last_index()),
        keys: replica.map(|r| r.key_count()),
        stopped: state.stopped,
        saves: state.disk.n_saves(),
        blocked_peers: shared.filter.blocked(),
        cache_subscribers: shared
            .leases
            .as_ref()
            .map(|leases| leases.live_subscribers())
            .unwrap_or_default(),
        invalidation_delivery: shared.leases.as_ref().and_then(|leases| leases.delivery()),
    }
}

async fn handle(shared: &Shared, request: ShardRequest) -> ShardReply {
    match request {
        ShardRequest::Peer { from, message } => {
            if shared.filter.blocks(from) {
                return ShardReply::Peer(Err(PeerRefusal::Filtered));
            }
            // A full inbox loses the message; the sender learns nothing, as on a real network.
            let _ = shared.inbox.try_send((from, message));
            ShardReply::Peer(Ok(()))
        }
        ShardRequest::Client(request) => ShardReply::Client(handle_client(shared, request).await),
        ShardRequest::Admin(request) => ShardReply::Admin(handle_admin(shared, request)),
    }
}

async fn handle_client(
    shared: &Shared,
    request: ShardClientRequest,
) -> Result<ShardClientReply, ReplicationError> {
    let node = shared.id;
    let op = match request {
        ShardClientRequest::LocalRead { key } => {
            let state = shared.state();
            if state.stopped {
                return Err(ReplicationError::NodeDown { node });
            }
            return match state.member.as_replica() {
                Some(replica) => Ok(ShardClientReply::Value(replica.local_read(&key))),
                None => Err(ReplicationError::WitnessHoldsNoData { node }),
            };
        }
        ShardClientRequest::Subscribe { compute, addr } => {
            if shared.state().stopped {
                return Err(ReplicationError::NodeDown { node });
            }
            return match &shared.leases {
                Some(leases) => Ok(ShardClientReply::Leased(leases.subscribe(compute, addr))),
                None => Err(ReplicationError::WitnessHoldsNoData { node }),
            };
        }
        ShardClientRequest::Scan { after, limit } => {
            let state = shared.state();
            if state.stopped {
                return Err(ReplicationError::NodeDown { node });
            }
            return match state.member.as_replica() {
                Some(replica) => Ok(ShardClientReply::Scanned {
                    fence: replica.visible_fence(),
                    entries: replica.scan(after.as_deref(), limit.min(MAX_SCAN_PAGE)),
                }),
                None => Err(ReplicationError::WitnessHoldsNoData { node }),
            };
        }
        ShardClientRequest::WriteBatch { writes, ring_epoch } => {
            return write_batch(shared, writes, ring_epoch).await;
        }
        ShardClientRequest::Write {
            key,
            value,
            condition,
            ring_epoch,
        } => ClientOp::Write {
            key,
            value,
            condition,
            ring_epoch,
        },
        ShardClientRequest::Read { key, ring_epoch } => ClientOp::Read { key, ring_epoch },
        ShardClientRequest::ForcePromotion => ClientOp::ForcePromotion,
    };
    let (call, answer) = ClientCall::new(op);
    let bound = shared.request_timeout;
    let deadline = Instant::now() + bound;
    let exchange = async {
        if shared.client_queue.send(call).await.is_err() {
            return Err(ReplicationError::NodeDown { node });
        }
        answer
            .await
            .unwrap_or(Err(ReplicationError::Interrupted { node }))
    };
    let output = tokio::time::timeout(bound, exchange)
        .await
        .unwrap_or(Err(ReplicationError::Timeout { after: bound }))?;
    // Nothing committed is exposed before the compute nodes holding leases dropped its keys.
    let exposes = match &output {
        ClientOutput::Written(index) => Some(*index),
        ClientOutput::Read(_) => shared
            .state()
            .member
            .as_replica()
            .map(|replica| replica.commit_index()),
        ClientOutput::Accepted => None,
    };
    if let (Some(index), Some(leases)) = (exposes, &shared.leases) {
        if !leases.wait_through(index, deadline).await {
            return Err(ReplicationError::Timeout { after: bound });
        }
    }
    Ok(match output {
        ClientOutput::Written(index) => ShardClientReply::Written(index),
        ClientOutput::Read(value) => ShardClientReply::Value(value),
        ClientOutput::Accepted => ShardClientReply::Accepted,
    })
}

/// Queues every write of a batch at once (the event loop steps what it finds queued together
/// and saves once), then answers each; like a single write, nothing is answered before the
/// compute nodes holding leases dropped the keys.
async fn write_batch(
    shared: &Shared,
    writes: Vec<(Vec<u8>, Vec<u8>, WriteCondition)>,
    ring_epoch: u64,
) -> Result<ShardClientReply, ReplicationError> {
    let node = shared.id;
    if writes.len() > MAX_WRITE_BATCH {
        return Err(ReplicationError::Overloaded {
            pending: writes.len(),
        });
    }
    let bound = shared.request_timeout;
    let deadline = Instant::now() + bound;
    let mut answers = Vec::with_capacity(writes.len());
    for (key, value, condition) in writes {
        let (call, answer) = ClientCall::new(ClientOp::Write {
            key,
            value,
            condition,
            ring_epoch,
        });
        if shared.client_queue.send(call).await.is_err() {
            // Writes already queued may take effect.
            return Err(if answers.is_empty() {
                ReplicationError::NodeDown { node }
            } else {
                ReplicationError::Interrupted { node }
            });
        }
        answers.push(answer);
    }
    let mut results = Vec::with_capacity(answers.len());
    for answer in answers {
        let result = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Ok(ClientOutput::Written(index)))) => Ok(index),
            Ok(Ok(Ok(other))) => {
                tracing::error!(node, ?other, "a write answered as another operation");
                Err(ReplicationError::Interrupted { node })
            }
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(ReplicationError::Interrupted { node }),
            Err(_) => Err(ReplicationError::Timeout { after: bound }),
        };
        results.push(result);
    }
    let last = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .max()
        .copied();
    if let (Some(index), Some(leases)) = (last, &shared.leases) {
        if !leases.wait_through(index, deadline).await {
            return Err(ReplicationError::Timeout { after: bound });
        }
    }
    Ok(ShardClientReply::WrittenBatch(results))
}

fn handle_admin(shared: &Shared, request: ShardAdminRequest) -> ShardAdminReply {
    match request {
        ShardAdminRequest::Status => ShardAdminReply::Status(status(shared)),
        ShardAdminRequest::BlockPeers(peers) => {
            let blocked = shared.filter.block(&peers);
            tracing::warn!(node = shared.id, ?blocked, "peer filter: blocking");
            ShardAdminReply::BlockedPeers(blocked)
        }
        ShardAdminRequest::UnblockAllPeers => {
            shared.filter.unblock_all();
            tracing::warn!(node = shared.id, "peer filter: cleared");
            ShardAdminReply::BlockedPeers(Vec::new())
        }
    }
}
