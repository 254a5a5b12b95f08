//! The payloads of the native client protocol: what a [`Request`] asks and what a [`Reply`]
//! answers. raft-net-tcp carries them as opaque bytes (MessagePack here) in its client
//! frames; a "not the leader" answer travels as the transport's own
//! `ClientResponse::NotLeader`.

use bytes::Bytes;
use raft_core::NodeId;
use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::kv::SetCondition;
use crate::kv::{encode_msgpack, KvCommand, KvResponse};

/// A request of the native client protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A write through the log (leader only).
    Write(KvCommand),
    /// Linearizable read of the keys (served by any voter or learner after a read barrier).
    Get {
        /// The keys, at most [`REQUEST_KEYS_MAX`].
        #[serde(deserialize_with = "bounded_keys")]
        keys: Vec<Bytes>,
    },
    /// Linearizable count of the keys present (duplicates count twice, as in Redis).
    Exists {
        /// The keys, at most [`REQUEST_KEYS_MAX`].
        #[serde(deserialize_with = "bounded_keys")]
        keys: Vec<Bytes>,
    },
    /// Linearizable number of keys.
    DbSize,
    /// This server's status (served locally, no barrier).
    Status,
    /// Adds a learner (leader only).
    AddLearner {
        /// The new server.
        id: NodeId,
        /// Its Raft address.
        addr: String,
    },
    /// Adds a voter, caught up as a learner first (leader only).
    AddVoter {
        /// The new server.
        id: NodeId,
        /// Its Raft address.
        addr: String,
    },
    /// Promotes a learner to voter (leader only).
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Removes a server (leader only).
    Remove {
        /// The server.
        id: NodeId,
    },
    /// Hands leadership to `id` (leader only).
    TransferLeader {
        /// The new leader.
        id: NodeId,
    },
    /// Builds a snapshot on this server now.
    Snapshot,
    /// Starts a backup: builds a snapshot on this server now (or takes the latest, if
    /// nothing was applied since) and opens it for [`Request::BackupChunk`]s.
    BackupBegin,
    /// The next bytes of a backup's snapshot.
    BackupChunk {
        /// The session [`Reply::BackupBegun`] named.
        session: u64,
        /// Where the previous chunk ended (0 first).
        offset: u64,
    },
}

impl Request {
    /// Whether executing the request twice is harmless, so a client may retry it after an
    /// unknown outcome. Writes are not: a retried increment would count twice.
    pub fn is_idempotent(&self) -> bool {
        !matches!(self, Request::Write(_))
    }

    /// Whether only the leader executes it.
    pub fn needs_leader(&self) -> bool {
        matches!(
            self,
            Request::Write(_)
                | Request::AddLearner { .. }
                | Request::AddVoter { .. }
                | Request::Promote { .. }
                | Request::Remove { .. }
                | Request::TransferLeader { .. }
        )
    }

    /// Encodes the request.
    pub fn encode(&self) -> Bytes {
        if let Request::Write(command) = self {
            return command.encode_after(WRITE_REQUEST_PREFIX);
        }
        let payload_bytes = match self {
            Request::Write(command) => command.payload_bytes(),
            Request::Get { keys } | Request::Exists { keys } => keys.iter().map(Bytes::len).sum(),
            _ => SMALL_MESSAGE_BYTES,
        };
        encode_msgpack(self, payload_bytes)
    }

    /// Decodes a request from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Request, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Keys one read request may name, at most: as many as a Redis request may carry. A frame
/// of 16 MiB holds millions of one-byte keys, each decoded into an allocation of its own;
/// the decoder refuses more than this before it allocates them.
pub const REQUEST_KEYS_MAX: usize = crate::resp::REQUEST_ARGS_MAX;

/// Keys beyond which a decoder stops making room in advance: the count it is told is the
/// peer's claim.
const KEYS_PREALLOCATED_MAX: usize = 1024;

/// Deserializes a list of at most [`REQUEST_KEYS_MAX`] keys.
fn bounded_keys<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Bytes>, D::Error> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<Bytes>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {REQUEST_KEYS_MAX} keys")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Bytes>, A::Error> {
            let announced = seq.size_hint().unwrap_or(0);
            if announced > REQUEST_KEYS_MAX {
                return Err(serde::de::Error::invalid_length(announced, &self));
            }
            let mut keys = Vec::with_capacity(announced.min(KEYS_PREALLOCATED_MAX));
            while let Some(key) = seq.next_element::<Bytes>()? {
                if keys.len() == REQUEST_KEYS_MAX {
                    return Err(serde::de::Error::invalid_length(keys.len() + 1, &self));
                }
                keys.push(key);
            }
            Ok(keys)
        }
    }
    deserializer.deserialize_seq(Keys)
}

/// One member of the configuration as a status reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The server.
    pub id: NodeId,
    /// Its Raft address (also its native client address).
    pub addr: String,
    /// Voter (true) or learner (false).
    pub voter: bool,
}

