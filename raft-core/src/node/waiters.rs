//! The callers waiting for the node: proposals for their entry to be applied, reads for their
//! read index to be confirmed and applied, membership changes, leadership transfers and
//! snapshots for their outcome. Every one is answered exactly once: with its result, with an
//! error when it can no longer happen here, or when the node stops.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::raft::{MembershipChange, RaftError};
use crate::engine::ReadState;
use crate::membership::Membership;
use crate::metrics::Histogram;
use crate::types::{Entry, LogId, LogIndex, NodeId, Term};

/// Where the answer to a caller goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, RaftError>>;

/// Where a proposal's response goes.
pub(crate) type Responder = Reply<Bytes>;

#[derive(Default)]
pub(super) struct Waiters {
    /// Proposals waiting for their entry to be applied: index -> (term, reply, when it was
    /// accepted).
    proposals: BTreeMap<LogIndex, (Term, Responder, Instant)>,
    /// Proposals whose entries were handed to the state machine, in log order: (index, when
    /// accepted), until the state machine reports them applied (for the latency histogram).
    /// At most as many as proposals were waiting, which the engine's limits bound.
    handed_over: VecDeque<(LogIndex, Instant)>,
    next_read_id: u64,
    /// Reads waiting for their read index.
    reads_waiting: BTreeMap<u64, Reply<LogIndex>>,
    /// Reads with a known index, waiting for the state machine: (index, reply).
    reads_ready: VecDeque<(LogIndex, Reply<LogIndex>)>,
    membership: Vec<(MembershipChange, Reply<()>)>,
    transfers: Vec<(NodeId, Reply<()>)>,
    snapshots: Vec<Reply<LogId>>,
}

impl Waiters {
    pub(super) fn proposals_waiting(&self) -> u64 {
        self.proposals.len() as u64
    }

    pub(super) fn reads_waiting(&self) -> u64 {
        (self.reads_waiting.len() + self.reads_ready.len()) as u64
    }

    pub(super) fn add_proposal(&mut self, log_id: LogId, reply: Responder, now: Instant) {
        self.proposals
            .insert(log_id.index, (log_id.term, reply, now));
    }

    /// A fresh id for `Engine::read_index`.
    pub(super) fn next_read_id(&mut self) -> u64 {
        self.next_read_id += 1;
        self.next_read_id
    }

    pub(super) fn add_read(&mut self, id: u64, reply: Reply<LogIndex>) {
        self.reads_waiting.insert(id, reply);
    }

    pub(super) fn add_membership_change(&mut self, change: MembershipChange, reply: Reply<()>) {
        self.membership.push((change, reply));
    }

    pub(super) fn add_transfer(&mut self, target: NodeId, reply: Reply<()>) {
        self.transfers.push((target, reply));
    }

    pub(super) fn add_snapshot(&mut self, reply: Reply<LogId>) {
        self.snapshots.push(reply);
    }

    /// Pairs committed entries with the proposals waiting for them. A proposal whose index
    /// holds another term's entry lost its place: its outcome is unknown to us.
    pub(super) fn responders_for(&mut self, entries: &[Entry]) -> Vec<Option<Responder>> {
        entries
            .iter()
            .map(|entry| {
                let (term, reply, accepted_at) = self.proposals.remove(&entry.index)?;
                if term == entry.term {
                    self.handed_over.push_back((entry.index, accepted_at));
                    Some(reply)
                } else {
                    let _ = reply.send(Err(RaftError::OutcomeUnknown(
                        "replaced by another leader's entry".into(),
                    )));
                    None
                }
            })
            .collect()
    }

    /// Entries a new leader truncated before they committed: their proposals may still
    /// commit elsewhere (a copy on a majority), or never.
    pub(super) fn fail_rolled_back(&mut self, rolled_back: &[Entry]) {
        for entry in rolled_back {
            let mine = self
                .proposals
                .get(&entry.index)
                .is_some_and(|(term, ..)| *term == entry.term);
            if mine {
                let (_, reply, _) = self.proposals.remove(&entry.index).expect("present");
                let why = "entry truncated by a new leader; it may still commit elsewhere";
                let _ = reply.send(Err(RaftError::OutcomeUnknown(why.into())));
            }
        }
    }

