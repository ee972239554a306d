//! Evaluation of the pipeline against ground truth and against the independent reference:
//! detection AP on WIDER FACE ([`wider`], [`ap`]), face verification metrics on LFW-style
//! pair lists ([`verification`]) and face-by-face comparison of two engines' detections
//! ([`matching`]).
//!
//! Everything here is pure Rust on plain slices: it runs in tests and benchmarks on the
//! host, independent of the tensor backend, so the same code scores our output and the
//! onnxruntime reference's output.

pub mod ap;
pub mod matching;
pub mod verification;
pub mod wider;

/// Intersection over union of two boxes `[x1, y1, x2, y2]`, in the continuous convention:
/// width is `x2 - x1` (no `+ 1`). Degenerate or empty boxes give 0, never NaN.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::iou;

    #[test]
    fn iou_basics() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 0.0, 20.0, 10.0]), 0.0);
        // half overlap: inter 50, union 150
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }
}
