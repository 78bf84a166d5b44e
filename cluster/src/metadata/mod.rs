//! The metadata service: a Raft group (openraft) whose state machine is a key-value map.

mod error;
mod lease;
mod node;
mod store;
mod types;

pub use error::MetadataError;
pub use lease::LeaseObservation;
pub use node::{MetadataNode, NodeSettings};
pub use store::{DurableStorage, LogStore, StateMachineData, StateMachineStore};
pub use types::{
    LogEntryView, LogPayloadView, MetadataCommand, MetadataResponse, NodeId, TypeConfig,
};
