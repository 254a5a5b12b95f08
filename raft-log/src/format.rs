//! The bytes on disk. `FORMAT.md` draws the same layout; offsets here are derived from sizes.
//!
//! All integers are little-endian. Every record starts at an offset that is a multiple of
//! [`RECORD_ALIGN_BYTES`].
//!
//! ```text
//! Segment file `<first_index:020>.seg`, `segment_bytes` long, either zero-filled when created
//! or a recycled purged segment (then the bytes after the records are stale, see below):
//!
//!   offset  size  field
//!   0       8     magic           b"RAFTLOG\0"
//!   8       4     version         u32, = 2
//!   12      4     reserved        u32, = 0
//!   16      8     first_index     u64, index of the first record (also the file name)
//!   24      4     reserved        u32, = 0
//!   28      4     header_crc      u32, CRC32 of bytes 0..28
//!   32      ...   records, back to back, each padded with zeros to a multiple of 8 bytes;
//!                 the bytes after the last record are zero or, in a recycled file, stale
//!                 records of its earlier lives (in a segment before the last: zero)
//!
//! Record (header 32 bytes, then the payload, then 0..7 zero bytes of padding):
//!
//!   offset  size  field
//!   0       4     crc             u32, CRC32 of bytes 4..32 and the payload_len payload
//!                                 bytes, started from the seed `(first_index as u32) ^
//!                                 (first_index >> 32) as u32` of the segment instead of 0
//!                                 (crc32fast `Hasher::new_with_initial(seed)`)
//!   4       4     payload_len     u32
//!   8       8     index           u64
//!   16      8     term            u64
//!   24      4     durable_bytes   u32, offset in this segment below which every byte was
//!                                 synced when this record was written (tells a torn tail,
//!                                 which was never synced, from corruption of synced bytes)
//!   28      1     kind            u8, raft_core::EntryKind (0 blank, 1 normal, 2 membership)
//!   29      3     reserved        = 0
//!   32      n     payload
//!
//! Hard state file `hard_state` (48 bytes), replaced by write + sync + rename + directory sync:
//!
//!   0  8  magic b"RAFTHST\0" | 8  4 version = 2 | 12 4 flags (bit 0: a vote is recorded)
//!   16 8  term               | 24 8 voted_for  | 32 8 commit
//!   40 4  crc of bytes 0..40 | 44 4 reserved = 0
//!
//! Purge point file `purged` (40 bytes), replaced the same way:
//!
//!   0  8  magic b"RAFTPRG\0" | 8  4 version = 2 | 12 4 reserved = 0
//!   16 8  term               | 24 8 index
//!   32 4  crc of bytes 0..32 | 36 4 reserved = 0
//!
//! Truncation file `truncating` (32 bytes), written the same way before a truncation changes
//! anything and deleted once it is complete; recovery finishes the truncation it names:
//!
//!   0  8  magic b"RAFTCUT\0" | 8  4 version = 2 | 12 4 reserved = 0
//!   16 8  from (the first index removed)
//!   24 4  crc of bytes 0..24 | 28 4 reserved = 0
//! ```
//!
//! # Why the record CRC starts with the segment's first index
//! A purged segment file is reused for a new segment without being zeroed, so records of its
//! earlier lives stay behind the new records. A stale record must never pass for a record of
//! the new segment, and it cannot: (1) its CRC was started from a seed made of the first index
//! of the segment it was written in (a CRC started from another seed never matches), and every
//! life of a file has a different first index (a file is
//! recycled only once every record in it is at or below the durable purge point `P`, and the
//! new segment starts above the last index, which is at least `P`; so first indexes of one
//! file strictly increase); (2) its index is at most `P`, below the first index of any later
//! segment, while recovery accepts only the next index in sequence. Either check alone
//! rejects it.

use std::mem::MaybeUninit;

use raft_core::{Entry, EntryKind, HardState, LogId};

use crate::crc::{crc32, crc32_after_header, crc32_after_headers_copied, write_bytes};

/// Version written in every header; a file with another version is refused.
pub const FORMAT_VERSION: u32 = 2;

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RAFTLOG\0";
/// Magic at the start of the hard state file.
pub const HARD_STATE_MAGIC: [u8; 8] = *b"RAFTHST\0";
/// Magic at the start of the purge point file.
pub const PURGED_MAGIC: [u8; 8] = *b"RAFTPRG\0";
/// Magic at the start of the truncation file.
pub const TRUNCATING_MAGIC: [u8; 8] = *b"RAFTCUT\0";

