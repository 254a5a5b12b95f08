//! Durable appends of raft-log (default options and `direct_io`) and of the plain-file floor,
//! alternating in short rounds inside one process, so that all three see the same disk.
//!
//! The criterion benchmark (`benches/log_store.rs`) runs each store for seconds, one after the
//! other, and this VM's disk drifts by 10-20 % between them; here each round times a few
//! hundred durable batches of each store in turn (the order rotating), and the ratios are
//! taken per round. raft-log is in its steady state, as in the benchmark: five segments
//! written and purged first, purged after every round (untimed), so new segments are
//! recycled files. The floor copies payloads into a buffer and `pwrite`s it into a
//! zero-filled file, then `fdatasync`s. A second floor, in its own file, is timed against the
//! first like the logs: its ratio (ideally 1.00x) is how far apart this driver sees two runs
//! of the very same writes, the smallest difference it can resolve. A third floor writes as
//! many bytes per entry as raft-log's records (a header's worth of zeros before each
//! payload; records have no padding for payloads of a multiple of 8 bytes, as here), from
//! the same offset in its file as after a segment header: raft-log's rate over that floor's
//! is what raft-log costs beyond the bytes its format writes.
//!
//! ```text
//! cargo run --release -p benches --example append_alternating -- [rounds] [workloads]
//! ```
//! `rounds` defaults to 8; `workloads` is a comma-separated list of `<entry bytes>x<batch>`,
//! by default the six of the benchmark.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use raft_core::{Entry, LogId};
use raft_log::floor::Floor;
use raft_log::format::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use raft_log::{Options, RaftLog, FREE_SEGMENTS_MAX};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

/// Bytes appended per round and store, at most (fewer batches for large ones).
const ROUND_BYTES_MAX: u64 = 64 << 20;
/// Durable batches per round and store, at most.
const ROUND_BATCHES_MAX: u64 = 1000;
/// Entries per batch while a log is brought to its steady state.
const WARM_UP_BATCH: usize = 1024;
/// Size of the floor's zero-filled file; it is written round-robin.
const FLOOR_FILE_BYTES: u64 = 256 << 20;

/// Stores timed in every round: raft-log default, raft-log `direct_io`, the floor, the floor
/// again in a second file, and the floor writing record-sized entries.
const STORES: usize = 5;
/// Which of them the ratios are taken against.
const FLOOR: usize = 2;
/// The floor writing as many bytes per entry as raft-log, at the same offsets.
const RECORD_FLOOR: usize = 4;

const WORKLOADS_DEFAULT: &str = "256x1,256x64,256x1024,4096x1,4096x64,4096x1024";

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(8, |s| s.parse().expect("rounds"));
    let workloads = args.next().unwrap_or_else(|| WORKLOADS_DEFAULT.to_string());
    println!("{rounds} rounds; µs per durable batch (medians), each rate over the floor's");
    for workload in workloads.split(',') {
        let (entry_bytes, batch) = workload.split_once('x').expect("<entry bytes>x<batch>");
        measure(
            entry_bytes.parse().expect("entry bytes"),
            batch.parse().expect("batch"),
            rounds,
        );
    }
}

/// A raft-log in its steady state, and where its next append starts.
struct SteadyLog {
    log: RaftLog,
    next: u64,
}

impl SteadyLog {
    fn open(dir: &Path, direct_io: bool, payloads: &[Bytes]) -> SteadyLog {
        let options = Options {
            direct_io,
            ..Options::default()
        };
        let log = RaftLog::open(dir, options).expect("open raft-log");
        assert_eq!(log.direct_io(), direct_io, "direct I/O not available here");
        let mut steady = SteadyLog { log, next: 1 };
        // Warmed up in batches of `WARM_UP_BATCH` entries whatever the workload's batch.
        let warm_up: Vec<Bytes> = payloads
            .iter()
            .cycle()
            .take(WARM_UP_BATCH)
            .cloned()
            .collect();
        let record_bytes = (payloads[0].len() + RECORD_HEADER_BYTES) as u64;
        let warm_up_batches = (FREE_SEGMENTS_MAX as u64 + 1) * options.segment_bytes
            / (record_bytes * WARM_UP_BATCH as u64);
        steady.append_batches(&warm_up, warm_up_batches + 1);
        steady.purge();
        steady
    }

