//! `facegate detect` and `facegate embed`: faces (and embeddings) of image files as JSON
//! lines, one object per image.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::pipeline::{parse_size, Detector, Embedder, Pipeline};
use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct DetectArgs {
    /// Detector model (.safetensors, or .onnx converted on the fly).
    #[arg(long)]
    pub det: PathBuf,
    /// Detector input size WxH (multiples of 32); default 640x640.
    #[arg(long, value_parser = parse_size_arg)]
    pub size: Option<(u32, u32)>,
    /// Score threshold.
    #[arg(long, default_value_t = crate::detect::DEFAULT_SCORE_THRESHOLD)]
    pub threshold: f32,
    /// Write each image with its detections drawn into this directory (as PNG).
    #[arg(long)]
    pub draw: Option<PathBuf>,
    /// Images to process.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

#[derive(Args)]
pub struct EmbedArgs {
    /// Detector model.
    #[arg(long)]
    pub det: PathBuf,
    /// Recogniser model.
    #[arg(long)]
    pub rec: PathBuf,
    /// Detector input size WxH (multiples of 32); default 640x640.
    #[arg(long, value_parser = parse_size_arg)]
    pub size: Option<(u32, u32)>,
    /// Images to process.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn parse_size_arg(s: &str) -> Result<(u32, u32), String> {
    parse_size(s).map_err(|e| e.to_string())
}

/// Runs `each` on every image, printing its JSON line; a failing image is reported on stderr
/// and makes the exit code non-zero, the others still run.
fn for_each_image(
    images: &[PathBuf],
    mut each: impl FnMut(&Path) -> anyhow::Result<serde_json::Value>,
) -> ExitCode {
    use std::io::Write;
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for path in images {
        match each(path) {
            Ok(v) => {
                if writeln!(out, "{v}").is_err() {
                    // stdout closed (e.g. piped into `head`): nothing more to say.
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn detect(args: &DetectArgs) -> anyhow::Result<ExitCode> {
    let mut det = Detector::load(&args.det, args.size)?;
    det.score_threshold = args.threshold;
    if let Some(dir) = &args.draw {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    Ok(for_each_image(&args.images, |path| {
        let img = crate::image_io::load_rgb(path)?;
        let faces = det.detect(&img)?;
        if let Some(dir) = &args.draw {
            write_drawing(dir, path, img, &faces)?;
        }
        Ok(serde_json::json!({ "image": path, "faces": faces }))
    }))
}

fn write_drawing(
    dir: &Path,
    path: &Path,
    mut img: image::RgbImage,
    faces: &[crate::Face],
) -> anyhow::Result<()> {
    crate::draw::draw_faces(&mut img, faces);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let out = dir.join(format!("{stem}.png"));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("{}: cannot encode", out.display()))?;
    crate::format::write_atomically(&out, &png)?;
    Ok(())
}

pub fn embed(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline {
        detector: Detector::load(&args.det, args.size)?,
        embedder: Embedder::load(&args.rec)?,
    };
    Ok(for_each_image(&args.images, |path| {
        let img = crate::image_io::load_rgb(path)?;
        let faces = pipeline
            .embed_all(&img)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(serde_json::json!({ "image": path, "faces": faces }))
    }))
}
