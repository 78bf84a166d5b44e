//! `TestCluster`: the seed's cluster of storage nodes and compute nodes, built with
//! `TestCluster::builder().storage_nodes(n).compute_nodes(m).build().await`, with the tables
//! the seed's cache and transaction tests use already created.

use crate::compute::{ComputeNode, ComputeOptions};
use crate::sharding::{HashRing, StorageNodeId};
use crate::sql::SqlValue;
use crate::storage::key_hash;
use crate::storage_cluster::{StorageCluster, StorageClusterOptions};

/// The tables the builder creates, each keyed by `id` (BIGINT).
pub const SEED_TABLES: [&str; 5] = [
    "data",
    "test",
    "shard_0_table",
    "shard_1_table",
    "shard_2_table",
];

/// The ids of the rows the builder inserts into `data`, each with `value = id * 10`
/// (CACHE-001 reads id 1, CACHE-002 id 100).
pub const DATA_IDS: std::ops::RangeInclusive<i64> = 1..=100;

/// Keys the seed's transactions write together and that must land on different storage
/// nodes for the transactions to be cross-shard: TX-001 writes ids 1, 2, 3 to
/// `shard_0_table`..`shard_2_table`, and TX-002 ids 10 and 20.
const CROSS_SHARD_KEY_GROUPS: [&[i64]; 2] = [&[1, 2, 3], &[10, 20]];

/// How many node-name prefixes the builder tries before settling for the last one.
const MAX_PREFIX_CANDIDATES: u32 = 1024;

/// Whether, with nodes named `<prefix><i>`, every key group spreads over as many nodes as it
/// can (all distinct, or every node used when there are fewer nodes than keys).
fn spreads_key_groups(prefix: &str, n_nodes: usize) -> bool {
    let names: Vec<String> = (0..n_nodes).map(|i| format!("{prefix}{i}")).collect();
    let ring = HashRing::new(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| (StorageNodeId(i as u64), name.as_str())),
    );
    CROSS_SHARD_KEY_GROUPS.iter().all(|group| {
        let owners: std::collections::BTreeSet<_> = group
            .iter()
            .map(|&id| ring.owner(key_hash(&SqlValue::Int(id))))
            .collect();
        owners.len() == group.len().min(n_nodes)
    })
}

/// The first node-name prefix (deterministic, bounded search) under which the seed's
/// transaction keys land on different nodes, so "cross-shard" is true of TX-001 and TX-002.
fn cross_shard_prefix(n_nodes: usize) -> String {
    let mut prefix = "node_".to_string();
    for candidate in 0..MAX_PREFIX_CANDIDATES {
        if spreads_key_groups(&prefix, n_nodes) {
            return prefix;
        }
        prefix = format!("node{candidate}_");
    }
    tracing::warn!(
        n_nodes,
        "no node names spread the seed's keys; using {prefix}"
    );
    prefix
}

/// How a test cluster is built.
#[derive(Clone, Debug)]
pub struct TestClusterBuilder {
    n_storage_nodes: usize,
    n_compute_nodes: usize,
    seed: u64,
    compute_options: ComputeOptions,
    unsafe_dirty_reads: bool,
}

impl Default for TestClusterBuilder {
    fn default() -> Self {
        Self {
            n_storage_nodes: 3,
            n_compute_nodes: 2,
            seed: 0,
            compute_options: ComputeOptions::default(),
            unsafe_dirty_reads: false,
        }
    }
}

impl TestClusterBuilder {
    /// The number of storage nodes.
    pub fn storage_nodes(mut self, n: usize) -> Self {
        self.n_storage_nodes = n;
        self
    }

    /// The number of compute nodes.
    pub fn compute_nodes(mut self, n: usize) -> Self {
        self.n_compute_nodes = n;
        self
    }

    /// The seed of the metadata group's simulated network.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Options of every compute node.
    pub fn compute_options(mut self, options: ComputeOptions) -> Self {
        self.compute_options = options;
        self
    }

