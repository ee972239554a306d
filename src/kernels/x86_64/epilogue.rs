//! What the x86 kernels do after accumulating: bias, activation, requantisation to int8 or
//! dequantisation to f32, and the stores (whole registers, or the channel tail lane by lane
//! or through AVX-512 masks). Shared by the GEMM tiles and the depthwise kernels, so each
//! agrees with the scalar definitions ([`Act::apply`], [`EpiI8::requant`]) in one place per
//! register width. All inlined into their callers (`#[inline]` with the callers' target
//! features, or `inline(always)`): they compile into each kernel rather than being called
//! per row.

use core::arch::x86_64::*;

use crate::kernels::{Act, EpiI8, NR};

/// Activation on 8 lanes of channels `c0..c0+8` (caller guarantees `c0+8 <= N` for PReLU).
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn act_ps(act: &Act, v: __m256, c0: usize) -> __m256 {
    let zero = _mm256_setzero_ps();
    match *act {
        Act::None => v,
        Act::Relu => _mm256_max_ps(v, zero),
        Act::Relu6(hi) => _mm256_min_ps(_mm256_max_ps(v, zero), _mm256_set1_ps(hi)),
        // SAFETY: caller guarantees c0 + 8 <= a.len() (EpiX::check asserted a.len() >= N).
        Act::PRelu(a) => prelu_ps(v, unsafe { _mm256_loadu_ps(a.as_ptr().add(c0)) }),
    }
}

/// `v` where `v >= 0`, else `v · al`, on 8 lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn prelu_ps(v: __m256, al: __m256) -> __m256 {
    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps());
    _mm256_blendv_ps(v, _mm256_mul_ps(v, al), neg)
}

/// Activation on 16 lanes; `slope`: their PReLU slopes (unused by the other activations).
#[target_feature(enable = "avx2,fma,avx512f")]
#[inline]
pub(super) fn act_ps16(act: &Act, v: __m512, slope: __m512) -> __m512 {
    let zero = _mm512_setzero_ps();
    match *act {
        Act::None => v,
        Act::Relu => _mm512_max_ps(v, zero),
        Act::Relu6(hi) => _mm512_min_ps(_mm512_max_ps(v, zero), _mm512_set1_ps(hi)),
        Act::PRelu(_) => {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
            _mm512_mask_mul_ps(v, neg, v, slope)
        }
    }
}

/// Requantise 8 accumulators of channels `c0..c0+8` to 8 i8 in the low half of the result.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn requant8(acc: __m256i, epi: &EpiI8, c0: usize) -> __m128i {
    // SAFETY: caller guarantees c0 + 8 <= N <= bias.len(), mult.len().
    let (bias, mult) = unsafe {
        (
            _mm256_loadu_si256(epi.bias.as_ptr().add(c0) as *const __m256i),
            _mm256_loadu_ps(epi.mult.as_ptr().add(c0)),
        )
    };
    let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, bias)), mult);
    // SAFETY: same bound for the PReLU slopes.
    let v = unsafe { act_ps(&epi.act, v, c0) };
    let v = _mm256_min_ps(
        _mm256_max_ps(v, _mm256_set1_ps(-127.0)),
        _mm256_set1_ps(127.0),
    );
    let i = _mm256_cvtps_epi32(v);
    let p16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
    _mm_packs_epi16(p16, p16)
}

/// `act((acc + bias) · mult)` of the 8 accumulators of channels `n0..` of output row `orow`,
/// stored as f32 (the channels that exist, `< n`).
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn store_dequant8(
    acc: __m256i,
    epi: &EpiI8,
    out: &mut [f32],
    orow: usize,
    n0: usize,
    n: usize,
) {
    let dst = &mut out[orow * n + n0..orow * n + n.min(n0 + NR)];
    if dst.len() == NR {
        // SAFETY: channels n0..n0+8 are < n <= bias/mult/slope lengths (EpiI8::check).
        let v = unsafe {
            let bias = _mm256_loadu_si256(epi.bias.as_ptr().add(n0) as *const __m256i);
            let mult = _mm256_loadu_ps(epi.mult.as_ptr().add(n0));
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(acc, bias)), mult);
            act_ps(&epi.act, v, n0)
        };
        // SAFETY: `dst` holds exactly 8 floats.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
    } else {
        let mut t = [0i32; NR];
        // SAFETY: `t` holds 8 i32.
        unsafe { _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, acc) };
        for (j, (o, &a)) in dst.iter_mut().zip(&t).enumerate() {
            let c = n0 + j;
            *o = epi
                .act
                .apply(a.wrapping_add(epi.bias[c]) as f32 * epi.mult[c], c);
        }
    }
}

/// Stores the accumulators of channels `n0..min(n0+8, n)` of output row `orow`.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn store_acc(acc: __m256i, out: &mut [i32], orow: usize, n0: usize, n: usize) {
    let mut t = [0i32; NR];
    _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, acc);
    let cnt = NR.min(n - n0);
    out[orow * n + n0..orow * n + n0 + cnt].copy_from_slice(&t[..cnt]);
}

