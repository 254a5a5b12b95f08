//! The decoder never panics, whatever bytes arrive (random, behind a valid prefix, or valid
//! frames with corrupted bodies), and every frame round-trips across any split of the stream.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use raft_core::{Entry, LogId, Message, MessageBody};
use raft_net_tcp::codec::{decode_frame, encode_frame, LEN_PREFIX_BYTES};
use raft_net_tcp::{ClientRequest, ClientResponse, Frame};

const MAX: u32 = 64 * 1024;

fn message() -> impl Strategy<Value = Message> {
    let entries = prop::collection::vec((1u64..5, prop::collection::vec(any::<u8>(), 0..64)), 0..8);
    (
        1u64..10,
        1u64..10,
        any::<u64>(),
        entries,
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(from, to, term, entries, round, heartbeat)| {
            let body = if heartbeat {
                MessageBody::VoteRequest {
                    last_log_id: LogId::new(term, round),
                    pre_vote: round % 2 == 0,
                    transfer: false,
                }
            } else {
                MessageBody::AppendEntries {
                    prev_log_id: LogId::new(term, 3),
                    entries: entries
                        .into_iter()
                        .enumerate()
                        .map(|(i, (t, data))| Entry::normal(t, 4 + i as u64, data))
                        .collect(),
                    leader_commit: 2,
                    round,
                }
            };
            Message {
                from,
                to,
                term,
                body,
            }
        })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        message().prop_map(Frame::Raft),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..256)).prop_map(|(id, payload)| {
            Frame::ClientRequest(ClientRequest {
                id,
                payload: Bytes::from(payload),
            })
        }),
        (any::<u64>(), any::<Option<u64>>(), ".{0,20}").prop_map(|(id, leader_id, addr)| {
            let response = ClientResponse::NotLeader {
                leader_id,
                leader_addr: Some(addr),
            };
            Frame::ClientResponse { id, response }
        }),
        (any::<u64>(), ".{0,40}").prop_map(|(id, reason)| Frame::Error { id, reason }),
    ]
}

/// Decodes everything in `bytes`; must not panic. Returns the frames decoded before the first
/// error or the end of input.
fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    let mut buffer = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = decode_frame(&mut buffer, MAX) {
        frames.push(frame);
    }
    frames
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_prefix_never_panic(
        body in prop::collection::vec(any::<u8>(), 1..2048),
    ) {
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        decode_all(&bytes);
    }

    #[test]
    fn frames_round_trip_across_any_split(frames in prop::collection::vec(frame(), 1..6), split in any::<prop::sample::Index>()) {
        let mut stream = BytesMut::new();
        for frame in &frames {
            encode_frame(frame, MAX, &mut stream).unwrap();
        }
        let split = split.index(stream.len() + 1);
        let mut buffer = BytesMut::from(&stream[..split]);
        let mut decoded = Vec::new();
        while let Some(frame) = decode_frame(&mut buffer, MAX).unwrap() {
            decoded.push(frame);
        }
        buffer.extend_from_slice(&stream[split..]);
        while let Some(frame) = decode_frame(&mut buffer, MAX).unwrap() {
            decoded.push(frame);
        }
        prop_assert_eq!(decoded, frames);
        prop_assert!(buffer.is_empty());
    }

    #[test]
    fn corrupted_frames_never_panic(frame in frame(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut stream = BytesMut::new();
        encode_frame(&frame, MAX, &mut stream).unwrap();
        let mut bytes = stream.to_vec();
        // Corrupt the body only, so the decoder gets past the length check.
        for (index, byte) in flips {
            let at = LEN_PREFIX_BYTES + index.index(bytes.len() - LEN_PREFIX_BYTES);
            bytes[at] ^= byte;
        }
        decode_all(&bytes);
    }
}