    /// Test aid, deliberately unsafe: compute nodes ignore invalidations (stale reads).
    pub fn unsafe_skip_invalidation(mut self, on: bool) -> Self {
        self.compute_options.unsafe_skip_invalidation = on;
        self
    }

    /// Test aid, deliberately unsafe: compute nodes commit without two-phase commit (no
    /// prepare, no commit record), so a crash between participants half-applies a
    /// transaction.
    pub fn unsafe_no_2pc(mut self, on: bool) -> Self {
        self.compute_options.unsafe_no_2pc = on;
        self
    }

    /// Test aid, deliberately unsafe: storage reads return uncommitted intents (dirty reads).
    pub fn unsafe_dirty_reads(mut self, on: bool) -> Self {
        self.unsafe_dirty_reads = on;
        self
    }

    /// Builds the cluster, creates [`SEED_TABLES`] and fills `data`.
    ///
    /// # Panics
    /// If the in-process cluster cannot form or the tables cannot be created, which only a bug
    /// can cause; the seed calls it without a `Result`.
    pub async fn build(self) -> TestCluster {
        assert!(
            self.n_compute_nodes > 0,
            "a test cluster needs a compute node"
        );
        tracing::info!(
            seed = self.seed,
            storage = self.n_storage_nodes,
            compute = self.n_compute_nodes,
            "test cluster"
        );
        let storage = StorageCluster::with_options(StorageClusterOptions {
            n_storage_nodes: self.n_storage_nodes,
            seed: self.seed,
            node_name_prefix: cross_shard_prefix(self.n_storage_nodes),
            ..StorageClusterOptions::default()
        })
        .await
        .unwrap_or_else(|e| panic!("test cluster (seed {}) failed to form: {e}", self.seed));
        for table in SEED_TABLES {
            storage.create_table(table, "id").await;
        }
        for id in DATA_IDS {
            storage
                .insert("data", vec![("id", id), ("value", id * 10)])
                .await
                .unwrap_or_else(|e| panic!("seeding data row {id} failed: {e}"));
        }
        if self.unsafe_dirty_reads {
            for handle in storage.node_handles() {
                let node = storage.node(handle.id()).expect("a listed node exists");
                node.set_unsafe_dirty_reads(true);
            }
        }
        let compute = (0..self.n_compute_nodes as u32)
            .map(|i| ComputeNode::start(i, storage.clone(), self.compute_options.clone()))
            .collect();
        TestCluster { storage, compute }
    }
}

/// Storage nodes, a metadata group and compute nodes, in process.
#[derive(Debug)]
pub struct TestCluster {
    storage: StorageCluster,
    /// Invariant: never resized; `compute[i].index() == i`.
    compute: Vec<ComputeNode>,
}

impl TestCluster {
    /// The seed API: a builder (3 storage nodes and 2 compute nodes unless set).
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// The seed API: 3 storage nodes and 2 compute nodes.
    pub async fn new_test() -> Self {
        Self::builder().build().await
    }

    /// The seed API: compute node `index`.
    ///
    /// # Panics
    /// If there is no such node, a bug in the test.
    pub async fn get_compute_node(&self, index: usize) -> ComputeNode {
        self.compute
            .get(index)
            .cloned()
            .unwrap_or_else(|| panic!("no compute node {index} of {}", self.compute.len()))
    }

    /// Every compute node.
    pub fn compute_nodes(&self) -> &[ComputeNode] {
        &self.compute
    }

    /// The storage cluster (storage nodes, router, metadata group).
    pub fn storage(&self) -> &StorageCluster {
        &self.storage
    }

    /// Stops the metadata group.
    pub async fn shutdown(&self) {
        self.storage.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_names_spread_the_seed_transactions_over_nodes() {
        for n in 2..=5 {
            assert!(spreads_key_groups(&cross_shard_prefix(n), n), "{n} nodes");
        }
    }
}
