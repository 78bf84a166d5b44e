//! `helios run --workload cache|list-append|rw-register|bank --target processes`: the compute
//! workloads across compute node processes over replicated shards and a metadata group, with
//! real faults, judged by the same checkers as the embedded run. The cache run is valid with
//! the invalidation protocol and invalid (stale reads) without it; list-append stays read
//! committed and the bank keeps its total while a compute node is killed with transactions
//! open; a compute node that reads uncommitted writes (`--unsafe dirty-reads`) is caught by
//! Elle as G1; shards added while list-append runs (`--nemesis add-shard`) take rows and it stays
//! read committed; what processes cannot run is refused. One run at a time (a lock).

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use helios_workload::txn::process_nemesis::PROCESS_NEMESIS_KINDS;
use helios_workload::txn::{TxnNemesisKind, TxnRunConfig, TxnWorkload};
use serde_json::Value;
use support::serial;

const TIME: Duration = Duration::from_secs(10);

/// The cache runs' length.
const CACHE_TIME: Duration = Duration::from_secs(12);

/// The first seed whose schedule for a 10 s run of `workload` on processes kills a compute
/// node, so that transactions open on it are cut off midway.
fn seed_that_kills_a_compute_node(workload: TxnWorkload) -> u64 {
    (0..10_000)
        .find(|&seed| {
            let plan = TxnRunConfig {
                seed,
                time: TIME,
                nemesis: PROCESS_NEMESIS_KINDS.to_vec(),
                ..TxnRunConfig::new(workload)
            }
            .plan();
            plan.iter()
                .any(|fault| fault.kind == TxnNemesisKind::KillCompute)
        })
        .expect("some seed plans a compute node kill")
}

/// Runs `helios run --workload <workload> --target processes --json` with `args`; returns the
/// output, results.json and how long it took.
fn run_on_processes(workload: &str, store: &Path, args: &[&str]) -> (Output, Value, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_helios"))
        .args([
            "run",
            "--workload",
            workload,
            "--target",
            "processes",
            "--json",
        ])
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("helios runs");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let results: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("results.json on stdout: {error}; stderr:\n{stderr}"));
    (output, results, took)
}

fn history_events(results: &Value) -> Vec<Value> {
    let history = results["history"].as_str().expect("the history's path");
    std::fs::read_to_string(history)
        .expect("the history is readable")
        .lines()
        .skip(1)
        .map(|line| serde_json::from_str::<Value>(line).expect("a json line"))
        .collect()
}

fn count(events: &[Value], f: &str, event_type: &str) -> usize {
    events
        .iter()
        .filter(|e| e["f"] == f && e["type"] == event_type)
        .count()
}

/// Lines of the run's `cluster/<file>.log` that contain `needle`.
fn log_lines(results: &Value, file: &str, needle: &str) -> usize {
    let history = Path::new(results["history"].as_str().expect("the history's path"));
    let log = history
        .parent()
        .expect("the run directory")
        .join(format!("cluster/{file}.log"));
    std::fs::read_to_string(&log)
        .unwrap_or_else(|error| panic!("{}: {error}", log.display()))
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

/// Asserts a valid run whose planned faults were all applied, including a real kill of a
/// compute node (it started again), and that served after the heal.
fn assert_valid_with_a_compute_kill(results: &Value, events: &[Value]) {
    assert_eq!(results["verdict"], "valid", "{results:#}");
    assert_eq!(results["liveness"], "valid");
    assert_eq!(results["config"]["target"], "processes");
    let planned = results["faults_planned"].as_u64().expect("faults planned");
    assert_eq!(results["faults_applied"].as_u64(), Some(planned));
    assert_eq!(results["fault_calls_refused"], serde_json::json!([]));
    assert!(results["ok_in_healed_phase"].as_u64().unwrap() > 0);
    let killed: Vec<&str> = events
        .iter()
        .filter(|e| e["f"] == "kill")
        .filter_map(|e| e["value"]["node"].as_str())
        .filter(|node| node.starts_with('c'))
        .collect();
    assert!(!killed.is_empty(), "no compute node was killed");
    for node in killed {
        let log = format!("compute-{}", &node[1..]);
        assert!(
            log_lines(results, &log, "compute node serving") >= 2,
            "{node} was killed but never started again"
        );
    }
}

#[test]
fn list_append_across_compute_node_processes_with_real_faults_is_read_committed() {
    let _serial = serial();
    // Setup: a seed whose schedule kills a compute node; clients spread over all three.
    let seed = seed_that_kills_a_compute_node(TxnWorkload::ListAppend);
    let store = tempfile::tempdir().expect("a temp dir");

    // Workload under faults, through the CLI as a user runs it.
    let (output, results, took) = run_on_processes(
        "list-append",
        store.path(),
        &["--time", "10s", "--seed", &seed.to_string()],
    );
    eprintln!("seed {seed}: took {:.1} s", took.as_secs_f64());

    // Check: Elle finds the history read committed; transactions committed through every
    // compute node.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    let isolation = &results["report"]["isolation"];
    assert_eq!(isolation["consistency"], "read-committed", "{isolation:#}");
    assert_eq!(isolation["verdict"], "valid", "{isolation:#}");
    let events = history_events(&results);
    let committed = count(&events, "txn", "ok");
    assert!(committed > 50, "only {committed} transactions committed");
    let nodes: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "ok")
        .filter_map(|e| e["node"].as_str())
        .collect();
    assert_eq!(nodes, ["c0", "c1", "c2"].into(), "clients use every node");
    assert_valid_with_a_compute_kill(&results, &events);
}

