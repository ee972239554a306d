//! Wiring for the `enroll`, `users`, `unlock` and `demo` commands: loading the models a board
//! names (and the recogniser's identity that binds the template store to it), choosing the
//! threshold and the actuator, enrolling from a folder, and the demo's replays (owner, stranger, the owner's still, the spoof photos).
//!
//! Why here and not in the binary: integration tests run exactly this code (binary-only
//! modules cannot be reached from `tests/`), and the CLI stays a thin clap layer.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::board::BoardProfile;
use crate::camera::{ReplayOptions, ReplaySource, SourceSpec, SystemClock};
use crate::detect::Face;
use crate::error::{Error, Result};
use crate::format::{ModelFile, Precision};
use crate::models::mobilefacenet::MobileFaceNet;
use crate::models::scrfd::Scrfd;
use crate::models::LoadOptions;
use crate::pipeline::{Detector, Embedder, Pipeline};
use crate::unlock::actuator::{Actuator, LogActuator};
use crate::unlock::live_store::LiveStore;
use crate::unlock::policy::{Policy, PolicyConfig};
use crate::unlock::seal::{self, DeviceKey};
use crate::unlock::securefs::{self, FileLock};
use crate::unlock::session::{
    collect_enrolment, enrol_into, run_loop, EnrolmentCapture, FaceEngine, FrameReport,
    FrameVerdict, LiveGate, LoopConfig, LoopOutcome, PolicyTime, QualityGates,
};
use crate::unlock::store::TemplateStore;
use crate::unlock::threshold_file::{self, MeasuredThreshold};
use crate::unlock::{policy_state, store};

/// The anti-spoofing network as the loop sees it: the live probability of a face.
pub struct LiveModel {
    inner: crate::liveness::Liveness,
    path: PathBuf,
}

