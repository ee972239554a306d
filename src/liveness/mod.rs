//! Presentation-attack detection: is the face in front of the camera alive, or a photo or a
//! screen held up to it? A passive anti-spoofing classifier (MiniFASNetV2-SE trained on
//! CelebA-Spoof, the published `antispoof_*_1.5_128` models) scores a square crop around
//! the detector's box; class 0 is a live face, the others the attack types.
//!
//! The crop (`crop`) and the softmax follow the publishers' steps exactly, so the scores
//! equal onnxruntime's on the same box. This module only scores faces; how scores decide an
//! unlock is the unlock loop's business.

pub mod crop;
pub mod eval;

use std::path::Path;
use std::sync::Mutex;

use image::RgbImage;

use crate::detect::Face;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{LivenessConfig, ModelConfig, ModelFile, Precision};
use crate::models::{LoadOptions, Runner};

/// Live score of a decision when the boards do not say otherwise.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

/// The scores of one face.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveScore {
    /// Probability of class 0 (a live face).
    pub live: f32,
    /// Softmax over the classes, in the order of [`Liveness::class_names`].
    pub probs: Vec<f32>,
}

impl LiveScore {
    /// The most probable class (0: live).
    pub fn class(&self) -> usize {
        self.probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    }
}

/// An anti-spoofing model ready to score faces.
pub struct Liveness {
    config: LivenessConfig,
    precision: Precision,
    runner: Runner,
    /// The logits of the last run (kept to avoid an allocation per face).
    logits: Mutex<Vec<f32>>,
}

impl Liveness {
    /// Loads a converted liveness model (or an ONNX file, converted on the fly).
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Liveness> {
        let file = opts.open(path)?;
        Self::from_file_with(&file, path, opts)
    }

    pub fn from_file_with(file: &ModelFile, path: &Path, opts: &LoadOptions) -> Result<Liveness> {
        let bad = |reason: String| Error::Model {
            path: path.to_path_buf(),
            reason,
        };
        let ModelConfig::Liveness(c) = &file.config else {
            return Err(bad(format!(
                "is a {} model, expected an anti-spoofing (liveness) classifier",
                file.config.family()
            )));
        };
        check_config(&file.config, c).map_err(bad)?;
        Ok(Liveness {
            config: c.clone(),
            precision: file.precision,
            runner: Runner::new(file, path, &[c.logits], opts)?,
            logits: Mutex::new(Vec::with_capacity(c.classes.len())),
        })
    }

    /// Names of the classes, class 0 (`live`) first: e.g. `["live", "print", "replay"]`.
    pub fn class_names(&self) -> &[String] {
        &self.config.classes
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Side of the square network input.
    pub fn input_size(&self) -> usize {
        self.config.input_size
    }

    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// The fast engine running this model (`None` on the reference executor).
    pub fn engine(&self) -> Option<&Mutex<Engine>> {
        self.runner.engine()
    }

    /// The network input crop of `face` in `img`.
    pub fn crop(&self, img: &RgbImage, face: &Face) -> RgbImage {
        crop(img, face, &self.config)
    }

    /// Scores the face `face` (detector box) of `img`.
    pub fn score(&self, img: &RgbImage, face: &Face) -> Result<LiveScore> {
        self.score_box(img, face.bbox)
    }

    /// Scores the face inside the box `bbox` (`[x1, y1, x2, y2]`) of `img`. A box that is
    /// not finite, empty or far outside the frame is an error (never a score).
    pub fn score_box(&self, img: &RgbImage, bbox: [f32; 4]) -> Result<LiveScore> {
        let (w, h) = (img.width() as f32, img.height() as f32);
        let inside = bbox.iter().all(|v| v.is_finite())
            && bbox[2] > bbox[0]
            && bbox[3] > bbox[1]
            && bbox[0] >= -w
            && bbox[1] >= -h
            && bbox[2] <= 2.0 * w
            && bbox[3] <= 2.0 * h;
        if !inside {
            return Err(Error::Msg(format!(
                "face box {bbox:?} is not a box inside the {w}x{h} frame"
            )));
        }
        let (s, scale, norm) = (
            self.config.input_size,
            self.config.crop_scale,
            self.config.norm,
        );
        // The crop goes straight into the engine's input, row by row (no padded square, no
        // crop image).
        self.score_input(&mut |dst| {
            crop::crop_rows(img, bbox, scale, s as u32, |dy, row| {
                let d = &mut dst[dy * row.len()..(dy + 1) * row.len()];
                for (d, &v) in d.iter_mut().zip(row) {
                    *d = (v as f32 - norm.mean) / norm.std;
                }
            })
        })
    }

    /// Runs the network on the input `fill` writes (`input_size` square, NHWC, normalised)
    /// and takes the softmax; a broken score is an error, never a live face.
    fn score_input(&self, fill: &mut dyn FnMut(&mut [f32])) -> Result<LiveScore> {
        let s = self.config.input_size;
        let mut logits = self.logits.lock().unwrap_or_else(|p| p.into_inner());
        logits.clear();
        self.runner
            .run_nhwc(s, s, fill, &[self.config.logits], &mut |_, d, _| {
                logits.extend_from_slice(d)
            })?;
        let probs = softmax(&logits);
        if probs.len() != self.config.classes.len() || probs.iter().any(|p| !p.is_finite()) {
            // Fail closed: a broken score must never read as live.
            return Err(Error::Msg(format!(
                "liveness model gave {} scores ({:?}) for {} classes",
                probs.len(),
                probs,
                self.config.classes.len()
            )));
        }
        Ok(LiveScore {
            live: probs[0],
            probs,
        })
    }
}

/// The liveness crop of `face` for a model of config `c`.
pub fn crop(img: &RgbImage, face: &Face, c: &LivenessConfig) -> RgbImage {
    crop::crop_face(img, face, c.crop_scale, c.input_size as u32)
}

/// Softmax in f64 (as the reference computes it), returned as f32.
pub fn softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let e: Vec<f64> = z.iter().map(|&x| (x as f64 - m).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|&x| (x / sum) as f32).collect()
}

/// What a liveness file's metadata must hold before anything runs on it: the limits every
/// model file passes ([`crate::limits::check_config`]: sizes, indices, logits a 1×1 map of one
/// channel per class), and class 0 named `live`, which every score here takes for granted.
fn check_config(config: &ModelConfig, c: &LivenessConfig) -> std::result::Result<(), String> {
    crate::limits::check_config(config)?;
    if c.classes[0] != "live" {
        return Err(format!("class 0 is `{}`, expected `live`", c.classes[0]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_by_hand() {
        // ln 1, ln 3: probabilities 1/4 and 3/4, whatever the shift.
        let p = softmax(&[100.0, 100.0 + 3f32.ln()]);
        assert!(
            (p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6,
            "{p:?}"
        );
    }
}
