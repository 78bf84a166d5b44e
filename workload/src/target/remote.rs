//! Nodes reached over TCP, as processes on loopback or containers behind published ports: one
//! request per operation to the node the client chose, on a fresh connection (so that a dead
//! node's refusal is a certain failure, never a lost reply), and who leads from each node's
//! admin status.
//!
//! Node ids on the wire are `1..=n`; the workload's index `i` is node id `i + 1`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use helios_cluster::net::tcp::FrameOptions;
use helios_cluster::process::{
    call_once, AdminClient, CallError, ClientReply, ClientRequest, NodeReply, NodeRequest,
};
use helios_cluster::NodeId;

use super::OpError;

/// How long `current_leader` waits for each node's status; a paused node would otherwise hold
/// up the nemesis and the final reads.
pub const STATUS_BOUND: Duration = Duration::from_millis(300);

/// The bound on establishing one operation's connection.
const CONNECT_BOUND: Duration = Duration::from_millis(500);

/// The workload index of node id `id`.
pub fn index_of(id: NodeId) -> Option<u64> {
    id.checked_sub(1)
}

/// The node id of workload index `index`.
pub fn id_of(index: u64) -> NodeId {
    index + 1
}

/// Client addresses of nodes `0..n` (ids `1..=n`); clones share them, and a node added to the
/// group is added here too.
#[derive(Debug, Clone)]
pub struct RemoteNodes {
    /// Index `i`'s `host:port`.
    addrs: Arc<RwLock<Vec<String>>>,
    /// The bound on one request; the workload's own operation timeout is the outer bound.
    call_timeout: Duration,
}

impl RemoteNodes {
    /// Nodes at `addrs` (index order), each request bounded by `call_timeout`.
    pub fn new(addrs: Vec<String>, call_timeout: Duration) -> Self {
        assert!(!addrs.is_empty(), "a remote target needs at least one node");
        RemoteNodes {
            addrs: Arc::new(RwLock::new(addrs)),
            call_timeout,
        }
    }

    fn addrs(&self) -> Vec<String> {
        self.addrs.read().expect("node list lock poisoned").clone()
    }

    /// The number of nodes.
    pub fn len(&self) -> u64 {
        self.addrs.read().expect("node list lock poisoned").len() as u64
    }

    /// Whether there are no nodes; never, by construction.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index `node`'s address.
    pub fn addr(&self, node: u64) -> String {
        self.addrs.read().expect("node list lock poisoned")[node as usize].clone()
    }

    /// Adds the node at `addr` as the next index, which it returns.
    pub fn push(&self, addr: String) -> u64 {
        let mut addrs = self.addrs.write().expect("node list lock poisoned");
        addrs.push(addr);
        addrs.len() as u64 - 1
    }

    /// Sends one client request to `node` and waits for its answer.
    pub async fn call(&self, node: u64, request: ClientRequest) -> Result<ClientReply, OpError> {
        let frames = FrameOptions {
            connect_timeout: CONNECT_BOUND.min(self.call_timeout),
            call_timeout: self.call_timeout,
            ..FrameOptions::default()
        };
        let is_write = request.is_write();
        match call_once(&self.addr(node), &NodeRequest::Client(request), &frames).await {
            Ok(NodeReply::Client(Ok(reply))) => Ok(reply),
            Ok(NodeReply::Client(Err(error))) => Err(OpError::from_metadata(&error, index_of)),
            Ok(other) => Err(OpError::Unknown {
                message: format!("node {}: reply of the wrong kind: {other:?}", id_of(node)),
            }),
            // Refused before a byte was written: certainly no effect.
            Err(error @ CallError::NotSent { .. }) => Err(OpError::Definite {
                leader: None,
                message: error.to_string(),
            }),
            // Sent, no answer: a write may still be applied; a read has no effect either way.
            Err(error @ CallError::NoReply { .. }) if is_write => Err(OpError::Unknown {
                message: error.to_string(),
            }),
            Err(error @ CallError::NoReply { .. }) => Err(OpError::Definite {
                leader: None,
                message: error.to_string(),
            }),
        }
    }

    /// A linearizable read of `key` at `node`.
    pub async fn read(&self, node: u64, key: &str) -> Result<Option<String>, OpError> {
        let request = ClientRequest::Read {
            key: key.to_owned(),
        };
        match self.call(node, request).await? {
            ClientReply::Value(value) => Ok(value),
            other => Err(OpError::Definite {
                leader: None,
                message: format!("node {} answered a read with {other:?}", id_of(node)),
            }),
        }
    }

    /// Sets `key` to `value` through `node`.
    pub async fn write(&self, node: u64, key: &str, value: &str) -> Result<(), OpError> {
        let request = ClientRequest::Write {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        match self.call(node, request).await? {
            ClientReply::Written => Ok(()),
            other => Err(OpError::Unknown {
                message: format!("node {} answered a write with {other:?}", id_of(node)),
            }),
        }
    }

    /// Sets `key` to `new` through `node` if it holds `expected`.
    pub async fn compare_and_set(
        &self,
        node: u64,
        key: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, OpError> {
        let request = ClientRequest::CompareAndSet {
            key: key.to_owned(),
            expected: Some(expected.to_owned()),
            new: new.to_owned(),
        };
        match self.call(node, request).await? {
            ClientReply::CompareAndSet(applied) => Ok(applied),
            other => Err(OpError::Unknown {
                message: format!("node {} answered a cas with {other:?}", id_of(node)),
            }),
        }
    }

    /// The node that says it leads and may serve (lease held), asking every node at once, each
    /// within [`STATUS_BOUND`]; the lowest index should two ever say so.
    pub async fn current_leader(&self) -> Option<u64> {
        let mut queries = tokio::task::JoinSet::new();
        for (index, addr) in self.addrs().into_iter().enumerate() {
            let admin = AdminClient::new(addr);
            queries.spawn(async move {
                let status = tokio::time::timeout(STATUS_BOUND, admin.status()).await;
                matches!(status, Ok(Ok(status)) if status.is_leader).then_some(index as u64)
            });
        }
        let mut leader = None;
        while let Some(joined) = queries.join_next().await {
            if let Ok(Some(index)) = joined {
                leader = Some(leader.map_or(index, |known: u64| known.min(index)));
            }
        }
        leader
    }
}
