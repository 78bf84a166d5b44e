//! [`ComputeClient`]: a client of one compute node process, with the seed's node-level API
//! (`query`, `execute`, `cache_contains`) over TCP, one fresh connection per call (as
//! [`super::client`] explains, so a dead node's refusal is never mistaken for a lost reply).

use std::time::Duration;

use super::client::{call_once, CallError};
use super::compute_protocol::{
    ComputeAdminRequest, ComputeClientReply, ComputeClientRequest, ComputeFailure, ComputeReply,
    ComputeRequest, ComputeStatus,
};
use crate::net::tcp::FrameOptions;
use crate::sql::{SqlValue, ToSqlValue};
use crate::storage::remote::WireValue;
use crate::storage_cluster::{QueryResult, ResultRow};

/// Why a call to a compute node did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeClientError {
    /// Nothing was sent (the process is down): the statement certainly had no effect.
    #[error("compute node at {addr}: not sent: {reason}")]
    NotSent {
        /// The node's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Sent without a whole reply: a write may have taken effect.
    #[error("compute node at {addr}: no reply: {reason}")]
    NoReply {
        /// The node's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The node refused or failed the request.
    #[error(transparent)]
    Failed(#[from] ComputeFailure),
    /// The node answered with a reply of another kind.
    #[error("compute node at {addr}: unexpected reply {reply}")]
    Unexpected {
        /// The node's address.
        addr: String,
        /// The reply, for people.
        reply: String,
    },
}

impl ComputeClientError {
    /// Whether a write may nevertheless have taken effect (Jepsen `info`).
    pub fn outcome_is_unknown(&self) -> bool {
        match self {
            Self::NotSent { .. } => false,
            Self::NoReply { .. } | Self::Unexpected { .. } => true,
            Self::Failed(failure) => failure.outcome_unknown,
        }
    }
}

/// A client of one compute node.
#[derive(Clone, Debug)]
pub struct ComputeClient {
    addr: String,
    frames: FrameOptions,
}

impl ComputeClient {
    /// A client of the node at `addr`; one call is bounded by `call_timeout`, which should
    /// outlast the node's statement bound.
    pub fn new(addr: impl Into<String>, call_timeout: Duration) -> Self {
        Self {
            addr: addr.into(),
            frames: FrameOptions {
                connect_timeout: Duration::from_millis(500),
                call_timeout,
                ..FrameOptions::default()
            },
        }
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn call(&self, request: ComputeRequest) -> Result<ComputeReply, ComputeClientError> {
        call_once(&self.addr, &request, &self.frames)
            .await
            .map_err(|error| match error {
                CallError::NotSent { addr, reason } => ComputeClientError::NotSent { addr, reason },
                CallError::NoReply { addr, source } => ComputeClientError::NoReply {
                    addr,
                    reason: source.to_string(),
                },
            })
    }

    async fn client(
        &self,
        request: ComputeClientRequest,
    ) -> Result<ComputeClientReply, ComputeClientError> {
        match self.call(ComputeRequest::Client(request)).await? {
            ComputeReply::Client(result) => Ok(result?),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, reply: &impl std::fmt::Debug) -> ComputeClientError {
        ComputeClientError::Unexpected {
            addr: self.addr.clone(),
            reply: format!("{reply:?}"),
        }
    }

    /// Runs one statement.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, ComputeClientError> {
        self.statement(ComputeClientRequest::Sql(sql.to_string()))
            .await
    }

    async fn statement(
        &self,
        request: ComputeClientRequest,
    ) -> Result<QueryResult, ComputeClientError> {
        match self.client(request).await? {
            ComputeClientReply::Rows {
                rows,
                rows_affected,
            } => Ok(QueryResult {
                rows: rows
                    .into_iter()
                    .map(|columns| ResultRow {
                        columns: columns
                            .into_iter()
                            .map(|(column, value)| (column, SqlValue::from(value)))
                            .collect(),
                    })
                    .collect(),
                rows_affected,
            }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Runs one write (the same as [`Self::query`]; the seed's name for writes).
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, ComputeClientError> {
        self.query(sql).await
    }

    /// Creates `table` keyed by `shard_key`.
    pub async fn create_table(
        &self,
        table: &str,
        shard_key: &str,
    ) -> Result<(), ComputeClientError> {
        let request = ComputeClientRequest::CreateTable {
            table: table.to_string(),
            shard_key: shard_key.to_string(),
        };
        match self.client(request).await? {
            ComputeClientReply::Created => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Opens a transaction on the node (read committed): its writes stay invisible to every
    /// other statement until [`ComputeTransaction::commit`], which applies them on every shard
    /// or on none.
    pub async fn begin(&self) -> Result<ComputeTransaction, ComputeClientError> {
        match self.client(ComputeClientRequest::Begin).await? {
            ComputeClientReply::Began { id } => Ok(ComputeTransaction {
                client: self.clone(),
                id,
                ended: false,
            }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Whether any table's row under `key` is in the node's cache.
    pub async fn cache_contains<K: ToSqlValue>(&self, key: K) -> Result<bool, ComputeClientError> {
        let key = WireValue::from(&key.to_sql_value());
        match self
            .client(ComputeClientRequest::CacheContains(key))
            .await?
        {
            ComputeClientReply::Cached(cached) => Ok(cached),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The node's status.
    pub async fn status(&self) -> Result<ComputeStatus, ComputeClientError> {
        match self
            .call(ComputeRequest::Admin(ComputeAdminRequest::Status))
            .await?
        {
            ComputeReply::Admin(status) => Ok(status),
            other => Err(self.unexpected(&other)),
        }
    }
}

/// A transaction open on one compute node (the seed's `begin_transaction`); it ends with
/// [`Self::commit`] or [`Self::rollback`]. Dropped open (a caller that gave up waiting), it
/// sends a rollback from a task of the current tokio runtime, as an in-process transaction
/// rolls back when dropped; if that rollback is lost too, its locks last until a writer that
/// waits on them presumes it abandoned ([`super::ABANDON_AFTER`]) and aborts it.
#[derive(Debug)]
pub struct ComputeTransaction {
    client: ComputeClient,
    id: String,
    /// Invariant: set once a commit or rollback was sent; the node decides from then on.
    ended: bool,
}

impl Drop for ComputeTransaction {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, id) = (self.client.clone(), self.id.clone());
        runtime.spawn(async move {
            if let Err(error) = client
                .client(ComputeClientRequest::Rollback(id.clone()))
                .await
            {
                tracing::debug!(txn = %id, %error, "rollback of a dropped transaction failed");
            }
        });
    }
}

impl ComputeTransaction {
    /// The transaction's id: its commit record is `txn/<id>` in the metadata group.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs one statement inside the transaction.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, ComputeClientError> {
        self.client
            .statement(ComputeClientRequest::InTransaction {
                txn: self.id.clone(),
                sql: sql.to_string(),
            })
            .await
    }

    /// Runs one write inside the transaction (the same as [`Self::query`]).
    pub async fn execute(&self, sql: &str) -> Result<QueryResult, ComputeClientError> {
        self.query(sql).await
    }

    /// Commits: every write becomes visible, on every shard it touched, or none does. Returns
    /// the shards the transaction wrote or locked rows on.
    pub async fn commit(mut self) -> Result<Vec<usize>, ComputeClientError> {
        self.ended = true;
        match self
            .client
            .client(ComputeClientRequest::Commit(self.id.clone()))
            .await?
        {
            ComputeClientReply::Committed { shards } => Ok(shards),
            other => Err(self.client.unexpected(&other)),
        }
    }

    /// Rolls back: no write of the transaction ever becomes visible.
    pub async fn rollback(mut self) -> Result<(), ComputeClientError> {
        self.ended = true;
        match self
            .client
            .client(ComputeClientRequest::Rollback(self.id.clone()))
            .await?
        {
            ComputeClientReply::RolledBack => Ok(()),
            other => Err(self.client.unexpected(&other)),
        }
    }
}
