//! Replicated shards in Docker containers as a [`ReplicaTarget`]: clients reach each member
//! through its port published on 127.0.0.1 ([`ShardClient`]); kills, restarts and pauses are
//! Docker's own ([`DockerShards`]: `docker kill`, `docker start`, `docker pause`/`unpause`), and
//! an isolation goes through the members' peer filters, as for processes, so clients still reach
//! the isolated member (a `docker network disconnect` would cut them off too).

use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::metadata::NodeId;
use helios_cluster::process::{DockerError, DockerShards, DockerShardsSpec, ShardClient};
use helios_cluster::replication::{LogIndex, ReplicationError, ShardMembers};
use tokio::sync::Mutex;

use super::target::{primary_of, shard_members, ReplicaTarget};
use crate::error::WorkloadError;
use crate::target::{FaultError, TargetFuture};

/// The bound on one admin call (status, peer filter) to a member.
const ADMIN_CALL: Duration = Duration::from_secs(2);

/// Shard members in containers started for one run, owned by it: dropping the target removes
/// them.
#[derive(Debug)]
pub struct DockerShardTarget {
    client: ShardClient,
    /// A client with a short bound, for status polls.
    status_client: ShardClient,
    /// A client for the peer filters.
    admin_client: ShardClient,
    shards: usize,
    /// The containers. Client operations never take this lock.
    cluster: Arc<Mutex<DockerShards>>,
}

fn fault_error(error: DockerError) -> FaultError {
    FaultError(error.to_string())
}

fn member_error(member: NodeId, what: &str, error: ReplicationError) -> FaultError {
    FaultError(format!("shard member {member}: {what}: {error}"))
}

impl DockerShardTarget {
    /// Starts the containers of `spec` and waits, within `startup`, until every shard has a
    /// primary. Each client call is bounded by `call_timeout`.
    pub async fn start(
        spec: DockerShardsSpec,
        call_timeout: Duration,
        startup: Duration,
    ) -> Result<Self, WorkloadError> {
        let cluster = tokio::task::spawn_blocking(move || DockerShards::up(spec))
            .await
            .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?
            .map_err(|error| {
                WorkloadError::TaskFailed(format!("cannot start the shard containers: {error}"))
            })?;
        let target = DockerShardTarget {
            client: cluster.shard_client(call_timeout),
            status_client: cluster.shard_client(Duration::from_millis(200)),
            admin_client: cluster.shard_client(ADMIN_CALL),
            shards: cluster.shard_count(),
            cluster: Arc::new(Mutex::new(cluster)),
        };
        let deadline = Instant::now() + startup;
        for shard in 0..target.shards {
            while !target.has_primary(shard).await {
                if Instant::now() >= deadline {
                    target.log_members(shard).await;
                    // Dropping the target removes the containers.
                    return Err(WorkloadError::ClusterNotReady {
                        timeout_ms: startup.as_millis() as u64,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(target)
    }

    /// Whether a data node of `shard` acts as primary now.
    async fn has_primary(&self, shard: usize) -> bool {
        for member in shard_members(shard).replicas {
            if let Ok(status) = self.status_client.status(shard, member).await {
                if status.is_primary {
                    return true;
                }
            }
        }
        false
    }

    /// Logs the end of each member's `docker logs` of `shard`, for diagnosis.
    async fn log_members(&self, shard: usize) {
        let members = shard_members(shard);
        let cluster = self.cluster.lock().await;
        for member in [members.replicas[0], members.replicas[1], members.witness] {
            match cluster.logs(member) {
                Ok(log) => {
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    tracing::error!(shard, member, log = %tail.join("\n"), "no primary");
                }
                Err(error) => tracing::error!(shard, member, %error, "no docker logs"),
            }
        }
    }

    /// Runs a `docker` call (a blocking, bounded command) off the runtime's workers.
    async fn blocking(
        &self,
        call: impl FnOnce(&mut DockerShards) -> Result<(), DockerError> + Send + 'static,
    ) -> Result<(), FaultError> {
        let mut guard = Arc::clone(&self.cluster).lock_owned().await;
        tokio::task::spawn_blocking(move || call(&mut guard))
            .await
            .map_err(|error| FaultError(format!("fault task failed: {error}")))?
            .map_err(fault_error)
    }
}

impl ReplicaTarget for DockerShardTarget {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn shard_count(&self) -> usize {
        self.shards
    }

    fn members(&self, shard: usize) -> ShardMembers {
        shard_members(shard)
    }

    fn write_at<'a>(
        &'a self,
        shard: usize,
        node: NodeId,
        key: &'a [u8],
        value: &'a [u8],
    ) -> TargetFuture<'a, Result<LogIndex, ReplicationError>> {
        Box::pin(self.client.write_at(shard, node, key, value))
    }

    fn read_linearizable<'a>(
        &'a self,
        shard: usize,
        node: NodeId,
        key: &'a [u8],
    ) -> TargetFuture<'a, Result<Option<Vec<u8>>, ReplicationError>> {
        Box::pin(self.client.read_linearizable(shard, node, key))
    }

    fn primary_id(&self, shard: usize) -> TargetFuture<'_, NodeId> {
        Box::pin(primary_of(&self.status_client, shard))
    }

    fn kill(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.kill(node)))
    }

    fn restart(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.start(node)))
    }

    fn pause(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.pause(node)))
    }

    fn resume(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.unpause(node)))
    }

    fn isolate(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            // Held so that no Docker fault runs between the filters.
            let _cluster = self.cluster.lock().await;
            let shard = (node / 3) as usize;
            let members = shard_members(shard);
            let others: Vec<NodeId> = [members.replicas[0], members.replicas[1], members.witness]
                .into_iter()
                .filter(|&m| m != node)
                .collect();
            tracing::warn!(shard, member = node, "isolate shard member (peer filters)");
            self.admin_client
                .block_peers(shard, node, &others)
                .await
                .map_err(|error| member_error(node, "block peers", error))?;
            for other in others {
                self.admin_client
                    .block_peers(shard, other, &[node])
                    .await
                    .map_err(|error| member_error(other, "block peers", error))?;
            }
            Ok(())
        })
    }

    fn heal(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            // Unpause every paused member first: a frozen member cannot answer its admin call.
            self.blocking(|cluster| {
                let paused: Vec<NodeId> = cluster
                    .members()
                    .filter(|&m| cluster.is_paused(m))
                    .collect();
                for member in paused {
                    cluster.unpause(member)?;
                }
                Ok(())
            })
            .await?;
            let cluster = self.cluster.lock().await;
            tracing::warn!("heal: empty every member's peer filter");
            // A killed member starts again with an empty filter.
            let running: Vec<NodeId> = cluster
                .members()
                .filter(|&m| !cluster.is_killed(m))
                .collect();
            for member in running {
                self.admin_client
                    .unblock_all_peers((member / 3) as usize, member)
                    .await
                    .map_err(|error| member_error(member, "unblock peers", error))?;
            }
            Ok(())
        })
    }

    fn restore_all(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(DockerShards::restore_all))
    }

    fn shutdown(&self) -> TargetFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = self.blocking(DockerShards::down).await {
                tracing::error!(%error, "removing the shard containers failed");
            }
        })
    }
}