/// One peer's replication progress, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    /// The peer.
    pub id: NodeId,
    /// Highest index known replicated there.
    pub match_index: u64,
}

/// A server's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The server.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// The leader it knows, if any.
    pub leader: Option<NodeId>,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Last log index.
    pub last_index: u64,
    /// Index of the latest snapshot (0: none).
    pub snapshot_index: u64,
    /// Whether the effective configuration is joint.
    pub joint: bool,
    /// Members of the effective configuration.
    pub members: Vec<MemberInfo>,
    /// Replication progress of each peer (leader only).
    pub peers: Vec<PeerProgress>,
    /// Keys in the state machine.
    pub keys: u64,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The state machine's answer to a write.
    Write(KvResponse),
    /// Values of a [`Request::Get`], in request order.
    Values(Vec<Option<Bytes>>),
    /// A count ([`Request::Exists`], [`Request::DbSize`]).
    Count(u64),
    /// A status.
    Status(Box<StatusReport>),
    /// A membership change or transfer finished.
    Done,
    /// A snapshot was built; its last included index.
    Snapshot {
        /// The snapshot's last index.
        index: u64,
    },
    /// A backup started.
    BackupBegun {
        /// The session to name in [`Request::BackupChunk`].
        session: u64,
        /// The server serving it.
        node: NodeId,
        /// The snapshot's metadata record (`raft_snapshot::format::encode_meta`): last
        /// included entry, configuration, data size and CRC32.
        meta: Bytes,
    },
    /// Bytes of a backup's snapshot, from the offset asked for.
    BackupChunk {
        /// The bytes.
        data: Bytes,
        /// Whether they end the snapshot (the session is then closed).
        done: bool,
    },
}

/// Why a request failed, as the native protocol carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ServiceError {
    /// This server is not the leader; `addr` is where the leader is, if known.
    #[error("not the leader (leader {leader:?} at {addr:?})")]
    NotLeader {
        /// The leader's id, if known.
        leader: Option<NodeId>,
        /// The leader's address, if known.
        addr: Option<String>,
    },
    /// No leader is known right now (election in progress or no quorum).
    #[error("no leader: the cluster has no leader right now, retry later")]
    NoLeader,
    /// The write may or may not have been applied.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Nothing was changed and retrying may help (back-pressure, timeout, unreachable server).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request is invalid; retrying will not help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The server failed or is shutting down.
    #[error("server failed: {0}")]
    Failed(String),
}

/// The payload of a native response: the reply or the error.
pub type Outcome = Result<Reply, ServiceError>;

/// Bytes reserved for encoding a message that carries no keys or values.
const SMALL_MESSAGE_BYTES: usize = 256;

/// Encodes an outcome.
pub fn encode_outcome(outcome: &Outcome) -> Bytes {
    let payload_bytes = match outcome {
        Ok(Reply::Values(values)) => values.iter().flatten().map(|v| v.len() + 8).sum(),
        Ok(Reply::Write(KvResponse::Set { previous, .. })) => {
            previous.as_ref().map_or(0, Bytes::len)
        }
        Ok(Reply::BackupChunk { data, .. }) => data.len() + SMALL_MESSAGE_BYTES,
        Ok(Reply::BackupBegun { meta, .. }) => meta.len() + SMALL_MESSAGE_BYTES,
        Ok(Reply::Write(KvResponse::Answer(answer))) => answer.payload_bytes(),
        _ => SMALL_MESSAGE_BYTES,
    };
    encode_msgpack(outcome, payload_bytes)
}

/// Decodes an outcome from untrusted bytes.
pub fn decode_outcome(bytes: &[u8]) -> Result<Outcome, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

/// Decodes an outcome held in `Bytes`: the answer to a `Set` without rmp-serde and without
/// copying the previous value.
pub fn decode_outcome_bytes(bytes: &Bytes) -> Result<Outcome, String> {
    if bytes.starts_with(WRITE_OUTCOME_PREFIX) {
        let answer = bytes.slice(WRITE_OUTCOME_PREFIX.len()..);
        if let Some(response) = KvResponse::decode_set_answer(&answer) {
            return Ok(Ok(Reply::Write(response)));
        }
    }
    decode_outcome(bytes)
}

/// How MessagePack (as rmp-serde writes it) opens a `Request::Write`: a map of one entry,
/// `"Write"`, whose value is the command's own encoding.
const WRITE_REQUEST_PREFIX: &[u8] = b"\x81\xa5Write";

/// How an `Ok(Reply::Write(..))` outcome opens, before the state machine's answer.
const WRITE_OUTCOME_PREFIX: &[u8] = b"\x81\xa2Ok\x81\xa5Write";

/// The command of a native write request whose command is a plain `Set` (always written,
/// no previous value) in the canonical encoding, sliced out of the request without copying:
/// the leader proposes these bytes as they are, with no decoding and re-encoding (a plain
/// set needs no clock stamp). `None` for any other request.
pub fn encoded_set_write(payload: &Bytes) -> Option<Bytes> {
    let command = payload.strip_prefix(WRITE_REQUEST_PREFIX)?;
    KvCommand::is_canonical_plain_set(command).then(|| payload.slice(WRITE_REQUEST_PREFIX.len()..))
}

