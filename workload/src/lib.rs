//! helios-workload: clients, generators, nemesis and the history recorder of a Helios run.
//!
//! A run ([`runner::run`]) starts the embedded cluster, drives it with concurrent logical clients
//! ([`client`]) while the nemesis ([`nemesis`]) injects faults on a seeded schedule
//! ([`schedule`]), and records every invocation, completion and fault in a JSON Lines history
//! ([`recorder`], format in [`history`]). The history is the only contract with the checker.
//!
//! The set workload ([`set_runner::run_set`]) drives the sharded storage cluster instead:
//! clients insert unique ids and read the whole set ([`set_client`]) while the nemesis adds
//! nodes, kills and partitions ([`set_schedule`], [`set_nemesis`]).
//!
//! The compute workloads ([`txn::run_txn`]: list-append, rw-register, bank, cache) run SQL
//! through compute nodes while the nemesis faults compute, storage and metadata nodes.

pub mod client;
pub mod error;
pub mod generator;
pub mod history;
pub mod nemesis;
pub mod recorder;
pub mod replicated;
pub mod runner;
pub mod schedule;
pub mod set_client;
pub mod set_nemesis;
pub mod set_runner;
pub mod set_schedule;
pub mod target;
pub mod txn;
pub mod wellformed;

pub use error::WorkloadError;
pub use runner::{run, RunConfig, RunOutcome};
pub use set_runner::{run_set, SetRunConfig, SetRunOutcome};
pub use txn::{run_txn, TxnRunConfig, TxnRunOutcome, TxnWorkload};
