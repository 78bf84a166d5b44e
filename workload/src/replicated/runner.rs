//! One seeded run of the register workload against the replicated store, from startup to the
//! final reads, leaving `history.jsonl` in a fresh run directory.
//!
//! Phases: the cluster starts and every shard's primary takes its lease; clients read and write
//! for `time` while the nemesis kills and isolates primaries, mirrors and witnesses during the
//! fault phase; the last 20 % (at least 3 s) is a healed phase in which the cluster must serve
//! again; then the network is healed, every node restarted, and each key read once more by a
//! fresh process (the final reads).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::replication::{ProtocolOptions, ReplicationCluster, ReplicationOptions};
use helios_cluster::NodeId;
use serde::Serialize;

use super::client::{execute, AckLog, ReplicatedClient, ReplicatedContext, ReplicatedOp};
use super::failover::{harness_recoveries, HarnessRecovery};
use super::nemesis::{bounded, run_replication_nemesis, AppliedFault};
use super::replica_node_name;
use super::schedule::{plan_replication_faults, PlannedReplicationFault, ReplicationFaultKind};
use super::target::SharedReplicaTarget;
use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::generator::register_keys;
use crate::history::{EventType, HISTORY_FORMAT_VERSION};
use crate::recorder::Recorder;
use crate::runner::{create_run_dir, stream, FinalRead, MAX_CONCURRENCY, MAX_TIME};
use crate::schedule::NemesisTiming;
use crate::target::TargetFuture;

/// Starts the cluster a run drives, given the run's directory (where a process cluster keeps
/// its data and logs).
pub type StartReplicaTarget = Box<
    dyn FnOnce(PathBuf) -> TargetFuture<'static, Result<SharedReplicaTarget, WorkloadError>> + Send,
>;

/// At most this many shards.
pub const MAX_SHARDS: usize = 8;
/// At most this many attempts are made for each key's final read.
pub const MAX_FINAL_READ_ATTEMPTS: u32 = 100;

/// Everything that defines a replicated register run. One `seed` drives every random choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicatedRunConfig {
    /// The faults the nemesis chooses from; empty for none.
    pub nemesis: Vec<ReplicationFaultKind>,
    /// How long clients invoke operations.
    pub time: Duration,
    /// The number of concurrent logical clients.
    pub concurrency: usize,
    /// The seed of every random choice (the schedule, the clients, the message bus).
    pub seed: u64,
    /// The number of shards, each a primary, a mirror and a witness.
    pub shards: usize,
    /// The number of registers; key `i` lives in shard `i % shards`.
    pub keys: usize,
    /// The bound on each client operation, redirects included. It is kept well below the
    /// failover time (about 250 ms): operations wait out any outage shorter than this and
    /// succeed, so such an outage disrupts nothing, and the checker, which measures recovery
    /// from disruptions, gives it an RTO of 0 where the harness sees the failover.
    pub op_timeout: Duration,
    /// Deliberately broken: acknowledge writes before the mirror has them.
    pub unsafe_async_replication: bool,
    /// Deliberately broken: no epoch fencing, so two primaries may accept writes.
    pub unsafe_no_fencing: bool,
    /// Runs are written under `store_dir/register/<timestamp>/`.
    pub store_dir: PathBuf,
    /// When faults start and how long they last.
    pub nemesis_timing: NemesisTiming,
    /// The target rate of invocations, all clients together, per second.
    pub rate: f64,
    /// The bound on client invocations over the whole run.
    pub max_ops: u64,
    /// How long the final reads may take, all keys together.
    pub final_read_timeout: Duration,
    /// A fixed fault schedule (a chaos scenario's), used instead of the seeded schedule of
    /// `nemesis`. Its faults must not overlap, must end within the fault phase, and must name
    /// shards of the run.
    pub schedule: Option<Vec<PlannedReplicationFault>>,
}

