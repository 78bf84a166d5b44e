//! A logical client of the register workload: invokes one operation at a time against the
//! target cluster (in-process, processes or containers) and records each invocation and
//! completion.
//!
//! Outcomes follow Jepsen. `ok`: the operation took effect. `fail`: it certainly did not (the
//! node refused it before proposing anything, or a `cas` found another value). `info`: unknown
//! (a timeout, or an error after the proposal may have reached the log). A read has no effect,
//! so a read that errors or times out is recorded `fail`.
//!
//! A process that got `info` never invokes again: client `i` continues as process
//! `i + k * concurrency` for the next `k`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::generator::{RegisterGenerator, RegisterOp};
use crate::history::{node_name, EventDraft, EventType, Function, Process};
use crate::recorder::Recorder;
use crate::target::{FaultTarget, OpError};

/// Live counters of a run, read by the progress bar.
#[derive(Debug, Default)]
pub struct RunProgress {
    /// Client invocations so far.
    pub n_ops: AtomicU64,
    /// Faults started so far.
    pub n_faults: AtomicU64,
}

/// What every client of a run shares.
#[derive(Debug, Clone)]
pub struct ClientContext {
    /// The cluster under test.
    pub cluster: Arc<dyn FaultTarget>,
    /// The history.
    pub recorder: Arc<Recorder>,
    /// The bound on each operation; past it the operation's outcome is unknown.
    pub op_timeout: Duration,
    /// The mean time between one client's invocations.
    pub op_interval: Duration,
    /// Live counters.
    pub progress: Arc<RunProgress>,
}

/// How one operation completed, before it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Ok, fail or info.
    pub event_type: EventType,
    /// The completion's value: the value read, or the invocation's value.
    pub value: serde_json::Value,
    /// The error text of a fail or info.
    pub error: Option<String>,
    /// The leader the node named when it refused the operation.
    pub leader_hint: Option<u64>,
}

/// One logical client: a seeded operation stream, a process id, and what it knows of the leader.
#[derive(Debug)]
pub struct Client {
    /// The client's index, `0..concurrency`.
    index: u64,
    concurrency: u64,
    /// The current process id. Invariant: `process % concurrency == index`.
    process: u64,
    generator: RegisterGenerator,
    rng: ChaCha8Rng,
    /// The leader as this client last learned it.
    leader_hint: Option<u64>,
}

impl Client {
    /// Client `index` of `concurrency`, starting as process `index`.
    pub fn new(
        index: u64,
        concurrency: u64,
        generator: RegisterGenerator,
        rng: ChaCha8Rng,
    ) -> Client {
        assert!(
            index < concurrency,
            "client {index} out of 0..{concurrency}"
        );
        Client {
            index,
            concurrency,
            process: index,
            generator,
            rng,
            leader_hint: None,
        }
    }

    /// The current process id.
    pub fn process(&self) -> u64 {
        self.process
    }

    /// Invokes operations until `deadline` or until `max_ops` invocations have been made by all
    /// clients together; returns the last process id used.
    pub async fn run(mut self, context: ClientContext, deadline: Instant, max_ops: u64) -> u64 {
        while Instant::now() < deadline {
            if context.progress.n_ops.fetch_add(1, Ordering::Relaxed) >= max_ops {
                break;
            }
            let started = Instant::now();
            let op = self.generator.next_op();
            // The cluster's count, not the run's: a node added during the run is a choice too.
            let node = self.choose_node(context.cluster.node_count());
            let completion = execute(&context, Process::Client(self.process), node, &op).await;
            self.learn(node, op.function(), &completion);
            if completion.event_type == EventType::Info {
                self.retire_process();
            }
            // Jepsen's stagger: the next invocation follows a uniform draw from
            // [0, 2 * op_interval] after this one's start, which keeps the rate near the target
            // and keeps clients from spinning while no leader is known.
            let interval_us = context.op_interval.as_micros() as u64;
            let gap = Duration::from_micros(self.rng.gen_range(0..=2 * interval_us));
            tokio::time::sleep_until((started + gap).min(deadline).into()).await;
        }
        self.process
    }

    /// The known leader, else a random node.
    pub fn choose_node(&mut self, node_count: u64) -> u64 {
        match self.leader_hint {
            Some(leader) if leader < node_count => leader,
            _ => self.rng.gen_range(0..node_count),
        }
    }

