//! Bank: every read of all balances sums to the total (Jepsen's `jepsen.tests.bank/checker`).
//!
//! # Operations
//!
//! - `transfer` of `{"from": 1, "to": 2, "amount": 5}` (three integers), completing `ok`,
//!   `fail` or `info`. Transfers are counted by outcome; their shape is checked, nothing more.
//! - `read`, invoked with `null`, whose `ok` completion returns every balance as a map from
//!   account id to balance: `{"0": 100, "1": 95}` in JSON (object keys are strings), `{0 100,
//!   1 95}` in Jepsen's EDN (the EDN reader turns integer map keys into the same strings). A
//!   balance may be `null`. Reads that `fail`, `info` or never complete say nothing.
//! - A read whose value is not such a map, an account id that is not an integer, a balance that
//!   is neither an integer nor `null`, or a transfer without three integers is a
//!   [`ShapeError`] naming the line and field, never a verdict. Other functions are ignored.
//!
//! # What the history must say
//!
//! The header carries `"total"` (the sum every read must have), `"accounts"` (the account ids)
//! and optionally `"negative_balances": true` (allow balances below zero; default false). A
//! history without a total (Jepsen's EDN histories never carry the test map) takes it from the
//! first `ok` read, in invocation order, that has a balance for every account, and the report
//! says so. Without `"accounts"`, unexpected and missing accounts are not judged.
//!
//! # Verdict
//!
//! Every `ok` read is judged alone, as Jepsen does, and has at most one error, the first that
//! applies in Jepsen's order:
//!
//! 1. **unexpected-account**: it holds an account the header does not name;
//! 2. **missing-balance**: a balance is `null`, or an account the header names is absent;
//! 3. **wrong-total**: its balances do not sum to the total;
//! 4. **negative-balance**: a balance is below zero, unless negative balances are allowed.
//!
//! `invalid` if any read has an error, with the first bad read (in completion order, as
//! Jepsen's `:first-error`) as the witness and a count per kind; `unknown` if no read
//! completed `ok` (nothing was observed); `valid` otherwise. The cost is one pass over the
//! reads, linear in the balances they returned.

mod read;

use crate::history::Header;
use crate::models::ShapeError;
use crate::ops::{Operation, Operations, Outcome};
use crate::verdict::Verdict;
use read::{Balances, Findings};
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Instant;

/// At most this many bad reads are listed in [`BankReport::errors`]; counts are always exact.
pub const MAX_LISTED: usize = 100;

/// What a bank history must satisfy, from its header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BankOptions {
    /// The sum every read must have. Inferred from the first complete `ok` read when `None`.
    pub total: Option<i64>,
    /// The account ids. When `None`, unexpected and missing accounts are not judged.
    pub accounts: Option<BTreeSet<i64>>,
    /// Whether balances below zero are allowed (Jepsen's `:negative-balances?`).
    pub negative_balances: bool,
}

impl BankOptions {
    /// Reads `total`, `accounts` and `negative_balances` from a history header (line 1).
    /// A field of the wrong type is a [`ShapeError`]; an absent one takes its default.
    pub fn from_header(header: Option<&Header>) -> Result<BankOptions, ShapeError> {
        let mut options = BankOptions::default();
        let Some(header) = header else {
            return Ok(options);
        };
        let bad = |field: &'static str, message: String| ShapeError {
            line: 1,
            field,
            message,
        };
        match header.extra.get("total") {
            None | Some(Value::Null) => {}
            Some(total) => {
                options.total =
                    Some(total.as_i64().ok_or_else(|| {
                        bad("total", format!("expected an integer, found {total}"))
                    })?)
            }
        }
        match header.extra.get("accounts") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ids)) => {
                let mut accounts = BTreeSet::new();
                for id in ids {
                    let account = id.as_i64().ok_or_else(|| {
                        bad(
                            "accounts",
                            format!("expected integer account ids, found {id}"),
                        )
                    })?;
                    accounts.insert(account);
                }
                options.accounts = Some(accounts);
            }
            Some(other) => {
                return Err(bad(
                    "accounts",
                    format!("expected a list of integer account ids, found {other}"),
                ))
            }
        }
        match header.extra.get("negative_balances") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(allowed)) => options.negative_balances = *allowed,
            Some(other) => {
                return Err(bad(
                    "negative_balances",
                    format!("expected true or false, found {other}"),
                ))
            }
        }
        Ok(options)
    }
}

/// The error of one bad read (see the module docs for the order in which they are tried).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BankErrorKind {
    /// The read holds an account the history does not name.
    UnexpectedAccount,
    /// A balance is `null`, or a named account is absent from the read.
    MissingBalance,
    /// The balances do not sum to the total.
    WrongTotal,
    /// A balance is below zero, and negative balances are not allowed.
    NegativeBalance,
}

impl BankErrorKind {
    /// The name reports use: `wrong-total`, ...
    pub fn name(self) -> &'static str {
        match self {
            BankErrorKind::UnexpectedAccount => "unexpected-account",
            BankErrorKind::MissingBalance => "missing-balance",
            BankErrorKind::WrongTotal => "wrong-total",
            BankErrorKind::NegativeBalance => "negative-balance",
        }
    }
}

