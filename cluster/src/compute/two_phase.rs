//! The two-phase commit protocol as plain state machines: the coordinator's and each
//! participant's states, driven by step methods that return what the runtime must do next.
//! No tokio, no IO: the transaction handle (`transaction.rs`) executes the commands against
//! storage nodes and the metadata group, and the unit tests below drive the machines directly.
//!
//! Gray & Lamport, "Consensus on Transaction Commit", §2: a transaction commits only if every
//! participant voted yes in phase 1, and the decision is recorded durably before phase 2 so a
//! coordinator crash between the phases can be resolved from the record.

use std::collections::BTreeSet;
use std::fmt;

use crate::sharding::StorageNodeId;

/// A transaction id, unique across the cluster's compute nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub u64);

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}", self.0)
    }
}

/// The outcome of a transaction, as recorded in the commit record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every participant applies the transaction's intents.
    Commit,
    /// Every participant removes the transaction's intents.
    Abort,
}

impl Decision {
    /// The text stored in the commit record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "committed",
            Self::Abort => "aborted",
        }
    }

    /// The decision a stored commit record names, if it names one.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "committed" => Some(Self::Commit),
            "aborted" => Some(Self::Abort),
            _ => None,
        }
    }
}

/// A participant's phase-1 answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vote {
    /// Its intents are in place and it will apply them if told to commit.
    Yes,
    /// It cannot commit (its intents were removed by a resolver or lost).
    No,
}

/// Where one participant (a storage node) is in a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParticipantState {
    /// Taking the transaction's writes as intents.
    Working,
    /// Voted yes; its intents stay until the decision arrives.
    Prepared,
    /// Applied its intents.
    Committed,
    /// Removed its intents.
    Aborted,
}

impl ParticipantState {
    /// Whether the participant still takes writes.
    pub fn accepts_writes(self) -> bool {
        self == Self::Working
    }

    /// Phase 1: vote, and move to `Prepared` on yes.
    pub fn prepare(&mut self) -> Vote {
        match self {
            Self::Working | Self::Prepared => {
                *self = Self::Prepared;
                Vote::Yes
            }
            Self::Committed => Vote::Yes,
            Self::Aborted => Vote::No,
        }
    }

    /// Phase 2, commit.
    ///
    /// # Panics
    /// If the participant aborted: a commit decision after an abort is a bug in the protocol.
    pub fn commit(&mut self) {
        assert!(
            *self != Self::Aborted,
            "2pc: commit delivered to a participant that aborted"
        );
        *self = Self::Committed;
    }

    /// Phase 2, abort (also a rollback before prepare).
    ///
    /// # Panics
    /// If the participant committed: an abort after a commit is a bug in the protocol.
    pub fn abort(&mut self) {
        assert!(
            *self != Self::Committed,
            "2pc: abort delivered to a participant that committed"
        );
        *self = Self::Aborted;
    }
}

/// Where the coordinator is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordinatorState {
    /// Taking statements.
    Active,
    /// Phase 1: waiting for the votes of `pending`.
    Preparing {
        /// Participants that have not voted yet.
        pending: BTreeSet<StorageNodeId>,
    },
    /// Waiting for the decision to be recorded.
    Deciding(Decision),
    /// Phase 2: waiting for `pending` to apply the decision.
    Finishing {
        /// The recorded decision.
        decision: Decision,
        /// Participants that have not acknowledged it yet.
        pending: BTreeSet<StorageNodeId>,
    },
    /// Every participant applied the decision.
    Done(Decision),
}

/// What the runtime must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Ask each participant to prepare.
    Prepare(Vec<StorageNodeId>),
    /// Record the decision durably (compare-and-set in the metadata group).
    RecordDecision(Decision),
    /// Deliver the decision to each participant.
    Deliver(Decision, Vec<StorageNodeId>),
    /// The transaction is over.
    Finished(Decision),
}

/// The coordinator of one transaction.
#[derive(Clone, Debug)]
pub struct Coordinator {
    tx: TxId,
    /// Every storage node that holds an intent of the transaction.
    participants: BTreeSet<StorageNodeId>,
    /// Invariant: `Preparing.pending` and `Finishing.pending` are subsets of `participants`.
    state: CoordinatorState,
}

