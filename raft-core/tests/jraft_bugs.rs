//! One test per bug of the seed system (jraft, see `../shared/seed/JRAFT-NOTES.md`, "Known
//! bugs") that belongs to the algorithm. Each test quotes the bug and builds the situation in
//! which it bites; the comment says what the test would see if the bug came back. Bugs 5 and 12
//! (fsync, log pack byte offsets) belong to storage and are covered by `raft-log`; bug 18 is a
//! list of missing features, each covered in `paper_conformance.rs`.

mod common;

use bytes::Bytes;
use common::{
    append, append_entries_of, config, entries, entry, is_append, is_vote_request, msg, restored,
    snapshot_meta, vote_request, Cluster,
};
use raft_core::engine::{Config, Engine, EngineError, ReplicationState, RestoredState, Role};
use raft_core::{
    ConflictHint, Entry, HardState, LogId, LogIndex, Membership, Message, MessageBody, NodeId,
};

/// The paper's own setting: no pre-vote, no check-quorum (so the classic scenarios unfold).
fn classic() -> Config {
    Config {
        pre_vote: false,
        check_quorum: false,
        ..config()
    }
}

fn applied_ids(c: &Cluster, id: NodeId) -> Vec<LogId> {
    c.node(id).applied.iter().map(Entry::log_id).collect()
}

/// Bug 1: "Commits an entry from an earlier term by counting replicas (Raft paper Figure 8).
/// Commit only entries of the current term; a new leader appends a no-op entry."
///
/// Figure 8 played out on five servers. S1 leads term 4 and gets its term-2 entry at index 2
/// onto S1, S2 and S3, a majority. If it committed it by counting (the bug), S1 would apply
/// (2, 2) — and then S5, whose log ends in (3, 2), wins term 5 with the votes of S2, S3 and S4
/// and overwrites index 2 everywhere: a committed entry lost. The test checks S1 never
/// commits or applies (2, 2) and that the overwrite then happens.
#[test]
fn bug_01_entry_of_earlier_term_committed_by_counting_replicas() {
    let cfg = Config {
        entries_per_message_max: 1,
        ..classic()
    };
    let voters = [1, 2, 3, 4, 5];
    let states = vec![
        (1, restored(3, &voters, entries(&[1, 2]))),
        (2, restored(3, &voters, entries(&[1, 2]))),
        (3, restored(3, &voters, entries(&[1]))),
        (4, restored(3, &voters, entries(&[1]))),
        (5, restored(3, &voters, entries(&[1, 3]))),
    ];
    let mut c = Cluster::from_states(cfg, states);
    assert_eq!(c.campaign_votes_only(1), Role::Leader);
    assert_eq!(c.term(1), 4);
    // S2 gets a probe without the no-op; S3 gets entry 2 alone; S4 and S5 get nothing.
    let to_2 = c.take(|m| m.from == 1 && m.to == 2 && is_append(m));
    for m in to_2 {
        let MessageBody::AppendEntries {
            prev_log_id,
            leader_commit,
            round,
            ..
        } = m.body
        else {
            unreachable!()
        };
        let probe = MessageBody::AppendEntries {
            prev_log_id,
            entries: Vec::new(),
            leader_commit,
            round,
        };
        c.deliver(Message { body: probe, ..m });
    }
    let s1_s3 = |m: &Message| (m.from == 1 && m.to == 3) || m.to == 1;
    while c.engine(3).last_log_id().index < 2 {
        assert!(c.deliver_matching(s1_s3) > 0, "replication to S3 stalled");
    }
    c.deliver_matching(|m| m.to == 1);
    let progress = c.engine(1).status().progress;
    assert_eq!((progress[&2].match_index, progress[&3].match_index), (2, 2));
    assert_eq!(c.commit(1), 0, "(2, 2) is on a majority but of term 2");
    assert!(c.node(1).applied.is_empty());

    // S1 crashes (is cut off); S5 is elected and overwrites index 2.
    c.isolate(1);
    c.drop_all();
    assert_eq!(c.campaign(5), Role::Leader);
    c.deliver_all();
    c.tick_n(5, config().heartbeat_ticks);
    c.deliver_all();
    for id in 2..=5 {
        assert_eq!(
            c.engine(id).entry(2).map(Entry::log_id),
            Some(LogId::new(3, 2))
        );
    }
    for id in 1..=5 {
        assert!(
            !applied_ids(&c, id).contains(&LogId::new(2, 2)),
            "server {id} applied an entry that was later overwritten"
        );
    }
    assert!(c.commit(5) >= 3);
}

