//! Face verification: pair lists and the metrics reported on them.
//!
//! Pair files: LFW View 2 (`pairs.txt`: header `folds\tpairs_per_class`, then per fold
//! `pairs_per_class` "same" lines `name n1 n2` followed by as many "different" lines
//! `name1 n1 name2 n2`; images at `<root>/<name>/<name>_<n:04>.jpg`) and a generic
//! `a b label` format (label 1 same, 0 different; `#` starts a comment; paths relative to the
//! file's folder or a given root), which has a single fold 0.
//!
//! Metrics take scores (cosine similarity; higher = more alike). A pair is declared "same"
//! when `score >= threshold`, everywhere in this module.
//! - [`kfold_accuracy`]: the LFW protocol (as InsightFace's `verification.py`): for each fold,
//!   the threshold maximising accuracy on the other folds is applied to the held-out fold.
//!   Unlike InsightFace's fixed grid (0..4 step 0.01 on distances), candidate thresholds are
//!   exact: the midpoints between consecutive distinct training scores, plus one below the
//!   minimum and one above the maximum, so the training optimum is attained exactly. Among
//!   equally good candidates the smallest threshold is taken. Mean ± population std (numpy's
//!   default, ddof = 0) of the fold accuracies, and the mean threshold.
//! - [`best_threshold_accuracy`]: the same search on all pairs at once (no held-out data;
//!   optimistic, for pair files without folds).
//! - [`tar_at_far`]: with `n` impostor pairs, at most `k = floor(far * n)` may be accepted;
//!   the threshold is the smallest `f32` at which the fraction of impostors with
//!   `score >= threshold` is `<= far`, i.e. the next float above the `(k+1)`-th highest
//!   impostor score. TAR is the fraction of genuine pairs with `score >= threshold`.
//! - [`far_threshold_all_impostors`]: the same definition over all cross-identity pairs of
//!   an embedding set (tens of millions), without storing all scores.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// One verification pair with its fold (0 for files without folds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub a: PathBuf,
    pub b: PathBuf,
    pub same: bool,
    pub fold: usize,
}

/// A scored pair, the input of the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    pub score: f32,
    pub same: bool,
    pub fold: usize,
}

fn line_err(file: &Path, line: usize, reason: impl std::fmt::Display) -> Error {
    Error::Msg(format!("{}:{}: {}", file.display(), line, reason))
}

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).map_err(|e| Error::io(file, e))
}

/// The path of LFW image `n` of `name`: `<root>/<name>/<name>_<n:04>.jpg`.
pub fn lfw_image_path(root: &Path, name: &str, n: u32) -> PathBuf {
    root.join(name).join(format!("{name}_{n:04}.jpg"))
}

/// Parses LFW View-2 `pairs.txt` text; `file` names it in errors, `root` prefixes images.
pub fn parse_lfw_pairs_str(text: &str, file: &Path, root: &Path) -> Result<Vec<Pair>> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    let (hl, header) = lines
        .next()
        .ok_or_else(|| line_err(file, 1, "empty file"))?;
    let nums: Vec<usize> = header
        .split_whitespace()
        .map(|t| t.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| line_err(file, hl, format!("expected `folds pairs`, got `{header}`")))?;
    let [folds, per] = nums[..] else {
        return Err(line_err(
            file,
            hl,
            format!("expected `folds pairs`, got `{header}`"),
        ));
    };
    let num = |ln: usize, t: &str| -> Result<u32> {
        t.parse()
            .map_err(|_| line_err(file, ln, format!("expected an image number, got `{t}`")))
    };
    let mut pairs = Vec::with_capacity(folds * per * 2);
    for fold in 0..folds {
        for k in 0..2 * per {
            let same = k < per;
            let (ln, l) = lines.next().ok_or_else(|| {
                line_err(
                    file,
                    hl,
                    format!("file ends in fold {fold} (expected {folds} folds × 2 × {per} pairs)"),
                )
            })?;
            let t: Vec<&str> = l.split_whitespace().collect();
            let (a, b) = match (same, t.len()) {
                (true, 3) => (
                    lfw_image_path(root, t[0], num(ln, t[1])?),
                    lfw_image_path(root, t[0], num(ln, t[2])?),
                ),
                (false, 4) => (
                    lfw_image_path(root, t[0], num(ln, t[1])?),
                    lfw_image_path(root, t[2], num(ln, t[3])?),
                ),
                _ => {
                    let want = if same {
                        "a same pair `name n1 n2`"
                    } else {
                        "a different pair `name1 n1 name2 n2`"
                    };
                    return Err(line_err(file, ln, format!("expected {want}, got `{l}`")));
                }
            };
            pairs.push(Pair { a, b, same, fold });
        }
    }
    if let Some((ln, l)) = lines.next() {
        return Err(line_err(
            file,
            ln,
            format!("unexpected line after {folds} folds: `{l}`"),
        ));
    }
    Ok(pairs)
}

