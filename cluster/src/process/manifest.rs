//! `cluster.json`: what `helios cluster up` started (ids, addresses, pids, data directories, log
//! files, the exact arguments), and the operations any later process can do from it alone:
//! inspect, signal and stop the node processes.
//!
//! A pid from a file may have been reused by an unrelated process since. Before signalling, the
//! process's command line (Linux `/proc/<pid>/cmdline`) must name the node's data directory after
//! `--data-dir`; otherwise the node counts as gone and nothing is signalled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::metadata::NodeId;

/// The manifest's file name inside a cluster directory.
pub const MANIFEST_FILE_NAME: &str = "cluster.json";

/// The version of the manifest format written here.
pub const MANIFEST_VERSION: u32 = 1;

/// One node process of a local cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNode {
    /// The node's id.
    pub id: NodeId,
    /// Its listener, `host:port`.
    pub addr: String,
    /// The pid of its latest process.
    pub pid: u32,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its stdout and stderr go (appended to across restarts).
    pub log_file: PathBuf,
    /// The arguments it was started with, after the binary.
    pub args: Vec<String>,
    /// For a data node or witness of a replicated shard: which; absent for a metadata node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_member: Option<ShardMemberEntry>,
    /// For a compute node: its index (the process id is [`super::COMPUTE_PROCESS_BASE`] plus it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<u32>,
}

/// Which member of which shard a node process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMemberEntry {
    /// The shard.
    pub shard: usize,
    /// The member's id within the shard's protocol.
    pub member: NodeId,
    /// Whether it is the witness (else a data node).
    pub witness: bool,
}

/// A local cluster as `cluster.json` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterManifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The `helios` binary the nodes run.
    pub binary: PathBuf,
    /// The nodes, in id order.
    pub nodes: Vec<ManifestNode>,
}

/// Why a manifest could not be read or written, or a process not signalled.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading or writing the file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        reason: String,
    },
    /// The file is not a manifest of a known version.
    #[error("{path}: not a cluster manifest: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The error.
        reason: String,
    },
    /// A signal could not be delivered.
    #[error("node {id} (pid {pid}): {signal}: {reason}")]
    Signal {
        /// The node.
        id: NodeId,
        /// Its pid.
        pid: u32,
        /// The signal.
        signal: String,
        /// The error.
        reason: String,
    },
}

/// What a node's recorded pid is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    /// The node's process runs.
    Running,
    /// The node's process is stopped (SIGSTOP).
    Stopped,
    /// No process of that pid runs this node: it exited, is a zombie, or the pid was reused.
    Gone,
}

impl ClusterManifest {
    /// The manifest's path inside `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join(MANIFEST_FILE_NAME)
    }

    /// Reads `dir/cluster.json`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = Self::path_in(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError::Io {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let manifest: Self = serde_json::from_str(&text).map_err(|e| ManifestError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if manifest.version != MANIFEST_VERSION {
            return Err(ManifestError::Invalid {
                path,
                reason: format!("version {} (expected {MANIFEST_VERSION})", manifest.version),
            });
        }
        Ok(manifest)
    }

    /// Writes `dir/cluster.json` atomically (a temporary file renamed over it).
    pub fn save(&self, dir: &Path) -> Result<(), ManifestError> {
        let path = Self::path_in(dir);
        let io = |e: std::io::Error| ManifestError::Io {
            path: path.clone(),
            reason: e.to_string(),
        };
        let text = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        let temporary = dir.join(format!(".{MANIFEST_FILE_NAME}.tmp"));
        std::fs::write(&temporary, text + "\n").map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&ManifestNode> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// Every node's address, by id.
    pub fn addresses(&self) -> std::collections::BTreeMap<NodeId, String> {
        self.nodes
            .iter()
            .map(|node| (node.id, node.addr.clone()))
            .collect()
    }
}

impl ManifestNode {
    /// Whether the node is a member of the metadata group (neither a shard member nor a
    /// compute node).
    pub fn is_metadata(&self) -> bool {
        self.shard_member.is_none() && self.compute.is_none()
    }

    /// Whether `pid` is this node's process (Linux: its command line names this data directory
    /// after `--data-dir`), and in which state.
    pub fn process_state(&self) -> ProcessState {
        process_state(self.pid, &self.data_dir)
    }

    /// Sends `signal` to the node's process if it is still this node's; returns whether it was.
    pub fn signal(&self, signal: Signal) -> Result<bool, ManifestError> {
        if self.process_state() == ProcessState::Gone {
            return Ok(false);
        }
        send_signal(self.id, self.pid, signal)?;
        Ok(true)
    }
}

