//! The cluster the compute node tests share: one metadata node, replicated shards and compute
//! nodes as `helios node` processes, one cluster at a time (a lock: the machine has two cores),
//! killed on drop, with nodes started with `--exit-with-parent`; and the lock and runtime every
//! test binary of real processes takes.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use helios_cluster::process::{ComputeClient, LocalCluster, LocalClusterSpec, Ports};

/// Any wait for the cluster to do something: generous, for a loaded two-core machine.
pub const BOUND: Duration = Duration::from_secs(15);

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the one-cluster lock of this test binary. A test that panicked while holding it leaves
/// nothing behind (its cluster is killed on drop), so the poison carries no meaning.
pub fn serial() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `scenario` on a two-thread runtime.
pub fn run<F: std::future::Future>(scenario: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(scenario)
}

/// A cluster of one metadata node, `n_shards` shards and `n_compute` compute nodes, each
/// holding its leases, with table `data` keyed by `id`; dropped before its directory.
pub struct Cluster {
    pub cluster: LocalCluster,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// One metadata node, `n_shards` shards and `n_compute` compute nodes; waits for every
    /// shard's primary.
    pub async fn spawn(n_shards: usize, n_compute: usize, compute_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = LocalCluster::start(LocalClusterSpec {
            binary: env!("CARGO_BIN_EXE_helios").into(),
            dir: dir.path().to_path_buf(),
            n_nodes: 1,
            n_shards,
            n_compute,
            compute_args: compute_args.iter().map(|arg| arg.to_string()).collect(),
            ports: Ports::Free,
            node_args: Vec::new(),
            rust_log: Some("info,openraft=warn".to_string()),
            exit_with_parent: true,
        })
        .expect("processes start");
        for shard in 0..n_shards {
            cluster
                .wait_for_primary(shard, BOUND)
                .await
                .expect("a primary");
        }
        Self { cluster, _dir: dir }
    }

    /// [`Self::spawn`], then a metadata leader, every compute node's leases, and table `data`.
    pub async fn start(n_shards: usize, n_compute: usize, compute_args: &[&str]) -> Self {
        let this = Self::spawn(n_shards, n_compute, compute_args).await;
        this.cluster
            .wait_for_leader(&[], BOUND)
            .await
            .expect("a metadata leader");
        for index in this.cluster.compute_nodes() {
            this.cluster
                .wait_for_cache(index, BOUND)
                .await
                .expect("leases from every data node");
        }
        this.compute(0)
            .create_table("data", "id")
            .await
            .expect("table created");
        this
    }

    pub fn compute(&self, index: u32) -> ComputeClient {
        self.cluster
            .compute_client(index, Duration::from_secs(10))
            .expect("a compute node")
    }
}

pub async fn value_of(compute: &ComputeClient, id: i64) -> i64 {
    let result = compute
        .query(&format!("SELECT value FROM data WHERE id = {id}"))
        .await
        .expect("read");
    assert_eq!(result.rows.len(), 1, "row {id} through {}", compute.addr());
    result.rows[0].get::<i64>("value")
}

/// A duration in whole microseconds, at least 1 (for a histogram).
pub fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Prints one latency line of the figures.
pub fn print_line(name: &str, histogram: &hdrhistogram::Histogram<u64>) {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<52} n={:<6} p50={:>7.3} ms  p99={:>7.3} ms",
        histogram.len(),
        ms(0.5),
        ms(0.99)
    );
}
