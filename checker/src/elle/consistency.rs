//! The consistency models and the anomalies each one forbids, after Elle's
//! `elle.consistency-model` (Adya's PL levels, Cerone et al., Bailis et al.).

use serde::Serialize;
use std::fmt;

/// A consistency model a transactional history can be checked against, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Adya's PL-2: no G0, no G1 (G1a, G1b, G1c) and none of the anomalies that imply them.
    ReadCommitted,
    /// Adya's PL-2.99: read committed, plus no G2-item (so no G-single, no G-nonadjacent on
    /// items) and no lost update.
    RepeatableRead,
    /// Adya's PL-SI, generalised as Cerone and Gotsman do: read committed, plus no G-single,
    /// no G-nonadjacent, no lost update and no internal inconsistency. G2-item is allowed.
    SnapshotIsolation,
    /// Conflict serializability (Adya's PL-3): no dependency cycle at all.
    Serializable,
    /// Adya's PL-SS: serializable, plus no cycle through process or realtime order.
    StrictSerializable,
}

/// Anomalies forbidden by read committed (Elle: PL-2 forbids G1 and, through read
/// uncommitted, G0; every anomaly that implies one of those is forbidden too).
const READ_COMMITTED: &[&str] = &[
    "G0",
    "G1a",
    "G1b",
    "G1c",
    "dirty-update",
    "incompatible-order",
    "duplicate-elements",
    "future-read",
    "cyclic-versions",
    // A read of a value nobody wrote: not in Elle's table, but no model allows it.
    "garbage-read",
];

/// Item anti-dependency cycles: all of them are G2-item in Adya's sense.
const ITEM_ANTI_DEPENDENCY: &[&str] = &["G-single", "G-nonadjacent", "G2-item", "lost-update"];

/// The snapshot-isolation additions over read committed.
const SNAPSHOT_ISOLATION: &[&str] = &["G-single", "G-nonadjacent", "lost-update", "internal"];

impl Consistency {
    /// Every model, weakest first.
    pub const ALL: [Consistency; 5] = [
        Consistency::ReadCommitted,
        Consistency::RepeatableRead,
        Consistency::SnapshotIsolation,
        Consistency::Serializable,
        Consistency::StrictSerializable,
    ];

    /// The model's name: `read-committed`, `repeatable-read`, `snapshot-isolation`,
    /// `serializable` or `strict-serializable`.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::ReadCommitted => "read-committed",
            Consistency::RepeatableRead => "repeatable-read",
            Consistency::SnapshotIsolation => "snapshot-isolation",
            Consistency::Serializable => "serializable",
            Consistency::StrictSerializable => "strict-serializable",
        }
    }

    /// Parses a name given by [`Consistency::name`].
    pub fn parse(name: &str) -> Result<Consistency, String> {
        Consistency::ALL
            .into_iter()
            .find(|model| model.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown consistency model {name:?}: expected read-committed, \
                     repeatable-read, snapshot-isolation, serializable or strict-serializable"
                )
            })
    }

    /// True when a history that holds `anomaly` violates this model.
    pub fn forbids(self, anomaly: &str) -> bool {
        if READ_COMMITTED.contains(&anomaly) {
            return true;
        }
        let variant = anomaly.ends_with("-process") || anomaly.ends_with("-realtime");
        match self {
            Consistency::ReadCommitted => false,
            Consistency::RepeatableRead => ITEM_ANTI_DEPENDENCY.contains(&anomaly),
            Consistency::SnapshotIsolation => SNAPSHOT_ISOLATION.contains(&anomaly),
            Consistency::Serializable => {
                ITEM_ANTI_DEPENDENCY.contains(&anomaly) || anomaly == "internal"
            }
            // Adya's PL-SS forbids G1c-realtime and G2-realtime; process order is a subset
            // of realtime order, so the process variants are forbidden as well.
            Consistency::StrictSerializable => {
                variant || ITEM_ANTI_DEPENDENCY.contains(&anomaly) || anomaly == "internal"
            }
        }
    }

    /// True when checking this model needs realtime edges.
    pub fn needs_realtime(self) -> bool {
        self == Consistency::StrictSerializable
    }

    /// True when checking this model needs process edges.
    pub fn needs_process(self) -> bool {
        self == Consistency::StrictSerializable
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for model in Consistency::ALL {
            assert_eq!(Consistency::parse(model.name()), Ok(model));
        }
        assert!(Consistency::parse("linearizable").is_err());
    }

    #[test]
    fn read_committed_allows_g2_item_but_repeatable_read_does_not() {
        assert!(!Consistency::ReadCommitted.forbids("G2-item"));
        assert!(!Consistency::ReadCommitted.forbids("internal"));
        assert!(Consistency::ReadCommitted.forbids("G1c"));
        assert!(Consistency::RepeatableRead.forbids("G2-item"));
        assert!(!Consistency::SnapshotIsolation.forbids("G2-item"));
        assert!(Consistency::SnapshotIsolation.forbids("G-single"));
        assert!(Consistency::Serializable.forbids("G2-item"));
        assert!(!Consistency::Serializable.forbids("G2-item-realtime"));
        assert!(Consistency::StrictSerializable.forbids("G2-item-realtime"));
        assert!(Consistency::StrictSerializable.forbids("G0-process"));
    }
}
