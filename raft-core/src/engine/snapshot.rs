//! Snapshots and log compaction (paper section 7): when to build one, compaction with
//! trailing entries, sending one to a follower behind the log start, and installing one.

use tracing::{debug, error, info};

use super::{Config, Engine, Role};
use crate::membership::Membership;
use crate::message::MessageBody;
use crate::types::{Entry, EntryKind, LogId, LogIndex, NodeId, SnapshotMeta};

/// A request to snapshot the state machine at exactly `last_log_id` (the last applied entry):
/// the snapshot must be labelled with this id (jraft labelled its snapshots one entry early,
/// bug 7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// The last entry whose effect the snapshot contains.
    pub last_log_id: LogId,
    /// The configuration in effect at that entry.
    pub membership: Membership,
    /// The configuration entry that produced `membership`.
    pub membership_log_id: LogId,
}

impl SnapshotRequest {
    /// The metadata for the snapshot store (size, checksum and time are filled in by it).
    pub fn to_meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.last_log_id,
            membership: self.membership.clone(),
            membership_log_id: self.membership_log_id,
            size_bytes: 0,
            crc32: 0,
            created_unix_ms: 0,
        }
    }
}

/// Each server postpones its snapshot trigger (`snapshot_distance`, `snapshot_log_bytes`) by
/// a random fraction of it, up to this many per mille, drawn again after every snapshot:
/// servers that apply the same entries then do not all build a snapshot at the same moment
/// (a cluster whose every member writes a large snapshot at once loses its heartbeats and
/// its disks at once).
pub const SNAPSHOT_TRIGGER_JITTER_PER_MILLE_MAX: u64 = 100;

/// A snapshot that `snapshot_log_ratio_percent` holds back is taken anyway once the log since
/// the latest one reaches this many times `snapshot_distance` entries or `snapshot_log_bytes`
/// bytes: the wait for a large state never lets the log grow without bound.
pub const SNAPSHOT_POSTPONE_FACTOR_MAX: u64 = 10;

/// A snapshot built here, reported with [`Engine::on_snapshot_built`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltSnapshot {
    /// The last entry it covers.
    pub last_log_id: LogId,
    /// Its size in bytes (the next automatic snapshot waits for a log of a share of it:
    /// `Config::snapshot_log_ratio_percent`).
    pub size_bytes: u64,
}

/// After a snapshot build fails, the next one that is merely due (not asked for) waits this
/// many ticks: a store that fails (a full disk) is not retried in a tight loop.
pub const SNAPSHOT_BUILD_RETRY_TICKS: u64 = 100;

/// Snapshot bookkeeping.
#[derive(Debug)]
pub(super) struct SnapshotState {
    /// The latest snapshot built or installed.
    latest: LogId,
    /// A build was requested and not reported yet.
    building: bool,
    /// A snapshot was asked for explicitly.
    forced: bool,
    /// The tick of the last failed build, if the last build failed.
    failed_at_tick: Option<u64>,
    /// This server's postponement of the next trigger, per mille of it.
    pub(super) jitter_per_mille: u64,
    /// Size of the latest snapshot in bytes (0: unknown or none).
    pub(super) latest_bytes: u64,
    /// The configuration as of the last entry handed out for applying.
    pub(super) applied_membership: (LogId, Membership),
}

impl SnapshotState {
    pub(super) fn new(latest: LogId, applied_membership: (LogId, Membership)) -> Self {
        SnapshotState {
            latest,
            building: false,
            forced: false,
            failed_at_tick: None,
            jitter_per_mille: 0,
            latest_bytes: 0,
            applied_membership,
        }
    }

    pub(super) fn on_applied(&mut self, _index: LogIndex) {}

    /// Whether a snapshot is due: asked for, or `snapshot_distance` entries or
    /// `snapshot_log_bytes` bytes (`log_bytes` since the latest snapshot) applied since it
    /// and a log of at least `snapshot_log_ratio_percent` of the latest snapshot's size, or
    /// [`SNAPSHOT_POSTPONE_FACTOR_MAX`] times either threshold whatever the size.
    pub(super) fn wants_build(
        &self,
        config: &Config,
        applied: LogIndex,
        log_bytes: u64,
        now_tick: u64,
    ) -> bool {
        if self.building || applied <= self.latest.index {
            return false;
        }
        if self.forced {
            return true;
        }
        let backing_off = self
            .failed_at_tick
            .is_some_and(|failed| now_tick < failed + SNAPSHOT_BUILD_RETRY_TICKS);
        let postponed = |threshold: u64| {
            threshold.saturating_add(threshold.saturating_mul(self.jitter_per_mille) / 1000)
        };
        let past = |threshold: u64, amount: u64| threshold > 0 && amount >= postponed(threshold);
        let entries = applied - self.latest.index;
        let (distance, bytes) = (config.snapshot_distance, config.snapshot_log_bytes);
        let called_for = past(distance, entries) || past(bytes, log_bytes);
        let worth_it = log_bytes.saturating_mul(100)
            >= self
                .latest_bytes
                .saturating_mul(config.snapshot_log_ratio_percent);
        let cap = |threshold: u64| threshold.saturating_mul(SNAPSHOT_POSTPONE_FACTOR_MAX);
        let overdue = past(cap(distance), entries) || past(cap(bytes), log_bytes);
        ((called_for && worth_it) || overdue) && !backing_off
    }

