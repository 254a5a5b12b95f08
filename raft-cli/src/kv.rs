//! The replicated key-value state machine: byte-string keys and values with put, conditional
//! put (absent, present, equal to: compare-and-set), delete and increment, and streaming
//! snapshots.
//!
//! Commands travel through the Raft log encoded with MessagePack ([`KvCommand::encode`]); each
//! applied command answers with a [`KvResponse`]. Reads do not go through the log: the service
//! reads the shared map ([`Kv::map`]) after a read barrier.
//!
//! ## Snapshot format
//!
//! ```text
//! offset  size  field
//! 0       4     magic b"RKV1"
//! 4       8     number of pairs N (u64, little-endian)
//! 12      ...   N times: key length (u32 LE), key, value length (u32 LE), value
//! ```
//!
//! The pairs are in no particular order.
//!
//! The snapshot store checks the CRC32 of the whole stream; the reader here bounds every
//! length it reads before allocating.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{SnapshotBuilder, StateMachine, StateMachineError};
use raft_core::{Entry, EntryKind, SnapshotMeta};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use set_codec::{ConditionView, SetView};

mod set_codec;

/// Bytes of one key or value, at most. Also bounds what a snapshot reader allocates for one
/// item; raft-core's default entry limit (4 MiB) is the tighter bound for values written
/// through the log.
pub const KV_ITEM_BYTES_MAX: usize = 16 << 20;

/// The first bytes of a snapshot of this state machine.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RKV1";

/// Pairs a snapshot reader makes room for before reading them: the count comes from the
/// snapshot, so the room is bounded; the map grows past it as pairs arrive.
const SNAPSHOT_PREALLOCATED_PAIRS_MAX: u64 = 1 << 20;

/// Buffer size of the snapshot writer and reader: large enough that small pairs do not cost
/// one system call each.
const SNAPSHOT_BUFFER_BYTES: usize = 256 << 10;

/// The table of a [`Kv`]: a hash map, because an ordered map of `Bytes` keys costs a cache
/// miss per key comparison (each key lives in its own allocation), about 17 of them per
/// lookup at 100,000 keys; that made the B-tree lookup the largest single cost of applying a
/// write. Nothing here needs key order.
pub type KvTable = HashMap<Bytes, Value>;

/// A stored value. An `Arc<[u8]>` rather than `Bytes`: a snapshot captures the table by
/// cloning every pair, and the first clone of a `Bytes` made from a `Vec` allocates its
/// shared header, which made each capture of 100,000 freshly written values a 30 ms stall
/// of the node; cloning an `Arc` only bumps its count.
pub type Value = Arc<[u8]>;

/// The shared map behind a [`Kv`].
pub type KvMap = Arc<RwLock<KvTable>>;

/// When a [`KvCommand::Set`] writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCondition {
    /// Always.
    Always,
    /// Only when the key is absent (Redis `NX`).
    IfAbsent,
    /// Only when the key is present (Redis `XX`).
    IfPresent,
    /// Only when the key holds exactly this value (Valkey `IFEQ`, compare-and-set).
    IfEqual(Bytes),
}

/// A write, replicated through the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value` when `condition` holds.
    Set {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
        /// When to write.
        condition: SetCondition,
        /// Answer with the value before the command (Redis `SET ... GET`, compare-and-set
        /// reports). Off for plain writes: every replica computes the answer, and copying
        /// the old value into it for nobody cost a fifth of a follower's memory copying.
        #[serde(default)]
        return_previous: bool,
    },
    /// Deletes the keys; answers with how many existed.
    Delete {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// Adds `delta` to the decimal integer stored at `key` (absent counts as 0).
    Incr {
        /// The key.
        key: Bytes,
        /// The increment.
        delta: i64,
    },
}

/// What an applied [`KvCommand`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// The answer to a set: whether it wrote, and the value before the command.
    Set {
        /// Whether the condition held and the value was written.
        written: bool,
        /// The value before the command, if the command asked for it (`return_previous`).
        previous: Option<Bytes>,
    },
    /// How many keys a delete removed.
    Deleted(u64),
    /// The value after an increment.
    Integer(i64),
    /// The command was not applied; the message says why (deterministic on every replica).
    Error(String),
}

/// Bytes MessagePack adds around the byte strings of a command or response, at most (enum
/// tags, array and length markers): the encoders reserve this much plus the byte strings, so
/// encoding never grows its buffer.
const ENCODING_OVERHEAD_BYTES: usize = 64;

