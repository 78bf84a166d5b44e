//! A logical client of the replicated register workload: reads and writes of integer registers,
//! each key living in one shard, recorded exactly as the Raft register workload records them.
//!
//! Each client is bound to a home data node of every shard, as a Jepsen client is bound to one
//! node: every operation starts there and follows redirects within its deadline, the way
//! `ReplicationCluster::route` does (a `NotPrimary` names the primary; a refusal without a
//! name sends the client to the other data node). Clients are spread over both data nodes. The
//! cluster's routed client instead shares one guess of the primary among all callers, so every
//! client would talk to the same node and a split brain (`--unsafe no-fencing`) would never
//! show in the history: two primaries are only caught when clients reach both.
//!
//! Outcomes follow Jepsen. `ok`: the operation took effect, served by `node`. `fail`: it
//! certainly did not (every node refused it before the deadline). `info`: a write whose outcome
//! is unknown ([`ReplicationError::outcome_is_unknown`], or the deadline struck mid-call); the
//! client then continues as a new process. A read has no effect, so a read that errs is `fail`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use helios_cluster::metadata::NodeId;
use helios_cluster::replication::ReplicationError;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::replica_node_name;
use super::target::SharedReplicaTarget;
use crate::client::RunProgress;
use crate::history::{EventDraft, EventType, Function, Process};
use crate::recorder::Recorder;

/// How long a client waits between two attempts of one operation after a refusal.
const REDIRECT_PAUSE: Duration = Duration::from_millis(2);

/// A write acknowledgement as a client observed it: the harness's own view of when each shard
/// served writes, kept for its failover measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAck {
    /// When the client recorded the acknowledgement, in ns since the run started.
    pub time_ns: u64,
    /// The shard written.
    pub shard: usize,
    /// The node that acknowledged it.
    pub node: NodeId,
}

/// Every write acknowledgement of a run, in the order the clients observed them.
#[derive(Debug, Default)]
pub struct AckLog {
    /// Invariant: at most `capacity` entries; beyond it acknowledgements are counted, not kept.
    acks: Mutex<Vec<WriteAck>>,
    capacity: usize,
}

impl AckLog {
    /// A log that keeps at most `capacity` acknowledgements.
    pub fn with_capacity(capacity: usize) -> AckLog {
        AckLog {
            acks: Mutex::new(Vec::new()),
            capacity,
        }
    }

    fn push(&self, ack: WriteAck) {
        let mut acks = self.acks.lock().expect("ack log lock poisoned");
        if acks.len() < self.capacity {
            acks.push(ack);
        }
    }

    /// The acknowledgements, sorted by time.
    pub fn sorted(&self) -> Vec<WriteAck> {
        let mut acks = self.acks.lock().expect("ack log lock poisoned").clone();
        acks.sort_by_key(|ack| ack.time_ns);
        acks
    }
}

/// What every client of a run shares.
#[derive(Debug, Clone)]
pub struct ReplicatedContext {
    /// The cluster under test.
    pub cluster: SharedReplicaTarget,
    /// The history.
    pub recorder: Arc<Recorder>,
    /// The bound on each operation, redirects included; past it a write's outcome is unknown.
    pub op_timeout: Duration,
    /// The mean time between one client's invocations.
    pub op_interval: Duration,
    /// The registers; key `i` lives in shard `i % shards`.
    pub keys: Vec<String>,
    /// Live counters.
    pub progress: Arc<RunProgress>,
    /// The harness's record of write acknowledgements.
    pub acks: Arc<AckLog>,
}

impl ReplicatedContext {
    /// The shard that holds key number `key_index`.
    pub fn shard_of(&self, key_index: usize) -> usize {
        key_index % self.cluster.shard_count()
    }
}

/// One operation, as a client is about to invoke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedOp {
    /// The register.
    pub key: String,
    /// Its shard.
    pub shard: usize,
    /// `None` for a read, else the value to write (unique in the run).
    pub write: Option<i64>,
}

