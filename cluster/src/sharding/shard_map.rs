//! The shard map: tables, storage nodes and the ownership epoch, as held by the metadata Raft
//! state machine. [`ShardMap::apply`] is its pure transition function.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::ring::HashRing;

/// A storage node's identity, assigned by the shard map in registration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StorageNodeId(pub u64);

impl fmt::Display for StorageNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Each storage node holds one shard of every table, the union of its ring ranges, so a shard
/// is named by its node (SHARD-001 counts keys per shard).
pub type ShardId = StorageNodeId;

/// A column type of the seed's schemas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataType {
    /// A 64-bit signed integer.
    BigInt,
    /// A string of at most `n` characters.
    VarChar(usize),
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column name.
    pub name: String,
    /// Its type.
    pub dtype: DataType,
}

/// The seed's table creation request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTableRequest {
    /// The table name.
    pub name: String,
    /// The column whose value places a row on the ring.
    pub shard_key: String,
    /// The declared columns.
    pub schema: Vec<Column>,
}

/// A table as the shard map holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table name.
    pub name: String,
    /// The shard key column.
    /// Invariant: names a column of `columns`.
    pub shard_key: String,
    /// The declared columns.
    pub columns: Vec<Column>,
    /// Whether columns not in `columns` are refused. Tables created with only a key
    /// (`StorageCluster::create_table`) accept any further column of any type.
    pub strict: bool,
}

impl TableSchema {
    /// The declared type of `column`, if declared.
    pub fn column_type(&self, column: &str) -> Option<&DataType> {
        self.columns
            .iter()
            .find(|c| c.name == column)
            .map(|c| &c.dtype)
    }
}

/// Whether a storage node owns ranges yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// On the ring: owns its ranges.
    Active,
    /// Receiving its ranges; the old owners stay authoritative until the join commits.
    Joining,
}

/// A registered storage node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageNodeInfo {
    /// The node's name (ring tokens derive from it).
    pub name: String,
    /// Its address, as given at registration.
    pub addr: String,
    /// Whether it owns ranges.
    pub state: NodeState,
}

/// A change of the shard map, proposed through Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardMapCommand {
    /// Adds a table.
    CreateTable(TableSchema),
    /// Adds an active node at once: for bootstrap, when no data lives in what it takes.
    /// Idempotent for the same name and address.
    RegisterNode {
        /// The node's name.
        name: String,
        /// The node's address.
        addr: String,
    },
    /// Adds a joining node; its ranges move by rebalancing. Idempotent while pending.
    BeginJoin {
        /// The node's name.
        name: String,
        /// The node's address.
        addr: String,
    },
    /// Starts a copy attempt of the pending join. Fences every earlier attempt: their
    /// `CommitJoin`, if still in flight in the log, is refused once this one is applied.
    BeginMoveAttempt {
        /// The joining node.
        node: StorageNodeId,
        /// The attempt number; greater than every earlier one.
        attempt: u32,
    },
    /// Makes the joining node active and bumps the epoch, if the epoch is still `expected_epoch`
    /// and `attempt` is the latest attempt.
    CommitJoin {
        /// The joining node.
        node: StorageNodeId,
        /// The attempt whose copy is complete.
        attempt: u32,
        /// The epoch the move was planned against.
        expected_epoch: u64,
    },
    /// Drops the joining node; the old owners keep their ranges.
    AbortJoin {
        /// The joining node.
        node: StorageNodeId,
    },
}

/// What a successful command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMapOutcome {
    /// The node the command registered or changed, if any.
    pub node: Option<StorageNodeId>,
    /// The epoch after the command.
    pub epoch: u64,
}

/// Why the shard map refused a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ShardMapError {
    /// A table of that name exists.
    #[error("table {table:?} already exists")]
    TableExists {
        /// The table name.
        table: String,
    },
    /// The shard key is not a declared column.
    #[error("table {table:?}: shard key {shard_key:?} is not a declared column")]
    ShardKeyNotInSchema {
        /// The table name.
        table: String,
        /// The shard key.
        shard_key: String,
    },
    /// A node of that name exists with another address or state.
    #[error("storage node {name:?} is already registered")]
    NodeExists {
        /// The node name.
        name: String,
    },
    /// Another join is in progress.
    #[error("node {pending} is still joining; one join at a time")]
    JoinInProgress {
        /// The joining node.
        pending: StorageNodeId,
    },
    /// A commit or abort named a node that is not joining.
    #[error("node {node} is not joining")]
    NotJoining {
        /// The node named.
        node: StorageNodeId,
    },
    /// The attempt was fenced by a later one (or is not later than the current one).
    #[error("move attempt {attempt} is fenced: the current attempt is {current}")]
    AttemptFenced {
        /// The attempt named.
        attempt: u32,
        /// The current attempt.
        current: u32,
    },
    /// The epoch moved since the move was planned.
    #[error("epoch is {actual}, the move was planned against {expected}")]
    EpochMismatch {
        /// The planned epoch.
        expected: u64,
        /// The current epoch.
        actual: u64,
    },
}

