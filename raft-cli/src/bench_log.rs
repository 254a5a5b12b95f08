//! `raft bench-log --dir DIR`: the log-store benchmark on an operator's own disk, without a
//! Rust toolchain.
//!
//! What it measures, in a new directory inside DIR that it removes when done (also on an
//! error or Ctrl-C):
//! - **Durable appends** of 256 B and 4 KiB entries in batches of 1, 64 and 1024 (one
//!   `fdatasync` per batch), raft-log beside the floor, [`raft_log::floor::Floor`]: the same
//!   payloads back to back, one `pwrite` into a zero-filled file and one `fdatasync` per
//!   batch, in the same directory. The criterion benchmark (`benches/benches/log_store.rs`)
//!   and its alternating driver measure against the same floor. raft-log runs in its steady
//!   state, as a node that purges after snapshots does: segments written and purged first
//!   (untimed), so new segments reuse purged files, and purged again after every round. The
//!   two alternate in rounds (the order swapping each round), so both see the same disk;
//!   the ratio is the median over rounds of raft-log's rate over the floor's.
//! - **Random point reads** of 256-byte entries: raft-log's copying `entry` and borrowing
//!   `entry_ref`, and a `pread` of the same bytes from a plain file (the floor), alternating
//!   in rounds likewise. The files were just written: reads come from the page cache.
//! - **Reopen**: opening the read log, extended to `--reopen-entries`, until its last entry
//!   is readable (page cache warm, as after a restart of the process, not of the machine).
//!
//! Each case runs for `--seconds` (rounds sized to about an eighth of that); preparing a
//! case (warming raft-log up, filling the read log) is bounded by its sizes, not timed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use raft_core::{Entry, LogId};
use raft_log::floor::Floor;
use raft_log::{Options, RaftLog, FREE_SEGMENTS_MAX, SEGMENT_BYTES_DEFAULT};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

/// Rounds a case aims at within its time: enough for a median of per-round ratios.
const ROUNDS_TARGET: u32 = 8;
/// Rounds a case runs at least, whatever the time.
const ROUNDS_MIN: u32 = 2;
/// Durable batches per round and store, at most.
const ROUND_BATCHES_MAX: u64 = 1_000;
/// Bytes appended per round and store, at most (so a round's prepared entries stay small).
const ROUND_BYTES_MAX: u64 = 64 << 20;
/// Point reads per round and store, at most.
const ROUND_READS_MAX: u64 = 10_000_000;
/// Distinct random payloads per entry size (random, so no file system gains from
/// compression); entries cycle through them.
const PAYLOAD_VARIANTS: usize = 1024;
/// Entries per batch while the read log is filled and while raft-log is warmed up.
const FILL_BATCH: usize = 1024;
/// Entry size of the read and reopen logs, bytes (as in the criterion benchmark).
const READ_ENTRY_BYTES: usize = 256;
/// Largest entry accepted, bytes.
const ENTRY_BYTES_MAX: usize = 1 << 20;
/// Largest batch accepted, entries.
const BATCH_MAX: usize = 65_536;
/// Largest batch accepted, bytes: one batch is held in memory per store.
const BATCH_BYTES_MAX: u64 = 256 << 20;
/// Longest case accepted, seconds.
const SECONDS_MAX: f64 = 3_600.0;
/// Entries of the read or reopen log, at most (4 bytes of index per entry in memory).
const LOG_ENTRIES_MAX: u64 = 100_000_000;

