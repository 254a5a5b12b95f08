//! The node's side of a backup: a snapshot built on request and read out in chunks over the
//! native client protocol, one open session per backup in progress.
//!
//! A session holds the snapshot open from its first chunk to its last: the store may
//! publish newer snapshots and remove this one meanwhile (it keeps two), and the open file
//! still reads the bytes the backup began with. The store's reader checks the snapshot's
//! size and CRC32 at its end, so a node never serves a damaged snapshot as a good backup.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::node::{RaftHandle, SnapshotReader, SnapshotStore};
use raft_core::{LogId, SnapshotMeta};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncReadExt;

use crate::proto::{Outcome, Reply, ServiceError};
use crate::service::from_raft;
use crate::snapshots::Snapshots;

/// Bytes of snapshot data per chunk: a reply frame of raft-net-tcp holds at most 16 MiB, and
/// 1 MiB per round trip keeps a backup near the disk's speed on loopback.
pub const BACKUP_CHUNK_BYTES: usize = 1 << 20;
/// Backups a node serves at once, at most: each holds a snapshot file open (and the disk
/// space of a snapshot the store has already replaced).
pub const BACKUP_SESSIONS_MAX: usize = 4;
/// A backup whose client asks for nothing this long is closed, its file released.
pub const BACKUP_SESSION_IDLE_MS: u64 = 60_000;

/// One backup in progress.
struct Session {
    meta: SnapshotMeta,
    /// `None` while a chunk is being read from it.
    reader: Option<SnapshotReader>,
    /// Bytes served so far: the offset the next chunk must ask for.
    offset: u64,
    idle_since: Instant,
}

/// The backups a node is serving.
pub struct BackupSessions {
    snapshots: Arc<Snapshots>,
    sessions: Mutex<HashMap<u64, Session>>,
    /// The next session's number: starts at a random value, so that a client of a node that
    /// restarted is told its session is unknown rather than served another one.
    next_session: AtomicU64,
}

impl std::fmt::Debug for BackupSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSessions")
            .field("open", &self.lock().len())
            .finish()
    }
}

