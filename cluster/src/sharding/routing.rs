//! `Routing`: one epoch's shard map with its ring built, shared read-only by routers and
//! storage nodes.

use std::sync::Arc;

use super::ring::HashRing;
use super::shard_map::{ShardMap, StorageNodeId, TableSchema};

/// The shard map at one epoch, with its ring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// The shard map.
    pub map: ShardMap,
    /// The ring of `map`'s active nodes.
    /// Invariant: equals `map.ring()`.
    pub ring: HashRing,
}

impl Routing {
    /// Builds the ring of `map`.
    pub fn new(map: ShardMap) -> Arc<Self> {
        let ring = map.ring();
        Arc::new(Self { map, ring })
    }

    /// The ownership epoch.
    pub fn epoch(&self) -> u64 {
        self.map.epoch
    }

    /// The node owning `hash` at this epoch.
    pub fn owner(&self, hash: u64) -> Option<StorageNodeId> {
        self.ring.owner(hash)
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.map.tables.get(name)
    }
}
