//! Regression tests for defects in the engine's part of the node's path, found by a review of
//! that path and by the node simulation. Each test failed before its fix; ARCHITECTURE.md's
//! invariants table names them.

mod common;

use bytes::Bytes;
use common::{append, config, entries, is_append, msg, restored, snapshot_meta, Cluster};
use raft_core::driver::{Driver, WriteStep};
use raft_core::engine::{Config, Engine, EngineError, RestoredState, Role};
use raft_core::{LogId, Membership, MessageBody};

/// A leader elected by its own vote alone sends its first AppendEntries (to learners) only
/// once the hard state of its new term is durable, and so do the proposals that follow while
/// that write is in flight. Sent earlier, a crash before the write could let it win the same
/// term again and write other entries at the same indexes, which a learner holding the first
/// ones would take as identical (log matching broken).
#[test]
fn a_single_voter_leader_sends_nothing_of_its_term_before_the_term_is_durable() {
    let membership = Membership {
        learners: [2].into(),
        ..Membership::new_voters([1])
    };
    let state = RestoredState {
        initial_membership: membership,
        ..RestoredState::default()
    };
    let mut engine = Engine::new(1, config(), state).unwrap();
    for _ in 0..config().election_ticks_max * 2 {
        engine.tick();
        if engine.role() == Role::Leader {
            break;
        }
    }
    assert_eq!(engine.role(), Role::Leader, "a single voter elects itself");
    let ready = engine.ready();
    assert!(ready.hard_state.is_some(), "the new term is to be saved");
    assert!(
        !ready.messages.iter().any(is_append),
        "AppendEntries of an unsaved term must not leave before the write: {:?}",
        ready.messages
    );
    assert!(ready.persisted_messages.iter().any(is_append));

    // While that write is in flight, a proposal's AppendEntries wait too.
    engine.propose(Bytes::from_static(b"x")).unwrap();
    assert!(
        engine.take_messages().is_empty(),
        "the term is still not durable"
    );
}

/// The same rule as seen through the driver: the first write carries the hard state, and the
/// work handed out before it holds no AppendEntries.
#[test]
fn the_driver_holds_appendentries_of_an_unsaved_term() {
    let membership = Membership {
        learners: [2].into(),
        ..Membership::new_voters([1])
    };
    let state = RestoredState {
        initial_membership: membership,
        ..RestoredState::default()
    };
    let mut driver = Driver::new(Engine::new(1, config(), state).unwrap(), false);
    while driver.engine().role() != Role::Leader {
        driver.engine_mut().tick();
    }
    let work = driver.poll();
    let write = work.write.expect("the new term is written");
    assert!(write
        .steps
        .iter()
        .any(|s| matches!(s, WriteStep::SaveHardState(_))));
    assert!(!work.messages.iter().any(is_append));
    driver
        .engine_mut()
        .propose(Bytes::from_static(b"x"))
        .unwrap();
    assert!(!driver.poll().messages.iter().any(is_append));
    let after = driver.write_done();
    assert!(after.messages.iter().any(is_append));
}

/// A new leader whose committed configuration is joint, with no leave-joint entry in its log
/// (the previous leader committed the joint entry and died before the next one spread),
/// appends the leave-joint entry itself. Without that, every later change was refused with
/// `ChangeInProgress`.
#[test]
fn a_new_leader_leaves_a_committed_joint_configuration() {
    let mut c = Cluster::new(3);
    c.add_empty_node(4, config());
    c.add_empty_node(5, config());
    c.elect(1);
    for id in [4, 5] {
        c.engine_mut(1).add_learner(id, format!("n{id}")).unwrap();
        c.process(1);
        c.deliver_all();
        c.run(2);
    }
    // {1,2,3} -> {1,4,5}: two voters change, so the change goes through a joint configuration.
    let target = Membership {
        addresses: (1..=5).map(|id| (id, format!("n{id}"))).collect(),
        ..Membership::new_voters([1, 4, 5])
    };
    let joint = c.engine_mut(1).change_membership(target).unwrap();
    c.process(1);
    // The joint entry reaches everyone and commits on the leader, which appends the
    // leave-joint entry; that entry, and every commit notice, is lost.
    let appends = c.take(is_append);
    for m in appends {
        c.deliver(m);
    }
    let acks = c.take(|m| m.to == 1);
    for m in acks {
        c.engine_mut(1).step(m);
    }
    c.process(1);
    assert_eq!(
        c.commit(1),
        joint.index,
        "the leader committed the joint entry"
    );
    assert!(
        c.engine(1).membership().voters_outgoing.is_empty(),
        "and left it"
    );
    c.drop_all();
    // Only server 2 learns that the joint entry committed (a heartbeat), then the leader dies.
    let notice = append(1, 2, c.term(1), joint, Vec::new(), joint.index);
    c.deliver(notice);
    c.drop_all();
    assert!(c.engine(2).committed_membership().is_joint());
    c.isolate(1);
    c.forget_leader(&[3, 4, 5]);
    // Server 2 wins (its log is as long as anyone's) and leaves the joint configuration
    // (which removes it, so it steps down once that commits); 4 and 5 lead on.
    c.campaign(2);
    c.run(3 * config().election_ticks_max);
    for id in [4, 5] {
        let committed = c.engine(id).committed_membership();
        assert!(
            !committed.is_joint(),
            "server {id} still joint: {committed}"
        );
        assert_eq!(committed.voters, [1, 4, 5].into());
    }
    let leader = c.leader().expect("4 or 5 leads");
    assert!(
        c.engine_mut(leader).remove_server(1).is_ok(),
        "changes can be made again"
    );
}

