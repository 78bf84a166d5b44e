//! Timing analyses on hand-made histories with hand-computed answers: RTO per fault,
//! invalidation latency, latency quantiles and throughput.

use helios_checker::jsonl::JsonlReader;
use helios_checker::ops::{self, Operations, Outcome};
use helios_checker::timing::{self, FaultRecovery, TimeBasis};
use serde_json::{json, Value};

const MS: u64 = 1_000_000;

/// Builds a JSON Lines history from events given in any order: `operations` sorts them by
/// time (stably) and numbers them, so that index order is real-time order.
#[derive(Default)]
struct Events {
    events: Vec<(u64, Value)>,
}

impl Events {
    fn event(
        &mut self,
        at_ms: u64,
        kind: &str,
        process: Value,
        f: &str,
        value: Value,
    ) -> &mut Self {
        self.with(at_ms, kind, process, f, value, json!({}))
    }

    fn with(
        &mut self,
        at_ms: u64,
        kind: &str,
        process: Value,
        f: &str,
        value: Value,
        extra: Value,
    ) -> &mut Self {
        let mut event = json!({
            "time": at_ms * MS,
            "type": kind,
            "process": process,
            "f": f,
            "value": value,
        });
        if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
            event.extend(extra.clone());
        }
        self.events.push((at_ms, event));
        self
    }

    fn nemesis(&mut self, at_ms: u64, f: &str, value: Value) -> &mut Self {
        self.event(at_ms, "info", json!("nemesis"), f, value)
    }

    /// A client operation invoked at `from` and completed at `to`.
    fn op(&mut self, process: u64, from: u64, to: u64, outcome: &str, f: &str) -> &mut Self {
        self.event(from, "invoke", json!(process), f, json!(1));
        let extra = if outcome == "ok" {
            json!({})
        } else {
            json!({"error": "timeout"})
        };
        self.with(to, outcome, json!(process), f, json!(1), extra)
    }

    fn operations(&self) -> Operations {
        let mut events = self.events.clone();
        events.sort_by_key(|(at_ms, _)| *at_ms);
        let lines: Vec<String> = events
            .into_iter()
            .enumerate()
            .map(|(index, (_, mut event))| {
                event["index"] = json!(index);
                event.to_string()
            })
            .collect();
        let text = lines.join("\n");
        let reader = JsonlReader::new(text.as_bytes(), "t.jsonl").expect("valid history");
        ops::pair(reader, "t.jsonl").expect("well formed")
    }
}

fn faults(events: &Events) -> Vec<FaultRecovery> {
    timing::analyze(&events.operations()).faults
}

#[test]
fn a_fault_at_1_0_s_with_failures_until_1_8_s_has_an_rto_of_0_8_s() {
    let mut events = Events::default();
    events.op(0, 900, 950, "ok", "write");
    events.nemesis(
        1000,
        "start-partition",
        json!({"groups": [["s0"], ["s1", "s2"]]}),
    );
    events.op(0, 1050, 1200, "fail", "write");
    events.op(0, 1300, 1800, "fail", "read");
    // Served again at 1.8 s: the first ok invoked after the last failure completes then.
    events.op(0, 1800, 1800, "ok", "read");
    // A cas that found another value is an answer, not a disruption.
    events.event(1900, "invoke", json!(0), "cas", json!([1, 2]));
    events.event(1950, "fail", json!(0), "cas", json!([1, 2]));
    events.nemesis(2000, "stop-partition", json!("network-healed"));
    let faults = faults(&events);
    assert_eq!(faults.len(), 1);
    let fault = &faults[0];
    assert_eq!(fault.fault, "start-partition");
    assert_eq!(fault.start_ns, Some(1000 * MS));
    assert_eq!(fault.end_ns, Some(2000 * MS));
    assert_eq!(fault.healed_by.as_deref(), Some("stop-partition"));
    assert_eq!(fault.affected_ops, 2);
    assert_eq!(fault.last_disruption_ns, Some(1800 * MS));
    assert_eq!(fault.recovered_at_ns, Some(1800 * MS));
    assert_eq!(fault.recovery_op, Some(3));
    assert_eq!(fault.rto_ms, Some(800.0));
    assert!(fault.recovered);
}

