//! A graceful shutdown stops accepting, finishes the requests already read and sends their
//! answers, then closes; requests running past the grace period are aborted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use raft_net_tcp::{ClientResponse, TcpClient};
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
