//! The checker's front door: read a history file, pick the checkers and the model, run them, and report.

use crate::bank::{self, BankOptions, BankReport};
use crate::cache::{self, CacheOptions, CacheReport};
use crate::elle::{self, Consistency, ElleOptions, ElleReport};
use crate::error::InputError;
use crate::format::{self, Format};
use crate::history::Header;
use crate::linear::{self, LinearOptions, LinearReport};
use crate::models::{ModelSpec, ShapeError};
use crate::ops::{self, Operations};
use crate::select::{self, CheckerKind};
use crate::sets::{self, SetOptions, SetReport};
use crate::timing::{self, TimingReport};
use crate::verdict::Verdict;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// What to check and within which limits.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// The checkers to run. Chosen from the history when `None`.
    pub checkers: Option<Vec<CheckerKind>>,
    /// The model, by name (`cas-register(0)`, `kv`, ...). Detected when `None`.
    pub model: Option<String>,
    /// The consistency model for the isolation checker (`read-committed` when `None`).
    pub consistency: Option<String>,
    /// The input format. Detected from the content when `None`.
    pub format: Option<Format>,
    /// Give up after this long; the verdict is then `unknown`.
    pub timeout: Option<Duration>,
    /// Give up when one partition memoises more configurations than this (default 50 M).
    pub max_states: Option<u64>,
    /// Give up when the search's memo tables exceed this many bytes (default 4 GiB).
    pub max_memory_bytes: Option<u64>,
    /// Keep every partition's linearization, for the linearization view.
    pub keep_linearizations: bool,
    /// The cache checker's invalidation bound; overrides the header's `invalidation_bound_ms`
    /// (default 100 ms).
    pub invalidation_bound: Option<Duration>,
}

/// A history that could not be checked: unreadable input or a usage error. Exit code 3.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The input is unreadable or malformed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The options make no sense (an unknown model name, ...).
    #[error("{0}")]
    Usage(String),
}

/// Everything `helios check` says about one history.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The file checked.
    pub file: String,
    /// Its format.
    pub format: Format,
    /// The header, when the history has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<serde_json::Value>,
    /// Events read.
    pub n_events: u64,
    /// Client operations (invocations).
    pub n_ops: usize,
    /// The combined verdict of every checker that ran: the worst wins.
    pub verdict: Verdict,
    /// The checkers that ran.
    pub checkers: Vec<CheckerKind>,
    /// Why those checkers.
    pub checkers_source: String,
    /// The linearizability model, when that checker ran.
    pub model: Option<String>,
    /// Why the model was chosen.
    pub model_source: String,
    /// The linearizability result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearizability: Option<LinearReport>,
    /// The isolation result (Elle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<ElleReport>,
    /// The lost-writes result (set-full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_writes: Option<SetReport>,
    /// The bank result (every read sums to the total).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank: Option<BankReport>,
    /// The cache result (invalidation within the bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheReport>,
    /// Latencies, throughput, recovery per fault, invalidation latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<TimingReport>,
    /// Why the verdict is `unknown`, in words, when no checker could decide.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Wall time from opening the file to the verdict.
    pub elapsed_ms: f64,
    /// The operations, kept only for the linearization view.
    #[serde(skip)]
    pub operations: Option<Operations>,
}

/// Reads, pairs and checks the history at `path`.
pub fn check_file(path: &Path, options: &CheckOptions) -> Result<Report, CheckError> {
    let started = Instant::now();
    let file = path.display().to_string();
    let source = format::open(path, options.format)?;
    let header = source.header.clone();
    let operations = ops::pair(source.events, &file)?;
    check_operations(&file, source.format, header, operations, options, started)
}

