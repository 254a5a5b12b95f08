//! The handshake that opens every connection, before any frame.
//!
//! Both sides send one fixed-size hello; the connecting side first, the accepting side in reply.
//! Integers are big-endian, like the frame length prefix.
//!
//! ```text
//! offset  size  field
//! 0       4     magic: b"RNTP"
//! 4       2     protocol version: u16 (this crate speaks PROTOCOL_VERSION)
//! 6       1     channel: 1 = Raft messages, 2 = snapshot chunks, 3 = native client
//! 7       1     status: 0 from the connecting side; in the reply 0 = accepted, else a Rejection
//!               (Rejection::status: 1 bad magic, 2 version, 3 cluster, 4 channel, 5 no node
//!               id, 7 TLS required, 8 certificate required, 9 certificate not the node's)
//! 8       8     cluster id: u64
//! 16      8     sender's node id: u64 (0 for a native client)
//! 24            (end: HELLO_BYTES)
//! ```
//!
//! The accepting side always replies, then closes the connection if it rejected the hello, so
//! both ends can log why. The connecting side additionally checks that the node that answered
//! is the node it meant to reach (a stale address book must not deliver messages to the wrong
//! node).

use std::fmt;

use raft_core::NodeId;

/// The magic bytes at the start of every connection.
pub const MAGIC: [u8; 4] = *b"RNTP";
/// The protocol version this crate speaks. Peers must speak exactly this version: a hello of
/// any other version is refused (status 2) before a frame is exchanged, so a peer of another
/// version fails cleanly at connect time instead of on a frame it cannot decode.
///
/// - 1: the first version.
/// - 2: [`crate::ClientResponse::Unavailable`] and [`crate::ClientResponse::OutcomeUnknown`]
///   added (a version 1 client could not decode them).
pub const PROTOCOL_VERSION: u16 = 2;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const CHANNEL_OFFSET: usize = VERSION_OFFSET + std::mem::size_of::<u16>();
const STATUS_OFFSET: usize = CHANNEL_OFFSET + std::mem::size_of::<u8>();
const CLUSTER_OFFSET: usize = STATUS_OFFSET + std::mem::size_of::<u8>();
const NODE_OFFSET: usize = CLUSTER_OFFSET + std::mem::size_of::<u64>();
/// Size of a hello in bytes.
pub const HELLO_BYTES: usize = NODE_OFFSET + std::mem::size_of::<u64>();

const STATUS_ACCEPTED: u8 = 0;

/// What a connection carries; chosen by the connecting side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Channel {
    /// One-way Raft messages from a peer.
    Raft = 1,
    /// Snapshot chunks from a leader, each answered with an acknowledgement.
    Snapshot = 2,
    /// Native client requests, each answered with a response.
    Client = 3,
}

impl Channel {
    /// Decodes the channel byte.
    pub fn from_u8(byte: u8) -> Option<Channel> {
        match byte {
            1 => Some(Channel::Raft),
            2 => Some(Channel::Snapshot),
            3 => Some(Channel::Client),
            _ => None,
        }
    }
}

/// Why a handshake failed. The accepting side sends the code back in the status byte.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The first four bytes were not [`MAGIC`]: the other side does not speak this protocol.
    #[error("bad magic bytes {found:02x?}: not a raft-net-tcp peer")]
    BadMagic {
        /// The bytes received.
        found: [u8; 4],
    },
    /// The other side speaks another protocol version.
    #[error("protocol version {theirs} is not ours ({ours})")]
    Version {
        /// Our version.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// The other side belongs to another cluster.
    #[error("cluster id {theirs} is not ours ({ours})")]
    Cluster {
        /// Our cluster id.
        ours: u64,
        /// Theirs.
        theirs: u64,
    },
    /// The requested channel does not exist or is not served here (e.g. the native client
    /// protocol on a server without a client handler).
    #[error("channel {channel} is not served here")]
    Channel {
        /// The requested channel byte.
        channel: u8,
    },
    /// A peer channel was requested with node id 0, which is no node.
    #[error("a peer connection must name its node id (got 0)")]
    MissingNodeId,
    /// The node that answered is not the node we meant to reach.
    #[error("expected node {expected}, reached node {actual}")]
    WrongNode {
        /// The node we dialled.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
    /// A plaintext hello reached a server that accepts TLS connections only.
    #[error(
        "this server accepts TLS connections only, and the connecting side has no TLS configured"
    )]
    TlsRequired,
    /// The connecting side presented no certificate, and the channel requires one signed by
    /// the cluster's CA (peer channels always; the client channel unless the server's
    /// `ClientCerts` is `Optional`).
    #[error(
        "the {} channel requires a certificate signed by the cluster's CA, and none was presented",
        channel_name(*channel)
    )]
    CertificateRequired {
        /// The requested channel byte.
        channel: u8,
    },
    /// The certificate presented on a peer channel is not that of the node named in the
    /// hello: it does not name the host of that node's address in the accepting node's
    /// configuration, or the node is not in it.
    #[error("the certificate is not accepted as node {node}'s: {reason}")]
    CertificateNotForNode {
        /// The node id of the hello.
        node: NodeId,
        /// Why (on the connecting side: that the other side refused it).
        reason: String,
    },
    /// The other side rejected our hello with a status code this version does not know.
    #[error("rejected with unknown status {status}")]
    Other {
        /// The status byte.
        status: u8,
    },
}

