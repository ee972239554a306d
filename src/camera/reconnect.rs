//! Keeping a live camera alive across unplugs, resets and driver hiccups.
//!
//! A door camera on a USB cable will be unplugged, brown out or wedge. [`Reconnecting`] wraps
//! a source and a way to reopen it: when the inner source errors or ends, it is dropped
//! (releasing the device) and reopened with exponential backoff (by default 100 ms doubling
//! to a cap of 5 s, reset after a successful reopen). Meanwhile `next_frame` returns `Err`
//! — never a stale frame — so the unlock loop sees "no face" and keeps the lock locked.
//!
//! `next_frame` itself waits out the backoff before each attempt (it blocks like a camera
//! read would), so a caller looping on it does not spin. Time comes from an injectable
//! [`Clock`], so tests of the backoff sequence run instantly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clock::Clock;
use super::{Frame, FrameSource, SourceStats};
use crate::error::{Error, Result};

/// Delay before reopen attempt n (0-based): `min(initial · 2^n, max)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0 = first attempt after a failure).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// See the module doc. `F` reopens the source.
pub struct Reconnecting<F> {
    name: String,
    reopen: F,
    inner: Option<Box<dyn FrameSource>>,
    backoff: Backoff,
    clock: Arc<dyn Clock>,
    /// Failed attempts since the source was last up.
    attempts: u32,
    next_attempt: Option<Instant>,
    /// Stats of the instances already dropped, plus reconnect-time counters.
    retired: SourceStats,
}

impl<F> Reconnecting<F>
where
    F: FnMut() -> Result<Box<dyn FrameSource>> + Send,
{
    /// Starts with `first` already open.
    pub fn with_first(
        name: impl Into<String>,
        first: Box<dyn FrameSource>,
        reopen: F,
        backoff: Backoff,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Reconnecting {
            name: name.into(),
            reopen,
            inner: Some(first),
            backoff,
            clock,
            attempts: 0,
            next_attempt: None,
            retired: SourceStats::default(),
        }
    }

    /// Starts closed: the first `next_frame` opens the source (no wait before that attempt).
    pub fn new(
        name: impl Into<String>,
        reopen: F,
        backoff: Backoff,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let now = clock.now();
        Reconnecting {
            name: name.into(),
            reopen,
            inner: None,
            backoff,
            clock,
            attempts: 0,
            next_attempt: Some(now),
            retired: SourceStats::default(),
        }
    }

    /// Whether the inner source is currently open.
    pub fn is_connected(&self) -> bool {
        self.inner.is_some()
    }

    fn drop_inner(&mut self) {
        if let Some(old) = self.inner.take() {
            self.retired += old.stats();
        }
        self.next_attempt = Some(self.clock.now() + self.backoff.delay(0));
        self.attempts = 0;
    }
}

