//! `ReplicationCluster`: in-process replicated shards (primary, mirror, witness each) over the
//! seeded message bus, with the seed's API (REP-001..005), fault methods for a nemesis, and a
//! client API that routes to the current primary.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::ReplicationError;
use super::log::ReplicaLog;
use super::message::{Epoch, EpochRecord, LogIndex, Message, WriteCondition};
use super::node::ReplicaNode;
use super::options::ProtocolOptions;
use super::protocol::ReplicaDurable;
use super::runtime::{ClientOp, ClientOutput, Clock, Durable, Kind, NodeShared};
use super::witness::WitnessDurable;
use crate::metadata::NodeId;
use crate::net::bus::MessageBus;

/// How often polling helpers and the client's retries look again.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// How a replication cluster is built.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicationOptions {
    /// The number of shards; shard `s` has nodes `3s` (first primary), `3s + 1` (first mirror)
    /// and `3s + 2` (witness).
    pub shards: usize,
    /// Drives every random choice of the message bus.
    pub seed: u64,
    /// The protocol's timings, limits and (test-only) unsafe modes.
    pub protocol: ProtocolOptions,
    /// How long one client request may take, end to end.
    pub request_timeout: Duration,
    /// How long construction waits for every shard's primary to hold a lease.
    pub startup_timeout: Duration,
}

impl Default for ReplicationOptions {
    fn default() -> Self {
        Self {
            shards: 1,
            seed: 0,
            protocol: ProtocolOptions::default(),
            request_timeout: Duration::from_secs(2),
            startup_timeout: Duration::from_secs(10),
        }
    }
}

/// The three members of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardMembers {
    /// The two data nodes; the first is the first primary.
    pub replicas: [NodeId; 2],
    /// The witness.
    pub witness: NodeId,
}

/// A client's answer, with the node that served it and that node's epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served<T> {
    /// What the operation returned.
    pub value: T,
    /// The primary that served it.
    pub node: NodeId,
}

/// In-process replicated shards. All fault methods take `&self`, so a nemesis can fault a
/// cluster shared with clients.
#[derive(Debug)]
pub struct ReplicationCluster {
    options: ReplicationOptions,
    bus: MessageBus<Message>,
    /// Invariant: holds every node of every shard, keyed by id.
    nodes: BTreeMap<NodeId, ReplicaNode>,
    /// Invariant: `shards.len() == options.shards`.
    shards: Vec<ShardMembers>,
    /// The client's guess of each shard's primary.
    routes: Mutex<Vec<NodeId>>,
}

/// The seed's name for replicated storage in REP-001/REP-002 (`with_replication`,
/// `get_primary`, `kill_primary`, `promote_mirror_to_primary`); it is the same type as
/// [`ReplicationCluster`], and distinct from the sharded `crate::StorageCluster`.
pub type StorageCluster = ReplicationCluster;

impl ReplicationCluster {
    /// The seed API: `shards` shards, each with a primary, a mirror and a witness.
    pub async fn with_witness(shards: usize) -> Self {
        Self::with_options(ReplicationOptions {
            shards,
            ..ReplicationOptions::default()
        })
        .await
    }

    /// The seed API: `primaries` shards with one mirror each (and a witness each).
    ///
    /// # Panics
    /// If `mirrors != primaries`: each primary has exactly one mirror in this design.
    pub async fn with_replication(primaries: usize, mirrors: usize) -> Self {
        assert_eq!(
            primaries, mirrors,
            "each primary has exactly one mirror (got {primaries} primaries, {mirrors} mirrors)"
        );
        Self::with_witness(primaries).await
    }

