//! What a leader knows about each peer's log, and its pipelining window.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader is replicating to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// The peer's log position is unknown: one AppendEntries at a time until one succeeds.
    Probe,
    /// The peer is in sync: AppendEntries are pipelined up to the in-flight window.
    Replicate,
    /// The peer needs a snapshot (its next entry was compacted away); appends pause.
    Snapshot,
}

/// One AppendEntries in flight.
#[derive(Clone, Copy, Debug)]
struct Inflight {
    last_index: LogIndex,
    bytes: u64,
    sent_at_tick: u64,
}

/// The leader's bookkeeping for one peer (paper Figure 2 `nextIndex`/`matchIndex`, plus flow
/// control).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known replicated on the peer. Reset to 0 on every election (jraft bug 2).
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Replication mode.
    pub state: ReplicationState,
    /// In `Probe`: a probe is outstanding, wait for its answer or the next heartbeat.
    pub(crate) probe_sent: bool,
    /// In `Snapshot`: ticks since the transfer was reported done (or 0 while transferring).
    pub(crate) snapshot_wait_ticks: Option<u64>,
    inflight: VecDeque<Inflight>,
    inflight_bytes: u64,
    /// Heard from the peer since the last check-quorum period.
    pub(crate) recent_active: bool,
    /// Highest heartbeat round the peer acknowledged (ReadIndex confirmation).
    pub(crate) acked_round: u64,
    /// Entries for this peer are being read back from the log store (`Ready::fetches`);
    /// nothing else is sent to it meanwhile, but heartbeats.
    pub(crate) fetching: bool,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            snapshot_wait_ticks: None,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: true,
            acked_round: 0,
            fetching: false,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.fetching = false;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.snapshot_wait_ticks = None;
        self.clear_inflight();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.fetching = false;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub(crate) fn become_snapshot(&mut self) {
        self.state = ReplicationState::Snapshot;
        self.fetching = false;
        self.probe_sent = false;
        self.snapshot_wait_ticks = None;
        self.clear_inflight();
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Records a successful acknowledgement up to `index`. Returns whether it was news.
    pub(crate) fn on_match(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|f| f.last_index <= index) {
            let freed = self.inflight.pop_front().expect("front exists");
            self.inflight_bytes -= freed.bytes;
        }
        updated
    }

    /// Whether another AppendEntries carrying entries may be sent now.
    pub(crate) fn can_send(&self, messages_max: usize, bytes_max: u64) -> bool {
        if self.fetching {
            return false;
        }
        match self.state {
            ReplicationState::Probe => !self.probe_sent,
            ReplicationState::Replicate => {
                self.inflight.len() < messages_max && self.inflight_bytes < bytes_max
            }
            ReplicationState::Snapshot => false,
        }
    }

    /// Records an AppendEntries just sent whose last entry is `last_index`.
    pub(crate) fn on_sent(&mut self, last_index: LogIndex, bytes: u64, now_tick: u64) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Replicate => {
                self.next_index = last_index + 1;
                self.inflight.push_back(Inflight {
                    last_index,
                    bytes,
                    sent_at_tick: now_tick,
                });
                self.inflight_bytes += bytes;
            }
            ReplicationState::Snapshot => unreachable!("no appends while sending a snapshot"),
        }
    }

    /// Whether the oldest in-flight message is older than `timeout` ticks.
    pub(crate) fn inflight_expired(&self, now_tick: u64, timeout_ticks: u64) -> bool {
        self.inflight
            .front()
            .is_some_and(|f| now_tick.saturating_sub(f.sent_at_tick) >= timeout_ticks)
    }

    /// AppendEntries carrying entries sent to the peer and not acknowledged yet (the
    /// pipelining window in use; 0 outside `Replicate`).
    pub fn inflight_messages(&self) -> usize {
        self.inflight.len()
    }

    /// Payload bytes of the AppendEntries in flight to the peer.
    pub fn inflight_bytes(&self) -> u64 {
        self.inflight_bytes
    }

    /// Whether nothing is in flight (the peer is idle, so an urgent commit notice is useful).
    pub(crate) fn is_idle(&self) -> bool {
        self.inflight.is_empty() && !self.probe_sent
    }
}
