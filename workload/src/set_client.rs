//! A logical client of the set workload: inserts unique ids into one table of the sharded
//! storage cluster and now and then reads the whole table, recording each invocation and
//! completion.
//!
//! Outcomes follow Jepsen. An `add` is `ok` when the insert was acknowledged, `fail` when the
//! cluster says it certainly did nothing ([`ClusterError::outcome_is_unknown`] is false), and
//! `info` on a timeout or an error after which the row may exist. A read has no effect, so a
//! read that errors or times out is `fail`; an `ok` read completes with the sorted list of ids.
//! A process that got `info` never invokes again: client `i` continues as `i + k * concurrency`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use helios_cluster::{ClusterError, Row, SqlValue, StorageCluster};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::client::RunProgress;
use crate::history::{EventDraft, EventType, Function, Process};
use crate::recorder::Recorder;

/// The table the set workload inserts into, and its shard key.
pub const SET_TABLE: &str = "set_elements";
/// The shard key (BIGINT) of [`SET_TABLE`]; its value is the element.
pub const SET_KEY_COLUMN: &str = "id";

/// What every client of a set run shares.
#[derive(Debug, Clone)]
pub struct SetContext {
    /// The cluster under test.
    pub cluster: StorageCluster,
    /// The history.
    pub recorder: Arc<Recorder>,
    /// The bound on each operation; past it an add's outcome is unknown.
    pub op_timeout: Duration,
    /// The mean time between one client's invocations.
    pub op_interval: Duration,
    /// Live counters.
    pub progress: Arc<RunProgress>,
}

/// One set operation, as a client is about to invoke it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    /// Insert the row whose id is this element.
    Add(i64),
    /// Read every id of the table.
    Read,
}

impl SetOp {
    /// The history's `f`.
    pub fn function(self) -> Function {
        match self {
            SetOp::Add(_) => Function::Add,
            SetOp::Read => Function::Read,
        }
    }

    /// The history's `value` at invocation: the element, or `null` for a read.
    pub fn invoke_value(self) -> serde_json::Value {
        match self {
            SetOp::Add(id) => serde_json::json!(id),
            SetOp::Read => serde_json::Value::Null,
        }
    }
}

/// How one operation completed, before it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct SetCompletion {
    /// Ok, fail or info.
    pub event_type: EventType,
    /// The element added, or the sorted ids read (`null` for a read that did not complete).
    pub value: serde_json::Value,
    /// The error text of a fail or info.
    pub error: Option<String>,
}

/// One logical set client: a seeded choice of reads and adds, and its own id sequence.
#[derive(Debug)]
pub struct SetClient {
    /// The client's index, `0..concurrency`.
    index: u64,
    concurrency: u64,
    /// The current process id. Invariant: `process % concurrency == index`.
    process: u64,
    /// Adds made so far; the next id is `n_adds * concurrency + index`, so ids are unique
    /// across clients and never retried.
    n_adds: u64,
    /// The chance that an operation is a read of the whole set.
    read_fraction: f64,
    rng: ChaCha8Rng,
}

impl SetClient {
    /// Client `index` of `concurrency`, starting as process `index`.
    pub fn new(index: u64, concurrency: u64, read_fraction: f64, rng: ChaCha8Rng) -> SetClient {
        assert!(
            index < concurrency,
            "client {index} out of 0..{concurrency}"
        );
        assert!(
            (0.0..=1.0).contains(&read_fraction),
            "read fraction {read_fraction} out of [0, 1]"
        );
        SetClient {
            index,
            concurrency,
            process: index,
            n_adds: 0,
            read_fraction,
            rng,
        }
    }

    /// The current process id.
    pub fn process(&self) -> u64 {
        self.process
    }

    /// The next operation: a read with probability `read_fraction`, else an add of a fresh id.
    pub fn next_op(&mut self) -> SetOp {
        if self.rng.gen_bool(self.read_fraction) {
            return SetOp::Read;
        }
        let id = self.n_adds * self.concurrency + self.index;
        self.n_adds += 1;
        SetOp::Add(i64::try_from(id).expect("fewer than 2^63 ids in a bounded run"))
    }

