//! The replication protocol's timings and switches, including the deliberately unsafe modes
//! that exist only so that tests and checkers can prove they catch the bugs they cause.

use super::message::Millis;

/// The protocol's clocks, in milliseconds of the shard's shared clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often the runtime feeds a `Tick`.
    pub tick_ms: Millis,
    /// How often the primary sends heartbeats to the mirror and the witness.
    pub heartbeat_interval_ms: Millis,
    /// How long after sending a heartbeat that the mirror or the witness acknowledged the
    /// primary may keep acknowledging writes and serving reads.
    pub lease_ms: Millis,
    /// The most two nodes' clocks may drift apart over one lease; the witness and the mirror
    /// wait this much longer than the lease before they act on a silent primary.
    pub max_clock_drift_ms: Millis,
    /// How long the mirror waits without hearing from the primary before it seeks promotion.
    /// Invariant: `failover_timeout_ms >= lease_ms + max_clock_drift_ms`.
    pub failover_timeout_ms: Millis,
    /// How long a synchronous primary waits without acknowledgements from its mirror before it
    /// asks the witness to let it continue alone.
    pub mirror_timeout_ms: Millis,
    /// How long a node waits for the witness's vote before asking again.
    pub vote_retry_ms: Millis,
}

impl Default for Timing {
    /// Sub-second failover: the mirror seeks promotion 250 ms after it last heard from the
    /// primary, whose lease is 200 ms.
    fn default() -> Self {
        Self {
            tick_ms: 5,
            heartbeat_interval_ms: 25,
            lease_ms: 200,
            max_clock_drift_ms: 20,
            failover_timeout_ms: 250,
            mirror_timeout_ms: 250,
            vote_retry_ms: 40,
        }
    }
}

impl Timing {
    /// How long the witness, and the mirror, must not have heard from a primary before a new
    /// primary may be made: its lease plus the clock drift bound.
    pub fn lease_expiry_wait_ms(&self) -> Millis {
        self.lease_ms + self.max_clock_drift_ms
    }

    /// Checks the timings make sense together.
    ///
    /// # Panics
    /// If they do not, a bug in whoever configured them.
    pub fn validate(&self) {
        assert!(self.tick_ms > 0, "tick_ms must be positive");
        assert!(
            self.heartbeat_interval_ms < self.lease_ms,
            "heartbeats ({} ms) must come more often than the lease ({} ms) lasts",
            self.heartbeat_interval_ms,
            self.lease_ms
        );
        assert!(
            self.failover_timeout_ms >= self.lease_expiry_wait_ms(),
            "failover timeout ({} ms) must outlast lease plus drift ({} ms)",
            self.failover_timeout_ms,
            self.lease_expiry_wait_ms()
        );
        assert!(self.vote_retry_ms > 0, "vote_retry_ms must be positive");
    }
}

/// How a replica behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolOptions {
    /// The protocol's clocks.
    pub timing: Timing,
    /// The most writes a primary holds waiting for its mirror; more are refused.
    pub max_pending_writes: usize,
    /// The most entries one `Replicate` carries.
    pub max_batch: usize,
    /// Test aid, deliberately unsafe: the primary acknowledges a write as soon as it appended
    /// it, and ships it to the mirror only with the next heartbeat. A failover then loses
    /// acknowledged writes (RPO > 0).
    pub unsafe_async_replication: bool,
    /// Test aid, deliberately unsafe: epochs are not fenced. The mirror promotes itself and a
    /// primary drops its mirror on their own failure detectors, without the witness's vote; a
    /// primary ignores its lease and never steps down for a newer epoch. A partition then makes
    /// two primaries that both acknowledge writes (split brain).
    pub unsafe_no_fencing: bool,
}

impl Default for ProtocolOptions {
    fn default() -> Self {
        Self {
            timing: Timing::default(),
            max_pending_writes: 4096,
            max_batch: 512,
            unsafe_async_replication: false,
            unsafe_no_fencing: false,
        }
    }
}
