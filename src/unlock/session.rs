//! The unlock loop and enrolment as library functions: frame → largest face → align → embed
//! → best template → policy → actuator, and "keep N good frames of one person".
//!
//! Why it is shaped so: the CLI is a thin layer over these functions, so tests drive the very
//! same code with replayed clips, a mock pin, and — through the [`FaceEngine`] trait — a
//! detector or embedder that fails on purpose. Every frame yields one [`FrameReport`] (the
//! decision, the score and threshold, per-stage timings), handed to a callback so the CLI can
//! print it and tests can collect it. Failure rules, all in [`run_loop`]:
//! * any error in a stage (camera read, detector, embedder, matcher) becomes
//!   [`Observation::Error`] → [`Decision::Error`], which never unlocks; the loop goes on;
//! * the actuator is driven LOCKED at start, after an actuator error and at the end
//!   (including a stop by SIGTERM/SIGINT, see [`stop_flag`]);
//! * an actuator error that left the lock locked ([`Error::Actuator`]: driving OPEN failed,
//!   LOCKED was driven again) is logged, shown on the frame's report and counted
//!   ([`LoopOutcome::actuator_failures`]), and the loop goes on: the door is locked;
//! * an actuator error that left the lock's state unknown ([`Error::LockStateUnknown`]:
//!   driving LOCKED failed every retry) stops the loop after that frame's report, or before
//!   the first frame when it happens at the start ([`StopReason::LockStateUnknown`],
//!   [`LoopOutcome::lock_failure`]). The door may be stuck open, and the next matching face
//!   would only drive OPEN again; an operator (or the service manager, whose restart drives
//!   LOCKED before any frame) has to see it. The frame's policy state and audit event were
//!   written before acting, so they are kept; a fleet door's audit also gets the actuator
//!   error as an event of its own;
//! * the template store is loaded before the loop by the caller, failing closed on a missing
//!   or corrupt store; with [`run_loop_live`] it is a [`LiveStore`], reloaded before each
//!   match when the file changed (a revoked user cannot unlock from the next frame on, and a
//!   store that fails to reload makes the match an error);
//! * with a [`StateFile`] the policy's failure count and lockout are written after each
//!   decision that changed them and *before* the decision is acted upon or reported, so a
//!   `kill -9` or power cut right after a failure cannot lose it; a failed write turns the
//!   decision into an error;
//! * with an [`AuditTrail`] (a fleet door) each event (`audit_outbox`) is appended to the
//!   outbox before the decision is acted upon, and an unlock it cannot record becomes an
//!   error.
//!
//! Liveness ([`LiveGate`], from the board's `[liveness]` table): a face that matches a user
//! (score at or above the threshold) is then judged by the anti-spoofing network
//! ([`FaceEngine::live_score`]) and by the frozen-input check ([`FrozenCheck`]). Only a
//! frame that is recognised *and* live reaches the policy as a match; a recognised face
//! judged a spoof reaches it as [`Observation::Spoof`], a failed attempt. A liveness error is
//! an [`Observation::Error`] like any stage's: it never opens. Faces that match nobody are
//! not judged (they cannot unlock, and the network's time is saved).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::align::norm_crop;
use crate::camera::FrameSource;
use crate::detect::Face;
use crate::error::{Error, Result};
use crate::pipeline::{largest, Pipeline};
use crate::unlock::actuator::Actuator;
use crate::unlock::audit_outbox::AuditTrail;
use crate::unlock::frozen::FrozenCheck;
use crate::unlock::live_store::LiveStore;
use crate::unlock::policy::{Decision, Observation, Policy, SpoofKind};
use crate::unlock::policy_state::StateFile;
use crate::unlock::rule::Rule;
use crate::unlock::store::TemplateStore;
use crate::unlock::{act, observe};

/// The model stages the loop needs. [`Pipeline`] implements it (without liveness), the
/// board's models (`unlock::app::Models`) with it; tests implement it to inject failures.
pub trait FaceEngine {
    /// Faces in the frame, best first.
    fn detect(&self, img: &RgbImage) -> Result<Vec<Face>>;
    /// Aligns the face with keypoints `kps` and returns its L2-normalised embedding.
    fn embed(&self, img: &RgbImage, kps: &[[f32; 2]; 5]) -> Result<Vec<f32>>;
    /// [`FaceEngine::embed`] and the aligned [`FROZEN_CROP`]-pixel crop of the face, which
    /// the frozen-input check compares. A recogniser of that input size hands over the crop
    /// it embedded rather than aligning the face a second time.
    fn embed_with_crop(&self, img: &RgbImage, kps: &[[f32; 2]; 5]) -> Result<(Vec<f32>, RgbImage)> {
        Ok((self.embed(img, kps)?, norm_crop(img, kps, FROZEN_CROP)))
    }
    /// The anti-spoofing network's live probability (0..=1) for `face`. An engine without
    /// the network returns an error, so a loop that asks for liveness fails closed.
    fn live_score(&self, _img: &RgbImage, _face: &Face) -> Result<f32> {
        Err(Error::Msg(
            "liveness: no anti-spoofing model is loaded".into(),
        ))
    }
}

