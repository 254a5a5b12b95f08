//! The native client subcommands, run as a user would: each finds the leader itself from
//! `--cluster`, prints its answer and exits 0, or 1 for a negative answer.

mod common;

use std::process::Command;

use common::{binary, cluster};

fn raft(cluster: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(binary())
        .args(args)
        .env("RAFT_CLUSTER", cluster)
        .output()
        .expect("raft runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let code = output.status.code().unwrap_or(-1);
    assert!(code == 0 || code == 1, "raft {args:?}: {stdout}{stderr}");
    (code, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subcommands_find_the_leader_and_answer() {
    let cluster = cluster(3).await;
    // Only a follower listed: the commands must follow the redirect.
    let leader = cluster.client().leader_status().await.unwrap();
    let follower = cluster.nodes.values().find(|n| n.id != leader.id).unwrap();
    let members = follower.addr.clone();

    assert_eq!(raft(&members, &["put", "k", "v1"]), (0, "OK\n".into()));
    assert_eq!(raft(&members, &["get", "k"]), (0, "v1\n".into()));
    assert_eq!(raft(&members, &["get", "missing"]), (1, "(nil)\n".into()));
    assert_eq!(
        raft(&members, &["cas", "k", "v2", "--expected", "v1"]),
        (0, "OK (was v1)\n".into())
    );
    assert_eq!(
        raft(&members, &["cas", "k", "v3", "--expected", "v1"]),
        (1, "not written: current value is v2\n".into())
    );
    assert_eq!(raft(&members, &["delete", "k"]), (0, "deleted\n".into()));

    let (_, table) = raft(&members, &["status"]);
    let header = table.lines().next().unwrap();
    for column in [
        "id", "address", "role", "term", "commit", "applied", "match", "lag",
    ] {
        assert!(header.contains(column), "{table}");
    }
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(table.matches(" leader ").count(), 1, "{table}");

    let (_, list) = raft(&members, &["members", "list"]);
    assert_eq!(list.matches("voter").count(), 3, "{list}");
    let (_, snapshot) = raft(&members, &["snapshot"]);
    assert!(snapshot.starts_with("snapshot at index "), "{snapshot}");

    let target = follower.id.to_string();
    let (code, moved) = raft(&members, &["transfer-leader", &target]);
    assert_eq!(code, 0, "{moved}");
    let now = cluster.client().leader_status().await.unwrap();
    assert_eq!(now.id, follower.id);
}
