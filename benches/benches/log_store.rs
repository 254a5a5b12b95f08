//! Durable log stores on the workload of the raft-log issue: appends of 256 B and 4 KiB
//! entries in batches of 1, 64 and 1024 with one durable sync per batch, then sequential reads,
//! random point reads and reopen time.
//!
//! Stores: `raft-log` (reads also through its borrowed `entry_ref`; appends also with
//! `Options::direct_io`, `raft-log direct_io`), the plain-file floor (`raft_log::floor`:
//! `pwrite` + `fdatasync` into a zero-filled file, no framing, no checksum; `raft bench-log`
//! measures against the same one), and with `--features peers` the crates `raft-engine` 0.4 and
//! `okaywal` 0.3. Run (release):
//!
//! ```text
//! cargo bench -p benches --features peers --bench log_store
//! ```
//!
//! Each write iteration appends into a fresh store, except raft-log, which is measured in its
//! steady state: one store kept across iterations, warmed up until purged segments are free for
//! reuse, and purged (untimed) after each iteration, as a long-running node that purges after
//! snapshots is (the floor's file is likewise zero-filled before timing). Opening, warming up,
//! purging and preparing the inputs are not timed. Iterations are sized to keep the whole run within minutes on a 2-core machine:
//! see `write_workloads` for the entry counts (throughput is reported per entry).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use raft_core::Entry;
use raft_log::floor::{create_zero_filled, Floor};
use raft_log::{Options, RaftLog};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// Distinct random payloads per size; entries cycle through them (random, so that no store
/// gains from compression).
const PAYLOAD_VARIANTS: usize = 1024;
/// Entries in the log that the read benchmarks use (256-byte entries).
const READ_LOG_ENTRIES: u64 = 200_000;
/// Point reads per iteration of the random read benchmark.
const POINT_READS: u64 = 100_000;
/// Entries in the log that the reopen benchmark opens.
const REOPEN_LOG_ENTRIES: u64 = 1_000_000;
/// Entries per read call of the sequential read benchmark.
const SEQUENTIAL_CHUNK_ENTRIES: u64 = 1024;

/// One write workload: entry size, entries per durable batch and batches per iteration.
#[derive(Clone, Copy)]
struct Workload {
    entry_bytes: usize,
    batch: usize,
    batches: usize,
}

impl Workload {
    fn entries(&self) -> u64 {
        (self.batch * self.batches) as u64
    }
}

/// Entry counts per iteration: about 200,000 entries where that takes under a few seconds,
/// fewer where one sync per entry (batch 1) or the data volume (4 KiB) would not.
fn write_workloads() -> Vec<Workload> {
    vec![
        Workload {
            entry_bytes: 256,
            batch: 1,
            batches: 1_000,
        },
        Workload {
            entry_bytes: 256,
            batch: 64,
            batches: 1_000,
        },
        Workload {
            entry_bytes: 256,
            batch: 1024,
            batches: 200,
        },
        Workload {
            entry_bytes: 4096,
            batch: 1,
            batches: 1_000,
        },
        Workload {
            entry_bytes: 4096,
            batch: 64,
            batches: 500,
        },
        Workload {
            entry_bytes: 4096,
            batch: 1024,
            batches: 50,
        },
    ]
}

fn payloads(entry_bytes: usize) -> Vec<Bytes> {
    let mut rng = SmallRng::seed_from_u64(entry_bytes as u64);
    (0..PAYLOAD_VARIANTS)
        .map(|_| {
            let mut payload = vec![0u8; entry_bytes];
            rng.fill_bytes(&mut payload);
            Bytes::from(payload)
        })
        .collect()
}

/// A log store as the benchmark drives it.
trait BenchStore: Sized {
    /// One durable batch, prepared before timing.
    type Batch;
    /// Name in the report.
    const NAME: &'static str;
    /// Opens (or creates) the store in `dir`; `bytes_hint` is the data volume to expect.
    fn open(dir: &Path, bytes_hint: u64) -> Self;
    /// Turns payloads for indexes `first..` into a batch.
    fn prepare(&self, first: u64, payloads: &[Bytes]) -> Self::Batch;
    /// Appends a batch and returns once it is durable.
    fn append(&mut self, batch: Self::Batch);
    /// Reads entries `[low, high)`; returns the payload bytes read.
    fn read_range(&mut self, low: u64, high: u64) -> usize;
    /// Reads one entry; returns its payload bytes.
    fn read_one(&mut self, index: u64) -> usize {
        self.read_range(index, index + 1)
    }
    /// Whether each write iteration opens a fresh store. A store that reuses its files in steady
    /// state says `false`: it is opened once, `warm_up` once, and `purge_all` after every
    /// timed iteration.
    const FRESH_PER_ITERATION: bool = true;
    /// Brings a kept store to its steady state (untimed).
    fn warm_up(&mut self, _payloads: &[Bytes]) {}
    /// Removes every entry (untimed).
    fn purge_all(&mut self) {}
    /// The index the next append starts at.
    fn next_index(&self) -> u64 {
        1
    }
}

