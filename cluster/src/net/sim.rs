//! The seeded in-memory network: partitions (symmetric and one-way), random drops and delays,
//! disconnection of killed nodes, and pausing of nodes, all driven by one `u64` seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::Raft;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{oneshot, watch};

use super::{serve, BoxFuture, RaftReply, RaftRequest, Transport, TransportError};
use crate::metadata::{MetadataNode, NodeId, TypeConfig};

/// Whether a node is paused, shared by the node (its client API waits) and the network (its
/// messages are held), emulating SIGSTOP/SIGCONT.
#[derive(Clone, Debug)]
pub struct PauseGate {
    paused: Arc<watch::Sender<bool>>,
}

impl Default for PauseGate {
    fn default() -> Self {
        Self {
            paused: Arc::new(watch::channel(false).0),
        }
    }
}

impl PauseGate {
    /// Pauses: messages and client calls wait from now on.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Resumes: everything held is released.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Whether the node is paused now.
    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Waits until the node is not paused.
    pub async fn wait_resumed(&self) {
        let mut receiver = self.paused.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = receiver.wait_for(|paused| !*paused).await;
    }
}

/// The network's fault configuration.
#[derive(Clone, Debug)]
struct Links {
    /// Directed links that lose every message: `(from, to)`.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Probability that any one message is lost.
    /// Invariant: `0.0 <= drop_probability <= 1.0`.
    drop_probability: f64,
    /// Each message is delayed by a uniform draw from this range, in milliseconds.
    /// Invariant: `delay_ms.0 <= delay_ms.1`.
    delay_ms: (u64, u64),
}

impl Links {
    fn perfect() -> Self {
        Self {
            blocked: BTreeSet::new(),
            drop_probability: 0.0,
            delay_ms: (0, 0),
        }
    }
}

/// The random choices made for one request and its reply, drawn when it is sent.
#[derive(Clone, Copy, Debug)]
struct Fate {
    request_lost: bool,
    reply_lost: bool,
    request_delay: Duration,
    reply_delay: Duration,
}

struct SimState {
    seed: u64,
    rng: Mutex<ChaCha8Rng>,
    links: Mutex<Links>,
    /// Nodes that accept requests now.
    endpoints: Mutex<BTreeMap<NodeId, Raft<TypeConfig>>>,
    /// Every node ever connected, with its pause gate.
    members: Mutex<BTreeMap<NodeId, PauseGate>>,
    /// Set once the simulator shuts down; releases every held message.
    closed: watch::Sender<bool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("network simulator lock poisoned: a panic happened while it was held")
}

impl SimState {
    fn draw_fate(&self) -> Fate {
        let links = lock(&self.links).clone();
        let mut rng = lock(&self.rng);
        let mut delay =
            || Duration::from_millis(rng.gen_range(links.delay_ms.0..=links.delay_ms.1));
        let (request_delay, reply_delay) = (delay(), delay());
        Fate {
            request_lost: rng.gen_bool(links.drop_probability),
            reply_lost: rng.gen_bool(links.drop_probability),
            request_delay,
            reply_delay,
        }
    }

    fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        lock(&self.links).blocked.contains(&(from, to))
    }

    async fn wait_resumed(&self, id: NodeId) {
        let gate = lock(&self.members).get(&id).cloned();
        if let Some(gate) = gate {
            gate.wait_resumed().await;
        }
    }

    /// Carries one request and its reply through the faults.
    async fn deliver(
        &self,
        from: NodeId,
        to: NodeId,
        request: RaftRequest,
        fate: Fate,
    ) -> Result<RaftReply, TransportError> {
        let lost = TransportError::Lost { from, to };
        // A paused process neither sends nor receives; its kernel holds the bytes until SIGCONT.
        self.wait_resumed(from).await;
        self.wait_resumed(to).await;
        if !fate.request_delay.is_zero() {
            tokio::time::sleep(fate.request_delay).await;
        }
        if fate.request_lost || self.is_blocked(from, to) {
            return Err(lost);
        }
        let raft = lock(&self.endpoints).get(&to).cloned();
        let Some(raft) = raft else {
            return Err(TransportError::Unreachable { to });
        };
        let reply = serve(&raft, request)
            .await
            .map_err(|reason| TransportError::Remote { to, reason })?;
        self.wait_resumed(to).await;
        self.wait_resumed(from).await;
        if !fate.reply_delay.is_zero() {
            tokio::time::sleep(fate.reply_delay).await;
        }
        if fate.reply_lost || self.is_blocked(to, from) {
            return Err(lost);
        }
        Ok(reply)
    }
}

