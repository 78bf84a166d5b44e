//! `StorageCluster`: storage nodes placed by the metadata group's ring, a router that sends
//! each request to the owner at the router's epoch, the seed's SQL front end, and online
//! rebalancing when a node joins. Clones share the cluster, so writers can run concurrently.

mod error;
mod query;
mod rebalance;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crate::metadata::NodeSettings;
use crate::sharding::{
    CreateTableRequest, MetadataService, MoveLimits, Routing, ShardMapCommand, StorageNodeId,
    TableSchema,
};
use crate::sql::{Row, SqlValue, ToSqlValue};
use crate::storage::{key_hash, InvalidationBus, NodeError, StorageNode};
use crate::test_cluster::{ClusterOptions, RaftTestCluster};

pub use error::ClusterError;
pub(crate) use query::{project, validate_row};
pub use query::{QueryResult, ResultRow};
pub use rebalance::{RebalanceProgress, RebalanceStatus};

/// How a storage cluster is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageClusterOptions {
    /// Storage nodes at start, named `node_0..`, all active (bootstrap).
    pub n_storage_nodes: usize,
    /// Metadata Raft nodes.
    pub n_metadata_nodes: usize,
    /// Drives every random choice of the metadata group's simulated network.
    pub seed: u64,
    /// When set, each node keeps its data in `data_dir/<node name>/storage.redb` and survives
    /// restarts; otherwise nodes are in memory.
    pub data_dir: Option<PathBuf>,
    /// Bounds of each move.
    pub move_limits: MoveLimits,
    /// Most unreplayed change-log entries per source during a move.
    pub capture_limit: usize,
    /// The longest one client request keeps retrying through ownership changes.
    pub request_timeout: Duration,
    /// The longest `wait_for_rebalancing_complete` waits.
    pub rebalance_timeout: Duration,
    /// Storage nodes are named `<prefix><i>`; the names place their virtual nodes on the ring.
    pub node_name_prefix: String,
}

impl Default for StorageClusterOptions {
    fn default() -> Self {
        Self {
            n_storage_nodes: 3,
            n_metadata_nodes: 3,
            seed: 0,
            data_dir: None,
            move_limits: MoveLimits::default(),
            capture_limit: 4_000_000,
            request_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(300),
            node_name_prefix: "node_".to_string(),
        }
    }
}

impl StorageClusterOptions {
    /// Test aid, deliberately unsafe (`--unsafe skip-catchup`): moves switch ownership right
    /// after the bulk copy, so writes made during the copy are lost.
    pub fn unsafe_skip_catchup(mut self, on: bool) -> Self {
        self.move_limits.unsafe_skip_catchup = on;
        self
    }
}

/// A storage node as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHandle {
    id: StorageNodeId,
    name: String,
    addr: String,
}