/// Bug 2: "`matchedIndex` is not reset when a server becomes leader."
///
/// S1 leads term 1 and replicates five entries (S2 and S3 match 6); leadership moves to S2
/// and back. At the moment S1 wins again, it must know nothing about its followers' logs: every
/// match index is 0 and every peer is probed. With the bug the old match indexes (6) would
/// survive, and the leader would count them towards commitment and skip probing.
#[test]
fn bug_02_match_index_not_reset_on_election() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..5 {
        c.propose(1, &format!("e{i}"));
    }
    c.deliver_all();
    let progress = c.engine(1).status().progress;
    assert_eq!(progress[&2].match_index, 6);
    assert_eq!(progress[&3].match_index, 6);

    c.engine_mut(1).transfer_leadership(2).expect("transfer");
    c.process(1);
    c.deliver_all();
    assert_eq!(c.leader(), Some(2));
    c.drop_all();
    c.forget_leader(&[3]);
    c.isolate(2);
    let commit = c.commit(1);
    // Server 1 wins again (S3 votes), but nothing from S3 after the vote is delivered yet.
    let role = c.campaign_votes_only(1);
    assert_eq!(role, Role::Leader);
    let status = c.engine(1).status();
    for (peer, p) in &status.progress {
        assert_eq!(p.match_index, 0, "match index of {peer} after election");
        assert_eq!(p.state, ReplicationState::Probe);
    }
    assert_eq!(
        c.commit(1),
        commit,
        "nothing new committed without acknowledgements"
    );
}

/// Bug 3: "A follower sets its commit index to the leader's without capping it at the last
/// entry it has verified from this leader (`min(leaderCommit, index of last new entry)`)."
///
/// S2 holds four stale entries of term 2 past index 2. The leader of term 3, which committed
/// up to 6, sends a heartbeat whose `prev_log_id` is (1, 2). With the bug S2 would set its
/// commit index to 6 (or to its last index, 6) and apply the stale term-2 entries.
#[test]
fn bug_03_follower_commit_not_capped_at_verified_entry() {
    let voters = [1, 2, 3];
    let states = vec![
        (1, restored(3, &voters, entries(&[1, 1, 3, 3, 3]))),
        (2, restored(2, &voters, entries(&[1, 1, 2, 2, 2, 2]))),
        (3, restored(3, &voters, entries(&[1, 1, 3, 3, 3]))),
    ];
    let mut c = Cluster::from_states(classic(), states);
    c.blocked.insert((1, 2));
    c.elect(1);
    let commit = c.commit(1);
    assert_eq!(commit, 6, "S1 and S3 committed the no-op of term 4");
    c.heal();
    // A heartbeat whose prev_log_id matches S2's log at index 2.
    c.deliver(append(
        1,
        2,
        c.term(1),
        LogId::new(1, 2),
        Vec::new(),
        commit,
    ));
    assert_eq!(c.commit(2), 2, "verified only up to index 2");
    assert!(applied_ids(&c, 2).iter().all(|id| id.term != 2));
    // Normal replication then repairs S2.
    c.run(4);
    assert_eq!(c.engine(2).last_log_id(), c.engine(1).last_log_id());
    assert_eq!(applied_ids(&c, 2), applied_ids(&c, 1));
}

