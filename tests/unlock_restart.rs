//! The lockout survives restarts of the `facegate unlock` process (issue 12, finding 2): with
//! the x86-dev board's policy (5 failed attempts → 30 s lockout) two replays of a stranger's
//! clip, each its own process, add up to a lockout, and a third process replaying the owner's
//! clip must then stay locked. A deleted policy state is a lockout too, not a fresh start.
//! Drives the real binary on real models and the recorded clips of `../shared`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

fn examples() -> PathBuf {
    common::shared().join("data/faces/examples")
}

fn clip(name: &str) -> String {
    format!(
        "mjpeg:{}",
        common::shared().join("data/video").join(name).display()
    )
}

/// The x86-dev board with its model paths pointed at the converted test models.
fn board(dir: &Path) -> PathBuf {
    common::board_with_test_models(dir, "x86-dev")
}

/// `facegate ARGS`, logged without its frame lines.
fn facegate(args: &[&str]) -> Output {
    common::run_logged(env!("CARGO_BIN_EXE_facegate"), args, |_| false)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn enrol_lin(board: &Path, store: &Path) {
    let src = format!("images:{}", examples().join("lin_manuel_miranda").display());
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

fn unlock(board: &Path, store: &Path, clip_name: &str, once: bool) -> Output {
    let src = clip(clip_name);
    let mut args = vec![
        "unlock",
        "--board",
        board.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--source",
        &src,
    ];
    if once {
        args.push("--once");
    }
    facegate(&args)
}

/// Decision lines of a run (`frame …` lines) that are lockouts, and those that unlock.
fn counts(o: &Output) -> (usize, usize) {
    let s = stdout(o);
    let frames = s.lines().filter(|l| l.starts_with("frame "));
    let (mut locked, mut unlocked) = (0, 0);
    for l in frames {
        if l.contains("locked out") {
            locked += 1;
        }
        if l.contains("UNLOCK") {
            unlocked += 1;
        }
    }
    (locked, unlocked)
}

#[test]
fn lockout_survives_restarts_and_a_missing_state_locks_out() {
    let d = tempfile::tempdir().unwrap();
    let board = board(d.path());

    // Control: a fresh enrolment, the owner's clip unlocks (exit 0 with --once).
    let fresh = d.path().join("fresh/templates.fgt");
    enrol_lin(&board, &fresh);
    let o = unlock(&board, &fresh, "hamilton_640x360.mjpeg", true);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the owner must unlock on a fresh state"
    );

    // Two processes replay a stranger: no unlock, and the failures add up across them.
    let store = d.path().join("var/templates.fgt");
    enrol_lin(&board, &store);
    let first = unlock(&board, &store, "webcam_talking_640x360.mjpeg", false);
    assert!(first.status.success());
    let second = unlock(&board, &store, "webcam_talking_640x360.mjpeg", false);
    assert!(second.status.success());
    let (l1, u1) = counts(&first);
    let (l2, u2) = counts(&second);
    eprintln!("locked-out frames: first run {l1}, second run {l2}");
    assert_eq!((u1, u2), (0, 0));
    assert!(
        l1 + l2 > 0,
        "two replays of the stranger must reach the lockout (5 failed attempts)"
    );

    // A third process: the owner's clip is refused, every frame locked out.
    let o = unlock(&board, &store, "hamilton_640x360.mjpeg", true);
    let (locked, unlocked) = counts(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the owner unlocked during a lockout"
    );
    assert_eq!(unlocked, 0);
    assert!(locked > 0);

    // Deleting the policy state of the fresh store is not a reset: locked out.
    std::fs::remove_file(d.path().join("fresh/templates.fgt.state")).unwrap();
    let o = unlock(&board, &fresh, "hamilton_640x360.mjpeg", true);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("does not exist: locked out"),
        "{}",
        stdout(&o)
    );
    assert_eq!(counts(&o).1, 0);
}
