//! From raw SCRFD outputs to faces: anchor centres from the feature-map size (so any input
//! size works), distance decoding of boxes and keypoints, the score threshold, and NMS — pure
//! functions, in the same arithmetic InsightFace uses so the boxes agree with its numbers.

use serde::{Deserialize, Serialize};

use crate::models::scrfd::LevelOutput;

/// InsightFace's defaults.
pub const DEFAULT_SCORE_THRESHOLD: f32 = 0.5;
pub const DEFAULT_NMS_IOU: f32 = 0.4;

/// A detected face in image pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    pub score: f32,
    /// `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// Eyes (left, right as seen), nose tip, mouth corners: `[[x, y]; 5]`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kps: Option<[[f32; 2]; 5]>,
}

impl Face {
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }

    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }

    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }

    pub fn centre(&self) -> [f32; 2] {
        [
            (self.bbox[0] + self.bbox[2]) / 2.0,
            (self.bbox[1] + self.bbox[3]) / 2.0,
        ]
    }
}

/// Decodes every anchor whose score reaches `threshold`, with coordinates divided by
/// `scale` (the letterbox scale) to land in the original image.
pub fn decode(levels: &[LevelOutput], threshold: f32, scale: f32) -> Vec<Face> {
    let mut faces = Vec::new();
    for l in levels {
        let s = l.stride as f32;
        for (i, &score) in l.scores.iter().enumerate() {
            if score < threshold {
                continue;
            }
            let cell = i / l.anchors;
            let cx = (cell % l.width) as f32 * s;
            let cy = (cell / l.width) as f32 * s;
            let d = &l.boxes[4 * i..4 * i + 4];
            let bbox = [
                (cx - d[0] * s) / scale,
                (cy - d[1] * s) / scale,
                (cx + d[2] * s) / scale,
                (cy + d[3] * s) / scale,
            ];
            let kps = l.kps.as_ref().map(|k| {
                let k = &k[10 * i..10 * i + 10];
                std::array::from_fn(|j| {
                    [(cx + k[2 * j] * s) / scale, (cy + k[2 * j + 1] * s) / scale]
                })
            });
            faces.push(Face { score, bbox, kps });
        }
    }
    faces
}

/// InsightFace's IoU: box sides counted inclusively (`x2 − x1 + 1`).
fn iou_inclusive(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    inter / (area(a) + area(b) - inter)
}

/// Greedy non-maximum suppression: highest score first, dropping faces overlapping a kept
/// one by more than `iou`.
pub fn nms(mut faces: Vec<Face>, iou: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Face> = Vec::new();
    let mut removed = vec![false; faces.len()];
    for i in 0..faces.len() {
        if removed[i] {
            continue;
        }
        for j in i + 1..faces.len() {
            if !removed[j] && iou_inclusive(&faces[i].bbox, &faces[j].bbox) > iou {
                removed[j] = true;
            }
        }
        keep.push(faces[i].clone());
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(scores: Vec<f32>, boxes: Vec<f32>, width: usize) -> LevelOutput {
        LevelOutput {
            stride: 8,
            height: scores.len() / 2 / width,
            width,
            anchors: 2,
            scores,
            boxes,
            kps: None,
        }
    }

    #[test]
    fn decode_uses_cell_centres_and_stride() {
        // 2×2 cells, 2 anchors each; only anchor row 3 (cell 1 = x 1, y 0; anchor 1) passes.
        let mut scores = vec![0.1; 8];
        scores[3] = 0.9;
        let mut boxes = vec![0.0; 32];
        boxes[12..16].copy_from_slice(&[1.0, 0.5, 2.0, 3.0]);
        let faces = decode(&[level(scores, boxes, 2)], 0.5, 2.0);
        assert_eq!(faces.len(), 1);
        // centre (8, 0); box (8-8, 0-4, 8+16, 0+24) / 2
        assert_eq!(faces[0].bbox, [0.0, -2.0, 12.0, 12.0]);
        assert_eq!(faces[0].score, 0.9);
    }

    #[test]
    fn nms_keeps_best_of_overlapping() {
        let f = |s, b| Face {
            score: s,
            bbox: b,
            kps: None,
        };
        let faces = vec![
            f(0.6, [0.0, 0.0, 10.0, 10.0]),
            f(0.9, [1.0, 1.0, 11.0, 11.0]),
            f(0.8, [50.0, 50.0, 60.0, 60.0]),
        ];
        let kept = nms(faces, 0.4);
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, vec![0.9, 0.8]);
    }

    #[test]
    fn inclusive_iou_by_hand() {
        // 11×11 boxes offset by 1: inter 10×10=100, union 121+121-100=142.
        let v = iou_inclusive(&[0.0, 0.0, 10.0, 10.0], &[1.0, 1.0, 11.0, 11.0]);
        assert!((v - 100.0 / 142.0).abs() < 1e-6);
    }
}
