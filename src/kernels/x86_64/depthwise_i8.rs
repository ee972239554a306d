//! int8 depthwise convs on x86, vectorised across channels (NHWC), products exact in i16 and
//! summed in i32. The 3×3 kernels (the bulk of the int8 nets' depthwise time) run interior
//! rows through row kernels with the weights held in registers as tap pairs for `vpmaddwd`:
//! [`dw3_i8_row16`] (AVX2), [`dw3_i8_row32`] (AVX-512BW, 32 channels per register) and
//! [`dw3_i8_flat`] (AVX-512BW, stride 1, pixels and channels walked as one run so any C
//! fills the registers); borders and other filter sizes go through [`dw_i8_block`] and
//! [`dw_i8_block8`]. [`dw_i8_impl`] decides which runs where. Intrinsics only.

use core::arch::x86_64::*;

use super::depthwise::Win;
use super::epilogue::{requant16, requant8};
use super::{has_avx2_fma, has_avx512bw};
use crate::kernels::{generic, Act, ConvShape, EpiI8, PackedDwI8, DW_PAIR_PAD};

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
/// from [`PackedDw::tap_pairs`](crate::kernels::PackedDw::tap_pairs), which holds 32 lanes' pairs from
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
