//! Attempt-level error rates of the lock: how often it refuses a person at the door (attempt
//! FRR) and how often it opens for a stranger (attempt FAR), counted through the real K-of-N
//! [`Policy`], because the per-pair figure of `facegate threshold` (FRR at FAR 1e-5 over
//! single photo pairs) is not what a person at the door feels.
//!
//! # How photos become attempts
//! * **Photos**: LFW + CelebA-wild, identity = data set + folder (as `threshold`); each photo
//!   gives the face closest to its centre (the labelled person), embedded once through
//!   `threshold`'s embedding cache ([`crate::unlock::threshold::embed_all`]).
//! * **Enrolment**: a person's photos, in file order, go through `enroll`'s quality gates
//!   ([`assess_frame`] with [`crate::unlock::app::enrol_gates`]); the first E that pass are the
//!   templates, which is what `enroll --source images:DIR --frames E` keeps. A person takes
//!   part when E photos passed and at least one other photo has a face.
//! * **Galleries**: the people, in identity order, in groups of G (the last may be smaller);
//!   a gallery is one template store.
//! * **A genuine attempt**: the person's photos that were not enrolled, `p_0 .. p_{P-1}`;
//!   attempt `s` presents `p_s, p_{s+1}, …, p_{s+N-1}` (indices mod P: cycling when P < N) as
//!   N camera frames `interval` apart to a fresh policy, against the person's gallery: one
//!   attempt per such photo. It fails unless the policy unlocks for that person.
//! * **An impostor attempt**: the same for every identity that is not in the gallery (all its
//!   photos with a face, enrolled in another gallery or not), against that gallery; an unlock
//!   for any member is an impostor unlock. Labels known to be one person under two names
//!   ([`PhotoSet::set_same_person`]; LFW has several) can be kept from counting as impostors.
//! * **A frame**: each member's score under the match rule ([`Rule`], the store's own
//!   [`crate::unlock::rule`]); the best member and
//!   its score become the [`Observation`] the loop builds from a store, and
//!   [`Policy::observe`] decides.
//!
//! What this does not model: photos of one person come from different days, so the frames
//! of an attempt are more independent than a camera's consecutive frames, which favours
//! K-of-N; K/N = 1/1 is what any K/N gives when all N frames are the same picture. A real
//! door lies between the two. Liveness and the frozen check are not run (these are photos of
//! live people, and a cycled photo would be "frozen" to the real loop).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image_io::decode_rgb;
use crate::pipeline::Pipeline;
use crate::unlock::embed_cache::{photo_digest, EmbedCache, Outcome};
use crate::unlock::policy::{Decision, Observation, Policy, PolicyConfig};
use crate::unlock::session::{assess_frame, QualityGates, Rejection};
use crate::unlock::threshold::{embed_all, LabelledImage};

// The rule lives beside the store that matches with it; re-exported so `attempts`' users
// keep one import.
pub use crate::unlock::rule::{rule_score, Rule};

/// The embedded photos: one unit row per photo with a face, its identity and the identities'
/// names. Rows of one identity are contiguous (photos are listed folder by folder).
#[derive(Debug, Clone)]
pub struct PhotoSet {
    dim: usize,
    rows: Vec<f32>,
    identity: Vec<u32>,
    names: Vec<String>,
    /// Pairs of identities that are one person under two labels (both orders).
    same_person: HashSet<(u32, u32)>,
}

fn unit(v: &[f32], what: &str) -> Result<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return Err(Error::Msg(format!("attempts: {what} has norm {norm}")));
    }
    Ok(v.iter().map(|x| x / norm).collect())
}

impl PhotoSet {
    /// `identity[i]` indexes `names`; each embedding is L2-normalised here.
    pub fn new(embeddings: &[Vec<f32>], identity: &[u32], names: Vec<String>) -> Result<Self> {
        let dim = embeddings.first().map_or(0, Vec::len);
        if dim == 0 || identity.len() != embeddings.len() {
            return Err(Error::Msg(format!(
                "attempts: {} embeddings of {dim} values, {} identities",
                embeddings.len(),
                identity.len()
            )));
        }
        let mut rows = Vec::with_capacity(embeddings.len() * dim);
        for (i, e) in embeddings.iter().enumerate() {
            if e.len() != dim {
                return Err(Error::Msg(format!(
                    "attempts: embedding {i} is not {dim}-d"
                )));
            }
            rows.extend(unit(e, &format!("embedding {i}"))?);
        }
        if let Some(&id) = identity.iter().find(|&&id| id as usize >= names.len()) {
            return Err(Error::Msg(format!("attempts: identity {id} has no name")));
        }
        Ok(PhotoSet {
            dim,
            rows,
            identity: identity.to_vec(),
            names,
            same_person: HashSet::new(),
        })
    }

