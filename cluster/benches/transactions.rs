//! Transaction throughput and latency through compute nodes:
//! `cargo bench -p helios-cluster --bench transactions`.
//!
//! Concurrent clients run read-modify-write transactions over a table of accounts on three
//! storage nodes, through two compute nodes, for a bounded time per case:
//! - single-shard: two updates (`balance + 1`, `balance - 1`) on keys owned by one storage node;
//! - cross-shard: three updates (`+1`, `+1`, `-2`) on keys owned by three different nodes;
//!
//! each without faults, and with faults: a storage node killed and restarted in a loop, and
//! compute node c1 paused and resumed in a loop. Each case prints transactions per second,
//! p50/p99 latency of the committed ones (hdrhistogram), and the failed ones by kind. After
//! each case every fault is healed, recovery settles what the faults left, and the sum of all
//! balances must still be 0: every transaction applied all of its updates or none.
//!
//! Knobs: `HELIOS_BENCH_CLIENTS` (default 16), `HELIOS_BENCH_SECONDS` per case (default 4),
//! `HELIOS_BENCH_SEED` (default 0). The default run takes well under a minute.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use helios_cluster::storage::key_hash;
use helios_cluster::{ComputeError, SqlValue, StorageNodeId, TestCluster};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Rows in the accounts table, spread over the storage nodes by the ring.
const N_ACCOUNTS: i64 = 600;
/// The longest a client waits for one transaction; past it the transaction is dropped.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest recovery may take after a case before the balance check fails.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
/// How long a killed storage node stays down, and how long it then serves, per cycle.
const STORAGE_DOWN: Duration = Duration::from_millis(300);
const STORAGE_UP: Duration = Duration::from_millis(700);
/// How long the compute node stays paused, and how long it then serves, per cycle.
const COMPUTE_PAUSED: Duration = Duration::from_millis(200);
const COMPUTE_RUNNING: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Two updates on keys of one storage node.
    SingleShard,
    /// Three updates on keys of three storage nodes.
    CrossShard,
}

/// What one case measured.
struct Figures {
    committed: Histogram<u64>,
    /// Failed transactions by kind.
    failed: BTreeMap<&'static str, u64>,
    elapsed: Duration,
    /// Faults injected: storage kills, compute pauses.
    faults: (u64, u64),
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn failure_kind(error: &ComputeError) -> &'static str {
    match error {
        ComputeError::WriteConflict { .. } => "conflict",
        ComputeError::Aborted { .. } => "aborted",
        ComputeError::NodeDown { .. } | ComputeError::Unreachable { .. } => "compute-down",
        error if error.outcome_is_unknown() => "unknown",
        _ => "storage-down",
    }
}

/// The accounts' keys, grouped by the storage node that owns them.
fn keys_by_owner(cluster: &TestCluster) -> Vec<Vec<i64>> {
    let routing = cluster.storage().routing();
    let mut owners: BTreeMap<StorageNodeId, Vec<i64>> = BTreeMap::new();
    for id in 0..N_ACCOUNTS {
        let owner = routing
            .owner(key_hash(&SqlValue::Int(id)))
            .expect("an active ring owns every key");
        owners.entry(owner).or_default().push(id);
    }
    assert!(owners.len() >= 3, "cross-shard needs 3 owners: {owners:?}");
    owners.into_values().collect()
}

/// The updates of one transaction: (key, delta), in ascending key order so that transactions
/// always wait for each other's intents in one order and never deadlock.
fn pick(shape: Shape, keys: &[Vec<i64>], rng: &mut ChaCha8Rng) -> Vec<(i64, i64)> {
    let mut updates = match shape {
        Shape::SingleShard => {
            let owner = keys.choose(rng).expect("owners");
            let two: Vec<i64> = owner.choose_multiple(rng, 2).copied().collect();
            vec![(two[0], 1), (two[1], -1)]
        }
        Shape::CrossShard => {
            let mut owners: Vec<&Vec<i64>> = keys.iter().collect();
            owners.shuffle(rng);
            let deltas = [1, 1, -2];
            owners
                .iter()
                .zip(deltas)
                .map(|(owner, delta)| (*owner.choose(rng).expect("keys"), delta))
                .collect()
        }
    };
    updates.sort_unstable();
    updates
}