#[test]
fn the_bank_across_compute_node_processes_with_real_faults_keeps_its_total() {
    let _serial = serial();
    // Setup: five accounts of 100 opened through c0; a seed that kills a compute node.
    let seed = seed_that_kills_a_compute_node(TxnWorkload::Bank);
    let store = tempfile::tempdir().expect("a temp dir");

    // Workload: transfers and locked reads of every balance, through all three nodes; five
    // clients, one per account (ten contend so hard for five rows that few reads, which lock
    // all five, complete: 6-14 of ~190 on 2026-11-27, against 23-27 of ~115 with five).
    let (output, results, took) = run_on_processes(
        "bank",
        store.path(),
        &[
            "--time",
            "10s",
            "--seed",
            &seed.to_string(),
            "--concurrency",
            "5",
        ],
    );
    eprintln!("seed {seed}: took {:.1} s", took.as_secs_f64());

    // Check: transfers committed, every read summed to 500 (the final one included), and the
    // bank checker agrees.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(results["report"]["bank"]["verdict"], "valid");
    assert_eq!(
        results["final_reads"],
        serde_json::json!({"made": 1, "served": 1})
    );
    let events = history_events(&results);
    assert!(count(&events, "transfer", "ok") > 20, "{results:#}");
    let reads: Vec<&Value> = events
        .iter()
        .filter(|e| e["f"] == "read" && e["type"] == "ok")
        .collect();
    assert!(reads.len() > 5, "only {} reads", reads.len());
    for read in reads {
        let balances = read["value"].as_object().expect("balances");
        assert_eq!(balances.len(), 5, "{read}");
        let sum: i64 = balances.values().map(|v| v.as_i64().unwrap()).sum();
        assert_eq!(sum, 500, "{read}");
    }
    assert_valid_with_a_compute_kill(&results, &events);
}

#[test]
fn compute_node_processes_that_read_uncommitted_writes_are_caught_as_g1() {
    let _serial = serial();
    // Setup: every compute node reads other transactions' intents; no faults: transactions
    // that deadlock on each other's rows (list-append takes no lock order) are aborted by the
    // writer that waits a second, and reads of their appends are G1a; reads between two
    // appends of one transaction to one key are G1b; reads of an append whose writer commits
    // after being overtaken close a wr/ww cycle, G1c.
    let store = tempfile::tempdir().expect("a temp dir");
    let mut found = None;
    for seed in ["1", "2", "3"] {
        let (output, results, took) = run_on_processes(
            "list-append",
            store.path(),
            &[
                "--time",
                "6s",
                "--seed",
                seed,
                "--nemesis",
                "none",
                "--unsafe",
                "dirty-reads",
            ],
        );
        eprintln!("seed {seed}: took {:.1} s", took.as_secs_f64());
        assert_eq!(
            results["config"]["unsafe"],
            serde_json::json!(["dirty-reads"])
        );
        if output.status.code() == Some(1) {
            found = Some(results);
            break;
        }
    }

    // Check: invalid, by Elle, with aborted, intermediate or circular reads among the anomalies.
    let results = found.expect("dirty reads were not caught in three seeds");
    assert_eq!(results["verdict"], "invalid");
    let isolation = &results["report"]["isolation"];
    assert_eq!(isolation["verdict"], "invalid");
    let failing: Vec<&str> = isolation["failing"]
        .as_array()
        .expect("failing anomalies")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        ["G1a", "G1b", "G1c"]
            .iter()
            .any(|name| failing.contains(name)),
        "{failing:?}"
    );
}

