//! Online rebalancing between shard processes: a shard added at run time takes, from the shards
//! before it, the rows the new consistent-hash ring places on it, while compute nodes keep
//! reading and writing them.
//!
//! The steps, each safe to repeat, so a rebalance that stopped half way is finished by running
//! it again ([`rebalance`] resumes a record that is still moving):
//! 1. **Record.** Compare-and-set the ring record (see [`super::ring_record`]) to the next
//!    epoch, with the new shard and `moving_from` the shards before.
//! 2. **Fence.** Write the new epoch to every old shard's [`FENCE_KEY`]. From then on an old
//!    shard refuses every request routed by an older ring, so no row it may give up changes
//!    there any more; a compute node refused learns the new record and routes again.
//! 3. **Copy.** Scan each old shard (a copy that holds the fence; all old shards at once) and
//!    copy every row the new ring places elsewhere to its new owner if that holds nothing for
//!    the key yet (compare-and-set from "absent"), a page of rows per request. A compute node that meets such a row first copies it
//!    the same way (see `compute_server`), so which copy wins does not matter: the first one
//!    written is the row, and later writes go to the new owner only.
//! 4. **Settle.** Compare-and-set the record to the same epoch with `moving_from` empty.
//! 5. **Clean.** Delete each copied row from its old shard, by compare-and-set from the value
//!    copied, a page per request.
//!
//! A compute node with the new record fences an old shard itself before it first touches a
//! moving row there, so a rebalancer that died between steps 1 and 2 blocks no one.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{ClientError, MetadataClient};
use super::ring_record::{Placement, RingRecord, RingRecordError, RING_KEY};
use super::shard_client::{MemberAddrs, ShardClient};
use super::shard_protocol::MAX_WRITE_BATCH;
use crate::metadata::NodeId;
use crate::replication::{LogIndex, ReplicationError, WriteCondition, FENCE_KEY};

/// How many rows one scan page asks for.
const SCAN_PAGE: usize = 1024;
/// Keys and values, in key order.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// How long a call that failed definitely waits before it is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Turns a shard's failure, as the calls here give it, into the rebalance's, saying what
/// step failed.
fn shard_failed(what: impl Into<String>) -> impl Fn((usize, ReplicationError)) -> RebalanceError {
    let what = what.into();
    move |(shard, error)| RebalanceError::Shard {
        shard,
        what: what.clone(),
        error,
    }
}

/// What a rebalance did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebalanceReport {
    /// The epoch of the ring it left.
    pub epoch: u64,
    /// The shards of that ring.
    pub shards: Vec<usize>,
    /// Rows copied to their new owner by the rebalancer (not those a compute node copied first).
    pub copied_rows: u64,
    /// Rows whose new owner already held them (a compute node or an earlier run copied them).
    pub already_there: u64,
    /// Bytes of the rows moved (keys and values), copied or found there.
    pub moved_bytes: u64,
    /// Rows deleted from their old shard.
    pub deleted_rows: u64,
    /// From the start to the record settled: how long rows were moving.
    pub moving: Duration,
    /// The whole rebalance, cleaning included.
    pub elapsed: Duration,
}

impl std::fmt::Display for RebalanceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ring epoch {} over shards {:?}: {} rows copied + {} copied first by compute \
             nodes ({:.2} MB), {} deleted from the old shards; moving {:.2} s ({:.0} rows/s, \
             {:.2} MB/s), whole {:.2} s",
            self.epoch,
            self.shards,
            self.copied_rows,
            self.already_there,
            self.moved_bytes as f64 / 1e6,
            self.deleted_rows,
            self.moving.as_secs_f64(),
            self.rows_per_second(),
            self.megabytes_per_second(),
            self.elapsed.as_secs_f64()
        )
    }
}

impl RebalanceReport {
    /// Rows moved, per second of moving.
    pub fn rows_per_second(&self) -> f64 {
        (self.copied_rows + self.already_there) as f64 / self.moving.as_secs_f64().max(1e-9)
    }

    /// Megabytes (10^6 bytes) moved per second of moving.
    pub fn megabytes_per_second(&self) -> f64 {
        self.moved_bytes as f64 / 1e6 / self.moving.as_secs_f64().max(1e-9)
    }
}

