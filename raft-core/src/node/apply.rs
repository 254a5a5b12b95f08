//! The apply task: owns the user's state machine and works through an ordered queue of
//! applies, hook calls, snapshot builds and restores, so the event loop never waits for it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::raft::RaftError;
use super::runtime::Event;
use super::storage::SnapshotStore;
use super::StateMachine;
use crate::types::{Entry, SnapshotMeta};

/// Where a proposal's response goes.
pub(crate) type Responder = oneshot::Sender<Result<Bytes, RaftError>>;

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
) {
    while let Some(item) = queue.recv().await {
        if let Err(reason) = handle(&mut sm, item, &events, snapshots.as_ref()).await {
            let _ = events.send(Event::Fatal(reason));
            return;
        }
    }
}

async fn handle<M: StateMachine>(
    sm: &mut M,
    item: ApplyItem,
    events: &mpsc::UnboundedSender<Event>,
    snapshots: &dyn SnapshotStore,
) -> Result<(), String> {
    match item {
        ApplyItem::Apply {
            entries,
            responders,
        } => {
            let responses = sm.apply(&entries).await.map_err(|e| e.to_string())?;
            if responses.len() != entries.len() {
                return Err(format!(
                    "state machine returned {} responses for {} entries",
                    responses.len(),
                    entries.len()
                ));
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
            let result = build_snapshot(sm, snapshots, meta).await;
            if let Err(e) = &result {
                warn!(error = %e, "snapshot build failed");
            }
            let _ = events.send(Event::SnapshotBuilt(result));
        }
        ApplyItem::Restore(meta) => {
            let mut reader = snapshots
                .open(&meta)
                .await
                .map_err(|e| format!("open snapshot: {e}"))?;
            sm.restore(&meta, &mut reader)
                .await
                .map_err(|e| e.to_string())?;
            let index = meta.last_log_id.index;
            let _ = events.send(Event::Applied { index, count: 0 });
        }
    }
    Ok(())
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
