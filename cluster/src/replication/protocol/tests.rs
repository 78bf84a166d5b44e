//! The replica and witness state machines driven together by a deterministic, single-threaded
//! harness: no sockets, no tokio, time advanced by hand, every invariant checked after every
//! step.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;
use crate::replication::witness::{Witness, WitnessDurable};

const PRIMARY: NodeId = 0;
const MIRROR: NodeId = 1;
const WITNESS: NodeId = 2;

/// Three members of one shard and the messages between them.
struct Harness {
    now_ms: Millis,
    options: ProtocolOptions,
    replicas: BTreeMap<NodeId, Replica>,
    witness: Witness,
    /// Nodes that are down: they neither step nor receive.
    down: BTreeSet<NodeId>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    writes: BTreeMap<RequestId, Result<LogIndex, ReplicationError>>,
    reads: BTreeMap<RequestId, Result<Option<Vec<u8>>, ReplicationError>>,
    next_request: RequestId,
}

impl Harness {
    fn new(options: ProtocolOptions) -> Self {
        let record = EpochRecord {
            epoch: 1,
            primary: PRIMARY,
            synchronous: true,
        };
        let durable = ReplicaDurable {
            record,
            log: ReplicaLog::default(),
            commit_index: 0,
        };
        let replica = |id, peer| Replica::recover(id, peer, WITNESS, options, durable.clone(), 0);
        let mut harness = Self {
            now_ms: 0,
            options,
            replicas: BTreeMap::from([
                (PRIMARY, replica(PRIMARY, MIRROR)),
                (MIRROR, replica(MIRROR, PRIMARY)),
            ]),
            witness: Witness::recover(
                WITNESS,
                [PRIMARY, MIRROR],
                options.timing,
                WitnessDurable { record },
                0,
            ),
            down: BTreeSet::new(),
            blocked: BTreeSet::new(),
            queue: VecDeque::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_request: 0,
        };
        harness.advance(50);
        assert!(
            harness.replica(PRIMARY).is_primary(harness.now_ms),
            "primary holds a lease"
        );
        harness
    }

    fn replica(&self, id: NodeId) -> &Replica {
        &self.replicas[&id]
    }

