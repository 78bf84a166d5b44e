//! Which checkers and which model apply to a history: given, named by its header, or detected.

use crate::bank;
use crate::elle::{self, TxnWorkload};
use crate::format::Format;
use crate::history::Header;
use crate::models::ModelSpec;
use crate::ops::Operations;
use crate::sets;
use serde::Serialize;
use std::fmt;

/// One of the checkers `helios check` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckerKind {
    /// Linearizability against a model (WGL search).
    Linearizable,
    /// Transactional isolation, Elle's way (read committed by default).
    Isolation,
    /// Lost, stale and duplicated elements of sets (Jepsen's set-full).
    LostWrites,
    /// Every read of all balances sums to the total (Jepsen's bank).
    Bank,
    /// Every compute node stops serving older values within the invalidation bound.
    Cache,
    /// Latencies, throughput, recovery per fault, invalidation latency. No verdict.
    Timing,
}

/// The names accepted by [`CheckerKind::parse`].
pub const CHECKER_NAMES: &str =
    "linearizable, read-committed (or isolation), lost-writes, bank, cache, timing";

impl CheckerKind {
    /// Parses a checker name as the CLI spells it.
    pub fn parse(name: &str) -> Result<CheckerKind, String> {
        match name.trim() {
            "linearizable" | "linearizability" => Ok(CheckerKind::Linearizable),
            "read-committed" | "isolation" | "elle" => Ok(CheckerKind::Isolation),
            "lost-writes" | "set-full" | "set" => Ok(CheckerKind::LostWrites),
            "bank" => Ok(CheckerKind::Bank),
            "cache" => Ok(CheckerKind::Cache),
            "timing" => Ok(CheckerKind::Timing),
            other => Err(format!(
                "unknown checker {other:?}; expected one of: {CHECKER_NAMES}"
            )),
        }
    }

    /// Parses a comma-separated list of checker names.
    pub fn parse_list(names: &str) -> Result<Vec<CheckerKind>, String> {
        let mut kinds: Vec<CheckerKind> = names
            .split(',')
            .filter(|name| !name.trim().is_empty())
            .map(CheckerKind::parse)
            .collect::<Result<_, _>>()?;
        kinds.sort();
        kinds.dedup();
        if kinds.is_empty() {
            return Err(format!(
                "no checker named; expected some of: {CHECKER_NAMES}"
            ));
        }
        Ok(kinds)
    }

    /// Whether this checker gives a verdict (timing only measures).
    pub fn has_verdict(self) -> bool {
        self != CheckerKind::Timing
    }
}

impl fmt::Display for CheckerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckerKind::Linearizable => "linearizable",
            CheckerKind::Isolation => "isolation",
            CheckerKind::LostWrites => "lost-writes",
            CheckerKind::Bank => "bank",
            CheckerKind::Cache => "cache",
            CheckerKind::Timing => "timing",
        })
    }
}

/// The checkers for a history, and why they were chosen.
///
/// A header's `workload` decides: `set` → lost writes; `list-append`, `rw-register` →
/// isolation; `bank` → bank; `cache` → linearizability (a register per key) and cache; any
/// other → linearizability. Without a header, the operations decide: transactions Elle reads →
/// isolation; adds and whole-set reads → lost writes; only transfers and reads of maps → bank;
/// else linearizability. A header that names a `model` adds linearizability, and timing runs
/// whenever operations have times.
pub fn checkers(header: Option<&Header>, operations: &Operations) -> (Vec<CheckerKind>, String) {
    // Timing needs real times: some operation must have taken a measurable while.
    let timed = operations
        .ops
        .iter()
        .any(|op| matches!((op.invoke_time, op.complete_time), (Some(a), Some(b)) if b > a));
    let mut kinds = Vec::new();
    let why;
    if let Some(workload) = header.and_then(|h| h.workload.as_deref()) {
        match workload {
            "set" => kinds.push(CheckerKind::LostWrites),
            "list-append" | "rw-register" => kinds.push(CheckerKind::Isolation),
            "bank" => kinds.push(CheckerKind::Bank),
            // A register per key, read through several compute nodes: linearizable per key,
            // and every node invalidated within the bound.
            "cache" => kinds.extend([CheckerKind::Linearizable, CheckerKind::Cache]),
            _ => kinds.push(CheckerKind::Linearizable),
        }
        why = format!("for the {workload} workload");
    } else if is_elle_history(operations) {
        kinds.push(CheckerKind::Isolation);
        why = "detected: transactions of appends or of r/w micro-operations".to_string();
    } else if sets::applies(operations) {
        kinds.push(CheckerKind::LostWrites);
        why = "detected: adds and reads of whole sets".to_string();
    } else if bank::applies(operations) {
        kinds.push(CheckerKind::Bank);
        why = "detected: transfers and reads of every balance".to_string();
    } else {
        kinds.push(CheckerKind::Linearizable);
        why = "detected: single-object operations".to_string();
    }
    // A header that names a linearizability model asks for that check too.
    if header.is_some_and(|h| h.extra.contains_key("model"))
        && !kinds.contains(&CheckerKind::Linearizable)
    {
        kinds.insert(0, CheckerKind::Linearizable);
    }
    if timed {
        kinds.push(CheckerKind::Timing);
    }
    (kinds, why)
}

/// Transactions Elle checks: list-append, or rw-register with `r`/`w` micro-operations. Knossos's
/// multi-register transactions (`read`/`write`) are judged for linearizability instead.
fn is_elle_history(operations: &Operations) -> bool {
    match elle::detect(operations) {
        Some(TxnWorkload::ListAppend) => true,
        Some(TxnWorkload::RwRegister) => {
            first_micro_op(operations).is_some_and(|f| f == "r" || f == "w")
        }
        None => false,
    }
}

fn first_micro_op(operations: &Operations) -> Option<String> {
    operations
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
        })
}

/// Picks a linearizability model from the header, the format, or the operations themselves.
pub fn model(
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
            "register" | "cache" => Some("cas-register(nil)"),
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
        Format::Jsonl | Format::JepsenEdn => model_from_operations(operations),
    };
    match detected {
        Some((name, why)) => Ok((Some(ModelSpec::parse(name)?), format!("detected: {why}"))),
        None => Ok((None, "no model detected".to_string())),
    }
}

fn model_from_operations(operations: &Operations) -> Option<(&'static str, &'static str)> {
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
        return match first_micro_op(operations).as_deref() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_lists_parse_sorted_and_deduplicated() {
        assert_eq!(
            CheckerKind::parse_list("timing,linearizable,timing").unwrap(),
            vec![CheckerKind::Linearizable, CheckerKind::Timing]
        );
        assert_eq!(
            CheckerKind::parse_list("read-committed").unwrap(),
            vec![CheckerKind::Isolation]
        );
        assert_eq!(
            CheckerKind::parse_list("timing,cache,bank").unwrap(),
            vec![CheckerKind::Bank, CheckerKind::Cache, CheckerKind::Timing]
        );
        assert!(CheckerKind::parse_list("speed")
            .unwrap_err()
            .contains("unknown checker"));
        assert!(CheckerKind::parse_list(",")
            .unwrap_err()
            .contains("no checker named"));
    }
}
