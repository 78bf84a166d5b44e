//! The compute workloads' runner: one seeded run of list-append, rw-register, bank or cache
//! against storage nodes, compute nodes and the metadata group, with faults on all three,
//! leaving `history.jsonl` for the isolation, bank, cache and linearizability checkers.
//!
//! Phases: the cluster starts and the workload's table is created (the bank's accounts are
//! opened); clients run for `time` while the nemesis faults during the fault phase; the healed
//! phase follows (20 % of the run, at least 3 s), in which the cluster must serve again. Then
//! every fault is undone and fresh processes make the final reads: the bank reads every
//! balance once more, and the cache workload reads every key through every reader node, so
//! that each write's invalidation is observed to converge.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::{ComputeOptions, TestCluster};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::client::{execute_txn_op, table_of, TxnCompletion, ACCOUNTS_TABLE};
use super::config::{TxnRunConfig, TxnWorkload};
use super::generator::{self, CacheRole, KeyPool, TxnOp};
use super::nemesis::{
    heal_everything, metadata_names, run_txn_nemesis, storage_names, TxnNemesisReport,
};
use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::{EventType, Process, HISTORY_FORMAT_VERSION};
use crate::recorder::Recorder;
use crate::runner::{create_run_dir, stream};

/// At most this many attempts are made for each final read.
const MAX_FINAL_READ_ATTEMPTS: u32 = 50;
/// The bound on the whole final-read phase.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The first line of a compute-workload history. `extra` carries what each checker needs:
/// the bank's `total` and `accounts`, the cache's linearizability `model`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TxnHistoryHeader {
    /// Always [`HISTORY_FORMAT_VERSION`].
    pub helios_history: u64,
    /// `list-append`, `rw-register`, `bank` or `cache`.
    pub workload: String,
    /// The seed that drove every random choice of the run.
    pub seed: u64,
    /// Compute nodes, storage nodes, then metadata nodes.
    pub nodes: Vec<String>,
    /// The number of concurrent logical clients.
    pub concurrency: usize,
    /// The fault kinds the nemesis could choose from.
    pub nemesis: Vec<String>,
    /// The deliberately broken modes that were on.
    #[serde(rename = "unsafe")]
    pub unsafe_modes: Vec<String>,
    /// Workload-specific fields.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a compute-workload run produced.
#[derive(Debug, Clone)]
pub struct TxnRunOutcome {
    /// The run's directory, `store_dir/<workload>/<timestamp>/`.
    pub run_dir: PathBuf,
    /// The history, `run_dir/history.jsonl`.
    pub history_path: PathBuf,
    /// The number of events in the history.
    pub n_events: usize,
    /// The planned faults.
    pub n_faults_planned: usize,
    /// What the nemesis did.
    pub nemesis: TxnNemesisReport,
    /// Client operations that completed `ok` in the healed phase: the cluster served again.
    pub n_ok_healed: u64,
    /// Final reads made, and how many were served.
    pub final_reads: (usize, usize),
    /// The wall time of the run, startup and shutdown included.
    pub wall_time: Duration,
}

/// What every client of a run shares, whatever runs the compute nodes.
#[derive(Clone)]
pub(super) struct ClientShared {
    pub(super) recorder: Arc<Recorder>,
    pub(super) pool: Arc<KeyPool>,
    pub(super) config: Arc<TxnRunConfig>,
    pub(super) progress: Arc<RunProgress>,
}

impl ClientShared {
    pub(super) fn new(
        config: &TxnRunConfig,
        recorder: &Arc<Recorder>,
        progress: &Arc<RunProgress>,
    ) -> Self {
        ClientShared {
            recorder: Arc::clone(recorder),
            pool: KeyPool::new(config.key_count, config.max_writes_per_key),
            config: Arc::new(config.clone()),
            progress: Arc::clone(progress),
        }
    }
}

