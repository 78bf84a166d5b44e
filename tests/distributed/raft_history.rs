//! A small recorder of the Raft scenario tests' operations, as a version-1 JSON Lines history
//! (DESIGN.md, "The history format"), so that the checker can judge what the tests did.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use helios_cluster::{MetadataError, MetadataNode, NodeId};
use serde_json::{json, Value};

/// The history's name for metadata node `id`.
pub fn node_name(id: NodeId) -> String {
    format!("m{id}")
}

/// Records invocations and completions in the order it observes them.
pub struct HistoryRecorder {
    started: Instant,
    /// Invariant: line `i` (after the header) carries `"index": i`.
    lines: Mutex<Vec<Value>>,
    header: Value,
}

impl HistoryRecorder {
    /// Starts a history; the header names the workload, the seed and the nodes.
    pub fn new(workload: &str, seed: u64, nodes: &[NodeId]) -> Self {
        let names: Vec<String> = nodes.iter().map(|&id| node_name(id)).collect();
        Self {
            started: Instant::now(),
            lines: Mutex::new(Vec::new()),
            header: json!({"helios_history": 1, "workload": workload, "seed": seed, "nodes": names}),
        }
    }

    fn push(&self, mut event: Value) {
        let time = self.started.elapsed().as_nanos() as u64;
        let mut lines = self.lines.lock().expect("history lock poisoned");
        event["index"] = json!(lines.len());
        event["time"] = json!(time);
        lines.push(event);
    }

    /// Records a fault: an `info` operation of the nemesis.
    pub fn nemesis(&self, f: &str, value: Value) {
        self.push(json!({"type": "info", "process": "nemesis", "f": f, "value": value}));
    }

    /// Proposes `key = value` through `node` as client `process`, recording the invocation and
    /// its completion: `ok`, `fail` for a definite error, `info` for an unknown outcome.
    /// After `info` the process is retired, so `process` is advanced.
    pub async fn propose_change(
        &self,
        process: &mut u64,
        node: &MetadataNode,
        key: &str,
        value: &str,
    ) -> Result<(), MetadataError> {
        let op = json!({"process": *process, "f": "write", "key": key, "value": value});
        let mut invoke = op.clone();
        invoke["type"] = json!("invoke");
        self.push(invoke);
        let result = node.propose_change(key, value).await;
        let mut completion = op;
        completion["node"] = json!(node_name(node.id()));
        match &result {
            Ok(()) => completion["type"] = json!("ok"),
            Err(error) => {
                let unknown = error.outcome_is_unknown();
                completion["type"] = json!(if unknown { "info" } else { "fail" });
                completion["error"] = json!(error.to_string());
                if unknown {
                    *process += 1;
                }
            }
        }
        self.push(completion);
        result
    }

    /// Reads `key` through `node`'s linearizable read as client `process`, recording it: `ok`
    /// with the value read (null when absent), or `fail` (a read has no effect, so an error
    /// is never an unknown outcome).
    pub async fn read(
        &self,
        process: u64,
        node: &MetadataNode,
        key: &str,
    ) -> Result<Option<String>, MetadataError> {
        self.push(
            json!({"type": "invoke", "process": process, "f": "read", "key": key, "value": null}),
        );
        let result = node.read(key).await;
        let mut completion =
            json!({"process": process, "f": "read", "key": key, "node": node_name(node.id())});
        match &result {
            Ok(value) => {
                completion["type"] = json!("ok");
                completion["value"] = json!(value);
            }
            Err(error) => {
                completion["type"] = json!("fail");
                completion["value"] = json!(null);
                completion["error"] = json!(error.to_string());
            }
        }
        self.push(completion);
        result
    }

    /// The history as JSON Lines: the header, then one event per line.
    pub fn to_jsonl(&self) -> String {
        let lines = self.lines.lock().expect("history lock poisoned");
        let mut text = format!("{}\n", self.header);
        for line in lines.iter() {
            text.push_str(&line.to_string());
            text.push('\n');
        }
        text
    }

    /// Writes the history under the temp dir as `helios-tests/<test>-<pid>.jsonl` and returns
    /// the JSON Lines text.
    pub fn save(&self, test: &str) -> String {
        let text = self.to_jsonl();
        let directory = std::env::temp_dir().join("helios-tests");
        let path: PathBuf = directory.join(format!("{test}-{}.jsonl", std::process::id()));
        let written =
            std::fs::create_dir_all(&directory).and_then(|()| std::fs::write(&path, &text));
        match written {
            Ok(()) => eprintln!("{test}: history saved to {}", path.display()),
            Err(error) => eprintln!(
                "{test}: could not save history to {}: {error}",
                path.display()
            ),
        }
        text
    }
}
