//! The apply task: owns the user's state machine and works through an ordered queue of
//! applies, hook calls, snapshot builds and restores, so the event loop never waits for it.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::error::Fatal;
use super::runtime::Event;
use super::storage::SnapshotStore;
use super::tasks::Tasks;
use super::waiters::Responder;
use super::{SnapshotBuilder, StateMachine};
use crate::types::{Entry, SnapshotMeta};

/// Work for the state machine, in log order.
pub(crate) enum ApplyItem {
    /// Committed entries, with the proposal waiting for each (if any).
    Apply {
        entries: Vec<Entry>,
        responders: Vec<Option<Responder>>,
    },
    /// Entries appended to the local log (pre-commit hook).
    PreCommit(Vec<Entry>),
    /// Entries a new leader truncated, newest first (rollback hook).
    Rollback(Vec<Entry>),
    /// Build a snapshot of the current state, labelled with this metadata.
    BuildSnapshot(SnapshotMeta),
    /// Replace the state with this stored snapshot.
    Restore(SnapshotMeta),
}

pub(crate) async fn run<M: StateMachine>(
    mut sm: M,
    mut queue: mpsc::Receiver<ApplyItem>,
    events: mpsc::UnboundedSender<Event>,
    snapshots: Arc<dyn SnapshotStore>,
    tasks: Tasks,
) {
    // The snapshot being written in the background, if any (one at a time: the engine asks
    // for the next build only after this one is reported).
    let mut background: Option<JoinHandle<()>> = None;
    // The index of the last entry applied (or restored), to check snapshot labels against.
    let mut applied: Option<u64> = None;
    while let Some(item) = queue.recv().await {
        if let Err(reason) = check_order(&item, &mut applied) {
            let _ = events.send(Event::Fatal(reason));
            break;
        }
        let result = handle(&mut sm, item, &events, &snapshots, &tasks, &mut background).await;
        if let Err(reason) = result {
            let _ = events.send(Event::Fatal(reason));
            break;
        }
    }
    // The node is stopping: let a snapshot being written finish (or fail) rather than leave
    // a writer behind the node's back.
    if let Some(task) = background {
        let _ = task.await;
    }
}

/// The apply queue's own invariants: entries arrive in log order without gaps, and a
/// snapshot is requested exactly at the last applied entry (its label must match the state
/// it holds). A violation is a bug in the node; it stops the node rather than let a replica
/// diverge or a snapshot lie.
fn check_order(item: &ApplyItem, applied: &mut Option<u64>) -> Result<(), Fatal> {
    match item {
        ApplyItem::Apply { entries, .. } => {
            for entry in entries {
                if let Some(last) = *applied {
                    if entry.index != last + 1 {
                        return Err(Fatal::Bug(format!(
                            "entry {} handed to the state machine after entry {last}",
                            entry.index
                        )));
                    }
                }
                *applied = Some(entry.index);
            }
        }
        ApplyItem::Restore(meta) => *applied = Some(meta.last_log_id.index),
        ApplyItem::BuildSnapshot(meta) => {
            if let Some(last) = *applied {
                if meta.last_log_id.index != last {
                    return Err(Fatal::Bug(format!(
                        "snapshot labelled {} requested when the state machine had applied \
                         up to {last}",
                        meta.last_log_id.index
                    )));
                }
            }
        }
        ApplyItem::PreCommit(_) | ApplyItem::Rollback(_) => {}
    }
    Ok(())
}

async fn handle<M: StateMachine>(
    sm: &mut M,
    item: ApplyItem,
    events: &mpsc::UnboundedSender<Event>,
    snapshots: &Arc<dyn SnapshotStore>,
    tasks: &Tasks,
    background: &mut Option<JoinHandle<()>>,
) -> Result<(), Fatal> {
    match item {
        ApplyItem::Apply {
            entries,
            responders,
        } => {
            let responses = sm
                .apply(&entries)
                .await
                .map_err(|e| Fatal::StateMachine(e.to_string()))?;
            if responses.len() != entries.len() {
                return Err(Fatal::StateMachine(format!(
                    "returned {} responses for {} entries",
                    responses.len(),
                    entries.len()
                )));
            }
            for (responder, response) in responders.into_iter().zip(responses) {
                if let Some(tx) = responder {
                    let _ = tx.send(Ok(response));
                }
            }
            let index = entries.last().map_or(0, |e| e.index);
            let _ = events.send(Event::Applied {
                index,
                count: entries.len() as u64,
            });
        }
        ApplyItem::PreCommit(entries) => entries.iter().for_each(|e| sm.pre_commit(e)),
        ApplyItem::Rollback(entries) => entries.iter().for_each(|e| sm.rollback(e)),
        ApplyItem::BuildSnapshot(meta) => {
            if let Some(previous) = background.take() {
                let _ = previous.await;
            }
            let capture_started = std::time::Instant::now();
            match sm.snapshot_builder() {
                Some(builder) => {
                    // Applying waits while the state is captured: the one step of a snapshot
                    // whose cost grows with the state and that stops writes.
                    let capture_ms = capture_started.elapsed().as_millis() as u64;
                    info!(snapshot = %meta.last_log_id, capture_ms, "snapshot state captured");
                    let (snapshots, events) = (snapshots.clone(), events.clone());
                    *background = Some(tasks.spawn(async move {
                        let result = write_snapshot(builder, snapshots.as_ref(), meta).await;
                        report_built(&events, result);
                    }));
                }
                None => {
                    let result = build_snapshot(sm, snapshots.as_ref(), meta).await;
                    report_built(events, result);
                }
            }
        }
        ApplyItem::Restore(meta) => {
            let started = tokio::time::Instant::now();
            let mut reader = snapshots
                .as_ref()
                .open(&meta)
                .await
                .map_err(|e| Fatal::SnapshotStore(format!("opening snapshot: {e}")))?;
            sm.restore(&meta, &mut reader)
                .await
                .map_err(|e| Fatal::StateMachine(format!("restoring a snapshot: {e}")))?;
            let _ = events.send(Event::Restored {
                index: meta.last_log_id.index,
                bytes: meta.size_bytes,
                took: started.elapsed(),
            });
        }
    }
    Ok(())
}

fn report_built(events: &mpsc::UnboundedSender<Event>, result: Result<SnapshotMeta, String>) {
    if let Err(e) = &result {
        warn!(error = %e, "snapshot build failed");
    }
    let _ = events.send(Event::SnapshotBuilt(result));
}

/// Writes a snapshot captured by [`StateMachine::snapshot_builder`] (off the apply task).
async fn write_snapshot(
    builder: Box<dyn SnapshotBuilder>,
    snapshots: &dyn SnapshotStore,
    meta: SnapshotMeta,
) -> Result<SnapshotMeta, String> {
    let mut writer = snapshots.begin(meta).await.map_err(|e| e.to_string())?;
    if let Err(e) = builder.write(&mut writer).await {
        writer.abort().await;
        return Err(e.to_string());
    }
    writer.finish().await.map_err(|e| e.to_string())
}

async fn build_snapshot<M: StateMachine>(
    sm: &mut M,
    snapshots: &dyn SnapshotStore,
    meta: SnapshotMeta,
) -> Result<SnapshotMeta, String> {
    let mut writer = snapshots.begin(meta).await.map_err(|e| e.to_string())?;
    if let Err(e) = sm.build_snapshot(&mut writer).await {
        writer.abort().await;
        return Err(e.to_string());
    }
    writer.finish().await.map_err(|e| e.to_string())
}
