//! `helios run --workload list-append|rw-register|bank|cache`: the compute workloads, with
//! faults on compute, storage and metadata nodes, judged by the checkers the history's header
//! selects (isolation, bank, cache with linearizability, and timing). Each also runs against
//! compute node processes (`--target processes`), judged the same way.

use std::fmt::Write;

use anyhow::{bail, Context};
use helios_checker::check::{check_file, CheckOptions, Report};
use helios_checker::Verdict;
use helios_workload::txn::process_nemesis::parse_process_nemesis;
use helios_workload::txn::{
    run_txn_on_processes, TxnNemesisKind, TxnProcessSpec, TxnRunConfig, TxnRunOutcome, TxnUnsafe,
    TxnWorkload,
};
use serde_json::json;

use super::summary::{write_faults, write_operations};
use super::target::{Target, NODE_LOG_FILTER};
use super::{conclude, drive_with_progress, random_seed, RunArgs, UnsafeMode};

/// The shard member processes of a run on processes, unless `--nodes` says otherwise: two
/// shards.
const DEFAULT_MEMBER_PROCESSES: usize = 6;

/// Runs a compute workload on the embedded cluster or on processes; checks it, writes the
/// outputs and prints the summary; returns the exit code.
pub fn run_txn(args: &RunArgs, workload: TxnWorkload) -> anyhow::Result<i32> {
    let processes = match args.target {
        Target::Embedded => None,
        Target::Processes => Some(process_spec(args)?),
        Target::Docker => bail!(
            "--target docker runs the register workload only: {} runs in process (--target \
             embedded) or on local processes (--target processes)",
            workload.as_str()
        ),
    };
    let config = txn_config(args, workload)?;
    let where_ = match &processes {
        Some(spec) => format!(
            " against {} compute node, {} shard and {} metadata processes",
            config.compute_nodes, spec.shards, spec.metadata_nodes
        ),
        None => String::new(),
    };
    eprintln!("helios run: seed {}{where_}", config.seed);
    let modes = config.unsafe_modes.names();
    if !modes.is_empty() {
        eprintln!(
            "WARNING: --unsafe {}: the cluster is deliberately broken. This run is expected to \
             be INVALID; it exists to show that the checkers catch it.",
            modes.join(",")
        );
    }
    let outcome = drive_with_progress(args, config.time, |progress| {
        let (config, processes) = (config.clone(), processes.clone());
        async move {
            match processes {
                Some(spec) => run_txn_on_processes(&config, &spec, progress).await,
                None => helios_workload::txn::run_txn(&config, progress).await,
            }
        }
    })
    .with_context(|| format!("{} run with seed {} failed", workload.as_str(), config.seed))?;
    report_txn(args, &config, processes.as_ref(), &outcome)
}

/// The processes of a run: three metadata nodes, `--nodes / 3` shards, this binary.
fn process_spec(args: &RunArgs) -> anyhow::Result<TxnProcessSpec> {
    let members = args.nodes.unwrap_or(DEFAULT_MEMBER_PROCESSES);
    if members == 0 || !members.is_multiple_of(3) {
        bail!(
            "--nodes {members}: on processes the shards have three member processes each (two \
             data nodes and a witness), so --nodes must be a positive multiple of 3"
        );
    }
    if args.unsafe_mode == Some(UnsafeMode::No2pc) {
        bail!(
            "--unsafe no-2pc runs in process only (--target embedded): compute node processes \
             always commit through one record in the metadata group"
        );
    }
    let binary = std::env::current_exe().context("cannot find the helios binary")?;
    Ok(TxnProcessSpec {
        rust_log: Some(NODE_LOG_FILTER.to_owned()),
        ..TxnProcessSpec::new(binary, members / 3)
    })
}

