//! The write pipeline: a [`Write`]'s steps run against the log store in a task of their own,
//! in order, each durable before the next (`LogStore` contract rule 3), while the event loop
//! goes on; the end is reported as [`Event::Persisted`].

use std::sync::Arc;

use tokio::sync::mpsc;

use super::runtime::Event;
use super::storage::{LogStore, StorageError};
use super::tasks::Tasks;
use crate::driver::{Write, WriteStep};

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

async fn run<L: LogStore>(log: &L, write: Write) -> Result<(), StorageError> {
    for step in write.steps {
        match step {
            WriteStep::Truncate(from) => log.truncate(from).await?,
            WriteStep::Purge(upto) => log.purge(upto).await?,
            WriteStep::SaveHardState(hard_state) => log.save_hard_state(hard_state).await?,
            WriteStep::Append(entries) => log.append(entries).await?,
        }
    }
    Ok(())
}