    /// Marks pairs of labels as one person (errors of the data's labels: one person filed
    /// under two names), so that neither is an impostor against the other. Pairs naming a
    /// label the set does not hold are ignored; returns how many applied.
    pub fn set_same_person(&mut self, pairs: &[(String, String)]) -> usize {
        let id: HashMap<&str, u32> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        let mut applied = 0;
        for (a, b) in pairs {
            if let (Some(&a), Some(&b)) = (id.get(a.as_str()), id.get(b.as_str())) {
                self.same_person.insert((a, b));
                self.same_person.insert((b, a));
                applied += 1;
            }
        }
        applied
    }

    /// Whether identities `a` and `b` are one person: the same label, or marked so.
    pub fn is_same_person(&self, a: u32, b: u32) -> bool {
        a == b || self.same_person.contains(&(a, b))
    }

    pub fn len(&self) -> usize {
        self.identity.len()
    }

    pub fn is_empty(&self) -> bool {
        self.identity.is_empty()
    }

    /// Photo `row`'s unit embedding.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.rows[row * self.dim..(row + 1) * self.dim]
    }

    pub fn identities(&self) -> usize {
        self.names.len()
    }

    pub fn name(&self, identity: u32) -> &str {
        &self.names[identity as usize]
    }

    /// The rows of each identity, in row order.
    pub fn rows_by_identity(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.names.len()];
        for (row, &id) in self.identity.iter().enumerate() {
            out[id as usize].push(row);
        }
        out
    }
}

/// One enrolled person.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub identity: u32,
    /// The E template embeddings (unit length).
    pub templates: Vec<Vec<f32>>,
    /// The rows presented as this person's attempts: their photos that were not enrolled.
    pub probes: Vec<usize>,
}

/// The people that take part with `e` templates each: per identity, the first `e` rows (in
/// file order) whose photo passed the enrolment gates (`accepted[row]`: the embedding the
/// gates' pass made) are the templates, every other row of the identity is a probe; an
/// identity without `e` passes or without a probe is left out.
pub fn enrol(set: &PhotoSet, accepted: &[Option<Vec<f32>>], e: usize) -> Result<Vec<Person>> {
    if accepted.len() != set.len() || e == 0 {
        return Err(Error::Msg(format!(
            "attempts: {} gate verdicts for {} photos, E = {e}",
            accepted.len(),
            set.len()
        )));
    }
    let mut people = Vec::new();
    for (id, rows) in set.rows_by_identity().into_iter().enumerate() {
        let mut templates = Vec::new();
        let mut probes = Vec::new();
        for row in rows {
            match &accepted[row] {
                Some(t) if templates.len() < e => templates.push(unit(t, "a template")?),
                _ => probes.push(row),
            }
        }
        if templates.len() == e && !probes.is_empty() {
            people.push(Person {
                identity: id as u32,
                templates,
                probes,
            });
        }
    }
    Ok(people)
}

/// Rows per work item of the score product.
const PANEL: usize = 64;

/// Every photo's score for every person under one rule: `photos × people`, row-major.
#[derive(Debug, Clone)]
pub struct ScoreTable {
    people: usize,
    scores: Vec<f32>,
}

impl ScoreTable {
    /// Photo `row`'s score for person `person`.
    pub fn get(&self, row: usize, person: usize) -> f32 {
        self.scores[row * self.people + person]
    }

    /// The best of `members` for photo `row` and its score, ties to the first (as
    /// [`crate::unlock::store::TemplateStore::best_match`] breaks them).
    pub fn best_in(&self, row: usize, members: Range<usize>) -> (usize, f32) {
        let line = &self.scores[row * self.people..(row + 1) * self.people];
        let mut best = (members.start, line[members.start]);
        for m in members {
            if line[m] > best.1 {
                best = (m, line[m]);
            }
        }
        best
    }
}