/// Sends `signal` to `pid` (the process of node `id`).
pub fn send_signal(id: NodeId, pid: u32, signal: Signal) -> Result<(), ManifestError> {
    let raw = i32::try_from(pid).map_err(|_| ManifestError::Signal {
        id,
        pid,
        signal: signal.to_string(),
        reason: "pid out of range".to_string(),
    })?;
    kill(Pid::from_raw(raw), signal).map_err(|errno| ManifestError::Signal {
        id,
        pid,
        signal: signal.to_string(),
        reason: errno.to_string(),
    })
}

/// The state of `pid` if its command line names `data_dir` after `--data-dir`.
pub fn process_state(pid: u32, data_dir: &Path) -> ProcessState {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return ProcessState::Gone;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    let ours = args
        .windows(2)
        .any(|pair| pair[0] == b"--data-dir" && pair[1] == wanted);
    if !ours {
        return ProcessState::Gone;
    }
    let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
        return ProcessState::Gone;
    };
    // `pid (comm) S ...`: the state follows the last parenthesis, as comm may hold one.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    match state {
        Some('T') | Some('t') => ProcessState::Stopped,
        Some('Z') | Some('X') | None => ProcessState::Gone,
        Some(_) => ProcessState::Running,
    }
}

/// How a node process ended when it was stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was already gone.
    AlreadyGone,
    /// It exited after SIGTERM, within the grace period.
    Terminated,
    /// It outlived the grace period and was killed with SIGKILL.
    Killed,
    /// A signal failed.
    Failed(String),
}

/// How often stopping looks again whether processes are gone.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Stops every node of `manifest` that still runs: SIGTERM (and SIGCONT, so that a paused node
/// can act on it), then SIGKILL for any still running after `grace`. Bounded by `grace` plus
/// one more second for SIGKILL to take effect.
pub fn stop_all(manifest: &ClusterManifest, grace: Duration) -> Vec<(NodeId, StopOutcome)> {
    let mut outcomes: Vec<(NodeId, StopOutcome)> = Vec::new();
    let mut pending = Vec::new();
    for node in &manifest.nodes {
        let result = node
            .signal(Signal::SIGTERM)
            .and_then(|sent| node.signal(Signal::SIGCONT).map(|_| sent));
        match result {
            Ok(false) => outcomes.push((node.id, StopOutcome::AlreadyGone)),
            Ok(true) => pending.push(node),
            Err(error) => outcomes.push((node.id, StopOutcome::Failed(error.to_string()))),
        }
    }
    let deadline = Instant::now() + grace;
    while !pending.is_empty() && Instant::now() < deadline {
        std::thread::sleep(STOP_POLL);
        pending.retain(|node| {
            let gone = node.process_state() == ProcessState::Gone;
            if gone {
                outcomes.push((node.id, StopOutcome::Terminated));
            }
            !gone
        });
    }
    for node in &pending {
        let outcome = match node.signal(Signal::SIGKILL) {
            Ok(_) => StopOutcome::Killed,
            Err(error) => StopOutcome::Failed(error.to_string()),
        };
        outcomes.push((node.id, outcome));
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline
        && pending
            .iter()
            .any(|node| node.process_state() != ProcessState::Gone)
    {
        std::thread::sleep(STOP_POLL);
    }
    outcomes.sort_by_key(|(id, _)| *id);
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_a_foreign_pid_counts_as_gone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let manifest = ClusterManifest {
            version: MANIFEST_VERSION,
            binary: PathBuf::from("/bin/helios"),
            nodes: vec![ManifestNode {
                id: 1,
                addr: "127.0.0.1:7001".into(),
                // This test's own process: alive, but not a node of that data directory.
                pid: std::process::id(),
                data_dir: dir.path().join("node-1"),
                log_file: dir.path().join("node-1.log"),
                args: vec!["node".into()],
                shard_member: None,
                compute: None,
            }],
        };
        manifest.save(dir.path()).expect("saves");
        let back = ClusterManifest::load(dir.path()).expect("loads");
        assert_eq!(back, manifest);
        let node = &back.nodes[0];
        assert_eq!(node.process_state(), ProcessState::Gone);
        assert!(!node.signal(Signal::SIGKILL).expect("nothing to signal"));
        assert_eq!(
            stop_all(&back, Duration::from_millis(10)),
            vec![(1, StopOutcome::AlreadyGone)]
        );
    }

    #[test]
    fn a_manifest_of_another_version_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            ClusterManifest::path_in(dir.path()),
            r#"{"version":9,"binary":"x","nodes":[]}"#,
        )
        .expect("writes");
        let error = ClusterManifest::load(dir.path()).expect_err("version 9");
        assert!(error.to_string().contains("version 9"), "{error}");
    }
}
