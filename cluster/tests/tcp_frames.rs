//! The framed TCP transport and the storage-node RPC over it: bad frames (random bytes,
//! undecodable payloads, oversized length headers, truncated frames) close only their own
//! connection while a well-behaved client keeps getting correct answers, and rows survive an
//! import and export over TCP unchanged. Everything listens on 127.0.0.1, port 0.

use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use helios_cluster::net::tcp::{
    decode, FrameOptions, ServeOptions, TcpError, DEFAULT_MAX_FRAME_BYTES,
};
use helios_cluster::storage::remote::{
    serve_storage_node, serve_storage_node_with, RemoteError, RemoteNodeError, RemoteStorageNode,
    StorageReply, StorageRequest,
};
use helios_cluster::storage::{stored_key, Entry, StorageNode};
use helios_cluster::{MetadataService, Row, SqlValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOOPBACK: &str = "127.0.0.1:0";
/// How long a server may take to close a connection after a bad frame.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

fn loopback() -> SocketAddr {
    LOOPBACK.parse().expect("a socket address")
}

/// A storage node that owns every key (the only node of its one-node metadata group), and the
/// epoch of its view.
async fn owning_node() -> (StorageNode, u64) {
    let metadata = MetadataService::new_test(1).await;
    let id = metadata
        .add_storage_node("node_0", LOOPBACK)
        .await
        .expect("register the node");
    let node = StorageNode::start(id, "node_0", LOOPBACK, None, metadata.clone()).expect("start");
    let epoch = metadata.routing().await.expect("routing").epoch();
    (node, epoch)
}

/// Entries of `n` keys with values of varied sizes (empty up to 16 KiB), in key order.
fn entries(n: i64, seed: u8) -> Vec<Entry> {
    let mut entries: Vec<Entry> = (0..n)
        .map(|i| {
            let len = [0usize, 1, 100, 16 * 1024][(i % 4) as usize];
            let value = (0..len).map(|j| (j as u8) ^ (i as u8) ^ seed).collect();
            (stored_key(&SqlValue::Int(i)), value)
        })
        .collect();
    entries.sort();
    entries
}

/// Every entry of `table` at the remote node, paged `page` at a time as a rebalance copies.
async fn export_all(remote: &RemoteStorageNode, table: &str, page: usize) -> Vec<Entry> {
    let mut all = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    // Bounded: each page but the last returns `page` new keys.
    for _ in 0..10_000 {
        let batch = remote
            .export(
                table,
                &Bound::Unbounded,
                &Bound::Unbounded,
                after.as_deref(),
                page,
            )
            .await
            .expect("export");
        let done = batch.len() < page;
        after = batch.last().map(|(k, _)| k.clone());
        all.extend(batch);
        if done {
            return all;
        }
    }
    panic!("export did not finish within 10,000 pages");
}

#[tokio::test]
async fn rows_imported_over_tcp_export_back_unchanged() {
    // Setup: an empty node behind TCP.
    let (node, _) = owning_node().await;
    let node = Arc::new(node);
    let (addr, server) = serve_storage_node(Arc::clone(&node), loopback())
        .await
        .expect("serve");
    let remote = RemoteStorageNode::new(addr, FrameOptions::default());

    // Import over TCP in batches, as a rebalance's copy does.
    let sent = entries(1000, 7);
    for batch in sent.chunks(97) {
        remote.import("t", batch).await.expect("import");
    }

    // Export back over TCP, and read the node locally: both equal what was sent.
    assert_eq!(export_all(&remote, "t", 64).await, sent);
    let local = node
        .export("t", &Bound::Unbounded, &Bound::Unbounded, None, usize::MAX)
        .expect("local export");
    assert_eq!(local, sent);
    let all = [(Bound::Unbounded, Bound::Unbounded)];
    assert_eq!(remote.count("t", &all).await.expect("count"), 1000);
    assert_eq!(remote.count("other", &all).await.expect("count"), 0);
    server.abort();
}

#[tokio::test]
async fn a_point_read_over_tcp_sees_the_row_and_node_errors_keep_their_kind() {
    // Setup: one row written locally through the node's own insert path.
    let (node, epoch) = owning_node().await;
    let node = Arc::new(node);
    let key = SqlValue::Int(42);
    let row: Row = [
        ("id".to_string(), key.clone()),
        ("name".to_string(), SqlValue::Text("forty-two".into())),
        ("note".to_string(), SqlValue::Null),
    ]
    .into_iter()
    .collect();
    node.insert(epoch, "t", &key, &row).await.expect("insert");
    let (addr, server) = serve_storage_node(Arc::clone(&node), loopback())
        .await
        .expect("serve");
    let remote = RemoteStorageNode::new(addr, FrameOptions::default());

    // Reads over TCP answer as the node does.
    assert_eq!(remote.get(epoch, "t", &key).await.expect("get"), Some(row));
    let absent = remote.get(epoch, "t", &SqlValue::Int(7)).await;
    assert_eq!(absent.expect("get"), None);
    assert_eq!(remote.count_owned(epoch, "t").await.expect("count"), 1);

    // Fault: the node is killed; its refusal crosses the wire as a typed error.
    node.kill().await;
    let error = remote
        .import("t", &entries(1, 0))
        .await
        .expect_err("a killed node refuses");
    assert!(
        matches!(
            error,
            RemoteError::Node {
                error: RemoteNodeError::Down { node: n },
                ..
            } if n == node.id()
        ),
        "{error}"
    );
    assert!(!error.outcome_is_unknown(), "a refusal applied nothing");
    server.abort();
}

#[tokio::test]
async fn batches_over_the_frame_cap_are_refused_with_typed_errors_and_the_connection_survives() {
    // Setup: a server and a client with a 64 KiB frame cap, and 10 rows of 16 KiB.
    let (node, _) = owning_node().await;
    let node = Arc::new(node);
    let max_frame_bytes = 64 * 1024;
    let options = ServeOptions {
        max_frame_bytes,
        ..ServeOptions::default()
    };
    let (addr, server) = serve_storage_node_with(Arc::clone(&node), loopback(), options)
        .await
        .expect("serve");
    let client_options = FrameOptions {
        max_frame_bytes,
        ..FrameOptions::default()
    };
    let remote = RemoteStorageNode::new(addr, client_options);
    let rows: Vec<Entry> = entries(40, 1)
        .into_iter()
        .filter(|(_, v)| v.len() == 16 * 1024)
        .collect();
    assert_eq!(rows.len(), 10);

    // An import over the cap is refused before anything is sent.
    let error = remote.import("t", &rows).await.expect_err("over the cap");
    assert!(
        matches!(
            error,
            RemoteError::Transport {
                source: TcpError::FrameTooLarge { .. },
                ..
            }
        ),
        "{error}"
    );
    assert!(!error.outcome_is_unknown());

    // Small batches pass; an export over the cap is refused by the node with a typed error.
    for batch in rows.chunks(2) {
        remote.import("t", batch).await.expect("import");
    }
    let too_many = remote
        .export("t", &Bound::Unbounded, &Bound::Unbounded, None, 10)
        .await
        .expect_err("reply over the cap");
    assert!(
        matches!(
            too_many,
            RemoteError::Node {
                error: RemoteNodeError::ReplyTooLarge { .. },
                ..
            }
        ),
        "{too_many}"
    );
    assert_eq!(export_all(&remote, "t", 2).await, rows);
    server.abort();
}

/// Reads until the server closes the connection (end of stream or reset), within
/// [`CLOSE_BOUND`]; returns the bytes received before the close.
async fn read_until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, TestCaseError> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + CLOSE_BOUND;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => {
                return Err(TestCaseError::fail(format!(
                    "connection still open after {CLOSE_BOUND:?}"
                )))
            }
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(received),
            Ok(Ok(n)) => {
                received.extend_from_slice(&buffer[..n]);
                prop_assert!(received.len() <= 1 << 20, "unbounded reply to garbage");
            }
        }
    }
}

