//! The values that travel in frames: Raft messages, snapshot chunks and their acknowledgements,
//! native client requests and responses, and error notices.
//!
//! A frame body is a MessagePack array of three elements, `[kind, id, payload]` (see the crate
//! documentation for the table of kinds). The payload is decoded according to `kind`; a kind
//! this version does not know decodes to [`Frame::Unknown`] with its payload skipped, so the
//! receiver can answer "unknown message type" instead of tearing the connection down.

use std::fmt;

use bytes::Bytes;
use raft_core::engine::EngineError;
use raft_core::node::RaftError;
use raft_core::{Message, NodeId, SnapshotChunk, SnapshotChunkAck};
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Frame kind of a [`Frame::Raft`].
pub const KIND_RAFT: u8 = 1;
/// Frame kind of a [`Frame::SnapshotChunk`].
pub const KIND_SNAPSHOT_CHUNK: u8 = 2;
/// Frame kind of a [`Frame::SnapshotAck`].
pub const KIND_SNAPSHOT_ACK: u8 = 3;
/// Frame kind of a [`Frame::ClientRequest`].
pub const KIND_CLIENT_REQUEST: u8 = 4;
/// Frame kind of a [`Frame::ClientResponse`].
pub const KIND_CLIENT_RESPONSE: u8 = 5;
/// Frame kind of a [`Frame::Error`].
pub const KIND_ERROR: u8 = 6;

/// Number of elements of the array that forms every frame body.
const FRAME_FIELDS: usize = 3;

/// A request of the native client protocol. The payload is opaque to this crate: the binary
/// defines what commands look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// The request id, chosen by the client and echoed in the response. Ids are unique among
    /// the requests in flight on one connection.
    pub id: u64,
    /// The encoded command.
    pub payload: Bytes,
}

/// The answer to a [`ClientRequest`].
///
/// The variants tell a client what it may do next, which the leader-following
/// [`crate::ClusterClient`] relies on: go to the leader ([`ClientResponse::NotLeader`]), retry
/// ([`ClientResponse::Unavailable`]: nothing was done), report an unknown outcome
/// ([`ClientResponse::OutcomeUnknown`]: never retry a request that is not idempotent), or give
/// up ([`ClientResponse::Error`]). A [`ClientHandler`](crate::ClientHandler) turns a node's
/// [`RaftError`] into the right one with `ClientResponse::from`.
///
/// `Unavailable` and `OutcomeUnknown` exist since protocol version 2 (see
/// [`crate::handshake::PROTOCOL_VERSION`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The request was executed; the payload is the encoded result.
    Ok(Bytes),
    /// This server is not the leader and did not execute the request; retry at the leader if
    /// one is known.
    NotLeader {
        /// The leader's node id, if this server knows it.
        leader_id: Option<NodeId>,
        /// The leader's client address, if this server knows it. With [`crate::TcpNode`] (one
        /// server for peers and clients) this is the leader's address in the configuration.
        leader_addr: Option<String>,
    },
    /// The request failed for good: retrying it unchanged will not help (malformed, invalid,
    /// too large). The message says why.
    Error(String),
    /// The request was not executed and nothing changed; retrying, later or on another
    /// member, may help (back-pressure, an election or leadership transfer in progress, a
    /// node shutting down or failed). The message says why.
    Unavailable(String),
    /// The request may or may not have been executed (the leader changed, or no answer came
    /// in time): never report it as done, and retry it only if executing it twice is harmless.
    /// The message says why.
    OutcomeUnknown(String),
}

impl From<RaftError> for ClientResponse {
    /// What a client should be told about a failed call to the node: "go to the leader",
    /// "retry" (nothing was done: [`RaftError::is_retryable`] errors, and a node that is
    /// shut down or failed, since another member may serve), "outcome unknown", or "failed
    /// for good" (a request the engine refuses as invalid or too large, which no retry fixes).
    fn from(error: RaftError) -> ClientResponse {
        match error {
            RaftError::NotLeader { leader, address } => ClientResponse::NotLeader {
                leader_id: leader,
                leader_addr: address,
            },
            RaftError::Refused(EngineError::NotLeader { leader }) => ClientResponse::NotLeader {
                leader_id: leader,
                leader_addr: None,
            },
            RaftError::OutcomeUnknown(why) => ClientResponse::OutcomeUnknown(why),
            error @ RaftError::Refused(EngineError::EntryTooLarge(_) | EngineError::Invalid(_)) => {
                ClientResponse::Error(error.to_string())
            }
            error @ RaftError::InvalidConfig(_) => ClientResponse::Error(error.to_string()),
            error @ (RaftError::Refused(_)
            | RaftError::Timeout
            | RaftError::SnapshotFailed(_)
            | RaftError::Shutdown
            | RaftError::Fatal(_)) => ClientResponse::Unavailable(error.to_string()),
            // A kind of failure this version does not know: claiming that nothing happened
            // could be wrong, "unknown" never is.
            error => ClientResponse::OutcomeUnknown(error.to_string()),
        }
    }
}

