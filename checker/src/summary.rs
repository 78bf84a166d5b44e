//! The human summary of a [`Report`]: the verdict first, then one section per checker.

use crate::bank::BankReport;
use crate::cache::CacheReport;
use crate::check::Report;
use crate::elle::ElleReport;
use crate::linear::LinearReport;
use crate::sets::SetReport;
use crate::timing::{Quantiles, TimingReport};
use std::fmt::Write;

/// How many instances of one anomaly, or elements of one kind, the summary spells out.
const LISTED: usize = 3;

impl Report {
    /// A human summary: the verdict, and each checker's result with its witness.
    pub fn summary(&self) -> String {
        let mut text = format!("{}: {}\n", self.file, self.verdict);
        let _ = write!(
            text,
            "  {} events, {} operations, format {}; checkers {} ({})",
            self.n_events,
            self.n_ops,
            self.format.name(),
            self.checkers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            self.checkers_source
        );
        if let Some(model) = &self.model {
            let _ = write!(text, "; model {model} ({})", self.model_source);
        }
        text.push('\n');
        if let Some(linear) = &self.linearizability {
            linearizability(&mut text, linear);
        }
        if let Some(isolation) = &self.isolation {
            elle(&mut text, isolation);
        }
        if let Some(sets) = &self.lost_writes {
            lost_writes(&mut text, sets);
        }
        if let Some(bank) = &self.bank {
            bank_section(&mut text, bank);
        }
        if let Some(cache) = &self.cache {
            cache_section(&mut text, cache);
        }
        if let Some(timing) = &self.timing {
            timing_section(&mut text, timing);
        }
        if let Some(note) = &self.note {
            let _ = writeln!(text, "  {note}");
        }
        text
    }
}

fn linearizability(text: &mut String, linear: &LinearReport) {
    let _ = writeln!(
        text,
        "  linearizability: {} over {} partitions, {} operations checked, {:.1} ms",
        linear.verdict, linear.n_partitions, linear.n_ops, linear.elapsed_ms
    );
    if let Some(reason) = linear.unknown_reason {
        let _ = writeln!(text, "  unknown because: {}", reason.describe());
        let stopped = linear
            .partitions
            .iter()
            .filter(|partition| partition.unknown_reason == Some(reason));
        for partition in stopped.take(5) {
            let place = match &partition.key {
                Some(key) => format!("in partition key {key}"),
                None => "in the only partition".to_string(),
            };
            let _ = writeln!(
                text,
                "    {place}: {} operations, {} configurations memoised, {:.0} ms",
                partition.n_ops, partition.states_memoised, partition.elapsed_ms
            );
        }
    }
    let Some(witness) = &linear.witness else {
        return;
    };
    if let Some(key) = &witness.key {
        let _ = writeln!(text, "  in partition key {key}:");
    }
    let _ = writeln!(text, "  cannot linearize {}", witness.description);
    let _ = writeln!(
        text,
        "  after the longest linearizable prefix of {} operations, in state {}",
        witness.prefix.len(),
        witness.state
    );
    if !witness.prefix_tail.is_empty() {
        text.push_str("  the prefix ends with:\n");
        for step in &witness.prefix_tail {
            let _ = writeln!(text, "    {}  => {}", step.description, step.state);
        }
    }
}

fn elle(text: &mut String, report: &ElleReport) {
    let _ = writeln!(
        text,
        "  isolation ({}, {} transactions of {}): {}, {:.1} ms",
        report.consistency,
        report.n_txns,
        report.workload.name(),
        report.verdict,
        report.elapsed_ms
    );
    if let Some(reason) = &report.unknown_reason {
        let _ = writeln!(text, "  unknown because: {reason}");
    }
    let mut names: Vec<&String> = report.failing.iter().collect();
    names.extend(report.informational.iter());
    for name in names {
        let failing = report.failing.contains(name);
        let count = report.anomaly_counts.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            text,
            "  {name}: {count} found, {}",
            if failing {
                "forbidden by this consistency model"
            } else {
                "allowed here (only stronger models forbid it)"
            }
        );
        for anomaly in report
            .anomalies
            .get(name)
            .into_iter()
            .flatten()
            .take(LISTED)
        {
            for line in &anomaly.explanation {
                let _ = writeln!(text, "    {line}");
            }
            text.push_str("    --\n");
        }
    }
}

