//! Commit and rollback of a [`Transaction`]: two-phase commit, driving the [`Coordinator`]
//! state machine and executing its commands against storage nodes and the commit record; and
//! the deliberately broken `unsafe_no_2pc` commit.
//!
//! Every step passes the compute node's fault gate. A kill or isolation cuts the commit off
//! there with no cleanup, as a dead process would: before the decision could be recorded the
//! outcome is a definite abort (only the coordinator records a commit, and recovery records an
//! abort for what it finds undecided); from then on it is unknown
//! ([`ComputeError::CommitInterrupted`]).
//!
//! [`Coordinator`]: super::super::two_phase::Coordinator

use std::sync::atomic::Ordering;

use super::super::error::{ComputeError, CrashPoint};
use super::super::two_phase::{Command, Decision, Vote};
use super::Transaction;
use crate::sharding::StorageNodeId;
use crate::storage_cluster::ClusterError;

impl Transaction {
    /// The seed API: two-phase commit. `Ok` means every participant applied the writes;
    /// [`ComputeError::Aborted`] means none did. Under `unsafe_no_2pc`, each participant
    /// applies its writes in turn with no prepare and no commit record.
    pub async fn commit(self) -> Result<(), ComputeError> {
        self.run_commit(None).await
    }

    /// Test aid: runs commit up to `point` and stops there as if the coordinator crashed,
    /// leaving the intents for [`crate::compute::ComputeNode::recover_transactions`] or a blocked
    /// writer. Under `unsafe_no_2pc`, `AfterPrepare` and `AfterDecision` stop before the first
    /// participant commits (there is no prepare and no decision to stop after).
    pub async fn commit_then_crash(self, point: CrashPoint) -> Result<(), ComputeError> {
        self.run_commit(Some(point)).await
    }

    /// The seed API: removes the transaction's intents everywhere.
    pub async fn rollback(self) -> Result<(), ComputeError> {
        self.check_active()?;
        self.gate().await?;
        let command = self.coordinator().abort();
        self.drive(command, None).await.map(|_| ())
    }

    async fn run_commit(&self, crash: Option<CrashPoint>) -> Result<(), ComputeError> {
        self.check_active()?;
        self.gate().await?;
        if self.compute.inner.options.unsafe_no_2pc {
            return self.commit_without_2pc(crash).await;
        }
        let command = self.coordinator().begin_commit();
        match self.drive(command, crash).await? {
            Decision::Commit => Ok(()),
            Decision::Abort => Err(ComputeError::Aborted {
                tx: self.id,
                reason: "a participant voted no (its intents were resolved as abandoned)"
                    .to_string(),
            }),
        }
    }

    /// Passes the node's fault gate before a step; a refusal ends the transaction as a
    /// coordinator crash (no cleanup). `outcome_unknown`: whether the decision may already be
    /// recorded (or, without 2PC, a participant may have committed).
    async fn step(&self, outcome_unknown: bool) -> Result<(), ComputeError> {
        match self.gate().await {
            Ok(()) => Ok(()),
            Err(cause) => Err(self.cut_off(cause, outcome_unknown)),
        }
    }

    fn cut_off(&self, cause: ComputeError, outcome_unknown: bool) -> ComputeError {
        self.ended.store(true, Ordering::SeqCst);
        tracing::warn!(tx = %self.id, %cause, "commit cut off");
        if outcome_unknown {
            ComputeError::CommitInterrupted {
                tx: self.id,
                cause: Box::new(cause),
            }
        } else {
            cause
        }
    }

    /// Executes the coordinator's commands until it finishes. Each command moves the machine
    /// forward, so the loop ends after at most four commands.
    async fn drive(
        &self,
        mut command: Command,
        crash: Option<CrashPoint>,
    ) -> Result<Decision, ComputeError> {
        for _ in 0..8 {
            command = match command {
                Command::Prepare(nodes) => {
                    let next = self.prepare(&nodes).await?;
                    if self.crashes_at(CrashPoint::AfterPrepare, crash).await {
                        return Err(self.crash(CrashPoint::AfterPrepare));
                    }
                    next
                }
                Command::RecordDecision(decision) => {
                    let recorded = self.record(decision).await?;
                    if self.crashes_at(CrashPoint::AfterDecision, crash).await {
                        return Err(self.crash(CrashPoint::AfterDecision));
                    }
                    self.coordinator().on_decision_recorded(recorded)
                }
                Command::Deliver(decision, nodes) => {
                    self.ended.store(true, Ordering::SeqCst);
                    self.deliver(decision, &nodes, crash).await?
                }
                Command::Finished(decision) => {
                    self.ended.store(true, Ordering::SeqCst);
                    return Ok(decision);
                }
            };
        }
        unreachable!(
            "2pc: the coordinator of {} did not finish in 8 steps",
            self.id
        )
    }

