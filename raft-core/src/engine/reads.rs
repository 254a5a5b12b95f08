//! Linearizable reads with ReadIndex (thesis section 6.4), on the leader or forwarded from a
//! follower, and optional lease-based reads (thesis 6.4.1).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tracing::debug;

use super::{Engine, EngineError, Role};
use crate::message::MessageBody;
use crate::types::{LogIndex, NodeId};

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
    /// Who asked: this server, or a follower that forwarded the read.
    from: NodeId,
    index: LogIndex,
    /// The heartbeat round whose quorum acknowledgement confirms leadership.
    round: u64,
}

/// Reads waiting for confirmation, and the heartbeat round counter.
#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    /// The latest round sent. Acknowledgements echo it.
    round: u64,
    /// A new round should be broadcast before the next `Ready`.
    round_requested: bool,
    /// Leader: reads waiting for their round to be acknowledged by a quorum.
    pending: VecDeque<PendingRead>,
    /// Leader: reads that arrived before an entry of this term was committed (the leader does
    /// not know the commit index until then).
    waiting_for_term_commit: Vec<(u64, NodeId)>,
    /// Follower: reads forwarded to the leader.
    forwarded: BTreeSet<u64>,
    /// Leader with leases: the tick at which each recent round was sent.
    round_sent_tick: BTreeMap<u64, u64>,
    /// Leader with leases: the lease is valid before this tick.
    lease_until_tick: u64,
}

impl ReadQueue {
    pub(super) fn round(&self) -> u64 {
        self.round
    }

    /// Whether a round was requested; starts it (increments the counter) if so.
    pub(super) fn take_round_request(&mut self) -> bool {
        std::mem::take(&mut self.round_requested)
    }

    fn len(&self) -> usize {
        self.pending.len() + self.waiting_for_term_commit.len() + self.forwarded.len()
    }

    pub(super) fn round_requested(&self) -> bool {
        self.round_requested
    }

    /// Every read that can no longer be answered here (leadership or leader changed).
    pub(super) fn fail_all(&mut self) -> Vec<u64> {
        let mut failed: Vec<u64> = self.forwarded.iter().copied().collect();
        self.forwarded.clear();
        failed.extend(self.pending.drain(..).filter(|r| r.from == 0).map(|r| r.id));
        failed.extend(
            self.waiting_for_term_commit
                .drain(..)
                .filter(|r| r.1 == 0)
                .map(|r| r.0),
        );
        self.round_requested = false;
        self.lease_until_tick = 0;
        self.round_sent_tick.clear();
        failed
    }
}

impl Engine {
    /// Asks for a linearizable read (thesis section 6.4). `id` is the caller's handle for it;
    /// the answer arrives in [`super::Ready::read_states`] (or `failed_reads`). On a follower
    /// the request is forwarded to the leader.
    pub fn read_index(&mut self, id: u64) -> Result<(), EngineError> {
        if self.reads.len() >= self.config.pending_reads_max {
            return Err(EngineError::TooManyReads);
        }
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                self.leader_read(id, 0);
                Ok(())
            }
            (Role::Follower, Some(leader)) => {
                self.reads.forwarded.insert(id);
                self.send(leader, MessageBody::ReadIndexRequest { request_id: id });
                Ok(())
            }
            _ => Err(EngineError::NotLeader {
                leader: self.leader,
            }),
        }
    }

    /// Leader: registers a read from `from` (0 = this server).
    fn leader_read(&mut self, id: u64, from: NodeId) {
        if self.log.committed < self.term_start_index {
            self.reads.waiting_for_term_commit.push((id, from));
            return;
        }
        let index = self.log.committed;
        let me = self.id;
        let alone = self.membership().is_quorum(|node| node == me);
        if alone || (self.config.lease_read && self.now_tick < self.reads.lease_until_tick) {
            self.answer_read(id, from, index);
            return;
        }
        let round = self.reads.round + 1;
        self.reads.pending.push_back(PendingRead {
            id,
            from,
            index,
            round,
        });
        self.reads.round_requested = true;
        self.broadcast_pending = true;
    }

    pub(super) fn reads_pending_output(&self) -> bool {
        self.reads.round_requested()
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

    /// Starts a new heartbeat round (called when a round was requested, and on every
    /// heartbeat when leases are on).
    pub(super) fn next_round(&mut self) -> u64 {
        self.reads.round += 1;
        if self.config.lease_read {
            self.reads
                .round_sent_tick
                .insert(self.reads.round, self.now_tick);
        }
        self.reads.round
    }

    /// Leader: answers the reads whose round a quorum has acknowledged, and extends the lease.
    pub(super) fn confirm_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.log.committed >= self.term_start_index {
            for (id, from) in std::mem::take(&mut self.reads.waiting_for_term_commit) {
                self.leader_read(id, from);
            }
        }
        let me = self.id;
        let my_round = self.reads.round;
        let acked = {
            let progress = &self.progress;
            self.membership().committed_index(|id| {
                if id == me {
                    my_round
                } else {
                    progress.get(&id).map_or(0, |p| p.acked_round)
                }
            })
        };
        while self.reads.pending.front().is_some_and(|r| r.round <= acked) {
            let read = self.reads.pending.pop_front().expect("front exists");
            self.answer_read(read.id, read.from, read.index);
        }
        self.extend_lease(acked);
    }

    fn extend_lease(&mut self, acked_round: u64) {
        if !self.config.lease_read {
            return;
        }
        let sent = self
            .reads
            .round_sent_tick
            .range(..=acked_round)
            .next_back()
            .map(|(_, t)| *t);
        if let Some(sent_tick) = sent {
            let lease = self.config.election_ticks_min - self.config.lease_margin_ticks;
            self.reads.lease_until_tick = self.reads.lease_until_tick.max(sent_tick + lease);
        }
        self.reads.round_sent_tick = self.reads.round_sent_tick.split_off(&(acked_round + 1));
    }

    pub(super) fn handle_read_index_request(&mut self, from: NodeId, request_id: u64) {
        if self.role != Role::Leader || self.reads.len() >= self.config.pending_reads_max {
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
        if self.leader != Some(from) || !self.reads.forwarded.remove(&request_id) {
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
