//! Rate-limited warnings: a flood must not write one log line per connection. A
//! [`WarnRate`] lets one line through per interval and counts what it held back, so the next
//! line says how many events it stands for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Interval of the warnings the server logs about refused connections and failed accepts
/// (and the metrics endpoint about its own): a flood of bad connections writes one line per
/// reason per 10 s, each with the count of what it stands for ("refused=1234"); the first
/// event of a quiet period is logged at once. The counters
/// (`sitelog_net_connections_refused_total{reason}`) have every event.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// One warning per `every`, with the count of the events in between.
#[derive(Debug)]
pub struct WarnRate {
    every: Duration,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl WarnRate {
    /// A limiter letting one line through per `every`.
    pub const fn new(every: Duration) -> Self {
        WarnRate {
            every,
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// Records one event; returns `Some(n)` when a line should be logged now for the `n`
    /// events since the last line (this one included).
    pub fn event(&self) -> Option<u64> {
        self.held.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| t.elapsed() >= self.every);
        if !due {
            return None;
        }
        *last = Some(Instant::now());
        // Events counted by other threads since belong to this line too.
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count() {
        let w = WarnRate::new(Duration::from_secs(3600));
        assert_eq!(w.event(), Some(1));
        for _ in 0..999 {
            assert_eq!(w.event(), None);
        }
        let w = WarnRate::new(Duration::ZERO);
        assert_eq!(w.event(), Some(1));
        assert_eq!(w.event(), Some(1));
    }
}
