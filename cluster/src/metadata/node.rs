//! `MetadataNode`: one member of the metadata Raft group, with the seed's API and a client API
//! whose every call is bounded in time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::task::JoinHandle;

use super::error::MetadataError;
use super::lease::LeaseObservation;
use super::store::DurableStorage;
use super::types::{LogEntryView, MetadataCommand, MetadataResponse, NodeId, TypeConfig};
use crate::net::{PauseGate, Transport, TransportNetworkFactory, TransportSlot};

/// Timing and behaviour of one metadata node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// The lower bound of the randomized election timeout; also the leader lease.
    /// Invariant: `heartbeat_interval < election_timeout_min < election_timeout_max`.
    pub election_timeout_min: Duration,
    /// The upper bound of the randomized election timeout; followers refuse to vote for this
    /// long after a heartbeat (openraft's follower lease).
    pub election_timeout_max: Duration,
    /// The longest any client call waits before it fails with `MetadataError::Timeout`.
    pub request_timeout: Duration,
    /// Test aid, deliberately unsafe: `read` answers from the local state machine on any node,
    /// without the lease or read-index check, so reads can be stale. Off by default; it exists to
    /// prove that the checkers catch stale reads.
    pub unsafe_stale_reads: bool,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(30),
            election_timeout_min: Duration::from_millis(100),
            election_timeout_max: Duration::from_millis(200),
            request_timeout: Duration::from_secs(2),
            unsafe_stale_reads: false,
        }
    }
}

impl NodeSettings {
    fn raft_config(&self) -> Result<Arc<openraft::Config>, MetadataError> {
        let config = openraft::Config {
            cluster_name: "helios-metadata".to_string(),
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.election_timeout_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
            ..Default::default()
        };
        let config = config.validate().map_err(|e| MetadataError::Raft {
            reason: format!("invalid raft config: {e}"),
        })?;
        Ok(Arc::new(config))
    }

    /// How long after a quorum acknowledgement a leader may still call itself leader.
    pub fn lease(&self) -> Duration {
        self.election_timeout_min
    }
}

/// A running Raft instance and the task that watches its metrics.
struct Running {
    raft: Raft<TypeConfig>,
    /// Invariant: reflects the latest metrics report of `raft`, stamped when it was received.
    observation: Arc<Mutex<LeaseObservation>>,
    watcher: JoinHandle<()>,
}

struct NodeShared {
    id: NodeId,
    settings: NodeSettings,
    config: Arc<openraft::Config>,
    storage: DurableStorage,
    slot: TransportSlot,
    pause: PauseGate,
    /// Invariant: `Some` exactly while the node runs; swapped by `start` and `shutdown`.
    running: Mutex<Option<Running>>,
    /// Serializes `start` and `shutdown`.
    lifecycle: tokio::sync::Mutex<()>,
}

/// A handle to one metadata node. Clones share the node.
///
/// Killing (`shutdown`) and restarting (`restart`) swap the Raft instance inside, so the handle
/// stays valid; the [`DurableStorage`] survives both.
#[derive(Clone)]
pub struct MetadataNode {
    shared: Arc<NodeShared>,
}

impl std::fmt::Debug for MetadataNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataNode")
            .field("id", &self.shared.id)
            .field("running", &self.is_running())
            .field("leader", &self.is_leader())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("metadata node lock poisoned: a panic happened while it was held")
}

impl MetadataNode {
    /// Starts a node over fresh storage, not yet connected to any network.
    pub async fn new(id: NodeId, settings: NodeSettings) -> Result<Self, MetadataError> {
        Self::with_storage(id, settings, DurableStorage::new_in_memory(), None).await
    }

    /// Starts a node over `storage` (for example [`DurableStorage::open_dir`]), bound to
    /// `transport` if given before its Raft starts, so that requests reach it from the first
    /// moment.
    pub async fn with_storage(
        id: NodeId,
        settings: NodeSettings,
        storage: DurableStorage,
        transport: Option<Arc<dyn Transport>>,
    ) -> Result<Self, MetadataError> {
        let slot = TransportSlot::default();
        if let Some(transport) = transport {
            slot.bind(transport);
        }
        let node = Self {
            shared: Arc::new(NodeShared {
                id,
                config: settings.raft_config()?,
                settings,
                storage,
                slot,
                pause: PauseGate::default(),
                running: Mutex::new(None),
                lifecycle: tokio::sync::Mutex::new(()),
            }),
        };
        node.start().await?;
        Ok(node)
    }

