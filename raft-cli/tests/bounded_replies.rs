//! A small request must not make a large reply: `SET` a value of about 4 MiB, then ask for
//! it 1,500 times in one 16 KB `MGET` (or one native `Get`). Before replies had a budget,
//! the node copied the value once per key while building the reply and grew to gigabytes.
//! Now the request is refused with an error before any reply is built, the node's resident
//! memory stays under 256 MiB throughout (sampled every 10 ms; a node past it is killed),
//! and the node and the cluster keep serving. A reply within the budget is still served,
//! from the stored values.

mod common;

use bytes::Bytes;
use common::{
    assert_node_serves_and_cluster_commits, cluster, pid, put_until_done, set_until_ok,
    within_memory_bound, Resp,
};
use raft_cli::client::ClientError;
use raft_cli::proto::{Reply, Request, ServiceError};

/// Keys named in the amplified request, as in the report that found the problem.
const AMPLIFIED_KEYS: usize = 1_500;
/// Bytes of the large value: as large as a value gets (a log entry holds at most 4 MiB,
/// the key and the command's encoding included).
const LARGE_VALUE_BYTES: usize = (4 << 20) - 1024;

fn large_value() -> String {
    "v".repeat(LARGE_VALUE_BYTES)
}

/// `MGET` of `key` `count` times, as RESP.
fn mget(key: &str, count: usize) -> Vec<u8> {
    let mut request = format!("*{}\r\n$4\r\nMGET\r\n", count + 1).into_bytes();
    for _ in 0..count {
        request.extend_from_slice(format!("${}\r\n{key}\r\n", key.len()).as_bytes());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amplified_mget_is_refused_and_the_node_keeps_serving() {
    let cluster = cluster(3).await;
    let node = 1;
    let node_pid = pid(&cluster, node);
    let mut conn = Resp::connect(&cluster.nodes[&node].redis_addr).await;
    let value = large_value();
    set_until_ok(&mut conn, "big", &value).await;

    let request = mget("big", AMPLIFIED_KEYS);
    assert!(request.len() < 16 * 1024);
    conn.send(&request).await;
    let reply = within_memory_bound(node_pid, conn.reply()).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("-ERR reply of ") && reply.contains("(reply_bytes_max)"),
        "{reply}"
    );

    // Within the budget: the value twice, byte for byte.
    conn.send(&mget("big", 2)).await;
    let reply = within_memory_bound(node_pid, conn.reply()).await.unwrap();
    let item = format!("${}\r\n{value}\r\n", value.len());
    assert!(reply == format!("*2\r\n{item}{item}").into_bytes());

    assert_eq!(conn.command(&["PING"]).await, "+PONG\r\n");
    assert_node_serves_and_cluster_commits(&cluster, node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amplified_read_through_the_native_client_is_refused() {
    let cluster = cluster(3).await;
    let node = 1;
    let node_pid = pid(&cluster, node);
    let client = cluster.client();
    let big = Bytes::from_static(b"big");
    put_until_done(&cluster, big.clone(), Bytes::from(large_value())).await;

    let addr = cluster.addr(node).to_string();
    let amplified = Request::Get {
        keys: vec![big.clone(); AMPLIFIED_KEYS],
    };
    let answer = within_memory_bound(node_pid, client.call_at(&addr, &amplified)).await;
    match answer {
        Err(ClientError::Refused(ServiceError::Invalid(why))) => {
            assert!(why.contains("reply_bytes_max"), "{why}")
        }
        other => panic!("the amplified read was answered with {other:?}"),
    }

    let within = Request::Get {
        keys: vec![big.clone(); 2],
    };
    match within_memory_bound(node_pid, client.call_at(&addr, &within)).await {
        Ok(Reply::Values(values)) => {
            assert_eq!(values.len(), 2);
            assert!(values
                .iter()
                .all(|v| v.as_ref().map(Bytes::len) == Some(LARGE_VALUE_BYTES)));
        }
        other => panic!("a read within the budget was answered with {other:?}"),
    }
    assert_node_serves_and_cluster_commits(&cluster, node).await;
}
