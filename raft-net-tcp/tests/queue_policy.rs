//! The per-peer queue is bounded: `send` never blocks, and when the queue is full the newest
//! message is dropped and counted.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use raft_core::node::Transport;
use raft_net_tcp::TcpTransport;
use tokio::net::TcpListener;
use tokio::time::{sleep, Instant};

#[tokio::test]
async fn a_full_queue_drops_new_messages_without_blocking() {
    // A "peer" that accepts TCP connections but never answers the handshake: the peer task
    // sits in the handshake (500 ms timeout) while messages pile up.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let mut config = config(1);
    config.queue_len_max = 8;
    let transport = TcpTransport::new(config).unwrap();
    transport.set_peers(&BTreeMap::from([(2, addr)]));

    transport.send(heartbeat(1, 2, 0));
    // Let the peer task take the first message and start connecting.
    sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    for round in 1..=100 {
        transport.send(heartbeat(1, 2, round));
    }
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "send never blocks"
    );
    // The first message was taken by the peer task (normally before the burst), 8 wait in
    // the queue, the rest are dropped on arrival.
    let stats = transport.peer_stats(2).unwrap();
    assert!((92..=93).contains(&stats.dropped_queue_full), "{stats:?}");

    // After the failed handshake (500 ms) the queued, now stale messages are dropped as
    // unreachable: every message is accounted for and none was sent.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let stats = transport.peer_stats(2).unwrap();
        if stats.dropped_queue_full + stats.dropped_unreachable == 101 {
            assert_eq!(stats.sent_messages, 0);
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        sleep(Duration::from_millis(20)).await;
    }
    drop(silent);
}

#[tokio::test]
async fn sends_to_unknown_peers_and_after_shutdown_are_dropped() {
    let mut server = start_server(2, config(2)).await;
    let transport = TcpTransport::new(config(1)).unwrap();
    transport.send(heartbeat(1, 2, 1)); // no address yet
    transport.set_peers(&BTreeMap::from([(2, server.addr())]));
    transport.send(heartbeat(1, 2, 2));
    assert_eq!(server.next_message().await, heartbeat(1, 2, 2));
    transport.shutdown();
    transport.send(heartbeat(1, 2, 3));
    sleep(Duration::from_millis(100)).await;
    assert!(server.messages.try_recv().is_err());
}
