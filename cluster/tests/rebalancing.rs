//! Scenario tests of sharded storage: durability across restart, crashes in the middle of a
//! move (resume and roll back), the unsafe skip-catchup mode losing writes, and clear errors
//! for bad SQL.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use helios_cluster::sharding::{MoveLimits, MovePhase};
use helios_cluster::{
    ClusterError, Column, CreateTableRequest, DataType, RebalanceStatus, SqlValue, StorageCluster,
    StorageClusterOptions, StorageNodeId,
};

const NO_PARAMS: &[SqlValue] = &[];

async fn cluster_with(limits: MoveLimits) -> StorageCluster {
    let options = StorageClusterOptions {
        move_limits: limits,
        ..StorageClusterOptions::default()
    };
    StorageCluster::with_options(options)
        .await
        .expect("cluster forms")
}

async fn load(cluster: &StorageCluster, table: &str, ids: std::ops::Range<i64>) {
    cluster.create_table(table, "id").await;
    for id in ids {
        cluster
            .insert(table, vec![("id", id)])
            .await
            .expect("insert on a healthy cluster");
    }
}

async fn ids_of(cluster: &StorageCluster, table: &str) -> BTreeSet<i64> {
    let rows = cluster.read_all(table).await.expect("read all");
    rows.iter()
        .map(|row| match row.get("id") {
            Some(SqlValue::Int(id)) => *id,
            other => panic!("row without integer id: {other:?}"),
        })
        .collect()
}

/// Polls until `condition` holds, at most `limit`.
async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    condition()
}

fn slow_copy() -> MoveLimits {
    MoveLimits {
        copy_batch_rows: 16,
        copy_pause: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(20),
        ..MoveLimits::default()
    }
}

#[tokio::test]
async fn a_node_with_a_data_directory_keeps_acknowledged_rows_across_restart() {
    // Setup: redb-backed nodes.
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StorageClusterOptions {
        data_dir: Some(dir.path().to_path_buf()),
        ..StorageClusterOptions::default()
    };
    let cluster = StorageCluster::with_options(options).await.expect("forms");
    load(&cluster, "durable", 0..300).await;
    assert!(dir.path().join("node_0").join("storage.redb").exists());

    // Fault: kill and restart every node (each closes and reopens its redb file).
    for node in cluster.node_handles() {
        cluster.kill_node(node.id()).await.unwrap();
        let refused = cluster
            .query("SELECT COUNT(*) FROM durable", NO_PARAMS)
            .await;
        assert!(refused.is_err(), "a cluster with a dead node cannot count");
        cluster.restart_node(node.id()).await.unwrap();
    }

    // Check: every acknowledged row is back.
    assert_eq!(ids_of(&cluster, "durable").await, (0..300).collect());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_crash_mid_move_leaves_old_owners_authoritative_and_the_move_resumes() {
    let cluster = cluster_with(slow_copy()).await;
    load(&cluster, "t", 0..5_000).await;

    // Fault: the joining node dies during the copy.
    let target = cluster.add_node("node_3", "127.0.0.1:7003").await.unwrap();
    let copying = wait_until(Duration::from_secs(10), || {
        cluster
            .rebalance_progress()
            .is_some_and(|p| p.phase == MovePhase::Copying && p.rows_moved > 100)
    })
    .await;
    assert!(copying, "the copy started");
    cluster.kill_node(target.id()).await.unwrap();

    // While it is down, the old owners serve every row.
    assert_eq!(ids_of(&cluster, "t").await, (0..5_000).collect());
    let failed = wait_until(Duration::from_secs(10), || {
        cluster.rebalance_progress().is_some_and(|p| p.attempt >= 2)
    })
    .await;
    assert!(failed, "the attempt failed and a new one began");

    // Heal: the target comes back and the move resumes to completion.
    cluster.restart_node(target.id()).await.unwrap();
    let status = cluster.wait_for_rebalancing_complete().await;
    let RebalanceStatus::Completed(progress) = status else {
        panic!("move did not complete: {status:?}");
    };
    assert!(progress.attempt >= 2, "{progress:?}");
    assert_eq!(ids_of(&cluster, "t").await, (0..5_000).collect());
    let distribution = cluster.get_data_distribution().await;
    assert!(distribution[&target.id()] > 0);
    assert_eq!(distribution.values().sum::<usize>(), 5_000);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_target_never_returns_rolls_back() {
    let limits = MoveLimits {
        max_attempts: 3,
        ..slow_copy()
    };
    let cluster = cluster_with(limits).await;
    load(&cluster, "t", 0..3_000).await;
    let epoch_before = cluster.routing().epoch();

    let target = cluster.add_node("node_3", "127.0.0.1:7003").await.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || cluster
            .rebalance_progress()
            .is_some_and(|p| p.rows_moved > 0))
        .await
    );
    cluster.kill_node(target.id()).await.unwrap();

    let status = cluster.wait_for_rebalancing_complete().await;
    assert!(matches!(status, RebalanceStatus::Aborted(_)), "{status:?}");
    let routing = cluster.refresh_routing().await.unwrap();
    assert_eq!(routing.epoch(), epoch_before, "ownership never changed");
    assert!(routing.map.node_named("node_3").is_none());
    assert_eq!(ids_of(&cluster, "t").await, (0..3_000).collect());
    let nodes: Vec<StorageNodeId> = cluster.get_data_distribution().await.into_keys().collect();
    assert_eq!(nodes.len(), 3);

    // A later join of another node works.
    cluster.add_node("node_4", "127.0.0.1:7004").await.unwrap();
    let status = cluster.wait_for_rebalancing_complete().await;
    assert!(
        matches!(status, RebalanceStatus::Completed(_)),
        "{status:?}"
    );
    assert_eq!(ids_of(&cluster, "t").await, (0..3_000).collect());
    cluster.shutdown().await;
}

