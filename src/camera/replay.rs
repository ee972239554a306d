//! Recorded sources: an MJPEG stream, a raw YUYV file, a folder of images, one image —
//! played back either as fast as asked (tests, benchmarks: every frame, in order) or paced
//! like a live camera at a given frame rate (demos, end-to-end tests of the unlock loop).
//!
//! Pacing follows the camera rule of the module: frame i is due at t0 + i/fps, where t0 is
//! the first `next_frame` call (not `open`, so loading models first does not make the first
//! frames stale). A consumer that asks early sleeps until the next frame is due; one that
//! asks late gets the newest due frame, and the frames it missed are counted as
//! `dropped_stale` without being decoded. A frame that does not decode is skipped, counted as
//! `corrupt` and logged; the clip goes on.
//!
//! Memory: an MJPEG file is read whole, then indexed by the splitter. The index gives the
//! frame count (needed to skip to "the newest due frame" without decoding the ones between)
//! and lets the splitter look back when it resynchronises over damaged data; clips are a few MB
//! (the shared ones are 1.5–3.6 MB; a minute of 640×360 MJPEG is ~30 MB). A raw YUYV file is
//! not read whole: frames have a fixed size, so each is read at its offset into one reused
//! buffer. Image folders are listed at open and each file is decoded when its turn comes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::clock::Clock;
use super::convert::{decode_jpeg, yuyv_to_rgb};
use super::mjpeg::{self, JpegSpan, SpanStatus};
use super::spec::{ReplayOptions, SourceSpec};
use super::{Frame, FrameSource, SourceStats};
use crate::error::{Error, Result};

/// Highest replay rate accepted; above it "paced" is meaningless.
const MAX_FPS: f64 = 1000.0;

/// A recorded source; see the module doc.
pub struct ReplaySource {
    name: String,
    clip: Clip,
    fps: Option<f64>,
    looped: bool,
    clock: Arc<dyn Clock>,
    /// Global index of the next frame (counts on across loops).
    next: u64,
    t0: Option<Instant>,
    /// Corrupt frames met in a row; a whole clip of them ends a looped replay with an error.
    corrupt_run: u64,
    stats: SourceStats,
}

enum Clip {
    Mjpeg {
        data: Vec<u8>,
        spans: Vec<JpegSpan>,
    },
    Yuyv {
        path: PathBuf,
        file: File,
        width: u32,
        height: u32,
        frame_bytes: u64,
        whole: u64,
        trailing: u64,
        buf: Vec<u8>,
    },
    Images {
        files: Vec<PathBuf>,
    },
    Still {
        image: RgbImage,
    },
}

/// One slot of a clip: a frame, or why it is skipped.
enum Slot {
    Frame(RgbImage),
    Corrupt(String),
}

fn camera_err(name: &str, reason: impl Into<String>) -> Error {
    Error::Camera {
        source_name: name.to_string(),
        reason: reason.into(),
    }
}

/// Image files go through the project's one decoder ([`crate::image_io`]), so a folder or a
/// still image refuses exactly what `detect` refuses (the error names the file).
fn read_image(path: &Path) -> Result<RgbImage> {
    crate::image_io::load_rgb(path)
}

