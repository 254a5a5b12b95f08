//! A small replicated key-value [`StateMachine`] for tests and examples: byte keys and values,
//! `set` and `delete` commands, streaming snapshots, and a shared read view.
//!
//! It shows the two rules a state machine lives by: an `apply` error stops the node (so a
//! malformed command, which a client can always send, is answered with an error value
//! instead), and reads go through the shared map after a read barrier.

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
/// First byte of a response: the command was applied, the previous value follows.
const RESPONSE_OK: u8 = 0;
/// First byte of a response: the command was malformed and changed nothing; why follows.
const RESPONSE_REFUSED: u8 = 1;

/// The shared map behind a [`MemKv`].
pub type KvMap = Arc<RwLock<BTreeMap<Bytes, Bytes>>>;

/// An in-memory key-value state machine. Commands are built with [`MemKv::set`] and
/// [`MemKv::delete`]; read a response with [`MemKv::response`]: the previous value (empty if
/// none), or why a malformed command was refused (it changed nothing, on every replica).
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

    /// Reads a response: the previous value, or why the command was refused.
    pub fn response(response: &Bytes) -> Result<Bytes, String> {
        match response.first() {
            Some(&RESPONSE_OK) => Ok(response.slice(1..)),
            Some(&RESPONSE_REFUSED) => Err(String::from_utf8_lossy(&response[1..]).into_owned()),
            _ => Err("not a MemKv response".into()),
        }
    }

    /// Applies one command. A malformed one is answered, not failed: every replica refuses it
    /// the same way, and failing would stop every replica, at every restart.
    fn apply_command(&self, data: Bytes) -> Bytes {
        let mut out = BytesMut::new();
        match self.execute(data) {
            Ok(previous) => {
                out.put_u8(RESPONSE_OK);
                out.put_slice(&previous);
            }
            Err(why) => {
                out.put_u8(RESPONSE_REFUSED);
                out.put_slice(format!("malformed command: {why}").as_bytes());
            }
        }
        out.freeze()
    }

    fn execute(&self, mut data: Bytes) -> Result<Bytes, &'static str> {
        if data.is_empty() {
            return Err("empty");
        }
        let tag = data.get_u8();
        if tag != TAG_SET && tag != TAG_DELETE {
            return Err("unknown tag");
        }
        let key = take_item(&mut data).ok_or("key")?;
        let value = match tag {
            TAG_SET => Some(take_item(&mut data).ok_or("value")?),
            _ => None,
        };
        if !data.is_empty() {
            return Err("trailing bytes");
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let previous = match value {
            Some(value) => map.insert(key, value),
            None => map.remove(&key),
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
        let responses = entries.iter().map(|entry| match entry.kind {
            EntryKind::Normal => self.apply_command(entry.data.clone()),
            _ => Bytes::new(),
        });
        Ok(responses.collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A malformed command is answered with an error value on every replica and changes
    /// nothing; it used to fail the state machine, which stops the node (at every restart too,
    /// since the entry is committed).
    #[tokio::test]
    async fn a_malformed_command_is_refused_not_fatal() {
        let mut kv = MemKv::new();
        let entries = [
            Entry::normal(1, 1, MemKv::set(b"k", b"v")),
            Entry::normal(1, 2, Bytes::from_static(b"\x07oops")),
            Entry::normal(1, 3, Bytes::new()),
            Entry::normal(1, 4, MemKv::set(b"k", b"w")),
        ];
        let responses = kv
            .apply(&entries)
            .await
            .expect("never fails on client input");
        assert_eq!(MemKv::response(&responses[0]), Ok(Bytes::new()));
        assert!(MemKv::response(&responses[1])
            .unwrap_err()
            .contains("malformed"));
        assert!(MemKv::response(&responses[2]).is_err());
        assert_eq!(MemKv::response(&responses[3]), Ok(Bytes::from_static(b"v")));
        let map = kv.map();
        assert_eq!(
            map.read().unwrap().get(&b"k"[..]).map(|v| &v[..]),
            Some(&b"w"[..])
        );
    }
}
