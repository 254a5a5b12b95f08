//! The backup file, byte by byte. Pure code: no I/O, so every check is tested on bytes.
//!
//! All integers are little-endian.
//!
//! ```text
//! offset      size  field
//! 0           8     magic b"RAFTBAK\0"
//! 8           4     format version (u32), currently 1
//! 12          4     header body length B (u32), BODY_FIXED_BYTES < B <= BODY_BYTES_MAX
//! 16          B     header body:
//!   +0        8       cluster id of the cluster backed up (u64)
//!   +8        8       id of the node that served the backup (u64)
//!   +16       8       time the backup was taken, ms since the Unix epoch (u64)
//!   +24       B-24    the snapshot's metadata record exactly as raft-snapshot stores it
//!                     (raft_snapshot::format: its own magic, version, length and CRC32; the
//!                     last included entry's term and index, the configuration entry, the
//!                     data size S, the data's CRC32 C, the creation time, the membership of
//!                     the cluster backed up)
//! 16 + B      4     CRC32 of bytes [0, 16 + B)
//! 20 + B      S     the snapshot data: the state machine's snapshot, opaque here; CRC32 C
//! 20 + B + S        end of the file: a byte more or less is an error
//! ```
//!
//! A reader checks the magic, the version and the length before it reads the body (at most
//! [`BODY_BYTES_MAX`] bytes: a damaged length never makes it allocate more), the header's
//! CRC32 before it trusts a field, the metadata record's own checks, then the file's length
//! against `20 + B + S` before it reads any data, and the data's CRC32 at its end. CRC32 is
//! IEEE (crc32fast), as everywhere in the workspace.

use raft_core::{NodeId, SnapshotMeta};
use raft_snapshot::format::{
    decode_meta, encode_meta, META_BODY_BYTES_MAX, META_CRC_BYTES, META_HEADER_BYTES,
};

/// First bytes of every backup file.
pub const BACKUP_MAGIC: [u8; 8] = *b"RAFTBAK\0";
/// The backup format this code writes and reads.
pub const BACKUP_VERSION: u32 = 1;
/// Bytes before the header body: magic, version, body length.
pub const PREFIX_BYTES: usize = BACKUP_MAGIC.len() + 4 + 4;
/// Bytes of the header body before the metadata record: cluster id, node id, time.
pub const BODY_FIXED_BYTES: usize = 8 * 3;
/// Bytes of the header's CRC32.
pub const HEADER_CRC_BYTES: usize = 4;
/// Largest header body accepted: the fixed fields and the largest metadata record
/// raft-snapshot reads (its body is at most 1 MiB).
pub const BODY_BYTES_MAX: usize =
    BODY_FIXED_BYTES + META_HEADER_BYTES + META_BODY_BYTES_MAX + META_CRC_BYTES;

/// What a backup file says about itself: where it came from and the snapshot it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// Cluster id of the cluster backed up.
    pub cluster_id: u64,
    /// The node that served the backup.
    pub node_id: NodeId,
    /// When the backup was taken, ms since the Unix epoch.
    pub taken_unix_ms: u64,
    /// The snapshot: its last included entry (the backup's index and term), configuration,
    /// data size and data CRC32.
    pub meta: SnapshotMeta,
}

/// Why a backup file is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackupFileError {
    /// The file does not begin with the magic.
    #[error("not a raft backup file (it does not begin with the backup magic)")]
    NotABackup,
    /// Written by a format version this code does not read.
    #[error(
        "backup format version {0} is not supported (this raft reads version {BACKUP_VERSION})"
    )]
    UnknownVersion(u32),
    /// The file ends inside its header.
    #[error(
        "backup file truncated: it ends inside its header ({found} of at least {needed} bytes)"
    )]
    HeaderTruncated {
        /// Bytes the header needs, as far as known.
        needed: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The header's body length is out of range.
    #[error("backup header damaged: its length field says {0} bytes")]
    BadHeaderLength(u64),
    /// The header's CRC32 does not match.
    #[error("backup header damaged: checksum mismatch")]
    HeaderChecksum,
    /// The header's metadata record does not decode.
    #[error("backup header damaged: {0}")]
    BadMeta(&'static str),
    /// The file holds fewer data bytes than the header says.
    #[error("backup file truncated: {found} of its {expected} bytes of snapshot data are present")]
    DataTruncated {
        /// Data bytes the header announces.
        expected: u64,
        /// Data bytes present.
        found: u64,
    },
    /// The file holds bytes after the data.
    #[error("backup file damaged: {0} bytes after the end of its snapshot data")]
    TrailingBytes(u64),
    /// The data's CRC32 does not match the header's.
    #[error(
        "backup file damaged: its snapshot data does not match the checksum in its header \
         (crc32 {expected:#010x} expected, {found:#010x} found)"
    )]
    DataChecksum {
        /// CRC32 the header announces.
        expected: u32,
        /// CRC32 of the bytes present.
        found: u32,
    },
}

