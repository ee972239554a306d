//! Winograd F(4,3) on x86: the portable kernel ([`winograd::wino_f32_impl`]) compiled again
//! with AVX2/FMA and with AVX-512 enabled, so LLVM vectorises its transforms for the wider
//! registers; the 36 GEMMs are the table's f32 GEMM, passed in. No hand-written SIMD here:
//! the transforms are short fixed loops, which LLVM vectorises for the enabled width.

use super::{has_avx2_fma, has_avx512};
use crate::kernels::winograd::{self, PackedWino};
use crate::kernels::{ConvShape, EpiF32, PwF32Fn};

/// [`winograd::wino_f32`] with its transforms on 256-bit vectors.
#[allow(clippy::too_many_arguments)]
pub(super) fn avx2_wino_f32(
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
    assert!(has_avx2_fma(), "avx2_wino_f32_4x3 needs AVX2+FMA");
    // SAFETY: the features are present (asserted); the kernel checks its slices itself.
    unsafe { wino_avx2(gemm, input, s, w, epi, y0, y1, scratch, out) }
}

#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn wino_avx2(
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
    // blocks as the portable kernel's (not tuned to the GEMM's row tile here)
    winograd::wino_f32_impl::<1>(gemm, input, s, w, epi, y0, y1, scratch, out)
}

/// [`winograd::wino_f32`] with its transforms on 512-bit vectors.
#[allow(clippy::too_many_arguments)]
pub(super) fn avx512_wino_f32(
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
    assert!(has_avx512(), "avx512_wino_f32_4x3 needs AVX-512F/DQ");
    // SAFETY: the features are present (asserted); the kernel checks its slices itself.
    unsafe { wino_avx512(gemm, input, s, w, epi, y0, y1, scratch, out) }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512dq")]
#[allow(clippy::too_many_arguments)]
unsafe fn wino_avx512(
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
    // blocks as the portable kernel's (not tuned to the GEMM's row tile here)
    winograd::wino_f32_impl::<1>(gemm, input, s, w, epi, y0, y1, scratch, out)
}
