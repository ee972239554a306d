//! Drawing detections onto an image for `facegate detect --draw`: box outlines and keypoint
//! dots, enough to eyeball what the detector found.

use image::{Rgb, RgbImage};

use crate::detect::Face;

const BOX: Rgb<u8> = Rgb([0, 255, 0]);
/// Left eye, right eye, nose, left and right mouth corner.
const KPS: [Rgb<u8>; 5] = [
    Rgb([255, 0, 0]),
    Rgb([0, 0, 255]),
    Rgb([255, 255, 0]),
    Rgb([255, 0, 255]),
    Rgb([0, 255, 255]),
];

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Draws every face's box (2 px wide) and keypoints (5×5 dots).
pub fn draw_faces(img: &mut RgbImage, faces: &[Face]) {
    for f in faces {
        let [x1, y1, x2, y2] = f.bbox.map(|v| v.round() as i64);
        for t in 0..2 {
            for x in x1..=x2 {
                put(img, x, y1 + t, BOX);
                put(img, x, y2 - t, BOX);
            }
            for y in y1..=y2 {
                put(img, x1 + t, y, BOX);
                put(img, x2 - t, y, BOX);
            }
        }
        if let Some(kps) = f.kps {
            for (p, c) in kps.iter().zip(KPS) {
                let (cx, cy) = (p[0].round() as i64, p[1].round() as i64);
                for dy in -2..=2 {
                    for dx in -2..=2 {
                        put(img, cx + dx, cy + dy, c);
                    }
                }
            }
        }
    }
}
