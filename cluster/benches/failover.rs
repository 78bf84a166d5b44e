//! Replication failover benchmark: the time from a fault on a shard's primary until the first
//! write acknowledged by the new primary, measured by a client that writes through the routed
//! client API in a loop.
//!
//! `cargo bench -p helios-cluster --bench failover` prints p50/p99/max for killing the primary
//! and for isolating it. Trials per figure: `HELIOS_BENCH_TRIALS` (default 30, at least 20).
//! Goal: p99 under 1 s (the seed's floor is 10 s).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use helios_cluster::replication::{ReplicationCluster, ReplicationOptions};

/// The longest one trial may wait for the first acknowledged write.
const TRIAL_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillPrimary,
    IsolatePrimary,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One trial: returns the time from the fault to the first write acknowledged by a node other
/// than the old primary, or `None` if none came within `TRIAL_LIMIT`.
async fn trial(fault: Fault, seed: u64) -> Option<Duration> {
    let cluster = ReplicationCluster::with_options(ReplicationOptions {
        seed,
        request_timeout: Duration::from_millis(500),
        ..ReplicationOptions::default()
    })
    .await;
    for i in 0..20u32 {
        cluster
            .write(0, &i.to_be_bytes(), b"warm-up")
            .await
            .expect("warm-up write on a healthy cluster");
    }
    let old = cluster.primary_id(0);
    let start = Instant::now();
    match fault {
        Fault::KillPrimary => cluster.kill_node(old).await,
        Fault::IsolatePrimary => cluster.isolate(old).await,
    }
    let mut attempt = 0u32;
    while start.elapsed() < TRIAL_LIMIT {
        attempt += 1;
        let key = format!("after-{attempt}").into_bytes();
        if let Ok(served) = cluster.write(0, &key, b"v").await {
            if served.node != old {
                let elapsed = start.elapsed();
                cluster.validate();
                return Some(elapsed);
            }
        }
    }
    None
}

fn main() {
    let trials: u64 = std::env::var("HELIOS_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .max(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("replication failover, {trials} trials per fault (seeds 0..{trials})");
    for fault in [Fault::KillPrimary, Fault::IsolatePrimary] {
        let mut latencies = histogram();
        let mut failures = 0;
        for seed in 0..trials {
            match runtime.block_on(trial(fault, seed)) {
                Some(elapsed) => latencies
                    .record((elapsed.as_micros() as u64).clamp(1, 60_000_000))
                    .expect("value within bounds"),
                None => failures += 1,
            }
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        println!(
            "{:<48} n={:<4} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms  (goal p99 < 1000 ms){}",
            format!("{fault:?}: fault -> first ack on new primary"),
            latencies.len(),
            ms(latencies.value_at_quantile(0.5)),
            ms(latencies.value_at_quantile(0.99)),
            ms(latencies.max()),
            if failures > 0 {
                format!("  FAILED TRIALS: {failures}")
            } else {
                String::new()
            },
        );
    }
}
