//! The chaos suite: the register workload through a real metadata cluster under scripted faults,
//! each scenario first against `helios node` processes on loopback, then against the same five
//! nodes in Docker containers when a Docker engine answers; and the register workload through
//! replicated shards of data nodes and witnesses (a primary isolated during writes, pauses of
//! the witness, a rolling restart of every member), likewise first against member processes,
//! then against member containers (the shard services of `docker/docker-compose.yml`: kills,
//! restarts and pauses by Docker, isolations through the members' peer filters on both). Every
//! run is recorded and checked: the checker must say `valid`, every key must be served after
//! the heal, and the recovery time (RTO, as the checker's timing report defines it) of every
//! fault must stay under the seed's fail-over floor, [`RTO_FLOOR_MS`]. Each RTO is also printed
//! against the tighter goal, [`RTO_GOAL_MS`], which this 2-core CI machine usually but not
//! always meets: a leader that misses its lease for a moment under load refuses a read seconds
//! after a fault, and the checker charges that refusal to the fault before it (seen once: 7.7 s
//! after a kill whose recovery took 0.5 s). When the Docker half of a scenario cannot run, the
//! scenario says so and why ("the Docker half was SKIPPED: ...").
//!
//! Ignored by default (each scenario takes 25-60 s per target and starts real processes):
//!
//! ```sh
//! cargo test --test chaos -- --ignored --nocapture
//! ```
//!
//! Processes need a release `helios` binary, which the suite builds (`cargo build --release -p
//! helios`, a no-op when it is fresh) unless `HELIOS_BIN` names one (the static build of the
//! image will do). Docker needs the image `helios:local`, which the suite builds with
//! `docker/build-image.sh` (a static release build, then an image FROM scratch) unless
//! `HELIOS_CHAOS_SKIP_IMAGE_BUILD` is set; `HELIOS_CHAOS_NO_DOCKER` skips the Docker half. Runs
//! are kept in `target/chaos-runs/<scenario>-<target>/` (or `$HELIOS_CHAOS_STORE`).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::{helios_binary, repository, run_bounded, BUILD_BOUND};

use helios_checker::check::{check_file, CheckOptions, Report};
use helios_checker::Verdict;
use helios_cluster::process::{
    docker_available, pick_free_ports, ComputeClient, DockerCluster, DockerClusterSpec,
    DockerShards, DockerShardsSpec, LocalClusterSpec, Ports, DOCKER_NODES,
};
use helios_workload::client::RunProgress;
use helios_workload::replicated::runner::{run_replicated_on, StartReplicaTarget};
use helios_workload::replicated::schedule::PlannedReplicationFault;
use helios_workload::replicated::target::SharedReplicaTarget;
use helios_workload::replicated::{
    DockerShardTarget, ReplicatedRunConfig, ReplicationFaultKind, ShardProcessTarget,
};
use helios_workload::runner::{run_on, FinalRead, StartTarget, STARTUP_TIMEOUT};
use helios_workload::schedule::{FaultAction, NemesisKind, NodeTarget, PlannedFault};
use helios_workload::target::{DockerTarget, FaultTarget, ProcessTarget};
use helios_workload::RunConfig;

/// The RTO every fault must stay under: the seed's fail-over floor.
const RTO_FLOOR_MS: f64 = 10_000.0;
/// The RTO goal reported for every fault: the seed's election floor.
const RTO_GOAL_MS: f64 = 3_000.0;

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    // A scenario that panicked has torn its cluster down (targets stop on drop).
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the Docker half runs: the engine answers, and the image is built (once per suite).
fn docker_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            if std::env::var_os("HELIOS_CHAOS_NO_DOCKER").is_some() {
                return Err("HELIOS_CHAOS_NO_DOCKER is set".to_owned());
            }
            docker_available().map_err(|error| format!("`docker info` failed: {error}"))?;
            if std::env::var_os("HELIOS_CHAOS_SKIP_IMAGE_BUILD").is_none() {
                let mut build = Command::new(repository().join("docker/build-image.sh"));
                build.current_dir(repository());
                run_bounded(build, "docker/build-image.sh", BUILD_BOUND);
            }
            Ok(())
        })
        .clone()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Processes,
    Docker,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Processes => "processes",
            Target::Docker => "docker",
        }
    }
}

