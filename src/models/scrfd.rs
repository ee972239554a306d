//! SCRFD face detector: "Sample and Computation Redistribution for Efficient Face Detection"
//! (Guo et al., ICLR 2022). Weights: InsightFace's published ONNX exports (`det_500m` from
//! the `buffalo_sc` pack, `det_2.5g`, and the fixed-size `scrfd_*_kps` exports), converted
//! by `quantize`. The network yields, per stride, a score, four box distances and (kps
//! variants) five keypoint offsets for each of `A` anchors at every cell; decoding lives in
//! `detect.rs`.

use std::path::Path;
use std::sync::Mutex;

use candle_core::Tensor;

use super::{LoadOptions, Runner};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{InputNorm, ModelConfig, ModelFile, Precision, ScrfdConfig};
use crate::graph::ValueId;

/// Raw head outputs of one level, laid out as the ONNX exports lay them out: rows ordered by
/// (cell y, cell x, anchor), so `scores[i]`, `boxes[4i..4i+4]`, `kps[10i..10i+10]` belong
/// to anchor row `i`. Boxes and keypoints are in units of the stride.
#[derive(Debug, Clone)]
pub struct LevelOutput {
    pub stride: usize,
    pub height: usize,
    pub width: usize,
    pub anchors: usize,
    pub scores: Vec<f32>,
    pub boxes: Vec<f32>,
    pub kps: Option<Vec<f32>>,
}

impl LevelOutput {
    /// The sizes decoding relies on (a score per anchor of every cell, four box and ten
    /// keypoint values per score): checked after each run so that `detect::decode` can
    /// index without panicking whatever the maps came out as.
    fn check(&self) -> Result<()> {
        let n = self.scores.len();
        let cells = self.height.checked_mul(self.width);
        let ok = self.anchors > 0
            && cells.and_then(|c| c.checked_mul(self.anchors)) == Some(n)
            && self.boxes.len() == 4 * n
            && self.kps.as_ref().is_none_or(|k| k.len() == 10 * n);
        if !ok {
            return Err(Error::Shape {
                what: format!("detector outputs at stride {}", self.stride),
                expected: format!(
                    "{}x{} cells x {} anchors with 1, 4 and 10 values each",
                    self.width, self.height, self.anchors
                ),
                got: format!(
                    "{} scores, {} box values, {:?} keypoint values",
                    n,
                    self.boxes.len(),
                    self.kps.as_ref().map(Vec::len)
                ),
            });
        }
        Ok(())
    }
}

pub struct Scrfd {
    config: ScrfdConfig,
    precision: Precision,
    /// The head values, per level: score, box, then keypoints if present.
    wanted: Vec<ValueId>,
    runner: Runner,
}

