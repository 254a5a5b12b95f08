//! At most `connections_max` connections are served at once; the next one waits in the listen
//! backlog (its handshake is not answered) until a slot frees up.

mod common;

use std::time::Duration;

use common::*;
use raft_net_tcp::handshake::{Channel, Hello};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let mut config = config(1);
    config.connections_max = 2;
    let server = start_server(1, config).await;
    let addr = server.addr();
    let first = raw_connect(&addr, Channel::Raft, 2).await;
    let _second = raw_connect(&addr, Channel::Raft, 3).await;

    let mut third = TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(&Hello::request(CLUSTER, 4, Channel::Raft).encode())
        .await
        .unwrap();
    let mut reply = [0u8; 24];
    let waiting = timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read_exact(&mut third, &mut reply),
    )
    .await;
    assert!(
        waiting.is_err(),
        "a third connection must not be served while two are open"
    );
    assert_eq!(server.server.stats().connections_open, 2);

    // One leaves: the waiting connection is accepted and its handshake answered.
    drop(first);
    let reply = read_hello(&mut third)
        .await
        .expect("served once a slot is free");
    assert_eq!((reply.status, reply.node_id), (0, 1));
}
