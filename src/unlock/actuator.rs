//! The lock actuator: the only code that can open the door.
//!
//! Why it is shaped so: the lock is driven through `embedded_hal::digital::OutputPin`, so the
//! same [`Lock`] runs on a Linux GPIO line ([`gpio`], feature `gpio`) and on
//! `embedded-hal-mock` in tests, where every pin transition is checked. Everything here
//! leans towards LOCKED:
//! * [`Lock::new`] drives the pin to LOCKED before returning;
//! * [`Lock::pulse_open`] drives OPEN, waits `open_time` (the wait is injectable so tests do
//!   not sleep) and drives LOCKED again; a guard drives LOCKED even if the wait panics
//!   (unwinding) or driving OPEN failed;
//! * driving LOCKED is retried ([`LOCK_RETRIES`] tries); only if every try fails is
//!   [`Error::LockStateUnknown`] returned (the caller should alarm and stop opening);
//! * dropping a [`Lock`] drives LOCKED.
//!
//! The two ways a pulse can fail are two error variants, because they call for opposite
//! reactions and a caller must not have to read message text to tell them apart:
//! * [`Error::Actuator`]: driving OPEN failed and LOCKED was driven again. The door is
//!   locked; carrying on is right.
//! * [`Error::LockStateUnknown`]: driving LOCKED failed on every try (after the pulse, or
//!   after a failed OPEN). The door may be stuck open; opening again would make it worse.
//!
//! Polarity: with `active_low = false` OPEN is the high level and LOCKED the low level; with
//! `active_low = true` OPEN is low and LOCKED is high. [`Lock`] applies the polarity itself,
//! so the pin it drives must not invert again (see [`gpio`]).
//!
//! The [`Actuator`] trait lets the unlock loop drive either a real [`Lock`] or a
//! [`LogActuator`], which only records pulses (for replays, demos and loop tests).

use std::time::Duration;

use embedded_hal::digital::OutputPin;

use crate::error::{Error, Result};

/// How many times driving LOCKED is tried before giving up with an error.
pub const LOCK_RETRIES: u32 = 3;

/// What the unlock loop needs from a lock.
pub trait Actuator {
    /// Opens for `duration`, then locks again. Returns only once locked (or failed). Errors:
    /// [`Error::LockStateUnknown`] when LOCKED could not be driven (the door may be open),
    /// any other error when the lock did not open and is locked.
    fn open_for(&mut self, duration: Duration) -> Result<()>;
    /// Drives LOCKED now (idempotent); call it at start-up and after any error. Fails with
    /// [`Error::LockStateUnknown`].
    fn ensure_locked(&mut self) -> Result<()>;
    /// One line for logs: what this actuator is.
    fn describe(&self) -> String;
}

type SleepFn = Box<dyn FnMut(Duration) + Send>;

/// A lock driven by one output pin. See the module doc for the guarantees.
pub struct Lock<P: OutputPin> {
    pin: P,
    active_low: bool,
    open_time: Duration,
    sleep: SleepFn,
    label: String,
}

impl<P: OutputPin> Lock<P> {
    /// Takes the pin and drives it to LOCKED. Fails with [`Error::LockStateUnknown`] (after
    /// retries) if that is impossible; the pin is then dropped after one more round of tries
    /// to drive LOCKED.
    pub fn new(pin: P, active_low: bool, open_time: Duration) -> Result<Self> {
        let mut lock = Lock {
            pin,
            active_low,
            open_time,
            sleep: Box::new(std::thread::sleep),
            label: "gpio pin".to_string(),
        };
        lock.drive_locked()?;
        Ok(lock)
    }

    /// Replaces the wait used while the lock is open (tests inject a recorder or a panic).
    pub fn with_sleep(mut self, sleep: impl FnMut(Duration) + Send + 'static) -> Self {
        self.sleep = Box::new(sleep);
        self
    }

    /// Sets the text [`Actuator::describe`] shows (e.g. "/dev/gpiochip0 line 17").
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The configured open time.
    pub fn open_time(&self) -> Duration {
        self.open_time
    }

    /// Drives the OPEN level once; the error is the message, which [`Lock::pulse`] turns
    /// into an error of the right kind once it knows whether LOCKED could be driven after it.
    fn drive_open(&mut self) -> std::result::Result<(), String> {
        let r = if self.active_low {
            self.pin.set_low()
        } else {
            self.pin.set_high()
        };
        r.map_err(|e| format!("{}: driving OPEN failed: {e:?}", self.label))
    }

