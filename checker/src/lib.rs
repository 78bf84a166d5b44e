//! helios-checker: reads histories and decides whether they are linearizable (and more).
//!
//! The checkers: linearizability ([`linear`]), transactional isolation ([`elle`]), lost writes
//! ([`sets`]), the bank's totals ([`bank`]) and cache invalidation within a bound ([`cache`]),
//! beside timing ([`timing`]), which only measures. [`check::check_file`] runs the ones that
//! apply ([`select`]) and combines their verdicts.
//!
//! A pure library: it takes a history and returns a verdict. It does no IO beyond reading
//! its input, and knows nothing of tokio, sockets or the cluster.

pub mod bank;
pub mod cache;
pub mod check;
pub mod edn;
pub mod elle;
pub mod error;
pub mod format;
pub mod history;
pub mod jepsen_edn;
pub mod jepsen_log;
pub mod jsonl;
pub mod linear;
pub mod lines;
pub mod models;
pub mod ops;
pub mod porcupine_kv;
pub mod report;
pub mod select;
pub mod sets;
pub mod summary;
pub mod synth;
pub mod timing;
pub mod verdict;
pub mod view;

pub use error::{InputError, Location};
pub use history::{Event, EventType, Header, History, Process};
pub use verdict::Verdict;
