//! Log replication (paper section 5.3) with pipelining and flow control, the follower's
//! consistency check with conflict hints, and commitment (section 5.4.2).

use tracing::{debug, error, warn};

use super::progress::ReplicationState;
use super::{Engine, Role};
use crate::membership::Membership;
use crate::message::{ConflictHint, MessageBody};
use crate::types::{Entry, EntryKind, LogId, LogIndex, NodeId};

impl Engine {
    /// Leader: appends its own entries and schedules replication.
    pub(super) fn append_as_leader(&mut self, entries: Vec<Entry>) {
        for entry in &entries {
            if entry.kind == EntryKind::Membership {
                self.note_config_entry(entry);
            }
        }
        self.log.append(entries);
        self.leading_mut().broadcast_pending = true;
        // A single-voter cluster commits as soon as its own write is durable; that happens in
        // `on_persisted`.
    }

    /// Records a configuration entry that was just appended (it takes effect immediately,
    /// paper section 6).
    pub(super) fn note_config_entry(&mut self, entry: &Entry) {
        let membership = Membership::decode(&entry.data)
            .unwrap_or_else(|e| panic!("appending undecodable membership {}: {e}", entry.log_id()));
        self.pending_configs.push(super::PendingConfig {
            log_id: entry.log_id(),
            membership,
        });
        if self.role == Role::Leader {
            self.sync_progress_with_membership();
        }
    }

    /// Leader: sends whatever each peer may receive now; with a commit notice, also pings idle
    /// peers so they learn the new commit index at once (jraft's urgent commit).
    pub(super) fn flush_broadcast(&mut self) {
        let Some(leading) = self.leading.as_mut() else {
            return;
        };
        if !std::mem::take(&mut leading.broadcast_pending) {
            return;
        }
        if leading.reads.take_round_request() {
            self.next_round();
            self.broadcast_heartbeat();
            return;
        }
        let peers: Vec<NodeId> = leading.progress.keys().copied().collect();
        for peer in peers {
            let sent = self.send_append(peer, false);
            let p = self.leading().peer(peer);
            // An idle peer in sync gets a heartbeat that carries the new commit index. (Its
            // match index says nothing about the commit index it knows: a peer holding every
            // entry is exactly the one that needs the notice.)
            if !sent && p.is_idle() && p.state == ReplicationState::Replicate {
                self.send_heartbeat(peer);
            }
        }
    }

