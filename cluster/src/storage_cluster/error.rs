//! Errors of the storage cluster's client API.

use std::time::Duration;

use crate::sharding::{MetadataServiceError, StorageNodeId};
use crate::sql::{SqlError, SqlValue};
use crate::storage::NodeError;

/// Why a storage cluster request did not succeed. The cluster keeps serving after any of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The SQL is malformed or unsupported.
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// No table of that name.
    #[error("unknown table {table:?}")]
    UnknownTable {
        /// The table named.
        table: String,
    },
    /// A column the table's strict schema does not declare.
    #[error("table {table:?} has no column {column:?}")]
    UnknownColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A value of the wrong type for its column.
    #[error("table {table:?} column {column:?}: expected {expected}, found {found}")]
    WrongType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The declared type.
        expected: String,
        /// The value given.
        found: String,
    },
    /// A row without its shard key, or with a NULL one.
    #[error("table {table:?}: row has no value for shard key {column:?}")]
    MissingShardKey {
        /// The table.
        table: String,
        /// The shard key column.
        column: String,
    },
    /// An update that would change the shard key.
    #[error("table {table:?}: updating shard key {column:?} is not supported")]
    ShardKeyUpdate {
        /// The table.
        table: String,
        /// The shard key column.
        column: String,
    },
    /// A storage node refused or failed the request.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The metadata group failed the request.
    #[error(transparent)]
    Metadata(#[from] MetadataServiceError),
    /// No storage node is active.
    #[error("no active storage node")]
    NoStorageNodes,
    /// No storage node of that id or name.
    #[error("unknown storage node {node}")]
    UnknownNode {
        /// The id or name given.
        node: String,
    },
    /// The request kept meeting ownership changes and gave up.
    #[error("request gave up after {after:?} of ownership changes")]
    Timeout {
        /// How long it tried.
        after: Duration,
    },
    /// A parameter was given where a value of another kind is needed (for example a NULL key).
    #[error("invalid value {value} for {what}")]
    InvalidValue {
        /// What the value was for.
        what: String,
        /// The value.
        value: SqlValue,
    },
    /// A result row has no such column, or holds another type.
    #[error("result column {column:?}: {reason}")]
    ResultColumn {
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A rebalance could not be started.
    #[error("rebalance of node {node} could not start: {reason}")]
    Rebalance {
        /// The joining node.
        node: StorageNodeId,
        /// Why.
        reason: String,
    },
}

impl ClusterError {
    /// Whether a write that failed with this error may nevertheless have taken effect
    /// (Jepsen `info` rather than `fail`).
    pub fn outcome_is_unknown(&self) -> bool {
        match self {
            Self::Node(error) => error.outcome_is_unknown(),
            Self::Metadata(error) => error.outcome_is_unknown(),
            _ => false,
        }
    }
}