impl FaceEngine for Pipeline {
    fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        self.detector.detect(img)
    }
    fn embed(&self, img: &RgbImage, kps: &[[f32; 2]; 5]) -> Result<Vec<f32>> {
        self.embedder.embed(img, kps)
    }
    fn embed_with_crop(&self, img: &RgbImage, kps: &[[f32; 2]; 5]) -> Result<(Vec<f32>, RgbImage)> {
        self.embedder.embed_with_crop(img, kps, FROZEN_CROP)
    }
}

/// Side of the aligned face crops the frozen-input check compares (its noise floor was
/// measured on these).
pub const FROZEN_CROP: u32 = 112;

/// Milliseconds spent in each stage of one frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StageTimings {
    /// Waiting for and decoding the frame (`next_frame`).
    pub capture_ms: f64,
    pub detect_ms: f64,
    /// Alignment and the recogniser.
    pub embed_ms: f64,
    /// Cosine against every template.
    pub match_ms: f64,
    /// The anti-spoofing network and the frozen-input check (0 when they did not run: no
    /// recognised face, or liveness off).
    pub live_ms: f64,
}

impl StageTimings {
    pub fn total_ms(&self) -> f64 {
        self.capture_ms + self.detect_ms + self.embed_ms + self.match_ms + self.live_ms
    }

    /// Frame → decision: every stage after the frame was decoded.
    pub fn decision_ms(&self) -> f64 {
        self.detect_ms + self.embed_ms + self.match_ms + self.live_ms
    }
}

/// What happened on one frame.
#[derive(Debug, Clone)]
pub struct FrameReport {
    /// The frame's sequence number (`None` when reading the frame failed).
    pub seq: Option<u64>,
    pub decision: Decision,
    /// Best-matching user and cosine score of this frame's face, if a face was matched.
    pub best: Option<(String, f32)>,
    pub threshold: f32,
    /// The anti-spoofing network's live probability, when it ran on this frame.
    pub live: Option<f32>,
    /// Smallest mean absolute difference of the face crop to the last counted frames', when
    /// the frozen check ran and had something to compare with.
    pub crop_diff: Option<f32>,
    pub timings: StageTimings,
    /// Whether the lock was pulsed open (and locked again) on this frame; false when the
    /// actuator failed.
    pub opened: bool,
    /// The actuator's error on this frame (`actuator: ...`), when acting on an unlock failed.
    pub actuator_error: Option<String>,
}

impl std::fmt::Display for FrameReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(f, "frame {s:>5}")?,
            None => write!(f, "frame     -")?,
        }
        let d = match &self.decision {
            Decision::Unlock { user, score } => format!("UNLOCK {user} ({score:.3})"),
            Decision::Pending { user, hits, needed } => {
                format!("pending {user} {hits}/{needed}")
            }
            Decision::Spoof {
                user, score, kind, ..
            } => format!("{} {user} ({score:.3})", kind.to_string().to_uppercase()),
            Decision::NoFace => "no face".into(),
            Decision::NoMatch { .. } => "no match".into(),
            Decision::LockedOut { remaining } => {
                format!("locked out ({:.1} s left)", remaining.as_secs_f64())
            }
            Decision::Cooldown { remaining } => {
                format!("cooldown ({:.1} s left)", remaining.as_secs_f64())
            }
            Decision::Error(e) => format!("error: {e}"),
        };
        write!(f, " | {d:<28}")?;
        match &self.best {
            Some((u, s)) => write!(f, " | best {u} {s:.3}")?,
            None => write!(f, " | best -")?,
        }
        if let Some(l) = self.live {
            write!(f, " | live {l:.3}")?;
        }
        if let Some(d) = self.crop_diff {
            write!(f, " | crop diff {d:.2}")?;
        }
        let t = &self.timings;
        write!(
            f,
            " | thr {:.3} | capture {:.1} ms, detect {:.1} ms, align+embed {:.1} ms, match {:.2} ms, liveness {:.1} ms{}",
            self.threshold,
            t.capture_ms,
            t.detect_ms,
            t.embed_ms,
            t.match_ms,
            t.live_ms,
            if self.opened { " | LOCK OPENED" } else { "" }
        )?;
        if let Some(e) = &self.actuator_error {
            write!(f, " | ACTUATOR FAILED: {e}")?;
        }
        Ok(())
    }
}

/// Which clock the policy sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyTime {
    /// The wall clock (live cameras, paced replays).
    Wall,
    /// Frame `seq` happens at `seq / fps` seconds after the start: a replay processed frame
    /// by frame behaves as if a camera delivered it at `fps`, whatever the machine's speed
    /// (deterministic demos and tests).
    FrameRate(f64),
}

/// The liveness stage's settings (the board's `[liveness]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveGate {
    /// Live probability at or above which a recognised face is live; `None` runs without
    /// the anti-spoofing network (photos and screens can then open the lock).
    pub threshold: Option<f32>,
    /// Noise floor of the frozen-input check (see `unlock::frozen`); 0 turns it off.
    pub frozen_floor: f32,
}

impl LiveGate {
    /// No liveness at all: neither the network nor the frozen check.
    pub const OFF: LiveGate = LiveGate {
        threshold: None,
        frozen_floor: 0.0,
    };

