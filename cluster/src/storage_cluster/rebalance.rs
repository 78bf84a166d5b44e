//! The rebalancer's runtime: executes the `Rebalancer` state machine's actions against storage
//! nodes and the metadata group, and publishes progress (rows, bytes, MB/s).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{lock, ClusterError, NodeHandle, StorageCluster};
use crate::sharding::{
    MetadataServiceError, MovePhase, MovePlan, RangeSet, RebalanceAction, Rebalancer,
    ShardMapCommand, ShardMapError, StorageNodeId,
};
use crate::storage::{key_bounds, ChangeCapture, Entry, KeyBounds, StorageNode};

/// Progress of the current or last move.
#[derive(Clone, Debug, PartialEq)]
pub struct RebalanceProgress {
    /// The joining node.
    pub node: StorageNodeId,
    /// The phase.
    pub phase: MovePhase,
    /// The attempt.
    pub attempt: u32,
    /// Rows copied in bulk plus rows replayed from change logs.
    pub rows_moved: u64,
    /// Bytes copied in bulk plus bytes replayed.
    pub bytes_moved: u64,
    /// Time since the move started.
    pub elapsed: Duration,
    /// `bytes_moved` over `elapsed`, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Why the last attempt failed, if one did.
    pub last_failure: Option<String>,
}

/// How the last move ended, as `wait_for_rebalancing_complete` reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum RebalanceStatus {
    /// No move was ever started.
    Idle,
    /// The new owner is authoritative.
    Completed(RebalanceProgress),
    /// The move rolled back; the old owners kept their ranges.
    Aborted(RebalanceProgress),
    /// The wait bound passed with the move still running.
    StillRunning(RebalanceProgress),
}

/// The cluster's one move slot.
#[derive(Default)]
pub(crate) struct RebalanceSlot {
    /// Serializes joins.
    join: tokio::sync::Mutex<()>,
    /// The latest progress; `None` before the first move.
    progress: Mutex<Option<RebalanceProgress>>,
    /// Whether a move runs.
    running: Mutex<Option<watch::Receiver<bool>>>,
}

struct Move {
    cluster: StorageCluster,
    machine: Rebalancer,
    target: StorageNode,
    sources: BTreeMap<StorageNodeId, StorageNode>,
    /// The moving stored-key intervals of each source.
    bounds: BTreeMap<StorageNodeId, Vec<KeyBounds>>,
    captures: BTreeMap<StorageNodeId, Arc<ChangeCapture>>,
    tables: Vec<String>,
    started: Instant,
}

fn bytes_of(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
}

impl StorageCluster {
    /// The seed API: adds a storage node and starts moving its ranges to it in the background.
    /// Waits for an earlier move to finish first (one join at a time).
    pub async fn add_node(&self, name: &str, addr: &str) -> Result<NodeHandle, ClusterError> {
        let slot = &self.shared.rebalance;
        let _join = slot.join.lock().await;
        // One join at a time: wait out the previous move.
        self.wait_for_rebalancing_complete().await;
        let routing = self.refresh_routing().await?;
        let target = self.begin_join(name, addr).await?;
        let tables: Vec<String> = routing.map.tables.keys().cloned().collect();
        let plan = MovePlan::new(target.id(), name, &routing.ring, routing.epoch(), &tables);
        let mut sources = BTreeMap::new();
        let mut bounds: BTreeMap<StorageNodeId, Vec<KeyBounds>> = BTreeMap::new();
        for transfer in &plan.transfers {
            sources.insert(transfer.source, self.node(transfer.source)?);
            bounds
                .entry(transfer.source)
                .or_default()
                .extend(key_bounds(&transfer.range));
        }
        let machine = Rebalancer::new(plan, self.shared.options.move_limits.clone());
        let handle = NodeHandle {
            id: target.id(),
            name: name.to_string(),
            addr: addr.to_string(),
        };
        let mut job = Move {
            cluster: self.clone(),
            machine,
            target,
            sources,
            bounds,
            captures: BTreeMap::new(),
            tables,
            started: Instant::now(),
        };
        job.publish();
        let (done_tx, done_rx) = watch::channel(false);
        *lock(&slot.running) = Some(done_rx);
        tracing::info!(node = %handle.id, "rebalance started");
        tokio::spawn(async move {
            job.run().await;
            let _ = done_tx.send(true);
        });
        Ok(handle)
    }

    /// Progress of the current or last move.
    pub fn rebalance_progress(&self) -> Option<RebalanceProgress> {
        lock(&self.shared.rebalance.progress).clone()
    }

