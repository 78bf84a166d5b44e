//! `helios run --workload cache --target processes`: the cache workload against compute node
//! processes over replicated shards, with real faults, judged by the same checkers as the
//! embedded run: valid with the invalidation protocol on, invalid (stale reads) without it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use helios_workload::txn::process_nemesis::PROCESS_NEMESIS_KINDS;
use helios_workload::txn::{TxnNemesisKind, TxnRunConfig, TxnWorkload};
use serde_json::Value;

const TIME: Duration = Duration::from_secs(12);

/// The first seed whose schedule for a 12 s run kills a reader compute node and a shard
/// primary, so that the run exercises both real kills.
fn seed_with_both_kills() -> u64 {
    (0..10_000)
        .find(|&seed| {
            let plan = TxnRunConfig {
                seed,
                time: TIME,
                nemesis: PROCESS_NEMESIS_KINDS.to_vec(),
                ..TxnRunConfig::new(TxnWorkload::Cache)
            }
            .plan();
            let has = |kind| plan.iter().any(|fault| fault.kind == kind);
            has(TxnNemesisKind::KillCompute) && has(TxnNemesisKind::KillStorage)
        })
        .expect("some seed plans both kills")
}

/// Runs `helios run --workload cache --target processes --json` with `args`; returns the
/// output, results.json and how long it took.
fn run_cache(store: &Path, args: &[&str]) -> (Output, Value, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_helios"))
        .args([
            "run",
            "--workload",
            "cache",
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

/// Lines of the log `cluster/<file>.log` of the run that contain `needle`.
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

#[test]
fn a_cache_run_on_compute_node_processes_with_real_faults_is_valid() {
    // Setup: a seed whose schedule kills a reader compute node and a shard primary.
    let seed = seed_with_both_kills();
    eprintln!("seed {seed}");
    let store = tempfile::tempdir().expect("a temp dir");

    // Workload under faults, through the CLI as a user runs it.
    let (output, results, took) = run_cache(
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
    // Setup: compute nodes that acknowledge invalidations without applying them; no faults.
    let store = tempfile::tempdir().expect("a temp dir");

    // Workload.
    let (output, results, took) = run_cache(
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