    /// Leader: a heartbeat to every peer (retrying probes), carrying the current read round.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let peers: Vec<NodeId> = self.leading().progress.keys().copied().collect();
        for peer in peers {
            let p = self.leading_mut().peer_mut(peer);
            if p.state == ReplicationState::Probe {
                p.probe_sent = false;
                if self.send_append(peer, true) {
                    continue;
                }
            }
            if !self.send_append(peer, false) {
                self.send_heartbeat(peer);
            }
        }
    }

    /// A heartbeat: an AppendEntries without entries whose `prev_log_id` is the peer's match
    /// index, so it always passes the consistency check and the follower's commit cap is exact.
    fn send_heartbeat(&mut self, peer: NodeId) {
        let leading = self.leading();
        let match_index = leading.peer(peer).match_index;
        let prev_log_id = self.log.log_id_at(match_index).unwrap_or(LogId::ZERO);
        let body = MessageBody::AppendEntries {
            prev_log_id,
            entries: Vec::new(),
            leader_commit: self.log.committed,
            round: leading.reads.round(),
        };
        self.send(peer, body);
    }

    /// Sends the next batch of entries to `peer` if flow control allows. With `allow_empty` a
    /// probe without entries is sent too. Returns whether a message was sent. Switches the
    /// peer to snapshot mode when its next entry was compacted away, and asks for the entries
    /// to be read back from the log store when their payloads are no longer in memory.
    pub(super) fn send_append(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let (messages_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        let Some(leading) = self.leading.as_ref() else {
            return false;
        };
        let round = leading.reads.round();
        let Some(p) = leading.progress.get(&peer) else {
            return false;
        };
        if !p.can_send(messages_max, bytes_max) {
            return false;
        }
        let next = p.next_index;
        if next <= self.log.offset().index {
            self.start_snapshot_transfer(peer);
            return false;
        }
        let entries = self.log.slice(
            next,
            self.log.last_index() + 1,
            self.config.entries_per_message_max,
            self.config.message_bytes_max,
        );
        match entries {
            Ok(entries) if entries.is_empty() && !allow_empty => false,
            Ok(entries) => {
                self.send_entries(peer, next, entries, round);
                true
            }
            Err(evicted) => {
                self.fetch_for(peer, evicted);
                false
            }
        }
    }

    /// Sends `entries` (starting at `next`; possibly none) to `peer` and records them in
    /// flight.
    pub(super) fn send_entries(
        &mut self,
        peer: NodeId,
        next: LogIndex,
        entries: Vec<Entry>,
        round: u64,
    ) {
        let prev_log_id = self
            .log
            .log_id_at(next - 1)
            .expect("prev of next is in the log");
        let last_index = prev_log_id.index + entries.len() as u64;
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let body = MessageBody::AppendEntries {
            prev_log_id,
            entries,
            leader_commit: self.log.committed,
            round,
        };
        self.send(peer, body);
        let now = self.now_tick;
        self.leading_mut()
            .peer_mut(peer)
            .on_sent(last_index, bytes, now);
    }

    /// Leader: peers whose oldest in-flight message went unanswered too long are probed again.
    pub(super) fn expire_inflight(&mut self) {
        let (now, timeout) = (self.now_tick, self.config.replication_timeout_ticks);
        let expired: Vec<NodeId> = self
            .leading()
            .progress
            .iter()
            .filter(|(_, p)| p.inflight_expired(now, timeout))
            .map(|(id, _)| *id)
            .collect();
        for peer in expired {
            debug!(
                id = self.id,
                peer, "in-flight AppendEntries timed out; probing"
            );
            self.leading_mut().peer_mut(peer).become_probe();
            self.send_append(peer, true);
        }
    }

    /// Follower: the consistency check and append (paper Figure 2, AppendEntries receiver).
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        prev_log_id: LogId,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        round: u64,
    ) {
        if self.role == Role::Leader {
            // Two leaders in one term would violate election safety; never trust such a message.
            error!(
                id = self.id,
                from,
                term = self.term,
                "AppendEntries from another leader"
            );
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        let (prev_log_id, entries) = self.skip_compacted(prev_log_id, entries);
        if !self.log.matches(prev_log_id) {
            let conflict = self.conflict_hint(prev_log_id.index);
            debug!(id = self.id, from, %prev_log_id, ?conflict, "consistency check failed");
            let body = MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 0,
                conflict: Some(conflict),
                round,
            };
            self.send_persisted(from, body);
            return;
        }
        let entries = self.within_unapplied_budget(entries);
        let match_index = prev_log_id.index + entries.len() as u64;
        if let Err(reason) = self.append_from_leader(entries) {
            error!(id = self.id, from, reason, "rejected AppendEntries");
            return;
        }
        // The commit index is capped at the last entry verified from this leader (jraft bug 3).
        let commit = leader_commit.min(match_index);
        if commit > self.log.committed {
            self.log.committed = commit;
            self.advance_committed_membership();
        }
        let body = MessageBody::AppendEntriesResponse {
            success: true,
            match_index,
            conflict: None,
            round,
        };
        if self.durable_through(match_index) {
            // Nothing new to persist (a heartbeat, or entries already durable here): the
            // answer claims only durable entries, so it leaves now rather than behind the
            // write in flight. A follower whose disk stalls (a snapshot's writeback, say)
            // still answers its leader's heartbeats, as etcd's MsgHeartbeatResp does: the
            // leader's check-quorum and read confirmations do not wait for that disk.
            self.send(from, body);
        } else {
            self.send_persisted(from, body);
        }
    }

    /// Follower back-pressure: keeps the entries this server may take while the committed
    /// entries its state machine has not applied, plus the new ones, stay within
    /// `unapplied_bytes_max` (at least one new entry when nothing waits). The answer then
    /// acknowledges only those, and the leader sends the rest later: memory stays bounded when
    /// applying falls behind. (Uncommitted entries do not count: a leader bounds those, and
    /// counting stale ones left by an old leader could refuse the entries that replace them
    /// forever.)
    fn within_unapplied_budget(&self, mut entries: Vec<Entry>) -> Vec<Entry> {
        let last = self.log.last_index();
        let committed = self.log.committed;
        let mut unapplied = self
            .log
            .bytes_between(self.log.state_machine_applied, committed);
        let max = self.config.unapplied_bytes_max;
        let mut keep = 0;
        for entry in &entries {
            let new = entry.index > last || !self.log.matches(entry.log_id());
            if new {
                if unapplied > 0 && unapplied + entry.size_bytes() > max {
                    break;
                }
                unapplied += entry.size_bytes();
            }
            keep += 1;
        }
        if keep < entries.len() {
            debug!(
                id = self.id,
                keep,
                offered = entries.len(),
                "unapplied bytes full"
            );
            entries.truncate(keep);
        }
        entries
    }

    /// Entries at or below our compaction point are committed and identical to the leader's
    /// (leader completeness); drop them and check consistency at the offset instead.
    fn skip_compacted(&self, prev_log_id: LogId, entries: Vec<Entry>) -> (LogId, Vec<Entry>) {
        let offset = self.log.offset();
        if prev_log_id.index >= offset.index {
            return (prev_log_id, entries);
        }
        let skip = (offset.index - prev_log_id.index) as usize;
        let rest = entries.into_iter().skip(skip).collect();
        (offset, rest)
    }

    fn conflict_hint(&self, prev_index: LogIndex) -> ConflictHint {
        if prev_index > self.log.last_index() {
            return ConflictHint {
                index: self.log.last_index() + 1,
                term: 0,
            };
        }
        if prev_index <= self.log.offset().index {
            return ConflictHint {
                index: self.log.offset().index + 1,
                term: 0,
            };
        }
        let term = self.log.term_at(prev_index).expect("index in log");
        ConflictHint {
            index: self.log.first_index_of_term_at(prev_index),
            term,
        }
    }

    /// Appends the entries we do not have yet, truncating a conflicting suffix first.
    fn append_from_leader(&mut self, entries: Vec<Entry>) -> Result<(), &'static str> {
        let mut new_from = entries.len();
        for (i, entry) in entries.iter().enumerate() {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    if entry.index <= self.log.committed {
                        return Err("conflicting entry at or below the commit index");
                    }
                    self.truncate_log(entry.index);
                }
                None => {}
            }
            new_from = i;
            break;
        }
        let new_entries: Vec<Entry> = entries.into_iter().skip(new_from).collect();
        for entry in &new_entries {
            if entry.kind == EntryKind::Membership {
                self.note_config_entry(entry);
            }
        }
        self.log.append(new_entries);
        Ok(())
    }

    /// Removes the log suffix from `from`, reporting the removed entries for rollback and
    /// reverting any configuration they carried.
    pub(super) fn truncate_log(&mut self, from: LogIndex) {
        let removed = self.log.truncate(from);
        warn!(
            id = self.id,
            from,
            removed = removed.len(),
            "truncated conflicting entries"
        );
        self.ready.rolled_back.extend(removed);
        self.ready.truncate_from = Some(self.ready.truncate_from.map_or(from, |f| f.min(from)));
        self.pending_configs.retain(|p| p.log_id.index < from);
    }

    /// Leader: processes a follower's answer.
    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        conflict: Option<ConflictHint>,
        round: u64,
    ) {
        let Some(leading) = self.leading.as_mut() else {
            return;
        };
        let Some(p) = leading.progress.get_mut(&from) else {
            debug!(id = self.id, from, "response from a non-member");
            return;
        };
        p.recent_active = true;
        p.acked_round = p.acked_round.max(round);
        if success {
            if match_index > self.log.last_index() {
                warn!(
                    id = self.id,
                    from, match_index, "peer claims entries we never sent"
                );
                return;
            }
            let news = p.on_match(match_index);
            let now_in_sync = p.state == ReplicationState::Probe;
            if now_in_sync {
                p.become_replicate();
            }
            if news {
                self.maybe_commit();
                self.maybe_finish_transfer(from);
            }
            if news || now_in_sync {
                // A learner that just got in sync (after a snapshot, say) may be close enough
                // to promote even though this answer brought no new entries.
                self.maybe_promote_catching_up(from);
            }
        } else if let Some(hint) = conflict {
            if hint.index <= p.match_index {
                return; // Stale: we already know it has more.
            }
            let next = self.next_after_conflict(hint);
            let me = self.id;
            let p = self.leading_mut().peer_mut(from);
            p.become_probe();
            p.next_index = next.max(p.match_index + 1);
            debug!(id = me, from, ?hint, next = p.next_index, "backing off");
            self.send_append(from, true);
            return;
        }
        self.confirm_reads();
        if self.role == Role::Leader {
            self.send_append(from, false);
        }
    }

    /// Where to continue after a conflict hint: skip the follower's whole conflicting term.
    fn next_after_conflict(&self, hint: ConflictHint) -> LogIndex {
        let next = if hint.term == 0 {
            hint.index
        } else {
            match self.log.last_index_of_term(hint.term) {
                Some(index) => index + 1,
                None => hint.index,
            }
        };
        next.min(self.log.last_index() + 1)
    }

    /// Leader: advances the commit index to the highest index replicated on a quorum, but only
    /// if that entry is of the current term (paper section 5.4.2 and Figure 8; jraft bug 1).
    pub(super) fn maybe_commit(&mut self) {
        let me = self.id;
        let persisted = self.log.persisted;
        let progress = &self.leading().progress;
        let quorum_index = self.membership().committed_index(|id| {
            if id == me {
                persisted
            } else {
                progress.get(&id).map_or(0, |p| p.match_index)
            }
        });
        if quorum_index <= self.log.committed || self.log.term_at(quorum_index) != Some(self.term) {
            return;
        }
        self.log.committed = quorum_index;
        self.leading_mut().broadcast_pending = true;
        self.advance_committed_membership();
        self.confirm_reads();
    }
}
