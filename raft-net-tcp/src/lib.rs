//! # raft-net-tcp
//!
//! A TCP transport for `raft-core`: length-prefixed MessagePack frames, a versioned handshake,
//! lazily connected peers with jittered exponential backoff, bounded queues, request ids with
//! per-request timeouts, and a server that survives bad peers and bad bytes. The same framing
//! carries a small native client protocol (opaque request payloads; responses that tell a
//! client whether to go to the leader, retry, or report an unknown outcome) for applications
//! and the `raft` binary.
//!
//! - [`TcpEndpoint`] and [`TcpNode`]: a raft-core node on TCP in one call. Bind the endpoint
//!   (its address goes into the initial membership), optionally build a snapshot sender on
//!   its transport, then [`TcpEndpoint::start`] the node, its server and its transport;
//!   [`TcpNode::shutdown`] stops them in order. A whole program built this way is the
//!   workspace's `examples/replicated_counter.rs`.
//! - [`TcpTransport`]: raft-core's `Transport` (the sending half a node owns).
//! - [`TcpServer`]: accepts peers and clients, delivers Raft traffic to a `MessageHandler` and
//!   client requests to an optional [`ClientHandler`].
//! - [`ClusterClient`]: a client of a whole cluster that finds the leader, follows
//!   redirects and retries only what is safe ([`Idempotency`]).
//! - [`TcpClient`]: sends native client requests, pipelined, to one server.
//! - [`codec`] and [`handshake`]: the pure byte-level parts, no I/O.
//! - `tls` (feature `tls`): TLS with mutual authentication for all of the above.
//!
//! A [`ClientHandler`] answers a failed call to the node with `ClientResponse::from(error)`
//! (a `raft_core::node::RaftError`), which keeps the distinctions a client needs: not the
//! leader (and who is), not executed (retry), outcome unknown, failed for good.
//!
//! ## Wire format
//!
//! Every connection starts with a 24-byte hello in each direction (the connecting side first);
//! all integers are big-endian:
//!
//! ```text
//! offset  size  field
//! 0       4     magic b"RNTP"
//! 4       2     protocol version (u16), currently 2; must match exactly (see below)
//! 6       1     channel: 1 = Raft messages, 2 = snapshot chunks, 3 = native client
//! 7       1     status: 0 in the request; in the reply 0 = accepted, 1 = bad magic,
//!               2 = version mismatch, 3 = cluster mismatch, 4 = channel not served,
//!               5 = peer channel without a node id, 7 = TLS required (a plaintext
//!               hello to a TLS server, answered in plaintext), 8 = certificate
//!               required, 9 = certificate not that of the node named (feature `tls`)
//! 8       8     cluster id (u64)
//! 16      8     sender's node id (u64; 0 for a native client)
//! ```
//!
//! A rejected hello is answered, logged on both sides and the connection closed. The
//! connecting side also checks that the answering node is the one it dialled.
//!
//! Then both directions carry frames:
//!
//! ```text
//! offset  size  field
//! 0       4     body length N (u32), 1 <= N <= frame_bytes_max (default 16 MiB)
//! 4       N     body: a MessagePack array [kind, id, payload]
//! ```
//!
//! | kind | frame                           | id              | payload                          |
//! |------|---------------------------------|-----------------|----------------------------------|
//! | 1    | [`Frame::Raft`]                 | 0               | `raft_core::Message`             |
//! | 2    | [`Frame::SnapshotChunk`]        | request id      | `raft_core::SnapshotChunk`       |
//! | 3    | [`Frame::SnapshotAck`]          | the chunk's id  | `raft_core::SnapshotChunkAck`    |
//! | 4    | [`Frame::ClientRequest`]        | request id      | binary (opaque command)          |
//! | 5    | [`Frame::ClientResponse`]       | the request's id| [`ClientResponse`]               |
//! | 6    | [`Frame::Error`]                | the frame's id  | string (why it was refused)      |
//!
//! Payloads are encoded with `rmp-serde`'s default (structs as arrays, enum variants by name).
//! The length is checked before the body is buffered; a zero, oversize or undecodable frame
//! closes the connection. A frame of an unknown kind is answered with an error frame and the
//! connection goes on, so a newer peer cannot break an older one.
//!
//! A [`ClientResponse`] is one of:
//!
//! | variant          | payload                          | meaning for the client                          |
//! |------------------|----------------------------------|-------------------------------------------------|
//! | `Ok`             | binary (the encoded result)      | executed                                        |
//! | `NotLeader`      | `[leader_id?, leader_addr?]`     | not executed; go to the leader if one is named  |
//! | `Error`          | string                           | failed for good; retrying will not help         |
//! | `Unavailable`    | string (since version 2)         | not executed; retry, later or elsewhere         |
//! | `OutcomeUnknown` | string (since version 2)         | may have been executed; retry only if idempotent |
//!
//! A handler that the server cuts off after `request_timeout_ms`, or that panics, is answered
//! `OutcomeUnknown`: it may have done part of its work.
//!
//! ## TLS (feature `tls`)
//!
//! With [`TcpConfig`]'s `tls` set (a `tls::TlsConfig`: rustls with the ring provider),
//! every connection is TLS, and everything above runs inside it unchanged: the TLS
//! handshake first, then the hello and the frames, with the TLS handshake and the hello
//! under one `handshake_timeout_ms` deadline and frames under the same `frame_bytes_max`.
//! Peers must present a certificate signed by the cluster's CA that names the host of their
//! address; clients one signed by the CA unless the server's
//! `tls::ClientCerts` is `Optional`. The `tls` module says who presents what and what
//! TLS does not protect. Without the feature nothing of rustls is compiled, and the
//! plaintext path is the same either way: the connection's halves are an enum, so a
//! plaintext read or write costs one branch more, no allocation and no copy.
//!
//! ## Versions
//!
//! Peers must speak the same [`handshake::PROTOCOL_VERSION`]; a hello of another version is
//! refused (status 2) before any frame, so an older peer fails cleanly at connect time
//! instead of on a response it cannot decode.
//!
//! - 1: the first version.
//! - 2: `ClientResponse::Unavailable` and `ClientResponse::OutcomeUnknown`.
//!
//! ## Example
//!
//! An echo server for the native client protocol and a client talking to it:
//!
//! ```
//! use std::sync::Arc;
//!
//! use async_trait::async_trait;
//! use bytes::Bytes;
//! use raft_core::node::MessageHandler;
//! use raft_core::{ChunkStatus, Message, SnapshotChunk, SnapshotChunkAck};
//! use raft_net_tcp::{ClientHandler, ClientRequest, ClientResponse, TcpClient, TcpConfig, TcpServer};
//!
//! /// A node that ignores Raft traffic (a real server passes the node's handle).
//! struct NoNode;
//!
//! #[async_trait]
//! impl MessageHandler for NoNode {
//!     fn deliver(&self, _msg: Message) {}
//!     async fn deliver_snapshot_chunk(&self, chunk: SnapshotChunk) -> SnapshotChunkAck {
//!         SnapshotChunkAck {
//!             from: chunk.to,
//!             term: chunk.term,
//!             snapshot: chunk.meta.last_log_id,
//!             status: ChunkStatus::Refused("no node".into()),
//!             next_offset: 0,
//!         }
//!     }
//! }
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl ClientHandler for Echo {
//!     async fn handle(&self, request: ClientRequest) -> ClientResponse {
//!         ClientResponse::Ok(request.payload)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), raft_net_tcp::Error> {
//! let cluster_id = 42;
//! let server = TcpServer::bind(
//!     "127.0.0.1:0",
//!     TcpConfig::new(cluster_id, 1),
//!     Arc::new(NoNode),
//!     Some(Arc::new(Echo)),
//! )
//! .await?;
//!
//! let client = TcpClient::new(server.local_addr().to_string(), TcpConfig::new(cluster_id, 0))?;
//! let response = client.request(Bytes::from_static(b"hello")).await?;
//! assert_eq!(response, ClientResponse::Ok(Bytes::from_static(b"hello")));
//!
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod backoff;
mod client;
mod cluster_client;
pub mod codec;
mod config;
mod connection;
mod error;
pub mod frame;
pub mod handshake;
mod mux;
mod node;
mod server;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

pub use client::TcpClient;
pub use cluster_client::{
    ClusterClient, ClusterError, Decoded, Idempotency, CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT,
    LEADER_TIMEOUT_MS_DEFAULT,
};
pub use config::*;
pub use error::{Error, Result};
pub use frame::{ClientRequest, ClientResponse, Frame};
pub use handshake::{Channel, Rejection};
pub use node::{TcpEndpoint, TcpNode, SERVER_TIMEOUT_MARGIN_MS};
pub use server::{ClientHandler, PeerAddresses, ServerStats, ServerStatsHandle, TcpServer};
pub use transport::{PeerStats, TcpTransport};