    /// Invokes operations until `deadline` or until `max_ops` invocations have been made by all
    /// clients together; returns the last process id used.
    pub async fn run(mut self, context: SetContext, deadline: Instant, max_ops: u64) -> u64 {
        while Instant::now() < deadline {
            if context.progress.n_ops.fetch_add(1, Ordering::Relaxed) >= max_ops {
                break;
            }
            let started = Instant::now();
            let op = self.next_op();
            let completion = execute_set_op(&context, Process::Client(self.process), op).await;
            if completion.event_type == EventType::Info {
                self.retire_process();
            }
            // Jepsen's stagger, as in the register client.
            let interval_us = context.op_interval.as_micros() as u64;
            let gap = Duration::from_micros(self.rng.gen_range(0..=2 * interval_us));
            tokio::time::sleep_until((started + gap).min(deadline).into()).await;
        }
        self.process
    }

    /// Jepsen: a process whose last operation's outcome is unknown may still have it in flight,
    /// so the client continues as a new process.
    pub fn retire_process(&mut self) {
        self.process += self.concurrency;
        debug_assert_eq!(self.process % self.concurrency, self.index);
    }
}

/// Records the invocation of `op` by `process`, runs it within the operation timeout, and
/// records its completion.
pub async fn execute_set_op(context: &SetContext, process: Process, op: SetOp) -> SetCompletion {
    context.recorder.record(EventDraft {
        event_type: EventType::Invoke,
        process,
        f: op.function(),
        key: None,
        value: op.invoke_value(),
        node: None,
        error: None,
    });
    let completion = match op {
        SetOp::Add(id) => {
            let insert = context
                .cluster
                .insert(SET_TABLE, vec![(SET_KEY_COLUMN, id)]);
            complete_add(id, tokio::time::timeout(context.op_timeout, insert).await)
        }
        SetOp::Read => {
            let read = context.cluster.read_all(SET_TABLE);
            complete_read(tokio::time::timeout(context.op_timeout, read).await)
        }
    };
    context.recorder.record(EventDraft {
        event_type: completion.event_type,
        process,
        f: op.function(),
        key: None,
        value: completion.value.clone(),
        node: None,
        error: completion.error.clone(),
    });
    completion
}

type Timed<T> = Result<Result<T, ClusterError>, tokio::time::error::Elapsed>;

fn complete_add(id: i64, result: Timed<()>) -> SetCompletion {
    let value = serde_json::json!(id);
    match result {
        Ok(Ok(())) => completion(EventType::Ok, value, None),
        Ok(Err(error)) if error.outcome_is_unknown() => {
            completion(EventType::Info, value, Some(error.to_string()))
        }
        // A definite refusal, a duplicate key included: ids are never reused, so a duplicate
        // means the cluster holds a row nobody acknowledged, which the checker reports.
        Ok(Err(error)) => completion(EventType::Fail, value, Some(error.to_string())),
        Err(_) => completion(EventType::Info, value, Some("timeout".to_owned())),
    }
}

fn complete_read(result: Timed<Vec<Row>>) -> SetCompletion {
    match result {
        Ok(Ok(rows)) => completion(EventType::Ok, ids_of(&rows), None),
        // Reads have no effect, so a read that did not complete is recorded as failed.
        Ok(Err(error)) => completion(
            EventType::Fail,
            serde_json::Value::Null,
            Some(error.to_string()),
        ),
        Err(_) => completion(
            EventType::Fail,
            serde_json::Value::Null,
            Some("timeout".to_owned()),
        ),
    }
}

