//! The compute workloads' nemesis on processes: on the planned schedule it kills and restarts,
//! or pauses and resumes, a compute node process (a reader of the cache workload; any node of
//! the transactional ones, whose open transactions it cuts off midway), kills and restarts a
//! shard's current primary data member, isolates a shard member from its shard and heals, or
//! kills, pauses or partitions the metadata group, which holds the commit records. Named alone,
//! `add-shard` adds a replicated shard and moves its rows to it while the clients run.
//! Each fault and heal is recorded as an `info` event of process `"nemesis"` before it is
//! applied, with the values the in-process nemesis ([`super::nemesis`]) writes, so the checker
//! pairs them alike.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::metadata::NodeId;
use helios_cluster::process::{compute_process, member_process, LocalCluster, LocalClusterError};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::config::TxnWorkload;
use super::nemesis::{record, TxnNemesisReport};
use super::schedule::{PlannedTxnFault, TxnNemesisKind};
use super::sql_node::compute_node_name;
use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::{node_name, Function};
use crate::nemesis::bounded;
use crate::recorder::Recorder;
use crate::replicated::replica_node_name;

/// The faults the nemesis makes on processes, in [`TxnNemesisKind`]'s terms: `kill-compute`
/// and `pause-compute` hit a compute node (for the cache workload a reader, never node 0,
/// through which every cache write goes; for the transactional workloads any node, with the
/// transactions it coordinates open: a kill leaves their locks for other writers to abort, a
/// pause makes them look abandoned), `kill-storage` a shard's primary data member,
/// `partition-storage` any shard member, `kill-metadata` and `pause-metadata` any metadata node
/// (SIGKILL and restart, SIGSTOP and SIGCONT), `partition-metadata` splits the metadata group
/// into two halves through the nodes' peer filters.
pub const PROCESS_NEMESIS_KINDS: [TxnNemesisKind; 7] = [
    TxnNemesisKind::KillCompute,
    TxnNemesisKind::PauseCompute,
    TxnNemesisKind::KillStorage,
    TxnNemesisKind::PartitionStorage,
    TxnNemesisKind::KillMetadata,
    TxnNemesisKind::PauseMetadata,
    TxnNemesisKind::PartitionMetadata,
];

/// The faults processes support that are named alone, outside the default and `all`: adding a
/// shard (three more processes each time) changes the cluster for the rest of the run.
pub const PROCESS_NAMED_KINDS: [TxnNemesisKind; 1] = [TxnNemesisKind::AddShard];

/// The bound on adding a shard and moving its rows (inside the nemesis's bound on one call).
const ADD_SHARD_BOUND: Duration = Duration::from_secs(12);

/// The bound on finding a shard's primary before killing it.
const PRIMARY_BOUND: Duration = Duration::from_secs(3);

/// How long the processes may take to stop at the end of a run (SIGTERM, then SIGKILL).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Parses `--nemesis` for a run on processes: the default (`None`) is every kind processes
/// support; `kill`, `pause`, `partition` and `all` stand for the supported kinds among theirs;
/// a kind named alone that processes do not support is refused by name.
pub fn parse_process_nemesis(list: Option<&str>) -> Result<Vec<TxnNemesisKind>, WorkloadError> {
    let Some(list) = list else {
        return Ok(PROCESS_NEMESIS_KINDS.to_vec());
    };
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let parsed = TxnNemesisKind::parse_list(name)?;
        let group = matches!(name, "kill" | "pause" | "partition" | "all" | "none");
        for kind in parsed {
            if PROCESS_NEMESIS_KINDS.contains(&kind) || PROCESS_NAMED_KINDS.contains(&kind) {
                kinds.push(kind);
            } else if !group {
                let supported: Vec<&str> =
                    PROCESS_NEMESIS_KINDS.iter().map(|k| k.as_str()).collect();
                return Err(WorkloadError::InvalidConfig(format!(
                    "nemesis {name} runs on the embedded cluster only; on processes the compute \
                     workloads' faults are {}",
                    supported.join(", ")
                )));
            }
        }
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// The processes of a run: its metadata group, compute nodes and replicated shards. Client
/// operations never take the lock, so a slow fault call (a reap after SIGKILL) does not hold
/// them up.
#[derive(Debug, Clone)]
pub struct TxnProcesses {
    cluster: Arc<Mutex<LocalCluster>>,
    /// The metadata node ids (1-based; histories name node `i` `m{i-1}`, as in process).
    metadata: Vec<NodeId>,
    n_compute: u32,
    /// Grows when the nemesis adds a shard.
    n_shards: Arc<AtomicUsize>,
    /// The first compute node the nemesis may hit: 1 for the cache workload, whose writes all
    /// go through node 0; 0 otherwise.
    first_target: u32,
}

/// A fault in effect, with what it takes to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ActiveFault {
    /// A compute, member or metadata process was killed: restart it.
    Killed(NodeId, Value),
    /// A compute or metadata process was paused: resume it.
    Paused(NodeId, Value),
    /// Peer filters cut a shard member or the metadata group: empty them.
    Partitioned,
    /// A shard was added: it stays.
    ShardAdded,
}

