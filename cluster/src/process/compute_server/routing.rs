//! Where a compute node process sends each row, and how it follows the ring as shards are
//! added: the ring record (see [`crate::process::ring_record`]) it routes by, the epoch it
//! sends with every request, and the rule for a row that is moving to a new shard.
//!
//! - A shard fenced at a newer epoch refuses the request ([`ReplicationError::StaleRing`]);
//!   the node loads the newer record and routes again.
//! - While the record says rows are moving, a row whose owner changed is first made present
//!   on its new owner: the node fences the old owner (once per epoch), reads the row there, and
//!   copies it to the new owner if that holds nothing for the key. Only then does the statement
//!   read or write the new owner. The old owner is read first: a row the rebalancer already
//!   moved and deleted there is on the new owner, so "absent at both" never hides a row. A copy
//!   refused because the new owner's newest entry for the key is another's copy counts only
//!   once a read sees that copy: until it is acknowledged, a failover may still lose it.
//! - Every second the node loads the record anyway, so it learns a new shard's members (and
//!   takes cache leases from them) before it must route there, and learns when moving ends.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{lock, renew, ComputeFailure, Shared};
use crate::metadata::NodeId;
use crate::process::ring_record::{Placement, RingRecord};
use crate::replication::{ReplicationError, WriteCondition, FENCE_KEY};

/// How often a node loads the ring record when nothing forced it to.
pub(super) const RING_REFRESH: Duration = Duration::from_secs(1);
/// How long a node refused for a stale ring waits before it loads the record again.
const STALE_PAUSE: Duration = Duration::from_millis(20);
/// How long a node waits for another's copy of a moving row to be acknowledged.
const PENDING_COPY_PAUSE: Duration = Duration::from_millis(2);

/// The ring a node routes by.
#[derive(Debug)]
pub(super) struct Routing {
    record: RingRecord,
    placement: Placement,
    members: BTreeMap<usize, Vec<NodeId>>,
    /// Old shards this node has seen fenced at `record.epoch`.
    fenced: BTreeSet<usize>,
}

impl Routing {
    pub(super) fn new(record: RingRecord) -> Self {
        Self {
            placement: record.placement(),
            members: record.members_by_shard(),
            fenced: BTreeSet::new(),
            record,
        }
    }
}

/// Where one request for a row goes.
#[derive(Clone, Copy, Debug)]
struct Route {
    epoch: u64,
    shard: usize,
    /// The row's owner under the ring before, while rows move and it is another shard.
    moving_from: Option<usize>,
}

/// Why a call to a shard did not succeed.
pub(super) enum Miss {
    /// The shard is fenced at a newer ring than the call was routed by.
    Stale {
        /// Whether an earlier attempt's outcome is unknown.
        unknown: bool,
    },
    Failed(ComputeFailure),
}

impl Shared {
    fn route(&self, key: &[u8]) -> Route {
        let routing = lock(&self.routing);
        Route {
            epoch: routing.record.epoch,
            shard: routing.placement.owner(key),
            moving_from: routing.placement.moving_from(key),
        }
    }

    /// The shard that owns `key` now.
    pub(super) fn shard_of(&self, key: &[u8]) -> usize {
        self.route(key).shard
    }

    /// Each shard's data members, as the ring this node routes by has them.
    pub(super) fn members(&self) -> BTreeMap<usize, Vec<NodeId>> {
        lock(&self.routing).members.clone()
    }

    /// Whether `holds(member)` for every data member of `shard` (false if the ring has no such
    /// shard). Runs under the routing lock, so `holds` must not take it.
    pub(super) fn all_members_of(&self, shard: usize, holds: impl Fn(NodeId) -> bool) -> bool {
        lock(&self.routing)
            .members
            .get(&shard)
            .is_some_and(|members| !members.is_empty() && members.iter().all(|&m| holds(m)))
    }

    /// The epoch of the ring this node routes by.
    pub(super) fn ring_epoch(&self) -> u64 {
        lock(&self.routing).record.epoch
    }

