//! The metadata group as Docker containers as a target: clients reach each node through its
//! port published on 127.0.0.1; faults are made with Docker itself ([`DockerCluster`]):
//! `docker kill` and `docker start`, `docker pause` and `unpause`, and `docker network
//! disconnect` and `connect` for partitions.
//!
//! A disconnected container has no network at all, so a partition into a minority and a
//! majority disconnects each minority node: the minority's nodes are cut from each other too,
//! which the nemesis records (see [`FaultTarget::partition_plan`]). Docker cannot cut single
//! links, so the majorities ring is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::process::membership::{join_group, Joiner};
use helios_cluster::process::{
    AdminClient, DockerCluster, DockerClusterSpec, DockerError, CONTAINER_PORT, DOCKER_NODES,
};
use tokio::sync::Mutex;

use super::remote::{id_of, RemoteNodes};
use super::{FaultError, FaultTarget, OpError, RegisterTarget, TargetFuture};
use crate::error::WorkloadError;

/// The bound on adding the spare node: its start, a learner caught up, two membership commits.
const ADD_NODE_BOUND: Duration = Duration::from_secs(20);

/// Containers started for one run, owned by it: dropping the target removes them.
#[derive(Debug)]
pub struct DockerTarget {
    nodes: RemoteNodes,
    /// Whether the spec gave a port for the spare node, so that a node can be added.
    has_spare: bool,
    /// The containers. Client operations never take this lock.
    cluster: Arc<Mutex<DockerCluster>>,
}

fn fault_error(error: DockerError) -> FaultError {
    FaultError(error.to_string())
}

/// The group that stays connected: the largest (the first of the largest, on a tie).
fn kept_group(groups: &[Vec<u64>]) -> Option<&Vec<u64>> {
    groups
        .iter()
        .rev()
        .max_by_key(|group| group.len())
        .filter(|group| !group.is_empty())
}

/// What disconnecting every node outside the largest group makes of `groups`: each of those
/// nodes on its own, then the largest group.
fn disconnection_plan(groups: &[Vec<u64>]) -> Vec<Vec<u64>> {
    let Some(kept) = kept_group(groups) else {
        return groups.to_vec();
    };
    let mut plan: Vec<Vec<u64>> = groups
        .iter()
        .flatten()
        .filter(|node| !kept.contains(node))
        .map(|&node| vec![node])
        .collect();
    plan.sort();
    plan.push(kept.clone());
    plan
}

