//! Pixel-format conversion from what cameras deliver to the RGB the detector eats:
//! packed YUYV (YUV 4:2:2), GREY (Y8) and JPEG (one MJPEG frame).
//!
//! YUYV from a UVC webcam is BT.601 **limited range** (Y in 16..=235, U/V in 16..=240), so
//! the conversion is
//!
//! ```text
//! R = 1.164 (Y-16)                 + 1.596 (V-128)
//! G = 1.164 (Y-16) - 0.392 (U-128) - 0.813 (V-128)
//! B = 1.164 (Y-16) + 2.017 (U-128)
//! ```
//!
//! each clamped to 0..=255 and rounded to nearest. It is done in integer fixed point with 16
//! fractional bits: every coefficient is `round(c * 65536)`, the sum gets `+32768` and is
//! shifted right by 16 (an arithmetic shift, i.e. floor, so this is round-half-up), then
//! clamped. The coefficient rounding errs by at most 0.5/65536 each, so the result differs
//! from the float formula only when the float is within ~0.005 of a .5 boundary. The worst
//! case sum (|1.164·239| + |2.017·128|)·65536 < 2^25 cannot overflow an i32.
//!
//! The loops are plain safe Rust over `chunks_exact`, no SIMD and no `unsafe` (not yet
//! profiled on a Pi; should it show up, a NEON kernel belongs in `kernels/`, tested against
//! this one).

use image::RgbImage;

use crate::error::{Error, Result};

const SHIFT: u32 = 16;
const HALF: i32 = 1 << (SHIFT - 1);
/// round(1.164 * 65536)
const C_Y: i32 = 76284;
/// round(1.596 * 65536)
const C_RV: i32 = 104595;
/// round(0.392 * 65536)
const C_GU: i32 = 25690;
/// round(0.813 * 65536)
const C_GV: i32 = 53281;
/// round(2.017 * 65536)
const C_BU: i32 = 132186;

#[inline(always)]
fn clamp_shift(x: i32) -> u8 {
    ((x + HALF) >> SHIFT).clamp(0, 255) as u8
}

/// One BT.601 limited-range YUV triple to RGB (see the module doc for the formula).
#[inline(always)]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let y = C_Y * (y as i32 - 16);
    let u = u as i32 - 128;
    let v = v as i32 - 128;
    [
        clamp_shift(y + C_RV * v),
        clamp_shift(y - C_GU * u - C_GV * v),
        clamp_shift(y + C_BU * u),
    ]
}

fn check_dims(
    what: &str,
    width: u32,
    height: u32,
    bytes_per_pixel: usize,
    stride: usize,
) -> Result<usize> {
    if width == 0 || height == 0 {
        return Err(Error::Shape {
            what: what.to_string(),
            expected: "a frame of at least 1x1 pixels".to_string(),
            got: format!("{width}x{height}"),
        });
    }
    let row = width as usize * bytes_per_pixel;
    if stride < row {
        return Err(Error::Shape {
            what: format!("{what} {width}x{height} row stride"),
            expected: format!("at least {row} bytes"),
            got: format!("{stride} bytes"),
        });
    }
    // The last row need not carry its padding.
    Ok(stride * (height as usize - 1) + row)
}

/// Converts one packed YUYV (Y0 U Y1 V) frame to RGB. `stride` is the bytes per row as the
/// driver reports it (`bytesperline`, ≥ width·2; pass `width * 2` for a tightly packed
/// frame). The width must be even: one U/V pair serves two horizontally adjacent pixels.
pub fn yuyv_to_rgb(src: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    if width & 1 != 0 {
        return Err(Error::Shape {
            what: "YUYV frame width".to_string(),
            expected: "an even number (2 pixels per 4 bytes)".to_string(),
            got: width.to_string(),
        });
    }
    let need = check_dims("YUYV frame", width, height, 2, stride)?;
    if src.len() < need {
        return Err(Error::Shape {
            what: format!("YUYV frame {width}x{height} (stride {stride})"),
            expected: format!("{need} bytes"),
            got: format!("{} bytes", src.len()),
        });
    }
    let w = width as usize;
    let mut out = RgbImage::new(width, height);
    for (dst_row, src_row) in out.chunks_exact_mut(w * 3).zip(src.chunks(stride)) {
        for (d, s) in dst_row
            .chunks_exact_mut(6)
            .zip(src_row[..w * 2].chunks_exact(4))
        {
            let (y0, u, y1, v) = (s[0], s[1], s[2], s[3]);
            d[..3].copy_from_slice(&yuv_to_rgb(y0, u, v));
            d[3..].copy_from_slice(&yuv_to_rgb(y1, u, v));
        }
    }
    Ok(out)
}

