//! Network limits ([`NetLimits`]) and how they relate to each other and to the Raft timers.
//!
//! Connections are budgeted per kind (see `net::budget`): connections still in their
//! handshake, peers (Raft RPC and append streams), clients, and segment fetches each have
//! their own budget, so a flood of one kind cannot starve another. The budgets are fitted
//! into `max_connections` and into the descriptors the process can spare (see
//! `net::descriptors`) when the server starts.

use crate::{Error, Result};

/// Network limits, with documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetLimits {
    /// Largest message body accepted. Default 72 MiB: a replication message holds at most 64
    /// entries of at most 1 MiB (the node's record limit) plus headers. Only a peer that
    /// passed the handshake can send a frame this large; one that has not is limited to 512
    /// bytes.
    pub max_frame_bytes: usize,
    /// Most incoming connections served at once, all kinds together. The per-kind budgets
    /// below are scaled down to fit it and the spare descriptors ([`NetLimits::fit`]).
    /// Default 512.
    pub max_connections: usize,
    /// Budget of connections that have not completed their handshake. When it is full, the
    /// oldest such connection is closed to make room if it is at least
    /// 250 ms (`MIN_HANDSHAKE_AGE_FOR_EVICTION_MS`) old (a flood of silent connections only evicts
    /// itself), else the newcomer is closed at once (a herd of honest clients does not evict
    /// each other; they connect again after a short backoff). Default 64.
    pub max_handshaking: usize,
    /// Budget of peer connections (Raft RPC and append streams). When full, the least
    /// recently active idle one is closed to make room; one with a request in flight is
    /// never closed. Default 64 (a peer holds about three at a time).
    pub max_peer_connections: usize,
    /// Budget of client connections (same eviction rule). Default 368.
    pub max_client_connections: usize,
    /// Budget of segment-fetch connections (same eviction rule). Default 16.
    pub max_fetch_connections: usize,
    /// Descriptors kept free for the node's own files (segments, superblock, Raft metadata,
    /// snapshot staging, outgoing connections): a connection accepted while fewer than this
    /// many descriptors are free under `RLIMIT_NOFILE` is closed at once. Default 128.
    pub fd_reserve: usize,
    /// Time allowed for connecting (outgoing). Default 1000 ms.
    pub connect_timeout_ms: u64,
    /// Time allowed for the handshake. Default 2000 ms.
    pub handshake_timeout_ms: u64,
    /// Any accepted connection (RPC, append stream, client, fetch) that receives nothing for
    /// this long is closed. Default 300 s. An idle append stream is closed cleanly between
    /// requests and the leader opens a new one when it next has something to send (see
    /// `raft::remote`), so the timeout never costs a replication error; it must still exceed
    /// the Raft timers by far ([`NetLimits::validate`]).
    pub idle_timeout_ms: u64,
}

/// The idle timeout is at least this many times the longest election timeout, so that no
/// connection in steady use (heartbeats arrive every `heartbeat_interval_ms`) is ever idle
/// long enough to be closed.
pub const IDLE_OVER_ELECTION_MIN_RATIO: u64 = 10;

/// A connection still in its handshake is evicted (to make room for a newcomer) only once
/// it is this old; while every handshaking connection is younger, the newcomer is refused
/// (closed at once) instead, and honest callers connect again after a short backoff (see
/// `TcpConnector::open`). Why: with eviction at any age, a herd of honest clients connecting
/// at once (more than the budget) evicted each other before any finished its TLS handshake.
/// 250 ms covers a TLS 1.3 handshake and the hello (two round trips) across a WAN, and is
/// far below the handshake timeout, so a flood of silent connections still turns over
/// several times per timeout. Capped at half the configured handshake timeout.
pub const MIN_HANDSHAKE_AGE_FOR_EVICTION_MS: u64 = 250;

/// Smallest budget a kind other than peers gets when the budgets are scaled down.
pub const MIN_KIND_BUDGET: usize = 4;
/// Smallest peer budget: a peer holds an RPC connection, a replication stream and a
/// heartbeat stream, plus one for a snapshot; four peers' worth.
pub const MIN_PEER_BUDGET: usize = 16;

const DEFAULT: NetLimits = NetLimits {
    max_frame_bytes: crate::limits::DEFAULT_MAX_FRAME_BYTES,
    max_connections: 512,
    max_handshaking: 64,
    max_peer_connections: 64,
    max_client_connections: 368,
    max_fetch_connections: 16,
    fd_reserve: 128,
    connect_timeout_ms: 1000,
    handshake_timeout_ms: 2000,
    idle_timeout_ms: 300_000,
};

// The defaults relate as `validate` requires, for both timer presets.
const _: () = {
    let d = DEFAULT;
    assert!(
        d.max_handshaking
            + d.max_peer_connections
            + d.max_client_connections
            + d.max_fetch_connections
            <= d.max_connections
    );
    assert!(d.max_peer_connections >= MIN_PEER_BUDGET);
    assert!(d.handshake_timeout_ms < d.idle_timeout_ms);
    // A flood of silent handshakes is evicted several times over before it times out.
    assert!(4 * MIN_HANDSHAKE_AGE_FOR_EVICTION_MS <= d.handshake_timeout_ms);
    // WAN election timeouts are at most 2 s, LAN 300 ms.
    assert!(d.idle_timeout_ms >= IDLE_OVER_ELECTION_MIN_RATIO * 2000);
};

