//! A data replica's state machine (primary or mirror of one shard): synchronous replication,
//! epoch fencing, leases, and promotion through the witness. Plain struct, no IO: the runtime
//! feeds it [`Event`]s with the time, and executes the [`Action`]s it returns.
//!
//! The rules, each enforced below:
//! - RPO = 0: a synchronous primary acknowledges a write only once the mirror has appended it
//!   durably, and the witness promotes the mirror only from a synchronous record.
//! - Fencing: every `Replicate` carries the primary's record; a replica refuses an older epoch.
//! - Degraded mode: a primary whose mirror is silent asks the witness for a new epoch in which it
//!   continues alone; the witness then never promotes that stale mirror. Once the mirror has
//!   caught up, the primary asks for a synchronous epoch again.
//! - Leases: a primary acknowledges writes and serves reads only while the mirror or the
//!   witness heard from it within `lease_ms`; neither helps make a new primary before then.
//! - Rejoining: a deposed primary cuts its log back to what it acknowledged, becomes the mirror
//!   and catches up from the new primary.

use std::collections::BTreeMap;

use super::error::ReplicationError;
use super::log::{KvState, ReplicaLog};
use super::message::{
    Action, Epoch, EpochRecord, Event, LogIndex, Message, Millis, ReplicateOutcome, RequestId,
    WriteCondition,
};
use super::options::ProtocolOptions;
use crate::metadata::NodeId;

/// The key that holds a shard's ring fence: the epoch, 8 bytes big-endian, of the oldest ring a
/// client may route by (see [`Replica::fence`]). No row key is empty, so it names no row.
pub const FENCE_KEY: &[u8] = b"";

fn decode_fence(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_be_bytes)
}

/// What a replica keeps across a crash ("durable" in the simulation: it survives kill and
/// restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaDurable {
    /// The newest record this replica knows; it fences older epochs.
    pub record: EpochRecord,
    /// Every write it holds.
    pub log: ReplicaLog,
    /// The last index it knows to be acknowledged.
    /// Invariant: `commit_index <= log.last_index()`.
    pub commit_index: LogIndex,
}

/// A replica's role, derived from its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Named primary by its record (it may still lack a lease).
    Primary,
    /// The other data node.
    Mirror,
}

/// One data node of a shard.
#[derive(Clone, Debug)]
pub struct Replica {
    id: NodeId,
    /// The other data node of the shard.
    peer: NodeId,
    witness: NodeId,
    options: ProtocolOptions,
    durable: ReplicaDurable,
    /// Invariant: the replay of the log up to `visible_index()`.
    kv: KvState,
    /// A primary acknowledges writes and serves reads only before this time.
    /// Invariant: 0 unless primary.
    lease_until_ms: Millis,
    /// A newly promoted primary serves only from this time, when every lease it helped its
    /// predecessor hold has lapsed.
    serve_not_before_ms: Millis,
    /// Client writes appended but not yet acknowledged, by log index.
    /// Invariant: empty unless primary; every key is in `commit_index + 1..=last_index`.
    pending: BTreeMap<LogIndex, RequestId>,
    /// The highest index the mirror acknowledged to this primary.
    /// Invariant: `<= log.last_index()`.
    mirror_match_index: LogIndex,
    /// Where the next `Replicate` for a new write starts.
    mirror_next_index: LogIndex,
    /// When the mirror last answered this primary.
    mirror_last_ack_ms: Millis,
    /// When the primary last sent heartbeats.
    last_heartbeat_ms: Option<Millis>,
    /// The epoch of a synchronous record this primary asked for and has not yet seen settled.
    /// While set, the primary waits for its mirror, since the witness may have granted it.
    /// Invariant: `None` unless primary; when set, greater than `record.epoch`.
    sync_requested: Option<Epoch>,
    /// When a mirror last heard from its primary.
    last_heard_primary_ms: Millis,
    /// When this node last acknowledged a primary's `Replicate`, which extends that primary's
    /// lease; it may not serve as primary until that lease has lapsed.
    last_promise_ms: Millis,
    /// An operator asked this mirror to seek promotion without waiting out its failure detector.
    force_promotion: bool,
    /// When this node last asked the witness for a vote.
    last_vote_sent_ms: Option<Millis>,
    /// When this node last handled a tick; a long gap means this node itself was stalled.
    /// Invariant: never in the future of the clock the node is stepped with.
    last_tick_ms: Millis,
}

