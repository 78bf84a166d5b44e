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

use super::client::{execute_txn_op, ACCOUNTS_TABLE, CACHE_TABLE, LISTS_TABLE, REGISTERS_TABLE};
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

/// What every client of a run shares.
#[derive(Clone)]
struct Context {
    cluster: Arc<TestCluster>,
    recorder: Arc<Recorder>,
    pool: Arc<KeyPool>,
    config: Arc<TxnRunConfig>,
    progress: Arc<RunProgress>,
}

/// Carries out one run; see the module docs for its phases.
pub async fn run_txn(
    config: &TxnRunConfig,
    progress: Arc<RunProgress>,
) -> Result<TxnRunOutcome, WorkloadError> {
    config.validate()?;
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
    let driven = result?;
    Ok(TxnRunOutcome {
        run_dir,
        history_path,
        n_events: driven.n_events,
        n_faults_planned: driven.n_faults_planned,
        nemesis: driven.nemesis,
        n_ok_healed: driven.n_ok_healed,
        final_reads: driven.final_reads,
        wall_time: wall_start.elapsed(),
    })
}

struct Driven {
    n_events: usize,
    n_faults_planned: usize,
    nemesis: TxnNemesisReport,
    n_ok_healed: u64,
    final_reads: (usize, usize),
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
    let context = Context {
        cluster: Arc::clone(cluster),
        recorder: Arc::clone(&recorder),
        pool: KeyPool::new(config.key_count, config.max_writes_per_key),
        config: Arc::new(config.clone()),
        progress: Arc::clone(&progress),
    };
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
    let deadline = start + config.time;
    let healed_from = start + config.fault_phase();
    let clients: Vec<_> = (0..config.concurrency)
        .map(|index| {
            let rng = stream(config.seed, 1 + index as u64);
            tokio::spawn(run_client(
                context.clone(),
                index,
                rng,
                deadline,
                healed_from,
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
    let nemesis_result = nemesis
        .await
        .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?;
    heal_everything(cluster).await;
    let nemesis = nemesis_result?;
    tracing::info!(n_ok_healed, "compute run: healed; final reads");
    let final_reads = final_reads(&context, last_process + 1).await;
    drop(context);
    let recorder = Arc::into_inner(recorder)
        .expect("every client and the nemesis have finished, so the recorder has one owner");
    let events = recorder.finish()?;
    Ok(Driven {
        n_events: events.len(),
        n_faults_planned,
        nemesis,
        n_ok_healed,
        final_reads,
    })
}

/// Creates the workload's table; the bank also opens its accounts.
async fn prepare_tables(config: &TxnRunConfig, cluster: &TestCluster) -> Result<(), WorkloadError> {
    let table = match config.workload {
        TxnWorkload::ListAppend => LISTS_TABLE,
        TxnWorkload::RwRegister => REGISTERS_TABLE,
        TxnWorkload::Bank => ACCOUNTS_TABLE,
        TxnWorkload::Cache => CACHE_TABLE,
    };
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

fn header(config: &TxnRunConfig, cluster: &TestCluster) -> TxnHistoryHeader {
    let mut nodes: Vec<String> = cluster.compute_nodes().iter().map(|n| n.name()).collect();
    nodes.extend(storage_names(cluster));
    nodes.extend(metadata_names(cluster));
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
fn next_op(context: &Context, index: usize, rng: &mut ChaCha8Rng) -> TxnOp {
    let config = &context.config;
    match config.workload {
        TxnWorkload::ListAppend => generator::txn(rng, &context.pool, config.max_txn_len, true),
        TxnWorkload::RwRegister => generator::txn(rng, &context.pool, config.max_txn_len, false),
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
            generator::cache(rng, &context.pool, config.key_count as i64, role)
        }
    }
}

/// One logical client: invokes operations until `deadline` through its compute node; returns
/// its last process id and how many of its operations completed `ok` in the healed phase.
async fn run_client(
    context: Context,
    index: usize,
    mut rng: ChaCha8Rng,
    deadline: Instant,
    healed_from: Instant,
) -> (u64, u64) {
    let config = Arc::clone(&context.config);
    let concurrency = config.concurrency as u64;
    let node = context.cluster.compute_nodes()[config.compute_node_of(index)].clone();
    let mut process = index as u64;
    let mut n_ok_healed = 0;
    let op_interval = Duration::from_secs_f64(config.concurrency as f64 / config.rate);
    while Instant::now() < deadline {
        if context.progress.n_ops.fetch_add(1, Ordering::Relaxed) >= config.max_ops {
            break;
        }
        let started = Instant::now();
        let op = next_op(&context, index, &mut rng);
        let completion = execute_txn_op(
            &context.recorder,
            &node,
            Process::Client(process),
            &op,
            config.op_timeout,
            config.accounts as i64,
        )
        .await;
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

/// The final reads on the healed cluster, each by a fresh process and retried until `ok`:
/// the bank reads every balance; the cache reads every key through every reader node.
/// Returns (reads, reads served).
async fn final_reads(context: &Context, first_process: u64) -> (usize, usize) {
    let config = &context.config;
    let computes = context.cluster.compute_nodes();
    let reads: Vec<(usize, TxnOp)> = match config.workload {
        TxnWorkload::Bank => vec![(0, TxnOp::ReadBalances)],
        TxnWorkload::Cache => (1..computes.len())
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
            let completion = execute_txn_op(
                &context.recorder,
                &computes[*node],
                process,
                op,
                config.op_timeout,
                config.accounts as i64,
            )
            .await;
            if completion.event_type == EventType::Ok {
                served += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (reads.len(), served)
}
