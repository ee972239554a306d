//! int8 GEMM on AVX-VNNI (`vpdpbusd` on 256-bit registers), for CPUs that have it but not
//! AVX-512 VNNI, which [`super::dot_pw_i8`] prefers: 6 rows × 16 channels (two packed
//! panels). The same epilogues as the AVX2 tile ([`super::epilogue`]); the multiply is one
//! instruction per 32 products.

use core::arch::x86_64::*;

use super::epilogue::{store_acc, store_dequant8, store_requant};
use super::has_avx_vnni;
use crate::kernels::{EpiI8, PackedI8, RowsPtr, NR};

gemm_entries! {
    /// int8 GEMM with requantising epilogue on AVX-VNNI, rows `[m0,m1)`; microkernel 6×16.
    ///
    /// `vpdpbusd` multiplies *unsigned* bytes by signed bytes and adds each group of four
    /// products into an i32 lane, with no intermediate saturation. The activations are fed as
    /// `a + 128` (a sign-bit flip) and the accumulators start at `-128 · Σ_k w`
    /// ([`PackedI8::wsum`]), so the result is the exact signed dot product. One instruction does
    /// 32 multiply-adds, against 16 for `vpmaddwd` after two sign extensions.
    vnni_pw_i8_6x16 / vnni_window_i8_6x16: i8, PackedI8, epi: &EpiI8 => i8;
    group 4, has_avx_vnni, "AVX-VNNI";
    |a, b, m0, m1, out| pw_i8_vnni_impl(a, b, m0, m1, |acc, orow, n0| {
        store_requant(acc, epi, out, orow, n0, b.n)
    })
}

gemm_entries! {
    /// int8 GEMM on AVX-VNNI with the f32 epilogue `act((acc + bias) · mult)`.
    vnni_pw_i8_f32_6x16 / vnni_window_i8_f32_6x16: i8, PackedI8, epi: &EpiI8 => f32;
    group 4, has_avx_vnni, "AVX-VNNI";
    |a, b, m0, m1, out| pw_i8_vnni_impl(a, b, m0, m1, |acc, orow, n0| {
        store_dequant8(acc, epi, out, orow, n0, b.n)
    })
}

gemm_entries! {
    /// int8 GEMM on AVX-VNNI, raw i32 accumulators, rows `[m0,m1)`.
    vnni_pw_i8_acc_6x16: i8, PackedI8 => i32;
    group 4, has_avx_vnni, "AVX-VNNI";
    |a, b, m0, m1, out| pw_i8_vnni_impl(a, b, m0, m1, |acc, orow, n0| {
        store_acc(acc, out, orow, n0, b.n)
    })
}

#[target_feature(enable = "avx2,fma,avxvnni")]
#[inline]
unsafe fn pw_i8_vnni_impl(
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
        let mut p = 0;
        while p < panels {
            let np = (panels - p).min(2);
            macro_rules! t {
                ($mr:literal, $np:literal) => {{
                    // SAFETY: rows m..m+mr and panels p..p+np exist (checked by callers).
                    let acc = unsafe { tile_i8_vnni::<$mr, $np>(a, b, m, p) };
                    for r in 0..$mr {
                        for q in 0..$np {
                            store(acc[r][q], m - m0 + r, (p + q) * NR);
                        }
                    }
                }};
            }
            match (mr, np) {
                (6, 2) => t!(6, 2),
                (5, 2) => t!(5, 2),
                (4, 2) => t!(4, 2),
                (3, 2) => t!(3, 2),
                (2, 2) => t!(2, 2),
                (1, 2) => t!(1, 2),
                (6, _) => t!(6, 1),
                (5, _) => t!(5, 1),
                (4, _) => t!(4, 1),
                (3, _) => t!(3, 1),
                (2, _) => t!(2, 1),
                _ => t!(1, 1),
            }
            p += np;
        }
        m += mr;
    }
}

/// Accumulators of rows `m..m+MR` against panels `p..p+NP`, channel order 0..8 per panel.
#[target_feature(enable = "avx2,fma,avxvnni")]
#[inline]
unsafe fn tile_i8_vnni<const MR: usize, const NP: usize>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m: usize,
    p: usize,
) -> [[__m256i; NP]; MR] {
    let panel_len = b.groups() * NR * 4;
    let bp = b.data.as_ptr().add(p * panel_len);
    let flip = _mm256_set1_epi8(i8::MIN);
    let mut init = [_mm256_setzero_si256(); NP];
    for (q, v) in init.iter_mut().enumerate() {
        let ws = _mm256_loadu_si256(b.wsum.as_ptr().add((p + q) * NR) as *const __m256i);
        *v = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(ws));
    }
    let mut acc = [init; MR];
    a.for_each_group::<MR>(m, |g, a4| {
        let mut w = [_mm256_setzero_si256(); NP];
        for (q, v) in w.iter_mut().enumerate() {
            *v = _mm256_loadu_si256(bp.add(q * panel_len + g * 32) as *const __m256i);
        }
        for (acc_r, &a4) in acc.iter_mut().zip(&a4) {
            let av = _mm256_xor_si256(_mm256_set1_epi32(a4), flip);
            for q in 0..NP {
                acc_r[q] = _mm256_dpbusd_avx_epi32(acc_r[q], av, w[q]);
            }
        }
    });
    acc
}
