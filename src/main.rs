//! The `facegate` command: parses, validates and calls the library. Output for machines goes
//! to stdout (JSON lines), messages for people to stderr; any failure exits non-zero.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use facegate::cli;

#[derive(Parser)]
#[command(
    version,
    about = "Face detection, recognition and face unlock for small Linux boards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect faces in images; JSON lines on stdout.
    Detect(cli::detect::DetectArgs),
    /// Detect faces and compute an embedding for each; JSON lines on stdout.
    Embed(cli::detect::EmbedArgs),
    /// Verification accuracy on a pair list (LFW pairs.txt or `a b label` lines).
    Verify(cli::verify::VerifyArgs),
    /// Enrol a user into the board's template store (camera, photo or folder).
    Enroll(cli::unlock::EnrollArgs),
    /// List or remove enrolled users: `users --board B list | remove NAME`.
    Users(cli::unlock::UsersArgs),
    /// Run the face-unlock loop.
    Unlock(cli::unlock::UnlockArgs),
    /// The main job on recorded clips: convert the default models, enrol, replay, decide.
    Demo(cli::unlock::DemoArgs),
    /// Measure the match threshold at a target false-accept rate over LFW + CelebA.
    Threshold(cli::unlock::ThresholdArgs),
    /// Detection AP on the WIDER FACE validation images present (optionally next to another
    /// engine's detections).
    WiderAp(cli::wider::WiderArgs),
    /// Detect faces and score each for liveness (photo or screen attacks); JSON lines.
    Liveness(cli::liveness::LivenessArgs),
    /// BPCER, APCER, AUC of a liveness model on folders of live and attack photos.
    LivenessEval(cli::liveness::LivenessEvalArgs),
    /// Time the detector and/or recogniser: median, p90, min, load time, peak RSS.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Detect(a) => cli::detect::detect(a),
        Command::Embed(a) => cli::detect::embed(a),
        Command::Verify(a) => cli::verify::verify(a),
        Command::Bench(a) => cli::bench::bench(a),
        Command::WiderAp(a) => cli::wider::wider_ap(a),
        Command::Enroll(a) => cli::unlock::enroll(a),
        Command::Users(a) => cli::unlock::users(a),
        Command::Unlock(a) => cli::unlock::unlock(a),
        Command::Demo(a) => cli::unlock::demo(a),
        Command::Threshold(a) => cli::unlock::threshold(a),
        Command::Liveness(a) => cli::liveness::liveness(a),
        Command::LivenessEval(a) => cli::liveness::liveness_eval(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