/// No lease reads once a leadership transfer starts: its target may win an election before the
/// lease would run out (the TimeoutNow election ignores leases), and a read served from the
/// old lease after that could miss the new leader's writes.
#[test]
fn a_leader_serves_no_lease_reads_during_a_transfer() {
    let lease_cfg = Config {
        lease_read: true,
        ..config()
    };
    let mut c = Cluster::with_config(3, lease_cfg.clone());
    for id in [2, 3] {
        c.tick_n(id, lease_cfg.election_ticks_min);
    }
    c.drop_all();
    c.elect(1);
    c.run(2 * lease_cfg.heartbeat_ticks);
    c.engine_mut(1).read_index(1).unwrap();
    c.process(1);
    assert_eq!(c.node(1).read_states.len(), 1, "answered from the lease");

    c.engine_mut(1).transfer_leadership(2).unwrap();
    c.process(1);
    c.drop_all();
    c.engine_mut(1).read_index(2).unwrap();
    c.process(1);
    assert_eq!(
        c.node(1).read_states.len(),
        1,
        "no read may be answered from the lease once a transfer started"
    );
}

/// A follower that campaigns fails the reads it forwarded to the old leader at once, instead
/// of keeping them (and counting them against `pending_reads_max`) until they time out.
#[test]
fn forwarded_reads_fail_when_the_follower_campaigns() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.engine_mut(2).read_index(7).unwrap();
    c.process(2);
    c.drop_all();
    c.isolate(2);
    c.tick_until_campaign(2);
    assert_eq!(c.node(2).failed_reads, vec![7]);
}

/// A forwarded read whose request (or answer) was lost is sent again until answered: the read
/// completes within a few heartbeat periods of the loss instead of waiting for its timeout.
#[test]
fn a_lost_forwarded_read_is_resent_and_answered() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.engine_mut(2).read_index(9).unwrap();
    c.process(2);
    let lost = c.take(|m| matches!(m.body, MessageBody::ReadIndexRequest { .. }));
    assert_eq!(lost.len(), 1, "the request left and was lost");
    // Heartbeats keep 2 a follower of 1; within a few of them the read is answered.
    for _ in 0..4 * config().heartbeat_ticks {
        c.tick(1);
        c.tick(2);
        c.deliver_all();
        if !c.node(2).read_states.is_empty() {
            break;
        }
    }
    assert_eq!(
        c.node(2)
            .read_states
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![9],
        "the resent read is answered"
    );
    // A read the caller gave up on leaves the engine: it is neither resent nor counted.
    c.engine_mut(2).read_index(10).unwrap();
    c.process(2);
    c.drop_all();
    c.engine_mut(2).cancel_read(10);
    c.tick_n(2, 4 * config().heartbeat_ticks);
    assert!(!c
        .outbox
        .iter()
        .any(|m| matches!(m.body, MessageBody::ReadIndexRequest { .. })));
}

