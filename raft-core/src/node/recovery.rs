//! Start-up: what the stores hold becomes an engine and a state machine that agree. The state
//! machine is restored from the latest snapshot (if any); the log entries after it are
//! replayed by the engine as committed entries, exactly as they were applied before.

use tracing::warn;

use super::error::Fatal;
use super::raft::NodeConfig;
use super::storage::{LogState, LogStore, SnapshotStore, StorageError};
use super::StateMachine;
use crate::engine::{Engine, RestoredState};
use crate::membership::Membership;
use crate::types::{Entry, EntryKind, LogId, LogIndex};

/// Bytes read per call while loading the log at start.
const LOAD_BATCH_BYTES_MAX: u64 = 16 << 20;

/// An engine and a state machine restored from storage.
pub(super) struct Recovered<M> {
    pub(super) engine: Engine,
    pub(super) state_machine: M,
    /// The index the state machine holds (the snapshot's), before any replay.
    pub(super) applied: LogIndex,
}

/// Reads the stores and restores the state machine from the latest snapshot.
pub(super) async fn recover<L, S, M>(
    config: &NodeConfig,
    log: &L,
    snapshots: &S,
    mut state_machine: M,
    initial_membership: Membership,
) -> Result<Recovered<M>, Fatal>
where
    L: LogStore,
    S: SnapshotStore,
    M: StateMachine,
{
    let log_error = |what: &str, e: StorageError| Fatal::LogStore(format!("{what}: {e}"));
    let snapshot_error = |what: &str, e: StorageError| Fatal::SnapshotStore(format!("{what}: {e}"));
    let state = log
        .state()
        .await
        .map_err(|e| log_error("reading the log state", e))?;
    let snapshot = snapshots
        .latest()
        .await
        .map_err(|e| snapshot_error("reading snapshots", e))?;
    // Entries the snapshot covers are loaded without their payload: the state machine has
    // them, and a follower that needs them gets them read back from the log store.
    let covered = snapshot.as_ref().map_or(0, |s| s.last_log_id.index);
    let entries = load_entries(log, state.purged.index + 1, state.last.index + 1, covered)
        .await
        .map_err(|e| log_error("loading the log", e))?;
    match &snapshot {
        Some(meta) if meta.last_log_id.index < state.purged.index => {
            return Err(Fatal::Recovery(format!(
                "snapshot {} is older than the purged log {}",
                meta.last_log_id, state.purged
            )));
        }
        Some(meta) => {
            let mut reader = snapshots
                .open(meta)
                .await
                .map_err(|e| snapshot_error("opening the snapshot", e))?;
            state_machine
                .restore(meta, &mut reader)
                .await
                .map_err(|e| Fatal::StateMachine(format!("restoring the snapshot: {e}")))?;
        }
        None if state.purged.index > 0 => {
            return Err(Fatal::Recovery(
                "the log was purged but no snapshot exists".into(),
            ));
        }
        None => {}
    }
    let (state, entries) = match &snapshot {
        Some(meta) => align_log_with_snapshot(log, state, entries, meta.last_log_id)
            .await
            .map_err(|e| log_error("aligning the log with the snapshot", e))?,
        None => (state, entries),
    };
    let applied = snapshot
        .as_ref()
        .map_or(0, |s| s.last_log_id.index)
        .max(state.purged.index);
    let restored = RestoredState {
        hard_state: state.hard_state,
        snapshot,
        purged: state.purged,
        entries,
        initial_membership,
    };
    let engine = Engine::new(config.id, config.engine.clone(), restored)
        .map_err(|e| Fatal::Recovery(e.to_string()))?;
    Ok(Recovered {
        engine,
        state_machine,
        applied,
    })
}

/// A crash between publishing a received snapshot and purging the log leaves a log that does
/// not continue the snapshot. Make it do so now, exactly as the install would have: keep the
/// suffix after the snapshot only if the log holds the snapshot's last entry.
async fn align_log_with_snapshot<L: LogStore>(
    log: &L,
    state: LogState,
    entries: Vec<Entry>,
    snapshot: LogId,
) -> Result<(LogState, Vec<Entry>), StorageError> {
    if snapshot.index <= state.purged.index {
        return Ok((state, entries));
    }
    let holds_snapshot_entry = entries
        .iter()
        .any(|e| e.index == snapshot.index && e.term == snapshot.term);
    if holds_snapshot_entry {
        return Ok((state, entries));
    }
    warn!(%snapshot, last = %state.last, "log does not continue the snapshot; discarding it");
    log.truncate(state.purged.index + 1).await?;
    log.purge(snapshot).await?;
    let state = LogState {
        purged: snapshot,
        last: snapshot,
        ..state
    };
    Ok((state, Vec::new()))
}

/// Loads entries `[low, high)`, dropping the payloads of normal entries at or below
/// `covered` as it goes (memory holds one batch of them at a time).
async fn load_entries<L: LogStore>(
    log: &L,
    mut low: LogIndex,
    high: LogIndex,
    covered: LogIndex,
) -> Result<Vec<Entry>, StorageError> {
    let mut out = Vec::new();
    while low < high {
        let batch = log.read_back(low, high, LOAD_BATCH_BYTES_MAX).await?;
        if batch.is_empty() {
            return Err(StorageError::Corrupt(format!(
                "log returned no entry at {low}"
            )));
        }
        low += batch.len() as u64;
        out.extend(batch.into_iter().map(|mut entry| {
            if entry.index <= covered && entry.kind == EntryKind::Normal {
                entry.data = bytes::Bytes::new();
            }
            entry
        }));
    }
    Ok(out)
}