fn lost_writes(text: &mut String, report: &SetReport) {
    let _ = writeln!(
        text,
        "  lost writes: {}; {} elements, {} reads: {} stable, {} lost, {} stale, {} never read, {} duplicated, {} unexpected",
        report.verdict,
        report.n_elements,
        report.n_reads,
        report.stable_count,
        report.lost_count,
        report.stale_count,
        report.never_read_count,
        report.duplicated_count,
        report.unexpected_count
    );
    let _ = writeln!(
        text,
        "  stable latency ms: {}",
        quantiles(&report.stable_latency_ms)
    );
    if report.lost_count > 0 {
        let _ = writeln!(
            text,
            "  lost latency ms: {}",
            quantiles(&report.lost_latency_ms)
        );
    }
    for element in report.lost.iter().take(LISTED) {
        let _ = writeln!(text, "    lost: {}", element.explanation);
    }
    for duplicate in report.duplicated.iter().take(LISTED) {
        let _ = writeln!(
            text,
            "    duplicated: {}",
            serde_json::to_string(duplicate).unwrap_or_default()
        );
    }
    if let Some(note) = &report.note {
        let _ = writeln!(text, "  {note}");
    }
}

fn bank_section(text: &mut String, report: &BankReport) {
    let total = report
        .total
        .map_or_else(|| "unknown".to_string(), |total| total.to_string());
    let _ = writeln!(
        text,
        "  bank: {}; {} reads checked, {} bad; total {total} ({}); transfers {} ok, {} fail, {} info",
        report.verdict,
        report.reads_checked,
        report.bad_reads,
        report.total_source,
        report.transfers.ok,
        report.transfers.fail,
        report.transfers.info
    );
    if !report.error_counts.is_empty() {
        let counts: Vec<String> = report
            .error_counts
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        let _ = writeln!(text, "  errors: {}", counts.join(", "));
    }
    if let Some(first) = &report.first_error {
        let _ = writeln!(text, "  first error: {}", first.explanation);
        let balances = serde_json::to_string(&first.balances).unwrap_or_default();
        let _ = writeln!(text, "    balances {balances}, sum {}", first.sum);
    }
    if let Some(note) = &report.note {
        let _ = writeln!(text, "  {note}");
    }
}

fn cache_section(text: &mut String, report: &CacheReport) {
    let _ = writeln!(
        text,
        "  cache: {}; bound {} ms ({}); {} pairs: {} stale, {} late, {} never converged, {} undecided; {} stale reads",
        report.verdict,
        report.invalidation_bound_ms,
        report.bound_source,
        report.pairs,
        report.stale_pairs,
        report.late_pairs,
        report.unconverged_pairs,
        report.undecided_pairs,
        report.stale_reads
    );
    let _ = writeln!(
        text,
        "  invalidation latency ms: {}",
        quantiles(&report.latency_ms)
    );
    for late in report.late.iter().take(LISTED) {
        let _ = writeln!(text, "    late: {}", late.explanation);
    }
    for pair in report.undecided.iter().take(LISTED) {
        let _ = writeln!(text, "    undecided: {}", pair.explanation);
    }
    if let Some(note) = &report.note {
        let _ = writeln!(text, "  {note}");
    }
}

fn timing_section(text: &mut String, report: &TimingReport) {
    if !report.latency.is_empty() {
        text.push_str("  latency ms        count      p50      p99      max\n");
        for row in &report.latency {
            let _ = writeln!(
                text,
                "    {:<8} {:<5} {:>7} {:>8.2} {:>8.2} {:>8.2}",
                row.f,
                format!("{:?}", row.outcome).to_lowercase(),
                row.count,
                row.latency_ms_p50,
                row.latency_ms_p99,
                row.latency_ms_max
            );
        }
    }
    for fault in &report.faults {
        let rto = match fault.rto_ms {
            Some(rto) => format!("recovered in {rto:.0} ms"),
            None => "never recovered".to_string(),
        };
        let _ = writeln!(
            text,
            "  fault {} {}: {} operations disrupted, {rto}",
            fault.fault,
            serde_json::to_string(&fault.targets).unwrap_or_default(),
            fault.affected_ops
        );
    }
    if let Some(invalidation) = &report.invalidation {
        let _ = writeln!(
            text,
            "  invalidation: {} writes, {} stale reads, latency ms {}",
            invalidation.writes,
            invalidation.stale_reads,
            quantiles(&invalidation.latency_ms)
        );
    }
    if let Some(note) = &report.note {
        let _ = writeln!(text, "  timing: {note}");
    }
}

fn quantiles(q: &Quantiles) -> String {
    let show = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.1}"));
    format!(
        "p50 {} p95 {} p99 {} max {} (n={})",
        show(q.p50),
        show(q.p95),
        show(q.p99),
        show(q.max),
        q.count
    )
}
