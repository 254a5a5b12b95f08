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

/// A request as RESP.
fn resp(words: &[&str]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        request.extend_from_slice(format!("${}\r\n{word}\r\n", word.len()).as_bytes());
    }
    request
}

fn refused(reply: &str) -> bool {
    reply.starts_with("-ERR reply of ") && reply.contains("(reply_bytes_max)")
}

/// KEYS over a key space, SCAN with a huge COUNT, LRANGE and HGETALL of large collections,
/// and the same inside a transaction are bounded like MGET (the budget here is the smallest
/// allowed, 64 KiB, against 100 KB of keys and elements); a pop whose answer would not fit
/// pops nothing; a transaction larger than one log entry takes is refused when queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_grow_with_the_data_are_bounded_and_transactions_fit_one_entry() {
    // One node: the file's other tests run at the same time, and the budget is the node's.
    let cluster = common::cluster_with(1, &["--reply-bytes-max", "65536"]).await;
    let node = 1;
    let node_pid = pid(&cluster, node);
    let mut conn = Resp::connect(&cluster.nodes[&node].redis_addr).await;
    let pad = "p".repeat(1_000);
    let keys: Vec<String> = (0..100).map(|i| format!("key:{i}:{pad}")).collect();
    let mut mset = vec!["MSET"];
    for key in &keys {
        mset.extend([key.as_str(), "v"]);
    }
    assert_eq!(conn.command(&mset).await, "+OK\r\n");
    let mut rpush = vec!["RPUSH", "list"];
    let mut hset = vec!["HSET", "hash"];
    for key in &keys {
        rpush.push(key);
        hset.extend([key.as_str(), "v"]);
    }
    assert_eq!(conn.command(&rpush).await, ":100\r\n");
    assert_eq!(conn.command(&hset).await, ":100\r\n");

    for request in [
        &["KEYS", "*"][..],
        &["SCAN", "0", "COUNT", "1000000"],
        &["LRANGE", "list", "0", "-1"],
        &["HGETALL", "hash"],
        &["HKEYS", "hash"],
        &["LPOP", "list", "100"],
    ] {
        conn.send(&resp(request)).await;
        let reply = within_memory_bound(node_pid, conn.reply()).await.unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(refused(&reply), "{request:?} answered {reply}");
    }
    assert_eq!(conn.command(&["LLEN", "list"]).await, ":100\r\n");
    // Within the budget, and SCAN a little at a time.
    let reply = conn.command(&["LRANGE", "list", "0", "9"]).await;
    assert!(reply.starts_with("*10\r\n"), "{reply}");
    let mut scanned = 0;
    let mut cursor = String::from("0");
    loop {
        conn.send(&resp(&["SCAN", &cursor, "COUNT", "10"])).await;
        let reply = String::from_utf8(conn.reply().await.unwrap()).unwrap();
        let mut lines = reply.split("\r\n");
        cursor = lines.nth(2).unwrap().to_string();
        scanned += reply.matches("key:").count();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(scanned, 100);

    // Inside a transaction, the answer that does not fit is an error in its place.
    assert_eq!(conn.command(&["MULTI"]).await, "+OK\r\n");
    assert_eq!(
        conn.command(&["LRANGE", "list", "0", "-1"]).await,
        "+QUEUED\r\n"
    );
    assert_eq!(conn.command(&["INCR", "counter"]).await, "+QUEUED\r\n");
    conn.send(&resp(&["EXEC"])).await;
    let reply = String::from_utf8(conn.reply().await.unwrap()).unwrap();
    assert!(reply.starts_with("*2\r\n-ERR reply of "), "{reply}");
    assert!(reply.ends_with(":1\r\n"), "{reply}");

    // A native client cannot raise the budget: the leader lowers the one a batch carries to
    // its own.
    let keys = raft_cli::kv::ReadOp::Keys {
        pattern: Bytes::from_static(b"*"),
    };
    let batch = raft_cli::kv::Batch {
        ops: vec![raft_cli::kv::Op::Read(keys)],
        watched: Vec::new(),
        transaction: true,
        reply_bytes_max: u64::MAX,
    };
    let request = Request::Write(raft_cli::kv::KvCommand::Redis(batch));
    let addr = cluster.addr(node).to_string();
    match cluster.client().call_at(&addr, &request).await {
        Ok(Reply::Write(raft_cli::kv::KvResponse::Answer(raft_cli::kv::Answer::Array(items)))) => {
            let refused = matches!(
                &items[..],
                [raft_cli::kv::Answer::Error(e)] if e.contains("reply_bytes_max")
            );
            assert!(refused, "KEYS answered {} items", items.len());
        }
        Ok(other) => {
            let shown: String = format!("{other:?}").chars().take(200).collect();
            panic!("KEYS through the native port answered {shown}")
        }
        Err(e) => panic!("KEYS through the native port failed: {e}"),
    }

    // A transaction whose arguments would not fit one log entry.
    let large = "x".repeat(3 << 20);
    assert_eq!(conn.command(&["MULTI"]).await, "+OK\r\n");
    let reply = conn.command(&["SET", "large", &large]).await;
    assert!(reply.starts_with("-ERR transaction too large"), "{reply}");
    assert_eq!(
        conn.command(&["EXEC"]).await,
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(conn.command(&["EXISTS", "large"]).await, ":0\r\n");
    assert_node_serves_and_cluster_commits(&cluster, node).await;
}
