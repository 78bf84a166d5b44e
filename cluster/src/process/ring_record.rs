//! The ring of the processes' replicated shards as the metadata group records it (key
//! [`RING_KEY`]): its epoch, where every data member listens, and, while keys move to a shard
//! just added, the shards of the ring before. Compute nodes route rows by it; the rebalancer
//! ([`super::rebalance`]) is its only writer.
//!
//! The rule that keeps one owner per row while rings change: every request a compute node
//! sends a shard carries the epoch of the ring it routed by, and a shard fenced at a newer
//! epoch ([`crate::replication::FENCE_KEY`]) refuses it, so a node with a stale ring learns the
//! new one before it touches a row that may have moved.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::client::{ClientError, MetadataClient};
use super::shard_client::MemberAddrs;
use crate::metadata::NodeId;
use crate::sharding::{hash_bytes, HashRing, StorageNodeId};

/// The metadata key of the ring record.
pub const RING_KEY: &str = "ring";

/// One data member in a [`RingRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingMember {
    /// The shard.
    pub shard: usize,
    /// The member's id.
    pub member: NodeId,
    /// Where it listens.
    pub addr: String,
}

/// The recorded ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRecord {
    /// Grows by one per shard added. Epoch 0 is the ring of the members a cluster started with,
    /// which is never recorded.
    pub epoch: u64,
    /// Every data member of every shard, in (shard, member) order.
    pub members: Vec<RingMember>,
    /// While keys move: the shards of the ring before, whose owner under that ring may still
    /// hold a row the new ring places elsewhere. `None` once every such row was copied.
    pub moving_from: Option<Vec<usize>>,
}

impl RingRecord {
    /// The unrecorded ring of epoch 0 over `addrs`.
    pub fn initial(addrs: &MemberAddrs) -> Self {
        Self {
            epoch: 0,
            members: addrs
                .iter()
                .map(|(&(shard, member), addr)| RingMember {
                    shard,
                    member,
                    addr: addr.clone(),
                })
                .collect(),
            moving_from: None,
        }
    }

    /// The record in the metadata group, if any; its text too, for a compare-and-set.
    pub async fn load(
        metadata: &MetadataClient,
    ) -> Result<Option<(Self, String)>, RingRecordError> {
        let Some(text) = metadata.read(RING_KEY).await? else {
            return Ok(None);
        };
        let record = serde_json::from_str(&text).map_err(|error| RingRecordError::Malformed {
            message: error.to_string(),
        })?;
        Ok(Some((record, text)))
    }

    /// The record as stored.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a ring record always serializes")
    }

    /// The shards, in order.
    pub fn shards(&self) -> Vec<usize> {
        self.members
            .iter()
            .map(|m| m.shard)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Every data member's address.
    pub fn addrs(&self) -> MemberAddrs {
        self.members
            .iter()
            .map(|m| ((m.shard, m.member), m.addr.clone()))
            .collect()
    }

    /// Each shard's data members, in id order.
    pub fn members_by_shard(&self) -> BTreeMap<usize, Vec<NodeId>> {
        let mut by_shard: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        for m in &self.members {
            by_shard.entry(m.shard).or_default().push(m.member);
        }
        for members in by_shard.values_mut() {
            members.sort_unstable();
        }
        by_shard
    }

    /// Where rows go under this ring.
    pub fn placement(&self) -> Placement {
        Placement {
            ring: hash_ring(&self.shards()),
            previous: self.moving_from.as_deref().map(hash_ring),
        }
    }
}

/// A consistent-hash ring over `shards` (each shard one node named `shard_<n>`), the same on
/// every compute node and in the rebalancer.
pub fn hash_ring(shards: &[usize]) -> HashRing {
    let names: Vec<(StorageNodeId, String)> = shards
        .iter()
        .map(|&shard| (StorageNodeId(shard as u64), format!("shard_{shard}")))
        .collect();
    HashRing::new(names.iter().map(|(id, name)| (*id, name.as_str())))
}

/// Which shard owns a row key, and, while keys move, which shard owned it before.
#[derive(Clone, Debug)]
pub struct Placement {
    ring: HashRing,
    previous: Option<HashRing>,
}

impl Placement {
    /// The shard that owns `key`.
    pub fn owner(&self, key: &[u8]) -> usize {
        owner_in(&self.ring, key)
    }

    /// The shard that owned `key` under the ring before, if keys are moving and it is another.
    pub fn moving_from(&self, key: &[u8]) -> Option<usize> {
        let previous = owner_in(self.previous.as_ref()?, key);
        (previous != self.owner(key)).then_some(previous)
    }
}

fn owner_in(ring: &HashRing, key: &[u8]) -> usize {
    let owner = ring
        .owner(hash_bytes(key))
        .expect("a ring record names at least one shard");
    usize::try_from(owner.0).expect("shard ids come from usize")
}

/// Why the ring record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RingRecordError {
    /// The metadata group did not answer.
    #[error("metadata: {0}")]
    Metadata(#[from] ClientError),
    /// The record is not a ring record.
    #[error("the metadata key {RING_KEY:?} holds no ring record: {message}")]
    Malformed {
        /// What the parser said.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(shards: usize, moving_from: Option<Vec<usize>>) -> RingRecord {
        let addrs: MemberAddrs = (0..shards)
            .flat_map(|shard| {
                let base = 3 * shard as NodeId;
                [base, base + 1].map(|m| ((shard, m), format!("127.0.0.1:{}", 9000 + m)))
            })
            .collect();
        RingRecord {
            epoch: 1,
            moving_from,
            ..RingRecord::initial(&addrs)
        }
    }

    #[test]
    fn a_record_round_trips_through_its_text() {
        let record = record(4, Some(vec![0, 1, 2]));
        let text = record.encode();
        assert_eq!(
            serde_json::from_str::<RingRecord>(&text).expect("parses"),
            record
        );
        assert_eq!(record.shards(), vec![0, 1, 2, 3]);
        assert_eq!(record.members_by_shard()[&3], vec![9, 10]);
    }

    #[test]
    fn a_fourth_shard_takes_rows_only_from_the_others_and_says_from_where() {
        let before = record(3, None).placement();
        let moving = record(4, Some(vec![0, 1, 2])).placement();
        let settled = record(4, None).placement();
        let mut moved = 0;
        for i in 0..4_000_u32 {
            let key = i.to_be_bytes();
            let owner = moving.owner(&key);
            assert_eq!(owner, settled.owner(&key));
            match moving.moving_from(&key) {
                Some(from) => {
                    assert_eq!(owner, 3, "a row moves only to the new shard");
                    assert_eq!(from, before.owner(&key));
                    moved += 1;
                }
                None => assert_eq!(owner, before.owner(&key), "an unmoved row stays"),
            }
            assert_eq!(settled.moving_from(&key), None);
        }
        // About a quarter of the rows move; consistent hashing moves no more than that.
        assert!((600..1_400).contains(&moved), "{moved} of 4000 rows moved");
    }
}
