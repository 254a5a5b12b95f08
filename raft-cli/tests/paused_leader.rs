//! A leader paused (SIGSTOP) long enough to be replaced, then resumed (SIGCONT), as in a GC
//! pause or a stalled VM: the others elect a new leader and serve writes meanwhile, and once
//! the old leader runs again it serves no stale read and acknowledges no write on its own:
//! reads and writes sent to it see the new leader's state.

mod common;

use std::time::{Duration, Instant};

use common::{b, cluster, dump_logs, Resp, WAIT};
use raft_cli::client::ClusterClient;
use raft_cli::config::CLUSTER_ID_DEFAULT;

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: sending a signal to a child process this test started.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_old_leader_serves_no_stale_read() {
    let cluster = cluster(3).await;
    let old = cluster.wait_leader(WAIT).await.unwrap();
    let client = cluster.client();
    client.put(b("k"), b("before")).await.unwrap();

    let pid = cluster.nodes[&old.id].pid().expect("running");
    signal(pid, libc::SIGSTOP);
    // Only the two others are asked: the paused node would leave every request hanging.
    let others: Vec<String> = cluster
        .nodes
        .values()
        .filter(|n| n.id != old.id)
        .map(|n| n.addr.clone())
        .collect();
    let majority = ClusterClient::new(others.clone(), CLUSTER_ID_DEFAULT).with_timeout_ms(20_000);
    let deadline = Instant::now() + WAIT;
    let new_leader = loop {
        let mut found = None;
        for addr in &others {
            if let Ok(status) = majority.status_at(addr).await {
                if status.role == "leader" {
                    found = Some(status);
                }
            }
        }
        if let Some(status) = found {
            break status;
        }
        if Instant::now() > deadline {
            for addr in &others {
                eprintln!("status of {addr}: {:?}", majority.status_at(addr).await);
            }
            signal(pid, libc::SIGCONT);
            dump_logs(&cluster);
            panic!("no new leader while node {} was paused", old.id);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(new_leader.id, old.id);
    majority.put(b("k"), b("after")).await.unwrap();

    signal(pid, libc::SIGCONT);
    // Straight after the resume, before the old leader has necessarily heard of the new
    // term: it must not answer from its own (stale) state.
    let mut redis = Resp::connect(&cluster.nodes[&old.id].redis_addr).await;
    let reply = redis.command(&["GET", "k"]).await;
    assert!(
        reply == "$5\r\nafter\r\n" || reply.starts_with('-'),
        "the resumed old leader answered {reply:?}"
    );
    // Through the old leader, a write lands in the new leader's log and reads see it.
    let reply = redis.command(&["SET", "k", "resumed"]).await;
    if reply != "+OK\r\n" {
        // Only an error saying so is acceptable (no leader known yet, or outcome unknown).
        assert!(reply.starts_with('-'), "{reply:?}");
    } else {
        assert_eq!(majority.get(b("k")).await.unwrap(), Some(b("resumed")));
    }
    cluster.wait_leader(WAIT).await.unwrap();
    let value = client.get(b("k")).await.unwrap();
    assert!(
        value == Some(b("after")) || value == Some(b("resumed")),
        "{value:?}"
    );
}
