//! The rebalancer's protocol as a plain state machine: which step comes next when a node joins.
//!
//! Phases: `Copying` (bulk copy of the moving ranges while the sources record a change log)
//! → `CatchingUp` (replay the change log until it is short) → `Switching` (freeze the sources,
//! replay the rest, commit the new epoch through Raft) → `Done` (delete the moved ranges at the
//! sources). A failure before the commit restarts the copy as a new, fenced attempt, or, once
//! the attempts are spent, rolls back (`Aborted`): the old owners stay authoritative throughout.
//! The runtime (`storage_cluster::rebalance`) executes the actions against nodes and Raft.

use std::ops::Bound;
use std::time::Duration;

use super::ring::{HashRing, RangeTransfer};
use super::shard_map::StorageNodeId;
use crate::storage::key_bounds;

/// One ordered scan of the copy: a table's part of one moving range at one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyTask {
    /// The table.
    pub table: String,
    /// The node that owns the range now.
    pub source: StorageNodeId,
    /// The lower stored-key bound.
    pub start: Bound<Vec<u8>>,
    /// The upper stored-key bound.
    pub end: Bound<Vec<u8>>,
}

/// What a join moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovePlan {
    /// The joining node.
    pub node: StorageNodeId,
    /// The epoch the plan was made against.
    pub base_epoch: u64,
    /// The moving ranges and their current owners.
    pub transfers: Vec<RangeTransfer>,
    /// The scans, in order.
    /// Invariant: covers every transfer for every table, once.
    pub tasks: Vec<CopyTask>,
}

impl MovePlan {
    /// The plan for `node` (named `name`) joining `ring` at `base_epoch`, for `tables`.
    pub fn new(
        node: StorageNodeId,
        name: &str,
        ring: &HashRing,
        base_epoch: u64,
        tables: &[String],
    ) -> Self {
        let transfers = ring.transfers_for_join(node, name);
        let mut tasks = Vec::new();
        for table in tables {
            for transfer in &transfers {
                for (start, end) in key_bounds(&transfer.range) {
                    tasks.push(CopyTask {
                        table: table.clone(),
                        source: transfer.source,
                        start,
                        end,
                    });
                }
            }
        }
        Self {
            node,
            base_epoch,
            transfers,
            tasks,
        }
    }

    /// The distinct source nodes, in id order.
    pub fn sources(&self) -> Vec<StorageNodeId> {
        let mut sources: Vec<_> = self.transfers.iter().map(|t| t.source).collect();
        sources.sort();
        sources.dedup();
        sources
    }
}

/// The bounds of a move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveLimits {
    /// Copy attempts before the move rolls back.
    pub max_attempts: u32,
    /// Catch-up rounds before switching regardless of the change log's length.
    pub max_catch_up_rounds: u32,
    /// Switch once a catch-up round leaves at most this many entries.
    pub switch_threshold_entries: usize,
    /// Rows per copy batch.
    pub copy_batch_rows: usize,
    /// Pause between attempts.
    pub retry_backoff: Duration,
    /// Pause after each copy batch: a throttle that leaves room for foreground traffic
    /// (zero: copy at full speed).
    pub copy_pause: Duration,
    /// Test aid, deliberately unsafe: switch right after the copy, without replaying the change
    /// log, so writes made during the copy are lost (`--unsafe skip-catchup`).
    pub unsafe_skip_catchup: bool,
}

impl Default for MoveLimits {
    fn default() -> Self {
        Self {
            max_attempts: 20,
            max_catch_up_rounds: 50,
            switch_threshold_entries: 256,
            copy_batch_rows: 512,
            retry_backoff: Duration::from_millis(100),
            copy_pause: Duration::ZERO,
            unsafe_skip_catchup: false,
        }
    }
}

/// Where a move stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MovePhase {
    /// Bulk copy of the moving ranges; sources record their writes to them.
    Copying,
    /// Replaying the recorded writes onto the new owner.
    CatchingUp,
    /// Sources frozen, the rest replayed, the epoch being committed.
    Switching,
    /// The new epoch is committed; the new owner is authoritative.
    Done,
    /// Rolled back: the joining node was dropped and the old owners keep their ranges.
    Aborted,
}

