//! Compute nodes as real `helios node --role compute` processes over replicated shards of
//! processes: a write through one compute node removes the row from every other node's cache
//! before it is acknowledged, through the shards' cache leases; a compute node that ignores
//! invalidations (the deliberately broken mode) serves a stale row; a killed compute node holds
//! writes only until its lease ends; a failover keeps cached rows fresh.
//!
//! One cluster at a time (a lock): the machine has two cores. Every cluster is killed on drop,
//! and its nodes are started with `--exit-with-parent`.

mod support;

use std::time::{Duration, Instant};

use helios_cluster::process::{compute_process, member_process};
use support::{micros, print_line, run, serial, value_of, Cluster, BOUND};

/// Reads row `id` through compute node `reader` (caching it), updates it through `writer`,
/// and returns what `reader` says right after the update was acknowledged: whether it still
/// caches the row, and the value it reads.
async fn read_update_read(cluster: &Cluster, reader: u32, writer: u32, id: i64) -> (bool, i64) {
    let reader = cluster.compute(reader);
    assert_eq!(value_of(&reader, id).await, 1);
    assert!(
        reader.cache_contains(id).await.expect("status"),
        "a point read through a node with its leases caches the row"
    );
    cluster
        .compute(writer)
        .execute(&format!("UPDATE data SET value = 999 WHERE id = {id}"))
        .await
        .expect("update");
    let cached = reader.cache_contains(id).await.expect("status");
    (cached, value_of(&reader, id).await)
}

#[test]
fn a_write_through_one_compute_node_leaves_no_stale_row_in_another() {
    let _serial = serial();
    run(async {
        let cluster = Cluster::start(2, 2, &[]).await;
        cluster
            .compute(0)
            .execute("INSERT INTO data (id, value) VALUES (1, 1), (2, 1), (3, 1)")
            .await
            .expect("insert");
        // No sleep: the update is acknowledged only after the other node dropped the row. A
        // round counts only if compute-0 dropped no whole cache meanwhile (a lease that lapsed
        // on a loaded machine), which would empty the cache without any invalidation; such a
        // round is repeated on the next row.
        let mut conclusive = None;
        for id in 1..=3 {
            let before = cluster.compute(0).status().await.expect("status");
            let (cached, value) = read_update_read(&cluster, 0, 1, id).await;
            assert!(!cached, "compute-0 still caches row {id} after the update");
            assert_eq!(value, 999);
            let after = cluster.compute(0).status().await.expect("status");
            if after.cache_drops == before.cache_drops {
                assert!(after.invalidations > before.invalidations);
                conclusive = Some(id);
                break;
            }
            eprintln!("round {id}: compute-0 dropped its whole cache (a lease lapsed); again");
        }
        assert!(
            conclusive.is_some(),
            "a lease lapsed in each of 3 rounds in a quiet cluster"
        );
    });
}

#[test]
fn a_compute_node_that_ignores_invalidations_serves_a_stale_row() {
    let _serial = serial();
    run(async {
        let cluster = Cluster::start(1, 2, &["--unsafe-skip-invalidation"]).await;
        cluster
            .compute(0)
            .execute("INSERT INTO data (id, value) VALUES (1, 1)")
            .await
            .expect("insert");
        let (cached, value) = read_update_read(&cluster, 0, 1, 1).await;
        assert!(cached, "the broken mode keeps the row");
        assert_eq!(
            value, 1,
            "the broken mode serves the row the update replaced"
        );
    });
}

#[test]
fn a_killed_compute_node_holds_writes_only_until_its_lease_ends_and_restarts_fresh() {
    let _serial = serial();
    run(async {
        let mut cluster = Cluster::start(1, 2, &[]).await;
        let writer = cluster.compute(0);
        writer
            .execute("INSERT INTO data (id, value) VALUES (1, 1)")
            .await
            .expect("insert");
        let reader = cluster.compute(1);
        assert_eq!(value_of(&reader, 1).await, 1);
        cluster.cluster.kill(compute_process(1)).expect("kill");
        let started = Instant::now();
        writer
            .execute("UPDATE data SET value = 2 WHERE id = 1")
            .await
            .expect("a write with a dead compute node");
        let held = started.elapsed();
        // The members' lease is 500 ms; the write waits for it at most once.
        assert!(held < Duration::from_secs(2), "write held {held:?}");
        let started = Instant::now();
        writer
            .execute("UPDATE data SET value = 3 WHERE id = 1")
            .await
            .expect("a second write");
        assert!(
            started.elapsed() < held.max(Duration::from_millis(300)),
            "once the lease ended, writes no longer wait for the dead node"
        );
        cluster
            .cluster
            .restart(compute_process(1))
            .expect("restart");
        cluster
            .cluster
            .wait_for_cache(1, BOUND)
            .await
            .expect("the restarted node renews its leases");
        assert_eq!(value_of(&cluster.compute(1), 1).await, 3);
    });
}

