//! Pairs invocations with completions into operations, and checks that a history is well formed.
//!
//! Semantics (DESIGN.md): an `ok` completion means the operation took effect, a `fail` means it
//! certainly did not, and an `info` (or an invoke still pending at the end of the history) means
//! the outcome is unknown, so the operation may take effect at any later time, or never.

use crate::error::InputError;
use crate::history::{Event, EventType, Process};
use serde_json::Value;
use std::collections::HashMap;

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It took effect; its output is the completion's value.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown: its completion was `info`.
    Info,
    /// Unknown: the history ended before it completed. Treated exactly as `info`.
    Pending,
}

impl Outcome {
    /// True when the outcome is unknown (`info`, or pending at the end).
    pub fn is_unknown(self) -> bool {
        matches!(self, Outcome::Info | Outcome::Pending)
    }
}

/// One client operation: an invocation and its completion, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// Position of this operation in [`Operations::ops`].
    pub id: usize,
    /// The client process.
    pub process: Process,
    /// The function.
    pub f: String,
    /// The key, for keyed workloads.
    pub key: Option<Value>,
    /// The invocation's value (the argument).
    pub input: Value,
    /// The completion's value (the result). `None` when the outcome is unknown.
    pub output: Option<Value>,
    /// How it ended.
    pub outcome: Outcome,
    /// The `index` of the invoke event. Events are in real-time order, so this orders calls.
    pub invoke_index: u64,
    /// The `index` of the completion event; `None` when it never completed.
    pub complete_index: Option<u64>,
    /// Times (ns) of the invoke and the completion, when the history has them.
    pub invoke_time: Option<u64>,
    /// Time of the completion.
    pub complete_time: Option<u64>,
    /// Source lines of the invoke and of the completion (0 when unknown), for error messages.
    pub invoke_line: u64,
    /// Source line of the completion.
    pub complete_line: u64,
    /// The node that served it, when recorded.
    pub node: Option<String>,
    /// The error of a `fail` or `info`.
    pub error: Option<Value>,
}

/// A nemesis event: a fault or a heal, with its position in the history.
#[derive(Clone, Debug, PartialEq)]
pub struct NemesisEvent {
    /// The event's `index`.
    pub index: u64,
    /// Its time (ns), when known.
    pub time: Option<u64>,
    /// Its type (usually `info`).
    pub kind: EventType,
    /// `start-partition`, `kill`, ...
    pub f: String,
    /// The targets.
    pub value: Value,
}

/// A well-formed history as operations, plus the nemesis events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Operations {
    /// Client operations, in invocation order.
    pub ops: Vec<Operation>,
    /// Fault events, in history order.
    pub nemesis: Vec<NemesisEvent>,
    /// The number of events read.
    pub n_events: u64,
}

/// Pairs events into operations, refusing ill-formed histories with a located error.
///
/// `file` names the source in error messages. A history with no events is an error.
pub fn pair<I>(events: I, file: &str) -> Result<Operations, InputError>
where
    I: IntoIterator<Item = Result<Event, InputError>>,
{
    let mut result = Operations::default();
    let mut open: HashMap<Process, usize> = HashMap::new();
    for event in events {
        let event = event?;
        result.n_events += 1;
        if event.process.is_nemesis() {
            result.nemesis.push(NemesisEvent {
                index: event.index,
                time: event.time,
                kind: event.kind,
                f: event.f,
                value: event.value.unwrap_or(Value::Null),
            });
            continue;
        }
        match event.kind {
            EventType::Invoke => invoke(&mut result, &mut open, event, file)?,
            _ => complete(&mut result, &mut open, event, file)?,
        }
    }
    if result.n_events == 0 {
        return Err(InputError::Empty {
            file: file.to_string(),
        });
    }
    Ok(result)
}

fn invoke(
    result: &mut Operations,
    open: &mut HashMap<Process, usize>,
    event: Event,
    file: &str,
) -> Result<(), InputError> {
    if let Some(&busy) = open.get(&event.process) {
        let earlier = &result.ops[busy];
        return Err(InputError::malformed(
            file,
            event.line,
            Some("process"),
            format!(
                "process {} invoked {} while its {} invoked at line {} is still outstanding",
                event.process, event.f, earlier.f, earlier.invoke_line
            ),
        ));
    }
    let id = result.ops.len();
    open.insert(event.process.clone(), id);
    result.ops.push(Operation {
        id,
        process: event.process,
        f: event.f,
        key: event.key,
        input: event.value.unwrap_or(Value::Null),
        output: None,
        outcome: Outcome::Pending,
        invoke_index: event.index,
        complete_index: None,
        invoke_time: event.time,
        complete_time: None,
        invoke_line: event.line,
        complete_line: 0,
        node: event.node,
        error: None,
    });
    Ok(())
}

