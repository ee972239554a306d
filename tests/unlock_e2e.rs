//! Face unlock end to end on real models and recorded clips: enrol from photos, replay a
//! camera clip through the loop, and check the lock (a mock pin) — the outcomes the README
//! promises. Run with `FACEGATE_SHARED=/path/to/shared` if `../shared` is elsewhere.

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Duration;

use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

use facegate::camera::{FrameSource, SourceSpec};
use facegate::unlock::actuator::{Lock, LogActuator};
use facegate::unlock::app::{
    enrol_people, example_people, load_models, open_replay, replay_clip, Models,
};
use facegate::unlock::policy::{Decision, Policy, PolicyConfig};
use facegate::unlock::session::{
    assess_frame, run_loop, LiveGate, LoopConfig, PolicyTime, QualityGates, Rejection,
};

/// The demo's detector size for the 640×360 clips.
const DET_SIZE: (u32, u32) = (320, 192);

fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        load_models(
            &common::model("det_500m"),
            &common::model("mobilefacenet_512"),
            DET_SIZE,
            &Default::default(),
        )
        .unwrap()
    })
}

fn examples() -> PathBuf {
    common::shared().join("data/faces/examples")
}

fn clip(name: &str) -> SourceSpec {
    SourceSpec::Mjpeg {
        path: common::shared().join("data/video").join(name),
    }
}

/// The policy at the threshold measured for the f32 test recogniser.
fn policy() -> PolicyConfig {
    PolicyConfig {
        threshold: common::f32_match_threshold(),
        ..PolicyConfig::default()
    }
}

#[test]
fn hamilton_replay_unlocks_for_the_enrolled_photo_with_one_pulse() {
    let m = models();
    let people = vec![(
        "lin_manuel_miranda".to_string(),
        examples().join("lin_manuel_miranda"),
    )];
    let (store, enrolled) = enrol_people(m, &people, 5, &mut |l| println!("{l}")).unwrap();
    // The folder holds one photo: enrolment takes what passes.
    assert_eq!(enrolled, [("lin_manuel_miranda".to_string(), 1)]);

    // Active-high lock: LOCKED = low, OPEN = high.
    let mut pin = Mock::new(&[
        T::set(State::Low),  // Lock::new
        T::set(State::Low),  // loop start: ensure_locked
        T::set(State::High), // the one unlock: OPEN
        T::set(State::Low),  // … then LOCKED after the open time
        T::set(State::Low),  // loop end: ensure_locked
        T::set(State::Low),  // drop
    ]);
    let opened_for = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let o2 = opened_for.clone();
    let mut lock = Lock::new(pin.clone(), false, Duration::from_millis(3000))
        .unwrap()
        .with_sleep(move |d| o2.lock().unwrap().push(d));
    let mut frames = Vec::new();
    let out = replay_clip(
        m,
        &store,
        policy(),
        LiveGate::OFF,
        &clip("hamilton_640x360.mjpeg"),
        &mut lock,
        false, // the whole clip: the cooldown must keep it to one pulse
        &mut |r| {
            println!("{r}");
            frames.push(r.clone())
        },
    )
    .unwrap();
    drop(lock);
    pin.done();
    assert_eq!(out.unlocks.len(), 1, "{out:?}");
    let u = &out.unlocks[0];
    println!(
        "hamilton: first unlock at frame {} for {} with score {:.3} (threshold {:.3}); \
         {} frames handled, {} skipped; mean per face frame: detect {:.1} ms, align+embed {:.1} ms",
        u.seq,
        u.user,
        u.score,
        policy().threshold,
        out.frames,
        out.skipped,
        out.mean_face_timings.detect_ms,
        out.mean_face_timings.embed_ms
    );
    assert_eq!(u.user, "lin_manuel_miranda");
    assert!(u.score >= policy().threshold);
    assert_eq!(*opened_for.lock().unwrap(), [Duration::from_secs(3)]);
    assert_eq!(out.errors, 0);
    // The unlocking frame and the two matching frames before it are in the reports.
    let hits = frames
        .iter()
        .filter(|r| {
            matches!(
                r.decision,
                Decision::Pending { .. } | Decision::Unlock { .. }
            )
        })
        .count();
    assert!(hits >= 3, "{hits}");
}

