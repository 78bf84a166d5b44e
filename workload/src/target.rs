//! What the register workload needs of a cluster, so that one runner drives the in-process
//! cluster, a group of `helios node` processes, and the same group in Docker containers.
//!
//! - [`RegisterTarget`]: nodes `0..node_count`, each asked directly for a read, a write or a
//!   compare-and-set (the client, not the target, follows leader hints), and who leads now.
//! - [`FaultTarget`]: the nemesis's faults on those nodes. Each target makes them with its own
//!   means (the simulated network, signals and peer filters, `docker kill`/`pause`/`network
//!   disconnect`); the nemesis records every fault before it asks for it, whatever the target.
//!
//! Node indices are the workload's (`0..n`, named `m0..`); a target that numbers its nodes
//! otherwise (processes are `1..=n`) translates, leader hints included.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use helios_cluster::MetadataError;

pub mod docker;
mod embedded;
pub mod process;
pub mod remote;

pub use docker::DockerTarget;
pub use process::ProcessTarget;

/// A boxed future that may cross threads, as the targets are shared between tasks.
pub type TargetFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why one client operation did not succeed, and whether it may still take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// The operation certainly did not take effect: the node refused it before proposing
    /// anything, or nothing reached the node.
    Definite {
        /// The leader the refusing node named, as a workload index.
        leader: Option<u64>,
        /// What happened.
        message: String,
    },
    /// The outcome is unknown: a request reached a node and no answer came back, or the node
    /// itself could not tell.
    Unknown {
        /// What happened.
        message: String,
    },
}

impl OpError {
    /// Whether a write that failed so may nevertheless take effect (Jepsen `info`).
    pub fn outcome_is_unknown(&self) -> bool {
        matches!(self, OpError::Unknown { .. })
    }

    /// The leader the refusing node named.
    pub fn leader(&self) -> Option<u64> {
        match self {
            OpError::Definite { leader, .. } => *leader,
            OpError::Unknown { .. } => None,
        }
    }

    /// A node's own refusal, with its leader hint translated by `to_index`.
    pub fn from_metadata(error: &MetadataError, to_index: impl Fn(u64) -> Option<u64>) -> Self {
        let message = error.to_string();
        if error.outcome_is_unknown() {
            return OpError::Unknown { message };
        }
        let leader = match error {
            MetadataError::NotLeader { leader } => leader.and_then(to_index),
            _ => None,
        };
        OpError::Definite { leader, message }
    }
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::Definite { message, .. } | OpError::Unknown { message } => {
                f.write_str(message)
            }
        }
    }
}

/// Why a fault could not be applied or undone. It ends the run: the cluster's state would be
/// unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultError(pub String);

/// The register operations of nodes `0..node_count`.
pub trait RegisterTarget: Send + Sync + fmt::Debug {
    /// The number of nodes.
    fn node_count(&self) -> u64;

    /// A linearizable read of `key` at `node`.
    fn read<'a>(
        &'a self,
        node: u64,
        key: &'a str,
    ) -> TargetFuture<'a, Result<Option<String>, OpError>>;

    /// Sets `key` to `value` through `node`.
    fn write<'a>(
        &'a self,
        node: u64,
        key: &'a str,
        value: &'a str,
    ) -> TargetFuture<'a, Result<(), OpError>>;

    /// Sets `key` to `new` through `node` if it holds `expected`; whether it did.
    fn compare_and_set<'a>(
        &'a self,
        node: u64,
        key: &'a str,
        expected: &'a str,
        new: &'a str,
    ) -> TargetFuture<'a, Result<bool, OpError>>;

    /// The node that leads and may serve now, if one is known; bounded and quick (a paused or
    /// dead node does not hold it up for long).
    fn current_leader(&self) -> TargetFuture<'_, Option<u64>>;
}

/// The faults of the register nemesis. Every call is bounded by the target, and again by the
/// nemesis.
pub trait FaultTarget: RegisterTarget {
    /// A short name for logs and results: `embedded`, `processes`, `docker`.
    fn name(&self) -> &'static str;

    /// The groups this target would cut for `groups`, which the nemesis records before it
    /// applies them. A target may cut more than asked: Docker disconnects each node outside the
    /// largest group from the network, so those nodes are each on their own.
    fn partition_plan(&self, groups: &[Vec<u64>]) -> Vec<Vec<u64>> {
        groups.to_vec()
    }

    /// Cuts the nodes into `groups` (as [`FaultTarget::partition_plan`] gave them): no Raft
    /// message crosses from one group to another.
    fn partition_groups(&self, groups: Vec<Vec<u64>>) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Whether [`FaultTarget::block_links`] is supported.
    fn supports_links(&self) -> bool;

    /// Blocks exactly these links, both ways (the majorities ring).
    fn block_links(&self, links: Vec<(u64, u64)>) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Whether [`FaultTarget::add_node`] is supported.
    fn supports_add_node(&self) -> bool {
        false
    }

    /// Adds a node to the group, cut off from `blocked` (so it joins the other side of a
    /// partition), and returns its index, the next one; clients may choose it from then on.
    fn add_node(&self, blocked: Vec<u64>) -> TargetFuture<'_, Result<u64, FaultError>> {
        let _ = blocked;
        Box::pin(async move {
            Err(FaultError(format!(
                "the {} cluster cannot add nodes",
                self.name()
            )))
        })
    }

    /// Kills `node` at once, without a chance to flush or say goodbye.
    fn kill(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Starts a killed `node` again from what it kept.
    fn restart(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Freezes `node`.
    fn pause(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Lets a frozen `node` continue.
    fn resume(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Undoes every partition and blocked link.
    fn heal(&self) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Stops every node; called once at the end of a run, on every path.
    fn shutdown(&self) -> TargetFuture<'_, ()>;
}
