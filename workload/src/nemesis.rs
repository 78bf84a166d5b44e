//! The nemesis: applies the planned faults to the running cluster, undoes each at its end, and
//! records every fault start and heal as an `info` event of process `"nemesis"`, always before
//! the target is asked to apply it. The target ([`FaultTarget`]) decides how a fault is made:
//! the simulated network, signals and peer filters, or Docker.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::{node_name, EventDraft, Function};
use crate::recorder::Recorder;
use crate::schedule::{FaultAction, NodeTarget, PlannedFault};
use crate::target::{FaultError, FaultTarget};

/// The bound on one fault call (a kill, a restart, a partition) to the cluster.
pub const FAULT_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A fault in effect, with what it takes to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ActiveFault {
    /// A partition (and any node added during it, which stays).
    Network,
    Killed(u64),
    Paused(u64),
}

/// Applies `plan` (times relative to `start`) and undoes every fault at its planned end.
/// Returns the number of faults applied.
pub async fn run_nemesis(
    cluster: Arc<dyn FaultTarget>,
    recorder: Arc<Recorder>,
    plan: Vec<PlannedFault>,
    start: Instant,
    progress: Arc<RunProgress>,
) -> Result<usize, WorkloadError> {
    let mut applied = 0;
    for fault in plan {
        tokio::time::sleep_until((start + fault.start).into()).await;
        // Record first, then apply: no effect of a fault may precede its event, or recovery
        // times would charge the fault's first disruptions to the fault before it.
        let prepared = prepare(cluster.as_ref(), &fault.action).await;
        recorder.record(EventDraft::nemesis(prepared.f, prepared.value.clone()));
        let active = apply(cluster.as_ref(), &prepared).await?;
        progress.n_faults.fetch_add(1, Ordering::Relaxed);
        applied += 1;
        tracing::info!(fault = prepared.f.as_str(), "nemesis: fault started");

        tokio::time::sleep_until((start + fault.end).into()).await;
        let (f, value) = heal_event(&active);
        recorder.record(EventDraft::nemesis(f, value));
        undo(cluster.as_ref(), &active).await?;
        tracing::info!(fault = f.as_str(), "nemesis: fault healed");
    }
    Ok(applied)
}

