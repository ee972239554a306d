//! The unlock loop's failure rules with a scripted face engine (no models): stage errors
//! never open and leave the lock locked, a camera that vanishes is reconnected with the lock
//! locked meanwhile, a source that ends stops the loop, the stop flag stops it, a store
//! with a flipped byte refuses to start, a lock that cannot be driven LOCKED stops the loop
//! after that frame while a failed OPEN (locked again) does not.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
use embedded_hal_mock::eh1::MockError;
use image::RgbImage;

use facegate::camera::{Backoff, Frame, FrameSource, ManualClock, Reconnecting, SourceStats};
use facegate::detect::Face;
use facegate::error::{Error, Result};
use facegate::unlock::actuator::{InjectedFailure, Lock, LogActuator};
use facegate::unlock::app::load_unlock_store;
use facegate::unlock::audit_outbox::{read_pending, AuditTrail};
use facegate::unlock::live_store::LiveStore;
use facegate::unlock::policy::{Decision, Policy, PolicyConfig};
use facegate::unlock::seal::DeviceKey;
use facegate::unlock::session::{
    run_loop, run_loop_live, FaceEngine, FrameReport, LoopConfig, PolicyTime, StopReason,
};
use facegate::unlock::store::TemplateStore;

const DIM: usize = 4;

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i] = 1.0;
    v
}

fn store() -> TemplateStore {
    let mut s = TemplateStore::new("test-model", DIM).unwrap();
    s.add_templates("alice", vec![unit(0)]).unwrap();
    s
}

/// Frames whose first pixel's red value tells the engine what to do:
/// 0 = no face, 1 = alice, 2 = stranger, 3 = detector error, 4 = embedder error.
fn frame(kind: u8, seq: u64) -> Frame {
    let mut rgb = RgbImage::new(4, 4);
    rgb.put_pixel(0, 0, image::Rgb([kind, 0, 0]));
    Frame {
        rgb,
        seq,
        captured: Instant::now(),
    }
}

struct Scripted;

impl FaceEngine for Scripted {
    fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        match img.get_pixel(0, 0)[0] {
            0 => Ok(vec![]),
            3 => Err(Error::Msg("injected detector failure".into())),
            _ => Ok(vec![Face {
                score: 0.9,
                bbox: [0.0, 0.0, 3.0, 3.0],
                kps: Some([[0.0, 0.0]; 5]),
            }]),
        }
    }
    fn embed(&self, img: &RgbImage, _kps: &[[f32; 2]; 5]) -> Result<Vec<f32>> {
        match img.get_pixel(0, 0)[0] {
            1 => Ok(unit(0)),
            4 => Err(Error::Msg("injected embedder failure".into())),
            _ => Ok(unit(1)),
        }
    }
}

/// Plays a script of frame kinds; `None` entries are read errors (camera gone); ends after.
struct Script {
    items: Vec<Option<u8>>,
    next: usize,
    seq0: u64,
}

impl Script {
    fn new(items: Vec<Option<u8>>) -> Self {
        Script {
            items,
            next: 0,
            seq0: 0,
        }
    }
}

impl FrameSource for Script {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(item) = self.items.get(self.next).copied() else {
            return Ok(None);
        };
        self.next += 1;
        match item {
            Some(k) => Ok(Some(frame(k, self.seq0 + self.next as u64 - 1))),
            None => Err(Error::Camera {
                source_name: "script".into(),
                reason: "No such device (os error 19)".into(),
            }),
        }
    }
    fn name(&self) -> &str {
        "script"
    }
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

fn cfg() -> LoopConfig {
    LoopConfig {
        open_time: Duration::from_millis(500),
        time: PolicyTime::FrameRate(10.0),
        error_pause: Duration::ZERO,
        ..LoopConfig::default()
    }
}

fn policy() -> Policy {
    Policy::new(PolicyConfig {
        threshold: 0.5,
        ..PolicyConfig::default()
    })
    .unwrap()
}

