//! Every task a node spawns, so that [`crate::node::RaftHandle::kill`] can stop them all at
//! once, the way a process crash does: nothing finishes, nothing is answered.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::{AbortHandle, JoinHandle};

/// Finished handles are dropped once the list holds this many, at least (the threshold then
/// doubles with the live tasks, so pruning stays amortized O(1) per spawn).
const PRUNE_AT_LEN_MIN: usize = 64;

#[derive(Debug, Default)]
struct Inner {
    handles: Vec<AbortHandle>,
    prune_at_len: usize,
    killed: bool,
}

/// The tasks of one node. Cloning shares the set.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tasks {
    inner: Arc<Mutex<Inner>>,
}

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing here can be left half-updated by a panic: take a poisoned lock over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spawns `future` on the current runtime as one of the node's tasks. After
    /// [`Tasks::kill`] the task is aborted before it first runs.
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(future);
        let mut inner = self.lock();
        if inner.killed {
            handle.abort();
            return handle;
        }
        if inner.handles.len() >= inner.prune_at_len.max(PRUNE_AT_LEN_MIN) {
            inner.handles.retain(|h| !h.is_finished());
            inner.prune_at_len = inner.handles.len() * 2;
        }
        inner.handles.push(handle.abort_handle());
        handle
    }

    /// Counts `handle`'s task (spawned some other way, on another runtime) as one of the
    /// node's, so that [`Tasks::kill`] aborts it too.
    pub(crate) fn register(&self, handle: AbortHandle) {
        let mut inner = self.lock();
        if inner.killed {
            handle.abort();
        } else {
            inner.handles.push(handle);
        }
    }

    /// Aborts every task of the node, now and in the future.
    pub(crate) fn kill(&self) {
        let handles = {
            let mut inner = self.lock();
            inner.killed = true;
            std::mem::take(&mut inner.handles)
        };
        for handle in handles {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn kill_aborts_running_and_later_tasks() {
        let tasks = Tasks::default();
        let long = tasks.spawn(tokio::time::sleep(std::time::Duration::from_secs(3600)));
        for _ in 0..200 {
            tasks.spawn(async {}).await.unwrap();
        }
        assert!(
            tasks.lock().handles.len() < 200,
            "finished tasks are pruned"
        );
        tasks.kill();
        assert!(long.await.unwrap_err().is_cancelled());
        let late = tasks.spawn(async {});
        assert!(late.await.unwrap_err().is_cancelled());
    }
}
