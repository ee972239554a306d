//! Board profiles: one TOML file per board (`boards/*.toml`) saying which camera, models,
//! thread count, template store, GPIO line and unlock policy that board uses.
//!
//! Why it is shaped so: on a headless board a typo in a profile must be a refusal at start-up
//! that names the file and the key, not a silently ignored setting. So every table denies
//! unknown keys, every value is range-checked, and every problem — a TOML syntax error, a
//! wrong type, a missing key, an out-of-range value — becomes
//! `Error::Config { path, key, reason }` with `key` spelled `table.key` (e.g. `policy.k`).
//!
//! Paths: `models.detector`, `models.recognizer`, `store.path` and `store.key` may be absolute
//! or relative; relative ones are resolved against the `root` passed to [`BoardProfile::load`]
//! (the project root or install prefix), never against the current directory, so the binary behaves the
//! same whoever starts it. Device paths (`camera.device`, `gpio.chip`) must be absolute.
//! Files are not opened here: a missing model or store is reported by the stage that opens it.
//!
//! `[liveness]` is required: a board either names its anti-spoofing model and threshold, or
//! says `enabled = false` explicitly (and every start then warns that photos can open the
//! lock). A profile written before the liveness stage existed is refused rather than run
//! without it. `liveness.model` is resolved against the root like the other models.
//!
//! Tables `[match]` and `[gpio]` are optional: without `[match].threshold_file` the threshold
//! file beside the recogniser is used (checked against the loaded recogniser), without
//! `[match].rule` the best template decides (the shipped boards say `mean`); without `[gpio]` the board has no lock wired and the loop must use the
//! log-only actuator (fail closed: nothing can open).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::unlock::policy::PolicyConfig;
pub use crate::unlock::rule::Rule;

/// A validated board profile. Relative paths are already resolved against the root.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    pub board: BoardInfo,
    pub camera: CameraConfig,
    pub models: ModelsConfig,
    #[serde(rename = "match", default)]
    pub matching: MatchConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub gpio: Option<GpioConfig>,
    pub policy: PolicySettings,
    #[serde(default)]
    pub enroll: EnrollConfig,
    /// Required (see the module doc); `Option` only so that its absence is reported with a
    /// reason instead of serde's bare "missing field".
    #[serde(default)]
    pub liveness: Option<LivenessConfig>,
    /// Optional: the door's store is synced from the fleet database (`facegate sync`), and
    /// the loop refuses everyone once the last sync is too old.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]` (optional table: a door of a fleet; see `fleet::sync`)
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `postgres://HOST[:PORT]/DBNAME` (TLS; no password in it).
    pub db: String,
    /// The CA certificate (PEM) the database's certificate chains to (absolute after loading).
    pub ca: PathBuf,
    /// The door's 0600 credentials file from `fleet add-door` (absolute after loading).
    pub credentials: PathBuf,
    /// Seconds between syncs, 1..=3600 (default 10: a revocation reaches the door within it).
    #[serde(default = "default_sync_interval")]
    pub sync_interval_s: u64,
    /// Longest the loop keeps deciding from its last synced store without reaching the
    /// database, sync_interval_s..=2592000 s (default 3600); then it refuses everyone.
    #[serde(default = "default_max_staleness")]
    pub max_staleness_s: u64,
    /// Longest one sync round may take, 5..=3600 s (default 300: a full pull of a large site
    /// over a slow link). A round still running then is taken as hung (a server that stopped
    /// answering, a link that swallows packets): `facegate sync` exits with status 75 and its
    /// service restarts it. Nothing is half-written: every file it writes is replaced
    /// atomically.
    #[serde(default = "default_round_timeout")]
    pub round_timeout_s: u64,
}

fn default_round_timeout() -> u64 {
    300
}

fn default_sync_interval() -> u64 {
    10
}

fn default_max_staleness() -> u64 {
    3600
}

/// How the live verdicts of the frames that make up an unlock combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveCombine {
    /// Every recognised frame must be live; one that is not is a spoof and fails the
    /// attempt. (The minimum over the K frames, judged frame by frame: a spoof frame cannot
    /// be averaged away by live-looking ones, and it is refused when it happens.)
    Every,
}