impl ReplicatedOp {
    /// The history's `f`.
    pub fn function(&self) -> Function {
        match self.write {
            None => Function::Read,
            Some(_) => Function::Write,
        }
    }

    /// The history's `value` at invocation: `null` for a read, the integer for a write.
    pub fn invoke_value(&self) -> serde_json::Value {
        self.write.map_or(serde_json::Value::Null, |v| v.into())
    }
}

/// How one operation completed, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicatedCompletion {
    /// Ok, fail or info.
    pub event_type: EventType,
    /// The value read, or the invocation's value.
    pub value: serde_json::Value,
    /// The node that served it (ok only).
    pub node: Option<NodeId>,
    /// The error text of a fail or info.
    pub error: Option<String>,
}

/// One logical client: a seeded operation stream, a process id, and its home data node.
#[derive(Debug)]
pub struct ReplicatedClient {
    index: u64,
    concurrency: u64,
    /// Invariant: `process % concurrency == index`.
    process: u64,
    rng: ChaCha8Rng,
    /// Writes made so far; the next write's value is `1 + index + concurrency * writes`.
    writes: u64,
}

impl ReplicatedClient {
    /// Client `index` of `concurrency`, starting as process `index`; its home is data node
    /// `index % 2` of each shard.
    pub fn new(index: u64, concurrency: u64, rng: ChaCha8Rng) -> Self {
        assert!(
            index < concurrency,
            "client {index} out of 0..{concurrency}"
        );
        ReplicatedClient {
            index,
            concurrency,
            process: index,
            rng,
            writes: 0,
        }
    }

    /// The next operation: a read or a write (half each) of a random key. Written values are
    /// unique in the run, so a read names the one write it observed, and a lost write shows.
    pub fn next_op(&mut self, context: &ReplicatedContext) -> ReplicatedOp {
        let key_index = self.rng.gen_range(0..context.keys.len());
        let write = self.rng.gen_bool(0.5).then(|| {
            self.writes += 1;
            (self.index + self.concurrency * (self.writes - 1) + 1) as i64
        });
        ReplicatedOp {
            key: context.keys[key_index].clone(),
            shard: context.shard_of(key_index),
            write,
        }
    }

    /// Invokes operations until `deadline` or until `max_ops` invocations in all; returns the
    /// last process id used.
    pub async fn run(mut self, context: ReplicatedContext, deadline: Instant, max_ops: u64) -> u64 {
        while Instant::now() < deadline {
            if context.progress.n_ops.fetch_add(1, Ordering::Relaxed) >= max_ops {
                break;
            }
            let started = Instant::now();
            let op = self.next_op(&context);
            let home = context.cluster.members(op.shard).replicas[(self.index % 2) as usize];
            let completion = execute(&context, self.process, &op, home).await;
            if completion.event_type == EventType::Info {
                // Jepsen: the operation may still be in flight, so the process never invokes
                // again; the client continues as a new one.
                self.process += self.concurrency;
            }
            // Jepsen's stagger, as in the Raft register workload.
            let interval_us = context.op_interval.as_micros() as u64;
            let gap = Duration::from_micros(self.rng.gen_range(0..=2 * interval_us));
            tokio::time::sleep_until((started + gap).min(deadline).into()).await;
        }
        self.process
    }
}

/// Records the invocation of `op` by `process`, runs it (starting at node `first`, following
/// redirects) within the operation timeout, and records its completion.
pub async fn execute(
    context: &ReplicatedContext,
    process: u64,
    op: &ReplicatedOp,
    first: NodeId,
) -> ReplicatedCompletion {
    let draft = |event_type, value, node: Option<NodeId>, error| EventDraft {
        event_type,
        process: Process::Client(process),
        f: op.function(),
        key: Some(op.key.clone()),
        value,
        node: node.map(replica_node_name),
        error,
    };
    context
        .recorder
        .record(draft(EventType::Invoke, op.invoke_value(), None, None));
    let completion = attempt(context, op, first).await;
    let event = context.recorder.record(draft(
        completion.event_type,
        completion.value.clone(),
        completion.node,
        completion.error.clone(),
    ));
    if let (Some(_), Some(node), EventType::Ok) = (op.write, completion.node, event.event_type) {
        context.acks.push(WriteAck {
            time_ns: event.time_ns,
            shard: op.shard,
            node,
        });
    }
    completion
}

