//! The runner: one seeded run of a workload against a cluster, from startup to the final reads,
//! leaving `history.jsonl` in a fresh run directory. The cluster is the embedded one ([`run`]) or
//! any [`FaultTarget`] ([`run_on`]): processes on loopback, containers.
//!
//! Phases: the cluster starts and elects a leader; clients run for `time` while the nemesis
//! injects faults during the fault phase; the last part of the run (20 %, at least 3 s) is a
//! healed phase in which the cluster must serve again; then each key is read once more by a
//! fresh process (the final reads), and the cluster shuts down.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use helios_cluster::{ClusterOptions, RaftTestCluster};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::client::{execute, Client, ClientContext, RunProgress};
use crate::error::WorkloadError;
use crate::generator::{register_keys, RegisterGenerator, RegisterOp};
use crate::history::{node_name, EventType, HistoryHeader, Process, HISTORY_FORMAT_VERSION};
use crate::nemesis::run_nemesis;
use crate::recorder::Recorder;
use crate::schedule::{plan_faults, NemesisKind, NemesisTiming, PlannedFault};
use crate::target::{FaultTarget, TargetFuture};

/// The workloads `helios run` supports.
pub const SUPPORTED_WORKLOADS: [&str; 1] = ["register"];

/// Upper bounds that keep a run finite whatever its configuration says.
pub const MAX_NODES: usize = 9;
/// See [`MAX_NODES`].
pub const MAX_CONCURRENCY: usize = 1_000;
/// See [`MAX_NODES`].
pub const MAX_TIME: Duration = Duration::from_secs(24 * 3600);

/// The bound on stopping the cluster at the end of a run.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the cluster may take to elect its first leader.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// At most this many attempts are made for each key's final read.
pub const MAX_FINAL_READ_ATTEMPTS: u32 = 100;

/// Everything that defines a run. One `seed` drives every random choice.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// The workload's name; only `register` for now.
    pub workload: String,
    /// The fault kinds the nemesis chooses from; empty for none.
    pub nemesis: Vec<NemesisKind>,
    /// How long clients invoke operations.
    pub time: Duration,
    /// The number of concurrent logical clients.
    pub concurrency: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// The number of metadata nodes.
    pub nodes: usize,
    /// Let followers serve reads from their local state: deliberately broken, a test aid.
    pub unsafe_stale_reads: bool,
    /// The bound on each client operation.
    pub op_timeout: Duration,
    /// Runs are written under `store_dir/<workload>/<timestamp>/`.
    pub store_dir: PathBuf,
    /// The number of registers.
    pub keys: usize,
    /// Written values are drawn from `0..value_count`.
    pub value_count: i64,
    /// When faults start and how long they last.
    pub nemesis_timing: NemesisTiming,
    /// The target rate of invocations, all clients together, in operations per second.
    pub rate: f64,
    /// The bound on client invocations over the whole run.
    pub max_ops: u64,
    /// A fault schedule that replaces the seeded one (the chaos suite's scenarios); `None` for
    /// the seeded schedule of `nemesis`. Its faults must not overlap and must end within the
    /// fault phase.
    pub schedule: Option<Vec<PlannedFault>>,
    /// How long the final reads may take, all keys together.
    pub final_read_timeout: Duration,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            workload: "register".to_owned(),
            nemesis: vec![
                NemesisKind::Partition,
                NemesisKind::Kill,
                NemesisKind::Pause,
            ],
            time: Duration::from_secs(30),
            concurrency: 10,
            seed: 0,
            nodes: 5,
            unsafe_stale_reads: false,
            op_timeout: Duration::from_secs(1),
            store_dir: PathBuf::from("store"),
            keys: 5,
            value_count: 5,
            nemesis_timing: NemesisTiming::default(),
            rate: 1000.0,
            max_ops: 2_000_000,
            schedule: None,
            final_read_timeout: Duration::from_secs(15),
        }
    }
}

