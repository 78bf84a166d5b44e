//! Synchronous replication with a witness (seed section 3, REP-001..005): each shard has a
//! primary, a mirror and a witness; RPO = 0, no split brain, failover in well under a second.
//!
//! The protocol is plain state machines ([`Replica`], [`Witness`]) stepped with events and
//! the time; the runtime drives them over the seeded [`crate::net::bus::MessageBus`], and
//! [`ReplicationCluster`] is the in-process cluster that tests, benchmarks and workloads use.

pub mod cluster;
pub mod disk;
pub mod error;
pub mod log;
pub mod message;
pub mod node;
pub mod options;
pub mod protocol;
pub(crate) mod runtime;
pub mod witness;

pub use cluster::{ReplicationCluster, ReplicationOptions, Served, ShardMembers, StorageCluster};
pub use error::ReplicationError;
pub use message::{
    Action, Entry, Epoch, EpochRecord, Event, LogIndex, Message, Millis, WriteCondition,
};
pub use node::ReplicaNode;
pub use options::{ProtocolOptions, Timing};
pub use protocol::{Replica, ReplicaDurable, Role, FENCE_KEY};
pub use witness::{Witness, WitnessDurable};
