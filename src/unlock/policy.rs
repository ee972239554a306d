//! The unlock decision state machine: turns one [`Observation`] per camera frame into one
//! [`Decision`].
//!
//! Why it is shaped so: a single frame is never trusted (one lucky frame of a photo, one
//! flicker of the matcher), so an unlock needs **K of the last N frames matching the same
//! user within T seconds**; guessing is bounded by counting failed attempts and locking out
//! with a doubling back-off; and the whole thing is **pure and clock-injected** — every call
//! takes `now: Instant`, nothing sleeps or reads the clock — so each rule below is tested
//! frame by frame with hand-written timestamps.
//!
//! # Rules (all precise, all tested)
//! * **Match.** A frame matches when a face was seen and its best template score is
//!   `>= threshold`. Only matching frames can produce [`Decision::Unlock`].
//! * **Window.** The window holds the frames seen since the current attempt started, at most
//!   the last `n` of them (no-face frames included: a detector that flickers does not break a
//!   presentation). A matching frame for user U unlocks when the window holds at least `k`
//!   frames matching U whose timestamps are within `window` of `now` (the current frame
//!   included). Otherwise it yields [`Decision::Pending`].
//! * **Attempt.** An attempt starts at the first face frame after a reset. It ends
//!   (a) when it has seen `n` face frames without an unlock, or (b) when the presentation
//!   lapses: no face for longer than `window` (noticed at the next frame). An ended attempt
//!   counts as **one failed attempt** if it saw at least `k` face frames — i.e. it had enough
//!   frames to unlock and did not; a shorter glimpse (a passer-by) is not a failure.
//!   No-face frames never count as failures. Rule (b) with the `k` threshold closes the hole
//!   of "show `n - 1` frames, step away, repeat": hits older than `window` expire anyway, so
//!   a lapsed presentation with fewer than `k` face frames could never have unlocked.
//!   Note that an attempt is measured in frames: at 30 fps with `n = 5` an attempt lasts
//!   ~0.17 s, so pick `n` (or rate-limit the loop) so an attempt is about a second.
//! * **Lockout.** When `max_failures` failed attempts have accumulated, the policy locks out
//!   for `lockout_base * 2^(level)`, capped at `lockout_max`, where `level` is how many
//!   lockouts happened since the last successful unlock (30 s, 60 s, 120 s … 1 h). The
//!   failure count restarts from zero for the next round. During a lockout every frame's
//!   decision is [`Decision::LockedOut`] — a matching face included — and nothing is
//!   accumulated; the lockout ends with an empty window.
//! * **Success** resets the failure count **and** the doubling level: a lock maker expects
//!   the back-off to forget only after the rightful user got in, not after a pause.
//! * **Cooldown.** After an unlock the window is cleared and for `cooldown` every frame's
//!   decision is [`Decision::Cooldown`]: one unlock per presentation, no re-firing while the
//!   door is still open. After the cooldown a new attempt starts from an empty window, so a
//!   user still standing there needs `k` fresh matching frames.
//! * **Spoof.** [`Observation::Spoof`] is a recognised face the liveness stage judged not
//!   alive (the anti-spoofing network's live score under its threshold, or frozen input:
//!   no change of the face crop since an earlier counted frame). It is a **failed attempt**
//!   at once, whatever the attempt's length: the window is cleared, one failure is counted
//!   (a lockout may start on this very frame) and the decision is [`Decision::Spoof`]. A
//!   spoof is the one observation where the attacker's face already matches, so it must
//!   cost as much as a full wrong attempt; and a live user the network misjudges on one
//!   frame only loses that attempt (the boards allow 5 before a lockout).
//! * **Errors.** [`Observation::Error`] (a failed camera read, detector, embedder…) and a
//!   malformed observation (NaN score, empty user) yield [`Decision::Error`], never unlock,
//!   and clear the window's hits. They do not count as failures, and they do not erase the
//!   face-frame count of the attempt in progress, so inducing errors cannot be used to dodge
//!   the failure accounting.
//! * Time never runs backwards for the policy: a `now` earlier than a previous one is treated
//!   as equal to it (saturating arithmetic), never as a panic.
//! * **Restarts.** What must outlive the process — the failure count, the doubling level, the
//!   lockout's remaining time and whether the attempt in progress already counts as a failure
//!   — is a [`Persisted`] value ([`Policy::persisted`]), written to disk by
//!   `unlock::policy_state` before each decision that changed it is acted upon. A policy made
//!   with [`Policy::resume`] takes it back at its first frame: the lockout goes on for the
//!   recorded remaining time from that frame, and an attempt that was cut by the restart after
//!   reaching `k` face frames counts as the failed attempt it would have become (so a
//!   power-cycle between tries neither clears the count nor saves an attempt). Instants do not
//!   survive a restart, so the remaining time is kept as a duration, never as a deadline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What the pipeline saw in one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// No face was detected (or none large enough to judge).
    NoFace,
    /// A face was seen. `best` is the best-scoring enrolled user and its cosine score, or
    /// `None` if the store holds no templates. The policy applies the threshold.
    Face { best: Option<(String, f32)> },
    /// A face that matched `user` at `score` (at or above the threshold) but was judged a
    /// presentation attack; `live` is the anti-spoofing network's live score when it ran.
    Spoof {
        user: String,
        score: f32,
        live: Option<f32>,
        kind: SpoofKind,
    },
    /// A stage failed for this frame; the string says which and why.
    Error(String),
}

