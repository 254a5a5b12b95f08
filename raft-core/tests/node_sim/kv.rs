//! The state machine of the node simulation: a key-value map of `u64`s with put and
//! compare-and-set, whose every application and restore is reported to the [`Checker`].
//! Depending on the seed it snapshots on the apply task or captures its state for a
//! background write (the two paths the node offers), with a delay so that applying overlaps
//! the write.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{SnapshotBuilder, StateMachine, StateMachineError};
use raft_core::{Entry, NodeId, SnapshotMeta};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::checker::{Checker, KvState};
use super::world::{lock, SharedRng};

/// A snapshot write takes up to this long.
const SNAPSHOT_WRITE_MS_MAX: u64 = 30;

pub struct SimKv {
    pub node: NodeId,
    /// Shared with the driver, which reads it after a read barrier.
    pub state: Arc<Mutex<KvState>>,
    pub checker: Arc<Checker>,
    /// Offer a [`SnapshotBuilder`] (background snapshot writes).
    pub background_snapshots: bool,
    pub rng: SharedRng,
}

impl SimKv {
    fn write_delay(&self) -> Duration {
        Duration::from_millis(lock(&self.rng).below(SNAPSHOT_WRITE_MS_MAX + 1))
    }
}

async fn write_state(
    bytes: Vec<u8>,
    delay: Duration,
    writer: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), StateMachineError> {
    // Half now, half after the delay: a crash or failure can cut the write in the middle.
    let half = bytes.len() / 2;
    let fail = |e: std::io::Error| StateMachineError(e.to_string());
    writer.write_all(&bytes[..half]).await.map_err(fail)?;
    tokio::time::sleep(delay).await;
    writer.write_all(&bytes[half..]).await.map_err(fail)
}

#[async_trait]
impl StateMachine for SimKv {
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError> {
        let mut state = lock(&self.state);
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.index != state.applied.index + 1 {
                self.checker.violation(format!(
                    "node {}: entry {} handed to the state machine after {}",
                    self.node,
                    entry.log_id(),
                    state.applied
                ));
            }
            responses.push(Bytes::from(state.apply(entry)));
            self.checker.applied(self.node, entry, state.digest);
        }
        Ok(responses)
    }

    async fn build_snapshot(
        &mut self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let bytes = lock(&self.state).encode();
        write_state(bytes, self.write_delay(), writer).await
    }

    fn snapshot_builder(&mut self) -> Option<Box<dyn SnapshotBuilder>> {
        if !self.background_snapshots {
            return None;
        }
        let bytes = lock(&self.state).encode();
        Some(Box::new(Captured {
            bytes,
            delay: self.write_delay(),
        }))
    }

    async fn restore(
        &mut self,
        meta: &SnapshotMeta,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| StateMachineError(e.to_string()))?;
        let restored = KvState::decode(&bytes)
            .ok_or_else(|| StateMachineError(format!("snapshot {} undecodable", meta.id())))?;
        self.checker.restored(self.node, meta, &restored);
        *lock(&self.state) = restored;
        Ok(())
    }
}

/// A state captured for a background snapshot write.
struct Captured {
    bytes: Vec<u8>,
    delay: Duration,
}

#[async_trait]
impl SnapshotBuilder for Captured {
    async fn write(
        self: Box<Self>,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        write_state(self.bytes, self.delay, writer).await
    }
}
