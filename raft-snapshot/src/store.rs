//! [`FileSnapshotStore`]: raft-core's `SnapshotStore` in a directory. See [`crate::format`](mod@crate::format) for
//! the layout and the metadata record.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use raft_core::node::{SnapshotReader, SnapshotStore, SnapshotWriter, StorageError};
use raft_core::{ChunkStatus, LogId, SnapshotChunk, SnapshotMeta};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::format::{self, DATA_FILE, META_FILE, TEMP_PREFIX};

/// Default number of complete snapshots kept: the newest one, plus the previous one so that a
/// follower in the middle of receiving it can still be served while a newer one is published.
pub const SNAPSHOTS_KEPT_DEFAULT: u32 = 2;
/// Default largest chunk accepted or read, in bytes: 16 MiB, the default frame limit of
/// raft-net-tcp. Bounds the memory of one `receive_chunk` or `read_chunk` call.
pub const CHUNK_BYTES_MAX_DEFAULT: u32 = 16 << 20;
/// Largest `chunk_bytes_max` accepted: 256 MiB. Beyond that a single chunk would pin a large
/// part of a small machine's memory.
pub const CHUNK_BYTES_MAX_LIMIT: u32 = 256 << 20;
/// Default number of received bytes after which the temporary file is synced: 64 MiB. Keeps
/// the final sync (which the sender waits for on the last chunk) short whatever the size.
pub const RECEIVE_SYNC_INTERVAL_BYTES_DEFAULT: u64 = 64 << 20;
/// Default for [`StoreConfig::write_sync_interval_bytes`]: 16 MiB.
pub const WRITE_SYNC_INTERVAL_BYTES_DEFAULT: u64 = 16 << 20;

/// Limits of a [`FileSnapshotStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Complete snapshots kept, the newest ones (at least 1).
    pub snapshots_kept: u32,
    /// Largest chunk accepted by `receive_chunk` and returned by `read_chunk`, in bytes. A
    /// larger incoming chunk is refused.
    pub chunk_bytes_max: u32,
    /// A transfer syncs its temporary file each time this many bytes arrived since the last
    /// sync (0: only at the end).
    pub receive_sync_interval_bytes: u64,
    /// A locally built snapshot syncs its data each time this many bytes were written since
    /// the last sync (0: only at the end). Writing a large snapshot then never leaves the disk
    /// a gigabyte of dirty pages to flush at once, which would hold up the log's syncs.
    pub write_sync_interval_bytes: u64,
    /// A locally built snapshot is written at most this fast, in bytes per second (0: no
    /// limit), so that it leaves the disk's bandwidth to the log.
    pub write_bytes_per_sec_max: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            snapshots_kept: SNAPSHOTS_KEPT_DEFAULT,
            chunk_bytes_max: CHUNK_BYTES_MAX_DEFAULT,
            receive_sync_interval_bytes: RECEIVE_SYNC_INTERVAL_BYTES_DEFAULT,
            write_sync_interval_bytes: WRITE_SYNC_INTERVAL_BYTES_DEFAULT,
            write_bytes_per_sec_max: 0,
        }
    }
}

impl StoreConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        if self.snapshots_kept == 0 {
            return Err(Error::InvalidConfig {
                field: "snapshots_kept",
                reason: "must be at least 1",
            });
        }
        if self.chunk_bytes_max == 0 || self.chunk_bytes_max > CHUNK_BYTES_MAX_LIMIT {
            return Err(Error::InvalidConfig {
                field: "chunk_bytes_max",
                reason: "must be in 1..=CHUNK_BYTES_MAX_LIMIT",
            });
        }
        Ok(())
    }
}

