//! The first exchange on every connection: who is calling, for which cluster, with which
//! protocol version, and for what. A mismatch is refused with a reason (and logged by the
//! server); the connection is then closed.
//!
//! ```text
//! hello  (client → server) = "SLHELLO1", u16 version, u8 purpose (0 rpc, 1 append stream,
//!                            2 client, 3 segment fetch), u64 cluster_id, u64 from_node, u64 to_node
//!                            (from/to are u64::MAX for a client that is not a node / does not
//!                            care which node answers)
//! answer (server → client) = u8 status (0 accepted, 1 refused), u64 server node id,
//!                            u16 reason_len, reason (UTF-8)
//!                            [, u8 refusal kind (0 other, 1 cluster id, 2 identity),
//!                               u64 server cluster id (0 unless kind 1)]
//! ```
//!
//! The bracketed tail is optional (an answer from an older node ends after the reason, and an
//! older client ignores it): it lets a client tell a wrong `--cluster-id` apart from any other
//! refusal by type ([`Error::ClusterMismatch`]), never by the reason's text; and a hello that
//! the caller's TLS certificate does not back ([`Hello::authorize`]) from other refusals
//! ([`Error::Tls`]).
//!
//! Both travel as frames (`frame.rs`) limited to [`MAX_HANDSHAKE_BYTES`].

use super::tls::{ClientRole, TlsIdentity};
use crate::codec::{clip_utf8, DecodeError, Reader, Writer};
use crate::{Error, Result};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest handshake frame.
pub const MAX_HANDSHAKE_BYTES: usize = 512;
/// `from_node` / `to_node` of a caller that is not a node, or does not name a node.
pub const ANY_NODE: u64 = u64::MAX;
const MAGIC: &[u8; 8] = b"SLHELLO1";
const HELLO_BYTES: usize = 8 + 2 + 1 + 8 + 8 + 8;
/// Longest refusal reason an answer carries (a diagnostic, clipped at a character boundary
/// so that the answer fits [`MAX_HANDSHAKE_BYTES`]).
pub const MAX_REFUSAL_REASON_BYTES: usize = MAX_HANDSHAKE_BYTES - 24;
const _: () = assert!(HELLO_BYTES <= MAX_HANDSHAKE_BYTES);
// Status, node id, reason length, reason, refusal kind, server cluster id.
const _: () = assert!(1 + 8 + 2 + MAX_REFUSAL_REASON_BYTES + 1 + 8 <= MAX_HANDSHAKE_BYTES);

/// What a connection carries after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Raft request/response calls between nodes.
    Rpc = 0,
    /// A pipelined Raft append stream between nodes.
    AppendStream = 1,
    /// Application clients (append, read, status).
    Client = 2,
    /// Bulk fetch of sealed segment files (catch-up).
    Fetch = 3,
}

/// The caller's hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u16,
    /// What the connection is for.
    pub purpose: Purpose,
    /// The cluster the caller belongs to.
    pub cluster_id: u64,
    /// The calling node (or [`ANY_NODE`]).
    pub from_node: u64,
    /// The node the caller wants (or [`ANY_NODE`]).
    pub to_node: u64,
}

impl Hello {
    /// Encodes the hello.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HELLO_BYTES);
        let mut w = Writer::new(&mut b);
        w.raw(MAGIC);
        w.u16(self.version);
        w.u8(self.purpose as u8);
        w.u64(self.cluster_id);
        w.u64(self.from_node);
        w.u64(self.to_node);
        b
    }

    /// Decodes a hello; a clear error for anything else (garbage on the port).
    pub fn decode(b: &[u8]) -> Result<Hello> {
        let not_hello = || Error::Protocol("not a sitelog hello".into());
        let mut c = Reader::new(b, "hello");
        if b.len() != HELLO_BYTES || c.take(MAGIC.len()).map_err(|_| not_hello())? != MAGIC {
            return Err(not_hello());
        }
        let fields = (|| Ok::<_, DecodeError>((c.u16()?, c.u8()?, c.u64()?, c.u64()?, c.u64()?)))();
        let (version, purpose, cluster_id, from_node, to_node) = fields.map_err(|_| not_hello())?;
        let purpose = match purpose {
            0 => Purpose::Rpc,
            1 => Purpose::AppendStream,
            2 => Purpose::Client,
            3 => Purpose::Fetch,
            p => return Err(Error::Protocol(format!("unknown connection purpose {p}"))),
        };
        Ok(Hello {
            version,
            purpose,
            cluster_id,
            from_node,
            to_node,
        })
    }

    /// Checks the hello against the server's identity; `Err` to refuse.
    pub fn check(&self, cluster_id: u64, node_id: u64) -> std::result::Result<(), Refusal> {
        if self.version != PROTOCOL_VERSION {
            return Err(Refusal::other(format!(
                "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                self.version
            )));
        }
        if self.cluster_id != cluster_id {
            return Err(Refusal {
                reason: format!(
                    "cluster id {:#x} does not match this node's cluster {cluster_id:#x}",
                    self.cluster_id
                ),
                server_cluster_id: Some(cluster_id),
                identity: false,
            });
        }
        if self.to_node != ANY_NODE && self.to_node != node_id {
            return Err(Refusal::other(format!(
                "caller wants node {} but this is node {node_id}",
                self.to_node
            )));
        }
        let node_to_node = matches!(self.purpose, Purpose::Rpc | Purpose::AppendStream);
        if node_to_node && self.from_node == ANY_NODE {
            return Err(Refusal::other(
                "node-to-node connections must name the calling node",
            ));
        }
        Ok(())
    }
}

