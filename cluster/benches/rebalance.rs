//! Rebalancing throughput (MB/s) while moving at least 512 MB in-process, and p99 write latency
//! during the move against without it: `cargo bench -p helios-cluster --bench rebalance`.
//!
//! One in-memory storage node holds 1 GiB (16 KiB rows); a second joins and takes about half.
//! A writer inserts small rows throughout and its latencies are recorded with hdrhistogram,
//! first with no move running, then during the move.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use helios_cluster::sharding::MovePhase;
use helios_cluster::{RebalanceStatus, SqlValue, StorageCluster, StorageClusterOptions};

const ROW_BYTES: usize = 16 * 1024;
const DATA_BYTES: usize = 1 << 30;

async fn timed_insert(cluster: &StorageCluster, id: i64, latencies: &mut Histogram<u64>) {
    let started = Instant::now();
    cluster
        .insert("small", vec![("id", SqlValue::Int(id))])
        .await
        .expect("insert");
    latencies
        .record(started.elapsed().as_micros() as u64)
        .expect("latency within the histogram's range");
}

fn line(name: &str, latencies: &Histogram<u64>) {
    println!(
        "{name:<22} n={:>7}  p50={:>6} us  p99={:>6} us  max={:>6} us",
        latencies.len(),
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        latencies.max()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let options = StorageClusterOptions {
        n_storage_nodes: 1,
        ..StorageClusterOptions::default()
    };
    let cluster = StorageCluster::with_options(options)
        .await
        .expect("cluster");
    cluster.create_table("big", "id").await;
    cluster.create_table("small", "id").await;

    // Setup: 1 GiB of 16 KiB rows on one node.
    let payload = "x".repeat(ROW_BYTES);
    let n_rows = DATA_BYTES / ROW_BYTES;
    let load_started = Instant::now();
    for id in 0..n_rows as i64 {
        let row = vec![
            ("id", SqlValue::Int(id)),
            ("payload", SqlValue::from(payload.as_str())),
        ];
        cluster.insert("big", row).await.expect("load");
    }
    println!(
        "loaded {} rows ({} MiB) in {:.1} s",
        n_rows,
        DATA_BYTES >> 20,
        load_started.elapsed().as_secs_f64()
    );

    // Baseline: write latency with no move.
    let mut idle = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut next_id = 0i64;
    let baseline_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < baseline_until {
        timed_insert(&cluster, next_id, &mut idle).await;
        next_id += 1;
    }

    // Move: a second node joins; the writer keeps going until the move is decided.
    let mut moving = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    cluster
        .add_node("node_1", "127.0.0.1:7001")
        .await
        .expect("join");
    let deadline = Instant::now() + Duration::from_secs(600);
    while cluster
        .rebalance_progress()
        .is_some_and(|p| !matches!(p.phase, MovePhase::Done | MovePhase::Aborted))
        && Instant::now() < deadline
    {
        timed_insert(&cluster, next_id, &mut moving).await;
        next_id += 1;
    }
    let status = cluster.wait_for_rebalancing_complete().await;
    let RebalanceStatus::Completed(progress) = status else {
        panic!("move did not complete: {status:?}");
    };
    println!(
        "rebalance: moved {} rows, {:.1} MB in {:.2} s = {:.1} MB/s (goal 300 MB/s, attempt {})",
        progress.rows_moved,
        progress.bytes_moved as f64 / 1e6,
        progress.elapsed.as_secs_f64(),
        progress.mb_per_s,
        progress.attempt
    );
    assert!(
        progress.bytes_moved >= 512 * 1_000_000,
        "the benchmark must move at least 512 MB"
    );
    line("write latency, idle", &idle);
    line("write latency, moving", &moving);
    cluster.shutdown().await;
}
