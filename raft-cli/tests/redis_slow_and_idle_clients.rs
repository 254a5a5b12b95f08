//! Clients that send slowly, stop halfway, never send at all or never read: the node parses
//! a request that arrives a segment at a time once (not again from its first byte after
//! every read), cuts off a request that does not arrive whole within its read timeout,
//! connections idle for longer than the idle timeout and connections that leave their
//! replies unread that long, and afterwards answers PING, stayed under its memory bound and
//! commits writes.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_node_serves_and_cluster_commits, cluster, cluster_with, cpu_ticks, memory_bytes, pid,
    port_of, set_until_ok, wait_for_server_socket, Resp, NODE_RSS_BYTES_MAX, TCP_ESTABLISHED,
};

/// Arguments of the request sent as fast as the client can write them, one write each.
const ARGS_SENT_AT_ONCE: usize = 60_000;
/// Arguments of the same request sent afterwards one segment at a time, with a pause
/// between them, while the node's CPU time is measured.
const ARGS_TRICKLED: usize = 1_000;
/// Pause between two trickled arguments.
const TRICKLE_PAUSE: Duration = Duration::from_millis(2);
/// CPU the node may use while the trickled arguments arrive, as a share of the time they
/// take. Parsing each segment alone takes the node a few percent of that time in a debug
/// build; parsing the whole request again after every segment kept it busy all the time.
const TRICKLE_CPU_SHARE_MAX: f64 = 0.3;

/// A bulk string.
fn bulk(word: &str) -> Vec<u8> {
    format!("${}\r\n{word}\r\n", word.len()).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_arriving_a_segment_at_a_time_is_parsed_once() {
    let cluster = cluster(3).await;
    let node = 2;
    let node_pid = pid(&cluster, node);
    let mut conn = Resp::connect(&cluster.nodes[&node].redis_addr).await;
    set_until_ok(&mut conn, "key00007", "seven").await;
    conn.set_nodelay();
    let count = ARGS_SENT_AT_ONCE + ARGS_TRICKLED;
    conn.send(format!("*{}\r\n", count + 1).as_bytes()).await;
    conn.send(&bulk("MGET")).await;
    for i in 0..ARGS_SENT_AT_ONCE {
        conn.send(&bulk(&format!("key{i:05}"))).await;
    }

    let cpu_before = cpu_ticks(node_pid);
    let started = Instant::now();
    for i in ARGS_SENT_AT_ONCE..count {
        conn.send(&bulk(&format!("key{i:05}"))).await;
        tokio::time::sleep(TRICKLE_PAUSE).await;
    }
    let elapsed = started.elapsed();
    let cpu = (cpu_ticks(node_pid) - cpu_before) as f64 / clock_ticks_per_second();
    let share = cpu / elapsed.as_secs_f64();
    assert!(
        share < TRICKLE_CPU_SHARE_MAX,
        "the node used {cpu:.2} s of CPU while the last {ARGS_TRICKLED} arguments arrived \
         over {elapsed:?}"
    );

    let reply = conn.reply().await.expect("the MGET reply");
    let expected_head = format!(
        "*{count}\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$-1\r\n$5\r\nseven\r\n$-1\r\n"
    );
    assert!(reply.starts_with(expected_head.as_bytes()));
    assert_eq!(reply.len(), expected_head.len() + (count - 9) * 5);
    assert_node_serves_and_cluster_commits(&cluster, node).await;
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The request read timeout the node runs with here, in milliseconds.
const REQUEST_READ_TIMEOUT_MS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_left_hanging_or_trickled_are_cut_off() {
    let timeout = REQUEST_READ_TIMEOUT_MS.to_string();
    let cluster = cluster_with(3, &["--redis-request-read-timeout-ms", &timeout]).await;
    let node = 2;
    let addr = cluster.nodes[&node].redis_addr.clone();

    // Stops in the middle of a value.
    let mut hanging = Resp::connect(&addr).await;
    hanging
        .send(b"*3\r\n$3\r\nSET\r\n$7\r\nhanging\r\n$10\r\nabc")
        .await;
    // Announces a value of 4 MB and sends none of it.
    let mut announced = Resp::connect(&addr).await;
    announced.send(b"*2\r\n$4\r\nECHO\r\n$4000000\r\n").await;
    // Keeps sending, a byte every 100 ms: never idle, but the request would take 20 s.
    let mut trickling = Resp::connect(&addr).await;
    trickling.set_nodelay();
    trickling.send(b"*2\r\n$4\r\nECHO\r\n$200\r\n").await;
    let trickle = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trickling.try_send(b"x").await.is_err() {
                break;
            }
        }
        trickling
    });

    // Meanwhile the node serves everyone else.
    let mut other = Resp::connect(&addr).await;
    assert_eq!(other.command(&["PING"]).await, "+PONG\r\n");

    assert!(
        hanging.is_closed().await,
        "a hanging request was not cut off"
    );
    assert!(
        announced.is_closed().await,
        "an announced value was waited for"
    );
    let mut trickling = trickle.await.unwrap();
    assert!(
        trickling.is_closed().await,
        "a trickled request was not cut off"
    );

    assert_eq!(other.command(&["GET", "hanging"]).await, "$-1\r\n");
    assert_node_serves_and_cluster_commits(&cluster, node).await;
}

