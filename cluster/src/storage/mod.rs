//! Storage nodes and their engines: an in-memory engine for simulation, redb when a node has a
//! data directory.

mod capture;
mod engine;
mod invalidation;
mod memory;
mod node;
mod redb_engine;
pub mod remote;

pub use capture::{CaptureEntry, ChangeCapture};
pub use engine::{
    borrowed, key_bounds, key_hash, stored_key, stored_key_hash, EngineError, Entry, KeyBounds,
    StorageEngine,
};
pub use invalidation::{Invalidation, InvalidationBus, DEFAULT_BUS_CAPACITY};
pub use memory::MemoryEngine;
pub use node::{NodeError, StorageNode, TxWrite};
pub use redb_engine::RedbEngine;
