//! `raft node --metrics-listen`: a live 3-node cluster scraped over HTTP with a real client.
//! Every node serves exactly the metrics the README documents, with their types, in a format
//! a strict parser accepts; the counters move under load (native and Redis writes) and after
//! a leader is killed (leader changes, an election, the new leader's role); `/ready` turns 503
//! on a node cut off from its peers and 200 again once they are back.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::metrics::{http_get, scrape, Scrape};
use common::{cluster, dump_logs, set_until_ok, Resp, WAIT};
use raft_cli::local::LocalCluster;
use raft_cli::proto::Request;
use raft_cli::workload::WriteLoad;
use raft_core::NodeId;

/// Writers of the load, and writes of each.
const WRITERS: usize = 4;
const WRITES_EACH: u64 = 75;
/// The labels of snapshots built here.
const BUILT: &[(&str, &str)] = &[("kind", "built")];

/// The metric families the README's table lists, with their types.
fn documented() -> BTreeMap<String, String> {
    let readme = include_str!("../README.md");
    readme
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix("| `raft_")?.split('|');
            let name = format!("raft_{}", cells.next()?.trim().trim_end_matches('`'));
            Some((name, cells.next()?.trim().to_string()))
        })
        .collect()
}

async fn scrape_node(cluster: &LocalCluster, id: NodeId) -> Scrape {
    scrape(&cluster.nodes[&id].metrics_addr).await
}

/// Scrapes every running node.
async fn scrape_all(cluster: &LocalCluster) -> BTreeMap<NodeId, Scrape> {
    let mut scrapes = BTreeMap::new();
    for node in cluster.nodes.values().filter(|n| n.is_running()) {
        scrapes.insert(node.id, scrape(&node.metrics_addr).await);
    }
    scrapes
}