/// Counters of a move.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveProgress {
    /// Rows copied in bulk, over all attempts.
    pub rows_copied: u64,
    /// Bytes (keys and values) copied in bulk, over all attempts.
    pub bytes_copied: u64,
    /// Change-log entries replayed, over all attempts.
    pub rows_caught_up: u64,
    /// Bytes replayed.
    pub bytes_caught_up: u64,
}

/// The next thing the runtime must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RebalanceAction {
    /// Fence earlier attempts in Raft, clear the target's copy of the moving ranges, and make
    /// the sources record their writes to them.
    StartAttempt {
        /// The attempt number, from 1.
        attempt: u32,
    },
    /// Copy up to `limit` rows of `plan.tasks[task]` after `after` (exclusive).
    CopyBatch {
        /// Index into the plan's tasks.
        task: usize,
        /// The last key copied of this task, if any.
        after: Option<Vec<u8>>,
        /// Rows per batch.
        limit: usize,
    },
    /// Replay the sources' change logs onto the target once.
    CatchUp,
    /// Freeze the sources, replay what is left (unless `replay` is false), commit the epoch.
    Switch {
        /// The attempt being committed.
        attempt: u32,
        /// The epoch the plan was made against.
        expected_epoch: u64,
        /// Whether to replay the change log under the freeze (false only in the unsafe mode).
        replay: bool,
    },
    /// Delete the moved ranges at the sources and stop recording.
    Cleanup,
    /// Drop the joining node in Raft and delete its partial copy.
    RollBack,
    /// Nothing left to do.
    Finished,
}

/// The protocol state of one join.
#[derive(Clone, Debug)]
pub struct Rebalancer {
    plan: MovePlan,
    limits: MoveLimits,
    phase: MovePhase,
    /// The current attempt, from 1.
    /// Invariant: `1 <= attempt <= limits.max_attempts`.
    attempt: u32,
    /// Whether the current attempt's `StartAttempt` completed.
    attempt_started: bool,
    /// The copy position: the task, and the last key copied of it.
    /// Invariant: `task <= plan.tasks.len()`; equal only once the copy is complete.
    copy_task: usize,
    copy_after: Option<Vec<u8>>,
    /// Catch-up rounds of the current attempt.
    catch_up_rounds: u32,
    /// The epoch committed by the switch.
    /// Invariant: `Some` exactly when the phase is `Done`.
    committed_epoch: Option<u64>,
    /// Whether the final action (cleanup or rollback) completed.
    finished: bool,
    /// Why the last attempt failed.
    last_failure: Option<String>,
    progress: MoveProgress,
}

