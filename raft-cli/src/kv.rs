//! The replicated key-value state machine: byte-string keys holding strings, hashes, lists
//! or sets, with deadlines, the Redis data commands, and streaming snapshots.
//!
//! Commands travel through the Raft log encoded with MessagePack ([`KvCommand::encode`]);
//! each applied command answers with a [`KvResponse`]. Reads do not go through the log: the
//! service reads the shared table ([`Kv::db`]) after a read barrier.
//!
//! ## Determinism and time
//!
//! Every replica applies the same entries and must reach the same table, so applying reads
//! no clock of its own. A command whose effect depends on time (a relative deadline, whether
//! a key is expired) is wrapped by the leader in [`KvCommand::Clocked`], stamped with the
//! leader's clock; the table's clock ([`Db::clock_ms`]) is the latest stamp applied, and an
//! entry's "now" is the later of its stamp and that clock, so time never goes back, whichever
//! leader stamped. A key whose deadline is at or before "now" is absent for the command.
//! Expired keys are deleted by entries the leader proposes ([`WriteOp::Reap`], see
//! `crate::expiry`); until then they stay in the table and every reader treats them as
//! absent by its own clock. ARCHITECTURE.md states the guarantees.
//!
//! A plain SET (no option) needs no clock: it is proposed without a stamp, in the
//! hand-written encoding of `kv/set_codec.rs`, and applied without rmp-serde.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{SnapshotBuilder, StateMachine, StateMachineError};
use raft_core::{Entry, EntryKind, SnapshotMeta};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use set_codec::{ConditionView, SetView};

pub use db::{Data, Db, Slot, Value, Version, SHARDS, TOMBSTONES_MAX};
pub use number::{format_f64, parse_f64, parse_i64};
pub use ops::{apply_batch, read as ops_read, read_batch as ops_read_batch};
pub use ops::{
    Answer, At, Batch, Budget, Condition, ExpireCommand, ExpireCondition, HashSetReply, Op, ReadOp,
    SetExpiry, When, WriteOp, REPLY_ITEM_OVERHEAD_BYTES, WRONGTYPE,
};
pub use snapshot::{read_snapshot, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V1};
pub use strings::STRING_BYTES_MAX;

mod db;
mod glob;
mod hashes;
mod keys;
mod lists;
mod number;
mod ops;
mod set_codec;
mod sets;
mod snapshot;
mod strings;

/// Bytes of one key, value or element, at most. Also bounds what a snapshot reader
/// allocates for one item; raft-core's default entry limit (4 MiB) is the tighter bound for
/// values written through the log.
pub const KV_ITEM_BYTES_MAX: usize = 16 << 20;

