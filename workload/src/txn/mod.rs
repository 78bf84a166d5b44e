//! The compute workloads (list-append, rw-register, bank, cache): clients run SQL through
//! compute nodes while the nemesis kills, pauses and partitions compute, storage and metadata
//! nodes, in process ([`runner`]) or against compute node processes ([`process_runner`]).

pub mod client;
pub mod config;
pub mod generator;
pub mod nemesis;
pub mod process_nemesis;
pub mod process_runner;
pub mod runner;
pub mod schedule;
pub mod sql_node;

pub use config::{TxnRunConfig, TxnUnsafe, TxnWorkload};
pub use process_runner::{run_txn_on_processes, TxnProcessSpec};
pub use runner::{run_txn, TxnHistoryHeader, TxnRunOutcome};
pub use schedule::TxnNemesisKind;
pub use sql_node::{ProcessComputeNode, SqlNode, SqlTransaction, StatementError};
