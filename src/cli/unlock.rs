//! `facegate enroll | users | unlock | demo | threshold`: argument parsing and printing only;
//! the work is done by `crate::unlock::{app, session, threshold}`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::board::{self, BoardProfile};
use crate::camera::{self, CaptureSettings, FrameSource, ReplayOptions, SourceSpec};
use crate::cli::out::{logln, outln};
use crate::unlock::actuator::{Actuator, InjectedFailure, LogActuator};
use crate::unlock::app::{self, Models};
use crate::unlock::audit_outbox::{self, AuditTrail};
use crate::unlock::embed_cache::{self, EmbedCache};
use crate::unlock::policy::Policy;
use crate::unlock::policy_state::{Found, StateFile};
use crate::unlock::session::{self, LoopConfig, PolicyTime, StopReason};
use crate::unlock::store::{self, TemplateStore};
use crate::unlock::threshold;
use crate::unlock::threshold_file::{self, MeasuredThreshold};

/// Board selection shared by the commands.
#[derive(Args, Debug, Clone)]
pub struct BoardArg {
    /// Board profile (boards/NAME.toml); it names the models, the threshold and the store.
    #[arg(long)]
    pub board: PathBuf,
    /// Root that relative paths of the profile are resolved against (default: FACEGATE_ROOT,
    /// else the parent of a `boards/` folder holding the profile, else the profile's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

impl BoardArg {
    pub(crate) fn load(&self) -> Result<BoardProfile> {
        let root = self
            .root
            .clone()
            .unwrap_or_else(|| app::default_root(&self.board));
        Ok(BoardProfile::load(&self.board, &root)?)
    }
}

#[derive(Args, Debug, Clone)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub board: BoardArg,
    /// User name (letters, digits, `_ - .`).
    #[arg(long)]
    pub user: String,
    /// Where the faces come from: v4l2:/dev/videoN, image:FILE, images:DIR, mjpeg:PATH,
    /// yuyv:PATH@WxH (default: the board's camera).
    #[arg(long)]
    pub source: Option<String>,
    /// Frames to keep (default: the board's enroll.frames).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Template store (default: the board's store.path).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Add to the user's existing templates instead of replacing them.
    #[arg(long)]
    pub append: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UsersArgs {
    #[command(flatten)]
    pub board: BoardArg,
    /// Template store (default: the board's store.path).
    #[arg(long)]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub action: UsersAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum UsersAction {
    /// List enrolled users and their template counts.
    List,
    /// Remove a user and all their templates.
    Remove { name: String },
}

#[derive(Args, Debug, Clone)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub board: BoardArg,
    /// Frame source (default: the board's camera). Replays drive the log-only actuator.
    #[arg(long)]
    pub source: Option<String>,
    /// Stop at the first unlock (exit 0), or exit 1 when the source ends without one.
    #[arg(long)]
    pub once: bool,
    /// Template store (default: the board's store.path).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Pace a replay like a live camera at the board's fps (dropping stale frames) instead
    /// of processing every frame.
    #[arg(long)]
    pub realtime: bool,
    /// Pace a replay like a live camera at N frames per second (as --realtime, at N fps).
    #[arg(long, value_name = "N")]
    pub fps: Option<f64>,
    /// Repeat a replay from its first frame after the last one instead of ending.
    #[arg(long = "loop")]
    pub looped: bool,
    /// Engine threads (default: the board profile's).
    #[arg(long)]
    pub threads: Option<usize>,
    /// For tests (hidden from --help): makes the log-only actuator fail every unlock as a
    /// lock would whose OPEN fails and is locked again (`open`), or whose LOCKED fails every
    /// retry after the pulse (`relock`), so the command's reaction can be tested end to end
    /// (`tests/unlock_lock_failure.rs`). Refused with a GPIO lock: it can never touch a door.
    #[arg(long, hide = true, value_enum, value_name = "KIND")]
    pub inject_actuator_failure: Option<ActuatorFailureArg>,
}

