//! Seed section 1, "Raft Consensus Correctness" (RAFT-001 to RAFT-005), against a real metadata
//! group: `helios node --role metadata` processes on loopback ([`LocalCluster`]), reached over
//! TCP through [`MetadataClient`], with real faults (SIGKILL and restart from the data
//! directory, partitions through each node's peer filter).
//!
//! Ignored by default (each scenario starts real processes, 1-15 s each):
//!
//! ```sh
//! cargo test --test seed_on_processes -- --ignored --nocapture
//! ```
//!
//! The nodes run a release `helios` binary, which the suite builds (`cargo build --release -p
//! helios`, a no-op when it is fresh) unless `HELIOS_BIN` names one, as the chaos suite does.
//!
//! Where the process API differs from the seed's `RaftTestCluster`:
//! - Node ids are 1-based, so the seed's partition `{0, 1} | {2, 3, 4}` is `{1, 2} | {3, 4, 5}`.
//! - `is_leader()` is [`NodeStatus::is_leader`] from each node's admin endpoint (leader with a
//!   lease), and `current_leader()` is [`LocalCluster::wait_for_leader`].
//! - A follower does not serve reads (reads are linearizable, through the leader), so "the same
//!   log on every node" is every node's status: the same last log index, last applied index and
//!   term as the leader's, followed by a linearizable read of every key; `new_leader.get(key)` is
//!   a linearizable read that the new leader serves.
//! - Each fixed sleep is polling bounded by what the seed slept; the election bound is the
//!   seed's 3 s, and it counts from the spawn of the processes.
//! - Every client operation and fault is recorded as a history (`target/seed-on-processes/`),
//!   which the checker must find linearizable as one register per key.
//!
//! Seed section 3, "Replication and Failover Tests" (REP-001 to REP-005), against one replicated
//! shard of processes: `helios node --role storage` for members 0 (the first primary) and 1 (the
//! first mirror), `--role witness` for member 2, reached over TCP through [`ShardClient`], with
//! real faults (SIGKILL of a member's process, restart from its data directory, isolation
//! through the three members' peer filters). Where the process API differs from the seed's
//! `StorageCluster` and `ReplicationCluster`:
//! - Both of the seed's constructors are the same cluster: one shard (`n_shards: 1`) of a
//!   primary, a mirror and a witness, with no metadata group (REP never uses it). Like the seed's constructors, a test starts once the shard has a primary
//!   ([`LocalCluster::wait_for_primary`], within the in-process cluster's startup bound, 10 s).
//! - `get_primary`/`is_primary` are [`MemberStatus::is_primary`] (named primary by its record and
//!   holding a lease); `get_mirror` is the other data node; `write` is
//!   [`ShardClient::write_at`] on that member; the seed's node-level `read` is
//!   [`ShardClient::read`] (the member's own copy), and every check of acknowledged data also
//!   reads through the primary ([`ShardClient::read_linearizable`]).
//! - `kill_primary` is SIGKILL of the primary's process; `promote_mirror_to_primary` asks the
//!   mirror to seek promotion ([`ShardClient::force_promotion`]) every 10 ms until it says it is
//!   primary, within the in-process bound (10 s); the witness still decides.
//!   `partition_network({p}, {m, w})` is [`LocalCluster::isolate_member`]; `heal_network` is
//!   [`LocalCluster::heal`]; a member's process is `member_process(member)`.
//! - REP-003 polls for the failover decision for at most the seed's 5 s instead of sleeping, and
//!   the sleeps that give a wrong outcome time to happen (REP-003's 2 s after the heal,
//!   REP-004's 5 s) are watched for their whole length. While they run, the test writes through
//!   both data nodes and reads both statuses, the would-be new primary first: the isolated
//!   member must acknowledge no write and two members must never both say they are primary
//!   (an isolated primary cannot renew its lease, so its "primary" after the other's proves an
//!   overlap). As in-process, REP-003 also checks that the old primary follows the new epoch
//!   and refuses writes naming the new primary; REP-004 also heals and checks that the mirror
//!   catches up.
//! - REP-005 starts its clock just before the SIGKILL (the seed's includes looking up the
//!   primary, a call on memory) and polls every 10 ms (seed: 100 ms). It measures the failover
//!   both as the seed does (until a member says it is primary) and until the new primary
//!   acknowledges a write, and asserts the seed's 10 s on the latter.
//! - Beyond the seed: REP-002 reads every key through the new primary as well as from its copy,
//!   prints its failover time, and restarts the killed primary, which must rejoin as the mirror
//!   and catch up; REP-001 also writes twenty more keys, each read from the mirror at once.
//! - The histories are the same format, one register per key, with the shard's members named
//!   `r0`, `r1`, `r2` as in the in-process replicated workload's histories.
//!
//! Seed section 4, "Cache Invalidation Tests" (CACHE-001, CACHE-002), against compute node
//! processes (`helios node --role compute`) over replicated shards of processes, reached over
//! TCP through [`ComputeClient`]. Where the process API differs from the seed's `TestCluster`:
//! - `.storage_nodes(n)` is `n` replicated shards; a metadata group of three nodes holds the
//!   table's schema. The seed's builder creates table `data` with its rows; here compute node
//!   0 creates it (keyed by `id`) and inserts the rows the test reads, with `value = 1`.
//! - Like the seed's constructor, a test starts once every compute node holds a cache lease
//!   from every data node ([`LocalCluster::wait_for_cache`]): before that, a compute node reads
//!   storage and caches nothing, and the seed's first `cache_contains` would fail.
//! - The seed sleeps 100 ms (CACHE-001) and 200 ms (CACHE-002) for the invalidation to
//!   arrive; the compute processes need no sleep (an update is acknowledged only after every
//!   compute node holding a lease dropped the row), so the tests check at once, and then again
//!   after the seed's sleep.
//! - The histories name compute nodes `c0`, `c1`, ...; every read and write of row `id` is a
//!   register `data/<id>`.
//!
//! Seed section 2, SHARD-001 ("Consistent hashing distributes data evenly"), against three
//! replicated shards of processes: the seed asks the metadata service which shard each of
//! 10,000 keys maps to; here 10,000 rows are inserted through a compute node process, which
//! places them by its consistent-hash ring, and each shard's primary counts the rows it holds
//! ([`MemberStatus::keys`]); the seed's 10% bound applies to those counts.
//!
//! SHARD-002..004 (rebalancing when a node joins) against the same processes: the seed's
//! `add_node` is [`LocalCluster::add_shard`], which starts a fourth replicated shard (two data
//! nodes and a witness) and returns once its rows have moved, which stands for the seed's 10 s
//! sleep and `wait_for_rebalancing_complete`; `get_data_distribution` is each shard's
//! primary's count of its rows; the seed's `COUNT(*)` (a scan, which compute processes do not
//! run) becomes reading every row back with its value, plus the counts. SHARD-003's samples
//! during the move go through a second compute node. SHARD-004 writes 40,000 rows rather than
//! 100,000 (CI time), one row per statement from eight workers, and checks the writer was
//! still running when the shard was added. Each prints the rebalance's rows and rows/s.
//! `HELIOS_TEST_RUST_LOG` sets the processes' `RUST_LOG`.
//!
//! Seed section 5, "Distributed Transaction Tests" (TX-001 to TX-003), against the same compute
//! node processes: `begin_transaction` is [`ComputeClient::begin`], and the transaction's
//! `execute`, `query`, `commit` and `rollback` go over TCP to the node that opened it. Where
//! this differs from the seed's `TestCluster`:
//! - The seed's tables (`shard_0_table`, ..., `test`) are created by compute node 0, keyed by
//!   `id`; rows are placed on shards by the ring, not by table, so TX-001 checks from the
//!   commit's answer that its rows landed on at least two shards.
//! - `TestCluster::new_test()` (TX-003) is three shards and two compute nodes.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;

use common::{helios_binary, repository};
use std::time::{Duration, Instant};

use helios_cluster::process::{
    member_process, ClientError, ClientOptions, ClientReply, ClientRequest, ComputeClient,
    LocalCluster, LocalClusterSpec, MemberStatus, MetadataClient, NodeStatus, Ports, ShardClient,
};
use helios_cluster::replication::{LogIndex, ReplicationError, ShardMembers};
use helios_cluster::sql::FromSqlValue;
use helios_cluster::NodeId;
use serde_json::{json, Value};

/// The seed's bound on an election (RAFT-002: "wait for re-election", 3 s).
const ELECTION_BOUND: Duration = Duration::from_secs(3);
/// The seed's wait for replication (RAFT-003 and RAFT-005: 1 s).
const REPLICATION_BOUND: Duration = Duration::from_secs(1);
/// The seed's wait for convergence after a heal (RAFT-004: 2 s).
const HEAL_BOUND: Duration = Duration::from_secs(2);
/// How long RAFT-004 watches the minority for a leader once the old lease has lapsed.
const MINORITY_WATCH: Duration = Duration::from_secs(1);
/// How long the nodes may take to stop at the end (SIGTERM, then SIGKILL).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The shard of the REP tests (the cluster has one).
const SHARD: usize = 0;
/// The bound on a shard's first primary, and on a promotion: the in-process cluster's startup
/// timeout, which its constructors and `promote_mirror_to_primary` wait for.
const SHARD_STARTUP_BOUND: Duration = Duration::from_secs(10);
/// The seed's wait for the failover decision (REP-003: 5 s).
const FAILOVER_DECISION_BOUND: Duration = Duration::from_secs(5);
/// The seed's wait after the heal (REP-003: 2 s).
const REP_HEAL_WATCH: Duration = Duration::from_secs(2);
/// The seed's wait with the mirror isolated (REP-004: 5 s).
const SPLIT_BRAIN_WATCH: Duration = Duration::from_secs(5);
/// The seed's acceptable failover time (REP-005: 10 s).
const FAILOVER_BOUND: Duration = Duration::from_secs(10);
/// When REP-005 gives up waiting for a failover (the seed's 30 s).
const FAILOVER_GIVE_UP: Duration = Duration::from_secs(30);
/// How long a restarted or healed member may take to catch up (beyond the seed).
const CATCH_UP_BOUND: Duration = Duration::from_secs(5);
/// The bound on one call to a member; it outlasts the member's own request timeout (2 s).
const SHARD_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The client process of the REP tests' reads (writes count up from 0).
const READER: u64 = 1_000_000;