    /// Runs `call(shard, member, ring epoch)` on the primary of the shard that owns `key`,
    /// making a moving row present there first, and routing again after a stale-ring refusal.
    pub(super) async fn on_owner<T, F, Fut>(
        &self,
        key: &[u8],
        deadline: Instant,
        call: F,
    ) -> Result<T, ComputeFailure>
    where
        F: Fn(usize, NodeId, u64) -> Fut,
        Fut: Future<Output = Result<T, ReplicationError>>,
    {
        let mut unknown = false;
        loop {
            let route = self.route(key);
            let attempt = async {
                if let Some(from) = route.moving_from {
                    self.make_present(key, from, route.shard, route.epoch, deadline)
                        .await?;
                }
                self.on_primary(route.shard, deadline, |member| {
                    call(route.shard, member, route.epoch)
                })
                .await
            };
            match attempt.await {
                Ok(value) => return Ok(value),
                Err(Miss::Failed(failure)) => return Err(failure.unknown_if(unknown)),
                Err(Miss::Stale { unknown: earlier }) => {
                    tracing::debug!(
                        node = self.id,
                        shard = route.shard,
                        epoch = route.epoch,
                        "refused for a stale ring"
                    );
                    unknown |= earlier;
                    self.learn_ring_after(route.epoch, deadline)
                        .await
                        .map_err(|failure| failure.unknown_if(unknown))?;
                }
            }
        }
    }

    /// Makes the row `key` present on `to` if `from` still holds it (see the module's rules).
    async fn make_present(
        &self,
        key: &[u8],
        from: usize,
        to: usize,
        epoch: u64,
        deadline: Instant,
    ) -> Result<(), Miss> {
        let fenced = lock(&self.routing).fenced.contains(&from);
        if !fenced {
            let value = epoch.to_be_bytes();
            let value = &value;
            self.on_primary(from, deadline, |member| {
                self.storage.write_routed(
                    from,
                    member,
                    (FENCE_KEY, value),
                    WriteCondition::Always,
                    epoch,
                )
            })
            .await?;
            let mut routing = lock(&self.routing);
            if routing.record.epoch == epoch {
                routing.fenced.insert(from);
            }
        }
        loop {
            let old = self
                .on_primary(from, deadline, |member| {
                    self.storage.read_routed(from, member, key, epoch)
                })
                .await?;
            let Some(value) = old else {
                return Ok(());
            };
            let value = &value;
            let copied = self
                .on_primary(to, deadline, |member| {
                    self.storage.copy_if_absent(to, member, (key, value), epoch)
                })
                .await?;
            if copied {
                return Ok(());
            }
            // The new owner's newest entry for the key may be another copy not yet acknowledged
            // (it may still be lost in a failover): the row is present only once a read sees it.
            let present = self
                .on_primary(to, deadline, |member| {
                    self.storage.read_routed(to, member, key, epoch)
                })
                .await?;
            if present.is_some() {
                return Ok(());
            }
            if Instant::now() + PENDING_COPY_PAUSE >= deadline {
                return Err(Miss::Failed(ComputeFailure {
                    message: format!("shard {to}: a copy of a moving row stayed pending"),
                    outcome_unknown: false,
                }));
            }
            tokio::time::sleep(PENDING_COPY_PAUSE).await;
        }
    }