/// Preloads rows, adds a node, and inserts fresh ids while the move runs; returns the ids
/// acknowledged and the ids read afterwards.
async fn write_during_move(unsafe_skip_catchup: bool) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let options = StorageClusterOptions {
        move_limits: slow_copy(),
        ..StorageClusterOptions::default()
    }
    .unsafe_skip_catchup(unsafe_skip_catchup);
    let cluster = StorageCluster::with_options(options).await.unwrap();
    load(&cluster, "set", 0..4_000).await;
    let mut acknowledged: BTreeSet<i64> = (0..4_000).collect();

    cluster.add_node("node_3", "127.0.0.1:7003").await.unwrap();
    let mut next = 1_000_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster
        .rebalance_progress()
        .is_some_and(|p| !matches!(p.phase, MovePhase::Done | MovePhase::Aborted))
        && Instant::now() < deadline
    {
        cluster.insert("set", vec![("id", next)]).await.unwrap();
        acknowledged.insert(next);
        next += 1;
    }
    let status = cluster.wait_for_rebalancing_complete().await;
    assert!(
        matches!(status, RebalanceStatus::Completed(_)),
        "{status:?}"
    );
    let read = ids_of(&cluster, "set").await;
    cluster.shutdown().await;
    (acknowledged, read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_keeps_every_write_made_during_the_copy() {
    let (acknowledged, read) = write_during_move(false).await;
    assert!(acknowledged.len() > 4_100, "writes ran during the move");
    let lost: Vec<_> = acknowledged.difference(&read).collect();
    assert!(
        lost.is_empty(),
        "lost {} ids, e.g. {:?}",
        lost.len(),
        &lost[..5.min(lost.len())]
    );
    assert_eq!(acknowledged, read, "nothing unacknowledged appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_skip_catchup_loses_writes_made_during_the_copy() {
    let (acknowledged, read) = write_during_move(true).await;
    let lost: Vec<_> = acknowledged.difference(&read).collect();
    assert!(
        !lost.is_empty(),
        "skip-catchup lost nothing out of {} writes",
        acknowledged.len()
    );
    assert!(
        lost.iter().all(|id| **id >= 1_000_000),
        "only writes made during the move are lost"
    );
}

#[tokio::test]
async fn bad_sql_unknown_tables_and_wrong_types_get_clear_errors_and_the_cluster_keeps_serving() {
    let cluster = StorageCluster::new_test(3).await;
    cluster
        .create_table_with_schema(CreateTableRequest {
            name: "users".into(),
            shard_key: "user_id".into(),
            schema: vec![
                Column {
                    name: "user_id".into(),
                    dtype: DataType::BigInt,
                },
                Column {
                    name: "name".into(),
                    dtype: DataType::VarChar(5),
                },
            ],
        })
        .await
        .unwrap();
    let insert = "INSERT INTO users (user_id, name) VALUES (?, ?)";
    cluster
        .query(insert, &[SqlValue::Int(1), SqlValue::from("ann")])
        .await
        .unwrap();

    let cases: Vec<(&str, Vec<SqlValue>, &str)> = vec![
        (
            "DELETE FROM users WHERE user_id = 1",
            vec![],
            "unsupported sql: statement DELETE FROM",
        ),
        (
            "SELECT name FROM users ORDER BY name",
            vec![],
            "unsupported sql: ORDER BY",
        ),
        ("SELEKT name FROM users", vec![], "sql syntax error"),
        (
            "SELECT name FROM ghosts WHERE user_id = 1",
            vec![],
            "unknown table \"ghosts\"",
        ),
        (
            insert,
            vec![SqlValue::from("x"), SqlValue::from("bob")],
            "column \"user_id\": expected BIGINT, found string 'x'",
        ),
        (
            insert,
            vec![SqlValue::Int(2), SqlValue::from("toolong")],
            "column \"name\": expected VARCHAR(5)",
        ),
        (
            insert,
            vec![SqlValue::Int(1), SqlValue::from("dup")],
            "duplicate key 1",
        ),
        (
            "INSERT INTO users (user_id, age) VALUES (3, 4)",
            vec![],
            "has no column \"age\"",
        ),
        (
            "SELECT name FROM users WHERE user_id = ?",
            vec![],
            "1 placeholders, 0 parameters",
        ),
        (
            "UPDATE users SET user_id = 5 WHERE user_id = 1",
            vec![],
            "updating shard key",
        ),
    ];
    for (sql, params, expected) in cases {
        let error: ClusterError = cluster.query(sql, &params).await.unwrap_err();
        assert!(
            error.to_string().contains(expected),
            "{sql}: got {error}, expected {expected}"
        );
    }

    // The cluster keeps serving.
    let updated = cluster
        .query(
            "UPDATE users SET name = ? WHERE user_id = ?",
            &[SqlValue::from("anna"), SqlValue::Int(1)],
        )
        .await
        .unwrap();
    assert_eq!(updated.rows_affected, 1);
    let rows = cluster
        .query("SELECT * FROM users WHERE user_id = 1", NO_PARAMS)
        .await
        .unwrap()
        .rows;
    assert_eq!(rows[0].get::<String>("name"), "anna");
    let count = cluster
        .query("SELECT COUNT(*) FROM users", NO_PARAMS)
        .await
        .unwrap();
    assert_eq!(count.rows[0].get::<i64>("count"), 1);
    cluster.shutdown().await;
}
