//! Three metadata node servers in one test process, over real loopback TCP and real data
//! directories: the same code as `helios node` processes, without the processes. The process
//! faults themselves (SIGKILL, SIGSTOP) are tested in `bin/tests/processes.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use helios_cluster::process::{
    pick_free_ports, AdminClient, ClientError, ClientOptions, MetadataClient, NodeConfig,
    NodeServer,
};
use helios_cluster::NodeId;

const BOUND: Duration = Duration::from_secs(10);

async fn start_group(
    dir: &std::path::Path,
    n: usize,
) -> (Vec<NodeServer>, BTreeMap<NodeId, String>) {
    let ports = pick_free_ports(n).expect("free ports");
    let peers: BTreeMap<NodeId, String> = (1..=n as NodeId)
        .zip(&ports)
        .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
        .collect();
    let mut servers = Vec::new();
    for (&id, addr) in &peers {
        let config = NodeConfig::new(
            id,
            addr.parse().expect("an address"),
            peers.clone(),
            dir.join(format!("node-{id}")),
        );
        servers.push(NodeServer::start(config).await.expect("node starts"));
    }
    (servers, peers)
}

async fn wait_for_leader(peers: &BTreeMap<NodeId, String>, among: &[NodeId]) -> NodeId {
    let deadline = Instant::now() + BOUND;
    loop {
        for id in among {
            if let Ok(status) = AdminClient::new(peers[id].clone()).status().await {
                if status.is_leader {
                    return *id;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader among {among:?} within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_over_tcp_serves_clients_survives_an_isolated_leader_and_heals() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Setup: three nodes; the lowest id forms the group.
    let (servers, peers) = start_group(dir.path(), 3).await;
    assert!(servers[0].initialized_group() && !servers[1].initialized_group());
    let leader = wait_for_leader(&peers, &[1, 2, 3]).await;
    let client = MetadataClient::new(peers.clone(), ClientOptions::default());

    // Workload: a write, a linearizable read, a cas that applies and one that does not.
    let served = client.write("k", "1").await.expect("write");
    assert_eq!(served.node, leader, "writes reach the leader through hints");
    assert_eq!(client.read("k").await.expect("read").as_deref(), Some("1"));
    assert!(client
        .compare_and_set("k", Some("1"), "2")
        .await
        .expect("cas"));
    assert!(!client
        .compare_and_set("k", Some("1"), "3")
        .await
        .expect("cas"));

    // Fault: the leader's peer filter and the others' cut it off, both ways.
    let others: Vec<NodeId> = peers.keys().copied().filter(|id| *id != leader).collect();
    AdminClient::new(peers[&leader].clone())
        .block_peers(&others)
        .await
        .expect("block");
    for id in &others {
        AdminClient::new(peers[id].clone())
            .block_peers(&[leader])
            .await
            .expect("block");
    }
    let new_leader = wait_for_leader(&peers, &others).await;
    tracing::info!(new_leader, "the majority elected a new leader");
    // A client that only knows the old leader learns nothing from it and fails definitely or
    // with an unknown outcome, never with a success.
    let cut_off = MetadataClient::new(
        BTreeMap::from([(leader, peers[&leader].clone())]),
        ClientOptions {
            op_timeout: Duration::from_secs(1),
            ..ClientOptions::default()
        },
    );
    let refused = cut_off
        .read("k")
        .await
        .expect_err("the isolated leader has no lease");
    assert!(
        matches!(refused, ClientError::Unavailable { .. }),
        "{refused}"
    );
    // A client of the majority side commits. (The first client's hint still names the old
    // leader, which would accept the proposal and time out: an unknown outcome, not a refusal.)
    let majority_side = MetadataClient::new(
        others.iter().map(|id| (*id, peers[id].clone())).collect(),
        ClientOptions::default(),
    );
    let served = majority_side
        .write("k", "4")
        .await
        .expect("the majority commits");
    assert_eq!(served.node, new_leader);

    // Heal: the old leader rejoins and applies what the majority committed.
    for server in &servers {
        server.filter().unblock_all();
    }
    let deadline = Instant::now() + BOUND;
    let committed = servers[(new_leader - 1) as usize]
        .status()
        .last_applied_index;
    while servers[(leader - 1) as usize].status().last_applied_index < committed {
        assert!(Instant::now() < deadline, "the old leader did not catch up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.read("k").await.expect("read").as_deref(), Some("4"));
    for server in servers {
        server.shutdown().await;
    }
}
