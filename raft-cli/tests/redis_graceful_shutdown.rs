//! SIGTERM stops a node's Redis endpoint at a request boundary: every request the node has
//! read is executed and answered before the connection closes (here, pipelined writes
//! forwarded to the leader; before, the connection was aborted in the middle of them), a
//! request that is only half there is not waited for, and the node exits on its own.

mod common;

use common::{cluster, pid, port_of, wait_for_server_socket, Resp};

/// Writes pipelined in one segment (well under the 16 KiB a connection reads at a time, so
/// the node receives them all in one read).
const PIPELINED_WRITES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_request_received_then_closes() {
    let mut cluster = cluster(3).await;
    let leader = cluster.client().leader_status().await.unwrap().id;
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let addr = cluster.nodes[&follower].redis_addr.clone();

    let mut half = Resp::connect(&addr).await;
    half.send(b"*2\r\n$4\r\nINCR\r\n$7\r\ncoun").await;
    let mut conn = Resp::connect(&addr).await;
    let pipeline = b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n".repeat(PIPELINED_WRITES);
    assert!(pipeline.len() < 16 * 1024);
    conn.send(&pipeline).await;
    // The replies to a pipeline are written together once it is done, so none has arrived
    // yet; that the node has read the requests shows in its socket's receive queue.
    wait_for_server_socket(
        port_of(&addr),
        conn.local_port(),
        "the requests read",
        |s| s.is_some_and(|s| s.unread_bytes == 0),
    )
    .await;

    // SAFETY: `kill` has no memory-safety preconditions; the pid is the cluster's own child.
    let signalled = unsafe { libc::kill(pid(&cluster, follower) as libc::pid_t, libc::SIGTERM) };
    assert_eq!(signalled, 0);

    for expected in 1..=PIPELINED_WRITES {
        let reply = conn.reply().await;
        assert_eq!(
            reply.as_deref(),
            Some(format!(":{expected}\r\n").as_bytes()),
            "reply {expected} of {PIPELINED_WRITES} after SIGTERM"
        );
    }
    assert!(conn.is_closed().await);
    assert!(half.is_closed().await);
    // It exits on its own (stop() would kill it after 10 s and fail).
    tokio::task::block_in_place(|| cluster.stop(follower)).expect("the node exits after SIGTERM");

    let survivor = cluster.nodes[&leader].redis_addr.clone();
    let mut check = Resp::connect(&survivor).await;
    let count = check.command(&["GET", "counter"]).await;
    assert_eq!(
        count,
        format!(
            "${}\r\n{PIPELINED_WRITES}\r\n",
            PIPELINED_WRITES.to_string().len()
        )
    );
}
