//! Face-by-face comparison of two detectors' outputs on the same image (ours vs the
//! onnxruntime reference): which faces correspond, how far boxes and keypoints moved, and
//! which faces only one side found.
//!
//! Matching is greedy by IoU over all candidate pairs: pairs with `IoU >= min_iou` are
//! sorted by IoU descending (ties: lower reference index, then lower index of ours) and
//! accepted when neither face is already matched. IoU is [`crate::eval::iou`] (continuous,
//! no `+ 1`). Also reads the reference's JSON-lines output (`ref_pipeline.py detect|embed`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::iou;

/// One detected face, as both engines report it (the reference's JSON field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Five keypoints: eyes, nose, mouth corners.
    pub kps: [[f32; 2]; 5],
    /// L2-normalised embedding (present in `embed` output only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

/// One JSON line of `ref_pipeline.py`: an image path as given on its command line and its faces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefImage {
    pub image: String,
    pub faces: Vec<Face>,
}

/// A matched pair of faces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchedPair {
    /// Index into `ours`.
    pub ours: usize,
    /// Index into `reference`.
    pub reference: usize,
    pub iou: f32,
    /// Largest Euclidean distance between corresponding keypoints, in pixels.
    pub max_kps_dist: f32,
    /// `ours.score - reference.score`.
    pub score_diff: f32,
}

/// Result of [`match_faces`]; unmatched lists are indices, ascending.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaceMatch {
    pub pairs: Vec<MatchedPair>,
    pub unmatched_ours: Vec<usize>,
    pub unmatched_reference: Vec<usize>,
}

impl FaceMatch {
    /// Largest keypoint distance over all matched pairs (0 if none).
    pub fn max_kps_dist(&self) -> f32 {
        self.pairs
            .iter()
            .map(|p| p.max_kps_dist)
            .fold(0.0, f32::max)
    }

    /// Smallest IoU over all matched pairs (1 if none).
    pub fn min_iou(&self) -> f32 {
        self.pairs.iter().map(|p| p.iou).fold(1.0, f32::min)
    }
}

/// Largest distance between corresponding keypoints.
pub fn max_kps_distance(a: &[[f32; 2]; 5], b: &[[f32; 2]; 5]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p[0] - q[0]).hypot(p[1] - q[1]))
        .fold(0.0, f32::max)
}

/// Greedy IoU matching of `ours` against `reference` (module documentation).
pub fn match_faces(ours: &[Face], reference: &[Face], min_iou: f32) -> FaceMatch {
    let mut cand: Vec<(f32, usize, usize)> = Vec::new();
    for (r, rf) in reference.iter().enumerate() {
        for (o, of) in ours.iter().enumerate() {
            let v = iou(&of.bbox, &rf.bbox);
            if v >= min_iou && v > 0.0 {
                cand.push((v, r, o));
            }
        }
    }
    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut used_o = vec![false; ours.len()];
    let mut used_r = vec![false; reference.len()];
    let mut pairs = Vec::new();
    for (v, r, o) in cand {
        if used_o[o] || used_r[r] {
            continue;
        }
        used_o[o] = true;
        used_r[r] = true;
        pairs.push(MatchedPair {
            ours: o,
            reference: r,
            iou: v,
            max_kps_dist: max_kps_distance(&ours[o].kps, &reference[r].kps),
            score_diff: ours[o].score - reference[r].score,
        });
    }
    let unmatched = |used: &[bool]| (0..used.len()).filter(|&i| !used[i]).collect();
    FaceMatch {
        unmatched_ours: unmatched(&used_o),
        unmatched_reference: unmatched(&used_r),
        pairs,
    }
}

