//! Hostile input and process hygiene (issue 12, findings 4, 6 and 8): decompression bombs
//! refused from the header, one strict JPEG decoder behind every source, CMYK decoded, no
//! panic on a closed stdout, SIGTERM handled from the first instant, one-line usage errors.
//! The JPEGs are made here (encoded, then patched), so every expected value is known.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::*;
use facegate::camera::{FrameSource, ReplayOptions, ReplaySource, SourceSpec, SystemClock};
use facegate::image_io::decode_rgb;

fn facegate() -> Command {
    let mut c = bin_command(env!("CARGO_BIN_EXE_facegate"));
    c.env(
        "FACEGATE_MODEL_CACHE",
        std::env::temp_dir().join("facegate-test-cache"),
    );
    c
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A w×h RGB test pattern.
fn pattern(w: usize, h: usize) -> Vec<u8> {
    (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            [(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8]
        })
        .collect()
}

/// Encodes `w`×`h` pixels with libjpeg (mozjpeg), baseline or progressive.
fn encode_jpeg(w: usize, h: usize, progressive: bool) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    c.set_size(w, h);
    c.set_quality(85.0);
    if progressive {
        c.set_progressive_mode();
    } else {
        c.set_fastest_defaults();
    }
    let mut s = c.start_compress(Vec::new()).unwrap();
    s.write_scanlines(&pattern(w, h)).unwrap();
    s.finish().unwrap()
}

/// Offset of the first `FF code` marker segment among the header segments.
fn find_segment(jpeg: &[u8], code: u8) -> usize {
    let mut pos = 2;
    loop {
        assert_eq!(jpeg[pos], 0xFF, "marker expected at {pos}");
        if jpeg[pos + 1] == code {
            return pos;
        }
        assert_ne!(jpeg[pos + 1], 0xDA, "no FF{code:02X} before SOS");
        let len = u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]) as usize;
        pos += 2 + len;
    }
}

/// A small JPEG whose SOF claims `w`×`h`: the decompression bomb of the issue.
fn bomb(w: u16, h: u16, progressive: bool) -> Vec<u8> {
    let mut j = encode_jpeg(16, 16, progressive);
    let sof = find_segment(&j, if progressive { 0xC2 } else { 0xC0 });
    // FF Cx, length (2), precision (1), height (2), width (2)
    j[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    j
}

/// The JPEG cut to half its entropy-coded data, with or without an EOI put back on.
fn truncated(with_eoi: bool) -> Vec<u8> {
    let good = std::fs::read(shared().join("data/images/two_faces.jpg")).unwrap();
    let mut t = good[..good.len() / 2].to_vec();
    if with_eoi {
        t.extend_from_slice(&[0xFF, 0xD9]);
    }
    t
}

fn replay(spec: &str) -> facegate::Result<ReplaySource> {
    ReplaySource::open(
        &spec.parse::<SourceSpec>()?,
        &ReplayOptions::default(),
        Arc::new(SystemClock),
    )
}

/// (frames delivered, frames skipped as corrupt) of a whole replay.
fn drain(src: &mut ReplaySource) -> (u64, u64) {
    while src.next_frame().unwrap().is_some() {}
    let s = src.stats();
    (s.delivered, s.corrupt)
}

#[test]
fn bombs_are_refused_from_the_header_by_every_source() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("bomb_20000.jpg", bomb(20000, 20000, false), "20000x20000"),
        (
            "bomb_30000_progressive.jpg",
            bomb(30000, 30000, true),
            "30000x30000",
        ),
    ];
    for (name, bytes, claim) in &cases {
        assert!(bytes.len() < 1200, "{name}: {} bytes", bytes.len());
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();

        // the library, as every command reads photos
        let e = decode_rgb(bytes, &path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(
            e.contains(claim) && e.contains("refused before decoding"),
            "{e}"
        );

        // image: and images: sources (enroll, unlock)
        let e = replay(&format!("image:{}", path.display()))
            .err()
            .expect("a bomb is no still image")
            .to_string();
        assert!(e.contains(claim), "{e}");

        // the binary: one line naming the file
        let out = facegate()
            .args(["detect", "--det"])
            .arg(model("det_500m"))
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&path.display().to_string()) && err.contains(claim),
            "{err}"
        );
    }

    // Raw YUYV has no header: the size in the spec is what would be allocated per frame.
    let raw = dir.path().join("big.yuyv");
    std::fs::write(&raw, vec![128u8; 1 << 16]).unwrap();
    let e = replay(&format!("yuyv:{}@16000x16000", raw.display()))
        .err()
        .expect("a 16000x16000 frame is over the limit")
        .to_string();
    assert!(
        e.contains("16000x16000") && e.contains("refused before decoding"),
        "{e}"
    );

    // Inside an MJPEG stream the bomb is one corrupt frame; the frames around it play.
    let good = encode_jpeg(64, 48, false);
    let mut stream = good.clone();
    stream.extend_from_slice(&cases[1].1);
    stream.extend_from_slice(&good);
    stream.extend_from_slice(&cases[0].1);
    stream.extend_from_slice(&good);
    let clip = dir.path().join("bombs.mjpeg");
    std::fs::write(&clip, &stream).unwrap();
    let mut src = replay(&format!("mjpeg:{}", clip.display())).unwrap();
    assert_eq!(drain(&mut src), (3, 2));
}

