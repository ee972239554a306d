//! int8 calibration: from an f32 model and a list of calibration photos to an int8 model
//! file, with the figures that say how faithful it is.
//!
//! Why it is shaped so:
//! - The activation statistics come from the f32 fast engine with every value of the layer
//!   program kept, so one run per image sees every tensor; each value gets a histogram of
//!   |x| (2048 bins whose range doubles, merging bin pairs, when a larger value arrives), from
//!   which both calibration methods read their range: min-max (max |x|) and a percentile of
//!   |x| (clipping the rare outliers buys resolution for everything else).
//! - The detector sees the full photos letterboxed at 640×640; the recogniser sees the
//!   aligned 112×112 crop of the most central face of each photo, found by the f32 detector
//!   — exactly what each model sees at run time. The calibration photos mostly show one
//!   large face, which says little about the stride-8 level where crowds' small faces are
//!   found, so the detector also sees mosaics of them (2×2 and 4×4 photos to a 640×640
//!   image), made within the calibration part and within the held-back part separately.
//! - The list is split: the first 80 % calibrate, the last 20 % are held back and measure
//!   every method (final-output agreement and per-layer SQNR of the int8 engine against
//!   f32), so the choice between methods is made on images the statistics never saw.
//! - Values that only move or select int8 numbers (upsampling, max and average pooling)
//!   share their input's scale: the int8 engine then computes them with no requantisation.
//! - The measurement is the int8 engine itself (not a simulation of it): what is reported is
//!   what runs.
//! - Cross-layer equalisation ([`equalize`]) is a second variant of the f32 model: every
//!   method is measured on both, each variant's best goes through the float-layer search
//!   below, and the better final model is written (measured on MobileFaceNet: equalising
//!   helps all-int8, 0.989 → 0.992 mean cosine, but leaves less for float layers to win
//!   back, 0.9945 against 0.9953 — so the choice is made on the final model).
//! - Mixed precision: per-tensor int8 loses most where a layer's output has few values or
//!   very unequal channels (MobileFaceNet's 7×7 GDC and embedding, SCRFD's heads), and those
//!   layers are cheap. So after the range method is chosen, every convolution is tried
//!   alone in f32 on the held-back images, ranked by how much that alone helps, and then
//!   added greedily in that order while each addition still helps, within a budget of the
//!   network's multiply-accumulates ([`FLOAT_BUDGET`]) and [`MAX_FLOAT_LAYERS`] layers. The
//!   chosen layers are recorded in the model file (`float_layers`).
//! - Bias correction ([`bias`]): before the float-layer search, the mean shift that rounding
//!   adds to every output channel is measured on the calibration images (a subset of at most
//!   [`BIAS_IMAGES`]) and subtracted from the biases, layer by layer; it is kept only if the
//!   held-back images agree better with f32 afterwards. The float-layer trials reuse the
//!   measured fix.

pub mod bias;

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::align::norm_crop;
use crate::detect::{decode, nms, Face};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{InputNorm, ModelConfig, ModelFile, Precision, TensorData};
use crate::graph::{Act, Graph, Op, ValueId};
use crate::models::scrfd::LevelOutput;
use crate::models::LoadOptions;
use crate::pipeline::{most_central, Detector};
use crate::preprocess::{fill_nhwc, letterbox};

const BINS: usize = 2048;

/// Detector calibration input size.
pub const DET_SIZE: usize = 640;

/// Fraction of the calibration list used for statistics; the rest is held back.
pub const CALIB_FRACTION: f64 = 0.8;

/// A histogram of |x| over all elements seen.
#[derive(Debug, Clone)]
pub struct AbsHistogram {
    bins: Vec<u64>,
    /// Upper edge of the last bin.
    range: f32,
    max: f32,
    count: u64,
}

impl Default for AbsHistogram {
    fn default() -> Self {
        AbsHistogram {
            bins: vec![0; BINS],
            range: 0.0,
            max: 0.0,
            count: 0,
        }
    }
}

impl AbsHistogram {
    pub fn add(&mut self, xs: &[f32]) {
        let m = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
        if !m.is_finite() {
            return;
        }
        if m > self.range {
            if self.range == 0.0 {
                self.range = m;
            } else {
                while self.range < m {
                    for i in 0..BINS / 2 {
                        self.bins[i] = self.bins[2 * i] + self.bins[2 * i + 1];
                    }
                    self.bins[BINS / 2..].fill(0);
                    self.range *= 2.0;
                }
            }
        }
        self.max = self.max.max(m);
        self.count += xs.len() as u64;
        if self.range == 0.0 {
            self.bins[0] += xs.len() as u64;
            return;
        }
        let k = BINS as f32 / self.range;
        for x in xs {
            self.bins[((x.abs() * k) as usize).min(BINS - 1)] += 1;
        }
    }

    pub fn max(&self) -> f32 {
        self.max
    }

    /// The clipping range `t` (a bin edge) minimising the expected squared error of
    /// symmetric int8 quantisation with scale `t / 127`: rounding error `step² / 12` for
    /// values inside, `(|x| - t)²` for values clipped (bin centres stand for their values).
    pub fn mse_optimal(&self) -> f32 {
        if self.range == 0.0 || self.count == 0 {
            return self.max;
        }
        let w = self.range as f64 / BINS as f64;
        let mut best = (f64::INFINITY, self.max);
        for i in 0..BINS {
            let t = (i + 1) as f64 * w;
            let step = t / 127.0;
            let inside: u64 = self.bins[..=i].iter().sum();
            let mut err = inside as f64 * step * step / 12.0;
            for (j, &b) in self.bins.iter().enumerate().skip(i + 1) {
                if b > 0 {
                    let c = (j as f64 + 0.5) * w;
                    err += b as f64 * (c - t) * (c - t);
                }
            }
            if err < best.0 {
                best = (err, (t as f32).min(self.max));
            }
        }
        best.1
    }

