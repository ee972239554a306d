//! What to open: the source-spec string a user types (`--source yuyv:clip.yuyv@640x360`), the
//! replay options, and the capture settings a board profile asks a live camera for.
//!
//! The spec is one string so that a board profile, the CLI and a test can all name a source
//! the same way; parsing it is strict and every error is one line that names the spec and
//! shows the expected form, because on a headless board that message is all there is.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A frame source named by a `kind:argument` string.
///
/// | spec | source |
/// |---|---|
/// | `v4l2:/dev/video0` (or `v4l2:0`) | live V4L2 camera |
/// | `mjpeg:PATH` | concatenated JPEGs, as a USB camera sends in MJPEG mode |
/// | `yuyv:PATH@WxH` | raw V4L2 `YUYV` frames of W×H pixels, back to back |
/// | `images:DIR` | every `.jpg`/`.jpeg`/`.png` in DIR, sorted by file name |
/// | `image:FILE` | one still image |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    V4l2 {
        device: PathBuf,
    },
    Mjpeg {
        path: PathBuf,
    },
    Yuyv {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    Images {
        dir: PathBuf,
    },
    Image {
        path: PathBuf,
    },
}

const FORMS: &str =
    "expected v4l2:/dev/videoN, mjpeg:PATH, yuyv:PATH@WIDTHxHEIGHT, images:DIR or image:FILE";

/// Largest frame side we accept in a spec; far above any camera, small enough that W*H*2 can
/// never overflow.
const MAX_SIDE: u32 = 16384;

fn spec_err(spec: &str, reason: impl Into<String>) -> Error {
    Error::Camera {
        source_name: spec.to_string(),
        reason: reason.into(),
    }
}

fn parse_size(spec: &str, size: &str) -> Result<(u32, u32)> {
    let bad = |why: &str| {
        spec_err(
            spec,
            format!("bad frame size `{size}`: {why} (write WIDTHxHEIGHT, e.g. 640x360)"),
        )
    };
    let (w, h) = size
        .split_once(['x', 'X'])
        .ok_or_else(|| bad("no `x` between width and height"))?;
    let w: u32 = w.trim().parse().map_err(|_| bad("width is not a number"))?;
    let h: u32 = h
        .trim()
        .parse()
        .map_err(|_| bad("height is not a number"))?;
    if w == 0 || h == 0 {
        return Err(bad("width and height must be at least 1"));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(bad(&format!("sides above {MAX_SIDE} are not supported")));
    }
    if w & 1 != 0 {
        return Err(bad(
            "YUYV packs two pixels per 4 bytes, so the width must be even",
        ));
    }
    Ok((w, h))
}

impl FromStr for SourceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let spec = s.trim();
        let (kind, arg) = spec
            .split_once(':')
            .ok_or_else(|| spec_err(spec, format!("no `kind:` prefix; {FORMS}")))?;
        if arg.is_empty() {
            return Err(spec_err(spec, format!("nothing after `{kind}:`; {FORMS}")));
        }
        match kind {
            "v4l2" => {
                // `v4l2:0` is shorthand for `/dev/video0`.
                let device = if arg.bytes().all(|b| b.is_ascii_digit()) {
                    PathBuf::from(format!("/dev/video{arg}"))
                } else {
                    PathBuf::from(arg)
                };
                Ok(SourceSpec::V4l2 { device })
            }
            "mjpeg" => Ok(SourceSpec::Mjpeg { path: arg.into() }),
            "yuyv" => {
                let (path, size) = arg.rsplit_once('@').ok_or_else(|| {
                    spec_err(
                        spec,
                        "raw YUYV has no header, so the frame size is needed: \
                         write yuyv:PATH@WIDTHxHEIGHT, e.g. yuyv:clip.yuyv@640x360",
                    )
                })?;
                if path.is_empty() {
                    return Err(spec_err(spec, "no file before `@`"));
                }
                let (width, height) = parse_size(spec, size)?;
                Ok(SourceSpec::Yuyv {
                    path: path.into(),
                    width,
                    height,
                })
            }
            "images" => Ok(SourceSpec::Images { dir: arg.into() }),
            "image" => Ok(SourceSpec::Image { path: arg.into() }),
            other => Err(spec_err(
                spec,
                format!("unknown source kind `{other}`; {FORMS}"),
            )),
        }
    }
}

impl fmt::Display for SourceSpec {
    /// Writes the spec back in the form `FromStr` reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::V4l2 { device } => write!(f, "v4l2:{}", device.display()),
            SourceSpec::Mjpeg { path } => write!(f, "mjpeg:{}", path.display()),
            SourceSpec::Yuyv {
                path,
                width,
                height,
            } => write!(f, "yuyv:{}@{width}x{height}", path.display()),
            SourceSpec::Images { dir } => write!(f, "images:{}", dir.display()),
            SourceSpec::Image { path } => write!(f, "image:{}", path.display()),
        }
    }
}

/// How a recorded source is played back.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReplayOptions {
    /// `Some(f)`: behave like a live camera running at `f` frames per second (frame i is due
    /// at t0 + i/f, a late consumer gets the newest due frame and the rest are dropped as
    /// stale). `None`: every frame, in order, as fast as asked.
    pub fps: Option<f64>,
    /// Start again from the first frame after the last one instead of ending.
    pub looped: bool,
}

/// Pixel format asked of a V4L2 camera (the V4L2 fourccs `YUYV`, `MJPG`, `GREY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Yuyv,
    Mjpeg,
    Grey,
}