/// `[liveness]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivenessConfig {
    /// False turns the anti-spoofing network off (photos and screens can then open the
    /// lock); must be written out, never implied.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Converted anti-spoofing model (absolute after loading); required when enabled.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Live probability (class 0) at or above which a face is live, in (0, 1); required
    /// when enabled.
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default = "default_combine")]
    pub combine: LiveCombine,
    /// Mean absolute difference (levels) of the aligned face crop under which a frame is
    /// the same picture as an earlier counted one (frozen input), 0..=32; 0 turns the check
    /// off. Default: [`crate::unlock::frozen::DEFAULT_FROZEN_FLOOR`].
    #[serde(default = "default_frozen_floor")]
    pub frozen_floor: f32,
}

fn default_true() -> bool {
    true
}
fn default_combine() -> LiveCombine {
    LiveCombine::Every
}
fn default_frozen_floor() -> f32 {
    crate::unlock::frozen::DEFAULT_FROZEN_FLOOR
}

impl LivenessConfig {
    /// The model and threshold when the network is on (`None`: explicitly off).
    pub fn network(&self) -> Option<(&Path, f32)> {
        match (self.enabled, &self.model, self.threshold) {
            (true, Some(m), Some(t)) => Some((m.as_path(), t)),
            _ => None,
        }
    }
}

/// `[board]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    /// Human-readable board name.
    pub name: String,
    /// Rust target triple the binary for this board is built for.
    pub target: String,
}

/// Camera pixel formats the capture code understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Yuyv,
    Mjpeg,
    Grey,
}

/// `[camera]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// V4L2 device, e.g. `/dev/video0` (absolute).
    pub device: PathBuf,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// Numeric precision of the model weights and kernels (the model file's own type, so a
/// profile and a converted file always name precisions alike).
pub use crate::format::Precision;

/// Detector input size, written `"WxH"` in TOML; both sides multiples of 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DetSize {
    pub width: u32,
    pub height: u32,
}

impl TryFrom<String> for DetSize {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        let (w, h) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("{s:?} is not of the form \"WxH\" (e.g. \"320x256\")"))?;
        let parse = |t: &str, what: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?}: {what} {t:?} is not a whole number"))
        };
        let (width, height) = (parse(w, "width")?, parse(h, "height")?);
        for (v, what) in [(width, "width"), (height, "height")] {
            if v == 0 || v % 32 != 0 || v > 2048 {
                return Err(format!(
                    "{s:?}: {what} {v} must be a multiple of 32 in 32..=2048"
                ));
            }
        }
        Ok(DetSize { width, height })
    }
}

/// `[models]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Converted SCRFD detector (absolute after loading).
    pub detector: PathBuf,
    /// Converted MobileFaceNet recognizer (absolute after loading).
    pub recognizer: PathBuf,
    pub det_size: DetSize,
    pub precision: Precision,
    /// Worker threads for the kernels, 1..=64.
    pub threads: u32,
}

/// `[match]` (optional table)
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// A stricter threshold than the measured one (in (0, 1)); a looser one is refused when
    /// the models are loaded (see `unlock::threshold_file`).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// The threshold file `facegate threshold` wrote for the recogniser (absolute after
    /// loading); default `threshold-<recogniser stem>.json` beside the recogniser.
    #[serde(default)]
    pub threshold_file: Option<PathBuf>,
    /// How a person's templates score a face: `"best"` (the best template), `"mean"` (the
    /// mean template) or `"top2"` (see `unlock::rule`). Default `"best"`, which is how the
    /// store matched before this key existed, so an older profile behaves as it did.
    #[serde(default)]
    pub rule: Rule,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Template store file (absolute after loading).
    pub path: PathBuf,
    /// Device key file sealing the store (absolute after loading); default `<path>.key`
    /// beside the store. Point it at a TPM-unsealed credential where the board has a TPM
    /// (see `unlock::seal`).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// `[gpio]` (optional table: absent = no lock wired, use the log-only actuator)
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// GPIO character device, e.g. `/dev/gpiochip0` (absolute).
    pub chip: PathBuf,
    /// Line offset on that chip.
    pub line: u32,
    /// True when the lock opens on the low level.
    pub active_low: bool,
    /// How long the lock stays open, 100..=30000 ms.
    pub open_ms: u64,
}

