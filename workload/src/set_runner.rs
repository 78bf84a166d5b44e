//! The set workload's runner: one seeded run against the sharded `StorageCluster`, with online
//! rebalancing, kills and partitions, leaving `history.jsonl` for the lost-writes checker.
//!
//! Phases: the cluster starts and the table `set_elements` (shard key `id`) is created;
//! clients insert unique ids and now and then read every id for `time`, while the nemesis adds
//! nodes, kills and partitions during the fault phase; the healed phase follows (20 % of the
//! run, at least 3 s). Then the nemesis's faults are all undone, the last move is waited for,
//! and several fresh processes read the whole set (the final reads), so every acknowledged
//! insert must appear in them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::sharding::MoveLimits;
use helios_cluster::{RebalanceStatus, StorageCluster, StorageClusterOptions};
use serde::Serialize;

use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::{node_name, EventType, Process, HISTORY_FORMAT_VERSION};
use crate::recorder::Recorder;
use crate::runner::{create_run_dir, stream, MAX_CONCURRENCY, MAX_TIME};
use crate::schedule::NemesisTiming;
use crate::set_client::{execute_set_op, SetClient, SetContext, SetOp, SET_KEY_COLUMN, SET_TABLE};
use crate::set_nemesis::{run_set_nemesis, storage_node_name, SetNemesisReport};
use crate::set_schedule::{plan_set_faults, PlannedSetFault, SetClusterShape, SetNemesisKind};

/// At most this many storage nodes at start, and at most this many added over a run.
pub const MAX_STORAGE_NODES: usize = 9;
/// At most this many final reads are made, and each is tried at most this many times.
pub const MAX_FINAL_READS: usize = 20;
/// See [`MAX_FINAL_READS`].
pub const MAX_FINAL_READ_ATTEMPTS: u32 = 100;
/// The bound on each heal call at the end of the run.
const HEAL_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything that defines a set run. One `seed` drives every random choice.
#[derive(Debug, Clone, PartialEq)]
pub struct SetRunConfig {
    /// The fault kinds the nemesis chooses from; empty for none.
    pub nemesis: Vec<SetNemesisKind>,
    /// How long clients invoke operations.
    pub time: Duration,
    /// The number of concurrent logical clients.
    pub concurrency: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// Storage nodes at start.
    pub storage_nodes: usize,
    /// Metadata Raft nodes.
    pub metadata_nodes: usize,
    /// At most this many storage nodes are added over the run.
    pub max_added_nodes: usize,
    /// Deliberately broken: moves switch ownership without catching up the writes made during
    /// the copy (`--unsafe skip-catchup`), so those writes are lost.
    pub unsafe_skip_catchup: bool,
    /// The bound on each client operation.
    pub op_timeout: Duration,
    /// Runs are written under `store_dir/set/<timestamp>/`.
    pub store_dir: PathBuf,
    /// When faults start and how long they last.
    pub nemesis_timing: NemesisTiming,
    /// The target rate of invocations, all clients together, in operations per second.
    pub rate: f64,
    /// The chance that an operation is a read of the whole set.
    pub read_fraction: f64,
    /// The bound on client invocations over the whole run.
    pub max_ops: u64,
    /// Rows per copy batch of a move.
    pub copy_batch_rows: usize,
    /// The pause after each copy batch: it makes a move last long enough (about a second for
    /// a thousand ranges) for writes, kills and partitions to land in the middle of it.
    pub copy_pause: Duration,
    /// How many final reads, each by a fresh process.
    pub final_reads: usize,
    /// How long the final reads may take, all together.
    pub final_read_timeout: Duration,
    /// How long the end of the run waits for the last move to be decided.
    pub rebalance_wait: Duration,
}

impl Default for SetRunConfig {
    fn default() -> Self {
        SetRunConfig {
            nemesis: SetNemesisKind::ALL.to_vec(),
            time: Duration::from_secs(30),
            concurrency: 10,
            seed: 0,
            storage_nodes: 3,
            metadata_nodes: 3,
            max_added_nodes: 4,
            unsafe_skip_catchup: false,
            op_timeout: Duration::from_secs(2),
            store_dir: PathBuf::from("store"),
            nemesis_timing: NemesisTiming::default(),
            rate: 200.0,
            read_fraction: 0.05,
            max_ops: 2_000_000,
            copy_batch_rows: 64,
            copy_pause: Duration::from_millis(1),
            final_reads: 3,
            final_read_timeout: Duration::from_secs(30),
            rebalance_wait: Duration::from_secs(60),
        }
    }
}