    /// The seed API: a node with default test settings.
    ///
    /// # Panics
    /// If openraft cannot start over empty in-memory storage, which only a bug can cause.
    pub async fn new_test(id: NodeId) -> Self {
        Self::new(id, NodeSettings::default())
            .await
            .expect("a node over empty in-memory storage must start")
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// This node's settings.
    pub fn settings(&self) -> &NodeSettings {
        &self.shared.settings
    }

    /// The node's durable storage.
    pub fn storage(&self) -> &DurableStorage {
        &self.shared.storage
    }

    /// Whether the node runs (it was not killed, or was restarted since).
    pub fn is_running(&self) -> bool {
        lock(&self.shared.running).is_some()
    }

    /// Whether this node is the leader and may serve now: openraft says leader, a quorum
    /// acknowledged it within the lease, and it applied its term's blank entry.
    ///
    /// Synchronous, so the seed can call it inside `filter`. A deposed leader that has not yet
    /// heard of the new term answers `false` once its lease expires; see `lease.rs`.
    pub fn is_leader(&self) -> bool {
        let running = lock(&self.shared.running);
        let Some(running) = running.as_ref() else {
            return false;
        };
        let observation = *lock(&running.observation);
        observation.holds_lease(Instant::now(), self.shared.settings.lease())
    }

    /// The leader this node believes in, without any lease check (a hint for redirects).
    pub fn leader_hint(&self) -> Option<NodeId> {
        let raft = self.raft_handle()?;
        let leader = raft.metrics().borrow().current_leader;
        leader
    }

    /// Openraft's latest metrics, if the node runs.
    pub fn metrics(&self) -> Option<openraft::RaftMetrics<NodeId, BasicNode>> {
        let raft = self.raft_handle()?;
        let metrics = raft.metrics().borrow().clone();
        Some(metrics)
    }

    pub(crate) fn raft_handle(&self) -> Option<Raft<TypeConfig>> {
        lock(&self.shared.running)
            .as_ref()
            .map(|running| running.raft.clone())
    }

    pub(crate) fn transport_slot(&self) -> &TransportSlot {
        &self.shared.slot
    }

    pub(crate) fn pause_gate(&self) -> PauseGate {
        self.shared.pause.clone()
    }

    /// Whether the node is paused (SIGSTOP emulation).
    pub fn is_paused(&self) -> bool {
        self.shared.pause.is_paused()
    }

    /// Starts a Raft instance over the node's storage, unless one runs already.
    async fn start(&self) -> Result<(), MetadataError> {
        let _lifecycle = self.shared.lifecycle.lock().await;
        if self.is_running() {
            return Ok(());
        }
        let (log_store, state_machine) = self.shared.storage.open();
        let network = TransportNetworkFactory {
            from: self.shared.id,
            slot: self.shared.slot.clone(),
        };
        let raft = Raft::new(
            self.shared.id,
            Arc::clone(&self.shared.config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| MetadataError::Raft {
            reason: format!("raft failed to start: {e}"),
        })?;
        let observation = Arc::new(Mutex::new(LeaseObservation::NONE));
        let watcher = tokio::spawn(watch_metrics(raft.clone(), Arc::clone(&observation)));
        *lock(&self.shared.running) = Some(Running {
            raft: raft.clone(),
            observation,
            watcher,
        });
        if let Some(transport) = self.shared.slot.get() {
            transport.listen(self.shared.id, raft);
        }
        Ok(())
    }

    /// Restarts a killed node over its durable storage (vote, log, state machine).
    pub async fn restart(&self) -> Result<(), MetadataError> {
        self.start().await
    }

    /// Forms the cluster: makes `members` the initial voters. Call it on one node only.
    pub async fn initialize(&self, members: &[NodeId]) -> Result<(), MetadataError> {
        let raft = self.raft_handle().ok_or(MetadataError::Shutdown)?;
        let nodes: BTreeSet<NodeId> = members.iter().copied().collect();
        raft.initialize(nodes)
            .await
            .map_err(|e| MetadataError::Raft {
                reason: format!("initialize failed: {e}"),
            })
    }

    /// Makes node `id` a voter: a learner first, fed the log until it is caught up, then a joint
    /// and a uniform configuration (openraft's two steps). Call it on the leader; a follower
    /// refuses with [`MetadataError::NotLeader`]. Bounded by `bound`; past it the change may
    /// still complete.
    pub async fn add_voter(&self, id: NodeId, bound: Duration) -> Result<(), MetadataError> {
        let raft = self.raft_handle().ok_or(MetadataError::Shutdown)?;
        if !self.is_leader() {
            return Err(MetadataError::NotLeader {
                leader: self.leader_hint(),
            });
        }
        let change = async {
            raft.add_learner(id, BasicNode::default(), true)
                .await
                .map_err(|e| MetadataError::Raft {
                    reason: format!("add learner {id}: {e}"),
                })?;
            let voters = openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            raft.change_membership(voters, false)
                .await
                .map_err(|e| MetadataError::Raft {
                    reason: format!("make {id} a voter: {e}"),
                })?;
            Ok(())
        };
        tokio::time::timeout(bound, change)
            .await
            .unwrap_or(Err(MetadataError::Timeout { after: bound }))
    }

    /// The voters of the membership this node last applied or appended.
    pub fn voters(&self) -> Vec<NodeId> {
        self.metrics()
            .map(|metrics| metrics.membership_config.membership().voter_ids().collect())
            .unwrap_or_default()
    }

    /// Stops the node (the process half of a kill); its storage survives for `restart`.
    pub async fn shutdown(&self) {
        let _lifecycle = self.shared.lifecycle.lock().await;
        if let Some(transport) = self.shared.slot.get() {
            transport.close(self.shared.id);
        }
        let running = lock(&self.shared.running).take();
        let Some(running) = running else {
            return;
        };
        let stopped = tokio::time::timeout(Duration::from_secs(5), running.raft.shutdown()).await;
        if stopped.is_err() {
            tracing::error!(node = self.shared.id, "raft did not stop within 5 s");
        }
        running.watcher.abort();
    }

    /// Runs a client call: waits while the node is paused, fails if it is down, and bounds the
    /// whole call by the request timeout.
    async fn call<T, F, Fut>(&self, operation: F) -> Result<T, MetadataError>
    where
        F: FnOnce(Raft<TypeConfig>) -> Fut,
        Fut: Future<Output = Result<T, MetadataError>>,
    {
        let after = self.shared.settings.request_timeout;
        let bounded = tokio::time::timeout(after, async {
            self.shared.pause.wait_resumed().await;
            let raft = self.raft_handle().ok_or(MetadataError::Shutdown)?;
            operation(raft).await
        });
        bounded
            .await
            .unwrap_or(Err(MetadataError::Timeout { after }))
    }

    /// Proposes `command` and waits until it is committed and applied.
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<MetadataResponse, MetadataError> {
        self.call(|raft| async move {
            let written = raft.client_write(command).await.map_err(write_error)?;
            Ok(written.data)
        })
        .await
    }

    /// The seed API: sets `key` to `value` through the log.
    pub async fn propose_change(&self, key: &str, value: &str) -> Result<(), MetadataError> {
        let command = MetadataCommand::Set {
            key: key.to_string(),
            value: value.to_string(),
        };
        self.propose(command).await.map(|_| ())
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: absent); returns whether it did.
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<bool, MetadataError> {
        let command = MetadataCommand::CompareAndSet {
            key: key.to_string(),
            expected: expected.map(str::to_string),
            new: new.to_string(),
        };
        self.propose(command).await.map(|response| response.applied)
    }

    /// A linearizable read of `key`: only a leader holding its lease serves it, after confirming
    /// leadership with a quorum (read index, openraft `ensure_linearizable`).
    ///
    /// With `unsafe_stale_reads`, any node answers from its local state machine instead.
    pub async fn read(&self, key: &str) -> Result<Option<String>, MetadataError> {
        self.call(|raft| async move {
            if self.shared.settings.unsafe_stale_reads {
                return Ok(self.shared.storage.get(key));
            }
            if !self.is_leader() {
                let leader_state = raft.metrics().borrow().state == openraft::ServerState::Leader;
                return Err(if leader_state {
                    MetadataError::NoQuorum
                } else {
                    MetadataError::NotLeader {
                        leader: self.leader_hint(),
                    }
                });
            }
            raft.ensure_linearizable().await.map_err(read_error)?;
            Ok(self.shared.storage.get(key))
        })
        .await
    }

    /// The seed API: `key` in this node's local state machine, with no consistency guarantee.
    pub async fn get(&self, key: &str) -> Option<String> {
        self.shared.storage.get(key)
    }

    /// The seed API: this node's log.
    pub async fn get_log(&self) -> Vec<LogEntryView> {
        self.shared
            .storage
            .log_entries()
            .iter()
            .map(LogEntryView::from_entry)
            .collect()
    }

    /// The seed API: this node's applied key-value state.
    pub async fn get_state(&self) -> BTreeMap<String, String> {
        self.shared.storage.state()
    }
}

/// Keeps `observation` equal to the latest metrics report, until the Raft stops.
async fn watch_metrics(raft: Raft<TypeConfig>, observation: Arc<Mutex<LeaseObservation>>) {
    let mut metrics = raft.metrics();
    drop(raft);
    loop {
        let latest = LeaseObservation::from_metrics(&metrics.borrow_and_update(), Instant::now());
        *lock(&observation) = latest;
        if metrics.changed().await.is_err() {
            break;
        }
    }
    *lock(&observation) = LeaseObservation::NONE;
}

fn write_error(error: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> MetadataError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            MetadataError::NotLeader {
                leader: forward.leader_id,
            }
        }
        RaftError::APIError(other) => MetadataError::Raft {
            reason: other.to_string(),
        },
        RaftError::Fatal(fatal) => MetadataError::Interrupted {
            reason: fatal.to_string(),
        },
    }
}

fn read_error(error: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> MetadataError {
    match error {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)) => {
            MetadataError::NotLeader {
                leader: forward.leader_id,
            }
        }
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => MetadataError::NoQuorum,
        RaftError::Fatal(_) => MetadataError::Shutdown,
    }
}