/// Durable snapshot storage in a directory: raft-core's [`SnapshotStore`].
///
/// - **Local snapshots** ([`SnapshotStore::begin`]) are streamed into a temporary directory
///   while their CRC32 is computed; `finish` syncs the data, writes and syncs the metadata,
///   renames the directory to its final name and syncs the parent directory. Only then is the
///   snapshot visible.
/// - **Received snapshots** ([`SnapshotStore::receive_chunk`]) take chunks strictly in offset
///   order, each checked against its CRC32 before it is written at its offset of a temporary
///   file; the last chunk's arrival checks the whole snapshot's size and CRC32 and publishes
///   it the same way. A chunk at another offset, or with a bad CRC, is answered with
///   `Retry` and the offset expected, so a sender that lost its connection or restarted
///   resumes where the transfer stopped. A new transfer (another snapshot at offset 0)
///   replaces a partial one.
/// - **Received metadata** is checked ([`format::check_meta`]) before a transfer writes
///   anything: metadata that a metadata record could not hold and read back (an invalid
///   membership, one over the record's size limit, a configuration entry after the last
///   entry) is `Refused`, since once published it would stop every later open of the store.
///   Every chunk of a transfer must carry the metadata its first chunk did.
/// - **Restores** ([`SnapshotStore::open`]) read the published snapshot of the entry asked
///   for, under its stored metadata, also when the metadata asked with describes other bytes
///   of the same entry (a leader's snapshot of an entry this store already holds): both hold
///   the state at that entry.
/// - **Crash safety**: everything not yet published lives under a `tmp-` name and is removed
///   when the store opens, so a receiver restarted in the middle of a transfer keeps no
///   partial snapshot and takes the transfer again from offset 0.
/// - **Retention**: the newest [`StoreConfig::snapshots_kept`] snapshots are kept.
/// - **Failures**: a failed sync, rename or directory sync poisons the store: every later
///   write fails with [`Error::Poisoned`] until the directory is reopened. A failed write of a
///   received chunk only throws that partial transfer away.
///
/// One directory belongs to one store at a time. Cloning shares the store.
///
/// Memory: one chunk per `receive_chunk` or `read_chunk` call, plus tokio's file buffer
/// (2 MiB) while a local snapshot is written; never the snapshot's size.
#[derive(Clone)]
pub struct FileSnapshotStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    config: StoreConfig,
    /// Published snapshots by last included entry.
    published: Mutex<BTreeMap<LogId, SnapshotMeta>>,
    /// Serializes publishing and pruning (renames and directory syncs); never held by readers.
    publishing: Mutex<()>,
    /// The transfer being received, if any.
    receiving: tokio::sync::Mutex<Option<Receiving>>,
    /// The first failed durable operation; set once, cleared only by reopening.
    poisoned: Mutex<Option<&'static str>>,
    /// Makes temporary names unique within this process.
    temp_seq: AtomicU64,
}

impl std::fmt::Debug for FileSnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSnapshotStore")
            .field("dir", &self.inner.dir)
            .field("config", &self.inner.config)
            .field("published", &self.inner.published().len())
            .finish()
    }
}

/// Removes a temporary directory when dropped, unless it was published.
#[derive(Debug)]
struct TempDir {
    path: Option<PathBuf>,
}

impl TempDir {
    fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("temporary directory still owned")
    }

    /// The directory was renamed into place: nothing to remove any more.
    fn disarm(&mut self) {
        self.path = None;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: whatever is left is removed when the store next opens.
            if let Err(error) = fs::remove_dir_all(&path) {
                warn!(path = %path.display(), %error, "removing a temporary snapshot failed");
            }
        }
    }
}

/// A snapshot being received.
#[derive(Debug)]
struct Receiving {
    meta: SnapshotMeta,
    temp: TempDir,
    file: Arc<File>,
    /// Bytes written so far; the offset expected next.
    next_offset: u64,
    /// CRC32 of the bytes written so far.
    crc: crc32fast::Hasher,
    /// Bytes written since the last sync.
    unsynced_bytes: u64,
}

/// Whether two descriptions name the same snapshot bytes. Two leaders may hold snapshots of
/// the same entry with different bytes (a state machine's encoding need not be
/// deterministic), so size and checksum are compared too: never resume one with the other.
fn same_snapshot(a: &SnapshotMeta, b: &SnapshotMeta) -> bool {
    a.last_log_id == b.last_log_id && a.size_bytes == b.size_bytes && a.crc32 == b.crc32
}

/// Whether a chunk's metadata continues the transfer of `receiving`: the same bytes and the
/// same configuration. The metadata published is the one checked when the transfer started,
/// and no later chunk may change what it says.
fn same_transfer(receiving: &SnapshotMeta, chunk: &SnapshotMeta) -> bool {
    same_snapshot(receiving, chunk)
        && receiving.membership_log_id == chunk.membership_log_id
        && receiving.membership == chunk.membership
}