    /// The smallest bin edge below which a fraction `p` of the values lie (at most max |x|).
    pub fn percentile(&self, p: f64) -> f32 {
        let target = (p * self.count as f64).ceil() as u64;
        let mut seen = 0;
        for (i, &b) in self.bins.iter().enumerate() {
            seen += b;
            if seen >= target {
                return ((i + 1) as f32 * self.range / BINS as f32).min(self.max);
            }
        }
        self.max
    }
}

/// How a value's range is read from its histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// max |x|: nothing is clipped.
    MinMax,
    /// The given fraction of |x| (e.g. 0.9999): rarer outliers are clipped.
    Percentile(f64),
    /// The range minimising the expected quantisation error (rounding + clipping).
    Mse,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::MinMax => f.write_str("minmax"),
            Method::Mse => f.write_str("mse"),
            Method::Percentile(p) => write!(f, "p{}", (p * 1e6).round() / 1e4),
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "minmax" => return Ok(Method::MinMax),
            "mse" => return Ok(Method::Mse),
            _ => {}
        }
        s.strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| *p > 50.0 && *p <= 100.0)
            .map(|p| Method::Percentile(p / 100.0))
            .ok_or_else(|| format!("unknown calibration method `{s}` (minmax, mse, or a percentile such as p99.99)"))
    }
}

/// Default share of the network's multiply-accumulates (at the calibration input size) that
/// may stay in f32 in a mixed-precision int8 model.
pub const FLOAT_BUDGET: f64 = 0.05;

/// At most this many convolutions stay in f32 (each boundary costs a conversion).
pub const MAX_FLOAT_LAYERS: usize = 8;

/// Bumped whenever calibration makes a different model from the same inputs (caches of
/// int8 models, e.g. the tests', key on it).
pub const RECIPE: u32 = 5;

/// At most this many calibration images (evenly spread over them, mosaics included) measure
/// the bias correction: a channel's mean over thousands of positions per image settles
/// long before, and every wave of the correction re-runs the int8 network on them.
pub const BIAS_IMAGES: usize = 64;

/// Rounds of [`equalize`] over all layer pairs (a chain converges in a few).
const CLE_ROUNDS: usize = 4;

/// Cross-layer equalisation (Nagel et al., "Data-Free Quantization Through Weight
/// Equalization and Bias Correction", ICCV 2019): for a convolution A whose output only a
/// convolution B reads, through an activation that commutes with positive scaling (none,
/// ReLU, PReLU), output channel `c` of A is divided by `s_c` and input channel `c` of B
/// multiplied by it, with `s_c = sqrt(r_A / r_B)` (the channel's weight ranges), leaving
/// both ranges at `sqrt(r_A r_B)`. The function is unchanged; what changes is that A's
/// output channels — which share one int8 scale per tensor — get comparable ranges, where
/// depthwise layers otherwise leave some channels a handful of int8 steps.
pub fn equalize(file: &ModelFile) -> Result<ModelFile> {
    let graph = file.config.graph();
    let n = graph.num_values();
    let mut readers = vec![Vec::new(); n];
    for (i, op) in graph.ops.iter().enumerate() {
        for v in op.inputs() {
            readers[v].push(i);
        }
    }
    let mut outputs = vec![false; n];
    match &file.config {
        ModelConfig::Scrfd(c) => {
            for l in &c.levels {
                outputs[l.score] = true;
                outputs[l.bbox] = true;
                if let Some(k) = l.kps {
                    outputs[k] = true;
                }
            }
        }
        ModelConfig::MobileFaceNet(c) => outputs[c.embedding] = true,
        ModelConfig::Liveness(c) => outputs[c.logits] = true,
    }
    let mut pairs = Vec::new();
    for (i, op) in graph.ops.iter().enumerate() {
        let Op::Conv { act, .. } = op else { continue };
        if !matches!(act, Act::None | Act::Relu | Act::PRelu) || outputs[i + 1] {
            continue;
        }
        if let [j] = readers[i + 1][..] {
            if let Op::Conv { groups, cin, .. } = &graph.ops[j] {
                if *groups == 1 || groups == cin {
                    pairs.push((i, j));
                }
            }
        }
    }
    let mut out = file.clone();
    for _ in 0..CLE_ROUNDS {
        for &(i, j) in &pairs {
            let (
                Op::Conv { name: a, cout, .. },
                Op::Conv {
                    name: b,
                    cout: bout,
                    cin: bin,
                    kernel,
                    groups,
                    ..
                },
            ) = (&graph.ops[i], &graph.ops[j])
            else {
                unreachable!("pairs of convolutions")
            };
            let mut wa = out.tensor_f32(&format!("{a}.weight"))?;
            let mut ba = out.tensor_f32(&format!("{a}.bias"))?;
            let mut wb = out.tensor_f32(&format!("{b}.weight"))?;
            let per_a = wa.len() / cout;
            let kk = kernel * kernel;
            let depthwise = *groups != 1;
            for c in 0..*cout {
                let r1 = wa[c * per_a..(c + 1) * per_a]
                    .iter()
                    .fold(0f32, |m, x| m.max(x.abs()));
                // B's weights that read channel c.
                let idx = |o: usize| {
                    if depthwise {
                        c * kk..(c + 1) * kk
                    } else {
                        (o * bin + c) * kk..(o * bin + c + 1) * kk
                    }
                };
                let outs = if depthwise { 1 } else { *bout };
                let r2 = (0..outs)
                    .flat_map(|o| wb[idx(o)].iter())
                    .fold(0f32, |m, x| m.max(x.abs()));
                if !(r1 > 0.0 && r2 > 0.0) {
                    continue;
                }
                let s = (r1 / r2).sqrt().clamp(1e-3, 1e3);
                wa[c * per_a..(c + 1) * per_a]
                    .iter_mut()
                    .for_each(|x| *x /= s);
                ba[c] /= s;
                for o in 0..outs {
                    wb[idx(o)].iter_mut().for_each(|x| *x *= s);
                }
            }
            let mut put = |name: String, v: Vec<f32>| {
                let shape = out.tensors[&name].shape.clone();
                out.tensors.insert(name, TensorData::f32(shape, v));
            };
            put(format!("{a}.weight"), wa);
            put(format!("{a}.bias"), ba);
            put(format!("{b}.weight"), wb);
        }
    }
    Ok(out)
}

