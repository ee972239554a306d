//! Element-wise int8 kernels on x86: the residual add (AVX2, and AVX-512BW with masked tails
//! and one-instruction narrowing) and the quantisation of an f32 input to int8. Intrinsics.

use core::arch::x86_64::*;

use super::epilogue::lanes16;
use super::{has_avx2_fma, has_avx512bw};

/// `out = sat(round(x * inv_scale))`, 32 lanes at a time (rounding half to even).
pub(crate) fn avx2_quantize_i8(x: &[f32], inv_scale: f32, out: &mut [i8]) {
    assert_eq!(
        x.len(),
        out.len(),
        "quantize: lens {} {}",
        x.len(),
        out.len()
    );
    assert!(has_avx2_fma(), "avx2_quantize_i8 needs AVX2+FMA");
    // SAFETY: features asserted; indices < len (loop bounds).
    unsafe { quantize_i8_impl(x, inv_scale, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_i8_impl(x: &[f32], inv_scale: f32, out: &mut [i8]) {
    let n = x.len();
    let inv = _mm256_set1_ps(inv_scale);
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let q = |i: usize| {
        let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), inv);
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi))
    };
    let mut i = 0;
    while i + 32 <= n {
        // packs work per 128-bit lane: the permute puts the four groups of 8 back in order
        let ab = _mm256_packs_epi32(q(i), q(i + 8));
        let cd = _mm256_packs_epi32(q(i + 16), q(i + 24));
        let r = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(ab, cd),
            _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
        );
        _mm256_storeu_si256(out.as_mut_ptr().add(i) as *mut __m256i, r);
        i += 32;
    }
    for j in i..n {
        out[j] = crate::kernels::sat_i8(x[j] * inv_scale);
    }
}

/// `out = sat(round(a*sa + b*sb))`, 16 lanes at a time.
pub(crate) fn avx2_add_i8(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    crate::kernels::check_add_lens(a.len(), b.len(), out.len());
    assert!(has_avx2_fma(), "avx2_add_i8 needs AVX2+FMA");
    // SAFETY: features asserted; indices < len (loop bound).
    unsafe { add_i8_impl(a, sa, b, sb, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn add_i8_impl(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    let n = a.len();
    let (va, vb) = (_mm256_set1_ps(sa), _mm256_set1_ps(sb));
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
            a.as_ptr().add(i) as *const __m128i
        )));
        let y = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
            b.as_ptr().add(i) as *const __m128i
        )));
        let r = _mm256_add_ps(_mm256_mul_ps(x, va), _mm256_mul_ps(y, vb));
        let r = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
        let p16 = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
        _mm_storel_epi64(
            out.as_mut_ptr().add(i) as *mut __m128i,
            _mm_packs_epi16(p16, p16),
        );
        i += 8;
    }
    for j in i..n {
        out[j] = crate::kernels::sat_i8(a[j] as f32 * sa + b[j] as f32 * sb);
    }
}

/// [`avx2_add_i8`] on 512-bit registers: 16 lanes per conversion, the narrowing in one
/// instruction (`vpmovdb`, after the clamp to ±127) and the tail through masks. A residual
/// add touches every value of a feature map twice for two multiplies: the AVX2 form's
/// conversions and packs made it one of the costlier steps of the small liveness network.
pub(crate) fn avx512_add_i8(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    crate::kernels::check_add_lens(a.len(), b.len(), out.len());
    assert!(has_avx512bw(), "avx512_add_i8 needs AVX-512F/BW/VL");
    // SAFETY: features asserted; every access is masked to lanes below len.
    unsafe { add_i8_avx512_impl(a, sa, b, sb, out) }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn add_i8_avx512_impl(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    let n = a.len();
    let (va, vb) = (_mm512_set1_ps(sa), _mm512_set1_ps(sb));
    let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
    let load =
        |p: *const i8, m| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
    let mut i = 0;
    while i < n {
        let m = lanes16(i, n);
        let (x, y) = (load(a.as_ptr().add(i), m), load(b.as_ptr().add(i), m));
        // multiply and add apart (no FMA), as the generic and AVX2 forms round
        let r = _mm512_add_ps(_mm512_mul_ps(x, va), _mm512_mul_ps(y, vb));
        let r = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi));
        _mm_mask_storeu_epi8(out.as_mut_ptr().add(i), m, _mm512_cvtepi32_epi8(r));
        i += 16;
    }
}
