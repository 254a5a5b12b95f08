//! Linearizable reads with ReadIndex (thesis section 6.4), on the leader or forwarded from a
//! follower, and optional lease-based reads (thesis 6.4.1).
//!
//! A follower forwards a read to the leader and resends it every
//! [`FORWARDED_READ_RESEND_HEARTBEATS`] heartbeat periods until it is answered, fails or is
//! cancelled: the request or its answer may be lost. A resent request is answered with the
//! leader's commit index when it arrives, which is at least the commit index when the read was
//! first asked, so the read stays linearizable.

use std::collections::{BTreeMap, VecDeque};

use tracing::debug;

use super::{Engine, EngineError, Role};
use crate::message::MessageBody;
use crate::types::{LogIndex, NodeId};

/// A forwarded read unanswered for this many heartbeat periods is sent again.
pub const FORWARDED_READ_RESEND_HEARTBEATS: u64 = 2;

/// A read whose index is known: answer it once the state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id the caller gave to [`Engine::read_index`].
    pub id: u64,
    /// The commit index at the time of the request, confirmed by a quorum.
    pub index: LogIndex,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    id: u64,
    /// Who asked: this server (0), or a follower that forwarded the read.
    from: NodeId,
    index: LogIndex,
    /// The heartbeat round whose quorum acknowledgement confirms leadership.
    round: u64,
}

/// A leader's reads waiting for confirmation, its heartbeat rounds and its lease.
#[derive(Debug, Default)]
pub(super) struct LeaderReads {
    /// The latest round sent. Acknowledgements echo it.
    round: u64,
    /// A new round should be broadcast before the next `Ready`.
    round_requested: bool,
    /// Reads waiting for their round to be acknowledged by a quorum.
    pending: VecDeque<PendingRead>,
    /// Reads that arrived before an entry of this term was committed (the leader does not know
    /// the commit index until then): (id, from).
    waiting_for_term_commit: Vec<(u64, NodeId)>,
    /// With leases: the tick at which each recent round was sent.
    round_sent_tick: BTreeMap<u64, u64>,
    /// With leases: the lease is valid before this tick.
    lease_until_tick: u64,
}

impl LeaderReads {
    pub(super) fn round(&self) -> u64 {
        self.round
    }

    /// Whether a round was requested; clears the request.
    pub(super) fn take_round_request(&mut self) -> bool {
        std::mem::take(&mut self.round_requested)
    }

    pub(super) fn round_requested(&self) -> bool {
        self.round_requested
    }

    fn len(&self) -> usize {
        self.pending.len() + self.waiting_for_term_commit.len()
    }

    /// Ends the lease at once (a leadership transfer lets another server win an election
    /// before it would have run out).
    pub(super) fn end_lease(&mut self) {
        self.lease_until_tick = 0;
        self.round_sent_tick.clear();
    }

    /// Every read still waiting, as (id, from), when leadership ends.
    fn drain(&mut self) -> Vec<(u64, NodeId)> {
        let mut all: Vec<(u64, NodeId)> = self.pending.drain(..).map(|r| (r.id, r.from)).collect();
        all.append(&mut self.waiting_for_term_commit);
        all
    }

    fn cancel(&mut self, id: u64) {
        self.pending.retain(|r| !(r.from == 0 && r.id == id));
        self.waiting_for_term_commit
            .retain(|(r, from)| !(*from == 0 && *r == id));
    }
}