/// Why a rebalance stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebalanceError {
    /// The ring record could not be read.
    #[error("ring record: {0}")]
    Record(#[from] RingRecordError),
    /// The metadata group refused or did not answer.
    #[error("metadata: {0}")]
    Metadata(#[from] ClientError),
    /// Someone else changed the ring record meanwhile.
    #[error("the ring record changed under the rebalance (another rebalance runs?)")]
    Conflict,
    /// The shard to add is already in the ring.
    #[error("shard {0} is already in the ring")]
    ShardExists(usize),
    /// A shard did not answer in time.
    #[error("shard {shard}: {what}: {error}")]
    Shard {
        /// The shard.
        shard: usize,
        /// What was asked.
        what: String,
        /// The last error.
        error: ReplicationError,
    },
}

/// The ring compute nodes route by now: the record, or the members a cluster started with.
pub async fn current_ring(
    metadata: &MetadataClient,
    initial: &MemberAddrs,
) -> Result<(RingRecord, Option<String>), RebalanceError> {
    Ok(match RingRecord::load(metadata).await? {
        Some((record, text)) => (record, Some(text)),
        None => (RingRecord::initial(initial), None),
    })
}

/// Adds the shard whose data members are `new_members` (all of one new shard, already running)
/// to the ring and moves its rows to it; `initial` is the members the cluster started with, the
/// ring when none is recorded. A ring still moving from an earlier rebalance is finished first.
pub async fn add_shard(
    metadata: &MetadataClient,
    shards: &ShardClient,
    initial: &MemberAddrs,
    new_members: &MemberAddrs,
    bound: Duration,
) -> Result<RebalanceReport, RebalanceError> {
    let deadline = Instant::now() + bound;
    shards.add_members(initial);
    let (mut record, mut text) = current_ring(metadata, initial).await?;
    if record.moving_from.is_some() {
        rebalance(metadata, shards, deadline).await?;
        (record, text) = current_ring(metadata, initial).await?;
    }
    let existing = record.shards();
    for &(shard, _) in new_members.keys() {
        if existing.contains(&shard) {
            return Err(RebalanceError::ShardExists(shard));
        }
    }
    shards.add_members(new_members);
    let mut next = RingRecord::initial(
        &record
            .addrs()
            .into_iter()
            .chain(new_members.clone())
            .collect(),
    );
    next.epoch = record.epoch + 1;
    next.moving_from = Some(existing);
    let applied = metadata
        .compare_and_set(RING_KEY, text.as_deref(), &next.encode())
        .await?;
    if !applied {
        return Err(RebalanceError::Conflict);
    }
    tracing::info!(epoch = next.epoch, shards = ?next.shards(), "ring recorded; rows moving");
    rebalance(metadata, shards, deadline).await
}

/// Finishes the moves of the recorded ring (steps 2 to 5 of the module's list); a settled ring
/// needs nothing.
pub async fn rebalance(
    metadata: &MetadataClient,
    shards: &ShardClient,
    deadline: Instant,
) -> Result<RebalanceReport, RebalanceError> {
    let started = Instant::now();
    let Some((record, text)) = RingRecord::load(metadata).await? else {
        return Ok(RebalanceReport::default());
    };
    shards.add_members(&record.addrs());
    let mut report = RebalanceReport {
        epoch: record.epoch,
        shards: record.shards(),
        ..RebalanceReport::default()
    };
    let Some(sources) = record.moving_from.clone() else {
        return Ok(report);
    };
    let members = record.members_by_shard();
    let placement = record.placement();
    let epoch = record.epoch;
    for &shard in &sources {
        fence(shards, &members, shard, epoch, deadline).await?;
    }
    // Step 3: copy, from every old shard at once.
    let copies = sources
        .iter()
        .map(|&source| copy_from(shards, &members, &placement, source, epoch, deadline));
    let mut moved: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
    for copied in futures::future::try_join_all(copies).await? {
        report.copied_rows += copied.copied_rows;
        report.already_there += copied.already_there;
        report.moved_bytes += copied.moved_bytes;
        moved.extend(copied.rows);
    }
    // Step 4: settle.
    let settled = RingRecord {
        moving_from: None,
        ..record.clone()
    };
    if !metadata
        .compare_and_set(RING_KEY, Some(&text), &settled.encode())
        .await?
    {
        return Err(RebalanceError::Conflict);
    }
    report.moving = started.elapsed();
    tracing::info!(
        epoch,
        rows = report.copied_rows + report.already_there,
        "ring settled; cleaning the old shards"
    );
    // Step 5: clean.
    let mut by_source: BTreeMap<usize, Rows> = BTreeMap::new();
    for (source, key, value) in moved {
        by_source.entry(source).or_default().push((key, value));
    }
    for (source, rows) in by_source {
        for page in rows.chunks(MAX_WRITE_BATCH) {
            report.deleted_rows += delete_page(shards, &members, source, page, epoch, deadline)
                .await
                .map_err(shard_failed("delete moved rows"))?;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// What the copy from one old shard did.
#[derive(Default)]
struct Copied {
    copied_rows: u64,
    already_there: u64,
    moved_bytes: u64,
    /// `(source, key, value)` of every row that leaves it.
    rows: Vec<(usize, Vec<u8>, Vec<u8>)>,
}

/// Scans `source` (a copy holding the fence) page by page and copies to its new owner every
/// row the ring places elsewhere.
async fn copy_from(
    shards: &ShardClient,
    members: &BTreeMap<usize, Vec<NodeId>>,
    placement: &Placement,
    source: usize,
    epoch: u64,
    deadline: Instant,
) -> Result<Copied, RebalanceError> {
    let mut copied = Copied::default();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = scan_fenced(shards, members, source, after.as_deref(), epoch, deadline).await?;
        // Only an empty page ends the scan: a member may cap a page below what was asked.
        let last = page.is_empty();
        after = page.last().map(|(key, _)| key.clone());
        let mut by_owner: BTreeMap<usize, Rows> = BTreeMap::new();
        for (key, value) in page {
            let owner = placement.owner(&key);
            if owner != source {
                copied.moved_bytes += (key.len() + value.len()) as u64;
                by_owner.entry(owner).or_default().push((key, value));
            }
        }
        for (owner, rows) in by_owner {
            let (written, present) =
                copy_page(shards, members, owner, &rows, epoch, deadline).await?;
            copied.copied_rows += written;
            copied.already_there += present;
            copied
                .rows
                .extend(rows.into_iter().map(|(key, value)| (source, key, value)));
        }
        if last {
            return Ok(copied);
        }
    }
}

/// Runs one batch of writes on `shard`'s primary; a member that refuses every write of it as
/// not the primary (or without a lease) is treated as refusing the batch, so the call is
/// redirected like a single write.
async fn batch_on_primary(
    shards: &ShardClient,
    members: &BTreeMap<usize, Vec<NodeId>>,
    shard: usize,
    writes: Vec<(Vec<u8>, Vec<u8>, WriteCondition)>,
    epoch: u64,
    deadline: Instant,
) -> Result<Vec<Result<LogIndex, ReplicationError>>, (usize, ReplicationError)> {
    let writes = &writes;
    on_primary(members, shard, deadline, |member| async move {
        let results = shards
            .write_batch(shard, member, writes.clone(), epoch)
            .await?;
        let refused = results.iter().all(|result| {
            matches!(
                result,
                Err(ReplicationError::NotPrimary { .. } | ReplicationError::NoLease { .. })
            )
        });
        match results.first() {
            Some(Err(error)) if refused => Err(error.clone()),
            _ => Ok(results),
        }
    })
    .await
}

/// Copies `rows` to `owner` where it holds nothing for their keys, a page in one request; a
/// row the page did not write goes through [`copy_row`] alone. How many it wrote, and how many
/// were there already.
async fn copy_page(
    shards: &ShardClient,
    members: &BTreeMap<usize, Vec<NodeId>>,
    owner: usize,
    rows: &[(Vec<u8>, Vec<u8>)],
    epoch: u64,
    deadline: Instant,
) -> Result<(u64, u64), RebalanceError> {
    let mut counts = (0, 0);
    for page in rows.chunks(MAX_WRITE_BATCH) {
        let writes = page
            .iter()
            .map(|(key, value)| (key.clone(), value.clone(), WriteCondition::IfCurrent(None)))
            .collect();
        let results = batch_on_primary(shards, members, owner, writes, epoch, deadline)
            .await
            .map_err(shard_failed("copy a page of rows"))?;
        for ((key, value), result) in page.iter().zip(results) {
            let copied = match result {
                Ok(_) => true,
                // Present (perhaps not yet acknowledged), or not written: settle it alone.
                Err(_) => copy_row(shards, members, owner, key, value, epoch, deadline).await?,
            };
            if copied {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    Ok(counts)
}

/// Deletes each of `rows` from `source` if it still holds the value copied, a page in one
/// request; a row the page did not delete for another reason than its condition goes through
/// [`delete_row`] alone. How many it deleted.
async fn delete_page(
    shards: &ShardClient,
    members: &BTreeMap<usize, Vec<NodeId>>,
    source: usize,
    rows: &[(Vec<u8>, Vec<u8>)],
    epoch: u64,
    deadline: Instant,
) -> Result<u64, (usize, ReplicationError)> {
    let writes = rows
        .iter()
        .map(|(key, value)| {
            let condition = WriteCondition::IfCurrent(Some(value.clone()));
            (key.clone(), Vec::new(), condition)
        })
        .collect();
    let results = batch_on_primary(shards, members, source, writes, epoch, deadline).await?;
    let mut deleted = 0;
    for ((key, value), result) in rows.iter().zip(results) {
        let done = match result {
            Ok(_) => true,
            Err(ReplicationError::ConditionFailed { .. }) => false,
            Err(_) => delete_row(shards, members, source, key, value, epoch, deadline).await?,
        };
        deleted += u64::from(done);
    }
    Ok(deleted)
}

/// Deletes `key` from `source` if it still holds `value` there; whether it did (an earlier
/// attempt whose answer was lost may have).
async fn delete_row(
    shards: &ShardClient,
    members: &BTreeMap<usize, Vec<NodeId>>,
    source: usize,
    key: &[u8],
    value: &[u8],
    epoch: u64,
    deadline: Instant,
) -> Result<bool, (usize, ReplicationError)> {
    on_primary(members, source, deadline, |member| async move {
        let condition = WriteCondition::IfCurrent(Some(value.to_vec()));
        match shards
            .write_routed(source, member, (key, &[]), condition, epoch)
            .await
        {
            Ok(_) => Ok(true),
            Err(ReplicationError::ConditionFailed { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    })
    .await
}

/// Writes `epoch` to `shard`'s fence (a newer fence is left alone: the write is refused as
/// stale, which means the fence is already past `epoch`).
pub async fn fence(
    shards: &ShardClient,
    members: &BTreeMap<usize, Vec<NodeId>>,
    shard: usize,
    epoch: u64,
    deadline: Instant,
) -> Result<(), RebalanceError> {
    let value = epoch.to_be_bytes();
    let value = &value;
    on_primary(members, shard, deadline, |member| async move {
        match shards
            .write_routed(
                shard,
                member,
                (FENCE_KEY, value),
                WriteCondition::Always,
                epoch,
            )
            .await
        {
            Ok(_) | Err(ReplicationError::StaleRing { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    })
    .await
    .map_err(shard_failed(format!("fence at epoch {epoch}")))
}

/// Copies `value` to `key` on `owner` if `owner` holds nothing for it; whether it wrote. A
/// copy refused because another (a compute node's) is the newest entry there counts only once
/// a read sees it: until it is acknowledged, a failover may still lose it.
async fn copy_row(
    shards: &ShardClient,
    members: &BTreeMap<usize, Vec<NodeId>>,
    owner: usize,
    key: &[u8],
    value: &[u8],
    epoch: u64,
    deadline: Instant,
) -> Result<bool, RebalanceError> {
    let failed = shard_failed("copy a row");
    loop {
        let copied = on_primary(members, owner, deadline, |member| {
            shards.copy_if_absent(owner, member, (key, value), epoch)
        })
        .await
        .map_err(&failed)?;
        if copied {
            return Ok(true);
        }
        let present = on_primary(members, owner, deadline, |member| {
            shards.read_routed(owner, member, key, epoch)
        })
        .await
        .map_err(&failed)?;
        if present.is_some() {
            return Ok(false);
        }
        if Instant::now() >= deadline {
            return Err(failed((
                owner,
                ReplicationError::Timeout {
                    after: Duration::ZERO,
                },
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A page of `shard` from a data member whose copy holds the fence of `epoch`.
async fn scan_fenced(
    shards: &ShardClient,
    members: &BTreeMap<usize, Vec<NodeId>>,
    shard: usize,
    after: Option<&[u8]>,
    epoch: u64,
    deadline: Instant,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, RebalanceError> {
    let mut last = None;
    loop {
        for &member in &members[&shard] {
            match shards.scan(shard, member, after, SCAN_PAGE).await {
                Ok(page) if page.fence >= epoch => return Ok(page.entries),
                Ok(page) => {
                    last = Some(ReplicationError::StaleRing { fence: page.fence });
                }
                Err(error) => last = Some(error),
            }
        }
        if Instant::now() >= deadline {
            return Err(RebalanceError::Shard {
                shard,
                what: "scan a copy holding the fence".to_string(),
                error: last.unwrap_or(ReplicationError::UnknownShard {
                    shard,
                    shards: members.len(),
                }),
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Runs `call` on `shard`'s primary: follows redirects, tries the other member when one fails
/// definitely, and repeats calls whose outcome is unknown (every call here is idempotent),
/// until `deadline`.
async fn on_primary<T, F, Fut>(
    members: &BTreeMap<usize, Vec<NodeId>>,
    shard: usize,
    deadline: Instant,
    call: F,
) -> Result<T, (usize, ReplicationError)>
where
    F: Fn(NodeId) -> Fut,
    Fut: Future<Output = Result<T, ReplicationError>>,
{
    let candidates = &members[&shard];
    let mut target = candidates[0];
    loop {
        let error = match tokio::time::timeout_at(deadline, call(target)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => error,
            Err(_) => ReplicationError::Timeout {
                after: Duration::ZERO,
            },
        };
        if Instant::now() >= deadline {
            return Err((shard, error));
        }
        match error
            .primary_hint()
            .filter(|hint| *hint != target && candidates.contains(hint))
        {
            Some(primary) => target = primary,
            None => {
                if let Some(&other) = candidates.iter().find(|&&m| m != target) {
                    target = other;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}
