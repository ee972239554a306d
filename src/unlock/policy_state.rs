//! The policy's failure count and lockout, kept on disk so that a restart never clears or
//! shortens them (issue 12, finding 2: three runs of 4 failed attempts each, no lockout, and
//! the owner — or anyone — got in at once after a power-cycle).
//!
//! # Rules
//! * **Where.** `<store>.state` beside the template store, sealed under the device key
//!   ([`crate::unlock::seal`], magic `FGTSTATE`), so it cannot be reset by editing it; written
//!   atomically (temp file, fsync, rename), and opened without following symlinks and only if
//!   private, like the store.
//! * **When.** [`StateFile::record`] is called after every decision and writes when the
//!   [`Persisted`] part changed (a failure counted, a lockout started or ended, an attempt
//!   reached `k` face frames, a success reset the counters), and every
//!   [`REFRESH_EVERY`] while a lockout runs. The loop calls it *before* acting on or printing
//!   the decision, so a `kill -9` right after a failure cannot lose it; if the write fails the
//!   decision becomes an error (never an unlock).
//! * **Time.** A Pi has no real-time clock: the wall clock may start at an old value at boot
//!   and jump (either way) when NTP answers, and `Instant` means nothing across a reboot. So
//!   the lockout is kept as the *remaining* duration, counted down only while the loop runs;
//!   the time the device is off is never credited (a power-cycle cannot shorten a lockout, at
//!   worst it lengthens it by the [`REFRESH_EVERY`] since the last write). The wall time of each
//!   write is recorded as well: if at start the wall clock is *earlier* than the last write,
//!   the clock is not trustworthy and a lockout in progress restarts for its full length.
//! * **Missing or corrupt.** A state file that is missing, unreadable, not private, a symlink,
//!   corrupt or sealed under another key means a lockout of the policy's longest duration
//!   (`lockout_max`), not a fresh start — deleting the file must not be a reset. Enrolment
//!   creates the first state file together with a new store (`unlock::app::update_store`), so
//!   the first start after enrolment is not locked out.
//! * **One loop.** The loop holds an exclusive `flock` on the state for its lifetime, so two
//!   loops on the same store cannot overwrite each other's counts (the second refuses to
//!   start); stale temp files of a dead loop are removed under that lock.
//!
//! Rollback (putting back an older sealed state file) needs write access to the store's
//! private folder; a TPM's monotonic counter would close it too (see `unlock::seal`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::unlock::policy::{Persisted, Policy};
use crate::unlock::seal::DeviceKey;
use crate::unlock::securefs::{self, FileLock};

/// First 8 bytes of a state file.
pub const MAGIC: [u8; 8] = *b"FGTSTATE";
/// The state format version.
pub const VERSION: u32 = 1;
/// While a lockout runs, its remaining time is rewritten this often (a restart loses at most
/// this much of the countdown, never shortens it).
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
const PAYLOAD_LEN: usize = 4 + 4 + 1 + 8 + 8 + 8;

/// The default state path for a store: `<store>.state` beside it.
pub fn default_state_path(store: &Path) -> PathBuf {
    securefs::beside(store, ".state")
}

fn state_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Msg(format!("policy state {}: {reason}", path.display()))
}

/// One record: the persisted policy state and the wall time of the write (ms since 1970).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub state: Persisted,
    pub wall_ms: u64,
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

impl Record {
    fn payload(&self) -> Vec<u8> {
        let s = &self.state;
        let mut p = Vec::with_capacity(PAYLOAD_LEN);
        p.extend_from_slice(&s.failures.to_le_bytes());
        p.extend_from_slice(&s.lockout_level.to_le_bytes());
        p.push(s.attempt_counts as u8);
        p.extend_from_slice(&(s.lockout_remaining.as_millis() as u64).to_le_bytes());
        p.extend_from_slice(&(s.lockout_total.as_millis() as u64).to_le_bytes());
        p.extend_from_slice(&self.wall_ms.to_le_bytes());
        p
    }