/// Checks operations that were already read; `file` names them in messages.
pub fn check_operations(
    file: &str,
    format: Format,
    header: Option<Header>,
    operations: Operations,
    options: &CheckOptions,
    started: Instant,
) -> Result<Report, CheckError> {
    let (checkers, checkers_source) = match &options.checkers {
        Some(kinds) => (kinds.clone(), "given".to_string()),
        None => select::checkers(header.as_ref(), &operations),
    };
    let mut report = Report {
        file: file.to_string(),
        format,
        header: header.as_ref().and_then(|h| serde_json::to_value(h).ok()),
        n_events: operations.n_events,
        n_ops: operations.ops.len(),
        verdict: Verdict::Valid,
        checkers: checkers.clone(),
        checkers_source,
        model: None,
        model_source: String::new(),
        linearizability: None,
        isolation: None,
        lost_writes: None,
        bank: None,
        cache: None,
        timing: None,
        note: None,
        elapsed_ms: 0.0,
        operations: None,
    };
    let shape = |error: ShapeError| shape_to_input(file, error);
    for kind in &checkers {
        match kind {
            CheckerKind::Linearizable => {
                let result =
                    check_linearizable(format, header.as_ref(), &operations, options, &mut report)?;
                report.linearizability = result;
            }
            CheckerKind::Isolation => {
                let consistency = match &options.consistency {
                    Some(name) => Consistency::parse(name).map_err(CheckError::Usage)?,
                    None => Consistency::ReadCommitted,
                };
                let elle_options = ElleOptions {
                    consistency,
                    timeout: options.timeout,
                    ..ElleOptions::default()
                };
                report.isolation = Some(elle::check(&operations, &elle_options).map_err(shape)?);
            }
            CheckerKind::LostWrites => {
                report.lost_writes =
                    Some(sets::check(&operations, &SetOptions::default()).map_err(shape)?);
            }
            CheckerKind::Bank => {
                let bank_options = BankOptions::from_header(header.as_ref()).map_err(shape)?;
                report.bank = Some(bank::check(&operations, &bank_options).map_err(shape)?);
            }
            CheckerKind::Cache => {
                let cache_options =
                    CacheOptions::resolve(options.invalidation_bound, header.as_ref())
                        .map_err(shape)?;
                report.cache = Some(cache::check(&operations, &cache_options).map_err(shape)?);
            }
            CheckerKind::Timing => report.timing = Some(timing::analyze(&operations)),
        }
    }
    let verdicts = [
        report.linearizability.as_ref().map(|r| r.verdict),
        report.isolation.as_ref().map(|r| r.verdict),
        report.lost_writes.as_ref().map(|r| r.verdict),
        report.bank.as_ref().map(|r| r.verdict),
        report.cache.as_ref().map(|r| r.verdict),
    ];
    let decided: Vec<Verdict> = verdicts.into_iter().flatten().collect();
    report.verdict = decided
        .iter()
        .copied()
        .fold(Verdict::Valid, Verdict::combine);
    if decided.is_empty() {
        report.verdict = Verdict::Unknown;
        report
            .note
            .get_or_insert_with(|| "no checker that gives a verdict ran".to_string());
    }
    if options.keep_linearizations {
        report.operations = Some(operations);
    }
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

fn check_linearizable(
    format: Format,
    header: Option<&Header>,
    operations: &Operations,
    options: &CheckOptions,
    report: &mut Report,
) -> Result<Option<LinearReport>, CheckError> {
    let (spec, model_source) = match &options.model {
        Some(name) => (
            Some(ModelSpec::parse(name).map_err(CheckError::Usage)?),
            "given".to_string(),
        ),
        None => select::model(format, header, operations).map_err(CheckError::Usage)?,
    };
    report.model = spec.as_ref().map(ToString::to_string);
    report.model_source = model_source;
    let Some(spec) = spec else {
        report.note = Some(
            "no linearizability model applies to these operations; pass --model to choose one, \
             or --checker to pick another checker"
                .to_string(),
        );
        return Ok(None);
    };
    let defaults = LinearOptions::default();
    let linear_options = LinearOptions {
        timeout: options.timeout,
        max_states: options.max_states.unwrap_or(defaults.max_states),
        max_memory_bytes: options
            .max_memory_bytes
            .unwrap_or(defaults.max_memory_bytes),
        keep_linearizations: options.keep_linearizations,
        pruning: defaults.pruning,
    };
    linear::check(operations, &spec, &linear_options)
        .map(Some)
        .map_err(|error| shape_to_input(&report.file, error))
}

fn shape_to_input(file: &str, error: ShapeError) -> CheckError {
    CheckError::Input(InputError::malformed(
        file,
        error.line,
        Some(error.field),
        error.message,
    ))
}
