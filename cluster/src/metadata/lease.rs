//! The leader lease: whether a node may call itself leader right now, as a pure function of
//! what openraft last reported and the clock.
//!
//! openraft 0.9 has no CheckQuorum: a leader cut off from the majority keeps `ServerState::Leader`
//! until it hears of a higher term. Followers, however, refuse to vote for anyone else for
//! `election_timeout_max` after the leader's last heartbeat that they acknowledged (openraft's
//! follower-side lease, `Engine::handle_vote_req`). So if a quorum acknowledged a heartbeat the
//! leader sent at time `t`, no other leader can exist before `t + election_timeout_max`. We grant
//! the leader a shorter lease, `t + election_timeout_min`, so that the gap covers the delay with
//! which the metrics reach us.

use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};

use super::types::NodeId;

/// What a node last observed about itself, extracted from one openraft metrics report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseObservation {
    /// Whether openraft reported `ServerState::Leader`.
    pub is_leader_state: bool,
    /// The node's current term.
    pub term: u64,
    /// The term of the last applied log entry.
    pub applied_term: Option<u64>,
    /// When the heartbeat most recently acknowledged by a quorum was sent.
    /// Invariant: `None` unless `is_leader_state`.
    pub quorum_acked_at: Option<Instant>,
}

impl LeaseObservation {
    /// What a stopped (or not yet started) node observes: nothing.
    pub const NONE: Self = Self {
        is_leader_state: false,
        term: 0,
        applied_term: None,
        quorum_acked_at: None,
    };

    /// Extracts the observation from a metrics report received at `received_at`.
    ///
    /// `millis_since_quorum_ack` was measured when openraft built the report, which is at or
    /// before `received_at`; subtracting it from `received_at` can only make the ack look later
    /// by the report's delivery delay, which the lease's margin absorbs.
    pub fn from_metrics(
        metrics: &RaftMetrics<NodeId, openraft::BasicNode>,
        received_at: Instant,
    ) -> Self {
        let is_leader_state = metrics.state == ServerState::Leader;
        let quorum_acked_at = if is_leader_state {
            metrics
                .millis_since_quorum_ack
                .and_then(|millis| received_at.checked_sub(Duration::from_millis(millis)))
        } else {
            None
        };
        Self {
            is_leader_state,
            term: metrics.current_term,
            applied_term: metrics.last_applied.map(|id| id.leader_id.term),
            quorum_acked_at,
        }
    }

    /// Whether this node is a leader that may serve requests at `now`.
    ///
    /// All three must hold:
    /// - openraft says it is leader;
    /// - a quorum acknowledged it less than `lease` ago (our stand-in for CheckQuorum);
    /// - it has applied an entry of its own term, its blank entry (Raft §8: a new leader does
    ///   not know what is committed until it commits an entry of its term), so its state
    ///   machine holds every committed write.
    pub fn holds_lease(&self, now: Instant, lease: Duration) -> bool {
        let Some(acked_at) = self.quorum_acked_at else {
            return false;
        };
        self.is_leader_state
            && self.applied_term == Some(self.term)
            && now.saturating_duration_since(acked_at) < lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(150);

    fn leader(acked_at: Instant) -> LeaseObservation {
        LeaseObservation {
            is_leader_state: true,
            term: 3,
            applied_term: Some(3),
            quorum_acked_at: Some(acked_at),
        }
    }

    #[test]
    fn leader_acknowledged_recently_holds_the_lease() {
        let t = Instant::now();
        assert!(leader(t).holds_lease(t + Duration::from_millis(149), LEASE));
    }

    #[test]
    fn leader_not_acknowledged_within_the_lease_loses_it() {
        let t = Instant::now();
        assert!(!leader(t).holds_lease(t + LEASE, LEASE));
        assert!(!leader(t).holds_lease(t + Duration::from_secs(5), LEASE));
    }

    #[test]
    fn leader_that_has_not_applied_an_entry_of_its_term_does_not_hold_the_lease() {
        let t = Instant::now();
        let mut observation = leader(t);
        observation.applied_term = Some(2);
        assert!(!observation.holds_lease(t, LEASE));
        observation.applied_term = None;
        assert!(!observation.holds_lease(t, LEASE));
    }

    #[test]
    fn follower_or_stopped_node_never_holds_the_lease() {
        let t = Instant::now();
        let mut observation = leader(t);
        observation.is_leader_state = false;
        assert!(!observation.holds_lease(t, LEASE));
        assert!(!LeaseObservation::NONE.holds_lease(t, LEASE));
    }

    #[test]
    fn leader_never_acknowledged_by_a_quorum_does_not_hold_the_lease() {
        let mut observation = leader(Instant::now());
        observation.quorum_acked_at = None;
        assert!(!observation.holds_lease(Instant::now(), LEASE));
    }
}