impl BackupHeader {
    /// Encodes the header (everything before the data), or says why `meta` cannot be one.
    pub fn encode(&self) -> Result<Vec<u8>, BackupFileError> {
        let meta = encode_meta(&self.meta).map_err(|e| BackupFileError::BadMeta(e.reason()))?;
        let body_bytes = BODY_FIXED_BYTES + meta.len();
        debug_assert!(body_bytes <= BODY_BYTES_MAX);
        let mut buf = Vec::with_capacity(PREFIX_BYTES + body_bytes + HEADER_CRC_BYTES);
        buf.extend_from_slice(&BACKUP_MAGIC);
        buf.extend_from_slice(&BACKUP_VERSION.to_le_bytes());
        buf.extend_from_slice(&(body_bytes as u32).to_le_bytes());
        buf.extend_from_slice(&self.cluster_id.to_le_bytes());
        buf.extend_from_slice(&self.node_id.to_le_bytes());
        buf.extend_from_slice(&self.taken_unix_ms.to_le_bytes());
        buf.extend_from_slice(&meta);
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        Ok(buf)
    }

    /// Bytes of the whole header, given the file's first [`PREFIX_BYTES`]: how much to read
    /// before [`BackupHeader::decode`]. Checks the magic, the version and the length.
    pub fn header_bytes(prefix: &[u8]) -> Result<usize, BackupFileError> {
        // A short file that is not even a backup's beginning says so first.
        let magic_bytes = prefix.len().min(BACKUP_MAGIC.len());
        if prefix[..magic_bytes] != BACKUP_MAGIC[..magic_bytes] {
            return Err(BackupFileError::NotABackup);
        }
        if prefix.len() < PREFIX_BYTES {
            return Err(BackupFileError::HeaderTruncated {
                needed: PREFIX_BYTES as u64,
                found: prefix.len() as u64,
            });
        }
        let version = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
        if version != BACKUP_VERSION {
            return Err(BackupFileError::UnknownVersion(version));
        }
        let body_bytes = u32::from_le_bytes(prefix[12..16].try_into().expect("4 bytes")) as usize;
        if body_bytes <= BODY_FIXED_BYTES || body_bytes > BODY_BYTES_MAX {
            return Err(BackupFileError::BadHeaderLength(body_bytes as u64));
        }
        Ok(PREFIX_BYTES + body_bytes + HEADER_CRC_BYTES)
    }

    /// Decodes and checks a whole header (the file's first
    /// [`BackupHeader::header_bytes`] bytes, or more: what follows is ignored).
    pub fn decode(bytes: &[u8]) -> Result<BackupHeader, BackupFileError> {
        let header_bytes = Self::header_bytes(&bytes[..bytes.len().min(PREFIX_BYTES)])?;
        if bytes.len() < header_bytes {
            return Err(BackupFileError::HeaderTruncated {
                needed: header_bytes as u64,
                found: bytes.len() as u64,
            });
        }
        let (checked, rest) = bytes[..header_bytes].split_at(header_bytes - HEADER_CRC_BYTES);
        let crc = u32::from_le_bytes(rest.try_into().expect("4 bytes"));
        if crc32fast::hash(checked) != crc {
            return Err(BackupFileError::HeaderChecksum);
        }
        let body = &checked[PREFIX_BYTES..];
        let field = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let meta = decode_meta(&body[BODY_FIXED_BYTES..])
            .map_err(|e| BackupFileError::BadMeta(e.reason()))?;
        Ok(BackupHeader {
            cluster_id: field(0),
            node_id: field(8),
            taken_unix_ms: field(16),
            meta,
        })
    }

    /// The length a file holding this header (of `header_bytes` bytes) and its data must
    /// have.
    pub fn file_bytes(&self, header_bytes: usize) -> u64 {
        header_bytes as u64 + self.meta.size_bytes
    }