/// What one misbehaving connection sends.
#[derive(Clone, Debug)]
enum BadInput {
    /// Arbitrary bytes, then the write half is shut down.
    Garbage(Vec<u8>),
    /// A length header over the cap and a few payload bytes; the write half stays open.
    Oversized { claimed: u32, tail: Vec<u8> },
    /// A well-framed payload of random bytes; the write half stays open.
    RandomPayload(Vec<u8>),
    /// A header claiming `claimed` bytes and fewer than that, then the write half is shut down.
    Truncated { claimed: u32, sent: Vec<u8> },
}

fn bad_input() -> impl Strategy<Value = BadInput> {
    let cap = DEFAULT_MAX_FRAME_BYTES as u32;
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(BadInput::Garbage),
        (
            cap + 1..=u32::MAX,
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(claimed, tail)| BadInput::Oversized { claimed, tail }),
        prop::collection::vec(any::<u8>(), 0..4096).prop_map(BadInput::RandomPayload),
        (1u32..=cap, prop::collection::vec(any::<u8>(), 0..1024)).prop_map(|(claimed, sent)| {
            let keep = sent.len().min(claimed as usize - 1);
            BadInput::Truncated {
                claimed,
                sent: sent[..keep].to_vec(),
            }
        }),
    ]
}

/// Sends one bad input on a fresh connection and checks that the server closes it.
async fn misbehave(addr: SocketAddr, input: &BadInput) -> Result<(), TestCaseError> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    match input {
        BadInput::Garbage(bytes) => {
            // A peer that already closed is fine: the server may close mid-write.
            let _ = stream.write_all(bytes).await;
            let _ = stream.shutdown().await;
            read_until_closed(&mut stream).await?;
        }
        BadInput::Oversized { claimed, tail } => {
            let _ = stream.write_all(&claimed.to_be_bytes()).await;
            let _ = stream.write_all(tail).await;
            let received = read_until_closed(&mut stream).await?;
            prop_assert!(received.is_empty(), "no reply to an oversized frame");
        }
        BadInput::RandomPayload(payload) => {
            let _ = stream
                .write_all(&(payload.len() as u32).to_be_bytes())
                .await;
            let _ = stream.write_all(payload).await;
            if decode::<StorageRequest>(payload).is_ok() {
                // Random bytes that happen to be a request get an answer, and the connection
                // stays open until we close it.
                let _ = stream.shutdown().await;
                let received = read_until_closed(&mut stream).await?;
                prop_assert!(received.len() >= 4, "a valid request is answered");
                let reply = decode::<StorageReply>(&received[4..]);
                prop_assert!(reply.is_ok(), "the answer decodes: {reply:?}");
            } else {
                let received = read_until_closed(&mut stream).await?;
                prop_assert!(received.is_empty(), "no reply to an undecodable frame");
            }
        }
        BadInput::Truncated { claimed, sent } => {
            let _ = stream.write_all(&claimed.to_be_bytes()).await;
            let _ = stream.write_all(sent).await;
            let _ = stream.shutdown().await;
            let received = read_until_closed(&mut stream).await?;
            prop_assert!(received.is_empty(), "no reply to a truncated frame");
        }
    }
    Ok(())
}

