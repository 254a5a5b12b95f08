//! Every step of every operation that changes the log can fail, or be cut short by a crash,
//! and the log stays whole: appends that roll into a new segment, truncations, purges and
//! hard state saves.
//!
//! For each operation the steps it makes through the I/O seam are counted; then for each step
//! `k`, on a fresh copy of the same log:
//! 1. step `k` fails: the operation returns the error and the log refuses further writes;
//! 2. the directory as it stands (the page cache survived) reopens to a log between the states
//!    before and after the operation;
//! 3. so does every crash image the model derives from the steps made before `k`
//!    (`io::model`: pending sectors in any subset, pending name changes as any prefix);
//! 4. each reopened log takes a new entry that survives another reopen (nothing left behind
//!    its end could be mistaken for records).
//!
//! Then the operation runs whole, and the same holds for its crash images.
//!
//! `RAFT_LOG_CRASH_SEEDS=<n>` (default 1) draws `n` random choices of pending sectors per
//! crash point instead of one.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use raft_core::{Entry, HardState, LogId};

use crate::io::fault::{FaultIo, Injected, Op};
use crate::io::model::{restore, Disk, Image};
use crate::{Error, Options, RaftLog};

/// Small segments: a few dozen entries fill one.
const SEGMENT_BYTES: u64 = 8 << 10;

fn options(direct_io: bool) -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        direct_io,
    }
}

/// A normal entry whose payload depends on its index and term.
fn entry(term: u64, index: u64, len: usize) -> Entry {
    let data: Bytes = (0..len)
        .map(|i| (index as usize * 13 + i) as u8 ^ term as u8)
        .collect();
    Entry::normal(term, index, data)
}

/// What a log holds, as its public API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Contents {
    hard_state: HardState,
    purged: LogId,
    last: LogId,
    entries: Vec<Entry>,
}

fn contents(log: &RaftLog) -> Contents {
    let state = log.state();
    let entries = log
        .entries(state.purged.index + 1, state.last.index + 1, u64::MAX)
        .expect("read the whole log");
    Contents {
        hard_state: state.hard_state,
        purged: state.purged,
        last: state.last,
        entries,
    }
}

/// An operation under test.
#[derive(Clone, Debug)]
enum Operation {
    Append(Vec<Entry>),
    Truncate(u64),
    Purge(LogId),
    SaveHardState(HardState),
}

impl Operation {
    fn run(&self, log: &RaftLog) -> crate::Result<()> {
        match self {
            Operation::Append(entries) => log.append(entries),
            Operation::Truncate(from) => log.truncate(*from),
            Operation::Purge(upto) => log.purge(*upto),
            Operation::SaveHardState(hard_state) => log.save_hard_state(*hard_state),
        }
    }

    /// What the log holds once the operation is complete.
    fn complete(&self, before: &Contents) -> Contents {
        let mut after = before.clone();
        match self {
            Operation::Append(entries) => {
                after.entries.extend(entries.iter().cloned());
                after.last = entries.last().expect("a batch").log_id();
            }
            Operation::Truncate(from) => {
                after.entries.retain(|e| e.index < *from);
                after.last = after.entries.last().map_or(after.purged, Entry::log_id);
            }
            Operation::Purge(upto) => {
                after.entries.retain(|e| e.index > upto.index);
                after.purged = *upto;
                if upto.index >= before.last.index {
                    after.last = *upto;
                }
            }
            Operation::SaveHardState(hard_state) => after.hard_state = *hard_state,
        }
        after
    }

    /// Whether `got` is a state the log may recover to when the operation was cut short:
    /// the state before it, the state after it, or one of the partial states it allows.
    fn allows(&self, before: &Contents, got: &Contents) -> bool {
        let after = self.complete(before);
        if *got == *before || *got == after {
            return true;
        }
        let same_entries_as = |other: &Contents, count: usize| {
            got.entries[..] == other.entries[..count] && got.purged == other.purged
        };
        match self {
            // Any prefix of the batch.
            Operation::Append(_) => {
                got.hard_state == before.hard_state
                    && got.entries.len() >= before.entries.len()
                    && got.entries.len() <= after.entries.len()
                    && same_entries_as(&after, got.entries.len())
            }
            // Any prefix of the old log that keeps what lies before the cut.
            Operation::Truncate(_) => {
                got.hard_state == before.hard_state
                    && got.entries.len() >= after.entries.len()
                    && got.entries.len() <= before.entries.len()
                    && same_entries_as(before, got.entries.len())
            }
            Operation::Purge(_) | Operation::SaveHardState(_) => false,
        }
    }
}

