//! Face alignment for the recogniser: the least-squares similarity transform (Umeyama, 1991)
//! from the five detected keypoints to the ArcFace 112×112 template, and a bilinear warp with a
//! zero border — InsightFace's `norm_crop`.

use image::RgbImage;
use nalgebra::{Matrix2, Vector2};

/// ArcFace's reference keypoints for a 112×112 crop.
pub const ARCFACE_TEMPLATE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// A 2×3 affine matrix `[a b c; d e f]` mapping source to destination.
pub type Affine = [[f64; 3]; 2];

/// Least-squares similarity transform (rotation, uniform scale, translation) from `src` to
/// `dst` points.
pub fn similarity_transform(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Affine {
    let n = src.len() as f64;
    let mean = |p: &[[f64; 2]]| {
        p.iter().fold(Vector2::zeros(), |acc: Vector2<f64>, q| {
            acc + Vector2::new(q[0], q[1])
        }) / n
    };
    let (ms, md) = (mean(src), mean(dst));
    let mut cov = Matrix2::zeros();
    let mut var_s = 0.0;
    for (s, d) in src.iter().zip(dst) {
        let sc = Vector2::new(s[0], s[1]) - ms;
        let dc = Vector2::new(d[0], d[1]) - md;
        cov += dc * sc.transpose();
        var_s += sc.norm_squared();
    }
    cov /= n;
    var_s /= n;
    let svd = cov.svd(true, true);
    let (u, vt) = (svd.u.expect("u requested"), svd.v_t.expect("v_t requested"));
    let mut d = Vector2::new(1.0, 1.0);
    if cov.determinant() < 0.0 {
        d[1] = -1.0;
    }
    let r = u * Matrix2::from_diagonal(&d) * vt;
    let scale = if var_s > 0.0 {
        svd.singular_values.dot(&d) / var_s
    } else {
        1.0
    };
    let t = md - scale * r * ms;
    [
        [scale * r[(0, 0)], scale * r[(0, 1)], t[0]],
        [scale * r[(1, 0)], scale * r[(1, 1)], t[1]],
    ]
}

/// The transform taking detected keypoints to the ArcFace template.
pub fn arcface_transform(kps: &[[f32; 2]; 5]) -> Affine {
    let src: Vec<[f64; 2]> = kps.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    similarity_transform(&src, &ARCFACE_TEMPLATE)
}

/// Warps `img` by `m` (source → destination) into a `size`×`size` crop, bilinear, with
/// pixels outside the source reading as zero (OpenCV `warpAffine`, `BORDER_CONSTANT`).
pub fn warp_affine(img: &RgbImage, m: &Affine, size: u32) -> RgbImage {
    // Invert the 2×3 matrix to map each destination pixel back into the source.
    let [[a, b, c], [d, e, f]] = *m;
    let det = a * e - b * d;
    let inv = if det.abs() > 1e-12 {
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        [[ia, ib, -(ia * c + ib * f)], [id, ie, -(id * c + ie * f)]]
    } else {
        [[0.0; 3]; 2]
    };
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let px = |x: i64, y: i64, ch: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            src[((y * w + x) * 3) as usize + ch] as f64
        }
    };
    let mut out = RgbImage::new(size, size);
    for oy in 0..size {
        for ox in 0..size {
            let (xf, yf) = (ox as f64, oy as f64);
            let sx = inv[0][0] * xf + inv[0][1] * yf + inv[0][2];
            let sy = inv[1][0] * xf + inv[1][1] * yf + inv[1][2];
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let p = out.get_pixel_mut(ox, oy);
            for ch in 0..3 {
                let v = px(x0, y0, ch) * (1.0 - fx) * (1.0 - fy)
                    + px(x0 + 1, y0, ch) * fx * (1.0 - fy)
                    + px(x0, y0 + 1, ch) * (1.0 - fx) * fy
                    + px(x0 + 1, y0 + 1, ch) * fx * fy;
                p.0[ch] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// The ArcFace-aligned crop of the face with keypoints `kps`.
pub fn norm_crop(img: &RgbImage, kps: &[[f32; 2]; 5], size: u32) -> RgbImage {
    let mut m = arcface_transform(kps);
    if size != 112 {
        let s = size as f64 / 112.0;
        m.iter_mut().flatten().for_each(|v| *v *= s);
    }
    warp_affine(img, &m, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity() {
        // dst = 2·R(30°)·src + (5, -3): the fit must return exactly that.
        let (s, th) = (2.0f64, 30f64.to_radians());
        let src = [[0.0, 0.0], [10.0, 0.0], [0.0, 7.0], [4.0, 9.0], [-3.0, 2.0]];
        let dst: Vec<[f64; 2]> = src
            .iter()
            .map(|p| {
                [
                    s * (th.cos() * p[0] - th.sin() * p[1]) + 5.0,
                    s * (th.sin() * p[0] + th.cos() * p[1]) - 3.0,
                ]
            })
            .collect();
        let m = similarity_transform(&src, &dst);
        let want = [
            [s * th.cos(), -s * th.sin(), 5.0],
            [s * th.sin(), s * th.cos(), -3.0],
        ];
        for r in 0..2 {
            for c in 0..3 {
                assert!((m[r][c] - want[r][c]).abs() < 1e-9, "{m:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn identity_warp_copies_and_border_is_zero() {
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 50) as u8, (y * 60) as u8, 7]));
        let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let out = warp_affine(&img, &id, 4);
        assert_eq!(out, img);
        // Shift right by 2: the first two columns come from outside the image.
        let shift = [[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]];
        let out = warp_affine(&img, &shift, 4);
        assert_eq!(out.get_pixel(0, 1).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(3, 1).0, img.get_pixel(1, 1).0);
    }
}
