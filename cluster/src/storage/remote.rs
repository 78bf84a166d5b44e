//! A storage node over TCP: [`serve_storage_node`] puts a [`StorageNode`] behind the framed
//! transport of [`crate::net::tcp`], and [`RemoteStorageNode`] is its client, with the node's
//! own method signatures made async (`import`, `export`, `get`, `count_owned`, plus `count` of
//! stored entries within key bounds, which verifies a copy).
//!
//! This carries a rebalance's bulk copy between processes: export batches from the source,
//! import them into the target. Rows travel as their stored bytes; keys and values are encoded
//! as postcard byte strings (one length prefix and a copy), not as sequences of integers.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::engine::{borrowed, EngineError, Entry, KeyBounds};
use super::node::{NodeError, StorageNode};
use crate::net::tcp::{self, FrameOptions, FramedConnection, ServeOptions, TcpError};
use crate::sharding::StorageNodeId;
use crate::sql::{Row, SqlValue};

/// A SQL value on the wire. [`SqlValue`] is serialized untagged for JSON, which postcard (not
/// self-describing) cannot decode, so the wire form carries an explicit tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireValue {
    /// SQL `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

impl From<&SqlValue> for WireValue {
    fn from(value: &SqlValue) -> Self {
        match value {
            SqlValue::Null => Self::Null,
            SqlValue::Int(i) => Self::Int(*i),
            SqlValue::Text(text) => Self::Text(text.clone()),
        }
    }
}

impl From<WireValue> for SqlValue {
    fn from(value: WireValue) -> Self {
        match value {
            WireValue::Null => Self::Null,
            WireValue::Int(i) => Self::Int(i),
            WireValue::Text(text) => Self::Text(text),
        }
    }
}

impl fmt::Display for WireValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SqlValue::from(self.clone()).fmt(f)
    }
}

/// A request to a storage node; each mirrors the [`StorageNode`] method of the same name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageRequest {
    /// [`StorageNode::import`]: store entries copied from another node (they overwrite).
    Import {
        /// The table.
        table: String,
        /// Stored keys and values.
        #[serde(with = "wire_entries")]
        entries: Vec<Entry>,
    },
    /// [`StorageNode::export`]: up to `limit` entries within the bounds, after `after`.
    Export {
        /// The table.
        table: String,
        /// The lower stored-key bound.
        start: Bound<Vec<u8>>,
        /// The upper stored-key bound.
        end: Bound<Vec<u8>>,
        /// Resume after this key (exclusive).
        after: Option<Vec<u8>>,
        /// At most this many entries.
        limit: u64,
    },
    /// [`StorageNode::get`]: the row under `key`, if the node owns it at `epoch`.
    Get {
        /// The router's epoch.
        epoch: u64,
        /// The table.
        table: String,
        /// The shard key.
        key: WireValue,
    },
    /// The number of stored entries of `table` within the intervals, owned or not.
    Count {
        /// The table.
        table: String,
        /// Stored-key intervals.
        bounds: Vec<KeyBounds>,
    },
    /// [`StorageNode::count_owned`]: the rows of `table` the node owns at exactly `epoch`.
    CountOwned {
        /// The epoch.
        epoch: u64,
        /// The table.
        table: String,
    },
}

impl StorageRequest {
    fn name(&self) -> &'static str {
        match self {
            Self::Import { .. } => "import",
            Self::Export { .. } => "export",
            Self::Get { .. } => "get",
            Self::Count { .. } => "count",
            Self::CountOwned { .. } => "count_owned",
        }
    }
}

/// A storage node's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageReply {
    /// The entries of an import are stored.
    Imported,
    /// The entries of an export, in key order.
    Exported(#[serde(with = "wire_entries")] Vec<Entry>),
    /// The row of a get, as (column, value) pairs, or `None` when absent.
    Row(Option<Vec<(String, WireValue)>>),
    /// The number of a count.
    Count(u64),
    /// The node refused or failed the request.
    Failed(RemoteNodeError),
}

