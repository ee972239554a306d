//! Live capture from a V4L2 camera (USB UVC webcams, the Pi camera through its V4L2 bridge),
//! with the `v4l` crate. Built only with the `v4l2` cargo feature on Linux (its raw bindings
//! are committed in vendor/v4l2-sys-mit, so the build needs no libclang).
//!
//! Shape: open the device; pick a pixel format we can convert (the requested one first,
//! then YUYV, MJPG, GREY); set the size and frame rate the board profile asks for (the
//! driver may pick the nearest size — that is logged and used); stream through a few mmap
//! buffers. "Always the newest frame": after dequeuing a buffer, if the driver already has
//! another filled one (a zero-timeout `poll` says readable) the one in hand is stale — it is
//! given back and the next taken, so a slow consumer never works through a backlog. Only a
//! few buffers exist (`BUFFERS`), so the backlog is short by construction.
//!
//! Every failure is one line naming the device: missing, busy, not a capture node, or not
//! offering any format we read (then the formats and sizes it does offer are listed).
//!
//! The `v4l` crate panics in its `Drop` impls when releasing buffers fails with anything but
//! ENODEV; the source therefore drops its stream inside `catch_unwind`, so a camera in a bad
//! state cannot take the unlock loop down on reconnect (with `panic = "abort"` this guard
//! cannot help; the release errors it covers are not expected from a sane driver).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l::buffer::Type;
use v4l::capability::Flags as CapFlags;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::convert::{decode_jpeg, grey_to_rgb, yuyv_to_rgb};
use super::spec::{CaptureSettings, PixelFormat};
use super::{Frame, FrameSource, SourceStats};
use crate::error::{Error, Result};

/// mmap buffers: one being converted, one being filled, one spare.
const BUFFERS: u32 = 3;
/// A camera that delivers nothing for this long is treated as gone.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Corrupt frames in a row before a camera is reported as failed.
const MAX_CORRUPT_RUN: u32 = 30;

/// A live V4L2 camera; see the module doc.
pub struct V4l2Source {
    name: String,
    // Both Options only so that Drop can release them inside `catch_unwind`.
    stream: Option<Stream<'static>>,
    device: Option<Device>,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    stats: SourceStats,
}

fn err(name: &str, reason: impl Into<String>) -> Error {
    Error::Camera {
        source_name: name.to_string(),
        reason: reason.into(),
    }
}

/// Adds a hint for the errors people actually meet.
fn explain(e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(2) => " (is the camera plugged in? `ls /dev/video*`)",
        Some(13) => " (add the user to the `video` group)",
        Some(16) => " (device busy: another program is using the camera)",
        Some(19) => " (device disconnected)",
        Some(25) => " (not a V4L2 device)",
        Some(28) => " (USB bandwidth exhausted: lower the size or fps, or use MJPG)",
        _ => "",
    };
    format!("{e}{hint}")
}

fn fourcc_str(f: &FourCC) -> String {
    f.str()
        .map(str::to_string)
        .unwrap_or_else(|_| format!("{:?}", f.repr))
}

