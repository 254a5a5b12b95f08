//! `raft backup` writes a consistent snapshot of a running cluster to a file; `raft restore`
//! prepares the data directories of a new cluster that starts with exactly that state. A
//! damaged, truncated or foreign file is refused with a clear error and leaves nothing.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::{b, cluster, cluster_prepared, member_list, put_until_done, run_raft, WAIT};
use raft_cli::client::ClusterClient;
use raft_cli::local::LocalCluster;
use raft_cli::proto::{Reply, Request};

/// Keys written before the backup; the test nodes snapshot every 200 entries, so the
/// backup's snapshot holds keys whose entries were compacted away.
const KEYS_BEFORE: usize = 300;
/// Keys written (some overwritten) after the backup, which the restored cluster must not
/// have.
const KEYS_AFTER: std::ops::Range<usize> = 250..400;
/// The key deleted before the backup, and the one deleted after it.
const DELETED_BEFORE: usize = 7;
const DELETED_AFTER: usize = 3;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key-{i:06}"))
}

fn value(when: &str, i: usize) -> Bytes {
    Bytes::from(format!("{when}-{i}-{}", "x".repeat(64)))
}

/// What the cluster held when the backup was taken.
fn expected_at_backup(i: usize) -> Option<Bytes> {
    (i < KEYS_BEFORE && i != DELETED_BEFORE).then(|| value("before", i))
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `raft backup FILE --json` against `cluster`; the parsed summary.
fn backup(cluster: &LocalCluster, file: &Path, extra: &[&str]) -> serde_json::Value {
    let file = file.to_str().unwrap();
    let args: Vec<&str> = ["backup", file, "--json"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    let (code, out, err) = run_raft(Some(&member_list(cluster)), &args);
    assert_eq!(code, 0, "raft backup: {out}{err}");
    json(&out)
}

/// `raft restore` of `file` into each node's data directory of the (not yet started) `new`.
fn restore_into(new: &LocalCluster, file: &Path, index: u64) {
    for node in new.nodes.values() {
        let (code, out, err) = run_raft(
            None,
            &[
                "restore",
                file.to_str().unwrap(),
                "--data-dir",
                node.data_dir.to_str().unwrap(),
                "--id",
                &node.id.to_string(),
                "--peers",
                new.peers(),
                "--json",
            ],
        );
        assert_eq!(code, 0, "raft restore: {out}{err}");
        assert_eq!(json(&out)["index"].as_u64(), Some(index), "{out}");
    }
}

async fn get_all(client: &ClusterClient, keys: &[Bytes]) -> Vec<Option<Bytes>> {
    let mut values = Vec::new();
    for chunk in keys.chunks(100) {
        values.extend(
            client
                .get_many(chunk.to_vec())
                .await
                .expect("linearizable read"),
        );
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_with_exactly_its_state() {
    let old = cluster(3).await;
    let old_client = old.client();
    for i in 0..KEYS_BEFORE {
        put_until_done(&old, key(i), value("before", i)).await;
    }
    assert!(old_client.delete(key(DELETED_BEFORE)).await.unwrap());
    let committed = old_client.leader_status().await.unwrap().commit_index;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.backup");
    let summary = backup(&old, &file, &[]);
    let (index, term) = (
        summary["index"].as_u64().unwrap(),
        summary["term"].as_u64().unwrap(),
    );
    assert!(
        index >= committed,
        "the backup at {index} misses writes committed by {committed}"
    );
    let file_bytes = std::fs::metadata(&file).unwrap().len();
    assert_eq!(
        summary["file_bytes"].as_u64(),
        Some(file_bytes),
        "{summary}"
    );
    assert!(summary["data_bytes"].as_u64().unwrap() > (KEYS_BEFORE * 64) as u64);
    // A backup never overwrites a file.
    let (code, _, err) = run_raft(
        Some(&member_list(&old)),
        &["backup", file.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists"), "{err}");

    for i in KEYS_AFTER {
        put_until_done(&old, key(i), value("after", i)).await;
    }
    assert!(old_client.delete(key(DELETED_AFTER)).await.unwrap());

    let new = cluster_prepared(3, &[], |new| restore_into(new, &file, index)).await;
    let client = new.client();
    let keys: Vec<Bytes> = (0..KEYS_AFTER.end).map(key).collect();
    let values = get_all(&client, &keys).await;
    for (i, got) in values.into_iter().enumerate() {
        assert_eq!(got, expected_at_backup(i), "key {i}");
    }
    let count = match client.call(&Request::DbSize).await.unwrap() {
        Reply::Count(count) => count,
        other => panic!("{other:?}"),
    };
    assert_eq!(count, (KEYS_BEFORE - 1) as u64, "keys beyond the backup's");

    // The new cluster is its own: its members, a leader in a later term, and it takes
    // writes, which every member applies after the backup's index.
    let leader = client.leader_status().await.unwrap();
    assert!(
        leader.term > term,
        "term {} after a backup of term {term}",
        leader.term
    );
    let members: Vec<&str> = leader.members.iter().map(|m| m.addr.as_str()).collect();
    let addrs: Vec<&str> = new.nodes.values().map(|n| n.addr.as_str()).collect();
    assert_eq!(members, addrs);
    put_until_done(&new, b("written-after-restore"), b("yes")).await;
    let commit = client.leader_status().await.unwrap().commit_index;
    assert!(commit > index);
    for node in new.nodes.values() {
        let status = new.wait_applied(node.id, commit, WAIT).await.unwrap();
        assert!(
            status.snapshot_index >= index,
            "node {}: {status:?}",
            node.id
        );
        let reply = client
            .call_at(
                &node.addr,
                &Request::Get {
                    keys: vec![b("written-after-restore"), key(0)],
                },
            )
            .await
            .unwrap();
        assert_eq!(
            reply,
            Reply::Values(vec![Some(b("yes")), expected_at_backup(0)])
        );
    }
}

/// The restore of `file` into a new directory: exit code, stderr, and whether anything was
/// left in `parent` (the data directory or a temporary one).
fn restore_leftovers(file: &Path, parent: &Path) -> (i32, String, Vec<String>) {
    let data_dir = parent.join("node1");
    let (code, out, err) = run_raft(
        None,
        &[
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--id",
            "1",
            "--peers",
            "1=127.0.0.1:1",
        ],
    );
    let left: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    (code, format!("{out}{err}"), left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_truncated_backup_is_refused_with_a_clear_error() {
    let cluster = cluster(1).await;
    for i in 0..50 {
        put_until_done(&cluster, key(i), value("before", i)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.backup");
    let summary = backup(&cluster, &file, &["--node", cluster.addr(1)]);
    assert_eq!(summary["node_id"].as_u64(), Some(1));
    let good = std::fs::read(&file).unwrap();
    let data_bytes = summary["data_bytes"].as_u64().unwrap() as usize;
    let header_bytes = good.len() - data_bytes;

    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated in its data",
            good[..header_bytes + data_bytes / 2].to_vec(),
            "truncated",
        ),
        (
            "truncated in its header",
            good[..header_bytes / 2].to_vec(),
            "truncated",
        ),
        (
            "not a backup",
            b"#!/bin/sh\necho hello\n".to_vec(),
            "not a raft backup file",
        ),
    ];
    let mut data_flipped = good.clone();
    data_flipped[header_bytes + data_bytes / 3] ^= 0x10;
    cases.push((
        "a bit flipped in its data",
        data_flipped,
        "does not match the checksum",
    ));
    let mut header_flipped = good.clone();
    header_flipped[30] ^= 0x01;
    cases.push((
        "a bit flipped in its header",
        header_flipped,
        "header damaged",
    ));
    let mut longer = good.clone();
    longer.extend_from_slice(b"junk");
    cases.push(("with bytes after its data", longer, "after the end"));

    for (what, bytes, message) in cases {
        let parent = tempfile::tempdir().unwrap();
        let damaged = dir.path().join("damaged.backup");
        std::fs::write(&damaged, &bytes).unwrap();
        let (code, output, left) = restore_leftovers(&damaged, parent.path());
        assert_eq!(code, 2, "{what}: {output}");
        assert!(output.contains(message), "{what}: {output}");
        assert!(left.is_empty(), "{what}: left {left:?}");
    }
    // The intact file restores: the refusals were the damage's.
    let parent = tempfile::tempdir().unwrap();
    let (code, output, left) = restore_leftovers(&file, parent.path());
    assert_eq!(code, 0, "{output}");
    assert_eq!(left, vec!["node1".to_string()]);
    // Restoring over a directory that holds something is refused.
    let (code, output, _) = restore_leftovers(&file, parent.path());
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("not empty"), "{output}");
}
