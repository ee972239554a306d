//! f32 GEMM tiles (pointwise convs, and dense convs through im2col or in-place windows):
//! AVX2/FMA 6 rows × 16 channels (two packed panels, 12 accumulators) and AVX-512 8 rows ×
//! 32 channels (two panels per register, 16 accumulators). Each tile is a const-generic
//! function instantiated for every partial shape at the edges, so a partial tile costs no
//! branch in the K loop; the driver picks the instance with a `match`.

use core::arch::x86_64::*;

use super::epilogue::act_ps;
use super::{has_avx2_fma, has_avx512};
use crate::kernels::{Act, EpiF32, PackedF32, RowsPtr, NR};

gemm_entries! {
    /// f32 GEMM `[M×K]·[K×N]` + bias + activation, rows `[m0,m1)`; microkernel 6×16.
    avx2_pw_f32_6x16 / avx2_window_f32_6x16: f32, PackedF32, epi: &EpiF32 => f32;
    group 1, has_avx2_fma, "AVX2+FMA";
    |a, b, m0, m1, out| pw_f32_impl(a, b, epi, m0, m1, out)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn pw_f32_impl(
    a: RowsPtr<f32>,
    b: &PackedF32,
    epi: &EpiF32,
    m0: usize,
    m1: usize,
    out: &mut [f32],
) {
    let panels = b.panels();
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(6);
        let mut p = 0;
        while p < panels {
            let np = if p + 1 < panels { 2 } else { 1 };
            macro_rules! t {
                ($mr:literal, $np:literal) => {
                    // SAFETY: m+mr <= m1 rows of A and panels p..p+np exist (checked by caller).
                    unsafe { tile_f32::<$mr, $np>(a, b, epi, m, m - m0, p, out) }
                };
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

#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32<const MR: usize, const NP: usize>(
    a: RowsPtr<f32>,
    b: &PackedF32,
    epi: &EpiF32,
    m: usize,
    orow: usize,
    p: usize,
    out: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    let bp = b.data.as_ptr().add(p * k * NR);
    let mut acc = [[_mm256_setzero_ps(); NP]; MR];
    a.for_each_k::<MR>(m, |kk, av| {
        let b0 = _mm256_loadu_ps(bp.add(kk * NR));
        let b1 = if NP == 2 {
            _mm256_loadu_ps(bp.add((k + kk) * NR))
        } else {
            b0
        };
        for (acc_r, &x) in acc.iter_mut().zip(&av) {
            let x = _mm256_set1_ps(x);
            acc_r[0] = _mm256_fmadd_ps(x, b0, acc_r[0]);
            if NP == 2 {
                acc_r[1] = _mm256_fmadd_ps(x, b1, acc_r[1]);
            }
        }
    });
    for r in 0..MR {
        let op = out.as_mut_ptr().add((orow + r) * n);
        for q in 0..NP {
            let n0 = (p + q) * NR;
            if n0 + NR <= n {
                let v = _mm256_add_ps(acc[r][q], _mm256_loadu_ps(epi.bias.as_ptr().add(n0)));
                _mm256_storeu_ps(op.add(n0), act_ps(&epi.act, v, n0));
            } else {
                let mut t = [0.0f32; NR];
                _mm256_storeu_ps(t.as_mut_ptr(), acc[r][q]);
                for (j, &tj) in t.iter().enumerate().take(n - n0) {
                    *op.add(n0 + j) = epi.act.apply(tj + epi.bias[n0 + j], n0 + j);
                }
            }
        }
    }
}

gemm_entries! {
    /// f32 GEMM `[M×K]·[K×N]` + bias + activation, rows `[m0,m1)`; microkernel 8×32 on 512-bit
    /// registers: twice the work per FMA of the AVX2 kernel, and 32 registers hold the 16
    /// accumulators of a tile.
    avx512_pw_f32_8x32 / avx512_window_f32_8x32: f32, PackedF32, epi: &EpiF32 => f32;
    group 1, has_avx512, "AVX-512F/DQ";
    |a, b, m0, m1, out| pw_f32_avx512_impl(a, b, epi, m0, m1, out)
}

#[target_feature(enable = "avx2,fma,avx512f,avx512dq")]
unsafe fn pw_f32_avx512_impl(
    a: RowsPtr<f32>,
    b: &PackedF32,
    epi: &EpiF32,
    m0: usize,
    m1: usize,
    out: &mut [f32],
) {
    let panels = b.panels();
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(8);
        let mut p = 0;
        while p < panels {
            let left = panels - p;
            let np = if left >= 4 {
                4
            } else if left >= 2 {
                2
            } else {
                1
            };
            macro_rules! t {
                ($mr:literal, $nz:literal) => {
                    // SAFETY: rows m..m+mr and panels p..p+np exist (checked by callers).
                    unsafe { tile_f32_avx512::<$mr, $nz>(a, b, epi, m, m - m0, p, np, out) }
                };
            }
            macro_rules! arms {
                ($($m:literal)*) => {
                    match (mr, np) {
                        $( ($m, 4) => t!($m, 2), ($m, _) => t!($m, 1), )*
                        _ => unreachable!("mr <= 8"),
                    }
                };
            }
            arms!(1 2 3 4 5 6 7 8);
            p += np;
        }
        m += mr;
    }
}

/// Rows `m..m+MR` against the `np` (<= 2·NZ) panels from `p`, epilogue included: register
/// `z` of a row holds panels `p+2z` (low half) and `p+2z+1` (high half; zero if absent).
#[target_feature(enable = "avx2,fma,avx512f,avx512dq")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32_avx512<const MR: usize, const NZ: usize>(
    a: RowsPtr<f32>,
    b: &PackedF32,
    epi: &EpiF32,
    m: usize,
    orow: usize,
    p: usize,
    np: usize,
    out: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    let bp = b.data.as_ptr().add(p * k * NR);
    let mut acc = [[_mm512_setzero_ps(); NZ]; MR];
    a.for_each_k::<MR>(m, |kk, av| {
        let mut w = [_mm512_setzero_ps(); NZ];
        for (z, v) in w.iter_mut().enumerate() {
            let lo = _mm256_loadu_ps(bp.add((2 * z * k + kk) * NR));
            let hi = if 2 * z + 1 < np {
                _mm256_loadu_ps(bp.add(((2 * z + 1) * k + kk) * NR))
            } else {
                _mm256_setzero_ps()
            };
            *v = _mm512_insertf32x8::<1>(_mm512_castps256_ps512(lo), hi);
        }
        for (acc_r, &x) in acc.iter_mut().zip(&av) {
            let x = _mm512_set1_ps(x);
            for z in 0..NZ {
                acc_r[z] = _mm512_fmadd_ps(x, w[z], acc_r[z]);
            }
        }
    });
    let zero = _mm512_setzero_ps();
    for (r, acc_r) in acc.iter().enumerate() {
        let op = out.as_mut_ptr().add((orow + r) * n);
        for (z, &v) in acc_r.iter().enumerate().take(np.div_ceil(2)) {
            let n0 = (p + 2 * z) * NR;
            let cnt = (n - n0).min(16);
            let mk: __mmask16 = ((1u32 << cnt) - 1) as u16;
            // SAFETY: lanes >= cnt are masked off; the others are channels < n, inside the
            // bias/slopes (len >= n) and inside the output row.
            let v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, epi.bias.as_ptr().add(n0)));
            let v = match epi.act {
                Act::None => v,
                Act::Relu => _mm512_max_ps(v, zero),
                Act::Relu6(hi) => _mm512_min_ps(_mm512_max_ps(v, zero), _mm512_set1_ps(hi)),
                Act::PRelu(al) => {
                    let al = _mm512_maskz_loadu_ps(mk, al.as_ptr().add(n0));
                    let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
                    _mm512_mask_mul_ps(v, neg, v, al)
                }
            };
            _mm512_mask_storeu_ps(op.add(n0), mk, v);
        }
    }
}
