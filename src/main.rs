//! The `facegate` command: parses, validates and calls the library. Output for machines goes
//! to stdout (JSON lines), messages for people to stderr; any failure exits non-zero.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use facegate::cli::{self, out};
use facegate::{image_limits, signals};

#[derive(Parser)]
#[command(
    version,
    about = "Face detection, recognition and face unlock for small Linux boards"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    limits: LimitArgs,
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
    /// Attempt-level FRR and FAR through the real K-of-N policy over LFW + CelebA, with E
    /// enrolled photos, a match rule and galleries of G people; last line is JSON.
    Attempts(cli::attempts::AttemptsArgs),
    /// Detection AP on the WIDER FACE validation images present (optionally next to another
    /// engine's detections).
    WiderAp(cli::wider::WiderArgs),
    /// Detect faces and score each for liveness (photo or screen attacks); JSON lines.
    Liveness(cli::liveness::LivenessArgs),
    /// BPCER, APCER, AUC of a liveness model on folders of live and attack photos.
    LivenessEval(cli::liveness::LivenessEvalArgs),
    /// Time the detector and/or recogniser: median, p90, min, load time, peak RSS.
    Bench(cli::bench::BenchArgs),
    /// Many doors, one PostgreSQL database: migrate, enrol at the desk, doors, grants,
    /// revocations, people, audit.
    #[cfg(feature = "fleet")]
    Fleet(cli::fleet::FleetArgs),
    /// A fleet door: keep the board's store equal to its view of the fleet database and
    /// deliver its audit outbox (board [fleet] table).
    #[cfg(feature = "fleet")]
    Sync(cli::fleet::SyncArgs),
}

/// Limits of the images any command reads (see `facegate::image_limits`).
#[derive(clap::Args)]
struct LimitArgs {
    /// Largest image or camera frame decoded, WIDTHxHEIGHT, checked from the file's header
    /// before decoding (default 8192x8192).
    #[arg(long, global = true, value_parser = image_limits::parse_sides, value_name = "WxH")]
    max_image: Option<(u32, u32)>,
    /// Largest image or camera frame decoded, in megapixels (default 24).
    #[arg(long, global = true, value_name = "MP")]
    max_megapixels: Option<image_limits::Megapixels>,
}

impl LimitArgs {
    fn apply(&self) {
        let mut l = image_limits::ImageLimits::DEFAULT;
        if let Some((w, h)) = self.max_image {
            (l.max_width, l.max_height) = (w, h);
        }
        if let Some(mp) = self.max_megapixels {
            l.max_pixels = (mp.0 * 1e6).round() as u64;
        }
        image_limits::set(l);
    }
}

/// A clap error as one line: clap's own rendering spreads a usage error over several lines
/// (the error, a blank line, the usage, a hint), which a service log cuts into unrelated
/// entries.
fn one_line_usage_error(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "error: a subcommand is missing (see `facegate --help`)".to_string();
    }
    let text = e.render().to_string();
    let body = text.split("\n\nUsage:").next().unwrap_or(&text);
    let body = body
        .split("\n\nFor more information")
        .next()
        .unwrap_or(body);
    let flat = body.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{flat} (see `facegate --help`)")
}

/// The error and its causes on one line, leaving out a cause whose text the line already
/// holds (an I/O error is shown in its wrapper's message, and was printed twice).
fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::from("error: ");
    for (i, cause) in e.chain().enumerate() {
        let text = cause.to_string();
        if i > 0 && line.contains(&text) {
            continue;
        }
        if i > 0 {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn main() -> ExitCode {
    // First of all, before parsing or loading anything: until now a SIGTERM during start-up
    // killed the process by the default action.
    if let Err(e) = signals::install() {
        out::err_line(format_args!("error: {e}"));
        return ExitCode::FAILURE;
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // Help and version go to stdout; a closed stdout is no reason to panic.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            out::err_line(format_args!("{}", one_line_usage_error(&e)));
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    cli.limits.apply();
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
        Command::Attempts(a) => cli::attempts::attempts(a),
        Command::Liveness(a) => cli::liveness::liveness(a),
        Command::LivenessEval(a) => cli::liveness::liveness_eval(a),
        #[cfg(feature = "fleet")]
        Command::Fleet(a) => cli::fleet::fleet(a),
        #[cfg(feature = "fleet")]
        Command::Sync(a) => cli::fleet::sync(a),
    };
    match result {
        Ok(code) => code,
        // The reader of stdout has gone (`| head`): it took what it wanted.
        Err(e) if e.downcast_ref::<out::StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            out::err_line(format_args!("{}", error_line(&e)));
            // 1, or a status of its own where a service manager must tell the cause apart.
            cli::unlock::failure_status(&e)
        }
    }
}
