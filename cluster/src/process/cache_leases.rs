//! A data member's side of the compute nodes' cache leases: who subscribed, the delivery of
//! the keys of every entry the member sees committed, and the watermark that gates what the
//! member exposes.
//!
//! The rule (see [`super::compute_protocol`] for the compute node's side): the member answers a
//! read at commit index `i`, or acknowledges a write at index `i`, only when every subscriber
//! whose lease is live has acknowledged the keys of every entry up to `i`. A subscriber that
//! does not acknowledge holds the member's answers until its lease ends, at most
//! [`CacheLeaseOptions::lease`]; then it is dropped, and a later subscription starts a new
//! session, which makes the compute node drop its cache.
//!
//! A member that restarts exposes nothing for one lease duration: a compute node may still
//! count a lease granted by the member's previous incarnation live, and the new incarnation
//! does not know it. A member on a new data directory has no previous incarnation.
//!
//! Keys are published by a member whose record names it primary, as its commit index
//! advances. A mirror publishes nothing, so each write is delivered once. When a member's record
//! first names it primary of an epoch, it tells every subscriber to drop its whole cache
//! (through its commit index then) and exposes nothing until they acknowledged: the old primary
//! may have committed entries it never delivered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::compute_protocol::{ComputeReply, ComputeRequest, Invalidation, Lease, LeaseId};
use super::shard_protocol::LatencySummary;
use crate::metadata::NodeId;
use crate::net::tcp::{self, FrameOptions, FramedConnection};
use crate::net::tcp_transport::resolve;
use crate::replication::LogIndex;

/// The bounds of cache leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheLeaseOptions {
    /// How long a lease lasts after the member took the subscription request; also the longest
    /// a silent subscriber holds the member's answers.
    pub lease: Duration,
    /// Bounds of one delivery to a compute node.
    pub frames: FrameOptions,
    /// How long a delivery that failed waits before it is tried again.
    pub retry: Duration,
}

impl Default for CacheLeaseOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_millis(500),
            frames: FrameOptions {
                connect_timeout: Duration::from_millis(100),
                call_timeout: Duration::from_millis(200),
                ..FrameOptions::default()
            },
            retry: Duration::from_millis(5),
        }
    }
}

/// One subscriber: a compute node.
#[derive(Debug)]
struct Subscriber {
    addr: String,
    lease: LeaseId,
    /// Invariant: the member counts the lease live while `Instant::now() < until`.
    until: Instant,
    /// Every entry up to here was delivered and acknowledged.
    acked: LogIndex,
    queue: mpsc::UnboundedSender<Batch>,
    task: JoinHandle<()>,
}

/// Keys published together: every entry up to `through`, published at `at`; with
/// `drop_all`, every row of the shard.
#[derive(Debug)]
struct Batch {
    through: LogIndex,
    keys: Vec<Vec<u8>>,
    drop_all: bool,
    at: Instant,
}

#[derive(Debug)]
struct Inner {
    /// Every entry up to here was published.
    published: LogIndex,
    /// The epoch in which this member last became primary and told subscribers to drop all.
    primary_epoch: Option<u64>,
    sessions: u64,
    subscribers: BTreeMap<u32, Subscriber>,
}

/// The subscriptions of one data member. Shared by its event loop (which publishes) and its
/// listener's handlers (which subscribe and wait).
#[derive(Debug)]
pub(crate) struct CacheLeases {
    shard: usize,
    member: NodeId,
    incarnation: u64,
    /// Every lease granted by an earlier incarnation has ended by then.
    quiet_until: Instant,
    options: CacheLeaseOptions,
    inner: Mutex<Inner>,
    /// Woken on every acknowledgement, publication and subscription change.
    changed: Notify,
    /// Publication to acknowledgement, per delivery and subscriber, in microseconds.
    delivery: Mutex<Histogram<u64>>,
}