impl NodeHandle {
    /// The node's id (the key of `get_data_distribution`).
    pub fn id(&self) -> StorageNodeId {
        self.id
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

struct Shared {
    options: StorageClusterOptions,
    metadata: MetadataService,
    /// Every node ever started and not rolled back, by id.
    nodes: RwLock<BTreeMap<StorageNodeId, StorageNode>>,
    /// The router's cached routing.
    /// Invariant: its epoch never decreases.
    routing: RwLock<Arc<Routing>>,
    rebalance: rebalance::RebalanceSlot,
    /// Every node announces its committed writes here; compute nodes subscribe.
    invalidations: InvalidationBus,
}

/// The sharded storage cluster. Clones share it.
#[derive(Clone)]
pub struct StorageCluster {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StorageCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageCluster")
            .field("epoch", &self.routing().epoch())
            .field("nodes", &self.node_handles())
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .expect("storage cluster lock poisoned: a panic happened while it was held")
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .expect("storage cluster lock poisoned: a panic happened while it was held")
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("storage cluster lock poisoned: a panic happened while it was held")
}

/// How many times one request follows an ownership change before giving up.
const MAX_ROUTE_ATTEMPTS: usize = 64;

impl StorageCluster {
    /// The seed API: `n` in-memory storage nodes and a 3-node metadata group.
    ///
    /// # Panics
    /// If the in-process cluster cannot form, which only a bug can cause.
    pub async fn new_test(n: usize) -> Self {
        let options = StorageClusterOptions {
            n_storage_nodes: n,
            ..StorageClusterOptions::default()
        };
        Self::with_options(options)
            .await
            .unwrap_or_else(|e| panic!("test storage cluster of {n} nodes failed to form: {e}"))
    }

    /// Builds the metadata group, registers and starts the storage nodes.
    pub async fn with_options(options: StorageClusterOptions) -> Result<Self, ClusterError> {
        tracing::info!(
            seed = options.seed,
            nodes = options.n_storage_nodes,
            "storage cluster"
        );
        let raft = RaftTestCluster::with_options(ClusterOptions {
            size: options.n_metadata_nodes,
            seed: options.seed,
            unsafe_stale_reads: false,
            node_settings: NodeSettings::default(),
        })
        .await;
        let metadata = MetadataService::from_cluster(Arc::new(raft));
        let invalidations = InvalidationBus::default();
        let mut nodes = BTreeMap::new();
        for i in 0..options.n_storage_nodes {
            let name = format!("{}{i}", options.node_name_prefix);
            let addr = format!("127.0.0.1:{}", 7000 + i);
            let id = metadata.add_storage_node(&name, &addr).await?;
            let node = Self::start_node(&options, &metadata, id, &name, &addr)?;
            node.set_invalidation_bus(invalidations.clone());
            nodes.insert(id, node);
        }
        let routing = metadata.routing().await?;
        Ok(Self {
            shared: Arc::new(Shared {
                options,
                metadata,
                nodes: RwLock::new(nodes),
                routing: RwLock::new(routing),
                rebalance: rebalance::RebalanceSlot::default(),
                invalidations,
            }),
        })
    }

    fn start_node(
        options: &StorageClusterOptions,
        metadata: &MetadataService,
        id: StorageNodeId,
        name: &str,
        addr: &str,
    ) -> Result<StorageNode, ClusterError> {
        let data_dir = options.data_dir.as_ref().map(|dir| dir.join(name));
        Ok(StorageNode::start(
            id,
            name,
            addr,
            data_dir,
            metadata.clone(),
        )?)
    }

    /// The options the cluster was built with.
    pub fn options(&self) -> &StorageClusterOptions {
        &self.shared.options
    }

    /// The metadata service (and through `raft()`, its Raft group for faults).
    pub fn metadata(&self) -> &MetadataService {
        &self.shared.metadata
    }

    /// The bus on which every storage node announces its committed writes.
    pub fn invalidations(&self) -> &InvalidationBus {
        &self.shared.invalidations
    }

    /// The router's current routing.
    pub fn routing(&self) -> Arc<Routing> {
        Arc::clone(&read(&self.shared.routing))
    }

    fn install_routing(&self, routing: Arc<Routing>) {
        let mut current = write(&self.shared.routing);
        if routing.epoch() >= current.epoch() {
            *current = routing;
        }
    }

    /// Refreshes the router's routing from the metadata group (linearizable read).
    pub async fn refresh_routing(&self) -> Result<Arc<Routing>, ClusterError> {
        let routing = self.shared.metadata.routing().await?;
        self.install_routing(Arc::clone(&routing));
        Ok(self.routing())
    }

    /// The storage node with id `id`.
    pub fn node(&self, id: StorageNodeId) -> Result<StorageNode, ClusterError> {
        read(&self.shared.nodes)
            .get(&id)
            .cloned()
            .ok_or_else(|| ClusterError::UnknownNode {
                node: id.to_string(),
            })
    }

    /// The storage node named `name`.
    pub fn node_named(&self, name: &str) -> Result<StorageNode, ClusterError> {
        read(&self.shared.nodes)
            .values()
            .find(|node| node.name() == name)
            .cloned()
            .ok_or_else(|| ClusterError::UnknownNode {
                node: name.to_string(),
            })
    }

    /// Every storage node, in id order.
    pub fn node_handles(&self) -> Vec<NodeHandle> {
        read(&self.shared.nodes)
            .values()
            .map(|node| NodeHandle {
                id: node.id(),
                name: node.name().to_string(),
                addr: node.addr().to_string(),
            })
            .collect()
    }

    /// The seed API: creates a table keyed by `shard_key` (BIGINT); other columns take any type.
    ///
    /// # Panics
    /// If the metadata group refuses or cannot commit it; use [`Self::try_create_table`] for a
    /// `Result`.
    pub async fn create_table(&self, name: &str, shard_key: &str) {
        self.try_create_table(name, shard_key)
            .await
            .unwrap_or_else(|e| panic!("create table {name:?} failed: {e}"));
    }

    /// Creates a table keyed by `shard_key` (BIGINT); other columns take any type.
    pub async fn try_create_table(&self, name: &str, shard_key: &str) -> Result<(), ClusterError> {
        self.shared
            .metadata
            .create_keyed_table(name, shard_key)
            .await?;
        self.refresh_routing().await?;
        Ok(())
    }

    /// Creates a table with a strict, typed schema.
    pub async fn create_table_with_schema(
        &self,
        request: CreateTableRequest,
    ) -> Result<(), ClusterError> {
        self.shared.metadata.create_table(request).await?;
        self.refresh_routing().await?;
        Ok(())
    }

    /// The schema of `table`, refreshing the routing once if the router does not know it.
    pub(crate) async fn schema(&self, table: &str) -> Result<TableSchema, ClusterError> {
        if let Some(schema) = self.routing().table(table) {
            return Ok(schema.clone());
        }
        let routing = self.refresh_routing().await?;
        routing
            .table(table)
            .cloned()
            .ok_or_else(|| ClusterError::UnknownTable {
                table: table.to_string(),
            })
    }

    /// The seed API: inserts one row given as `(column, value)` pairs.
    pub async fn insert<V: ToSqlValue>(
        &self,
        table: &str,
        row: Vec<(&str, V)>,
    ) -> Result<(), ClusterError> {
        let row: Row = row
            .into_iter()
            .map(|(column, value)| (column.to_string(), value.to_sql_value()))
            .collect();
        self.insert_row(table, row).await
    }

    /// Inserts one row after checking it against the table's schema.
    pub async fn insert_row(&self, table: &str, row: Row) -> Result<(), ClusterError> {
        let schema = self.schema(table).await?;
        let key = query::validate_row(&schema, &row)?;
        self.route(&key, |node, epoch| {
            let row = &row;
            let key = &key;
            async move { node.insert(epoch, table, key, row).await }
        })
        .await
    }

    /// Sends a point request to the owner of `key`, following ownership changes.
    pub(crate) async fn route<T, F, Fut>(
        &self,
        key: &SqlValue,
        mut op: F,
    ) -> Result<T, ClusterError>
    where
        F: FnMut(StorageNode, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, NodeError>>,
    {
        let hash = key_hash(key);
        let started = Instant::now();
        for _ in 0..MAX_ROUTE_ATTEMPTS {
            let routing = self.routing();
            let owner = routing.owner(hash).ok_or(ClusterError::NoStorageNodes)?;
            let node = self.node(owner)?;
            match op(node, routing.epoch()).await {
                Err(NodeError::NotOwner { .. } | NodeError::EpochMismatch { .. }) => {
                    if started.elapsed() > self.shared.options.request_timeout {
                        break;
                    }
                    self.refresh_routing().await?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                other => return other.map_err(ClusterError::from),
            }
        }
        Err(ClusterError::Timeout {
            after: started.elapsed(),
        })
    }

    /// Runs `op` on every active node at one epoch and gathers the answers; restarts when an
    /// ownership change intervenes, so no row is missed or counted twice.
    pub(crate) async fn scatter<T, F, Fut>(
        &self,
        mut op: F,
    ) -> Result<Vec<(StorageNodeId, T)>, ClusterError>
    where
        F: FnMut(StorageNode, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, NodeError>>,
    {
        let started = Instant::now();
        'attempt: for _ in 0..MAX_ROUTE_ATTEMPTS {
            let routing = self.routing();
            let owners: Vec<StorageNodeId> = routing
                .map
                .nodes
                .iter()
                .filter(|(_, info)| info.state == crate::sharding::NodeState::Active)
                .map(|(id, _)| *id)
                .collect();
            if owners.is_empty() {
                return Err(ClusterError::NoStorageNodes);
            }
            let mut answers = Vec::with_capacity(owners.len());
            for owner in owners {
                match op(self.node(owner)?, routing.epoch()).await {
                    Ok(answer) => answers.push((owner, answer)),
                    Err(NodeError::EpochMismatch { .. } | NodeError::NotOwner { .. }) => {
                        if started.elapsed() > self.shared.options.request_timeout {
                            break 'attempt;
                        }
                        self.refresh_routing().await?;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue 'attempt;
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            return Ok(answers);
        }
        Err(ClusterError::Timeout {
            after: started.elapsed(),
        })
    }

    /// Every row of `table`, read at one epoch (the set workload's read of all ids).
    pub async fn read_all(&self, table: &str) -> Result<Vec<Row>, ClusterError> {
        self.schema(table).await?;
        let parts = self
            .scatter(|node, epoch| async move { node.scan_owned(epoch, table).await })
            .await?;
        Ok(parts.into_iter().flat_map(|(_, rows)| rows).collect())
    }

    /// The seed API: rows per active node over all tables, counted at one epoch.
    ///
    /// # Panics
    /// If the nodes cannot be read (a node is down or cut off); the seed calls it on a healthy
    /// cluster. [`Self::try_get_data_distribution`] returns a `Result`.
    pub async fn get_data_distribution(&self) -> BTreeMap<StorageNodeId, usize> {
        self.try_get_data_distribution()
            .await
            .unwrap_or_else(|e| panic!("data distribution unavailable: {e}"))
    }

    /// Rows per active node over all tables, counted at one epoch.
    pub async fn try_get_data_distribution(
        &self,
    ) -> Result<BTreeMap<StorageNodeId, usize>, ClusterError> {
        let tables: Vec<String> = self.routing().map.tables.keys().cloned().collect();
        let parts = self
            .scatter(|node, epoch| {
                let tables = tables.clone();
                async move {
                    let mut n = 0;
                    for table in &tables {
                        n += node.count_owned(epoch, table).await?;
                    }
                    Ok(n)
                }
            })
            .await?;
        Ok(parts.into_iter().collect())
    }

    /// Kills storage node `id` (its acknowledged data survives; see [`StorageNode::kill`]).
    pub async fn kill_node(&self, id: StorageNodeId) -> Result<(), ClusterError> {
        tracing::info!(node = %id, "kill storage node");
        self.node(id)?.kill().await;
        Ok(())
    }

    /// Restarts a killed storage node over its engine.
    pub async fn restart_node(&self, id: StorageNodeId) -> Result<(), ClusterError> {
        tracing::info!(node = %id, "restart storage node");
        Ok(self.node(id)?.restart().await?)
    }

    /// Cuts storage node `id` off from clients and peers (requests fail at once).
    pub fn isolate_node(&self, id: StorageNodeId) -> Result<(), ClusterError> {
        tracing::info!(node = %id, "isolate storage node");
        self.node(id)?.set_reachable(false);
        Ok(())
    }

    /// Reconnects every storage node.
    pub fn heal_storage_network(&self) {
        tracing::info!("heal storage network");
        for node in read(&self.shared.nodes).values() {
            node.set_reachable(true);
        }
    }

    /// Stops the metadata group.
    pub async fn shutdown(&self) {
        self.shared.metadata.raft().shutdown().await;
    }

    pub(crate) fn add_started_node(&self, node: StorageNode) {
        write(&self.shared.nodes).insert(node.id(), node);
    }

    pub(crate) fn remove_node(&self, id: StorageNodeId) {
        write(&self.shared.nodes).remove(&id);
    }

    /// Registers a joining node in the metadata group and starts it (empty).
    pub(crate) async fn begin_join(
        &self,
        name: &str,
        addr: &str,
    ) -> Result<StorageNode, ClusterError> {
        let command = ShardMapCommand::BeginJoin {
            name: name.to_string(),
            addr: addr.to_string(),
        };
        let outcome = self.shared.metadata.propose(command).await?;
        let id = outcome.node.expect("a join names its node");
        let node = Self::start_node(&self.shared.options, &self.shared.metadata, id, name, addr)?;
        node.set_invalidation_bus(self.shared.invalidations.clone());
        self.add_started_node(node.clone());
        Ok(node)
    }
}
