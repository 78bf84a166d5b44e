//! The compute workloads (list-append, rw-register, bank, cache) against compute node
//! processes (`helios node --role compute`) over replicated shards and a metadata group of
//! processes, all on loopback: the same generator, clients, SQL, history header and phases as
//! the embedded run ([`super::runner`]), with real faults ([`super::process_nemesis`]), so that
//! the same checkers judge transactions and the cache between processes as they do in process.
//!
//! Phases: the processes start and the run waits (bounded) for a metadata leader, a primary per
//! shard and every compute node's cache leases; the workload's table is created through compute
//! node 0, which then reads every key of the start once, unrecorded, until the shards serve
//! (see [`warm_up`]), and opens the bank's accounts; clients run for `time` (cache writers
//! through node 0 and readers through the others; the transactional workloads' clients spread
//! over every node), while the nemesis faults during the fault phase; the healed phase follows.
//! Then every fault is undone and fresh processes make the final reads: the bank reads every
//! balance through node 0 (by point reads, as always: compute processes cannot scan), the cache
//! reads every key through every reader node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::process::{LocalCluster, LocalClusterSpec, Ports};

use super::client::{execute_txn_op, table_of, ACCOUNTS_TABLE};
use super::config::{TxnRunConfig, TxnWorkload};
use super::generator::TxnOp;
use super::process_nemesis::{
    run_process_nemesis, TxnProcesses, PROCESS_NAMED_KINDS, PROCESS_NEMESIS_KINDS,
};
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

/// The compute node flag of the deliberately broken mode in which statements read other
/// transactions' uncommitted writes.
pub const DIRTY_READS_FLAG: &str = "--unsafe-dirty-reads";

/// The processes of a run, beside its [`TxnRunConfig`] (whose `compute_nodes` is the number
/// of compute node processes; its `storage_nodes` does not apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnProcessSpec {
    /// The `helios` binary the processes run.
    pub binary: PathBuf,
    /// Metadata nodes (table schemas live there).
    pub metadata_nodes: usize,
    /// Replicated shards, three member processes each.
    pub shards: usize,
    /// `RUST_LOG` of the processes; `None` inherits this process's.
    pub rust_log: Option<String>,
}

impl TxnProcessSpec {
    /// Three metadata nodes and `shards` shards of `binary`.
    pub fn new(binary: PathBuf, shards: usize) -> Self {
        TxnProcessSpec {
            binary,
            metadata_nodes: 3,
            shards,
            rust_log: None,
        }
    }

