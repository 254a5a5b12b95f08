//! Reads run concurrently with appends, truncations, purges and reopens, in both write modes:
//! every read returns the bytes that were appended, or says the index is out of range; none
//! panics, none sees another entry's bytes.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::entry;
use raft_core::{Entry, LogId};
use raft_log::{Error, Options, RaftLog};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn options(segment_bytes: u64, direct_io: bool) -> Options {
    Options {
        segment_bytes,
        direct_io,
    }
}

/// Reads the newest entry over and over until `stop`.
fn read_the_newest_until(log: Arc<RaftLog>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match log.entry(log.last_index()) {
                Ok(_) | Err(Error::OutOfRange { .. }) => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
    })
}

#[test]
fn reads_concurrent_with_truncations_across_segments_never_fail() {
    for direct_io in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(RaftLog::open(dir.path(), options(4 << 10, direct_io)).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = read_the_newest_until(Arc::clone(&log), Arc::clone(&stop));
        for round in 1..=200u64 {
            // 30 records of 336 bytes span three segments; the truncation removes two.
            let first = log.last_index() + 1;
            let batch: Vec<Entry> = (first..first + 30)
                .map(|i| entry(round, i, 300, 1))
                .collect();
            log.append(&batch).unwrap();
            log.truncate(first + 1).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader panicked");
        assert_eq!(log.last_index(), 200);
    }
}

/// The payload of the entry at `index` in `term`: recognisable, so that a read of the wrong
/// bytes is caught.
fn payload(term: u64, index: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| ((index as usize).wrapping_mul(131) ^ (term as usize * 17) ^ i) as u8)
        .collect()
}

fn check(entry: &Entry) {
    assert_eq!(
        entry.data,
        payload(entry.term, entry.index, entry.data.len()),
        "entry {} of term {} has other bytes",
        entry.index,
        entry.term
    );
}

/// Payload sizes whose records end on, just before and just after 4 KiB block boundaries,
/// and some at random.
fn payload_bytes(rng: &mut SmallRng, max: usize) -> usize {
    const NEAR_BLOCKS: [usize; 19] = [
        0, 1, 7, 8, 24, 100, 480, 992, 2016, 4032, 4033, 4056, 4064, 4072, 4096, 4100, 8128, 8160,
        8192,
    ];
    let bytes = if rng.gen_bool(0.7) {
        NEAR_BLOCKS[rng.gen_range(0..NEAR_BLOCKS.len())]
    } else {
        rng.gen_range(0..9000)
    };
    bytes.min(max)
}

/// What the log must hold: (term, payload length) by index, the purge point, the next term.
#[derive(Default)]
struct Model {
    entries: BTreeMap<u64, (u64, usize)>,
    purged: u64,
    term: u64,
}

/// Every entry of the model is in `log`, byte for byte.
fn check_against(log: &RaftLog, model: &Model, round: u64) {
    assert_eq!(log.first_index(), model.purged + 1, "round {round}");
    let last = model
        .entries
        .keys()
        .next_back()
        .copied()
        .unwrap_or(model.purged);
    assert_eq!(log.last_index(), last, "round {round}");
    for (&index, &(term, len)) in &model.entries {
        let stored = log.entry(index).unwrap();
        assert_eq!(
            (stored.term, stored.data.len()),
            (term, len),
            "round {round}, {index}"
        );
        check(&stored);
    }
}

/// Two threads submit batches (waiting for most), one reads the newest entries through
/// `entry_ref` and `entries`, and the main thread truncates and purges meanwhile; then the log
/// is reopened and checked against the model. Six rounds.
fn appends_reads_truncations_and_purges(segment_bytes: u64, seed: u64, direct_io: bool) {
    let options = options(segment_bytes, direct_io);
    let payload_max = options.entry_bytes_max() as usize;
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(Mutex::new(Model {
        term: 1,
        ..Model::default()
    }));
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..6 {
        let log = Arc::new(RaftLog::open(dir.path(), options).unwrap());
        check_against(&log, &model.lock().unwrap(), round);
        let appenders: Vec<_> = (0..2)
            .map(|thread| {
                let (log, model) = (Arc::clone(&log), Arc::clone(&model));
                let mut rng = SmallRng::seed_from_u64(seed ^ (round * 10 + thread + 1));
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let ticket = {
                            let mut model = model.lock().unwrap();
                            let first = log.last_index() + 1;
                            let term = model.term;
                            let batch: Vec<Entry> = (first..first + rng.gen_range(1..5))
                                .map(|index| {
                                    let bytes = payload_bytes(&mut rng, payload_max);
                                    Entry::normal(term, index, payload(term, index, bytes))
                                })
                                .collect();
                            let ticket = log.submit(&batch).unwrap();
                            for e in &batch {
                                model.entries.insert(e.index, (e.term, e.data.len()));
                            }
                            ticket
                        };
                        if rng.gen_bool(0.8) {
                            log.wait(ticket).unwrap();
                        }
                    }
                })
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (first, last) = (log.first_index(), log.last_index());
                    match log.entry_ref(last) {
                        Ok(borrowed) => check(&borrowed.to_entry()),
                        Err(Error::OutOfRange { .. }) => {}
                        Err(e) => panic!("entry_ref({last}) failed: {e}"),
                    }
                    match log.entries(last.saturating_sub(8).max(first), last + 1, u64::MAX) {
                        Ok(entries) => entries.iter().for_each(check),
                        Err(Error::OutOfRange { .. }) => {}
                        Err(e) => panic!("entries up to {last} failed: {e}"),
                    }
                }
            })
        };
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(rng.gen_range(1..15)));
            let mut model = model.lock().unwrap();
            let (first, last) = (log.first_index(), log.last_index());
            if last < first + 2 {
                continue;
            }
            if rng.gen_bool(0.6) {
                let from = rng.gen_range(first + 1..=last);
                log.truncate(from).unwrap();
                model.entries.split_off(&from);
                model.term += 1;
            } else {
                let upto = rng.gen_range(first..last);
                let term = log.term(upto).unwrap();
                log.purge(LogId::new(term, upto)).unwrap();
                model.entries = model.entries.split_off(&(upto + 1));
                model.purged = upto;
            }
        }
        for appender in appenders {
            appender.join().expect("appender panicked");
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader panicked");
        // Batches submitted without a wait become durable with the next sync.
        log.wait(log.submit(&[]).unwrap()).unwrap();
    }
    let log = RaftLog::open(dir.path(), options).unwrap();
    check_against(&log, &model.lock().unwrap(), 6);
}

#[test]
fn appends_reads_truncations_and_purges_through_the_page_cache() {
    for seed in 0..2 {
        appends_reads_truncations_and_purges(20 << 10, seed, false);
    }
}

#[test]
fn appends_reads_truncations_and_purges_with_direct_io() {
    for seed in 0..2 {
        appends_reads_truncations_and_purges(20 << 10, seed, true);
    }
    appends_reads_truncations_and_purges(4 << 10, 100, true);
    appends_reads_truncations_and_purges(256 << 10, 7, true);
}
