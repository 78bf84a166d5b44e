//! `helios run --workload register` on the replicated store (a primary, a mirror and a witness
//! per shard): chosen when `--nemesis` names a replication fault (`kill-primary`,
//! `isolate-primary`, `isolate-mirror`, `isolate-witness`) or `--unsafe` a replication mode.
//! It checks linearizability across failovers and sets the checker's RTO of each fault beside
//! the harness's own failover measurement.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::Context;
use helios_checker::check::{check_file, CheckOptions, Report};
use helios_checker::Verdict;
use helios_cluster::process::{LocalClusterSpec, Ports};
use helios_workload::replicated::failover::HarnessRecovery;
use helios_workload::replicated::runner::{run_replicated_on, StartReplicaTarget};
use helios_workload::replicated::target::SharedReplicaTarget;
use helios_workload::replicated::{
    run_replicated as run_workload, ReplicatedRunConfig, ReplicatedRunOutcome,
    ReplicationFaultKind, ShardProcessTarget,
};
use helios_workload::runner::STARTUP_TIMEOUT;
use serde::Serialize;
use serde_json::json;

use super::summary::{write_faults, write_operations};
use super::target::{Target, NODE_LOG_FILTER};
use super::{conclude, drive_with_progress, random_seed, RunArgs, UnsafeMode};

/// The agreement the issue asks for between the checker's RTO and the harness's.
const AGREEMENT_MS: f64 = 50.0;

/// How the two recovery times are defined, carried into `results.json`.
const DEFINITIONS: &str = "checker_rto_ms: the checker's RTO of the fault (report.timing \
    carries its exact definition): from the fault's nemesis event to the completion of the \
    first ok operation invoked after the invocation of the last-invoked disruption in the \
    fault's window (an info, or a fail with an error, observed at its completion; the window \
    runs until the next fault's start). harness_rto_ms: from the harness's call that applied \
    the fault to the first write acknowledgement a client observed on the faulted shard \
    afterwards; when the fault took the primary away, from another node, or from any node once \
    the fault was healed. difference_ms = checker_rto_ms - harness_rto_ms. \
    last_disruption_after_heal: the checker's last disruption in the window was observed after \
    the fault was healed.";

/// Whether these arguments ask for the replicated store.
pub fn wants_replication(args: &RunArgs) -> bool {
    matches!(
        args.unsafe_mode,
        Some(UnsafeMode::AsyncReplication | UnsafeMode::NoFencing)
    ) || args.nemesis.as_deref().is_some_and(|list| {
        list.split(',')
            .any(ReplicationFaultKind::is_replication_fault)
    })
}

/// Runs the workload, checks it, writes the outputs and prints the summary; returns the exit
/// code.
pub fn run_replicated(args: &RunArgs) -> anyhow::Result<i32> {
    let config = replicated_config(args)?;
    // The seed comes first, so that a run that dies can be replayed.
    eprintln!("helios run: seed {}", config.seed);
    if config.unsafe_async_replication {
        eprintln!(
            "WARNING: --unsafe async-replication: the primary deliberately acknowledges writes \
             BEFORE its mirror has them, so a failover loses acknowledged writes. This run is \
             expected to be INVALID; it exists to show that the checker catches it."
        );
    }
    if config.unsafe_no_fencing {
        eprintln!(
            "WARNING: --unsafe no-fencing: replication epochs are deliberately NOT fenced, so \
             two primaries can accept writes at once (split brain). This run is expected to be \
             INVALID; it exists to show that the checker catches it."
        );
    }
    let processes = args.target == Target::Processes;
    if processes && (config.unsafe_async_replication || config.unsafe_no_fencing) {
        anyhow::bail!("the --unsafe replication modes are modes of the embedded cluster only");
    }
    let binary = std::env::current_exe().context("cannot find the helios binary")?;
    let outcome = drive_with_progress(args, config.time, |progress| {
        let config = config.clone();
        async move {
            if processes {
                let start = process_starter(binary, config.shards, config.op_timeout);
                run_replicated_on(&config, progress, start).await
            } else {
                run_workload(&config, progress).await
            }
        }
    })
    .with_context(|| format!("replicated run with seed {} failed", config.seed))?;
    report_replicated(args, &config, &outcome)
}