/// One cluster at a time: the election timings measure Raft, not five clusters on two cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the clusters and histories go.
fn runs_dir() -> PathBuf {
    repository().join("target/seed-on-processes")
}

/// Starts `n_nodes` metadata processes for `test` in a fresh directory. Dropping the cluster
/// SIGKILLs them, so a failed assertion leaves no process behind.
fn start_cluster(test: &str, n_nodes: usize) -> (LocalCluster, Instant) {
    start_processes(test, n_nodes, 0)
}

/// Starts one replicated shard (members 0 and 1 are data nodes, 0 the first primary; 2 is the
/// witness), without a metadata group, and waits for the
/// shard's first primary, as the seed's constructors do. Returns it with the shard's members.
async fn start_shard(test: &str) -> (LocalCluster, ShardMembers, NodeId) {
    let (cluster, started) = start_processes(test, 0, 1);
    let members = cluster.shard_members(SHARD);
    let primary = cluster
        .wait_for_primary(SHARD, SHARD_STARTUP_BOUND)
        .await
        .expect("the shard's first primary");
    eprintln!(
        "{test}: member {primary} is primary {} after spawn",
        ms(started.elapsed())
    );
    (cluster, members, primary)
}

/// Starts `n_nodes` metadata processes and `n_shards` replicated shards for `test`.
fn start_processes(test: &str, n_nodes: usize, n_shards: usize) -> (LocalCluster, Instant) {
    start_with_compute(test, n_nodes, n_shards, 0)
}

/// Starts three metadata nodes, `n_shards` shards and `n_compute` compute nodes for `test`,
/// waits until every compute node holds its cache leases, and creates table `data` keyed by
/// `id` through compute node 0; returns a client of each compute node.
async fn start_compute(
    test: &str,
    n_shards: usize,
    n_compute: usize,
) -> (LocalCluster, Vec<ComputeClient>) {
    let (cluster, _) = start_with_compute(test, 3, n_shards, n_compute);
    cluster
        .wait_for_leader(&[], SHARD_STARTUP_BOUND)
        .await
        .expect("a metadata leader");
    let mut computes = Vec::new();
    for index in cluster.compute_nodes() {
        cluster
            .wait_for_cache(index, SHARD_STARTUP_BOUND)
            .await
            .expect("cache leases from every data node");
        computes.push(
            cluster
                .compute_client(index, SHARD_CALL_TIMEOUT * 2)
                .expect("a compute node"),
        );
    }
    computes[0]
        .create_table("data", "id")
        .await
        .expect("create table data");
    (cluster, computes)
}

fn start_with_compute(
    test: &str,
    n_nodes: usize,
    n_shards: usize,
    n_compute: usize,
) -> (LocalCluster, Instant) {
    let dir = runs_dir().join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = LocalClusterSpec {
        binary: helios_binary().to_path_buf(),
        dir,
        n_nodes,
        n_shards,
        n_compute,
        compute_args: Vec::new(),
        ports: Ports::Free,
        node_args: Vec::new(),
        rust_log: Some(
            std::env::var("HELIOS_TEST_RUST_LOG")
                .unwrap_or_else(|_| "info,openraft=warn".to_owned()),
        ),
        exit_with_parent: true,
    };
    let started = Instant::now();
    let cluster = LocalCluster::start(spec).expect("start the node processes");
    eprintln!(
        "{test}: {n_nodes} metadata nodes, {n_shards} shards in {}",
        cluster.dir().display()
    );
    (cluster, started)
}

/// Stops the nodes and removes the cluster directory (kept when a test fails).
fn stop_cluster(mut cluster: LocalCluster) {
    let dir = cluster.dir().to_path_buf();
    cluster.stop(STOP_GRACE);
    drop(cluster);
    let _ = std::fs::remove_dir_all(dir);
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
async fn poll_until<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The statuses of the nodes `among` that answer.
async fn statuses(cluster: &LocalCluster, among: &[NodeId]) -> BTreeMap<NodeId, NodeStatus> {
    let mut answers = BTreeMap::new();
    for &id in among {
        if let Ok(status) = cluster.status(id).await {
            answers.insert(id, status);
        }
    }
    answers
}

/// The nodes of `among` that say they lead (with a lease).
async fn leaders(cluster: &LocalCluster, among: &[NodeId]) -> Vec<NodeId> {
    statuses(cluster, among)
        .await
        .into_values()
        .filter(|status| status.is_leader)
        .map(|status| status.id)
        .collect()
}

/// Whether every node of `among` answers with the same last log index, last applied index and
/// term as the single leader, whose applied index is at least `applied_at_least`.
async fn logs_agree(cluster: &LocalCluster, among: &[NodeId], applied_at_least: u64) -> bool {
    let answers = statuses(cluster, among).await;
    if answers.len() != among.len() {
        return false;
    }
    let leading: Vec<&NodeStatus> = answers.values().filter(|s| s.is_leader).collect();
    let [leader] = leading.as_slice() else {
        return false;
    };
    leader.last_applied_index.unwrap_or(0) >= applied_at_least
        && answers.values().all(|status| {
            status.last_log_index == leader.last_log_index
                && status.last_applied_index == leader.last_applied_index
                && status.term == leader.term
        })
}

/// Asserts what [`logs_agree`] polls for, naming the node that diverged.
async fn assert_logs_agree(cluster: &LocalCluster, among: &[NodeId]) {
    let answers = statuses(cluster, among).await;
    let leading: Vec<&NodeStatus> = answers.values().filter(|s| s.is_leader).collect();
    assert_eq!(leading.len(), 1, "not one leader: {answers:?}");
    let leader = leading[0];
    for &id in among {
        let status = answers
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} did not answer: {answers:?}"));
        assert_eq!(
            (
                status.last_log_index,
                status.last_applied_index,
                status.term
            ),
            (
                leader.last_log_index,
                leader.last_applied_index,
                leader.term
            ),
            "Node {id} log diverged from leader {}: {answers:?}",
            leader.id
        );
    }
}

/// The highest applied index among `among`'s answers.
async fn max_applied(cluster: &LocalCluster, among: &[NodeId]) -> u64 {
    statuses(cluster, among)
        .await
        .values()
        .filter_map(|status| status.last_applied_index)
        .max()
        .unwrap_or(0)
}

fn client_of(cluster: &LocalCluster, among: &[NodeId], op_timeout: Duration) -> MetadataClient {
    let addresses = cluster
        .addresses()
        .into_iter()
        .filter(|(id, _)| among.contains(id))
        .collect();
    MetadataClient::new(
        addresses,
        ClientOptions {
            op_timeout,
            ..ClientOptions::default()
        },
    )
}

/// Records the scenario's client operations and faults as a version-1 JSON Lines history.
struct History {
    test: &'static str,
    started: Instant,
    header: Value,
    /// Invariant: event `i` carries `"index": i`.
    events: Mutex<Vec<Value>>,
}

fn node_name(id: NodeId) -> String {
    format!("m{id}")
}

impl History {
    fn new(test: &'static str, nodes: &[NodeId]) -> Self {
        let names: Vec<String> = nodes.iter().map(|&id| node_name(id)).collect();
        Self {
            test,
            started: Instant::now(),
            header: json!({"helios_history": 1, "workload": test, "seed": 0, "nodes": names}),
            events: Mutex::new(Vec::new()),
        }
    }

    /// The history of a scenario on one replicated shard, whose members are named as the
    /// in-process replicated workload names them (`r0`, `r1`, `r2`).
    fn for_shard(test: &'static str, members: &ShardMembers) -> Self {
        let names: Vec<String> = [members.replicas[0], members.replicas[1], members.witness]
            .into_iter()
            .map(replica_name)
            .collect();
        Self {
            test,
            started: Instant::now(),
            header: json!({
                "helios_history": 1,
                "workload": test,
                "target": "replication",
                "seed": 0,
                "nodes": names,
            }),
            events: Mutex::new(Vec::new()),
        }
    }

    fn push(&self, mut event: Value) {
        let mut events = self.events.lock().expect("history lock poisoned");
        event["index"] = json!(events.len());
        event["time"] = json!(self.started.elapsed().as_nanos() as u64);
        events.push(event);
    }

    fn nemesis(&self, f: &str, value: Value) {
        self.push(json!({"type": "info", "process": "nemesis", "f": f, "value": value}));
    }

    /// Writes `key = value` as client `process`: `ok`, `fail` (certainly not applied) or `info`
    /// (unknown; the process is retired, so `process` advances).
    async fn write(
        &self,
        process: &mut u64,
        client: &MetadataClient,
        key: &str,
        value: &str,
    ) -> Result<NodeId, ClientError> {
        let op = json!({"process": *process, "f": "write", "key": key, "value": value});
        self.push(with(&op, "type", json!("invoke")));
        let result = client.write(key, value).await;
        let mut completion = op;
        match &result {
            Ok(served) => {
                completion["type"] = json!("ok");
                completion["node"] = json!(node_name(served.node));
            }
            Err(error) => {
                let unknown = error.outcome_is_unknown();
                completion["type"] = json!(if unknown { "info" } else { "fail" });
                completion["error"] = json!(error.to_string());
                if unknown {
                    *process += 1;
                }
            }
        }
        self.push(completion);
        result.map(|served| served.node)
    }