/// One log state and one operation on it.
struct Scenario {
    name: &'static str,
    /// Brings a new log to the state the operation starts from.
    setup: fn(&RaftLog),
    operation: Operation,
}

/// Appends single entries `first..=last`, each synced on its own: every record of the cut
/// range then claims a different synced length (`durable_bytes`).
fn append_one_by_one(log: &RaftLog, term: u64, first: u64, last: u64) {
    for index in first..=last {
        log.append(&[entry(term, index, 100)]).expect("append");
    }
}

/// 40 entries of 100 bytes, one sync each, in the first segment.
fn one_segment_of_single_syncs(log: &RaftLog) {
    append_one_by_one(log, 1, 1, 40);
    log.save_hard_state(HardState {
        term: 1,
        voted_for: Some(1),
        commit: 5,
    })
    .expect("save hard state");
}

/// 150 entries of 100 bytes in 3 segments (about 60 fit in one), one sync each.
fn three_segments(log: &RaftLog) {
    append_one_by_one(log, 1, 1, 150);
}

/// 500 entries in 9 segments, then a purge of the first 60: one purged file kept for reuse,
/// so that a purge of most of the rest fills the pool and deletes the others.
fn many_segments(log: &RaftLog) {
    let batch: Vec<Entry> = (1..=500).map(|index| entry(1, index, 100)).collect();
    log.append(&batch).expect("append");
    log.purge(LogId::new(1, 60)).expect("purge");
}

/// Segments made from purged files (their stale records still behind the new ones), the
/// last of them written one sync at a time.
fn recycled_segments(log: &RaftLog) {
    let batch: Vec<Entry> = (1..=300).map(|index| entry(1, index, 100)).collect();
    log.append(&batch).expect("append");
    log.purge(LogId::new(1, 290)).expect("purge");
    append_one_by_one(log, 2, 301, 400);
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "truncate across single-sync records of the last segment",
            setup: one_segment_of_single_syncs,
            operation: Operation::Truncate(8),
        },
        Scenario {
            name: "truncate the last entry",
            setup: one_segment_of_single_syncs,
            operation: Operation::Truncate(40),
        },
        Scenario {
            name: "truncate into the first of three segments",
            setup: three_segments,
            operation: Operation::Truncate(30),
        },
        Scenario {
            name: "truncate at the first entry of a segment",
            setup: three_segments,
            operation: Operation::Truncate(61),
        },
        Scenario {
            name: "truncate across single-sync records of recycled segments",
            setup: recycled_segments,
            operation: Operation::Truncate(330),
        },
        Scenario {
            name: "truncate into the middle of the last segment",
            setup: three_segments,
            operation: Operation::Truncate(140),
        },
        Scenario {
            name: "append a batch that rolls into a new segment",
            setup: three_segments,
            operation: Operation::Append((151..=220).map(|i| entry(2, i, 100)).collect()),
        },
        Scenario {
            name: "purge whole segments",
            setup: three_segments,
            operation: Operation::Purge(LogId::new(1, 130)),
        },
        Scenario {
            name: "purge past the last entry",
            setup: three_segments,
            operation: Operation::Purge(LogId::new(3, 170)),
        },
        Scenario {
            name: "purge more segments than the pool keeps",
            setup: many_segments,
            operation: Operation::Purge(LogId::new(1, 480)),
        },
        Scenario {
            name: "save the hard state",
            setup: one_segment_of_single_syncs,
            operation: Operation::SaveHardState(HardState {
                term: 2,
                voted_for: None,
                commit: 30,
            }),
        },
    ]
}

