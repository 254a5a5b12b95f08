//! A log directory is opened by one process at a time: a second open fails with an error that
//! names the directory and the holder's pid, until the first log is dropped.

use raft_core::Entry;
use raft_log::{DirLock, Error, Options, RaftLog, LOCK_FILE};

#[test]
fn a_second_open_of_a_log_directory_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open(dir.path(), Options::default()).unwrap();
    log.append(&[Entry::normal(1, 1, "kept")]).unwrap();
    match RaftLog::open(dir.path(), Options::default()) {
        Err(error @ Error::Locked { .. }) => {
            let Error::Locked { dir: locked, pid } = &error else {
                unreachable!()
            };
            assert_eq!(locked, dir.path());
            assert_eq!(*pid, Some(std::process::id()));
            let message = error.to_string();
            assert!(
                message.contains(&dir.path().display().to_string())
                    && message.contains(&format!("pid {}", std::process::id())),
                "{message}"
            );
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second open of a locked log directory succeeded"),
    }
    // The refused open changed nothing: the first log goes on, and a later open finds it all.
    log.append(&[Entry::normal(1, 2, "also kept")]).unwrap();
    drop(log);
    let log = RaftLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.last_index(), 2);
}

#[test]
fn a_directory_lock_keeps_a_log_out_and_says_who_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let lock = DirLock::acquire(dir.path()).unwrap();
    assert_eq!(lock.dir(), dir.path());
    let pid = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
    assert!(matches!(
        RaftLog::open(dir.path(), Options::default()),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(
        DirLock::acquire(dir.path()),
        Err(Error::Locked { .. })
    ));
    drop(lock);
    RaftLog::open(dir.path(), Options::default()).unwrap();
}