impl Rejection {
    /// The status byte that reports this rejection to the other side.
    pub fn status(&self) -> u8 {
        match self {
            Rejection::BadMagic { .. } => 1,
            Rejection::Version { .. } => 2,
            Rejection::Cluster { .. } => 3,
            Rejection::Channel { .. } => 4,
            Rejection::MissingNodeId => 5,
            Rejection::WrongNode { .. } => 6,
            Rejection::TlsRequired => 7,
            Rejection::CertificateRequired { .. } => 8,
            Rejection::CertificateNotForNode { .. } => 9,
            Rejection::Other { status } => *status,
        }
    }

    /// Rebuilds the rejection from a reply (seen from the connecting side, whose hello the
    /// reply judged).
    fn from_reply(reply: &Hello, ours: &Hello) -> Rejection {
        match reply.status {
            1 => Rejection::BadMagic { found: ours.magic },
            2 => Rejection::Version {
                ours: ours.version,
                theirs: reply.version,
            },
            3 => Rejection::Cluster {
                ours: ours.cluster_id,
                theirs: reply.cluster_id,
            },
            4 => Rejection::Channel {
                channel: ours.channel,
            },
            5 => Rejection::MissingNodeId,
            7 => Rejection::TlsRequired,
            8 => Rejection::CertificateRequired {
                channel: ours.channel,
            },
            9 => Rejection::CertificateNotForNode {
                node: ours.node_id,
                reason: "the other side does not list this node, or the address it has for it is \
                         at a host the certificate does not name"
                    .into(),
            },
            status => Rejection::Other { status },
        }
    }
}

/// The name of a channel byte, for messages.
fn channel_name(channel: u8) -> String {
    match Channel::from_u8(channel) {
        Some(channel) => channel.to_string(),
        None => format!("unknown ({channel})"),
    }
}

/// One side's hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Should be [`MAGIC`].
    pub magic: [u8; 4],
    /// The sender's protocol version.
    pub version: u16,
    /// The channel byte (see [`Channel`]).
    pub channel: u8,
    /// 0 in a request; in a reply 0 = accepted, else [`Rejection::status`].
    pub status: u8,
    /// The sender's cluster id.
    pub cluster_id: u64,
    /// The sender's node id (0 for a native client).
    pub node_id: NodeId,
}

