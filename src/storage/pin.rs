//! Pins and the retention floor.
//!
//! A [`Pin`] says "records from this offset on are still needed": while it lives, no segment
//! holding an offset at or above it is deleted by retention. The replication layer pins what
//! Raft's log must keep (one past its purged id), what the latest snapshot and the
//! application's attached state need, and every segment a peer is fetching in bulk.
//!
//! The *floor* is where retention may delete up to: the lowest of the retention cut and every
//! pin, rounded down to the end of a whole sealed segment (never the active or the last one).
//! [`floor`] computes it from plain numbers so that a property test can check it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most pins one log holds at once (RAII pins and leases together): a bound on memory and on
/// the floor computation; a pin asked for beyond it pins at 0 (keeps everything) instead of
/// failing, which is always safe.
pub const MAX_PINS: usize = 4096;

#[derive(Default)]
struct Table {
    next_id: u64,
    /// RAII pins: id -> offset.
    held: BTreeMap<u64, u64>,
    /// Leases (bulk transfers): offset -> expiry.
    leased: HashMap<u64, Instant>,
    /// Pins refused for being over [`MAX_PINS`] that still live: while any does, the floor
    /// is 0.
    overflow: usize,
}

/// The pins of one log.
#[derive(Default)]
pub(crate) struct Pins {
    table: Mutex<Table>,
}

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pins").finish_non_exhaustive()
    }
}

impl Pins {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Every update is a single map operation; a panic cannot leave the table half-updated.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lowest offset any live pin or unexpired lease holds, if any (expired leases are
    /// dropped on the way).
    pub(crate) fn lowest(&self, now: Instant) -> Option<u64> {
        let mut t = self.table();
        if t.overflow > 0 {
            return Some(0);
        }
        t.leased.retain(|_, expiry| *expiry > now);
        let held = t.held.values().copied().min();
        let leased = t.leased.keys().copied().min();
        held.into_iter().chain(leased).min()
    }

    /// Holds `offset` until `now + lease` (a later call for the same offset extends it).
    pub(crate) fn lease(&self, offset: u64, now: Instant, lease: Duration) {
        let mut t = self.table();
        let count = t.held.len() + t.leased.len();
        if count >= MAX_PINS && !t.leased.contains_key(&offset) {
            t.leased.retain(|_, expiry| *expiry > now);
            if t.held.len() + t.leased.len() >= MAX_PINS {
                // Refused: a missing lease only lets a transfer fail and retry elsewhere.
                return;
            }
        }
        t.leased.insert(offset, now + lease);
    }

    /// When the lease on `offset` ends, if there is one (tests check a transfer's lease).
    #[cfg(test)]
    pub(crate) fn lease_expiry(&self, offset: u64) -> Option<Instant> {
        self.table().leased.get(&offset).copied()
    }

    /// Shortens the lease on `offset` to end by `now + grace` (a lease already ending sooner
    /// is kept). A transfer that sent its last chunk no longer needs the whole lease, but a
    /// second transfer of the same segment may still be between two chunks: the grace covers
    /// its next request, which renews the lease.
    pub(crate) fn shorten_lease(&self, offset: u64, now: Instant, grace: Duration) {
        let mut t = self.table();
        if let Some(expiry) = t.leased.get_mut(&offset) {
            *expiry = (*expiry).min(now + grace);
        }
    }
}

/// Keeps every record at or above [`Pin::offset`] from retention while it lives.
pub struct Pin {
    pins: Arc<Pins>,
    /// `None` for a pin over [`MAX_PINS`] (counted as an overflow: the floor is 0).
    id: Option<u64>,
    offset: u64,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pin").field("offset", &self.offset).finish()
    }
}

impl Pin {
    pub(crate) fn new(pins: Arc<Pins>, offset: u64) -> Pin {
        let id = {
            let mut t = pins.table();
            if t.held.len() + t.leased.len() >= MAX_PINS {
                t.overflow += 1;
                None
            } else {
                let id = t.next_id;
                t.next_id += 1;
                t.held.insert(id, offset);
                Some(id)
            }
        };
        Pin { pins, id, offset }
    }

    /// The first offset this pin keeps.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves the pin (up or down). Moving it down protects only what is still there.
    pub fn move_to(&mut self, offset: u64) {
        if let Some(id) = self.id {
            self.pins.table().held.insert(id, offset);
        }
        self.offset = offset;
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut t = self.pins.table();
        match self.id {
            Some(id) => {
                t.held.remove(&id);
            }
            None => t.overflow -= 1,
        }
    }
}

/// One segment as the floor computation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentBounds {
    /// First offset.
    pub base: u64,
    /// One past its last offset.
    pub end: u64,
    /// Sealed (immutable); the active segment is not.
    pub sealed: bool,
}