/// Why a remote storage node refused or failed a request: [`NodeError`] in a form that crosses
/// the wire, plus the limits of the wire itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteNodeError {
    /// The node is killed; nothing was done.
    #[error("storage node {node} is down")]
    Down {
        /// The node.
        node: StorageNodeId,
    },
    /// The node is cut off by a partition; nothing was done.
    #[error("storage node {node} is unreachable")]
    Unreachable {
        /// The node.
        node: StorageNodeId,
    },
    /// The node does not own the key at its epoch.
    #[error("storage node {node} does not own the key at epoch {epoch}")]
    NotOwner {
        /// The node.
        node: StorageNodeId,
        /// The node's epoch.
        epoch: u64,
    },
    /// The request's epoch is not the node's.
    #[error("storage node {node} is at epoch {node_epoch}, the request at {request_epoch}")]
    EpochMismatch {
        /// The node.
        node: StorageNodeId,
        /// The node's epoch.
        node_epoch: u64,
        /// The request's epoch.
        request_epoch: u64,
    },
    /// An insert found a row with the same key.
    #[error("duplicate key {key} in table {table:?}")]
    DuplicateKey {
        /// The table.
        table: String,
        /// The key.
        key: WireValue,
    },
    /// The engine failed; a write may or may not have been applied.
    #[error("storage node {node}: storage engine error: {reason}")]
    Engine {
        /// The node.
        node: StorageNodeId,
        /// The engine's message.
        reason: String,
    },
    /// A stored row does not decode.
    #[error("table {table:?}: stored row does not decode: {reason}")]
    CorruptRow {
        /// The table.
        table: String,
        /// The decoder's message.
        reason: String,
    },
    /// The node could not refresh its shard map from the metadata group.
    #[error("storage node could not refresh its shard map: {reason}")]
    Metadata {
        /// The metadata service's message.
        reason: String,
    },
    /// The reply would exceed the frame cap; ask for fewer entries.
    #[error("reply of about {bytes} bytes exceeds the frame maximum of {max_bytes} bytes")]
    ReplyTooLarge {
        /// The estimated size of the reply.
        bytes: u64,
        /// The frame cap.
        max_bytes: u64,
    },
    /// A write intent or transaction state refused the request; nothing was done.
    #[error("{reason}")]
    Transaction {
        /// The node's message.
        reason: String,
    },
}

impl From<NodeError> for RemoteNodeError {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::Down { node } => Self::Down { node },
            NodeError::Unreachable { node } => Self::Unreachable { node },
            NodeError::NotOwner { node, epoch } => Self::NotOwner { node, epoch },
            NodeError::EpochMismatch {
                node,
                node_epoch,
                request_epoch,
            } => Self::EpochMismatch {
                node,
                node_epoch,
                request_epoch,
            },
            NodeError::DuplicateKey { table, key } => Self::DuplicateKey {
                table,
                key: WireValue::from(&key),
            },
            NodeError::Engine {
                node,
                error: EngineError::Io { reason },
            } => Self::Engine { node, reason },
            NodeError::CorruptRow { table, reason } => Self::CorruptRow { table, reason },
            NodeError::Metadata(error) => Self::Metadata {
                reason: error.to_string(),
            },
            error @ (NodeError::Locked { .. } | NodeError::TransactionNotActive { .. }) => {
                Self::Transaction {
                    reason: error.to_string(),
                }
            }
        }
    }
}

