//! The runtime that drives one member's state machine: a tokio task that feeds it messages from
//! the bus, client calls and clock ticks, and executes the actions it returns. Killing a node
//! aborts the task and keeps only what the state machine calls durable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::disk::{MemberDisk, MemberDiskError};
use super::error::ReplicationError;
use super::message::{
    Action, EpochRecord, Event, LogIndex, Message, Millis, RequestId, WriteCondition,
};
use super::options::ProtocolOptions;
use super::protocol::{Replica, ReplicaDurable};
use super::witness::{Witness, WitnessDurable};
use crate::metadata::NodeId;
use crate::net::bus::{Envelope, MessageBus};
use crate::net::PauseGate;

/// How many messages a node's inbox holds; more are dropped, like a full socket buffer.
const INBOX_CAPACITY: usize = 4096;
/// How many client calls may queue at one node.
const CLIENT_QUEUE_CAPACITY: usize = 1024;

/// The shard's shared clock: milliseconds since the cluster started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }
}

/// What kind of member a node is, with the ids it needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A data node; `peer` is the other data node of its shard.
    Replica { peer: NodeId, witness: NodeId },
    /// The witness of the shard whose data nodes are `replicas`.
    Witness { replicas: [NodeId; 2] },
}

/// A member's state machine.
#[derive(Debug)]
pub(crate) enum Member {
    Replica(Box<Replica>),
    Witness(Witness),
}

/// What survives a member's crash.
#[derive(Clone, Debug)]
pub(crate) enum Durable {
    Replica(Box<ReplicaDurable>),
    Witness(WitnessDurable),
}

impl Member {
    pub(crate) fn recover(
        id: NodeId,
        kind: Kind,
        options: ProtocolOptions,
        durable: Durable,
        now: Millis,
    ) -> Self {
        match (kind, durable) {
            (Kind::Replica { peer, witness }, Durable::Replica(durable)) => Member::Replica(
                Box::new(Replica::recover(id, peer, witness, options, *durable, now)),
            ),
            (Kind::Witness { replicas }, Durable::Witness(durable)) => {
                Member::Witness(Witness::recover(id, replicas, options.timing, durable, now))
            }
            (kind, _) => panic!("node {id} of kind {kind:?} recovers foreign durable state"),
        }
    }

    fn durable(&self) -> Durable {
        match self {
            Member::Replica(replica) => Durable::Replica(Box::new(replica.durable().clone())),
            Member::Witness(witness) => Durable::Witness(witness.durable()),
        }
    }

    pub(crate) fn step(&mut self, now: Millis, event: Event) -> Vec<Action> {
        match self {
            Member::Replica(replica) => replica.step(now, event),
            Member::Witness(witness) => witness.step(now, event),
        }
    }

    /// Saves what the last steps changed of the durable state, before anything is sent.
    pub(crate) fn save_to(&mut self, disk: &mut MemberDisk) -> Result<(), MemberDiskError> {
        match self {
            Member::Replica(replica) => {
                let changed_from = replica.take_log_changes();
                disk.save_replica(replica.durable(), changed_from)
            }
            Member::Witness(witness) => disk.save_witness(&witness.durable()),
        }
    }

    pub(crate) fn record(&self) -> EpochRecord {
        match self {
            Member::Replica(replica) => replica.record(),
            Member::Witness(witness) => witness.record(),
        }
    }

    pub(crate) fn is_primary(&self, now: Millis) -> bool {
        matches!(self, Member::Replica(replica) if replica.is_primary(now))
    }

    pub(crate) fn validate(&self) {
        match self {
            Member::Replica(replica) => replica.validate(),
            Member::Witness(witness) => witness.validate(),
        }
    }

    pub(crate) fn as_replica(&self) -> Option<&Replica> {
        match self {
            Member::Replica(replica) => Some(replica),
            Member::Witness(_) => None,
        }
    }
}

impl Durable {
    pub(crate) fn record(&self) -> EpochRecord {
        match self {
            Durable::Replica(durable) => durable.record,
            Durable::Witness(durable) => durable.record,
        }
    }
}

/// A client's request to one node.
#[derive(Debug)]
pub(crate) enum ClientOp {
    Write {
        key: Vec<u8>,
        value: Vec<u8>,
        condition: WriteCondition,
        ring_epoch: u64,
    },
    Read {
        key: Vec<u8>,
        ring_epoch: u64,
    },
    ForcePromotion,
}

/// A node's answer to a [`ClientOp`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientOutput {
    Written(LogIndex),
    Read(Option<Vec<u8>>),
    Accepted,
}

type Reply = oneshot::Sender<Result<ClientOutput, ReplicationError>>;

#[derive(Debug)]
pub(crate) struct ClientCall {
    op: ClientOp,
    reply: Reply,
}

