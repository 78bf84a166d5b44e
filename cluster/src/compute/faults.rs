//! Faults of one compute node, in process: killed, paused, isolated. Every call and every
//! step of a commit passes [`NodeFaults::gate`], which refuses at once on a killed or isolated
//! node and waits, for as long as the caller's own timeout allows, on a paused one.
//!
//! A kill ends the node's incarnation: a transaction begun before it belongs to a process that
//! no longer exists, so even after a restart its statements and its commit are refused.

use std::sync::Arc;

use tokio::sync::watch;

use super::error::{ComputeError, CrashPoint};

/// The faults in force on one compute node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FaultState {
    /// Killed: refuses everything until restarted.
    pub(crate) killed: bool,
    /// Paused: every call and step waits until resumed.
    pub(crate) paused: bool,
    /// Cut off from clients, storage, metadata and the invalidation bus.
    pub(crate) isolated: bool,
    /// How many times the node was restarted; a transaction is bound to the incarnation in
    /// which it began.
    pub(crate) incarnation: u64,
    /// A crash armed by the nemesis: the next commit of this node that reaches the point kills
    /// the node there, as a process dying at the worst moment would.
    pub(crate) armed_crash: Option<CrashPoint>,
}

/// One node's fault state, shared by its handles and its background tasks.
#[derive(Clone, Debug)]
pub(crate) struct NodeFaults {
    index: u32,
    state: Arc<watch::Sender<FaultState>>,
}

impl NodeFaults {
    /// A running node with no fault.
    pub(crate) fn new(index: u32) -> Self {
        Self {
            index,
            state: Arc::new(watch::Sender::new(FaultState::default())),
        }
    }

    /// The faults in force now.
    pub(crate) fn state(&self) -> FaultState {
        *self.state.borrow()
    }

    /// Changes the faults; waiters at the gate look again.
    pub(crate) fn modify(&self, change: impl FnOnce(&mut FaultState)) {
        self.state.send_modify(change);
    }

    /// The error of a call to the node in `state`, if it is refused; `incarnation` is the one
    /// a transaction began in (`None` for a call outside a transaction).
    fn refusal(&self, state: &FaultState, incarnation: Option<u64>) -> Option<ComputeError> {
        let node = self.index;
        if state.killed || incarnation.is_some_and(|i| i != state.incarnation) {
            Some(ComputeError::NodeDown { node })
        } else if state.isolated {
            Some(ComputeError::Unreachable { node })
        } else {
            None
        }
    }

    /// Whether a call in `incarnation` would pass the gate at once.
    pub(crate) fn is_serving(&self, incarnation: Option<u64>) -> bool {
        let state = self.state();
        !state.paused && self.refusal(&state, incarnation).is_none()
    }

    /// Passes when the node serves: refuses at once when it is killed, isolated, or no longer
    /// in `incarnation`; waits while it is paused (bounded by the caller's timeout).
    pub(crate) async fn gate(&self, incarnation: Option<u64>) -> Result<(), ComputeError> {
        let mut receiver = self.state.subscribe();
        loop {
            let state = *receiver.borrow_and_update();
            if let Some(refusal) = self.refusal(&state, incarnation) {
                return Err(refusal);
            }
            if !state.paused {
                return Ok(());
            }
            // The sender lives as long as `self`, so this only waits for the next change.
            let _ = receiver.changed().await;
        }
    }

    /// Resolves, with the refusal, once the node is killed, isolated or restarted out of
    /// `incarnation`; a pause does not cut an in-flight request off.
    pub(crate) async fn cut_off(&self, incarnation: u64) -> ComputeError {
        let mut receiver = self.state.subscribe();
        loop {
            let state = *receiver.borrow_and_update();
            if let Some(refusal) = self.refusal(&state, Some(incarnation)) {
                return refusal;
            }
            let _ = receiver.changed().await;
        }
    }

    /// Whether a crash is armed at `point`; if so, disarms it (one crash per arming).
    pub(crate) fn take_armed_crash(&self, point: CrashPoint) -> bool {
        let mut fired = false;
        self.state.send_if_modified(|state| {
            fired = state.armed_crash == Some(point);
            if fired {
                state.armed_crash = None;
            }
            fired
        });
        fired
    }

    /// Waits until the node is not paused (the invalidation listener's gate).
    pub(crate) async fn wait_while_paused(&self) {
        let mut receiver = self.state.subscribe();
        let _ = receiver.wait_for(|state| !state.paused).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_paused_gate_waits_until_resume_and_a_killed_one_refuses_at_once() {
        let faults = NodeFaults::new(3);
        assert_eq!(faults.gate(None).await, Ok(()));
        faults.modify(|state| state.paused = true);
        let waiting = tokio::spawn({
            let faults = faults.clone();
            async move { faults.gate(None).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a paused gate passed");
        faults.modify(|state| state.paused = false);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        faults.modify(|state| state.killed = true);
        assert_eq!(
            faults.gate(None).await,
            Err(ComputeError::NodeDown { node: 3 })
        );
    }

    #[tokio::test]
    async fn isolation_refuses_and_a_restart_ends_the_old_incarnation() {
        let faults = NodeFaults::new(1);
        faults.modify(|state| state.isolated = true);
        assert_eq!(
            faults.gate(None).await,
            Err(ComputeError::Unreachable { node: 1 })
        );
        assert_eq!(
            faults.cut_off(0).await,
            ComputeError::Unreachable { node: 1 }
        );
        faults.modify(|state| {
            state.isolated = false;
            state.incarnation += 1;
        });
        assert_eq!(faults.gate(None).await, Ok(()));
        assert_eq!(faults.gate(Some(1)).await, Ok(()));
        assert_eq!(
            faults.gate(Some(0)).await,
            Err(ComputeError::NodeDown { node: 1 })
        );
        assert!(faults.is_serving(Some(1)) && !faults.is_serving(Some(0)));
    }
}