/// Encodes `value` with MessagePack into a buffer of `payload_bytes` plus overhead.
pub(crate) fn encode_msgpack<T: Serialize>(value: &T, payload_bytes: usize) -> Bytes {
    encode_msgpack_after(&[], value, payload_bytes)
}

/// Encodes `prefix` followed by `value` with MessagePack.
fn encode_msgpack_after<T: Serialize>(prefix: &[u8], value: &T, payload_bytes: usize) -> Bytes {
    let mut buf = Vec::with_capacity(prefix.len() + payload_bytes + ENCODING_OVERHEAD_BYTES);
    buf.extend_from_slice(prefix);
    // Encoding plain enums of byte strings and numbers into a Vec cannot fail.
    match rmp_serde::encode::write(&mut buf, value) {
        Ok(()) => Bytes::from(buf),
        Err(e) => unreachable!("MessagePack encoding into memory failed: {e}"),
    }
}

impl KvCommand {
    /// Encodes the command for the log.
    pub fn encode(&self) -> Bytes {
        self.encode_after(&[])
    }

    /// Encodes `prefix` followed by the command, in one buffer: how an enclosing message
    /// (a native request) carries it.
    pub fn encode_after(&self, prefix: &[u8]) -> Bytes {
        match self.as_set() {
            Some(set) => {
                let mut buf = Vec::with_capacity(prefix.len() + set_codec::encoded_set_bytes(&set));
                buf.extend_from_slice(prefix);
                set_codec::put_set(&mut buf, &set);
                Bytes::from(buf)
            }
            None => encode_msgpack_after(prefix, self, self.payload_bytes()),
        }
    }

    /// Whether `bytes` hold a `Set` in the canonical encoding the log uses, which the state
    /// machine applies without rmp-serde.
    pub fn is_canonical_set(bytes: &[u8]) -> bool {
        set_codec::decode_set(bytes).is_some()
    }

    /// A `Set` as a borrowed view, for the hand-written codec and [`apply_set`].
    fn as_set(&self) -> Option<SetView<'_>> {
        match self {
            KvCommand::Set {
                key,
                value,
                condition,
                return_previous,
            } => Some(SetView {
                key,
                value,
                condition: ConditionView::of(condition),
                return_previous: *return_previous,
            }),
            _ => None,
        }
    }

    /// Bytes of the keys and values the command carries.
    pub fn payload_bytes(&self) -> usize {
        match self {
            KvCommand::Set {
                key,
                value,
                condition,
                ..
            } => {
                let expected = match condition {
                    SetCondition::IfEqual(expected) => expected.len(),
                    _ => 0,
                };
                key.len() + value.len() + expected
            }
            KvCommand::Delete { keys } => keys.iter().map(|k| k.len() + 8).sum(),
            KvCommand::Incr { key, .. } => key.len(),
        }
    }

    /// Decodes a command from the log.
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

impl KvResponse {
    /// Encodes the response for the node to hand back to the proposer.
    pub fn encode(&self) -> Bytes {
        if let KvResponse::Set { written, previous } = self {
            return set_codec::encode_set_answer(*written, previous.as_ref());
        }
        let payload_bytes = match self {
            KvResponse::Set { previous, .. } => previous.as_ref().map_or(0, Bytes::len),
            KvResponse::Error(message) => message.len(),
            KvResponse::Deleted(_) | KvResponse::Integer(_) => 0,
        };
        encode_msgpack(self, payload_bytes)
    }

    /// Decodes a response.
    pub fn decode(bytes: &[u8]) -> Result<KvResponse, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Decodes a response held in `Bytes`: the answer to a `Set` without copying.
    pub fn decode_bytes(bytes: &Bytes) -> Result<KvResponse, String> {
        match KvResponse::decode_set_answer(bytes) {
            Some(response) => Ok(response),
            None => KvResponse::decode(bytes),
        }
    }

    /// Decodes the answer to a `Set` in the canonical encoding, without rmp-serde and
    /// without copying the previous value; `None` for anything else (which
    /// [`KvResponse::decode`] may still accept).
    pub fn decode_set_answer(bytes: &Bytes) -> Option<KvResponse> {
        let (written, previous) = set_codec::decode_set_answer(bytes)?;
        Some(KvResponse::Set { written, previous })
    }
}

