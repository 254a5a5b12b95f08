//! The frame codec: pure functions from frames to bytes and back, no I/O.
//!
//! ```text
//! offset  size  field
//! 0       4     body length N, u32 big-endian, 1 <= N <= frame_bytes_max
//! 4       N     body: MessagePack array [kind: uint, id: uint, payload] (see crate::frame)
//! ```
//!
//! [`decode_frame`] looks at the length prefix before anything else: a zero or oversize length
//! is an error before a single byte of the body is buffered, so a peer cannot make the receiver
//! allocate more than `frame_bytes_max` plus the prefix. "Not enough bytes yet" is `Ok(None)`.
//! After any error the byte stream is out of sync and the connection must be closed.

use bytes::{Buf, BufMut, BytesMut};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::frame::Frame;

/// Size of the length prefix in bytes.
pub const LEN_PREFIX_BYTES: usize = std::mem::size_of::<u32>();

/// Reads the length prefix at the start of `src`.
///
/// Returns `Ok(None)` while fewer than [`LEN_PREFIX_BYTES`] bytes are available, the body
/// length once they are, and an error for a zero or oversize length.
pub fn frame_len(src: &[u8], frame_bytes_max: u32) -> Result<Option<u32>> {
    let Some(prefix) = src.get(..LEN_PREFIX_BYTES) else {
        return Ok(None);
    };
    let mut prefix_bytes = [0u8; LEN_PREFIX_BYTES];
    prefix_bytes.copy_from_slice(prefix);
    let len = u32::from_be_bytes(prefix_bytes);
    if len == 0 {
        return Err(Error::FrameEmpty);
    }
    if len > frame_bytes_max {
        return Err(Error::FrameTooLarge {
            len_bytes: u64::from(len),
            max_bytes: frame_bytes_max,
        });
    }
    Ok(Some(len))
}

/// Decodes one frame from the front of `src` and removes its bytes.
///
/// `Ok(None)` means the frame is not complete yet: `src` is left untouched and the caller
/// reads more bytes. On error `src` is left untouched too, but the stream cannot be resumed.
pub fn decode_frame(src: &mut BytesMut, frame_bytes_max: u32) -> Result<Option<Frame>> {
    let Some(len) = frame_len(src, frame_bytes_max)? else {
        return Ok(None);
    };
    // `len` is at most FRAME_BYTES_MAX_LIMIT (1 GiB), so it fits in usize on every target
    // that can run tokio.
    let frame_end = LEN_PREFIX_BYTES + len as usize;
    if src.len() < frame_end {
        return Ok(None);
    }
    let frame = decode_body(&src[LEN_PREFIX_BYTES..frame_end])?;
    src.advance(frame_end);
    Ok(Some(frame))
}

/// Decodes a frame body (the bytes after the length prefix). The whole body must be one frame.
pub fn decode_body(body: &[u8]) -> Result<Frame> {
    if body.is_empty() {
        return Err(Error::FrameEmpty);
    }
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(body);
    let frame = Frame::deserialize(&mut deserializer).map_err(|error| Error::Decode {
        reason: error.to_string(),
    })?;
    // The borrowing deserializer (no copy of the body) does not tell how much it consumed, so
    // try to read one more value: only running out of input proves there are no extra bytes.
    match IgnoredAny::deserialize(&mut deserializer) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(error))
            if error.kind() == std::io::ErrorKind::UnexpectedEof => {}
        _ => return Err(Error::TrailingBytes),
    }
    Ok(frame)
}

/// Appends `frame`, with its length prefix, to `dst`.
///
/// Encoding stops as soon as the body would exceed `frame_bytes_max` (so an oversize frame
/// never costs more memory than the limit); on any error `dst` is restored to its previous
/// length, so the frames already in it stay valid.
pub fn encode_frame(frame: &Frame, frame_bytes_max: u32, dst: &mut BytesMut) -> Result<()> {
    // Room for the whole frame at once (never more than a frame may hold).
    dst.reserve(4 + frame.encoded_bytes_hint().min(frame_bytes_max as usize));
    let frame_start = dst.len();
    dst.put_u32(0);
    let body_start = dst.len();
    let mut writer = LimitedWriter {
        dst,
        body_start,
        body_bytes_max: frame_bytes_max as usize,
        exceeded: false,
    };
    let encoded = frame.serialize(&mut rmp_serde::Serializer::new(&mut writer));
    let exceeded = writer.exceeded;
    if let Err(error) = encoded {
        let len_bytes = (dst.len() - body_start) as u64;
        dst.truncate(frame_start);
        if exceeded {
            return Err(Error::FrameTooLarge {
                len_bytes: len_bytes + 1,
                max_bytes: frame_bytes_max,
            });
        }
        return Err(Error::Encode {
            reason: error.to_string(),
        });
    }
    let body_len = dst.len() - body_start;
    // A frame is a three-element array, so its body is never empty and never above the limit
    // (the writer refused to grow past it).
    assert!(body_len > 0 && body_len <= frame_bytes_max as usize);
    let prefix = (body_len as u32).to_be_bytes();
    dst[frame_start..body_start].copy_from_slice(&prefix);
    Ok(())
}

/// Encodes `frame` into a new buffer (prefix included).
pub fn encode_frame_to_vec(frame: &Frame, frame_bytes_max: u32) -> Result<Vec<u8>> {
    let mut dst = BytesMut::new();
    encode_frame(frame, frame_bytes_max, &mut dst)?;
    Ok(dst.to_vec())
}