impl Rebalancer {
    /// A move at its start.
    pub fn new(plan: MovePlan, limits: MoveLimits) -> Self {
        assert!(
            limits.max_attempts >= 1,
            "a move needs at least one attempt"
        );
        assert!(
            limits.copy_batch_rows >= 1,
            "a copy batch holds at least one row"
        );
        Self {
            plan,
            limits,
            phase: MovePhase::Copying,
            attempt: 1,
            attempt_started: false,
            copy_task: 0,
            copy_after: None,
            catch_up_rounds: 0,
            committed_epoch: None,
            finished: false,
            last_failure: None,
            progress: MoveProgress::default(),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &MovePlan {
        &self.plan
    }

    /// The phase.
    pub fn phase(&self) -> MovePhase {
        self.phase
    }

    /// The current attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The counters.
    pub fn progress(&self) -> &MoveProgress {
        &self.progress
    }

    /// The epoch the switch committed, once `Done`.
    pub fn committed_epoch(&self) -> Option<u64> {
        self.committed_epoch
    }

    /// Why the last attempt failed, if one did.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// The next action.
    pub fn next_action(&self) -> RebalanceAction {
        match self.phase {
            MovePhase::Done if self.finished => RebalanceAction::Finished,
            MovePhase::Done => RebalanceAction::Cleanup,
            MovePhase::Aborted if self.finished => RebalanceAction::Finished,
            MovePhase::Aborted => RebalanceAction::RollBack,
            MovePhase::Copying if !self.attempt_started => RebalanceAction::StartAttempt {
                attempt: self.attempt,
            },
            MovePhase::Copying => RebalanceAction::CopyBatch {
                task: self.copy_task,
                after: self.copy_after.clone(),
                limit: self.limits.copy_batch_rows,
            },
            MovePhase::CatchingUp => RebalanceAction::CatchUp,
            MovePhase::Switching => RebalanceAction::Switch {
                attempt: self.attempt,
                expected_epoch: self.plan.base_epoch,
                replay: !self.limits.unsafe_skip_catchup,
            },
        }
    }

    fn end_copy_if_complete(&mut self) {
        if self.copy_task == self.plan.tasks.len() {
            self.phase = if self.limits.unsafe_skip_catchup {
                MovePhase::Switching
            } else {
                MovePhase::CatchingUp
            };
        }
    }

    /// `StartAttempt` completed.
    pub fn on_attempt_started(&mut self) {
        assert_eq!(self.phase, MovePhase::Copying, "attempts start in Copying");
        self.attempt_started = true;
        self.copy_task = 0;
        self.copy_after = None;
        self.catch_up_rounds = 0;
        self.end_copy_if_complete();
        self.validate();
    }

    /// A `CopyBatch` copied `rows` rows of `bytes` bytes; `last_key` is the last one copied, or
    /// `None` when the task had nothing left (it is complete).
    pub fn on_copied(&mut self, rows: u64, bytes: u64, last_key: Option<Vec<u8>>) {
        assert_eq!(
            self.phase,
            MovePhase::Copying,
            "copy batches come in Copying"
        );
        assert!(self.attempt_started, "copy batches follow StartAttempt");
        self.progress.rows_copied += rows;
        self.progress.bytes_copied += bytes;
        match last_key {
            Some(key) => self.copy_after = Some(key),
            None => {
                self.copy_task += 1;
                self.copy_after = None;
                self.end_copy_if_complete();
            }
        }
        self.validate();
    }

    /// A `CatchUp` round replayed `rows` entries of `bytes` bytes, and `remaining` entries were
    /// recorded meanwhile.
    pub fn on_caught_up(&mut self, rows: u64, bytes: u64, remaining: usize) {
        assert_eq!(
            self.phase,
            MovePhase::CatchingUp,
            "catch-up rounds come in CatchingUp"
        );
        self.progress.rows_caught_up += rows;
        self.progress.bytes_caught_up += bytes;
        self.catch_up_rounds += 1;
        if remaining <= self.limits.switch_threshold_entries
            || self.catch_up_rounds >= self.limits.max_catch_up_rounds
        {
            self.phase = MovePhase::Switching;
        }
        self.validate();
    }

    /// The switch replayed `rows` final entries and committed `epoch`; or a new attempt found
    /// the commit of an earlier one already applied.
    pub fn on_switched(&mut self, rows: u64, bytes: u64, epoch: u64) {
        assert!(
            matches!(self.phase, MovePhase::Switching | MovePhase::Copying),
            "a commit is learned while switching or when an attempt starts"
        );
        assert!(
            epoch > self.plan.base_epoch,
            "a committed join bumps the epoch"
        );
        self.progress.rows_caught_up += rows;
        self.progress.bytes_caught_up += bytes;
        self.phase = MovePhase::Done;
        self.committed_epoch = Some(epoch);
        self.validate();
    }

    /// The final action (cleanup or rollback) completed.
    pub fn on_finished(&mut self) {
        assert!(
            matches!(self.phase, MovePhase::Done | MovePhase::Aborted),
            "only a decided move finishes"
        );
        self.finished = true;
    }

    /// The current attempt failed before its commit. A `retryable` failure starts a new
    /// attempt while attempts remain; otherwise the move rolls back.
    pub fn on_failure(&mut self, reason: String, retryable: bool) {
        assert!(
            !matches!(self.phase, MovePhase::Done | MovePhase::Aborted),
            "a decided move cannot fail: {reason}"
        );
        self.last_failure = Some(reason);
        if retryable && self.attempt < self.limits.max_attempts {
            self.attempt += 1;
            self.phase = MovePhase::Copying;
            self.attempt_started = false;
        } else {
            self.phase = MovePhase::Aborted;
        }
        self.validate();
    }

    /// Checks the invariants; called after every step.
    pub fn validate(&self) {
        assert!(
            (1..=self.limits.max_attempts).contains(&self.attempt),
            "attempt {} out of 1..={}",
            self.attempt,
            self.limits.max_attempts
        );
        assert!(
            self.copy_task <= self.plan.tasks.len(),
            "copy past the plan"
        );
        assert_eq!(
            self.committed_epoch.is_some(),
            self.phase == MovePhase::Done,
            "an epoch is committed exactly when Done"
        );
        if self.phase == MovePhase::Copying && self.attempt_started {
            assert!(
                self.copy_task < self.plan.tasks.len(),
                "a complete copy leaves Copying"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sharding::StorageNodeId;

    fn plan() -> MovePlan {
        let ring = HashRing::new([(StorageNodeId(0), "a"), (StorageNodeId(1), "b")]);
        MovePlan::new(StorageNodeId(2), "c", &ring, 2, &["t".to_string()])
    }

    fn copy_everything(machine: &mut Rebalancer) {
        while let RebalanceAction::CopyBatch { after, .. } = machine.next_action() {
            if after.is_none() {
                machine.on_copied(1, 10, Some(vec![1]));
            } else {
                machine.on_copied(0, 0, None);
            }
        }
    }

    #[test]
    fn a_move_goes_copy_catch_up_switch_cleanup() {
        let mut machine = Rebalancer::new(plan(), MoveLimits::default());
        assert_eq!(
            machine.next_action(),
            RebalanceAction::StartAttempt { attempt: 1 }
        );
        machine.on_attempt_started();
        copy_everything(&mut machine);
        assert_eq!(machine.phase(), MovePhase::CatchingUp);
        machine.on_caught_up(5, 50, 10_000);
        assert_eq!(
            machine.next_action(),
            RebalanceAction::CatchUp,
            "log still long"
        );
        machine.on_caught_up(5, 50, 3);
        assert_eq!(
            machine.next_action(),
            RebalanceAction::Switch {
                attempt: 1,
                expected_epoch: 2,
                replay: true
            }
        );
        machine.on_switched(3, 30, 3);
        assert_eq!(machine.next_action(), RebalanceAction::Cleanup);
        machine.on_finished();
        assert_eq!(machine.next_action(), RebalanceAction::Finished);
        assert_eq!(machine.progress().rows_caught_up, 13);
        assert_eq!(machine.progress().rows_copied, plan().tasks.len() as u64);
    }

    #[test]
    fn a_failed_attempt_restarts_the_copy_then_rolls_back_when_attempts_run_out() {
        let limits = MoveLimits {
            max_attempts: 2,
            ..MoveLimits::default()
        };
        let mut machine = Rebalancer::new(plan(), limits);
        machine.on_attempt_started();
        machine.on_copied(10, 100, Some(vec![9]));
        machine.on_failure("target down".into(), true);
        assert_eq!(
            machine.next_action(),
            RebalanceAction::StartAttempt { attempt: 2 }
        );
        machine.on_attempt_started();
        assert!(matches!(
            machine.next_action(),
            RebalanceAction::CopyBatch {
                task: 0,
                after: None,
                ..
            }
        ));
        machine.on_failure("target down".into(), true);
        assert_eq!(machine.next_action(), RebalanceAction::RollBack);
        machine.on_finished();
        assert_eq!(machine.next_action(), RebalanceAction::Finished);
        assert_eq!(machine.committed_epoch(), None);
    }

    #[test]
    fn unsafe_skip_catchup_switches_right_after_the_copy_without_replay() {
        let limits = MoveLimits {
            unsafe_skip_catchup: true,
            ..MoveLimits::default()
        };
        let mut machine = Rebalancer::new(plan(), limits);
        machine.on_attempt_started();
        copy_everything(&mut machine);
        assert_eq!(
            machine.next_action(),
            RebalanceAction::Switch {
                attempt: 1,
                expected_epoch: 2,
                replay: false
            }
        );
    }

    #[test]
    fn catch_up_rounds_are_bounded() {
        let limits = MoveLimits {
            max_catch_up_rounds: 3,
            ..MoveLimits::default()
        };
        let mut machine = Rebalancer::new(plan(), limits);
        machine.on_attempt_started();
        copy_everything(&mut machine);
        for _ in 0..3 {
            assert_eq!(machine.next_action(), RebalanceAction::CatchUp);
            machine.on_caught_up(1, 1, usize::MAX);
        }
        assert!(matches!(
            machine.next_action(),
            RebalanceAction::Switch { .. }
        ));
    }
}
