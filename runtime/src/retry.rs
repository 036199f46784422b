//! How long to wait before trying again: capped exponential backoff with full jitter.

use std::time::Duration;

/// Waits between attempts: before retry `n` (counting from 0), a random time between zero
/// and `first * 2^n`, capped at `max` ("full jitter": writers that failed together spread
/// out instead of failing together again).
///
/// ```
/// use std::time::Duration;
/// let backoff = annals::Backoff::new(Duration::from_millis(4), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(4));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(32));
/// assert_eq!(backoff.ceiling(10), Duration::from_millis(100));
/// assert!(backoff.delay(2) <= Duration::from_millis(16));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Waits of up to `first` before the first retry, doubling each retry, never above
    /// `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// No wait at all between attempts.
    pub const fn none() -> Self {
        Backoff::new(Duration::ZERO, Duration::ZERO)
    }

    /// The longest wait before retry `retry` (0 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// A random wait before retry `retry`, between zero and [`Self::ceiling`].
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        // A v4 uuid is 122 random bits from the OS: no generator to seed or share.
        let (random, _) = uuid::Uuid::new_v4().as_u64_pair();
        Duration::from_nanos(random % nanos.saturating_add(1))
    }
}
