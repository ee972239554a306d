//! `facegate bench`: times the detector and/or the recogniser on this machine — median, p90
//! and minimum per stage, model load time and peak RSS — with an optional per-layer profile.
//! The last line of output is one JSON object, so scripts (e.g. `benches/peers/`) can
//! compare runs and engines without parsing the table.

use crate::cli::out::outln;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::format::Precision;
use crate::models::mobilefacenet::MobileFaceNet;
use crate::models::scrfd::Scrfd;
use crate::models::{Backend, LoadOptions};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Detector model (SCRFD; converted file or ONNX).
    #[arg(long)]
    pub det: Option<PathBuf>,
    /// Recogniser model (MobileFaceNet; converted file or ONNX).
    #[arg(long)]
    pub rec: Option<PathBuf>,
    /// Liveness model (anti-spoofing classifier; converted file or ONNX): times the whole
    /// stage, crop from a detector-size frame to scores.
    #[arg(long)]
    pub live: Option<PathBuf>,
    /// Weight precision to run (f16 narrows an f32 file on load; int8 needs a quantised file).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Worker threads per model (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Detector input size WxH (multiples of 32).
    #[arg(long, default_value = "640x640")]
    pub size: String,
    /// Timed iterations per stage.
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    /// Untimed warm-up iterations per stage.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Executor: `fast` (the NHWC engine) or `reference` (candle, for comparison).
    #[arg(long, default_value = "fast")]
    pub backend: Backend,
    /// Also print a per-layer time table (fast engine only).
    #[arg(long)]
    pub profile: bool,
}

/// Median, p90 and minimum of a set of timings, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
}