impl LiveModel {
    /// Loads the converted anti-spoofing model at `path` (`opts`: threads and precision).
    /// It must name class 0 `live`: the loop's threshold applies to that probability.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<LiveModel> {
        let inner = crate::liveness::Liveness::load_with(path, opts)?;
        if inner.class_names().first().map(String::as_str) != Some("live") {
            return Err(Error::Model {
                path: path.to_path_buf(),
                reason: format!(
                    "class 0 is {:?}, not \"live\": not an anti-spoofing model the loop can use",
                    inner.class_names().first()
                ),
            });
        }
        Ok(LiveModel {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// The live probability (class 0) of `face` in `img`.
    pub fn live(&self, img: &image::RgbImage, face: &Face) -> Result<f32> {
        Ok(self.inner.score(img, face)?.live)
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The detector and recogniser a board names, with what the store and policy need to know.
pub struct Models {
    pub pipeline: Pipeline,
    /// The anti-spoofing network, when the board's `[liveness]` table turns it on.
    pub liveness: Option<LiveModel>,
    /// The recogniser's identity: the integrity digest of the recogniser FILE
    /// (`sha256:<hex>`, `+f16` when narrowed on load; see [`LoadOptions::open_with_id`]), not
    /// of the ONNX file it came from: two conversions of one ONNX file (f32 and int8, or a
    /// file with one weight changed and its digest recomputed) embed differently. The
    /// template store records it, so templates enrolled with another file are refused.
    pub recognizer_id: String,
    /// The threshold stored in the recogniser file, if any (informational: the loop uses the
    /// threshold file measured for this recogniser, see [`measured_threshold`]).
    pub model_threshold: Option<f32>,
    /// The detector's identity, as `recognizer_id`.
    pub detector_id: String,
    pub dim: usize,
}

/// Loads both models (`.safetensors`, or `.onnx` converted on the fly); `det_size` is the
/// detector input, `opts` the engine's threads and precision.
pub fn load_models(
    detector: &Path,
    recognizer: &Path,
    det_size: (u32, u32),
    opts: &LoadOptions,
) -> Result<Models> {
    let (det_file, detector_id) = opts.open_with_id(detector)?;
    let det = Detector::new(
        Scrfd::from_file_with(&det_file, detector, opts)?,
        Some(det_size),
    );
    let (rec_file, recognizer_id) = opts.open_with_id(recognizer)?;
    let rec = MobileFaceNet::from_file_with(&rec_file, recognizer, opts)?;
    let model_threshold = rec.match_threshold();
    let dim = rec.dim();
    Ok(Models {
        pipeline: Pipeline {
            detector: det,
            embedder: Embedder::new(rec),
        },
        recognizer_id,
        model_threshold,
        detector_id,
        dim,
        liveness: None,
    })
}

impl FaceEngine for Models {
    fn detect(&self, img: &image::RgbImage) -> Result<Vec<Face>> {
        self.pipeline.detect(img)
    }
    fn embed(&self, img: &image::RgbImage, kps: &[[f32; 2]; 5]) -> Result<Vec<f32>> {
        self.pipeline.embed(img, kps)
    }
    fn embed_with_crop(
        &self,
        img: &image::RgbImage,
        kps: &[[f32; 2]; 5],
    ) -> Result<(Vec<f32>, image::RgbImage)> {
        self.pipeline.embed_with_crop(img, kps)
    }
    fn live_score(&self, img: &image::RgbImage, face: &Face) -> Result<f32> {
        match &self.liveness {
            Some(l) => l.live(img, face),
            // The trait's refusal: a loop asking for liveness without a model fails closed.
            None => self.pipeline.live_score(img, face),
        }
    }
}

/// The board's models at the board's detector size, precision and thread count
/// (`threads` overrides the profile's), with the anti-spoofing model when `liveness` is
/// asked for and `[liveness]` turns it on.
pub fn load_board_models(
    board: &BoardProfile,
    threads: Option<usize>,
    liveness: bool,
) -> Result<Models> {
    let d = board.models.det_size;
    let opts = LoadOptions {
        threads: threads.unwrap_or(board.models.threads as usize),
        precision: Some(board.models.precision),
        ..LoadOptions::default()
    };
    let mut models = load_models(
        &board.models.detector,
        &board.models.recognizer,
        (d.width, d.height),
        &opts,
    )?;
    if let Some((path, _)) = board
        .liveness
        .as_ref()
        .and_then(|l| l.network())
        .filter(|_| liveness)
    {
        models.liveness = Some(LiveModel::load(path, &opts)?);
    }
    Ok(models)
}

/// The board's liveness stage, and a warning to print at every start when it lets photos
/// through (`None` when it is fully on). `BoardProfile::load` already refused a board
/// without `[liveness]`; one that still has none here is treated as off, with the warning.
pub fn board_live_gate(board: &BoardProfile) -> (LiveGate, Option<String>) {
    let Some(l) = &board.liveness else {
        return (
            LiveGate::OFF,
            Some("WARNING: liveness is OFF (no [liveness] table): a photo or a screen of an enrolled user can open the lock".into()),
        );
    };
    let gate = LiveGate::from_board(l);
    let warning = match (gate.threshold, gate.frozen_floor > 0.0) {
        (Some(_), true) => None,
        (Some(_), false) => Some(
            "WARNING: the frozen-input check is OFF (liveness.frozen_floor = 0): a still fed in as the camera stream can open the lock".to_string(),
        ),
        (None, _) => Some(
            "WARNING: liveness is OFF (liveness.enabled = false): a photo or a screen of an enrolled user held up to the camera can open the lock".to_string(),
        ),
    };
    (gate, warning)
}

/// The project/install root a board file's relative paths are resolved against:
/// `FACEGATE_ROOT` if set; else, for a board inside a `boards/` folder, that folder's parent
/// (the project root); else the board file's own folder. Never the current directory.
pub fn default_root(board_path: &Path) -> PathBuf {
    if let Some(r) = std::env::var_os("FACEGATE_ROOT") {
        return PathBuf::from(r);
    }
    let abs = std::path::absolute(board_path).unwrap_or_else(|_| board_path.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "boards") {
        if let Some(p) = dir.parent() {
            return p.to_path_buf();
        }
    }
    dir
}

/// The files of one template store: the store, its device key (see [`crate::unlock::seal`])
/// and the policy state (see [`crate::unlock::policy_state`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreFiles {
    pub store: PathBuf,
    pub key: PathBuf,
    pub state: PathBuf,
}

impl StoreFiles {
    /// Key and state beside the store: `<store>.key`, `<store>.state`.
    pub fn beside(store: &Path) -> Self {
        StoreFiles {
            store: store.to_path_buf(),
            key: seal::default_key_path(store),
            state: policy_state::default_state_path(store),
        }
    }

    /// The board's store (or `store`, given on the command line) with the board's
    /// `[store].key` if set, else the key beside the store.
    pub fn for_board(board: &BoardProfile, store: Option<&Path>) -> Self {
        let mut f = Self::beside(store.unwrap_or(&board.store.path));
        if let Some(k) = &board.store.key {
            f.key = k.clone();
        }
        f
    }
}

/// The device key of an existing store. If the key file is missing, a store of the old clear
/// format is reported as such (with the re-enrol advice) rather than as a missing key.
pub fn store_key(files: &StoreFiles) -> Result<DeviceKey> {
    let key_exists = securefs::exists(&files.key)
        .map_err(|r| Error::Msg(format!("device key {}: {r}", files.key.display())))?;
    if !key_exists && store::exists(&files.store)? {
        store::refuse_legacy(&files.store)?;
    }
    DeviceKey::load(&files.key)
}

fn store_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Creates the store's folder if needed (mode 0700: templates are biometric data).
fn ensure_store_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(dir, e))?;
        }
    }
    Ok(())
}

/// Takes the store's writer lock and removes temp files of writers that died.
fn lock_for_writing(files: &StoreFiles) -> Result<FileLock> {
    ensure_store_dir(&files.store)?;
    let lock = FileLock::exclusive(&files.store).map_err(|r| store_error(&files.store, r))?;
    for p in securefs::clean_stale_temps(&files.store).map_err(|r| store_error(&files.store, r))? {
        log::warn!("removed {}, left by a writer that died", p.display());
    }
    Ok(lock)
}

/// The device key for a write: loaded if the key file exists; created if neither it nor the
/// store exists (the first enrolment); an existing store without its key is an error.
fn key_for_writing(files: &StoreFiles, store_exists: bool) -> Result<DeviceKey> {
    if securefs::exists(&files.key)
        .map_err(|r| Error::Msg(format!("{}: {r}", files.key.display())))?
    {
        return DeviceKey::load(&files.key);
    }
    if store_exists {
        store::refuse_legacy(&files.store)?;
        return Err(store_error(
            &files.store,
            format!(
                "its device key {} is missing: the store cannot be opened (move the store \
                 away and re-enrol)",
                files.key.display()
            ),
        ));
    }
    DeviceKey::create(&files.key)
}

/// Writes a fresh policy state when a store is created and none exists (so the first start
/// after enrolment is not locked out; an existing state, even unusable, is left alone).
fn create_state_with_store(files: &StoreFiles, key: &DeviceKey) -> Result<()> {
    let exists = securefs::exists(&files.state)
        .map_err(|r| Error::Msg(format!("{}: {r}", files.state.display())))?;
    if !exists {
        policy_state::write_fresh(&files.state, key)?;
    }
    Ok(())
}