/// Reads LFW View-2 `pairs.txt`; image paths are under `root` (the LFW image folder).
pub fn parse_lfw_pairs(file: &Path, root: &Path) -> Result<Vec<Pair>> {
    parse_lfw_pairs_str(&read(file)?, file, root)
}

/// Parses the generic `a b label` format (label `1` same, `0` different; `#` comments);
/// paths are joined to `root`. All pairs are in fold 0.
pub fn parse_label_pairs_str(text: &str, file: &Path, root: &Path) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let t: Vec<&str> = l.split_whitespace().collect();
        let same = match t[..] {
            [_, _, "1"] => true,
            [_, _, "0"] => false,
            _ => {
                return Err(line_err(
                    file,
                    i + 1,
                    format!("expected `image_a image_b 0|1`, got `{l}`"),
                ))
            }
        };
        pairs.push(Pair {
            a: root.join(t[0]),
            b: root.join(t[1]),
            same,
            fold: 0,
        });
    }
    Ok(pairs)
}

/// Reads a generic pairs file; paths are relative to the file's folder.
pub fn parse_label_pairs(file: &Path) -> Result<Vec<Pair>> {
    let root = file.parent().unwrap_or(Path::new("."));
    parse_label_pairs_str(&read(file)?, file, root)
}

/// Accuracy at the best threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BestThreshold {
    pub accuracy: f64,
    pub threshold: f32,
}

fn check_scores(pairs: &[ScoredPair], what: &str) -> Result<()> {
    if pairs.is_empty() {
        return Err(Error::Msg(format!("{what}: no pairs")));
    }
    if let Some(p) = pairs.iter().find(|p| !p.score.is_finite()) {
        return Err(Error::Msg(format!(
            "{what}: non-finite score {} (fold {})",
            p.score, p.fold
        )));
    }
    Ok(())
}

/// Exact best threshold over `(score, same)` (finite scores, non-empty): sweeps the sorted
/// scores; candidates are midpoints between consecutive distinct scores and one value
/// beyond each end; ties resolved to the smallest threshold.
fn best_threshold(items: &mut [(f32, bool)]) -> BestThreshold {
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = items.len();
    let total_same = items.iter().filter(|p| p.1).count();
    // threshold below everything: all declared same
    let mut correct = total_same;
    let mut best = BestThreshold {
        accuracy: correct as f64 / n as f64,
        threshold: items[0].0 - 1.0,
    };
    let mut i = 0;
    while i < n {
        // move the group of equal scores items[i..j] below the threshold
        let mut j = i;
        while j < n && items[j].0 == items[i].0 {
            if items[j].1 {
                correct -= 1;
            } else {
                correct += 1;
            }
            j += 1;
        }
        let thr = if j < n {
            items[i].0 + (items[j].0 - items[i].0) / 2.0
        } else {
            items[n - 1].0 + 1.0
        };
        let acc = correct as f64 / n as f64;
        if acc > best.accuracy {
            best = BestThreshold {
                accuracy: acc,
                threshold: thr,
            };
        }
        i = j;
    }
    best
}

fn accuracy_at(pairs: impl Iterator<Item = (f32, bool)>, thr: f32) -> f64 {
    let (mut ok, mut n) = (0usize, 0usize);
    for (s, same) in pairs {
        n += 1;
        if (s >= thr) == same {
            ok += 1;
        }
    }
    ok as f64 / n as f64
}

/// Best-threshold accuracy over all pairs (folds ignored).
pub fn best_threshold_accuracy(pairs: &[ScoredPair]) -> Result<BestThreshold> {
    check_scores(pairs, "best-threshold accuracy")?;
    let mut items: Vec<(f32, bool)> = pairs.iter().map(|p| (p.score, p.same)).collect();
    Ok(best_threshold(&mut items))
}

/// Result of the k-fold protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct KFoldResult {
    pub mean_accuracy: f64,
    /// Population standard deviation (ddof = 0) of the fold accuracies.
    pub std_accuracy: f64,
    pub mean_threshold: f64,
    pub fold_accuracy: Vec<f64>,
    pub fold_threshold: Vec<f32>,
}