/// A follower whose log continues a received snapshot keeps its suffix; a truncation staged
/// earlier in the same batch of inputs (a new leader's conflicting entries) must survive the
/// install, from after the snapshot, or storage keeps the replaced entries there.
#[test]
fn a_snapshot_install_that_keeps_the_suffix_keeps_a_staged_truncation() {
    // Server 2 holds 1..=10 of term 1; a leader of term 2 replaces 5.. and sends a snapshot
    // at 7 (its entry 7 is of term 2, as server 2 now has it too).
    let mut c = Cluster::from_states(
        config(),
        vec![(2, restored(1, &[1, 2, 3], entries(&[1; 10])))],
    );
    let new_entries: Vec<_> = (5..=9).map(|i| common::entry(2, i)).collect();
    let appended = append(3, 2, 2, LogId::new(1, 4), new_entries, 3);
    c.engine_mut(2).step(appended);
    let meta = snapshot_meta(LogId::new(2, 7), &[1, 2, 3]);
    c.engine_mut(2)
        .step(msg(3, 2, 2, MessageBody::InstallSnapshot { meta }));
    // Before the fix the harness panicked here: storage still held the old 8..=10, and the
    // append of the new 8 left no room.
    c.process(2);
    let durable: Vec<LogId> = c.node(2).log.iter().map(|e| e.log_id()).collect();
    assert_eq!(durable, vec![LogId::new(2, 8), LogId::new(2, 9)]);
    assert_eq!(c.node(2).purged, LogId::new(2, 7));
}

/// While a snapshot waits in the next `Ready`, committed entries after it are not handed out
/// for applying: they would reach the state machine before the snapshot's restore.
#[test]
fn no_entry_after_a_staged_snapshot_is_handed_out_before_its_restore() {
    let mut engine = Engine::new(2, config(), restored(1, &[1, 2, 3], entries(&[1; 10]))).unwrap();
    let meta = snapshot_meta(LogId::new(1, 7), &[1, 2, 3]);
    engine.step(msg(1, 2, 1, MessageBody::InstallSnapshot { meta }));
    engine.step(append(1, 2, 1, LogId::new(1, 10), Vec::new(), 10));
    assert_eq!(engine.commit_index(), 10);
    assert!(
        engine.take_committed_entries().is_empty(),
        "entries 8..=10 must wait for the snapshot's restore"
    );
    let ready = engine.ready();
    assert_eq!(
        ready.snapshot.map(|m| m.last_log_id),
        Some(LogId::new(1, 7))
    );
    let indexes: Vec<u64> = ready.committed_entries.iter().map(|e| e.index).collect();
    assert_eq!(
        indexes,
        vec![8, 9, 10],
        "applied after the restore, in the same Ready"
    );
}

/// A joint change that would also turn one of the current voters into a learner is refused
/// (the joint configuration cannot list an outgoing voter as a learner); it used to build an
/// invalid configuration and panic the leader, and the next leader that retried it.
#[test]
fn a_joint_change_that_demotes_a_voter_is_refused() {
    let mut c = Cluster::new(3);
    c.add_empty_node(4, config());
    c.elect(1);
    c.engine_mut(1).add_learner(4, "n4".into()).unwrap();
    c.process(1);
    c.deliver_all();
    c.run(2);
    let mut target = c.engine(1).membership().clone();
    target.voters = [1, 2, 4].into();
    target.learners = [3].into();
    let refused = c.engine_mut(1).change_membership(target);
    assert!(
        matches!(refused, Err(EngineError::Invalid(_))),
        "{refused:?}"
    );
    // Demoting in a change of its own (one voter) works.
    let mut demote = c.engine(1).membership().clone();
    demote.voters.remove(&3);
    demote.learners.insert(3);
    c.engine_mut(1).change_membership(demote).unwrap();
    c.process(1);
    c.deliver_all();
    c.run(2);
    assert!(c.engine(1).committed_membership().is_learner(3));
}

/// A snapshot install that replaces the log writes its truncation before its purge: a crash
/// between the two leaves a log that still starts where it did. (Purging first left entries
/// after the purge point with a lower term than it, and the node panicked at every start.)
#[test]
fn a_snapshot_install_truncates_before_it_purges() {
    // Server 2 holds 1..=10 of term 1; the snapshot ends at 7 of term 3: nothing to keep.
    let state = restored(1, &[1, 2, 3], entries(&[1; 10]));
    let mut driver = Driver::new(Engine::new(2, config(), state).unwrap(), false);
    let meta = snapshot_meta(LogId::new(3, 7), &[1, 2, 3]);
    driver
        .engine_mut()
        .step(msg(1, 2, 3, MessageBody::InstallSnapshot { meta }));
    let write = driver.poll().write.expect("the install is written");
    let order: Vec<&WriteStep> = write
        .steps
        .iter()
        .filter(|s| matches!(s, WriteStep::Truncate(_) | WriteStep::Purge(_)))
        .collect();
    assert_eq!(
        order,
        vec![&WriteStep::Truncate(8), &WriteStep::Purge(LogId::new(3, 7))]
    );
}

