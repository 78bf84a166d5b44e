//! The set workload's fault schedule: add-node (rebalance), storage kills and partitions,
//! planned up front from the seed.
//!
//! Planning is pure, so a seed always gives the same schedule. Which storage node a kill or an
//! isolation hits depends on the nodes that exist at that moment (added nodes join, a rolled
//! back join leaves), so targets are planned as seeded picks that the executor in
//! [`crate::set_nemesis`] resolves against the cluster of the moment.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::WorkloadError;
use crate::schedule::{draw, NemesisTiming, MAX_PLANNED_FAULTS};

/// A kind of fault the set workload's nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetNemesisKind {
    /// Add a storage node; its ranges move to it in the background (online rebalancing).
    AddNode,
    /// Kill a storage node (a random one, or the node a move is filling), then restart it.
    Kill,
    /// Isolate a storage node, or cut the metadata Raft group in two, then heal.
    Partition,
}

impl SetNemesisKind {
    /// Every kind, in the order `--nemesis` lists them.
    pub const ALL: [SetNemesisKind; 3] = [
        SetNemesisKind::AddNode,
        SetNemesisKind::Kill,
        SetNemesisKind::Partition,
    ];

    /// The name used by `--nemesis` and in the history header.
    pub fn as_str(self) -> &'static str {
        match self {
            SetNemesisKind::AddNode => "add-node",
            SetNemesisKind::Kill => "kill",
            SetNemesisKind::Partition => "partition",
        }
    }

    /// Parses a comma-separated list such as `add-node,kill,partition`; `none` gives no faults.
    pub fn parse_list(list: &str) -> Result<Vec<SetNemesisKind>, WorkloadError> {
        let mut kinds = Vec::new();
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            if name == "none" {
                continue;
            }
            let kind: SetNemesisKind = name.parse()?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }
}

impl fmt::Display for SetNemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SetNemesisKind {
    type Err = WorkloadError;

    fn from_str(name: &str) -> Result<SetNemesisKind, WorkloadError> {
        SetNemesisKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| WorkloadError::UnknownNemesis {
                name: name.to_owned(),
                supported: SetNemesisKind::ALL
                    .iter()
                    .map(|kind| kind.as_str())
                    .chain(["none"])
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// What one planned fault of the set workload does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetFaultAction {
    /// Add storage node number `number` (named `node_<number>`); the move runs in the
    /// background and has no end event.
    AddNode {
        /// The new node's number: the initial nodes are `0..n`, added ones follow.
        number: u64,
    },
    /// Kill a storage node, then restart it.
    Kill {
        /// Kill the node a move is filling, when a move runs at the time of the fault.
        prefer_moving: bool,
        /// Else the node at position `pick % n` of the nodes that exist then, in id order.
        pick: u64,
    },
    /// Cut one storage node off from clients and peers, then reconnect it.
    IsolateStorage {
        /// The node at position `pick % n` of the nodes that exist then, in id order.
        pick: u64,
    },
    /// Cut the metadata Raft group into these groups of node ids, then heal.
    PartitionMetadata {
        /// The groups, minority first; every metadata node is in exactly one.
        groups: Vec<Vec<u64>>,
    },
}

/// One fault of the set workload's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSetFault {
    /// When the fault starts, from the run's start.
    pub start: Duration,
    /// When the fault is undone. Invariant: `start < end <= fault phase end`, except for an
    /// add-node, which is never undone and has `end == start`.
    pub end: Duration,
    /// What the fault does.
    pub action: SetFaultAction,
}

/// The shape of the cluster the schedule is planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetClusterShape {
    /// Storage nodes at start, numbered `0..initial_storage_nodes`.
    pub initial_storage_nodes: u64,
    /// Metadata Raft nodes, numbered `0..metadata_nodes`.
    pub metadata_nodes: u64,
    /// At most this many nodes are added over the run.
    pub max_added_nodes: u64,
}

/// Plans the faults of a set run whose fault phase lasts `fault_phase`.
///
/// When add-node is among `kinds`, the first fault is an add-node; the others are drawn
/// uniformly. Faults never overlap, but a move outlives the add-node that started it, so the fault that
/// follows an add-node comes sooner (a quarter to all of `interval_min`) and is likely to hit
/// the cluster mid-move. Once `max_added_nodes` are planned, add-node is no longer drawn.
pub fn plan_set_faults(
    rng: &mut ChaCha8Rng,
    kinds: &[SetNemesisKind],
    shape: SetClusterShape,
    fault_phase: Duration,
    timing: NemesisTiming,
) -> Vec<PlannedSetFault> {
    assert!(
        shape.initial_storage_nodes > 0 && shape.metadata_nodes > 0,
        "a schedule needs storage and metadata nodes: {shape:?}"
    );
    assert!(
        timing.is_ordered(),
        "nemesis timing ranges are inverted: {timing:?}"
    );
    let mut faults = Vec::new();
    let mut added = 0;
    let mut now = Duration::ZERO;
    let mut after_add = false;
    while faults.len() < MAX_PLANNED_FAULTS {
        let available: Vec<SetNemesisKind> = kinds
            .iter()
            .copied()
            .filter(|kind| *kind != SetNemesisKind::AddNode || added < shape.max_added_nodes)
            .collect();
        if available.is_empty() {
            break;
        }
        let quiet = if after_add {
            draw(rng, timing.interval_min / 4, timing.interval_min)
        } else {
            draw(rng, timing.interval_min, timing.interval_max)
        };
        let start = now + quiet;
        if start >= fault_phase {
            break;
        }
        // The first fault is an add-node when add-node is asked for, so that every run
        // rebalances and the faults that follow meet a move; later ones are drawn uniformly.
        let kind = if faults.is_empty() && available.contains(&SetNemesisKind::AddNode) {
            SetNemesisKind::AddNode
        } else {
            available[rng.gen_range(0..available.len())]
        };
        let (end, action) = match kind {
            SetNemesisKind::AddNode => {
                let number = shape.initial_storage_nodes + added;
                added += 1;
                (start, SetFaultAction::AddNode { number })
            }
            SetNemesisKind::Kill | SetNemesisKind::Partition => {
                let duration = draw(rng, timing.duration_min, timing.duration_max);
                let end = (start + duration).min(fault_phase);
                if end <= start {
                    break;
                }
                (end, plan_action(rng, kind, shape))
            }
        };
        after_add = matches!(action, SetFaultAction::AddNode { .. });
        faults.push(PlannedSetFault { start, end, action });
        now = end;
    }
    faults
}