/// A read-modify-write of the store under its exclusive lock: loads it (or, if it does not
/// exist and `model` is given, starts an empty one for that model, creating the device key
/// and the policy state), runs `change`, and saves it with the next generation. Two
/// concurrent updates are serialised, so neither is lost; `change` returning an error
/// leaves the store untouched. `model` (id, dim) is also checked against an existing store.
pub fn update_store<R>(
    files: &StoreFiles,
    model: Option<(&str, usize)>,
    change: impl FnOnce(&mut TemplateStore) -> Result<R>,
) -> Result<R> {
    let _lock = lock_for_writing(files)?;
    let exists = securefs::exists(&files.store).map_err(|r| store_error(&files.store, r))?;
    let (mut s, key) = match (exists, model) {
        (true, _) => {
            let key = key_for_writing(files, true)?;
            let s = TemplateStore::load(&files.store, &key)?;
            if let Some((id, dim)) = model {
                s.check_model(&files.store, id, dim)?;
            }
            (s, key)
        }
        (false, Some((id, dim))) => {
            let s = TemplateStore::new(id, dim)?;
            let key = key_for_writing(files, false)?;
            create_state_with_store(files, &key)?;
            (s, key)
        }
        (false, None) => {
            return Err(store_error(
                &files.store,
                "does not exist (no user is enrolled)",
            ))
        }
    };
    let r = change(&mut s)?;
    s.set_generation(s.generation().saturating_add(1));
    s.save(&files.store, &key)?;
    Ok(r)
}

/// Loads the store the unlock loop will match against, failing closed: a missing, unreadable,
/// non-private, symlinked, corrupt, foreign-key or foreign-model store, or one with no user,
/// is an error (one line, naming the path), and the loop must not start. The result is
/// watched: the loop reloads it when the file changes.
pub fn load_unlock_store(
    path: &Path,
    key: &DeviceKey,
    recognizer_id: &str,
    dim: usize,
) -> Result<LiveStore> {
    let mut live = LiveStore::watch(path, key, recognizer_id, dim)?;
    if live.current().map_err(Error::Msg)?.is_empty() {
        return Err(store_error(
            path,
            "no user is enrolled (run `facegate enroll`)",
        ));
    }
    Ok(live)
}

/// Replaces the whole store with `store` (the demo's enrolments) under the writer lock,
/// creating the folder (0700), the device key and the policy state if needed; the generation
/// continues from the file being replaced. Returns the key.
pub fn save_store(store: &TemplateStore, files: &StoreFiles) -> Result<DeviceKey> {
    save_store_generation(store, files).map(|(key, _)| key)
}

/// [`save_store`], also returning the generation written.
pub fn save_store_generation(
    store: &TemplateStore,
    files: &StoreFiles,
) -> Result<(DeviceKey, u64)> {
    let _lock = lock_for_writing(files)?;
    let exists = securefs::exists(&files.store).map_err(|r| store_error(&files.store, r))?;
    let key = match key_for_writing(files, exists) {
        Ok(k) => k,
        // A store whose key is gone is replaced as a whole here, under a new key.
        Err(_) if exists && !securefs::exists(&files.key).unwrap_or(true) => {
            DeviceKey::create(&files.key)?
        }
        Err(e) => return Err(e),
    };
    create_state_with_store(files, &key)?;
    let previous = std::fs::read(&files.store)
        .ok()
        .and_then(|b| seal::peek_generation(&b))
        .unwrap_or(0);
    let mut s = store.clone();
    s.set_generation(previous.max(store.generation()).saturating_add(1));
    s.save(&files.store, &key)?;
    Ok((key, s.generation()))
}

/// The threshold file a board uses: `[match].threshold_file`, else the default beside its
/// recogniser.
pub fn board_threshold_file(board: &BoardProfile) -> PathBuf {
    board
        .matching
        .threshold_file
        .clone()
        .unwrap_or_else(|| threshold_file::default_path(&board.models.recognizer))
}

/// The threshold measured for the recogniser `models` loaded, read from `path`; refused (one
/// line naming the file and the `facegate threshold` command that measures it) when the file
/// is missing, malformed or was measured for another recogniser file.
pub fn measured_threshold(
    path: &Path,
    models: &Models,
    detector: &Path,
    recognizer: &Path,
    det_size: (u32, u32),
) -> Result<MeasuredThreshold> {
    let fix = threshold_file::measure_command(detector, recognizer, det_size, path);
    let m = MeasuredThreshold::load_for(path, &models.recognizer_id, &fix)?;
    if m.detector_digest != models.detector_id || m.det_size != [det_size.0, det_size.1] {
        // The recogniser decides the scores; another detector or size changes the crops a
        // little, so this is worth a warning, not a refusal.
        log::warn!(
            "{}: measured with detector {} at {}x{}, running {} at {}x{}",
            path.display(),
            m.detector_digest,
            m.det_size[0],
            m.det_size[1],
            models.detector_id,
            det_size.0,
            det_size.1
        );
    }
    Ok(m)
}

/// The policy for `board`: its threshold is the one measured for the loaded recogniser
/// (or the board's stricter `[match].threshold`); refused when none was measured for it.
pub fn board_policy(board: &BoardProfile, models: &Models) -> Result<PolicyConfig> {
    let path = board_threshold_file(board);
    let d = board.models.det_size;
    let m = measured_threshold(
        &path,
        models,
        &board.models.detector,
        &board.models.recognizer,
        (d.width, d.height),
    )?;
    Ok(board.policy_config(m.select(board.matching.threshold, &path)?))
}