/// Mosaics of `g × g` letterboxed detector inputs (each shrunk into its cell), one per
/// `g²` inputs (a last partial one too).
pub fn mosaics(inputs: &[RgbImage], g: u32) -> Vec<RgbImage> {
    let cell = DET_SIZE as u32 / g;
    inputs
        .chunks((g * g) as usize)
        .map(|chunk| {
            let mut m = RgbImage::new(DET_SIZE as u32, DET_SIZE as u32);
            for (i, img) in chunk.iter().enumerate() {
                let (x, y) = (i as u32 % g, i as u32 / g);
                let small = letterbox(img, cell, cell).0;
                image::imageops::replace(&mut m, &small, (x * cell) as i64, (y * cell) as i64);
            }
            m
        })
        .collect()
}

/// `inputs` followed by their 2×2 and 4×4 mosaics (for a detector).
fn with_mosaics(inputs: &[RgbImage]) -> Vec<RgbImage> {
    let mut v = inputs.to_vec();
    v.extend(mosaics(inputs, 2));
    v.extend(mosaics(inputs, 4));
    v
}

/// The methods compared by default.
pub const METHODS: [Method; 3] = [Method::MinMax, Method::Percentile(0.9999), Method::Mse];

/// Largest |x| of a normalised input pixel.
pub fn input_abs_max(norm: InputNorm) -> f32 {
    norm.mean.abs().max((255.0 - norm.mean).abs()) / norm.std
}

fn norm_of(file: &ModelFile) -> InputNorm {
    file.config.norm()
}

/// One scale per value: the input's from its normalised range, pass-through ops share their
/// input's, every other value from its histogram by `method`.
pub fn scales(graph: &Graph, hists: &[AbsHistogram], method: Method, input_max: f32) -> Vec<f32> {
    let mut s = vec![input_max / 127.0];
    for (i, op) in graph.ops.iter().enumerate() {
        let v = match op {
            Op::Upsample2x { input } | Op::MaxPool2x { input } | Op::AvgPool2x { input } => {
                s[*input]
            }
            _ => {
                let h = &hists[i + 1];
                let r = match method {
                    Method::MinMax => h.max(),
                    Method::Percentile(p) => h.percentile(p),
                    Method::Mse => h.mse_optimal(),
                };
                if r > 0.0 {
                    r / 127.0
                } else {
                    1.0 / 127.0
                }
            }
        };
        s.push(v);
    }
    s
}

/// The calibration list: image paths relative to the list's folder; blank lines and `#`
/// comments skipped.
pub fn read_list(list: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
    let dir = list.parent().unwrap_or(Path::new("."));
    let v: Vec<PathBuf> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| dir.join(l))
        .collect();
    if v.is_empty() {
        return Err(Error::Msg(format!("{}: no images listed", list.display())));
    }
    Ok(v)
}

/// The network inputs for `file`, as 8-bit images of the network's input size: letterboxed
/// photos for a detector; for a recogniser, the aligned crop of the most central face that
/// the f32 detector `det` finds; for a liveness model, its square crop around the largest
/// face (photos without a face are skipped and counted).
pub fn prepare_inputs(
    file: &ModelFile,
    images: &[PathBuf],
    det: Option<&Path>,
    threads: usize,
    tick: &mut dyn FnMut(),
) -> Result<(Vec<RgbImage>, usize)> {
    let mut out = Vec::with_capacity(images.len());
    let mut skipped = 0;
    match &file.config {
        ModelConfig::Scrfd(_) => {
            for p in images {
                let img = crate::image_io::load_rgb(p)?;
                out.push(letterbox(&img, DET_SIZE as u32, DET_SIZE as u32).0);
                tick();
            }
        }
        ModelConfig::MobileFaceNet(c) => {
            let detector = calibration_detector(det, "a recogniser", threads)?;
            for p in images {
                let img = crate::image_io::load_rgb(p)?;
                let faces = detector.detect(&img)?;
                match most_central(&faces, img.width(), img.height()).and_then(|f| f.kps) {
                    Some(kps) => out.push(norm_crop(&img, &kps, c.input_size as u32)),
                    None => skipped += 1,
                }
                tick();
            }
        }
        ModelConfig::Liveness(c) => {
            // The crop the liveness stage takes: around the largest face, as the unlock
            // loop picks it.
            let detector = calibration_detector(det, "a liveness model", threads)?;
            for p in images {
                let img = crate::image_io::load_rgb(p)?;
                let faces = detector.detect(&img)?;
                match crate::pipeline::largest(&faces) {
                    Some(f) => out.push(crate::liveness::crop(&img, f, c)),
                    None => skipped += 1,
                }
                tick();
            }
        }
    }
    Ok((out, skipped))
}

/// The f32 detector that finds the faces whose crops calibrate `what` (a recogniser or a
/// liveness model), at the calibration's letterbox size.
fn calibration_detector(det: Option<&Path>, what: &str, threads: usize) -> Result<Detector> {
    let det =
        det.ok_or_else(|| Error::Msg(format!("calibrating {what} needs a detector model")))?;
    Detector::load_with(
        det,
        Some((DET_SIZE as u32, DET_SIZE as u32)),
        &LoadOptions {
            precision: Some(Precision::F32),
            ..LoadOptions::fast(threads)
        },
    )
}

