//! End to end against the onnxruntime + OpenCV reference (`tools/ref_pipeline.py`, run by
//! `tools/refs/make_refs.py`): image file → letterbox → SCRFD → decoding → NMS, and photo →
//! alignment → embedding. Every face must match with IoU ≥ 0.98 and keypoints within 1 px; a
//! face found by only one side is allowed only when its score is within 0.03 of the threshold.

mod common;

use std::path::PathBuf;

use common::*;
use facegate::eval::matching::{match_faces, read_ref_jsonl, Face as RefFace, RefImage};
use facegate::pipeline::{Detector, Embedder};

const THRESHOLD: f32 = 0.5;

fn to_ref(f: &facegate::Face) -> RefFace {
    RefFace {
        score: f.score,
        bbox: f.bbox,
        kps: f.kps.expect("kps models"),
        embedding: None,
    }
}

/// Compares our detections with the reference's on every image of a reference file.
fn compare_detections(model_name: &str, size: (u32, u32), refs_file: &str, limit: Option<usize>) {
    let shared = shared();
    let mut images: Vec<RefImage> = read_ref_jsonl(&refs().join("detect").join(refs_file)).unwrap();
    if let Some(n) = limit {
        images.truncate(n);
    }
    let det = Detector::load(&model(model_name), Some(size)).unwrap();
    let (mut faces, mut worst_iou, mut worst_kps, mut borderline) = (0, 1f32, 0f32, 0);
    for r in &images {
        let img = facegate::image_io::load_rgb(&shared.join(&r.image)).unwrap();
        let ours: Vec<RefFace> = det.detect(&img).unwrap().iter().map(to_ref).collect();
        let m = match_faces(&ours, &r.faces, 0.5);
        for p in &m.pairs {
            assert!(
                p.iou >= 0.98 && p.max_kps_dist <= 1.0,
                "{}: face {} IoU {} keypoints {} px off",
                r.image,
                p.reference,
                p.iou,
                p.max_kps_dist
            );
            worst_iou = worst_iou.min(p.iou);
            worst_kps = worst_kps.max(p.max_kps_dist);
        }
        for (side, idx, list) in [
            ("ours", &m.unmatched_ours, &ours),
            ("reference", &m.unmatched_reference, &r.faces),
        ] {
            for &i in idx.iter() {
                let s = list[i].score;
                assert!(
                    (s - THRESHOLD).abs() <= 0.03,
                    "{}: a face with score {s} found only by {side}: {:?}",
                    r.image,
                    list[i].bbox
                );
                borderline += 1;
            }
        }
        faces += m.pairs.len();
    }
    eprintln!(
        "{model_name} {}x{} on {} images: {faces} faces matched, worst IoU {worst_iou:.4}, worst keypoint {worst_kps:.3} px, {borderline} borderline faces on one side only",
        size.0,
        size.1,
        images.len()
    );
    assert!(faces > 0);
}

fn subset() -> Option<usize> {
    // Under qemu the emulated f32 convolutions are ~50× slower (8 images took ~200 s of CI):
    // crowd, two_faces and the first two WIDER images still cover every code path.
    emulated().then_some(4)
}

#[test]
fn det_500m_640_matches_reference_on_crowd_two_faces_and_wider() {
    compare_detections("det_500m", (640, 640), "det_500m_640x640.jsonl", subset());
}

#[test]
fn det_2_5g_640_matches_reference_on_crowd_two_faces_and_wider() {
    compare_detections("det_2.5g", (640, 640), "det_2.5g_640x640.jsonl", subset());
}

#[test]
fn other_input_sizes_match_reference_on_crowd() {
    for model in ["det_500m", "det_2.5g"] {
        compare_detections(
            model,
            (320, 320),
            &format!("{model}_320x320_crowd.jsonl"),
            None,
        );
        if !emulated() {
            compare_detections(
                model,
                (1280, 736),
                &format!("{model}_1280x736_crowd.jsonl"),
                None,
            );
        }
    }
}

fn compare_embeddings(rec_name: &str) {
    let shared = shared();
    let images = read_ref_jsonl(&refs().join(format!("embed/det_500m_{rec_name}.jsonl"))).unwrap();
    let det = Detector::load(&model("det_500m"), None).unwrap();
    let emb = Embedder::load(&model(rec_name)).unwrap();
    let (mut n, mut worst) = (0, 1f32);
    for r in &images {
        let path: PathBuf = shared.join(&r.image);
        let img = facegate::image_io::load_rgb(&path).unwrap();
        let ours: Vec<facegate::Face> = det.detect(&img).unwrap();
        let m = match_faces(&ours.iter().map(to_ref).collect::<Vec<_>>(), &r.faces, 0.5);
        assert_eq!(
            m.pairs.len(),
            r.faces.len(),
            "{}: every reference face found",
            r.image
        );
        for p in &m.pairs {
            let e = emb.embed(&img, &ours[p.ours].kps.unwrap()).unwrap();
            let c = cosine(&e, r.faces[p.reference].embedding.as_ref().unwrap());
            assert!(c >= 0.999, "{}: face {} cosine {c}", r.image, p.reference);
            worst = worst.min(c);
            n += 1;
        }
    }
    eprintln!(
        "{rec_name}: {n} faces of data/faces/examples, photo to vector, worst cosine {worst:.5}"
    );
}

#[test]
fn embeddings_photo_to_vector_match_reference_512() {
    compare_embeddings("mobilefacenet_512");
}

#[test]
fn embeddings_photo_to_vector_match_reference_128() {
    compare_embeddings("mobilefacenet_128_relu6");
}
