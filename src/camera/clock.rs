//! The time source for paced replay and reconnect backoff, injectable so that tests of
//! "the consumer was late by 350 ms" or "the third retry waits 400 ms" run instantly and give
//! the same counts on a loaded CI machine as on an idle one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Now and sleep. Production code uses [`SystemClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
}

/// The real monotonic clock and `std::thread::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// A clock that only moves when told to: `sleep` advances it (and records the duration),
/// `advance` simulates a consumer busy for a while. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    now: Instant,
    sleeps: Vec<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualState {
                now: Instant::now(),
                sleeps: Vec::new(),
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ManualState> {
        // A poisoned lock only means another test thread panicked; the data is still valid.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves time forward without recording a sleep.
    pub fn advance(&self, d: Duration) {
        self.state().now += d;
    }

    /// Every duration passed to `sleep`, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.state().sleeps.clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.state().now
    }
    fn sleep(&self, d: Duration) {
        let mut s = self.state();
        s.now += d;
        s.sleeps.push(d);
    }
}