    /// The gate a board's `[liveness]` table asks for.
    pub fn from_board(l: &crate::board::LivenessConfig) -> LiveGate {
        LiveGate {
            threshold: l.network().map(|(_, t)| t),
            frozen_floor: l.frozen_floor,
        }
    }
}

/// Settings of [`run_loop`].
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// How long the lock stays open on an unlock.
    pub open_time: Duration,
    /// Stop at the first unlock.
    pub once: bool,
    /// Stop after this many frames (`None`: until the source ends or a stop is requested).
    pub max_frames: Option<u64>,
    pub time: PolicyTime,
    /// Pause after a failed frame read, so a source that fails without blocking does not
    /// spin (a reconnecting camera already waits out its backoff).
    pub error_pause: Duration,
    /// Shortest time between two frames handed to the policy. The policy counts attempts in
    /// frames (`n` face frames each, a lockout after `max_failures` failed attempts), so
    /// without a cap a 30 fps camera would burn through the attempts of someone still walking
    /// up to the door in under a second. With [`PolicyTime::Wall`] the loop waits out the
    /// rest of the interval before asking the source for its newest frame; with
    /// [`PolicyTime::FrameRate`] frames due earlier are read and skipped. See
    /// [`LoopConfig::interval_for`].
    pub min_interval: Duration,
    /// The liveness stage. The default is [`LiveGate::OFF`] (for scripted engines); the
    /// CLI and the demo take it from the board's `[liveness]` table, which every board must
    /// have.
    pub liveness: LiveGate,
    /// How a person's templates score a face (the board's `[match].rule`; default
    /// [`Rule::Best`], the store's rule before boards could choose).
    pub rule: Rule,
}

impl LoopConfig {
    /// The interval that makes one attempt of `n` frames last about one second, as the
    /// policy's documentation asks (`1 s / n`: 200 ms for the boards' `n = 5`).
    pub fn interval_for(policy: &crate::unlock::policy::PolicyConfig) -> Duration {
        Duration::from_secs(1) / policy.n.max(1) as u32
    }
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            open_time: Duration::from_secs(3),
            once: false,
            max_frames: None,
            time: PolicyTime::Wall,
            error_pause: Duration::from_millis(20),
            min_interval: Duration::ZERO,
            liveness: LiveGate::OFF,
            rule: Rule::Best,
        }
    }
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `once` was set and the lock opened.
    Unlocked,
    /// The source ended (a replay without loop).
    SourceEnded,
    /// The stop flag was raised (SIGTERM/SIGINT).
    Signal,
    /// `max_frames` reached.
    FrameLimit,
    /// The lock could not be driven LOCKED (after a pulse, or at the loop's start): its state
    /// is unknown, so the loop stopped opening (see [`LoopOutcome::lock_failure`]).
    LockStateUnknown,
}

/// Why the loop stopped with [`StopReason::LockStateUnknown`].
#[derive(Debug, Clone, PartialEq)]
pub struct LockFailure {
    /// The frame whose unlock the actuator failed on; `None` when driving LOCKED failed at
    /// the loop's start, before any frame.
    pub seq: Option<u64>,
    /// The message of the [`Error::LockStateUnknown`] (without the `actuator: ` prefix).
    pub error: String,
    /// The loop's last [`Actuator::ensure_locked`] before it returned (it may work again):
    /// `Ok` if LOCKED was driven then, else that error's text.
    pub last_try: std::result::Result<(), String>,
}

/// One unlock that happened.
#[derive(Debug, Clone, PartialEq)]
pub struct UnlockEvent {
    pub seq: u64,
    pub user: String,
    pub score: f32,
}

/// Summary of a [`run_loop`].
#[derive(Debug, Clone)]
pub struct LoopOutcome {
    pub stop: StopReason,
    /// Frames handled (reports emitted), read errors included.
    pub frames: u64,
    /// Frames read but skipped by `min_interval` ([`PolicyTime::FrameRate`] only).
    pub skipped: u64,
    pub unlocks: Vec<UnlockEvent>,
    /// Frames whose decision was [`Decision::Error`].
    pub errors: u64,
    /// Unlocks the actuator failed to carry out (either kind of actuator error).
    pub actuator_failures: u64,
    /// Set when the loop stopped because the lock's state is unknown.
    pub lock_failure: Option<LockFailure>,
    /// Recognised faces refused by the anti-spoofing network ([`SpoofKind::Spoof`]).
    pub spoofs: u64,
    /// Recognised faces refused as frozen input ([`SpoofKind::Frozen`]).
    pub frozen: u64,
    /// Frames with a face.
    pub face_frames: u64,
    /// Mean timings over frames that had a face (all four stages ran).
    pub mean_face_timings: StageTimings,
    /// Highest score seen, with its user.
    pub best_score: Option<(String, f32)>,
    /// Frame → decision latency (detect + align/embed + match + liveness, the frame already
    /// decoded) of every frame with a face, in milliseconds, in arrival order.
    pub face_latencies_ms: Vec<f64>,
    /// Time of the liveness stage (network + frozen check) on every frame where it ran, in
    /// milliseconds, in arrival order.
    pub live_latencies_ms: Vec<f64>,
}