impl DockerTarget {
    /// Starts the containers of `spec` and waits (within `startup`) until one of them leads.
    /// Each client request is bounded by `call_timeout`.
    pub async fn start(
        spec: DockerClusterSpec,
        call_timeout: Duration,
        startup: Duration,
    ) -> Result<Self, WorkloadError> {
        let has_spare = spec.ports.len() > DOCKER_NODES;
        let cluster = tokio::task::spawn_blocking(move || DockerCluster::up(spec))
            .await
            .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?
            .map_err(|error| {
                WorkloadError::TaskFailed(format!("cannot start the containers: {error}"))
            })?;
        let addrs = cluster.addresses().into_values().collect();
        let target = DockerTarget {
            nodes: RemoteNodes::new(addrs, call_timeout),
            has_spare,
            cluster: Arc::new(Mutex::new(cluster)),
        };
        let deadline = Instant::now() + startup;
        while target.nodes.current_leader().await.is_none() {
            if Instant::now() >= deadline {
                // Dropping the target removes the containers.
                return Err(WorkloadError::ClusterNotReady {
                    timeout_ms: startup.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(target)
    }

    /// Runs a `docker` call (a blocking, bounded command) off the runtime's workers.
    async fn blocking(
        &self,
        call: impl FnOnce(&mut DockerCluster) -> Result<(), DockerError> + Send + 'static,
    ) -> Result<(), FaultError> {
        let mut guard = Arc::clone(&self.cluster).lock_owned().await;
        tokio::task::spawn_blocking(move || call(&mut guard))
            .await
            .map_err(|error| FaultError(format!("fault task failed: {error}")))?
            .map_err(fault_error)
    }
}

impl RegisterTarget for DockerTarget {
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

impl FaultTarget for DockerTarget {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn partition_plan(&self, groups: &[Vec<u64>]) -> Vec<Vec<u64>> {
        disconnection_plan(groups)
    }

    fn partition_groups(&self, groups: Vec<Vec<u64>>) -> TargetFuture<'_, Result<(), FaultError>> {
        let kept = kept_group(&groups).cloned().unwrap_or_default();
        let cut: Vec<u64> = groups
            .into_iter()
            .flatten()
            .filter(|node| !kept.contains(node))
            .collect();
        Box::pin(self.blocking(move |cluster| {
            for node in cut {
                cluster.disconnect(id_of(node))?;
            }
            Ok(())
        }))
    }

    fn supports_links(&self) -> bool {
        false
    }

    fn block_links(&self, _links: Vec<(u64, u64)>) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async {
            Err(FaultError(
                "docker networks cannot cut single links; the run refuses majorities-ring"
                    .to_owned(),
            ))
        })
    }

    fn supports_add_node(&self) -> bool {
        self.has_spare
    }

    /// Starts the compose file's spare node `m6` and has the leader make it a voter. Every
    /// member knows its address from the start (`--spare-peers`), so members cut off by the
    /// partition (disconnected, hence `blocked` is already in effect) or paused reach it once
    /// they are back.
    fn add_node(&self, blocked: Vec<u64>) -> TargetFuture<'_, Result<u64, FaultError>> {
        Box::pin(async move {
            let mut guard = Arc::clone(&self.cluster).lock_owned().await;
            let (id, guard) = tokio::task::spawn_blocking(move || {
                let id = guard.start_spare();
                (id, guard)
            })
            .await
            .map_err(|error| FaultError(format!("fault task failed: {error}")))?;
            let id = id.map_err(fault_error)?;
            let addrs = guard.addresses();
            let unreachable: Vec<_> = guard
                .disconnected()
                .into_iter()
                .chain(guard.paused())
                .collect();
            let members: Vec<_> = (1..=DOCKER_NODES as u64)
                .filter(|member| !unreachable.contains(member))
                .filter(|member| !blocked.iter().any(|&node| id_of(node) == *member))
                .map(|member| (member, AdminClient::new(addrs[&member].clone())))
                .collect();
            let joiner = Joiner {
                id,
                admin: AdminClient::new(addrs[&id].clone()),
                peer_addr: format!("{}:{CONTAINER_PORT}", DockerCluster::service(id)),
            };
            join_group(&joiner, &members, &[], ADD_NODE_BOUND)
                .await
                .map_err(|error| FaultError(error.to_string()))?;
            drop(guard);
            let index = self.nodes.push(addrs[&id].clone());
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
        Box::pin(self.blocking(move |cluster| cluster.start(id_of(node))))
    }

    fn pause(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.pause(id_of(node))))
    }

    fn resume(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.unpause(id_of(node))))
    }

    fn heal(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(DockerCluster::reconnect_all))
    }

    fn shutdown(&self) -> TargetFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = self.blocking(DockerCluster::down).await {
                tracing::error!(%error, "removing the containers failed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_group_stays_connected_and_every_other_node_is_cut_alone() {
        let groups = vec![vec![1, 3], vec![0, 2, 4]];
        assert_eq!(kept_group(&groups), Some(&vec![0, 2, 4]));
        let isolate = vec![vec![2], vec![0, 1, 3, 4]];
        assert_eq!(kept_group(&isolate), Some(&vec![0, 1, 3, 4]));
        assert_eq!(kept_group(&[vec![0, 1], vec![2, 3]]), Some(&vec![0, 1]));
        assert_eq!(
            disconnection_plan(&groups),
            vec![vec![1], vec![3], vec![0, 2, 4]],
            "the minority is cut apart: each of its nodes loses the network"
        );
        assert_eq!(disconnection_plan(&isolate), isolate);
    }
}
