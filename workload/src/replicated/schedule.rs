//! The replication nemesis's schedule: which fault on which shard starts when and for how long,
//! planned up front from the seed.
//!
//! The faults name roles (the primary, the mirror, the witness), not nodes: who holds a role
//! changes with every failover, so the executor in [`super::nemesis`] resolves the role to a
//! node at the moment of the fault. Faults never overlap, so each one's recovery is its own.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::WorkloadError;
use crate::schedule::NemesisTiming;

/// At most this many faults are planned, whatever the run's length.
pub const MAX_PLANNED_REPLICATION_FAULTS: usize = 10_000;

/// A fault the replication nemesis can inject on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReplicationFaultKind {
    /// Kill the shard's current primary, later restart it (it rejoins as the mirror).
    KillPrimary,
    /// Cut the current primary off from every other node (clients still reach it), later heal.
    IsolatePrimary,
    /// Cut the current mirror off from every other node, later heal.
    IsolateMirror,
    /// Cut the witness off from every other node, later heal.
    IsolateWitness,
    /// Freeze the shard's current primary (SIGSTOP on a process), later let it continue: it
    /// wakes with a lapsed lease and must not serve until it learns the newest record.
    PausePrimary,
    /// Freeze the witness, later let it continue.
    PauseWitness,
    /// Kill the witness, later restart it from what it kept.
    KillWitness,
}

impl ReplicationFaultKind {
    /// Every kind, in the order `--nemesis` lists them.
    pub const ALL: [ReplicationFaultKind; 7] = [
        ReplicationFaultKind::KillPrimary,
        ReplicationFaultKind::IsolatePrimary,
        ReplicationFaultKind::IsolateMirror,
        ReplicationFaultKind::IsolateWitness,
        ReplicationFaultKind::PausePrimary,
        ReplicationFaultKind::PauseWitness,
        ReplicationFaultKind::KillWitness,
    ];

    /// The name used by `--nemesis`, in the history header and in the fault's event value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicationFaultKind::KillPrimary => "kill-primary",
            ReplicationFaultKind::IsolatePrimary => "isolate-primary",
            ReplicationFaultKind::IsolateMirror => "isolate-mirror",
            ReplicationFaultKind::IsolateWitness => "isolate-witness",
            ReplicationFaultKind::PausePrimary => "pause-primary",
            ReplicationFaultKind::PauseWitness => "pause-witness",
            ReplicationFaultKind::KillWitness => "kill-witness",
        }
    }

    /// Whether the fault takes the primary away, so that recovery needs a failover: the first
    /// write acknowledged after it must come from another node.
    pub fn deposes_primary(self) -> bool {
        matches!(
            self,
            ReplicationFaultKind::KillPrimary
                | ReplicationFaultKind::IsolatePrimary
                | ReplicationFaultKind::PausePrimary
        )
    }

    /// Whether `name` is one of these faults (used to send a run to the replication cluster).
    pub fn is_replication_fault(name: &str) -> bool {
        Self::ALL.iter().any(|kind| kind.as_str() == name.trim())
    }

    /// Parses a comma-separated list such as `kill-primary,isolate-primary`; `none` gives no
    /// faults.
    pub fn parse_list(list: &str) -> Result<Vec<ReplicationFaultKind>, WorkloadError> {
        let mut kinds = Vec::new();
        for name in list
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty() && *name != "none")
        {
            let kind: ReplicationFaultKind = name.parse()?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }
}

impl fmt::Display for ReplicationFaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReplicationFaultKind {
    type Err = WorkloadError;