/// Why a call to a remote storage node failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The request or its reply did not make it (connection, frame, timeout); a write's
    /// outcome is unknown unless nothing was sent.
    #[error("storage node at {addr}: {source}")]
    Transport {
        /// The node's address.
        addr: SocketAddr,
        /// The transport's error.
        #[source]
        source: TcpError,
    },
    /// The node refused or failed the request.
    #[error("storage node at {addr}: {error}")]
    Node {
        /// The node's address.
        addr: SocketAddr,
        /// The node's error.
        error: RemoteNodeError,
    },
    /// The reply was of the wrong kind for the request: the peer speaks another protocol.
    #[error("storage node at {addr}: reply of the wrong kind to {request}: {reply}")]
    UnexpectedReply {
        /// The node's address.
        addr: SocketAddr,
        /// The request's name.
        request: &'static str,
        /// The reply, debug-printed.
        reply: String,
    },
}

impl RemoteError {
    /// Whether a write that failed with this error may nevertheless have been applied.
    pub fn outcome_is_unknown(&self) -> bool {
        match self {
            Self::Transport { source, .. } => !matches!(
                source,
                TcpError::Connect { .. } | TcpError::FrameTooLarge { .. } | TcpError::Encode(_)
            ),
            Self::Node { error, .. } => matches!(error, RemoteNodeError::Engine { .. }),
            Self::UnexpectedReply { .. } => true,
        }
    }
}

/// The encoded size of an export reply is at most this much more than its keys and values:
/// two length prefixes per entry (at most 10 bytes each as varints) plus the reply's own tags.
fn reply_size_bound(entries: &[Entry]) -> u64 {
    16 + entries
        .iter()
        .map(|(k, v)| (k.len() + v.len() + 20) as u64)
        .sum::<u64>()
}

/// Answers one request from `node`. Import, export and count are synchronous engine calls, as
/// the in-process rebalancer's copy batches are.
async fn handle(
    node: &StorageNode,
    request: StorageRequest,
    max_frame_bytes: usize,
) -> StorageReply {
    let reply = match request {
        StorageRequest::Import { table, entries } => node
            .import(&table, &entries)
            .map(|()| StorageReply::Imported),
        StorageRequest::Export {
            table,
            start,
            end,
            after,
            limit,
        } => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            match node.export(&table, &start, &end, after.as_deref(), limit) {
                Ok(entries) => {
                    let bytes = reply_size_bound(&entries);
                    if bytes > max_frame_bytes as u64 {
                        return StorageReply::Failed(RemoteNodeError::ReplyTooLarge {
                            bytes,
                            max_bytes: max_frame_bytes as u64,
                        });
                    }
                    Ok(StorageReply::Exported(entries))
                }
                Err(error) => Err(error),
            }
        }
        StorageRequest::Get { epoch, table, key } => node
            .get(epoch, &table, &SqlValue::from(key))
            .await
            .map(|row| {
                StorageReply::Row(row.map(|row| {
                    row.iter()
                        .map(|(column, value)| (column.clone(), WireValue::from(value)))
                        .collect()
                }))
            }),
        StorageRequest::Count { table, bounds } => count_within(node, &table, &bounds),
        StorageRequest::CountOwned { epoch, table } => node
            .count_owned(epoch, &table)
            .await
            .map(|n| StorageReply::Count(n as u64)),
    };
    reply.unwrap_or_else(|error| StorageReply::Failed(error.into()))
}

fn count_within(
    node: &StorageNode,
    table: &str,
    bounds: &[KeyBounds],
) -> Result<StorageReply, NodeError> {
    let engine = node.serving()?;
    let mut n = 0u64;
    for (start, end) in bounds {
        n += engine
            .count(table, borrowed(start), borrowed(end))
            .map_err(|error| NodeError::Engine {
                node: node.id(),
                error,
            })? as u64;
    }
    Ok(StorageReply::Count(n))
}

/// Serves `node` on `addr` (use `127.0.0.1:0` for a free loopback port) with default bounds.
/// Returns the bound address and the server's task; aborting it closes every connection.
pub async fn serve_storage_node(
    node: Arc<StorageNode>,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    serve_storage_node_with(node, addr, ServeOptions::default()).await
}

