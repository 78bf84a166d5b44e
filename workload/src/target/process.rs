//! A group of `helios node` processes on loopback as a target: clients reach each node's
//! listener over TCP; faults are real ([`LocalCluster`]): SIGKILL and a restart from the same
//! data directory, SIGSTOP/SIGCONT, and partitions through each node's peer filter.

use std::sync::Arc;
use std::time::Duration;

use helios_cluster::process::{LocalCluster, LocalClusterError, LocalClusterSpec};
use tokio::sync::Mutex;

use super::remote::{id_of, RemoteNodes};
use super::{FaultError, FaultTarget, OpError, RegisterTarget, TargetFuture};
use crate::error::WorkloadError;

/// The bound on adding a node: its start, then a learner caught up and two membership commits.
const ADD_NODE_BOUND: Duration = Duration::from_secs(12);

/// How long the nodes may take to stop at the end of a run (SIGTERM, then SIGKILL).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Node processes started for one run, owned by it: dropping the target kills them, and
/// [`FaultTarget::shutdown`] stops them and removes their data directories.
#[derive(Debug)]
pub struct ProcessTarget {
    nodes: RemoteNodes,
    /// The processes. Client operations never take this lock, so a slow fault call (a reap after
    /// SIGKILL) does not hold them up.
    cluster: Arc<Mutex<LocalCluster>>,
}

fn fault_error(error: LocalClusterError) -> FaultError {
    FaultError(error.to_string())
}

impl ProcessTarget {
    /// Starts the processes of `spec` and waits (within `startup`) until one of them leads.
    /// Each client request is bounded by `call_timeout`.
    pub async fn start(
        spec: LocalClusterSpec,
        call_timeout: Duration,
        startup: Duration,
    ) -> Result<Self, WorkloadError> {
        let cluster = LocalCluster::start(spec).map_err(|error| {
            WorkloadError::TaskFailed(format!("cannot start the node processes: {error}"))
        })?;
        let leader = cluster.wait_for_leader(&[], startup).await;
        if let Err(error) = leader {
            tracing::error!(%error, dir = %cluster.dir().display(), "no leader");
            return Err(WorkloadError::ClusterNotReady {
                timeout_ms: startup.as_millis() as u64,
            });
        }
        let addrs = cluster.addresses().into_values().collect();
        Ok(ProcessTarget {
            nodes: RemoteNodes::new(addrs, call_timeout),
            cluster: Arc::new(Mutex::new(cluster)),
        })
    }

    /// Runs a blocking call on the cluster (a SIGKILL waits, bounded, for the reap) off the
    /// runtime's workers.
    async fn blocking(
        &self,
        call: impl FnOnce(&mut LocalCluster) -> Result<(), LocalClusterError> + Send + 'static,
    ) -> Result<(), FaultError> {
        let mut guard = Arc::clone(&self.cluster).lock_owned().await;
        tokio::task::spawn_blocking(move || call(&mut guard))
            .await
            .map_err(|error| FaultError(format!("fault task failed: {error}")))?
            .map_err(fault_error)
    }
}

impl RegisterTarget for ProcessTarget {
    fn node_count(&self) -> u64 {
        self.nodes.len()
    }

    fn read<'a>(
        &'a self,
        node: u64,
        key: &'a str,
    ) -> TargetFuture<'a, Result<Option<String>, OpError>> {
        Box::pin(self.nodes.read(node, key))
    }

    fn write<'a>(
        &'a self,
        node: u64,
        key: &'a str,
        value: &'a str,
    ) -> TargetFuture<'a, Result<(), OpError>> {
        Box::pin(self.nodes.write(node, key, value))
    }

    fn compare_and_set<'a>(
        &'a self,
        node: u64,
        key: &'a str,
        expected: &'a str,
        new: &'a str,
    ) -> TargetFuture<'a, Result<bool, OpError>> {
        Box::pin(self.nodes.compare_and_set(node, key, expected, new))
    }

    fn current_leader(&self) -> TargetFuture<'_, Option<u64>> {
        Box::pin(self.nodes.current_leader())
    }
}

impl FaultTarget for ProcessTarget {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn partition_groups(&self, groups: Vec<Vec<u64>>) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let ids: Vec<Vec<u64>> = groups
                .iter()
                .map(|group| group.iter().copied().map(id_of).collect())
                .collect();
            let cluster = self.cluster.lock().await;
            cluster.partition(&ids).await.map_err(fault_error)
        })
    }

    fn supports_links(&self) -> bool {
        true
    }

    fn block_links(&self, links: Vec<(u64, u64)>) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let cluster = self.cluster.lock().await;
            for (a, b) in links {
                for (from, to) in [(id_of(a), id_of(b)), (id_of(b), id_of(a))] {
                    let admin = cluster.admin(from).map_err(fault_error)?;
                    admin
                        .block_peers(&[to])
                        .await
                        .map_err(|error| FaultError(format!("node {from}: {error}")))?;
                }
            }
            Ok(())
        })
    }

    fn supports_add_node(&self) -> bool {
        true
    }

    fn add_node(&self, blocked: Vec<u64>) -> TargetFuture<'_, Result<u64, FaultError>> {
        Box::pin(async move {
            let blocked: Vec<_> = blocked.into_iter().map(id_of).collect();
            let mut cluster = self.cluster.lock().await;
            let id = cluster
                .add_node(&blocked, ADD_NODE_BOUND)
                .await
                .map_err(fault_error)?;
            let addr = cluster.addresses()[&id].clone();
            let index = self.nodes.push(addr);
            if id_of(index) != id {
                return Err(FaultError(format!(
                    "node {id} was added as workload index {index}, which names node {}",
                    id_of(index)
                )));
            }
            Ok(index)
        })
    }

    fn kill(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.kill(id_of(node))))
    }

    fn restart(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.restart(id_of(node))))
    }

    fn pause(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let mut cluster = self.cluster.lock().await;
            cluster.pause(id_of(node)).map_err(fault_error)
        })
    }

    fn resume(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let mut cluster = self.cluster.lock().await;
            cluster.resume(id_of(node)).map_err(fault_error)
        })
    }

    fn heal(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let mut cluster = self.cluster.lock().await;
            cluster.heal().await.map_err(fault_error)
        })
    }

    fn shutdown(&self) -> TargetFuture<'_, ()> {
        Box::pin(async move {
            let stopped = self
                .blocking(|cluster| {
                    for (id, outcome) in cluster.stop(STOP_GRACE) {
                        tracing::info!(node = id, ?outcome, "node stopped");
                    }
                    // A minute of writes leaves about 100 MB of redb file per node; the run
                    // keeps the nodes' logs and cluster.json, not their data.
                    for node in &cluster.manifest().nodes {
                        if let Err(error) = std::fs::remove_dir_all(&node.data_dir) {
                            tracing::warn!(%error, dir = %node.data_dir.display(), "data directory not removed");
                        }
                    }
                    Ok(())
                })
                .await;
            if let Err(error) = stopped {
                tracing::error!(%error, "stopping the node processes failed");
            }
        })
    }
}