impl Stats {
    pub fn of(times: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        if ms.is_empty() {
            return Stats {
                median_ms: f64::NAN,
                p90_ms: f64::NAN,
                min_ms: f64::NAN,
            };
        }
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Stats {
            median_ms: at(0.5),
            p90_ms: at(0.9),
            min_ms: ms[0],
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "median_ms": round3(self.median_ms),
            "p90_ms": round3(self.p90_ms),
            "min_ms": round3(self.min_ms),
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Peak resident set size in MiB (`VmHWM` of `/proc/self/status`), if the system reports it.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Deterministic input values in the normalised range (the content does not change timing).
fn synthetic(len: usize) -> Vec<f32> {
    let mut s = 0x9e37_79b9u32;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn time(
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> crate::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    Ok(times)
}

/// Warms `run` up (the engine plans its buffers), times `args.iters` runs with profiling on
/// for the timed runs only, and prints the stage's line (and, with `--profile`, its layers).
fn bench_stage(
    stage: &str,
    what: &str,
    engine: Option<&std::sync::Mutex<crate::engine::Engine>>,
    args: &BenchArgs,
    mut run: impl FnMut() -> crate::Result<()>,
) -> anyhow::Result<Stats> {
    for _ in 0..args.warmup.max(1) {
        run()?;
    }
    if let (true, Some(e)) = (args.profile, engine) {
        e.lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_profiling(true);
    }
    let s = Stats::of(&time(0, args.iters, &mut run)?);
    outln!(
        "{stage:<4} {what}: median {:8.3} ms  p90 {:8.3} ms  min {:8.3} ms",
        s.median_ms,
        s.p90_ms,
        s.min_ms
    );
    if let (true, Some(e)) = (args.profile, engine) {
        print_profile(stage, e, args.iters)?;
    }
    Ok(s)
}

fn print_profile(
    name: &str,
    engine: &std::sync::Mutex<crate::engine::Engine>,
    iters: usize,
) -> anyhow::Result<()> {
    let e = engine.lock().unwrap_or_else(|p| p.into_inner());
    let Some(times) = e.layer_times() else {
        return Ok(());
    };
    let total: Duration = times.iter().sum();
    outln!("{name}: per-layer profile (mean of {iters} runs)");
    outln!("  {:>4} {:>9} {:>6}  layer", "op", "ms", "%");
    for (i, t) in times.iter().enumerate() {
        let ms = t.as_secs_f64() * 1e3 / iters.max(1) as f64;
        let pct = 100.0 * t.as_secs_f64() / total.as_secs_f64().max(1e-12);
        outln!("  {i:>4} {ms:>9.3} {pct:>5.1}%  {}", e.describe_op(i));
    }
    Ok(())
}

fn label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The camera frame of the stage timings: the boards' capture size.
const CAMERA: (u32, u32) = (640, 480);

/// Frame → decision as the unlock loop runs it, without the capture: on a camera-size
/// frame, the detector stage (letterbox to `size`, network, decoding), the recogniser stage
/// (alignment, network) and the liveness stage (crop, network). The network lines above
/// leave out the first two stages' pre-processing; the liveness line includes its crop.
fn stages(
    live: &crate::liveness::Liveness,
    det: &Path,
    rec: &Path,
    size: (u32, u32),
    opts: &LoadOptions,
    args: &BenchArgs,
    json: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let detector = crate::pipeline::Detector::new(Scrfd::load_with(det, opts)?, Some(size));
    let embedder = crate::pipeline::Embedder::new(MobileFaceNet::load_with(rec, opts)?);
    let (cw, ch) = CAMERA;
    let frame = image::RgbImage::from_fn(cw, ch, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (x + y * 3) as u8, (x ^ y) as u8])
    });
    // A face a third of the frame high in the middle, its eyes, nose and mouth where a
    // frontal face has them.
    let (cx, cy, half) = (cw as f32 / 2.0, ch as f32 / 2.0, ch as f32 / 6.0);
    let face = crate::Face {
        score: 1.0,
        bbox: [cx - half, cy - half, cx + half, cy + half],
        kps: None,
    };
    let d = half * 0.35;
    let kps = [
        [cx - d, cy - d],
        [cx + d, cy - d],
        [cx, cy],
        [cx - 0.8 * d, cy + d],
        [cx + 0.8 * d, cy + d],
    ];
    let what = format!("{cw}x{ch} frame");
    let detect = || detector.detect(&frame).map(|_| ());
    let sd = bench_stage(
        "detect stage",
        &format!(
            "{what}, letterbox to {}x{} + network + decoding",
            size.0, size.1
        ),
        None,
        args,
        detect,
    )?;
    let embed = || embedder.embed(&frame, &kps).map(|_| ());
    let se = bench_stage(
        "embed stage",
        &format!("{what}, alignment + network"),
        None,
        args,
        embed,
    )?;
    let score = || live.score(&frame, &face).map(|_| ());
    let sl = bench_stage(
        "live stage",
        &format!("{what}, crop + network"),
        None,
        args,
        score,
    )?;
    let share = sl.median_ms / (sd.median_ms + se.median_ms);
    outln!(
        "frame -> decision stages: liveness adds {:.1} % to detect + embed ({:.3} ms on {:.3} ms, medians)",
        100.0 * share,
        sl.median_ms,
        sd.median_ms + se.median_ms
    );
    json.insert(
        "stages".into(),
        serde_json::json!({
            "detect": sd.json(),
            "embed": se.json(),
            "live": sl.json(),
            "live_over_det_rec": round3(share),
        }),
    );
    Ok(())
}

/// Runs the benchmark and prints the table and the JSON line.
pub fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.det.is_none() && args.rec.is_none() && args.live.is_none() {
        anyhow::bail!("nothing to bench: give --det MODEL, --rec MODEL and/or --live MODEL");
    }
    if args.iters == 0 {
        anyhow::bail!("--iters must be at least 1");
    }
    let (w, h) = crate::pipeline::parse_size(&args.size)?;
    let (w, h) = (w as usize, h as usize);
    let opts = LoadOptions {
        backend: args.backend,
        threads: args.threads,
        precision: Some(args.precision),
    };
    let threads = if args.threads == 0 {
        crate::engine::default_threads()
    } else {
        args.threads
    };

