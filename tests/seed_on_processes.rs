//! Seed section 1, "Raft Consensus Correctness" (RAFT-001 to RAFT-005), against a real metadata
//! group: `helios node --role metadata` processes on loopback ([`LocalCluster`]), reached over
//! TCP through [`MetadataClient`], with real faults (SIGKILL and restart from the data
//! directory, partitions through each node's peer filter).
//!
//! Ignored by default (each scenario starts real processes, 5-15 s each):
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

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use helios_cluster::process::{
    ClientError, ClientOptions, ClientReply, ClientRequest, LocalCluster, LocalClusterSpec,
    MetadataClient, NodeStatus, Ports,
};
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
/// The bound on building the binary.
const BUILD_BOUND: Duration = Duration::from_secs(40 * 60);
/// How long the nodes may take to stop at the end (SIGTERM, then SIGKILL).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// One cluster at a time: the election timings measure Raft, not five clusters on two cores.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the clusters and histories go.
fn runs_dir() -> PathBuf {
    repository().join("target/seed-on-processes")
}

/// Runs `command` to completion within `bound`; panics with its name if it fails.
fn run_bounded(mut command: Command, what: &str, bound: Duration) {
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{what}: cannot start: {error}"));
    let deadline = Instant::now() + bound;
    loop {
        match child.try_wait().expect("wait for a child") {
            Some(status) => {
                assert!(status.success(), "{what}: {status}");
                return;
            }
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: not done within {bound:?}");
            }
        }
    }
}

/// The `helios` binary the nodes run: `HELIOS_BIN`, else a release build (built once).
fn helios_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("HELIOS_BIN") {
            return PathBuf::from(path);
        }
        // This test runs from target/<profile>/deps/.
        let exe = std::env::current_exe().expect("the test's own path");
        let target_dir = exe
            .ancestors()
            .nth(3)
            .expect("target/<profile>/deps/<test>");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build
            .current_dir(repository())
            .args(["build", "--release", "-p", "helios"]);
        run_bounded(build, "cargo build --release -p helios", BUILD_BOUND);
        target_dir.join("release").join("helios")
    })
}

/// Starts `n_nodes` metadata processes for `test` in a fresh directory. Dropping the cluster
/// SIGKILLs them, so a failed assertion leaves no process behind.
fn start_cluster(test: &str, n_nodes: usize) -> (LocalCluster, Instant) {
    let dir = runs_dir().join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = LocalClusterSpec {
        binary: helios_binary().to_path_buf(),
        dir,
        n_nodes,
        n_shards: 0,
        ports: Ports::Free,
        node_args: Vec::new(),
        rust_log: Some("info,openraft=warn".to_owned()),
        exit_with_parent: true,
    };
    let started = Instant::now();
    let cluster = LocalCluster::start(spec).expect("start the node processes");
    eprintln!("{test}: {n_nodes} nodes in {}", cluster.dir().display());
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