/// The simulated network shared by a test cluster's metadata nodes.
///
/// Cloning gives another handle to the same network. All fault methods take `&self`.
#[derive(Clone)]
pub struct NetworkSimulator {
    state: Arc<SimState>,
}

impl std::fmt::Debug for NetworkSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkSimulator")
            .field("seed", &self.state.seed)
            .field("links", &*lock(&self.state.links))
            .finish()
    }
}

impl NetworkSimulator {
    /// Creates a perfect network whose random choices all derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(SimState {
                seed,
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
                links: Mutex::new(Links::perfect()),
                endpoints: Mutex::new(BTreeMap::new()),
                members: Mutex::new(BTreeMap::new()),
                closed: watch::channel(false).0,
            }),
        }
    }

    /// The seed API: connects `nodes` over a new network with seed 0.
    pub async fn connect_all(nodes: &[MetadataNode]) -> Self {
        let network = Self::new(0);
        for node in nodes {
            network.connect(node);
        }
        network
    }

    /// The seed that drives this network's random choices.
    pub fn seed(&self) -> u64 {
        self.state.seed
    }

    /// Attaches `node`: binds its transport to this network and, if it runs, accepts its
    /// requests.
    pub fn connect(&self, node: &MetadataNode) {
        lock(&self.state.members).insert(node.id(), node.pause_gate());
        node.transport_slot().bind(Arc::new(self.clone()));
        if let Some(raft) = node.raft_handle() {
            self.listen(node.id(), raft);
        }
    }

    /// The ids of every node ever connected, ascending.
    pub fn member_ids(&self) -> Vec<NodeId> {
        lock(&self.state.members).keys().copied().collect()
    }

    /// Stops delivering messages to `id` (the network half of killing a node).
    pub async fn disconnect(&self, id: NodeId) {
        self.close(id);
    }

    /// Blocks every link between `group_a` and `group_b`, both ways.
    pub async fn partition(&self, group_a: Vec<NodeId>, group_b: Vec<NodeId>) {
        let mut links = lock(&self.state.links);
        for &a in &group_a {
            for &b in &group_b {
                links.blocked.insert((a, b));
                links.blocked.insert((b, a));
            }
        }
    }

    /// Blocks every link between different groups; nodes in no group are cut off from all.
    pub async fn partition_groups(&self, groups: Vec<Vec<NodeId>>) {
        let group_of: BTreeMap<NodeId, usize> = groups
            .iter()
            .enumerate()
            .flat_map(|(i, group)| group.iter().map(move |&id| (id, i)))
            .collect();
        let ids = self.member_ids();
        let mut links = lock(&self.state.links);
        for &a in &ids {
            for &b in &ids {
                let same_group =
                    matches!((group_of.get(&a), group_of.get(&b)), (Some(x), Some(y)) if x == y);
                if a != b && !same_group {
                    links.blocked.insert((a, b));
                }
            }
        }
    }

    /// Blocks messages from `from` to `to` only; replies on requests `to` sends to `from` are
    /// lost too, after `from` has handled the request.
    pub async fn partition_one_way(&self, from: NodeId, to: NodeId) {
        lock(&self.state.links).blocked.insert((from, to));
    }

    /// Cuts `id` off from every other node, both ways.
    pub async fn isolate(&self, id: NodeId) {
        let others: Vec<NodeId> = self.member_ids().into_iter().filter(|&o| o != id).collect();
        self.partition(vec![id], others).await;
    }

    /// Restores a perfect network: no partitions, drops or delays.
    pub async fn heal_all(&self) {
        *lock(&self.state.links) = Links::perfect();
    }

    /// Makes every message lost with probability `probability`.
    ///
    /// # Panics
    /// If `probability` is outside `0.0..=1.0`, which is a bug in the caller.
    pub fn set_drop_probability(&self, probability: f64) {
        assert!(
            (0.0..=1.0).contains(&probability),
            "drop probability must be within 0..=1, got {probability}"
        );
        lock(&self.state.links).drop_probability = probability;
    }

    /// Delays every message by a uniform draw from `min..=max`.
    ///
    /// # Panics
    /// If `min > max`, which is a bug in the caller.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        assert!(min <= max, "delay range is empty: {min:?} > {max:?}");
        lock(&self.state.links).delay_ms = (min.as_millis() as u64, max.as_millis() as u64);
    }

    /// Pauses node `id`: its messages are held and its client calls wait until `resume`.
    pub async fn pause(&self, id: NodeId) {
        if let Some(gate) = lock(&self.state.members).get(&id) {
            gate.pause();
        }
    }

    /// Resumes node `id`, releasing what was held.
    pub async fn resume(&self, id: NodeId) {
        if let Some(gate) = lock(&self.state.members).get(&id) {
            gate.resume();
        }
    }

    /// Drops every held message and stops accepting requests.
    pub fn shutdown(&self) {
        self.state.closed.send_replace(true);
        lock(&self.state.endpoints).clear();
    }
}

