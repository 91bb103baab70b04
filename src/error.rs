//! The one error type of sitelog.
//!
//! Every fallible library call returns [`Result`]. Variants are typed so that callers (and the
//! replication layer above) can tell "retry later" (`NoSpace`), "repair from a peer"
//! (`Corruption`) and "this log is dead until reopened" (`Poisoned`) apart.

use std::path::PathBuf;

/// Result alias used throughout sitelog.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in sitelog. Non-exhaustive: new failure kinds are added as
/// variants without breaking callers (match with a wildcard arm).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error that is not one of the more specific cases below.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The disk is full. The append failed cleanly, nothing was acknowledged, and the log
    /// accepts writes again once space is freed (for example by `purge_before` or retention).
    #[error("no space left on device while writing {path}")]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },

    /// An earlier write or fsync failed; the kernel may have dropped the dirty pages, so nothing
    /// written since the last successful fsync can be trusted. Every later write fails with this
    /// error. Reopen the log (recovery decides what survived) or repair from peers.
    #[error("log is poisoned by an earlier failure and accepts no more writes: {reason}")]
    Poisoned {
        /// What failed first.
        reason: String,
    },

    /// Bytes on disk that were known durable (at or below the durable watermark, inside a sealed
    /// segment, or proven acknowledged by a later record) fail their checksum or do not belong
    /// where they are. Never skipped, never truncated silently.
    #[error(
        "corruption in {segment} at file offset {file_offset} (record offset {record_offset:?}): \
         {detail}"
    )]
    Corruption {
        /// The damaged file.
        segment: PathBuf,
        /// Byte position inside that file.
        file_offset: u64,
        /// The log offset of the damaged record, when known.
        record_offset: Option<u64>,
        /// What check failed.
        detail: String,
    },

    /// Another `Log` (in this or another process) holds the directory's lock.
    #[error("log directory {path} is locked by another process or handle")]
    Locked {
        /// The log directory.
        path: PathBuf,
    },

    /// The offset is at or after the end (below the start is [`Error::BelowFloor`]).
    #[error("offset {offset} is out of range [{start}, {end})")]
    OutOfRange {
        /// The requested offset.
        offset: u64,
        /// First readable offset.
        start: u64,
        /// One past the last appended offset.
        end: u64,
    },

    /// The offset lies below the first record still held (Kafka's `OffsetOutOfRange`): older
    /// records were deleted by retention or purged. Nothing is skipped silently; start again
    /// at `first_available`.
    #[error(
        "offset {offset} is below the first available offset {first_available} (older records \
         were deleted by retention)"
    )]
    BelowFloor {
        /// The requested offset.
        offset: u64,
        /// The first offset still held.
        first_available: u64,
    },

    /// A caller-supplied argument breaks a documented limit.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A value is too long (or a list too many) for its encoding or limit: a string over its
    /// length prefix, a membership change with more ids than a membership holds. Refused,
    /// never cut; nothing was sent or written.
    #[error("{what} is {len} long, over the limit {max}")]
    TooLong {
        /// What was being encoded.
        what: &'static str,
        /// Its length (bytes, or items for a list).
        len: usize,
        /// The most allowed.
        max: usize,
    },

    /// A background task or worker thread of the node ended without its result: it panicked,
    /// was cancelled, or its thread stopped. What it was doing was not done.
    #[error("{task} failed: {reason}")]
    TaskFailed {
        /// Which task (a repair, a snapshot fetch, the bulk-transfer thread, ...).
        task: &'static str,
        /// Why, for people to read.
        reason: String,
    },

    /// No node answered as the leader within the wait (an election did not settle, or a
    /// majority is down). Nothing was changed; retry once a leader is elected.
    #[error("no node answered as the leader within {waited_ms} ms")]
    NoLeader {
        /// How long the caller waited for one.
        waited_ms: u64,
    },

    /// A documented invariant of sitelog itself broke (a bug, never a user error or a fault
    /// of the disk or network). Nothing was acknowledged by the failing call.
    #[error("internal error: {0}")]
    Internal(&'static str),

    /// The node was initialized already (it holds a log or a vote): founding a cluster on it
    /// again is refused, and nothing changed. Founding members get this when another one
    /// initialized first and replicated to them.
    #[error("consensus: the node is initialized already")]
    AlreadyInitialized,

    /// Another membership change is not committed yet (or the new leader has not committed
    /// an entry of its own term): retry once it is.
    #[error("consensus: another membership change is in progress")]
    MembershipChangeInProgress,

    /// The consensus layer refused a membership (an empty voter set, a voter that is not a
    /// learner first, a node's address changed under its id, a founding set without this
    /// node). Nothing changed.
    #[error("consensus: membership change refused: {reason}")]
    ChangeMembershipRefused {
        /// Why, for people to read.
        reason: String,
    },

    /// The consensus layer stopped on a fatal error (a storage failure, a panic): this replica
    /// serves nothing until it is restarted or healed.
    #[error("consensus stopped on a fatal error: {reason}")]
    Fatal {
        /// What failed, for people to read.
        reason: String,
    },

    /// The consensus layer was shut down (the node is stopping or stopped).
    #[error("consensus: shut down")]
    Shutdown,

    /// A write's fate is unknown: it was appended, then the leader changed, and it may or may
    /// not be committed through the new leader. Retrying may duplicate it.
    #[error("consensus: write outcome unknown: {reason}")]
    OutcomeUnknown {
        /// What happened, for people to read.
        reason: String,
    },

    /// A write reached a node that is not the leader. Writes are not forwarded: retry on the
    /// leader named here (when one is known).
    #[error("not the leader; leader is {leader:?} at {addr:?}")]
    NotLeader {
        /// The current leader's node id, when known.
        leader: Option<u64>,
        /// The current leader's address, when known.
        addr: Option<String>,
    },

    /// A peer broke the wire protocol: garbage, a bad checksum, an oversized length, a wrong
    /// cluster id or protocol version. The connection is closed; nothing it sent was used.
    #[error("protocol: {0}")]
    Protocol(String),

    /// A client's connection to a node was lost (closed by the node, broken) with requests
    /// on it. A request written before is of unknown fate; one not written yet was not sent.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// The node's address.
        addr: String,
        /// What ended it, for people to read.
        reason: String,
    },

    /// A node answered a client's request with an error (its text, as the node wrote it).
    #[error("node refused: {message}")]
    Remote {
        /// The node's error text, for people to read.
        message: String,
    },

    /// A node refused the connection because it belongs to another cluster: the caller's
    /// cluster id (`--cluster-id`) is not the node's. Nothing was sent.
    #[error(
        "cluster id mismatch: node {node_id} belongs to cluster {node_cluster_id:#x} \
         ({node_cluster_id}), not to cluster {cluster_id:#x} ({cluster_id}); check --cluster-id"
    )]
    ClusterMismatch {
        /// The refusing node.
        node_id: u64,
        /// The refusing node's cluster id.
        node_cluster_id: u64,
        /// The cluster id the caller asked for.
        cluster_id: u64,
    },

    /// This node is not serving: its storage failed and it stepped aside while it heals (or
    /// it gave up and is stopping). Nothing was done; the request may go to another node.
    #[error("node not serving: {reason}")]
    Unavailable {
        /// Why (the storage fault, or why healing gave up).
        reason: String,
    },

    /// A node was started on a data directory that belongs to another node or cluster (its
    /// `identity` file, or for a directory from before identity files its `raft_meta`, says
    /// so). Nothing was written. Start the node with its own directory, or give a new node an
    /// empty one.
    #[error(
        "data directory {path} belongs to {} of cluster {found_cluster_id:#x}, not to node \
         {expected_node_id} of cluster {expected_cluster_id:#x}; refusing to start (give a new \
         node an empty directory)",
        .found_node_id.map_or("a node".to_string(), |n| format!("node {n}"))
    )]
    WrongIdentity {
        /// The data directory.
        path: PathBuf,
        /// The node id it was started as.
        expected_node_id: u64,
        /// The cluster id it was started with.
        expected_cluster_id: u64,
        /// The node id the directory records (`None`: a directory from before identity
        /// files, which records only its cluster).
        found_node_id: Option<u64>,
        /// The cluster id the directory records.
        found_cluster_id: u64,
    },

    /// The node id was removed from the cluster's membership; a removed id never joins again
    /// (its old data, votes and log could otherwise come back as a fresh member). Give the new
    /// node a new id.
    #[error(
        "node id {node_id} was removed from the cluster and can never join again; use a new id"
    )]
    RetiredNode {
        /// The retired id.
        node_id: u64,
    },

    /// TLS could not be set up or a peer's certificate was refused: a missing or malformed
    /// certificate or key file, a certificate that names no (or the wrong) identity, a
    /// handshake that failed. The reason names files and identities, never key material.
    #[error("TLS: {reason}")]
    Tls {
        /// What failed, for people to read.
        reason: String,
    },

    /// The client's certificate role does not allow this request. Nothing was done.
    #[error("not allowed: the client role {role} does not allow {op}")]
    NotAllowed {
        /// The role the client's certificate carries.
        role: crate::net::tls::ClientRole,
        /// The refused kind of request.
        op: crate::net::tls::Operation,
    },

    /// A snapshot offer names a node to fetch its segments from that is not a member of the
    /// cluster: not a voter or learner of the offered membership, or retired (in the offer's
    /// retired set or the receiver's). Nothing was fetched or installed; the offer is
    /// answered with an error.
    #[error("snapshot offer refused: it names node {node_id} as a segment source, {reason}")]
    UntrustedSnapshot {
        /// The node the offer names.
        node_id: u64,
        /// Why it is not trusted, for people to read.
        reason: String,
    },

    /// A node closed (or reset) a new connection before its handshake completed, without
    /// an answer: what a node does to a newcomer while its handshake budget is full of
    /// handshakes too young to evict (a herd of clients connecting at once). Nothing was
    /// sent; connecting again shortly succeeds once the herd's handshakes finish. A node
    /// that speaks no TLS closes a TLS caller alike.
    #[error("{addr} closed the connection before the handshake ({reason}); it may be busy: try again")]
    ConnectRefused {
        /// The node's address.
        addr: String,
        /// What the caller saw (EOF, reset), for people to read.
        reason: String,
    },

    /// The tailing reader's timeout elapsed before a new durable record arrived; or a site
    /// replacement's catch-up deadline passed before the new node's commit end reached it.
    #[error("timed out waiting for offset {offset}")]
    Timeout {
        /// The offset waited for.
        offset: u64,
    },

    /// The producer is unknown: never registered, idle past its expiry, or evicted past the
    /// producer bound. Nothing of this request was stored twice, but whether earlier
    /// unanswered messages were stored is unknown; register a new producer.
    #[error("producer {producer} expired (unknown, idle too long, or evicted)")]
    ProducerExpired {
        /// The producer id.
        producer: u64,
    },

    /// A sequence number after the next one the producer must send: an earlier one is
    /// missing. Nothing was appended; resend from `expected_seq`.
    #[error("producer {producer}: seq {got_seq} out of order, expected {expected_seq}")]
    ProducerOutOfOrder {
        /// The producer id.
        producer: u64,
        /// The seq the producer must send next.
        expected_seq: u64,
        /// The seq it sent.
        got_seq: u64,
    },

    /// A sequence number committed long ago, below the producer's window: it is stored, but
    /// its offset is no longer known. Nothing was appended.
    #[error("producer {producer}: seq {seq} is below the window (last committed {last_seq})")]
    ProducerSeqBelowWindow {
        /// The producer id.
        producer: u64,
        /// The seq sent.
        seq: u64,
        /// The producer's last committed seq.
        last_seq: u64,
    },
}

impl Error {
    /// Builds the right variant for an OS error on `path`: ENOSPC becomes [`Error::NoSpace`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Error::NoSpace { path }
        } else {
            Error::Io { path, source }
        }
    }

    /// True when the failure leaves the log usable (nothing was acknowledged or lost).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NoSpace { .. }
                | Error::Timeout { .. }
                | Error::Unavailable { .. }
                | Error::NoLeader { .. }
                | Error::MembershipChangeInProgress
        )
    }
}