#[test]
fn after_a_failover_a_cached_row_is_never_older_than_the_new_primary_write() {
    let _serial = serial();
    run(async {
        let mut cluster = Cluster::start(1, 2, &[]).await;
        let reader = cluster.compute(0);
        let writer = cluster.compute(1);
        writer
            .execute("INSERT INTO data (id, value) VALUES (1, 1)")
            .await
            .expect("insert");
        assert_eq!(value_of(&reader, 1).await, 1);
        assert!(reader.cache_contains(1).await.expect("status"));
        let primary = cluster
            .cluster
            .wait_for_primary(0, BOUND)
            .await
            .expect("primary");
        cluster.cluster.kill(member_process(primary)).expect("kill");
        // The write retries until the mirror took over (about 250 ms of silence).
        writer
            .execute("UPDATE data SET value = 2 WHERE id = 1")
            .await
            .expect("a write after the failover");
        let new_primary = cluster
            .cluster
            .wait_for_primary(0, BOUND)
            .await
            .expect("new primary");
        assert_ne!(new_primary, primary);
        assert_eq!(value_of(&reader, 1).await, 2);
        // With one data member down, the reader's lease from it ends (500 ms after its last
        // renewal), and then it serves the shard from storage only.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let status = reader.status().await.expect("status");
            if status.cacheable_shards.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster
            .cluster
            .restart(member_process(primary))
            .expect("restart");
        cluster
            .cluster
            .wait_for_cache(0, BOUND)
            .await
            .expect("leases again from both data nodes");
        assert_eq!(value_of(&reader, 1).await, 2);
    });
}

/// Figures between processes (not a check):
/// `HELIOS_CACHE_WRITES=2000 cargo test --release -p helios --test compute_leases -- --ignored --nocapture figures`.
///
/// One shard, three compute nodes: rows written through c0 while c1 and c2 cache them. Per
/// write: its latency through c0; a read of the row through c1 right after (it misses: the
/// write removed the row before it was acknowledged) and again (a hit); and, from the shard's
/// primary, the delivery of each invalidation (commit index past the entry to the compute
/// node's acknowledgement). Beside them, the same number of writes straight to the shard
/// (`ShardClient`, no compute node) on a cluster without compute nodes, which is what the
/// leases add to a write.
#[test]
#[ignore = "figures, not a check: real processes, about 10 s per 1,000 writes"]
fn figures() {
    let writes: usize = std::env::var("HELIOS_CACHE_WRITES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let _serial = serial();
    let histogram = || hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    run(async {
        let cluster = Cluster::start(1, 3, &[]).await;
        let (writer, reader, other) = (cluster.compute(0), cluster.compute(1), cluster.compute(2));
        let rows = 100;
        for id in 0..rows {
            writer
                .execute(&format!("INSERT INTO data (id, value) VALUES ({id}, 0)"))
                .await
                .expect("insert");
        }
        let (mut write, mut miss, mut hit) = (histogram(), histogram(), histogram());
        for i in 0..writes {
            let id = (i % rows) as i64;
            for compute in [&reader, &other] {
                value_of(compute, id).await;
            }
            let started = Instant::now();
            writer
                .execute(&format!("UPDATE data SET value = {i} WHERE id = {id}"))
                .await
                .expect("update");
            write.record(micros(started.elapsed())).expect("record");
            for histogram in [&mut miss, &mut hit] {
                let started = Instant::now();
                assert_eq!(value_of(&reader, id).await, i as i64);
                histogram.record(micros(started.elapsed())).expect("record");
            }
        }
        let primary = cluster
            .cluster
            .wait_for_primary(0, BOUND)
            .await
            .expect("primary");
        let status = cluster
            .cluster
            .shard_client(Duration::from_secs(2))
            .status(0, primary)
            .await
            .expect("status");
        let compute_status = reader.status().await.expect("status");
        println!("== {writes} writes, one shard, three compute nodes (two caching every row)");
        print_line("write through c0 (with two cache leases)", &write);
        print_line("read through c1 right after the write (miss)", &miss);
        print_line("read through c1 again (cache hit)", &hit);
        if let Some(delivery) = status.invalidation_delivery {
            println!(
                "{:<52} n={:<6} p50={:>7.3} ms  p99={:>7.3} ms  max={:.3} ms",
                "invalidation: commit -> compute node acknowledged",
                delivery.n,
                delivery.p50_us as f64 / 1000.0,
                delivery.p99_us as f64 / 1000.0,
                delivery.max_us as f64 / 1000.0
            );
        }
        println!("c1: {compute_status:?}");
        drop(cluster);

        let bare = Cluster::spawn(1, 0, &[]).await;
        let client = bare.cluster.shard_client(Duration::from_secs(5));
        let primary = bare
            .cluster
            .wait_for_primary(0, BOUND)
            .await
            .expect("primary");
        let mut raw = histogram();
        for i in 0..writes {
            let started = Instant::now();
            client
                .write_at(0, primary, format!("k{}", i % rows).as_bytes(), b"v")
                .await
                .expect("write");
            raw.record(micros(started.elapsed())).expect("record");
        }
        print_line("write straight to the shard, no compute node", &raw);
    });
}