    let t0 = Instant::now();
    let det = args
        .det
        .as_ref()
        .map(|p| Scrfd::load_with(p, &opts).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())))
        .transpose()?;
    let rec = args
        .rec
        .as_ref()
        .map(|p| {
            MobileFaceNet::load_with(p, &opts).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .transpose()?;
    let live = args
        .live
        .as_ref()
        .map(|p| {
            crate::liveness::Liveness::load_with(p, &opts)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .transpose()?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    outln!(
        "facegate bench: backend {:?}, precision {}, {threads} thread(s), kernels: {}",
        args.backend,
        args.precision,
        crate::kernels::kernels().describe()
    );
    let mut json = serde_json::Map::new();
    if let (Some(model), Some(path)) = (&det, &args.det) {
        let input = synthetic(h * w * 3);
        let mut out = Vec::new();
        let run = || model.forward_nhwc(h, w, &mut |d| d.copy_from_slice(&input), &mut out);
        let what = format!("{:<28} {w}x{h}", label(path));
        let s = bench_stage("det", &what, model.engine(), args, run)?;
        json.insert("det".into(), s.json());
    }
    if let (Some(model), Some(path)) = (&rec, &args.rec) {
        let n = model.input_size();
        let input = synthetic(n * n * 3);
        let mut out = Vec::with_capacity(model.dim());
        let run = || model.forward_nhwc(&mut |d| d.copy_from_slice(&input), &mut out);
        let what = format!("{:<28} {n}x{n}", label(path));
        let s = bench_stage("rec", &what, model.engine(), args, run)?;
        json.insert("rec".into(), s.json());
    }
    if let (Some(model), Some(path)) = (&live, &args.live) {
        // A frame of the detector's size with a face box a third of its height in the
        // middle: the stage crops, resizes, runs and takes the softmax.
        let frame = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (x + y * 3) as u8, (x ^ y) as u8])
        });
        let (cx, cy, half) = (w as f32 / 2.0, h as f32 / 2.0, h as f32 / 6.0);
        let face = crate::Face {
            score: 1.0,
            bbox: [cx - half, cy - half, cx + half, cy + half],
            kps: None,
        };
        let run = || model.score(&frame, &face).map(|_| ());
        let n = model.input_size();
        let what = format!("{:<28} {n}x{n}", label(path));
        let s = bench_stage("live", &what, model.engine(), args, run)?;
        json.insert("live".into(), s.json());
        if args.profile {
            // The stage's share outside the network: the crop into a normalised input.
            let c = model.config();
            let (mut input, norm) = (vec![0f32; n * n * 3], crate::preprocess::norm_table(c.norm));
            let crop = || {
                let (bbox, scale) = (face.bbox, c.crop_scale);
                crate::liveness::crop::crop_rows(&frame, bbox, scale, n as u32, |dy, row| {
                    norm.apply(row, &mut input[dy * row.len()..(dy + 1) * row.len()])
                });
                Ok(())
            };
            bench_stage("crop", &what, None, args, crop)?;
        }
        let stage = |k: &str| json.get(k).and_then(|v| v["median_ms"].as_f64());
        if let (Some(d), Some(r), Some(l)) = (stage("det"), stage("rec"), stage("live")) {
            let share = l / (d + r);
            outln!(
                "liveness adds {:.1} % to detect + embed ({l:.3} ms on {:.3} ms, medians)",
                100.0 * share,
                d + r
            );
            json.insert("live_over_det_rec".into(), round3(share).into());
        }
    }
    if let (Some(live), Some(dp), Some(rp)) = (&live, &args.det, &args.rec) {
        stages(live, dp, rp, (w as u32, h as u32), &opts, args, &mut json)?;
    }
    let rss = peak_rss_mb();
    outln!(
        "load {load_ms:.1} ms, peak RSS {}",
        rss.map(|r| format!("{r:.1} MiB"))
            .unwrap_or_else(|| "unknown".into())
    );
    json.insert("load_ms".into(), round3(load_ms).into());
    json.insert("peak_rss_mb".into(), rss.map(round3).into());
    json.insert("threads".into(), threads.into());
    json.insert("precision".into(), args.precision.to_string().into());
    json.insert(
        "backend".into(),
        format!("{:?}", args.backend).to_lowercase().into(),
    );
    outln!("{}", serde_json::Value::Object(json));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_times() {
        let t: Vec<Duration> = (1..=10).rev().map(Duration::from_millis).collect();
        let s = Stats::of(&t);
        assert_eq!(s.min_ms, 1.0);
        assert!((s.median_ms - 5.0).abs() < 1.01);
        assert_eq!(s.p90_ms, 9.0);
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_mb().unwrap() > 0.0);
        }
    }

    #[test]
    fn bench_needs_a_model() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let cli = Cli::parse_from(["x", "--threads", "1", "--iters", "2"]);
        assert!(bench(&cli.bench).is_err());
        assert!(Cli::try_parse_from(["x", "--precision", "f8"]).is_err());
    }
}
