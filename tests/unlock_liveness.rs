//! The liveness stage on real models and recorded data: the frozen-input floor against the
//! real-camera clips, the attack (a still of the owner replayed as an MJPEG camera)
//! refused as frozen, the hamilton replay still unlocking with liveness on, and the spoof
//! photos of `data/liveness/pourfard_dev/fake`, each enrolled from that very photo, refused
//! by the anti-spoofing network. Run with `FACEGATE_SHARED=/path/to/shared` if `../shared` is
//! elsewhere.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use facegate::align::norm_crop;
use facegate::camera::{FrameSource, SourceSpec};
use facegate::pipeline::largest;
use facegate::unlock::actuator::LogActuator;
use facegate::unlock::app::{
    enrol_largest_faces, enrol_people, load_models, open_replay, replay_clip, replay_with,
    still_mjpeg, LiveModel, Models, DEFAULT_LIVE_MODEL, DEFAULT_LIVE_THRESHOLD,
};
use facegate::unlock::frozen::{mean_abs_diff, DEFAULT_FROZEN_FLOOR};
use facegate::unlock::policy::{Decision, PolicyConfig, SpoofKind};
use facegate::unlock::session::{FaceEngine, LiveGate, LoopConfig, PolicyTime};

/// The demo's detector size for the 640×360 clips.
const DET_SIZE: (u32, u32) = (320, 192);

/// Detector and recogniser only (the frozen check needs no network).
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

/// The same with the boards' anti-spoofing model.
fn live_models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let mut m = load_models(
            &common::model("det_500m"),
            &common::model("mobilefacenet_512"),
            DET_SIZE,
            &Default::default(),
        )
        .unwrap();
        m.liveness =
            Some(LiveModel::load(&common::model(DEFAULT_LIVE_MODEL), &Default::default()).unwrap());
        m
    })
}

fn examples() -> PathBuf {
    common::shared().join("data/faces/examples")
}

fn lin() -> Vec<(String, PathBuf)> {
    vec![(
        "lin_manuel_miranda".to_string(),
        examples().join("lin_manuel_miranda"),
    )]
}

fn policy() -> PolicyConfig {
    PolicyConfig {
        threshold: common::f32_match_threshold(),
        ..PolicyConfig::default()
    }
}

/// What the boards run.
const BOARD_GATE: LiveGate = LiveGate {
    threshold: Some(DEFAULT_LIVE_THRESHOLD),
    frozen_floor: DEFAULT_FROZEN_FLOOR,
};

/// Aligned 112×112 crops of the largest face of every frame of `spec` (`None`: no face),
/// each with the sha256 of its decoded frame.
fn crops(spec: &SourceSpec) -> Vec<(Option<image::RgbImage>, Vec<u8>)> {
    let m = models();
    let mut src = open_replay(spec).unwrap();
    let mut v = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        let faces = m.detect(&f.rgb).unwrap();
        let crop = largest(&faces)
            .and_then(|face| face.kps)
            .map(|k| norm_crop(&f.rgb, &k, 112));
        let digest = <sha2::Sha256 as sha2::Digest>::digest(f.rgb.as_raw()).to_vec();
        v.push((crop, digest));
    }
    v
}

fn quantiles(mut v: Vec<f32>) -> String {
    v.sort_by(f32::total_cmp);
    let q = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    format!(
        "n {}, min {:.2}, p1 {:.2}, p5 {:.2}, median {:.2}, max {:.2}",
        v.len(),
        q(0.0),
        q(0.01),
        q(0.05),
        q(0.5),
        q(1.0)
    )
}