    /// Drives the LOCKED level, trying up to [`LOCK_RETRIES`] times; if every try fails the
    /// state of the lock is unknown ([`Error::LockStateUnknown`]).
    fn drive_locked(&mut self) -> Result<()> {
        self.try_locked().map_err(Error::LockStateUnknown)
    }

    /// [`Lock::drive_locked`] with the message as the error. Never sleeps through the
    /// injected sleep, so it is safe to call while unwinding from a panicking one.
    fn try_locked(&mut self) -> std::result::Result<(), String> {
        let mut last = None;
        for attempt in 0..LOCK_RETRIES {
            let r = if self.active_low {
                self.pin.set_high()
            } else {
                self.pin.set_low()
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(format!("{e:?}")),
            }
            if attempt + 1 < LOCK_RETRIES {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Err(format!(
            "{}: driving LOCKED failed {LOCK_RETRIES} times (last error: {}); the lock state is unknown",
            self.label,
            last.unwrap_or_default()
        ))
    }

    /// Opens for `duration`, then locks. On every path — success, error, panic in the wait —
    /// the pin is driven back to LOCKED before this returns or unwinds. The error is
    /// [`Error::LockStateUnknown`] whenever that last LOCKED failed, else [`Error::Actuator`].
    fn pulse(&mut self, duration: Duration) -> Result<()> {
        let mut guard = RelockGuard {
            lock: self,
            armed: true,
        };
        if let Err(open) = guard.lock.drive_open() {
            guard.armed = false;
            // The pin may be in either state: force LOCKED. Only if that worked is the door
            // known to be locked; otherwise report both failures as an unknown state.
            return match guard.lock.try_locked() {
                Ok(()) => Err(Error::Actuator(format!("{open}; LOCKED driven again"))),
                Err(relock) => Err(Error::LockStateUnknown(format!("{open}; then {relock}"))),
            };
        }
        (guard.lock.sleep)(duration);
        guard.armed = false;
        guard.lock.drive_locked()
    }

    /// Opens for the configured `open_time`, then locks.
    pub fn pulse_open(&mut self) -> Result<()> {
        self.pulse(self.open_time)
    }
}

/// Drives LOCKED when dropped while armed, i.e. when the open phase did not finish normally.
struct RelockGuard<'a, P: OutputPin> {
    lock: &'a mut Lock<P>,
    armed: bool,
}

impl<P: OutputPin> Drop for RelockGuard<'_, P> {
    fn drop(&mut self) {
        if self.armed {
            // Nothing can be returned from here; the retries are all we can do.
            let _ = self.lock.drive_locked();
        }
    }
}

impl<P: OutputPin> Drop for Lock<P> {
    fn drop(&mut self) {
        let _ = self.drive_locked();
    }
}

impl<P: OutputPin> Actuator for Lock<P> {
    fn open_for(&mut self, duration: Duration) -> Result<()> {
        self.pulse(duration)
    }
    fn ensure_locked(&mut self) -> Result<()> {
        self.drive_locked()
    }
    fn describe(&self) -> String {
        format!(
            "lock on {} ({}, open {} ms)",
            self.label,
            if self.active_low {
                "active-low"
            } else {
                "active-high"
            },
            self.open_time.as_millis()
        )
    }
}

/// A failure [`LogActuator`] can be told to simulate, so tests see how the unlock loop reacts
/// to each kind of [`Lock`] failure without a pin. It only ever makes the log actuator fail:
/// nothing here can open a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFailure {
    /// Driving OPEN fails and LOCKED is driven again: [`Error::Actuator`], the lock is
    /// locked.
    Open,
    /// OPEN is driven but LOCKED then fails every retry: [`Error::LockStateUnknown`].
    Relock,
}

/// An actuator that only records: for replays, demos and tests of the unlock loop.
#[derive(Debug, Default, Clone)]
pub struct LogActuator {
    pulses: Vec<Duration>,
    lock_calls: usize,
    fail: Option<InjectedFailure>,
    print: bool,
}

impl LogActuator {
    /// A silent recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder that also prints one line per pulse to stderr.
    pub fn printing() -> Self {
        LogActuator {
            print: true,
            ..Self::default()
        }
    }

