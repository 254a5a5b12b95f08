//! One test per rule of the Raft paper (Ongaro and Ousterhout, "In Search of an Understandable
//! Consensus Algorithm", 2014) and of Ongaro's thesis ("Consensus: Bridging Theory and
//! Practice", 2014), each citing its section. The tests drive real engines through the small
//! deterministic harness in `common`: messages wait in an outbox until a test delivers, drops
//! or forges them, so each test builds exactly the situation its rule is about.

mod common;

use bytes::Bytes;
use common::{
    append, append_entries_of, config, entries, entry, is_append, is_vote_request, msg, restored,
    snapshot_meta, vote_request, Cluster,
};
use raft_core::engine::{Config, EngineError, ReplicationState, Role};
use raft_core::{ConflictHint, Entry, EntryKind, LogId, Membership, Message, MessageBody, NodeId};

/// The vote responses `from` sent that are still in the outbox: (to, granted).
fn vote_responses(c: &Cluster, from: NodeId) -> Vec<(NodeId, bool)> {
    c.outbox
        .iter()
        .filter(|m| m.from == from)
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse {
                granted,
                pre_vote: false,
            } => Some((m.to, granted)),
            _ => None,
        })
        .collect()
}

/// The AppendEntries responses `from` sent that are still in the outbox.
fn append_responses(c: &Cluster, from: NodeId) -> Vec<(bool, u64, Option<ConflictHint>)> {
    c.outbox
        .iter()
        .filter(|m| m.from == from)
        .filter_map(|m| match m.body {
            MessageBody::AppendEntriesResponse {
                success,
                match_index,
                conflict,
                ..
            } => Some((success, match_index, conflict)),
            _ => None,
        })
        .collect()
}

fn no_pre_vote() -> Config {
    Config {
        pre_vote: false,
        ..config()
    }
}

/// A follower that hears nothing for an election timeout becomes a candidate: it increments
/// its term, votes for itself (persisted together) and asks every other server for its vote.
/// It does not start before the minimum timeout.
///
/// Reference: Raft paper section 5.2.
#[test]
fn election_starts_after_election_timeout() {
    let mut c = Cluster::with_config(3, no_pre_vote());
    let cfg = no_pre_vote();
    c.tick_n(1, cfg.election_ticks_min - 1);
    assert_eq!(c.role(1), Role::Follower);
    assert!(c.outbox.is_empty(), "no message before the timeout");
    for _ in 0..=cfg.election_ticks_max - cfg.election_ticks_min {
        if c.role(1) != Role::Follower {
            break;
        }
        c.tick(1);
    }
    assert_eq!(c.role(1), Role::Candidate);
    assert_eq!(c.term(1), 1);
    let hs = *c.node(1).hard_states.last().expect("hard state persisted");
    assert_eq!((hs.term, hs.voted_for), (1, Some(1)));
    let mut asked: Vec<NodeId> = c
        .outbox
        .iter()
        .filter(|m| is_vote_request(m))
        .map(|m| m.to)
        .collect();
    asked.sort();
    assert_eq!(asked, vec![2, 3]);
    c.deliver_all();
    assert_eq!(c.role(1), Role::Leader, "a majority of votes elects it");
}

/// Each server grants at most one vote per term, first come first served (a repeated request
/// from the same candidate is granted again).
///
/// Reference: Raft paper section 5.2 (and Figure 2, RequestVote receiver rule 2).
#[test]
fn one_vote_per_term() {
    let mut c = Cluster::with_config(3, no_pre_vote());
    c.deliver(vote_request(2, 1, 1, LogId::ZERO));
    c.deliver(vote_request(3, 1, 1, LogId::ZERO));
    c.deliver(vote_request(2, 1, 1, LogId::ZERO));
    assert_eq!(
        vote_responses(&c, 1),
        vec![(2, true), (3, false), (2, true)]
    );
    assert_eq!(c.node(1).hard_state.voted_for, Some(2));
    // A new term frees the vote.
    c.outbox.clear();
    c.deliver(vote_request(3, 1, 2, LogId::ZERO));
    assert_eq!(vote_responses(&c, 1), vec![(3, true)]);
}

/// A voter denies its vote to a candidate whose log is less up to date than its own: a later
/// last term wins; with equal last terms the longer log wins.
///
/// Reference: Raft paper section 5.4.1.
#[test]
fn vote_requires_an_up_to_date_log() {
    let states = vec![(1, restored(2, &[1, 2, 3], entries(&[1, 1, 2, 2, 2])))];
    let mut c = Cluster::from_states(no_pre_vote(), states);
    let cases = [
        (3, LogId::new(2, 4), false),  // same last term, shorter log
        (4, LogId::new(1, 10), false), // longer log, older last term
        (5, LogId::new(2, 5), true),   // identical
        (6, LogId::new(3, 1), true),   // newer last term, shorter log
    ];
    for (term, last, expected) in cases {
        c.outbox.clear();
        c.deliver(vote_request(2, 1, term, last));
        assert_eq!(
            vote_responses(&c, 1),
            vec![(2, expected)],
            "candidate with last log {last} in term {term}"
        );
        assert_eq!(c.term(1), term, "the request's term is adopted either way");
    }
}

/// A candidate that receives an AppendEntries from a leader of its own term recognises that
/// leader and returns to follower.
///
/// Reference: Raft paper section 5.2.
#[test]
fn candidate_steps_down_on_append_entries_of_its_term() {
    let mut c = Cluster::with_config(3, no_pre_vote());
    c.tick_n(1, no_pre_vote().election_ticks_max);
    assert_eq!(c.role(1), Role::Candidate);
    let term = c.term(1);
    c.drop_all();
    c.deliver(append(2, 1, term, LogId::ZERO, Vec::new(), 0));
    assert_eq!(c.role(1), Role::Follower);
    assert_eq!(c.engine(1).leader(), Some(2));
    assert_eq!(c.term(1), term, "same term: no term change");
    assert_eq!(append_responses(&c, 1), vec![(true, 0, None)]);
}

