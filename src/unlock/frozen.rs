//! Frozen-input check: a still image fed in as the camera stream is a spoof.
//!
//! Why it exists: the anti-spoofing network recognises a *recaptured* face (a photo or a
//! screen held up to a real camera); a still injected as the stream is no recapture, and the
//! network scores the original photo as live. But no real sensor delivers two frames whose
//! face differs by less than its own noise. So every recognised, live frame's aligned
//! 112×112 face crop is compared with the crops of the last counted frames; if it is within
//! the noise floor of any of them, the frame is refused as `frozen` (a failed attempt, like a
//! spoof). Comparing against all recent counted crops, not only the previous one, also
//! refuses a replay that alternates two stills (A, B, A).
//!
//! What it does not stop: a video replay with real motion, or a still with noise added to
//! every frame beyond the floor. Those need the anti-spoofing network (when the replay is
//! recaptured by a camera) or a trusted camera path.

use std::collections::VecDeque;

use image::RgbImage;

/// Mean absolute difference (0..=255 levels, over the three channels) below which two
/// aligned 112×112 face crops count as the same picture. Identical frames give exactly 0.
/// Measured by `tests/unlock_liveness.rs` (`frozen_floor_is_below_…`) on the recorded clips
/// of real cameras, det_500m at 320×192, repeated pictures written by the clips' transcoding
/// left out: between consecutive frames the smallest change is 0.16 (hamilton, p1 0.37,
/// median 9.7; webcam MJPEG 1.58; raw YUYV 8.27); at the loop's spacing (200 ms, the
/// smallest to any of the last 5 counted frames) 1.69 (hamilton), 3.91 (webcam), 16.0
/// (YUYV). 0.05 sits 3× under the smallest change seen at any spacing and 34× under the
/// smallest at the loop's; a repeated still (the attack) measures 0.
pub const DEFAULT_FROZEN_FLOOR: f32 = 0.05;

/// Mean absolute difference of two images of the same size, per channel sample, in levels
/// (0..=255). Images of different sizes are as different as can be (`f32::INFINITY`).
pub fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f32 {
    if a.dimensions() != b.dimensions() || a.as_raw().is_empty() {
        return f32::INFINITY;
    }
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    (sum as f64 / a.as_raw().len() as f64) as f32
}

/// The verdict on one crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrozenVerdict {
    /// Smallest difference to a remembered crop (`None`: nothing remembered yet).
    pub min_diff: Option<f32>,
    /// True when `min_diff` is under the floor.
    pub frozen: bool,
}

/// Remembers the crops of the last counted frames and judges new ones against them.
#[derive(Debug, Clone)]
pub struct FrozenCheck {
    floor: f32,
    keep: usize,
    recent: VecDeque<RgbImage>,
}

impl FrozenCheck {
    /// `floor`: see [`DEFAULT_FROZEN_FLOOR`] (0 never judges anything frozen); `keep`: how
    /// many counted crops to remember (the policy's `n`, so every frame an unlock could be
    /// made of is compared with every other).
    pub fn new(floor: f32, keep: usize) -> Self {
        FrozenCheck {
            floor,
            keep: keep.max(1),
            recent: VecDeque::new(),
        }
    }

    /// Judges `crop`. A crop that is not frozen is remembered (dropping the oldest beyond
    /// `keep`); a frozen one is not, so a still keeps being compared with its first frame.
    pub fn check(&mut self, crop: RgbImage) -> FrozenVerdict {
        let min_diff = self
            .recent
            .iter()
            .map(|r| mean_abs_diff(r, &crop))
            .min_by(f32::total_cmp);
        let frozen = min_diff.is_some_and(|d| d < self.floor);
        if !frozen {
            if self.recent.len() == self.keep {
                self.recent.pop_front();
            }
            self.recent.push_back(crop);
        }
        FrozenVerdict { min_diff, frozen }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(v: u8) -> RgbImage {
        RgbImage::from_pixel(4, 4, image::Rgb([v, v, v]))
    }

    #[test]
    fn mean_abs_diff_by_hand() {
        assert_eq!(mean_abs_diff(&flat(10), &flat(10)), 0.0);
        assert_eq!(mean_abs_diff(&flat(10), &flat(13)), 3.0);
        assert_eq!(mean_abs_diff(&flat(13), &flat(10)), 3.0);
        // One sample of 48 differs by 24: 24 / 48 = 0.5.
        let mut b = flat(10);
        b.put_pixel(1, 2, image::Rgb([10, 34, 10]));
        assert_eq!(mean_abs_diff(&flat(10), &b), 0.5);
        assert_eq!(
            mean_abs_diff(&flat(10), &RgbImage::new(3, 4)),
            f32::INFINITY
        );
    }

    #[test]
    fn a_repeated_crop_is_frozen_and_so_is_an_alternation_of_two() {
        let mut c = FrozenCheck::new(0.5, 5);
        assert_eq!(
            c.check(flat(10)),
            FrozenVerdict {
                min_diff: None,
                frozen: false
            }
        );
        assert!(c.check(flat(10)).frozen);
        assert!(!c.check(flat(20)).frozen);
        // A again: it differs from B but not from the first A.
        let v = c.check(flat(10));
        assert_eq!(v.min_diff, Some(0.0));
        assert!(v.frozen);
        // Just under the floor is frozen, at the floor is not.
        let mut just_under = flat(20);
        just_under.put_pixel(0, 0, image::Rgb([20, 20, 43])); // 23 / 48 < 0.5
        assert!(c.check(just_under).frozen);
        let mut at_floor = flat(20);
        at_floor.put_pixel(0, 0, image::Rgb([20, 20, 44])); // 24 / 48 = 0.5
        assert!(!c.check(at_floor).frozen);
    }

    #[test]
    fn only_keep_crops_are_remembered_and_floor_zero_never_freezes() {
        let mut c = FrozenCheck::new(0.5, 2);
        for v in [10, 20, 30] {
            assert!(!c.check(flat(v)).frozen);
        }
        // 10 was dropped (keep = 2): it is compared with 20 and 30 only.
        assert_eq!(c.check(flat(10)).min_diff, Some(10.0));
        let mut off = FrozenCheck::new(0.0, 5);
        assert!(!off.check(flat(10)).frozen);
        assert!(!off.check(flat(10)).frozen);
    }
}
