//! Wiring for the `enroll`, `users`, `unlock` and `demo` commands: loading the models a board
//! names (and the recogniser's identity that binds the template store to it), choosing the
//! threshold and the actuator, enrolling from a folder, and the demo's two replays.
//!
//! Why here and not in the binary: integration tests run exactly this code (binary-only
//! modules cannot be reached from `tests/`), and the CLI stays a thin clap layer.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::board::BoardProfile;
use crate::camera::{ReplayOptions, ReplaySource, SourceSpec, SystemClock};
use crate::error::{Error, Result};
use crate::format::{ModelFile, Precision};
use crate::models::mobilefacenet::MobileFaceNet;
use crate::models::scrfd::Scrfd;
use crate::models::LoadOptions;
use crate::pipeline::{Detector, Embedder, Pipeline};
use crate::unlock::actuator::{Actuator, LogActuator};
use crate::unlock::policy::{Policy, PolicyConfig};
use crate::unlock::session::{
    collect_enrolment, enrol_into, run_loop, EnrolmentCapture, FaceEngine, FrameReport,
    FrameVerdict, LoopConfig, LoopOutcome, PolicyTime, QualityGates,
};
use crate::unlock::store::TemplateStore;
use crate::unlock::threshold_file::{self, MeasuredThreshold};

/// The detector and recogniser a board names, with what the store and policy need to know.
pub struct Models {
    pub pipeline: Pipeline,
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
    })
}