impl GpioConfig {
    /// `open_ms` as a duration.
    pub fn open_time(&self) -> Duration {
        Duration::from_millis(self.open_ms)
    }
}

/// `[policy]` — see `unlock::policy` for what each knob means.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Matching frames needed, 1..=n.
    pub k: u32,
    /// Window / attempt length in frames, 1..=100.
    pub n: u32,
    /// Seconds within which the k matches must fall, (0, 60].
    pub window_s: f64,
    /// Failed attempts before a lockout, 1..=100.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// First lockout in seconds, 1..=86400; doubles each time.
    #[serde(default = "default_lockout_s")]
    pub lockout_s: u64,
    /// Cap of the doubled lockout in seconds, lockout_s..=604800.
    #[serde(default = "default_lockout_max_s")]
    pub lockout_max_s: u64,
    /// Seconds after an unlock during which frames are ignored, 0..=600.
    #[serde(default = "default_cooldown_s")]
    pub cooldown_s: f64,
}

fn default_max_failures() -> u32 {
    5
}
fn default_lockout_s() -> u64 {
    30
}
fn default_lockout_max_s() -> u64 {
    3600
}
fn default_cooldown_s() -> f64 {
    5.0
}

/// `[enroll]` (optional table)
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// Templates captured per enrolment, 1..=50.
    #[serde(default = "default_frames")]
    pub frames: u32,
    /// Smallest face (box side in pixels) accepted for enrolment, 16..=2048.
    #[serde(default = "default_min_face_px")]
    pub min_face_px: u32,
}

fn default_frames() -> u32 {
    5
}
fn default_min_face_px() -> u32 {
    80
}

impl Default for EnrollConfig {
    fn default() -> Self {
        EnrollConfig {
            frames: default_frames(),
            min_face_px: default_min_face_px(),
        }
    }
}