/// Bug 4: "The vote check uses term 0 for an empty log after a snapshot; it must use the
/// snapshot's term."
///
/// A server restored from a snapshot at (5, 10) with no entries after it. A candidate whose log
/// ends at (3, 20) is less up to date and must be refused; with the bug the server would
/// compare against (0, 10) and grant. Its own vote requests must carry (5, 10) too.
#[test]
fn bug_04_vote_check_after_snapshot_uses_term_zero() {
    let snap = LogId::new(5, 10);
    let state = RestoredState {
        hard_state: HardState {
            term: 5,
            voted_for: None,
            commit: 10,
        },
        snapshot: Some(snapshot_meta(snap, &[1, 2, 3])),
        purged: snap,
        entries: Vec::new(),
        initial_membership: Membership::default(),
    };
    let mut c = Cluster::from_states(classic(), vec![(1, state)]);
    assert_eq!(c.engine(1).last_log_id(), snap);
    c.deliver(vote_request(2, 1, 6, LogId::new(3, 20)));
    c.deliver(msg(
        2,
        1,
        7,
        MessageBody::VoteRequest {
            last_log_id: LogId::new(4, 99),
            pre_vote: true,
            transfer: false,
        },
    ));
    let answers: Vec<bool> = c
        .take(|m| m.from == 1)
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted, .. } => Some(granted),
            _ => None,
        })
        .collect();
    assert_eq!(answers, vec![false, false], "both requests refused");
    c.deliver(vote_request(3, 1, 8, snap));
    assert!(matches!(
        c.take(|m| m.from == 1)[0].body,
        MessageBody::VoteResponse { granted: true, .. }
    ));
    // Its own campaign advertises the snapshot's id.
    c.tick_n(1, 2 * classic().election_ticks_max);
    let request = c
        .outbox
        .iter()
        .find(|m| is_vote_request(m))
        .expect("campaigned");
    assert!(matches!(
        request.body,
        MessageBody::VoteRequest { last_log_id, .. } if last_log_id == snap
    ));
}

/// Bug 6: "Shared fields are read and written across threads without synchronization; a
/// persisted (term, votedFor) pair can be mixed."
///
/// Our engine is one value owned by one caller (`&mut self` everywhere, no interior
/// mutability), and it hands the hard state out as one value, `Ready::hard_state`, in the same
/// `Ready` as the messages that depend on it, which are in `persisted_messages` (sent only
/// after it is durable). The test checks, for a candidate and for a voter, that the term and
/// the vote come together and that no vote travels in `Ready::messages`.
#[test]
fn bug_06_term_and_vote_persisted_separately() {
    fn assert_send<T: Send>() {}
    assert_send::<Engine>();
    let voters = [1, 2, 3];
    let mut candidate = Engine::new(1, classic(), restored(4, &voters, Vec::new())).expect("ok");
    let mut voter = Engine::new(2, classic(), restored(4, &voters, Vec::new())).expect("ok");
    let mut requests = Vec::new();
    for _ in 0..classic().election_ticks_max {
        candidate.tick();
        let ready = candidate.ready();
        assert!(
            ready.messages.iter().all(|m| !is_vote_request(m)),
            "a vote request before the self-vote is durable"
        );
        if !ready.persisted_messages.is_empty() {
            assert_eq!(
                ready.hard_state,
                Some(HardState {
                    term: 5,
                    voted_for: Some(1),
                    commit: 0
                }),
                "term and self-vote in one value, in the same Ready"
            );
            requests = ready.persisted_messages;
            break;
        }
    }
    let request = requests.into_iter().find(|m| m.to == 2).expect("asked 2");
    voter.step(request);
    let ready = voter.ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: 5,
            voted_for: Some(1),
            commit: 0
        })
    );
    assert!(ready.messages.is_empty(), "nothing leaves before the write");
    assert!(matches!(
        ready.persisted_messages[..],
        [Message {
            body: MessageBody::VoteResponse { granted: true, .. },
            ..
        }]
    ));
    // Acknowledgements of entries also wait for durability.
    voter.step(append(1, 2, 5, LogId::ZERO, vec![Entry::blank(5, 1)], 0));
    let ready = voter.ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.messages.is_empty());
    assert!(matches!(
        ready.persisted_messages[..],
        [Message {
            body: MessageBody::AppendEntriesResponse { success: true, .. },
            ..
        }]
    ));
}

/// Bug 7: "A snapshot is labelled one index earlier than the state it captures, so an entry
/// can be applied twice."
///
/// Every snapshot request must carry exactly the id of the last entry handed out for applying
/// (with the bug it would be one index lower), and a server restarted from a snapshot at
/// index 7 must resume applying at index 8 (with the bug, 7 would be applied again).
#[test]
fn bug_07_snapshot_labelled_one_index_early() {
    let cfg = Config {
        snapshot_distance: 4,
        snapshot_trailing_entries: 2,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg.clone());
    c.elect(1);
    for i in 0..17 {
        c.propose(1, &format!("e{i}"));
        c.deliver_all();
    }
    let requests = &c.node(1).snapshot_requests;
    assert!(requests.len() >= 3);
    for (request, applied) in requests {
        assert_eq!(request.last_log_id, *applied);
    }

    // Restart from a snapshot at (1, 7) with entries 1..=10 still in the log.
    let snap = LogId::new(1, 7);
    let state = RestoredState {
        hard_state: HardState {
            term: 1,
            voted_for: None,
            commit: 10,
        },
        snapshot: Some(snapshot_meta(snap, &[1, 2, 3])),
        purged: LogId::ZERO,
        entries: entries(&[1; 10]),
        initial_membership: Membership::default(),
    };
    let mut engine = Engine::new(1, cfg, state).expect("ok");
    let ready = engine.ready();
    let indexes: Vec<u64> = ready.committed_entries.iter().map(|e| e.index).collect();
    assert_eq!(
        indexes,
        vec![8, 9, 10],
        "nothing the snapshot holds is applied again"
    );
}