/// The board's models at the board's detector size, precision and thread count
/// (`threads` overrides the profile's).
pub fn load_board_models(board: &BoardProfile, threads: Option<usize>) -> Result<Models> {
    let d = board.models.det_size;
    let opts = LoadOptions {
        threads: threads.unwrap_or(board.models.threads as usize),
        precision: Some(board.models.precision),
        ..LoadOptions::default()
    };
    load_models(
        &board.models.detector,
        &board.models.recognizer,
        (d.width, d.height),
        &opts,
    )
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

/// Loads the store the unlock loop will match against, failing closed: a missing, unreadable,
/// corrupt or foreign-model store, or one with no user, is an error (one line, naming the
/// path), and the loop must not start.
pub fn load_unlock_store(path: &Path, recognizer_id: &str, dim: usize) -> Result<TemplateStore> {
    let store = TemplateStore::load_for_model(path, recognizer_id, dim)?;
    if store.is_empty() {
        return Err(Error::Store {
            path: path.to_path_buf(),
            reason: "no user is enrolled (run `facegate enroll`)".into(),
        });
    }
    Ok(store)
}

/// Saves an enrolment: creates the store's folder if needed (mode 0700: templates are
/// biometric data), then writes the store atomically.
pub fn save_store(store: &TemplateStore, path: &Path) -> Result<()> {
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
    store.save(path)
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
/// exact file at that precision. int8 needs `calib` (the calibration list; the recogniser's
/// faces are found by `det_500m.onnx` beside `onnx`, as `quantize` does). Returns whether it
/// converted.
pub fn ensure_converted_as(
    onnx: &Path,
    out: &Path,
    precision: Precision,
    calib: Option<&Path>,
) -> Result<bool> {
    let bytes = std::fs::read(onnx).map_err(|e| Error::io(onnx, e))?;
    let sha = crate::onnx::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    if ModelFile::read(out).is_ok_and(|m| m.source.sha256 == sha && m.precision == precision) {
        return Ok(false);
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let file = crate::onnx::convert(onnx)?;
    let file = match precision {
        Precision::F32 => file,
        Precision::F16 => file.to_f16(),
        Precision::Int8 => {
            let list = calib.ok_or_else(|| {
                Error::Msg(format!("{}: int8 needs a calibration list", out.display()))
            })?;
            let methods = INT8_METHODS
                .split(',')
                .map(|m| m.parse().map_err(Error::Msg))
                .collect::<Result<Vec<crate::quant::Method>>>()?;
            let is_rec = matches!(file.config, crate::format::ModelConfig::MobileFaceNet(_));
            let det = onnx.with_file_name("det_500m.onnx");
            crate::quant::calibrate_with(
                &file,
                list,
                is_rec.then_some(det.as_path()),
                &methods,
                crate::quant::FLOAT_BUDGET,
                0,
                &mut crate::quant::Quiet,
            )?
            .0
        }
    };
    file.write(out)?;
    Ok(true)
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
    pub passed: bool,
}

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
pub fn replay_clip(
    models: &Models,
    store: &TemplateStore,
    policy: PolicyConfig,
    spec: &SourceSpec,
    actuator: &mut dyn Actuator,
    once: bool,
    on_frame: &mut dyn FnMut(&FrameReport),
) -> Result<LoopOutcome> {
    let mut src = open_replay(spec)?;
    let cfg = LoopConfig {
        once,
        time: PolicyTime::FrameRate(30.0),
        min_interval: LoopConfig::interval_for(&policy),
        ..LoopConfig::default()
    };
    let mut policy = Policy::new(policy)?;
    let never = AtomicBool::new(false);
    Ok(run_loop(
        &mut src,
        &models.pipeline,
        store,
        &mut policy,
        actuator,
        &cfg,
        &never,
        on_frame,
    ))
}

/// The README's demo: converts the default models if needed, enrols Lin-Manuel Miranda and
/// replays the hamilton clip (must unlock), then enrols every example person and replays the
/// webcam clip (must stay locked). Each case's `passed` says whether it went as expected.
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
    let calib = opts.shared.join("data/faces/celeba_wild/calibration.txt");
    for (name, out) in [("det_500m", &det), ("mobilefacenet_512", &rec)] {
        let onnx = opts.onnx_dir.join(format!("{name}.onnx"));
        if opts.precision == Precision::Int8 && !out.exists() {
            log_line(&format!(
                "converting {} to int8 (calibration on {}; once, then cached) …",
                onnx.display(),
                calib.display()
            ));
        }
        if ensure_converted_as(&onnx, out, opts.precision, Some(&calib))? {
            log_line(&format!(
                "converted {} -> {}",
                onnx.display(),
                out.display()
            ));
        }
    }
    let models = load_models(&det, &rec, opts.det_size, &LoadOptions::default())?;
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
        "models: {} + {} at {}x{}, threshold {threshold:.3}, policy {} of {} within {:?}",
        det.display(),
        rec.display(),
        opts.det_size.0,
        opts.det_size.1,
        policy.k,
        policy.n,
        policy.window
    ));
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| Error::io(&opts.work_dir, e))?;
    let examples = opts.shared.join("data/faces/examples");
    let video = opts.shared.join("data/video");
    type Case<'a> = (&'a str, Vec<(String, PathBuf)>, &'a str, bool);
    let cases: [Case; 2] = [
        (
            "hamilton",
            vec![(
                "lin_manuel_miranda".to_string(),
                examples.join("lin_manuel_miranda"),
            )],
            "hamilton_640x360.mjpeg",
            true,
        ),
        (
            "webcam_talking",
            example_people(&examples)?,
            "webcam_talking_640x360.mjpeg",
            false,
        ),
    ];
    let mut results = Vec::new();
    for (name, people, clip, expect_unlock) in cases {
        log_line(&format!("--- {name}: enrolling {} person(s)", people.len()));
        let (store, enrolled) = enrol_people(&models, &people, opts.frames, log_line)?;
        let store_path = opts.work_dir.join(format!("{name}.fgt"));
        save_store(&store, &store_path)?;
        // Read back through the fail-closed loader, as `unlock` would.
        let store = TemplateStore::load_for_model(&store_path, &models.recognizer_id, models.dim)?;
        let clip_path = video.join(clip);
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
            &SourceSpec::Mjpeg {
                path: clip_path.clone(),
            },
            &mut actuator,
            false,
            &mut |r| on_frame(name, r),
        )?;
        let unlocked = !outcome.unlocks.is_empty();
        let passed = unlocked == expect_unlock && outcome.errors == 0;
        let t = outcome.mean_face_timings;
        log_line(&format!(
            "--- {name}: {} frames, {} with a face, {} unlock(s){}, {} error(s); best score {}; \
             mean per face frame: capture {:.1} ms, detect {:.1} ms, align+embed {:.1} ms, match {:.2} ms => {}",
            outcome.frames,
            outcome.face_frames,
            outcome.unlocks.len(),
            outcome
                .unlocks
                .first()
                .map(|u| format!(" (first at frame {}, {} {:.3})", u.seq, u.user, u.score))
                .unwrap_or_default(),
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
            if passed { "as expected" } else { "NOT as expected" }
        ));
        results.push(DemoCase {
            name: name.to_string(),
            clip: clip_path,
            enrolled,
            expect_unlock,
            outcome,
            passed,
        });
    }
    Ok(results)
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
    fn save_store_creates_a_private_folder() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/templates.fgt");
        let mut s = TemplateStore::new("m", 2).unwrap();
        s.add_templates("u", vec![vec![1.0, 0.0]]).unwrap();
        save_store(&s, &path).unwrap();
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(TemplateStore::load(&path).unwrap(), s);
    }
}
