//! Turning a camera or photo frame into network input the way InsightFace does it, so that
//! users get the numbers they know: letterbox (keep the aspect ratio, place top-left, pad with
//! zeros), bilinear resize with OpenCV `INTER_LINEAR` semantics (no anti-aliasing, and the
//! same fixed-point arithmetic, so the resized pixels equal OpenCV's), then `(x − mean)/std`
//! straight into the engine's NHWC input (`fill_nhwc`; `to_tensor` makes the NCHW tensor of
//! the candle reference).

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::Result;
use crate::format::InputNorm;

/// Fixed-point precision of OpenCV's resize coefficients (`INTER_RESIZE_COEF_BITS`).
const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// For each destination index: the first source index and the two fixed-point weights,
/// computed as OpenCV's `resize` computes them (float coordinates, round-half-even).
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, [i32; 2])> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - s as f32;
            if s < 0 {
                s = 0;
                frac = 0.0;
            }
            if s >= src as i64 - 1 {
                s = src as i64 - 1;
                frac = 0.0;
            }
            let w0 = ((1.0 - frac) * COEF_SCALE).round_ties_even() as i32;
            let w1 = (frac * COEF_SCALE).round_ties_even() as i32;
            (s as usize, [w0, w1])
        })
        .collect()
}

/// For each destination row: the two source rows and their fixed-point weights. Unlike the
/// columns, OpenCV does not clamp a row's fraction at the borders: it clamps the row
/// indices, so when upscaling, the first and last rows blend a source row with itself with
/// weights that do not sum to one power of two exactly, and round accordingly.
fn row_taps(src: usize, dst: usize) -> Vec<([usize; 2], [i32; 2])> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor() as i64;
            let frac = f - s as f32;
            let clamp = |y: i64| y.clamp(0, src as i64 - 1) as usize;
            let w0 = ((1.0 - frac) * COEF_SCALE).round_ties_even() as i32;
            let w1 = (frac * COEF_SCALE).round_ties_even() as i32;
            ([clamp(s), clamp(s + 1)], [w0, w1])
        })
        .collect()
}

/// Bilinear resize of an RGB image, equal to OpenCV's `cv2.resize(..., INTER_LINEAR)`:
/// a horizontal pass into 32-bit sums, then a vertical pass that rounds like OpenCV's
/// vectorised code (`((s0>>4)*b0 >> 16) + ((s1>>4)*b1 >> 16)`, then `+2 >> 2`).
pub fn resize_bilinear(src: &RgbImage, dw: u32, dh: u32) -> RgbImage {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let mut dst = vec![0u8; dw as usize * dh as usize * 3];
    let window = Window {
        width: sw,
        height: sh,
        cols: 0..sw,
        rows: 0..sh,
        origin: (0, 0),
    };
    resize_window(src, &window, dw as usize, dh as usize, |dy, row| {
        dst[dy * row.len()..(dy + 1) * row.len()].copy_from_slice(row)
    });
    RgbImage::from_raw(dw, dh, dst).expect("buffer sized for the image")
}

/// A `width × height` source image made of a rectangle of a frame in a zero border. Source
/// columns `cols` and rows `rows` hold frame pixels, starting at frame pixel `origin`
/// (`(x, y)`); everything else is zero. Resizing a window equals resizing the padded image
/// (a face crop's square that leaves the frame), without building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub width: usize,
    pub height: usize,
    pub cols: std::ops::Range<usize>,
    pub rows: std::ops::Range<usize>,
    pub origin: (usize, usize),
}