impl<F> FrameSource for Reconnecting<F>
where
    F: FnMut() -> Result<Box<dyn FrameSource>> + Send,
{
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.inner.is_none() {
            let due = self.next_attempt.unwrap_or_else(|| self.clock.now());
            let now = self.clock.now();
            if now < due {
                self.clock.sleep(due - now);
            }
            let attempt = self.attempts + 1;
            match (self.reopen)() {
                Ok(src) => {
                    log::info!("{}: reconnected (attempt {attempt})", self.name);
                    self.inner = Some(src);
                    self.attempts = 0;
                    self.next_attempt = None;
                }
                Err(e) => {
                    let wait = self.backoff.delay(attempt);
                    self.attempts = attempt;
                    self.next_attempt = Some(self.clock.now() + wait);
                    log::warn!(
                        "{}: reconnect attempt {attempt} failed: {e}; next in {} ms",
                        self.name,
                        wait.as_millis()
                    );
                    return Err(Error::Camera {
                        source_name: self.name.clone(),
                        reason: format!(
                            "camera unavailable, reconnect attempt {attempt} failed ({e}); \
                             retrying in {} ms",
                            wait.as_millis()
                        ),
                    });
                }
            }
        }
        let Some(inner) = self.inner.as_mut() else {
            // Unreachable: the branch above either opened it or returned.
            return Err(Error::Msg(format!(
                "{}: internal: no source after reopen",
                self.name
            )));
        };
        match inner.next_frame() {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) => {
                log::warn!("{}: source ended; reconnecting", self.name);
                self.drop_inner();
                Err(Error::Camera {
                    source_name: self.name.clone(),
                    reason: "source ended; reconnecting".to_string(),
                })
            }
            Err(e) => {
                log::warn!("{}: {e}; reconnecting", self.name);
                self.drop_inner();
                Err(e)
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn stats(&self) -> SourceStats {
        let mut s = self.retired;
        if let Some(inner) = &self.inner {
            s += inner.stats();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::clock::ManualClock;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Gives `frames` tiny frames, then fails like an unplugged camera.
    struct Fake {
        left: u32,
        seq: u64,
        stats: SourceStats,
    }

    impl FrameSource for Fake {
        fn next_frame(&mut self) -> Result<Option<Frame>> {
            if self.left == 0 {
                return Err(Error::Camera {
                    source_name: "fake".into(),
                    reason: "No such device (os error 19)".into(),
                });
            }
            self.left -= 1;
            self.seq += 1;
            self.stats.delivered += 1;
            Ok(Some(Frame {
                rgb: image::RgbImage::new(2, 2),
                seq: self.seq,
                captured: Instant::now(),
            }))
        }
        fn name(&self) -> &str {
            "fake"
        }
        fn stats(&self) -> SourceStats {
            self.stats
        }
    }

    fn fake(left: u32) -> Box<dyn FrameSource> {
        Box::new(Fake {
            left,
            seq: 0,
            stats: SourceStats::default(),
        })
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let b = Backoff::default();
        let ms = |n: u32| b.delay(n).as_millis();
        assert_eq!(
            (0..9).map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        assert_eq!(b.delay(40), Duration::from_secs(5));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn fails_then_recovers_with_backoff() {
        let clock = ManualClock::new();
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        // Reopen fails 3 times (device still gone), then a camera with 5 frames appears.
        let reopen = move || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            if n < 3 {
                Err(Error::Camera {
                    source_name: "v4l2:/dev/video0".into(),
                    reason: "cannot open device: No such file or directory".into(),
                })
            } else {
                Ok(fake(5))
            }
        };
        let mut src = Reconnecting::with_first(
            "v4l2:/dev/video0",
            fake(2),
            reopen,
            Backoff::default(),
            Arc::new(clock.clone()),
        );
        assert!(src.next_frame().unwrap().is_some());
        assert!(src.next_frame().unwrap().is_some());
        // unplug: the inner error comes through, the source is dropped
        let e = src.next_frame().unwrap_err().to_string();
        assert!(e.contains("No such device"), "{e}");
        assert!(!src.is_connected());
        // three failed attempts, each an error naming the attempt
        for k in 1..=3 {
            let e = src.next_frame().unwrap_err().to_string();
            assert!(e.contains(&format!("reconnect attempt {k} failed")), "{e}");
            assert!(!src.is_connected());
        }
        // fourth attempt succeeds and delivers a frame at once
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(f.seq, 1);
        assert!(src.is_connected());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        let ms = Duration::from_millis;
        assert_eq!(clock.sleeps(), [ms(100), ms(200), ms(400), ms(800)]);
        assert_eq!(src.stats().delivered, 3);

        // After recovery the backoff starts again at 100 ms.
        for _ in 0..4 {
            src.next_frame().unwrap().unwrap();
        }
        assert!(src.next_frame().is_err());
        assert!(src.next_frame().is_ok());
        assert_eq!(clock.sleeps().last(), Some(&ms(100)));
        assert_eq!(src.stats().delivered, 2 + 5 + 1);
    }

    #[test]
    fn caller_slower_than_backoff_does_not_sleep() {
        let clock = ManualClock::new();
        let mut src = Reconnecting::new(
            "cam",
            || Ok(fake(1)),
            Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(3),
            },
            Arc::new(clock.clone()),
        );
        assert!(src.next_frame().unwrap().is_some()); // first open: no wait
        assert!(src.next_frame().is_err()); // inner fails
        clock.advance(Duration::from_secs(2)); // caller busy longer than the backoff
        assert!(src.next_frame().unwrap().is_some());
        assert!(clock.sleeps().is_empty());
    }

    #[test]
    fn ended_source_is_treated_as_vanished() {
        struct Ends;
        impl FrameSource for Ends {
            fn next_frame(&mut self) -> Result<Option<Frame>> {
                Ok(None)
            }
            fn name(&self) -> &str {
                "ends"
            }
            fn stats(&self) -> SourceStats {
                SourceStats::default()
            }
        }
        let clock = ManualClock::new();
        let mut src = Reconnecting::with_first(
            "cam",
            Box::new(Ends),
            || Ok(fake(1)),
            Backoff::default(),
            Arc::new(clock.clone()),
        );
        let e = src.next_frame().unwrap_err().to_string();
        assert!(e.contains("source ended"), "{e}");
        assert!(src.next_frame().unwrap().is_some());
        assert_eq!(clock.sleeps(), [Duration::from_millis(100)]);
    }
}
