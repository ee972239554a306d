//! The largest image or frame facegate agrees to decode, checked against the size a file's
//! header claims *before* any decoder allocates for it.
//!
//! A JPEG's SOF segment or a PNG's IHDR may claim any size up to 65535×65535 (JPEG) or
//! 2³¹×2³¹ (PNG) in a few hundred bytes; a decoder that believes it allocates gigabytes
//! (a progressive JPEG keeps every DCT coefficient of the whole image). On a 1 GB board that is
//! the OOM killer, so every decoder path (photos, image folders, MJPEG frames, raw YUYV clips)
//! asks [`current`] first. The limit is process-wide: set once from the command line
//! (`--max-image`, `--max-megapixels`) before any image is read; the default is far above any
//! camera or phone photo (4K is 8.3 MP).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Largest accepted image: each side and the pixel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
}

impl ImageLimits {
    /// 8192×8192 sides, 24 megapixels: three times a 4K frame, and what a 1 GB board can
    /// decode. Peak RSS of `facegate detect` on a progressive 4:4:4 JPEG (the costliest kind:
    /// every coefficient is kept until the last scan), measured: 24 MP 238 MB, 40 MP 388 MB.
    pub const DEFAULT: ImageLimits = ImageLimits {
        max_width: 8192,
        max_height: 8192,
        max_pixels: 24_000_000,
    };

    /// `Err` with a one-line reason when a `width`×`height` image is over the limit (or has
    /// no pixels).
    pub fn check(&self, width: u64, height: u64) -> Result<(), String> {
        if width == 0 || height == 0 {
            return Err(format!("image claims {width}x{height} pixels"));
        }
        if width > u64::from(self.max_width) || height > u64::from(self.max_height) {
            return Err(format!(
                "image claims {width}x{height} pixels, over the limit of {}x{} \
                 (--max-image); refused before decoding",
                self.max_width, self.max_height
            ));
        }
        let pixels = width * height;
        if pixels > self.max_pixels {
            return Err(format!(
                "image claims {width}x{height} = {:.1} megapixels, over the limit of {:.1} \
                 (--max-megapixels); refused before decoding",
                pixels as f64 / 1e6,
                self.max_pixels as f64 / 1e6
            ));
        }
        Ok(())
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits::DEFAULT
    }
}

impl fmt::Display for ImageLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{}, {:.1} MP",
            self.max_width,
            self.max_height,
            self.max_pixels as f64 / 1e6
        )
    }
}

/// Parses the `--max-image` value `WIDTHxHEIGHT` into (width, height).
pub fn parse_sides(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("bad image size `{s}` (write WIDTHxHEIGHT, e.g. 8192x8192)");
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 || w > 65535 || h > 65535 {
        return Err(format!("image size `{s}`: each side must be in 1..=65535"));
    }
    Ok((w, h))
}

/// A `--max-megapixels` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Megapixels(pub f64);

impl FromStr for Megapixels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number of megapixels"))?;
        if !(v.is_finite() && v > 0.0 && v <= 4096.0) {
            return Err(format!("megapixels must be in (0, 4096], got {s}"));
        }
        Ok(Megapixels(v))
    }
}

static MAX_W: AtomicU32 = AtomicU32::new(ImageLimits::DEFAULT.max_width);
static MAX_H: AtomicU32 = AtomicU32::new(ImageLimits::DEFAULT.max_height);
static MAX_PX: AtomicU64 = AtomicU64::new(ImageLimits::DEFAULT.max_pixels);

/// The limit every decoder of the process applies.
pub fn current() -> ImageLimits {
    ImageLimits {
        max_width: MAX_W.load(Ordering::Relaxed),
        max_height: MAX_H.load(Ordering::Relaxed),
        max_pixels: MAX_PX.load(Ordering::Relaxed),
    }
}

/// Sets the process-wide limit (the command line does, before reading any image).
pub fn set(l: ImageLimits) {
    MAX_W.store(l.max_width, Ordering::Relaxed);
    MAX_H.store(l.max_height, Ordering::Relaxed);
    MAX_PX.store(l.max_pixels, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_takes_4k_and_refuses_bombs() {
        let l = ImageLimits::DEFAULT;
        assert!(l.check(3840, 2160).is_ok());
        assert!(l.check(6000, 4000).is_ok()); // 24.0 MP, a 24 MP camera's photo
        let e = l.check(8192, 4882).unwrap_err(); // 39.99 MP: sides within, too many pixels
        assert!(e.contains("40.0 megapixels"), "{e}");
        let e = l.check(20000, 20000).unwrap_err();
        assert!(e.contains("20000x20000") && e.contains("8192x8192"), "{e}");
        let e = l.check(8000, 8000).unwrap_err(); // 64 MP, sides within
        assert!(e.contains("64.0 megapixels"), "{e}");
        assert!(l.check(0, 10).is_err());
    }

    #[test]
    fn parsing() {
        assert_eq!(parse_sides("640x480"), Ok((640, 480)));
        assert!(parse_sides("640").is_err());
        assert!(parse_sides("0x5").is_err());
        assert!(parse_sides("70000x5").is_err());
        assert_eq!("12.5".parse::<Megapixels>(), Ok(Megapixels(12.5)));
        assert!("nan".parse::<Megapixels>().is_err());
        assert!("-1".parse::<Megapixels>().is_err());
    }
}
