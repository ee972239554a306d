//! int8 fidelity: the int8 models (calibrated on `celeba_wild/calibration.txt` only) against
//! their f32 originals on images calibration never saw — LFW for the recogniser (issue
//! targets: mean cosine ≥ 0.995, minimum ≥ 0.98), the crowd selfie and WIDER FACE photos for
//! the detector.

mod common;

use std::path::PathBuf;

use common::*;
use facegate::format::Precision;
use facegate::models::LoadOptions;
use facegate::pipeline::{most_central, Detector, Embedder};

fn lfw_images(n: usize) -> Vec<PathBuf> {
    let root = shared().join("data/faces/lfw");
    let mut people: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    people.sort();
    // One image per person, spread over the alphabet.
    let step = (people.len() / n).max(1);
    people
        .iter()
        .step_by(step)
        .take(n)
        .map(|d| {
            let mut f: Vec<PathBuf> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            f.sort();
            f[0].clone()
        })
        .collect()
}

/// Cosines between f32 and int8 embeddings of the same aligned LFW crops.
fn lfw_cosines(rec: &str) -> Vec<f32> {
    let n = if emulated() { 12 } else { 200 };
    let det =
        Detector::load_with(&model("det_500m"), Some((256, 256)), &LoadOptions::fast(0)).unwrap();
    let f32_rec = Embedder::load_with(&model(rec), &LoadOptions::fast(0)).unwrap();
    let i8_rec = Embedder::load_with(&model_int8(rec), &LoadOptions::fast(0)).unwrap();
    assert_eq!(i8_rec.model().precision(), Precision::Int8);
    let mut cos = Vec::new();
    for p in lfw_images(n) {
        let img = facegate::image_io::load_rgb(&p).unwrap();
        let faces = det.detect(&img).unwrap();
        let Some(kps) = most_central(&faces, img.width(), img.height()).and_then(|f| f.kps) else {
            continue;
        };
        let a = f32_rec.embed(&img, &kps).unwrap();
        let b = i8_rec.embed(&img, &kps).unwrap();
        cos.push(cosine(&a, &b));
    }
    assert!(
        cos.len() >= n * 9 / 10,
        "faces found in {} of {n}",
        cos.len()
    );
    cos
}

fn summary(cos: &[f32]) -> (f32, f32) {
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    let min = cos.iter().cloned().fold(1.0, f32::min);
    (mean, min)
}

/// The issue's targets, met by the mixed-precision int8 model the converter writes (its
/// most sensitive layers, measured on held-back calibration photos, stay in f32).
#[test]
fn int8_embeddings_meet_the_issue_targets_on_lfw() {
    let cos = lfw_cosines("mobilefacenet_512");
    let (mean, min) = summary(&cos);
    eprintln!(
        "mobilefacenet_512 int8 vs f32 on {} LFW crops: mean cosine {mean:.5}, min {min:.5}",
        cos.len()
    );
    assert!(mean >= 0.995, "mean cosine {mean}");
    assert!(min >= 0.98, "min cosine {min}");
}

#[test]
fn int8_detector_finds_the_f32_faces() {
    let shared = shared();
    let mut images = vec![shared.join("data/images/crowd_selfie.jpg")];
    let wider = shared.join("data/detection/wider_face/WIDER_val/images");
    let mut events: Vec<PathBuf> = std::fs::read_dir(&wider)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    events.sort();
    let per_event = if emulated() { 1 } else { 2 };
    for ev in &events {
        let mut f: Vec<PathBuf> = std::fs::read_dir(ev)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        images.extend(f.into_iter().take(per_event));
    }
    let name = "det_500m";
    let a = Detector::load_with(&model(name), Some((640, 640)), &LoadOptions::fast(0)).unwrap();
    let b =
        Detector::load_with(&model_int8(name), Some((640, 640)), &LoadOptions::fast(0)).unwrap();
    let (mut total, mut found, mut iou_sum, mut min_iou, mut max_sd) = (0, 0, 0f32, 1f32, 0f32);
    for p in &images {
        let img = facegate::image_io::load_rgb(p).unwrap();
        let fa = a.detect(&img).unwrap();
        let fb = b.detect(&img).unwrap();
        let mut used = vec![false; fb.len()];
        for f in fa.iter().filter(|f| f.score >= 0.6) {
            total += 1;
            let best = fb
                .iter()
                .enumerate()
                .filter(|(j, _)| !used[*j])
                .map(|(j, g)| (j, facegate::eval::iou(&f.bbox, &g.bbox)))
                .max_by(|x, y| x.1.total_cmp(&y.1));
            if let Some((j, iou)) = best.filter(|x| x.1 >= 0.5) {
                used[j] = true;
                found += 1;
                iou_sum += iou;
                min_iou = min_iou.min(iou);
                max_sd = max_sd.max((f.score - fb[j].score).abs());
            }
        }
    }
    let recall = found as f32 / total.max(1) as f32;
    eprintln!(
        "{name} int8 vs f32 on {} images: {found}/{total} f32 faces (score >= 0.6) found ({:.1} %), IoU mean {:.3} min {min_iou:.3}, max |score diff| {max_sd:.3}",
        images.len(),
        100.0 * recall,
        iou_sum / found.max(1) as f32
    );
    assert!(total >= 50, "only {total} faces");
    assert!(recall >= 0.95, "recall {recall}");
    assert!(iou_sum / found as f32 >= 0.85, "mean IoU");
}