/// `raft bench-log` flags.
#[derive(Args, Clone, Debug)]
pub struct BenchLogArgs {
    /// A directory on the disk to measure; the benchmark works in a new directory inside it
    /// and removes it at the end.
    #[arg(long)]
    pub dir: PathBuf,
    /// Seconds per case (each append workload, the point reads, the reopen).
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Entry sizes of the append cases, in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [256, 4096])]
    pub entry_bytes: Vec<usize>,
    /// Entries per durable batch of the append cases.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64, 1024])]
    pub batch: Vec<usize>,
    /// Entries of 256 B in the log the point reads use (0: no read case).
    #[arg(long, default_value_t = 200_000)]
    pub read_entries: u64,
    /// Entries of 256 B in the log that is reopened (0: no reopen case).
    #[arg(long, default_value_t = 1_000_000)]
    pub reopen_entries: u64,
    /// raft-log's segment size in bytes (`raft node --log-segment-bytes`).
    #[arg(long, default_value_t = SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,
    /// raft-log appends with O_DIRECT (`raft node --log-direct-io`).
    #[arg(long)]
    pub direct_io: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl BenchLogArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(self.seconds > 0.0 && self.seconds <= SECONDS_MAX) {
            bail!("--seconds must be within (0, {SECONDS_MAX}]");
        }
        let options = self.options();
        options.validate()?;
        for &bytes in &self.entry_bytes {
            if bytes == 0 || bytes > ENTRY_BYTES_MAX || bytes as u64 > options.entry_bytes_max() {
                bail!(
                    "--entry-bytes {bytes}: must be within 1..={ENTRY_BYTES_MAX} and fit in a \
                     segment of --segment-bytes"
                );
            }
            for &batch in &self.batch {
                if batch == 0 || batch > BATCH_MAX || (batch * bytes) as u64 > BATCH_BYTES_MAX {
                    bail!(
                        "--batch {batch} of {bytes} B: must be within 1..={BATCH_MAX} entries \
                         and {BATCH_BYTES_MAX} bytes"
                    );
                }
            }
        }
        if self.read_entries > LOG_ENTRIES_MAX || self.reopen_entries > LOG_ENTRIES_MAX {
            bail!("--read-entries and --reopen-entries must be at most {LOG_ENTRIES_MAX}");
        }
        if !self.dir.is_dir() {
            bail!("--dir {}: not a directory", self.dir.display());
        }
        Ok(())
    }

    fn options(&self) -> Options {
        Options {
            segment_bytes: self.segment_bytes,
            direct_io: self.direct_io,
        }
    }

    fn append_cases(&self) -> Vec<(usize, usize)> {
        let mut cases = Vec::new();
        for &bytes in &self.entry_bytes {
            for &batch in &self.batch {
                cases.push((bytes, batch));
            }
        }
        cases
    }

    /// Timed cases, for the progress indicator.
    fn case_count(&self) -> usize {
        self.append_cases().len()
            + usize::from(self.read_entries > 0)
            + usize::from(self.reopen_entries > 0)
    }
}

/// Everything `raft bench-log` measured (its `--json` output).
#[derive(Clone, Debug, Serialize)]
pub struct BenchLogReport {
    /// The directory measured in.
    pub dir: PathBuf,
    /// Seconds per case asked for.
    pub seconds_per_case: f64,
    /// raft-log's segment size, bytes.
    pub segment_bytes: u64,
    /// Whether raft-log's appends went around the page cache (asked, and available).
    pub direct_io: bool,
    /// One per entry size and batch.
    pub appends: Vec<AppendResult>,
    /// The point reads, if run.
    pub point_reads: Option<ReadResult>,
    /// The reopen, if run.
    pub reopen: Option<ReopenResult>,
}

/// Durable appends of one entry size and batch.
#[derive(Clone, Debug, Serialize)]
pub struct AppendResult {
    /// Payload bytes per entry.
    pub entry_bytes: usize,
    /// Entries per durable batch.
    pub batch: usize,
    /// Rounds run (each store once per round).
    pub rounds: u32,
    /// raft-log: entries made durable per second.
    pub raft_log_entries_per_sec: f64,
    /// The floor: entries made durable per second.
    pub floor_entries_per_sec: f64,
    /// raft-log's rate over the floor's, median over rounds.
    pub ratio: f64,
    /// raft-log: median time of one durable batch, microseconds.
    pub raft_log_batch_us: f64,
    /// The floor: median time of one durable batch, microseconds.
    pub floor_batch_us: f64,
}

/// Random point reads of 256-byte entries.
#[derive(Clone, Debug, Serialize)]
pub struct ReadResult {
    /// Entries in the log read.
    pub entries: u64,
    /// Rounds run.
    pub rounds: u32,
    /// raft-log `entry` (a copy of the entry) per second.
    pub raft_log_entry_per_sec: f64,
    /// raft-log `entry_ref` (the payload borrowed from the map) per second.
    pub raft_log_entry_ref_per_sec: f64,
    /// The floor: `pread`s of the same bytes per second.
    pub floor_per_sec: f64,
    /// `entry`'s rate over the floor's, median over rounds.
    pub ratio_entry: f64,
    /// `entry_ref`'s rate over the floor's, median over rounds.
    pub ratio_entry_ref: f64,
}