/// The floor: the end of the last segment retention may delete, or `None` when none may be.
///
/// `segments` are the log's segments oldest first; `cut` is where retention by size or age
/// would cut (the end of the segments it would drop); `lowest_pin` the lowest live pin.
/// A segment may be deleted when it and every older one are sealed and contiguous, it is not
/// the last segment (the log always keeps one to append to or read its end from), and it ends
/// at or below both the cut and every pin.
pub fn floor(cut: u64, lowest_pin: Option<u64>, segments: &[SegmentBounds]) -> Option<u64> {
    let limit = lowest_pin.map_or(cut, |p| p.min(cut));
    let mut out = None;
    let last = segments.len().saturating_sub(1);
    for (i, s) in segments.iter().enumerate() {
        let contiguous = i == 0 || segments[i - 1].end == s.base;
        if i == last || !s.sealed || !contiguous || s.end > limit {
            break;
        }
        out = Some(s.end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segs_from(sizes: &[(u64, bool)]) -> Vec<SegmentBounds> {
        let mut base = 0;
        sizes
            .iter()
            .map(|&(len, sealed)| {
                let s = SegmentBounds {
                    base,
                    end: base + len,
                    sealed,
                };
                base += len;
                s
            })
            .collect()
    }

    proptest! {
        #[test]
        fn floor_never_passes_a_pin_the_cut_or_the_active_segment(
            sizes in proptest::collection::vec((1u64..50, proptest::bool::weighted(0.85)), 0..12),
            cut in 0u64..400,
            pins in proptest::collection::vec(0u64..400, 0..4),
        ) {
            let segs = segs_from(&sizes);
            let lowest = pins.iter().copied().min();
            let f = floor(cut, lowest, &segs);
            if let Some(f) = f {
                // Only whole segments, all sealed, never the last one.
                let k = segs.iter().position(|s| s.end == f).expect("floor on a boundary");
                prop_assert!(k + 1 < segs.len());
                prop_assert!(segs[..=k].iter().all(|s| s.sealed));
                // Nothing a pin holds, nothing above the cut.
                prop_assert!(f <= cut);
                for p in &pins {
                    prop_assert!(f <= *p, "floor {} above pin {}", f, p);
                }
            }
            // Maximal: the next segment could not have gone too.
            let k = f.map_or(0, |f| segs.iter().position(|s| s.end == f).unwrap() + 1);
            if let Some(next) = segs.get(k) {
                let blocked = k + 1 == segs.len()
                    || !next.sealed
                    || next.end > cut
                    || lowest.is_some_and(|p| next.end > p);
                prop_assert!(blocked, "segment {:?} could have been deleted", next);
            }
        }
    }

    #[test]
    fn pins_and_leases_set_the_lowest_offset() {
        let pins = Arc::new(Pins::default());
        let t0 = Instant::now();
        assert_eq!(pins.lowest(t0), None);
        let mut a = Pin::new(pins.clone(), 100);
        let b = Pin::new(pins.clone(), 50);
        assert_eq!(pins.lowest(t0), Some(50));
        drop(b);
        assert_eq!(pins.lowest(t0), Some(100));
        a.move_to(300);
        assert_eq!(a.offset(), 300);
        pins.lease(200, t0, Duration::from_secs(10));
        assert_eq!(pins.lowest(t0), Some(200));
        // An expired lease no longer holds anything.
        assert_eq!(pins.lowest(t0 + Duration::from_secs(11)), Some(300));
        drop(a);
        assert_eq!(pins.lowest(t0), None);
    }

    #[test]
    fn a_finished_transfer_shortens_its_lease_and_never_lengthens_one() {
        let pins = Pins::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        pins.lease(200, t0, s(30));
        pins.lease(300, t0, s(1));
        pins.shorten_lease(200, t0, s(2));
        pins.shorten_lease(300, t0, s(2));
        pins.shorten_lease(400, t0, s(2)); // no lease there: nothing is added
        assert_eq!(pins.lowest(t0), Some(200));
        assert_eq!(pins.lowest(t0 + Duration::from_millis(1500)), Some(200));
        assert_eq!(pins.lowest(t0 + Duration::from_millis(2500)), None);
        // A second transfer's next chunk renews the whole lease.
        pins.lease(200, t0 + s(3), s(30));
        assert_eq!(pins.lowest(t0 + s(20)), Some(200));
    }

    #[test]
    fn pins_over_the_limit_hold_everything() {
        let pins = Arc::new(Pins::default());
        let t0 = Instant::now();
        let held: Vec<Pin> = (0..MAX_PINS as u64)
            .map(|i| Pin::new(pins.clone(), 1000 + i))
            .collect();
        let extra = Pin::new(pins.clone(), 5000);
        assert_eq!(pins.lowest(t0), Some(0));
        drop(extra);
        assert_eq!(pins.lowest(t0), Some(1000));
        drop(held);
    }
}