/// The LFW k-fold protocol (module documentation). Folds are `0..=max fold`; each must be
/// non-empty, and there must be at least two.
pub fn kfold_accuracy(pairs: &[ScoredPair]) -> Result<KFoldResult> {
    check_scores(pairs, "k-fold accuracy")?;
    let folds = pairs.iter().map(|p| p.fold).max().unwrap_or(0) + 1;
    if folds < 2 {
        return Err(Error::Msg(
            "k-fold accuracy: needs at least 2 folds (use best_threshold_accuracy)".into(),
        ));
    }
    let mut fold_accuracy = Vec::with_capacity(folds);
    let mut fold_threshold = Vec::with_capacity(folds);
    for f in 0..folds {
        let test = pairs
            .iter()
            .filter(|p| p.fold == f)
            .map(|p| (p.score, p.same));
        if test.clone().next().is_none() {
            return Err(Error::Msg(format!(
                "k-fold accuracy: fold {f} of 0..{folds} has no pairs"
            )));
        }
        let mut train: Vec<(f32, bool)> = pairs
            .iter()
            .filter(|p| p.fold != f)
            .map(|p| (p.score, p.same))
            .collect();
        let best = best_threshold(&mut train);
        fold_accuracy.push(accuracy_at(test, best.threshold));
        fold_threshold.push(best.threshold);
    }
    let n = folds as f64;
    let mean = fold_accuracy.iter().sum::<f64>() / n;
    let var = fold_accuracy
        .iter()
        .map(|a| (a - mean).powi(2))
        .sum::<f64>()
        / n;
    Ok(KFoldResult {
        mean_accuracy: mean,
        std_accuracy: var.sqrt(),
        mean_threshold: fold_threshold.iter().map(|&t| t as f64).sum::<f64>() / n,
        fold_accuracy,
        fold_threshold,
    })
}

/// TAR at a target FAR.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TarAtFar {
    /// The requested false-accept rate.
    pub far_target: f64,
    /// The FAR actually reached at `threshold` (`<= far_target`).
    pub far: f64,
    pub tar: f64,
    pub threshold: f32,
}

/// The smallest f32 strictly greater than `x` (for finite `x`).
pub fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    if x > 0.0 {
        f32::from_bits(b + 1)
    } else {
        f32::from_bits(b - 1)
    }
}

/// Number of impostor acceptances allowed at `far` among `n` impostors: `floor(far * n)`,
/// with a tiny tolerance so that e.g. `0.29 * 100` gives 29.
fn allowed_false_accepts(far: f64, n: u64) -> u64 {
    (far * n as f64 + 1e-9).floor() as u64
}

/// Threshold from the impostor scores sorted descending: next float above the `(k+1)`-th.
fn threshold_from_sorted_desc(imp_desc: &[f32], k: u64) -> f32 {
    if k as usize >= imp_desc.len() {
        // every impostor may be accepted: the smallest impostor score accepts all
        imp_desc.last().copied().unwrap_or(f32::NEG_INFINITY)
    } else {
        next_up(imp_desc[k as usize])
    }
}

/// TAR at FAR (module documentation), over all pairs (folds ignored).
pub fn tar_at_far(pairs: &[ScoredPair], far: f64) -> Result<TarAtFar> {
    check_scores(pairs, "TAR@FAR")?;
    if !(0.0..=1.0).contains(&far) {
        return Err(Error::Msg(format!("TAR@FAR: FAR {far} is not in [0, 1]")));
    }
    let mut imp: Vec<f32> = pairs.iter().filter(|p| !p.same).map(|p| p.score).collect();
    let gen: Vec<f32> = pairs.iter().filter(|p| p.same).map(|p| p.score).collect();
    if imp.is_empty() || gen.is_empty() {
        return Err(Error::Msg(format!(
            "TAR@FAR: needs genuine and impostor pairs, got {} and {}",
            gen.len(),
            imp.len()
        )));
    }
    imp.sort_by(|a, b| b.total_cmp(a));
    let k = allowed_false_accepts(far, imp.len() as u64);
    let threshold = threshold_from_sorted_desc(&imp, k);
    let accepted = |v: &[f32]| v.iter().filter(|&&s| s >= threshold).count() as f64;
    Ok(TarAtFar {
        far_target: far,
        far: accepted(&imp) / imp.len() as f64,
        tar: accepted(&gen) / gen.len() as f64,
        threshold,
    })
}

/// Result of [`far_threshold_all_impostors`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllPairsFar {
    /// Smallest f32 at which at most `floor(far * impostor_count)` impostor pairs have
    /// `score >= threshold`.
    pub threshold: f32,
    /// Number of cross-identity pairs compared.
    pub impostor_count: u64,
    /// Number of same-identity pairs.
    pub genuine_count: u64,
    /// Fraction of same-identity pairs with `score < threshold` (NaN if there are none).
    pub frr: f64,
    /// The false-accept rate reached at `threshold`.
    pub far: f64,
}

/// Total order wrapper for the heap (scores are finite here).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f32);
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Score {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Lanes of the dot-product accumulators: one AVX register, two SSE registers, two NEON.
const LANES: usize = 8;

/// Dot product with `LANES` independent accumulators so the compiler vectorises it; the
/// summation order is fixed, so [`dot4`] gives bit-identical results for each row.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        let x: &[f32; LANES] = x.try_into().expect("chunk of LANES");
        let y: &[f32; LANES] = y.try_into().expect("chunk of LANES");
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    reduce(&acc) + tail
}