    fn parse(p: &[u8]) -> std::result::Result<Record, String> {
        if p.len() != PAYLOAD_LEN {
            return Err(format!(
                "payload of {} bytes, {PAYLOAD_LEN} expected",
                p.len()
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes(p[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().expect("8 bytes"));
        let attempt_counts = match p[8] {
            0 => false,
            1 => true,
            b => return Err(format!("attempt flag {b}")),
        };
        Ok(Record {
            state: Persisted {
                failures: u32_at(0),
                lockout_level: u32_at(4),
                attempt_counts,
                lockout_remaining: Duration::from_millis(u64_at(9)),
                lockout_total: Duration::from_millis(u64_at(17)),
            },
            wall_ms: u64_at(25),
        })
    }

    /// Seals the record under `key`.
    pub fn to_bytes(&self, key: &DeviceKey, generation: u64) -> Result<Vec<u8>> {
        key.seal(&MAGIC, VERSION, generation, &self.payload())
    }

    /// Opens a sealed record; returns it with its generation.
    pub fn from_bytes(bytes: &[u8], key: &DeviceKey) -> std::result::Result<(Record, u64), String> {
        let (generation, p) = key.open(bytes, &MAGIC, VERSION, &|_| None)?;
        Ok((Record::parse(&p)?, generation))
    }
}

/// Writes a fresh state (no failure, no lockout) at `path` — for enrolment creating a store.
pub fn write_fresh(path: &Path, key: &DeviceKey) -> Result<()> {
    let r = Record {
        state: Persisted::default(),
        wall_ms: wall_ms(SystemTime::now()),
    };
    securefs::atomic_write(path, &r.to_bytes(key, 1)?, &mut |_| Ok(()))
        .map_err(|e| state_err(path, e))
}

/// How the state was found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A valid record, taken as it is.
    Valid,
    /// A valid record, but the wall clock is earlier than its write: the lockout in progress
    /// restarts for its full length.
    ClockWentBack,
    /// Missing or unusable (the reason): locked out for the longest period.
    Unusable(String),
}

/// The state file of a running loop (holds its lock).
pub struct StateFile {
    path: PathBuf,
    key: DeviceKey,
    _lock: FileLock,
    generation: u64,
    restored: Persisted,
    found: Found,
    /// Last written state and when (policy time) it was written.
    last: Option<(Persisted, Option<Instant>)>,
    clock: Box<dyn Fn() -> SystemTime + Send>,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile")
            .field("path", &self.path)
            .field("restored", &self.restored)
            .field("found", &self.found)
            .finish()
    }
}

impl StateFile {
    /// Opens the state at `path` for a loop running `policy_cfg`, with the system clock.
    pub fn open(path: &Path, key: &DeviceKey, worst: Persisted) -> Result<Self> {
        Self::open_with_clock(path, key, worst, Box::new(SystemTime::now))
    }

    /// [`StateFile::open`] with an injected wall clock (tests). `worst` is what a missing or
    /// corrupt file stands for ([`Policy::worst_case`]). Takes the lock (refusing to start if
    /// another loop holds it), removes stale temp files, reads the record, applies the rules
    /// of the module doc and writes the result back at once (so a lockout imposed because of
    /// a missing file is on disk before the first frame).
    pub fn open_with_clock(
        path: &Path,
        key: &DeviceKey,
        worst: Persisted,
        clock: Box<dyn Fn() -> SystemTime + Send>,
    ) -> Result<Self> {
        let lock = FileLock::try_exclusive(path)
            .map_err(|e| state_err(path, e))?
            .ok_or_else(|| {
                state_err(
                    path,
                    "another unlock loop is using this store (its state is locked)",
                )
            })?;
        securefs::clean_stale_temps(path).map_err(|e| state_err(path, e))?;
        let now_ms = wall_ms(clock());
        let read =
            securefs::read_private(path, 4096).and_then(|(b, _)| Record::from_bytes(&b, key));
        let (restored, found, generation) = match read {
            Ok((rec, generation)) if now_ms < rec.wall_ms => {
                let mut s = rec.state;
                if !s.lockout_remaining.is_zero() {
                    s.lockout_remaining = s.lockout_total.max(s.lockout_remaining);
                }
                (s, Found::ClockWentBack, generation)
            }
            Ok((rec, generation)) => (rec.state, Found::Valid, generation),
            Err(reason) => (worst, Found::Unusable(reason), 0),
        };
        let mut sf = StateFile {
            path: path.to_path_buf(),
            key: key.clone(),
            _lock: lock,
            generation,
            restored,
            found,
            last: None,
            clock,
        };
        sf.write(restored, None)?;
        Ok(sf)
    }

    /// The state to resume the policy from ([`Policy::resume`]).
    pub fn restored(&self) -> Persisted {
        self.restored
    }

    /// How the file was found at start (for the start-up message).
    pub fn found(&self) -> &Found {
        &self.found
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, s: Persisted, at: Option<Instant>) -> Result<()> {
        let rec = Record {
            state: s,
            wall_ms: wall_ms((self.clock)()),
        };
        let generation = self.generation.wrapping_add(1);
        let bytes = rec.to_bytes(&self.key, generation)?;
        securefs::atomic_write(&self.path, &bytes, &mut |_| Ok(()))
            .map_err(|e| state_err(&self.path, e))?;
        self.generation = generation;
        self.last = Some((s, at));
        Ok(())
    }

    /// Writes the policy's state at `now` if it changed (see the module doc). Returns whether
    /// it wrote. Call it after `Policy::observe` and before acting on the decision.
    pub fn record(&mut self, policy: &Policy, now: Instant) -> Result<bool> {
        let s = policy.persisted(now);
        let due = match self.last {
            None => true,
            Some((prev, at)) => {
                let same_counts = prev.failures == s.failures
                    && prev.lockout_level == s.lockout_level
                    && prev.attempt_counts == s.attempt_counts
                    && prev.lockout_total == s.lockout_total
                    && prev.lockout_remaining.is_zero() == s.lockout_remaining.is_zero();
                let refresh = !s.lockout_remaining.is_zero()
                    && at.is_none_or(|at| now.saturating_duration_since(at) >= REFRESH_EVERY);
                !same_counts || refresh
            }
        };
        if due {
            self.write(s, Some(now))?;
        }
        Ok(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unlock::policy::{Decision, Observation, PolicyConfig};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn cfg() -> PolicyConfig {
        PolicyConfig {
            max_failures: 2,
            lockout_base: Duration::from_secs(30),
            lockout_max: Duration::from_secs(3600),
            ..PolicyConfig::default()
        }
    }

    /// A settable wall clock (ms since 1970).
    fn clock(ms: &Arc<AtomicU64>) -> Box<dyn Fn() -> SystemTime + Send> {
        let ms = ms.clone();
        Box::new(move || UNIX_EPOCH + Duration::from_millis(ms.load(Ordering::SeqCst)))
    }

    fn face(score: f32) -> Observation {
        Observation::Face {
            best: Some(("alice".into(), score)),
        }
    }

    /// One "run" of the loop: resumes from the file, shows `attempts` failed attempts of 5
    /// non-matching faces, 100 ms apart, recording after each decision, then one matching
    /// presentation; returns the decisions of the matching one.
    fn run(path: &Path, key: &DeviceKey, wall: &Arc<AtomicU64>, attempts: u64) -> Vec<Decision> {
        let policy_cfg = cfg();
        let worst = Policy::new(policy_cfg.clone()).unwrap().worst_case();
        let mut sf = StateFile::open_with_clock(path, key, worst, clock(wall)).unwrap();
        let mut p = Policy::resume(policy_cfg, sf.restored()).unwrap();
        let t0 = Instant::now();
        let mut t = 0u64;
        let mut step = |p: &mut Policy, obs: &Observation, sf: &mut StateFile| {
            let now = t0 + Duration::from_millis(t);
            t += 100;
            let d = p.observe(obs, now);
            sf.record(p, now).unwrap();
            d
        };
        for _ in 0..attempts * 5 {
            step(&mut p, &face(0.1), &mut sf);
        }
        (0..3).map(|_| step(&mut p, &face(0.9), &mut sf)).collect()
    }

    fn locked(ds: &[Decision]) -> bool {
        ds.iter().all(|d| matches!(d, Decision::LockedOut { .. }))
    }

    #[test]
    fn lockout_and_failures_survive_restarts() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.fgt.state");
        let key = DeviceKey::generate().unwrap();
        let wall = Arc::new(AtomicU64::new(1_700_000_000_000));
        write_fresh(&path, &key).unwrap();
        // Fresh state: the owner unlocks.
        assert!(run(&path, &key, &wall, 0).last().unwrap().is_unlock());
        // Run A: one failed attempt, then the process stops (max_failures = 2).
        {
            let worst = Policy::new(cfg()).unwrap().worst_case();
            let mut sf = StateFile::open_with_clock(&path, &key, worst, clock(&wall)).unwrap();
            let mut p = Policy::resume(cfg(), sf.restored()).unwrap();
            let t0 = Instant::now();
            for i in 0..5 {
                let now = t0 + Duration::from_millis(100 * i);
                p.observe(&face(0.1), now);
                sf.record(&p, now).unwrap();
            }
            assert_eq!(p.failures(), 1);
        }
        // Run B: its first failed attempt is the second in all: locked out, the owner too.
        // (Without the state file each run starts from zero and the owner unlocks here.)
        let b = run(&path, &key, &wall, 1);
        assert!(locked(&b), "{b:?}");
        // Run C, after 10 h of wall time with the device off: still locked out for the whole
        // 30 s (time off is not credited).
        wall.fetch_add(36_000_000, Ordering::SeqCst);
        let c = run(&path, &key, &wall, 0);
        assert!(locked(&c), "{c:?}");
        assert_eq!(
            c[0],
            Decision::LockedOut {
                remaining: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn missing_or_corrupt_state_means_the_longest_lockout() {
        let d = tempfile::tempdir().unwrap();
        let key = DeviceKey::generate().unwrap();
        let wall = Arc::new(AtomicU64::new(1_700_000_000_000));
        let path = d.path().join("t.state");
        // Missing.
        let c = run(&path, &key, &wall, 0);
        assert_eq!(
            c[0],
            Decision::LockedOut {
                remaining: Duration::from_secs(3600)
            }
        );
        // Corrupt: one flipped byte of a valid file; and a file sealed under another key.
        write_fresh(&path, &key).unwrap();
        let mut b = std::fs::read(&path).unwrap();
        let n = b.len();
        b[n - 3] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        assert!(locked(&run(&path, &key, &wall, 0)));
        write_fresh(&path, &DeviceKey::generate().unwrap()).unwrap();
        let worst = Policy::new(cfg()).unwrap().worst_case();
        let sf = StateFile::open_with_clock(&path, &key, worst, clock(&wall)).unwrap();
        assert!(matches!(sf.found(), Found::Unusable(r) if r.contains("another device key")));
        drop(sf);
        // A world-readable state file is unusable too.
        write_fresh(&path, &key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(locked(&run(&path, &key, &wall, 0)));
        // Sanity: a fresh, private file does not lock out.
        write_fresh(&path, &key).unwrap();
        assert!(run(&path, &key, &wall, 0).last().unwrap().is_unlock());
    }

    #[test]
    fn clock_earlier_than_last_write_restarts_the_lockout_in_full() {
        let d = tempfile::tempdir().unwrap();
        let key = DeviceKey::generate().unwrap();
        let path = d.path().join("t.state");
        let wall = Arc::new(AtomicU64::new(1_700_000_000_000));
        write_fresh(&path, &key).unwrap();
        // Two failures: a 30 s lockout starts at the 10th frame (t = 0.9 s); frames go on
        // every second to t = 25.9 s; the last refresh (t = 20.9 s) recorded 10 s left.
        {
            let worst = Policy::new(cfg()).unwrap().worst_case();
            let mut sf = StateFile::open_with_clock(&path, &key, worst, clock(&wall)).unwrap();
            let mut p = Policy::resume(cfg(), sf.restored()).unwrap();
            let t0 = Instant::now();
            for i in 0..10 {
                let now = t0 + Duration::from_millis(100 * i);
                p.observe(&face(0.1), now);
                sf.record(&p, now).unwrap();
            }
            for i in 0..26 {
                let now = t0 + Duration::from_millis(900 + 1000 * i);
                p.observe(&Observation::NoFace, now);
                sf.record(&p, now).unwrap();
            }
        }
        let worst = Policy::new(cfg()).unwrap().worst_case();
        let sf = StateFile::open_with_clock(&path, &key, worst, clock(&wall)).unwrap();
        assert_eq!(sf.found(), &Found::Valid);
        let left = sf.restored().lockout_remaining;
        assert!(
            left >= Duration::from_secs(5) && left <= Duration::from_secs(15),
            "{left:?}"
        );
        drop(sf);
        // The clock jumps back one hour (a Pi booting without RTC): the full 30 s again.
        wall.fetch_sub(3_600_000, Ordering::SeqCst);
        let sf = StateFile::open_with_clock(&path, &key, worst, clock(&wall)).unwrap();
        assert_eq!(sf.found(), &Found::ClockWentBack);
        assert_eq!(sf.restored().lockout_remaining, Duration::from_secs(30));
    }

    #[test]
    fn an_attempt_cut_by_a_restart_counts_and_two_loops_cannot_share_a_state() {
        let d = tempfile::tempdir().unwrap();
        let key = DeviceKey::generate().unwrap();
        let path = d.path().join("t.state");
        let wall = Arc::new(AtomicU64::new(1_700_000_000_000));
        write_fresh(&path, &key).unwrap();
        let worst = Policy::new(cfg()).unwrap().worst_case();
        for _ in 0..2 {
            // 3 (= k) non-matching faces, then the process dies.
            let mut sf = StateFile::open_with_clock(&path, &key, worst, clock(&wall)).unwrap();
            assert!(StateFile::open_with_clock(&path, &key, worst, clock(&wall))
                .unwrap_err()
                .to_string()
                .contains("another unlock loop"));
            let mut p = Policy::resume(cfg(), sf.restored()).unwrap();
            let t0 = Instant::now();
            for i in 0..3 {
                let now = t0 + Duration::from_millis(100 * i);
                p.observe(&face(0.1), now);
                sf.record(&p, now).unwrap();
            }
        }
        // Two cut attempts = two failures = locked out.
        assert!(locked(&run(&path, &key, &wall, 0)));
    }

    #[test]
    fn stale_temp_of_a_dead_loop_is_removed_at_start() {
        let d = tempfile::tempdir().unwrap();
        let key = DeviceKey::generate().unwrap();
        let path = d.path().join("t.state");
        write_fresh(&path, &key).unwrap();
        let stale = d.path().join(".t.state.tmp.999999");
        std::fs::write(&stale, b"half").unwrap();
        let worst = Policy::new(cfg()).unwrap().worst_case();
        let _sf = StateFile::open(&path, &key, worst).unwrap();
        assert!(!stale.exists());
    }
}