#[test]
fn the_limit_is_set_from_the_command_line() {
    let img = shared().join("data/images/two_faces.jpg"); // 400x328
    let out = facegate()
        .args(["detect", "--max-image", "256x256", "--det"])
        .arg(model("det_500m"))
        .arg(&img)
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("400x328") && err.contains("256x256"), "{err}");
    let out = facegate()
        .args(["detect", "--det"])
        .arg(model("det_500m"))
        .arg(&img)
        .args(["--max-megapixels", "0.1"])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("0.1 (--max-megapixels)"), "{err}");
}

#[test]
fn truncated_jpeg_is_refused_by_every_source() {
    let dir = tempfile::tempdir().unwrap();
    for with_eoi in [false, true] {
        let bytes = truncated(with_eoi);
        let path = dir.path().join(format!("cut_eoi_{with_eoi}.jpg"));
        std::fs::write(&path, &bytes).unwrap();
        let e = decode_rgb(&bytes, &path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        if with_eoi {
            // libjpeg only warns here ("premature end of data segment"): an error for us
            assert!(e.contains("premature end"), "{e}");
        }
        // image: — what `enroll --source image:` opens (it used another decoder before)
        let e = replay(&format!("image:{}", path.display()))
            .err()
            .expect("half a photo is refused")
            .to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        // images: — the file is a corrupt frame, nothing is delivered
        let folder = dir.path().join(format!("folder_{with_eoi}"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("a.jpg"), &bytes).unwrap();
        let mut src = replay(&format!("images:{}", folder.display())).unwrap();
        assert_eq!(drain(&mut src), (0, 1));
        // mjpeg: a corrupt frame between two good ones
        let good = encode_jpeg(64, 48, false);
        let mut stream = good.clone();
        stream.extend_from_slice(&bytes);
        stream.extend_from_slice(&good);
        let clip = dir.path().join(format!("cut_{with_eoi}.mjpeg"));
        std::fs::write(&clip, &stream).unwrap();
        let mut src = replay(&format!("mjpeg:{}", clip.display())).unwrap();
        assert_eq!(drain(&mut src), (2, 1));
    }
}

#[test]
fn garbage_between_segments_is_an_error_not_a_warning() {
    // libjpeg skips stray bytes before a marker with the warning "Corrupt JPEG data: N
    // extraneous bytes before marker"; a flipped length byte does the same.
    let good = encode_jpeg(32, 32, false);
    let dqt = find_segment(&good, 0xDB);
    let mut bad = good[..dqt].to_vec();
    bad.extend_from_slice(&[0x12, 0x34, 0x56]);
    bad.extend_from_slice(&good[dqt..]);
    assert!(decode_rgb(&good, Path::new("good.jpg")).is_ok());
    let e = decode_rgb(&bad, Path::new("bad.jpg"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("extraneous bytes"), "{e}");
}

#[test]
fn cmyk_jpeg_decodes_to_rgb() {
    // Two flat 16x16 blocks of Adobe (inverted) CMYK, 255 = no ink. By hand, R = C'·K'/255:
    // (255, 0, 0, 255) -> (255, 0, 0);  (128, 255, 64, 200) -> (100.4, 200, 50.2).
    let (w, h) = (32usize, 16usize);
    let mut px = Vec::with_capacity(w * h * 4);
    for _y in 0..h {
        for x in 0..w {
            px.extend_from_slice(if x < 16 {
                &[255, 0, 0, 255]
            } else {
                &[128, 255, 64, 200]
            });
        }
    }
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
    c.set_size(w, h);
    c.set_quality(100.0);
    let mut s = c.start_compress(Vec::new()).unwrap();
    s.write_scanlines(&px).unwrap();
    let jpeg = s.finish().unwrap();
    let img = decode_rgb(&jpeg, Path::new("cmyk.jpg")).expect("a CMYK JPEG is no corrupt file");
    assert_eq!(img.dimensions(), (32, 16));
    for (x, want) in [(4u32, [255i32, 0, 0]), (24, [100, 200, 50])] {
        for y in [0u32, 8, 15] {
            let got = img.get_pixel(x, y).0;
            for c in 0..3 {
                assert!(
                    (i32::from(got[c]) - want[c]).abs() <= 2,
                    "pixel ({x},{y}): {got:?}, want {want:?}"
                );
            }
        }
    }
}

fn small_store(dir: &Path) -> PathBuf {
    use facegate::unlock::store::TemplateStore;
    let mut s = TemplateStore::new("test-model", 4).unwrap();
    for (i, name) in ["ada", "bob", "cy"].iter().enumerate() {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        s.add_templates(name, vec![v]).unwrap();
    }
    let path = dir.join("store.fgt");
    let key =
        facegate::unlock::seal::DeviceKey::create(&facegate::unlock::seal::default_key_path(&path))
            .unwrap();
    s.save(&path, &key).unwrap();
    path
}

/// Runs `cmd` with a stdout whose reader is already closed: every write gets EPIPE.
fn with_closed_stdout(cmd: &mut Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer).stderr(Stdio::piped()).output().unwrap()
}

#[test]
fn closed_stdout_is_no_panic_for_lists() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let board = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/x86-dev.toml");
    let out = with_closed_stdout(
        facegate()
            .args(["users", "--board"])
            .arg(&board)
            .arg("--store")
            .arg(&store)
            .arg("list"),
    );
    let err = stderr_of(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "quiet exit: {err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn closed_stdout_keeps_the_unlock_loop_running_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let board = dir.path().join("board.toml");
    let store = dir.path().join("store.fgt");
    std::fs::write(
        &board,
        format!(
            "[board]\nname = \"test\"\ntarget = \"x86_64-unknown-linux-gnu\"\n\
             [camera]\ndevice = \"/dev/video0\"\nformat = \"yuyv\"\nwidth = 640\nheight = 360\nfps = 30\n\
             [models]\ndetector = {:?}\nrecognizer = {:?}\ndet_size = \"320x192\"\nprecision = \"f32\"\nthreads = 1\n\
             [store]\npath = {:?}\n\
             [match]\nthreshold_file = {:?}\n\
             [liveness]\nenabled = false\n\
             [policy]\nk = 3\nn = 5\nwindow_s = 2.0\nmax_failures = 5\nlockout_s = 30\n\
             [enroll]\nframes = 1\nmin_face_px = 40\n",
            model("det_500m"),
            model("mobilefacenet_512"),
            store,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/threshold-mobilefacenet_512.json")
        ),
    )
    .unwrap();
    let photo = shared().join("data/faces/examples/lin_manuel_miranda/lin-manuel-miranda.png");
    let out = with_closed_stdout(
        facegate()
            .args(["enroll", "--user", "lin", "--board"])
            .arg(&board)
            .arg("--source")
            .arg(format!("image:{}", photo.display())),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("enrolled lin"),
        "the log went on on stderr: {err}"
    );

    let clip = shared().join("data/video/webcam_talking_640x360.mjpeg");
    let out = with_closed_stdout(
        facegate()
            .args(["unlock", "--board"])
            .arg(&board)
            .arg("--source")
            .arg(format!("mjpeg:{}", clip.display())),
    );
    let err = stderr_of(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    // the decisions were logged (on stderr) up to the clip's last frames, and the loop ran
    // to its end
    assert!(err.contains("frame   132 | no match"), "{err}");
    assert!(err.contains("stopped (SourceEnded)"), "{err}");
    assert!(err.contains("logging to stderr"), "{err}");
}

/// Opens the write end of `fifo` once a reader is in `open(2)` on it (a non-blocking writer
/// open fails with ENXIO until then), waiting at most ~5 s. The reader is then past `main`'s
/// first step, the signal handlers. Unlike a look at SigCgt in /proc this also holds under
/// qemu-user, which catches every signal itself from its first instruction.
fn writer_once_read(fifo: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    for _ in 0..2000 {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => return Some(f),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                std::thread::sleep(std::time::Duration::from_millis(25))
            }
            Err(e) => panic!("{}: {e}", fifo.display()),
        }
    }
    None
}

#[test]
fn sigterm_at_start_is_handled() {
    use std::os::unix::process::ExitStatusExt;
    // A FIFO with no writer: opening it as the model blocks forever, so the process is
    // still starting up (no model, no loop) when the signal comes.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.safetensors");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let child = facegate()
        .args(["detect", "--det"])
        .arg(&fifo)
        .arg(shared().join("data/images/two_faces.jpg"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until the child opens the model; holding the write end without writing
    // keeps it blocked in reading it. Before the fix there was no handler for `detect` at all.
    let writer = writer_once_read(&fifo);
    assert!(writer.is_some(), "the child never opened the model file");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    drop(writer);
    assert_eq!(
        out.status.signal(),
        None,
        "killed by the signal: no handler"
    );
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(stderr_of(&out).trim(), "facegate: terminated (SIGTERM)");
}

#[test]
fn usage_errors_are_one_line_with_exit_2() {
    for args in [
        &["detect"][..],
        &["frobnicate"],
        &[],
        &["unlock", "--board", "b.toml", "--fps"],
        &["detect", "--det", "m", "--max-image", "big", "x.jpg"],
    ] {
        let out = facegate().args(args).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    let out = facegate().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn missing_file_error_says_it_once() {
    let out = facegate()
        .args(["detect", "--det", "/nonexistent/det.safetensors"])
        .arg(shared().join("data/images/two_faces.jpg"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("/nonexistent/det.safetensors"), "{err}");
}

/// Strictness must not refuse real photos: every JPEG and PNG of the shared data (faces,
/// detection set, liveness photos; every 20th LFW image) decodes.
#[test]
fn strict_decoder_reads_every_shared_photo() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
            {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&shared().join("data"), &mut files);
    files.sort();
    let lfw = shared().join("data/faces/lfw");
    let mut n_lfw = 0;
    files.retain(|p| {
        if p.starts_with(&lfw) {
            n_lfw += 1;
            n_lfw % 20 == 0
        } else {
            true
        }
    });
    assert!(files.len() > 1000, "{} files", files.len());
    let bad: Vec<String> = files
        .iter()
        .filter_map(|p| facegate::image_io::load_rgb(p).err().map(|e| e.to_string()))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} refused: {bad:#?}",
        bad.len(),
        files.len()
    );
}
