//! Leader election (paper section 5.2), pre-vote (thesis 9.6), check-quorum and leader
//! stickiness (thesis 6.2, 4.2.3) and leadership transfer (thesis 3.10).

use tracing::{debug, info};

use super::leader::Leading;
use super::{all_voters, Engine, EngineError, Role};
use crate::message::MessageBody;
use crate::types::{Entry, LogId, NodeId, Term};

impl Engine {
    /// Followers and candidates: count towards the election timeout.
    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_ticks {
            if self.promotable() {
                self.start_election(false);
            } else {
                self.reset_election_timer();
            }
        }
    }

    /// Starts a pre-vote round, or an election if pre-vote is off or this is a transfer.
    pub(super) fn start_election(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.campaign(true, false);
        } else {
            self.campaign(false, transfer);
        }
    }

    fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        self.reset_election_timer();
        self.votes.clear();
        self.leader = None;
        self.stop_leading();
        // Reads forwarded to the old leader cannot be answered any more: fail them now
        // rather than at their timeout (and never let them pile up if this server wins).
        self.fail_forwarded_reads();
        let term = if pre_vote {
            self.campaigns.pre_votes += 1;
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.campaigns.elections += 1;
            self.role = Role::Candidate;
            self.set_hard_state(self.term + 1, Some(self.id));
            self.term
        };
        info!(id = self.id, term, pre_vote, transfer, "campaigning");
        self.votes.insert(self.id, true);
        if self.tally_votes(pre_vote) {
            return;
        }
        let last_log_id = self.log.last_log_id();
        for peer in all_voters(self.membership()) {
            if peer == self.id {
                continue;
            }
            let body = MessageBody::VoteRequest {
                last_log_id,
                pre_vote,
                transfer,
            };
            let msg = crate::message::Message {
                from: self.id,
                to: peer,
                term,
                body,
            };
            if pre_vote {
                self.ready.messages.push(msg);
            } else {
                // Our vote for ourselves must be durable before anyone counts on it.
                self.ready.persisted_messages.push(msg);
            }
        }
    }

    /// Checks the votes; wins or loses the round when decided. Returns whether decided.
    fn tally_votes(&mut self, pre_vote: bool) -> bool {
        let membership = self.membership();
        let won = membership.is_quorum(|id| self.votes.get(&id) == Some(&true));
        let lost = !membership.is_quorum(|id| self.votes.get(&id) != Some(&false));
        if won {
            if pre_vote {
                self.campaign(false, false);
            } else {
                self.become_leader();
            }
            return true;
        }
        if lost {
            info!(id = self.id, term = self.term, pre_vote, "election lost");
            self.become_follower(self.term, None);
            return true;
        }
        false
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_log_id: LogId,
        pre_vote: bool,
        transfer: bool,
    ) {
        // Section 5.4.1: only vote for a candidate whose log is at least as up to date. The
        // comparison uses the snapshot's term when the log is empty (jraft bug 4).
        let log_ok = last_log_id >= self.log.last_log_id();
        let free_to_vote = if pre_vote {
            term > self.term && (transfer || !self.in_leader_lease())
        } else {
            self.voted_for == Some(from) || (self.voted_for.is_none() && self.leader.is_none())
        };
        let granted = log_ok && free_to_vote;
        debug!(
            id = self.id,
            from, term, pre_vote, granted, log_ok, "vote request"
        );
        if granted && !pre_vote {
            self.set_hard_state(self.term, Some(from));
            self.reset_election_timer();
        }
        let reply_term = if pre_vote && granted { term } else { self.term };
        let body = MessageBody::VoteResponse { granted, pre_vote };
        self.ready.persisted_messages.push(crate::message::Message {
            from: self.id,
            to: from,
            term: reply_term,
            body,
        });
    }

    pub(super) fn handle_vote_response(
        &mut self,
        from: NodeId,
        term: Term,
        granted: bool,
        pre_vote: bool,
    ) {
        let expecting = match self.role {
            Role::PreCandidate => {
                pre_vote && (term == self.term + 1 || (!granted && term == self.term))
            }
            Role::Candidate => !pre_vote && term == self.term,
            _ => false,
        };
        if !expecting {
            // A pre-vote rejection carries the voter's own (equal) term; nothing to learn.
            return;
        }
        if !self.membership().is_voter(from) {
            return;
        }
        self.votes.insert(from, granted);
        self.tally_votes(pre_vote);
    }

    pub(super) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        info!(id = self.id, term = self.term, "became leader");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        // Every peer's match index starts from zero in a new term (jraft bug 2).
        let next = self.log.last_index() + 1;
        // Section 8: a new leader commits a blank entry of its own term, which also commits
        // everything before it (Figure 8 forbids counting replicas of older terms).
        self.leading = Some(Leading {
            term_start_index: next,
            ..Leading::default()
        });
        self.sync_progress_with_membership();
        // The configuration a cluster starts with lives only in its first servers' arguments
        // until a leader writes it down: the first leader's opening entry carries it, so that
        // a server replaying the log (one added later, above all) knows the configuration at
        // every index, and so do the snapshots it takes.
        let unwritten =
            self.committed_membership.0 == LogId::ZERO && self.pending_configs.is_empty();
        let opening = if unwritten {
            Entry::membership(self.term, next, &self.committed_membership.1)
        } else {
            Entry::blank(self.term, next)
        };
        self.append_as_leader(vec![opening]);
        // A committed joint configuration with nothing after it: the previous leader
        // committed it but died before its leave-joint entry spread. Leave it now, or no
        // change could ever be made again (etcd's auto-leave does the same).
        let committed = &self.committed_membership.1;
        if committed.is_joint() && self.pending_configs.is_empty() {
            let next = committed.leave_joint();
            self.append_config(next);
        }
    }

    /// Leader: a heartbeat period, check-quorum, transfer timeout, replication timeouts.
    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks_min {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                info!(
                    id = self.id,
                    term = self.term,
                    "stepping down: quorum not heard from"
                );
                self.become_follower(self.term, None);
                return;
            }
        }
        let limit = self.config.election_ticks_min;
        let leading = self.leading_mut();
        if let Some((target, elapsed)) = leading.transfer.as_mut() {
            *elapsed += 1;
            if *elapsed >= limit {
                let target = *target;
                leading.transfer = None;
                info!(id = self.id, target, "leadership transfer timed out");
            }
        }
        self.tick_snapshot_waits();
        self.expire_inflight();
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            if self.config.lease_read {
                self.next_round();
            }
            self.broadcast_heartbeat();
        }
    }

    /// Whether a quorum of voters was heard from in this check-quorum period. Resets the
    /// activity flags for the next period.
    fn quorum_active(&mut self) -> bool {
        let me = self.id;
        let progress = &self.leading().progress;
        let active = self
            .membership()
            .is_quorum(|id| id == me || progress.get(&id).is_some_and(|p| p.recent_active));
        for p in self.leading_mut().progress.values_mut() {
            p.recent_active = false;
        }
        active
    }

    /// Starts handing leadership to `target` (thesis 3.10): bring it up to date, then send
    /// TimeoutNow. Proposals are refused until the transfer ends; it is abandoned after an
    /// election timeout.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), EngineError> {
        if self.role != Role::Leader {
            return Err(EngineError::NotLeader {
                leader: self.leader,
            });
        }
        if target == self.id {
            return Ok(());
        }
        if !self.membership().is_voter(target) || !self.leading().progress.contains_key(&target) {
            return Err(EngineError::Invalid(format!("{target} is not a voter")));
        }
        info!(id = self.id, target, "transferring leadership");
        let last_index = self.log.last_index();
        let leading = self.leading_mut();
        leading.transfer = Some((target, 0));
        // The target may win an election before a lease would run out: no more lease reads.
        leading.reads.end_lease();
        let peer = leading.peer_mut(target);
        if peer.match_index == last_index {
            self.send(target, MessageBody::TimeoutNow);
        } else if peer.state != super::ReplicationState::Snapshot {
            // Probe from the match index at once: in-flight messages may have been lost, and
            // waiting for the replication timeout could use up the whole transfer window.
            peer.become_probe();
            self.send_append(target, true);
        }
        Ok(())
    }

    /// Sends TimeoutNow once the transfer target has every entry.
    pub(super) fn maybe_finish_transfer(&mut self, peer: NodeId) {
        // Not leading any more: the entry that commits with this answer may have removed us.
        let Some(leading) = self.leading.as_ref() else {
            return;
        };
        if leading.transfer.map(|(t, _)| t) == Some(peer)
            && leading.peer(peer).match_index == self.log.last_index()
        {
            self.send(peer, MessageBody::TimeoutNow);
        }
    }

    pub(super) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.leader != Some(from) || !self.promotable() {
            debug!(id = self.id, from, "TimeoutNow ignored");
            return;
        }
        info!(id = self.id, from, "TimeoutNow: starting election");
        self.start_election(true);
    }
}
