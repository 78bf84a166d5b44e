//! The set workload's nemesis: adds storage nodes (each starting an online rebalance), kills
//! and restarts storage nodes, isolates storage nodes and cuts the metadata Raft group, and
//! records every fault and heal as an `info` event of process `"nemesis"` before applying it.
//!
//! Targets are resolved at the moment of the fault against the nodes that exist then, so kills
//! reach nodes that joined during the run and, when a move runs, the node it is filling.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::sharding::MovePhase;
use helios_cluster::{StorageCluster, StorageNodeId};
use serde_json::json;

use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::{node_name, EventDraft, Function};
use crate::nemesis::bounded;
use crate::recorder::Recorder;
use crate::set_schedule::{PlannedSetFault, SetFaultAction};

/// The longest an add-node waits for the previous move to finish before it is skipped: a join
/// waits for the move before it, and the nemesis must not stall its schedule behind it.
pub const ADD_NODE_WAIT_LIMIT: Duration = Duration::from_secs(10);

/// The name of storage node number `number`, as `StorageCluster` names its initial nodes.
pub fn storage_node_name(number: u64) -> String {
    format!("node_{number}")
}

/// The address of storage node number `number`, as `StorageCluster` gives its initial nodes.
pub fn storage_node_addr(number: u64) -> String {
    format!("127.0.0.1:{}", 7000 + number)
}

/// What the nemesis did over a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetNemesisReport {
    /// Faults recorded and applied (an add-node counts once).
    pub n_applied: usize,
    /// Add-nodes skipped because the previous move was still running.
    pub n_skipped: usize,
    /// Names of the nodes whose join was started.
    pub added: Vec<String>,
    /// Fault or heal calls the cluster refused, in words (the run goes on).
    pub refused: Vec<String>,
}

/// A fault in effect, with what it takes to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ActiveFault {
    /// Nothing to undo (an add-node).
    None,
    /// The node, and the kill's targets, which the restart repeats so that the pair matches.
    Killed(StorageNodeId, serde_json::Value),
    StorageIsolated,
    MetadataPartitioned,
}

/// Applies `plan` (times relative to `start`) and undoes every fault at its planned end.
pub async fn run_set_nemesis(
    cluster: StorageCluster,
    recorder: Arc<Recorder>,
    plan: Vec<PlannedSetFault>,
    start: Instant,
    progress: Arc<RunProgress>,
) -> Result<SetNemesisReport, WorkloadError> {
    let mut report = SetNemesisReport::default();
    let next_starts: Vec<Duration> = plan.iter().skip(1).map(|fault| fault.start).collect();
    for (position, fault) in plan.into_iter().enumerate() {
        tokio::time::sleep_until((start + fault.start).into()).await;
        let active = match fault.action {
            SetFaultAction::AddNode { number } => {
                // Wait for the previous move, at most until the next fault is due.
                let next = next_starts.get(position).map_or(fault.start, |next| *next);
                let wait = (start + next)
                    .saturating_duration_since(Instant::now())
                    .min(ADD_NODE_WAIT_LIMIT);
                if !wait_for_idle_rebalancer(&cluster, wait).await {
                    tracing::info!(number, "nemesis: add-node skipped, a move still runs");
                    report.n_skipped += 1;
                    continue;
                }
                add_node(&cluster, &recorder, number, &mut report).await?;
                ActiveFault::None
            }
            action => apply(&cluster, &recorder, &action, &mut report).await?,
        };
        progress.n_faults.fetch_add(1, Ordering::Relaxed);
        report.n_applied += 1;
        if active == ActiveFault::None {
            continue;
        }
        tokio::time::sleep_until((start + fault.end).into()).await;
        heal(&cluster, &recorder, &active, &mut report).await?;
    }
    Ok(report)
}

/// Whether a move is under way (copying, catching up or switching).
pub fn move_in_progress(cluster: &StorageCluster) -> Option<StorageNodeId> {
    cluster.rebalance_progress().and_then(|progress| {
        matches!(
            progress.phase,
            MovePhase::Copying | MovePhase::CatchingUp | MovePhase::Switching
        )
        .then_some(progress.node)
    })
}