    /// Updates the leader hint from how `f` on `node` completed.
    ///
    /// Only what proves leadership teaches: a committed proposal (a write or cas that completed,
    /// even a cas that found another value) or a node naming its leader. A successful read does
    /// not, since a node in a stale-read mode answers reads without being leader.
    pub fn learn(&mut self, node: u64, f: Function, completion: &Completion) {
        let proposal_committed = f != Function::Read
            && (completion.event_type == EventType::Ok
                || (completion.event_type == EventType::Fail && completion.error.is_none()));
        self.leader_hint = match completion.leader_hint {
            Some(leader) => Some(leader),
            None if proposal_committed => Some(node),
            None if completion.event_type == EventType::Ok => self.leader_hint,
            None => None,
        };
    }

    /// Jepsen: a process whose last operation's outcome is unknown may still have it in flight,
    /// so the client continues as a new process.
    pub fn retire_process(&mut self) {
        self.process += self.concurrency;
        debug_assert_eq!(self.process % self.concurrency, self.index);
    }
}

/// Records the invocation of `op` by `process`, runs it on `node` within the operation timeout,
/// and records its completion.
pub async fn execute(
    context: &ClientContext,
    process: Process,
    node: u64,
    op: &RegisterOp,
) -> Completion {
    let key = op.key().to_owned();
    context.recorder.record(EventDraft {
        event_type: EventType::Invoke,
        process,
        f: op.function(),
        key: Some(key.clone()),
        value: op.invoke_value(),
        node: None,
        error: None,
    });
    let target = &context.cluster;
    let completion = match op {
        RegisterOp::Read { key } => {
            let result = tokio::time::timeout(context.op_timeout, target.read(node, key)).await;
            complete_read(result)
        }
        RegisterOp::Write { key, value } => {
            let value = value.to_string();
            let future = target.write(node, key, &value);
            let result = tokio::time::timeout(context.op_timeout, future).await;
            complete_write(op, result)
        }
        RegisterOp::Cas {
            key, expected, new, ..
        } => {
            let (expected, new) = (expected.to_string(), new.to_string());
            let future = target.compare_and_set(node, key, &expected, &new);
            let result = tokio::time::timeout(context.op_timeout, future).await;
            complete_cas(op, result)
        }
    };
    context.recorder.record(EventDraft {
        event_type: completion.event_type,
        process,
        f: op.function(),
        key: Some(key),
        value: completion.value.clone(),
        node: (completion.event_type == EventType::Ok).then(|| node_name(node)),
        error: completion.error.clone(),
    });
    completion
}

type Timed<T> = Result<Result<T, OpError>, tokio::time::error::Elapsed>;

fn complete_read(result: Timed<Option<String>>) -> Completion {
    match result {
        Ok(Ok(value)) => match value.as_deref().map(str::parse::<i64>) {
            None => completion(EventType::Ok, serde_json::Value::Null, None),
            Some(Ok(number)) => completion(EventType::Ok, serde_json::json!(number), None),
            // A register value that is not an integer was not written by this workload; record
            // the text so that the checker reports it rather than hiding it.
            Some(Err(_)) => completion(EventType::Ok, serde_json::json!(value), None),
        },
        // Reads have no effect, so an unknown read is recorded as failed.
        Ok(Err(error)) => refused(serde_json::Value::Null, &error),
        Err(_) => timed_out(EventType::Fail, serde_json::Value::Null),
    }
}

fn complete_write(op: &RegisterOp, result: Timed<()>) -> Completion {
    match result {
        Ok(Ok(())) => completion(EventType::Ok, op.invoke_value(), None),
        Ok(Err(error)) => failed_mutation(op, &error),
        Err(_) => timed_out(EventType::Info, op.invoke_value()),
    }
}

fn complete_cas(op: &RegisterOp, result: Timed<bool>) -> Completion {
    match result {
        Ok(Ok(true)) => completion(EventType::Ok, op.invoke_value(), None),
        // Knossos: a cas that found another value did not happen.
        Ok(Ok(false)) => completion(EventType::Fail, op.invoke_value(), None),
        Ok(Err(error)) => failed_mutation(op, &error),
        Err(_) => timed_out(EventType::Info, op.invoke_value()),
    }
}

fn completion(
    event_type: EventType,
    value: serde_json::Value,
    error: Option<String>,
) -> Completion {
    Completion {
        event_type,
        value,
        error,
        leader_hint: None,
    }
}

fn timed_out(event_type: EventType, value: serde_json::Value) -> Completion {
    completion(event_type, value, Some("timeout".to_owned()))
}

/// A read's error: always `fail`, keeping the leader the node named.
fn refused(value: serde_json::Value, error: &OpError) -> Completion {
    Completion {
        leader_hint: error.leader(),
        ..completion(EventType::Fail, value, Some(error.to_string()))
    }
}

