//! TLS with mutual authentication (feature `tls`): rustls with the `ring` provider.
//!
//! A [`TlsConfig`] in [`crate::TcpConfig::tls`] makes every connection of that transport,
//! server or client a TLS connection. The TLS handshake comes first, then the hello and the
//! frames of the [wire format](crate#wire-format) inside it, unchanged. The TLS handshake
//! and the hello share one deadline, `handshake_timeout_ms`.
//!
//! # Who must present what
//!
//! | connection | the server presents | the connecting side presents |
//! |---|---|---|
//! | peer (raft, snapshot channels) | its certificate, which must name the host of the address dialled | a certificate signed by the CA, which must name the host of its own address in the accepting node's configuration |
//! | native client | its certificate, which must name the host of the address dialled | with [`ClientCerts::Required`] (the default) a certificate signed by the CA; with [`ClientCerts::Optional`] none, or one signed by the CA |
//!
//! The TLS layer of a node's port accepts a connecting side without a certificate (one it
//! does present must chain to the CA); the hello then decides by channel and answers a
//! refusal in its status byte ([`crate::Rejection::CertificateRequired`],
//! [`crate::Rejection::CertificateNotForNode`]), so both sides log why. A plaintext hello
//! sent to a TLS server is answered in plaintext with [`crate::Rejection::TlsRequired`].
//!
//! # What it protects, and what not
//!
//! Encryption and integrity of everything on the wire, and membership: only a holder of a
//! key whose certificate the cluster's CA signed can speak to a node, and a peer channel
//! only as the node whose address its certificate names (checked against the accepting
//! node's configuration when the server is given the address book, as
//! [`crate::TcpEndpoint`] does; see [`crate::TcpServer::serve_with_peer_addresses`]). Not:
//! data at rest (the log and snapshots are written in the clear), revocation (no CRL or
//! OCSP: a leaked key is good until its certificate expires or the CA changes), or
//! per-client authorization (any client with a CA-signed certificate may do anything the
//! client protocol allows, membership changes included).
//!
//! # Limits
//!
//! rustls buffers at most one TLS record (16 KiB of plaintext plus its overhead) outside a
//! handshake and refuses a handshake message over 64 KiB, so a peer cannot make a
//! connection buffer more than `frame_bytes_max` plus a record; PEM files are read up to
//! [`PEM_FILE_BYTES_MAX`].

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use raft_core::NodeId;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{AlertDescription, ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::{Error, Result};
use crate::handshake::{Channel, Rejection};

pub use tokio_rustls;
pub use tokio_rustls::rustls;

/// Largest PEM file read (certificate chain, key or CA bundle): 1 MiB. A certificate is a
/// few kilobytes; a CA bundle of the whole web is about 200 KiB.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// Whether the native client channel (and, in the `raft` binary, the Redis port) requires a
/// certificate from the connecting side. Peer channels always do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCerts {
    /// A client must present a certificate signed by the CA (mutual TLS for everyone).
    #[default]
    Required,
    /// A client may connect without a certificate (server authentication and encryption
    /// only); one it does present must be signed by the CA.
    Optional,
}

/// A certificate chain (leaf first) and its private key.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// From PEM: `cert_pem` holds the certificate chain, leaf first; `key_pem` the private
    /// key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity> {
        let chain = certificates_from_pem(cert_pem, "the certificate file")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| config_error(format!("no usable private key in the key file: {e}")))?;
        Ok(Identity { chain, key })
    }

    /// From PEM files (see [`Identity::from_pem`]).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity> {
        Identity::from_pem(&read_pem_file(cert)?, &read_pem_file(key)?)
            .map_err(|e| config_error(format!("{} / {}: {e}", cert.display(), key.display())))
    }
}

/// The TLS side of a [`crate::TcpConfig`]: who we are (for a node: its certificate and key),
/// which CA we trust, and whether clients need certificates. Cheap to clone (shared).
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    identity: Option<Identity>,
    connector: TlsConnector,
    /// The node port's acceptor: it lets a connecting side without a certificate finish the
    /// TLS handshake, so the hello can refuse it by channel with a reason both sides log.
    acceptor: Option<TlsAcceptor>,
    client_certs: ClientCerts,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_certificates", &self.inner.roots.len())
            .field("identity", &self.inner.identity)
            .field("client_certs", &self.inner.client_certs)
            .finish()
    }
}

