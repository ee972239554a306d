//! The fast engine against the candle reference on real images at sizes other than the
//! export size (non-square, small), run repeatedly and across size changes so that buffer
//! planning and reuse are exercised; and the f16 weights against f32.

mod common;

use common::*;
use facegate::format::Precision;
use facegate::image_io::load_rgb;
use facegate::models::mobilefacenet::MobileFaceNet;
use facegate::models::scrfd::{LevelOutput, Scrfd};
use facegate::models::LoadOptions;
use facegate::preprocess::{fill_nhwc, letterbox};

fn heads(model: &Scrfd, w: u32, h: u32) -> Vec<LevelOutput> {
    let img = load_rgb(&shared().join("data/images/two_faces.jpg")).unwrap();
    let (canvas, _) = letterbox(&img, w, h);
    let norm = model.norm();
    let mut out = Vec::new();
    model
        .forward_nhwc(
            h as usize,
            w as usize,
            &mut |d| fill_nhwc(&canvas, norm, d),
            &mut out,
        )
        .unwrap();
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn compare(name: &str, reference: &[LevelOutput], got: &[LevelOutput], label: &str) {
    for (r, g) in reference.iter().zip(got) {
        assert_eq!((r.height, r.width), (g.height, g.width));
        let s = max_diff(&r.scores, &g.scores);
        let b = max_diff(&r.boxes, &g.boxes) * r.stride as f32;
        let k = max_diff(r.kps.as_ref().unwrap(), g.kps.as_ref().unwrap()) * r.stride as f32;
        eprintln!(
            "{label} {name} stride {}: scores {s:.2e}, boxes {b:.2e} px, kps {k:.2e} px",
            r.stride
        );
        assert!(s <= 1e-4 && b <= 1e-2 && k <= 1e-2, "{label} {name}");
    }
}

#[test]
fn scrfd_fast_equals_reference_at_any_size() {
    for name in ["det_500m", "det_2.5g"] {
        let path = model(name);
        let reference = Scrfd::load_with(&path, &LoadOptions::reference()).unwrap();
        let fast = Scrfd::load_with(&path, &LoadOptions::fast(2)).unwrap();
        for (w, h) in [(320, 256), (160, 96), (320, 256)] {
            let r = heads(&reference, w, h);
            // Twice: the second run reuses the planned buffers.
            for _ in 0..2 {
                compare(name, &r, &heads(&fast, w, h), &format!("f32 {w}x{h}"));
            }
        }
    }
}

#[test]
fn scrfd_f16_weights_stay_close() {
    let path = model("det_500m");
    let reference = Scrfd::load_with(&path, &LoadOptions::reference()).unwrap();
    let opts = LoadOptions {
        precision: Some(Precision::F16),
        ..LoadOptions::fast(2)
    };
    let f16 = Scrfd::load_with(&path, &opts).unwrap();
    assert_eq!(f16.precision(), Precision::F16);
    let (r, g) = (heads(&reference, 320, 256), heads(&f16, 320, 256));
    for (r, g) in r.iter().zip(&g) {
        let s = max_diff(&r.scores, &g.scores);
        // Boxes where it matters: anchors the reference is confident about.
        let b = r
            .scores
            .iter()
            .enumerate()
            .filter(|(_, &p)| p >= 0.3)
            .flat_map(|(i, _)| (4 * i..4 * i + 4).map(|j| (r.boxes[j] - g.boxes[j]).abs()))
            .fold(0.0, f32::max)
            * r.stride as f32;
        eprintln!(
            "f16 det_500m stride {}: scores {s:.2e}, confident boxes {b:.2e} px",
            r.stride
        );
        assert!(
            s <= 5e-3 && b <= 0.25,
            "f16 drifted: scores {s}, boxes {b} px"
        );
    }
}

#[test]
fn mobilefacenet_fast_and_f16_against_reference() {
    let crops = read_f32(&refs().join("rec/crops.f32"));
    let per = 3 * 112 * 112;
    for name in ["mobilefacenet_512", "mobilefacenet_128_relu6"] {
        let path = model(name);
        let reference = MobileFaceNet::load_with(&path, &LoadOptions::reference()).unwrap();
        let fast = MobileFaceNet::load_with(&path, &LoadOptions::fast(2)).unwrap();
        let f16 = MobileFaceNet::load_with(
            &path,
            &LoadOptions {
                precision: Some(Precision::F16),
                ..LoadOptions::fast(1)
            },
        )
        .unwrap();
        let (mut worst_fast, mut worst_f16) = (1f32, 1f32);
        let mut e = Vec::new();
        for crop in crops.chunks_exact(per) {
            let x =
                candle_core::Tensor::from_slice(crop, (1, 3, 112, 112), &candle_core::Device::Cpu)
                    .unwrap();
            let r = reference.forward(&x).unwrap();
            worst_fast = worst_fast.min(cosine(&r, &fast.forward(&x).unwrap()));
            // The NHWC entry point, as the pipeline feeds it.
            let nhwc = x
                .permute((0, 2, 3, 1))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            f16.forward_nhwc(&mut |d| d.copy_from_slice(&nhwc), &mut e)
                .unwrap();
            worst_f16 = worst_f16.min(cosine(&r, &e));
        }
        eprintln!("{name}: worst cosine fast {worst_fast:.7}, f16 {worst_f16:.7}");
        assert!(worst_fast >= 0.9999, "{name} fast: {worst_fast}");
        assert!(worst_f16 >= 0.9995, "{name} f16: {worst_f16}");
    }
}

#[test]
fn f16_file_round_trips() {
    use facegate::format::{ModelFile, TensorValues};
    let f32_file = ModelFile::read(&model("mobilefacenet_128_relu6")).unwrap();
    let f16 = f32_file.to_f16();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    f16.write(&path).unwrap();
    let back = ModelFile::read(&path).unwrap();
    assert_eq!(back, f16);
    assert_eq!(back.precision, Precision::F16);
    let w = back
        .tensors
        .iter()
        .find(|(n, _)| n.ends_with(".weight"))
        .unwrap()
        .1;
    assert!(matches!(w.values, TensorValues::F16(_)));
    // Dequantised weights within f16 rounding of the originals.
    for (name, t) in &f32_file.tensors {
        let (a, b) = (t.to_f32(), back.tensors[name].to_f32());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= x.abs() * 1e-3 + 1e-7, "{name}: {x} vs {y}");
        }
    }
}

