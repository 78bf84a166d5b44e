//! What the replicated register workload needs of a cluster, so that one runner drives the
//! in-process [`ReplicationCluster`] and replicated shards of `helios node --role
//! storage|witness` processes ([`LocalCluster`]) or containers
//! ([`super::docker::DockerShardTarget`]).
//!
//! Members keep the protocol's ids in all of them: shard `s` has data nodes `3s` (the first
//! primary) and `3s + 1`, and witness `3s + 2`. Client calls go to one member and return its own
//! answer (the client follows redirects); outcomes are [`ReplicationError`]s either way, the
//! process client translating transport failures into the same variants.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use helios_cluster::metadata::NodeId;
use helios_cluster::process::{
    member_process, LocalCluster, LocalClusterError, LocalClusterSpec, ShardClient,
};
use helios_cluster::replication::{LogIndex, ReplicationCluster, ReplicationError, ShardMembers};
use tokio::sync::Mutex;

use crate::error::WorkloadError;
use crate::target::{FaultError, TargetFuture};

/// The operations and faults of a replicated store's members.
pub trait ReplicaTarget: Send + Sync + fmt::Debug {
    /// A short name for logs and the history header: `replication` (in-process),
    /// `processes` or `docker`.
    fn name(&self) -> &'static str;

    /// The number of shards.
    fn shard_count(&self) -> usize;

    /// The members of `shard`.
    fn members(&self, shard: usize) -> ShardMembers;

    /// Writes through `node`; the log index of the acknowledged write.
    fn write_at<'a>(
        &'a self,
        shard: usize,
        node: NodeId,
        key: &'a [u8],
        value: &'a [u8],
    ) -> TargetFuture<'a, Result<LogIndex, ReplicationError>>;

    /// A linearizable read through `node`.
    fn read_linearizable<'a>(
        &'a self,
        shard: usize,
        node: NodeId,
        key: &'a [u8],
    ) -> TargetFuture<'a, Result<Option<Vec<u8>>, ReplicationError>>;

    /// The data node that acts as `shard`'s primary now, else the one the newest record
    /// names; bounded and quick.
    fn primary_id(&self, shard: usize) -> TargetFuture<'_, NodeId>;

    /// Kills `node` at once.
    fn kill(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Starts a killed `node` again from what it kept.
    fn restart(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Freezes `node`.
    fn pause(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Lets a frozen `node` continue.
    fn resume(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Cuts `node` off from the other members, both ways; clients still reach it.
    fn isolate(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Undoes every isolation.
    fn heal(&self) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Resumes every paused member and starts every member that is down.
    fn restore_all(&self) -> TargetFuture<'_, Result<(), FaultError>>;

    /// Stops every member; called once at the end of a run, on every path.
    fn shutdown(&self) -> TargetFuture<'_, ()>;
}

impl ReplicaTarget for ReplicationCluster {
    fn name(&self) -> &'static str {
        "replication"
    }

    fn shard_count(&self) -> usize {
        ReplicationCluster::shard_count(self)
    }

    fn members(&self, shard: usize) -> ShardMembers {
        ReplicationCluster::members(self, shard)
    }

    fn write_at<'a>(
        &'a self,
        _shard: usize,
        node: NodeId,
        key: &'a [u8],
        value: &'a [u8],
    ) -> TargetFuture<'a, Result<LogIndex, ReplicationError>> {
        Box::pin(async move { self.node(node).write_at(key, value).await })
    }

    fn read_linearizable<'a>(
        &'a self,
        _shard: usize,
        node: NodeId,
        key: &'a [u8],
    ) -> TargetFuture<'a, Result<Option<Vec<u8>>, ReplicationError>> {
        Box::pin(async move { self.node(node).read_linearizable(key).await })
    }

    fn primary_id(&self, shard: usize) -> TargetFuture<'_, NodeId> {
        Box::pin(async move { ReplicationCluster::primary_id(self, shard) })
    }

    fn kill(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            self.kill_node(node).await;
            Ok(())
        })
    }

    fn restart(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            self.restart_node(node).await;
            Ok(())
        })
    }

    fn pause(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            ReplicationCluster::pause(self, node).await;
            Ok(())
        })
    }

    fn resume(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            ReplicationCluster::resume(self, node).await;
            Ok(())
        })
    }

    fn isolate(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            ReplicationCluster::isolate(self, node).await;
            Ok(())
        })
    }

    fn heal(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            self.heal_network().await;
            Ok(())
        })
    }

    fn restore_all(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let ids: Vec<NodeId> = self.nodes().map(|node| node.id()).collect();
            for id in ids {
                ReplicationCluster::resume(self, id).await;
                self.restart_node(id).await;
            }
            Ok(())
        })
    }

    fn shutdown(&self) -> TargetFuture<'_, ()> {
        Box::pin(async move { ReplicationCluster::shutdown(self) })
    }
}

