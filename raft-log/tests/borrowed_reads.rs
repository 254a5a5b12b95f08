//! `RaftLog::entry_ref` reads what `entry` reads, checks the CRC on every read, and the bytes
//! it borrows stay unchanged: truncate and purge wait until every borrow is dropped, appends
//! do not.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use raft_core::LogId;
use raft_log::{Error, Options, RaftLog};

use common::{direct_io, entry, in_both_write_modes, path_in, records, segment_names, snapshot};

/// Small segments, so that the entries span several of them.
fn options() -> Options {
    Options {
        segment_bytes: 8 << 10,
        direct_io: direct_io(),
    }
}

fn filled(dir: &std::path::Path, entries: u64) -> RaftLog {
    let log = RaftLog::open(dir, options()).unwrap();
    let batch: Vec<_> = (1..=entries)
        .map(|index| entry(index / 10 + 1, index, (index as usize * 37) % 900, 3))
        .collect();
    log.append(&batch).unwrap();
    log
}

#[test]
fn entry_ref_reads_what_entry_reads_across_segments_and_reopens() {
    in_both_write_modes(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut log = filled(dir.path(), 200);
        assert!(segment_names(&snapshot(dir.path())).len() > 3);
        for round in 0..2 {
            if round == 1 {
                drop(log);
                log = RaftLog::open(dir.path(), options()).unwrap();
            }
            for index in 1..=200 {
                let copied = log.entry(index).unwrap();
                let borrowed = log.entry_ref(index).unwrap();
                assert_eq!(borrowed.to_entry(), copied, "index {index}");
                assert_eq!(borrowed.payload(), &copied.data[..]);
                assert_eq!(borrowed.log_id(), copied.log_id());
                assert_eq!((borrowed.index(), borrowed.kind()), (index, copied.kind));
            }
            for outside in [0, 201, u64::MAX] {
                assert!(matches!(
                    log.entry_ref(outside),
                    Err(Error::OutOfRange { .. })
                ));
                assert!(matches!(log.entry(outside), Err(Error::OutOfRange { .. })));
            }
        }
    });
}

#[test]
fn entry_ref_checks_the_crc_on_every_read() {
    in_both_write_modes(|| {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 20);
        assert_eq!(log.entry_ref(5).unwrap().index(), 5);
        // Bit rot under the open log: flip one payload byte of record 5 on disk.
        let name = &segment_names(&snapshot(dir.path()))[0];
        let path = path_in(dir.path(), name);
        let record = records(&std::fs::read(&path).unwrap())[4];
        assert_eq!(record.index, 5);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let at = (record.offset + 40) as u64;
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
        assert!(matches!(log.entry_ref(5), Err(Error::Corrupt { .. })));
        assert!(matches!(log.entry(5), Err(Error::Corrupt { .. })));
        assert_eq!(log.entry_ref(6).unwrap().index(), 6);
    });
}

#[test]
fn a_bit_flipped_in_any_byte_of_a_record_fails_its_reads() {
    in_both_write_modes(|| {
        // Payload sizes around the CRC's 512-bit path (from 228 bytes, with the 28 hashed header
        // bytes: 256) with and without a partial last block and padding, and one below it.
        let sizes = [300, 256, 228, 227, 100];
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(dir.path(), options()).unwrap();
        let batch: Vec<_> = (1..)
            .zip(sizes)
            .map(|(index, len)| entry(3, index, len, 0x5a))
            .collect();
        log.append(&batch).unwrap();
        let path = path_in(dir.path(), &segment_names(&snapshot(dir.path()))[0]);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        for record in records(&std::fs::read(&path).unwrap()) {
            let index = record.index;
            for at in record.offset..record.offset + record.total_bytes {
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, at as u64).unwrap();
                file.write_all_at(&[byte[0] ^ 0x10], at as u64).unwrap();
                let what = format!("entry {index}, byte {} of its record", at - record.offset);
                assert!(
                    matches!(log.entry(index), Err(Error::Corrupt { .. })),
                    "{what}"
                );
                assert!(
                    matches!(log.entry_ref(index), Err(Error::Corrupt { .. })),
                    "{what}"
                );
                file.write_all_at(&byte, at as u64).unwrap();
                assert_eq!(
                    log.entry(index).unwrap(),
                    batch[index as usize - 1],
                    "{what}"
                );
            }
        }
    });
}