/// Encodes the outcome of a write the state machine answered with `answer` (an encoded
/// [`KvResponse`]) without decoding the answer: the same bytes as
/// `encode_outcome(&Ok(Reply::Write(answer)))`.
pub fn encode_write_outcome(answer: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(WRITE_OUTCOME_PREFIX.len() + answer.len());
    buf.extend_from_slice(WRITE_OUTCOME_PREFIX);
    buf.extend_from_slice(answer);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_outcomes_round_trip_and_garbage_is_an_error() {
        let request = Request::Write(KvCommand::Delete {
            keys: vec![Bytes::from_static(b"a")],
        });
        assert_eq!(Request::decode(&request.encode()).unwrap(), request);
        let outcome: Outcome = Err(ServiceError::NotLeader {
            leader: Some(2),
            addr: Some("127.0.0.1:1".into()),
        });
        assert_eq!(decode_outcome(&encode_outcome(&outcome)).unwrap(), outcome);
        assert!(Request::decode(b"\xff\x00garbage").is_err());
        assert!(decode_outcome(b"").is_err());
    }

    /// A read naming more keys than a Redis request may carry is refused by the decoder;
    /// one at the limit decodes.
    #[test]
    fn read_requests_with_too_many_keys_do_not_decode() {
        let key = Bytes::from_static(b"k");
        for (count, decodes) in [(REQUEST_KEYS_MAX, true), (REQUEST_KEYS_MAX + 1, false)] {
            let keys = vec![key.clone(); count];
            for request in [
                Request::Get { keys: keys.clone() },
                Request::Exists { keys: keys.clone() },
            ] {
                let decoded = Request::decode(&request.encode());
                assert_eq!(decoded.is_ok(), decodes, "{count} keys: {decoded:?}");
            }
        }
    }

    fn sets() -> Vec<KvCommand> {
        let conditions = [
            SetCondition::Always,
            SetCondition::IfAbsent,
            SetCondition::IfEqual(Bytes::from_static(b"old")),
        ];
        let mut sets: Vec<KvCommand> = conditions
            .into_iter()
            .map(|condition| KvCommand::Set {
                key: Bytes::from_static(b"key"),
                value: Bytes::from(vec![7; 300]),
                condition,
                return_previous: true,
            })
            .collect();
        sets.push(KvCommand::Set {
            key: Bytes::from_static(b"key"),
            value: Bytes::from(vec![7; 300]),
            condition: SetCondition::Always,
            return_previous: false,
        });
        sets
    }

    /// The shortcuts splice encodings together; each must give exactly the bytes rmp-serde
    /// gives for the whole message.
    #[test]
    fn write_requests_are_prefix_plus_command_and_the_leader_can_slice_the_command_out() {
        let delete = KvCommand::Delete {
            keys: vec![Bytes::from_static(b"a")],
        };
        for command in sets().into_iter().chain([delete.clone()]) {
            let request = Request::Write(command.clone());
            let encoded = request.encode();
            assert_eq!(&encoded[..], &rmp_serde::to_vec(&request).unwrap()[..]);
            assert_eq!(Request::decode(&encoded).unwrap(), request);
            // Only a plain set, which needs no clock stamp, goes into the log as sent.
            let sliced = encoded_set_write(&encoded);
            if command.needs_clock() {
                assert_eq!(sliced, None);
            } else {
                assert_eq!(sliced, Some(command.encode()));
            }
        }
        assert_eq!(encoded_set_write(&Request::Status.encode()), None);
        assert_eq!(
            encoded_set_write(&Bytes::from_static(b"\x81\xa5Write")),
            None
        );
    }

    #[test]
    fn write_outcomes_are_prefix_plus_answer_and_decode_like_rmp_serde() {
        let answers = [
            KvResponse::Set {
                written: true,
                previous: None,
            },
            KvResponse::Set {
                written: false,
                previous: Some(Bytes::from(vec![1; 300])),
            },
            KvResponse::Error("value is not an integer".into()),
            KvResponse::Integer(-3),
        ];
        for answer in answers {
            let outcome: Outcome = Ok(Reply::Write(answer.clone()));
            let encoded = encode_write_outcome(&answer.encode());
            assert_eq!(encoded, encode_outcome(&outcome));
            assert_eq!(decode_outcome_bytes(&encoded).unwrap(), outcome);
        }
        let not_leader: Outcome = Err(ServiceError::NoLeader);
        let encoded = encode_outcome(&not_leader);
        assert_eq!(decode_outcome_bytes(&encoded).unwrap(), not_leader);
        assert!(decode_outcome_bytes(&Bytes::from_static(b"\x81\xa2Ok\x81\xa5Write")).is_err());
    }
}
