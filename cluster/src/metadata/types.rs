//! The metadata Raft group's types: its openraft type configuration, commands, responses and log views.

use std::io::Cursor;

use openraft::EntryPayload;
use serde::{Deserialize, Serialize};

use crate::sharding::{ShardMapCommand, ShardMapError, ShardMapOutcome};

/// A metadata node's identity; equal to its index in `RaftTestCluster::nodes`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the metadata group.
    pub TypeConfig:
        D = MetadataCommand,
        R = MetadataResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A command of the metadata state machine, carried in a normal Raft log entry.
///
/// Later issues add tables, the shard map and replication epochs as further variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Set `key` to `value` unconditionally.
    Set {
        /// The key to write.
        key: String,
        /// The new value.
        value: String,
    },
    /// Set `key` to `new` only if its current value equals `expected` (`None`: absent).
    CompareAndSet {
        /// The key to compare and write.
        key: String,
        /// The value the key must hold for the write to apply; `None` means "absent".
        expected: Option<String>,
        /// The value written when the comparison succeeds.
        new: String,
    },
    /// A change of the shard map (tables, storage nodes, ownership epochs).
    ShardMap(ShardMapCommand),
}

/// What the state machine answers after applying one log entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataResponse {
    /// Whether the command changed the state: always true for `Set`, the comparison's outcome
    /// for `CompareAndSet`, whether the shard map accepted a `ShardMap` command, false for
    /// blank and membership entries.
    pub applied: bool,
    /// The key's value before the command, if the entry carried a command.
    pub previous: Option<String>,
    /// The outcome of a [`MetadataCommand::ShardMap`] command; `None` for every other entry.
    #[serde(default)]
    pub shard_map: Option<Result<ShardMapOutcome, ShardMapError>>,
}

/// A comparable, printable view of one log entry, as returned by `MetadataNode::get_log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntryView {
    /// The term of the leader that created the entry.
    pub term: u64,
    /// The entry's position in the log, from 0 (openraft's initial membership entry).
    pub index: u64,
    /// What the entry carries.
    pub payload: LogPayloadView,
}

/// The payload of a [`LogEntryView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogPayloadView {
    /// The blank entry a new leader commits at the start of its term (Raft §8).
    Blank,
    /// A state machine command.
    Command(MetadataCommand),
    /// A membership change, with the voter ids of its last configuration.
    Membership(Vec<NodeId>),
}

impl LogEntryView {
    /// Builds the view of an openraft log entry.
    pub fn from_entry(entry: &openraft::Entry<TypeConfig>) -> Self {
        let payload = match &entry.payload {
            EntryPayload::Blank => LogPayloadView::Blank,
            EntryPayload::Normal(command) => LogPayloadView::Command(command.clone()),
            EntryPayload::Membership(membership) => {
                LogPayloadView::Membership(membership.voter_ids().collect())
            }
        };
        Self {
            term: entry.log_id.leader_id.term,
            index: entry.log_id.index,
            payload,
        }
    }
}
