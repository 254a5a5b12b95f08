//! Hand-written MessagePack for the hot path: [`KvCommand::Set`] and the answer to it.
//!
//! Every replica decodes every write it applies, and the leader encodes each one; through
//! rmp-serde's generic enum machinery, with a fresh allocation for each byte string, that
//! decode was more than half of applying a write. The bytes here are exactly what
//! rmp-serde writes for the same values (the tests compare them both ways), so entries
//! written by either encoder decode with either decoder. Anything the fast decoder does not
//! recognise, including valid encodings rmp-serde would also accept (a key as a string, a
//! variant by index), returns `None`, and the caller falls back to rmp-serde: the fast path
//! never decides that bytes are malformed.
//!
//! ```text
//! Set command:  81 a3 "Set" 94 <bin key> <bin value> <condition> <c2 | c3 return_previous>
//!               (older entries: 93 and no return_previous, which then reads as false)
//! condition:    a6 "Always" | a8 "IfAbsent" | a9 "IfPresent" | 81 a7 "IfEqual" <bin expected>
//! bin:          c4 len8 | c5 len16 (big-endian) | c6 len32 (big-endian), then the bytes
//! Set answer:   81 a3 "Set" 92 <c2 | c3 written> <c0 | bin previous>
//! ```

use bytes::{BufMut, Bytes};

use super::SetCondition;

/// The map with one entry `"Set"` that opens a `Set` command or answer.
const SET_TAG: &[u8] = &[0x81, 0xa3, b'S', b'e', b't'];
const ARRAY_OF_2: u8 = 0x92;
const ARRAY_OF_3: u8 = 0x93;
const ARRAY_OF_4: u8 = 0x94;
const NIL: u8 = 0xc0;
const FALSE: u8 = 0xc2;
const TRUE: u8 = 0xc3;
const BIN8: u8 = 0xc4;
const BIN16: u8 = 0xc5;
const BIN32: u8 = 0xc6;
const ALWAYS: &[u8] = b"\xa6Always";
const IF_ABSENT: &[u8] = b"\xa8IfAbsent";
const IF_PRESENT: &[u8] = b"\xa9IfPresent";
const IF_EQUAL: &[u8] = b"\x81\xa7IfEqual";
/// Bytes a command adds around its byte strings, at most: tag, array marker, three bin
/// headers, the longest condition and the flag.
const SET_OVERHEAD_BYTES: usize = SET_TAG.len() + 1 + 3 * 5 + IF_EQUAL.len() + 1;

/// The answer to a write that did not ask for the previous value, written or not: the same
/// eight bytes every time, so they are never allocated.
static SET_WRITTEN: [u8; 8] = [0x81, 0xa3, b'S', b'e', b't', ARRAY_OF_2, TRUE, NIL];
static SET_NOT_WRITTEN: [u8; 8] = [0x81, 0xa3, b'S', b'e', b't', ARRAY_OF_2, FALSE, NIL];

/// A `Set` command borrowed from its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SetView<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub condition: ConditionView<'a>,
    pub return_previous: bool,
}

impl SetView<'_> {
    /// Whether this is a plain SET: always written, the old value not asked for.
    pub(crate) fn is_plain(&self) -> bool {
        self.condition == ConditionView::Always && !self.return_previous
    }
}

/// A [`SetCondition`] borrowed from an encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConditionView<'a> {
    Always,
    IfAbsent,
    IfPresent,
    IfEqual(&'a [u8]),
}

impl<'a> ConditionView<'a> {
    pub(crate) fn of(condition: &'a SetCondition) -> ConditionView<'a> {
        match condition {
            SetCondition::Always => ConditionView::Always,
            SetCondition::IfAbsent => ConditionView::IfAbsent,
            SetCondition::IfPresent => ConditionView::IfPresent,
            SetCondition::IfEqual(expected) => ConditionView::IfEqual(expected),
        }
    }
}

/// Decodes a `Set` command in the canonical encoding above; `None` for anything else.
pub(crate) fn decode_set(bytes: &[u8]) -> Option<SetView<'_>> {
    let mut reader = Reader(bytes);
    reader.expect(SET_TAG)?;
    let fields = reader.byte()?;
    if fields != ARRAY_OF_4 && fields != ARRAY_OF_3 {
        return None;
    }
    let key = reader.bin()?;
    let value = reader.bin()?;
    let condition = reader.condition()?;
    let return_previous = fields == ARRAY_OF_4 && reader.bool()?;
    reader.0.is_empty().then_some(SetView {
        key,
        value,
        condition,
        return_previous,
    })
}

/// Encodes a `Set` command, exactly as rmp-serde does.
#[cfg(test)]
pub(crate) fn encode_set(set: &SetView<'_>) -> Bytes {
    let mut buf = Vec::with_capacity(encoded_set_bytes(set));
    put_set(&mut buf, set);
    Bytes::from(buf)
}

