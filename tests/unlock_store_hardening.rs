//! The template store under attack and under concurrency (issue 12, findings 3, 7 and 8),
//! with a scripted face engine (no models): concurrent enrolments are all kept, a removal
//! during an enrolment is not undone, a user removed while the loop runs cannot unlock from
//! the next frame on, a store that breaks while the loop runs gives error decisions (never the
//! stale templates), and open-mode, symlinked, foreign-key stores and keys, and stores in a
//! folder others may write, are refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use image::RgbImage;

use facegate::camera::{Frame, FrameSource, SourceStats};
use facegate::detect::Face;
use facegate::error::Result;
use facegate::unlock::actuator::LogActuator;
use facegate::unlock::app::{load_unlock_store, update_store, StoreFiles};
use facegate::unlock::policy::{Decision, Policy, PolicyConfig};
use facegate::unlock::policy_state::{Record, StateFile};
use facegate::unlock::seal::DeviceKey;
use facegate::unlock::session::{
    run_loop_live, FaceEngine, FrameReport, LoopConfig, LoopOutcome, PolicyTime,
};
use facegate::unlock::store::TemplateStore;

const DIM: usize = 4;
const MODEL: &str = "test-model";

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i] = 1.0;
    v
}

/// A unit-norm template for user number `i` (only membership is checked here).
fn template(i: usize) -> Vec<f32> {
    let a = (i as f32) * 0.3;
    vec![a.cos(), a.sin(), 0.0, 0.0]
}

fn users_of(files: &StoreFiles) -> Vec<String> {
    let key = DeviceKey::load(&files.key).unwrap();
    TemplateStore::load(&files.store, &key)
        .unwrap()
        .users()
        .map(|(u, _)| u.to_string())
        .collect()
}

fn enrol(files: &StoreFiles, user: &str, t: Vec<f32>, hold: Duration) {
    update_store(files, Some((MODEL, DIM)), |s| {
        // Hold the read-modify-write open so that racing writers overlap.
        std::thread::sleep(hold);
        s.remove_user(user)?;
        s.add_templates(user, vec![t])
    })
    .unwrap();
}

#[test]
fn concurrent_enrolments_are_all_kept() {
    let d = tempfile::tempdir().unwrap();
    let files = StoreFiles::beside(&d.path().join("var/templates.fgt"));
    let n = 6;
    let go = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (files, go) = (files.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                enrol(
                    &files,
                    &format!("user{i}"),
                    template(i),
                    Duration::from_millis(30),
                )
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let users = users_of(&files);
    assert_eq!(users.len(), n, "{users:?}");
    let key = DeviceKey::load(&files.key).unwrap();
    // One writer at a time, each one generation further.
    let g = TemplateStore::load(&files.store, &key)
        .unwrap()
        .generation();
    assert_eq!(g, n as u64);
    // The first enrolment created key and state beside the store, private.
    for p in [&files.store, &files.key, &files.state] {
        let m = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600, "{}", p.display());
    }
}

#[test]
fn a_removal_during_an_enrolment_is_not_undone() {
    let d = tempfile::tempdir().unwrap();
    let files = StoreFiles::beside(&d.path().join("templates.fgt"));
    enrol(&files, "obama", template(0), Duration::ZERO);
    enrol(&files, "biden", template(1), Duration::ZERO);
    // An enrolment of carol holds the store for 300 ms; `users remove obama` starts during it.
    let f2 = files.clone();
    let enrolling =
        std::thread::spawn(move || enrol(&f2, "carol", template(2), Duration::from_millis(300)));
    std::thread::sleep(Duration::from_millis(60));
    update_store(&files, None, |s| {
        assert!(s.remove_user("obama")?);
        Ok(())
    })
    .unwrap();
    enrolling.join().unwrap();
    assert_eq!(users_of(&files), vec!["biden", "carol"]);
}

#[test]
fn a_stale_temp_of_a_killed_writer_is_removed_by_the_next_writer() {
    let d = tempfile::tempdir().unwrap();
    let files = StoreFiles::beside(&d.path().join("templates.fgt"));
    enrol(&files, "alice", template(0), Duration::ZERO);
    // What a writer killed between create and rename leaves behind.
    let stale = d.path().join(".templates.fgt.tmp.4194303");
    std::fs::write(&stale, b"half a store").unwrap();
    enrol(&files, "bob", template(1), Duration::ZERO);
    assert!(!stale.exists());
    assert_eq!(users_of(&files), vec!["alice", "bob"]);
}

