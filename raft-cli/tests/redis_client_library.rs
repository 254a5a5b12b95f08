//! The `redis` crate (redis-rs), as an application uses it, against a 3-node cluster: plain
//! commands, a pipeline, an atomic pipeline (MULTI/EXEC), a WATCH that another client's
//! write makes EXEC abort, `redis::transaction` (WATCH, retried until EXEC succeeds) from
//! clients on every node incrementing one counter, and `scan_match`.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::cluster;
use redis::{Commands, Connection};

fn connect(addr: &str) -> Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("a client");
    client.get_connection().expect("a connection")
}

/// Plain commands, a pipeline and an atomic pipeline, through a follower.
fn commands_and_pipelines(con: &mut Connection) -> redis::RedisResult<()> {
    let () = con.set("greeting", "hello")?;
    let greeting: String = con.get("greeting")?;
    assert_eq!(greeting, "hello");
    assert_eq!(con.incr::<_, _, i64>("n", 5)?, 5);
    assert_eq!(con.decr::<_, _, i64>("n", 2)?, 3);
    let () = con.set_ex("session", "token", 600)?;
    let ttl: i64 = con.ttl("session")?;
    assert!((598..=600).contains(&ttl), "TTL {ttl}");
    let () = con.mset(&[("a", "1"), ("b", "2")])?;
    assert_eq!(con.append::<_, _, i64>("greeting", " world")?, 11);
    assert_eq!(con.strlen::<_, i64>("greeting")?, 11);
    assert_eq!(con.get_del::<_, Option<String>>("b")?, Some("2".into()));

    // A pipeline: one write, the replies in order.
    let (counted, all, members, popped): (i64, HashMap<String, String>, BTreeSet<String>, String) =
        redis::pipe()
            .incr("p", 10)
            .hset("h", "f1", "v1")
            .ignore()
            .hset("h", "f2", "v2")
            .ignore()
            .hgetall("h")
            .sadd("s", &["x", "y", "x"])
            .ignore()
            .smembers("s")
            .rpush("l", &["a", "b"])
            .ignore()
            .lpop("l", None)
            .query(con)?;
    assert_eq!(counted, 10);
    assert_eq!(all.len(), 2);
    assert_eq!(all["f2"], "v2");
    assert_eq!(members, BTreeSet::from(["x".to_string(), "y".to_string()]));
    assert_eq!(popped, "a");

    // An atomic pipeline: MULTI, the commands, EXEC; the replies are EXEC's.
    let (set, incremented, range): (String, i64, Vec<String>) = redis::pipe()
        .atomic()
        .set("x", 41)
        .incr("x", 1)
        .lrange("l", 0, -1)
        .query(con)?;
    assert_eq!((set.as_str(), incremented), ("OK", 42));
    assert_eq!(range, vec!["b".to_string()]);

    // A transaction with a wrong type inside: the other commands run, the error is the
    // command's.
    let failed: redis::RedisResult<(i64, i64)> = redis::pipe()
        .atomic()
        .incr("x", 1)
        .lpush("x", "oops")
        .query(con);
    assert_eq!(failed.unwrap_err().code(), Some("WRONGTYPE"));
    assert_eq!(con.get::<_, i64>("x")?, 43);
    Ok(())
}

/// WATCH, a write by another client, EXEC: aborted (nil), nothing written.
fn watch_aborts_exec(con: &mut Connection, other: &mut Connection) -> redis::RedisResult<()> {
    let () = con.set("watched", "before")?;
    redis::cmd("WATCH").arg("watched").query::<()>(con)?;
    let () = other.set("watched", "by the other client")?;
    let outcome: Option<(String,)> = redis::pipe().atomic().set("watched", "mine").query(con)?;
    assert_eq!(outcome, None, "EXEC ran though a watched key changed");
    assert_eq!(con.get::<_, String>("watched")?, "by the other client");

    // Unchanged: EXEC runs.
    redis::cmd("WATCH").arg("watched").query::<()>(con)?;
    let outcome: Option<(String,)> = redis::pipe().atomic().set("watched", "mine").query(con)?;
    assert_eq!(outcome, Some(("OK".to_string(),)));
    Ok(())
}

/// Increments `counter` `times` times with `redis::transaction`: WATCH, read, MULTI, SET,
/// EXEC, retried whenever another client changed the counter in between.
fn increment_optimistically(con: &mut Connection, times: usize) -> redis::RedisResult<()> {
    for _ in 0..times {
        redis::transaction(con, &["counter"], |con, pipe| {
            let value: Option<i64> = con.get("counter")?;
            // None when EXEC was aborted: `transaction` then tries again.
            pipe.set("counter", value.unwrap_or(0) + 1)
                .ignore()
                .query::<Option<()>>(con)
        })?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_crate_runs_commands_pipelines_and_transactions_on_any_node() {
    let cluster = cluster(3).await;
    let leader = cluster.client().leader_status().await.unwrap().id;
    let mut addrs: Vec<String> = cluster
        .nodes
        .values()
        .map(|n| n.redis_addr.clone())
        .collect();
    // The follower first: its writes are forwarded to the leader.
    addrs.sort_by_key(|addr| *addr == cluster.nodes[&leader].redis_addr);
    let checked = tokio::task::spawn_blocking(move || -> redis::RedisResult<()> {
        let mut con = connect(&addrs[0]);
        let mut other = connect(&addrs[2]);
        commands_and_pipelines(&mut con)?;
        watch_aborts_exec(&mut con, &mut other)?;

        // Three clients, one per node, each adding 20 to one counter.
        let clients: Vec<_> = addrs
            .iter()
            .map(|addr| {
                let addr = addr.clone();
                std::thread::spawn(move || increment_optimistically(&mut connect(&addr), 20))
            })
            .collect();
        for client in clients {
            client.join().expect("a client thread")?;
        }
        assert_eq!(con.get::<_, i64>("counter")?, 60);

        // scan_match iterates with SCAN's cursor until it is 0.
        for i in 0..50 {
            let () = con.set(format!("scan:{i}"), i)?;
        }
        let scanned: BTreeSet<String> = con.scan_match("scan:*")?.collect();
        assert_eq!(scanned.len(), 50);
        let () = redis::cmd("FLUSHDB").query(&mut con)?;
        assert_eq!(con.keys::<_, Vec<String>>("*")?, Vec::<String>::new());
        Ok(())
    })
    .await
    .expect("the client code ran");
    checked.expect("the redis crate's requests succeed");
}