/// The failures `--inject-actuator-failure` makes the log-only actuator simulate.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActuatorFailureArg {
    /// Driving OPEN fails; LOCKED is driven again (the loop goes on).
    Open,
    /// LOCKED fails every retry after the pulse (the loop stops, exit 74).
    Relock,
}

impl From<ActuatorFailureArg> for InjectedFailure {
    fn from(a: ActuatorFailureArg) -> Self {
        match a {
            ActuatorFailureArg::Open => InjectedFailure::Open,
            ActuatorFailureArg::Relock => InjectedFailure::Relock,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Folder of the ONNX files (default: <shared>/models/onnx).
    #[arg(long)]
    pub onnx_dir: Option<PathBuf>,
    /// Shared data folder (default: FACEGATE_SHARED, else <root>/../shared).
    #[arg(long)]
    pub shared: Option<PathBuf>,
    /// Project root (default: the current directory, as with `cargo run`).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Detector input size for the 640x360 clips.
    #[arg(long, default_value = "320x192")]
    pub det_size: String,
    /// Precision of the models to convert and run: int8 (what the boards ship) or f32 (the
    /// reference).
    #[arg(long, default_value = "int8")]
    pub precision: crate::format::Precision,
    /// Match threshold (default: the threshold file measured for the recogniser,
    /// models/threshold-<recogniser stem>.json).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Print only the summary lines, not every frame.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ThresholdArgs {
    /// Detector model (.safetensors or .onnx).
    #[arg(long)]
    pub det: PathBuf,
    /// Recogniser model (.safetensors or .onnx).
    #[arg(long)]
    pub rec: PathBuf,
    /// The threshold file to write: the report keyed by the digests of the recogniser and
    /// detector files (default: threshold-<recogniser stem>.json beside the recogniser; with
    /// --limit nothing is written unless this is given).
    #[arg(long)]
    pub out_json: Option<PathBuf>,
    /// Embedding cache folder (keyed by the models' digests and each photo's bytes).
    #[arg(long, default_value = "models/cache")]
    pub cache: PathBuf,
    /// Embed everything again (neither read nor write the cache).
    #[arg(long)]
    pub no_cache: bool,
    /// Use about N images (whole identities) instead of all.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Target false-accept rate.
    #[arg(long, default_value_t = 1e-5)]
    pub far: f64,
    /// Detector input size (the boards run 320x256).
    #[arg(long, default_value = "320x256")]
    pub det_size: String,
    /// LFW folder (default: <shared>/data/faces/lfw).
    #[arg(long)]
    pub lfw: Option<PathBuf>,
    /// CelebA-wild folder (default: <shared>/data/faces/celeba_wild).
    #[arg(long)]
    pub celeba: Option<PathBuf>,
    /// Store the measured threshold in this converted recogniser file (atomic rewrite). This
    /// changes the file and so its digest: the threshold file no longer matches it.
    #[arg(long)]
    pub write_into: Option<PathBuf>,
}

pub(crate) fn shared_default(root: &Path) -> PathBuf {
    std::env::var_os("FACEGATE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"))
}

fn capture_settings(b: &BoardProfile) -> CaptureSettings {
    CaptureSettings {
        width: b.camera.width,
        height: b.camera.height,
        fps: b.camera.fps,
        format: match b.camera.format {
            board::PixelFormat::Yuyv => camera::PixelFormat::Yuyv,
            board::PixelFormat::Mjpeg => camera::PixelFormat::Mjpeg,
            board::PixelFormat::Grey => camera::PixelFormat::Grey,
        },
    }
}

fn source_spec(arg: &Option<String>, b: &BoardProfile) -> Result<SourceSpec> {
    Ok(match arg {
        Some(s) => s.parse()?,
        None => SourceSpec::V4l2 {
            device: b.camera.device.clone(),
        },
    })
}

fn load_models(b: &BoardProfile, threads: Option<usize>, liveness: bool) -> Result<Models> {
    app::load_board_models(b, threads, liveness).context("loading the board's models")
}

/// The models an enrolment needs (no liveness: the enrolling person is present, attended),
/// refused unless the recogniser's threshold was measured (templates are only worth enrolling
/// for such a recogniser). Shared by `enroll` and `fleet enroll`.
pub fn enrolment_models(b: &BoardProfile) -> Result<Models> {
    let models = load_models(b, None, false)?;
    app::board_policy(b, &models)?;
    Ok(models)
}

/// Captures `user`'s templates from `source` (default: the board's camera) through the
/// board's quality gates, printing each frame's verdict. Shared by `enroll` and `fleet
/// enroll`, so the desk enrols exactly as a door does.
pub fn capture_templates(
    b: &BoardProfile,
    models: &Models,
    user: &str,
    source: &Option<String>,
    frames: Option<usize>,
) -> Result<Vec<Vec<f32>>> {
    crate::unlock::store::validate_user_name(user)?;
    // The frames are collected into a scratch store (its checks: dimension, finite, unit).
    let mut store = TemplateStore::new(models.recognizer_id.clone(), models.dim)?;
    let spec = source_spec(source, b)?;
    let live = matches!(spec, SourceSpec::V4l2 { .. });
    let mut source: Box<dyn FrameSource> = if live {
        camera::open(&spec, &ReplayOptions::default(), &capture_settings(b))?
    } else {
        Box::new(app::open_replay(&spec)?)
    };
    let wanted = frames.unwrap_or(b.enroll.frames as usize).max(1);
    let gates = app::enrol_gates(b);
    // A live camera gets a bounded number of tries (about 20 s at 30 fps per wanted frame).
    let max_scan = live.then_some(wanted as u64 * 600);
    let stop = session::stop_flag()?;
    logln!(
        "enrolling {user} from {spec}: want {wanted} frame(s) with one face >= {} px, sharpness >= {}, frontal",
        gates.min_face_px, gates.min_sharpness
    );
    let (cap, n) = app::enrol_from_source(
        &mut store,
        user,
        &mut source,
        &models.pipeline,
        &gates,
        wanted,
        max_scan,
        stop,
        &mut |seq, r| {
            let s = seq.map_or("-".into(), |s| s.to_string());
            match r {
                Ok(a) => logln!(
                    "frame {s}: kept (face {:.0} px, sharpness {:.0})",
                    a.face_width,
                    a.sharpness
                ),
                Err(rej) => logln!("frame {s}: skipped: {rej}"),
            }
        },
    )?;
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("enrolment of {user} interrupted: nothing stored");
    }
    if n < wanted {
        logln!(
            "note: only {n} of the {wanted} wanted frames passed the gates ({} looked at{}); \
             enrolled from what passed",
            cap.scanned,
            if cap.source_ended {
                ", the source has no more"
            } else {
                ""
            }
        );
    }
    Ok(cap.accepted.iter().map(|a| a.embedding.clone()).collect())
}

