//! `facegate liveness` (faces of image files with their live scores, as JSON lines) and
//! `facegate liveness-eval` (BPCER, APCER per attack type, AUC on folders of live and attack
//! photos; the last line is JSON).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::cli::detect::parse_size_arg;
use crate::cli::out::outln;
use crate::liveness::eval::{self, Attack};
use crate::liveness::{Liveness, DEFAULT_THRESHOLD};
use crate::models::LoadOptions;
use crate::pipeline::{largest, Detector};

#[derive(Args)]
pub struct LivenessArgs {
    /// Detector model (.safetensors, or .onnx converted on the fly).
    #[arg(long)]
    pub det: PathBuf,
    /// Liveness model (anti-spoofing classifier).
    #[arg(long)]
    pub live: PathBuf,
    /// Detector input size WxH (multiples of 32); default 640x640.
    #[arg(long, value_parser = parse_size_arg)]
    pub size: Option<(u32, u32)>,
    /// Images to process.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Args)]
pub struct LivenessEvalArgs {
    /// Detector model.
    #[arg(long)]
    pub det: PathBuf,
    /// Liveness model.
    #[arg(long)]
    pub live: PathBuf,
    /// Folder of photos of live faces.
    #[arg(long)]
    pub real: PathBuf,
    /// Folder of attack photos (prints, screens).
    #[arg(long)]
    pub spoof: PathBuf,
    /// A face is live when its score reaches this.
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Detector input size WxH (multiples of 32); default 640x640.
    #[arg(long, value_parser = parse_size_arg)]
    pub size: Option<(u32, u32)>,
    /// Worker threads per model (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

fn load(
    det: &Path,
    live: &Path,
    size: Option<(u32, u32)>,
    threads: usize,
) -> anyhow::Result<(Detector, Liveness)> {
    let opts = LoadOptions::fast(threads);
    let detector = Detector::load_with(det, size, &opts)?;
    let liveness = Liveness::load_with(live, &opts)?;
    Ok((detector, liveness))
}

pub fn liveness(args: &LivenessArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let (det, live) = load(&args.det, &args.live, args.size, 0)?;
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for path in &args.images {
        let line = (|| -> anyhow::Result<serde_json::Value> {
            let img = crate::image_io::load_rgb(path)?;
            let faces = det.detect(&img)?;
            let mut v = Vec::with_capacity(faces.len());
            for f in &faces {
                let s = live.score(&img, f)?;
                let mut o = serde_json::to_value(f)?;
                o["live"] = s.live.into();
                o["probs"] = s.probs.clone().into();
                o["class"] = live.class_names()[s.class()].clone().into();
                v.push(o);
            }
            Ok(serde_json::json!({ "image": path, "classes": live.class_names(), "faces": v }))
        })();
        match line {
            Ok(v) => {
                if writeln!(out, "{v}").is_err() {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e:#}", path.display());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The image files of a folder, sorted by name.
pub fn image_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read the folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .map(|e| {
                        let e = e.to_string_lossy().to_ascii_lowercase();
                        matches!(e.as_str(), "jpg" | "jpeg" | "png" | "bmp")
                    })
                    .unwrap_or(false)
        })
        .collect();
    v.sort();
    if v.is_empty() {
        anyhow::bail!("{}: no images (jpg, jpeg, png, bmp)", dir.display());
    }
    Ok(v)
}

/// The live score and probabilities of the largest face of each photo (`None`: no face).
pub fn score_folder(
    det: &Detector,
    live: &Liveness,
    dir: &Path,
) -> anyhow::Result<Vec<(PathBuf, Option<crate::liveness::LiveScore>)>> {
    image_files(dir)?
        .into_iter()
        .map(|p| {
            let img = crate::image_io::load_rgb(&p)?;
            let faces = det.detect(&img)?;
            let s = largest(&faces).map(|f| live.score(&img, f)).transpose()?;
            Ok((p, s))
        })
        .collect()
}

pub fn liveness_eval(args: &LivenessEvalArgs) -> anyhow::Result<ExitCode> {
    let (det, live) = load(&args.det, &args.live, args.size, args.threads)?;
    let classes = live.class_names().to_vec();
    let real = score_folder(&det, &live, &args.real)?;
    let spoof = score_folder(&det, &live, &args.spoof)?;
    let live_scores: Vec<f32> = real
        .iter()
        .filter_map(|(_, s)| s.as_ref().map(|s| s.live))
        .collect();
    let attacks: Vec<Attack> = spoof
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .map(|s| Attack {
            live: s.live,
            kind: eval::attack_kind(&s.probs),
        })
        .collect();
    let missing = |v: &[(PathBuf, Option<_>)]| -> Vec<String> {
        v.iter()
            .filter(|(_, s)| s.is_none())
            .map(|(p, _)| p.display().to_string())
            .collect()
    };
    let (real_missing, spoof_missing) = (missing(&real), missing(&spoof));
    let f = eval::figures(&live_scores, &attacks, &classes, args.threshold);
    let spoof_live: Vec<f32> = attacks.iter().map(|a| a.live).collect();
    let auc = eval::auc(&live_scores, &spoof_live);
    let t5 = eval::threshold_at_bpcer(&live_scores, 0.05);
    let at5 = t5.map(|t| eval::figures(&live_scores, &attacks, &classes, t));
    for (p, s) in spoof.iter() {
        if let Some(s) = s {
            eprintln!(
                "attack {}: live {:.4}, {}",
                p.display(),
                s.live,
                classes[eval::attack_kind(&s.probs)]
            );
        }
    }
    outln!(
        "{} at threshold {}: BPCER {}/{} = {:.2} %, APCER {}/{} = {:.2} % (worst type {:.2} %: {}), AUC {}",
        args.live.display(),
        args.threshold,
        f.rejected,
        f.live,
        100.0 * f.bpcer,
        f.accepted,
        f.attacks,
        100.0 * f.apcer,
        100.0 * f.apcer_worst_type,
        f.per_type
            .iter()
            .map(|t| format!("{} {}/{}", t.kind, t.accepted, t.attacks))
            .collect::<Vec<_>>()
            .join(", "),
        auc.map_or("n/a".into(), |a| format!("{a:.4}"))
    );
    if let (Some(t), Some(g)) = (t5, &at5) {
        outln!(
            "threshold at BPCER <= 5 %: {t:.4} (BPCER {}/{}, APCER {}/{})",
            g.rejected,
            g.live,
            g.accepted,
            g.attacks
        );
    }
    outln!(
        "faces not found: {} of {} live photos, {} of {} attack photos",
        real_missing.len(),
        real.len(),
        spoof_missing.len(),
        spoof.len()
    );
    let json = serde_json::json!({
        "model": args.live,
        "classes": classes,
        "figures": f,
        "auc": auc,
        "threshold_at_bpcer_5": t5,
        "figures_at_bpcer_5": at5,
        "faces_not_found": { "real": real_missing, "spoof": spoof_missing },
    });
    outln!("{json}");
    Ok(ExitCode::SUCCESS)
}
