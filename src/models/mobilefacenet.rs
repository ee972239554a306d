//! MobileFaceNet face recogniser: "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
//! Verification on Mobile Devices" (Chen et al., 2018) — depthwise-separable bottlenecks and
//! a global depthwise (GDC) 7×7 head. Weights: the published ONNX exports
//! (`mobilefacenet_512` with PReLU, `mobilefacenet_128_relu6` with ReLU6), converted by
//! `quantize`. Input: an ArcFace-aligned 112×112 RGB crop; output: the embedding.

use std::path::Path;
use std::sync::Mutex;

use candle_core::Tensor;

use super::{LoadOptions, Runner};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{InputNorm, MobileFaceNetConfig, ModelConfig, ModelFile, Precision};

pub struct MobileFaceNet {
    config: MobileFaceNetConfig,
    precision: Precision,
    runner: Runner,
}

impl MobileFaceNet {
    /// Loads a converted recogniser file (or an ONNX file, converted on the fly) on the fast
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
            ModelConfig::MobileFaceNet(c) => Ok(MobileFaceNet {
                config: c.clone(),
                precision: file.precision,
                runner: Runner::new(file, path, &[c.embedding], opts)?,
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

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The fast engine running this model (`None` on the reference executor).
    pub fn engine(&self) -> Option<&Mutex<Engine>> {
        self.runner.engine()
    }

    fn check_size(&self, h: usize, w: usize) -> Result<()> {
        let s = self.config.input_size;
        if (h, w) != (s, s) {
            return Err(Error::Shape {
                what: "recogniser input".into(),
                expected: format!("{s}x{s}"),
                got: format!("{w}x{h}"),
            });
        }
        Ok(())
    }

    /// The raw (not normalised) embedding of a normalised `1×3×S×S` crop.
    pub fn forward(&self, input: &Tensor) -> Result<Vec<f32>> {
        let (_, _, h, w) = input.dims4()?;
        self.check_size(h, w)?;
        if let Runner::Reference(net) = &self.runner {
            let out = net.forward(input, &[self.config.embedding])?;
            return Ok(out[0].flatten_all()?.to_vec1::<f32>()?);
        }
        let mut out = Vec::new();
        self.runner
            .run_tensor(input, &[self.config.embedding], &mut |_, d, _| {
                out.extend_from_slice(d)
            })?;
        Ok(out)
    }

    /// The raw embedding of a crop that `fill` writes as normalised NHWC (`S × S × 3`), into
    /// `out` (cleared first). On the fast engine, once warm and with `out` holding the
    /// capacity, this allocates nothing.
    pub fn forward_nhwc(&self, fill: &mut dyn FnMut(&mut [f32]), out: &mut Vec<f32>) -> Result<()> {
        let s = self.config.input_size;
        out.clear();
        self.runner
            .run_nhwc(s, s, fill, &[self.config.embedding], &mut |_, d, _| {
                out.extend_from_slice(d)
            })
    }
}

/// Scales a vector to unit length (a zero vector stays zero).
pub fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}
