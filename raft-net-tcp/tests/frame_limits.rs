//! Frame length limits: zero and oversize lengths are refused from the prefix alone, before the
//! body is sent or buffered; a frame of exactly the limit passes.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use raft_core::{Entry, MessageBody};
use raft_net_tcp::codec::LEN_PREFIX_BYTES;
use raft_net_tcp::handshake::Channel;
use raft_net_tcp::{ClientRequest, ClientResponse, Error, Frame, TcpClient};
use tokio::io::AsyncWriteExt;

const CLOSE_WITHIN: Duration = Duration::from_secs(2);

#[tokio::test]
async fn oversize_length_is_refused_before_the_body_arrives() {
    let server = start_server(1, config(1)).await;
    let addr = server.addr();
    for len in [64 * 1024 + 1, 1 << 30, u32::MAX] {
        let mut peer = raw_connect(&addr, Channel::Raft, 2).await;
        // Only the prefix: the server must close now, not wait for (or allocate) the body.
        peer.write_all(&len.to_be_bytes()).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_closed(&mut peer, CLOSE_WITHIN).await;
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "refused from the prefix, not by the 300 ms frame timeout"
        );
    }
    let mut peer = raw_connect(&addr, Channel::Raft, 2).await;
    peer.write_all(&0u32.to_be_bytes()).await.unwrap();
    assert_closed(&mut peer, CLOSE_WITHIN).await;
    assert_serving(&addr).await;
    assert_eq!(server.server.stats().connections_failed, 4);
}

#[tokio::test]
async fn a_frame_of_exactly_the_limit_passes_and_one_byte_more_does_not() {
    let config = config(1);
    let max = config.frame_bytes_max as usize;
    let mut server = start_server(1, config.clone()).await;
    let addr = server.addr();

    // An AppendEntries whose frame body is exactly the limit.
    let message = |data_len: usize| {
        let mut message = heartbeat(2, 1, 1);
        if let MessageBody::AppendEntries { entries, .. } = &mut message.body {
            entries.push(Entry::normal(1, 1, vec![7u8; data_len]));
        }
        message
    };
    let body_len = |data_len| frame_bytes(&Frame::Raft(message(data_len))).len() - LEN_PREFIX_BYTES;
    let mut data_len = max - 64;
    while body_len(data_len) < max {
        data_len += 1;
    }
    assert_eq!(body_len(data_len), max);

    let mut peer = raw_connect(&addr, Channel::Raft, 2).await;
    peer.write_all(&frame_bytes(&Frame::Raft(message(data_len))))
        .await
        .unwrap();
    assert_eq!(server.next_message().await, message(data_len));

    // One byte more, sent raw: refused by the server from its prefix.
    let bytes = frame_bytes(&Frame::Raft(message(data_len + 1)));
    peer.write_all(&bytes[..LEN_PREFIX_BYTES]).await.unwrap();
    assert_closed(&mut peer, CLOSE_WITHIN).await;

    // A client refuses to send a request over the limit; its connection stays usable.
    let client = TcpClient::new(addr.clone(), config).unwrap();
    let too_big = client.request(Bytes::from(vec![0u8; max])).await;
    assert!(
        matches!(too_big, Err(Error::FrameTooLarge { .. })),
        "{too_big:?}"
    );
    let fine = client.request(Bytes::from_static(b"\x00ok")).await.unwrap();
    assert_eq!(fine, ClientResponse::Ok(Bytes::from_static(b"\x00ok")));

    // A request of exactly the limit is handled, but its echo (4 bytes longer) would exceed
    // it: the server answers with an error frame instead of a frame the client must refuse.
    let request_len = |payload: usize| {
        let request = ClientRequest {
            id: 1,
            payload: Bytes::from(vec![0u8; payload]),
        };
        frame_bytes(&Frame::ClientRequest(request)).len() - LEN_PREFIX_BYTES
    };
    let mut payload = max - 64;
    while request_len(payload) < max {
        payload += 1;
    }
    assert_eq!(request_len(payload), max);
    match client.request(Bytes::from(vec![0u8; payload])).await {
        Err(Error::Remote { reason }) => assert!(reason.contains("exceeds the limit"), "{reason}"),
        other => panic!(
            "expected a remote error, got {:?}",
            other.map(|_| "a response")
        ),
    }
    assert_serving(&addr).await;
}