#[test]
fn a_fault_that_disrupts_nothing_has_an_rto_of_0() {
    let mut events = Events::default();
    events.nemesis(1000, "kill", json!({"node": "s1"}));
    events.op(0, 1100, 1150, "ok", "write");
    events.op(1, 1200, 1250, "ok", "read");
    events.nemesis(1500, "restart", json!({"node": "s1"}));
    let fault = &faults(&events)[0];
    assert_eq!(fault.affected_ops, 0);
    assert_eq!(fault.rto_ms, Some(0.0));
    assert_eq!(fault.healed_by.as_deref(), Some("restart"));
    assert!(fault.explanation.contains("RTO 0"), "{}", fault.explanation);
}

#[test]
fn failures_that_never_stop_mean_no_recovery() {
    let mut events = Events::default();
    events.op(0, 500, 600, "ok", "read");
    events.nemesis(1000, "pause", json!({"node": "s0"}));
    events.op(0, 1100, 1400, "fail", "read");
    events.op(0, 1500, 1900, "fail", "read");
    // Pending at the end: an unknown outcome, a disruption at its invocation.
    events.event(2000, "invoke", json!(0), "write", json!(3));
    let fault = &faults(&events)[0];
    assert_eq!(fault.end_index, None, "never resumed: it runs to the end");
    assert_eq!(fault.affected_ops, 3);
    assert!(!fault.recovered);
    assert_eq!(fault.rto_ms, None);
    assert_eq!(fault.recovered_at_ns, None);
    assert!(fault.explanation.contains("not recovered"));
}

#[test]
fn overlapping_faults_share_the_failures_after_both_began() {
    let mut events = Events::default();
    events.nemesis(1000, "start-partition", json!(null));
    events.op(0, 1100, 1200, "fail", "write");
    events.nemesis(1500, "kill", json!({"node": "s2"}));
    events.nemesis(2000, "stop-partition", json!(null));
    events.nemesis(2100, "restart", json!({"node": "s2"}));
    // An info is observed at its timeout (3000), which puts it in both windows, and ordered by
    // its invocation (2300): the fail invoked at 2350 is the last disruption, and the ok
    // invoked at 2400 is served at 2450.
    events.event(2300, "invoke", json!(1), "write", json!(5));
    events.op(0, 2350, 2400, "fail", "read");
    events.op(0, 2400, 2450, "ok", "read");
    events.with(
        3000,
        "info",
        json!(1),
        "write",
        json!(5),
        json!({"error": "timeout"}),
    );
    let faults = faults(&events);
    assert_eq!(faults.len(), 2);
    let (partition, kill) = (&faults[0], &faults[1]);
    assert_eq!((partition.affected_ops, kill.affected_ops), (3, 2));
    assert_eq!(partition.rto_ms, Some(1450.0));
    assert_eq!(kill.rto_ms, Some(950.0));
    assert_eq!(partition.recovered_at_ns, kill.recovered_at_ns);
}

#[test]
fn failures_that_outlast_the_heal_still_count() {
    let mut events = Events::default();
    events.nemesis(1000, "kill", json!({"node": "s0"}));
    events.nemesis(1200, "restart", json!({"node": "s0"}));
    events.op(0, 1300, 1700, "fail", "write");
    events.op(0, 1700, 1750, "ok", "write");
    let fault = &faults(&events)[0];
    assert_eq!(fault.end_ns, Some(1200 * MS));
    // Served again when the ok invoked at 1.7 s completes, at 1.75 s.
    assert_eq!(fault.rto_ms, Some(750.0));
}

