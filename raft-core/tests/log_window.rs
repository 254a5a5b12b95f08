//! The engine keeps a bounded window of the log in memory; the log store is the log. Older
//! payloads are read back for lagging followers, and every queue of entries on the write path
//! is bounded in bytes.

mod common;

use bytes::Bytes;
use common::{append, config, restored, Cluster};
use raft_core::engine::{Config, Engine, EngineError, RestoredState, Role};
use raft_core::{Entry, LogId, Membership, MessageBody};

const KIB: usize = 1024;

fn payload(i: u32) -> String {
    format!("{i:04}{}", "x".repeat(KIB - 4))
}

/// A follower that was cut off catches up from entries read back from the log store: the
/// leader kept no payload it did not need (a window of 0 bytes).
#[test]
fn a_lagging_follower_gets_entries_read_back_from_the_log() {
    let cfg = Config {
        log_cache_bytes_max: 0,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    c.isolate(3);
    for i in 0..40 {
        c.propose(1, &payload(i));
        c.deliver_all();
    }
    assert!(
        c.engine(1).log_cached_bytes() < 2 * KIB as u64,
        "applied payloads left memory: {} bytes held",
        c.engine(1).log_cached_bytes()
    );
    assert!(c.engine(1).entry(5).is_none(), "evicted");
    assert!(c.engine(1).log_id_at(5).is_some(), "its id is still known");
    c.heal();
    c.run(20);
    assert!(
        !c.node(1).fetches.is_empty(),
        "the leader read entries back"
    );
    assert_eq!(c.node(3).applied_payloads(), c.node(1).applied_payloads());
    assert_eq!(c.commit(3), c.commit(1));
}

/// With a window, only the most recent applied payloads stay in memory.
#[test]
fn applied_payloads_in_memory_stay_within_the_window() {
    let window = 8 * KIB as u64;
    let cfg = Config {
        log_cache_bytes_max: window,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    for i in 0..100 {
        c.propose(1, &payload(i));
        c.deliver_all();
    }
    for id in 1..=3 {
        let held = c.engine(id).log_cached_bytes();
        assert!(held <= window, "node {id} holds {held} bytes of payloads");
    }
    assert!(c.engine(1).entry(c.commit(1)).is_some(), "the newest stay");
}

/// A leader refuses proposals once its uncommitted entries hold `uncommitted_bytes_max`.
#[test]
fn a_leader_refuses_proposals_past_the_uncommitted_bytes() {
    let cfg = Config {
        uncommitted_bytes_max: 16 * KIB as u64,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    c.isolate(1);
    let mut accepted = 0;
    let refused = loop {
        match c.engine_mut(1).propose(Bytes::from(payload(accepted))) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 100, "never refused");
    };
    assert!(
        matches!(refused, EngineError::BackpressureBytes(_)),
        "{refused:?}"
    );
    assert!(
        (14..=16).contains(&accepted),
        "accepted {accepted} of 1 KiB"
    );
}

/// A follower whose state machine falls behind takes from an AppendEntries only what keeps
/// its committed, unapplied bytes within `unapplied_bytes_max`, and acknowledges that much.
#[test]
fn a_follower_takes_only_what_fits_its_unapplied_budget() {
    let cfg = Config {
        unapplied_bytes_max: 10 * KIB as u64,
        uncommitted_bytes_max: 10 * KIB as u64,
        ..config()
    };
    let mut follower = Engine::new(2, cfg, restored(1, &[1, 2, 3], Vec::new())).unwrap();
    let batch = |low: u64, high: u64| -> Vec<Entry> {
        (low..high)
            .map(|i| Entry::normal(1, i, Bytes::from(payload(i as u32))))
            .collect()
    };
    // 8 entries, committed, handed out for applying but never reported applied.
    follower.step(append(1, 2, 1, LogId::ZERO, batch(1, 9), 8));
    let ready = follower.ready();
    follower.on_persisted(ready.entries.last().map(|e| e.log_id()));
    let handed: Vec<Entry> = follower.take_committed_entries();
    assert!(!handed.is_empty());
    // 8 more offered: only what fits is taken, and the acknowledgement says so.
    follower.step(append(1, 2, 1, LogId::new(1, 8), batch(9, 17), 16));
    let ready = follower.ready();
    let acked = ready
        .persisted_messages
        .iter()
        .find_map(|m| match m.body {
            MessageBody::AppendEntriesResponse { match_index, .. } => Some(match_index),
            _ => None,
        })
        .expect("an answer");
    assert!(
        (9..16).contains(&acked),
        "took up to {acked}; the budget allows about 10 KiB unapplied"
    );
    assert_eq!(follower.last_log_id().index, acked);
}

/// A snapshot is due once the entries applied since the last one hold `snapshot_log_bytes`,
/// even when `snapshot_distance` is far off.
#[test]
fn a_snapshot_is_taken_after_snapshot_log_bytes() {
    let cfg = Config {
        snapshot_distance: 0,
        snapshot_log_bytes: 4 * KIB as u64,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    for i in 0..3 {
        c.propose(1, &payload(i));
        c.deliver_all();
    }
    assert!(c.node(1).snapshot_requests.is_empty(), "3 KiB: not yet");
    c.propose(1, &payload(3));
    c.deliver_all();
    assert_eq!(c.node(1).snapshot_requests.len(), 1, "4 KiB: due");
}

/// What is handed to the state machine and not yet applied stays within
/// `apply_queue_bytes_max`: the rest waits in the log until `on_applied`.
#[test]
fn entries_handed_to_the_state_machine_are_bounded_in_bytes() {
    let cfg = Config {
        apply_queue_bytes_max: 4 * KIB as u64,
        ..config()
    };
    let state = RestoredState {
        initial_membership: Membership::new_voters([1]),
        ..RestoredState::default()
    };
    let mut leader = Engine::new(1, cfg, state).unwrap();
    while leader.role() != Role::Leader {
        leader.tick();
    }
    let ready = leader.ready();
    leader.on_persisted(ready.entries.last().map(|e| e.log_id()));
    for i in 0..20 {
        leader.propose(Bytes::from(payload(i))).unwrap();
    }
    let ready = leader.ready();
    leader.on_persisted(ready.entries.last().map(|e| e.log_id()));
    let mut handed = ready.committed_entries;
    handed.extend(leader.take_committed_entries());
    let bytes: u64 = handed.iter().map(Entry::size_bytes).sum();
    assert!(bytes <= 4 * KIB as u64, "{bytes} bytes handed out at once");
    assert!(
        leader.take_committed_entries().is_empty(),
        "the queue is full"
    );
    let last = handed.last().unwrap().index;
    leader.on_applied(last);
    assert!(
        !leader.take_committed_entries().is_empty(),
        "applied: more follows"
    );
}

/// Servers that apply the same entries do not all snapshot at the same index: each postpones
/// its trigger by its own random fraction (at most 10 %).
#[test]
fn servers_snapshot_at_different_indexes() {
    let cfg = Config {
        snapshot_distance: 200,
        ..config()
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    for i in 0..260 {
        c.propose(1, &format!("v{i}"));
        c.deliver_all();
    }
    c.run(3);
    let first: Vec<u64> = (1..=3)
        .map(|id| {
            let requests = &c.node(id).snapshot_requests;
            requests.first().expect("a snapshot").0.last_log_id.index
        })
        .collect();
    assert!(
        first.iter().all(|i| (200..=222).contains(i)),
        "within 10 % of the distance: {first:?}"
    );
    assert!(
        first.iter().any(|i| *i != first[0]),
        "not all at once: {first:?}"
    );
}