// Segment header fields, each offset derived from the one before.
const SEG_MAGIC_AT: usize = 0;
const SEG_VERSION_AT: usize = SEG_MAGIC_AT + 8;
const SEG_RESERVED_A_AT: usize = SEG_VERSION_AT + 4;
const SEG_FIRST_INDEX_AT: usize = SEG_RESERVED_A_AT + 4;
const SEG_RESERVED_B_AT: usize = SEG_FIRST_INDEX_AT + 8;
const SEG_CRC_AT: usize = SEG_RESERVED_B_AT + 4;
/// Size of the segment header; the first record starts here.
pub const SEGMENT_HEADER_BYTES: usize = SEG_CRC_AT + 4;

// Record header fields.
const REC_CRC_AT: usize = 0;
const REC_LEN_AT: usize = REC_CRC_AT + 4;
const REC_INDEX_AT: usize = REC_LEN_AT + 4;
const REC_TERM_AT: usize = REC_INDEX_AT + 8;
const REC_DURABLE_AT: usize = REC_TERM_AT + 8;
const REC_KIND_AT: usize = REC_DURABLE_AT + 4;
const REC_RESERVED_AT: usize = REC_KIND_AT + 1;
/// Size of a record header; the payload follows it.
pub const RECORD_HEADER_BYTES: usize = REC_RESERVED_AT + 3;
/// Every record starts at a multiple of this many bytes.
pub const RECORD_ALIGN_BYTES: usize = 8;

// Hard state file fields.
const HS_VERSION_AT: usize = 8;
const HS_FLAGS_AT: usize = HS_VERSION_AT + 4;
const HS_TERM_AT: usize = HS_FLAGS_AT + 4;
const HS_VOTE_AT: usize = HS_TERM_AT + 8;
const HS_COMMIT_AT: usize = HS_VOTE_AT + 8;
const HS_CRC_AT: usize = HS_COMMIT_AT + 8;
/// Exact size of the hard state file.
pub const HARD_STATE_FILE_BYTES: usize = HS_CRC_AT + 8;
/// Flag bit: `voted_for` is `Some`.
const HS_FLAG_VOTED: u32 = 1;

// Purge point file fields.
const PG_VERSION_AT: usize = 8;
const PG_TERM_AT: usize = PG_VERSION_AT + 8;
const PG_INDEX_AT: usize = PG_TERM_AT + 8;
const PG_CRC_AT: usize = PG_INDEX_AT + 8;
/// Exact size of the purge point file.
pub const PURGED_FILE_BYTES: usize = PG_CRC_AT + 8;

// Truncation file fields.
const TR_VERSION_AT: usize = 8;
const TR_FROM_AT: usize = TR_VERSION_AT + 8;
const TR_CRC_AT: usize = TR_FROM_AT + 8;
/// Exact size of the truncation file.
pub const TRUNCATING_FILE_BYTES: usize = TR_CRC_AT + 8;

const _: () = assert!(SEGMENT_HEADER_BYTES == 32 && RECORD_HEADER_BYTES == 32);
const _: () = assert!(HARD_STATE_FILE_BYTES == 48 && PURGED_FILE_BYTES == 40);
const _: () = assert!(TRUNCATING_FILE_BYTES == 32);
const _: () = assert!(SEGMENT_HEADER_BYTES % RECORD_ALIGN_BYTES == 0);

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Rounds `len` up to the record alignment.
pub const fn align_up(len: usize) -> usize {
    len.div_ceil(RECORD_ALIGN_BYTES) * RECORD_ALIGN_BYTES
}

/// Bytes a record with an `payload_bytes`-byte payload takes on disk, padding included.
pub const fn record_bytes(payload_bytes: usize) -> usize {
    align_up(RECORD_HEADER_BYTES + payload_bytes)
}

/// Encodes a segment header for a segment whose first record has index `first_index`.
pub fn encode_segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[SEG_MAGIC_AT..SEG_VERSION_AT].copy_from_slice(&SEGMENT_MAGIC);
    header[SEG_VERSION_AT..SEG_RESERVED_A_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[SEG_FIRST_INDEX_AT..SEG_RESERVED_B_AT].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32fast::hash(&header[..SEG_CRC_AT]);
    header[SEG_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Decodes a segment header; returns its first index, or why the header is invalid.
pub fn decode_segment_header(bytes: &[u8]) -> Result<u64, &'static str> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err("segment shorter than its header");
    }
    let header = &bytes[..SEGMENT_HEADER_BYTES];
    if crc32fast::hash(&header[..SEG_CRC_AT]) != u32_at(header, SEG_CRC_AT) {
        return Err("segment header checksum mismatch");
    }
    if header[SEG_MAGIC_AT..SEG_VERSION_AT] != SEGMENT_MAGIC {
        return Err("not a raft-log segment (bad magic)");
    }
    if u32_at(header, SEG_VERSION_AT) != FORMAT_VERSION {
        return Err("unsupported segment format version");
    }
    if u32_at(header, SEG_RESERVED_A_AT) != 0 || u32_at(header, SEG_RESERVED_B_AT) != 0 {
        return Err("reserved segment header bytes are not zero");
    }
    Ok(u64_at(header, SEG_FIRST_INDEX_AT))
}