/// A snapshot install tells the runtime how far the log was replaced, so proposals waiting
/// for entries at or below it are answered (a keep-suffix install drops those entries without
/// rolling them back, and their proposals waited forever).
#[test]
fn an_install_reports_how_far_it_replaced_the_log() {
    let state = restored(1, &[1, 2, 3], entries(&[1; 10]));
    let mut driver = Driver::new(Engine::new(2, config(), state).unwrap(), false);
    let meta = snapshot_meta(LogId::new(1, 7), &[1, 2, 3]);
    driver
        .engine_mut()
        .step(msg(1, 2, 1, MessageBody::InstallSnapshot { meta }));
    let work = driver.poll();
    assert_eq!(work.skipped_to, Some(LogId::new(1, 7)));
    assert!(
        work.rolled_back.is_empty(),
        "kept suffix: nothing rolled back"
    );
}

/// The AppendEntriesResponse of a follower to a heartbeat (nothing new to persist) leaves at
/// once, not behind the log write in flight; one that claims entries of that write waits for
/// it, and so does every answer while a received snapshot is being written. Found by
/// `redis-benchmark -c 32 -P 16` on three nodes: with 500 MB snapshots saturating the shared
/// disk, followers' syncs took 300-400 ms, their heartbeat answers waited behind them, and the
/// leader stepped down ("quorum not heard from") though both followers were up.
#[test]
fn a_follower_answers_heartbeats_without_waiting_for_its_write_in_flight() {
    let is_success_with = |m: &raft_core::Message, index: u64| {
        matches!(
            m.body,
            MessageBody::AppendEntriesResponse { success: true, match_index, .. } if match_index == index
        )
    };
    let mut follower =
        Engine::new(2, config(), restored(1, &[1, 2, 3], entries(&[1, 1, 1]))).unwrap();
    // Entry 4 arrives; its write is handed out and still in flight.
    follower.step(append(
        1,
        2,
        1,
        LogId::new(1, 3),
        vec![common::entry(1, 4)],
        3,
    ));
    let in_flight = follower.ready();
    assert_eq!(in_flight.entries.len(), 1);
    assert!(in_flight.messages.is_empty(), "{:?}", in_flight.messages);

    // A heartbeat at the durable entry 3 is answered now.
    follower.step(append(1, 2, 1, LogId::new(1, 3), vec![], 3));
    let now = follower.take_messages();
    assert!(
        now.iter().any(|m| is_success_with(m, 3)),
        "a heartbeat's answer must not wait for the write in flight: {now:?}"
    );
    // One that claims entry 4 waits for its write.
    follower.step(append(1, 2, 1, LogId::new(1, 4), vec![], 3));
    assert!(follower.take_messages().is_empty());
    follower.on_persisted(Some(LogId::new(1, 4)));
    let after = follower.ready();
    assert!(after
        .persisted_messages
        .iter()
        .any(|m| is_success_with(m, 4)));

    // A received snapshot counts as durable only once its write is reported.
    follower.step(msg(
        1,
        2,
        1,
        MessageBody::InstallSnapshot {
            meta: snapshot_meta(LogId::new(1, 10), &[1, 2, 3]),
        },
    ));
    follower.step(append(1, 2, 1, LogId::new(1, 10), vec![], 10));
    assert!(follower.take_messages().is_empty());
    let snapshot = follower.ready();
    assert!(snapshot.snapshot.is_some());
    follower.step(append(1, 2, 1, LogId::new(1, 10), vec![], 10));
    assert!(
        follower.take_messages().is_empty(),
        "the snapshot's write is still in flight"
    );
    follower.on_persisted(Some(LogId::new(1, 10)));
    follower.step(append(1, 2, 1, LogId::new(1, 10), vec![], 10));
    assert!(follower
        .take_messages()
        .iter()
        .any(|m| is_success_with(m, 10)));
}