/// Carries out one run; see the module docs for its phases.
pub async fn run_txn(
    config: &TxnRunConfig,
    progress: Arc<RunProgress>,
) -> Result<TxnRunOutcome, WorkloadError> {
    config.validate()?;
    // Refused before anything runs, not when the fault comes due.
    if let Some(kind) = config
        .nemesis
        .iter()
        .find(|kind| super::process_nemesis::PROCESS_NAMED_KINDS.contains(kind))
    {
        return Err(WorkloadError::InvalidConfig(format!(
            "nemesis {} runs on processes only (--target processes)",
            kind.as_str()
        )));
    }
    let wall_start = Instant::now();
    let run_dir = create_run_dir(&config.store_dir.join(config.workload.as_str()))?;
    let history_path = run_dir.join("history.jsonl");
    tracing::info!(
        workload = config.workload.as_str(),
        seed = config.seed,
        dir = %run_dir.display(),
        "compute run: starting the cluster"
    );
    let cluster = Arc::new(
        TestCluster::builder()
            .storage_nodes(config.storage_nodes)
            .compute_nodes(config.compute_nodes)
            .seed(config.seed)
            .compute_options(ComputeOptions {
                unsafe_skip_invalidation: config.unsafe_modes.skip_invalidation,
                unsafe_no_2pc: config.unsafe_modes.no_2pc,
                ..ComputeOptions::default()
            })
            .unsafe_dirty_reads(config.unsafe_modes.dirty_reads)
            .build()
            .await,
    );
    let result = drive(config, &cluster, &history_path, progress).await;
    tracing::info!("compute run: shutting the cluster down");
    let _ = tokio::time::timeout(Duration::from_secs(15), cluster.shutdown()).await;
    Ok(result?.outcome(run_dir, history_path, wall_start))
}

/// What driving a run (in process or on processes) leaves for its outcome.
pub(super) struct Driven {
    n_events: usize,
    n_faults_planned: usize,
    nemesis: TxnNemesisReport,
    n_ok_healed: u64,
    final_reads: (usize, usize),
}

impl Driven {
    /// Closes the history once every client (`shared`) and the nemesis are done, and counts
    /// its events.
    pub(super) fn finish(
        shared: ClientShared,
        recorder: Arc<Recorder>,
        n_faults_planned: usize,
        nemesis: TxnNemesisReport,
        n_ok_healed: u64,
        final_reads: (usize, usize),
    ) -> Result<Self, WorkloadError> {
        drop(shared);
        let recorder = Arc::into_inner(recorder)
            .expect("every client and the nemesis have finished, so the recorder has one owner");
        let events = recorder.finish()?;
        Ok(Self {
            n_events: events.len(),
            n_faults_planned,
            nemesis,
            n_ok_healed,
            final_reads,
        })
    }

    /// The run's outcome, with its wall time counted from `wall_start`.
    pub(super) fn outcome(
        self,
        run_dir: PathBuf,
        history_path: PathBuf,
        wall_start: Instant,
    ) -> TxnRunOutcome {
        TxnRunOutcome {
            run_dir,
            history_path,
            n_events: self.n_events,
            n_faults_planned: self.n_faults_planned,
            nemesis: self.nemesis,
            n_ok_healed: self.n_ok_healed,
            final_reads: self.final_reads,
            wall_time: wall_start.elapsed(),
        }
    }
}

