//! facegate: face detection (SCRFD), face recognition (MobileFaceNet) and face unlock for
//! small Linux boards, on the candle crates with our own kernels.
//!
//! The data flows one way: camera → RGB frame → detector input → SCRFD → boxes and five
//! keypoints → alignment → MobileFaceNet → L2-normalised embedding → templates → liveness (the
//! anti-spoofing net on the recognised face, and the frozen-frame check) → policy → actuator.

/// `fn $name(args)`: calls `$body(args)`, an `#[inline(always)]` integer loop, compiled for
/// AVX2 when the CPU has it. The portable build targets baseline x86-64 (SSE2), which has no
/// 32-bit integer multiply or byte sign extension, so there such loops stay scalar; the
/// twin is the same source, so the results are identical (integer arithmetic). NEON is
/// aarch64's baseline already. Used by the squeeze-excitation ops and the resize.
macro_rules! avx2_twin {
    ($name:ident => $body:ident($($a:ident: $t:ty),*)) => {
        fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) {
                    $body($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is present (checked just above).
                    return unsafe { avx2($($a),*) };
                }
            }
            $body($($a),*)
        }
    };
}

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
