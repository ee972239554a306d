//! The liveness stage of the unlock loop with a scripted engine (no models): a recognised
//! face judged a spoof is a failed attempt that counts toward the lockout, frozen input is
//! refused, a liveness error or a missing anti-spoofing model never opens, and a face that
//! matches nobody is not judged.

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use image::RgbImage;

use facegate::align::ARCFACE_TEMPLATE;
use facegate::camera::{Frame, FrameSource, SourceStats};
use facegate::detect::Face;
use facegate::error::{Error, Result};
use facegate::unlock::actuator::LogActuator;
use facegate::unlock::policy::{Decision, Policy, PolicyConfig, SpoofKind};
use facegate::unlock::session::{
    run_loop, FaceEngine, FrameReport, LiveGate, LoopConfig, LoopOutcome, PolicyTime,
};
use facegate::unlock::store::TemplateStore;

const DIM: usize = 4;

fn unit(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i] = 1.0;
    v
}

/// Frame kinds (red value of pixel (0, 0)):
const ALICE: u8 = 1;
const STRANGER: u8 = 2;
/// Alice, but the anti-spoofing network says 0.1.
const ALICE_SPOOF: u8 = 5;
/// Alice, the same still picture every time.
const STILL_A: u8 = 6;
/// Alice, another still picture.
const STILL_B: u8 = 8;
/// Alice, and the anti-spoofing network fails.
const ALICE_LIVE_ERROR: u8 = 7;

/// A 112×112 frame whose face sits exactly on the ArcFace template (so the aligned crop is
/// the frame). Moving kinds get a pattern that changes with `seq` (a mean absolute
/// difference of tens of levels between frames); still kinds the same pattern every time.
fn frame(kind: u8, seq: u64) -> Frame {
    let phase = match kind {
        STILL_A => 0,
        STILL_B => 97,
        _ => seq * 41,
    };
    let mut rgb = RgbImage::from_fn(112, 112, |x, y| {
        let v = ((x as u64 * 7 + y as u64 * 3 + phase) % 256) as u8;
        image::Rgb([v, v / 2, 255 - v])
    });
    rgb.put_pixel(0, 0, image::Rgb([kind, 0, 0]));
    Frame {
        rgb,
        seq,
        captured: Instant::now(),
    }
}

fn template_kps() -> [[f32; 2]; 5] {
    ARCFACE_TEMPLATE.map(|[x, y]| [x as f32, y as f32])
}

/// The scripted engine; `with_liveness: false` has no anti-spoofing model (the trait's
/// default `live_score`).
struct Scripted {
    with_liveness: bool,
}

impl FaceEngine for Scripted {
    fn detect(&self, _img: &RgbImage) -> Result<Vec<Face>> {
        Ok(vec![Face {
            score: 0.9,
            bbox: [30.0, 40.0, 80.0, 100.0],
            kps: Some(template_kps()),
        }])
    }
    fn embed(&self, img: &RgbImage, _kps: &[[f32; 2]; 5]) -> Result<Vec<f32>> {
        Ok(match img.get_pixel(0, 0)[0] {
            STRANGER => unit(1),
            _ => unit(0),
        })
    }
    fn live_score(&self, img: &RgbImage, face: &Face) -> Result<f32> {
        if !self.with_liveness {
            return Err(Error::Msg("no anti-spoofing model".into()));
        }
        assert_eq!(face.kps, Some(template_kps()), "the matched face is judged");
        match img.get_pixel(0, 0)[0] {
            ALICE_SPOOF => Ok(0.1),
            ALICE_LIVE_ERROR => Err(Error::Msg("injected liveness failure".into())),
            _ => Ok(0.9),
        }
    }
}

struct Script {
    kinds: Vec<u8>,
    next: usize,
}

impl FrameSource for Script {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(&k) = self.kinds.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        Ok(Some(frame(k, self.next as u64 - 1)))
    }
    fn name(&self) -> &str {
        "script"
    }
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