/// The quality gates `enroll` applies on `board`: the board's smallest face, the default
/// sharpness and pose limits. One place, so that anything measured "as enrolled" (`facegate
/// attempts`) passes the very gates an enrolment does.
pub fn enrol_gates(board: &BoardProfile) -> QualityGates {
    QualityGates {
        min_face_px: board.enroll.min_face_px,
        ..QualityGates::default()
    }
}

/// Opens a replay source (images, clips) played frame by frame, every frame, no loop.
pub fn open_replay(spec: &SourceSpec) -> Result<ReplaySource> {
    ReplaySource::open(spec, &ReplayOptions::default(), Arc::new(SystemClock))
}

/// Enrols `user` from `source` into `store` (not saved). Returns the capture and how many
/// templates were added.
#[allow(clippy::too_many_arguments)]
pub fn enrol_from_source(
    store: &mut TemplateStore,
    user: &str,
    source: &mut dyn crate::camera::FrameSource,
    engine: &dyn FaceEngine,
    gates: &QualityGates,
    wanted: usize,
    max_scan: Option<u64>,
    stop: &AtomicBool,
    on_frame: &mut dyn FnMut(Option<u64>, &FrameVerdict),
) -> Result<(EnrolmentCapture, usize)> {
    crate::unlock::store::validate_user_name(user)?;
    let cap = collect_enrolment(source, engine, gates, wanted, max_scan, stop, on_frame);
    let n = enrol_into(store, user, &cap)?;
    Ok((cap, n))
}

/// Converts `onnx` to `out` (f32) unless `out` already holds an f32 conversion of that exact
/// file (same sha256). Returns whether it converted.
pub fn ensure_converted(onnx: &Path, out: &Path) -> Result<bool> {
    ensure_converted_as(onnx, out, Precision::F32, None)
}

/// The int8 calibration the shipped int8 files are made with, exactly as `quantize
/// --precision int8 --calib LIST` (its default methods and float budget, all cores): the
/// committed threshold files are keyed by the digest of that output, so the demo and
/// `quantize` must produce the same bytes.
pub const INT8_METHODS: &str = "minmax,p99.99,mse";

/// Converts `onnx` to `out` at `precision` unless `out` already holds a conversion of that
/// exact file at that precision (int8: calibrated with the same stamp). int8 needs `calib`
/// (the calibration list; the recogniser's and liveness model's faces are found by
/// `det_500m.onnx` beside `onnx`, as `quantize` does). Returns whether it converted.
pub fn ensure_converted_as(
    onnx: &Path,
    out: &Path,
    precision: Precision,
    calib: Option<&Path>,
) -> Result<bool> {
    let how = Conversion::new(onnx, precision, calib)?;
    if how.is_done(out)? {
        return Ok(false);
    }
    how.convert_into(out)?;
    Ok(true)
}

/// How [`ensure_converted_as`] converts one ONNX file, and whether a file is that conversion.
pub struct Conversion<'a> {
    onnx: PathBuf,
    sha256: String,
    precision: Precision,
    calib: Option<&'a Path>,
    methods: Vec<crate::quant::Method>,
    det: PathBuf,
}

impl<'a> Conversion<'a> {
    pub fn new(onnx: &Path, precision: Precision, calib: Option<&'a Path>) -> Result<Self> {
        let bytes = std::fs::read(onnx).map_err(|e| Error::io(onnx, e))?;
        Ok(Conversion {
            onnx: onnx.to_path_buf(),
            sha256: crate::onnx::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            precision,
            calib,
            methods: INT8_METHODS
                .split(',')
                .map(|m| m.parse().map_err(Error::Msg))
                .collect::<Result<_>>()?,
            det: onnx.with_file_name("det_500m.onnx"),
        })
    }

    /// Recogniser and liveness inputs are face crops: their calibration finds the faces with
    /// the detector beside the ONNX file.
    fn crop_detector(&self, config: &crate::format::ModelConfig) -> Option<&Path> {
        matches!(
            config,
            crate::format::ModelConfig::MobileFaceNet(_) | crate::format::ModelConfig::Liveness(_)
        )
        .then_some(self.det.as_path())
    }

    /// Whether `out` holds this conversion: same ONNX digest and precision, and for int8 the
    /// same calibration stamp (a changed recipe or list converts again).
    pub fn is_done(&self, out: &Path) -> Result<bool> {
        let Ok(m) = ModelFile::read(out) else {
            return Ok(false);
        };
        if m.source.sha256 != self.sha256 || m.precision != self.precision {
            return Ok(false);
        }
        let stamp = match (self.precision, self.calib) {
            (Precision::Int8, Some(list)) => Some(crate::quant::calibration_stamp(
                list,
                self.crop_detector(&m.config),
                &self.methods,
                crate::quant::FLOAT_BUDGET,
            )?),
            _ => None,
        };
        Ok(m.source.calibration == stamp)
    }

    /// Converts the ONNX file into `out` (atomically), whatever `out` holds now.
    pub fn convert_into(&self, out: &Path) -> Result<()> {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = crate::onnx::convert(&self.onnx)?;
        let file = match self.precision {
            Precision::F32 => file,
            Precision::F16 => file.to_f16(),
            Precision::Int8 => {
                let list = self.calib.ok_or_else(|| {
                    Error::Msg(format!("{}: int8 needs a calibration list", out.display()))
                })?;
                crate::quant::calibrate_with(
                    &file,
                    list,
                    self.crop_detector(&file.config),
                    &self.methods,
                    crate::quant::FLOAT_BUDGET,
                    0,
                    &mut crate::quant::Quiet,
                )?
                .0
            }
        };
        file.write(out)
    }
}