/// Starts `shards` replicated shards of member processes in the run's directory.
fn process_starter(
    binary: std::path::PathBuf,
    shards: usize,
    op_timeout: std::time::Duration,
) -> StartReplicaTarget {
    Box::new(move |run_dir| {
        let spec = LocalClusterSpec {
            binary,
            dir: run_dir.join("cluster"),
            n_nodes: 0,
            n_shards: shards,
            n_compute: 0,
            compute_args: Vec::new(),
            ports: Ports::Free,
            node_args: Vec::new(),
            rust_log: Some(NODE_LOG_FILTER.to_owned()),
            // A run that dies leaves no process behind.
            exit_with_parent: true,
        };
        Box::pin(async move {
            let target = ShardProcessTarget::start(spec, op_timeout, STARTUP_TIMEOUT).await?;
            Ok(std::sync::Arc::new(target) as SharedReplicaTarget)
        })
    })
}

fn replicated_config(args: &RunArgs) -> anyhow::Result<ReplicatedRunConfig> {
    let defaults = ReplicatedRunConfig::default();
    let nemesis = match &args.nemesis {
        Some(list) => ReplicationFaultKind::parse_list(list)?,
        None => defaults.nemesis.clone(),
    };
    let nodes = args.nodes.unwrap_or(3);
    if nodes == 0 || !nodes.is_multiple_of(3) {
        anyhow::bail!(
            "--nodes {nodes}: the replicated store has three nodes per shard (primary, mirror, \
             witness), so --nodes must be a positive multiple of 3"
        );
    }
    let config = ReplicatedRunConfig {
        nemesis,
        time: args.time,
        concurrency: args.concurrency,
        seed: args.seed.unwrap_or_else(random_seed),
        shards: nodes / 3,
        op_timeout: args.op_timeout.unwrap_or(defaults.op_timeout),
        unsafe_async_replication: args.unsafe_mode == Some(UnsafeMode::AsyncReplication),
        unsafe_no_fencing: args.unsafe_mode == Some(UnsafeMode::NoFencing),
        rate: args.rate.unwrap_or(defaults.rate),
        store_dir: args.store.clone(),
        ..defaults
    };
    config.validate()?;
    Ok(config)
}

/// Checks the history (the header names the register model), writes `results.json` and
/// `report.html`, and prints the summary; returns the exit code.
fn report_replicated(
    args: &RunArgs,
    config: &ReplicatedRunConfig,
    outcome: &ReplicatedRunOutcome,
) -> anyhow::Result<i32> {
    let options = CheckOptions {
        timeout: Some(args.check_timeout),
        keep_linearizations: true,
        ..CheckOptions::default()
    };
    let check = check_file(&outcome.history_path, &options)
        .with_context(|| format!("seed {}: cannot check the recorded history", config.seed))?;
    // Liveness: in the healed phase the cluster must serve every key again.
    let liveness = if outcome.final_reads.iter().all(|read| read.served()) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    let verdict = check.verdict.combine(liveness);
    let comparison = compare_rto(&check, &outcome.harness_recoveries);
    let results = json!({
        "seed": config.seed,
        "verdict": verdict,
        "config": {
            "workload": "register",
            "target": if args.target == Target::Processes { "processes" } else { "replication" },
            "nemesis": config.nemesis.iter().map(|kind| kind.as_str()).collect::<Vec<_>>(),
            "time_ms": config.time.as_millis() as u64,
            "healed_phase_ms": config.healed_phase().as_millis() as u64,
            "concurrency": config.concurrency,
            "shards": config.shards,
            "keys": config.keys,
            "unsafe_async_replication": config.unsafe_async_replication,
            "unsafe_no_fencing": config.unsafe_no_fencing,
            "op_timeout_ms": config.op_timeout.as_millis() as u64,
            "rate": config.rate,
        },
        "history": outcome.history_path.display().to_string(),
        "n_events": outcome.n_events,
        "wall_time_ms": outcome.wall_time.as_millis() as u64,
        "faults_planned": outcome.n_faults_planned,
        "faults_applied": outcome.faults,
        "harness_recoveries": outcome.harness_recoveries,
        "rto_comparison": comparison,
        "final_reads": outcome.final_reads,
        "liveness": liveness,
        "report": check,
    });
    conclude(
        args,
        config.seed,
        &outcome.run_dir,
        verdict,
        &results,
        &check,
        || human_summary(config, outcome, &check, &comparison, liveness, verdict),
    )
}