/// The `q`-quantile (0..=1, nearest rank) of `v`.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let mut v = v.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

impl LoopOutcome {
    /// The `q`-quantile (0..=1, nearest rank) of the frame → decision latency.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.face_latencies_ms, q)
    }

    /// The `q`-quantile (0..=1, nearest rank) of the liveness stage's time.
    pub fn live_quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.live_latencies_ms, q)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs frames through the stages until the source ends, `stop` is raised, `max_frames` is
/// reached or (with `once`) the lock opens. See the module doc for the failure rules. The
/// store is fixed and no policy state is kept: see [`run_loop_live`] for the daemon's loop.
#[allow(clippy::too_many_arguments)]
pub fn run_loop(
    source: &mut dyn FrameSource,
    engine: &dyn FaceEngine,
    store: &TemplateStore,
    policy: &mut Policy,
    actuator: &mut dyn Actuator,
    cfg: &LoopConfig,
    stop: &AtomicBool,
    on_frame: &mut dyn FnMut(&FrameReport),
) -> LoopOutcome {
    let mut live = LiveStore::fixed(store.clone());
    run_loop_live(
        source, engine, &mut live, None, None, policy, actuator, cfg, stop, on_frame,
    )
}

/// [`run_loop`] with a store that is reloaded when its file changes and, if `state` is given,
/// the policy's failures and lockout kept on disk (see the module doc).
#[allow(clippy::too_many_arguments)]
pub fn run_loop_live(
    source: &mut dyn FrameSource,
    engine: &dyn FaceEngine,
    store: &mut LiveStore,
    mut state: Option<&mut StateFile>,
    mut audit: Option<&mut AuditTrail>,
    policy: &mut Policy,
    actuator: &mut dyn Actuator,
    cfg: &LoopConfig,
    stop: &AtomicBool,
    on_frame: &mut dyn FnMut(&FrameReport),
) -> LoopOutcome {
    let threshold = policy.config().threshold;
    // The frame (`None`: the start) and message of an actuator error that left the lock's
    // state unknown; the loop stops once it is set.
    let mut unknown: Option<(Option<u64>, String)> = None;
    // A lock that cannot be driven LOCKED before the first frame is as unknown as one that
    // failed after a pulse: no frame is looked at then.
    if let Err(e) = actuator.ensure_locked() {
        log::error!("actuator: cannot drive LOCKED at start: {e}; the loop stops");
        unknown = Some((None, lock_message(e)));
    }
    log::info!(
        "unlock loop: source {}, actuator {}, {} user(s), threshold {threshold:.3}, liveness {}",
        source.name(),
        actuator.describe(),
        store.current().map_or(0, |s| s.user_count()),
        match cfg.liveness.threshold {
            Some(t) => format!("threshold {t:.3}"),
            None => "network OFF".into(),
        }
    );
    let mut frozen = FrozenCheck::new(cfg.liveness.frozen_floor, policy.config().n);
    let t0 = Instant::now();
    let mut out = LoopOutcome {
        stop: StopReason::SourceEnded,
        frames: 0,
        skipped: 0,
        unlocks: Vec::new(),
        errors: 0,
        actuator_failures: 0,
        lock_failure: None,
        spoofs: 0,
        frozen: 0,
        face_frames: 0,
        mean_face_timings: StageTimings::default(),
        face_latencies_ms: Vec::new(),
        live_latencies_ms: Vec::new(),
        best_score: None,
    };
    let mut sum = StageTimings::default();
    let mut last_seq = 0u64;
    // Policy time of the last frame handed to the policy.
    let mut last_handled: Option<Instant> = None;
    let frame_time = |seq: u64| match cfg.time {
        PolicyTime::Wall => Instant::now(),
        PolicyTime::FrameRate(fps) => t0 + Duration::from_secs_f64(seq as f64 / fps),
    };
    loop {
        // First, and so after the report of the frame that failed, which is accounted for
        // like any other.
        if unknown.is_some() {
            out.stop = StopReason::LockStateUnknown;
            break;
        }
        if stop.load(Ordering::SeqCst) {
            out.stop = StopReason::Signal;
            break;
        }
        if cfg.max_frames.is_some_and(|m| out.frames >= m) {
            out.stop = StopReason::FrameLimit;
            break;
        }
        if let (PolicyTime::Wall, Some(last)) = (cfg.time, last_handled) {
            let due = last + cfg.min_interval;
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
            }
        }
        let mut t = StageTimings::default();
        let start = Instant::now();
        let frame = source.next_frame();
        t.capture_ms = ms(start.elapsed());
        let mut judged = Judged::default();
        let (seq, obs, best) = match frame {
            Ok(None) => {
                out.stop = StopReason::SourceEnded;
                break;
            }
            Ok(Some(frame))
                if matches!(cfg.time, PolicyTime::FrameRate(_))
                    && last_handled
                        .is_some_and(|l| frame_time(frame.seq) < l + cfg.min_interval) =>
            {
                out.skipped += 1;
                continue;
            }
            Err(e) => {
                // The lock stays locked while the camera is gone; the policy sees an error.
                (None, Observation::Error(format!("camera: {e}")), None)
            }
            Ok(Some(frame)) => {
                last_seq = frame.seq;
                let (obs, best) = process_frame(
                    engine,
                    store,
                    &frame.rgb,
                    threshold,
                    cfg.rule,
                    &cfg.liveness,
                    &mut frozen,
                    &mut judged,
                    &mut t,
                );
                (Some(frame.seq), obs, best)
            }
        };
        let now = frame_time(seq.unwrap_or(last_seq));
        last_handled = Some(now);
        let mut decision = policy.observe(&obs, now);
        // Recorded before the decision is acted upon or reported (see the module doc).
        if let Some(st) = state.as_deref_mut() {
            if let Err(e) = st.record(policy, now) {
                log::error!("{e}");
                decision = Decision::Error(format!("cannot record the policy state: {e}"));
            }
        }
        // Also before acting: an unlock the audit cannot keep does not happen.
        if let Some(a) = audit.as_deref_mut() {
            if let Err(e) = a.record(&decision, judged.live) {
                log::error!("{e}");
                if decision.is_unlock() {
                    decision = Decision::Error(format!("cannot record the unlock: {e}"));
                }
            }
        }
        let (opened, actuator_error) = match act(actuator, &decision, cfg.open_time) {
            Ok(o) => (o, None),
            Err(e) => {
                out.actuator_failures += 1;
                if let Error::LockStateUnknown(m) = &e {
                    log::error!("{e}; the loop stops opening");
                    unknown = Some((Some(seq.unwrap_or(last_seq)), m.clone()));
                } else {
                    log::error!("{e}; the lock is treated as locked");
                }
                // The audit already holds this frame's unlock (recorded before acting); a
                // fleet's centre should also learn that it was not carried out. A failed
                // append opens nothing, so it is only logged.
                if let Some(a) = audit.as_deref_mut() {
                    if let Err(ae) = a.record(&Decision::Error(e.to_string()), judged.live) {
                        log::error!("{ae}");
                    }
                }
                (false, Some(e.to_string()))
            }
        };
        if matches!(obs, Observation::Face { .. } | Observation::Spoof { .. }) {
            out.face_frames += 1;
            sum.capture_ms += t.capture_ms;
            sum.detect_ms += t.detect_ms;
            sum.embed_ms += t.embed_ms;
            sum.match_ms += t.match_ms;
            sum.live_ms += t.live_ms;
            out.face_latencies_ms.push(t.decision_ms());
        }
        if judged.ran {
            out.live_latencies_ms.push(t.live_ms);
        }
        match &decision {
            Decision::Spoof {
                kind: SpoofKind::Spoof,
                ..
            } => out.spoofs += 1,
            Decision::Spoof {
                kind: SpoofKind::Frozen,
                ..
            } => out.frozen += 1,
            _ => {}
        }
        if let Some((u, s)) = &best {
            if out.best_score.as_ref().is_none_or(|(_, b)| s > b) {
                out.best_score = Some((u.clone(), *s));
            }
        }
        if matches!(decision, Decision::Error(_)) {
            out.errors += 1;
        }
        let report = FrameReport {
            seq,
            decision,
            best,
            threshold,
            live: judged.live,
            crop_diff: judged.crop_diff,
            timings: t,
            opened,
            actuator_error,
        };
        if matches!(report.decision, Decision::Error(_) | Decision::Spoof { .. }) {
            log::warn!("{report}");
        } else {
            log::info!("{report}");
        }
        on_frame(&report);
        out.frames += 1;
        if let (true, Decision::Unlock { user, score }) = (opened, &report.decision) {
            out.unlocks.push(UnlockEvent {
                seq: seq.unwrap_or(last_seq),
                user: user.clone(),
                score: *score,
            });
            if cfg.once {
                out.stop = StopReason::Unlocked;
                break;
            }
        }
        if seq.is_none() && !cfg.error_pause.is_zero() {
            std::thread::sleep(cfg.error_pause);
        }
    }
    // One more try in every case: after a lock failure it may work now, and the caller
    // reports whether it did.
    let last_try = actuator.ensure_locked();
    if let Err(e) = &last_try {
        log::error!("actuator: cannot drive LOCKED at stop: {e}");
    }
    if let Some((seq, error)) = unknown {
        out.lock_failure = Some(LockFailure {
            seq,
            error,
            last_try: last_try.map_err(|e| e.to_string()),
        });
    }
    if out.face_frames > 0 {
        let n = out.face_frames as f64;
        out.mean_face_timings = StageTimings {
            capture_ms: sum.capture_ms / n,
            detect_ms: sum.detect_ms / n,
            embed_ms: sum.embed_ms / n,
            match_ms: sum.match_ms / n,
            live_ms: sum.live_ms / n,
        };
    }
    out
}