fn run(
    kinds: &[u8],
    gate: LiveGate,
    with_liveness: bool,
    lock: &mut LogActuator,
) -> (LoopOutcome, Vec<FrameReport>) {
    let mut store = TemplateStore::new("test-model", DIM).unwrap();
    store.add_templates("alice", vec![unit(0)]).unwrap();
    let mut policy = Policy::new(PolicyConfig {
        threshold: 0.5,
        ..PolicyConfig::default()
    })
    .unwrap();
    let cfg = LoopConfig {
        open_time: Duration::from_millis(500),
        time: PolicyTime::FrameRate(10.0),
        error_pause: Duration::ZERO,
        liveness: gate,
        ..LoopConfig::default()
    };
    let mut reports = Vec::new();
    let out = run_loop(
        &mut Script {
            kinds: kinds.to_vec(),
            next: 0,
        },
        &Scripted { with_liveness },
        &store,
        &mut policy,
        lock,
        &cfg,
        &AtomicBool::new(false),
        &mut |r| reports.push(r.clone()),
    );
    (out, reports)
}

const NETWORK_ONLY: LiveGate = LiveGate {
    threshold: Some(0.5),
    frozen_floor: 0.0,
};
const FROZEN_ONLY: LiveGate = LiveGate {
    threshold: None,
    frozen_floor: 0.5,
};
const BOTH: LiveGate = LiveGate {
    threshold: Some(0.5),
    frozen_floor: 0.5,
};

/// One letter per decision: U unlock, P<hits> pending, S spoof, F frozen, L locked out,
/// C cooldown, E error, M no match.
fn letters(reports: &[FrameReport]) -> Vec<String> {
    reports
        .iter()
        .map(|r| match &r.decision {
            Decision::Unlock { .. } => "U".into(),
            Decision::Pending { hits, .. } => format!("P{hits}"),
            Decision::Spoof {
                kind: SpoofKind::Spoof,
                ..
            } => "S".into(),
            Decision::Spoof {
                kind: SpoofKind::Frozen,
                ..
            } => "F".into(),
            Decision::LockedOut { .. } => "L".into(),
            Decision::Cooldown { .. } => "C".into(),
            Decision::Error(_) => "E".into(),
            Decision::NoMatch { .. } => "M".into(),
            Decision::NoFace => "N".into(),
        })
        .collect()
}

#[test]
fn spoofs_are_failed_attempts_and_lock_out_even_the_live_owner() {
    let mut lock = LogActuator::new();
    let kinds = [[ALICE_SPOOF; 5].as_slice(), &[ALICE; 3]].concat();
    let (out, reports) = run(&kinds, NETWORK_ONLY, true, &mut lock);
    // Each spoof is one failed attempt; the 5th (max_failures) starts the lockout on its
    // own frame, and the live owner who follows is locked out too.
    assert_eq!(letters(&reports), ["S", "S", "S", "S", "L", "L", "L", "L"]);
    assert_eq!(lock.pulse_count(), 0);
    assert_eq!(out.spoofs, 4);
    assert!(out.unlocks.is_empty());
    // The decision log carries the live score.
    match &reports[0].decision {
        Decision::Spoof {
            user, score, live, ..
        } => assert_eq!((user.as_str(), *score, *live), ("alice", 1.0, Some(0.1))),
        d => panic!("{d:?}"),
    }
    assert_eq!(reports[0].live, Some(0.1));
    let line = reports[0].to_string();
    assert!(
        line.contains("SPOOF alice (1.000)") && line.contains("live 0.100"),
        "{line}"
    );
    assert!(line.contains("liveness"), "{line}");
    // The network ran on every recognised frame, the locked-out ones included.
    assert_eq!(out.live_latencies_ms.len(), 8);
}

