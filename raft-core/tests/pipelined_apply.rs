//! The contract a pipelining runtime relies on: [`Engine::take_committed_entries`] (and a
//! `Ready`'s committed entries) hand out only entries that are committed *and* reported
//! durable here, so they may be applied while a later write is still in flight.

mod common;

use bytes::Bytes;
use common::{is_append, Cluster};
use raft_core::engine::Role;
use raft_core::{Message, MessageBody};

fn is_append_ack(m: &Message) -> bool {
    matches!(m.body, MessageBody::AppendEntriesResponse { .. })
}

#[test]
fn a_leader_applies_only_what_it_has_persisted_even_when_a_quorum_of_followers_has() {
    let mut c = Cluster::new(3);
    assert_eq!(c.campaign(1), Role::Leader);
    c.deliver_all();
    let applied_before = c.node(1).applied.len();

    // The leader proposes and replicates, but its own write is still in flight: no ready()
    // yet, only the messages a pipelining runtime sends at once.
    let id = c.engine_mut(1).propose(Bytes::from_static(b"x")).unwrap();
    let appends: Vec<Message> = c
        .engine_mut(1)
        .take_messages()
        .into_iter()
        .filter(is_append)
        .collect();
    assert_eq!(appends.len(), 2);
    for m in appends {
        c.deliver(m);
    }
    // Both followers persisted and acknowledged; the leader steps the acks directly.
    let acks = c.take(is_append_ack);
    assert_eq!(acks.len(), 2);
    for ack in acks {
        c.engine_mut(1).step(ack);
    }
    assert_eq!(
        c.commit(1),
        id.index,
        "a quorum of followers commits the entry"
    );
    assert!(
        c.engine_mut(1).take_committed_entries().is_empty(),
        "not durable on the leader yet, so not handed out"
    );

    // The leader's Ready hands the entry out for writing, not yet for applying.
    let mut ready = c.engine_mut(1).ready();
    assert_eq!(ready.entries.last().map(|e| e.log_id()), Some(id));
    assert!(ready.committed_entries.is_empty());
    ready.messages.clear();

    // Once its write is durable, the entry is handed out exactly once.
    c.engine_mut(1).on_persisted(Some(id));
    let committed = c.engine_mut(1).take_committed_entries();
    assert_eq!(
        committed.iter().map(|e| e.log_id()).collect::<Vec<_>>(),
        vec![id]
    );
    assert!(c.engine_mut(1).take_committed_entries().is_empty());
    assert!(c.engine_mut(1).ready().committed_entries.is_empty());
    assert_eq!(c.node(1).applied.len(), applied_before);
}

#[test]
fn a_follower_hands_out_nothing_past_what_it_has_persisted() {
    let mut c = Cluster::new(3);
    assert_eq!(c.campaign(1), Role::Leader);
    c.deliver_all();
    let first = c.engine_mut(1).propose(Bytes::from_static(b"a")).unwrap();
    c.process(1);
    c.deliver_all();
    assert_eq!(c.commit(2), first.index);

    // A second entry is committed through follower 3 while its first AppendEntries to
    // follower 2 is lost; the leader's retransmission carries the entry and a commit index
    // that covers it. Follower 2 steps it, and its write is "in flight" (not processed).
    let second = c.engine_mut(1).propose(Bytes::from_static(b"b")).unwrap();
    c.process(1);
    let lost = c.take(|m| m.to == 2);
    assert!(!lost.is_empty());
    c.deliver_all();
    assert_eq!(c.commit(1), second.index);
    let mut stepped = 0;
    for _ in 0..20 {
        c.tick(1);
        for m in c.take(|m| m.to == 2) {
            stepped += usize::from(is_append(&m));
            c.engine_mut(2).step(m);
        }
        if c.commit(2) == second.index {
            break;
        }
    }
    assert!(stepped > 0);
    assert_eq!(
        c.commit(2),
        second.index,
        "the heartbeat carried the commit"
    );
    let mut ready = c.engine_mut(2).ready();
    assert!(
        ready
            .committed_entries
            .iter()
            .all(|e| e.index < second.index),
        "entry {} handed out before it was durable on follower 2",
        second.index
    );
    let last = ready.entries.last().map(|e| e.log_id());
    ready.messages.clear();
    assert!(c.engine_mut(2).take_committed_entries().is_empty());
    if let Some(last) = last {
        c.engine_mut(2).on_persisted(Some(last));
    }
    let handed: Vec<_> = c
        .engine_mut(2)
        .take_committed_entries()
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(handed, vec![second.index]);
}
