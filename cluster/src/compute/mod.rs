//! Compute nodes: the seed's SQL over a row cache that storage invalidates on every committed
//! write, and cross-shard read-committed transactions by two-phase commit with write intents.

mod cache;
mod error;
mod faults;
mod node;
mod records;
mod transaction;
pub mod two_phase;

pub use cache::{CacheStamp, RowCache};
pub use error::{ComputeError, CrashPoint};
pub use node::{ComputeNode, ComputeOptions};
pub use records::{CommitRecords, RecordError};
pub use transaction::Transaction;
pub use two_phase::{Decision, TxId};