#[test]
fn what_compute_node_processes_cannot_run_is_refused_with_a_usage_error() {
    let refused = |args: &[&str], needles: &[&str]| {
        let store = tempfile::tempdir().expect("a temp dir");
        let output = Command::new(env!("CARGO_BIN_EXE_helios"))
            .arg("run")
            .args(args)
            .arg("--store")
            .arg(store.path())
            .output()
            .expect("helios runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{args:?}: {stderr}");
        }
        // Refused before anything ran: no history was recorded.
        let recorded: Vec<_> = std::fs::read_dir(store.path())
            .expect("the store")
            .collect();
        assert!(recorded.is_empty(), "{args:?} ran first: {recorded:?}");
    };
    refused(
        &[
            "--workload",
            "bank",
            "--target",
            "processes",
            "--unsafe",
            "no-2pc",
        ],
        &["no-2pc", "in process only"],
    );
    refused(
        &[
            "--workload",
            "list-append",
            "--target",
            "processes",
            "--nemesis",
            "crash-compute",
        ],
        &["crash-compute", "embedded cluster only"],
    );
    refused(
        &[
            "--workload",
            "rw-register",
            "--target",
            "processes",
            "--nodes",
            "4",
        ],
        &["multiple of 3"],
    );
    refused(
        &["--workload", "bank", "--target", "docker"],
        &["register workload only", "--target processes"],
    );
    refused(
        &["--workload", "list-append", "--nemesis", "add-shard"],
        &["add-shard", "processes only"],
    );
}

#[test]
fn shards_added_while_list_append_runs_on_processes_take_rows_and_it_stays_read_committed() {
    let _serial = serial();
    // Setup: two shards to start with; the nemesis adds shards (and kills shard primaries)
    // while ten clients append through three compute node processes.
    let kinds = [TxnNemesisKind::KillStorage, TxnNemesisKind::AddShard];
    let seed = (0..10_000)
        .find(|&seed| {
            let plan = TxnRunConfig {
                seed,
                time: Duration::from_secs(12),
                nemesis: kinds.to_vec(),
                ..TxnRunConfig::new(TxnWorkload::ListAppend)
            }
            .plan();
            kinds
                .iter()
                .all(|kind| plan.iter().any(|fault| fault.kind == *kind))
        })
        .expect("some seed plans both faults");
    let store = tempfile::tempdir().expect("a temp dir");
    let (output, results, took) = run_on_processes(
        "list-append",
        store.path(),
        &[
            "--time",
            "12s",
            "--seed",
            &seed.to_string(),
            "--nemesis",
            "add-shard,kill-storage",
        ],
    );
    eprintln!("took {:.1} s", took.as_secs_f64());

    // Check: Elle finds the history read committed, with no appended element lost or
    // reordered across the moves.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(results["verdict"], "valid", "{results:#}");
    assert_eq!(results["fault_calls_refused"], serde_json::json!([]));
    let events = history_events(&results);
    let added: Vec<u64> = events
        .iter()
        .filter(|e| e["f"] == "add-node" && e["value"]["nemesis"] == "add-shard")
        .filter_map(|e| e["value"]["shard"].as_u64())
        .collect();
    assert!(!added.is_empty(), "the plan added no shard");
    assert!(count(&events, "txn", "ok") > 50);
    // Every compute node learned each new ring, and learned when its rows had moved.
    for node in 0..3 {
        let log = format!("compute-{node}");
        let rings = log_lines(&results, &log, "routing by a newer ring");
        assert!(
            rings >= 2 * added.len(),
            "{log}: {rings} rings for {added:?} added"
        );
        assert!(log_lines(&results, &log, "moving=false") >= added.len());
    }
    for shard in added {
        let member = 3 * shard;
        // At least once: the nemesis may kill and restart it later, as any primary.
        let log = format!("storage-{member}");
        assert!(
            log_lines(&results, &log, "shard member serving") >= 1,
            "shard {shard}'s first data member never started"
        );
    }
}

/// The first seed whose schedule for a 12 s run kills a reader compute node and a shard
/// primary, so that the run exercises both real kills.
fn seed_with_both_kills() -> u64 {
    (0..10_000)
        .find(|&seed| {
            let plan = TxnRunConfig {
                seed,
                time: CACHE_TIME,
                nemesis: PROCESS_NEMESIS_KINDS.to_vec(),
                ..TxnRunConfig::new(TxnWorkload::Cache)
            }
            .plan();
            let has = |kind| plan.iter().any(|fault| fault.kind == kind);
            has(TxnNemesisKind::KillCompute) && has(TxnNemesisKind::KillStorage)
        })
        .expect("some seed plans both kills")
}