#[test]
fn open_modes_symlinks_and_foreign_keys_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let files = StoreFiles::beside(&d.path().join("templates.fgt"));
    enrol(&files, "alice", template(0), Duration::ZERO);
    let key = DeviceKey::load(&files.key).unwrap();
    assert!(load_unlock_store(&files.store, &key, MODEL, DIM).is_ok());
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    for mode in [0o644, 0o666] {
        chmod(&files.store, mode);
        let m = load_unlock_store(&files.store, &key, MODEL, DIM)
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("templates.fgt") && m.contains(&format!("{mode:04o}")) && !m.contains('\n'),
            "{m}"
        );
        chmod(&files.key, mode);
        let m = DeviceKey::load(&files.key).unwrap_err().to_string();
        assert!(
            m.contains("templates.fgt.key") && m.contains(&format!("{mode:04o}")),
            "{m}"
        );
        chmod(&files.store, 0o600);
        chmod(&files.key, 0o600);
    }
    // A folder other users may write (they could put an older store back or delete the
    // lockout's state there): refused to read and to enrol, with one line naming the folder.
    for mode in [0o777, 0o1777, 0o775] {
        chmod(d.path(), mode);
        let m = load_unlock_store(&files.store, &key, MODEL, DIM)
            .unwrap_err()
            .to_string();
        let folder = d.path().display().to_string();
        assert!(
            m.contains(&folder) && m.contains(&format!("{mode:04o}")) && !m.contains('\n'),
            "{m}"
        );
        let e = update_store(&files, Some((MODEL, DIM)), |s| {
            s.add_templates("mallory", vec![template(5)])
        })
        .unwrap_err();
        assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
        chmod(d.path(), 0o700);
        assert_eq!(users_of(&files), vec!["alice"]);
    }
    // A symlinked store path: refused to read, and a write leaves the link (and its target)
    // alone instead of replacing the link with a regular file.
    let link = d.path().join("link.fgt");
    std::os::unix::fs::symlink(&files.store, &link).unwrap();
    let m = load_unlock_store(&link, &key, MODEL, DIM)
        .unwrap_err()
        .to_string();
    assert!(m.contains("symbolic link"), "{m}");
    let mut via_link = StoreFiles::beside(&link);
    via_link.key = files.key.clone();
    let e = update_store(&via_link, Some((MODEL, DIM)), |s| {
        s.add_templates("mallory", vec![template(5)])
    })
    .unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(users_of(&files), vec!["alice"]);
    // A store sealed under another device's key (a planted store, or a store from another
    // board) is refused.
    let mut planted = TemplateStore::new(MODEL, DIM).unwrap();
    planted.add_templates("mallory", vec![unit(1)]).unwrap();
    planted.set_generation(99);
    planted
        .save(&files.store, &DeviceKey::generate().unwrap())
        .unwrap();
    let m = load_unlock_store(&files.store, &key, MODEL, DIM)
        .unwrap_err()
        .to_string();
    assert!(m.contains("another device key"), "{m}");
}

// ---------------------------------------------------------------------------------------------
// The running loop and a store that changes under it.

/// 1 = alice's face, 2 = bob's face (the first pixel's red value).
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
    fn detect(&self, _img: &RgbImage) -> Result<Vec<Face>> {
        Ok(vec![Face {
            score: 0.9,
            bbox: [0.0, 0.0, 3.0, 3.0],
            kps: Some([[0.0, 0.0]; 5]),
        }])
    }
    fn embed(&self, img: &RgbImage, _kps: &[[f32; 2]; 5]) -> Result<Vec<f32>> {
        Ok(unit(img.get_pixel(0, 0)[0] as usize - 1))
    }
}

/// Plays `kinds`; just before handing out frame `at`, runs `change` (another process
/// editing the store while the loop runs).
struct ChangingSource<F: FnMut() + Send> {
    kinds: Vec<u8>,
    next: usize,
    at: usize,
    change: Option<F>,
}

impl<F: FnMut() + Send> FrameSource for ChangingSource<F> {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.next == self.at {
            if let Some(mut c) = self.change.take() {
                c();
            }
        }
        let Some(&k) = self.kinds.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        Ok(Some(frame(k, self.next as u64 - 1)))
    }
    fn name(&self) -> &str {
        "changing"
    }
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

/// Runs alice's face for 9 frames (10 fps, k = 3 of 5, no cooldown) against the store in
/// `files`, with `change` applied before frame `at`.
fn run_alice(
    files: &StoreFiles,
    at: usize,
    change: impl FnMut() + Send,
) -> (LoopOutcome, Vec<FrameReport>) {
    let key = DeviceKey::load(&files.key).unwrap();
    let mut live = load_unlock_store(&files.store, &key, MODEL, DIM).unwrap();
    let mut src = ChangingSource {
        kinds: vec![1; 9],
        next: 0,
        at,
        change: Some(change),
    };
    let mut policy = Policy::new(PolicyConfig {
        threshold: 0.5,
        cooldown: Duration::ZERO,
        ..PolicyConfig::default()
    })
    .unwrap();
    let cfg = LoopConfig {
        time: PolicyTime::FrameRate(10.0),
        error_pause: Duration::ZERO,
        ..LoopConfig::default()
    };
    let mut lock = LogActuator::new();
    let mut reports = Vec::new();
    let never = AtomicBool::new(false);
    let out = run_loop_live(
        &mut src,
        &Scripted,
        &mut live,
        None,
        None,
        &mut policy,
        &mut lock,
        &cfg,
        &never,
        &mut |r| reports.push(r.clone()),
    );
    assert_eq!(lock.pulse_count(), out.unlocks.len());
    (out, reports)
}

