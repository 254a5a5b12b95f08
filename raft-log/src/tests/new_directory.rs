//! A new log directory is durable before the log in it is used: each directory `open` creates
//! is followed by a sync of the directory holding it (a crash could otherwise lose the new
//! directory's entry, and every acknowledged write in it).

use std::os::unix::fs::MetadataExt;

use raft_core::Entry;

use crate::io::fault::{FaultIo, Op};
use crate::{Options, RaftLog};

#[test]
fn opening_a_new_log_syncs_each_new_directorys_parent_first() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("a").join("b").join("log");
    let (io, faults) = FaultIo::controlled();
    faults.start_recording();
    let log = RaftLog::open_with_io(&dir, Options::default(), io).expect("open");
    log.append(&[Entry::normal(1, 1, "x")]).expect("append");
    drop(log);
    let ops = faults.take_recording();
    let ino = |path: &std::path::Path| std::fs::metadata(path).expect("stat").ino();
    let mut expected = Vec::new();
    for created in [root.path().join("a"), root.path().join("a/b"), dir.clone()] {
        let parent = created.parent().expect("a parent").to_path_buf();
        expected.push(Op::CreateDir { path: created });
        expected.push(Op::SyncDir { ino: ino(&parent) });
    }
    assert_eq!(ops[..expected.len()], expected[..], "all steps: {ops:?}");
}
