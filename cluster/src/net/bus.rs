//! A generic seeded message bus: one-way messages between in-process nodes, with partitions
//! (symmetric and one-way), random drops and delays, all driven by one `u64` seed.
//!
//! Unlike [`super::NetworkSimulator`], which carries openraft's request/reply pairs, the bus
//! carries fire-and-forget messages of any type, as a state-machine protocol wants: a reply is
//! just another message. A lost message is simply never delivered; the protocol retries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

use crate::metadata::NodeId;

/// A message in a node's inbox: who sent it, and what.
pub type Envelope<M> = (NodeId, M);

/// The bus's fault configuration.
#[derive(Clone, Debug)]
struct BusLinks {
    /// Directed links that lose every message: `(from, to)`.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Probability that any one message is lost.
    /// Invariant: `0.0 <= drop_probability <= 1.0`.
    drop_probability: f64,
    /// Each message is delayed by a uniform draw from this range, in milliseconds.
    /// Invariant: `delay_ms.0 <= delay_ms.1`.
    delay_ms: (u64, u64),
}

impl BusLinks {
    fn perfect() -> Self {
        Self {
            blocked: BTreeSet::new(),
            drop_probability: 0.0,
            delay_ms: (0, 0),
        }
    }
}

struct BusState<M> {
    seed: u64,
    rng: Mutex<ChaCha8Rng>,
    links: Mutex<BusLinks>,
    /// The inboxes of the nodes that run now; a killed node has none.
    endpoints: Mutex<BTreeMap<NodeId, mpsc::Sender<Envelope<M>>>>,
    /// Every node ever registered, so that `isolate` knows whom to cut off.
    members: Mutex<BTreeSet<NodeId>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("message bus lock poisoned: a panic happened while it was held")
}

impl<M> BusState<M> {
    fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        lock(&self.links).blocked.contains(&(from, to))
    }

    /// Puts `message` into `to`'s inbox unless the link is cut, `to` is down, or its inbox is
    /// full (a full inbox drops, like a full socket buffer); returns whether it was delivered.
    fn deliver(&self, from: NodeId, to: NodeId, message: M) -> bool {
        if self.is_blocked(from, to) {
            return false;
        }
        let inbox = lock(&self.endpoints).get(&to).cloned();
        match inbox {
            Some(inbox) => inbox.try_send((from, message)).is_ok(),
            None => false,
        }
    }
}

/// A seeded in-memory bus for one-way messages of type `M`.
///
/// Cloning gives another handle to the same bus. All fault methods take `&self`.
pub struct MessageBus<M> {
    state: Arc<BusState<M>>,
}

impl<M> Clone for MessageBus<M> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
        }
    }
}

impl<M> std::fmt::Debug for MessageBus<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageBus")
            .field("seed", &self.state.seed)
            .field("links", &*lock(&self.state.links))
            .finish()
    }
}