impl Replica {
    /// A replica recovering `durable` at `now_ms` (a first start is a recovery of the initial
    /// record and an empty log). It holds no lease, and it counts its primary as heard just now.
    pub fn recover(
        id: NodeId,
        peer: NodeId,
        witness: NodeId,
        options: ProtocolOptions,
        durable: ReplicaDurable,
        now_ms: Millis,
    ) -> Self {
        options.timing.validate();
        let mut replica = Self {
            id,
            peer,
            witness,
            options,
            durable,
            kv: KvState::default(),
            lease_until_ms: 0,
            serve_not_before_ms: 0,
            pending: BTreeMap::new(),
            mirror_match_index: 0,
            mirror_next_index: 1,
            mirror_last_ack_ms: now_ms,
            last_heartbeat_ms: None,
            sync_requested: None,
            last_heard_primary_ms: now_ms,
            last_promise_ms: now_ms,
            force_promotion: false,
            last_vote_sent_ms: None,
            last_tick_ms: now_ms,
        };
        replica.mirror_next_index = replica.durable.log.last_index() + 1;
        replica.apply_visible();
        replica.validate();
        replica
    }

    /// What survives a crash.
    pub fn durable(&self) -> &ReplicaDurable {
        &self.durable
    }

    /// The lowest log index appended or removed since the last call (see
    /// [`super::log::ReplicaLog::take_changed_from`]), for a member that saves to disk.
    pub fn take_log_changes(&mut self) -> Option<LogIndex> {
        self.durable.log.take_changed_from()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The newest record this replica knows.
    pub fn record(&self) -> EpochRecord {
        self.durable.record
    }

    /// Its role by its record.
    pub fn role(&self) -> Role {
        if self.durable.record.primary == self.id {
            Role::Primary
        } else {
            Role::Mirror
        }
    }

    /// Whether it acts as primary at `now_ms`: named primary and holding a lease.
    pub fn is_primary(&self, now_ms: Millis) -> bool {
        self.role() == Role::Primary && self.has_lease(now_ms)
    }

    /// What a local read sees: acknowledged writes on a primary, every durable write on a
    /// mirror.
    pub fn local_read(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.kv.get(key)
    }

    /// The index of the last entry in its log.
    pub fn last_index(&self) -> LogIndex {
        self.durable.log.last_index()
    }

    /// The last index it knows acknowledged.
    pub fn commit_index(&self) -> LogIndex {
        self.durable.commit_index
    }

    fn has_lease(&self, now_ms: Millis) -> bool {
        self.options.unsafe_no_fencing
            || (now_ms < self.lease_until_ms && now_ms >= self.serve_not_before_ms)
    }

    /// Whether a write needs the mirror's acknowledgement before it is acknowledged.
    fn must_wait_for_mirror(&self) -> bool {
        !self.options.unsafe_async_replication
            && (self.durable.record.synchronous || self.sync_requested.is_some())
    }

    fn visible_index(&self) -> LogIndex {
        match self.role() {
            Role::Primary => self.durable.commit_index,
            Role::Mirror => self.durable.log.last_index(),
        }
    }

    fn apply_visible(&mut self) {
        let index = self.visible_index();
        self.kv.apply_to(&self.durable.log, index);
    }

    fn not_primary(&self) -> ReplicationError {
        let record = self.durable.record;
        ReplicationError::NotPrimary {
            primary: (record.primary != self.id).then_some(record.primary),
            epoch: record.epoch,
        }
    }

    /// The newest value of `key` in this replica's log, applied or not: what a conditional
    /// write on the primary is judged against (an empty value is a deletion: `None`).
    fn latest(&self, key: &[u8]) -> Option<Vec<u8>> {
        let applied = self.kv.applied_index();
        let log = &self.durable.log;
        (applied + 1..=log.last_index())
            .rev()
            .filter_map(|index| log.get(index))
            .find(|entry| entry.key == key)
            .map(|entry| Some(entry.value.clone()).filter(|value| !value.is_empty()))
            .unwrap_or_else(|| self.kv.get(key))
    }

    /// The ring epoch this shard is fenced at: the newest value of [`FENCE_KEY`] in the log,
    /// applied or not (0 when never fenced). A client request routed by an older ring is refused.
    ///
    /// Judging by the newest entry is what makes the fence atomic with the log: a request is
    /// either appended (or read) before the fence entry, and so precedes it in every copy of
    /// the log, or refused. A fence entry lost in a failover was never acknowledged, so whoever
    /// wrote it has not relied on it.
    pub fn fence(&self) -> u64 {
        decode_fence(self.latest(FENCE_KEY).as_deref())
    }

    /// The fence in this replica's visible state (what a scan of it is consistent with).
    pub fn visible_fence(&self) -> u64 {
        decode_fence(self.kv.get(FENCE_KEY).as_deref())
    }

    fn stale_ring(&self, ring_epoch: u64) -> Option<ReplicationError> {
        let fence = self.fence();
        (ring_epoch < fence).then_some(ReplicationError::StaleRing { fence })
    }

    /// How many keys this replica's visible state holds (acknowledged writes on a primary,
    /// every durable one on a mirror), the fence not counted.
    pub fn key_count(&self) -> usize {
        self.kv.len() - usize::from(self.kv.get(FENCE_KEY).is_some())
    }

    /// Up to `limit` keys and values of the visible state after `after`, in key order, the
    /// fence not included.
    pub fn scan(&self, after: Option<&[u8]>, limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        // The fence's key is the empty one, the first of all: starting after it skips it.
        self.kv.range_after(Some(after.unwrap_or(FENCE_KEY)), limit)
    }

    /// Handles one event at `now_ms` and returns what the runtime must do.
    pub fn step(&mut self, now_ms: Millis, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Tick => self.on_tick(now_ms, &mut out),
            Event::Receive { from, message } => self.on_message(now_ms, from, message, &mut out),
            Event::ClientWrite {
                request,
                key,
                value,
                condition,
                ring_epoch,
            } => self.on_write(
                now_ms,
                request,
                (key, value),
                condition,
                ring_epoch,
                &mut out,
            ),
            Event::ClientRead {
                request,
                key,
                ring_epoch,
            } => {
                let result = if self.role() != Role::Primary {
                    Err(self.not_primary())
                } else if !self.has_lease(now_ms) {
                    Err(ReplicationError::NoLease {
                        epoch: self.durable.record.epoch,
                    })
                } else if let Some(stale) = self.stale_ring(ring_epoch) {
                    Err(stale)
                } else {
                    Ok(self.kv.get(&key))
                };
                out.push(Action::ReadDone { request, result });
            }
            Event::ForcePromotion => {
                if self.role() == Role::Mirror {
                    self.force_promotion = true;
                    self.on_tick(now_ms, &mut out);
                }
            }
        }
        self.apply_visible();
        out
    }

