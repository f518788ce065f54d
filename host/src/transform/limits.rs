//! What one module may consume: linear memory (the store's limiter) and log lines.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// The store's resource limiter: wasmtime's `StoreLimits` (memory cap, trap when a
/// growth is refused) plus a record that it refused one, so a failed call is named
/// "memory cap exceeded" from what happened rather than from wasmtime's error text.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    limits: StoreLimits,
    refused: bool,
    /// The linear memory's size after the last allowed growth (bytes).
    size: usize,
}

impl MemoryCap {
    pub(crate) fn new(bytes: usize) -> Self {
        MemoryCap {
            limits: StoreLimitsBuilder::new()
                .memory_size(bytes)
                .trap_on_grow_failure(true)
                .build(),
            refused: false,
            size: 0,
        }
    }

    /// The module's linear memory size (the largest memory's, in bytes).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Whether a memory growth was refused since the last [`MemoryCap::reset`].
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// Before each call: a refusal belongs to the call it happened in.
    pub(crate) fn reset(&mut self) {
        self.refused = false;
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if matches!(allowed, Ok(true)) {
            self.size = self.size.max(desired);
            tracing::trace!(current, desired, "guest memory grows");
        } else {
            self.refused = true;
        }
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// Log lines a module may write per second (host `log` calls and stdout/stderr lines
/// together): a guest logging at error level in a loop must not flood the host's log.
pub const GUEST_LOG_LINES_PER_SEC: u32 = 100;

/// A module's log budget, shared by all its instances (a re-instantiated module does
/// not get a fresh budget). Lines over the budget are dropped and counted; the count is
/// reported once per interval, as the next interval begins (at the next line or call).
#[derive(Debug)]
pub(crate) struct LogLimiter {
    module: Arc<str>,
    limit: u32,
    interval: Duration,
    window: Mutex<Window>,
}

impl LogLimiter {
    pub(crate) fn new(module: Arc<str>) -> Self {
        Self::with_limit(module, GUEST_LOG_LINES_PER_SEC, Duration::from_secs(1))
    }

    fn with_limit(module: Arc<str>, limit: u32, interval: Duration) -> Self {
        LogLimiter {
            module,
            limit,
            interval,
            window: Mutex::new(Window::new(Instant::now())),
        }
    }

    /// Whether one more line may be logged now.
    pub(crate) fn admit(&self) -> bool {
        let (admit, dropped) = self.lock().admit(Instant::now(), self.limit, self.interval);
        self.report(dropped);
        admit
    }

    /// Reports the drops of an interval that is over (after each call, so a guest that
    /// went quiet still gets its count said).
    pub(crate) fn flush(&self) {
        let dropped = self.lock().roll(Instant::now(), self.interval);
        self.report(dropped);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, dropped: u64) {
        if dropped > 0 {
            let module = &*self.module;
            tracing::warn!(
                module = %module,
                dropped,
                "module={module} dropped {dropped} log lines (more than {} in {:?})",
                self.limit,
                self.interval
            );
        }
    }
}

impl Drop for LogLimiter {
    fn drop(&mut self) {
        let dropped = std::mem::take(&mut self.lock().dropped);
        self.report(dropped);
    }
}

/// One interval's count.
#[derive(Debug)]
struct Window {
    start: Instant,
    lines: u32,
    dropped: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            start: now,
            lines: 0,
            dropped: 0,
        }
    }

    /// Starts a new interval if the current one is over; returns the drops of the one
    /// that ended (to report once).
    fn roll(&mut self, now: Instant, interval: Duration) -> u64 {
        if now.saturating_duration_since(self.start) < interval {
            return 0;
        }
        let dropped = std::mem::take(&mut self.dropped);
        *self = Window::new(now);
        dropped
    }

    /// Whether a line may be logged at `now`, and the drops of a finished interval.
    fn admit(&mut self, now: Instant, limit: u32, interval: Duration) -> (bool, u64) {
        let dropped = self.roll(now, interval);
        if self.lines < limit {
            self.lines += 1;
            (true, dropped)
        } else {
            self.dropped += 1;
            (false, dropped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_admits_the_limit_then_counts_and_reports_once() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut w = Window::new(t0);
        for _ in 0..3 {
            assert_eq!(w.admit(t0, 3, second), (true, 0));
        }
        for i in 1..=5 {
            let at = t0 + Duration::from_millis(100 * i);
            assert_eq!(w.admit(at, 3, second), (false, 0));
        }
        // Next interval: the 5 drops are reported with its first line, once.
        let t1 = t0 + second;
        assert_eq!(w.admit(t1, 3, second), (true, 5));
        assert_eq!(w.admit(t1, 3, second), (true, 0));
        assert_eq!(w.roll(t1 + Duration::from_millis(10), second), 0);
        // A quiet interval after drops: `roll` (after a call) reports them.
        assert_eq!(w.admit(t1, 3, second), (true, 0));
        assert_eq!(w.admit(t1, 3, second), (false, 0));
        assert_eq!(w.roll(t1 + 2 * second, second), 1);
        assert_eq!(w.roll(t1 + 4 * second, second), 0);
    }

    #[test]
    fn the_limiter_says_once_what_it_dropped() {
        let interval = Duration::from_millis(200);
        let limiter = LogLimiter::with_limit("m".into(), 2, interval);
        let (admitted, log) =
            crate::transform::testlog::logged(|| (0..10).filter(|_| limiter.admit()).count());
        assert_eq!(admitted, 2);
        assert_eq!(log, "", "nothing to say before the interval is over");
        std::thread::sleep(interval);
        let ((), log) = crate::transform::testlog::logged(|| {
            limiter.flush();
            limiter.flush();
            assert!(limiter.admit());
        });
        assert_eq!(crate::transform::testlog::warnings(&log), 1, "{log}");
        assert!(log.contains("module=m dropped 8 log lines"), "{log}");
    }

    #[test]
    fn a_refused_growth_is_recorded_until_reset() {
        let mut cap = MemoryCap::new(1 << 20);
        assert!(cap.memory_growing(0, 1 << 16, None).unwrap());
        assert!(!cap.refused());
        assert!(cap.memory_growing(1 << 16, 2 << 20, None).is_err());
        assert!(cap.refused());
        cap.reset();
        assert!(!cap.refused());
        assert!(cap
            .memory_grow_failed(wasmtime::format_err!("mmap failed"))
            .is_err());
        assert!(cap.refused());
    }
}
