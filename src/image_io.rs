//! Reading images from disk into RGB, with errors that name the file and what is wrong with
//! it. Grayscale images (LFW) become three equal channels, as OpenCV's `imread` gives them.
//!
//! This is the one decoder of the project: photos (`detect`, `enroll --source image:`), image
//! folders, MJPEG frames and V4L2 MJPEG buffers all come through [`decode_jpeg`], so every
//! source refuses the same damaged files. Two rules hold for all of them: the size the header
//! claims is checked against [`crate::image_limits`] before the decoder allocates, and any
//! libjpeg warning ("premature end of data segment", "corrupt JPEG data") is an error — a
//! decoder that papers over damage with grey would let a face pipeline run on half an image.

use std::io::Read;
use std::path::Path;

use image::RgbImage;

use crate::error::{Error, Result};
use crate::image_limits;

/// Largest image file read: a 40 MP JPEG at the highest quality is ~20 MB, a 40 MP 16-bit PNG
/// could reach 320 MB but is no photo anyone feeds a face detector. The cap also keeps
/// `/dev/zero` or a FIFO from being read until memory runs out.
pub const MAX_FILE_BYTES: u64 = 128 << 20;

/// Decodes an image file (JPEG or PNG, recognised by content) to 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::Image {
            path: path.to_path_buf(),
            reason: format!("file larger than {} MiB", MAX_FILE_BYTES >> 20),
        });
    }
    decode_rgb(&bytes, path)
}

/// Decodes in-memory image bytes; `path` is only used in error messages.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let bad = |reason: String| Error::Image {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad("empty file (0 bytes)".into()));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| bad("unknown format (not a JPEG or PNG by its content)".into()))?;
    match format {
        image::ImageFormat::Jpeg => {
            if !jpeg_is_complete(bytes) {
                // Decoders fill a cut-off JPEG with grey and report success; a face pipeline
                // must not silently run on half an image.
                return Err(bad("truncated JPEG (no end-of-image marker)".into()));
            }
            decode_jpeg(bytes).map_err(bad)
        }
        image::ImageFormat::Png => decode_png(bytes).map_err(bad),
        other => Err(bad(format!(
            "unsupported format {other:?} (only JPEG and PNG are read)"
        ))),
    }
}

/// Decodes a PNG after checking the IHDR size against the limits.
fn decode_png(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    use image::ImageDecoder;
    let flat = |e: image::ImageError| e.to_string().replace('\n', " ");
    let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes)).map_err(flat)?;
    let (w, h) = decoder.dimensions();
    image_limits::current().check(w.into(), h.into())?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(flat)?;
    Ok(img.to_rgb8())
}

/// Decodes a JPEG with libjpeg-turbo's decoder (through mozjpeg): the same integer IDCT and
/// chroma upsampling as OpenCV's `imread`, so our pixels — and therefore our detections —
/// equal the reference pipeline's bit for bit. (Pure-Rust decoders differ by up to 4 levels
/// on 14 % of the pixels, enough to move the boxes of 10-pixel faces.) Frames without
/// Huffman tables (MJPEG cameras) get the standard tables. Grayscale becomes 3 channels;
/// CMYK and YCCK (Adobe) become RGB by [`cmyk_to_rgb`].
///
/// Strict: the size from the header is checked against [`image_limits::current`] before
/// libjpeg allocates, and every libjpeg warning is an error (see the module doc).
pub fn decode_jpeg(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let limits = image_limits::current();
    // libjpeg reports fatal errors (and, with our error manager, warnings) by unwinding;
    // keep them from crossing our API.
    let decoded = std::panic::catch_unwind(|| -> std::result::Result<_, String> {
        let io = |e: std::io::Error| format!("corrupt JPEG: {e}");
        let d = mozjpeg::Decompress::with_err(strict::error_mgr())
            .from_mem(bytes)
            .map_err(io)?;
        // The header is read; nothing image-sized is allocated until decompression starts.
        let (w, h) = d.size();
        limits.check(w as u64, h as u64)?;
        let cmyk = matches!(
            d.color_space(),
            mozjpeg::ColorSpace::JCS_CMYK | mozjpeg::ColorSpace::JCS_YCCK
        );
        let data = if cmyk {
            let mut started = d.to_colorspace(mozjpeg::ColorSpace::JCS_CMYK).map_err(io)?;
            let px: Vec<[u8; 4]> = started.read_scanlines().map_err(io)?;
            started.finish().map_err(io)?;
            px.iter().flat_map(|&p| cmyk_to_rgb(p)).collect()
        } else {
            let mut started = d.rgb().map_err(io)?;
            let px: Vec<[u8; 3]> = started.read_scanlines().map_err(io)?;
            started.finish().map_err(io)?;
            px.into_flattened()
        };
        Ok((w as u32, h as u32, data))
    });
    let (w, h, data) = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(e),
        Err(payload) => {
            return Err(match payload.downcast_ref::<String>() {
                Some(m) => format!("corrupt JPEG: {}", m.trim_start_matches("libjpeg ")),
                None => "corrupt JPEG (the decoder gave up)".into(),
            })
        }
    };
    if w == 0 || h == 0 || data.len() != w as usize * h as usize * 3 {
        return Err(format!(
            "corrupt JPEG: decoded {} bytes for {w}x{h}",
            data.len()
        ));
    }
    Ok(RgbImage::from_raw(w, h, data).expect("length checked"))
}