    fn on_write(
        &mut self,
        now_ms: Millis,
        request: RequestId,
        (key, value): (Vec<u8>, Vec<u8>),
        condition: WriteCondition,
        ring_epoch: u64,
        out: &mut Vec<Action>,
    ) {
        let refusal = if self.role() != Role::Primary {
            Some(self.not_primary())
        } else if !self.has_lease(now_ms) {
            Some(ReplicationError::NoLease {
                epoch: self.durable.record.epoch,
            })
        } else if self.pending.len() >= self.options.max_pending_writes {
            Some(ReplicationError::Overloaded {
                pending: self.pending.len(),
            })
        } else if let Some(stale) = self.stale_ring(ring_epoch) {
            Some(stale)
        } else if key == FENCE_KEY && decode_fence(Some(&value)) < self.fence() {
            // A fence only rises.
            Some(ReplicationError::StaleRing {
                fence: self.fence(),
            })
        } else {
            match condition {
                WriteCondition::Always => None,
                WriteCondition::IfCurrent(expected) => {
                    let current = self.latest(&key);
                    (current != expected).then_some(ReplicationError::ConditionFailed { current })
                }
            }
        };
        if let Some(error) = refusal {
            out.push(Action::WriteDone {
                request,
                result: Err(error),
            });
            return;
        }
        let index = self.durable.log.push(self.durable.record.epoch, key, value);
        self.pending.insert(index, request);
        if !self.options.unsafe_async_replication {
            self.send_replicate(now_ms, self.mirror_next_index, out);
        }
        self.advance_commit(out);
    }