impl BackupSessions {
    /// Backups of the snapshots in `snapshots`, the node's own store.
    pub fn new(snapshots: Arc<Snapshots>) -> BackupSessions {
        BackupSessions {
            snapshots,
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(SmallRng::from_entropy().gen()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Session>> {
        // Each critical section inserts, removes or looks up: a panic cannot leave the map
        // half changed.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes idle sessions; refuses when [`BACKUP_SESSIONS_MAX`] are still open.
    fn make_room(&self) -> Result<(), ServiceError> {
        let idle = Duration::from_millis(BACKUP_SESSION_IDLE_MS);
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.reader.is_none() || s.idle_since.elapsed() < idle);
        if sessions.len() >= BACKUP_SESSIONS_MAX {
            return Err(ServiceError::Unavailable(format!(
                "{BACKUP_SESSIONS_MAX} backups are in progress on this node; retry later"
            )));
        }
        Ok(())
    }

    /// Builds a snapshot now (or takes the latest, if nothing was applied since) and opens a
    /// session reading it. The snapshot holds the state at its last entry, which the node had
    /// applied, so committed.
    pub async fn begin(&self, handle: &RaftHandle) -> Outcome {
        self.make_room()?;
        let built = handle.trigger_snapshot().await.map_err(from_raft)?;
        if built == LogId::ZERO {
            return Err(ServiceError::Unavailable(
                "nothing to back up: this node has applied no entry yet".into(),
            ));
        }
        let meta = self.published(built).await?;
        let reader = self.snapshots.open(&meta).await.map_err(|e| {
            ServiceError::Failed(format!("opening snapshot {}: {e}", meta.last_log_id))
        })?;
        self.make_room()?;
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let encoded = raft_snapshot::format::encode_meta(&meta)
            .map_err(|e| ServiceError::Failed(e.reason().into()))?;
        self.lock().insert(
            session,
            Session {
                meta,
                reader: Some(reader),
                offset: 0,
                idle_since: Instant::now(),
            },
        );
        Ok(Reply::BackupBegun {
            session,
            node: handle.status().id,
            meta: encoded,
        })
    }

    /// The published snapshot of `id`, or the newest one if `id` was replaced meanwhile
    /// (both hold committed states at their last entries).
    async fn published(&self, id: LogId) -> Result<SnapshotMeta, ServiceError> {
        if let Some(meta) = self
            .snapshots
            .snapshots()
            .into_iter()
            .find(|m| m.last_log_id == id)
        {
            return Ok(meta);
        }
        self.snapshots
            .latest()
            .await
            .map_err(|e| ServiceError::Failed(format!("reading the snapshot store: {e}")))?
            .ok_or_else(|| ServiceError::Failed(format!("snapshot {id} was not published")))
    }

    /// The chunk of session `session` at `offset`, which must be where the previous chunk
    /// ended: at most [`BACKUP_CHUNK_BYTES`], `done` with the last one (the session then
    /// closes).
    pub async fn chunk(&self, session: u64, offset: u64) -> Outcome {
        let (mut reader, meta) = self.take(session, offset)?;
        let want = (meta.size_bytes - offset).min(BACKUP_CHUNK_BYTES as u64) as usize;
        let last = offset + want as u64 == meta.size_bytes;
        let read = read_chunk(&mut reader, want, last, &meta).await;
        let data = match read {
            Ok(data) => data,
            Err(error) => {
                self.lock().remove(&session);
                return Err(error);
            }
        };
        let end = offset + data.len() as u64;
        let done = end == meta.size_bytes;
        let mut sessions = self.lock();
        if done {
            sessions.remove(&session);
        } else if let Some(s) = sessions.get_mut(&session) {
            s.reader = Some(reader);
            s.offset = end;
            s.idle_since = Instant::now();
        }
        Ok(Reply::BackupChunk { data, done })
    }

    /// Takes the reader of `session` out of the map for one read, checking the offset.
    fn take(
        &self,
        session: u64,
        offset: u64,
    ) -> Result<(SnapshotReader, SnapshotMeta), ServiceError> {
        let mut sessions = self.lock();
        let unknown = || {
            ServiceError::Invalid(format!(
                "no backup session {session} on this node (finished, idle for over \
                 {BACKUP_SESSION_IDLE_MS} ms, or the node restarted); start the backup again"
            ))
        };
        let s = sessions.get_mut(&session).ok_or_else(unknown)?;
        if s.offset != offset {
            return Err(ServiceError::Invalid(format!(
                "backup session {session} is at offset {}, not {offset}",
                s.offset
            )));
        }
        let reader = s.reader.take().ok_or_else(|| {
            ServiceError::Invalid(format!(
                "backup session {session} is reading a chunk already"
            ))
        })?;
        Ok((reader, s.meta.clone()))
    }
}

/// Reads the next `want` bytes; with the `last` ones of the snapshot, reads once more so
/// that the store's reader checks the whole snapshot's size and CRC32 (it does when a read
/// finds the end).
async fn read_chunk(
    reader: &mut SnapshotReader,
    want: usize,
    last: bool,
    meta: &SnapshotMeta,
) -> Result<Bytes, ServiceError> {
    let damaged = |e: std::io::Error| {
        ServiceError::Failed(format!(
            "reading snapshot {} on this node: {e}",
            meta.last_log_id
        ))
    };
    let mut data = vec![0u8; want];
    reader.read_exact(&mut data).await.map_err(damaged)?;
    if last {
        let mut past_the_end = [0u8; 1];
        let extra = reader.read(&mut past_the_end).await.map_err(damaged)?;
        if extra != 0 {
            return Err(ServiceError::Failed(format!(
                "snapshot {} on this node is longer than its metadata says",
                meta.last_log_id
            )));
        }
    }
    Ok(Bytes::from(data))
}