/// [`serve_storage_node`] with explicit bounds.
pub async fn serve_storage_node_with(
    node: Arc<StorageNode>,
    addr: SocketAddr,
    options: ServeOptions,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let max_frame_bytes = options.max_frame_bytes;
    tracing::info!(node = %node.id(), addr = %bound, "storage node serving over tcp");
    let task = tokio::spawn(tcp::serve(listener, options, move |request| {
        let node = Arc::clone(&node);
        async move { handle(&node, request, max_frame_bytes).await }
    }));
    Ok((bound, task))
}

type Connection = FramedConnection<StorageRequest, StorageReply>;

/// A client of a storage node served by [`serve_storage_node`]. Calls on one client are
/// serialized over one connection, opened on first use and reopened after a transport error.
#[derive(Debug)]
pub struct RemoteStorageNode {
    addr: SocketAddr,
    options: FrameOptions,
    /// Invariant: `None`, or a connection with no call in flight and no unread reply.
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl RemoteStorageNode {
    /// A client of the node at `addr`; it connects on the first call.
    pub fn new(addr: SocketAddr, options: FrameOptions) -> Self {
        Self {
            addr,
            options,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// The node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn call(&self, request: &StorageRequest) -> Result<StorageReply, RemoteError> {
        let transport = |source| RemoteError::Transport {
            addr: self.addr,
            source,
        };
        let mut slot = self.connection.lock().await;
        let connection = match slot.as_mut() {
            Some(connection) => connection,
            None => slot.insert(
                Connection::connect(self.addr, self.options.clone())
                    .await
                    .map_err(transport)?,
            ),
        };
        match tcp::call(connection, request).await {
            Ok(StorageReply::Failed(error)) => Err(RemoteError::Node {
                addr: self.addr,
                error,
            }),
            Ok(reply) => Ok(reply),
            Err(error) => {
                // Nothing was sent for these two, so the connection is still in step.
                if !matches!(error, TcpError::FrameTooLarge { .. } | TcpError::Encode(_)) {
                    *slot = None;
                }
                Err(transport(error))
            }
        }
    }

    fn unexpected(&self, request: &StorageRequest, reply: &StorageReply) -> RemoteError {
        RemoteError::UnexpectedReply {
            addr: self.addr,
            request: request.name(),
            reply: format!("{reply:?}"),
        }
    }

    /// [`StorageNode::import`] on the remote node. A batch whose request exceeds the frame cap
    /// is refused before sending, as [`TcpError::FrameTooLarge`].
    pub async fn import(&self, table: &str, entries: &[Entry]) -> Result<(), RemoteError> {
        let request = StorageRequest::Import {
            table: table.to_string(),
            entries: entries.to_vec(),
        };
        match self.call(&request).await? {
            StorageReply::Imported => Ok(()),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// [`StorageNode::export`] on the remote node.
    pub async fn export(
        &self,
        table: &str,
        start: &Bound<Vec<u8>>,
        end: &Bound<Vec<u8>>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, RemoteError> {
        let request = StorageRequest::Export {
            table: table.to_string(),
            start: start.clone(),
            end: end.clone(),
            after: after.map(<[u8]>::to_vec),
            limit: limit as u64,
        };
        match self.call(&request).await? {
            StorageReply::Exported(entries) => Ok(entries),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// [`StorageNode::get`] on the remote node.
    pub async fn get(
        &self,
        epoch: u64,
        table: &str,
        key: &SqlValue,
    ) -> Result<Option<Row>, RemoteError> {
        let request = StorageRequest::Get {
            epoch,
            table: table.to_string(),
            key: WireValue::from(key),
        };
        match self.call(&request).await? {
            StorageReply::Row(row) => Ok(row.map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(column, value)| (column, SqlValue::from(value)))
                    .collect()
            })),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    /// The number of entries of `table` the remote node stores within the intervals, whether
    /// it owns them or not (what a copy put there).
    pub async fn count(&self, table: &str, bounds: &[KeyBounds]) -> Result<usize, RemoteError> {
        let request = StorageRequest::Count {
            table: table.to_string(),
            bounds: bounds.to_vec(),
        };
        self.expect_count(&request).await
    }

    /// [`StorageNode::count_owned`] on the remote node.
    pub async fn count_owned(&self, epoch: u64, table: &str) -> Result<usize, RemoteError> {
        let request = StorageRequest::CountOwned {
            epoch,
            table: table.to_string(),
        };
        self.expect_count(&request).await
    }

    async fn expect_count(&self, request: &StorageRequest) -> Result<usize, RemoteError> {
        match self.call(request).await? {
            StorageReply::Count(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            other => Err(self.unexpected(request, &other)),
        }
    }
}

/// Entries as a sequence of (byte string, byte string) pairs: postcard writes a byte string as
/// one length and a copy, where a plain `Vec<u8>` would go element by element.
mod wire_entries {
    use std::fmt;

    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    use super::Entry;

    /// Room reserved up front at most, whatever length the peer claims: the vector grows with
    /// the entries that actually decode.
    const MAX_PREALLOCATED_ENTRIES: usize = 4096;

    pub fn serialize<S: Serializer>(entries: &[Entry], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(entries.len()))?;
        for (key, value) in entries {
            seq.serialize_element(&(Bytes::new(key), Bytes::new(value)))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Entry>, D::Error> {
        deserializer.deserialize_seq(EntriesVisitor)
    }

    struct EntriesVisitor;

    impl<'de> Visitor<'de> for EntriesVisitor {
        type Value = Vec<Entry>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence of (key, value) byte strings")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Entry>, A::Error> {
            let hint = seq.size_hint().unwrap_or(0);
            let mut entries = Vec::with_capacity(hint.min(MAX_PREALLOCATED_ENTRIES));
            // Bounded by the input: each element consumes at least two bytes of it.
            while let Some((key, value)) = seq.next_element::<(ByteBuf, ByteBuf)>()? {
                entries.push((key.into_vec(), value.into_vec()));
            }
            Ok(entries)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tcp::{decode, encode, DEFAULT_MAX_FRAME_BYTES};

    #[test]
    fn entries_travel_as_byte_strings() {
        let entries = vec![(vec![1u8; 10], vec![2u8; 300])];
        let request = StorageRequest::Import {
            table: "t".to_string(),
            entries,
        };
        let frame = encode(&request, DEFAULT_MAX_FRAME_BYTES).expect("encodes");
        // Tag, table, count, then each byte string as one varint length and its bytes.
        assert_eq!(frame.len(), 1 + 2 + 1 + (1 + 10) + (2 + 300));
        let back: StorageRequest = decode(&frame).expect("decodes");
        assert_eq!(back, request);
    }

    #[test]
    fn a_hostile_entry_count_does_not_reserve_memory_or_decode() {
        // Import into "t" claiming u64::MAX entries, with none following.
        let mut frame = vec![0u8, 1, b't'];
        frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let error = decode::<StorageRequest>(&frame).expect_err("no entries follow");
        assert!(matches!(error, TcpError::Decode(_)));
    }

    #[test]
    fn every_node_error_keeps_its_kind_on_the_wire() {
        let node = StorageNodeId(3);
        let error = RemoteNodeError::from(NodeError::DuplicateKey {
            table: "t".to_string(),
            key: SqlValue::Int(5),
        });
        assert_eq!(error.to_string(), "duplicate key 5 in table \"t\"");
        let error = RemoteNodeError::from(NodeError::NotOwner { node, epoch: 9 });
        let reply = StorageReply::Failed(error.clone());
        let back: StorageReply =
            decode(&encode(&reply, DEFAULT_MAX_FRAME_BYTES).expect("encodes")).expect("decodes");
        assert_eq!(back, StorageReply::Failed(error));
    }
}