impl PixelFormat {
    /// All formats we can convert, in the order we fall back to them.
    pub const ALL: [PixelFormat; 3] = [PixelFormat::Yuyv, PixelFormat::Mjpeg, PixelFormat::Grey];

    /// The V4L2 fourcc code.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Grey => *b"GREY",
        }
    }

    /// The format with this fourcc, if we support it.
    pub fn from_fourcc(code: [u8; 4]) -> Option<Self> {
        PixelFormat::ALL.into_iter().find(|p| p.fourcc() == code)
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.fourcc();
        f.write_str(std::str::from_utf8(&code).unwrap_or("????"))
    }
}

impl FromStr for PixelFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "YUYV" | "YUY2" => Ok(PixelFormat::Yuyv),
            "MJPG" | "MJPEG" => Ok(PixelFormat::Mjpeg),
            "GREY" | "GRAY" | "Y8" => Ok(PixelFormat::Grey),
            _ => Err(Error::Msg(format!(
                "unknown pixel format `{s}` (expected YUYV, MJPG or GREY)"
            ))),
        }
    }
}

/// What a board profile asks a live camera for. The driver may pick the nearest size it
/// supports; the frames then have the size actually negotiated (logged as a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureSettings {
    pub width: u32,
    pub height: u32,
    /// Frames per second; 0 leaves the driver's default.
    pub fps: u32,
    /// Preferred format; the others we support are tried after it.
    pub format: PixelFormat,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            width: 640,
            height: 480,
            fps: 30,
            format: PixelFormat::Yuyv,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        let e = s.parse::<SourceSpec>().unwrap_err().to_string();
        assert!(!e.contains('\n'), "error must be one line: {e:?}");
        e
    }

    #[test]
    fn good_specs_parse_and_round_trip() {
        let cases = [
            (
                "v4l2:/dev/video0",
                SourceSpec::V4l2 {
                    device: "/dev/video0".into(),
                },
            ),
            (
                "v4l2:2",
                SourceSpec::V4l2 {
                    device: "/dev/video2".into(),
                },
            ),
            (
                "mjpeg:clips/a.mjpeg",
                SourceSpec::Mjpeg {
                    path: "clips/a.mjpeg".into(),
                },
            ),
            (
                "yuyv:clip.yuyv@640x360",
                SourceSpec::Yuyv {
                    path: "clip.yuyv".into(),
                    width: 640,
                    height: 360,
                },
            ),
            // '@' inside the path: the size is after the last one.
            (
                "yuyv:/tmp/a@b/c.yuyv@320X240",
                SourceSpec::Yuyv {
                    path: "/tmp/a@b/c.yuyv".into(),
                    width: 320,
                    height: 240,
                },
            ),
            ("images:dir", SourceSpec::Images { dir: "dir".into() }),
            // a Windows-ish path with a second ':' stays whole
            (
                "image:C:/x.png",
                SourceSpec::Image {
                    path: "C:/x.png".into(),
                },
            ),
        ];
        for (text, want) in cases {
            let got: SourceSpec = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            let again: SourceSpec = got.to_string().parse().unwrap();
            assert_eq!(again, want, "round trip of {text}");
        }
        assert_eq!(
            SourceSpec::Yuyv {
                path: "a".into(),
                width: 4,
                height: 2
            }
            .to_string(),
            "yuyv:a@4x2"
        );
    }

    #[test]
    fn bad_specs_give_one_line_errors_naming_the_problem() {
        let e = err("foo:bar");
        assert!(e.starts_with("foo:bar: unknown source kind `foo`"), "{e}");
        assert!(e.contains("mjpeg:PATH"), "{e}");

        let e = err("yuyv:x.yuyv");
        assert!(e.starts_with("yuyv:x.yuyv: "), "{e}");
        assert!(e.contains("@WIDTHxHEIGHT"), "{e}");

        let e = err("yuyv:x@0x0");
        assert!(e.contains("bad frame size `0x0`"), "{e}");
        assert!(e.contains("at least 1"), "{e}");

        let e = err("yuyv:x@641x360");
        assert!(e.contains("width must be even"), "{e}");

        let e = err("yuyv:x@640");
        assert!(e.contains("no `x`"), "{e}");
        let e = err("yuyv:x@axb");
        assert!(e.contains("width is not a number"), "{e}");
        let e = err("yuyv:x@64x-1");
        assert!(e.contains("height is not a number"), "{e}");
        let e = err("yuyv:x@99999x2");
        assert!(e.contains("above 16384"), "{e}");
        let e = err("yuyv:@640x360");
        assert!(e.contains("no file"), "{e}");

        let e = err("just-a-path.mjpeg");
        assert!(e.contains("no `kind:` prefix"), "{e}");
        let e = err("mjpeg:");
        assert!(e.contains("nothing after `mjpeg:`"), "{e}");
        let e = err("");
        assert!(e.contains("no `kind:` prefix"), "{e}");
    }

    #[test]
    fn pixel_formats() {
        assert_eq!("mjpeg".parse::<PixelFormat>().unwrap(), PixelFormat::Mjpeg);
        assert_eq!("YUYV".parse::<PixelFormat>().unwrap(), PixelFormat::Yuyv);
        assert_eq!("grey".parse::<PixelFormat>().unwrap(), PixelFormat::Grey);
        assert!("H264".parse::<PixelFormat>().is_err());
        assert_eq!(PixelFormat::from_fourcc(*b"MJPG"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::from_fourcc(*b"NV12"), None);
        assert_eq!(PixelFormat::Grey.to_string(), "GREY");
    }
}