/// Connections opened and left idle: more than the node serves at once (1,024).
const IDLE_CONNECTIONS: usize = 2_000;
/// The idle timeout the node runs with here, in milliseconds.
const IDLE_TIMEOUT_MS: u64 = 1_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_free_their_places() {
    let files_needed = IDLE_CONNECTIONS as u64 + 200;
    if !raise_open_files_limit(files_needed) {
        eprintln!("NOTICE: the open files limit is below {files_needed}; test skipped");
        return;
    }
    let timeout = IDLE_TIMEOUT_MS.to_string();
    let cluster = cluster_with(3, &["--redis-idle-timeout-ms", &timeout]).await;
    let node = 3;
    let addr = cluster.nodes[&node].redis_addr.clone();

    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        // From 127.0.0.2: thousands of ports taken on 127.0.0.1 could include one a
        // cluster starting alongside has chosen and not bound yet.
        idle.push(Resp::connect_from("127.0.0.2", &addr).await);
    }
    // Those beyond the node's limit are told so and closed at once; the others when their
    // idle timeout passes (a connection still open after WAIT fails the test).
    let mut refused = 0;
    for conn in &mut idle {
        match conn.reply().await {
            None => {}
            Some(reply) => {
                assert_eq!(reply, b"-ERR max number of clients reached\r\n");
                refused += 1;
                assert!(conn.is_closed().await);
            }
        }
    }
    assert!(refused < IDLE_CONNECTIONS, "every connection was refused");
    drop(idle);
    assert_node_serves_and_cluster_commits(&cluster, node).await;
}

/// Raises this process's soft limit of open files (which the nodes it starts inherit) to at
/// least `needed`, if the hard limit allows; whether the limit is now high enough.
fn raise_open_files_limit(needed: u64) -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return false;
        }
        if limit.rlim_cur >= needed {
            return true;
        }
        if limit.rlim_max < needed {
            return false;
        }
        limit.rlim_cur = needed;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
    }
}

/// Pipelined reads of a 1 MiB value whose replies are never read: 256 MiB of replies.
const UNREAD_GETS: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_is_cut_off() {
    let timeout = IDLE_TIMEOUT_MS.to_string();
    let cluster = cluster_with(3, &["--redis-idle-timeout-ms", &timeout]).await;
    let node = 1;
    let addr = cluster.nodes[&node].redis_addr.clone();
    let mut conn = Resp::connect(&addr).await;
    let value = "v".repeat(1 << 20);
    set_until_ok(&mut conn, "big", &value).await;
    conn.send(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(UNREAD_GETS))
        .await;
    // The node writes until the socket's buffers are full, then gives up on the client
    // after the idle timeout and closes its end.
    let client_port = conn.local_port();
    wait_for_server_socket(port_of(&addr), client_port, "the node to close", |s| {
        s.is_none_or(|s| s.state != TCP_ESTABLISHED)
    })
    .await;
    let (_, peak) = memory_bytes(pid(&cluster, node));
    assert!(
        peak < NODE_RSS_BYTES_MAX,
        "node {node} reached {peak} bytes resident"
    );
    drop(conn);
    assert_node_serves_and_cluster_commits(&cluster, node).await;
}

/// Connections that each move megabytes once and then stay open, idle.
const LARGE_THEN_IDLE_CONNECTIONS: usize = 60;
/// Values of one large `MGET` reply (one key, named this many times), each just under the
/// size from which a reply shares a value instead of copying it: the reply is built in the
/// connection's own buffer.
const SMALL_VALUES: usize = 400;
const SMALL_VALUE_BYTES: usize = 15 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_keep_the_buffers_of_large_requests_and_replies() {
    let cluster = cluster(3).await;
    let node = 2;
    let addr = cluster.nodes[&node].redis_addr.clone();
    let mut setup = Resp::connect(&addr).await;
    set_until_ok(&mut setup, "small", &"s".repeat(SMALL_VALUE_BYTES)).await;
    let mut mget = vec!["MGET"];
    mget.extend(std::iter::repeat_n("small", SMALL_VALUES));
    let echo = "e".repeat(3 << 20);

    // Each connection's buffer grows to megabytes (a 3 MiB request, or a 6 MB reply);
    // kept by every idle connection, they would add up to about 360 MiB.
    let mut open = Vec::with_capacity(LARGE_THEN_IDLE_CONNECTIONS);
    for i in 0..LARGE_THEN_IDLE_CONNECTIONS {
        let mut conn = Resp::connect(&addr).await;
        let reply = match i % 2 {
            0 => conn.command(&["ECHO", &echo]).await,
            _ => conn.command(&mget).await,
        };
        let bulk_bytes = |len: usize| format!("${len}\r\n").len() + len + 2;
        let expected_bytes = match i % 2 {
            0 => bulk_bytes(echo.len()),
            _ => {
                format!("*{SMALL_VALUES}\r\n").len() + SMALL_VALUES * bulk_bytes(SMALL_VALUE_BYTES)
            }
        };
        assert_eq!(reply.len(), expected_bytes, "reply {i}");
        open.push(conn);
    }
    assert_node_serves_and_cluster_commits(&cluster, node).await;
    drop(open);
}