    /// Builds and starts the cluster, and waits until every shard's primary holds a lease.
    ///
    /// # Panics
    /// If `options.shards` is 0 or the timings are inconsistent (bugs in the caller), or if a
    /// shard has no primary within `startup_timeout` on a perfect network.
    pub async fn with_options(options: ReplicationOptions) -> Self {
        assert!(options.shards > 0, "a cluster needs at least one shard");
        options.protocol.timing.validate();
        tracing::info!(
            seed = options.seed,
            shards = options.shards,
            "starting replication cluster"
        );
        let bus = MessageBus::new(options.seed);
        let clock = Clock::new();
        let mut nodes = BTreeMap::new();
        let mut shards = Vec::with_capacity(options.shards);
        for shard in 0..options.shards {
            let base = 3 * shard as NodeId;
            let members = ShardMembers {
                replicas: [base, base + 1],
                witness: base + 2,
            };
            let record = EpochRecord {
                epoch: 1,
                primary: base,
                synchronous: true,
            };
            let replica_durable = Durable::Replica(Box::new(ReplicaDurable {
                record,
                log: ReplicaLog::default(),
                commit_index: 0,
            }));
            let specs = [
                (
                    base,
                    Kind::Replica {
                        peer: base + 1,
                        witness: base + 2,
                    },
                    replica_durable.clone(),
                ),
                (
                    base + 1,
                    Kind::Replica {
                        peer: base,
                        witness: base + 2,
                    },
                    replica_durable,
                ),
                (
                    base + 2,
                    Kind::Witness {
                        replicas: members.replicas,
                    },
                    Durable::Witness(WitnessDurable { record }),
                ),
            ];
            for (id, kind, durable) in specs {
                let shared = NodeShared::new(
                    id,
                    shard,
                    kind,
                    options.protocol,
                    clock,
                    bus.clone(),
                    durable,
                );
                nodes.insert(id, ReplicaNode::new(shared, options.request_timeout));
            }
            shards.push(members);
        }
        for node in nodes.values() {
            node.shared().start();
        }
        let routes = Mutex::new(shards.iter().map(|m| m.replicas[0]).collect());
        let cluster = Self {
            options,
            bus,
            nodes,
            shards,
            routes,
        };
        for shard in 0..cluster.shards.len() {
            let ready = cluster
                .wait_until(cluster.options.startup_timeout, |c| {
                    c.has_active_primary_now(shard)
                })
                .await;
            assert!(
                ready,
                "shard {shard} has no primary after start (seed {})",
                cluster.seed()
            );
        }
        cluster
    }

    /// The options the cluster was built with.
    pub fn options(&self) -> &ReplicationOptions {
        &self.options
    }

    /// The seed that drives the bus.
    pub fn seed(&self) -> u64 {
        self.options.seed
    }

    /// How many shards there are.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The members of `shard`.
    ///
    /// # Panics
    /// If there is no such shard, a bug in the caller.
    pub fn members(&self, shard: usize) -> ShardMembers {
        *self
            .shards
            .get(shard)
            .unwrap_or_else(|| panic!("no shard {shard} in a cluster of {}", self.shards.len()))
    }