/// A leader (or anyone) that sees a higher term adopts it and becomes a follower.
///
/// Reference: Raft paper section 5.1.
#[test]
fn higher_term_makes_leader_step_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.term(1);
    c.deliver(msg(
        2,
        1,
        term + 3,
        MessageBody::AppendEntriesResponse {
            success: false,
            match_index: 0,
            conflict: None,
            round: 0,
        },
    ));
    assert_eq!(c.role(1), Role::Follower);
    assert_eq!(c.term(1), term + 3);
    assert_eq!(
        c.node(1).hard_state.term,
        term + 3,
        "the new term is persisted"
    );
    assert!(matches!(
        c.engine_mut(1).propose(Bytes::from_static(b"x")),
        Err(EngineError::NotLeader { .. })
    ));
}

/// AppendEntries is refused unless the follower has an entry matching `prev_log_id`; a
/// conflicting suffix is truncated (and reported for rollback) while entries that already
/// match are left alone, so a stale duplicate message truncates nothing.
///
/// Reference: Raft paper section 5.3 and Figure 2 (AppendEntries receiver rules 2-4).
#[test]
fn append_entries_consistency_check_and_truncation() {
    let states = vec![(2, restored(2, &[1, 2, 3], entries(&[1, 1, 2, 2, 2])))];
    let mut c = Cluster::from_states(config(), states);
    // Past the end of the follower's log.
    c.deliver(append(1, 2, 3, LogId::new(3, 6), vec![entry(3, 7)], 0));
    // The follower has another term at index 4.
    c.deliver(append(1, 2, 3, LogId::new(3, 4), vec![entry(3, 5)], 0));
    assert_eq!(
        append_responses(&c, 2),
        vec![
            (false, 0, Some(ConflictHint { index: 6, term: 0 })),
            (false, 0, Some(ConflictHint { index: 3, term: 2 })),
        ]
    );
    assert_eq!(
        c.engine(2).last_log_id(),
        LogId::new(2, 5),
        "nothing changed"
    );
    assert!(c.node(2).truncations.is_empty());
    c.outbox.clear();

    // Matching at index 2: the conflicting entries 3..=5 go, the new ones follow.
    c.deliver(append(
        1,
        2,
        3,
        LogId::new(1, 2),
        vec![entry(3, 3), entry(3, 4)],
        0,
    ));
    assert_eq!(append_responses(&c, 2), vec![(true, 4, None)]);
    assert_eq!(c.engine(2).last_log_id(), LogId::new(3, 4));
    assert_eq!(c.node(2).truncations, vec![3]);
    let rolled: Vec<u64> = c.node(2).rolled_back.iter().map(|e| e.index).collect();
    assert_eq!(rolled, vec![5, 4, 3], "every removed entry, newest first");
    let durable: Vec<LogId> = c.node(2).log.iter().map(Entry::log_id).collect();
    assert_eq!(
        durable,
        vec![
            LogId::new(1, 1),
            LogId::new(1, 2),
            LogId::new(3, 3),
            LogId::new(3, 4)
        ]
    );
    c.outbox.clear();

    // A delayed duplicate of an older, shorter message must not truncate entry 4.
    c.deliver(append(1, 2, 3, LogId::new(1, 2), vec![entry(3, 3)], 0));
    assert_eq!(append_responses(&c, 2), vec![(true, 3, None)]);
    assert_eq!(c.engine(2).last_log_id(), LogId::new(3, 4));
    assert_eq!(c.node(2).truncations, vec![3], "no second truncation");
}

/// A rejection carries a conflict hint (the first index of the follower's conflicting term),
/// so the leader skips a whole term per round trip instead of one entry.
///
/// Reference: Raft paper section 5.3 (the optimisation at the end of the section).
#[test]
fn conflict_hint_skips_a_term_per_round_trip() {
    let mut leader_log = vec![1, 1, 1];
    leader_log.extend([4; 20]); // indexes 4..=23
    let mut follower_log = vec![1, 1, 1];
    follower_log.extend([2; 10]); // 4..=13
    follower_log.extend([3; 10]); // 14..=23
    let states = vec![
        (1, restored(4, &[1, 2, 3], entries(&leader_log))),
        (2, restored(3, &[1, 2, 3], entries(&follower_log))),
        (3, restored(4, &[1, 2, 3], entries(&[1, 1, 1]))),
    ];
    let mut c = Cluster::from_states(config(), states);
    c.elect(1);
    let rejections = c
        .history
        .iter()
        .filter(|m| m.from == 2)
        .filter(|m| {
            matches!(
                m.body,
                MessageBody::AppendEntriesResponse { success: false, .. }
            )
        })
        .count();
    assert_eq!(
        rejections, 2,
        "one rejection per conflicting term (terms 3 and 2), not one per entry (20)"
    );
    assert_eq!(c.engine(2).last_log_id(), c.engine(1).last_log_id());
    for index in 4..=23 {
        assert_eq!(c.engine(2).entry(index).expect("present").term, 4);
    }
}

/// Figure 8: a leader never commits an entry of an earlier term by counting replicas. A new
/// leader whose log holds an entry of term 2 that is stored on a majority still does not
/// commit it until an entry of its own term (its no-op) reaches a majority; that commit then
/// covers the older entry too.
///
/// Reference: Raft paper section 5.4.2 and Figure 8; section 8 (the no-op).
#[test]
fn figure_8_earlier_term_entry_is_not_committed_by_counting_replicas() {
    let cfg = Config {
        entries_per_message_max: 1,
        ..config()
    };
    let states = vec![
        (1, restored(3, &[1, 2, 3], entries(&[1, 2]))),
        (2, restored(3, &[1, 2, 3], entries(&[1]))),
        (3, restored(3, &[1, 2, 3], entries(&[1]))),
    ];
    let mut c = Cluster::from_states(cfg, states);
    assert_eq!(c.campaign_votes_only(1), Role::Leader);
    assert_eq!(c.term(1), 4);
    // Replicate to server 2 only, one entry per message, until it holds entry 2 (term 2).
    let to_2 = |m: &Message| (m.from == 1 && m.to == 2) || (m.from == 2 && m.to == 1);
    while c.engine(2).last_log_id().index < 2 {
        assert!(c.deliver_matching(to_2) > 0, "replication to 2 stalled");
    }
    c.deliver_matching(|m| m.from == 2 && m.to == 1);
    assert_eq!(c.engine(2).last_log_id(), LogId::new(2, 2));
    assert_eq!(
        c.engine(1).status().progress[&2].match_index,
        2,
        "the leader knows entry 2 is on a majority (itself and 2)"
    );
    assert_eq!(c.commit(1), 0, "entry 2 is of term 2: not committed");
    assert!(c.node(1).applied.is_empty());

    // Once the no-op of term 4 is on a majority, both commit.
    c.deliver_all();
    assert_eq!(c.commit(1), 3);
    let applied: Vec<LogId> = c.node(1).applied.iter().map(Entry::log_id).collect();
    assert_eq!(
        applied,
        vec![LogId::new(1, 1), LogId::new(2, 2), LogId::new(4, 3)]
    );
}