    /// Checks a file's length against the header (of `header_bytes` bytes): the data must be
    /// all there, and nothing after it.
    pub fn check_file_bytes(
        &self,
        header_bytes: usize,
        file_bytes: u64,
    ) -> Result<(), BackupFileError> {
        let expected = self.file_bytes(header_bytes);
        if file_bytes < expected {
            return Err(BackupFileError::DataTruncated {
                expected: self.meta.size_bytes,
                found: file_bytes.saturating_sub(header_bytes as u64),
            });
        }
        if file_bytes > expected {
            return Err(BackupFileError::TrailingBytes(file_bytes - expected));
        }
        Ok(())
    }

    /// Checks the CRC32 of the data read against the header's.
    pub fn check_data_crc(&self, found: u32) -> Result<(), BackupFileError> {
        if found != self.meta.crc32 {
            return Err(BackupFileError::DataChecksum {
                expected: self.meta.crc32,
                found,
            });
        }
        Ok(())
    }
}

/// Checks a whole backup file held in memory (header, length, data checksum) and returns
/// its header. `raft restore` makes the same checks while streaming a file; this form is
/// for tests and small files.
pub fn verify(file: &[u8]) -> Result<BackupHeader, BackupFileError> {
    let header = BackupHeader::decode(file)?;
    let header_bytes = BackupHeader::header_bytes(&file[..PREFIX_BYTES])?;
    header.check_file_bytes(header_bytes, file.len() as u64)?;
    header.check_data_crc(crc32fast::hash(&file[header_bytes..]))?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::{LogId, Membership};

    fn backup(data: &[u8]) -> Vec<u8> {
        let mut membership = Membership::new_voters([1, 2, 3]);
        membership.addresses = (1..=3)
            .map(|id| (id, format!("127.0.0.1:700{id}")))
            .collect();
        let header = BackupHeader {
            cluster_id: 7,
            node_id: 2,
            taken_unix_ms: 1_700_000_000_000,
            meta: SnapshotMeta {
                last_log_id: LogId::new(3, 1234),
                membership,
                membership_log_id: LogId::new(1, 1),
                size_bytes: data.len() as u64,
                crc32: crc32fast::hash(data),
                created_unix_ms: 1_699_999_999_000,
            },
        };
        let mut file = header.encode().unwrap();
        file.extend_from_slice(data);
        file
    }

    #[test]
    fn a_backup_round_trips() {
        let data = b"the state machine's snapshot".repeat(10);
        let file = backup(&data);
        assert_eq!(&file[..8], b"RAFTBAK\0");
        let header = verify(&file).unwrap();
        assert_eq!(header.cluster_id, 7);
        assert_eq!(header.node_id, 2);
        assert_eq!(header.meta.last_log_id, LogId::new(3, 1234));
        assert_eq!(header.meta.membership.addresses[&3], "127.0.0.1:7003");
        let header_bytes = BackupHeader::header_bytes(&file).unwrap();
        assert_eq!(&file[header_bytes..], &data[..]);
        // An empty snapshot is a valid backup too.
        assert_eq!(verify(&backup(b"")).unwrap().meta.size_bytes, 0);
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let file = backup(&[0x5a; 100]);
        for bit in 0..file.len() * 8 {
            let mut damaged = file.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(verify(&damaged).is_err(), "bit {bit} flipped");
        }
        for len in 0..file.len() {
            assert!(verify(&file[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(verify(&longer), Err(BackupFileError::TrailingBytes(1)));
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let file = backup(&[1; 64]);
        let header_bytes = BackupHeader::header_bytes(&file).unwrap();
        assert_eq!(
            verify(b"PK\x03\x04 a zip file, say"),
            Err(BackupFileError::NotABackup)
        );
        assert_eq!(
            verify(b""),
            Err(BackupFileError::HeaderTruncated {
                needed: PREFIX_BYTES as u64,
                found: 0
            })
        );
        assert!(matches!(
            verify(&file[..10]),
            Err(BackupFileError::HeaderTruncated { .. })
        ));
        let mut version = file.clone();
        version[8] = 9;
        assert_eq!(verify(&version), Err(BackupFileError::UnknownVersion(9)));
        let mut length = file.clone();
        length[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            verify(&length),
            Err(BackupFileError::BadHeaderLength(_))
        ));
        let mut header = file.clone();
        header[PREFIX_BYTES + 3] ^= 1;
        assert_eq!(verify(&header), Err(BackupFileError::HeaderChecksum));
        assert_eq!(
            verify(&file[..header_bytes + 10]),
            Err(BackupFileError::DataTruncated {
                expected: 64,
                found: 10
            })
        );
        let mut data = file.clone();
        *data.last_mut().unwrap() ^= 0x80;
        assert!(matches!(
            verify(&data),
            Err(BackupFileError::DataChecksum { .. })
        ));
    }
}
