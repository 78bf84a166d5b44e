//! Linearizability: splits a history into partitions (P-compositionality), searches each in
//! parallel with [`search::search`], and assembles the verdict and its witness.

pub mod search;

use crate::models::{describe_op, Model, ModelInstance, ModelSpec, PartitionKey, ShapeError};
use crate::ops::{Operation, Operations, Outcome};
use crate::verdict::Verdict;
use rayon::prelude::*;
use search::{Budget, PartitionOp, SearchOutcome, UnknownReason};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Limits and switches for a linearizability check.
#[derive(Clone, Debug)]
pub struct LinearOptions {
    /// Give up (verdict `unknown`) after this long.
    pub timeout: Option<Duration>,
    /// Give up when one partition memoises more configurations than this.
    pub max_states: u64,
    /// Give up when the memo tables hold more bytes than this, all partitions together.
    pub max_memory_bytes: u64,
    /// Keep every partition's linearization and the state after each step (for `--html`).
    pub keep_linearizations: bool,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            timeout: None,
            max_states: 50_000_000,
            max_memory_bytes: 4 << 30,
            keep_linearizations: false,
        }
    }
}

/// One step of a linearization: the operation and the model state after it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinearStep {
    /// The operation's id in [`Operations::ops`].
    pub op: usize,
    /// The operation, in words.
    pub description: String,
    /// The model state after it.
    pub state: String,
}

/// The verdict of one partition, with what the search found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartitionReport {
    /// The partition's key (`None` for the single partition of an unkeyed history).
    pub key: PartitionKey,
    /// Operations checked (those that did not fail and constrain the state).
    pub n_ops: usize,
    /// This partition's verdict.
    pub verdict: Verdict,
    /// Why the search stopped without a verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<UnknownReason>,
    /// The linearization (valid) or the longest linearizable prefix (invalid), when kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<LinearStep>,
    /// Configurations memoised by the search.
    pub states_memoised: u64,
    /// Time spent on this partition.
    pub elapsed_ms: f64,
}

/// Why a history is not linearizable: the operation that cannot be placed, after the longest
/// linearizable prefix of its partition, and the model state after that prefix.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Witness {
    /// The partition's key.
    pub key: PartitionKey,
    /// The id of the operation that cannot be linearized.
    pub op: usize,
    /// That operation, in words, with its process and lines.
    pub description: String,
    /// The longest linearizable prefix, as operation ids, in linearization order.
    pub prefix: Vec<usize>,
    /// The last few operations of the prefix, in words, with the state after each.
    pub prefix_tail: Vec<LinearStep>,
    /// The model state after the prefix.
    pub state: String,
}

/// The result of a linearizability check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinearReport {
    /// The combined verdict: the worst of the partitions'.
    pub verdict: Verdict,
    /// The model used.
    pub model: String,
    /// Operations checked, over all partitions.
    pub n_ops: usize,
    /// Number of partitions.
    pub n_partitions: usize,
    /// The witness, when invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub witness: Option<Witness>,
    /// Why the verdict is unknown, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<UnknownReason>,
    /// Partitions: every one when linearizations are kept, otherwise only those not valid.
    pub partitions: Vec<PartitionReport>,
    /// Wall time of the check.
    pub elapsed_ms: f64,
}

/// How many prefix steps a witness spells out in words.
const WITNESS_TAIL: usize = 12;

/// Checks `history` against the model named by `spec`.
pub fn check(
    history: &Operations,
    spec: &ModelSpec,
    options: &LinearOptions,
) -> Result<LinearReport, ShapeError> {
    match spec {
        ModelSpec::Register(model) => check_model(history, model, options),
        ModelSpec::Kv(model) => check_model(history, model, options),
        ModelSpec::MultiRegister(model) => check_model(history, model, options),
        ModelSpec::Mutex(model) => check_model(history, model, options),
        ModelSpec::Set(model) => check_model(history, model, options),
    }
}