/// A write's or cas's error: `fail` when the node certainly proposed nothing, else `info`.
fn failed_mutation(op: &RegisterOp, error: &OpError) -> Completion {
    let event_type = if error.outcome_is_unknown() {
        EventType::Info
    } else {
        EventType::Fail
    };
    Completion {
        leader_hint: error.leader(),
        ..completion(event_type, op.invoke_value(), Some(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;

    use helios_cluster::MetadataError;

    use super::*;
    use crate::generator::register_keys;

    fn refusal(error: MetadataError) -> OpError {
        OpError::from_metadata(&error, Some)
    }

    fn client(index: u64, concurrency: u64) -> Client {
        let generator = RegisterGenerator::new(ChaCha8Rng::seed_from_u64(1), register_keys(1), 5);
        Client::new(index, concurrency, generator, ChaCha8Rng::seed_from_u64(2))
    }

    fn write() -> RegisterOp {
        RegisterOp::Write {
            key: "k0".to_owned(),
            value: 3,
        }
    }

    #[test]
    fn a_retired_process_continues_as_index_plus_a_multiple_of_concurrency() {
        let mut client = client(2, 10);
        assert_eq!(client.process(), 2);
        client.retire_process();
        assert_eq!(client.process(), 12);
        client.retire_process();
        assert_eq!(client.process(), 22);
    }

    #[test]
    fn not_leader_is_a_definite_failure_that_names_the_leader() {
        let result = Ok(Err(refusal(MetadataError::NotLeader { leader: Some(4) })));
        let completion = complete_write(&write(), result);
        assert_eq!(completion.event_type, EventType::Fail);
        assert_eq!(completion.leader_hint, Some(4));
        let mut client = client(0, 1);
        client.learn(1, Function::Write, &completion);
        assert_eq!(client.choose_node(5), 4);
    }

    #[tokio::test]
    async fn only_committed_proposals_and_named_leaders_teach_the_leader() {
        let mut client = client(0, 1);
        let read_ok = complete_read(Ok(Ok(Some("1".to_owned()))));
        client.learn(3, Function::Read, &read_ok);
        assert_eq!(
            client.leader_hint, None,
            "a read served by a node does not prove it leads"
        );
        client.learn(2, Function::Write, &complete_write(&write(), Ok(Ok(()))));
        assert_eq!(client.leader_hint, Some(2));
        client.learn(3, Function::Read, &read_ok);
        assert_eq!(
            client.leader_hint,
            Some(2),
            "a read keeps what the client knew"
        );
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        let timeout: Timed<()> = Err(elapsed);
        client.learn(2, Function::Write, &complete_write(&write(), timeout));
        assert_eq!(
            client.leader_hint, None,
            "a timeout makes the leader unknown"
        );
    }

    #[test]
    fn a_write_that_times_out_or_is_interrupted_has_an_unknown_outcome() {
        let interrupted = Ok(Err(refusal(MetadataError::Interrupted {
            reason: "stopped".to_owned(),
        })));
        assert_eq!(
            complete_write(&write(), interrupted).event_type,
            EventType::Info
        );
        let timeout = Ok(Err(refusal(MetadataError::Timeout {
            after: Duration::from_secs(1),
        })));
        assert_eq!(
            complete_write(&write(), timeout).event_type,
            EventType::Info
        );
        assert_eq!(
            complete_write(&write(), Ok(Err(refusal(MetadataError::Shutdown)))).event_type,
            EventType::Fail
        );
    }

    #[test]
    fn a_cas_that_found_another_value_fails_without_an_error() {
        let cas = RegisterOp::Cas {
            key: "k0".to_owned(),
            expected: 1,
            new: 2,
        };
        let completion = complete_cas(&cas, Ok(Ok(false)));
        assert_eq!(completion.event_type, EventType::Fail);
        assert_eq!(completion.error, None);
        assert_eq!(completion.value, serde_json::json!([1, 2]));
        assert_eq!(complete_cas(&cas, Ok(Ok(true))).event_type, EventType::Ok);
    }

    #[test]
    fn reads_complete_with_the_integer_read_and_fail_on_any_error() {
        assert_eq!(
            complete_read(Ok(Ok(Some("3".to_owned())))).value,
            serde_json::json!(3)
        );
        assert_eq!(complete_read(Ok(Ok(None))).value, serde_json::Value::Null);
        let timeout = Ok(Err(refusal(MetadataError::Timeout {
            after: Duration::from_secs(1),
        })));
        assert_eq!(complete_read(timeout).event_type, EventType::Fail);
    }
}