/// Bug 8: "Installing a snapshot keeps the log suffix without checking the term at the
/// snapshot index."
///
/// S2 holds uncommitted entries of term 2 at indexes 4..=7. A leader of term 3 installs a
/// snapshot ending at (3, 5). S2's entry at index 5 has term 2, so its suffix 6..=7 does not
/// follow the snapshot and must go. With the bug S2 would keep (2, 6) and (2, 7) after (3, 5):
/// a log whose terms go down, entries no leader ever sent after that snapshot.
#[test]
fn bug_08_snapshot_install_keeps_unchecked_suffix() {
    let voters = [1, 2, 3];
    let states = vec![(2, restored(2, &voters, entries(&[1, 1, 1, 2, 2, 2, 2])))];
    let mut c = Cluster::from_states(config(), states);
    let meta = snapshot_meta(LogId::new(3, 5), &voters);
    c.deliver(msg(1, 2, 3, MessageBody::InstallSnapshot { meta }));
    assert_eq!(c.engine(2).last_log_id(), LogId::new(3, 5));
    assert!(c.node(2).log.is_empty());
    assert_eq!(c.node(2).truncations, vec![6]);
    let ack = c.take(|m| m.from == 2);
    assert!(matches!(
        ack[..],
        [Message {
            body: MessageBody::InstallSnapshotResponse { success: true, last_log_id },
            ..
        }] if last_log_id == LogId::new(3, 5)
    ));
    // The leader continues right after the snapshot.
    c.deliver(append(1, 2, 3, LogId::new(3, 5), vec![entry(3, 6)], 6));
    assert_eq!(c.engine(2).last_log_id(), LogId::new(3, 6));
    assert_eq!(c.commit(2), 6);
}

