//! The errors of a workload run.

use std::path::PathBuf;

/// Why a run could not be carried out. A cluster that misbehaves is not an error: its
/// misbehaviour is recorded in the history and judged by the checker.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The run's configuration is unusable.
    #[error("invalid run configuration: {0}")]
    InvalidConfig(String),
    /// A workload name that is not supported.
    #[error("unknown workload {name:?}: supported workloads are {supported}")]
    UnknownWorkload {
        /// The name that was asked for.
        name: String,
        /// The supported names, comma-separated.
        supported: String,
    },
    /// A nemesis name that is not supported.
    #[error("unknown nemesis {name:?}: supported faults are {supported}")]
    UnknownNemesis {
        /// The name that was asked for.
        name: String,
        /// The supported names, comma-separated.
        supported: String,
    },
    /// Creating the run directory or writing the history failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The embedded cluster elected no leader within the startup budget.
    #[error("the cluster elected no leader within {timeout_ms} ms of starting")]
    ClusterNotReady {
        /// The startup budget.
        timeout_ms: u64,
    },
    /// The embedded storage cluster could not be built or prepared for the run.
    #[error("storage cluster: {what}: {source}")]
    Cluster {
        /// What the run was doing.
        what: String,
        /// The cluster's error.
        source: helios_cluster::ClusterError,
    },
    /// A task of the run panicked or was cancelled.
    #[error("run task failed: {0}")]
    TaskFailed(String),
}
