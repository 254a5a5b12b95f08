//! Helpers shared by the integration tests: a recording node, an echo client handler, short
//! timeouts, and raw-socket tools that speak the wire byte by byte.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use raft_core::node::MessageHandler;
use raft_core::{
    ChunkStatus, LogId, Membership, Message, MessageBody, NodeId, SnapshotChunk, SnapshotChunkAck,
    SnapshotMeta,
};
use raft_net_tcp::codec;
use raft_net_tcp::handshake::{Channel, Hello, HELLO_BYTES};
use raft_net_tcp::{
    ClientHandler, ClientRequest, ClientResponse, Frame, TcpClient, TcpConfig, TcpServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The cluster id every test uses.
pub const CLUSTER: u64 = 77;

/// A configuration with timeouts short enough for quick tests.
pub fn config(node: NodeId) -> TcpConfig {
    let mut config = TcpConfig::new(CLUSTER, node);
    config.frame_bytes_max = 64 * 1024;
    config.handshake_timeout_ms = 500;
    config.frame_timeout_ms = 300;
    config.idle_timeout_ms = 3_000;
    config.request_timeout_ms = 2_000;
    config.connect_timeout_ms = 500;
    config.reconnect_backoff_ms_min = 10;
    config.reconnect_backoff_ms_max = 100;
    config.shutdown_grace_ms = 3_000;
    config
}

/// A node stand-in that records what it receives.
pub struct Recorder {
    messages: mpsc::Sender<Message>,
    /// How long each snapshot chunk takes to "write".
    pub chunk_delay: Duration,
}

impl Recorder {
    /// A recorder and the receiving end of what it records.
    pub fn new(chunk_delay: Duration) -> (Arc<Recorder>, mpsc::Receiver<Message>) {
        let (messages, received) = mpsc::channel(10_000);
        (
            Arc::new(Recorder {
                messages,
                chunk_delay,
            }),
            received,
        )
    }
}

#[async_trait]
impl MessageHandler for Recorder {
    fn deliver(&self, msg: Message) {
        // Bounded; a test that floods more than this fails on its own assertions.
        let _ = self.messages.try_send(msg);
    }

    async fn deliver_snapshot_chunk(&self, chunk: SnapshotChunk) -> SnapshotChunkAck {
        tokio::time::sleep(self.chunk_delay).await;
        SnapshotChunkAck {
            from: chunk.to,
            term: chunk.term,
            snapshot: chunk.meta.last_log_id,
            status: if chunk.done {
                ChunkStatus::Complete
            } else {
                ChunkStatus::Accepted
            },
            next_offset: chunk.offset + chunk.data.len() as u64,
        }
    }
}

/// Answers a request after `payload[0] * 10` milliseconds with the payload itself.
pub struct Echo;

#[async_trait]
impl ClientHandler for Echo {
    async fn handle(&self, request: ClientRequest) -> ClientResponse {
        let delay_ms = u64::from(request.payload.first().copied().unwrap_or(0)) * 10;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        ClientResponse::Ok(request.payload)
    }
}

/// A running server with a recorder and an echo client handler.
pub struct TestServer {
    pub server: TcpServer,
    pub messages: mpsc::Receiver<Message>,
}

impl TestServer {
    pub fn addr(&self) -> String {
        self.server.local_addr().to_string()
    }

    /// The next delivered Raft message, within a second.
    pub async fn next_message(&mut self) -> Message {
        timeout(Duration::from_secs(2), self.messages.recv())
            .await
            .expect("a message within 2 s")
            .expect("recorder alive")
    }
}

pub async fn start_server(node: NodeId, config: TcpConfig) -> TestServer {
    start_server_with(node, config, Duration::ZERO, "127.0.0.1:0").await
}

pub async fn start_server_with(
    node: NodeId,
    config: TcpConfig,
    chunk_delay: Duration,
    addr: &str,
) -> TestServer {
    assert_eq!(config.node_id, node);
    let (tx, messages) = mpsc::channel(10_000);
    let recorder = Arc::new(Recorder {
        messages: tx,
        chunk_delay,
    });
    let server = TcpServer::bind(addr, config, recorder, Some(Arc::new(Echo)))
        .await
        .expect("server starts");
    TestServer { server, messages }
}

/// A heartbeat from `from` to `to`.
pub fn heartbeat(from: NodeId, to: NodeId, round: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: MessageBody::AppendEntries {
            prev_log_id: LogId::ZERO,
            entries: Vec::new(),
            leader_commit: 0,
            round,
        },
    }
}

/// A snapshot chunk from `from` to `to`.
pub fn chunk(from: NodeId, to: NodeId, offset: u64, data: &[u8], done: bool) -> SnapshotChunk {
    SnapshotChunk {
        from,
        to,
        term: 1,
        meta: SnapshotMeta {
            last_log_id: LogId::new(1, 10),
            membership: Membership::new_voters([1, 2, 3]),
            membership_log_id: LogId::ZERO,
            size_bytes: 1 << 20,
            crc32: 0,
            created_unix_ms: 0,
        },
        offset,
        data: Bytes::copy_from_slice(data),
        crc32: 0,
        done,
    }
}

/// Opens a raw socket and completes a valid handshake for `channel` as `node`.
pub async fn raw_connect(addr: &str, channel: Channel, node: NodeId) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&Hello::request(CLUSTER, node, channel).encode())
        .await
        .expect("hello");
    let reply = read_hello(&mut stream).await.expect("hello reply");
    assert_eq!(reply.status, 0, "handshake accepted");
    stream
}

/// Reads a 24-byte hello reply.
pub async fn read_hello(stream: &mut TcpStream) -> Option<Hello> {
    let mut reply = [0u8; HELLO_BYTES];
    match timeout(Duration::from_secs(2), stream.read_exact(&mut reply)).await {
        Ok(Ok(_)) => Some(Hello::decode(&reply)),
        _ => None,
    }
}

/// The bytes of one frame, prefix included.
pub fn frame_bytes(frame: &Frame) -> Vec<u8> {
    codec::encode_frame_to_vec(frame, u32::MAX >> 2).expect("encodable")
}

/// A length prefix followed by `body`.
pub fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one frame from a raw socket, within 2 s; `None` if the connection closed.
pub async fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut buffer = BytesMut::new();
    loop {
        if let Some(frame) = codec::decode_frame(&mut buffer, 1 << 24).expect("valid frame") {
            return Some(frame);
        }
        let read = timeout(Duration::from_secs(2), stream.read_buf(&mut buffer))
            .await
            .expect("the server answers or closes within 2 s");
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Asserts the server closes the connection within `within` (reading only EOF or an error;
/// any frame it sent first is skipped).
pub async fn assert_closed(stream: &mut TcpStream, within: Duration) {
    let mut sink = [0u8; 1024];
    let closed = timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after {within:?}");
}

/// Asserts a fresh client still gets answers from the server.
pub async fn assert_serving(addr: &str) {
    let client = TcpClient::new(addr, config(0)).expect("client");
    let response = client
        .request(Bytes::from_static(&[0, 1, 2]))
        .await
        .expect("answer");
    assert_eq!(response, ClientResponse::Ok(Bytes::from_static(&[0, 1, 2])));
}
