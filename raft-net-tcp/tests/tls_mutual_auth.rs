//! TLS with mutual authentication (feature `tls`): members with certificates from the
//! cluster's CA talk; a peer without a certificate, with one from another CA, or with one
//! that does not name its address is refused at the handshake, and so is a plaintext peer of
//! a TLS node (and the other way round); each side learns why. The handshake timeout and the
//! frame limit apply inside TLS too. Certificates are made at run time (rcgen).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use raft_core::node::Transport;
use raft_core::NodeId;
use raft_net_tcp::handshake::{Channel, Hello, Rejection, HELLO_BYTES};
use raft_net_tcp::tls::rustls::pki_types::ServerName;
use raft_net_tcp::tls::rustls::{self, ClientConfig, RootCertStore};
use raft_net_tcp::tls::tokio_rustls::TlsConnector;
use raft_net_tcp::tls::{ClientCerts, Identity, TlsConfig};
use raft_net_tcp::{
    ClientResponse, Error, PeerAddresses, TcpClient, TcpConfig, TcpServer, TcpTransport,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep, timeout, Instant};

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }

    /// A certificate for `names` (IP addresses or DNS names), for server and client use.
    fn issue(&self, names: &[&str]) -> Identity {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap()
    }

    /// A node's configuration: a certificate for 127.0.0.1 from this CA.
    fn node_tls(&self, client_certs: ClientCerts) -> TlsConfig {
        TlsConfig::node(self.issue(&["127.0.0.1"]), &self.pem(), client_certs).unwrap()
    }
}

/// The test configuration with `tls`, and a handshake timeout long enough for a TLS
/// handshake of a debug build on a loaded machine (the common 500 ms is not, under a CPU
/// hog).
fn with_tls(mut config: TcpConfig, tls: &TlsConfig) -> TcpConfig {
    config.tls = Some(tls.clone());
    config.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
    config
}

/// See [`with_tls`].
const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// The address book a server checks peers' certificates against.
struct Book(BTreeMap<NodeId, String>);

impl PeerAddresses for Book {
    fn peer_addr(&self, node: NodeId) -> Option<String> {
        self.0.get(&node).cloned()
    }
}

/// A TLS server of node 1 that knows node 2 at 127.0.0.1 (any port: only the host is
/// checked) and serves the echo client handler.
async fn tls_server(tls: &TlsConfig) -> TestServer {
    tls_server_with(with_tls(config(1), tls)).await
}

async fn tls_server_with(config: TcpConfig) -> TestServer {
    let (recorder, messages) = Recorder::new(Duration::ZERO);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let book = Arc::new(Book(BTreeMap::from([(2, "127.0.0.1:1".to_string())])));
    let server = TcpServer::serve_with_peer_addresses(
        listener,
        config,
        recorder,
        Some(Arc::new(Echo)),
        book,
    )
    .unwrap();
    TestServer { server, messages }
}

/// A transport of node `id` with `tls`, whose only peer is node 1 at `addr`.
fn transport(id: NodeId, tls: &TlsConfig, addr: &str) -> TcpTransport {
    let transport = TcpTransport::new(with_tls(config(id), tls)).unwrap();
    transport.set_peers(&BTreeMap::from([(1, addr.to_string())]));
    transport
}

/// The error of a snapshot chunk sent through `transport` to node 1 (the chunk waits for the
/// connection, so it carries the handshake's error back).
async fn chunk_error(transport: &TcpTransport, from: NodeId) -> String {
    let sent = transport
        .send_snapshot_chunk(chunk(from, 1, 0, b"x", true))
        .await;
    format!("{:?}", sent.expect_err("the chunk is refused"))
}

