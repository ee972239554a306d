//! SCRFD face detector: "Sample and Computation Redistribution for Efficient Face Detection"
//! (Guo et al., ICLR 2022). Weights: InsightFace's published ONNX exports (`det_500m` from
//! the `buffalo_sc` pack, `det_2.5g`, and the fixed-size `scrfd_*_kps` exports), converted
//! by `quantize`. The network yields, per stride, a score, four box distances and (kps
//! variants) five keypoint offsets for each of `A` anchors at every cell; decoding lives in
//! `detect.rs`.

use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::format::{InputNorm, ModelConfig, ModelFile, ScrfdConfig};
use crate::nn::Network;

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

pub struct Scrfd {
    config: ScrfdConfig,
    net: Network,
}

impl Scrfd {
    /// Loads a converted detector file (or an ONNX file, converted on the fly).
    pub fn load(path: &Path) -> Result<Self> {
        let file = crate::models::open(path)?;
        Self::from_file(&file, path)
    }

    pub fn from_file(file: &ModelFile, path: &Path) -> Result<Self> {
        match &file.config {
            ModelConfig::Scrfd(c) => Ok(Scrfd {
                config: c.clone(),
                net: Network::new(file)?,
            }),
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

    /// Runs the network on a normalised `1×3×H×W` tensor (H and W multiples of the largest
    /// stride) and returns the raw outputs of every level, scores after the sigmoid.
    pub fn forward(&self, input: &Tensor) -> Result<Vec<LevelOutput>> {
        let (_, _, h, w) = input.dims4()?;
        let max_stride = self
            .config
            .levels
            .iter()
            .map(|l| l.stride)
            .max()
            .unwrap_or(32);
        if h == 0 || w == 0 || h % max_stride != 0 || w % max_stride != 0 {
            return Err(Error::Shape {
                what: "detector input".into(),
                expected: format!("height and width multiples of {max_stride}"),
                got: format!("{w}x{h}"),
            });
        }
        let mut wanted = Vec::new();
        for l in &self.config.levels {
            wanted.push(l.score);
            wanted.push(l.bbox);
            if let Some(k) = l.kps {
                wanted.push(k);
            }
        }
        let values = self.net.forward(input, &wanted)?;
        let mut it = values.into_iter();
        let a = self.config.anchors_per_cell;
        let mut out = Vec::new();
        for l in &self.config.levels {
            let score = it.next().expect("one tensor per wanted value");
            let bbox = it.next().expect("one tensor per wanted value");
            let kps = if l.kps.is_some() { it.next() } else { None };
            let (_, _, fh, fw) = score.dims4()?;
            out.push(LevelOutput {
                stride: l.stride,
                height: fh,
                width: fw,
                anchors: a,
                scores: cells_last(&candle_nn_sigmoid(&score)?)?,
                boxes: cells_last(&bbox)?,
                kps: kps.map(|k| cells_last(&k)).transpose()?,
            });
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