    /// Runs `call` on `shard`'s primary, following redirects and trying the other data member
    /// when one is down, until the statement's deadline.
    pub(super) async fn on_primary<T, F, Fut>(
        &self,
        shard: usize,
        deadline: Instant,
        call: F,
    ) -> Result<T, Miss>
    where
        F: Fn(NodeId) -> Fut,
        Fut: Future<Output = Result<T, ReplicationError>>,
    {
        let Some(members) = lock(&self.routing).members.get(&shard).cloned() else {
            return Err(Miss::Stale { unknown: false });
        };
        let mut target = lock(&self.primaries)
            .get(&shard)
            .copied()
            .unwrap_or(members[0]);
        let mut unknown = false;
        loop {
            let error = match tokio::time::timeout_at(deadline, call(target)).await {
                Ok(Ok(value)) => {
                    lock(&self.primaries).insert(shard, target);
                    return Ok(value);
                }
                Ok(Err(ReplicationError::StaleRing { .. })) => {
                    return Err(Miss::Stale { unknown });
                }
                Ok(Err(error)) => error,
                Err(_) => ReplicationError::Timeout {
                    after: self.statement_timeout,
                },
            };
            unknown |= error.outcome_is_unknown();
            if Instant::now() >= deadline {
                return Err(Miss::Failed(ComputeFailure {
                    message: format!("shard {shard}: {error}"),
                    outcome_unknown: unknown,
                }));
            }
            let hint = error
                .primary_hint()
                .filter(|hint| *hint != target && members.contains(hint));
            match hint {
                Some(primary) => target = primary,
                None => {
                    if let Some(&other) = members.iter().find(|&&m| m != target) {
                        target = other;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Loads the ring record until it is newer than `epoch` (a shard refused that one), or the
    /// deadline passes.
    async fn learn_ring_after(&self, epoch: u64, deadline: Instant) -> Result<(), ComputeFailure> {
        loop {
            let loaded = tokio::time::timeout_at(deadline, self.refresh_ring()).await;
            if let Ok(Ok(())) = loaded {
                if self.ring_epoch() > epoch {
                    return Ok(());
                }
            }
            if Instant::now() + STALE_PAUSE >= deadline {
                let why = match loaded {
                    Ok(Err(failure)) => failure.message,
                    _ => "no newer ring is recorded".to_string(),
                };
                return Err(ComputeFailure {
                    message: format!("a shard is fenced past ring epoch {epoch}: {why}"),
                    outcome_unknown: false,
                });
            }
            tokio::time::sleep(STALE_PAUSE).await;
        }
    }

    /// Loads the ring record and routes by it if it is newer (or the same epoch, settled).
    pub(super) async fn refresh_ring(&self) -> Result<(), ComputeFailure> {
        let loaded = RingRecord::load(&self.metadata)
            .await
            .map_err(|error| ComputeFailure {
                message: format!("ring record: {error}"),
                outcome_unknown: false,
            })?;
        let Some((record, _)) = loaded else {
            return Ok(());
        };
        let mut routing = lock(&self.routing);
        let current = &routing.record;
        let newer = record.epoch > current.epoch
            || (record.epoch == current.epoch && record.moving_from != current.moving_from);
        if !newer {
            return Ok(());
        }
        let new_epoch = record.epoch != current.epoch;
        self.storage.add_members(&record.addrs());
        self.lease_client.add_members(&record.addrs());
        tracing::info!(
            node = self.id,
            epoch = record.epoch,
            shards = ?record.shards(),
            moving = record.moving_from.is_some(),
            "routing by a newer ring"
        );
        let fenced = if new_epoch {
            BTreeSet::new()
        } else {
            std::mem::take(&mut routing.fenced)
        };
        *routing = Routing {
            fenced,
            ..Routing::new(record)
        };
        drop(routing);
        if new_epoch {
            // Rows cached under the old ring may live elsewhere now.
            self.cache.clear();
        }
        Ok(())
    }
}

/// Keeps one lease renewal running per data member of the ring this node routes by, and loads
/// the ring record every [`RING_REFRESH`]. Dropping it (the task aborted) ends the renewals.
pub(super) async fn supervise(shared: Arc<Shared>, renew_interval: Duration) {
    let mut renewals = JoinSet::new();
    let mut renewing: BTreeSet<(usize, NodeId)> = BTreeSet::new();
    let mut tick = tokio::time::interval(renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_refresh = Instant::now() + RING_REFRESH;
    loop {
        tick.tick().await;
        if Instant::now() >= next_refresh {
            next_refresh = Instant::now() + RING_REFRESH;
            let refreshed = tokio::time::timeout(RING_REFRESH, shared.refresh_ring()).await;
            if let Ok(Err(failure)) = refreshed {
                tracing::debug!(node = shared.id, error = %failure.message, "ring record not loaded");
            }
        }
        for (shard, members) in shared.members() {
            for member in members {
                if renewing.insert((shard, member)) {
                    renewals.spawn(renew(Arc::clone(&shared), shard, member, renew_interval));
                }
            }
        }
    }
}