/// The file name a converted model gets in `models/`: `NAME.safetensors` for f32 (the
/// reference), `NAME_int8.safetensors` / `NAME_f16.safetensors` otherwise.
pub fn model_file_name(name: &str, precision: Precision) -> String {
    match precision {
        Precision::F32 => format!("{name}.safetensors"),
        p => format!("{name}_{p}.safetensors"),
    }
}

/// Settings of [`run_demo`].
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the converted models are written (`models/` of the project).
    pub models_dir: PathBuf,
    /// Folder of the ONNX files.
    pub onnx_dir: PathBuf,
    /// The shared data folder (`data/faces/examples`, `data/video`).
    pub shared: PathBuf,
    /// Where the demo's template stores go.
    pub work_dir: PathBuf,
    pub det_size: (u32, u32),
    /// Precision of the models the demo converts and runs (the boards' int8 by default).
    pub precision: Precision,
    /// Overrides the threshold (else the threshold file measured for the recogniser, beside
    /// it in `models_dir`).
    pub threshold: Option<f32>,
    /// Frames per person to enrol.
    pub frames: usize,
}

/// One replay of the demo.
#[derive(Debug, Clone)]
pub struct DemoCase {
    pub name: String,
    pub clip: PathBuf,
    /// Enrolled users and their template counts.
    pub enrolled: Vec<(String, usize)>,
    pub expect_unlock: bool,
    pub outcome: LoopOutcome,
    /// The same replay with liveness off, where the case must show that liveness alone kept
    /// the lock closed.
    pub control: Option<LoopOutcome>,
    pub passed: bool,
}

/// The anti-spoofing model the boards and the demo use by default.
pub const DEFAULT_LIVE_MODEL: &str = "antispoof_print_replay_1.5_128";

/// Live-probability threshold of the boards and the demo: the publisher's decision rule
/// (class 0 ≥ 0.5), at which the reference pipeline measures BPCER 4/140 and APCER 0/9 on
/// the pourfard dev half.
pub const DEFAULT_LIVE_THRESHOLD: f32 = crate::liveness::DEFAULT_THRESHOLD;