impl Hello {
    /// The hello a connecting side sends.
    pub fn request(cluster_id: u64, node_id: NodeId, channel: Channel) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            channel: channel as u8,
            status: STATUS_ACCEPTED,
            cluster_id,
            node_id,
        }
    }

    /// Encodes the hello (layout in the module docs).
    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut bytes = [0u8; HELLO_BYTES];
        bytes[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&self.magic);
        bytes[VERSION_OFFSET..CHANNEL_OFFSET].copy_from_slice(&self.version.to_be_bytes());
        bytes[CHANNEL_OFFSET] = self.channel;
        bytes[STATUS_OFFSET] = self.status;
        bytes[CLUSTER_OFFSET..NODE_OFFSET].copy_from_slice(&self.cluster_id.to_be_bytes());
        bytes[NODE_OFFSET..HELLO_BYTES].copy_from_slice(&self.node_id.to_be_bytes());
        bytes
    }

    /// Decodes any 24 bytes; [`Hello::check_request`] and [`Hello::check_reply`] judge them.
    pub fn decode(bytes: &[u8; HELLO_BYTES]) -> Hello {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&bytes[MAGIC_OFFSET..VERSION_OFFSET]);
        let mut version = [0u8; 2];
        version.copy_from_slice(&bytes[VERSION_OFFSET..CHANNEL_OFFSET]);
        let mut cluster_id = [0u8; 8];
        cluster_id.copy_from_slice(&bytes[CLUSTER_OFFSET..NODE_OFFSET]);
        let mut node_id = [0u8; 8];
        node_id.copy_from_slice(&bytes[NODE_OFFSET..HELLO_BYTES]);
        Hello {
            magic,
            version: u16::from_be_bytes(version),
            channel: bytes[CHANNEL_OFFSET],
            status: bytes[STATUS_OFFSET],
            cluster_id: u64::from_be_bytes(cluster_id),
            node_id: u64::from_be_bytes(node_id),
        }
    }

    /// The accepting side's judgement of a received hello: the channel it asks for, or why it
    /// is refused. `client_served` says whether this server has a client handler.
    pub fn check_request(
        &self,
        cluster_id: u64,
        client_served: bool,
    ) -> Result<Channel, Rejection> {
        self.check_common(cluster_id)?;
        let channel = match Channel::from_u8(self.channel) {
            Some(Channel::Client) if !client_served => None,
            other => other,
        };
        let Some(channel) = channel else {
            return Err(Rejection::Channel {
                channel: self.channel,
            });
        };
        if channel != Channel::Client && self.node_id == 0 {
            return Err(Rejection::MissingNodeId);
        }
        Ok(channel)
    }

    /// The connecting side's judgement of the reply to `ours`. `expected_node` is the node we
    /// dialled, if we dialled a particular node.
    pub fn check_reply(
        &self,
        ours: &Hello,
        expected_node: Option<NodeId>,
    ) -> Result<(), Rejection> {
        if self.magic != MAGIC {
            return Err(Rejection::BadMagic { found: self.magic });
        }
        if self.status != STATUS_ACCEPTED {
            return Err(Rejection::from_reply(self, ours));
        }
        self.check_common(ours.cluster_id)?;
        match expected_node {
            Some(expected) if expected != self.node_id => Err(Rejection::WrongNode {
                expected,
                actual: self.node_id,
            }),
            _ => Ok(()),
        }
    }

    fn check_common(&self, cluster_id: u64) -> Result<(), Rejection> {
        if self.magic != MAGIC {
            return Err(Rejection::BadMagic { found: self.magic });
        }
        if self.version != PROTOCOL_VERSION {
            return Err(Rejection::Version {
                ours: PROTOCOL_VERSION,
                theirs: self.version,
            });
        }
        if self.cluster_id != cluster_id {
            return Err(Rejection::Cluster {
                ours: cluster_id,
                theirs: self.cluster_id,
            });
        }
        Ok(())
    }

    /// The accepting side's reply to `request`: its own identity and the verdict.
    pub fn reply(
        cluster_id: u64,
        node_id: NodeId,
        request: &Hello,
        verdict: &Result<Channel, Rejection>,
    ) -> Hello {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            channel: request.channel,
            status: match verdict {
                Ok(_) => STATUS_ACCEPTED,
                Err(rejection) => rejection.status(),
            },
            cluster_id,
            node_id,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Raft => "raft",
            Channel::Snapshot => "snapshot",
            Channel::Client => "client",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_layout_is_exact() {
        let hello = Hello::request(0x0102_0304_0506_0708, 9, Channel::Snapshot);
        let bytes = hello.encode();
        assert_eq!(HELLO_BYTES, 24);
        assert_eq!(
            bytes,
            [b'R', b'N', b'T', b'P', 0, 2, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 9]
        );
        assert_eq!(Hello::decode(&bytes), hello);
    }

    #[test]
    fn requests_are_judged() {
        let good = Hello::request(7, 2, Channel::Raft);
        assert_eq!(good.check_request(7, false), Ok(Channel::Raft));
        assert_eq!(
            good.check_request(8, false),
            Err(Rejection::Cluster { ours: 8, theirs: 7 })
        );
        let client = Hello::request(7, 0, Channel::Client);
        assert_eq!(client.check_request(7, true), Ok(Channel::Client));
        assert_eq!(
            client.check_request(7, false),
            Err(Rejection::Channel { channel: 3 })
        );
        let nobody = Hello::request(7, 0, Channel::Raft);
        assert_eq!(nobody.check_request(7, true), Err(Rejection::MissingNodeId));
        let old = Hello { version: 1, ..good };
        assert_eq!(
            old.check_request(7, true),
            Err(Rejection::Version { ours: 2, theirs: 1 })
        );
        let http = Hello::decode(b"GET / HTTP/1.1\r\nHost: ab");
        assert!(matches!(
            http.check_request(7, true),
            Err(Rejection::BadMagic { .. })
        ));
    }

    #[test]
    fn replies_are_judged_including_the_node_reached() {
        let ours = Hello::request(7, 1, Channel::Raft);
        let verdict = Ok(Channel::Raft);
        let reply = Hello::reply(7, 2, &ours, &verdict);
        assert_eq!(reply.check_reply(&ours, Some(2)), Ok(()));
        assert_eq!(
            reply.check_reply(&ours, Some(3)),
            Err(Rejection::WrongNode {
                expected: 3,
                actual: 2
            })
        );
        let refused = Hello::reply(8, 2, &ours, &Err(Rejection::Cluster { ours: 8, theirs: 7 }));
        assert_eq!(
            refused.check_reply(&ours, Some(2)),
            Err(Rejection::Cluster { ours: 7, theirs: 8 })
        );
        // The TLS refusals travel as statuses 7-9 and come back as the same rejections.
        let tls_refusals = [
            (Rejection::TlsRequired, 7),
            (Rejection::CertificateRequired { channel: 1 }, 8),
        ];
        for (rejection, status) in tls_refusals {
            let reply = Hello::reply(7, 2, &ours, &Err(rejection.clone()));
            assert_eq!(reply.status, status);
            assert_eq!(reply.check_reply(&ours, Some(2)), Err(rejection));
        }
        let not_the_node = Rejection::CertificateNotForNode {
            node: 1,
            reason: "its certificate does not name 10.0.0.1".into(),
        };
        let reply = Hello::reply(7, 2, &ours, &Err(not_the_node));
        assert_eq!(reply.status, 9);
        assert!(matches!(
            reply.check_reply(&ours, Some(2)),
            Err(Rejection::CertificateNotForNode { node: 1, .. })
        ));
    }
}
