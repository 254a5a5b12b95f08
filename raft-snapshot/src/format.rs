//! The metadata file, byte by byte, and the names of the directory's entries. Pure code: no
//! I/O, so every check is tested on bytes.
//!
//! # Directory layout
//!
//! ```text
//! <dir>/
//!   <term:020>-<index:020>/     one published snapshot (SnapshotMeta::id of its last entry)
//!     data                      the snapshot bytes, exactly size_bytes of them
//!     meta                      the metadata record below
//!   tmp-...                     anything being written or removed; deleted when the store opens
//! ```
//!
//! A snapshot is written into a `tmp-` directory, synced, and published by renaming that
//! directory to its final name, then syncing `<dir>`. A snapshot is removed by renaming it back
//! to a `tmp-` name first, so a crash never leaves a published directory half deleted.
//!
//! # Metadata file
//!
//! All integers are little-endian.
//!
//! ```text
//! offset      size  field
//! 0           8     magic b"RSNAPMT\0"
//! 8           4     format version (u32), currently 1
//! 12          4     body length B (u32), BODY_FIXED_BYTES <= B <= BODY_BYTES_MAX
//! 16          B     body:
//!   +0        8       last included entry: term (u64)
//!   +8        8       last included entry: index (u64)
//!   +16       8       configuration entry: term (u64)
//!   +24       8       configuration entry: index (u64)
//!   +32       8       data size in bytes (u64)
//!   +40       4       CRC32 of the data (u32, IEEE, crc32fast)
//!   +44       8       creation time, ms since the Unix epoch (u64)
//!   +52       4       membership length M (u32)
//!   +56       M       membership (raft_core::Membership::encode)
//! 16 + B      4     CRC32 of bytes [0, 16 + B)
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use raft_core::membership::{ADDRESS_BYTES_MAX, MEMBERS_MAX};
use raft_core::{LogId, Membership, SnapshotMeta};

/// First bytes of every metadata file.
pub const META_MAGIC: [u8; 8] = *b"RSNAPMT\0";
/// The metadata format this code writes and reads.
pub const META_VERSION: u32 = 1;
/// Bytes before the body: magic, version, body length.
pub const META_HEADER_BYTES: usize = META_MAGIC.len() + 4 + 4;
/// Bytes of the body before the membership: 5 u64 fields, the data CRC, the creation time and
/// the membership length.
pub const META_BODY_FIXED_BYTES: usize = 8 * 5 + 4 + 8 + 4;
/// Bytes of the trailing CRC.
pub const META_CRC_BYTES: usize = 4;
/// Largest body accepted: 1 MiB holds a membership of about 40 000 ids, far beyond any real
/// cluster, and keeps a damaged length field from making us allocate gigabytes.
pub const META_BODY_BYTES_MAX: usize = 1 << 20;
/// Name of the data file inside a snapshot's directory.
pub const DATA_FILE: &str = "data";
/// Name of the metadata file inside a snapshot's directory.
pub const META_FILE: &str = "meta";
/// Prefix of every entry that is not a published snapshot and is removed at open.
pub const TEMP_PREFIX: &str = "tmp-";

/// Why a metadata record was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaError {
    /// Shorter than the header plus the CRC.
    Truncated,
    /// The magic bytes are wrong: not a metadata file.
    BadMagic,
    /// Written by a format version this code does not know.
    UnknownVersion,
    /// The body length is out of range or does not match the file's length.
    BadLength,
    /// The trailing CRC does not match.
    BadCrc,
    /// The membership is not a valid configuration, or breaks the bounds `Membership::decode`
    /// checks (at most `MEMBERS_MAX` entries per set and addresses, at most
    /// `ADDRESS_BYTES_MAX` bytes per address).
    BadMembership,
    /// The membership is too large for a metadata record (`META_BODY_BYTES_MAX`).
    TooLarge,
    /// The configuration entry comes after the snapshot's last entry.
    BadLogIds,
}

impl MetaError {
    /// A short description for error messages.
    pub fn reason(self) -> &'static str {
        match self {
            MetaError::Truncated => "metadata file truncated",
            MetaError::BadMagic => "metadata file has a bad magic",
            MetaError::UnknownVersion => "metadata file has an unknown format version",
            MetaError::BadLength => "metadata file has a bad body length",
            MetaError::BadCrc => "metadata file checksum mismatch",
            MetaError::BadMembership => "metadata has an invalid membership",
            MetaError::TooLarge => "metadata has a membership too large for a metadata record",
            MetaError::BadLogIds => {
                "metadata has its configuration entry after the snapshot's last entry"
            }
        }
    }
}