fn complete(
    result: &mut Operations,
    open: &mut HashMap<Process, usize>,
    event: Event,
    file: &str,
) -> Result<(), InputError> {
    let Some(id) = open.remove(&event.process) else {
        return Err(InputError::malformed(
            file,
            event.line,
            Some("process"),
            format!(
                "{} completion of {} by process {} with no outstanding invoke",
                event.kind, event.f, event.process
            ),
        ));
    };
    let op = &mut result.ops[id];
    if op.f != event.f {
        return Err(InputError::malformed(
            file,
            event.line,
            Some("f"),
            format!(
                "completion of {} by process {} does not match its invoke of {} at line {}",
                event.f, event.process, op.f, op.invoke_line
            ),
        ));
    }
    op.outcome = match event.kind {
        EventType::Ok => Outcome::Ok,
        EventType::Fail => Outcome::Fail,
        EventType::Info => Outcome::Info,
        EventType::Invoke => unreachable!("invokes are handled by the caller"),
    };
    if op.outcome == Outcome::Ok {
        op.output = Some(event.value.unwrap_or(Value::Null));
    }
    op.complete_index = Some(event.index);
    op.complete_time = event.time;
    op.complete_line = event.line;
    if event.node.is_some() {
        op.node = event.node;
    }
    op.error = event.error;
    if op.key.is_none() {
        op.key = event.key;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonl::JsonlReader;

    fn pair_text(text: &str) -> Result<Operations, String> {
        let reader = JsonlReader::new(text.as_bytes(), "h.jsonl").map_err(|e| e.to_string())?;
        pair(reader, "h.jsonl").map_err(|e| e.to_string())
    }

    #[test]
    fn invokes_pair_with_completions_and_pending_ones_stay_pending() {
        let ops = pair_text(concat!(
            "{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"write\",\"value\":3}\n",
            "{\"index\":1,\"type\":\"invoke\",\"process\":2,\"f\":\"read\",\"value\":null}\n",
            "{\"index\":2,\"type\":\"ok\",\"process\":1,\"f\":\"write\",\"value\":3}\n",
            "{\"index\":3,\"type\":\"info\",\"process\":\"nemesis\",\"f\":\"kill\",\"value\":{\"node\":2}}\n",
        ))
        .unwrap();
        assert_eq!(ops.ops.len(), 2);
        assert_eq!(ops.ops[0].outcome, Outcome::Ok);
        assert_eq!(ops.ops[0].complete_index, Some(2));
        assert_eq!(ops.ops[1].outcome, Outcome::Pending);
        assert_eq!(ops.nemesis.len(), 1);
        assert_eq!(ops.nemesis[0].f, "kill");
    }

    #[test]
    fn a_second_invoke_on_a_busy_process_is_refused() {
        let error = pair_text(concat!(
            "{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"write\",\"value\":3}\n",
            "{\"index\":1,\"type\":\"invoke\",\"process\":1,\"f\":\"read\",\"value\":null}\n",
        ))
        .unwrap_err();
        assert_eq!(error, "h.jsonl:2: field \"process\": process 1 invoked read while its write invoked at line 1 is still outstanding");
    }

    #[test]
    fn a_completion_with_no_invoke_is_refused() {
        let error =
            pair_text("{\"index\":0,\"type\":\"ok\",\"process\":4,\"f\":\"read\",\"value\":1}\n")
                .unwrap_err();
        assert_eq!(
            error,
            "h.jsonl:1: field \"process\": ok completion of read by process 4 with no outstanding invoke"
        );
    }

    #[test]
    fn a_completion_of_another_function_is_refused() {
        let error = pair_text(concat!(
            "{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"write\",\"value\":3}\n",
            "{\"index\":1,\"type\":\"ok\",\"process\":1,\"f\":\"read\",\"value\":3}\n",
        ))
        .unwrap_err();
        assert!(error.starts_with("h.jsonl:2: field \"f\""), "{error}");
    }

    #[test]
    fn an_empty_history_is_an_error() {
        assert_eq!(
            pair_text("\n\n").unwrap_err(),
            "h.jsonl: empty history: no events"
        );
    }
}