impl SetRunConfig {
    /// Refuses configurations that cannot run or would not be bounded.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let invalid = |message: String| Err(WorkloadError::InvalidConfig(message));
        if self.storage_nodes == 0 || self.storage_nodes > MAX_STORAGE_NODES {
            return invalid(format!(
                "storage nodes must be in 1..={MAX_STORAGE_NODES}, got {}",
                self.storage_nodes
            ));
        }
        if self.max_added_nodes > MAX_STORAGE_NODES {
            return invalid(format!(
                "at most {MAX_STORAGE_NODES} nodes may be added, got {}",
                self.max_added_nodes
            ));
        }
        if self.metadata_nodes == 0 || self.metadata_nodes > crate::runner::MAX_NODES {
            return invalid(format!(
                "metadata nodes must be in 1..={}, got {}",
                crate::runner::MAX_NODES,
                self.metadata_nodes
            ));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return invalid(format!(
                "concurrency must be in 1..={MAX_CONCURRENCY}, got {}",
                self.concurrency
            ));
        }
        if self.time.is_zero() || self.time > MAX_TIME {
            return invalid(format!("time must be in (0, 24h], got {:?}", self.time));
        }
        if self.op_timeout.is_zero() || self.final_read_timeout.is_zero() {
            return invalid("op timeout and final read timeout must be positive".to_owned());
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return invalid(format!(
                "rate must be a positive number of operations per second, got {}",
                self.rate
            ));
        }
        if !(0.0..=1.0).contains(&self.read_fraction) {
            return invalid(format!(
                "read fraction must be in [0, 1], got {}",
                self.read_fraction
            ));
        }
        if self.final_reads == 0 || self.final_reads > MAX_FINAL_READS {
            return invalid(format!(
                "final reads must be in 1..={MAX_FINAL_READS}, got {}",
                self.final_reads
            ));
        }
        if self.copy_batch_rows == 0 {
            return invalid("copy batch rows must be positive".to_owned());
        }
        let timing = self.nemesis_timing;
        if !timing.is_ordered() {
            return invalid(format!("nemesis timing ranges are inverted: {timing:?}"));
        }
        Ok(())
    }

    /// The healed phase at the end of the run: 20 % of the time, at least 3 s, at most all of it.
    pub fn healed_phase(&self) -> Duration {
        crate::schedule::healed_phase(self.time)
    }

    /// The part of the run in which faults may be in effect.
    pub fn fault_phase(&self) -> Duration {
        self.time - self.healed_phase()
    }

    /// The run's fault schedule; the same for the same configuration.
    pub fn plan(&self) -> Vec<PlannedSetFault> {
        plan_set_faults(
            &mut stream(self.seed, 0),
            &self.nemesis,
            SetClusterShape {
                initial_storage_nodes: self.storage_nodes as u64,
                metadata_nodes: self.metadata_nodes as u64,
                max_added_nodes: self.max_added_nodes as u64,
            },
            self.fault_phase(),
            self.nemesis_timing,
        )
    }

    fn cluster_options(&self) -> StorageClusterOptions {
        StorageClusterOptions {
            n_storage_nodes: self.storage_nodes,
            n_metadata_nodes: self.metadata_nodes,
            seed: self.seed,
            move_limits: MoveLimits {
                copy_batch_rows: self.copy_batch_rows,
                copy_pause: self.copy_pause,
                ..MoveLimits::default()
            },
            rebalance_timeout: self.rebalance_wait,
            ..StorageClusterOptions::default()
        }
        .unsafe_skip_catchup(self.unsafe_skip_catchup)
    }
}

/// The first line of a set history. It names no linearizability model, so the checker picks
/// lost writes (and timing) from `workload`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetHistoryHeader {
    /// Always [`HISTORY_FORMAT_VERSION`].
    pub helios_history: u64,
    /// Always `set`.
    pub workload: String,
    /// The seed that drove every random choice of the run.
    pub seed: u64,
    /// The initial storage nodes, then the metadata nodes; added nodes appear in `add-node`.
    pub nodes: Vec<String>,
    /// The table the ids are inserted into.
    pub table: String,
    /// The number of concurrent logical clients.
    pub concurrency: usize,
    /// The fault kinds the nemesis could choose from.
    pub nemesis: Vec<String>,
    /// Whether moves skipped the catch-up (a deliberately broken mode).
    pub unsafe_skip_catchup: bool,
}

/// One final read of the whole set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetFinalRead {
    /// The process that read it.
    pub process: u64,
    /// How many ids it returned, if a read succeeded.
    pub n_elements: Option<usize>,
    /// The attempts made.
    pub attempts: u32,
}

impl SetFinalRead {
    /// Whether the set was served after the heal.
    pub fn served(&self) -> bool {
        self.n_elements.is_some()
    }
}