/// "YUYV [640x480 1280x720], H264 [1920x1080]" — what the device offers, for errors.
fn describe_offer(dev: &Device, fourccs: &[FourCC]) -> String {
    if fourccs.is_empty() {
        return "no capture formats at all (not a video capture node? UVC cameras also \
                create a metadata node: try the other /dev/videoN)"
            .to_string();
    }
    fourccs
        .iter()
        .map(|fc| {
            let sizes = match dev.enum_framesizes(*fc) {
                Ok(sizes) => sizes
                    .into_iter()
                    .map(|s| match s.size {
                        FrameSizeEnum::Discrete(d) => format!("{}x{}", d.width, d.height),
                        FrameSizeEnum::Stepwise(s) => format!(
                            "{}x{}..{}x{}",
                            s.min_width, s.min_height, s.max_width, s.max_height
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(_) => "sizes unknown".to_string(),
            };
            format!("{} [{sizes}]", fourcc_str(fc))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pixel format to capture in: the one asked for if the device offers it, else the first
/// of ours it offers (YUYV, MJPG, GREY), else none (the device is unusable).
fn choose_format(want: PixelFormat, offered: &[[u8; 4]]) -> Option<PixelFormat> {
    std::iter::once(want)
        .chain(PixelFormat::ALL.into_iter().filter(|p| *p != want))
        .find(|p| offered.contains(&FourCC::new(&p.fourcc()).repr))
}

impl V4l2Source {
    /// Opens and configures the camera; streaming starts with the first `next_frame`.
    pub fn open(device: &Path, want: &CaptureSettings) -> Result<Self> {
        let name = format!("v4l2:{}", device.display());
        let dev = Device::with_path(device)
            .map_err(|e| err(&name, format!("cannot open device: {}", explain(&e))))?;
        // The `v4l` crate unwraps the UTF-8 decoding of the card name; a driver with a
        // non-UTF-8 name must not take us down, so a panic here only skips the check.
        match catch_unwind(AssertUnwindSafe(|| dev.query_caps())) {
            Ok(Ok(caps)) => {
                let what = format!("{} (driver {}, {})", caps.card, caps.driver, caps.bus);
                if !caps.capabilities.contains(CapFlags::VIDEO_CAPTURE) {
                    return Err(err(
                        &name,
                        format!(
                            "{what} is not a video capture node (UVC cameras also create a \
                             metadata node: try the other /dev/videoN)"
                        ),
                    ));
                }
                if !caps.capabilities.contains(CapFlags::STREAMING) {
                    return Err(err(&name, format!("{what} does not support streaming I/O")));
                }
                log::info!("{name}: {what}");
            }
            Ok(Err(e)) => {
                return Err(err(
                    &name,
                    format!("cannot query capabilities: {}", explain(&e)),
                ));
            }
            Err(_) => log::warn!("{name}: could not read the device capabilities"),
        }
        let offered: Vec<FourCC> = dev
            .enum_formats()
            .map_err(|e| err(&name, format!("cannot list formats: {}", explain(&e))))?
            .into_iter()
            .map(|d| d.fourcc)
            .collect();

        let offered_codes: Vec<[u8; 4]> = offered.iter().map(|f| f.repr).collect();
        let Some(format) = choose_format(want.format, &offered_codes) else {
            return Err(err(
                &name,
                format!(
                    "offers none of YUYV, MJPG, GREY; it offers: {}",
                    describe_offer(&dev, &offered)
                ),
            ));
        };
        if format != want.format {
            log::warn!("{name}: {} not offered, using {format}", want.format);
        }

        let asked = Format::new(want.width, want.height, FourCC::new(&format.fourcc()));
        let got = dev.set_format(&asked).map_err(|e| {
            err(
                &name,
                format!(
                    "cannot set {format} {}x{}: {}",
                    want.width,
                    want.height,
                    explain(&e)
                ),
            )
        })?;
        if got.fourcc != asked.fourcc {
            return Err(err(
                &name,
                format!(
                    "asked for {format}, the driver chose {}; it offers: {}",
                    fourcc_str(&got.fourcc),
                    describe_offer(&dev, &offered)
                ),
            ));
        }
        if got.width == 0 || got.height == 0 {
            return Err(err(
                &name,
                format!("driver reports a {}x{} frame", got.width, got.height),
            ));
        }
        if (got.width, got.height) != (want.width, want.height) {
            log::warn!(
                "{name}: asked for {}x{}, the driver gives {}x{}",
                want.width,
                want.height,
                got.width,
                got.height
            );
        }
        if want.fps > 0 {
            match dev.set_params(&Parameters::with_fps(want.fps)) {
                Ok(p) if p.interval.numerator > 0 => log::info!(
                    "{name}: {format} {}x{} at {:.1} fps",
                    got.width,
                    got.height,
                    p.interval.denominator as f64 / p.interval.numerator as f64
                ),
                Ok(_) => {}
                Err(e) => log::warn!("{name}: cannot set {} fps: {}", want.fps, explain(&e)),
            }
        }
        let bpp = match format {
            PixelFormat::Yuyv => 2,
            PixelFormat::Grey => 1,
            PixelFormat::Mjpeg => 0,
        };
        let stride = if got.stride > 0 {
            got.stride as usize
        } else {
            got.width as usize * bpp
        };

        let mut stream = Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS)
            .map_err(|e| err(&name, format!("cannot map buffers: {}", explain(&e))))?;
        stream.set_timeout(FRAME_TIMEOUT);
        Ok(V4l2Source {
            name,
            stream: Some(stream),
            device: Some(dev),
            format,
            width: got.width,
            height: got.height,
            stride,
            stats: SourceStats::default(),
        })
    }

    /// The negotiated format and size.
    pub fn format(&self) -> (PixelFormat, u32, u32) {
        (self.format, self.width, self.height)
    }

    /// The device path this source reads.
    pub fn device(&self) -> PathBuf {
        PathBuf::from(self.name.trim_start_matches("v4l2:"))
    }
}

fn convert(
    format: PixelFormat,
    data: &[u8],
    w: u32,
    h: u32,
    stride: usize,
) -> std::result::Result<image::RgbImage, String> {
    match format {
        PixelFormat::Yuyv => yuyv_to_rgb(data, w, h, stride).map_err(|e| e.to_string()),
        PixelFormat::Grey => grey_to_rgb(data, w, h, stride).map_err(|e| e.to_string()),
        // UVC frames often carry no Huffman tables; libjpeg-turbo supplies the standard ones.
        PixelFormat::Mjpeg => decode_jpeg(data),
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(err(&self.name, "stream already released"));
        };
        let handle = stream.handle();
        let (format, w, h, stride) = (self.format, self.width, self.height, self.stride);
        let mut corrupt_run = 0;
        let mut drained = 0;
        loop {
            let (buf, meta) = CaptureStream::next(stream).map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    err(
                        &self.name,
                        format!(
                            "no frame within {} s (camera stalled or unplugged)",
                            FRAME_TIMEOUT.as_secs()
                        ),
                    )
                } else {
                    err(&self.name, format!("capture failed: {}", explain(&e)))
                }
            })?;
            // Newer frame already waiting? Then this one is stale. Bounded, so a driver that
            // always reports readable cannot keep us here.
            if drained < BUFFERS * 2 && matches!(handle.poll(libc::POLLIN, 0), Ok(n) if n > 0) {
                drained += 1;
                self.stats.dropped_stale += 1;
                continue;
            }
            let captured = Instant::now();
            let used = match meta.bytesused as usize {
                0 => buf.len(),
                n => n.min(buf.len()),
            };
            match convert(format, &buf[..used], w, h, stride) {
                Ok(rgb) => {
                    self.stats.delivered += 1;
                    return Ok(Some(Frame {
                        rgb,
                        seq: u64::from(meta.sequence),
                        captured,
                    }));
                }
                Err(reason) => {
                    self.stats.corrupt += 1;
                    corrupt_run += 1;
                    log::warn!("{}: skipping frame {}: {reason}", self.name, meta.sequence);
                    if corrupt_run >= MAX_CORRUPT_RUN {
                        return Err(err(
                            &self.name,
                            format!("{corrupt_run} corrupt frames in a row; last: {reason}"),
                        ));
                    }
                }
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        let stream = self.stream.take();
        let device = self.device.take();
        // The stream must go first (it unmaps buffers on the still-open fd).
        let released = catch_unwind(AssertUnwindSafe(move || {
            drop(stream);
            drop(device);
        }));
        if released.is_err() {
            log::error!(
                "{}: releasing the camera failed (see panic message above)",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod format_choice_tests {
    use super::*;

    #[test]
    fn asked_format_first_then_any_of_ours_else_none() {
        assert_eq!(
            choose_format(PixelFormat::Yuyv, &[*b"MJPG", *b"YUYV"]),
            Some(PixelFormat::Yuyv)
        );
        assert_eq!(
            choose_format(PixelFormat::Grey, &[*b"MJPG"]),
            Some(PixelFormat::Mjpeg)
        );
        // A camera that only streams H.264 or Bayer is unsupported: `open` turns this into a
        // one-line error listing what the device offers.
        assert_eq!(
            choose_format(PixelFormat::Yuyv, &[*b"H264", *b"BA81"]),
            None
        );
        assert_eq!(choose_format(PixelFormat::Mjpeg, &[]), None);
    }
}