/// The key-value [`StateMachine`].
#[derive(Debug, Default)]
pub struct Kv {
    map: KvMap,
}

/// Reads the map, ignoring poisoning: a panic elsewhere never leaves the map half-updated
/// because every update is a single insert or remove.
pub fn read_map(map: &KvMap) -> RwLockReadGuard<'_, KvTable> {
    map.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_map(map: &KvMap) -> RwLockWriteGuard<'_, KvTable> {
    map.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Kv {
    /// An empty store.
    pub fn new() -> Kv {
        Kv::default()
    }

    /// The shared map; read it after a read barrier for a linearizable read.
    pub fn map(&self) -> KvMap {
        self.map.clone()
    }
}

/// Applies one command to `map`. Pure apart from the map: every replica computes the same.
pub fn apply_command(map: &mut KvTable, command: KvCommand) -> KvResponse {
    match command {
        KvCommand::Set {
            key,
            value,
            condition,
            return_previous,
        } => apply_set(
            map,
            SetView {
                key: &key,
                value: &value,
                condition: ConditionView::of(&condition),
                return_previous,
            },
        ),
        KvCommand::Delete { keys } => {
            let removed = keys.iter().filter(|k| map.remove(*k).is_some()).count();
            KvResponse::Deleted(removed as u64)
        }
        KvCommand::Incr { key, delta } => {
            let current = match map.get(&key) {
                None => 0,
                Some(value) => match parse_i64(value) {
                    Some(n) => n,
                    None => {
                        return KvResponse::Error("value is not an integer or out of range".into())
                    }
                },
            };
            match current.checked_add(delta) {
                Some(next) => {
                    map.insert(key, Value::from(next.to_string().as_bytes()));
                    KvResponse::Integer(next)
                }
                None => KvResponse::Error("increment or decrement would overflow".into()),
            }
        }
    }
}

/// Applies a `Set` borrowed from its log entry: the key is copied only when it is new, the
/// value once (into an allocation of its own, so the table never pins a larger buffer).
fn apply_set(map: &mut KvTable, set: SetView<'_>) -> KvResponse {
    let slot = map.get_mut(set.key);
    let written = holds(set.condition, slot.as_deref());
    let previous = slot
        .as_deref()
        .filter(|_| set.return_previous)
        .map(|v| Bytes::copy_from_slice(v));
    if written {
        let value = Value::from(set.value);
        match slot {
            Some(slot) => *slot = value,
            None => {
                map.insert(Bytes::copy_from_slice(set.key), value);
            }
        }
    }
    KvResponse::Set { written, previous }
}

/// Whether a `Set`'s condition holds for the key's current value.
fn holds(condition: ConditionView<'_>, current: Option<&Value>) -> bool {
    match condition {
        ConditionView::Always => true,
        ConditionView::IfAbsent => current.is_none(),
        ConditionView::IfPresent => current.is_some(),
        ConditionView::IfEqual(expected) => current.is_some_and(|v| **v == *expected),
    }
}

/// Applies one normal entry: a `Set` in the canonical encoding without rmp-serde or any
/// allocation but the value's; everything else through [`KvCommand::decode`].
fn apply_entry(map: &mut KvTable, data: &[u8]) -> KvResponse {
    if let Some(set) = set_codec::decode_set(data) {
        return apply_set(map, set);
    }
    match KvCommand::decode(data) {
        Ok(command) => apply_command(map, command),
        // Only this binary proposes, so this means a bug or a foreign writer; the entry is
        // answered with an error on every replica alike.
        Err(e) => KvResponse::Error(format!("malformed command: {e}")),
    }
}

/// Parses a decimal integer the way Redis does for INCR: optional minus, digits, no spaces.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.starts_with('+') || text.trim() != text {
        return None;
    }
    text.parse().ok()
}

#[async_trait]
impl StateMachine for Kv {
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError> {
        let mut map = write_map(&self.map);
        let responses = entries
            .iter()
            .map(|entry| match entry.kind {
                EntryKind::Normal => apply_entry(&mut map, &entry.data).encode(),
                _ => Bytes::new(),
            })
            .collect();
        Ok(responses)
    }

    async fn build_snapshot(
        &mut self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        self.capture().write_to(writer).await
    }