    pub(super) fn latest(&self) -> LogId {
        self.latest
    }
}

impl Engine {
    /// Asks for a snapshot at the next opportunity, whatever the snapshot distance. Returns
    /// `false` when there is nothing to do: no build is running and the latest snapshot already
    /// covers everything applied (then [`Engine::latest_snapshot`] is the answer).
    pub fn request_snapshot(&mut self) -> bool {
        if !self.snapshots.building && self.log.applied <= self.snapshots.latest.index {
            return false;
        }
        self.snapshots.forced = true;
        true
    }

    /// The latest snapshot built or installed.
    pub fn latest_snapshot(&self) -> LogId {
        self.snapshots.latest()
    }

    /// Tracks the configuration of entries handed out for applying: a snapshot taken at the
    /// applied index records it.
    pub(super) fn note_applied_configs(&mut self, entries: &[Entry]) {
        let configs = entries.iter().filter(|e| e.kind == EntryKind::Membership);
        if let Some(entry) = configs.last() {
            let m = Membership::decode(&entry.data).expect("validated when appended");
            self.snapshots.applied_membership = (entry.log_id(), m);
        }
    }

    /// Whether a snapshot should be built now (see `SnapshotState::wants_build`).
    pub(super) fn snapshot_due(&self) -> bool {
        let applied = self.log.applied;
        let log_bytes = self
            .log
            .bytes_between(self.snapshots.latest().index, applied);
        self.snapshots
            .wants_build(&self.config, applied, log_bytes, self.now_tick)
    }

    /// Called from `ready()`: asks for a snapshot when due.
    pub(super) fn maybe_request_snapshot(&mut self) {
        let applied = self.log.applied;
        if !self.snapshot_due() {
            return;
        }
        let last_log_id = self
            .log
            .log_id_at(applied)
            .expect("applied entry is in the log");
        let (membership_log_id, membership) = self.snapshots.applied_membership.clone();
        self.snapshots.building = true;
        self.snapshots.forced = false;
        self.ready.build_snapshot = Some(SnapshotRequest {
            last_log_id,
            membership,
            membership_log_id,
        });
    }

    /// Reports a durable snapshot (built at a [`SnapshotRequest`]), or `None` if building
    /// failed. Compacts the log, keeping `snapshot_trailing_entries` for slow followers.
    pub fn on_snapshot_built(&mut self, built: Option<BuiltSnapshot>) {
        self.snapshots.building = false;
        let Some(BuiltSnapshot {
            last_log_id,
            size_bytes,
        }) = built
        else {
            self.snapshots.failed_at_tick = Some(self.now_tick);
            return;
        };
        self.snapshots.failed_at_tick = None;
        self.snapshots.jitter_per_mille = self.rng.below(SNAPSHOT_TRIGGER_JITTER_PER_MILLE_MAX);
        if last_log_id.index <= self.snapshots.latest.index {
            return;
        }
        self.snapshots.latest = last_log_id;
        self.snapshots.latest_bytes = size_bytes;
        let upto = last_log_id
            .index
            .saturating_sub(self.config.snapshot_trailing_entries);
        if upto > self.log.offset().index {
            self.log.compact(upto);
            self.ready.purge_to = Some(self.log.offset());
            info!(id = self.id, snapshot = %last_log_id, purged = %self.log.offset(), "compacted");
        }
    }

    /// Leader: the peer's next entry was compacted away; it needs the latest snapshot.
    pub(super) fn start_snapshot_transfer(&mut self, peer: NodeId) {
        self.leading_mut().peer_mut(peer).become_snapshot();
        info!(id = self.id, peer, snapshot = %self.snapshots.latest, "sending snapshot");
        self.ready.send_snapshots.push(peer);
    }

    /// Reports the end of a snapshot transfer to `peer`: `true` when the receiver has the
    /// whole snapshot (its InstallSnapshotResponse follows), `false` on failure (retried from
    /// the next heartbeat).
    pub fn on_snapshot_sent(&mut self, peer: NodeId, success: bool) {
        let Some(p) = self
            .leading
            .as_mut()
            .and_then(|l| l.progress.get_mut(&peer))
        else {
            return;
        };
        if p.state != super::ReplicationState::Snapshot {
            return;
        }
        if success {
            p.snapshot_wait_ticks = Some(0);
        } else {
            p.become_probe();
        }
    }

    /// Leader: gives up waiting for an InstallSnapshotResponse after an election timeout.
    pub(super) fn tick_snapshot_waits(&mut self) {
        let limit = self.config.election_ticks_min;
        for p in self.leading_mut().progress.values_mut() {
            if let Some(waited) = p.snapshot_wait_ticks.as_mut() {
                *waited += 1;
                if *waited >= limit {
                    p.become_probe();
                }
            }
        }
    }