    /// Makes every later [`Actuator::open_for`] fail with [`Error::Actuator`] (nothing is
    /// recorded then), to test that the loop stays locked on actuator errors. The same as
    /// `set_failure(fail.then_some(InjectedFailure::Open))`.
    pub fn set_failing(&mut self, fail: bool) {
        self.set_failure(fail.then_some(InjectedFailure::Open));
    }

    /// Makes every later [`Actuator::open_for`] fail as `failure` says (`None`: succeed
    /// again); no pulse is recorded for a failed one. [`Actuator::ensure_locked`] keeps
    /// succeeding, as a lock that answers again would.
    pub fn set_failure(&mut self, failure: Option<InjectedFailure>) {
        self.fail = failure;
    }

    /// Durations of the pulses so far, in order.
    pub fn pulses(&self) -> &[Duration] {
        &self.pulses
    }

    /// Number of pulses so far.
    pub fn pulse_count(&self) -> usize {
        self.pulses.len()
    }

    /// Number of [`Actuator::ensure_locked`] calls so far.
    pub fn lock_calls(&self) -> usize {
        self.lock_calls
    }
}

impl Actuator for LogActuator {
    fn open_for(&mut self, duration: Duration) -> Result<()> {
        if let Some(failure) = self.fail {
            let e = match failure {
                InjectedFailure::Open => Error::Actuator(
                    "log actuator: driving OPEN failed (injected failure); LOCKED driven again"
                        .into(),
                ),
                InjectedFailure::Relock => Error::LockStateUnknown(format!(
                    "log actuator: driving LOCKED failed {LOCK_RETRIES} times (injected failure); the lock state is unknown"
                )),
            };
            if self.print {
                eprintln!(
                    "[log actuator] OPEN for {} ms: injected {failure:?} failure",
                    duration.as_millis()
                );
            }
            return Err(e);
        }
        self.pulses.push(duration);
        if self.print {
            eprintln!(
                "[log actuator] OPEN for {} ms, then LOCKED (pulse #{})",
                duration.as_millis(),
                self.pulses.len()
            );
        }
        Ok(())
    }
    fn ensure_locked(&mut self) -> Result<()> {
        self.lock_calls += 1;
        Ok(())
    }
    fn describe(&self) -> String {
        "log-only actuator (no hardware)".to_string()
    }
}

/// Linux GPIO character-device lines (`/dev/gpiochipN`) as lock pins.
#[cfg(all(feature = "gpio", target_os = "linux"))]
pub mod gpio {
    use std::path::Path;
    use std::time::Duration;

    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    use linux_embedded_hal::CdevPin;

    use super::Lock;
    use crate::error::{Error, Result};

    /// The consumer label shown by `gpioinfo` for our line.
    pub const CONSUMER: &str = "facegate-lock";

    /// Requests `line` of `chip` as a plain output (no kernel-side inversion: the levels
    /// are physical) whose initial level is `initial_high`. Errors name the chip and line.
    pub fn open_output_pin(chip: &Path, line: u32, initial_high: bool) -> Result<CdevPin> {
        let ctx = |what: &str, e: &dyn std::fmt::Display| {
            Error::Actuator(format!("{} line {line}: {what}: {e}", chip.display()))
        };
        let mut c = Chip::new(chip).map_err(|e| ctx("cannot open GPIO chip", &e))?;
        let n = c.num_lines();
        if line >= n {
            return Err(Error::Actuator(format!(
                "{} line {line}: no such line (the chip has {n} lines)",
                chip.display()
            )));
        }
        let l = c.get_line(line).map_err(|e| ctx("cannot get line", &e))?;
        let handle = l
            .request(LineRequestFlags::OUTPUT, u8::from(initial_high), CONSUMER)
            .map_err(|e| ctx("cannot request line as output (busy?)", &e))?;
        CdevPin::new(handle).map_err(|e| ctx("cannot read line info", &e))
    }