#[test]
fn a_disruption_after_the_system_settled_is_not_the_healed_faults() {
    // Healed at 1.2 s; a failure until 1.7 s is the fault's aftermath. Then 1 s and more of ok
    // operations, and a failure observed at 4.0 s: the system had settled, so it is not charged
    // to the kill (it would have made the RTO 4.05 s).
    let mut events = Events::default();
    events.nemesis(1000, "kill", json!({"node": "s0"}));
    events.nemesis(1200, "restart", json!({"node": "s0"}));
    events.op(0, 1300, 1700, "fail", "write");
    events.op(0, 1700, 1750, "ok", "write");
    events.op(0, 2000, 2050, "ok", "read");
    events.op(0, 3900, 4000, "fail", "read");
    events.op(0, 4000, 4050, "ok", "read");
    let fault = &faults(&events)[0];
    assert_eq!(fault.affected_ops, 1);
    assert_eq!(fault.later_disruptions, 1);
    assert_eq!(fault.rto_ms, Some(750.0));
    assert!(
        fault.explanation.contains("not charged"),
        "{}",
        fault.explanation
    );
}

#[test]
fn without_a_quiet_second_served_after_the_heal_a_late_failure_still_counts() {
    // Failures keep coming less than 1 s apart after the heal (1.2 s): each one is still the
    // fault's aftermath, and so is the one at 3.0 s.
    let mut events = Events::default();
    events.nemesis(1000, "kill", json!({"node": "s0"}));
    events.nemesis(1200, "restart", json!({"node": "s0"}));
    events.op(0, 1300, 2100, "fail", "write");
    events.op(0, 2150, 2200, "ok", "read");
    events.op(0, 2200, 3000, "fail", "write");
    events.op(0, 3000, 3050, "ok", "read");
    let fault = &faults(&events)[0];
    assert_eq!(fault.affected_ops, 2);
    assert_eq!(fault.later_disruptions, 0);
    assert_eq!(fault.rto_ms, Some(2050.0));
    // A quiet second with nothing served is no proof of recovery either.
    let mut idle = Events::default();
    idle.nemesis(1000, "kill", json!({"node": "s0"}));
    idle.nemesis(1200, "restart", json!({"node": "s0"}));
    idle.op(0, 3500, 4000, "fail", "write");
    idle.op(0, 4000, 4050, "ok", "write");
    let fault = &faults(&idle)[0];
    assert_eq!((fault.affected_ops, fault.later_disruptions), (1, 0));
    assert_eq!(fault.rto_ms, Some(3050.0));
}

#[test]
fn a_later_fault_gets_its_own_failures() {
    let mut events = Events::default();
    events.nemesis(1000, "start-partition", json!(null));
    events.nemesis(1500, "stop-partition", json!(null));
    events.op(0, 1550, 1600, "fail", "read");
    events.op(0, 1600, 1650, "ok", "read");
    events.nemesis(3000, "kill", json!({"node": "s1"}));
    events.op(0, 3050, 3100, "fail", "read");
    events.op(0, 3200, 3900, "fail", "read");
    events.op(0, 3900, 3950, "ok", "read");
    events.nemesis(3500, "restart", json!({"node": "s1"}));
    let faults = faults(&events);
    assert_eq!(faults[0].affected_ops, 1);
    assert_eq!(faults[0].rto_ms, Some(650.0));
    assert_eq!(faults[1].affected_ops, 2);
    assert_eq!(faults[1].rto_ms, Some(950.0));
}

#[test]
fn jepsen_nemesis_invoke_and_info_count_once_at_the_info() {
    let mut events = Events::default();
    events.event(1000, "invoke", json!("nemesis"), "start", json!(null));
    events.event(
        1010,
        "info",
        json!("nemesis"),
        "start",
        json!("Cut off {n1 [n2]}"),
    );
    events.op(0, 1100, 1500, "fail", "read");
    events.op(0, 1600, 1650, "ok", "read");
    events.event(2000, "invoke", json!("nemesis"), "stop", json!(null));
    events.event(
        2010,
        "info",
        json!("nemesis"),
        "stop",
        json!("fully connected"),
    );
    let report = timing::analyze(&events.operations());
    assert_eq!(report.faults.len(), 1);
    let fault = &report.faults[0];
    assert_eq!(fault.start_ns, Some(1010 * MS));
    assert_eq!(fault.end_ns, Some(2010 * MS));
    assert_eq!(fault.targets, json!("Cut off {n1 [n2]}"));
    assert_eq!(fault.rto_ms, Some(640.0));
    assert_eq!(report.unmatched_heals, 0);
}