impl CacheLeases {
    /// No subscribers; every entry up to `committed` counts as published (a compute node's
    /// session with this incarnation starts after it, with an empty cache). `restarted`: an
    /// earlier incarnation may have granted leases, so wait one lease before exposing anything.
    pub(crate) fn new(
        shard: usize,
        member: NodeId,
        committed: LogIndex,
        restarted: bool,
        options: CacheLeaseOptions,
    ) -> Arc<Self> {
        let quiet_until = if restarted {
            Instant::now() + options.lease
        } else {
            Instant::now()
        };
        Arc::new(Self {
            shard,
            member,
            incarnation: rand::random(),
            quiet_until,
            options,
            inner: Mutex::new(Inner {
                published: committed,
                primary_epoch: None,
                sessions: 0,
                subscribers: BTreeMap::new(),
            }),
            changed: Notify::new(),
            delivery: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("cache lease lock poisoned: a panic happened while it was held")
    }

    /// Grants compute node `compute` (listening at `addr`) a lease, or renews its live one.
    pub(crate) fn subscribe(self: &Arc<Self>, compute: u32, addr: String) -> Lease {
        let now = Instant::now();
        let mut inner = self.inner();
        let until = now + self.options.lease;
        let live = inner
            .subscribers
            .get(&compute)
            .is_some_and(|sub| sub.until > now && sub.addr == addr);
        if live {
            let sub = inner
                .subscribers
                .get_mut(&compute)
                .expect("checked just above");
            sub.until = until;
            return self.lease(sub.lease);
        }
        inner.sessions += 1;
        let lease = LeaseId {
            incarnation: self.incarnation,
            session: inner.sessions,
        };
        let (queue, batches) = mpsc::unbounded_channel();
        let task = tokio::spawn(deliver(
            Arc::clone(self),
            compute,
            lease,
            addr.clone(),
            batches,
        ));
        let fresh = Subscriber {
            addr,
            lease,
            until,
            acked: inner.published,
            queue,
            task,
        };
        if let Some(old) = inner.subscribers.insert(compute, fresh) {
            old.task.abort();
        }
        drop(inner);
        tracing::debug!(
            shard = self.shard,
            member = self.member,
            compute,
            ?lease,
            "cache lease granted"
        );
        self.changed.notify_waiters();
        self.lease(lease)
    }

    fn lease(&self, id: LeaseId) -> Lease {
        Lease {
            id,
            duration_ms: u64::try_from(self.options.lease.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Publishes the keys of the entries after the last published index up to `through`.
    pub(crate) fn publish(&self, through: LogIndex, keys: Vec<Vec<u8>>) {
        let mut inner = self.inner();
        if through <= inner.published {
            return;
        }
        Self::send(&mut inner, through, &keys, false);
        drop(inner);
        self.changed.notify_waiters();
    }

    /// The epoch in which this member last became primary (and told subscribers to drop all).
    pub(crate) fn primary_epoch(&self) -> Option<u64> {
        self.inner().primary_epoch
    }

    /// This member became primary of `epoch` with commit index `committed`: every subscriber
    /// drops its whole cache, and nothing is exposed until each acknowledged (or its lease
    /// ended).
    pub(crate) fn became_primary(&self, epoch: u64, committed: LogIndex) {
        let mut inner = self.inner();
        inner.primary_epoch = Some(epoch);
        let through = committed.max(inner.published);
        for sub in inner.subscribers.values_mut() {
            // Whatever they acknowledged before, the drop is what exposure now waits for.
            sub.acked = 0;
        }
        Self::send(&mut inner, through, &[], true);
        drop(inner);
        tracing::debug!(
            shard = self.shard,
            member = self.member,
            epoch,
            through,
            "primary: subscribers drop their caches"
        );
        self.changed.notify_waiters();
    }

    /// Queues a batch through `through` for every live subscriber, drops the others.
    fn send(inner: &mut Inner, through: LogIndex, keys: &[Vec<u8>], drop_all: bool) {
        let now = Instant::now();
        inner.published = through;
        inner.subscribers.retain(|_, sub| {
            let live = sub.until > now;
            if live {
                // The receiver lives as long as the task, which ends only with the subscriber.
                let _ = sub.queue.send(Batch {
                    through,
                    keys: keys.to_vec(),
                    drop_all,
                    at: now,
                });
            } else {
                sub.task.abort();
            }
            live
        });
    }

    /// The last index published.
    pub(crate) fn published(&self) -> LogIndex {
        self.inner().published
    }

    /// Live subscribers, by compute node id.
    pub(crate) fn live_subscribers(&self) -> Vec<u32> {
        let now = Instant::now();
        self.inner()
            .subscribers
            .iter()
            .filter(|(_, sub)| sub.until > now)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Quantiles of the delivery latency so far.
    pub(crate) fn delivery(&self) -> Option<LatencySummary> {
        let histogram = self
            .delivery
            .lock()
            .expect("delivery histogram lock poisoned: a panic happened while it was held");
        (!histogram.is_empty()).then(|| LatencySummary {
            n: histogram.len(),
            p50_us: histogram.value_at_quantile(0.5),
            p99_us: histogram.value_at_quantile(0.99),
            max_us: histogram.max(),
        })
    }

    fn acknowledged(&self, compute: u32, lease: LeaseId, through: LogIndex, published: Instant) {
        let micros = u64::try_from(published.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Ok(mut histogram) = self.delivery.lock() {
            histogram.saturating_record(micros.max(1));
        }
        let mut inner = self.inner();
        if let Some(sub) = inner.subscribers.get_mut(&compute) {
            if sub.lease == lease {
                sub.acked = sub.acked.max(through);
            }
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    fn is_current(&self, compute: u32, lease: LeaseId) -> Option<Instant> {
        self.inner()
            .subscribers
            .get(&compute)
            .filter(|sub| sub.lease == lease)
            .map(|sub| sub.until)
    }

    /// Waits until everything up to `index` is published and acknowledged by every subscriber
    /// whose lease is live (a lease that ends counts as acknowledged). False at `deadline`.
    pub(crate) async fn wait_through(&self, index: LogIndex, deadline: Instant) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let next_expiry = {
                let inner = self.inner();
                if now < self.quiet_until {
                    Some(self.quiet_until)
                } else if inner.published < index {
                    Some(deadline)
                } else {
                    inner
                        .subscribers
                        .values()
                        .filter(|sub| sub.until > now && sub.acked < index)
                        .map(|sub| sub.until)
                        .min()
                }
            };
            let Some(wake) = next_expiry else {
                return true;
            };
            if now >= deadline {
                return false;
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake.min(deadline)) => {}
            }
        }
    }

    /// Stops every delivery.
    pub(crate) fn shutdown(&self) {
        let mut inner = self.inner();
        for sub in inner.subscribers.values() {
            sub.task.abort();
        }
        inner.subscribers.clear();
    }
}

/// Delivers each published batch to one subscriber, in order, over one kept connection,
/// retrying until it is acknowledged or the lease ends (then the subscriber is gone).
async fn deliver(
    leases: Arc<CacheLeases>,
    compute: u32,
    lease: LeaseId,
    addr: String,
    mut batches: mpsc::UnboundedReceiver<Batch>,
) {
    type Connection = FramedConnection<ComputeRequest, ComputeReply>;
    let frames = leases.options.frames.clone();
    let mut connection: Option<Connection> = None;
    while let Some(Batch {
        mut through,
        mut keys,
        mut drop_all,
        at,
    }) = batches.recv().await
    {
        // Everything queued meanwhile goes in the same delivery (timed from the first).
        while let Ok(more) = batches.try_recv() {
            through = more.through;
            keys.extend(more.keys);
            drop_all |= more.drop_all;
        }
        keys.sort_unstable();
        keys.dedup();
        let request = ComputeRequest::Invalidate(Invalidation {
            shard: leases.shard,
            member: leases.member,
            lease,
            through,
            keys,
            drop_all,
        });
        loop {
            let Some(until) = leases.is_current(compute, lease) else {
                return;
            };
            if Instant::now() >= until {
                // The lease ended: the compute node stops serving cached rows by itself.
                return;
            }
            if connection.is_none() {
                connection = match resolve(&addr, frames.connect_timeout).await {
                    Ok(socket) => Connection::connect(socket, frames.clone()).await.ok(),
                    Err(_) => None,
                };
            }
            if let Some(open) = connection.as_mut() {
                match tcp::call(open, &request).await {
                    Ok(ComputeReply::Invalidated) => {
                        leases.acknowledged(compute, lease, through, at);
                        break;
                    }
                    Ok(_) | Err(_) => connection = None,
                }
            }
            tokio::time::sleep(leases.options.retry).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(lease_ms: u64) -> CacheLeaseOptions {
        CacheLeaseOptions {
            lease: Duration::from_millis(lease_ms),
            ..CacheLeaseOptions::default()
        }
    }

    #[tokio::test]
    async fn with_no_subscribers_everything_published_is_exposable_after_the_quiet_period() {
        let leases = CacheLeases::new(0, 0, 5, true, options(100));
        let started = Instant::now();
        assert!(
            !leases
                .wait_through(5, started + Duration::from_millis(20))
                .await,
            "a new incarnation must outwait the leases of the one before"
        );
        assert!(
            leases
                .wait_through(5, started + Duration::from_secs(5))
                .await
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
        let pristine = CacheLeases::new(0, 0, 5, false, options(100));
        assert!(pristine.wait_through(5, Instant::now()).await);
        leases.publish(7, vec![b"k".to_vec()]);
        assert!(leases.wait_through(7, Instant::now()).await);
        // Not yet published: waits until the deadline.
        assert!(
            !leases
                .wait_through(8, Instant::now() + Duration::from_millis(20))
                .await
        );
    }

    #[tokio::test]
    async fn a_new_primary_exposes_nothing_until_its_subscribers_dropped_their_caches() {
        let leases = CacheLeases::new(0, 0, 5, false, options(150));
        leases.subscribe(1, "127.0.0.1:1".to_string());
        assert!(
            leases.wait_through(5, Instant::now()).await,
            "what was committed before the subscription needs no delivery"
        );
        let started = Instant::now();
        leases.became_primary(2, 5);
        assert_eq!(leases.primary_epoch(), Some(2));
        assert!(
            !leases
                .wait_through(5, started + Duration::from_millis(50))
                .await,
            "the drop must be acknowledged (or the lease end) before anything is exposed"
        );
        assert!(
            leases
                .wait_through(5, started + Duration::from_secs(5))
                .await
        );
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_silent_subscriber_holds_answers_until_its_lease_ends() {
        // Nothing listens at this address: deliveries fail until the lease ends.
        let leases = CacheLeases::new(0, 0, 0, false, options(150));
        let first = leases.subscribe(1, "127.0.0.1:1".to_string());
        let renewed = leases.subscribe(1, "127.0.0.1:1".to_string());
        assert_eq!(
            first.id, renewed.id,
            "a live lease is renewed, not replaced"
        );
        let started = Instant::now();
        leases.publish(1, vec![b"k".to_vec()]);
        assert!(
            !leases
                .wait_through(1, started + Duration::from_millis(50))
                .await,
            "a live, unacknowledged subscriber must hold the answer"
        );
        assert!(
            leases
                .wait_through(1, started + Duration::from_secs(5))
                .await
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(leases.live_subscribers().is_empty());
        let again = leases.subscribe(1, "127.0.0.1:1".to_string());
        assert_ne!(again.id, first.id, "a lapsed lease starts a new session");
    }
}