/// [`resize_bilinear`] of the window `w` of `frame`, handing each finished output row
/// (`dw × 3` bytes) to `emit(dy, row)`.
pub fn resize_window(
    frame: &RgbImage,
    w: &Window,
    dw: usize,
    dh: usize,
    mut emit: impl FnMut(usize, &[u8]),
) {
    let mut out = vec![0u8; dw * 3];
    let fw = frame.width() as usize;
    let inside = !w.cols.is_empty() && !w.rows.is_empty();
    if !inside || w.width == 0 || w.height == 0 {
        // No frame pixel in the window: the padded image, and so its resize, is all zero.
        (0..dh).for_each(|dy| emit(dy, &out));
        return;
    }
    let (x0, y0) = w.origin;
    assert!(
        x0 + w.cols.len() <= fw && y0 + w.rows.len() <= frame.height() as usize,
        "window {w:?} outside the {fw}x{} frame",
        frame.height()
    );
    // A border pixel contributes nothing: its weight becomes 0 (and its index any frame
    // pixel), which is what multiplying the zero it stands for gives.
    let col = |x: usize| w.cols.contains(&x).then(|| (x0 + x - w.cols.start) * 3);
    let taps: Vec<([usize; 2], [i32; 2])> = linear_taps(w.width, dw)
        .into_iter()
        .map(|(x, [a0, a1])| {
            let x1 = (x + 1).min(w.width - 1);
            let (o0, o1) = (col(x), col(x1));
            (
                [o0.unwrap_or(0), o1.unwrap_or(0)],
                [
                    if o0.is_some() { a0 } else { 0 },
                    if o1.is_some() { a1 } else { 0 },
                ],
            )
        })
        .collect();
    let s = frame.as_raw();
    let hrow = |y: usize, out: &mut [i32]| {
        if !w.rows.contains(&y) {
            out.fill(0);
            return;
        }
        let fy = y0 + y - w.rows.start;
        let row = &s[fy * fw * 3..(fy + 1) * fw * 3];
        for (o, &([i0, i1], [a0, a1])) in out.chunks_exact_mut(3).zip(&taps) {
            let px = |i: usize| -> [u8; 3] { row[i..i + 3].try_into().expect("a whole pixel") };
            let (p0, p1) = (px(i0), px(i1));
            for c in 0..3 {
                o[c] = p0[c] as i32 * a0 + p1[c] as i32 * a1;
            }
        }
    };
    let (mut r0, mut r1) = (vec![0i32; dw * 3], vec![0i32; dw * 3]);
    let mut cached: (Option<usize>, Option<usize>) = (None, None);
    for (dy, ([y, y1], [b0, b1])) in row_taps(w.height, dh).into_iter().enumerate() {
        if cached.0 != Some(y) {
            if cached.1 == Some(y) {
                std::mem::swap(&mut r0, &mut r1);
            } else {
                hrow(y, &mut r0);
            }
            cached.0 = Some(y);
            cached.1 = None;
        }
        if cached.1 != Some(y1) {
            hrow(y1, &mut r1);
            cached.1 = Some(y1);
        }
        vertical(&r0, &r1, [b0, b1], &mut out);
        emit(dy, &out);
    }
}

avx2_twin!(vertical => vertical_body(r0: &[i32], r1: &[i32], b: [i32; 2], out: &mut [u8]));

/// The vertical pass of one output row: OpenCV's rounding of two weighted row sums.
#[inline(always)]
fn vertical_body(r0: &[i32], r1: &[i32], [b0, b1]: [i32; 2], out: &mut [u8]) {
    for ((o, &s0), &s1) in out.iter_mut().zip(r0).zip(r1) {
        let t0 = ((s0 >> 4) * b0) >> 16;
        let t1 = ((s1 >> 4) * b1) >> 16;
        *o = ((t0 + t1 + 2) >> 2).clamp(0, 255) as u8;
    }
}

/// Where a letterboxed image sits in the network input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Network input size.
    pub width: u32,
    pub height: u32,
    /// Size of the resized image in the top-left corner.
    pub inner_width: u32,
    pub inner_height: u32,
    /// Input pixels per original pixel (divide network coordinates by it).
    pub scale: f32,
}

impl Letterbox {
    /// InsightFace's letterbox geometry: fit the image's aspect ratio into `width`×`height`.
    pub fn fit(img_w: u32, img_h: u32, width: u32, height: u32) -> Self {
        let im_ratio = img_h as f64 / img_w as f64;
        let model_ratio = height as f64 / width as f64;
        let (nw, nh) = if im_ratio > model_ratio {
            let nh = height;
            ((nh as f64 / im_ratio) as u32, nh)
        } else {
            let nw = width;
            (nw, (nw as f64 * im_ratio) as u32)
        };
        let (nw, nh) = (nw.max(1), nh.max(1));
        Letterbox {
            width,
            height,
            inner_width: nw,
            inner_height: nh,
            scale: (nh as f64 / img_h as f64) as f32,
        }
    }
}

/// Letterboxes `img` into a `width`×`height` canvas (zero padding right and bottom).
pub fn letterbox(img: &RgbImage, width: u32, height: u32) -> (RgbImage, Letterbox) {
    let lb = Letterbox::fit(img.width(), img.height(), width, height);
    let resized = resize_bilinear(img, lb.inner_width, lb.inner_height);
    let mut canvas = RgbImage::new(width, height);
    let row = lb.inner_width as usize * 3;
    for y in 0..lb.inner_height as usize {
        let d = y * width as usize * 3;
        canvas.as_mut()[d..d + row].copy_from_slice(&resized.as_raw()[y * row..(y + 1) * row]);
    }
    (canvas, lb)
}

/// `(x − mean)/std` of an RGB image as a `1×3×H×W` f32 tensor.
pub fn to_tensor(img: &RgbImage, norm: InputNorm) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * w * h];
    let (r, rest) = data.split_at_mut(w * h);
    let (g, b) = rest.split_at_mut(w * h);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = (px[0] as f32 - norm.mean) / norm.std;
        g[i] = (px[1] as f32 - norm.mean) / norm.std;
        b[i] = (px[2] as f32 - norm.mean) / norm.std;
    }
    Ok(Tensor::from_vec(data, (1, 3, h, w), &Device::Cpu)?)
}

