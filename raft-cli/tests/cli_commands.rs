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

/// `raft bench --ops` does exactly that many acknowledged writes and reads, with clients
/// sharing fewer connections than there are clients, and `--json` prints one JSON object
/// with the fields scripts read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_a_fixed_number_of_operations_and_prints_json() {
    let cluster = cluster(3).await;
    let members = cluster
        .nodes
        .values()
        .map(|n| n.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "bench",
        "--clients",
        "8",
        "--conns",
        "3",
        "--ops",
        "400",
        "--read-ratio",
        "0.25",
        "--keys",
        "50",
        "--json",
    ];
    let (code, json) = raft(&members, &args);
    assert_eq!(code, 0, "{json}");
    let json = json.trim();
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    for field in [
        "\"clients\":8,",
        "\"conns\":3,",
        "\"ops\":400,",
        "\"errors\":0,",
        "\"unknown\":0,",
        "\"p99\":",
    ] {
        assert!(json.contains(field), "{field} missing in {json}");
    }
    let writes = json_u64(json, "writes");
    let reads = json_u64(json, "reads");
    assert_eq!(writes + reads, 400, "{json}");
    assert!(writes > 0 && reads > 0, "{json}");
    // The writes are really there: of the first 10 keys (each written about 6 times on
    // average), those that exist hold the bench's 256-byte value.
    let value = "v".repeat(256);
    let mut found = 0;
    for i in 0..10 {
        let (code, got) = raft(&members, &["get", &format!("key:{i:012}")]);
        if code == 0 {
            assert_eq!(got.trim_end(), value);
            found += 1;
        }
    }
    assert!(found > 0, "none of the first 10 keys was written");
}

fn json_u64(json: &str, field: &str) -> u64 {
    let key = format!("\"{field}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{field} in {json}"))
        + key.len();
    let digits: String = json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{field} in {json}"))
}

/// `raft status --json` and `raft members list --json` print one JSON object each that
/// scripts can parse; a member that does not answer is `down` with no numbers of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_members_list_print_json() {
    let mut cluster = cluster(3).await;
    let members = common::member_list(&cluster);
    assert_eq!(raft(&members, &["put", "k", "v"]).0, 0);

    let (_, out) = raft(&members, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    let rows = status["members"].as_array().expect("members");
    assert_eq!(rows.len(), 3, "{out}");
    let leader = status["leader"].as_u64().expect("leader");
    let leaders: Vec<u64> = rows
        .iter()
        .filter(|r| r["role"] == "leader")
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(leaders, vec![leader], "{out}");
    for row in rows {
        let id = row["id"].as_u64().unwrap();
        assert_eq!(row["address"], cluster.addr(id), "{out}");
        assert_eq!(row["voter"], true, "{out}");
        assert!(row["term"].as_u64().unwrap() >= 1, "{out}");
        assert!(row["applied_index"].as_u64().unwrap() >= 1, "{out}");
        assert!(row["match_index"].is_u64() && row["lag"].is_u64(), "{out}");
    }
    assert!(status["commit_index"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(status["joint"], false, "{out}");

    let (_, out) = raft(&members, &["members", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(list["leader"].as_u64(), Some(leader), "{out}");
    let listed: Vec<(u64, String, bool)> = list["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let id = m["id"].as_u64().unwrap();
            (
                id,
                m["address"].as_str().unwrap().to_string(),
                m["voter"] == true,
            )
        })
        .collect();
    let expected: Vec<(u64, String, bool)> = cluster
        .nodes
        .values()
        .map(|n| (n.id, n.addr.clone(), true))
        .collect();
    assert_eq!(listed, expected, "{out}");

    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(follower).unwrap();
    let (_, out) = raft(&members, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    let down = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"].as_u64() == Some(follower))
        .expect("the killed member is listed")
        .clone();
    assert_eq!(down["role"], "down", "{out}");
    assert!(
        down["term"].is_null() && down["applied_index"].is_null(),
        "{out}"
    );
}