/// A new leader appends an entry of its term at once, and it commits. The first leader of a
/// new cluster writes the initial configuration in it (so that servers added later learn the
/// configuration of every index from the log); later leaders append a blank no-op.
///
/// Reference: Raft paper section 8 ("each leader commit a blank no-op entry into the log at
/// the start of its term").
#[test]
fn leader_appends_no_op_on_election() {
    let mut c = Cluster::new(3);
    assert_eq!(c.campaign_votes_only(1), Role::Leader);
    let term = c.term(1);
    let opening = c
        .engine(1)
        .entry(1)
        .expect("opening entry appended")
        .clone();
    assert_eq!((opening.kind, opening.term), (EntryKind::Membership, term));
    assert_eq!(
        Membership::decode(&opening.data).unwrap(),
        Membership::new_voters([1, 2, 3]),
        "the initial configuration, written down"
    );
    assert_eq!(c.node(1).log.len(), 1, "handed out for persisting at once");
    c.deliver_all();
    assert_eq!(c.commit(1), 1);
    // Followers learn it from the commit notice or, at the latest, the next heartbeat.
    c.tick_n(1, config().heartbeat_ticks);
    c.deliver_all();
    for id in 1..=3 {
        assert_eq!(
            c.commit(id),
            1,
            "server {id} learns the opening entry committed"
        );
        assert_eq!(c.node(id).applied[0].kind, EntryKind::Membership);
    }

    // The next leader's opening entry is a blank no-op: the configuration is in the log.
    c.forget_leader(&[2, 3]);
    assert_eq!(c.campaign(2), Role::Leader);
    let noop = c.engine(2).entry(2).expect("no-op appended").clone();
    assert_eq!((noop.kind, noop.term), (EntryKind::Blank, c.term(2)));
    c.deliver_all();
    assert_eq!(c.commit(2), 2);
}

/// The leader passes its commit index on in AppendEntries; a follower that is idle when the
/// commit index advances gets a notice at once rather than at the next heartbeat (jraft's
/// "urgent commit").
///
/// Reference: Raft paper section 5.3 ("the leader keeps track of the highest index it knows
/// to be committed, and it includes that index in future AppendEntries RPCs (including
/// heartbeats)").
#[test]
fn commit_index_reaches_an_idle_follower_without_waiting_for_a_heartbeat() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.run(2);
    let id = c.propose(1, "x");
    c.deliver_matching(|m| m.from == 1);
    // Server 2's acknowledgement completes the quorum.
    c.deliver_matching(|m| m.from == 2 && m.to == 1);
    assert_eq!(c.commit(1), id.index);
    assert!(c.commit(2) < id.index);
    // No tick in between: the notice is already in the outbox.
    c.deliver_matching(|m| m.from == 1 && m.to == 2);
    assert_eq!(c.commit(2), id.index);
    assert_eq!(c.node(2).applied_payloads(), vec!["x"]);
}

/// A follower sets its commit index to min(leaderCommit, index of the last entry it verified
/// from this message), never to the leader's commit index over entries it has not verified.
///
/// Reference: Raft paper Figure 2 (AppendEntries receiver rule 5) and section 5.3.
#[test]
fn follower_commit_is_capped_at_last_verified_entry() {
    // Entries 3 and 4 of term 2 are stale leftovers; the leader of term 3 committed up to 4
    // with different entries there.
    let states = vec![(2, restored(2, &[1, 2, 3], entries(&[1, 1, 2, 2])))];
    let mut c = Cluster::from_states(config(), states);
    c.deliver(append(1, 2, 3, LogId::new(1, 2), Vec::new(), 4));
    assert_eq!(
        c.commit(2),
        2,
        "only entries up to prev_log_id are verified"
    );
    assert_eq!(c.node(2).applied.len(), 2);
    c.deliver(append(1, 2, 3, LogId::new(1, 2), vec![entry(3, 3)], 4));
    assert_eq!(c.commit(2), 3);
    let applied: Vec<LogId> = c.node(2).applied.iter().map(Entry::log_id).collect();
    assert_eq!(
        applied,
        vec![LogId::new(1, 1), LogId::new(1, 2), LogId::new(3, 3)],
        "the stale entry of term 2 at index 3 is never applied"
    );
}

/// Pre-vote: a server cut off from the cluster asks "would you vote for me?" without changing
/// its term, so its term does not grow while it is partitioned.
///
/// Reference: thesis section 9.6.
#[test]
fn pre_vote_does_not_bump_terms() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.term(1);
    c.isolate(3);
    let hard_states_before = c.node(3).hard_states.len();
    let mut pre_campaigned = false;
    for _ in 0..10 * config().election_ticks_max {
        c.tick_all();
        pre_campaigned |= c.role(3) == Role::PreCandidate;
        c.deliver_all();
    }
    assert!(pre_campaigned, "server 3 did try to get elected");
    assert_ne!(c.role(3), Role::Candidate, "never a real candidate");
    assert_eq!(c.term(3), term, "no term change while partitioned");
    assert_eq!(c.node(3).hard_states.len(), hard_states_before);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.term(1), term);
}

/// When the partitioned server returns, its pre-votes are refused (the others hear from a
/// live leader), nobody's term changes, and it rejoins as a follower of the same leader.
///
/// Reference: thesis section 9.6 (and 4.2.3).
#[test]
fn partitioned_server_rejoining_does_not_disrupt() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.term(1);
    c.isolate(3);
    c.run(5 * config().election_ticks_max);
    c.propose(1, "while 3 was away");
    c.run(3);
    c.heal();
    // Server 3 times out before it hears from the leader: its pre-votes reach everyone.
    let first = c.history.len();
    while !c.outbox.iter().any(is_vote_request) {
        c.tick(3);
    }
    assert_eq!(c.role(3), Role::PreCandidate);
    c.deliver_all();
    assert!(c.history[first..]
        .iter()
        .any(|m| m.from == 3 && is_vote_request(m)));
    c.run(5 * config().election_ticks_max);
    for id in 1..=3 {
        assert_eq!(c.term(id), term, "server {id} kept its term");
    }
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.engine(3).leader(), Some(1));
    assert_eq!(c.engine(3).last_log_id(), c.engine(1).last_log_id());
}