/// The fields of one record, borrowed from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Log index of the entry.
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
    /// Entry kind.
    pub kind: EntryKind,
    /// Segment offset below which every byte was durable when the record was written.
    pub durable_bytes: u32,
    /// The payload.
    pub payload: &'a [u8],
    /// Bytes the record takes on disk, padding included.
    pub total_bytes: usize,
}

/// What lies at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete record whose checksum matches.
    Record(RecordRef<'a>),
    /// A header of zero bytes: nothing was ever written here (the end of the records).
    Zero,
    /// A record that runs past the segment or whose checksum fails (torn or corrupt).
    Bad(&'static str),
    /// A record whose checksum matches but whose fields are impossible: always corruption
    /// (or a newer format), never a torn write.
    Invalid(&'static str),
}

/// Writes the record for `entry` into `out` (header, payload, padding). `durable_bytes` is the
/// segment offset below which every byte is known to be synced; `segment_first_index` (the
/// first index of the segment the record goes into) seeds the CRC, which is computed over the
/// header fields and the payload where it is, in the same pass that copies the payload (see
/// `crc::crc32_after_headers_copied`).
pub fn encode_record(
    out: &mut Vec<u8>,
    segment_first_index: u64,
    index: u64,
    term: u64,
    kind: EntryKind,
    payload: &[u8],
    durable_bytes: u32,
) {
    let fields = |_| header_fields(index, term, kind, payload, durable_bytes);
    encode_side_by_side(out, crc_seed(segment_first_index), fields, [payload]);
}

/// Writes the records of `entries` into `out`, back to back, each as [`encode_record`] would.
/// Faster than one by one: records are hashed two at a time, in the pass that copies them (see
/// `crc::crc32_after_headers_copied`).
pub fn encode_records(
    out: &mut Vec<u8>,
    segment_first_index: u64,
    entries: &[Entry],
    durable_bytes: u32,
) {
    let seed = crc_seed(segment_first_index);
    let fields = |entry: &Entry| {
        header_fields(
            entry.index,
            entry.term,
            entry.kind,
            &entry.data,
            durable_bytes,
        )
    };
    let mut pairs = entries.chunks_exact(2);
    for pair in &mut pairs {
        let payloads = [&pair[0].data[..], &pair[1].data[..]];
        encode_side_by_side(out, seed, |i| fields(&pair[i]), payloads);
    }
    for entry in pairs.remainder() {
        encode_side_by_side(out, seed, |_| fields(entry), [&entry.data]);
    }
}

/// Writes `N` records into `out`: header words (CRC field zero) `fields(i)` and `payloads[i]`.
/// `fields` is called more than once per record (for the CRC, then for the header) and must
/// give the same words each time.
#[inline]
fn encode_side_by_side<const N: usize>(
    out: &mut Vec<u8>,
    seed: u32,
    fields: impl Fn(usize) -> [u64; 4],
    payloads: [&[u8]; N],
) {
    let start = out.len();
    let sizes = payloads.map(|payload| record_bytes(payload.len()));
    let total = sizes.iter().sum();
    out.reserve(total);
    let mut rest = &mut out.spare_capacity_mut()[..total];
    // Each record's header, payload and padding.
    let mut records: [_; N] = std::array::from_fn(|i| {
        let (record, after) = std::mem::take(&mut rest).split_at_mut(sizes[i]);
        rest = after;
        let (header, body) = record.split_at_mut(RECORD_HEADER_BYTES);
        let (copy, padding) = body.split_at_mut(payloads[i].len());
        (header, copy, padding)
    });
    let copies = std::array::from_fn(|i| std::mem::take(&mut records[i].1));
    let crcs = crc32_after_headers_copied(seed, &fields, payloads, copies);
    for (i, (header, _, padding)) in records.into_iter().enumerate() {
        let mut words = fields(i);
        words[0] |= u64::from(crcs[i]);
        // Word by word from registers: copying a header array assembled in memory would load
        // it back in wider loads than the stores that built it, which wait for those stores.
        for (to, word) in header.chunks_exact_mut(8).zip(words) {
            write_bytes(to, &word.to_le_bytes());
        }
        padding.fill(MaybeUninit::new(0));
    }
    // SAFETY: all of `out[start..start + total]` was written above: each record's header, its
    // payload (every byte of its copy) and its padding.
    unsafe { out.set_len(start + total) };
}

/// The header of the record for `payload` as four little-endian words, CRC field zero.
fn header_fields(
    index: u64,
    term: u64,
    kind: EntryKind,
    payload: &[u8],
    durable_bytes: u32,
) -> [u64; 4] {
    const _: () = assert!(
        REC_CRC_AT == 0
            && REC_LEN_AT == 4
            && REC_INDEX_AT == 8
            && REC_TERM_AT == 16
            && REC_DURABLE_AT == 24
            && REC_KIND_AT == 28
            && RECORD_HEADER_BYTES == 32,
        "the words below follow the record header layout"
    );
    let payload_len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    [
        u64::from(payload_len) << 32,
        index,
        term,
        u64::from(durable_bytes) | u64::from(kind as u8) << 32,
    ]
}

/// The header of the record for `payload` (CRC included), for writers that write the payload
/// from where it is: on disk the record is this header, the payload, then zeros up to
/// [`record_bytes`]`(payload.len())`. Arguments as for [`encode_record`].
pub fn encode_record_header(
    segment_first_index: u64,
    index: u64,
    term: u64,
    kind: EntryKind,
    payload: &[u8],
    durable_bytes: u32,
) -> [u8; RECORD_HEADER_BYTES] {
    let mut words = header_fields(index, term, kind, payload, durable_bytes);
    words[0] |= u64::from(crc32_after_header(
        crc_seed(segment_first_index),
        words,
        payload,
    ));
    let mut header = [0u8; RECORD_HEADER_BYTES];
    for (bytes, word) in header.chunks_exact_mut(8).zip(words) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    header
}

/// Decodes the record at `offset` of `segment`, whose first index is `segment_first_index`
/// (it seeds the CRC: a stale record of an earlier life of a recycled file fails it). Never
/// panics and never allocates: the length read from disk is checked against the bytes that
/// exist before it is used.
pub fn decode_record(segment: &[u8], segment_first_index: u64, offset: usize) -> Decoded<'_> {
    let Some(header) = segment.get(offset..offset.saturating_add(RECORD_HEADER_BYTES)) else {
        return if segment
            .get(offset..)
            .is_some_and(|rest| rest.iter().all(|&b| b == 0))
        {
            Decoded::Zero
        } else {
            Decoded::Bad("record header runs past the end of the segment")
        };
    };
    if is_zero_header(header) {
        return Decoded::Zero;
    }
    let payload_len = u32_at(header, REC_LEN_AT) as usize;
    let body_end = offset + RECORD_HEADER_BYTES;
    let available = segment.len() - body_end;
    if payload_len > available {
        return Decoded::Bad("record length runs past the end of the segment");
    }
    // The hashed bytes (header after the CRC field, then the payload) are contiguous here: one
    // pass, not one per part (a CRC of the concatenation equals the CRC updated part by part).
    let hashed = &segment[offset + REC_LEN_AT..body_end + payload_len];
    let payload = &hashed[RECORD_HEADER_BYTES - REC_LEN_AT..];
    if crc32(crc_seed(segment_first_index), hashed) != u32_at(header, REC_CRC_AT) {
        return Decoded::Bad("record checksum mismatch");
    }
    let Some(kind) = EntryKind::from_u8(header[REC_KIND_AT]) else {
        return Decoded::Invalid("unknown entry kind");
    };
    if header[REC_RESERVED_AT..].iter().any(|&b| b != 0) {
        return Decoded::Invalid("reserved record bytes are not zero");
    }
    let total_bytes = record_bytes(payload_len);
    let Some(padding) = segment.get(body_end + payload_len..offset + total_bytes) else {
        return Decoded::Bad("record padding runs past the end of the segment");
    };
    if padding.iter().any(|&b| b != 0) {
        // Padding is outside the CRC; it is written with the record, so it must be zero.
        return Decoded::Bad("record padding is not zero");
    }
    Decoded::Record(RecordRef {
        index: u64_at(header, REC_INDEX_AT),
        term: u64_at(header, REC_TERM_AT),
        kind,
        durable_bytes: u32_at(header, REC_DURABLE_AT),
        payload,
        total_bytes,
    })
}

/// Reads again, for a read of the log, the record at `offset` of `segment` that recovery or an
/// append indexed as entry `index` (at least 1), checking everything the read returns: the
/// length against the segment, the CRC (seeded with `segment_first_index`) over the header
/// fields and the payload, the index, the kind and the reserved bytes, and that the padding is
/// still zero. Never panics and never allocates.
///
/// It accepts exactly the records [`decode_record`] returns as `Decoded::Record` with this
/// index, with less work per record: no separate zero-header test (a zero header has index 0,
/// which no entry has) and the kind, reserved and padding bytes each read as one word. The work
/// that waits for the record's bytes matters more than its instruction count suggests: a random
/// read misses the caches, and the CPU can only start the next read's loads while this one's
/// waiting operations still fit in its schedulers (measured: `BENCHMARKS.md`, follow-up).
#[inline]
pub fn reread_record(
    segment: &[u8],
    segment_first_index: u64,
    offset: usize,
    index: u64,
) -> Result<RecordRef<'_>, &'static str> {
    let body = offset.saturating_add(RECORD_HEADER_BYTES);
    let Some(header) = segment.get(offset..body) else {
        return Err("record header runs past the end of the segment");
    };
    let payload_len = u32_at(header, REC_LEN_AT) as usize;
    let total_bytes = record_bytes(payload_len);
    let Some(record) = segment.get(offset..offset.saturating_add(total_bytes)) else {
        return Err("record length runs past the end of the segment");
    };
    let hashed = &record[REC_LEN_AT..RECORD_HEADER_BYTES + payload_len];
    if crc32(crc_seed(segment_first_index), hashed) != u32_at(header, REC_CRC_AT) {
        return Err("record checksum mismatch");
    }
    if u64_at(header, REC_INDEX_AT) != index {
        return Err("record has another index");
    }
    // Kind (1 byte) and reserved (3 bytes, zero) in one word.
    let kind_word = u32_at(header, REC_KIND_AT);
    let kind = EntryKind::from_u8(kind_word as u8).filter(|_| kind_word >> 8 == 0);
    let Some(kind) = kind else {
        return Err("unknown entry kind or reserved record bytes not zero");
    };
    if padding_word(record, payload_len) != 0 {
        return Err("record padding is not zero");
    }
    Ok(RecordRef {
        index,
        term: u64_at(header, REC_TERM_AT),
        kind,
        durable_bytes: u32_at(header, REC_DURABLE_AT),
        payload: &hashed[RECORD_HEADER_BYTES - REC_LEN_AT..],
        total_bytes,
    })
}

/// The padding bytes of `record` (header, `payload_len` payload bytes, padding; a multiple of 8
/// bytes long) as the high bytes of its last 8-byte word, the rest masked to zero: zero when
/// the padding is.
#[inline]
fn padding_word(record: &[u8], payload_len: usize) -> u64 {
    let last = u64_at(record, record.len() - RECORD_ALIGN_BYTES);
    let padding_bytes = record.len() - RECORD_HEADER_BYTES - payload_len;
    // Shifting by 64 bits is not defined: no padding masks everything.
    let kept = u64::MAX
        .checked_shl(8 * (RECORD_ALIGN_BYTES - padding_bytes) as u32)
        .unwrap_or(0);
    last & kept
}

/// Whether a record header is all zeros (the end of the records), by 8-byte words.
fn is_zero_header(header: &[u8]) -> bool {
    header.chunks_exact(8).fold(0u64, |acc, word| {
        acc | u64::from_le_bytes(word.try_into().expect("8 bytes"))
    }) == 0
}

/// The value a record's CRC starts from in the segment starting at `first_index`: its two
/// 32-bit halves XORed. Starting a CRC32 from a different value changes the result by a
/// bijective function of the difference (for a given length), so a record can never pass under
/// another seed; first indexes below 2^32 all have different seeds.
pub const fn crc_seed(first_index: u64) -> u32 {
    (first_index as u32) ^ ((first_index >> 32) as u32)
}

/// The index field of a record header at `offset`, without any check (`None` past the end):
/// lets a scan of stale bytes skip offsets that cannot hold a record of this segment before
/// computing a CRC.
pub fn record_index_field(segment: &[u8], offset: usize) -> Option<u64> {
    segment
        .get(offset + REC_INDEX_AT..offset + REC_TERM_AT)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Encodes the hard state file.
pub fn encode_hard_state(hard_state: &HardState) -> [u8; HARD_STATE_FILE_BYTES] {
    let mut bytes = [0u8; HARD_STATE_FILE_BYTES];
    bytes[..HS_VERSION_AT].copy_from_slice(&HARD_STATE_MAGIC);
    bytes[HS_VERSION_AT..HS_FLAGS_AT].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = if hard_state.voted_for.is_some() {
        HS_FLAG_VOTED
    } else {
        0
    };
    bytes[HS_FLAGS_AT..HS_TERM_AT].copy_from_slice(&flags.to_le_bytes());
    bytes[HS_TERM_AT..HS_VOTE_AT].copy_from_slice(&hard_state.term.to_le_bytes());
    let vote = hard_state.voted_for.unwrap_or(0);
    bytes[HS_VOTE_AT..HS_COMMIT_AT].copy_from_slice(&vote.to_le_bytes());
    bytes[HS_COMMIT_AT..HS_CRC_AT].copy_from_slice(&hard_state.commit.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..HS_CRC_AT]);
    bytes[HS_CRC_AT..HS_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes the hard state file, or says why it is invalid.
pub fn decode_hard_state(bytes: &[u8]) -> Result<HardState, &'static str> {
    if bytes.len() != HARD_STATE_FILE_BYTES {
        return Err("hard state file has the wrong size");
    }
    if crc32fast::hash(&bytes[..HS_CRC_AT]) != u32_at(bytes, HS_CRC_AT) {
        return Err("hard state checksum mismatch");
    }
    if bytes[..HS_VERSION_AT] != HARD_STATE_MAGIC || u32_at(bytes, HS_VERSION_AT) != FORMAT_VERSION
    {
        return Err("hard state file has a bad magic or version");
    }
    let flags = u32_at(bytes, HS_FLAGS_AT);
    if flags & !HS_FLAG_VOTED != 0 || u32_at(bytes, HS_CRC_AT + 4) != 0 {
        return Err("hard state file has unknown flags or reserved bytes set");
    }
    let vote = u64_at(bytes, HS_VOTE_AT);
    Ok(HardState {
        term: u64_at(bytes, HS_TERM_AT),
        voted_for: (flags & HS_FLAG_VOTED != 0).then_some(vote),
        commit: u64_at(bytes, HS_COMMIT_AT),
    })
}

/// Encodes the purge point file.
pub fn encode_purged(purged: LogId) -> [u8; PURGED_FILE_BYTES] {
    let mut bytes = [0u8; PURGED_FILE_BYTES];
    bytes[..PG_VERSION_AT].copy_from_slice(&PURGED_MAGIC);
    bytes[PG_VERSION_AT..PG_VERSION_AT + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[PG_TERM_AT..PG_INDEX_AT].copy_from_slice(&purged.term.to_le_bytes());
    bytes[PG_INDEX_AT..PG_CRC_AT].copy_from_slice(&purged.index.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..PG_CRC_AT]);
    bytes[PG_CRC_AT..PG_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes the purge point file, or says why it is invalid.
pub fn decode_purged(bytes: &[u8]) -> Result<LogId, &'static str> {
    if bytes.len() != PURGED_FILE_BYTES {
        return Err("purge point file has the wrong size");
    }
    if crc32fast::hash(&bytes[..PG_CRC_AT]) != u32_at(bytes, PG_CRC_AT) {
        return Err("purge point checksum mismatch");
    }
    if bytes[..PG_VERSION_AT] != PURGED_MAGIC || u32_at(bytes, PG_VERSION_AT) != FORMAT_VERSION {
        return Err("purge point file has a bad magic or version");
    }
    if u32_at(bytes, PG_VERSION_AT + 4) != 0 || u32_at(bytes, PG_CRC_AT + 4) != 0 {
        return Err("purge point file has reserved bytes set");
    }
    Ok(LogId::new(
        u64_at(bytes, PG_TERM_AT),
        u64_at(bytes, PG_INDEX_AT),
    ))
}

/// Encodes the truncation file: a truncation from `from` (the first index it removes) is
/// under way.
pub fn encode_truncating(from: u64) -> [u8; TRUNCATING_FILE_BYTES] {
    let mut bytes = [0u8; TRUNCATING_FILE_BYTES];
    bytes[..TR_VERSION_AT].copy_from_slice(&TRUNCATING_MAGIC);
    bytes[TR_VERSION_AT..TR_VERSION_AT + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[TR_FROM_AT..TR_CRC_AT].copy_from_slice(&from.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..TR_CRC_AT]);
    bytes[TR_CRC_AT..TR_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// Decodes the truncation file into the first index the truncation removes, or says why it
/// is invalid.
pub fn decode_truncating(bytes: &[u8]) -> Result<u64, &'static str> {
    if bytes.len() != TRUNCATING_FILE_BYTES {
        return Err("truncation file has the wrong size");
    }
    if crc32fast::hash(&bytes[..TR_CRC_AT]) != u32_at(bytes, TR_CRC_AT) {
        return Err("truncation file checksum mismatch");
    }
    if bytes[..TR_VERSION_AT] != TRUNCATING_MAGIC || u32_at(bytes, TR_VERSION_AT) != FORMAT_VERSION
    {
        return Err("truncation file has a bad magic or version");
    }
    if u32_at(bytes, TR_VERSION_AT + 4) != 0 || u32_at(bytes, TR_CRC_AT + 4) != 0 {
        return Err("truncation file has reserved bytes set");
    }
    Ok(u64_at(bytes, TR_FROM_AT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_every_truncation_is_rejected() {
        let mut out = Vec::new();
        encode_record(&mut out, 5, 7, 3, EntryKind::Normal, b"hello", 32);
        assert_eq!(out.len(), record_bytes(5));
        assert_eq!(out.len() % RECORD_ALIGN_BYTES, 0);
        let Decoded::Record(record) = decode_record(&out, 5, 0) else {
            panic!("not decoded")
        };
        assert_eq!(
            (record.index, record.term, record.payload),
            (7, 3, &b"hello"[..])
        );
        assert_eq!((record.kind, record.durable_bytes), (EntryKind::Normal, 32));
        for len in 1..RECORD_HEADER_BYTES + 5 {
            assert!(
                matches!(decode_record(&out[..len], 5, 0), Decoded::Bad(_)),
                "cut at {len}"
            );
        }
    }

    #[test]
    fn records_encoded_together_are_the_records_encoded_one_by_one() {
        // Payload lengths around the 512-bit CRC's threshold (228) and every padding length,
        // in runs of odd and even length, into a buffer that already holds bytes and has
        // garbage in its spare capacity.
        let lengths: Vec<usize> = (0..24)
            .chain(220..240)
            .chain([255, 256, 257, 700])
            .collect();
        // Runs of one length and of mixed lengths, in every order.
        let shapes: [fn(usize) -> usize; 3] = [|k| k * 5, |_| 0, |k| usize::from(k % 11 > 7)];
        let cases = [1, 2, 3, 7, 8, 9, 16, 17, 31]
            .into_iter()
            .flat_map(|count| shapes.iter().map(move |shape| (count, shape)));
        for (count, shape) in cases {
            for start in 0..lengths.len() {
                let entries: Vec<Entry> = (0..count)
                    .map(|k| {
                        let len = lengths[(start + shape(k)) % lengths.len()];
                        let payload: Vec<u8> = (0..len).map(|b| (b * 7 + k) as u8 ^ 0x5a).collect();
                        let kind = [EntryKind::Normal, EntryKind::Membership][k % 2];
                        Entry {
                            term: 3 + k as u64,
                            index: 100 + k as u64,
                            kind,
                            data: payload.into(),
                        }
                    })
                    .collect();
                let mut together = vec![0xEE; 8 * 1024];
                together.truncate(16);
                encode_records(&mut together, 99, &entries, 4096);
                let mut one_by_one = vec![0xEE; 16];
                for e in &entries {
                    encode_record(&mut one_by_one, 99, e.index, e.term, e.kind, &e.data, 4096);
                }
                assert!(together == one_by_one, "{count} records from {start}");
            }
        }
    }

    /// A record as FORMAT.md describes it, built with `crc32fast` and nothing of the encoder.
    fn record_by_the_book(segment_first_index: u64, entry: &Entry, durable_bytes: u32) -> Vec<u8> {
        let mut header = [0u8; RECORD_HEADER_BYTES];
        header[4..8].copy_from_slice(&(entry.data.len() as u32).to_le_bytes());
        header[8..16].copy_from_slice(&entry.index.to_le_bytes());
        header[16..24].copy_from_slice(&entry.term.to_le_bytes());
        header[24..28].copy_from_slice(&durable_bytes.to_le_bytes());
        header[28] = entry.kind as u8;
        let mut crc = crc32fast::Hasher::new_with_initial(crc_seed(segment_first_index));
        crc.update(&header[4..]);
        crc.update(&entry.data);
        header[..4].copy_from_slice(&crc.finalize().to_le_bytes());
        let mut record = header.to_vec();
        record.extend_from_slice(&entry.data);
        record.resize(record.len().div_ceil(8) * 8, 0);
        record
    }

    #[test]
    fn records_encoded_together_match_the_format_by_the_book() {
        use rand::rngs::SmallRng;
        use rand::{Rng, RngCore, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(77);
        let mut data = vec![0u8; (64 << 10) + 8192];
        rng.fill_bytes(&mut data);
        // Every length up to 1,500 (both CRC paths, every residue of the 64-byte blocks), and
        // long payloads (many rounds of the 256-byte main loop) around block boundaries.
        let mut lengths: Vec<usize> = (0..1500).collect();
        for base in [4096, 65536] {
            lengths.extend(
                [0, 1, 35, 36, 37, 63, 64, 99, 100, 101, 127, 128, 255, 256].map(|d| base + d),
            );
        }
        let entry = |k: usize, len: usize, from: usize| Entry {
            term: 1 + k as u64,
            index: 1000 + k as u64,
            kind: [EntryKind::Normal, EntryKind::Membership][k % 2],
            data: data[from..from + len].to_vec().into(),
        };
        let first = 0x1234_5678_9abc_def0;
        for round in 0..1000 {
            let entries: Vec<Entry> = (0..rng.gen_range(1..6))
                .map(|k| {
                    entry(
                        k,
                        lengths[rng.gen_range(0..lengths.len())],
                        rng.gen_range(0..4000),
                    )
                })
                .collect();
            let mut expected = vec![0xEE; 8];
            for e in &entries {
                expected.extend(record_by_the_book(first, e, 777));
            }
            // Into a buffer that grows, and into one whose spare capacity holds garbage.
            let mut out = if round % 2 == 0 {
                vec![0xEE; 8]
            } else {
                let mut out = vec![0x5A; expected.len() + 100];
                out.truncate(8);
                out.fill(0xEE);
                out
            };
            encode_records(&mut out, first, &entries, 777);
            let lengths: Vec<usize> = entries.iter().map(|e| e.data.len()).collect();
            assert!(
                out == expected,
                "round {round}, payload lengths {lengths:?}"
            );
            let mut at = 0;
            for e in &entries {
                let Decoded::Record(record) = decode_record(&out[8..], first, at) else {
                    panic!("record at {at} of lengths {lengths:?} does not decode");
                };
                assert_eq!(record.payload, &e.data[..]);
                at += record.total_bytes;
            }
        }
        // Bodies of a whole number of 64-byte blocks (payload 36 + 64k), beside every residue.
        for k in 3..40 {
            for other in 228..228 + 64 {
                let entries = [entry(0, 36 + 64 * k, 3), entry(1, other + 64 * k, 5)];
                let mut out = Vec::new();
                encode_records(&mut out, first, &entries, 9);
                let mut expected = record_by_the_book(first, &entries[0], 9);
                expected.extend(record_by_the_book(first, &entries[1], 9));
                assert!(
                    out == expected,
                    "payloads of {} and {}",
                    36 + 64 * k,
                    other + 64 * k
                );
            }
        }
    }

    #[test]
    fn both_encoders_write_the_same_bytes() {
        // `encode_record` hashes and copies the payload in one pass, `encode_record_header`
        // only hashes it: the CRCs must agree for every padding length, on both CRC paths
        // (the 512-bit one from 228-byte payloads on).
        for len in 0..1100 {
            let payload: Vec<u8> = (0..len)
                .map(|b| (b as u8).wrapping_mul(31) ^ 0xa5)
                .collect();
            let mut one_pass = Vec::new();
            encode_record(&mut one_pass, 9, 12, 4, EntryKind::Membership, &payload, 64);
            let mut parts =
                encode_record_header(9, 12, 4, EntryKind::Membership, &payload, 64).to_vec();
            parts.extend_from_slice(&payload);
            parts.resize(record_bytes(len), 0);
            assert_eq!(one_pass, parts, "payload of {len} bytes");
        }
    }

    #[test]
    fn every_bit_flip_in_a_record_is_detected() {
        let mut out = Vec::new();
        encode_record(&mut out, 1, 1, 1, EntryKind::Blank, b"xyz", 0);
        for bit in 0..(RECORD_HEADER_BYTES + 3) * 8 {
            let mut copy = out.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&copy, 1, 0), Decoded::Record(_)),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn a_huge_length_is_rejected_without_allocating() {
        let mut header = [0u8; RECORD_HEADER_BYTES];
        header[REC_LEN_AT..REC_INDEX_AT].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_record(&header, 1, 0), Decoded::Bad(_)));
    }

    #[test]
    fn a_record_fails_under_any_other_segment_first_index() {
        // A stale record in a recycled file was written under another first index.
        let mut out = Vec::new();
        encode_record(
            &mut out,
            100,
            150,
            2,
            EntryKind::Normal,
            b"stale payload",
            32,
        );
        assert!(matches!(decode_record(&out, 100, 0), Decoded::Record(_)));
        for other in [0, 1, 99, 101, 151, (1 << 32) + 1, u64::MAX] {
            assert!(
                matches!(decode_record(&out, other, 0), Decoded::Bad(_)),
                "seed {other}"
            );
        }
        assert_eq!(record_index_field(&out, 0), Some(150));
    }

    #[test]
    fn small_files_round_trip_and_reject_flips() {
        let hs = HardState {
            term: 9,
            voted_for: Some(0),
            commit: 4,
        };
        assert_eq!(decode_hard_state(&encode_hard_state(&hs)), Ok(hs));
        let purged = LogId::new(5, 77);
        assert_eq!(decode_purged(&encode_purged(purged)), Ok(purged));
        assert_eq!(decode_segment_header(&encode_segment_header(12)), Ok(12));
        for byte in 0..HARD_STATE_FILE_BYTES {
            let mut bytes = encode_hard_state(&hs);
            bytes[byte] ^= 0x10;
            assert!(decode_hard_state(&bytes).is_err(), "hard state byte {byte}");
        }
        assert_eq!(decode_truncating(&encode_truncating(78)), Ok(78));
        for byte in 0..TRUNCATING_FILE_BYTES {
            let mut bytes = encode_truncating(78);
            bytes[byte] ^= 0x04;
            assert!(decode_truncating(&bytes).is_err(), "truncation byte {byte}");
        }
        for byte in 0..SEGMENT_HEADER_BYTES {
            let mut bytes = encode_segment_header(12);
            bytes[byte] ^= 0x01;
            assert!(
                decode_segment_header(&bytes).is_err(),
                "segment header byte {byte}"
            );
        }
    }
}