fn run(
    source: &mut dyn FrameSource,
    actuator: &mut dyn facegate::unlock::actuator::Actuator,
    cfg: &LoopConfig,
) -> (facegate::unlock::session::LoopOutcome, Vec<FrameReport>) {
    let mut reports = Vec::new();
    let never = AtomicBool::new(false);
    let out = run_loop(
        source,
        &Scripted,
        &store(),
        &mut policy(),
        actuator,
        cfg,
        &never,
        &mut |r| reports.push(r.clone()),
    );
    (out, reports)
}

#[test]
fn stage_errors_never_open_and_the_pin_stays_locked() {
    // Alice's face alternates with detector and embedder failures: every failure clears the
    // policy's hits, so k = 3 consecutive-enough matches never accumulate.
    let items = [1, 3, 1, 1, 4, 1, 1, 3, 1, 4, 1, 1, 3]
        .into_iter()
        .map(Some)
        .collect();
    // Active-high lock: LOCKED = low. new, loop start, loop end, drop — and never High.
    let mut pin = Mock::new(&[
        T::set(State::Low),
        T::set(State::Low),
        T::set(State::Low),
        T::set(State::Low),
    ]);
    let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(500))
        .unwrap()
        .with_sleep(|_| {});
    let (out, reports) = run(&mut Script::new(items), &mut lock, &cfg());
    drop(lock);
    pin.done();
    assert_eq!(out.stop, StopReason::SourceEnded);
    assert!(out.unlocks.is_empty());
    assert_eq!(out.errors, 5);
    let errors: Vec<&str> = reports
        .iter()
        .filter_map(|r| match &r.decision {
            Decision::Error(e) => Some(e.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 5);
    assert!(errors[0].contains("detector") && errors[0].contains("injected"));
    assert!(errors[1].contains("embedder") && errors[1].contains("injected"));
    assert!(reports.iter().all(|r| !r.opened));
}

#[test]
fn same_script_without_errors_does_unlock_once() {
    // The control for the test above: the same alice frames with no failure between them.
    let items = [1, 1, 1, 1, 1, 1].into_iter().map(Some).collect();
    let mut lock = LogActuator::new();
    let (out, reports) = run(&mut Script::new(items), &mut lock, &cfg());
    assert_eq!(out.unlocks.len(), 1);
    assert_eq!(out.unlocks[0].seq, 2, "the third matching frame opens");
    assert_eq!(out.unlocks[0].user, "alice");
    assert_eq!(lock.pulse_count(), 1);
    assert!(reports[2].opened);
    assert!(matches!(reports[3].decision, Decision::Cooldown { .. }));
    // Locked at start and at the end.
    assert_eq!(lock.lock_calls(), 2);
}

#[test]
fn once_stops_at_the_first_unlock() {
    let items = [2, 1, 1, 1, 1, 1, 1].into_iter().map(Some).collect();
    let mut lock = LogActuator::new();
    let cfg = LoopConfig {
        once: true,
        ..cfg()
    };
    let (out, reports) = run(&mut Script::new(items), &mut lock, &cfg);
    assert_eq!(out.stop, StopReason::Unlocked);
    assert_eq!(reports.len(), 4);
    assert_eq!(lock.pulse_count(), 1);
}

#[test]
fn source_that_ends_mid_presentation_stops_locked() {
    let items = [0, 1, 1].into_iter().map(Some).collect();
    let mut lock = LogActuator::new();
    let (out, _) = run(&mut Script::new(items), &mut lock, &cfg());
    assert_eq!(out.stop, StopReason::SourceEnded);
    assert_eq!(out.frames, 3);
    assert_eq!(lock.pulse_count(), 0);
    assert_eq!(lock.lock_calls(), 2);
}

#[test]
fn vanishing_camera_is_reconnected_and_stays_locked_meanwhile() {
    // The first camera instance shows alice twice, then is unplugged; reopening fails twice
    // (device still gone), then a new instance shows alice again.
    let clock = ManualClock::new();
    let opens = Arc::new(Mutex::new(0u32));
    let o2 = opens.clone();
    let reopen = move || -> Result<Box<dyn FrameSource>> {
        let mut n = o2.lock().unwrap();
        *n += 1;
        match *n {
            1 | 2 => Err(Error::Camera {
                source_name: "cam".into(),
                reason: "No such file or directory".into(),
            }),
            _ => Ok(Box::new(Script {
                items: vec![Some(1); 4],
                next: 0,
                seq0: 100,
            })),
        }
    };
    let first = Box::new(Script::new(vec![Some(1), Some(1), None]));
    let mut cam = Reconnecting::with_first(
        "cam",
        first,
        reopen,
        Backoff::default(),
        Arc::new(clock.clone()),
    );
    let mut lock = LogActuator::new();
    let cfg = LoopConfig {
        max_frames: Some(9),
        time: PolicyTime::Wall,
        ..cfg()
    };
    let (out, reports) = run(&mut cam, &mut lock, &cfg);
    assert_eq!(out.stop, StopReason::FrameLimit);
    let kinds: Vec<String> = reports
        .iter()
        .map(|r| match &r.decision {
            Decision::Error(_) => "E".to_string(),
            Decision::Unlock { .. } => "U".to_string(),
            Decision::Pending { hits, .. } => format!("P{hits}"),
            Decision::Cooldown { .. } => "C".to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    // 2 frames, the unplug, 2 failed reopen attempts, then frames again: the errors cleared
    // the two early hits, so the unlock needs three fresh frames after the reconnect.
    assert_eq!(
        kinds,
        ["P1", "P2", "E", "E", "E", "P1", "P2", "U", "C"],
        "{reports:#?}"
    );
    assert!(reports[2..5].iter().all(|r| r.seq.is_none() && !r.opened));
    assert_eq!(reports[5].seq, Some(100));
    assert_eq!(*opens.lock().unwrap(), 3);
    // The reconnect waited out its backoff on the injected clock.
    assert!(!clock.sleeps().is_empty());
    assert_eq!(lock.pulse_count(), 1);
}

#[test]
fn stop_flag_stops_before_the_next_frame_and_locks() {
    let items = vec![Some(1); 100];
    let mut lock = LogActuator::new();
    let stop = AtomicBool::new(false);
    let mut n = 0;
    let out = run_loop(
        &mut Script::new(items),
        &Scripted,
        &store(),
        &mut policy(),
        &mut lock,
        &cfg(),
        &stop,
        &mut |_| {
            n += 1;
            if n == 2 {
                stop.store(true, Ordering::SeqCst);
            }
        },
    );
    assert_eq!(out.stop, StopReason::Signal);
    assert_eq!(out.frames, 2);
    assert_eq!(lock.pulse_count(), 0);
    assert_eq!(lock.lock_calls(), 2);
}

#[test]
fn store_with_a_flipped_byte_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("templates.fgt");
    let key = DeviceKey::generate().unwrap();
    store().save(&path, &key).unwrap();
    assert!(load_unlock_store(&path, &key, "test-model", DIM).is_ok());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let e = load_unlock_store(&path, &key, "test-model", DIM).unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::Store { .. }), "{e:?}");
    assert!(m.contains("templates.fgt") && !m.contains('\n'), "{m}");
    // Missing, foreign-model and empty stores are refused as well.
    assert!(load_unlock_store(&dir.path().join("none.fgt"), &key, "test-model", DIM).is_err());
    store().save(&path, &key).unwrap();
    let m = load_unlock_store(&path, &key, "other-model", DIM)
        .unwrap_err()
        .to_string();
    assert!(m.contains("other-model"), "{m}");
    TemplateStore::new("test-model", DIM)
        .unwrap()
        .save(&path, &key)
        .unwrap();
    let m = load_unlock_store(&path, &key, "test-model", DIM)
        .unwrap_err()
        .to_string();
    assert!(m.contains("no user"), "{m}");
}

