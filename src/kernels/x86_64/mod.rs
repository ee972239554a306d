//! x86-64 kernels: AVX2/FMA, AVX-512 (f32 GEMM, depthwise, Winograd) and the int8 dot-product
//! GEMMs (AVX-512 VNNI, preferred, and AVX-VNNI). Installed by [`install`] when the CPU
//! reports both `avx2` and `fma` at run time, each wider tier when its features are there
//! (`FACEGATE_KERNELS=nodotprod` withholds only the VNNI GEMMs); every public kernel here re-asserts that before its
//! `unsafe` block.
//!
//! int8 GEMM: the packed groups are 8 channels × 4 k (see [`PackedI8`]). Both operands are
//! sign-extended to i16 and multiplied with `vpmaddwd` (`_mm256_madd_epi16`), which is exact
//! for every i8 input (|a·b + c·d| <= 2·128² < 2³¹) — unlike `vpmaddubsw`, which saturates to
//! i16. The pair sums land as (ch, k01),(ch, k23) lanes and are folded once per tile by
//! `hadd` + `permute4x64`, so accumulators equal the generic kernel's bit for bit.
//! Requantisation rounds half to even (`cvtps_epi32`); generic rounds half away from zero.

use core::arch::x86_64::*;

use super::generic;
use super::winograd::{self, PackedWino};
use super::{
    Act, AddI8Fn, ConvShape, DwF32Fn, DwI8Fn, EpiF32, EpiI8, Kernels, PackedDwF32, PackedDwI8,
    PackedF32, PackedI8, PwF32Fn, PwI8AccFn, PwI8F32Fn, PwI8Fn, RowsPtr, WindowF32Fn,
    WindowI8F32Fn, WindowI8Fn, WinoF32Fn, DW_PAIR_PAD, NR,
};

fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// AVX-VNNI (`vpdpbusd` on 256-bit registers): Alder Lake, Sapphire Rapids, Zen 5 and later.
fn has_avx_vnni() -> bool {
    has_avx2_fma() && std::is_x86_feature_detected!("avxvnni")
}

/// Replace the generic entries this CPU can run faster; `dot`: also use the dot-product
/// (VNNI) instructions when the CPU has them.
pub(crate) fn install(k: &mut Kernels, dot: bool) {
    if !has_avx2_fma() {
        return;
    }
    AVX2_I8.install(k);
    k.names.pw_i8 = "avx2_pw_i8_6x8";
    if let Some(&(name, add)) = add_i8_variants().first() {
        (k.add_i8, k.names.add_i8) = (add, name);
    }
    k.quantize_i8 = avx2_quantize_i8;
    k.names.quantize_i8 = "avx2_quantize_i8";
    if let Some(&(name, pw, window)) = pw_f32_variants().first() {
        (k.pw_f32, k.window_f32, k.names.pw_f32) = (pw, Some(window), name);
    }
    if let Some(&(name, dw)) = dw_f32_variants().first() {
        k.dw_f32 = dw;
        k.names.dw_f32 = name;
    }
    if let Some(&(name, wino)) = wino_f32_variants().first() {
        k.wino_f32 = wino;
        k.names.wino_f32 = name;
    }
    if let Some(&(name, dw)) = dw_i8_variants().first() {
        k.dw_i8 = dw;
        k.names.dw_i8 = name;
    }
    if dot {
        if let Some(gemms) = dot_pw_i8().first() {
            gemms.install(k);
        }
    }
}

/// One int8 GEMM family: the same tiles with each epilogue (requantising, raw accumulators,
/// f32), over plain rows and over in-place conv windows.
#[derive(Clone, Copy)]
pub(crate) struct I8Gemms {
    pub name: &'static str,
    pub name_f32: &'static str,
    pub pw: PwI8Fn,
    pub acc: PwI8AccFn,
    pub pw_f32: PwI8F32Fn,
    pub window: WindowI8Fn,
    pub window_f32: WindowI8F32Fn,
}

impl I8Gemms {
    /// Makes this family the table's int8 GEMMs.
    pub(crate) fn install(&self, k: &mut Kernels) {
        (k.pw_i8, k.pw_i8_acc, k.names.pw_i8) = (self.pw, self.acc, self.name);
        (k.pw_i8_f32, k.names.pw_i8_f32) = (Some(self.pw_f32), self.name_f32);
        (k.window_i8, k.window_i8_f32) = (Some(self.window), Some(self.window_f32));
    }
}

/// `vpmaddwd` on sign-extended operands: every AVX2 CPU.
const AVX2_I8: I8Gemms = I8Gemms {
    name: "avx2_pw_i8_6x8",
    name_f32: "avx2_pw_i8_f32_6x8",
    pw: avx2_pw_i8_6x8,
    acc: avx2_pw_i8_acc_6x8,
    pw_f32: avx2_pw_i8_f32_6x8,
    window: avx2_window_i8_6x8,
    window_f32: avx2_window_i8_f32_6x8,
};