/// Checks metadata that is about to be written (see [`format::check_meta`]).
fn check_meta(meta: &SnapshotMeta) -> Result<()> {
    format::check_meta(meta).map_err(|e| Error::InvalidMeta {
        snapshot: meta.last_log_id,
        reason: e.reason(),
    })
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Throws a partial transfer away (its temporary directory is removed off the async workers).
async fn discard(receiving: Option<Receiving>) {
    if let Some(receiving) = receiving {
        blocking(move || drop(receiving)).await;
    }
}

/// Runs blocking file work off the async workers. A panic in it is a bug: propagate it.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

impl Inner {
    fn published(&self) -> MutexGuard<'_, BTreeMap<LogId, SnapshotMeta>> {
        // Every critical section is a lookup, insert or remove: a panic cannot leave the map
        // half updated, so a poisoned lock is still usable.
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_writable(&self) -> Result<()> {
        match *self.poisoned.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(op) => Err(Error::Poisoned { op }),
            None => Ok(()),
        }
    }

    fn poison(&self, op: &'static str) {
        let mut poisoned = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        if poisoned.is_none() {
            warn!(dir = %self.dir.display(), op, "snapshot store poisoned");
            *poisoned = Some(op);
        }
    }

    fn latest(&self) -> Option<SnapshotMeta> {
        self.published().values().next_back().cloned()
    }

    /// The published snapshot `meta` describes, with its data file's path.
    fn find(&self, meta: &SnapshotMeta) -> Result<(SnapshotMeta, PathBuf)> {
        let published = self.published();
        match published.get(&meta.last_log_id) {
            Some(found) if same_snapshot(found, meta) => {
                Ok((found.clone(), self.dir.join(found.id()).join(DATA_FILE)))
            }
            _ => Err(Error::NotFound(meta.last_log_id)),
        }
    }

    /// The published snapshot of the entry `meta` names, whatever its bytes, with its data
    /// file's path: what a restore reads. The store keeps one snapshot per entry, and two of
    /// one entry hold the same state (the committed state at that entry). A node that is sent
    /// a leader's snapshot of an entry this store already holds (or whose transfer completes
    /// just after a local snapshot of that entry was published, which `publish` keeps)
    /// installs it with the leader's metadata: the restore reads the stored snapshot, checked
    /// against the stored metadata.
    fn find_entry(&self, meta: &SnapshotMeta) -> Result<(SnapshotMeta, PathBuf)> {
        let published = self.published();
        let found = published
            .get(&meta.last_log_id)
            .ok_or(Error::NotFound(meta.last_log_id))?;
        if !same_snapshot(found, meta) {
            debug!(snapshot = %meta.last_log_id, stored_bytes = found.size_bytes,
                asked_bytes = meta.size_bytes, "restoring the stored snapshot of this entry");
        }
        Ok((found.clone(), self.dir.join(found.id()).join(DATA_FILE)))
    }

    fn temp_path(&self, kind: &str, meta: &SnapshotMeta) -> PathBuf {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{TEMP_PREFIX}{kind}-{}-{seq}", meta.id()))
    }

    /// Creates a temporary directory with an empty data file in it.
    fn create_temp(&self, kind: &str, meta: &SnapshotMeta) -> Result<(TempDir, File)> {
        let path = self.temp_path(kind, meta);
        fs::create_dir(&path).map_err(|e| Error::io("creating a temporary directory", &path, e))?;
        let temp = TempDir { path: Some(path) };
        let data_path = temp.path().join(DATA_FILE);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&data_path)
            .map_err(|e| Error::io("creating a snapshot data file", &data_path, e))?;
        Ok((temp, file))
    }

    /// Syncs `data`, writes the metadata, renames `temp` into place and syncs the directory.
    /// Returns the published metadata: `meta`, or the snapshot of the same entry that was
    /// already published (both capture the same state; the older one is kept).
    fn publish(&self, mut temp: TempDir, data: &File, meta: &SnapshotMeta) -> Result<SnapshotMeta> {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.check_writable()?;
        let fail = |op: &'static str, path: &Path, e: io::Error| {
            self.poison(op);
            Error::io(op, path, e)
        };
        let data_path = temp.path().join(DATA_FILE);
        data.sync_all()
            .map_err(|e| fail("syncing snapshot data", &data_path, e))?;
        let len = data
            .metadata()
            .map_err(|e| Error::io("reading the data file's length", &data_path, e))?
            .len();
        if len != meta.size_bytes {
            // Bytes were lost on the way to the file (a failed write that was not noticed):
            // never publish them.
            return Err(Error::Corrupt {
                path: data_path,
                reason: "data file length differs from the bytes written",
            });
        }
        let meta_path = temp.path().join(META_FILE);
        let mut meta_file = File::options()
            .write(true)
            .create_new(true)
            .open(&meta_path)
            .map_err(|e| Error::io("creating a metadata file", &meta_path, e))?;
        let encoded = format::encode_meta(meta).map_err(|e| Error::InvalidMeta {
            snapshot: meta.last_log_id,
            reason: e.reason(),
        })?;
        meta_file
            .write_all(&encoded)
            .map_err(|e| Error::io("writing a metadata file", &meta_path, e))?;
        meta_file
            .sync_all()
            .map_err(|e| fail("syncing a metadata file", &meta_path, e))?;
        sync_dir(temp.path()).map_err(|e| fail("syncing a snapshot directory", temp.path(), e))?;
        if let Some(existing) = self.published().get(&meta.last_log_id) {
            debug!(snapshot = %meta.last_log_id, "a snapshot of this entry is already published; keeping it");
            return Ok(existing.clone());
        }
        let final_path = self.dir.join(meta.id());
        fs::rename(temp.path(), &final_path)
            .map_err(|e| fail("publishing a snapshot (rename)", &final_path, e))?;
        temp.disarm();
        sync_dir(&self.dir).map_err(|e| fail("syncing the snapshot directory", &self.dir, e))?;
        self.published().insert(meta.last_log_id, meta.clone());
        info!(snapshot = %meta.last_log_id, bytes = meta.size_bytes, crc32 = meta.crc32, "snapshot published");
        self.prune();
        Ok(meta.clone())
    }

    /// Removes the oldest snapshots beyond `snapshots_kept`. Each is renamed to a temporary
    /// name first, so a crash never leaves a published directory half deleted. Called with
    /// the publishing lock held (or before the store is shared).
    fn prune(&self) {
        let excess: Vec<SnapshotMeta> = {
            let published = self.published();
            let count = published
                .len()
                .saturating_sub(self.config.snapshots_kept as usize);
            published.values().take(count).cloned().collect()
        };
        if excess.is_empty() {
            return;
        }
        let mut doomed = Vec::with_capacity(excess.len());
        for meta in &excess {
            let from = self.dir.join(meta.id());
            let to = self.temp_path("removed", meta);
            self.published().remove(&meta.last_log_id);
            match fs::rename(&from, &to) {
                Ok(()) => doomed.push(to),
                Err(error) => {
                    // Nothing changed on disk; the next prune (or open) tries again.
                    warn!(path = %from.display(), %error, "removing an old snapshot failed");
                    self.published().insert(meta.last_log_id, meta.clone());
                }
            }
        }
        if let Err(error) = sync_dir(&self.dir) {
            // The renames may be undone by a crash: the old snapshots then reappear and are
            // pruned again at open. Nothing durable depends on their removal.
            warn!(dir = %self.dir.display(), %error, "syncing after removing old snapshots failed");
        }
        for path in doomed {
            if let Err(error) = fs::remove_dir_all(&path) {
                warn!(path = %path.display(), %error, "deleting an old snapshot failed; removed at next open");
            }
        }
        debug!(removed = excess.len(), "old snapshots removed");
    }

    /// Reads a published snapshot's metadata and checks it against its directory.
    fn load_published(&self, path: &Path, id: LogId) -> Result<SnapshotMeta> {
        let meta_path = path.join(META_FILE);
        let mut file = File::open(&meta_path)
            .map_err(|e| Error::io("opening a metadata file", &meta_path, e))?;
        let limit = (format::META_HEADER_BYTES
            + format::META_BODY_BYTES_MAX
            + format::META_CRC_BYTES) as u64;
        let mut bytes = Vec::new();
        (&mut file)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("reading a metadata file", &meta_path, e))?;
        let meta = format::decode_meta(&bytes).map_err(|e| Error::Corrupt {
            path: meta_path.clone(),
            reason: e.reason(),
        })?;
        if meta.last_log_id != id {
            return Err(Error::Corrupt {
                path: meta_path,
                reason: "directory name differs from the metadata's last entry",
            });
        }
        let data_path = path.join(DATA_FILE);
        let len = fs::metadata(&data_path)
            .map_err(|e| Error::io("reading a data file's length", &data_path, e))?
            .len();
        if len != meta.size_bytes {
            return Err(Error::Corrupt {
                path: data_path,
                reason: "data file length differs from the metadata",
            });
        }
        Ok(meta)
    }

    /// Removes leftovers of a crash and loads the published snapshots.
    fn load(&self) -> Result<()> {
        let dir = &self.dir;
        let entries =
            fs::read_dir(dir).map_err(|e| Error::io("listing the snapshot directory", dir, e))?;
        let mut removed = 0u32;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing the snapshot directory", dir, e))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                warn!(path = %path.display(), "unknown entry in the snapshot directory; left alone");
                continue;
            };
            if name.starts_with(TEMP_PREFIX) {
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let result = if is_dir {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                result.map_err(|e| Error::io("removing a half-written snapshot", &path, e))?;
                info!(path = %path.display(), "half-written snapshot removed");
                removed += 1;
            } else if let Some(id) = format::parse_id(name) {
                let meta = self.load_published(&path, id)?;
                self.published().insert(id, meta);
            } else {
                warn!(path = %path.display(), "unknown entry in the snapshot directory; left alone");
            }
        }
        if removed > 0 {
            sync_dir(dir).map_err(|e| Error::io("syncing the snapshot directory", dir, e))?;
        }
        self.prune();
        Ok(())
    }
}

