//! A peer restart is survived: the transport notices the broken connection, backs off,
//! reconnects by itself when there is something to send, and messages flow again.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use raft_core::node::Transport;
use raft_net_tcp::TcpTransport;
use tokio::time::{sleep, timeout, Instant};

/// Sends heartbeats every 10 ms (as a leader would) until one arrives at `server`.
async fn heartbeat_until_delivered(
    transport: &TcpTransport,
    server: &mut TestServer,
    round: &mut u64,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        *round += 1;
        transport.send(heartbeat(1, 2, *round));
        if let Ok(Some(message)) = timeout(Duration::from_millis(10), server.messages.recv()).await
        {
            assert_eq!((message.from, message.to), (1, 2));
            return;
        }
        assert!(Instant::now() < deadline, "no message delivered within 5 s");
    }
}

#[tokio::test]
async fn messages_flow_again_after_the_peer_restarts() {
    let mut server = start_server(2, config(2)).await;
    let addr = server.addr();
    let transport = TcpTransport::new(config(1)).unwrap();
    transport.set_peers(&BTreeMap::from([
        (1, "127.0.0.1:1".to_string()),
        (2, addr.clone()),
    ]));

    // Lazy: no connection until the first message.
    sleep(Duration::from_millis(50)).await;
    assert_eq!(server.server.stats().connections_accepted, 0);
    let mut round = 0;
    heartbeat_until_delivered(&transport, &mut server, &mut round).await;
    // In order on one connection.
    for _ in 0..20 {
        round += 1;
        transport.send(heartbeat(1, 2, round));
    }
    let mut last = 0;
    for _ in 0..20 {
        let message = server.next_message().await;
        let raft_core::MessageBody::AppendEntries { round, .. } = message.body else {
            panic!("a heartbeat");
        };
        assert!(round > last, "messages arrive in the order sent");
        last = round;
    }

    // The peer goes away; sends are dropped (never block), the transport backs off.
    server.server.shutdown().await;
    for _ in 0..50 {
        round += 1;
        transport.send(heartbeat(1, 2, round));
        sleep(Duration::from_millis(5)).await;
    }
    let down = transport.peer_stats(2).unwrap();
    assert!(down.dropped_unreachable > 0, "{down:?}");

    // It comes back on the same address: the connection comes back by itself.
    let mut server = start_server_with(2, config(2), Duration::ZERO, &addr).await;
    heartbeat_until_delivered(&transport, &mut server, &mut round).await;
    let stats = transport.peer_stats(2).unwrap();
    assert_eq!(stats.connections, 2, "{stats:?}");
    assert_eq!(stats.dropped_queue_full, 0);
}

#[tokio::test]
async fn a_node_that_is_not_the_expected_one_gets_nothing() {
    // The address book says node 2 lives here, but node 3 answers: the handshake fails on the
    // sending side and no message is delivered to the wrong node.
    let mut wrong = start_server(3, config(3)).await;
    let transport = TcpTransport::new(config(1)).unwrap();
    transport.set_peers(&BTreeMap::from([(2, wrong.addr())]));
    for round in 0..20 {
        transport.send(heartbeat(1, 2, round));
        sleep(Duration::from_millis(10)).await;
    }
    assert!(timeout(Duration::from_millis(100), wrong.messages.recv())
        .await
        .is_err());
    let stats = transport.peer_stats(2).unwrap();
    assert_eq!((stats.connections, stats.sent_messages), (0, 0));
    assert!(stats.dropped_unreachable > 0);
}

#[tokio::test]
async fn removed_peers_get_nothing_and_changed_addresses_are_followed() {
    let mut first = start_server(2, config(2)).await;
    let mut second = start_server(2, config(2)).await;
    let transport = TcpTransport::new(config(1)).unwrap();
    transport.set_peers(&BTreeMap::from([(2, first.addr())]));
    let mut round = 0;
    heartbeat_until_delivered(&transport, &mut first, &mut round).await;

    // Node 2 moved: later messages go to the new address only.
    transport.set_peers(&BTreeMap::from([(2, second.addr())]));
    heartbeat_until_delivered(&transport, &mut second, &mut round).await;
    while first.messages.try_recv().is_ok() {}

    // Node 2 removed: sends are dropped.
    transport.set_peers(&BTreeMap::new());
    assert!(transport.peer_stats(2).is_none());
    transport.send(heartbeat(1, 2, 1_000));
    sleep(Duration::from_millis(100)).await;
    assert!(first.messages.try_recv().is_err());
    assert!(second.messages.try_recv().is_err());
}