fn is_image_file(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

impl Clip {
    /// Number of slots, corrupt ones included.
    fn len(&self) -> u64 {
        match self {
            Clip::Mjpeg { spans, .. } => spans.len() as u64,
            Clip::Yuyv {
                whole, trailing, ..
            } => whole + u64::from(*trailing > 0),
            Clip::Images { files } => files.len() as u64,
            Clip::Still { .. } => 1,
        }
    }

    /// Slot `i` (< len). `Err` only for failures of the source itself (I/O).
    fn read(&mut self, i: u64) -> Result<Slot> {
        Ok(match self {
            Clip::Mjpeg { data, spans } => {
                let span = &spans[i as usize];
                match &span.status {
                    SpanStatus::Broken(reason) => Slot::Corrupt(format!(
                        "{reason} (stream bytes {}..{})",
                        span.start, span.end
                    )),
                    SpanStatus::Complete { .. } => match decode_jpeg(&data[span.start..span.end]) {
                        Ok(rgb) => Slot::Frame(rgb),
                        Err(reason) => Slot::Corrupt(format!(
                            "JPEG does not decode: {reason} (stream bytes {}..{})",
                            span.start, span.end
                        )),
                    },
                }
            }
            Clip::Yuyv {
                path,
                file,
                width,
                height,
                frame_bytes,
                whole,
                trailing,
                buf,
            } => {
                if i >= *whole {
                    return Ok(Slot::Corrupt(format!(
                        "trailing partial frame: {trailing} of {frame_bytes} bytes"
                    )));
                }
                file.seek(SeekFrom::Start(i * *frame_bytes))
                    .and_then(|_| file.read_exact(buf))
                    .map_err(|e| Error::io(path.clone(), e))?;
                match yuyv_to_rgb(buf, *width, *height, *width as usize * 2) {
                    Ok(rgb) => Slot::Frame(rgb),
                    Err(e) => Slot::Corrupt(e.to_string()),
                }
            }
            Clip::Images { files } => {
                let path = &files[i as usize];
                match read_image(path) {
                    Ok(rgb) => Slot::Frame(rgb),
                    Err(e) => Slot::Corrupt(e.to_string()),
                }
            }
            Clip::Still { image } => Slot::Frame(image.clone()),
        })
    }
}

impl ReplaySource {
    /// Opens a recorded source. `clock` paces it (use [`super::SystemClock`] outside tests).
    pub fn open(spec: &SourceSpec, opts: &ReplayOptions, clock: Arc<dyn Clock>) -> Result<Self> {
        let name = spec.to_string();
        if let Some(f) = opts.fps {
            if !(f.is_finite() && f > 0.0 && f <= MAX_FPS) {
                return Err(camera_err(
                    &name,
                    format!("replay fps must be in (0, {MAX_FPS}], got {f}"),
                ));
            }
        }
        let clip = match spec {
            SourceSpec::V4l2 { .. } => {
                return Err(camera_err(&name, "a live camera is not a replay source"))
            }
            SourceSpec::Mjpeg { path } => {
                let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                let spans = mjpeg::split(&data);
                if spans.is_empty() {
                    return Err(camera_err(
                        &name,
                        format!(
                            "no JPEG frame (no FF D8 SOI marker) in {} bytes",
                            data.len()
                        ),
                    ));
                }
                let broken = spans
                    .iter()
                    .filter(|s| matches!(s.status, SpanStatus::Broken(_)))
                    .count();
                log::info!(
                    "{name}: {} frames in {} bytes ({broken} broken)",
                    spans.len(),
                    data.len()
                );
                Clip::Mjpeg { data, spans }
            }
            SourceSpec::Yuyv {
                path,
                width,
                height,
                ..
            } => {
                let (width, height) = (*width, *height);
                if width == 0 || height == 0 || width & 1 != 0 {
                    return Err(camera_err(
                        &name,
                        format!("bad YUYV frame size {width}x{height} (both ≥ 1, width even)"),
                    ));
                }
                // Raw frames have no header: the size from the spec is what gets allocated.
                crate::image_limits::current()
                    .check(width.into(), height.into())
                    .map_err(|reason| camera_err(&name, reason))?;
                let frame_bytes = u64::from(width) * u64::from(height) * 2;
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
                let (whole, trailing) = (len / frame_bytes, len % frame_bytes);
                if whole == 0 {
                    return Err(camera_err(
                        &name,
                        format!(
                            "file has {len} bytes, less than one {width}x{height} YUYV frame \
                             ({frame_bytes} bytes); check the @WIDTHxHEIGHT size"
                        ),
                    ));
                }
                if trailing > 0 {
                    log::warn!(
                        "{name}: {len} bytes = {whole} frames of {frame_bytes} + {trailing} \
                         trailing bytes; the partial frame is skipped as corrupt (if the frames \
                         look sheared, the @WIDTHxHEIGHT size is wrong)"
                    );
                }
                let buf = vec![0; frame_bytes as usize];
                Clip::Yuyv {
                    path: path.clone(),
                    file,
                    width,
                    height,
                    frame_bytes,
                    whole,
                    trailing,
                    buf,
                }
            }
            SourceSpec::Images { dir } => {
                let mut files = Vec::new();
                for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                    let path = entry.map_err(|e| Error::io(dir, e))?.path();
                    if path.is_file() && is_image_file(&path) {
                        files.push(path);
                    }
                }
                if files.is_empty() {
                    return Err(camera_err(
                        &name,
                        "no .jpg, .jpeg or .png file in the folder",
                    ));
                }
                files.sort();
                Clip::Images { files }
            }
            SourceSpec::Image { path } => {
                if !path.exists() {
                    return Err(Error::io(
                        path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ));
                }
                let image = read_image(path)?;
                Clip::Still { image }
            }
        };
        Ok(ReplaySource {
            name,
            clip,
            fps: opts.fps,
            looped: opts.looped,
            clock,
            next: 0,
            t0: None,
            corrupt_run: 0,
            stats: SourceStats::default(),
        })
    }

    /// Number of frame slots in one pass of the clip (corrupt ones included).
    pub fn len(&self) -> u64 {
        self.clip.len()
    }

    /// Never true: opening fails on an empty clip. (Here for clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        self.clip.len() == 0
    }
}