/// One frame of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A Raft message (one-way; answers travel as Raft messages the other way). Id 0.
    Raft(Message),
    /// A snapshot chunk, answered by a [`Frame::SnapshotAck`] with the same id.
    SnapshotChunk {
        /// Request id.
        id: u64,
        /// The chunk.
        chunk: SnapshotChunk,
    },
    /// The answer to a [`Frame::SnapshotChunk`].
    SnapshotAck {
        /// The id of the chunk's frame.
        id: u64,
        /// The receiver's acknowledgement.
        ack: SnapshotChunkAck,
    },
    /// A native client request (the request's id is the frame's id).
    ClientRequest(ClientRequest),
    /// The answer to a [`Frame::ClientRequest`].
    ClientResponse {
        /// The id of the request.
        id: u64,
        /// The answer.
        response: ClientResponse,
    },
    /// The receiver could not process the frame with this id (0: not about a request).
    Error {
        /// The id of the frame the error is about.
        id: u64,
        /// Why.
        reason: String,
    },
    /// A frame of a kind this version does not know; produced by decoding only (encoding one
    /// writes a nil payload, which is useful in tests).
    Unknown {
        /// The unknown kind.
        kind: u8,
        /// The frame's id.
        id: u64,
    },
}

/// Bytes a frame's encoding adds around its byte strings, about: array and enum markers,
/// ids, terms and indexes. Only sizes the encoder's buffer up front.
const FRAME_OVERHEAD_BYTES: usize = 128;
/// Bytes an entry's encoding adds around its payload, about (term, index, kind, markers).
const ENTRY_OVERHEAD_BYTES: usize = 32;

impl Frame {
    /// About how many bytes the frame encodes to, so that an encoder can reserve its buffer
    /// once instead of growing it by doubling (a large AppendEntries took several
    /// reallocations, each a fresh allocation and a copy).
    pub fn encoded_bytes_hint(&self) -> usize {
        let payload = match self {
            Frame::Raft(message) => match &message.body {
                raft_core::MessageBody::AppendEntries { entries, .. } => entries
                    .iter()
                    .map(|e| e.data.len() + ENTRY_OVERHEAD_BYTES)
                    .sum(),
                _ => 0,
            },
            Frame::SnapshotChunk { chunk, .. } => chunk.data.len(),
            Frame::ClientRequest(request) => request.payload.len(),
            Frame::ClientResponse { response, .. } => match response {
                ClientResponse::Ok(payload) => payload.len(),
                ClientResponse::NotLeader { leader_addr, .. } => {
                    leader_addr.as_ref().map_or(0, String::len)
                }
                ClientResponse::Error(reason)
                | ClientResponse::Unavailable(reason)
                | ClientResponse::OutcomeUnknown(reason) => reason.len(),
            },
            Frame::Error { reason, .. } => reason.len(),
            Frame::SnapshotAck { .. } | Frame::Unknown { .. } => 0,
        };
        payload + FRAME_OVERHEAD_BYTES
    }