/// Why a recognised face was refused as a spoof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoofKind {
    /// The anti-spoofing network's live score was under the board's threshold.
    Spoof,
    /// The face crop did not change beyond the noise floor since an earlier counted frame:
    /// a still fed in as the camera stream.
    Frozen,
}

impl std::fmt::Display for SpoofKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpoofKind::Spoof => "spoof",
            SpoofKind::Frozen => "frozen",
        })
    }
}

/// The policy's verdict for one frame. Only [`Decision::Unlock`] may open the lock.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Open the lock: `user` reached `k` matching frames; `score` is this frame's score.
    Unlock { user: String, score: f32 },
    /// This frame matched `user`; `hits` of the `needed` matching frames are in the window.
    Pending {
        user: String,
        hits: usize,
        needed: usize,
    },
    /// No face in this frame.
    NoFace,
    /// A face was seen but did not reach the threshold; `best_score` is its best score
    /// (`None` if there are no templates at all).
    NoMatch { best_score: Option<f32> },
    /// A recognised face judged a presentation attack (see [`Observation::Spoof`]); the
    /// attempt failed.
    Spoof {
        user: String,
        score: f32,
        live: Option<f32>,
        kind: SpoofKind,
    },
    /// Too many failed attempts; every frame is refused for `remaining`.
    LockedOut { remaining: Duration },
    /// An unlock just happened; frames are ignored for `remaining`.
    Cooldown { remaining: Duration },
    /// A stage failed (or the observation was malformed); never unlocks.
    Error(String),
}

impl Decision {
    /// True only for [`Decision::Unlock`]: the single place the loop should test.
    pub fn is_unlock(&self) -> bool {
        matches!(self, Decision::Unlock { .. })
    }
}

/// Tunables of the policy. Build it from the board profile's `[policy]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Cosine score at or above which a face matches a user, in (0, 1).
    pub threshold: f32,
    /// Matching frames of the same user needed to unlock (`1 <= k <= n`).
    pub k: usize,
    /// Frames in the window, and face frames per attempt (`n >= 1`).
    pub n: usize,
    /// The `k` matching frames must lie within this span; also the gap that ends a
    /// presentation. Must be > 0.
    pub window: Duration,
    /// Failed attempts that trigger a lockout (>= 1).
    pub max_failures: u32,
    /// First lockout duration (> 0); doubled at each further lockout.
    pub lockout_base: Duration,
    /// Upper bound of the doubled lockout (>= `lockout_base`).
    pub lockout_max: Duration,
    /// Frames after an unlock are ignored for this long (may be zero).
    pub cooldown: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            threshold: 0.5,
            k: 3,
            n: 5,
            window: Duration::from_secs(2),
            max_failures: 5,
            lockout_base: Duration::from_secs(30),
            lockout_max: Duration::from_secs(3600),
            cooldown: Duration::from_secs(5),
        }
    }
}

impl PolicyConfig {
    /// Checks every field; the message names the field and the bad value.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Msg(format!("unlock policy: {what}")));
        if !(self.threshold.is_finite() && self.threshold > 0.0 && self.threshold < 1.0) {
            return bad(&format!("threshold {} is not in (0, 1)", self.threshold));
        }
        if self.n == 0 {
            return bad("n must be >= 1");
        }
        if self.k == 0 || self.k > self.n {
            return bad(&format!("k = {} must be in 1..=n (n = {})", self.k, self.n));
        }
        if self.window.is_zero() {
            return bad("window must be > 0");
        }
        if self.max_failures == 0 {
            return bad("max_failures must be >= 1");
        }
        if self.lockout_base.is_zero() {
            return bad("lockout_base must be > 0");
        }
        if self.lockout_max < self.lockout_base {
            return bad(&format!(
                "lockout_max {:?} is shorter than lockout_base {:?}",
                self.lockout_max, self.lockout_base
            ));
        }
        Ok(())
    }
}