/// Bug 9: "Entries truncated by a conflicting append get no `rollback()`."
///
/// Every entry handed out for appending (the pre-commit hook) must, if it later leaves the
/// log, be reported in `Ready::rolled_back` — all of them, newest first, not only the first.
/// The test truncates seven entries at once and then checks the hook bookkeeping of a whole
/// Figure-8-like run: appended minus rolled back is exactly the log.
#[test]
fn bug_09_truncated_entries_get_no_rollback() {
    let voters = [1, 2, 3];
    let states = vec![(
        2,
        restored(2, &voters, entries(&[1, 1, 1, 2, 2, 2, 2, 2, 2, 2])),
    )];
    let mut c = Cluster::from_states(config(), states);
    let stale: Vec<Entry> = c.node(2).log[3..].iter().rev().cloned().collect();
    c.deliver(append(1, 2, 3, LogId::new(1, 3), vec![entry(3, 4)], 0));
    assert_eq!(c.node(2).rolled_back, stale, "all seven, newest first");
    assert_eq!(c.node(2).truncations, vec![4]);

    // A run with competing leaders: every appended entry that left a log was rolled back.
    let cfg = Config {
        pre_vote: false,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    for round in 0..4 {
        let leader = c.leader().expect("leader");
        // The leader writes entries only it will ever hold, then is cut off and replaced.
        c.isolate(leader);
        for i in 0..3 {
            c.propose(leader, &format!("lost{round}-{i}"));
        }
        c.drop_all();
        let others: Vec<NodeId> = c.ids().into_iter().filter(|id| *id != leader).collect();
        c.forget_leader(&others);
        assert_eq!(c.campaign(others[0]), Role::Leader);
        c.propose(others[0], &format!("kept{round}"));
        c.deliver_all();
        c.heal();
        c.run(6);
    }
    for id in c.ids() {
        let node = c.node(id);
        let mut expected: Vec<Entry> = node.appended.clone();
        for gone in &node.rolled_back {
            let at = expected
                .iter()
                .rposition(|e| e == gone)
                .expect("rolled back entries were appended");
            expected.remove(at);
        }
        assert_eq!(
            expected, node.log,
            "server {id}: appended - rolled back == log"
        );
        assert!(node.rolled_back.iter().all(|e| !node.applied.contains(e)));
    }
    assert!(
        c.ids().iter().any(|id| c.node(*id).rolled_back.len() >= 3),
        "the scenario did truncate"
    );
}

/// Bug 10: "Join, log-sync and leave messages are not term-checked; join can lower a
/// server's term."
///
/// Our membership changes are log entries, so they travel in AppendEntries (and snapshots),
/// which are term-checked. A stale leader of term 3 sends a configuration entry (and a
/// snapshot with another configuration) to a server in term 5: the server's term, log and
/// configuration must not change, and its answer carries term 5 so the stale leader steps
/// down. With the bug the server would adopt term 3 or the configuration.
#[test]
fn bug_10_membership_messages_not_term_checked() {
    let voters = [1, 2, 3];
    let states = vec![
        (1, restored(3, &voters, entries(&[1, 1]))),
        (2, restored(5, &voters, entries(&[1, 1]))),
    ];
    let mut c = Cluster::from_states(config(), states);
    let before = (
        c.engine(2).membership().clone(),
        c.engine(2).last_log_id(),
        c.node(2).hard_state,
    );
    let joined = Membership::new_voters([1, 2, 3, 9]);
    let config_entry = Entry::membership(3, 3, &joined);
    c.deliver(append(1, 2, 3, LogId::new(1, 2), vec![config_entry], 3));
    let mut meta = snapshot_meta(LogId::new(3, 9), &[1, 9]);
    meta.membership = Membership::new_voters([1, 9]);
    c.deliver(msg(1, 2, 3, MessageBody::InstallSnapshot { meta }));
    c.deliver(msg(1, 2, 3, MessageBody::TimeoutNow));
    let after = (
        c.engine(2).membership().clone(),
        c.engine(2).last_log_id(),
        c.node(2).hard_state,
    );
    assert_eq!(before, after, "term, log and configuration unchanged");
    assert_eq!(c.term(2), 5);
    assert!(c.node(2).installed.is_empty());
    let answers = c.take(|m| m.from == 2);
    assert!(!answers.is_empty());
    for a in &answers {
        assert_eq!(a.term, 5, "answers carry the newer term");
    }
    // The stale sender learns the newer term from them.
    for a in answers {
        c.deliver(a);
    }
    assert_eq!(c.term(1), 5);
}

/// Bug 11: "A second AddServer overwrites the server that is still catching up."
///
/// Server 4 is being caught up (it is far behind); a request to add server 5 must be refused
/// until 4 has been promoted, and 4 must still be promoted afterwards. With the bug, 5 would
/// replace 4 and 4 would stay a learner forever.
#[test]
fn bug_11_second_add_server_overwrites_catching_up_server() {
    let cfg = Config {
        catchup_gap_entries: 5,
        entries_per_message_max: 4,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg.clone());
    c.add_empty_node(4, cfg.clone());
    c.add_empty_node(5, cfg);
    c.elect(1);
    for i in 0..30 {
        c.propose(1, &format!("e{i}"));
    }
    c.deliver_all();
    c.blocked.insert((1, 4));
    c.engine_mut(1).add_voter(4, "n4".into()).expect("add 4");
    c.process(1);
    c.run(3);
    assert!(c.engine(1).committed_membership().is_learner(4));
    assert_eq!(
        c.engine_mut(1).add_voter(5, "n5".into()),
        Err(EngineError::ChangeInProgress)
    );
    assert!(
        c.engine_mut(1).add_voter(4, "n4".into()).is_ok(),
        "same server: fine"
    );
    c.process(1);
    c.heal();
    c.run(10);
    assert!(c.engine(1).committed_membership().is_voter(4), "4 promoted");
    c.engine_mut(1).add_voter(5, "n5".into()).expect("now 5");
    c.process(1);
    c.run(10);
    let m = c.engine(1).committed_membership().clone();
    assert_eq!(m.voters, [1, 2, 3, 4, 5].into_iter().collect());
    assert!(m.learners.is_empty());
}

/// A tiny deterministic generator for the garbage test.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A message of kind `kind` (0..11) with random contents.
fn garbage(g: &mut Gen, kind: u64, from: NodeId, to: NodeId, term: u64) -> Message {
    let log_id = |g: &mut Gen| LogId::new(g.below(term + 2), g.below(40));
    let body = match kind {
        0 | 1 => MessageBody::VoteRequest {
            last_log_id: log_id(g),
            pre_vote: kind == 1,
            transfer: g.below(2) == 0,
        },
        2 => MessageBody::VoteResponse {
            granted: g.below(2) == 0,
            pre_vote: g.below(2) == 0,
        },
        3 => {
            let prev = log_id(g);
            let n = g.below(4);
            let mut entries = Vec::new();
            for i in 0..n {
                let index = prev.index + 1 + i + g.below(2);
                let e_term = g.below(term + 2);
                let mut e = entry(e_term, index);
                if g.below(4) == 0 {
                    e = Entry::membership(e_term, index, &Membership::new_voters([1, 99]));
                    e.data = Bytes::from(vec![g.below(256) as u8; g.below(12) as usize]);
                }
                entries.push(e);
            }
            MessageBody::AppendEntries {
                prev_log_id: prev,
                entries,
                leader_commit: g.below(60),
                round: g.below(5),
            }
        }
        4 => MessageBody::AppendEntriesResponse {
            success: g.below(2) == 0,
            match_index: g.below(60),
            conflict: (g.below(2) == 0).then(|| ConflictHint {
                index: g.below(60),
                term: g.below(term + 2),
            }),
            round: g.below(1_000),
        },
        5 => {
            let mut meta = snapshot_meta(log_id(g), &[1, 2, 3]);
            if g.below(2) == 0 {
                meta.membership = Membership::default();
            }
            MessageBody::InstallSnapshot { meta }
        }
        6 => MessageBody::InstallSnapshotResponse {
            last_log_id: log_id(g),
            success: g.below(2) == 0,
        },
        7 => MessageBody::TimeoutNow,
        8 => MessageBody::ReadIndexRequest {
            request_id: g.below(100),
        },
        _ => MessageBody::ReadIndexResponse {
            request_id: g.below(100),
            read_index: (g.below(2) == 0).then(|| g.below(100)),
        },
    };
    msg(from, to, term, body)
}

/// Bug 13: "`exit()` on 20 error paths: one misdirected message type from the network stops a
/// node."
///
/// Thousands of messages of every kind that a faulty network, a confused or stale peer, or a
/// stranger can produce — misdirected, from itself or id 0 or a non-member, with stale terms,
/// malformed entry runs, undecodable configurations, invalid snapshot configurations,
/// answers to questions never asked — are fed to a leader, a follower and a candidate. No
/// engine may panic, none of them may change its term or log, and afterwards the cluster
/// still commits. With the bug the first such message would stop a node.
#[test]
fn bug_13_misdirected_message_stops_the_node() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "before");
    c.run(2);
    // Make server 3 a (pre-)candidate: it has not heard from the leader for a while.
    c.isolate(3);
    c.tick_n(3, 2 * config().election_ticks_max);
    c.drop_all();
    assert_eq!(c.role(3), Role::PreCandidate);
    let term = c.term(1);
    let snapshot = |c: &Cluster| -> Vec<(u64, LogId, LogIndex)> {
        (1..=3)
            .map(|id| (c.term(id), c.engine(id).last_log_id(), c.commit(id)))
            .collect()
    };
    let before = snapshot(&c);
    let mut g = Gen(13);
    for _ in 0..6_000 {
        let to = 1 + g.below(3);
        let kind = g.below(10);
        let (from, msg_term, addressed) = match g.below(5) {
            // Misdirected: addressed to someone else.
            0 => (1 + g.below(3), g.below(term + 3), 1 + (to % 3)),
            // Impossible sender: itself or 0.
            1 => ([to, 0][g.below(2) as usize], g.below(term + 3), to),
            // A stranger at an older term.
            2 => (90 + g.below(10), g.below(term), to),
            // A member at a stale term.
            3 => (1 + g.below(3), g.below(term), to),
            // A member at the current term, with a delayed or duplicated answer.
            _ => (1 + g.below(3), term, to),
        };
        let mut m = garbage(&mut g, kind, from, addressed, msg_term);
        if msg_term == term && from != to && addressed == to {
            // Only what an honest peer could have sent late or twice: refusals and reads.
            m.body = match m.body {
                MessageBody::AppendEntriesResponse {
                    conflict, round, ..
                } => MessageBody::AppendEntriesResponse {
                    success: false,
                    match_index: 0,
                    conflict,
                    round,
                },
                MessageBody::InstallSnapshotResponse { last_log_id, .. } => {
                    MessageBody::InstallSnapshotResponse {
                        last_log_id,
                        success: false,
                    }
                }
                body @ (MessageBody::ReadIndexRequest { .. }
                | MessageBody::ReadIndexResponse { .. }) => body,
                _ => continue,
            };
        }
        c.engine_mut(to).step(m);
        c.process(to);
    }
    c.drop_all();
    assert_eq!(before, snapshot(&c), "no term, log or commit changed");
    assert_eq!(c.role(1), Role::Leader);
    c.heal();
    c.propose(1, "after");
    c.run(5);
    for id in 1..=3 {
        assert_eq!(c.node(id).applied_payloads(), vec!["before", "after"]);
    }
}

