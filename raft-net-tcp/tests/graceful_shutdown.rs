//! A graceful shutdown stops accepting, finishes the requests already read and sends their
//! answers, then closes; requests running past the grace period are aborted. Draining does
//! the same for clients only, while peers are still served.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use raft_net_tcp::handshake::Channel;
use raft_net_tcp::{ClientResponse, Frame, TcpClient};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

#[tokio::test]
async fn in_flight_requests_finish_before_the_server_stops() {
    let server = start_server(1, config(1)).await;
    let addr = server.addr();
    let client = Arc::new(TcpClient::new(addr.clone(), config(0)).unwrap());
    // Three requests taking 100, 200 and 300 ms.
    let requests: Vec<_> = [10u8, 20, 30]
        .into_iter()
        .map(|delay| {
            let client = client.clone();
            tokio::spawn(async move { client.request(Bytes::from(vec![delay])).await })
        })
        .collect();
    sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    server.server.shutdown().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "waited for the slowest request ({took:?})"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    for (request, delay) in requests.into_iter().zip([10u8, 20, 30]) {
        assert_eq!(
            request.await.unwrap().unwrap(),
            ClientResponse::Ok(Bytes::from(vec![delay]))
        );
    }
    // Stopped: no new connections.
    assert!(TcpStream::connect(&addr).await.is_err());
}

#[tokio::test]
async fn requests_past_the_grace_period_are_aborted() {
    let mut config = config(1);
    config.shutdown_grace_ms = 200;
    let server = start_server(1, config).await;
    let client = Arc::new(TcpClient::new(server.addr(), common::config(0)).unwrap());
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move { client.request(Bytes::from_static(&[150])).await })
    };
    sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    server.server.shutdown().await;
    assert!(started.elapsed() < Duration::from_millis(800));
    assert!(
        stuck.await.unwrap().is_err(),
        "the 1.5 s request was cut off"
    );
}

#[tokio::test]
async fn draining_finishes_the_clients_while_peers_are_still_served() {
    let mut server = start_server(1, config(1)).await;
    let addr = server.addr();
    let mut peer = raw_connect(&addr, Channel::Raft, 2).await;
    let client = Arc::new(TcpClient::new(addr.clone(), config(0)).unwrap());
    // Two requests taking 100 and 200 ms.
    let requests: Vec<_> = [10u8, 20]
        .into_iter()
        .map(|delay| {
            let client = client.clone();
            tokio::spawn(async move { client.request(Bytes::from(vec![delay])).await })
        })
        .collect();
    sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    server.server.drain_clients().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "waited for the slowest request ({took:?})"
    );
    // Every request already read was answered, none cut off.
    for (request, delay) in requests.into_iter().zip([10u8, 20]) {
        assert_eq!(
            request.await.unwrap().unwrap(),
            ClientResponse::Ok(Bytes::from(vec![delay]))
        );
    }
    // No new connections, so a client knows a new request went nowhere.
    assert!(TcpStream::connect(&addr).await.is_err());
    let refused = client.request(Bytes::from_static(&[0])).await.unwrap_err();
    assert!(refused.never_sent(), "{refused:?}");
    // The peer's connection still delivers Raft messages.
    peer.write_all(&frame_bytes(&Frame::Raft(heartbeat(2, 1, 7))))
        .await
        .unwrap();
    assert_eq!(server.next_message().await, heartbeat(2, 1, 7));

    server.server.shutdown().await;
    assert_closed(&mut peer, Duration::from_secs(2)).await;
}