impl FileSnapshotStore {
    /// Opens (creating it if needed) the store in `dir` with the default [`StoreConfig`].
    /// Removes half-written snapshots and fails with [`Error::Corrupt`] if a published one is
    /// damaged. Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileSnapshotStore> {
        Self::open_with(dir, StoreConfig::default())
    }

    /// Like [`FileSnapshotStore::open`] with explicit limits.
    pub fn open_with(dir: impl AsRef<Path>, config: StoreConfig) -> Result<FileSnapshotStore> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io("creating the snapshot directory", &dir, e))?;
        let inner = Inner {
            dir,
            config,
            published: Mutex::new(BTreeMap::new()),
            publishing: Mutex::new(()),
            receiving: tokio::sync::Mutex::new(None),
            poisoned: Mutex::new(None),
            temp_seq: AtomicU64::new(0),
        };
        inner.load()?;
        debug!(dir = %inner.dir.display(), snapshots = inner.published().len(), "snapshot store opened");
        Ok(FileSnapshotStore {
            inner: Arc::new(inner),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The store's limits.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Every complete snapshot, oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotMeta> {
        self.inner.published().values().cloned().collect()
    }

    /// The snapshot being received and the offset expected next, if a transfer is in progress.
    pub async fn receiving(&self) -> Option<(LogId, u64)> {
        let slot = self.inner.receiving.lock().await;
        slot.as_ref().map(|r| (r.meta.last_log_id, r.next_offset))
    }

    /// Why `chunk` can never be taken, if it cannot.
    fn refusal(&self, chunk: &SnapshotChunk) -> Option<String> {
        if chunk.data.len() > self.inner.config.chunk_bytes_max as usize {
            return Some(format!(
                "chunk of {} bytes exceeds the limit of {} bytes",
                chunk.data.len(),
                self.inner.config.chunk_bytes_max
            ));
        }
        match self.inner.latest() {
            Some(latest) if chunk.meta.last_log_id <= latest.last_log_id => Some(format!(
                "snapshot {} is not newer than the latest snapshot {}",
                chunk.meta.last_log_id, latest.last_log_id
            )),
            _ => None,
        }
    }

    async fn receive(&self, chunk: &SnapshotChunk) -> Result<(ChunkStatus, u64)> {
        self.inner.check_writable()?;
        let mut slot = self.inner.receiving.lock().await;
        if let Some(reason) = self.refusal(chunk) {
            return Ok((ChunkStatus::Refused(reason), 0));
        }
        let same = slot
            .as_ref()
            .is_some_and(|r| same_transfer(&r.meta, &chunk.meta));
        if !same {
            if chunk.offset != 0 {
                let why = "no transfer of this snapshot in progress; start from offset 0";
                return Ok((ChunkStatus::Retry(why.into()), 0));
            }
            // Before anything is written: metadata that could not be stored and read back
            // would be published, and then stop every later open of the store.
            if let Err(error) = check_meta(&chunk.meta) {
                warn!(snapshot = %chunk.meta.last_log_id, %error, "snapshot chunk refused");
                return Ok((ChunkStatus::Refused(error.to_string()), 0));
            }
            let previous = slot.take();
            *slot = Some(self.start_receiving(previous, &chunk.meta).await?);
        }
        let receiving = slot.as_mut().expect("a transfer is in progress");
        let expected = receiving.next_offset;
        if chunk.offset != expected {
            let why = format!("expected offset {expected}, got {}", chunk.offset);
            return Ok((ChunkStatus::Retry(why), expected));
        }
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        let size = receiving.meta.size_bytes;
        if end > size || (chunk.done && end != size) {
            // The sender disagrees with its own metadata: start the transfer over.
            discard(slot.take()).await;
            let why = format!("chunk ends at {end}, the snapshot has {size} bytes");
            return Ok((ChunkStatus::Retry(why), 0));
        }
        match self.write_chunk(receiving, chunk).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(snapshot = %chunk.meta.last_log_id, offset = chunk.offset, "chunk checksum mismatch");
                return Ok((
                    ChunkStatus::Retry("chunk checksum mismatch".into()),
                    expected,
                ));
            }
            Err(error) => {
                discard(slot.take()).await;
                return Err(error);
            }
        }
        if !chunk.done {
            return Ok((ChunkStatus::Accepted, end));
        }
        let receiving = slot.take().expect("a transfer is in progress");
        if receiving.crc.clone().finalize() != receiving.meta.crc32 {
            warn!(snapshot = %chunk.meta.last_log_id, "whole-snapshot checksum mismatch");
            discard(Some(receiving)).await;
            let why = "whole-snapshot checksum mismatch; start over";
            return Ok((ChunkStatus::Retry(why.into()), 0));
        }
        let inner = self.inner.clone();
        blocking(move || {
            let Receiving {
                meta, temp, file, ..
            } = receiving;
            inner.publish(temp, &file, &meta)
        })
        .await?;
        Ok((ChunkStatus::Complete, end))
    }

    /// Replaces a partial transfer (if any) with a new one of `meta`.
    async fn start_receiving(
        &self,
        previous: Option<Receiving>,
        meta: &SnapshotMeta,
    ) -> Result<Receiving> {
        let inner = self.inner.clone();
        let for_temp = meta.clone();
        let (temp, file) = blocking(move || {
            // Dropping the partial transfer removes its temporary directory.
            drop(previous);
            inner.create_temp("received", &for_temp)
        })
        .await?;
        debug!(snapshot = %meta.last_log_id, bytes = meta.size_bytes, "receiving a snapshot");
        Ok(Receiving {
            meta: meta.clone(),
            temp,
            file: Arc::new(file),
            next_offset: 0,
            crc: crc32fast::Hasher::new(),
            unsynced_bytes: 0,
        })
    }

    /// Checks the chunk's CRC and writes it at its offset. `Ok(false)`: bad CRC, nothing
    /// written.
    async fn write_chunk(&self, receiving: &mut Receiving, chunk: &SnapshotChunk) -> Result<bool> {
        let file = receiving.file.clone();
        let data = chunk.data.clone();
        let offset = chunk.offset;
        let crc_expected = chunk.crc32;
        let len = data.len() as u64;
        let interval = self.inner.config.receive_sync_interval_bytes;
        let sync = interval > 0 && receiving.unsynced_bytes + len >= interval;
        let written = blocking(move || -> io::Result<Option<crc32fast::Hasher>> {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&data);
            if crc.clone().finalize() != crc_expected {
                return Ok(None);
            }
            file.write_all_at(&data, offset)?;
            if sync {
                // A failed sync throws this partial transfer away (the caller drops it): its
                // file is never trusted again.
                file.sync_data()?;
            }
            Ok(Some(crc))
        })
        .await
        .map_err(|e| Error::io("writing a received chunk", receiving.temp.path(), e))?;
        let Some(crc) = written else {
            return Ok(false);
        };
        receiving.crc.combine(&crc);
        receiving.next_offset = offset + len;
        receiving.unsynced_bytes = if sync {
            0
        } else {
            receiving.unsynced_bytes + len
        };
        Ok(true)
    }

    async fn read(&self, meta: &SnapshotMeta, offset: u64, len_bytes_max: u32) -> Result<Bytes> {
        let (meta, path) = self.inner.find(meta)?;
        if offset > meta.size_bytes {
            return Err(Error::Corrupt {
                path,
                reason: "read past the end of the snapshot",
            });
        }
        let len = (meta.size_bytes - offset)
            .min(u64::from(len_bytes_max))
            .min(u64::from(self.inner.config.chunk_bytes_max)) as usize;
        blocking(move || {
            let file =
                File::open(&path).map_err(|e| Error::io("opening snapshot data", &path, e))?;
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| Error::io("reading snapshot data", &path, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn begin_local(&self, mut meta: SnapshotMeta) -> Result<FileWriter> {
        self.inner.check_writable()?;
        check_meta(&meta)?;
        meta.size_bytes = 0;
        meta.crc32 = 0;
        meta.created_unix_ms = now_unix_ms();
        let inner = self.inner.clone();
        let for_temp = meta.clone();
        let (temp, file) = blocking(move || inner.create_temp("built", &for_temp)).await?;
        let for_sync = file
            .try_clone()
            .map_err(|e| Error::io("cloning the snapshot file handle", temp.path(), e))?;
        let config = &self.inner.config;
        Ok(FileWriter {
            inner: self.inner.clone(),
            meta,
            temp: Some(temp),
            file: tokio::fs::File::from_std(file),
            crc: crc32fast::Hasher::new(),
            size_bytes: 0,
            failed: false,
            pacing: Pacing::new(
                Arc::new(for_sync),
                config.write_sync_interval_bytes,
                config.write_bytes_per_sec_max,
            ),
        })
    }

    async fn open_reader(&self, meta: &SnapshotMeta) -> Result<VerifyingReader> {
        let (meta, path) = self.inner.find_entry(meta)?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io("opening snapshot data", &path, e))?;
        Ok(VerifyingReader {
            file,
            meta,
            crc: crc32fast::Hasher::new(),
            read_bytes: 0,
        })
    }
}

#[async_trait]
impl SnapshotStore for FileSnapshotStore {
    async fn begin(&self, meta: SnapshotMeta) -> Result<Box<dyn SnapshotWriter>, StorageError> {
        Ok(Box::new(self.begin_local(meta).await?))
    }

    async fn latest(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        Ok(self.inner.latest())
    }

    async fn open(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, StorageError> {
        Ok(Box::new(self.open_reader(meta).await?))
    }

    async fn read_chunk(
        &self,
        meta: &SnapshotMeta,
        offset: u64,
        len_bytes_max: u32,
    ) -> Result<Bytes, StorageError> {
        Ok(self.read(meta, offset, len_bytes_max).await?)
    }

    async fn receive_chunk(
        &self,
        chunk: &SnapshotChunk,
    ) -> Result<(ChunkStatus, u64), StorageError> {
        Ok(self.receive(chunk).await?)
    }
}

/// Streams a locally built snapshot into a temporary directory (see [`FileSnapshotStore`]).
#[derive(Debug)]
struct FileWriter {
    inner: Arc<Inner>,
    meta: SnapshotMeta,
    /// `None` once finished or aborted.
    temp: Option<TempDir>,
    file: tokio::fs::File,
    crc: crc32fast::Hasher,
    size_bytes: u64,
    /// A write or flush failed: tokio reports a failed background write only once, so the
    /// writer remembers it and `finish` refuses to publish.
    failed: bool,
    /// Periodic syncs and the write-rate limit.
    pacing: Pacing,
}

/// Spreads a local snapshot's writes: syncs every `sync_interval_bytes` and keeps under
/// `bytes_per_sec_max` (each 0 to turn it off).
struct Pacing {
    file: Arc<std::fs::File>,
    sync_interval_bytes: u64,
    bytes_per_sec_max: u64,
    unsynced_bytes: u64,
    started: tokio::time::Instant,
    written_bytes: u64,
    sync: Option<tokio::task::JoinHandle<io::Result<()>>>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Syncs started (tests).
    syncs: u64,
}

impl std::fmt::Debug for Pacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacing")
            .field("unsynced_bytes", &self.unsynced_bytes)
            .field("written_bytes", &self.written_bytes)
            .finish()
    }
}

impl Pacing {
    fn new(file: Arc<std::fs::File>, sync_interval_bytes: u64, bytes_per_sec_max: u64) -> Self {
        Pacing {
            file,
            sync_interval_bytes,
            bytes_per_sec_max,
            unsynced_bytes: 0,
            started: tokio::time::Instant::now(),
            written_bytes: 0,
            sync: None,
            pause: None,
            syncs: 0,
        }
    }

    /// Ready once a sync in progress ended and the rate allows the next write.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(sync) = self.sync.as_mut() {
            let done = std::task::ready!(Pin::new(sync).poll(cx));
            self.sync = None;
            done.map_err(io::Error::other)??;
        }
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        Poll::Ready(Ok(()))
    }

    /// Counts a write; starts a sync or a pause when due.
    fn wrote(&mut self, bytes: u64) {
        self.written_bytes += bytes;
        self.unsynced_bytes += bytes;
        if self.sync_interval_bytes > 0 && self.unsynced_bytes >= self.sync_interval_bytes {
            self.unsynced_bytes = 0;
            self.syncs += 1;
            let file = self.file.clone();
            self.sync = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        if self.bytes_per_sec_max > 0 {
            let due =
                Duration::from_secs_f64(self.written_bytes as f64 / self.bytes_per_sec_max as f64);
            let at = self.started + due;
            if at > tokio::time::Instant::now() {
                self.pause = Some(Box::pin(tokio::time::sleep_until(at)));
            }
        }
    }
}