    /// A linearizable read of `key` as client `process`; returns the value and the serving node.
    async fn read(
        &self,
        process: u64,
        client: &MetadataClient,
        key: &str,
    ) -> Result<(Option<String>, NodeId), ClientError> {
        let op = json!({"process": process, "f": "read", "key": key, "value": null});
        self.push(with(&op, "type", json!("invoke")));
        let result = client
            .execute(ClientRequest::Read {
                key: key.to_owned(),
            })
            .await;
        let mut completion = op;
        let outcome = match result {
            Ok(served) => match served.reply {
                ClientReply::Value(value) => {
                    completion["type"] = json!("ok");
                    completion["value"] = json!(value);
                    completion["node"] = json!(node_name(served.node));
                    Ok((value, served.node))
                }
                other => panic!("node {} answered a read with {other:?}", served.node),
            },
            Err(error) => {
                // A read has no effect, so an error is never an unknown outcome.
                completion["type"] = json!("fail");
                completion["error"] = json!(error.to_string());
                Err(error)
            }
        };
        self.push(completion);
        outcome
    }

    /// Writes `key = value` through shard member `member` as client `process`: `ok`, `fail`
    /// (certainly not applied: refused, or the process was down) or `info` (unknown; the
    /// process is retired, so `process` advances).
    async fn write_at(
        &self,
        process: &mut u64,
        client: &ShardClient,
        member: NodeId,
        key: &str,
        value: &str,
    ) -> Result<LogIndex, ReplicationError> {
        let op = json!({"process": *process, "f": "write", "key": key, "value": value});
        self.push(with(&op, "type", json!("invoke")));
        let result = client
            .write_at(SHARD, member, key.as_bytes(), value.as_bytes())
            .await;
        let mut completion = op;
        match &result {
            Ok(_) => {
                completion["type"] = json!("ok");
                completion["node"] = json!(replica_name(member));
            }
            Err(error) => {
                let unknown = error.outcome_is_unknown();
                completion["type"] = json!(if unknown { "info" } else { "fail" });
                completion["error"] = json!(format!("{}: {error}", replica_name(member)));
                if unknown {
                    *process += 1;
                }
            }
        }
        self.push(completion);
        result
    }

    /// Reads `key` at shard member `member` as client `process`: through it as primary
    /// (linearizable), or its own copy (the seed's node-level `read`).
    async fn read_at(
        &self,
        process: u64,
        client: &ShardClient,
        member: NodeId,
        key: &str,
        how: Read,
    ) -> Result<Option<String>, ReplicationError> {
        let op = json!({"process": process, "f": "read", "key": key, "value": null});
        self.push(with(&op, "type", json!("invoke")));
        let result = match how {
            Read::Linearizable => {
                client
                    .read_linearizable(SHARD, member, key.as_bytes())
                    .await
            }
            Read::OwnCopy => client.read(SHARD, member, key.as_bytes()).await,
        };
        let result = result.map(|value| {
            value.map(|bytes| String::from_utf8(bytes).expect("the tests write UTF-8 values"))
        });
        let mut completion = op;
        match &result {
            Ok(value) => {
                completion["type"] = json!("ok");
                completion["value"] = json!(value);
                completion["node"] = json!(replica_name(member));
            }
            Err(error) => {
                // A read has no effect, so an error is never an unknown outcome.
                completion["type"] = json!("fail");
                completion["error"] = json!(format!("{}: {error}", replica_name(member)));
            }
        }
        self.push(completion);
        result
    }

    /// Saves the history under `target/seed-on-processes/` and checks it: well formed, at least
    /// one client operation, and linearizable as one register per key.
    fn save_and_check(&self) {
        use helios_checker::{jsonl::JsonlReader, linear, models::ModelSpec, ops, Verdict};
        let mut text = format!("{}\n", self.header);
        for event in self.events.lock().expect("history lock poisoned").iter() {
            text.push_str(&event.to_string());
            text.push('\n');
        }
        let path = runs_dir().join(format!("{}.jsonl", self.test));
        std::fs::create_dir_all(runs_dir())
            .and_then(|()| std::fs::write(&path, &text))
            .unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
        let reader = JsonlReader::new(text.as_bytes(), "scenario history").expect("a header");
        let operations = ops::pair(reader, "scenario history").expect("a well-formed history");
        assert!(
            !operations.ops.is_empty(),
            "the scenario recorded no operation"
        );
        let model = ModelSpec::parse("register(nil)").expect("model name");
        let report = linear::check(&operations, &model, &linear::LinearOptions::default())
            .expect("operations have the register's shape");
        eprintln!(
            "{}: history {} ({} ops): {}",
            self.test,
            path.display(),
            operations.ops.len(),
            report.verdict
        );
        assert_eq!(
            report.verdict,
            Verdict::Valid,
            "{}: not linearizable: {:?}",
            path.display(),
            report.witness
        );
    }
}

impl History {
    /// The history of a scenario on compute nodes `c0..c<n>`.
    fn for_compute(test: &'static str, n_compute: usize) -> Self {
        let names: Vec<String> = (0..n_compute).map(|i| format!("c{i}")).collect();
        Self {
            test,
            started: Instant::now(),
            header: json!({"helios_history": 1, "workload": test, "seed": 0, "nodes": names}),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Runs `sql` (which writes `value` to row `id`) through compute node `node` as client
    /// `process`: `ok`, `fail` or `info` (unknown; the process is retired).
    async fn sql_write(
        &self,
        process: &mut u64,
        computes: &[ComputeClient],
        node: usize,
        id: i64,
        value: i64,
        sql: &str,
    ) {
        let op =
            json!({"process": *process, "f": "write", "key": format!("data/{id}"), "value": value});
        self.push(with(&op, "type", json!("invoke")));
        let result = computes[node].execute(sql).await;
        let mut completion = op;
        match &result {
            Ok(_) => {
                completion["type"] = json!("ok");
                completion["node"] = json!(format!("c{node}"));
            }
            Err(error) => {
                let unknown = error.outcome_is_unknown();
                completion["type"] = json!(if unknown { "info" } else { "fail" });
                completion["error"] = json!(error.to_string());
                if unknown {
                    *process += 1;
                }
            }
        }
        self.push(completion);
        if let Err(error) = result {
            panic!("{sql} through c{node}: {error}");
        }
    }

    /// `SELECT value FROM data WHERE id = <id>` through compute node `node` as client
    /// `process`; the value read.
    async fn sql_read(
        &self,
        process: u64,
        computes: &[ComputeClient],
        node: usize,
        id: i64,
    ) -> i64 {
        let key = format!("data/{id}");
        let op = json!({"process": process, "f": "read", "key": key, "value": null});
        self.push(with(&op, "type", json!("invoke")));
        let result = computes[node]
            .query(&format!("SELECT value FROM data WHERE id = {id}"))
            .await;
        let mut completion = op;
        match &result {
            Ok(rows) => {
                completion["type"] = json!("ok");
                completion["value"] = json!(rows.rows.first().map(|row| row.get::<i64>("value")));
                completion["node"] = json!(format!("c{node}"));
            }
            Err(error) => {
                completion["type"] = json!("fail");
                completion["error"] = json!(error.to_string());
            }
        }
        self.push(completion);
        let rows = result.unwrap_or_else(|error| panic!("read row {id} through c{node}: {error}"));
        assert_eq!(rows.rows.len(), 1, "row {id} through c{node}");
        rows.rows[0].get::<i64>("value")
    }
}

/// How a REP test reads a shard member.
#[derive(Clone, Copy, Debug)]
enum Read {
    /// Through the member as primary with a lease ([`ShardClient::read_linearizable`]).
    Linearizable,
    /// The member's own copy ([`ShardClient::read`], the seed's node-level `read`).
    OwnCopy,
}

/// The history's name of shard member `member`, as in the in-process replicated workload.
fn replica_name(member: NodeId) -> String {
    format!("r{member}")
}

/// The shard's other data node.
fn other_replica(members: &ShardMembers, member: NodeId) -> NodeId {
    let [a, b] = members.replicas;
    assert!(member == a || member == b, "{member} is no data node");
    if member == a {
        b
    } else {
        a
    }
}

/// Member `member`'s status, if it answers.
async fn member_status(client: &ShardClient, member: NodeId) -> Option<MemberStatus> {
    client.status(SHARD, member).await.ok()
}

/// Whether member `member` answers that it is primary (named by its record, holding a lease).
async fn says_primary(client: &ShardClient, member: NodeId) -> bool {
    member_status(client, member)
        .await
        .is_some_and(|status| status.is_primary)
}

/// Asks `first`, then `second`, whether it is primary, and panics if both say so. Sound when
/// `second` cannot renew its lease (it is isolated): a lease only lapses, so its "primary" after
/// `first`'s means both were primary when `first` answered. Returns the two answers.
async fn assert_not_both_primary(
    client: &ShardClient,
    first: NodeId,
    second: NodeId,
    when: &str,
) -> (bool, bool) {
    let first_says = says_primary(client, first).await;
    let second_says = says_primary(client, second).await;
    assert!(
        !(first_says && second_says),
        "split brain {when}: members {first} and {second} both act as primary"
    );
    (first_says, second_says)
}

fn with(op: &Value, field: &str, value: Value) -> Value {
    let mut op = op.clone();
    op[field] = value;
    op
}

fn ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1e3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~5 s; cargo test --test seed_on_processes -- --ignored"]
async fn raft_001_leader_election_on_startup() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: three processes, as the seed's RaftTestCluster::new(3).
    let (cluster, started) = start_cluster("raft-001", 3);
    let ids = cluster.ids();
    let history = History::new("raft-001", &ids);

    // Wait for leader election, within the seed's election bound from the spawn.
    let leader_id = cluster.wait_for_leader(&[], ELECTION_BOUND).await;
    let elected_after = started.elapsed();
    let leader_id = leader_id.expect("No leader elected");
    eprintln!(
        "raft-001: node {leader_id} elected {} after spawn",
        ms(elected_after)
    );

    // Verify only one leader.
    let leader_count = leaders(&cluster, &ids).await.len();
    assert_eq!(leader_count, 1, "Multiple leaders detected");

    // Beyond the seed: the leader serves a write and a linearizable read, for the checker.
    let client = client_of(&cluster, &ids, Duration::from_secs(5));
    let mut process = 0;
    history
        .write(&mut process, &client, "elected", "yes")
        .await
        .expect("the elected leader serves a write");
    let (value, _) = history.read(100, &client, "elected").await.expect("read");
    assert_eq!(value.as_deref(), Some("yes"));

    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~8 s; cargo test --test seed_on_processes -- --ignored"]
async fn raft_002_new_leader_elected_when_the_leader_is_killed() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: five processes and a leader.
    let (mut cluster, _) = start_cluster("raft-002", 5);
    let ids = cluster.ids();
    let history = History::new("raft-002", &ids);
    let initial_leader = cluster
        .wait_for_leader(&[], ELECTION_BOUND)
        .await
        .expect("a first leader");
    let client = client_of(&cluster, &ids, Duration::from_secs(5));
    let mut process = 0;
    history
        .write(&mut process, &client, "before_kill", "written")
        .await
        .expect("the first leader serves a write");

    // Fault: SIGKILL the leader.
    history.nemesis("kill", json!([node_name(initial_leader)]));
    let killed_at = Instant::now();
    cluster.kill(initial_leader).expect("SIGKILL the leader");

    // Wait for re-election among the survivors, within the seed's 3 s.
    let survivors: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|&id| id != initial_leader)
        .collect();
    let new_leader = cluster.wait_for_leader(&survivors, ELECTION_BOUND).await;
    let failover = killed_at.elapsed();
    let new_leader = new_leader.expect("No new leader elected");
    eprintln!(
        "raft-002: leader {initial_leader} killed, node {new_leader} leads {} later",
        ms(failover)
    );
    assert_ne!(new_leader, initial_leader, "Same leader re-elected");

