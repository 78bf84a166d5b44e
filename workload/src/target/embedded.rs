//! The in-process cluster as a target: [`RaftTestCluster`] over the simulated network, whose
//! node ids are already the workload's indices.

use helios_cluster::{MetadataError, RaftTestCluster};

use super::{FaultError, FaultTarget, OpError, RegisterTarget, TargetFuture};

fn op_error(error: MetadataError) -> OpError {
    OpError::from_metadata(&error, Some)
}

impl RegisterTarget for RaftTestCluster {
    fn node_count(&self) -> u64 {
        self.nodes.len() as u64
    }

    fn read<'a>(
        &'a self,
        node: u64,
        key: &'a str,
    ) -> TargetFuture<'a, Result<Option<String>, OpError>> {
        Box::pin(async move { self.node(node).read(key).await.map_err(op_error) })
    }

    fn write<'a>(
        &'a self,
        node: u64,
        key: &'a str,
        value: &'a str,
    ) -> TargetFuture<'a, Result<(), OpError>> {
        Box::pin(async move {
            self.node(node)
                .propose_change(key, value)
                .await
                .map_err(op_error)
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        node: u64,
        key: &'a str,
        expected: &'a str,
        new: &'a str,
    ) -> TargetFuture<'a, Result<bool, OpError>> {
        Box::pin(async move {
            self.node(node)
                .compare_and_set(key, Some(expected), new)
                .await
                .map_err(op_error)
        })
    }

    fn current_leader(&self) -> TargetFuture<'_, Option<u64>> {
        Box::pin(RaftTestCluster::current_leader(self))
    }
}

impl FaultTarget for RaftTestCluster {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn partition_groups(&self, groups: Vec<Vec<u64>>) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            RaftTestCluster::partition_groups(self, groups).await;
            Ok(())
        })
    }

    fn supports_links(&self) -> bool {
        true
    }

    fn block_links(&self, links: Vec<(u64, u64)>) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            for (a, b) in links {
                self.partition_one_way(a, b).await;
                self.partition_one_way(b, a).await;
            }
            Ok(())
        })
    }

    fn kill(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            self.kill_node(node).await;
            Ok(())
        })
    }

    fn restart(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            self.restart_node(node).await;
            Ok(())
        })
    }

    fn pause(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            self.pause_node(node).await;
            Ok(())
        })
    }

    fn resume(&self, node: u64) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            self.resume_node(node).await;
            Ok(())
        })
    }

    fn heal(&self) -> TargetFuture<'_, Result<(), FaultError>> {
        Box::pin(async move {
            RaftTestCluster::heal(self).await;
            Ok(())
        })
    }

    fn shutdown(&self) -> TargetFuture<'_, ()> {
        Box::pin(RaftTestCluster::shutdown(self))
    }
}
