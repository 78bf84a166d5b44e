//! The bulk-copy phase of a rebalance between two processes over loopback TCP, beside the same
//! copy between two nodes in one process: `cargo bench -p helios-cluster --bench
//! rebalance_loopback`.
//!
//! What it measures: the bulk copy, which carries every moved byte of a move: for each copy
//! task of the join's `MovePlan`, export a batch from the source and import it into the target,
//! batch after batch, exactly the steps of the rebalancer's `copy_batch` with
//! `MoveLimits::default().copy_batch_rows` rows per batch. It does not measure the catch-up and
//! the switch: in today's cluster the change log and the freeze live with the source, and those
//! phases run in-process (they replay only the writes made during the copy, a small fraction of
//! the bytes).
//!
//! How: the bench runs itself again as a child process (`HELIOS_LOOPBACK_CHILD=1`) that hosts a
//! real `StorageNode` (in-memory engine) behind `serve_storage_node` on 127.0.0.1:0 and prints
//! its port. The parent loads 1 GiB of 16 KiB rows into a local node, plans a second node's join
//! on the consistent-hash ring (it takes about half the key space, over 512 MB), and copies that
//! plan to the child over TCP, then verifies the child's row count and a sample of its rows.
//! The in-process figure copies the same plan into a second local node. Rounds alternate the
//! two, each with a fresh target (a new child process for loopback); MB is 10^6 bytes of keys
//! and values, as the rebalancer counts them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use helios_cluster::net::tcp::FrameOptions;
use helios_cluster::sharding::{HashRing, MoveLimits, MovePlan, RangeSet, StorageNodeId};
use helios_cluster::storage::remote::{serve_storage_node, RemoteStorageNode};
use helios_cluster::storage::{key_hash, stored_key, Entry, StorageNode};
use helios_cluster::{MetadataService, Row, SqlValue};

/// Selects child mode.
const CHILD_ENV: &str = "HELIOS_LOOPBACK_CHILD";
/// Overrides the number of rounds.
const ROUNDS_ENV: &str = "HELIOS_LOOPBACK_ROUNDS";
/// The child's one line of output before it serves: this prefix, then the port.
const PORT_LINE_PREFIX: &str = "helios-loopback-port ";
/// The child serves at most this long if its parent never closes its stdin.
const CHILD_LIFETIME: Duration = Duration::from_secs(1800);
/// Bound on the child's start (its one-node metadata group elects a leader first).
const CHILD_START_BOUND: Duration = Duration::from_secs(60);

const TABLE: &str = "big";
const ROW_BYTES: usize = 16 * 1024;
const DATA_BYTES: usize = 1 << 30;
const SOURCE: (StorageNodeId, &str) = (StorageNodeId(0), "node_0");
const TARGET: (StorageNodeId, &str) = (StorageNodeId(1), "node_1");

fn bytes_of(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
}

/// The target of a copy: a node in this process, or one in the child over TCP.
enum Target {
    Local(StorageNode),
    Remote(Box<RemoteStorageNode>),
}

impl Target {
    async fn import(&self, table: &str, entries: &[Entry]) {
        match self {
            Self::Local(node) => node.import(table, entries).expect("local import"),
            Self::Remote(node) => node.import(table, entries).await.expect("remote import"),
        }
    }
}

/// What one copy moved, and how long it took.
struct Copied {
    rows: u64,
    bytes: u64,
    elapsed: Duration,
    /// Per batch (export and import), in microseconds.
    batch_latencies: Histogram<u64>,
}

