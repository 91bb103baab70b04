//! Descriptor headroom: the node needs descriptors for its own files (a new segment at every
//! roll, the superblock, Raft metadata, snapshot staging) and outgoing connections. Running
//! out of them stops consensus, so every accept loop checks that at least a reserve of
//! descriptors stays free under `RLIMIT_NOFILE` and closes the new connection at once if not.
//!
//! Two thresholds: below `reserve` free descriptors every new connection is closed at
//! accept; below `reserve + peer_margin` a new connection is kept only if its handshake
//! says it is a peer (Raft RPC or append stream), so that clients cannot take the last
//! descriptors peers need to keep consensus running.
//!
//! The count of open descriptors is read from `/proc/self/fd` at most every
//! [`RECOUNT_EVERY`] (a directory read, cheap next to a flood), plus the connections
//! accepted since. When the count cannot be read (no `/proc`, or no descriptor left to open
//! the directory) the check fails safe: the connection is refused.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How often the open descriptors are recounted while connections arrive.
pub const RECOUNT_EVERY: Duration = Duration::from_millis(100);

/// The soft and hard `RLIMIT_NOFILE`, `None` if unlimited or unreadable.
pub fn nofile_limits() -> Option<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (rc == 0 && r.rlim_cur != libc::RLIM_INFINITY).then_some((r.rlim_cur, r.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (what servers commonly do at start;
/// the Go runtime does it for every program). Returns the soft limit now in force.
#[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
pub fn raise_nofile_to_hard() -> std::io::Result<u64> {
    let (soft, hard) = nofile_limits().unwrap_or((u64::MAX, u64::MAX));
    if soft >= hard {
        return Ok(soft);
    }
    let r = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(hard)
}

/// Descriptors open in this process now, `None` if they cannot be counted.
pub fn open_descriptors() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory's own descriptor is among the entries; do not count it.
    Some((dir.count() as u64).saturating_sub(1))
}

/// How much room a new connection has (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headroom {
    /// Any connection may be kept.
    Plenty,
    /// Only a peer connection may be kept.
    PeersOnly,
    /// Close it at once.
    None,
}

/// Keeps `reserve` descriptors free: see the module doc.
#[derive(Debug)]
pub struct DescriptorGuard {
    soft_limit: Option<u64>,
    reserve: u64,
    peer_margin: u64,
    counted: Option<u64>,
    counted_at: Option<Instant>,
    accepted_since: u64,
}

impl DescriptorGuard {
    /// A guard keeping `reserve` descriptors free under the current soft limit.
    pub fn new(reserve: usize) -> Self {
        DescriptorGuard {
            soft_limit: nofile_limits().map(|(soft, _)| soft),
            reserve: reserve as u64,
            peer_margin: 0,
            counted: None,
            counted_at: None,
            accepted_since: 0,
        }
    }

    /// Keeps the last `margin` descriptors above the reserve for peer connections.
    pub fn with_peer_margin(mut self, margin: usize) -> Self {
        self.peer_margin = margin as u64;
        self
    }

    /// Connections that could be accepted now before the reserve is reached (`usize::MAX`
    /// when the limit is unlimited).
    pub fn spare_now(&self) -> usize {
        let Some(soft) = self.soft_limit else {
            return usize::MAX;
        };
        let open = open_descriptors().unwrap_or(soft);
        soft.saturating_sub(self.reserve).saturating_sub(open) as usize
    }

    /// Whether the connection just accepted as descriptor `fd` may be kept (any kind).
    #[cfg_attr(not(any(feature = "cli", feature = "testing")), allow(dead_code))]
    pub fn admit(&mut self, fd: RawFd) -> bool {
        self.headroom(fd) == Headroom::Plenty
    }

    /// How much room the connection just accepted as descriptor `fd` has. The kernel hands
    /// out the lowest free descriptor, so every descriptor below `fd` is open: a cheap lower
    /// bound on the count between recounts.
    pub fn headroom(&mut self, fd: RawFd) -> Headroom {
        let Some(soft) = self.soft_limit else {
            return Headroom::Plenty;
        };
        let stale = self.counted_at.is_none_or(|t| t.elapsed() >= RECOUNT_EVERY);
        if stale {
            self.counted = open_descriptors();
            self.counted_at = Some(Instant::now());
            self.accepted_since = 0;
        } else {
            self.accepted_since += 1;
        }
        let Some(counted) = self.counted else {
            return Headroom::None; // cannot count: fail safe
        };
        let open = (counted + self.accepted_since).max(fd as u64 + 1);
        if open + self.reserve + self.peer_margin <= soft {
            Headroom::Plenty
        } else if open + self.reserve <= soft {
            Headroom::PeersOnly
        } else {
            Headroom::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_limits_are_readable() {
        let open = open_descriptors().expect("/proc/self/fd");
        assert!(open >= 3, "stdio at least: {open}");
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(open_descriptors().unwrap() > open.saturating_sub(8));
        drop(f);
        if let Some((soft, hard)) = nofile_limits() {
            assert!(soft <= hard);
        }
    }

    #[test]
    fn a_reserve_larger_than_the_limit_refuses_everything() {
        let mut g = DescriptorGuard::new(usize::MAX / 2);
        if g.soft_limit.is_some() {
            assert!(!g.admit(3));
            assert_eq!(g.spare_now(), 0);
        }
        let mut g = DescriptorGuard::new(0);
        if let Some(soft) = g.soft_limit {
            assert!(g.admit(3));
            assert!(!g.admit(soft as RawFd), "a descriptor at the limit");
            let mut g = DescriptorGuard::new(0).with_peer_margin(10);
            assert_eq!(g.headroom(3), Headroom::Plenty);
            assert_eq!(g.headroom(soft as RawFd - 5), Headroom::PeersOnly);
            assert_eq!(g.headroom(soft as RawFd), Headroom::None);
        }
    }
}
