//! [`SqlNode`]: what the compute workloads need of a compute node (a name for the history,
//! single SQL statements outside transactions, and transactions of statements), so that one
//! client code path runs and records every operation against the in-process [`ComputeNode`]
//! and against a compute node process ([`ProcessComputeNode`]) alike.

use std::future::Future;

use helios_cluster::compute::{ComputeError, ComputeNode, Transaction};
use helios_cluster::process::{ComputeClient, ComputeClientError, ComputeTransaction};
use helios_cluster::QueryResult;

/// Why one statement failed, in the terms a history needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementError {
    /// The node's error, for people.
    pub message: String,
    /// Whether a write may nevertheless have taken effect (Jepsen `info`).
    pub outcome_unknown: bool,
}

impl std::fmt::Display for StatementError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A compute node that runs single statements and transactions, and has a name in histories.
pub trait SqlNode: Send + Sync {
    /// A transaction open on the node.
    type Transaction: SqlTransaction;

    /// The node's name in histories and nemesis events: `c<index>`.
    fn name(&self) -> String;

    /// Runs one statement outside any transaction.
    fn statement<'a>(
        &'a self,
        sql: &'a str,
    ) -> impl Future<Output = Result<QueryResult, StatementError>> + Send + 'a;

    /// Opens a transaction (read committed). An error means none was opened.
    fn begin(&self) -> impl Future<Output = Result<Self::Transaction, StatementError>> + Send + '_;
}

/// A transaction open on a [`SqlNode`]: its writes stay invisible to other statements until
/// [`Self::commit`], which applies them on every shard or on none.
pub trait SqlTransaction: Send + Sync + Sized {
    /// Runs one statement inside the transaction.
    fn query<'a>(
        &'a self,
        sql: &'a str,
    ) -> impl Future<Output = Result<QueryResult, StatementError>> + Send + 'a;

    /// Commits. An error whose outcome is unknown may have committed; any other did not.
    fn commit(self) -> impl Future<Output = Result<(), StatementError>> + Send;

    /// Rolls back: no write of the transaction ever becomes visible.
    fn rollback(self) -> impl Future<Output = Result<(), StatementError>> + Send;
}

/// The history name of compute node `index`; the same as [`ComputeNode::name`].
pub fn compute_node_name(index: u32) -> String {
    format!("c{index}")
}

fn in_process_error(error: ComputeError) -> StatementError {
    StatementError {
        outcome_unknown: error.outcome_is_unknown(),
        message: error.to_string(),
    }
}

impl SqlNode for ComputeNode {
    type Transaction = Transaction;

    fn name(&self) -> String {
        ComputeNode::name(self)
    }

    async fn statement(&self, sql: &str) -> Result<QueryResult, StatementError> {
        self.execute(sql).await.map_err(in_process_error)
    }

    async fn begin(&self) -> Result<Transaction, StatementError> {
        Ok(self.begin_transaction().await)
    }
}

/// Dropped before it ends, an in-process transaction rolls back (see [`Transaction`]).
impl SqlTransaction for Transaction {
    async fn query(&self, sql: &str) -> Result<QueryResult, StatementError> {
        Transaction::query(self, sql)
            .await
            .map_err(in_process_error)
    }

    async fn commit(self) -> Result<(), StatementError> {
        Transaction::commit(self).await.map_err(in_process_error)
    }

    async fn rollback(self) -> Result<(), StatementError> {
        Transaction::rollback(self).await.map_err(in_process_error)
    }
}

/// A compute node process (`helios node --role compute`), reached through its client, under the
/// name the in-process node of the same index has.
#[derive(Debug, Clone)]
pub struct ProcessComputeNode {
    index: u32,
    client: ComputeClient,
}

impl ProcessComputeNode {
    /// Compute node `index`, reached through `client`.
    pub fn new(index: u32, client: ComputeClient) -> Self {
        ProcessComputeNode { index, client }
    }

    /// The node's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The node's client.
    pub fn client(&self) -> &ComputeClient {
        &self.client
    }
}

fn process_error(error: ComputeClientError) -> StatementError {
    StatementError {
        outcome_unknown: error.outcome_is_unknown(),
        message: error.to_string(),
    }
}

impl SqlNode for ProcessComputeNode {
    type Transaction = ComputeTransaction;

    fn name(&self) -> String {
        compute_node_name(self.index)
    }

    async fn statement(&self, sql: &str) -> Result<QueryResult, StatementError> {
        self.client.execute(sql).await.map_err(process_error)
    }

    async fn begin(&self) -> Result<ComputeTransaction, StatementError> {
        self.client.begin().await.map_err(process_error)
    }
}

/// Dropped before it ends (the op timed out), a process transaction sends a rollback, as an
/// in-process one rolls back (see [`ComputeTransaction`]).
impl SqlTransaction for ComputeTransaction {
    async fn query(&self, sql: &str) -> Result<QueryResult, StatementError> {
        ComputeTransaction::query(self, sql)
            .await
            .map_err(process_error)
    }

    async fn commit(self) -> Result<(), StatementError> {
        ComputeTransaction::commit(self)
            .await
            .map(|_shards| ())
            .map_err(process_error)
    }

    async fn rollback(self) -> Result<(), StatementError> {
        ComputeTransaction::rollback(self)
            .await
            .map_err(process_error)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_process_node_is_named_like_the_in_process_node_of_its_index() {
        let client = ComputeClient::new("127.0.0.1:1", Duration::from_millis(100));
        assert_eq!(ProcessComputeNode::new(3, client).name(), "c3");
        assert_eq!(compute_node_name(0), "c0");
    }

    #[tokio::test]
    async fn a_process_node_that_is_down_fails_definitely() {
        // Nothing listens on port 1: the statement was never sent, so it had no effect.
        let client = ComputeClient::new("127.0.0.1:1", Duration::from_millis(500));
        let error = ProcessComputeNode::new(1, client)
            .statement("SELECT v FROM cache WHERE id = 1")
            .await
            .unwrap_err();
        assert!(!error.outcome_unknown, "{error}");
    }

    #[tokio::test]
    async fn a_transaction_on_a_process_node_that_is_down_never_begins() {
        let client = ComputeClient::new("127.0.0.1:1", Duration::from_millis(500));
        let error = ProcessComputeNode::new(2, client)
            .begin()
            .await
            .expect_err("nothing listens");
        assert!(!error.outcome_unknown, "{error}");
        assert!(error.message.contains("not sent"), "{error}");
    }
}