impl Transport for NetworkSimulator {
    fn send(
        &self,
        from: NodeId,
        to: NodeId,
        request: RaftRequest,
    ) -> BoxFuture<'static, Result<RaftReply, TransportError>> {
        let state = Arc::clone(&self.state);
        let fate = state.draw_fate();
        Box::pin(async move {
            let (reply_sender, reply_receiver) = oneshot::channel();
            let mut closed = state.closed.subscribe();
            // Delivery runs on its own task, so a message held for a paused node is still
            // delivered on resume after the sender stopped waiting, like a socket buffer.
            tokio::spawn(async move {
                tokio::select! {
                    result = state.deliver(from, to, request, fate) => {
                        let _ = reply_sender.send(result);
                    }
                    _ = closed.wait_for(|closed| *closed) => {}
                }
            });
            reply_receiver
                .await
                .unwrap_or(Err(TransportError::Lost { from, to }))
        })
    }

    fn listen(&self, id: NodeId, raft: Raft<TypeConfig>) {
        if !*self.state.closed.borrow() {
            lock(&self.state.endpoints).insert(id, raft);
        }
    }

    fn close(&self, id: NodeId) {
        lock(&self.state.endpoints).remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fates(seed: u64, n: usize) -> Vec<(bool, bool, Duration, Duration)> {
        let network = NetworkSimulator::new(seed);
        network.set_drop_probability(0.5);
        network.set_delay(Duration::ZERO, Duration::from_millis(20));
        (0..n)
            .map(|_| {
                let fate = network.state.draw_fate();
                (
                    fate.request_lost,
                    fate.reply_lost,
                    fate.request_delay,
                    fate.reply_delay,
                )
            })
            .collect()
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        assert_eq!(fates(42, 64), fates(42, 64));
        assert_ne!(fates(42, 64), fates(43, 64));
    }

    #[tokio::test]
    async fn partition_groups_blocks_exactly_the_links_between_groups() {
        let network = NetworkSimulator::new(0);
        for id in 0..5 {
            lock(&network.state.members).insert(id, PauseGate::default());
        }
        network.partition_groups(vec![vec![0, 1], vec![2, 3]]).await;
        let blocked = |a, b| network.state.is_blocked(a, b);
        assert!(
            !blocked(0, 1) && !blocked(2, 3),
            "links inside a group stay open"
        );
        assert!(
            blocked(0, 2) && blocked(3, 1),
            "links across groups are cut"
        );
        assert!(
            blocked(4, 0) && blocked(0, 4),
            "a node in no group is cut off from all"
        );
        network.partition_one_way(1, 0).await;
        assert!(
            blocked(1, 0) && !blocked(0, 1),
            "a one-way partition cuts one direction"
        );
        network.heal_all().await;
        assert!(!blocked(0, 2) && !blocked(1, 0), "heal opens every link");
    }
}
