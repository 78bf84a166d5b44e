//! End-to-end runs of the compute workloads: list-append, rw-register, bank and cache with
//! faults on compute, storage and metadata nodes must be judged valid; each deliberately broken
//! mode (dirty reads, skipped invalidation, commit without 2PC) must be judged invalid by the
//! checker whose property it breaks.

use std::sync::Arc;
use std::time::Duration;

use helios_checker::check::{check_file, CheckOptions, Report};
use helios_checker::select::CheckerKind;
use helios_checker::Verdict;
use helios_workload::client::RunProgress;
use helios_workload::history::{Event, EventType, Function};
use helios_workload::schedule::NemesisTiming;
use helios_workload::txn::{run_txn, TxnNemesisKind, TxnRunConfig, TxnRunOutcome, TxnWorkload};
use helios_workload::wellformed::{history_problems, read_history};

/// Fast faults, so that a run of a few seconds sees several.
fn fast_timing() -> NemesisTiming {
    NemesisTiming {
        interval_min: Duration::from_millis(300),
        interval_max: Duration::from_millis(700),
        duration_min: Duration::from_millis(300),
        duration_max: Duration::from_millis(800),
    }
}

fn short_config(store: &std::path::Path, workload: TxnWorkload, seed: u64) -> TxnRunConfig {
    TxnRunConfig {
        time: Duration::from_secs(7),
        concurrency: 6,
        seed,
        op_timeout: Duration::from_secs(3),
        store_dir: store.to_owned(),
        nemesis_timing: fast_timing(),
        ..TxnRunConfig::new(workload)
    }
}

/// Runs `config`, checks the recorder's invariants, and returns the outcome, the events and
/// the checker's report.
async fn run_and_check(config: &TxnRunConfig) -> (TxnRunOutcome, Vec<Event>, Report) {
    let outcome = run_txn(config, Arc::new(RunProgress::default()))
        .await
        .unwrap();
    let (header, events) = read_history(&outcome.history_path).unwrap();
    assert_eq!(header["workload"], config.workload.as_str());
    assert_eq!(header["seed"], config.seed);
    let problems = history_problems(&events, true);
    assert!(problems.is_empty(), "seed {}: {problems:#?}", config.seed);
    let report = check_file(&outcome.history_path, &CheckOptions::default()).unwrap();
    (outcome, events, report)
}

fn count(events: &[Event], f: Function, event_type: EventType) -> usize {
    events
        .iter()
        .filter(|e| e.f == f && e.event_type == event_type)
        .count()
}