impl BoardProfile {
    /// Reads, parses and validates the profile at `path`; relative model and store paths are
    /// resolved against `root`.
    pub fn load(path: &Path, root: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path, root)
    }

    /// [`BoardProfile::load`] on text already in memory; `path` names it in errors.
    pub fn from_toml_str(text: &str, path: &Path, root: &Path) -> Result<Self> {
        let mut p: BoardProfile = toml::from_str(text).map_err(|e| {
            let (key, reason) = locate_toml_error(text, e.message(), e.span());
            Error::Config {
                path: path.to_path_buf(),
                key,
                reason,
            }
        })?;
        p.validate().map_err(|(key, reason)| Error::Config {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        })?;
        for f in [
            &mut p.models.detector,
            &mut p.models.recognizer,
            &mut p.store.path,
        ]
        .into_iter()
        .chain(p.store.key.as_mut())
        .chain(p.liveness.as_mut().and_then(|l| l.model.as_mut()))
        .chain(p.matching.threshold_file.as_mut())
        .chain(
            p.fleet
                .as_mut()
                .into_iter()
                .flat_map(|f| [&mut f.ca, &mut f.credentials]),
        ) {
            if f.is_relative() {
                *f = root.join(&*f);
            }
        }
        Ok(p)
    }

    /// The policy configuration for this board at `threshold` (the measured threshold the
    /// caller checked against the loaded recogniser; see `unlock::app::board_policy`).
    pub fn policy_config(&self, threshold: f32) -> PolicyConfig {
        let p = &self.policy;
        PolicyConfig {
            threshold,
            k: p.k as usize,
            n: p.n as usize,
            window: Duration::from_secs_f64(p.window_s),
            max_failures: p.max_failures,
            lockout_base: Duration::from_secs(p.lockout_s),
            lockout_max: Duration::from_secs(p.lockout_max_s),
            cooldown: Duration::from_secs_f64(p.cooldown_s),
        }
    }

    /// Range checks that serde's types cannot express. Returns the key and the reason.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        fn range<T: PartialOrd + std::fmt::Display>(
            key: &'static str,
            v: T,
            lo: T,
            hi: T,
        ) -> std::result::Result<(), (&'static str, String)> {
            if v < lo || v > hi {
                return Err((key, format!("{v} is not in {lo}..={hi}")));
            }
            Ok(())
        }
        fn non_empty(
            key: &'static str,
            s: &str,
        ) -> std::result::Result<(), (&'static str, String)> {
            if s.trim().is_empty() {
                return Err((key, "must not be empty".into()));
            }
            Ok(())
        }
        fn absolute(
            key: &'static str,
            p: &Path,
        ) -> std::result::Result<(), (&'static str, String)> {
            if !p.is_absolute() {
                return Err((key, format!("{:?} must be an absolute device path", p)));
            }
            Ok(())
        }

        non_empty("board.name", &self.board.name)?;
        let t = &self.board.target;
        let parts: Vec<&str> = t.split('-').collect();
        if parts.len() < 3
            || parts.iter().any(|p| p.is_empty())
            || !t
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err((
                "board.target",
                format!("{t:?} is not a target triple (e.g. \"aarch64-unknown-linux-gnu\")"),
            ));
        }

        absolute("camera.device", &self.camera.device)?;
        range("camera.width", self.camera.width, 16, 4096)?;
        range("camera.height", self.camera.height, 16, 4096)?;
        range("camera.fps", self.camera.fps, 1, 240)?;

        for (key, p) in [
            ("models.detector", &self.models.detector),
            ("models.recognizer", &self.models.recognizer),
        ] {
            non_empty(key, &p.to_string_lossy())?;
        }
        range("models.threads", self.models.threads, 1, 64)?;

        if let Some(th) = self.matching.threshold {
            if !(th.is_finite() && th > 0.0 && th < 1.0) {
                return Err((
                    "match.threshold",
                    format!("{th} is not in (0, 1) exclusive"),
                ));
            }
        }

        non_empty("store.path", &self.store.path.to_string_lossy())?;

        if let Some(g) = &self.gpio {
            absolute("gpio.chip", &g.chip)?;
            range("gpio.line", g.line, 0, 1023)?;
            range("gpio.open_ms", g.open_ms, 100, 30_000)?;
        }

        let p = &self.policy;
        range("policy.n", p.n, 1, 100)?;
        if p.k < 1 || p.k > p.n {
            return Err(("policy.k", format!("{} is not in 1..=n (n = {})", p.k, p.n)));
        }
        if !(p.window_s.is_finite() && p.window_s > 0.0 && p.window_s <= 60.0) {
            return Err((
                "policy.window_s",
                format!("{} is not in (0, 60]", p.window_s),
            ));
        }
        range("policy.max_failures", p.max_failures, 1, 100)?;
        range("policy.lockout_s", p.lockout_s, 1, 86_400)?;
        range(
            "policy.lockout_max_s",
            p.lockout_max_s,
            p.lockout_s,
            604_800,
        )?;
        if !(p.cooldown_s.is_finite() && p.cooldown_s >= 0.0 && p.cooldown_s <= 600.0) {
            return Err((
                "policy.cooldown_s",
                format!("{} is not in [0, 600]", p.cooldown_s),
            ));
        }

        if let Some(f) = &self.fleet {
            non_empty("fleet.db", &f.db)?;
            non_empty("fleet.ca", &f.ca.to_string_lossy())?;
            non_empty("fleet.credentials", &f.credentials.to_string_lossy())?;
            range("fleet.sync_interval_s", f.sync_interval_s, 1, 3600)?;
            range(
                "fleet.max_staleness_s",
                f.max_staleness_s,
                f.sync_interval_s,
                2_592_000,
            )?;
            range("fleet.round_timeout_s", f.round_timeout_s, 5, 3600)?;
        }

        range("enroll.frames", self.enroll.frames, 1, 50)?;
        range("enroll.min_face_px", self.enroll.min_face_px, 16, 2048)?;

        let Some(l) = &self.liveness else {
            return Err((
                "liveness",
                "missing: name the anti-spoofing model and threshold in [liveness], or write \
                 `enabled = false` there to run without it (photos can then open the lock)"
                    .into(),
            ));
        };
        if l.enabled {
            match &l.model {
                None => return Err(("liveness.model", "missing (required when enabled)".into())),
                Some(m) => non_empty("liveness.model", &m.to_string_lossy())?,
            }
            match l.threshold {
                None => {
                    return Err((
                        "liveness.threshold",
                        "missing (required when enabled)".into(),
                    ))
                }
                Some(t) if !(t.is_finite() && t > 0.0 && t < 1.0) => {
                    return Err((
                        "liveness.threshold",
                        format!("{t} is not in (0, 1) exclusive"),
                    ))
                }
                Some(_) => {}
            }
        }
        let f = l.frozen_floor;
        if !(f.is_finite() && (0.0..=32.0).contains(&f)) {
            return Err(("liveness.frozen_floor", format!("{f} is not in [0, 32]")));
        }
        // The frozen check compares the frames an unlock is made of: one frame cannot be
        // compared with anything, so a 1-frame unlock would let a still through.
        if f > 0.0 && p.k < 2 {
            return Err((
                "policy.k",
                format!(
                    "{} frame(s) cannot show a frozen input: k must be >= 2 while \
                     liveness.frozen_floor > 0",
                    p.k
                ),
            ));
        }
        Ok(())
    }
}