impl Coordinator {
    /// A coordinator for `tx`, taking statements.
    pub fn new(tx: TxId) -> Self {
        Self {
            tx,
            participants: BTreeSet::new(),
            state: CoordinatorState::Active,
        }
    }

    /// The transaction.
    pub fn tx(&self) -> TxId {
        self.tx
    }

    /// The current state.
    pub fn state(&self) -> &CoordinatorState {
        &self.state
    }

    /// The participants so far.
    pub fn participants(&self) -> &BTreeSet<StorageNodeId> {
        &self.participants
    }

    /// Whether statements may still run.
    pub fn is_active(&self) -> bool {
        self.state == CoordinatorState::Active
    }

    /// A statement wrote an intent on `node`.
    ///
    /// # Panics
    /// If the transaction is no longer active (the handle refuses statements before this).
    pub fn on_write(&mut self, node: StorageNodeId) {
        assert!(self.is_active(), "2pc: {} wrote after it ended", self.tx);
        self.participants.insert(node);
    }

    /// The client asked to commit: phase 1 begins (or, with no writes, the transaction ends).
    pub fn begin_commit(&mut self) -> Command {
        assert!(self.is_active(), "2pc: {} committed twice", self.tx);
        if self.participants.is_empty() {
            self.state = CoordinatorState::Done(Decision::Commit);
            return Command::Finished(Decision::Commit);
        }
        self.state = CoordinatorState::Preparing {
            pending: self.participants.clone(),
        };
        Command::Prepare(self.participants.iter().copied().collect())
    }

    /// The client asked to roll back, or the runtime gave up before the decision: abort
    /// everywhere. No record is needed, because only this coordinator ever records a commit.
    pub fn abort(&mut self) -> Command {
        assert!(
            matches!(
                self.state,
                CoordinatorState::Active | CoordinatorState::Preparing { .. }
            ),
            "2pc: {} aborted in state {:?}",
            self.tx,
            self.state
        );
        self.finish(Decision::Abort)
    }

    /// `node` voted. A no decides abort at once; the last yes asks for the commit record.
    pub fn on_vote(&mut self, node: StorageNodeId, vote: Vote) -> Option<Command> {
        let CoordinatorState::Preparing { pending } = &mut self.state else {
            panic!("2pc: {} got a vote in state {:?}", self.tx, self.state);
        };
        assert!(
            pending.remove(&node),
            "2pc: {} got a vote from {node}, which was not asked",
            self.tx
        );
        match vote {
            Vote::No => {
                self.state = CoordinatorState::Deciding(Decision::Abort);
                Some(Command::RecordDecision(Decision::Abort))
            }
            Vote::Yes if pending.is_empty() => {
                self.state = CoordinatorState::Deciding(Decision::Commit);
                Some(Command::RecordDecision(Decision::Commit))
            }
            Vote::Yes => None,
        }
    }

    /// The record holds `recorded` (which may differ from the proposal: a resolver that found
    /// the transaction abandoned recorded an abort first). Phase 2 delivers what is recorded.
    pub fn on_decision_recorded(&mut self, recorded: Decision) -> Command {
        let CoordinatorState::Deciding(proposed) = self.state else {
            panic!("2pc: {} recorded in state {:?}", self.tx, self.state);
        };
        assert!(
            !(proposed == Decision::Abort && recorded == Decision::Commit),
            "2pc: {} proposed abort but commit was recorded, and only its coordinator commits",
            self.tx
        );
        self.finish(recorded)
    }

    fn finish(&mut self, decision: Decision) -> Command {
        if self.participants.is_empty() {
            self.state = CoordinatorState::Done(decision);
            return Command::Finished(decision);
        }
        self.state = CoordinatorState::Finishing {
            decision,
            pending: self.participants.clone(),
        };
        Command::Deliver(decision, self.participants.iter().copied().collect())
    }

    /// `node` applied the decision; after the last one, the transaction is finished.
    pub fn on_delivered(&mut self, node: StorageNodeId) -> Option<Command> {
        let CoordinatorState::Finishing { decision, pending } = &mut self.state else {
            panic!("2pc: {} got an ack in state {:?}", self.tx, self.state);
        };
        pending.remove(&node);
        if pending.is_empty() {
            let decision = *decision;
            self.state = CoordinatorState::Done(decision);
            return Some(Command::Finished(decision));
        }
        None
    }

