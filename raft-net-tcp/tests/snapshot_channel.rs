//! Snapshot chunks travel on their own connection: a slow transfer never delays heartbeats,
//! chunks are acknowledged by request id, and failures come back as transport errors.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use raft_core::node::{Transport, TransportError};
use raft_core::ChunkStatus;
use raft_net_tcp::TcpTransport;
use tokio::time::{sleep, timeout, Instant};

#[tokio::test]
async fn a_slow_snapshot_does_not_delay_heartbeats() {
    // Each chunk takes 600 ms to "write" on the receiver.
    let mut server =
        start_server_with(2, config(2), Duration::from_millis(600), "127.0.0.1:0").await;
    let transport = Arc::new(TcpTransport::new(config(1)).unwrap());
    transport.set_peers(&BTreeMap::from([(2, server.addr())]));

    let sender = transport.clone();
    let transfer = tokio::spawn(async move {
        let mut acks = Vec::new();
        for (i, done) in [(0u64, false), (1, true)] {
            let data = vec![i as u8; 32 * 1024];
            let ack = sender
                .send_snapshot_chunk(chunk(1, 2, i * 32 * 1024, &data, done))
                .await;
            acks.push(ack.expect("chunk acknowledged"));
        }
        acks
    });
    // While the chunks crawl, heartbeats arrive promptly.
    sleep(Duration::from_millis(50)).await;
    for round in 0..8 {
        let sent = Instant::now();
        transport.send(heartbeat(1, 2, round));
        assert_eq!(server.next_message().await, heartbeat(1, 2, round));
        assert!(
            sent.elapsed() < Duration::from_millis(150),
            "heartbeat delayed by the snapshot"
        );
        sleep(Duration::from_millis(50)).await;
    }
    let acks = transfer.await.unwrap();
    let offsets: Vec<u64> = acks.iter().map(|ack| ack.next_offset).collect();
    assert_eq!(offsets, vec![32 * 1024, 64 * 1024]);
    assert_eq!(acks[0].status, ChunkStatus::Accepted);
    assert_eq!(acks[1].status, ChunkStatus::Complete);
    assert_eq!(transport.peer_stats(2).unwrap().snapshot_chunks_acked, 2);
}

#[tokio::test]
async fn chunk_failures_are_transport_errors() {
    let transport = TcpTransport::new(config(1)).unwrap();
    // Unknown peer.
    let unknown = transport
        .send_snapshot_chunk(chunk(1, 5, 0, b"x", false))
        .await;
    assert!(matches!(unknown, Err(TransportError::UnknownPeer(5))));

    // A receiver slower than the request timeout.
    let mut slow_config = config(1);
    slow_config.request_timeout_ms = 200;
    let server = start_server_with(2, config(2), Duration::from_secs(2), "127.0.0.1:0").await;
    let slow = TcpTransport::new(slow_config).unwrap();
    slow.set_peers(&BTreeMap::from([(2, server.addr())]));
    let started = Instant::now();
    let result = slow.send_snapshot_chunk(chunk(1, 2, 0, b"x", false)).await;
    assert!(
        matches!(result, Err(TransportError::Timeout(2))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "bounded by the request timeout"
    );

    // A chunk larger than the frame limit fails alone with a protocol error.
    let server = start_server(3, config(3)).await;
    let transport = TcpTransport::new(config(1)).unwrap();
    transport.set_peers(&BTreeMap::from([(3, server.addr())]));
    let huge = vec![0u8; 128 * 1024];
    let result = transport
        .send_snapshot_chunk(chunk(1, 3, 0, &huge, false))
        .await;
    assert!(
        matches!(result, Err(TransportError::Protocol { node: 3, .. })),
        "{result:?}"
    );
    let fine = transport
        .send_snapshot_chunk(chunk(1, 3, 0, b"ok", false))
        .await
        .unwrap();
    assert_eq!(fine.next_offset, 2);

    // Nobody listening: unreachable, then backing off instead of hammering the address.
    let gone = server.addr();
    server.server.shutdown().await;
    transport.set_peers(&BTreeMap::from([(3, gone)]));
    let first = transport
        .send_snapshot_chunk(chunk(1, 3, 2, b"x", false))
        .await;
    assert!(
        matches!(first, Err(TransportError::Unreachable { node: 3, .. })),
        "{first:?}"
    );
    let second = timeout(
        Duration::from_secs(1),
        transport.send_snapshot_chunk(chunk(1, 3, 2, b"x", false)),
    )
    .await
    .unwrap();
    assert!(
        matches!(second, Err(TransportError::Unreachable { .. })),
        "{second:?}"
    );
}

#[tokio::test]
async fn the_idle_timeout_counts_from_the_last_answer_not_the_last_request() {
    // Chunks take 500 ms to write, longer than the 300 ms idle timeout: the connection is busy,
    // not idle, and must survive between one chunk's ack and the next chunk.
    let mut server_config = config(2);
    server_config.idle_timeout_ms = 300;
    let server =
        start_server_with(2, server_config, Duration::from_millis(500), "127.0.0.1:0").await;
    let transport = TcpTransport::new(config(1)).unwrap();
    transport.set_peers(&BTreeMap::from([(2, server.addr())]));
    for i in 0..3u64 {
        let ack = transport
            .send_snapshot_chunk(chunk(1, 2, i, b"x", i == 2))
            .await;
        assert_eq!(ack.expect("chunk acknowledged").next_offset, i + 1);
    }
    let stats = server.server.stats();
    assert_eq!(
        (stats.connections_accepted, stats.connections_failed),
        (1, 0),
        "{stats:?}"
    );
}