impl RunConfig {
    /// Refuses configurations that cannot run or would not be bounded.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if !SUPPORTED_WORKLOADS.contains(&self.workload.as_str()) {
            return Err(WorkloadError::UnknownWorkload {
                name: self.workload.clone(),
                supported: SUPPORTED_WORKLOADS.join(", "),
            });
        }
        let invalid = |message: String| Err(WorkloadError::InvalidConfig(message));
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return invalid(format!(
                "nodes must be in 1..={MAX_NODES}, got {}",
                self.nodes
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
        if self.keys == 0 || self.value_count <= 0 {
            return invalid("keys and value count must be positive".to_owned());
        }
        let timing = self.nemesis_timing;
        if !timing.is_ordered() {
            return invalid(format!("nemesis timing ranges are inverted: {timing:?}"));
        }
        if let Some(schedule) = &self.schedule {
            let mut previous_end = Duration::ZERO;
            for fault in schedule {
                if fault.start < previous_end || fault.end <= fault.start {
                    return invalid(format!("schedule: {fault:?} overlaps or is empty"));
                }
                if fault.end > self.fault_phase() {
                    return invalid(format!(
                        "schedule: {fault:?} ends after the fault phase ({:?})",
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
    pub fn plan(&self) -> Vec<PlannedFault> {
        if let Some(schedule) = &self.schedule {
            return schedule.clone();
        }
        plan_faults(
            &mut stream(self.seed, 0),
            &self.nemesis,
            self.nodes as u64,
            self.fault_phase(),
            self.nemesis_timing,
        )
    }
}

/// The seeded random stream number `stream_id` of a run: 0 for the nemesis, then two per client.
pub(crate) fn stream(seed: u64, stream_id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream_id);
    rng
}

/// One key's final read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinalRead {
    /// The register.
    pub key: String,
    /// The process that read it.
    pub process: u64,
    /// The value read, if a read succeeded.
    pub value: Option<serde_json::Value>,
    /// The attempts made.
    pub attempts: u32,
}

impl FinalRead {
    /// Whether the key was served after the heal.
    pub fn served(&self) -> bool {
        self.value.is_some()
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run's directory, `store_dir/<workload>/<timestamp>/`.
    pub run_dir: PathBuf,
    /// The history, `run_dir/history.jsonl`.
    pub history_path: PathBuf,
    /// The number of events in the history.
    pub n_events: usize,
    /// The planned faults.
    pub n_faults_planned: usize,
    /// The faults applied.
    pub n_faults_applied: usize,
    /// The final read of each key.
    pub final_reads: Vec<FinalRead>,
    /// The wall time of the run, startup and shutdown included.
    pub wall_time: Duration,
    /// The kind of cluster driven: `embedded`, `processes` or `docker`.
    pub target: &'static str,
}

/// Starts the cluster of a run, given the run's directory (where a target may keep its data
/// directories and logs).
pub type StartTarget = Box<
    dyn FnOnce(PathBuf) -> TargetFuture<'static, Result<Arc<dyn FaultTarget>, WorkloadError>>
        + Send,
>;

/// Carries out one run on the embedded cluster; see the module docs for its phases.
pub async fn run(
    config: &RunConfig,
    progress: Arc<RunProgress>,
) -> Result<RunOutcome, WorkloadError> {
    let options = ClusterOptions {
        size: config.nodes,
        seed: config.seed,
        unsafe_stale_reads: config.unsafe_stale_reads,
        ..ClusterOptions::default()
    };
    let start: StartTarget = Box::new(move |_run_dir| {
        Box::pin(async move {
            let cluster = RaftTestCluster::with_options(options).await;
            Ok(Arc::new(cluster) as Arc<dyn FaultTarget>)
        })
    });
    run_on(config, progress, start).await
}

/// Carries out one run on the cluster that `start` starts, and stops that cluster on every path
/// once it has started.
pub async fn run_on(
    config: &RunConfig,
    progress: Arc<RunProgress>,
    start: StartTarget,
) -> Result<RunOutcome, WorkloadError> {
    config.validate()?;
    let wall_start = Instant::now();
    let run_dir = create_run_dir(&config.store_dir.join(&config.workload))?;
    let history_path = run_dir.join("history.jsonl");
    tracing::info!(seed = config.seed, dir = %run_dir.display(), "run: starting the cluster");

    let cluster = start(run_dir.clone()).await?;
    let result = match check_target(config, cluster.as_ref()) {
        Ok(()) => drive(config, &cluster, &history_path, progress).await,
        Err(error) => Err(error),
    };
    tracing::info!(target = cluster.name(), "run: shutting the cluster down");
    let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, cluster.shutdown()).await;
    let (events, n_faults_planned, n_faults_applied, final_reads) = result?;
    Ok(RunOutcome {
        run_dir,
        history_path,
        n_events: events.len(),
        n_faults_planned,
        n_faults_applied,
        final_reads,
        wall_time: wall_start.elapsed(),
        target: cluster.name(),
    })
}

/// Refuses a target that does not match the configuration or cannot make its faults.
fn check_target(config: &RunConfig, cluster: &dyn FaultTarget) -> Result<(), WorkloadError> {
    if cluster.node_count() != config.nodes as u64 {
        return Err(WorkloadError::InvalidConfig(format!(
            "the {} cluster has {} nodes, the run expects {}",
            cluster.name(),
            cluster.node_count(),
            config.nodes
        )));
    }
    let adds_nodes = config.schedule.iter().flatten().any(|fault| {
        matches!(
            fault.action,
            crate::schedule::FaultAction::PartitionAddNode { .. }
        )
    });
    if adds_nodes && !cluster.supports_add_node() {
        return Err(WorkloadError::InvalidConfig(format!(
            "the {} cluster cannot add nodes, which the schedule asks for",
            cluster.name()
        )));
    }
    if config.nemesis.contains(&NemesisKind::MajoritiesRing) && !cluster.supports_links() {
        return Err(WorkloadError::InvalidConfig(format!(
            "the {} cluster cannot block single links, so it cannot make a majorities ring",
            cluster.name()
        )));
    }
    Ok(())
}

type Driven = (Vec<crate::history::Event>, usize, usize, Vec<FinalRead>);

async fn drive(
    config: &RunConfig,
    cluster: &Arc<dyn FaultTarget>,
    history_path: &Path,
    progress: Arc<RunProgress>,
) -> Result<Driven, WorkloadError> {
    wait_for_leader(cluster.as_ref()).await?;
    let keys = register_keys(config.keys);
    let recorder = Arc::new(Recorder::create(
        history_path,
        &header(config, &keys),
        Instant::now(),
    )?);
    let start = recorder.start();
    let context = ClientContext {
        cluster: Arc::clone(cluster),
        recorder: Arc::clone(&recorder),
        op_timeout: config.op_timeout,
        op_interval: Duration::from_secs_f64(config.concurrency as f64 / config.rate),
        progress: Arc::clone(&progress),
    };

    // Fault phase, then healed phase: clients run throughout; the nemesis stops at the fault
    // phase's end, having undone every fault it applied.
    let plan = config.plan();
    let n_faults_planned = plan.len();
    tracing::info!(
        faults = n_faults_planned,
        "run: clients and nemesis starting"
    );
    let nemesis = tokio::spawn(run_nemesis(
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
            let generator = RegisterGenerator::new(
                stream(config.seed, 1 + 2 * index),
                keys.clone(),
                config.value_count,
            );
            let client = Client::new(
                index,
                concurrency,
                generator,
                stream(config.seed, 2 + 2 * index),
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
    // Whatever the nemesis did, the final reads run on a healed network.
    if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(15), cluster.heal()).await {
        tracing::warn!(%error, "run: the final heal failed");
    }
    let n_faults_applied = nemesis_result?;

    tracing::info!("run: healed; final reads");
    let final_reads = final_reads(&context, &keys, last_process + 1, config).await;
    drop(context);
    let recorder = Arc::into_inner(recorder)
        .expect("every client and the nemesis have finished, so the recorder has one owner");
    let events = recorder.finish()?;
    Ok((events, n_faults_planned, n_faults_applied, final_reads))
}

fn header(config: &RunConfig, keys: &[String]) -> HistoryHeader {
    HistoryHeader {
        helios_history: HISTORY_FORMAT_VERSION,
        workload: config.workload.clone(),
        seed: config.seed,
        nodes: (0..config.nodes as u64).map(node_name).collect(),
        model: "cas-register(nil)".to_owned(),
        keys: keys.to_vec(),
        concurrency: config.concurrency,
        nemesis: config
            .nemesis
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        unsafe_stale_reads: config.unsafe_stale_reads,
    }
}

async fn wait_for_leader(cluster: &dyn FaultTarget) -> Result<(), WorkloadError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        if cluster.current_leader().await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(WorkloadError::ClusterNotReady {
        timeout_ms: STARTUP_TIMEOUT.as_millis() as u64,
    })
}

/// Reads every key once more, each by a fresh process, retrying failed reads until one is `ok`
/// or the final-read budget is spent. Reads that error are recorded `fail`, so a process may retry.
async fn final_reads(
    context: &ClientContext,
    keys: &[String],
    first_process: u64,
    config: &RunConfig,
) -> Vec<FinalRead> {
    let deadline = Instant::now() + config.final_read_timeout;
    let mut rng = stream(config.seed, u64::MAX);
    let mut reads = Vec::new();
    for (offset, key) in keys.iter().enumerate() {
        let process = first_process + offset as u64;
        let op = RegisterOp::Read { key: key.clone() };
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
            let node = match context.cluster.current_leader().await {
                Some(leader) => leader,
                None => rng.gen_range(0..context.cluster.node_count()),
            };
            let completion = execute(context, Process::Client(process), node, &op).await;
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

/// Creates a fresh `parent/<timestamp>` directory, e.g. `20251126T081800.123Z`.
pub(crate) fn create_run_dir(parent: &Path) -> Result<PathBuf, WorkloadError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| WorkloadError::Io { path, source }
    };
    std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    let stamp: String = humantime::format_rfc3339_millis(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    for attempt in 0..1000 {
        let name = if attempt == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{attempt}")
        };
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(io_error(&dir)(error)),
        }
    }
    Err(WorkloadError::InvalidConfig(format!(
        "{}: too many runs with the same timestamp",
        parent.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_healed_phase_is_a_fifth_of_the_run_and_at_least_three_seconds() {
        let config = |secs| RunConfig {
            time: Duration::from_secs(secs),
            ..RunConfig::default()
        };
        assert_eq!(config(30).healed_phase(), Duration::from_secs(6));
        assert_eq!(config(10).healed_phase(), Duration::from_secs(3));
        assert_eq!(config(2).healed_phase(), Duration::from_secs(2));
        assert_eq!(config(2).fault_phase(), Duration::ZERO);
        assert!(config(2).plan().is_empty());
    }

    #[test]
    fn unknown_workloads_are_refused_with_the_supported_list() {
        let config = RunConfig {
            workload: "bank".to_owned(),
            ..RunConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert_eq!(
            error,
            "unknown workload \"bank\": supported workloads are register"
        );
    }

    #[test]
    fn run_directories_are_fresh_even_within_one_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let a = create_run_dir(dir.path()).unwrap();
        let b = create_run_dir(dir.path()).unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
    }

    #[test]
    fn the_plan_depends_only_on_the_configuration() {
        let config = RunConfig {
            seed: 99,
            ..RunConfig::default()
        };
        assert_eq!(config.plan(), config.clone().plan());
        assert!(!config.plan().is_empty());
    }
}