/// Bug 14: "A race between the election timer and becoming leader makes a new leader exit."
///
/// The engine has no timer thread: time is `tick()` on the same `&mut self` as messages. The
/// test lets a candidate's election timer run out while its votes are still in flight (it
/// starts a new pre-vote round), then delivers the late votes, duplicates of every vote, and
/// ticks the new leader far past any election timeout. No panic (becoming leader twice would
/// trip an assertion), no second leader, and the term only changes by one election.
#[test]
fn bug_14_election_timer_races_becoming_leader() {
    let mut c = Cluster::new(3);
    // Pre-vote round succeeds; the real vote requests go out.
    while c.role(1) != Role::Candidate {
        c.tick(1);
        c.deliver_all_votes_only();
    }
    let term = c.term(1);
    // Votes are granted but their answers are held back.
    c.deliver_matching(|m| m.from == 1);
    let late_votes = c.take(|m| m.to == 1);
    assert_eq!(late_votes.len(), 2);
    // The candidate's timer runs out: it starts over with a pre-vote round.
    while c.role(1) == Role::Candidate {
        c.tick(1);
    }
    assert_eq!(c.role(1), Role::PreCandidate);
    // The late votes of the abandoned round arrive now, twice.
    for m in late_votes.iter().chain(late_votes.iter()) {
        c.deliver(m.clone());
    }
    assert_ne!(
        c.role(1),
        Role::Leader,
        "votes of an abandoned round do not count"
    );
    c.deliver_all();
    assert_eq!(c.role(1), Role::Leader);
    let leader_term = c.term(1);
    assert_eq!(leader_term, term + 1);
    // Duplicates of everything it was told during the election, then a long time passes.
    let votes: Vec<Message> = c
        .history
        .iter()
        .filter(|m| m.to == 1 && matches!(m.body, MessageBody::VoteResponse { .. }))
        .cloned()
        .collect();
    for m in votes {
        c.deliver(m);
        c.tick(1);
    }
    c.run(10 * config().election_ticks_max);
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.term(1), leader_term);
    assert_eq!(c.role(2), Role::Follower);
    assert_eq!(c.role(3), Role::Follower);
}

