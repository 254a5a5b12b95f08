//! Peers that misbehave on the wire (garbage, truncation, trickling, wrong handshakes, unknown
//! message types) get an error frame or a closed connection; the server keeps serving others.

mod common;

use std::time::Duration;

use common::*;
use raft_net_tcp::handshake::{Channel, Hello, MAGIC, PROTOCOL_VERSION};
use raft_net_tcp::{ClientRequest, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

/// Enough for the short test timeouts (frame 300 ms, handshake 500 ms) plus scheduling slack.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn garbage_messagepack_closes_only_that_connection() {
    let server = start_server(1, config(1)).await;
    let addr = server.addr();
    let mut good = raw_connect(&addr, Channel::Raft, 2).await;
    let mut bad = raw_connect(&addr, Channel::Raft, 3).await;
    // 0xc1 is never valid MessagePack; then a map where a frame array is expected.
    bad.write_all(&raw_frame(&[0xc1, 0xc1, 0xc1]))
        .await
        .unwrap();
    assert_closed(&mut bad, CLOSE_WITHIN).await;
    let mut bad = raw_connect(&addr, Channel::Raft, 3).await;
    bad.write_all(&raw_frame(&[0x81, 0xa1, b'a', 0x01]))
        .await
        .unwrap();
    assert_closed(&mut bad, CLOSE_WITHIN).await;

    let mut server = server;
    good.write_all(&frame_bytes(&Frame::Raft(heartbeat(2, 1, 7))))
        .await
        .unwrap();
    assert_eq!(server.next_message().await, heartbeat(2, 1, 7));
    assert_serving(&addr).await;
    assert_eq!(server.server.stats().connections_failed, 2);
}

#[tokio::test]
async fn truncated_frame_times_out_and_eof_mid_frame_closes() {
    let mut server = start_server(1, config(1)).await;
    let addr = server.addr();
    let frame = frame_bytes(&Frame::Raft(heartbeat(2, 1, 1)));

    // Truncated: half a frame, then silence. The partial-frame timeout (300 ms) closes it.
    let mut truncated = raw_connect(&addr, Channel::Raft, 2).await;
    truncated
        .write_all(&frame[..frame.len() / 2])
        .await
        .unwrap();
    let started = Instant::now();
    assert_closed(&mut truncated, CLOSE_WITHIN).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed by the frame timeout"
    );

    // Only the length prefix, then EOF.
    let mut eof = raw_connect(&addr, Channel::Raft, 2).await;
    eof.write_all(&frame[..4]).await.unwrap();
    eof.shutdown().await.unwrap();
    assert_closed(&mut eof, CLOSE_WITHIN).await;

    // Half a body, then EOF.
    let mut eof = raw_connect(&addr, Channel::Raft, 2).await;
    eof.write_all(&frame[..frame.len() - 1]).await.unwrap();
    eof.shutdown().await.unwrap();
    assert_closed(&mut eof, CLOSE_WITHIN).await;

    // None of them delivered anything; a well-behaved peer still gets through.
    assert!(server.messages.try_recv().is_err());
    let mut good = raw_connect(&addr, Channel::Raft, 2).await;
    good.write_all(&frame).await.unwrap();
    assert_eq!(server.next_message().await, heartbeat(2, 1, 1));
    assert_eq!(server.server.stats().connections_failed, 3);
}

#[tokio::test]
async fn a_peer_trickling_bytes_is_cut_off() {
    // "One byte per second" scaled down: one byte every 100 ms against a 300 ms frame timeout,
    // so the 40-byte frame would need 4 s but the server gives up after 300 ms.
    let mut server = start_server(1, config(1)).await;
    let addr = server.addr();
    let frame = frame_bytes(&Frame::Raft(heartbeat(2, 1, 1)));
    let mut slow = raw_connect(&addr, Channel::Raft, 2).await;
    let started = Instant::now();
    let mut sent = 0;
    for byte in &frame {
        if slow.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        sleep(Duration::from_millis(100)).await;
        if started.elapsed() > CLOSE_WITHIN {
            break;
        }
    }
    assert!(
        sent < frame.len(),
        "the server must not wait for the whole trickled frame"
    );
    assert_closed(&mut slow, CLOSE_WITHIN).await;
    assert!(started.elapsed() < Duration::from_secs(3));

    // The handshake itself trickled: cut off by the 500 ms handshake timeout.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let hello = Hello::request(CLUSTER, 2, Channel::Raft).encode();
    for byte in &hello[..5] {
        let _ = slow.write_all(&[*byte]).await;
        sleep(Duration::from_millis(150)).await;
    }
    assert_closed(&mut slow, CLOSE_WITHIN).await;

    assert!(server.messages.try_recv().is_err());
    assert_serving(&addr).await;
    let stats = server.server.stats();
    assert_eq!((stats.connections_failed, stats.handshakes_failed), (1, 1));
}

