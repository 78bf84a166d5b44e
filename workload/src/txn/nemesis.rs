//! The compute workloads' nemesis: kills, pauses and partitions compute, storage and metadata
//! nodes on the planned schedule, recording each fault and heal as an `info` event of process
//! `"nemesis"` before applying it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use helios_cluster::{CrashPoint, StorageNodeId, TestCluster};
use serde_json::{json, Value};

use super::schedule::{PlannedTxnFault, TxnNemesisKind};
use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::{node_name, EventDraft, Function};
use crate::nemesis::bounded;
use crate::recorder::Recorder;

/// What the nemesis did over a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnNemesisReport {
    /// Faults recorded and applied.
    pub n_applied: usize,
    /// Fault or heal calls the cluster refused, in words (the run goes on).
    pub refused: Vec<String>,
}

/// A fault in effect, with what it takes to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ActiveFault {
    ComputeKilled(usize, Value),
    ComputeCrashArmed(usize, Value),
    ComputePaused(usize, Value),
    ComputeIsolated(usize),
    StorageKilled(StorageNodeId, Value),
    StorageIsolated,
    MetadataKilled(u64, Value),
    MetadataPaused(u64, Value),
    MetadataPartitioned,
}

/// Applies `plan` (times relative to `start`) and undoes every fault at its planned end.
pub async fn run_txn_nemesis(
    cluster: Arc<TestCluster>,
    recorder: Arc<Recorder>,
    plan: Vec<PlannedTxnFault>,
    start: Instant,
    progress: Arc<RunProgress>,
) -> Result<TxnNemesisReport, WorkloadError> {
    let mut report = TxnNemesisReport::default();
    for fault in plan {
        tokio::time::sleep_until((start + fault.start).into()).await;
        let active = apply(&cluster, &recorder, fault, &mut report).await?;
        progress.n_faults.fetch_add(1, Ordering::Relaxed);
        report.n_applied += 1;
        tokio::time::sleep_until((start + fault.end).into()).await;
        heal(&cluster, &recorder, &active, &mut report).await?;
    }
    Ok(report)
}

/// The names of the cluster's metadata nodes, `m0`..
pub fn metadata_names(cluster: &TestCluster) -> Vec<String> {
    (0..cluster.storage().options().n_metadata_nodes as u64)
        .map(node_name)
        .collect()
}

/// Records a nemesis event.
pub(super) fn record(recorder: &Recorder, f: Function, value: Value) {
    recorder.record(EventDraft::nemesis(f, value));
}

/// Resolves the fault's target, records it, and applies it.
async fn apply(
    cluster: &TestCluster,
    recorder: &Recorder,
    fault: PlannedTxnFault,
    report: &mut TxnNemesisReport,
) -> Result<ActiveFault, WorkloadError> {
    let computes = cluster.compute_nodes();
    let compute = (fault.pick % computes.len() as u64) as usize;
    let compute_name = computes[compute].name();
    let n_metadata = cluster.storage().options().n_metadata_nodes as u64;
    let metadata = fault.pick % n_metadata;
    let raft = cluster.storage().metadata().raft();
    let active = match fault.kind {
        TxnNemesisKind::KillCompute => {
            let targets = json!({"node": compute_name});
            record(recorder, Function::Kill, targets.clone());
            bounded("kill compute", computes[compute].kill()).await?;
            ActiveFault::ComputeKilled(compute, targets)
        }
        TxnNemesisKind::CrashCompute => {
            let targets = json!({"node": compute_name, "armed": "between-shard-commits"});
            record(recorder, Function::Kill, targets.clone());
            computes[compute].arm_crash(CrashPoint::BetweenShardCommits);
            ActiveFault::ComputeCrashArmed(compute, targets)
        }
        TxnNemesisKind::PauseCompute => {
            let targets = json!({"node": compute_name});
            record(recorder, Function::Pause, targets.clone());
            computes[compute].pause();
            ActiveFault::ComputePaused(compute, targets)
        }
        TxnNemesisKind::PartitionCompute => {
            let mut others: Vec<String> = computes
                .iter()
                .filter(|node| node.index() as usize != compute)
                .map(|node| node.name())
                .collect();
            others.extend(storage_names(cluster));
            others.extend(metadata_names(cluster));
            record(
                recorder,
                Function::StartPartition,
                json!({"nemesis": "isolate-compute", "groups": [[compute_name], others]}),
            );
            computes[compute].isolate();
            ActiveFault::ComputeIsolated(compute)
        }
        TxnNemesisKind::KillStorage => {
            let (id, name) = pick_storage(cluster, fault.pick);
            let targets = json!({"node": name});
            record(recorder, Function::Kill, targets.clone());
            if let Err(error) = bounded("kill storage", cluster.storage().kill_node(id)).await? {
                report.refused.push(format!("kill {name}: {error}"));
            }
            ActiveFault::StorageKilled(id, targets)
        }
        TxnNemesisKind::PartitionStorage => {
            let (id, name) = pick_storage(cluster, fault.pick);
            let others: Vec<String> = storage_names(cluster)
                .into_iter()
                .filter(|other| *other != name)
                .collect();
            record(
                recorder,
                Function::StartPartition,
                json!({"nemesis": "isolate-storage", "groups": [[name], others]}),
            );
            if let Err(error) = cluster.storage().isolate_node(id) {
                report.refused.push(format!("isolate {name}: {error}"));
            }
            ActiveFault::StorageIsolated
        }
        TxnNemesisKind::KillMetadata => {
            let targets = json!({"node": node_name(metadata)});
            record(recorder, Function::Kill, targets.clone());
            bounded("kill metadata", raft.kill_node(metadata)).await?;
            ActiveFault::MetadataKilled(metadata, targets)
        }
        TxnNemesisKind::PauseMetadata => {
            let targets = json!({"node": node_name(metadata)});
            record(recorder, Function::Pause, targets.clone());
            bounded("pause metadata", raft.pause_node(metadata)).await?;
            ActiveFault::MetadataPaused(metadata, targets)
        }
        TxnNemesisKind::PartitionMetadata => {
            // Random halves, the minority first, drawn from the fault's pick.
            let mut ids: Vec<u64> = (0..n_metadata).collect();
            ids.rotate_left((fault.pick % n_metadata) as usize);
            let majority = ids.split_off((n_metadata / 2) as usize);
            let groups = vec![ids, majority];
            let names: Vec<Vec<String>> = groups
                .iter()
                .map(|group| group.iter().copied().map(node_name).collect())
                .collect();
            record(
                recorder,
                Function::StartPartition,
                json!({"nemesis": "metadata-partition", "groups": names}),
            );
            bounded("metadata partition", raft.partition_groups(groups)).await?;
            ActiveFault::MetadataPartitioned
        }
        TxnNemesisKind::AddShard => {
            return Err(WorkloadError::InvalidConfig(
                "nemesis add-shard runs on processes only (--target processes)".to_owned(),
            ))
        }
    };
    tracing::info!(kind = fault.kind.as_str(), "nemesis: fault applied");
    Ok(active)
}

