//! A small replicated key-value [`StateMachine`] for tests and examples: byte keys and values,
//! `set` and `delete` commands, streaming snapshots, and a shared read view.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::state_machine::{StateMachine, StateMachineError};
use crate::types::{Entry, EntryKind, SnapshotMeta};

/// Bytes of one key or value, at most; bounds what a snapshot reader may allocate.
pub const KV_ITEM_BYTES_MAX: usize = 16 << 20;

const TAG_SET: u8 = 1;
const TAG_DELETE: u8 = 2;

/// The shared map behind a [`MemKv`].
pub type KvMap = Arc<RwLock<BTreeMap<Bytes, Bytes>>>;

/// An in-memory key-value state machine. Commands are built with [`MemKv::set`] and
/// [`MemKv::delete`]; every command answers with the previous value (empty if none).
#[derive(Debug, Default)]
pub struct MemKv {
    map: KvMap,
    /// Entries seen by the pre-commit hook and rolled back, for tests of the hooks.
    hooks: Arc<RwLock<HookLog>>,
}

/// What the optional hooks saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookLog {
    /// Indexes pre-committed, in order.
    pub pre_committed: Vec<u64>,
    /// Indexes rolled back, in order.
    pub rolled_back: Vec<u64>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of the map that stays valid while the node runs. Read it after
    /// [`super::RaftHandle::read_barrier`] for a linearizable read.
    pub fn map(&self) -> KvMap {
        self.map.clone()
    }

    /// What the pre-commit and rollback hooks saw.
    pub fn hooks(&self) -> Arc<RwLock<HookLog>> {
        self.hooks.clone()
    }

    /// The command that sets `key` to `value`.
    pub fn set(key: &[u8], value: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(9 + key.len() + value.len());
        buf.put_u8(TAG_SET);
        buf.put_u32_le(key.len() as u32);
        buf.put_slice(key);
        buf.put_u32_le(value.len() as u32);
        buf.put_slice(value);
        buf.freeze()
    }

    /// The command that deletes `key`.
    pub fn delete(key: &[u8]) -> Bytes {
        let mut buf = BytesMut::with_capacity(5 + key.len());
        buf.put_u8(TAG_DELETE);
        buf.put_u32_le(key.len() as u32);
        buf.put_slice(key);
        buf.freeze()
    }

    fn apply_command(&self, mut data: Bytes) -> Result<Bytes, StateMachineError> {
        let bad = |what: &str| StateMachineError(format!("malformed command: {what}"));
        if data.is_empty() {
            return Err(bad("empty"));
        }
        let tag = data.get_u8();
        let key = take_item(&mut data).ok_or_else(|| bad("key"))?;
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let previous = match tag {
            TAG_SET => {
                let value = take_item(&mut data).ok_or_else(|| bad("value"))?;
                map.insert(key, value)
            }
            TAG_DELETE => map.remove(&key),
            _ => return Err(bad("tag")),
        };
        Ok(previous.unwrap_or_default())
    }
}

fn take_item(data: &mut Bytes) -> Option<Bytes> {
    if data.remaining() < 4 {
        return None;
    }
    let len = data.get_u32_le() as usize;
    if len > data.remaining() {
        return None;
    }
    Some(data.split_to(len))
}

#[async_trait]
impl StateMachine for MemKv {
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError> {
        entries
            .iter()
            .map(|entry| match entry.kind {
                EntryKind::Normal => self.apply_command(entry.data.clone()),
                _ => Ok(Bytes::new()),
            })
            .collect()
    }

    async fn build_snapshot(
        &mut self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let items: Vec<(Bytes, Bytes)> = {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let io = |e: std::io::Error| StateMachineError(format!("snapshot write: {e}"));
        writer.write_u64_le(items.len() as u64).await.map_err(io)?;
        for (key, value) in items {
            for item in [key, value] {
                writer.write_u32_le(item.len() as u32).await.map_err(io)?;
                writer.write_all(&item).await.map_err(io)?;
            }
        }
        writer.flush().await.map_err(io)
    }

    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let io = |e: std::io::Error| StateMachineError(format!("snapshot read: {e}"));
        let count = reader.read_u64_le().await.map_err(io)?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let mut pair = [Bytes::new(), Bytes::new()];
            for item in pair.iter_mut() {
                let len = reader.read_u32_le().await.map_err(io)? as usize;
                if len > KV_ITEM_BYTES_MAX {
                    return Err(StateMachineError(format!("snapshot item of {len} bytes")));
                }
                let mut buf = vec![0; len];
                reader.read_exact(&mut buf).await.map_err(io)?;
                *item = Bytes::from(buf);
            }
            let [key, value] = pair;
            map.insert(key, value);
        }
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    fn pre_commit(&mut self, entry: &Entry) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .pre_committed
            .push(entry.index);
    }

    fn rollback(&mut self, entry: &Entry) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .rolled_back
            .push(entry.index);
    }
}