/// The message of an error that left the lock's state unknown, without the `actuator: `
/// prefix of [`Error::LockStateUnknown`] (any other error of `ensure_locked` is kept whole).
fn lock_message(e: Error) -> String {
    match e {
        Error::LockStateUnknown(m) => m,
        other => other.to_string(),
    }
}

/// What the liveness stage found on one frame.
#[derive(Debug, Clone, Copy, Default)]
struct Judged {
    /// The stage ran (the face was recognised and liveness is on).
    ran: bool,
    live: Option<f32>,
    crop_diff: Option<f32>,
}

/// Detect → largest face → align + embed → best match → liveness of a recognised face,
/// timing each stage.
#[allow(clippy::too_many_arguments)]
fn process_frame(
    engine: &dyn FaceEngine,
    store: &mut LiveStore,
    rgb: &RgbImage,
    match_threshold: f32,
    rule: Rule,
    gate: &LiveGate,
    frozen: &mut FrozenCheck,
    judged: &mut Judged,
    t: &mut StageTimings,
) -> (Observation, Option<(String, f32)>) {
    let start = Instant::now();
    let faces = engine.detect(rgb);
    t.detect_ms = ms(start.elapsed());
    let faces = match faces {
        Ok(f) => f,
        Err(e) => return (Observation::Error(format!("detector: {e}")), None),
    };
    let Some(face) = largest(&faces) else {
        return (Observation::NoFace, None);
    };
    let Some(kps) = face.kps else {
        return (
            Observation::Error("detector: the model gives no keypoints to align with".into()),
            None,
        );
    };
    let start = Instant::now();
    let emb = engine.embed_with_crop(rgb, &kps);
    t.embed_ms = ms(start.elapsed());
    let (emb, aligned) = match emb {
        Ok(e) => e,
        Err(e) => return (Observation::Error(format!("embedder: {e}")), None),
    };
    let start = Instant::now();
    // The store as of this very frame: a change since the last frame is reloaded first.
    let obs = match store.current() {
        Ok(store) => observe(store, rule, Some(Ok(&emb))),
        Err(e) => Observation::Error(format!("store: {e}")),
    };
    t.match_ms = ms(start.elapsed());
    let best = match &obs {
        Observation::Face { best } => best.clone(),
        _ => None,
    };
    // Only a recognised face is judged (see the module doc). A NaN score is not recognised
    // here; the policy reports it as malformed.
    let recognised = match &best {
        Some((user, score)) if *score >= match_threshold => Some((user.clone(), *score)),
        _ => None,
    };
    let Some((user, score)) = recognised else {
        return (obs, best);
    };
    if gate.threshold.is_none() && gate.frozen_floor <= 0.0 {
        return (obs, best);
    }
    judged.ran = true;
    let start = Instant::now();
    let verdict = judge_liveness(engine, rgb, face, aligned, gate, frozen, judged);
    t.live_ms = ms(start.elapsed());
    let obs = match verdict {
        Err(e) => Observation::Error(format!("liveness: {e}")),
        Ok(None) => obs,
        Ok(Some(kind)) => Observation::Spoof {
            user,
            score,
            live: judged.live,
            kind,
        },
    };
    (obs, best)
}