    /// Checks the invariants; tests call it after every step.
    pub fn validate(&self) {
        match &self.state {
            CoordinatorState::Preparing { pending }
            | CoordinatorState::Finishing { pending, .. } => assert!(
                pending.is_subset(&self.participants),
                "2pc: {} waits for a node that is not a participant",
                self.tx
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u64) -> StorageNodeId {
        StorageNodeId(i)
    }

    fn coordinator_with(nodes: &[u64]) -> Coordinator {
        let mut c = Coordinator::new(TxId(1));
        for &i in nodes {
            c.on_write(node(i));
            c.validate();
        }
        c
    }

    #[test]
    fn all_yes_votes_record_commit_then_deliver_it_to_every_participant() {
        let mut c = coordinator_with(&[0, 1, 2, 1]);
        assert_eq!(
            c.begin_commit(),
            Command::Prepare(vec![node(0), node(1), node(2)])
        );
        assert_eq!(c.on_vote(node(0), Vote::Yes), None);
        assert_eq!(c.on_vote(node(2), Vote::Yes), None);
        c.validate();
        assert_eq!(
            c.on_vote(node(1), Vote::Yes),
            Some(Command::RecordDecision(Decision::Commit))
        );
        assert_eq!(
            c.on_decision_recorded(Decision::Commit),
            Command::Deliver(Decision::Commit, vec![node(0), node(1), node(2)])
        );
        assert_eq!(c.on_delivered(node(0)), None);
        assert_eq!(c.on_delivered(node(1)), None);
        assert_eq!(
            c.on_delivered(node(2)),
            Some(Command::Finished(Decision::Commit))
        );
        assert_eq!(c.state(), &CoordinatorState::Done(Decision::Commit));
    }

    #[test]
    fn one_no_vote_decides_abort_without_waiting_for_the_rest() {
        let mut c = coordinator_with(&[0, 1]);
        c.begin_commit();
        assert_eq!(
            c.on_vote(node(1), Vote::No),
            Some(Command::RecordDecision(Decision::Abort))
        );
        assert_eq!(
            c.on_decision_recorded(Decision::Abort),
            Command::Deliver(Decision::Abort, vec![node(0), node(1)])
        );
    }

    #[test]
    fn a_resolver_recorded_abort_wins_over_the_coordinators_commit() {
        let mut c = coordinator_with(&[0]);
        c.begin_commit();
        c.on_vote(node(0), Vote::Yes);
        assert_eq!(
            c.on_decision_recorded(Decision::Abort),
            Command::Deliver(Decision::Abort, vec![node(0)])
        );
    }

    #[test]
    fn a_read_only_transaction_finishes_without_a_round() {
        let mut c = Coordinator::new(TxId(9));
        assert_eq!(c.begin_commit(), Command::Finished(Decision::Commit));
    }

    #[test]
    fn rollback_without_writes_finishes_at_once() {
        let mut c = Coordinator::new(TxId(2));
        assert_eq!(c.abort(), Command::Finished(Decision::Abort));
    }

    #[test]
    fn rollback_aborts_every_participant() {
        let mut c = coordinator_with(&[3, 4]);
        assert_eq!(
            c.abort(),
            Command::Deliver(Decision::Abort, vec![node(3), node(4)])
        );
        c.validate();
    }

    #[test]
    #[should_panic(expected = "wrote after it ended")]
    fn writes_after_commit_are_a_bug() {
        let mut c = coordinator_with(&[0]);
        c.begin_commit();
        c.on_write(node(1));
    }

    #[test]
    fn a_participant_aborted_by_a_resolver_votes_no() {
        let mut p = ParticipantState::Working;
        p.abort();
        assert_eq!(p.prepare(), Vote::No);
        let mut q = ParticipantState::Working;
        assert_eq!(q.prepare(), Vote::Yes);
        assert!(!q.accepts_writes());
        q.commit();
        assert_eq!(q, ParticipantState::Committed);
    }

    #[test]
    #[should_panic(expected = "commit delivered to a participant that aborted")]
    fn commit_after_abort_is_a_bug() {
        let mut p = ParticipantState::Prepared;
        p.abort();
        p.commit();
    }
}