#[test]
fn start_heals_a_kill_and_heals_that_match_nothing_are_counted() {
    let mut events = Events::default();
    events.nemesis(1000, "kill", json!({"node": "s1"}));
    events.nemesis(1200, "kill", json!({"node": "s2"}));
    events.nemesis(1500, "start", json!({"node": "s2"}));
    events.nemesis(1600, "resume", json!({"node": "s0"}));
    let report = timing::analyze(&events.operations());
    assert_eq!(report.faults.len(), 2);
    assert_eq!(report.faults[0].end_index, None, "s1 was never restarted");
    assert_eq!(report.faults[1].end_ns, Some(1500 * MS));
    assert_eq!(report.unmatched_heals, 1);
}

/// Writes through s1; reads through s1, s2 and s3 (see the invalidation test).
fn cache_history() -> Events {
    let mut events = Events::default();
    let mut op = |process: u64, from: u64, to: u64, f: &str, value: Value, node: &str| {
        let invoked = if f == "read" {
            json!(null)
        } else {
            value.clone()
        };
        events.event(from, "invoke", json!(process), f, invoked);
        events.with(
            to,
            "ok",
            json!(process),
            f,
            value,
            json!({"key": "x", "node": node}),
        );
    };
    op(0, 0, 10, "write", json!(1), "s1");
    op(2, 5, 6, "read", json!(null), "s2");
    op(1, 11, 11, "read", json!(null), "s1");
    op(2, 12, 13, "read", json!(null), "s2");
    op(3, 15, 16, "read", json!(1), "s3");
    op(2, 20, 21, "read", json!(null), "s2");
    op(3, 25, 26, "read", json!(1), "s3");
    op(2, 30, 31, "read", json!(1), "s2");
    op(2, 40, 41, "read", json!(1), "s2");
    op(0, 50, 60, "write", json!(2), "s1");
    op(3, 65, 66, "read", json!(1), "s3");
    op(2, 70, 71, "read", json!(2), "s2");
    op(3, 80, 81, "read", json!(1), "s3");
    events
}

#[test]
fn invalidation_latency_is_measured_per_write_and_other_node() {
    let report = timing::analyze(&cache_history().operations());
    let invalidation = report.invalidation.expect("three nodes served the key");
    // (w1, s2): stale reads at 12 and 20 ms, fresh from 30 ms: 30 − 10 = 20 ms.
    // (w1, s3) and (w2, s2): never stale, 0. (w2, s3): stale to the end, unconverged.
    assert_eq!(invalidation.writes, 2);
    assert_eq!(invalidation.pairs, 4);
    assert_eq!(invalidation.stale_pairs, 2);
    assert_eq!(invalidation.unconverged_pairs, 1);
    assert_eq!(invalidation.reads, 11);
    assert_eq!(invalidation.unordered_reads, 0);
    // s2 at 12 and 20, s3 at 65 and 80; s1's own read at 11 is not an invalidation.
    assert_eq!(invalidation.stale_reads, 4);
    assert_eq!(invalidation.latency_ms.count, 3);
    assert_eq!(invalidation.latency_ms.min, Some(0.0));
    assert_eq!(invalidation.latency_ms.p50, Some(0.0));
    assert_eq!(invalidation.latency_ms.max, Some(20.0));
    assert_eq!(invalidation.max_ms, 20.0);
    let worst: Vec<(Value, usize, Option<f64>)> = invalidation
        .per_write
        .iter()
        .map(|write| {
            (
                write.value.clone(),
                write.unconverged_nodes,
                write.max_latency_ms,
            )
        })
        .collect();
    assert_eq!(
        worst,
        vec![(json!(2), 1, Some(0.0)), (json!(1), 0, Some(20.0))],
        "the unconverged write ranks first"
    );
}