/// The f16 model on the kernels the CPU selects for it: f16 arithmetic where the CPU has
/// it (aarch64 FEAT_FP16, e.g. under `QEMU_CPU=max`), else its weights widened to f32.
/// Embeddings of 20 LFW crops against the f32 model's on the same fast engine; the
/// fidelity criterion is a cosine of at least 0.9995 (MobileFaceNet-512).
#[test]
fn mobilefacenet_f16_kernels_against_f32() {
    let crops = read_f32(&refs().join("rec/crops.f32"));
    let path = model("mobilefacenet_512");
    let f32_model = MobileFaceNet::load_with(&path, &LoadOptions::fast(2)).unwrap();
    let f16_model = MobileFaceNet::load_with(
        &path,
        &LoadOptions {
            precision: Some(Precision::F16),
            ..LoadOptions::fast(2)
        },
    )
    .unwrap();
    eprintln!("kernels: {}", facegate::kernels::kernels().describe());
    let plane = 112 * 112;
    let (mut worst, mut sum, mut n) = (1f32, 0f32, 0);
    let (mut e32, mut e16) = (Vec::new(), Vec::new());
    for crop in crops.chunks_exact(3 * plane).take(20) {
        // NCHW crop to the NHWC the pipeline feeds
        let fill = &mut |d: &mut [f32]| {
            for (i, px) in d.chunks_exact_mut(3).enumerate() {
                for (c, v) in px.iter_mut().enumerate() {
                    *v = crop[c * plane + i];
                }
            }
        };
        f32_model.forward_nhwc(fill, &mut e32).unwrap();
        f16_model.forward_nhwc(fill, &mut e16).unwrap();
        let c = cosine(&e32, &e16);
        (worst, sum, n) = (worst.min(c), sum + c, n + 1);
    }
    eprintln!(
        "mobilefacenet_512 f16 vs f32, {n} crops: worst cosine {worst:.7}, mean {:.7}",
        sum / n as f32
    );
    assert!(worst >= 0.9995, "f16 vs f32: {worst}");
}