fn txn_config(args: &RunArgs, workload: TxnWorkload) -> anyhow::Result<TxnRunConfig> {
    let defaults = TxnRunConfig::new(workload);
    let on_processes = args.target == Target::Processes;
    let nemesis = match &args.nemesis {
        _ if on_processes => parse_process_nemesis(args.nemesis.as_deref())?,
        Some(list) => TxnNemesisKind::parse_list(list)?,
        None => defaults.nemesis.clone(),
    };
    let storage_nodes = match args.nodes {
        // On processes `--nodes` counts shard members; the field does not apply.
        Some(nodes) if !on_processes => nodes,
        _ => defaults.storage_nodes,
    };
    let config = TxnRunConfig {
        nemesis,
        time: args.time,
        concurrency: args.concurrency,
        seed: args.seed.unwrap_or_else(random_seed),
        storage_nodes,
        op_timeout: args.op_timeout.unwrap_or(defaults.op_timeout),
        rate: args.rate.unwrap_or(defaults.rate),
        store_dir: args.store.clone(),
        unsafe_modes: TxnUnsafe {
            dirty_reads: args.unsafe_mode == Some(UnsafeMode::DirtyReads),
            skip_invalidation: args.unsafe_mode == Some(UnsafeMode::SkipInvalidation),
            no_2pc: args.unsafe_mode == Some(UnsafeMode::No2pc),
        },
        ..defaults
    };
    config.validate()?;
    Ok(config)
}

