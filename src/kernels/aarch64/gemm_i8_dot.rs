//! int8 GEMM on the dot-product extension (`sdot`, ARMv8.2+: Pi 5, Orin), 8 rows × 8
//! channels, selected at run time by `is_aarch64_feature_detected!("dotprod")`, for the
//! plain and the window GEMM with the same three epilogues as the NEON GEMM.
//!
//! `sdot v.4s, w.16b, a.4b[lane]`: one instruction = 4 channels × 4 k, with the 4 activation
//! bytes picked by lane from a 16-byte load of A (4 groups). The binary is never built with
//! +dotprod: `sdot` lives only in `#[target_feature(enable = "dotprod")]` functions, as
//! inline asm ([`sdot_lane`]) because `vdotq_s32` is not stable Rust; the rest is intrinsics.

use core::arch::aarch64::*;
use core::arch::asm;

use super::epilogue::{store_tile, Sink};
use super::has_dotprod;
use super::windows::load_a4;
use crate::kernels::{EpiI8, PackedI8, RowsPtr, NR};

/// `acc += dot4(b, a.s[L])` per 32-bit lane — `sdot` by element.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_lane<const L: i32>(acc: int32x4_t, b: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only instruction; the dotprod feature is enabled on this function and
    // its callers only run after run-time detection.
    unsafe {
        asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[{l}]", inout(vreg) acc, in(vreg) b, in(vreg) a, l = const L, options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

gemm_entries! {
    /// int8 GEMM with the requantising epilogue on the dotprod extension (`sdot`), rows
    /// `[m0,m1)`; microkernel 8×8.
    neon_dot_pw_i8_8x8 / neon_dot_window_i8_8x8: i8, PackedI8, epi: &EpiI8 => i8;
    group 4, has_dotprod, "the dotprod extension";
    |a, b, m0, m1, out, const W| {
        pw_i8_dot_impl::<W>(a, b, m0, m1, Sink::I8(epi, out.as_mut_ptr()))
    }
}

gemm_entries! {
    /// [`neon_dot_pw_i8_8x8`] with the dequantising epilogue (f32 out, not rounded).
    neon_dot_pw_i8_f32_8x8 / neon_dot_window_i8_f32_8x8: i8, PackedI8, epi: &EpiI8 => f32;
    group 4, has_dotprod, "the dotprod extension";
    |a, b, m0, m1, out, const W| {
        pw_i8_dot_impl::<W>(a, b, m0, m1, Sink::F32(epi, out.as_mut_ptr()))
    }
}

gemm_entries! {
    /// [`neon_dot_pw_i8_8x8`] with raw i32 accumulators.
    neon_dot_pw_i8_acc_8x8: i8, PackedI8 => i32;
    group 4, has_dotprod, "the dotprod extension";
    |a, b, m0, m1, out, const W| {
        pw_i8_dot_impl::<W>(a, b, m0, m1, Sink::Acc(out.as_mut_ptr()))
    }
}

#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn pw_i8_dot_impl<const W: bool>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m0: usize,
    m1: usize,
    sink: Sink,
) {
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(8);
        for p in 0..b.panels() {
            macro_rules! t {
                ($mr:literal) => {{
                    let acc = tile_i8_dot::<$mr, W>(a, b, m, p);
                    store_tile::<$mr>(sink, &acc, m - m0, p * NR, b.n);
                }};
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

/// MR rows × 8 channels of panel `p` with `sdot` by lane: within each run of A, 4 groups per
/// step from one 16-byte load per row, then 2 (an 8-byte load: a run never reads past its own
/// end, since the last run of the last row may end the input), then 1; a plain matrix's
/// partial last group goes zero-padded.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn tile_i8_dot<const MR: usize, const W: bool>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m: usize,
    p: usize,
) -> [[int32x4_t; 2]; MR] {
    let rows: [*const i8; MR] = core::array::from_fn(|r| a.ptr.add((m + r) * a.row_stride));
    let bp = b.data.as_ptr().add(p * b.groups() * NR * 4);
    let mut acc = [[vdupq_n_s32(0); 2]; MR];
    macro_rules! step {
        ($g:expr, $l:literal, $av:expr) => {
            let b0 = vld1q_s8(bp.add(($g + $l) * 32));
            let b1 = vld1q_s8(bp.add(($g + $l) * 32 + 16));
            for r in 0..MR {
                acc[r][0] = sdot_lane::<$l>(acc[r][0], b0, $av[r]);
                acc[r][1] = sdot_lane::<$l>(acc[r][1], b1, $av[r]);
            }
        };
    }
    let (full, tail) = (a.seg_len / 4, a.seg_len % 4);
    debug_assert!(
        tail == 0 || a.segs == 1,
        "only a plain matrix ends in a partial group"
    );
    let mut g = 0;
    // `W`: a window of several runs; otherwise a plain matrix, one run, whose loop the
    // compiler then drops (keeping the plain GEMMs' inner loops as they were).
    let (segs, seg_stride) = if W { (a.segs, a.seg_stride) } else { (1, 0) };
    for j in 0..segs {
        let off = j * seg_stride;
        let mut i = 0;
        while i + 4 <= full {
            let av: [int8x16_t; MR] = core::array::from_fn(|r| vld1q_s8(rows[r].add(off + 4 * i)));
            step!(g, 0, av);
            step!(g, 1, av);
            step!(g, 2, av);
            step!(g, 3, av);
            g += 4;
            i += 4;
        }
        if i + 2 <= full {
            let av: [int8x16_t; MR] = core::array::from_fn(|r| {
                vcombine_s8(vld1_s8(rows[r].add(off + 4 * i)), vdup_n_s8(0))
            });
            step!(g, 0, av);
            step!(g, 1, av);
            g += 2;
            i += 2;
        }
        if i < full {
            let av: [int8x16_t; MR] = core::array::from_fn(|r| {
                vreinterpretq_s8_s32(vdupq_n_s32(
                    (rows[r].add(off + 4 * i) as *const i32).read_unaligned(),
                ))
            });
            step!(g, 0, av);
            g += 1;
        }
    }
    if tail > 0 {
        let av: [int8x16_t; MR] = core::array::from_fn(|r| {
            vreinterpretq_s8_s32(vdupq_n_s32(load_a4(rows[r], full, a.seg_len)))
        });
        step!(g, 0, av);
    }
    // A fresh array, not `acc` itself: returned directly, `acc` would live in the return slot
    // in memory and every `sdot` update would be stored there.
    core::array::from_fn(|r| acc[r])
}
