//! Membership changes: learners, single-server changes, joint consensus (paper section 6,
//! thesis chapter 4), and jraft's catch-up of a new server before it votes.

use std::collections::BTreeSet;

use tracing::info;

use super::progress::Progress;
use super::{Engine, EngineError, Role};
use crate::membership::Membership;
use crate::types::{Entry, LogId, NodeId};

impl Engine {
    /// Leader: proposes `target` as the new configuration. A change of at most one voter is
    /// made directly; anything bigger goes through a joint configuration that is left
    /// automatically once committed. Returns the id of the configuration entry.
    ///
    /// Refused while another change is uncommitted or before the leader has committed an
    /// entry of its own term (thesis 4.1, the fix for the single-server change bug).
    pub fn change_membership(&mut self, target: Membership) -> Result<LogId, EngineError> {
        self.check_can_change()?;
        target
            .validate()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        if target.is_joint() {
            return Err(EngineError::Invalid("the target must not be joint".into()));
        }
        let current = self.membership().clone();
        let changed: BTreeSet<NodeId> = current
            .voters
            .symmetric_difference(&target.voters)
            .copied()
            .collect();
        let next = if changed.len() <= 1 {
            target
        } else {
            // In the joint configuration the old voters still vote, so none of them can be
            // listed as a learner yet, and the configuration format has no place for
            // "learner once the joint configuration is left". Demote in a change of its own.
            if let Some(demoted) = target
                .learners
                .iter()
                .find(|id| current.voters.contains(id))
            {
                return Err(EngineError::Invalid(format!(
                    "voter {demoted} cannot become a learner in a joint change; \
                     demote it in a change of its own"
                )));
            }
            Membership {
                voters_outgoing: current.voters.clone(),
                ..target
            }
        };
        Ok(self.append_config(next))
    }

    /// Leader: adds `id` as a learner (it receives the log but does not vote).
    pub fn add_learner(&mut self, id: NodeId, address: String) -> Result<LogId, EngineError> {
        self.check_can_change()?;
        let mut next = self.membership().clone();
        if next.is_voter(id) {
            return Err(EngineError::Invalid(format!("{id} is already a voter")));
        }
        next.learners.insert(id);
        next.addresses.insert(id, address);
        next.validate()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        Ok(self.append_config(next))
    }

    /// Leader: adds `id` as a voter the safe way: as a learner first, promoted automatically
    /// once its log is within `catchup_gap_entries` of the leader's. One server catches up at
    /// a time (jraft bug 11). Returns the id of the first configuration entry; the change is
    /// complete when a committed configuration lists `id` as a voter.
    pub fn add_voter(&mut self, id: NodeId, address: String) -> Result<LogId, EngineError> {
        if self.role != Role::Leader {
            return Err(EngineError::NotLeader {
                leader: self.leader,
            });
        }
        if let Some(other) = self.leading().catching_up {
            if other != id {
                return Err(EngineError::ChangeInProgress);
            }
        }
        if self.membership().is_voter(id) {
            return Err(EngineError::Invalid(format!("{id} is already a voter")));
        }
        let log_id = if self.membership().is_learner(id) {
            self.check_can_change()?;
            self.log.last_log_id()
        } else {
            self.add_learner(id, address)?
        };
        self.leading_mut().catching_up = Some(id);
        self.maybe_promote_catching_up(id);
        Ok(log_id)
    }

    /// Leader: removes `id` (voter or learner). Removing the leader itself is allowed: it
    /// keeps leading until the change commits, then steps down (thesis 4.2.2).
    pub fn remove_server(&mut self, id: NodeId) -> Result<LogId, EngineError> {
        self.check_can_change()?;
        let mut next = self.membership().clone();
        if !next.contains(id) {
            return Err(EngineError::Invalid(format!("{id} is not a member")));
        }
        next.voters.remove(&id);
        next.learners.remove(&id);
        next.addresses.remove(&id);
        if next.voters.is_empty() {
            return Err(EngineError::Invalid("cannot remove the last voter".into()));
        }
        let leading = self.leading_mut();
        if leading.catching_up == Some(id) {
            leading.catching_up = None;
        }
        Ok(self.append_config(next))
    }

