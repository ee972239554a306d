//! Detection average precision at an IoU threshold (0.5 for WIDER FACE), VOC style.
//!
//! Definitions (what the numbers mean, precisely):
//! - All detections of all images are ranked by score, descending, in one global list.
//!   Equal scores keep image order, then the order within the image (a stable sort), so the
//!   result is deterministic.
//! - Walking the list, a detection is matched to the unmatched, non-ignored ground-truth box
//!   of its image with the highest IoU; it is a true positive if that IoU is `>= iou_thresh`
//!   (the matched box is then used up), else a false positive. A second detection of an
//!   already matched face is therefore a false positive.
//! - Ignore regions ([`average_precision_with_ignore`]): a ground-truth face flagged
//!   `ignore` does not count in the recall denominator. A detection that is not a true
//!   positive but has IoU `>= iou_thresh` with an ignored face counts neither as TP nor FP
//!   (it is dropped from the ranked list). Valid faces are tried first, so a detection
//!   overlapping both a valid and an ignored face is a TP. An ignored face absorbs any number
//!   of detections (crowds of tiny faces are often detected as several boxes).
//! - [`IgnoreRule`] decides which WIDER faces are ignored: width `x2 - x1 < min_size` OR
//!   height `y2 - y1 < min_size` (continuous convention, i.e. WIDER's own `w`, `h`; with the
//!   default 16 a 16×16 face is kept, a 15×40 face is ignored), and, if `ignore_invalid`, any
//!   face whose WIDER `invalid` attribute is set (boxes the annotators marked as not a
//!   usable face are treated like small faces: neither rewarded nor punished).
//! - AP is the area under the precision envelope, all points (VOC2010+): precision is made
//!   monotone from the right (`p[i] = max(p[i], p[i+1])`) and summed over every recall step,
//!   with sentinels recall 0 → precision 0 at the start and recall 1 → precision 0 at the end.

use crate::error::{Error, Result};
use crate::eval::iou;
use crate::eval::wider::GtImage;

/// One detection: confidence and box `[x1, y1, x2, y2]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub score: f32,
    pub bbox: [f32; 4],
}

/// One ground-truth face; `ignore` faces neither count as misses nor produce false positives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtFace {
    pub bbox: [f32; 4],
    pub ignore: bool,
}

/// Which ground-truth faces are ignored (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IgnoreRule {
    /// Faces with width or height strictly below this (pixels) are ignored.
    pub min_size: f32,
    /// Also ignore faces with the WIDER `invalid` flag.
    pub ignore_invalid: bool,
}

impl Default for IgnoreRule {
    fn default() -> Self {
        IgnoreRule {
            min_size: 16.0,
            ignore_invalid: true,
        }
    }
}

impl IgnoreRule {
    /// Whether a face with this box and `invalid` flag is ignored.
    pub fn is_ignored(&self, bbox: &[f32; 4], invalid: bool) -> bool {
        let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
        w < self.min_size || h < self.min_size || (self.ignore_invalid && invalid)
    }

    /// The faces of a WIDER image with their ignore flags under this rule.
    pub fn apply(&self, gt: &GtImage) -> Vec<GtFace> {
        gt.boxes
            .iter()
            .zip(&gt.invalid)
            .map(|(b, &inv)| GtFace {
                bbox: *b,
                ignore: self.is_ignored(b, inv),
            })
            .collect()
    }
}

/// The result of an AP computation.
#[derive(Debug, Clone, PartialEq)]
pub struct ApResult {
    /// All-points interpolated average precision in [0, 1].
    pub ap: f64,
    /// Non-ignored ground-truth faces (the recall denominator).
    pub num_gt: usize,
    /// Ignored ground-truth faces.
    pub num_ignored_gt: usize,
    pub tp: usize,
    pub fp: usize,
    /// Detections dropped because they matched an ignored face.
    pub ignored_detections: usize,
    /// Precision and recall after each ranked (non-ignored) detection.
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
}

/// AP without ignore regions: every ground-truth box counts.
/// `gt[i]` and `dets[i]` belong to the same image.
pub fn average_precision(
    gt: &[Vec<[f32; 4]>],
    dets: &[Vec<Detection>],
    iou_thresh: f32,
) -> Result<ApResult> {
    let gt: Vec<Vec<GtFace>> = gt
        .iter()
        .map(|v| {
            v.iter()
                .map(|b| GtFace {
                    bbox: *b,
                    ignore: false,
                })
                .collect()
        })
        .collect();
    average_precision_with_ignore(&gt, dets, iou_thresh)
}