impl Default for NetLimits {
    fn default() -> Self {
        DEFAULT
    }
}

/// The per-kind budgets a server runs with (after fitting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KindBudgets {
    /// Connections in their handshake.
    pub handshaking: usize,
    /// Peer connections (RPC, append streams).
    pub peers: usize,
    /// Client connections.
    pub clients: usize,
    /// Segment-fetch connections.
    pub fetch: usize,
}

impl KindBudgets {
    /// All budgets together.
    pub fn total(&self) -> usize {
        self.handshaking + self.peers + self.clients + self.fetch
    }
}

impl NetLimits {
    /// How old a connection in its handshake must be to be evicted for a newcomer:
    /// 250 ms (`MIN_HANDSHAKE_AGE_FOR_EVICTION_MS`), at most half the handshake timeout.
    pub fn min_handshake_age_for_eviction_ms(&self) -> u64 {
        MIN_HANDSHAKE_AGE_FOR_EVICTION_MS.min(self.handshake_timeout_ms / 2)
    }

    /// Checks the limits against each other and against the Raft timers: budgets non-zero,
    /// the handshake shorter than the idle timeout, and the idle timeout at least
    /// `IDLE_OVER_ELECTION_MIN_RATIO` times the longest election timeout.
    pub fn validate(&self, election_timeout_max_ms: u64) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("network limits: {m}")));
        let budgets = [
            self.max_connections,
            self.max_handshaking,
            self.max_peer_connections,
            self.max_client_connections,
            self.max_fetch_connections,
        ];
        if budgets.contains(&0) {
            return bad("every connection budget must be at least 1".into());
        }
        if self.handshake_timeout_ms == 0 || self.handshake_timeout_ms >= self.idle_timeout_ms {
            return bad(format!(
                "handshake_timeout_ms ({}) must be > 0 and below idle_timeout_ms ({})",
                self.handshake_timeout_ms, self.idle_timeout_ms
            ));
        }
        let floor = IDLE_OVER_ELECTION_MIN_RATIO * election_timeout_max_ms;
        if self.idle_timeout_ms < floor {
            return bad(format!(
                "idle_timeout_ms ({}) must be at least {IDLE_OVER_ELECTION_MIN_RATIO} x the \
                 election timeout ({} ms)",
                self.idle_timeout_ms, election_timeout_max_ms
            ));
        }
        Ok(())
    }

    /// The per-kind budgets scaled to fit `room = min(max_connections, spare_connections)`:
    /// peers first get up to a quarter of the room (at least [`MIN_PEER_BUDGET`], at most
    /// `max_peer_connections`), the other kinds share the rest in proportion to their
    /// maxima, each kept at least [`MIN_KIND_BUDGET`] (so the floors may exceed a tiny room).
    pub fn fit(&self, spare_connections: usize) -> KindBudgets {
        let want = KindBudgets {
            handshaking: self.max_handshaking,
            peers: self.max_peer_connections,
            clients: self.max_client_connections,
            fetch: self.max_fetch_connections,
        };
        let room = self.max_connections.min(spare_connections);
        if want.total() <= room {
            return want;
        }
        let peers = want.peers.min((room / 4).max(MIN_PEER_BUDGET));
        let rest_room = room.saturating_sub(peers);
        let rest_want = (want.handshaking + want.clients + want.fetch).max(1);
        let scale = |n: usize| (n * rest_room / rest_want).max(MIN_KIND_BUDGET.min(n));
        KindBudgets {
            handshaking: scale(want.handshaking),
            peers,
            clients: scale(want.clients),
            fetch: scale(want.fetch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_fit() {
        let d = NetLimits::default();
        d.validate(crate::node::Timers::lan().election_timeout_max_ms)
            .unwrap();
        d.validate(crate::node::Timers::wan().election_timeout_max_ms)
            .unwrap();
        assert_eq!(d.fit(usize::MAX).total(), 512);
        let small = d.fit(80);
        assert!(small.total() <= 80 + MIN_PEER_BUDGET, "{small:?}");
        assert!(small.peers >= MIN_PEER_BUDGET);
        assert!(small.handshaking >= MIN_KIND_BUDGET && small.fetch >= MIN_KIND_BUDGET);
    }

    #[test]
    fn validate_relates_timeouts_to_the_raft_timers() {
        let short = NetLimits {
            idle_timeout_ms: 5_000,
            ..NetLimits::default()
        };
        assert!(short
            .validate(crate::node::Timers::lan().election_timeout_max_ms)
            .is_ok());
        assert!(short
            .validate(crate::node::Timers::wan().election_timeout_max_ms)
            .is_err());
        let zero = NetLimits {
            max_peer_connections: 0,
            ..NetLimits::default()
        };
        assert!(zero
            .validate(crate::node::Timers::lan().election_timeout_max_ms)
            .is_err());
        let slow_hello = NetLimits {
            handshake_timeout_ms: 400_000,
            ..NetLimits::default()
        };
        assert!(slow_hello
            .validate(crate::node::Timers::lan().election_timeout_max_ms)
            .is_err());
    }
}