/// Check-quorum: a leader that has not heard from a majority for an election timeout steps
/// down (and stops accepting writes); one that hears from a majority stays.
///
/// Reference: thesis section 6.2.
#[test]
fn check_quorum_leader_steps_down() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.run(5 * config().election_ticks_max);
    assert_eq!(
        c.role(1),
        Role::Leader,
        "stays while it hears from a quorum"
    );
    c.isolate(2); // One follower lost: still a quorum.
    c.run(5 * config().election_ticks_max);
    assert_eq!(c.role(1), Role::Leader);
    c.isolate(1);
    let min = config().election_ticks_min;
    for _ in 0..2 * min {
        c.tick(1);
        c.drop_all();
    }
    assert_eq!(c.role(1), Role::Follower);
    assert!(matches!(
        c.engine_mut(1).propose(Bytes::from_static(b"x")),
        Err(EngineError::NotLeader { .. })
    ));
}

/// Leader stickiness: a server that heard from a live leader within the minimum election
/// timeout ignores a vote request (even with a higher term); once that time has passed it
/// votes normally.
///
/// Reference: thesis section 4.2.3.
#[test]
fn leader_stickiness_refuses_votes_while_leader_is_live() {
    let mut c = Cluster::with_config(3, no_pre_vote());
    c.elect(1);
    let term = c.term(1);
    let last = c.engine(3).last_log_id();
    c.deliver(vote_request(3, 2, term + 1, last));
    assert_eq!(c.term(2), term, "the disruptive term is ignored");
    assert!(vote_responses(&c, 2).is_empty(), "no vote granted");
    assert_eq!(c.engine(2).leader(), Some(1));

    c.forget_leader(&[2]);
    let next = c.term(2) + 1;
    c.deliver(vote_request(3, 2, next, last));
    assert_eq!(vote_responses(&c, 2), vec![(3, true)]);
    assert_eq!(c.term(2), next);
}

/// ReadIndex: a read is answered only after a quorum acknowledged a heartbeat round sent after
/// the read arrived, with the commit index as of the request.
///
/// Reference: thesis section 6.4.
#[test]
fn read_index_needs_a_heartbeat_quorum() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let commit = c.commit(1);
    c.engine_mut(1)
        .read_index(42)
        .expect("leader accepts reads");
    c.process(1);
    assert!(c.node(1).read_states.is_empty(), "not before a round");
    assert!(c.outbox.iter().filter(|m| is_append(m)).count() >= 2);
    // Heartbeats get through but every answer is lost.
    c.take(|m| m.from == 1)
        .into_iter()
        .for_each(|m| c.deliver(m));
    c.drop_all();
    assert!(c.node(1).read_states.is_empty(), "no quorum acknowledged");
    // The next heartbeat round is acknowledged by server 2 alone: a quorum with the leader.
    c.tick_n(1, config().heartbeat_ticks);
    c.deliver_matching(|m| m.from == 1 && m.to == 2);
    c.deliver_matching(|m| m.from == 2 && m.to == 1);
    let reads = &c.node(1).read_states;
    assert_eq!(reads.len(), 1);
    assert_eq!((reads[0].id, reads[0].index), (42, commit));
}

/// ReadIndex on a new leader waits until the leader has committed an entry of its term (it
/// does not know the commit index before), and then uses at least that index.
///
/// Reference: thesis section 6.4 (step 1).
#[test]
fn read_index_waits_for_an_entry_of_the_leaders_term() {
    let mut c = Cluster::new(3);
    assert_eq!(c.campaign_votes_only(1), Role::Leader);
    c.engine_mut(1).read_index(7).expect("leader accepts reads");
    c.process(1);
    assert!(c.node(1).read_states.is_empty());
    assert_eq!(c.commit(1), 0);
    c.deliver_all();
    assert_eq!(c.commit(1), 1);
    let reads = &c.node(1).read_states;
    assert_eq!(reads.len(), 1);
    assert_eq!(
        (reads[0].id, reads[0].index),
        (7, 1),
        "the read index includes the no-op of the leader's term"
    );
}

/// Lease reads are opt-in: without `lease_read` every read waits for a heartbeat round; with
/// it, a read within the lease is answered at once, and after the lease runs out (no
/// acknowledgements) it waits for a round again.
///
/// Reference: thesis section 6.4.1.
#[test]
fn lease_read_is_opt_in_and_expires() {
    // (The restart guard itself is tested by `lease_read_restarted_server_waits_before_voting`.)
    let mut c = Cluster::new(3);
    c.elect(1);
    c.run(2 * config().heartbeat_ticks);
    c.engine_mut(1).read_index(1).expect("read accepted");
    c.process(1);
    assert!(c.node(1).read_states.is_empty(), "no lease by default");
    c.deliver_all();
    assert_eq!(c.node(1).read_states.len(), 1);

    let lease_cfg = Config {
        lease_read: true,
        ..config()
    };
    let mut c = Cluster::with_config(3, lease_cfg.clone());
    // With leases, a server that just started refuses votes for one minimum election timeout
    // (it may have promised a leader before a restart).
    for id in [2, 3] {
        c.tick_n(id, lease_cfg.election_ticks_min);
    }
    c.drop_all();
    c.elect(1);
    c.run(2 * lease_cfg.heartbeat_ticks);
    c.engine_mut(1).read_index(1).expect("read accepted");
    c.process(1);
    assert_eq!(c.node(1).read_states.len(), 1, "answered from the lease");
    assert!(c.outbox.is_empty(), "no round needed");
    // No acknowledgement for longer than the lease.
    c.isolate(1);
    let lease = lease_cfg.election_ticks_min - lease_cfg.lease_margin_ticks;
    for _ in 0..=lease {
        c.tick(1);
        c.drop_all();
    }
    assert_eq!(c.role(1), Role::Leader, "check-quorum has not fired yet");
    c.engine_mut(1).read_index(2).expect("read accepted");
    c.process(1);
    assert_eq!(c.node(1).read_states.len(), 1, "lease expired: must wait");
}

