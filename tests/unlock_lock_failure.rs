//! `facegate unlock` end to end when the lock fails, through the real binary on real models
//! and the owner's recorded clip, with the log-only actuator made to fail by the test-only
//! `--inject-actuator-failure`:
//! * LOCKED failing after the pulse (`relock`): the lock's state is unknown, so the process
//!   stops at that frame and exits with its own status (74) and one line saying so;
//! * OPEN failing, locked again (`open`): the door is locked, the loop goes on to the end of
//!   the clip and exits 0;
//! * the hook is refused where the GPIO lock would be driven.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use facegate::cli::unlock::EXIT_LOCK_STATE_UNKNOWN;

/// `facegate ARGS`, logged with the frames that unlocked.
fn facegate(args: &[&str]) -> Output {
    common::run_logged(env!("CARGO_BIN_EXE_facegate"), args, |l| {
        l.contains("UNLOCK")
    })
}

fn enrol_lin(board: &Path, store: &Path) {
    let photos = common::shared().join("data/faces/examples/lin_manuel_miranda");
    let src = format!("images:{}", photos.display());
    let o = facegate(&[
        "enroll",
        "--board",
        board.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--user",
        "lin",
        "--source",
        &src,
    ]);
    assert!(o.status.success());
}

/// Replays the owner's clip (which unlocks: `tests/unlock_restart.rs`) with `failure`
/// injected.
fn unlock_failing(board: &Path, store: &Path, failure: &str) -> Output {
    let clip = common::shared().join("data/video/hamilton_640x360.mjpeg");
    let src = format!("mjpeg:{}", clip.display());
    facegate(&[
        "unlock",
        "--board",
        board.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--source",
        &src,
        "--inject-actuator-failure",
        failure,
    ])
}

/// The per-frame report lines (not the `frame -> decision` summary).
fn frame_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("frame ") && !l.starts_with("frame ->"))
        .map(str::to_string)
        .collect()
}

fn error_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect()
}

fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let board = common::board_with_test_models(dir, "x86-dev");
    let store = dir.join("var/templates.fgt");
    enrol_lin(&board, &store);
    (board, store)
}

#[test]
fn unknown_lock_state_stops_unlock_with_its_own_status() {
    let d = tempfile::tempdir().unwrap();
    let (board, store) = setup(d.path());
    let o = unlock_failing(&board, &store, "relock");
    assert_eq!(o.status.code(), Some(i32::from(EXIT_LOCK_STATE_UNKNOWN)));
    let errors = error_lines(&o);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("the lock could not be driven LOCKED and its state is unknown"),
        "{}",
        errors[0]
    );
    // The log-only actuator locks again when asked, so the last try worked.
    assert!(
        errors[0].contains("a last try to drive LOCKED before exiting succeeded"),
        "{}",
        errors[0]
    );
    // The loop stopped at the frame of the unlock: it is the last frame reported, and no
    // frame says the door opened.
    let frames = frame_lines(&o);
    let last = frames.last().expect("frames were reported");
    assert!(last.contains("UNLOCK lin"), "{last}");
    assert!(last.contains("ACTUATOR FAILED"), "{last}");
    assert_eq!(frames.iter().filter(|l| l.contains("UNLOCK")).count(), 1);
    assert!(frames.iter().all(|l| !l.contains("LOCK OPENED")));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("stopped (LockStateUnknown)"), "{stdout}");
}

#[test]
fn failed_open_keeps_unlock_running_to_the_end_of_the_clip() {
    let d = tempfile::tempdir().unwrap();
    let (board, store) = setup(d.path());
    let o = unlock_failing(&board, &store, "open");
    assert_eq!(o.status.code(), Some(0), "the door is locked: no failure");
    assert!(error_lines(&o).is_empty());
    let frames = frame_lines(&o);
    let first = frames
        .iter()
        .position(|l| l.contains("UNLOCK lin"))
        .expect("the owner's clip reaches an unlock");
    assert!(
        frames[first].contains("ACTUATOR FAILED"),
        "{}",
        frames[first]
    );
    assert!(
        frames.len() > first + 1,
        "frames after the failed unlock are still handled"
    );
    assert!(frames.iter().all(|l| !l.contains("LOCK OPENED")));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("stopped (SourceEnded)"), "{stdout}");
    assert!(!stdout.contains(" 0 actuator failure(s)"), "{stdout}");
}

#[test]
fn injection_is_refused_where_the_gpio_lock_would_be_driven() {
    let d = tempfile::tempdir().unwrap();
    let (board, store) = setup(d.path());
    // The same board with a lock on a chip that does not exist: a live camera would drive it.
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(&board).unwrap()).unwrap();
    let mut gpio = toml::Table::new();
    gpio.insert("chip".into(), "/dev/gpiochip-facegate-test".into());
    gpio.insert("line".into(), 17.into());
    gpio.insert("active_low".into(), false.into());
    gpio.insert("open_ms".into(), 500.into());
    doc.insert("gpio".into(), gpio.into());
    let gpio_board = d.path().join("x86-dev-gpio.toml");
    std::fs::write(&gpio_board, toml::to_string(&doc).unwrap()).unwrap();
    let o = facegate(&[
        "unlock",
        "--board",
        gpio_board.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--source",
        "v4l2:/dev/video-facegate-test",
        "--inject-actuator-failure",
        "relock",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let errors = error_lines(&o);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("--inject-actuator-failure is for tests"),
        "{}",
        errors[0]
    );
    // Refused before the line was opened: the chip's error is not what stopped it.
    assert!(
        !errors[0].contains("gpiochip-facegate-test"),
        "{}",
        errors[0]
    );
}
