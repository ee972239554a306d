//! f32 GEMM on NEON: 8 rows × 8 channels (one packed panel), 16 accumulators, `fmla` by
//! lane; the same tile for the plain GEMM and the window GEMM (A read in place through
//! [`RowsPtr`]), with the bias + activation epilogue of `epilogue.rs`. Intrinsics, with the
//! accumulation ([`acc_f32`]) kept apart from the epilogue so LLVM keeps the accumulators in
//! registers.

use core::arch::aarch64::*;

use super::epilogue::store_epi_f32;
use super::has_neon;
use crate::kernels::{EpiF32, PackedF32, RowsPtr, NR};

gemm_entries! {
    /// f32 GEMM + bias + activation, rows `[m0,m1)`; microkernel 8×8.
    neon_pw_f32_8x8 / neon_window_f32_8x8: f32, PackedF32, epi: &EpiF32 => f32;
    group 1, has_neon, "NEON";
    |a, b, m0, m1, out, const W| pw_f32_impl::<W>(a, b, epi, m0, m1, out)
}

#[target_feature(enable = "neon")]
unsafe fn pw_f32_impl<const W: bool>(
    a: RowsPtr<f32>,
    b: &PackedF32,
    epi: &EpiF32,
    m0: usize,
    m1: usize,
    out: &mut [f32],
) {
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(8);
        for p in 0..b.panels() {
            macro_rules! t {
                ($mr:literal) => {
                    tile_f32::<$mr, W>(a, b, epi, m, m - m0, p, out)
                };
            }
            match mr {
                8 => t!(8),
                7 => t!(7),
                6 => t!(6),
                5 => t!(5),
                4 => t!(4),
                3 => t!(3),
                2 => t!(2),
                _ => t!(1),
            }
        }
        m += mr;
    }
}

/// Rows `m..m+MR` × the 8 channels of panel `p`, epilogue included.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32<const MR: usize, const W: bool>(
    a: RowsPtr<f32>,
    b: &PackedF32,
    epi: &EpiF32,
    m: usize,
    orow: usize,
    p: usize,
    out: &mut [f32],
) {
    let acc = acc_f32::<MR, W>(a, b, m, p);
    for (r, acc) in acc.into_iter().enumerate() {
        store_epi_f32(
            acc,
            out.as_mut_ptr().add((orow + r) * b.n),
            p * NR,
            b.n,
            epi,
        );
    }
}

/// The accumulators of [`tile_f32`]: each run of A goes 4 elements at a time (`fmla` by
/// lane), then one by one. Returned by value, apart from the epilogue: with the epilogue's
/// loop over rows in the same function, LLVM kept `acc` in memory too and stored all 16
/// accumulators back after every `fmla` step (8 `stp` per 16 `fmla`).
#[inline(always)]
unsafe fn acc_f32<const MR: usize, const W: bool>(
    a: RowsPtr<f32>,
    b: &PackedF32,
    m: usize,
    p: usize,
) -> [[float32x4_t; 2]; MR] {
    let k = b.k;
    let rows: [*const f32; MR] = core::array::from_fn(|r| a.ptr.add((m + r) * a.row_stride));
    let bp = b.data.as_ptr().add(p * k * NR);
    let mut acc = [[vdupq_n_f32(0.0); 2]; MR];
    let mut kk = 0;
    // `W`: a window of several runs; otherwise a plain matrix, one run, whose loop the
    // compiler then drops (keeping the plain GEMMs' inner loops as they were).
    let (segs, seg_stride) = if W { (a.segs, a.seg_stride) } else { (1, 0) };
    for j in 0..segs {
        let off = j * seg_stride;
        let mut i = 0;
        while i + 4 <= a.seg_len {
            let mut av = [vdupq_n_f32(0.0); MR];
            for r in 0..MR {
                av[r] = vld1q_f32(rows[r].add(off + i));
            }
            macro_rules! step {
                ($l:literal) => {
                    let b0 = vld1q_f32(bp.add((kk + $l) * NR));
                    let b1 = vld1q_f32(bp.add((kk + $l) * NR + 4));
                    for r in 0..MR {
                        acc[r][0] = vfmaq_laneq_f32::<$l>(acc[r][0], b0, av[r]);
                        acc[r][1] = vfmaq_laneq_f32::<$l>(acc[r][1], b1, av[r]);
                    }
                };
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            kk += 4;
            i += 4;
        }
        while i < a.seg_len {
            let b0 = vld1q_f32(bp.add(kk * NR));
            let b1 = vld1q_f32(bp.add(kk * NR + 4));
            for r in 0..MR {
                let x = *rows[r].add(off + i);
                acc[r][0] = vfmaq_n_f32(acc[r][0], b0, x);
                acc[r][1] = vfmaq_n_f32(acc[r][1], b1, x);
            }
            kk += 1;
            i += 1;
        }
    }
    acc
}
