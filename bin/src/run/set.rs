//! `helios run --workload set`: the set workload on the sharded storage cluster, with online
//! rebalancing (add-node), kills and partitions, judged by the lost-writes checker that the
//! history's header selects.

use std::fmt::Write;

use anyhow::Context;
use helios_checker::check::{check_file, CheckOptions, Report};
use helios_checker::Verdict;
use helios_workload::set_schedule::SetNemesisKind;
use helios_workload::{SetRunConfig, SetRunOutcome};
use serde_json::json;

use super::summary::{write_faults, write_operations};
use super::{conclude, drive_with_progress, random_seed, RunArgs, UnsafeMode};

/// At most this many lost ids are printed; `results.json` lists up to the checker's limit.
const PRINTED_LOST_IDS: usize = 50;

/// Runs the set workload, checks it, writes the outputs and prints the summary; returns the
/// exit code.
pub fn run_set(args: &RunArgs) -> anyhow::Result<i32> {
    let config = set_config(args)?;
    // The seed comes first, so that a run that dies can be replayed.
    eprintln!("helios run: seed {}", config.seed);
    if config.unsafe_skip_catchup {
        eprintln!(
            "WARNING: --unsafe skip-catchup: moves switch ownership without catching up the \
             writes made during the copy. This run is expected to be INVALID; it exists to show \
             that the lost-writes checker catches it."
        );
    }
    let outcome = drive_with_progress(args, config.time, |progress| {
        let config = config.clone();
        async move { helios_workload::run_set(&config, progress).await }
    })
    .with_context(|| format!("set run with seed {} failed", config.seed))?;
    report_set(args, &config, &outcome)
}

fn set_config(args: &RunArgs) -> anyhow::Result<SetRunConfig> {
    let defaults = SetRunConfig::default();
    let nemesis = match &args.nemesis {
        Some(list) => SetNemesisKind::parse_list(list)?,
        None => defaults.nemesis.clone(),
    };
    let config = SetRunConfig {
        nemesis,
        time: args.time,
        concurrency: args.concurrency,
        seed: args.seed.unwrap_or_else(random_seed),
        storage_nodes: args.nodes.unwrap_or(defaults.storage_nodes),
        unsafe_skip_catchup: args.unsafe_mode == Some(UnsafeMode::SkipCatchup),
        op_timeout: args.op_timeout.unwrap_or(defaults.op_timeout),
        rate: args.rate.unwrap_or(defaults.rate),
        store_dir: args.store.clone(),
        ..defaults
    };
    config.validate()?;
    Ok(config)
}

/// Checks the history (the header picks lost writes and timing), writes `results.json` and
/// `report.html`, and prints the summary; returns the exit code.
fn report_set(
    args: &RunArgs,
    config: &SetRunConfig,
    outcome: &SetRunOutcome,
) -> anyhow::Result<i32> {
    let options = CheckOptions {
        timeout: Some(args.check_timeout),
        ..CheckOptions::default()
    };
    let check = check_file(&outcome.history_path, &options)
        .with_context(|| format!("seed {}: cannot check the recorded history", config.seed))?;
    // Liveness: after the heal and the last move, the cluster must serve the whole set again.
    let liveness = if outcome.final_reads.iter().all(|read| read.served()) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    let verdict = check.verdict.combine(liveness);
    let results = results_json(config, outcome, &check, liveness, verdict);
    conclude(
        args,
        config.seed,
        &outcome.run_dir,
        verdict,
        &results,
        &check,
        || human_summary(config, outcome, &check, liveness, verdict),
    )
}

/// `results.json` of a set run: the run's figures, the liveness verdict, and the full report.
fn results_json(
    config: &SetRunConfig,
    outcome: &SetRunOutcome,
    check: &Report,
    liveness: Verdict,
    verdict: Verdict,
) -> serde_json::Value {
    json!({
        "seed": config.seed,
        "verdict": verdict,
        "config": {
            "workload": "set",
            "nemesis": config.nemesis.iter().map(|kind| kind.as_str()).collect::<Vec<_>>(),
            "time_ms": config.time.as_millis() as u64,
            "healed_phase_ms": config.healed_phase().as_millis() as u64,
            "concurrency": config.concurrency,
            "storage_nodes": config.storage_nodes,
            "metadata_nodes": config.metadata_nodes,
            "unsafe_skip_catchup": config.unsafe_skip_catchup,
            "op_timeout_ms": config.op_timeout.as_millis() as u64,
            "rate": config.rate,
            "read_fraction": config.read_fraction,
        },
        "history": outcome.history_path.display().to_string(),
        "n_events": outcome.n_events,
        "wall_time_ms": outcome.wall_time.as_millis() as u64,
        "faults_planned": outcome.n_faults_planned,
        "faults_applied": outcome.nemesis.n_applied,
        "add_nodes_skipped": outcome.nemesis.n_skipped,
        "nodes_added": outcome.nemesis.added,
        "fault_calls_refused": outcome.nemesis.refused,
        "last_rebalance": outcome.rebalance,
        "final_reads": outcome.final_reads,
        "liveness": liveness,
        "report": check,
    })
}