/// An engine keeping every value (for statistics and per-layer comparisons).
fn all_values_engine(file: &ModelFile, threads: usize) -> Result<Engine> {
    let n = file.config.graph().num_values();
    Engine::new(file, &(0..n).collect::<Vec<_>>(), threads)
}

fn run_on(e: &mut Engine, img: &RgbImage, norm: InputNorm) -> Result<()> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    fill_nhwc(img, norm, e.input_mut(h, w)?);
    e.run()
}

/// Histograms of |x| of every value of the f32 model over `inputs`.
pub fn collect(
    file: &ModelFile,
    inputs: &[RgbImage],
    threads: usize,
    tick: &mut dyn FnMut(),
) -> Result<Vec<AbsHistogram>> {
    let mut e = all_values_engine(file, threads)?;
    let norm = norm_of(file);
    let n = file.config.graph().num_values();
    let mut hists = vec![AbsHistogram::default(); n];
    for img in inputs {
        run_on(&mut e, img, norm)?;
        for (v, h) in hists.iter_mut().enumerate() {
            h.add(e.output(v)?.0);
        }
        tick();
    }
    Ok(hists)
}

/// Agreement of a detector's int8 outputs with f32 on held-back images.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetAgreement {
    /// f32 faces with score ≥ 0.6.
    pub faces: usize,
    /// Of those, found by int8 (IoU ≥ 0.5 with an int8 face at the default threshold).
    pub found: usize,
    pub mean_iou: f64,
    pub min_iou: f64,
    /// Mean and max |score difference| of matched faces.
    pub mean_score_diff: f64,
    pub max_score_diff: f64,
    /// Largest |score difference| over every anchor (after the sigmoid).
    pub max_anchor_score_diff: f64,
    /// Mean squared score difference over every anchor (after the sigmoid): unlike the
    /// matched faces, it also sees the small faces the held-back photos rarely show.
    pub anchor_score_mse: f64,
    /// SQNR (dB) of the box regressions of all levels together.
    pub bbox_sqnr_db: f64,
}

impl DetAgreement {
    pub fn recall(&self) -> f64 {
        if self.faces == 0 {
            1.0
        } else {
            self.found as f64 / self.faces as f64
        }
    }
}

/// Agreement of a recogniser's int8 embeddings with f32 (cosine similarity).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecAgreement {
    pub images: usize,
    pub mean_cos: f64,
    pub min_cos: f64,
}

/// Agreement of a liveness model's int8 live probability with f32 (what decides an unlock;
/// the logits' cosine barely moves when the decision flips).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveAgreement {
    pub images: usize,
    pub mean_abs_diff: f64,
    pub max_abs_diff: f64,
}

/// How faithful an int8 model is to its f32 original on some images.
#[derive(Debug, Clone, Default)]
pub struct Fidelity {
    pub live: Option<LiveAgreement>,
    /// SQNR (dB) of every value of the int8 engine against f32 (index = value id; the
    /// input's too), over all images.
    pub sqnr_db: Vec<f64>,
    pub det: Option<DetAgreement>,
    pub rec: Option<RecAgreement>,
}

impl Fidelity {
    /// One line: the final-output agreement.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(l) = &self.live {
            s += &format!(
                "live probability vs f32 over {} crops: |diff| mean {:.5}, max {:.5}",
                l.images, l.mean_abs_diff, l.max_abs_diff
            );
        }
        if let Some(r) = &self.rec {
            s += &format!(
                "embedding cosine vs f32 over {} crops: mean {:.5}, min {:.5}",
                r.images, r.mean_cos, r.min_cos
            );
        }
        if let Some(d) = &self.det {
            s += &format!(
                "faces (f32 score>=0.6) found {}/{} ({:.1} %), IoU mean {:.3} min {:.3}, |score diff| mean {:.4} max {:.4}, max anchor |score diff| {:.4}",
                d.found,
                d.faces,
                100.0 * d.recall(),
                d.mean_iou,
                d.min_iou,
                d.mean_score_diff,
                d.max_score_diff,
                d.max_anchor_score_diff
            );
        }
        s
    }

    /// Larger is better, for choosing float layers: the embedding's mean cosine (+ 0.1 ×
    /// min); for a detector, the anchor scores' and the boxes' fidelity over every anchor
    /// (−10·log10 of the scores' mean squared difference plus the boxes' SQNR, in dB), which
    /// tracks the small faces that decide WIDER AP where recall on the held-back photos'
    /// large faces has long saturated.
    pub fn selection_merit(&self) -> f64 {
        if let Some(d) = &self.det {
            return -10.0 * d.anchor_score_mse.max(1e-30).log10() + d.bbox_sqnr_db;
        }
        self.merit()
    }

    /// Larger is better: the embedding's mean cosine; the detector's recall, then mean IoU.
    pub fn merit(&self) -> f64 {
        if let Some(l) = &self.live {
            return 1.0 - l.mean_abs_diff - 0.1 * l.max_abs_diff;
        }
        if let Some(r) = &self.rec {
            return r.mean_cos + 0.1 * r.min_cos;
        }
        if let Some(d) = &self.det {
            return d.recall() + 0.1 * d.mean_iou - 0.1 * d.mean_score_diff;
        }
        0.0
    }
}

/// A detector's levels from an engine that kept its head values.
fn levels_of(e: &Engine, file: &ModelFile) -> Result<Vec<LevelOutput>> {
    let ModelConfig::Scrfd(c) = &file.config else {
        unreachable!("a detector")
    };
    let sigmoid = crate::kernels::kernels().sigmoid_f32;
    let mut out = Vec::new();
    for l in &c.levels {
        let (s, shape) = e.output(l.score)?;
        let mut scores = s.to_vec();
        sigmoid(&mut scores);
        out.push(LevelOutput {
            stride: l.stride,
            height: shape[0],
            width: shape[1],
            anchors: c.anchors_per_cell,
            scores,
            boxes: e.output(l.bbox)?.0.to_vec(),
            kps: l
                .kps
                .map(|k| e.output(k).map(|o| o.0.to_vec()))
                .transpose()?,
        });
    }
    Ok(out)
}