/// Every person folder of `examples` (sub-folders not starting with `_`), sorted.
pub fn example_people(examples: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(examples)
        .map_err(|e| Error::io(examples, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let n = p.file_name()?.to_string_lossy().into_owned();
            (!n.starts_with('_')).then_some((n, p))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Builds a store for `models` with each `(user, folder)` enrolled from the folder's photos.
pub fn enrol_people(
    models: &Models,
    people: &[(String, PathBuf)],
    frames: usize,
    log_line: &mut dyn FnMut(&str),
) -> Result<(TemplateStore, Vec<(String, usize)>)> {
    let mut store = TemplateStore::new(models.recognizer_id.clone(), models.dim)?;
    let gates = QualityGates::default();
    let never = AtomicBool::new(false);
    let mut enrolled = Vec::new();
    for (user, dir) in people {
        let mut src = open_replay(&SourceSpec::Images { dir: dir.clone() })?;
        let mut lines = Vec::new();
        let (cap, n) = enrol_from_source(
            &mut store,
            user,
            &mut src,
            &models.pipeline,
            &gates,
            frames,
            None,
            &never,
            &mut |seq, r| {
                if let Err(rej) = r {
                    lines.push(format!(
                        "  {user}: image {} skipped: {rej}",
                        seq.unwrap_or(0)
                    ));
                }
            },
        )?;
        for l in &lines {
            log_line(l);
        }
        log_line(&format!(
            "enrolled {user}: {n} template(s) from {} image(s){}",
            cap.scanned,
            if n < frames {
                format!(" (fewer than the {frames} wanted: the folder has no more usable photos)")
            } else {
                String::new()
            }
        ));
        enrolled.push((user.clone(), n));
    }
    Ok((store, enrolled))
}

/// Replays `clip` against `store` as a 30 fps camera whose loop hands the policy one frame per
/// [`LoopConfig::interval_for`] (the frames between are read and skipped), deterministically:
/// the policy's clock is the frame number, not the machine's speed.
/// `liveness` is the liveness stage (the anti-spoofing network runs from `models.liveness`).
#[allow(clippy::too_many_arguments)]
pub fn replay_clip(
    models: &Models,
    store: &TemplateStore,
    policy: PolicyConfig,
    liveness: LiveGate,
    spec: &SourceSpec,
    actuator: &mut dyn Actuator,
    once: bool,
    on_frame: &mut dyn FnMut(&FrameReport),
) -> Result<LoopOutcome> {
    let cfg = LoopConfig {
        once,
        time: PolicyTime::FrameRate(30.0),
        min_interval: LoopConfig::interval_for(&policy),
        liveness,
        ..LoopConfig::default()
    };
    replay_with(models, store, policy, &cfg, spec, actuator, on_frame)
}

/// [`replay_clip`] with the whole loop configuration given.
pub fn replay_with(
    models: &Models,
    store: &TemplateStore,
    policy: PolicyConfig,
    cfg: &LoopConfig,
    spec: &SourceSpec,
    actuator: &mut dyn Actuator,
    on_frame: &mut dyn FnMut(&FrameReport),
) -> Result<LoopOutcome> {
    let mut src = open_replay(spec)?;
    let mut policy = Policy::new(policy)?;
    let never = AtomicBool::new(false);
    Ok(run_loop(
        &mut src,
        models,
        store,
        &mut policy,
        actuator,
        cfg,
        &never,
        on_frame,
    ))
}

/// The attack: one still of `photo`, scaled to `width` pixels wide (even height),
/// JPEG-encoded once and repeated `frames` times as an MJPEG stream, exactly what
/// `ffmpeg -loop 1 -i PHOTO -vf scale=W:-2 -c:v mjpeg -f mjpeg` feeds a camera replay.
pub fn still_mjpeg(photo: &Path, width: u32, frames: usize) -> Result<Vec<u8>> {
    let bytes = std::fs::read(photo).map_err(|e| Error::io(photo, e))?;
    let img = crate::image_io::decode_rgb(&bytes, photo)?;
    let height =
        ((img.height() as u64 * width as u64 / img.width().max(1) as u64) as u32 / 2 * 2).max(2);
    let small = image::imageops::resize(&img, width, height, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&small)
        .map_err(|e| Error::Msg(format!("{}: JPEG encoding: {e}", photo.display())))?;
    Ok(jpeg.repeat(frames))
}

/// Enrols the largest face of each image file (named after the file's stem) as the loop
/// would see it, with no quality gate: the worst case for the liveness stage, where
/// recognition matches the attack perfectly. Files without a face are skipped (logged).
pub fn enrol_largest_faces(
    models: &Models,
    files: &[PathBuf],
    log_line: &mut dyn FnMut(&str),
) -> Result<(TemplateStore, Vec<(String, usize)>)> {
    let mut store = TemplateStore::new(models.recognizer_id.clone(), models.dim)?;
    let mut enrolled = Vec::new();
    for f in files {
        let user = f
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            })
            .unwrap_or_default();
        let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
        let img = crate::image_io::decode_rgb(&bytes, f)?;
        let faces = models.detect(&img)?;
        let Some(kps) = crate::pipeline::largest(&faces).and_then(|face| face.kps) else {
            log_line(&format!("  {}: no face found, not enrolled", f.display()));
            continue;
        };
        let emb = models.embed(&img, &kps)?;
        store.add_templates(&user, vec![emb])?;
        enrolled.push((user, 1));
    }
    Ok((store, enrolled))
}

/// Image files of `dir` (jpg, jpeg, png), sorted, as the `images:DIR` source plays them.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| {
                let e = e.to_string_lossy().to_ascii_lowercase();
                e == "jpg" || e == "jpeg" || e == "png"
            })
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The README's demo: converts the default models if needed, enrols Lin-Manuel Miranda and
/// replays the hamilton clip (must unlock, liveness on), enrols every example person and
/// replays the webcam clip (must stay locked), replays a still of Lin-Manuel Miranda as an
/// MJPEG camera (must stay locked: frozen), then enrols the face of every spoof photo of
/// `data/liveness/pourfard_dev/fake` from that very photo and replays the folder as a camera
/// (must stay locked because of liveness alone: the same replay without liveness unlocks).
/// Each case's `passed` says whether it went as expected.
pub fn run_demo(
    opts: &DemoOptions,
    log_line: &mut dyn FnMut(&str),
    on_frame: &mut dyn FnMut(&str, &FrameReport),
) -> Result<Vec<DemoCase>> {
    let det = opts
        .models_dir
        .join(model_file_name("det_500m", opts.precision));
    let rec = opts
        .models_dir
        .join(model_file_name("mobilefacenet_512", opts.precision));
    let live = opts
        .models_dir
        .join(model_file_name(DEFAULT_LIVE_MODEL, opts.precision));
    let calib = opts.shared.join("data/faces/celeba_wild/calibration.txt");
    for (name, out) in [
        ("det_500m", &det),
        ("mobilefacenet_512", &rec),
        (DEFAULT_LIVE_MODEL, &live),
    ] {
        let onnx = opts.onnx_dir.join(format!("{name}.onnx"));
        // One digest of the ONNX file and one look at `out` per model, then convert if needed.
        let how = Conversion::new(&onnx, opts.precision, Some(&calib))?;
        if !how.is_done(out)? {
            if opts.precision == Precision::Int8 {
                log_line(&format!(
                    "converting {} to int8 (calibration on {}; once, then cached) …",
                    onnx.display(),
                    calib.display()
                ));
            }
            how.convert_into(out)?;
            log_line(&format!(
                "converted {} -> {}",
                onnx.display(),
                out.display()
            ));
        }
    }
    let mut models = load_models(&det, &rec, opts.det_size, &LoadOptions::default())?;
    models.liveness = Some(LiveModel::load(&live, &LoadOptions::default())?);
    let gate = LiveGate {
        threshold: Some(DEFAULT_LIVE_THRESHOLD),
        frozen_floor: crate::unlock::frozen::DEFAULT_FROZEN_FLOOR,
    };
    let threshold = match opts.threshold {
        Some(t) => t,
        None => {
            let path = threshold_file::default_path(&rec);
            // Measured at the boards' detector size (the demo's clips are 16:9, so it runs
            // 320x192): the measurement's detector settings are only informative here.
            let m = measured_threshold(&path, &models, &det, &rec, opts.det_size)?;
            log_line(&format!(
                "threshold {:.4} from {} (measured for this recogniser file: FAR {:e}, FRR {:.3})",
                m.threshold,
                path.display(),
                m.far_target,
                m.frr
            ));
            m.threshold
        }
    };
    let policy = PolicyConfig {
        threshold,
        ..PolicyConfig::default()
    };
    log_line(&format!(
        "models: {} + {} at {}x{}, threshold {threshold:.3}, policy {} of {} within {:?}; \
         liveness {} at live >= {:.2}, frozen floor {:.2}",
        det.display(),
        rec.display(),
        opts.det_size.0,
        opts.det_size.1,
        policy.k,
        policy.n,
        policy.window,
        live.display(),
        DEFAULT_LIVE_THRESHOLD,
        gate.frozen_floor
    ));
    // 0700: the demo's store and key live here, and a folder others may write is refused
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&opts.work_dir)
        .map_err(|e| Error::io(&opts.work_dir, e))?;
    let examples = opts.shared.join("data/faces/examples");
    let video = opts.shared.join("data/video");
    let lin = || {
        vec![(
            "lin_manuel_miranda".to_string(),
            examples.join("lin_manuel_miranda"),
        )]
    };
    // The attack, built without ffmpeg: 2 s of one still at 30 fps.
    let still = opts.work_dir.join("owner_still.mjpeg");
    let bytes = still_mjpeg(
        &examples.join("lin_manuel_miranda/lin-manuel-miranda.png"),
        640,
        60,
    )?;
    std::fs::write(&still, bytes).map_err(|e| Error::io(&still, e))?;
    type Case<'a> = (&'a str, Vec<(String, PathBuf)>, PathBuf, bool);
    let cases: [Case; 3] = [
        (
            "hamilton",
            lin(),
            video.join("hamilton_640x360.mjpeg"),
            true,
        ),
        (
            "webcam_talking",
            example_people(&examples)?,
            video.join("webcam_talking_640x360.mjpeg"),
            false,
        ),
        ("owner_still", lin(), still, false),
    ];
    let mut results = Vec::new();
    for (name, people, clip_path, expect_unlock) in cases {
        log_line(&format!("--- {name}: enrolling {} person(s)", people.len()));
        let (store, enrolled) = enrol_people(&models, &people, opts.frames, log_line)?;
        let store_path = opts.work_dir.join(format!("{name}.fgt"));
        let key = save_store(&store, &StoreFiles::beside(&store_path))?;
        // Read back through the fail-closed loader, as `unlock` would.
        let store =
            TemplateStore::load_for_model(&store_path, &key, &models.recognizer_id, models.dim)?;
        log_line(&format!(
            "--- {name}: replaying {} (must {})",
            clip_path.display(),
            if expect_unlock {
                "unlock"
            } else {
                "stay locked"
            }
        ));
        let mut actuator = LogActuator::printing();
        let outcome = replay_clip(
            &models,
            &store,
            policy.clone(),
            gate,
            &SourceSpec::Mjpeg {
                path: clip_path.clone(),
            },
            &mut actuator,
            false,
            &mut |r| on_frame(name, r),
        )?;
        let unlocked = !outcome.unlocks.is_empty();
        // The still must be refused as frozen, not merely miss the threshold.
        let passed = unlocked == expect_unlock
            && outcome.errors == 0
            && (name != "owner_still" || outcome.frozen > 0);
        log_line(&summary(name, &outcome, passed));
        results.push(DemoCase {
            name: name.to_string(),
            clip: clip_path,
            enrolled,
            expect_unlock,
            outcome,
            control: None,
            passed,
        });
    }
    results.push(spoof_photos_case(
        &models,
        &policy,
        gate,
        &opts.shared.join("data/liveness/pourfard_dev/fake"),
        log_line,
        on_frame,
    )?);
    Ok(results)
}

