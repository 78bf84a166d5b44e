//! helios-cluster: the database under test: the Raft metadata service, sharded storage nodes
//! with online rebalancing and a SQL front end, the transport abstraction with its seeded
//! simulated network and over TCP, compute nodes (row cache, two-phase commit), the in-process
//! test clusters, and metadata nodes as processes (`process`).

pub mod compute;
pub mod metadata;
pub mod net;
pub mod process;
pub mod replication;
pub mod sharding;
pub mod sql;
pub mod storage;
mod storage_cluster;
mod test_cluster;
mod test_cluster_builder;

pub use compute::{
    ComputeError, ComputeNode, ComputeOptions, CrashPoint, Decision, Transaction, TxId,
};
pub use metadata::{
    LogEntryView, LogPayloadView, MetadataCommand, MetadataError, MetadataNode, MetadataResponse,
    NodeId, NodeSettings,
};
pub use net::{NetworkSimulator, Transport, TransportError};
pub use sharding::{
    Column, CreateTableRequest, DataType, MetadataService, MetadataServiceError, ShardId,
    StorageNodeId,
};
pub use sql::{Row, SqlValue, ToSqlValue};
pub use storage_cluster::{
    ClusterError, NodeHandle, QueryResult, RebalanceProgress, RebalanceStatus, ResultRow,
    StorageCluster, StorageClusterOptions,
};
pub use test_cluster::{ClusterOptions, RaftTestCluster};
pub use test_cluster_builder::{TestCluster, TestClusterBuilder, DATA_IDS, SEED_TABLES};
