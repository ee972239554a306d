//! The anti-spoofing models' input crop, as their publishers take it (see
//! `ref_pipeline.py liveness`): the detector box (corners truncated to whole pixels) grown to
//! a square `scale` times its longer side about its centre, zero padding where the square
//! leaves the frame, then OpenCV's bilinear resize to the network's input size.
//!
//! The arithmetic copies the reference's integer truncations (`int()` rounds towards zero,
//! as Rust's `as` does) so that the crop, not just the model, agrees with onnxruntime's.

use image::RgbImage;

use crate::detect::Face;
use crate::preprocess::{resize_window, Window};

/// Where the square lands in the frame: the pixels copied (`x1..x2`, `y1..y2`) and the zero
/// borders around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropWindow {
    pub x1: i64,
    pub y1: i64,
    pub x2: i64,
    pub y2: i64,
    pub top: i64,
    pub bottom: i64,
    pub left: i64,
    pub right: i64,
}

impl CropWindow {
    /// The window for `bbox` (`[x1, y1, x2, y2]`) in a `width × height` frame.
    pub fn new(bbox: [f32; 4], scale: f32, width: u32, height: u32) -> CropWindow {
        let (fw, fh) = (width as i64, height as i64);
        // Bound the box to a frame's size around the frame (NaN → 0): a real face box is
        // well inside, and a corrupt one can then never ask for a huge square.
        let (mw, mh) = (width as f32, height as f32);
        let bounded = [
            bbox[0].clamp(-mw, 2.0 * mw),
            bbox[1].clamp(-mh, 2.0 * mh),
            bbox[2].clamp(-mw, 2.0 * mw),
            bbox[3].clamp(-mh, 2.0 * mh),
        ];
        let scale = scale.clamp(1.0, 4.0);
        let [bx, by, bx2, by2] = bounded.map(|v| if v.is_nan() { 0 } else { v as f64 as i64 });
        let (w, h) = (bx2 - bx, by2 - by);
        let l = w.max(h);
        let (xc, yc) = (bx as f64 + w as f64 / 2.0, by as f64 + h as f64 / 2.0);
        let side = l as f64 * scale as f64;
        let (x, y) = ((xc - side / 2.0) as i64, (yc - side / 2.0) as i64);
        let (x1, y1) = (x.max(0), y.max(0));
        let x2 = if x as f64 + side > fw as f64 {
            fw
        } else {
            x + side as i64
        };
        let y2 = if y as f64 + side > fh as f64 {
            fh
        } else {
            y + side as i64
        };
        CropWindow {
            x1,
            y1,
            x2,
            y2,
            top: y1 - y,
            bottom: (side - y2 as f64 + y as f64) as i64,
            left: x1 - x,
            right: side as i64 - x2 + x,
        }
    }

    /// Size of the padded square before resizing.
    pub fn size(&self) -> (i64, i64) {
        (
            self.left + (self.x2 - self.x1).max(0) + self.right,
            self.top + (self.y2 - self.y1).max(0) + self.bottom,
        )
    }
}

impl CropWindow {
    /// The padded square as a [`Window`] of the frame: the copied pixels (`x1..x2`,
    /// `y1..y2`, cut to the square) at `left, top`, zero around them.
    pub fn window(&self) -> Window {
        let (w, h) = self.size();
        let (w, h) = (w.max(1) as usize, h.max(1) as usize);
        // Left and top are never negative (x1 = max(x, 0)), and the square holds left +
        // copied + right columns; a box wholly outside the frame copies nothing.
        let (left, top) = (self.left as usize, self.top as usize);
        let cw = (self.x2 - self.x1).clamp(0, w as i64 - self.left) as usize;
        let ch = (self.y2 - self.y1).clamp(0, h as i64 - self.top) as usize;
        Window {
            width: w,
            height: h,
            cols: left..left + cw,
            rows: top..top + ch,
            origin: (self.x1 as usize, self.y1 as usize),
        }
    }
}

/// The network input crop of the box `bbox` of `img` (`size × size`): the square
/// [`CropWindow`] resized like `cv2.resize(..., INTER_LINEAR)`, each finished row handed to
/// `emit(dy, row)` — straight from the frame, without building the padded square.
pub fn crop_rows(
    img: &RgbImage,
    bbox: [f32; 4],
    scale: f32,
    size: u32,
    emit: impl FnMut(usize, &[u8]),
) {
    let win = CropWindow::new(bbox, scale, img.width(), img.height()).window();
    resize_window(img, &win, size as usize, size as usize, emit)
}

/// [`crop_rows`] as an image.
pub fn crop_box(img: &RgbImage, bbox: [f32; 4], scale: f32, size: u32) -> RgbImage {
    let row = size as usize * 3;
    let mut out = RgbImage::new(size, size);
    crop_rows(img, bbox, scale, size, |dy, r| {
        out.as_mut()[dy * row..(dy + 1) * row].copy_from_slice(r)
    });
    out
}