/// Converts one GREY (Y8) frame to RGB with three equal channels. V4L2 `GREY` is full range,
/// so the value is copied unchanged.
pub fn grey_to_rgb(src: &[u8], width: u32, height: u32, stride: usize) -> Result<RgbImage> {
    let need = check_dims("GREY frame", width, height, 1, stride)?;
    if src.len() < need {
        return Err(Error::Shape {
            what: format!("GREY frame {width}x{height} (stride {stride})"),
            expected: format!("{need} bytes"),
            got: format!("{} bytes", src.len()),
        });
    }
    let w = width as usize;
    let mut out = RgbImage::new(width, height);
    for (dst_row, src_row) in out.chunks_exact_mut(w * 3).zip(src.chunks(stride)) {
        for (d, &g) in dst_row.chunks_exact_mut(3).zip(&src_row[..w]) {
            d.copy_from_slice(&[g, g, g]);
        }
    }
    Ok(out)
}

/// Decodes one JPEG (one MJPEG frame) to RGB with libjpeg-turbo, as photos are decoded.
/// Frames without Huffman tables (what many USB cameras send) get the standard tables from
/// libjpeg-turbo itself. The error is a one-line reason (the caller knows which frame).
pub fn decode_jpeg(jpeg: &[u8]) -> std::result::Result<RgbImage, String> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        return Err(format!("not a JPEG ({} bytes, no SOI marker)", jpeg.len()));
    }
    crate::image_io::decode_jpeg(jpeg).map_err(|e| e.replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (Y, U, V) → RGB, each computed by hand from the float formula in the module doc,
    /// e.g. red: Y−16 = 66 → 1.164·66 = 76.824; R = 76.824 + 1.596·112 = 255.576 → 255;
    /// G = 76.824 + 0.392·38 − 0.813·112 = 0.664 → 1; B = 76.824 − 2.017·38 = 0.178 → 0.
    const CASES: [([u8; 3], [u8; 3]); 9] = [
        ([16, 128, 128], [0, 0, 0]),        // black
        ([235, 128, 128], [255, 255, 255]), // white: 1.164·219 = 254.916
        ([126, 128, 128], [128, 128, 128]), // mid grey: 1.164·110 = 128.04
        ([82, 90, 240], [255, 1, 0]),       // BT.601 red
        ([145, 54, 34], [0, 255, 1]),       // BT.601 green: G = 255.586, B = 0.898
        ([41, 240, 110], [0, 0, 255]),      // BT.601 blue: G = −0.17 → 0, B = 255.004
        ([255, 255, 255], [255, 125, 255]), // clamps high; G = 278.196 − 49.784 − 103.251
        ([0, 0, 0], [0, 136, 0]),           // clamps low; G = −18.624 + 50.176 + 104.064
        ([100, 150, 90], [37, 120, 142]),   // R 37.128, G 120.046, B 142.15
    ];

    #[test]
    fn single_pixels_match_hand_computed_values() {
        for ([y, u, v], want) in CASES {
            assert_eq!(yuv_to_rgb(y, u, v), want, "Y={y} U={u} V={v}");
        }
    }

    #[test]
    fn yuyv_frame_uses_shared_chroma_and_stride() {
        // 4x2 frame, stride 10 (2 bytes padding per row, last row unpadded).
        // Row 0: pixels (16,235 | U=V=128) then (82,82 | red chroma)
        // Row 1: (145,145 | green chroma) then (41,126 | blue chroma)
        #[rustfmt::skip]
        let src = [
            16, 128, 235, 128,   82, 90, 82, 240,   0xEE, 0xEE,
            145, 54, 145, 34,    41, 240, 126, 110,
        ];
        let img = yuyv_to_rgb(&src, 4, 2, 10).unwrap();
        assert_eq!(img.dimensions(), (4, 2));
        let px = |x, y| img.get_pixel(x, y).0;
        assert_eq!(px(0, 0), [0, 0, 0]);
        assert_eq!(px(1, 0), [255, 255, 255]);
        assert_eq!(px(2, 0), [255, 1, 0]);
        assert_eq!(px(3, 0), [255, 1, 0]);
        assert_eq!(px(0, 1), [0, 255, 1]);
        assert_eq!(px(1, 1), [0, 255, 1]);
        assert_eq!(px(2, 1), [0, 0, 255]);
        // Y=126 with the blue pixel's chroma U=240, V=110 (hand computed):
        // 128.04 + 1.596·(−18) = 99.312 → 99; 128.04 − 43.904 + 14.634 = 98.77 → 99;
        // 128.04 + 225.904 = 353.9 → 255
        assert_eq!(px(3, 1), [99, 99, 255]);
    }

    #[test]
    fn yuyv_rejects_bad_sizes_without_panicking() {
        let e = yuyv_to_rgb(&[0; 15], 4, 2, 8).unwrap_err().to_string();
        assert_eq!(
            e,
            "YUYV frame 4x2 (stride 8): expected 16 bytes, got 15 bytes"
        );
        let e = yuyv_to_rgb(&[0; 16], 3, 2, 6).unwrap_err().to_string();
        assert!(e.contains("even"), "{e}");
        let e = yuyv_to_rgb(&[0; 16], 4, 2, 6).unwrap_err().to_string();
        assert!(e.contains("at least 8 bytes"), "{e}");
        assert!(yuyv_to_rgb(&[], 0, 0, 0).is_err());
        // extra trailing bytes are fine
        assert!(yuyv_to_rgb(&[128; 20], 4, 2, 8).is_ok());
    }

    #[test]
    fn grey_copies_value_to_three_channels() {
        #[rustfmt::skip]
        let src = [0, 17, 255, 9,
                   200, 1, 2, 9];
        let img = grey_to_rgb(&src, 3, 2, 4).unwrap();
        assert_eq!(img.dimensions(), (3, 2));
        let want = [[0u8, 17, 255], [200, 1, 2]];
        for (y, row) in want.iter().enumerate() {
            for (x, &g) in row.iter().enumerate() {
                assert_eq!(img.get_pixel(x as u32, y as u32).0, [g, g, g]);
            }
        }
        let e = grey_to_rgb(&src, 3, 3, 4).unwrap_err().to_string();
        assert_eq!(
            e,
            "GREY frame 3x3 (stride 4): expected 11 bytes, got 8 bytes"
        );
    }

    /// A JPEG without DHT segments (as many UVC cameras send) decodes to the same pixels as
    /// the same JPEG with the standard tables, because `image`'s encoder writes exactly the
    /// Annex K tables we then rely on the decoder to supply.
    #[test]
    fn jpeg_without_huffman_tables_decodes() {
        let mut img = RgbImage::new(48, 32);
        for (x, y, p) in img.enumerate_pixels_mut() {
            p.0 = [(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8];
        }
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&img)
            .unwrap();
        let with = decode_jpeg(&jpeg).unwrap();

        // Strip every DHT (FFC4) segment before SOS.
        let mut stripped = jpeg[..2].to_vec();
        let mut pos = 2;
        let mut removed = 0;
        loop {
            assert_eq!(jpeg[pos], 0xFF);
            let m = jpeg[pos + 1];
            let len = u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]) as usize;
            if m == 0xDA {
                stripped.extend_from_slice(&jpeg[pos..]);
                break;
            }
            if m == 0xC4 {
                removed += 1;
            } else {
                stripped.extend_from_slice(&jpeg[pos..pos + 2 + len]);
            }
            pos += 2 + len;
        }
        assert!(removed > 0, "encoder wrote no DHT?");
        let without = decode_jpeg(&stripped).unwrap();
        assert_eq!(with.as_raw(), without.as_raw());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_jpeg(&[]).is_err());
        assert!(decode_jpeg(b"hello world").is_err());
        assert!(decode_jpeg(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
        assert!(decode_jpeg(&[0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x02, 0xFF, 0xD9]).is_err());
    }
}