/// The demo's last case: every spoof photo's face enrolled from that very photo, the folder
/// replayed as a camera, each photo one whole attempt (k = n = 1, no cooldown, no lockout)
/// so that every photo is judged and the frozen check (which needs two frames) plays no
/// part. Without liveness the photos unlock; with it, none may.
fn spoof_photos_case(
    models: &Models,
    policy: &PolicyConfig,
    gate: LiveGate,
    dir: &Path,
    log_line: &mut dyn FnMut(&str),
    on_frame: &mut dyn FnMut(&str, &FrameReport),
) -> Result<DemoCase> {
    let name = "spoof_photos";
    let files = image_files(dir)?;
    log_line(&format!(
        "--- {name}: enrolling the largest face of each of the {} photos of {} from that very photo",
        files.len(),
        dir.display()
    ));
    let (store, enrolled) = enrol_largest_faces(models, &files, log_line)?;
    let policy = PolicyConfig {
        k: 1,
        n: 1,
        cooldown: std::time::Duration::ZERO,
        max_failures: 100,
        ..policy.clone()
    };
    let spec = SourceSpec::Images {
        dir: dir.to_path_buf(),
    };
    let run = |liveness: LiveGate, label: &str, on_frame: &mut dyn FnMut(&str, &FrameReport)| {
        let cfg = LoopConfig {
            time: PolicyTime::FrameRate(30.0),
            liveness,
            ..LoopConfig::default()
        };
        let mut actuator = LogActuator::new();
        replay_with(
            models,
            &store,
            policy.clone(),
            &cfg,
            &spec,
            &mut actuator,
            &mut |r| on_frame(label, r),
        )
    };
    log_line(&format!(
        "--- {name}: control, liveness OFF, each photo one attempt (k = n = 1): the photos must unlock"
    ));
    let control = run(LiveGate::OFF, "spoof_photos, liveness OFF", on_frame)?;
    log_line(&summary(
        "spoof_photos, liveness OFF",
        &control,
        !control.unlocks.is_empty(),
    ));
    log_line(&format!(
        "--- {name}: liveness ON (network only, no frozen check): must stay locked"
    ));
    let outcome = run(
        LiveGate {
            frozen_floor: 0.0,
            ..gate
        },
        name,
        on_frame,
    )?;
    let passed = outcome.unlocks.is_empty()
        && outcome.errors == 0
        && control.errors == 0
        && !control.unlocks.is_empty()
        && outcome.spoofs >= control.unlocks.len() as u64;
    log_line(&format!(
        "--- {name}: without liveness {} of {} photos unlocked; with liveness {} unlocked, {} refused as spoof => {}",
        control.unlocks.len(),
        files.len(),
        outcome.unlocks.len(),
        outcome.spoofs,
        if passed {
            "stayed locked because of liveness alone, as expected"
        } else {
            "NOT as expected"
        }
    ));
    Ok(DemoCase {
        name: name.to_string(),
        clip: dir.to_path_buf(),
        enrolled,
        expect_unlock: false,
        outcome,
        control: Some(control),
        passed,
    })
}