/// The shard map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Bumped by every change of range ownership.
    /// Invariant: strictly increases; never changes otherwise.
    pub epoch: u64,
    /// Tables by name.
    pub tables: BTreeMap<String, TableSchema>,
    /// Registered nodes.
    /// Invariant: at most one node is `Joining`, and it is `pending_join`.
    pub nodes: BTreeMap<StorageNodeId, StorageNodeInfo>,
    /// The joining node, if a join is in progress.
    pub pending_join: Option<StorageNodeId>,
    /// The latest copy attempt of the pending join (0 before the first).
    /// Invariant: 0 when no join is pending.
    pub join_attempt: u32,
    /// The id the next registered node gets.
    /// Invariant: greater than every key of `nodes`.
    pub next_node_id: u64,
}

impl ShardMap {
    /// Applies one command.
    pub fn apply(&mut self, command: &ShardMapCommand) -> Result<ShardMapOutcome, ShardMapError> {
        let outcome = match command {
            ShardMapCommand::CreateTable(schema) => self.create_table(schema)?,
            ShardMapCommand::RegisterNode { name, addr } => {
                self.add_node(name, addr, NodeState::Active)?
            }
            ShardMapCommand::BeginJoin { name, addr } => {
                self.add_node(name, addr, NodeState::Joining)?
            }
            ShardMapCommand::BeginMoveAttempt { node, attempt } => {
                if self.pending_join != Some(*node) {
                    return Err(ShardMapError::NotJoining { node: *node });
                }
                // Re-proposing the current attempt (its first outcome was unknown) is a no-op.
                if *attempt < self.join_attempt {
                    return Err(ShardMapError::AttemptFenced {
                        attempt: *attempt,
                        current: self.join_attempt,
                    });
                }
                self.join_attempt = *attempt;
                self.outcome(Some(*node))
            }
            ShardMapCommand::CommitJoin {
                node,
                attempt,
                expected_epoch,
            } => self.commit_join(*node, *attempt, *expected_epoch)?,
            ShardMapCommand::AbortJoin { node } => {
                if self.pending_join != Some(*node) {
                    return Err(ShardMapError::NotJoining { node: *node });
                }
                self.nodes.remove(node);
                self.pending_join = None;
                self.join_attempt = 0;
                self.outcome(Some(*node))
            }
        };
        self.validate();
        Ok(outcome)
    }

    fn outcome(&self, node: Option<StorageNodeId>) -> ShardMapOutcome {
        ShardMapOutcome {
            node,
            epoch: self.epoch,
        }
    }

    fn create_table(&mut self, schema: &TableSchema) -> Result<ShardMapOutcome, ShardMapError> {
        if let Some(existing) = self.tables.get(&schema.name) {
            // A retried proposal finds its own table; any other schema is a conflict.
            if existing == schema {
                return Ok(self.outcome(None));
            }
            return Err(ShardMapError::TableExists {
                table: schema.name.clone(),
            });
        }
        if schema.column_type(&schema.shard_key).is_none() {
            return Err(ShardMapError::ShardKeyNotInSchema {
                table: schema.name.clone(),
                shard_key: schema.shard_key.clone(),
            });
        }
        self.tables.insert(schema.name.clone(), schema.clone());
        Ok(self.outcome(None))
    }

    fn add_node(
        &mut self,
        name: &str,
        addr: &str,
        state: NodeState,
    ) -> Result<ShardMapOutcome, ShardMapError> {
        if let Some((id, info)) = self.nodes.iter().find(|(_, info)| info.name == name) {
            // A retried proposal (its first outcome was unknown) finds its own work done.
            if info.addr == addr && info.state == state {
                return Ok(self.outcome(Some(*id)));
            }
            return Err(ShardMapError::NodeExists {
                name: name.to_string(),
            });
        }
        let id = StorageNodeId(self.next_node_id);
        match state {
            NodeState::Joining => {
                if let Some(pending) = self.pending_join {
                    return Err(ShardMapError::JoinInProgress { pending });
                }
                self.pending_join = Some(id);
            }
            NodeState::Active => self.epoch += 1,
        }
        self.next_node_id += 1;
        let info = StorageNodeInfo {
            name: name.to_string(),
            addr: addr.to_string(),
            state,
        };
        self.nodes.insert(id, info);
        Ok(self.outcome(Some(id)))
    }

    fn commit_join(
        &mut self,
        node: StorageNodeId,
        attempt: u32,
        expected_epoch: u64,
    ) -> Result<ShardMapOutcome, ShardMapError> {
        if self.pending_join != Some(node) {
            // A retried commit whose first attempt applied: the node is active one epoch on.
            let active = self.nodes.get(&node).map(|i| i.state) == Some(NodeState::Active);
            if active && self.epoch == expected_epoch + 1 {
                return Ok(self.outcome(Some(node)));
            }
            return Err(ShardMapError::NotJoining { node });
        }
        if attempt != self.join_attempt {
            return Err(ShardMapError::AttemptFenced {
                attempt,
                current: self.join_attempt,
            });
        }
        if self.epoch != expected_epoch {
            return Err(ShardMapError::EpochMismatch {
                expected: expected_epoch,
                actual: self.epoch,
            });
        }
        let info = self
            .nodes
            .get_mut(&node)
            .expect("the pending join names a registered node");
        info.state = NodeState::Active;
        self.pending_join = None;
        self.join_attempt = 0;
        self.epoch += 1;
        Ok(self.outcome(Some(node)))
    }