/// Bytes of a `Set` command's encoding, at most.
pub(crate) fn encoded_set_bytes(set: &SetView<'_>) -> usize {
    let expected = match set.condition {
        ConditionView::IfEqual(expected) => expected.len(),
        _ => 0,
    };
    set.key.len() + set.value.len() + expected + SET_OVERHEAD_BYTES
}

/// Appends the encoding of a `Set` command to `buf`, exactly as rmp-serde writes it.
pub(crate) fn put_set(buf: &mut Vec<u8>, set: &SetView<'_>) {
    buf.put_slice(SET_TAG);
    buf.put_u8(ARRAY_OF_4);
    put_bin(buf, set.key);
    put_bin(buf, set.value);
    match set.condition {
        ConditionView::Always => buf.put_slice(ALWAYS),
        ConditionView::IfAbsent => buf.put_slice(IF_ABSENT),
        ConditionView::IfPresent => buf.put_slice(IF_PRESENT),
        ConditionView::IfEqual(expected) => {
            buf.put_slice(IF_EQUAL);
            put_bin(buf, expected);
        }
    }
    buf.put_u8(if set.return_previous { TRUE } else { FALSE });
}

/// Encodes the answer to a `Set`, exactly as rmp-serde does.
pub(crate) fn encode_set_answer(written: bool, previous: Option<&Bytes>) -> Bytes {
    match previous {
        None if written => Bytes::from_static(&SET_WRITTEN),
        None => Bytes::from_static(&SET_NOT_WRITTEN),
        Some(previous) => {
            let mut buf = Vec::with_capacity(SET_WRITTEN.len() + 5 + previous.len());
            buf.put_slice(SET_TAG);
            buf.put_u8(ARRAY_OF_2);
            buf.put_u8(if written { TRUE } else { FALSE });
            put_bin(&mut buf, previous);
            Bytes::from(buf)
        }
    }
}

/// Decodes the answer to a `Set` in the canonical encoding; `None` for anything else.
/// `previous` is a slice of `bytes`, not a copy.
pub(crate) fn decode_set_answer(bytes: &Bytes) -> Option<(bool, Option<Bytes>)> {
    let mut reader = Reader(bytes);
    reader.expect(SET_TAG)?;
    if reader.byte()? != ARRAY_OF_2 {
        return None;
    }
    let written = reader.bool()?;
    let previous = if reader.0.first() == Some(&NIL) {
        reader.byte()?;
        None
    } else {
        let previous = reader.bin()?;
        Some(bytes.slice_ref(previous))
    };
    reader.0.is_empty().then_some((written, previous))
}

/// Writes a MessagePack bin header (the smallest that fits, as rmp does) and the bytes.
fn put_bin(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    if let Ok(len) = u8::try_from(len) {
        buf.put_u8(BIN8);
        buf.put_u8(len);
    } else if let Ok(len) = u16::try_from(len) {
        buf.put_u8(BIN16);
        buf.put_u16(len);
    } else {
        // Keys and values are far below 4 GiB: entries are bounded by `entry_bytes_max`.
        let len = u32::try_from(len).expect("a byte string under 4 GiB");
        buf.put_u8(BIN32);
        buf.put_u32(len);
    }
    buf.put_slice(bytes);
}