/// The frozen check's floor against real cameras: for every face frame of each recorded
/// clip, the smallest mean absolute difference of its aligned crop to the crops of the face
/// frames before it that the loop could compare it with (the last 5, at the loop's 200 ms
/// spacing = every 6th frame at 30 fps), and to the very next frame (stride 1, the worst
/// case). The floor must sit at most half the smallest change any real camera showed.
///
/// Frames whose decoded pixels are identical to the frame compared with are left out and
/// counted: they are repeats written by the clips' transcoding (the hamilton clip opens with
/// its first frame 26 times, the webcam clip repeats 3 frames, 29.97 → 30 fps), not two
/// sensor readouts, which always differ by the sensor's noise. The loop refuses them as
/// frozen, rightly: they are a still.
#[test]
fn frozen_floor_is_below_every_real_camera_change_with_margin() {
    let video = common::shared().join("data/video");
    let clips = [
        SourceSpec::Mjpeg {
            path: video.join("hamilton_640x360.mjpeg"),
        },
        SourceSpec::Mjpeg {
            path: video.join("webcam_talking_640x360.mjpeg"),
        },
        format!(
            "yuyv:{}@640x360",
            video.join("webcam_talking_640x360_10f.yuyv").display()
        )
        .parse()
        .unwrap(),
    ];
    let mut smallest = f32::INFINITY;
    for spec in &clips {
        let all = crops(spec);
        let faces = all.iter().filter(|c| c.0.is_some()).count();
        assert!(
            faces * 2 >= all.len(),
            "{spec}: {faces} of {} frames with a face",
            all.len()
        );
        let mut repeats = 0;
        // The crops' difference of frames `k` and `i` if both have a face and are not the
        // same picture.
        let mut pair = |k: usize, i: usize| {
            let ((Some(a), da), (Some(b), db)) = (&all[k], &all[i]) else {
                return None;
            };
            if da == db {
                repeats += 1;
                return None;
            }
            Some(mean_abs_diff(a, b))
        };
        let consecutive: Vec<f32> = (1..all.len()).filter_map(|i| pair(i - 1, i)).collect();
        let stride = 6;
        let mut loop_like = Vec::new();
        for i in (0..all.len()).step_by(stride) {
            let earlier = (1..=5)
                .filter_map(|j| i.checked_sub(j * stride))
                .filter_map(|k| pair(k, i))
                .min_by(f32::total_cmp);
            loop_like.extend(earlier);
        }
        println!(
            "{spec}: {} frames, {faces} with a face, {repeats} comparisons skipped as repeated pictures",
            all.len()
        );
        println!(
            "{spec}: consecutive frames: {}",
            quantiles(consecutive.clone())
        );
        if !loop_like.is_empty() {
            println!(
                "{spec}: loop spacing (every 6th frame, min over the last 5): {}",
                quantiles(loop_like.clone())
            );
        }
        for d in consecutive.iter().chain(&loop_like) {
            smallest = smallest.min(*d);
        }
    }
    println!("smallest real-camera change {smallest:.3}, floor {DEFAULT_FROZEN_FLOOR}");
    assert!(
        DEFAULT_FROZEN_FLOOR > 0.0 && DEFAULT_FROZEN_FLOOR * 2.0 <= smallest,
        "floor {DEFAULT_FROZEN_FLOOR} vs smallest real change {smallest}"
    );
}

