//! Nodes as separate processes: the metadata node server, the shard member server (a data
//! node or witness of a replicated shard) and the compute node server with their wire protocols, the clients that talk to
//! them, and a local cluster of `helios node` processes with real faults (SIGKILL and restart,
//! SIGSTOP/SIGCONT, partitions through peer filters).
//!
//! The Raft code is the same as in the simulation: a [`crate::metadata::MetadataNode`] over
//! [`crate::net::tcp_transport::TcpTransport`] instead of the simulated network, and over a data
//! directory instead of memory.

mod cache_leases;
mod client;
mod compute_client;
pub mod compute_protocol;
mod compute_server;
mod docker_cluster;
mod docker_shards;
mod local_cluster;
mod manifest;
pub mod membership;
pub mod protocol;
pub mod rebalance;
pub mod ring_record;
mod server;
mod shard_client;
pub mod shard_protocol;
mod shard_server;

pub use cache_leases::CacheLeaseOptions;
pub use client::{
    call_once, AdminClient, AdminError, CallError, ClientError, ClientOptions, MetadataClient,
    Served,
};
pub use compute_client::{ComputeClient, ComputeClientError, ComputeTransaction};
pub use compute_server::{ComputeConfig, ComputeServer, ComputeServerError, ABANDON_AFTER};
pub use docker_cluster::{
    build_image, docker_available, run_bounded, DockerCluster, DockerClusterSpec, DockerError,
    COMPOSE_BOUND, CONTAINER_PORT, DOCKER_COMMAND_BOUND, DOCKER_NODES, SPARE_NODE,
};
pub use docker_shards::{DockerShards, DockerShardsSpec, DOCKER_COMPUTE, DOCKER_SHARDS};
pub use local_cluster::{
    compute_process, member_process, pick_free_ports, LocalCluster, LocalClusterError,
    LocalClusterSpec, Ports, COMPUTE_PROCESS_BASE, SHARD_PROCESS_BASE,
};
pub use manifest::{
    process_state, stop_all, ClusterManifest, ManifestError, ManifestNode, ProcessState,
    StopOutcome, MANIFEST_FILE_NAME,
};
pub use protocol::{
    AdminReply, AdminRequest, ClientReply, ClientRequest, NodeReply, NodeRequest, NodeStatus,
    PeerRefusal,
};
pub use rebalance::{add_shard, RebalanceError, RebalanceReport};
pub use ring_record::{RingRecord, RING_KEY};
pub use server::{InitPolicy, NodeConfig, NodeServer, NodeServerError};
pub use shard_client::{MemberAddrs, ScanPage, ShardClient};
pub use shard_protocol::{LatencySummary, MemberStatus};
pub use shard_server::{MemberConfig, MemberRole, MemberServer, MemberServerError};
