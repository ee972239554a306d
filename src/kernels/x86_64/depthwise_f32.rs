//! f32 depthwise convs on x86, vectorised across channels (NHWC). 3×3 filters (nearly every
//! depthwise layer of the face nets) go through one row body written once for both register
//! widths (the [`Lanes`] trait: AVX2 [`Ymm`], AVX-512 [`Zmm`]), with the channel tail in a
//! masked register rather than a scalar loop; other sizes (the 7×7 GDC head, 5×5) pixel by
//! pixel. Intrinsics only.

use core::arch::x86_64::*;

use super::depthwise::Win;
use super::epilogue::{act_ps, act_ps16, prelu_ps};
use super::{has_avx2_fma, has_avx512};
use crate::kernels::{generic, Act, ConvShape, EpiF32, PackedDwF32};

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