trait VotesOnly {
    fn deliver_all_votes_only(&mut self);
}

impl VotesOnly for Cluster {
    /// Delivers vote traffic only, until none is left.
    fn deliver_all_votes_only(&mut self) {
        let is_vote = |m: &Message| {
            matches!(
                m.body,
                MessageBody::VoteRequest { pre_vote: true, .. }
                    | MessageBody::VoteResponse { pre_vote: true, .. }
            )
        };
        while self.deliver_matching(is_vote) > 0 {}
    }
}

/// Bug 15: "RPCs have no timeout: one lost response stalls a peer forever; one request in
/// flight per peer."
///
/// Several AppendEntries are in flight to one follower at once (pipelining), and all of them
/// are lost. Heartbeats alone do not repair that (they only carry the match index). After
/// `replication_timeout_ticks` without an acknowledgement the leader probes again from the
/// follower's match index and the follower catches up. With the bug the follower would never
/// get the lost entries, and only one message would ever be in flight.
#[test]
fn bug_15_lost_response_stalls_peer_forever() {
    let cfg = config();
    let mut c = Cluster::new(3);
    c.elect(1);
    c.run(2);
    for i in 0..5 {
        c.propose(1, &format!("e{i}"));
    }
    let lost = c.take(|m| m.to == 2 && !append_entries_of(m).is_empty());
    assert!(
        lost.len() >= 5,
        "{} messages in flight to one peer",
        lost.len()
    );
    c.deliver_all();
    assert_eq!(c.commit(1), 6, "committed with server 3");
    let behind = c.engine(2).last_log_id();
    let mut retried_at = None;
    for t in 1..=cfg.replication_timeout_ticks + 1 {
        c.tick_all();
        if c.outbox
            .iter()
            .any(|m| m.to == 2 && !append_entries_of(m).is_empty())
        {
            retried_at = Some(t);
            break;
        }
        c.deliver_all();
        assert_eq!(
            c.engine(2).last_log_id(),
            behind,
            "heartbeats do not repair"
        );
    }
    let t = retried_at.expect("the leader retried");
    assert!(
        t >= cfg.replication_timeout_ticks - 1,
        "retried after the timeout, at {t}"
    );
    c.deliver_all();
    assert_eq!(c.engine(2).last_log_id(), c.engine(1).last_log_id());
}

