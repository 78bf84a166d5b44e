//! The register workload against the replicated store (`ReplicationCluster`: a primary, a
//! mirror and a witness per shard), with a nemesis that kills and isolates primaries, mirrors
//! and witnesses, and the harness's own failover measurement to set beside the checker's RTO.
//!
//! The history has the Raft register workload's format (same recorder, same events) with the
//! cluster in its header's `"target"` (`replication` in-process, `processes` or `docker`, see
//! [`target`] and [`docker`]); nodes are named `r0`, `r1`, ...

pub mod client;
pub mod docker;
pub mod failover;
pub mod nemesis;
pub mod runner;
pub mod schedule;
pub mod target;

pub use docker::DockerShardTarget;
pub use runner::{run_replicated, ReplicatedRunConfig, ReplicatedRunOutcome};
pub use schedule::ReplicationFaultKind;
pub use target::{ReplicaTarget, ShardProcessTarget};

/// The wire name of replication node `id`, e.g. `r2`.
pub fn replica_node_name(id: helios_cluster::metadata::NodeId) -> String {
    format!("r{id}")
}