    /// The node with id `id`.
    ///
    /// # Panics
    /// If there is no such node, a bug in the caller.
    pub fn node(&self, id: NodeId) -> &ReplicaNode {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id} in the cluster"))
    }

    /// Every node, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &ReplicaNode> {
        self.nodes.values()
    }

    /// The message bus, for faults this API does not name (drops, delays, one-way cuts).
    pub fn bus(&self) -> &MessageBus<Message> {
        &self.bus
    }

    // ----- Observation -----------------------------------------------------------------

    /// The data nodes of `shard` that act as primary now (at most one unless a broken mode is
    /// on).
    pub fn active_primaries(&self, shard: usize) -> Vec<NodeId> {
        self.members(shard)
            .replicas
            .into_iter()
            .filter(|&id| self.node(id).is_primary())
            .collect()
    }

    fn has_active_primary_now(&self, shard: usize) -> bool {
        !self.active_primaries(shard).is_empty()
    }

    /// The seed API: whether `shard` has a primary holding its lease.
    pub async fn has_active_primary(&self, shard: usize) -> bool {
        self.has_active_primary_now(shard)
    }

    /// The seed API: whether node `id` acts as primary (named primary and holding a lease).
    pub async fn is_primary(&self, id: NodeId) -> bool {
        self.node(id).is_primary()
    }

    /// The newest record any member of `shard` knows, down or not.
    pub fn newest_record(&self, shard: usize) -> EpochRecord {
        let members = self.members(shard);
        [members.replicas[0], members.replicas[1], members.witness]
            .into_iter()
            .map(|id| self.node(id).record())
            .max_by_key(|record| record.epoch)
            .expect("a shard has members")
    }

    /// The primary of `shard`: the node acting as primary now, or else the one the newest
    /// record names.
    pub fn primary_id(&self, shard: usize) -> NodeId {
        self.active_primaries(shard)
            .first()
            .copied()
            .unwrap_or_else(|| self.newest_record(shard).primary)
    }

    /// The mirror of `shard`: the data node that is not its primary.
    pub fn mirror_id(&self, shard: usize) -> NodeId {
        let primary = self.primary_id(shard);
        let [a, b] = self.members(shard).replicas;
        if primary == a {
            b
        } else {
            a
        }
    }

    /// The seed API: [`ReplicationCluster::primary_id`].
    pub async fn get_primary_id(&self, shard: usize) -> NodeId {
        self.primary_id(shard)
    }

    /// The seed API: [`ReplicationCluster::mirror_id`].
    pub async fn get_mirror_id(&self, shard: usize) -> NodeId {
        self.mirror_id(shard)
    }

    /// The seed API: the witness of `shard`.
    pub async fn get_witness_id(&self, shard: usize) -> NodeId {
        self.members(shard).witness
    }

    /// The seed API: the primary node of `shard`.
    pub async fn get_primary(&self, shard: usize) -> ReplicaNode {
        self.node(self.primary_id(shard)).clone()
    }

    /// The seed API: the mirror node of `shard`.
    pub async fn get_mirror(&self, shard: usize) -> ReplicaNode {
        self.node(self.mirror_id(shard)).clone()
    }

    /// Checks every running member's invariants, and that no shard has two primaries acting at
    /// once (unless fencing is switched off).
    ///
    /// # Panics
    /// If one does not hold, which only a bug can cause.
    pub fn validate(&self) {
        for node in self.nodes.values() {
            node.validate();
        }
        if !self.options.protocol.unsafe_no_fencing {
            for shard in 0..self.shards.len() {
                let primaries = self.active_primaries(shard);
                assert!(
                    primaries.len() <= 1,
                    "split brain in shard {shard}: {primaries:?} (seed {})",
                    self.seed()
                );
            }
        }
    }

    /// Polls until `condition` holds, at most `timeout`; returns whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    // ----- Faults ----------------------------------------------------------------------

    /// The seed API: cuts every link between `group_a` and `group_b`, both ways.
    pub async fn partition_network(&self, group_a: Vec<NodeId>, group_b: Vec<NodeId>) {
        tracing::info!(?group_a, ?group_b, "partition");
        self.bus.partition(&group_a, &group_b);
    }

    /// The seed API: restores a perfect network (killed nodes stay dead, paused ones paused).
    pub async fn heal_network(&self) {
        tracing::info!("heal");
        self.bus.heal();
    }

    /// Cuts node `id` off from every other node; clients still reach it.
    pub async fn isolate(&self, id: NodeId) {
        tracing::info!(node = id, "isolate");
        self.bus.isolate(id);
    }

    /// The seed API: kills node `id`; it keeps only its durable state.
    pub async fn kill_node(&self, id: NodeId) {
        self.node(id).shared().kill();
    }

    /// Restarts a killed node over its durable state (a running node is left alone).
    pub async fn restart_node(&self, id: NodeId) {
        self.node(id).shared().start();
    }

    /// Pauses node `id` (SIGSTOP): it handles nothing, and its clients wait, until `resume`.
    pub async fn pause(&self, id: NodeId) {
        tracing::info!(node = id, "pause");
        self.node(id).shared().gate.pause();
    }

    /// Resumes a paused node (SIGCONT).
    pub async fn resume(&self, id: NodeId) {
        tracing::info!(node = id, "resume");
        self.node(id).shared().gate.resume();
    }

    /// The seed API: kills the primary of `shard`.
    pub async fn kill_primary(&self, shard: usize) {
        let primary = self.primary_id(shard);
        tracing::info!(shard, node = primary, "kill primary");
        self.kill_node(primary).await;
    }

    /// Asks the mirror of `shard` to seek promotion at once, and waits until it is primary.
    /// The witness still decides: it grants only once the old primary's lease has lapsed, and
    /// only to a mirror in synchronous mode.
    pub async fn try_promote_mirror_to_primary(
        &self,
        shard: usize,
    ) -> Result<NodeId, ReplicationError> {
        let deadline = Instant::now() + self.options.startup_timeout;
        let mut last = ReplicationError::NoLease {
            epoch: self.newest_record(shard).epoch,
        };
        while Instant::now() < deadline {
            if let Some(&primary) = self.active_primaries(shard).first() {
                return Ok(primary);
            }
            for id in self.members(shard).replicas {
                let node = self.node(id);
                if node.is_running() && node.role() == Some(super::protocol::Role::Mirror) {
                    if let Err(error) = node.force_promotion().await {
                        last = error;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(ReplicationError::NoPrimary {
            shard,
            after: self.options.startup_timeout,
            last: Box::new(last),
        })
    }

    /// The seed API: [`ReplicationCluster::try_promote_mirror_to_primary`].
    ///
    /// # Panics
    /// If no primary emerges within `startup_timeout` (the seed's signature has no `Result`).
    pub async fn promote_mirror_to_primary(&self, shard: usize) {
        if let Err(error) = self.try_promote_mirror_to_primary(shard).await {
            panic!(
                "promoting the mirror of shard {shard} failed (seed {}): {error}",
                self.seed()
            );
        }
    }

    /// Stops every node and the bus.
    pub fn shutdown(&self) {
        for node in self.nodes.values() {
            node.shared().kill();
        }
        self.bus.shutdown();
    }

    // ----- Clients -----------------------------------------------------------------------

    /// The seed API: writes through node `id` only (no routing).
    pub async fn write_to_node(
        &self,
        id: NodeId,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), ReplicationError> {
        match self.nodes.get(&id) {
            Some(node) => node.write(key, value).await,
            None => Err(ReplicationError::UnknownNode { node: id }),
        }
    }

    /// Writes `value` under `key` in `shard`, routed to the current primary, within
    /// `request_timeout`. Retries only after definite failures (nothing was written); an
    /// indeterminate one is returned at once, since a retry could apply the write twice.
    pub async fn write(
        &self,
        shard: usize,
        key: &[u8],
        value: &[u8],
    ) -> Result<Served<LogIndex>, ReplicationError> {
        let op = || ClientOp::Write {
            key: key.to_vec(),
            value: value.to_vec(),
            condition: WriteCondition::Always,
            ring_epoch: 0,
        };
        self.route(shard, op).await.map(|served| Served {
            value: match served.value {
                ClientOutput::Written(index) => index,
                other => panic!("a write was answered with {other:?}"),
            },
            node: served.node,
        })
    }

    /// A linearizable read of `key` in `shard`, served by the primary holding its lease.
    pub async fn read(
        &self,
        shard: usize,
        key: &[u8],
    ) -> Result<Served<Option<Vec<u8>>>, ReplicationError> {
        let op = || ClientOp::Read {
            key: key.to_vec(),
            ring_epoch: 0,
        };
        self.route(shard, op).await.map(|served| Served {
            value: match served.value {
                ClientOutput::Read(value) => value,
                other => panic!("a read was answered with {other:?}"),
            },
            node: served.node,
        })
    }

    async fn route(
        &self,
        shard: usize,
        op: impl Fn() -> ClientOp,
    ) -> Result<Served<ClientOutput>, ReplicationError> {
        if shard >= self.shards.len() {
            return Err(ReplicationError::UnknownShard {
                shard,
                shards: self.shards.len(),
            });
        }
        let members = self.members(shard);
        let timeout = self.options.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut target = self.route_guess(shard);
        let mut last = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let last = last.unwrap_or(ReplicationError::Timeout { after: timeout });
                return Err(ReplicationError::NoPrimary {
                    shard,
                    after: timeout,
                    last: Box::new(last),
                });
            }
            match self.node(target).shared().call(op(), remaining).await {
                Ok(value) => {
                    self.set_route_guess(shard, target);
                    return Ok(Served {
                        value,
                        node: target,
                    });
                }
                Err(error) if error.outcome_is_unknown() => return Err(error),
                Err(error) => {
                    let other = if target == members.replicas[0] {
                        members.replicas[1]
                    } else {
                        members.replicas[0]
                    };
                    target = match error.primary_hint() {
                        Some(hint) if hint != target && members.replicas.contains(&hint) => hint,
                        _ => other,
                    };
                    tokio::time::sleep(POLL_INTERVAL.min(remaining)).await;
                    last = Some(error);
                }
            }
        }
    }

    fn route_guess(&self, shard: usize) -> NodeId {
        self.routes.lock().expect("routes lock poisoned")[shard]
    }

    fn set_route_guess(&self, shard: usize, node: NodeId) {
        self.routes.lock().expect("routes lock poisoned")[shard] = node;
    }

    /// The epoch of the newest record of `shard`.
    pub fn epoch(&self, shard: usize) -> Epoch {
        self.newest_record(shard).epoch
    }
}

impl Drop for ReplicationCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}