    fn on_tick(&mut self, now_ms: Millis, out: &mut Vec<Action>) {
        // A gap between ticks far beyond the tick interval means this node was stalled
        // (descheduled, paused): its peers' messages wait unread in its inbox, so the stall is
        // not held against them. This only delays suspicion, so it cannot hurt safety.
        let timing = self.options.timing;
        let gap_ms = now_ms.saturating_sub(self.last_tick_ms);
        if gap_ms > timing.heartbeat_interval_ms {
            let stalled_ms = gap_ms - timing.tick_ms;
            self.last_heard_primary_ms = (self.last_heard_primary_ms + stalled_ms).min(now_ms);
            self.mirror_last_ack_ms = (self.mirror_last_ack_ms + stalled_ms).min(now_ms);
        }
        self.last_tick_ms = self.last_tick_ms.max(now_ms);
        match self.role() {
            Role::Primary => self.primary_tick(now_ms, out),
            Role::Mirror => self.mirror_tick(now_ms, out),
        }
    }

    fn primary_tick(&mut self, now_ms: Millis, out: &mut Vec<Action>) {
        let record = self.durable.record;
        if !self.has_lease(now_ms) && !self.pending.is_empty() {
            // Whether the mirror got these is unknown; a new primary may commit them.
            self.fail_pending(
                ReplicationError::LeaseLost {
                    epoch: record.epoch,
                },
                out,
            );
        }
        let timing = self.options.timing;
        let heartbeat_due = self
            .last_heartbeat_ms
            .is_none_or(|sent| now_ms.saturating_sub(sent) >= timing.heartbeat_interval_ms);
        if heartbeat_due {
            self.last_heartbeat_ms = Some(now_ms);
            self.send_replicate(now_ms, self.mirror_match_index + 1, out);
            out.push(Action::Send {
                to: self.witness,
                message: Message::WitnessHeartbeat {
                    epoch: record.epoch,
                    sent_at_ms: now_ms,
                },
            });
        }
        let mirror_silent_ms = now_ms.saturating_sub(self.mirror_last_ack_ms);
        if self.must_wait_for_mirror() && mirror_silent_ms >= timing.mirror_timeout_ms {
            // Degrade: continue alone, with the witness's vote so the mirror is never promoted.
            let proposed = EpochRecord {
                epoch: record.epoch.max(self.sync_requested.unwrap_or(0)) + 1,
                primary: self.id,
                synchronous: false,
            };
            self.change_record(now_ms, proposed, out);
        } else if !record.synchronous
            && !self.options.unsafe_no_fencing
            && !self.options.unsafe_async_replication
            && self.mirror_match_index >= self.durable.commit_index
            && mirror_silent_ms < 2 * timing.heartbeat_interval_ms
        {
            // Re-sync: the mirror holds every acknowledged write; from now on wait for it. The
            // same proposal is repeated until the witness's record settles it.
            let proposed = EpochRecord {
                epoch: self.sync_requested.unwrap_or(record.epoch + 1),
                primary: self.id,
                synchronous: true,
            };
            self.sync_requested = Some(proposed.epoch);
            self.change_record(now_ms, proposed, out);
        }
    }

    fn mirror_tick(&mut self, now_ms: Millis, out: &mut Vec<Action>) {
        let timing = self.options.timing;
        let wait_ms = if self.force_promotion {
            timing.lease_expiry_wait_ms()
        } else {
            timing.failover_timeout_ms
        };
        if now_ms.saturating_sub(self.last_heard_primary_ms) < wait_ms {
            return;
        }
        let proposed = EpochRecord {
            epoch: self.durable.record.epoch + 1,
            primary: self.id,
            synchronous: false,
        };
        self.change_record(now_ms, proposed, out);
    }