/// Two configurations are equal when they are clones of one another.
impl PartialEq for TlsConfig {
    fn eq(&self, other: &TlsConfig) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for TlsConfig {}

impl TlsConfig {
    /// A node's configuration: its `identity` (presented to peers and clients, and used when
    /// it connects to peers), the CA certificates it trusts (`ca_pem`), and what clients must
    /// present. The identity's certificate should name the host of the node's advertised
    /// address and allow both server and client use.
    pub fn node(identity: Identity, ca_pem: &[u8], client_certs: ClientCerts) -> Result<TlsConfig> {
        TlsConfig::build(Some(identity), ca_pem, client_certs)
    }

    /// A client's configuration: the CA certificates it trusts and, for servers that require
    /// one, its own certificate and key.
    pub fn client(ca_pem: &[u8], identity: Option<Identity>) -> Result<TlsConfig> {
        TlsConfig::build(identity, ca_pem, ClientCerts::Required)
    }

    /// A node's configuration from PEM files (see [`TlsConfig::node`]).
    pub fn node_from_files(
        cert: &Path,
        key: &Path,
        ca: &Path,
        client_certs: ClientCerts,
    ) -> Result<TlsConfig> {
        let identity = Identity::from_pem_files(cert, key)?;
        let ca_pem = read_pem_file(ca)?;
        TlsConfig::node(identity, &ca_pem, client_certs)
            .map_err(|e| config_error(format!("{}: {e}", ca.display())))
    }

    /// A client's configuration from PEM files (see [`TlsConfig::client`]).
    pub fn client_from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<TlsConfig> {
        let identity = match identity {
            Some((cert, key)) => Some(Identity::from_pem_files(cert, key)?),
            None => None,
        };
        let ca_pem = read_pem_file(ca)?;
        TlsConfig::client(&ca_pem, identity)
            .map_err(|e| config_error(format!("{}: {e}", ca.display())))
    }

    fn build(
        identity: Option<Identity>,
        ca_pem: &[u8],
        client_certs: ClientCerts,
    ) -> Result<TlsConfig> {
        // ring, not aws-lc-rs (which needs cmake and a large C build). rustls deprecates
        // ring's provider for lacking post-quantum key exchange (X25519MLKEM768): a recorded
        // session could be decrypted by a future quantum computer.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for certificate in certificates_from_pem(ca_pem, "the CA file")? {
            roots
                .add(certificate)
                .map_err(|e| config_error(format!("unusable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_config_error)?
            .with_root_certificates(roots.clone());
        let client = match &identity {
            Some(identity) => client
                .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(tls_config_error)?,
            None => client.with_no_client_auth(),
        };
        let acceptor = match &identity {
            Some(identity) => Some(TlsAcceptor::from(server_config(
                &provider, &roots, identity, false,
            )?)),
            None => None,
        };
        Ok(TlsConfig {
            inner: Arc::new(Inner {
                provider,
                roots,
                identity,
                connector: TlsConnector::from(Arc::new(client)),
                acceptor,
                client_certs,
            }),
        })
    }

    /// What the native client channel requires of clients.
    pub fn client_certs(&self) -> ClientCerts {
        self.inner.client_certs
    }

    /// Whether this configuration can serve (it holds a certificate and key).
    pub fn has_identity(&self) -> bool {
        self.inner.identity.is_some()
    }

    /// A rustls server configuration with this node's certificate for a port of another
    /// protocol (the `raft` binary's Redis port): the TLS layer itself requires a client
    /// certificate signed by the CA with [`ClientCerts::Required`], accepts clients without
    /// one with [`ClientCerts::Optional`]. `None` without an identity.
    pub fn server_config(&self, client_certs: ClientCerts) -> Result<Option<Arc<ServerConfig>>> {
        let Some(identity) = &self.inner.identity else {
            return Ok(None);
        };
        let required = client_certs == ClientCerts::Required;
        server_config(&self.inner.provider, &self.inner.roots, identity, required).map(Some)
    }

    /// The client side of the TLS handshake on a connected stream to `addr`: the server's
    /// certificate must chain to the CA and name `addr`'s host.
    pub(crate) async fn connect(
        &self,
        stream: TcpStream,
        addr: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(addr)?;
        self.inner
            .connector
            .connect(name, stream)
            .await
            .map_err(|e| handshake_error(&e))
    }

    /// The server side of the TLS handshake.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let Some(acceptor) = &self.inner.acceptor else {
            return Err(config_error(
                "this TLS configuration has no certificate to serve with".into(),
            ));
        };
        acceptor
            .accept(stream)
            .await
            .map_err(|e| handshake_error(&e))
    }

    /// The accepting side's judgement of the certificate the connecting side presented
    /// (`certificates`, leaf first) for `channel`, claiming to be `node` in its hello.
    /// `peer_addr` is that node's address in our configuration, when the server knows it.
    pub(crate) fn judge_certificate(
        &self,
        certificates: Option<&[CertificateDer<'static>]>,
        channel: Channel,
        node: NodeId,
        peer_addresses: Option<&dyn crate::PeerAddresses>,
    ) -> Result<(), Rejection> {
        let leaf = certificates.and_then(<[_]>::first);
        if channel == Channel::Client {
            return match (leaf, self.inner.client_certs) {
                (None, ClientCerts::Required) => Err(Rejection::CertificateRequired {
                    channel: channel as u8,
                }),
                _ => Ok(()),
            };
        }
        let Some(leaf) = leaf else {
            return Err(Rejection::CertificateRequired {
                channel: channel as u8,
            });
        };
        let Some(peer_addresses) = peer_addresses else {
            return Ok(());
        };
        let Some(addr) = peer_addresses.peer_addr(node) else {
            return Err(Rejection::CertificateNotForNode {
                node,
                reason: "the node is not in this node's configuration".into(),
            });
        };
        certificate_names(leaf, &addr).map_err(|reason| Rejection::CertificateNotForNode {
            node,
            reason: format!("{reason} (its address here is {addr})"),
        })
    }
}

/// Whether the certificate `leaf` is valid for the host of `addr`; why not otherwise.
fn certificate_names(leaf: &CertificateDer<'_>, addr: &str) -> std::result::Result<(), String> {
    let name = server_name(addr).map_err(|e| e.to_string())?;
    let certificate = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("undecodable certificate: {e}"))?;
    certificate
        .verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("its certificate does not name {}", name.to_str()))
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    identity: &Identity,
    client_cert_required: bool,
) -> Result<Arc<ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
    let verifier = if client_cert_required {
        verifier
    } else {
        verifier.allow_unauthenticated()
    };
    let verifier = verifier.build().map_err(|e| config_error(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_config_error)?;
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry to be reached at `addr` (`host:port`, an
/// IPv6 host in brackets): the host, as an IP address or a DNS name.
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|_| Error::TlsConfig {
        reason: format!("{addr:?} has no host usable as a TLS server name"),
    })
}

/// Reads a PEM file of at most [`PEM_FILE_BYTES_MAX`] bytes.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| config_error(format!("cannot open {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > PEM_FILE_BYTES_MAX {
        return Err(config_error(format!(
            "{} is larger than {PEM_FILE_BYTES_MAX} bytes: not a PEM file of certificates or a key",
            path.display()
        )));
    }
    Ok(bytes)
}

