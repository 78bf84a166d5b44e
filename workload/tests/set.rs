//! End-to-end runs of the set workload against the sharded storage cluster: a short run with
//! online rebalancing and kills that the lost-writes checker must judge valid, and runs in the
//! deliberately broken skip-catchup mode in which it must find lost ids.

use std::sync::Arc;
use std::time::Duration;

use helios_checker::check::{check_file, CheckOptions};
use helios_checker::select::CheckerKind;
use helios_checker::Verdict;
use helios_workload::client::RunProgress;
use helios_workload::history::{Event, EventType, Function};
use helios_workload::schedule::NemesisTiming;
use helios_workload::set_schedule::SetNemesisKind;
use helios_workload::wellformed::history_problems;
use helios_workload::{run_set, SetRunConfig};

/// Fast faults, so that a run of a few seconds sees a move and the faults that follow it.
fn fast_timing() -> NemesisTiming {
    NemesisTiming {
        interval_min: Duration::from_millis(400),
        interval_max: Duration::from_millis(800),
        duration_min: Duration::from_millis(400),
        duration_max: Duration::from_millis(900),
    }
}

fn short_config(store: &std::path::Path, seed: u64) -> SetRunConfig {
    SetRunConfig {
        nemesis: vec![SetNemesisKind::AddNode, SetNemesisKind::Kill],
        time: Duration::from_secs(6),
        concurrency: 5,
        seed,
        op_timeout: Duration::from_millis(1000),
        store_dir: store.to_owned(),
        nemesis_timing: fast_timing(),
        rate: 300.0,
        read_fraction: 0.1,
        final_read_timeout: Duration::from_secs(15),
        rebalance_wait: Duration::from_secs(30),
        ..SetRunConfig::default()
    }
}

/// Reads the history back from disk: the header and the events.
fn read_history(path: &std::path::Path) -> (serde_json::Value, Vec<Event>) {
    helios_workload::wellformed::read_history(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_run_with_rebalancing_and_kills_loses_nothing() {
    // Setup: 3 storage nodes, 5 clients inserting unique ids; add-node and kills for 3 s,
    // then 3 s healed.
    let store = tempfile::tempdir().unwrap();
    let config = short_config(store.path(), 12);

    // Workload and faults.
    let outcome = run_set(&config, Arc::new(RunProgress::default()))
        .await
        .unwrap();

    // Check, structure: the header picks the set checkers, the history is well formed, and a
    // node was added and a node killed and restarted.
    let (header, events) = read_history(&outcome.history_path);
    assert_eq!(header["workload"], "set");
    assert_eq!(header["seed"], 12);
    assert_eq!(events.len(), outcome.n_events);
    let problems = history_problems(&events, true);
    assert!(problems.is_empty(), "seed 12: {problems:#?}");
    let count = |f: Function| events.iter().filter(|e| e.f == f).count();
    assert!(count(Function::AddNode) >= 1, "seed 12: no add-node");
    assert!(count(Function::Kill) >= 1, "seed 12: no kill");
    assert_eq!(count(Function::Kill), count(Function::Restart));
    assert!(
        outcome.final_reads.iter().all(|read| read.served()),
        "seed 12: the set was not served after the heal: {:?}",
        outcome.final_reads
    );
    let n_ok_adds = events
        .iter()
        .filter(|e| e.f == Function::Add && e.event_type == EventType::Ok)
        .count();
    assert!(
        n_ok_adds > 200,
        "seed 12: only {n_ok_adds} acknowledged adds"
    );

    // Check, judgement: the real checker runs lost writes (chosen by the header) and finds
    // every acknowledged id in the final reads.
    let report = check_file(&outcome.history_path, &CheckOptions::default()).unwrap();
    assert!(
        report.checkers.contains(&CheckerKind::LostWrites),
        "{:?}",
        report.checkers
    );
    let sets = report.lost_writes.as_ref().expect("lost writes ran");
    assert_eq!(
        report.verdict,
        Verdict::Valid,
        "seed 12:\n{}",
        report.summary()
    );
    assert_eq!(sets.lost_count, 0);
    assert!(sets.stable_count >= n_ok_adds, "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_catchup_mode_loses_writes_made_during_the_copy() {
    // Setup: the deliberately broken mode; steady inserts while a node joins, so the copy
    // misses the rows inserted into the moving ranges meanwhile. A move that happens to see no
    // insert into its ranges loses nothing, so a few seeds are tried.
    let mut lost_ids = Vec::new();
    for seed in [31, 32, 33] {
        let store = tempfile::tempdir().unwrap();
        let config = SetRunConfig {
            nemesis: vec![SetNemesisKind::AddNode],
            unsafe_skip_catchup: true,
            time: Duration::from_secs(5),
            ..short_config(store.path(), seed)
        };
        let outcome = run_set(&config, Arc::new(RunProgress::default()))
            .await
            .unwrap();
        assert!(
            !outcome.nemesis.added.is_empty(),
            "seed {seed}: no node added"
        );

        // Check: the lost-writes checker says invalid and names the lost ids.
        let report = check_file(&outcome.history_path, &CheckOptions::default()).unwrap();
        let sets = report.lost_writes.as_ref().expect("lost writes ran");
        if report.verdict == Verdict::Invalid && sets.lost_count > 0 {
            lost_ids = sets
                .lost
                .iter()
                .map(|element| element.element.clone())
                .collect();
            break;
        }
    }
    assert!(
        !lost_ids.is_empty(),
        "skip-catchup lost nothing in three seeded runs"
    );
    assert!(
        lost_ids.iter().all(serde_json::Value::is_i64),
        "{lost_ids:?}"
    );
}