/// Reads `ref_pipeline.py` JSON-lines output (one image per line). Errors name file and line.
pub fn read_ref_jsonl(file: &Path) -> Result<Vec<RefImage>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Msg(format!("{}:{}: {e}", file.display(), i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(score: f32, bbox: [f32; 4]) -> Face {
        let [x1, y1, x2, y2] = bbox;
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        Face {
            score,
            bbox,
            kps: [[x1, y1], [x2, y1], [cx, cy], [x1, y2], [x2, y2]],
            embedding: None,
        }
    }

    #[test]
    fn greedy_matching() {
        let reference = vec![
            face(0.9, [0.0, 0.0, 10.0, 10.0]),
            face(0.8, [100.0, 0.0, 110.0, 10.0]),
            face(0.7, [200.0, 0.0, 210.0, 10.0]), // only the reference finds it
        ];
        let mut shifted = face(0.85, [1.0, 0.0, 11.0, 10.0]); // IoU 9/11 with ref 0
        shifted.kps[2] = [8.0, 9.0]; // nose moved by (3, 4) -> 5 px
        let ours = vec![
            face(0.5, [300.0, 0.0, 310.0, 10.0]), // only ours
            face(0.81, [100.0, 0.0, 110.0, 10.0]),
            shifted,
        ];
        let m = match_faces(&ours, &reference, 0.5);
        assert_eq!(m.pairs.len(), 2);
        assert_eq!(
            (m.pairs[0].ours, m.pairs[0].reference, m.pairs[0].iou),
            (1, 1, 1.0)
        );
        assert!(m.pairs[0].max_kps_dist == 0.0);
        assert!((m.pairs[0].score_diff - 0.01).abs() < 1e-6);
        assert_eq!((m.pairs[1].ours, m.pairs[1].reference), (2, 0));
        assert!((m.pairs[1].iou - 9.0 / 11.0).abs() < 1e-6);
        assert!((m.pairs[1].max_kps_dist - 5.0).abs() < 1e-5);
        assert_eq!(m.unmatched_ours, vec![0]);
        assert_eq!(m.unmatched_reference, vec![2]);
        assert!((m.max_kps_dist() - 5.0).abs() < 1e-5);
        // a stricter threshold unmatches the shifted face
        let m = match_faces(&ours, &reference, 0.9);
        assert_eq!(m.pairs.len(), 1);
        assert_eq!(m.unmatched_ours, vec![0, 2]);
        assert_eq!(m.unmatched_reference, vec![0, 2]);
    }

    #[test]
    fn best_iou_wins_over_order() {
        // ours[0] overlaps both reference faces; the better pair (ours[1], ref[0]) is taken
        // first, so ours[0] goes to ref[1]
        let reference = vec![
            face(0.9, [0.0, 0.0, 10.0, 10.0]),
            face(0.9, [4.0, 0.0, 14.0, 10.0]),
        ];
        let ours = vec![
            face(0.9, [2.0, 0.0, 12.0, 10.0]),
            face(0.9, [0.0, 0.0, 10.0, 10.0]),
        ];
        let m = match_faces(&ours, &reference, 0.3);
        let got: Vec<(usize, usize)> = m.pairs.iter().map(|p| (p.ours, p.reference)).collect();
        assert_eq!(got, vec![(1, 0), (0, 1)]);
        assert!(match_faces(&[], &reference, 0.5).pairs.is_empty());
        assert_eq!(
            match_faces(&[], &reference, 0.5).unmatched_reference,
            vec![0, 1]
        );
    }

    #[test]
    fn reads_reference_json_lines() {
        let dir = std::env::temp_dir().join(format!("eval_match_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("r.jsonl");
        let line = r#"{"image": "a.jpg", "faces": [{"score": 0.9, "box": [1, 2, 3, 4], "kps": [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]], "embedding": [0.6, 0.8]}]}"#;
        std::fs::write(
            &f,
            format!("{line}\n{{\"image\": \"b.jpg\", \"faces\": []}}\n"),
        )
        .unwrap();
        let r = read_ref_jsonl(&f).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].faces[0].bbox, [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(r[0].faces[0].embedding.as_deref(), Some(&[0.6f32, 0.8][..]));
        std::fs::write(&f, "{\"image\": 1}\n").unwrap();
        let e = read_ref_jsonl(&f).unwrap_err().to_string();
        assert!(e.contains("r.jsonl:1:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