async fn run_transaction(
    compute: &helios_cluster::ComputeNode,
    updates: &[(i64, i64)],
) -> Result<(), ComputeError> {
    let tx = compute.begin_transaction().await;
    for (key, delta) in updates {
        let sql = format!("UPDATE accounts SET balance = balance + {delta} WHERE id = {key}");
        if let Err(error) = tx.execute(&sql).await {
            let _ = tx.rollback().await;
            return Err(error);
        }
    }
    tx.commit().await
}

/// One client: transactions of `shape` until `stop`, through compute node `client % 2`.
async fn client(
    cluster: Arc<TestCluster>,
    keys: Arc<Vec<Vec<i64>>>,
    shape: Shape,
    client: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> (Histogram<u64>, BTreeMap<&'static str, u64>) {
    let compute = cluster.compute_nodes()[(client % 2) as usize].clone();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (client << 32));
    let (mut committed, mut failed) = (histogram(), BTreeMap::new());
    while !stop.load(Ordering::SeqCst) {
        let updates = pick(shape, &keys, &mut rng);
        let started = Instant::now();
        match tokio::time::timeout(TRANSACTION_TIMEOUT, run_transaction(&compute, &updates)).await {
            Ok(Ok(())) => {
                let micros = started.elapsed().as_micros() as u64;
                committed
                    .record(micros.clamp(1, 60_000_000))
                    .expect("latency within the histogram's range");
            }
            Ok(Err(error)) => *failed.entry(failure_kind(&error)).or_insert(0) += 1,
            Err(_) => *failed.entry("timeout").or_insert(0) += 1,
        }
    }
    (committed, failed)
}

/// Kills and restarts the storage nodes in turn until `stop`; returns the number of kills.
async fn kill_storage_in_a_loop(cluster: Arc<TestCluster>, stop: Arc<AtomicBool>) -> u64 {
    let storage = cluster.storage();
    let nodes: Vec<StorageNodeId> = storage.node_handles().iter().map(|h| h.id()).collect();
    let mut kills = 0;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(STORAGE_UP).await;
        let node = nodes[kills as usize % nodes.len()];
        storage.kill_node(node).await.expect("kill a listed node");
        kills += 1;
        tokio::time::sleep(STORAGE_DOWN).await;
        storage
            .restart_node(node)
            .await
            .expect("restart a killed node");
    }
    kills
}

/// Pauses and resumes compute node c1 until `stop`; returns the number of pauses.
async fn pause_compute_in_a_loop(cluster: Arc<TestCluster>, stop: Arc<AtomicBool>) -> u64 {
    let compute = cluster.compute_nodes()[1].clone();
    let mut pauses = 0;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(COMPUTE_RUNNING).await;
        compute.pause();
        pauses += 1;
        tokio::time::sleep(COMPUTE_PAUSED).await;
        compute.resume();
    }
    pauses
}

