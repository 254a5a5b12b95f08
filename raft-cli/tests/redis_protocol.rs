//! The Redis front end speaks RESP2 like Redis/Valkey: exact reply bytes for every supported
//! command, on the leader and on a follower (which forwards writes to the leader), pipelined
//! requests answered in order.

mod common;

use common::{cluster, Resp};

async fn check(conn: &mut Resp, args: &[&str], expected: &str) {
    let reply = conn.command(args).await;
    assert_eq!(reply, expected, "reply to {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_like_redis_on_leader_and_follower() {
    let cluster = cluster(3).await;
    let leader = cluster.client().leader_status().await.unwrap();
    let follower = cluster.nodes.values().find(|n| n.id != leader.id).unwrap();
    let leader_node = &cluster.nodes[&leader.id];
    let mut f = Resp::connect(&follower.redis_addr).await;
    let mut l = Resp::connect(&leader_node.redis_addr).await;

    f.send(b"PING\r\n").await;
    assert_eq!(f.reply().await.unwrap(), b"+PONG\r\n");
    check(&mut f, &["PING"], "+PONG\r\n").await;
    check(&mut f, &["ECHO", "hi"], "$2\r\nhi\r\n").await;

    // Writes through the follower are forwarded; reads on either side are linearizable.
    check(&mut f, &["SET", "k", "v"], "+OK\r\n").await;
    check(&mut l, &["GET", "k"], "$1\r\nv\r\n").await;
    check(&mut f, &["get", "k"], "$1\r\nv\r\n").await;
    check(&mut f, &["SET", "k", "v2", "NX"], "$-1\r\n").await;
    check(&mut f, &["SET", "k", "v2", "XX"], "+OK\r\n").await;
    check(&mut l, &["SET", "other", "x", "XX"], "$-1\r\n").await;
    // IFEQ compare-and-set (Valkey 8.1): +OK when set, nil when not; with GET the old value.
    check(&mut f, &["SET", "k", "v3", "IFEQ", "v2"], "+OK\r\n").await;
    check(&mut f, &["SET", "k", "v4", "IFEQ", "nope"], "$-1\r\n").await;
    check(&mut l, &["SET", "absent", "v", "IFEQ", "x"], "$-1\r\n").await;
    check(
        &mut f,
        &["SET", "k", "v5", "IFEQ", "v3", "GET"],
        "$2\r\nv3\r\n",
    )
    .await;
    check(&mut l, &["GET", "k"], "$2\r\nv5\r\n").await;
    check(&mut l, &["SET", "k", "v6", "GET"], "$2\r\nv5\r\n").await;
    check(
        &mut l,
        &["SET", "k", "x", "NX", "IFEQ", "v6"],
        "-ERR syntax error\r\n",
    )
    .await;
    check(
        &mut l,
        &["SET", "k", "x", "EX", "0"],
        "-ERR invalid expire time in 'set' command\r\n",
    )
    .await;

    check(&mut f, &["DEL", "k", "missing"], ":1\r\n").await;
    check(&mut f, &["EXISTS", "k"], ":0\r\n").await;
    check(&mut f, &["INCR", "n"], ":1\r\n").await;
    check(&mut l, &["INCR", "n"], ":2\r\n").await;
    check(&mut l, &["SET", "s", "abc"], "+OK\r\n").await;
    check(
        &mut f,
        &["INCR", "s"],
        "-ERR value is not an integer or out of range\r\n",
    )
    .await;
    check(
        &mut f,
        &["MGET", "n", "s", "missing"],
        "*3\r\n$1\r\n2\r\n$3\r\nabc\r\n$-1\r\n",
    )
    .await;
    check(&mut f, &["EXISTS", "n", "s", "n"], ":3\r\n").await;
    check(&mut f, &["DBSIZE"], ":2\r\n").await;

    // Start-up chatter of redis-cli and redis-benchmark.
    check(&mut f, &["COMMAND", "DOCS"], "*0\r\n").await;
    check(
        &mut f,
        &["CONFIG", "GET", "save"],
        "*2\r\n$4\r\nsave\r\n$0\r\n\r\n",
    )
    .await;
    check(&mut f, &["CLIENT", "SETINFO", "LIB-NAME", "x"], "+OK\r\n").await;
    check(&mut f, &["SELECT", "0"], "+OK\r\n").await;
    check(
        &mut f,
        &["GET"],
        "-ERR wrong number of arguments for 'get' command\r\n",
    )
    .await;
    check(
        &mut f,
        &["FLUSHALLX", "x"],
        "-ERR unknown command 'FLUSHALLX', with args beginning with: 'x' \r\n",
    )
    .await;

    for (conn, role, id) in [
        (&mut f, "follower", follower.id),
        (&mut l, "leader", leader.id),
    ] {
        let info = conn.command(&["INFO"]).await;
        for field in [
            format!("raft_role:{role}\r\n"),
            format!("raft_node_id:{id}\r\n"),
            format!("raft_leader_id:{}\r\n", leader.id),
            "raft_term:".into(),
            "raft_commit_index:".into(),
            "raft_applied_index:".into(),
            "raft_members:1@".into(),
        ] {
            assert!(info.contains(&field), "{field:?} missing in {info}");
        }
    }

    // Pipelined requests are answered in order.
    f.send(b"*3\r\n$3\r\nSET\r\n$1\r\np\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\np\r\n*2\r\n$3\r\nGET\r\n$1\r\np\r\n")
        .await;
    assert_eq!(f.reply().await.unwrap(), b"+OK\r\n");
    assert_eq!(f.reply().await.unwrap(), b":2\r\n");
    assert_eq!(f.reply().await.unwrap(), b"$1\r\n2\r\n");
    check(&mut f, &["QUIT"], "+OK\r\n").await;
    assert!(f.is_closed().await);
}