/// Bug 16: "No pre-vote, no check-quorum: a partitioned server disrupts the cluster when it
/// returns, and a partitioned leader keeps accepting writes it can never commit."
///
/// A follower cut off for many election timeouts comes back without changing anyone's term;
/// a leader cut off from the majority stops accepting writes within two election timeouts,
/// the majority elects a new leader, and the writes the old one took are rolled back when it
/// returns. With the bug the returning follower would force an election with a huge term,
/// and the old leader would accept writes forever.
#[test]
fn bug_16_partitions_disrupt_without_pre_vote_and_check_quorum() {
    let cfg = config();
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.term(1);
    c.isolate(3);
    c.run(10 * cfg.election_ticks_max);
    c.heal();
    c.run(5 * cfg.election_ticks_max);
    for id in 1..=3 {
        assert_eq!(c.term(id), term, "server {id}");
    }
    assert_eq!(c.leader(), Some(1));

    // Now the leader is cut off.
    c.isolate(1);
    c.propose(1, "doomed");
    let mut refused_after = None;
    for t in 0..2 * cfg.election_ticks_min + 1 {
        c.tick_all();
        c.deliver_all();
        if c.engine_mut(1)
            .propose(Bytes::from_static(b"more"))
            .is_err()
        {
            refused_after = Some(t);
            break;
        }
        c.process(1);
    }
    assert!(
        refused_after.is_some(),
        "the cut-off leader stopped taking writes"
    );
    c.run(3 * cfg.election_ticks_max);
    let new_leader = c.leader().expect("majority elects");
    assert_ne!(new_leader, 1);
    c.propose(new_leader, "kept");
    c.heal();
    c.run(5 * cfg.election_ticks_max);
    assert_eq!(c.node(1).applied_payloads(), vec!["kept"]);
    assert!(c
        .node(1)
        .rolled_back
        .iter()
        .any(|e| e.data == Bytes::from_static(b"doomed")));
}

/// Bug 17: "A leaving server can stay half-removed; the commit thread can miss a wake-up; no
/// shutdown."
///
/// A removed server must learn that it is out and then stay quiet: it never campaigns
/// (which would disturb the others) and is no longer replicated to; the rest of the cluster
/// goes on. The engine has no threads to miss a wake-up: commit progress is computed on every
/// acknowledgement. With the bug the removed server would keep campaigning as a member.
#[test]
fn bug_17_removed_server_stays_half_removed() {
    let cfg = config();
    let mut c = Cluster::new(3);
    c.elect(1);
    let id = c.engine_mut(1).remove_server(3).expect("removal");
    c.process(1);
    c.run(3);
    assert!(c.commit(1) >= id.index);
    assert!(!c.engine(1).committed_membership().contains(3));
    assert!(
        !c.engine(3).membership().contains(3),
        "the removed server knows it is out"
    );
    let first = c.history.len();
    c.run(20 * cfg.election_ticks_max);
    let later = &c.history[first..];
    assert!(
        later.iter().all(|m| m.from != 3),
        "the removed server stays quiet"
    );
    assert!(later.iter().all(|m| m.to != 3), "nobody talks to it");
    assert_eq!(c.role(3), Role::Follower);
    c.propose(1, "without 3");
    c.run(cfg.heartbeat_ticks + 1);
    assert_eq!(c.node(2).applied_payloads(), vec!["without 3"]);
}