    fn from_str(name: &str) -> Result<ReplicationFaultKind, WorkloadError> {
        ReplicationFaultKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| WorkloadError::UnknownNemesis {
                name: name.to_owned(),
                supported: ReplicationFaultKind::ALL
                    .iter()
                    .map(|kind| kind.as_str())
                    .chain(["none"])
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedReplicationFault {
    /// When the fault starts, from the run's start.
    pub start: Duration,
    /// When it is undone. Invariant: `start < end <= fault phase end`.
    pub end: Duration,
    /// What it does.
    pub kind: ReplicationFaultKind,
    /// The shard it hits.
    pub shard: usize,
}

/// Plans the faults of a fault phase of length `fault_phase` over `shards` shards: a quiet
/// interval, then a fault, and so on; each fault is undone before the next quiet interval. A
/// last fault that the phase's end would cut below `duration_min` is not planned: healed
/// before a failover could finish, it would measure nothing.
pub fn plan_replication_faults(
    rng: &mut ChaCha8Rng,
    kinds: &[ReplicationFaultKind],
    shards: usize,
    fault_phase: Duration,
    timing: NemesisTiming,
) -> Vec<PlannedReplicationFault> {
    assert!(shards > 0, "a schedule needs at least one shard");
    assert!(
        timing.is_ordered(),
        "nemesis timing ranges are inverted: {timing:?}"
    );
    let mut faults = Vec::new();
    if kinds.is_empty() {
        return faults;
    }
    let mut now = Duration::ZERO;
    while faults.len() < MAX_PLANNED_REPLICATION_FAULTS {
        let start = now + draw(rng, timing.interval_min, timing.interval_max);
        if start >= fault_phase {
            break;
        }
        let end = (start + draw(rng, timing.duration_min, timing.duration_max)).min(fault_phase);
        if end <= start || end - start < timing.duration_min {
            break;
        }
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let shard = rng.gen_range(0..shards);
        faults.push(PlannedReplicationFault {
            start,
            end,
            kind,
            shard,
        });
        now = end;
    }
    faults
}

fn draw(rng: &mut ChaCha8Rng, min: Duration, max: Duration) -> Duration {
    let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
    Duration::from_millis(rng.gen_range(min..=max))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_supported_ones() {
        for kind in ReplicationFaultKind::ALL {
            assert_eq!(kind.as_str().parse::<ReplicationFaultKind>().unwrap(), kind);
            assert!(ReplicationFaultKind::is_replication_fault(kind.as_str()));
        }
        assert_eq!(
            ReplicationFaultKind::parse_list("kill-primary, isolate-primary,kill-primary,none")
                .unwrap(),
            vec![
                ReplicationFaultKind::KillPrimary,
                ReplicationFaultKind::IsolatePrimary
            ]
        );
        let error = ReplicationFaultKind::parse_list("kill-primary,kill")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"kill\"") && error.contains("isolate-witness"),
            "{error}"
        );
        assert!(!ReplicationFaultKind::is_replication_fault("kill"));
    }

    #[test]
    fn faults_do_not_overlap_stay_in_the_fault_phase_and_depend_only_on_the_seed() {
        let timing = NemesisTiming {
            interval_min: Duration::from_millis(500),
            interval_max: Duration::from_millis(1500),
            duration_min: Duration::from_millis(800),
            duration_max: Duration::from_millis(2000),
        };
        // Long enough for every one of the seven kinds to be drawn.
        let phase = Duration::from_secs(120);
        let plan = |seed| {
            plan_replication_faults(
                &mut ChaCha8Rng::seed_from_u64(seed),
                &ReplicationFaultKind::ALL,
                2,
                phase,
                timing,
            )
        };
        let faults = plan(3);
        assert_eq!(faults, plan(3));
        assert!(faults.len() >= 5, "{faults:?}");
        let mut previous_end = Duration::ZERO;
        for fault in &faults {
            assert!(previous_end < fault.start && fault.start < fault.end);
            assert!(fault.end <= phase && fault.shard < 2);
            assert!(fault.end - fault.start >= timing.duration_min);
            previous_end = fault.end;
        }
        for kind in ReplicationFaultKind::ALL {
            assert!(
                faults.iter().any(|fault| fault.kind == kind),
                "{kind} never planned"
            );
        }
    }
}
