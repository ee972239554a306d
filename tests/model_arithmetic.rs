//! The model arithmetic against onnxruntime on identical input tensors: the raw head outputs
//! of all four SCRFD exports at 640×640 on crowd_selfie, and both MobileFaceNets on the same
//! aligned crops — on both executors: the candle reference and the fast engine (1 and 2
//! threads, so the row split is exercised).

mod common;

use candle_core::{Device, Tensor};
use common::*;
use facegate::models::mobilefacenet::MobileFaceNet;
use facegate::models::scrfd::Scrfd;
use facegate::models::LoadOptions;

/// Under qemu only our engine on two threads: the reference backend is candle's code, not
/// ours, and one thread or two differ in how rows are split, not in the kernels the emulated
/// CPU runs (both run natively). Saves two thirds of ~200 s of emulation.
fn backends() -> Vec<(&'static str, LoadOptions)> {
    if emulated() {
        return vec![("fast/2", LoadOptions::fast(2))];
    }
    vec![
        ("reference", LoadOptions::reference()),
        ("fast/1", LoadOptions::fast(1)),
        ("fast/2", LoadOptions::fast(2)),
    ]
}

fn check_scrfd(name: &str) {
    for (label, opts) in backends() {
        check_scrfd_with(name, label, &opts);
    }
}

fn check_scrfd_with(name: &str, label: &str, opts: &LoadOptions) {
    let refs = refs().join("heads");
    let meta = read_json(&refs.join(format!("{name}.json")));
    let shape: Vec<usize> = meta["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let input = Tensor::from_vec(
        read_f32(&refs.join(format!("{name}.input.f32"))),
        shape.as_slice(),
        &Device::Cpu,
    )
    .unwrap();
    let model = Scrfd::load_with(&model(name), opts).unwrap();
    let levels = model.forward(&input).unwrap();
    assert_eq!(levels.len(), 3);
    // The exports list scores for strides 8/16/32, then boxes, then keypoints.
    let ours: Vec<(&str, &Vec<f32>)> = levels
        .iter()
        .map(|l| ("scores", &l.scores))
        .chain(levels.iter().map(|l| ("boxes", &l.boxes)))
        .chain(levels.iter().map(|l| ("kps", l.kps.as_ref().unwrap())))
        .collect();
    for (i, (kind, got)) in ours.iter().enumerate() {
        let want = read_f32(&refs.join(format!("{name}.out{i}.f32")));
        assert_eq!(got.len(), want.len(), "{name} output {i} ({kind}) length");
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Boxes and keypoints are in units of the stride: 1e-2 px at stride 8 is 1.25e-3.
        let stride = [8.0, 16.0, 32.0][i % 3];
        let (tol, unit) = if *kind == "scores" {
            (1e-4, 1.0)
        } else {
            (1e-2, stride)
        };
        eprintln!(
            "{label} {name} out{i} {kind}: max |diff| = {:.3e}{}",
            max * unit,
            if unit > 1.0 { " px" } else { "" }
        );
        assert!(
            max * unit <= tol,
            "{label} {name} output {i} ({kind}): max |diff| {} > {tol}",
            max * unit
        );
    }
}

#[test]
fn scrfd_500m_bnkps_heads_equal_onnxruntime() {
    check_scrfd("det_500m");
}

#[test]
fn scrfd_2_5g_heads_equal_onnxruntime() {
    check_scrfd("det_2.5g");
}

#[test]
fn scrfd_500m_fixed_export_heads_equal_onnxruntime() {
    check_scrfd("scrfd_500m_kps");
}

#[test]
fn scrfd_2_5g_fixed_export_heads_equal_onnxruntime() {
    check_scrfd("scrfd_2.5g_kps");
}

fn check_recogniser(name: &str, dim: usize) {
    for (label, opts) in backends() {
        check_recogniser_with(name, dim, label, &opts);
    }
}

fn check_recogniser_with(name: &str, dim: usize, label: &str, opts: &LoadOptions) {
    let refs = refs().join("rec");
    let crops = read_f32(&refs.join("crops.f32"));
    let want = read_f32(&refs.join(format!("{name}.out.f32")));
    let per = 3 * 112 * 112;
    let n = crops.len() / per;
    assert!(n >= 20, "expected the example crops, found {n}");
    assert_eq!(want.len(), n * dim);
    let model = MobileFaceNet::load_with(&model(name), opts).unwrap();
    assert_eq!(model.dim(), dim);
    let mut worst = 1f32;
    for i in 0..n {
        let x = Tensor::from_slice(
            &crops[i * per..(i + 1) * per],
            (1, 3, 112, 112),
            &Device::Cpu,
        )
        .unwrap();
        let got = model.forward(&x).unwrap();
        worst = worst.min(cosine(&got, &want[i * dim..(i + 1) * dim]));
    }
    eprintln!("{label} {name}: worst cosine over {n} crops = {worst:.7}");
    assert!(worst >= 0.9999, "{label} {name}: worst cosine {worst}");
}

#[test]
fn mobilefacenet_512_equals_onnxruntime() {
    check_recogniser("mobilefacenet_512", 512);
}

#[test]
fn mobilefacenet_128_relu6_equals_onnxruntime() {
    check_recogniser("mobilefacenet_128_relu6", 128);
}
