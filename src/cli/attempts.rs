//! `facegate attempts`: argument parsing and printing only; the measurement is
//! `crate::unlock::attempts`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::cli::out::outln;
use crate::cli::unlock::{shared_default, BoardArg, Progress};
use crate::unlock::app;
use crate::unlock::attempts::{self, Counts, Rule, Setup};
use crate::unlock::embed_cache::{self, EmbedCache};
use crate::unlock::session::LoopConfig;
use crate::unlock::threshold;

#[derive(Args, Debug, Clone)]
pub struct AttemptsArgs {
    /// Board profile: the threshold file (checked against the recogniser's digest, as
    /// `unlock` does), the detector size, the camera's fps, the policy and the enrolment
    /// gates; E, K and N default to its `[enroll].frames`, `[policy].k` and `[policy].n`.
    #[command(flatten)]
    pub board: BoardArg,
    /// Detector model (default: the board's).
    #[arg(long)]
    pub det: Option<PathBuf>,
    /// Recogniser model (default: the board's).
    #[arg(long)]
    pub rec: Option<PathBuf>,
    /// Threshold file measured for the recogniser (default: the board's
    /// `[match].threshold_file`), e.g. to run the f32 reference with an int8 board.
    #[arg(long)]
    pub threshold_file: Option<PathBuf>,
    /// A stricter match threshold than the measured one (as a board's `[match].threshold`:
    /// a looser one is refused), to see what raising it would cost.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Photos enrolled per person (E); a comma-separated list runs each.
    #[arg(long = "enrol", value_delimiter = ',')]
    pub enrol: Vec<usize>,
    /// People per gallery (G): one template store each.
    #[arg(long, default_value_t = 10)]
    pub gallery: usize,
    /// Match rule: best (best template), mean (mean template), top2 (mean of the two best
    /// templates); a comma-separated list runs each (default: the board's `[match].rule`).
    #[arg(long, value_delimiter = ',')]
    pub rule: Vec<Rule>,
    /// Matching frames needed (K; default: the board's).
    #[arg(long)]
    pub k: Option<usize>,
    /// Frames per attempt (N; default: the board's).
    #[arg(long)]
    pub n: Option<usize>,
    /// The grid: E in {1, 3, 5} × every rule × K/N in {1/1, 2/3, 3/5}.
    #[arg(long, conflicts_with_all = ["enrol", "rule", "k", "n"])]
    pub sweep: bool,
    /// Enrol, for every E, only the people the largest E can enrol (with E + 1 photos for
    /// the largest E), so that E values are compared on the same people; by default each E
    /// takes everyone with E + 1 usable photos.
    #[arg(long)]
    pub common_people: bool,
    /// Pairs of identity labels that are one person under two names (`lfw/A lfw/B` per line,
    /// `#` comments; e.g. data/same-person.txt): never counted as impostors of each other.
    #[arg(long)]
    pub same_person: Option<PathBuf>,
    /// Cache folder (embeddings shared with `threshold`, and the enrolment gates' verdicts).
    #[arg(long, default_value = "models/cache")]
    pub cache: PathBuf,
    /// Embed and judge everything again (neither read nor write the cache).
    #[arg(long)]
    pub no_cache: bool,
    /// Use about N images (whole identities) instead of all.
    #[arg(long)]
    pub limit: Option<usize>,
    /// LFW folder (default: <shared>/data/faces/lfw).
    #[arg(long)]
    pub lfw: Option<PathBuf>,
    /// CelebA-wild folder (default: <shared>/data/faces/celeba_wild).
    #[arg(long)]
    pub celeba: Option<PathBuf>,
}

/// One configuration's figures, as printed and in the JSON line.
#[derive(Debug, Serialize)]
struct Row {
    enrol: usize,
    rule: Rule,
    k: usize,
    n: usize,
    gallery: usize,
    threshold: f32,
    #[serde(flatten)]
    counts: Counts,
    frr: f64,
    frr_upper95: f64,
    far: f64,
    far_upper95: f64,
    meets_goal: bool,
    seconds: f64,
}

/// The goal: attempt FRR at most 3 % and no impostor unlock, with the 95 % bound of
/// the FAR at most 1e-4 (enough impostor attempts to say so).
const GOAL_FRR: f64 = 0.03;
const GOAL_FAR_BOUND: f64 = 1e-4;