/// The attack, built without ffmpeg: one still of the owner JPEG-encoded once and
/// repeated as an MJPEG camera. The frozen check alone keeps it locked; the control without
/// the check shows the still does unlock otherwise.
#[test]
fn owner_still_replayed_as_mjpeg_stays_locked_as_frozen() {
    let m = models();
    let (store, _) = enrol_people(m, &lin(), 5, &mut |l| println!("{l}")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.mjpeg");
    let photo = examples().join("lin_manuel_miranda/lin-manuel-miranda.png");
    std::fs::write(&path, still_mjpeg(&photo, 640, 60).unwrap()).unwrap();
    let spec = SourceSpec::Mjpeg { path };
    let frozen_only = LiveGate {
        threshold: None,
        frozen_floor: DEFAULT_FROZEN_FLOOR,
    };
    let mut lock = LogActuator::new();
    let mut reports = Vec::new();
    let out = replay_clip(
        m,
        &store,
        policy(),
        frozen_only,
        &spec,
        &mut lock,
        false,
        &mut |r| {
            println!("{r}");
            reports.push(r.clone())
        },
    )
    .unwrap();
    assert!(out.unlocks.is_empty(), "{out:?}");
    assert_eq!(lock.pulse_count(), 0);
    assert_eq!(out.errors, 0);
    // Every frame after the first recognised one is refused as frozen (or locked out once
    // the frozen attempts reach max_failures).
    let first = reports
        .iter()
        .position(|r| matches!(r.decision, Decision::Pending { .. }))
        .expect("the still is recognised");
    assert!(out.frozen >= 4, "{out:?}");
    for r in &reports[first + 1..] {
        assert!(
            matches!(
                r.decision,
                Decision::Spoof {
                    kind: SpoofKind::Frozen,
                    ..
                } | Decision::LockedOut { .. }
            ),
            "{r}"
        );
        if let Decision::Spoof { .. } = r.decision {
            assert_eq!(r.crop_diff, Some(0.0), "{r}");
        }
    }
    // The control: without the check, the same still opens the lock (the bug).
    let mut lock = LogActuator::new();
    let out = replay_clip(
        m,
        &store,
        policy(),
        LiveGate::OFF,
        &spec,
        &mut lock,
        true,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(out.unlocks.len(), 1);
}

/// The hamilton replay (a live person filmed on stage) still unlocks with the boards'
/// liveness stage on, and the liveness time shows in the loop's own timings.
#[test]
fn hamilton_unlocks_with_liveness_on() {
    let m = live_models();
    let (store, _) = enrol_people(m, &lin(), 5, &mut |l| println!("{l}")).unwrap();
    let mut lock = LogActuator::new();
    let mut reports = Vec::new();
    let out = replay_clip(
        m,
        &store,
        policy(),
        BOARD_GATE,
        &SourceSpec::Mjpeg {
            path: common::shared().join("data/video/hamilton_640x360.mjpeg"),
        },
        &mut lock,
        false,
        &mut |r| {
            println!("{r}");
            reports.push(r.clone())
        },
    )
    .unwrap();
    println!(
        "hamilton with liveness: {} unlock(s), {} spoof, {} frozen; frame -> decision p50 {:?} ms, liveness p50 {:?} ms over {} frames",
        out.unlocks.len(),
        out.spoofs,
        out.frozen,
        out.latency_quantile_ms(0.5),
        out.live_quantile_ms(0.5),
        out.live_latencies_ms.len()
    );
    assert_eq!(out.unlocks.len(), 1, "{out:?}");
    assert_eq!(out.errors, 0);
    assert_eq!(out.frozen, 0, "a live person on stage is never frozen");
    assert_eq!(lock.pulse_count(), 1);
    // The unlocking frame was judged live, and every recognised frame was judged.
    let u = reports.iter().find(|r| r.opened).unwrap();
    assert!(u.live.unwrap() >= DEFAULT_LIVE_THRESHOLD, "{u}");
    assert!(!out.live_latencies_ms.is_empty());
}

/// Every face of the spoof photos enrolled from that very photo (recognition matches
/// perfectly), the folder replayed as a camera with each photo one whole attempt: without
/// liveness they unlock, with the anti-spoofing network none does.
#[test]
fn spoof_photos_enrolled_from_themselves_stay_locked_by_liveness_alone() {
    let m = live_models();
    let dir = common::shared().join("data/liveness/pourfard_dev/fake");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (store, enrolled) = enrol_largest_faces(m, &files, &mut |l| println!("{l}")).unwrap();
    assert!(enrolled.len() >= 8, "{enrolled:?}");
    let policy = PolicyConfig {
        k: 1,
        n: 1,
        cooldown: Duration::ZERO,
        max_failures: 100,
        ..policy()
    };
    let spec = SourceSpec::Images { dir };
    let run = |liveness: LiveGate| {
        let cfg = LoopConfig {
            time: PolicyTime::FrameRate(30.0),
            liveness,
            ..LoopConfig::default()
        };
        let mut lock = LogActuator::new();
        let mut reports = Vec::new();
        let out = replay_with(
            m,
            &store,
            policy.clone(),
            &cfg,
            &spec,
            &mut lock,
            &mut |r| {
                println!("{r}");
                reports.push(r.clone())
            },
        )
        .unwrap();
        assert_eq!(lock.pulse_count(), out.unlocks.len());
        (out, reports)
    };
    let (control, _) = run(LiveGate::OFF);
    assert_eq!(control.errors, 0);
    assert_eq!(control.unlocks.len(), enrolled.len(), "{control:?}");
    let (out, reports) = run(LiveGate {
        frozen_floor: 0.0,
        ..BOARD_GATE
    });
    assert!(out.unlocks.is_empty(), "{out:?}");
    assert_eq!(out.errors, 0);
    assert_eq!(out.spoofs as usize, enrolled.len());
    for r in reports.iter().filter(|r| r.best.is_some()) {
        assert!(r.live.unwrap() < DEFAULT_LIVE_THRESHOLD, "{r}");
    }
}