impl Copied {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// The bulk copy of `plan`: for each task, export a batch of `limit` rows after the last key
/// copied and import it into the target, until a batch comes back short (as `copy_batch` does).
async fn copy(source: &StorageNode, target: &Target, plan: &MovePlan, limit: usize) -> Copied {
    let mut batch_latencies = Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut rows, mut bytes) = (0u64, 0u64);
    let max_batches_per_task = DATA_BYTES / ROW_BYTES / limit + 2;
    let started = Instant::now();
    for task in &plan.tasks {
        let mut after: Option<Vec<u8>> = None;
        let mut finished = false;
        for _ in 0..max_batches_per_task {
            let batch_started = Instant::now();
            let entries = source
                .export(&task.table, &task.start, &task.end, after.as_deref(), limit)
                .expect("export");
            target.import(&task.table, &entries).await;
            batch_latencies
                .record(batch_started.elapsed().as_micros().max(1) as u64)
                .expect("latency within the histogram's range");
            rows += entries.len() as u64;
            bytes += bytes_of(&entries);
            if entries.len() < limit {
                finished = true;
                break;
            }
            after = entries.last().map(|(k, _)| k.clone());
        }
        assert!(
            finished,
            "a copy task did not finish within its batch bound"
        );
    }
    Copied {
        rows,
        bytes,
        elapsed: started.elapsed(),
        batch_latencies,
    }
}

/// The child: a storage node behind TCP on a free loopback port, until stdin closes.
fn child_main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let metadata = MetadataService::new_test(1).await;
        let node = StorageNode::start(TARGET.0, TARGET.1, "127.0.0.1:0", None, metadata)
            .expect("start the target node");
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let (addr, server) = serve_storage_node(Arc::new(node), loopback)
            .await
            .expect("serve the target node");
        println!("{PORT_LINE_PREFIX}{}", addr.port());
        std::io::stdout().flush().expect("flush stdout");
        // Detached: the server serves on the runtime's workers until the process exits.
        drop(server);
    });
    // Serve (on the runtime's workers) until the parent closes our stdin or exits.
    let (closed_tx, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let _ = closed_rx.recv_timeout(CHILD_LIFETIME);
    std::process::exit(0);
}