/// The (E, rule, K, N) configurations the arguments ask for.
fn configurations(
    args: &AttemptsArgs,
    e: usize,
    rule: Rule,
    k: usize,
    n: usize,
) -> Vec<(usize, Rule, usize, usize)> {
    if args.sweep {
        let mut v = Vec::new();
        for e in [1, 3, 5] {
            for r in Rule::ALL {
                for (k, n) in [(1, 1), (2, 3), (3, 5)] {
                    v.push((e, r, k, n));
                }
            }
        }
        return v;
    }
    let es = if args.enrol.is_empty() {
        vec![e]
    } else {
        args.enrol.clone()
    };
    let rules = if args.rule.is_empty() {
        vec![rule]
    } else {
        args.rule.clone()
    };
    let (k, n) = (args.k.unwrap_or(k), args.n.unwrap_or(n));
    let mut v = Vec::new();
    for &e in &es {
        for &r in &rules {
            v.push((e, r, k, n));
        }
    }
    v
}

/// `facegate attempts`
pub fn attempts(args: &AttemptsArgs) -> Result<ExitCode> {
    let wall = Instant::now();
    let b = args.board.load()?;
    let det = args
        .det
        .clone()
        .unwrap_or_else(|| b.models.detector.clone());
    let rec = args
        .rec
        .clone()
        .unwrap_or_else(|| b.models.recognizer.clone());
    let det_size = (b.models.det_size.width, b.models.det_size.height);
    // As `threshold` loads them (the file's own precision, all cores), so the embedding
    // cache `threshold` filled serves here too.
    let models = app::load_models(&det, &rec, det_size, &Default::default())?;
    let threshold_file = args
        .threshold_file
        .clone()
        .unwrap_or_else(|| app::board_threshold_file(&b));
    // Refused, as `unlock` refuses it, when the file was measured for another recogniser.
    let measured = app::measured_threshold(&threshold_file, &models, &det, &rec, det_size)?;
    let threshold = measured.select(args.threshold.or(b.matching.threshold), &threshold_file)?;
    let board_policy = b.policy_config(threshold);
    let configs = configurations(
        args,
        b.enroll.frames as usize,
        b.matching.rule,
        board_policy.k,
        board_policy.n,
    );
    let max_enrol = configs.iter().map(|c| c.0).max().unwrap_or(1);
    if max_enrol == 0 || args.gallery == 0 {
        bail!("--enrol and --gallery must be at least 1");
    }

    let root = std::env::current_dir()?;
    let shared = shared_default(&root);
    let lfw = args
        .lfw
        .clone()
        .unwrap_or_else(|| shared.join("data/faces/lfw"));
    let celeba = args
        .celeba
        .clone()
        .unwrap_or_else(|| shared.join("data/faces/celeba_wild"));
    let mut images = threshold::list_identity_folders(&lfw, "lfw")?;
    images.extend(threshold::list_identity_folders(&celeba, "celeba")?);
    let images = threshold::subset(images, args.limit);

    let gates = app::enrol_gates(&b);
    let key = embed_cache::cache_key(&models.detector_id, &models.recognizer_id, det_size);
    let gate_key = attempts::gate_cache_key(&key, &gates);
    let mut embed_cache = (!args.no_cache).then(|| EmbedCache::open(&args.cache, &key, models.dim));
    let mut gate_cache =
        (!args.no_cache).then(|| EmbedCache::open(&args.cache, &gate_key, models.dim));
    eprintln!(
        "attempts: {} images at {}x{}; cache {}",
        images.len(),
        det_size.0,
        det_size.1,
        if args.no_cache {
            "not used".to_string()
        } else {
            args.cache.display().to_string()
        }
    );
    let mut progress = Progress::new();
    let prepared = attempts::prepare(
        &models.pipeline,
        &images,
        &gates,
        max_enrol,
        embed_cache.as_mut(),
        gate_cache.as_mut(),
        &mut |stage, i, n, c| progress.update(stage, i, n, c),
    );
    // Keep what was embedded and judged even when a later step failed.
    for c in [embed_cache.as_mut(), gate_cache.as_mut()]
        .into_iter()
        .flatten()
    {
        if let Err(e) = c.save() {
            eprintln!("warning: cache not saved: {e}");
        }
    }
    let mut prepared = prepared?;
    let same_person = match &args.same_person {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let pairs = attempts::parse_same_person(&text, f)?;
            (pairs.len(), prepared.set.set_same_person(&pairs))
        }
        None => (0, 0),
    };
    let prep_seconds = wall.elapsed().as_secs_f64();
    let fps = f64::from(b.camera.fps.max(1));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    outln!(
        "attempts: {} over {} photos ({} with a face, {} identities) of {} + {}; {} passed enroll's gates \
         (smallest face {} px, sharpness >= {}, frontal) of {} judged",
        rec.display(),
        prepared.images,
        prepared.set.len(),
        prepared.set.identities(),
        lfw.display(),
        celeba.display(),
        prepared.gate_passed,
        gates.min_face_px,
        gates.min_sharpness,
        prepared.gate_judged
    );
    if let Some(f) = &args.same_person {
        outln!(
            "same person under two labels ({}): {} of {} pairs present, never counted as impostors of each other",
            f.display(),
            same_person.1,
            same_person.0
        );
    }
    outln!(
        "how photos become attempts: a person's first E photos (file order) that pass the gates \
         are enrolled; each of their other photos starts one genuine attempt of N consecutive \
         other photos (cycling when fewer), presented as camera frames max(1/fps, 1 s/N) apart \
         ({:.0} ms at N = 5, the loop's spacing) to a fresh K-of-N policy against the person's gallery of G; every photo of every identity outside \
         a gallery starts one impostor attempt against it the same way. Frames of different \
         photos are more independent than a camera's; 1/1 is what any K/N gives when all \
         frames are one picture. 95 % bounds: exact one-sided Clopper-Pearson (0 unlocks in n: \
         1 - 0.05^(1/n), about 3/n)",
        frame_interval(fps, 5).as_secs_f64() * 1e3
    );

    // The people the largest E can enrol, when every E is to be measured on them.
    let common: Option<std::collections::HashSet<u32>> = match args.common_people {
        false => None,
        true => Some(
            attempts::enrol(&prepared.set, &prepared.accepted, max_enrol)?
                .iter()
                .map(|p| p.identity)
                .collect(),
        ),
    };
    let mut rows = Vec::new();
    for (e, rule, k, n) in configs {
        let start = Instant::now();
        let mut people = attempts::enrol(&prepared.set, &prepared.accepted, e)?;
        if let Some(keep) = &common {
            people.retain(|p| keep.contains(&p.identity));
        }
        let policy = crate::unlock::policy::PolicyConfig {
            k,
            n,
            ..board_policy.clone()
        };
        let setup = Setup {
            rule,
            gallery: args.gallery,
            interval: frame_interval(fps, n),
            policy,
        };
        let counts = attempts::measure(&prepared.set, &people, &setup, threads)?;
        let row = make_row(e, rule, k, n, args.gallery, threshold, counts, start);
        outln!("{}", human_line(&row));
        rows.push(row);
    }
    outln!("{}", goal_line(&rows));
    let json = serde_json::json!({
        "detector": det.display().to_string(),
        "recognizer": rec.display().to_string(),
        "detector_digest": models.detector_id,
        "recognizer_digest": models.recognizer_id,
        "det_size": [det_size.0, det_size.1],
        "threshold": threshold,
        "threshold_file": threshold_file.display().to_string(),
        "board": args.board.board.display().to_string(),
        "images": prepared.images,
        "embedded": prepared.set.len(),
        "skipped_no_face": prepared.skipped_no_face,
        "unreadable": prepared.unreadable,
        "identities": prepared.set.identities(),
        "embed_cached": prepared.embed_cached,
        "gate_judged": prepared.gate_judged,
        "gate_cached": prepared.gate_cached,
        "gate_passed": prepared.gate_passed,
        "gates": format!("{gates:?}"),
        "same_person": args.same_person.as_ref().map(|f| f.display().to_string()),
        "same_person_pairs": same_person.1,
        "common_people": args.common_people,
        "fps": fps,
        "window_s": board_policy.window.as_secs_f64(),
        "attempts_model": "E first gate-passing photos enrolled; one attempt per other photo: N consecutive photos from it, cycling; frames max(1/fps, 1 s/N) apart; fresh policy per attempt; galleries of G people in identity order; impostors: every photo of every identity outside the gallery",
        "bound": "exact one-sided 95 % Clopper-Pearson",
        "goal": {"frr_at_most": GOAL_FRR, "impostor_unlocks": 0, "far_upper95_at_most": GOAL_FAR_BOUND},
        "prepare_seconds": prep_seconds,
        "seconds": wall.elapsed().as_secs_f64(),
        "configurations": rows,
    });
    outln!("{json}");
    Ok(ExitCode::SUCCESS)
}

