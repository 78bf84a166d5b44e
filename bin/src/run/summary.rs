//! The run's outputs for people and for tools: the one-screen summary and `results.json`.

use std::collections::BTreeMap;
use std::fmt::Write;

use helios_checker::check::Report;
use helios_checker::ops::Outcome;
use helios_checker::Verdict;
use helios_workload::{RunConfig, RunOutcome};
use serde_json::json;

/// `results.json`: the run's figures, the liveness verdict, and the checker's full report.
pub fn results_json(
    config: &RunConfig,
    outcome: &RunOutcome,
    check: &Report,
    liveness: Verdict,
    verdict: Verdict,
) -> serde_json::Value {
    json!({
        "seed": config.seed,
        "verdict": verdict,
        "target": outcome.target,
        "config": {
            "workload": config.workload,
            "nemesis": config.nemesis.iter().map(|kind| kind.as_str()).collect::<Vec<_>>(),
            "time_ms": config.time.as_millis() as u64,
            "healed_phase_ms": config.healed_phase().as_millis() as u64,
            "concurrency": config.concurrency,
            "nodes": config.nodes,
            "keys": config.keys,
            "unsafe_stale_reads": config.unsafe_stale_reads,
            "op_timeout_ms": config.op_timeout.as_millis() as u64,
            "rate": config.rate,
        },
        "history": outcome.history_path.display().to_string(),
        "n_events": outcome.n_events,
        "wall_time_ms": outcome.wall_time.as_millis() as u64,
        "faults_planned": outcome.n_faults_planned,
        "faults_applied": outcome.n_faults_applied,
        "final_reads": outcome.final_reads,
        "liveness": liveness,
        "report": check,
    })
}

/// The one-screen summary: seed, verdict (with the witness when not valid), outcome counts,
/// latency per `f`, the faults with their recovery times, and the final reads.
pub fn human_summary(
    config: &RunConfig,
    outcome: &RunOutcome,
    check: &Report,
    liveness: Verdict,
    verdict: Verdict,
) -> String {
    let mut text = String::new();
    let nemesis: Vec<&str> = config.nemesis.iter().map(|kind| kind.as_str()).collect();
    let _ = writeln!(
        text,
        "helios run: {} with seed {}: {} nodes ({}), {} clients, {:.1} s, nemesis {}{}",
        config.workload,
        config.seed,
        config.nodes,
        outcome.target,
        config.concurrency,
        config.time.as_secs_f64(),
        if nemesis.is_empty() {
            "none".to_owned()
        } else {
            nemesis.join(",")
        },
        if config.unsafe_stale_reads {
            ", UNSAFE stale reads"
        } else {
            ""
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
    write_final_reads(&mut text, outcome);
    let _ = writeln!(
        text,
        "\nrun took {:.1} s, check {:.0} ms; results in {} and report.html beside it",
        outcome.wall_time.as_secs_f64(),
        check.elapsed_ms,
        outcome.run_dir.join("results.json").display()
    );
    text
}

/// Outcome counts and latency per `f`, from the checker's timing report (the same figures
/// `helios check` prints, with the definitions in `results.json`).
pub(super) fn write_operations(text: &mut String, check: &Report) {
    let Some(timing) = &check.timing else {
        let _ = writeln!(
            text,
            "\noperations: {} invoked (no timing: the history has no times)",
            check.n_ops
        );
        return;
    };
    let mut by_f: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    let mut latency: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for row in &timing.latency {
        let slot = match row.outcome {
            Outcome::Ok => 0,
            Outcome::Fail => 1,
            Outcome::Info | Outcome::Pending => 2,
        };
        by_f.entry(row.f.as_str()).or_default()[slot] += row.count;
        if row.outcome == Outcome::Ok {
            latency.insert(row.f.as_str(), (row.latency_ms_p50, row.latency_ms_p99));
        }
    }
    let total = |slot: usize| by_f.values().map(|counts| counts[slot]).sum::<u64>();
    let _ = writeln!(
        text,
        "\noperations: {} invoked: {} ok, {} fail, {} info",
        check.n_ops,
        total(0),
        total(1),
        total(2)
    );
    let _ = writeln!(
        text,
        "  {:<6} {:>8} {:>8} {:>6} {:>9} {:>9}",
        "f", "ok", "fail", "info", "p50 ms", "p99 ms"
    );
    for (f, counts) in &by_f {
        let (p50, p99) = latency
            .get(f)
            .map_or(("-".to_owned(), "-".to_owned()), |(p50, p99)| {
                (format!("{p50:.2}"), format!("{p99:.2}"))
            });
        let _ = writeln!(
            text,
            "  {:<6} {:>8} {:>8} {:>6} {:>9} {:>9}",
            f, counts[0], counts[1], counts[2], p50, p99
        );
    }
}

/// Each fault with its recovery time (RTO), from the checker's timing report.
pub(super) fn write_faults(text: &mut String, check: &Report) {
    let faults = check
        .timing
        .as_ref()
        .map(|t| t.faults.as_slice())
        .unwrap_or_default();
    let _ = writeln!(text, "\nfaults: {} injected", faults.len());
    if faults.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "  {:>3} {:<16} {:>8} {:>8} {:>9} {:>8}  targets",
        "#", "f", "start s", "end s", "disrupted", "RTO ms"
    );
    let seconds =
        |ns: Option<u64>| ns.map_or("-".to_owned(), |ns| format!("{:.2}", ns as f64 / 1e9));
    for (number, fault) in faults.iter().enumerate() {
        let rto = fault
            .rto_ms
            .map_or("never".to_owned(), |ms| format!("{ms:.0}"));
        let _ = writeln!(
            text,
            "  {:>3} {:<16} {:>8} {:>8} {:>9} {:>8}  {}",
            number + 1,
            fault.fault,
            seconds(fault.start_ns),
            seconds(fault.end_ns),
            fault.affected_ops,
            rto,
            targets(&fault.targets)
        );
    }
}

/// A fault's targets in brief: `m2`, or `m0,m1 | m2,m3,m4`, or the ring's blocked links.
fn targets(value: &serde_json::Value) -> String {
    if let Some(node) = value.get("node").and_then(|node| node.as_str()) {
        return node.to_owned();
    }
    let join = |items: &serde_json::Value, separator: &str| -> String {
        items
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| match item {
                        serde_json::Value::String(name) => name.clone(),
                        other => other
                            .as_array()
                            .map(|names| {
                                names
                                    .iter()
                                    .filter_map(|n| n.as_str())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default(),
                    })
                    .collect::<Vec<_>>()
                    .join(separator)
            })
            .unwrap_or_default()
    };
    let kind = value
        .get("nemesis")
        .and_then(|kind| kind.as_str())
        .unwrap_or("");
    if let Some(groups) = value.get("groups") {
        return format!("{kind} {}", join(groups, " | "));
    }
    if let Some(blocked) = value.get("blocked") {
        return format!("{kind} cut {}", join(blocked, " "));
    }
    value.to_string()
}

fn write_final_reads(text: &mut String, outcome: &RunOutcome) {
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
}
