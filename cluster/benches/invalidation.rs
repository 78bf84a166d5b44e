//! Cache invalidation latency between compute nodes, in process:
//! `cargo bench -p helios-cluster --bench invalidation`.
//!
//! One client writes rows through compute node c0 while every other compute node holds those
//! rows in its cache. For each acknowledged write, the figure is the time from the
//! acknowledgement to the moment each other node has applied the invalidation (its applied seq
//! reaches the bus's seq at the acknowledgement), polled by yielding to the scheduler; a read through that node
//! could serve the stale row only before then, and the read path waits for exactly this point.
//! It also reports the read latency through the other nodes right after a write (a read that
//! waits for the invalidation, then misses the cache and fetches the row), against a read of a
//! row that no write touched (a cache hit).
//!
//! Knobs: `HELIOS_BENCH_WRITES` (default 2000), `HELIOS_BENCH_COMPUTE` nodes (default 3).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use helios_cluster::TestCluster;

/// The longest one invalidation may take before the bench gives up on it.
const APPLY_LIMIT: Duration = Duration::from_secs(2);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn line(name: &str, h: &Histogram<u64>) {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<44} n={:<6} p50={:>7.3} ms  p99={:>7.3} ms  max={:>7.3} ms",
        h.len(),
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
}

fn main() {
    let writes = env_usize("HELIOS_BENCH_WRITES", 2000);
    let n_compute = env_usize("HELIOS_BENCH_COMPUTE", 3).max(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let cluster = TestCluster::builder()
            .storage_nodes(3)
            .compute_nodes(n_compute)
            .build()
            .await;
        let nodes = cluster.compute_nodes().to_vec();
        let writer = &nodes[0];
        let readers = &nodes[1..];
        let mut applied = histogram();
        let mut miss_read = histogram();
        let mut hit_read = histogram();
        for i in 0..writes {
            let id = 1 + (i % 50) as i64;
            // Every reader caches the row first, so the write has something to invalidate.
            for reader in readers {
                reader
                    .query(&format!("SELECT value FROM data WHERE id = {id}"))
                    .await
                    .expect("warm read");
            }
            writer
                .execute(&format!("UPDATE data SET value = {i} WHERE id = {id}"))
                .await
                .expect("write");
            let acked = Instant::now();
            let target = cluster.storage().invalidations().published_seq();
            for reader in readers {
                while reader.applied_invalidation_seq() < target {
                    assert!(acked.elapsed() < APPLY_LIMIT, "invalidation not applied");
                    // Yield rather than sleep: tokio's timer ticks in milliseconds.
                    tokio::task::yield_now().await;
                }
                applied
                    .record(acked.elapsed().as_micros().max(1) as u64)
                    .expect("in range");
            }
            // A read right after the write: it must miss the cache and see the new value.
            let started = Instant::now();
            let result = readers[0]
                .query(&format!("SELECT value FROM data WHERE id = {id}"))
                .await
                .expect("read after write");
            miss_read
                .record(started.elapsed().as_micros().max(1) as u64)
                .expect("in range");
            let value = &result.rows[0].columns[0].1;
            assert_eq!(value.to_string(), i.to_string(), "stale read after write");
            // A row no write touches stays cached: a hit.
            let started = Instant::now();
            readers[0]
                .query("SELECT value FROM data WHERE id = 100")
                .await
                .expect("hit read");
            hit_read
                .record(started.elapsed().as_micros().max(1) as u64)
                .expect("in range");
        }
        println!(
            "invalidation: {writes} writes through c0, {} other compute nodes, 3 storage nodes",
            readers.len()
        );
        line("ack -> applied on each other node", &applied);
        line("read after write (waits, misses, fetches)", &miss_read);
        line("read of an untouched row (cache hit)", &hit_read);
        cluster.shutdown().await;
    });
}
