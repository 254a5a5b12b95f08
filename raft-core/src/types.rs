//! The vocabulary shared by every crate of the workspace: ids, log entries, hard state and
//! snapshot metadata.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::membership::Membership;

/// A server's id. `0` is reserved for "nobody" on the wire and is never a valid member.
pub type NodeId = u64;
/// A Raft term (paper section 5.1).
pub type Term = u64;
/// A position in the replicated log. The first real entry has index 1; index 0 is the empty log.
pub type LogIndex = u64;

/// A log position together with the term of the entry there.
///
/// Ordering compares the term first, then the index: that is exactly the "more up to date" rule of
/// the Raft paper section 5.4.1, so `a > b` means a log ending at `a` is more up to date.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    /// Term of the entry.
    pub term: Term,
    /// Index of the entry.
    pub index: LogIndex,
}

impl LogId {
    /// The position before the first entry of an empty log.
    pub const ZERO: LogId = LogId { term: 0, index: 0 };

    /// Builds a log id.
    pub const fn new(term: Term, index: LogIndex) -> Self {
        LogId { term, index }
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.term, self.index)
    }
}

/// What an entry carries. The numeric values are part of the on-disk format of `raft-log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum EntryKind {
    /// No payload: the no-op a new leader appends (paper section 8), also used by tests.
    Blank = 0,
    /// An opaque command for the user's state machine.
    Normal = 1,
    /// A cluster configuration, encoded with [`Membership::encode`].
    Membership = 2,
}

impl EntryKind {
    /// Decodes the on-disk / on-wire kind byte.
    pub fn from_u8(byte: u8) -> Option<EntryKind> {
        match byte {
            0 => Some(EntryKind::Blank),
            1 => Some(EntryKind::Normal),
            2 => Some(EntryKind::Membership),
            _ => None,
        }
    }
}

/// One log entry. Cloning is cheap: the payload is reference counted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Term in which a leader created the entry.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// How to interpret `data`.
    pub kind: EntryKind,
    /// The payload; empty for [`EntryKind::Blank`].
    pub data: Bytes,
}

/// Bytes an entry is charged for beyond its payload when batching by size (index, term, kind,
/// framing). Keeps tiny entries from looking free.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// A normal entry carrying a user command.
    pub fn normal(term: Term, index: LogIndex, data: impl Into<Bytes>) -> Self {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: data.into(),
        }
    }

    /// A blank entry (the no-op of a new leader).
    pub fn blank(term: Term, index: LogIndex) -> Self {
        Entry {
            term,
            index,
            kind: EntryKind::Blank,
            data: Bytes::new(),
        }
    }

    /// A configuration entry.
    pub fn membership(term: Term, index: LogIndex, membership: &Membership) -> Self {
        Entry {
            term,
            index,
            kind: EntryKind::Membership,
            data: membership.encode(),
        }
    }

    /// This entry's position.
    pub fn log_id(&self) -> LogId {
        LogId {
            term: self.term,
            index: self.index,
        }
    }

    /// The size this entry is charged for by batching and flow-control limits.
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The state that must be durable before a server answers any RPC (paper Figure 2, "Persistent
/// state on all servers"), plus the commit index as last saved with it. A restart still
/// replays every entry after the latest snapshot into the state machine (see
/// `raft_core::node::StateMachine`); the saved commit index only tells the engine that those
/// entries are committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this server has seen.
    pub term: Term,
    /// Candidate that received this server's vote in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// Highest index known to be committed. Persisting it is an optimisation, never required
    /// for safety; it may lag the real commit index.
    pub commit: LogIndex,
}

/// Describes one snapshot: the exact state it captures and how to check its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last entry whose effect the snapshot contains. The snapshot is labelled with exactly
    /// the index and term of the state it captures (jraft labelled it one entry early, bug 7).
    pub last_log_id: LogId,
    /// The configuration in effect at `last_log_id`.
    pub membership: Membership,
    /// Log id of the configuration entry that produced `membership` (ZERO for the initial one).
    pub membership_log_id: LogId,
    /// Size of the snapshot data in bytes. 0 while the snapshot is being built.
    pub size_bytes: u64,
    /// CRC32 (IEEE, as computed by `crc32fast`) of the whole data. 0 while being built.
    pub crc32: u32,
    /// Creation time in milliseconds since the Unix epoch, filled in by the snapshot store (the
    /// engine has no clock).
    pub created_unix_ms: u64,
}

impl SnapshotMeta {
    /// A stable name for the snapshot: `<term>-<index>` of its last included entry, padded so
    /// names sort in log order.
    pub fn id(&self) -> String {
        format!(
            "{:020}-{:020}",
            self.last_log_id.term, self.last_log_id.index
        )
    }
}

/// One piece of a snapshot in transfer (leader -> follower). `raft-snapshot` produces and
/// consumes them, `raft-net-tcp` carries them on a connection of their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The leader sending the snapshot.
    pub from: NodeId,
    /// The follower receiving it.
    pub to: NodeId,
    /// The leader's term; a receiver that knows a newer term rejects the chunk.
    pub term: Term,
    /// Which snapshot this chunk belongs to (with its total size and checksum).
    pub meta: SnapshotMeta,
    /// Byte offset of `data` within the snapshot.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// CRC32 of `data`.
    pub crc32: u32,
    /// Whether this is the last chunk (`offset + data.len() == meta.size_bytes`).
    pub done: bool,
}

/// The receiver's answer to a [`SnapshotChunk`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunkAck {
    /// The receiver.
    pub from: NodeId,
    /// The receiver's current term.
    pub term: Term,
    /// The snapshot being acknowledged.
    pub snapshot: LogId,
    /// What happened.
    pub status: ChunkStatus,
    /// The offset the receiver expects next; a sender resumes from here after any failure.
    pub next_offset: u64,
}

/// Outcome of receiving one snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkStatus {
    /// Written; send the chunk at `next_offset`.
    Accepted,
    /// The whole snapshot arrived, its checksum matched and it was handed to the engine.
    Complete,
    /// Not written (bad CRC, offset gap, I/O trouble): resend from `next_offset`.
    Retry(String),
    /// The receiver will never take this snapshot (older than its state, stale term): stop.
    Refused(String),
}
