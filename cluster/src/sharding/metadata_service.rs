//! `MetadataService`: the seed's sharding API over the metadata Raft group. Every change goes
//! through the Raft log; every call is bounded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::LogId;

use super::routing::Routing;
use super::shard_map::{
    Column, CreateTableRequest, ShardId, ShardMapCommand, ShardMapError, ShardMapOutcome,
    StorageNodeId, TableSchema,
};
use crate::metadata::{MetadataCommand, MetadataError, NodeId};
use crate::sql::ToSqlValue;
use crate::storage::key_hash;
use crate::test_cluster::RaftTestCluster;

/// Why a metadata service call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataServiceError {
    /// The shard map refused the command; nothing changed.
    #[error(transparent)]
    ShardMap(#[from] ShardMapError),
    /// No leader could commit or serve the request within the bound; a change may still apply.
    #[error("metadata group unavailable after {after:?}: {last}")]
    Unavailable {
        /// How long the call tried.
        after: Duration,
        /// The last error seen.
        last: MetadataError,
    },
    /// No table of that name.
    #[error("unknown table {table:?}")]
    UnknownTable {
        /// The table named.
        table: String,
    },
    /// No storage node owns anything yet.
    #[error("no active storage node")]
    NoStorageNodes,
}

impl MetadataServiceError {
    /// Whether a change that failed with this error may nevertheless apply.
    pub fn outcome_is_unknown(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// The routing built from a leader's applied state, with the entry it reflects.
type CachedRouting = (Option<LogId<NodeId>>, Arc<Routing>);

/// A client of the metadata Raft group. Clones share the group.
#[derive(Clone, Debug)]
pub struct MetadataService {
    cluster: Arc<RaftTestCluster>,
    /// How long one call keeps retrying through elections and timeouts.
    call_timeout: Duration,
    /// The last routing built, keyed by the applied log id it reflects.
    cache: Arc<Mutex<Option<CachedRouting>>>,
}

/// How long to wait between retries of one call.
const RETRY_INTERVAL: Duration = Duration::from_millis(20);

impl MetadataService {
    /// The seed API: a metadata group of `n` Raft nodes over the simulated network.
    pub async fn new_test(n: usize) -> Self {
        Self::from_cluster(Arc::new(RaftTestCluster::new(n).await))
    }

    /// A service over an existing group.
    pub fn from_cluster(cluster: Arc<RaftTestCluster>) -> Self {
        Self {
            cluster,
            call_timeout: Duration::from_secs(10),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The Raft group, for fault injection (partition, kill, pause of metadata nodes).
    pub fn raft(&self) -> &RaftTestCluster {
        &self.cluster
    }

    /// Runs `attempt` against the current leader until it succeeds or the call bound passes.
    async fn with_leader<T, F, Fut>(&self, mut attempt: F) -> Result<T, MetadataServiceError>
    where
        F: FnMut(crate::metadata::MetadataNode) -> Fut,
        Fut: std::future::Future<Output = Result<T, MetadataError>>,
    {
        let deadline = Instant::now() + self.call_timeout;
        let mut last = MetadataError::NotLeader { leader: None };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(MetadataServiceError::Unavailable {
                    after: self.call_timeout,
                    last,
                });
            }
            if let Some(leader) = self.cluster.wait_for_leader(remaining).await {
                match attempt(self.cluster.node(leader).clone()).await {
                    Ok(value) => return Ok(value),
                    Err(error) => last = error,
                }
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Commits `command` and returns what it did. Commands are idempotent or fenced, so a retry
    /// after an unknown outcome is safe.
    pub async fn propose(
        &self,
        command: ShardMapCommand,
    ) -> Result<ShardMapOutcome, MetadataServiceError> {
        let response = self
            .with_leader(|node| {
                let command = MetadataCommand::ShardMap(command.clone());
                async move { node.propose(command).await }
            })
            .await?;
        let outcome = response
            .shard_map
            .expect("a shard map command gets a shard map outcome");
        Ok(outcome?)
    }

    /// The routing as of a linearizable read: the leader confirms its leadership with a quorum
    /// (read index) before answering from its applied state.
    pub async fn routing(&self) -> Result<Arc<Routing>, MetadataServiceError> {
        self.with_leader(|node| async move {
            // `read` performs the read-index round; the key is irrelevant.
            node.read("").await?;
            Ok(self.routing_of(&node))
        })
        .await
    }

    /// The routing of `node`'s applied state, built once per applied entry.
    fn routing_of(&self, node: &crate::metadata::MetadataNode) -> Arc<Routing> {
        let applied = node.storage().last_applied();
        let mut cache = self.cache.lock().expect("routing cache lock poisoned");
        if let Some((id, routing)) = cache.as_ref() {
            if *id == applied {
                return Arc::clone(routing);
            }
        }
        let (map, applied) = node.storage().shard_map();
        let routing = Routing::new(map);
        *cache = Some((applied, Arc::clone(&routing)));
        routing
    }

    /// The routing of the current leader's applied state, without a quorum round: a hint, as
    /// every router's cache is (storage nodes enforce ownership by epoch).
    pub async fn routing_hint(&self) -> Result<Arc<Routing>, MetadataServiceError> {
        self.with_leader(|node| async move { Ok(self.routing_of(&node)) })
            .await
    }

    /// The seed API: creates a table with a strict schema.
    pub async fn create_table(
        &self,
        request: CreateTableRequest,
    ) -> Result<(), MetadataServiceError> {
        let schema = TableSchema {
            name: request.name,
            shard_key: request.shard_key,
            columns: request.schema,
            strict: true,
        };
        self.propose(ShardMapCommand::CreateTable(schema)).await?;
        Ok(())
    }

    /// Creates a table with only its key declared (`DataType::BigInt`); other columns take any
    /// type (the seed's `StorageCluster::create_table(name, key)`).
    pub async fn create_keyed_table(
        &self,
        name: &str,
        shard_key: &str,
    ) -> Result<(), MetadataServiceError> {
        let schema = TableSchema {
            name: name.to_string(),
            shard_key: shard_key.to_string(),
            columns: vec![Column {
                name: shard_key.to_string(),
                dtype: super::shard_map::DataType::BigInt,
            }],
            strict: false,
        };
        self.propose(ShardMapCommand::CreateTable(schema)).await?;
        Ok(())
    }

    /// The seed API: registers an active storage node at once (bootstrap: no data moves).
    pub async fn add_storage_node(
        &self,
        name: &str,
        addr: &str,
    ) -> Result<StorageNodeId, MetadataServiceError> {
        let command = ShardMapCommand::RegisterNode {
            name: name.to_string(),
            addr: addr.to_string(),
        };
        let outcome = self.propose(command).await?;
        Ok(outcome.node.expect("registration names the node"))
    }

    /// The seed API: the shard that owns `key` of `table` now.
    pub async fn get_shard_for_key<K: ToSqlValue + ?Sized>(
        &self,
        table: &str,
        key: &K,
    ) -> Result<ShardId, MetadataServiceError> {
        let routing = self.routing_hint().await?;
        if routing.table(table).is_none() {
            return Err(MetadataServiceError::UnknownTable {
                table: table.to_string(),
            });
        }
        routing
            .owner(key_hash(&key.to_sql_value()))
            .ok_or(MetadataServiceError::NoStorageNodes)
    }
}