impl Hello {
    /// Checks the hello against the caller's TLS certificate (`None`: a plaintext
    /// connection, where everyone is admin) and returns the role its client requests are
    /// authorized with. Peer purposes and fetch need a node certificate naming `from_node`
    /// (a client certificate, or another node's, is refused); a client connection takes the
    /// role of its client certificate, and a node certificate counts as admin (a node's
    /// replace driver).
    pub fn authorize(
        &self,
        identity: Option<&TlsIdentity>,
    ) -> std::result::Result<ClientRole, Refusal> {
        let Some(identity) = identity else {
            return Ok(ClientRole::Admin);
        };
        match (self.purpose, identity) {
            (Purpose::Client, TlsIdentity::Client { role }) => Ok(*role),
            (Purpose::Client, TlsIdentity::Node { .. }) => Ok(ClientRole::Admin),
            (Purpose::Rpc | Purpose::AppendStream | Purpose::Fetch, _) => identity
                .check_node(self.from_node)
                .map(|()| ClientRole::Admin)
                .map_err(|e| Refusal::identity(e.to_string())),
        }
    }
}

/// Why a server refuses a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// For the logs and the caller (UTF-8, cut to fit the answer frame).
    pub reason: String,
    /// The server's own cluster id when the refusal is for a wrong cluster id.
    pub server_cluster_id: Option<u64>,
    /// The caller's certificate does not back its hello (the caller reads [`Error::Tls`]).
    pub identity: bool,
}

impl Refusal {
    /// A refusal of any other kind (busy, wrong node, version).
    pub fn other(reason: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
            server_cluster_id: None,
            identity: false,
        }
    }

    /// A refusal because the caller's certificate does not back its hello.
    pub fn identity(reason: impl Into<String>) -> Refusal {
        Refusal {
            identity: true,
            ..Refusal::other(reason)
        }
    }
}

const REFUSAL_OTHER: u8 = 0;
const REFUSAL_CLUSTER: u8 = 1;
const REFUSAL_IDENTITY: u8 = 2;

/// The server's answer.
pub fn encode_answer(node_id: u64, refused: Option<&Refusal>) -> Vec<u8> {
    let reason = clip_utf8(
        refused.map_or("", |r| r.reason.as_str()),
        MAX_REFUSAL_REASON_BYTES,
    )
    .as_bytes();
    let mut b = Vec::new();
    let mut w = Writer::new(&mut b);
    w.bool(refused.is_some());
    w.u64(node_id);
    // Fits: MAX_REFUSAL_REASON_BYTES < u16::MAX.
    w.u16(reason.len() as u16);
    w.raw(reason);
    if let Some(r) = refused {
        let (kind, cluster) = match (r.server_cluster_id, r.identity) {
            (Some(c), _) => (REFUSAL_CLUSTER, c),
            (None, true) => (REFUSAL_IDENTITY, 0),
            (None, false) => (REFUSAL_OTHER, 0),
        };
        w.u8(kind);
        w.u64(cluster);
    }
    debug_assert!(b.len() <= MAX_HANDSHAKE_BYTES);
    b
}