impl fmt::Display for BankErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Transfers by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TransferCounts {
    /// Transfers that took effect.
    pub ok: usize,
    /// Transfers that certainly did not.
    pub fail: usize,
    /// Transfers of unknown outcome: `info`, or still pending at the end.
    pub info: usize,
}

/// What the bank checker found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BankReport {
    /// `invalid` on any bad read; `unknown` with no `ok` read.
    pub verdict: Verdict,
    /// The total every read must sum to, when known.
    pub total: Option<i64>,
    /// Where the total came from, in words.
    pub total_source: String,
    /// The account ids, when the history names them.
    pub accounts: Option<Vec<i64>>,
    /// Whether negative balances were allowed.
    pub negative_balances_allowed: bool,
    /// `ok` reads judged.
    pub reads_checked: usize,
    /// Reads with an error.
    pub bad_reads: usize,
    /// Bad reads per error kind (`wrong-total`, ...); kinds with none are absent.
    pub error_counts: BTreeMap<String, usize>,
    /// The witness: the first bad read in completion order.
    pub first_error: Option<BadRead>,
    /// The first bad reads in completion order (at most [`MAX_LISTED`]).
    pub errors: Vec<BadRead>,
    /// Transfers by outcome.
    pub transfers: TransferCounts,
    /// What could not be judged and why, when something could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The definitions used, in words, for the report.
    pub definitions: BTreeMap<String, String>,
    /// Wall time of the check.
    pub elapsed_ms: f64,
}

/// One read with an error, as a witness.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BadRead {
    /// Its error.
    pub kind: BankErrorKind,
    /// The read (an id into [`Operations::ops`]).
    pub op: usize,
    /// The `index` of its invocation and of its completion.
    pub invoke_index: u64,
    /// The `index` of its completion.
    pub complete_index: Option<u64>,
    /// Its invocation time (ns), when the history has times.
    pub invoke_time: Option<u64>,
    /// Its completion time (ns).
    pub complete_time: Option<u64>,
    /// The source line of its completion.
    pub line: u64,
    /// The node that served it, when recorded.
    pub node: Option<String>,
    /// The balances it returned (account → balance, `null` for nil).
    pub balances: BTreeMap<i64, Option<i64>>,
    /// The sum of the balances present.
    #[serde(serialize_with = "wide_integer")]
    pub sum: i128,
    /// The total it should sum to, when known.
    pub expected_total: Option<i64>,
    /// Accounts it holds that the history does not name.
    pub unexpected_accounts: Vec<i64>,
    /// Named accounts it lacks.
    pub missing_accounts: Vec<i64>,
    /// Accounts with a nil balance.
    pub nil_accounts: Vec<i64>,
    /// Accounts with a negative balance.
    pub negative_accounts: Vec<i64>,
    /// The error in words.
    pub explanation: String,
}

/// An integer too wide for a JSON number of 64 bits is written as a string of digits.
fn wide_integer<S: Serializer>(value: &i128, serializer: S) -> Result<S::Ok, S::Error> {
    match i64::try_from(*value) {
        Ok(narrow) => serializer.serialize_i64(narrow),
        Err(_) => serializer.serialize_str(&value.to_string()),
    }
}

/// True for a history of transfers and reads of all balances: it has a transfer, every
/// client operation is a `transfer` or a `read`, and every `ok` read returned a map.
pub fn applies(history: &Operations) -> bool {
    let has_transfer = history.ops.iter().any(|op| op.f == "transfer");
    has_transfer
        && history.ops.iter().all(|op| match op.f.as_str() {
            "transfer" => true,
            "read" => op.outcome != Outcome::Ok || op.output.as_ref().is_some_and(Value::is_object),
            _ => false,
        })
}

