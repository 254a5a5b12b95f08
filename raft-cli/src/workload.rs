//! [`WriteLoad`]: concurrent writers of unique keys that remember every acknowledged write,
//! for the demo and the tests (so they can check that no acknowledged write was lost).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::client::{ClientError, ClusterClient};
use crate::config::CLUSTER_ID_DEFAULT;

/// Highest latency recorded, in microseconds (one minute).
const LATENCY_US_MAX: u64 = 60_000_000;
/// Pause after a failed write, so writers do not spin while there is no leader.
const ERROR_PAUSE: Duration = Duration::from_millis(5);
/// Time a writer keeps looking for a leader per write before it counts an error.
const WRITE_TIMEOUT_MS: u64 = 5_000;

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct AckedWrite {
    /// The key written.
    pub key: Bytes,
    /// The value written.
    pub value: Bytes,
    /// When the write was sent.
    pub sent: Instant,
    /// When its acknowledgement arrived.
    pub acked: Instant,
}

/// What the writers did.
#[derive(Debug)]
pub struct LoadReport {
    /// Every acknowledged write.
    pub acked: Vec<AckedWrite>,
    /// Writes whose outcome is unknown (never counted as acknowledged).
    pub unknown: u64,
    /// Writes that failed without effect.
    pub errors: u64,
    /// Latency of acknowledged writes, in microseconds.
    pub latency_us: Histogram<u64>,
    /// When the load started and stopped.
    pub started: Instant,
    /// When the load stopped.
    pub stopped: Instant,
}

impl LoadReport {
    /// Acknowledged writes per second.
    pub fn writes_per_s(&self) -> f64 {
        let secs = self.stopped.duration_since(self.started).as_secs_f64();
        self.acked.len() as f64 / secs.max(1e-9)
    }

    /// The first acknowledgement of a write sent at or after `t`. (An answer already on its
    /// way at `t`, say from a leader killed at `t`, does not count: it says nothing about
    /// when the cluster served again.)
    pub fn first_ack_of_write_sent_after(&self, t: Instant) -> Option<Instant> {
        self.acked
            .iter()
            .filter(|w| w.sent >= t)
            .map(|w| w.acked)
            .min()
    }
}

/// Running writers.
#[derive(Debug)]
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<JoinHandle<LoadReport>>,
}

impl WriteLoad {
    /// Starts `writers` writers against the cluster at `addrs`, each writing keys
    /// `{prefix}:{writer}:{n}`, until [`WriteLoad::finish`] or `max_writes_each` writes.
    pub fn start(addrs: &[String], writers: usize, prefix: &str, max_writes_each: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks = (0..writers)
            .map(|w| {
                let client = ClusterClient::new(addrs.to_vec(), CLUSTER_ID_DEFAULT)
                    .with_timeout_ms(WRITE_TIMEOUT_MS);
                let stop = stop.clone();
                let prefix = format!("{prefix}:{w}");
                tokio::spawn(writer(client, prefix, stop, started, max_writes_each))
            })
            .collect();
        WriteLoad {
            stop,
            started,
            tasks,
        }
    }

    /// How long the load has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the writers (each finishes its write in flight) and merges their reports.
    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Waits until every writer has done its `max_writes_each` writes; merges their reports.
    pub async fn join(self) -> LoadReport {
        let mut total = empty_report(self.started);
        for task in self.tasks {
            let joined = task.await;
            if let Err(e) = &joined {
                tracing::error!(error = %e, "writer task failed");
            }
            if let Ok(report) = joined {
                total.acked.extend(report.acked);
                total.unknown += report.unknown;
                total.errors += report.errors;
                let _ = total.latency_us.add(&report.latency_us);
                total.stopped = total.stopped.max(report.stopped);
            }
        }
        total
    }
}

fn empty_report(started: Instant) -> LoadReport {
    LoadReport {
        acked: Vec::new(),
        unknown: 0,
        errors: 0,
        latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
            .unwrap_or_else(|_| Histogram::new(3).expect("3 digits are valid")),
        started,
        stopped: started,
    }
}

async fn writer(
    client: ClusterClient,
    prefix: String,
    stop: Arc<AtomicBool>,
    started: Instant,
    max_writes: u64,
) -> LoadReport {
    let mut report = empty_report(started);
    for n in 0..max_writes {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = Bytes::from(format!("{prefix}:{n}"));
        let value = Bytes::from(format!("value-{n}"));
        let began = Instant::now();
        match client.put(key.clone(), value.clone()).await {
            Ok(()) => {
                let now = Instant::now();
                let us = (now.duration_since(began).as_micros() as u64).clamp(1, LATENCY_US_MAX);
                let _ = report.latency_us.record(us);
                report.acked.push(AckedWrite {
                    key,
                    value,
                    sent: began,
                    acked: now,
                });
            }
            Err(ClientError::OutcomeUnknown(_)) => {
                report.unknown += 1;
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "write failed");
                report.errors += 1;
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    report.stopped = Instant::now();
    report
}

/// Reads every acknowledged key back (linearizable reads, in batches) and returns the keys
/// whose value is missing or different.
pub async fn verify(
    client: &ClusterClient,
    acked: &[AckedWrite],
) -> Result<Vec<Bytes>, ClientError> {
    /// Keys per read request.
    const BATCH_KEYS: usize = 500;
    let mut lost = Vec::new();
    for batch in acked.chunks(BATCH_KEYS) {
        let keys = batch.iter().map(|w| w.key.clone()).collect();
        let values = client.get_many(keys).await?;
        for (write, actual) in batch.iter().zip(values) {
            if actual.as_ref() != Some(&write.value) {
                lost.push(write.key.clone());
            }
        }
    }
    Ok(lost)
}