/// Waits until node `id`'s `path` answers `status`; the body then.
async fn wait_for_status(cluster: &LocalCluster, id: NodeId, path: &str, status: u16) -> String {
    let addr = &cluster.nodes[&id].metrics_addr;
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = http_get(addr, path).await;
        if answer.status == status {
            return answer.body;
        }
        if Instant::now() > deadline {
            dump_logs(cluster);
            panic!("node {id}: {path} never answered {status}; last {answer:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn role(scrape: &Scrape) -> String {
    let roles = scrape.label_values("raft_role", "role");
    let current: Vec<&String> = roles
        .iter()
        .filter(|r| scrape.value("raft_role", &[("role", r)]) == 1.0)
        .collect();
    assert_eq!(current.len(), 1, "exactly one role is 1: {roles:?}");
    current[0].clone()
}

/// `GET key` through `conn`, repeated while the node answers that it has no leader (an
/// election on a busy machine); the answer then.
async fn get_until_answered(conn: &mut Resp, key: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = conn.command(&["GET", key]).await;
        if !reply.starts_with("-NOLEADER") || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scrapes every running node until `done` holds for the scrapes (counters are published
/// every tick, and an election can come between two scrapes on a busy machine).
async fn scrape_all_when(
    cluster: &LocalCluster,
    what: &str,
    done: impl Fn(&BTreeMap<NodeId, Scrape>) -> bool,
) -> BTreeMap<NodeId, Scrape> {
    let deadline = Instant::now() + WAIT;
    loop {
        let scrapes = scrape_all(cluster).await;
        if done(&scrapes) {
            return scrapes;
        }
        if Instant::now() > deadline {
            dump_logs(cluster);
            panic!("the metrics never showed {what}: {scrapes:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader every scraped node names, if they agree and its role gauge says it leads.
fn agreed_leader(scrapes: &BTreeMap<NodeId, Scrape>) -> Option<NodeId> {
    let leader = scrapes.values().next()?.value("raft_leader_id", &[]) as NodeId;
    let agreed = scrapes
        .values()
        .all(|s| s.value("raft_leader_id", &[]) == leader as f64);
    (agreed && role(scrapes.get(&leader)?) == "leader").then_some(leader)
}

/// `name{labels}` grew from `before` to `after` by at least `by`.
fn grew(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)], by: f64) {
    let (then, now) = (before.value(name, labels), after.value(name, labels));
    assert!(
        now >= then + by,
        "{name}{labels:?} went from {then} to {now}, expected +{by}"
    );
}

/// The members other than `id`, as `peer` label values.
fn others(id: NodeId) -> Vec<String> {
    (1..=3u64)
        .filter(|p| *p != id)
        .map(|p| p.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_the_documented_metrics_and_counters_move_under_load_and_failover() {
    let mut cluster = cluster(3).await;
    let documented = documented();
    assert!(documented.len() >= 40, "the README's table: {documented:?}");
    for id in 1..=3 {
        wait_for_status(&cluster, id, "/ready", 200).await;
        let health = http_get(&cluster.nodes[&id].metrics_addr, "/health").await;
        assert_eq!(health.status, 200, "{health:?}");
    }
    let before = scrape_all_when(&cluster, "a leader reporting its peers", |s| {
        agreed_leader(s)
            .is_some_and(|l| s[&l].label_values("raft_peer_match_index", "peer").len() == 2)
    })
    .await;
    let leader = agreed_leader(&before).expect("agreed");
    for (id, scrape) in &before {
        assert_eq!(
            scrape.types, documented,
            "node {id} serves what the README lists"
        );
        let expected_role = if *id == leader { "leader" } else { "follower" };
        assert_eq!(role(scrape), expected_role, "node {id}");
        assert!(scrape.value("raft_leader_changes_total", &[]) >= 1.0);
    }

    // Load: native writes, and Redis requests on a follower (a forwarded write, a read, an
    // unknown command); then a snapshot on every node through the native port.
    let follower = if leader == 1 { 2 } else { 1 };
    let mut redis = Resp::connect(&cluster.nodes[&follower].redis_addr).await;
    set_until_ok(&mut redis, "through", "follower").await;
    let read = get_until_answered(&mut redis, "through").await;
    assert_eq!(read, "$8\r\nfollower\r\n");
    assert!(redis
        .command(&["NOSUCH"])
        .await
        .starts_with("-ERR unknown command"));
    let addrs: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();
    let report = WriteLoad::start(&addrs, WRITERS, "metrics", WRITES_EACH)
        .join()
        .await;
    let acked = report.acked.len() as f64;
    let (unknown, errors) = (report.unknown, report.errors);
    assert!(
        acked >= 100.0,
        "{acked} acked, {unknown} unknown, {errors} errors"
    );
    let last = cluster.wait_leader(WAIT).await.unwrap().last_index;
    for id in 1..=3 {
        cluster.wait_applied(id, last, WAIT).await.unwrap();
    }
    let client = cluster.client();
    for node in cluster.nodes.values() {
        client
            .call_at(&node.addr, &Request::Snapshot)
            .await
            .unwrap();
    }
    let loaded = scrape_all_when(&cluster, "the load, the snapshots and a leader", |s| {
        let caught_up = s.iter().all(|(id, s)| {
            s.value("raft_snapshots_total", BUILT) > before[id].value("raft_snapshots_total", BUILT)
                && s.value("raft_applied_index", &[]) >= last as f64
        });
        let replicated = |l: NodeId| {
            others(l).iter().all(|p| {
                s[&l]
                    .get("raft_peer_match_index", &[("peer", p)])
                    .is_some_and(|m| m >= acked)
            })
        };
        caught_up && agreed_leader(s).is_some_and(replicated)
    })
    .await;

    // Whichever node led, every acknowledged write was accepted and applied by one.
    let growth = |name: &str| -> f64 {
        (1..=3)
            .map(|id| loaded[&id].value(name, &[]) - before[&id].value(name, &[]))
            .sum()
    };
    assert!(growth("raft_proposals_accepted_total") >= acked);
    assert!(growth("raft_proposal_apply_duration_seconds_count") >= acked);
    let native_sets: f64 = (1..=3)
        .map(|id| loaded[&id].value("raft_native_requests_total", &[("command", "set")]))
        .sum();
    assert!(
        native_sets >= acked,
        "{native_sets} native sets for {acked} acked writes"
    );
    for (id, after) in &loaded {
        let before = &before[id];
        grew(before, after, "raft_commit_index", &[], acked);
        grew(before, after, "raft_entries_applied_total", &[], acked);
        grew(
            before,
            after,
            "raft_log_write_batch_entries_sum",
            &[],
            acked,
        );
        grew(before, after, "raft_log_appended_bytes_total", &[], acked);
        grew(
            before,
            after,
            "raft_log_write_duration_seconds_count",
            &[],
            1.0,
        );
        grew(
            before,
            after,
            "raft_log_fdatasync_duration_seconds_count",
            &[],
            1.0,
        );
        let appended = after.value("raft_log_appended_bytes_total", &[])
            - before.value("raft_log_appended_bytes_total", &[]);
        grew(before, after, "raft_log_written_bytes_total", &[], appended);
        grew(before, after, "raft_snapshot_bytes_total", BUILT, 1.0);
        grew(
            before,
            after,
            "raft_snapshot_duration_seconds_count",
            BUILT,
            1.0,
        );
        let snapshot_requests = [("command", "snapshot")];
        grew(
            before,
            after,
            "raft_native_requests_total",
            &snapshot_requests,
            1.0,
        );
        grew(before, after, "raft_event_loop_lag_seconds_count", &[], 1.0);
    }
    // The leader sent to both followers, and each follower answered it.
    let current = agreed_leader(&loaded).expect("agreed");
    for id in 1..=3u64 {
        let peers = if id == current {
            others(current)
        } else {
            vec![current.to_string()]
        };
        for peer in &peers {
            let labels = [("peer", peer.as_str())];
            grew(
                &before[&id],
                &loaded[&id],
                "raft_peer_messages_sent_total",
                &labels,
                1.0,
            );
            assert!(loaded[&id].value("raft_peer_connections_total", &labels) >= 1.0);
        }
    }
    let (f0, f1) = (&before[&follower], &loaded[&follower]);
    grew(
        f0,
        f1,
        "raft_redis_requests_total",
        &[("command", "set")],
        1.0,
    );
    grew(
        f0,
        f1,
        "raft_redis_requests_total",
        &[("command", "get")],
        1.0,
    );
    grew(
        f0,
        f1,
        "raft_redis_requests_total",
        &[("command", "invalid")],
        1.0,
    );
    grew(
        f0,
        f1,
        "raft_redis_request_errors_total",
        &[("kind", "err")],
        1.0,
    );
    assert_eq!(f1.value("raft_redis_connections_open", &[]), 1.0, "ours");
    drop(redis);

    // Failover: the leader is killed; the survivors count a new leadership, the new leader
    // an election, and its role gauge says so.
    cluster.kill(current).unwrap();
    let after = scrape_all_when(&cluster, "a new leader", |s| {
        agreed_leader(s).is_some_and(|l| l != current)
    })
    .await;
    let new = agreed_leader(&after).expect("agreed");
    for (id, now) in &after {
        let then = &loaded[id];
        grew(then, now, "raft_leader_changes_total", &[], 1.0);
        grew(then, now, "raft_term", &[], 1.0);
        let expected_role = if *id == new { "leader" } else { "follower" };
        assert_eq!(role(now), expected_role, "node {id}");
    }
    grew(
        &loaded[&new],
        &after[&new],
        "raft_elections_started_total",
        &[],
        1.0,
    );
    let new_peers = after[&new].label_values("raft_peer_lag_entries", "peer");
    assert_eq!(
        new_peers.len(),
        2,
        "the new leader reports both peers: {new_peers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_503_on_a_node_cut_off_from_its_peers_and_200_once_they_are_back() {
    let cluster = cluster(3).await;
    let leader = cluster.wait_leader(WAIT).await.unwrap();
    let follower = if leader.id == 1 { 2 } else { 1 };
    wait_for_status(&cluster, follower, "/ready", 200).await;
    let before = scrape_node(&cluster, follower).await;
    let others: Vec<u32> = cluster
        .nodes
        .values()
        .filter(|n| n.id != follower)
        .map(|n| n.pid().expect("running"))
        .collect();
    for pid in &others {
        signal(*pid, libc::SIGSTOP);
    }
    let why = wait_for_status(&cluster, follower, "/ready", 503).await;
    let health = http_get(&cluster.nodes[&follower].metrics_addr, "/health").await;
    let cut_off = scrape_node(&cluster, follower).await;
    for pid in &others {
        signal(*pid, libc::SIGCONT);
    }
    assert!(why.contains("no leader known"), "{why}");
    assert_eq!(health.status, 200, "alive, though not ready: {health:?}");
    assert_eq!(cut_off.value("raft_leader_id", &[]), 0.0);
    grew(&before, &cut_off, "raft_pre_votes_started_total", &[], 1.0);
    let why = wait_for_status(&cluster, follower, "/ready", 200).await;
    assert!(why.starts_with("ready: leader "), "{why}");
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: sending a signal to a child process this test started.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

/// The parser these tests rely on accepts the format and refuses what Prometheus refuses.
#[test]
fn the_parser_refuses_what_prometheus_refuses() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 2\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 3\n\
                h_sum 4.5\nh_count 3\n";
    let scrape = Scrape::parse(good).unwrap();
    assert_eq!(scrape.value("a_total", &[("y", "q\""), ("x", "1")]), 2.0);
    assert_eq!(scrape.value("h_count", &[]), 3.0);
    for bad in [
        "a 1\n",
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",
        "# TYPE a gauge\na 1\na 2\n",
        "# TYPE a gauge\na{x=\"1\" 1\n",
        "# TYPE a gauge\na{x=1} 1\n",
        "# TYPE a gauge\na one\n",
        "# TYPE a counter\na -1\n",
        "# TYPE 1a gauge\n1a 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
    ] {
        assert!(Scrape::parse(bad).is_err(), "{bad:?} was accepted");
    }
}