    /// Refuses shapes that processes cannot run or that would not be bounded.
    fn validate(&self, config: &TxnRunConfig) -> Result<(), WorkloadError> {
        let invalid = |message: String| Err(WorkloadError::InvalidConfig(message));
        if let Some(kind) = config.nemesis.iter().find(|kind| {
            !PROCESS_NEMESIS_KINDS.contains(kind) && !PROCESS_NAMED_KINDS.contains(kind)
        }) {
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
        if config.unsafe_modes.no_2pc {
            return invalid(
                "--unsafe no-2pc runs in process only: compute node processes always commit \
                 through one record in the metadata group"
                    .into(),
            );
        }
        Ok(())
    }

    fn local_cluster(&self, config: &TxnRunConfig, dir: PathBuf) -> LocalClusterSpec {
        let modes = &config.unsafe_modes;
        let compute_args = [
            (modes.skip_invalidation, SKIP_INVALIDATION_FLAG),
            (modes.dirty_reads, DIRTY_READS_FLAG),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, flag)| flag.to_owned())
        .collect();
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

/// Carries out one run on processes; see the module docs for its phases.
pub async fn run_txn_on_processes(
    config: &TxnRunConfig,
    spec: &TxnProcessSpec,
    progress: Arc<RunProgress>,
) -> Result<TxnRunOutcome, WorkloadError> {
    config.validate()?;
    spec.validate(config)?;
    let wall_start = Instant::now();
    let run_dir = create_run_dir(&config.store_dir.join(config.workload.as_str()))?;
    let history_path = run_dir.join("history.jsonl");
    tracing::info!(
        workload = config.workload.as_str(),
        seed = config.seed,
        dir = %run_dir.display(),
        "run on processes: starting them"
    );
    let cluster = LocalCluster::start(spec.local_cluster(config, run_dir.join("cluster")))
        .map_err(|error| {
            WorkloadError::TaskFailed(format!("cannot start the processes: {error}"))
        })?;
    let processes = TxnProcesses::new(cluster, config.workload);
    let result = drive(config, &processes, &history_path, progress).await;
    tracing::info!("run on processes: stopping them");
    processes.stop().await;
    Ok(result?.outcome(run_dir, history_path, wall_start))
}

async fn drive(
    config: &TxnRunConfig,
    processes: &TxnProcesses,
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
        "run on processes: clients and nemesis starting"
    );
    let nemesis = tokio::spawn(run_process_nemesis(
        processes.clone(),
        Arc::clone(&recorder),
        plan,
        recorder.start(),
        Arc::clone(&progress),
    ));
    let (op_timeout, accounts) = (config.op_timeout, config.accounts as i64);
    let (last_process, n_ok_healed) = run_clients(&shared, |index| {
        let node = nodes[config.compute_node_of(index)].clone();
        let recorder = Arc::clone(&recorder);
        move |process, op: TxnOp| {
            let (node, recorder) = (node.clone(), Arc::clone(&recorder));
            async move {
                execute_txn_op(&recorder, &node, process, &op, op_timeout, accounts).await
            }
        }
    })
    .await?;
    let nemesis_result = nemesis
        .await
        .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?;
    if let Err(error) = bounded("restore every process", processes.restore_all()).await? {
        tracing::error!(%error, "run on processes: not every process was restored");
    }
    let nemesis = nemesis_result?;
    tracing::info!(n_ok_healed, "run on processes: healed; final reads");
    let final_reads = final_reads(
        config,
        nodes.len(),
        last_process + 1,
        |node, process, op| {
            let (node, recorder) = (&nodes[node], Arc::clone(&recorder));
            async move { execute_txn_op(&recorder, node, process, &op, op_timeout, accounts).await }
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
/// compute node holding its cache leases; then creates the workload's table through compute
/// node 0, warms the shards up and opens the bank's accounts. Returns the compute nodes and
/// every node's history name (compute, shard members, metadata).
async fn prepare(
    config: &TxnRunConfig,
    processes: &TxnProcesses,
) -> Result<(Vec<ProcessComputeNode>, Vec<String>), WorkloadError> {
    let cluster = processes.cluster().lock().await;
    let not_ready = |what: &str, error: &dyn std::fmt::Display| {
        tracing::error!(%error, dir = %cluster.dir().display(), "run on processes: {what}");
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
    let table = table_of(config.workload);
    create_table(&nodes[0], table).await?;
    let keys = match config.workload {
        TxnWorkload::Bank => config.accounts,
        _ => config.key_count,
    };
    warm_up(&nodes[0], table, keys).await?;
    if config.workload == TxnWorkload::Bank {
        open_accounts(&nodes[0], config).await?;
    }
    let mut names: Vec<String> = nodes
        .iter()
        .map(|node| compute_node_name(node.index()))
        .collect();
    names.extend((0..3 * cluster.shard_count() as u64).map(replica_node_name));
    names.extend((0..cluster.ids().len() as u64).map(node_name));
    Ok((nodes, names))
}

/// Reads keys `0..keys` of `table` once through `node`, unrecorded, retrying within the
/// startup bound. A data member exposes nothing for one cache lease after it starts (its
/// earlier incarnation's leases may still run), so without this the history's first operations
/// would all wait out that quiet period, which is startup, not the workload at work.
async fn warm_up(node: &ProcessComputeNode, table: &str, keys: usize) -> Result<(), WorkloadError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for key in 0..keys {
        let select = format!("SELECT id FROM {table} WHERE id = {key}");
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

/// Creates `table` (keyed by `id`) through `node`, retrying within the startup bound: the
/// schema is one idempotent write to the metadata group.
async fn create_table(node: &ProcessComputeNode, table: &str) -> Result<(), WorkloadError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        match node.client().create_table(table, "id").await {
            Ok(()) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                return Err(WorkloadError::TaskFailed(format!(
                    "create table {table} through compute node 0: {error}"
                )))
            }
            Err(error) => {
                tracing::debug!(%error, "create table: retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Opens the bank's accounts through `node`, each with the opening balance, retrying within the
/// startup bound. Nothing else writes yet, so an insert that finds its row already there is
/// an earlier attempt of its own whose reply was lost.
async fn open_accounts(
    node: &ProcessComputeNode,
    config: &TxnRunConfig,
) -> Result<(), WorkloadError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    for account in 0..config.accounts {
        let insert = format!(
            "INSERT INTO {ACCOUNTS_TABLE} (id, balance) VALUES ({account}, {})",
            config.initial_balance
        );
        loop {
            match node.client().execute(&insert).await {
                Ok(_) => break,
                Err(error) if error.to_string().contains("duplicate key") => break,
                Err(error) if Instant::now() >= deadline => {
                    return Err(WorkloadError::TaskFailed(format!(
                        "open account {account} through compute node 0: {error}"
                    )))
                }
                Err(error) => {
                    tracing::debug!(%error, account, "open account: retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    Ok(())
}
