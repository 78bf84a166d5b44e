//! `helios run --target processes`: the register workload against `helios node` processes
//! started for the run, with real faults, checked by the same checker as the embedded run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use helios_workload::schedule::FaultAction;
use helios_workload::RunConfig;

const TIME: Duration = Duration::from_secs(16);

/// The first seed whose schedule for a 16 s run has a partition, a kill and a pause, so that
/// the run exercises each real fault.
fn seed_with_every_fault() -> u64 {
    (0..10_000)
        .find(|&seed| {
            let config = RunConfig {
                seed,
                time: TIME,
                ..RunConfig::default()
            };
            let plan = config.plan();
            let has = |wanted: fn(&FaultAction) -> bool| plan.iter().any(|f| wanted(&f.action));
            has(|a| matches!(a, FaultAction::Partition { .. }))
                && has(|a| matches!(a, FaultAction::Kill(_)))
                && has(|a| matches!(a, FaultAction::Pause(_)))
        })
        .expect("some seed plans every fault kind")
}

fn nemesis_events(history: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(history)
        .expect("the history is readable")
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a json line"))
        .filter(|event| event["process"] == "nemesis")
        .collect()
}

fn log_lines(run_dir: &Path, node_id: u64, needle: &str) -> usize {
    let log = run_dir.join(format!("cluster/node-{node_id}.log"));
    std::fs::read_to_string(&log)
        .unwrap_or_else(|error| panic!("{}: {error}", log.display()))
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

/// The process id of a workload node name `mI`.
fn node_id(name: &serde_json::Value) -> u64 {
    let name = name.as_str().expect("a node name");
    name.trim_start_matches('m').parse::<u64>().expect("mN") + 1
}

#[test]
fn a_register_run_against_node_processes_with_real_faults_is_valid() {
    // Setup: a seed whose schedule kills, pauses and partitions.
    let seed = seed_with_every_fault();
    let planned = RunConfig {
        seed,
        time: TIME,
        ..RunConfig::default()
    }
    .plan()
    .len();
    eprintln!("seed {seed}: {planned} faults planned");
    let store = tempfile::tempdir().expect("a temp dir");

    // Workload under faults, through the CLI as a user runs it.
    let output = Command::new(env!("CARGO_BIN_EXE_helios"))
        .args(["run", "--target", "processes", "--workload", "register"])
        .args(["--nemesis", "partition,kill,pause", "--time", "16s"])
        .args(["--rate", "100", "--concurrency", "5", "--json"])
        .args(["--seed", &seed.to_string()])
        .arg("--store")
        .arg(store.path())
        .output()
        .expect("helios runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let results: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("results.json on stdout: {error}; stderr:\n{stderr}"));

    // Check: valid, served after the heal, every planned fault applied.
    assert_eq!(
        output.status.code(),
        Some(0),
        "exit code; stderr:\n{stderr}"
    );
    assert_eq!(results["verdict"], "valid", "{results:#}");
    assert_eq!(results["liveness"], "valid");
    assert_eq!(results["target"], "processes");
    assert_eq!(results["faults_planned"].as_u64(), Some(planned as u64));
    assert_eq!(results["faults_applied"].as_u64(), Some(planned as u64));

    // The faults were real: each is in the history, recorded before it was applied, and left
    // its mark on the node processes.
    let history = Path::new(results["history"].as_str().expect("the history's path"));
    let run_dir = history.parent().expect("the run directory");
    let events = nemesis_events(history);
    let fs: Vec<&str> = events.iter().map(|e| e["f"].as_str().unwrap()).collect();
    for f in [
        "start-partition",
        "stop-partition",
        "kill",
        "restart",
        "pause",
        "resume",
    ] {
        assert!(fs.contains(&f), "no {f} event in {fs:?}");
    }
    for event in &events {
        match event["f"].as_str().unwrap() {
            // A killed node was started again from its data directory: a second start, not
            // pristine.
            "kill" => {
                let id = node_id(&event["value"]["node"]);
                assert!(
                    log_lines(run_dir, id, "metadata node serving") >= 2,
                    "node {id} was killed but never started again"
                );
                assert!(log_lines(run_dir, id, "pristine=false") >= 1);
            }
            // Every node of the smaller side blocked the others through its peer filter.
            "start-partition" => {
                let minority = &event["value"]["groups"][0];
                for name in minority.as_array().expect("groups") {
                    let id = node_id(name);
                    assert!(
                        log_lines(run_dir, id, "peer filter: blocking") >= 1,
                        "node {id} was partitioned but its filter never blocked"
                    );
                }
            }
            _ => {}
        }
    }
    let timing = &results["report"]["timing"]["faults"];
    assert_eq!(
        timing.as_array().map(Vec::len),
        Some(planned),
        "the checker paired every fault"
    );
}