#[test]
fn appends_go_on_while_an_entry_is_borrowed() {
    in_both_write_modes(|| {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 50);
        let before = log.entry(50).unwrap();
        let borrowed = log.entry_ref(50).unwrap();
        // Enough appends to roll into new segments; none of them waits for the borrow.
        for index in 51..=150 {
            log.append(&[entry(9, index, 700, 1)]).unwrap();
        }
        let second = log.entry_ref(150).unwrap();
        assert_eq!(borrowed.payload(), &before.data[..]);
        assert_eq!(second.to_entry(), entry(9, 150, 700, 1));
    });
}

/// Runs `op` on another thread while this one holds a borrowed entry: `op` must not finish
/// before the borrow is dropped, and the borrowed bytes must not change meanwhile.
fn waits_for_the_borrow(log: &RaftLog, index: u64, op: impl FnOnce(&RaftLog) + Send) {
    let expected = log.entry(index).unwrap();
    let borrowed = log.entry_ref(index).unwrap();
    let done = AtomicBool::new(false);
    let (started_tx, started_rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            started_tx.send(()).unwrap();
            op(log);
            done.store(true, Ordering::SeqCst);
        });
        started_rx.recv().unwrap();
        // Give the operation every chance to run ahead; it must still be waiting. (No timing
        // is asserted: a correct log never sets `done` here, however long this sleeps.)
        std::thread::sleep(Duration::from_millis(200));
        assert!(!done.load(Ordering::SeqCst), "finished under a live borrow");
        assert_eq!(borrowed.payload(), &expected.data[..]);
        drop(borrowed);
        worker.join().unwrap();
    });
    assert!(done.load(Ordering::SeqCst));
}

#[test]
fn truncate_waits_until_borrowed_entries_are_dropped() {
    in_both_write_modes(|| {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 100);
        waits_for_the_borrow(&log, 60, |log| log.truncate(40).unwrap());
        assert_eq!(log.last_index(), 39);
        assert!(matches!(log.entry_ref(60), Err(Error::OutOfRange { .. })));
        // Rewritten in place after the truncation: the new bytes are read.
        log.append(&[entry(7, 40, 123, 9)]).unwrap();
        assert_eq!(log.entry_ref(40).unwrap().to_entry(), entry(7, 40, 123, 9));
    });
}

#[test]
fn purge_waits_until_borrowed_entries_are_dropped() {
    in_both_write_modes(|| {
        let dir = tempfile::tempdir().unwrap();
        let log = filled(dir.path(), 100);
        waits_for_the_borrow(&log, 3, |log| log.purge(LogId::new(10, 100)).unwrap());
        assert_eq!((log.first_index(), log.last_index()), (101, 100));
        // New segments reuse the purged files; borrowed reads see only the new records.
        let batch: Vec<_> = (101..=200).map(|index| entry(11, index, 500, 4)).collect();
        log.append(&batch).unwrap();
        for index in 101..=200 {
            assert_eq!(
                log.entry_ref(index).unwrap().to_entry(),
                batch[index as usize - 101]
            );
        }
    });
}

/// Two truncations or purges that both wait for the same borrowed entry both finish once it is
/// dropped (the second one used to lose its wake-up and wait forever). The rewrites run on
/// threads of their own, so that a hang fails the test instead of hanging it.
#[test]
fn two_rewrites_waiting_for_one_borrow_both_finish() {
    in_both_write_modes(|| {
        let dir = tempfile::tempdir().unwrap();
        let log = std::sync::Arc::new(filled(dir.path(), 100));
        let borrowed = log.entry_ref(50).unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        type Rewrite = fn(&RaftLog);
        let rewrites: [(&str, Rewrite); 2] = [
            ("truncate", |log| log.truncate(90).unwrap()),
            ("purge", |log| log.purge(LogId::new(9, 10)).unwrap()),
        ];
        for (name, rewrite) in rewrites {
            let (log, done_tx) = (std::sync::Arc::clone(&log), done_tx.clone());
            std::thread::spawn(move || {
                rewrite(&log);
                done_tx.send(name).unwrap();
            });
        }
        // Let both start waiting for the borrow (nothing is asserted about timing).
        std::thread::sleep(Duration::from_millis(200));
        drop(borrowed);
        for _ in 0..2 {
            // A generous bound that only a lost wake-up exceeds.
            let finished = done_rx.recv_timeout(Duration::from_secs(60));
            assert!(
                finished.is_ok(),
                "a rewrite waited forever after the borrow was dropped"
            );
        }
        assert_eq!((log.first_index(), log.last_index()), (11, 89));
    });
}