#[test]
fn webcam_replay_never_unlocks_for_any_example_person() {
    let m = models();
    let people = example_people(&examples()).unwrap();
    assert!(people.len() >= 6, "{people:?}");
    let (store, enrolled) = enrol_people(m, &people, 5, &mut |l| println!("{l}")).unwrap();
    assert!(enrolled.iter().all(|(_, n)| *n >= 1), "{enrolled:?}");

    // Every frame of the clip goes through the pipeline (no frame skipping here), so every
    // one of the 135 frames is matched against every enrolled person. Under qemu every third
    // frame (45 frames) keeps the run inside CI's budget.
    let mut src = open_replay(&clip("webcam_talking_640x360.mjpeg")).unwrap();
    let mut policy_sm = Policy::new(policy()).unwrap();
    let mut lock = LogActuator::new();
    let mut best = Vec::new();
    let cfg = LoopConfig {
        time: PolicyTime::FrameRate(30.0),
        min_interval: if common::emulated() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        },
        ..LoopConfig::default()
    };
    let out = run_loop(
        &mut src,
        &m.pipeline,
        &store,
        &mut policy_sm,
        &mut lock,
        &cfg,
        &AtomicBool::new(false),
        &mut |r| best.extend(r.best.clone()),
    );
    assert_eq!(out.frames + out.skipped, 135);
    assert_eq!(out.errors, 0);
    let (who, top) = out.best_score.clone().expect("faces were seen");
    println!(
        "webcam_talking: {} frames, {} with a face, {} unlocks; highest score {top:.3} ({who}), threshold {:.3}",
        out.frames,
        out.face_frames,
        out.unlocks.len(),
        policy().threshold
    );
    assert!(out.face_frames * 4 >= out.frames * 3, "{}", out.face_frames);
    assert_eq!(out.unlocks.len(), 0);
    assert_eq!(lock.pulse_count(), 0);
    // Stronger than "no unlock" (which lockouts alone could ensure): no single frame of
    // this stranger reaches the threshold for any enrolled person.
    assert!(top < policy().threshold, "{who} {top}");
    assert!(best.iter().all(|(_, s)| *s <= top));
}

#[test]
fn yuyv_frames_each_have_exactly_one_face() {
    let det = &models().pipeline.detector;
    let mut src = open_replay(
        &"yuyv:PLACEHOLDER@640x360"
            .replace(
                "PLACEHOLDER",
                &common::shared()
                    .join("data/video/webcam_talking_640x360_10f.yuyv")
                    .to_string_lossy(),
            )
            .parse()
            .unwrap(),
    )
    .unwrap();
    let mut n = 0;
    while let Some(f) = src.next_frame().unwrap() {
        let faces = det.detect(&f.rgb).unwrap();
        assert_eq!(faces.len(), 1, "frame {}: {faces:?}", f.seq);
        assert!(faces[0].kps.is_some());
        n += 1;
    }
    assert_eq!(n, 10);
}

#[test]
fn enrolment_gates_refuse_group_photos_and_accept_a_portrait() {
    let m = models();
    let gates = QualityGates::default();
    let group =
        facegate::image_io::load_rgb(&examples().join("_multi_face/obama_and_biden.jpg")).unwrap();
    match assess_frame(&m.pipeline, &group, &gates, 0) {
        Err(Rejection::SeveralFaces(n)) => assert!(n >= 2),
        other => panic!("{:?}", other.map(|a| a.seq)),
    }
    let lin =
        facegate::image_io::load_rgb(&examples().join("lin_manuel_miranda/lin-manuel-miranda.png"))
            .unwrap();
    let a = assess_frame(&m.pipeline, &lin, &gates, 0).unwrap();
    assert!(a.face_width >= 80.0 && a.sharpness >= gates.min_sharpness);
    assert_eq!(a.embedding.len(), m.dim);
    // The same portrait blurred is refused by the sharpness gate.
    let blurred = image::imageops::blur(&lin, 6.0);
    match assess_frame(&m.pipeline, &blurred, &gates, 1) {
        Err(Rejection::Blurred { .. }) => {}
        other => panic!("{:?}", other.map(|a| a.sharpness)),
    }
}