    /// Opens the lock on `chip`/`line`: the line is requested already at the LOCKED level
    /// (so there is no glitch to OPEN at start-up), then wrapped in a [`Lock`] that applies
    /// `active_low` itself.
    pub fn open_lock(
        chip: &Path,
        line: u32,
        active_low: bool,
        open_time: Duration,
    ) -> Result<Lock<CdevPin>> {
        let locked_high = active_low;
        let pin = open_output_pin(chip, line, locked_high)?;
        Ok(Lock::new(pin, active_low, open_time)?
            .with_label(format!("{} line {line}", chip.display())))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn missing_chip_error_names_chip_and_line() {
            let chip = Path::new("/dev/gpiochip-does-not-exist");
            let m = open_lock(chip, 17, false, Duration::from_millis(500))
                .err()
                .expect("no such chip")
                .to_string();
            assert!(m.contains("/dev/gpiochip-does-not-exist line 17"), "{m}");
            assert!(!m.contains('\n'), "{m}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
    use embedded_hal_mock::eh1::MockError;
    use std::io::ErrorKind;
    use std::sync::{Arc, Mutex};

    const OPEN_MS: u64 = 700;

    fn io_err() -> MockError {
        MockError::Io(ErrorKind::Other)
    }

    /// A sleep that records the durations it was asked for instead of sleeping.
    fn recorder() -> (Arc<Mutex<Vec<Duration>>>, impl FnMut(Duration) + Send) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        (log, move |d| l2.lock().unwrap().push(d))
    }

    #[test]
    fn construction_locks_and_drop_locks_active_high() {
        // active-high: LOCKED = low.
        let mut pin = Mock::new(&[T::set(State::Low), T::set(State::Low)]);
        let lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS)).unwrap();
        drop(lock);
        pin.done();
    }

