//! Sharding: the consistent-hash ring, the shard map kept in the metadata Raft group, the
//! metadata service API of the seed, and the rebalancer's protocol as a plain state machine.

mod metadata_service;
mod rebalancer;
mod ring;
mod routing;
mod shard_map;

pub use metadata_service::{MetadataService, MetadataServiceError};
pub use rebalancer::{
    CopyTask, MoveLimits, MovePhase, MovePlan, MoveProgress, RebalanceAction, Rebalancer,
};
pub use ring::{
    hash_bytes, token_for, HashRange, HashRing, RangeSet, RangeTransfer, VNODES_PER_NODE,
};
pub use routing::Routing;
pub use shard_map::{
    Column, CreateTableRequest, DataType, NodeState, ShardId, ShardMap, ShardMapCommand,
    ShardMapError, ShardMapOutcome, StorageNodeId, StorageNodeInfo, TableSchema,
};