#[test]
fn a_cache_run_on_compute_node_processes_with_real_faults_is_valid() {
    let _serial = serial();
    // Setup: a seed whose schedule kills a reader compute node and a shard primary.
    let seed = seed_with_both_kills();
    eprintln!("seed {seed}");
    let store = tempfile::tempdir().expect("a temp dir");

    // Workload under faults, through the CLI as a user runs it.
    let (output, results, took) = run_on_processes(
        "cache",
        store.path(),
        &[
            "--time",
            "12s",
            "--rate",
            "300",
            "--seed",
            &seed.to_string(),
        ],
    );
    eprintln!("took {:.1} s", took.as_secs_f64());

    // Check: valid by every checker, served after the heal, every fault applied and paired.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(results["verdict"], "valid", "{results:#}");
    assert_eq!(results["liveness"], "valid");
    assert_eq!(results["config"]["target"], "processes");
    assert_eq!(results["report"]["header"]["workload"], "cache");
    assert_eq!(results["report"]["header"]["model"], "register");
    let planned = results["faults_planned"].as_u64().expect("faults planned");
    assert!(planned >= 2, "{results:#}");
    assert_eq!(results["faults_applied"].as_u64(), Some(planned));
    assert_eq!(results["fault_calls_refused"], serde_json::json!([]));
    assert_eq!(
        results["report"]["timing"]["faults"]
            .as_array()
            .map(Vec::len),
        Some(planned as usize),
        "the checker paired every fault"
    );
    assert_eq!(results["report"]["cache"]["verdict"], "valid");

    // The invalidation latency was measured between processes: writes through c0, pairs on
    // the reader nodes, a latency for every converged pair.
    let invalidation = &results["report"]["timing"]["invalidation"];
    let pairs = invalidation["pairs"].as_u64().expect("pairs");
    assert!(pairs > 100, "{invalidation:#}");
    assert_eq!(invalidation["unconverged_pairs"], 0);
    assert_eq!(invalidation["latency_ms"]["count"].as_u64(), Some(pairs));
    assert!(
        invalidation["latency_ms"]["p99"].is_number(),
        "{invalidation:#}"
    );
    let events = history_events(&results);
    let ok = |f: &'static str| {
        events
            .iter()
            .filter(move |e| e["type"] == "ok" && e["f"] == f)
            .map(|e| e["node"].as_str().expect("an ok names its node"))
    };
    assert!(ok("write").all(|node| node == "c0"));
    let readers: std::collections::BTreeSet<&str> = ok("read").collect();
    assert_eq!(readers, ["c1", "c2"].into(), "reads name their node");

    // The kills were real: the killed processes started again.
    for event in events.iter().filter(|e| e["f"] == "kill") {
        let node = event["value"]["node"].as_str().expect("a node");
        let (log, needle) = match node.split_at(1) {
            ("c", index) => (format!("compute-{index}"), "compute node serving"),
            // Only data members are killed: a primary.
            ("r", member) => (format!("storage-{member}"), "shard member serving"),
            // History names are 0-based, process ids 1-based.
            ("m", index) => (
                format!("node-{}", index.parse::<u64>().expect("an index") + 1),
                "metadata node serving",
            ),
            _ => panic!("unexpected kill target {node}"),
        };
        assert!(
            log_lines(&results, &log, needle) >= 2,
            "{node} was killed but never started again"
        );
    }
}

#[test]
fn skipping_invalidations_on_compute_node_processes_is_caught_as_stale_reads() {
    let _serial = serial();
    // Setup: compute nodes that acknowledge invalidations without applying them; no faults.
    let store = tempfile::tempdir().expect("a temp dir");

    // Workload.
    let (output, results, took) = run_on_processes(
        "cache",
        store.path(),
        &[
            "--time",
            "5s",
            "--seed",
            "7",
            "--nemesis",
            "none",
            "--unsafe",
            "skip-invalidation",
        ],
    );
    eprintln!("took {:.1} s", took.as_secs_f64());

    // Check: the cache checker finds reads that stayed stale past the bound, and the
    // linearizability checker forbids them too; the exit code says invalid.
    assert_eq!(output.status.code(), Some(1), "{results:#}");
    assert_eq!(results["verdict"], "invalid");
    assert_eq!(
        results["config"]["unsafe"],
        serde_json::json!(["skip-invalidation"])
    );
    let cache = &results["report"]["cache"];
    assert_eq!(cache["verdict"], "invalid", "{cache:#}");
    assert!(cache["stale_reads"].as_u64().unwrap() > 0, "{cache:#}");
    assert!(cache["late_pairs"].as_u64().unwrap() > 0, "{cache:#}");
    let witness = &cache["witness"];
    assert!(witness.is_object(), "{cache:#}");
    assert_eq!(results["report"]["linearizability"]["verdict"], "invalid");
}
