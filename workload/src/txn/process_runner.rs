//! The cache workload against compute node processes (`helios node --role compute`) over
//! replicated shards and a metadata group of processes, all on loopback: the same generator,
//! clients, SQL, history header and phases as the embedded run ([`super::runner`]), with real
//! faults ([`super::process_nemesis`]), so that the checker measures the invalidation latency
//! between processes exactly as it does in process.
//!
//! Phases: the processes start and the run waits (bounded) for a metadata leader, a primary per
//! shard and every compute node's cache leases; the table is created through compute node 0,
//! which then reads every key once, unrecorded, until the shards serve (see [`warm_up`]);
//! clients run for `time`, writers through node 0 and readers through the others, while the
//! nemesis faults during the fault phase; the healed phase follows. Then every fault is undone
//! and fresh processes read every key through every reader node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::process::{LocalCluster, LocalClusterSpec, Ports};

use super::client::{execute_cache_op, CACHE_TABLE};
use super::config::{TxnRunConfig, TxnWorkload};
use super::generator::TxnOp;
use super::process_nemesis::{run_process_nemesis, CacheProcesses, PROCESS_NEMESIS_KINDS};
use super::runner::{
    final_reads, header_with_nodes, run_clients, ClientShared, Driven, TxnRunOutcome,
};
use super::sql_node::{compute_node_name, ProcessComputeNode};
use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::node_name;
use crate::nemesis::bounded;
use crate::recorder::Recorder;
use crate::replicated::replica_node_name;
use crate::runner::{create_run_dir, STARTUP_TIMEOUT};

/// The compute node flag of the deliberately broken mode that skips invalidations.
pub const SKIP_INVALIDATION_FLAG: &str = "--unsafe-skip-invalidation";

/// The processes of a cache run, beside its [`TxnRunConfig`] (whose `compute_nodes` is the
/// number of compute node processes; its `storage_nodes` does not apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheProcessSpec {
    /// The `helios` binary the processes run.
    pub binary: PathBuf,
    /// Metadata nodes (table schemas live there).
    pub metadata_nodes: usize,
    /// Replicated shards, three member processes each.
    pub shards: usize,
    /// `RUST_LOG` of the processes; `None` inherits this process's.
    pub rust_log: Option<String>,
}

impl CacheProcessSpec {
    /// Three metadata nodes and `shards` shards of `binary`.
    pub fn new(binary: PathBuf, shards: usize) -> Self {
        CacheProcessSpec {
            binary,
            metadata_nodes: 3,
            shards,
            rust_log: None,
        }
    }

    /// Refuses shapes that cannot run a cache workload or would not be bounded.
    fn validate(&self, config: &TxnRunConfig) -> Result<(), WorkloadError> {
        let invalid = |message: String| Err(WorkloadError::InvalidConfig(message));
        if config.workload != TxnWorkload::Cache {
            return invalid(format!(
                "{} runs in process only; compute node processes run the cache workload",
                config.workload.as_str()
            ));
        }
        if let Some(kind) = config
            .nemesis
            .iter()
            .find(|kind| !PROCESS_NEMESIS_KINDS.contains(kind))
        {
            return invalid(format!(
                "nemesis {} runs on the embedded cluster only",
                kind.as_str()
            ));
        }
        if !(1..=9).contains(&self.metadata_nodes) || !(1..=8).contains(&self.shards) {
            return invalid(format!(
                "processes need 1..=9 metadata nodes and 1..=8 shards, got {} and {}",
                self.metadata_nodes, self.shards
            ));
        }
        if config.unsafe_modes.dirty_reads || config.unsafe_modes.no_2pc {
            return invalid("compute node processes have no transactions to break".into());
        }
        Ok(())
    }

    fn local_cluster(&self, config: &TxnRunConfig, dir: PathBuf) -> LocalClusterSpec {
        let compute_args = if config.unsafe_modes.skip_invalidation {
            vec![SKIP_INVALIDATION_FLAG.to_owned()]
        } else {
            Vec::new()
        };
        LocalClusterSpec {
            binary: self.binary.clone(),
            dir,
            n_nodes: self.metadata_nodes,
            n_shards: self.shards,
            n_compute: config.compute_nodes,
            compute_args,
            ports: Ports::Free,
            node_args: Vec::new(),
            rust_log: self.rust_log.clone(),
            // A run that dies leaves no process behind.
            exit_with_parent: true,
        }
    }
}

/// Carries out one cache run on processes; see the module docs for its phases.
pub async fn run_cache_on_processes(
    config: &TxnRunConfig,
    spec: &CacheProcessSpec,
    progress: Arc<RunProgress>,
) -> Result<TxnRunOutcome, WorkloadError> {
    config.validate()?;
    spec.validate(config)?;
    let wall_start = Instant::now();
    let run_dir = create_run_dir(&config.store_dir.join(config.workload.as_str()))?;
    let history_path = run_dir.join("history.jsonl");
    tracing::info!(
        seed = config.seed,
        dir = %run_dir.display(),
        "cache run on processes: starting them"
    );
    let cluster = LocalCluster::start(spec.local_cluster(config, run_dir.join("cluster")))
        .map_err(|error| {
            WorkloadError::TaskFailed(format!("cannot start the processes: {error}"))
        })?;
    let processes = CacheProcesses::new(cluster);
    let result = drive(config, &processes, &history_path, progress).await;
    tracing::info!("cache run on processes: stopping them");
    processes.stop().await;
    Ok(result?.outcome(run_dir, history_path, wall_start))
}