impl TxnProcesses {
    /// Takes ownership of `cluster`, which runs `workload`.
    pub fn new(cluster: LocalCluster, workload: TxnWorkload) -> Self {
        let n_compute = cluster.compute_nodes().len() as u32;
        let n_shards = cluster.shard_count();
        let first_target = u32::from(workload == TxnWorkload::Cache);
        assert!(
            n_compute > first_target,
            "{} on {n_compute} compute nodes leaves none to fault",
            workload.as_str()
        );
        TxnProcesses {
            metadata: cluster.ids(),
            cluster: Arc::new(Mutex::new(cluster)),
            n_compute,
            n_shards: Arc::new(AtomicUsize::new(n_shards)),
            first_target,
        }
    }

    fn shards(&self) -> usize {
        self.n_shards.load(Ordering::SeqCst)
    }

    /// The cluster, for calls that do not block.
    pub fn cluster(&self) -> &Mutex<LocalCluster> {
        &self.cluster
    }

    /// Runs a blocking call on the cluster (a SIGKILL waits, bounded, for the reap) off the
    /// runtime's workers.
    async fn blocking(
        &self,
        call: impl FnOnce(&mut LocalCluster) -> Result<(), LocalClusterError> + Send + 'static,
    ) -> Result<(), LocalClusterError> {
        let mut guard = Arc::clone(&self.cluster).lock_owned().await;
        match tokio::task::spawn_blocking(move || call(&mut guard)).await {
            Ok(result) => result,
            Err(error) => Err(LocalClusterError::Io {
                what: "fault task".to_owned(),
                source: std::io::Error::other(error.to_string()),
            }),
        }
    }

    /// Every metadata node, compute node and shard member process, by process id.
    fn fault_targets(&self) -> Vec<NodeId> {
        let members = (0..3 * self.shards() as NodeId).map(member_process);
        self.metadata
            .iter()
            .copied()
            .chain(members)
            .chain((0..self.n_compute).map(compute_process))
            .collect()
    }

    /// The metadata node a fault hits: its process id and history name.
    fn pick_metadata(&self, pick: u64) -> (NodeId, String) {
        let id = self.metadata[(pick % self.metadata.len() as u64) as usize];
        (id, node_name(id - 1))
    }

    /// Undoes every fault, whatever the nemesis left: resumes paused processes, restarts dead
    /// ones, and empties every peer filter. The nemesis heals what it broke; this is the safety
    /// net for a nemesis that stopped early.
    pub async fn restore_all(&self) -> Result<(), LocalClusterError> {
        for id in self.fault_targets() {
            self.blocking(move |cluster| {
                if cluster.is_paused(id) {
                    cluster.resume(id)?;
                }
                if !cluster.is_running(id) {
                    cluster.restart(id)?;
                }
                Ok(())
            })
            .await?;
        }
        self.cluster.lock().await.heal().await
    }

    /// Stops every process, and removes the data directories (the run keeps the logs and
    /// `cluster.json`).
    pub async fn stop(&self) {
        let stopped = self
            .blocking(|cluster| {
                for (id, outcome) in cluster.stop(STOP_GRACE) {
                    tracing::info!(node = id, ?outcome, "process stopped");
                }
                for node in &cluster.manifest().nodes {
                    if let Err(error) = std::fs::remove_dir_all(&node.data_dir) {
                        tracing::debug!(%error, dir = %node.data_dir.display(), "data directory not removed");
                    }
                }
                Ok(())
            })
            .await;
        if let Err(error) = stopped {
            tracing::error!(%error, "stopping the processes failed");
        }
    }

    /// The compute node a fault hits (never the cache's writer node): its index and process id.
    fn pick_compute(&self, pick: u64) -> (u32, NodeId) {
        let targets = u64::from(self.n_compute - self.first_target);
        let index = self.first_target + (pick % targets) as u32;
        (index, compute_process(index))
    }