impl Engine {
    /// Asks for a linearizable read (thesis section 6.4). `id` is the caller's handle for it;
    /// the answer arrives in [`super::Ready::read_states`] (or `failed_reads`). On a follower
    /// the request is forwarded to the leader.
    pub fn read_index(&mut self, id: u64) -> Result<(), EngineError> {
        if self.reads_len() >= self.config.pending_reads_max {
            return Err(EngineError::TooManyReads);
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.leader_read(id, 0);
                Ok(())
            }
            (Role::Follower, Some(leader)) => {
                self.forwarded_reads.insert(id, self.now_tick);
                self.send(leader, MessageBody::ReadIndexRequest { request_id: id });
                Ok(())
            }
            _ => Err(EngineError::NotLeader {
                leader: self.leader,
            }),
        }
    }

    /// Forgets a read the caller gave up on (it timed out): it no longer counts towards
    /// `pending_reads_max`, and an answer that arrives later is ignored.
    pub fn cancel_read(&mut self, id: u64) {
        self.forwarded_reads.remove(&id);
        if let Some(leading) = self.leading.as_mut() {
            leading.reads.cancel(id);
        }
    }

    /// Reads waiting here: forwarded ones, and a leader's own and its followers'.
    fn reads_len(&self) -> usize {
        self.forwarded_reads.len() + self.leading.as_ref().map_or(0, |l| l.reads.len())
    }

    /// Leader: registers a read from `from` (0 = this server).
    fn leader_read(&mut self, id: u64, from: NodeId) {
        let me = self.id;
        let alone = self.membership().is_quorum(|node| node == me);
        let committed = self.log.committed;
        let (now, lease_on) = (self.now_tick, self.config.lease_read);
        let leading = self.leading.as_mut().expect("leader_read on a leader");
        if committed < leading.term_start_index {
            leading.reads.waiting_for_term_commit.push((id, from));
            return;
        }
        // No lease while a transfer is under way: the target may win an election before the
        // lease would have run out.
        let leased = lease_on && leading.transfer.is_none() && now < leading.reads.lease_until_tick;
        if alone || leased {
            self.answer_read(id, from, committed);
            return;
        }
        let round = leading.reads.round + 1;
        leading.reads.pending.push_back(PendingRead {
            id,
            from,
            index: committed,
            round,
        });
        leading.reads.round_requested = true;
        leading.broadcast_pending = true;
    }

    pub(super) fn reads_pending_output(&self) -> bool {
        self.leading
            .as_ref()
            .is_some_and(|l| l.reads.round_requested())
    }

    fn answer_read(&mut self, id: u64, from: NodeId, index: LogIndex) {
        if from == 0 {
            self.ready.read_states.push(ReadState { id, index });
        } else {
            let body = MessageBody::ReadIndexResponse {
                request_id: id,
                read_index: Some(index),
            };
            self.send(from, body);
        }
    }

    /// Leader: starts a new heartbeat round (called when a round was requested, and on every
    /// heartbeat when leases are on).
    pub(super) fn next_round(&mut self) -> u64 {
        let (now, lease_on) = (self.now_tick, self.config.lease_read);
        let reads = &mut self.leading.as_mut().expect("leader").reads;
        reads.round += 1;
        if lease_on {
            reads.round_sent_tick.insert(reads.round, now);
        }
        reads.round
    }

    /// Leader: answers the reads whose round a quorum has acknowledged, and extends the lease.
    pub(super) fn confirm_reads(&mut self) {
        let committed = self.log.committed;
        let Some(leading) = self.leading.as_mut() else {
            return;
        };
        if committed >= leading.term_start_index {
            for (id, from) in std::mem::take(&mut leading.reads.waiting_for_term_commit) {
                self.leader_read(id, from);
            }
        }
        let me = self.id;
        let leading = self.leading.as_ref().expect("still leading");
        let my_round = leading.reads.round;
        let acked = self.membership().committed_index(|id| {
            if id == me {
                my_round
            } else {
                leading.progress.get(&id).map_or(0, |p| p.acked_round)
            }
        });
        while let Some(read) = self.pop_confirmed_read(acked) {
            self.answer_read(read.id, read.from, read.index);
        }
        self.extend_lease(acked);
    }

    /// The oldest pending read if a quorum has acknowledged its round.
    fn pop_confirmed_read(&mut self, acked_round: u64) -> Option<PendingRead> {
        let pending = &mut self.leading.as_mut()?.reads.pending;
        if pending.front()?.round > acked_round {
            return None;
        }
        pending.pop_front()
    }

    fn extend_lease(&mut self, acked_round: u64) {
        if !self.config.lease_read {
            return;
        }
        let lease = self.config.election_ticks_min - self.config.lease_margin_ticks;
        let leading = self.leading.as_mut().expect("leader");
        let reads = &mut leading.reads;
        let sent = reads
            .round_sent_tick
            .range(..=acked_round)
            .next_back()
            .map(|(_, t)| *t);
        if let Some(sent_tick) = sent.filter(|_| leading.transfer.is_none()) {
            reads.lease_until_tick = reads.lease_until_tick.max(sent_tick + lease);
        }
        reads.round_sent_tick = reads.round_sent_tick.split_off(&(acked_round + 1));
    }

    /// When leadership ends: this server's reads fail, and followers whose reads were waiting
    /// are told at once (they would otherwise wait for their timeout).
    pub(super) fn fail_leader_reads(&mut self, mut reads: LeaderReads) {
        for (id, from) in reads.drain() {
            if from == 0 {
                self.ready.failed_reads.push(id);
            } else {
                let body = MessageBody::ReadIndexResponse {
                    request_id: id,
                    read_index: None,
                };
                self.send(from, body);
            }
        }
    }

    /// Follower: the reads it forwarded can no longer be answered (the leader changed, or
    /// this server campaigns).
    pub(super) fn fail_forwarded_reads(&mut self) {
        let failed = std::mem::take(&mut self.forwarded_reads);
        self.ready.failed_reads.extend(failed.into_keys());
    }

    /// Follower: resends forwarded reads that went unanswered for a while.
    pub(super) fn resend_forwarded_reads(&mut self) {
        let Some(leader) = self.leader.filter(|_| self.role == Role::Follower) else {
            return;
        };
        let wait = self.config.heartbeat_ticks * FORWARDED_READ_RESEND_HEARTBEATS;
        let now = self.now_tick;
        let due: Vec<u64> = self
            .forwarded_reads
            .iter()
            .filter(|(_, sent)| now.saturating_sub(**sent) >= wait)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            debug!(
                id = self.id,
                leader,
                read = id,
                "resending a forwarded read"
            );
            self.forwarded_reads.insert(id, now);
            self.send(leader, MessageBody::ReadIndexRequest { request_id: id });
        }
    }

    pub(super) fn handle_read_index_request(&mut self, from: NodeId, request_id: u64) {
        if self.role != Role::Leader || self.reads_len() >= self.config.pending_reads_max {
            let body = MessageBody::ReadIndexResponse {
                request_id,
                read_index: None,
            };
            self.send(from, body);
            return;
        }
        self.leader_read(request_id, from);
    }

    pub(super) fn handle_read_index_response(
        &mut self,
        from: NodeId,
        request_id: u64,
        read_index: Option<LogIndex>,
    ) {
        if self.leader != Some(from) || self.forwarded_reads.remove(&request_id).is_none() {
            debug!(
                id = self.id,
                from, request_id, "unexpected ReadIndexResponse"
            );
            return;
        }
        match read_index {
            Some(index) => self.ready.read_states.push(ReadState {
                id: request_id,
                index,
            }),
            None => self.ready.failed_reads.push(request_id),
        }
    }
}