async fn wait_for_idle_rebalancer(cluster: &StorageCluster, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if move_in_progress(cluster).is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn add_node(
    cluster: &StorageCluster,
    recorder: &Recorder,
    number: u64,
    report: &mut SetNemesisReport,
) -> Result<(), WorkloadError> {
    let name = storage_node_name(number);
    // Record first, then apply: the move's first effects must not precede its event.
    recorder.record(EventDraft::nemesis(
        Function::AddNode,
        json!({"node": name}),
    ));
    match bounded(
        "add-node",
        cluster.add_node(&name, &storage_node_addr(number)),
    )
    .await?
    {
        Ok(handle) => {
            tracing::info!(node = %handle.id(), name, "nemesis: add-node, rebalance started");
            report.added.push(name);
        }
        Err(error) => {
            tracing::warn!(name, %error, "nemesis: add-node refused");
            report.refused.push(format!("add-node {name}: {error}"));
        }
    }
    Ok(())
}

/// The storage node at position `pick % n` of the nodes that exist now, in id order.
fn pick_storage_node(cluster: &StorageCluster, pick: u64) -> (StorageNodeId, String) {
    let handles = cluster.node_handles();
    assert!(!handles.is_empty(), "a storage cluster always has nodes");
    let handle = &handles[(pick % handles.len() as u64) as usize];
    (handle.id(), handle.name().to_owned())
}

/// Resolves a kill or a partition, records it, and applies it.
async fn apply(
    cluster: &StorageCluster,
    recorder: &Recorder,
    action: &SetFaultAction,
    report: &mut SetNemesisReport,
) -> Result<ActiveFault, WorkloadError> {
    match action {
        SetFaultAction::AddNode { .. } => unreachable!("add-node is applied by run_set_nemesis"),
        SetFaultAction::Kill {
            prefer_moving,
            pick,
        } => {
            let moving = move_in_progress(cluster).filter(|_| *prefer_moving);
            let (id, name) = match moving.and_then(|id| cluster.node(id).ok()) {
                Some(node) => (node.id(), node.name().to_owned()),
                None => pick_storage_node(cluster, *pick),
            };
            let mid_move = move_in_progress(cluster).is_some();
            let targets = json!({"node": name, "mid_move": mid_move});
            recorder.record(EventDraft::nemesis(Function::Kill, targets.clone()));
            if let Err(error) = bounded("kill", cluster.kill_node(id)).await? {
                report.refused.push(format!("kill {name}: {error}"));
            }
            tracing::info!(name, mid_move, "nemesis: storage node killed");
            Ok(ActiveFault::Killed(id, targets))
        }
        SetFaultAction::IsolateStorage { pick } => {
            let (id, name) = pick_storage_node(cluster, *pick);
            let others: Vec<String> = cluster
                .node_handles()
                .into_iter()
                .filter(|handle| handle.id() != id)
                .map(|handle| handle.name().to_owned())
                .collect();
            recorder.record(EventDraft::nemesis(
                Function::StartPartition,
                json!({"nemesis": "isolate-storage", "groups": [[name], others]}),
            ));
            if let Err(error) = cluster.isolate_node(id) {
                report.refused.push(format!("isolate {name}: {error}"));
            }
            tracing::info!(name, "nemesis: storage node isolated");
            Ok(ActiveFault::StorageIsolated)
        }
        SetFaultAction::PartitionMetadata { groups } => {
            let names: Vec<Vec<String>> = groups
                .iter()
                .map(|group| group.iter().copied().map(node_name).collect())
                .collect();
            recorder.record(EventDraft::nemesis(
                Function::StartPartition,
                json!({"nemesis": "metadata-partition", "groups": names}),
            ));
            let raft = cluster.metadata().raft();
            bounded("metadata partition", raft.partition_groups(groups.clone())).await?;
            tracing::info!(?groups, "nemesis: metadata group partitioned");
            Ok(ActiveFault::MetadataPartitioned)
        }
    }
}

/// Records the heal of `active`, then heals it.
async fn heal(
    cluster: &StorageCluster,
    recorder: &Recorder,
    active: &ActiveFault,
    report: &mut SetNemesisReport,
) -> Result<(), WorkloadError> {
    match active {
        ActiveFault::None => {}
        ActiveFault::Killed(id, targets) => {
            recorder.record(EventDraft::nemesis(Function::Restart, targets.clone()));
            let name = targets["node"].as_str().unwrap_or_default();
            // A joining node that was killed may have been rolled back and dropped meanwhile;
            // the cluster then refuses the restart, and the run goes on.
            if let Err(error) = bounded("restart", cluster.restart_node(*id)).await? {
                tracing::info!(name, %error, "nemesis: restart refused");
                report.refused.push(format!("restart {name}: {error}"));
            }
        }
        ActiveFault::StorageIsolated => {
            recorder.record(EventDraft::nemesis(
                Function::StopPartition,
                json!("network-healed"),
            ));
            cluster.heal_storage_network();
        }
        ActiveFault::MetadataPartitioned => {
            recorder.record(EventDraft::nemesis(
                Function::StopPartition,
                json!("network-healed"),
            ));
            bounded("metadata heal", cluster.metadata().raft().heal()).await?;
        }
    }
    tracing::info!("nemesis: fault healed");
    Ok(())
}