    fn append_batches(&mut self, payloads: &[Bytes], batches: u64) -> f64 {
        let per = payloads.len() as u64;
        let inputs: Vec<Vec<Entry>> = (0..batches)
            .map(|k| {
                let first = self.next + k * per;
                (first..)
                    .zip(payloads)
                    .map(|(index, data)| Entry::normal(1, index, data.clone()))
                    .collect()
            })
            .collect();
        self.next += batches * per;
        let start = Instant::now();
        for entries in inputs {
            self.log.append(&entries).expect("append");
        }
        start.elapsed().as_secs_f64()
    }

    fn purge(&mut self) {
        self.log.purge(LogId::new(1, self.next - 1)).expect("purge");
    }
}

/// The floor ([`raft_log::floor::Floor`]): payloads back to back (each after
/// `header_bytes` zeros), from offset `start` of a zero-filled file, `pwrite` + `fdatasync`
/// per batch.
struct FloorFile(Floor);

impl FloorFile {
    fn open(path: &Path) -> FloorFile {
        FloorFile::with_headers(path, 0, 0)
    }

    /// A floor that writes as many bytes per entry as raft-log, from the offset of the first
    /// record of a segment.
    fn record_sized(path: &Path) -> FloorFile {
        FloorFile::with_headers(path, SEGMENT_HEADER_BYTES as u64, RECORD_HEADER_BYTES)
    }

    fn with_headers(path: &Path, start: u64, header_bytes: usize) -> FloorFile {
        let floor = Floor::with_headers(path, FLOOR_FILE_BYTES, start, header_bytes)
            .expect("create floor file");
        FloorFile(floor)
    }

    fn append_batches(&mut self, payloads: &[Bytes], batches: u64) -> f64 {
        let inputs: Vec<Vec<Bytes>> = (0..batches).map(|_| payloads.to_vec()).collect();
        let start = Instant::now();
        for batch in inputs {
            self.0.append(&batch).expect("pwrite + fdatasync");
        }
        start.elapsed().as_secs_f64()
    }
}

fn measure(entry_bytes: usize, batch: usize, rounds: usize) {
    let mut rng = SmallRng::seed_from_u64(1);
    let payloads: Vec<Bytes> = (0..batch)
        .map(|_| {
            let mut payload = vec![0u8; entry_bytes];
            rng.fill_bytes(&mut payload);
            Bytes::from(payload)
        })
        .collect();
    let batches = (ROUND_BYTES_MAX / (entry_bytes * batch) as u64).clamp(10, ROUND_BATCHES_MAX);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut logs = [
        SteadyLog::open(&dir.path().join("default"), false, &payloads),
        SteadyLog::open(&dir.path().join("direct"), true, &payloads),
    ];
    // Two floors in two files: the second one, timed against the first like the logs, shows
    // how far two runs of the very same writes differ here (the driver's resolution).
    let mut floors = [
        FloorFile::open(&dir.path().join("floor")),
        FloorFile::open(&dir.path().join("floor-again")),
        FloorFile::record_sized(&dir.path().join("floor-records")),
    ];
    // Seconds per round, by store (see `STORES`).
    let mut times: [Vec<f64>; STORES] = Default::default();
    for round in 0..rounds {
        for turn in 0..STORES {
            let store = (turn + round) % STORES;
            let seconds = match store {
                0 | 1 => {
                    let seconds = logs[store].append_batches(&payloads, batches);
                    logs[store].purge();
                    seconds
                }
                _ => floors[store - 2].append_batches(&payloads, batches),
            };
            times[store].push(seconds);
        }
    }
    let per_batch_us = |store: usize| median(times[store].clone()) / batches as f64 * 1e6;
    // The median over rounds of `store`'s rate over `over`'s.
    let ratio = |store: usize, over: usize| {
        median(
            (0..rounds)
                .map(|round| times[over][round] / times[store][round])
                .collect(),
        )
    };
    println!(
        "{entry_bytes} B x {batch}: default {:.0} µs ({:.2}x), direct_io {:.0} µs ({:.2}x), \
         floor {:.0} µs, floor again {:.0} µs ({:.2}x), record-sized floor {:.0} µs ({:.2}x; \
         default over it {:.2}x)",
        per_batch_us(0),
        ratio(0, FLOOR),
        per_batch_us(1),
        ratio(1, FLOOR),
        per_batch_us(FLOOR),
        per_batch_us(3),
        ratio(3, FLOOR),
        per_batch_us(RECORD_FLOOR),
        ratio(RECORD_FLOOR, FLOOR),
        ratio(0, RECORD_FLOOR)
    );
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
