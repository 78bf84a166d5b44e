//! The consistent-hash ring with virtual nodes that decides which storage node owns a key.
//!
//! Each active storage node places [`VNODES_PER_NODE`] tokens on a 64-bit ring; a key belongs to
//! the first token at or after its hash (wrapping), so a node owns the ranges
//! `(predecessor token, token]`. When a node joins, it takes exactly the ranges that end at its
//! own tokens, each from the node that owned the token's successor before (Karger et al. 1997;
//! Dynamo §4.2). Hashes are FNV-1a with a SplitMix64 finaliser: stable across Rust versions and
//! processes, unlike `std`'s `DefaultHasher`.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::shard_map::StorageNodeId;

/// How many tokens each node places on the ring. With `v` tokens a node's share has a relative
/// standard deviation near `1/sqrt(v)` (about 3 % here), which keeps SHARD-001's spread within
/// 10 % of ideal with margin.
pub const VNODES_PER_NODE: u32 = 1024;

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring position of a byte string: FNV-1a 64, then [`mix64`].
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(hash)
}

/// The position of a node's `index`-th virtual node.
pub fn token_for(node_name: &str, index: u32) -> u64 {
    mix64(hash_bytes(node_name.as_bytes()) ^ mix64(u64::from(index) + 1))
}

/// A half-open arc of the ring, `(start, end]`, possibly wrapping past `u64::MAX`.
///
/// Invariant: `start != end` unless the arc is the whole ring (a ring with one token).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HashRange {
    /// The exclusive lower end (the predecessor token).
    pub start: u64,
    /// The inclusive upper end (the owning token).
    pub end: u64,
}

impl HashRange {
    /// Whether `hash` lies on this arc.
    pub fn contains(&self, hash: u64) -> bool {
        if self.start < self.end {
            self.start < hash && hash <= self.end
        } else {
            // Wrapping arc, or the whole ring when start == end.
            hash > self.start || hash <= self.end
        }
    }

    /// The arc as at most two non-wrapping intervals of hashes, for ordered range scans.
    pub fn pieces(&self) -> Vec<(Bound<u64>, Bound<u64>)> {
        if self.start < self.end {
            vec![(Bound::Excluded(self.start), Bound::Included(self.end))]
        } else {
            vec![
                (Bound::Excluded(self.start), Bound::Included(u64::MAX)),
                (Bound::Included(0), Bound::Included(self.end)),
            ]
        }
    }
}

/// An arc that changes owner when a node joins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RangeTransfer {
    /// The arc.
    pub range: HashRange,
    /// Its owner before the join.
    pub source: StorageNodeId,
}

/// A set of disjoint arcs with fast membership, for change capture during a move.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Arcs by their inclusive upper end.
    /// Invariant: the arcs are disjoint.
    by_end: BTreeMap<u64, HashRange>,
}

impl RangeSet {
    /// The set of `ranges`, which must be disjoint (ring ranges of one node always are).
    pub fn new(ranges: impl IntoIterator<Item = HashRange>) -> Self {
        Self {
            by_end: ranges.into_iter().map(|r| (r.end, r)).collect(),
        }
    }

    /// Whether some arc contains `hash`: only the arc with the first end at or after it, or a
    /// wrapping arc (the one with the smallest end), can.
    pub fn contains(&self, hash: u64) -> bool {
        let next = self.by_end.range(hash..).next().map(|(_, r)| r);
        let first = self.by_end.values().next();
        next.is_some_and(|r| r.contains(hash)) || first.is_some_and(|r| r.contains(hash))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.by_end.is_empty()
    }
}

/// The ring: tokens of the active nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashRing {
    /// Token to owning node.
    /// Invariant: every node present owns exactly `VNODES_PER_NODE` tokens, less any whose
    /// position collided with an earlier node's token (first come keeps it).
    tokens: BTreeMap<u64, StorageNodeId>,
}

