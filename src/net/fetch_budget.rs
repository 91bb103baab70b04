//! One node's bulk-fetch budget: a token bucket (governor's GCRA) that every segment fetch
//! of the node draws from, catch-up and repair alike, however many run at once. A throttle
//! per fetch let `--fetch-mb-per-s 100` move about 400 MB/s with 4 segments in parallel,
//! which starved the writers on the sources (commit p99 5.2× the quiet p99 during a rebuild).
//!
//! Its CPU is bounded too. The CPU work of bulk transfer (reading and zstd on the source,
//! decompressing and checking on the fetcher, verifying a whole file) runs on one thread per
//! node, at nice +10 ([`FetchBudget::run_cpu`]): it uses at most one core, never the async
//! threads that carry the node's consensus traffic, and the scheduler runs the writers'
//! threads first when cores are short. Writes and fsyncs of fetched chunks are I/O, not CPU:
//! they run on the blocking pool, so several segments' fsyncs still overlap.
//!
//! The bucket counts KiB (so a u32 rate covers 4 TB/s) and holds at most
//! [`BURST_MS`] worth of them: a fetch that was idle cannot then burst a whole second's
//! budget at once. A chunk larger than the burst is paid for in pieces.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Bytes per cell of the bucket.
const CELL_BYTES: u64 = 1024;
/// The burst: this many milliseconds of the rate.
pub const BURST_MS: u64 = 50;

/// Nice value of the bulk-transfer thread: below the node's other threads.
const BULK_NICE: i32 = 10;

/// A node's budget for bulk fetches: cheap to clone (clones share the bucket and the thread).
#[derive(Clone, Default)]
pub struct FetchBudget {
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    burst_cells: u32,
    cpu: Arc<BulkThread>,
}

type Job = Box<dyn FnOnce() + Send>;

/// The node's one thread for the CPU work of bulk transfer, started on first use; it ends
/// when the last clone of the budget is dropped (its queue closes).
#[derive(Default)]
struct BulkThread {
    queue: std::sync::OnceLock<std::io::Result<std::sync::mpsc::Sender<Job>>>,
}

impl BulkThread {
    fn queue(&self) -> crate::Result<&std::sync::mpsc::Sender<Job>> {
        self.queue
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("sitelog-bulk".into())
                    .spawn(move || {
                        lower_own_priority();
                        for job in rx {
                            job();
                        }
                    })
                    .map(|_| tx)
            })
            .as_ref()
            // The spawn error stays in the cell (later calls see it too), so each caller gets
            // its own copy, keeping the OS error code.
            .map_err(|e| {
                let copy = e.raw_os_error().map_or_else(
                    || std::io::Error::new(e.kind(), e.to_string()),
                    std::io::Error::from_raw_os_error,
                );
                crate::Error::io("<thread sitelog-bulk>", copy)
            })
    }
}

/// Raises the calling thread's nice value (always allowed: lowering one's own priority).
fn lower_own_priority() {
    // SAFETY: gettid and setpriority take no pointers; a failure only leaves the priority.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, BULK_NICE);
    }
}

impl std::fmt::Debug for FetchBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchBudget")
            .field("limited", &self.limiter.is_some())
            .field("burst_cells", &self.burst_cells)
            .finish()
    }
}

impl FetchBudget {
    /// A budget of `max_bytes_per_s` for all the node's fetches together (`None` or 0:
    /// unlimited).
    pub fn new(max_bytes_per_s: Option<u64>) -> Self {
        let Some(rate) = max_bytes_per_s.filter(|&r| r > 0) else {
            return FetchBudget::default();
        };
        let cells_per_s = (rate / CELL_BYTES).clamp(1, u64::from(u32::MAX)) as u32;
        let burst = (u64::from(cells_per_s) * BURST_MS / 1000).clamp(1, u64::from(u32::MAX)) as u32;
        // Both are at least 1 by the clamps above.
        let (Some(rate_nz), Some(burst_nz)) =
            (NonZeroU32::new(cells_per_s), NonZeroU32::new(burst))
        else {
            return FetchBudget::default();
        };
        let quota = Quota::per_second(rate_nz).allow_burst(burst_nz);
        FetchBudget {
            limiter: Some(Arc::new(RateLimiter::direct(quota))),
            burst_cells: burst,
            ..FetchBudget::default()
        }
    }

