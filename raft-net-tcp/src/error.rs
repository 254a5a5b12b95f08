//! The crate's error type.

use raft_core::node::{RaftError, TransportError};
use raft_core::NodeId;

/// Everything that can go wrong in this crate.
///
/// Errors about one frame or one connection never affect other connections: the connection
/// that produced them is closed (or, for a failed request, only that request fails).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame announced a body of zero bytes; every valid frame has a body.
    #[error("zero-length frame")]
    FrameEmpty,
    /// A frame is larger than `frame_bytes_max` (detected from its length prefix, before any
    /// allocation, or while encoding).
    #[error("frame of {len_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    FrameTooLarge {
        /// The announced (receive) or reached (send) body length.
        len_bytes: u64,
        /// The configured limit.
        max_bytes: u32,
    },
    /// A frame body is not a valid MessagePack encoding of a frame.
    #[error("undecodable frame: {reason}")]
    Decode {
        /// The decoder's explanation.
        reason: String,
    },
    /// A frame body decoded but bytes were left after the frame's value.
    #[error("frame has trailing bytes after its value")]
    TrailingBytes,
    /// A value could not be encoded.
    #[error("cannot encode frame: {reason}")]
    Encode {
        /// The encoder's explanation.
        reason: String,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered_bytes} bytes buffered)")]
    UnexpectedEof {
        /// Bytes of the incomplete frame received before the close.
        buffered_bytes: u64,
    },
    /// No frame started within `idle_timeout_ms`.
    #[error("connection idle for {timeout_ms} ms")]
    IdleTimeout {
        /// The configured idle timeout.
        timeout_ms: u64,
    },
    /// A frame did not arrive completely within `frame_timeout_ms` of its first byte.
    #[error("frame incomplete after {timeout_ms} ms")]
    FrameTimeout {
        /// The configured frame timeout.
        timeout_ms: u64,
    },
    /// A socket write did not finish within `write_timeout_ms`.
    #[error("write stalled for {timeout_ms} ms")]
    WriteTimeout {
        /// The configured write timeout.
        timeout_ms: u64,
    },
    /// Connecting to `addr` did not succeed within `connect_timeout_ms`.
    #[error("connecting to {addr} timed out after {timeout_ms} ms")]
    ConnectTimeout {
        /// The address.
        addr: String,
        /// The configured connect timeout.
        timeout_ms: u64,
    },
    /// The handshake did not complete within `handshake_timeout_ms`.
    #[error("handshake timed out after {timeout_ms} ms")]
    HandshakeTimeout {
        /// The configured handshake timeout.
        timeout_ms: u64,
    },
    /// The handshake failed: the other side is not a compatible member of our cluster.
    #[error("handshake failed: {0}")]
    Handshake(#[from] crate::handshake::Rejection),
    /// A TLS setting is unusable: an unreadable or invalid PEM file, a key that does not
    /// match its certificate, an address without a host to check a certificate against.
    #[error("TLS configuration: {reason}")]
    TlsConfig {
        /// What is wrong.
        reason: String,
    },
    /// The TLS handshake failed: a certificate was refused (on either side), missing, or the
    /// other side does not speak TLS. The reason says which, with a hint.
    #[error("TLS handshake failed: {reason}")]
    TlsHandshake {
        /// What happened.
        reason: String,
    },
    /// A request got no answer within `request_timeout_ms`.
    #[error("request timed out after {timeout_ms} ms")]
    RequestTimeout {
        /// The configured request timeout.
        timeout_ms: u64,
    },
    /// The connection closed before the answer arrived.
    #[error("connection closed")]
    ConnectionClosed,
    /// The connection already has `inflight_requests_max` requests waiting.
    #[error("{max} requests already in flight")]
    TooManyInFlight {
        /// The configured limit.
        max: u32,
    },
    /// The other side answered a request with an error frame.
    #[error("remote error: {reason}")]
    Remote {
        /// The other side's explanation.
        reason: String,
    },
    /// The other side sent a frame that makes no sense here.
    #[error("unexpected {kind} frame")]
    UnexpectedFrame {
        /// The frame's kind name.
        kind: &'static str,
    },
    /// No address is known for the node.
    #[error("no address known for node {0}")]
    UnknownPeer(NodeId),
    /// A reconnect delay is running for the node; the caller should try again later.
    #[error("node {node} is backing off for another {remaining_ms} ms after a failed connect")]
    BackingOff {
        /// The peer.
        node: NodeId,
        /// Time left until the next attempt is allowed.
        remaining_ms: u64,
    },
    /// A configuration field is out of range.
    #[error("invalid configuration: {field} {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A transport was created outside a tokio runtime.
    #[error("no tokio runtime: create the transport inside a runtime")]
    NoRuntime,
    /// The transport or server was shut down.
    #[error("shut down")]
    Shutdown,
    /// The node did not start ([`crate::TcpEndpoint::start`]).
    #[error("the node did not start: {0}")]
    Node(RaftError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether a request that failed with this error provably never reached the server, so
    /// that sending it again, there or elsewhere, cannot execute it twice.
    ///
    /// True for every error of opening a connection (a socket error: only the connect and
    /// the handshake read and write the socket directly; a failure on an open connection
    /// surfaces as [`Error::ConnectionClosed`]), and for a request refused before it was
    /// written ([`Error::TooManyInFlight`], [`Error::FrameTooLarge`], [`Error::Encode`]).
    /// False after [`Error::ConnectionClosed`], [`Error::RequestTimeout`], [`Error::Remote`]
    /// and anything else that may follow the request's bytes onto the wire.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::ConnectTimeout { .. }
                | Error::HandshakeTimeout { .. }
                | Error::Handshake(_)
                | Error::TlsConfig { .. }
                | Error::TlsHandshake { .. }
                | Error::TooManyInFlight { .. }
                | Error::FrameTooLarge { .. }
                | Error::Encode { .. }
                | Error::InvalidConfig { .. }
                | Error::NoRuntime
                | Error::UnknownPeer(_)
                | Error::BackingOff { .. }
                | Error::Shutdown
        )
    }

    /// Converts to raft-core's [`TransportError`] for a failure talking to `node`.
    pub fn into_transport_error(self, node: NodeId) -> TransportError {
        match self {
            Error::RequestTimeout { .. } => TransportError::Timeout(node),
            Error::UnknownPeer(node) => TransportError::UnknownPeer(node),
            Error::Shutdown => TransportError::Shutdown,
            error @ (Error::FrameEmpty
            | Error::FrameTooLarge { .. }
            | Error::Decode { .. }
            | Error::TrailingBytes
            | Error::Encode { .. }
            | Error::Handshake(_)
            | Error::TlsConfig { .. }
            | Error::TlsHandshake { .. }
            | Error::Remote { .. }
            | Error::UnexpectedFrame { .. }) => TransportError::Protocol {
                node,
                reason: error.to_string(),
            },
            error => TransportError::Unreachable {
                node,
                reason: error.to_string(),
            },
        }
    }
}
