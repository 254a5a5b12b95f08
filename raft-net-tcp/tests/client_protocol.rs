//! The native client protocol: pipelined requests answered out of order, per-request
//! timeouts, redirects, the in-flight limit, and reconnecting after the server restarts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use raft_core::NodeId;
use raft_net_tcp::handshake::{Channel, Hello};
use raft_net_tcp::{
    ClientHandler, ClientRequest, ClientResponse, Error, Frame, Rejection, TcpClient, TcpServer,
};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

#[tokio::test]
async fn pipelined_requests_are_answered_out_of_order() {
    let server = start_server(1, config(1)).await;
    let mut raw = raw_connect(&server.addr(), Channel::Client, 0).await;
    // Three requests in one write; the echo handler sleeps payload[0] * 10 ms, so the
    // answers come back in the reverse order: ids 3, 2, 1.
    let mut bytes = Vec::new();
    for (id, delay) in [(1u64, 30u8), (2, 15), (3, 0)] {
        let request = ClientRequest {
            id,
            payload: Bytes::from(vec![delay, id as u8]),
        };
        bytes.extend(frame_bytes(&Frame::ClientRequest(request)));
    }
    raw.write_all(&bytes).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        match read_frame(&mut raw).await {
            Some(Frame::ClientResponse {
                id,
                response: ClientResponse::Ok(payload),
            }) => {
                assert_eq!(
                    payload[1] as u64, id,
                    "each answer carries its own request's id"
                );
                order.push(id);
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }
    assert_eq!(order, vec![3, 2, 1]);
}

#[tokio::test]
async fn one_client_pipelines_many_requests_on_one_connection() {
    let server = start_server(1, config(1)).await;
    let client = Arc::new(TcpClient::new(server.addr(), config(0)).unwrap());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50u8 {
        let client = client.clone();
        // Each request takes 100 ms in the handler; run one after another they would take 5 s.
        tasks.push(tokio::spawn(async move {
            (i, client.request(Bytes::from(vec![10, i])).await)
        }));
    }
    for task in tasks {
        let (i, response) = task.await.unwrap();
        assert_eq!(
            response.unwrap(),
            ClientResponse::Ok(Bytes::from(vec![10, i]))
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "requests ran concurrently"
    );
    assert_eq!(
        server.server.stats().connections_accepted,
        1,
        "all on one connection"
    );
}

#[tokio::test]
async fn a_slow_request_times_out_alone() {
    let mut config = config(0);
    config.request_timeout_ms = 200;
    let server = start_server(1, common::config(1)).await;
    let client = Arc::new(TcpClient::new(server.addr(), config).unwrap());
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.request(Bytes::from_static(&[50])).await })
    };
    let fast = client.request(Bytes::from_static(&[0, 9])).await.unwrap();
    assert_eq!(fast, ClientResponse::Ok(Bytes::from_static(&[0, 9])));
    assert!(matches!(
        slow.await.unwrap(),
        Err(Error::RequestTimeout { timeout_ms: 200 })
    ));
    // The late answer to the timed-out request is discarded; the connection stays usable.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = client.request(Bytes::from_static(&[0, 8])).await.unwrap();
    assert_eq!(again, ClientResponse::Ok(Bytes::from_static(&[0, 8])));
}

#[tokio::test]
async fn a_request_the_server_cuts_off_has_an_unknown_outcome() {
    let mut server_config = config(1);
    server_config.request_timeout_ms = 100;
    let server = start_server(1, server_config).await;
    let client = TcpClient::new(server.addr(), config(0)).unwrap();
    // 300 ms in the handler: the server gives up after 100 ms, and the handler may have
    // done part of its work by then.
    let cut_off = client.request(Bytes::from_static(&[30])).await.unwrap();
    assert!(
        matches!(&cut_off, ClientResponse::OutcomeUnknown(why) if why.contains("100 ms")),
        "{cut_off:?}"
    );
}

#[tokio::test]
async fn in_flight_requests_are_limited() {
    let mut config = config(0);
    config.inflight_requests_max = 2;
    let server = start_server(1, common::config(1)).await;
    let client = Arc::new(TcpClient::new(server.addr(), config).unwrap());
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request(Bytes::from_static(&[20])).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third = client.request(Bytes::from_static(&[0])).await;
    assert!(matches!(third, Err(Error::TooManyInFlight { max: 2 })));
    for request in waiting {
        assert!(request.await.unwrap().is_ok());
    }
    assert!(client.request(Bytes::from_static(&[0])).await.is_ok());
}

/// A follower: redirects every request to the leader.
struct Follower {
    leader: NodeId,
}

#[async_trait]
impl ClientHandler for Follower {
    async fn handle(&self, _request: ClientRequest) -> ClientResponse {
        ClientResponse::NotLeader {
            leader_id: Some(self.leader),
            leader_addr: Some("127.0.0.1:7001".into()),
        }
    }
}

