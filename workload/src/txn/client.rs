//! Runs one compute-workload operation through a compute node, in SQL, and records its
//! invocation and completion. Every operation runs on any [`SqlNode`] (an in-process compute
//! node or a compute node process) through the same code, so both record the same histories.
//!
//! Outcomes follow Jepsen. A transaction that failed before its commit began never committed:
//! only its coordinator can record a commit, and its writes are intents that a rollback, or
//! recovery from the metadata service (no decision recorded: abort), removes (between
//! processes, a writer blocked on them for a second records the abort), so it is `fail`; so is
//! a transaction that could not begin. A commit that ended in an error whose outcome is
//! unknown (a coordinator cut off between its decision and its delivery, a timeout) is `info`.
//! A read-only operation has no effect, so any error makes it `fail`.
//!
//! The SQL: lists are text `"1,2,3,"` grown with `v = v || '4,'` where the row is stored, under
//! the row's intent, so concurrent appends are never lost. Bank transactions lock their accounts
//! with `SELECT ... FOR UPDATE` in ascending order (no lock-order cycles), and a transfer that
//! would overdraw is rolled back, so balances never go negative. A read of all balances also
//! locks every account: under read committed, a plain read could see one half of a transfer
//! that is committing, and the bank check would rightly call that a broken total. It then
//! commits rather than rolls back: a transfer blocked by the read's locks for over a second
//! presumes the read abandoned, records an abort for it and takes its locks, and the balances
//! it then changes may already have been read. The read's commit records its decision by
//! compare-and-set, so it is `ok` only if no such abort came first; otherwise it is `fail`.
//! (Rolled back, such a read was once `ok` with a sum of 498, under load.)

use std::time::Duration;

use helios_cluster::sql::SqlValue;
use helios_cluster::QueryResult;
use serde_json::{json, Value};

use super::config::TxnWorkload;
use super::generator::{MicroOp, TxnOp};
use super::sql_node::{SqlNode, SqlTransaction, StatementError};
use crate::history::{EventDraft, EventType, Function, Process};
use crate::recorder::Recorder;

/// The list-append workload's table: `id` BIGINT, `v` TEXT.
pub const LISTS_TABLE: &str = "lists";
/// The rw-register workload's table: `id` BIGINT, `v` BIGINT.
pub const REGISTERS_TABLE: &str = "registers";
/// The bank workload's table: `id` BIGINT, `balance` BIGINT.
pub const ACCOUNTS_TABLE: &str = "accounts";
/// The cache workload's table: `id` BIGINT, `v` BIGINT.
pub const CACHE_TABLE: &str = "cache";

/// The table of `workload` (keyed by `id`).
pub fn table_of(workload: TxnWorkload) -> &'static str {
    match workload {
        TxnWorkload::ListAppend => LISTS_TABLE,
        TxnWorkload::RwRegister => REGISTERS_TABLE,
        TxnWorkload::Bank => ACCOUNTS_TABLE,
        TxnWorkload::Cache => CACHE_TABLE,
    }
}

/// How one operation completed, before it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnCompletion {
    /// Ok, fail or info.
    pub event_type: EventType,
    /// The completion's value.
    pub value: Value,
    /// The error text of a fail or info.
    pub error: Option<String>,
}

impl TxnCompletion {
    fn ok(value: Value) -> Self {
        TxnCompletion {
            event_type: EventType::Ok,
            value,
            error: None,
        }
    }

    fn failed(event_type: EventType, value: Value, error: String) -> Self {
        TxnCompletion {
            event_type,
            value,
            error: Some(error),
        }
    }
}

/// Why an operation did not complete `ok`.
#[derive(Debug)]
enum OpError {
    /// Nothing took effect.
    Failed(String),
    /// It may have taken effect.
    Unknown(String),
}

/// The function and the invocation value of `op`, as the history writes them.
pub fn invocation(op: &TxnOp) -> (Function, Option<String>, Value) {
    match op {
        TxnOp::ListAppend(ops) | TxnOp::RwRegister(ops) => (
            Function::Txn,
            None,
            Value::Array(ops.iter().map(|op| op.to_json(&Value::Null)).collect()),
        ),
        TxnOp::Transfer { from, to, amount } => (
            Function::Transfer,
            None,
            json!({"from": from, "to": to, "amount": amount}),
        ),
        TxnOp::ReadBalances => (Function::Read, None, Value::Null),
        TxnOp::CacheWrite { key, value } => (Function::Write, Some(key.to_string()), json!(value)),
        TxnOp::CacheRead { key } => (Function::Read, Some(key.to_string()), Value::Null),
    }
}

