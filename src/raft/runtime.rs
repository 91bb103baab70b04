//! openraft's async runtime: tokio, with a random source a simulation can seed.
//!
//! openraft draws election timeouts and heartbeat jitter from `AsyncRuntime::thread_rng`.
//! Tokio's own choice is the process-wide random generator, which makes a run impossible to
//! replay. [`SeededRuntime`] is tokio in every other respect; its generator comes from a
//! task-local seed when one is set ([`scope`]) and from fresh entropy otherwise, so a node in
//! production behaves exactly as on plain tokio, and a simulated cluster run inside
//! [`scope`] draws the same timeouts every time.
//!
//! The seed travels down the task tree: a task spawned through this runtime gets a seed
//! derived from its parent's (and the parent's seed moves on), so the sequence does not
//! depend on which task asks first, only on the order of spawns and draws within a task.

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

tokio::task_local! {
    static SEED: Cell<u64>;
}

/// SplitMix64: a bijective mixer; two increments give two independent sequences (one to
/// advance a task's seed, one to derive a child's).
fn splitmix64(x: u64, increment: u64) -> u64 {
    let z = x.wrapping_add(increment);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const ADVANCE: u64 = 0x9e37_79b9_7f4a_7c15;
const CHILD: u64 = 0x6a09_e667_f3bc_c909;

/// The current task's seed, advanced; `None` outside a [`scope`].
fn next_seed() -> Option<u64> {
    SEED.try_with(|c| {
        let s = c.get();
        c.set(splitmix64(s, ADVANCE));
        s
    })
    .ok()
}

static UNSEEDED_DRAWS: AtomicU64 = AtomicU64::new(0);

/// How many random draws this process made outside any [`scope`] (a simulation checks that
/// none of its draws escaped the seed).
#[cfg(any(test, feature = "testing"))]
pub fn unseeded_draws() -> u64 {
    UNSEEDED_DRAWS.load(Ordering::Relaxed)
}

/// Runs `fut` with `seed` as its task-local seed: every random draw openraft makes in it, and
/// in every task it spawns, follows from `seed`.
#[cfg(any(test, feature = "testing"))]
pub fn scope<F: Future>(seed: u64, fut: F) -> impl Future<Output = F::Output> {
    SEED.scope(Cell::new(seed), fut)
}

/// Spawns `fut` on tokio, inheriting a seed derived from the caller's (if it has one).
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match next_seed() {
        Some(s) => tokio::spawn(SEED.scope(Cell::new(splitmix64(s, CHILD)), fut)),
        None => tokio::spawn(fut),
    }
}

/// Tokio with a seedable random source (see the module docs).
#[derive(Debug)]
pub struct SeededRuntime(TokioRuntime);

type Tokio = TokioRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SmallRng::seed_from_u64(next_seed().unwrap_or_else(|| {
            UNSEEDED_DRAWS.fetch_add(1, Ordering::Relaxed);
            fastrand::u64(..)
        }))
    }

    type Mpsc = <Tokio as AsyncRuntime>::Mpsc;
    type Watch = <Tokio as AsyncRuntime>::Watch;
    type Oneshot = <Tokio as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        SeededRuntime(Tokio::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    async fn draws() -> Vec<u64> {
        let mut v = vec![SeededRuntime::thread_rng().random::<u64>()];
        let child = SeededRuntime::spawn(async { SeededRuntime::thread_rng().random::<u64>() });
        v.push(child.await.unwrap());
        v.push(SeededRuntime::thread_rng().random::<u64>());
        v
    }

    #[tokio::test]
    async fn a_seed_fixes_every_draw_and_children_differ() {
        let a = scope(7, draws()).await;
        let b = scope(7, draws()).await;
        let c = scope(8, draws()).await;
        assert_eq!(a, b, "same seed, same draws (also in a spawned task)");
        assert_ne!(a, c);
        assert_ne!(a[0], a[1], "a child's sequence is not its parent's");
        assert_ne!(a[0], a[2], "the seed advances");
        // Outside a scope: entropy, so two runs differ (2^-64 chance of a false failure).
        assert_ne!(draws().await, draws().await);
    }
}