    /// A snapshot up to `upto` replaced the log: proposals at or below it will never be
    /// applied one by one here, so their outcome cannot be told.
    pub(super) fn fail_skipped(&mut self, upto: LogId) {
        let above = self.proposals.split_off(&(upto.index + 1));
        for (_, (_, reply, _)) in std::mem::replace(&mut self.proposals, above) {
            let why = "a snapshot from the leader replaced the entry before it was applied here";
            let _ = reply.send(Err(RaftError::OutcomeUnknown(why.into())));
        }
    }

    /// Reads whose index is now known wait for the state machine; failed reads are answered.
    pub(super) fn reads_known(
        &mut self,
        read_states: Vec<ReadState>,
        failed_reads: Vec<u64>,
        not_leader: impl Fn() -> RaftError,
    ) {
        for read in read_states {
            if let Some(reply) = self.reads_waiting.remove(&read.id) {
                self.reads_ready.push_back((read.index, reply));
            }
        }
        for id in failed_reads {
            if let Some(reply) = self.reads_waiting.remove(&id) {
                let _ = reply.send(Err(not_leader()));
            }
        }
    }

    /// The state machine applied everything up to `applied`: the proposals handed over up
    /// to there were answered; records how long each took since it was accepted.
    pub(super) fn proposals_applied(
        &mut self,
        applied: LogIndex,
        now: Instant,
        latency_us: &mut Histogram,
    ) {
        while let Some(&(index, accepted_at)) = self.handed_over.front() {
            if index > applied {
                break;
            }
            latency_us.record_duration(now.saturating_duration_since(accepted_at));
            self.handed_over.pop_front();
        }
    }

    /// Answers the reads whose index the state machine has applied.
    pub(super) fn answer_reads(&mut self, applied: LogIndex) {
        let mut waiting = VecDeque::new();
        for (index, reply) in self.reads_ready.drain(..) {
            if index <= applied {
                let _ = reply.send(Ok(index));
            } else {
                waiting.push_back((index, reply));
            }
        }
        self.reads_ready = waiting;
    }

    /// Answers membership changes that the committed configuration shows done; while not
    /// leading, the others have an unknown outcome (they may commit under the next leader).
    pub(super) fn check_membership_changes(&mut self, committed: &Membership, leading: bool) {
        for (change, reply) in std::mem::take(&mut self.membership) {
            if change.is_done(committed) {
                let _ = reply.send(Ok(()));
            } else if !leading {
                let why = "leadership lost while the change was pending";
                let _ = reply.send(Err(RaftError::OutcomeUnknown(why.into())));
            } else {
                self.membership.push((change, reply));
            }
        }
    }

    /// Answers transfers whose target now leads.
    pub(super) fn check_transfers(&mut self, leader: Option<NodeId>) {
        for (target, reply) in std::mem::take(&mut self.transfers) {
            if leader == Some(target) {
                let _ = reply.send(Ok(()));
            } else {
                self.transfers.push((target, reply));
            }
        }
    }

    /// A snapshot build ended.
    pub(super) fn snapshot_built(&mut self, result: Result<LogId, RaftError>) {
        for reply in self.snapshots.drain(..) {
            let _ = reply.send(result.clone());
        }
    }

    /// Drops the waiters whose caller gave up (timed out); returns the ids of such reads, for
    /// `Engine::cancel_read`.
    pub(super) fn prune(&mut self) -> Vec<u64> {
        self.membership.retain(|(_, reply)| !reply.is_closed());
        self.transfers.retain(|(_, reply)| !reply.is_closed());
        self.snapshots.retain(|reply| !reply.is_closed());
        let gone: Vec<u64> = self
            .reads_waiting
            .iter()
            .filter(|(_, reply)| reply.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.reads_waiting.remove(id);
        }
        self.reads_ready.retain(|(_, reply)| !reply.is_closed());
        gone
    }

