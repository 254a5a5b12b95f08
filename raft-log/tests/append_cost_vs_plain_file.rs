//! A durable append costs about what a bare `pwrite` + `fdatasync` of the same payload costs.
//!
//! The criterion benchmark (`benches/benches/log_store.rs`) runs each store for seconds, one
//! after the other; on a machine shared with other engineers the disk load changes between
//! them. This check interleaves the two in short rounds, so both see the same load, and
//! compares medians. It is timing-based, hence ignored by default; run it in release:
//! `cargo test -p raft-log --release --test append_cost_vs_plain_file -- --ignored --nocapture`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft_core::Entry;
use raft_log::{Options, RaftLog};

/// Interleaved rounds per configuration.
const ROUNDS: usize = 9;
/// Durable batches per round and store.
const BATCHES_PER_ROUND: u64 = 200;
/// raft-log may cost at most this much more than the plain file (median over rounds).
const RATIO_MAX: f64 = 1.3;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Returns the median time per durable batch of raft-log and of the plain file.
fn measure(entry_bytes: usize, batch: usize) -> (Duration, Duration) {
    let payload = Bytes::from(vec![0x5a; entry_bytes]);
    let (mut log_times, mut file_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let log = RaftLog::open(dir.path(), Options::default()).unwrap();
        let start = Instant::now();
        for k in 0..BATCHES_PER_ROUND {
            let first = k * batch as u64 + 1;
            let entries: Vec<Entry> = (first..first + batch as u64)
                .map(|index| Entry::normal(1, index, payload.clone()))
                .collect();
            log.append(&entries).unwrap();
        }
        log_times.push(start.elapsed() / BATCHES_PER_ROUND as u32);
        drop(log);

        let path = dir.path().join("plain");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        let bytes = BATCHES_PER_ROUND as usize * batch * entry_bytes;
        file.write_all_at(&vec![0u8; bytes], 0).unwrap();
        file.sync_all().unwrap();
        let mut buf = Vec::with_capacity(batch * entry_bytes);
        let start = Instant::now();
        for k in 0..BATCHES_PER_ROUND {
            buf.clear();
            for _ in 0..batch {
                buf.extend_from_slice(&payload);
            }
            file.write_all_at(&buf, k * buf.len() as u64).unwrap();
            file.sync_data().unwrap();
        }
        file_times.push(start.elapsed() / BATCHES_PER_ROUND as u32);
    }
    (median(log_times), median(file_times))
}

#[test]
#[ignore]
fn durable_append_costs_about_a_plain_pwrite_and_fdatasync() {
    let mut ratios: Vec<(usize, usize, f64)> = Vec::new();
    for (entry_bytes, batch) in [(256, 1), (4096, 1), (256, 64), (4096, 64)] {
        let (log, file) = measure(entry_bytes, batch);
        let ratio = log.as_secs_f64() / file.as_secs_f64();
        println!(
            "{entry_bytes} B x batch {batch}: raft-log {:.0} us, plain file {:.0} us per durable \
             batch (ratio {ratio:.2})",
            log.as_secs_f64() * 1e6,
            file.as_secs_f64() * 1e6
        );
        ratios.push((entry_bytes, batch, ratio));
    }
    // Every configuration is printed before any of them fails the check.
    for (entry_bytes, batch, ratio) in ratios {
        assert!(
            ratio <= RATIO_MAX,
            "{entry_bytes} B x {batch}: raft-log costs {ratio:.2}x"
        );
    }
}