/// One fault's recovery time by the checker and by the harness.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct FaultRto {
    kind: String,
    node: String,
    start_index: u64,
    /// Operations the checker counted as disrupted in the fault's window.
    disrupted: usize,
    checker_rto_ms: Option<f64>,
    harness_rto_ms: Option<f64>,
    /// `checker_rto_ms - harness_rto_ms`.
    difference_ms: Option<f64>,
    /// Whether the checker's last disruption in the window came after the heal.
    last_disruption_after_heal: bool,
}

/// The figures of one fault kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct KindRto {
    kind: String,
    n_faults: usize,
    checker_rto_ms_p50: Option<f64>,
    checker_rto_ms_p99: Option<f64>,
    harness_rto_ms_p50: Option<f64>,
    harness_rto_ms_p99: Option<f64>,
    difference_ms_p50: Option<f64>,
    abs_difference_ms_max: Option<f64>,
    n_within_50_ms: usize,
    n_compared: usize,
}

/// Both measurements of every fault, and how they compare.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct RtoComparison {
    definitions: &'static str,
    faults: Vec<FaultRto>,
    by_kind: Vec<KindRto>,
    abs_difference_ms_p50: Option<f64>,
    abs_difference_ms_max: Option<f64>,
    n_within_50_ms: usize,
    n_compared: usize,
    /// The same three figures over the faults whose last disruption came before the heal.
    before_heal_abs_difference_ms_p50: Option<f64>,
    before_heal_abs_difference_ms_max: Option<f64>,
    before_heal_n_within_50_ms: usize,
    before_heal_n_compared: usize,
}

/// Pairs the checker's fault intervals with the harness's recoveries by the fault's event index.
fn compare_rto(check: &Report, harness: &[HarnessRecovery]) -> RtoComparison {
    let checker: BTreeMap<u64, _> = check
        .timing
        .as_ref()
        .map(|timing| timing.faults.iter().map(|f| (f.start_index, f)).collect())
        .unwrap_or_default();
    let faults: Vec<FaultRto> = harness
        .iter()
        .map(|own| {
            let theirs = checker.get(&own.start_index);
            let checker_rto_ms = theirs.and_then(|fault| fault.rto_ms);
            FaultRto {
                kind: own.kind.clone(),
                node: own.node.clone(),
                start_index: own.start_index,
                disrupted: theirs.map_or(0, |fault| fault.affected_ops),
                checker_rto_ms,
                harness_rto_ms: own.rto_ms,
                difference_ms: checker_rto_ms.zip(own.rto_ms).map(|(c, h)| c - h),
                last_disruption_after_heal: theirs.is_some_and(|fault| {
                    fault
                        .last_disruption_index
                        .zip(fault.end_index)
                        .is_some_and(|(disruption, heal)| disruption > heal)
                }),
            }
        })
        .collect();
    let mut kinds: Vec<&str> = faults.iter().map(|fault| fault.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let by_kind = kinds
        .into_iter()
        .map(|kind| kind_figures(kind, faults.iter().filter(|f| f.kind == kind)))
        .collect();
    let mut abs: Vec<f64> = faults
        .iter()
        .filter_map(|f| f.difference_ms.map(f64::abs))
        .collect();
    let mut before_heal: Vec<f64> = faults
        .iter()
        .filter(|f| !f.last_disruption_after_heal)
        .filter_map(|f| f.difference_ms.map(f64::abs))
        .collect();
    RtoComparison {
        before_heal_abs_difference_ms_p50: quantile(&mut before_heal, 0.5),
        before_heal_abs_difference_ms_max: quantile(&mut before_heal, 1.0),
        before_heal_n_within_50_ms: before_heal.iter().filter(|d| **d <= AGREEMENT_MS).count(),
        before_heal_n_compared: before_heal.len(),
        definitions: DEFINITIONS,
        by_kind,
        abs_difference_ms_p50: quantile(&mut abs, 0.5),
        abs_difference_ms_max: quantile(&mut abs, 1.0),
        n_within_50_ms: abs.iter().filter(|d| **d <= AGREEMENT_MS).count(),
        n_compared: abs.len(),
        faults,
    }
}

fn kind_figures<'a>(kind: &str, faults: impl Iterator<Item = &'a FaultRto>) -> KindRto {
    let faults: Vec<&FaultRto> = faults.collect();
    let mut checker: Vec<f64> = faults.iter().filter_map(|f| f.checker_rto_ms).collect();
    let mut harness: Vec<f64> = faults.iter().filter_map(|f| f.harness_rto_ms).collect();
    let mut difference: Vec<f64> = faults.iter().filter_map(|f| f.difference_ms).collect();
    let mut abs: Vec<f64> = difference.iter().map(|d| d.abs()).collect();
    KindRto {
        kind: kind.to_owned(),
        n_faults: faults.len(),
        checker_rto_ms_p50: quantile(&mut checker, 0.5),
        checker_rto_ms_p99: quantile(&mut checker, 0.99),
        harness_rto_ms_p50: quantile(&mut harness, 0.5),
        harness_rto_ms_p99: quantile(&mut harness, 0.99),
        difference_ms_p50: quantile(&mut difference, 0.5),
        abs_difference_ms_max: quantile(&mut abs, 1.0),
        n_within_50_ms: abs.iter().filter(|d| **d <= AGREEMENT_MS).count(),
        n_compared: abs.len(),
    }
}