/// Decodes the server's answer: its node id, or the refusal as an error
/// ([`Error::ClusterMismatch`] when the server belongs to a cluster other than `cluster_id`).
pub fn decode_answer(b: &[u8], cluster_id: u64) -> Result<u64> {
    let mut c = Reader::new(b, "handshake answer");
    let head = (|| Ok::<_, DecodeError>((c.u8()?, c.u64()?)))();
    let (status, node) =
        head.map_err(|e| Error::Protocol(format!("short handshake answer: {e}")))?;
    let reason = c
        .count_u16(MAX_HANDSHAKE_BYTES, 1)
        .and_then(|n| c.take(n))
        .map_err(|e| Error::Protocol(format!("bad handshake answer: {e}")))?;
    // The optional refusal tail; any other bytes after the reason are ignored, as they
    // always were.
    let tail = c.rest();
    match status {
        0 => Ok(node),
        1 if tail.len() == 9 && tail[0] == REFUSAL_CLUSTER => Err(Error::ClusterMismatch {
            node_id: node,
            node_cluster_id: crate::storage::record::u64_at(tail, 1),
            cluster_id,
        }),
        1 if tail.len() == 9 && tail[0] == REFUSAL_IDENTITY => Err(Error::Tls {
            reason: format!(
                "node {node} refused the connection: {}",
                String::from_utf8_lossy(reason)
            ),
        }),
        1 => Err(Error::Protocol(format!(
            "node {node} refused the connection: {}",
            String::from_utf8_lossy(reason)
        ))),
        s => Err(Error::Protocol(format!("bad handshake status {s}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            purpose: Purpose::AppendStream,
            cluster_id: 7,
            from_node: 1,
            to_node: 2,
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let h = hello();
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        assert!(h.check(7, 2).is_ok());
        assert_eq!(h.check(8, 2).unwrap_err().server_cluster_id, Some(8));
        assert_eq!(h.check(7, 3).unwrap_err().server_cluster_id, None);
        let old = Hello { version: 0, ..h };
        assert_eq!(old.check(7, 2).unwrap_err().server_cluster_id, None);
        assert!(Hello::decode(b"GET / HTTP/1.1\r\n\r\n").is_err());
        assert_eq!(decode_answer(&encode_answer(2, None), 7).unwrap(), 2);
        let busy = Refusal::other("too busy");
        let refused = decode_answer(&encode_answer(2, Some(&busy)), 7).unwrap_err();
        assert!(matches!(refused, Error::Protocol(_)), "{refused:?}");
        assert!(decode_answer(&[0, 1], 7).is_err());
        // The bytes as the README's FORMAT section documents them.
        let mut want = b"SLHELLO1".to_vec();
        want.extend_from_slice(&[1, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(h.encode(), want);
        assert_eq!(
            encode_answer(2, Some(&Refusal::other("no"))),
            [1, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, b'n', b'o', 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let long = "é".repeat(MAX_HANDSHAKE_BYTES);
        let answer = encode_answer(2, Some(&Refusal::other(long)));
        assert!(answer.len() <= MAX_HANDSHAKE_BYTES);
        let err = decode_answer(&answer, 7).unwrap_err().to_string();
        assert!(
            err.ends_with(&"é".repeat(MAX_REFUSAL_REASON_BYTES / 2)),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_cluster_id_is_refused_with_a_typed_error() {
        let refusal = hello().check(8, 2).unwrap_err();
        let e = decode_answer(&encode_answer(2, Some(&refusal)), 7).unwrap_err();
        match e {
            Error::ClusterMismatch {
                node_id,
                node_cluster_id,
                cluster_id,
            } => assert_eq!((node_id, node_cluster_id, cluster_id), (2, 8, 7)),
            other => panic!("expected ClusterMismatch, got {other:?}"),
        }
    }

    #[test]
    fn an_answer_without_the_refusal_tail_still_decodes() {
        // An older node's refusal ends after the reason: a generic protocol error.
        let mut old = vec![1u8];
        old.extend_from_slice(&2u64.to_le_bytes());
        old.extend_from_slice(&3u16.to_le_bytes());
        old.extend_from_slice(b"why");
        assert!(matches!(decode_answer(&old, 7), Err(Error::Protocol(_))));
    }

    #[test]
    fn the_certificate_must_back_the_hello() {
        use crate::net::tls::{ClientRole, TlsIdentity};
        let node = |id| TlsIdentity::Node {
            id,
            site: "s".into(),
        };
        let client = |role| TlsIdentity::Client { role };
        let h = hello(); // an append stream from node 1
        assert_eq!(h.authorize(None), Ok(ClientRole::Admin), "plaintext: admin");
        assert_eq!(h.authorize(Some(&node(1))), Ok(ClientRole::Admin));
        for wrong in [node(2), client(ClientRole::Admin)] {
            let refusal = h.authorize(Some(&wrong)).unwrap_err();
            assert!(refusal.identity);
            match decode_answer(&encode_answer(2, Some(&refusal)), 7) {
                Err(Error::Tls { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        for purpose in [Purpose::Rpc, Purpose::Fetch] {
            let h = Hello { purpose, ..h };
            assert!(h.authorize(Some(&node(3))).is_err());
        }
        let c = Hello {
            purpose: Purpose::Client,
            from_node: ANY_NODE,
            ..h
        };
        for role in ClientRole::ALL {
            assert_eq!(c.authorize(Some(&client(role))), Ok(role));
        }
        assert_eq!(c.authorize(Some(&node(5))), Ok(ClientRole::Admin));
    }
}