/// Scores every photo against every person's templates as blocked matrix products (the
/// engine's f32 GEMM, as `threshold`'s all-pairs scan), reduced to one score per person by
/// `rule`, on `threads` threads.
pub fn rule_scores(
    set: &PhotoSet,
    people: &[Person],
    rule: Rule,
    threads: usize,
) -> Result<ScoreTable> {
    use crate::kernels::{kernels, pack_pw_f32, Act, EpiF32};
    let dim = set.dim;
    let mut flat = Vec::new();
    let mut spans = Vec::with_capacity(people.len());
    let mut mean_norms = Vec::with_capacity(people.len());
    for p in people {
        let start = flat.len() / dim;
        let mut mean = vec![0.0f32; dim];
        for t in &p.templates {
            if t.len() != dim {
                return Err(Error::Msg(format!("attempts: a template is not {dim}-d")));
            }
            flat.extend_from_slice(t);
            mean.iter_mut().zip(t).for_each(|(m, v)| *m += v);
        }
        let e = p.templates.len();
        if e == 0 {
            return Err(Error::Msg("attempts: a person without templates".into()));
        }
        spans.push(start..start + e);
        mean_norms.push(crate::unlock::rule::mean_norm(&mean, e));
    }
    let cols = flat.len() / dim;
    let n = set.len();
    let mut scores = vec![0.0f32; n * people.len()];
    if cols == 0 || n == 0 {
        return Ok(ScoreTable {
            people: people.len(),
            scores,
        });
    }
    let packed = pack_pw_f32(&flat, cols, dim);
    let zeros = vec![0.0f32; cols];
    let epi = EpiF32 {
        bias: &zeros,
        act: Act::None,
    };
    let gemm = kernels().pw_f32;
    // Each work item owns its panel's slice of the table, so threads never share a row.
    let panels: Vec<(usize, &mut [f32])> = scores
        .chunks_mut(PANEL * people.len())
        .enumerate()
        .collect();
    let panels = Mutex::new(panels.into_iter());
    let work = || {
        let mut out = vec![0.0f32; PANEL * cols];
        loop {
            let Some((panel, dst)) = panels.lock().expect("panel queue").next() else {
                break;
            };
            let (r0, r1) = (panel * PANEL, ((panel + 1) * PANEL).min(n));
            let out = &mut out[..(r1 - r0) * cols];
            gemm(
                &set.rows[r0 * dim..r1 * dim],
                &packed,
                &epi,
                0,
                r1 - r0,
                out,
            );
            for (line, cos) in dst.chunks_mut(people.len()).zip(out.chunks(cols)) {
                for (m, span) in spans.iter().enumerate() {
                    line[m] = rule_score(rule, &cos[span.clone()], mean_norms[m]);
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.max(1) {
            s.spawn(work);
        }
        work();
    });
    Ok(ScoreTable {
        people: people.len(),
        scores,
    })
}

/// Presents one attempt to a fresh policy: frame `i` at `i · interval`, each frame the
/// gallery member with the best score (`names[member]`, score), as the loop's `observe`
/// builds it from a store. Returns the member the policy unlocked for, if it did.
pub fn present(
    cfg: &PolicyConfig,
    interval: Duration,
    names: &[String],
    frames: impl IntoIterator<Item = (usize, f32)>,
) -> Result<Option<usize>> {
    let mut policy = Policy::new(cfg.clone())?;
    let t0 = Instant::now();
    for (i, (member, score)) in frames.into_iter().enumerate() {
        let obs = Observation::Face {
            best: Some((names[member].clone(), score)),
        };
        let at = t0 + interval * i as u32;
        if let Decision::Unlock { user, .. } = policy.observe(&obs, at) {
            return Ok(names.iter().position(|n| *n == user));
        }
    }
    Ok(None)
}

/// The rows of attempt `start` over `photos`: N consecutive photos from `start`, cycling.
pub fn attempt_rows(photos: &[usize], start: usize, n: usize) -> impl Iterator<Item = usize> + '_ {
    (0..n).map(move |i| photos[(start + i) % photos.len()])
}

/// What one measurement is run with.
#[derive(Debug, Clone)]
pub struct Setup {
    pub rule: Rule,
    /// People per gallery (G).
    pub gallery: usize,
    /// The policy: the threshold, K and N (a fresh policy per attempt, so lockouts and
    /// cooldowns never carry over from one attempt to the next).
    pub policy: PolicyConfig,
    /// Time between two frames of an attempt.
    pub interval: Duration,
}

/// An impostor attempt that unlocked: worth looking at (a label error, a look-alike).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImpostorUnlock {
    pub enrolled: String,
    pub impostor: String,
    /// Rows of the attempt's frames and their scores for the member it unlocked.
    pub rows: Vec<usize>,
    pub scores: Vec<f32>,
}