/// `(x − mean)/std` of an RGB image written as NHWC (`H×W×3`, channels innermost) into
/// `dst` — the fast engine's input layout, filled in place without allocating.
pub fn fill_nhwc(img: &RgbImage, norm: InputNorm, dst: &mut [f32]) {
    let src = img.as_raw();
    assert_eq!(
        dst.len(),
        src.len(),
        "NHWC destination for a {}x{} image",
        img.width(),
        img.height()
    );
    norm_table(norm).apply(src, dst);
}

/// `(v − mean)/std` for every byte value `v`: the same division, once per value instead of
/// once per pixel channel (a 320×256 frame is 245,760 of them).
pub struct NormTable([f32; 256]);

/// The [`NormTable`] of `norm`.
pub fn norm_table(norm: InputNorm) -> NormTable {
    NormTable(std::array::from_fn(|v| (v as f32 - norm.mean) / norm.std))
}

impl NormTable {
    /// Normalises the bytes `src` into `dst` (the shorter of the two).
    pub fn apply(&self, src: &[u8], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = self.0[s as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_geometry_matches_insightface() {
        // 2048×1150 into 640×640: width-bound, 640 × (1150/2048) = 359.375 → 359 rows.
        let lb = Letterbox::fit(2048, 1150, 640, 640);
        assert_eq!((lb.inner_width, lb.inner_height), (640, 359));
        assert!((lb.scale - 359.0 / 1150.0).abs() < 1e-7);
        // A tall image is height-bound.
        let lb = Letterbox::fit(250, 500, 320, 320);
        assert_eq!((lb.inner_width, lb.inner_height), (160, 320));
    }

    #[test]
    fn resize_identity_and_constant() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, 9]));
        assert_eq!(
            resize_bilinear(&img, 7, 5),
            img,
            "same size is the identity"
        );
        let flat = RgbImage::from_pixel(9, 9, image::Rgb([200, 17, 255]));
        let r = resize_bilinear(&flat, 4, 13);
        assert!(
            r.pixels().all(|p| p.0 == [200, 17, 255]),
            "a flat image stays flat"
        );
    }

    #[test]
    fn upscaling_equals_opencv_at_the_border_rows() {
        // cv2.resize(img, (7, 8)) of this 5×3 image (OpenCV 5.1, INTER_LINEAR): the first and
        // last rows sample outside the image, where OpenCV keeps the unclamped row weights.
        let img = RgbImage::from_fn(5, 3, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                ((x * 53 + y * 29 + c as u32 * 71) % 256) as u8
            }))
        });
        let want: [u8; 168] = [
            0, 71, 142, 30, 101, 172, 68, 139, 210, 106, 177, 248, 144, 215, 103, 182, 143, 68,
            212, 27, 98, 2, 73, 144, 32, 103, 174, 70, 141, 207, 108, 179, 234, 146, 205, 100, 183,
            136, 69, 214, 29, 100, 13, 84, 155, 43, 114, 185, 81, 152, 191, 119, 190, 149, 156,
            147, 84, 194, 92, 80, 225, 40, 111, 24, 95, 165, 54, 125, 196, 92, 163, 174, 129, 200,
            64, 167, 90, 67, 205, 48, 91, 236, 51, 121, 34, 105, 176, 65, 136, 207, 102, 173, 171,
            140, 211, 26, 178, 66, 64, 195, 31, 102, 198, 61, 132, 45, 116, 187, 75, 146, 218, 113,
            184, 182, 151, 222, 37, 189, 77, 75, 165, 42, 113, 113, 72, 143, 56, 127, 198, 86, 157,
            228, 124, 195, 193, 162, 233, 48, 200, 88, 86, 135, 53, 124, 28, 83, 154, 58, 129, 200,
            88, 159, 230, 126, 197, 195, 164, 235, 50, 202, 90, 88, 130, 55, 126, 14, 85, 156,
        ];
        assert_eq!(
            resize_bilinear(&img, 7, 8).as_raw().as_slice(),
            want.as_slice()
        );
    }

    #[test]
    fn resize_halfway_is_the_mean() {
        // Upscaling 2 pixels to 4: destination 1 samples source x = 0.25 → 0.75*10 + 0.25*110.
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([if x == 0 { 10 } else { 110 }; 3]));
        let r = resize_bilinear(&img, 4, 1);
        let row: Vec<u8> = r.pixels().map(|p| p.0[0]).collect();
        assert_eq!(row, vec![10, 35, 85, 110]);
    }
}
