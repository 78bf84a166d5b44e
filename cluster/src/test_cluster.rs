//! `RaftTestCluster`: an in-process metadata group over the simulated network, with the
//! seed's fault methods (kill, restart, pause, partition, heal), all callable through `&self`.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::metadata::{MetadataNode, NodeId, NodeSettings};
use crate::net::NetworkSimulator;

/// How a test cluster is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The number of metadata nodes; their ids are `0..size`.
    pub size: usize,
    /// Drives every random choice of the simulated network and the choice of the node that
    /// forms the cluster.
    pub seed: u64,
    /// Test aid, deliberately unsafe: every node's `read` answers from its local state machine
    /// (see [`NodeSettings::unsafe_stale_reads`]).
    pub unsafe_stale_reads: bool,
    /// Timings of every node; its `unsafe_stale_reads` is overridden by the field above.
    pub node_settings: NodeSettings,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            size: 3,
            seed: 0,
            unsafe_stale_reads: false,
            node_settings: NodeSettings::default(),
        }
    }
}

/// How often the polling helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// An in-process metadata Raft group.
#[derive(Debug)]
pub struct RaftTestCluster {
    /// The nodes; `nodes[i].id() == i`.
    /// Invariant: never resized; killed nodes stay, with their Raft stopped.
    pub nodes: Vec<MetadataNode>,
    /// The network connecting them.
    pub network: NetworkSimulator,
    options: ClusterOptions,
}

impl RaftTestCluster {
    /// The seed API: `size` nodes with default options.
    pub async fn new(size: usize) -> Self {
        Self::with_options(ClusterOptions {
            size,
            ..ClusterOptions::default()
        })
        .await
    }

    /// Builds, connects and forms a cluster.
    ///
    /// # Panics
    /// If `options.size` is 0 or the timings are invalid (bugs in the test), or if openraft
    /// fails to start over empty in-memory storage.
    pub async fn with_options(options: ClusterOptions) -> Self {
        assert!(options.size > 0, "a cluster needs at least one node");
        tracing::info!(
            seed = options.seed,
            size = options.size,
            "starting raft test cluster"
        );
        let settings = NodeSettings {
            unsafe_stale_reads: options.unsafe_stale_reads,
            ..options.node_settings.clone()
        };
        let mut nodes = Vec::with_capacity(options.size);
        for id in 0..options.size as NodeId {
            let node = MetadataNode::new(id, settings.clone())
                .await
                .unwrap_or_else(|e| {
                    panic!("node {id} failed to start (seed {}): {e}", options.seed)
                });
            nodes.push(node);
        }
        let network = NetworkSimulator::new(options.seed);
        for node in &nodes {
            network.connect(node);
        }
        // One node, chosen by the seed, forms the cluster; it campaigns at once.
        let ids: Vec<NodeId> = (0..options.size as NodeId).collect();
        let founder = ChaCha8Rng::seed_from_u64(options.seed).gen_range(0..options.size);
        nodes[founder]
            .initialize(&ids)
            .await
            .unwrap_or_else(|e| panic!("cluster formation failed (seed {}): {e}", options.seed));
        Self {
            nodes,
            network,
            options,
        }
    }

    /// The options the cluster was built with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The seed that drives this cluster.
    pub fn seed(&self) -> u64 {
        self.options.seed
    }

    /// The node with id `id`.
    ///
    /// # Panics
    /// If there is no such node, a bug in the test.
    pub fn node(&self, id: NodeId) -> &MetadataNode {
        self.nodes
            .get(id as usize)
            .unwrap_or_else(|| panic!("no node {id} in a cluster of {}", self.nodes.len()))
    }

    /// The node that holds the leader lease now, if any (the lowest id, should two ever do).
    pub async fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|node| node.is_leader())
            .map(MetadataNode::id)
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

    /// Polls until some node holds the leader lease, at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let mut leader = None;
        self.wait_until(timeout, |cluster| {
            leader = cluster
                .nodes
                .iter()
                .find(|n| n.is_leader())
                .map(MetadataNode::id);
            leader.is_some()
        })
        .await;
        leader
    }

    /// Kills node `id`: disconnects it and stops its Raft; its storage survives.
    pub async fn kill_node(&self, id: NodeId) {
        tracing::info!(node = id, "kill");
        self.network.disconnect(id).await;
        self.node(id).shutdown().await;
    }

    /// Restarts a killed node over its durable storage.
    ///
    /// # Panics
    /// If openraft cannot start over the node's in-memory storage, which only a bug can cause.
    pub async fn restart_node(&self, id: NodeId) {
        tracing::info!(node = id, "restart");
        self.node(id)
            .restart()
            .await
            .unwrap_or_else(|e| panic!("node {id} failed to restart (seed {}): {e}", self.seed()));
    }

    /// Pauses node `id` (SIGSTOP): its messages are held and its client calls wait.
    pub async fn pause_node(&self, id: NodeId) {
        tracing::info!(node = id, "pause");
        self.network.pause(id).await;
    }

    /// Resumes a paused node (SIGCONT).
    pub async fn resume_node(&self, id: NodeId) {
        tracing::info!(node = id, "resume");
        self.network.resume(id).await;
    }

    /// Cuts every link between `group_a` and `group_b`, both ways.
    pub async fn partition(&self, group_a: Vec<NodeId>, group_b: Vec<NodeId>) {
        tracing::info!(?group_a, ?group_b, "partition");
        self.network.partition(group_a, group_b).await;
    }

    /// Cuts every link between different groups.
    pub async fn partition_groups(&self, groups: Vec<Vec<NodeId>>) {
        tracing::info!(?groups, "partition groups");
        self.network.partition_groups(groups).await;
    }

    /// Loses every message from `from` to `to`, but not the other way.
    pub async fn partition_one_way(&self, from: NodeId, to: NodeId) {
        tracing::info!(from, to, "one-way partition");
        self.network.partition_one_way(from, to).await;
    }

    /// Cuts node `id` off from all others.
    pub async fn isolate(&self, id: NodeId) {
        tracing::info!(node = id, "isolate");
        self.network.isolate(id).await;
    }

    /// Restores a perfect network (paused nodes stay paused, killed nodes stay dead).
    pub async fn heal(&self) {
        tracing::info!("heal");
        self.network.heal_all().await;
    }

    /// Stops every node and the network.
    pub async fn shutdown(&self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
        self.network.shutdown();
    }
}

#[cfg(test)]
mod tests;