/// The nearest-rank quantile `q` of `values` (sorted in place); `None` when empty.
fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn human_summary(
    config: &ReplicatedRunConfig,
    outcome: &ReplicatedRunOutcome,
    check: &Report,
    comparison: &RtoComparison,
    liveness: Verdict,
    verdict: Verdict,
) -> String {
    let mut text = String::new();
    let nemesis: Vec<&str> = config.nemesis.iter().map(|kind| kind.as_str()).collect();
    let broken = match (config.unsafe_async_replication, config.unsafe_no_fencing) {
        (true, true) => ", UNSAFE async-replication and no-fencing",
        (true, false) => ", UNSAFE async-replication",
        (false, true) => ", UNSAFE no-fencing",
        (false, false) => "",
    };
    let _ = writeln!(
        text,
        "helios run: register on the replicated store with seed {}: {} shard(s) of primary, \
         mirror and witness, {} clients, {:.1} s, nemesis {}{broken}",
        config.seed,
        config.shards,
        config.concurrency,
        config.time.as_secs_f64(),
        if nemesis.is_empty() {
            "none".to_owned()
        } else {
            nemesis.join(",")
        },
    );
    let _ = writeln!(text, "history: {}", outcome.history_path.display());
    let _ = writeln!(
        text,
        "\nverdict: {}  (linearizability {}, liveness {})",
        verdict.to_string().to_uppercase(),
        check.verdict,
        liveness
    );
    if check.verdict != Verdict::Valid {
        for line in check.summary().lines() {
            let _ = writeln!(text, "  {line}");
        }
    }
    write_operations(&mut text, check);
    write_faults(&mut text, check);
    write_comparison(&mut text, comparison);
    let reads: Vec<String> = outcome
        .final_reads
        .iter()
        .map(|read| match &read.value {
            Some(serde_json::Value::Null) => format!("{}=nil", read.key),
            Some(value) => format!("{}={value}", read.key),
            None => format!("{}=NOT SERVED ({} attempts)", read.key, read.attempts),
        })
        .collect();
    let _ = writeln!(text, "\nfinal reads after the heal: {}", reads.join(" "));
    let _ = writeln!(
        text,
        "\nrun took {:.1} s, check {:.0} ms; results in {} and report.html beside it",
        outcome.wall_time.as_secs_f64(),
        check.elapsed_ms,
        outcome.run_dir.join("results.json").display()
    );
    text
}