/// What a set run produced.
#[derive(Debug, Clone)]
pub struct SetRunOutcome {
    /// The run's directory, `store_dir/set/<timestamp>/`.
    pub run_dir: PathBuf,
    /// The history, `run_dir/history.jsonl`.
    pub history_path: PathBuf,
    /// The number of events in the history.
    pub n_events: usize,
    /// The planned faults.
    pub n_faults_planned: usize,
    /// What the nemesis did.
    pub nemesis: SetNemesisReport,
    /// How the last move ended, in words (`completed`, `aborted`, ...), after the final wait.
    pub rebalance: String,
    /// The final reads.
    pub final_reads: Vec<SetFinalRead>,
    /// The wall time of the run, startup and shutdown included.
    pub wall_time: Duration,
}

/// Carries out one set run; see the module docs for its phases.
pub async fn run_set(
    config: &SetRunConfig,
    progress: Arc<RunProgress>,
) -> Result<SetRunOutcome, WorkloadError> {
    config.validate()?;
    let wall_start = Instant::now();
    let run_dir = create_run_dir(&config.store_dir.join("set"))?;
    let history_path = run_dir.join("history.jsonl");
    tracing::info!(seed = config.seed, dir = %run_dir.display(), "set run: starting the cluster");
    let cluster = StorageCluster::with_options(config.cluster_options())
        .await
        .map_err(|source| WorkloadError::Cluster {
            what: "start".to_owned(),
            source,
        })?;
    let result = drive(config, &cluster, &history_path, progress).await;
    tracing::info!("set run: shutting the cluster down");
    let _ = tokio::time::timeout(HEAL_CALL_TIMEOUT, cluster.shutdown()).await;
    let driven = result?;
    Ok(SetRunOutcome {
        run_dir,
        history_path,
        n_events: driven.n_events,
        n_faults_planned: driven.n_faults_planned,
        nemesis: driven.nemesis,
        rebalance: driven.rebalance,
        final_reads: driven.final_reads,
        wall_time: wall_start.elapsed(),
    })
}

struct Driven {
    n_events: usize,
    n_faults_planned: usize,
    nemesis: SetNemesisReport,
    rebalance: String,
    final_reads: Vec<SetFinalRead>,
}

async fn drive(
    config: &SetRunConfig,
    cluster: &StorageCluster,
    history_path: &std::path::Path,
    progress: Arc<RunProgress>,
) -> Result<Driven, WorkloadError> {
    cluster
        .try_create_table(SET_TABLE, SET_KEY_COLUMN)
        .await
        .map_err(|source| WorkloadError::Cluster {
            what: format!("create table {SET_TABLE}"),
            source,
        })?;
    let recorder = Arc::new(Recorder::create(
        history_path,
        &header(config),
        Instant::now(),
    )?);
    let start = recorder.start();
    let context = SetContext {
        cluster: cluster.clone(),
        recorder: Arc::clone(&recorder),
        op_timeout: config.op_timeout,
        op_interval: Duration::from_secs_f64(config.concurrency as f64 / config.rate),
        progress: Arc::clone(&progress),
    };

    // Fault phase, then healed phase: clients run throughout; the nemesis stops at the fault
    // phase's end, having undone every kill and partition it applied.
    let plan = config.plan();
    let n_faults_planned = plan.len();
    tracing::info!(
        faults = n_faults_planned,
        "set run: clients and nemesis starting"
    );
    let nemesis = tokio::spawn(run_set_nemesis(
        cluster.clone(),
        Arc::clone(&recorder),
        plan,
        start,
        Arc::clone(&progress),
    ));
    let deadline = start + config.time;
    let concurrency = config.concurrency as u64;
    let clients: Vec<_> = (0..concurrency)
        .map(|index| {
            let client = SetClient::new(
                index,
                concurrency,
                config.read_fraction,
                stream(config.seed, 1 + index),
            );
            tokio::spawn(client.run(context.clone(), deadline, config.max_ops))
        })
        .collect();
    let mut last_process = 0;
    for client in clients {
        let process = client
            .await
            .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?;
        last_process = last_process.max(process);
    }
    let nemesis_result = nemesis
        .await
        .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?;
    // Whatever the nemesis did, the final reads run on a healed cluster.
    heal_everything(cluster).await;
    let nemesis = nemesis_result?;

    tracing::info!("set run: healed; waiting for the last move");
    let rebalance = match cluster.wait_for_rebalancing_complete().await {
        RebalanceStatus::Idle => "none".to_owned(),
        RebalanceStatus::Completed(_) => "completed".to_owned(),
        RebalanceStatus::Aborted(progress) => format!(
            "rolled back ({})",
            progress
                .last_failure
                .unwrap_or_else(|| "no reason given".to_owned())
        ),
        RebalanceStatus::StillRunning(progress) => {
            format!(
                "still running after the wait, in phase {:?}",
                progress.phase
            )
        }
    };
    tracing::info!(rebalance, "set run: final reads");
    let final_reads = final_reads(&context, last_process + 1, config).await;
    drop(context);
    let recorder = Arc::into_inner(recorder)
        .expect("every client and the nemesis have finished, so the recorder has one owner");
    let events = recorder.finish()?;
    Ok(Driven {
        n_events: events.len(),
        n_faults_planned,
        nemesis,
        rebalance,
        final_reads,
    })
}