/// Checks `history` against `model`, partition by partition, in parallel.
pub fn check_model<M: Model>(
    history: &Operations,
    model: &M,
    options: &LinearOptions,
) -> Result<LinearReport, ShapeError> {
    let started = Instant::now();
    let mut groups: BTreeMap<PartitionKey, Vec<&Operation>> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.outcome != Outcome::Fail) {
        groups.entry(model.partition(op)).or_default().push(op);
    }
    let cancel = AtomicBool::new(false);
    let memory_in_use = AtomicU64::new(0);
    let budget = Budget {
        deadline: options.timeout.map(|timeout| started + timeout),
        max_states: options.max_states,
        max_memory_bytes: options.max_memory_bytes,
        memory_in_use: &memory_in_use,
        cancel: &cancel,
    };
    // Largest partitions first, so that one big partition does not start last.
    let mut order: Vec<(&PartitionKey, &Vec<&Operation>)> = groups.iter().collect();
    order.sort_by_key(|(_, ops)| std::cmp::Reverse(ops.len()));
    let results: Vec<Result<(PartitionReport, Option<Witness>), ShapeError>> = order
        .into_par_iter()
        .map(|(key, ops)| {
            let result = check_partition(model, key.clone(), ops, &budget, options);
            if matches!(&result, Ok((report, _)) if report.verdict == Verdict::Invalid) {
                cancel.store(true, Ordering::Relaxed);
            }
            result
        })
        .collect();
    let mut reports = Vec::with_capacity(results.len());
    let mut first_error: Option<ShapeError> = None;
    for result in results {
        match result {
            Ok(report) => reports.push(report),
            Err(error) => {
                if first_error
                    .as_ref()
                    .is_none_or(|first| error.line < first.line)
                {
                    first_error = Some(error);
                }
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    reports.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    Ok(assemble(model.name(), reports, options, started))
}

fn assemble(
    model: String,
    reports: Vec<(PartitionReport, Option<Witness>)>,
    options: &LinearOptions,
    started: Instant,
) -> LinearReport {
    let verdict = reports
        .iter()
        .map(|(report, _)| report.verdict)
        .fold(Verdict::Valid, Verdict::combine);
    let n_ops = reports.iter().map(|(report, _)| report.n_ops).sum();
    let n_partitions = reports.len();
    // The first invalid partition in key order gives the witness, so that reports are stable.
    let witness = reports.iter().find_map(|(_, witness)| witness.clone());
    let unknown_reason = match verdict {
        Verdict::Unknown => reports
            .iter()
            .filter_map(|(report, _)| report.unknown_reason)
            .find(|reason| *reason != UnknownReason::Cancelled),
        _ => None,
    };
    let partitions = reports
        .into_iter()
        .map(|(report, _)| report)
        .filter(|report| options.keep_linearizations || report.verdict != Verdict::Valid)
        .collect();
    LinearReport {
        verdict,
        model,
        n_ops,
        n_partitions,
        witness,
        unknown_reason,
        partitions,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

fn check_partition<M: Model>(
    model: &M,
    key: PartitionKey,
    ops: &[&Operation],
    budget: &Budget<'_>,
    options: &LinearOptions,
) -> Result<(PartitionReport, Option<Witness>), ShapeError> {
    let started = Instant::now();
    let mut instance = model.instance();
    let mut encoded = Vec::with_capacity(ops.len());
    let mut sources: Vec<&Operation> = Vec::with_capacity(ops.len());
    for &op in ops {
        if let Some(compact) = instance.encode(op)? {
            let ret = if op.outcome == Outcome::Ok {
                op.complete_index
            } else {
                None
            };
            encoded.push(PartitionOp {
                op: compact,
                call: op.invoke_index,
                ret,
            });
            sources.push(op);
        }
    }
    let result = search::search(&mut instance, &encoded, budget);
    let verdict = match result.outcome {
        SearchOutcome::Linearizable => Verdict::Valid,
        SearchOutcome::NotLinearizable => Verdict::Invalid,
        SearchOutcome::Unknown(_) => Verdict::Unknown,
    };
    let keep = options.keep_linearizations || verdict == Verdict::Invalid;
    let steps = if keep {
        replay(&mut instance, &encoded, &sources, &result.linearization)
    } else {
        Vec::new()
    };
    let witness = result.stuck.map(|stuck| Witness {
        key: key.clone(),
        op: sources[stuck as usize].id,
        description: describe_located(sources[stuck as usize]),
        prefix: result
            .linearization
            .iter()
            .map(|&at| sources[at as usize].id)
            .collect(),
        prefix_tail: steps[steps.len().saturating_sub(WITNESS_TAIL)..].to_vec(),
        state: instance.describe_state(&result.state),
    });
    let report = PartitionReport {
        key,
        n_ops: encoded.len(),
        verdict,
        unknown_reason: match result.outcome {
            SearchOutcome::Unknown(reason) => Some(reason),
            _ => None,
        },
        steps: if options.keep_linearizations {
            steps
        } else {
            Vec::new()
        },
        states_memoised: result.states_memoised,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    Ok((report, witness))
}

/// Replays a linearization through the model to name the state after each step.
fn replay<I: ModelInstance>(
    instance: &mut I,
    encoded: &[PartitionOp<I::Op>],
    sources: &[&Operation],
    linearization: &[u32],
) -> Vec<LinearStep> {
    let mut state = instance.init();
    let mut steps = Vec::with_capacity(linearization.len());
    for &at in linearization {
        state = instance
            .step(&state, &encoded[at as usize].op)
            .expect("a linearization found by the search replays step by step");
        steps.push(LinearStep {
            op: sources[at as usize].id,
            description: describe_located(sources[at as usize]),
            state: instance.describe_state(&state),
        });
    }
    steps
}

/// An operation in words, with its process and source lines: `process 3: write 4 (lines 7-9)`.
pub fn describe_located(op: &Operation) -> String {
    let lines = match op.outcome {
        Outcome::Ok | Outcome::Fail | Outcome::Info if op.complete_line > 0 => {
            format!("lines {}-{}", op.invoke_line, op.complete_line)
        }
        _ => format!("line {}", op.invoke_line),
    };
    format!("process {}: {} ({lines})", op.process, describe_op(op))
}