/// Starts a child process and returns it with its node's address.
fn spawn_child() -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("own executable"))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child process");
    let stdout = child.stdout.take().expect("piped stdout");
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = line_tx.send(line);
    });
    let line = line_rx
        .recv_timeout(CHILD_START_BOUND)
        .expect("the child prints its port in time");
    let port: u16 = line
        .trim()
        .strip_prefix(PORT_LINE_PREFIX)
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from the child: {line:?}"));
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Closes the child's stdin and waits (bounded) for it to exit; kills it past the bound.
fn stop_child(mut child: Child) {
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Loads `DATA_BYTES` of rows (the same stored bytes as the cluster's insert path writes) and
/// returns how many rows it loaded.
fn load(source: &StorageNode) -> usize {
    let payload = SqlValue::Text("x".repeat(ROW_BYTES));
    let n_rows = DATA_BYTES / ROW_BYTES;
    let mut batch = Vec::with_capacity(512);
    for id in 0..n_rows as i64 {
        let key = SqlValue::Int(id);
        let row: Row = [
            ("id".to_string(), key.clone()),
            ("payload".to_string(), payload.clone()),
        ]
        .into_iter()
        .collect();
        let value = serde_json::to_vec(&row).expect("a row serializes");
        batch.push((stored_key(&key), value));
        if batch.len() == 512 {
            source.import(TABLE, &batch).expect("load");
            batch.clear();
        }
    }
    source.import(TABLE, &batch).expect("load");
    n_rows
}

fn summary(name: &str, copied: &Copied) {
    let latencies = &copied.batch_latencies;
    println!(
        "{name:<12} {:>6} rows {:>8.1} MB in {:>6.3} s = {:>7.1} MB/s   batch p50 {:>6} us  p99 {:>6} us  max {:>6} us",
        copied.rows,
        copied.bytes as f64 / 1e6,
        copied.elapsed.as_secs_f64(),
        copied.mb_per_s(),
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        latencies.max(),
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "a median of no values");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Checks the remote target: it stores exactly the moved rows, and a sample of them byte for
/// byte as the source has them.
async fn verify_remote(
    source: &StorageNode,
    remote: &RemoteStorageNode,
    plan: &MovePlan,
    expected: u64,
) {
    let bounds: Vec<_> = plan
        .tasks
        .iter()
        .map(|t| (t.start.clone(), t.end.clone()))
        .collect();
    let count = remote.count(TABLE, &bounds).await.expect("remote count");
    assert_eq!(count as u64, expected, "the child stores every moved row");
    for task in plan.tasks.iter().step_by(64) {
        let there = remote
            .export(TABLE, &task.start, &task.end, None, 8)
            .await
            .expect("remote export");
        let here = source
            .export(TABLE, &task.start, &task.end, None, 8)
            .expect("local export");
        assert_eq!(there, here, "the child's rows equal the source's");
    }
}

/// Checks the local target the same way.
fn verify_local(target: &StorageNode, plan: &MovePlan, expected: u64) {
    let mut count = 0u64;
    for task in &plan.tasks {
        let entries = target
            .export(TABLE, &task.start, &task.end, None, usize::MAX)
            .expect("local export");
        count += entries.len() as u64;
    }
    assert_eq!(count, expected, "the local target stores every moved row");
}

async fn parent() {
    let rounds: usize = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .clamp(1, 20);
    let limit = MoveLimits::default().copy_batch_rows;

    // Setup: 1 GiB of 16 KiB rows on a local node, and the plan of a second node's join.
    let metadata = MetadataService::new_test(1).await;
    let source = StorageNode::start(SOURCE.0, SOURCE.1, "127.0.0.1:0", None, metadata.clone())
        .expect("start the source node");
    let load_started = Instant::now();
    let n_rows = load(&source);
    println!(
        "loaded {n_rows} rows of {} KiB ({} MiB) in {:.1} s",
        ROW_BYTES / 1024,
        DATA_BYTES >> 20,
        load_started.elapsed().as_secs_f64()
    );
    let ring = HashRing::new([SOURCE]);
    let plan = MovePlan::new(TARGET.0, TARGET.1, &ring, 1, &[TABLE.to_string()]);
    let moving = RangeSet::new(plan.transfers.iter().map(|t| t.range));
    let expected = (0..n_rows as i64)
        .filter(|id| moving.contains(key_hash(&SqlValue::Int(*id))))
        .count() as u64;
    println!(
        "plan: {} joins and takes {expected} of {n_rows} rows ({:.1} %) in {} copy tasks, {limit} rows per batch",
        TARGET.1,
        100.0 * expected as f64 / n_rows as f64,
        plan.tasks.len(),
    );
    println!(
        "measured: the bulk copy (export -> import batches, as copy_batch); the catch-up and switch run in-process in today's cluster and are not part of this figure"
    );

    let (mut local_rates, mut loopback_rates) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // In-process: the same copy into a second local node.
        let target = StorageNode::start(TARGET.0, TARGET.1, "127.0.0.1:0", None, metadata.clone())
            .expect("start the local target");
        let target = Target::Local(target);
        let copied = copy(&source, &target, &plan, limit).await;
        let Target::Local(local) = &target else {
            unreachable!("built as local")
        };
        assert_eq!(copied.rows, expected);
        verify_local(local, &plan, expected);
        summary(&format!("in-process {round}"), &copied);
        local_rates.push(copied.mb_per_s());
        drop(target);

        // Loopback: the copy into a node in a child process, over TCP.
        let (child, addr) = spawn_child();
        let remote = RemoteStorageNode::new(addr, FrameOptions::default());
        let target = Target::Remote(Box::new(remote));
        let copied = copy(&source, &target, &plan, limit).await;
        let Target::Remote(remote) = &target else {
            unreachable!("built as remote")
        };
        assert_eq!(copied.rows, expected);
        verify_remote(&source, remote, &plan, expected).await;
        summary(&format!("loopback {round}"), &copied);
        loopback_rates.push(copied.mb_per_s());
        assert!(
            copied.bytes >= 512 * 1_000_000,
            "the benchmark must move at least 512 MB"
        );
        drop(target);
        stop_child(child);
    }

    let (local, loopback) = (median(local_rates), median(loopback_rates));
    println!(
        "bulk copy, median of {rounds}: in-process {local:.1} MB/s, loopback between processes {loopback:.1} MB/s (goal 100 MB/s), loopback/in-process = {:.2}",
        loopback / local
    );
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_main();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(parent());
}