/// `facegate enroll`
pub fn enroll(args: &EnrollArgs) -> Result<ExitCode> {
    let b = args.board.load()?;
    crate::unlock::store::validate_user_name(&args.user)?;
    let files = app::StoreFiles::for_board(&b, args.store.as_deref());
    let store_path = files.store.clone();
    let models = enrolment_models(&b)?;
    // Refuse a corrupt store or one of another model before looking at any frame (it is
    // loaded again, under the writer lock, when the templates are added).
    if store::exists(&store_path)? {
        let key = app::store_key(&files)?;
        TemplateStore::load_for_model(&store_path, &key, &models.recognizer_id, models.dim)?;
    }
    let templates = capture_templates(&b, &models, &args.user, &args.source, args.frames)?;
    let n = templates.len();
    // Read-modify-write under the store's lock: an enrolment or removal made meanwhile by
    // another process is kept, not overwritten by a copy read before the capture.
    app::update_store(&files, Some((&models.recognizer_id, models.dim)), |s| {
        if !args.append {
            s.remove_user(&args.user)?;
        }
        s.add_templates(&args.user, templates)
    })?;
    logln!(
        "enrolled {} with {n} template(s) into {}",
        args.user,
        store_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `facegate users`
pub fn users(args: &UsersArgs) -> Result<ExitCode> {
    let b = args.board.load()?;
    let files = app::StoreFiles::for_board(&b, args.store.as_deref());
    let path = files.store.clone();
    match &args.action {
        UsersAction::List => {
            if !store::exists(&path)? {
                return Err(store::missing(&path).into());
            }
            let store = TemplateStore::load(&path, &app::store_key(&files)?)?;
            outln!(
                "{}: model {}, {}-d, {} user(s)",
                path.display(),
                store.model_id(),
                store.dim(),
                store.user_count()
            );
            for (u, n) in store.users() {
                outln!("{u}\t{n} template(s)");
            }
        }
        UsersAction::Remove { name } => {
            // Under the store's lock, so a concurrent enrolment cannot bring the user back.
            let removed = app::update_store(&files, None, |s| {
                if s.remove_user(name)? {
                    Ok(())
                } else {
                    Err(crate::error::Error::Msg(format!(
                        "{}: no user {name:?}",
                        path.display()
                    )))
                }
            });
            removed?;
            outln!("removed {name} from {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The GPIO lock for a live camera on a board with `[gpio]`, else the log-only actuator,
/// which `inject` (tests only) makes fail; `inject` with the GPIO lock is refused before the
/// line is opened.
fn make_actuator(
    b: &BoardProfile,
    replay: bool,
    inject: Option<InjectedFailure>,
) -> Result<Box<dyn Actuator>> {
    let mut log = match (&b.gpio, replay) {
        (Some(g), false) => {
            if inject.is_some() {
                bail!(
                    "--inject-actuator-failure is for tests with the log-only actuator (a replay, \
                     or a board without [gpio]); this run would drive the GPIO lock"
                );
            }
            return open_gpio(g);
        }
        (None, _) => {
            log::info!("board has no [gpio]: log-only actuator");
            LogActuator::printing()
        }
        (Some(_), true) => {
            log::info!("replay source: log-only actuator (the GPIO lock is not touched)");
            LogActuator::printing()
        }
    };
    if let Some(f) = inject {
        log::warn!("log-only actuator: every unlock fails as injected ({f:?})");
    }
    log.set_failure(inject);
    Ok(Box::new(log))
}

#[cfg(all(feature = "gpio", target_os = "linux"))]
fn open_gpio(g: &board::GpioConfig) -> Result<Box<dyn Actuator>> {
    Ok(Box::new(crate::unlock::actuator::gpio::open_lock(
        &g.chip,
        g.line,
        g.active_low,
        g.open_time(),
    )?))
}

#[cfg(not(all(feature = "gpio", target_os = "linux")))]
fn open_gpio(_g: &board::GpioConfig) -> Result<Box<dyn Actuator>> {
    bail!("the board has a [gpio] lock but this build has no GPIO support (feature `gpio`)")
}

/// Exit status of `facegate unlock` when the lock could not be driven LOCKED (every retry
/// failed, after a pulse or at start-up), so its state is unknown. Distinct from 1 (any other
/// error), 2 (usage) and 75 (`facegate sync`'s hung round) so that the journal and
/// `systemctl status` show what happened. The unit's `Restart=on-failure` starts the
/// process again, and the new process drives LOCKED before its first frame (`Lock::new`),
/// refusing to start (this status again) if it still cannot. EX_IOERR of sysexits.h: the
/// lock's output line could not be driven.
pub const EXIT_LOCK_STATE_UNKNOWN: u8 = 74;

/// The exit status for a command that failed with `e`: [`EXIT_LOCK_STATE_UNKNOWN`] when the
/// cause is [`crate::error::Error::LockStateUnknown`], else 1.
pub fn failure_status(e: &anyhow::Error) -> ExitCode {
    ExitCode::from(failure_code(e))
}

/// [`failure_status`] as a number (`ExitCode` cannot be compared in tests).
fn failure_code(e: &anyhow::Error) -> u8 {
    let unknown = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::error::Error>(),
            Some(crate::error::Error::LockStateUnknown(_))
        )
    });
    if unknown {
        EXIT_LOCK_STATE_UNKNOWN
    } else {
        1
    }
}

/// The error `facegate unlock` ends with when the loop stopped on a lock it could not drive
/// LOCKED: one line saying so, the frame, whether the loop's last try to drive LOCKED worked,
/// and the actuator's own message as the cause (which [`failure_status`] maps to
/// [`EXIT_LOCK_STATE_UNKNOWN`]).
fn lock_state_unknown(f: &session::LockFailure) -> anyhow::Error {
    let last = match &f.last_try {
        Ok(()) => "a last try to drive LOCKED before exiting succeeded".to_string(),
        Err(e) => format!("a last try to drive LOCKED before exiting failed too: {e}"),
    };
    let when = match f.seq {
        Some(s) => format!("after frame {s}"),
        None => "before its first frame".to_string(),
    };
    anyhow::Error::new(crate::error::Error::LockStateUnknown(f.error.clone())).context(format!(
        "unlock stopped {when}: the lock could not be driven LOCKED and its state is unknown ({last}); exit status {EXIT_LOCK_STATE_UNKNOWN}"
    ))
}

/// `facegate unlock`
pub fn unlock(args: &UnlockArgs) -> Result<ExitCode> {
    let b = args.board.load()?;
    let (live_gate, live_warning) = app::board_live_gate(&b);
    if let Some(w) = &live_warning {
        // On every start, to the log and to the terminal.
        log::warn!("{w}");
        eprintln!("{w}");
    }
    let files = app::StoreFiles::for_board(&b, args.store.as_deref());
    let store_path = files.store.clone();
    let models = load_models(&b, args.threads, true)?;
    // Fail closed: a threshold not measured for this recogniser stops here, as does a
    // missing, corrupt or foreign store (below).
    let policy_cfg = app::board_policy(&b, &models)?;
    // Fail closed: a missing, corrupt, open-mode, symlinked or foreign store stops here (the
    // store is checked before its key so that "no store" reads as such).
    if !store::exists(&store_path)? {
        return Err(store::missing(&store_path).into());
    }
    let key = app::store_key(&files)?;
    let mut store = match &b.fleet {
        None => app::load_unlock_store(&store_path, &key, &models.recognizer_id, models.dim)?,
        // A fleet door: the store is whatever `facegate sync` last pulled (empty when nobody
        // is granted this door: then everyone is refused), and it is only used while the last
        // good sync is at most max_staleness_s old.
        Some(f) => crate::unlock::live_store::LiveStore::watch(
            &store_path,
            &key,
            &models.recognizer_id,
            models.dim,
        )?
        .require_fresh(
            &crate::unlock::sync_state::default_path(&store_path),
            &key,
            std::time::Duration::from_secs(f.max_staleness_s),
        ),
    };
    // The failures and lockout of previous runs (a missing or corrupt record locks out).
    let worst = Policy::new(policy_cfg.clone())?.worst_case();
    let mut state = StateFile::open(&files.state, &key, worst)?;
    match state.found() {
        Found::Valid => {}
        Found::ClockWentBack => logln!(
            "policy state {}: the clock is earlier than its last write: a lockout in progress restarts in full",
            files.state.display()
        ),
        Found::Unusable(r) => logln!(
            "policy state {}: {r}: locked out for {:?} (a missing or corrupt record is not a fresh start)",
            files.state.display(),
            policy_cfg.lockout_max
        ),
    }
    let mut policy = Policy::resume(policy_cfg.clone(), state.restored())?;
    let spec = source_spec(&args.source, &b)?;
    let replay = !matches!(spec, SourceSpec::V4l2 { .. });
    let mut actuator = make_actuator(&b, replay, args.inject_actuator_failure.map(Into::into))?;
    let fps = f64::from(b.camera.fps);
    let (mut source, time): (Box<dyn FrameSource>, PolicyTime) = if !replay {
        (
            camera::open(&spec, &ReplayOptions::default(), &capture_settings(&b))?,
            PolicyTime::Wall,
        )
    } else {
        // --fps N or --realtime: paced like a camera, policy on the wall clock; otherwise
        // every frame as fast as it goes, policy time from the board's frame rate.
        let paced = args.fps.or(args.realtime.then_some(fps));
        let opts = ReplayOptions {
            fps: paced,
            looped: args.looped,
        };
        let time = match paced {
            Some(_) => PolicyTime::Wall,
            None => PolicyTime::FrameRate(fps),
        };
        (camera::open(&spec, &opts, &capture_settings(&b))?, time)
    };
    let open_time = b
        .gpio
        .as_ref()
        .map(|g| g.open_time())
        .unwrap_or(std::time::Duration::from_secs(3));
    let cfg = LoopConfig {
        open_time,
        once: args.once,
        time,
        min_interval: LoopConfig::interval_for(&policy_cfg),
        liveness: live_gate,
        rule: b.matching.rule,
        ..LoopConfig::default()
    };
    let stop = session::stop_flag()?;
    logln!(
        "unlock: {} user(s) in {}, threshold {:.3} on the {} template(s), {} of {} frames within {:?}, liveness {}, frozen floor {:.2}, source {spec}, {}",
        store.current().map_or(0, |s| s.user_count()),
        store_path.display(),
        policy_cfg.threshold,
        b.matching.rule,
        policy_cfg.k,
        policy_cfg.n,
        policy_cfg.window,
        match (live_gate.threshold, &models.liveness) {
            (Some(t), Some(m)) => format!("{} at live >= {t:.3}", m.path().display()),
            _ => "OFF".into(),
        },
        live_gate.frozen_floor,
        actuator.describe()
    );
    // A fleet door records its decisions for the fleet's audit (delivered by `facegate sync`).
    let mut audit = match &b.fleet {
        Some(_) => Some(AuditTrail::new(&audit_outbox::default_path(&store_path))?),
        None => None,
    };
    let out = session::run_loop_live(
        &mut source,
        &models,
        &mut store,
        Some(&mut state),
        audit.as_mut(),
        &mut policy,
        actuator.as_mut(),
        &cfg,
        stop,
        &mut |r| logln!("{r}"),
    );
    drop(actuator);
    logln!(
        "stopped ({:?}): {} frames, {} unlock(s), {} spoof, {} frozen, {} error(s), {} actuator failure(s)",
        out.stop,
        out.frames,
        out.unlocks.len(),
        out.spoofs,
        out.frozen,
        out.errors,
        out.actuator_failures
    );
    if let (Some(p50), Some(p90)) = (out.latency_quantile_ms(0.5), out.latency_quantile_ms(0.9)) {
        logln!(
            "frame -> decision over {} frames with a face: p50 {p50:.1} ms, p90 {p90:.1} ms (decode {:.1} ms mean); peak RSS {}",
            out.face_frames,
            out.mean_face_timings.capture_ms,
            crate::cli::bench::peak_rss_mb()
                .map(|m| format!("{m:.1} MB"))
                .unwrap_or_else(|| "unknown".into())
        );
    }
    if let (Some(p50), Some(p90)) = (out.live_quantile_ms(0.5), out.live_quantile_ms(0.9)) {
        logln!(
            "liveness over {} recognised frames: p50 {p50:.1} ms, p90 {p90:.1} ms",
            out.live_latencies_ms.len()
        );
    }
    if let Some(w) = &live_warning {
        eprintln!("{w}");
    }
    if let Some(f) = &out.lock_failure {
        return Err(lock_state_unknown(f));
    }
    Ok(match (args.once, out.stop) {
        (true, StopReason::Unlocked) => ExitCode::SUCCESS,
        (true, _) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

/// `facegate demo`
pub fn demo(args: &DemoArgs) -> Result<ExitCode> {
    let root = match &args.root {
        Some(r) => r.clone(),
        None => std::env::current_dir()?,
    };
    let shared = args.shared.clone().unwrap_or_else(|| shared_default(&root));
    let onnx_dir = args
        .onnx_dir
        .clone()
        .unwrap_or_else(|| shared.join("models/onnx"));
    let det_size = crate::pipeline::parse_size(&args.det_size)?;
    let opts = app::DemoOptions {
        models_dir: root.join("models"),
        onnx_dir,
        shared,
        work_dir: root.join("target/demo"),
        det_size,
        precision: args.precision,
        threshold: args.threshold,
        frames: 5,
    };
    let quiet = args.quiet;
    let cases = app::run_demo(&opts, &mut |l| logln!("{l}"), &mut |name, r| {
        if !quiet {
            logln!("[{name}] {r}");
        }
    })?;
    let ok = cases.iter().all(|c| c.passed);
    logln!(
        "demo {}",
        if ok {
            "PASSED: hamilton unlocked with liveness on, webcam_talking stayed locked, \
             the owner's still stayed locked (frozen), the spoof photos stayed locked (liveness)"
        } else {
            "FAILED"
        }
    );
    for c in cases.iter().filter(|c| !c.passed) {
        logln!("  {} went NOT as expected", c.name);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Progress of a long pass over photos on stderr: one line per 5 s (redrawn in place on a
/// terminal) with the count, how many came from the cache and the time left.
pub(crate) struct Progress {
    stage: String,
    start: std::time::Instant,
    last: f64,
    tty: bool,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Progress {
            stage: String::new(),
            start: std::time::Instant::now(),
            last: 0.0,
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// `done` of `total` photos `stage` (`cached` of them from the cache); a new `stage`
    /// restarts the clock the time left is estimated from.
    pub(crate) fn update(&mut self, stage: &str, done: usize, total: usize, cached: usize) {
        if stage != self.stage {
            self.stage = stage.to_string();
            self.start = std::time::Instant::now();
            self.last = 0.0;
        }
        let el = self.start.elapsed().as_secs_f64();
        if done != total && el - self.last < 5.0 {
            return;
        }
        self.last = el;
        let left = if done > cached {
            el / (done - cached) as f64 * (total - done) as f64
        } else {
            0.0
        };
        let line = format!(
            "  {stage} {done}/{total} ({cached} from the cache), {el:.0} s, ~{left:.0} s left"
        );
        if self.tty {
            eprint!("\r{line}");
            if done == total {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

/// `facegate threshold`
pub fn threshold(args: &ThresholdArgs) -> Result<ExitCode> {
    let root = std::env::current_dir()?;
    let shared = shared_default(&root);
    let lfw = args
        .lfw
        .clone()
        .unwrap_or_else(|| shared.join("data/faces/lfw"));
    let celeba = args
        .celeba
        .clone()
        .unwrap_or_else(|| shared.join("data/faces/celeba_wild"));
    let mut images = threshold::list_identity_folders(&lfw, "lfw")?;
    images.extend(threshold::list_identity_folders(&celeba, "celeba")?);
    let images = threshold::subset(images, args.limit);
    let det_size = crate::pipeline::parse_size(&args.det_size)?;
    let models = app::load_models(&args.det, &args.rec, det_size, &Default::default())?;
    let out_json = match (&args.out_json, args.limit) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some(threshold_file::default_path(&args.rec)),
        (None, Some(_)) => None,
    };
    let key = embed_cache::cache_key(&models.detector_id, &models.recognizer_id, det_size);
    let mut cache = (!args.no_cache).then(|| EmbedCache::open(&args.cache, &key, models.dim));
    eprintln!(
        "threshold: {} images at {}x{}, {} in the cache {}",
        images.len(),
        det_size.0,
        det_size.1,
        cache.as_ref().map_or(0, |c| c.len()),
        if args.no_cache {
            "(not used)".to_string()
        } else {
            EmbedCache::path_for(&args.cache, &key)
                .display()
                .to_string()
        }
    );
    let mut progress = Progress::new();
    let result = threshold::measure_cached(
        &models.pipeline,
        &images,
        args.far,
        cache.as_mut(),
        &mut |i, n, cached| progress.update("embedded", i, n, cached),
    );
    // Keep what was embedded even when the measurement failed afterwards.
    if let Some(c) = cache.as_mut() {
        if let Err(e) = c.save() {
            eprintln!("warning: embedding cache not saved: {e}");
        }
    }
    let mut report = result?;
    report.detector = args.det.display().to_string();
    report.recognizer = args.rec.display().to_string();
    outln!(
        "threshold {:.4} at FAR {:e} (reached {:.2e}) over {} impostor pairs; FRR {:.4} over {} genuine pairs; \
         {} images embedded, {} without a face, {} unreadable, {} identities, {:.0} s",
        report.threshold,
        report.far_target,
        report.far,
        report.impostor_pairs,
        report.frr,
        report.genuine_pairs,
        report.embedded,
        report.skipped_no_face,
        report.unreadable,
        report.identities,
        report.seconds
    );
    if let Some(p) = &out_json {
        let m = MeasuredThreshold {
            recognizer_digest: models.recognizer_id.clone(),
            detector_digest: models.detector_id.clone(),
            det_size: report.det_size,
            threshold: report.threshold,
            far_target: report.far_target,
            far: report.far,
            frr: report.frr,
            impostor_pairs: report.impostor_pairs,
            genuine_pairs: report.genuine_pairs,
            images: report.images,
            embedded: report.embedded,
            identities: report.identities,
            recognizer: report.recognizer.clone(),
            detector: report.detector.clone(),
            data: format!(
                "{} + {}{}, identity = data set + folder name",
                lfw.display(),
                celeba.display(),
                args.limit
                    .map(|l| format!(" (subset of about {l} images)"))
                    .unwrap_or_default()
            ),
            command: threshold_file::measure_command(&args.det, &args.rec, det_size, p)
                + &format!(" --far {:e}", args.far),
        };
        let json = serde_json::to_string_pretty(&m)? + "\n";
        // Atomic like the model files: a board never reads a half-written threshold.
        crate::format::write_atomically(p, json.as_bytes())?;
        outln!(
            "wrote {} (threshold {:.4} for recogniser {})",
            p.display(),
            m.threshold,
            m.recognizer_digest
        );
    }
    if let Some(m) = &args.write_into {
        threshold::write_into_model(m, report.threshold)?;
        outln!(
            "stored match_threshold {:.4} in {}",
            report.threshold,
            m.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn only_an_unknown_lock_state_gets_its_own_exit_status() {
        let f = session::LockFailure {
            seq: Some(7),
            error:
                "gpio pin: driving LOCKED failed 3 times (last error: x); the lock state is unknown"
                    .into(),
            last_try: Err("actuator: gpio pin: driving LOCKED failed 3 times".into()),
        };
        let e = lock_state_unknown(&f);
        assert_eq!(failure_code(&e), EXIT_LOCK_STATE_UNKNOWN);
        let line = format!("{e:#}");
        assert!(line.contains("after frame 7"), "{line}");
        assert!(
            line.contains("could not be driven LOCKED and its state is unknown"),
            "{line}"
        );
        assert!(line.contains("failed too"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        let before = lock_state_unknown(&session::LockFailure { seq: None, ..f });
        assert!(format!("{before:#}").contains("before its first frame"));
        // Also when it comes straight from start-up (`Lock::new`) through `?`.
        let start: anyhow::Error = Error::LockStateUnknown("x".into()).into();
        assert_eq!(failure_code(&start), EXIT_LOCK_STATE_UNKNOWN);
        // An OPEN failure, or any other error, is the plain failure status.
        let open: anyhow::Error = Error::Actuator("driving OPEN failed".into()).into();
        assert_eq!(failure_code(&open), 1);
        assert_eq!(failure_code(&anyhow::anyhow!("no store")), 1);
    }
}