/// Checks the history, writes `results.json` and `report.html`, and prints the summary.
fn report_txn(
    args: &RunArgs,
    config: &TxnRunConfig,
    processes: Option<&TxnProcessSpec>,
    outcome: &TxnRunOutcome,
) -> anyhow::Result<i32> {
    let options = CheckOptions {
        timeout: Some(args.check_timeout),
        keep_linearizations: config.workload == TxnWorkload::Cache,
        ..CheckOptions::default()
    };
    let check = check_file(&outcome.history_path, &options)
        .with_context(|| format!("seed {}: cannot check the recorded history", config.seed))?;
    // Liveness: the cluster served again in the healed phase, and every final read was served.
    let (n_final, n_served) = outcome.final_reads;
    let liveness = if outcome.n_ok_healed > 0 && n_served == n_final {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    let verdict = check.verdict.combine(liveness);
    let results = results_json(config, processes, outcome, &check, liveness, verdict);
    conclude(
        args,
        config.seed,
        &outcome.run_dir,
        verdict,
        &results,
        &check,
        || human_summary(config, processes, outcome, &check, liveness, verdict),
    )
}

fn results_json(
    config: &TxnRunConfig,
    processes: Option<&TxnProcessSpec>,
    outcome: &TxnRunOutcome,
    check: &Report,
    liveness: Verdict,
    verdict: Verdict,
) -> serde_json::Value {
    json!({
        "seed": config.seed,
        "verdict": verdict,
        "config": {
            "workload": config.workload.as_str(),
            "target": if processes.is_some() { "processes" } else { "embedded" },
            "shards": processes.map(|spec| spec.shards),
            "metadata_nodes": processes.map(|spec| spec.metadata_nodes),
            "nemesis": config.nemesis.iter().map(|kind| kind.as_str()).collect::<Vec<_>>(),
            "time_ms": config.time.as_millis() as u64,
            "healed_phase_ms": config.healed_phase().as_millis() as u64,
            "concurrency": config.concurrency,
            "storage_nodes": processes.map_or(config.storage_nodes, |spec| 3 * spec.shards),
            "compute_nodes": config.compute_nodes,
            "unsafe": config.unsafe_modes.names(),
            "op_timeout_ms": config.op_timeout.as_millis() as u64,
            "rate": config.rate,
        },
        "history": outcome.history_path.display().to_string(),
        "n_events": outcome.n_events,
        "wall_time_ms": outcome.wall_time.as_millis() as u64,
        "faults_planned": outcome.n_faults_planned,
        "faults_applied": outcome.nemesis.n_applied,
        "fault_calls_refused": outcome.nemesis.refused,
        "ok_in_healed_phase": outcome.n_ok_healed,
        "final_reads": {"made": outcome.final_reads.0, "served": outcome.final_reads.1},
        "liveness": liveness,
        "report": check,
    })
}

fn human_summary(
    config: &TxnRunConfig,
    processes: Option<&TxnProcessSpec>,
    outcome: &TxnRunOutcome,
    check: &Report,
    liveness: Verdict,
    verdict: Verdict,
) -> String {
    let mut text = String::new();
    let nemesis: Vec<&str> = config.nemesis.iter().map(|kind| kind.as_str()).collect();
    let modes = config.unsafe_modes.names();
    let nodes = match processes {
        Some(spec) => format!(
            "{} compute node processes over {} shards (3 member processes each) and {} metadata \
             processes",
            config.compute_nodes, spec.shards, spec.metadata_nodes
        ),
        None => format!(
            "{} compute, {} storage nodes",
            config.compute_nodes, config.storage_nodes
        ),
    };
    let _ = writeln!(
        text,
        "helios run: {} with seed {}: {nodes}, {} clients, {:.1} s, nemesis {}{}",
        config.workload.as_str(),
        config.seed,
        config.concurrency,
        config.time.as_secs_f64(),
        if nemesis.is_empty() {
            "none".to_owned()
        } else {
            nemesis.join(",")
        },
        if modes.is_empty() {
            String::new()
        } else {
            format!(", UNSAFE {}", modes.join(","))
        },
    );
    let _ = writeln!(text, "history: {}", outcome.history_path.display());
    let _ = writeln!(
        text,
        "\nverdict: {}  (checkers {}, liveness {})",
        verdict.to_string().to_uppercase(),
        check.verdict,
        liveness
    );
    let mut without_timing = check.clone();
    without_timing.timing = None;
    for line in without_timing.summary().lines().skip(1) {
        let _ = writeln!(text, "{line}");
    }
    write_operations(&mut text, check);
    write_faults(&mut text, check);
    if let Some(invalidation) = check.timing.as_ref().and_then(|t| t.invalidation.as_ref()) {
        let _ = writeln!(
            text,
            "\ninvalidation: {} writes, {} pairs, {} stale reads, {} never converged, latency p50 {} p99 {} max {:.2} ms",
            invalidation.writes,
            invalidation.pairs,
            invalidation.stale_reads,
            invalidation.unconverged_pairs,
            show_ms(invalidation.latency_ms.p50),
            show_ms(invalidation.latency_ms.p99),
            invalidation.max_ms
        );
    }
    let _ = writeln!(
        text,
        "\nfaults applied {} of {} planned; ok operations in the healed phase: {}; final reads served {} of {}",
        outcome.nemesis.n_applied,
        outcome.n_faults_planned,
        outcome.n_ok_healed,
        outcome.final_reads.1,
        outcome.final_reads.0
    );
    for refused in &outcome.nemesis.refused {
        let _ = writeln!(text, "  fault call refused: {refused}");
    }
    let _ = writeln!(
        text,
        "\nrun took {:.1} s, check {:.0} ms; results in {} and report.html beside it",
        outcome.wall_time.as_secs_f64(),
        check.elapsed_ms,
        outcome.run_dir.join("results.json").display()
    );
    text
}

fn show_ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms"))
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
    fn compute_flags_reach_the_configuration() {
        let config = txn_config(
            &args(&[
                "--workload",
                "bank",
                "--nemesis",
                "kill",
                "--unsafe",
                "no-2pc",
                "--seed",
                "5",
            ]),
            TxnWorkload::Bank,
        )
        .unwrap();
        assert_eq!(
            config.nemesis,
            vec![
                TxnNemesisKind::KillCompute,
                TxnNemesisKind::CrashCompute,
                TxnNemesisKind::KillStorage,
                TxnNemesisKind::KillMetadata
            ]
        );
        assert!(config.unsafe_modes.no_2pc && !config.unsafe_modes.dirty_reads);
        assert_eq!(config.seed, 5);
    }

    #[test]
    fn unsafe_modes_of_other_workloads_are_refused() {
        let error =
            super::super::check_workload(&args(&["--workload", "cache", "--unsafe", "no-2pc"]))
                .unwrap_err()
                .to_string();
        assert!(error.contains("no-2pc"), "{error}");
        super::super::check_workload(&args(&[
            "--workload",
            "cache",
            "--unsafe",
            "skip-invalidation",
        ]))
        .unwrap();
    }
}
