//! The one retry delay of cdc-host: capped exponential backoff with jitter, honouring a
//! server's `Retry-After` hint. Used by the pipeline's reconnect loop and by the sinks'
//! retry loops, so that every retry in the process behaves (and is tuned) the same way.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

/// A hint (`Retry-After`) is honoured up to `max(max, HINT_CAP)`: servers may ask for
/// longer pauses than our own backoff would take, but not for hours.
pub const HINT_CAP: Duration = Duration::from_secs(300);

/// Capped exponential backoff: attempt `n` (1, 2, …) waits at most
/// `min(max, initial · 2^(n-1))`, jittered so that many clients retrying the same server
/// spread out rather than retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The bound of the first attempt's delay.
    pub initial: Duration,
    /// The cap on any attempt's bound.
    pub max: Duration,
    /// How the delay is drawn below the bound.
    pub jitter: Jitter,
}

/// How a delay is drawn below an attempt's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, bound]`: the widest spread.
    Full,
    /// Uniform in `[bound/2, bound]`: spread, yet never much shorter than the bound (for
    /// reconnects, where retrying at once only meets the same outage).
    Half,
}

impl Backoff {
    /// Full-jitter backoff from `initial` up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            jitter: Jitter::Full,
        }
    }

    /// The same bounds with [`Jitter::Half`].
    pub const fn half_jitter(self) -> Self {
        Backoff {
            jitter: Jitter::Half,
            ..self
        }
    }

    /// The upper bound of attempt `attempt`'s delay (attempt 0 counts as 1).
    pub fn bound(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }

    /// The delay before retry number `attempt` (1, 2, …).
    pub fn delay(&self, attempt: u32) -> Duration {
        let bound = self.bound(attempt);
        match self.jitter {
            Jitter::Full => bound.mul_f64(unit()),
            Jitter::Half => bound / 2 + (bound - bound / 2).mul_f64(unit()),
        }
    }

    /// [`Backoff::delay`], unless the destination said how long to wait (`Retry-After`):
    /// then that, up to `max(self.max, HINT_CAP)`.
    pub fn delay_or_hint(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        match hint {
            Some(d) => d.min(self.max.max(HINT_CAP)),
            None => self.delay(attempt),
        }
    }
}

/// Uniform in `[0, 1]`. Each `RandomState` gets fresh keys (per-process random, then
/// incremented per use), and the clock is mixed in: no cryptographic needs, no extra
/// dependency.
fn unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / ((1u64 << 53) - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_the_capped_bound() {
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        for attempt in 1..200 {
            let bound = Duration::from_millis(200)
                .saturating_mul(1 << (attempt - 1).min(31))
                .min(Duration::from_secs(30));
            assert_eq!(b.bound(attempt), bound);
            let d = b.delay(attempt);
            assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
        }
        // Jitter really varies.
        let ds: Vec<_> = (0..20).map(|_| b.delay(10)).collect();
        assert!(ds.iter().any(|d| *d != ds[0]), "{ds:?}");
    }

    #[test]
    fn half_jitter_stays_in_the_upper_half() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).half_jitter();
        for attempt in 0..40 {
            let bound = b.bound(attempt);
            let d = b.delay(attempt);
            assert!(d >= bound / 2 && d <= bound, "attempt {attempt}: {d:?}");
        }
        assert_eq!(b.bound(1), Duration::from_millis(100));
        assert_eq!(b.bound(30), Duration::from_secs(5));
    }

    #[test]
    fn a_hint_replaces_the_delay_up_to_its_cap() {
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        let seven = Some(Duration::from_secs(7));
        assert_eq!(b.delay_or_hint(1, seven), Duration::from_secs(7));
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(b.delay_or_hint(1, day), HINT_CAP);
        let long = Backoff::new(Duration::from_secs(1), Duration::from_secs(600));
        assert_eq!(long.delay_or_hint(1, day), Duration::from_secs(600));
        assert!(b.delay_or_hint(3, None) <= Duration::from_millis(800));
    }
}