/// Tries `op` at `first`, then wherever refusals point, until it is served or the deadline.
async fn attempt(
    context: &ReplicatedContext,
    op: &ReplicatedOp,
    first: NodeId,
) -> ReplicatedCompletion {
    let deadline = Instant::now() + context.op_timeout;
    let replicas = context.cluster.members(op.shard).replicas;
    let other = |node: NodeId| {
        if node == replicas[0] {
            replicas[1]
        } else {
            replicas[0]
        }
    };
    let mut target = first;
    let mut last: Option<ReplicationError> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let last = last.map_or("none".to_owned(), |error| error.to_string());
            return completion(
                EventType::Fail,
                op.invoke_value(),
                Some(format!(
                    "no primary for shard {} within {} ms (last error: {last})",
                    op.shard,
                    context.op_timeout.as_millis()
                )),
            );
        }
        match tokio::time::timeout(remaining, call(context, op, target)).await {
            Ok(Ok(value)) => {
                return ReplicatedCompletion {
                    event_type: EventType::Ok,
                    value,
                    node: Some(target),
                    error: None,
                }
            }
            Ok(Err(error)) if !error.outcome_is_unknown() => {
                target = match error.primary_hint() {
                    Some(hint) if hint != target && replicas.contains(&hint) => hint,
                    _ => other(target),
                };
                last = Some(error);
                tokio::time::sleep(REDIRECT_PAUSE.min(remaining)).await;
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(error)) => format!("{}: {error}", replica_node_name(target)),
                    _ => format!("{}: timeout", replica_node_name(target)),
                };
                let event_type = match op.write {
                    Some(_) => EventType::Info,
                    None => EventType::Fail,
                };
                return completion(event_type, op.invoke_value(), Some(error));
            }
        }
    }
}

/// One call to node `target`: the value read, or the written value once acknowledged.
async fn call(
    context: &ReplicatedContext,
    op: &ReplicatedOp,
    target: NodeId,
) -> Result<serde_json::Value, ReplicationError> {
    let cluster = context.cluster.as_ref();
    match op.write {
        Some(value) => {
            let written = value.to_string();
            cluster
                .write_at(op.shard, target, op.key.as_bytes(), written.as_bytes())
                .await?;
            Ok(value.into())
        }
        None => Ok(read_value(
            cluster
                .read_linearizable(op.shard, target, op.key.as_bytes())
                .await?,
        )),
    }
}

/// A register's bytes as the history's value: the integer, `null` when empty, or the text when
/// it is not an integer (not written by this workload; the checker then reports it).
pub fn read_value(bytes: Option<Vec<u8>>) -> serde_json::Value {
    match bytes {
        None => serde_json::Value::Null,
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match text.parse::<i64>() {
                Ok(number) => number.into(),
                Err(_) => text.into(),
            }
        }
    }
}

fn completion(
    event_type: EventType,
    value: serde_json::Value,
    error: Option<String>,
) -> ReplicatedCompletion {
    ReplicatedCompletion {
        event_type,
        value,
        node: None,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_values_are_integers_null_or_text() {
        assert_eq!(read_value(Some(b"42".to_vec())), serde_json::json!(42));
        assert_eq!(read_value(None), serde_json::Value::Null);
        assert_eq!(read_value(Some(b"x".to_vec())), serde_json::json!("x"));
    }

    #[test]
    fn the_ack_log_keeps_at_most_its_capacity_and_sorts_by_time() {
        let log = AckLog::with_capacity(2);
        for time_ns in [30, 10, 20] {
            log.push(WriteAck {
                time_ns,
                shard: 0,
                node: 1,
            });
        }
        let times: Vec<u64> = log.sorted().iter().map(|ack| ack.time_ns).collect();
        assert_eq!(times, vec![10, 30]);
    }
}
