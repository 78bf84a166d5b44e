//! Seed section 3, "Replication and Failover Tests": REP-001 to REP-005, with the seed's code
//! and assertions.
//!
//! Deviations from the seed's text, all minimal:
//! - The seed's `use heliosdb_storage::replication::*` becomes an import of
//!   `helios_cluster::replication`, whose `StorageCluster` is the replicated store (the sharded
//!   `helios_cluster::StorageCluster` of section 2 is another type).
//! - REP-003 polls for the promotion for at most the seed's 5 s instead of sleeping a fixed 5 s;
//!   the sleeps whose purpose is to give a wrong outcome time to happen (REP-003 after the
//!   heal, REP-004) are kept as written.
//! - Each test logs its seed first, and a few extra assertions check what the seed's comments
//!   say (the old primary follows the new epoch after the heal).

use std::time::Duration;

use helios_cluster::replication::{ReplicationCluster, StorageCluster};

#[tokio::test]
async fn test_synchronous_replication() {
    // REP-001: Writes are synchronously replicated to mirror
    let cluster = StorageCluster::with_replication(1, 1).await; // 1 primary, 1 mirror
    println!("seed {}", cluster.seed());
    let primary = cluster.get_primary(0).await;
    let mirror = cluster.get_mirror(0).await;
    // Write to primary
    primary.write(b"key1", b"value1").await.unwrap();
    // Immediately read from mirror (should be present due to sync replication)
    let value = mirror.read(b"key1").await.unwrap();
    assert_eq!(value, Some(b"value1".to_vec()));
}

#[tokio::test]
async fn test_rpo_zero_on_primary_failure() {
    // REP-002: RPO=0 (no data loss) when primary fails
    let cluster = StorageCluster::with_replication(1, 1).await;
    println!("seed {}", cluster.seed());
    let primary = cluster.get_primary(0).await;
    // Write 1000 records
    for i in 0..1000 {
        primary
            .write(
                &format!("key_{}", i).into_bytes(),
                &format!("value_{}", i).into_bytes(),
            )
            .await
            .unwrap();
    }
    // Immediately kill primary (no delay for async replication)
    cluster.kill_primary(0).await;
    // Promote mirror
    cluster.promote_mirror_to_primary(0).await;
    let new_primary = cluster.get_primary(0).await;
    assert_ne!(new_primary.id(), primary.id(), "the mirror took over");
    // Verify all 1000 records present
    for i in 0..1000 {
        let key = format!("key_{}", i).into_bytes();
        let value = new_primary.read(&key).await.unwrap();
        assert!(value.is_some(), "Key key_{} missing after failover", i);
        assert_eq!(value.unwrap(), format!("value_{}", i).into_bytes());
    }
}

#[tokio::test]
async fn test_witness_quorum_failover() {
    // REP-003: Witness provides quorum for split-brain prevention
    let cluster = ReplicationCluster::with_witness(1).await; // 1 shard with witness
    println!("seed {}", cluster.seed());
    let primary_id = cluster.get_primary_id(0).await;
    let mirror_id = cluster.get_mirror_id(0).await;
    let witness_id = cluster.get_witness_id(0).await;
    // Partition: primary isolated from mirror+witness
    cluster
        .partition_network(vec![primary_id], vec![mirror_id, witness_id])
        .await;
    // Wait for failover decision (seed: sleep 5 s; we poll at most that long)
    cluster
        .wait_until(Duration::from_secs(5), |c| {
            c.node(mirror_id).is_primary() && !c.node(primary_id).is_primary()
        })
        .await;
    // Mirror should be promoted (has quorum with witness)
    assert!(cluster.is_primary(mirror_id).await);
    assert!(!cluster.is_primary(primary_id).await);
    // Heal network
    cluster.heal_network().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Old primary should recognize new primary and become follower
    assert!(!cluster.is_primary(primary_id).await);
    assert!(cluster.is_primary(mirror_id).await);
    let old = cluster.node(primary_id).record();
    assert_eq!(
        old.primary, mirror_id,
        "the old primary follows the new epoch"
    );
    let write = cluster.write_to_node(primary_id, b"key", b"stale").await;
    assert!(
        matches!(write, Err(helios_cluster::replication::ReplicationError::NotPrimary { primary: Some(p), .. }) if p == mirror_id),
        "a deposed primary names the new one, got {write:?}"
    );
}

#[tokio::test]
async fn test_no_split_brain() {
    // REP-004: Split-brain prevention via witness quorum
    let cluster = ReplicationCluster::with_witness(1).await;
    println!("seed {}", cluster.seed());
    let primary_id = cluster.get_primary_id(0).await;
    let mirror_id = cluster.get_mirror_id(0).await;
    let witness_id = cluster.get_witness_id(0).await;
    // Partition: mirror isolated (no quorum)
    cluster
        .partition_network(vec![primary_id, witness_id], vec![mirror_id])
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Primary should remain active (has witness quorum)
    assert!(cluster.is_primary(primary_id).await);
    // Mirror should NOT self-promote (no quorum)
    assert!(!cluster.is_primary(mirror_id).await);
    // Both should accept writes from clients
    let primary_write = cluster.write_to_node(primary_id, b"key", b"value1").await;
    assert!(primary_write.is_ok(), "Primary cannot accept writes");
    let mirror_write = cluster.write_to_node(mirror_id, b"key", b"value2").await;
    assert!(
        mirror_write.is_err(),
        "Mirror accepted write without being primary"
    );
}

#[tokio::test]
async fn test_automatic_failover_latency() {
    // REP-005: Failover completes within acceptable time
    let cluster = ReplicationCluster::with_witness(1).await;
    println!("seed {}", cluster.seed());
    let start = std::time::Instant::now();
    // Kill primary
    let primary_id = cluster.get_primary_id(0).await;
    cluster.kill_node(primary_id).await;
    // Wait for mirror promotion
    loop {
        if cluster.has_active_primary(0).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if start.elapsed() > Duration::from_secs(30) {
            panic!("Failover did not complete within 30 seconds");
        }
    }
    let failover_duration = start.elapsed();
    println!("Failover completed in {:?}", failover_duration);
    // Failover should complete in < 10 seconds
    assert!(
        failover_duration < Duration::from_secs(10),
        "Failover took too long: {:?}",
        failover_duration
    );
}
