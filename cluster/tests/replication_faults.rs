//! Replication under faults: failover through the client API, rejoining, pausing, a seeded
//! chaos run that checks no split brain and no lost acknowledged write, and the two broken
//! modes, each proved to break what it should.

use std::collections::BTreeMap;
use std::time::Duration;

use helios_cluster::replication::{
    ProtocolOptions, ReplicationCluster, ReplicationError, ReplicationOptions, Role, Timing,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const WAIT: Duration = Duration::from_secs(5);

async fn cluster_with(protocol: ProtocolOptions, seed: u64) -> ReplicationCluster {
    let options = ReplicationOptions {
        seed,
        protocol,
        request_timeout: Duration::from_millis(800),
        ..ReplicationOptions::default()
    };
    let cluster = ReplicationCluster::with_options(options).await;
    println!("seed {seed}");
    cluster
}

#[tokio::test]
async fn routed_clients_survive_a_primary_kill_without_losing_a_write() {
    let cluster = cluster_with(ProtocolOptions::default(), 1).await;
    for i in 0..100u32 {
        let served = cluster.write(0, &i.to_be_bytes(), b"v").await;
        assert!(served.is_ok(), "write {i}: {served:?}");
    }
    let old = cluster.primary_id(0);
    cluster.kill_primary(0).await;
    // The client keeps trying through the failover, within its timeout.
    let served = cluster
        .write(0, b"after", b"failover")
        .await
        .expect("write after failover");
    assert_ne!(served.node, old, "served by the new primary");
    for i in 0..100u32 {
        let read = cluster.read(0, &i.to_be_bytes()).await.expect("read");
        assert_eq!(
            read.value,
            Some(b"v".to_vec()),
            "acknowledged write {i} lost"
        );
    }
    cluster.validate();

    // The old primary rejoins as the mirror, catches up, and the shard is synchronous again.
    cluster.restart_node(old).await;
    let synced = cluster
        .wait_until(WAIT, |c| {
            let record = c.newest_record(0);
            record.synchronous
                && record.primary != old
                && c.node(old).role() == Some(Role::Mirror)
                && c.node(old).log_position() == c.node(record.primary).log_position()
        })
        .await;
    assert!(
        synced,
        "old primary did not rejoin: {:?}",
        cluster.newest_record(0)
    );
    let copy = cluster.node(old).read(b"after").await.expect("local read");
    assert_eq!(copy, Some(b"failover".to_vec()));
}

#[tokio::test]
async fn writes_to_a_mirror_or_witness_name_the_primary() {
    let cluster = cluster_with(ProtocolOptions::default(), 2).await;
    let primary = cluster.primary_id(0);
    for id in [cluster.mirror_id(0), cluster.members(0).witness] {
        let write = cluster.write_to_node(id, b"k", b"v").await;
        assert!(
            matches!(write, Err(ReplicationError::NotPrimary { primary: Some(p), epoch: 1 }) if p == primary),
            "node {id}: {write:?}"
        );
        assert!(!write.unwrap_err().outcome_is_unknown());
    }
    let unknown = cluster.write_to_node(99, b"k", b"v").await;
    assert_eq!(unknown, Err(ReplicationError::UnknownNode { node: 99 }));
}

#[tokio::test]
async fn a_paused_primary_is_replaced_and_steps_down_on_resume() {
    let cluster = cluster_with(ProtocolOptions::default(), 3).await;
    let old = cluster.primary_id(0);
    let mirror = cluster.mirror_id(0);
    cluster.pause(old).await;
    assert!(
        cluster
            .wait_until(WAIT, |c| c.node(mirror).is_primary())
            .await
    );
    let during = cluster.write_to_node(old, b"k", b"v").await;
    assert!(
        matches!(during, Err(ReplicationError::Timeout { .. })),
        "{during:?}"
    );
    cluster.resume(old).await;
    let stepped_down = cluster
        .wait_until(WAIT, |c| c.node(old).role() == Some(Role::Mirror))
        .await;
    assert!(stepped_down, "the resumed primary still believes it leads");
    cluster.validate();
}

/// Random faults against routed clients writing unique keys: at every poll at most one primary
/// acts per shard, and after healing every acknowledged write is read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_chaos_keeps_one_primary_and_every_acknowledged_write() {
    for seed in 0..3u64 {
        let cluster = std::sync::Arc::new(cluster_with(ProtocolOptions::default(), seed).await);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let writer = {
            let cluster = std::sync::Arc::clone(&cluster);
            tokio::spawn(async move {
                let mut acknowledged = BTreeMap::new();
                for i in 0..400u32 {
                    let key = format!("k{i}").into_bytes();
                    if cluster.write(0, &key, &i.to_be_bytes()).await.is_ok() {
                        acknowledged.insert(key, i);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                acknowledged
            })
        };
        for _round in 0..6 {
            let [a, b] = cluster.members(0).replicas;
            let target = if rng.gen_bool(0.5) { a } else { b };
            match rng.gen_range(0..4) {
                0 => cluster.kill_node(target).await,
                1 => cluster.isolate(target).await,
                2 => cluster.isolate(cluster.members(0).witness).await,
                _ => cluster.pause(target).await,
            }
            for _ in 0..40 {
                cluster.validate();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            cluster.heal_network().await;
            for id in [a, b, cluster.members(0).witness] {
                cluster.resume(id).await;
                cluster.restart_node(id).await;
            }
            for _ in 0..20 {
                cluster.validate();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let acknowledged = tokio::time::timeout(Duration::from_secs(60), writer)
            .await
            .expect("writer finishes")
            .expect("writer does not panic");
        assert!(
            !acknowledged.is_empty(),
            "seed {seed}: nothing was acknowledged"
        );
        for (key, i) in &acknowledged {
            let read = cluster.read(0, key).await;
            let value = read.unwrap_or_else(|e| panic!("seed {seed}: final read failed: {e}"));
            assert_eq!(
                value.value,
                Some(i.to_be_bytes().to_vec()),
                "seed {seed}: lost write {i}"
            );
        }
        cluster.validate();
    }
}

#[tokio::test]
async fn unsafe_async_replication_loses_acknowledged_writes_on_failover() {
    // Broken mode: acknowledge before the mirror has the write.
    let protocol = ProtocolOptions {
        unsafe_async_replication: true,
        timing: Timing {
            heartbeat_interval_ms: 100,
            lease_ms: 300,
            failover_timeout_ms: 400,
            ..Timing::default()
        },
        ..ProtocolOptions::default()
    };
    let cluster = cluster_with(protocol, 4).await;
    let primary = cluster.get_primary(0).await;
    for i in 0..1000 {
        let key = format!("key_{i}").into_bytes();
        primary
            .write(&key, b"v")
            .await
            .expect("acknowledged at once");
    }
    cluster.kill_primary(0).await;
    cluster.promote_mirror_to_primary(0).await;
    let new_primary = cluster.get_primary(0).await;
    assert_ne!(new_primary.id(), primary.id());
    let mut missing = 0;
    for i in 0..1000 {
        let key = format!("key_{i}").into_bytes();
        if new_primary.read(&key).await.expect("local read").is_none() {
            missing += 1;
        }
    }
    println!("acknowledged writes lost after failover: {missing} of 1000");
    assert!(
        missing > 0,
        "async replication lost nothing; the broken mode proves nothing"
    );
}

#[tokio::test]
async fn unsafe_no_fencing_lets_both_sides_acknowledge_conflicting_writes() {
    for unsafe_no_fencing in [false, true] {
        let protocol = ProtocolOptions {
            unsafe_no_fencing,
            ..ProtocolOptions::default()
        };
        let cluster = cluster_with(protocol, 5).await;
        let primary = cluster.primary_id(0);
        let mirror = cluster.mirror_id(0);
        let witness = cluster.members(0).witness;
        cluster
            .partition_network(vec![primary], vec![mirror, witness])
            .await;
        assert!(
            cluster
                .wait_until(WAIT, |c| c.node(mirror).is_primary())
                .await
        );
        // Let the old primary's lease lapse, and its writes fail for want of a mirror.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let old_side = cluster.write_to_node(primary, b"key", b"a").await;
        let new_side = cluster.write_to_node(mirror, b"key", b"b").await;
        assert!(
            new_side.is_ok(),
            "the promoted side accepts writes: {new_side:?}"
        );
        if unsafe_no_fencing {
            assert!(
                old_side.is_ok(),
                "without fencing the old primary acknowledges too"
            );
            let a = cluster.node(primary).read(b"key").await.expect("read");
            let b = cluster.node(mirror).read(b"key").await.expect("read");
            assert_eq!(
                (a, b),
                (Some(b"a".to_vec()), Some(b"b".to_vec())),
                "split brain"
            );
            assert_eq!(
                cluster.active_primaries(0).len(),
                2,
                "two primaries act at once"
            );
        } else {
            assert!(
                matches!(old_side, Err(ReplicationError::NoLease { .. })),
                "a fenced old primary refuses: {old_side:?}"
            );
            assert_eq!(cluster.active_primaries(0), vec![mirror]);
        }
    }
}