/// Checks what a metadata record must hold beyond its framing: a membership that is a valid
/// configuration within the bounds `Membership::decode` accepts and small enough for a record
/// (`META_BODY_BYTES_MAX`), and a configuration entry at or before the last entry.
/// [`encode_meta`] and [`decode_meta`] both check it, so metadata that encodes always decodes
/// again; a receiver checks it before it writes anything.
pub fn check_meta(meta: &SnapshotMeta) -> Result<(), MetaError> {
    check_fields(meta)?;
    // Encoded to be measured: bounded by the membership already in memory.
    if META_BODY_FIXED_BYTES + meta.membership.encode().len() > META_BODY_BYTES_MAX {
        return Err(MetaError::TooLarge);
    }
    Ok(())
}

/// [`check_meta`] but for the size, which [`encode_meta`] checks on the encoding it makes.
fn check_fields(meta: &SnapshotMeta) -> Result<(), MetaError> {
    let (membership_id, last) = (meta.membership_log_id, meta.last_log_id);
    if membership_id.index > last.index || membership_id.term > last.term {
        return Err(MetaError::BadLogIds);
    }
    check_membership(&meta.membership)
}

/// [`Membership::validate`] and the bounds [`Membership::decode`] puts on top of it.
fn check_membership(membership: &Membership) -> Result<(), MetaError> {
    membership
        .validate()
        .map_err(|_| MetaError::BadMembership)?;
    let sets = [
        &membership.voters,
        &membership.voters_outgoing,
        &membership.learners,
    ];
    if sets.iter().any(|set| set.len() > MEMBERS_MAX)
        || membership.addresses.len() > MEMBERS_MAX
        || membership
            .addresses
            .values()
            .any(|address| address.len() > ADDRESS_BYTES_MAX)
    {
        return Err(MetaError::BadMembership);
    }
    Ok(())
}

/// Encodes `meta` as a metadata record, or says why it cannot be one (see [`check_meta`]).
pub fn encode_meta(meta: &SnapshotMeta) -> Result<Bytes, MetaError> {
    check_fields(meta)?;
    let membership = meta.membership.encode();
    let body_bytes = META_BODY_FIXED_BYTES + membership.len();
    if body_bytes > META_BODY_BYTES_MAX {
        return Err(MetaError::TooLarge);
    }
    let mut buf = BytesMut::with_capacity(META_HEADER_BYTES + body_bytes + META_CRC_BYTES);
    buf.put_slice(&META_MAGIC);
    buf.put_u32_le(META_VERSION);
    buf.put_u32_le(body_bytes as u32);
    buf.put_u64_le(meta.last_log_id.term);
    buf.put_u64_le(meta.last_log_id.index);
    buf.put_u64_le(meta.membership_log_id.term);
    buf.put_u64_le(meta.membership_log_id.index);
    buf.put_u64_le(meta.size_bytes);
    buf.put_u32_le(meta.crc32);
    buf.put_u64_le(meta.created_unix_ms);
    buf.put_u32_le(membership.len() as u32);
    buf.put_slice(&membership);
    debug_assert_eq!(buf.len(), META_HEADER_BYTES + body_bytes);
    let crc = crc32fast::hash(&buf);
    buf.put_u32_le(crc);
    Ok(buf.freeze())
}

