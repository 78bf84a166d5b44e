//! Seed section 5, "Distributed Transaction Tests": TX-001 to TX-003, then the proofs around
//! them: cross-shard placement, the `unsafe_dirty_reads` mode, coordinator crashes between
//! the phases, and bounded waits for conflicting writers.
//!
//! Deviations from the seed's text, all minimal:
//! - `use heliosdb_compute::transactions::*` is `use helios_cluster::TestCluster`.
//! - Each test shuts the metadata group down at the end.

use std::time::{Duration, Instant};

use helios_cluster::storage::key_hash;
use helios_cluster::{
    ComputeError, ComputeOptions, CrashPoint, SqlValue, StorageNodeId, TestCluster,
};

#[tokio::test]
async fn test_cross_shard_transaction_commit() {
    // TX-001: Cross-shard transaction commits atomically
    let cluster = TestCluster::builder()
        .storage_nodes(3)
        .compute_nodes(1)
        .build()
        .await;
    let compute = cluster.get_compute_node(0).await;
    // Start distributed transaction
    let tx = compute.begin_transaction().await;
    // Write to multiple shards
    tx.execute("INSERT INTO shard_0_table (id, value) VALUES (1, 100)")
        .await
        .unwrap();
    tx.execute("INSERT INTO shard_1_table (id, value) VALUES (2, 200)")
        .await
        .unwrap();
    tx.execute("INSERT INTO shard_2_table (id, value) VALUES (3, 300)")
        .await
        .unwrap();
    // Commit
    tx.commit().await.unwrap();
    // Verify all writes visible
    let r0 = compute
        .query("SELECT value FROM shard_0_table WHERE id = 1")
        .await
        .unwrap();
    let r1 = compute
        .query("SELECT value FROM shard_1_table WHERE id = 2")
        .await
        .unwrap();
    let r2 = compute
        .query("SELECT value FROM shard_2_table WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(r0.rows[0].get::<i64>("value"), 100);
    assert_eq!(r1.rows[0].get::<i64>("value"), 200);
    assert_eq!(r2.rows[0].get::<i64>("value"), 300);
    cluster.shutdown().await;
}

#[tokio::test]
async fn test_cross_shard_transaction_rollback() {
    // TX-002: Cross-shard transaction rolls back atomically
    let cluster = TestCluster::builder()
        .storage_nodes(3)
        .compute_nodes(1)
        .build()
        .await;
    let compute = cluster.get_compute_node(0).await;
    let tx = compute.begin_transaction().await;
    // Write to multiple shards
    tx.execute("INSERT INTO shard_0_table (id, value) VALUES (10, 1000)")
        .await
        .unwrap();
    tx.execute("INSERT INTO shard_1_table (id, value) VALUES (20, 2000)")
        .await
        .unwrap();
    // Rollback
    tx.rollback().await.unwrap();
    // Verify no writes are visible
    let r0 = compute
        .query("SELECT COUNT(*) as cnt FROM shard_0_table WHERE id = 10")
        .await
        .unwrap();
    let r1 = compute
        .query("SELECT COUNT(*) as cnt FROM shard_1_table WHERE id = 20")
        .await
        .unwrap();
    assert_eq!(r0.rows[0].get::<i64>("cnt"), 0);
    assert_eq!(r1.rows[0].get::<i64>("cnt"), 0);
    assert_eq!(total_intents(&cluster), 0, "rollback left intents behind");
    cluster.shutdown().await;
}

#[tokio::test]
async fn test_transaction_isolation() {
    // TX-003: Read Committed isolation level
    let cluster = TestCluster::new_test().await;
    let compute1 = cluster.get_compute_node(0).await;
    let compute2 = cluster.get_compute_node(1).await;
    // TX1: Begin and write (uncommitted)
    let tx1 = compute1.begin_transaction().await;
    tx1.execute("INSERT INTO test (id, value) VALUES (1, 100)")
        .await
        .unwrap();
    // TX2: Should not see uncommitted write
    let tx2 = compute2.begin_transaction().await;
    let result = tx2
        .query("SELECT value FROM test WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(result.rows.len(), 0);
    // TX1: Commit
    tx1.commit().await.unwrap();
    // TX2: Now should see committed write (with new query)
    let result = tx2
        .query("SELECT value FROM test WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(result.rows.len(), 1);
    assert_eq!(result.rows[0].get::<i64>("value"), 100);
    cluster.shutdown().await;
}

fn total_intents(cluster: &TestCluster) -> usize {
    let storage = cluster.storage();
    storage
        .node_handles()
        .iter()
        .map(|h| storage.node(h.id()).unwrap().intent_count())
        .sum()
}

fn owner_of(cluster: &TestCluster, id: i64) -> StorageNodeId {
    cluster
        .storage()
        .routing()
        .owner(key_hash(&SqlValue::Int(id)))
        .unwrap()
}

async fn count(cluster: &TestCluster, table: &str, id: i64) -> i64 {
    let compute = cluster.get_compute_node(0).await;
    let result = compute
        .query(&format!(
            "SELECT COUNT(*) as cnt FROM {table} WHERE id = {id}"
        ))
        .await
        .unwrap();
    result.rows[0].get::<i64>("cnt")
}

/// Writes TX-001's three rows in one transaction and returns it, uncommitted.
async fn three_shard_transaction(cluster: &TestCluster) -> helios_cluster::Transaction {
    let tx = cluster.get_compute_node(0).await.begin_transaction().await;
    for (i, id) in [1, 2, 3].into_iter().enumerate() {
        tx.execute(&format!(
            "INSERT INTO shard_{i}_table (id, value) VALUES ({id}, {})",
            id * 100
        ))
        .await
        .unwrap();
    }
    tx
}

/// Three storage nodes whose compute nodes settle crashed transactions only when asked, so a
/// test sees the intents a crash leaves.
async fn cluster_without_recovery_daemon() -> TestCluster {
    TestCluster::builder()
        .storage_nodes(3)
        .compute_options(ComputeOptions {
            recovery_interval: None,
            ..ComputeOptions::default()
        })
        .build()
        .await
}

#[tokio::test]
async fn tx_001_spans_three_storage_nodes() {
    // Setup: TX-001's cluster. Check: its keys are not all on one node, so it is cross-shard.
    let cluster = TestCluster::builder().storage_nodes(3).build().await;
    let owners: std::collections::BTreeSet<_> =
        [1, 2, 3].iter().map(|&id| owner_of(&cluster, id)).collect();
    assert_eq!(owners.len(), 3, "TX-001's keys land on {owners:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn dirty_reads_mode_shows_an_uncommitted_intent() {
    // Setup: the broken mode, in which storage reads return other transactions' intents.
    let cluster = TestCluster::builder()
        .unsafe_dirty_reads(true)
        .build()
        .await;
    let (compute1, compute2) = (
        cluster.get_compute_node(0).await,
        cluster.get_compute_node(1).await,
    );
    // Workload: TX-003's uncommitted insert, read by another transaction and a plain read.
    let tx1 = compute1.begin_transaction().await;
    tx1.execute("INSERT INTO test (id, value) VALUES (1, 100)")
        .await
        .unwrap();
    let tx2 = compute2.begin_transaction().await;
    let seen = tx2
        .query("SELECT value FROM test WHERE id = 1")
        .await
        .unwrap();
    // Check: TX-003's first assertion fails in this mode; after rollback the read was of a
    // write that never happened (G1a, aborted read).
    assert_eq!(seen.rows.len(), 1, "broken mode: the intent is visible");
    assert_eq!(seen.rows[0].get::<i64>("value"), 100);
    tx1.rollback().await.unwrap();
    let after = tx2
        .query("SELECT value FROM test WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(after.rows.len(), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn coordinator_crash_after_the_commit_record_is_recovered_as_a_commit() {
    let cluster = cluster_without_recovery_daemon().await;
    // Fault: the coordinator stops after recording commit, before phase 2.
    let tx = three_shard_transaction(&cluster).await;
    let crashed = tx.commit_then_crash(CrashPoint::AfterDecision).await;
    assert!(matches!(
        crashed,
        Err(ComputeError::CoordinatorCrashed { .. })
    ));
    assert_eq!(
        count(&cluster, "shard_0_table", 1).await,
        0,
        "intent visible"
    );
    assert_eq!(total_intents(&cluster), 3);
    // Check: recovery settles every participant from the record, all or nothing.
    let compute = cluster.get_compute_node(1).await;
    let settled = compute.recover_transactions(Duration::ZERO).await.unwrap();
    assert_eq!(settled, 3, "one settlement per participant");
    for (i, id) in [1, 2, 3].into_iter().enumerate() {
        assert_eq!(count(&cluster, &format!("shard_{i}_table"), id).await, 1);
    }
    assert_eq!(total_intents(&cluster), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn coordinator_crash_before_the_commit_record_is_recovered_as_an_abort() {
    let cluster = cluster_without_recovery_daemon().await;
    // Fault: the coordinator stops after every participant prepared, with no record.
    let tx = three_shard_transaction(&cluster).await;
    let id = tx.id();
    let crashed = tx.commit_then_crash(CrashPoint::AfterPrepare).await;
    assert!(matches!(
        crashed,
        Err(ComputeError::CoordinatorCrashed { .. })
    ));
    // Check: recovery records an abort and removes every intent; the keys are free again.
    let compute = cluster.get_compute_node(1).await;
    compute.recover_transactions(Duration::ZERO).await.unwrap();
    assert_eq!(total_intents(&cluster), 0);
    for (i, key) in [1, 2, 3].into_iter().enumerate() {
        assert_eq!(count(&cluster, &format!("shard_{i}_table"), key).await, 0);
    }
    compute
        .execute("INSERT INTO shard_0_table (id, value) VALUES (1, 5)")
        .await
        .unwrap();
    assert_eq!(count(&cluster, "shard_0_table", 1).await, 1);
    // The crashed coordinator's commit can no longer win: the record says aborted.
    let records = helios_cluster::compute::CommitRecords::new(
        cluster.storage().metadata().clone(),
        Duration::from_secs(5),
    );
    assert_eq!(
        records
            .decide(id, helios_cluster::Decision::Commit)
            .await
            .unwrap(),
        helios_cluster::Decision::Abort
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_writer_blocked_by_an_abandoned_intent_aborts_it_within_the_bound() {
    let options = ComputeOptions {
        abandoned_after: Duration::from_millis(200),
        lock_wait_timeout: Duration::from_secs(2),
        // The blocked writer, not the daemon, must be the one that resolves the intent.
        recovery_interval: None,
        ..ComputeOptions::default()
    };
    let cluster = TestCluster::builder()
        .compute_options(options)
        .build()
        .await;
    // Fault: a coordinator crashes holding a prepared intent on test id 5.
    let tx = cluster.get_compute_node(0).await.begin_transaction().await;
    tx.execute("INSERT INTO test (id, value) VALUES (5, 1)")
        .await
        .unwrap();
    let _ = tx.commit_then_crash(CrashPoint::AfterPrepare).await;
    // Workload: another node writes the same key.
    let started = Instant::now();
    cluster
        .get_compute_node(1)
        .await
        .execute("INSERT INTO test (id, value) VALUES (5, 2)")
        .await
        .unwrap();
    // Check: it waited for the abandonment bound, not for ever, and its write won.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "waited {waited:?}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    let compute = cluster.get_compute_node(0).await;
    let result = compute
        .query("SELECT value FROM test WHERE id = 5")
        .await
        .unwrap();
    assert_eq!(result.rows[0].get::<i64>("value"), 2);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_conflicting_writer_gives_up_with_a_write_conflict_error() {
    let options = ComputeOptions {
        abandoned_after: Duration::from_secs(30),
        lock_wait_timeout: Duration::from_millis(300),
        ..ComputeOptions::default()
    };
    let cluster = TestCluster::builder()
        .compute_options(options)
        .build()
        .await;
    let holder = cluster.get_compute_node(0).await.begin_transaction().await;
    holder
        .execute("UPDATE data SET value = 1 WHERE id = 6")
        .await
        .unwrap();
    // Workload: a second transaction writes the key the live first one holds.
    let waiter = cluster.get_compute_node(1).await.begin_transaction().await;
    let started = Instant::now();
    let refused = waiter
        .execute("UPDATE data SET value = 2 WHERE id = 6")
        .await;
    // Check: a clear error within the bound; the holder still commits.
    assert!(
        matches!(refused, Err(ComputeError::WriteConflict { holder: h, .. }) if h == holder.id()),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    waiter.rollback().await.unwrap();
    holder.commit().await.unwrap();
    let compute = cluster.get_compute_node(1).await;
    let result = compute
        .query("SELECT value FROM data WHERE id = 6")
        .await
        .unwrap();
    assert_eq!(result.rows[0].get::<i64>("value"), 1);
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_recovery_daemon_settles_a_crashed_commit_without_being_asked() {
    let options = ComputeOptions {
        abandoned_after: Duration::from_millis(200),
        recovery_interval: Some(Duration::from_millis(50)),
        ..ComputeOptions::default()
    };
    let cluster = TestCluster::builder()
        .storage_nodes(3)
        .compute_options(options)
        .build()
        .await;
    // Fault: the coordinator crashes after recording commit.
    let tx = three_shard_transaction(&cluster).await;
    let _ = tx.commit_then_crash(CrashPoint::AfterDecision).await;
    // Check: within a bounded wait, every row is visible and no intent is left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while total_intents(&cluster) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(total_intents(&cluster), 0, "intents left after 5 s");
    for (i, id) in [1, 2, 3].into_iter().enumerate() {
        assert_eq!(count(&cluster, &format!("shard_{i}_table"), id).await, 1);
    }
    cluster.shutdown().await;
}

/// The value of `data` row `id`, read through compute node `index`.
async fn data_value(cluster: &TestCluster, index: usize, id: i64) -> Option<i64> {
    let result = cluster
        .get_compute_node(index)
        .await
        .query(&format!("SELECT value FROM data WHERE id = {id}"))
        .await
        .unwrap();
    result
        .rows
        .first()
        .and_then(|row| row.get::<Option<i64>>("value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_through_two_compute_nodes_are_never_lost() {
    // Setup: data row 5 holds 50; two compute nodes.
    let cluster = TestCluster::new_test().await;
    let (n_tasks, n_rounds) = (8_i64, 20_i64);
    // Workload: each task increments the row, half of them as plain statements and half in
    // transactions; the storage node evaluates `value + 1` against the row under its lock.
    let mut tasks = Vec::new();
    for task in 0..n_tasks {
        let compute = cluster.get_compute_node((task % 2) as usize).await;
        tasks.push(tokio::spawn(async move {
            let mut committed = 0_i64;
            for _ in 0..n_rounds {
                let sql = "UPDATE data SET value = value + 1 WHERE id = 5";
                if task % 4 < 2 {
                    compute.execute(sql).await.unwrap();
                    committed += 1;
                    continue;
                }
                let tx = compute.begin_transaction().await;
                let Ok(written) = tx.execute(sql).await else {
                    tx.rollback().await.unwrap();
                    continue;
                };
                assert_eq!(written.rows_affected, 1);
                if tx.commit().await.is_ok() {
                    committed += 1;
                }
            }
            committed
        }));
    }
    let mut committed = 0;
    for task in tasks {
        committed += task.await.unwrap();
    }
    // Check: every acknowledged increment is in the row, none twice.
    assert!(
        committed >= n_tasks * n_rounds / 2,
        "{committed} increments committed"
    );
    assert_eq!(data_value(&cluster, 0, 5).await, Some(50 + committed));
    assert_eq!(total_intents(&cluster), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn update_expressions_compute_on_the_stored_row_and_refuse_what_does_not_evaluate() {
    let cluster = TestCluster::builder().compute_nodes(1).build().await;
    let compute = cluster.get_compute_node(0).await;
    // Arithmetic and concatenation, outside and inside a transaction.
    compute
        .execute("UPDATE data SET value = value - 3 WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(data_value(&cluster, 0, 1).await, Some(7));
    compute
        .execute("INSERT INTO test (id, v, n) VALUES (1, 'a,', NULL)")
        .await
        .unwrap();
    let tx = compute.begin_transaction().await;
    tx.execute("UPDATE test SET v = v || 'b,' WHERE id = 1")
        .await
        .unwrap();
    tx.execute("UPDATE test SET v = v || 'c,', n = n + 1 WHERE id = 1")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let row = compute
        .query("SELECT v, n FROM test WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(row.rows[0].get::<String>("v"), "a,b,c,");
    assert_eq!(
        row.rows[0].get::<Option<i64>>("n"),
        None,
        "NULL + 1 is NULL"
    );
    // Overflow and mismatched types are definite errors that change nothing.
    let refused = [
        "UPDATE data SET value = value + 9223372036854775807 WHERE id = 1",
        "UPDATE data SET value = value || 'x' WHERE id = 1",
        "UPDATE data SET value = value + 'x' WHERE id = 1",
        "UPDATE data SET value = id + 1 WHERE id = 1",
    ];
    for sql in refused {
        let error = compute.execute(sql).await.unwrap_err();
        assert!(!error.outcome_is_unknown(), "{sql}: {error}");
        let tx = compute.begin_transaction().await;
        let in_tx = tx.execute(sql).await.unwrap_err();
        assert!(!in_tx.outcome_is_unknown(), "{sql}: {in_tx}");
        tx.rollback().await.unwrap();
    }
    let overflow = compute.execute(refused[0]).await.unwrap_err().to_string();
    assert!(overflow.contains("overflow"), "{overflow}");
    assert_eq!(data_value(&cluster, 0, 1).await, Some(7));
    assert_eq!(total_intents(&cluster), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn select_for_update_serializes_two_read_modify_write_transactions() {
    let cluster = TestCluster::new_test().await;
    let (compute_0, compute_1) = (
        cluster.get_compute_node(0).await,
        cluster.get_compute_node(1).await,
    );
    // Without FOR UPDATE, read committed loses an update: both read 70, both write 71.
    let (t1, t2) = (
        compute_0.begin_transaction().await,
        compute_1.begin_transaction().await,
    );
    let read = "SELECT value FROM data WHERE id = 7";
    let seen_1 = t1.query(read).await.unwrap().rows[0].get::<i64>("value");
    let seen_2 = t2.query(read).await.unwrap().rows[0].get::<i64>("value");
    let write = |seen: i64| format!("UPDATE data SET value = {} WHERE id = 7", seen + 1);
    t1.execute(&write(seen_1)).await.unwrap();
    t1.commit().await.unwrap();
    t2.execute(&write(seen_2)).await.unwrap();
    t2.commit().await.unwrap();
    assert_eq!(
        data_value(&cluster, 0, 7).await,
        Some(71),
        "the lost update"
    );
    // With FOR UPDATE, the second transaction's read waits for the first to commit.
    let locked = "SELECT value FROM data WHERE id = 7 FOR UPDATE";
    let t1 = compute_0.begin_transaction().await;
    let seen_1 = t1.query(locked).await.unwrap().rows[0].get::<i64>("value");
    let t2 = compute_1.begin_transaction().await;
    let second = tokio::spawn(async move {
        let seen = t2.query(locked).await.unwrap().rows[0].get::<i64>("value");
        t2.execute(&format!(
            "UPDATE data SET value = {} WHERE id = 7",
            seen + 1
        ))
        .await
        .unwrap();
        t2.commit().await.unwrap();
        seen
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !second.is_finished(),
        "FOR UPDATE did not wait for the lock"
    );
    t1.execute(&write(seen_1)).await.unwrap();
    t1.commit().await.unwrap();
    assert_eq!(
        second.await.unwrap(),
        72,
        "the second read saw the first's commit"
    );
    assert_eq!(data_value(&cluster, 1, 7).await, Some(73));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_locked_read_whose_lock_was_taken_as_abandoned_cannot_commit() {
    // A read holds a FOR UPDATE lock longer than the abandonment bound; a writer blocked by it
    // presumes it abandoned, records an abort for it, takes the row and commits a change. The
    // read must not then pass for one that held its lock: its commit is refused.
    let options = ComputeOptions {
        abandoned_after: Duration::from_millis(200),
        lock_wait_timeout: Duration::from_secs(2),
        recovery_interval: None,
        ..ComputeOptions::default()
    };
    let cluster = TestCluster::builder()
        .compute_options(options)
        .build()
        .await;
    let (compute_0, compute_1) = (
        cluster.get_compute_node(0).await,
        cluster.get_compute_node(1).await,
    );
    let reader = compute_0.begin_transaction().await;
    let seen = reader
        .query("SELECT value FROM data WHERE id = 7 FOR UPDATE")
        .await
        .unwrap()
        .rows[0]
        .get::<i64>("value");
    let writer = compute_1.begin_transaction().await;
    let started = Instant::now();
    writer
        .execute("UPDATE data SET value = value + 1 WHERE id = 7")
        .await
        .expect("the writer takes the lock of a presumed-abandoned reader");
    assert!(started.elapsed() >= Duration::from_millis(200));
    writer.commit().await.expect("the writer commits");
    assert_eq!(data_value(&cluster, 0, 7).await, Some(seen + 1));
    // The reader's view is stale; committing it is how it learns.
    let refused = reader.commit().await;
    assert!(
        matches!(refused, Err(ComputeError::Aborted { .. })),
        "a read whose lock was broken committed: {refused:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn for_update_locks_only_rows_that_exist_and_only_inside_a_transaction() {
    let cluster = TestCluster::builder().compute_nodes(1).build().await;
    let compute = cluster.get_compute_node(0).await;
    // Outside a transaction there is no lock to hold.
    let outside = compute
        .query("SELECT value FROM data WHERE id = 3 FOR UPDATE")
        .await
        .unwrap_err();
    assert!(
        outside.to_string().contains("outside a transaction"),
        "{outside}"
    );
    // A missing row: no rows and no lock.
    let tx = compute.begin_transaction().await;
    let missing = tx
        .query("SELECT value FROM data WHERE id = 5000 FOR UPDATE")
        .await
        .unwrap();
    assert!(missing.rows.is_empty());
    assert_eq!(total_intents(&cluster), 0);
    // A lock-only commit leaves the row, and the caches holding it, untouched.
    assert_eq!(data_value(&cluster, 0, 3).await, Some(30));
    assert!(compute.cache_contains(3).await);
    let published = cluster.storage().invalidations().published_seq();
    tx.query("SELECT value FROM data WHERE id = 3 FOR UPDATE")
        .await
        .unwrap();
    assert_eq!(total_intents(&cluster), 1);
    tx.commit().await.unwrap();
    assert_eq!(total_intents(&cluster), 0);
    assert_eq!(cluster.storage().invalidations().published_seq(), published);
    assert!(compute.cache_contains(3).await);
    assert_eq!(data_value(&cluster, 0, 3).await, Some(30));
    cluster.shutdown().await;
}

/// The sum of `data` rows 1 and 2 (on different storage nodes), read from storage.
async fn balance_total(cluster: &TestCluster) -> i64 {
    let mut total = 0;
    for id in [1, 2] {
        total += data_value(cluster, 1, id).await.unwrap();
    }
    total
}

/// Begins a transfer of 5 from `data` row 1 to row 2 on compute node 0.
async fn transfer(cluster: &TestCluster) -> helios_cluster::Transaction {
    assert_ne!(
        owner_of(cluster, 1),
        owner_of(cluster, 2),
        "not cross-shard"
    );
    let tx = cluster.get_compute_node(0).await.begin_transaction().await;
    tx.execute("UPDATE data SET value = value - 5 WHERE id = 1")
        .await
        .unwrap();
    tx.execute("UPDATE data SET value = value + 5 WHERE id = 2")
        .await
        .unwrap();
    tx
}

#[tokio::test]
async fn without_two_phase_commit_a_crash_between_shards_breaks_the_total() {
    // Setup: the broken mode; rows 1 and 2 hold 10 and 20.
    let cluster = TestCluster::builder()
        .storage_nodes(3)
        .unsafe_no_2pc(true)
        .compute_options(ComputeOptions {
            recovery_interval: None,
            unsafe_no_2pc: true,
            ..ComputeOptions::default()
        })
        .build()
        .await;
    assert_eq!(balance_total(&cluster).await, 30);
    // Without a fault the mode commits like 2PC.
    transfer(&cluster).await.commit().await.unwrap();
    assert_eq!(balance_total(&cluster).await, 30);
    // Fault: the coordinator crashes after the first participant committed.
    let crashed = transfer(&cluster)
        .await
        .commit_then_crash(CrashPoint::BetweenShardCommits)
        .await;
    assert!(matches!(
        crashed,
        Err(ComputeError::CoordinatorCrashed { .. })
    ));
    // Check: with no commit record, recovery aborts the rest; half the transfer stays.
    let settled = cluster
        .get_compute_node(1)
        .await
        .recover_transactions(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(settled, 1, "one participant left to recovery");
    assert_eq!(total_intents(&cluster), 0);
    let total = balance_total(&cluster).await;
    assert!(
        total == 25 || total == 35,
        "broken mode kept the total: {total}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn with_two_phase_commit_a_crash_after_the_decision_keeps_the_total() {
    let cluster = cluster_without_recovery_daemon().await;
    assert_eq!(balance_total(&cluster).await, 30);
    // Fault: the coordinator crashes once the decision is recorded, then another between the
    // deliveries of a second transfer.
    for point in [CrashPoint::AfterDecision, CrashPoint::BetweenShardCommits] {
        let crashed = transfer(&cluster).await.commit_then_crash(point).await;
        assert!(matches!(
            crashed,
            Err(ComputeError::CoordinatorCrashed { .. })
        ));
        // Check: recovery completes the transfer from the record; the total holds.
        cluster
            .get_compute_node(1)
            .await
            .recover_transactions(Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(total_intents(&cluster), 0);
        assert_eq!(balance_total(&cluster).await, 30, "after {point:?}");
    }
    assert_eq!(data_value(&cluster, 1, 1).await, Some(0));
    assert_eq!(data_value(&cluster, 1, 2).await, Some(30));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_killed_compute_node_refuses_every_call_until_restarted() {
    let cluster = TestCluster::new_test().await;
    let compute = cluster.get_compute_node(0).await;
    assert_eq!(compute.name(), "c0");
    let tx = compute.begin_transaction().await;
    tx.execute("UPDATE data SET value = 1 WHERE id = 4")
        .await
        .unwrap();
    // Fault: kill compute-0 with a transaction open.
    compute.kill().await;
    assert!(!compute.is_up());
    // Check: every call is a definite failure naming the node.
    let down = ComputeError::NodeDown { node: 0 };
    assert_eq!(
        compute.query("SELECT value FROM data WHERE id = 4").await,
        Err(down.clone())
    );
    assert_eq!(
        compute
            .execute("UPDATE data SET value = 2 WHERE id = 4")
            .await,
        Err(down.clone())
    );
    let fresh = compute.begin_transaction().await;
    assert_eq!(
        fresh.execute("SELECT value FROM data WHERE id = 4").await,
        Err(down.clone())
    );
    assert_eq!(
        tx.execute("SELECT value FROM data WHERE id = 4").await,
        Err(down.clone())
    );
    assert!(!down.outcome_is_unknown());
    // A dead node rolls nothing back: its intent stays until recovery.
    drop(fresh);
    drop(tx);
    assert_eq!(total_intents(&cluster), 1);
    cluster
        .get_compute_node(1)
        .await
        .recover_transactions(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(total_intents(&cluster), 0);
    // Restart: it serves again, but a transaction of its previous life stays refused.
    let old = compute.begin_transaction().await;
    compute.restart().await;
    assert!(compute.is_up());
    assert_eq!(data_value(&cluster, 0, 4).await, Some(40));
    assert_eq!(
        old.execute("SELECT value FROM data WHERE id = 4").await,
        Err(down)
    );
    let tx = compute.begin_transaction().await;
    tx.execute("UPDATE data SET value = value + 1 WHERE id = 4")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(data_value(&cluster, 1, 4).await, Some(41));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_kill_between_prepare_and_decision_is_settled_by_another_nodes_recovery() {
    let cluster = cluster_without_recovery_daemon().await;
    let tx = three_shard_transaction(&cluster).await;
    let id = tx.id();
    // Fault: with the metadata group down, the commit prepares every participant and then
    // waits to record its decision; compute-0 is killed there.
    let raft = cluster.storage().metadata().raft();
    let n_metadata = cluster.storage().options().n_metadata_nodes as u64;
    for node in 0..n_metadata {
        raft.kill_node(node).await;
    }
    let commit = tokio::spawn(tx.commit());
    let storage = cluster.storage();
    let deadline = Instant::now() + Duration::from_secs(5);
    while storage.node_handles().iter().any(|h| {
        storage.node(h.id()).unwrap().tx_state(id)
            != Some(helios_cluster::compute::two_phase::ParticipantState::Prepared)
    }) {
        assert!(Instant::now() < deadline, "participants never prepared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.get_compute_node(0).await.kill().await;
    // Check: the commit stops at once with an unknown outcome, and leaves every intent.
    let cut = tokio::time::timeout(Duration::from_secs(2), commit)
        .await
        .expect("the commit stopped when its node died")
        .unwrap();
    assert!(
        matches!(&cut, Err(error @ ComputeError::CommitInterrupted { .. }) if error.outcome_is_unknown()),
        "{cut:?}"
    );
    assert_eq!(total_intents(&cluster), 3);
    // Another node's recovery, once the metadata group is back, finds no decision and aborts.
    for node in 0..n_metadata {
        raft.restart_node(node).await;
    }
    let settled = cluster
        .get_compute_node(1)
        .await
        .recover_transactions(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(settled, 3);
    assert_eq!(total_intents(&cluster), 0);
    cluster.get_compute_node(0).await.restart().await;
    for (i, key) in [1, 2, 3].into_iter().enumerate() {
        assert_eq!(count(&cluster, &format!("shard_{i}_table"), key).await, 0);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_commit_on_a_paused_node_waits_and_completes_after_resume() {
    let cluster = TestCluster::new_test().await;
    let compute = cluster.get_compute_node(0).await;
    let tx = compute.begin_transaction().await;
    tx.execute("UPDATE data SET value = value + 1 WHERE id = 9")
        .await
        .unwrap();
    // Fault: pause compute-0; its calls wait, bounded only by the caller's timeout.
    compute.pause();
    let waited = tokio::time::timeout(
        Duration::from_millis(100),
        compute.query("SELECT value FROM data WHERE id = 9"),
    )
    .await;
    assert!(waited.is_err(), "a paused node answered: {waited:?}");
    let commit = tokio::spawn(tx.commit());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!commit.is_finished(), "a paused node committed");
    assert_eq!(data_value(&cluster, 1, 9).await, Some(90));
    // Check: after resume the commit completes and the node serves the new value.
    compute.resume();
    commit.await.unwrap().unwrap();
    assert_eq!(data_value(&cluster, 0, 9).await, Some(91));
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_isolated_coordinator_fails_definitely_and_leaves_its_intents_to_recovery() {
    let cluster = cluster_without_recovery_daemon().await;
    let compute = cluster.get_compute_node(0).await;
    let tx = three_shard_transaction(&cluster).await;
    // Fault: isolate compute-0 before it commits.
    compute.isolate();
    let refused = tx.commit().await;
    assert_eq!(refused, Err(ComputeError::Unreachable { node: 0 }));
    assert!(!refused.unwrap_err().outcome_is_unknown());
    assert_eq!(total_intents(&cluster), 3, "a cut-off node rolled back");
    // Check: another node's recovery aborts them; the healed node serves again.
    cluster
        .get_compute_node(1)
        .await
        .recover_transactions(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(total_intents(&cluster), 0);
    compute.heal();
    assert_eq!(count(&cluster, "shard_0_table", 1).await, 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_armed_crash_kills_the_coordinator_between_shard_commits() {
    // Setup: real 2PC and the broken mode, each with a crash armed on compute node 0 (the
    // nemesis's crash-compute fault).
    for no_2pc in [false, true] {
        let cluster = TestCluster::builder()
            .storage_nodes(3)
            .compute_options(ComputeOptions {
                recovery_interval: None,
                unsafe_no_2pc: no_2pc,
                ..ComputeOptions::default()
            })
            .build()
            .await;
        let coordinator = cluster.get_compute_node(0).await;
        coordinator.arm_crash(CrashPoint::BetweenShardCommits);

        // Fault: an ordinary commit reaches the armed point; the whole node dies there.
        let crashed = transfer(&cluster).await.commit().await;
        assert!(
            matches!(crashed, Err(ComputeError::CoordinatorCrashed { .. })),
            "no_2pc {no_2pc}: {crashed:?}"
        );
        assert!(!coordinator.is_up(), "the armed crash killed the node");
        assert!(!coordinator.disarm_crash(), "a fired crash is disarmed");

        // Check: recovery from the record completes the transfer under 2PC; without 2PC there
        // is no record, so recovery aborts the rest and half the transfer stays.
        cluster
            .get_compute_node(1)
            .await
            .recover_transactions(Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(total_intents(&cluster), 0);
        let total = balance_total(&cluster).await;
        if no_2pc {
            assert!(total == 25 || total == 35, "broken mode kept the total");
        } else {
            assert_eq!(total, 30, "2PC lost half a transfer");
        }
        cluster.shutdown().await;
    }
}
