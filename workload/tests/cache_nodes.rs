//! The cache operations' one code path ([`execute_cache_op`] over [`SqlNode`]): through
//! in-process compute nodes it records what the cache checkers read (writes and reads naming
//! their node, by the name a compute node process of the same index has).

use std::time::{Duration, Instant};

use helios_cluster::TestCluster;
use helios_workload::history::{EventType, Function, Process};
use helios_workload::recorder::Recorder;
use helios_workload::txn::client::{execute_cache_op, CACHE_TABLE};
use helios_workload::txn::generator::TxnOp;
use helios_workload::txn::sql_node::compute_node_name;
use helios_workload::txn::SqlNode;
use helios_workload::wellformed::read_history;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_node_is_read_through_another_and_both_name_their_node() {
    // Setup: two in-process compute nodes and the cache table.
    let cluster = TestCluster::builder().compute_nodes(2).build().await;
    cluster
        .storage()
        .try_create_table(CACHE_TABLE, "id")
        .await
        .unwrap();
    let nodes = cluster.compute_nodes();
    for (index, node) in nodes.iter().enumerate() {
        assert_eq!(SqlNode::name(node), compute_node_name(index as u32));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    let recorder = Recorder::create(&path, &json!({"workload": "cache"}), Instant::now()).unwrap();
    let timeout = Duration::from_secs(5);

    // Workload: a write (twice: the second is an update) through c0, a read through c1.
    for (process, value) in [(0, 7), (0, 8)] {
        let write = TxnOp::CacheWrite { key: 3, value };
        let done = execute_cache_op(
            &recorder,
            &nodes[0],
            Process::Client(process),
            &write,
            timeout,
        )
        .await;
        assert_eq!(done.event_type, EventType::Ok, "{done:?}");
    }
    let read = TxnOp::CacheRead { key: 3 };
    let done = execute_cache_op(&recorder, &nodes[1], Process::Client(1), &read, timeout).await;

    // Check: the read saw the last write, and the history names each node on its `ok`.
    assert_eq!((done.event_type, done.value), (EventType::Ok, json!(8)));
    recorder.finish().unwrap();
    let (_, events) = read_history(&path).unwrap();
    let completions: Vec<(Function, Option<String>, Option<String>)> = events
        .iter()
        .filter(|event| event.event_type == EventType::Ok)
        .map(|event| (event.f, event.key.clone(), event.node.clone()))
        .collect();
    let named = |f, node: &str| (f, Some("3".to_owned()), Some(node.to_owned()));
    assert_eq!(
        completions,
        vec![
            named(Function::Write, "c0"),
            named(Function::Write, "c0"),
            named(Function::Read, "c1")
        ]
    );
    cluster.shutdown().await;
}