#[test]
fn one_node_gives_no_invalidation_report() {
    let mut events = Events::default();
    events.with(
        0,
        "invoke",
        json!(0),
        "write",
        json!(1),
        json!({"key": "x"}),
    );
    events.with(
        1,
        "ok",
        json!(0),
        "write",
        json!(1),
        json!({"key": "x", "node": "s1"}),
    );
    events.with(
        2,
        "invoke",
        json!(0),
        "read",
        json!(null),
        json!({"key": "x"}),
    );
    events.with(
        3,
        "ok",
        json!(0),
        "read",
        json!(1),
        json!({"key": "x", "node": "s1"}),
    );
    assert!(timing::analyze(&events.operations()).invalidation.is_none());
}

#[test]
fn latency_quantiles_per_f_and_outcome_come_from_an_hdr_histogram() {
    let mut events = Events::default();
    for latency in 1..=100 {
        let start = latency * 1000;
        events.op(0, start, start + latency, "ok", "read");
    }
    events.op(0, 200_000, 200_250, "fail", "read");
    let report = timing::analyze(&events.operations());
    assert_eq!(report.time_basis, TimeBasis::Nanoseconds);
    assert_eq!(report.latency.len(), 2);
    let ok = &report.latency[0];
    assert_eq!(
        (ok.f.as_str(), ok.outcome, ok.count),
        ("read", Outcome::Ok, 100)
    );
    // Three significant digits: within 0.1% of the exact answer.
    let close = |measured: f64, exact: f64| (measured - exact).abs() <= exact * 1e-3;
    assert!(close(ok.latency_ms_p50, 50.0), "{}", ok.latency_ms_p50);
    assert!(close(ok.latency_ms_p90, 90.0), "{}", ok.latency_ms_p90);
    assert!(close(ok.latency_ms_p99, 99.0), "{}", ok.latency_ms_p99);
    assert!(close(ok.latency_ms_max, 100.0), "{}", ok.latency_ms_max);
    let failed = &report.latency[1];
    assert_eq!((failed.outcome, failed.count), (Outcome::Fail, 1));
    assert!(close(failed.latency_ms_max, 250.0));
}

#[test]
fn throughput_counts_completions_per_second_with_empty_seconds_kept() {
    let mut events = Events::default();
    events.op(0, 100, 500, "ok", "read");
    events.op(0, 600, 700, "ok", "read");
    events.op(0, 1100, 1200, "fail", "read");
    events.op(0, 2900, 3100, "info", "write");
    let buckets = timing::analyze(&events.operations()).throughput;
    let counts: Vec<(u64, u64, u64, u64)> = buckets
        .iter()
        .map(|bucket| (bucket.second, bucket.ok, bucket.fail, bucket.info))
        .collect();
    assert_eq!(
        counts,
        vec![(0, 2, 0, 0), (1, 0, 1, 0), (2, 0, 0, 0), (3, 0, 0, 1)]
    );
}

#[test]
fn a_history_without_times_pairs_faults_but_measures_nothing() {
    let mut operations = {
        let mut events = Events::default();
        events.nemesis(1000, "kill", json!({"node": "s0"}));
        events.op(0, 1100, 1200, "fail", "read");
        events.op(0, 1300, 1400, "ok", "read");
        events.operations()
    };
    for op in &mut operations.ops {
        op.invoke_time = None;
        op.complete_time = None;
    }
    for event in &mut operations.nemesis {
        event.time = None;
    }
    let report = timing::analyze(&operations);
    assert_eq!(report.time_basis, TimeBasis::EventIndex);
    assert!(report.note.is_some());
    assert!(report.latency.is_empty() && report.throughput.is_empty());
    let fault = &report.faults[0];
    assert!(fault.recovered);
    // Recovered at the ok's completion event.
    assert_eq!(fault.recovered_at_index, Some(4));
    assert_eq!(fault.rto_ms, None);
    assert!(fault.explanation.contains("unmeasured"));
}

#[test]
fn every_definition_is_in_the_report() {
    let report = timing::analyze(&cache_history().operations());
    for name in [
        "latency",
        "throughput",
        "disruption",
        "fault interval",
        "window",
        "rto",
    ] {
        assert!(report.definitions.contains_key(name), "{name}");
    }
    assert!(report.definitions["invalidation latency"].contains("other node"));
}

