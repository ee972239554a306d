//! `facegate verify`: face verification accuracy on a pair list (LFW's 10-fold protocol or
//! `a b label` lines), with TAR at fixed false-accept rates.

use crate::cli::out::outln;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::eval::verification::{
    best_threshold_accuracy, kfold_accuracy, parse_label_pairs_str, parse_lfw_pairs, tar_at_far,
    ScoredPair,
};
use crate::pipeline::{Detector, Embedder, Pipeline};
use clap::Args;

use super::detect::parse_size_arg;

#[derive(Args)]
pub struct VerifyArgs {
    /// Detector model.
    #[arg(long)]
    pub det: PathBuf,
    /// Recogniser model.
    #[arg(long)]
    pub rec: PathBuf,
    /// Pair list: LFW `pairs.txt` (with --lfw) or `a b label` lines.
    #[arg(long)]
    pub pairs: PathBuf,
    /// Folder the image paths are relative to.
    #[arg(long)]
    pub root: PathBuf,
    /// Read LFW View-2 pairs and report 10-fold accuracy.
    #[arg(long)]
    pub lfw: bool,
    /// Detector input size WxH; default 640x640.
    #[arg(long, value_parser = parse_size_arg)]
    pub size: Option<(u32, u32)>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write every pair's score as `score same fold a b` lines to this file.
    #[arg(long)]
    pub scores: Option<PathBuf>,
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let pairs = if args.lfw {
        parse_lfw_pairs(&args.pairs, &args.root)?
    } else {
        let text =
            std::fs::read_to_string(&args.pairs).map_err(|e| crate::Error::io(&args.pairs, e))?;
        parse_label_pairs_str(&text, &args.pairs, &args.root)?
    };
    let pipeline = Pipeline {
        detector: Detector::load(&args.det, args.size)?,
        embedder: Embedder::load(&args.rec)?,
    };
    let mut index: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for p in &pairs {
        for path in [&p.a, &p.b] {
            let n = index.len();
            index.entry(path.clone()).or_insert(n);
        }
    }
    let mut images = vec![PathBuf::new(); index.len()];
    for (p, &i) in &index {
        images[i] = p.clone();
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let total = images.len();
    let start = std::time::Instant::now();
    let progress = |done: usize| {
        if done.is_multiple_of(200) || done == total {
            eprint!(
                "\rembedding {done}/{total} images ({:.0} s)",
                start.elapsed().as_secs_f32()
            );
        }
    };
    let embeddings = pipeline.embed_central_faces(&images, threads, &progress);
    eprintln!();
    let mut no_face = 0;
    let mut vectors = Vec::with_capacity(total);
    for (path, r) in images.iter().zip(embeddings) {
        match r {
            Ok(Some(e)) => vectors.push(Some(e)),
            Ok(None) => {
                eprintln!("no face found: {}", path.display());
                no_face += 1;
                vectors.push(None)
            }
            Err(e) => anyhow::bail!("{e} (while embedding {})", path.display()),
        }
    }
    // A pair with a faceless image can only be rejected: score it below any threshold.
    let scored: Vec<ScoredPair> = pairs
        .iter()
        .map(|p| {
            let score = match (&vectors[index[&p.a]], &vectors[index[&p.b]]) {
                (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| x * y).sum(),
                _ => -1.0,
            };
            ScoredPair {
                score,
                same: p.same,
                fold: p.fold,
            }
        })
        .collect();
    if let Some(path) = &args.scores {
        let text: String = pairs
            .iter()
            .zip(&scored)
            .map(|(p, s)| {
                format!(
                    "{} {} {} {} {}\n",
                    s.score,
                    u8::from(s.same),
                    s.fold,
                    p.a.display(),
                    p.b.display()
                )
            })
            .collect();
        crate::format::write_atomically(path, text.as_bytes())?;
    }
    let (acc, std, thr) = if args.lfw {
        let k = kfold_accuracy(&scored)?;
        (k.mean_accuracy, k.std_accuracy, k.mean_threshold)
    } else {
        let b = best_threshold_accuracy(&scored)?;
        (b.accuracy, 0.0, b.threshold as f64)
    };
    let t2 = tar_at_far(&scored, 1e-2)?;
    let t3 = tar_at_far(&scored, 1e-3)?;
    outln!(
        "pairs: {}, images: {total}, images without a face: {no_face}",
        scored.len()
    );
    if args.lfw {
        outln!(
            "accuracy: {:.2} % ± {:.2} (10-fold), mean threshold {thr:.3}",
            acc * 100.0,
            std * 100.0
        );
    } else {
        outln!(
            "accuracy: {:.2} % at the best threshold {thr:.3}",
            acc * 100.0
        );
    }
    for t in [&t2, &t3] {
        outln!(
            "TAR @ FAR {:.0e}: {:.2} % (threshold {:.4}, measured FAR {:.2e})",
            t.far_target,
            t.tar * 100.0,
            t.threshold,
            t.far
        );
    }
    outln!(
        "{}",
        serde_json::json!({
            "pairs": scored.len(),
            "images": total,
            "no_face": no_face,
            "accuracy": acc,
            "accuracy_std": std,
            "threshold": thr,
            "tar_at_far_1e-2": t2.tar,
            "threshold_at_far_1e-2": t2.threshold,
            "tar_at_far_1e-3": t3.tar,
            "threshold_at_far_1e-3": t3.threshold,
        })
    );
    Ok(ExitCode::SUCCESS)
}
