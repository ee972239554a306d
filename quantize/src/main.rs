//! `quantize`: converts a published ONNX face model to a facegate model file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use facegate::format::Precision;

#[derive(Parser)]
#[command(
    version,
    about = "Convert an ONNX SCRFD, MobileFaceNet or anti-spoofing model to a facegate model file"
)]
struct Args {
    /// The ONNX model to convert.
    #[arg(long)]
    onnx: PathBuf,
    /// Where to write the converted model (.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Weight precision of the output.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// int8: the calibration list (image paths relative to the list's folder, `#`
    /// comments). Only these images are used: the first 80 % for the activation ranges,
    /// the last 20 % held back to compare the calibration methods.
    #[arg(long)]
    calib: Option<PathBuf>,
    /// int8 recogniser or liveness model: the detector (run in f32) that finds the face to
    /// align (or crop the liveness way) in each calibration photo. Default: `det_500m.onnx` beside the `--onnx` file.
    #[arg(long)]
    calib_det: Option<PathBuf>,
    /// int8: calibration methods to compare (the best on the held-back images is written):
    /// `minmax` (max |x|), percentiles of |x| such as `p99.99`, and/or `mse` (the range
    /// minimising the expected quantisation error).
    #[arg(long, value_delimiter = ',', default_value = "minmax,p99.99,mse")]
    method: Vec<facegate::quant::Method>,
    /// int8: share of the network's multiply-accumulates that may stay in f32 (mixed
    /// precision): the convolutions that lose the most fidelity in int8, measured one by one
    /// on the held-back images, are kept in f32 while they help within this budget. 0: all
    /// int8.
    #[arg(long, default_value_t = facegate::quant::FLOAT_BUDGET)]
    float_budget: f64,
    /// int8: threads of the engines used while calibrating (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// int8: print the SQNR of every layer, not only the worst ones.
    #[arg(long)]
    all_layers: bool,
}

/// A progress bar per calibration stage.
struct Bars(Option<indicatif::ProgressBar>);

impl facegate::quant::Progress for Bars {
    fn stage(&mut self, name: &str, steps: usize) {
        if let Some(b) = self.0.take() {
            b.finish();
        }
        let b = indicatif::ProgressBar::new(steps as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>30} [{bar:30}] {pos}/{len} images, {elapsed} (eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_message(name.to_string());
        self.0 = Some(b);
    }
    fn tick(&mut self) {
        if let Some(b) = &self.0 {
            b.inc(1);
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish();
        }
    }
}

fn int8(
    args: &Args,
    file: &facegate::format::ModelFile,
) -> anyhow::Result<facegate::format::ModelFile> {
    use facegate::quant;
    let list = args.calib.as_ref().ok_or_else(|| {
        anyhow::anyhow!("--precision int8 needs --calib LIST (e.g. ../shared/data/faces/celeba_wild/calibration.txt)")
    })?;
    let det = args.calib_det.clone().unwrap_or_else(|| {
        args.onnx
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("det_500m.onnx")
    });
    // Recognisers and liveness models calibrate on face crops, which need a detector.
    let is_rec = matches!(
        file.config,
        facegate::format::ModelConfig::MobileFaceNet(_)
            | facegate::format::ModelConfig::Liveness(_)
    );
    let (q, report) = {
        let mut bars = Bars(None);
        quant::calibrate_with(
            file,
            list,
            is_rec.then_some(det.as_path()),
            &args.method,
            args.float_budget,
            args.threads,
            &mut bars,
        )?
    };
    eprintln!(
        "calibrated on {} images, measured on {} held-back images{}",
        report.calibration_images,
        report.held_back_images,
        if is_rec {
            format!(
                " ({} photos without a face skipped; faces found by {})",
                report.skipped,
                det.display()
            )
        } else {
            String::new()
        }
    );
    let graph = file.config.graph();
    for (i, (m, f)) in report.methods.iter().enumerate() {
        let table = quant::sqnr_table(graph, f);
        let mut db: Vec<f64> = table
            .iter()
            .map(|r| r.2)
            .filter(|x| x.is_finite())
            .collect();
        db.sort_by(f64::total_cmp);
        let median = db.get(db.len() / 2).copied().unwrap_or(f64::NAN);
        eprintln!(
            "{} {m}: {}; per-layer SQNR min {:.1} dB, median {:.1} dB",
            if i == report.chosen { "*" } else { " " },
            f.summary(),
            db.first().copied().unwrap_or(f64::NAN),
            median
        );
    }
    for b in &report.bias {
        eprintln!(
            "bias correction of {} (mean shift per output channel, measured layer by layer on {} calibration images; largest {:.2} % of a layer's range): {}, held-back selection merit {:.3} -> {:.3}; {} -> {}",
            b.label,
            b.images,
            100.0 * b.largest_relative,
            if b.kept { "kept" } else { "not kept (no better on held-back images)" },
            b.before.selection_merit(),
            b.after.selection_merit(),
            b.before.summary(),
            b.after.summary()
        );
    }
    let m = &report.methods[report.chosen].0;
    if args.float_budget > 0.0 {
        eprintln!(
            "float-layer search ({} convolutions within {:.1} % of the multiply-accumulates tried alone in f32; selection merit gain, best first):",
            report.float_trials.len(),
            100.0 * args.float_budget
        );
        for (n, share, gain) in report.float_trials.iter().take(12) {
            eprintln!("  {n:<40} {:>6.2} % MACs  gain {gain:+.5}", 100.0 * share);
        }
        let share: f64 = report
            .float_trials
            .iter()
            .filter(|t| report.float_layers.contains(&t.0))
            .map(|t| t.1)
            .sum();
        eprintln!(
            "kept in f32 (added greedily while each still helped, at most {} layers): {} ({:.2} % of the multiply-accumulates)",
            quant::MAX_FLOAT_LAYERS,
            if report.float_layers.is_empty() {
                "none".to_string()
            } else {
                report.float_layers.join(", ")
            },
            100.0 * share
        );
        eprintln!("written model: {}", report.fidelity.summary());
    }
    let f = &report.fidelity;
    let table = quant::sqnr_table(graph, f);
    let shown = if args.all_layers {
        table.len()
    } else {
        8.min(table.len())
    };
    eprintln!(
        "chosen: {m}{}; per-layer SQNR (int8 engine vs f32, held-back images), worst first:",
        if report.bias_corrected {
            ", bias-corrected"
        } else {
            ""
        }
    );
    for (v, what, db) in table.iter().take(shown) {
        eprintln!("  value {v:>3} {what:<40} {db:>6.1} dB");
    }
    Ok(q)
}

fn run(args: &Args) -> anyhow::Result<()> {
    let file = facegate::onnx::convert(&args.onnx)?;
    let file = match args.precision {
        Precision::F32 => file,
        // Convolution weights as f16 (half the size); the engine widens them at load.
        Precision::F16 => file.to_f16(),
        Precision::Int8 => int8(args, &file)?,
    };
    file.write(&args.out)?;
    let graph = file.config.graph();
    eprintln!(
        "{} -> {}: {} {} ({} layers, {} tensors, sha256 {})",
        args.onnx.display(),
        args.out.display(),
        file.config.family(),
        file.precision,
        graph.ops.len(),
        file.tensors.len(),
        &file.source.sha256[..12]
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