async fn wait_for_failed_handshakes(server: &TcpServer, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.stats().handshakes_failed < count {
        assert!(
            Instant::now() < deadline,
            "the server counted {} failed handshakes, expected {count}",
            server.stats().handshakes_failed
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// A TLS connection made by hand (to send what no well-behaved side sends), trusting `ca`
/// and presenting no certificate.
async fn raw_tls(
    addr: &str,
    ca: &Ca,
) -> raft_net_tcp::tls::tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    #[allow(deprecated)] // the ring provider, as the crate uses
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .unwrap()
}

#[tokio::test]
async fn members_with_certificates_from_the_cluster_ca_exchange_messages_chunks_and_requests() {
    let ca = Ca::new("cluster");
    let mut server = tls_server(&ca.node_tls(ClientCerts::Required)).await;
    let addr = server.addr();
    let peer = transport(2, &ca.node_tls(ClientCerts::Required), &addr);
    peer.send(heartbeat(2, 1, 1));
    assert_eq!(server.next_message().await, heartbeat(2, 1, 1));
    let ack = peer
        .send_snapshot_chunk(chunk(2, 1, 0, &[7; 50_000], true))
        .await
        .expect("the chunk is acknowledged over TLS");
    assert_eq!(ack.from, 1);
    // A client with a certificate from the CA; a large request crosses many TLS records.
    let client_tls = TlsConfig::client(&ca.pem(), Some(ca.issue(&["client"]))).unwrap();
    let client = TcpClient::new(&addr, with_tls(config(0), &client_tls)).unwrap();
    let payload = Bytes::from(vec![5u8; 60_000]);
    let response = client.request(payload.clone()).await.unwrap();
    assert_eq!(response, ClientResponse::Ok(payload));
    // The client goes away without TLS's close_notify, as a process that exits does: a
    // close, not a failed connection.
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.server.stats().connections_open > 2 {
        assert!(
            Instant::now() < deadline,
            "the client's connection is closed"
        );
        sleep(Duration::from_millis(10)).await;
    }
    let stats = server.server.stats();
    assert_eq!((stats.handshakes_failed, stats.connections_failed), (0, 0));
    peer.shutdown();
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_unless_client_certificates_are_optional() {
    let ca = Ca::new("cluster");
    let client_tls = TlsConfig::client(&ca.pem(), None).unwrap();
    let required = tls_server(&ca.node_tls(ClientCerts::Required)).await;
    let client = TcpClient::new(required.addr(), with_tls(config(0), &client_tls)).unwrap();
    let refused = client.request(Bytes::from_static(b"hi")).await;
    assert!(
        matches!(
            refused,
            Err(Error::Handshake(Rejection::CertificateRequired {
                channel: 3
            }))
        ),
        "{refused:?}"
    );
    wait_for_failed_handshakes(&required.server, 1).await;

    let optional = tls_server(&ca.node_tls(ClientCerts::Optional)).await;
    let client = TcpClient::new(optional.addr(), with_tls(config(0), &client_tls)).unwrap();
    let response = client.request(Bytes::from_static(b"hi")).await.unwrap();
    assert_eq!(response, ClientResponse::Ok(Bytes::from_static(b"hi")));
    required.server.shutdown().await;
    optional.server.shutdown().await;
}

#[tokio::test]
async fn a_peer_without_a_certificate_is_refused_even_where_clients_need_none() {
    let ca = Ca::new("cluster");
    let mut server = tls_server(&ca.node_tls(ClientCerts::Optional)).await;
    let mut stream = raw_tls(&server.addr(), &ca).await;
    let hello = Hello::request(CLUSTER, 2, Channel::Raft);
    stream.write_all(&hello.encode()).await.unwrap();
    stream.flush().await.unwrap();
    let mut reply = [0u8; HELLO_BYTES];
    stream.read_exact(&mut reply).await.unwrap();
    let reply = Hello::decode(&reply);
    assert_eq!(
        reply.check_reply(&hello, None),
        Err(Rejection::CertificateRequired { channel: 1 })
    );
    wait_for_failed_handshakes(&server.server, 1).await;
    assert!(server.messages.try_recv().is_err());
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_peer_with_another_cas_certificate_is_refused_on_both_sides() {
    let cluster = Ca::new("cluster");
    let other = Ca::new("other");
    let mut server = tls_server(&cluster.node_tls(ClientCerts::Required)).await;
    let addr = server.addr();

    // Its certificate from another CA (it trusts ours, so it is the server that refuses).
    let intruder_tls = TlsConfig::node(
        other.issue(&["127.0.0.1"]),
        &cluster.pem(),
        ClientCerts::Required,
    )
    .unwrap();
    let intruder = transport(2, &intruder_tls, &addr);
    let error = chunk_error(&intruder, 2).await;
    assert!(
        error.contains("refused our certificate"),
        "the intruder learns that its certificate was refused: {error}"
    );
    wait_for_failed_handshakes(&server.server, 1).await;

    // It trusts only its own CA: it refuses the server's certificate itself.
    let stranger = transport(2, &other.node_tls(ClientCerts::Required), &addr);
    let error = chunk_error(&stranger, 2).await;
    assert!(
        error.contains("UnknownIssuer") && error.contains("signed by the cluster's CA"),
        "{error}"
    );
    wait_for_failed_handshakes(&server.server, 2).await;
    intruder.send(heartbeat(2, 1, 1));
    stranger.send(heartbeat(2, 1, 2));
    sleep(Duration::from_millis(300)).await;
    assert!(server.messages.try_recv().is_err(), "nothing was delivered");
    assert_eq!(intruder.peer_stats(1).unwrap().connections, 0);
    server.server.shutdown().await;
}

#[tokio::test]
async fn a_member_certificate_that_does_not_name_the_peers_address_is_refused() {
    let ca = Ca::new("cluster");
    let mut server = tls_server(&ca.node_tls(ClientCerts::Required)).await;
    let addr = server.addr();
    // Signed by the cluster's CA, but for another host than node 2's address (127.0.0.1).
    let elsewhere = TlsConfig::node(
        ca.issue(&["node9.example"]),
        &ca.pem(),
        ClientCerts::Required,
    )
    .unwrap();
    let impostor = transport(2, &elsewhere, &addr);
    let error = chunk_error(&impostor, 2).await;
    assert!(error.contains("not accepted as node 2's"), "{error}");
    // A valid member certificate, presented for a node the server does not know.
    let unknown = transport(3, &ca.node_tls(ClientCerts::Required), &addr);
    let error = chunk_error(&unknown, 3).await;
    assert!(error.contains("not accepted as node 3's"), "{error}");
    wait_for_failed_handshakes(&server.server, 2).await;
    // The same certificate is fine on the client channel: clients are not members.
    let client = TcpClient::new(&addr, with_tls(config(0), &elsewhere)).unwrap();
    assert!(client.request(Bytes::from_static(b"ok")).await.is_ok());
    assert!(server.messages.try_recv().is_err());
    server.server.shutdown().await;
}

#[tokio::test]
async fn plaintext_and_tls_sides_refuse_each_other_and_say_why() {
    let ca = Ca::new("cluster");
    let tls_node = tls_server(&ca.node_tls(ClientCerts::Required)).await;

    // A plaintext peer is told that the server requires TLS.
    let plain_peer = TcpTransport::new(config(2)).unwrap();
    plain_peer.set_peers(&BTreeMap::from([(1, tls_node.addr())]));
    let error = chunk_error(&plain_peer, 2).await;
    assert!(error.contains("accepts TLS connections only"), "{error}");
    wait_for_failed_handshakes(&tls_node.server, 1).await;

    // A TLS peer of a plaintext server learns that the server does not speak TLS.
    let plain_node = start_server(1, config(1)).await;
    let tls_peer = transport(2, &ca.node_tls(ClientCerts::Required), &plain_node.addr());
    let error = chunk_error(&tls_peer, 2).await;
    assert!(error.contains("does not speak TLS"), "{error}");
    wait_for_failed_handshakes(&plain_node.server, 1).await;
    tls_node.server.shutdown().await;
    plain_node.server.shutdown().await;
}

#[tokio::test]
async fn a_tls_handshake_that_stalls_is_cut_off_by_the_handshake_timeout() {
    let ca = Ca::new("cluster");
    let mut stalling = with_tls(config(1), &ca.node_tls(ClientCerts::Required));
    stalling.handshake_timeout_ms = 500;
    let server = tls_server_with(stalling).await;
    // The first byte of a TLS record, then nothing.
    let mut stalled = TcpStream::connect(server.addr()).await.unwrap();
    stalled.write_all(&[0x16]).await.unwrap();
    let started = Instant::now();
    assert_closed(&mut stalled, Duration::from_secs(4)).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    wait_for_failed_handshakes(&server.server, 1).await;
    server.server.shutdown().await;
}

#[tokio::test]
async fn an_oversize_frame_inside_tls_closes_the_connection() {
    let ca = Ca::new("cluster");
    let server = tls_server(&ca.node_tls(ClientCerts::Optional)).await;
    let mut stream = raw_tls(&server.addr(), &ca).await;
    let hello = Hello::request(CLUSTER, 0, Channel::Client);
    stream.write_all(&hello.encode()).await.unwrap();
    stream.flush().await.unwrap();
    let mut reply = [0u8; HELLO_BYTES];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(Hello::decode(&reply).check_reply(&hello, None), Ok(()));
    // The test configuration's frame limit is 64 KiB; announce 1 GiB.
    stream.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut sink = [0u8; 64];
    let closed = timeout(Duration::from_secs(2), async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection is closed");
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.server.stats().connections_failed == 0 {
        assert!(Instant::now() < deadline, "the failure is counted");
        sleep(Duration::from_millis(10)).await;
    }
    server.server.shutdown().await;
}

#[test]
fn a_key_that_does_not_match_its_certificate_or_a_file_without_pem_is_refused() {
    let ca = Ca::new("cluster");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let other_key = KeyPair::generate().unwrap();
    let mismatched =
        Identity::from_pem(cert.pem().as_bytes(), other_key.serialize_pem().as_bytes()).unwrap();
    let refused = TlsConfig::node(mismatched, &ca.pem(), ClientCerts::Required);
    assert!(
        matches!(refused, Err(Error::TlsConfig { .. })),
        "{refused:?}"
    );
    let no_pem = Identity::from_pem(b"not a certificate", key.serialize_pem().as_bytes());
    assert!(matches!(no_pem, Err(Error::TlsConfig { .. })), "{no_pem:?}");
    assert!(TlsConfig::client(b"", None).is_err());
    // A transport needs its own certificate.
    let client_only = TlsConfig::client(&ca.pem(), None).unwrap();
    assert!(TcpTransport::new(with_tls(config(2), &client_only)).is_err());
}