    fn step(&mut self, id: NodeId, event: Event) {
        if self.down.contains(&id) {
            return;
        }
        let actions = if id == WITNESS {
            let actions = self.witness.step(self.now_ms, event);
            self.witness.validate();
            actions
        } else {
            let replica = self.replicas.get_mut(&id).expect("a replica");
            let actions = replica.step(self.now_ms, event);
            replica.validate();
            actions
        };
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    if !self.blocked.contains(&(id, to)) {
                        self.queue.push_back((id, to, message));
                    }
                }
                Action::WriteDone { request, result } => {
                    assert!(
                        self.writes.insert(request, result).is_none(),
                        "write {request} answered twice"
                    );
                }
                Action::ReadDone { request, result } => {
                    self.reads.insert(request, result);
                }
            }
        }
        self.check_single_primary();
    }

    /// With fencing on, at most one node acts as primary at any instant.
    fn check_single_primary(&self) {
        if self.options.unsafe_no_fencing {
            return;
        }
        let acting: Vec<NodeId> = self
            .replicas
            .iter()
            .filter(|(id, r)| !self.down.contains(id) && r.is_primary(self.now_ms))
            .map(|(&id, _)| id)
            .collect();
        assert!(
            acting.len() <= 1,
            "split brain at {} ms: {acting:?}",
            self.now_ms
        );
    }

    fn deliver_all(&mut self) {
        for _ in 0..100_000 {
            let Some((from, to, message)) = self.queue.pop_front() else {
                return;
            };
            self.step(to, Event::Receive { from, message });
        }
        panic!("messages did not quiesce");
    }

    /// Advances time by `ms`, ticking every member each `tick_ms`.
    fn advance(&mut self, ms: Millis) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += self.options.timing.tick_ms;
            for id in [PRIMARY, MIRROR, WITNESS] {
                self.step(id, Event::Tick);
                self.deliver_all();
            }
        }
    }

    fn write(&mut self, id: NodeId, key: &str, value: &str) -> RequestId {
        self.write_if(id, key, value, WriteCondition::Always)
    }

    fn write_if(
        &mut self,
        id: NodeId,
        key: &str,
        value: &str,
        condition: WriteCondition,
    ) -> RequestId {
        self.write_routed(id, key.as_bytes(), value.as_bytes(), condition, 0)
    }

    fn write_routed(
        &mut self,
        id: NodeId,
        key: &[u8],
        value: &[u8],
        condition: WriteCondition,
        ring_epoch: u64,
    ) -> RequestId {
        let request = self.next_request;
        self.next_request += 1;
        let event = Event::ClientWrite {
            request,
            key: key.to_vec(),
            value: value.to_vec(),
            condition,
            ring_epoch,
        };
        self.step(id, event);
        self.deliver_all();
        request
    }

    fn read(&mut self, id: NodeId, key: &str) -> Result<Option<Vec<u8>>, ReplicationError> {
        self.read_routed(id, key, 0)
    }

    fn read_routed(
        &mut self,
        id: NodeId,
        key: &str,
        ring_epoch: u64,
    ) -> Result<Option<Vec<u8>>, ReplicationError> {
        let request = self.next_request;
        self.next_request += 1;
        let key = key.as_bytes().to_vec();
        self.step(
            id,
            Event::ClientRead {
                request,
                key,
                ring_epoch,
            },
        );
        self.reads.remove(&request).expect("reads answer at once")
    }

    fn isolate(&mut self, id: NodeId) {
        for other in [PRIMARY, MIRROR, WITNESS] {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
    }

    fn cut(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    fn kill(&mut self, id: NodeId) {
        self.down.insert(id);
    }

    fn restart(&mut self, id: NodeId) {
        let old = self.replica(id);
        let peer = if id == PRIMARY { MIRROR } else { PRIMARY };
        let durable = old.durable().clone();
        let replica = Replica::recover(id, peer, WITNESS, self.options, durable, self.now_ms);
        self.replicas.insert(id, replica);
        self.down.remove(&id);
    }
}

fn value(text: &str) -> Option<Vec<u8>> {
    Some(text.as_bytes().to_vec())
}

#[test]
fn a_write_is_acknowledged_only_after_the_mirror_appended_it() {
    let mut h = Harness::new(ProtocolOptions::default());
    h.cut(PRIMARY, MIRROR);
    let request = h.write(PRIMARY, "k", "v1");
    assert!(
        !h.writes.contains_key(&request),
        "acknowledged without the mirror"
    );
    h.blocked.clear();
    h.advance(30);
    assert_eq!(h.writes.get(&request), Some(&Ok(1)));
    assert_eq!(h.replica(MIRROR).local_read(b"k"), value("v1"));
    assert_eq!(h.read(PRIMARY, "k"), Ok(value("v1")));
}

#[test]
fn a_conditional_write_is_judged_against_the_newest_entry_even_before_it_is_acknowledged() {
    let mut h = Harness::new(ProtocolOptions::default());
    let first = h.write_if(PRIMARY, "k", "v1", WriteCondition::IfCurrent(None));
    assert_eq!(h.writes.get(&first), Some(&Ok(1)));
    let stale = h.write_if(PRIMARY, "k", "v2", WriteCondition::IfCurrent(None));
    assert_eq!(
        h.writes.get(&stale),
        Some(&Err(ReplicationError::ConditionFailed {
            current: value("v1")
        }))
    );
    assert_eq!(
        h.replica(PRIMARY).last_index(),
        1,
        "a refused write appends nothing"
    );
    // With the mirror cut off, v2 waits unacknowledged; a write expecting v1 is refused, one
    // expecting v2 is appended behind it.
    h.cut(PRIMARY, MIRROR);
    let pending = h.write_if(PRIMARY, "k", "v2", WriteCondition::IfCurrent(value("v1")));
    assert!(!h.writes.contains_key(&pending));
    let on_old = h.write_if(PRIMARY, "k", "v3", WriteCondition::IfCurrent(value("v1")));
    assert_eq!(
        h.writes.get(&on_old),
        Some(&Err(ReplicationError::ConditionFailed {
            current: value("v2")
        }))
    );
    let on_pending = h.write_if(PRIMARY, "k", "v3", WriteCondition::IfCurrent(value("v2")));
    h.blocked.clear();
    h.advance(30);
    assert_eq!(h.writes.get(&pending), Some(&Ok(2)));
    assert_eq!(h.writes.get(&on_pending), Some(&Ok(3)));
    assert_eq!(h.read(PRIMARY, "k"), Ok(value("v3")));
    assert_eq!(h.replica(MIRROR).local_read(b"k"), value("v3"));
}

#[test]
fn a_fence_refuses_requests_routed_by_an_older_ring_from_its_entry_on_even_before_it_is_acknowledged(
) {
    let mut h = Harness::new(ProtocolOptions::default());
    let before = h.write(PRIMARY, "k", "v1");
    assert_eq!(h.writes.get(&before), Some(&Ok(1)));
    // The fence entry waits unacknowledged, with the mirror cut off.
    h.cut(PRIMARY, MIRROR);
    let fence = h.write_routed(
        PRIMARY,
        FENCE_KEY,
        &1u64.to_be_bytes(),
        WriteCondition::Always,
        1,
    );
    assert!(!h.writes.contains_key(&fence));
    let stale = Err(ReplicationError::StaleRing { fence: 1 });
    let old_ring = h.write(PRIMARY, "k", "v2");
    assert_eq!(h.writes.get(&old_ring), Some(&stale));
    assert_eq!(h.read(PRIMARY, "k").map(|_| ()), stale.clone().map(|_| ()));
    // A fence never goes down, whatever ring the request names.
    let lower = h.write_routed(
        PRIMARY,
        FENCE_KEY,
        &0u64.to_be_bytes(),
        WriteCondition::Always,
        1,
    );
    assert_eq!(h.writes.get(&lower), Some(&stale));
    assert_eq!(
        h.replica(PRIMARY).last_index(),
        2,
        "refusals append nothing"
    );
    // The new ring is served.
    assert_eq!(h.read_routed(PRIMARY, "k", 1), Ok(value("v1")));
    let new_ring = h.write_routed(PRIMARY, b"k", b"v2", WriteCondition::Always, 1);
    h.blocked.clear();
    h.advance(30);
    assert_eq!(h.writes.get(&fence), Some(&Ok(2)));
    assert_eq!(h.writes.get(&new_ring), Some(&Ok(3)));
    assert_eq!(h.replica(MIRROR).fence(), 1);
}

#[test]
fn an_empty_value_deletes_its_key_and_scans_and_counts_leave_out_the_fence() {
    let mut h = Harness::new(ProtocolOptions::default());
    for key in ["a", "b", "c"] {
        h.write(PRIMARY, key, "v");
    }
    h.write_routed(
        PRIMARY,
        FENCE_KEY,
        &3u64.to_be_bytes(),
        WriteCondition::Always,
        3,
    );
    let delete = h.write_routed(PRIMARY, b"b", b"", WriteCondition::IfCurrent(value("v")), 3);
    assert_eq!(h.writes.get(&delete), Some(&Ok(5)));
    assert_eq!(h.read_routed(PRIMARY, "b", 3), Ok(None));
    // A deleted key counts as never written for a conditional write.
    let again = h.write_routed(PRIMARY, b"b", b"w", WriteCondition::IfCurrent(None), 3);
    assert_eq!(h.writes.get(&again), Some(&Ok(6)));
    for id in [PRIMARY, MIRROR] {
        let replica = h.replica(id);
        assert_eq!(replica.key_count(), 3);
        assert_eq!(replica.visible_fence(), 3);
        let first = replica.scan(None, 2);
        let keys: Vec<&[u8]> = first.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [b"a".as_slice(), b"b"]);
        let rest = replica.scan(Some(b"b"), 2);
        assert_eq!(rest, vec![(b"c".to_vec(), b"v".to_vec())]);
    }
}