/// [`crop_box`] of a detected face.
pub fn crop_face(img: &RgbImage, face: &Face, scale: f32, size: u32) -> RgbImage {
    crop_box(img, face.bbox, scale, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::resize_bilinear;

    #[test]
    fn window_inside_the_frame() {
        // Box 100..140 × 50..110 (40 × 60): l = 60, side 90, centre (120, 80):
        // x = int(120 − 45) = 75, y = int(80 − 45) = 35; no padding.
        let w = CropWindow::new([100.7, 50.2, 140.9, 110.5], 1.5, 640, 480);
        assert_eq!((w.x1, w.y1, w.x2, w.y2), (75, 35, 165, 125));
        assert_eq!((w.top, w.bottom, w.left, w.right), (0, 0, 0, 0));
        assert_eq!(w.size(), (90, 90));
    }

    #[test]
    fn window_padded_at_the_edges() {
        // Box 0..41 × 5..46 (41 × 41) in a 50×40 frame: side 61.5, centre (20.5, 25.5):
        // x = int(-10.25) = -10 (towards zero), y = int(-5.25) = -5; x + 61.5 > 50 → x2 = 50,
        // y2 = 40; left 10, top 5, right int(61.5) − 50 − 10 = 1, bottom int(61.5 − 40 − 5) = 16.
        let w = CropWindow::new([0.0, 5.0, 41.0, 46.0], 1.5, 50, 40);
        assert_eq!((w.x1, w.y1, w.x2, w.y2), (0, 0, 50, 40));
        assert_eq!((w.top, w.bottom, w.left, w.right), (5, 16, 10, 1));
        assert_eq!(w.size(), (61, 61));
    }

    #[test]
    fn corrupt_boxes_stay_bounded() {
        for b in [
            [f32::NAN, 0.0, 10.0, 10.0],
            [0.0, 0.0, f32::INFINITY, 1e30],
            [-1e30, -1e30, 1e30, 1e30],
            [30.0, 30.0, 10.0, 10.0],
        ] {
            let (w, h) = CropWindow::new(b, 1.5, 50, 40).size();
            assert!(
                (0..=400).contains(&w) && (0..=400).contains(&h),
                "{b:?}: {w}x{h}"
            );
            let _ = crop_box(&RgbImage::new(50, 40), b, 1.5, 16);
        }
    }

    /// The padded square built pixel by pixel from the window's fields (the reference's
    /// slice of the frame with a zero border), to resize with [`resize_bilinear`].
    fn padded_square(img: &RgbImage, w: &CropWindow) -> RgbImage {
        let (sw, sh) = w.size();
        RgbImage::from_fn(sw.max(1) as u32, sh.max(1) as u32, |x, y| {
            let (fx, fy) = (x as i64 - w.left + w.x1, y as i64 - w.top + w.y1);
            if (w.x1..w.x2).contains(&fx) && (w.y1..w.y2).contains(&fy) {
                *img.get_pixel(fx as u32, fy as u32)
            } else {
                image::Rgb([0, 0, 0])
            }
        })
    }

    #[test]
    fn square_copies_the_frame_and_pads_with_zeros() {
        let img = RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8, y as u8, 200]));
        let sq = padded_square(&img, &CropWindow::new([0.0, 5.0, 41.0, 46.0], 1.5, 50, 40));
        assert_eq!(sq.dimensions(), (61, 61));
        // Frame pixel (0, 0) lands at (left, top) = (10, 5); the corner is padding.
        assert_eq!(sq.get_pixel(10, 5).0, [0, 0, 200]);
        assert_eq!(sq.get_pixel(10 + 49, 5 + 39).0, [49, 39, 200]);
        assert_eq!(sq.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(sq.get_pixel(60, 60).0, [0, 0, 0]);
    }

    #[test]
    fn crop_equals_resizing_the_padded_square() {
        // Boxes inside, across every edge, larger than the frame, tiny, and wholly outside;
        // crops smaller and larger than the square (down- and upscaling).
        let img = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (x + y * 3) as u8, (x ^ y) as u8])
        });
        let boxes = [
            [30.2, 20.7, 55.9, 50.1],
            [-10.0, -5.0, 20.0, 30.0],
            [80.0, 40.0, 96.5, 60.9],
            [0.0, 0.0, 97.0, 61.0],
            [-50.0, -30.0, 150.0, 90.0],
            [40.0, 30.0, 41.5, 31.5],
            [120.0, 70.0, 150.0, 100.0],
            [-40.0, 10.0, -5.0, 50.0],
        ];
        for b in boxes {
            let win = CropWindow::new(b, 1.5, 97, 61);
            for size in [16, 80, 128, 300] {
                let want = resize_bilinear(&padded_square(&img, &win), size, size);
                assert_eq!(crop_box(&img, b, 1.5, size), want, "box {b:?} at {size}");
            }
        }
    }
}