/// The anti-spoofing network (if on), then the frozen check on the aligned crop of a face the
/// network found live. `Ok(None)`: live; `Ok(Some(kind))`: a spoof of that kind.
fn judge_liveness(
    engine: &dyn FaceEngine,
    rgb: &RgbImage,
    face: &Face,
    aligned: RgbImage,
    gate: &LiveGate,
    frozen: &mut FrozenCheck,
    judged: &mut Judged,
) -> Result<Option<SpoofKind>> {
    if let Some(th) = gate.threshold {
        let live = engine.live_score(rgb, face)?;
        if !live.is_finite() || !(0.0..=1.0).contains(&live) {
            return Err(Error::Msg(format!(
                "the anti-spoofing model gave live probability {live}"
            )));
        }
        judged.live = Some(live);
        if live < th {
            return Ok(Some(SpoofKind::Spoof));
        }
    }
    if gate.frozen_floor > 0.0 {
        let v = frozen.check(aligned);
        judged.crop_diff = v.min_diff;
        if v.frozen {
            return Ok(Some(SpoofKind::Frozen));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Stop flag (SIGTERM / SIGINT)

/// Claims SIGTERM and SIGINT (see [`crate::signals`]): from now on they raise the returned
/// flag instead of ending the process. The loop checks it before each frame, then drives the
/// lock LOCKED and returns.
pub fn stop_flag() -> Result<&'static AtomicBool> {
    crate::signals::claim()
}

// ---------------------------------------------------------------------------------------------
// Enrolment

/// Quality gates of an enrolment frame.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityGates {
    /// Smallest face box width in pixels (the board's `enroll.min_face_px`).
    pub min_face_px: u32,
    /// Smallest variance of the 4-neighbour Laplacian of the 112×112 aligned grey crop.
    pub min_sharpness: f32,
    /// The nose tip's horizontal position between the eyes, as a fraction of the eye
    /// distance (0 = over the left eye, 1 = over the right eye), must lie in this range.
    /// Frontal faces sit near 0.5; the example photos range 0.26–0.77, the 0.77 one visibly
    /// turned.
    pub nose_range: (f32, f32),
    /// Largest tilt of the eye line from horizontal, in degrees.
    pub max_roll_deg: f32,
}

/// Variance of the Laplacian below which an aligned crop is called blurred. Measured on the
/// 112×112 aligned crops of the 19 single-face photos of `data/faces/examples` (det_500m at
/// 640×640): the photos score 180–4,800; the same crops after a Gaussian blur of σ = 1 px
/// score 40–123, after σ = 2 px 7–18. So 40 refuses anything softer than about σ = 1 px on
/// the crop while keeping the softest real photo by a factor of 4.5. Measured on the
/// aligned crop, it does not depend on the camera resolution.
pub const DEFAULT_MIN_SHARPNESS: f32 = 40.0;

impl Default for QualityGates {
    fn default() -> Self {
        QualityGates {
            min_face_px: 80,
            min_sharpness: DEFAULT_MIN_SHARPNESS,
            // ±~25° of yaw keeps the nose within the middle half between the eyes.
            nose_range: (0.25, 0.75),
            max_roll_deg: 20.0,
        }
    }
}

/// Why a frame was not used for enrolment.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    NoFace,
    /// More than one face: the enrolled person must be alone in the picture.
    SeveralFaces(usize),
    TooSmall {
        width: f32,
        min: u32,
    },
    NoKeypoints,
    Blurred {
        sharpness: f32,
        min: f32,
    },
    NotFrontal(String),
    /// A stage failed on this frame.
    Error(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NoFace => write!(f, "no face"),
            Rejection::SeveralFaces(n) => write!(f, "{n} faces (exactly one is needed)"),
            Rejection::TooSmall { width, min } => {
                write!(f, "face {width:.0} px wide, less than {min} px")
            }
            Rejection::NoKeypoints => write!(f, "the detector gave no keypoints"),
            Rejection::Blurred { sharpness, min } => {
                write!(f, "blurred (sharpness {sharpness:.1} < {min:.1})")
            }
            Rejection::NotFrontal(why) => write!(f, "not frontal: {why}"),
            Rejection::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Variance of the 4-neighbour Laplacian of the grey image (BT.601 luma) over the interior
/// pixels: high for sharp edges, low for blur.
pub fn laplacian_variance(img: &RgbImage) -> f32 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let grey: Vec<f32> = img
        .pixels()
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect();
    let (mut s, mut s2, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let i = y * w + x;
            let l = grey[i - 1] + grey[i + 1] + grey[i - w] + grey[i + w] - 4.0 * grey[i];
            s += l as f64;
            s2 += (l as f64) * (l as f64);
            n += 1.0;
        }
    }
    let mean = s / n;
    (s2 / n - mean * mean).max(0.0) as f32
}

