//! The checker's front door: read a history file, pick a model, check it, and report.

use crate::error::InputError;
use crate::format::{self, Format};
use crate::history::Header;
use crate::linear::{self, LinearOptions, LinearReport};
use crate::models::{ModelSpec, ShapeError};
use crate::ops::{self, Operations};
use crate::verdict::Verdict;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// What to check and within which limits.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// The model, by name (`cas-register(0)`, `kv`, ...). Detected when `None`.
    pub model: Option<String>,
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
    /// The combined verdict of every checker that ran.
    pub verdict: Verdict,
    /// The model and how it was chosen.
    pub model: Option<String>,
    /// Why the model was chosen, when it was detected.
    pub model_source: String,
    /// The linearizability result, when a model applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearizability: Option<LinearReport>,
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
    let (spec, model_source) = match &options.model {
        Some(name) => (
            Some(ModelSpec::parse(name).map_err(CheckError::Usage)?),
            "given".to_string(),
        ),
        None => detect_model(format, header.as_ref(), &operations).map_err(CheckError::Usage)?,
    };
    let mut report = Report {
        file: file.to_string(),
        format,
        header: header.as_ref().and_then(|h| serde_json::to_value(h).ok()),
        n_events: operations.n_events,
        n_ops: operations.ops.len(),
        verdict: Verdict::Unknown,
        model: spec.as_ref().map(ToString::to_string),
        model_source,
        linearizability: None,
        note: None,
        elapsed_ms: 0.0,
        operations: None,
    };
    match spec {
        Some(spec) => {
            let linear_options = LinearOptions {
                timeout: options.timeout,
                max_states: options
                    .max_states
                    .unwrap_or(LinearOptions::default().max_states),
                max_memory_bytes: options
                    .max_memory_bytes
                    .unwrap_or(LinearOptions::default().max_memory_bytes),
                keep_linearizations: options.keep_linearizations,
            };
            let result = linear::check(&operations, &spec, &linear_options)
                .map_err(|error| shape_to_input(file, error))?;
            report.verdict = result.verdict;
            report.linearizability = Some(result);
        }
        None => {
            report.note = Some(
                "no linearizability model applies to these operations, and no other checker \
                 is available for them yet; pass --model to choose one"
                    .to_string(),
            );
        }
    }
    if options.keep_linearizations {
        report.operations = Some(operations);
    }
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

fn shape_to_input(file: &str, error: ShapeError) -> CheckError {
    CheckError::Input(InputError::malformed(
        file,
        error.line,
        Some(error.field),
        error.message,
    ))
}

/// Picks a model from the header, the format, or the operations themselves.
fn detect_model(
    format: Format,
    header: Option<&Header>,
    operations: &Operations,
) -> Result<(Option<ModelSpec>, String), String> {
    if let Some(name) = header
        .and_then(|h| h.extra.get("model"))
        .and_then(|m| m.as_str())
    {
        return Ok((
            Some(ModelSpec::parse(name)?),
            "named by the history's header".to_string(),
        ));
    }
    if let Some(workload) = header.and_then(|h| h.workload.as_deref()) {
        let name = match workload {
            "register" => Some("cas-register(nil)"),
            "kv" => Some("kv"),
            "set" => Some("set"),
            "mutex" => Some("mutex"),
            _ => None,
        };
        if let Some(name) = name {
            return Ok((
                Some(ModelSpec::parse(name)?),
                format!("for the {workload} workload"),
            ));
        }
    }
    let detected = match format {
        Format::JepsenLog => Some(("cas-register(nil)", "Jepsen log of a cas register")),
        Format::PorcupineKv => Some(("kv", "Porcupine kv history")),
        Format::Jsonl | Format::JepsenEdn => detect_from_operations(operations),
    };
    match detected {
        Some((name, why)) => Ok((Some(ModelSpec::parse(name)?), format!("detected: {why}"))),
        None => Ok((None, "no model detected".to_string())),
    }
}

fn detect_from_operations(operations: &Operations) -> Option<(&'static str, &'static str)> {
    if operations.ops.is_empty() {
        // Only nemesis events: no operation constrains anything, so any model accepts it.
        return Some((
            "cas-register(nil)",
            "no client operations, so nothing to contradict",
        ));
    }
    let has = |names: &[&str]| {
        operations
            .ops
            .iter()
            .any(|op| names.contains(&op.f.as_str()))
    };
    if has(&["txn"]) {
        let micro_f = operations
            .ops
            .iter()
            .filter(|op| op.f == "txn")
            .find_map(|op| {
                op.input
                    .as_array()?
                    .first()?
                    .as_array()?
                    .first()?
                    .as_str()
                    .map(str::to_string)
            });
        return match micro_f.as_deref() {
            Some("read" | "write") => Some((
                "multi-register(0)",
                "txn of reads and writes, Knossos's multi-register with registers at 0",
            )),
            _ => None,
        };
    }
    if has(&["acquire", "release"]) {
        return Some(("mutex", "acquire/release operations"));
    }
    if has(&["add"]) {
        return Some(("set", "add/read operations"));
    }
    if has(&["append", "get", "put"]) {
        return Some(("kv", "get/put/append operations"));
    }
    if has(&["read", "write", "cas"]) {
        return Some(("cas-register(nil)", "read/write/cas operations"));
    }
    None
}

impl Report {
    /// A human summary: the verdict, and the witness when there is one.
    pub fn summary(&self) -> String {
        let mut text = format!("{}: {}\n", self.file, self.verdict);
        text.push_str(&format!(
            "  {} events, {} operations, format {}",
            self.n_events,
            self.n_ops,
            self.format.name()
        ));
        if let Some(model) = &self.model {
            text.push_str(&format!(", model {model} ({})", self.model_source));
        }
        text.push('\n');
        if let Some(linear) = &self.linearizability {
            text.push_str(&format!(
                "  linearizability: {} over {} partitions, {} operations checked, {:.1} ms\n",
                linear.verdict, linear.n_partitions, linear.n_ops, linear.elapsed_ms
            ));
            if let Some(reason) = linear.unknown_reason {
                text.push_str(&format!("  unknown because: {}\n", reason.describe()));
            }
            if let Some(witness) = &linear.witness {
                if let Some(key) = &witness.key {
                    text.push_str(&format!("  in partition key {key}:\n"));
                }
                text.push_str(&format!("  cannot linearize {}\n", witness.description));
                text.push_str(&format!(
                    "  after the longest linearizable prefix of {} operations, in state {}\n",
                    witness.prefix.len(),
                    witness.state
                ));
                if !witness.prefix_tail.is_empty() {
                    text.push_str("  the prefix ends with:\n");
                    for step in &witness.prefix_tail {
                        text.push_str(&format!("    {}  => {}\n", step.description, step.state));
                    }
                }
            }
        }
        if let Some(note) = &self.note {
            text.push_str(&format!("  {note}\n"));
        }
        text
    }
}