/// Attempts counted by [`measure`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub people: usize,
    pub galleries: usize,
    /// Size of the last gallery (the others hold G).
    pub last_gallery: usize,
    pub genuine_attempts: u64,
    /// Genuine attempts that did not unlock for the person (wrong-user unlocks included).
    pub genuine_failed: u64,
    /// Genuine attempts that unlocked for another member of the gallery.
    pub genuine_wrong_user: u64,
    pub impostor_attempts: u64,
    pub impostor_unlocks: u64,
    /// The first impostor unlocks (at most [`EXAMPLES`]), in gallery order.
    pub impostor_examples: Vec<ImpostorUnlock>,
}

/// Impostor unlocks kept as examples.
pub const EXAMPLES: usize = 20;

impl Counts {
    fn add(&mut self, o: Counts) {
        self.genuine_attempts += o.genuine_attempts;
        self.genuine_failed += o.genuine_failed;
        self.genuine_wrong_user += o.genuine_wrong_user;
        self.impostor_attempts += o.impostor_attempts;
        self.impostor_unlocks += o.impostor_unlocks;
        let room = EXAMPLES.saturating_sub(self.impostor_examples.len());
        self.impostor_examples
            .extend(o.impostor_examples.into_iter().take(room));
    }

    /// Attempt FRR: failed genuine attempts over genuine attempts.
    pub fn frr(&self) -> f64 {
        ratio(self.genuine_failed, self.genuine_attempts)
    }

    /// Attempt FAR: impostor unlocks over impostor attempts.
    pub fn far(&self) -> f64 {
        ratio(self.impostor_unlocks, self.impostor_attempts)
    }
}

fn ratio(x: u64, n: u64) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        x as f64 / n as f64
    }
}

/// Counts the genuine and impostor attempts of every gallery (see the module doc) on
/// `threads` threads; the result does not depend on `threads`.
pub fn measure(set: &PhotoSet, people: &[Person], setup: &Setup, threads: usize) -> Result<Counts> {
    if setup.gallery == 0 {
        return Err(Error::Msg(
            "attempts: a gallery needs at least one person".into(),
        ));
    }
    setup.policy.validate()?;
    let table = rule_scores(set, people, setup.rule, threads)?;
    let by_identity = set.rows_by_identity();
    let galleries: Vec<Range<usize>> = (0..people.len())
        .step_by(setup.gallery)
        .map(|s| s..(s + setup.gallery).min(people.len()))
        .collect();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let work = || -> Result<()> {
        loop {
            let g = next.fetch_add(1, Ordering::Relaxed);
            let Some(members) = galleries.get(g) else {
                return Ok(());
            };
            let c = gallery_counts(set, people, &table, members.clone(), &by_identity, setup)?;
            results.lock().expect("results").push((g, c));
        }
    };
    let outcomes: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (1..threads.max(1)).map(|_| s.spawn(work)).collect();
        let mut v = vec![work()];
        v.extend(hs.into_iter().map(|h| h.join().expect("attempts worker")));
        v
    });
    outcomes.into_iter().collect::<Result<Vec<()>>>()?;
    let mut per_gallery = results.into_inner().expect("results");
    // Merged in gallery order, so the examples are the same whatever the threads did.
    per_gallery.sort_by_key(|(g, _)| *g);
    let mut total = Counts {
        people: people.len(),
        galleries: galleries.len(),
        last_gallery: galleries.last().map_or(0, |r| r.len()),
        ..Counts::default()
    };
    for (_, c) in per_gallery {
        total.add(c);
    }
    Ok(total)
}