    /// Asks the witness for `proposed` (at most once per `vote_retry_ms`), or, with fencing
    /// switched off, simply takes it.
    fn change_record(&mut self, now_ms: Millis, proposed: EpochRecord, out: &mut Vec<Action>) {
        if self.options.unsafe_no_fencing {
            self.adopt(now_ms, proposed, Some(now_ms), out);
            return;
        }
        let ready = self
            .last_vote_sent_ms
            .is_none_or(|sent| now_ms.saturating_sub(sent) >= self.options.timing.vote_retry_ms);
        if ready {
            self.last_vote_sent_ms = Some(now_ms);
            out.push(Action::Send {
                to: self.witness,
                message: Message::VoteRequest {
                    proposed,
                    sent_at_ms: now_ms,
                },
            });
        }
    }

    fn send_replicate(&mut self, now_ms: Millis, from_index: LogIndex, out: &mut Vec<Action>) {
        let log = &self.durable.log;
        let from_index = from_index.clamp(1, log.last_index() + 1);
        let prev_index = from_index - 1;
        let prev_epoch = log.epoch_at(prev_index).expect("prev index within the log");
        let entries = log.entries_from(from_index, self.options.max_batch);
        self.mirror_next_index = from_index + entries.len() as LogIndex;
        out.push(Action::Send {
            to: self.peer,
            message: Message::Replicate {
                record: self.durable.record,
                prev_index,
                prev_epoch,
                entries,
                commit_index: self.durable.commit_index,
                sent_at_ms: now_ms,
            },
        });
    }

    fn advance_commit(&mut self, out: &mut Vec<Action>) {
        if self.role() != Role::Primary {
            return;
        }
        let last = self.durable.log.last_index();
        let target = if self.must_wait_for_mirror() {
            self.mirror_match_index.min(last)
        } else {
            last
        };
        if target <= self.durable.commit_index {
            return;
        }
        self.durable.commit_index = target;
        let still_pending = self.pending.split_off(&(target + 1));
        for (index, request) in std::mem::replace(&mut self.pending, still_pending) {
            out.push(Action::WriteDone {
                request,
                result: Ok(index),
            });
        }
    }

    fn fail_pending(&mut self, error: ReplicationError, out: &mut Vec<Action>) {
        for (_, request) in std::mem::take(&mut self.pending) {
            out.push(Action::WriteDone {
                request,
                result: Err(error.clone()),
            });
        }
    }

    /// Whether a primary with fencing off ignores `record` (it never steps down).
    fn ignores(&self, record: EpochRecord) -> bool {
        self.options.unsafe_no_fencing && self.role() == Role::Primary && record.primary != self.id
    }

    /// Takes `record` as the newest; `lease_from_ms` is when a message that granted or
    /// confirmed it was sent, if it did.
    fn adopt(
        &mut self,
        now_ms: Millis,
        record: EpochRecord,
        lease_from_ms: Option<Millis>,
        out: &mut Vec<Action>,
    ) {
        let current = self.durable.record;
        assert!(
            record.epoch >= current.epoch,
            "node {} adopts epoch {} below its {}",
            self.id,
            record.epoch,
            current.epoch
        );
        assert!(
            record.epoch > current.epoch
                || record.primary == current.primary
                || self.options.unsafe_no_fencing,
            "two primaries in epoch {}: {} and {}",
            record.epoch,
            current.primary,
            record.primary
        );
        let was_primary = self.role() == Role::Primary;
        self.durable.record = record;
        if record.primary == self.id {
            if !was_primary {
                self.become_primary(now_ms);
            }
            if self
                .sync_requested
                .is_some_and(|epoch| record.epoch >= epoch)
            {
                self.sync_requested = None;
            }
            if let Some(sent) = lease_from_ms {
                self.lease_until_ms = self.lease_until_ms.max(sent + self.options.timing.lease_ms);
            }
            self.advance_commit(out);
        } else if was_primary {
            self.step_down(now_ms, out);
        }
        if record != current {
            self.last_vote_sent_ms = None;
        }
    }

