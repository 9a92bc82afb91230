//! Capped exponential backoff with jitter, for retry and reconnect loops.
//!
//! Replicas that lose the same dependency at the same moment (a broker restart, a database
//! fail-over) would otherwise retry in lock-step and hit it together when it comes back;
//! doubling spaces the attempts out, the cap bounds how stale a recovered loop can be, and
//! the jitter spreads the replicas apart.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

/// Delays that double from `min` up to `max`, each drawn with "equal jitter".
///
/// With a base delay `b` (which doubles from `min` and is capped at `max`), each delay is
/// drawn uniformly from `[b/2, b]`. Equal jitter rather than full jitter (`[0, b]`): full
/// jitter spreads load slightly better, but it may return delays close to zero, and a
/// reconnect loop against a server that is down would then spin on it. Equal jitter keeps
/// a guaranteed half of the backoff while still de-synchronising replicas.
///
/// The randomness comes from a small xorshift generator seeded per instance, not from a
/// cryptographic source: jitter only has to differ between processes and instances.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The base of the next delay.
    base: Duration,
    rng: XorShift64Star,
}

impl Backoff {
    /// A backoff starting at `min` and capped at `max`.
    ///
    /// A zero `min` is raised to 1 ms (doubling zero would never grow), and `min` is
    /// lowered to `max` when it exceeds it: the cap is the promise callers rely on.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1)).min(max);
        Backoff {
            min,
            max,
            base: min,
            rng: XorShift64Star::seeded(),
        }
    }

    /// The next delay to wait, in `[current()/2, current()]`; doubles the base for the one
    /// after (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = base.saturating_mul(2).min(self.max);
        let low = base / 2;
        let span = u64::try_from((base - low).as_nanos()).unwrap_or(u64::MAX);
        let offset = self.rng.next() % span.saturating_add(1);
        (low + Duration::from_nanos(offset)).min(base)
    }

    /// Starts over from `min`: call it once an attempt succeeded, so that the next failure
    /// is retried quickly again.
    pub fn reset(&mut self) {
        self.base = self.min;
    }

    /// The base (un-jittered upper bound) of the next delay: `min` after `new` or
    /// [`reset`](Self::reset), then doubling up to `max`.
    pub fn current(&self) -> Duration {
        self.base
    }

    /// Sleeps the next delay. Returns `false` as soon as `stop` is cancelled (also when it
    /// already is), so a retry loop can end at shutdown instead of finishing its sleep:
    /// `while backoff.wait(&stop).await { ... }`.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            biased;
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// xorshift64* (Vigna): tiny, fast, good enough for jitter; avoids a `rand` dependency.
#[derive(Debug)]
struct XorShift64Star(u64);

impl XorShift64Star {
    /// Seeded from `RandomState` (random keys per process, different per instance) mixed
    /// with the wall clock.
    fn seeded() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(now);
        // The state must never be zero, or the generator only ever returns zero.
        XorShift64Star(hasher.finish() | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn assert_within(delay: Duration, base: Duration) {
        assert!(
            delay >= base / 2 && delay <= base,
            "{delay:?} not within [{:?}, {base:?}]",
            base / 2
        );
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let bases: Vec<_> = (0..7)
            .map(|_| {
                let base = b.current();
                assert_within(b.next_delay(), base);
                base
            })
            .collect();
        assert_eq!(
            bases,
            [100, 200, 400, 800, 1000, 1000, 1000].map(|ms| ms * MS)
        );
    }

    #[test]
    fn reset_starts_over_from_min() {
        let mut b = Backoff::new(10 * MS, 1000 * MS);
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.current(), 320 * MS);
        b.reset();
        assert_eq!(b.current(), 10 * MS);
        assert_within(b.next_delay(), 10 * MS);
        assert_eq!(b.current(), 20 * MS);
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut b = Backoff::new(1000 * MS, 1000 * MS);
        let delays: Vec<_> = (0..1000).map(|_| b.next_delay()).collect();
        for &d in &delays {
            assert_within(d, 1000 * MS);
        }
        let (lo, hi) = (delays.iter().min(), delays.iter().max());
        assert!(
            lo.zip(hi).is_some_and(|(lo, hi)| *hi - *lo > 100 * MS),
            "no real jitter: {lo:?}..{hi:?}"
        );
    }

    #[test]
    fn odd_bounds_are_tamed() {
        // A zero min still grows; a min above the max is capped.
        let mut b = Backoff::new(Duration::ZERO, 4 * MS);
        assert_eq!(b.current(), MS);
        b.next_delay();
        assert_eq!(b.current(), 2 * MS);
        let mut b = Backoff::new(10 * MS, 5 * MS);
        assert_eq!(b.current(), 5 * MS);
        assert_within(b.next_delay(), 5 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_the_delay() {
        let mut b = Backoff::new(1000 * MS, 1000 * MS);
        let stop = CancellationToken::new();
        let start = tokio::time::Instant::now();
        assert!(b.wait(&stop).await);
        assert_within(start.elapsed(), 1000 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_false_promptly_when_cancelled() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let stop = CancellationToken::new();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(10 * MS).await;
            canceller.cancel();
        });
        let start = tokio::time::Instant::now();
        assert!(!b.wait(&stop).await);
        let elapsed = start.elapsed();
        assert!(
            elapsed >= 10 * MS && elapsed < Duration::from_secs(1),
            "{elapsed:?}"
        );
        // Already cancelled: no sleep at all.
        let start = tokio::time::Instant::now();
        assert!(!b.wait(&stop).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
