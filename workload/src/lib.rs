//! helios-workload: clients, generators, nemesis and the history recorder of a Helios run.
//!
//! A run ([`runner::run`]) starts the embedded cluster, drives it with concurrent logical clients
//! ([`client`]) while the nemesis ([`nemesis`]) injects faults on a seeded schedule
//! ([`schedule`]), and records every invocation, completion and fault in a JSON Lines history
//! ([`recorder`], format in [`history`]). The history is the only contract with the checker.

pub mod client;
pub mod error;
pub mod generator;
pub mod history;
pub mod nemesis;
pub mod recorder;
pub mod runner;
pub mod schedule;
pub mod wellformed;

pub use error::WorkloadError;
pub use runner::{run, RunConfig, RunOutcome};