/// Reopening a log.
#[derive(Clone, Debug, Serialize)]
pub struct ReopenResult {
    /// Entries in the log.
    pub entries: u64,
    /// Times it was reopened.
    pub reopens: u32,
    /// Median time until the last entry was readable, milliseconds.
    pub median_ms: f64,
    /// Shortest such time, milliseconds.
    pub min_ms: f64,
}

/// `raft bench-log`: runs on the blocking pool; Ctrl-C stops it between rounds, and its
/// files are removed either way.
pub async fn run(args: BenchLogArgs) -> anyhow::Result<()> {
    args.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let json = args.json;
    let work = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || measure(&args, &stop))
    };
    tokio::pin!(work);
    let report = tokio::select! {
        report = &mut work => report,
        _ = tokio::signal::ctrl_c() => {
            stop.store(true, Ordering::Relaxed);
            eprintln!("\ninterrupted: stopping and removing the benchmark's files");
            work.await
        }
    }
    .context("the benchmark thread panicked")??;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Runs every case in a new directory inside `args.dir`, removed when this returns.
fn measure(args: &BenchLogArgs, stop: &AtomicBool) -> anyhow::Result<BenchLogReport> {
    let work = tempfile::Builder::new()
        .prefix("raft-bench-log-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("creating a directory in {}", args.dir.display()))?;
    let mut progress = Progress::new(args.case_count());
    let mut bench = Bench {
        args,
        stop,
        dir: work.path(),
        progress: &mut progress,
    };
    let result = bench.all();
    progress.finish();
    let report = result?;
    let path = work.path().to_path_buf();
    work.close()
        .with_context(|| format!("removing {}", path.display()))?;
    Ok(report)
}

/// One run's settings and state.
struct Bench<'a> {
    args: &'a BenchLogArgs,
    stop: &'a AtomicBool,
    dir: &'a Path,
    progress: &'a mut Progress,
}