/// Asserts a valid run with faults that served operations throughout and after the heal.
fn assert_valid_with_faults(
    config: &TxnRunConfig,
    outcome: &TxnRunOutcome,
    events: &[Event],
    report: &Report,
    checker: CheckerKind,
) {
    let seed = config.seed;
    assert!(
        report.checkers.contains(&checker),
        "seed {seed}: {:?}",
        report.checkers
    );
    assert_eq!(
        report.verdict,
        Verdict::Valid,
        "seed {seed}:\n{}",
        report.summary()
    );
    assert!(
        outcome.nemesis.n_applied >= 3,
        "seed {seed}: {:?}",
        outcome.nemesis
    );
    let faults = events
        .iter()
        .filter(|e| e.f.starts_fault() || e.f.ends_fault())
        .count();
    assert_eq!(faults, 2 * outcome.nemesis.n_applied, "seed {seed}");
    assert!(
        outcome.n_ok_healed > 0,
        "seed {seed}: nothing served after the heal"
    );
    assert_eq!(outcome.final_reads.0, outcome.final_reads.1, "seed {seed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_append_with_faults_on_every_role_is_read_committed() {
    // Setup: 3 storage, 3 compute nodes; transactions of appends and reads for 7 s.
    let store = tempfile::tempdir().unwrap();
    let config = short_config(store.path(), TxnWorkload::ListAppend, 41);

    // Workload and faults on compute, storage and metadata nodes.
    let (outcome, events, report) = run_and_check(&config).await;

    // Check: many transactions committed, and the isolation checker finds no anomaly.
    let committed = count(&events, Function::Txn, EventType::Ok);
    assert!(committed > 100, "only {committed} transactions committed");
    assert_valid_with_faults(&config, &outcome, &events, &report, CheckerKind::Isolation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_register_with_faults_on_every_role_is_read_committed() {
    let store = tempfile::tempdir().unwrap();
    let config = short_config(store.path(), TxnWorkload::RwRegister, 42);
    let (outcome, events, report) = run_and_check(&config).await;
    let committed = count(&events, Function::Txn, EventType::Ok);
    assert!(committed > 100, "only {committed} transactions committed");
    assert_valid_with_faults(&config, &outcome, &events, &report, CheckerKind::Isolation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_with_faults_keeps_its_total_on_every_read() {
    // Setup: 5 accounts of 100; transfers between shards, and locked reads of every balance.
    let store = tempfile::tempdir().unwrap();
    let config = short_config(store.path(), TxnWorkload::Bank, 43);
    let (outcome, events, report) = run_and_check(&config).await;

    // Check: transfers committed, reads were served, and every read summed to 500.
    assert!(count(&events, Function::Transfer, EventType::Ok) > 50);
    let reads: Vec<&Event> = events
        .iter()
        .filter(|e| e.f == Function::Read && e.event_type == EventType::Ok)
        .collect();
    assert!(reads.len() > 10, "only {} reads", reads.len());
    for read in reads {
        let sum: i64 = read
            .value
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(sum, config.bank_total(), "read {}", read.index);
    }
    assert_valid_with_faults(&config, &outcome, &events, &report, CheckerKind::Bank);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_reads_through_other_nodes_are_never_stale() {
    // Setup: writes through compute node 0, reads of the same keys through nodes 1 and 2.
    let store = tempfile::tempdir().unwrap();
    let config = short_config(store.path(), TxnWorkload::Cache, 44);
    let (outcome, events, report) = run_and_check(&config).await;

    // Check: reads name their node, the cache property holds, and it is linearizable.
    let reads_on_other_nodes = events
        .iter()
        .filter(|e| e.f == Function::Read && e.event_type == EventType::Ok)
        .filter(|e| e.node.as_deref().is_some_and(|node| node != "c0"))
        .count();
    assert!(reads_on_other_nodes > 200, "{reads_on_other_nodes} reads");
    assert!(report.checkers.contains(&CheckerKind::Linearizable));
    let invalidation = report
        .timing
        .as_ref()
        .and_then(|t| t.invalidation.as_ref())
        .expect("invalidation latency is computed");
    assert!(invalidation.pairs > 100, "{invalidation:?}");
    assert_eq!(invalidation.stale_reads, 0);
    assert_valid_with_faults(&config, &outcome, &events, &report, CheckerKind::Cache);
}

/// Runs `workload` in a broken mode for up to three seeds; returns the first invalid report.
async fn first_invalid(
    workload: TxnWorkload,
    nemesis: &[TxnNemesisKind],
    broken: impl Fn(&mut TxnRunConfig),
) -> Option<Report> {
    for seed in [51, 52, 53] {
        let store = tempfile::tempdir().unwrap();
        let mut config = short_config(store.path(), workload, seed);
        config.nemesis = nemesis.to_vec();
        broken(&mut config);
        let (_, _, report) = run_and_check(&config).await;
        if report.verdict == Verdict::Invalid {
            return Some(report);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_reads_mode_is_caught_as_g1() {
    // Faults make transactions fail, and a read of a failed transaction's append is G1a; a
    // read between two appends of one transaction is G1b; a read of an append whose writer
    // commits later, after it has itself been overtaken, closes a wr/ww cycle: G1c. All three
    // are dirty reads, and read-committed forbids each.
    let faults = [
        TxnNemesisKind::PartitionStorage,
        TxnNemesisKind::KillStorage,
    ];
    let report = first_invalid(TxnWorkload::ListAppend, &faults, |config| {
        config.unsafe_modes.dirty_reads = true;
        config.key_count = 3;
    })
    .await
    .expect("dirty reads were not caught in three seeds");
    let isolation = report
        .isolation
        .as_ref()
        .expect("the isolation checker ran");
    assert!(
        isolation
            .failing
            .iter()
            .any(|name| ["G1a", "G1b", "G1c"].contains(&name.as_str())),
        "{}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_invalidation_mode_is_caught_as_stale_cached_reads() {
    let report = first_invalid(TxnWorkload::Cache, &[], |config| {
        config.unsafe_modes.skip_invalidation = true;
    })
    .await
    .expect("stale cached reads were not caught in three seeds");
    let invalidation = report
        .timing
        .as_ref()
        .and_then(|t| t.invalidation.as_ref())
        .expect("invalidation latency is computed");
    assert!(invalidation.stale_reads > 0, "{invalidation:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_without_two_phase_commit_breaks_the_bank_total_under_crashes() {
    let report = first_invalid(
        TxnWorkload::Bank,
        &[TxnNemesisKind::CrashCompute],
        |config| config.unsafe_modes.no_2pc = true,
    )
    .await
    .expect("half-applied transfers were not caught in three seeds");
    assert!(report.summary().contains("total"), "{}", report.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_phase_commit_crashes_between_shard_commits_keep_the_total() {
    // The control of the test above: the same armed crashes, real 2PC; recovery completes
    // every transfer whose decision was recorded.
    let store = tempfile::tempdir().unwrap();
    let mut config = short_config(store.path(), TxnWorkload::Bank, 51);
    config.nemesis = vec![TxnNemesisKind::CrashCompute];
    let (outcome, events, report) = run_and_check(&config).await;
    let crashed = events
        .iter()
        .filter(|e| e.f == Function::Transfer && e.event_type == EventType::Info)
        .count();
    assert!(crashed >= 1, "no armed crash fired");
    assert_valid_with_faults(&config, &outcome, &events, &report, CheckerKind::Bank);
}