    /// Whether fetches are limited at all (the unit tests check that a zero rate is not).
    #[cfg(test)]
    fn is_limited(&self) -> bool {
        self.limiter.is_some()
    }

    /// Runs `work` on the node's bulk-transfer thread (one core at most, low priority),
    /// after the work queued before it.
    pub async fn run_cpu<T, F>(&self, work: F) -> crate::Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic in the work must not end the thread: its caller gets an error.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            if let Ok(out) = out {
                let _ = tx.send(out);
            }
        });
        self.cpu
            .queue()?
            .send(job)
            .map_err(|_| crate::Error::TaskFailed {
                task: "bulk-transfer thread",
                reason: "stopped".into(),
            })?;
        rx.await.map_err(|_| crate::Error::TaskFailed {
            task: "bulk-transfer work",
            reason: "panicked".into(),
        })
    }

    /// Waits until `bytes` may be fetched (call before or after moving them; the rate holds
    /// either way over any span longer than the burst).
    pub async fn spend(&self, bytes: u64) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let mut cells = bytes.div_ceil(CELL_BYTES);
        while cells > 0 {
            let piece = cells.min(u64::from(self.burst_cells)) as u32;
            let Some(n) = NonZeroU32::new(piece) else {
                return;
            };
            loop {
                match limiter.check_n(n) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                    }
                    // The piece never exceeds the burst; defensively, do not block forever.
                    Err(_) => break,
                }
            }
            cells -= u64::from(piece);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn parallel_fetches_share_one_rate() {
        // 10 MB/s shared by 4 tasks moving 1 MB each: about 0.4 s in all, not 0.1 s.
        let budget = FetchBudget::new(Some(10_000_000));
        let t = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let b = budget.clone();
                tokio::spawn(async move {
                    for _ in 0..4 {
                        b.spend(250_000).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        // 4 MB at 10 MB/s less the initial burst (50 ms worth).
        assert!(
            secs >= 0.3,
            "4 MB went through a 10 MB/s budget in {secs:.3} s"
        );
    }

    #[tokio::test]
    async fn cpu_work_runs_on_one_low_priority_thread_and_survives_a_panic() {
        let budget = FetchBudget::new(Some(1_000_000));
        let probe = || {
            // SAFETY: getpriority takes no pointers.
            let nice = unsafe {
                libc::getpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as _)
            };
            (std::thread::current().name().map(String::from), nice)
        };
        let (name, nice) = budget.run_cpu(probe).await.unwrap();
        assert_eq!(name.as_deref(), Some("sitelog-bulk"));
        assert_eq!(nice, BULK_NICE);
        let other = budget.clone();
        let a = budget
            .run_cpu(|| std::thread::current().id())
            .await
            .unwrap();
        let b = other.run_cpu(|| std::thread::current().id()).await.unwrap();
        assert_eq!(a, b, "clones share the one thread");
        assert!(budget.run_cpu(|| panic!("boom")).await.is_err());
        assert_eq!(
            budget.run_cpu(|| 7).await.unwrap(),
            7,
            "the thread lives on"
        );
    }

    #[tokio::test]
    async fn chunks_larger_than_the_burst_are_paid_in_pieces() {
        let budget = FetchBudget::new(Some(1_000_000));
        let t = Instant::now();
        budget.spend(200_000).await; // 4× the burst
        assert!(t.elapsed() >= Duration::from_millis(100));
        FetchBudget::new(None).spend(u64::MAX).await; // unlimited: at once
        assert!(!FetchBudget::new(Some(0)).is_limited());
    }
}