    /// Whether the coordinator dies at `point`: asked for by the test aid (`crash`), or armed
    /// on the node by the nemesis, in which case the whole node is killed here.
    async fn crashes_at(&self, point: CrashPoint, crash: Option<CrashPoint>) -> bool {
        if crash == Some(point) {
            return true;
        }
        if self.compute.inner.faults.take_armed_crash(point) {
            tracing::info!(tx = %self.id, ?point, "armed crash fired");
            self.compute.kill().await;
            return true;
        }
        false
    }

    fn crash(&self, point: CrashPoint) -> ComputeError {
        self.ended.store(true, Ordering::SeqCst);
        ComputeError::CoordinatorCrashed { tx: self.id, point }
    }

    /// Phase 1. An unreachable participant counts as a no vote: abort is always safe.
    async fn prepare(&self, nodes: &[StorageNodeId]) -> Result<Command, ComputeError> {
        for &id in nodes {
            self.step(false).await?;
            let vote = match self.compute.cluster().node(id) {
                Ok(node) => node.tx_prepare(self.id).unwrap_or(Vote::No),
                Err(_) => Vote::No,
            };
            if let Some(next) = self.coordinator().on_vote(id, vote) {
                return Ok(next);
            }
        }
        unreachable!(
            "2pc: every participant of {} voted and no decision came",
            self.id
        )
    }

    /// Records the decision. A kill or isolation while the record is in flight cuts the
    /// commit off at once, as a process dying mid-call: the record may or may not be written.
    async fn record(&self, decision: Decision) -> Result<Decision, ComputeError> {
        self.step(false).await?;
        let faults = &self.compute.inner.faults;
        tokio::select! {
            biased;
            cause = faults.cut_off(self.incarnation) => {
                Err(self.cut_off(cause, decision == Decision::Commit))
            }
            recorded = self.compute.inner.records.decide(self.id, decision) => Ok(recorded?),
        }
    }

    /// Phase 2. With `CrashPoint::BetweenShardCommits`, stops after the first participant.
    async fn deliver(
        &self,
        decision: Decision,
        nodes: &[StorageNodeId],
        crash: Option<CrashPoint>,
    ) -> Result<Command, ComputeError> {
        let mut finished = None;
        // An armed crash waits for a commit with writes: between two aborts' deliveries, or two
        // deliveries of a commit that only held locks (a locked read), nothing is at stake.
        let at_stake =
            (decision == Decision::Commit && self.wrote.load(Ordering::SeqCst)) || crash.is_some();
        for (i, &id) in nodes.iter().enumerate() {
            if i > 0
                && at_stake
                && self
                    .crashes_at(CrashPoint::BetweenShardCommits, crash)
                    .await
            {
                return Err(self.crash(CrashPoint::BetweenShardCommits));
            }
            self.step(decision == Decision::Commit).await?;
            let applied = self
                .compute
                .cluster()
                .node(id)
                .map_err(|e| e.to_string())
                .and_then(|node| {
                    match decision {
                        Decision::Commit => node.tx_commit(self.id),
                        Decision::Abort => node.tx_abort(self.id),
                    }
                    .map_err(|e| e.to_string())
                });
            if let Err(reason) = applied {
                return Err(ComputeError::Unresolved {
                    tx: self.id,
                    decision: decision.as_str(),
                    node: id,
                    reason,
                });
            }
            finished = self.coordinator().on_delivered(id);
        }
        Ok(finished.expect("2pc: the last delivery finishes the transaction"))
    }

    /// Test aid, deliberately unsafe (`--unsafe no-2pc`): tells each participant in turn to
    /// apply its intents, with no prepare and no commit record. Between two participants it
    /// yields and checks for a kill or isolation, so a crash there leaves the rest to recovery,
    /// which finds no record and aborts them: a half-applied transaction.
    async fn commit_without_2pc(&self, crash: Option<CrashPoint>) -> Result<(), ComputeError> {
        // From here on, the intents belong to this loop (or to recovery), never to a drop.
        self.ended.store(true, Ordering::SeqCst);
        let participants: Vec<StorageNodeId> =
            self.coordinator().participants().iter().copied().collect();
        if let Some(point @ (CrashPoint::AfterPrepare | CrashPoint::AfterDecision)) = crash {
            return Err(self.crash(point));
        }
        let mut committed = Vec::with_capacity(participants.len());
        for (i, &id) in participants.iter().enumerate() {
            if i > 0 {
                tokio::task::yield_now().await;
                if self
                    .crashes_at(CrashPoint::BetweenShardCommits, crash)
                    .await
                {
                    return Err(self.crash(CrashPoint::BetweenShardCommits));
                }
            }
            self.step(!committed.is_empty()).await?;
            let applied = self
                .compute
                .cluster()
                .node(id)
                .and_then(|node| node.tx_commit(self.id).map_err(ClusterError::from));
            match applied {
                Ok(()) => committed.push(id),
                Err(error) if committed.is_empty() && !error.outcome_is_unknown() => {
                    return Err(error.into())
                }
                Err(error) => {
                    return Err(ComputeError::PartialCommit {
                        tx: self.id,
                        committed,
                        node: id,
                        reason: error.to_string(),
                    })
                }
            }
        }
        Ok(())
    }
}