/// The ids of `rows`, sorted. Integers sort before anything else; an id that is not an integer
/// was not written by this workload and is kept as it is, so that the checker reports it.
fn ids_of(rows: &[Row]) -> serde_json::Value {
    let mut integers: Vec<i64> = Vec::with_capacity(rows.len());
    let mut others: Vec<serde_json::Value> = Vec::new();
    for row in rows {
        match row.get(SET_KEY_COLUMN) {
            Some(SqlValue::Int(id)) => integers.push(*id),
            Some(SqlValue::Text(text)) => others.push(serde_json::json!(text)),
            Some(SqlValue::Null) | None => others.push(serde_json::Value::Null),
        }
    }
    integers.sort_unstable();
    let mut ids: Vec<serde_json::Value> = integers
        .into_iter()
        .map(|id| serde_json::json!(id))
        .collect();
    ids.extend(others);
    serde_json::Value::Array(ids)
}

fn completion(
    event_type: EventType,
    value: serde_json::Value,
    error: Option<String>,
) -> SetCompletion {
    SetCompletion {
        event_type,
        value,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use helios_cluster::sharding::MetadataServiceError;
    use helios_cluster::storage::NodeError;
    use helios_cluster::{MetadataError, StorageNodeId};
    use rand::SeedableRng;

    use super::*;

    fn row(id: SqlValue) -> Row {
        BTreeMap::from([(SET_KEY_COLUMN.to_owned(), id)])
    }

    fn elapsed() -> tokio::time::error::Elapsed {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
                .await
                .unwrap_err()
        })
    }

    #[test]
    fn ids_are_unique_across_clients_and_reads_come_at_the_given_rate() {
        let mut seen = std::collections::HashSet::new();
        let mut n_reads = 0;
        for index in 0..4 {
            let mut client = SetClient::new(index, 4, 0.1, ChaCha8Rng::seed_from_u64(index));
            for _ in 0..1000 {
                match client.next_op() {
                    SetOp::Add(id) => assert!(seen.insert(id), "id {id} generated twice"),
                    SetOp::Read => n_reads += 1,
                }
            }
        }
        assert!(
            (250..550).contains(&n_reads),
            "{n_reads} reads of 4000 operations"
        );
    }

    #[test]
    fn an_add_is_ok_fail_or_info_by_what_the_cluster_knows() {
        assert_eq!(complete_add(3, Ok(Ok(()))).event_type, EventType::Ok);
        let down = ClusterError::Node(NodeError::Down {
            node: StorageNodeId(1),
        });
        let refused = complete_add(3, Ok(Err(down)));
        assert_eq!(refused.event_type, EventType::Fail);
        assert!(refused.error.unwrap().contains("down"));
        let unavailable = ClusterError::Metadata(MetadataServiceError::Unavailable {
            after: Duration::from_secs(1),
            last: MetadataError::NotLeader { leader: None },
        });
        assert_eq!(
            complete_add(3, Ok(Err(unavailable))).event_type,
            EventType::Info
        );
        let timed_out = complete_add(3, Err(elapsed()));
        assert_eq!(timed_out.event_type, EventType::Info);
        assert_eq!(timed_out.value, serde_json::json!(3));
    }

    #[test]
    fn a_read_completes_with_the_sorted_ids_or_fails() {
        let rows = vec![
            row(SqlValue::Int(7)),
            row(SqlValue::Int(-2)),
            row(SqlValue::Text("x".to_owned())),
            row(SqlValue::Int(3)),
        ];
        let read = complete_read(Ok(Ok(rows)));
        assert_eq!(read.event_type, EventType::Ok);
        assert_eq!(read.value, serde_json::json!([-2, 3, 7, "x"]));
        let failed = complete_read(Err(elapsed()));
        assert_eq!(failed.event_type, EventType::Fail);
        assert_eq!(failed.value, serde_json::Value::Null);
    }

    #[test]
    fn a_retired_set_process_continues_as_index_plus_a_multiple_of_concurrency() {
        let mut client = SetClient::new(1, 5, 0.0, ChaCha8Rng::seed_from_u64(0));
        client.retire_process();
        client.retire_process();
        assert_eq!(client.process(), 11);
        assert_eq!(client.next_op(), SetOp::Add(1));
        assert_eq!(client.next_op(), SetOp::Add(6));
    }
}
