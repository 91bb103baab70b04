//! Every size and count limit of sitelog in one place, and how they relate.
//!
//! Limits are defined where they are used and re-exported here, or defined here when several
//! encodings share them. Their relationships are compile-time assertions below, so that
//! raising one limit without the others fails the build, not replication at run time. The one
//! relationship that depends on configuration (a node's `max_record_bytes` against its
//! `max_frame_bytes`) is checked when the node starts ([`append_message_bytes`],
//! `NodeConfig::validate`).

pub use crate::io::{DIRECT_ALIGN_BYTES, MAX_IOVECS};
pub use crate::net::fetch::MAX_CHUNK_BYTES;
pub use crate::net::frame::FRAME_HEADER_BYTES;
pub use crate::net::handshake::MAX_HANDSHAKE_BYTES;
pub use crate::net::limits::{MIN_KIND_BUDGET, MIN_PEER_BUDGET};
pub use crate::net::tls::{MAX_CHAIN_CERTS, MAX_PEM_FILE_BYTES};
pub use crate::node::protocol::{MAX_APPEND_PAYLOADS, MAX_READ_BYTES};
pub use crate::raft::dedup::{
    DEFAULT_MAX_PRODUCERS, DEFAULT_PRODUCER_IDLE_EXPIRY_MS, MAX_PRODUCERS,
    MAX_PRODUCER_TABLE_BYTES, PRODUCER_WINDOW_RUNS,
};
pub use crate::raft::log_store::{MAX_PENDING_FLUSHES, MAX_READ_BATCH_BYTES};
pub use crate::raft::remote::MAX_APPENDS_IN_FLIGHT;
pub use crate::raft::replica::MAX_PAYLOAD_ENTRIES;
pub use crate::raft::snapshot::{
    MAX_APP_STATE_BYTES, MAX_MANIFEST_SEGMENTS, MAX_RETIRED_IDS, MAX_TERMS_PER_SEGMENT,
};
pub use crate::raft::wire::MAX_ENTRIES_PER_MESSAGE;
pub use crate::storage::group_commit::{MAX_GROUP_BYTES, MAX_GROUP_CHUNKS};
pub use crate::storage::pin::MAX_PINS;
pub use crate::storage::record::{
    frame_len, FRAME_ALIGN_BYTES, HEADER_SIZE_BYTES as RECORD_HEADER_BYTES, MAX_OFFSET,
    MAX_PAYLOAD_BYTES,
};

/// Default largest message body a connection accepts after its handshake (72 MiB): one
/// replication message of [`MAX_PAYLOAD_ENTRIES`] records of [`NODE_MAX_RECORD_BYTES`].
pub const DEFAULT_MAX_FRAME_BYTES: usize = 72 << 20;
/// A replicated node's default record limit (1 MiB), so that a replication message fits
/// [`DEFAULT_MAX_FRAME_BYTES`].
pub const NODE_MAX_RECORD_BYTES: u32 = 1 << 20;

/// Most client requests a node answers concurrently on one connection (pipelined; see
/// `net::tcp`): beyond it the node stops reading that connection until a reply went out.
/// Also the most requests a [`crate::node::client::Client`] has unanswered on one connection.
pub const MAX_PIPELINED_REQUESTS: usize = 64;
/// Most bytes of request frames a node holds unanswered on one client connection: beyond it
/// the node stops reading the connection. A frame larger than what is free waits until
/// nothing else is in flight, so one frame of the connection's limit is always admitted.
/// Equal to the default frame limit: a pipelined connection holds no more request bytes
/// than one sequential request of the largest size did.
pub const MAX_PIPELINED_BYTES: usize = DEFAULT_MAX_FRAME_BYTES;

/// Most bytes a connection may send before it is authenticated (TLS handshake and hello
/// done): a TLS 1.3 handshake with a certificate chain of [`MAX_CHAIN_CERTS`] fits well
/// within it; past it the connection is closed. Nothing larger is read (or allocated) for a
/// peer nobody knows yet.
pub const MAX_PRE_AUTH_BYTES: usize = 64 << 10;
/// Largest request frame a client of role `consume` may send (its requests are reads and
/// status, a few bytes each); produce and admin clients get the connection's full limit.
pub const MAX_CONSUME_REQUEST_BYTES: usize = 64 << 10;
/// A frame body is read in steps of at most this many bytes, the buffer growing as bytes
/// arrive: a peer announcing a large frame and sending nothing holds (almost) nothing.
pub const FRAME_READ_STEP_BYTES: usize = 1 << 20;

/// Most voters in one configuration, and most nodes in a membership (also the most ids a
/// membership change may name).
pub const MAX_MEMBERS: usize = 1024;
/// Most configurations in a membership (joint consensus has two).
pub const MAX_MEMBERSHIP_CONFIGS: usize = 2;
/// Longest site name of a node, in bytes (a u8 length in the membership encoding).
pub const MAX_SITE_BYTES: usize = 255;
/// Longest advertised address of a node, in bytes (a u8 length in the membership encoding).
pub const MAX_ADDR_BYTES: usize = 255;
/// Longest string of the client protocol (a u16 length).
pub const MAX_CLIENT_STRING_BYTES: usize = u16::MAX as usize;
/// Longest error text a Raft or fetch error reply carries; longer texts are clipped (at a
/// character boundary) because they are diagnostics only.
pub const MAX_ERROR_TEXT_BYTES: usize = 1024;