/// `n` tries of an active-high lock's LOCKED level (low) that all fail.
fn locked_fails(n: usize) -> Vec<T> {
    vec![T::set(State::Low).with_error(MockError::Io(std::io::ErrorKind::Other)); n]
}

/// A lock on a mock pin that accepts exactly `script` (after the LOCKED of `Lock::new`).
fn mock_lock(script: &[T]) -> (Mock, Lock<Mock>) {
    let mut all = vec![T::set(State::Low)];
    all.extend_from_slice(script);
    let pin = Mock::new(&all);
    let lock = Lock::new(pin.clone(), false, Duration::from_millis(500))
        .unwrap()
        .with_sleep(|_| {});
    (pin, lock)
}

#[test]
fn lock_state_unknown_stops_the_loop_after_that_frame() {
    // Alice on every frame: the third unlocks. OPEN works, then LOCKED fails every retry, and
    // act's extra try fails as well; the loop's last try before returning works again.
    let mut script = vec![T::set(State::Low), T::set(State::High)]; // loop start, OPEN
    script.extend(locked_fails(3)); // the pulse's LOCKED
    script.extend(locked_fails(3)); // act's ensure_locked
    script.push(T::set(State::Low)); // the loop's last try
    script.push(T::set(State::Low)); // drop
    let (mut pin, mut lock) = mock_lock(&script);
    let mut source = Script::new(vec![Some(1); 6]);
    let (out, reports) = run(&mut source, &mut lock, &cfg());
    drop(lock);
    pin.done();
    assert_eq!(out.stop, StopReason::LockStateUnknown);
    // The failing frame is reported and counted; no later frame is even read.
    assert_eq!((out.frames, reports.len(), source.next), (3, 3, 3));
    let r = &reports[2];
    assert!(matches!(r.decision, Decision::Unlock { .. }), "{r}");
    assert!(!r.opened && !r.to_string().contains("LOCK OPENED"), "{r}");
    let e = r
        .actuator_error
        .as_deref()
        .expect("the report names the failure");
    assert!(
        e.contains("driving LOCKED failed 3 times") && e.contains("state is unknown"),
        "{e}"
    );
    assert!(r.to_string().contains("ACTUATOR FAILED"), "{r}");
    assert!(out.unlocks.is_empty());
    assert_eq!(out.actuator_failures, 1);
    let f = out.lock_failure.expect("why the loop stopped");
    assert_eq!(f.seq, Some(2));
    assert!(
        f.error.contains("driving LOCKED failed 3 times"),
        "{}",
        f.error
    );
    assert_eq!(f.last_try, Ok(()));
}

