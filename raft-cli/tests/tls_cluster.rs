//! A cluster of `raft node` processes with TLS and mutual authentication: it elects a leader
//! and serves the native client, the `raft` client commands and `redis-cli --tls` (skipped
//! with a notice where redis-cli is missing); a client without TLS is refused, and one
//! without a certificate where `--tls-client-certs` is `required`; a node with a certificate
//! from another CA, or without TLS, cannot join, and both sides log why; a node with a
//! certificate from the cluster's CA joins. Certificates are made at run time (rcgen).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{b, binary, cluster_with_tls, dump_logs};
use raft_cli::client::{ClientError, ClusterClient};
use raft_cli::config::CLUSTER_ID_DEFAULT;
use raft_cli::local::{LocalCluster, LocalTls, NodeTlsFiles};
use raft_cli::tls::TlsClientCerts;
use raft_core::NodeId;
use raft_net_tcp::tls::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::time::{sleep, Instant};

/// How long a refused node is watched: its join is retried every 500 ms.
const REFUSED_FOR: Duration = Duration::from_secs(3);

/// A certificate authority writing its files into a directory.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
    name: String,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Writes a certificate for 127.0.0.1 (server and client use) and its key as
    /// `{who}.pem` and `{who}.key`; returns their paths.
    fn issue(&self, who: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, who);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_file, key_file) = (
            self.dir.join(format!("{who}.pem")),
            self.dir.join(format!("{who}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }

    /// Files for node `id`, from this CA, trusting `trusted`.
    fn node_files(&self, id: NodeId, trusted: &Ca, client_certs: TlsClientCerts) -> NodeTlsFiles {
        let (cert, key) = self.issue(&format!("{}-node{id}", self.name));
        NodeTlsFiles {
            cert,
            key,
            ca: trusted.ca_file(),
            client_certs,
        }
    }
}

fn path(file: &Path) -> &str {
    file.to_str().expect("a UTF-8 temporary path")
}

/// Runs the `raft` binary with `args`; its stdout, or a panic with its output.
fn raft(args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
        .output()
        .expect("raft runs");
    assert!(output.status.success(), "raft {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Runs redis-cli against `addr` with `args`; its trimmed stdout and whether it succeeded.
/// An answer that says to retry (no leader during an election, which a loaded machine can
/// cause at any time) is retried for up to [`common::WAIT`]; every command here is
/// idempotent.
fn redis_cli(addr: &str, tls: &[&str], args: &[&str]) -> (String, bool) {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let output = Command::new("redis-cli")
            .args(["-h", host, "-p", port])
            .args(tls)
            .args(args)
            .output()
            .expect("redis-cli runs");
        let stdout = String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string();
        let retry = ["NOLEADER", "TRYAGAIN", "UNKNOWN"]
            .iter()
            .any(|code| stdout.starts_with(code));
        if !retry || std::time::Instant::now() > deadline {
            return (stdout, output.status.success());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The error of a write through `client`, which must fail.
async fn refused(client: ClusterClient) -> String {
    let client = client.with_timeout_ms(1_000);
    match client.put(b("never"), b("written")).await {
        Err(ClientError::NoLeader { last, .. }) => last,
        other => panic!("a refused client got {other:?}"),
    }
}

/// Waits until `text` is in node `id`'s log.
async fn wait_for_log(cluster: &LocalCluster, id: NodeId, text: &str) {
    let deadline = Instant::now() + common::WAIT;
    while !cluster.log_tail(id, 200).contains(text) {
        if Instant::now() > deadline {
            dump_logs(cluster);
            panic!("node {id} never logged {text:?}");
        }
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_its_clients_and_refuses_nodes_and_clients_without_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_ca = Ca::new(dir.path(), "cluster");
    let other_ca = Ca::new(dir.path(), "other");
    let (client_cert, client_key) = cluster_ca.issue("client");
    let client_tls = TlsConfig::client_from_files(
        &cluster_ca.ca_file(),
        Some((client_cert.as_path(), client_key.as_path())),
    )
    .unwrap();
    // Node 3 lets clients in without a certificate (--tls-client-certs optional).
    let client_certs = |id| match id {
        3 => TlsClientCerts::Optional,
        _ => TlsClientCerts::Required,
    };
    let nodes = (1..=3)
        .map(|id| (id, cluster_ca.node_files(id, &cluster_ca, client_certs(id))))
        .collect::<BTreeMap<_, _>>();
    let tls = LocalTls {
        nodes,
        client: client_tls,
    };
    let mut cluster = cluster_with_tls(3, &[], Some(tls)).await;

    // The native client, with the client certificate.
    let client = cluster.client();
    client.put(b("greeting"), b("hello")).await.unwrap();
    assert_eq!(client.get(b("greeting")).await.unwrap(), Some(b("hello")));
    let leader = client.leader_status().await.unwrap();
    let leader_addr = cluster.addr(leader.id).to_string();
    let addrs: Vec<String> = cluster.nodes.values().map(|n| n.addr.clone()).collect();

    // The client commands, with the TLS flags.
    let members = addrs.join(",");
    let ca_file = cluster_ca.ca_file();
    let tls_flags = [
        "--tls-ca",
        path(&ca_file),
        "--tls-cert",
        path(&client_cert),
        "--tls-key",
        path(&client_key),
    ];
    let with_tls = |command: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(["--cluster".to_string(), members.clone()]);
        args.extend(tls_flags.iter().map(|s| s.to_string()));
        args
    };
    let put = with_tls(&["put", "cli-key", "cli-value"]);
    assert_eq!(
        raft(&put.iter().map(String::as_str).collect::<Vec<_>>()).trim(),
        "OK"
    );
    let status = with_tls(&["status"]);
    assert!(raft(&status.iter().map(String::as_str).collect::<Vec<_>>()).contains("leader"));
    let bench = with_tls(&["bench", "--ops", "200", "--clients", "4"]);
    raft(&bench.iter().map(String::as_str).collect::<Vec<_>>());

    // Clients without TLS, or without a certificate, are refused at the handshake.
    let plaintext = ClusterClient::new(addrs.clone(), CLUSTER_ID_DEFAULT);
    let why = refused(plaintext).await;
    assert!(why.contains("accepts TLS connections only"), "{why}");
    // Without a certificate: refused by node 1, served by node 3 (--tls-client-certs
    // optional; it forwards writes to the leader with its own certificate).
    let no_cert = TlsConfig::client_from_files(&cluster_ca.ca_file(), None).unwrap();
    let no_cert = ClusterClient::new(addrs.clone(), CLUSTER_ID_DEFAULT).with_tls(Some(no_cert));
    let why = no_cert
        .status_at(cluster.addr(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        why.contains("requires a certificate signed by the cluster's CA"),
        "{why}"
    );
    no_cert.status_at(cluster.addr(3)).await.unwrap();

    // redis-cli over TLS: with the client certificate on node 1; without one, refused there
    // and served by node 3, which does not require one.
    if Command::new("redis-cli").arg("--version").output().is_err() {
        eprintln!("NOTICE: redis-cli not found (apt-get install redis-tools); its part skipped");
    } else {
        let (strict, lenient) = (&cluster.nodes[&1].redis_addr, &cluster.nodes[&3].redis_addr);
        let ca = path(&ca_file);
        let full = [
            "--tls",
            "--cacert",
            ca,
            "--cert",
            path(&client_cert),
            "--key",
            path(&client_key),
        ];
        assert_eq!(
            redis_cli(strict, &full, &["SET", "via-redis", "tls"]),
            ("OK".into(), true)
        );
        assert_eq!(
            redis_cli(strict, &full, &["GET", "cli-key"]),
            ("cli-value".into(), true)
        );
        let server_auth_only = ["--tls", "--cacert", ca];
        let (answer, _) = redis_cli(strict, &server_auth_only, &["GET", "via-redis"]);
        assert_ne!(
            answer, "tls",
            "a redis client without a certificate was served"
        );
        let lenient_get = redis_cli(lenient, &server_auth_only, &["GET", "via-redis"]);
        assert_eq!(lenient_get, ("tls".into(), true));
        let (answer, _) = redis_cli(lenient, &[], &["GET", "via-redis"]);
        assert_ne!(answer, "tls", "a plaintext redis client was served");
        assert_eq!(client.get(b("via-redis")).await.unwrap(), Some(b("tls")));
    }

    // Node 4 holds a certificate from another CA (and trusts the cluster's): the members
    // refuse it, and it learns that its certificate was refused.
    cluster
        .set_node_tls(
            4,
            other_ca.node_files(4, &cluster_ca, TlsClientCerts::Required),
        )
        .unwrap();
    cluster.start_joining(4, &leader_addr).unwrap();
    // Node 5 has no TLS at all.
    cluster.start_joining(5, &leader_addr).unwrap();
    wait_for_log(&cluster, 4, "refused our certificate").await;
    wait_for_log(&cluster, leader.id, "UnknownIssuer").await;
    wait_for_log(&cluster, 5, "accepts TLS connections only").await;
    wait_for_log(&cluster, leader.id, "sent a plaintext hello").await;
    sleep(REFUSED_FOR).await;
    let members = client.leader_status().await.unwrap().members;
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "no refused node became a member"
    );
    for id in [4, 5] {
        assert!(
            !cluster.nodes.get_mut(&id).unwrap().has_exited(),
            "node {id} keeps trying"
        );
    }

    // Node 6 holds a certificate from the cluster's CA: it joins over TLS (the leader checks
    // its certificate against the address it joined with), catches up and is promoted.
    let files = cluster_ca.node_files(6, &cluster_ca, TlsClientCerts::Required);
    cluster.set_node_tls(6, files).unwrap();
    cluster.start_joining(6, &leader_addr).unwrap();
    let deadline = Instant::now() + common::WAIT;
    loop {
        let status = client.leader_status().await.unwrap();
        if status.members.iter().any(|m| m.id == 6 && m.voter) && !status.joint {
            break;
        }
        if Instant::now() > deadline {
            dump_logs(&cluster);
            panic!("node 6 did not join");
        }
        sleep(Duration::from_millis(50)).await;
    }
    let commit = client.leader_status().await.unwrap().commit_index;
    cluster.wait_applied(6, commit, common::WAIT).await.unwrap();
    assert_eq!(client.get(b("greeting")).await.unwrap(), Some(b("hello")));
    cluster.stop_all().unwrap();
}