impl ClientCall {
    /// A call of `op`, and where its answer will come.
    pub(crate) fn new(
        op: ClientOp,
    ) -> (
        Self,
        oneshot::Receiver<Result<ClientOutput, ReplicationError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        (Self { op, reply }, answer)
    }
}

/// Whether the node runs, and its state either way.
#[derive(Debug)]
pub(crate) enum Life {
    Running {
        member: Member,
        /// Which start this is; a task of an earlier start must not touch this member.
        generation: u64,
        client_queue: mpsc::Sender<ClientCall>,
        task: JoinHandle<()>,
    },
    Down {
        durable: Durable,
        /// How many times the node was started.
        generation: u64,
    },
}

/// Everything one node's runtime shares with the handles that observe and fault it.
#[derive(Debug)]
pub(crate) struct NodeShared {
    pub(crate) id: NodeId,
    pub(crate) shard: usize,
    pub(crate) kind: Kind,
    pub(crate) options: ProtocolOptions,
    pub(crate) clock: Clock,
    pub(crate) bus: MessageBus<Message>,
    pub(crate) gate: PauseGate,
    life: Mutex<Life>,
}

impl NodeShared {
    pub(crate) fn new(
        id: NodeId,
        shard: usize,
        kind: Kind,
        options: ProtocolOptions,
        clock: Clock,
        bus: MessageBus<Message>,
        durable: Durable,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            shard,
            kind,
            options,
            clock,
            bus,
            gate: PauseGate::default(),
            life: Mutex::new(Life::Down {
                durable,
                generation: 0,
            }),
        })
    }

    pub(crate) fn life(&self) -> MutexGuard<'_, Life> {
        self.life
            .lock()
            .expect("node lock poisoned: a panic happened while it was held")
    }

    /// Starts (or restarts) the node over its durable state; a running node is left alone.
    pub(crate) fn start(self: &Arc<Self>) {
        let mut life = self.life();
        let Life::Down {
            durable,
            generation,
        } = &*life
        else {
            return;
        };
        let generation = generation + 1;
        let member = Member::recover(
            self.id,
            self.kind,
            self.options,
            durable.clone(),
            self.clock.now_ms(),
        );
        let (inbox_sender, inbox) = mpsc::channel(INBOX_CAPACITY);
        let (client_queue, client_calls) = mpsc::channel(CLIENT_QUEUE_CAPACITY);
        self.bus.register(self.id, inbox_sender);
        let task = tokio::spawn(run(Arc::clone(self), generation, inbox, client_calls));
        *life = Life::Running {
            member,
            generation,
            client_queue,
            task,
        };
        tracing::info!(node = self.id, generation, "node started");
    }

    /// Kills the node: its task stops, its messages are lost, in-flight calls are interrupted,
    /// and only its durable state remains.
    pub(crate) fn kill(&self) {
        let mut life = self.life();
        if let Life::Running {
            member,
            generation,
            task,
            ..
        } = &*life
        {
            self.bus.unregister(self.id);
            task.abort();
            *life = Life::Down {
                durable: member.durable(),
                generation: *generation,
            };
            tracing::info!(node = self.id, "node killed");
        }
    }

    /// Runs `f` on the member if the node runs.
    pub(crate) fn with_member<T>(&self, f: impl FnOnce(&Member) -> T) -> Option<T> {
        match &*self.life() {
            Life::Running { member, .. } => Some(f(member)),
            Life::Down { .. } => None,
        }
    }

    /// The newest record the node knows, running or not.
    pub(crate) fn record(&self) -> EpochRecord {
        match &*self.life() {
            Life::Running { member, .. } => member.record(),
            Life::Down { durable, .. } => durable.record(),
        }
    }

    /// Sends `op` to the node's task and waits for its answer, at most `timeout`.
    pub(crate) async fn call(
        &self,
        op: ClientOp,
        timeout: Duration,
    ) -> Result<ClientOutput, ReplicationError> {
        let node = self.id;
        let queue = match &*self.life() {
            Life::Running { client_queue, .. } => client_queue.clone(),
            Life::Down { .. } => return Err(ReplicationError::NodeDown { node }),
        };
        let exchange = async move {
            let (reply, answer) = oneshot::channel();
            if queue.send(ClientCall { op, reply }).await.is_err() {
                return Err(ReplicationError::NodeDown { node });
            }
            answer
                .await
                .unwrap_or(Err(ReplicationError::Interrupted { node }))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ReplicationError::Timeout { after: timeout }))
    }

    /// Steps the member of start `generation`; `None` once that start is over.
    fn step(&self, generation: u64, event: Event) -> Option<Vec<Action>> {
        let now = self.clock.now_ms();
        match &mut *self.life() {
            Life::Running {
                member,
                generation: current,
                ..
            } if *current == generation => Some(member.step(now, event)),
            _ => None,
        }
    }
}