/// The attempts of one gallery: its members' genuine attempts and every other identity's
/// impostor attempts.
fn gallery_counts(
    set: &PhotoSet,
    people: &[Person],
    table: &ScoreTable,
    members: Range<usize>,
    by_identity: &[Vec<usize>],
    setup: &Setup,
) -> Result<Counts> {
    let names: Vec<String> = members.clone().map(|m| m.to_string()).collect();
    let n = setup.policy.n;
    let frame = |row: usize| {
        let (m, s) = table.best_in(row, members.clone());
        (m - members.start, s)
    };
    let attempt = |photos: &[usize], start: usize| {
        present(
            &setup.policy,
            setup.interval,
            &names,
            attempt_rows(photos, start, n).map(frame),
        )
    };
    let mut c = Counts::default();
    for m in members.clone() {
        let probes = &people[m].probes;
        for s in 0..probes.len() {
            c.genuine_attempts += 1;
            match attempt(probes, s)? {
                Some(u) if u + members.start == m => {}
                Some(_) => {
                    c.genuine_failed += 1;
                    c.genuine_wrong_user += 1;
                }
                None => c.genuine_failed += 1,
            }
        }
    }
    let in_gallery: Vec<u32> = members.clone().map(|m| people[m].identity).collect();
    for (id, photos) in by_identity.iter().enumerate() {
        if in_gallery.iter().any(|&m| set.is_same_person(m, id as u32)) {
            continue;
        }
        for s in 0..photos.len() {
            c.impostor_attempts += 1;
            if let Some(u) = attempt(photos, s)? {
                c.impostor_unlocks += 1;
                if c.impostor_examples.len() < EXAMPLES {
                    let who = members.start + u;
                    let rows: Vec<usize> = attempt_rows(photos, s, n).collect();
                    c.impostor_examples.push(ImpostorUnlock {
                        enrolled: set.name(people[who].identity).to_string(),
                        impostor: set.name(id as u32).to_string(),
                        scores: rows.iter().map(|&r| table.get(r, who)).collect(),
                        rows,
                    });
                }
            }
        }
    }
    Ok(c)
}