fn starter(target: Target, op_timeout: Duration) -> StartTarget {
    match target {
        Target::Processes => {
            let binary = helios_binary().to_path_buf();
            Box::new(move |run_dir| {
                let spec = LocalClusterSpec {
                    binary,
                    dir: run_dir.join("cluster"),
                    n_nodes: 5,
                    n_shards: 0,
                    n_compute: 0,
                    compute_args: Vec::new(),
                    ports: Ports::Free,
                    node_args: Vec::new(),
                    rust_log: Some("info,openraft=warn".to_owned()),
                    exit_with_parent: true,
                };
                Box::pin(async move {
                    let target = ProcessTarget::start(spec, op_timeout, STARTUP_TIMEOUT).await?;
                    Ok(Arc::new(target) as Arc<dyn FaultTarget>)
                })
            })
        }
        Target::Docker => Box::new(move |_run_dir| {
            let spec = DockerClusterSpec {
                compose_file: repository().join("docker/docker-compose.yml"),
                project: format!("helios-chaos-{}", std::process::id()),
                image: "helios:local".to_owned(),
                // The five members and the spare, m6, which a scenario may add.
                ports: pick_free_ports(DOCKER_NODES + 1).expect("free ports"),
            };
            Box::pin(async move {
                let startup = Duration::from_secs(60);
                let target = DockerTarget::start(spec, op_timeout, startup).await?;
                Ok(Arc::new(target) as Arc<dyn FaultTarget>)
            })
        }),
    }
}

/// One scenario: a name, the run's length and seed, and its faults.
struct Scenario {
    name: &'static str,
    seed: u64,
    time: Duration,
    nemesis: Vec<NemesisKind>,
    faults: Vec<PlannedFault>,
}

fn at(start_ms: u64, duration_ms: u64, action: FaultAction) -> PlannedFault {
    PlannedFault {
        start: Duration::from_millis(start_ms),
        end: Duration::from_millis(start_ms + duration_ms),
        action,
    }
}

fn leader() -> NodeTarget {
    NodeTarget {
        prefer_leader: true,
        avoid_leader: false,
        fallback: 0,
    }
}

fn node(index: u64) -> NodeTarget {
    NodeTarget {
        prefer_leader: false,
        avoid_leader: false,
        fallback: index,
    }
}

fn follower(index: u64) -> NodeTarget {
    NodeTarget {
        avoid_leader: true,
        ..node(index)
    }
}

