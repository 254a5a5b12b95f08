//! [`NodeMetrics`]: what a node counts and times while it runs, as plain numbers. The event
//! loop owns them and adds to them with plain integer operations (no lock, no atomic); they are copied into the published [`super::NodeStatus`] at every
//! tick, so a reader sees them at most `tick_ms` old. Exporting them is the embedder's
//! business: the `raft` binary serves them to Prometheus, and raft-core pulls in no exporter.

use crate::engine::{Campaigns, EngineError};
use crate::metrics::Histogram;

/// Counters and histograms of a node since it started. Durations are in microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Leaderships this server saw begin: a leader known for a term it had not seen led
    /// before (itself included). A cluster whose leaders change often is unstable.
    pub leader_changes: u64,
    /// Pre-vote rounds and elections this server started.
    pub campaigns: Campaigns,
    /// Proposals the engine accepted (appended to this leader's log).
    pub proposals_accepted: u64,
    /// Proposals the engine refused, by reason.
    pub proposals_refused: ProposalRefusals,
    /// From a proposal's acceptance to its entry applied by this server's state machine
    /// (only accepted proposals that were applied: their callers got an answer).
    pub proposal_apply_us: Histogram,
    /// Entries the state machine applied (a restored snapshot counts none).
    pub entries_applied: u64,
    /// Entries appended per log write. The write pipeline has one write in flight and
    /// gathers whatever arrives meanwhile into the next (group commit): this is the size of
    /// those groups.
    pub log_write_entries: Histogram,
    /// Payload bytes of the entries appended to the log.
    pub log_appended_bytes: u64,
    /// Log writes, from their start to durable: every step of the write (truncation, purge,
    /// hard state, append), each durable before the next (`LogStore` rule 3). For a store
    /// whose `append` returns once synced, mostly the sync.
    pub log_write_us: Histogram,
    /// Snapshots built here: from the request to the state machine until stored.
    pub snapshots_built: SnapshotActivity,
    /// Snapshots sent to followers (leader): from the start of a transfer until the follower
    /// has it all.
    pub snapshots_sent: SnapshotActivity,
    /// Snapshots received from a leader and restored into the state machine: the restore's
    /// duration. A failed restore stops the node, so `failed` stays 0.
    pub snapshots_installed: SnapshotActivity,
    /// How late the event loop's ticks fired: a loop that lags sends heartbeats late, and
    /// followers that wait longer than their election timeout start an election though
    /// nothing failed.
    pub event_loop_lag_us: Histogram,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            leader_changes: 0,
            campaigns: Campaigns::default(),
            proposals_accepted: 0,
            proposals_refused: ProposalRefusals::default(),
            proposal_apply_us: Histogram::microseconds(),
            entries_applied: 0,
            log_write_entries: Histogram::counts_of_items(),
            log_appended_bytes: 0,
            log_write_us: Histogram::microseconds(),
            snapshots_built: SnapshotActivity::default(),
            snapshots_sent: SnapshotActivity::default(),
            snapshots_installed: SnapshotActivity::default(),
            event_loop_lag_us: Histogram::microseconds(),
        }
    }
}

/// Proposals refused, by reason. Only the reasons a proposal can meet are counted apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProposalRefusals {
    /// This server does not lead.
    pub not_leader: u64,
    /// A leadership transfer is in progress.
    pub transfer_in_progress: u64,
    /// Back-pressure: too many entries or bytes uncommitted or not yet applied.
    pub backpressure: u64,
    /// The entry is larger than `entry_bytes_max`.
    pub entry_too_large: u64,
    /// Any other reason.
    pub other: u64,
}

impl ProposalRefusals {
    /// Counts a refusal.
    pub fn count(&mut self, error: &EngineError) {
        let counter = match error {
            EngineError::NotLeader { .. } => &mut self.not_leader,
            EngineError::TransferInProgress(_) => &mut self.transfer_in_progress,
            EngineError::Backpressure(_) | EngineError::BackpressureBytes(_) => {
                &mut self.backpressure
            }
            EngineError::EntryTooLarge(_) => &mut self.entry_too_large,
            _ => &mut self.other,
        };
        *counter += 1;
    }

    /// Every count with a name for it (snake case, usable as a metric label).
    pub fn by_reason(&self) -> [(&'static str, u64); 5] {
        [
            ("not_leader", self.not_leader),
            ("transfer_in_progress", self.transfer_in_progress),
            ("backpressure", self.backpressure),
            ("entry_too_large", self.entry_too_large),
            ("other", self.other),
        ]
    }

    /// Refusals of every reason.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, count)| count).sum()
    }
}

/// One kind of snapshot work (built, sent, installed): how often it ended well or badly,
/// the bytes of the snapshots it finished, and how long each finished one took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotActivity {
    /// Finished successfully.
    pub completed: u64,
    /// Failed (the node goes on and retries later).
    pub failed: u64,
    /// Bytes of the snapshots completed.
    pub bytes: u64,
    /// Duration of each completed one, in microseconds (1 ms to about 67 s, then above).
    pub duration_us: Histogram,
}

impl Default for SnapshotActivity {
    fn default() -> Self {
        SnapshotActivity {
            completed: 0,
            failed: 0,
            bytes: 0,
            duration_us: Histogram::long_microseconds(),
        }
    }
}

impl SnapshotActivity {
    /// Records a completed one of `bytes` that took `took`.
    pub fn record_completed(&mut self, bytes: u64, took: std::time::Duration) {
        self.completed += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.duration_us.record_duration(took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_reason() {
        let mut refusals = ProposalRefusals::default();
        refusals.count(&EngineError::NotLeader { leader: None });
        refusals.count(&EngineError::Backpressure(10));
        refusals.count(&EngineError::BackpressureBytes(10));
        refusals.count(&EngineError::EntryTooLarge(10));
        refusals.count(&EngineError::TransferInProgress(2));
        refusals.count(&EngineError::ChangeInProgress);
        assert_eq!(
            refusals.by_reason(),
            [
                ("not_leader", 1),
                ("transfer_in_progress", 1),
                ("backpressure", 2),
                ("entry_too_large", 1),
                ("other", 1),
            ]
        );
        assert_eq!(refusals.total(), 6);
    }
}
