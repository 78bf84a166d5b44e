//! The compute workloads (list-append, rw-register, bank, cache): clients run SQL through
//! compute nodes while the nemesis kills, pauses and partitions compute, storage and metadata
//! nodes.

pub mod client;
pub mod config;
pub mod generator;
pub mod nemesis;
pub mod runner;
pub mod schedule;

pub use config::{TxnRunConfig, TxnUnsafe, TxnWorkload};
pub use runner::{run_txn, TxnHistoryHeader, TxnRunOutcome};
pub use schedule::TxnNemesisKind;