/// The exact one-sided 95 % upper confidence bound (Clopper–Pearson) of a rate seen `x`
/// times in `n` trials: the `p` at which seeing at most `x` has probability 5 %. For
/// `x = 0` it is `1 − 0.05^(1/n)`, about `3/n` (the "rule of three").
pub fn upper_bound_95(x: u64, n: u64) -> f64 {
    const ALPHA: f64 = 0.05;
    if n == 0 {
        return 1.0;
    }
    if x >= n {
        return 1.0;
    }
    if x == 0 {
        return 1.0 - ALPHA.powf(1.0 / n as f64);
    }
    // P(X <= x) falls as p grows: bisect on it.
    let (mut lo, mut hi) = (x as f64 / n as f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if binomial_cdf(x, n, mid) > ALPHA {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// P(X <= x) for X ~ Binomial(n, p), summed in log space (n may be millions).
fn binomial_cdf(x: u64, n: u64, p: f64) -> f64 {
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    let mut term = n as f64 * lq; // log P(X = 0)
    let mut logs = Vec::with_capacity(x as usize + 1);
    logs.push(term);
    for k in 0..x {
        term += ((n - k) as f64 / (k + 1) as f64).ln() + lp - lq;
        logs.push(term);
    }
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    top.exp() * logs.iter().map(|l| (l - top).exp()).sum::<f64>()
}

/// Reads a list of label pairs that are one person (see [`PhotoSet::set_same_person`]): one
/// pair per line, two labels separated by white space; `#` starts a comment.
pub fn parse_same_person(text: &str, file: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [a, b] => out.push((a.to_string(), b.to_string())),
            _ => {
                return Err(Error::Msg(format!(
                    "{}:{}: expected two identity labels, got {line:?}",
                    file.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The photo set from the data (embedding, enrolment gates)

/// The photos embedded and judged by the enrolment gates.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub set: PhotoSet,
    /// Per row: the embedding the enrolment gates' pass made when the photo passed them
    /// (`None`: refused, or not looked at because its identity cannot take part).
    pub accepted: Vec<Option<Vec<f32>>>,
    pub images: usize,
    pub skipped_no_face: usize,
    pub unreadable: usize,
    /// Photos from the embedding cache.
    pub embed_cached: usize,
    /// Photos the gates judged, and how many of those verdicts came from the cache.
    pub gate_judged: usize,
    pub gate_cached: usize,
    pub gate_passed: usize,
}

/// Embeds every photo (through `embed_cache`), then runs the enrolment gates on the photos
/// of every identity with at least two faces, in file order, until `max_enrol` passed (what
/// `enroll` would look at), through `gate_cache`. `progress(stage, done, total, cached)`.
pub fn prepare(
    pipeline: &Pipeline,
    images: &[LabelledImage],
    gates: &QualityGates,
    max_enrol: usize,
    embed_cache: Option<&mut EmbedCache>,
    mut gate_cache: Option<&mut EmbedCache>,
    progress: &mut dyn FnMut(&str, usize, usize, usize),
) -> Result<Prepared> {
    let e = embed_all(pipeline, images, embed_cache, &mut |i, n, c| {
        progress("embedded", i, n, c)
    })?;
    let mut names: Vec<String> = vec![String::new(); e.identities];
    for (&label, &img) in e.labels.iter().zip(&e.images) {
        names[label as usize] = images[img].identity.clone();
    }
    let set = PhotoSet::new(&e.embeddings, &e.labels, names)?;
    let groups: Vec<Vec<usize>> = set
        .rows_by_identity()
        .into_iter()
        .filter(|rows| rows.len() >= 2)
        .collect();
    let total: usize = groups.iter().map(Vec::len).sum();
    let mut accepted = vec![None; set.len()];
    let (mut seen, mut judged, mut cached, mut passed) = (0, 0, 0, 0);
    const STAGE: &str = "looked at for enrolment";
    for rows in groups {
        let mut taken = 0;
        for (i, &row) in rows.iter().enumerate() {
            // Once E passed, enroll stops reading: the rest of the identity is not looked at.
            if taken == max_enrol {
                break;
            }
            progress(STAGE, seen + i, total, cached);
            let photo = &images[e.images[row]].path;
            let (verdict, hit) = gate_verdict(pipeline, photo, gates, gate_cache.as_deref_mut())?;
            judged += 1;
            cached += usize::from(hit);
            if let Some(t) = verdict {
                taken += 1;
                accepted[row] = Some(t);
            }
        }
        passed += taken;
        seen += rows.len();
    }
    progress(STAGE, total, total, cached);
    Ok(Prepared {
        set,
        accepted,
        images: images.len(),
        skipped_no_face: e.skipped_no_face,
        unreadable: e.unreadable,
        embed_cached: e.cached,
        gate_judged: judged,
        gate_cached: cached,
        gate_passed: passed,
    })
}

/// The cache key of the enrolment gates' verdicts: the models' key and the gates.
pub fn gate_cache_key(embed_key: &str, gates: &QualityGates) -> String {
    format!("{embed_key} enrolment gates {gates:?}")
}

/// `enroll`'s verdict on one photo ([`assess_frame`]): the embedding when it passes. In the
/// gate cache a refused photo is stored as [`Outcome::NoFace`] ("no face the gates take").
/// Returns whether the verdict came from the cache.
fn gate_verdict(
    pipeline: &Pipeline,
    photo: &Path,
    gates: &QualityGates,
    cache: Option<&mut EmbedCache>,
) -> Result<(Option<Vec<f32>>, bool)> {
    let bytes = std::fs::read(photo).map_err(|e| Error::io(photo, e))?;
    let name = photo.to_string_lossy();
    let digest = photo_digest(&bytes);
    let as_verdict = |o: Outcome| match o {
        Outcome::Embedded(e) => Some(e),
        Outcome::NoFace => None,
    };
    if let Some(o) = cache.as_deref().and_then(|c| c.get(&name, &digest)) {
        return Ok((as_verdict(o.clone()), true));
    }
    let rgb = decode_rgb(&bytes, photo)?;
    let outcome = match assess_frame(pipeline, &rgb, gates, 0) {
        Ok(a) => Outcome::Embedded(a.embedding),
        // A stage that failed is an error of the measurement, not a refusal by the gates.
        Err(Rejection::Error(e)) => return Err(Error::Msg(format!("{}: {e}", photo.display()))),
        Err(_) => Outcome::NoFace,
    };
    if let Some(c) = cache {
        c.insert(&name, digest, outcome.clone())?;
    }
    Ok((as_verdict(outcome), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_upper_bounds() {
        // x = 0: 1 - 0.05^(1/n), close to 3/n for large n.
        assert!((upper_bound_95(0, 10) - (1.0 - 0.05f64.powf(0.1))).abs() < 1e-12);
        let b = upper_bound_95(0, 1_000_000);
        assert!((b * 1e6 - 2.9957).abs() < 1e-3, "{b}");
        // One-sided 95 % bounds (solved in Python with lgamma): 1 of 10 -> 0.394163,
        // 5 of 100 -> 0.102253, 300 of 10,000 -> 0.032959.
        assert!((upper_bound_95(1, 10) - 0.394163).abs() < 1e-5);
        assert!((upper_bound_95(5, 100) - 0.102253).abs() < 1e-5);
        assert!((upper_bound_95(300, 10_000) - 0.032959).abs() < 1e-5);
        assert_eq!(upper_bound_95(7, 7), 1.0);
    }
}
