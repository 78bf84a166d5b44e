//! The witness's state machine: it holds no data, only the shard's current [`EpochRecord`], and
//! it votes on every change of it, so that primary and mirror cannot both win (2 of 3).

use super::error::ReplicationError;
use super::message::{Action, EpochRecord, Event, Message, Millis};
use super::options::Timing;
use crate::metadata::NodeId;

/// What a witness keeps across a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WitnessDurable {
    /// The last record the witness voted for; it never votes for an epoch at or below it.
    pub record: EpochRecord,
}

/// The witness of one shard.
#[derive(Clone, Debug)]
pub struct Witness {
    id: NodeId,
    /// The shard's two data nodes.
    /// Invariant: `durable.record.primary` is one of them.
    replicas: [NodeId; 2],
    timing: Timing,
    durable: WitnessDurable,
    /// When the witness last heard the primary of its record.
    /// Invariant: never in the future of the clock the witness is stepped with.
    last_heard_primary_ms: Millis,
    /// When the witness last handled a tick; a long gap means the witness itself was stalled.
    last_tick_ms: Millis,
}

impl Witness {
    /// A witness recovering `durable` at `now_ms`. It counts the primary as heard just now, so
    /// a restarted witness cannot vote the primary out before a whole lease has passed.
    pub fn recover(
        id: NodeId,
        replicas: [NodeId; 2],
        timing: Timing,
        durable: WitnessDurable,
        now_ms: Millis,
    ) -> Self {
        let witness = Self {
            id,
            replicas,
            timing,
            durable,
            last_heard_primary_ms: now_ms,
            last_tick_ms: now_ms,
        };
        witness.validate();
        witness
    }

    /// What survives a crash.
    pub fn durable(&self) -> WitnessDurable {
        self.durable
    }

    /// The record the witness last voted for.
    pub fn record(&self) -> EpochRecord {
        self.durable.record
    }

    /// Handles one event at `now_ms`.
    pub fn step(&mut self, now_ms: Millis, event: Event) -> Vec<Action> {
        let not_primary = ReplicationError::NotPrimary {
            primary: Some(self.durable.record.primary),
            epoch: self.durable.record.epoch,
        };
        match event {
            Event::Tick => {
                // A stalled witness has the primary's heartbeats waiting unread in its inbox;
                // the stall is not held against the primary (this only delays a promotion).
                let gap_ms = now_ms.saturating_sub(self.last_tick_ms);
                if gap_ms > self.timing.heartbeat_interval_ms {
                    let stalled_ms = gap_ms - self.timing.tick_ms;
                    self.last_heard_primary_ms =
                        (self.last_heard_primary_ms + stalled_ms).min(now_ms);
                }
                self.last_tick_ms = self.last_tick_ms.max(now_ms);
                Vec::new()
            }
            Event::ForcePromotion => Vec::new(),
            Event::ClientWrite { request, .. } => vec![Action::WriteDone {
                request,
                result: Err(not_primary),
            }],
            Event::ClientRead { request, .. } => vec![Action::ReadDone {
                request,
                result: Err(ReplicationError::WitnessHoldsNoData { node: self.id }),
            }],
            Event::Receive { from, message } => self.receive(now_ms, from, message),
        }
    }

    fn receive(&mut self, now_ms: Millis, from: NodeId, message: Message) -> Vec<Action> {
        let reply = match message {
            Message::WitnessHeartbeat { epoch, sent_at_ms } => {
                let record = self.durable.record;
                if from == record.primary && epoch == record.epoch {
                    self.last_heard_primary_ms = self.last_heard_primary_ms.max(now_ms);
                }
                Message::WitnessHeartbeatReply { record, sent_at_ms }
            }
            Message::VoteRequest {
                proposed,
                sent_at_ms,
            } => {
                let granted = self.vote(now_ms, from, proposed);
                Message::VoteReply {
                    granted,
                    record: self.durable.record,
                    sent_at_ms,
                }
            }
            // Replication traffic is not for the witness; a confused sender gets no answer.
            Message::Replicate { .. }
            | Message::ReplicateReply { .. }
            | Message::WitnessHeartbeatReply { .. }
            | Message::VoteReply { .. } => return Vec::new(),
        };
        vec![Action::Send {
            to: from,
            message: reply,
        }]
    }