/// Bytes of an AppendEntries message before its entries: tag, vote (17), two optional log
/// ids (17 each), entry count (4). See `raft::wire`.
pub const APPEND_MESSAGE_HEADER_BYTES: usize = 1 + 17 + 17 + 17 + 4;
/// Bytes an entry of an AppendEntries message adds to its stored frame: index, term, kind,
/// length.
pub const APPEND_ENTRY_OVERHEAD_BYTES: usize = 8 + 8 + 1 + 4;

/// The largest AppendEntries message body a node with records of at most `max_record_bytes`
/// can send: [`MAX_PAYLOAD_ENTRIES`] entries, each its stored frame plus the entry overhead.
pub const fn append_message_bytes(max_record_bytes: u32) -> usize {
    APPEND_MESSAGE_HEADER_BYTES
        + MAX_PAYLOAD_ENTRIES as usize
            * (APPEND_ENTRY_OVERHEAD_BYTES + frame_len(max_record_bytes as usize))
}

/// The largest record limit whose replication messages fit `max_frame_bytes`.
pub const fn max_record_bytes_for_frame(max_frame_bytes: usize) -> u64 {
    let per_entry =
        max_frame_bytes.saturating_sub(APPEND_MESSAGE_HEADER_BYTES) / MAX_PAYLOAD_ENTRIES as usize;
    let frame = per_entry.saturating_sub(APPEND_ENTRY_OVERHEAD_BYTES);
    // The largest payload whose aligned frame is at most `frame`.
    (frame & !(FRAME_ALIGN_BYTES - 1)).saturating_sub(RECORD_HEADER_BYTES) as u64
}

// A default node's replication message fits the default frame limit.
const _: () = assert!(append_message_bytes(NODE_MAX_RECORD_BYTES) <= DEFAULT_MAX_FRAME_BYTES);
const _: () =
    assert!(max_record_bytes_for_frame(DEFAULT_MAX_FRAME_BYTES) >= NODE_MAX_RECORD_BYTES as u64);
const _: () = assert!(
    append_message_bytes(max_record_bytes_for_frame(DEFAULT_MAX_FRAME_BYTES) as u32)
        <= DEFAULT_MAX_FRAME_BYTES
);
// A frame's length travels as a u32.
const _: () = assert!(DEFAULT_MAX_FRAME_BYTES <= u32::MAX as usize);
const _: () = assert!(NODE_MAX_RECORD_BYTES <= MAX_PAYLOAD_BYTES);
// openraft's batch must be one the wire decoder accepts.
const _: () = assert!(MAX_PAYLOAD_ENTRIES as usize <= MAX_ENTRIES_PER_MESSAGE);
// A fetch chunk and its reply header fit a frame.
const _: () = assert!(MAX_CHUNK_BYTES as usize + 64 <= DEFAULT_MAX_FRAME_BYTES);
// A read reply (the byte budget plus the one record always returned) fits a frame.
const _: () =
    assert!(MAX_READ_BYTES + NODE_MAX_RECORD_BYTES as usize + 64 <= DEFAULT_MAX_FRAME_BYTES);
// Counts and lengths fit their prefixes.
const _: () = assert!(MAX_MEMBERS <= u16::MAX as usize);
const _: () = assert!(MAX_SITE_BYTES <= u8::MAX as usize && MAX_ADDR_BYTES <= u8::MAX as usize);
const _: () = assert!(MAX_ERROR_TEXT_BYTES <= u16::MAX as usize);
const _: () = assert!(MAX_TERMS_PER_SEGMENT <= u16::MAX as usize);
const _: () = assert!(MAX_APPEND_PAYLOADS <= u32::MAX as usize);
// A membership (every node with the longest site and address) fits a default record.
const _: () = assert!(
    2 + MAX_MEMBERSHIP_CONFIGS * (2 + 8 * MAX_MEMBERS)
        + 2
        + MAX_MEMBERS * (8 + 1 + MAX_SITE_BYTES + 1 + MAX_ADDR_BYTES)
        <= NODE_MAX_RECORD_BYTES as usize
);
// A hello frame fits the pre-authentication allowance.
const _: () = assert!(MAX_HANDSHAKE_BYTES + FRAME_HEADER_BYTES < MAX_PRE_AUTH_BYTES);
// A refused handshake's reason fits the handshake frame (status, node id, u16 length).
const _: () = assert!(1 + 8 + 2 < MAX_HANDSHAKE_BYTES);
// A single frame of the default limit fits the pipelining window whole (and a larger one,
// configured, is admitted alone); the window's byte count is a semaphore's u32 permits.
const _: () = assert!(MAX_PIPELINED_BYTES >= DEFAULT_MAX_FRAME_BYTES);
const _: () = assert!(MAX_PIPELINED_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_PIPELINED_REQUESTS >= 1 && MAX_PIPELINED_REQUESTS <= u32::MAX as usize);
// A retry of any request a client has pipelined is inside its producer's window (one run per
// request at least), so it gets its original offsets, never a below-window refusal.
const _: () = assert!(PRODUCER_WINDOW_RUNS >= MAX_PIPELINED_REQUESTS);
const _: () = assert!(DEFAULT_MAX_PRODUCERS <= MAX_PRODUCERS);