    /// The witness made this mirror primary: everything it holds is now acknowledged, since a
    /// synchronous mirror holds every write its predecessor acknowledged.
    fn become_primary(&mut self, now_ms: Millis) {
        tracing::info!(node = self.id, record = ?self.durable.record, "promoted to primary");
        self.durable.commit_index = self.durable.log.last_index();
        self.serve_not_before_ms =
            self.last_promise_ms + self.options.timing.lease_expiry_wait_ms();
        self.mirror_match_index = 0;
        self.mirror_next_index = self.durable.log.last_index() + 1;
        self.mirror_last_ack_ms = now_ms;
        self.last_heartbeat_ms = None;
        self.force_promotion = false;
    }

    /// A newer epoch names another primary: give up writes never acknowledged, and follow.
    fn step_down(&mut self, now_ms: Millis, out: &mut Vec<Action>) {
        let record = self.durable.record;
        tracing::info!(node = self.id, ?record, "primary steps down");
        self.fail_pending(
            ReplicationError::SteppedDown {
                primary: Some(record.primary),
                epoch: record.epoch,
            },
            out,
        );
        // Entries after the commit index were never acknowledged by this node; the new primary
        // sends back whichever of them it holds.
        self.durable.log.truncate_after(self.durable.commit_index);
        self.lease_until_ms = 0;
        self.serve_not_before_ms = 0;
        self.sync_requested = None;
        self.mirror_match_index = 0;
        self.last_heard_primary_ms = now_ms;
    }

    fn on_message(
        &mut self,
        now_ms: Millis,
        from: NodeId,
        message: Message,
        out: &mut Vec<Action>,
    ) {
        match message {
            Message::Replicate {
                record,
                prev_index,
                prev_epoch,
                entries,
                commit_index,
                sent_at_ms,
            } => {
                let outcome = self.on_replicate(
                    now_ms,
                    record,
                    (prev_index, prev_epoch),
                    &entries,
                    commit_index,
                    out,
                );
                out.push(Action::Send {
                    to: from,
                    message: Message::ReplicateReply {
                        record: self.durable.record,
                        outcome,
                        sent_at_ms,
                    },
                });
            }
            Message::ReplicateReply {
                record,
                outcome,
                sent_at_ms,
            } => self.on_replicate_reply(now_ms, record, outcome, sent_at_ms, out),
            Message::WitnessHeartbeatReply { record, sent_at_ms } => {
                // The witness counted the heartbeat only if it was of its own epoch, so only
                // then does the reply extend the lease.
                let newer = record.epoch > self.durable.record.epoch;
                let confirms = record == self.durable.record && record.primary == self.id;
                if (newer && !self.ignores(record)) || confirms {
                    self.adopt(now_ms, record, confirms.then_some(sent_at_ms), out);
                }
            }
            Message::VoteReply {
                granted,
                record,
                sent_at_ms,
            } => {
                let newer = record.epoch > self.durable.record.epoch;
                let confirms = granted && record.primary == self.id;
                if (newer && !self.ignores(record))
                    || (confirms && record.epoch >= self.durable.record.epoch)
                {
                    self.adopt(now_ms, record, confirms.then_some(sent_at_ms), out);
                }
            }
            // Messages for the witness; a replica ignores them.
            Message::WitnessHeartbeat { .. } | Message::VoteRequest { .. } => {}
        }
    }