    /// Decides a vote; adopts `proposed` when granted.
    fn vote(&mut self, now_ms: Millis, from: NodeId, proposed: EpochRecord) -> bool {
        let current = self.durable.record;
        if proposed.primary != from || !self.replicas.contains(&from) {
            return false;
        }
        if proposed == current {
            // The requester's earlier grant was lost on the way back; grant it again. The
            // requester dates its lease from this request, so the witness counts it as heard.
            self.last_heard_primary_ms = self.last_heard_primary_ms.max(now_ms);
            return true;
        }
        if proposed.epoch <= current.epoch {
            return false;
        }
        let granted = if from == current.primary {
            // The primary changes whether it waits for its mirror (degrade or re-sync).
            true
        } else {
            // The mirror wants promotion. Only a synchronous mirror holds every acknowledged
            // write (RPO = 0), and only once the primary's lease has surely lapsed may another
            // node acknowledge writes (no split brain).
            current.synchronous
                && !proposed.synchronous
                && now_ms >= self.last_heard_primary_ms + self.timing.lease_expiry_wait_ms()
        };
        if granted {
            self.durable.record = proposed;
            self.last_heard_primary_ms = now_ms;
            tracing::info!(
                witness = self.id,
                ?proposed,
                "witness voted for a new epoch"
            );
        }
        self.validate();
        granted
    }

    /// Checks the witness's invariants.
    ///
    /// # Panics
    /// If one does not hold, which only a bug can cause.
    pub fn validate(&self) {
        assert!(
            self.replicas.contains(&self.durable.record.primary),
            "witness {} records primary {} outside its shard {:?}",
            self.id,
            self.durable.record.primary,
            self.replicas
        );
        assert_ne!(self.replicas[0], self.replicas[1], "two distinct replicas");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn witness() -> Witness {
        let record = EpochRecord {
            epoch: 1,
            primary: 0,
            synchronous: true,
        };
        Witness::recover(2, [0, 1], Timing::default(), WitnessDurable { record }, 0)
    }

    fn vote(w: &mut Witness, now: Millis, from: NodeId, proposed: EpochRecord) -> bool {
        let actions = w.step(
            now,
            Event::Receive {
                from,
                message: Message::VoteRequest {
                    proposed,
                    sent_at_ms: now,
                },
            },
        );
        w.validate();
        match actions.as_slice() {
            [Action::Send {
                message: Message::VoteReply { granted, .. },
                ..
            }] => *granted,
            other => panic!("expected one vote reply, got {other:?}"),
        }
    }

    #[test]
    fn the_mirror_is_promoted_only_after_the_primary_lease_lapsed() {
        let mut w = witness();
        let promote = EpochRecord {
            epoch: 2,
            primary: 1,
            synchronous: false,
        };
        assert!(
            !vote(&mut w, 100, 1, promote),
            "primary lease still running"
        );
        let wait = Timing::default().lease_expiry_wait_ms();
        assert!(vote(&mut w, wait, 1, promote), "lease lapsed");
        assert!(
            vote(&mut w, wait + 1, 1, promote),
            "a repeated grant is idempotent"
        );
        assert_eq!(w.record(), promote);
        // The old primary can no longer change the record.
        let degrade = EpochRecord {
            epoch: 3,
            primary: 0,
            synchronous: false,
        };
        assert!(!vote(&mut w, wait + 2, 0, degrade));
    }

    #[test]
    fn a_mirror_that_is_not_in_sync_is_never_promoted() {
        let mut w = witness();
        let degrade = EpochRecord {
            epoch: 2,
            primary: 0,
            synchronous: false,
        };
        assert!(
            vote(&mut w, 10, 0, degrade),
            "the primary may drop its mirror"
        );
        let promote = EpochRecord {
            epoch: 3,
            primary: 1,
            synchronous: false,
        };
        assert!(!vote(&mut w, 100_000, 1, promote), "the mirror is stale");
    }

    #[test]
    fn heartbeats_from_the_primary_postpone_promotion() {
        let mut w = witness();
        let wait = Timing::default().lease_expiry_wait_ms();
        let heartbeat = Message::WitnessHeartbeat {
            epoch: 1,
            sent_at_ms: wait - 1,
        };
        w.step(
            wait - 1,
            Event::Receive {
                from: 0,
                message: heartbeat,
            },
        );
        let promote = EpochRecord {
            epoch: 2,
            primary: 1,
            synchronous: false,
        };
        assert!(!vote(&mut w, wait + 1, 1, promote));
        assert!(vote(&mut w, 2 * wait, 1, promote));
    }
}