/// The RTO of each fault by the checker (from the history) and by the harness, and how they
/// compare per fault kind.
fn write_comparison(text: &mut String, comparison: &RtoComparison) {
    if comparison.faults.is_empty() {
        return;
    }
    let ms = |value: Option<f64>| value.map_or("-".to_owned(), |ms| format!("{ms:.1}"));
    let _ = writeln!(
        text,
        "\nRTO, checker (history) vs harness (fault -> first acknowledged write):"
    );
    let _ = writeln!(
        text,
        "  {:>3} {:<16} {:<4} {:>9} {:>10} {:>10} {:>9}  note",
        "#", "fault", "node", "disrupted", "checker", "harness", "diff ms"
    );
    for (number, fault) in comparison.faults.iter().enumerate() {
        let _ = writeln!(
            text,
            "  {:>3} {:<16} {:<4} {:>9} {:>10} {:>10} {:>9}  {}",
            number + 1,
            fault.kind,
            fault.node,
            fault.disrupted,
            ms(fault.checker_rto_ms),
            ms(fault.harness_rto_ms),
            ms(fault.difference_ms),
            if fault.last_disruption_after_heal {
                "last disruption after the heal"
            } else {
                ""
            },
        );
    }
    let _ = writeln!(
        text,
        "  {:<16} {:>3} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9} {:>8}",
        "by kind",
        "n",
        "checker p50",
        "checker p99",
        "harness p50",
        "harness p99",
        "diff p50",
        "|diff| max",
        "<=50 ms"
    );
    for kind in &comparison.by_kind {
        let _ = writeln!(
            text,
            "  {:<16} {:>3} {:>11} {:>11} {:>11} {:>11} {:>9} {:>9} {:>8}",
            kind.kind,
            kind.n_faults,
            ms(kind.checker_rto_ms_p50),
            ms(kind.checker_rto_ms_p99),
            ms(kind.harness_rto_ms_p50),
            ms(kind.harness_rto_ms_p99),
            ms(kind.difference_ms_p50),
            ms(kind.abs_difference_ms_max),
            format!("{}/{}", kind.n_within_50_ms, kind.n_compared),
        );
    }
    let _ = writeln!(
        text,
        "  agreement within {AGREEMENT_MS} ms: {}/{} faults; |diff| p50 {} ms, max {} ms",
        comparison.n_within_50_ms,
        comparison.n_compared,
        ms(comparison.abs_difference_ms_p50),
        ms(comparison.abs_difference_ms_max),
    );
    let after_heal = comparison.n_compared - comparison.before_heal_n_compared;
    if after_heal > 0 {
        let _ = writeln!(
            text,
            "  {after_heal} fault(s) had their last disruption after the heal (not caused by \
             the fault; see rto_comparison.definitions); over the other {}: {}/{} within \
             {AGREEMENT_MS} ms, |diff| p50 {} ms, max {} ms",
            comparison.before_heal_n_compared,
            comparison.before_heal_n_within_50_ms,
            comparison.before_heal_n_compared,
            ms(comparison.before_heal_abs_difference_ms_p50),
            ms(comparison.before_heal_abs_difference_ms_max),
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn args(line: &[&str]) -> RunArgs {
        Cli::parse_from(std::iter::once("run").chain(line.iter().copied())).args
    }

    #[test]
    fn replication_faults_and_modes_select_the_replicated_store() {
        assert!(wants_replication(&args(&["--nemesis", "kill-primary"])));
        assert!(wants_replication(&args(&["--unsafe", "no-fencing"])));
        assert!(!wants_replication(&args(&["--nemesis", "kill,pause"])));
        assert!(!wants_replication(&args(&["--unsafe", "stale-reads"])));
        let config = replicated_config(&args(&[
            "--nemesis",
            "isolate-mirror,isolate-witness",
            "--unsafe",
            "async-replication",
            "--seed",
            "4",
            "--nodes",
            "6",
        ]))
        .unwrap();
        assert_eq!(
            config.nemesis,
            vec![
                ReplicationFaultKind::IsolateMirror,
                ReplicationFaultKind::IsolateWitness
            ]
        );
        assert!(config.unsafe_async_replication && !config.unsafe_no_fencing);
        assert_eq!((config.seed, config.shards), (4, 2));
        let mixed = replicated_config(&args(&["--nemesis", "kill-primary,kill"]));
        assert!(mixed.unwrap_err().to_string().contains("\"kill\""));
        let nodes = replicated_config(&args(&["--nemesis", "kill-primary", "--nodes", "5"]));
        assert!(nodes.unwrap_err().to_string().contains("multiple of 3"));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut values = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut values, 0.5), Some(2.0));
        assert_eq!(quantile(&mut values, 0.99), Some(4.0));
        assert_eq!(quantile(&mut values, 1.0), Some(4.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
