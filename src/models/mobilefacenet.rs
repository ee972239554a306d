//! MobileFaceNet face recogniser: "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
//! Verification on Mobile Devices" (Chen et al., 2018) — depthwise-separable bottlenecks and
//! a global depthwise (GDC) 7×7 head. Weights: the published ONNX exports
//! (`mobilefacenet_512` with PReLU, `mobilefacenet_128_relu6` with ReLU6), converted by
//! `quantize`. Input: an ArcFace-aligned 112×112 RGB crop; output: the embedding.

use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::format::{InputNorm, MobileFaceNetConfig, ModelConfig, ModelFile};
use crate::nn::Network;

pub struct MobileFaceNet {
    config: MobileFaceNetConfig,
    net: Network,
}

impl MobileFaceNet {
    /// Loads a converted recogniser file (or an ONNX file, converted on the fly).
    pub fn load(path: &Path) -> Result<Self> {
        let file = crate::models::open(path)?;
        Self::from_file(&file, path)
    }

    pub fn from_file(file: &ModelFile, path: &Path) -> Result<Self> {
        match &file.config {
            ModelConfig::MobileFaceNet(c) => Ok(MobileFaceNet {
                config: c.clone(),
                net: Network::new(file)?,
            }),
            other => Err(Error::Model {
                path: path.to_path_buf(),
                reason: format!(
                    "is a {} model, expected a MobileFaceNet face recogniser",
                    other.family()
                ),
            }),
        }
    }

    pub fn norm(&self) -> InputNorm {
        self.config.norm
    }

    pub fn input_size(&self) -> usize {
        self.config.input_size
    }

    pub fn dim(&self) -> usize {
        self.config.dim
    }

    pub fn match_threshold(&self) -> Option<f32> {
        self.config.match_threshold
    }

    /// The raw (not normalised) embedding of a normalised `1×3×S×S` crop.
    pub fn forward(&self, input: &Tensor) -> Result<Vec<f32>> {
        let (_, _, h, w) = input.dims4()?;
        let s = self.config.input_size;
        if (h, w) != (s, s) {
            return Err(Error::Shape {
                what: "recogniser input".into(),
                expected: format!("{s}x{s}"),
                got: format!("{w}x{h}"),
            });
        }
        let out = self.net.forward(input, &[self.config.embedding])?;
        Ok(out[0].flatten_all()?.to_vec1::<f32>()?)
    }
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}