fn alice_and_bob(dir: &Path) -> StoreFiles {
    let files = StoreFiles::beside(&dir.join("templates.fgt"));
    update_store(&files, Some((MODEL, DIM)), |s| {
        s.add_templates("alice", vec![unit(0)])?;
        s.add_templates("bob", vec![unit(1)])
    })
    .unwrap();
    files
}

fn unlock_frames(out: &LoopOutcome) -> Vec<u64> {
    out.unlocks.iter().map(|u| u.seq).collect()
}

#[test]
fn a_user_removed_while_the_loop_runs_cannot_unlock_from_the_next_frame_on() {
    // Control: without the removal alice unlocks at frames 2, 5 and 8 (3 fresh hits each).
    let d = tempfile::tempdir().unwrap();
    let files = alice_and_bob(d.path());
    let (out, _) = run_alice(&files, usize::MAX, || {});
    assert_eq!(unlock_frames(&out), vec![2, 5, 8]);

    // `users remove alice` between frames 3 and 4: the unlock of frame 2 happened, frame 4
    // on sees a store without alice (its best match is bob at 0), so no unlock at 5 or 8.
    let f2 = files.clone();
    let (out, reports) = run_alice(&files, 4, move || {
        update_store(&f2, None, |s| s.remove_user("alice").map(|_| ())).unwrap();
    });
    assert_eq!(unlock_frames(&out), vec![2]);
    for r in &reports[4..] {
        assert!(!r.decision.is_unlock(), "{r}");
        assert_eq!(r.best.as_ref().map(|(u, _)| u.as_str()), Some("bob"), "{r}");
    }
    assert!(reports[3].best.as_ref().is_some_and(|(u, _)| u == "alice"));
}

#[test]
fn a_store_that_breaks_while_the_loop_runs_gives_errors_not_the_old_templates() {
    let d = tempfile::tempdir().unwrap();
    let files = alice_and_bob(d.path());
    let store = files.store.clone();
    let (out, reports) = run_alice(&files, 4, move || {
        // Replaced by a store sealed under another key holding alice (a planted store).
        let mut s = TemplateStore::new(MODEL, DIM).unwrap();
        s.add_templates("alice", vec![unit(0)]).unwrap();
        s.set_generation(1000);
        let tmp = store.with_extension("new");
        s.save(&tmp, &DeviceKey::generate().unwrap()).unwrap();
        std::fs::rename(&tmp, &store).unwrap();
    });
    assert_eq!(unlock_frames(&out), vec![2]);
    for r in &reports[4..] {
        match &r.decision {
            Decision::Error(e) => assert!(e.contains("another device key"), "{e}"),
            d => panic!("frame {:?}: {d:?}", r.seq),
        }
    }
    assert_eq!(out.errors, 5);
}

#[test]
fn each_failure_is_on_disk_before_its_decision_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let files = alice_and_bob(d.path());
    let key = DeviceKey::load(&files.key).unwrap();
    let mut live = load_unlock_store(&files.store, &key, MODEL, DIM).unwrap();
    let policy_cfg = PolicyConfig {
        threshold: 0.5,
        max_failures: 2,
        ..PolicyConfig::default()
    };
    let worst = Policy::new(policy_cfg.clone()).unwrap().worst_case();
    let mut state = StateFile::open(&files.state, &key, worst).unwrap();
    let mut policy = Policy::resume(policy_cfg, state.restored()).unwrap();
    // A stranger (unit 2 matches nobody): attempts of 5 face frames fail; the 2nd locks out.
    let mut src = ChangingSource {
        kinds: vec![3; 12],
        next: 0,
        at: usize::MAX,
        change: Some(|| {}),
    };
    let cfg = LoopConfig {
        time: PolicyTime::FrameRate(10.0),
        ..LoopConfig::default()
    };
    let mut on_disk = Vec::new();
    let never = AtomicBool::new(false);
    run_loop_live(
        &mut src,
        &Scripted,
        &mut live,
        Some(&mut state),
        None,
        &mut policy,
        &mut LogActuator::new(),
        &cfg,
        &never,
        // What a process killed right after printing this decision would leave on disk.
        &mut |r| {
            let bytes = std::fs::read(&files.state).unwrap();
            let (rec, _) = Record::from_bytes(&bytes, &key).unwrap();
            on_disk.push((r.decision.clone(), rec.state));
        },
    );
    // Frame 4 ends the first attempt: 1 failure on disk when it is reported.
    assert_eq!(on_disk[4].1.failures, 1, "{:?}", on_disk[4]);
    assert_eq!(on_disk[3].1.failures, 0);
    // Frame 9 ends the second: reported as a lockout that is already on disk.
    assert!(
        matches!(on_disk[9].0, Decision::LockedOut { .. }),
        "{:?}",
        on_disk[9]
    );
    assert_eq!(
        on_disk[9].1.lockout_remaining,
        Duration::from_secs(30),
        "{:?}",
        on_disk[9]
    );
}