/// The members of `shard` of member processes or containers: data nodes `3s` and `3s + 1`,
/// witness `3s + 2`.
pub(crate) fn shard_members(shard: usize) -> ShardMembers {
    let base = 3 * shard as NodeId;
    ShardMembers {
        replicas: [base, base + 1],
        witness: base + 2,
    }
}

/// The data node of `shard` that acts as primary now, else the one the newest record either
/// data node answers with names, else the first; `client` should have a short bound.
pub(crate) async fn primary_of(client: &ShardClient, shard: usize) -> NodeId {
    let replicas = shard_members(shard).replicas;
    let mut newest = None;
    for node in replicas {
        if let Ok(status) = client.status(shard, node).await {
            if status.is_primary {
                return node;
            }
            if newest.is_none_or(|(epoch, _)| status.record.epoch > epoch) {
                newest = Some((status.record.epoch, status.record.primary));
            }
        }
    }
    newest.map_or(replicas[0], |(_, primary)| primary)
}

/// How long the member processes may take to stop at the end of a run.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Replicated shards of member processes started for one run, owned by it: dropping the target
/// kills them.
#[derive(Debug)]
pub struct ShardProcessTarget {
    client: ShardClient,
    /// A client with a short bound, for status polls.
    status_client: ShardClient,
    shards: usize,
    /// Client operations never take this lock, so a slow fault call does not hold them up.
    cluster: Arc<Mutex<LocalCluster>>,
}

fn fault_error(error: LocalClusterError) -> FaultError {
    FaultError(error.to_string())
}

impl ShardProcessTarget {
    /// Starts the processes of `spec` (its `n_shards` shards) and waits, within `startup`,
    /// until every shard has a primary. Each client call is bounded by `call_timeout`.
    pub async fn start(
        spec: LocalClusterSpec,
        call_timeout: Duration,
        startup: Duration,
    ) -> Result<Self, WorkloadError> {
        let cluster = LocalCluster::start(spec).map_err(|error| {
            WorkloadError::TaskFailed(format!("cannot start the member processes: {error}"))
        })?;
        let shards = cluster.shard_count();
        for shard in 0..shards {
            if let Err(error) = cluster.wait_for_primary(shard, startup).await {
                tracing::error!(%error, dir = %cluster.dir().display(), "no primary");
                return Err(WorkloadError::ClusterNotReady {
                    timeout_ms: startup.as_millis() as u64,
                });
            }
        }
        Ok(Self {
            client: cluster.shard_client(call_timeout),
            status_client: cluster.shard_client(Duration::from_millis(200)),
            shards,
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

impl ReplicaTarget for ShardProcessTarget {
    fn name(&self) -> &'static str {
        "processes"
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
        Box::pin(self.blocking(move |cluster| cluster.kill(member_process(node))))
    }

    fn restart(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.restart(member_process(node))))
    }

    fn pause(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.pause(member_process(node))))
    }

    fn resume(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(self.blocking(move |cluster| cluster.resume(member_process(node))))
    }

    fn isolate(&self, node: NodeId) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let cluster = self.cluster.lock().await;
            cluster.isolate_member(node).await.map_err(fault_error)
        })
    }

    fn heal(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let mut cluster = self.cluster.lock().await;
            cluster.heal().await.map_err(fault_error)
        })
    }

    fn restore_all(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            let members: Vec<NodeId> = (0..3 * self.shards as NodeId).collect();
            for node in members {
                self.blocking(move |cluster| {
                    let id = member_process(node);
                    if cluster.is_paused(id) {
                        cluster.resume(id)?;
                    }
                    if !cluster.is_running(id) {
                        cluster.restart(id)?;
                    }
                    Ok(())
                })
                .await?;
            }
            Ok(())
        })
    }

    fn shutdown(&self) -> TargetFuture<'_, ()> {
        Box::pin(async move {
            let cluster = Arc::clone(&self.cluster);
            let stopped = tokio::task::spawn_blocking(move || {
                let mut cluster = cluster.blocking_lock();
                cluster.stop(STOP_GRACE);
            })
            .await;
            if let Err(error) = stopped {
                tracing::error!(%error, "stopping the member processes failed");
            }
        })
    }
}

/// A shared target, as the runner's clients and nemesis hold it.
pub type SharedReplicaTarget = Arc<dyn ReplicaTarget>;