/// The demo's one-line summary of a replay.
fn summary(name: &str, outcome: &LoopOutcome, passed: bool) -> String {
    let t = outcome.mean_face_timings;
    format!(
        "--- {name}: {} frames, {} with a face, {} unlock(s){}, {} spoof, {} frozen, {} error(s); best score {}; \
         mean per face frame: capture {:.1} ms, detect {:.1} ms, align+embed {:.1} ms, match {:.2} ms, liveness {:.1} ms; \
         frame -> decision p50 {} ms, liveness p50 {} ms => {}",
        outcome.frames,
        outcome.face_frames,
        outcome.unlocks.len(),
        outcome
            .unlocks
            .first()
            .map(|u| format!(" (first at frame {}, {} {:.3})", u.seq, u.user, u.score))
            .unwrap_or_default(),
        outcome.spoofs,
        outcome.frozen,
        outcome.errors,
        outcome
            .best_score
            .as_ref()
            .map(|(u, s)| format!("{u} {s:.3}"))
            .unwrap_or_else(|| "-".into()),
        t.capture_ms,
        t.detect_ms,
        t.embed_ms,
        t.match_ms,
        t.live_ms,
        fmt_ms(outcome.latency_quantile_ms(0.5)),
        fmt_ms(outcome.live_quantile_ms(0.5)),
        if passed { "as expected" } else { "NOT as expected" }
    )
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_of_a_board_in_boards_is_the_project_else_its_folder() {
        if std::env::var_os("FACEGATE_ROOT").is_some() {
            eprintln!("FACEGATE_ROOT is set: skipping the default-root rules");
            return;
        }
        assert_eq!(
            default_root(Path::new("/opt/proj/boards/rpi5.toml")),
            Path::new("/opt/proj")
        );
        assert_eq!(
            default_root(Path::new("/etc/facegate/board.toml")),
            Path::new("/etc/facegate")
        );
        let rel = default_root(Path::new("boards/x86-dev.toml"));
        assert!(rel.is_absolute(), "{}", rel.display());
        assert_eq!(rel, std::env::current_dir().unwrap());
    }

    #[test]
    fn a_board_with_liveness_off_is_accepted_and_warns() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("boards/x86-dev.toml")).unwrap();
        let board = |t: &str| BoardProfile::from_toml_str(t, Path::new("b.toml"), root);
        // Shipped: on, no warning.
        let (gate, warning) = board_live_gate(&board(&text).unwrap());
        assert_eq!(gate.threshold, Some(DEFAULT_LIVE_THRESHOLD));
        assert!(gate.frozen_floor > 0.0);
        assert_eq!(warning, None);
        // Without the table: refused at load.
        let (head, _) = text.split_once("[liveness]").unwrap();
        let e = board(head).unwrap_err().to_string();
        assert!(e.contains("b.toml") && e.contains("liveness"), "{e}");
        // Explicitly off: accepted, and the warning says photos can open the lock.
        let off = board(&format!("{head}[liveness]\nenabled = false\n")).unwrap();
        let (gate, warning) = board_live_gate(&off);
        assert_eq!(gate.threshold, None);
        let w = warning.unwrap();
        assert!(w.contains("OFF") && w.contains("photo"), "{w}");
        // The frozen check off alone warns too.
        let no_frozen = board(&text.replace("frozen_floor = ", "frozen_floor = 0.0 #")).unwrap();
        let w = board_live_gate(&no_frozen).1.unwrap();
        assert!(w.contains("frozen"), "{w}");
    }

    #[test]
    fn save_store_creates_a_private_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/templates.fgt");
        let mut s = TemplateStore::new("m", 2).unwrap();
        s.add_templates("u", vec![vec![1.0, 0.0]]).unwrap();
        let files = StoreFiles::beside(&path);
        let key = save_store(&s, &files).unwrap();
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(TemplateStore::load(&path, &key).unwrap(), s);
        // Key and state were created beside it, private.
        for p in [&files.key, &files.state, &files.store] {
            let m = std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(m & 0o777, 0o600, "{}", p.display());
        }
        // Saved again: the generation goes on.
        save_store(&s, &files).unwrap();
        assert_eq!(TemplateStore::load(&path, &key).unwrap().generation(), 2);
    }

    #[test]
    fn an_old_clear_store_without_key_is_reported_as_such() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = StoreFiles::beside(&dir.path().join("templates.fgt"));
        // The header of a version-1 store (the rest does not matter for the refusal).
        let mut b = b"FGTSTORE".to_vec();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0; 40]);
        std::fs::write(&files.store, &b).unwrap();
        std::fs::set_permissions(&files.store, std::fs::Permissions::from_mode(0o600)).unwrap();
        for e in [
            store_key(&files).unwrap_err(),
            update_store(&files, Some(("m", 2)), |_| Ok(())).unwrap_err(),
        ] {
            let m = e.to_string();
            assert!(m.contains("version 1") && m.contains("re-enrol"), "{m}");
        }
        // Nothing was created beside it.
        assert!(!files.key.exists() && !files.state.exists());
    }
}