/// One CMYK pixel as libjpeg returns it from an Adobe JPEG to RGB. Adobe (Photoshop, every
/// CMYK JPEG in practice) stores the inks inverted, 255 = no ink, so R = C'·K'/255 with the
/// stored values C', K' — the same conversion as OpenCV's `imread` and Pillow.
pub fn cmyk_to_rgb([c, m, y, k]: [u8; 4]) -> [u8; 3] {
    let mul = |a: u8| ((u32::from(a) * u32::from(k) + 127) / 255) as u8;
    [mul(c), mul(m), mul(y)]
}

/// libjpeg's error manager with warnings promoted to errors.
mod strict {
    use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error};
    use std::os::raw::c_int;

    pub fn error_mgr() -> jpeg_error_mgr {
        // SAFETY: jpeg_error_mgr is a plain C struct for which all-zero is a valid start;
        // jpeg_std_error fills in every field.
        let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
        unsafe { jpeg_std_error(&mut err) };
        err.error_exit = Some(fatal);
        err.emit_message = Some(emit);
        err
    }

    fn message(cinfo: &mut jpeg_common_struct) -> String {
        // SAFETY: `cinfo.err` points at the manager made above (libjpeg only calls us with
        // it set); format_message writes at most 80 bytes (JMSG_LENGTH_MAX) into the buffer.
        unsafe {
            let err = &*cinfo.err;
            let Some(fmt) = err.format_message else {
                return format!("libjpeg message {}", err.msg_code);
            };
            // The binding declares the buffer `&[u8; 80]` but libjpeg writes into it: call it
            // through a pointer type that says so (the mozjpeg crate does the same).
            let fmt: unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut [u8; 80]) =
                std::mem::transmute(fmt);
            let mut buf = [0u8; 80];
            fmt(cinfo, &mut buf);
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        }
    }

    /// Fatal errors: unwind to `decode_jpeg`'s `catch_unwind` (as the mozjpeg crate does).
    extern "C-unwind" fn fatal(cinfo: &mut jpeg_common_struct) {
        std::panic::resume_unwind(Box::new(message(cinfo)));
    }

    /// Level −1 is a warning (corrupt or missing data that libjpeg would paper over): an
    /// error for us. Levels ≥ 0 are trace messages: ignored.
    extern "C-unwind" fn emit(cinfo: &mut jpeg_common_struct, level: c_int) {
        if level < 0 {
            std::panic::resume_unwind(Box::new(message(cinfo)));
        }
    }
}

/// True when the JPEG ends with an EOI marker (allowing trailing padding bytes, which some
/// cameras append).
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let end = bytes
        .iter()
        .rposition(|&b| b != 0x00 && b != 0xFF && b != b'\n' && b != b'\r')
        .map(|i| i + 1)
        .unwrap_or(0);
    // The EOI's 0xD9 is the last meaningful byte and must follow a 0xFF.
    end >= 2 && bytes[end - 1] == 0xD9 && bytes[end - 2] == 0xFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_end_marker() {
        assert!(jpeg_is_complete(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]));
        assert!(jpeg_is_complete(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9, 0, 0]));
        assert!(!jpeg_is_complete(&[0xFF, 0xD8, 1, 2, 3]));
        assert!(!jpeg_is_complete(&[0xD9]));
    }

    #[test]
    fn text_file_is_refused_with_its_name() {
        let err = decode_rgb(b"hello, not an image", Path::new("x.jpg")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("x.jpg:"), "{msg}");
        assert!(msg.contains("unknown format"), "{msg}");
    }
}
