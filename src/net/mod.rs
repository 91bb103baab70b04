//! The TCP transport between nodes (and from clients to nodes).
//!
//! - [`frame`]: length-prefixed, CRC-32-checked messages with a bounded length.
//! - [`handshake`]: cluster id, protocol version, caller and purpose; mismatches refused.
//! - [`tcp`]: the connector (outgoing, implements the Raft layer's `Connector`, so the Raft
//!   RPCs and the pipelined append streams run over it) and the server (per-kind connection
//!   budgets, handshake and idle timeouts, dispatch to a [`tcp::Service`]).
//! - [`limits`]: [`NetLimits`] and how the limits relate to each other and to the Raft timers.
//! - [`budget`]: a budget of connections of one kind, evicting the least recently active idle.
//! - [`descriptors`]: `RLIMIT_NOFILE` headroom kept for the node's own files.
//! - [`tls`]: mutual TLS 1.3 configurations, identities in certificates, reload;
//!   [`certs`]: the cluster CA and its certificates (`sitelog certs init`).
//! - [`warn_rate`]: one warning per 10 s, with a count, instead of one per connection.
//!
//! - [`fetch`]: bulk, resumable, verified, throttled fetch of sealed segment files;
//!   [`fetch_budget`]: the node's one throttle for all its fetches.
//!
//! Messages are opaque here: `raft::wire` encodes Raft RPCs, `node` encodes client requests.
//! Reconnection: every failed call drops its connection and the next one reconnects;
//! the consensus library spaces retries to an unreachable peer with its backoff.

pub mod budget;
// Issuing certificates is for the command line (`sitelog certs`) and tests: library users
// bring their own PKI and need no certificate generator (rcgen) in their build.
#[cfg(any(feature = "cli", feature = "testing"))]
pub mod certs;
pub mod descriptors;
pub mod fetch;
pub mod fetch_budget;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod tcp;
pub mod tls;
pub mod warn_rate;

pub use limits::NetLimits;
#[cfg_attr(not(feature = "testing"), allow(unused_imports))]
pub use tcp::TcpConnector;
