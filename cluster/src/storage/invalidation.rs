//! The invalidation bus: storage nodes publish every committed write's (table, key) before
//! acknowledging it, and every compute node subscribes. The channel is a bounded tokio
//! broadcast; a subscriber that falls behind by more than its capacity learns that it lagged
//! and must drop its whole cache.
//!
//! Every invalidation carries a sequence number assigned under one lock together with the send,
//! so subscribers receive them in sequence order, and a reader can ask "has my node applied
//! every invalidation published before I began?" by comparing with [`InvalidationBus::published_seq`].

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::sql::SqlValue;

/// How many invalidations a subscriber may fall behind before it lags.
pub const DEFAULT_BUS_CAPACITY: usize = 4096;

/// One committed write: the row of `table` under shard key `key` changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalidation {
    /// Position in the bus; dense from 1.
    pub seq: u64,
    /// The table.
    pub table: String,
    /// The shard key.
    pub key: SqlValue,
}

#[derive(Debug)]
struct BusState {
    /// Invariant: the seq of the last invalidation sent, 0 before any.
    published_seq: u64,
    sender: broadcast::Sender<Invalidation>,
}

/// The bus. Clones share it.
#[derive(Clone, Debug)]
pub struct InvalidationBus {
    state: Arc<Mutex<BusState>>,
}

impl Default for InvalidationBus {
    fn default() -> Self {
        Self::new(DEFAULT_BUS_CAPACITY)
    }
}

impl InvalidationBus {
    /// A bus whose subscribers may fall `capacity` invalidations behind.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        Self {
            state: Arc::new(Mutex::new(BusState {
                published_seq: 0,
                sender,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BusState> {
        self.state
            .lock()
            .expect("invalidation bus lock poisoned: a panic happened while it was held")
    }

    /// Publishes a committed write; returns its seq. Synchronous: when it returns, every
    /// current subscriber's channel holds the invalidation.
    pub fn publish(&self, table: &str, key: &SqlValue) -> u64 {
        let mut state = self.lock();
        state.published_seq += 1;
        let invalidation = Invalidation {
            seq: state.published_seq,
            table: table.to_string(),
            key: key.clone(),
        };
        // An error only means there is no subscriber, which is fine.
        let _ = state.sender.send(invalidation);
        state.published_seq
    }

    /// A receiver of every invalidation published from now on, and the seq before the first
    /// one it will receive.
    pub fn subscribe(&self) -> (broadcast::Receiver<Invalidation>, u64) {
        let state = self.lock();
        (state.sender.subscribe(), state.published_seq)
    }

    /// The seq of the last invalidation published.
    pub fn published_seq(&self) -> u64 {
        self.lock().published_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_receive_in_seq_order_and_laggards_are_told() {
        let bus = InvalidationBus::new(2);
        let (mut rx, start) = bus.subscribe();
        assert_eq!(start, 0);
        for key in 0..3 {
            bus.publish("t", &SqlValue::Int(key));
        }
        assert_eq!(bus.published_seq(), 3);
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(1))
        ));
        assert_eq!(rx.try_recv().map(|i| i.seq), Ok(2));
        assert_eq!(rx.try_recv().map(|i| i.seq), Ok(3));
    }
}