/// AP with ignore regions (see the module documentation for the exact rule).
/// `gt[i]` and `dets[i]` belong to the same image. Errors if the lengths differ or no
/// ground-truth face counts (AP is undefined then).
pub fn average_precision_with_ignore(
    gt: &[Vec<GtFace>],
    dets: &[Vec<Detection>],
    iou_thresh: f32,
) -> Result<ApResult> {
    if gt.len() != dets.len() {
        return Err(Error::Shape {
            what: "average precision: detections per image".into(),
            expected: format!("{} images (as ground truth)", gt.len()),
            got: format!("{} images", dets.len()),
        });
    }
    let num_gt = gt.iter().flatten().filter(|g| !g.ignore).count();
    let num_ignored_gt = gt.iter().flatten().filter(|g| g.ignore).count();
    if num_gt == 0 {
        return Err(Error::Msg(
            "average precision: no (non-ignored) ground-truth faces; AP is undefined".into(),
        ));
    }
    let mut order: Vec<(usize, usize)> = dets
        .iter()
        .enumerate()
        .flat_map(|(i, d)| (0..d.len()).map(move |j| (i, j)))
        .collect();
    order.sort_by(|a, b| dets[b.0][b.1].score.total_cmp(&dets[a.0][a.1].score));

    let mut used: Vec<Vec<bool>> = gt.iter().map(|g| vec![false; g.len()]).collect();
    let (mut tp, mut fp, mut ignored_detections) = (0usize, 0usize, 0usize);
    let mut precision = Vec::with_capacity(order.len());
    let mut recall = Vec::with_capacity(order.len());
    for (img, k) in order {
        let d = &dets[img][k];
        let faces = &gt[img];
        let mut best: Option<(usize, f32)> = None;
        for (g, face) in faces.iter().enumerate() {
            if face.ignore || used[img][g] {
                continue;
            }
            let o = iou(&d.bbox, &face.bbox);
            if o >= iou_thresh && best.is_none_or(|(_, b)| o > b) {
                best = Some((g, o));
            }
        }
        if let Some((g, _)) = best {
            used[img][g] = true;
            tp += 1;
        } else if faces
            .iter()
            .any(|f| f.ignore && iou(&d.bbox, &f.bbox) >= iou_thresh)
        {
            ignored_detections += 1;
            continue;
        } else {
            fp += 1;
        }
        precision.push(tp as f64 / (tp + fp) as f64);
        recall.push(tp as f64 / num_gt as f64);
    }
    Ok(ApResult {
        ap: ap_from_curve(&recall, &precision),
        num_gt,
        num_ignored_gt,
        tp,
        fp,
        ignored_detections,
        precision,
        recall,
    })
}