/// Decodes and checks a metadata record (the whole file).
pub fn decode_meta(bytes: &[u8]) -> Result<SnapshotMeta, MetaError> {
    if bytes.len() < META_HEADER_BYTES + META_CRC_BYTES {
        return Err(MetaError::Truncated);
    }
    let mut header = &bytes[..META_HEADER_BYTES];
    if header[..META_MAGIC.len()] != META_MAGIC {
        return Err(MetaError::BadMagic);
    }
    header.advance(META_MAGIC.len());
    if header.get_u32_le() != META_VERSION {
        return Err(MetaError::UnknownVersion);
    }
    let body_bytes = header.get_u32_le() as usize;
    if !(META_BODY_FIXED_BYTES..=META_BODY_BYTES_MAX).contains(&body_bytes)
        || bytes.len() != META_HEADER_BYTES + body_bytes + META_CRC_BYTES
    {
        return Err(MetaError::BadLength);
    }
    let (checked, mut crc) = bytes.split_at(META_HEADER_BYTES + body_bytes);
    if crc32fast::hash(checked) != crc.get_u32_le() {
        return Err(MetaError::BadCrc);
    }
    let mut body = &checked[META_HEADER_BYTES..];
    let last_log_id = LogId::new(body.get_u64_le(), body.get_u64_le());
    let membership_log_id = LogId::new(body.get_u64_le(), body.get_u64_le());
    let size_bytes = body.get_u64_le();
    let crc32 = body.get_u32_le();
    let created_unix_ms = body.get_u64_le();
    let membership_bytes = body.get_u32_le() as usize;
    if membership_bytes != body.len() {
        return Err(MetaError::BadLength);
    }
    let membership = Membership::decode(body).map_err(|_| MetaError::BadMembership)?;
    let meta = SnapshotMeta {
        last_log_id,
        membership,
        membership_log_id,
        size_bytes,
        crc32,
        created_unix_ms,
    };
    // Decoded from at most `META_BODY_BYTES_MAX` bytes: only the fields need checking.
    check_fields(&meta)?;
    Ok(meta)
}

/// Parses a published snapshot's directory name (`SnapshotMeta::id`) back into its log id.
pub fn parse_id(name: &str) -> Option<LogId> {
    let (term, index) = name.split_once('-')?;
    if term.len() != 20 || index.len() != 20 {
        return None;
    }
    if !term
        .bytes()
        .chain(index.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(LogId::new(term.parse().ok()?, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: LogId::new(3, 120),
            membership: Membership::new_voters([1, 2, 3]),
            membership_log_id: LogId::new(1, 1),
            size_bytes: 1 << 30,
            crc32: 0xdead_beef,
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn metadata_round_trips() {
        let bytes = encode_meta(&meta()).unwrap();
        assert_eq!(&bytes[..8], b"RSNAPMT\0");
        assert_eq!(decode_meta(&bytes), Ok(meta()));
    }

    #[test]
    fn metadata_that_cannot_be_read_back_is_not_encoded() {
        type Change = fn(&mut SnapshotMeta);
        let cases: [(Change, MetaError); 4] = [
            (|m| m.membership.voters.clear(), MetaError::BadMembership),
            (
                |m| {
                    m.membership.addresses = (1..=MEMBERS_MAX as u64 + 1)
                        .map(|id| (id, "a".into()))
                        .collect()
                },
                MetaError::BadMembership,
            ),
            (
                |m| {
                    m.membership = Membership::new_voters(1..=MEMBERS_MAX as u64);
                    m.membership.addresses = (1..=MEMBERS_MAX as u64)
                        .map(|id| (id, "a".repeat(ADDRESS_BYTES_MAX)))
                        .collect();
                },
                MetaError::TooLarge,
            ),
            (
                |m| m.membership_log_id = LogId::new(4, 1),
                MetaError::BadLogIds,
            ),
        ];
        for (change, expected) in cases {
            let mut bad = meta();
            change(&mut bad);
            assert_eq!(encode_meta(&bad), Err(expected));
        }
        // The largest membership that fits is encoded and read back.
        let mut large = meta();
        large.membership = Membership::new_voters(1..=MEMBERS_MAX as u64);
        large.membership.addresses = (1..=MEMBERS_MAX as u64)
            .map(|id| (id, "a".repeat(900)))
            .collect();
        let bytes = encode_meta(&large).unwrap();
        assert_eq!(decode_meta(&bytes), Ok(large));
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_detected() {
        let bytes = encode_meta(&meta()).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut damaged = bytes.to_vec();
            damaged[i / 8] ^= 1 << (i % 8);
            assert!(decode_meta(&damaged).is_err(), "bit {i} flipped");
        }
        for len in 0..bytes.len() {
            assert!(decode_meta(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn ids_parse_back_and_other_names_do_not() {
        assert_eq!(parse_id(&meta().id()), Some(LogId::new(3, 120)));
        for name in [
            "tmp-x",
            "data",
            "1-2",
            "0000000000000000000a-00000000000000000001",
        ] {
            assert_eq!(parse_id(name), None, "{name}");
        }
    }
}