    /// Snapshots are written in the background: the copy is a list of reference-counted
    /// pairs taken under the read lock, so applying (and answering clients) goes on while a
    /// snapshot of the whole table is written and synced.
    fn snapshot_builder(&mut self) -> Option<Box<dyn SnapshotBuilder>> {
        Some(Box::new(self.capture()))
    }

    async fn restore(
        &mut self,
        _meta: &SnapshotMeta,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let map = read_snapshot(reader).await?;
        *write_map(&self.map) = map;
        Ok(())
    }
}

/// The pairs of a [`Kv`] at one moment, to be written as a snapshot.
struct KvSnapshot {
    items: Vec<(Bytes, Value)>,
}

impl Kv {
    /// Copies the table's pairs. Cloning only bumps reference counts (a key's `Bytes`
    /// allocates its shared header on its first clone, once per key): the lock is held
    /// briefly and no key or value is copied.
    fn capture(&self) -> KvSnapshot {
        let items = read_map(&self.map)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        KvSnapshot { items }
    }
}

impl KvSnapshot {
    /// Writes the snapshot format (see the module documentation).
    async fn write_to(
        self,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let io = |e: std::io::Error| StateMachineError(format!("snapshot write: {e}"));
        // Pairs are laid out into a plain buffer and written a buffer at a time: one await
        // per buffer, not four per pair.
        let mut chunk = Vec::with_capacity(SNAPSHOT_BUFFER_BYTES);
        chunk.extend_from_slice(&SNAPSHOT_MAGIC);
        chunk.extend_from_slice(&(self.items.len() as u64).to_le_bytes());
        for (key, value) in &self.items {
            for item in [&key[..], &value[..]] {
                chunk.extend_from_slice(&(item.len() as u32).to_le_bytes());
                chunk.extend_from_slice(item);
            }
            if chunk.len() >= SNAPSHOT_BUFFER_BYTES {
                writer.write_all(&chunk).await.map_err(io)?;
                chunk.clear();
            }
        }
        writer.write_all(&chunk).await.map_err(io)?;
        writer.flush().await.map_err(io)
    }
}

#[async_trait]
impl SnapshotBuilder for KvSnapshot {
    async fn write(
        self: Box<Self>,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        self.write_to(writer).await
    }
}

/// Reads a snapshot written by [`Kv`]'s `build_snapshot`.
pub async fn read_snapshot(
    reader: &mut (dyn AsyncRead + Send + Unpin),
) -> Result<KvTable, StateMachineError> {
    let io = |e: std::io::Error| StateMachineError(format!("snapshot read: {e}"));
    let mut input = BufReader::with_capacity(SNAPSHOT_BUFFER_BYTES, reader);
    let mut magic = [0u8; 4];
    input.read_exact(&mut magic).await.map_err(io)?;
    if magic != SNAPSHOT_MAGIC {
        return Err(StateMachineError(format!(
            "not a key-value snapshot (magic {magic:?})"
        )));
    }
    let count = input.read_u64_le().await.map_err(io)?;
    let mut map = KvTable::with_capacity(count.min(SNAPSHOT_PREALLOCATED_PAIRS_MAX) as usize);
    for _ in 0..count {
        let key = read_item(&mut input).await?;
        let value = read_item(&mut input).await?;
        map.insert(Bytes::from(key), Value::from(value));
    }
    let mut rest = [0u8; 1];
    if input.read(&mut rest).await.map_err(io)? != 0 {
        return Err(StateMachineError("snapshot has trailing bytes".into()));
    }
    Ok(map)
}

