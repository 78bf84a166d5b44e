//! The replication protocol's vocabulary: epochs, epoch records, log entries, the messages the
//! three members of a shard exchange, and the events and actions of their state machines.

use serde::{Deserialize, Serialize};

use super::error::ReplicationError;
use crate::metadata::NodeId;

/// A numbered configuration of a shard; each new primary, and each change of whether the
/// primary waits for its mirror, takes a new epoch that the witness voted for.
pub type Epoch = u64;

/// The position of an entry in a replica's log; the first entry has index 1, and 0 means
/// "before the first entry".
pub type LogIndex = u64;

/// Identifies a client request within one node's runtime.
pub type RequestId = u64;

/// Milliseconds on the shard's shared clock (since the cluster started).
pub type Millis = u64;

/// What the witness voted for: who is primary in `epoch`, and whether that primary must wait
/// for its mirror before acknowledging a write.
///
/// The witness grants a promotion of the mirror only from a record with `synchronous` set: only
/// then is the mirror known to hold every acknowledged write (RPO = 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch this record configures.
    pub epoch: Epoch,
    /// The only node that may acknowledge writes in `epoch`.
    pub primary: NodeId,
    /// Whether every acknowledged write of this epoch is also on the mirror.
    pub synchronous: bool,
}

/// One write in a replica's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The epoch of the primary that appended it.
    pub epoch: Epoch,
    /// Its position in the log.
    pub index: LogIndex,
    /// The key written.
    pub key: Vec<u8>,
    /// The value written.
    pub value: Vec<u8>,
}

/// How a mirror answered a [`Message::Replicate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicateOutcome {
    /// The mirror's log now equals the primary's up to `match_index`, durably.
    Appended {
        /// The last index known to match.
        match_index: LogIndex,
    },
    /// The entry before the batch did not match; the mirror holds every committed entry up to
    /// `committed_index`, so the primary resends from there.
    Mismatch {
        /// The mirror's known commit index.
        committed_index: LogIndex,
    },
    /// The sender's epoch is older than the mirror's; the reply's record names the newer one.
    Stale,
}

/// A message between the members of one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Primary to mirror: entries after `prev_index`, or a heartbeat when empty.
    Replicate {
        /// The primary's record; its epoch fences the write.
        record: EpochRecord,
        /// The index just before `entries`.
        prev_index: LogIndex,
        /// The epoch of the entry at `prev_index` (0 for index 0).
        prev_epoch: Epoch,
        /// Consecutive entries from `prev_index + 1`.
        entries: Vec<Entry>,
        /// The primary's commit index.
        commit_index: LogIndex,
        /// When the primary sent it; echoed so the primary can date its lease.
        sent_at_ms: Millis,
    },
    /// Mirror to primary: the answer to a `Replicate`.
    ReplicateReply {
        /// The mirror's record after handling the request.
        record: EpochRecord,
        /// What happened.
        outcome: ReplicateOutcome,
        /// The `sent_at_ms` of the request.
        sent_at_ms: Millis,
    },
    /// Primary to witness: "I am still here" in `epoch`.
    WitnessHeartbeat {
        /// The primary's epoch.
        epoch: Epoch,
        /// When the primary sent it.
        sent_at_ms: Millis,
    },
    /// Witness to primary: its record, so the primary renews its lease or learns it is deposed.
    WitnessHeartbeatReply {
        /// The witness's record.
        record: EpochRecord,
        /// The `sent_at_ms` of the heartbeat.
        sent_at_ms: Millis,
    },
    /// Replica to witness: please make `proposed` the shard's record.
    VoteRequest {
        /// The record the requester wants; `proposed.primary` is the requester.
        proposed: EpochRecord,
        /// When the requester sent it.
        sent_at_ms: Millis,
    },
    /// Witness to replica: the vote, and the witness's record after it.
    VoteReply {
        /// Whether the witness adopted the proposal.
        granted: bool,
        /// The witness's record after handling the request.
        record: EpochRecord,
        /// The `sent_at_ms` of the request.
        sent_at_ms: Millis,
    },
}

/// What a write requires of its key's latest value on the primary: the value of the newest entry
/// for the key in the primary's log, acknowledged or not, else the applied value.
///
/// Judging against unacknowledged entries is sound because the log is a prefix order: a
/// conditional entry appended after a pending one survives a failover only if the pending one
/// does, so it never takes effect on a value that did not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteCondition {
    /// Write whatever the value is.
    #[default]
    Always,
    /// Write only if the latest value is this one (`None`: the key was never written);
    /// otherwise refuse with [`ReplicationError::ConditionFailed`], appending nothing.
    IfCurrent(Option<Vec<u8>>),
}

/// Something that happens to a member, fed to its `step` method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Time passed; timers are checked.
    Tick,
    /// A message arrived.
    Receive {
        /// The sender.
        from: NodeId,
        /// The message.
        message: Message,
    },
    /// A client asks this node to write.
    ClientWrite {
        /// Identifies the request in the answering action.
        request: RequestId,
        /// The key to write.
        key: Vec<u8>,
        /// The value to write.
        value: Vec<u8>,
        /// What the key's latest value must be for the write to be appended.
        condition: WriteCondition,
        /// The epoch of the ring the client routed by; refused when the shard's fence is newer.
        ring_epoch: u64,
    },
    /// A client asks this node for a linearizable read.
    ClientRead {
        /// Identifies the request in the answering action.
        request: RequestId,
        /// The key to read.
        key: Vec<u8>,
        /// The epoch of the ring the client routed by; refused when the shard's fence is newer.
        ring_epoch: u64,
    },
    /// An operator asks the mirror to seek promotion without waiting out its failure detector
    /// (the seed's `promote_mirror_to_primary`); the witness still decides.
    ForcePromotion,
}

/// Something a member asks its runtime to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message.
    Send {
        /// The addressee.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Answer a client write.
    WriteDone {
        /// The request answered.
        request: RequestId,
        /// The log position of the acknowledged write, or why it was not acknowledged.
        result: Result<LogIndex, ReplicationError>,
    },
    /// Answer a client read.
    ReadDone {
        /// The request answered.
        request: RequestId,
        /// The value read, or why there is none.
        result: Result<Option<Vec<u8>>, ReplicationError>,
    },
}
