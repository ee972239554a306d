//! Bad input through the `facegate` binary: each case gives one line naming the file and the
//! problem on stderr, a non-zero exit code, no panic, and no partial output file.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Runs facegate and returns (success, stdout, stderr).
fn facegate(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = bin_command(env!("CARGO_BIN_EXE_facegate"))
        .args(args)
        .env(
            "FACEGATE_MODEL_CACHE",
            std::env::temp_dir().join("facegate-test-cache"),
        )
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(stderr: &str, file: &Path, what: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "names {}: {stderr}",
        file.display()
    );
    assert!(stderr.contains(what), "says `{what}`: {stderr}");
}

fn os(p: &Path) -> &std::ffi::OsStr {
    p.as_os_str()
}

#[test]
fn truncated_jpeg_and_text_file_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(shared().join("data/images/two_faces.jpg")).unwrap();
    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "this is not an image\n").unwrap();
    let det = model("det_500m");
    let draw = dir.path().join("drawn");
    for (file, what) in [(&truncated, "truncated JPEG"), (&text, "unknown format")] {
        let (ok, stdout, stderr) = facegate(&[
            "detect".as_ref(),
            "--det".as_ref(),
            os(&det),
            "--draw".as_ref(),
            os(&draw),
            os(file),
        ]);
        assert!(!ok, "non-zero exit for {}", file.display());
        assert!(stdout.is_empty(), "no JSON for a bad image: {stdout}");
        assert_one_line_error(&stderr, file, what);
    }
    let drawn: Vec<PathBuf> = std::fs::read_dir(&draw)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(drawn.is_empty(), "no partial drawings: {drawn:?}");
}

#[test]
fn empty_model_and_wrong_family_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let img = shared().join("data/images/two_faces.jpg");
    let (ok, _, stderr) = facegate(&["detect".as_ref(), "--det".as_ref(), os(&empty), os(&img)]);
    assert!(!ok);
    assert_one_line_error(&stderr, &empty, "empty file");

    // A detector passed where the recogniser belongs.
    let det = model("det_500m");
    let (ok, stdout, stderr) = facegate(&[
        "embed".as_ref(),
        "--det".as_ref(),
        os(&det),
        "--rec".as_ref(),
        os(&det),
        os(&img),
    ]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert_one_line_error(&stderr, &det, "expected a MobileFaceNet face recogniser");
}

#[test]
fn int8_model_with_a_minus_128_weight_is_refused_by_name() {
    // The int8 kernels rely on weights within ±127 (a NEON GEMM sums two products in i16);
    // a file from another quantiser could hold -128, and must be refused, not mis-computed.
    let good = model_int8("mobilefacenet_512");
    let mut file = facegate::format::ModelFile::read(&good).unwrap();
    let (name, tensor) = file
        .tensors
        .iter_mut()
        .find(|(_, t)| matches!(t.values, facegate::format::TensorValues::I8(_)))
        .expect("an int8 weight");
    let name = name.clone();
    if let facegate::format::TensorValues::I8(v) = &mut tensor.values {
        v[0] = i8::MIN;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("minus128.safetensors");
    file.write(&bad).unwrap();
    let det = model("det_500m");
    let img = shared().join("data/images/two_faces.jpg");
    let (ok, stdout, stderr) = facegate(&[
        "embed".as_ref(),
        "--det".as_ref(),
        os(&det),
        "--rec".as_ref(),
        os(&bad),
        os(&img),
    ]);
    assert!(!ok, "accepted a -128 weight in {name}");
    assert!(stdout.is_empty());
    assert_one_line_error(&stderr, &bad, "-128");
}
