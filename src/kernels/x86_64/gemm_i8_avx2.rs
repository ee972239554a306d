//! int8 GEMM for every AVX2 CPU: 6 rows × 8 channels (one packed panel).
//!
//! The packed groups are 8 channels × 4 k (see [`PackedI8`]). Both operands are
//! sign-extended to i16 and multiplied with `vpmaddwd` (`_mm256_madd_epi16`), which is exact
//! for every i8 input (|a·b + c·d| <= 2·128² < 2³¹) — unlike `vpmaddubsw`, which saturates to
//! i16. The pair sums land as (ch, k01),(ch, k23) lanes and are folded once per tile by
//! `hadd` + `permute4x64`, so accumulators equal the generic kernel's bit for bit.
//! Requantisation rounds half to even (`cvtps_epi32`); generic rounds half away from zero.

use core::arch::x86_64::*;

use super::epilogue::{store_acc, store_dequant8, store_requant};
use super::has_avx2_fma;
use crate::kernels::{EpiI8, PackedI8, RowsPtr, NR};

gemm_entries! {
    /// int8 GEMM with requantising epilogue, rows `[m0,m1)`; microkernel 6×8.
    avx2_pw_i8_6x8 / avx2_window_i8_6x8: i8, PackedI8, epi: &EpiI8 => i8;
    group 4, has_avx2_fma, "AVX2+FMA";
    |a, b, m0, m1, out| pw_i8_impl(a, b, m0, m1, |acc, orow, n0| {
        store_requant(acc, epi, out, orow, n0, b.n)
    })
}

gemm_entries! {
    /// int8 GEMM with the f32 epilogue `act((acc + bias) · mult)`, rows `[m0,m1)`.
    avx2_pw_i8_f32_6x8 / avx2_window_i8_f32_6x8: i8, PackedI8, epi: &EpiI8 => f32;
    group 4, has_avx2_fma, "AVX2+FMA";
    |a, b, m0, m1, out| pw_i8_impl(a, b, m0, m1, |acc, orow, n0| {
        store_dequant8(acc, epi, out, orow, n0, b.n)
    })
}

gemm_entries! {
    /// int8 GEMM, raw i32 accumulators, rows `[m0,m1)`.
    avx2_pw_i8_acc_6x8: i8, PackedI8 => i32;
    group 4, has_avx2_fma, "AVX2+FMA";
    |a, b, m0, m1, out| pw_i8_impl(a, b, m0, m1, |acc, orow, n0| store_acc(acc, out, orow, n0, b.n))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn pw_i8_impl(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m0: usize,
    m1: usize,
    mut store: impl FnMut(__m256i, usize, usize),
) {
    let panels = b.panels();
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(6);
        for p in 0..panels {
            macro_rules! t {
                ($mr:literal) => {{
                    // SAFETY: rows m..m+mr exist, panel p exists (checked by callers).
                    let acc = unsafe { tile_i8::<$mr>(a, b, m, p) };
                    for r in 0..$mr {
                        store(acc[r], m - m0 + r, p * NR);
                    }
                }};
            }
            match mr {
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

/// Accumulators of rows `m..m+MR` against panel `p`, channel order 0..8 per row.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_i8<const MR: usize>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m: usize,
    p: usize,
) -> [__m256i; MR] {
    let bp = b.data.as_ptr().add(p * b.groups() * NR * 4);
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    a.for_each_group::<MR>(m, |g, a4| {
        let b_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(g * 32) as *const __m128i));
        let b_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(g * 32 + 16) as *const __m128i));
        for (acc_r, &a4) in acc.iter_mut().zip(&a4) {
            let av = _mm256_broadcastq_epi64(_mm_cvtepi8_epi16(_mm_cvtsi32_si128(a4)));
            acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(av, b_lo));
            acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_madd_epi16(av, b_hi));
        }
    });
    let mut res = [_mm256_setzero_si256(); MR];
    for r in 0..MR {
        // lanes (c0p,c0q,c1p,c1q | c2p,c2q,c3p,c3q) and (c4..c7) -> (c0,c1,c4,c5 | c2,c3,c6,c7)
        res[r] = _mm256_permute4x64_epi64::<0xD8>(_mm256_hadd_epi32(acc[r][0], acc[r][1]));
    }
    res
}
