//! helios-checker: reads histories and decides whether they are linearizable (and more).
//!
//! A pure library: it takes a history and returns a verdict. It does no IO beyond reading
//! its input, and knows nothing of tokio, sockets or the cluster.

pub mod error;
pub mod history;
pub mod jsonl;
pub mod lines;

pub use error::{InputError, Location};
pub use history::{Event, EventType, Header, History, Process};