fn secs(ns_f: f64) -> Duration {
    Duration::from_nanos(ns_f.round().max(0.0) as u64)
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let len = self.clip.len();
        loop {
            if !self.looped && self.next >= len {
                return Ok(None);
            }
            let mut g = self.next;
            let captured = match self.fps {
                None => self.clock.now(),
                Some(fps) => {
                    let now = self.clock.now();
                    let t0 = *self.t0.get_or_insert(now);
                    let due = t0 + secs(g as f64 * 1e9 / fps);
                    if now < due {
                        self.clock.sleep(due - now);
                        due
                    } else {
                        // Newest frame due by now (the epsilon absorbs float error at exact
                        // due times).
                        let elapsed = now.duration_since(t0).as_nanos() as f64;
                        let mut newest = (elapsed * fps / 1e9 + 1e-6).floor() as u64;
                        if !self.looped {
                            newest = newest.min(len - 1);
                        }
                        if newest > g {
                            self.stats.dropped_stale += newest - g;
                            g = newest;
                        }
                        t0 + secs(g as f64 * 1e9 / fps)
                    }
                }
            };
            self.next = g + 1;
            match self.clip.read(g % len)? {
                Slot::Frame(rgb) => {
                    self.corrupt_run = 0;
                    self.stats.delivered += 1;
                    return Ok(Some(Frame {
                        rgb,
                        seq: g,
                        captured,
                    }));
                }
                Slot::Corrupt(reason) => {
                    self.stats.corrupt += 1;
                    self.corrupt_run += 1;
                    log::warn!("{}: skipping frame {g}: {reason}", self.name);
                    if self.looped && self.corrupt_run >= len {
                        return Err(camera_err(
                            &self.name,
                            format!("none of the {len} frames of the clip decodes"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::clock::{ManualClock, SystemClock};
    use crate::camera::shared_dir;

    fn video(name: &str) -> PathBuf {
        shared_dir().join("data/video").join(name)
    }

    fn open(spec: &str, fps: Option<f64>, looped: bool) -> Result<ReplaySource> {
        ReplaySource::open(
            &spec.parse()?,
            &ReplayOptions { fps, looped },
            Arc::new(SystemClock),
        )
    }

    fn drain(src: &mut ReplaySource) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = src.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    /// Counts the comment segment ffmpeg writes once into every frame
    /// (`FF FE 00 10 "Lavc..."`) by plain byte search: a second, independent way to count
    /// the frames of the shared clips.
    fn count_lavc_comments(data: &[u8]) -> usize {
        let pat = b"\xFF\xFE\x00\x10Lavc";
        data.windows(pat.len()).filter(|w| w == pat).count()
    }

    /// Float BT.601 limited range, written independently of `convert`.
    fn ref_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
        let (y, u, v) = (y as f64 - 16.0, u as f64 - 128.0, v as f64 - 128.0);
        let c = |x: f64| (x + 0.5).floor().clamp(0.0, 255.0) as u8;
        [
            c(1.164 * y + 1.596 * v),
            c(1.164 * y - 0.392 * u - 0.813 * v),
            c(1.164 * y + 2.017 * u),
        ]
    }

    #[test]
    fn yuyv_clip_gives_ten_frames_with_right_pixels() {
        let path = video("webcam_talking_640x360_10f.yuyv");
        let mut src = open(&format!("yuyv:{}@640x360", path.display()), None, false).unwrap();
        assert_eq!(src.len(), 10);
        let frames = drain(&mut src);
        assert_eq!(frames.len(), 10);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.rgb.dimensions(), (640, 360));
            assert_eq!(f.seq, i as u64);
        }
        assert_eq!(
            src.stats(),
            SourceStats {
                delivered: 10,
                dropped_stale: 0,
                corrupt: 0
            }
        );
        assert!(src.next_frame().unwrap().is_none(), "stays ended");

        // Spot-check pixels of frame 7 against the raw bytes read independently.
        let raw = std::fs::read(&path).unwrap();
        let frame7 = &raw[7 * 640 * 360 * 2..8 * 640 * 360 * 2];
        for (x, y) in [(0u32, 0u32), (101, 57), (320, 180), (639, 359), (2, 200)] {
            let mp = (y as usize * 640 + (x as usize & !1)) * 2;
            let (y0, u, y1, v) = (frame7[mp], frame7[mp + 1], frame7[mp + 2], frame7[mp + 3]);
            let luma = if x % 2 == 0 { y0 } else { y1 };
            assert_eq!(
                frames[7].rgb.get_pixel(x, y).0,
                ref_rgb(luma, u, v),
                "pixel ({x},{y})"
            );
        }
        // consecutive frames of a talking person differ
        assert_ne!(frames[0].rgb.as_raw(), frames[9].rgb.as_raw());
    }

    /// Decision: a size whose frames do not divide the file is not refused (a recording cut
    /// short is legitimate) — the whole frames play and the trailing partial one is counted
    /// corrupt, with a warning at open naming the sizes. An odd width is refused at parse
    /// time, and a file smaller than one frame at open.
    #[test]
    fn yuyv_wrong_size_counts_partial_frame_or_errors() {
        let path = video("webcam_talking_640x360_10f.yuyv");
        // 4_608_000 / (640*361*2 = 462_080) = 9 frames + 449_280 bytes
        let mut src = open(&format!("yuyv:{}@640x361", path.display()), None, false).unwrap();
        let frames = drain(&mut src);
        assert_eq!(frames.len(), 9);
        assert_eq!(src.stats().corrupt, 1);

        let e = open(&format!("yuyv:{}@641x360", path.display()), None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("width must be even"), "{e}");

        let e = open(&format!("yuyv:{}@4000x4000", path.display()), None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("less than one 4000x4000 YUYV frame"), "{e}");

        let e = open("yuyv:/nonexistent/x.yuyv@4x2", None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("/nonexistent/x.yuyv: "), "{e}");
    }

    fn check_mjpeg_clip(name: &str, readme_count: usize) {
        let path = video(name);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(
            count_lavc_comments(&data),
            readme_count,
            "independent count"
        );
        let mut src = open(&format!("mjpeg:{}", path.display()), None, false).unwrap();
        let frames = drain(&mut src);
        assert_eq!(frames.len(), readme_count);
        assert!(frames.iter().all(|f| f.rgb.dimensions() == (640, 360)));
        assert_eq!(src.stats().corrupt, 0);
        assert_eq!(src.stats().delivered, readme_count as u64);
    }

    #[test]
    fn hamilton_mjpeg_has_300_frames() {
        check_mjpeg_clip("hamilton_640x360.mjpeg", 300);
    }

    #[test]
    fn webcam_mjpeg_has_135_frames() {
        check_mjpeg_clip("webcam_talking_640x360.mjpeg", 135);
    }

    /// Damages the real webcam clip: frame 5 cut in half (in its entropy data), frame 9 cut
    /// inside its headers, frame 20's SOF0 size zeroed (splits fine, does not decode) and the
    /// last frame cut in half. Each is skipped and counted; every other frame arrives.
    #[test]
    fn damaged_mjpeg_frames_are_skipped_and_counted() {
        let data = std::fs::read(video("webcam_talking_640x360.mjpeg")).unwrap();
        let spans = mjpeg::split(&data);
        assert_eq!(spans.len(), 135);
        let mut out = Vec::new();
        let n = spans.len();
        for (i, s) in spans.iter().enumerate() {
            let mut f = data[s.start..s.end].to_vec();
            match i {
                5 => f.truncate(f.len() / 2),
                9 => f.truncate(100),
                20 => {
                    let sof = f.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
                    // FFC0 len(2) precision(1) height(2) width(2)
                    f[sof + 5..sof + 9].copy_from_slice(&[0, 0, 0, 0]);
                }
                _ if i == n - 1 => f.truncate(f.len() / 2),
                _ => {}
            }
            out.extend_from_slice(&f);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("damaged.mjpeg");
        std::fs::write(&p, &out).unwrap();
        let mut src = open(&format!("mjpeg:{}", p.display()), None, false).unwrap();
        let frames = drain(&mut src);
        let seqs: Vec<u64> = frames.iter().map(|f| f.seq).collect();
        let want: Vec<u64> = (0..n as u64)
            .filter(|i| ![5, 9, 20, n as u64 - 1].contains(i))
            .collect();
        assert_eq!(seqs, want);
        assert_eq!(src.stats().corrupt, 4);
        assert_eq!(src.stats().delivered, n as u64 - 4);
        // the frame right after a damaged one is intact: same pixels as from the clean clip
        let clean = decode_jpeg(&data[spans[6].start..spans[6].end]).unwrap();
        assert_eq!(frames[5].seq, 6);
        assert_eq!(frames[5].rgb.as_raw(), clean.as_raw());
    }

    #[test]
    fn not_mjpeg_and_all_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.mjpeg");
        std::fs::write(&p, b"this is not a video").unwrap();
        let e = open(&format!("mjpeg:{}", p.display()), None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no JPEG frame"), "{e}");

        // two frames that split but never decode; looped must not spin forever
        let junk = [0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x03, 0x00, 0xFF, 0xD9];
        std::fs::write(&p, [junk, junk].concat()).unwrap();
        let mut src = open(&format!("mjpeg:{}", p.display()), None, true).unwrap();
        let e = src.next_frame().unwrap_err().to_string();
        assert!(e.contains("none of the 2 frames"), "{e}");
        let mut src = open(&format!("mjpeg:{}", p.display()), None, false).unwrap();
        assert!(src.next_frame().unwrap().is_none());
        assert_eq!(src.stats().corrupt, 2);
    }

    fn write_png(path: &Path, rgb: [u8; 3]) {
        RgbImage::from_pixel(8, 6, image::Rgb(rgb))
            .save(path)
            .unwrap();
    }

    #[test]
    fn image_folder_sorted_filtered_and_skips_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_png(&d.join("b.png"), [0, 255, 0]);
        write_png(&d.join("c.PNG"), [0, 0, 255]);
        RgbImage::from_pixel(8, 6, image::Rgb([255, 0, 0]))
            .save(d.join("a.jpg"))
            .unwrap();
        std::fs::write(d.join("bb.png"), b"not a png").unwrap();
        std::fs::write(d.join("notes.txt"), b"ignored").unwrap();
        std::fs::create_dir(d.join("sub.png")).unwrap(); // a folder, ignored

        let mut src = open(&format!("images:{}", d.display()), None, false).unwrap();
        assert_eq!(src.len(), 4);
        let frames = drain(&mut src);
        let colours: Vec<[u8; 3]> = frames.iter().map(|f| f.rgb.get_pixel(4, 3).0).collect();
        assert_eq!(colours.len(), 3);
        // JPEG is lossy: red within a few levels
        assert!(colours[0][0] > 240 && colours[0][1] < 15 && colours[0][2] < 15);
        assert_eq!(&colours[1..], &[[0, 255, 0], [0, 0, 255]]);
        assert_eq!(frames.iter().map(|f| f.seq).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(src.stats().corrupt, 1);

        let empty = tempfile::tempdir().unwrap();
        let e = open(&format!("images:{}", empty.path().display()), None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no .jpg, .jpeg or .png"), "{e}");
    }

    #[test]
    fn single_image_and_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("one.png");
        write_png(&p, [10, 20, 30]);
        let mut src = open(&format!("image:{}", p.display()), None, false).unwrap();
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(
            (f.rgb.dimensions(), f.rgb.get_pixel(0, 0).0),
            ((8, 6), [10, 20, 30])
        );
        assert!(src.next_frame().unwrap().is_none());

        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"garbage").unwrap();
        let e = open(&format!("image:{}", bad.display()), None, false)
            .err()
            .unwrap();
        assert!(matches!(e, Error::Image { .. }), "{e:?}");
        let e = open("image:/nonexistent.png", None, false).err().unwrap();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().starts_with("/nonexistent.png: "), "{e}");
    }

    /// Tiny raw YUYV clip of `n` 4x2 frames; frame k has luma 16 + k so it can be recognised.
    fn tiny_yuyv(dir: &Path, n: u8) -> String {
        let mut data = Vec::new();
        for k in 0..n {
            for _ in 0..4 {
                data.extend_from_slice(&[16 + k, 128, 16 + k, 128]);
            }
        }
        let p = dir.join("tiny.yuyv");
        std::fs::write(&p, data).unwrap();
        format!("yuyv:{}@4x2", p.display())
    }

    #[test]
    fn paced_replay_sleeps_when_early_and_drops_stale_when_late() {
        let dir = tempfile::tempdir().unwrap();
        let spec = tiny_yuyv(dir.path(), 20);
        let clock = ManualClock::new();
        let start = clock.now();
        let mut src = ReplaySource::open(
            &spec.parse().unwrap(),
            &ReplayOptions {
                fps: Some(10.0),
                looped: false,
            },
            Arc::new(clock.clone()),
        )
        .unwrap();
        let ms = Duration::from_millis;

        let f = src.next_frame().unwrap().unwrap(); // t = 0: frame 0 due now
        assert_eq!((f.seq, f.captured), (0, start));
        let f = src.next_frame().unwrap().unwrap(); // early: waits 100 ms for frame 1
        assert_eq!((f.seq, f.captured), (1, start + ms(100)));
        assert_eq!(clock.sleeps(), [ms(100)]);

        clock.advance(ms(350)); // consumer busy: now t = 450 ms, frames 2, 3, 4 are due
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!((f.seq, f.captured), (4, start + ms(400)));
        assert_eq!(src.stats().dropped_stale, 2);
        assert_eq!(clock.sleeps().len(), 1, "late: no sleep");

        let f = src.next_frame().unwrap().unwrap(); // frame 5 due at 500 ms
        assert_eq!(f.seq, 5);
        assert_eq!(clock.sleeps()[1], ms(50));
        // the frame content is the recorded frame 5 (luma 21 → 1.164·5 = 5.82 → 6)
        assert_eq!(f.rgb.get_pixel(0, 0).0, [6, 6, 6]);

        clock.advance(ms(10_000)); // far past the end: the last frame, then the end
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(f.seq, 19);
        assert!(src.next_frame().unwrap().is_none());
        assert_eq!(
            src.stats(),
            SourceStats {
                delivered: 5,
                dropped_stale: 2 + 13,
                corrupt: 0
            }
        );
    }

    #[test]
    fn looped_replay_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let spec = tiny_yuyv(dir.path(), 3);
        let mut src = open(&spec, None, true).unwrap();
        let frames: Vec<Frame> = (0..7).map(|_| src.next_frame().unwrap().unwrap()).collect();
        assert_eq!(
            frames.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5, 6]
        );
        for k in 3..7 {
            assert_eq!(frames[k].rgb.as_raw(), frames[k - 3].rgb.as_raw());
        }
        assert_ne!(frames[0].rgb.as_raw(), frames[1].rgb.as_raw());

        // paced + looped + late across the loop boundary
        let clock = ManualClock::new();
        let mut src = ReplaySource::open(
            &spec.parse().unwrap(),
            &ReplayOptions {
                fps: Some(10.0),
                looped: true,
            },
            Arc::new(clock.clone()),
        )
        .unwrap();
        assert_eq!(src.next_frame().unwrap().unwrap().seq, 0);
        clock.advance(Duration::from_millis(420));
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(f.seq, 4); // global index 4 = clip frame 1
        assert_eq!(f.rgb.as_raw(), frames[1].rgb.as_raw());
        assert_eq!(src.stats().dropped_stale, 3);
    }

    #[test]
    fn bad_fps_and_live_spec_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = tiny_yuyv(dir.path(), 2);
        for fps in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e6] {
            let e = open(&spec, Some(fps), false).err().unwrap().to_string();
            assert!(e.contains("replay fps must be"), "{e}");
        }
        let e = open("v4l2:/dev/video0", None, false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a replay source"), "{e}");
    }
}