/// Records the invocation of `op` by `process`, runs it on `node` within `op_timeout`, and
/// records its completion. `accounts` is the bank's account count.
pub async fn execute_txn_op<N: SqlNode>(
    recorder: &Recorder,
    node: &N,
    process: Process,
    op: &TxnOp,
    op_timeout: Duration,
    accounts: i64,
) -> TxnCompletion {
    let name = node.name();
    record_op(
        recorder,
        &name,
        process,
        op,
        op_timeout,
        run(node, op, accounts),
    )
    .await
}

/// Records the invocation of cache operation `op` (a [`TxnOp::CacheWrite`] or
/// [`TxnOp::CacheRead`]) by `process`, runs it on `node` within `op_timeout`, and records its
/// completion: the same path, SQL and history for an in-process node and a node process.
pub async fn execute_cache_op<N: SqlNode>(
    recorder: &Recorder,
    node: &N,
    process: Process,
    op: &TxnOp,
    op_timeout: Duration,
) -> TxnCompletion {
    let name = node.name();
    record_op(recorder, &name, process, op, op_timeout, cache_op(node, op)).await
}

/// Records the invocation, awaits `result` within `op_timeout`, and records the completion,
/// naming `node` when it is `ok`.
async fn record_op(
    recorder: &Recorder,
    node: &str,
    process: Process,
    op: &TxnOp,
    op_timeout: Duration,
    result: impl std::future::Future<Output = Result<Value, OpError>>,
) -> TxnCompletion {
    let (f, key, invoke_value) = invocation(op);
    recorder.record(EventDraft {
        event_type: EventType::Invoke,
        process,
        f,
        key: key.clone(),
        value: invoke_value.clone(),
        node: None,
        error: None,
    });
    let read_only = match op {
        TxnOp::ListAppend(ops) | TxnOp::RwRegister(ops) => {
            ops.iter().all(|op| matches!(op, MicroOp::Read(_)))
        }
        TxnOp::ReadBalances | TxnOp::CacheRead { .. } => true,
        TxnOp::Transfer { .. } | TxnOp::CacheWrite { .. } => false,
    };
    let result = tokio::time::timeout(op_timeout, result).await;
    let completion = match result {
        Ok(Ok(value)) => TxnCompletion::ok(value),
        Ok(Err(OpError::Failed(error))) => {
            TxnCompletion::failed(EventType::Fail, invoke_value, error)
        }
        Ok(Err(OpError::Unknown(error))) if read_only => {
            TxnCompletion::failed(EventType::Fail, invoke_value, error)
        }
        Ok(Err(OpError::Unknown(error))) => {
            TxnCompletion::failed(EventType::Info, invoke_value, error)
        }
        Err(_) => {
            let event_type = if read_only {
                EventType::Fail
            } else {
                EventType::Info
            };
            let error = format!("timed out after {} ms", op_timeout.as_millis());
            TxnCompletion::failed(event_type, invoke_value, error)
        }
    };
    recorder.record(EventDraft {
        event_type: completion.event_type,
        process,
        f,
        key,
        value: completion.value.clone(),
        node: (completion.event_type == EventType::Ok).then(|| node.to_owned()),
        error: completion.error.clone(),
    });
    completion
}

async fn run<N: SqlNode>(node: &N, op: &TxnOp, accounts: i64) -> Result<Value, OpError> {
    match op {
        TxnOp::ListAppend(ops) | TxnOp::RwRegister(ops) => {
            let table = if matches!(op, TxnOp::ListAppend(_)) {
                LISTS_TABLE
            } else {
                REGISTERS_TABLE
            };
            let tx = begin(node).await?;
            let result = micro_ops(&tx, table, ops).await;
            let writes = ops.iter().any(|op| !matches!(op, MicroOp::Read(_)));
            finish(tx, result, writes).await
        }
        TxnOp::Transfer { from, to, amount } => {
            let tx = begin(node).await?;
            let result = transfer(&tx, *from, *to, *amount).await;
            finish(tx, result, true).await
        }
        TxnOp::ReadBalances => {
            let tx = begin(node).await?;
            let result = read_balances(&tx, accounts).await;
            // Committed, not rolled back: the read is good only if it held every lock until its
            // last read, and the commit's decision proves it (see the module doc). A read has
            // no effect, so a commit of unknown outcome makes it `fail`.
            finish(tx, result, true).await.map_err(|error| match error {
                OpError::Unknown(message) => OpError::Failed(message),
                other => other,
            })
        }
        TxnOp::CacheWrite { .. } | TxnOp::CacheRead { .. } => cache_op(node, op).await,
    }
}

