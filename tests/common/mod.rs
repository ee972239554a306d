//! Shared helpers of the integration tests: where the shared data and the onnxruntime
//! references live, and the converted models (converted once per test run from the ONNX files
//! in `../shared`, never committed).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use facegate::format::ModelFile;

/// `../shared` beside the project (or `FACEGATE_SHARED`).
pub fn shared() -> PathBuf {
    let p = std::env::var_os("FACEGATE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    assert!(
        p.join("models/onnx").is_dir(),
        "shared data not found at {} (set FACEGATE_SHARED)",
        p.display()
    );
    p
}

/// The onnxruntime references made by `tools/refs/make_refs.py` (or `FACEGATE_REFS`).
pub fn refs() -> PathBuf {
    let p = std::env::var_os("FACEGATE_REFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/refs"));
    assert!(
        p.join("heads").is_dir(),
        "references not found at {}: run `python3 tools/refs/make_refs.py` (see tools/refs/README.md)",
        p.display()
    );
    p
}

static CONVERT: Mutex<()> = Mutex::new(());

/// The converted model for `../shared/models/onnx/<name>.onnx`, cached under
/// `target/test-models` and re-converted when the ONNX file changes.
pub fn model(name: &str) -> PathBuf {
    let _guard = CONVERT.lock().unwrap_or_else(|e| e.into_inner());
    let onnx = shared().join(format!("models/onnx/{name}.onnx"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-models");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}.safetensors"));
    let fresh = ModelFile::read(&out).ok().is_some_and(|m| {
        let bytes = std::fs::read(&onnx).unwrap();
        m.source.sha256 == facegate::onnx::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    });
    if !fresh {
        facegate::onnx::convert(&onnx).unwrap().write(&out).unwrap();
    }
    out
}

/// Reads a raw little-endian f32 file.
pub fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&t).unwrap()
}

/// Whether this test binary runs under qemu (emulated aarch64), where long sweeps over
/// hundreds of images are cut to a subset to keep CI inside its time budget.
pub fn emulated() -> bool {
    cfg!(target_arch = "aarch64") && std::env::var_os("FACEGATE_FULL_SWEEP").is_none()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// A command running one of our binaries. Under qemu (the aarch64 test run) the kernel cannot
/// execute an aarch64 binary itself, so `FACEGATE_TEST_RUNNER` (set by `scripts/test.sh
/// aarch64`, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`) is put in front of it.
pub fn bin_command(binary: &str) -> std::process::Command {
    match std::env::var("FACEGATE_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(runner) => {
            let mut parts = runner.split_whitespace();
            let mut c = std::process::Command::new(parts.next().expect("non-empty runner"));
            c.args(parts).arg(binary);
            c
        }
        None => std::process::Command::new(binary),
    }
}

/// Runs `binary ARGS` (through [`bin_command`], with `RUST_LOG=warn`) and prints the command,
/// its status, its stdout without the per-frame lines `show_frame` rejects, and its stderr:
/// what a failing test's log needs, without thousands of frame lines.
pub fn run_logged(
    binary: &str,
    args: &[&str],
    show_frame: impl Fn(&str) -> bool,
) -> std::process::Output {
    let out = bin_command(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    eprintln!(
        "$ facegate {}\n-> {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("frame ") || show_frame(l))
            .collect::<Vec<_>>()
            .join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The int8 model of `../shared/models/onnx/<name>.onnx` as the demo and the boards use it:
/// `models/<name>_int8.safetensors`, converted by the same function as `facegate demo`
/// (calibrated on `faces/celeba_wild/calibration.txt`; crop models find their faces with
/// `det_500m.onnx`) and reused while its calibration stamp matches. Sharing the file with the
/// demo saves the suite a calibration per model (minutes) after `facegate demo` has run.
pub fn model_int8(name: &str) -> PathBuf {
    let _guard = CONVERT.lock().unwrap_or_else(|e| e.into_inner());
    let onnx = shared().join(format!("models/onnx/{name}.onnx"));
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(format!("{name}_int8.safetensors"));
    let list = shared().join("data/faces/celeba_wild/calibration.txt");
    let converted = facegate::unlock::app::ensure_converted_as(
        &onnx,
        &out,
        facegate::format::Precision::Int8,
        Some(&list),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    if converted {
        eprintln!("{name}: calibrated to int8 into {}", out.display());
    }
    out
}

/// `boards/<name>.toml` with its models pointed at the converted f32 test models, written
/// into `dir`; everything else (camera, policy, liveness threshold...) is the board's own.
pub fn board_with_test_models(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("boards/{name}.toml"));
    let text = std::fs::read_to_string(&src).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    let path = |name: &str| toml::Value::from(model(name).display().to_string());
    let models = doc["models"].as_table_mut().unwrap();
    models.insert("detector".into(), path("det_500m"));
    models.insert("recognizer".into(), path("mobilefacenet_512"));
    models.insert("precision".into(), "f32".into());
    // The f32 test recogniser is byte-identical to the f32 file the committed threshold was
    // measured for (the converter is deterministic), so that file's digest matches.
    let threshold =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/threshold-mobilefacenet_512.json");
    let matching = doc
        .entry("match")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .unwrap();
    matching.insert(
        "threshold_file".into(),
        threshold.display().to_string().into(),
    );
    if let Some(live) = doc.get_mut("liveness").and_then(|v| v.as_table_mut()) {
        if live.contains_key("model") {
            live.insert("model".into(), path("antispoof_print_replay_1.5_128"));
        }
    }
    let out = dir.join(format!("{name}.toml"));
    std::fs::write(&out, toml::to_string(&doc).unwrap()).unwrap();
    out
}

/// The match threshold measured for the f32 reference recogniser (det_500m at 320x256, FAR
/// 1e-5 over LFW + CelebA-wild), read from its committed threshold file: tests take its
/// number, never a copy of it.
pub fn f32_match_threshold() -> f32 {
    let report =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/threshold-mobilefacenet_512.json");
    let v = read_json(&report);
    v["threshold"].as_f64().expect("threshold") as f32
}
