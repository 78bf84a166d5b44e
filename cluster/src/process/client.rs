//! Clients of metadata node processes: [`MetadataClient`] for the key-value operations and
//! [`AdminClient`] for status and the peer filter.
//!
//! Outcomes follow Jepsen, as the in-process client of the register workload does
//! (`workload/src/client.rs`): a successful call took effect; [`ClientError::Unavailable`] means
//! it certainly did not (every node tried refused before proposing anything, or could not be
//! connected to); [`ClientError::Indeterminate`] means a write may or may not take effect (its
//! request reached a node and no answer came back, or the node itself could not tell).
//!
//! Each attempt opens a fresh connection. A pooled connection to a node that has since been
//! killed would fail only after the request is written, which would turn a certain failure into
//! an unknown outcome; a fresh connect to a dead process is refused before anything is sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::protocol::{
    AdminReply, AdminRequest, ClientReply, ClientRequest, NodeReply, NodeRequest, NodeStatus,
};
use crate::metadata::{MetadataError, NodeId};
use crate::net::tcp::{self, FrameOptions, FramedConnection, TcpError};
use crate::net::tcp_transport::resolve;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why one exchange with a node failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing was sent: the address did not resolve or the connection was not established.
    #[error("node at {addr}: not sent: {reason}")]
    NotSent {
        /// The node's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The request was sent (at least in part) and no whole reply came back: it may have been
    /// handled.
    #[error("node at {addr}: no reply: {source}")]
    NoReply {
        /// The node's address.
        addr: String,
        /// The transport's error.
        #[source]
        source: TcpError,
    },
}

/// Sends one request to the node at `addr` over a new connection and waits for the reply, all
/// within `frames`' connect and call bounds.
pub async fn call_once<Req: Serialize, Resp: DeserializeOwned>(
    addr: &str,
    request: &Req,
    frames: &FrameOptions,
) -> Result<Resp, CallError> {
    let not_sent = |reason: String| CallError::NotSent {
        addr: addr.to_string(),
        reason,
    };
    let socket_addr = resolve(addr, frames.connect_timeout)
        .await
        .map_err(not_sent)?;
    let mut connection = FramedConnection::<Req, Resp>::connect(socket_addr, frames.clone())
        .await
        .map_err(|e| not_sent(e.to_string()))?;
    tcp::call(&mut connection, request)
        .await
        .map_err(|source| match source {
            // These two are refused before a byte is written.
            TcpError::FrameTooLarge { .. } | TcpError::Encode(_) => not_sent(source.to_string()),
            source => CallError::NoReply {
                addr: addr.to_string(),
                source,
            },
        })
}

/// The bounds of a [`MetadataClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The bound on one operation, all attempts included; past it a write's outcome is unknown
    /// if a request was in flight.
    pub op_timeout: Duration,
    /// Connect and call bounds of each attempt (the call bound is also cut to what is left of
    /// `op_timeout`).
    pub frames: FrameOptions,
    /// The pause after an attempt that taught nothing (a refusal without a leader hint, a node
    /// that could not be reached), so that a client does not spin while no leader exists.
    pub retry_backoff: Duration,
    /// The most attempts one operation makes.
    pub max_attempts: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            op_timeout: Duration::from_secs(5),
            frames: FrameOptions {
                connect_timeout: Duration::from_millis(500),
                call_timeout: Duration::from_secs(3),
                ..FrameOptions::default()
            },
            retry_backoff: Duration::from_millis(20),
            max_attempts: 200,
        }
    }
}

/// Why a client operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The operation certainly did not take effect: no node accepted it before the bound.
    #[error("no node served the request after {attempts} attempts: {last_error}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last refusal or connection error.
        last_error: String,
    },
    /// A write whose outcome is unknown: it may take effect at any later time, or never.
    #[error("outcome unknown at node {node}: {reason}")]
    Indeterminate {
        /// The node the request was sent to.
        node: NodeId,
        /// What happened.
        reason: String,
    },
}

impl ClientError {
    /// Whether the operation may nevertheless take effect (Jepsen `info`); otherwise `fail`.
    pub fn outcome_is_unknown(&self) -> bool {
        matches!(self, Self::Indeterminate { .. })
    }
}

/// A successful operation and the node that served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The node that answered.
    pub node: NodeId,
    /// Its answer.
    pub reply: ClientReply,
}

/// What one attempt taught the retry loop.
enum Attempt {
    Done(Result<Served, ClientError>),
    /// Try `next` (a leader hint) at once.
    Redirect(NodeId, String),
    /// Try another node after the backoff.
    Retry(String),
}

/// A client of a metadata group of processes: follows leader hints, bounds every operation.
#[derive(Debug)]
pub struct MetadataClient {
    nodes: BTreeMap<NodeId, String>,
    options: ClientOptions,
    /// The leader as this client last learned it.
    leader_hint: Mutex<Option<NodeId>>,
    /// Where the next untargeted attempt goes, as an index into `nodes`.
    rotation: AtomicUsize,
}

