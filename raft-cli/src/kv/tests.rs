use super::*;

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn set(key: &str, value: &str, condition: SetCondition) -> KvCommand {
    KvCommand::Set {
        key: b(key),
        value: b(value),
        condition,
        return_previous: true,
    }
}

/// A replica: applies commands at increasing indexes, each stamped with the clock given.
struct Replica {
    db: Db,
    index: u64,
}

impl Replica {
    fn new() -> Replica {
        Replica {
            db: Db::new(),
            index: 0,
        }
    }

    fn apply(&mut self, command: KvCommand) -> KvResponse {
        self.index += 1;
        self.db.set_applied_index(self.index);
        apply_command(&mut self.db, command, self.index)
    }

    /// One Redis write stamped `now_ms`.
    fn write(&mut self, now_ms: u64, op: WriteOp) -> Answer {
        self.batch(now_ms, Batch::single(op, 1 << 20))
    }

    fn batch(&mut self, now_ms: u64, batch: Batch) -> Answer {
        let command = KvCommand::Clocked {
            now_ms,
            command: Box::new(KvCommand::Redis(batch)),
        };
        match self.apply(command) {
            KvResponse::Answer(answer) => answer,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn read(&self, now_ms: u64, op: ReadOp) -> Answer {
        ops::read(&self.db, &op, now_ms, &mut Budget::new(1 << 20))
    }
}

fn set_op(key: &str, value: &str, expiry: SetExpiry) -> WriteOp {
    WriteOp::Set {
        key: b(key),
        value: b(value),
        condition: Condition::Always,
        get: false,
        expiry,
    }
}

fn get(key: &str) -> ReadOp {
    ReadOp::Get { key: b(key) }
}

#[test]
fn conditional_sets_follow_redis() {
    let mut r = Replica::new();
    let written = |written, previous: Option<&'static str>| KvResponse::Set {
        written,
        previous: previous.map(|p: &'static str| Bytes::from_static(p.as_bytes())),
    };
    assert_eq!(
        r.apply(set("k", "1", SetCondition::IfPresent)),
        written(false, None)
    );
    assert_eq!(
        r.apply(set("k", "1", SetCondition::IfAbsent)),
        written(true, None)
    );
    assert_eq!(
        r.apply(set("k", "2", SetCondition::IfAbsent)),
        written(false, Some("1"))
    );
    let if_equal =
        |expected: &'static str| SetCondition::IfEqual(Bytes::from_static(expected.as_bytes()));
    assert_eq!(
        r.apply(set("k", "3", if_equal("2"))),
        written(false, Some("1"))
    );
    assert_eq!(
        r.apply(set("k", "3", if_equal("1"))),
        written(true, Some("1"))
    );
    assert_eq!(
        r.apply(set("absent", "x", if_equal(""))),
        written(false, None)
    );
}

#[test]
fn incr_parses_like_redis_and_refuses_overflow() {
    let mut r = Replica::new();
    let incr = |delta| KvCommand::Incr { key: b("n"), delta };
    assert_eq!(r.apply(incr(1)), KvResponse::Integer(1));
    assert_eq!(r.apply(incr(-3)), KvResponse::Integer(-2));
    r.apply(set("n", &i64::MAX.to_string(), SetCondition::Always));
    assert!(matches!(r.apply(incr(1)), KvResponse::Error(_)));
    r.apply(set("n", " 1", SetCondition::Always));
    assert!(matches!(r.apply(incr(1)), KvResponse::Error(_)));
}

/// Entries written before `return_previous` existed decode with it off.
#[test]
fn commands_without_return_previous_still_decode() {
    #[derive(Serialize)]
    enum Legacy {
        Set {
            key: Bytes,
            value: Bytes,
            condition: SetCondition,
        },
    }
    let old = Legacy::Set {
        key: b("k"),
        value: b("v"),
        condition: SetCondition::IfAbsent,
    };
    let bytes = rmp_serde::to_vec(&old).unwrap();
    let mut expected = set("k", "v", SetCondition::IfAbsent);
    if let KvCommand::Set {
        return_previous, ..
    } = &mut expected
    {
        *return_previous = false;
    }
    assert_eq!(KvCommand::decode(&bytes).unwrap(), expected);
}

#[test]
fn previous_values_are_returned_only_when_asked_for() {
    let mut r = Replica::new();
    r.apply(set("k", "1", SetCondition::Always));
    let mut plain = set("k", "2", SetCondition::Always);
    if let KvCommand::Set {
        return_previous, ..
    } = &mut plain
    {
        *return_previous = false;
    }
    assert!(!plain.needs_clock());
    assert_eq!(
        r.apply(plain),
        KvResponse::Set {
            written: true,
            previous: None
        }
    );
    let with_previous = set("k", "3", SetCondition::Always);
    assert!(with_previous.needs_clock());
    assert_eq!(
        r.apply(with_previous),
        KvResponse::Set {
            written: true,
            previous: Some(b("2"))
        }
    );
}

/// Expiry depends on the entry's stamp only, and the table's clock never goes back: a stamp
/// behind the clock (a new leader whose clock is late) counts as the clock.
#[test]
fn keys_expire_by_the_entries_stamps_and_time_never_goes_back() {
    let mut r = Replica::new();
    let expiry = SetExpiry::Set(When::In(1_000), ExpireCommand::Set);
    assert_eq!(r.write(10_000, set_op("k", "v", expiry)), Answer::Ok);
    assert_eq!(r.db.slot(b"k").unwrap().deadline_ms, 11_000);
    // At 10,999 the key is there: INCR finds a string that is not an integer.
    let incr = || WriteOp::IncrBy {
        key: b("k"),
        delta: 1,
    };
    assert!(matches!(r.write(10_999, incr()), Answer::Error(_)));
    // At 11,000 it is gone: INCR starts from 0, and the new key has no deadline.
    assert_eq!(r.write(11_000, incr()), Answer::Integer(1));
    assert_eq!(r.db.slot(b"k").unwrap().deadline_ms, 0);
    // A stamp behind the clock is the clock: PX 500 from 11,000, not from 5,000.
    let px = SetExpiry::Set(When::In(500), ExpireCommand::Set);
    assert_eq!(r.write(5_000, set_op("j", "v", px)), Answer::Ok);
    assert_eq!(r.db.slot(b"j").unwrap().deadline_ms, 11_500);
    assert_eq!(r.db.clock_ms(), 11_000);
    // Readers use their own clock.
    assert_eq!(r.read(11_499, get("j")), Answer::Bulk(b("v")));
    assert_eq!(r.read(11_500, get("j")), Answer::Nil);
    // A deadline already past deletes the key at once.
    let past = SetExpiry::Set(When::At(1), ExpireCommand::Set);
    assert_eq!(r.write(11_000, set_op("j", "w", past)), Answer::Ok);
    assert!(r.db.slot(b"j").is_none());
}

/// The leader's expiry deletions delete only what is expired at their own stamp; the
/// deadline index finds expired keys in deadline order without a scan.
#[test]
fn reaping_deletes_only_keys_still_expired_and_the_index_lists_them_in_order() {
    let mut r = Replica::new();
    for (key, ms) in [("a", 300), ("b", 100), ("c", 200)] {
        let expiry = SetExpiry::Set(When::At(ms), ExpireCommand::Set);
        r.write(50, set_op(key, "v", expiry));
    }
    r.write(50, set_op("forever", "v", SetExpiry::Clear));
    assert_eq!(r.db.due(250, 10), vec![b("b"), b("c")]);
    assert_eq!(r.db.due(1_000, 1), vec![b("b")]);
    // The leader saw b and c expired, but c was written again before the deletion applied.
    r.write(60, set_op("c", "again", SetExpiry::Clear));
    let reap = WriteOp::Reap {
        keys: vec![b("b"), b("c")],
    };
    assert_eq!(r.write(250, reap), Answer::Integer(1));
    assert!(r.db.slot(b"b").is_none());
    assert_eq!(r.read(250, get("c")), Answer::Bulk(b("again")));
    assert_eq!(r.db.due(u64::MAX, 10), vec![b("a")]);
    assert_eq!(r.db.expiring_len(), 1);
}

fn watch(r: &Replica, key: &str, now_ms: u64) -> (Bytes, Version) {
    (b(key), r.db.version(key.as_bytes(), now_ms))
}

/// EXEC of `SET t x` with the watched versions: whether it ran.
fn exec(r: &mut Replica, now_ms: u64, watched: Vec<(Bytes, Version)>) -> bool {
    let batch = Batch {
        ops: vec![Op::Write(set_op("t", "x", SetExpiry::Clear))],
        watched,
        transaction: true,
        reply_bytes_max: 1 << 20,
    };
    match r.batch(now_ms, batch) {
        Answer::Array(_) => true,
        Answer::NilArray => false,
        other => panic!("unexpected {other:?}"),
    }
}

/// WATCH aborts EXEC exactly when Redis does, however the key changed in between.
#[test]
fn watched_keys_abort_exec_when_changed_and_only_then() {
    let mut r = Replica::new();
    let w = |r: &mut Replica, key: &str| watch(r, key, 100);
    r.write(100, set_op("k", "1", SetExpiry::Clear));

    // Unchanged present and absent keys: EXEC runs.
    let watched = vec![w(&mut r, "k"), w(&mut r, "absent")];
    r.write(100, set_op("other", "1", SetExpiry::Clear));
    assert!(exec(&mut r, 100, watched));

    // Overwritten with the same value: changed.
    let watched = vec![w(&mut r, "k")];
    r.write(100, set_op("k", "1", SetExpiry::Clear));
    assert!(!exec(&mut r, 100, watched));

    // An absent key created and deleted again: changed.
    let watched = vec![w(&mut r, "ghost")];
    r.write(100, set_op("ghost", "1", SetExpiry::Clear));
    r.write(
        100,
        WriteOp::Del {
            keys: vec![b("ghost")],
        },
    );
    assert!(!exec(&mut r, 100, watched));

    // A command that changes nothing (DEL of an absent key, SETNX on a present one) does not
    // count.
    let watched = vec![w(&mut r, "nothing"), w(&mut r, "k")];
    r.write(
        100,
        WriteOp::Del {
            keys: vec![b("nothing")],
        },
    );
    r.write(
        100,
        WriteOp::SetNx {
            key: b("k"),
            value: b("2"),
        },
    );
    assert!(exec(&mut r, 100, watched));

    // A present key that expires before EXEC: changed (Redis 7 aborts too).
    let ex = SetExpiry::Set(When::At(200), ExpireCommand::Set);
    r.write(100, set_op("e", "v", ex));
    let watched = vec![w(&mut r, "e")];
    assert!(!exec(&mut r, 250, watched));

    // A key already expired when watched, deleted by the leader since: unchanged.
    let ex = SetExpiry::Set(When::At(300), ExpireCommand::Set);
    r.write(250, set_op("gone", "v", ex));
    let watched = vec![watch(&r, "gone", 300)];
    r.write(
        300,
        WriteOp::Reap {
            keys: vec![b("gone")],
        },
    );
    assert!(exec(&mut r, 300, watched));

    // FLUSHALL changes the keys that existed, not the absent ones watched.
    let watched = vec![watch(&r, "never", 300)];
    r.write(300, WriteOp::Flush);
    assert!(exec(&mut r, 300, watched));
    r.write(300, set_op("k", "1", SetExpiry::Clear));
    let watched = vec![watch(&r, "k", 300)];
    r.write(300, WriteOp::Flush);
    assert!(!exec(&mut r, 300, watched));
}

/// Past the tombstone limit, an absent key watched before the oldest remembered deletion
/// aborts EXEC (never a wrong success); one watched after runs.
#[test]
fn forgotten_deletions_make_exec_abort_conservatively() {
    let mut r = Replica::new();
    let watched = vec![watch(&r, "quiet", 0)];
    for i in 0..TOMBSTONES_MAX + 10 {
        let key = Bytes::from(format!("k{i}"));
        r.write(0, set_op(&format!("k{i}"), "v", SetExpiry::Clear));
        r.write(0, WriteOp::Del { keys: vec![key] });
    }
    assert!(!exec(&mut r, 0, watched));
    let watched = vec![watch(&r, "quiet", 0)];
    r.write(
        0,
        WriteOp::Del {
            keys: vec![b("k0")],
        },
    );
    assert!(exec(&mut r, 0, watched));
}

/// A replica restored from a snapshot decides EXEC exactly as one that applied the entries:
/// modification indexes, tombstones and the clock travel in the snapshot.
#[tokio::test]
async fn a_restored_replica_decides_watches_and_expiry_as_the_others() {
    let mut r = Replica::new();
    let ex = SetExpiry::Set(When::In(1_000), ExpireCommand::Set);
    r.write(5_000, set_op("k", "text", ex));
    r.write(5_000, set_op("d", "1", SetExpiry::Clear));
    let watched = vec![watch(&r, "k", 5_000), watch(&r, "d", 5_000)];
    r.write(5_000, WriteOp::Del { keys: vec![b("d")] });

    let mut buf = Vec::new();
    snapshot::Capture::of(&r.db)
        .write_to(&mut buf)
        .await
        .unwrap();
    let mut restored = Replica {
        db: read_snapshot(&mut &buf[..]).await.unwrap(),
        index: r.index,
    };
    restored.db.set_applied_index(r.index);
    assert_eq!(restored.db, r.db);
    assert_eq!(restored.db.clock_ms(), 5_000);
    for replica in [&mut r, &mut restored] {
        assert!(!exec(replica, 5_500, watched.clone()));
        // A stamp behind the restored clock still counts as the clock.
        assert!(matches!(
            replica.write(
                0,
                WriteOp::IncrBy {
                    key: b("k"),
                    delta: 1
                }
            ),
            Answer::Error(_)
        ));
        assert_eq!(
            replica.write(6_000, WriteOp::GetDel { key: b("k") }),
            Answer::Nil
        );
    }
    assert_eq!(restored.db, r.db);
}

/// A pop that would answer past the reply budget pops nothing, on every replica alike.
#[test]
fn a_pop_past_the_reply_budget_pops_nothing() {
    let mut r = Replica::new();
    let values: Vec<Bytes> = (0..100).map(|_| Bytes::from(vec![b'x'; 1000])).collect();
    r.write(
        0,
        WriteOp::Push {
            key: b("l"),
            values,
            left: false,
        },
    );
    let pop = |count| WriteOp::Pop {
        key: b("l"),
        left: true,
        count: Some(count),
    };
    let answer = r.batch(0, Batch::single(pop(100), 50_000));
    assert!(
        matches!(answer, Answer::Error(ref e) if e.contains("reply_bytes_max")),
        "{answer:?}"
    );
    assert_eq!(
        r.read(0, ReadOp::LLen { key: b("l") }),
        Answer::Integer(100)
    );
    match r.batch(0, Batch::single(pop(10), 50_000)) {
        Answer::Array(items) => assert_eq!(items.len(), 10),
        other => panic!("unexpected {other:?}"),
    }
}

/// SCAN's cursor is a position: a key present for a whole iteration is returned exactly
/// once, even when keys are added and deleted between calls and the calls go to a replica
/// that rebuilt its table from a snapshot.
#[tokio::test]
async fn scan_returns_every_key_present_throughout_exactly_once_across_replicas() {
    let mut r = Replica::new();
    for i in 0..2_000 {
        r.write(0, set_op(&format!("stay{i}"), "v", SetExpiry::Clear));
    }
    let mut buf = Vec::new();
    snapshot::Capture::of(&r.db)
        .write_to(&mut buf)
        .await
        .unwrap();
    let mut other = Replica {
        db: read_snapshot(&mut &buf[..]).await.unwrap(),
        index: r.index,
    };
    let mut seen = std::collections::HashMap::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        calls += 1;
        let scan = ReadOp::Scan {
            cursor,
            pattern: None,
            count: 25,
            type_name: None,
        };
        let replica = if calls % 2 == 0 { &r } else { &other };
        let Answer::Array(reply) = replica.read(0, scan) else {
            panic!("scan failed");
        };
        let [Answer::Bulk(next), Answer::Array(keys)] = &reply[..] else {
            panic!("unexpected {reply:?}");
        };
        for key in keys {
            let Answer::Bulk(key) = key else { panic!() };
            *seen.entry(key.clone()).or_insert(0) += 1;
        }
        // Churn on both replicas alike between calls.
        for replica in [&mut r, &mut other] {
            replica.write(0, set_op(&format!("new{calls}"), "v", SetExpiry::Clear));
            replica.write(
                0,
                WriteOp::Del {
                    keys: vec![Bytes::from(format!("new{}", calls - 1))],
                },
            );
        }
        cursor = std::str::from_utf8(next).unwrap().parse().unwrap();
        if cursor == 0 {
            break;
        }
    }
    for i in 0..2_000 {
        let key = Bytes::from(format!("stay{i}"));
        assert_eq!(seen.get(&key), Some(&1), "{key:?}");
    }
    assert!(calls > 40, "{calls} calls for 2,000 keys at COUNT 25");
}