impl Scrfd {
    /// Loads a converted detector file (or an ONNX file, converted on the fly) on the fast
    /// engine with all cores.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Loads with a chosen executor, thread count and precision.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let file = opts.open(path)?;
        Self::from_file_with(&file, path, opts)
    }

    pub fn from_file(file: &ModelFile, path: &Path) -> Result<Self> {
        Self::from_file_with(file, path, &LoadOptions::default())
    }

    pub fn from_file_with(file: &ModelFile, path: &Path, opts: &LoadOptions) -> Result<Self> {
        match &file.config {
            ModelConfig::Scrfd(c) => {
                let mut wanted = Vec::new();
                for l in &c.levels {
                    wanted.push(l.score);
                    wanted.push(l.bbox);
                    wanted.extend(l.kps);
                }
                Ok(Scrfd {
                    config: c.clone(),
                    precision: file.precision,
                    runner: Runner::new(file, path, &wanted, opts)?,
                    wanted,
                })
            }
            other => Err(Error::Model {
                path: path.to_path_buf(),
                reason: format!(
                    "is a {} model, expected a SCRFD face detector",
                    other.family()
                ),
            }),
        }
    }

    pub fn norm(&self) -> InputNorm {
        self.config.norm
    }

    pub fn has_keypoints(&self) -> bool {
        self.config.levels.iter().all(|l| l.kps.is_some())
    }

    pub fn config(&self) -> &ScrfdConfig {
        &self.config
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The fast engine running this model (`None` on the reference executor).
    pub fn engine(&self) -> Option<&Mutex<Engine>> {
        self.runner.engine()
    }

    fn check_size(&self, h: usize, w: usize) -> Result<()> {
        let max_stride = self
            .config
            .levels
            .iter()
            .map(|l| l.stride)
            .max()
            .unwrap_or(32);
        if h == 0 || w == 0 || !h.is_multiple_of(max_stride) || !w.is_multiple_of(max_stride) {
            return Err(Error::Shape {
                what: "detector input".into(),
                expected: format!("height and width multiples of {max_stride}"),
                got: format!("{w}x{h}"),
            });
        }
        Ok(())
    }

    /// Runs the network on an `h × w` input that `fill` writes as normalised NHWC
    /// (`h × w × 3`), reusing the vectors of `out` (one [`LevelOutput`] per level, scores
    /// after the sigmoid). On the fast engine, once it has run at this size with `out`
    /// already holding the levels, this allocates nothing.
    pub fn forward_nhwc(
        &self,
        h: usize,
        w: usize,
        fill: &mut dyn FnMut(&mut [f32]),
        out: &mut Vec<LevelOutput>,
    ) -> Result<()> {
        self.check_size(h, w)?;
        let levels = &self.config.levels;
        if out.len() != levels.len() {
            out.clear();
            out.extend(levels.iter().map(|l| LevelOutput {
                stride: l.stride,
                height: 0,
                width: 0,
                anchors: self.config.anchors_per_cell,
                scores: Vec::new(),
                boxes: Vec::new(),
                kps: l.kps.map(|_| Vec::new()),
            }));
        }
        // Outputs arrive in `wanted` order: per level score, box, then keypoints.
        let mut level = 0;
        let mut part = 0;
        let mut sink = |_: usize, data: &[f32], shape: [usize; 3]| {
            let l = &mut out[level];
            let dst = match part {
                0 => {
                    l.height = shape[0];
                    l.width = shape[1];
                    &mut l.scores
                }
                1 => &mut l.boxes,
                _ => l.kps.as_mut().expect("kps output of a kps level"),
            };
            dst.clear();
            dst.extend_from_slice(data);
            part += 1;
            if part == 2 + usize::from(levels[level].kps.is_some()) {
                part = 0;
                level += 1;
            }
        };
        self.runner.run_nhwc(h, w, fill, &self.wanted, &mut sink)?;
        let sigmoid = crate::kernels::kernels().sigmoid_f32;
        for l in out.iter_mut() {
            l.check()?;
            sigmoid(&mut l.scores);
        }
        Ok(())
    }

    /// Runs the network on a normalised `1×3×H×W` tensor (H and W multiples of the largest
    /// stride) and returns the raw outputs of every level, scores after the sigmoid.
    pub fn forward(&self, input: &Tensor) -> Result<Vec<LevelOutput>> {
        let (_, _, h, w) = input.dims4()?;
        self.check_size(h, w)?;
        let net = match &self.runner {
            Runner::Reference(net) => net,
            Runner::Fast(_) => {
                let nhwc = input
                    .permute((0, 2, 3, 1))?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let mut out = Vec::new();
                self.forward_nhwc(h, w, &mut |dst| dst.copy_from_slice(&nhwc), &mut out)?;
                return Ok(out);
            }
        };
        let values = net.forward(input, &self.wanted)?;
        let mut it = values.into_iter();
        let a = self.config.anchors_per_cell;
        let mut out = Vec::new();
        for l in &self.config.levels {
            let score = it.next().expect("one tensor per wanted value");
            let bbox = it.next().expect("one tensor per wanted value");
            let kps = if l.kps.is_some() { it.next() } else { None };
            let (_, _, fh, fw) = score.dims4()?;
            let level = LevelOutput {
                stride: l.stride,
                height: fh,
                width: fw,
                anchors: a,
                scores: cells_last(&candle_nn_sigmoid(&score)?)?,
                boxes: cells_last(&bbox)?,
                kps: kps.map(|k| cells_last(&k)).transpose()?,
            };
            level.check()?;
            out.push(level);
        }
        Ok(out)
    }
}

fn candle_nn_sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    // 1 / (1 + e^-x), written out so the crate needs no candle-nn.
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// `1×C×H×W` → values ordered (y, x, c): the layout the exported models emit.
fn cells_last(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?)
}