#[test]
fn live_recognised_frames_unlock_and_strangers_are_not_judged() {
    let mut lock = LogActuator::new();
    let (out, reports) = run(&[STRANGER, ALICE, ALICE, ALICE], BOTH, true, &mut lock);
    assert_eq!(letters(&reports), ["M", "P1", "P2", "U"]);
    assert_eq!(lock.pulse_count(), 1);
    assert_eq!(reports[0].live, None);
    assert!(reports[1..].iter().all(|r| r.live == Some(0.9)));
    // Moving frames differ by tens of levels; the first has nothing to compare with.
    assert_eq!(reports[1].crop_diff, None);
    assert!(reports[2].crop_diff.unwrap() > 10.0, "{reports:?}");
    assert_eq!(out.live_latencies_ms.len(), 3);
}

#[test]
fn a_spoof_clears_the_hits_before_it() {
    let mut lock = LogActuator::new();
    let (_, reports) = run(
        &[ALICE, ALICE, ALICE_SPOOF, ALICE, ALICE, ALICE],
        NETWORK_ONLY,
        true,
        &mut lock,
    );
    assert_eq!(letters(&reports), ["P1", "P2", "S", "P1", "P2", "U"]);
}

#[test]
fn frozen_input_is_refused_and_locks_out() {
    let mut lock = LogActuator::new();
    let (out, reports) = run(&[STILL_A; 8], FROZEN_ONLY, true, &mut lock);
    assert_eq!(letters(&reports), ["P1", "F", "F", "F", "F", "L", "L", "L"]);
    assert_eq!(out.frozen, 4);
    assert_eq!(lock.pulse_count(), 0);
    assert_eq!(reports[1].crop_diff, Some(0.0));
    assert!(reports[1].to_string().contains("FROZEN alice"));
    // With the network on as well, the still is live to the network and frozen all the same.
    let (_, reports) = run(&[STILL_A; 3], BOTH, true, &mut lock);
    assert_eq!(letters(&reports), ["P1", "F", "F"]);
    assert_eq!(reports[1].live, Some(0.9));
}

#[test]
fn two_alternating_stills_are_frozen_and_moving_frames_are_not() {
    let mut lock = LogActuator::new();
    let (_, reports) = run(&[STILL_A, STILL_B, STILL_A], FROZEN_ONLY, true, &mut lock);
    assert_eq!(letters(&reports), ["P1", "P2", "F"]);
    let (out, _) = run(&[ALICE; 3], FROZEN_ONLY, true, &mut lock);
    assert_eq!(out.unlocks.len(), 1);
    // The control: the same stills unlock with the check off.
    let mut lock = LogActuator::new();
    let (out, _) = run(&[STILL_A; 3], LiveGate::OFF, true, &mut lock);
    assert_eq!(out.unlocks.len(), 1);
}

#[test]
fn liveness_errors_and_a_missing_model_never_open() {
    let mut lock = LogActuator::new();
    let (out, reports) = run(
        &[
            ALICE_LIVE_ERROR,
            ALICE,
            ALICE_LIVE_ERROR,
            ALICE,
            ALICE,
            ALICE,
        ],
        BOTH,
        true,
        &mut lock,
    );
    assert_eq!(letters(&reports), ["E", "P1", "E", "P1", "P2", "U"]);
    match &reports[0].decision {
        Decision::Error(e) => assert!(e.contains("liveness") && e.contains("injected"), "{e}"),
        d => panic!("{d:?}"),
    }
    assert_eq!(out.errors, 2);
    // An engine without the anti-spoofing model, asked for liveness: every recognised frame
    // is an error, nothing opens.
    let mut lock = LogActuator::new();
    let (out, reports) = run(&[ALICE; 6], NETWORK_ONLY, false, &mut lock);
    assert_eq!(out.errors, 6);
    assert!(out.unlocks.is_empty());
    assert_eq!(lock.pulse_count(), 0);
    assert!(reports.iter().all(|r| !r.opened));
}