fn faces_of(levels: &[LevelOutput]) -> Vec<Face> {
    nms(
        decode(levels, crate::detect::DEFAULT_SCORE_THRESHOLD, 1.0),
        crate::detect::DEFAULT_NMS_IOU,
    )
}

/// Measures every int8 model in `quantised` against the f32 `file` on `inputs`.
pub fn evaluate(
    file: &ModelFile,
    quantised: &[&ModelFile],
    inputs: &[RgbImage],
    threads: usize,
    tick: &mut dyn FnMut(),
) -> Result<Vec<Fidelity>> {
    evaluate_with(file, quantised, inputs, true, threads, tick)
}

/// [`evaluate`], with the per-layer SQNR only if `per_layer` (without it, `sqnr_db` is
/// empty: the float-layer trials only need the outputs, and at 640×640 comparing every
/// value costs as much as running the models).
pub fn evaluate_with(
    file: &ModelFile,
    quantised: &[&ModelFile],
    inputs: &[RgbImage],
    per_layer: bool,
    threads: usize,
    tick: &mut dyn FnMut(),
) -> Result<Vec<Fidelity>> {
    let n = file.config.graph().num_values();
    let norm = norm_of(file);
    let mut reference = all_values_engine(file, threads)?;
    let mut engines = quantised
        .iter()
        .map(|q| all_values_engine(q, threads))
        .collect::<Result<Vec<_>>>()?;
    // Per engine: per value (signal energy, noise energy).
    let mut energy = vec![vec![(0f64, 0f64); n]; quantised.len()];
    let mut det = vec![DetAgreement::default(); quantised.len()];
    let mut iou_sum = vec![0f64; quantised.len()];
    let mut diff_sum = vec![0f64; quantised.len()];
    let mut cos = vec![Vec::new(); quantised.len()];
    // Per engine: (sum of squared anchor score differences, anchors), (box signal, noise).
    let mut anchors = vec![(0f64, 0u64); quantised.len()];
    let mut boxes = vec![(0f64, 0f64); quantised.len()];
    for img in inputs {
        run_on(&mut reference, img, norm)?;
        let ref_faces = match &file.config {
            ModelConfig::Scrfd(_) => Some(levels_of(&reference, file).map(|l| (faces_of(&l), l))?),
            ModelConfig::MobileFaceNet(_) | ModelConfig::Liveness(_) => None,
        };
        for (qi, e) in engines.iter_mut().enumerate() {
            run_on(e, img, norm)?;
            for (v, en) in energy[qi].iter_mut().enumerate().filter(|_| per_layer) {
                let (x, _) = reference.output(v)?;
                let (y, _) = e.output(v)?;
                let (s, d) = x.iter().zip(y).fold((0f64, 0f64), |(s, d), (&a, &b)| {
                    (s + (a as f64).powi(2), d + ((a - b) as f64).powi(2))
                });
                en.0 += s;
                en.1 += d;
            }
            match (&file.config, &ref_faces) {
                (ModelConfig::MobileFaceNet(c), _) => {
                    let (a, b) = (reference.output(c.embedding)?.0, e.output(c.embedding)?.0);
                    cos[qi].push(cosine(a, b));
                }
                (ModelConfig::Liveness(c), _) => {
                    let (a, b) = (reference.output(c.logits)?.0, e.output(c.logits)?.0);
                    let p = |z: &[f32]| crate::liveness::softmax(z)[0] as f64;
                    cos[qi].push((p(a) - p(b)).abs());
                }
                (ModelConfig::Scrfd(_), Some((rf, rl))) => {
                    let ql = levels_of(e, quantised[qi])?;
                    let d = &mut det[qi];
                    for (a, b) in rl.iter().zip(&ql) {
                        for (x, y) in a.scores.iter().zip(&b.scores) {
                            d.max_anchor_score_diff =
                                d.max_anchor_score_diff.max((x - y).abs() as f64);
                            anchors[qi].0 += ((x - y) as f64).powi(2);
                        }
                        anchors[qi].1 += a.scores.len() as u64;
                        for (x, y) in a.boxes.iter().zip(&b.boxes) {
                            boxes[qi].0 += (*x as f64).powi(2);
                            boxes[qi].1 += ((x - y) as f64).powi(2);
                        }
                    }
                    let qf = faces_of(&ql);
                    let mut used = vec![false; qf.len()];
                    for f in rf.iter().filter(|f| f.score >= 0.6) {
                        d.faces += 1;
                        let best = qf
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| !used[*j])
                            .map(|(j, g)| (j, crate::eval::iou(&f.bbox, &g.bbox)))
                            .max_by(|a, b| a.1.total_cmp(&b.1));
                        if let Some((j, iou)) = best.filter(|b| b.1 >= 0.5) {
                            used[j] = true;
                            let sd = (f.score - qf[j].score).abs() as f64;
                            if d.found == 0 {
                                d.min_iou = 1.0;
                            }
                            d.found += 1;
                            iou_sum[qi] += iou as f64;
                            d.min_iou = d.min_iou.min(iou as f64);
                            diff_sum[qi] += sd;
                            d.max_score_diff = d.max_score_diff.max(sd);
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
        tick();
    }
    Ok((0..quantised.len())
        .map(|qi| {
            let sqnr_db = energy[qi]
                .iter()
                .filter(|_| per_layer)
                .map(|&(s, d)| {
                    if d == 0.0 {
                        f64::INFINITY
                    } else {
                        10.0 * (s / d).log10()
                    }
                })
                .collect();
            let is_det = matches!(file.config, ModelConfig::Scrfd(_));
            let mut d = det[qi].clone();
            if d.found > 0 {
                d.mean_iou = iou_sum[qi] / d.found as f64;
                d.mean_score_diff = diff_sum[qi] / d.found as f64;
            }
            d.anchor_score_mse = anchors[qi].0 / anchors[qi].1.max(1) as f64;
            d.bbox_sqnr_db = if boxes[qi].1 == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (boxes[qi].0 / boxes[qi].1).log10()
            };
            let c = &cos[qi];
            if let ModelConfig::Liveness(_) = file.config {
                // `cos` holds the live probabilities' differences here.
                return Fidelity {
                    sqnr_db,
                    live: Some(LiveAgreement {
                        images: c.len(),
                        mean_abs_diff: c.iter().sum::<f64>() / c.len().max(1) as f64,
                        max_abs_diff: c.iter().cloned().fold(0.0, f64::max),
                    }),
                    ..Default::default()
                };
            }
            Fidelity {
                sqnr_db,
                live: None,
                det: is_det.then_some(d),
                rec: (!is_det).then(|| RecAgreement {
                    images: c.len(),
                    mean_cos: c.iter().sum::<f64>() / c.len().max(1) as f64,
                    min_cos: c.iter().cloned().fold(1.0, f64::min),
                }),
            }
        })
        .collect())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

/// What [`calibrate`] did.
pub struct Report {
    pub calibration_images: usize,
    pub held_back_images: usize,
    /// Photos without a face (recogniser only).
    pub skipped: usize,
    /// Every method tried (`cle+` in front: on the equalised model) with its held-back
    /// fidelity.
    pub methods: Vec<(String, Fidelity)>,
    /// Index into `methods` of the one whose scales are written.
    pub chosen: usize,
    /// The float-layer search: every convolution tried alone in f32 (name, its share of
    /// the network's multiply-accumulates, selection merit gain over all-int8), best first.
    pub float_trials: Vec<(String, f64, f64)>,
    /// The convolutions kept in f32 in the written model, in the order they were added.
    pub float_layers: Vec<String>,
    /// The written model's held-back fidelity (with its float layers).
    pub fidelity: Fidelity,
    /// Bias correction of each variant's best method, in the order tried.
    pub bias: Vec<BiasReport>,
    /// Whether the written model's biases are corrected.
    pub bias_corrected: bool,
}

/// What bias correction did to one int8 model (all-int8, before the float-layer search).
pub struct BiasReport {
    /// The method's label (as in [`Report::methods`]).
    pub label: String,
    /// Held-back fidelity without and with the correction.
    pub before: Fidelity,
    pub after: Fidelity,
    /// Whether the correction was kept (it agreed better with f32 on the held-back images).
    pub kept: bool,
    /// Largest correction of a channel relative to its layer's calibrated range.
    pub largest_relative: f64,
    /// Calibration images it was measured on.
    pub images: usize,
}

/// Progress events of [`calibrate`]: a stage name with its number of steps, then one tick
/// per step.
pub trait Progress {
    fn stage(&mut self, name: &str, steps: usize);
    fn tick(&mut self);
}

/// No progress output.
pub struct Quiet;
impl Progress for Quiet {
    fn stage(&mut self, _: &str, _: usize) {}
    fn tick(&mut self) {}
}

/// Calibrates the f32 `file` on the listed images (the first [`CALIB_FRACTION`] for the
/// statistics, the rest held back), measures each of `methods` on the held-back images and
/// returns the int8 model of the best one with the report; its most sensitive layers stay
/// in f32 within the default [`FLOAT_BUDGET`].
pub fn calibrate(
    file: &ModelFile,
    list: &Path,
    det: Option<&Path>,
    methods: &[Method],
    threads: usize,
    progress: &mut dyn Progress,
) -> Result<(ModelFile, Report)> {
    calibrate_with(file, list, det, methods, FLOAT_BUDGET, threads, progress)
}

/// Multiply-accumulates of every op for an `h × w` input (0 for ops other than convolutions).
pub fn op_macs(graph: &Graph, h: usize, w: usize) -> Vec<u64> {
    let mut hw = vec![(h, w)];
    let mut macs = Vec::with_capacity(graph.ops.len());
    for op in &graph.ops {
        let x = hw[op.inputs()[0]];
        let (y, m) = match op {
            Op::Conv {
                cin,
                cout,
                kernel,
                stride,
                pad,
                groups,
                ..
            } => {
                let o = |n: usize| (n + 2 * pad).saturating_sub(*kernel) / stride + 1;
                let y = (o(x.0), o(x.1));
                let m = (y.0 * y.1 * cout * kernel * kernel * (cin / groups)) as u64;
                (y, m)
            }
            Op::Add { .. } | Op::ChannelGate { .. } => (x, 0),
            Op::GlobalAvgPool { .. } => ((1, 1), 0),
            Op::Upsample2x { .. } => ((2 * x.0, 2 * x.1), 0),
            Op::MaxPool2x { .. } | Op::AvgPool2x { .. } => ((x.0 / 2, x.1 / 2), 0),
        };
        hw.push(y);
        macs.push(m);
    }
    macs
}

/// What calibrates an int8 model, as stamped into it (`SourceInfo::calibration`): the recipe,
/// the digests of the calibration list and of the detector that finds the faces for crop
/// models, the methods and the float budget. The same inputs give the same model, so a cache
/// of converted files that finds its stamp unchanged may reuse the file. (The list's images
/// are named, not hashed: a list is replaced, not edited in place.)
pub fn calibration_stamp(
    list: &Path,
    det: Option<&Path>,
    methods: &[Method],
    float_budget: f64,
) -> Result<String> {
    let digest = |p: &Path| -> Result<String> {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        Ok(crate::onnx::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            &bytes,
        )))
    };
    let methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
    Ok(format!(
        "recipe {RECIPE}; list sha256:{}; detector {}; methods {}; float budget {float_budget}",
        digest(list)?,
        match det {
            Some(d) => format!("sha256:{}", digest(d)?),
            None => "none".into(),
        },
        methods.join(",")
    ))
}

/// [`calibrate`] with a chosen float budget (share of multiply-accumulates that may stay in
/// f32; 0: all-int8).
pub fn calibrate_with(
    file: &ModelFile,
    list: &Path,
    det: Option<&Path>,
    methods: &[Method],
    float_budget: f64,
    threads: usize,
    progress: &mut dyn Progress,
) -> Result<(ModelFile, Report)> {
    if file.precision == Precision::Int8 {
        return Err(Error::Msg("the model is int8 already".into()));
    }
    let stamp = calibration_stamp(list, det, methods, float_budget)?;
    let file = &file.dequantize();
    let images = read_list(list)?;
    progress.stage("preparing inputs", images.len());
    let (inputs, skipped) = prepare_inputs(file, &images, det, threads, &mut || progress.tick())?;
    if inputs.len() < 2 {
        return Err(Error::Msg(format!(
            "{}: only {} usable calibration images",
            list.display(),
            inputs.len()
        )));
    }
    let n_cal =
        ((inputs.len() as f64 * CALIB_FRACTION).round() as usize).clamp(1, inputs.len() - 1);
    let (cal, held) = inputs.split_at(n_cal);
    let (cal, held) = match &file.config {
        ModelConfig::Scrfd(_) => (with_mosaics(cal), with_mosaics(held)),
        ModelConfig::MobileFaceNet(_) | ModelConfig::Liveness(_) => (cal.to_vec(), held.to_vec()),
    };
    let (cal, held) = (cal.as_slice(), held.as_slice());
    let input_max = input_abs_max(norm_of(file));
    let graph = file.config.graph();
    // Every method on the model as converted and on its equalised twin; each measured
    // against its own f32 model (the same function, but per-layer values differ by the
    // channel scales).
    let variants = [file.clone(), equalize(file)?];
    let mut labels = Vec::new();
    let mut fid = Vec::new();
    let mut candidates = Vec::new();
    for (vi, f32_model) in variants.iter().enumerate() {
        progress.stage("collecting ranges", cal.len());
        let hists = collect(f32_model, cal, threads, &mut || progress.tick())?;
        let all = methods
            .iter()
            .map(|&m| scales(graph, &hists, m, input_max))
            .collect::<Vec<_>>();
        let models = all
            .iter()
            .map(|s| f32_model.quantize_int8(s))
            .collect::<Result<Vec<_>>>()?;
        progress.stage("measuring on held-back images", held.len());
        fid.extend(evaluate(
            f32_model,
            &models.iter().collect::<Vec<_>>(),
            held,
            threads,
            &mut || progress.tick(),
        )?);
        for ((m, s), q) in methods.iter().zip(all).zip(models) {
            labels.push(if vi == 0 {
                m.to_string()
            } else {
                format!("cle+{m}")
            });
            candidates.push((vi, s, q));
        }
    }
    // Per variant (as converted, equalised), its best method by held-back merit goes
    // through the float-layer search; the better final model is written (equalisation
    // can help all-int8 yet leave less for the float layers to win back).
    let per_variant = methods.len();
    let bias_inputs = spread(cal, BIAS_IMAGES);
    let mut bias_reports = Vec::new();
    let mut best: Option<(usize, bool, Searched)> = None;
    for (vi, f32_model) in variants.iter().enumerate() {
        let range = vi * per_variant..(vi + 1) * per_variant;
        let Some(c) = range
            .clone()
            .max_by(|&a, &b| fid[a].merit().total_cmp(&fid[b].merit()))
        else {
            return Err(Error::Msg("no calibration method given".into()));
        };
        let (_, act_scales, model) = &candidates[c];
        progress.stage("bias correction", bias::steps(graph, bias_inputs.len()));
        let (corrected, fix) = bias::correct(f32_model, model, &bias_inputs, threads, &mut || {
            progress.tick()
        })?;
        progress.stage("measuring bias correction", held.len());
        let after = evaluate(f32_model, &[&corrected], held, threads, &mut || {
            progress.tick()
        })?
        .pop()
        .expect("one model");
        // Kept only where the held-back images say it helps.
        let kept = after.selection_merit() > fid[c].selection_merit();
        bias_reports.push(BiasReport {
            label: labels[c].clone(),
            before: fid[c].clone(),
            after: after.clone(),
            kept,
            largest_relative: fix.largest_relative(act_scales),
            images: bias_inputs.len(),
        });
        let (start, start_fid, fix) = match kept {
            true => (corrected, after, Some(fix)),
            false => (model.clone(), fid[c].clone(), None),
        };
        let found = float_search(
            f32_model,
            act_scales,
            fix.as_ref(),
            start,
            start_fid,
            held,
            float_budget,
            threads,
            progress,
        )?;
        if best
            .as_ref()
            .is_none_or(|b| found.1.selection_merit() > b.2 .1.selection_merit())
        {
            best = Some((c, kept, found));
        }
    }
    let (chosen, bias_corrected, (mut model, fidelity, float_trials, float_layers)) =
        best.expect("a variant");
    model.source.calibration = Some(stamp);
    Ok((
        model,
        Report {
            calibration_images: cal.len(),
            held_back_images: held.len(),
            skipped,
            methods: labels.into_iter().zip(fid).collect(),
            chosen,
            float_trials,
            float_layers,
            fidelity,
            bias: bias_reports,
            bias_corrected,
        },
    ))
}

/// At most `n` of `inputs`, evenly spread over them.
fn spread(inputs: &[RgbImage], n: usize) -> Vec<RgbImage> {
    if inputs.len() <= n {
        return inputs.to_vec();
    }
    (0..n)
        .map(|i| inputs[i * inputs.len() / n].clone())
        .collect()
}

/// Result of [`float_search`]: the model, its held-back fidelity, the single-layer trials
/// and the float layers kept.
type Searched = (ModelFile, Fidelity, Vec<(String, f64, f64)>, Vec<String>);

/// The float-layer search (see the module notes) on the int8 model `model` of the f32
/// `file` with activation scales `act_scales`, bias correction `fix` (if kept) and held-back
/// fidelity `fidelity`.
#[allow(clippy::too_many_arguments)]
fn float_search(
    file: &ModelFile,
    act_scales: &[f32],
    fix: Option<&bias::BiasFix>,
    mut model: ModelFile,
    mut fidelity: Fidelity,
    held: &[RgbImage],
    float_budget: f64,
    threads: usize,
    progress: &mut dyn Progress,
) -> Result<Searched> {
    let graph = file.config.graph();
    let mixed = |layers: &[String]| -> Result<ModelFile> {
        let m = file.quantize_int8_mixed(act_scales, layers)?;
        match fix {
            Some(f) => f.apply(&m),
            None => Ok(m),
        }
    };
    let mut float_trials = Vec::new();
    let mut float_layers: Vec<String> = Vec::new();
    if float_budget > 0.0 {
        let (h, w) = match &file.config {
            ModelConfig::Scrfd(_) => (DET_SIZE, DET_SIZE),
            ModelConfig::MobileFaceNet(c) => (c.input_size, c.input_size),
            ModelConfig::Liveness(c) => (c.input_size, c.input_size),
        };
        let macs = op_macs(graph, h, w);
        let total = macs.iter().sum::<u64>().max(1) as f64;
        let candidates: Vec<(String, f64)> = graph
            .ops
            .iter()
            .zip(&macs)
            .filter_map(|(op, &m)| match op {
                Op::Conv { name, .. } if m as f64 / total <= float_budget => {
                    Some((name.clone(), m as f64 / total))
                }
                _ => None,
            })
            .collect();
        let base = fidelity.selection_merit();
        progress.stage(
            &format!("{} layers alone in f32", candidates.len()),
            held.len() * candidates.len().div_ceil(TRIAL_BATCH),
        );
        for batch in candidates.chunks(TRIAL_BATCH) {
            let trial = batch
                .iter()
                .map(|(n, _)| mixed(std::slice::from_ref(n)))
                .collect::<Result<Vec<_>>>()?;
            let f = evaluate_with(
                file,
                &trial.iter().collect::<Vec<_>>(),
                held,
                false,
                threads,
                &mut || progress.tick(),
            )?;
            for ((n, share), f) in batch.iter().zip(f) {
                float_trials.push((n.clone(), *share, f.selection_merit() - base));
            }
        }
        float_trials.sort_by(|a, b| b.2.total_cmp(&a.2));
        let ranked: Vec<_> = float_trials
            .iter()
            .filter(|t| t.2 > 0.0)
            .take(2 * MAX_FLOAT_LAYERS)
            .cloned()
            .collect();
        progress.stage("adding float layers", held.len() * ranked.len());
        let (mut best, mut used) = (base, 0.0);
        for (n, share, _) in ranked {
            if float_layers.len() >= MAX_FLOAT_LAYERS || used + share > float_budget {
                continue;
            }
            let mut with = float_layers.clone();
            with.push(n.clone());
            let m = mixed(&with)?;
            let f = evaluate(file, &[&m], held, threads, &mut || progress.tick())?
                .pop()
                .expect("one model");
            // A layer stays in f32 only if it still helps next to the ones already there.
            if f.selection_merit() > best {
                best = f.selection_merit();
                used += share;
                float_layers = with;
                model = m;
                fidelity = f;
            }
        }
    }
    Ok((model, fidelity, float_trials, float_layers))
}

/// Single-layer float trials measured together (they share the f32 reference runs).
const TRIAL_BATCH: usize = 4;

/// Per-layer SQNR lines of the values computed by an op, worst first: `(value, op, dB)`.
pub fn sqnr_table(graph: &Graph, f: &Fidelity) -> Vec<(ValueId, String, f64)> {
    let mut rows: Vec<(ValueId, String, f64)> = graph
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let what = match op {
                Op::Conv { name, .. } => name.clone(),
                Op::Add { .. } => "add".into(),
                Op::Upsample2x { .. } => "upsample2x".into(),
                Op::MaxPool2x { .. } => "maxpool2x".into(),
                Op::AvgPool2x { .. } => "avgpool2x".into(),
                Op::GlobalAvgPool { .. } => "global_avgpool".into(),
                Op::ChannelGate { .. } => "channel_gate".into(),
            };
            (i + 1, what, f.sqnr_db[i + 1])
        })
        .collect();
    rows.sort_by(|a, b| a.2.total_cmp(&b.2));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_grows_and_reads_percentiles() {
        let mut h = AbsHistogram::default();
        h.add(&[0.5; 1000]);
        h.add(&(0..9000).map(|i| i as f32 / 9000.0).collect::<Vec<_>>());
        h.add(&[-40.0]); // one outlier, far beyond the first range
        assert_eq!(h.max(), 40.0);
        assert_eq!(h.count, 10_001);
        let p = h.percentile(0.999);
        assert!((0.9..=1.1).contains(&p), "p99.9 {p}");
        assert_eq!(h.percentile(1.0), 40.0);
    }

    #[test]
    fn methods_parse_and_print() {
        assert_eq!("minmax".parse::<Method>().unwrap(), Method::MinMax);
        let p: Method = "p99.99".parse().unwrap();
        assert_eq!(p.to_string(), "p99.99");
        assert!("p20".parse::<Method>().is_err());
    }
}