/// Float layers inside an int8 model really run in f32: with every convolution kept in f32
/// only the int8 ops between them (residual additions) still round, so the embedding is
/// far closer to f32 than the all-int8 model's.
#[test]
fn float_layers_of_an_int8_model_run_in_f32() {
    use facegate::engine::Engine;
    use facegate::format::{ModelConfig, ModelFile};
    use facegate::graph::Op;
    let q = ModelFile::read(&model_int8("mobilefacenet_512")).unwrap();
    // The f32 model the int8 one stands for (its rounded and, if the converter chose so,
    // equalised weights), which its activation scales belong to.
    let f = q.dequantize();
    let convs: Vec<String> = f
        .config
        .graph()
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Conv { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let scales = q.act_scales().unwrap();
    let all_float = f.quantize_int8_mixed(&scales, &convs).unwrap();
    let all_int8 = f.quantize_int8(&scales).unwrap();
    let ModelConfig::MobileFaceNet(c) = &f.config else {
        unreachable!()
    };
    let run = |m: &ModelFile| {
        let mut e = Engine::new(m, &[c.embedding], 1).unwrap();
        for (i, v) in e.input_mut(112, 112).unwrap().iter_mut().enumerate() {
            *v = ((i * 7919) % 255) as f32 / 127.5 - 1.0;
        }
        e.run().unwrap();
        e.output(c.embedding).unwrap().0.to_vec()
    };
    let (r, a, b) = (run(&f), run(&all_float), run(&all_int8));
    let (ca, cb) = (cosine(&r, &a), cosine(&r, &b));
    eprintln!("all convs float: cosine {ca:.6}; all int8: {cb:.6}");
    // Measured: 0.9980 against 0.9260 all-int8 on this synthetic (out-of-distribution)
    // input; the rounding of the ~16 int8 additions is what remains.
    assert!(ca > 0.995, "all-float-conv cosine {ca}");
    assert!(1.0 - ca < (1.0 - cb) / 20.0, "{ca} vs {cb}");
}

/// Cross-layer equalisation changes the weights, not the function: the equalised f32
/// MobileFaceNet gives the same embedding.
#[test]
fn equalised_model_computes_the_same_function() {
    use facegate::engine::Engine;
    use facegate::format::{ModelConfig, ModelFile};
    let f = ModelFile::read(&model("mobilefacenet_512")).unwrap();
    let e = facegate::quant::equalize(&f).unwrap();
    assert_ne!(f.tensors, e.tensors, "something was equalised");
    let ModelConfig::MobileFaceNet(c) = &f.config else {
        unreachable!()
    };
    let run = |m: &ModelFile| {
        let mut e = Engine::new(m, &[c.embedding], 1).unwrap();
        for (i, v) in e.input_mut(112, 112).unwrap().iter_mut().enumerate() {
            *v = ((i * 7919) % 255) as f32 / 127.5 - 1.0;
        }
        e.run().unwrap();
        e.output(c.embedding).unwrap().0.to_vec()
    };
    let cos = cosine(&run(&f), &run(&e));
    assert!(cos > 0.99999, "cosine {cos}");
}