/// Records the heal of `active`, then heals it.
async fn heal(
    cluster: &TestCluster,
    recorder: &Recorder,
    active: &ActiveFault,
    report: &mut TxnNemesisReport,
) -> Result<(), WorkloadError> {
    let computes = cluster.compute_nodes();
    let raft = cluster.storage().metadata().raft();
    match active {
        ActiveFault::ComputeKilled(index, targets) => {
            record(recorder, Function::Restart, targets.clone());
            bounded("restart compute", computes[*index].restart()).await?;
        }
        ActiveFault::ComputeCrashArmed(index, targets) => {
            record(recorder, Function::Restart, targets.clone());
            let node = &computes[*index];
            if node.disarm_crash() {
                tracing::info!(node = node.name(), "nemesis: the armed crash never fired");
            }
            bounded("restart compute", node.restart()).await?;
        }
        ActiveFault::ComputePaused(index, targets) => {
            record(recorder, Function::Resume, targets.clone());
            computes[*index].resume();
        }
        ActiveFault::ComputeIsolated(index) => {
            record(recorder, Function::StopPartition, json!("network-healed"));
            computes[*index].heal();
        }
        ActiveFault::StorageKilled(id, targets) => {
            record(recorder, Function::Restart, targets.clone());
            let restart = cluster.storage().restart_node(*id);
            if let Err(error) = bounded("restart storage", restart).await? {
                report.refused.push(format!("restart {targets}: {error}"));
            }
        }
        ActiveFault::StorageIsolated => {
            record(recorder, Function::StopPartition, json!("network-healed"));
            cluster.storage().heal_storage_network();
        }
        ActiveFault::MetadataKilled(id, targets) => {
            record(recorder, Function::Restart, targets.clone());
            bounded("restart metadata", raft.restart_node(*id)).await?;
        }
        ActiveFault::MetadataPaused(id, targets) => {
            record(recorder, Function::Resume, targets.clone());
            bounded("resume metadata", raft.resume_node(*id)).await?;
        }
        ActiveFault::MetadataPartitioned => {
            record(recorder, Function::StopPartition, json!("network-healed"));
            bounded("metadata heal", raft.heal()).await?;
        }
    }
    tracing::info!("nemesis: fault healed");
    Ok(())
}

/// The names of the storage nodes, in id order.
pub fn storage_names(cluster: &TestCluster) -> Vec<String> {
    cluster
        .storage()
        .node_handles()
        .into_iter()
        .map(|handle| handle.name().to_owned())
        .collect()
}

fn pick_storage(cluster: &TestCluster, pick: u64) -> (StorageNodeId, String) {
    let handles = cluster.storage().node_handles();
    assert!(!handles.is_empty(), "a storage cluster always has nodes");
    let handle = &handles[(pick % handles.len() as u64) as usize];
    (handle.id(), handle.name().to_owned())
}

/// Undoes every fault, whatever the nemesis left: resumes, heals and restarts every node.
/// The nemesis heals what it broke; this is the safety net for a nemesis that stopped early.
pub async fn heal_everything(cluster: &TestCluster) {
    let storage = cluster.storage();
    storage.heal_storage_network();
    let raft = storage.metadata().raft();
    let _ = bounded("metadata heal", raft.heal()).await;
    for id in 0..storage.options().n_metadata_nodes as u64 {
        let _ = bounded("resume metadata", raft.resume_node(id)).await;
    }
    for handle in storage.node_handles() {
        if storage.node(handle.id()).is_ok_and(|node| !node.is_up()) {
            let _ = bounded("restart storage", storage.restart_node(handle.id())).await;
        }
    }
    for node in cluster.compute_nodes() {
        node.disarm_crash();
        node.resume();
        node.heal();
        if !node.is_up() {
            let _ = bounded("restart compute", node.restart()).await;
        }
    }
}