/// Random sector choices per crash point: `RAFT_LOG_CRASH_SEEDS`, default 1.
fn crash_seeds() -> u64 {
    std::env::var("RAFT_LOG_CRASH_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// The files of a directory.
fn image_of(dir: &Path) -> Image {
    let mut image = Image::new();
    for item in std::fs::read_dir(dir).expect("list") {
        let item = item.expect("list");
        let name = item.file_name().to_string_lossy().into_owned();
        image.insert(name, std::fs::read(item.path()).expect("read"));
    }
    image
}

/// A log that was just recovered holds a state the operation allows, and takes a new entry
/// that survives another reopen.
fn check_recovered(
    dir: &Path,
    options: Options,
    scenario: &Scenario,
    before: &Contents,
    context: &str,
) {
    let log = RaftLog::open(dir, options)
        .unwrap_or_else(|e| panic!("{}: {context}: reopen failed: {e}", scenario.name));
    let got = contents(&log);
    assert!(
        scenario.operation.allows(before, &got),
        "{}: {context}: recovered to a state the operation does not allow: last {:?}, purged \
         {:?}, {} entries, hard state {:?}",
        scenario.name,
        got.last,
        got.purged,
        got.entries.len(),
        got.hard_state,
    );
    let next = entry(9, got.last.index + 1, 60);
    log.append(std::slice::from_ref(&next))
        .unwrap_or_else(|e| panic!("{}: {context}: append after recovery: {e}", scenario.name));
    drop(log);
    let log = RaftLog::open(dir, options)
        .unwrap_or_else(|e| panic!("{}: {context}: second reopen failed: {e}", scenario.name));
    let mut expected = got;
    expected.entries.push(next.clone());
    expected.last = next.log_id();
    assert_eq!(
        contents(&log),
        expected,
        "{}: {context}: after a new entry",
        scenario.name
    );
}

/// Every crash image of the steps in `ops`, applied to `start` (the directory before the log
/// was opened), reopens to a state the operation allows.
fn check_crash_images(
    start: &Disk,
    ops: &[Op],
    options: Options,
    scenario: &Scenario,
    before: &Contents,
    context: &str,
) -> usize {
    let mut disk = start.clone();
    for op in ops {
        disk.apply(op);
    }
    let mut seen = BTreeSet::new();
    for seed in 0..crash_seeds() {
        for (what, image) in disk.crash_images(seed) {
            if !seen.insert(image.clone()) {
                continue;
            }
            let dir = restore(&image);
            let context = format!("{context}, crash image with {what} (seed {seed})");
            check_recovered(dir.path(), options, scenario, before, &context);
        }
    }
    seen.len()
}

/// Runs `scenario` with step `fail_at` failing (or whole, with `None`) on a fresh copy of
/// `setup_image`; returns the number of steps the operation made (counted up to the failure)
/// and of distinct crash images checked.
fn run_once(
    scenario: &Scenario,
    setup_image: &Image,
    options: Options,
    fail_at: Option<usize>,
) -> (usize, usize) {
    let dir = restore(setup_image);
    let start = Disk::load(dir.path());
    let (io, faults) = FaultIo::controlled();
    faults.start_recording();
    let log = RaftLog::open_with_io(dir.path(), options, io).expect("open the copy");
    let before = contents(&log);
    faults.arm(fail_at.map(|k| (k, Injected::Fail)), false);
    let result = scenario.operation.run(&log);
    let steps = faults.disarm().len();
    let context = format!("write mode direct {}, step {fail_at:?}", options.direct_io);
    match fail_at {
        Some(k) => {
            assert!(
                result.is_err(),
                "{}: {context}: the failed step {k} went unnoticed",
                scenario.name
            );
            assert!(
                log.is_poisoned(),
                "{}: {context}: not poisoned",
                scenario.name
            );
            let again = log.save_hard_state(before.hard_state);
            assert!(
                matches!(again, Err(Error::Poisoned { .. })),
                "{}: {context}: a write after the failure: {again:?}",
                scenario.name
            );
        }
        None => {
            result.unwrap_or_else(|e| panic!("{}: {context}: {e}", scenario.name));
            assert_eq!(
                contents(&log),
                scenario.operation.complete(&before),
                "{}: {context}: the operation's effect",
                scenario.name
            );
        }
    }
    drop(log);
    let ops = faults.take_recording();
    let images = check_crash_images(&start, &ops, options, scenario, &before, &context);
    let context = format!("{context}, reopened as it stands");
    check_recovered(dir.path(), options, scenario, &before, &context);
    (steps, images)
}

fn every_step_of(scenario: &Scenario, direct_io: bool) {
    let options = options(direct_io);
    let setup_dir = tempfile::tempdir().expect("temp dir");
    let log = RaftLog::open(setup_dir.path(), options).expect("open");
    (scenario.setup)(&log);
    drop(log);
    let setup_image = image_of(setup_dir.path());
    let (steps, mut images) = run_once(scenario, &setup_image, options, None);
    assert!(steps > 0, "{}: no step counted", scenario.name);
    for k in 0..steps {
        let (counted, more) = run_once(scenario, &setup_image, options, Some(k));
        assert_eq!(
            counted,
            k + 1,
            "{}: step {k} was not the last",
            scenario.name
        );
        images += more;
    }
    eprintln!(
        "{} (direct {direct_io}): {steps} steps, {images} crash images",
        scenario.name
    );
}

#[test]
fn every_step_of_every_operation_can_fail_or_crash_through_the_page_cache() {
    for scenario in scenarios() {
        every_step_of(&scenario, false);
    }
}

#[test]
fn every_step_of_every_operation_can_fail_or_crash_with_direct_io() {
    for scenario in scenarios() {
        every_step_of(&scenario, true);
    }
}