    fn on_replicate(
        &mut self,
        now_ms: Millis,
        record: EpochRecord,
        (prev_index, prev_epoch): (LogIndex, Epoch),
        entries: &[super::message::Entry],
        commit_index: LogIndex,
        out: &mut Vec<Action>,
    ) -> ReplicateOutcome {
        let current = self.durable.record;
        // Fencing: a write from an older epoch is refused, whoever sends it.
        if record.epoch < current.epoch || self.ignores(record) {
            return ReplicateOutcome::Stale;
        }
        if record.epoch == current.epoch && record.primary != current.primary {
            // Only reachable with fencing off: two self-made primaries of one epoch.
            return ReplicateOutcome::Stale;
        }
        if record != current {
            self.adopt(now_ms, record, None, out);
        }
        self.last_heard_primary_ms = now_ms;
        self.last_promise_ms = now_ms;
        self.force_promotion = false;
        let log = &mut self.durable.log;
        match log.append_after(prev_index, prev_epoch, entries) {
            Err(_) => ReplicateOutcome::Mismatch {
                committed_index: self.durable.commit_index,
            },
            Ok(removed_from) => {
                if removed_from.is_some_and(|index| index <= self.kv.applied_index()) {
                    self.kv = KvState::default();
                }
                let match_index = prev_index + entries.len() as LogIndex;
                let known_committed = commit_index.min(match_index);
                if known_committed > self.durable.commit_index {
                    self.durable.commit_index = known_committed;
                }
                ReplicateOutcome::Appended { match_index }
            }
        }
    }

    fn on_replicate_reply(
        &mut self,
        now_ms: Millis,
        record: EpochRecord,
        outcome: ReplicateOutcome,
        sent_at_ms: Millis,
        out: &mut Vec<Action>,
    ) {
        if record.epoch > self.durable.record.epoch {
            if !self.ignores(record) {
                self.adopt(now_ms, record, None, out);
            }
            return;
        }
        // Only acknowledgements of this node as primary count (possibly from an earlier epoch of
        // its own, as its log was never cut while it stayed primary).
        if self.role() != Role::Primary || record.primary != self.id {
            return;
        }
        self.mirror_last_ack_ms = self.mirror_last_ack_ms.max(now_ms);
        match outcome {
            ReplicateOutcome::Appended { match_index } => {
                let match_index = match_index.min(self.durable.log.last_index());
                self.mirror_match_index = self.mirror_match_index.max(match_index);
                self.mirror_next_index = self.mirror_next_index.max(match_index + 1);
                if record.epoch == self.durable.record.epoch {
                    self.lease_until_ms = self
                        .lease_until_ms
                        .max(sent_at_ms + self.options.timing.lease_ms);
                }
                self.advance_commit(out);
            }
            ReplicateOutcome::Mismatch { committed_index } => {
                self.send_replicate(now_ms, committed_index + 1, out);
            }
            ReplicateOutcome::Stale => {}
        }
    }

    /// Checks every invariant (O(log length)); tests call it after every step.
    ///
    /// # Panics
    /// If one does not hold, which only a bug can cause.
    pub fn validate(&self) {
        let durable = &self.durable;
        durable.log.validate();
        self.kv.validate(&durable.log);
        assert!(
            durable.commit_index <= durable.log.last_index(),
            "commit index {} past the log's end {}",
            durable.commit_index,
            durable.log.last_index()
        );
        assert_eq!(
            self.kv.applied_index(),
            self.visible_index(),
            "node {} applied a different prefix than it shows",
            self.id
        );
        let last_epoch = durable.log.epoch_at(durable.log.last_index()).unwrap_or(0);
        assert!(
            last_epoch <= durable.record.epoch,
            "log holds epoch {last_epoch} beyond the record's {}",
            durable.record.epoch
        );
        assert!(
            [self.id, self.peer].contains(&durable.record.primary),
            "record names primary {} outside the shard",
            durable.record.primary
        );
        assert!(
            self.mirror_match_index <= durable.log.last_index(),
            "mirror match index past the log"
        );
        match self.role() {
            Role::Primary => {
                for &index in self.pending.keys() {
                    assert!(
                        index > durable.commit_index && index <= durable.log.last_index(),
                        "pending write at {index} outside the uncommitted tail"
                    );
                }
                if let Some(epoch) = self.sync_requested {
                    assert!(epoch > durable.record.epoch, "settled sync request kept");
                }
            }
            Role::Mirror => {
                assert!(self.pending.is_empty(), "a mirror holds pending writes");
                assert!(self.sync_requested.is_none(), "a mirror requests sync");
                assert_eq!(self.lease_until_ms, 0, "a mirror holds a lease");
            }
        }
    }
}

#[cfg(test)]
mod tests;