/// Runs a cache write (an upsert of `v`) or a cache read (a point select) on `node`.
async fn cache_op<N: SqlNode>(node: &N, op: &TxnOp) -> Result<Value, OpError> {
    match op {
        TxnOp::CacheWrite { key, value } => {
            upsert(node, CACHE_TABLE, *key, &value.to_string()).await?;
            Ok(json!(value))
        }
        TxnOp::CacheRead { key } => {
            let result = node
                .statement(&format!("SELECT v FROM {CACHE_TABLE} WHERE id = {key}"))
                .await
                .map_err(|error| OpError::Failed(error.to_string()))?;
            Ok(first_value(&result).map_or(Value::Null, sql_to_json))
        }
        other => panic!("not a cache operation: {other:?}"),
    }
}

/// Sets `v` of row `key` outside a transaction, creating the row when it is missing.
async fn upsert<N: SqlNode>(node: &N, table: &str, key: i64, value: &str) -> Result<(), OpError> {
    let update = format!("UPDATE {table} SET v = {value} WHERE id = {key}");
    let updated = node.statement(&update).await.map_err(statement_error)?;
    if updated.rows_affected > 0 {
        return Ok(());
    }
    let insert = format!("INSERT INTO {table} (id, v) VALUES ({key}, {value})");
    match node.statement(&insert).await {
        Ok(_) => Ok(()),
        // Another writer created the row meanwhile: write over it.
        Err(error) if error.message.contains("duplicate") => {
            node.statement(&update).await.map_err(statement_error)?;
            Ok(())
        }
        Err(error) => Err(statement_error(error)),
    }
}

/// An error of one statement outside a transaction: unknown when the write may have happened.
fn statement_error(error: StatementError) -> OpError {
    if error.outcome_unknown {
        OpError::Unknown(error.message)
    } else {
        OpError::Failed(error.message)
    }
}

/// Opens a transaction on `node`. One that did not open wrote nothing: the operation failed.
async fn begin<N: SqlNode>(node: &N) -> Result<N::Transaction, OpError> {
    node.begin()
        .await
        .map_err(|error| OpError::Failed(error.message))
}

/// A statement inside a transaction failed: the transaction will not commit (its coordinator
/// alone can record a commit, and it is rolled back or left for others to abort).
fn in_tx(error: StatementError) -> OpError {
    OpError::Failed(error.message)
}

fn is_duplicate(error: &StatementError) -> bool {
    error.message.contains("duplicate")
}

/// Ends `tx`: commits it after a body that wrote, rolls back a read-only one (which releases
/// its locks without recording a decision), and rolls back after a failed body. A rollback
/// that fails leaves the intents to recovery, which aborts undecided transactions.
async fn finish<T: SqlTransaction>(
    tx: T,
    result: Result<Value, OpError>,
    writes: bool,
) -> Result<Value, OpError> {
    match result {
        Ok(value) if writes => match tx.commit().await {
            Ok(()) => Ok(value),
            Err(error) => Err(statement_error(error)),
        },
        Ok(value) => {
            if let Err(error) = tx.rollback().await {
                tracing::debug!(%error, "rollback of a read-only transaction failed");
            }
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(%rollback, "rollback after a failed statement failed");
            }
            Err(error)
        }
    }
}

/// Runs list-append or rw-register micro-operations; returns them with the values read.
async fn micro_ops<T: SqlTransaction>(
    tx: &T,
    table: &str,
    ops: &[MicroOp],
) -> Result<Value, OpError> {
    let mut completed = Vec::with_capacity(ops.len());
    for op in ops {
        let read = match op {
            MicroOp::Read(key) => {
                let result = tx
                    .query(&format!("SELECT v FROM {table} WHERE id = {key}"))
                    .await
                    .map_err(in_tx)?;
                let value = first_value(&result);
                if table == LISTS_TABLE {
                    parse_list(value)?
                } else {
                    value.map_or(Value::Null, sql_to_json)
                }
            }
            MicroOp::Append(key, value) => {
                let update =
                    format!("UPDATE {LISTS_TABLE} SET v = v || '{value},' WHERE id = {key}");
                let insert =
                    format!("INSERT INTO {LISTS_TABLE} (id, v) VALUES ({key}, '{value},')");
                tx_upsert(tx, &update, &insert).await?;
                Value::Null
            }
            MicroOp::Write(key, value) => {
                let update = format!("UPDATE {REGISTERS_TABLE} SET v = {value} WHERE id = {key}");
                let insert =
                    format!("INSERT INTO {REGISTERS_TABLE} (id, v) VALUES ({key}, {value})");
                tx_upsert(tx, &update, &insert).await?;
                Value::Null
            }
        };
        completed.push(op.to_json(&read));
    }
    Ok(Value::Array(completed))
}