/// Reads one length-prefixed key or value of a snapshot, bounding the length first.
async fn read_item<R: AsyncRead + Unpin>(input: &mut R) -> Result<Vec<u8>, StateMachineError> {
    let io = |e: std::io::Error| StateMachineError(format!("snapshot read: {e}"));
    let len = input.read_u32_le().await.map_err(io)? as usize;
    if len > KV_ITEM_BYTES_MAX {
        return Err(StateMachineError(format!(
            "snapshot item of {len} bytes exceeds {KV_ITEM_BYTES_MAX}"
        )));
    }
    let mut buf = vec![0; len];
    input.read_exact(&mut buf).await.map_err(io)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str, condition: SetCondition) -> KvCommand {
        KvCommand::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            condition,
            return_previous: true,
        }
    }

    #[test]
    fn conditional_sets_follow_redis() {
        let mut map = KvTable::new();
        let r = apply_command(&mut map, set("k", "1", SetCondition::IfPresent));
        assert_eq!(
            r,
            KvResponse::Set {
                written: false,
                previous: None
            }
        );
        let r = apply_command(&mut map, set("k", "1", SetCondition::IfAbsent));
        assert!(matches!(r, KvResponse::Set { written: true, .. }));
        let r = apply_command(&mut map, set("k", "2", SetCondition::IfAbsent));
        assert!(matches!(r, KvResponse::Set { written: false, .. }));
        let r = apply_command(
            &mut map,
            set("k", "3", SetCondition::IfEqual(Bytes::from_static(b"2"))),
        );
        assert!(matches!(r, KvResponse::Set { written: false, .. }));
        let r = apply_command(
            &mut map,
            set("k", "3", SetCondition::IfEqual(Bytes::from_static(b"1"))),
        );
        assert_eq!(
            r,
            KvResponse::Set {
                written: true,
                previous: Some(Bytes::from_static(b"1"))
            }
        );
        let r = apply_command(
            &mut map,
            set("absent", "x", SetCondition::IfEqual(Bytes::new())),
        );
        assert!(matches!(r, KvResponse::Set { written: false, .. }));
    }

    #[test]
    fn incr_parses_like_redis_and_refuses_overflow() {
        let mut map = KvTable::new();
        let incr = |delta| KvCommand::Incr {
            key: Bytes::from_static(b"n"),
            delta,
        };
        assert_eq!(apply_command(&mut map, incr(1)), KvResponse::Integer(1));
        assert_eq!(apply_command(&mut map, incr(-3)), KvResponse::Integer(-2));
        map.insert(
            Bytes::from_static(b"n"),
            Value::from(i64::MAX.to_string().as_bytes()),
        );
        assert!(matches!(
            apply_command(&mut map, incr(1)),
            KvResponse::Error(_)
        ));
        map.insert(Bytes::from_static(b"n"), Value::from(&b" 1"[..]));
        assert!(matches!(
            apply_command(&mut map, incr(1)),
            KvResponse::Error(_)
        ));
    }

    #[tokio::test]
    async fn snapshot_round_trips_and_rejects_garbage() {
        let mut kv = Kv::new();
        for i in 0..100 {
            let key = Bytes::from(format!("key{i}"));
            write_map(&kv.map).insert(key, Value::from(vec![i as u8; i]));
        }
        let mut buf = Vec::new();
        kv.build_snapshot(&mut buf).await.unwrap();
        let map = read_snapshot(&mut &buf[..]).await.unwrap();
        assert_eq!(map, *read_map(&kv.map));

        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(read_snapshot(&mut &bad[..]).await.is_err());
        assert!(read_snapshot(&mut &buf[..buf.len() - 1]).await.is_err());
        let mut huge = SNAPSHOT_MAGIC.to_vec();
        huge.extend_from_slice(&1u64.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_snapshot(&mut &huge[..]).await.is_err());
    }

    /// Entries written before `return_previous` existed decode with it off.
    #[test]
    fn commands_without_return_previous_still_decode() {
        #[derive(Serialize)]
        enum Legacy {
            Set {
                key: Bytes,
                value: Bytes,
                condition: SetCondition,
            },
        }
        let old = Legacy::Set {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            condition: SetCondition::IfAbsent,
        };
        let bytes = rmp_serde::to_vec(&old).unwrap();
        let mut expected = set("k", "v", SetCondition::IfAbsent);
        if let KvCommand::Set {
            return_previous, ..
        } = &mut expected
        {
            *return_previous = false;
        }
        assert_eq!(KvCommand::decode(&bytes).unwrap(), expected);
    }

    #[test]
    fn previous_values_are_returned_only_when_asked_for() {
        let mut map = KvTable::new();
        apply_command(&mut map, set("k", "1", SetCondition::Always));
        let mut plain = set("k", "2", SetCondition::Always);
        if let KvCommand::Set {
            return_previous, ..
        } = &mut plain
        {
            *return_previous = false;
        }
        assert_eq!(
            apply_command(&mut map, plain),
            KvResponse::Set {
                written: true,
                previous: None
            }
        );
        assert_eq!(
            apply_command(&mut map, set("k", "3", SetCondition::Always)),
            KvResponse::Set {
                written: true,
                previous: Some(Bytes::from_static(b"2"))
            }
        );
    }
}
