//! Adding a metadata node to a running group over the admin endpoints, the same for local
//! processes and containers: the new node cut off from the blocked side of a partition, every
//! reachable member told its address, then whoever leads asked to make it a voter, retried
//! within a bound.

use std::time::{Duration, Instant};

use super::client::{AdminClient, AdminError};
use crate::metadata::NodeId;

/// How often the join looks again for a leader or for the new node's listener.
const POLL: Duration = Duration::from_millis(20);

/// The new node and how the group reaches it.
#[derive(Clone, Debug)]
pub struct Joiner {
    /// Its id.
    pub id: NodeId,
    /// Its admin endpoint, as this process reaches it.
    pub admin: AdminClient,
    /// Its address as the members reach it (`host:port`, or a service name and port).
    pub peer_addr: String,
}

/// Why a join did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// An admin call failed.
    #[error("node {id}: {source}")]
    Admin {
        /// The node called.
        id: NodeId,
        /// The error.
        #[source]
        source: AdminError,
    },
    /// No member made the node a voter within the bound.
    #[error("node {id} was not made a voter within {after:?}: {last}")]
    NotAdded {
        /// The new node.
        id: NodeId,
        /// The bound.
        after: Duration,
        /// The last failure seen.
        last: String,
    },
}

/// Makes `joiner` a voter of the group of `members` (each with its admin client; members that
/// cannot be reached now are left out, and do not learn the address), keeping it cut off from
/// `blocked` both ways; returns the voters after. Bounded by `bound`, which starts when the
/// call does.
pub async fn join_group(
    joiner: &Joiner,
    members: &[(NodeId, AdminClient)],
    blocked: &[NodeId],
    bound: Duration,
) -> Result<Vec<NodeId>, JoinError> {
    let deadline = Instant::now() + bound;
    let id = joiner.id;
    // The new node answers its admin endpoint once it listens.
    loop {
        match joiner.admin.status().await {
            Ok(_) => break,
            Err(source) if Instant::now() >= deadline => {
                return Err(JoinError::Admin { id, source })
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
    if !blocked.is_empty() {
        joiner
            .admin
            .block_peers(blocked)
            .await
            .map_err(|source| JoinError::Admin { id, source })?;
    }
    for (member, admin) in members {
        if blocked.contains(member) {
            admin
                .block_peers(&[id])
                .await
                .map_err(|source| JoinError::Admin {
                    id: *member,
                    source,
                })?;
        }
        admin
            .add_peer(id, &joiner.peer_addr)
            .await
            .map_err(|source| JoinError::Admin {
                id: *member,
                source,
            })?;
    }
    let candidates: Vec<&(NodeId, AdminClient)> = members
        .iter()
        .filter(|(member, _)| !blocked.contains(member))
        .collect();
    let mut last = "no leader among the candidates".to_owned();
    while Instant::now() < deadline {
        for (member, admin) in &candidates {
            let leads = matches!(admin.status().await, Ok(status) if status.is_leader);
            if !leads {
                continue;
            }
            match admin.add_voter(id).await {
                Ok(voters) => {
                    tracing::warn!(node = id, ?voters, "metadata node added");
                    return Ok(voters);
                }
                Err(error) => last = format!("node {member}: {error}"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Err(JoinError::NotAdded {
        id,
        after: bound,
        last,
    })
}
