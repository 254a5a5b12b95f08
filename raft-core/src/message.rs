//! Messages exchanged between servers. Every message carries the sender's term; a receiver
//! first compares terms (paper section 5.1) and only then looks at the body.

use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogId, LogIndex, NodeId, SnapshotMeta, Term};

/// A message from one server to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's current term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// A follower's hint after a failed consistency check (paper section 5.3, the optimisation
/// at the end of it): the leader can skip a whole term per round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The first index the leader should try next.
    pub index: LogIndex,
    /// The follower's term at `index` (0 when its log is shorter than `index`).
    pub term: Term,
}

/// The payload of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (paper section 5.2) or PreVote (thesis section 9.6).
    VoteRequest {
        /// The candidate's last log position (section 5.4.1).
        last_log_id: LogId,
        /// A pre-vote: asks "would you vote for me?" without anyone changing terms.
        pre_vote: bool,
        /// Sent because of a leadership transfer: voters ignore leader stickiness (thesis 3.10).
        transfer: bool,
    },
    /// Answer to a [`MessageBody::VoteRequest`].
    VoteResponse {
        /// Whether the vote is granted.
        granted: bool,
        /// Answers a pre-vote.
        pre_vote: bool,
    },
    /// AppendEntries (paper section 5.3); with no entries it is a heartbeat.
    AppendEntries {
        /// The entry immediately preceding `entries`.
        prev_log_id: LogId,
        /// Entries to store, possibly none.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
        /// The leader's heartbeat round when it sent this message. Echoed back so the leader can
        /// confirm leadership for ReadIndex (thesis section 6.4).
        round: u64,
    },
    /// Answer to [`MessageBody::AppendEntries`].
    AppendEntriesResponse {
        /// Whether the consistency check passed and the entries are durable.
        success: bool,
        /// On success: the index of the last entry the follower verified from this message
        /// (its match index). On failure: unused (0).
        match_index: LogIndex,
        /// On failure: where the leader should continue.
        conflict: Option<ConflictHint>,
        /// Echo of the request's `round`.
        round: u64,
    },
    /// The leader's snapshot has been transferred completely (chunks travel separately, see
    /// [`crate::SnapshotChunk`]) and is ready for the receiver to install.
    InstallSnapshot {
        /// The snapshot to install.
        meta: SnapshotMeta,
    },
    /// Answer to [`MessageBody::InstallSnapshot`].
    InstallSnapshotResponse {
        /// The snapshot's last log id when installed (or when the receiver already had all it
        /// covers); the leader continues replication right after it.
        last_log_id: LogId,
        /// Whether the snapshot was installed or already covered.
        success: bool,
    },
    /// Leadership transfer: start an election now, ignoring the election timer (thesis 3.10).
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client (thesis 6.4).
    ReadIndexRequest {
        /// The follower's id for the read; echoed in the response.
        request_id: u64,
    },
    /// The leader's answer: the index to wait for, or `None` if it cannot serve the read.
    ReadIndexResponse {
        /// Echo of the request id.
        request_id: u64,
        /// The confirmed commit index at the time of the request.
        read_index: Option<LogIndex>,
    },
}

/// Bytes a message is charged for in byte-bounded queues beyond its entries' payloads.
pub const MESSAGE_OVERHEAD_BYTES: u64 = 64;

impl Message {
    /// About how many bytes the message holds: its entries ([`crate::Entry::size_bytes`])
    /// plus [`MESSAGE_OVERHEAD_BYTES`]. For bounding queues of messages in bytes.
    pub fn size_bytes(&self) -> u64 {
        let entries = match &self.body {
            MessageBody::AppendEntries { entries, .. } => {
                entries.iter().map(crate::Entry::size_bytes).sum()
            }
            _ => 0,
        };
        entries + MESSAGE_OVERHEAD_BYTES
    }
}

impl MessageBody {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::VoteRequest { pre_vote: true, .. } => "PreVoteRequest",
            MessageBody::VoteRequest { .. } => "VoteRequest",
            MessageBody::VoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndexRequest { .. } => "ReadIndexRequest",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}