#[test]
fn lock_state_unknown_at_start_stops_before_the_first_frame() {
    let mut script = locked_fails(3); // the loop's first ensure_locked
    script.push(T::set(State::Low)); // the loop's last try
    script.push(T::set(State::Low)); // drop
    let (mut pin, mut lock) = mock_lock(&script);
    let mut source = Script::new(vec![Some(1); 6]);
    let (out, reports) = run(&mut source, &mut lock, &cfg());
    drop(lock);
    pin.done();
    assert_eq!(out.stop, StopReason::LockStateUnknown);
    assert_eq!((out.frames, reports.len(), source.next), (0, 0, 0));
    let f = out.lock_failure.expect("why the loop stopped");
    assert_eq!(f.seq, None);
    assert!(
        f.error.contains("driving LOCKED failed 3 times"),
        "{}",
        f.error
    );
    assert_eq!(f.last_try, Ok(()));
}

#[test]
fn lock_state_unknown_reports_a_last_try_that_fails_too() {
    let mut script = vec![T::set(State::Low), T::set(State::High)];
    script.extend(locked_fails(9)); // the pulse, act's ensure_locked, the loop's last try
    script.push(T::set(State::Low)); // drop
    let (mut pin, mut lock) = mock_lock(&script);
    let (out, _) = run(&mut Script::new(vec![Some(1); 6]), &mut lock, &cfg());
    drop(lock);
    pin.done();
    assert_eq!(out.stop, StopReason::LockStateUnknown);
    let f = out.lock_failure.expect("why the loop stopped");
    let last = f.last_try.expect_err("the last try failed");
    assert!(last.contains("driving LOCKED failed 3 times"), "{last}");
}