/// Calls the cluster within [`FAULT_CALL_TIMEOUT`]; a fault call that hangs is a cluster bug
/// that would leave the run's state unknown, so it ends the run.
pub(crate) async fn bounded<T>(
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

/// A fault call within [`FAULT_CALL_TIMEOUT`]; a target that could not make the fault ends the
/// run, as its state would be unknown.
async fn fault_call(
    what: &str,
    call: impl std::future::Future<Output = Result<(), FaultError>>,
) -> Result<(), WorkloadError> {
    bounded(what, call)
        .await?
        .map_err(|error| WorkloadError::TaskFailed(format!("nemesis: {what}: {error}")))
}

async fn resolve_target(cluster: &dyn FaultTarget, target: NodeTarget) -> u64 {
    if !(target.prefer_leader || target.avoid_leader) {
        return target.fallback;
    }
    let leader = cluster.current_leader().await;
    match leader {
        Some(leader) if target.prefer_leader => leader,
        Some(leader) if target.avoid_leader && leader == target.fallback => {
            (target.fallback + 1) % cluster.node_count()
        }
        _ => target.fallback,
    }
}

fn names(ids: &[u64]) -> Vec<String> {
    ids.iter().copied().map(node_name).collect()
}

/// A fault with its targets resolved, ready to record and then apply.
struct Prepared {
    action: FaultAction,
    /// The node a kill or a pause targets, resolved (the leader, when preferred).
    node: Option<u64>,
    /// The groups a partition cuts, as the target will cut them.
    groups: Vec<Vec<u64>>,
    f: Function,
    value: serde_json::Value,
}

/// Resolves a fault's targets and the event that describes it, without touching the cluster.
async fn prepare(cluster: &dyn FaultTarget, action: &FaultAction) -> Prepared {
    let prepared = |node, f, value| Prepared {
        action: action.clone(),
        node,
        groups: Vec::new(),
        f,
        value,
    };
    match action {
        FaultAction::Partition { groups } => {
            let groups = cluster.partition_plan(groups);
            let names: Vec<Vec<String>> = groups.iter().map(|group| names(group)).collect();
            let value = json!({"nemesis": "partition", "groups": names});
            Prepared {
                groups,
                ..prepared(None, Function::StartPartition, value)
            }
        }
        FaultAction::IsolateLeader { fallback } => {
            let leader = cluster.current_leader().await.unwrap_or(*fallback);
            let groups = cluster.partition_plan(&[vec![leader], others(cluster, leader)]);
            let names: Vec<Vec<String>> = groups.iter().map(|group| names(group)).collect();
            let value = json!({"nemesis": "isolate-leader", "groups": names});
            Prepared {
                groups,
                ..prepared(Some(leader), Function::StartPartition, value)
            }
        }
        FaultAction::MajoritiesRing { ring, blocked } => {
            let blocked: Vec<Vec<String>> = blocked
                .iter()
                .map(|&(a, b)| vec![node_name(a), node_name(b)])
                .collect();
            let value =
                json!({"nemesis": "majorities-ring", "ring": names(ring), "blocked": blocked});
            prepared(None, Function::StartPartition, value)
        }
        FaultAction::Kill(target) => {
            let node = resolve_target(cluster, *target).await;
            prepared(Some(node), Function::Kill, json!({"node": node_name(node)}))
        }
        FaultAction::Pause(target) => {
            let node = resolve_target(cluster, *target).await;
            prepared(
                Some(node),
                Function::Pause,
                json!({"node": node_name(node)}),
            )
        }
        FaultAction::PartitionAddNode { groups } => {
            // The node to be added takes the next index, on the first group's side, in the
            // groups as the target cuts them.
            let new_node = cluster.node_count();
            let plan = cluster.partition_plan(groups);
            let side = groups.first().and_then(|group| group.first()).copied();
            let mut recorded = plan.clone();
            if let Some(group) = recorded
                .iter_mut()
                .find(|group| side.is_some_and(|node| group.contains(&node)))
            {
                group.push(new_node);
            }
            let names: Vec<Vec<String>> = recorded.iter().map(|group| names(group)).collect();
            let value = json!({
                "nemesis": "partition-add-node",
                "groups": names,
                "added": node_name(new_node),
            });
            Prepared {
                groups: plan,
                ..prepared(Some(new_node), Function::StartPartition, value)
            }
        }
    }
}

fn others(cluster: &dyn FaultTarget, node: u64) -> Vec<u64> {
    let node_count = cluster.node_count();
    (0..node_count).filter(|&id| id != node).collect()
}

/// Applies a prepared fault; returns what must be undone to heal it.
async fn apply(
    cluster: &dyn FaultTarget,
    prepared: &Prepared,
) -> Result<ActiveFault, WorkloadError> {
    let node = || {
        prepared
            .node
            .expect("kill, pause and isolate-leader resolve their node")
    };
    match &prepared.action {
        FaultAction::Partition { .. } => {
            fault_call(
                "partition",
                cluster.partition_groups(prepared.groups.clone()),
            )
            .await?;
            Ok(ActiveFault::Network)
        }
        FaultAction::IsolateLeader { .. } => {
            let groups = prepared.groups.clone();
            fault_call("isolate-leader", cluster.partition_groups(groups)).await?;
            Ok(ActiveFault::Network)
        }
        FaultAction::MajoritiesRing { blocked, .. } => {
            // Each blocked link is cut both ways; a partition into groups cannot express a ring.
            fault_call("majorities-ring", cluster.block_links(blocked.clone())).await?;
            Ok(ActiveFault::Network)
        }
        FaultAction::Kill(_) => {
            fault_call("kill", cluster.kill(node())).await?;
            Ok(ActiveFault::Killed(node()))
        }
        FaultAction::Pause(_) => {
            fault_call("pause", cluster.pause(node())).await?;
            Ok(ActiveFault::Paused(node()))
        }
        FaultAction::PartitionAddNode { groups } => {
            fault_call(
                "partition",
                cluster.partition_groups(prepared.groups.clone()),
            )
            .await?;
            let blocked: Vec<u64> = groups.iter().skip(1).flatten().copied().collect();
            let added = bounded("add-node", cluster.add_node(blocked))
                .await?
                .map_err(|error| {
                    WorkloadError::TaskFailed(format!("nemesis: add-node: {error}"))
                })?;
            if added != node() {
                return Err(WorkloadError::TaskFailed(format!(
                    "nemesis: the added node is {}, the history names {}",
                    node_name(added),
                    node_name(node())
                )));
            }
            tracing::info!(node = node_name(added), "nemesis: node added");
            Ok(ActiveFault::Network)
        }
    }
}

/// The event that records the heal of `active`.
fn heal_event(active: &ActiveFault) -> (Function, serde_json::Value) {
    match *active {
        ActiveFault::Network => (Function::StopPartition, json!("network-healed")),
        ActiveFault::Killed(node) => (Function::Restart, json!({"node": node_name(node)})),
        ActiveFault::Paused(node) => (Function::Resume, json!({"node": node_name(node)})),
    }
}

/// Heals `active`.
async fn undo(cluster: &dyn FaultTarget, active: &ActiveFault) -> Result<(), WorkloadError> {
    match *active {
        ActiveFault::Network => fault_call("heal", cluster.heal()).await,
        ActiveFault::Killed(node) => fault_call("restart", cluster.restart(node)).await,
        ActiveFault::Paused(node) => fault_call("resume", cluster.resume(node)).await,
    }
}