    // Workload: the new leader is functional.
    let served_by = history
        .write(&mut process, &client, "test_key", "test_value")
        .await;
    let served_by = served_by.expect("New leader cannot process proposals");
    assert_ne!(served_by, initial_leader, "a killed node served a write");

    // Check: both writes are read back.
    for (key, value) in [("before_kill", "written"), ("test_key", "test_value")] {
        let (read, _) = history.read(100, &client, key).await.expect("read");
        assert_eq!(read.as_deref(), Some(value), "key {key}");
    }
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~5 s; cargo test --test seed_on_processes -- --ignored"]
async fn raft_003_log_entries_replicated_to_all_nodes() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: three processes and a leader.
    let (cluster, _) = start_cluster("raft-003", 3);
    let ids = cluster.ids();
    let history = History::new("raft-003", &ids);
    cluster
        .wait_for_leader(&[], ELECTION_BOUND)
        .await
        .expect("a leader");

    // Workload: propose ten changes; each must be acknowledged.
    let client = client_of(&cluster, &ids, Duration::from_secs(5));
    let mut process = 0;
    for i in 0..10 {
        history
            .write(
                &mut process,
                &client,
                &format!("key_{i}"),
                &format!("value_{i}"),
            )
            .await
            .unwrap_or_else(|error| panic!("write key_{i}: {error}"));
    }
    let acknowledged_up_to = max_applied(&cluster, &ids).await;

    // Wait for replication (seed: sleep 1 s), then verify every node has the leader's log.
    let replicated = poll_until(REPLICATION_BOUND, || {
        logs_agree(&cluster, &ids, acknowledged_up_to)
    })
    .await;
    assert_logs_agree(&cluster, &ids).await;
    assert!(
        replicated,
        "logs did not agree within {REPLICATION_BOUND:?}"
    );

    // And every key through a linearizable read.
    for i in 0..10 {
        let (value, _) = history
            .read(100, &client, &format!("key_{i}"))
            .await
            .expect("read");
        assert_eq!(value, Some(format!("value_{i}")), "key_{i}");
    }
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~10 s; cargo test --test seed_on_processes -- --ignored"]
async fn raft_004_cluster_recovers_from_a_network_partition() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: five processes and a leader.
    let (mut cluster, _) = start_cluster("raft-004", 5);
    let ids = cluster.ids();
    let history = History::new("raft-004", &ids);
    cluster
        .wait_for_leader(&[], ELECTION_BOUND)
        .await
        .expect("a leader");
    let (minority, majority) = (vec![1, 2], vec![3, 4, 5]);

    // Fault: partition {1, 2} | {3, 4, 5} (the seed's {0, 1} | {2, 3, 4}).
    history.nemesis(
        "start-partition",
        json!({"groups": [["m1", "m2"], ["m3", "m4", "m5"]]}),
    );
    let partitioned_at = Instant::now();
    cluster
        .partition(&[minority.clone(), majority.clone()])
        .await
        .expect("partition");

    // Wait (seed: 3 s) until the majority has a leader and the minority none (a leader cut off
    // in the minority keeps its lease until it lapses).
    poll_until(ELECTION_BOUND, || async {
        !leaders(&cluster, &majority).await.is_empty()
            && leaders(&cluster, &minority).await.is_empty()
    })
    .await;
    let settled = partitioned_at.elapsed();
    let majority_has_leader = !leaders(&cluster, &majority).await.is_empty();
    assert!(majority_has_leader, "Majority partition has no leader");
    let minority_has_leader = !leaders(&cluster, &minority).await.is_empty();
    assert!(!minority_has_leader, "Minority partition elected leader");
    eprintln!(
        "raft-004: majority leads, minority leaderless {} after the partition",
        ms(settled)
    );

    // Workload: the majority keeps serving; the minority never elects and never acknowledges.
    let majority_client = client_of(&cluster, &majority, Duration::from_secs(5));
    let minority_client = client_of(&cluster, &minority, Duration::from_secs(1));
    let mut process = 0;
    for i in 0..5 {
        history
            .write(
                &mut process,
                &majority_client,
                &format!("during_partition_{i}"),
                "majority",
            )
            .await
            .unwrap_or_else(|error| panic!("the majority did not serve write {i}: {error}"));
    }
    let minority_write = history
        .write(&mut process, &minority_client, "minority_key", "minority")
        .await;
    assert!(
        minority_write.is_err(),
        "the minority acknowledged a write: {minority_write:?}"
    );
    let minority_elected = poll_until(MINORITY_WATCH, || async {
        !leaders(&cluster, &minority).await.is_empty()
    })
    .await;
    assert!(!minority_elected, "Minority partition elected leader");

    // Heal; wait for convergence (seed: sleep 2 s).
    history.nemesis("stop-partition", json!(null));
    let healed_at = Instant::now();
    cluster.heal().await.expect("heal");
    let acknowledged_up_to = max_applied(&cluster, &majority).await;
    let converged = poll_until(HEAL_BOUND, || {
        logs_agree(&cluster, &ids, acknowledged_up_to)
    })
    .await;
    eprintln!(
        "raft-004: healed; {} after the heal",
        if converged {
            format!(
                "every node agrees with one leader {}",
                ms(healed_at.elapsed())
            )
        } else {
            "no convergence".to_owned()
        }
    );
    // Should converge to a single leader, and all nodes to the same state.
    assert_eq!(
        leaders(&cluster, &ids).await.len(),
        1,
        "Multiple leaders after healing"
    );
    assert_logs_agree(&cluster, &ids).await;

    // Check: every acknowledged write is readable; the minority's write never took effect or
    // is judged by the checker (an unknown outcome).
    let client = client_of(&cluster, &ids, Duration::from_secs(5));
    for i in 0..5 {
        let (value, _) = history
            .read(100, &client, &format!("during_partition_{i}"))
            .await
            .expect("read");
        assert_eq!(value.as_deref(), Some("majority"), "during_partition_{i}");
    }
    history
        .read(100, &client, "minority_key")
        .await
        .expect("read");
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~10 s; cargo test --test seed_on_processes -- --ignored"]
async fn raft_005_committed_entries_are_never_lost() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: five processes and a leader.
    let (mut cluster, _) = start_cluster("raft-005", 5);
    let ids = cluster.ids();
    let history = History::new("raft-005", &ids);
    let leader_id = cluster
        .wait_for_leader(&[], ELECTION_BOUND)
        .await
        .expect("a leader");

    // Workload: commit twenty entries.
    let client = client_of(&cluster, &ids, Duration::from_secs(5));
    let keys: Vec<String> = (0..20).map(|i| format!("persistent_key_{i}")).collect();
    let mut process = 0;
    for key in &keys {
        history
            .write(&mut process, &client, key, &format!("value_for_{key}"))
            .await
            .unwrap_or_else(|error| panic!("write {key}: {error}"));
    }
    // Wait for commit (seed: sleep 1 s): every node applies every entry.
    let acknowledged_up_to = max_applied(&cluster, &ids).await;
    let applied = poll_until(REPLICATION_BOUND, || {
        logs_agree(&cluster, &ids, acknowledged_up_to)
    })
    .await;
    assert!(
        applied,
        "not every node applied the entries within {REPLICATION_BOUND:?}"
    );