#[test]
fn failed_open_then_locked_again_carries_on() {
    // OPEN fails, LOCKED is driven again: the door is locked, so the loop reads every frame.
    let script = [
        T::set(State::Low), // loop start
        T::set(State::High).with_error(MockError::Io(std::io::ErrorKind::Other)), // OPEN
        T::set(State::Low), // the pulse forces LOCKED
        T::set(State::Low), // act's ensure_locked
        T::set(State::Low), // loop end
        T::set(State::Low), // drop
    ];
    let (mut pin, mut lock) = mock_lock(&script);
    let (out, reports) = run(&mut Script::new(vec![Some(1); 6]), &mut lock, &cfg());
    drop(lock);
    pin.done();
    assert_eq!(out.stop, StopReason::SourceEnded);
    assert_eq!(out.frames, 6);
    assert_eq!(out.actuator_failures, 1);
    assert!(out.lock_failure.is_none());
    assert!(out.unlocks.is_empty());
    let e = reports[2].actuator_error.as_deref().expect("reported");
    assert!(e.contains("driving OPEN failed"), "{e}");
    assert!(!reports[2].opened);
    assert!(reports.iter().all(|r| !r.opened));
}

#[test]
fn injected_open_failures_are_counted_and_every_unlock_is_tried() {
    // With a 1 s cooldown, 40 frames of alice at 10 fps make several unlock decisions; each
    // fails to open, each is counted, and the loop reaches the end of the source.
    let mut lock = LogActuator::new();
    lock.set_failure(Some(InjectedFailure::Open));
    let mut policy = Policy::new(PolicyConfig {
        threshold: 0.5,
        cooldown: Duration::from_secs(1),
        ..PolicyConfig::default()
    })
    .unwrap();
    let mut reports = Vec::new();
    let never = AtomicBool::new(false);
    let out = run_loop(
        &mut Script::new(vec![Some(1); 40]),
        &Scripted,
        &store(),
        &mut policy,
        &mut lock,
        &cfg(),
        &never,
        &mut |r| reports.push(r.clone()),
    );
    let tried: Vec<&FrameReport> = reports.iter().filter(|r| r.decision.is_unlock()).collect();
    assert!(tried.len() >= 2, "{reports:#?}");
    assert_eq!(out.stop, StopReason::SourceEnded);
    assert_eq!(out.frames, 40);
    assert_eq!(out.actuator_failures, tried.len() as u64);
    assert!(tried.iter().all(|r| !r.opened
        && r.actuator_error
            .as_deref()
            .is_some_and(|e| e.contains("OPEN"))));
    assert!(out.lock_failure.is_none() && out.unlocks.is_empty());
    // Locked at start, after each failure and at the end.
    assert_eq!(lock.lock_calls(), 2 + tried.len());
    assert_eq!(lock.pulse_count(), 0);
}

#[test]
fn injected_relock_failure_stops_and_keeps_the_frames_audit_event() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("templates.fgt.audit");
    let mut audit = AuditTrail::new(&outbox).unwrap();
    let mut lock = LogActuator::new();
    lock.set_failure(Some(InjectedFailure::Relock));
    let mut reports = Vec::new();
    let never = AtomicBool::new(false);
    let out = run_loop_live(
        &mut Script::new(vec![Some(1); 6]),
        &Scripted,
        &mut LiveStore::fixed(store()),
        None,
        Some(&mut audit),
        &mut policy(),
        &mut lock,
        &cfg(),
        &never,
        &mut |r| reports.push(r.clone()),
    );
    assert_eq!(out.stop, StopReason::LockStateUnknown);
    assert_eq!(reports.len(), 3);
    // Locked at start, act's extra try, the loop's last try.
    assert_eq!(lock.lock_calls(), 3);
    assert_eq!(out.lock_failure.expect("stopped").last_try, Ok(()));
    // The unlock recorded before acting is kept, followed by the failure to carry it out.
    let events = read_pending(&outbox, 0, 100).unwrap().events;
    let kinds: Vec<(&str, Option<&str>)> = events
        .iter()
        .map(|e| (e.decision.as_str(), e.person.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [("unlock", Some("alice")), ("error", None)],
        "{events:#?}"
    );
    assert!(
        events[1].reason.contains("the lock state is unknown"),
        "{}",
        events[1].reason
    );
}
