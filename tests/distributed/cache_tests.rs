//! Seed section 4, "Cache Invalidation Tests": CACHE-001 and CACHE-002, then the proofs that
//! the cache can fail (the `unsafe_skip_invalidation` mode) and that the freshness rule holds
//! without the seed's sleeps.
//!
//! Deviations from the seed's text, all minimal:
//! - `use heliosdb_compute::cache::*` is `use helios_cluster::TestCluster`.
//! - CACHE-001's first `result` is `_result`: it is never read and would warn.
//! - Each test shuts the metadata group down at the end.

use std::time::Duration;

use helios_cluster::{ComputeNode, TestCluster};

#[tokio::test]
async fn test_cache_invalidation_on_write() {
    // CACHE-001: Compute node cache invalidated on write
    let cluster = TestCluster::builder()
        .storage_nodes(2)
        .compute_nodes(2)
        .build()
        .await;
    // Read from compute-0 (caches data)
    let compute_0 = cluster.get_compute_node(0).await;
    let _result = compute_0
        .query("SELECT * FROM data WHERE id = 1")
        .await
        .unwrap();
    assert!(compute_0.cache_contains(1).await);
    // Write via compute-1
    let compute_1 = cluster.get_compute_node(1).await;
    compute_1
        .execute("UPDATE data SET value = 999 WHERE id = 1")
        .await
        .unwrap();
    // Wait for invalidation broadcast
    tokio::time::sleep(Duration::from_millis(100)).await;
    // compute-0 cache should be invalidated
    assert!(!compute_0.cache_contains(1).await);
    // Next read should fetch fresh data
    let result = compute_0
        .query("SELECT value FROM data WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(result.rows[0].get::<i64>("value"), 999);
    cluster.shutdown().await;
}

#[tokio::test]
async fn test_distributed_cache_coherence() {
    // CACHE-002: Cache coherent across all compute nodes
    let cluster = TestCluster::builder()
        .storage_nodes(1)
        .compute_nodes(5)
        .build()
        .await;
    // All compute nodes read same key (cache it)
    for i in 0..5 {
        let compute = cluster.get_compute_node(i).await;
        compute
            .query("SELECT * FROM data WHERE id = 100")
            .await
            .unwrap();
        assert!(compute.cache_contains(100).await);
    }
    // Update via compute-0
    let compute_0 = cluster.get_compute_node(0).await;
    compute_0
        .execute("UPDATE data SET value = 777 WHERE id = 100")
        .await
        .unwrap();
    // Wait for invalidation
    tokio::time::sleep(Duration::from_millis(200)).await;
    // All compute nodes should have invalidated cache
    for i in 0..5 {
        let compute = cluster.get_compute_node(i).await;
        assert!(
            !compute.cache_contains(100).await,
            "Compute-{} cache not invalidated",
            i
        );
    }
    cluster.shutdown().await;
}

async fn value_of(compute: &ComputeNode, id: i64) -> i64 {
    let result = compute
        .query(&format!("SELECT value FROM data WHERE id = {id}"))
        .await
        .unwrap();
    result.rows[0].get::<i64>("value")
}

#[tokio::test]
async fn skip_invalidation_mode_serves_a_stale_cached_row() {
    // Setup: the broken mode, in which compute nodes ignore invalidations.
    let cluster = TestCluster::builder()
        .storage_nodes(2)
        .compute_nodes(2)
        .unsafe_skip_invalidation(true)
        .build()
        .await;
    let (compute_0, compute_1) = (
        cluster.get_compute_node(0).await,
        cluster.get_compute_node(1).await,
    );
    assert_eq!(value_of(&compute_0, 1).await, 10);
    // Workload: CACHE-001's write through the other node, and its wait.
    compute_1
        .execute("UPDATE data SET value = 999 WHERE id = 1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Check: CACHE-001's assertions fail in this mode, a stale read after an acknowledged write.
    assert!(
        compute_0.cache_contains(1).await,
        "broken mode: the row stays cached"
    );
    assert_eq!(
        value_of(&compute_0, 1).await,
        10,
        "broken mode: the cached row predates the acknowledged write of 999"
    );
    assert_eq!(value_of(&compute_1, 1).await, 999);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_read_never_returns_a_value_older_than_an_acknowledged_write() {
    // Setup: every compute node caches the row.
    let cluster = TestCluster::builder()
        .storage_nodes(3)
        .compute_nodes(3)
        .build()
        .await;
    let nodes = cluster.compute_nodes().to_vec();
    // Workload: write through one node, then read at once (no sleep) through every node.
    for round in 0..50_i64 {
        for node in &nodes {
            value_of(node, 7).await;
        }
        let writer = &nodes[(round % 3) as usize];
        writer
            .execute(&format!("UPDATE data SET value = {round} WHERE id = 7"))
            .await
            .unwrap();
        // Check: the write was acknowledged before these reads began.
        for node in &nodes {
            assert_eq!(
                value_of(node, 7).await,
                round,
                "compute-{} served a stale row in round {round}",
                node.index()
            );
        }
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_compute_node_that_lagged_on_invalidations_drops_its_cache() {
    // Setup: compute-0 caches a row.
    let cluster = TestCluster::builder().compute_nodes(1).build().await;
    let compute = cluster.get_compute_node(0).await;
    assert_eq!(value_of(&compute, 1).await, 10);
    assert!(compute.cache_contains(1).await);
    // Fault: more invalidations than the bus holds arrive while the node's listener cannot
    // run (the test's single-threaded runtime does not yield), so some are lost to it.
    let bus = cluster.storage().invalidations();
    for key in 0..(helios_cluster::storage::DEFAULT_BUS_CAPACITY as i64 + 10) {
        bus.publish("data", &helios_cluster::SqlValue::Int(10_000 + key));
    }
    // Check: the node cannot know whether it missed one for row 1, so it drops everything
    // before serving again, and the next read comes from storage.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(compute.cache_drops() >= 1, "the lag was not noticed");
    assert!(!compute.cache_contains(1).await);
    assert_eq!(value_of(&compute, 1).await, 10);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_never_see_a_value_older_than_the_last_acknowledged_write() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;
    // Setup: a writer on compute-0, readers on compute-1 and compute-2, one key.
    let cluster = TestCluster::builder().compute_nodes(3).build().await;
    let acknowledged = Arc::new(AtomicI64::new(80)); // data row 8 starts at 8 * 10
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 1..3 {
        let (compute, acknowledged, done) = (
            cluster.get_compute_node(i).await,
            Arc::clone(&acknowledged),
            Arc::clone(&done),
        );
        readers.push(tokio::spawn(async move {
            let mut n_reads = 0_u64;
            while !done.load(Ordering::SeqCst) && n_reads < 100_000 {
                let floor = acknowledged.load(Ordering::SeqCst);
                let seen = value_of(&compute, 8).await;
                assert!(
                    seen >= floor,
                    "compute-{i} read {seen} after {floor} was acknowledged"
                );
                n_reads += 1;
            }
            n_reads
        }));
    }
    // Workload: increasing values, each published as acknowledged only after `execute` returns.
    let writer = cluster.get_compute_node(0).await;
    for value in 81..=280 {
        writer
            .execute(&format!("UPDATE data SET value = {value} WHERE id = 8"))
            .await
            .unwrap();
        acknowledged.store(value, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    // Check: every reader ran and none saw an older value (asserted inside).
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_paused_node_falls_behind_on_invalidations_but_never_serves_a_stale_row() {
    // Setup: compute-0 caches row 11.
    let cluster = TestCluster::builder().compute_nodes(2).build().await;
    let (compute_0, compute_1) = (
        cluster.get_compute_node(0).await,
        cluster.get_compute_node(1).await,
    );
    assert_eq!(value_of(&compute_0, 11).await, 110);
    // Fault: pause compute-0; a read waits at its gate while compute-1 writes the row.
    compute_0.pause();
    let paused_read = tokio::spawn({
        let compute_0 = compute_0.clone();
        async move { value_of(&compute_0, 11).await }
    });
    compute_1
        .execute("UPDATE data SET value = 999 WHERE id = 11")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Check: the listener applied nothing while paused, and no read was served.
    assert!(!paused_read.is_finished(), "a paused node served a read");
    assert!(
        compute_0.cache_contains(11).await,
        "a paused node applied an invalidation"
    );
    // After resume, the waiting read and later ones see the acknowledged write.
    compute_0.resume();
    assert_eq!(paused_read.await.unwrap(), 999);
    assert_eq!(value_of(&compute_0, 11).await, 999);
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_isolated_node_is_unreachable_and_heals_with_its_cache_dropped() {
    // Setup: compute-0 caches row 12.
    let cluster = TestCluster::builder().compute_nodes(2).build().await;
    let (compute_0, compute_1) = (
        cluster.get_compute_node(0).await,
        cluster.get_compute_node(1).await,
    );
    assert_eq!(value_of(&compute_0, 12).await, 120);
    let drops_before = compute_0.cache_drops();
    // Fault: isolate compute-0; it refuses calls and misses the write through compute-1.
    compute_0.isolate();
    assert!(compute_0.is_up() && !compute_0.is_reachable());
    let unreachable = helios_cluster::ComputeError::Unreachable { node: 0 };
    assert_eq!(
        compute_0
            .query("SELECT value FROM data WHERE id = 12")
            .await,
        Err(unreachable.clone())
    );
    assert_eq!(
        compute_0
            .execute("UPDATE data SET value = 1 WHERE id = 12")
            .await,
        Err(unreachable)
    );
    compute_1
        .execute("UPDATE data SET value = 999 WHERE id = 12")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        compute_0.cache_contains(12).await,
        "an isolated node received an invalidation"
    );
    // Check: healing drops the cache before serving, so the next read is fresh.
    compute_0.heal();
    assert!(!compute_0.cache_contains(12).await);
    assert!(compute_0.cache_drops() > drops_before);
    assert_eq!(value_of(&compute_0, 12).await, 999);
    // And it is subscribed again: a later write through compute-1 invalidates its cache.
    compute_1
        .execute("UPDATE data SET value = 1000 WHERE id = 12")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!compute_0.cache_contains(12).await);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_restarted_node_starts_with_an_empty_cache_and_serves_fresh_rows() {
    // Setup: compute-0 caches rows 13 and 14.
    let cluster = TestCluster::builder().compute_nodes(2).build().await;
    let (compute_0, compute_1) = (
        cluster.get_compute_node(0).await,
        cluster.get_compute_node(1).await,
    );
    assert_eq!(value_of(&compute_0, 13).await, 130);
    assert_eq!(value_of(&compute_0, 14).await, 140);
    // Fault: kill compute-0; writes go on through compute-1 meanwhile.
    compute_0.kill().await;
    assert_eq!(compute_0.cached_rows(), 0, "a killed node kept its cache");
    compute_1
        .execute("UPDATE data SET value = 999 WHERE id = 13")
        .await
        .unwrap();
    // Check: after restart it reads fresh rows and applies later invalidations.
    compute_0.restart().await;
    assert_eq!(compute_0.cached_rows(), 0);
    assert_eq!(value_of(&compute_0, 13).await, 999);
    assert_eq!(value_of(&compute_0, 14).await, 140);
    let drops = compute_0.cache_drops();
    compute_1
        .execute("UPDATE data SET value = 1000 WHERE id = 14")
        .await
        .unwrap();
    assert_eq!(value_of(&compute_0, 14).await, 1000);
    assert_eq!(
        compute_0.cache_drops(),
        drops,
        "the restarted node's listener did not apply the invalidation in time"
    );
    cluster.shutdown().await;
}