/// Checks that the keypoints look like a roughly frontal, upright face: eyes left to right,
/// the nose tip between them (see [`QualityGates::nose_range`]), the eye line within
/// `max_roll_deg` of horizontal.
pub fn frontal_check(kps: &[[f32; 2]; 5], gates: &QualityGates) -> std::result::Result<(), String> {
    let (le, re, nose) = (kps[0], kps[1], kps[2]);
    let dx = re[0] - le[0];
    let dy = re[1] - le[1];
    if dx <= 1.0 {
        return Err(format!("eyes not left-to-right (dx = {dx:.1} px)"));
    }
    let roll = dy.atan2(dx).to_degrees();
    if roll.abs() > gates.max_roll_deg {
        return Err(format!(
            "head tilted {roll:.0}° (at most {:.0}°)",
            gates.max_roll_deg
        ));
    }
    let t = (nose[0] - le[0]) / dx;
    if t < gates.nose_range.0 || t > gates.nose_range.1 {
        return Err(format!(
            "head turned (nose at {t:.2} of the eye distance, {:.2}..{:.2} wanted)",
            gates.nose_range.0, gates.nose_range.1
        ));
    }
    Ok(())
}

/// A frame that passed the gates.
#[derive(Debug, Clone)]
pub struct AcceptedFrame {
    pub seq: u64,
    pub face_width: f32,
    pub sharpness: f32,
    pub embedding: Vec<f32>,
}

/// Checks one frame against the gates and embeds it if it passes.
pub fn assess_frame(
    engine: &dyn FaceEngine,
    rgb: &RgbImage,
    gates: &QualityGates,
    seq: u64,
) -> std::result::Result<AcceptedFrame, Rejection> {
    let faces = engine
        .detect(rgb)
        .map_err(|e| Rejection::Error(format!("detector: {e}")))?;
    let face = match faces.len() {
        0 => return Err(Rejection::NoFace),
        1 => &faces[0],
        n => return Err(Rejection::SeveralFaces(n)),
    };
    if face.width() < gates.min_face_px as f32 {
        return Err(Rejection::TooSmall {
            width: face.width(),
            min: gates.min_face_px,
        });
    }
    let kps = face.kps.ok_or(Rejection::NoKeypoints)?;
    frontal_check(&kps, gates).map_err(Rejection::NotFrontal)?;
    let crop = norm_crop(rgb, &kps, 112);
    let sharpness = laplacian_variance(&crop);
    if sharpness < gates.min_sharpness {
        return Err(Rejection::Blurred {
            sharpness,
            min: gates.min_sharpness,
        });
    }
    let embedding = engine
        .embed(rgb, &kps)
        .map_err(|e| Rejection::Error(format!("embedder: {e}")))?;
    Ok(AcceptedFrame {
        seq,
        face_width: face.width(),
        sharpness,
        embedding,
    })
}