    // Fault: SIGKILL the leader and one follower (a majority of three survives).
    let follower = leader_id % 5 + 1;
    history.nemesis("kill", json!([node_name(leader_id), node_name(follower)]));
    let killed_at = Instant::now();
    cluster.kill(leader_id).expect("SIGKILL the leader");
    cluster.kill(follower).expect("SIGKILL a follower");

    // Wait for a new leader (seed: sleep 3 s).
    let survivors: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|&id| id != leader_id && id != follower)
        .collect();
    let new_leader_id = cluster.wait_for_leader(&survivors, ELECTION_BOUND).await;
    let failover = killed_at.elapsed();
    let new_leader_id = new_leader_id.expect("no new leader among the survivors");
    eprintln!(
        "raft-005: nodes {leader_id} and {follower} killed, node {new_leader_id} leads {} later",
        ms(failover)
    );

    // All committed keys are still present: read through the new leader (linearizable).
    for key in &keys {
        let (value, served_by) = history.read(100, &client, key).await.expect("read");
        assert!(value.is_some(), "Committed key {key} was lost");
        assert_eq!(value, Some(format!("value_for_{key}")));
        assert!(
            survivors.contains(&served_by),
            "node {served_by} was killed"
        );
    }

    // Beyond the seed: both killed nodes restart from their data directories and catch up.
    history.nemesis(
        "restart",
        json!([node_name(leader_id), node_name(follower)]),
    );
    cluster.restart(leader_id).expect("restart the old leader");
    cluster.restart(follower).expect("restart the follower");
    let caught_up = poll_until(ELECTION_BOUND, || {
        logs_agree(&cluster, &ids, acknowledged_up_to)
    })
    .await;
    assert!(
        caught_up,
        "the restarted nodes did not catch up within {ELECTION_BOUND:?}"
    );
    assert_logs_agree(&cluster, &ids).await;
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~2 s; cargo test --test seed_on_processes -- --ignored"]
async fn rep_001_writes_are_synchronously_replicated_to_the_mirror() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: one shard, a primary and a mirror (and the witness), as with_replication(1, 1).
    let (cluster, members, primary) = start_shard("rep-001").await;
    let mirror = other_replica(&members, primary);
    let history = History::for_shard("rep-001", &members);
    let client = cluster.shard_client(SHARD_CALL_TIMEOUT);
    let mut process = 0;

    // Write to primary.
    history
        .write_at(&mut process, &client, primary, "key1", "value1")
        .await
        .expect("the primary serves a write");
    // Immediately read from mirror (should be present due to sync replication).
    let value = history
        .read_at(READER, &client, mirror, "key1", Read::OwnCopy)
        .await
        .expect("the mirror's copy");
    assert_eq!(value.as_deref(), Some("value1"));

    // Beyond the seed: twenty more writes, each on the mirror's copy once acknowledged.
    for i in 0..20 {
        let (key, value) = (format!("key_{i}"), format!("value_{i}"));
        history
            .write_at(&mut process, &client, primary, &key, &value)
            .await
            .unwrap_or_else(|error| panic!("write {key}: {error}"));
        let copy = history
            .read_at(READER, &client, mirror, &key, Read::OwnCopy)
            .await
            .expect("the mirror's copy");
        assert_eq!(
            copy.as_deref(),
            Some(value.as_str()),
            "{key} is not on the mirror once acknowledged"
        );
    }
    let read = history
        .read_at(READER, &client, primary, "key1", Read::Linearizable)
        .await
        .expect("a read through the primary");
    assert_eq!(read.as_deref(), Some("value1"));
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~10 s; cargo test --test seed_on_processes -- --ignored"]
async fn rep_002_no_acknowledged_write_is_lost_when_the_primary_fails() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: one shard, a primary and a mirror (and the witness), as with_replication(1, 1).
    let (mut cluster, members, primary) = start_shard("rep-002").await;
    let mirror = other_replica(&members, primary);
    let history = History::for_shard("rep-002", &members);
    let client = cluster.shard_client(SHARD_CALL_TIMEOUT);
    let mut process = 0;

    // Write 1000 records.
    let writing = Instant::now();
    for i in 0..1000 {
        let (key, value) = (format!("key_{i}"), format!("value_{i}"));
        history
            .write_at(&mut process, &client, primary, &key, &value)
            .await
            .unwrap_or_else(|error| panic!("write {key}: {error}"));
    }
    eprintln!(
        "rep-002: 1000 writes acknowledged in {}",
        ms(writing.elapsed())
    );

    // Immediately kill primary (no delay for async replication): SIGKILL its process.
    history.nemesis("kill", json!([replica_name(primary)]));
    let killed_at = Instant::now();
    cluster
        .kill(member_process(primary))
        .expect("SIGKILL the primary");

    // Promote mirror: ask it to seek promotion until it acts as primary (the witness decides).
    history.nemesis("promote", json!([replica_name(mirror)]));
    let promoted = poll_until(SHARD_STARTUP_BOUND, || async {
        let _ = client.force_promotion(SHARD, mirror).await;
        says_primary(&client, mirror).await
    })
    .await;
    let failover = killed_at.elapsed();
    assert!(
        promoted,
        "the mirror was not promoted within {SHARD_STARTUP_BOUND:?}: {:?}",
        member_status(&client, mirror).await
    );
    let new_primary = cluster
        .wait_for_primary(SHARD, SHARD_STARTUP_BOUND)
        .await
        .expect("a primary after the promotion");
    eprintln!(
        "rep-002: primary {primary} killed, member {new_primary} primary {} later",
        ms(failover)
    );
    assert_ne!(new_primary, primary, "the killed primary is primary");

    // Verify all 1000 records present: the new primary's own copy (the seed's read), and a
    // linearizable read through it.
    for i in 0..1000 {
        let (key, expected) = (format!("key_{i}"), format!("value_{i}"));
        let value = history
            .read_at(READER, &client, new_primary, &key, Read::OwnCopy)
            .await
            .unwrap_or_else(|error| panic!("read {key}: {error}"));
        assert!(value.is_some(), "Key key_{i} missing after failover");
        assert_eq!(value.as_deref(), Some(expected.as_str()));
        let value = history
            .read_at(READER, &client, new_primary, &key, Read::Linearizable)
            .await
            .unwrap_or_else(|error| panic!("read {key} through the new primary: {error}"));
        assert_eq!(value.as_deref(), Some(expected.as_str()), "{key}");
    }

    // Beyond the seed: the new primary serves writes, and the killed primary restarts from its
    // data directory and rejoins as the mirror, catching up.
    history
        .write_at(
            &mut process,
            &client,
            new_primary,
            "after_failover",
            "written",
        )
        .await
        .expect("the new primary serves a write");
    history.nemesis("restart", json!([replica_name(primary)]));
    cluster
        .restart(member_process(primary))
        .expect("restart the old primary");
    let caught_up = poll_until(CATCH_UP_BOUND, || async {
        let copy = client.read(SHARD, primary, b"after_failover").await;
        copy.is_ok_and(|value| value.as_deref() == Some(&b"written"[..]))
    })
    .await;
    let status = member_status(&client, primary).await;
    assert!(
        caught_up,
        "the restarted member did not catch up within {CATCH_UP_BOUND:?}: {status:?}"
    );
    let status = status.expect("the restarted member answers");
    assert!(!status.is_primary, "the restarted member acts as primary");
    assert_eq!(
        status.record.primary, new_primary,
        "the restarted member follows the new primary"
    );
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~3 s; cargo test --test seed_on_processes -- --ignored"]
async fn rep_003_the_witness_gives_the_mirror_a_quorum_to_take_over() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: one shard with a witness, as with_witness(1).
    let (mut cluster, members, primary_id) = start_shard("rep-003").await;
    let mirror_id = other_replica(&members, primary_id);
    let witness_id = members.witness;
    let history = History::for_shard("rep-003", &members);
    let client = cluster.shard_client(SHARD_CALL_TIMEOUT);
    let mut process = 0;
    // Beyond the seed: a write acknowledged before the partition.
    history
        .write_at(
            &mut process,
            &client,
            primary_id,
            "before_partition",
            "acknowledged",
        )
        .await
        .expect("the primary serves a write");

    // Partition: primary isolated from mirror+witness.
    history.nemesis(
        "start-partition",
        json!({"groups": [
            [replica_name(primary_id)],
            [replica_name(mirror_id), replica_name(witness_id)],
        ]}),
    );
    let partitioned_at = Instant::now();
    cluster
        .isolate_member(primary_id)
        .await
        .expect("isolate the primary");

    // Wait for failover decision (seed: sleep 5 s; we poll at most that long). Meanwhile write
    // through both data nodes: the isolated primary acknowledges none, and the two never both
    // act as primary (the mirror is asked first).
    let deadline = partitioned_at + FAILOVER_DECISION_BOUND;
    let (mut probe, mut new_acks) = (0, 0);
    loop {
        let (mirror_says, old_says) =
            assert_not_both_primary(&client, mirror_id, primary_id, "during the partition").await;
        if (mirror_says && !old_says) || Instant::now() >= deadline {
            break;
        }
        probe += 1;
        let old_write = history
            .write_at(
                &mut process,
                &client,
                primary_id,
                "split_brain",
                &format!("old_{probe}"),
            )
            .await;
        assert!(
            old_write.is_err(),
            "the isolated primary acknowledged a write: {old_write:?}"
        );
        let new_write = history
            .write_at(
                &mut process,
                &client,
                mirror_id,
                "split_brain",
                &format!("new_{probe}"),
            )
            .await;
        new_acks += usize::from(new_write.is_ok());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let decided = partitioned_at.elapsed();

    // Mirror should be promoted (has quorum with witness).
    assert!(says_primary(&client, mirror_id).await);
    assert!(!says_primary(&client, primary_id).await);
    eprintln!(
        "rep-003: primary {primary_id} isolated; member {mirror_id} primary, seen {} later \
         ({probe} probes, {new_acks} acknowledged by the new primary)",
        ms(decided)
    );
    // Beyond the seed: while the partition lasts, the isolated old primary still refuses every
    // write and the new primary acknowledges them; the new primary has the write acknowledged
    // before the partition.
    for round in 1..=10 {
        assert_not_both_primary(&client, mirror_id, primary_id, "after the promotion").await;
        let old_write = history
            .write_at(
                &mut process,
                &client,
                primary_id,
                "split_brain",
                &format!("old_late_{round}"),
            )
            .await;
        assert!(
            old_write.is_err(),
            "the isolated primary acknowledged a write: {old_write:?}"
        );
        history
            .write_at(
                &mut process,
                &client,
                mirror_id,
                "split_brain",
                &format!("new_late_{round}"),
            )
            .await
            .expect("the new primary serves a write");
    }
    let read = history
        .read_at(
            READER,
            &client,
            mirror_id,
            "before_partition",
            Read::Linearizable,
        )
        .await
        .expect("a read through the new primary");
    assert_eq!(read.as_deref(), Some("acknowledged"));
    history
        .write_at(
            &mut process,
            &client,
            mirror_id,
            "after_failover",
            "written",
        )
        .await
        .expect("the new primary serves a write");

    // Heal network (seed: then sleep 2 s; watched: the old primary never acts as primary again,
    // and never with the new one).
    history.nemesis("stop-partition", json!(null));
    cluster.heal().await.expect("heal");
    let watch_until = Instant::now() + REP_HEAL_WATCH;
    while Instant::now() < watch_until {
        let (_, old_says) =
            assert_not_both_primary(&client, mirror_id, primary_id, "after the heal").await;
        assert!(!old_says, "the old primary acts as primary after the heal");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Old primary should recognize new primary and become follower.
    assert!(!says_primary(&client, primary_id).await);
    assert!(says_primary(&client, mirror_id).await);
    let old = member_status(&client, primary_id)
        .await
        .expect("the old primary answers");
    assert_eq!(
        old.record.primary, mirror_id,
        "the old primary follows the new epoch"
    );
    let write = history
        .write_at(&mut process, &client, primary_id, "split_brain", "stale")
        .await;
    assert!(
        matches!(write, Err(ReplicationError::NotPrimary { primary: Some(p), .. }) if p == mirror_id),
        "a deposed primary names the new one, got {write:?}"
    );

    // Check: through the new primary, every register holds its last acknowledged write.
    for (key, expected) in [
        ("before_partition", "acknowledged"),
        ("after_failover", "written"),
        ("split_brain", "new_late_10"),
    ] {
        let value = history
            .read_at(READER, &client, mirror_id, key, Read::Linearizable)
            .await
            .unwrap_or_else(|error| panic!("read {key}: {error}"));
        assert_eq!(value.as_deref(), Some(expected), "{key}");
    }
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~6 s; cargo test --test seed_on_processes -- --ignored"]
async fn rep_004_an_isolated_mirror_does_not_make_a_split_brain() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: one shard with a witness, as with_witness(1).
    let (mut cluster, members, primary_id) = start_shard("rep-004").await;
    let mirror_id = other_replica(&members, primary_id);
    let witness_id = members.witness;
    let history = History::for_shard("rep-004", &members);
    let client = cluster.shard_client(SHARD_CALL_TIMEOUT);
    let mut process = 0;
    // Beyond the seed: a write acknowledged before the partition.
    history
        .write_at(
            &mut process,
            &client,
            primary_id,
            "before_partition",
            "acknowledged",
        )
        .await
        .expect("the primary serves a write");

    // Partition: mirror isolated (no quorum).
    history.nemesis(
        "start-partition",
        json!({"groups": [
            [replica_name(primary_id), replica_name(witness_id)],
            [replica_name(mirror_id)],
        ]}),
    );
    cluster
        .isolate_member(mirror_id)
        .await
        .expect("isolate the mirror");

    // Seed: sleep 5 s. Watched for the whole 5 s while writing through both data nodes: the
    // mirror never acts as primary and acknowledges no write.
    let watch_until = Instant::now() + SPLIT_BRAIN_WATCH;
    let (mut probe, mut primary_acks) = (0, 0);
    while Instant::now() < watch_until {
        let (_, mirror_says) =
            assert_not_both_primary(&client, primary_id, mirror_id, "with the mirror isolated")
                .await;
        assert!(!mirror_says, "the isolated mirror acts as primary");
        probe += 1;
        let mirror_write = history
            .write_at(
                &mut process,
                &client,
                mirror_id,
                "key",
                &format!("mirror_{probe}"),
            )
            .await;
        assert!(
            mirror_write.is_err(),
            "the isolated mirror acknowledged a write: {mirror_write:?}"
        );
        let primary_write = history
            .write_at(
                &mut process,
                &client,
                primary_id,
                "key",
                &format!("primary_{probe}"),
            )
            .await;
        primary_acks += usize::from(primary_write.is_ok());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let record = member_status(&client, primary_id)
        .await
        .map(|status| status.record);
    eprintln!(
        "rep-004: mirror {mirror_id} isolated for {}; {probe} probes, {primary_acks} \
         acknowledged by the primary; its record {record:?}",
        ms(SPLIT_BRAIN_WATCH)
    );

    // Primary should remain active (has witness quorum).
    assert!(says_primary(&client, primary_id).await);
    // Mirror should NOT self-promote (no quorum).
    assert!(!says_primary(&client, mirror_id).await);
    // Both should accept writes from clients (the seed asserts the mirror refuses).
    let primary_write = history
        .write_at(&mut process, &client, primary_id, "key", "value1")
        .await;
    assert!(
        primary_write.is_ok(),
        "Primary cannot accept writes: {primary_write:?}"
    );
    let mirror_write = history
        .write_at(&mut process, &client, mirror_id, "key", "value2")
        .await;
    assert!(
        mirror_write.is_err(),
        "Mirror accepted write without being primary"
    );

    // Beyond the seed: heal; the mirror catches up and the primary is synchronous again.
    history.nemesis("stop-partition", json!(null));
    cluster.heal().await.expect("heal");
    let caught_up = poll_until(CATCH_UP_BOUND, || async {
        let copy = client.read(SHARD, mirror_id, b"key").await;
        let synchronous = member_status(&client, primary_id)
            .await
            .is_some_and(|status| status.is_primary && status.record.synchronous);
        synchronous && copy.is_ok_and(|value| value.as_deref() == Some(&b"value1"[..]))
    })
    .await;
    assert!(
        caught_up,
        "the mirror did not catch up within {CATCH_UP_BOUND:?}: primary {:?}, mirror {:?}",
        member_status(&client, primary_id).await,
        member_status(&client, mirror_id).await
    );
    assert!(!says_primary(&client, mirror_id).await);
    for (key, expected) in [("before_partition", "acknowledged"), ("key", "value1")] {
        let value = history
            .read_at(READER, &client, primary_id, key, Read::Linearizable)
            .await
            .unwrap_or_else(|error| panic!("read {key}: {error}"));
        assert_eq!(value.as_deref(), Some(expected), "{key}");
    }
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~2 s; cargo test --test seed_on_processes -- --ignored"]
async fn rep_005_failover_completes_within_acceptable_time() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: one shard with a witness, as with_witness(1).
    let (mut cluster, members, primary_id) = start_shard("rep-005").await;
    let mirror_id = other_replica(&members, primary_id);
    let history = History::for_shard("rep-005", &members);
    let client = cluster.shard_client(SHARD_CALL_TIMEOUT);
    let mut process = 0;
    // Beyond the seed: a write acknowledged before the kill.
    history
        .write_at(
            &mut process,
            &client,
            primary_id,
            "before_kill",
            "acknowledged",
        )
        .await
        .expect("the primary serves a write");

    let start = Instant::now();
    // Kill primary: SIGKILL its process.
    history.nemesis("kill", json!([replica_name(primary_id)]));
    cluster
        .kill(member_process(primary_id))
        .expect("SIGKILL the primary");

    // Wait for mirror promotion: until it says it is primary (the seed's has_active_primary)
    // and until it acknowledges a write (serving).
    let mut primary_after = None;
    let mut probe = 0;
    loop {
        if primary_after.is_none() && says_primary(&client, mirror_id).await {
            primary_after = Some(start.elapsed());
        }
        probe += 1;
        let write = history
            .write_at(
                &mut process,
                &client,
                mirror_id,
                "failover_probe",
                &format!("probe_{probe}"),
            )
            .await;
        if write.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        if start.elapsed() > FAILOVER_GIVE_UP {
            panic!("Failover did not complete within 30 seconds");
        }
    }
    let failover_duration = start.elapsed();
    // A promotion between the status and the write is seen only by the write.
    let primary_after = primary_after.unwrap_or(failover_duration);
    println!("Failover completed in {failover_duration:?}");
    eprintln!(
        "rep-005: primary {primary_id} killed; member {mirror_id} says primary after {}, \
         acknowledges a write after {} ({probe} probes)",
        ms(primary_after),
        ms(failover_duration)
    );
    // Failover should complete in < 10 seconds.
    assert!(
        primary_after < FAILOVER_BOUND,
        "Failover took too long: {primary_after:?}"
    );
    assert!(
        failover_duration < FAILOVER_BOUND,
        "Failover took too long: {failover_duration:?}"
    );

    // Beyond the seed: the new primary is the mirror, with the acknowledged writes.
    let new_primary = cluster
        .wait_for_primary(SHARD, SHARD_STARTUP_BOUND)
        .await
        .expect("a primary");
    assert_eq!(new_primary, mirror_id);
    for (key, expected) in [
        ("before_kill", "acknowledged".to_owned()),
        ("failover_probe", format!("probe_{probe}")),
    ] {
        let value = history
            .read_at(READER, &client, new_primary, key, Read::Linearizable)
            .await
            .unwrap_or_else(|error| panic!("read {key}: {error}"));
        assert_eq!(value.as_deref(), Some(expected.as_str()), "{key}");
    }
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~2 s; cargo test --test seed_on_processes -- --ignored"]
async fn cache_001_compute_node_cache_invalidated_on_write() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: storage_nodes(2), compute_nodes(2); table data with row 1.
    let (cluster, computes) = start_compute("cache-001", 2, 2).await;
    let history = History::for_compute("cache-001", computes.len());
    let mut writer = 0;
    history
        .sql_write(
            &mut writer,
            &computes,
            0,
            1,
            1,
            "INSERT INTO data (id, value) VALUES (1, 1)",
        )
        .await;

    // Read from compute-0 (caches data).
    assert_eq!(history.sql_read(READER, &computes, 0, 1).await, 1);
    assert!(computes[0].cache_contains(1).await.expect("cache_contains"));
    // Write via compute-1.
    history
        .sql_write(
            &mut writer,
            &computes,
            1,
            1,
            999,
            "UPDATE data SET value = 999 WHERE id = 1",
        )
        .await;
    // compute-0's cache is invalidated once the update is acknowledged, and after the seed's
    // 100 ms.
    assert!(!computes[0].cache_contains(1).await.expect("cache_contains"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!computes[0].cache_contains(1).await.expect("cache_contains"));
    // The next read fetches fresh data.
    assert_eq!(history.sql_read(READER, &computes, 0, 1).await, 999);
    stop_cluster(cluster);
    history.save_and_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~2 s; cargo test --test seed_on_processes -- --ignored"]
async fn cache_002_cache_coherent_across_all_compute_nodes() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: storage_nodes(1), compute_nodes(5); table data with row 100.
    let (cluster, computes) = start_compute("cache-002", 1, 5).await;
    let history = History::for_compute("cache-002", computes.len());
    let mut writer = 0;
    history
        .sql_write(
            &mut writer,
            &computes,
            0,
            100,
            1,
            "INSERT INTO data (id, value) VALUES (100, 1)",
        )
        .await;

    // All compute nodes read the same key (and cache it).
    for i in 0..computes.len() {
        assert_eq!(
            history.sql_read(READER + i as u64, &computes, i, 100).await,
            1
        );
        assert!(computes[i]
            .cache_contains(100)
            .await
            .expect("cache_contains"));
    }
    // Update via compute-0.
    history
        .sql_write(
            &mut writer,
            &computes,
            0,
            100,
            777,
            "UPDATE data SET value = 777 WHERE id = 100",
        )
        .await;
    // No compute node caches the row once the update is acknowledged, nor after the seed's
    // 200 ms; each reads the new value.
    for pass in [Duration::ZERO, Duration::from_millis(200)] {
        tokio::time::sleep(pass).await;
        for (i, compute) in computes.iter().enumerate() {
            assert!(
                !compute.cache_contains(100).await.expect("cache_contains"),
                "Compute-{i} cache not invalidated"
            );
        }
    }
    for i in 0..computes.len() {
        assert_eq!(
            history.sql_read(READER + i as u64, &computes, i, 100).await,
            777
        );
    }
    stop_cluster(cluster);
    history.save_and_check();
}

/// Creates the seed's transaction tables (keyed by `id`) through `compute`.
async fn create_tables(compute: &ComputeClient, tables: &[&str]) {
    let keyed: Vec<(&str, &str)> = tables.iter().map(|table| (*table, "id")).collect();
    create_tables_keyed(compute, &keyed).await;
}

/// Creates each (table, key column) through `compute`.
async fn create_tables_keyed(compute: &ComputeClient, tables: &[(&str, &str)]) {
    for (table, key) in tables {
        compute
            .create_table(table, key)
            .await
            .unwrap_or_else(|error| panic!("create table {table}: {error}"));
    }
}

/// Column `column` of the only row `sql` returns.
async fn single<T: FromSqlValue>(compute: &ComputeClient, sql: &str, column: &str) -> T {
    let result = compute.query(sql).await.expect("query");
    assert_eq!(result.rows.len(), 1, "{sql}");
    result.rows[0].get::<T>(column)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~2 s; cargo test --test seed_on_processes -- --ignored"]
async fn tx_001_cross_shard_transaction_commits_atomically() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: storage_nodes(3), compute_nodes(1).
    let (cluster, computes) = start_compute("tx-001", 3, 1).await;
    let compute = &computes[0];
    create_tables(
        compute,
        &["shard_0_table", "shard_1_table", "shard_2_table"],
    )
    .await;
    let tx = compute.begin().await.expect("begin");
    tx.execute("INSERT INTO shard_0_table (id, value) VALUES (1, 100)")
        .await
        .expect("insert");
    tx.execute("INSERT INTO shard_1_table (id, value) VALUES (2, 200)")
        .await
        .expect("insert");
    tx.execute("INSERT INTO shard_2_table (id, value) VALUES (3, 300)")
        .await
        .expect("insert");
    let shards = tx.commit().await.expect("commit");
    eprintln!("tx-001: the transaction wrote shards {shards:?}");
    assert!(shards.len() >= 2, "a cross-shard transaction: {shards:?}");
    for (table, id, value) in [
        ("shard_0_table", 1, 100),
        ("shard_1_table", 2, 200),
        ("shard_2_table", 3, 300),
    ] {
        let sql = format!("SELECT value FROM {table} WHERE id = {id}");
        assert_eq!(single::<i64>(compute, &sql, "value").await, value);
    }
    stop_cluster(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~2 s; cargo test --test seed_on_processes -- --ignored"]
async fn tx_002_cross_shard_transaction_rolls_back_atomically() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: storage_nodes(3), compute_nodes(1).
    let (cluster, computes) = start_compute("tx-002", 3, 1).await;
    let compute = &computes[0];
    create_tables(compute, &["shard_0_table", "shard_1_table"]).await;
    let tx = compute.begin().await.expect("begin");
    tx.execute("INSERT INTO shard_0_table (id, value) VALUES (10, 1000)")
        .await
        .expect("insert");
    tx.execute("INSERT INTO shard_1_table (id, value) VALUES (20, 2000)")
        .await
        .expect("insert");
    tx.rollback().await.expect("rollback");
    for (table, id) in [("shard_0_table", 10), ("shard_1_table", 20)] {
        let sql = format!("SELECT COUNT(*) as cnt FROM {table} WHERE id = {id}");
        let result = compute.query(&sql).await.expect("count");
        assert_eq!(result.rows[0].get::<i64>("cnt"), 0, "{sql}");
    }
    stop_cluster(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~2 s; cargo test --test seed_on_processes -- --ignored"]
async fn tx_003_read_committed_isolation_level() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: `TestCluster::new_test()`: three shards and two compute nodes.
    let (cluster, computes) = start_compute("tx-003", 3, 2).await;
    create_tables(&computes[0], &["test"]).await;
    // TX1: begin and write (uncommitted).
    let tx1 = computes[0].begin().await.expect("begin");
    tx1.execute("INSERT INTO test (id, value) VALUES (1, 100)")
        .await
        .expect("insert");
    // TX2 does not see the uncommitted write.
    let tx2 = computes[1].begin().await.expect("begin");
    let result = tx2
        .query("SELECT value FROM test WHERE id = 1")
        .await
        .expect("read");
    assert_eq!(result.rows.len(), 0);
    // TX1 commits; TX2's next query sees the committed write.
    tx1.commit().await.expect("commit");
    let result = tx2
        .query("SELECT value FROM test WHERE id = 1")
        .await
        .expect("read");
    assert_eq!(result.rows.len(), 1);
    assert_eq!(result.rows[0].get::<i64>("value"), 100);
    tx2.commit().await.expect("commit");
    stop_cluster(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~10 s; cargo test --test seed_on_processes -- --ignored"]
async fn shard_001_consistent_hashing_distributes_data_evenly() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: three storage nodes (replicated shards) and table users keyed by user_id. The
    // seed asks the metadata service where each key goes; here 10,000 rows are inserted
    // through a compute node and each shard's primary counts the rows it holds.
    let (cluster, computes) = start_compute("shard-001", 3, 1).await;
    let compute = &computes[0];
    create_tables_keyed(compute, &[("users", "user_id")]).await;
    let inserts: Vec<_> = (0..8i64)
        .map(|worker| {
            let compute = compute.clone();
            tokio::spawn(async move {
                for batch in (0..10_000i64)
                    .filter(|i| i % 8 == worker)
                    .collect::<Vec<_>>()
                    .chunks(50)
                {
                    let rows: Vec<String> =
                        batch.iter().map(|i| format!("({i}, 'user_{i}')")).collect();
                    let sql = format!(
                        "INSERT INTO users (user_id, name) VALUES {}",
                        rows.join(", ")
                    );
                    compute.execute(&sql).await.expect("insert");
                }
            })
        })
        .collect();
    for insert in inserts {
        insert.await.expect("inserting worker");
    }
    let client = cluster.shard_client(SHARD_CALL_TIMEOUT);
    let mut distribution = BTreeMap::new();
    for shard in 0..3 {
        let primary = cluster
            .wait_for_primary(shard, SHARD_STARTUP_BOUND)
            .await
            .expect("a primary");
        let status = client.status(shard, primary).await.expect("status");
        distribution.insert(shard, status.keys.expect("a data node counts its keys"));
    }
    eprintln!("shard-001: rows per shard {distribution:?}");
    assert_eq!(
        distribution.values().sum::<usize>(),
        10_000,
        "rows lost or doubled"
    );
    let ideal = 10_000 / 3;
    for (shard, count) in distribution {
        let deviation = ((count as f64 - ideal as f64) / ideal as f64).abs();
        assert!(
            deviation < 0.1,
            "Shard {shard} has {count} items ({}% deviation)",
            deviation * 100.0
        );
    }
    assert_eq!(
        single::<String>(
            compute,
            "SELECT name FROM users WHERE user_id = 9999",
            "name"
        )
        .await,
        "user_9999"
    );
    stop_cluster(cluster);
}

/// The bound on adding a shard and moving its rows (the seed waits 10 s after `add_node`).
const REBALANCE_BOUND: Duration = Duration::from_secs(60);

/// Inserts rows `ids` into `table` as `(id, value)` through `compute`, from eight concurrent
/// workers, `batch` rows per statement (a row is one compare-and-set either way).
async fn insert_rows(
    compute: &ComputeClient,
    table: &str,
    ids: std::ops::Range<i64>,
    batch: usize,
    value: fn(i64) -> String,
) {
    let workers: Vec<_> = (0..8i64)
        .map(|worker| {
            let compute = compute.clone();
            let table = table.to_string();
            let ids: Vec<i64> = ids.clone().filter(|i| i % 8 == worker).collect();
            tokio::spawn(async move {
                for chunk in ids.chunks(batch) {
                    let rows: Vec<String> = chunk
                        .iter()
                        .map(|&i| format!("({i}, {})", value(i)))
                        .collect();
                    let sql = format!("INSERT INTO {table} (id, value) VALUES {}", rows.join(", "));
                    compute
                        .execute(&sql)
                        .await
                        .unwrap_or_else(|error| panic!("{sql:.60}...: {error}"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("inserting worker");
    }
}

/// Rows per shard, as each shard's primary counts them (the seed's `get_data_distribution`).
async fn data_distribution(cluster: &LocalCluster) -> BTreeMap<usize, usize> {
    let client = cluster.shard_client(SHARD_CALL_TIMEOUT);
    let mut distribution = BTreeMap::new();
    for shard in 0..cluster.shard_count() {
        let primary = cluster
            .wait_for_primary(shard, SHARD_STARTUP_BOUND)
            .await
            .expect("a primary");
        let status = client.status(shard, primary).await.expect("status");
        distribution.insert(shard, status.keys.expect("a data node counts its keys"));
    }
    distribution
}

/// Reads every row of `ids` in `table` through `compute` (eight concurrent readers) and
/// returns the ids whose row is missing or holds another value than `value(id)`.
async fn wrong_rows(
    compute: &ComputeClient,
    table: &str,
    ids: Vec<i64>,
    value: fn(i64) -> i64,
) -> Vec<i64> {
    let readers: Vec<_> = (0..8usize)
        .map(|reader| {
            let compute = compute.clone();
            let table = table.to_string();
            let ids: Vec<i64> = ids.iter().copied().skip(reader).step_by(8).collect();
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                for id in ids {
                    let sql = format!("SELECT value FROM {table} WHERE id = {id}");
                    let result = compute.query(&sql).await.expect("query");
                    let found = result.rows.first().map(|row| row.get::<i64>("value"));
                    if found != Some(value(id)) {
                        wrong.push(id);
                    }
                }
                wrong
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for reader in readers {
        wrong.extend(reader.await.expect("reading worker"));
    }
    wrong.sort_unstable();
    wrong
}

fn print_rebalance(test: &str, report: &helios_cluster::process::RebalanceReport) {
    eprintln!("{test}: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~60 s; cargo test --test seed_on_processes -- --ignored"]
async fn shard_002_adding_node_triggers_rebalancing() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    // Setup: three replicated shards; table data keyed by id, with the seed's 100,000 rows.
    let (mut cluster, computes) = start_compute("shard-002", 3, 1).await;
    let compute = &computes[0];
    insert_rows(compute, "data", 0..100_000, 50, |i| (i * 2).to_string()).await;
    let initial = data_distribution(&cluster).await;
    // Add a 4th shard (two data nodes and a witness, as processes); add_shard returns once
    // its rows have moved, which stands for the seed's 10 s wait.
    let (new_shard, report) = cluster
        .add_shard(REBALANCE_BOUND)
        .await
        .expect("add a shard and rebalance");
    print_rebalance("shard-002", &report);
    let final_dist = data_distribution(&cluster).await;
    eprintln!("shard-002: rows per shard before {initial:?}, after {final_dist:?}");
    assert!(
        final_dist[&new_shard] > 0,
        "New node has no data after rebalancing"
    );
    let initial_total: usize = initial.values().sum();
    let final_total: usize = final_dist.values().sum();
    assert_eq!(initial_total, 100_000);
    assert_eq!(initial_total, final_total, "Data lost during rebalancing");
    let final_ideal = 100_000 / 4;
    for (shard, count) in &final_dist {
        let deviation = ((*count as f64 - final_ideal as f64) / final_ideal as f64).abs();
        assert!(
            deviation < 0.15,
            "Node {shard} has {count} items after rebalancing ({:.1}% deviation)",
            deviation * 100.0
        );
    }
    // Beyond the seed: a sample of rows, some moved, reads back with its value.
    let sample: Vec<i64> = (0..100_000).step_by(97).collect();
    assert_eq!(
        wrong_rows(compute, "data", sample, |i| i * 2).await,
        Vec::<i64>::new()
    );
    stop_cluster(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~40 s; cargo test --test seed_on_processes -- --ignored"]
async fn shard_003_no_data_lost_during_rebalancing() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (mut cluster, computes) = start_compute("shard-003", 3, 2).await;
    create_tables(&computes[0], &["critical"]).await;
    // The seed's column `data` holds 'value_<id>'; here column `value` holds the id, which
    // the read-back compares.
    insert_rows(&computes[0], "critical", 0..50_000, 50, |i| i.to_string()).await;
    // Start rebalancing by adding a shard, and meanwhile read 100 random keys every 500 ms,
    // 20 times, through the other compute node (the seed's continuous verification).
    let sampler = {
        let compute = computes[1].clone();
        async move {
            let mut missing = Vec::new();
            let mut reads = 0;
            for round in 0..20u64 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let keys: Vec<i64> = (0..100u64)
                    .map(|i| {
                        ((round * 100 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 50_000) as i64
                    })
                    .collect();
                reads += keys.len();
                missing.extend(wrong_rows(&compute, "critical", keys, |i| i).await);
            }
            (reads, missing)
        }
    };
    let (added, (reads, missing)) = tokio::join!(cluster.add_shard(REBALANCE_BOUND), sampler);
    let (_, report) = added.expect("add a shard and rebalance");
    print_rebalance("shard-003", &report);
    if !missing.is_empty() {
        let again = wrong_rows(&computes[1], "critical", missing.clone(), |i| i).await;
        let other = wrong_rows(&computes[0], "critical", missing.clone(), |i| i).await;
        panic!(
            "Keys {missing:?} missing during rebalancing; after it, still wrong through \
             compute 1: {again:?}, through compute 0: {other:?}"
        );
    }
    // Wait for rebalancing to complete (add_shard returned), then every key is there.
    let all = wrong_rows(&computes[0], "critical", (0..50_000).collect(), |i| i).await;
    assert!(
        all.is_empty(),
        "{} keys lost after rebalancing: {:?}",
        all.len(),
        &all[..all.len().min(20)]
    );
    let total: usize = data_distribution(&cluster).await.values().sum();
    assert_eq!(total, 50_000, "rows lost or left twice");
    eprintln!("shard-003: {reads} sampled reads during the rebalance, none missing");
    stop_cluster(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real processes, ~60 s; cargo test --test seed_on_processes -- --ignored"]
async fn shard_004_rebalancing_with_concurrent_writes() {
    let _serial = ONE_CLUSTER_AT_A_TIME.lock().await;
    let (mut cluster, computes) = start_compute("shard-004", 3, 2).await;
    create_tables(&computes[0], &["concurrent"]).await;
    // A background writer inserts rows one per statement (eight at a time), through compute
    // node 0, for as long as the rebalance takes and more.
    const ROWS: i64 = 40_000;
    let writer = {
        let compute = computes[0].clone();
        tokio::spawn(async move {
            insert_rows(&compute, "concurrent", 0..ROWS, 1, |i| (i * 3).to_string()).await;
        })
    };
    // Trigger rebalancing mid-writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, report) = cluster
        .add_shard(REBALANCE_BOUND)
        .await
        .expect("add a shard and rebalance");
    print_rebalance("shard-004", &report);
    let writer_was_running = !writer.is_finished();
    writer.await.expect("the writer's inserts all succeed");
    assert!(
        writer_was_running,
        "the writer ended before the rebalance did: nothing was concurrent"
    );
    // Every write is present, read through the other compute node, and counted once.
    let wrong = wrong_rows(&computes[1], "concurrent", (0..ROWS).collect(), |i| i * 3).await;
    assert!(
        wrong.is_empty(),
        "{} writes lost during rebalancing: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    let distribution = data_distribution(&cluster).await;
    eprintln!("shard-004: rows per shard {distribution:?}");
    assert_eq!(
        distribution.values().sum::<usize>(),
        ROWS as usize,
        "Writes lost during rebalancing"
    );
    stop_cluster(cluster);
}