/// The part of the policy's state that must survive a restart (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Persisted {
    /// Failed attempts counted towards the next lockout.
    pub failures: u32,
    /// Lockouts since the last successful unlock (the doubling exponent).
    pub lockout_level: u32,
    /// The attempt in progress has seen `k` face frames: it ends as a failure unless it
    /// unlocks, so a restart must count it.
    pub attempt_counts: bool,
    /// Time left of the lockout in force (zero: none).
    pub lockout_remaining: Duration,
    /// Full length of that lockout.
    pub lockout_total: Duration,
}

/// One frame remembered in the window.
#[derive(Debug, Clone)]
struct Slot {
    at: Instant,
    /// The matched user, if this frame matched.
    user: Option<String>,
}

/// The state machine. Feed it one observation per frame with [`Policy::observe`].
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
    window: VecDeque<Slot>,
    /// Face frames seen in the current attempt.
    attempt_faces: usize,
    /// Time of the last face frame of the current attempt.
    last_face: Option<Instant>,
    /// Failed attempts since the last lockout or success.
    failures: u32,
    /// Lockouts since the last success: the doubling exponent.
    lockout_level: u32,
    locked_until: Option<Instant>,
    /// Full length of the lockout in force.
    locked_for: Duration,
    cooldown_until: Option<Instant>,
    /// Latest `now` seen, so a backwards clock is clamped.
    last_now: Option<Instant>,
    /// State from a previous run, taken back at the first frame ([`Policy::resume`]).
    resume: Option<Persisted>,
}

