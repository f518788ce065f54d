//! A lock for the tests that keep the machine busy for a minute or more.
//!
//! All integration tests of a crate run in one test binary, two at a time on two cores
//! (libtest's default). The crash loop and the 60 s sink outages load the machine for
//! their whole run, and the outages assert a minimum write rate and a bound on the host's
//! memory growth over a time window: each of them must not share the cores with another
//! of them (when every test file was its own binary, the crash loop ran alone). They take
//! [`heavy()`] first thing and hold it to the end; every other test runs beside them.

use tokio::sync::{Mutex, MutexGuard};

static HEAVY: Mutex<()> = Mutex::const_new(());

/// Waits until no other heavy test runs; the guard holds the lock until it is dropped
/// (also when the test panics: a tokio mutex is never poisoned).
pub async fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().await
}
