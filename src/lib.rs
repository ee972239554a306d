//! facegate: face detection (SCRFD), face recognition (MobileFaceNet) and face unlock for
//! small Linux boards, on the candle crates with our own kernels.
//!
//! The data flows one way: camera → RGB frame → detector input → SCRFD → boxes and five
//! keypoints → alignment → MobileFaceNet → L2-normalised embedding → templates → liveness (the
//! anti-spoofing net on the recognised face, and the frozen-frame check) → policy → actuator.

pub mod align;
pub mod board;
pub mod camera;
pub mod cli;
pub mod detect;
pub mod draw;
pub mod engine;
pub mod error;
pub mod eval;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod format;
pub mod graph;
pub mod image_io;
pub mod image_limits;
pub mod kernels;
pub mod limits;
pub mod liveness;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod onnx_proto;
pub mod pipeline;
pub mod preprocess;
pub mod quant;
pub mod signals;
pub mod unlock;

pub use detect::Face;
pub use error::{Error, Result};
pub use pipeline::{Detector, Embedder, Pipeline};