/// Judges every `ok` read of `history` against `options` (see the module docs).
pub fn check(history: &Operations, options: &BankOptions) -> Result<BankReport, ShapeError> {
    let started = Instant::now();
    let mut transfers = TransferCounts::default();
    let mut reads: Vec<&Operation> = Vec::new();
    for op in &history.ops {
        match op.f.as_str() {
            "transfer" => {
                read::check_transfer(op)?;
                match op.outcome {
                    Outcome::Ok => transfers.ok += 1,
                    Outcome::Fail => transfers.fail += 1,
                    Outcome::Info | Outcome::Pending => transfers.info += 1,
                }
            }
            "read" if op.outcome == Outcome::Ok => reads.push(op),
            _ => {}
        }
    }
    let mut options = options.clone();
    let mut notes = Vec::new();
    let total_source = infer_total(&reads, &mut options, &mut notes)?;
    if options.accounts.is_none() {
        notes.push(
            "the history names no accounts, so unexpected and missing accounts are not judged"
                .to_string(),
        );
    }
    // Pass 2: judge every read; keep (completion index, kind, read) of the bad ones.
    let mut bad: Vec<(u64, BankErrorKind, &Operation)> = Vec::new();
    let mut error_counts: BTreeMap<String, usize> = BTreeMap::new();
    for op in &reads {
        let balances = read::parse_balances(op)?;
        let findings = Findings::of(&balances, &options);
        if let Some(kind) = findings.error(options.total, options.negative_balances) {
            *error_counts.entry(kind.name().to_string()).or_default() += 1;
            bad.push((op.complete_index.unwrap_or(u64::MAX), kind, op));
        }
    }
    bad.sort_by_key(|(complete_index, _, op)| (*complete_index, op.id));
    let errors: Vec<BadRead> = bad
        .iter()
        .take(MAX_LISTED)
        .map(|(_, kind, op)| bad_read(op, *kind, &options))
        .collect::<Result<_, _>>()?;
    let verdict = if !bad.is_empty() {
        Verdict::Invalid
    } else if reads.is_empty() {
        notes.push("no read completed ok, so nothing was observed".to_string());
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    Ok(BankReport {
        verdict,
        total: options.total,
        total_source,
        accounts: options
            .accounts
            .as_ref()
            .map(|accounts| accounts.iter().copied().collect()),
        negative_balances_allowed: options.negative_balances,
        reads_checked: reads.len(),
        bad_reads: bad.len(),
        error_counts,
        first_error: errors.first().cloned(),
        errors,
        transfers,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        definitions: definitions(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Pass 1: when the header gives no total, takes it from the first complete `ok` read.
fn infer_total(
    reads: &[&Operation],
    options: &mut BankOptions,
    notes: &mut Vec<String>,
) -> Result<String, ShapeError> {
    if options.total.is_some() {
        return Ok("the history's header".to_string());
    }
    for op in reads {
        let balances: Balances = read::parse_balances(op)?;
        let findings = Findings::of(&balances, options);
        if !findings.is_complete() {
            continue;
        }
        let Ok(total) = i64::try_from(findings.sum) else {
            continue;
        };
        options.total = Some(total);
        notes.push(format!(
            "the history gives no total, so it is inferred as {total} from the first ok read \
             with every balance (op {}, line {})",
            op.id, op.complete_line
        ));
        return Ok(format!(
            "inferred from the first ok read with every balance (op {})",
            op.id
        ));
    }
    notes.push(
        "the history gives no total and no ok read has every balance, so totals are not judged"
            .to_string(),
    );
    Ok("none: not in the history and no read to infer it from".to_string())
}

fn bad_read(
    op: &Operation,
    kind: BankErrorKind,
    options: &BankOptions,
) -> Result<BadRead, ShapeError> {
    let balances = read::parse_balances(op)?;
    let findings = Findings::of(&balances, options);
    let list = |accounts: &[i64]| {
        accounts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let detail = match kind {
        BankErrorKind::UnexpectedAccount => {
            format!(
                "holds accounts the history does not name: {}",
                list(&findings.unexpected)
            )
        }
        BankErrorKind::MissingBalance => {
            let mut parts = Vec::new();
            if !findings.nil.is_empty() {
                parts.push(format!("nil balances for accounts {}", list(&findings.nil)));
            }
            if !findings.missing.is_empty() {
                parts.push(format!(
                    "no balance for accounts {}",
                    list(&findings.missing)
                ));
            }
            parts.join(" and ")
        }
        BankErrorKind::WrongTotal => format!(
            "its balances sum to {}, not to the total {}",
            findings.sum,
            options.total.unwrap_or_default()
        ),
        BankErrorKind::NegativeBalance => format!(
            "negative balances for accounts {}",
            list(&findings.negative)
        ),
    };
    let at = match (op.invoke_time, op.complete_time) {
        (Some(invoked), Some(completed)) => format!(
            ", invoked at {} ms and completed at {} ms",
            crate::timing::ms(invoked),
            crate::timing::ms(completed)
        ),
        _ => String::new(),
    };
    Ok(BadRead {
        kind,
        op: op.id,
        invoke_index: op.invoke_index,
        complete_index: op.complete_index,
        invoke_time: op.invoke_time,
        complete_time: op.complete_time,
        line: op.complete_line,
        node: op.node.clone(),
        explanation: format!(
            "{kind}: read op {} (line {}{at}): {detail}",
            op.id, op.complete_line
        ),
        balances,
        sum: findings.sum,
        expected_total: options.total,
        unexpected_accounts: findings.unexpected,
        missing_accounts: findings.missing,
        nil_accounts: findings.nil,
        negative_accounts: findings.negative,
    })
}

/// The definitions in words, as the report carries them.
pub fn definitions() -> BTreeMap<String, String> {
    let pairs = [
        ("read", "an ok read of every balance, judged alone; reads that fail, info or never complete say nothing"),
        ("total", "the sum every read must have: the header's total, or else the sum of the first ok read (in invocation order) with every balance"),
        ("unexpected-account", "the read holds an account the header's accounts do not name; judged first"),
        ("missing-balance", "a balance is null, or an account the header names is absent; judged second"),
        ("wrong-total", "the balances present do not sum to the total; judged third"),
        ("negative-balance", "a balance is below zero and the header does not allow negative balances; judged last, so a read has at most one error, as in Jepsen's bank checker"),
        ("first error", "the bad read that completed first"),
    ];
    pairs
        .into_iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect()
}