    /// Resolves the fault's target, records it, and applies it; returns what undoes it (even
    /// when the call was refused, as it may have taken effect in part) and the refusal.
    async fn apply(
        &self,
        recorder: &Recorder,
        fault: PlannedTxnFault,
    ) -> (ActiveFault, Result<(), LocalClusterError>) {
        match fault.kind {
            TxnNemesisKind::KillCompute => {
                let (index, id) = self.pick_compute(fault.pick);
                let targets = json!({"node": compute_node_name(index)});
                record(recorder, Function::Kill, targets.clone());
                let killed = self.blocking(move |cluster| cluster.kill(id)).await;
                (ActiveFault::Killed(id, targets), killed)
            }
            TxnNemesisKind::PauseCompute => {
                let (index, id) = self.pick_compute(fault.pick);
                let targets = json!({"node": compute_node_name(index)});
                record(recorder, Function::Pause, targets.clone());
                let paused = self.blocking(move |cluster| cluster.pause(id)).await;
                (ActiveFault::Paused(id, targets), paused)
            }
            TxnNemesisKind::KillStorage => {
                let shard = (fault.pick % self.shards() as u64) as usize;
                let primary = {
                    let cluster = self.cluster.lock().await;
                    let found = cluster.wait_for_primary(shard, PRIMARY_BOUND).await;
                    // With no primary now, the first data member is as good a victim.
                    found.unwrap_or_else(|_| cluster.shard_members(shard).replicas[0])
                };
                let targets = json!({"node": replica_node_name(primary)});
                record(recorder, Function::Kill, targets.clone());
                let id = member_process(primary);
                let killed = self.blocking(move |cluster| cluster.kill(id)).await;
                (ActiveFault::Killed(id, targets), killed)
            }
            TxnNemesisKind::PartitionStorage => {
                let member = fault.pick % (3 * self.shards() as u64);
                let shard = (member / 3) as NodeId;
                let others: Vec<String> = (3 * shard..3 * shard + 3)
                    .filter(|&other| other != member)
                    .map(replica_node_name)
                    .collect();
                let groups = json!([[replica_node_name(member)], others]);
                record(
                    recorder,
                    Function::StartPartition,
                    json!({"nemesis": "isolate-storage", "groups": groups}),
                );
                let cluster = self.cluster.lock().await;
                let isolated = cluster.isolate_member(member).await;
                (ActiveFault::Partitioned, isolated)
            }
            TxnNemesisKind::KillMetadata => {
                let (id, name) = self.pick_metadata(fault.pick);
                let targets = json!({"node": name});
                record(recorder, Function::Kill, targets.clone());
                let killed = self.blocking(move |cluster| cluster.kill(id)).await;
                (ActiveFault::Killed(id, targets), killed)
            }
            TxnNemesisKind::PauseMetadata => {
                let (id, name) = self.pick_metadata(fault.pick);
                let targets = json!({"node": name});
                record(recorder, Function::Pause, targets.clone());
                let paused = self.blocking(move |cluster| cluster.pause(id)).await;
                (ActiveFault::Paused(id, targets), paused)
            }
            TxnNemesisKind::PartitionMetadata => {
                // Halves, the minority first, rotated by the fault's pick, as in process.
                let mut minority = self.metadata.clone();
                minority.rotate_left((fault.pick % self.metadata.len() as u64) as usize);
                let majority = minority.split_off(self.metadata.len() / 2);
                let groups = vec![minority, majority];
                let names: Vec<Vec<String>> = groups
                    .iter()
                    .map(|group| group.iter().map(|&id| node_name(id - 1)).collect())
                    .collect();
                record(
                    recorder,
                    Function::StartPartition,
                    json!({"nemesis": "metadata-partition", "groups": names}),
                );
                let cluster = self.cluster.lock().await;
                let partitioned = cluster.partition(&groups).await;
                (ActiveFault::Partitioned, partitioned)
            }
            TxnNemesisKind::AddShard => {
                let shard = self.shards();
                let base = 3 * shard as NodeId;
                let nodes: Vec<String> = (base..base + 3).map(replica_node_name).collect();
                record(
                    recorder,
                    Function::AddNode,
                    json!({"nemesis": "add-shard", "shard": shard, "nodes": nodes}),
                );
                let mut cluster = self.cluster.lock().await;
                let added = cluster.add_shard(ADD_SHARD_BOUND).await;
                let added = added.map(|(shard, report)| {
                    self.n_shards.store(shard + 1, Ordering::SeqCst);
                    tracing::info!(
                        shard,
                        copied = report.copied_rows,
                        copied_by_compute_nodes = report.already_there,
                        moving_ms = report.moving.as_millis() as u64,
                        "nemesis: shard added, rows moved"
                    );
                });
                (ActiveFault::ShardAdded, added)
            }
            other => unreachable!("{} is not a fault on processes", other.as_str()),
        }
    }