/// The one-screen summary of a set run: verdict, the lost-writes section (counts, stable
/// latency, lost ids), operations, faults with their recovery times, and the final reads.
fn human_summary(
    config: &SetRunConfig,
    outcome: &SetRunOutcome,
    check: &Report,
    liveness: Verdict,
    verdict: Verdict,
) -> String {
    let mut text = String::new();
    let nemesis: Vec<&str> = config.nemesis.iter().map(|kind| kind.as_str()).collect();
    let _ = writeln!(
        text,
        "helios run: set with seed {}: {} storage nodes (+{} added), {} metadata nodes, {} clients, {:.1} s, nemesis {}{}",
        config.seed,
        config.storage_nodes,
        outcome.nemesis.added.len(),
        config.metadata_nodes,
        config.concurrency,
        config.time.as_secs_f64(),
        if nemesis.is_empty() { "none".to_owned() } else { nemesis.join(",") },
        if config.unsafe_skip_catchup { ", UNSAFE skip-catchup" } else { "" },
    );
    let _ = writeln!(text, "history: {}", outcome.history_path.display());
    let _ = writeln!(
        text,
        "\nverdict: {}  (checkers {}, liveness {})",
        verdict.to_string().to_uppercase(),
        check.verdict,
        liveness
    );
    // The checker's own summary without its timing section, which is printed below as tables.
    let mut without_timing = check.clone();
    without_timing.timing = None;
    for line in without_timing.summary().lines().skip(1) {
        let _ = writeln!(text, "{line}");
    }
    write_lost_ids(&mut text, check);
    write_operations(&mut text, check);
    write_faults(&mut text, check);
    let _ = writeln!(
        text,
        "\nnodes added: {}; add-nodes skipped (a move still ran): {}; last move: {}",
        if outcome.nemesis.added.is_empty() {
            "none".to_owned()
        } else {
            outcome.nemesis.added.join(", ")
        },
        outcome.nemesis.n_skipped,
        outcome.rebalance
    );
    for refused in &outcome.nemesis.refused {
        let _ = writeln!(text, "  fault call refused: {refused}");
    }
    let reads: Vec<String> = outcome
        .final_reads
        .iter()
        .map(|read| match read.n_elements {
            Some(n) => format!("process {}: {n} ids", read.process),
            None => format!(
                "process {}: NOT SERVED ({} attempts)",
                read.process, read.attempts
            ),
        })
        .collect();
    let _ = writeln!(text, "final reads after the heal: {}", reads.join("; "));
    let _ = writeln!(
        text,
        "\nrun took {:.1} s, check {:.0} ms; results in {} and report.html beside it",
        outcome.wall_time.as_secs_f64(),
        check.elapsed_ms,
        outcome.run_dir.join("results.json").display()
    );
    text
}

/// The lost ids, by name, when there are any.
fn write_lost_ids(text: &mut String, check: &Report) {
    let Some(sets) = &check.lost_writes else {
        return;
    };
    if sets.lost_count == 0 {
        return;
    }
    let ids: Vec<String> = sets
        .lost
        .iter()
        .take(PRINTED_LOST_IDS)
        .map(|element| element.element.to_string())
        .collect();
    let more = sets.lost_count.saturating_sub(ids.len());
    let _ = writeln!(
        text,
        "  lost ids ({}): {}{}",
        sets.lost_count,
        ids.join(" "),
        if more > 0 {
            format!(" ... and {more} more in results.json")
        } else {
            String::new()
        }
    );
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
    fn set_flags_reach_the_set_configuration_with_set_defaults() {
        let config = set_config(&args(&[
            "--workload",
            "set",
            "--nemesis",
            "add-node,kill",
            "--unsafe",
            "skip-catchup",
            "--seed",
            "9",
            "--nodes",
            "4",
        ]))
        .unwrap();
        assert_eq!(
            config.nemesis,
            vec![SetNemesisKind::AddNode, SetNemesisKind::Kill]
        );
        assert!(config.unsafe_skip_catchup);
        assert_eq!((config.seed, config.storage_nodes), (9, 4));
        assert_eq!(config.rate, SetRunConfig::default().rate);
        let defaults = set_config(&args(&["--workload", "set", "--seed", "1"])).unwrap();
        assert_eq!(defaults.nemesis, SetNemesisKind::ALL.to_vec());
        assert!(!defaults.unsafe_skip_catchup);
    }

    #[test]
    fn an_unsafe_mode_of_another_workload_and_register_faults_are_refused_for_set() {
        let mismatch = super::super::check_workload(&args(&[
            "--workload",
            "register",
            "--unsafe",
            "skip-catchup",
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            mismatch.contains("skip-catchup breaks the set workload"),
            "{mismatch}"
        );
        let error = set_config(&args(&["--workload", "set", "--nemesis", "pause"]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"pause\""), "{error}");
    }
}
