//! helios-cluster: the database under test. Today: the Raft metadata service, the transport
//! abstraction with its seeded simulated network, and the in-process test cluster.

pub mod metadata;
pub mod net;
mod test_cluster;

pub use metadata::{
    LogEntryView, LogPayloadView, MetadataCommand, MetadataError, MetadataNode, MetadataResponse,
    NodeId, NodeSettings,
};
pub use net::{NetworkSimulator, Transport, TransportError};
pub use test_cluster::{ClusterOptions, RaftTestCluster};
