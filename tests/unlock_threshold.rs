//! Storing a measured match threshold in a converted recogniser file, and the pieces of the
//! threshold measurement that run quickly (the long run over all photos is a CLI job:
//! `facegate threshold`, never a test).

mod common;

use facegate::format::{ModelConfig, ModelFile};
use facegate::unlock::app::load_models;
use facegate::unlock::threshold::{list_identity_folders, measure, subset, write_into_model};

#[test]
fn write_into_stores_the_threshold_and_refuses_a_detector() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.safetensors");
    std::fs::copy(common::model("mobilefacenet_512"), &rec).unwrap();
    let before = ModelFile::read(&rec).unwrap();
    write_into_model(&rec, 0.4321).unwrap();
    let after = ModelFile::read(&rec).unwrap();
    match &after.config {
        ModelConfig::MobileFaceNet(c) => assert_eq!(c.match_threshold, Some(0.4321)),
        other => panic!("{}", other.family()),
    }
    // Only the threshold changed.
    assert_eq!(after.tensors, before.tensors);
    assert_eq!(after.source, before.source);
    let det = dir.path().join("det.safetensors");
    std::fs::copy(common::model("det_500m"), &det).unwrap();
    let e = write_into_model(&det, 0.4).unwrap_err().to_string();
    assert!(e.contains("scrfd"), "{e}");
    assert!(write_into_model(&rec, 1.5).is_err());
    // The loader reports the stored threshold.
    let m = load_models(
        &common::model("det_500m"),
        &rec,
        (320, 320),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(m.model_threshold, Some(0.4321));
}

#[test]
fn measurement_on_a_few_identities_separates_genuine_from_impostor() {
    let lfw = common::shared().join("data/faces/lfw");
    let all = list_identity_folders(&lfw, "lfw").unwrap();
    assert!(all.len() > 7000, "{}", all.len());
    assert!(all.iter().all(|i| i.identity.starts_with("lfw/")));
    // About 24 images, whole identities.
    let few = subset(all, Some(24));
    let m = load_models(
        &common::model("det_500m"),
        &common::model("mobilefacenet_512"),
        (320, 320),
        &Default::default(),
    )
    .unwrap();
    let r = measure(&m.pipeline, &few, 1e-5, &mut |_, _| {}).unwrap();
    println!("{r:?}");
    assert_eq!(r.images, few.len());
    assert!(r.embedded + r.skipped_no_face == r.images);
    assert!(r.impostor_pairs > 0 && r.threshold > -1.0 && r.threshold <= 1.01);
    assert!(r.genuine_pairs > 0);
    // Most same-person pairs score above the highest different-person pair.
    assert!(r.frr < 0.5, "{}", r.frr);
}

/// A board profile for the test models with `extra` appended to its `[match]` table.
fn board_with(dir: &std::path::Path, match_table: &str) -> facegate::board::BoardProfile {
    let text = format!(
        r#"[board]
name = "t"
target = "x86_64-unknown-linux-gnu"
[camera]
device = "/dev/video0"
format = "yuyv"
width = 640
height = 480
fps = 30
[models]
detector = "{det}"
recognizer = "{rec}"
det_size = "320x256"
precision = "f32"
threads = 1
[match]
{match_table}
[store]
path = "templates.fgt"
[liveness]
enabled = false
[policy]
k = 3
n = 5
window_s = 2.0
max_failures = 5
lockout_s = 30
[enroll]
frames = 5
min_face_px = 80
"#,
        det = common::model("det_500m").display(),
        rec = common::model("mobilefacenet_512").display(),
    );
    let path = dir.join("board.toml");
    std::fs::write(&path, &text).unwrap();
    facegate::board::BoardProfile::load(&path, dir).unwrap()
}

/// A threshold file as `facegate threshold` writes it, for recogniser `digest`.
fn threshold_json(digest: &str, threshold: f32) -> String {
    serde_json::json!({
        "recognizer_digest": digest,
        "detector_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "det_size": [320, 256],
        "threshold": threshold,
        "far_target": 1e-5,
        "far": 9.9e-6,
        "frr": 0.1,
        "impostor_pairs": 1000,
        "genuine_pairs": 10,
        "images": 20,
        "embedded": 20,
        "identities": 5,
        "recognizer": "r",
        "detector": "d",
        "data": "test",
        "command": "test"
    })
    .to_string()
}

#[test]
fn a_board_whose_threshold_file_was_measured_for_another_recogniser_is_refused() {
    use facegate::unlock::app::{board_policy, load_board_models};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("models/threshold-t.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let board = board_with(dir.path(), "threshold_file = \"models/threshold-t.json\"");
    assert_eq!(
        board.matching.threshold_file.as_deref(),
        Some(file.as_path())
    );
    let models = load_board_models(&board, None, false).unwrap();
    // The recogniser file's integrity digest (format.rs), which the threshold file is keyed by.
    let own = models.recognizer_id.clone();
    assert!(own.starts_with("sha256:") && own.len() == 7 + 64, "{own}");

    // Another file's digest (one hex digit changed): refused, one line naming the file and
    // the command that measures it.
    let mut other = own.clone();
    let last = other.pop().unwrap();
    other.push(if last == '0' { '1' } else { '0' });
    std::fs::write(&file, threshold_json(&other, 0.45)).unwrap();
    let e = board_policy(&board, &models).unwrap_err().to_string();
    assert!(e.contains("threshold-t.json"), "{e}");
    assert!(e.contains("measured for the recogniser"), "{e}");
    assert!(e.contains("facegate threshold --det"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    // No file at all: refused as well.
    std::fs::remove_file(&file).unwrap();
    assert!(board_policy(&board, &models).is_err());

    // Measured for this file: its threshold is the policy's.
    std::fs::write(&file, threshold_json(&own, 0.45)).unwrap();
    assert_eq!(board_policy(&board, &models).unwrap().threshold, 0.45);

    // A board value may only be stricter than the measurement.
    let strict = board_with(
        dir.path(),
        "threshold_file = \"models/threshold-t.json\"\nthreshold = 0.5",
    );
    assert_eq!(board_policy(&strict, &models).unwrap().threshold, 0.5);
    let loose = board_with(
        dir.path(),
        "threshold_file = \"models/threshold-t.json\"\nthreshold = 0.4",
    );
    assert!(board_policy(&loose, &models).is_err());
}

/// The committed threshold files name the digest of the recogniser file the converter makes
/// from `../shared` (f32, and int8 as the demo and the boards convert it). A converter or
/// calibration change that alters those bytes fails here, before a board refuses to start,
/// with the command that measures the threshold again.
#[test]
fn committed_threshold_files_belong_to_the_files_the_converter_makes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (json, rec) in [
        (
            "models/threshold-mobilefacenet_512.json",
            common::model("mobilefacenet_512"),
        ),
        (
            "models/threshold-mobilefacenet_512_int8.json",
            common::model_int8("mobilefacenet_512"),
        ),
    ] {
        let v = common::read_json(&root.join(json));
        let (_, digest) = ModelFile::read_with_digest(&rec).unwrap();
        assert_eq!(
            format!("sha256:{digest}"),
            v["recognizer_digest"].as_str().unwrap(),
            "{json} was measured for another file than {}: measure again with `{}`",
            rec.display(),
            v["command"].as_str().unwrap()
        );
    }
}
