//! `raft bench`: a closed-loop load generator over the native client protocol. Each client
//! keeps exactly one request in flight; latencies go into an HDR histogram (microseconds),
//! merged at the end. The clients share `--conns` connections round-robin (client i uses
//! connection i mod N), the way etcd's benchmark tool separates `--clients` from `--conns`:
//! requests of the clients on one connection are pipelined and their answers share writes,
//! as in an application that multiplexes its requests over a small pool of connections. By
//! default there is one connection per [`CLIENTS_PER_CONNECTION_DEFAULT`] clients; `--conns`
//! equal to `--clients` gives every client its own connection (what `redis-benchmark -c`
//! does).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::admin::ClusterArgs;
use crate::client::{ClientError, ClusterClient};

/// Highest latency the histogram records, in microseconds (one minute); longer ones are
/// clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits of the histogram.
const HISTOGRAM_DIGITS: u8 = 3;
/// Clients at most: each holds a connection, and a server serves 256 by default.
pub const CLIENTS_MAX: usize = 1024;
/// Progress redraw interval on a terminal.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// Clients per connection when `--conns` is not given.
pub const CLIENTS_PER_CONNECTION_DEFAULT: usize = 8;
/// Pause after a failed request, so a client does not spin while there is no leader.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The flags of `raft bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    /// The cluster.
    pub cluster: ClusterArgs,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Connections the clients share (client i uses connection i mod N); 0 (the default):
    /// one per 8 clients, rounded up. Equal to --clients: one connection per client.
    #[arg(long, default_value_t = 0)]
    pub conns: usize,
    /// Run for this many seconds (ignored with --ops).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Run exactly this many operations instead of a fixed time.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Fraction of operations that are linearizable reads (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What a run measured.
#[derive(Debug)]
pub struct BenchResult {
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Acknowledged writes.
    pub writes: u64,
    /// Successful reads.
    pub reads: u64,
    /// Failed requests (nothing changed).
    pub errors: u64,
    /// Writes whose outcome is unknown.
    pub unknown: u64,
    /// Latency of successful operations, in microseconds.
    pub latency_us: Histogram<u64>,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    reads: AtomicU64,
    errors: AtomicU64,
    unknown: AtomicU64,
    started: AtomicU64,
}

impl Counters {
    fn done(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
            + self.reads.load(Ordering::Relaxed)
            + self.errors.load(Ordering::Relaxed)
            + self.unknown.load(Ordering::Relaxed)
    }
}

/// Runs `raft bench` and prints the result.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        bail!("--clients must be between 1 and {CLIENTS_MAX}");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let result = measure(&args, true).await?;
    if args.json {
        println!("{}", to_json(&args, &result));
    } else {
        print_text(&args, &result);
    }
    Ok(())
}

/// Runs the load and returns the measurements; draws progress on stderr if `progress`.
pub async fn measure(args: &BenchArgs, progress: bool) -> anyhow::Result<BenchResult> {
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration.max(0.0));
    let mut tasks = Vec::with_capacity(args.clients);
    let connections = connection_count(args);
    let clients = (0..connections)
        .map(|_| args.cluster.client().map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for client_index in 0..args.clients {
        let client = clients[client_index % connections].clone();
        let counters = counters.clone();
        let stop = stop.clone();
        let args = args.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(
                client,
                client_index as u64,
                &args,
                &counters,
                &stop,
                deadline,
            )
            .await
        }));
    }
    let drawer = progress.then(|| {
        let counters = counters.clone();
        let stop = stop.clone();
        let (ops, duration) = (args.ops, args.duration);
        tokio::spawn(async move { draw_progress(&counters, &stop, start, ops, duration).await })
    });
    let mut latency_us = Histogram::new_with_bounds(1, LATENCY_US_MAX, HISTOGRAM_DIGITS)?;
    for task in tasks {
        let histogram = task.await?;
        latency_us.add(&histogram)?;
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    if let Some(drawer) = drawer {
        let _ = drawer.await;
    }
    Ok(BenchResult {
        elapsed,
        writes: counters.writes.load(Ordering::Relaxed),
        reads: counters.reads.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        unknown: counters.unknown.load(Ordering::Relaxed),
        latency_us,
    })
}

/// Connections the run opens: `--conns` (at most one per client), or one per
/// [`CLIENTS_PER_CONNECTION_DEFAULT`] clients when it is 0.
pub fn connection_count(args: &BenchArgs) -> usize {
    match args.conns {
        0 => args.clients.div_ceil(CLIENTS_PER_CONNECTION_DEFAULT),
        conns => conns.min(args.clients),
    }
}