    /// The node stops: every waiter is answered with `error`, proposals with an unknown
    /// outcome (their entries may commit without this node).
    pub(super) fn fail_all(&mut self, error: &RaftError) {
        for (_, (_, reply, _)) in std::mem::take(&mut self.proposals) {
            let _ = reply.send(Err(RaftError::OutcomeUnknown("node stopped".into())));
        }
        self.handed_over.clear();
        for (_, reply) in std::mem::take(&mut self.reads_waiting) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.reads_ready.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.membership.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.transfers.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
        for reply in self.snapshots.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(
        waiters: &mut Waiters,
        term: Term,
        index: LogIndex,
    ) -> oneshot::Receiver<Result<Bytes, RaftError>> {
        let (tx, rx) = oneshot::channel();
        waiters.add_proposal(LogId::new(term, index), tx, Instant::now());
        rx
    }

    /// Proposals whose entries a snapshot replaced are answered (their outcome unknown),
    /// those after it keep waiting. (They used to wait until their caller timed out, and
    /// stayed in the node after that.)
    #[test]
    fn proposals_a_snapshot_skips_are_answered() {
        let mut waiters = Waiters::default();
        let mut skipped = proposal(&mut waiters, 2, 5);
        let mut at_snapshot = proposal(&mut waiters, 2, 7);
        let mut later = proposal(&mut waiters, 2, 8);
        waiters.fail_skipped(LogId::new(3, 7));
        for rx in [&mut skipped, &mut at_snapshot] {
            assert!(matches!(
                rx.try_recv(),
                Ok(Err(RaftError::OutcomeUnknown(_)))
            ));
        }
        assert!(later.try_recv().is_err(), "still waiting");
        assert_eq!(waiters.proposals_waiting(), 1);
    }

    /// Each proposal handed to the state machine is timed once, from its acceptance to the
    /// report that its index was applied; a proposal whose place another term's entry took
    /// is not timed.
    #[test]
    fn applied_proposals_are_timed_once_from_their_acceptance() {
        let mut waiters = Waiters::default();
        let accepted_at = Instant::now();
        let mut answers = Vec::new();
        for index in 1..=3 {
            let (tx, rx) = oneshot::channel();
            waiters.add_proposal(LogId::new(1, index), tx, accepted_at);
            answers.push(rx);
        }
        let entries = [
            Entry::normal(1, 1, Bytes::new()),
            Entry::normal(2, 2, Bytes::new()),
            Entry::normal(1, 3, Bytes::new()),
        ];
        let responders = waiters.responders_for(&entries);
        assert_eq!(responders.iter().filter(|r| r.is_some()).count(), 2);
        let mut latency_us = Histogram::microseconds();
        let ms = std::time::Duration::from_millis;
        waiters.proposals_applied(2, accepted_at + ms(3), &mut latency_us);
        assert_eq!((latency_us.count(), latency_us.max()), (1, 3_000));
        waiters.proposals_applied(3, accepted_at + ms(5), &mut latency_us);
        waiters.proposals_applied(3, accepted_at + ms(9), &mut latency_us);
        assert_eq!((latency_us.count(), latency_us.max()), (2, 5_000));
    }

    /// Entries rolled back answer only the proposals of the same term at their index.
    #[test]
    fn rolled_back_entries_answer_their_own_proposals_only() {
        let mut waiters = Waiters::default();
        let mut mine = proposal(&mut waiters, 2, 5);
        let mut other = proposal(&mut waiters, 3, 6);
        let rolled_back = [
            Entry::normal(2, 5, Bytes::new()),
            Entry::normal(2, 6, Bytes::new()),
        ];
        waiters.fail_rolled_back(&rolled_back);
        assert!(matches!(
            mine.try_recv(),
            Ok(Err(RaftError::OutcomeUnknown(_)))
        ));
        assert!(other.try_recv().is_err());
    }
}