/// Checks that the well-behaved client still gets correct answers.
async fn answers_correctly(
    remote: &RemoteStorageNode,
    good: &[Entry],
) -> Result<(), TestCaseError> {
    let all = [(Bound::Unbounded, Bound::Unbounded)];
    let count = remote.count(GOOD_TABLE, &all).await;
    prop_assert_eq!(count.expect("count from the good client"), good.len());
    let first = remote
        .export(GOOD_TABLE, &Bound::Unbounded, &Bound::Unbounded, None, 3)
        .await
        .expect("export from the good client");
    prop_assert_eq!(&first[..], &good[..3]);
    Ok(())
}

const GOOD_TABLE: &str = "the well-behaved client's table";

#[test]
fn random_bytes_and_frames_close_only_their_connection() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Setup: a node with known rows, and a well-behaved client connected before any bad input.
    let good = entries(40, 3);
    let (addr, remote, server) = runtime.block_on(async {
        let (node, _) = owning_node().await;
        let (addr, server) = serve_storage_node(Arc::new(node), loopback())
            .await
            .expect("serve");
        let remote = RemoteStorageNode::new(addr, FrameOptions::default());
        remote.import(GOOD_TABLE, &good).await.expect("import");
        (addr, remote, server)
    });

    // Fault and check, per case: one bad connection, then the good client on its connection.
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    let outcome = runner.run(&bad_input(), |input| {
        runtime.block_on(async {
            misbehave(addr, &input).await?;
            answers_correctly(&remote, &good).await
        })
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }

    // A client connecting after all the bad input is served too.
    runtime.block_on(async {
        let fresh = RemoteStorageNode::new(addr, FrameOptions::default());
        answers_correctly(&fresh, &good)
            .await
            .expect("a new client");
    });
    server.abort();
}

#[tokio::test]
async fn an_oversized_header_alone_closes_the_connection_at_once() {
    // Setup: a server with a good client already connected.
    let (node, _) = owning_node().await;
    let (addr, server) = serve_storage_node(Arc::new(node), loopback())
        .await
        .expect("serve");
    let remote = RemoteStorageNode::new(addr, FrameOptions::default());
    let good = entries(8, 9);
    remote.import(GOOD_TABLE, &good).await.expect("import");

    // Fault: only the 4-byte header of a frame one byte over the cap. A decoder that accepted
    // the header would reserve room for the payload and wait for it; ours closes instead.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let claimed = DEFAULT_MAX_FRAME_BYTES as u32 + 1;
    stream
        .write_all(&claimed.to_be_bytes())
        .await
        .expect("write the header");
    let received = read_until_closed(&mut stream).await.expect("closed");
    assert!(received.is_empty());

    // Check: the good client's connection still serves.
    answers_correctly(&remote, &good)
        .await
        .expect("still served");
    server.abort();
}
