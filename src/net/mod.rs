//! The TCP transport between nodes (and from clients to nodes).
//!
//! - [`frame`]: length-prefixed, CRC-32-checked messages with a bounded length.
//! - [`handshake`]: cluster id, protocol version, caller and purpose; mismatches refused.
//! - [`tcp`]: the connector (outgoing, implements the Raft layer's `Connector`, so the Raft
//!   RPCs and the pipelined append streams run over it) and the server (accept limits,
//!   handshake timeout, dispatch to a [`tcp::Service`]).
//!
//! - [`fetch`]: bulk, resumable, verified, throttled fetch of sealed segment files.
//!
//! Messages are opaque here: `raft::wire` encodes Raft RPCs, `node` encodes client requests.
//! Reconnection: every failed call drops its connection and the next one reconnects;
//! openraft spaces retries to an unreachable peer with its backoff.

pub mod fetch;
pub mod frame;
pub mod handshake;
pub mod tcp;

pub use tcp::{NetLimits, TcpConnector};
