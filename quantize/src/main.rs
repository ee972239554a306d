//! `quantize`: converts a published ONNX face model to a facegate model file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use facegate::format::Precision;

#[derive(Parser)]
#[command(
    version,
    about = "Convert an ONNX SCRFD or MobileFaceNet model to a facegate model file"
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
}

fn run(args: &Args) -> anyhow::Result<()> {
    let file = facegate::onnx::convert(&args.onnx)?;
    let file = match args.precision {
        Precision::F32 => file,
        // Convolution weights as f16 (half the size); the engine widens them at load.
        Precision::F16 => file.to_f16(),
        Precision::Int8 => anyhow::bail!(
            "{}: precision int8 is not implemented yet (f32 or f16)",
            args.onnx.display()
        ),
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