async fn drive(
    config: &TxnRunConfig,
    processes: &CacheProcesses,
    history_path: &Path,
    progress: Arc<RunProgress>,
) -> Result<Driven, WorkloadError> {
    let (nodes, names) = prepare(config, processes).await?;
    let header = header_with_nodes(config, names);
    let recorder = Arc::new(Recorder::create(history_path, &header, Instant::now())?);
    let shared = ClientShared::new(config, &recorder, &progress);
    let plan = config.plan();
    let n_faults_planned = plan.len();
    tracing::info!(
        faults = n_faults_planned,
        "cache run on processes: clients and nemesis starting"
    );
    let nemesis = tokio::spawn(run_process_nemesis(
        processes.clone(),
        Arc::clone(&recorder),
        plan,
        recorder.start(),
        Arc::clone(&progress),
    ));
    let op_timeout = config.op_timeout;
    let (last_process, n_ok_healed) = run_clients(&shared, |index| {
        let node = nodes[config.compute_node_of(index)].clone();
        let recorder = Arc::clone(&recorder);
        move |process, op: TxnOp| {
            let (node, recorder) = (node.clone(), Arc::clone(&recorder));
            async move { execute_cache_op(&recorder, &node, process, &op, op_timeout).await }
        }
    })
    .await?;
    let nemesis_result = nemesis
        .await
        .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?;
    if let Err(error) = bounded("restore every process", processes.restore_all()).await? {
        tracing::error!(%error, "cache run on processes: not every process was restored");
    }
    let nemesis = nemesis_result?;
    tracing::info!(n_ok_healed, "cache run on processes: healed; final reads");
    let final_reads = final_reads(
        config,
        nodes.len(),
        last_process + 1,
        |node, process, op| {
            let (node, recorder) = (&nodes[node], Arc::clone(&recorder));
            async move { execute_cache_op(&recorder, node, process, &op, op_timeout).await }
        },
    )
    .await;
    Driven::finish(
        shared,
        recorder,
        n_faults_planned,
        nemesis,
        n_ok_healed,
        final_reads,
    )
}

/// Waits (bounded) until the processes serve: a metadata leader, a primary per shard, every
/// compute node holding its cache leases; then creates the table through compute node 0.
/// Returns the compute nodes and every node's history name (compute, shard members, metadata).
async fn prepare(
    config: &TxnRunConfig,
    processes: &CacheProcesses,
) -> Result<(Vec<ProcessComputeNode>, Vec<String>), WorkloadError> {
    let cluster = processes.cluster().lock().await;
    let not_ready = |what: &str, error: &dyn std::fmt::Display| {
        tracing::error!(%error, dir = %cluster.dir().display(), "cache run on processes: {what}");
        WorkloadError::ClusterNotReady {
            timeout_ms: STARTUP_TIMEOUT.as_millis() as u64,
        }
    };
    if let Err(error) = cluster.wait_for_leader(&[], STARTUP_TIMEOUT).await {
        return Err(not_ready("no metadata leader", &error));
    }
    for shard in 0..cluster.shard_count() {
        if let Err(error) = cluster.wait_for_primary(shard, STARTUP_TIMEOUT).await {
            return Err(not_ready("no shard primary", &error));
        }
    }
    let mut nodes = Vec::new();
    for index in cluster.compute_nodes() {
        if let Err(error) = cluster.wait_for_cache(index, STARTUP_TIMEOUT).await {
            return Err(not_ready("no cache leases", &error));
        }
        let client = cluster
            .compute_client(index, config.op_timeout)
            .map_err(|error| not_ready("no compute client", &error))?;
        nodes.push(ProcessComputeNode::new(index, client));
    }
    create_table(&nodes[0]).await?;
    warm_up(&nodes[0], config.key_count).await?;
    let mut names: Vec<String> = nodes
        .iter()
        .map(|node| compute_node_name(node.index()))
        .collect();
    names.extend((0..3 * cluster.shard_count() as u64).map(replica_node_name));
    names.extend((0..cluster.ids().len() as u64).map(node_name));
    Ok((nodes, names))
}

/// Reads every key of the workload once through `node`, unrecorded, retrying within the
/// startup bound. A data member exposes nothing for one cache lease after it starts (its
/// earlier incarnation's leases may still run), so without this the history's first operations
/// would all wait out that quiet period, which is startup, not the cache at work.
async fn warm_up(node: &ProcessComputeNode, key_count: usize) -> Result<(), WorkloadError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for key in 0..key_count {
        let select = format!("SELECT v FROM {CACHE_TABLE} WHERE id = {key}");
        while let Err(error) = node.client().query(&select).await {
            if Instant::now() >= deadline {
                return Err(WorkloadError::TaskFailed(format!(
                    "warm-up read of key {key} through compute node 0: {error}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Creates the cache table (keyed by `id`) through `node`, retrying within the startup bound:
/// the schema is one idempotent write to the metadata group.
async fn create_table(node: &ProcessComputeNode) -> Result<(), WorkloadError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match node.client().create_table(CACHE_TABLE, "id").await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                return Err(WorkloadError::TaskFailed(format!(
                    "create table {CACHE_TABLE} through compute node 0: {error}"
                )))
            }
            Err(error) => {
                tracing::debug!(%error, "create table: retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