impl<M: Send + 'static> MessageBus<M> {
    /// Creates a perfect bus whose random choices all derive from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(BusState {
                seed,
                rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
                links: Mutex::new(BusLinks::perfect()),
                endpoints: Mutex::new(BTreeMap::new()),
                members: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// The seed that drives this bus's random choices.
    pub fn seed(&self) -> u64 {
        self.state.seed
    }

    /// Delivers messages addressed to `id` into `inbox` from now on.
    pub fn register(&self, id: NodeId, inbox: mpsc::Sender<Envelope<M>>) {
        lock(&self.state.members).insert(id);
        lock(&self.state.endpoints).insert(id, inbox);
    }

    /// Stops delivering to `id` (the network half of killing a node); its messages are lost.
    pub fn unregister(&self, id: NodeId) {
        lock(&self.state.endpoints).remove(&id);
    }

    /// The ids of every node ever registered, ascending.
    pub fn member_ids(&self) -> Vec<NodeId> {
        lock(&self.state.members).iter().copied().collect()
    }

    /// Sends `message` from `from` to `to`. The bus may lose or delay it, as its faults say;
    /// a delayed message is checked against the partitions in force when it arrives.
    ///
    /// Must be called inside a tokio runtime when a delay is configured.
    pub fn send(&self, from: NodeId, to: NodeId, message: M) {
        let (lost, delay) = {
            let links = lock(&self.state.links);
            let mut rng = lock(&self.state.rng);
            let lost = rng.gen_bool(links.drop_probability);
            let delay = Duration::from_millis(rng.gen_range(links.delay_ms.0..=links.delay_ms.1));
            (lost, delay)
        };
        if lost {
            return;
        }
        if delay.is_zero() {
            self.state.deliver(from, to, message);
            return;
        }
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            state.deliver(from, to, message);
        });
    }

    /// Whether messages from `from` to `to` are lost now.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.state.is_blocked(from, to)
    }

    /// Blocks every link between `group_a` and `group_b`, both ways.
    pub fn partition(&self, group_a: &[NodeId], group_b: &[NodeId]) {
        let mut links = lock(&self.state.links);
        for &a in group_a {
            for &b in group_b {
                if a != b {
                    links.blocked.insert((a, b));
                    links.blocked.insert((b, a));
                }
            }
        }
    }

    /// Blocks messages from `from` to `to` only.
    pub fn partition_one_way(&self, from: NodeId, to: NodeId) {
        lock(&self.state.links).blocked.insert((from, to));
    }

    /// Cuts `id` off from every other registered node, both ways.
    pub fn isolate(&self, id: NodeId) {
        let others: Vec<NodeId> = self.member_ids().into_iter().filter(|&o| o != id).collect();
        self.partition(&[id], &others);
    }

    /// Restores a perfect bus: no partitions, drops or delays.
    pub fn heal(&self) {
        *lock(&self.state.links) = BusLinks::perfect();
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

    /// Unregisters every node: nothing is delivered any more.
    pub fn shutdown(&self) {
        lock(&self.state.endpoints).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(bus: &MessageBus<u32>, id: NodeId) -> mpsc::Receiver<Envelope<u32>> {
        let (sender, receiver) = mpsc::channel(16);
        bus.register(id, sender);
        receiver
    }

    #[tokio::test]
    async fn partitions_block_exactly_the_links_between_the_groups() {
        let bus = MessageBus::new(7);
        let mut inboxes: Vec<_> = (0..3).map(|id| inbox(&bus, id)).collect();
        bus.partition(&[0], &[1]);
        bus.send(0, 1, 1);
        bus.send(1, 0, 2);
        bus.send(0, 2, 3);
        assert!(inboxes[1].try_recv().is_err(), "0 -> 1 is cut");
        assert!(inboxes[0].try_recv().is_err(), "1 -> 0 is cut");
        assert_eq!(inboxes[2].try_recv().ok(), Some((0, 3)), "0 -> 2 is open");
        bus.heal();
        bus.isolate(2);
        bus.send(2, 0, 4);
        bus.send(0, 1, 5);
        assert!(
            inboxes[0].try_recv().is_err(),
            "an isolated node reaches nobody"
        );
        assert_eq!(inboxes[1].try_recv().ok(), Some((0, 5)));
        bus.heal();
        bus.partition_one_way(0, 1);
        bus.send(0, 1, 6);
        bus.send(1, 0, 7);
        assert!(inboxes[1].try_recv().is_err(), "one-way cut blocks 0 -> 1");
        assert_eq!(inboxes[0].try_recv().ok(), Some((1, 7)), "but not 1 -> 0");
    }

    #[tokio::test]
    async fn an_unregistered_node_receives_nothing() {
        let bus = MessageBus::new(0);
        let mut receiver = inbox(&bus, 1);
        bus.unregister(1);
        bus.send(0, 1, 9);
        assert!(receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_same_seed_loses_the_same_messages() {
        let delivered = |seed: u64| {
            let bus = MessageBus::new(seed);
            let (sender, mut receiver) = mpsc::channel(256);
            bus.register(1, sender);
            bus.set_drop_probability(0.5);
            for n in 0..200u32 {
                bus.send(0, 1, n);
            }
            let mut got = Vec::new();
            while let Ok((_, n)) = receiver.try_recv() {
                got.push(n);
            }
            got
        };
        assert_eq!(delivered(42), delivered(42));
        assert_ne!(delivered(42), delivered(43));
        let n = delivered(42).len();
        assert!((50..150).contains(&n), "about half are lost, got {n}");
    }

    #[tokio::test]
    async fn delayed_messages_arrive_later() {
        let bus = MessageBus::new(1);
        let mut receiver = inbox(&bus, 1);
        bus.set_delay(Duration::from_millis(20), Duration::from_millis(20));
        bus.send(0, 1, 1);
        assert!(receiver.try_recv().is_err(), "not yet delivered");
        let got = tokio::time::timeout(Duration::from_secs(2), receiver.recv()).await;
        assert_eq!(got.ok().flatten(), Some((0, 1)));
    }
}
