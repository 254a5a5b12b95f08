//! Malformed and oversize RESP input: a protocol error reply, the connection closed, and the
//! node keeps serving everyone else. Without a leader, writes get an error, never `+OK`.

mod common;

use std::time::Duration;

use common::{cluster, Resp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_requests_get_a_protocol_error() {
    let cluster = cluster(3).await;
    let addr = cluster.nodes[&1].redis_addr.clone();
    let long_line = vec![b'a'; 70 * 1024];
    let cases: Vec<(&[u8], &str)> = vec![
        (
            b"*x\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (b"*1\r\n+PING\r\n", "-ERR Protocol error: expected '$'\r\n"),
        (
            b"*1\r\n$-3\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$4\r\nPINGxx",
            "-ERR Protocol error: bulk string not followed by CRLF\r\n",
        ),
        (
            b"*1\r\n$999999999\r\n",
            "-ERR Protocol error: bulk length of 999999999 exceeds the limit of 4194304\r\n",
        ),
        (
            b"*99999999\r\n",
            "-ERR Protocol error: multibulk length of 99999999 exceeds the limit of 65536\r\n",
        ),
        (
            &long_line,
            "-ERR Protocol error: line of 71680 exceeds the limit of 65536\r\n",
        ),
    ];
    for (request, expected) in cases {
        let mut conn = Resp::connect(&addr).await;
        conn.send(request).await;
        let reply = conn.reply().await.expect("an error reply before the close");
        assert_eq!(String::from_utf8_lossy(&reply), expected);
        assert!(
            conn.is_closed().await,
            "connection left open after {expected}"
        );
        let mut fresh = Resp::connect(&addr).await;
        assert_eq!(fresh.command(&["PING"]).await, "+PONG\r\n");
    }
    // A value at the limit is fine; one byte more is refused before it is buffered.
    let mut conn = Resp::connect(&addr).await;
    let value = "x".repeat(1 << 20);
    assert_eq!(conn.command(&["SET", "big", &value]).await, "+OK\r\n");
    assert_eq!(
        conn.command(&["GET", "big"]).await,
        format!("${}\r\n{value}\r\n", value.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_writes_fail_with_an_error_never_ok() {
    let mut cluster = cluster(3).await;
    let survivor = cluster.nodes[&1].redis_addr.clone();
    let mut conn = Resp::connect(&survivor).await;
    assert_eq!(conn.command(&["SET", "a", "1"]).await, "+OK\r\n");
    cluster.kill(2).unwrap();
    cluster.kill(3).unwrap();
    // Let a leader among the dead notice it lost its quorum (check-quorum) or time out.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..3 {
        let reply = conn.command(&["SET", "a", "2"]).await;
        assert!(
            reply.starts_with('-'),
            "a write without a quorum answered {reply:?}"
        );
        assert!(
            reply.starts_with("-NOLEADER")
                || reply.starts_with("-UNKNOWN")
                || reply.starts_with("-TRYAGAIN"),
            "{reply:?}"
        );
        let read = conn.command(&["GET", "a"]).await;
        assert!(
            read.starts_with('-'),
            "a read without a quorum answered {read:?}"
        );
    }
    assert_eq!(conn.command(&["PING"]).await, "+PONG\r\n");
}
