//! The seam between the node and its snapshot store: raft-snapshot's durable
//! [`FileSnapshotStore`] in the data directory's `snapshots/` folder.
//!
//! Snapshots are durable, so automatic snapshots are on by default and the log is purged
//! below them (keeping `snapshot_trailing_entries` for slow followers): a restart restores
//! the newest snapshot, then replays the log after it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use raft_snapshot::{FileSnapshotStore, StoreConfig};

/// The snapshot store the node uses.
pub type Snapshots = FileSnapshotStore;

/// Whether snapshots survive a restart.
pub const DURABLE: bool = true;

/// Default `snapshot_distance`: raft-core's default (a snapshot every 100,000 entries).
pub const SNAPSHOT_DISTANCE_DEFAULT: u64 = 100_000;

/// Default `snapshot_trailing_entries`: raft-core's default (10,000 entries kept below a
/// snapshot).
pub const SNAPSHOT_TRAILING_ENTRIES_DEFAULT: u64 = 10_000;

/// Opens the snapshot store of a data directory.
pub fn open(dir: &Path) -> anyhow::Result<Arc<Snapshots>> {
    open_with(dir, 0)
}

/// Opens the snapshot store of a data directory; snapshots built here are written at most
/// `write_bytes_per_sec_max` bytes per second (0: no limit) and synced every 16 MiB.
pub fn open_with(dir: &Path, write_bytes_per_sec_max: u64) -> anyhow::Result<Arc<Snapshots>> {
    let config = StoreConfig {
        write_bytes_per_sec_max,
        ..StoreConfig::default()
    };
    let store = FileSnapshotStore::open_with(dir, config)
        .with_context(|| format!("opening the snapshot store in {}", dir.display()))?;
    Ok(Arc::new(store))
}
