//! The leader's deletion of expired keys.
//!
//! Replicas never delete a key because their own clock says it expired: that would make
//! their tables depend on their clocks. Instead the leader looks, every
//! [`REAP_INTERVAL_MS`], at the keys whose deadline passed by its clock (the table keeps
//! them in deadline order, so this costs nothing when none did and no scan when some did)
//! and proposes their deletion ([`WriteOp::Reap`]) through the log, stamped with its clock;
//! each replica deletes those that are still expired at that stamp. Until then every
//! reader treats an expired key as absent, so the entry changes what is stored, never what
//! a client sees.

use std::sync::Arc;
use std::time::Duration;

use raft_core::engine::Role;
use tokio::sync::watch;
use tracing::debug;

use crate::kv::{Batch, KvCommand, WriteOp};
use crate::proto::Request;
use crate::service::Service;

/// How often the leader looks for expired keys, in milliseconds: with the time to commit a
/// deletion, how long an expired key may still be stored (not seen) after its deadline.
pub const REAP_INTERVAL_MS: u64 = 100;
/// Keys one deletion entry names, at most.
pub const REAP_KEYS_PER_ENTRY_MAX: usize = 1_000;
/// Deletion entries the leader proposes per interval, at most (one after the other): past
/// 100,000 expired keys per interval, the rest wait for the next ones.
pub const REAP_ENTRIES_PER_INTERVAL_MAX: usize = 100;

/// Deletes expired keys while this node leads, until `stop` turns true.
pub async fn run(service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_millis(REAP_INTERVAL_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let leads = service.handle().with_status(|s| s.role == Role::Leader);
        if leads {
            // A deletion waiting for its commit does not hold up a shutdown.
            tokio::select! {
                () = reap(&service) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }
}

/// Proposes the deletion of the keys expired now, a batch at a time.
async fn reap(service: &Service) {
    for _ in 0..REAP_ENTRIES_PER_INTERVAL_MAX {
        let keys = service.expired_keys(REAP_KEYS_PER_ENTRY_MAX);
        if keys.is_empty() {
            return;
        }
        let more = keys.len() == REAP_KEYS_PER_ENTRY_MAX;
        let count = keys.len();
        let batch = Batch::single(WriteOp::Reap { keys }, service.reply_bytes_max());
        match service
            .execute(Request::Write(KvCommand::Redis(batch)))
            .await
        {
            Ok(_) => debug!(count, "deleted expired keys"),
            Err(e) => {
                // Lost leadership, back-pressure: the next leader or interval tries again.
                debug!(error = %e, "deleting expired keys failed");
                return;
            }
        }
        if !more {
            return;
        }
    }
}