#[test]
fn a_fault_never_healed_is_not_charged_with_the_next_faults_disruptions() {
    // add-node at 1 s (never healed), a kill at 5 s with failures until 5.5 s, ok at 6 s.
    let text = concat!(
        "{\"index\":0,\"time\":1000000000,\"type\":\"info\",\"process\":\"nemesis\",\"f\":\"add-node\",\"value\":{\"node\":\"s3\"}}\n",
        "{\"index\":1,\"time\":2000000000,\"type\":\"invoke\",\"process\":1,\"f\":\"write\",\"value\":1}\n",
        "{\"index\":2,\"time\":2100000000,\"type\":\"ok\",\"process\":1,\"f\":\"write\",\"value\":1}\n",
        "{\"index\":3,\"time\":5000000000,\"type\":\"info\",\"process\":\"nemesis\",\"f\":\"kill\",\"value\":{\"node\":\"s1\"}}\n",
        "{\"index\":4,\"time\":5100000000,\"type\":\"invoke\",\"process\":1,\"f\":\"write\",\"value\":2}\n",
        "{\"index\":5,\"time\":5500000000,\"type\":\"fail\",\"process\":1,\"f\":\"write\",\"value\":2,\"error\":\"node down\"}\n",
        "{\"index\":6,\"time\":6000000000,\"type\":\"invoke\",\"process\":1,\"f\":\"write\",\"value\":3}\n",
        "{\"index\":7,\"time\":6100000000,\"type\":\"ok\",\"process\":1,\"f\":\"write\",\"value\":3}\n",
    );
    let reader = helios_checker::jsonl::JsonlReader::new(text.as_bytes(), "t.jsonl").unwrap();
    let operations = helios_checker::ops::pair(reader, "t.jsonl").unwrap();
    let report = helios_checker::timing::analyze(&operations);
    assert_eq!(report.faults.len(), 2);
    assert_eq!(report.faults[0].fault, "add-node");
    assert_eq!(
        report.faults[0].rto_ms,
        Some(0.0),
        "nothing failed between 1 s and 5 s"
    );
    assert_eq!(report.faults[1].fault, "kill");
    assert_eq!(
        report.faults[1].rto_ms,
        Some(1100.0),
        "5 s to the ok served at 6.1 s"
    );
}

#[test]
fn a_read_of_either_of_two_overlapping_writes_is_not_stale() {
    // Two writes through s1 overlap: 1 is invoked first, 2 completes first. Either may have
    // taken effect last, so s2 reading 2 after both completed is linearizable, not stale
    // (ordering versions by completion would call it stale). A third write, invoked after
    // both completed, makes a later read of 2 stale.
    let mut events = Events::default();
    let mut op = |process: u64, from: u64, to: u64, f: &str, value: Value, node: &str| {
        let invoked = if f == "read" {
            json!(null)
        } else {
            value.clone()
        };
        events.event(from, "invoke", json!(process), f, invoked);
        events.with(
            to,
            "ok",
            json!(process),
            f,
            value,
            json!({"key": "x", "node": node}),
        );
    };
    op(0, 0, 20, "write", json!(1), "s1");
    op(1, 5, 10, "write", json!(2), "s1");
    op(2, 30, 31, "read", json!(2), "s2");
    op(1, 40, 45, "write", json!(3), "s1");
    op(2, 50, 51, "read", json!(2), "s2");
    let invalidation = timing::analyze(&events.operations())
        .invalidation
        .expect("two nodes served the key");
    assert_eq!(
        invalidation.stale_reads, 1,
        "only the read after write 3 is stale: {invalidation:?}"
    );
    // Pairs with s2: writes 1 and 2 were never older than what s2 read; write 3 was, to the
    // end of the history.
    assert_eq!(invalidation.pairs, 3);
    assert_eq!(invalidation.stale_pairs, 1);
    assert_eq!(invalidation.unconverged_pairs, 1);
}