/// Leadership transfer: the leader stops accepting proposals, brings the target up to date,
/// then sends TimeoutNow; the target campaigns at once (ignoring stickiness) and wins.
///
/// Reference: thesis section 3.10.
#[test]
fn leadership_transfer_brings_target_up_to_date_then_timeout_now() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.blocked.insert((1, 3));
    for i in 0..3 {
        c.propose(1, &format!("v{i}"));
    }
    c.deliver_all();
    c.heal();
    let last = c.engine(1).last_log_id();
    assert!(c.engine(3).last_log_id() < last);
    c.engine_mut(1)
        .transfer_leadership(3)
        .expect("transfer starts");
    c.process(1);
    assert!(
        !c.outbox
            .iter()
            .any(|m| matches!(m.body, MessageBody::TimeoutNow)),
        "no TimeoutNow before the target is up to date"
    );
    assert!(matches!(
        c.engine_mut(1).propose(Bytes::from_static(b"x")),
        Err(EngineError::TransferInProgress(3))
    ));
    // The messages lost earlier are retried after the replication timeout.
    c.run(cfg_retry_ticks());
    assert!(c
        .history
        .iter()
        .any(|m| m.from == 1 && m.to == 3 && matches!(m.body, MessageBody::TimeoutNow)));
    assert_eq!(c.leader(), Some(3));
    assert_eq!(c.term(3), c.term(1));
    assert!(c.engine(3).last_log_id().index > last.index);
    assert_eq!(c.engine(3).entry(last.index).map(Entry::log_id), Some(last));
}

/// A leadership transfer that does not complete within an election timeout is abandoned: the
/// leader accepts proposals again.
///
/// Reference: thesis section 3.10.
#[test]
fn leadership_transfer_times_out() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.engine_mut(1)
        .transfer_leadership(3)
        .expect("transfer starts");
    c.process(1);
    assert!(c.engine_mut(1).propose(Bytes::from_static(b"x")).is_err());
    c.run(config().election_ticks_min);
    assert_eq!(c.leader(), Some(1));
    c.propose(1, "after the timeout");
    c.run(config().heartbeat_ticks);
    assert_eq!(c.node(2).applied_payloads(), vec!["after the timeout"]);
}

/// Learners receive the log but never campaign, are not asked for votes, and are not counted
/// for commitment.
///
/// Reference: thesis section 4.2.1.
#[test]
fn learners_do_not_vote_and_are_not_counted() {
    let mut c = Cluster::new(3);
    c.add_empty_node(4, config());
    c.elect(1);
    c.engine_mut(1)
        .add_learner(4, "n4".into())
        .expect("learner added");
    c.process(1);
    c.run(3);
    assert!(c.engine(4).membership().is_learner(4));
    assert_eq!(c.engine(4).last_log_id(), c.engine(1).last_log_id());

    // The voters are unreachable; only the learner acknowledges.
    c.isolate(2);
    c.isolate(3);
    c.blocked.remove(&(1, 4));
    c.blocked.remove(&(4, 1));
    let id = c.propose(1, "learner only");
    c.deliver_all();
    assert_eq!(c.engine(4).last_log_id(), id, "the learner has the entry");
    assert!(c.commit(1) < id.index, "a learner's copy does not commit");

    // The learner never campaigns, however long it waits.
    c.drop_all();
    c.tick_n(4, 10 * config().election_ticks_max);
    assert!(c.outbox.iter().all(|m| !is_vote_request(m)));
    assert_eq!(c.role(4), Role::Follower);

    // A candidate does not ask the learner, and its vote would not count.
    c.heal();
    c.drop_all();
    c.forget_leader(&[2, 3]);
    c.isolate(1);
    assert_ne!(c.campaign(2), Role::Follower);
    assert!(c
        .history
        .iter()
        .all(|m| !(m.from == 2 && m.to == 4 && is_vote_request(m))));
}

/// Adding a voter first catches the new server up as a learner (it does not vote yet), then
/// promotes it once its log is within the catch-up gap of the leader's.
///
/// Reference: thesis section 4.2.1 (catching up new servers).
#[test]
fn new_server_catches_up_as_learner_then_is_promoted() {
    let cfg = Config {
        catchup_gap_entries: 5,
        entries_per_message_max: 4,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg.clone());
    c.add_empty_node(4, cfg);
    c.elect(1);
    for i in 0..30 {
        c.propose(1, &format!("e{i}"));
    }
    c.deliver_all();
    c.blocked.insert((1, 4));
    c.engine_mut(1)
        .add_voter(4, "n4".into())
        .expect("add voter starts");
    c.process(1);
    c.run(5);
    let m = c.engine(1).committed_membership().clone();
    assert!(m.is_learner(4) && !m.is_voter(4), "a learner while behind");
    c.heal();
    c.run(10);
    let m = c.engine(1).committed_membership().clone();
    assert!(m.is_voter(4) && !m.is_learner(4), "promoted once caught up");
    assert_eq!(c.engine(4).last_log_id(), c.engine(1).last_log_id());
    assert!(c.engine(4).committed_membership().is_voter(4));
}

/// Single-server changes are safe only one at a time and only after the leader committed an
/// entry of its term: a change is refused before that, and while another is pending.
///
/// Reference: thesis section 4.1 (one change at a time), with Ongaro's 2015 correction to
/// it on raft-dev: a leader changes the configuration only after committing an entry of its
/// own term.
#[test]
fn single_server_change_refused_before_term_commit_and_while_pending() {
    let mut c = Cluster::new(3);
    c.add_empty_node(4, config());
    assert_eq!(c.campaign_votes_only(1), Role::Leader);
    let e = c.engine_mut(1);
    assert_eq!(e.add_learner(4, "n4".into()), Err(EngineError::NotReady));
    assert_eq!(e.remove_server(3), Err(EngineError::NotReady));
    assert_eq!(
        e.change_membership(Membership::new_voters([1, 2])),
        Err(EngineError::NotReady)
    );
    c.deliver_all();
    assert_eq!(c.commit(1), 1);
    let e = c.engine_mut(1);
    e.add_learner(4, "n4".into()).expect("allowed now");
    assert_eq!(e.remove_server(3), Err(EngineError::ChangeInProgress));
    assert_eq!(
        e.change_membership(Membership::new_voters([1, 2])),
        Err(EngineError::ChangeInProgress)
    );
    c.process(1);
    c.deliver_all();
    c.engine_mut(1)
        .remove_server(3)
        .expect("allowed once committed");
}