/// raft-log through its synchronous API, with default options; `DIRECT` turns on
/// `Options::direct_io` (appends around the page cache).
struct RaftLogStore<const DIRECT: bool = false>(RaftLog);

impl<const DIRECT: bool> BenchStore for RaftLogStore<DIRECT> {
    type Batch = Vec<Entry>;
    const NAME: &'static str = if DIRECT {
        "raft-log direct_io"
    } else {
        "raft-log"
    };

    fn open(dir: &Path, _bytes_hint: u64) -> Self {
        let options = Options {
            direct_io: DIRECT,
            ..Options::default()
        };
        let log = RaftLog::open(dir, options).expect("open raft-log");
        assert!(
            !DIRECT || log.direct_io(),
            "no direct I/O in {}",
            dir.display()
        );
        RaftLogStore(log)
    }

    fn prepare(&self, first: u64, payloads: &[Bytes]) -> Vec<Entry> {
        (first..)
            .zip(payloads)
            .map(|(index, data)| Entry::normal(1, index, data.clone()))
            .collect()
    }

    fn append(&mut self, batch: Vec<Entry>) {
        self.0.append(&batch).expect("raft-log append");
    }

    fn read_range(&mut self, low: u64, high: u64) -> usize {
        let entries = self.0.entries(low, high, u64::MAX).expect("raft-log read");
        entries.iter().map(|e| e.data.len()).sum()
    }

    fn read_one(&mut self, index: u64) -> usize {
        self.0.entry(index).expect("raft-log read").data.len()
    }

    const FRESH_PER_ITERATION: bool = false;

    /// Writes `FREE_SEGMENTS_MAX + 1` segments and purges them: from then on every new segment
    /// reuses a purged file, as in a long-running log that purges after snapshots.
    fn warm_up(&mut self, payloads: &[Bytes]) {
        let segment_bytes = self.0.options().segment_bytes;
        let target = (raft_log::FREE_SEGMENTS_MAX as u64 + 1) * segment_bytes;
        let mut written = 0;
        while written < target {
            let first = self.next_index();
            let batch = self.prepare(first, &payloads[..payloads.len().min(1024)]);
            written += batch.iter().map(|e| e.data.len() as u64 + 32).sum::<u64>();
            self.append(batch);
        }
        self.purge_all();
    }

    fn purge_all(&mut self) {
        let last = self.0.last_index();
        self.0
            .purge(raft_core::LogId::new(1, last))
            .expect("raft-log purge");
    }

    fn next_index(&self) -> u64 {
        self.0.last_index() + 1
    }
}

/// raft-log read through `RaftLog::entry_ref` (payload borrowed from the map, CRC checked,
/// no copy); writes as [`RaftLogStore`]. Only the read benchmarks use it.
struct RaftLogBorrowed(RaftLogStore);

impl BenchStore for RaftLogBorrowed {
    type Batch = Vec<Entry>;
    const NAME: &'static str = "raft-log entry_ref";

    fn open(dir: &Path, bytes_hint: u64) -> Self {
        RaftLogBorrowed(RaftLogStore::open(dir, bytes_hint))
    }

    fn prepare(&self, first: u64, payloads: &[Bytes]) -> Vec<Entry> {
        self.0.prepare(first, payloads)
    }

    fn append(&mut self, batch: Vec<Entry>) {
        self.0.append(batch);
    }

    fn read_range(&mut self, low: u64, high: u64) -> usize {
        (low..high).map(|index| self.read_one(index)).sum()
    }

    fn read_one(&mut self, index: u64) -> usize {
        let log = &(self.0).0;
        log.entry_ref(index).expect("raft-log read").payload().len()
    }
}

/// The physical floor ([`raft_log::floor::Floor`]): payloads copied back to back into a
/// buffer, `pwrite` into a zero-filled file, `fdatasync`. No framing, no checksum, no index.
/// Reads are `pread`s.
struct PlainFile {
    floor: Floor,
    entry_bytes: u64,
    buf: Vec<u8>,
}

