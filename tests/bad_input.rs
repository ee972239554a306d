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

#[test]
fn tampered_model_and_bad_metadata_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let img = shared().join("data/images/two_faces.jpg");
    // One byte of tensor data changed after conversion.
    let good = std::fs::read(model("det_500m")).unwrap();
    let mut bytes = good.clone();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x80;
    let tampered = dir.path().join("tampered.safetensors");
    std::fs::write(&tampered, &bytes).unwrap();
    let (ok, stdout, stderr) =
        facegate(&["detect".as_ref(), "--det".as_ref(), os(&tampered), os(&img)]);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert_one_line_error(&stderr, &tampered, "integrity digest mismatch");
    // Zero anchors per cell (a division by zero in decoding), written with a correct digest.
    let mut file = facegate::format::ModelFile::read(&model("det_500m")).unwrap();
    if let facegate::format::ModelConfig::Scrfd(c) = &mut file.config {
        c.anchors_per_cell = 0;
    }
    let bad = dir.path().join("anchors0.safetensors");
    file.write_unvalidated(&bad).unwrap();
    let (ok, stdout, stderr) = facegate(&["detect".as_ref(), "--det".as_ref(), os(&bad), os(&img)]);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert_one_line_error(&stderr, &bad, "0 anchors per cell");
}

#[test]
fn embed_with_a_zero_embedding_recogniser_fails_instead_of_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = facegate::format::ModelFile::read(&model("mobilefacenet_512")).unwrap();
    for t in ["embedding.weight", "embedding.bias"] {
        if let facegate::format::TensorValues::F32(v) = &mut file.tensors.get_mut(t).unwrap().values
        {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
    }
    let rec = dir.path().join("zero.safetensors");
    file.write(&rec).unwrap();
    let img = shared().join("data/images/two_faces.jpg");
    let det = model("det_500m");
    let (ok, stdout, stderr) = facegate(&[
        "embed".as_ref(),
        "--det".as_ref(),
        os(&det),
        "--rec".as_ref(),
        os(&rec),
        os(&img),
    ]);
    assert!(!ok, "exit 0 with a zero embedding: {stdout}");
    assert!(stdout.is_empty(), "nothing printed: {stdout}");
    assert_one_line_error(&stderr, &img, "embedding of norm 0");
}