/// All-points interpolated AP from a ranked precision/recall curve (VOC2010+).
pub fn ap_from_curve(recall: &[f64], precision: &[f64]) -> f64 {
    let mut r = Vec::with_capacity(recall.len() + 2);
    let mut p = Vec::with_capacity(precision.len() + 2);
    r.push(0.0);
    p.push(0.0);
    r.extend_from_slice(recall);
    p.extend_from_slice(precision);
    r.push(1.0);
    p.push(0.0);
    for i in (0..p.len() - 1).rev() {
        p[i] = p[i].max(p[i + 1]);
    }
    (1..r.len())
        .filter(|&i| r[i] != r[i - 1])
        .map(|i| (r[i] - r[i - 1]) * p[i])
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32, bbox: [f32; 4]) -> Detection {
        Detection { score, bbox }
    }
    const A: [f32; 4] = [0.0, 0.0, 20.0, 20.0];
    const B: [f32; 4] = [100.0, 100.0, 140.0, 140.0];
    const FAR_AWAY: [f32; 4] = [300.0, 300.0, 330.0, 330.0];

    #[test]
    fn perfect_detector_is_one() {
        let gt = vec![vec![A, B], vec![A]];
        let dets = vec![vec![det(0.9, A), det(0.8, B)], vec![det(0.7, A)]];
        let r = average_precision(&gt, &dets, 0.5).unwrap();
        assert_eq!(r.ap, 1.0);
        assert_eq!((r.tp, r.fp, r.num_gt), (3, 0, 3));
    }

    #[test]
    fn one_false_positive_above_a_true_positive() {
        // ranks: FP (p 0, r 0), TP (p 1/2, r 1) -> envelope 1/2 over recall 0..1
        let gt = vec![vec![A]];
        let dets = vec![vec![det(0.9, FAR_AWAY), det(0.8, A)]];
        let r = average_precision(&gt, &dets, 0.5).unwrap();
        assert!((r.ap - 0.5).abs() < 1e-12, "{}", r.ap);
        // ranks TP, FP, TP with 2 GT: p = 1, 1/2, 2/3 at r = 1/2, 1/2, 1
        // envelope: 1 on (0, 1/2], 2/3 on (1/2, 1] -> 1/2 + 1/3
        let gt = vec![vec![A, B]];
        let dets = vec![vec![det(0.9, A), det(0.8, FAR_AWAY), det(0.7, B)]];
        let r = average_precision(&gt, &dets, 0.5).unwrap();
        assert!((r.ap - 5.0 / 6.0).abs() < 1e-12, "{}", r.ap);
    }

    #[test]
    fn a_miss_and_a_duplicate() {
        // 2 GT, only A found: AP = 1/2; the duplicate of A (lower score) is a FP after it
        let gt = vec![vec![A, B]];
        let dets = vec![vec![det(0.9, A), det(0.5, [1.0, 1.0, 21.0, 21.0])]];
        let r = average_precision(&gt, &dets, 0.5).unwrap();
        assert!((r.ap - 0.5).abs() < 1e-12);
        assert_eq!((r.tp, r.fp), (1, 1));
        // no detections at all
        let r = average_precision(&gt, &[vec![]], 0.5).unwrap();
        assert_eq!(r.ap, 0.0);
    }

    #[test]
    fn global_ranking_across_images() {
        // image 0: FP at 0.9; image 1: TP at 0.8 -> same as FP-above-TP: 1/2
        let gt = vec![vec![], vec![A]];
        let dets = vec![vec![det(0.9, A)], vec![det(0.8, A)]];
        let r = average_precision(&gt, &dets, 0.5).unwrap();
        assert!((r.ap - 0.5).abs() < 1e-12);
    }

    #[test]
    fn greedy_takes_highest_iou_unmatched() {
        // two GT overlap the detection; it takes the better one, the second detection the other
        let g1 = [0.0, 0.0, 10.0, 10.0];
        let g2 = [2.0, 0.0, 12.0, 10.0];
        let gt = vec![vec![g1, g2]];
        let dets = vec![vec![det(0.9, [2.0, 0.0, 12.0, 10.0]), det(0.8, g1)]];
        let r = average_precision(&gt, &dets, 0.5).unwrap();
        assert_eq!((r.tp, r.fp), (2, 0));
        assert_eq!(r.ap, 1.0);
    }

    #[test]
    fn ignore_rule() {
        let rule = IgnoreRule::default();
        assert!(!rule.is_ignored(&[0.0, 0.0, 16.0, 16.0], false));
        assert!(rule.is_ignored(&[0.0, 0.0, 15.0, 40.0], false));
        assert!(rule.is_ignored(&[0.0, 0.0, 40.0, 15.5], false));
        assert!(rule.is_ignored(&[0.0, 0.0, 40.0, 40.0], true));
        let no_inv = IgnoreRule {
            ignore_invalid: false,
            ..rule
        };
        assert!(!no_inv.is_ignored(&[0.0, 0.0, 40.0, 40.0], true));

        let small = [200.0, 200.0, 210.0, 210.0];
        let g = GtImage {
            path: "x.jpg".into(),
            boxes: vec![A, small],
            invalid: vec![false, false],
        };
        let gt = vec![rule.apply(&g)];
        assert!(gt[0][1].ignore);
        // a detection on the small face ranks first: without ignore it would be a TP,
        // and a miss of nothing... with ignore it is dropped: AP = 1 from the one valid face
        let dets = vec![vec![det(0.95, small), det(0.9, small), det(0.8, A)]];
        let r = average_precision_with_ignore(&gt, &dets, 0.5).unwrap();
        assert_eq!(r.ap, 1.0);
        assert_eq!((r.tp, r.fp, r.ignored_detections), (1, 0, 2));
        assert_eq!((r.num_gt, r.num_ignored_gt), (1, 1));
        // the same data without ignoring: small face is a TP, its duplicate a FP,
        // ranks TP, FP, TP over 2 GT -> 5/6
        let r = average_precision(&[vec![A, small]], &dets, 0.5).unwrap();
        assert!((r.ap - 5.0 / 6.0).abs() < 1e-12);
        // a missed ignored face costs nothing
        let r = average_precision_with_ignore(&gt, &[vec![det(0.8, A)]], 0.5).unwrap();
        assert_eq!(r.ap, 1.0);
    }

    #[test]
    fn errors() {
        assert!(average_precision(&[vec![A]], &[], 0.5).is_err());
        assert!(average_precision(&[vec![]], &[vec![det(1.0, A)]], 0.5).is_err());
    }
}
