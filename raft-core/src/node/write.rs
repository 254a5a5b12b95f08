//! The write pipeline: a [`Write`]'s steps run against the log store in a task of their own,
//! in order, each durable before the next (`LogStore` contract rule 3), while the event loop
//! goes on; the end is reported as [`Event::Persisted`], with what the write did and how long
//! it took for the node's metrics.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::runtime::Event;
use super::storage::{LogStore, StorageError};
use super::tasks::Tasks;
use crate::driver::{Write, WriteStep};

/// What a finished write did, for the node's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WriteReport {
    /// Entries appended (every append step of the write).
    pub(crate) entries: u64,
    /// Their payload bytes.
    pub(crate) bytes: u64,
    /// From the first step's start until the last step was durable.
    pub(crate) took: Duration,
}

/// Starts `write` on `log`. At most one write is in flight at a time (the driver's rule), so
/// the store never sees two writes at once (contract rule 2).
pub(super) fn spawn<L: LogStore>(
    tasks: &Tasks,
    log: Arc<L>,
    write: Write,
    events: mpsc::UnboundedSender<Event>,
) {
    tasks.spawn(async move {
        let result = run(log.as_ref(), write).await;
        let _ = events.send(Event::Persisted(result));
    });
}

async fn run<L: LogStore>(log: &L, write: Write) -> Result<WriteReport, StorageError> {
    let started = Instant::now();
    let mut report = WriteReport::default();
    for step in write.steps {
        match step {
            WriteStep::Truncate(from) => log.truncate(from).await?,
            WriteStep::Purge(upto) => log.purge(upto).await?,
            WriteStep::SaveHardState(hard_state) => log.save_hard_state(hard_state).await?,
            WriteStep::Append(entries) => {
                report.entries += entries.len() as u64;
                report.bytes += entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
                log.append(entries).await?
            }
        }
    }
    report.took = started.elapsed();
    Ok(report)
}