impl AsyncWrite for FileWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pacing.sync.is_some() {
            // The bytes written so far must reach the file before the sync that follows.
            let flushed = std::task::ready!(Pin::new(&mut this.file).poll_flush(cx));
            this.failed |= flushed.is_err();
            flushed?;
        }
        let paced = std::task::ready!(this.pacing.poll_ready(cx));
        this.failed |= paced.is_err();
        paced?;
        let result = std::task::ready!(Pin::new(&mut this.file).poll_write(cx, buf));
        this.failed |= result.is_err();
        let written = result?;
        this.crc.update(&buf[..written]);
        this.size_bytes += written as u64;
        this.pacing.wrote(written as u64);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = std::task::ready!(Pin::new(&mut self.file).poll_flush(cx));
        self.failed |= result.is_err();
        Poll::Ready(result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = std::task::ready!(Pin::new(&mut self.file).poll_shutdown(cx));
        self.failed |= result.is_err();
        Poll::Ready(result)
    }
}

#[async_trait]
impl SnapshotWriter for FileWriter {
    async fn finish(mut self: Box<Self>) -> Result<SnapshotMeta, StorageError> {
        let temp = self.temp.take().expect("a writer is finished once");
        // Waits for tokio's background write and reports its error.
        self.file
            .flush()
            .await
            .map_err(|e| Error::io("writing snapshot data", temp.path(), e))?;
        if self.failed {
            let path = temp.path().join(DATA_FILE);
            blocking(move || drop(temp)).await;
            return Err(Error::io(
                "writing snapshot data",
                path,
                io::Error::other("an earlier write failed; the snapshot is incomplete"),
            )
            .into());
        }
        let FileWriter {
            inner,
            mut meta,
            file,
            crc,
            size_bytes,
            ..
        } = *self;
        meta.size_bytes = size_bytes;
        meta.crc32 = crc.finalize();
        let file = file.into_std().await;
        let published = blocking(move || inner.publish(temp, &file, &meta)).await?;
        Ok(published)
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(temp) = self.temp.take() {
            blocking(move || drop(temp)).await;
        }
    }
}

