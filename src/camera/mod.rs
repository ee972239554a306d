//! Where frames come from: one [`FrameSource`] trait over live V4L2 cameras and recorded
//! clips (MJPEG streams, raw YUYV, image files), all delivering RGB [`Frame`]s.
//!
//! Face unlock wants the scene *now*, not a backlog: a detector slower than the camera must
//! never work through queued old frames while the person at the door waits. So every source
//! follows the rule "always the newest frame": a live camera drops older buffered frames
//! (counted in [`SourceStats::dropped_stale`]) and a paced replay behaves the same way, which
//! makes a recorded clip a faithful stand-in for a camera in tests and demos.
//!
//! Layout: `spec` (what to open), `convert` (YUYV/GREY/JPEG → RGB), `mjpeg` (splitting a
//! stream into JPEGs), `replay` (recorded sources and pacing), `v4l2` (live capture, behind
//! the `v4l2` cargo feature, Linux only), `reconnect` (reopen with backoff after an unplug),
//! `clock` (injectable time for pacing and backoff).

pub mod clock;
pub mod convert;
pub mod mjpeg;
pub mod reconnect;
pub mod replay;
pub mod spec;
#[cfg(all(feature = "v4l2", target_os = "linux"))]
pub mod v4l2;

use std::sync::Arc;
use std::time::Instant;

pub use clock::{Clock, ManualClock, SystemClock};
pub use reconnect::{Backoff, Reconnecting};
pub use replay::ReplaySource;
pub use spec::{CaptureSettings, PixelFormat, ReplayOptions, SourceSpec};

use crate::error::Result;

/// One RGB frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub rgb: image::RgbImage,
    /// Frame number within the source: the driver's sequence number for a camera, the frame
    /// index for a replay (counting on across loops). Gaps mean dropped frames.
    pub seq: u64,
    /// When the frame was captured (camera: when it was dequeued; paced replay: when it was
    /// due; unpaced replay: when it was read).
    pub captured: Instant,
}

/// Counters every source keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames returned by `next_frame`.
    pub delivered: u64,
    /// Frames skipped because a newer one was already available.
    pub dropped_stale: u64,
    /// Frames that could not be decoded (truncated, corrupt, partial) and were skipped.
    pub corrupt: u64,
}

impl std::ops::AddAssign for SourceStats {
    fn add_assign(&mut self, o: SourceStats) {
        self.delivered += o.delivered;
        self.dropped_stale += o.dropped_stale;
        self.corrupt += o.corrupt;
    }
}

/// A camera or a recording.
pub trait FrameSource: Send {
    /// The newest frame. `Ok(None)`: the source has ended (a replay without loop). `Err`: the
    /// source failed (device gone, I/O error); a bad single frame is not an error, it is
    /// skipped and counted in `corrupt`.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
    /// The spec it was opened from, for messages.
    fn name(&self) -> &str;
    fn stats(&self) -> SourceStats;
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        (**self).next_frame()
    }
    fn name(&self) -> &str {
        (**self).name()
    }
    fn stats(&self) -> SourceStats {
        (**self).stats()
    }
}

/// Opens the source a spec names. A live camera must open now (a missing device is an error
/// here, at start-up); once open it is wrapped in [`Reconnecting`], so a later unplug gives
/// errors while it is gone and frames again when it is back. `replay` applies to recorded
/// sources, `capture` to live ones.
pub fn open(
    spec: &SourceSpec,
    replay: &ReplayOptions,
    capture: &CaptureSettings,
) -> Result<Box<dyn FrameSource>> {
    match spec {
        SourceSpec::V4l2 { device } => open_v4l2(device, capture),
        _ => Ok(Box::new(ReplaySource::open(
            spec,
            replay,
            Arc::new(SystemClock),
        )?)),
    }
}

#[cfg(all(feature = "v4l2", target_os = "linux"))]
fn open_v4l2(device: &std::path::Path, capture: &CaptureSettings) -> Result<Box<dyn FrameSource>> {
    let first = v4l2::V4l2Source::open(device, capture)?;
    let device = device.to_path_buf();
    let capture = *capture;
    let name = first.name().to_string();
    let reopen = move || -> Result<Box<dyn FrameSource>> {
        Ok(Box::new(v4l2::V4l2Source::open(&device, &capture)?))
    };
    Ok(Box::new(Reconnecting::with_first(
        name,
        Box::new(first),
        reopen,
        Backoff::default(),
        Arc::new(SystemClock),
    )))
}

#[cfg(not(all(feature = "v4l2", target_os = "linux")))]
fn open_v4l2(device: &std::path::Path, _capture: &CaptureSettings) -> Result<Box<dyn FrameSource>> {
    Err(crate::error::Error::Camera {
        source_name: format!("v4l2:{}", device.display()),
        reason: "live capture is not available: built without the `v4l2` feature or not on Linux"
            .to_string(),
    })
}

/// Folder of the shared test data (`FACEGATE_SHARED`, else `../shared` beside the project).
#[cfg(test)]
pub(crate) fn shared_dir() -> std::path::PathBuf {
    std::env::var_os("FACEGATE_SHARED")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn missing_device_is_a_one_line_error_naming_it() {
        let spec: SourceSpec = "v4l2:/dev/video99".parse().unwrap();
        let err = open(
            &spec,
            &ReplayOptions::default(),
            &CaptureSettings::default(),
        )
        .err()
        .expect("there is no /dev/video99");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg:?}");
        assert!(msg.contains("/dev/video99"), "{msg}");
        assert!(matches!(err, Error::Camera { .. }), "{err:?}");
        #[cfg(all(feature = "v4l2", target_os = "linux"))]
        assert!(msg.contains("No such file or directory"), "{msg}");
    }

    #[test]
    fn not_a_device_is_an_error_not_a_panic() {
        // A regular file is not a V4L2 device: the first ioctl fails.
        let f = tempfile::NamedTempFile::new().unwrap();
        let spec = SourceSpec::V4l2 {
            device: f.path().to_path_buf(),
        };
        let err = open(
            &spec,
            &ReplayOptions::default(),
            &CaptureSettings::default(),
        )
        .err()
        .expect("a temp file is not a camera");
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{msg:?}");
        assert!(msg.contains(&f.path().display().to_string()), "{msg}");
    }
}