impl BenchStore for PlainFile {
    type Batch = Vec<Bytes>;
    const NAME: &'static str = "pwrite+fdatasync floor";

    fn open(dir: &Path, bytes_hint: u64) -> Self {
        PlainFile {
            floor: Floor::create(&dir.join("plain.log"), bytes_hint).unwrap(),
            entry_bytes: 0,
            buf: Vec::new(),
        }
    }

    fn prepare(&self, _first: u64, payloads: &[Bytes]) -> Vec<Bytes> {
        payloads.to_vec()
    }

    fn append(&mut self, batch: Vec<Bytes>) {
        self.entry_bytes = batch[0].len() as u64;
        self.floor.append(&batch).unwrap();
    }

    fn read_range(&mut self, low: u64, high: u64) -> usize {
        let len = ((high - low) * self.entry_bytes) as usize;
        self.buf.resize(len, 0);
        self.floor
            .read_at(&mut self.buf, (low - 1) * self.entry_bytes)
            .unwrap();
        len
    }
}

#[cfg(feature = "peers")]
mod peers {
    //! The peer crates, adapted to [`BenchStore`].

    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use okaywal::{LogManager, LogPosition, ReadChunkResult, WriteAheadLog};
    use protobuf::descriptor::UninterpretedOption;
    use raft_engine::{Config, Engine, LogBatch, MessageExt, ReadableSize};

    use super::BenchStore;

    /// raft-engine needs a protobuf message with an index: this stock one has a `u64` and a
    /// `bytes` field, used as index and payload.
    #[derive(Clone)]
    pub struct EntryExt;

    impl MessageExt for EntryExt {
        type Entry = UninterpretedOption;
        fn index(entry: &UninterpretedOption) -> u64 {
            entry.get_positive_int_value()
        }
    }

    /// The one Raft group the benchmark writes.
    const REGION: u64 = 1;

    pub struct RaftEngineStore(Engine);

    impl BenchStore for RaftEngineStore {
        type Batch = LogBatch;
        const NAME: &'static str = "raft-engine 0.4";

        fn open(dir: &Path, _bytes_hint: u64) -> Self {
            let config = Config {
                dir: dir.to_str().unwrap().to_owned(),
                // Payloads are random: compression would only cost time.
                batch_compression_threshold: ReadableSize(0),
                ..Config::default()
            };
            RaftEngineStore(Engine::open(config).expect("open raft-engine"))
        }

        fn prepare(&self, first: u64, payloads: &[Bytes]) -> LogBatch {
            let entries: Vec<UninterpretedOption> = (first..)
                .zip(payloads)
                .map(|(index, data)| {
                    let mut entry = UninterpretedOption::new();
                    entry.set_positive_int_value(index);
                    entry.set_string_value(data.to_vec());
                    entry
                })
                .collect();
            let mut batch = LogBatch::default();
            batch.add_entries::<EntryExt>(REGION, &entries).unwrap();
            batch
        }

        fn append(&mut self, mut batch: LogBatch) {
            self.0.write(&mut batch, true).expect("raft-engine write");
        }

        fn read_range(&mut self, low: u64, high: u64) -> usize {
            let mut out = Vec::with_capacity((high - low) as usize);
            self.0
                .fetch_entries_to::<EntryExt>(REGION, low, high, None, &mut out)
                .unwrap();
            out.iter().map(|e| e.get_string_value().len()).sum()
        }
    }

    /// Collects the position of every chunk during recovery, so reads work after a reopen.
    #[derive(Debug, Default, Clone)]
    pub struct Positions(Arc<Mutex<Vec<LogPosition>>>);

    impl LogManager for Positions {
        fn recover(&mut self, entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
            let mut positions = self.0.lock().unwrap();
            loop {
                match entry.read_chunk()? {
                    ReadChunkResult::Chunk(mut chunk) => {
                        positions.push(chunk.log_position());
                        chunk.read_all()?;
                        assert!(chunk.check_crc()?, "okaywal chunk crc");
                    }
                    ReadChunkResult::EndOfEntry | ReadChunkResult::AbortedEntry => return Ok(()),
                }
            }
        }

        fn checkpoint_to(
            &mut self,
            _last_checkpointed_id: okaywal::EntryId,
            _checkpointed_entries: &mut okaywal::SegmentReader,
            _wal: &WriteAheadLog,
        ) -> std::io::Result<()> {
            // Never called: checkpointing is disabled so that every entry stays readable.
            Ok(())
        }
    }

