//! The consensus engine alone: three engines in one process, an instant network, a log that
//! persists instantly. Measures committed entries per second for 1, 64 and 256 concurrent
//! proposers proposing batches of 1 and 64 entries of 64 bytes (closed loop: each proposer
//! waits for its batch to commit before proposing the next).
//!
//! Run: `cargo bench -p benches --bench engine`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raft_core::engine::{Config, Engine, RestoredState, Role};
use raft_core::{LogIndex, Membership, Message};

const PAYLOAD_BYTES: usize = 64;
/// Entries committed per measured iteration.
const ENTRIES_PER_ITERATION: u64 = 200_000;

struct Cluster {
    engines: Vec<Engine>,
    network: VecDeque<Message>,
}

impl Cluster {
    fn new() -> Self {
        let membership = Membership::new_voters([1, 2, 3]);
        let config = Config {
            uncommitted_entries_max: 1 << 30,
            snapshot_distance: 0,
            inflight_messages_max: 256,
            ..Config::default()
        };
        let engines = (1..=3)
            .map(|id| {
                let restored = RestoredState {
                    initial_membership: membership.clone(),
                    ..Default::default()
                };
                Engine::new(id, config.clone(), restored).expect("valid config")
            })
            .collect();
        let mut cluster = Cluster {
            engines,
            network: VecDeque::new(),
        };
        while cluster.engines[0].role() != Role::Leader {
            cluster.engines[0].tick();
            cluster.pump();
        }
        cluster.pump();
        cluster
    }

    /// Runs ready cycles and delivers messages until the cluster is quiet.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.engines.len() {
                let engine = &mut self.engines[i];
                if !engine.has_ready() {
                    continue;
                }
                progressed = true;
                let ready = engine.ready();
                self.network.extend(ready.messages);
                engine.on_persisted(ready.entries.last().map(|e| e.log_id()));
                self.network.extend(ready.persisted_messages);
                if let Some(last) = ready.committed_entries.last() {
                    engine.on_applied(last.index);
                }
            }
            while let Some(msg) = self.network.pop_front() {
                progressed = true;
                self.engines[(msg.to - 1) as usize].step(msg);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Commits `total` entries with `proposers` closed-loop proposers of `batch` entries.
    fn run(&mut self, proposers: usize, batch: usize, total: u64) -> Duration {
        let payload = Bytes::from(vec![7u8; PAYLOAD_BYTES]);
        let start_commit = self.engines[0].commit_index();
        let target = start_commit + total;
        // Each proposer's outstanding batch: the index of its last entry (0 = idle).
        let mut outstanding: Vec<LogIndex> = vec![0; proposers];
        let started = Instant::now();
        while self.engines[0].commit_index() < target {
            let committed = self.engines[0].commit_index();
            for slot in outstanding.iter_mut() {
                if *slot <= committed {
                    let data = vec![payload.clone(); batch];
                    *slot = self.engines[0]
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