/// The f32 GEMMs this CPU can run (plain and in-place windows), fastest first: the table
/// takes the first, the tests check them all.
pub(crate) fn pw_f32_variants() -> Vec<(&'static str, PwF32Fn, WindowF32Fn)> {
    let mut v: Vec<(&'static str, PwF32Fn, WindowF32Fn)> = Vec::new();
    if has_avx512() {
        v.push((
            "avx512_pw_f32_8x32",
            avx512_pw_f32_8x32,
            avx512_window_f32_8x32,
        ));
    }
    if has_avx2_fma() {
        v.push(("avx2_pw_f32_6x16", avx2_pw_f32_6x16, avx2_window_f32_6x16));
    }
    v
}

/// The f32 depthwise kernels this CPU can run, fastest first.
pub(crate) fn dw_f32_variants() -> Vec<(&'static str, DwF32Fn)> {
    let mut v: Vec<(&'static str, DwF32Fn)> = Vec::new();
    if has_avx512() {
        v.push(("avx512_dw3x3_f32|avx2_dwkxk_f32", avx512_dw_f32));
    }
    if has_avx2_fma() {
        v.push(("avx2_dw3x3_f32|avx2_dwkxk_f32", avx2_dw_f32));
    }
    v
}

/// The Winograd convs this CPU can run, fastest first: the portable transforms compiled for
/// wider vectors (the GEMMs are the table's).
pub(crate) fn wino_f32_variants() -> Vec<(&'static str, WinoF32Fn)> {
    let mut v: Vec<(&'static str, WinoF32Fn)> = Vec::new();
    if has_avx512() {
        v.push(("avx512_wino_f32_4x3", avx512_wino_f32));
    }
    if has_avx2_fma() {
        v.push(("avx2_wino_f32_4x3", avx2_wino_f32));
    }
    v
}

/// The int8 residual adds this CPU can run, fastest first.
pub(crate) fn add_i8_variants() -> Vec<(&'static str, AddI8Fn)> {
    let mut v: Vec<(&'static str, AddI8Fn)> = Vec::new();
    if has_avx512bw() {
        v.push(("avx512_add_i8", avx512_add_i8));
    }
    if has_avx2_fma() {
        v.push(("avx2_add_i8", avx2_add_i8));
    }
    v
}

/// The int8 depthwise kernels this CPU can run, fastest first.
pub(crate) fn dw_i8_variants() -> Vec<(&'static str, DwI8Fn)> {
    let mut v: Vec<(&'static str, DwI8Fn)> = Vec::new();
    if has_avx512bw() {
        v.push(("avx512_dw3x3_i8|avx2_dwkxk_i8", avx512_dw_i8));
    }
    if has_avx2_fma() {
        v.push(("avx2_dw3x3_i8|avx2_dwkxk_i8", avx2_dw_i8));
    }
    v
}

/// The dot-product (VNNI) int8 GEMM families this CPU can run, fastest first: the table
/// takes the first, the tests check them all.
pub(crate) fn dot_pw_i8() -> Vec<I8Gemms> {
    let mut v = Vec::new();
    if has_avx512_vnni() {
        v.extend([AVX512_I8, AVX512_I8_8X32, AVX512_I8_16X16]);
    }
    if has_avx_vnni() {
        v.push(I8Gemms {
            name: "vnni_pw_i8_6x16",
            name_f32: "vnni_pw_i8_f32_6x16",
            pw: vnni_pw_i8_6x16,
            acc: vnni_pw_i8_acc_6x16,
            pw_f32: vnni_pw_i8_f32_6x16,
            window: vnni_window_i8_6x16,
            window_f32: vnni_window_i8_f32_6x16,
        });
    }
    v
}

// ------------------------------------------------------------------------------------------
// Reading A: plain rows or in-place conv windows, and the entry points built on them
// ------------------------------------------------------------------------------------------

impl RowsPtr<i8> {
    /// Walks K in groups of 4 bytes for rows `m..m+MR`: `f(g, a)` with `a[r]` the 4 bytes of
    /// group `g` of row `m+r` as one i32 (the `vpmaddwd`/`vpdpbusd` operand shape).
    ///
    /// # Safety
    /// Rows `m..m+MR` exist (validated by the entry point).
    #[inline(always)]
    unsafe fn for_each_group<const MR: usize>(
        &self,
        m: usize,
        mut f: impl FnMut(usize, [i32; MR]),
    ) {
        self.for_each_group_at::<MR>(m, |g, at| {
            f(g, at.map(|p| (p as *const i32).read_unaligned()))
        });
    }

    /// [`RowsPtr::for_each_group`] handing out where each row's 4 bytes are (for kernels that
    /// load them with a broadcast): `at[r]` points at 4 readable bytes.
    ///
    /// # Safety
    /// Rows `m..m+MR` exist (validated by the entry point).
    #[inline(always)]
    unsafe fn for_each_group_at<const MR: usize>(
        &self,
        m: usize,
        mut f: impl FnMut(usize, [*const i8; MR]),
    ) {
        let rows: [*const i8; MR] =
            std::array::from_fn(|r| self.ptr.add((m + r) * self.row_stride));
        let (seg_groups, tail) = (self.seg_len / 4, self.seg_len % 4);
        debug_assert!(
            tail == 0 || self.segs == 1,
            "only a plain matrix ends in a partial group"
        );
        let mut g = 0;
        for j in 0..self.segs {
            let off = j * self.seg_stride;
            for i in 0..seg_groups {
                f(g, std::array::from_fn(|r| rows[r].add(off + 4 * i)));
                g += 1;
            }
        }
        if tail > 0 {
            // The partial last group reads only the row's bytes, copied to a zero-padded
            // group: the packed weights are zero beyond K, so the padding's value does not
            // matter. (Assembled by hand: a variable-length copy would be a `memcpy` call per
            // row.)
            let last: [[i8; 4]; MR] = std::array::from_fn(|r| {
                let mut v = [0i8; 4];
                for (j, b) in v.iter_mut().enumerate().take(tail) {
                    *b = *rows[r].add(4 * g + j);
                }
                v
            });
            f(g, std::array::from_fn(|r| last[r].as_ptr()));
        }
    }
}

impl RowsPtr<f32> {
    /// Walks K for rows `m..m+MR`: `f(kk, a)` with `a[r]` element `kk` of row `m+r`.
    ///
    /// # Safety
    /// Rows `m..m+MR` exist (validated by the entry point).
    #[inline(always)]
    unsafe fn for_each_k<const MR: usize>(&self, m: usize, mut f: impl FnMut(usize, [f32; MR])) {
        let rows: [*const f32; MR] =
            std::array::from_fn(|r| self.ptr.add((m + r) * self.row_stride));
        let mut kk = 0;
        for j in 0..self.segs {
            let off = j * self.seg_stride;
            for i in 0..self.seg_len {
                f(kk, std::array::from_fn(|r| *rows[r].add(off + i)));
                kk += 1;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Epilogues
// ------------------------------------------------------------------------------------------

/// Activation on 8 lanes of channels `c0..c0+8` (caller guarantees `c0+8 <= N` for PReLU).
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn act_ps(act: &Act, v: __m256, c0: usize) -> __m256 {
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
fn prelu_ps(v: __m256, al: __m256) -> __m256 {
    let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps());
    _mm256_blendv_ps(v, _mm256_mul_ps(v, al), neg)
}

/// Activation on 16 lanes; `slope`: their PReLU slopes (unused by the other activations).
#[target_feature(enable = "avx2,fma,avx512f")]
#[inline]
fn act_ps16(act: &Act, v: __m512, slope: __m512) -> __m512 {
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
unsafe fn requant8(acc: __m256i, epi: &EpiI8, c0: usize) -> __m128i {
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
unsafe fn store_dequant8(
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

// ------------------------------------------------------------------------------------------
// Pointwise f32: 6 rows × 16 channels (two packed panels), 12 accumulators.
// ------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------
// Winograd F(4,3): the portable kernel, its transforms vectorised for AVX2 / AVX-512.
// ------------------------------------------------------------------------------------------

/// [`winograd::wino_f32`] with its transforms on 256-bit vectors.
#[allow(clippy::too_many_arguments)]
fn avx2_wino_f32(
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
    winograd::wino_f32_impl(gemm, input, s, w, epi, y0, y1, scratch, out)
}

/// [`winograd::wino_f32`] with its transforms on 512-bit vectors.
#[allow(clippy::too_many_arguments)]
fn avx512_wino_f32(
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
    winograd::wino_f32_impl(gemm, input, s, w, epi, y0, y1, scratch, out)
}

// ------------------------------------------------------------------------------------------
// Pointwise f32 with AVX-512: 8 rows × 32 channels (two packed panels per register).
// ------------------------------------------------------------------------------------------

/// AVX-512 with the 256-bit insert/extract forms (Skylake server, Ice Lake, Zen 4 and later).
fn has_avx512() -> bool {
    has_avx2_fma()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512dq")
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

/// The 4 bytes at `p` in every lane of a register, each XORed with `flip`'s (0x80: signed
/// activations to the unsigned operand of `vpdpbusd`), as one instruction: a load with an
/// embedded broadcast. Written out because LLVM turns the intrinsics' broadcast-then-XOR
/// into a scalar XOR, a move to a vector register and a shuffle, and in the int8 GEMMs'
/// inner loop (one such load per row and group, against one or two `vpdpbusd`s) those
/// extra instructions, not the multiplies, set the pace.
///
/// # Safety
/// `p` points at 4 readable bytes.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn flip_broadcast(flip: __m512i, p: *const i8) -> __m512i {
    let v: __m512i;
    std::arch::asm!(
        "vpxord {v}, {flip}, dword ptr [{p}]{{1to16}}",
        v = lateout(zmm_reg) v,
        flip = in(zmm_reg) flip,
        p = in(reg) p,
        options(pure, readonly, nostack, preserves_flags),
    );
    v
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

// ------------------------------------------------------------------------------------------
// Pointwise int8: 6 rows × 8 channels (one panel), vpmaddwd on sign-extended operands.
// ------------------------------------------------------------------------------------------

/// Stores the accumulators of channels `n0..min(n0+8, n)` of output row `orow`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_acc(acc: __m256i, out: &mut [i32], orow: usize, n0: usize, n: usize) {
    let mut t = [0i32; NR];
    _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, acc);
    let cnt = NR.min(n - n0);
    out[orow * n + n0..orow * n + n0 + cnt].copy_from_slice(&t[..cnt]);
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn store_requant(
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

// ------------------------------------------------------------------------------------------
// Pointwise int8 with AVX-VNNI: 6 rows × 16 channels (two panels), `vpdpbusd`.
// ------------------------------------------------------------------------------------------

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

// ------------------------------------------------------------------------------------------
// Pointwise int8 with AVX-512 VNNI: 8 rows × 32 channels, `vpdpbusd` on 512-bit registers.
// ------------------------------------------------------------------------------------------

/// AVX-512 with byte/word and 128/256-bit forms (Skylake server and later, Zen 4 and later).
fn has_avx512bw() -> bool {
    has_avx2_fma()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
}

/// ... and VNNI (Ice Lake server, Sapphire Rapids, Zen 4 and later).
fn has_avx512_vnni() -> bool {
    has_avx512bw() && std::is_x86_feature_detected!("avx512vnni")
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
unsafe fn requant16(acc: __m512i, epi: &EpiI8, c0: usize, cnt: usize, dst: *mut i8) {
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
fn lanes16(n0: usize, n: usize) -> __mmask16 {
    ((1u32 << (n - n0).min(16)) - 1) as u16
}

/// The f32 epilogue of one 16-channel block of the GEMM tiles, `act(acc · mult)` (the tiles
/// start their accumulators at the bias), with its per-channel constants loaded once per
/// tile rather than once per row: small-K layers are epilogue-bound. The activation's clamps
/// are merged with the requantising clamp to ±127 (`lo`/`hi`), so a row costs a convert, a
/// multiply and two bounds (plus a masked multiply for PReLU).
#[derive(Clone, Copy)]
struct Dequant16 {
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
    unsafe fn new(epi: &EpiI8, n0: usize, n: usize, sat: bool) -> Self {
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
    unsafe fn store_f32(&self, acc: __m512i, dst: *mut f32) {
        _mm512_mask_storeu_ps(dst, self.m, self.apply(acc));
    }

    /// Stores the block's channels of one row requantised (built with `sat`, so the values
    /// are within ±127 before the conversion).
    ///
    /// # Safety
    /// `dst` has room for the block's channels.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
    #[inline]
    unsafe fn store_i8(&self, acc: __m512i, dst: *mut i8) {
        let q = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(self.apply(acc)));
        _mm_mask_storeu_epi8(dst, self.m, q);
    }
}

/// Which tile shapes the AVX-512 VNNI GEMM uses: 8 rows × 32 channels (two registers a row)
/// or 16 rows × 16 channels (one register a row, the column blocks walked in turn). When N
/// is 16 the 8×32 tile fills one register a row, so with a short K its 8 rows amortise the
/// tile's set-up (weights, start values, epilogue constants) poorly. Measured on Zen 4 (the
/// families alternating in one process), 16×16 is 11% faster for 16→16 (K = 16) and slower
/// elsewhere: 5–20% for N = 16 with a longer K (72→16, 152→16, 3×3 16→16), 1.2–2× from
/// N = 40 up. `ByN` picks so; `Wide` and `Small` force one shape, for the tests and benches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tiles {
    Wide,
    Small,
    ByN,
}

impl Tiles {
    /// `(registers per row, rows)` of the tiles for `b`.
    fn shape(self, b: &PackedI8) -> (usize, usize) {
        match self {
            Tiles::ByN if b.panels() <= 2 && b.k <= 16 => (1, 16),
            Tiles::Small => (1, 16),
            Tiles::Wide | Tiles::ByN => (2, 8),
        }
    }
}

/// Declares one AVX-512 VNNI GEMM family (the three epilogues, plain and window entries, and
/// its [`I8Gemms`] constant) over the tile choice `$tiles`.
macro_rules! avx512_family {
    (
        $(#[$doc:meta])*
        $gemms:ident, $tiles:expr;
        $pw:ident / $window:ident, $pw_f32:ident / $window_f32:ident, $acc:ident
    ) => {
        gemm_entries! {
            $(#[$doc])*
            $pw / $window: i8, PackedI8, epi: &EpiI8 => i8;
            group 4, has_avx512_vnni, "AVX-512 VNNI";
            |a, b, m0, m1, out| avx512_requant(a, b, epi, m0, m1, out, $tiles)
        }
        gemm_entries! {
            #[doc = concat!("[`", stringify!($pw), "`] with the f32 epilogue ",
                "`act((acc + bias) · mult)`.")]
            $pw_f32 / $window_f32: i8, PackedI8, epi: &EpiI8 => f32;
            group 4, has_avx512_vnni, "AVX-512 VNNI";
            |a, b, m0, m1, out| avx512_dequant(a, b, epi, m0, m1, out, $tiles)
        }
        gemm_entries! {
            #[doc = concat!("[`", stringify!($pw), "`] with raw i32 accumulators.")]
            $acc: i8, PackedI8 => i32;
            group 4, has_avx512_vnni, "AVX-512 VNNI";
            |a, b, m0, m1, out| avx512_acc(a, b, m0, m1, out, $tiles)
        }
        const $gemms: I8Gemms = I8Gemms {
            name: stringify!($pw),
            name_f32: stringify!($pw_f32),
            pw: $pw,
            acc: $acc,
            pw_f32: $pw_f32,
            window: $window,
            window_f32: $window_f32,
        };
    };
}

avx512_family! {
    /// int8 GEMM with requantising epilogue on AVX-512 VNNI, rows `[m0,m1)`, the tile shape
    /// picked by N ([`Tiles::ByN`]). The same scheme as [`vnni_pw_i8_6x16`] on registers twice
    /// as wide (each holds two packed panels), and twice as many of them.
    AVX512_I8, Tiles::ByN;
    avx512vnni_pw_i8_auto / avx512vnni_window_i8_auto,
    avx512vnni_pw_i8_f32_auto / avx512vnni_window_i8_f32_auto,
    avx512vnni_pw_i8_acc_auto
}

avx512_family! {
    /// [`avx512vnni_pw_i8_auto`] with 8×32 tiles only.
    AVX512_I8_8X32, Tiles::Wide;
    avx512vnni_pw_i8_8x32 / avx512vnni_window_i8_8x32,
    avx512vnni_pw_i8_f32_8x32 / avx512vnni_window_i8_f32_8x32,
    avx512vnni_pw_i8_acc_8x32
}

avx512_family! {
    /// [`avx512vnni_pw_i8_auto`] with 16×16 tiles only.
    AVX512_I8_16X16, Tiles::Small;
    avx512vnni_pw_i8_16x16 / avx512vnni_window_i8_16x16,
    avx512vnni_pw_i8_f32_16x16 / avx512vnni_window_i8_f32_16x16,
    avx512vnni_pw_i8_acc_16x16
}

/// The requantising epilogue over [`pw_i8_avx512_impl`] (one copy shared by the families).
///
/// # Safety
/// The entry point's checks hold.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline(never)]
unsafe fn avx512_requant(
    a: RowsPtr<i8>,
    b: &PackedI8,
    epi: &EpiI8,
    m0: usize,
    m1: usize,
    out: &mut [i8],
    tiles: Tiles,
) {
    let (n, dst) = (b.n, out.as_mut_ptr());
    pw_i8_avx512_impl(
        a,
        b,
        Some(epi.bias),
        (m0, m1),
        tiles,
        |n0| Dequant16::new(epi, n0, n, true),
        // SAFETY: row `orow` of the output and the block's channels exist.
        |e, acc, orow, n0| unsafe { e.store_i8(acc, dst.add(orow * n + n0)) },
    );
}

/// The f32 epilogue over [`pw_i8_avx512_impl`].
///
/// # Safety
/// The entry point's checks hold.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline(never)]
unsafe fn avx512_dequant(
    a: RowsPtr<i8>,
    b: &PackedI8,
    epi: &EpiI8,
    m0: usize,
    m1: usize,
    out: &mut [f32],
    tiles: Tiles,
) {
    let (n, dst) = (b.n, out.as_mut_ptr());
    pw_i8_avx512_impl(
        a,
        b,
        Some(epi.bias),
        (m0, m1),
        tiles,
        |n0| Dequant16::new(epi, n0, n, false),
        // SAFETY: row `orow` of the output and the block's channels exist.
        |e, acc, orow, n0| unsafe { e.store_f32(acc, dst.add(orow * n + n0)) },
    );
}

/// The raw-accumulator epilogue over [`pw_i8_avx512_impl`]: one masked store per register.
///
/// # Safety
/// The entry point's checks hold.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline(never)]
unsafe fn avx512_acc(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m0: usize,
    m1: usize,
    out: &mut [i32],
    tiles: Tiles,
) {
    let (n, dst) = (b.n, out.as_mut_ptr());
    pw_i8_avx512_impl(
        a,
        b,
        None,
        (m0, m1),
        tiles,
        |n0| lanes16(n0, n),
        // SAFETY: row `orow` of the output and the block's channels exist.
        |&m, acc, orow, n0| unsafe { _mm512_mask_storeu_epi32(dst.add(orow * n + n0), m, acc) },
    );
}

/// Walks rows `[m0,m1)` in tiles of the shapes `tiles` picks. For each 16-channel block of a
/// tile, `block(n0)` prepares the epilogue once, then `store(&e, acc, orow, n0)` writes each
/// row's accumulators (`orow` counted from `m0`). `bias`: start the accumulators at it.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
unsafe fn pw_i8_avx512_impl<E>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    bias: Option<&[i32]>,
    (m0, m1): (usize, usize),
    tiles: Tiles,
    mut block: impl FnMut(usize) -> E,
    mut store: impl FnMut(&E, __m512i, usize, usize),
) {
    let panels = b.panels();
    let (nz_max, mr_max) = tiles.shape(b);
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(mr_max);
        let mut p = 0;
        while p < panels {
            // whole registers while they last, then the fewest that cover the rest
            let np = (panels - p).min(2 * nz_max);
            macro_rules! t {
                ($mr:literal, $nz:literal) => {{
                    // SAFETY: rows m..m+mr and panels p..p+np exist (checked by callers), and
                    // the tile's NZ registers cover np panels, none empty.
                    unsafe {
                        tile_i8_avx512::<$mr, $nz, E>(
                            a,
                            b,
                            bias,
                            (m, m - m0),
                            p,
                            np,
                            &mut block,
                            &mut store,
                        )
                    }
                }};
            }
            macro_rules! arms {
                ($($m:literal)*; $($s:literal)*) => {
                    match (mr, np.div_ceil(2)) {
                        $( ($m, 2) => t!($m, 2), )*
                        $( ($s, _) => t!($s, 1), )*
                        _ => unreachable!("mr <= 8 for 2 registers, <= 16 for one"),
                    }
                };
            }
            arms!(1 2 3 4 5 6 7 8; 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
            p += np;
        }
        m += mr;
    }
}

/// Rows `m..m+MR` against the `np` (`2·NZ-1` or `2·NZ`) panels from `p`, stored as output
/// rows from `orow` (see [`pw_i8_avx512_impl`] for `block` and `store`). Register `z` of a
/// row holds panels `p+2z` (low half) and `p+2z+1` (high half; zero if absent); they start
/// at `bias` (when given) minus the `a + 128` correction. The epilogue runs here, not in the
/// caller: the tile is not inlined, and returning the accumulators would send them through
/// the stack.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_i8_avx512<const MR: usize, const NZ: usize, E>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    bias: Option<&[i32]>,
    (m, orow): (usize, usize),
    p: usize,
    np: usize,
    block: &mut impl FnMut(usize) -> E,
    store: &mut impl FnMut(&E, __m512i, usize, usize),
) {
    debug_assert!(
        np.div_ceil(2) == NZ && NZ <= 2 && MR <= 16,
        "{MR}×{np} panels"
    );
    let panel_len = b.groups() * NR * 4;
    let bp = b.data.as_ptr().add(p * panel_len);
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut init = [_mm512_setzero_si512(); NZ];
    for (z, v) in init.iter_mut().enumerate() {
        let n0 = (p + 2 * z) * NR;
        let lanes = lanes16(n0, b.n);
        let ws = _mm512_maskz_loadu_epi32(lanes, b.wsum.as_ptr().add(n0));
        let start = match bias {
            Some(bias) => _mm512_maskz_loadu_epi32(lanes, bias.as_ptr().add(n0)),
            None => _mm512_setzero_si512(),
        };
        *v = _mm512_sub_epi32(start, _mm512_slli_epi32::<7>(ws));
    }
    let mut acc = [init; MR];
    a.for_each_group_at::<MR>(m, |g, at| {
        let mut w = [_mm512_setzero_si512(); NZ];
        for (z, v) in w.iter_mut().enumerate() {
            let lo = _mm256_loadu_si256(bp.add(2 * z * panel_len + g * 32) as *const __m256i);
            let hi = if 2 * z + 1 < np {
                _mm256_loadu_si256(bp.add((2 * z + 1) * panel_len + g * 32) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            *v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        }
        for (acc_r, &p) in acc.iter_mut().zip(&at) {
            let av = flip_broadcast(flip, p);
            for z in 0..NZ {
                acc_r[z] = _mm512_dpbusd_epi32(acc_r[z], av, w[z]);
            }
        }
    });
    // Spelled out so every index into `acc` is a constant: left as loops (not always
    // unrolled), they would keep `acc` in memory and spill it on every step of the K loop.
    macro_rules! rows {
        ($z:literal; $($r:literal)*) => {
            if $z < NZ {
                let n0 = (p + 2 * $z) * NR;
                let e = block(n0);
                $(
                    if let Some(acc_r) = acc.get($r) {
                        store(&e, acc_r[$z], orow + $r, n0);
                    }
                )*
            }
        };
    }
    rows!(0; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    rows!(1; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
}

// ------------------------------------------------------------------------------------------
// Depthwise, vectorised across channels.
// ------------------------------------------------------------------------------------------

/// The public depthwise entry points: check every slice and length once, assert the CPU
/// features, then run `$imp` (`WIDE` = `$wide` for 3×3 kernels; other sizes go through the
/// per-pixel path). Every input tap read lies inside the (validated) input since the tap
/// ranges are clipped to the image; outputs cover exactly rows [y0,y1).
macro_rules! dw_entry {
    ($name:ident, $t:ty, $pk:ty, $epi:ty, $imp:ident, $wide:literal, $has:ident, $feat:literal, $doc:literal) => {
        #[doc = $doc]
        pub(crate) fn $name(
            input: &[$t],
            s: &ConvShape,
            w: &$pk,
            epi: &$epi,
            y0: usize,
            y1: usize,
            out: &mut [$t],
        ) {
            generic::check_dw(input.len(), s, w, y0, y1, out.len());
            epi.check(s.cin);
            assert!($has(), concat!(stringify!($name), " needs ", $feat));
            // SAFETY: features asserted; reads and writes in bounds (see the macro's doc).
            unsafe {
                if s.kh == 3 {
                    $imp::<3, $wide>(input, s, w, epi, y0, y1, out)
                } else {
                    $imp::<0, false>(input, s, w, epi, y0, y1, out)
                }
            }
        }
    };
}

dw_entry!(
    avx2_dw_f32,
    f32,
    PackedDwF32,
    EpiF32,
    dw_f32_impl,
    false,
    has_avx2_fma,
    "AVX2+FMA",
    "Depthwise f32, any k×k/stride/pad; fully unrolled 3×3 window in the interior."
);

dw_entry!(
    avx512_dw_f32,
    f32,
    PackedDwF32,
    EpiF32,
    dw_f32_impl,
    true,
    has_avx512,
    "AVX-512F/DQ",
    "[`avx2_dw_f32`] whose 3×3 interior rows run 16 channels per register (AVX-512)."
);

#[derive(Clone, Copy)]
struct Win {
    ky0: usize,
    ky1: usize,
    kx0: usize,
    kx1: usize,
    iy0: isize,
    ix0: isize,
}

/// 3×3 kernels: every pixel through [`dw3_f32_rows`], on 16 channels per register when
/// `WIDE` (AVX-512 is present, asserted by the caller); other sizes (the 7×7 GDC head, 5×5)
/// pixel by pixel, 32 and 8 channels at a time, then one.
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_f32_impl<const K: usize, const WIDE: bool>(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF32,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    if K == 3 {
        let d = Dw3 { input, s, w, epi };
        return if WIDE {
            dw3_f32_avx512(&d, y0, y1, out)
        } else {
            dw3_f32_avx2(&d, y0, y1, out)
        };
    }
    let (c, k, ow) = (s.cin, s.kh, s.ow());
    for oy in y0..y1 {
        let (ky0, ky1) = generic::tap_range(oy, s.stride, s.pad, k, s.h);
        for ox in 0..ow {
            let (kx0, kx1) = generic::tap_range(ox, s.stride, s.pad, k, s.w);
            let win = Win {
                ky0,
                ky1,
                kx0,
                kx1,
                iy0: (oy * s.stride) as isize - s.pad as isize,
                ix0: (ox * s.stride) as isize - s.pad as isize,
            };
            let op = out.as_mut_ptr().add(((oy - y0) * ow + ox) * c);
            let mut c0 = 0;
            while c0 + 32 <= c {
                dw_f32_block::<4>(input, s, w, epi, win, c0, op);
                c0 += 32;
            }
            while c0 + 8 <= c {
                dw_f32_block::<1>(input, s, w, epi, win, c0, op);
                c0 += 8;
            }
            for cc in c0..c {
                let mut acc = 0.0f32;
                for ky in ky0..ky1 {
                    for kx in kx0..kx1 {
                        let iy = (win.iy0 + ky as isize) as usize;
                        let ix = (win.ix0 + kx as isize) as usize;
                        acc += input[(iy * s.w + ix) * c + cc] * w.data[(ky * k + kx) * c + cc];
                    }
                }
                *op.add(cc) = epi.act.apply(acc + epi.bias[cc], cc);
            }
        }
    }
}

/// `NV` vectors of 8 channels from `c0` of the pixel whose window is `win`.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_f32_block<const NV: usize>(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF32,
    epi: &EpiF32,
    win: Win,
    c0: usize,
    op: *mut f32,
) {
    let (c, k) = (s.cin, s.kh);
    let (ky0, ky1, kx0, kx1) = (win.ky0, win.ky1, win.kx0, win.kx1);
    let ip = input.as_ptr();
    let wp = w.data.as_ptr();
    let mut acc = [_mm256_setzero_ps(); NV];
    for ky in ky0..ky1 {
        let iy = (win.iy0 + ky as isize) as usize;
        for kx in kx0..kx1 {
            let ix = (win.ix0 + kx as isize) as usize;
            let ib = ip.add((iy * s.w + ix) * c + c0);
            let wb = wp.add((ky * k + kx) * c + c0);
            for v in 0..NV {
                acc[v] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(ib.add(8 * v)),
                    _mm256_loadu_ps(wb.add(8 * v)),
                    acc[v],
                );
            }
        }
    }
    for v in 0..NV {
        let cc = c0 + 8 * v;
        let x = _mm256_add_ps(acc[v], _mm256_loadu_ps(epi.bias.as_ptr().add(cc)));
        _mm256_storeu_ps(op.add(cc), act_ps(&epi.act, x, cc));
    }
}

// ------------------------------------------------------------------------------------------
// Depthwise 3×3 f32: every pixel through one row body, for both register widths.
// ------------------------------------------------------------------------------------------

/// One register of channels for the 3×3 depthwise body, which is written once for 8 lanes
/// (AVX2, [`Ymm`]) and 16 (AVX-512, [`Zmm`]). `MASKED`: only the lanes in the mask are
/// channels (the channel tail); the others are neither read nor written, so the tail needs no
/// scalar loop. The methods are `inline(always)` without target features: they are reached
/// only from [`dw3_f32_avx2`]/[`dw3_f32_avx512`], into which they inline together with the
/// intrinsics they call.
trait Lanes: Copy {
    type V: Copy;
    unsafe fn zero(self) -> Self::V;
    unsafe fn load(self, p: *const f32) -> Self::V;
    unsafe fn fmadd(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Stores `act(v)` at `p`; `slope`: the PReLU slopes of these channels.
    unsafe fn store_act(self, v: Self::V, act: &Act, slope: Self::V, p: *mut f32);
}

/// 8 channels; the mask (lanes with the sign bit set) is used only when `MASKED`.
#[derive(Clone, Copy)]
struct Ymm<const MASKED: bool>(__m256i);

/// 16 channels; the mask is used only when `MASKED`.
#[derive(Clone, Copy)]
struct Zmm<const MASKED: bool>(__mmask16);

impl<const MASKED: bool> Lanes for Ymm<MASKED> {
    type V = __m256;
    #[inline(always)]
    unsafe fn zero(self) -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        if MASKED {
            _mm256_maskload_ps(p, self.0)
        } else {
            _mm256_loadu_ps(p)
        }
    }
    #[inline(always)]
    unsafe fn fmadd(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn store_act(self, v: __m256, act: &Act, slope: __m256, p: *mut f32) {
        let v = match *act {
            Act::PRelu(_) => prelu_ps(v, slope),
            // no slopes read
            _ => act_ps(act, v, 0),
        };
        if MASKED {
            _mm256_maskstore_ps(p, self.0, v);
        } else {
            _mm256_storeu_ps(p, v);
        }
    }
}

impl<const MASKED: bool> Lanes for Zmm<MASKED> {
    type V = __m512;
    #[inline(always)]
    unsafe fn zero(self) -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        if MASKED {
            _mm512_maskz_loadu_ps(self.0, p)
        } else {
            _mm512_loadu_ps(p)
        }
    }
    #[inline(always)]
    unsafe fn fmadd(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn store_act(self, v: __m512, act: &Act, slope: __m512, p: *mut f32) {
        let v = act_ps16(act, v, slope);
        if MASKED {
            _mm512_mask_storeu_ps(p, self.0, v);
        } else {
            _mm512_storeu_ps(p, v);
        }
    }
}

/// `start + k` clamped into `[0, len)`: where a 3×3 tap that falls outside the image reads
/// instead (its weight is zeroed, so it adds ±0 and the read only has to be in bounds).
fn clamp_tap(start: isize, k: usize, len: usize) -> usize {
    (start + k as isize).clamp(0, len as isize - 1) as usize
}

/// The three input rows of one output row: element offsets of their starts (clamped inside
/// the image) and which of them are inside.
struct Rows3 {
    off: [usize; 3],
    inside: [bool; 3],
}

impl Rows3 {
    fn new(s: &ConvShape, oy: usize) -> Rows3 {
        let (ky0, ky1) = generic::tap_range(oy, s.stride, s.pad, 3, s.h);
        let iy0 = (oy * s.stride) as isize - s.pad as isize;
        Rows3 {
            off: core::array::from_fn(|ky| clamp_tap(iy0, ky, s.h) * s.w * s.cin),
            inside: core::array::from_fn(|ky| (ky0..ky1).contains(&ky)),
        }
    }
}

/// One call's operands, shared by every row and channel group.
struct Dw3<'a> {
    input: &'a [f32],
    s: &'a ConvShape,
    w: &'a PackedDwF32,
    epi: &'a EpiF32<'a>,
}

/// `N` neighbouring outputs (stride `S`) of one channel group from the three input rows at
/// `base`, of which output `i` reads input columns `first + S·i + kx` for the kernel
/// columns `KX0 <= kx < KX1` (the others fall outside the image). Each input vector is
/// loaded once and feeds every output that reads it (up to 3 at stride 1), instead of 9
/// loads per output.
#[inline(always)]
unsafe fn dw3_taps<M: Lanes, const N: usize, const S: usize, const KX0: usize, const KX1: usize>(
    m: M,
    base: &[*const f32; 3],
    first: isize,
    c: usize,
    wv: &[M::V; 9],
    bias: M::V,
) -> [M::V; N] {
    let mut acc = [bias; N];
    let kx_of = |i: usize, j: usize| j.checked_sub(S * i).filter(|kx| (KX0..KX1).contains(kx));
    for (ky, &b) in base.iter().enumerate() {
        for j in 0..S * (N - 1) + 3 {
            if (0..N).all(|i| kx_of(i, j).is_none()) {
                continue;
            }
            let x = m.load(b.offset((first + j as isize) * c as isize));
            for (i, a) in acc.iter_mut().enumerate() {
                if let Some(kx) = kx_of(i, j) {
                    *a = m.fmadd(x, wv[ky * 3 + kx], *a);
                }
            }
        }
    }
    acc
}

/// One channel group `[c0, c0+lanes)` of one output row: the input row pointers (at `c0`),
/// the nine weight vectors, kept in registers for the whole row, with the kernel rows that
/// fall outside the image zeroed (their reads go to a clamped row, see [`Rows3`]), the bias
/// and the PReLU slopes (loaded once per row, not per pixel).
struct Group<M: Lanes> {
    m: M,
    base: [*const f32; 3],
    wv: [M::V; 9],
    bias: M::V,
    slope: M::V,
}

impl<M: Lanes> Group<M> {
    #[inline(always)]
    unsafe fn new(m: M, d: &Dw3, rows: &Rows3, c0: usize) -> Self {
        let c = d.s.cin;
        let wp = d.w.data.as_ptr().add(c0);
        Group {
            m,
            base: core::array::from_fn(|ky| d.input.as_ptr().add(rows.off[ky] + c0)),
            wv: core::array::from_fn(|t| {
                if rows.inside[t / 3] {
                    m.load(wp.add(t * c))
                } else {
                    m.zero()
                }
            }),
            bias: m.load(d.epi.bias.as_ptr().add(c0)),
            slope: match d.epi.act {
                Act::PRelu(a) => m.load(a.as_ptr().add(c0)),
                _ => m.zero(),
            },
        }
    }
}

/// `N` outputs from column `ox` of one group, whose windows start at input column `first`
/// (stride `S`; kernel columns `[KX0, KX1)` inside the image), stored in the row at `orow`
/// (which starts at channel `c0`).
#[inline(always)]
unsafe fn dw3_block<
    M: Lanes,
    const N: usize,
    const S: usize,
    const KX0: usize,
    const KX1: usize,
>(
    g: &Group<M>,
    d: &Dw3,
    first: isize,
    ox: usize,
    orow: *mut f32,
) {
    let c = d.s.cin;
    let acc = dw3_taps::<M, N, S, KX0, KX1>(g.m, &g.base, first, c, &g.wv, g.bias);
    for (i, v) in acc.into_iter().enumerate() {
        g.m.store_act(v, &d.epi.act, g.slope, orow.add((ox + i) * c));
    }
}

/// One output `ox` of one group at any stride, its window possibly crossing the left or
/// right edge: the taps outside are left out at compile time (one instance per range of
/// kernel columns), so border pixels cost at most the 9 FMAs of interior ones rather than a
/// generic per-tap loop.
#[inline(always)]
unsafe fn dw3_pixel<M: Lanes>(g: &Group<M>, d: &Dw3, ox: usize, orow: *mut f32) {
    let s = d.s;
    let (kx0, kx1) = generic::tap_range(ox, s.stride, s.pad, 3, s.w);
    let first = (ox * s.stride) as isize - s.pad as isize;
    match (kx0, kx1) {
        (0, 3) => dw3_block::<M, 1, 1, 0, 3>(g, d, first, ox, orow),
        (1, 3) => dw3_block::<M, 1, 1, 1, 3>(g, d, first, ox, orow),
        (0, 2) => dw3_block::<M, 1, 1, 0, 2>(g, d, first, ox, orow),
        (1, 2) => dw3_block::<M, 1, 1, 1, 2>(g, d, first, ox, orow),
        (2, 3) => dw3_block::<M, 1, 1, 2, 3>(g, d, first, ox, orow),
        (0, 1) => dw3_block::<M, 1, 1, 0, 1>(g, d, first, ox, orow),
        _ => dw3_block::<M, 1, 1, 0, 0>(g, d, first, ox, orow), // no column inside: the bias
    }
}

/// Every output of one group in one row: at strides 1 and 2 the interior columns `N` at a
/// time, then 2 and 1 at a time; the border columns (and every column at other strides,
/// rare) pixel by pixel.
#[inline(always)]
unsafe fn dw3_group<M: Lanes, const N: usize>(g: &Group<M>, d: &Dw3, orow: *mut f32) {
    let (xa, xb) = d.s.interior_cols();
    for ox in 0..xa {
        dw3_pixel(g, d, ox, orow);
    }
    let ox = match d.s.stride {
        1 => dw3_interior::<M, N, 1>(g, d, (xa, xb), orow),
        2 => dw3_interior::<M, N, 2>(g, d, (xa, xb), orow),
        _ => xa,
    };
    for ox in ox..d.s.ow() {
        dw3_pixel(g, d, ox, orow);
    }
}

/// Interior columns `[xa, xb)` at stride `S`, `N`, 2, then 1 at a time; returns `xb`.
#[inline(always)]
unsafe fn dw3_interior<M: Lanes, const N: usize, const S: usize>(
    g: &Group<M>,
    d: &Dw3,
    (xa, xb): (usize, usize),
    orow: *mut f32,
) -> usize {
    let first = |ox: usize| (ox * S) as isize - d.s.pad as isize;
    let mut ox = xa;
    while ox + N <= xb {
        dw3_block::<M, N, S, 0, 3>(g, d, first(ox), ox, orow);
        ox += N;
    }
    while ox + 2 <= xb {
        dw3_block::<M, 2, S, 0, 3>(g, d, first(ox), ox, orow);
        ox += 2;
    }
    if ox < xb {
        dw3_block::<M, 1, S, 0, 3>(g, d, first(ox), ox, orow);
    }
    xb
}

/// Interior output columns per block. Measured on Zen (AVX-512 and AVX2 paths): 4 beats 6
/// and 8, whose 13+ input columns at stride 2 (or 8 accumulators) no longer fit the
/// registers, and ties with 3.
const DW3_COLS: usize = 4;

/// Output rows `[y0, y1)` of a 3×3 depthwise conv, channel group by channel group: whole
/// registers, then one masked register for the tail.
#[inline(always)]
unsafe fn dw3_f32_rows<const WIDE: bool>(d: &Dw3, y0: usize, y1: usize, out: &mut [f32]) {
    let (c, ow) = (d.s.cin, d.s.ow());
    for oy in y0..y1 {
        let rows = Rows3::new(d.s, oy);
        let orow = out.as_mut_ptr().add((oy - y0) * ow * c);
        let mut c0 = 0;
        if WIDE {
            while c0 + 16 <= c {
                let g = Group::new(Zmm::<false>(!0), d, &rows, c0);
                dw3_group::<_, DW3_COLS>(&g, d, orow.add(c0));
                c0 += 16;
            }
            if c0 < c {
                let m = Zmm::<true>(((1u32 << (c - c0)) - 1) as __mmask16);
                dw3_group::<_, DW3_COLS>(&Group::new(m, d, &rows, c0), d, orow.add(c0));
            }
        } else {
            while c0 + 8 <= c {
                let m = Ymm::<false>(_mm256_setzero_si256());
                dw3_group::<_, DW3_COLS>(&Group::new(m, d, &rows, c0), d, orow.add(c0));
                c0 += 8;
            }
            if c0 < c {
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let m = _mm256_cmpgt_epi32(_mm256_set1_epi32((c - c0) as i32), lane);
                dw3_group::<_, DW3_COLS>(
                    &Group::new(Ymm::<true>(m), d, &rows, c0),
                    d,
                    orow.add(c0),
                );
            }
        }
    }
}

/// [`dw3_f32_rows`] on 8 channels per register.
#[target_feature(enable = "avx2,fma")]
unsafe fn dw3_f32_avx2(d: &Dw3, y0: usize, y1: usize, out: &mut [f32]) {
    dw3_f32_rows::<false>(d, y0, y1, out)
}

/// [`dw3_f32_rows`] on 16 channels per register.
#[target_feature(enable = "avx2,fma,avx512f,avx512dq")]
unsafe fn dw3_f32_avx512(d: &Dw3, y0: usize, y1: usize, out: &mut [f32]) {
    dw3_f32_rows::<true>(d, y0, y1, out)
}

dw_entry!(
    avx2_dw_i8,
    i8,
    PackedDwI8,
    EpiI8,
    dw_i8_impl,
    false,
    has_avx2_fma,
    "AVX2+FMA",
    "Depthwise int8, any k×k/stride/pad; products in i16 (exact for i8·i8), sums in i32."
);

dw_entry!(
    avx512_dw_i8,
    i8,
    PackedDwI8,
    EpiI8,
    dw_i8_impl,
    true,
    has_avx512bw,
    "AVX-512F/BW/VL",
    "[`avx2_dw_i8`] whose 3×3 interior rows run 32 channels per register (AVX-512BW)."
);

/// `WIDE`: AVX-512BW is present (asserted by the caller) and the interior rows use it.
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_i8_impl<const K: usize, const WIDE: bool>(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    y0: usize,
    y1: usize,
    out: &mut [i8],
) {
    let (c, k, ow) = (s.cin, s.kh, s.ow());
    // Output columns whose whole 3×3 window lies inside the image, and the channels there
    // that the row kernels compute: all of them for `dw3_i8_flat`, else whole groups of 16.
    let (xa, xb) = if K == 3 { s.interior_cols() } else { (0, 0) };
    // Whole groups of 32 channels fill `dw3_i8_row32`'s registers with the weights held in
    // them, which measured faster than the flat walk (56×56×128: 66 vs 86 µs).
    let flat = WIDE
        && K == 3
        && s.stride == 1
        && !c.is_multiple_of(32)
        && c <= FLAT_MAX_C
        && w.tap_pairs.len() == 10 * (c + DW_PAIR_PAD);
    let periodic = (flat && !c.is_multiple_of(16)).then(|| PeriodicEpi::new(epi, c));
    let flat_epi = periodic.as_ref().map(|p| p.epi(epi.act));
    // With 16 or more channels the row kernels finish every channel: a count that is not a
    // multiple of 16 (103, 231 in the anti-spoofing nets) ends with one group placed at
    // `c - 16`, overlapping the group before it, whose shared channels are computed twice to
    // the same values. A scalar walk of the last few channels per pixel cost 3× the rest.
    let c16 = match (xa < xb, flat) {
        (false, _) => 0,
        (true, true) => c,
        (true, false) if c >= 16 => c,
        (true, false) => 0,
    };
    for oy in y0..y1 {
        let (ky0, ky1) = generic::tap_range(oy, s.stride, s.pad, k, s.h);
        let rows_inside = ky0 == 0 && ky1 == K;
        if rows_inside && flat && xa < xb {
            let orow = out[(oy - y0) * ow * c..].as_mut_ptr();
            let e = flat_epi.as_ref().unwrap_or(epi);
            if 32 % c == 0 {
                dw3_i8_flat::<true>(input, s, w, e, oy, xa, xb, orow);
            } else {
                dw3_i8_flat::<false>(input, s, w, e, oy, xa, xb, orow);
            }
        } else if rows_inside {
            let orow = out[(oy - y0) * ow * c..].as_mut_ptr();
            let mut c0 = 0;
            if WIDE {
                while c0 + 32 <= c16 {
                    dw3_i8_row32(input, s, w, epi, oy, xa, xb, c0, orow);
                    c0 += 32;
                }
            }
            while c0 + 16 <= c16 {
                dw3_i8_row16(input, s, w, epi, oy, xa, xb, c0, orow);
                c0 += 16;
            }
            if c0 < c16 {
                dw3_i8_row16(input, s, w, epi, oy, xa, xb, c16 - 16, orow);
            }
        }
        // Columns a row kernel finished (every channel) need no visit: at 16 channels, the
        // per-pixel bookkeeping below cost as much as the arithmetic.
        let (skip0, skip1) = if rows_inside && c16 == c {
            (xa, xb)
        } else {
            (ow, ow)
        };
        for ox in (0..skip0).chain(skip1..ow) {
            let (kx0, kx1) = generic::tap_range(ox, s.stride, s.pad, k, s.w);
            let win = Win {
                ky0,
                ky1,
                kx0,
                kx1,
                iy0: (oy * s.stride) as isize - s.pad as isize,
                ix0: (ox * s.stride) as isize - s.pad as isize,
            };
            let full = K > 0 && ky0 == 0 && kx0 == 0 && ky1 == K && kx1 == K;
            let op = out.as_mut_ptr().add(((oy - y0) * ow + ox) * c);
            let mut c0 = if rows_inside && (xa..xb).contains(&ox) {
                c16
            } else {
                0
            };
            while c0 + 32 <= c {
                if full {
                    dw_i8_block::<2, K>(input, s, w, epi, win, c0, op);
                } else {
                    dw_i8_block::<2, 0>(input, s, w, epi, win, c0, op);
                }
                c0 += 32;
            }
            while c0 + 16 <= c {
                if full {
                    dw_i8_block::<1, K>(input, s, w, epi, win, c0, op);
                } else {
                    dw_i8_block::<1, 0>(input, s, w, epi, win, c0, op);
                }
                c0 += 16;
            }
            // The last channels as one group overlapping the one before (see `c16`).
            if c0 < c && c >= 16 {
                if full {
                    dw_i8_block::<1, K>(input, s, w, epi, win, c - 16, op);
                } else {
                    dw_i8_block::<1, 0>(input, s, w, epi, win, c - 16, op);
                }
                c0 = c;
            }
            if c0 + 8 <= c {
                dw_i8_block8(input, s, w, epi, win, c0, op);
                c0 += 8;
            }
            for cc in c0..c {
                let mut acc = 0i32;
                for ky in ky0..ky1 {
                    for kx in kx0..kx1 {
                        let iy = (win.iy0 + ky as isize) as usize;
                        let ix = (win.ix0 + kx as isize) as usize;
                        acc += input[(iy * s.w + ix) * c + cc] as i32
                            * w.data[(ky * k + kx) * c + cc] as i32;
                    }
                }
                *op.add(cc) = epi.requant(acc, cc);
            }
        }
    }
}

/// Channels `[c0, c0+16)` of output columns `[xa, xb)` of output row `oy`, where the whole
/// 3×3 window is inside the image; `orow` points at the start of that output row.
///
/// The weights stay in registers for the whole row, as i16 pairs of taps (0,1), (2,3), (4,5),
/// (6,7), (8,–): `vpmaddwd` then multiplies two taps and adds them into i32 in one
/// instruction, twice the work per instruction of widening every product. `unpack` works
/// per 128-bit lane, so the accumulators hold channels (0–3, 8–11) and (4–7, 12–15) until
/// the final `permute2x128`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn dw3_i8_row16(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    oy: usize,
    xa: usize,
    xb: usize,
    c0: usize,
    orow: *mut i8,
) {
    let c = s.cin;
    let wp = w.data.as_ptr().add(c0);
    let tap_w = |t: usize| {
        if t < 9 {
            _mm256_cvtepi8_epi16(_mm_loadu_si128(wp.add(t * c) as *const __m128i))
        } else {
            _mm256_setzero_si256()
        }
    };
    let mut wlo = [_mm256_setzero_si256(); 5];
    let mut whi = [_mm256_setzero_si256(); 5];
    let mut off = [0usize; 10];
    for p in 0..5 {
        let (a, b) = (tap_w(2 * p), tap_w(2 * p + 1));
        wlo[p] = _mm256_unpacklo_epi16(a, b);
        whi[p] = _mm256_unpackhi_epi16(a, b);
    }
    for (t, o) in off.iter_mut().enumerate().take(9) {
        *o = ((t / 3) * s.w + t % 3) * c;
    }
    let iy0 = oy * s.stride - s.pad;
    for ox in xa..xb {
        let base = input
            .as_ptr()
            .add((iy0 * s.w + ox * s.stride - s.pad) * c + c0);
        let x = |t: usize| {
            if t < 9 {
                _mm256_cvtepi8_epi16(_mm_loadu_si128(base.add(off[t]) as *const __m128i))
            } else {
                _mm256_setzero_si256()
            }
        };
        let mut lo = _mm256_setzero_si256();
        let mut hi = _mm256_setzero_si256();
        for p in 0..5 {
            let (a, b) = (x(2 * p), x(2 * p + 1));
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), wlo[p]));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), whi[p]));
        }
        let first = requant8(_mm256_permute2x128_si256::<0x20>(lo, hi), epi, c0);
        let second = requant8(_mm256_permute2x128_si256::<0x31>(lo, hi), epi, c0 + 8);
        _mm_storeu_si128(
            orow.add(ox * c + c0) as *mut __m128i,
            _mm_unpacklo_epi64(first, second),
        );
    }
}

/// [`dw3_i8_row16`] on 32 channels per (512-bit) register. `unpack` works per 128-bit lane,
/// so the two accumulators hold channels (0–3, 8–11, 16–19, 24–27) and (4–7, 12–15, 20–23,
/// 28–31); one two-source permute per half restores channel order.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn dw3_i8_row32(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    oy: usize,
    xa: usize,
    xb: usize,
    c0: usize,
    orow: *mut i8,
) {
    let c = s.cin;
    let wp = w.data.as_ptr().add(c0);
    let tap_w = |t: usize| {
        if t < 9 {
            _mm512_cvtepi8_epi16(_mm256_loadu_si256(wp.add(t * c) as *const __m256i))
        } else {
            _mm512_setzero_si512()
        }
    };
    let mut wlo = [_mm512_setzero_si512(); 5];
    let mut whi = [_mm512_setzero_si512(); 5];
    for p in 0..5 {
        let (a, b) = (tap_w(2 * p), tap_w(2 * p + 1));
        wlo[p] = _mm512_unpacklo_epi16(a, b);
        whi[p] = _mm512_unpackhi_epi16(a, b);
    }
    let off: [usize; 9] = core::array::from_fn(|t| ((t / 3) * s.w + t % 3) * c);
    let first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    let second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    let iy0 = oy * s.stride - s.pad;
    for ox in xa..xb {
        let base = input
            .as_ptr()
            .add((iy0 * s.w + ox * s.stride - s.pad) * c + c0);
        let x = |t: usize| {
            if t < 9 {
                _mm512_cvtepi8_epi16(_mm256_loadu_si256(base.add(off[t]) as *const __m256i))
            } else {
                _mm512_setzero_si512()
            }
        };
        let mut lo = _mm512_setzero_si512();
        let mut hi = _mm512_setzero_si512();
        for p in 0..5 {
            let (a, b) = (x(2 * p), x(2 * p + 1));
            lo = _mm512_add_epi32(lo, _mm512_madd_epi16(_mm512_unpacklo_epi16(a, b), wlo[p]));
            hi = _mm512_add_epi32(hi, _mm512_madd_epi16(_mm512_unpackhi_epi16(a, b), whi[p]));
        }
        let dst = orow.add(ox * c + c0);
        requant16(_mm512_permutex2var_epi32(lo, first, hi), epi, c0, 16, dst);
        requant16(
            _mm512_permutex2var_epi32(lo, second, hi),
            epi,
            c0 + 16,
            16,
            dst.add(16),
        );
    }
}

/// Most channels [`dw3_i8_flat`] takes (its [`PeriodicEpi`] lives on the stack).
const FLAT_MAX_C: usize = 512;
const FLAT_LANES: usize = FLAT_MAX_C + DW_PAIR_PAD;

/// An int8 epilogue's per-channel arrays repeated with period C over `C + DW_PAIR_PAD` lanes,
/// so that 16 flat lanes starting at any channel read them as one load even where they wrap
/// past the last channel (C not a multiple of 16).
struct PeriodicEpi {
    bias: [i32; FLAT_LANES],
    mult: [f32; FLAT_LANES],
    slope: [f32; FLAT_LANES],
}

impl PeriodicEpi {
    fn new(epi: &EpiI8, c: usize) -> Self {
        let mut p = PeriodicEpi {
            bias: [0; FLAT_LANES],
            mult: [0.0; FLAT_LANES],
            slope: [0.0; FLAT_LANES],
        };
        for j in 0..c + DW_PAIR_PAD {
            p.bias[j] = epi.bias[j % c];
            p.mult[j] = epi.mult[j % c];
            if let Act::PRelu(a) = epi.act {
                p.slope[j] = a[j % c];
            }
        }
        p
    }
    fn epi<'a>(&'a self, act: Act<'a>) -> EpiI8<'a> {
        let act = match act {
            Act::PRelu(_) => Act::PRelu(&self.slope),
            other => other,
        };
        EpiI8 {
            bias: &self.bias,
            mult: &self.mult,
            act,
        }
    }
}

/// `vpermt2w` indices interleaving two vectors' i16 lanes `(a_i, b_i)`: lanes 0–15, 16–31.
static PAIR_LO: [i16; 32] = pair_index(0);
static PAIR_HI: [i16; 32] = pair_index(16);

const fn pair_index(from: i16) -> [i16; 32] {
    let mut idx = [0i16; 32];
    let mut i = 0;
    while i < 16 {
        idx[2 * i] = from + i as i16;
        idx[2 * i + 1] = 32 + from + i as i16;
        i += 1;
    }
    idx
}

/// All channels of output columns `[xa, xb)` of output row `oy` of a 3×3 stride-1 depthwise
/// conv whose whole window lies inside the image; `orow` points at the output row.
///
/// The row's pixels and channels are walked as one flat run of `(xb − xa)·C` lanes, 32 at a
/// time: with stride 1, tap (ky, kx) of flat lane `f` is lane `f + (kx − pad)·C` of input row
/// `oy − pad + ky`, so every vector is full whatever C is: 16 or 40 channels fill a register
/// as well as 256 do, where a per-pixel kernel would run half-empty registers or a slow tail.
/// Taps are paired for `vpmaddwd` as in [`dw3_i8_row32`]. When C divides 32 (`FIXED`) every
/// vector starts at channel 0, so the weights stay in registers in `unpack` order; otherwise
/// each vector's lanes are interleaved in channel order (`vpermt2w`) and read their weights
/// from [`PackedDw::tap_pairs`](super::PackedDw::tap_pairs), which holds 32 lanes' pairs from
/// any start channel. `epi` must be periodic ([`PeriodicEpi`]) when C % 16 != 0.
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
#[allow(clippy::too_many_arguments)]
unsafe fn dw3_i8_flat<const FIXED: bool>(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    oy: usize,
    xa: usize,
    xb: usize,
    orow: *mut i8,
) {
    let c = s.cin;
    let run = c + DW_PAIR_PAD;
    let row = s.w * c;
    let off: [usize; 9] = core::array::from_fn(|t| (t / 3) * row + (t % 3) * c);
    let pairs = w.tap_pairs.as_ptr();
    let pair_w = |q: usize, j: usize, half: usize| {
        _mm512_loadu_si512(pairs.add((q * run + j + 16 * half) * 2) as *const _)
    };
    let (lo_idx, hi_idx) = (
        _mm512_loadu_si512(PAIR_LO.as_ptr() as *const _),
        _mm512_loadu_si512(PAIR_HI.as_ptr() as *const _),
    );
    // FIXED: the weight pairs of lanes 0–31 in `unpacklo`/`unpackhi` order (i32 lane 4L+i of
    // the lo half holds channel 8L+i), and the permutes that restore channel order after.
    let lo_lanes = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
    let hi_lanes = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    let first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    let second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    let mut wlo = [_mm512_setzero_si512(); 5];
    let mut whi = [_mm512_setzero_si512(); 5];
    if FIXED {
        for q in 0..5 {
            let (p0, p1) = (pair_w(q, 0, 0), pair_w(q, 0, 1));
            wlo[q] = _mm512_permutex2var_epi32(p0, lo_lanes, p1);
            whi[q] = _mm512_permutex2var_epi32(p0, hi_lanes, p1);
        }
    }
    // Lane 0 of tap (0, 0) for flat lane f is `(oy − pad)·row + f − pad·C` (f >= xa·C >= pad·C).
    let top = input.as_ptr().add((oy - s.pad) * row);
    let (mut f, f1) = (xa * c, xb * c);
    // The channels of lanes f and f + 16; a periodic `epi` reads past C, a plain one
    // (C % 16 == 0) wraps at C.
    let plain = c.is_multiple_of(16);
    let wrap16 = |j: usize| if plain && j + 16 == c { 0 } else { j + 16 };
    let mut j = 0; // xa·C % C
    let mut j16 = wrap16(0);
    while f < f1 {
        let n = (f1 - f).min(32);
        let m: __mmask32 = if n == 32 { !0 } else { (1u32 << n) - 1 };
        let b = top.add(f - s.pad * c);
        let x = |t: usize| _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, b.add(off[t])));
        let mut lo = _mm512_setzero_si512();
        let mut hi = _mm512_setzero_si512();
        for q in 0..5 {
            let a = x(2 * q);
            // tap 8 has no partner: its pair's second weight is 0, any lane will do
            let bq = if q < 4 { x(2 * q + 1) } else { a };
            if FIXED {
                lo = _mm512_add_epi32(lo, _mm512_madd_epi16(_mm512_unpacklo_epi16(a, bq), wlo[q]));
                hi = _mm512_add_epi32(hi, _mm512_madd_epi16(_mm512_unpackhi_epi16(a, bq), whi[q]));
            } else {
                let (pa, pb) = (
                    _mm512_permutex2var_epi16(a, lo_idx, bq),
                    _mm512_permutex2var_epi16(a, hi_idx, bq),
                );
                lo = _mm512_add_epi32(lo, _mm512_madd_epi16(pa, pair_w(q, j, 0)));
                hi = _mm512_add_epi32(hi, _mm512_madd_epi16(pb, pair_w(q, j, 1)));
            }
        }
        if FIXED {
            (lo, hi) = (
                _mm512_permutex2var_epi32(lo, first, hi),
                _mm512_permutex2var_epi32(lo, second, hi),
            );
        }
        let dst = orow.add(f);
        requant16(lo, epi, j, n.min(16), dst);
        if n > 16 {
            requant16(hi, epi, j16, n - 16, dst.add(16));
        }
        f += 32;
        // (no `%` per vector: a division costs as much as a tap)
        if !FIXED {
            j += 32;
            while j >= c {
                j -= c;
            }
            j16 = wrap16(j);
        }
    }
}

/// `NV` groups of 16 channels from `c0`.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_i8_block<const NV: usize, const FK: usize>(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    win: Win,
    c0: usize,
    op: *mut i8,
) {
    let (c, k) = (s.cin, s.kh);
    let (ky0, ky1, kx0, kx1) = if FK > 0 {
        (0, FK, 0, FK)
    } else {
        (win.ky0, win.ky1, win.kx0, win.kx1)
    };
    let ip = input.as_ptr();
    let wp = w.data.as_ptr();
    let mut acc = [[_mm256_setzero_si256(); 2]; NV];
    for ky in ky0..ky1 {
        let iy = (win.iy0 + ky as isize) as usize;
        for kx in kx0..kx1 {
            let ix = (win.ix0 + kx as isize) as usize;
            let ib = ip.add((iy * s.w + ix) * c + c0);
            let wb = wp.add((ky * k + kx) * c + c0);
            for v in 0..NV {
                let x = _mm256_cvtepi8_epi16(_mm_loadu_si128(ib.add(16 * v) as *const __m128i));
                let y = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.add(16 * v) as *const __m128i));
                let p = _mm256_mullo_epi16(x, y); // |i8·i8| <= 16384 fits i16 exactly
                acc[v][0] =
                    _mm256_add_epi32(acc[v][0], _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
                acc[v][1] = _mm256_add_epi32(
                    acc[v][1],
                    _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(p)),
                );
            }
        }
    }
    for v in 0..NV {
        let cc = c0 + 16 * v;
        let lo = requant8(acc[v][0], epi, cc);
        let hi = requant8(acc[v][1], epi, cc + 8);
        _mm_storeu_si128(op.add(cc) as *mut __m128i, _mm_unpacklo_epi64(lo, hi));
    }
}

/// 8 channels from `c0` (the tail of e.g. 24/40/56 channels).
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_i8_block8(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    win: Win,
    c0: usize,
    op: *mut i8,
) {
    let (c, k) = (s.cin, s.kh);
    let ip = input.as_ptr();
    let wp = w.data.as_ptr();
    let mut acc = _mm256_setzero_si256();
    for ky in win.ky0..win.ky1 {
        let iy = (win.iy0 + ky as isize) as usize;
        for kx in win.kx0..win.kx1 {
            let ix = (win.ix0 + kx as isize) as usize;
            let x = _mm_cvtepi8_epi16(_mm_loadl_epi64(
                ip.add((iy * s.w + ix) * c + c0) as *const __m128i
            ));
            let y = _mm_cvtepi8_epi16(_mm_loadl_epi64(
                wp.add((ky * k + kx) * c + c0) as *const __m128i
            ));
            acc = _mm256_add_epi32(acc, _mm256_cvtepi16_epi32(_mm_mullo_epi16(x, y)));
        }
    }
    _mm_storel_epi64(op.add(c0) as *mut __m128i, requant8(acc, epi, c0));
}

// ------------------------------------------------------------------------------------------
// Elementwise
// ------------------------------------------------------------------------------------------

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
        out[j] = super::sat_i8(x[j] * inv_scale);
    }
}

/// `out = sat(round(a*sa + b*sb))`, 16 lanes at a time.
pub(crate) fn avx2_add_i8(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    super::check_add_lens(a.len(), b.len(), out.len());
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
        out[j] = super::sat_i8(a[j] as f32 * sa + b[j] as f32 * sb);
    }
}

/// [`avx2_add_i8`] on 512-bit registers: 16 lanes per conversion, the narrowing in one
/// instruction (`vpmovdb`, after the clamp to ±127) and the tail through masks. A residual
/// add touches every value of a feature map twice for two multiplies: the AVX2 form's
/// conversions and packs made it one of the costlier steps of the small liveness network.
pub(crate) fn avx512_add_i8(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    super::check_add_lens(a.len(), b.len(), out.len());
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