/// Joint consensus: while the configuration is joint, an entry commits only with a majority
/// of the old voters and a majority of the new voters; then the leader leaves the joint
/// configuration on its own.
///
/// Reference: Raft paper section 6 (thesis section 4.3).
#[test]
fn joint_consensus_needs_both_majorities() {
    // Each half alone holds the joint entry: no commit. Then both: commit.
    for (only_half, other_half) in [([2, 3], [4, 5]), ([4, 5], [2, 3])] {
        let (mut c, joint_id) = joint_change_from_123_to_145();
        for to in other_half {
            c.blocked.insert((1, to));
        }
        c.run(cfg_retry_ticks());
        for id in only_half {
            assert!(c.engine(id).last_log_id().index >= joint_id.index);
        }
        assert!(
            c.commit(1) < joint_id.index,
            "a majority of {only_half:?} (with the leader) alone does not commit"
        );
        c.heal();
        c.run(cfg_retry_ticks());
        assert!(c.commit(1) >= joint_id.index, "both majorities commit");
        let m = c.engine(1).committed_membership().clone();
        assert!(!m.is_joint(), "left the joint configuration");
        assert_eq!(m.voters, [1, 4, 5].into_iter().collect());
        assert_eq!(c.leader(), Some(1));
    }
}

/// A cluster of voters {1, 2, 3} and learners {4, 5} whose leader 1 has just appended the
/// joint configuration {1, 2, 3} + {1, 4, 5} (not sent yet). Returns it and the entry's id.
fn joint_change_from_123_to_145() -> (Cluster, LogId) {
    let cfg = Config {
        election_ticks_min: 40,
        election_ticks_max: 80,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg.clone());
    c.add_empty_node(4, cfg.clone());
    c.add_empty_node(5, cfg);
    c.elect(1);
    for id in [4, 5] {
        c.engine_mut(1)
            .add_learner(id, format!("n{id}"))
            .expect("learner");
        c.process(1);
        c.run(2);
    }
    let target = Membership {
        addresses: c.engine(1).membership().addresses.clone(),
        ..Membership::new_voters([1, 4, 5])
    };
    let id = c
        .engine_mut(1)
        .change_membership(target)
        .expect("joint change starts");
    let joint = c.engine(1).membership().clone();
    assert!(joint.is_joint());
    assert_eq!(joint.voters_outgoing, [1, 2, 3].into_iter().collect());
    assert_eq!(joint.voters, [1, 4, 5].into_iter().collect());
    (c, id)
}

/// Ticks enough for a leader to retry messages that were lost.
fn cfg_retry_ticks() -> u64 {
    config().replication_timeout_ticks + config().heartbeat_ticks + 1
}

/// A leader that removes itself keeps leading until the change commits, without counting
/// itself towards that commit, then steps down and never campaigns again.
///
/// Reference: thesis section 4.2.2.
#[test]
fn removed_leader_steps_down_after_commit() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let id = c.engine_mut(1).remove_server(1).expect("removal starts");
    c.process(1);
    assert_eq!(c.role(1), Role::Leader, "leads until the change commits");
    // Server 2 alone acknowledges: a majority of the old configuration with the leader, but
    // not of the new one {2, 3}.
    c.blocked.insert((1, 3));
    c.deliver_all();
    assert!(c.commit(1) < id.index, "the leader does not count itself");
    assert_eq!(c.role(1), Role::Leader);
    c.heal();
    c.run(cfg_retry_ticks());
    assert_eq!(c.role(1), Role::Follower, "steps down once committed");
    let first = c.history.len();
    c.run(10 * config().election_ticks_max);
    assert!(c.history[first..]
        .iter()
        .all(|m| !(m.from == 1 && is_vote_request(m))));
    let leader = c.leader().expect("the others elect a leader");
    assert_ne!(leader, 1);
}