/// Heals every fault, lets recovery settle every intent, and checks that the balances still
/// sum to 0 (no transaction applied only part of its updates).
async fn settle_and_check(cluster: &TestCluster, case: &str) {
    let storage = cluster.storage();
    for handle in storage.node_handles() {
        let _ = storage.restart_node(handle.id()).await;
    }
    for compute in cluster.compute_nodes() {
        compute.resume();
    }
    let recoverer = &cluster.compute_nodes()[0];
    let deadline = Instant::now() + SETTLE_LIMIT;
    loop {
        let _ = recoverer.recover_transactions(Duration::ZERO).await;
        let intents: usize = storage
            .node_handles()
            .iter()
            .map(|h| storage.node(h.id()).expect("listed node").intent_count())
            .sum();
        if intents == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: {intents} intents left after {SETTLE_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = storage
        .read_all("accounts")
        .await
        .expect("read every account");
    let total: i64 = rows
        .iter()
        .map(|row| match row.get("balance") {
            Some(SqlValue::Int(balance)) => *balance,
            other => panic!("{case}: an account holds {other:?}"),
        })
        .sum();
    assert_eq!(
        total, 0,
        "{case}: a transaction applied only part of its updates"
    );
}

async fn run_case(
    shape: Shape,
    faulty: bool,
    n_clients: u64,
    duration: Duration,
    seed: u64,
) -> Figures {
    let cluster = Arc::new(
        TestCluster::builder()
            .storage_nodes(3)
            .compute_nodes(2)
            .seed(seed)
            .build()
            .await,
    );
    cluster.storage().create_table("accounts", "id").await;
    for id in 0..N_ACCOUNTS {
        cluster
            .storage()
            .insert("accounts", vec![("id", id), ("balance", 0)])
            .await
            .expect("load accounts");
    }
    let keys = Arc::new(keys_by_owner(&cluster));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..n_clients)
        .map(|i| {
            let (cluster, keys, stop) =
                (Arc::clone(&cluster), Arc::clone(&keys), Arc::clone(&stop));
            tokio::spawn(client(cluster, keys, shape, i, seed, stop))
        })
        .collect();
    let nemeses = faulty.then(|| {
        (
            tokio::spawn(kill_storage_in_a_loop(
                Arc::clone(&cluster),
                Arc::clone(&stop),
            )),
            tokio::spawn(pause_compute_in_a_loop(
                Arc::clone(&cluster),
                Arc::clone(&stop),
            )),
        )
    });
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::SeqCst);
    let (mut committed, mut failed) = (histogram(), BTreeMap::new());
    for client in clients {
        let (latencies, failures) = client.await.expect("client task");
        committed.add(latencies).expect("same histogram bounds");
        for (kind, n) in failures {
            *failed.entry(kind).or_insert(0) += n;
        }
    }
    let elapsed = started.elapsed();
    let faults = match nemeses {
        Some((storage, compute)) => (
            storage.await.expect("storage nemesis"),
            compute.await.expect("compute nemesis"),
        ),
        None => (0, 0),
    };
    let case = format!("{shape:?}, faults {faulty}");
    settle_and_check(&cluster, &case).await;
    cluster.shutdown().await;
    Figures {
        committed,
        failed,
        elapsed,
        faults,
    }
}

fn print(shape: Shape, faulty: bool, figures: &Figures) {
    let ms = |micros: u64| micros as f64 / 1000.0;
    let n_failed: u64 = figures.failed.values().sum();
    let kinds: Vec<String> = figures
        .failed
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let name = format!(
        "{}, {}",
        match shape {
            Shape::SingleShard => "single-shard (2 keys)",
            Shape::CrossShard => "cross-shard (3 nodes)",
        },
        if faulty { "faults" } else { "no faults" }
    );
    println!(
        "{name:<34} {:>7.0} tx/s  committed={:<6} p50={:>6.2} ms  p99={:>7.2} ms  \
         max={:>7.2} ms  aborts={n_failed}{}{}",
        figures.committed.len() as f64 / figures.elapsed.as_secs_f64(),
        figures.committed.len(),
        ms(figures.committed.value_at_quantile(0.5)),
        ms(figures.committed.value_at_quantile(0.99)),
        ms(figures.committed.max()),
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        },
        if faulty {
            format!(
                "  [storage kills {}, compute pauses {}]",
                figures.faults.0, figures.faults.1
            )
        } else {
            String::new()
        },
    );
}

fn main() {
    let n_clients = env_or("HELIOS_BENCH_CLIENTS", 16).max(1);
    let duration = Duration::from_secs(env_or("HELIOS_BENCH_SECONDS", 4).max(1));
    let seed = env_or("HELIOS_BENCH_SEED", 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "transactions: {n_clients} clients, {} s per case, seed {seed}, {N_ACCOUNTS} accounts \
         on 3 storage nodes, 2 compute nodes",
        duration.as_secs()
    );
    for shape in [Shape::SingleShard, Shape::CrossShard] {
        for faulty in [false, true] {
            let figures = runtime.block_on(run_case(shape, faulty, n_clients, duration, seed));
            print(shape, faulty, &figures);
        }
    }
}
