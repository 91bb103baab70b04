//! A budget of connections of one kind, with eviction: when the budget is full, a newcomer
//! takes the place of the least recently active connection that has no request in flight
//! and has been quiet for at least the budget's `min_quiet` (that connection is told to
//! close), or is refused when there is none. `min_quiet` protects a connection in steady use
//! from a burst of newcomers (its next request could already be on the wire, and closing it
//! then would leave that request's fate unknown to its sender).
//!
//! Why eviction rather than refusing newcomers: an idle connection costs the attacker
//! nothing to hold, so a budget that refuses newcomers can be filled for good by a flood of
//! idle connections (the lock-out this replaces). With eviction, idle connections only
//! evict each other, and a connection doing work keeps its place.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What a connection reports about itself: when it last received or sent a message, and
/// how many requests it received and has not answered yet.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU32,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let a = Activity {
            epoch,
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        };
        a.touch();
        a
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request arrived.
    pub fn received(&self) {
        self.touch();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A reply went out.
    pub fn sent(&self) {
        self.touch();
        // Saturating: a final error message may follow the last answer.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    fn evictable(&self, min_quiet_ms: u64) -> bool {
        let quiet_ms = (self.epoch.elapsed().as_millis() as u64)
            .saturating_sub(self.last_ms.load(Ordering::Relaxed));
        self.in_flight.load(Ordering::Relaxed) == 0 && quiet_ms >= min_quiet_ms
    }
}

struct Member {
    activity: Arc<Activity>,
    evict: Arc<Notify>,
}

struct State {
    next_id: u64,
    members: BTreeMap<u64, Member>,
}

struct Shared {
    name: &'static str,
    capacity: usize,
    min_quiet_ms: u64,
    epoch: Instant,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only a plain map behind the lock; a panic cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A budget of `capacity` connections of one kind. Cheap to clone.
#[derive(Clone)]
pub struct Budget(Arc<Shared>);

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("name", &self.0.name)
            .field("capacity", &self.0.capacity)
            .field("len", &self.len())
            .finish()
    }
}

/// Outcome of [`Budget::admit`].
#[derive(Debug)]
pub enum Admission {
    /// Admitted; `evicted` says whether another connection was told to close for it.
    Admitted {
        /// The newcomer's place.
        slot: Slot,
        /// An idle connection was evicted to make room.
        evicted: bool,
    },
    /// Full of busy connections.
    Refused,
}

impl Budget {
    /// A budget named `name` (for logs and refusals) holding at most `capacity` (≥ 1)
    /// connections, evicting only those quiet for at least `min_quiet`.
    pub fn new(name: &'static str, capacity: usize, min_quiet: Duration) -> Self {
        Budget(Arc::new(Shared {
            name,
            capacity: capacity.max(1),
            min_quiet_ms: min_quiet.as_millis() as u64,
            epoch: Instant::now(),
            state: Mutex::new(State {
                next_id: 0,
                members: BTreeMap::new(),
            }),
        }))
    }

    /// The kind's name.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.0.lock().members.len()
    }

    /// Whether no connection is held.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells the least recently active idle connection to close (to give back its
    /// descriptor); false if there is none.
    pub fn evict_one(&self) -> bool {
        self.evict_from(&mut self.0.lock())
    }

    fn evict_from(&self, s: &mut State) -> bool {
        let min_quiet_ms = self.0.min_quiet_ms;
        let victim = s
            .members
            .iter()
            .filter(|(_, m)| m.activity.evictable(min_quiet_ms))
            .min_by_key(|(id, m)| (m.activity.last_ms.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id);
        let Some(m) = victim.and_then(|v| s.members.remove(&v)) else {
            return false;
        };
        m.evict.notify_one();
        true
    }

    /// Takes a place, evicting the least recently active idle connection if full.
    pub fn admit(&self) -> Admission {
        let mut s = self.0.lock();
        let mut evicted = false;
        if s.members.len() >= self.0.capacity {
            if !self.evict_from(&mut s) {
                return Admission::Refused;
            }
            evicted = true;
        }
        let id = s.next_id;
        s.next_id += 1;
        let activity = Arc::new(Activity::new(self.0.epoch));
        let evict = Arc::new(Notify::new());
        s.members.insert(
            id,
            Member {
                activity: activity.clone(),
                evict: evict.clone(),
            },
        );
        Admission::Admitted {
            slot: Slot {
                budget: self.0.clone(),
                id,
                activity,
                evict,
            },
            evicted,
        }
    }
}

/// A connection's place in a budget; dropping it frees the place.
pub struct Slot {
    budget: Arc<Shared>,
    id: u64,
    activity: Arc<Activity>,
    evict: Arc<Notify>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("budget", &self.budget.name)
            .field("id", &self.id)
            .finish()
    }
}

impl Slot {
    /// The connection's activity record (the transport updates it).
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Resolves when the budget evicted this connection to make room for another.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.budget.lock().members.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(a: Admission) -> (Slot, bool) {
        match a {
            Admission::Admitted { slot, evicted } => (slot, evicted),
            Admission::Refused => panic!("refused"),
        }
    }

    #[tokio::test]
    async fn full_budget_evicts_the_least_recently_active_idle_connection() {
        let b = Budget::new("test", 2, Duration::ZERO);
        let (old, e) = admitted(b.admit());
        assert!(!e);
        let (busy, _) = admitted(b.admit());
        busy.activity().received(); // a request in flight: never evicted
        std::thread::sleep(Duration::from_millis(2));
        let (new, e) = admitted(b.admit());
        assert!(e, "the idle one made room");
        tokio::time::timeout(Duration::from_secs(1), old.evicted())
            .await
            .expect("the oldest idle connection is told to close");
        assert_eq!(b.len(), 2);
        new.activity().received();
        assert!(matches!(b.admit(), Admission::Refused), "all busy");
        busy.activity().sent();
        drop(old); // already removed: dropping must not free another place
        assert_eq!(b.len(), 2);
        let (_newest, e) = admitted(b.admit());
        assert!(e, "the answered one is idle again");
    }

    /// The handshake budget's rule: a connection is evicted only once `min_quiet` old (a
    /// handshaking connection is never marked active: its quiet time is its age); until
    /// then newcomers are refused, so a herd connecting at once does not evict itself.
    #[test]
    fn young_connections_are_not_evicted_and_newcomers_are_refused() {
        let min_age = Duration::from_millis(50);
        let b = Budget::new("handshaking", 2, min_age);
        let start = Instant::now();
        let (first, _) = admitted(b.admit());
        let (_second, _) = admitted(b.admit());
        assert!(matches!(b.admit(), Admission::Refused), "both are young");
        let deadline = start + Duration::from_secs(5);
        let (_third, evicted) = loop {
            match b.admit() {
                Admission::Admitted { slot, evicted } => break (slot, evicted),
                Admission::Refused => assert!(Instant::now() < deadline, "never admitted"),
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(evicted && start.elapsed() >= min_age, "admitted only by evicting an old one");
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), first.evicted())
                .await
                .expect("the oldest was told to close");
        });
    }

    #[test]
    fn connections_in_steady_use_are_not_evicted() {
        let b = Budget::new("test", 1, Duration::from_secs(3600));
        let (_active, _) = admitted(b.admit());
        assert!(matches!(b.admit(), Admission::Refused));
        assert!(!b.evict_one());
    }
}