    pub struct OkayWalStore {
        wal: WriteAheadLog,
        positions: Positions,
    }

    impl BenchStore for OkayWalStore {
        type Batch = Vec<Bytes>;
        const NAME: &'static str = "okaywal 0.3";

        fn open(dir: &Path, _bytes_hint: u64) -> Self {
            let positions = Positions::default();
            let wal = okaywal::Configuration::default_for(dir)
                // 64 MiB files like raft-log's segments; never checkpoint (keep every entry).
                .preallocate_bytes(64 << 20)
                .checkpoint_after_bytes(u64::MAX)
                .open(positions.clone())
                .expect("open okaywal");
            OkayWalStore { wal, positions }
        }

        fn prepare(&self, _first: u64, payloads: &[Bytes]) -> Vec<Bytes> {
            payloads.to_vec()
        }

        /// One okaywal entry per batch, one chunk per Raft entry; `commit` syncs.
        fn append(&mut self, batch: Vec<Bytes>) {
            let mut entry = self.wal.begin_entry().unwrap();
            let mut positions = Vec::with_capacity(batch.len());
            for payload in &batch {
                positions.push(entry.write_chunk(payload).unwrap().position);
            }
            entry.commit().unwrap();
            self.positions.0.lock().unwrap().extend(positions);
        }

        fn read_range(&mut self, low: u64, high: u64) -> usize {
            (low..high).map(|index| self.read_one(index)).sum()
        }

        fn read_one(&mut self, index: u64) -> usize {
            let position = self.positions.0.lock().unwrap()[(index - 1) as usize];
            let mut reader = self.wal.read_at(position).unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
            assert!(reader.crc_is_valid().unwrap(), "okaywal crc");
            data.len()
        }
    }
}

/// Times appends of `workload` into fresh stores.
fn bench_writes<S: BenchStore>(c: &mut Criterion, workload: Workload, payloads: &[Bytes]) {
    let group_name = format!("append/{}B/batch{}", workload.entry_bytes, workload.batch);
    let mut group = c.benchmark_group(group_name);
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(workload.entries()));
    let bytes_hint = workload.entries() * workload.entry_bytes as u64;
    let kept_dir = tempfile::tempdir().unwrap();
    let mut kept: Option<S> = None;
    group.bench_function(BenchmarkId::from_parameter(S::NAME), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut fresh = None;
                let store: &mut S = if S::FRESH_PER_ITERATION {
                    fresh.insert(S::open(dir.path(), bytes_hint))
                } else {
                    kept.get_or_insert_with(|| {
                        let mut store = S::open(kept_dir.path(), bytes_hint);
                        store.warm_up(payloads);
                        store
                    })
                };
                let base = store.next_index();
                let batches: Vec<S::Batch> = (0..workload.batches)
                    .map(|k| {
                        let first = (k * workload.batch) as u64 + base;
                        let chosen: Vec<Bytes> = (0..workload.batch)
                            .map(|i| payloads[(k * workload.batch + i) % payloads.len()].clone())
                            .collect();
                        store.prepare(first, &chosen)
                    })
                    .collect();
                let start = Instant::now();
                for batch in batches {
                    store.append(batch);
                }
                total += start.elapsed();
                if !S::FRESH_PER_ITERATION {
                    store.purge_all();
                }
                drop(fresh);
            }
            total
        })
    });
    group.finish();
}

/// Fills a store with `entries` 256-byte entries in batches of 1024.
fn fill<S: BenchStore>(dir: &Path, entries: u64, payloads: &[Bytes]) -> S {
    let mut store = S::open(dir, entries * 256);
    let mut first = 1;
    while first <= entries {
        let count = (entries - first + 1).min(1024);
        let chosen: Vec<Bytes> = (first..first + count)
            .map(|i| payloads[i as usize % payloads.len()].clone())
            .collect();
        let batch = store.prepare(first, &chosen);
        store.append(batch);
        first += count;
    }
    store
}

