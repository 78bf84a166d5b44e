//! The compute workloads' fault schedule: kills, pauses and partitions of compute, storage and
//! metadata nodes, drawn from one seed, never overlapping, all undone before the healed phase.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::WorkloadError;
use crate::schedule::{draw, NemesisTiming, MAX_PLANNED_FAULTS};

/// A fault the compute workloads' nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TxnNemesisKind {
    /// Kill a compute node (in-flight commits stop where they are), then restart it.
    KillCompute,
    /// Arm a crash of a compute node at the next commit it coordinates, between two shards'
    /// commits (the moment a random kill almost never hits), then restart it.
    CrashCompute,
    /// Pause a compute node, then resume it.
    PauseCompute,
    /// Cut a compute node off from storage and metadata, then heal it.
    PartitionCompute,
    /// Kill a storage node, then restart it.
    KillStorage,
    /// Cut a storage node off, then heal it.
    PartitionStorage,
    /// Kill a metadata node (the commit records live there), then restart it.
    KillMetadata,
    /// Pause a metadata node, then resume it.
    PauseMetadata,
    /// Split the metadata group into random halves, then heal it.
    PartitionMetadata,
    /// Add a replicated shard and move its rows to it while the clients run (processes only;
    /// not undone). Not among [`TxnNemesisKind::ALL`] nor `all`: it is named alone.
    AddShard,
}

impl TxnNemesisKind {
    /// Every kind, in a fixed order.
    pub const ALL: [TxnNemesisKind; 9] = [
        TxnNemesisKind::KillCompute,
        TxnNemesisKind::CrashCompute,
        TxnNemesisKind::PauseCompute,
        TxnNemesisKind::PartitionCompute,
        TxnNemesisKind::KillStorage,
        TxnNemesisKind::PartitionStorage,
        TxnNemesisKind::KillMetadata,
        TxnNemesisKind::PauseMetadata,
        TxnNemesisKind::PartitionMetadata,
    ];

    /// The kind's name on the command line and in the history header.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnNemesisKind::KillCompute => "kill-compute",
            TxnNemesisKind::CrashCompute => "crash-compute",
            TxnNemesisKind::PauseCompute => "pause-compute",
            TxnNemesisKind::PartitionCompute => "partition-compute",
            TxnNemesisKind::KillStorage => "kill-storage",
            TxnNemesisKind::PartitionStorage => "partition-storage",
            TxnNemesisKind::KillMetadata => "kill-metadata",
            TxnNemesisKind::PauseMetadata => "pause-metadata",
            TxnNemesisKind::PartitionMetadata => "partition-metadata",
            TxnNemesisKind::AddShard => "add-shard",
        }
    }

    /// Parses a comma-separated list. `kill`, `pause` and `partition` stand for that fault on
    /// every role that supports it (storage nodes have no pause; `kill` includes
    /// `crash-compute`), `none` for no fault.
    pub fn parse_list(list: &str) -> Result<Vec<TxnNemesisKind>, WorkloadError> {
        let mut kinds = Vec::new();
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let matched: Vec<TxnNemesisKind> = match name {
                "none" => Vec::new(),
                "kill" | "pause" | "partition" => Self::ALL
                    .into_iter()
                    .filter(|kind| {
                        kind.as_str().starts_with(name)
                            || (name == "kill" && *kind == TxnNemesisKind::CrashCompute)
                    })
                    .collect(),
                "all" => Self::ALL.to_vec(),
                "add-shard" => vec![TxnNemesisKind::AddShard],
                _ => match Self::ALL.into_iter().find(|kind| kind.as_str() == name) {
                    Some(kind) => vec![kind],
                    None => {
                        let mut supported: Vec<&str> =
                            Self::ALL.iter().map(|kind| kind.as_str()).collect();
                        supported.extend([
                            "add-shard",
                            "kill",
                            "pause",
                            "partition",
                            "all",
                            "none",
                        ]);
                        return Err(WorkloadError::UnknownNemesis {
                            name: name.to_owned(),
                            supported: supported.join(", "),
                        });
                    }
                },
            };
            kinds.extend(matched);
        }
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }
}

/// One fault of the schedule. Its target is `pick` modulo the nodes of its role at the moment
/// of the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTxnFault {
    /// When the fault starts, from the run's start.
    pub start: Duration,
    /// When it is undone. Invariant: `start < end <= fault phase end`.
    pub end: Duration,
    /// What it does.
    pub kind: TxnNemesisKind,
    /// Which node, modulo the role's node count.
    pub pick: u64,
}

/// Plans the faults of a fault phase of `fault_phase`.
pub fn plan_txn_faults(
    rng: &mut ChaCha8Rng,
    kinds: &[TxnNemesisKind],
    fault_phase: Duration,
    timing: NemesisTiming,
) -> Vec<PlannedTxnFault> {
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
        let end = (start + draw(rng, timing.duration_min, timing.duration_max)).min(fault_phase);
        if end <= start {
            break;
        }
        faults.push(PlannedTxnFault {
            start,
            end,
            kind: kinds[rng.gen_range(0..kinds.len())],
            pick: rng.gen(),
        });
        now = end;
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn role_wide_names_expand_to_every_role() {
        let kinds = TxnNemesisKind::parse_list("kill, pause").unwrap();
        assert_eq!(
            kinds,
            vec![
                TxnNemesisKind::KillCompute,
                TxnNemesisKind::CrashCompute,
                TxnNemesisKind::PauseCompute,
                TxnNemesisKind::KillStorage,
                TxnNemesisKind::KillMetadata,
                TxnNemesisKind::PauseMetadata,
            ]
        );
        assert!(TxnNemesisKind::parse_list("none").unwrap().is_empty());
        let error = TxnNemesisKind::parse_list("kill-moon").unwrap_err();
        assert!(error.to_string().contains("kill-compute"), "{error}");
    }

    #[test]
    fn faults_never_overlap_and_end_within_the_fault_phase() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let phase = Duration::from_secs(60);
        let faults = plan_txn_faults(
            &mut rng,
            &TxnNemesisKind::ALL,
            phase,
            NemesisTiming::default(),
        );
        assert!(faults.len() > 5);
        for pair in faults.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{pair:?}");
        }
        assert!(faults.iter().all(|f| f.start < f.end && f.end <= phase));
    }
}