/// A writer that refuses to let a frame body grow past its limit.
struct LimitedWriter<'a> {
    dst: &'a mut BytesMut,
    body_start: usize,
    body_bytes_max: usize,
    exceeded: bool,
}

impl std::io::Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body_len = self.dst.len() - self.body_start;
        if body_len + buf.len() > self.body_bytes_max {
            self.exceeded = true;
            return Err(std::io::Error::other("frame body exceeds frame_bytes_max"));
        }
        self.dst.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raft_core::{Entry, LogId, Message, MessageBody};

    use super::*;
    use crate::frame::{ClientRequest, ClientResponse};

    const MAX: u32 = 64 * 1024;

    fn append_entries(entries: u64, entry_bytes: usize) -> Frame {
        Frame::Raft(Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::AppendEntries {
                prev_log_id: LogId::new(3, 10),
                entries: (0..entries)
                    .map(|i| Entry::normal(3, 11 + i, vec![i as u8; entry_bytes]))
                    .collect(),
                leader_commit: 9,
                round: 4,
            },
        })
    }

    #[test]
    fn frames_round_trip_and_partial_input_is_none() {
        let frames = vec![
            append_entries(4, 100),
            Frame::ClientRequest(ClientRequest {
                id: 7,
                payload: Bytes::from_static(b"get a"),
            }),
            Frame::ClientResponse {
                id: 7,
                response: ClientResponse::NotLeader {
                    leader_id: Some(2),
                    leader_addr: Some("127.0.0.1:9000".into()),
                },
            },
            Frame::Error {
                id: 3,
                reason: "nope".into(),
            },
            Frame::Unknown { kind: 200, id: 5 },
        ];
        let mut stream = BytesMut::new();
        for frame in &frames {
            encode_frame(frame, MAX, &mut stream).unwrap();
        }
        let bytes = stream.freeze();
        // Feed the stream one byte at a time: every prefix decodes to Ok(None) until a frame
        // is complete, and the frames come out in order.
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in bytes.iter() {
            buffer.put_u8(*byte);
            while let Some(frame) = decode_frame(&mut buffer, MAX).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, frames);
        assert!(buffer.is_empty());
    }

    #[test]
    fn zero_and_oversize_lengths_are_errors_before_the_body_arrives() {
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(
            decode_frame(&mut zero, MAX),
            Err(Error::FrameEmpty)
        ));
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let capacity_before = huge.capacity();
        assert!(matches!(
            decode_frame(&mut huge, MAX),
            Err(Error::FrameTooLarge { len_bytes, max_bytes: MAX }) if len_bytes == u64::from(u32::MAX)
        ));
        assert_eq!(
            huge.capacity(),
            capacity_before,
            "no allocation for an oversize frame"
        );
        let mut just_over = BytesMut::from(&(MAX + 1).to_be_bytes()[..]);
        assert!(matches!(
            decode_frame(&mut just_over, MAX),
            Err(Error::FrameTooLarge { .. })
        ));
        let mut three_bytes = BytesMut::from(&[0u8, 0, 1][..]);
        assert!(matches!(decode_frame(&mut three_bytes, MAX), Ok(None)));
    }

    #[test]
    fn encoding_past_the_limit_fails_and_keeps_earlier_frames() {
        let mut dst = BytesMut::new();
        encode_frame(
            &Frame::Error {
                id: 1,
                reason: "x".into(),
            },
            MAX,
            &mut dst,
        )
        .unwrap();
        let len_before = dst.len();
        let result = encode_frame(&append_entries(64, 1024), MAX, &mut dst);
        assert!(matches!(
            result,
            Err(Error::FrameTooLarge { max_bytes: MAX, .. })
        ));
        assert_eq!(dst.len(), len_before);
        assert_eq!(
            decode_frame(&mut dst, MAX).unwrap(),
            Some(Frame::Error {
                id: 1,
                reason: "x".into()
            })
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_errors() {
        // 0xc1 is the one byte MessagePack never uses.
        let mut garbage = BytesMut::from(&[0u8, 0, 0, 1, 0xc1][..]);
        assert!(matches!(
            decode_frame(&mut garbage, MAX),
            Err(Error::Decode { .. })
        ));
        // A valid error frame [6, 0, "a"] followed by one extra byte inside the same frame.
        let mut trailing = BytesMut::from(&[0u8, 0, 0, 6, 0x93, 6, 0, 0xa1, b'a', 0x00][..]);
        assert!(matches!(
            decode_frame(&mut trailing, MAX),
            Err(Error::TrailingBytes)
        ));
        // A frame array with four elements instead of three.
        let mut long = BytesMut::from(&[0u8, 0, 0, 6, 0x94, 6, 0, 0xa1, b'a', 0x00][..]);
        assert!(decode_frame(&mut long, MAX).is_err());
    }

    #[test]
    fn unknown_kinds_decode_with_their_payload_skipped() {
        // [200, 9, {"future": [1, 2]}]
        let body = [
            0x93, 0xcc, 200, 9, 0x81, 0xa6, b'f', b'u', b't', b'u', b'r', b'e', 0x92, 1, 2,
        ];
        assert_eq!(
            decode_body(&body).unwrap(),
            Frame::Unknown { kind: 200, id: 9 }
        );
    }
}