impl Bench<'_> {
    fn all(&mut self) -> anyhow::Result<BenchLogReport> {
        let mut appends = Vec::new();
        let mut direct_io = false;
        if !self.args.append_cases().is_empty() {
            let (results, direct) = self.appends()?;
            appends = results;
            direct_io = direct;
        }
        let mut point_reads = None;
        let mut reopen = None;
        if self.args.read_entries > 0 || self.args.reopen_entries > 0 {
            let (reads, reopened) = self.reads_and_reopen()?;
            point_reads = reads;
            reopen = reopened;
        }
        Ok(BenchLogReport {
            dir: self.args.dir.clone(),
            seconds_per_case: self.args.seconds,
            segment_bytes: self.args.segment_bytes,
            direct_io,
            appends,
            point_reads,
            reopen,
        })
    }

    fn check_stop(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    fn seconds(&self) -> Duration {
        Duration::from_secs_f64(self.args.seconds)
    }

    /// The append cases, against one steady-state raft-log and one floor file.
    fn appends(&mut self) -> anyhow::Result<(Vec<AppendResult>, bool)> {
        let options = self.args.options();
        let log_dir = self.dir.join("append-log");
        let log = RaftLog::open(&log_dir, options)
            .with_context(|| format!("opening raft-log in {}", log_dir.display()))?;
        let direct_io = log.direct_io();
        let mut log = SteadyLog { log, next: 1 };
        let warm_up_bytes = (FREE_SEGMENTS_MAX as u64 + 1) * options.segment_bytes;
        self.progress.step(&format!(
            "warming raft-log up: {} MiB written and purged",
            warm_up_bytes >> 20
        ));
        log.warm_up(warm_up_bytes, &payloads(READ_ENTRY_BYTES), self.stop)?;
        let largest_batch_bytes = self
            .args
            .append_cases()
            .iter()
            .map(|(bytes, batch)| (bytes * batch) as u64)
            .max()
            .unwrap_or(0);
        let floor_path = self.dir.join("append-floor");
        let mut floor = Floor::create(&floor_path, options.segment_bytes.max(largest_batch_bytes))
            .with_context(|| format!("creating {}", floor_path.display()))?;
        let mut results = Vec::new();
        for (entry_bytes, batch) in self.args.append_cases() {
            results.push(self.append_case(&mut log, &mut floor, entry_bytes, batch)?);
        }
        Ok((results, direct_io))
    }

    fn append_case(
        &mut self,
        log: &mut SteadyLog,
        floor: &mut Floor,
        entry_bytes: usize,
        batch: usize,
    ) -> anyhow::Result<AppendResult> {
        let name = format!("append {}, batch {batch}", size_name(entry_bytes));
        self.progress.case(&name);
        let variants = payloads(entry_bytes);
        let payloads: Vec<Bytes> = variants.iter().cycle().take(batch).cloned().collect();
        // One untimed batch of each tells how many batches fit in a round.
        let probe = log.append_batches(&payloads, 1)? + time_floor(floor, &payloads, 1)?;
        log.purge()?;
        let round_target = self.seconds().as_secs_f64() / f64::from(ROUNDS_TARGET);
        let bytes_cap = (ROUND_BYTES_MAX / (entry_bytes * batch) as u64).max(1);
        let batches =
            ((round_target / probe.max(1e-9)) as u64).clamp(1, ROUND_BATCHES_MAX.min(bytes_cap));
        let mut rounds = Rounds::default();
        let started = Instant::now();
        while rounds.count < ROUNDS_MIN || started.elapsed() < self.seconds() {
            self.check_stop()?;
            let floor_first = rounds.count % 2 == 1;
            let mut floor_seconds = 0.0;
            if floor_first {
                floor_seconds = time_floor(floor, &payloads, batches)?;
            }
            let log_seconds = log.append_batches(&payloads, batches)?;
            if !floor_first {
                floor_seconds = time_floor(floor, &payloads, batches)?;
            }
            log.purge()?;
            rounds.add(&[log_seconds, floor_seconds]);
            self.progress.advance(started.elapsed(), self.seconds());
        }
        let entries = (batches * batch as u64) as f64;
        Ok(AppendResult {
            entry_bytes,
            batch,
            rounds: rounds.count,
            raft_log_entries_per_sec: entries * f64::from(rounds.count) / rounds.total(0),
            floor_entries_per_sec: entries * f64::from(rounds.count) / rounds.total(1),
            ratio: rounds.median_ratio(1, 0),
            raft_log_batch_us: rounds.median(0) / batches as f64 * 1e6,
            floor_batch_us: rounds.median(1) / batches as f64 * 1e6,
        })
    }

    /// Fills the read log and its floor, runs the point reads, then extends the log and
    /// reopens it.
    fn reads_and_reopen(&mut self) -> anyhow::Result<(Option<ReadResult>, Option<ReopenResult>)> {
        let options = Options {
            direct_io: false,
            ..self.args.options()
        };
        let log_dir = self.dir.join("read-log");
        let log = RaftLog::open(&log_dir, options)
            .with_context(|| format!("opening raft-log in {}", log_dir.display()))?;
        let mut log = SteadyLog { log, next: 1 };
        let variants = payloads(READ_ENTRY_BYTES);
        let mut reads = None;
        if self.args.read_entries > 0 {
            let entries = self.args.read_entries;
            self.progress
                .step(&format!("writing {entries} entries of 256 B to read back"));
            let floor = fill_read_floor(&self.dir.join("read-floor"), entries, &variants)?;
            log.fill_to(entries, &variants, self.stop)?;
            reads = Some(self.point_reads(&log.log, &floor, entries)?);
        }
        let mut reopen = None;
        if self.args.reopen_entries > 0 {
            let entries = self.args.reopen_entries.max(self.args.read_entries);
            self.progress
                .step(&format!("writing {entries} entries of 256 B to reopen"));
            log.fill_to(entries, &variants, self.stop)?;
            drop(log);
            reopen = Some(self.reopen(&log_dir, options, entries)?);
        }
        Ok((reads, reopen))
    }

    fn point_reads(
        &mut self,
        log: &RaftLog,
        floor: &Floor,
        entries: u64,
    ) -> anyhow::Result<ReadResult> {
        self.progress.case("random point reads, 256 B");
        let mut rng = SmallRng::seed_from_u64(7);
        let mut reads = 1_000u64;
        let mut indexes: Vec<u64> = Vec::new();
        let mut regenerate = |count: u64, indexes: &mut Vec<u64>| {
            indexes.clear();
            indexes.extend((0..count).map(|_| rng.gen_range(1..=entries)));
        };
        regenerate(reads, &mut indexes);
        let probe: f64 = read_all(log, floor, &indexes)?.iter().sum();
        let round_target = self.seconds().as_secs_f64() / f64::from(ROUNDS_TARGET);
        reads = ((round_target / probe.max(1e-9)) * reads as f64) as u64;
        reads = reads.clamp(1_000, ROUND_READS_MAX);
        let mut rounds = Rounds::default();
        let started = Instant::now();
        while rounds.count < ROUNDS_MIN || started.elapsed() < self.seconds() {
            self.check_stop()?;
            regenerate(reads, &mut indexes);
            let times = read_all(log, floor, &indexes)?;
            rounds.add(&times);
            self.progress.advance(started.elapsed(), self.seconds());
        }
        let rate = |store: usize| reads as f64 * f64::from(rounds.count) / rounds.total(store);
        Ok(ReadResult {
            entries,
            rounds: rounds.count,
            raft_log_entry_per_sec: rate(0),
            raft_log_entry_ref_per_sec: rate(1),
            floor_per_sec: rate(2),
            ratio_entry: rounds.median_ratio(2, 0),
            ratio_entry_ref: rounds.median_ratio(2, 1),
        })
    }

    fn reopen(
        &mut self,
        dir: &Path,
        options: Options,
        entries: u64,
    ) -> anyhow::Result<ReopenResult> {
        self.progress
            .case(&format!("reopen, {entries} entries of 256 B"));
        let mut times = Vec::new();
        let started = Instant::now();
        while (times.len() as u32) < ROUNDS_MIN || started.elapsed() < self.seconds() {
            self.check_stop()?;
            let opened = Instant::now();
            let log = RaftLog::open(dir, options)
                .with_context(|| format!("reopening raft-log in {}", dir.display()))?;
            let last = log.entry(entries).context("reading the last entry")?;
            let took = opened.elapsed().as_secs_f64();
            anyhow::ensure!(
                last.data.len() == READ_ENTRY_BYTES,
                "the last entry was not read back whole"
            );
            // Untimed: closing waits for a segment being zero-filled in the background.
            drop(log);
            times.push(took);
            self.progress.advance(started.elapsed(), self.seconds());
        }
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        Ok(ReopenResult {
            entries,
            reopens: times.len() as u32,
            median_ms: median(times) * 1e3,
            min_ms: min * 1e3,
        })
    }
}