/// Turns a TOML/serde error into (`table.key`, one-line reason) using the error's span: the
/// line it points at is either `key = value` (under the nearest `[table]` above it) or a
/// `[table]` header (then a "missing/unknown field `x`" message supplies the key).
fn locate_toml_error(text: &str, message: &str, span: Option<Range<usize>>) -> (String, String) {
    let reason = message.trim().replace('\n', " ");
    let field = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|pre| {
            let rest = message.split_once(pre)?.1;
            Some(rest.split_once('`')?.0.to_string())
        });
    let Some(span) = span else {
        return (field.unwrap_or_else(|| "(file)".into()), reason);
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim();
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l.strip_prefix('[')?.split_once(']')?.0;
        Some(inner.trim().trim_matches(['[', ']']).trim().to_string())
    };
    let join = |table: Option<String>, key: String| match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key,
    };
    if let Some(table) = header(line) {
        // A table header: the problem is a field missing from (or unknown in) that table,
        // or the table itself.
        let key = match field {
            // `[extra]` itself is the unknown key: the field is the header's last part.
            Some(f) if table == f || table.ends_with(&format!(".{f}")) => table,
            Some(f) => join(Some(table), f),
            None => table,
        };
        return (key, reason);
    }
    let key = match (line.split_once('='), field) {
        (Some((k, _)), _) => k.trim().trim_matches('"').to_string(),
        (None, Some(f)) => f,
        (None, None) => {
            // A syntax error on a line that is neither `key = value` nor a header.
            let line_no = text[..line_start].matches('\n').count() + 1;
            return (format!("(line {line_no})"), reason);
        }
    };
    let table = text[..line_start].lines().rev().find_map(header);
    (join(table, key), reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "/opt/facegate";

    fn boards_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")
    }

    fn load_shipped(name: &str) -> BoardProfile {
        BoardProfile::load(&boards_dir().join(name), Path::new(ROOT))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A minimal valid profile; tests substitute one line at a time.
    const GOOD: &str = r#"
[board]
name = "test"
target = "aarch64-unknown-linux-gnu"

[camera]
device = "/dev/video0"
format = "yuyv"
width = 640
height = 480
fps = 30

[models]
detector = "models/det_500m.safetensors"
recognizer = "/abs/mobilefacenet_512.safetensors"
det_size = "320x256"
precision = "int8"
threads = 4

[store]
path = "var/templates.fgt"

[gpio]
chip = "/dev/gpiochip0"
line = 17
active_low = false
open_ms = 3000

[policy]
k = 3
n = 5
window_s = 2.0

[liveness]
model = "models/antispoof_print_replay_1.5_128.safetensors"
threshold = 0.5
"#;

    fn parse(text: &str) -> Result<BoardProfile> {
        BoardProfile::from_toml_str(text, Path::new("boards/t.toml"), Path::new(ROOT))
    }

    /// Asserts `text` is refused with exactly `key`, and the message names the file.
    fn refused(text: &str, key: &str) -> String {
        match parse(text) {
            Err(Error::Config {
                path,
                key: k,
                reason,
            }) => {
                assert_eq!(k, key, "reason: {reason}");
                assert_eq!(path, Path::new("boards/t.toml"));
                assert!(!reason.contains('\n'));
                reason
            }
            other => panic!("expected Config error for {key}, got {other:?}"),
        }
    }

    fn with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replacen(from, to, 1)
    }

    #[test]
    fn good_profile_parses_with_defaults_and_resolved_paths() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.camera.format, PixelFormat::Yuyv);
        assert_eq!(
            p.models.det_size,
            DetSize {
                width: 320,
                height: 256
            }
        );
        assert_eq!(p.models.precision, Precision::Int8);
        assert_eq!(
            p.models.detector,
            Path::new("/opt/facegate/models/det_500m.safetensors")
        );
        assert_eq!(
            p.models.recognizer,
            Path::new("/abs/mobilefacenet_512.safetensors")
        );
        assert_eq!(p.store.path, Path::new("/opt/facegate/var/templates.fgt"));
        assert_eq!(p.store.key, None);
        let with_key = GOOD.replace(
            "path = \"var/templates.fgt\"",
            "path = \"var/templates.fgt\"\nkey = \"keys/store.key\"",
        );
        assert_eq!(
            parse(&with_key).unwrap().store.key.as_deref(),
            Some(Path::new("/opt/facegate/keys/store.key"))
        );
        assert_eq!(p.matching.threshold, None);
        assert_eq!(p.policy.max_failures, 5);
        assert_eq!(p.policy.lockout_s, 30);
        assert_eq!(
            p.enroll,
            EnrollConfig {
                frames: 5,
                min_face_px: 80
            }
        );
        let g = p.gpio.clone().unwrap();
        assert_eq!(g.open_time(), Duration::from_secs(3));
        let pc = p.policy_config(0.42);
        assert_eq!(pc.threshold, 0.42);
        assert_eq!((pc.k, pc.n), (3, 5));
        assert_eq!(pc.window, Duration::from_secs(2));
        assert_eq!(pc.lockout_base, Duration::from_secs(30));
        assert_eq!(pc.lockout_max, Duration::from_secs(3600));
        assert_eq!(pc.cooldown, Duration::from_secs(5));
        pc.validate().unwrap();
    }

    #[test]
    fn match_table_is_read_and_its_threshold_file_resolved_against_the_root() {
        // Whether 0.55 may be used is decided against the measured file when the models
        // load (`unlock::threshold_file`): here only that the values are read.
        let text = format!(
            "{GOOD}\n[match]\nthreshold = 0.55\nthreshold_file = \"models/threshold-r.json\"\n"
        );
        let p = parse(&text).unwrap();
        assert_eq!(p.matching.threshold, Some(0.55));
        assert_eq!(
            p.matching.threshold_file.as_deref(),
            Some(Path::new("/opt/facegate/models/threshold-r.json"))
        );
        assert_eq!(parse(GOOD).unwrap().matching.threshold_file, None);
    }

    #[test]
    fn match_rule_defaults_to_best_and_unknown_rules_are_refused() {
        // No `[match]` table, and a table without the key: the best template, as before.
        assert_eq!(parse(GOOD).unwrap().matching.rule, Rule::Best);
        let table = |body: &str| format!("{GOOD}\n[match]\n{body}\n");
        assert_eq!(
            parse(&table("threshold = 0.55")).unwrap().matching.rule,
            Rule::Best
        );
        for (word, rule) in [
            ("best", Rule::Best),
            ("mean", Rule::Mean),
            ("top2", Rule::Top2),
        ] {
            let p = parse(&table(&format!("rule = \"{word}\""))).unwrap();
            assert_eq!(p.matching.rule, rule, "{word}");
        }
        for bad in ["\"max\"", "\"Mean\"", "\"\"", "1"] {
            let r = refused(&table(&format!("rule = {bad}")), "match.rule");
            assert!(r.contains("best") || r.contains("string"), "{bad}: {r}");
        }
    }

    #[test]
    fn every_shipped_profile_loads() {
        let mut names: Vec<String> = std::fs::read_dir(boards_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "jetson-orin-nano.toml",
                "rpi4.toml",
                "rpi5.toml",
                "x86-dev.toml"
            ]
        );
        for n in &names {
            let p = load_shipped(n);
            // Every board ships int8, with the threshold measured for that recogniser file.
            assert!(p
                .models
                .detector
                .ends_with("models/det_500m_int8.safetensors"));
            assert!(p
                .models
                .recognizer
                .ends_with("models/mobilefacenet_512_int8.safetensors"));
            assert_eq!(p.models.precision, Precision::Int8);
            assert_eq!(
                p.matching.threshold_file.as_deref(),
                Some(Path::new(
                    "/opt/facegate/models/threshold-mobilefacenet_512_int8.json"
                ))
            );
            assert_eq!(p.matching.threshold, None);
            // The mean template (README "Models", attempt-level errors).
            assert_eq!(p.matching.rule, Rule::Mean, "{n}");
            assert!(p.models.detector.is_absolute() && p.store.path.is_absolute());
            p.policy_config(0.5).validate().unwrap();
        }
        for n in &names {
            let l = load_shipped(n).liveness.unwrap();
            let (model, threshold) = l.network().unwrap_or_else(|| panic!("{n}: liveness off"));
            assert!(
                model.ends_with("models/antispoof_print_replay_1.5_128_int8.safetensors"),
                "{n}: {}",
                model.display()
            );
            assert!(model.is_absolute());
            assert!(threshold > 0.0 && threshold < 1.0);
            assert_eq!(l.combine, LiveCombine::Every);
        }
        let pi4 = load_shipped("rpi4.toml");
        assert_eq!(pi4.board.target, "aarch64-unknown-linux-gnu");
        let g = pi4.gpio.unwrap();
        assert_eq!(
            (g.chip.as_path(), g.line),
            (Path::new("/dev/gpiochip0"), 17)
        );
        assert_eq!(pi4.store.path, Path::new("/var/lib/facegate/templates.fgt"));
        let dev = load_shipped("x86-dev.toml");
        assert_eq!(dev.board.target, "x86_64-unknown-linux-gnu");
        assert!(dev.gpio.is_none());
        assert_eq!(
            dev.store.path,
            Path::new("/opt/facegate/target/facegate-dev/templates.fgt")
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let r = refused(&with("fps = 30", "fps = 30\nfsp = 30"), "camera.fsp");
        assert!(r.contains("unknown field"), "{r}");
        refused(&format!("{GOOD}\n[extra]\na = 1\n"), "extra");
        refused(&with("k = 3", "k = 3\nkk = 1"), "policy.kk");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        refused(&with("k = 3", "k = 6"), "policy.k");
        refused(&with("k = 3", "k = 0"), "policy.k");
        refused(&with("n = 5", "n = 0"), "policy.n");
        refused(&with("window_s = 2.0", "window_s = 0.0"), "policy.window_s");
        refused(&with("fps = 30", "fps = 0"), "camera.fps");
        refused(&with("threads = 4", "threads = 0"), "models.threads");
        refused(&with("open_ms = 3000", "open_ms = 5"), "gpio.open_ms");
        refused(&with("open_ms = 3000", "open_ms = 600000"), "gpio.open_ms");
        refused(&with("\"/dev/video0\"", "\"video0\""), "camera.device");
        refused(&with("\"/dev/gpiochip0\"", "\"gpiochip0\""), "gpio.chip");
        refused(
            &with("aarch64-unknown-linux-gnu", "aarch64"),
            "board.target",
        );
        refused(
            &format!("{GOOD}\n[match]\nthreshold = 1.5\n"),
            "match.threshold",
        );
        refused(
            &format!("{GOOD}\n[match]\nthreshold = 0.0\n"),
            "match.threshold",
        );
        refused(&format!("{GOOD}\n[enroll]\nframes = 0\n"), "enroll.frames");
        refused(
            &with(
                "window_s = 2.0",
                "window_s = 2.0\nlockout_s = 60\nlockout_max_s = 30",
            ),
            "policy.lockout_max_s",
        );
    }

    #[test]
    fn parse_errors_name_the_key() {
        let r = refused(&with("\"320x256\"", "\"320x250\""), "models.det_size");
        assert!(r.contains("multiple of 32"), "{r}");
        refused(&with("\"320x256\"", "\"320\""), "models.det_size");
        refused(&with("\"320x256\"", "\"0x256\""), "models.det_size");
        let r = refused(&with("\"yuyv\"", "\"rgb24\""), "camera.format");
        assert!(r.contains("rgb24"), "{r}");
        refused(&with("\"int8\"", "\"int4\""), "models.precision");
        refused(&with("width = 640", "width = \"640\""), "camera.width");
        refused(&with("line = 17", "line = -1"), "gpio.line");
        refused(
            &with("active_low = false", "active_low = 0"),
            "gpio.active_low",
        );
        let r = refused(&with("k = 3\n", ""), "policy.k");
        assert!(r.contains("missing"), "{r}");
    }

    #[test]
    fn liveness_table_is_required_unless_explicitly_off() {
        let p = parse(GOOD).unwrap();
        let l = p.liveness.unwrap();
        assert_eq!(
            l.network(),
            Some((
                Path::new("/opt/facegate/models/antispoof_print_replay_1.5_128.safetensors"),
                0.5
            ))
        );
        assert_eq!(l.combine, LiveCombine::Every);
        assert_eq!(l.frozen_floor, crate::unlock::frozen::DEFAULT_FROZEN_FLOOR);

        let (head, _) = GOOD.split_once("[liveness]").unwrap();
        let r = refused(head, "liveness");
        assert!(r.contains("enabled = false"), "{r}");
        let off = parse(&format!("{head}[liveness]\nenabled = false\n")).unwrap();
        let l = off.liveness.unwrap();
        assert!(!l.enabled);
        assert_eq!(l.network(), None);

        refused(
            &format!("{head}[liveness]\nthreshold = 0.5\n"),
            "liveness.model",
        );
        refused(
            &format!("{head}[liveness]\nmodel = \"m.safetensors\"\n"),
            "liveness.threshold",
        );
        refused(
            &with("threshold = 0.5", "threshold = 1.0"),
            "liveness.threshold",
        );
        refused(
            &with("threshold = 0.5", "threshold = 0.5\ncombine = \"mean\""),
            "liveness.combine",
        );
        refused(
            &with("threshold = 0.5", "threshold = 0.5\nfrozen_floor = -1.0"),
            "liveness.frozen_floor",
        );
        refused(
            &with("threshold = 0.5", "threshold = 0.5\nthresold = 0.5"),
            "liveness.thresold",
        );
        // One frame cannot show a frozen input.
        refused(&with("k = 3", "k = 1"), "policy.k");
        parse(
            &with("threshold = 0.5", "threshold = 0.5\nfrozen_floor = 0.0")
                .replace("k = 3", "k = 1"),
        )
        .unwrap();
    }

    #[test]
    fn syntax_error_and_missing_file_are_errors_not_panics() {
        let e = parse("[board]\nname = \"x\"\n[camera\nfps = 1").unwrap_err();
        assert!(
            matches!(e, Error::Config { ref key, .. } if key == "(line 3)"),
            "{e}"
        );
        let missing_table = GOOD.replace("[policy]\nk = 3\nn = 5\nwindow_s = 2.0\n", "");
        refused(&missing_table, "policy");
        assert!(matches!(parse(""), Err(Error::Config { .. })));
        let e =
            BoardProfile::load(Path::new("/nonexistent/board.toml"), Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/board.toml"));
    }
}