#[tokio::test]
async fn wrong_handshakes_are_answered_with_the_reason_and_closed() {
    let server = start_server(1, config(1)).await;
    let addr = server.addr();
    let good = Hello::request(CLUSTER, 2, Channel::Raft);
    let cases = [
        (
            Hello {
                magic: *b"HTTP",
                ..good
            },
            1,
            "bad magic",
        ),
        (
            Hello {
                version: PROTOCOL_VERSION + 1,
                ..good
            },
            2,
            "other version",
        ),
        (
            // A version 1 client could not decode the responses added in version 2.
            Hello { version: 1, ..good },
            2,
            "version 1",
        ),
        (
            Hello {
                cluster_id: CLUSTER + 1,
                ..good
            },
            3,
            "other cluster",
        ),
        (Hello { channel: 9, ..good }, 4, "unknown channel"),
        (Hello { node_id: 0, ..good }, 5, "peer without node id"),
    ];
    for (hello, status, case) in cases {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(&hello.encode()).await.unwrap();
        let reply = read_hello(&mut stream).await.expect(case);
        assert_eq!(reply.magic, MAGIC, "{case}");
        assert_eq!(reply.status, status, "{case}");
        assert_eq!((reply.cluster_id, reply.node_id), (CLUSTER, 1), "{case}");
        assert_closed(&mut stream, CLOSE_WITHIN).await;
    }
    // Not even a whole hello: an HTTP request line, then EOF.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_closed(&mut stream, CLOSE_WITHIN).await;

    assert_serving(&addr).await;
    assert_eq!(server.server.stats().handshakes_failed, 7);
}

#[tokio::test]
async fn unknown_message_types_get_an_error_frame_and_the_connection_goes_on() {
    let mut server = start_server(1, config(1)).await;
    let addr = server.addr();
    let mut peer = raw_connect(&addr, Channel::Raft, 2).await;
    // [99, 5, {"new": true}]: a frame kind from some future version.
    let body = [0x93, 99, 5, 0x81, 0xa3, b'n', b'e', b'w', 0xc3];
    peer.write_all(&raw_frame(&body)).await.unwrap();
    match read_frame(&mut peer).await {
        Some(Frame::Error { id: 5, reason }) => assert!(reason.contains("unknown message type 99")),
        other => panic!("expected an error frame, got {other:?}"),
    }
    // A client request on a Raft connection: refused, connection kept.
    let request = Frame::ClientRequest(ClientRequest {
        id: 6,
        payload: vec![1].into(),
    });
    peer.write_all(&frame_bytes(&request)).await.unwrap();
    assert!(matches!(
        read_frame(&mut peer).await,
        Some(Frame::Error { id: 6, .. })
    ));
    // The same connection still delivers Raft messages.
    peer.write_all(&frame_bytes(&Frame::Raft(heartbeat(2, 1, 3))))
        .await
        .unwrap();
    assert_eq!(server.next_message().await, heartbeat(2, 1, 3));
    assert_eq!(server.server.stats().frames_rejected, 2);
    assert_eq!(server.server.stats().connections_failed, 0);
}

#[tokio::test]
async fn messages_claiming_another_sender_or_receiver_are_dropped() {
    let mut server = start_server(1, config(1)).await;
    let addr = server.addr();
    let mut peer = raw_connect(&addr, Channel::Raft, 2).await;
    // Claims to come from node 3 on node 2's connection, then addressed to node 5.
    peer.write_all(&frame_bytes(&Frame::Raft(heartbeat(3, 1, 1))))
        .await
        .unwrap();
    peer.write_all(&frame_bytes(&Frame::Raft(heartbeat(2, 5, 2))))
        .await
        .unwrap();
    peer.write_all(&frame_bytes(&Frame::Raft(heartbeat(2, 1, 3))))
        .await
        .unwrap();
    // Only the honest one arrives, and the connection survives the other two.
    assert_eq!(server.next_message().await, heartbeat(2, 1, 3));
    assert!(server.messages.try_recv().is_err());

    // A snapshot chunk from the wrong sender gets an error frame instead of an ack.
    let mut snapshots = raw_connect(&addr, Channel::Snapshot, 2).await;
    let forged = Frame::SnapshotChunk {
        id: 4,
        chunk: chunk(3, 1, 0, b"abc", false),
    };
    snapshots.write_all(&frame_bytes(&forged)).await.unwrap();
    assert!(matches!(
        read_frame(&mut snapshots).await,
        Some(Frame::Error { id: 4, .. })
    ));
    let honest = Frame::SnapshotChunk {
        id: 5,
        chunk: chunk(2, 1, 0, b"abc", false),
    };
    snapshots.write_all(&frame_bytes(&honest)).await.unwrap();
    match read_frame(&mut snapshots).await {
        Some(Frame::SnapshotAck { id: 5, ack }) => assert_eq!(ack.next_offset, 3),
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let mut config = config(1);
    config.idle_timeout_ms = 300;
    let server = start_server(1, config).await;
    let addr = server.addr();
    let mut idle = raw_connect(&addr, Channel::Raft, 2).await;
    let started = Instant::now();
    assert_closed(&mut idle, CLOSE_WITHIN).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Idling out is routine, not a failure.
    assert_eq!(server.server.stats().connections_failed, 0);
}