async fn client_loop(
    client: Arc<ClusterClient>,
    seed: u64,
    args: &BenchArgs,
    counters: &Counters,
    stop: &AtomicBool,
    deadline: Instant,
) -> Histogram<u64> {
    let mut histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, HISTOGRAM_DIGITS)
        .unwrap_or_else(|_| Histogram::new(HISTOGRAM_DIGITS).expect("3 digits are valid"));
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    let value = Bytes::from(vec![b'v'; args.value_size]);
    loop {
        match args.ops {
            Some(ops) if counters.started.fetch_add(1, Ordering::Relaxed) >= ops => break,
            None if Instant::now() >= deadline => break,
            _ => {}
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = Bytes::from(format!("key:{:012}", rng.gen_range(0..args.keys)));
        let read = rng.gen_bool(args.read_ratio);
        let began = Instant::now();
        let result = if read {
            client.get(key).await.map(|_| ())
        } else {
            client.put(key, value.clone()).await
        };
        match result {
            Ok(()) => {
                let us = (began.elapsed().as_micros() as u64).clamp(1, LATENCY_US_MAX);
                let _ = histogram.record(us);
                let counter = if read {
                    &counters.reads
                } else {
                    &counters.writes
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(ClientError::OutcomeUnknown(_)) => {
                counters.unknown.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    histogram
}

async fn draw_progress(
    counters: &Counters,
    stop: &AtomicBool,
    start: Instant,
    ops: Option<u64>,
    duration: f64,
) {
    let terminal = std::io::stderr().is_terminal();
    let interval = if terminal {
        PROGRESS_INTERVAL
    } else {
        Duration::from_secs(1)
    };
    let mut last = (Instant::now(), 0u64);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(interval).await;
        let done = counters.done();
        let now = Instant::now();
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, done);
        let fraction = match ops {
            Some(ops) => done as f64 / ops.max(1) as f64,
            None => start.elapsed().as_secs_f64() / duration.max(1e-9),
        }
        .clamp(0.0, 1.0);
        const WIDTH: usize = 30;
        let filled = (fraction * WIDTH as f64) as usize;
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(WIDTH - filled));
        let line = format!(
            "[{bar}] {:>3.0}%  {done} ops  {rate:>9.0} ops/s",
            fraction * 100.0
        );
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\r{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
    if terminal {
        eprintln!();
    }
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn print_text(args: &BenchArgs, r: &BenchResult) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let ops = r.writes + r.reads;
    println!(
        "{} clients on {} connections, {}-byte values, read ratio {}, {} keys, {:.2} s",
        args.clients,
        connection_count(args),
        args.value_size,
        args.read_ratio,
        args.keys,
        secs
    );
    println!(
        "ops: {ops} ({} writes acknowledged, {} reads), errors {}, outcome unknown {}",
        r.writes, r.reads, r.errors, r.unknown
    );
    println!(
        "throughput: {:.0} ops/s ({:.0} writes/s, {:.0} reads/s)",
        ops as f64 / secs,
        r.writes as f64 / secs,
        r.reads as f64 / secs
    );
    let h = &r.latency_us;
    println!(
        "latency ms: p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(h, 0.50),
        ms(h, 0.95),
        ms(h, 0.99),
        ms(h, 0.999),
        h.max() as f64 / 1000.0
    );
}

fn to_json(args: &BenchArgs, r: &BenchResult) -> String {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let h = &r.latency_us;
    format!(
        "{{\"clients\":{},\"conns\":{},\"value_size\":{},\"read_ratio\":{},\"keys\":{},\"elapsed_s\":{:.3},\
         \"ops\":{},\"writes\":{},\"reads\":{},\"errors\":{},\"unknown\":{},\"ops_per_s\":{:.1},\
         \"writes_per_s\":{:.1},\"latency_ms\":{{\"p50\":{:.3},\"p95\":{:.3},\"p99\":{:.3},\
         \"p999\":{:.3},\"max\":{:.3}}}}}",
        args.clients,
        connection_count(args),
        args.value_size,
        args.read_ratio,
        args.keys,
        secs,
        r.writes + r.reads,
        r.writes,
        r.reads,
        r.errors,
        r.unknown,
        (r.writes + r.reads) as f64 / secs,
        r.writes as f64 / secs,
        ms(h, 0.50),
        ms(h, 0.95),
        ms(h, 0.99),
        ms(h, 0.999),
        h.max() as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn connections(args: &[&str]) -> usize {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("valid flags");
        connection_count(&cli.bench)
    }

    #[test]
    fn clients_share_one_connection_per_eight_unless_told_otherwise() {
        assert_eq!(connections(&["--clients", "1"]), 1);
        assert_eq!(connections(&["--clients", "8"]), 1);
        assert_eq!(connections(&["--clients", "9"]), 2);
        assert_eq!(connections(&["--clients", "64"]), 8);
        assert_eq!(connections(&["--clients", "64", "--conns", "64"]), 64);
        assert_eq!(connections(&["--clients", "4", "--conns", "100"]), 4);
    }
}