#[inline]
fn reduce(acc: &[f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Four rows against one: loads `b` once for four dot products (register blocking).
/// Same per-lane order and reduction as [`dot`], so results are bit-identical to it.
#[inline]
fn dot4(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    let mut acc = [[0.0f32; LANES]; 4];
    let lane = |s: &[f32]| -> [f32; LANES] { s.try_into().expect("chunk of LANES") };
    let rows = b
        .chunks_exact(LANES)
        .zip(a[0].chunks_exact(LANES))
        .zip(a[1].chunks_exact(LANES))
        .zip(a[2].chunks_exact(LANES))
        .zip(a[3].chunks_exact(LANES));
    for ((((y, x0), x1), x2), x3) in rows {
        let (y, x0, x1, x2, x3) = (lane(y), lane(x0), lane(x1), lane(x2), lane(x3));
        for l in 0..LANES {
            acc[0][l] += x0[l] * y[l];
            acc[1][l] += x1[l] * y[l];
            acc[2][l] += x2[l] * y[l];
            acc[3][l] += x3[l] * y[l];
        }
    }
    let n = b.len() / LANES * LANES;
    let mut out = [0.0f32; 4];
    for r in 0..4 {
        let tail: f32 = a[r][n..].iter().zip(&b[n..]).map(|(x, y)| x * y).sum();
        out[r] = reduce(&acc[r]) + tail;
    }
    out
}

/// Per-thread state of the all-pairs scan.
struct Partial {
    heap: BinaryHeap<Reverse<Score>>,
    keep: usize,
    genuine: Vec<f32>,
    impostors: u64,
}

impl Partial {
    #[inline]
    fn push(&mut self, s: f32, same: bool) {
        if same {
            self.genuine.push(s);
            return;
        }
        self.impostors += 1;
        if self.heap.len() < self.keep {
            self.heap.push(Reverse(Score(s)));
        } else if let Some(mut top) = self.heap.peek_mut() {
            if s > top.0 .0 {
                *top = Reverse(Score(s));
            }
        }
    }
}

/// Rows per work item and per cache tile in the all-pairs scan.
const PANEL: usize = 64;

/// FAR threshold over ALL cross-identity pairs of a set of embeddings (cosine similarity;
/// the embeddings are L2-normalised here), and the genuine FRR at it. Uses all available
/// cores and the engine's f32 GEMM kernels; see [`far_threshold_all_impostors_gemm`].
pub fn far_threshold_all_impostors(
    embeddings: &[Vec<f32>],
    identity: &[u32],
    far: f64,
) -> Result<AllPairsFar> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    far_threshold_all_impostors_gemm(embeddings, identity, far, threads)
}

/// The normalised rows and pair counts both all-pairs scans start from.
struct AllPairs {
    flat: Vec<f32>,
    n: usize,
    dim: usize,
    impostor_count: u64,
    /// Impostor scores kept per thread: the top `ceil(far * impostors) + 1`.
    keep: usize,
}

fn prepare_all_pairs(embeddings: &[Vec<f32>], identity: &[u32], far: f64) -> Result<AllPairs> {
    let n = embeddings.len();
    if identity.len() != n {
        return Err(Error::Shape {
            what: "far_threshold_all_impostors: identities".into(),
            expected: format!("{n} (one per embedding)"),
            got: identity.len().to_string(),
        });
    }
    if !(0.0..=1.0).contains(&far) {
        return Err(Error::Msg(format!(
            "far_threshold_all_impostors: FAR {far} is not in [0, 1]"
        )));
    }
    let dim = embeddings.first().map_or(0, |e| e.len());
    if dim == 0 {
        return Err(Error::Msg(
            "far_threshold_all_impostors: no embeddings".into(),
        ));
    }
    // contiguous, L2-normalised copy
    let mut flat = Vec::with_capacity(n * dim);
    for (i, e) in embeddings.iter().enumerate() {
        if e.len() != dim {
            return Err(Error::Shape {
                what: format!("far_threshold_all_impostors: embedding {i}"),
                expected: format!("{dim} values"),
                got: e.len().to_string(),
            });
        }
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(Error::Msg(format!(
                "far_threshold_all_impostors: embedding {i} has norm {norm}"
            )));
        }
        flat.extend(e.iter().map(|v| v / norm));
    }
    let mut impostor_count = 0u64;
    {
        // count impostor pairs exactly from the identity histogram
        let mut ids = identity.to_vec();
        ids.sort_unstable();
        let mut same = 0u64;
        let mut i = 0;
        while i < ids.len() {
            let j = i + ids[i..].iter().take_while(|&&v| v == ids[i]).count();
            let c = (j - i) as u64;
            same += c * (c - 1) / 2;
            i = j;
        }
        let total = n as u64 * (n as u64 - 1) / 2;
        impostor_count += total - same;
    }
    if impostor_count == 0 {
        return Err(Error::Msg(
            "far_threshold_all_impostors: no cross-identity pairs (one identity?)".into(),
        ));
    }
    let keep = ((far * impostor_count as f64).ceil() as usize + 1).min(impostor_count as usize);
    Ok(AllPairs {
        flat,
        n,
        dim,
        impostor_count,
        keep,
    })
}

