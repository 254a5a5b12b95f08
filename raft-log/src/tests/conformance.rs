//! raft-log passes raft-core's log store conformance suite, through the async adapter, with
//! segments small enough that the suite's writes roll over many of them. A unit test, not an
//! integration test: the suite's poison check fails a write through the I/O seam, which only
//! the crate's own tests can steer.

use std::path::PathBuf;
use std::sync::Arc;

use raft_core::node::log_store_suite::{run_all, StoreFactory};
use raft_core::node::StorageError;
use tempfile::TempDir;

use crate::io::fault::{FaultIo, Faults, Injected};
use crate::{Options, RaftLog, RaftLogStore};

/// Segments of 128 KiB: the suite's 100,000-byte entries fit, and its writes span many files.
const SEGMENT_BYTES: u64 = 128 << 10;

/// Creates each store in a fresh temporary directory; reopening opens the same directory.
struct Factory {
    dirs: Vec<TempDir>,
    direct_io: bool,
    /// The switchboard of each store's I/O seam, by directory.
    faults: Vec<(PathBuf, Arc<Faults>)>,
}

impl Factory {
    fn options(&self) -> Options {
        Options {
            segment_bytes: SEGMENT_BYTES,
            direct_io: self.direct_io,
        }
    }

    fn open(&mut self, dir: PathBuf) -> Result<RaftLogStore, StorageError> {
        let (io, faults) = FaultIo::controlled();
        let log = RaftLog::open_with_io(&dir, self.options(), io)?;
        self.faults.retain(|(known, _)| *known != dir);
        self.faults.push((dir, faults));
        Ok(RaftLogStore::new(log))
    }
}

impl StoreFactory for Factory {
    type Store = RaftLogStore;

    fn create(&mut self) -> Result<RaftLogStore, StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::io("tempdir", e))?;
        let store = self.open(dir.path().to_path_buf())?;
        self.dirs.push(dir);
        Ok(store)
    }

    fn reopen(&mut self, store: RaftLogStore) -> Result<RaftLogStore, StorageError> {
        let dir: PathBuf = store.log().dir().to_path_buf();
        drop(store);
        self.open(dir)
    }

    /// The next step through the seam fails, on whichever thread of the blocking pool the
    /// store's next write runs.
    fn fail_next_write(&mut self, store: &RaftLogStore) -> bool {
        let dir = store.log().dir();
        let (_, faults) = self
            .faults
            .iter()
            .find(|(known, _)| known == dir)
            .expect("a store this factory opened");
        faults.arm(Some((0, Injected::Fail)), true);
        true
    }
}

async fn passes_the_conformance_suite(direct_io: bool) {
    let mut factory = Factory {
        dirs: Vec::new(),
        direct_io,
        faults: Vec::new(),
    };
    let report = run_all(&mut factory).await;
    assert!(
        report.skipped.is_empty(),
        "checks skipped: {:?}",
        report.skipped
    );
    assert_eq!(report.passed.len(), 15, "checks run: {:?}", report.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_log_store_passes_the_conformance_suite() {
    passes_the_conformance_suite(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_log_store_with_direct_io_passes_the_conformance_suite() {
    passes_the_conformance_suite(true).await;
}
