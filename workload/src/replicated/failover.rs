//! The harness's own recovery measurement, independent of the history's analysis: for each
//! fault, the time from its application to the first write acknowledgement that a client
//! observed on the faulted shard afterwards. When the fault took the primary away, that
//! acknowledgement must come from another node, or from any node once the fault is healed (a
//! fault healed before the failover ended is recovered from by the old primary). This is the failover benchmark's definition
//! (`cluster/benches/failover.rs`: fault → first write acknowledged by the new primary), taken
//! from the workload's own clients instead of a dedicated probe.

use serde::Serialize;

use super::client::WriteAck;
use super::nemesis::AppliedFault;

/// One fault's recovery as the harness saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HarnessRecovery {
    /// The fault's kind (`kill-primary`, ...).
    pub kind: String,
    /// The index of the fault's nemesis event, which pairs this with the checker's interval.
    pub start_index: u64,
    /// The node faulted.
    pub node: String,
    /// When the fault was applied, ns since the run started.
    pub applied_ns: u64,
    /// The first qualifying acknowledgement, ns since the run started; `None` if none came.
    pub first_ack_ns: Option<u64>,
    /// The node that acknowledged it.
    pub first_ack_node: Option<String>,
    /// `first_ack_ns - applied_ns`, in ms.
    pub rto_ms: Option<f64>,
}

/// The harness's recovery of each fault; `acks` sorted by time.
pub fn harness_recoveries(faults: &[AppliedFault], acks: &[WriteAck]) -> Vec<HarnessRecovery> {
    debug_assert!(acks
        .windows(2)
        .all(|pair| pair[0].time_ns <= pair[1].time_ns));
    faults
        .iter()
        .map(|fault| {
            let from = acks.partition_point(|ack| ack.time_ns < fault.applied_ns);
            let first = acks[from..].iter().find(|ack| {
                let by_faulted = super::replica_node_name(ack.node) == fault.node;
                ack.shard == fault.shard
                    && !(fault.deposes_primary && by_faulted && ack.time_ns < fault.heal_ns)
            });
            HarnessRecovery {
                kind: fault.kind.clone(),
                start_index: fault.start_index,
                node: fault.node.clone(),
                applied_ns: fault.applied_ns,
                first_ack_ns: first.map(|ack| ack.time_ns),
                first_ack_node: first.map(|ack| super::replica_node_name(ack.node)),
                rto_ms: first
                    .map(|ack| (ack.time_ns.saturating_sub(fault.applied_ns)) as f64 / 1e6),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: &str, deposes_primary: bool) -> AppliedFault {
        AppliedFault {
            kind: kind.to_owned(),
            shard: 0,
            node: "r0".to_owned(),
            deposes_primary,
            start_index: 7,
            start_ns: 1_000_000,
            applied_ns: 1_000_100,
            heal_index: 90,
            heal_ns: 900_000_000,
        }
    }

    fn ack(time_ns: u64, shard: usize, node: u64) -> WriteAck {
        WriteAck {
            time_ns,
            shard,
            node,
        }
    }

    #[test]
    fn a_failover_ends_at_the_first_ack_by_another_node_of_the_faulted_shard() {
        let acks = [
            ack(900_000, 0, 1),
            ack(2_000_000, 0, 0),
            ack(3_000_000, 1, 4),
            ack(301_000_100, 0, 1),
        ];
        let recoveries = harness_recoveries(&[fault("kill-primary", true)], &acks);
        assert_eq!(recoveries[0].first_ack_ns, Some(301_000_100));
        assert_eq!(recoveries[0].first_ack_node.as_deref(), Some("r1"));
        assert_eq!(recoveries[0].rto_ms, Some(300.0));
        let stall = harness_recoveries(&[fault("isolate-mirror", false)], &acks);
        assert_eq!(stall[0].first_ack_node.as_deref(), Some("r0"));
        let none = harness_recoveries(&[fault("kill-primary", true)], &acks[..3]);
        assert_eq!((none[0].first_ack_ns, none[0].rto_ms), (None, None));
        // Healed before any failover: the old primary's first acknowledgement after the heal.
        let after_heal = [ack(2_000_000, 0, 0), ack(950_000_000, 0, 0)];
        let healed = harness_recoveries(&[fault("kill-primary", true)], &after_heal);
        assert_eq!(healed[0].first_ack_ns, Some(950_000_000));
    }
}
