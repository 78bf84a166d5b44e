//! Scenario unit tests of the metadata group over the simulated network.

use std::time::{Duration, Instant};

use super::*;
use crate::metadata::MetadataError;

const LEADER_WAIT: Duration = Duration::from_secs(3);

async fn cluster(size: usize, seed: u64) -> RaftTestCluster {
    RaftTestCluster::with_options(ClusterOptions {
        size,
        seed,
        ..ClusterOptions::default()
    })
    .await
}

async fn leader_of(cluster: &RaftTestCluster) -> NodeId {
    cluster
        .wait_for_leader(LEADER_WAIT)
        .await
        .unwrap_or_else(|| panic!("no leader within {LEADER_WAIT:?} (seed {})", cluster.seed()))
}

#[tokio::test]
async fn minority_partition_never_has_a_leader() {
    let cluster = cluster(5, 1).await;
    let leader = leader_of(&cluster).await;
    let minority = vec![leader, (leader + 1) % 5];
    let majority: Vec<NodeId> = (0..5).filter(|id| !minority.contains(id)).collect();
    cluster.partition(minority.clone(), majority.clone()).await;
    let partitioned_at = Instant::now();

    // The deposed leader may keep its lease for at most election_timeout_min; from
    // election_timeout_max on (when followers may vote again), the minority must have none.
    let settle = cluster.options().node_settings.election_timeout_max;
    let mut majority_elected = false;
    while partitioned_at.elapsed() < Duration::from_millis(1500) {
        if partitioned_at.elapsed() >= settle {
            for &id in &minority {
                assert!(
                    !cluster.node(id).is_leader(),
                    "minority node {id} is leader"
                );
            }
        }
        majority_elected |= majority.iter().any(|&id| cluster.node(id).is_leader());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(majority_elected, "the majority never elected a leader");
    cluster.shutdown().await;
}

#[tokio::test]
async fn proposal_to_a_non_leader_names_the_leader() {
    let cluster = cluster(3, 2).await;
    let leader = leader_of(&cluster).await;
    let follower = (leader + 1) % 3;
    let result = cluster.node(follower).propose_change("k", "v").await;
    assert_eq!(
        result,
        Err(MetadataError::NotLeader {
            leader: Some(leader)
        })
    );
    let read = cluster.node(follower).read("k").await;
    assert_eq!(
        read,
        Err(MetadataError::NotLeader {
            leader: Some(leader)
        })
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn proposal_without_quorum_times_out_with_a_typed_error() {
    let request_timeout = Duration::from_millis(400);
    let cluster = RaftTestCluster::with_options(ClusterOptions {
        size: 3,
        seed: 3,
        node_settings: NodeSettings {
            request_timeout,
            ..NodeSettings::default()
        },
        ..ClusterOptions::default()
    })
    .await;
    let leader = leader_of(&cluster).await;
    for id in (0..3).filter(|&id| id != leader) {
        cluster.kill_node(id).await;
    }
    let started = Instant::now();
    let result = cluster.node(leader).propose_change("k", "v").await;
    let waited = started.elapsed();
    let error = result.expect_err("a proposal without a quorum must not succeed");
    assert_eq!(
        error,
        MetadataError::Timeout {
            after: request_timeout
        }
    );
    assert!(
        error.outcome_is_unknown(),
        "a timed-out write is indeterminate"
    );
    assert!(
        waited < request_timeout * 3,
        "waited {waited:?}, bound {request_timeout:?}"
    );
    let read = cluster.node(leader).read("k").await;
    assert!(
        read.is_err(),
        "a leader without quorum served a read: {read:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn kill_and_restart_keeps_committed_data() {
    let cluster = cluster(3, 4).await;
    let leader = leader_of(&cluster).await;
    for i in 0..5 {
        let key = format!("key_{i}");
        cluster
            .node(leader)
            .propose_change(&key, "committed")
            .await
            .expect("proposal commits");
    }
    let term_before = cluster
        .node(leader)
        .metrics()
        .expect("running")
        .current_term;
    for id in 0..3 {
        cluster.kill_node(id).await;
        assert_eq!(
            cluster.node(id).read("key_0").await,
            Err(MetadataError::Shutdown)
        );
    }
    for id in 0..3 {
        cluster.restart_node(id).await;
        cluster
            .node(id)
            .storage()
            .validate()
            .expect("storage invariants hold");
    }
    let leader = leader_of(&cluster).await;
    let metrics = cluster.node(leader).metrics().expect("running");
    assert!(
        metrics.current_term >= term_before,
        "the vote went back: term {} after {term_before}",
        metrics.current_term
    );
    for i in 0..5 {
        let value = cluster
            .node(leader)
            .read(&format!("key_{i}"))
            .await
            .expect("linearizable read");
        assert_eq!(
            value.as_deref(),
            Some("committed"),
            "key_{i} lost across restart"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn stale_read_mode_really_does_serve_stale_reads() {
    for unsafe_stale_reads in [true, false] {
        let cluster = RaftTestCluster::with_options(ClusterOptions {
            size: 3,
            seed: 5,
            unsafe_stale_reads,
            ..ClusterOptions::default()
        })
        .await;
        let leader = leader_of(&cluster).await;
        let follower = (leader + 1) % 3;
        cluster
            .node(leader)
            .propose_change("x", "old")
            .await
            .expect("commit old");
        let replicated = cluster
            .wait_until(LEADER_WAIT, |c| {
                c.nodes
                    .iter()
                    .all(|n| n.storage().get("x").as_deref() == Some("old"))
            })
            .await;
        assert!(replicated, "old value never reached every node");
        cluster.isolate(follower).await;
        cluster
            .node(leader)
            .propose_change("x", "new")
            .await
            .expect("majority commits new");

        let read = cluster.node(follower).read("x").await;
        if unsafe_stale_reads {
            assert_eq!(
                read,
                Ok(Some("old".to_string())),
                "the broken mode must serve the stale value"
            );
        } else {
            assert!(
                read.is_err(),
                "safe mode served a read on a follower: {read:?}"
            );
            let fresh = cluster.node(leader).read("x").await;
            assert_eq!(fresh, Ok(Some("new".to_string())));
        }
        cluster.shutdown().await;
    }
}

#[tokio::test]
async fn isolated_leader_stops_serving_reads_and_the_majority_elects_another() {
    let cluster = cluster(3, 6).await;
    let old_leader = leader_of(&cluster).await;
    cluster
        .node(old_leader)
        .propose_change("k", "1")
        .await
        .expect("commit");
    cluster.isolate(old_leader).await;
    let settings = &cluster.options().node_settings;
    tokio::time::sleep(settings.election_timeout_max).await;
    assert!(
        !cluster.node(old_leader).is_leader(),
        "isolated leader kept its lease"
    );
    let read = cluster.node(old_leader).read("k").await;
    assert!(read.is_err(), "isolated leader served a read: {read:?}");
    let elected = cluster
        .wait_until(LEADER_WAIT, |c| {
            c.nodes
                .iter()
                .any(|n| n.id() != old_leader && n.is_leader())
        })
        .await;
    assert!(elected, "the majority did not elect a new leader");
    cluster.heal().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn paused_node_holds_calls_until_resumed() {
    let request_timeout = Duration::from_millis(300);
    let cluster = RaftTestCluster::with_options(ClusterOptions {
        size: 3,
        seed: 7,
        node_settings: NodeSettings {
            request_timeout,
            ..NodeSettings::default()
        },
        ..ClusterOptions::default()
    })
    .await;
    let leader = leader_of(&cluster).await;
    cluster.pause_node(leader).await;
    let result = cluster.node(leader).propose_change("k", "v").await;
    assert_eq!(
        result,
        Err(MetadataError::Timeout {
            after: request_timeout
        })
    );
    let new_leader = cluster
        .wait_until(LEADER_WAIT, |c| {
            c.nodes.iter().any(|n| n.id() != leader && n.is_leader())
        })
        .await;
    assert!(new_leader, "no leader replaced the paused one");
    cluster.resume_node(leader).await;
    let caught_up = cluster
        .wait_until(LEADER_WAIT, |c| {
            c.nodes.iter().filter(|n| n.is_leader()).count() == 1
        })
        .await;
    assert!(caught_up, "no single leader after resume");
    let leader = leader_of(&cluster).await;
    cluster
        .node(leader)
        .propose_change("k2", "v2")
        .await
        .expect("cluster serves after resume");
    cluster.shutdown().await;
}

#[tokio::test]
async fn one_way_partition_from_leader_leads_to_a_new_leader_that_commits() {
    let cluster = cluster(3, 8).await;
    let leader = leader_of(&cluster).await;
    for other in (0..3).filter(|&id| id != leader) {
        cluster.partition_one_way(leader, other).await;
    }
    let replaced = cluster
        .wait_until(LEADER_WAIT, |c| {
            c.nodes.iter().any(|n| n.id() != leader && n.is_leader())
        })
        .await;
    assert!(
        replaced,
        "followers that stopped hearing the leader did not elect another"
    );
    let new_leader = leader_of(&cluster).await;
    cluster
        .node(new_leader)
        .propose_change("k", "v")
        .await
        .expect("new leader commits");
    cluster.shutdown().await;
}

#[tokio::test]
async fn compare_and_set_and_linearizable_read_on_the_leader() {
    let cluster = cluster(3, 9).await;
    let leader = cluster.node(leader_of(&cluster).await);
    assert_eq!(leader.compare_and_set("c", None, "1").await, Ok(true));
    assert_eq!(leader.compare_and_set("c", None, "2").await, Ok(false));
    assert_eq!(leader.compare_and_set("c", Some("1"), "2").await, Ok(true));
    assert_eq!(leader.read("c").await, Ok(Some("2".to_string())));
    assert_eq!(leader.read("absent").await, Ok(None));
    cluster.shutdown().await;
}

#[tokio::test]
async fn drops_and_delays_do_not_break_commits() {
    let cluster = cluster(3, 10).await;
    cluster.network.set_drop_probability(0.05);
    cluster
        .network
        .set_delay(Duration::ZERO, Duration::from_millis(3));
    let mut committed = 0;
    for i in 0..20 {
        let Some(leader) = cluster.wait_for_leader(LEADER_WAIT).await else {
            continue;
        };
        if cluster
            .node(leader)
            .propose_change(&format!("k{i}"), "v")
            .await
            .is_ok()
        {
            committed += 1;
        }
    }
    assert!(
        committed >= 10,
        "only {committed} of 20 proposals committed over a lossy network"
    );
    cluster.heal().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn seed_style_construction_connects_and_forms_a_cluster() {
    // The seed builds nodes first and connects them afterwards.
    let mut nodes = Vec::new();
    for id in 0..3 {
        nodes.push(MetadataNode::new_test(id).await);
    }
    let network = NetworkSimulator::connect_all(&nodes).await;
    nodes[0]
        .initialize(&[0, 1, 2])
        .await
        .expect("cluster forms");
    let deadline = Instant::now() + LEADER_WAIT;
    while Instant::now() < deadline && !nodes.iter().any(|n| n.is_leader()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = nodes
        .iter()
        .find(|n| n.is_leader())
        .expect("a leader is elected");
    leader
        .propose_change("k", "v")
        .await
        .expect("proposal commits");
    for node in &nodes {
        node.shutdown().await;
    }
    network.shutdown();
}