    pub(super) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        last_log_id: LogId,
        success: bool,
    ) {
        let last_index = self.log.last_index();
        let Some(p) = self
            .leading
            .as_mut()
            .and_then(|l| l.progress.get_mut(&from))
        else {
            return;
        };
        p.recent_active = true;
        if success && last_log_id.index <= last_index {
            p.on_match(last_log_id.index);
        }
        p.become_probe();
        self.maybe_commit();
        self.send_append(from, true);
    }

    /// Follower: installs a snapshot whose chunks the runtime has fully received.
    pub(super) fn handle_install_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        if self.role == Role::Leader {
            error!(
                id = self.id,
                from,
                term = self.term,
                "InstallSnapshot from another leader"
            );
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        let snapshot = meta.last_log_id;
        let respond = MessageBody::InstallSnapshotResponse {
            last_log_id: snapshot,
            success: true,
        };
        if snapshot.index <= self.log.committed {
            debug!(id = self.id, %snapshot, "snapshot already covered by the commit index");
            self.send_persisted(from, respond);
            return;
        }
        if meta.membership.validate().is_err() {
            error!(id = self.id, from, %snapshot, "snapshot with invalid membership");
            return;
        }
        info!(id = self.id, from, %snapshot, "installing snapshot");
        let (discarded, kept_suffix) = self.log.install_snapshot(snapshot);
        self.ready.rolled_back.extend(discarded);
        self.ready.truncate_from = if kept_suffix {
            // A truncation staged earlier in this Ready means storage still holds replaced
            // entries from there on: those below the snapshot go with the purge, the others
            // must still be truncated (dropping the truncation left them in place).
            self.ready
                .truncate_from
                .map(|from| from.max(snapshot.index + 1))
        } else {
            Some(snapshot.index + 1)
        };
        // Staged entries of earlier messages are superseded by the snapshot.
        self.ready
            .committed_entries
            .retain(|e| e.index > snapshot.index);
        self.committed_membership = (meta.membership_log_id, meta.membership.clone());
        self.snapshots.applied_membership = (meta.membership_log_id, meta.membership.clone());
        self.snapshots.latest = snapshot;
        self.snapshots.latest_bytes = meta.size_bytes;
        self.rebuild_configs_from_log();
        self.ready.snapshot = Some(meta);
        self.send_persisted(from, respond);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(latest: LogIndex, latest_bytes: u64) -> SnapshotState {
        let mut state =
            SnapshotState::new(LogId::new(1, latest), (LogId::ZERO, Membership::default()));
        state.latest_bytes = latest_bytes;
        state
    }

    fn config(distance: u64, log_bytes: u64, ratio_percent: u64) -> Config {
        Config {
            snapshot_distance: distance,
            snapshot_log_bytes: log_bytes,
            snapshot_log_ratio_percent: ratio_percent,
            ..Config::default()
        }
    }

    #[test]
    fn a_small_snapshot_is_due_at_the_distance() {
        let config = config(100, 0, 50);
        let small = state(1_000, 1_000);
        assert!(!small.wants_build(&config, 1_099, 99_999, 0));
        assert!(small.wants_build(&config, 1_100, 500, 0));
    }

    #[test]
    fn a_large_snapshot_waits_for_a_log_of_its_share() {
        let config = config(100, 0, 50);
        // 500 MB of state: 100 entries of 1 KB are not worth rewriting it.
        let large = state(1_000, 500 << 20);
        assert!(!large.wants_build(&config, 1_100, 100 << 10, 0));
        assert!(!large.wants_build(&config, 1_500, (250 << 20) - 1, 0));
        assert!(large.wants_build(&config, 1_500, 250 << 20, 0));
        // Without the ratio, the distance alone decides.
        let no_ratio = self::config(100, 0, 0);
        assert!(large.wants_build(&no_ratio, 1_100, 100 << 10, 0));
    }

    #[test]
    fn the_wait_ends_at_the_postpone_factor() {
        let config = config(100, 1 << 20, 50);
        let huge = state(1_000, u64::MAX / 200);
        let cap = 100 * SNAPSHOT_POSTPONE_FACTOR_MAX;
        assert!(!huge.wants_build(&config, 1_000 + cap - 1, 0, 0));
        assert!(huge.wants_build(&config, 1_000 + cap, 0, 0));
        let bytes_cap = (1 << 20) * SNAPSHOT_POSTPONE_FACTOR_MAX;
        assert!(!huge.wants_build(&config, 1_001, bytes_cap - 1, 0));
        assert!(huge.wants_build(&config, 1_001, bytes_cap, 0));
    }

    #[test]
    fn an_asked_for_snapshot_never_waits() {
        let mut large = state(1_000, 500 << 20);
        large.forced = true;
        assert!(large.wants_build(&config(100, 0, 50), 1_001, 10, 0));
    }
}
