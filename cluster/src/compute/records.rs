//! Commit records: each transaction's decision, kept in the metadata group's Raft key-value
//! map under `tx/<id>`, written once by compare-and-set so the coordinator and any resolver
//! agree on one outcome even if the coordinator crashes between prepare and commit.

use std::time::{Duration, Instant};

use super::two_phase::{Decision, TxId};
use crate::metadata::MetadataError;
use crate::sharding::MetadataService;

/// Why a commit record could not be read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No metadata leader answered within the bound; the record's state is unknown.
    #[error("commit record of {tx}: metadata group unavailable after {after:?}: {last}")]
    Unavailable {
        /// The transaction.
        tx: TxId,
        /// How long it tried.
        after: Duration,
        /// The last error.
        last: MetadataError,
    },
    /// The record holds text that names no decision: a bug or foreign data.
    #[error("commit record of {tx} holds {text:?}, not committed|aborted")]
    Corrupt {
        /// The transaction.
        tx: TxId,
        /// What it holds.
        text: String,
    },
}

/// Reads and writes commit records.
#[derive(Clone, Debug)]
pub struct CommitRecords {
    metadata: MetadataService,
    /// The longest one record call keeps retrying.
    call_timeout: Duration,
}

const RETRY_INTERVAL: Duration = Duration::from_millis(5);

fn record_key(tx: TxId) -> String {
    format!("tx/{}", tx.0)
}

impl CommitRecords {
    /// Records over `metadata`'s Raft group.
    pub fn new(metadata: MetadataService, call_timeout: Duration) -> Self {
        Self {
            metadata,
            call_timeout,
        }
    }

    async fn with_leader<T, F, Fut>(&self, tx: TxId, mut attempt: F) -> Result<T, RecordError>
    where
        F: FnMut(crate::metadata::MetadataNode) -> Fut,
        Fut: std::future::Future<Output = Result<T, MetadataError>>,
    {
        let raft = self.metadata.raft();
        let deadline = Instant::now() + self.call_timeout;
        let mut last = MetadataError::NotLeader { leader: None };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RecordError::Unavailable {
                    tx,
                    after: self.call_timeout,
                    last,
                });
            }
            if let Some(leader) = raft.wait_for_leader(remaining).await {
                match attempt(raft.node(leader).clone()).await {
                    Ok(value) => return Ok(value),
                    Err(error) => last = error,
                }
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// The recorded decision of `tx`, if any (a linearizable read).
    pub async fn lookup(&self, tx: TxId) -> Result<Option<Decision>, RecordError> {
        let key = record_key(tx);
        let text = self
            .with_leader(tx, |node| {
                let key = key.clone();
                async move { node.read(&key).await }
            })
            .await?;
        text.map(|text| Decision::parse(&text).ok_or(RecordError::Corrupt { tx, text }))
            .transpose()
    }

    /// Records `decision` unless a decision is recorded already; returns the one recorded.
    /// A retry after an unknown outcome is safe: the second attempt finds the first's record.
    pub async fn decide(&self, tx: TxId, decision: Decision) -> Result<Decision, RecordError> {
        let key = record_key(tx);
        let set = self
            .with_leader(tx, |node| {
                let key = key.clone();
                async move { node.compare_and_set(&key, None, decision.as_str()).await }
            })
            .await?;
        if set {
            return Ok(decision);
        }
        self.lookup(tx).await?.ok_or(RecordError::Corrupt {
            tx,
            text: "absent after a refused compare-and-set".to_string(),
        })
    }
}