fn certificates_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| config_error(format!("{what} is not valid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(config_error(format!("{what} holds no certificate")));
    }
    Ok(certificates)
}

fn config_error(reason: String) -> Error {
    Error::TlsConfig { reason }
}

fn tls_config_error(error: rustls::Error) -> Error {
    config_error(error.to_string())
}

/// A failed TLS handshake (or a read or write right after it, where TLS 1.3 reports the
/// other side's refusal of our certificate), explained.
pub(crate) fn handshake_error(error: &io::Error) -> Error {
    Error::TlsHandshake {
        reason: describe(error),
    }
}

/// Whether an I/O error on a TLS connection was TLS's doing (a rustls error).
pub(crate) fn is_tls_error(error: &io::Error) -> bool {
    rustls_error(error).is_some()
}

fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

fn describe(error: &io::Error) -> String {
    let Some(tls) = rustls_error(error) else {
        return match error.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(
                "the other side closed the connection during the TLS handshake ({error}); \
                 does it serve TLS, and does it accept our certificate?"
            ),
            _ => error.to_string(),
        };
    };
    let hint = match tls {
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError,
        ) => "the other side refused our certificate: is it signed by the cluster's CA?",
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            "the other side requires a certificate signed by the cluster's CA, and we have none"
        }
        rustls::Error::InvalidCertificate(_) => {
            "the other side's certificate is not accepted: is it signed by the cluster's CA, \
             valid now, and does it name the host we connected to (or, when it connects to \
             us, its own)?"
        }
        rustls::Error::NoCertificatesPresented => {
            "the other side presented no certificate, and one is required"
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the other side does not speak TLS: is TLS configured on it?"
        }
        _ => "",
    };
    if hint.is_empty() {
        format!("{tls}")
    } else {
        format!("{tls}: {hint}")
    }
}