    /// Records the heal of `active`, then heals it; returns the refusal, if any.
    async fn heal(&self, recorder: &Recorder, active: ActiveFault) -> Result<(), String> {
        let result = match active {
            ActiveFault::Killed(id, targets) => {
                record(recorder, Function::Restart, targets.clone());
                let restarted = self.blocking(move |cluster| cluster.restart(id)).await;
                restarted.map_err(|error| format!("restart {targets}: {error}"))
            }
            ActiveFault::Paused(id, targets) => {
                record(recorder, Function::Resume, targets.clone());
                let resumed = self.blocking(move |cluster| cluster.resume(id)).await;
                resumed.map_err(|error| format!("resume {targets}: {error}"))
            }
            ActiveFault::ShardAdded => Ok(()),
            ActiveFault::Partitioned => {
                record(recorder, Function::StopPartition, json!("network-healed"));
                let mut cluster = self.cluster.lock().await;
                let healed = cluster.heal().await;
                healed.map_err(|error| format!("heal: {error}"))
            }
        };
        tracing::info!("nemesis: fault healed");
        result
    }
}

/// Applies `plan` (times relative to `start`, kinds among [`PROCESS_NEMESIS_KINDS`]) and undoes
/// every fault at its planned end. A fault call the cluster refuses is reported (its events are
/// recorded all the same) and the run goes on; one that hangs past the fault bound ends it.
pub async fn run_process_nemesis(
    processes: TxnProcesses,
    recorder: Arc<Recorder>,
    plan: Vec<PlannedTxnFault>,
    start: Instant,
    progress: Arc<RunProgress>,
) -> Result<TxnNemesisReport, WorkloadError> {
    let mut report = TxnNemesisReport::default();
    for fault in plan {
        assert!(
            PROCESS_NEMESIS_KINDS.contains(&fault.kind)
                || PROCESS_NAMED_KINDS.contains(&fault.kind),
            "the plan of a run on processes holds only their faults: {fault:?}"
        );
        tokio::time::sleep_until((start + fault.start).into()).await;
        let (active, applied) =
            bounded("fault on processes", processes.apply(&recorder, fault)).await?;
        if let Err(error) = applied {
            tracing::warn!(%error, kind = fault.kind.as_str(), "nemesis: fault refused");
            report
                .refused
                .push(format!("{}: {error}", fault.kind.as_str()));
        }
        progress.n_faults.fetch_add(1, Ordering::Relaxed);
        report.n_applied += 1;
        tracing::info!(kind = fault.kind.as_str(), "nemesis: fault applied");
        tokio::time::sleep_until((start + fault.end).into()).await;
        if let Err(refused) =
            bounded("heal on processes", processes.heal(&recorder, active)).await?
        {
            report.refused.push(refused);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_faults_parse_and_embedded_only_faults_are_refused_by_name() {
        assert_eq!(parse_process_nemesis(None).unwrap(), PROCESS_NEMESIS_KINDS);
        assert_eq!(
            parse_process_nemesis(Some("kill")).unwrap(),
            vec![
                TxnNemesisKind::KillCompute,
                TxnNemesisKind::KillStorage,
                TxnNemesisKind::KillMetadata
            ]
        );
        assert_eq!(
            parse_process_nemesis(Some("all")).unwrap(),
            PROCESS_NEMESIS_KINDS
        );
        assert!(parse_process_nemesis(Some("none")).unwrap().is_empty());
        let error = parse_process_nemesis(Some("pause-compute,crash-compute"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("crash-compute") && error.contains("partition-metadata"),
            "{error}"
        );
        assert!(parse_process_nemesis(Some("kill-moon")).is_err());
        assert_eq!(
            parse_process_nemesis(Some("add-shard,kill-storage")).unwrap(),
            vec![TxnNemesisKind::KillStorage, TxnNemesisKind::AddShard]
        );
        assert!(!parse_process_nemesis(Some("all"))
            .unwrap()
            .contains(&TxnNemesisKind::AddShard));
    }
}