    #[test]
    fn pulse_opens_waits_then_locks_active_high() {
        let mut pin = Mock::new(&[
            T::set(State::Low),  // new: LOCKED
            T::set(State::High), // OPEN
            T::set(State::Low),  // LOCKED after the wait
            T::set(State::Low),  // drop: LOCKED
        ]);
        let (log, sleep) = recorder();
        let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS))
            .unwrap()
            .with_sleep(sleep);
        lock.pulse_open().unwrap();
        assert_eq!(*log.lock().unwrap(), vec![Duration::from_millis(OPEN_MS)]);
        drop(lock);
        pin.done();
    }

    #[test]
    fn active_low_inverts_every_level() {
        // active-low: LOCKED = high, OPEN = low.
        let mut pin = Mock::new(&[
            T::set(State::High), // new
            T::set(State::Low),  // OPEN
            T::set(State::High), // LOCKED
            T::set(State::Low),  // OPEN (open_for)
            T::set(State::High), // LOCKED
            T::set(State::High), // ensure_locked
            T::set(State::High), // drop
        ]);
        let (log, sleep) = recorder();
        let mut lock = Lock::new(pin.clone(), true, Duration::from_millis(OPEN_MS))
            .unwrap()
            .with_sleep(sleep);
        lock.pulse_open().unwrap();
        lock.open_for(Duration::from_millis(123)).unwrap();
        lock.ensure_locked().unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            vec![Duration::from_millis(OPEN_MS), Duration::from_millis(123)]
        );
        assert!(lock.describe().contains("active-low"));
        drop(lock);
        pin.done();
    }

    #[test]
    fn failing_open_is_an_error_and_returns_to_locked_without_waiting() {
        let mut pin = Mock::new(&[
            T::set(State::Low),
            T::set(State::High).with_error(io_err()), // OPEN fails
            T::set(State::Low),                       // forced LOCKED
            T::set(State::Low),                       // drop
        ]);
        let (log, sleep) = recorder();
        let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS))
            .unwrap()
            .with_sleep(sleep);
        let e = lock.pulse_open().unwrap_err();
        // Locked again: the plain actuator error, which the loop may carry on after.
        assert!(
            matches!(e, Error::Actuator(ref m) if m.contains("OPEN")),
            "{e}"
        );
        assert!(log.lock().unwrap().is_empty(), "no wait when OPEN failed");
        drop(lock);
        pin.done();
    }

    #[test]
    fn failing_relock_is_retried_and_succeeds() {
        let mut pin = Mock::new(&[
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low).with_error(io_err()), // try 1 fails
            T::set(State::Low),                      // try 2 succeeds
            T::set(State::Low),                      // drop
        ]);
        let (_log, sleep) = recorder();
        let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS))
            .unwrap()
            .with_sleep(sleep);
        lock.pulse_open().unwrap();
        drop(lock);
        pin.done();
    }

    #[test]
    fn relock_failing_every_retry_is_an_unknown_state() {
        let mut pin = Mock::new(&[
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low), // drop tries again, and now succeeds
        ]);
        let (_log, sleep) = recorder();
        let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS))
            .unwrap()
            .with_sleep(sleep);
        let e = lock.pulse_open().unwrap_err();
        assert!(
            matches!(e, Error::LockStateUnknown(ref m) if m.contains("LOCKED failed 3 times")),
            "{e}"
        );
        drop(lock);
        pin.done();
    }

    #[test]
    fn failing_open_then_failing_relock_is_an_unknown_state() {
        // OPEN fails, so the pin may be at either level; then LOCKED fails every try too.
        let mut pin = Mock::new(&[
            T::set(State::Low),
            T::set(State::High).with_error(io_err()),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low), // drop
        ]);
        let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS))
            .unwrap()
            .with_sleep(|_| {});
        let e = lock.pulse_open().unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::LockStateUnknown(_)), "{m}");
        assert!(m.contains("driving OPEN failed"), "{m}");
        assert!(m.contains("the lock state is unknown"), "{m}");
        assert_eq!(m.matches("actuator: ").count(), 1, "one prefix: {m}");
        drop(lock);
        pin.done();
    }

    #[test]
    fn ensure_locked_failing_every_retry_is_an_unknown_state() {
        let mut pin = Mock::new(&[
            T::set(State::Low),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low), // drop
        ]);
        let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS)).unwrap();
        assert!(matches!(
            lock.ensure_locked(),
            Err(Error::LockStateUnknown(_))
        ));
        drop(lock);
        pin.done();
    }

    #[test]
    fn construction_fails_if_locked_cannot_be_driven() {
        // 3 tries in `new`, then the dropped half-built lock tries 3 more times.
        let mut pin = Mock::new(&vec![T::set(State::High).with_error(io_err()); 6]);
        let r = Lock::new(pin.clone(), true, Duration::from_millis(OPEN_MS));
        assert!(matches!(r, Err(Error::LockStateUnknown(_))));
        pin.done();
    }

    #[test]
    fn construction_retries_a_transient_failure() {
        let mut pin = Mock::new(&[
            T::set(State::Low).with_error(io_err()),
            T::set(State::Low),
            T::set(State::Low), // drop
        ]);
        let lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS)).unwrap();
        drop(lock);
        pin.done();
    }

    #[test]
    fn panic_during_the_wait_still_locks() {
        let mut pin = Mock::new(&[
            T::set(State::Low),  // new
            T::set(State::High), // OPEN
            T::set(State::Low),  // guard: LOCKED while unwinding
            T::set(State::Low),  // drop
        ]);
        let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(OPEN_MS))
            .unwrap()
            .with_sleep(|_| panic!("injected panic in the wait"));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lock.pulse_open()));
        assert!(r.is_err(), "the panic propagates");
        drop(lock);
        pin.done();
    }

    #[test]
    fn panic_during_the_wait_locks_active_low_too() {
        let mut pin = Mock::new(&[
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            T::set(State::High),
        ]);
        let mut lock = Lock::new(pin.clone(), true, Duration::from_millis(OPEN_MS))
            .unwrap()
            .with_sleep(|_| panic!("injected"));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock.open_for(Duration::from_secs(1))
        }));
        assert!(r.is_err());
        drop(lock);
        pin.done();
    }

    #[test]
    fn log_actuator_counts_pulses_and_can_fail() {
        let mut a = LogActuator::new();
        a.ensure_locked().unwrap();
        a.open_for(Duration::from_millis(500)).unwrap();
        a.open_for(Duration::from_millis(800)).unwrap();
        assert_eq!(a.pulse_count(), 2);
        assert_eq!(
            a.pulses(),
            &[Duration::from_millis(500), Duration::from_millis(800)]
        );
        assert_eq!(a.lock_calls(), 1);
        a.set_failing(true);
        assert!(matches!(
            a.open_for(Duration::from_millis(500)),
            Err(Error::Actuator(_))
        ));
        assert_eq!(a.pulse_count(), 2);
        a.set_failure(Some(InjectedFailure::Relock));
        assert!(matches!(
            a.open_for(Duration::from_millis(500)),
            Err(Error::LockStateUnknown(_))
        ));
        assert_eq!(a.pulse_count(), 2);
        a.ensure_locked().unwrap();
        a.set_failure(None);
        a.open_for(Duration::from_millis(500)).unwrap();
        assert_eq!(a.pulse_count(), 3);
        // Usable as a trait object by the loop.
        let dynamic: &mut dyn Actuator = &mut a;
        assert!(dynamic.describe().contains("log-only"));
    }
}
