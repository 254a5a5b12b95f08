//! TLS settings of the `raft` binary: the client commands' flags ([`TlsArgs`]) and what
//! clients must present to a node ([`TlsClientCerts`]). The TLS itself is raft-net-tcp's
//! (feature `tls`: rustls with the ring provider), on the peer and native client port and,
//! with `redis_tls`, on the Redis port.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use raft_net_tcp::tls::{ClientCerts, TlsConfig};
use serde::{Deserialize, Serialize};

/// What a node requires of clients (native and Redis) with TLS on. Peers always need a
/// certificate signed by the CA that names the host of their address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TlsClientCerts {
    /// A client must present a certificate signed by the CA (`redis-cli --cert --key`).
    #[default]
    Required,
    /// A client may connect without a certificate (server authentication and encryption
    /// only); any client that trusts the CA can then read, write and change the membership.
    Optional,
}

impl From<TlsClientCerts> for ClientCerts {
    fn from(setting: TlsClientCerts) -> ClientCerts {
        match setting {
            TlsClientCerts::Required => ClientCerts::Required,
            TlsClientCerts::Optional => ClientCerts::Optional,
        }
    }
}

/// The TLS flags of the client commands (put, get, status, members, bench, ...).
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Connect with TLS, trusting the CA certificate(s) in FILE (PEM): the members'
    /// certificates must be signed by it and name the host of the address dialled.
    #[arg(long, env = "RAFT_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM, chain leaf first), for a cluster that requires
    /// client certificates (the default with TLS).
    #[arg(long, env = "RAFT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RAFT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The client's TLS configuration; `None` for plaintext (no --tls-ca).
    pub fn config(&self) -> anyhow::Result<Option<TlsConfig>> {
        let Some(ca) = &self.tls_ca else {
            if self.tls_cert.is_some() {
                bail!("--tls-cert needs --tls-ca (the CA that signed the members' certificates)");
            }
            return Ok(None);
        };
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            _ => None,
        };
        let config = TlsConfig::client_from_files(ca, identity).context("loading the TLS files")?;
        Ok(Some(config))
    }
}