    /// The seed API: waits until the current move, if any, is decided (bounded by
    /// `rebalance_timeout`), and says how it ended.
    pub async fn wait_for_rebalancing_complete(&self) -> RebalanceStatus {
        let receiver = lock(&self.shared.rebalance.running).clone();
        if let Some(mut receiver) = receiver {
            let bound = self.shared.options.rebalance_timeout;
            let finished = tokio::time::timeout(bound, receiver.wait_for(|done| *done)).await;
            if finished.is_err() {
                let progress = self.rebalance_progress().expect("a running move publishes");
                return RebalanceStatus::StillRunning(progress);
            }
        }
        match self.rebalance_progress() {
            None => RebalanceStatus::Idle,
            Some(progress) if progress.phase == MovePhase::Done => {
                RebalanceStatus::Completed(progress)
            }
            Some(progress) => RebalanceStatus::Aborted(progress),
        }
    }
}

impl Move {
    fn publish(&self) {
        let progress = self.machine.progress();
        let elapsed = self.started.elapsed();
        let bytes_moved = progress.bytes_copied + progress.bytes_caught_up;
        let snapshot = RebalanceProgress {
            node: self.target.id(),
            phase: self.machine.phase(),
            attempt: self.machine.attempt(),
            rows_moved: progress.rows_copied + progress.rows_caught_up,
            bytes_moved,
            elapsed,
            mb_per_s: bytes_moved as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9),
            last_failure: self.machine.last_failure().map(str::to_string),
        };
        *lock(&self.cluster.shared.rebalance.progress) = Some(snapshot);
    }

    async fn run(&mut self) {
        let limits = self.cluster.shared.options.move_limits.clone();
        // Every step makes progress or spends an attempt, so this bounds the loop generously.
        let max_steps = 1_000_000 + 10 * self.machine.plan().tasks.len() as u64;
        for _ in 0..max_steps {
            let action = self.machine.next_action();
            let outcome = match action.clone() {
                RebalanceAction::Finished => break,
                RebalanceAction::StartAttempt { attempt } => self.start_attempt(attempt).await,
                RebalanceAction::CopyBatch { task, after, limit } => {
                    let copied = self.copy_batch(task, after, limit);
                    if !limits.copy_pause.is_zero() {
                        tokio::time::sleep(limits.copy_pause).await;
                    }
                    copied
                }
                RebalanceAction::CatchUp => self.catch_up(),
                RebalanceAction::Switch {
                    attempt,
                    expected_epoch,
                    replay,
                } => self.switch(attempt, expected_epoch, replay).await,
                RebalanceAction::Cleanup => {
                    self.cleanup();
                    self.machine.on_finished();
                    Ok(())
                }
                RebalanceAction::RollBack => {
                    self.roll_back().await;
                    self.machine.on_finished();
                    Ok(())
                }
            };
            if let Err((reason, retryable)) = outcome {
                tracing::warn!(node = %self.target.id(), %reason, "move attempt failed");
                self.machine.on_failure(reason, retryable);
                if self.machine.phase() != MovePhase::Aborted {
                    tokio::time::sleep(limits.retry_backoff).await;
                }
            }
            self.publish();
            // Copy batches are synchronous; let writers and readers in between them.
            tokio::task::yield_now().await;
        }
        tracing::info!(node = %self.target.id(), phase = ?self.machine.phase(), "rebalance finished");
    }

    fn close_captures(&mut self) {
        for (id, capture) in std::mem::take(&mut self.captures) {
            self.sources[&id].stop_capture(&capture);
        }
    }

    async fn start_attempt(&mut self, attempt: u32) -> Result<(), (String, bool)> {
        let node = self.target.id();
        let metadata = self.cluster.metadata().clone();
        match metadata
            .propose(ShardMapCommand::BeginMoveAttempt { node, attempt })
            .await
        {
            Ok(_) => {}
            Err(MetadataServiceError::ShardMap(ShardMapError::NotJoining { .. })) => {
                // An earlier attempt's commit applied after all (its outcome was unknown).
                let routing = self
                    .cluster
                    .refresh_routing()
                    .await
                    .map_err(|e| (e.to_string(), true))?;
                if routing.map.nodes.get(&node).map(|i| i.state)
                    == Some(crate::sharding::NodeState::Active)
                {
                    self.close_captures();
                    self.machine.on_switched(0, 0, routing.epoch());
                    return Ok(());
                }
                return Err(("the join is no longer pending".to_string(), false));
            }
            Err(error) => {
                return Err((
                    error.to_string(),
                    !matches!(error, MetadataServiceError::ShardMap(_)),
                ))
            }
        }
        self.close_captures();
        let limit = self.cluster.shared.options.capture_limit;
        for (id, source) in &self.sources {
            let transfers = self.machine.plan().transfers.iter();
            let ranges = transfers.filter(|t| t.source == *id).map(|t| t.range);
            let capture = Arc::new(ChangeCapture::new(RangeSet::new(ranges), limit));
            source
                .start_capture(Arc::clone(&capture))
                .map_err(|e| (e.to_string(), true))?;
            self.captures.insert(*id, capture);
        }
        // A fresh copy: drop whatever an earlier attempt left on the target.
        for table in &self.tables {
            for bounds in self.bounds.values() {
                self.target
                    .delete_bounds(table, bounds)
                    .map_err(|e| (e.to_string(), true))?;
            }
        }
        self.machine.on_attempt_started();
        Ok(())
    }

    fn copy_batch(
        &mut self,
        task: usize,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(), (String, bool)> {
        let task = self.machine.plan().tasks[task].clone();
        let source = &self.sources[&task.source];
        let entries = source
            .export(&task.table, &task.start, &task.end, after.as_deref(), limit)
            .map_err(|e| (e.to_string(), true))?;
        self.target
            .import(&task.table, &entries)
            .map_err(|e| (e.to_string(), true))?;
        let last_key = if entries.len() < limit {
            None
        } else {
            entries.last().map(|(k, _)| k.clone())
        };
        self.machine
            .on_copied(entries.len() as u64, bytes_of(&entries), last_key);
        Ok(())
    }

    /// Replays every capture's entries onto the target once; returns rows and bytes replayed.
    fn replay(&self) -> Result<(u64, u64), (String, bool)> {
        let (mut rows, mut bytes) = (0, 0);
        for capture in self.captures.values() {
            let entries = capture.drain().map_err(|reason| (reason, true))?;
            let mut by_table: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
            for entry in &entries {
                by_table
                    .entry(entry.table.as_str())
                    .or_default()
                    .push((entry.key.clone(), entry.value.clone()));
            }
            for (table, batch) in by_table {
                // Entries are in write order and a batch applies in order: the last write wins.
                self.target
                    .import(table, &batch)
                    .map_err(|e| (e.to_string(), true))?;
                rows += batch.len() as u64;
                bytes += bytes_of(&batch);
            }
        }
        Ok((rows, bytes))
    }

    fn catch_up(&mut self) -> Result<(), (String, bool)> {
        let (rows, bytes) = self.replay()?;
        let remaining = self.captures.values().map(|c| c.len()).sum();
        self.machine.on_caught_up(rows, bytes, remaining);
        Ok(())
    }

    async fn switch(
        &mut self,
        attempt: u32,
        expected_epoch: u64,
        replay: bool,
    ) -> Result<(), (String, bool)> {
        // Freeze every source (in id order): no read or write of theirs runs until the new
        // view is installed, so the final replay is complete and no write slips past the commit.
        let mut guards = Vec::with_capacity(self.sources.len());
        for source in self.sources.values() {
            guards.push(source.freeze().await);
        }
        if !self.sources.values().all(StorageNode::is_up) || !self.target.is_up() {
            return Err(("a node of the move is down".to_string(), true));
        }
        let (rows, bytes) = if replay { self.replay()? } else { (0, 0) };
        let command = ShardMapCommand::CommitJoin {
            node: self.target.id(),
            attempt,
            expected_epoch,
        };
        let metadata = self.cluster.metadata().clone();
        // The commit is idempotent: re-propose while its outcome is unknown, sources frozen.
        let deadline = Instant::now() + Duration::from_secs(30);
        let committed = loop {
            match metadata.propose(command.clone()).await {
                Ok(outcome) => break Ok(outcome.epoch),
                Err(error) if error.outcome_is_unknown() && Instant::now() < deadline => continue,
                Err(error) => break Err(error),
            }
        };
        match committed {
            Ok(epoch) => {
                let routing = metadata.routing().await.ok();
                for guard in &mut guards {
                    // Without a fresh routing the node must refetch before serving again.
                    **guard = routing.clone();
                }
                drop(guards);
                if let Some(routing) = routing {
                    self.cluster.install_routing(Arc::clone(&routing));
                    self.target.install_routing(routing).await;
                }
                self.machine.on_switched(rows, bytes, epoch);
                Ok(())
            }
            Err(error) => {
                if error.outcome_is_unknown() {
                    // The commit may still apply: make the sources refetch their view from
                    // the metadata group before serving; the next attempt fences this one.
                    for guard in &mut guards {
                        **guard = None;
                    }
                }
                let retryable = error.outcome_is_unknown();
                Err((format!("commit of the join failed: {error}"), retryable))
            }
        }
    }

    fn cleanup(&mut self) {
        self.close_captures();
        for (id, source) in &self.sources {
            for table in &self.tables {
                // A source that is down keeps unowned leftovers; reads and counts filter by
                // ownership, so they are invisible.
                if let Err(error) = source.delete_bounds(table, &self.bounds[id]) {
                    tracing::warn!(node = %id, %error, "moved ranges not deleted at the source");
                }
            }
        }
    }

    async fn roll_back(&mut self) {
        self.close_captures();
        let node = self.target.id();
        let outcome = self
            .cluster
            .metadata()
            .propose(ShardMapCommand::AbortJoin { node })
            .await;
        match outcome {
            Ok(_) => {
                self.cluster.remove_node(node);
                for table in &self.tables {
                    for bounds in self.bounds.values() {
                        let _ = self.target.delete_bounds(table, bounds);
                    }
                }
            }
            Err(error) => {
                tracing::error!(node = %node, %error, "join could not be aborted; it stays pending");
            }
        }
    }
}
