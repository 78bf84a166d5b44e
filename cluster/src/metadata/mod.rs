//! The metadata service: a Raft group (openraft) whose state machine is a key-value map.

mod disk_store;
mod error;
mod lease;
mod node;
mod store;
mod types;

pub use disk_store::{DiskStore, DiskStoreError, LoadedState, METADATA_FILE_NAME};
pub use error::MetadataError;
pub use lease::LeaseObservation;
pub use node::{MetadataNode, NodeSettings};
pub use store::{DurableStorage, LogStore, StateMachineData, StateMachineStore};
pub use types::{
    LogEntryView, LogPayloadView, MetadataCommand, MetadataResponse, NodeId, TypeConfig,
};