async fn drive(
    config: &TxnRunConfig,
    cluster: &Arc<TestCluster>,
    history_path: &Path,
    progress: Arc<RunProgress>,
) -> Result<Driven, WorkloadError> {
    prepare_tables(config, cluster).await?;
    let recorder = Arc::new(Recorder::create(
        history_path,
        &header(config, cluster),
        Instant::now(),
    )?);
    let start = recorder.start();
    let shared = ClientShared::new(config, &recorder, &progress);
    let plan = config.plan();
    let n_faults_planned = plan.len();
    tracing::info!(
        faults = n_faults_planned,
        "compute run: clients and nemesis starting"
    );
    let nemesis = tokio::spawn(run_txn_nemesis(
        Arc::clone(cluster),
        Arc::clone(&recorder),
        plan,
        start,
        Arc::clone(&progress),
    ));
    let (last_process, n_ok_healed) = run_clients(&shared, |index| {
        let node = cluster.compute_nodes()[config.compute_node_of(index)].clone();
        let (recorder, config) = (Arc::clone(&recorder), Arc::clone(&shared.config));
        move |process, op: TxnOp| {
            let (node, recorder, config) =
                (node.clone(), Arc::clone(&recorder), Arc::clone(&config));
            async move {
                let accounts = config.accounts as i64;
                execute_txn_op(&recorder, &node, process, &op, config.op_timeout, accounts).await
            }
        }
    })
    .await?;
    let nemesis_result = nemesis
        .await
        .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?;
    heal_everything(cluster).await;
    let nemesis = nemesis_result?;
    tracing::info!(n_ok_healed, "compute run: healed; final reads");
    let computes = cluster.compute_nodes();
    let final_reads = final_reads(
        config,
        computes.len(),
        last_process + 1,
        |node, process, op| {
            let node = computes[node].clone();
            let recorder = Arc::clone(&recorder);
            async move {
                let accounts = config.accounts as i64;
                execute_txn_op(&recorder, &node, process, &op, config.op_timeout, accounts).await
            }
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

/// Creates the workload's table; the bank also opens its accounts.
async fn prepare_tables(config: &TxnRunConfig, cluster: &TestCluster) -> Result<(), WorkloadError> {
    let table = table_of(config.workload);
    let storage = cluster.storage();
    let cluster_error = |what: String| move |source| WorkloadError::Cluster { what, source };
    storage
        .try_create_table(table, "id")
        .await
        .map_err(cluster_error(format!("create table {table}")))?;
    if config.workload == TxnWorkload::Bank {
        for account in 0..config.accounts as i64 {
            storage
                .insert(
                    ACCOUNTS_TABLE,
                    vec![("id", account), ("balance", config.initial_balance)],
                )
                .await
                .map_err(cluster_error(format!("open account {account}")))?;
        }
    }
    Ok(())
}

/// The header of the embedded cluster's run.
fn header(config: &TxnRunConfig, cluster: &TestCluster) -> TxnHistoryHeader {
    let mut nodes: Vec<String> = cluster.compute_nodes().iter().map(|n| n.name()).collect();
    nodes.extend(storage_names(cluster));
    nodes.extend(metadata_names(cluster));
    header_with_nodes(config, nodes)
}

/// The header of a run of `config` on `nodes` (compute, storage, then metadata node names):
/// the same shape whatever runs the nodes, so that the checkers treat every run alike.
pub(super) fn header_with_nodes(config: &TxnRunConfig, nodes: Vec<String>) -> TxnHistoryHeader {
    let mut extra = Map::new();
    match config.workload {
        TxnWorkload::Bank => {
            extra.insert("total".into(), json!(config.bank_total()));
            extra.insert(
                "accounts".into(),
                json!((0..config.accounts as i64).collect::<Vec<_>>()),
            );
            extra.insert("negative_balances".into(), json!(false));
        }
        TxnWorkload::Cache => {
            extra.insert("model".into(), json!("register"));
        }
        TxnWorkload::ListAppend | TxnWorkload::RwRegister => {
            extra.insert("consistency".into(), json!("read-committed"));
        }
    }
    TxnHistoryHeader {
        helios_history: HISTORY_FORMAT_VERSION,
        workload: config.workload.as_str().to_owned(),
        seed: config.seed,
        nodes,
        concurrency: config.concurrency,
        nemesis: config
            .nemesis
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect(),
        unsafe_modes: config.unsafe_modes.names(),
        extra,
    }
}

/// The next operation of client `index`.
fn next_op(shared: &ClientShared, index: usize, rng: &mut ChaCha8Rng) -> TxnOp {
    let config = &shared.config;
    match config.workload {
        TxnWorkload::ListAppend => generator::txn(rng, &shared.pool, config.max_txn_len, true),
        TxnWorkload::RwRegister => generator::txn(rng, &shared.pool, config.max_txn_len, false),
        TxnWorkload::Bank => generator::bank(rng, config.accounts as i64, config.read_fraction),
        TxnWorkload::Cache => {
            let writers = config.cache_writers();
            let role = if index < writers {
                CacheRole::Writer {
                    index: index as i64,
                    writers: writers as i64,
                }
            } else {
                CacheRole::Reader
            };
            generator::cache(rng, &shared.pool, config.key_count as i64, role)
        }
    }
}

/// Starts `config.concurrency` logical clients, client `index` running its operations through
/// `executor(index)`, and waits for them; returns the highest process id any of them used and
/// how many operations completed `ok` in the healed phase.
pub(super) async fn run_clients<X, E, Fut>(
    shared: &ClientShared,
    executor: X,
) -> Result<(u64, u64), WorkloadError>
where
    X: Fn(usize) -> E,
    E: Fn(Process, TxnOp) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = TxnCompletion> + Send + 'static,
{
    let config = &shared.config;
    let start = shared.recorder.start();
    let deadline = start + config.time;
    let healed_from = start + config.fault_phase();
    let clients: Vec<_> = (0..config.concurrency)
        .map(|index| {
            let rng = stream(config.seed, 1 + index as u64);
            tokio::spawn(run_client(
                shared.clone(),
                index,
                rng,
                (deadline, healed_from),
                executor(index),
            ))
        })
        .collect();
    let (mut last_process, mut n_ok_healed) = (0, 0);
    for client in clients {
        let (process, ok_healed) = client
            .await
            .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?;
        last_process = last_process.max(process);
        n_ok_healed += ok_healed;
    }
    Ok((last_process, n_ok_healed))
}

/// One logical client: invokes operations through `execute` until `deadline`; returns its
/// last process id and how many of its operations completed `ok` in the healed phase (from
/// `healed_from`).
async fn run_client<E, Fut>(
    shared: ClientShared,
    index: usize,
    mut rng: ChaCha8Rng,
    (deadline, healed_from): (Instant, Instant),
    execute: E,
) -> (u64, u64)
where
    E: Fn(Process, TxnOp) -> Fut,
    Fut: std::future::Future<Output = TxnCompletion>,
{
    let config = Arc::clone(&shared.config);
    let concurrency = config.concurrency as u64;
    let mut process = index as u64;
    let mut n_ok_healed = 0;
    let op_interval = Duration::from_secs_f64(config.concurrency as f64 / config.rate);
    while Instant::now() < deadline {
        if shared.progress.n_ops.fetch_add(1, Ordering::Relaxed) >= config.max_ops {
            break;
        }
        let started = Instant::now();
        let op = next_op(&shared, index, &mut rng);
        let completion = execute(Process::Client(process), op).await;
        match completion.event_type {
            EventType::Ok if started >= healed_from => n_ok_healed += 1,
            // Jepsen: a process whose outcome is unknown may still have it in flight.
            EventType::Info => process += concurrency,
            _ => {}
        }
        // Jepsen's stagger: a uniform draw from [0, 2 * op_interval] after this start.
        let interval_us = op_interval.as_micros() as u64;
        let gap = Duration::from_micros(rng.gen_range(0..=2 * interval_us));
        tokio::time::sleep_until((started + gap).min(deadline).into()).await;
    }
    (process, n_ok_healed)
}

/// The final reads on the healed cluster, each by a fresh process from `first_process` and
/// retried until `ok`, through `execute(compute node index, process, op)`: the bank reads every
/// balance; the cache reads every key through every reader node (of `n_compute`). Returns
/// (reads, reads served).
pub(super) async fn final_reads<E, Fut>(
    config: &TxnRunConfig,
    n_compute: usize,
    first_process: u64,
    execute: E,
) -> (usize, usize)
where
    E: Fn(usize, Process, TxnOp) -> Fut,
    Fut: std::future::Future<Output = TxnCompletion>,
{
    let reads: Vec<(usize, TxnOp)> = match config.workload {
        TxnWorkload::Bank => vec![(0, TxnOp::ReadBalances)],
        TxnWorkload::Cache => (1..n_compute)
            .flat_map(|node| {
                (0..config.key_count as i64).map(move |key| (node, TxnOp::CacheRead { key }))
            })
            .collect(),
        TxnWorkload::ListAppend | TxnWorkload::RwRegister => Vec::new(),
    };
    let deadline = Instant::now() + FINAL_READ_TIMEOUT;
    let mut served = 0;
    for (offset, (node, op)) in reads.iter().enumerate() {
        let process = Process::Client(first_process + offset as u64);
        for attempt in 0..MAX_FINAL_READ_ATTEMPTS {
            if attempt > 0 && Instant::now() >= deadline {
                break;
            }
            let completion = execute(*node, process, op.clone()).await;
            if completion.event_type == EventType::Ok {
                served += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (reads.len(), served)
}
