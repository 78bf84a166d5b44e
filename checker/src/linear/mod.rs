//! Linearizability: splits a history into partitions (P-compositionality), searches each in
//! parallel with [`search::search`], and assembles the verdict and its witness.

pub mod search;

use crate::models::{describe_op, Model, ModelInstance, ModelSpec, PartitionKey, ShapeError};
use crate::ops::{Operation, Operations, Outcome};
use crate::verdict::Verdict;
use rayon::prelude::*;
use search::{Finished, PartitionOp, Progress, Pruning, Search, SearchOutcome, UnknownReason};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Limits and switches for a linearizability check.
#[derive(Clone, Debug)]
pub struct LinearOptions {
    /// Give up (verdict `unknown`) after this long.
    pub timeout: Option<Duration>,
    /// Give up when one partition memoises more configurations than this.
    pub max_states: u64,
    /// Give up when the searches hold more bytes than this, all partitions together: memo
    /// tables, model tables and the partitions' copies of their operations.
    pub max_memory_bytes: u64,
    /// Keep every partition's linearization and the state after each step (for `--html`).
    pub keep_linearizations: bool,
    /// The search's pruning rules.
    pub pruning: Pruning,
}

impl Default for LinearOptions {
    fn default() -> Self {
        LinearOptions {
            timeout: None,
            max_states: 50_000_000,
            max_memory_bytes: 4 << 30,
            keep_linearizations: false,
            pruning: Pruning::default(),
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

/// Checks `history` against `model`, partition by partition, in parallel rounds.
///
/// Every partition makes progress from the start: in round `r` each undecided partition
/// searches `FIRST_ROUND_STEPS * 2^r` more steps (on as many threads as rayon has), so that
/// one cheap invalid partition ends the check however hard the others are. Between rounds
/// the memory cap is shared out: each undecided partition may grow by an equal share of what
/// the others leave free.
///
/// The witness is deterministic: the search is, step for step, so the partitions decided by
/// the end of each round do not depend on threads or timing. The check stops at the end of
/// the first round in which some partition is invalid, and reports the invalid partition
/// with the smallest key among them. (Only a time budget that runs out within that round can
/// change which invalid partitions were decided by then.)
pub fn check_model<M: Model>(
    history: &Operations,
    model: &M,
    options: &LinearOptions,
) -> Result<LinearReport, ShapeError> {
    let started = Instant::now();
    let deadline = options.timeout.map(|timeout| started + timeout);
    let mut groups: BTreeMap<PartitionKey, Vec<&Operation>> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.outcome != Outcome::Fail) {
        groups.entry(model.partition(op)).or_default().push(op);
    }
    let mut jobs = Vec::with_capacity(groups.len());
    let mut first_error: Option<ShapeError> = None;
    for (key, ops) in groups {
        match Job::new(model, key, ops, options) {
            Ok(job) => jobs.push(job),
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
    let mut round_steps = FIRST_ROUND_STEPS;
    let mut ending: Option<UnknownReason> = None;
    loop {
        let held: u64 = jobs.iter().map(Job::footprint_bytes).sum();
        let active: Vec<&mut Job<'_, M::Instance>> =
            jobs.iter_mut().filter(|job| job.search.is_some()).collect();
        if active.is_empty() {
            break;
        }
        let share = options.max_memory_bytes.saturating_sub(held) / active.len() as u64;
        active.into_par_iter().for_each(|job| {
            let allowance = job.footprint_bytes() + share;
            job.advance(round_steps, allowance, deadline, options);
        });
        if jobs
            .iter()
            .any(|job| job.verdict() == Some(Verdict::Invalid))
        {
            ending = Some(UnknownReason::Cancelled);
            break;
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            ending = Some(UnknownReason::Timeout);
            break;
        }
        round_steps = round_steps.saturating_mul(2);
    }
    // The first invalid partition in key order gives the witness, so that reports are stable.
    let witness_key = jobs
        .iter()
        .find(|job| job.verdict() == Some(Verdict::Invalid))
        .map(|job| job.key.clone());
    let reports = jobs
        .into_iter()
        .map(|job| {
            let refine = witness_key.as_ref() == Some(&job.key);
            job.conclude(ending.unwrap_or(UnknownReason::Cancelled), refine, options)
        })
        .collect();
    Ok(assemble(model.name(), reports, options, started))
}

/// The witness search's step budget: this many times the steps that decided the partition,
/// within the bounds below.
const WITNESS_STEPS_FACTOR: u64 = 8;
const WITNESS_STEPS_MIN: u64 = 1 << 16;
const WITNESS_STEPS_MAX: u64 = 1 << 21;
/// Steps each undecided partition searches in the first round; each round doubles it.
const FIRST_ROUND_STEPS: u64 = 1 << 12;
/// Steps between two looks at the clock within a round.
const STEPS_BETWEEN_CLOCK_READS: u64 = 1 << 14;

/// One partition under check: its operations, its model instance and its search.
struct Job<'h, I: ModelInstance> {
    key: PartitionKey,
    instance: I,
    sources: Vec<&'h Operation>,
    /// The search, until it ends or gives up.
    search: Option<Search<I>>,
    /// Why the search gave up, when it did.
    gave_up: Option<UnknownReason>,
    /// The allowance at which the search last ran out of memory.
    starved_at: Option<u64>,
    /// The outcome, once concluded by the search itself.
    finished: Option<Finished<I>>,
    elapsed: Duration,
}

impl<'h, I: ModelInstance> Job<'h, I> {
    fn new<M: Model<Instance = I>>(
        model: &M,
        key: PartitionKey,
        ops: Vec<&'h Operation>,
        options: &LinearOptions,
    ) -> Result<Self, ShapeError> {
        let started = Instant::now();
        let mut instance = model.instance();
        let mut encoded = Vec::with_capacity(ops.len());
        let mut sources: Vec<&Operation> = Vec::with_capacity(ops.len());
        for op in ops {
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
        let search = Search::new(&mut instance, encoded, options.pruning);
        Ok(Job {
            key,
            instance,
            sources,
            search: Some(search),
            gave_up: None,
            starved_at: None,
            finished: None,
            elapsed: started.elapsed(),
        })
    }

    /// Bytes held for this partition: the search, the model's tables and the copies of the
    /// operations. Deterministic: it depends only on the steps taken.
    fn footprint_bytes(&self) -> u64 {
        let search = self.search.as_ref().map_or(0, Search::footprint_bytes);
        search + self.instance.heap_bytes() + self.sources.capacity() as u64 * 8
    }

    fn verdict(&self) -> Option<Verdict> {
        self.finished
            .as_ref()
            .map(|finished| verdict_of(finished.result.outcome))
    }

    /// Runs the search for `steps` more steps within `allowance` bytes, or until it ends,
    /// gives up, or the deadline passes.
    fn advance(
        &mut self,
        steps: u64,
        allowance: u64,
        deadline: Option<Instant>,
        options: &LinearOptions,
    ) {
        if self.starved_at.is_some_and(|starved| allowance <= starved) {
            // Nothing was freed since it last ran out: it cannot go on.
            self.give_up(UnknownReason::MemoryCap);
            return;
        }
        let started = Instant::now();
        let mut left = steps;
        while left > 0 && self.search.is_some() {
            let chunk = left.min(STEPS_BETWEEN_CLOCK_READS);
            left -= chunk;
            let fixed =
                self.footprint_bytes() - self.search.as_ref().map_or(0, Search::footprint_bytes);
            let search = self.search.as_mut().expect("checked above");
            let own = allowance.saturating_sub(fixed);
            match search.run(&mut self.instance, chunk, own) {
                Progress::Done(_) => {
                    let search = self.search.take().expect("checked above");
                    self.finished =
                        Some(search.finish(&mut self.instance, UnknownReason::Cancelled));
                }
                Progress::OutOfMemory => {
                    self.starved_at = Some(allowance);
                    break;
                }
                Progress::Paused => {
                    if search.states_memoised() > options.max_states {
                        self.give_up(UnknownReason::StateBudget);
                    } else if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        break;
                    }
                }
            }
        }
        self.elapsed += started.elapsed();
    }

    fn give_up(&mut self, reason: UnknownReason) {
        if let Some(search) = self.search.take() {
            self.gave_up = Some(reason);
            self.finished = Some(search.finish(&mut self.instance, reason));
        }
    }

    /// The partition's report and witness; a search still going is ended for `reason`.
    /// With `refine`, an invalid partition's witness is lengthened by
    /// [`search::longest_failure`] within a step budget.
    fn conclude(
        mut self,
        reason: UnknownReason,
        refine: bool,
        options: &LinearOptions,
    ) -> (PartitionReport, Option<Witness>) {
        if self.search.is_some() {
            let reason = if self.starved_at.is_some() {
                UnknownReason::MemoryCap
            } else {
                reason
            };
            self.give_up(reason);
        }
        let Finished {
            mut result,
            ops: encoded,
        } = self.finished.take().expect("every search is finished");
        let verdict = verdict_of(result.outcome);
        if refine && verdict == Verdict::Invalid && options.pruning.doomed_states {
            let started = Instant::now();
            let budget = result
                .steps
                .saturating_mul(WITNESS_STEPS_FACTOR)
                .clamp(WITNESS_STEPS_MIN, WITNESS_STEPS_MAX);
            let longer =
                search::longest_failure(&mut self.instance, &encoded, options.pruning, budget);
            if let Some((prefix, state, stuck)) = longer {
                if prefix.len() > result.linearization.len() {
                    result.linearization = prefix;
                    result.state = state;
                    result.stuck = Some(stuck);
                }
            }
            self.elapsed += started.elapsed();
        }
        let keep = options.keep_linearizations || verdict == Verdict::Invalid;
        let steps = if keep {
            replay(
                &mut self.instance,
                &encoded,
                &self.sources,
                &result.linearization,
            )
        } else {
            Vec::new()
        };
        let sources = &self.sources;
        let witness = result.stuck.map(|stuck| Witness {
            key: self.key.clone(),
            op: sources[stuck as usize].id,
            description: describe_located(sources[stuck as usize]),
            prefix: result
                .linearization
                .iter()
                .map(|&at| sources[at as usize].id)
                .collect(),
            prefix_tail: steps[steps.len().saturating_sub(WITNESS_TAIL)..].to_vec(),
            state: self.instance.describe_state(&result.state),
        });
        let report = PartitionReport {
            key: self.key,
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
            elapsed_ms: self.elapsed.as_secs_f64() * 1e3,
        };
        (report, witness)
    }
}

fn verdict_of(outcome: SearchOutcome) -> Verdict {
    match outcome {
        SearchOutcome::Linearizable => Verdict::Valid,
        SearchOutcome::NotLinearizable => Verdict::Invalid,
        SearchOutcome::Unknown(_) => Verdict::Unknown,
    }
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
