//! Winograd F(4,3) on NEON: the portable kernel ([`winograd::wino_f32_impl`]) with blocks of
//! tiles in whole row tiles of the 8×8 f32 GEMM (`gemm_f32.rs`) that computes its 36 GEMMs.
//! On ARMv8.0 it also computes the int8 3×3 convs (`Kernels::wino_for_i8`).

use crate::kernels::winograd::{self, PackedWino};
use crate::kernels::{ConvShape, EpiF32, PwF32Fn};

/// Rows of the f32 GEMM tile (`neon_pw_f32_8x8`).
const MR: usize = 8;

/// [`winograd::wino_f32`] with blocks of whole GEMM row tiles.
#[allow(clippy::too_many_arguments)]
pub(super) fn neon_wino_f32(
    gemm: PwF32Fn,
    input: &[f32],
    s: &ConvShape,
    w: &PackedWino,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    winograd::wino_f32_impl::<MR>(gemm, input, s, w, epi, y0, y1, scratch, out)
}