/// The verdict on one enrolment frame.
pub type FrameVerdict = std::result::Result<AcceptedFrame, Rejection>;

/// Result of [`collect_enrolment`].
#[derive(Debug, Clone, Default)]
pub struct EnrolmentCapture {
    pub accepted: Vec<AcceptedFrame>,
    pub rejected: Vec<(Option<u64>, Rejection)>,
    /// Frames looked at.
    pub scanned: u64,
    /// True when the source ended before `wanted` frames passed.
    pub source_ended: bool,
}

/// Reads frames until `wanted` pass the gates, the source ends, `max_scan` frames were seen or
/// `stop` is raised. Read errors are recorded as rejections (a reconnecting camera keeps
/// going).
pub fn collect_enrolment(
    source: &mut dyn FrameSource,
    engine: &dyn FaceEngine,
    gates: &QualityGates,
    wanted: usize,
    max_scan: Option<u64>,
    stop: &AtomicBool,
    on_frame: &mut dyn FnMut(Option<u64>, &FrameVerdict),
) -> EnrolmentCapture {
    let mut cap = EnrolmentCapture::default();
    while cap.accepted.len() < wanted
        && !stop.load(Ordering::SeqCst)
        && max_scan.is_none_or(|m| cap.scanned < m)
    {
        let r = match source.next_frame() {
            Ok(None) => {
                cap.source_ended = true;
                break;
            }
            Err(e) => {
                cap.scanned += 1;
                let r = Err(Rejection::Error(format!("camera: {e}")));
                on_frame(None, &r);
                if let Err(rej) = r {
                    cap.rejected.push((None, rej));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Ok(Some(f)) => (f.seq, assess_frame(engine, &f.rgb, gates, f.seq)),
        };
        cap.scanned += 1;
        on_frame(Some(r.0), &r.1);
        match r.1 {
            Ok(a) => cap.accepted.push(a),
            Err(rej) => cap.rejected.push((Some(r.0), rej)),
        }
    }
    cap
}

/// Adds the captured templates of `user` to `store` (replacing none: templates accumulate;
/// use [`TemplateStore::remove_user`] first to start over). Errors if nothing passed.
pub fn enrol_into(store: &mut TemplateStore, user: &str, cap: &EnrolmentCapture) -> Result<usize> {
    if cap.accepted.is_empty() {
        let mut why: Vec<String> = cap
            .rejected
            .iter()
            .take(5)
            .map(|(s, r)| match s {
                Some(s) => format!("frame {s}: {r}"),
                None => format!("read: {r}"),
            })
            .collect();
        if cap.rejected.len() > 5 {
            why.push(format!("… {} more", cap.rejected.len() - 5));
        }
        return Err(Error::Msg(format!(
            "enrolment of {user:?}: no frame passed the quality gates ({} looked at{}{})",
            cap.scanned,
            if why.is_empty() { "" } else { ": " },
            why.join("; ")
        )));
    }
    let templates: Vec<Vec<f32>> = cap.accepted.iter().map(|a| a.embedding.clone()).collect();
    let n = templates.len();
    store.add_templates(user, templates)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(blur: bool) -> RgbImage {
        let img = RgbImage::from_fn(112, 112, |x, y| {
            let v = if ((x / 8) + (y / 8)) % 2 == 0 {
                220
            } else {
                30
            };
            image::Rgb([v, v, v])
        });
        if blur {
            image::imageops::blur(&img, 4.0)
        } else {
            img
        }
    }

    #[test]
    fn laplacian_variance_separates_sharp_from_blurred() {
        let sharp = laplacian_variance(&checker(false));
        let blurred = laplacian_variance(&checker(true));
        assert!(sharp > 10.0 * DEFAULT_MIN_SHARPNESS, "{sharp}");
        assert!(blurred < DEFAULT_MIN_SHARPNESS, "{blurred}");
        let flat = RgbImage::from_pixel(50, 50, image::Rgb([90, 90, 90]));
        assert_eq!(laplacian_variance(&flat), 0.0);
        assert_eq!(laplacian_variance(&RgbImage::new(2, 2)), 0.0);
    }

    #[test]
    fn frontal_check_rules() {
        let g = QualityGates::default();
        let frontal = [
            [40.0, 50.0],
            [70.0, 50.0],
            [55.0, 65.0],
            [42.0, 80.0],
            [68.0, 80.0],
        ];
        assert!(frontal_check(&frontal, &g).is_ok());
        let mut turned = frontal;
        turned[2] = [43.0, 65.0];
        assert!(frontal_check(&turned, &g).unwrap_err().contains("turned"));
        let mut tilted = frontal;
        tilted[1] = [70.0, 70.0];
        assert!(frontal_check(&tilted, &g).unwrap_err().contains("tilted"));
        let mut mirrored = frontal;
        mirrored.swap(0, 1);
        assert!(frontal_check(&mirrored, &g).is_err());
    }
}