/// Merges the threads' partial results into the threshold, FAR and FRR.
fn finish_all_pairs(parts: Vec<Partial>, far: f64, ap: &AllPairs) -> Result<AllPairsFar> {
    let (impostor_count, keep) = (ap.impostor_count, ap.keep);
    let mut top: Vec<f32> = Vec::new();
    let mut genuine: Vec<f32> = Vec::new();
    let mut seen = 0u64;
    for p in parts {
        seen += p.impostors;
        top.extend(p.heap.into_iter().map(|Reverse(Score(s))| s));
        genuine.extend(p.genuine);
    }
    debug_assert_eq!(seen, impostor_count);
    if let Some(s) = top.iter().chain(&genuine).find(|s| !s.is_finite()) {
        return Err(Error::Msg(format!(
            "far_threshold_all_impostors: non-finite score {s}"
        )));
    }
    top.sort_by(|a, b| b.total_cmp(a));
    top.truncate(keep);
    let k = allowed_false_accepts(far, impostor_count);
    let threshold = threshold_from_sorted_desc(&top, k);
    // when every impostor may be accepted (`keep` == all), `top` holds them all
    let accepted_imp = top.iter().filter(|&&s| s >= threshold).count() as u64;
    let genuine_count = genuine.len() as u64;
    let rejected = genuine.iter().filter(|&&s| s < threshold).count();
    Ok(AllPairsFar {
        threshold,
        impostor_count,
        genuine_count,
        frr: if genuine_count == 0 {
            f64::NAN
        } else {
            rejected as f64 / genuine_count as f64
        },
        far: accepted_imp as f64 / impostor_count as f64,
    })
}

/// Runs `work` on `threads` scoped threads (or the calling thread) and collects the results.
fn run_partials(threads: usize, work: &(dyn Fn() -> Partial + Sync)) -> Vec<Partial> {
    if threads == 1 {
        vec![work()]
    } else {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            hs.into_iter()
                .map(|h| h.join().expect("all-pairs worker panicked"))
                .collect()
        })
    }
}

/// Columns per packed weight tile of the GEMM scan.
const GEMM_TILE: usize = 256;

/// [`far_threshold_all_impostors`] on `threads` threads as blocked matrix products: the rows
/// are packed once as the GEMM's `B` operand in tiles of [`GEMM_TILE`] columns, each work item
/// (a panel of [`PANEL`] rows) multiplies its rows by every tile right of the diagonal
/// with the f32 kernel the engine uses (`Kernels::pw_f32`), and only the upper triangle's
/// scores are kept. The same scores as the dot-product scan up to float rounding (another
/// summation order): `far_threshold_all_impostors_with_threads` is kept as the reference
/// the tests compare with.
pub fn far_threshold_all_impostors_gemm(
    embeddings: &[Vec<f32>],
    identity: &[u32],
    far: f64,
    threads: usize,
) -> Result<AllPairsFar> {
    use crate::kernels::{kernels, pack_pw_f32, Act, EpiF32};
    let ap = prepare_all_pairs(embeddings, identity, far)?;
    let (n, dim, flat) = (ap.n, ap.dim, &ap.flat);
    let tiles: Vec<(usize, usize, crate::kernels::PackedF32)> = (0..n)
        .step_by(GEMM_TILE)
        .map(|c0| {
            let c1 = (c0 + GEMM_TILE).min(n);
            (c0, c1, pack_pw_f32(&flat[c0 * dim..c1 * dim], c1 - c0, dim))
        })
        .collect();
    let zeros = vec![0.0f32; GEMM_TILE];
    let epi = EpiF32 {
        bias: &zeros,
        act: Act::None,
    };
    let gemm = kernels().pw_f32;
    let next_panel = AtomicUsize::new(0);
    let panels = n.div_ceil(PANEL);
    let threads = threads.clamp(1, panels.max(1));
    let work = || {
        let mut p = Partial {
            heap: BinaryHeap::with_capacity(ap.keep + 1),
            keep: ap.keep,
            genuine: Vec::new(),
            impostors: 0,
        };
        let mut out = vec![0.0f32; PANEL * GEMM_TILE];
        loop {
            let panel = next_panel.fetch_add(1, Ordering::Relaxed);
            if panel >= panels {
                break;
            }
            let (r0, r1) = (panel * PANEL, ((panel + 1) * PANEL).min(n));
            let a = &flat[r0 * dim..r1 * dim];
            // tiles holding some column j > i for a row i of the panel
            for (c0, c1, b) in tiles.iter().filter(|t| t.1 > r0 + 1) {
                let w = c1 - c0;
                let out = &mut out[..(r1 - r0) * w];
                gemm(a, b, &epi, 0, r1 - r0, out);
                for i in r0..r1 {
                    let row = &out[(i - r0) * w..(i - r0 + 1) * w];
                    for j in (i + 1).max(*c0)..*c1 {
                        p.push(row[j - c0], identity[i] == identity[j]);
                    }
                }
            }
        }
        p
    };
    let parts = run_partials(threads, &work);
    finish_all_pairs(parts, far, &ap)
}