    /// The kind byte written on the wire.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Raft(_) => KIND_RAFT,
            Frame::SnapshotChunk { .. } => KIND_SNAPSHOT_CHUNK,
            Frame::SnapshotAck { .. } => KIND_SNAPSHOT_ACK,
            Frame::ClientRequest(_) => KIND_CLIENT_REQUEST,
            Frame::ClientResponse { .. } => KIND_CLIENT_RESPONSE,
            Frame::Error { .. } => KIND_ERROR,
            Frame::Unknown { kind, .. } => *kind,
        }
    }

    /// The request id (0 for frames that are not about a request).
    pub fn id(&self) -> u64 {
        match self {
            Frame::Raft(_) => 0,
            Frame::ClientRequest(request) => request.id,
            Frame::SnapshotChunk { id, .. }
            | Frame::SnapshotAck { id, .. }
            | Frame::ClientResponse { id, .. }
            | Frame::Error { id, .. }
            | Frame::Unknown { id, .. } => *id,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Raft(_) => "Raft",
            Frame::SnapshotChunk { .. } => "SnapshotChunk",
            Frame::SnapshotAck { .. } => "SnapshotAck",
            Frame::ClientRequest(_) => "ClientRequest",
            Frame::ClientResponse { .. } => "ClientResponse",
            Frame::Error { .. } => "Error",
            Frame::Unknown { .. } => "Unknown",
        }
    }
}

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(FRAME_FIELDS)?;
        tuple.serialize_element(&self.kind())?;
        tuple.serialize_element(&self.id())?;
        match self {
            Frame::Raft(message) => tuple.serialize_element(message)?,
            Frame::SnapshotChunk { chunk, .. } => tuple.serialize_element(chunk)?,
            Frame::SnapshotAck { ack, .. } => tuple.serialize_element(ack)?,
            Frame::ClientRequest(request) => tuple.serialize_element(&request.payload)?,
            Frame::ClientResponse { response, .. } => tuple.serialize_element(response)?,
            Frame::Error { reason, .. } => tuple.serialize_element(reason)?,
            Frame::Unknown { .. } => tuple.serialize_element(&())?,
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Frame, D::Error> {
        deserializer.deserialize_tuple(FRAME_FIELDS, FrameVisitor)
    }
}

struct FrameVisitor;

impl FrameVisitor {
    fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
        &self,
        seq: &mut A,
        index: usize,
    ) -> Result<T, A::Error> {
        seq.next_element()?
            .ok_or_else(|| de::Error::invalid_length(index, self))
    }
}

impl<'de> Visitor<'de> for FrameVisitor {
    type Value = Frame;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a frame: an array of [kind, id, payload]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Frame, A::Error> {
        let kind: u8 = self.next(&mut seq, 0)?;
        let id: u64 = self.next(&mut seq, 1)?;
        let frame = match kind {
            KIND_RAFT => Frame::Raft(self.next(&mut seq, 2)?),
            KIND_SNAPSHOT_CHUNK => Frame::SnapshotChunk {
                id,
                chunk: self.next(&mut seq, 2)?,
            },
            KIND_SNAPSHOT_ACK => Frame::SnapshotAck {
                id,
                ack: self.next(&mut seq, 2)?,
            },
            KIND_CLIENT_REQUEST => Frame::ClientRequest(ClientRequest {
                id,
                payload: self.next(&mut seq, 2)?,
            }),
            KIND_CLIENT_RESPONSE => Frame::ClientResponse {
                id,
                response: self.next(&mut seq, 2)?,
            },
            KIND_ERROR => Frame::Error {
                id,
                reason: self.next(&mut seq, 2)?,
            },
            _ => {
                // A newer peer's frame: skip its payload so the connection stays usable and
                // the receiver can say which kind it did not understand.
                let _: IgnoredAny = self.next(&mut seq, 2)?;
                Frame::Unknown { kind, id }
            }
        };
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use raft_core::node::Fatal;

    use super::*;

    /// Each node error tells the client what it may do next.
    #[test]
    fn node_errors_become_the_response_that_says_what_to_do_next() {
        let not_leader = RaftError::NotLeader {
            leader: Some(2),
            address: Some("b:2".into()),
        };
        assert_eq!(
            ClientResponse::from(not_leader),
            ClientResponse::NotLeader {
                leader_id: Some(2),
                leader_addr: Some("b:2".into())
            }
        );
        assert_eq!(
            ClientResponse::from(RaftError::OutcomeUnknown("leader changed".into())),
            ClientResponse::OutcomeUnknown("leader changed".into())
        );
        let retry = [
            RaftError::Refused(EngineError::Backpressure(9)),
            RaftError::Refused(EngineError::TransferInProgress(3)),
            RaftError::Refused(EngineError::NotReady),
            RaftError::Timeout,
            RaftError::Shutdown,
            RaftError::Fatal(Fatal::LogStore("disk gone".into())),
            RaftError::SnapshotFailed("disk full".into()),
        ];
        for error in retry {
            let text = error.to_string();
            assert_eq!(
                ClientResponse::from(error),
                ClientResponse::Unavailable(text)
            );
        }
        let for_good = [
            RaftError::Refused(EngineError::EntryTooLarge(1 << 30)),
            RaftError::Refused(EngineError::Invalid("not a member".into())),
        ];
        for error in for_good {
            let text = error.to_string();
            assert_eq!(ClientResponse::from(error), ClientResponse::Error(text));
        }
    }
}