/// How far apart the loop hands frames to the policy: the camera's frame time, or the
/// loop's own spacing for an attempt of `n` frames when that is longer
/// ([`LoopConfig::interval_for`]).
fn frame_interval(fps: f64, n: usize) -> Duration {
    let policy = crate::unlock::policy::PolicyConfig {
        n,
        k: 1,
        ..Default::default()
    };
    Duration::from_secs_f64(1.0 / fps).max(LoopConfig::interval_for(&policy))
}

#[allow(clippy::too_many_arguments)]
fn make_row(
    e: usize,
    rule: Rule,
    k: usize,
    n: usize,
    gallery: usize,
    threshold: f32,
    counts: Counts,
    start: Instant,
) -> Row {
    let far_upper95 = attempts::upper_bound_95(counts.impostor_unlocks, counts.impostor_attempts);
    Row {
        enrol: e,
        rule,
        k,
        n,
        gallery,
        threshold,
        frr: counts.frr(),
        frr_upper95: attempts::upper_bound_95(counts.genuine_failed, counts.genuine_attempts),
        far: counts.far(),
        far_upper95,
        meets_goal: counts.frr() <= GOAL_FRR
            && counts.impostor_unlocks == 0
            && far_upper95 <= GOAL_FAR_BOUND,
        counts,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn human_line(r: &Row) -> String {
    let c = &r.counts;
    format!(
        "E={} rule={:<4} K/N={}/{} G={} threshold {:.4}: {} people, {} galleries; genuine {} attempts, {} failed \
         ({} as another user): FRR {:.2} %; impostor {} attempts, {} unlocks: FAR {:.2e} (95 % bound {:.2e}){}",
        r.enrol,
        r.rule.to_string(),
        r.k,
        r.n,
        r.gallery,
        r.threshold,
        c.people,
        c.galleries,
        c.genuine_attempts,
        c.genuine_failed,
        c.genuine_wrong_user,
        r.frr * 100.0,
        c.impostor_attempts,
        c.impostor_unlocks,
        r.far,
        r.far_upper95,
        if r.meets_goal { "  [meets the goal]" } else { "" }
    )
}

/// Which configurations reach the goal, or how close the best ones get: the fewest impostor
/// unlocks among those within the FRR goal, and the lowest FRR among those within the FAR
/// bound goal.
fn goal_line(rows: &[Row]) -> String {
    const GOAL: &str = "goal (FRR <= 3 %, no impostor unlock, 95 % bound <= 1e-4)";
    let name = |r: &Row| {
        format!(
            "E={} rule={} K/N={}/{} (FRR {:.2} %, FAR {:.2e}, {} impostor unlocks in {})",
            r.enrol,
            r.rule,
            r.k,
            r.n,
            r.frr * 100.0,
            r.far,
            r.counts.impostor_unlocks,
            r.counts.impostor_attempts
        )
    };
    let meeting: Vec<String> = rows.iter().filter(|r| r.meets_goal).map(&name).collect();
    if !meeting.is_empty() {
        return format!("{GOAL} met by {}", meeting.join("; "));
    }
    let within_frr = rows
        .iter()
        .filter(|r| r.frr <= GOAL_FRR)
        .min_by(|a, b| a.far.total_cmp(&b.far));
    let within_far = rows
        .iter()
        .filter(|r| r.far_upper95 <= GOAL_FAR_BOUND)
        .min_by(|a, b| a.frr.total_cmp(&b.frr));
    let or_none = |r: Option<&Row>| r.map_or("none".to_string(), name);
    format!(
        "{GOAL} not met; within the FRR goal the lowest FAR: {}; within the FAR bound the lowest FRR: {}",
        or_none(within_frr),
        or_none(within_far)
    )
}
