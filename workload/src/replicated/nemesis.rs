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
use helios_cluster::replication::ReplicationCluster;
use serde::Serialize;
use serde_json::json;

use super::replica_node_name;
use super::schedule::{PlannedReplicationFault, ReplicationFaultKind};
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
    cluster: Arc<ReplicationCluster>,
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
        let node = target(&cluster, fault.kind, fault.shard);
        let (f_start, f_heal) = match fault.kind {
            ReplicationFaultKind::KillPrimary => (Function::Kill, Function::Restart),
            _ => (Function::StartPartition, Function::StopPartition),
        };
        let value = event_value(&cluster, fault.kind, fault.shard, node);
        // Record first, then apply: no effect of a fault may precede its event, or the checker
        // would charge the fault's first disruptions to the window before it.
        let event = recorder.record(EventDraft::nemesis(f_start, value.clone()));
        let applied_ns = since_start(Instant::now());
        apply(&cluster, fault.kind, node).await?;
        progress.n_faults.fetch_add(1, Ordering::Relaxed);
        tracing::info!(fault = fault.kind.as_str(), node, "nemesis: fault started");

        tokio::time::sleep_until((start + fault.end).into()).await;
        let heal = recorder.record(EventDraft::nemesis(f_heal, value));
        undo(&cluster, fault.kind, node).await?;
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
fn target(cluster: &ReplicationCluster, kind: ReplicationFaultKind, shard: usize) -> NodeId {
    match kind {
        ReplicationFaultKind::KillPrimary | ReplicationFaultKind::IsolatePrimary => {
            cluster.primary_id(shard)
        }
        ReplicationFaultKind::IsolateMirror => cluster.mirror_id(shard),
        ReplicationFaultKind::IsolateWitness => cluster.members(shard).witness,
    }
}

/// The fault's event value: its kind, shard and node, and for an isolation the two sides.
fn event_value(
    cluster: &ReplicationCluster,
    kind: ReplicationFaultKind,
    shard: usize,
    node: NodeId,
) -> serde_json::Value {
    let name = replica_node_name(node);
    match kind {
        ReplicationFaultKind::KillPrimary => {
            json!({"nemesis": kind.as_str(), "node": name, "shard": shard})
        }
        _ => {
            let others: Vec<String> = cluster
                .nodes()
                .map(|other| other.id())
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
    cluster: &ReplicationCluster,
    kind: ReplicationFaultKind,
    node: NodeId,
) -> Result<(), WorkloadError> {
    match kind {
        ReplicationFaultKind::KillPrimary => bounded("kill", cluster.kill_node(node)).await,
        _ => bounded("isolate", cluster.isolate(node)).await,
    }
}

async fn undo(
    cluster: &ReplicationCluster,
    kind: ReplicationFaultKind,
    node: NodeId,
) -> Result<(), WorkloadError> {
    match kind {
        ReplicationFaultKind::KillPrimary => bounded("restart", cluster.restart_node(node)).await,
        _ => bounded("heal", cluster.heal_network()).await,
    }
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