fn header(config: &SetRunConfig) -> SetHistoryHeader {
    let storage = (0..config.storage_nodes as u64).map(storage_node_name);
    let metadata = (0..config.metadata_nodes as u64).map(node_name);
    SetHistoryHeader {
        helios_history: HISTORY_FORMAT_VERSION,
        workload: "set".to_owned(),
        seed: config.seed,
        nodes: storage.chain(metadata).collect(),
        table: SET_TABLE.to_owned(),
        concurrency: config.concurrency,
        nemesis: config
            .nemesis
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        unsafe_skip_catchup: config.unsafe_skip_catchup,
    }
}

/// Reconnects every storage node, heals the metadata network, and restarts every storage node
/// that is down. The nemesis heals what it broke; this is the safety net for a nemesis that
/// stopped early.
async fn heal_everything(cluster: &StorageCluster) {
    cluster.heal_storage_network();
    let _ = tokio::time::timeout(HEAL_CALL_TIMEOUT, cluster.metadata().raft().heal()).await;
    for handle in cluster.node_handles() {
        let down = cluster.node(handle.id()).is_ok_and(|node| !node.is_up());
        if down {
            let restart = cluster.restart_node(handle.id());
            if let Ok(Err(error)) = tokio::time::timeout(HEAL_CALL_TIMEOUT, restart).await {
                tracing::warn!(node = handle.name(), %error, "set run: restart after the run failed");
            }
        }
    }
}

/// Reads the whole set `config.final_reads` times, each by a fresh process, retrying a read
/// that fails until one is `ok` or the final-read budget is spent.
async fn final_reads(
    context: &SetContext,
    first_process: u64,
    config: &SetRunConfig,
) -> Vec<SetFinalRead> {
    let deadline = Instant::now() + config.final_read_timeout;
    let mut reads = Vec::with_capacity(config.final_reads);
    for offset in 0..config.final_reads as u64 {
        let mut read = SetFinalRead {
            process: first_process + offset,
            n_elements: None,
            attempts: 0,
        };
        while read.attempts < MAX_FINAL_READ_ATTEMPTS
            && (read.attempts == 0 || Instant::now() < deadline)
        {
            read.attempts += 1;
            let completion =
                execute_set_op(context, Process::Client(read.process), SetOp::Read).await;
            if completion.event_type == EventType::Ok {
                read.n_elements = completion.value.as_array().map(Vec::len);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        reads.push(read);
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_header_names_no_model_so_the_checker_picks_lost_writes() {
        let config = SetRunConfig {
            seed: 4,
            ..SetRunConfig::default()
        };
        let header = serde_json::to_value(header(&config)).unwrap();
        assert_eq!(header["workload"], "set");
        assert_eq!(header["helios_history"], 1);
        assert_eq!(header["seed"], 4);
        assert!(header.get("model").is_none(), "{header}");
        assert_eq!(
            header["nodes"],
            serde_json::json!(["node_0", "node_1", "node_2", "m0", "m1", "m2"])
        );
    }

    #[test]
    fn set_configurations_out_of_bounds_are_refused() {
        let refused = |config: SetRunConfig| config.validate().unwrap_err().to_string();
        assert!(refused(SetRunConfig {
            final_reads: 0,
            ..SetRunConfig::default()
        })
        .contains("final reads"));
        assert!(refused(SetRunConfig {
            read_fraction: 1.5,
            ..SetRunConfig::default()
        })
        .contains("read fraction"));
        assert!(refused(SetRunConfig {
            storage_nodes: 0,
            ..SetRunConfig::default()
        })
        .contains("storage nodes"));
        SetRunConfig::default().validate().unwrap();
    }

    #[test]
    fn the_skip_catchup_mode_reaches_the_cluster_options() {
        let config = SetRunConfig {
            unsafe_skip_catchup: true,
            ..SetRunConfig::default()
        };
        assert!(config.cluster_options().move_limits.unsafe_skip_catchup);
        assert!(
            !SetRunConfig::default()
                .cluster_options()
                .move_limits
                .unsafe_skip_catchup
        );
    }
}
