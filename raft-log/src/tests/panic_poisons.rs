//! A panic while writing poisons the log, as a failed write does: the writer state or the
//! files may be half changed, so later writes are refused (never waited for forever) until
//! the log is reopened, and the reopened log is whole.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use raft_core::{Entry, HardState};

use crate::io::fault::{FaultIo, Injected};
use crate::{Error, Options, RaftLog};

fn options() -> Options {
    Options {
        segment_bytes: 8 << 10,
        ..Options::default()
    }
}

fn entries(first: u64, last: u64) -> Vec<Entry> {
    (first..=last)
        .map(|index| Entry::normal(1, index, vec![index as u8; 90]))
        .collect()
}

/// Runs `write` on a thread of its own and returns its result, or panics if it never returns
/// (a generous bound that only a write waiting forever exceeds).
fn finishes(log: &Arc<RaftLog>, write: fn(&RaftLog) -> crate::Result<()>) -> crate::Result<()> {
    let (done_tx, done_rx) = mpsc::channel();
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        let result = write(&log);
        // Before answering: the caller reopens the log once every handle is gone.
        drop(log);
        done_tx.send(result)
    });
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a write after the panic waited forever")
}

#[test]
fn a_panic_at_any_step_of_a_truncation_poisons_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = RaftLog::open(dir.path(), options()).expect("open");
    for batch in 0..10 {
        log.append(&entries(batch * 10 + 1, batch * 10 + 10))
            .expect("append");
    }
    drop(log);
    let (io, faults) = FaultIo::controlled();
    let log = RaftLog::open_with_io(dir.path(), options(), io).expect("open");
    faults.arm(None, false);
    log.truncate(95).expect("truncate");
    let steps = faults.disarm().len();
    drop(log);
    for k in 0..steps {
        let (io, faults) = FaultIo::controlled();
        let log = Arc::new(RaftLog::open_with_io(dir.path(), options(), io).expect("open"));
        let from = log.last_index() - 5;
        faults.arm(Some((k, Injected::Panic)), false);
        let panicked = catch_unwind(AssertUnwindSafe(|| log.truncate(from)));
        faults.disarm();
        assert!(panicked.is_err(), "step {k}: no panic");
        let after = finishes(&log, |log| log.save_hard_state(HardState::default()));
        assert!(
            matches!(after, Err(Error::Poisoned { .. })),
            "step {k}: a write after the panic: {after:?}"
        );
        assert!(log.is_poisoned(), "step {k}");
        drop(log);
        let log = RaftLog::open(dir.path(), options()).expect("reopen");
        let last = log.last_index();
        assert!(
            (from - 1..=from + 5).contains(&last),
            "step {k}: last {last}"
        );
        log.append(&entries(last + 1, last + 10)).expect("append");
    }
}

#[test]
fn a_panic_in_the_group_sync_poisons_the_log_instead_of_hanging_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (io, faults) = FaultIo::controlled();
    let log = Arc::new(RaftLog::open_with_io(dir.path(), options(), io).expect("open"));
    log.append(&entries(1, 3)).expect("append");
    // An append's steps: the write, then the sync, which runs without the writer lock.
    faults.arm(None, false);
    log.append(&entries(4, 4)).expect("append");
    assert_eq!(faults.disarm(), ["write", "sync"]);
    let panicking = {
        let (log, faults) = (Arc::clone(&log), Arc::clone(&faults));
        std::thread::spawn(move || {
            faults.arm(Some((1, Injected::Panic)), false);
            log.append(&entries(5, 5))
        })
    };
    assert!(panicking.join().is_err(), "the sync did not panic");
    let after = finishes(&log, |log| log.append(&entries(6, 6)));
    assert!(
        matches!(after, Err(Error::Poisoned { .. })),
        "an append after the panic: {after:?}"
    );
    drop(log);
    let log = RaftLog::open(dir.path(), options()).expect("reopen");
    assert!((4..=5).contains(&log.last_index()));
}
