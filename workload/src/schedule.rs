//! The nemesis schedule: which fault starts when and for how long, planned up front from the seed.
//!
//! Planning is pure, so that a seed always gives the same schedule. Choices that depend on the
//! cluster's state at the moment of the fault (who leads) are planned as a preference with a
//! seeded fallback, and resolved by the executor in [`crate::nemesis`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::WorkloadError;

/// A kind of fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NemesisKind {
    /// Cut the cluster into two random halves.
    Partition,
    /// Cut the current leader off from every other node.
    IsolateLeader,
    /// Jepsen's majorities ring: every node sees a majority, but no two nodes see the same one.
    MajoritiesRing,
    /// Kill a node (a random one or the leader), then restart it.
    Kill,
    /// Pause a node (a random one or the leader), then resume it.
    Pause,
}

impl NemesisKind {
    /// Every kind, in the order `--nemesis` lists them.
    pub const ALL: [NemesisKind; 5] = [
        NemesisKind::Partition,
        NemesisKind::IsolateLeader,
        NemesisKind::MajoritiesRing,
        NemesisKind::Kill,
        NemesisKind::Pause,
    ];

    /// The name used by `--nemesis` and in the history header.
    pub fn as_str(self) -> &'static str {
        match self {
            NemesisKind::Partition => "partition",
            NemesisKind::IsolateLeader => "isolate-leader",
            NemesisKind::MajoritiesRing => "majorities-ring",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
        }
    }

    /// Parses a comma-separated list such as `partition,kill,pause`; `none` gives no faults.
    pub fn parse_list(list: &str) -> Result<Vec<NemesisKind>, WorkloadError> {
        let mut kinds = Vec::new();
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            if name == "none" {
                continue;
            }
            let kind: NemesisKind = name.parse()?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NemesisKind {
    type Err = WorkloadError;

    fn from_str(name: &str) -> Result<NemesisKind, WorkloadError> {
        NemesisKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| WorkloadError::UnknownNemesis {
                name: name.to_owned(),
                supported: NemesisKind::ALL
                    .iter()
                    .map(|kind| kind.as_str())
                    .chain(["none"])
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// A node to fault: the leader at the time of the fault if one is known and preferred,
/// else the seeded fallback (or, when the leader is to be avoided and the fallback leads, the
/// next node after it that does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTarget {
    /// Whether to fault the current leader.
    pub prefer_leader: bool,
    /// Whether to fault a follower only (the chaos suite's follower pause); the seeded schedule
    /// never sets it.
    pub avoid_leader: bool,
    /// The node to fault when the leader is not preferred or not known.
    pub fallback: u64,
}

/// What one planned fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Partition the nodes into these disjoint groups.
    Partition {
        /// The groups; every node is in exactly one.
        groups: Vec<Vec<u64>>,
    },
    /// Isolate the leader at the time of the fault (or the fallback node if none is known).
    IsolateLeader {
        /// The node isolated when no leader is known.
        fallback: u64,
    },
    /// Block exactly these links, which leaves every node connected to a majority.
    MajoritiesRing {
        /// The ring order of the nodes.
        ring: Vec<u64>,
        /// The blocked links, each as an ordered pair.
        blocked: Vec<(u64, u64)>,
    },
    /// Kill a node, then restart it.
    Kill(NodeTarget),
    /// Pause a node, then resume it.
    Pause(NodeTarget),
    /// Partition the nodes into these groups, then add a node to the group on the first side
    /// (cut off from every other group); the heal reconnects everyone, and the node stays.
    /// Scripted schedules only; the target must support adding nodes.
    PartitionAddNode {
        /// The groups; the new node joins `groups[0]`.
        groups: Vec<Vec<u64>>,
    },
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFault {
    /// When the fault starts, from the run's start.
    pub start: Duration,
    /// When the fault is undone, from the run's start. Invariant: `start < end <= fault phase end`.
    pub end: Duration,
    /// What the fault does.
    pub action: FaultAction,
}

/// The timing knobs of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NemesisTiming {
    /// The quiet time before each fault is drawn from `[min, max]`.
    pub interval_min: Duration,
    /// See `interval_min`.
    pub interval_max: Duration,
    /// Each fault's duration is drawn from `[min, max]`.
    pub duration_min: Duration,
    /// See `duration_min`.
    pub duration_max: Duration,
}

impl Default for NemesisTiming {
    /// Every 2–5 s a fault lasting 1–4 s.
    fn default() -> Self {
        NemesisTiming {
            interval_min: Duration::from_secs(2),
            interval_max: Duration::from_secs(5),
            duration_min: Duration::from_secs(1),
            duration_max: Duration::from_secs(4),
        }
    }
}

impl NemesisTiming {
    /// True when both ranges have `min <= max`.
    pub fn is_ordered(&self) -> bool {
        self.interval_min <= self.interval_max && self.duration_min <= self.duration_max
    }
}

/// The healed phase at the end of a run of `time`: 20 % of it, at least 3 s, at most all of it.
/// Every workload ends with one, in which the cluster must serve again.
pub fn healed_phase(time: Duration) -> Duration {
    (time / 5).max(Duration::from_secs(3)).min(time)
}

/// At most this many faults are planned, whatever the run's length.
pub const MAX_PLANNED_FAULTS: usize = 10_000;

/// Plans the faults of a run whose fault phase lasts `fault_phase`, on nodes `0..node_count`.
///
/// Faults never overlap: each one is undone before the quiet time that precedes the next.
pub fn plan_faults(
    rng: &mut ChaCha8Rng,
    kinds: &[NemesisKind],
    node_count: u64,
    fault_phase: Duration,
    timing: NemesisTiming,
) -> Vec<PlannedFault> {
    assert!(node_count > 0, "a schedule needs at least one node");
    assert!(
        timing.is_ordered(),
        "nemesis timing ranges are inverted: {timing:?}"
    );
    let mut faults = Vec::new();
    if kinds.is_empty() {
        return faults;
    }
    let mut now = Duration::ZERO;
    while faults.len() < MAX_PLANNED_FAULTS {
        let start = now + draw(rng, timing.interval_min, timing.interval_max);
        if start >= fault_phase {
            break;
        }
        let duration = draw(rng, timing.duration_min, timing.duration_max);
        let end = (start + duration).min(fault_phase);
        if end <= start {
            break;
        }
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let action = plan_action(rng, kind, node_count);
        faults.push(PlannedFault { start, end, action });
        now = end;
    }
    faults
}

pub(crate) fn draw(rng: &mut ChaCha8Rng, min: Duration, max: Duration) -> Duration {
    let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
    Duration::from_millis(rng.gen_range(min..=max))
}

fn plan_action(rng: &mut ChaCha8Rng, kind: NemesisKind, node_count: u64) -> FaultAction {
    let mut nodes: Vec<u64> = (0..node_count).collect();
    nodes.shuffle(rng);
    let target = |rng: &mut ChaCha8Rng| NodeTarget {
        prefer_leader: rng.gen_bool(0.5),
        avoid_leader: false,
        fallback: rng.gen_range(0..node_count),
    };
    match kind {
        NemesisKind::Partition => {
            // Random halves, the minority first: Jepsen's `partition-random-halves`.
            let minority = nodes.split_off((node_count / 2) as usize);
            let mut groups = vec![nodes, minority];
            groups.iter_mut().for_each(|group| group.sort_unstable());
            groups.sort_by_key(Vec::len);
            FaultAction::Partition { groups }
        }
        NemesisKind::IsolateLeader => FaultAction::IsolateLeader { fallback: nodes[0] },
        NemesisKind::MajoritiesRing => {
            let blocked = majorities_ring_blocked_links(&nodes);
            FaultAction::MajoritiesRing {
                ring: nodes,
                blocked,
            }
        }
        NemesisKind::Kill => FaultAction::Kill(target(rng)),
        NemesisKind::Pause => FaultAction::Pause(target(rng)),
    }
}

/// The links to block so that, on `ring`, every node still sees a majority (itself included),
/// but neighbours see different majorities.
///
/// Each node keeps its links to the nodes within ring distance `d`, with `d` the smallest
/// distance that gives it a majority. With three nodes every node already sees a majority
/// through one neighbour, so one link is cut and the middle node becomes the bridge.
pub fn majorities_ring_blocked_links(ring: &[u64]) -> Vec<(u64, u64)> {
    let n = ring.len();
    if n < 3 {
        return Vec::new();
    }
    if n == 3 {
        let (a, b) = (ring[0].min(ring[2]), ring[0].max(ring[2]));
        return vec![(a, b)];
    }
    let majority = n / 2 + 1;
    let reach = majority / 2; // nodes on each side: 1 + 2 * reach >= majority
    let reach = if 1 + 2 * reach >= majority {
        reach
    } else {
        reach + 1
    };
    let mut blocked = Vec::new();
    for i in 0..n {
        for j in (i + 1)..n {
            let distance = (j - i).min(n - (j - i));
            if distance > reach {
                blocked.push((ring[i].min(ring[j]), ring[i].max(ring[j])));
            }
        }
    }
    blocked.sort_unstable();
    blocked
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn plan(seed: u64) -> Vec<PlannedFault> {
        plan_faults(
            &mut ChaCha8Rng::seed_from_u64(seed),
            &[
                NemesisKind::Partition,
                NemesisKind::Kill,
                NemesisKind::Pause,
            ],
            5,
            Duration::from_secs(60),
            NemesisTiming::default(),
        )
    }

    #[test]
    fn nemesis_schedule_is_deterministic_for_a_seed() {
        assert_eq!(plan(11), plan(11));
        assert_ne!(plan(11), plan(12), "two seeds gave the same schedule");
    }

    #[test]
    fn faults_never_overlap_and_stay_inside_the_fault_phase() {
        for seed in 0..50 {
            let faults = plan(seed);
            assert!(
                faults.len() >= 5,
                "seed {seed}: only {} faults",
                faults.len()
            );
            let mut previous_end = Duration::ZERO;
            for fault in &faults {
                assert!(
                    fault.start >= previous_end + Duration::from_secs(2),
                    "{fault:?}"
                );
                assert!(fault.start < fault.end && fault.end <= Duration::from_secs(60));
                assert!(fault.end - fault.start <= Duration::from_secs(4));
                previous_end = fault.end;
            }
        }
    }

    #[test]
    fn partitions_split_every_node_into_a_minority_and_a_majority() {
        let faults = plan_faults(
            &mut ChaCha8Rng::seed_from_u64(3),
            &[NemesisKind::Partition],
            5,
            Duration::from_secs(30),
            NemesisTiming::default(),
        );
        assert!(!faults.is_empty());
        for fault in faults {
            let FaultAction::Partition { groups } = fault.action else {
                panic!("expected a partition, got {:?}", fault.action);
            };
            assert_eq!(groups.len(), 2);
            assert_eq!((groups[0].len(), groups[1].len()), (2, 3));
            let mut all: Vec<u64> = groups.concat();
            all.sort_unstable();
            assert_eq!(all, vec![0, 1, 2, 3, 4]);
        }
    }

    #[test]
    fn majorities_ring_leaves_each_node_a_distinct_majority() {
        for n in 3..=7u64 {
            let ring: Vec<u64> = (0..n).collect();
            let blocked = majorities_ring_blocked_links(&ring);
            assert!(!blocked.is_empty(), "n = {n}: nothing blocked");
            let majority = n / 2 + 1;
            let sees = |node: u64| -> Vec<u64> {
                (0..n)
                    .filter(|&other| {
                        let pair = (node.min(other), node.max(other));
                        other == node || !blocked.contains(&pair)
                    })
                    .collect()
            };
            for node in 0..n {
                assert!(
                    sees(node).len() as u64 >= majority,
                    "n = {n}: node {node} sees a minority"
                );
            }
            assert_ne!(
                sees(0),
                sees(1),
                "n = {n}: neighbours see the same majority"
            );
        }
    }

    #[test]
    fn nemesis_lists_parse_and_unknown_names_are_refused() {
        assert_eq!(
            NemesisKind::parse_list("partition,kill,pause").unwrap(),
            vec![
                NemesisKind::Partition,
                NemesisKind::Kill,
                NemesisKind::Pause
            ]
        );
        assert!(NemesisKind::parse_list("none").unwrap().is_empty());
        let error = NemesisKind::parse_list("partition,flood")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"flood\"") && error.contains("majorities-ring"),
            "{error}"
        );
    }
}