/// A snapshot is labelled with exactly the index and term of the last entry whose effect it
/// contains.
///
/// Reference: Raft paper section 7 (Figure 12: "last included index / term").
#[test]
fn snapshot_is_labelled_at_the_applied_index() {
    let cfg = Config {
        snapshot_distance: 5,
        snapshot_trailing_entries: 0,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    for i in 0..23 {
        c.propose(1, &format!("e{i}"));
        if i % 3 == 0 {
            c.deliver_all();
        }
    }
    c.deliver_all();
    for id in 1..=3 {
        let requests = &c.node(id).snapshot_requests;
        assert!(requests.len() >= 3, "server {id} snapshotted");
        for (request, applied) in requests {
            assert_eq!(request.last_log_id, *applied, "server {id}");
        }
    }
}

/// Installing a snapshot keeps the log suffix after it when the entry at the snapshot's
/// index has the snapshot's term.
///
/// Reference: Raft paper section 7 ("If the follower receives a snapshot that describes a
/// prefix of its log, log entries covered by the snapshot are deleted but entries following
/// the snapshot are still valid and must be retained").
#[test]
fn install_snapshot_keeps_a_matching_suffix() {
    let states = vec![(2, restored(1, &[1, 2, 3], entries(&[1; 10])))];
    let mut c = Cluster::from_states(config(), states);
    let meta = snapshot_meta(LogId::new(1, 5), &[1, 2, 3]);
    c.deliver(msg(1, 2, 1, MessageBody::InstallSnapshot { meta }));
    assert_eq!(c.node(2).installed.len(), 1);
    assert_eq!(c.engine(2).last_log_id(), LogId::new(1, 10), "suffix kept");
    assert_eq!(c.engine(2).status().first_index, 6);
    assert!(c.node(2).truncations.is_empty());
    assert!(c.node(2).rolled_back.is_empty());
    assert_eq!(c.node(2).log.len(), 5, "durable entries 6..=10 remain");
}

/// Installing a snapshot whose last entry conflicts with the follower's log discards the
/// whole log (reporting the uncommitted entries for rollback).
///
/// Reference: Raft paper section 7 (Figure 13, InstallSnapshot receiver rules 6-7).
#[test]
fn install_snapshot_discards_a_conflicting_log() {
    let states = vec![(2, restored(2, &[1, 2, 3], entries(&[1, 1, 1, 2, 2, 2, 2])))];
    let mut c = Cluster::from_states(config(), states);
    let meta = snapshot_meta(LogId::new(3, 5), &[1, 2, 3]);
    c.deliver(msg(1, 2, 3, MessageBody::InstallSnapshot { meta }));
    assert_eq!(c.engine(2).last_log_id(), LogId::new(3, 5));
    assert_eq!(c.commit(2), 5);
    assert_eq!(c.node(2).truncations, vec![6]);
    assert!(c.node(2).log.is_empty(), "no durable entry survives");
    let rolled: Vec<u64> = c.node(2).rolled_back.iter().map(|e| e.index).collect();
    assert_eq!(rolled, vec![7, 6, 5, 4, 3, 2, 1]);
}

/// A follower whose next entry the leader has compacted away receives the leader's snapshot
/// and then continues with ordinary replication.
///
/// Reference: Raft paper section 7.
#[test]
fn follower_behind_the_log_start_gets_a_snapshot() {
    let cfg = Config {
        snapshot_distance: 5,
        snapshot_trailing_entries: 0,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    c.isolate(3);
    for i in 0..20 {
        c.propose(1, &format!("e{i}"));
        c.deliver_all();
    }
    let first_index = c.engine(1).status().first_index;
    assert!(
        first_index > c.engine(3).last_log_id().index + 1,
        "compacted"
    );
    c.heal();
    c.run(cfg_retry_ticks() + 2);
    assert_eq!(c.node(1).snapshot_sends, vec![3]);
    assert_eq!(c.node(3).installed.len(), 1);
    assert_eq!(c.engine(3).last_log_id(), c.engine(1).last_log_id());
    assert_eq!(c.commit(3), c.commit(1));
}

/// Pipelining: the leader keeps several AppendEntries in flight to a peer, but never more
/// than the in-flight window; each acknowledgement opens room for one more.
///
/// Reference: thesis section 10.2.2 (batching and pipelining).
#[test]
fn pipelining_respects_the_inflight_window() {
    let cfg = Config {
        inflight_messages_max: 3,
        entries_per_message_max: 1,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    assert_eq!(
        c.engine(1).status().progress[&2].state,
        ReplicationState::Replicate
    );
    for i in 0..10 {
        c.propose(1, &format!("e{i}"));
    }
    let to_2 = |m: &Message| m.from == 1 && m.to == 2 && !append_entries_of(m).is_empty();
    assert_eq!(
        c.outbox.iter().filter(|m| to_2(m)).count(),
        3,
        "window full"
    );
    let first = c.take(to_2).remove(0);
    c.deliver(first);
    c.deliver_matching(|m| m.from == 2 && m.to == 1);
    assert_eq!(
        c.outbox.iter().filter(|m| to_2(m)).count(),
        1,
        "one acknowledgement, one more message"
    );
    c.deliver_all();
    assert_eq!(c.engine(2).last_log_id(), c.engine(1).last_log_id());
}

/// Batching: no AppendEntries carries more than `entries_per_message_max` entries or more than
/// `message_bytes_max` bytes, except that a single larger entry is still sent alone.
///
/// Reference: thesis section 10.2.2 (batching and pipelining).
#[test]
fn batching_respects_entries_and_bytes_limits() {
    let cfg = Config {
        entries_per_message_max: 4,
        message_bytes_max: 300,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg.clone());
    c.elect(1);
    c.isolate(3);
    let small: Vec<Bytes> = (0..20).map(|_| Bytes::from(vec![7u8; 10])).collect();
    let medium: Vec<Bytes> = (0..9).map(|_| Bytes::from(vec![8u8; 100])).collect();
    let large = vec![Bytes::from(vec![9u8; 500])];
    for batch in [small, medium, large] {
        c.engine_mut(1).propose_batch(batch).expect("accepted");
        c.process(1);
        c.deliver_all();
    }
    c.heal();
    c.run(cfg_retry_ticks() + 4);
    assert_eq!(c.engine(3).last_log_id(), c.engine(1).last_log_id());
    let mut counts = Vec::new();
    for m in c.history.iter().filter(|m| is_append(m)) {
        let es = append_entries_of(m);
        let bytes: u64 = es.iter().map(Entry::size_bytes).sum();
        assert!(
            es.len() <= cfg.entries_per_message_max,
            "{} entries",
            es.len()
        );
        assert!(
            es.len() == 1 || bytes <= cfg.message_bytes_max,
            "{bytes} bytes in {} entries",
            es.len()
        );
        counts.push(es.len());
    }
    assert!(counts.contains(&4), "the count limit was reached");
    assert!(
        c.history
            .iter()
            .any(|m| append_entries_of(m).len() == 2 && append_entries_of(m)[0].data.len() == 100),
        "the byte limit cut batches of 100-byte entries to two"
    );
}

/// A message that is misdirected, claims an impossible sender, carries a malformed entry run
/// or an undecodable configuration, or a response nobody asked for, is dropped: the server's
/// state does not change and it goes on working.
///
/// Reference: Raft paper section 5.1 (servers ignore what does not fit their state) and
/// Figure 2; thesis section 3.
#[test]
fn bad_and_misdirected_messages_are_dropped() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "before");
    c.deliver_all();
    let term = c.term(2);
    let before: Vec<(u64, Role, u64, LogId)> = (1..=3)
        .map(|id| {
            (
                c.term(id),
                c.role(id),
                c.commit(id),
                c.engine(id).last_log_id(),
            )
        })
        .collect();
    let last = c.engine(2).last_log_id();
    let mut bad_membership = Entry::membership(term, last.index + 1, &Membership::new_voters([1]));
    bad_membership.data = Bytes::from_static(&[0xff, 0xff, 0xff]);
    let garbage = vec![
        // Addressed to someone else, delivered here anyway.
        Message {
            to: 3,
            ..append(1, 3, term + 5, last, Vec::new(), 0)
        },
        // From itself, from the reserved id 0.
        append(
            2,
            2,
            term + 5,
            last,
            vec![entry(term + 5, last.index + 1)],
            0,
        ),
        append(0, 2, term + 5, last, Vec::new(), 0),
        // A run with a hole, a run whose terms go down, an entry from a future term.
        append(1, 2, term, last, vec![entry(term, last.index + 2)], 0),
        append(
            1,
            2,
            term,
            last,
            vec![entry(term, last.index + 1), entry(term - 1, last.index + 2)],
            0,
        ),
        append(1, 2, term, last, vec![entry(term + 1, last.index + 1)], 0),
        append(1, 2, term, last, vec![bad_membership], 0),
        // Answers a follower never asked for.
        msg(
            3,
            2,
            term,
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: 1_000,
                conflict: None,
                round: 9,
            },
        ),
        msg(
            3,
            2,
            term,
            MessageBody::VoteResponse {
                granted: true,
                pre_vote: false,
            },
        ),
        msg(
            3,
            2,
            term,
            MessageBody::InstallSnapshotResponse {
                last_log_id: LogId::new(term, 1_000),
                success: true,
            },
        ),
        msg(
            3,
            2,
            term,
            MessageBody::ReadIndexResponse {
                request_id: 5,
                read_index: Some(1_000),
            },
        ),
        // TimeoutNow from someone who is not the leader.
        msg(3, 2, term, MessageBody::TimeoutNow),
    ];
    for m in garbage {
        // Every one of them reaches server 2, whatever its `to` says.
        c.engine_mut(2).step(m);
        c.process(2);
    }
    c.drop_all();
    let after: Vec<(u64, Role, u64, LogId)> = (1..=3)
        .map(|id| {
            (
                c.term(id),
                c.role(id),
                c.commit(id),
                c.engine(id).last_log_id(),
            )
        })
        .collect();
    assert_eq!(before, after, "no state changed");
    c.propose(1, "after");
    c.run(config().heartbeat_ticks);
    assert_eq!(c.node(2).applied_payloads(), vec!["before", "after"]);
}