/// What the event loop needs of the place a member lives: stepping it, making what the steps
/// changed durable before anything is sent, and sending its messages.
pub(crate) trait Host: Send + 'static {
    /// Steps the member with `event`; `None` once this incarnation is over.
    fn step(&mut self, event: Event) -> Option<Vec<Action>>;
    /// Makes durable what the steps since the last call changed; `false` if that failed, which
    /// ends the incarnation (nothing stepped since is acted on).
    fn persist(&mut self) -> bool;
    /// Sends `message` to member `to`; a message that cannot go is lost.
    fn send(&self, to: NodeId, message: Message);
}

/// The most events stepped before one save (group commit): what is already queued when the
/// loop wakes, up to this many.
const MAX_BATCH: usize = 64;

/// A member of an in-process cluster: its state lives in the shared node; `generation` is the
/// start this task serves.
struct InProcess {
    shared: Arc<NodeShared>,
    generation: u64,
}

impl Host for InProcess {
    fn step(&mut self, event: Event) -> Option<Vec<Action>> {
        self.shared.step(self.generation, event)
    }

    /// In process, durable state is whatever the member holds when it is killed.
    fn persist(&mut self) -> bool {
        true
    }

    fn send(&self, to: NodeId, message: Message) {
        self.shared.bus.send(self.shared.id, to, message);
    }
}

async fn run(
    shared: Arc<NodeShared>,
    generation: u64,
    inbox: mpsc::Receiver<Envelope<Message>>,
    client_calls: mpsc::Receiver<ClientCall>,
) {
    let tick = Duration::from_millis(shared.options.timing.tick_ms);
    let gate = shared.gate.clone();
    let host = InProcess { shared, generation };
    drive(host, tick, gate, inbox, client_calls).await;
}

/// The event loop of one member: one event at a time, in arrival order (a message, a client
/// call, or a clock tick every `tick`); a paused member handles nothing. Events already queued
/// when the loop wakes are stepped together (at most [`MAX_BATCH`]), then saved once, then
/// acted on: a group commit, so a burst of writes costs one save, not one each. Returns when
/// the host says the incarnation is over.
pub(crate) async fn drive<H: Host>(
    mut host: H,
    tick: Duration,
    gate: PauseGate,
    mut inbox: mpsc::Receiver<Envelope<Message>>,
    mut client_calls: mpsc::Receiver<ClientCall>,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut replies: BTreeMap<RequestId, Reply> = BTreeMap::new();
    let mut next_request: RequestId = 0;
    let mut into_event = |call: ClientCall, replies: &mut BTreeMap<RequestId, Reply>| {
        let request = next_request;
        next_request += 1;
        match call.op {
            ClientOp::Write {
                key,
                value,
                condition,
                ring_epoch,
            } => {
                replies.insert(request, call.reply);
                Event::ClientWrite {
                    request,
                    key,
                    value,
                    condition,
                    ring_epoch,
                }
            }
            ClientOp::Read { key, ring_epoch } => {
                replies.insert(request, call.reply);
                Event::ClientRead {
                    request,
                    key,
                    ring_epoch,
                }
            }
            ClientOp::ForcePromotion => {
                let _ = call.reply.send(Ok(ClientOutput::Accepted));
                Event::ForcePromotion
            }
        }
    };
    loop {
        let event = tokio::select! {
            Some((from, message)) = inbox.recv() => Event::Receive { from, message },
            Some(call) = client_calls.recv() => into_event(call, &mut replies),
            _ = ticker.tick() => Event::Tick,
        };
        gate.wait_resumed().await;
        let mut events = vec![event];
        while events.len() < MAX_BATCH {
            if let Ok((from, message)) = inbox.try_recv() {
                events.push(Event::Receive { from, message });
            } else if let Ok(call) = client_calls.try_recv() {
                events.push(into_event(call, &mut replies));
            } else {
                break;
            }
        }
        let mut actions = Vec::new();
        for event in events {
            let Some(more) = host.step(event) else {
                return;
            };
            actions.extend(more);
        }
        if !host.persist() {
            return;
        }
        for action in actions {
            match action {
                Action::Send { to, message } => host.send(to, message),
                Action::WriteDone { request, result } => {
                    if let Some(reply) = replies.remove(&request) {
                        // The caller may have given up waiting; then nobody listens.
                        let _ = reply.send(result.map(ClientOutput::Written));
                    }
                }
                Action::ReadDone { request, result } => {
                    if let Some(reply) = replies.remove(&request) {
                        let _ = reply.send(result.map(ClientOutput::Read));
                    }
                }
            }
        }
    }
}
