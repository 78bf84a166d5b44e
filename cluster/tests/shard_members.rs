//! A replicated shard whose three members are `MemberServer`s over loopback TCP, each with its
//! own data directory: synchronous replication, failover when the primary stops, and recovery
//! of a stopped member from its disk alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use helios_cluster::process::{
    pick_free_ports, MemberAddrs, MemberConfig, MemberRole, MemberServer, ShardClient,
};
use helios_cluster::replication::ReplicationError;
use helios_cluster::NodeId;

const SHARD: usize = 0;
const PRIMARY: NodeId = 0;
const MIRROR: NodeId = 1;
const WITNESS: NodeId = 2;

fn role(id: NodeId) -> MemberRole {
    match id {
        PRIMARY => MemberRole::DataNode {
            peer: MIRROR,
            witness: WITNESS,
        },
        MIRROR => MemberRole::DataNode {
            peer: PRIMARY,
            witness: WITNESS,
        },
        _ => MemberRole::Witness {
            replicas: [PRIMARY, MIRROR],
        },
    }
}

async fn start(id: NodeId, peers: &BTreeMap<NodeId, String>, root: &Path) -> MemberServer {
    let listen = peers[&id].parse().expect("loopback address");
    let config = MemberConfig::new(
        SHARD,
        id,
        role(id),
        listen,
        peers.clone(),
        root.join(format!("member-{id}")),
    );
    MemberServer::start(config).await.expect("member starts")
}

async fn wait_for_primary(client: &ShardClient, among: &[NodeId], bound: Duration) -> NodeId {
    let deadline = Instant::now() + bound;
    loop {
        for &id in among {
            if let Ok(status) = client.status(SHARD, id).await {
                if status.is_primary {
                    return id;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no primary among {among:?} within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_member_processes_replicates_fails_over_and_recovers_from_disk() {
    let root = tempfile::tempdir().expect("temp dir");
    let ports = pick_free_ports(3).expect("free ports");
    let peers: BTreeMap<NodeId, String> = [PRIMARY, MIRROR, WITNESS]
        .into_iter()
        .zip(&ports)
        .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
        .collect();
    let addrs: MemberAddrs = peers
        .iter()
        .map(|(&id, addr)| ((SHARD, id), addr.clone()))
        .collect();
    let client = ShardClient::new(addrs, Duration::from_secs(5));
    let mut servers: BTreeMap<NodeId, MemberServer> = BTreeMap::new();
    for id in [PRIMARY, MIRROR, WITNESS] {
        servers.insert(id, start(id, &peers, root.path()).await);
    }
    assert_eq!(
        wait_for_primary(&client, &[PRIMARY, MIRROR], Duration::from_secs(5)).await,
        PRIMARY
    );

    // Synchronous replication: an acknowledged write is already on the mirror's disk copy.
    for i in 0..50u32 {
        let value = format!("v{i}");
        client
            .write_at(SHARD, PRIMARY, b"k", value.as_bytes())
            .await
            .expect("write through the primary");
        let on_mirror = client.read(SHARD, MIRROR, b"k").await.expect("mirror read");
        assert_eq!(on_mirror.as_deref(), Some(value.as_bytes()));
    }
    // A mirror refuses writes and names the primary.
    match client.write_at(SHARD, MIRROR, b"k", b"x").await {
        Err(ReplicationError::NotPrimary { primary, .. }) => assert_eq!(primary, Some(PRIMARY)),
        other => panic!("the mirror answered a write with {other:?}"),
    }
    // The witness holds no data.
    assert!(matches!(
        client.read(SHARD, WITNESS, b"k").await,
        Err(ReplicationError::WitnessHoldsNoData { .. })
    ));

    // Stop the primary: the witness lets the mirror take over, with every acknowledged write.
    servers.remove(&PRIMARY).expect("primary").shutdown().await;
    let stopped = Instant::now();
    assert!(matches!(
        client.write_at(SHARD, PRIMARY, b"k", b"y").await,
        Err(ReplicationError::NodeDown { .. })
    ));
    assert_eq!(
        wait_for_primary(&client, &[MIRROR], Duration::from_secs(5)).await,
        MIRROR
    );
    let failover = stopped.elapsed();
    assert_eq!(
        client
            .read_linearizable(SHARD, MIRROR, b"k")
            .await
            .expect("read from the new primary")
            .as_deref(),
        Some(&b"v49"[..])
    );
    let index = client
        .write_at(SHARD, MIRROR, b"k", b"after")
        .await
        .expect("write through the new primary");
    assert!(
        index > 50,
        "the new primary's log continues the old one: {index}"
    );

    // The old primary comes back from its data directory alone and follows the new primary.
    servers.insert(PRIMARY, start(PRIMARY, &peers, root.path()).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let copy = client.read(SHARD, PRIMARY, b"k").await;
        if copy.as_ref().ok().and_then(|v| v.as_deref()) == Some(&b"after"[..]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member never caught up: {copy:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = client.status(SHARD, PRIMARY).await.expect("status");
    assert!(!status.is_primary, "{status:?}");
    assert_eq!(status.record.primary, MIRROR);
    assert!(status.saves > 0);
    eprintln!("failover after a member stop: {failover:?}");
    for (_, server) in servers {
        server.shutdown().await;
    }
}