impl MetadataClient {
    /// A client of the nodes at these addresses.
    ///
    /// # Panics
    /// If `nodes` is empty: a caller's bug.
    pub fn new(nodes: BTreeMap<NodeId, String>, options: ClientOptions) -> Self {
        assert!(
            !nodes.is_empty(),
            "a metadata client needs at least one node"
        );
        Self {
            nodes,
            options,
            leader_hint: Mutex::new(None),
            rotation: AtomicUsize::new(0),
        }
    }

    /// The leader this client last learned of.
    pub fn leader_hint(&self) -> Option<NodeId> {
        *self.leader_hint.lock().expect("leader hint lock poisoned")
    }

    fn set_hint(&self, hint: Option<NodeId>) {
        *self.leader_hint.lock().expect("leader hint lock poisoned") = hint;
    }

    /// The hinted leader, else the next node in rotation other than `avoid`.
    fn choose(&self, avoid: Option<NodeId>) -> NodeId {
        if let Some(hint) = self.leader_hint() {
            if Some(hint) != avoid {
                return hint;
            }
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..ids.len() {
            let id = ids[self.rotation.fetch_add(1, Ordering::Relaxed) % ids.len()];
            if Some(id) != avoid {
                return id;
            }
        }
        ids[0]
    }

    /// Sets `key` to `value`.
    pub async fn write(&self, key: &str, value: &str) -> Result<Served, ClientError> {
        self.execute(ClientRequest::Write {
            key: key.to_string(),
            value: value.to_string(),
        })
        .await
    }

    /// A linearizable read of `key`.
    pub async fn read(&self, key: &str) -> Result<Option<String>, ClientError> {
        let served = self
            .execute(ClientRequest::Read {
                key: key.to_string(),
            })
            .await?;
        match served.reply {
            ClientReply::Value(value) => Ok(value),
            other => Err(ClientError::Unavailable {
                attempts: 1,
                last_error: format!("node {} answered a read with {other:?}", served.node),
            }),
        }
    }

    /// Sets `key` to `new` if it holds `expected`; returns whether it did.
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> Result<bool, ClientError> {
        let served = self
            .execute(ClientRequest::CompareAndSet {
                key: key.to_string(),
                expected: expected.map(str::to_string),
                new: new.to_string(),
            })
            .await?;
        match served.reply {
            ClientReply::CompareAndSet(applied) => Ok(applied),
            other => Err(ClientError::Indeterminate {
                node: served.node,
                reason: format!("answered a compare-and-set with {other:?}"),
            }),
        }
    }

    /// Runs one operation: tries the known leader (else the nodes in turn), follows leader hints,
    /// and stops at the first answer, at an unknown outcome, or at the bounds.
    pub async fn execute(&self, request: ClientRequest) -> Result<Served, ClientError> {
        let deadline = Instant::now() + self.options.op_timeout;
        let mut target = self.choose(None);
        let mut last_error = String::from("no attempt made");
        for attempts in 1..=self.options.max_attempts {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Unavailable {
                    attempts: attempts - 1,
                    last_error,
                });
            }
            match self.attempt(target, &request, deadline - now).await {
                Attempt::Done(result) => return result,
                Attempt::Redirect(leader, error) => {
                    last_error = error;
                    self.set_hint(Some(leader));
                    target = leader;
                }
                Attempt::Retry(error) => {
                    last_error = error;
                    self.set_hint(None);
                    target = self.choose(Some(target));
                    let pause = self
                        .options
                        .retry_backoff
                        .min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(ClientError::Unavailable {
            attempts: self.options.max_attempts,
            last_error,
        })
    }

    async fn attempt(&self, node: NodeId, request: &ClientRequest, left: Duration) -> Attempt {
        let addr = &self.nodes[&node];
        let unknown =
            |reason: String| Attempt::Done(Err(ClientError::Indeterminate { node, reason }));
        let mut frames = self.options.frames.clone();
        frames.call_timeout = frames.call_timeout.min(left);
        frames.connect_timeout = frames.connect_timeout.min(left);
        let envelope = NodeRequest::Client(request.clone());
        match call_once(addr, &envelope, &frames).await {
            Err(error @ CallError::NotSent { .. }) => Attempt::Retry(error.to_string()),
            Err(error @ CallError::NoReply { .. }) if request.is_write() => {
                unknown(error.to_string())
            }
            Err(error @ CallError::NoReply { .. }) => Attempt::Retry(error.to_string()),
            Ok(NodeReply::Client(Ok(reply))) => {
                // Only a leader commits a write or serves a linearizable read.
                self.set_hint(Some(node));
                Attempt::Done(Ok(Served { node, reply }))
            }
            Ok(NodeReply::Client(Err(error))) => self.refused(node, request, error),
            Ok(other) if request.is_write() => {
                unknown(format!("reply of the wrong kind: {other:?}"))
            }
            Ok(other) => Attempt::Retry(format!("node {node}: reply of the wrong kind: {other:?}")),
        }
    }

    fn refused(&self, node: NodeId, request: &ClientRequest, error: MetadataError) -> Attempt {
        let text = format!("node {node}: {error}");
        if error.outcome_is_unknown() && request.is_write() {
            return Attempt::Done(Err(ClientError::Indeterminate { node, reason: text }));
        }
        match error {
            MetadataError::NotLeader {
                leader: Some(leader),
            } if leader != node && self.nodes.contains_key(&leader) => {
                Attempt::Redirect(leader, text)
            }
            _ => Attempt::Retry(text),
        }
    }
}

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The node could not be called.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The node answered with a reply of another kind.
    #[error("node at {addr}: unexpected admin reply: {reply}")]
    UnexpectedReply {
        /// The node's address.
        addr: String,
        /// The reply, debug-printed.
        reply: String,
    },
    /// The node refused the request.
    #[error("node at {addr}: {source}")]
    Refused {
        /// The node's address.
        addr: String,
        /// Why.
        #[source]
        source: MetadataError,
    },
}

/// The bound on an `AddVoter` call: the node's own bound on the change (10 s) and a margin.
const ADD_VOTER_CALL_BOUND: Duration = Duration::from_secs(12);

/// The admin endpoint of one node.
#[derive(Clone, Debug)]
pub struct AdminClient {
    addr: String,
    frames: FrameOptions,
}

impl AdminClient {
    /// The admin client of the node at `addr`, with short bounds (1 s connect, 2 s call).
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            frames: FrameOptions {
                connect_timeout: Duration::from_secs(1),
                call_timeout: Duration::from_secs(2),
                ..FrameOptions::default()
            },
        }
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn call(&self, request: AdminRequest) -> Result<AdminReply, AdminError> {
        match call_once(&self.addr, &NodeRequest::Admin(request), &self.frames).await? {
            NodeReply::Admin(reply) => Ok(reply),
            other => Err(AdminError::UnexpectedReply {
                addr: self.addr.clone(),
                reply: format!("{other:?}"),
            }),
        }
    }