#[tokio::test]
async fn redirects_and_missing_client_handlers() {
    let (node, _messages) = Recorder::new(Duration::ZERO);
    let follower = TcpServer::bind(
        "127.0.0.1:0",
        config(2),
        node.clone(),
        Some(Arc::new(Follower { leader: 3 })),
    )
    .await
    .unwrap();
    let client = TcpClient::new(follower.local_addr().to_string(), config(0)).unwrap();
    assert_eq!(
        client.request(Bytes::from_static(b"put")).await.unwrap(),
        ClientResponse::NotLeader {
            leader_id: Some(3),
            leader_addr: Some("127.0.0.1:7001".into())
        }
    );

    // A server without a client handler refuses the client channel in the handshake.
    let peer_only = TcpServer::bind("127.0.0.1:0", config(4), node, None)
        .await
        .unwrap();
    let client = TcpClient::new(peer_only.local_addr().to_string(), config(0)).unwrap();
    let refused = client.request(Bytes::from_static(b"get")).await;
    assert!(
        matches!(
            refused,
            Err(Error::Handshake(Rejection::Channel { channel: 3 }))
        ),
        "{refused:?}"
    );
    // And a client of another cluster is refused by the server with the reason.
    let mut other_cluster = config(0);
    other_cluster.cluster_id = CLUSTER + 1;
    let client = TcpClient::new(follower.local_addr().to_string(), other_cluster).unwrap();
    let refused = client.request(Bytes::from_static(b"get")).await;
    assert!(
        matches!(refused, Err(Error::Handshake(Rejection::Cluster { ours, theirs }))
            if ours == CLUSTER + 1 && theirs == CLUSTER),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_client_reconnects_after_the_server_restarts() {
    let server = start_server(1, config(1)).await;
    let addr = server.addr();
    let client = TcpClient::new(addr.clone(), config(0)).unwrap();
    assert!(client.request(Bytes::from_static(&[0])).await.is_ok());
    server.server.shutdown().await;
    assert!(client.request(Bytes::from_static(&[0])).await.is_err());
    let _restarted = start_server_with(1, config(1), Duration::ZERO, &addr).await;
    assert!(client.request(Bytes::from_static(&[0])).await.is_ok());
}

#[tokio::test]
async fn a_server_impersonating_another_cluster_is_refused_by_the_client() {
    // A fake server that accepts anything but answers with another cluster's id.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 24];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut hello)
            .await
            .unwrap();
        let reply = Hello::request(CLUSTER + 5, 1, Channel::Client);
        stream.write_all(&reply.encode()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    let client = TcpClient::new(addr, config(0)).unwrap();
    let refused = client.request(Bytes::from_static(b"get")).await;
    assert!(
        matches!(refused, Err(Error::Handshake(Rejection::Cluster { .. }))),
        "{refused:?}"
    );
}

/// Panics on the payload "boom", echoes anything else.
struct Fragile;

#[async_trait]
impl ClientHandler for Fragile {
    async fn handle(&self, request: ClientRequest) -> ClientResponse {
        assert_ne!(
            &request.payload[..],
            b"boom",
            "handler bug triggered on purpose"
        );
        ClientResponse::Ok(request.payload)
    }
}

#[tokio::test]
async fn a_panicking_handler_fails_its_request_only() {
    let (node, _messages) = Recorder::new(Duration::ZERO);
    let server = TcpServer::bind("127.0.0.1:0", config(1), node, Some(Arc::new(Fragile)))
        .await
        .unwrap();
    let client = TcpClient::new(server.local_addr().to_string(), config(0)).unwrap();
    let failed = client.request(Bytes::from_static(b"boom")).await.unwrap();
    assert_eq!(
        failed,
        ClientResponse::OutcomeUnknown("internal error: the request handler panicked".into()),
        "the handler may have done part of its work"
    );
    let fine = client.request(Bytes::from_static(b"fine")).await.unwrap();
    assert_eq!(fine, ClientResponse::Ok(Bytes::from_static(b"fine")));
    assert_eq!(server.stats().connections_accepted, 1, "same connection");
}

#[tokio::test]
async fn a_request_longer_than_the_idle_timeout_keeps_its_connection() {
    let mut server_config = config(1);
    server_config.idle_timeout_ms = 200;
    let server = start_server(1, server_config).await;
    let client = TcpClient::new(server.addr(), config(0)).unwrap();
    // 500 ms in the handler, with nothing else on the connection.
    let slow = client.request(Bytes::from_static(&[50, 1])).await.unwrap();
    assert_eq!(slow, ClientResponse::Ok(Bytes::from_static(&[50, 1])));
    let next = client.request(Bytes::from_static(&[0, 2])).await.unwrap();
    assert_eq!(next, ClientResponse::Ok(Bytes::from_static(&[0, 2])));
    let stats = server.server.stats_handle();
    assert_eq!(stats.stats().connections_accepted, 1);
    assert_eq!(stats.stats().client_connections_open, 1);
    // Once quiet, the connection does idle out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stats.stats().connections_open, 0);
    assert_eq!(stats.stats().client_connections_open, 0);
}