#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn store_requant(
    acc: __m256i,
    epi: &EpiI8,
    out: &mut [i8],
    orow: usize,
    n0: usize,
    n: usize,
) {
    if n0 + NR <= n {
        let v = requant8(acc, epi, n0);
        let mut t = [0i8; 16];
        _mm_storeu_si128(t.as_mut_ptr() as *mut __m128i, v);
        out[orow * n + n0..orow * n + n0 + NR].copy_from_slice(&t[..NR]);
    } else {
        let mut t = [0i32; NR];
        _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, acc);
        for j in 0..n - n0 {
            out[orow * n + n0 + j] = epi.requant(t[j], n0 + j);
        }
    }
}

/// `act((acc + bias) · mult)` of 16 accumulators of channels `c0..`, lanes outside `m` zero.
///
/// # Safety
/// The channels of the lanes in `m` exist in `epi`.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn dequant16(acc: __m512i, epi: &EpiI8, c0: usize, m: __mmask16) -> __m512 {
    let bias = _mm512_maskz_loadu_epi32(m, epi.bias.as_ptr().add(c0));
    let mult = _mm512_maskz_loadu_ps(m, epi.mult.as_ptr().add(c0));
    let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc, bias)), mult);
    let zero = _mm512_setzero_ps();
    match epi.act {
        Act::None => v,
        Act::Relu => _mm512_max_ps(v, zero),
        Act::Relu6(hi) => _mm512_min_ps(_mm512_max_ps(v, zero), _mm512_set1_ps(hi)),
        Act::PRelu(al) => {
            let al = _mm512_maskz_loadu_ps(m, al.as_ptr().add(c0));
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
            _mm512_mask_mul_ps(v, neg, v, al)
        }
    }
}

/// Requantises 16 accumulators of channels `c0..` and stores the first `cnt` to `dst`.
///
/// # Safety
/// Channels `c0..c0+cnt` exist in `epi` and `dst` has room for `cnt` bytes; lanes from `cnt`
/// on are masked off, never read nor written.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[inline]
pub(super) unsafe fn requant16(acc: __m512i, epi: &EpiI8, c0: usize, cnt: usize, dst: *mut i8) {
    let m: __mmask16 = ((1u32 << cnt) - 1) as u16;
    let v = dequant16(acc, epi, c0, m);
    let v = _mm512_min_ps(
        _mm512_max_ps(v, _mm512_set1_ps(-127.0)),
        _mm512_set1_ps(127.0),
    );
    let q = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v));
    _mm_mask_storeu_epi8(dst, m, q);
}

/// Lanes `0..min(16, n - n0)`: the channels of a 16-channel block from `n0` that exist.
#[inline(always)]
pub(super) fn lanes16(n0: usize, n: usize) -> __mmask16 {
    ((1u32 << (n - n0).min(16)) - 1) as u16
}

/// The f32 epilogue of one 16-channel block of the GEMM tiles, `act(acc · mult)` (the tiles
/// start their accumulators at the bias), with its per-channel constants loaded once per
/// tile rather than once per row: small-K layers are epilogue-bound. The activation's clamps
/// are merged with the requantising clamp to ±127 (`lo`/`hi`), so a row costs a convert, a
/// multiply and two bounds (plus a masked multiply for PReLU).
#[derive(Clone, Copy)]
pub(super) struct Dequant16 {
    mult: __m512,
    lo: __m512,
    hi: __m512,
    /// PReLU's slopes.
    alpha: Option<__m512>,
    m: __mmask16,
}

impl Dequant16 {
    /// The constants of channels `n0..` of `epi`; `sat`: also clamp to ±127 (int8 output).
    ///
    /// # Safety
    /// `epi` has `n` channels (checked by the entry point).
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(super) unsafe fn new(epi: &EpiI8, n0: usize, n: usize, sat: bool) -> Self {
        let m = lanes16(n0, n);
        let lim = if sat { 127.0 } else { f32::INFINITY };
        let (lo, hi, alpha) = match epi.act {
            Act::None => (-lim, lim, None),
            Act::Relu => (0.0, lim, None),
            Act::Relu6(h) => (0.0, h.clamp(-lim, lim), None),
            Act::PRelu(al) => (
                -lim,
                lim,
                Some(_mm512_maskz_loadu_ps(m, al.as_ptr().add(n0))),
            ),
        };
        Dequant16 {
            mult: _mm512_maskz_loadu_ps(m, epi.mult.as_ptr().add(n0)),
            lo: _mm512_set1_ps(lo),
            hi: _mm512_set1_ps(hi),
            alpha,
            m,
        }
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn apply(&self, acc: __m512i) -> __m512 {
        let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), self.mult);
        if let Some(al) = self.alpha {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
            v = _mm512_mask_mul_ps(v, neg, v, al);
        }
        _mm512_min_ps(_mm512_max_ps(v, self.lo), self.hi)
    }

    /// Stores the block's channels of one row as f32.
    ///
    /// # Safety
    /// `dst` has room for the block's channels.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(super) unsafe fn store_f32(&self, acc: __m512i, dst: *mut f32) {
        _mm512_mask_storeu_ps(dst, self.m, self.apply(acc));
    }

    /// Stores the block's channels of one row requantised (built with `sat`, so the values
    /// are within ±127 before the conversion).
    ///
    /// # Safety
    /// `dst` has room for the block's channels.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    #[inline]
    pub(super) unsafe fn store_i8(&self, acc: __m512i, dst: *mut i8) {
        let q = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(self.apply(acc)));
        _mm_mask_storeu_epi8(dst, self.m, q);
    }
}