#[test]
fn a_write_sent_to_the_mirror_names_the_primary() {
    let mut h = Harness::new(ProtocolOptions::default());
    let request = h.write(MIRROR, "k", "v");
    assert_eq!(
        h.writes[&request],
        Err(ReplicationError::NotPrimary {
            primary: Some(PRIMARY),
            epoch: 1
        })
    );
    let request = h.write(WITNESS, "k", "v");
    assert!(matches!(
        h.writes[&request],
        Err(ReplicationError::NotPrimary {
            primary: Some(PRIMARY),
            ..
        })
    ));
}

#[test]
fn a_killed_primary_is_replaced_after_its_lease_without_losing_a_write() {
    let mut h = Harness::new(ProtocolOptions::default());
    let requests: Vec<_> = (0..50)
        .map(|i| h.write(PRIMARY, &format!("k{i}"), &format!("v{i}")))
        .collect();
    assert!(requests.iter().all(|r| h.writes[r].is_ok()));
    h.kill(PRIMARY);
    h.advance(h.options.timing.failover_timeout_ms + 100);
    assert!(h.replica(MIRROR).is_primary(h.now_ms), "mirror promoted");
    for i in 0..50 {
        assert_eq!(
            h.read(MIRROR, &format!("k{i}")),
            Ok(value(&format!("v{i}")))
        );
    }
    h.restart(PRIMARY);
    h.advance(100);
    let old = h.replica(PRIMARY);
    assert_eq!(old.role(), Role::Mirror, "the old primary follows");
    assert_eq!(old.record(), h.replica(MIRROR).record());
    assert!(h.witness.record().synchronous, "back in synchronous mode");
}