    fn check_can_change(&self) -> Result<(), EngineError> {
        if self.role != Role::Leader {
            return Err(EngineError::NotLeader {
                leader: self.leader,
            });
        }
        let leading = self.leading();
        if let Some((target, _)) = leading.transfer {
            return Err(EngineError::TransferInProgress(target));
        }
        if self.log.committed < leading.term_start_index {
            return Err(EngineError::NotReady);
        }
        if !self.pending_configs.is_empty() || self.membership().is_joint() {
            return Err(EngineError::ChangeInProgress);
        }
        Ok(())
    }

    pub(super) fn append_config(&mut self, next: Membership) -> LogId {
        let index = self.log.last_index() + 1;
        info!(id = self.id, index, membership = %next, "proposing configuration");
        let entry = Entry::membership(self.term, index, &next);
        let log_id = entry.log_id();
        self.append_as_leader(vec![entry]);
        log_id
    }

    /// Leader: promotes the catching-up learner once it is close enough.
    pub(super) fn maybe_promote_catching_up(&mut self, peer: NodeId) {
        if self.check_can_change().is_err() || self.leading().catching_up != Some(peer) {
            return;
        }
        let Some(p) = self.leading().progress.get(&peer) else {
            return;
        };
        // Only a learner that has answered successfully (Replicate) counts as caught up: with a
        // short leader log, a silent learner's gap would otherwise look small.
        let gap = self.log.last_index().saturating_sub(p.match_index);
        if gap > self.config.catchup_gap_entries || p.state != super::ReplicationState::Replicate {
            return;
        }
        let mut next = self.membership().clone();
        next.learners.remove(&peer);
        next.voters.insert(peer);
        info!(
            id = self.id,
            peer, gap, "learner caught up; promoting to voter"
        );
        self.leading_mut().catching_up = None;
        self.append_config(next);
    }

    /// Leader: keeps one progress entry per member other than itself. Members of the committed
    /// configuration stay until a configuration without them commits, so that a server being
    /// removed still receives the entry that removes it (and stops campaigning, jraft bug 17).
    pub(super) fn sync_progress_with_membership(&mut self) {
        let members: BTreeSet<NodeId> = self
            .membership()
            .all_members()
            .chain(self.committed_membership.1.all_members())
            .filter(|id| *id != self.id)
            .collect();
        let next = self.log.last_index() + 1;
        let progress = &mut self.leading_mut().progress;
        progress.retain(|id, _| members.contains(id));
        for id in members {
            progress.entry(id).or_insert_with(|| Progress::new(next));
        }
    }

    /// Leader: servers that the newly committed configuration removed get one last
    /// AppendEntries carrying the commit index, so they learn that their removal committed and stop
    /// campaigning (a server stays promotable while its committed configuration lists it).
    fn notify_removed_servers(&mut self) {
        let removed: Vec<NodeId> = self
            .leading()
            .progress
            .keys()
            .copied()
            .filter(|id| {
                !self.membership().contains(*id) && !self.committed_membership.1.contains(*id)
            })
            .collect();
        for peer in removed {
            // Probe from its match index: the entries (including the one that removes it, if
            // it fits in one message) and the commit index travel together.
            self.leading_mut().peer_mut(peer).become_probe();
            self.send_append(peer, true);
        }
    }

    /// Leader: a configuration entry committed. Leave a joint configuration, finish a pending
    /// catch-up, or step down if this server is no longer a voter.
    pub(super) fn on_membership_committed(&mut self) {
        self.notify_removed_servers();
        self.sync_progress_with_membership();
        let committed = self.committed_membership.1.clone();
        if !self.pending_configs.is_empty() {
            return;
        }
        if committed.is_joint() {
            self.append_config(committed.leave_joint());
            return;
        }
        if !committed.is_voter(self.id) {
            info!(
                id = self.id,
                "removed from the configuration; stepping down"
            );
            self.become_follower(self.term, None);
            return;
        }
        if let Some(peer) = self.leading().catching_up {
            self.maybe_promote_catching_up(peer);
        }
    }
}