/// A configuration entry stranded on the servers it removes must not deadlock the cluster.
///
/// Reference: Raft paper section 6 and thesis section 4.2.2 (a server not in the new
/// configuration may still lead until it commits). Joint configuration {1,4,5}+{1,2,3} is
/// committed; the leave-joint entry {1,4,5} reached only servers 2 and 3, which it removes. Their
/// logs are longer, so they refuse votes to 1, 4 and 5, and the outgoing half {1,2,3} needs one of
/// them: unless 2 or 3 may campaign, nobody can ever win. (Found by simulation seed 1039.)
#[test]
fn stranded_leave_joint_entry_is_finished_by_an_outgoing_voter() {
    let cold = Membership::new_voters([1, 2, 3]);
    let joint = Membership {
        voters: [1, 4, 5].into_iter().collect(),
        voters_outgoing: [1, 2, 3].into_iter().collect(),
        ..Membership::default()
    };
    let cnew = Membership::new_voters([1, 4, 5]);
    let short = vec![Entry::blank(1, 1), Entry::membership(1, 2, &joint)];
    let mut long = short.clone();
    long.push(Entry::membership(1, 3, &cnew));
    let state = |log: &Vec<Entry>| {
        let mut s = restored(1, &[1, 2, 3], log.clone());
        s.initial_membership = cold.clone();
        s.hard_state.commit = 2;
        s
    };
    let states = vec![
        (1, state(&short)),
        (2, state(&long)),
        (3, state(&long)),
        (4, state(&short)),
        (5, state(&short)),
    ];
    let mut c = Cluster::from_states(config(), states);
    c.run(20 * config().election_ticks_max);
    let leader = c.leader().expect("a leader is elected");
    assert!(
        [1, 4, 5].contains(&leader),
        "the final leader is a member of {{1,4,5}}"
    );
    assert_eq!(c.engine(leader).committed_membership().voters, cnew.voters);
    assert!(!c.engine(leader).committed_membership().is_joint());
    c.propose(leader, "after the change");
    c.run(3);
    assert_eq!(c.node(4).applied_payloads(), vec!["after the change"]);
}

/// With lease reads a restarted server must not vote before a minimum election timeout has
/// passed: before the restart it may have acknowledged a leader whose lease is still running.
///
/// Reference: thesis section 6.4.1 (leases rely on servers not electing a new leader within
/// the election timeout of hearing from the current one).
#[test]
fn lease_read_restarted_server_waits_before_voting() {
    let lease_cfg = Config {
        lease_read: true,
        ..config()
    };
    let mut c = Cluster::with_config(3, lease_cfg.clone());
    c.deliver(vote_request(1, 2, 1, LogId::ZERO));
    c.process(2);
    assert!(
        vote_responses(&c, 2).is_empty(),
        "a just-started server ignores vote requests while leases may be running"
    );
    c.tick_n(2, lease_cfg.election_ticks_min);
    c.deliver(vote_request(1, 2, 1, LogId::ZERO));
    c.process(2);
    assert_eq!(vote_responses(&c, 2), vec![(1, true)]);
}

/// A learner that catches up through a snapshot is promoted even when no new entries follow:
/// the answer that puts it in sync brings no new match index, but it is the moment it is
/// close enough. (Found by raft-cli's wiped-node test: the join hung until its timeout.)
///
/// Reference: thesis section 4.2.1 (catching up new servers) and paper section 7.
#[test]
fn learner_caught_up_by_snapshot_is_promoted_without_further_writes() {
    let cfg = Config {
        catchup_gap_entries: 5,
        snapshot_distance: 10,
        snapshot_trailing_entries: 0,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg.clone());
    c.add_empty_node(4, cfg);
    c.elect(1);
    for i in 0..40 {
        c.propose(1, &format!("e{i}"));
    }
    c.run(5);
    assert!(
        c.engine(1).status().first_index > 1,
        "the leader compacted its log"
    );
    // The learner is unreachable while its configuration commits and a snapshot covering that
    // configuration (the leader's last entry) is taken; then it catches up in one snapshot.
    c.blocked.insert((1, 4));
    c.engine_mut(1)
        .add_voter(4, "n4".into())
        .expect("add voter starts");
    c.process(1);
    c.run(5);
    assert!(c.engine(1).committed_membership().is_learner(4));
    assert!(c.engine_mut(1).request_snapshot());
    c.run(2);
    assert_eq!(
        c.engine(1).latest_snapshot(),
        c.engine(1).last_log_id(),
        "the snapshot covers the whole log"
    );
    c.heal();
    c.run(40);
    let m = c.engine(1).committed_membership().clone();
    assert!(m.is_voter(4), "promoted after catching up by snapshot: {m}");
    assert!(
        !c.node(4).installed.is_empty(),
        "caught up through a snapshot"
    );
}
