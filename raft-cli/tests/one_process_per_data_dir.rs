//! One `raft node` per data directory: a second node started on the data directory of a
//! running one exits at once with an error naming the directory and the running node's pid,
//! and the running node goes on serving.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{b, binary, cluster, dump_logs, WAIT};
use raft_cli::config::CLUSTER_ID_DEFAULT;
use raft_cli::local::free_addrs;

/// How often the test looks whether the second node has exited.
const POLL: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_a_data_directory_in_use_is_refused() {
    let cluster = cluster(1).await;
    let node = &cluster.nodes[&1];
    let lock_file = node.data_dir.join(raft_log::LOCK_FILE);
    let holder = std::fs::read_to_string(&lock_file).expect("the running node's lock file");
    let taken = [node.addr.as_str(), &node.redis_addr, &node.metrics_addr];
    let addrs = free_addrs(2, &taken).expect("free ports");
    let mut second = Command::new(binary())
        .arg("node")
        .args([
            "--id",
            "1",
            "--listen",
            &addrs[0],
            "--redis-listen",
            &addrs[1],
        ])
        .arg("--data-dir")
        .arg(&node.data_dir)
        .args(["--cluster-id", &CLUSTER_ID_DEFAULT.to_string()])
        .args(["--peers", &format!("1={}", addrs[0])])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second node");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait for the second node") {
            break status;
        }
        if Instant::now() >= deadline {
            second.kill().expect("kill the second node");
            second.wait().expect("reap the second node");
            dump_logs(&cluster);
            panic!("a second node runs on a data directory in use");
        }
        tokio::time::sleep(POLL).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "the second node exited with {status}: {stderr}"
    );
    let dir = node.data_dir.display().to_string();
    assert!(
        stderr.contains(&format!("locking data directory {dir}"))
            && stderr.contains(&format!("pid {}", holder.trim())),
        "{stderr}"
    );
    // The running node was not disturbed.
    cluster
        .client()
        .put(b("after"), b("refused"))
        .await
        .expect("the running node still commits writes");
}