/// A cursor over encoded bytes; every read returns `None` when the bytes do not match.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn expect(&mut self, prefix: &[u8]) -> Option<()> {
        (self.take(prefix.len())? == prefix).then_some(())
    }

    fn bool(&mut self) -> Option<bool> {
        match self.byte()? {
            TRUE => Some(true),
            FALSE => Some(false),
            _ => None,
        }
    }

    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            BIN8 => usize::from(self.byte()?),
            BIN16 => usize::from(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
            BIN32 => usize::try_from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)).ok()?,
            _ => return None,
        };
        self.take(len)
    }

    fn condition(&mut self) -> Option<ConditionView<'a>> {
        for (encoding, condition) in [
            (ALWAYS, ConditionView::Always),
            (IF_ABSENT, ConditionView::IfAbsent),
            (IF_PRESENT, ConditionView::IfPresent),
        ] {
            if self.0.starts_with(encoding) {
                self.take(encoding.len())?;
                return Some(condition);
            }
        }
        self.expect(IF_EQUAL)?;
        Some(ConditionView::IfEqual(self.bin()?))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::kv::{KvCommand, KvResponse};

    /// Lengths around every bin header boundary.
    const LENGTHS: [usize; 9] = [0, 1, 31, 255, 256, 65_535, 65_536, 70_000, 300];

    fn bytes_of(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn conditions() -> Vec<SetCondition> {
        vec![
            SetCondition::Always,
            SetCondition::IfAbsent,
            SetCondition::IfPresent,
            SetCondition::IfEqual(Bytes::new()),
            SetCondition::IfEqual(bytes_of(256, 7)),
        ]
    }

    fn commands() -> Vec<KvCommand> {
        let mut commands = Vec::new();
        for (i, &key_len) in LENGTHS.iter().enumerate() {
            let value_len = LENGTHS[(i * 5 + 3) % LENGTHS.len()];
            for condition in conditions() {
                for return_previous in [false, true] {
                    commands.push(KvCommand::Set {
                        key: bytes_of(key_len, 1),
                        value: bytes_of(value_len, 2),
                        condition: condition.clone(),
                        return_previous,
                    });
                }
            }
        }
        commands
    }

    fn view_of(command: &KvCommand) -> SetView<'_> {
        command.as_set().expect("a set command")
    }

    fn serde_encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
        rmp_serde::to_vec(value).unwrap()
    }

    #[test]
    fn set_commands_encode_byte_for_byte_as_rmp_serde_does_and_decode_back() {
        for command in commands() {
            let expected = serde_encode(&command);
            let fast = encode_set(&view_of(&command));
            assert_eq!(&fast[..], &expected[..], "{command:?}");
            assert_eq!(decode_set(&expected), Some(view_of(&command)));
        }
    }

    #[test]
    fn set_answers_encode_byte_for_byte_as_rmp_serde_does_and_decode_back() {
        for written in [false, true] {
            for previous in [None, Some(Bytes::new()), Some(bytes_of(300, 3))] {
                let answer = KvResponse::Set {
                    written,
                    previous: previous.clone(),
                };
                let expected = Bytes::from(serde_encode(&answer));
                let fast = encode_set_answer(written, previous.as_ref());
                assert_eq!(&fast[..], &expected[..], "{answer:?}");
                assert_eq!(decode_set_answer(&expected), Some((written, previous)));
            }
        }
    }

    /// Entries written before `return_previous` existed hold three fields.
    #[test]
    fn a_set_of_three_fields_decodes_with_return_previous_off_as_rmp_serde_does() {
        let old = (bytes_of(3, 1), bytes_of(4, 2), SetCondition::IfAbsent);
        let mut bytes = SET_TAG.to_vec();
        bytes.extend(serde_encode(&old));
        assert_eq!(bytes[SET_TAG.len()], ARRAY_OF_3);
        let slow = KvCommand::decode(&bytes).unwrap();
        assert_eq!(decode_set(&bytes), Some(view_of(&slow)));
        assert!(!view_of(&slow).return_previous);
    }

    #[test]
    fn other_commands_and_answers_are_left_to_rmp_serde() {
        let delete = KvCommand::Delete {
            keys: vec![bytes_of(2, 1)],
        };
        assert_eq!(decode_set(&delete.encode()), None);
        let incr = KvCommand::Incr {
            key: bytes_of(2, 1),
            delta: 5,
        };
        assert_eq!(decode_set(&incr.encode()), None);
        for answer in [KvResponse::Deleted(1), KvResponse::Error("no".into())] {
            assert_eq!(decode_set_answer(&answer.encode()), None);
        }
    }

    /// Mutated encodings (truncated, extended, bytes flipped): the fast decoder never
    /// panics, and whatever it accepts, rmp-serde decodes to the same command.
    #[test]
    fn whatever_the_fast_decoder_accepts_rmp_serde_decodes_the_same() {
        let mut rng = SmallRng::seed_from_u64(0x5e7_c0dec);
        let samples: Vec<Vec<u8>> = commands()
            .iter()
            .filter(|c| view_of(c).key.len() < 1000 && view_of(c).value.len() < 1000)
            .map(serde_encode)
            .collect();
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut bytes = samples[rng.gen_range(0..samples.len())].clone();
            match rng.gen_range(0..3) {
                0 => bytes.truncate(rng.gen_range(0..bytes.len())),
                1 => bytes.push(rng.gen()),
                _ => {
                    for _ in 0..rng.gen_range(1..3) {
                        let at = rng.gen_range(0..bytes.len().min(24));
                        bytes[at] = rng.gen();
                    }
                }
            }
            if let Some(fast) = decode_set(&bytes) {
                accepted += 1;
                let slow = KvCommand::decode(&bytes).expect("rmp-serde accepts it too");
                assert_eq!(fast, view_of(&slow), "{bytes:02x?}");
            }
            let bytes = Bytes::from(bytes);
            if let Some((written, previous)) = decode_set_answer(&bytes) {
                let slow = KvResponse::decode(&bytes).expect("rmp-serde accepts it too");
                assert_eq!(KvResponse::Set { written, previous }, slow);
            }
        }
        // Flipped value bytes and boolean flips keep an encoding valid: some must pass.
        assert!(accepted > 1000, "only {accepted} mutated encodings decoded");
    }
}
