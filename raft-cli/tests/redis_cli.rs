//! The real `redis-cli` (Debian package redis-tools) against a cluster: SET, GET, the IFEQ
//! compare-and-set, a hash and a deadline. Skipped, with a notice, where redis-cli is not
//! installed.

mod common;

use std::process::Command;

use common::cluster;

fn redis_cli(addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let output = Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_set_get_and_ifeq() {
    if Command::new("redis-cli").arg("--version").output().is_err() {
        eprintln!("NOTICE: redis-cli not found (apt-get install redis-tools); test skipped");
        return;
    }
    let cluster = cluster(3).await;
    let addrs: Vec<String> = cluster
        .nodes
        .values()
        .map(|n| n.redis_addr.clone())
        .collect();
    assert_eq!(redis_cli(&addrs[0], &["SET", "greeting", "hello"]), "OK");
    for addr in &addrs {
        assert_eq!(redis_cli(addr, &["GET", "greeting"]), "hello");
    }
    assert_eq!(
        redis_cli(&addrs[1], &["SET", "greeting", "bye", "IFEQ", "hello"]),
        "OK"
    );
    assert_eq!(
        redis_cli(&addrs[2], &["SET", "greeting", "again", "IFEQ", "hello"]),
        ""
    );
    assert_eq!(redis_cli(&addrs[2], &["GET", "greeting"]), "bye");
    assert!(redis_cli(&addrs[0], &["INFO"]).contains("raft_role:"));
    // A hash and a deadline, as redis-cli prints them.
    assert_eq!(redis_cli(&addrs[1], &["HSET", "user", "name", "ada"]), "1");
    assert_eq!(redis_cli(&addrs[2], &["HGETALL", "user"]), "name\nada");
    assert_eq!(redis_cli(&addrs[0], &["EXPIRE", "user", "100"]), "1");
    assert_eq!(redis_cli(&addrs[1], &["TYPE", "user"]), "hash");
    let ttl: i64 = redis_cli(&addrs[2], &["TTL", "user"]).parse().unwrap();
    assert!((98..=100).contains(&ttl), "TTL {ttl}");
}
