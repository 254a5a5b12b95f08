//! raft-log passes raft-core's log store conformance suite, through the async adapter, with
//! segments small enough that the suite's writes roll over many of them.

use std::path::PathBuf;

use raft_core::node::log_store_suite::{run_all, StoreFactory};
use raft_core::node::StorageError;
use raft_log::{Options, RaftLogStore};
use tempfile::TempDir;

/// Segments of 128 KiB: the suite's 100,000-byte entries fit, and its writes span many files.
const SEGMENT_BYTES: u64 = 128 << 10;

/// Creates each store in a fresh temporary directory; reopening opens the same directory.
struct Factory {
    dirs: Vec<TempDir>,
    direct_io: bool,
}

impl Factory {
    fn options(&self) -> Options {
        Options {
            segment_bytes: SEGMENT_BYTES,
            direct_io: self.direct_io,
        }
    }
}

impl StoreFactory for Factory {
    type Store = RaftLogStore;

    fn create(&mut self) -> Result<RaftLogStore, StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::io("tempdir", e))?;
        let store = RaftLogStore::open(dir.path(), self.options())?;
        self.dirs.push(dir);
        Ok(store)
    }

    fn reopen(&mut self, store: RaftLogStore) -> Result<RaftLogStore, StorageError> {
        let dir: PathBuf = store.log().dir().to_path_buf();
        drop(store);
        Ok(RaftLogStore::open(dir, self.options())?)
    }

    fn fail_next_write(&mut self, store: &RaftLogStore) -> bool {
        store.log().fail_next_write();
        true
    }
}

async fn passes_the_conformance_suite(direct_io: bool) {
    let mut factory = Factory {
        dirs: Vec::new(),
        direct_io,
    };
    let report = run_all(&mut factory).await;
    assert!(
        report.skipped.is_empty(),
        "checks skipped: {:?}",
        report.skipped
    );
    assert_eq!(report.passed.len(), 14, "checks run: {:?}", report.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_log_store_passes_the_conformance_suite() {
    passes_the_conformance_suite(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_log_store_with_direct_io_passes_the_conformance_suite() {
    passes_the_conformance_suite(true).await;
}