/// [`far_threshold_all_impostors`] on `threads` threads, one dot product per pair (the
/// reference of [`far_threshold_all_impostors_gemm`]). Only the top
/// `ceil(far * impostors) + 1` impostor scores are kept (a bounded min-heap per thread);
/// genuine scores are all kept (4 bytes each). Results do not depend on `threads`.
pub fn far_threshold_all_impostors_with_threads(
    embeddings: &[Vec<f32>],
    identity: &[u32],
    far: f64,
    threads: usize,
) -> Result<AllPairsFar> {
    let ap = prepare_all_pairs(embeddings, identity, far)?;
    let (n, dim, flat, keep) = (ap.n, ap.dim, &ap.flat, ap.keep);
    let row = |i: usize| &flat[i * dim..(i + 1) * dim];
    let next_panel = AtomicUsize::new(0);
    let panels = n.div_ceil(PANEL);
    let threads = threads.clamp(1, panels.max(1));
    let work = || {
        let mut p = Partial {
            heap: BinaryHeap::with_capacity(keep + 1),
            keep,
            genuine: Vec::new(),
            impostors: 0,
        };
        loop {
            let panel = next_panel.fetch_add(1, Ordering::Relaxed);
            if panel >= panels {
                break;
            }
            let (r0, r1) = (panel * PANEL, ((panel + 1) * PANEL).min(n));
            // columns j > i, tiled so that a tile stays in cache across the panel's rows
            for t0 in (r0..n).step_by(PANEL) {
                let t1 = (t0 + PANEL).min(n);
                let mut i = r0;
                while i < r1 {
                    if i + 4 <= r1 {
                        let a = [row(i), row(i + 1), row(i + 2), row(i + 3)];
                        for j in t0.max(i + 1)..t1 {
                            if j > i + 3 {
                                let s = dot4(a, row(j));
                                for (r, &sc) in s.iter().enumerate() {
                                    p.push(sc, identity[i + r] == identity[j]);
                                }
                            } else {
                                for r in 0..4 {
                                    if i + r < j {
                                        let sc = dot(a[r], row(j));
                                        p.push(sc, identity[i + r] == identity[j]);
                                    }
                                }
                            }
                        }
                        i += 4;
                    } else {
                        for j in t0.max(i + 1)..t1 {
                            p.push(dot(row(i), row(j)), identity[i] == identity[j]);
                        }
                        i += 1;
                    }
                }
            }
        }
        p
    };
    let parts = run_partials(threads, &work);
    finish_all_pairs(parts, far, &ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(score: f32, same: bool, fold: usize) -> ScoredPair {
        ScoredPair { score, same, fold }
    }

    #[test]
    fn lfw_pairs_toy_and_errors() {
        let text = "2\t1\nA 1 2\nA 1\tB\t4\nC 10 11\nC 1 D 1\n";
        let p = parse_lfw_pairs_str(text, Path::new("p.txt"), Path::new("/lfw")).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].a, PathBuf::from("/lfw/A/A_0001.jpg"));
        assert_eq!(p[0].b, PathBuf::from("/lfw/A/A_0002.jpg"));
        assert!(p[0].same && !p[1].same);
        assert_eq!(p[1].b, PathBuf::from("/lfw/B/B_0004.jpg"));
        assert_eq!(
            (p[2].fold, p[2].a.clone()),
            (1, PathBuf::from("/lfw/C/C_0010.jpg"))
        );
        let e = parse_lfw_pairs_str("2\t1\nA 1 2\nA 1 3\n", Path::new("p.txt"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.txt:3:"), "{e}");
        let e = parse_lfw_pairs_str("1\t1\nA 1 x\n", Path::new("p.txt"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.txt:2:") && e.contains("`x`"), "{e}");
    }

    #[test]
    fn label_pairs_toy() {
        let text = "# header\n1/a.jpg 1/b.jpg 1\n\n1/a.jpg 2/c.jpg 0 # trailing\n";
        let p = parse_label_pairs_str(text, Path::new("p.txt"), Path::new("/r")).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].b, PathBuf::from("/r/2/c.jpg"));
        assert!(p[0].same && !p[1].same && p[1].fold == 0);
        let e = parse_label_pairs_str("a b 2\n", Path::new("p.txt"), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.txt:1:"), "{e}");
    }

    fn shared() -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
        if p.is_dir() {
            return Some(p);
        }
        let p = PathBuf::from("/work/shared");
        p.is_dir().then_some(p)
    }

    #[test]
    fn real_pair_files() {
        let Some(s) = shared() else {
            eprintln!("SKIPPED: shared folder not found");
            return;
        };
        let lfw = s.join("data/faces/lfw");
        let p = parse_lfw_pairs(&lfw.join("pairs.txt"), &lfw).unwrap();
        assert_eq!(p.len(), 6000);
        assert_eq!(p.iter().filter(|p| p.same).count(), 3000);
        assert_eq!(p.last().unwrap().fold, 9);
        assert!(p.iter().all(|p| p.a.is_file() && p.b.is_file()));
        let c = parse_label_pairs(&s.join("data/faces/celeba_wild/pairs.txt")).unwrap();
        assert_eq!(c.len(), 1294);
        assert!(c.iter().all(|p| p.a.is_file() && p.b.is_file()));
    }

    #[test]
    fn best_threshold_toy() {
        // sorted: .1d .2d .3s .5d .8s .9s -> 5/6 at 0.25 and at 0.65; smallest wins
        let p = [
            sp(0.9, true, 0),
            sp(0.8, true, 0),
            sp(0.3, true, 0),
            sp(0.5, false, 0),
            sp(0.2, false, 0),
            sp(0.1, false, 0),
        ];
        let b = best_threshold_accuracy(&p).unwrap();
        assert!((b.accuracy - 5.0 / 6.0).abs() < 1e-12);
        assert!((b.threshold - 0.25).abs() < 1e-6, "{}", b.threshold);
        // separable -> 1.0; all same -> threshold below everything
        let b = best_threshold_accuracy(&[sp(0.9, true, 0), sp(0.1, false, 0)]).unwrap();
        assert_eq!(b.accuracy, 1.0);
        assert!((b.threshold - 0.5).abs() < 1e-6);
        let b = best_threshold_accuracy(&[sp(0.9, true, 0), sp(0.9, true, 0)]).unwrap();
        assert_eq!(b.accuracy, 1.0);
        assert!(b.threshold < 0.9);
        // equal scores with different labels cannot be split
        let b = best_threshold_accuracy(&[sp(0.5, true, 0), sp(0.5, false, 0)]).unwrap();
        assert_eq!(b.accuracy, 0.5);
    }

    #[test]
    fn kfold_toy() {
        // fold 0 tested at 0.375 (from .3d .45s .5d .7s): 1.0
        // fold 1 tested at 0.375 (from .2d .3d .45s .9s): .7s ok, .5d wrong -> 0.5
        // fold 2 tested at 0.6 (from .2d .5d .7s .9s): .45s wrong, .3d ok -> 0.5
        let p = [
            sp(0.9, true, 0),
            sp(0.2, false, 0),
            sp(0.7, true, 1),
            sp(0.5, false, 1),
            sp(0.45, true, 2),
            sp(0.3, false, 2),
        ];
        let r = kfold_accuracy(&p).unwrap();
        assert_eq!(r.fold_accuracy, vec![1.0, 0.5, 0.5]);
        assert!((r.mean_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.std_accuracy - (1.0f64 / 18.0).sqrt()).abs() < 1e-12);
        assert!(
            (r.mean_threshold - 0.45).abs() < 1e-6,
            "{}",
            r.mean_threshold
        );
        assert!(kfold_accuracy(&p[..2]).is_err()); // one fold
        assert!(kfold_accuracy(&[sp(0.1, true, 0), sp(0.2, true, 2)]).is_err()); // empty fold 1
        assert!(kfold_accuracy(&[sp(f32::NAN, true, 0), sp(0.2, true, 1)]).is_err());
    }

    #[test]
    fn tar_at_far_toy() {
        let mut p: Vec<ScoredPair> = (0..10).map(|i| sp(i as f32 / 10.0, false, 0)).collect();
        for s in [0.95, 0.85, 0.5, 0.05] {
            p.push(sp(s, true, 0));
        }
        let r = tar_at_far(&p, 0.1).unwrap(); // one impostor (0.9) may pass
        assert_eq!(r.threshold, next_up(0.8));
        assert_eq!((r.far, r.tar), (0.1, 0.5));
        let r = tar_at_far(&p, 0.25).unwrap(); // floor(2.5) = 2
        assert_eq!(r.threshold, next_up(0.7));
        assert_eq!((r.far, r.tar), (0.2, 0.5));
        let r = tar_at_far(&p, 0.0).unwrap();
        assert_eq!(r.threshold, next_up(0.9));
        assert_eq!((r.far, r.tar), (0.0, 0.25));
        let r = tar_at_far(&p, 1.0).unwrap();
        assert_eq!((r.threshold, r.far, r.tar), (0.0, 1.0, 1.0));
        // ties cannot be split: FAR 0.5 allows 2 of 4 but three share the top score
        let t = [
            sp(0.5, false, 0),
            sp(0.5, false, 0),
            sp(0.5, false, 0),
            sp(0.1, false, 0),
            sp(0.7, true, 0),
        ];
        let r = tar_at_far(&t, 0.5).unwrap();
        assert_eq!((r.threshold, r.far, r.tar), (next_up(0.5), 0.0, 1.0));
        assert!(tar_at_far(&p[..10], 0.1).is_err()); // no genuine pairs
        assert!(tar_at_far(&p, 1.5).is_err());
    }

    #[test]
    fn next_up_works() {
        assert!(next_up(0.8) > 0.8 && next_up(0.8) - 0.8 < 1e-7);
        assert!(next_up(-0.5) > -0.5 && next_up(-0.5) - -0.5 < 1e-7);
        assert!(next_up(0.0) > 0.0 && next_up(-0.0) > 0.0);
    }

    /// Clustered pseudo-random embeddings: `ids` identities of `per` photos each.
    fn clustered(ids: usize, per: usize, dim: usize) -> (Vec<Vec<f32>>, Vec<u32>) {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let (mut e, mut id) = (Vec::new(), Vec::new());
        for i in 0..ids {
            let base: Vec<f32> = (0..dim).map(|_| rnd()).collect();
            for _ in 0..per {
                e.push(base.iter().map(|b| b + 0.6 * rnd()).collect());
                id.push(i as u32);
            }
        }
        (e, id)
    }

    #[test]
    fn gemm_scan_matches_the_dot_product_scan() {
        // Sizes that are not multiples of the panel (64), the tile (256) or the SIMD width.
        let (e, id) = clustered(150, 4, 75);
        for far in [1e-3, 1e-2, 0.1] {
            let dot = far_threshold_all_impostors_with_threads(&e, &id, far, 1).unwrap();
            for threads in [1, 3] {
                let g = far_threshold_all_impostors_gemm(&e, &id, far, threads).unwrap();
                assert_eq!(g.impostor_count, dot.impostor_count);
                assert_eq!(g.genuine_count, dot.genuine_count);
                // Another summation order: the same scores to a few ulps.
                assert!(
                    (g.threshold - dot.threshold).abs() <= 1e-6,
                    "{g:?} vs {dot:?}"
                );
                assert_eq!(g.far, dot.far, "{g:?} vs {dot:?}");
                assert_eq!(g.frr, dot.frr, "{g:?} vs {dot:?}");
            }
        }
    }

    #[test]
    fn all_impostors_hand_case() {
        let h = std::f32::consts::FRAC_1_SQRT_2;
        // pairs: (0,1) impostor 0; (0,2) genuine h; (1,2) impostor h
        let e = vec![vec![2.0, 0.0], vec![0.0, 1.0], vec![h, h]];
        let id = [0, 1, 0];
        let r = far_threshold_all_impostors(&e, &id, 0.5).unwrap();
        assert_eq!((r.impostor_count, r.genuine_count), (2, 1));
        assert_eq!(r.threshold, next_up(0.0));
        assert_eq!((r.far, r.frr), (0.5, 0.0));
        let r = far_threshold_all_impostors(&e, &id, 0.0).unwrap();
        assert!(r.threshold > 0.7 && r.threshold < 0.7072);
        assert_eq!((r.far, r.frr), (0.0, 1.0));
        assert!(far_threshold_all_impostors(&e, &id[..2], 0.1).is_err());
        assert!(far_threshold_all_impostors(&e, &[0, 0, 0], 0.1).is_err());
        assert!(
            far_threshold_all_impostors(&[vec![0.0, 0.0], vec![1.0, 0.0]], &[0, 1], 0.1).is_err()
        );
    }

    /// Deterministic pseudo-random embeddings (xorshift), values in [-1, 1).
    fn random_set(n: usize, dim: usize, ids: u32) -> (Vec<Vec<f32>>, Vec<u32>) {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let e = (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect();
        let id = (0..n as u32).map(|i| (i * 7 + i / 3) % ids).collect();
        (e, id)
    }

    #[test]
    fn all_impostors_matches_brute_force() {
        let (e, id) = random_set(203, 37, 11);
        let norm: Vec<Vec<f32>> = e
            .iter()
            .map(|v| {
                let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                v.iter().map(|a| a / n).collect()
            })
            .collect();
        let mut pairs = Vec::new();
        for i in 0..e.len() {
            for j in i + 1..e.len() {
                pairs.push(sp(dot(&norm[i], &norm[j]), id[i] == id[j], 0));
            }
        }
        for far in [0.0, 1e-3, 1e-2, 0.1, 1.0] {
            let want = tar_at_far(&pairs, far).unwrap();
            for threads in [1, 2, 3] {
                let got = far_threshold_all_impostors_with_threads(&e, &id, far, threads).unwrap();
                assert_eq!(got.threshold, want.threshold, "far {far} threads {threads}");
                assert_eq!(got.far, want.far);
                assert!((got.frr - (1.0 - want.tar)).abs() < 1e-12);
                assert_eq!(got.impostor_count + got.genuine_count, pairs.len() as u64);
            }
        }
    }

    /// `cargo test --release -- --ignored --nocapture all_impostors_speed`
    #[test]
    #[ignore]
    fn all_impostors_speed() {
        let (e, id) = random_set(8600, 512, 1000);
        let t = std::time::Instant::now();
        let r = far_threshold_all_impostors(&e, &id, 1e-5).unwrap();
        eprintln!(
            "{} impostor + {} genuine pairs in {:.2?}: {r:?}",
            r.impostor_count,
            r.genuine_count,
            t.elapsed()
        );
    }
}