/// Runs `scenario` against `target`, checks it, prints the figures, and asserts the verdict,
/// liveness, that every fault was applied, and each fault's RTO.
fn run_scenario(scenario: &Scenario, target: Target) {
    let config = RunConfig {
        seed: scenario.seed,
        time: scenario.time,
        nemesis: scenario.nemesis.clone(),
        schedule: Some(scenario.faults.clone()),
        concurrency: 5,
        rate: 100.0,
        store_dir: std::env::var_os("HELIOS_CHAOS_STORE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repository().join("target/chaos-runs"))
            .join(format!("{}-{}", scenario.name, target.name())),
        ..RunConfig::default()
    };
    config.validate().expect("a valid scenario");
    eprintln!(
        "chaos: {} against {} (seed {}, {} faults, {:?})",
        scenario.name,
        target.name(),
        config.seed,
        scenario.faults.len(),
        config.time
    );

    // Workload under faults.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let progress = Arc::new(RunProgress::default());
    let outcome = runtime
        .block_on(run_on(
            &config,
            progress,
            starter(target, config.op_timeout),
        ))
        .unwrap_or_else(|error| panic!("{} on {}: {error}", scenario.name, target.name()));
    runtime.shutdown_timeout(Duration::from_secs(5));

    // Check: the same checker and model as `helios run`.
    let options = CheckOptions {
        model: Some("cas-register(nil)".to_owned()),
        timeout: Some(Duration::from_secs(120)),
        ..CheckOptions::default()
    };
    let report = check_file(&outcome.history_path, &options).expect("a readable history");
    let history = outcome.history_path.display();
    let timing = report.timing.as_ref().expect("a timed history");
    eprintln!(
        "chaos: {} on {}: {} ({} ops), history {history}",
        scenario.name,
        target.name(),
        report.verdict,
        report.n_ops
    );
    for fault in &timing.faults {
        eprintln!(
            "  {:<16} {:>7.2} s  targets {}  disrupted {:>3}  RTO {}",
            fault.fault,
            fault.start_ns.unwrap_or(0) as f64 / 1e9,
            fault.targets,
            fault.affected_ops,
            fault
                .rto_ms
                .map_or("not recovered".to_owned(), |rto| format!("{rto:.0} ms")),
        );
    }
    assert_outcome(
        &report,
        &outcome.final_reads,
        outcome.n_faults_applied,
        scenario.faults.len(),
    );
}

/// What every scenario asserts of its checked run: `valid`, every key served after the heal,
/// every scheduled fault applied and paired, and each fault's RTO under [`RTO_FLOOR_MS`] (and
/// reported when over [`RTO_GOAL_MS`]).
fn assert_outcome(report: &Report, final_reads: &[FinalRead], applied: usize, scheduled: usize) {
    let history = &report.file;
    let timing = report.timing.as_ref().expect("a timed history");
    assert_eq!(
        report.verdict,
        Verdict::Valid,
        "{history}:\n{}",
        report.summary()
    );
    assert!(
        final_reads.iter().all(|read| read.served()),
        "{history}: a key was not served after the heal: {:?}",
        final_reads
    );
    assert_eq!(applied, scheduled, "{history}");
    assert_eq!(timing.faults.len(), scheduled, "{history}");
    for fault in &timing.faults {
        let rto = fault
            .rto_ms
            .unwrap_or_else(|| panic!("{history}: no recovery from {fault:?}"));
        if rto >= RTO_GOAL_MS {
            println!(
                "chaos: RTO {rto:.0} ms of {} at {:?} ns is over the {RTO_GOAL_MS} ms goal",
                fault.fault, fault.start_ns
            );
        }
        assert!(
            rto < RTO_FLOOR_MS,
            "{history}: RTO {rto:.0} ms of {} at {:?} ns is over the {RTO_FLOOR_MS} ms floor",
            fault.fault,
            fault.start_ns
        );
    }
}

/// Runs `scenario` against processes, then against Docker when an engine answers.
fn against_processes_and_docker(scenario: Scenario) {
    let _serial = serial();
    run_scenario(&scenario, Target::Processes);
    match docker_ready() {
        Ok(()) => run_scenario(&scenario, Target::Docker),
        Err(reason) => eprintln!(
            "chaos: {}: the Docker half was SKIPPED: {reason}",
            scenario.name
        ),
    }
}

#[test]
#[ignore = "chaos suite: real processes and containers, ~1 min; cargo test --test chaos -- --ignored"]
fn leader_kill_storm() {
    // SIGKILL (docker kill) whoever leads, four times, each restarted a second later.
    let faults = (0..4)
        .map(|i| at(3_000 + 4_000 * i, 1_000, FaultAction::Kill(leader())))
        .collect();
    against_processes_and_docker(Scenario {
        name: "leader-kill-storm",
        seed: 1,
        time: Duration::from_secs(24),
        nemesis: vec![NemesisKind::Kill],
        faults,
    });
}

#[test]
#[ignore = "chaos suite: real processes and containers, ~1 min; cargo test --test chaos -- --ignored"]
fn rolling_restart_of_every_node() {
    // Each node in turn is killed and restarted from its data directory a second later.
    let faults = (0..5)
        .map(|i| at(2_000 + 3_000 * i, 1_000, FaultAction::Kill(node(i))))
        .collect();
    against_processes_and_docker(Scenario {
        name: "rolling-restart",
        seed: 2,
        time: Duration::from_secs(24),
        nemesis: vec![NemesisKind::Kill],
        faults,
    });
}

#[test]
#[ignore = "chaos suite: real processes and containers, ~1 min; cargo test --test chaos -- --ignored"]
fn pauses_of_a_follower_and_of_the_leader() {
    // SIGSTOP (docker pause) a follower, then the leader, twice each, 1.5 s at a time. The RTO
    // counts from the pause, and a resumed node can still disrupt (it campaigns at once), so
    // the pauses stay well under the goal.
    let faults = vec![
        at(3_000, 1_500, FaultAction::Pause(follower(1))),
        at(8_000, 1_500, FaultAction::Pause(leader())),
        at(13_000, 1_500, FaultAction::Pause(follower(3))),
        at(18_000, 1_500, FaultAction::Pause(leader())),
    ];
    against_processes_and_docker(Scenario {
        name: "pauses",
        seed: 3,
        time: Duration::from_secs(27),
        nemesis: vec![NemesisKind::Pause],
        faults,
    });
}

#[test]
#[ignore = "chaos suite: real processes and containers, ~1 min; cargo test --test chaos -- --ignored"]
fn partition_of_the_leader_during_writes() {
    // Cut the leader off from every other node (peer filters; docker network disconnect) three
    // times while clients write, read and compare-and-set.
    let faults = (0..3)
        .map(|i| {
            at(
                3_000 + 5_000 * i,
                1_500,
                FaultAction::IsolateLeader { fallback: i },
            )
        })
        .collect();
    against_processes_and_docker(Scenario {
        name: "leader-partition",
        seed: 4,
        time: Duration::from_secs(24),
        nemesis: vec![NemesisKind::IsolateLeader],
        faults,
    });
}

// Replicated shards: data nodes and witnesses as `helios node --role storage|witness`
// processes, then as containers (the shard members of docker/docker-compose.yml). Kills,
// restarts and pauses are Docker's own there; isolations go through the peer filters on both.

/// One replicated scenario: its faults on shards of two data nodes and a witness each.
struct ShardScenario {
    name: &'static str,
    seed: u64,
    time: Duration,
    shards: usize,
    faults: Vec<PlannedReplicationFault>,
}

fn shard_fault(
    start_ms: u64,
    duration_ms: u64,
    kind: ReplicationFaultKind,
    shard: usize,
) -> PlannedReplicationFault {
    PlannedReplicationFault {
        start: Duration::from_millis(start_ms),
        end: Duration::from_millis(start_ms + duration_ms),
        kind,
        shard,
    }
}

/// Starts the shards of one run: member processes, or containers of
/// `docker/docker-compose.yml` (services `s0..s<3n-1>`) in a project of their own.
fn shard_starter(target: Target, shards: usize) -> StartReplicaTarget {
    match target {
        Target::Processes => {
            let binary = helios_binary().to_path_buf();
            Box::new(move |run_dir| {
                let spec = LocalClusterSpec {
                    binary,
                    dir: run_dir.join("cluster"),
                    n_nodes: 0,
                    n_shards: shards,
                    n_compute: 0,
                    compute_args: Vec::new(),
                    ports: Ports::Free,
                    node_args: Vec::new(),
                    rust_log: Some("info".to_owned()),
                    exit_with_parent: true,
                };
                Box::pin(async move {
                    let target =
                        ShardProcessTarget::start(spec, SHARD_OP_TIMEOUT, STARTUP_TIMEOUT).await?;
                    Ok(Arc::new(target) as SharedReplicaTarget)
                })
            })
        }
        Target::Docker => Box::new(move |_run_dir| {
            let spec = DockerShardsSpec {
                compose_file: repository().join("docker/docker-compose.yml"),
                project: format!("helios-chaos-shards-{}", std::process::id()),
                image: "helios:local".to_owned(),
                shard_ports: pick_free_ports(3 * shards).expect("free ports"),
                compute_ports: Vec::new(),
                metadata_network: None,
            };
            Box::pin(async move {
                let startup = Duration::from_secs(60);
                let target = DockerShardTarget::start(spec, SHARD_OP_TIMEOUT, startup).await?;
                Ok(Arc::new(target) as SharedReplicaTarget)
            })
        }),
    }
}

/// Runs `scenario` against shard members on `target`, checks it, prints the checker's and the
/// harness's recovery of every fault, and asserts the verdict, liveness, that every fault was
/// applied, and each fault's RTO.
fn run_shard_scenario(scenario: &ShardScenario, target: Target) {
    let mut kinds: Vec<ReplicationFaultKind> = scenario.faults.iter().map(|f| f.kind).collect();
    kinds.dedup();
    let config = ReplicatedRunConfig {
        nemesis: kinds,
        time: scenario.time,
        concurrency: 6,
        seed: scenario.seed,
        shards: scenario.shards,
        keys: 2 * scenario.shards,
        op_timeout: SHARD_OP_TIMEOUT,
        rate: 300.0,
        schedule: Some(scenario.faults.clone()),
        store_dir: std::env::var_os("HELIOS_CHAOS_STORE")
            .map(PathBuf::from)
            .unwrap_or_else(|| repository().join("target/chaos-runs"))
            .join(format!("{}-{}", scenario.name, target.name())),
        ..ReplicatedRunConfig::default()
    };
    config.validate().expect("a valid scenario");
    eprintln!(
        "chaos: {} against shard {} (seed {}, {} shards, {} faults, {:?})",
        scenario.name,
        target.name(),
        config.seed,
        config.shards,
        scenario.faults.len(),
        config.time
    );
    let start = shard_starter(target, config.shards);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime
        .block_on(run_replicated_on(
            &config,
            Arc::new(RunProgress::default()),
            start,
        ))
        .unwrap_or_else(|error| panic!("{} on {}: {error}", scenario.name, target.name()));
    runtime.shutdown_timeout(Duration::from_secs(5));

    let options = CheckOptions {
        timeout: Some(Duration::from_secs(120)),
        ..CheckOptions::default()
    };
    let report = check_file(&outcome.history_path, &options).expect("a readable history");
    let history = outcome.history_path.display();
    let timing = report.timing.as_ref().expect("a timed history");
    eprintln!(
        "chaos: {} on shard {}: {} ({} ops), history {history}",
        scenario.name,
        target.name(),
        report.verdict,
        report.n_ops
    );
    for (fault, harness) in timing.faults.iter().zip(&outcome.harness_recoveries) {
        eprintln!(
            "  {:<16} {:>7.2} s  targets {}  disrupted {:>3}  RTO {}  harness {}",
            fault.fault,
            fault.start_ns.unwrap_or(0) as f64 / 1e9,
            fault.targets,
            fault.affected_ops,
            fault
                .rto_ms
                .map_or("not recovered".to_owned(), |rto| format!("{rto:.0} ms")),
            harness
                .rto_ms
                .map_or("-".to_owned(), |rto| format!("{rto:.0} ms")),
        );
    }
    assert_outcome(
        &report,
        &outcome.final_reads,
        outcome.faults.len(),
        scenario.faults.len(),
    );
}

/// Runs `scenario` against shard member processes, then against shard member containers when
/// a Docker engine answers.
fn shard_scenario(scenario: ShardScenario) {
    let _serial = serial();
    run_shard_scenario(&scenario, Target::Processes);
    match docker_ready() {
        Ok(()) => run_shard_scenario(&scenario, Target::Docker),
        Err(reason) => eprintln!(
            "chaos: {}: the Docker half was SKIPPED: {reason}",
            scenario.name
        ),
    }
}

/// The bound on each client operation against shard processes: longer than the in-process
/// default, as every write waits for two fsyncs (primary and mirror).
const SHARD_OP_TIMEOUT: Duration = Duration::from_millis(200);

#[test]
#[ignore = "chaos suite: real processes and containers, ~1 min; cargo test --test chaos -- --ignored"]
fn primary_isolated_during_writes() {
    // Cut each shard's primary off from its mirror and witness (peer filters; clients still
    // reach it) while clients write: the witness promotes the mirror, and the isolated primary
    // must stop acknowledging once its lease lapses.
    let faults = (0..4)
        .map(|i| {
            shard_fault(
                2_000 + 3_500 * i,
                1_500,
                ReplicationFaultKind::IsolatePrimary,
                (i % 2) as usize,
            )
        })
        .collect();
    shard_scenario(ShardScenario {
        name: "primary-isolated",
        seed: 11,
        time: Duration::from_secs(20),
        shards: 2,
        faults,
    });
}

#[test]
#[ignore = "chaos suite: real processes and containers, ~1 min; cargo test --test chaos -- --ignored"]
fn pauses_of_the_witness() {
    // SIGSTOP the witness of each shard, twice, and once each primary: a paused witness must
    // not stop a healthy primary, and a primary that wakes from a pause must not serve on a
    // lapsed lease.
    let faults = vec![
        shard_fault(2_000, 1_500, ReplicationFaultKind::PauseWitness, 0),
        shard_fault(5_000, 1_500, ReplicationFaultKind::PauseWitness, 1),
        shard_fault(8_000, 1_500, ReplicationFaultKind::PausePrimary, 0),
        shard_fault(11_000, 1_500, ReplicationFaultKind::PauseWitness, 0),
        shard_fault(14_000, 1_500, ReplicationFaultKind::PausePrimary, 1),
    ];
    shard_scenario(ShardScenario {
        name: "witness-pauses",
        seed: 12,
        time: Duration::from_secs(22),
        shards: 2,
        faults,
    });
}

#[test]
#[ignore = "chaos suite: real processes and containers, ~1 min; cargo test --test chaos -- --ignored"]
fn rolling_restart_of_every_shard_member() {
    // SIGKILL and restart from the data directory: the primary (so the mirror takes over), the
    // new primary (so the first comes back as primary), then the witness; on each shard.
    let mut faults = Vec::new();
    for shard in 0..2 {
        let base = 2_000 + 7_500 * shard as u64;
        faults.push(shard_fault(
            base,
            1_000,
            ReplicationFaultKind::KillPrimary,
            shard,
        ));
        faults.push(shard_fault(
            base + 2_500,
            1_000,
            ReplicationFaultKind::KillPrimary,
            shard,
        ));
        faults.push(shard_fault(
            base + 5_000,
            1_000,
            ReplicationFaultKind::KillWitness,
            shard,
        ));
    }
    shard_scenario(ShardScenario {
        name: "shard-rolling-restart",
        seed: 13,
        time: Duration::from_secs(24),
        shards: 2,
        faults,
    });
}

#[test]
#[ignore = "chaos suite: real processes and containers, ~1 min; cargo test --test chaos -- --ignored"]
fn node_added_during_a_partition() {
    // Cut two of the five metadata nodes off, then add a sixth node on the majority's side
    // (a learner caught up, then a voter: six voters need four, which that side has exactly)
    // while clients keep writing; heal. Clients may choose the new node once it is added. On
    // Docker the new node is the compose file's spare, m6, and the two nodes cut off are
    // disconnected from the network (each on its own).
    let faults = vec![
        at(
            3_000,
            4_000,
            FaultAction::PartitionAddNode {
                groups: vec![vec![2, 3, 4], vec![0, 1]],
            },
        ),
        at(9_000, 1_500, FaultAction::Kill(leader())),
    ];
    let scenario = Scenario {
        name: "node-added-during-partition",
        seed: 5,
        time: Duration::from_secs(16),
        nemesis: vec![NemesisKind::Partition, NemesisKind::Kill],
        faults,
    };
    against_processes_and_docker(scenario);
}

/// The longest a write may wait for a paused compute node: its lease (500 ms), with room for a
/// loaded machine.
const LEASE_HOLD_BOUND: Duration = Duration::from_secs(2);

async fn value_through(compute: &ComputeClient, id: i64) -> i64 {
    let result = compute
        .query(&format!("SELECT value FROM data WHERE id = {id}"))
        .await
        .unwrap_or_else(|error| panic!("read {id} through {}: {error}", compute.addr()));
    assert_eq!(result.rows.len(), 1, "row {id} through {}", compute.addr());
    result.rows[0].get::<i64>("value")
}

/// Polls, every 50 ms up to `bound`, until every compute node holds its cache leases from every
/// data node of the `shards` shards.
async fn wait_for_leases(computes: &[ComputeClient], shards: usize, bound: Duration) {
    let deadline = std::time::Instant::now() + bound;
    for compute in computes {
        loop {
            match compute.status().await {
                Ok(status) if status.cacheable_shards.len() == shards => break,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "{}: no leases within {bound:?}: {other:?}",
                    compute.addr()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[test]
#[ignore = "chaos suite: real containers, ~1 min; cargo test --test chaos -- --ignored"]
fn compute_nodes_in_docker_keep_caches_fresh_through_kills_and_pauses() {
    // The compose file's compute nodes c0 and c1 over one shard's containers, with the metadata
    // group's containers for the table's schema: a write through one leaves no stale row in the
    // other's cache, also after `docker kill` of the shard's primary; a `docker pause`d compute
    // node holds writes for at most its lease, and serves fresh rows once unpaused. Then a
    // transaction through c0 is invisible to c1 until it commits; and with c0 paused while its
    // transaction locks a row, c1's write aborts it after about a second and c0's commit is
    // refused. (The same on processes: bin/tests/compute_leases.rs,
    // bin/tests/compute_transactions.rs and the cache workload on processes.)
    if let Err(reason) = docker_ready() {
        eprintln!("compute nodes in Docker: SKIPPED: {reason}");
        return;
    }
    let _serial = serial();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let project = format!("helios-chaos-compute-{}", std::process::id());
        let startup = Duration::from_secs(60);
        let metadata = DockerCluster::up(DockerClusterSpec {
            compose_file: repository().join("docker/docker-compose.yml"),
            project: project.clone(),
            image: "helios:local".to_owned(),
            ports: pick_free_ports(DOCKER_NODES).expect("free ports"),
        })
        .expect("metadata containers");
        let mut shards = DockerShards::up(DockerShardsSpec {
            compose_file: repository().join("docker/docker-compose.yml"),
            project: format!("{project}-shards"),
            image: "helios:local".to_owned(),
            shard_ports: pick_free_ports(3).expect("free ports"),
            compute_ports: pick_free_ports(2).expect("free ports"),
            metadata_network: Some(metadata.network()),
        })
        .expect("shard and compute containers");
        let computes: Vec<ComputeClient> = shards
            .compute_addresses()
            .into_iter()
            .map(|addr| ComputeClient::new(addr, Duration::from_secs(10)))
            .collect();
        wait_for_leases(&computes, 1, startup).await;
        let (c0, c1) = (&computes[0], &computes[1]);
        // The schema goes to the metadata group, which may still be electing.
        let deadline = std::time::Instant::now() + startup;
        while let Err(error) = c0.create_table("data", "id").await {
            assert!(
                std::time::Instant::now() < deadline,
                "create table: {error}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c0.execute("INSERT INTO data (id, value) VALUES (1, 1)")
            .await
            .expect("insert");

        // CACHE-001 on containers: no sleep between the update and the check.
        assert_eq!(value_through(c0, 1).await, 1);
        assert!(c0.cache_contains(1).await.expect("status"));
        c1.execute("UPDATE data SET value = 999 WHERE id = 1")
            .await
            .expect("update");
        assert!(!c0.cache_contains(1).await.expect("status"));
        assert_eq!(value_through(c0, 1).await, 999);

        // docker kill of the primary: the mirror takes over, and c0's cached row is replaced.
        let client = shards.shard_client(Duration::from_secs(2));
        let mut primary = None;
        let deadline = std::time::Instant::now() + startup;
        while primary.is_none() {
            assert!(std::time::Instant::now() < deadline, "no primary");
            tokio::time::sleep(Duration::from_millis(20)).await;
            for member in [0, 1] {
                if client
                    .status(0, member)
                    .await
                    .is_ok_and(|status| status.is_primary)
                {
                    primary = Some(member);
                }
            }
        }
        let primary = primary.expect("a primary");
        assert!(c0.cache_contains(1).await.expect("status"));
        shards.kill(primary).expect("docker kill");
        c1.execute("UPDATE data SET value = 2 WHERE id = 1")
            .await
            .expect("an update after the primary's kill");
        assert_eq!(value_through(c0, 1).await, 2);
        shards.start(primary).expect("docker start");
        wait_for_leases(&computes, 1, startup).await;
        assert_eq!(value_through(c0, 1).await, 2);

        // docker pause of c0: a write through c1 waits at most for c0's lease to end.
        shards.pause_compute(0).expect("docker pause");
        let started = std::time::Instant::now();
        c1.execute("UPDATE data SET value = 3 WHERE id = 1")
            .await
            .expect("an update with c0 paused");
        let held = started.elapsed();
        eprintln!("compute nodes in Docker: a write with c0 paused took {held:?}");
        assert!(held < LEASE_HOLD_BOUND, "the write was held {held:?}");
        shards.unpause_compute(0).expect("docker unpause");
        assert_eq!(
            value_through(c0, 1).await,
            3,
            "c0 serves the row written while paused"
        );

        // A transaction through c0: invisible to c1 until it commits, then visible whole.
        let tx = c0.begin().await.expect("begin");
        tx.execute("UPDATE data SET value = 100 WHERE id = 1")
            .await
            .expect("update in the transaction");
        tx.execute("INSERT INTO data (id, value) VALUES (2, 200)")
            .await
            .expect("insert in the transaction");
        assert_eq!(value_through(c1, 1).await, 3, "a dirty read through c1");
        assert!(
            c1.query("SELECT value FROM data WHERE id = 2")
                .await
                .expect("read")
                .rows
                .is_empty(),
            "a dirty read of the insert through c1"
        );
        tx.commit().await.expect("commit");
        assert_eq!(value_through(c1, 1).await, 100);
        assert_eq!(value_through(c1, 2).await, 200);

        // docker pause of c0 with a transaction open on row 1: c1's write waits about 1 s,
        // aborts the stalled transaction, and goes on; c0's commit after the unpause is refused.
        let stalled = c0.begin().await.expect("begin");
        stalled
            .execute("UPDATE data SET value = 7 WHERE id = 1")
            .await
            .expect("update in the transaction");
        shards.pause_compute(0).expect("docker pause");
        let started = std::time::Instant::now();
        c1.execute("UPDATE data SET value = value + 1 WHERE id = 1")
            .await
            .expect("a write on the row the stalled transaction locks");
        eprintln!(
            "compute nodes in Docker: a write on a row locked by paused c0 took {:?}",
            started.elapsed()
        );
        shards.unpause_compute(0).expect("docker unpause");
        let refused = stalled
            .commit()
            .await
            .expect_err("a commit of an aborted transaction");
        assert!(!refused.outcome_is_unknown(), "{refused}");
        assert_eq!(value_through(c0, 1).await, 101);
        drop(shards);
        drop(metadata);
    });
}