/// The shared table behind a [`Kv`].
pub type SharedDb = Arc<RwLock<Db>>;

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
    /// Sets `key` to the string `value` when `condition` holds (the native client's put and
    /// compare-and-set, and Redis's plain SET). The key loses its deadline.
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
    /// `command`, applied with the clock stamp `now_ms` (milliseconds since the Unix epoch)
    /// that the leader put on it when proposing it.
    Clocked {
        /// The leader's clock.
        now_ms: u64,
        /// The command (not itself `Clocked`).
        command: Box<KvCommand>,
    },
    /// Redis data commands applied as one entry: one command, or a MULTI/EXEC transaction.
    Redis(Batch),
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
    /// The answer to a [`KvCommand::Redis`] batch, as Redis gives it.
    Answer(Answer),
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

    /// Whether `bytes` hold a plain `Set` (always, without the previous value) in the
    /// canonical encoding: the one write that needs no clock stamp.
    pub fn is_canonical_plain_set(bytes: &[u8]) -> bool {
        set_codec::decode_set(bytes).is_some_and(|set| set.is_plain())
    }

    /// Whether the command needs the leader's clock stamp: every command but a plain set.
    pub fn needs_clock(&self) -> bool {
        !self.as_set().is_some_and(|set| set.is_plain())
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
            KvCommand::Clocked { command, .. } => command.payload_bytes() + 16,
            KvCommand::Redis(batch) => batch.payload_bytes(),
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
            KvResponse::Answer(answer) => answer.payload_bytes(),
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

impl Answer {
    /// Bytes of the strings the answer holds, plus a little per item (to size encodings).
    pub fn payload_bytes(&self) -> usize {
        match self {
            Answer::Bulk(bytes) => bytes.len() + 8,
            Answer::Status(text) | Answer::Error(text) => text.len() + 8,
            Answer::Array(items) | Answer::Map(items) | Answer::Set(items) => {
                items.iter().map(Answer::payload_bytes).sum::<usize>() + 8
            }
            Answer::Ok | Answer::Integer(_) | Answer::Nil | Answer::NilArray => 9,
        }
    }
}

/// The key-value [`StateMachine`].
#[derive(Debug, Default)]
pub struct Kv {
    db: SharedDb,
}

/// Reads the table, ignoring poisoning: a panic elsewhere never leaves the table
/// half-updated in a way readers could not handle (each command's changes are plain
/// inserts and removes).
pub fn read_db(db: &SharedDb) -> RwLockReadGuard<'_, Db> {
    db.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_db(db: &SharedDb) -> RwLockWriteGuard<'_, Db> {
    db.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Kv {
    /// An empty store.
    pub fn new() -> Kv {
        Kv::default()
    }

    /// The shared table; read it after a read barrier for a linearizable read.
    pub fn db(&self) -> SharedDb {
        self.db.clone()
    }
}

/// Applies one command from the entry at `index` to `db`. Pure apart from the table: every
/// replica computes the same.
pub fn apply_command(db: &mut Db, command: KvCommand, index: u64) -> KvResponse {
    let now_ms = db.clock_ms();
    apply_at(db, command, At { now_ms, index })
}

fn apply_at(db: &mut Db, command: KvCommand, at: At) -> KvResponse {
    match command {
        KvCommand::Set {
            key,
            value,
            condition,
            return_previous,
        } => apply_set(
            db,
            SetView {
                key: &key,
                value: &value,
                condition: ConditionView::of(&condition),
                return_previous,
            },
            at,
        ),
        KvCommand::Delete { keys } => match keys::del(db, &keys, at) {
            Answer::Integer(deleted) => KvResponse::Deleted(deleted as u64),
            other => KvResponse::Error(format!("unexpected answer {other:?}")),
        },
        KvCommand::Incr { key, delta } => match strings::incrby(db, key, delta, at) {
            Answer::Integer(n) => KvResponse::Integer(n),
            Answer::Error(message) => {
                // The native protocol's errors carry no code word.
                let message = message.strip_prefix("ERR ").unwrap_or(&message);
                KvResponse::Error(message.to_string())
            }
            other => KvResponse::Error(format!("unexpected answer {other:?}")),
        },
        KvCommand::Clocked { now_ms, command } => {
            if matches!(*command, KvCommand::Clocked { .. }) {
                return KvResponse::Error("a clocked command inside a clocked command".into());
            }
            let now_ms = db.advance_clock(now_ms);
            apply_at(db, *command, At { now_ms, ..at })
        }
        KvCommand::Redis(batch) => KvResponse::Answer(ops::apply_batch(db, batch, at)),
    }
}

/// Applies a `Set` borrowed from its log entry: the key is copied only when it is new, the
/// value once (into an allocation of its own, so the table never pins a larger buffer). A
/// plain set takes one look-up and reads no clock.
fn apply_set(db: &mut Db, set: SetView<'_>, at: At) -> KvResponse {
    if set.is_plain() {
        db.put_string(set.key, Value::from(set.value), at.index);
        return KvResponse::Set {
            written: true,
            previous: None,
        };
    }
    db.expire_if_due(set.key, at.now_ms);
    let slot = db.slot(set.key);
    let current = slot.and_then(|slot| match &slot.data {
        Data::Str(value) => Some(value),
        _ => None,
    });
    let written = match set.condition {
        ConditionView::Always => true,
        ConditionView::IfAbsent => slot.is_none(),
        ConditionView::IfPresent => slot.is_some(),
        ConditionView::IfEqual(expected) => current.is_some_and(|v| **v == *expected),
    };
    let previous = current
        .filter(|_| set.return_previous)
        .map(|v| Bytes::copy_from_slice(v));
    if written {
        db.put_string(set.key, Value::from(set.value), at.index);
    }
    KvResponse::Set { written, previous }
}

/// Applies one normal entry: a `Set` in the canonical encoding without rmp-serde or any
/// allocation but the value's; everything else through [`KvCommand::decode`].
fn apply_entry(db: &mut Db, index: u64, data: &[u8]) -> KvResponse {
    if let Some(set) = set_codec::decode_set(data) {
        let now_ms = db.clock_ms();
        return apply_set(db, set, At { now_ms, index });
    }
    match KvCommand::decode(data) {
        Ok(command) => apply_command(db, command, index),
        // Only this binary proposes, so this means a bug or a foreign writer; the entry is
        // answered with an error on every replica alike.
        Err(e) => KvResponse::Error(format!("malformed command: {e}")),
    }
}

#[async_trait]
impl StateMachine for Kv {
    async fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Bytes>, StateMachineError> {
        let mut db = write_db(&self.db);
        let responses = entries
            .iter()
            .map(|entry| {
                db.set_applied_index(entry.index);
                match entry.kind {
                    EntryKind::Normal => apply_entry(&mut db, entry.index, &entry.data).encode(),
                    _ => Bytes::new(),
                }
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
        Some(Box::new(KvSnapshot(self.capture())))
    }

    async fn restore(
        &mut self,
        meta: &SnapshotMeta,
        reader: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        let mut db = read_snapshot(reader).await?;
        db.set_applied_index(meta.last_log_id.index);
        *write_db(&self.db) = db;
        Ok(())
    }
}

/// The table of a [`Kv`] at one moment, to be written as a snapshot.
struct KvSnapshot(snapshot::Capture);

impl Kv {
    /// Copies the table's keys, values and metadata. Cloning only bumps reference counts (a
    /// key's `Bytes` allocates its shared header on its first clone, once per key): the lock
    /// is held briefly and no key or value is copied.
    fn capture(&self) -> snapshot::Capture {
        snapshot::Capture::of(&read_db(&self.db))
    }
}

#[async_trait]
impl SnapshotBuilder for KvSnapshot {
    async fn write(
        self: Box<Self>,
        writer: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), StateMachineError> {
        self.0.write_to(writer).await
    }
}

#[cfg(test)]
mod tests;