/// Updates a row in `tx`, inserting it when missing; an insert that finds the row created
/// meanwhile (and committed: the insert waited on its intent) updates it instead.
async fn tx_upsert<T: SqlTransaction>(tx: &T, update: &str, insert: &str) -> Result<(), OpError> {
    if tx.query(update).await.map_err(in_tx)?.rows_affected > 0 {
        return Ok(());
    }
    match tx.query(insert).await {
        Ok(_) => Ok(()),
        Err(error) if is_duplicate(&error) => {
            let updated = tx.query(update).await.map_err(in_tx)?;
            if updated.rows_affected == 0 {
                return Err(OpError::Failed(format!(
                    "row vanished between insert and update: {update}"
                )));
            }
            Ok(())
        }
        Err(error) => Err(in_tx(error)),
    }
}

/// Locks both accounts in ascending order, refuses an overdraft, and moves the amount.
async fn transfer<T: SqlTransaction>(
    tx: &T,
    from: i64,
    to: i64,
    amount: i64,
) -> Result<Value, OpError> {
    let mut balances = std::collections::BTreeMap::new();
    for account in [from.min(to), from.max(to)] {
        let result = tx
            .query(&format!(
                "SELECT balance FROM {ACCOUNTS_TABLE} WHERE id = {account} FOR UPDATE"
            ))
            .await
            .map_err(in_tx)?;
        match first_value(&result) {
            Some(SqlValue::Int(balance)) => balances.insert(account, *balance),
            other => {
                return Err(OpError::Failed(format!(
                    "account {account} has no balance: {other:?}"
                )))
            }
        };
    }
    if balances[&from] < amount {
        return Err(OpError::Failed(format!(
            "insufficient funds: account {from} holds {}",
            balances[&from]
        )));
    }
    for (account, sign) in [(from, '-'), (to, '+')] {
        tx.query(&format!(
            "UPDATE {ACCOUNTS_TABLE} SET balance = balance {sign} {amount} WHERE id = {account}"
        ))
        .await
        .map_err(in_tx)?;
    }
    Ok(json!({"from": from, "to": to, "amount": amount}))
}

/// Reads every balance, locking the accounts in ascending order.
async fn read_balances<T: SqlTransaction>(tx: &T, accounts: i64) -> Result<Value, OpError> {
    let mut balances = serde_json::Map::new();
    for account in 0..accounts {
        let result = tx
            .query(&format!(
                "SELECT balance FROM {ACCOUNTS_TABLE} WHERE id = {account} FOR UPDATE"
            ))
            .await
            .map_err(in_tx)?;
        let balance = first_value(&result).map_or(Value::Null, sql_to_json);
        balances.insert(account.to_string(), balance);
    }
    Ok(Value::Object(balances))
}

/// The first column of the first row.
fn first_value(result: &QueryResult) -> Option<&SqlValue> {
    result.rows.first()?.columns.first().map(|(_, value)| value)
}

fn sql_to_json(value: &SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Int(n) => json!(n),
        SqlValue::Text(text) => json!(text),
    }
}

/// A list stored as `"1,2,3,"`; a missing row is the empty list.
fn parse_list(value: Option<&SqlValue>) -> Result<Value, OpError> {
    let text = match value {
        None | Some(SqlValue::Null) => return Ok(json!([])),
        Some(SqlValue::Text(text)) => text,
        Some(other) => {
            return Err(OpError::Failed(format!(
                "a list cell holds {other:?}, not text"
            )))
        }
    };
    let elements: Result<Vec<i64>, _> = text
        .split(',')
        .filter(|element| !element.is_empty())
        .map(str::parse::<i64>)
        .collect();
    elements
        .map(|elements| json!(elements))
        .map_err(|error| OpError::Failed(format!("list cell {text:?} is corrupt: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_lists_parse_in_order_and_missing_rows_are_empty() {
        let text = SqlValue::Text("3,1,2,".to_owned());
        assert_eq!(parse_list(Some(&text)).unwrap(), json!([3, 1, 2]));
        assert_eq!(parse_list(None).unwrap(), json!([]));
        assert!(parse_list(Some(&SqlValue::Text("1,x,".to_owned()))).is_err());
    }

    #[test]
    fn invocations_follow_the_history_format() {
        let (f, key, value) = invocation(&TxnOp::ListAppend(vec![
            MicroOp::Append(1, 5),
            MicroOp::Read(2),
        ]));
        assert_eq!(f, Function::Txn);
        assert_eq!(key, None);
        assert_eq!(value, json!([["append", 1, 5], ["r", 2, null]]));
        let (f, _, value) = invocation(&TxnOp::Transfer {
            from: 0,
            to: 2,
            amount: 3,
        });
        assert_eq!(f, Function::Transfer);
        assert_eq!(value, json!({"from": 0, "to": 2, "amount": 3}));
        let (f, key, _) = invocation(&TxnOp::CacheRead { key: 4 });
        assert_eq!((f, key.as_deref()), (Function::Read, Some("4")));
    }
}