    /// The ring of the active nodes, in id order.
    pub fn ring(&self) -> HashRing {
        HashRing::new(
            self.nodes
                .iter()
                .filter(|(_, info)| info.state == NodeState::Active)
                .map(|(id, info)| (*id, info.name.as_str())),
        )
    }

    /// The id of the node named `name`.
    pub fn node_named(&self, name: &str) -> Option<StorageNodeId> {
        self.nodes
            .iter()
            .find(|(_, info)| info.name == name)
            .map(|(id, _)| *id)
    }

    /// Checks the invariants; called after every command.
    ///
    /// # Panics
    /// If an invariant is broken, which only a bug in [`ShardMap::apply`] can cause.
    pub fn validate(&self) {
        let joining: Vec<_> = self
            .nodes
            .iter()
            .filter(|(_, i)| i.state == NodeState::Joining)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            joining,
            self.pending_join.into_iter().collect::<Vec<_>>(),
            "the joining nodes are exactly the pending join"
        );
        assert!(
            self.pending_join.is_some() || self.join_attempt == 0,
            "no attempt without a pending join"
        );
        if let Some((last, _)) = self.nodes.iter().next_back() {
            assert!(last.0 < self.next_node_id, "next_node_id is past every id");
        }
        for table in self.tables.values() {
            assert!(
                table.column_type(&table.shard_key).is_some(),
                "table {} has its shard key declared",
                table.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(map: &mut ShardMap, name: &str) -> StorageNodeId {
        let command = ShardMapCommand::RegisterNode {
            name: name.into(),
            addr: "a".into(),
        };
        map.apply(&command).unwrap().node.unwrap()
    }

    #[test]
    fn a_join_commits_once_and_bumps_the_epoch_once() {
        let mut map = ShardMap::default();
        register(&mut map, "n0");
        assert_eq!(map.epoch, 1);
        let begin = ShardMapCommand::BeginJoin {
            name: "n1".into(),
            addr: "b".into(),
        };
        let node = map.apply(&begin).unwrap().node.unwrap();
        assert_eq!(map.apply(&begin).unwrap().node, Some(node), "idempotent");
        let other = ShardMapCommand::BeginJoin {
            name: "n2".into(),
            addr: "c".into(),
        };
        assert_eq!(
            map.apply(&other),
            Err(ShardMapError::JoinInProgress { pending: node })
        );
        let attempt = ShardMapCommand::BeginMoveAttempt { node, attempt: 1 };
        map.apply(&attempt).unwrap();
        let fenced = ShardMapCommand::CommitJoin {
            node,
            attempt: 0,
            expected_epoch: 1,
        };
        assert!(matches!(
            map.apply(&fenced),
            Err(ShardMapError::AttemptFenced { .. })
        ));
        let stale = ShardMapCommand::CommitJoin {
            node,
            attempt: 1,
            expected_epoch: 0,
        };
        assert!(matches!(
            map.apply(&stale),
            Err(ShardMapError::EpochMismatch { .. })
        ));
        let commit = ShardMapCommand::CommitJoin {
            node,
            attempt: 1,
            expected_epoch: 1,
        };
        assert_eq!(map.apply(&commit).unwrap().epoch, 2);
        assert_eq!(map.apply(&commit).unwrap().epoch, 2, "retry is a no-op");
        assert_eq!(map.nodes[&node].state, NodeState::Active);
    }

    #[test]
    fn an_aborted_join_leaves_ownership_unchanged() {
        let mut map = ShardMap::default();
        register(&mut map, "n0");
        let ring_before = map.ring();
        let begin = ShardMapCommand::BeginJoin {
            name: "n1".into(),
            addr: "b".into(),
        };
        let node = map.apply(&begin).unwrap().node.unwrap();
        assert_eq!(map.ring(), ring_before, "a joining node owns nothing");
        map.apply(&ShardMapCommand::AbortJoin { node }).unwrap();
        assert_eq!(map.epoch, 1);
        assert_eq!(map.ring(), ring_before);
        assert!(map.pending_join.is_none());
    }

    #[test]
    fn a_table_needs_its_shard_key_declared() {
        let mut map = ShardMap::default();
        let schema = TableSchema {
            name: "t".into(),
            shard_key: "id".into(),
            columns: vec![],
            strict: true,
        };
        assert!(matches!(
            map.apply(&ShardMapCommand::CreateTable(schema)),
            Err(ShardMapError::ShardKeyNotInSchema { .. })
        ));
    }
}
