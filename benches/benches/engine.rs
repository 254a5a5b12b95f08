//! The consensus engine alone: three engines in one process, each run by the node's
//! [`Driver`](raft_core::driver::Driver), an instant network, a log that persists instantly. Measures committed entries per second for 1, 64 and 256 concurrent
//! proposers proposing batches of 1 and 64 entries of 64 bytes (closed loop: each proposer
//! waits for its batch to commit before proposing the next).
//!
//! Run: `cargo bench -p benches --bench engine`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_core::driver::{ApplyWork, Driver, Work};
use raft_core::engine::{Config, Engine, RestoredState, Role};
use raft_core::{LogIndex, Membership, Message};

const PAYLOAD_BYTES: usize = 64;
/// Entries committed per measured iteration.
const ENTRIES_PER_ITERATION: u64 = 200_000;

struct Cluster {
    drivers: Vec<Driver>,
    network: VecDeque<Message>,
}

impl Cluster {
    fn new() -> Self {
        let membership = Membership::new_voters([1, 2, 3]);
        let config = Config {
            uncommitted_entries_max: 1 << 30,
            snapshot_distance: 0,
            inflight_messages_max: 256,
            // Followers never lag on an instant network: no entry is read back from a log
            // store (this harness has none).
            log_cache_bytes_max: u64::MAX,
            ..Config::default()
        };
        let drivers = (1..=3)
            .map(|id| {
                let restored = RestoredState {
                    initial_membership: membership.clone(),
                    ..Default::default()
                };
                let engine = Engine::new(id, config.clone(), restored).expect("valid config");
                Driver::new(engine, false)
            })
            .collect();
        let mut cluster = Cluster {
            drivers,
            network: VecDeque::new(),
        };
        while cluster.leader().role() != Role::Leader {
            cluster.drivers[0].engine_mut().tick();
            cluster.pump();
        }
        cluster.pump();
        cluster
    }

    fn leader(&mut self) -> &mut Engine {
        self.drivers[0].engine_mut()
    }

    /// Carries out a driver's work at once: messages to the network, applied at once, every
    /// write durable at once.
    fn carry_out(driver: &mut Driver, work: Work, network: &mut VecDeque<Message>) {
        network.extend(work.messages);
        for item in work.apply {
            if let ApplyWork::Entries(entries) = item {
                let last = entries.last().expect("never empty").index;
                driver.engine_mut().on_applied(last);
            }
        }
        if work.write.is_some() {
            let after = driver.write_done();
            Self::carry_out(driver, after, network);
        }
    }

    /// Runs the drivers and delivers messages until the cluster is quiet.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for driver in &mut self.drivers {
                loop {
                    let work = driver.poll();
                    if work.is_empty() {
                        break;
                    }
                    progressed = true;
                    Self::carry_out(driver, work, &mut self.network);
                }
            }
            while let Some(msg) = self.network.pop_front() {
                progressed = true;
                self.drivers[(msg.to - 1) as usize].engine_mut().step(msg);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Commits `total` entries with `proposers` closed-loop proposers of `batch` entries.
    fn run(&mut self, proposers: usize, batch: usize, total: u64) -> Duration {
        let payload = Bytes::from(vec![7u8; PAYLOAD_BYTES]);
        let start_commit = self.leader().commit_index();
        let target = start_commit + total;
        // Each proposer's outstanding batch: the index of its last entry (0 = idle).
        let mut outstanding: Vec<LogIndex> = vec![0; proposers];
        let started = Instant::now();
        while self.leader().commit_index() < target {
            let committed = self.leader().commit_index();
            for slot in outstanding.iter_mut() {
                if *slot <= committed {
                    let data = vec![payload.clone(); batch];
                    *slot = self
                        .leader()
                        .propose_batch(data)
                        .expect("leader accepts")
                        .index;
                }
            }
            self.pump();
        }
        started.elapsed()
    }
}

fn engine_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_commit");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(ENTRIES_PER_ITERATION));
    for batch in [1usize, 64] {
        for proposers in [1usize, 64, 256] {
            let id = BenchmarkId::new(format!("batch_{batch}"), format!("{proposers}_proposers"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut cluster = Cluster::new();
                        total += cluster.run(proposers, batch, ENTRIES_PER_ITERATION);
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, engine_throughput);
criterion_main!(benches);