fn bench_reads<S: BenchStore>(c: &mut Criterion, payloads: &[Bytes]) {
    // Filled on first use, so that a filter that skips these benchmarks skips the fill too.
    let dir = tempfile::tempdir().unwrap();
    let mut filled: Option<S> = None;
    let mut group = c.benchmark_group("read/256B/sequential");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(READ_LOG_ENTRIES));
    group.bench_function(BenchmarkId::from_parameter(S::NAME), |b| {
        let store = filled.get_or_insert_with(|| fill::<S>(dir.path(), READ_LOG_ENTRIES, payloads));
        b.iter(|| {
            let mut bytes = 0;
            let mut low = 1;
            while low <= READ_LOG_ENTRIES {
                let high = (low + SEQUENTIAL_CHUNK_ENTRIES).min(READ_LOG_ENTRIES + 1);
                bytes += store.read_range(low, high);
                low = high;
            }
            assert_eq!(bytes as u64, READ_LOG_ENTRIES * 256);
        })
    });
    group.finish();
    let mut rng = SmallRng::seed_from_u64(7);
    let indexes: Vec<u64> = (0..POINT_READS)
        .map(|_| rng.gen_range(1..=READ_LOG_ENTRIES))
        .collect();
    let mut group = c.benchmark_group("read/256B/random_point");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(POINT_READS));
    group.bench_function(BenchmarkId::from_parameter(S::NAME), |b| {
        let store = filled.get_or_insert_with(|| fill::<S>(dir.path(), READ_LOG_ENTRIES, payloads));
        b.iter(|| {
            indexes
                .iter()
                .map(|&index| store.read_one(index))
                .sum::<usize>()
        })
    });
    group.finish();
}

fn bench_reopen<S: BenchStore>(c: &mut Criterion, payloads: &[Bytes]) {
    let dir = tempfile::tempdir().unwrap();
    let mut filled = false;
    let mut group = c.benchmark_group("reopen/1M x 256B");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(2));
    group.bench_function(BenchmarkId::from_parameter(S::NAME), |b| {
        if !filled {
            drop(fill::<S>(dir.path(), REOPEN_LOG_ENTRIES, payloads));
            filled = true;
        }
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let mut store = S::open(dir.path(), 0);
                // The last entry is readable: recovery is complete.
                assert_eq!(store.read_one(REOPEN_LOG_ENTRIES), 256);
                total += start.elapsed();
                drop(store);
            }
            total
        })
    });
    group.finish();
}

/// The write path choice recorded in raft-log's `log.rs`: 256-byte appends, each made durable,
/// through a writable map + `msync` versus `pwrite` + `fdatasync`, into zero-filled files.
fn bench_write_path(c: &mut Criterion) {
    const APPENDS: u64 = 1_000;
    const FILE_BYTES: u64 = 1 << 20;
    let mut group = c.benchmark_group("write_path/256B");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(APPENDS));
    let record = [0x5au8; 256];
    let zeroed = |dir: &Path| create_zero_filled(&dir.join("f"), FILE_BYTES).unwrap();
    group.bench_function("pwrite+fdatasync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let file = zeroed(dir.path());
                let start = Instant::now();
                for k in 0..APPENDS {
                    file.write_all_at(&record, k * 256).unwrap();
                    file.sync_data().unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("mmap+msync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let file = zeroed(dir.path());
                // SAFETY: the file is private to this benchmark and outlives the map.
                let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
                let start = Instant::now();
                for k in 0..APPENDS as usize {
                    map[k * 256..(k + 1) * 256].copy_from_slice(&record);
                    map.flush_range(k * 256, 256).unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn all_stores(c: &mut Criterion) {
    for workload in write_workloads() {
        let payloads = payloads(workload.entry_bytes);
        bench_writes::<RaftLogStore>(c, workload, &payloads);
        bench_writes::<RaftLogStore<true>>(c, workload, &payloads);
        bench_writes::<PlainFile>(c, workload, &payloads);
        #[cfg(feature = "peers")]
        {
            bench_writes::<peers::RaftEngineStore>(c, workload, &payloads);
            bench_writes::<peers::OkayWalStore>(c, workload, &payloads);
        }
    }
    let payloads = payloads(256);
    bench_reads::<RaftLogStore>(c, &payloads);
    bench_reads::<RaftLogBorrowed>(c, &payloads);
    bench_reads::<PlainFile>(c, &payloads);
    #[cfg(feature = "peers")]
    {
        bench_reads::<peers::RaftEngineStore>(c, &payloads);
        bench_reads::<peers::OkayWalStore>(c, &payloads);
    }
    bench_reopen::<RaftLogStore>(c, &payloads);
    #[cfg(feature = "peers")]
    {
        bench_reopen::<peers::RaftEngineStore>(c, &payloads);
        bench_reopen::<peers::OkayWalStore>(c, &payloads);
    }
}

criterion_group!(benches, bench_write_path, all_stores);
criterion_main!(benches);
