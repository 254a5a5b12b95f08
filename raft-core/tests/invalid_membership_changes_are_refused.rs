//! A membership change whose configuration could not be decoded again from its log entry is
//! refused with an error, never appended: an address over `ADDRESS_BYTES_MAX` bytes (from a
//! client's "add this server" request, say) stopped the leader's event loop with a panic.

use std::sync::Arc;

use raft_core::membership::{ADDRESS_BYTES_MAX, MEMBERS_MAX};
use raft_core::node::{
    MemKv, MemLogStore, MemRouter, MemSnapshotStore, MessageHandler, NodeConfig, NodeState,
    RaftError, RaftNode,
};
use raft_core::Membership;

#[tokio::test]
async fn changes_whose_configuration_could_not_be_decoded_are_refused_and_the_node_goes_on() {
    let router = MemRouter::new();
    let handle = RaftNode::start(
        NodeConfig::new(1),
        Arc::new(MemLogStore::new()),
        Arc::new(MemSnapshotStore::new()),
        Arc::new(router.transport(1)),
        MemKv::new(),
        Membership::new_voters([1]),
    )
    .await
    .unwrap();
    router.register(1, Arc::new(handle.clone()) as Arc<dyn MessageHandler>);
    let mut status = handle.watch_status();
    status.wait_for(|s| s.leader == Some(1)).await.unwrap();

    let too_long = "a".repeat(ADDRESS_BYTES_MAX + 1);
    let refused = handle.add_learner(2, too_long.clone()).await;
    assert!(matches!(refused, Err(RaftError::Refused(_))), "{refused:?}");
    let refused = handle.add_voter(2, too_long).await;
    assert!(matches!(refused, Err(RaftError::Refused(_))), "{refused:?}");
    let mut too_many_addresses = Membership::new_voters([1]);
    too_many_addresses.learners.insert(3);
    too_many_addresses.addresses = (1..=MEMBERS_MAX as u64 + 1)
        .map(|id| (id, format!("n{id}")))
        .collect();
    let refused = handle.change_membership(too_many_addresses).await;
    assert!(matches!(refused, Err(RaftError::Refused(_))), "{refused:?}");

    assert_eq!(handle.status().state, NodeState::Running);
    let longest = "a".repeat(ADDRESS_BYTES_MAX);
    handle.add_learner(2, longest).await.unwrap();
    handle.shutdown().await;
}
