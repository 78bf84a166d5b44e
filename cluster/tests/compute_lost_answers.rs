//! A compute node whose compare-and-set's answer is lost while the write waits for the shard's
//! mirror, and whose retry finds its own bytes as the primary's newest, unreplicated entry: the
//! statement is acknowledged only once the write is replicated, so the failover that then drops
//! the entry loses no acknowledged write. Servers run in this process over loopback TCP.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use helios_cluster::process::{
    pick_free_ports, AdminClient, ComputeClient, ComputeConfig, ComputeServer, MemberAddrs,
    MemberConfig, MemberRole, MemberServer, NodeConfig, NodeServer, ShardClient,
};
use helios_cluster::sql::SqlValue;
use helios_cluster::NodeId;

const SHARD: usize = 0;
const BOUND: Duration = Duration::from_secs(10);
/// Shorter than the primary's lease (200 ms, renewed every 25 ms): a call that waits on the
/// mirror times out, and its retry reaches the primary while the entry is still unreplicated.
const STORAGE_CALL_TIMEOUT: Duration = Duration::from_millis(80);

fn role(id: NodeId) -> MemberRole {
    match id {
        0 => MemberRole::DataNode {
            peer: 1,
            witness: 2,
        },
        1 => MemberRole::DataNode {
            peer: 0,
            witness: 2,
        },
        _ => MemberRole::Witness { replicas: [0, 1] },
    }
}

/// One metadata node, one shard (members 0 and 1, witness 2), one compute node.
struct Servers {
    _metadata: NodeServer,
    _members: Vec<MemberServer>,
    _compute: ComputeServer,
    shards: ShardClient,
    compute: ComputeClient,
}

async fn start(root: &Path) -> Servers {
    let ports = pick_free_ports(5).expect("free ports");
    let metadata_peers: BTreeMap<NodeId, String> = [(1, format!("127.0.0.1:{}", ports[0]))].into();
    let metadata = NodeServer::start(NodeConfig::new(
        1,
        metadata_peers[&1].parse().expect("an address"),
        metadata_peers.clone(),
        root.join("node-1"),
    ))
    .await
    .expect("the metadata node starts");
    let member_peers: BTreeMap<NodeId, String> = (0..3)
        .map(|id| (id, format!("127.0.0.1:{}", ports[1 + id as usize])))
        .collect();
    let mut members = Vec::new();
    for id in 0..3 {
        let config = MemberConfig::new(
            SHARD,
            id,
            role(id),
            member_peers[&id].parse().expect("an address"),
            member_peers.clone(),
            root.join(format!("member-{id}")),
        );
        members.push(MemberServer::start(config).await.expect("a member starts"));
    }
    let data_nodes: MemberAddrs = (0..2)
        .map(|id| ((SHARD, id), member_peers[&id].clone()))
        .collect();
    let all_members: MemberAddrs = member_peers
        .iter()
        .map(|(&id, addr)| ((SHARD, id), addr.clone()))
        .collect();
    let shards = ShardClient::new(all_members, Duration::from_secs(2));
    let deadline = Instant::now() + BOUND;
    while AdminClient::new(metadata_peers[&1].clone())
        .status()
        .await
        .map_or(true, |status| !status.is_leader)
    {
        assert!(Instant::now() < deadline, "no metadata leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    primary(&shards, &[0, 1]).await;
    let mut config = ComputeConfig::new(
        0,
        format!("127.0.0.1:{}", ports[4])
            .parse()
            .expect("an address"),
        data_nodes,
        metadata_peers,
    );
    config.storage_call_timeout = STORAGE_CALL_TIMEOUT;
    config.statement_timeout = BOUND;
    let compute_server = ComputeServer::start(config)
        .await
        .expect("the compute node starts");
    let compute = ComputeClient::new(
        compute_server.local_addr().to_string(),
        Duration::from_secs(30),
    );
    compute
        .create_table("data", "id")
        .await
        .expect("table created");
    Servers {
        _metadata: metadata,
        _members: members,
        _compute: compute_server,
        shards,
        compute,
    }
}

/// The data node among `among` that is primary, once one is.
async fn primary(shards: &ShardClient, among: &[NodeId]) -> NodeId {
    let deadline = Instant::now() + BOUND;
    loop {
        for &id in among {
            if shards
                .status(SHARD, id)
                .await
                .is_ok_and(|status| status.is_primary)
            {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "no primary among {among:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `primary` replicates synchronously again and the other data node holds all it
/// committed: only then may the other be promoted without it.
async fn wait_synchronous(shards: &ShardClient, primary: NodeId) {
    let deadline = Instant::now() + BOUND;
    loop {
        let leader = shards.status(SHARD, primary).await;
        let mirror = shards.status(SHARD, 1 - primary).await;
        if let (Ok(leader), Ok(mirror)) = (leader, mirror) {
            if leader.is_primary
                && leader.record.synchronous
                && mirror.record == leader.record
                && mirror.last_index >= leader.commit_index
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "data node {primary} never replicated synchronously again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn value(compute: &ComputeClient) -> i64 {
    let result = compute
        .query("SELECT value FROM data WHERE id = 1")
        .await
        .expect("read the row");
    match result.rows.first().and_then(|row| row.columns.first()) {
        Some((_, SqlValue::Int(value))) => *value,
        other => panic!("no value: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_whose_answer_was_lost_is_acknowledged_only_once_replicated() {
    let root = tempfile::tempdir().expect("temp dir");
    let servers = start(root.path()).await;
    let (shards, compute) = (&servers.shards, &servers.compute);
    compute
        .execute("INSERT INTO data (id, value) VALUES (1, 0)")
        .await
        .expect("insert");

    // Each round: cut the primary off from its mirror and witness, then increment the row.
    // The write waits on the primary for a mirror that never answers; the compute node's call
    // times out and its retry finds its own bytes as the primary's newest entry. The old code
    // acknowledged the statement there; the entry died with the primary's lease, the mirror
    // took over without it, and the acknowledged increment was gone.
    let mut exercised = 0;
    for round in 1..=3 {
        let old = primary(shards, &[0, 1]).await;
        wait_synchronous(shards, old).await;
        let other = 1 - old;
        let before = compute
            .status()
            .await
            .expect("status")
            .unreplicated_refusals;
        shards
            .block_peers(SHARD, old, &[other, 2])
            .await
            .expect("cut the primary off");
        for peer in [other, 2] {
            shards
                .block_peers(SHARD, peer, &[old])
                .await
                .expect("cut the primary off");
        }
        let updated = compute
            .execute("UPDATE data SET value = value + 1 WHERE id = 1")
            .await;
        // Keep the partition until the other data node leads, so an entry the old primary
        // holds unreplicated can only be lost, then heal.
        primary(shards, &[other]).await;
        for id in 0..3 {
            shards
                .unblock_all_peers(SHARD, id)
                .await
                .expect("heal the peer filters");
        }
        updated.unwrap_or_else(|error| panic!("round {round}: the update failed: {error}"));
        let after = compute
            .status()
            .await
            .expect("status")
            .unreplicated_refusals;
        if after > before {
            exercised += 1;
        }
        assert_eq!(
            value(compute).await,
            round,
            "round {round}: an acknowledged increment was lost in the failover \
             ({} refusals behind unreplicated entries)",
            after - before
        );
    }
    // The rounds are only worth something if a retry did meet its own unreplicated entry.
    assert!(
        exercised >= 1,
        "no round's retry reached the primary before its lease ran out"
    );
    eprintln!("{exercised} of 3 rounds met their own unreplicated entry");
}