impl Default for ReplicatedRunConfig {
    fn default() -> Self {
        ReplicatedRunConfig {
            nemesis: vec![
                ReplicationFaultKind::KillPrimary,
                ReplicationFaultKind::IsolatePrimary,
            ],
            time: Duration::from_secs(30),
            concurrency: 10,
            seed: 0,
            shards: 1,
            keys: 5,
            op_timeout: Duration::from_millis(40),
            unsafe_async_replication: false,
            unsafe_no_fencing: false,
            store_dir: PathBuf::from("store"),
            // Failover takes about 300 ms; faults last long enough to see it end, and the quiet
            // time lets a restarted primary rejoin and catch up before the next fault.
            nemesis_timing: NemesisTiming {
                interval_min: Duration::from_millis(1000),
                interval_max: Duration::from_millis(2500),
                duration_min: Duration::from_millis(800),
                duration_max: Duration::from_millis(2000),
            },
            rate: 1000.0,
            max_ops: 2_000_000,
            final_read_timeout: Duration::from_secs(15),
            schedule: None,
        }
    }
}

impl ReplicatedRunConfig {
    /// Refuses configurations that cannot run or would not be bounded.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let invalid = |message: String| Err(WorkloadError::InvalidConfig(message));
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return invalid(format!(
                "shards must be in 1..={MAX_SHARDS}, got {}",
                self.shards
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
        if self.keys == 0 {
            return invalid("keys must be positive".to_owned());
        }
        let timing = self.nemesis_timing;
        if !timing.is_ordered() {
            return invalid(format!("nemesis timing ranges are inverted: {timing:?}"));
        }
        if let Some(schedule) = &self.schedule {
            let mut previous_end = Duration::ZERO;
            for fault in schedule {
                if fault.start < previous_end
                    || fault.start >= fault.end
                    || fault.end > self.fault_phase()
                    || fault.shard >= self.shards
                {
                    return invalid(format!(
                        "scheduled fault {fault:?} overlaps the one before, is empty, ends \
                         after the fault phase ({:?}) or names no shard of the run",
                        self.fault_phase()
                    ));
                }
                previous_end = fault.end;
            }
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
    pub fn plan(&self) -> Vec<PlannedReplicationFault> {
        if let Some(schedule) = &self.schedule {
            return schedule.clone();
        }
        plan_replication_faults(
            &mut stream(self.seed, 0),
            &self.nemesis,
            self.shards,
            self.fault_phase(),
            self.nemesis_timing,
        )
    }

    /// The cluster's options: the protocol's defaults plus the broken modes asked for.
    pub fn cluster_options(&self) -> ReplicationOptions {
        ReplicationOptions {
            shards: self.shards,
            seed: self.seed,
            protocol: ProtocolOptions {
                unsafe_async_replication: self.unsafe_async_replication,
                unsafe_no_fencing: self.unsafe_no_fencing,
                ..ProtocolOptions::default()
            },
            request_timeout: self.op_timeout,
            ..ReplicationOptions::default()
        }
    }
}

/// The first line of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicatedHistoryHeader {
    /// Always [`HISTORY_FORMAT_VERSION`].
    pub helios_history: u64,
    /// `register`.
    pub workload: String,
    /// The cluster driven: `replication` (in-process) or `processes`.
    pub target: String,
    /// The run's seed.
    pub seed: u64,
    /// Every node (`r0`, ...); shard `s` has `r{3s}`, `r{3s+1}` (data) and `r{3s+2}` (witness).
    pub nodes: Vec<String>,
    /// `register(nil)`: reads and writes only, every register empty at first.
    pub model: String,
    /// The registers.
    pub keys: Vec<String>,
    /// The shard of each key, in `keys` order.
    pub key_shards: Vec<usize>,
    /// The number of concurrent logical clients.
    pub concurrency: usize,
    /// The fault kinds the nemesis could choose from.
    pub nemesis: Vec<String>,
    /// Whether writes were acknowledged before the mirror had them (broken mode).
    pub unsafe_async_replication: bool,
    /// Whether epochs were not fenced (broken mode).
    pub unsafe_no_fencing: bool,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct ReplicatedRunOutcome {
    /// The run's directory, `store_dir/register/<timestamp>/`.
    pub run_dir: PathBuf,
    /// The history, `run_dir/history.jsonl`.
    pub history_path: PathBuf,
    /// The number of events in the history.
    pub n_events: usize,
    /// The planned faults.
    pub n_faults_planned: usize,
    /// The faults as applied.
    pub faults: Vec<AppliedFault>,
    /// The harness's own recovery measurement of each fault.
    pub harness_recoveries: Vec<HarnessRecovery>,
    /// The final read of each key.
    pub final_reads: Vec<FinalRead>,
    /// The wall time of the run, startup and shutdown included.
    pub wall_time: Duration,
}

/// Carries out one run on the in-process cluster; see the module docs for its phases.
pub async fn run_replicated(
    config: &ReplicatedRunConfig,
    progress: Arc<RunProgress>,
) -> Result<ReplicatedRunOutcome, WorkloadError> {
    let options = config.cluster_options();
    let start: StartReplicaTarget = Box::new(move |_run_dir| {
        Box::pin(async move {
            let cluster = ReplicationCluster::with_options(options).await;
            Ok(Arc::new(cluster) as SharedReplicaTarget)
        })
    });
    run_replicated_on(config, progress, start).await
}

/// Carries out one run on the cluster `start` starts (its shard count must be the config's),
/// and stops that cluster on every path once it has started.
pub async fn run_replicated_on(
    config: &ReplicatedRunConfig,
    progress: Arc<RunProgress>,
    start: StartReplicaTarget,
) -> Result<ReplicatedRunOutcome, WorkloadError> {
    config.validate()?;
    let wall_start = Instant::now();
    let run_dir = create_run_dir(&config.store_dir.join("register"))?;
    let history_path = run_dir.join("history.jsonl");
    tracing::info!(seed = config.seed, dir = %run_dir.display(), "replicated run: starting");
    let cluster = start(run_dir.clone()).await?;
    let result = if cluster.shard_count() == config.shards {
        drive(config, &cluster, &history_path, progress).await
    } else {
        Err(WorkloadError::InvalidConfig(format!(
            "the run asks for {} shards; the cluster has {}",
            config.shards,
            cluster.shard_count()
        )))
    };
    cluster.shutdown().await;
    let driven = result?;
    Ok(ReplicatedRunOutcome {
        run_dir,
        history_path,
        n_events: driven.n_events,
        n_faults_planned: driven.n_faults_planned,
        harness_recoveries: harness_recoveries(&driven.faults, &driven.acks.sorted()),
        faults: driven.faults,
        final_reads: driven.final_reads,
        wall_time: wall_start.elapsed(),
    })
}

struct Driven {
    n_events: usize,
    n_faults_planned: usize,
    faults: Vec<AppliedFault>,
    acks: Arc<AckLog>,
    final_reads: Vec<FinalRead>,
}

async fn drive(
    config: &ReplicatedRunConfig,
    cluster: &SharedReplicaTarget,
    history_path: &Path,
    progress: Arc<RunProgress>,
) -> Result<Driven, WorkloadError> {
    let keys = register_keys(config.keys);
    let recorder = Arc::new(Recorder::create(
        history_path,
        &header(config, &keys, cluster.name()),
        Instant::now(),
    )?);
    let start = recorder.start();
    let acks = Arc::new(AckLog::with_capacity(config.max_ops as usize));
    let context = ReplicatedContext {
        cluster: Arc::clone(cluster),
        recorder: Arc::clone(&recorder),
        op_timeout: config.op_timeout,
        op_interval: Duration::from_secs_f64(config.concurrency as f64 / config.rate),
        keys: keys.clone(),
        progress: Arc::clone(&progress),
        acks: Arc::clone(&acks),
    };
    let plan = config.plan();
    let n_faults_planned = plan.len();
    tracing::info!(
        faults = n_faults_planned,
        "replicated run: clients and nemesis starting"
    );
    let nemesis = tokio::spawn(run_replication_nemesis(
        Arc::clone(cluster),
        Arc::clone(&recorder),
        plan,
        start,
        Arc::clone(&progress),
    ));
    let deadline = start + config.time;
    let concurrency = config.concurrency as u64;
    let clients: Vec<_> = (0..concurrency)
        .map(|index| {
            let client = ReplicatedClient::new(index, concurrency, stream(config.seed, 1 + index));
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
    let faults = nemesis
        .await
        .map_err(|error| WorkloadError::TaskFailed(error.to_string()))??;
    // Whatever the nemesis did, the final reads run on a healed cluster.
    let healed = async {
        cluster.heal().await?;
        cluster.restore_all().await
    };
    bounded("heal", healed)
        .await?
        .map_err(|error| WorkloadError::TaskFailed(format!("heal before final reads: {error}")))?;
    tracing::info!("replicated run: healed; final reads");
    let final_reads = final_reads(&context, last_process + 1, config).await;
    drop(context);
    let recorder = Arc::into_inner(recorder)
        .expect("every client and the nemesis have finished, so the recorder has one owner");
    let events = recorder.finish()?;
    Ok(Driven {
        n_events: events.len(),
        n_faults_planned,
        faults,
        acks,
        final_reads,
    })
}

fn header(config: &ReplicatedRunConfig, keys: &[String], target: &str) -> ReplicatedHistoryHeader {
    ReplicatedHistoryHeader {
        helios_history: HISTORY_FORMAT_VERSION,
        workload: "register".to_owned(),
        target: target.to_owned(),
        seed: config.seed,
        nodes: (0..3 * config.shards as NodeId)
            .map(replica_node_name)
            .collect(),
        model: "register(nil)".to_owned(),
        keys: keys.to_vec(),
        key_shards: (0..keys.len()).map(|i| i % config.shards).collect(),
        concurrency: config.concurrency,
        nemesis: config
            .nemesis
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        unsafe_async_replication: config.unsafe_async_replication,
        unsafe_no_fencing: config.unsafe_no_fencing,
    }
}

/// Reads every key once more, each by a fresh process starting at the shard's primary, retrying
/// failed reads until one is `ok` or the budget is spent.
async fn final_reads(
    context: &ReplicatedContext,
    first_process: u64,
    config: &ReplicatedRunConfig,
) -> Vec<FinalRead> {
    let deadline = Instant::now() + config.final_read_timeout;
    let mut reads = Vec::with_capacity(context.keys.len());
    for (offset, key) in context.keys.iter().enumerate() {
        let process = first_process + offset as u64;
        let op = ReplicatedOp {
            key: key.clone(),
            shard: context.shard_of(offset),
            write: None,
        };
        let mut read = FinalRead {
            key: key.clone(),
            process,
            value: None,
            attempts: 0,
        };
        while read.attempts < MAX_FINAL_READ_ATTEMPTS
            && (read.attempts == 0 || Instant::now() < deadline)
        {
            read.attempts += 1;
            let primary = context.cluster.primary_id(op.shard).await;
            let completion = execute(context, process, &op, primary).await;
            if completion.event_type == EventType::Ok {
                read.value = Some(completion.value);
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
    fn the_default_run_kills_and_isolates_primaries_with_short_operations() {
        let config = ReplicatedRunConfig::default();
        config.validate().unwrap();
        assert!(config.op_timeout < Duration::from_millis(50));
        assert!(!config.plan().is_empty());
        assert_eq!(config.plan(), config.clone().plan());
        let options = config.cluster_options();
        assert!(!options.protocol.unsafe_async_replication && !options.protocol.unsafe_no_fencing);
        let zero = ReplicatedRunConfig {
            shards: 0,
            ..ReplicatedRunConfig::default()
        };
        assert!(zero.validate().is_err());
    }
}