#[test]
fn a_mirror_cut_off_from_primary_and_witness_is_never_promoted() {
    // REP-004's partition: {primary, witness} | {mirror}.
    let mut h = Harness::new(ProtocolOptions::default());
    h.isolate(MIRROR);
    h.advance(2_000);
    assert!(h.replica(PRIMARY).is_primary(h.now_ms));
    assert!(!h.replica(MIRROR).is_primary(h.now_ms));
    assert!(
        !h.witness.record().synchronous,
        "the primary continues alone"
    );
    let request = h.write(PRIMARY, "k", "v1");
    assert_eq!(h.writes[&request], Ok(1));
    let request = h.write(MIRROR, "k", "v2");
    assert!(matches!(
        h.writes[&request],
        Err(ReplicationError::NotPrimary { .. })
    ));
    // After healing, the stale mirror catches up and synchronous mode resumes.
    h.blocked.clear();
    h.advance(200);
    assert!(h.witness.record().synchronous);
    assert_eq!(h.replica(MIRROR).local_read(b"k"), value("v1"));
}

#[test]
fn a_stale_mirror_is_not_promoted_when_the_primary_dies() {
    let mut h = Harness::new(ProtocolOptions::default());
    h.cut(PRIMARY, MIRROR);
    h.advance(400);
    let request = h.write(PRIMARY, "k", "only-on-primary");
    assert_eq!(h.writes[&request], Ok(1));
    h.kill(PRIMARY);
    h.blocked.clear();
    h.advance(2_000);
    assert!(
        !h.replica(MIRROR).is_primary(h.now_ms),
        "promoting the stale mirror would lose an acknowledged write"
    );
}

