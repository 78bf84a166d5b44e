//! Raft metadata benchmarks: election, fail-over and commit latency over the simulated network.
//!
//! `cargo bench -p helios-cluster --bench raft` prints p50/p99/max per figure. Trials per
//! figure: `HELIOS_BENCH_TRIALS` (default 30, at least 20).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use helios_cluster::{ClusterOptions, NodeId, NodeSettings, RaftTestCluster};

/// The longest any one trial may wait for what it measures.
const TRIAL_LIMIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(1);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
    histogram
        .record(micros)
        .expect("value within histogram bounds");
}

fn print(name: &str, goal: &str, histogram: &Histogram<u64>, failures: usize) {
    let ms = |micros: u64| micros as f64 / 1000.0;
    println!(
        "{name:<48} n={:<5} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms  (goal {goal}){}",
        histogram.len(),
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
        if failures > 0 {
            format!("  FAILED TRIALS: {failures}")
        } else {
            String::new()
        },
    );
}

/// The timings under test: the defaults, and the slower profile they replaced (for the ratio).
#[derive(Clone, Copy, Debug)]
enum Profile {
    Default,
    Conservative,
}

impl Profile {
    fn settings(self) -> NodeSettings {
        match self {
            Profile::Default => NodeSettings::default(),
            Profile::Conservative => NodeSettings {
                heartbeat_interval: Duration::from_millis(50),
                election_timeout_min: Duration::from_millis(150),
                election_timeout_max: Duration::from_millis(300),
                ..NodeSettings::default()
            },
        }
    }

    fn describe(self) -> String {
        let s = self.settings();
        format!(
            "{self:?} timings: heartbeat {:?}, election timeout {:?}..{:?}",
            s.heartbeat_interval, s.election_timeout_min, s.election_timeout_max
        )
    }
}

async fn cluster(size: usize, seed: u64, profile: Profile) -> RaftTestCluster {
    RaftTestCluster::with_options(ClusterOptions {
        size,
        seed,
        node_settings: profile.settings(),
        ..ClusterOptions::default()
    })
    .await
}

async fn poll_leader(cluster: &RaftTestCluster, excluded: Option<NodeId>) -> Option<NodeId> {
    let deadline = Instant::now() + TRIAL_LIMIT;
    while Instant::now() < deadline {
        let leader = cluster
            .nodes
            .iter()
            .find(|n| Some(n.id()) != excluded && n.is_leader())
            .map(|n| n.id());
        if leader.is_some() {
            return leader;
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

async fn first_leader_after_cold_start(trials: u64, profile: Profile) {
    let (mut h, mut failures) = (histogram(), 0);
    for seed in 0..trials {
        let started = Instant::now();
        let cluster = cluster(3, seed, profile).await;
        match poll_leader(&cluster, None).await {
            Some(_) => record(&mut h, started.elapsed()),
            None => failures += 1,
        }
        cluster.shutdown().await;
    }
    print(
        "first leader after cold start (3 nodes)",
        "< 300 ms",
        &h,
        failures,
    );
}

async fn kill_leader_to_new_leader_commit(trials: u64, profile: Profile) {
    let (mut h, mut failures) = (histogram(), 0);
    for seed in 0..trials {
        let cluster = cluster(5, seed, profile).await;
        let Some(old) = poll_leader(&cluster, None).await else {
            failures += 1;
            continue;
        };
        let started = Instant::now();
        cluster.kill_node(old).await;
        let mut committed = false;
        while !committed && started.elapsed() < TRIAL_LIMIT {
            let Some(new) = poll_leader(&cluster, Some(old)).await else {
                break;
            };
            committed = cluster.node(new).propose_change("k", "v").await.is_ok();
        }
        if committed {
            record(&mut h, started.elapsed());
        } else {
            failures += 1;
        }
        cluster.shutdown().await;
    }
    print(
        "kill leader -> new leader commits (5 nodes)",
        "< 500 ms",
        &h,
        failures,
    );
}

async fn isolate_leader_to_new_majority_leader(trials: u64, profile: Profile) {
    let (mut h, mut failures) = (histogram(), 0);
    for seed in 0..trials {
        let cluster = cluster(5, seed, profile).await;
        let Some(old) = poll_leader(&cluster, None).await else {
            failures += 1;
            continue;
        };
        let started = Instant::now();
        cluster.isolate(old).await;
        match poll_leader(&cluster, Some(old)).await {
            Some(_) => record(&mut h, started.elapsed()),
            None => failures += 1,
        }
        cluster.shutdown().await;
    }
    print(
        "isolate leader -> new leader in majority (5 nodes)",
        "< 500 ms",
        &h,
        failures,
    );
}

async fn commit_latency(trials: u64, profile: Profile) {
    let (mut h, mut failures) = (histogram(), 0);
    let cluster = cluster(3, 0, profile).await;
    let Some(leader) = poll_leader(&cluster, None).await else {
        print(
            "commit latency of one proposal (3 nodes)",
            "p50 < 2 ms",
            &h,
            1,
        );
        return;
    };
    let proposals = trials * 50;
    for i in 0..proposals {
        let started = Instant::now();
        match cluster
            .node(leader)
            .propose_change(&format!("k{}", i % 100), "v")
            .await
        {
            Ok(()) => record(&mut h, started.elapsed()),
            Err(_) => failures += 1,
        }
    }
    cluster.shutdown().await;
    print(
        "commit latency of one proposal (3 nodes)",
        "p50 < 2 ms",
        &h,
        failures,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; there are no other arguments to honour.
    let trials: u64 = std::env::var("HELIOS_BENCH_TRIALS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(30)
        .max(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    println!("helios-cluster raft benchmarks: {trials} trials each");
    runtime.block_on(async {
        for profile in [Profile::Default, Profile::Conservative] {
            println!("{}", profile.describe());
            first_leader_after_cold_start(trials, profile).await;
            kill_leader_to_new_leader_commit(trials, profile).await;
            isolate_leader_to_new_majority_leader(trials, profile).await;
            commit_latency(trials, profile).await;
        }
    });
}