impl HashRing {
    /// A ring of `nodes`, placed in the given order (collisions go to the earlier node).
    pub fn new<'a>(nodes: impl IntoIterator<Item = (StorageNodeId, &'a str)>) -> Self {
        let mut ring = Self::default();
        for (id, name) in nodes {
            ring.add_node(id, name);
        }
        ring
    }

    /// Places a node's tokens.
    pub fn add_node(&mut self, id: StorageNodeId, name: &str) {
        for index in 0..VNODES_PER_NODE {
            self.tokens.entry(token_for(name, index)).or_insert(id);
        }
    }

    /// Whether no node is on the ring.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The number of tokens.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// The owner of `hash`: the first token at or after it, wrapping; `None` on an empty ring.
    pub fn owner(&self, hash: u64) -> Option<StorageNodeId> {
        self.tokens
            .range(hash..)
            .next()
            .or_else(|| self.tokens.iter().next())
            .map(|(_, id)| *id)
    }

    /// The arcs `node` owns.
    pub fn ranges_of(&self, node: StorageNodeId) -> Vec<HashRange> {
        let Some((&last, _)) = self.tokens.iter().next_back() else {
            return Vec::new();
        };
        let mut previous = last;
        let mut ranges = Vec::new();
        for (&token, &owner) in &self.tokens {
            if owner == node {
                ranges.push(HashRange {
                    start: previous,
                    end: token,
                });
            }
            previous = token;
        }
        ranges
    }

    /// The arcs that move to `node` when it joins this ring, with their current owners.
    ///
    /// `node` must not be on the ring yet. Each new token `t` takes `(pred(t), t]` of the new
    /// ring, which the old ring gave wholly to the owner of `t`'s old successor.
    pub fn transfers_for_join(&self, node: StorageNodeId, name: &str) -> Vec<RangeTransfer> {
        assert!(
            !self.tokens.values().any(|owner| *owner == node),
            "node {node} is on the ring already"
        );
        let mut joined = self.clone();
        joined.add_node(node, name);
        joined
            .ranges_of(node)
            .into_iter()
            .filter_map(|range| {
                self.owner(range.end)
                    .map(|source| RangeTransfer { range, source })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(names: &[&str]) -> HashRing {
        HashRing::new(
            names
                .iter()
                .enumerate()
                .map(|(i, name)| (StorageNodeId(i as u64), *name)),
        )
    }

    #[test]
    fn every_hash_has_exactly_one_owning_range() {
        let ring = ring_of(&["a", "b", "c"]);
        let ranges: Vec<(StorageNodeId, HashRange)> = (0..3)
            .flat_map(|i| {
                let id = StorageNodeId(i);
                ring.ranges_of(id).into_iter().map(move |r| (id, r))
            })
            .collect();
        assert_eq!(ranges.len(), ring.n_tokens());
        for probe in [0, 1, u64::MAX, u64::MAX / 2, 12_345_678_901] {
            let holders: Vec<_> = ranges.iter().filter(|(_, r)| r.contains(probe)).collect();
            assert_eq!(holders.len(), 1, "hash {probe} is in {holders:?}");
            assert_eq!(Some(holders[0].0), ring.owner(probe));
        }
    }

    #[test]
    fn spread_of_node_shares_stays_within_ten_percent_for_many_name_sets() {
        for set in 0..20 {
            let names: Vec<String> = (0..3).map(|i| format!("n{set}_{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let ring = ring_of(&refs);
            for i in 0..3 {
                let share: f64 = ring
                    .ranges_of(StorageNodeId(i))
                    .iter()
                    .map(|r| r.end.wrapping_sub(r.start) as f64 / u64::MAX as f64)
                    .sum();
                let deviation = (share * 3.0 - 1.0).abs();
                assert!(deviation < 0.1, "set {set} node {i}: share {share}");
            }
        }
    }

    #[test]
    fn a_join_moves_only_keys_that_the_new_node_owns_afterwards() {
        let old = ring_of(&["a", "b", "c"]);
        let transfers = old.transfers_for_join(StorageNodeId(3), "d");
        let new = ring_of(&["a", "b", "c", "d"]);
        for key in 0..20_000u64 {
            let hash = hash_bytes(&key.to_be_bytes());
            let moving = transfers.iter().find(|t| t.range.contains(hash));
            match moving {
                Some(transfer) => {
                    assert_eq!(new.owner(hash), Some(StorageNodeId(3)));
                    assert_eq!(old.owner(hash), Some(transfer.source));
                }
                None => assert_eq!(new.owner(hash), old.owner(hash)),
            }
        }
    }

    #[test]
    fn wrapping_range_pieces_cover_both_ends() {
        let range = HashRange {
            start: u64::MAX - 5,
            end: 5,
        };
        assert!(range.contains(u64::MAX) && range.contains(0) && range.contains(5));
        assert!(!range.contains(6) && !range.contains(u64::MAX - 5));
        assert_eq!(range.pieces().len(), 2);
    }
}