/// Reads a published snapshot and checks, at its end, that the bytes read have the size and
/// CRC32 of the metadata: a state machine never restores from damaged bytes silently.
#[derive(Debug)]
struct VerifyingReader {
    file: tokio::fs::File,
    meta: SnapshotMeta,
    crc: crc32fast::Hasher,
    read_bytes: u64,
}

impl AsyncRead for VerifyingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.file).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        this.crc.update(new);
        this.read_bytes += new.len() as u64;
        let at_end = new.is_empty() && buf.remaining() > 0;
        let damaged = this.read_bytes > this.meta.size_bytes
            || (at_end
                && (this.read_bytes != this.meta.size_bytes
                    || this.crc.clone().finalize() != this.meta.crc32));
        if damaged {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot {} does not match its size or checksum",
                    this.meta.last_log_id
                ),
            )));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod pacing_tests {
    use super::*;
    use raft_core::{LogId, Membership};
    use tokio::io::AsyncWriteExt;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: LogId::new(1, 10),
            membership: Membership::new_voters([1]),
            membership_log_id: LogId::ZERO,
            size_bytes: 0,
            crc32: 0,
            created_unix_ms: 0,
        }
    }

    /// A large local snapshot is synced as it is written, not only at the end.
    #[tokio::test]
    async fn a_local_snapshot_is_synced_every_interval() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            write_sync_interval_bytes: 1 << 20,
            ..StoreConfig::default()
        };
        let store = FileSnapshotStore::open_with(dir.path(), config).unwrap();
        let mut writer = store.begin_local(meta()).await.unwrap();
        let block = vec![7u8; 64 << 10];
        for _ in 0..64 {
            writer.write_all(&block).await.unwrap();
        }
        assert_eq!(writer.pacing.syncs, 4, "4 MiB in 1 MiB intervals");
        let published = Box::new(writer).finish().await.unwrap();
        assert_eq!(published.size_bytes, 4 << 20);
    }

    /// With a rate limit, writing takes at least as long as the rate says.
    #[tokio::test(start_paused = true)]
    async fn a_local_snapshot_is_written_at_most_at_the_rate_limit() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            write_sync_interval_bytes: 0,
            write_bytes_per_sec_max: 1 << 20,
            ..StoreConfig::default()
        };
        let store = FileSnapshotStore::open_with(dir.path(), config).unwrap();
        let mut writer = store.begin_local(meta()).await.unwrap();
        let started = tokio::time::Instant::now();
        let block = vec![7u8; 64 << 10];
        for _ in 0..48 {
            writer.write_all(&block).await.unwrap();
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(2_900),
            "3 MiB at 1 MiB/s took {took:?}"
        );
    }
}
