//! What only a leader has. It lives in `Engine::leading`, which is `Some` exactly while the
//! role is [`super::Role::Leader`]: stepping down drops all of it at once, so no part of it
//! (a peer's progress, a transfer, a lease) can outlive the term it belongs to.

use std::collections::BTreeMap;

use super::progress::Progress;
use super::reads::LeaderReads;
use crate::types::{LogIndex, NodeId};

#[derive(Debug, Default)]
pub(super) struct Leading {
    /// Replication state of every other member.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// Index of the entry that opened this term (commits of older entries count only once
    /// it commits).
    pub(super) term_start_index: LogIndex,
    /// Send AppendEntries to peers before the next `Ready`.
    pub(super) broadcast_pending: bool,
    /// Leadership transfer in progress: (target, ticks elapsed).
    pub(super) transfer: Option<(NodeId, u64)>,
    /// A server being caught up as a learner before it becomes a voter.
    pub(super) catching_up: Option<NodeId>,
    /// Reads waiting for a quorum's confirmation, heartbeat rounds, the lease.
    pub(super) reads: LeaderReads,
}

impl Leading {
    /// A peer's progress; panics if it is not a member (a bug in the caller).
    pub(super) fn peer(&self, id: NodeId) -> &Progress {
        self.progress
            .get(&id)
            .unwrap_or_else(|| panic!("no progress for peer {id}"))
    }

    /// A peer's progress, mutable; panics if it is not a member (a bug in the caller).
    pub(super) fn peer_mut(&mut self, id: NodeId) -> &mut Progress {
        self.progress
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no progress for peer {id}"))
    }
}