/// A raft-log kept in its steady state, and the index its next append takes.
struct SteadyLog {
    log: RaftLog,
    next: u64,
}

impl SteadyLog {
    /// Appends `batches` batches of `payloads` (entries prepared before timing); returns the
    /// seconds the appends took.
    fn append_batches(&mut self, payloads: &[Bytes], batches: u64) -> anyhow::Result<f64> {
        let count = payloads.len() as u64;
        let inputs: Vec<Vec<Entry>> = (0..batches)
            .map(|k| {
                let first = self.next + k * count;
                (first..)
                    .zip(payloads)
                    .map(|(index, data)| Entry::normal(1, index, data.clone()))
                    .collect()
            })
            .collect();
        self.next += batches * count;
        let started = Instant::now();
        for entries in inputs {
            self.log.append(&entries).context("raft-log append")?;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Removes every entry (untimed): the segments become free files for reuse.
    fn purge(&mut self) -> anyhow::Result<()> {
        self.log
            .purge(LogId::new(1, self.next - 1))
            .context("raft-log purge")
    }

    /// Writes and purges `bytes` worth of records, so that new segments reuse purged files.
    fn warm_up(&mut self, bytes: u64, payloads: &[Bytes], stop: &AtomicBool) -> anyhow::Result<()> {
        let batch: Vec<Bytes> = payloads.iter().cycle().take(FILL_BATCH).cloned().collect();
        let record_bytes = (payloads[0].len() + raft_log::format::RECORD_HEADER_BYTES) as u64;
        let batches = bytes / (record_bytes * FILL_BATCH as u64) + 1;
        for _ in 0..batches {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            self.append_batches(&batch, 1)?;
        }
        self.purge()
    }

    /// Appends entries until the log holds `entries` (cycling through `payloads`).
    fn fill_to(
        &mut self,
        entries: u64,
        payloads: &[Bytes],
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        while self.next <= entries {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let count = (entries - self.next + 1).min(FILL_BATCH as u64) as usize;
            let batch: Vec<Bytes> = (self.next..)
                .take(count)
                .map(|index| payloads[index as usize % payloads.len()].clone())
                .collect();
            self.append_batches(&batch, 1)?;
        }
        Ok(())
    }
}

/// Seconds `batches` durable batches of `payloads` take the floor.
fn time_floor(floor: &mut Floor, payloads: &[Bytes], batches: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..batches {
        floor.append(payloads).context("floor pwrite + fdatasync")?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A plain file holding the read log's payloads back to back: entry `i` at `(i - 1) * 256`.
fn fill_read_floor(path: &Path, entries: u64, payloads: &[Bytes]) -> anyhow::Result<Floor> {
    let mut floor = Floor::create(path, entries * READ_ENTRY_BYTES as u64)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut next = 1u64;
    while next <= entries {
        let count = (entries - next + 1).min(FILL_BATCH as u64);
        let batch: Vec<&Bytes> = (next..next + count)
            .map(|index| &payloads[index as usize % payloads.len()])
            .collect();
        floor.append(&batch).context("filling the read floor")?;
        next += count;
    }
    Ok(floor)
}

/// Seconds the point reads of `indexes` take: raft-log `entry`, `entry_ref`, the floor (in
/// that order, each checking it read a whole entry).
fn read_all(log: &RaftLog, floor: &Floor, indexes: &[u64]) -> anyhow::Result<[f64; 3]> {
    let timed = |read: &mut dyn FnMut(u64) -> anyhow::Result<usize>| -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut bytes = 0;
        for &index in indexes {
            bytes += read(index)?;
        }
        let took = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            bytes == indexes.len() * READ_ENTRY_BYTES,
            "a read came back short"
        );
        Ok(took)
    };
    let copied = timed(&mut |i| Ok(log.entry(i).context("raft-log entry")?.data.len()))?;
    let borrowed = timed(&mut |i| {
        Ok(log
            .entry_ref(i)
            .context("raft-log entry_ref")?
            .payload()
            .len())
    })?;
    let mut buf = [0u8; READ_ENTRY_BYTES];
    let plain = timed(&mut |i| {
        floor
            .read_at(&mut buf, (i - 1) * READ_ENTRY_BYTES as u64)
            .context("floor pread")?;
        Ok(buf.len())
    })?;
    Ok([copied, borrowed, plain])
}

/// `PAYLOAD_VARIANTS` random payloads of `entry_bytes` (seeded: every run writes the same).
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

/// Seconds per store, round after round.
#[derive(Default)]
struct Rounds {
    count: u32,
    seconds: Vec<Vec<f64>>,
}

impl Rounds {
    fn add(&mut self, seconds: &[f64]) {
        if self.seconds.is_empty() {
            self.seconds = vec![Vec::new(); seconds.len()];
        }
        for (store, s) in seconds.iter().enumerate() {
            self.seconds[store].push(*s);
        }
        self.count += 1;
    }

    fn total(&self, store: usize) -> f64 {
        self.seconds[store].iter().sum::<f64>().max(1e-12)
    }

    fn median(&self, store: usize) -> f64 {
        median(self.seconds[store].clone())
    }

    /// The median over rounds of `store`'s rate over `over`'s (its time into `over`'s).
    fn median_ratio(&self, over: usize, store: usize) -> f64 {
        median(
            self.seconds[over]
                .iter()
                .zip(&self.seconds[store])
                .map(|(o, s)| o / s.max(1e-12))
                .collect(),
        )
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn size_name(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// A rate as the README's tables write it: `9.86 k/s`, `3.75 M/s`.
fn rate(per_sec: f64) -> String {
    let (value, unit) = match per_sec {
        r if r >= 1e6 => (r / 1e6, "M/s"),
        r if r >= 1e3 => (r / 1e3, "k/s"),
        r => (r, "/s"),
    };
    format!("{} {unit}", three_digits(value))
}

fn three_digits(value: f64) -> String {
    match value {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

fn print_table(report: &BenchLogReport) {
    println!(
        "raft-log against the pwrite + fdatasync floor in {} ({} s per case, segments of {} \
         bytes, appends {})",
        report.dir.display(),
        report.seconds_per_case,
        report.segment_bytes,
        if report.direct_io {
            "with O_DIRECT"
        } else {
            "through the page cache"
        }
    );
    println!();
    println!(
        "{:<48} {:>11} {:>11} {:>7} {:>15} {:>15}",
        "workload", "raft-log", "floor", "ratio", "raft-log batch", "floor batch"
    );
    for a in &report.appends {
        println!(
            "{:<48} {:>11} {:>11} {:>6.2}x {:>15} {:>15}",
            format!("append {}, batch {}", size_name(a.entry_bytes), a.batch),
            rate(a.raft_log_entries_per_sec),
            rate(a.floor_entries_per_sec),
            a.ratio,
            format!("{} µs", three_digits(a.raft_log_batch_us)),
            format!("{} µs", three_digits(a.floor_batch_us)),
        );
    }
    if let Some(r) = &report.point_reads {
        for (what, per_sec, ratio) in [
            ("entry, copy", r.raft_log_entry_per_sec, r.ratio_entry),
            (
                "entry_ref, borrowed",
                r.raft_log_entry_ref_per_sec,
                r.ratio_entry_ref,
            ),
        ] {
            println!(
                "{:<48} {:>11} {:>11} {:>6.2}x",
                format!("random point reads, 256 B ({what})"),
                rate(per_sec),
                rate(r.floor_per_sec),
                ratio
            );
        }
    }
    if let Some(r) = &report.reopen {
        println!(
            "{:<48} {:>11} {:>11} {:>7}",
            format!("reopen, {} x 256 B", r.entries),
            format!("{} ms", three_digits(r.median_ms)),
            "-",
            "-"
        );
    }
    println!();
    println!(
        "ratio: raft-log's rate over the floor's, the median over rounds that alternate the \
         two on the same disk.\nfloor: the same payloads back to back, one pwrite and one \
         fdatasync per batch, no framing or checksums; reads are preads.\nbatch: the median \
         time of one durable batch."
    );
}

/// The progress indicator on stderr: redrawn in place on a terminal, one line per step
/// otherwise.
struct Progress {
    cases: usize,
    case: usize,
    name: String,
    terminal: bool,
    drawn: bool,
}

/// Width of the bar, in characters.
const BAR_WIDTH: usize = 24;

impl Progress {
    fn new(cases: usize) -> Progress {
        // SAFETY: `isatty` only inspects the descriptor number.
        let terminal = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
        Progress {
            cases,
            case: 0,
            name: String::new(),
            terminal,
            drawn: false,
        }
    }

    /// A preparation step (not a timed case).
    fn step(&mut self, what: &str) {
        self.name = what.to_string();
        self.line(&format!("[{}/{}] {what} ...", self.case, self.cases));
    }

    /// The next timed case starts.
    fn case(&mut self, name: &str) {
        self.case += 1;
        self.name = name.to_string();
        if self.terminal {
            self.draw(0.0);
        } else {
            self.line(&format!("[{}/{}] {name}", self.case, self.cases));
        }
    }

    /// The case has run `elapsed` of `planned`.
    fn advance(&mut self, elapsed: Duration, planned: Duration) {
        if self.terminal {
            self.draw(elapsed.as_secs_f64() / planned.as_secs_f64().max(1e-9));
        }
    }

    fn draw(&mut self, fraction: f64) {
        let filled = ((fraction.clamp(0.0, 1.0)) * BAR_WIDTH as f64) as usize;
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(BAR_WIDTH - filled));
        self.line(&format!(
            "[{}/{}] [{bar}] {}",
            self.case, self.cases, self.name
        ));
    }

    fn line(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            self.drawn = true;
            write!(err, "\r\x1b[2K{text}")
        } else {
            writeln!(err, "{text}")
        };
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}
