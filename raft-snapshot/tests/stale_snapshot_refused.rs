//! A snapshot that is not newer than the receiver's latest is refused (raft-core's store
//! contract rule 3), and the sender stops at once instead of retrying.

mod common;

use std::sync::Arc;

use raft_core::node::SnapshotStore;
use raft_core::LogId;
use raft_snapshot::{Error, FileSnapshotStore, SnapshotSender};

use common::*;

#[tokio::test]
async fn a_snapshot_older_than_the_receivers_latest_is_refused() {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let follower = FileSnapshotStore::open(dirs.1.path()).unwrap();
    let newer = build_snapshot(&follower, LogId::new(2, 100), 10_000, 1).await;
    let link = Loopback::new(follower.clone());
    // An older snapshot, and one of the very entry the receiver already has.
    for (i, log_id) in [LogId::new(1, 50), LogId::new(2, 100)]
        .into_iter()
        .enumerate()
    {
        let leader = FileSnapshotStore::open(dirs.0.path().join(i.to_string())).unwrap();
        let meta = build_snapshot(&leader, log_id, 10_000, 2).await;
        let sender =
            SnapshotSender::new(Arc::new(leader), link.clone(), sender_config(4096, 4)).unwrap();
        let error = sender.send(TARGET, meta.clone()).await.unwrap_err();
        assert!(
            matches!(&error, Error::Refused { snapshot, node: 2, reason }
                if *snapshot == meta.last_log_id && reason.contains("not newer")),
            "{error}"
        );
    }
    assert_eq!(link.seen().written(), Vec::<u64>::new(), "nothing written");
    assert_eq!(follower.latest().await.unwrap(), Some(newer));
    assert_eq!(follower.receiving().await, None);
}
