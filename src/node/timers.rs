//! Raft timers of a node ([`Timers`]): heartbeats and election timeouts.

use crate::raft::replica::RaftTimers;
use crate::{Error, Result};

/// The longest heartbeat interval or election timeout accepted, in milliseconds: beyond a
/// minute a lost leader would go unnoticed for longer than any deployment wants.
pub const MAX_TIMER_MS: u64 = 60_000;

/// Raft timers. Presets: [`Timers::lan`] (the default) and [`Timers::wan`]; anything else
/// through [`Timers::custom`], which checks that the values make sense together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timers {
    /// A leader sends heartbeats this often. LAN 50 ms, WAN 100 ms.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in
    /// `[election_timeout_min_ms, election_timeout_max_ms)` starts an election (after a
    /// pre-vote). LAN 150 ms, WAN 1000 ms.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`. LAN 300 ms, WAN 2000 ms.
    pub election_timeout_max_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers::lan()
    }
}

impl Timers {
    /// For a LAN or one machine: heartbeats every 50 ms, elections after 150–300 ms of
    /// silence.
    pub const fn lan() -> Self {
        Timers {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
        }
    }

    /// For sites up to ~50 ms round trip apart: elections after 1–2 s of silence (about
    /// 20–40 round trips, so a slow link does not cause needless elections), heartbeats every
    /// 100 ms. Expect a failover of about 1.5–3 s.
    pub const fn wan() -> Self {
        Timers {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
        }
    }

    /// Custom timers. Refused with [`Error::InvalidArgument`] unless
    /// `0 < heartbeat_interval_ms < election_timeout_min_ms < election_timeout_max_ms <=`
    /// `MAX_TIMER_MS`: a heartbeat slower than the election timeout would make followers
    /// start elections against a healthy leader.
    pub fn custom(
        heartbeat_interval_ms: u64,
        election_timeout_min_ms: u64,
        election_timeout_max_ms: u64,
    ) -> Result<Self> {
        let ordered = 0 < heartbeat_interval_ms
            && heartbeat_interval_ms < election_timeout_min_ms
            && election_timeout_min_ms < election_timeout_max_ms
            && election_timeout_max_ms <= MAX_TIMER_MS;
        if !ordered {
            return Err(Error::InvalidArgument(format!(
                "raft timers: need 0 < heartbeat ({heartbeat_interval_ms} ms) < election min \
                 ({election_timeout_min_ms} ms) < election max ({election_timeout_max_ms} ms) \
                 <= {MAX_TIMER_MS} ms"
            )));
        }
        Ok(Timers {
            heartbeat_interval_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
        })
    }

    /// The consensus layer's form of these timers.
    pub(crate) fn to_raft(self) -> RaftTimers {
        RaftTimers {
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_custom_timers() {
        for t in [Timers::lan(), Timers::wan()] {
            let c = Timers::custom(
                t.heartbeat_interval_ms,
                t.election_timeout_min_ms,
                t.election_timeout_max_ms,
            );
            assert_eq!(c.ok(), Some(t));
        }
        assert_eq!(Timers::default(), Timers::lan());
        assert_eq!(Timers::lan().to_raft(), RaftTimers::default());
        let wan = RaftTimers {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
        };
        assert_eq!(Timers::wan().to_raft(), wan);
    }

    #[test]
    fn custom_refuses_disordered_timers() {
        for (hb, min, max) in [
            (0, 150, 300),
            (200, 150, 300),
            (50, 300, 300),
            (50, 150, 60_001),
        ] {
            assert!(
                matches!(Timers::custom(hb, min, max), Err(Error::InvalidArgument(_))),
                "{hb} {min} {max}"
            );
        }
    }
}
