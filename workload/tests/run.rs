//! End-to-end runs of the register workload against the real embedded cluster: short, seeded,
//! with faults, checked for the workload's structural invariants, and one run in the deliberately
//! broken stale-reads mode in which the checker must find a stale read.

use std::sync::Arc;
use std::time::Duration;

use helios_checker::check::{check_file, CheckOptions};
use helios_checker::Verdict;
use helios_workload::client::RunProgress;
use helios_workload::history::{Event, EventType, Function, Process};
use helios_workload::schedule::{NemesisKind, NemesisTiming};
use helios_workload::wellformed::history_problems;
use helios_workload::{run, RunConfig};

/// Fast faults, so that a run of a few seconds sees several.
fn fast_timing() -> NemesisTiming {
    NemesisTiming {
        interval_min: Duration::from_millis(300),
        interval_max: Duration::from_millis(700),
        duration_min: Duration::from_millis(500),
        duration_max: Duration::from_millis(1200),
    }
}

/// Reads the history back from disk, as the checker will.
fn read_history(path: &std::path::Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = serde_json::from_str(lines.next().unwrap()).unwrap();
    let events = lines
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (header, events)
}

fn short_config(store: &std::path::Path, seed: u64) -> RunConfig {
    RunConfig {
        nemesis: vec![
            NemesisKind::Partition,
            NemesisKind::Kill,
            NemesisKind::Pause,
        ],
        time: Duration::from_secs(5),
        concurrency: 5,
        seed,
        nodes: 3,
        op_timeout: Duration::from_millis(500),
        store_dir: store.to_owned(),
        nemesis_timing: fast_timing(),
        ..RunConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_faulty_run_records_a_well_formed_history_whose_operations_pair_up() {
    // Setup: a 3-node cluster, 5 clients, partitions, kills and pauses for 2 s, then 3 s healed.
    let store = tempfile::tempdir().unwrap();
    let config = short_config(store.path(), 7);
    let progress = Arc::new(RunProgress::default());

    // Workload and faults.
    let outcome = run(&config, Arc::clone(&progress)).await.unwrap();

    // Check: the history on disk is what the recorder returned, and it is well formed.
    let (header, lines) = read_history(&outcome.history_path);
    assert_eq!(header["helios_history"], 1);
    assert_eq!(header["workload"], "register");
    assert_eq!(header["seed"], 7);
    assert_eq!(header["nodes"], serde_json::json!(["m0", "m1", "m2"]));
    assert_eq!(lines.len(), outcome.n_events);
    let events: Vec<Event> = events_from(&lines);
    let text = std::fs::read_to_string(&outcome.history_path).unwrap();
    for (event, raw) in events.iter().zip(text.lines().skip(1)) {
        // `Event` serializes in wire order, so equal text means the file has that order too.
        assert_eq!(
            serde_json::to_string(event).unwrap(),
            raw,
            "field order or content"
        );
    }
    let problems = history_problems(&events, true);
    assert!(problems.is_empty(), "seed 7: {problems:#?}");

    // The run did something: operations of every kind, faults started and healed, final reads.
    let n_ok = events
        .iter()
        .filter(|e| e.event_type == EventType::Ok)
        .count();
    assert!(n_ok > 20, "seed 7: only {n_ok} ok operations");
    assert!(outcome.n_faults_applied >= 1, "seed 7: no fault applied");
    let starts = events.iter().filter(|e| e.f.starts_fault()).count();
    let ends = events.iter().filter(|e| e.f.ends_fault()).count();
    assert_eq!(starts, ends, "every fault is healed");
    assert_eq!(outcome.final_reads.len(), config.keys);
    assert!(
        outcome.final_reads.iter().all(|read| read.served()),
        "seed 7: the cluster did not serve every key after the heal: {:?}",
        outcome.final_reads
    );
    assert!(progress.n_ops.load(std::sync::atomic::Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nemesis_kind_applies_heals_and_leaves_a_serving_cluster() {
    // Setup: 5 nodes so that majorities-ring has a real ring; every kind of fault, fast.
    let store = tempfile::tempdir().unwrap();
    let config = RunConfig {
        nemesis: NemesisKind::ALL.to_vec(),
        nodes: 5,
        time: Duration::from_secs(7),
        ..short_config(store.path(), 21)
    };

    let outcome = run(&config, Arc::new(RunProgress::default()))
        .await
        .unwrap();

    // Check: faults were applied and each was healed, the history is well formed, and the
    // cluster served every key after the heal.
    let (_, lines) = read_history(&outcome.history_path);
    let events = events_from(&lines);
    assert!(history_problems(&events, true).is_empty());
    assert!(
        outcome.n_faults_applied >= 3,
        "seed 21: {} faults",
        outcome.n_faults_applied
    );
    assert_eq!(outcome.n_faults_applied, outcome.n_faults_planned);
    let starts = events.iter().filter(|e| e.f.starts_fault()).count();
    let ends = events.iter().filter(|e| e.f.ends_fault()).count();
    assert_eq!(
        (starts, ends),
        (outcome.n_faults_applied, outcome.n_faults_applied)
    );
    assert!(
        outcome.final_reads.iter().all(|read| read.served()),
        "{:?}",
        outcome.final_reads
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_got_info_never_invokes_again_when_the_leader_stalls() {
    // Setup: faults that stall the leader (isolation, pauses), with an operation timeout short
    // enough that writes to a stalled leader end in `info`.
    let store = tempfile::tempdir().unwrap();
    let config = RunConfig {
        nemesis: vec![NemesisKind::IsolateLeader, NemesisKind::Pause],
        time: Duration::from_secs(7),
        op_timeout: Duration::from_millis(300),
        ..short_config(store.path(), 11)
    };

    let outcome = run(&config, Arc::new(RunProgress::default()))
        .await
        .unwrap();

    // Check: there were infos, each retired its process, and the clients carried on as new ones.
    let (_, lines) = read_history(&outcome.history_path);
    let events = events_from(&lines);
    let infos = events
        .iter()
        .filter(|e| e.event_type == EventType::Info && e.process != Process::Nemesis)
        .count();
    assert!(
        infos > 0,
        "seed 11: no client info, so the property was not exercised"
    );
    assert!(history_problems(&events, true).is_empty());
    let concurrency = config.concurrency as u64;
    let max_process = events
        .iter()
        .filter_map(|e| match e.process {
            Process::Client(p) => Some(p),
            Process::Nemesis => None,
        })
        .max()
        .unwrap();
    assert!(
        max_process >= concurrency,
        "no client continued as a new process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_mode_under_partitions_produces_a_stale_read() {
    // Setup: the deliberately broken mode, 5 nodes, partitions that leave minorities serving.
    // Unique values make a stale read provable without a full linearizability search.
    let mut witness = None;
    for seed in [3, 4, 5] {
        let store = tempfile::tempdir().unwrap();
        let config = RunConfig {
            nemesis: vec![NemesisKind::Partition, NemesisKind::IsolateLeader],
            nodes: 5,
            concurrency: 8,
            unsafe_stale_reads: true,
            value_count: 1_000_000_000,
            ..short_config(store.path(), seed)
        };
        let outcome = run(&config, Arc::new(RunProgress::default()))
            .await
            .unwrap();
        // Check: the real checker must find the history not linearizable, with a read as the
        // operation that cannot be placed.
        let report = check_file(&outcome.history_path, &CheckOptions::default()).unwrap();
        if report.verdict == Verdict::Invalid {
            let linear = report
                .linearizability
                .expect("the register workload is checked for linearizability");
            witness = linear.witness.map(|w| w.description);
            break;
        }
    }
    // Check: the broken mode is demonstrably broken, and the witness is a read.
    let witness = witness.expect("no stale read in three runs with stale reads enabled");
    assert!(
        witness.contains(": read "),
        "witness is not a read: {witness}"
    );
}

fn events_from(lines: &[serde_json::Value]) -> Vec<Event> {
    lines
        .iter()
        .map(|line| {
            let event_type = match line["type"].as_str().unwrap() {
                "invoke" => EventType::Invoke,
                "ok" => EventType::Ok,
                "fail" => EventType::Fail,
                "info" => EventType::Info,
                other => panic!("unexpected type {other}"),
            };
            let process = match &line["process"] {
                serde_json::Value::String(name) if name == "nemesis" => Process::Nemesis,
                other => Process::Client(other.as_u64().unwrap()),
            };
            let f = match line["f"].as_str().unwrap() {
                "read" => Function::Read,
                "write" => Function::Write,
                "cas" => Function::Cas,
                "start-partition" => Function::StartPartition,
                "stop-partition" => Function::StopPartition,
                "kill" => Function::Kill,
                "restart" => Function::Restart,
                "pause" => Function::Pause,
                "resume" => Function::Resume,
                other => panic!("unexpected f {other}"),
            };
            Event {
                index: line["index"].as_u64().unwrap(),
                time_ns: line["time"].as_u64().unwrap(),
                event_type,
                process,
                f,
                key: line.get("key").and_then(|k| k.as_str()).map(str::to_owned),
                value: line["value"].clone(),
                node: line.get("node").and_then(|n| n.as_str()).map(str::to_owned),
                error: line
                    .get("error")
                    .and_then(|e| e.as_str())
                    .map(str::to_owned),
            }
        })
        .collect()
}
