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
    /// When its last request arrived or was answered.
    idle_since: Instant,
}

/// The backups a node is serving.
pub struct BackupSessions {
    snapshots: Arc<Snapshots>,
    sessions: Mutex<HashMap<u64, Session>>,
    /// The next session's number: starts at a random value, so that a client of a node that
    /// restarted is told its session is unknown rather than served another one.
    next_session: AtomicU64,
    /// [`BACKUP_SESSION_IDLE_MS`] (shorter in tests).
    idle: Duration,
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
            idle: Duration::from_millis(BACKUP_SESSION_IDLE_MS),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Session>> {
        // Each critical section inserts, removes or looks up: a panic cannot leave the map
        // half changed.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the sessions idle for [`BACKUP_SESSION_IDLE_MS`] (their clients went away),
    /// releasing their files.
    fn close_idle(&self) -> MutexGuard<'_, HashMap<u64, Session>> {
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.idle_since.elapsed() < self.idle);
        sessions
    }

    /// Closes idle sessions; refuses when [`BACKUP_SESSIONS_MAX`] are still open.
    fn make_room(&self) -> Result<(), ServiceError> {
        let sessions = self.close_idle();
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
        let (session, meta) = self.open(meta).await?;
        Ok(Reply::BackupBegun {
            session,
            node: handle.status().id,
            meta,
        })
    }

    /// Opens a session reading the published snapshot `meta`; returns its number and the
    /// encoded metadata.
    async fn open(&self, meta: SnapshotMeta) -> Result<(u64, Bytes), ServiceError> {
        let encoded = raft_snapshot::format::encode_meta(&meta)
            .map_err(|e| ServiceError::Failed(e.reason().into()))?;
        let reader = self.snapshots.open(&meta).await.map_err(|e| {
            ServiceError::Failed(format!("opening snapshot {}: {e}", meta.last_log_id))
        })?;
        self.make_room()?;
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let opened = Session {
            meta,
            reader: Some(reader),
            offset: 0,
            idle_since: Instant::now(),
        };
        self.lock().insert(session, opened);
        Ok((session, encoded))
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
        drop(self.close_idle());
        let (mut reader, meta) = self.take(session, offset)?;
        // A read that fails, or whose request is dropped mid-way (a timeout, a closed
        // connection), closes the session: its reader is gone.
        let mut reading = Reading {
            sessions: self,
            session,
            finished: false,
        };
        let want = (meta.size_bytes - offset).min(BACKUP_CHUNK_BYTES as u64) as usize;
        let last = offset + want as u64 == meta.size_bytes;
        let data = read_chunk(&mut reader, want, last, &meta).await?;
        reading.finished = true;
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
        s.idle_since = Instant::now();
        Ok((reader, s.meta.clone()))
    }
}

/// A chunk being read: unless it finished, dropping it closes its session.
struct Reading<'a> {
    sessions: &'a BackupSessions,
    session: u64,
    finished: bool,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.sessions.lock().remove(&self.session);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::Membership;
    use tokio::io::AsyncWriteExt;

    /// A store holding one snapshot of `bytes` bytes, and the sessions serving it.
    async fn sessions_of(bytes: usize) -> (tempfile::TempDir, BackupSessions, SnapshotMeta) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::snapshots::open(dir.path()).unwrap();
        let mut writer = store
            .begin(SnapshotMeta {
                last_log_id: LogId::new(2, 40),
                membership: Membership::new_voters([1]),
                membership_log_id: LogId::new(1, 1),
                size_bytes: 0,
                crc32: 0,
                created_unix_ms: 0,
            })
            .await
            .unwrap();
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        writer.write_all(&data).await.unwrap();
        let meta = writer.finish().await.unwrap();
        (dir, BackupSessions::new(store), meta)
    }

    async fn chunk(sessions: &BackupSessions, session: u64, offset: u64) -> (Bytes, bool) {
        match sessions.chunk(session, offset).await {
            Ok(Reply::BackupChunk { data, done }) => (data, done),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_served_in_order_in_chunks_and_the_session_then_closes() {
        let size = 2 * BACKUP_CHUNK_BYTES + 1000;
        let (_dir, sessions, meta) = sessions_of(size).await;
        let (session, encoded) = sessions.open(meta.clone()).await.unwrap();
        assert_eq!(raft_snapshot::format::decode_meta(&encoded).unwrap(), meta);
        assert!(matches!(
            sessions.chunk(session, 5).await,
            Err(ServiceError::Invalid(_))
        ));
        let mut received = Vec::new();
        loop {
            let (data, done) = chunk(&sessions, session, received.len() as u64).await;
            assert!(data.len() <= BACKUP_CHUNK_BYTES);
            received.extend_from_slice(&data);
            if done {
                break;
            }
        }
        assert_eq!(received.len(), size);
        assert_eq!(crc32fast::hash(&received), meta.crc32);
        assert!(matches!(
            sessions.chunk(session, size as u64).await,
            Err(ServiceError::Invalid(_))
        ));
        assert!(sessions.lock().is_empty());
    }

    /// A chunk request dropped in the middle of its read (a timeout, a closed connection)
    /// closes its session: no session is ever left without its reader, holding a place
    /// among the few a node serves.
    #[tokio::test]
    async fn a_chunk_request_dropped_mid_read_closes_its_session() {
        let (_dir, sessions, meta) = sessions_of(3 * BACKUP_CHUNK_BYTES).await;
        for _ in 0..20 {
            let (session, _) = sessions.open(meta.clone()).await.unwrap();
            let _ = tokio::time::timeout(Duration::ZERO, sessions.chunk(session, 0)).await;
            assert!(sessions.lock().values().all(|s| s.reader.is_some()));
            sessions.lock().clear();
        }
    }

    #[tokio::test]
    async fn idle_sessions_are_closed_and_open_ones_are_bounded() {
        let (_dir, mut sessions, meta) = sessions_of(100).await;
        for _ in 0..BACKUP_SESSIONS_MAX {
            sessions.open(meta.clone()).await.unwrap();
        }
        assert!(matches!(
            sessions.open(meta.clone()).await,
            Err(ServiceError::Unavailable(_))
        ));
        sessions.idle = Duration::from_millis(10);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let (session, _) = sessions.open(meta.clone()).await.unwrap();
        assert_eq!(sessions.lock().len(), 1);
        assert_eq!(chunk(&sessions, session, 0).await.0.len(), 100);
    }
}
