//! The nemesis: applies the planned faults to the running cluster, undoes each at its end, and
//! records every fault start and heal as an `info` event of process `"nemesis"`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::RaftTestCluster;
use serde_json::json;

use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::{node_name, EventDraft, Function};
use crate::recorder::Recorder;
use crate::schedule::{FaultAction, NodeTarget, PlannedFault};

/// The bound on one fault call (a kill, a restart, a partition) to the cluster.
pub const FAULT_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A fault in effect, with what it takes to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ActiveFault {
    Network,
    Killed(u64),
    Paused(u64),
}

/// Applies `plan` (times relative to `start`) and undoes every fault at its planned end.
/// Returns the number of faults applied.
pub async fn run_nemesis(
    cluster: Arc<RaftTestCluster>,
    recorder: Arc<Recorder>,
    plan: Vec<PlannedFault>,
    start: Instant,
    progress: Arc<RunProgress>,
) -> Result<usize, WorkloadError> {
    let mut applied = 0;
    for fault in plan {
        tokio::time::sleep_until((start + fault.start).into()).await;
        let (active, f, value) = apply(&cluster, &fault.action).await?;
        recorder.record(EventDraft::nemesis(f, value));
        progress.n_faults.fetch_add(1, Ordering::Relaxed);
        applied += 1;
        tracing::info!(fault = f.as_str(), "nemesis: fault started");

        tokio::time::sleep_until((start + fault.end).into()).await;
        let (f, value) = undo(&cluster, &active).await?;
        recorder.record(EventDraft::nemesis(f, value));
        tracing::info!(fault = f.as_str(), "nemesis: fault healed");
    }
    Ok(applied)
}

/// Calls the cluster within [`FAULT_CALL_TIMEOUT`]; a fault call that hangs is a cluster bug
/// that would leave the run's state unknown, so it ends the run.
async fn bounded<T>(
    what: &str,
    call: impl std::future::Future<Output = T>,
) -> Result<T, WorkloadError> {
    tokio::time::timeout(FAULT_CALL_TIMEOUT, call)
        .await
        .map_err(|_| {
            WorkloadError::TaskFailed(format!(
                "nemesis: {what} did not return within {} s",
                FAULT_CALL_TIMEOUT.as_secs()
            ))
        })
}

async fn resolve_target(cluster: &RaftTestCluster, target: NodeTarget) -> u64 {
    if target.prefer_leader {
        if let Some(leader) = cluster.current_leader().await {
            return leader;
        }
    }
    target.fallback
}

fn names(ids: &[u64]) -> Vec<String> {
    ids.iter().copied().map(node_name).collect()
}

async fn apply(
    cluster: &RaftTestCluster,
    action: &FaultAction,
) -> Result<(ActiveFault, Function, serde_json::Value), WorkloadError> {
    match action {
        FaultAction::Partition { groups } => {
            bounded("partition", cluster.partition_groups(groups.clone())).await?;
            let groups: Vec<Vec<String>> = groups.iter().map(|group| names(group)).collect();
            let value = json!({"nemesis": "partition", "groups": groups});
            Ok((ActiveFault::Network, Function::StartPartition, value))
        }
        FaultAction::IsolateLeader { fallback } => {
            let leader = cluster.current_leader().await.unwrap_or(*fallback);
            let node_count = cluster.nodes.len() as u64;
            let others: Vec<u64> = (0..node_count).filter(|&id| id != leader).collect();
            bounded(
                "isolate-leader",
                cluster.partition(vec![leader], others.clone()),
            )
            .await?;
            let groups = vec![names(&[leader]), names(&others)];
            let value = json!({"nemesis": "isolate-leader", "groups": groups});
            Ok((ActiveFault::Network, Function::StartPartition, value))
        }
        FaultAction::MajoritiesRing { ring, blocked } => {
            // Each blocked link is cut both ways; `partition_groups` cannot express a ring.
            bounded("majorities-ring", async {
                for &(a, b) in blocked {
                    cluster.partition_one_way(a, b).await;
                    cluster.partition_one_way(b, a).await;
                }
            })
            .await?;
            let blocked: Vec<Vec<String>> = blocked
                .iter()
                .map(|&(a, b)| vec![node_name(a), node_name(b)])
                .collect();
            let value =
                json!({"nemesis": "majorities-ring", "ring": names(ring), "blocked": blocked});
            Ok((ActiveFault::Network, Function::StartPartition, value))
        }
        FaultAction::Kill(target) => {
            let node = resolve_target(cluster, *target).await;
            bounded("kill", cluster.kill_node(node)).await?;
            Ok((
                ActiveFault::Killed(node),
                Function::Kill,
                json!({"node": node_name(node)}),
            ))
        }
        FaultAction::Pause(target) => {
            let node = resolve_target(cluster, *target).await;
            bounded("pause", cluster.pause_node(node)).await?;
            Ok((
                ActiveFault::Paused(node),
                Function::Pause,
                json!({"node": node_name(node)}),
            ))
        }
    }
}

async fn undo(
    cluster: &RaftTestCluster,
    active: &ActiveFault,
) -> Result<(Function, serde_json::Value), WorkloadError> {
    match *active {
        ActiveFault::Network => {
            bounded("heal", cluster.heal()).await?;
            Ok((Function::StopPartition, json!("network-healed")))
        }
        ActiveFault::Killed(node) => {
            bounded("restart", cluster.restart_node(node)).await?;
            Ok((Function::Restart, json!({"node": node_name(node)})))
        }
        ActiveFault::Paused(node) => {
            bounded("resume", cluster.resume_node(node)).await?;
            Ok((Function::Resume, json!({"node": node_name(node)})))
        }
    }
}