#[test]
fn an_isolated_primary_stops_within_its_lease_and_discards_what_it_never_acknowledged() {
    let mut h = Harness::new(ProtocolOptions::default());
    let acked = h.write(PRIMARY, "k", "acked");
    assert_eq!(h.writes[&acked], Ok(1));
    h.isolate(PRIMARY);
    let unacked = h.write(PRIMARY, "k", "never-acked");
    h.advance(h.options.timing.lease_ms + 10);
    assert!(!h.replica(PRIMARY).is_primary(h.now_ms), "lease lapsed");
    assert_eq!(
        h.writes[&unacked],
        Err(ReplicationError::LeaseLost { epoch: 1 })
    );
    let refused = h.write(PRIMARY, "k", "late");
    assert_eq!(
        h.writes[&refused],
        Err(ReplicationError::NoLease { epoch: 1 })
    );
    h.advance(h.options.timing.failover_timeout_ms);
    assert!(h.replica(MIRROR).is_primary(h.now_ms), "mirror promoted");
    let new = h.write(MIRROR, "k", "new");
    assert!(h.writes[&new].is_ok());
    h.blocked.clear();
    h.advance(200);
    let old = h.replica(PRIMARY);
    assert_eq!(old.role(), Role::Mirror);
    assert_eq!(old.local_read(b"k"), value("new"));
    assert_eq!(old.durable().log, h.replica(MIRROR).durable().log);
}

#[test]
fn a_replica_refuses_writes_from_an_older_epoch() {
    let mut h = Harness::new(ProtocolOptions::default());
    h.isolate(PRIMARY);
    h.advance(600);
    assert!(h.replica(MIRROR).is_primary(h.now_ms));
    let before = h.replica(MIRROR).durable().clone();
    let stale = Message::Replicate {
        record: EpochRecord {
            epoch: 1,
            primary: PRIMARY,
            synchronous: true,
        },
        prev_index: 0,
        prev_epoch: 0,
        entries: vec![super::super::message::Entry {
            epoch: 1,
            index: 1,
            key: b"k".to_vec(),
            value: b"stale".to_vec(),
        }],
        commit_index: 1,
        sent_at_ms: h.now_ms,
    };
    let replica = h.replicas.get_mut(&MIRROR).expect("mirror");
    let actions = replica.step(
        h.now_ms,
        Event::Receive {
            from: PRIMARY,
            message: stale,
        },
    );
    replica.validate();
    assert_eq!(
        replica.durable(),
        &before,
        "the stale write changed nothing"
    );
    assert!(matches!(
        actions.as_slice(),
        [Action::Send {
            message: Message::ReplicateReply {
                outcome: ReplicateOutcome::Stale,
                ..
            },
            ..
        }]
    ));
}

#[test]
fn a_silent_witness_does_not_stop_a_primary_that_reaches_its_mirror() {
    let mut h = Harness::new(ProtocolOptions::default());
    h.isolate(WITNESS);
    h.advance(1_000);
    assert!(h.replica(PRIMARY).is_primary(h.now_ms));
    let request = h.write(PRIMARY, "k", "v");
    assert_eq!(h.writes[&request], Ok(1));
    assert!(!h.replica(MIRROR).is_primary(h.now_ms));
}

#[test]
fn unsafe_async_replication_acknowledges_before_the_mirror_has_the_write() {
    let options = ProtocolOptions {
        unsafe_async_replication: true,
        ..ProtocolOptions::default()
    };
    let mut h = Harness::new(options);
    h.cut(PRIMARY, MIRROR);
    let request = h.write(PRIMARY, "k", "v");
    assert_eq!(h.writes[&request], Ok(1), "acknowledged at once");
    assert_eq!(h.replica(MIRROR).local_read(b"k"), None);
}

#[test]
fn unsafe_no_fencing_lets_both_sides_of_a_partition_acknowledge_writes() {
    let options = ProtocolOptions {
        unsafe_no_fencing: true,
        ..ProtocolOptions::default()
    };
    let mut h = Harness::new(options);
    h.isolate(PRIMARY);
    h.advance(1_000);
    let a = h.write(PRIMARY, "k", "a");
    let b = h.write(MIRROR, "k", "b");
    assert!(h.writes[&a].is_ok() && h.writes[&b].is_ok(), "split brain");
    assert_eq!(h.read(PRIMARY, "k"), Ok(value("a")));
    assert_eq!(h.read(MIRROR, "k"), Ok(value("b")));
}