    /// The node's status.
    pub async fn status(&self) -> Result<NodeStatus, AdminError> {
        match self.call(AdminRequest::Status).await? {
            AdminReply::Status(status) => Ok(status),
            other => Err(AdminError::UnexpectedReply {
                addr: self.addr.clone(),
                reply: format!("{other:?}"),
            }),
        }
    }

    /// Adds `peers` to the node's peer filter; returns the blocked set after.
    pub async fn block_peers(&self, peers: &[NodeId]) -> Result<Vec<NodeId>, AdminError> {
        self.expect_blocked(AdminRequest::BlockPeers(peers.to_vec()))
            .await
    }

    /// Empties the node's peer filter.
    pub async fn unblock_all_peers(&self) -> Result<(), AdminError> {
        self.expect_blocked(AdminRequest::UnblockAllPeers)
            .await
            .map(|_| ())
    }

    /// Tells the node the address of node `id`, which is being added to the group; returns the
    /// peers it knows after.
    pub async fn add_peer(&self, id: NodeId, addr: &str) -> Result<Vec<NodeId>, AdminError> {
        let request = AdminRequest::AddPeer {
            id,
            addr: addr.to_owned(),
        };
        match self.call(request).await? {
            AdminReply::Peers(peers) => Ok(peers),
            other => Err(AdminError::UnexpectedReply {
                addr: self.addr.clone(),
                reply: format!("{other:?}"),
            }),
        }
    }

    /// Asks the node (the leader) to make node `id` a voter; the voters after the change. A
    /// follower refuses with [`MetadataError::NotLeader`].
    pub async fn add_voter(&self, id: NodeId) -> Result<Vec<NodeId>, AdminError> {
        let frames = FrameOptions {
            call_timeout: ADD_VOTER_CALL_BOUND,
            ..self.frames.clone()
        };
        let request = NodeRequest::Admin(AdminRequest::AddVoter { id });
        match call_once(&self.addr, &request, &frames).await? {
            NodeReply::Admin(AdminReply::Voters(Ok(voters))) => Ok(voters),
            NodeReply::Admin(AdminReply::Voters(Err(source))) => Err(AdminError::Refused {
                addr: self.addr.clone(),
                source,
            }),
            other => Err(AdminError::UnexpectedReply {
                addr: self.addr.clone(),
                reply: format!("{other:?}"),
            }),
        }
    }

    async fn expect_blocked(&self, request: AdminRequest) -> Result<Vec<NodeId>, AdminError> {
        match self.call(request).await? {
            AdminReply::BlockedPeers(blocked) => Ok(blocked),
            other => Err(AdminError::UnexpectedReply {
                addr: self.addr.clone(),
                reply: format!("{other:?}"),
            }),
        }
    }
}
