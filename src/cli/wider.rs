//! `facegate wider-ap`: detection average precision (VOC style, IoU 0.5) on the WIDER FACE
//! validation images that are present, for our detector and, with `--reference`, for another
//! engine's detections (JSON lines as `detect` prints them) scored by the same evaluator.

use crate::cli::out::outln;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::detect::parse_size_arg;
use crate::eval::ap::{average_precision_with_ignore, ApResult, Detection, GtFace, IgnoreRule};
use crate::eval::matching::read_ref_jsonl;
use crate::eval::wider::{load_wider_gt, GtImage};
use crate::pipeline::Detector;

#[derive(Args)]
pub struct WiderArgs {
    /// Detector model.
    #[arg(long)]
    pub det: PathBuf,
    /// The WIDER FACE folder (holding `WIDER_val/images` and `wider_face_split`).
    #[arg(long)]
    pub wider: PathBuf,
    /// Detector input size WxH; default 640x640.
    #[arg(long, value_parser = parse_size_arg)]
    pub size: Option<(u32, u32)>,
    /// Score threshold for our detections.
    #[arg(long, default_value_t = crate::detect::DEFAULT_SCORE_THRESHOLD)]
    pub threshold: f32,
    /// Another engine's detections (JSON lines with "image" and "faces") to score alike;
    /// image paths are matched by their `<event>/<file>` suffix.
    #[arg(long)]
    pub reference: Option<PathBuf>,
}

/// AP over all faces, and with faces under 16 px (and WIDER's invalid ones) ignored.
fn both_aps(gt: &[GtImage], dets: &[Vec<Detection>]) -> crate::Result<(ApResult, ApResult)> {
    let all = IgnoreRule {
        min_size: 0.0,
        ignore_invalid: false,
    };
    let faces =
        |rule: IgnoreRule| -> Vec<Vec<GtFace>> { gt.iter().map(|g| rule.apply(g)).collect() };
    Ok((
        average_precision_with_ignore(&faces(all), dets, 0.5)?,
        average_precision_with_ignore(&faces(IgnoreRule::default()), dets, 0.5)?,
    ))
}

fn event_relative(p: &str) -> String {
    let parts: Vec<&str> = p.rsplit('/').take(2).collect();
    format!("{}/{}", parts.get(1).unwrap_or(&""), parts[0])
}

pub fn wider_ap(args: &WiderArgs) -> anyhow::Result<ExitCode> {
    let images_dir = args.wider.join("WIDER_val/images");
    let gt = load_wider_gt(
        &args
            .wider
            .join("wider_face_split/wider_face_val_bbx_gt.txt"),
        &images_dir,
    )?;
    anyhow::ensure!(
        !gt.is_empty(),
        "{}: no WIDER images found",
        images_dir.display()
    );
    let mut det = Detector::load(&args.det, args.size)?;
    det.score_threshold = args.threshold;
    let mut ours = Vec::with_capacity(gt.len());
    for (i, g) in gt.iter().enumerate() {
        let img = crate::image_io::load_rgb(&images_dir.join(&g.path))?;
        let faces = det.detect(&img)?;
        ours.push(
            faces
                .iter()
                .map(|f| Detection {
                    score: f.score,
                    bbox: f.bbox,
                })
                .collect(),
        );
        if (i + 1) % 50 == 0 {
            eprint!("\r{}/{} images", i + 1, gt.len());
        }
    }
    eprintln!();
    let (w, h) = det.input_size();
    let mut report = serde_json::json!({ "images": gt.len(), "size": format!("{w}x{h}") });
    let (a, b) = both_aps(&gt, &ours)?;
    print_line("facegate", &args.det, &a, &b)?;
    report["facegate"] = serde_json::json!({ "ap": a.ap, "ap_ignore_small": b.ap });
    if let Some(r) = &args.reference {
        let by_name: HashMap<String, Vec<Detection>> = read_ref_jsonl(r)?
            .into_iter()
            .map(|img| {
                let d = img
                    .faces
                    .iter()
                    .map(|f| Detection {
                        score: f.score,
                        bbox: f.bbox,
                    })
                    .collect();
                (event_relative(&img.image), d)
            })
            .collect();
        let mut missing = 0;
        let theirs: Vec<Vec<Detection>> = gt
            .iter()
            .map(|g| {
                by_name
                    .get(&event_relative(&g.path))
                    .cloned()
                    .unwrap_or_else(|| {
                        missing += 1;
                        Vec::new()
                    })
            })
            .collect();
        anyhow::ensure!(
            missing == 0,
            "{}: {missing} WIDER images have no detections in the file",
            r.display()
        );
        let (a, b) = both_aps(&gt, &theirs)?;
        print_line("reference", r, &a, &b)?;
        report["reference"] = serde_json::json!({ "ap": a.ap, "ap_ignore_small": b.ap });
    }
    outln!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn print_line(who: &str, source: &Path, all: &ApResult, small: &ApResult) -> anyhow::Result<()> {
    outln!(
        "{who} ({}): AP@0.5 {:.2} % over {} faces; ignoring faces < 16 px and invalid ones {:.2} % over {} faces",
        source.display(),
        all.ap * 100.0,
        all.num_gt,
        small.ap * 100.0,
        small.num_gt
    );
    Ok(())
}