impl Policy {
    /// Creates a policy after validating `cfg`.
    pub fn new(cfg: PolicyConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Policy {
            window: VecDeque::with_capacity(cfg.n),
            cfg,
            attempt_faces: 0,
            last_face: None,
            failures: 0,
            lockout_level: 0,
            locked_until: None,
            locked_for: Duration::ZERO,
            cooldown_until: None,
            last_now: None,
            resume: None,
        })
    }

    /// A policy that continues from `state` (saved by a previous run): at its first frame the
    /// lockout in force resumes with its remaining time, and an attempt that already counted
    /// is counted as failed (which may start a lockout on that frame).
    pub fn resume(cfg: PolicyConfig, state: Persisted) -> Result<Self> {
        let mut p = Self::new(cfg)?;
        p.resume = Some(state);
        Ok(p)
    }

    /// What must survive a restart, as of `now` (see [`Persisted`]).
    pub fn persisted(&self, now: Instant) -> Persisted {
        if let Some(r) = self.resume {
            return r;
        }
        let remaining = self.locked_out_for(now).unwrap_or_default();
        Persisted {
            failures: self.failures,
            lockout_level: self.lockout_level,
            attempt_counts: self.attempt_faces >= self.cfg.k,
            lockout_remaining: remaining,
            lockout_total: if remaining.is_zero() {
                Duration::ZERO
            } else {
                self.locked_for
            },
        }
    }

    /// The lockout a corrupt or missing record stands for: the longest this policy imposes,
    /// at the doubling level that reaches it (so the next one is as long).
    pub fn worst_case(&self) -> Persisted {
        let mut level = 0;
        while level < 32 && self.lockout_duration(level) < self.cfg.lockout_max {
            level += 1;
        }
        Persisted {
            failures: 0,
            lockout_level: level.saturating_add(1),
            attempt_counts: false,
            lockout_remaining: self.cfg.lockout_max,
            lockout_total: self.cfg.lockout_max,
        }
    }

    /// Takes back a [`Persisted`] state at `now`.
    fn apply_resume(&mut self, r: Persisted, now: Instant) {
        self.failures = r.failures;
        self.lockout_level = r.lockout_level;
        if !r.lockout_remaining.is_zero() {
            self.locked_until = Some(now + r.lockout_remaining);
            self.locked_for = r.lockout_total.max(r.lockout_remaining);
        }
        if r.attempt_counts {
            self.failures = self.failures.saturating_add(1);
        }
        self.lock_if_due(now);
    }

    /// The configuration in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Failed attempts counted towards the next lockout.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Lockouts since the last successful unlock (the doubling exponent).
    pub fn lockout_level(&self) -> u32 {
        self.lockout_level
    }

    /// Remaining lockout at `now`, if locked out.
    pub fn locked_out_for(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Duration of the lockout that triggers after `level` previous lockouts.
    fn lockout_duration(&self, level: u32) -> Duration {
        // 2^level with the exponent clamped so the multiplication cannot overflow; the
        // cap makes anything past a few dozen doublings equal anyway.
        let factor = 1u32 << level.min(20);
        self.cfg
            .lockout_base
            .checked_mul(factor)
            .unwrap_or(self.cfg.lockout_max)
            .min(self.cfg.lockout_max)
    }

    /// Forgets the current attempt (window and face count).
    fn reset_attempt(&mut self) {
        self.window.clear();
        self.attempt_faces = 0;
        self.last_face = None;
    }

    /// Ends the current attempt without unlock; counts a failure if it was long enough,
    /// and starts a lockout if that was the last allowed failure.
    fn end_attempt_failed(&mut self, now: Instant) {
        let counts = self.attempt_faces >= self.cfg.k;
        self.reset_attempt();
        if counts {
            self.count_failure(now);
        }
    }

    /// Counts one failed attempt; the last allowed one starts a lockout (unless one is
    /// already in force, when it counts towards the next round).
    fn count_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.lock_if_due(now);
    }

    /// Starts a lockout if the failures reached `max_failures` and none is in force.
    fn lock_if_due(&mut self, now: Instant) {
        if self.failures >= self.cfg.max_failures && self.locked_out_for(now).is_none() {
            let d = self.lockout_duration(self.lockout_level);
            self.locked_until = Some(now + d);
            self.locked_for = d;
            self.lockout_level = self.lockout_level.saturating_add(1);
            self.failures = 0;
        }
    }

    /// Pushes a frame into the window, keeping at most `n`.
    fn push(&mut self, slot: Slot) {
        if self.window.len() == self.cfg.n {
            self.window.pop_front();
        }
        self.window.push_back(slot);
    }

    /// Processes one frame seen at `now` and returns the decision for it.
    pub fn observe(&mut self, obs: &Observation, now: Instant) -> Decision {
        // A clock that goes backwards is clamped to the latest time seen.
        let now = match self.last_now {
            Some(prev) if now < prev => prev,
            _ => now,
        };
        self.last_now = Some(now);
        if let Some(r) = self.resume.take() {
            self.apply_resume(r, now);
        }

        // 1. Lockout takes precedence over everything, a matching face included.
        if let Some(until) = self.locked_until {
            if now < until {
                return Decision::LockedOut {
                    remaining: until - now,
                };
            }
            self.locked_until = None;
            self.reset_attempt();
        }

        // 2. Cooldown after an unlock.
        if let Some(until) = self.cooldown_until {
            if now < until {
                if let Observation::Error(msg) = obs {
                    return Decision::Error(msg.clone());
                }
                return Decision::Cooldown {
                    remaining: until - now,
                };
            }
            self.cooldown_until = None;
            self.reset_attempt();
        }

        // 3. A presentation that lapsed (no face for longer than the window) ends its attempt.
        if let Some(last) = self.last_face {
            if now.saturating_duration_since(last) > self.cfg.window {
                self.end_attempt_failed(now);
                if let Some(remaining) = self.locked_out_for(now) {
                    return Decision::LockedOut { remaining };
                }
            }
        }

        // 4. The frame itself.
        match obs {
            Observation::Error(msg) => {
                self.window.clear();
                Decision::Error(msg.clone())
            }
            Observation::Spoof {
                user,
                score,
                live,
                kind,
            } => {
                if user.is_empty() || !score.is_finite() || live.is_some_and(|l| !l.is_finite()) {
                    self.window.clear();
                    return Decision::Error(format!(
                        "malformed observation: spoof of user {user:?}, score {score}, live {live:?}"
                    ));
                }
                // A failed attempt at once, whatever its length (see the module doc).
                self.reset_attempt();
                self.count_failure(now);
                if let Some(remaining) = self.locked_out_for(now) {
                    return Decision::LockedOut { remaining };
                }
                Decision::Spoof {
                    user: user.clone(),
                    score: *score,
                    live: *live,
                    kind: *kind,
                }
            }
            Observation::NoFace => {
                self.push(Slot {
                    at: now,
                    user: None,
                });
                Decision::NoFace
            }
            Observation::Face { best } => {
                let matched = match best {
                    Some((user, score)) => {
                        if user.is_empty() || !score.is_finite() {
                            self.window.clear();
                            return Decision::Error(format!(
                                "malformed observation: user {user:?}, score {score}"
                            ));
                        }
                        if *score >= self.cfg.threshold {
                            Some((user.clone(), *score))
                        } else {
                            None
                        }
                    }
                    None => None,
                };
                self.attempt_faces += 1;
                self.last_face = Some(now);
                match matched {
                    Some((user, score)) => {
                        self.push(Slot {
                            at: now,
                            user: Some(user.clone()),
                        });
                        let window = self.cfg.window;
                        let hits = self
                            .window
                            .iter()
                            .filter(|s| {
                                s.user.as_deref() == Some(user.as_str())
                                    && now.saturating_duration_since(s.at) <= window
                            })
                            .count();
                        if hits >= self.cfg.k {
                            self.reset_attempt();
                            self.failures = 0;
                            self.lockout_level = 0;
                            if !self.cfg.cooldown.is_zero() {
                                self.cooldown_until = Some(now + self.cfg.cooldown);
                            }
                            return Decision::Unlock { user, score };
                        }
                        self.finish_face_frame(
                            now,
                            Decision::Pending {
                                user,
                                hits,
                                needed: self.cfg.k,
                            },
                        )
                    }
                    None => {
                        self.push(Slot {
                            at: now,
                            user: None,
                        });
                        let best_score = best.as_ref().map(|(_, s)| *s);
                        self.finish_face_frame(now, Decision::NoMatch { best_score })
                    }
                }
            }
        }
    }

    /// After a face frame that did not unlock: if the attempt has used its `n` face frames
    /// it ends as a failure (which may start a lockout, reported on this very frame).
    fn finish_face_frame(&mut self, now: Instant, decision: Decision) -> Decision {
        if self.attempt_faces >= self.cfg.n {
            self.end_attempt_failed(now);
            if let Some(remaining) = self.locked_out_for(now) {
                return Decision::LockedOut { remaining };
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            threshold: 0.5,
            k: 3,
            n: 5,
            window: Duration::from_secs(2),
            max_failures: 5,
            lockout_base: Duration::from_secs(30),
            lockout_max: Duration::from_secs(3600),
            cooldown: Duration::from_secs(5),
        }
    }

    fn face(user: &str, score: f32) -> Observation {
        Observation::Face {
            best: Some((user.to_string(), score)),
        }
    }

    /// A test clock: frames at explicit millisecond offsets from a fixed origin.
    struct Clock(Instant);
    impl Clock {
        fn new() -> Self {
            Clock(Instant::now())
        }
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms * MS)
        }
    }

    /// Runs one failed attempt of 5 non-matching face frames starting at `t0` ms, 100 ms apart.
    fn fail_attempt(p: &mut Policy, c: &Clock, t0: u64) -> Decision {
        let mut last = Decision::NoFace;
        for i in 0..5 {
            last = p.observe(&face("alice", 0.2), c.at(t0 + i * 100));
        }
        last
    }

    #[test]
    fn k_of_n_same_user_unlocks_on_third_hit() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        assert_eq!(
            p.observe(&face("alice", 0.8), c.at(0)),
            Decision::Pending {
                user: "alice".into(),
                hits: 1,
                needed: 3
            }
        );
        assert_eq!(
            p.observe(&face("alice", 0.3), c.at(100)),
            Decision::NoMatch {
                best_score: Some(0.3)
            }
        );
        assert_eq!(
            p.observe(&face("alice", 0.7), c.at(200)),
            Decision::Pending {
                user: "alice".into(),
                hits: 2,
                needed: 3
            }
        );
        assert_eq!(
            p.observe(&face("alice", 0.6), c.at(300)),
            Decision::Unlock {
                user: "alice".into(),
                score: 0.6
            }
        );
    }

    #[test]
    fn threshold_is_inclusive() {
        let c = Clock::new();
        let mut p = Policy::new(PolicyConfig { k: 1, ..cfg() }).unwrap();
        assert!(p.observe(&face("a", 0.5), c.at(0)).is_unlock());
        let mut p = Policy::new(PolicyConfig { k: 1, ..cfg() }).unwrap();
        assert_eq!(
            p.observe(&face("a", 0.499), c.at(0)),
            Decision::NoMatch {
                best_score: Some(0.499)
            }
        );
    }

    #[test]
    fn different_users_do_not_add_up() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        // alice, bob, alice, bob: at most 2 hits each -> never unlocks.
        let seq = ["alice", "bob", "alice", "bob"];
        for (i, u) in seq.iter().enumerate() {
            let d = p.observe(&face(u, 0.9), c.at(i as u64 * 100));
            assert!(!d.is_unlock(), "frame {i}: {d:?}");
        }
        // 5th face frame: bob -> 3 hits? No: window of 5 holds a,b,a,b,b -> bob has 3.
        // That is a legitimate K-of-N for bob.
        assert!(p.observe(&face("bob", 0.9), c.at(400)).is_unlock());
    }

    #[test]
    fn hits_older_than_window_do_not_count() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        p.observe(&face("alice", 0.9), c.at(0));
        p.observe(&Observation::NoFace, c.at(1000));
        p.observe(&face("alice", 0.9), c.at(1500));
        // At t = 2100 the hit at t = 0 is 2.1 s old (> 2 s): only 2 hits in the window.
        assert_eq!(
            p.observe(&face("alice", 0.9), c.at(2100)),
            Decision::Pending {
                user: "alice".into(),
                hits: 2,
                needed: 3
            }
        );
        // Exactly 2 s old still counts (inclusive bound): hits at 1500, 2100, 3500.
        assert!(p.observe(&face("alice", 0.9), c.at(3500)).is_unlock());
    }

    #[test]
    fn only_last_n_frames_count() {
        let c = Clock::new();
        // n = 4 so no-face frames push old hits out of the window before an attempt ends.
        let mut p = Policy::new(PolicyConfig { n: 4, ..cfg() }).unwrap();
        p.observe(&face("alice", 0.9), c.at(0)); // hits 1
        p.observe(&face("alice", 0.9), c.at(100)); // hits 2
        p.observe(&Observation::NoFace, c.at(200));
        p.observe(&Observation::NoFace, c.at(300));
        // Window now [a@100, -, -, -]; the next frame pushes out the last early hit.
        p.observe(&Observation::NoFace, c.at(400));
        assert_eq!(
            p.observe(&face("alice", 0.9), c.at(500)),
            Decision::Pending {
                user: "alice".into(),
                hits: 1,
                needed: 3
            }
        );
    }

    #[test]
    fn no_face_frames_never_count_as_failures() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        for i in 0..1000 {
            assert_eq!(
                p.observe(&Observation::NoFace, c.at(i * 100)),
                Decision::NoFace
            );
        }
        assert_eq!(p.failures(), 0);
    }

    #[test]
    fn n_face_frames_without_unlock_is_one_failure() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        for i in 0..4 {
            p.observe(&face("x", 0.1), c.at(i * 100));
            assert_eq!(p.failures(), 0);
        }
        p.observe(&face("x", 0.1), c.at(400));
        assert_eq!(p.failures(), 1);
        // No-face frames in between do not add face frames.
        p.observe(&face("x", 0.1), c.at(500));
        p.observe(&Observation::NoFace, c.at(600));
        p.observe(&face("x", 0.1), c.at(700));
        assert_eq!(p.failures(), 1);
    }

    #[test]
    fn lapsed_presentation_counts_only_if_k_face_frames() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        // Passer-by: 2 face frames (< k = 3), then gone for 3 s.
        p.observe(&face("x", 0.1), c.at(0));
        p.observe(&face("x", 0.1), c.at(100));
        p.observe(&Observation::NoFace, c.at(3100));
        assert_eq!(p.failures(), 0);
        // Probe: 4 face frames (>= k, < n), then gone for > 2 s: counted at the next frame.
        for i in 0..4 {
            p.observe(&face("x", 0.1), c.at(4000 + i * 100));
        }
        assert_eq!(p.failures(), 0);
        p.observe(&Observation::NoFace, c.at(6400)); // 2.1 s after the last face at 4300
        assert_eq!(p.failures(), 1);
    }

    #[test]
    fn five_failures_lock_out_for_30s_even_for_a_match() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        for a in 0..4 {
            assert!(!matches!(
                fail_attempt(&mut p, &c, a * 1000),
                Decision::LockedOut { .. }
            ));
        }
        assert_eq!(p.failures(), 4);
        // 5th failed attempt: frames at 4000..4400; the lockout starts at 4400.
        assert_eq!(
            fail_attempt(&mut p, &c, 4000),
            Decision::LockedOut {
                remaining: Duration::from_secs(30)
            }
        );
        // A perfect match during the lockout is refused.
        for i in 0..10 {
            let d = p.observe(&face("alice", 0.99), c.at(5000 + i * 100));
            assert!(matches!(d, Decision::LockedOut { .. }), "{d:?}");
        }
        assert_eq!(
            p.observe(&face("alice", 0.99), c.at(34_399)),
            Decision::LockedOut {
                remaining: Duration::from_millis(1)
            }
        );
        // Lockout over at 4400 + 30000 = 34400: fresh window, needs k new hits.
        assert_eq!(
            p.observe(&face("alice", 0.99), c.at(34_400)),
            Decision::Pending {
                user: "alice".into(),
                hits: 1,
                needed: 3
            }
        );
    }

    #[test]
    fn lockout_doubles_and_caps_and_success_resets_it() {
        let c = Clock::new();
        let cfg = PolicyConfig {
            max_failures: 1,
            lockout_max: Duration::from_secs(100),
            ..cfg()
        };
        let mut p = Policy::new(cfg).unwrap();
        // Each failed attempt (5 frames) locks out; expected 30, 60, 100 (cap), 100.
        let mut t = 0;
        for expected in [30u64, 60, 100, 100] {
            let d = fail_attempt(&mut p, &c, t);
            assert_eq!(
                d,
                Decision::LockedOut {
                    remaining: Duration::from_secs(expected)
                }
            );
            t += 400 + expected * 1000; // end of lockout
        }
        assert_eq!(p.lockout_level(), 4);
        // A success resets the doubling: next lockout is 30 s again.
        for i in 0..3 {
            p.observe(&face("alice", 0.9), c.at(t + i * 100));
        }
        assert_eq!(p.lockout_level(), 0);
        t += 200 + 5000; // after the cooldown
        assert_eq!(
            fail_attempt(&mut p, &c, t),
            Decision::LockedOut {
                remaining: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn a_pause_does_not_reset_the_doubling() {
        let c = Clock::new();
        let mut p = Policy::new(PolicyConfig {
            max_failures: 1,
            ..cfg()
        })
        .unwrap();
        // Lockout of 30 s until 30_400; then one hour of nothing, then another failed
        // attempt: 60 s, not 30 s.
        fail_attempt(&mut p, &c, 0);
        p.observe(&Observation::NoFace, c.at(3_600_000));
        assert_eq!(
            fail_attempt(&mut p, &c, 3_601_000),
            Decision::LockedOut {
                remaining: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn success_resets_failure_count() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        for a in 0..4 {
            fail_attempt(&mut p, &c, a * 1000);
        }
        assert_eq!(p.failures(), 4);
        for i in 0..3 {
            p.observe(&face("alice", 0.9), c.at(4000 + i * 100));
        }
        assert_eq!(p.failures(), 0);
    }

    #[test]
    fn cooldown_prevents_refire_then_needs_k_fresh_hits() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        for i in 0..2 {
            p.observe(&face("alice", 0.9), c.at(i * 100));
        }
        assert!(p.observe(&face("alice", 0.9), c.at(200)).is_unlock());
        // Still in front of the camera: cooldown until 5200.
        assert_eq!(
            p.observe(&face("alice", 0.9), c.at(300)),
            Decision::Cooldown {
                remaining: Duration::from_millis(4900)
            }
        );
        for i in 0..40 {
            let d = p.observe(&face("alice", 0.9), c.at(400 + i * 100));
            assert!(matches!(d, Decision::Cooldown { .. }), "{d:?}");
        }
        assert_eq!(p.failures(), 0);
        // After the cooldown: a new attempt from an empty window.
        assert_eq!(
            p.observe(&face("alice", 0.9), c.at(5200)),
            Decision::Pending {
                user: "alice".into(),
                hits: 1,
                needed: 3
            }
        );
    }

    #[test]
    fn error_never_unlocks_and_clears_hits_but_not_face_count() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        p.observe(&face("alice", 0.9), c.at(0));
        p.observe(&face("alice", 0.9), c.at(100));
        assert_eq!(
            p.observe(&Observation::Error("camera: EIO".into()), c.at(200)),
            Decision::Error("camera: EIO".into())
        );
        // Progress cleared: the next match is hit 1 again, not an unlock.
        assert_eq!(
            p.observe(&face("alice", 0.9), c.at(300)),
            Decision::Pending {
                user: "alice".into(),
                hits: 1,
                needed: 3
            }
        );
        // Face frames so far: 3. Two non-matching frames complete n = 5 -> one failure,
        // errors did not reset the attempt.
        p.observe(&face("alice", 0.1), c.at(400));
        assert_eq!(p.failures(), 0);
        p.observe(&face("alice", 0.1), c.at(500));
        assert_eq!(p.failures(), 1);
    }

    #[test]
    fn malformed_observations_are_errors() {
        let c = Clock::new();
        let mut p = Policy::new(PolicyConfig { k: 1, ..cfg() }).unwrap();
        assert!(matches!(
            p.observe(&face("alice", f32::NAN), c.at(0)),
            Decision::Error(_)
        ));
        assert!(matches!(
            p.observe(&face("", 0.9), c.at(1)),
            Decision::Error(_)
        ));
        assert!(matches!(
            p.observe(&face("alice", f32::INFINITY), c.at(2)),
            Decision::Error(_)
        ));
        assert_eq!(
            p.observe(&Observation::Face { best: None }, c.at(3)),
            Decision::NoMatch { best_score: None }
        );
    }

    #[test]
    fn backwards_clock_does_not_panic_or_shorten_lockout() {
        let c = Clock::new();
        let mut p = Policy::new(PolicyConfig {
            max_failures: 1,
            ..cfg()
        })
        .unwrap();
        fail_attempt(&mut p, &c, 10_000); // lockout until 10_400 + 30_000
        let d = p.observe(&face("alice", 0.9), c.at(0));
        assert_eq!(
            d,
            Decision::LockedOut {
                remaining: Duration::from_secs(30)
            }
        );
    }

    fn spoof(kind: SpoofKind) -> Observation {
        Observation::Spoof {
            user: "alice".into(),
            score: 0.9,
            live: Some(0.1),
            kind,
        }
    }

    #[test]
    fn a_spoof_is_a_failed_attempt_at_once_and_clears_the_hits() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        // Two matching frames, then a spoof: the hits are gone and one failure is counted
        // although the attempt saw fewer than k face frames.
        p.observe(&face("alice", 0.8), c.at(0));
        p.observe(&face("alice", 0.8), c.at(100));
        assert_eq!(
            p.observe(&spoof(SpoofKind::Spoof), c.at(200)),
            Decision::Spoof {
                user: "alice".into(),
                score: 0.9,
                live: Some(0.1),
                kind: SpoofKind::Spoof
            }
        );
        assert_eq!(p.failures(), 1);
        // The next matching frame starts from an empty window: 1 of 3.
        assert_eq!(
            p.observe(&face("alice", 0.8), c.at(300)),
            Decision::Pending {
                user: "alice".into(),
                hits: 1,
                needed: 3
            }
        );
    }

    #[test]
    fn max_failures_spoofs_lock_out_a_matching_face_included() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        for i in 0..4 {
            let kind = if i % 2 == 0 {
                SpoofKind::Spoof
            } else {
                SpoofKind::Frozen
            };
            assert!(matches!(
                p.observe(&spoof(kind), c.at(i * 100)),
                Decision::Spoof { .. }
            ));
        }
        assert_eq!(p.failures(), 4);
        // The 5th failure (max_failures = 5) locks out on this very frame for 30 s.
        assert_eq!(
            p.observe(&spoof(SpoofKind::Frozen), c.at(400)),
            Decision::LockedOut {
                remaining: Duration::from_secs(30)
            }
        );
        assert!(matches!(
            p.observe(&face("alice", 0.99), c.at(500)),
            Decision::LockedOut { .. }
        ));
    }

    #[test]
    fn malformed_spoof_is_an_error() {
        let c = Clock::new();
        let mut p = Policy::new(cfg()).unwrap();
        let bad = Observation::Spoof {
            user: "alice".into(),
            score: 0.9,
            live: Some(f32::NAN),
            kind: SpoofKind::Spoof,
        };
        assert!(matches!(p.observe(&bad, c.at(0)), Decision::Error(_)));
    }

    #[test]
    fn invalid_configs_are_refused() {
        for bad in [
            PolicyConfig { k: 0, ..cfg() },
            PolicyConfig { k: 6, ..cfg() },
            PolicyConfig {
                n: 0,
                k: 0,
                ..cfg()
            },
            PolicyConfig {
                threshold: 1.0,
                ..cfg()
            },
            PolicyConfig {
                threshold: f32::NAN,
                ..cfg()
            },
            PolicyConfig {
                window: Duration::ZERO,
                ..cfg()
            },
            PolicyConfig {
                max_failures: 0,
                ..cfg()
            },
            PolicyConfig {
                lockout_max: Duration::from_secs(10),
                ..cfg()
            },
        ] {
            assert!(Policy::new(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
