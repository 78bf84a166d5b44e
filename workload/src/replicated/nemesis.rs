//! The replication nemesis: resolves each planned fault's role to a node, records the fault as a
//! nemesis event, then applies it; at the fault's end it records the heal, then undoes it.
//!
//! Events use the names the checker pairs: `kill`/`restart` for `kill-primary`, and
//! `start-partition`/`stop-partition` for the isolations. The start and the heal carry the same
//! value (`{"nemesis": kind, "node": isolated or killed node, "shard": s, ...}`), so the checker
//! pairs them exactly.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::metadata::NodeId;
use serde::Serialize;
use serde_json::json;

use super::replica_node_name;
use super::schedule::{PlannedReplicationFault, ReplicationFaultKind};
use super::target::{ReplicaTarget, SharedReplicaTarget};
use crate::client::RunProgress;
use crate::error::WorkloadError;
use crate::history::{EventDraft, Function};
use crate::recorder::Recorder;

/// The bound on one fault call to the cluster.
pub const FAULT_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// A fault as it was applied: the harness's own account, beside the history's events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedFault {
    /// What it did.
    pub kind: String,
    /// The shard hit.
    pub shard: usize,
    /// The node killed or isolated (its wire name).
    pub node: String,
    /// Whether the fault took the primary away (see
    /// [`ReplicationFaultKind::deposes_primary`]).
    pub deposes_primary: bool,
    /// The index of the fault's nemesis event in the history.
    pub start_index: u64,
    /// The event's time, ns since the run started.
    pub start_ns: u64,
    /// When the harness called the cluster to apply the fault (just after recording it).
    pub applied_ns: u64,
    /// The index of the heal's event.
    pub heal_index: u64,
    /// The heal's time (recorded just before the heal is applied).
    pub heal_ns: u64,
}

/// Applies `plan` (times relative to `start`) and undoes each fault at its planned end; returns
/// the faults as applied.
pub async fn run_replication_nemesis(
    cluster: SharedReplicaTarget,
    recorder: Arc<Recorder>,
    plan: Vec<PlannedReplicationFault>,
    start: Instant,
    progress: Arc<RunProgress>,
) -> Result<Vec<AppliedFault>, WorkloadError> {
    let since_start = |instant: Instant| {
        u64::try_from(instant.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
    };
    let mut applied = Vec::with_capacity(plan.len());
    for fault in plan {
        tokio::time::sleep_until((start + fault.start).into()).await;
        let node = target(cluster.as_ref(), fault.kind, fault.shard).await;
        let (f_start, f_heal) = match fault.kind {
            ReplicationFaultKind::KillPrimary | ReplicationFaultKind::KillWitness => {
                (Function::Kill, Function::Restart)
            }
            ReplicationFaultKind::PausePrimary | ReplicationFaultKind::PauseWitness => {
                (Function::Pause, Function::Resume)
            }
            _ => (Function::StartPartition, Function::StopPartition),
        };
        let value = event_value(cluster.as_ref(), fault.kind, fault.shard, node);
        // Record first, then apply: no effect of a fault may precede its event, or the checker
        // would charge the fault's first disruptions to the window before it.
        let event = recorder.record(EventDraft::nemesis(f_start, value.clone()));
        let applied_ns = since_start(Instant::now());
        apply(cluster.as_ref(), fault.kind, node).await?;
        progress.n_faults.fetch_add(1, Ordering::Relaxed);
        tracing::info!(fault = fault.kind.as_str(), node, "nemesis: fault started");

        tokio::time::sleep_until((start + fault.end).into()).await;
        let heal = recorder.record(EventDraft::nemesis(f_heal, value));
        undo(cluster.as_ref(), fault.kind, node).await?;
        tracing::info!(fault = fault.kind.as_str(), node, "nemesis: fault healed");
        applied.push(AppliedFault {
            kind: fault.kind.as_str().to_owned(),
            shard: fault.shard,
            node: replica_node_name(node),
            deposes_primary: fault.kind.deposes_primary(),
            start_index: event.index,
            start_ns: event.time_ns,
            applied_ns,
            heal_index: heal.index,
            heal_ns: heal.time_ns,
        });
    }
    Ok(applied)
}

/// The node that holds the fault's role in `shard` now.
async fn target(cluster: &dyn ReplicaTarget, kind: ReplicationFaultKind, shard: usize) -> NodeId {
    let members = cluster.members(shard);
    match kind {
        ReplicationFaultKind::KillPrimary
        | ReplicationFaultKind::IsolatePrimary
        | ReplicationFaultKind::PausePrimary => cluster.primary_id(shard).await,
        ReplicationFaultKind::IsolateMirror => {
            let primary = cluster.primary_id(shard).await;
            if primary == members.replicas[0] {
                members.replicas[1]
            } else {
                members.replicas[0]
            }
        }
        ReplicationFaultKind::IsolateWitness
        | ReplicationFaultKind::PauseWitness
        | ReplicationFaultKind::KillWitness => members.witness,
    }
}

/// The fault's event value: its kind, shard and node, and for an isolation the two sides.
fn event_value(
    cluster: &dyn ReplicaTarget,
    kind: ReplicationFaultKind,
    shard: usize,
    node: NodeId,
) -> serde_json::Value {
    let name = replica_node_name(node);
    match kind {
        ReplicationFaultKind::KillPrimary
        | ReplicationFaultKind::KillWitness
        | ReplicationFaultKind::PausePrimary
        | ReplicationFaultKind::PauseWitness => {
            json!({"nemesis": kind.as_str(), "node": name, "shard": shard})
        }
        _ => {
            let others: Vec<String> = (0..3 * cluster.shard_count() as NodeId)
                .filter(|&other| other != node)
                .map(replica_node_name)
                .collect();
            json!({
                "nemesis": kind.as_str(),
                "node": name,
                "shard": shard,
                "groups": [[name], others],
            })
        }
    }
}

async fn apply(
    cluster: &dyn ReplicaTarget,
    kind: ReplicationFaultKind,
    node: NodeId,
) -> Result<(), WorkloadError> {
    let result = match kind {
        ReplicationFaultKind::KillPrimary | ReplicationFaultKind::KillWitness => {
            bounded("kill", cluster.kill(node)).await?
        }
        ReplicationFaultKind::PausePrimary | ReplicationFaultKind::PauseWitness => {
            bounded("pause", cluster.pause(node)).await?
        }
        _ => bounded("isolate", cluster.isolate(node)).await?,
    };
    result.map_err(|error| WorkloadError::TaskFailed(format!("replication nemesis: {error}")))
}

async fn undo(
    cluster: &dyn ReplicaTarget,
    kind: ReplicationFaultKind,
    node: NodeId,
) -> Result<(), WorkloadError> {
    let result = match kind {
        ReplicationFaultKind::KillPrimary | ReplicationFaultKind::KillWitness => {
            bounded("restart", cluster.restart(node)).await?
        }
        ReplicationFaultKind::PausePrimary | ReplicationFaultKind::PauseWitness => {
            bounded("resume", cluster.resume(node)).await?
        }
        _ => bounded("heal", cluster.heal()).await?,
    };
    result.map_err(|error| WorkloadError::TaskFailed(format!("replication nemesis: {error}")))
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
                "replication nemesis: {what} did not return within {} s",
                FAULT_CALL_TIMEOUT.as_secs()
            ))
        })
}