fn plan_action(
    rng: &mut ChaCha8Rng,
    kind: SetNemesisKind,
    shape: SetClusterShape,
) -> SetFaultAction {
    match kind {
        SetNemesisKind::AddNode => unreachable!("add-node is planned by the caller"),
        SetNemesisKind::Kill => SetFaultAction::Kill {
            prefer_moving: rng.gen_bool(0.5),
            pick: rng.gen(),
        },
        SetNemesisKind::Partition => {
            // Half the partitions cut storage, half cut the metadata group (random halves,
            // minority first), so that routing refreshes and move commits meet elections.
            if rng.gen_bool(0.5) {
                SetFaultAction::IsolateStorage { pick: rng.gen() }
            } else {
                let mut nodes: Vec<u64> = (0..shape.metadata_nodes).collect();
                nodes.shuffle(rng);
                let minority = nodes.split_off((shape.metadata_nodes / 2) as usize);
                let mut groups = vec![nodes, minority];
                groups.iter_mut().for_each(|group| group.sort_unstable());
                groups.sort_by_key(Vec::len);
                SetFaultAction::PartitionMetadata { groups }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    const SHAPE: SetClusterShape = SetClusterShape {
        initial_storage_nodes: 3,
        metadata_nodes: 3,
        max_added_nodes: 4,
    };

    fn plan(seed: u64) -> Vec<PlannedSetFault> {
        plan_set_faults(
            &mut ChaCha8Rng::seed_from_u64(seed),
            &SetNemesisKind::ALL,
            SHAPE,
            Duration::from_secs(60),
            NemesisTiming::default(),
        )
    }

    #[test]
    fn set_schedule_is_deterministic_for_a_seed() {
        assert_eq!(plan(5), plan(5));
        assert_ne!(plan(5), plan(6), "two seeds gave the same schedule");
    }

    #[test]
    fn added_nodes_are_numbered_after_the_initial_ones_and_bounded() {
        for seed in 0..30 {
            let numbers: Vec<u64> = plan(seed)
                .iter()
                .filter_map(|fault| match fault.action {
                    SetFaultAction::AddNode { number } => Some(number),
                    _ => None,
                })
                .collect();
            assert!(numbers.len() as u64 <= SHAPE.max_added_nodes, "seed {seed}");
            let expected: Vec<u64> = (3..3 + numbers.len() as u64).collect();
            assert_eq!(numbers, expected, "seed {seed}");
        }
    }

    #[test]
    fn every_schedule_with_add_node_starts_with_one() {
        for seed in 0..30 {
            let faults = plan(seed);
            assert!(
                matches!(faults[0].action, SetFaultAction::AddNode { number: 3 }),
                "seed {seed}: {:?}",
                faults[0]
            );
        }
        let without = plan_set_faults(
            &mut ChaCha8Rng::seed_from_u64(1),
            &[SetNemesisKind::Kill],
            SHAPE,
            Duration::from_secs(60),
            NemesisTiming::default(),
        );
        assert!(without
            .iter()
            .all(|fault| matches!(fault.action, SetFaultAction::Kill { .. })));
    }

    #[test]
    fn faults_never_overlap_and_only_add_node_has_no_end() {
        for seed in 0..30 {
            let faults = plan(seed);
            assert!(
                faults.len() >= 5,
                "seed {seed}: only {} faults",
                faults.len()
            );
            let mut previous_end = Duration::ZERO;
            for fault in &faults {
                assert!(fault.start > previous_end, "{fault:?}");
                match fault.action {
                    SetFaultAction::AddNode { .. } => assert_eq!(fault.start, fault.end),
                    _ => assert!(fault.start < fault.end && fault.end <= Duration::from_secs(60)),
                }
                previous_end = fault.end;
            }
        }
    }

    #[test]
    fn metadata_partitions_split_every_metadata_node_into_a_minority_and_a_majority() {
        let faults = plan_set_faults(
            &mut ChaCha8Rng::seed_from_u64(9),
            &[SetNemesisKind::Partition],
            SHAPE,
            Duration::from_secs(120),
            NemesisTiming::default(),
        );
        let mut seen_metadata = false;
        for fault in faults {
            if let SetFaultAction::PartitionMetadata { groups } = fault.action {
                seen_metadata = true;
                assert_eq!((groups[0].len(), groups[1].len()), (1, 2));
                let mut all = groups.concat();
                all.sort_unstable();
                assert_eq!(all, vec![0, 1, 2]);
            }
        }
        assert!(seen_metadata, "no metadata partition planned in 120 s");
    }

    #[test]
    fn set_nemesis_lists_parse_and_unknown_names_are_refused() {
        assert_eq!(
            SetNemesisKind::parse_list("add-node,kill,partition").unwrap(),
            SetNemesisKind::ALL.to_vec()
        );
        assert!(SetNemesisKind::parse_list("none").unwrap().is_empty());
        let error = SetNemesisKind::parse_list("add-node,pause")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"pause\"") && error.contains("add-node"),
            "{error}"
        );
    }
}
