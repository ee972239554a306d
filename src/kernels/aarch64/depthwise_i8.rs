//! aarch64 depthwise int8 (NEON, ARMv8.0; the same kernel runs on dotprod CPUs, since no
//! depthwise kernel uses `sdot`), vectorised across channels: taps in pairs summed in i16
//! by `smull` + `smlal` (exact within ±127), then widened into i32.
//!
//! 3×3 with C >= 8 ([`dw3_i8`]): interior pixels of a row go through [`dw3_row_i8`] (weights
//! and epilogue held in registers along the row); border pixels through [`dw3_px_i8`], the
//! same arithmetic with each tap read through its own pointer, those outside the image
//! pointing at zeros (a zero input adds nothing, so the sums are the generic kernel's
//! exactly). Any other k×k: [`dw_i8_any`] on the clipped window. Intrinsics, but the paired
//! products ([`mul2`], [`mul1`]) are `asm!`: LLVM would move the high halves down with `ext`
//! before a plain `smull`.

use core::arch::aarch64::*;
use core::arch::asm;

use super::depthwise::Win;
use super::epilogue::{clamp16, narrow8, relu6_i8, requant4};
use crate::kernels::{generic, Act, ConvShape, EpiI8, PackedDwI8};

/// Depthwise int8, any k×k/stride/pad; `smull` products (exact in i16) widened into i32.
pub(crate) fn neon_dw_i8(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    y0: usize,
    y1: usize,
    out: &mut [i8],
) {
    generic::check_dw(input.len(), s, w, y0, y1, out.len());
    epi.check(s.cin);
    // SAFETY: as neon_dw_f32.
    unsafe {
        if s.kh == 3 && s.kw == 3 && s.cin >= 8 {
            match epi.act {
                Act::None => dw3_i8::<0>(input, s, w, epi, y0, y1, out),
                Act::Relu => dw3_i8::<1>(input, s, w, epi, y0, y1, out),
                Act::Relu6(_) => dw3_i8::<2>(input, s, w, epi, y0, y1, out),
                Act::PRelu(_) => dw3_i8::<3>(input, s, w, epi, y0, y1, out),
            }
        } else {
            dw_i8_any(input, s, w, epi, y0, y1, out)
        }
    }
}

/// 3×3 depthwise int8, C >= 8, output rows `[y0, y1)`: on rows whose window is inside the
/// image vertically, the columns inside it horizontally go through [`dw3_row_i8`]; every
/// other pixel through [`dw3_px_i8`], its taps outside the image reading a row of zeros.
/// `ACT` as [`dw3_px16`].
/// The row of zeros that taps outside the image read (one byte per channel, up to the
/// model limits' channel count).
static ZEROS: [i8; crate::limits::MAX_CHANNELS] = [0; crate::limits::MAX_CHANNELS];

#[target_feature(enable = "neon")]
unsafe fn dw3_i8<const ACT: u8>(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    y0: usize,
    y1: usize,
    out: &mut [i8],
) {
    let (c, ow) = (s.cin, s.ow());
    let (xa, xb) = s.interior_cols();
    // Static, not a Vec: kernels allocate nothing per frame (tests/engine_alloc.rs).
    assert!(
        c <= ZEROS.len(),
        "{c} channels: more than the model limits allow"
    );
    let zeros = &ZEROS[..c];
    let hq = relu6_bound(epi);
    for oy in y0..y1 {
        let orow = out.as_mut_ptr().add((oy - y0) * ow * c);
        let (ky0, ky1) = generic::tap_range(oy, s.stride, s.pad, 3, s.h);
        // [xa, xb) done along the row, or (0, 0): every column pixel by pixel
        let (ra, rb) = if ky0 == 0 && ky1 == 3 && xa < xb {
            dw3_row_i8::<ACT>(input, s, w, epi, oy, xa, xb, orow);
            (xa, xb)
        } else {
            (0, 0)
        };
        for ox in (0..ra).chain(rb..ow) {
            let taps = tap_ptrs(input, s, oy, ox, zeros.as_ptr());
            dw3_px_i8::<ACT>(&taps, c, w.data.as_ptr(), epi, hq, orow.add(ox * c));
        }
    }
}

/// Channel 0 of each input pixel of output pixel (oy, ox)'s 3×3 window, tap `t` at `ky =
/// t / 3`, `kx = t % 3`; `zeros` (C zero bytes) for taps outside the image.
#[inline(always)]
fn tap_ptrs(input: &[i8], s: &ConvShape, oy: usize, ox: usize, zeros: *const i8) -> [*const i8; 9] {
    let iy0 = (oy * s.stride) as isize - s.pad as isize;
    let ix0 = (ox * s.stride) as isize - s.pad as isize;
    core::array::from_fn(|t| {
        let (iy, ix) = (iy0 + (t / 3) as isize, ix0 + (t % 3) as isize);
        if (0..s.h as isize).contains(&iy) && (0..s.w as isize).contains(&ix) {
            input[(iy as usize * s.w + ix as usize) * s.cin..].as_ptr()
        } else {
            zeros
        }
    })
}

/// The int8 bound of ReLU6 (127 for the other activations), for [`clamp16`].
#[inline(always)]
fn relu6_bound(epi: &EpiI8) -> i8 {
    match epi.act {
        Act::Relu6(hi) => relu6_i8(hi) as i8,
        _ => 127,
    }
}

/// Bias, multiplier and activation parameter (ReLU6 bound or PReLU slopes) of the `4 · Q`
/// channels from `c0`, `Q` vectors each.
#[inline(always)]
unsafe fn epi_vecs<const Q: usize>(
    epi: &EpiI8,
    c0: usize,
) -> ([int32x4_t; Q], [float32x4_t; Q], [float32x4_t; Q]) {
    let bias = core::array::from_fn(|i| vld1q_s32(epi.bias.as_ptr().add(c0 + 4 * i)));
    let mult = core::array::from_fn(|i| vld1q_f32(epi.mult.as_ptr().add(c0 + 4 * i)));
    let par = match epi.act {
        Act::Relu6(hi) => [vdupq_n_f32(hi); Q],
        Act::PRelu(a) => core::array::from_fn(|i| vld1q_f32(a.as_ptr().add(c0 + 4 * i))),
        _ => [vdupq_n_f32(0.0); Q],
    };
    (bias, mult, par)
}

/// Where the 8-channel blocks go after the 16-channel ones end at `c0`: one at `c0` if 8
/// channels are left, and when C is not a multiple of 8 one at C − 8, overlapping the block
/// before it (channels computed twice, to the same values), so no channel is left over.
#[inline(always)]
fn blocks8(c: usize, c0: usize) -> impl Iterator<Item = usize> {
    let first = (c0 + 8 <= c).then_some(c0);
    let last = (!c.is_multiple_of(8)).then_some(c - 8);
    first.into_iter().chain(last)
}

/// Requantise 4 accumulators to i32 (rounded; saturated by the narrowing that follows).
/// `ACT`: 0 none, 1 ReLU, 2 ReLU6 (both clamped in int8 by [`clamp16`]), 3 PReLU (slopes
/// `par`, applied in float).
#[inline(always)]
unsafe fn requant_q<const ACT: u8>(
    acc: int32x4_t,
    mult: float32x4_t,
    par: float32x4_t,
) -> int32x4_t {
    let v = vmulq_f32(vcvtq_f32_s32(acc), mult);
    let v = match ACT {
        3 => vbslq_f32(vcltq_f32(v, vdupq_n_f32(0.0)), vmulq_f32(v, par), v),
        _ => v,
    };
    vcvtaq_s32_f32(v)
}

/// One pixel × 16 channels: the 9 taps `x(t)` against the weights `wv`, in pairs summed in
/// i16 (`smull` + `smlal`, exact within ±127) and widened into accumulators that start at
/// the bias; requantised and clamped.
#[inline(always)]
unsafe fn dw3_px16<const ACT: u8>(
    x: impl Fn(usize) -> int8x16_t,
    wv: &[int8x16_t; 9],
    epi: &([int32x4_t; 4], [float32x4_t; 4], [float32x4_t; 4]),
    hq: i8,
) -> int8x16_t {
    let (bias, mult, par) = epi;
    let mut acc = *bias;
    for pr in 0..4 {
        let (lo, hi) = mul2(x(2 * pr), wv[2 * pr], x(2 * pr + 1), wv[2 * pr + 1]);
        acc = widen16(acc, lo, hi);
    }
    let (lo, hi) = mul1(x(8), wv[8]);
    acc = widen16(acc, lo, hi);
    let q: [int32x4_t; 4] = core::array::from_fn(|i| requant_q::<ACT>(acc[i], mult[i], par[i]));
    let v = vcombine_s8(narrow8(q[0], q[1]), narrow8(q[2], q[3]));
    clamp16::<ACT>(v, hq)
}

/// [`dw3_px16`] on 8 channels, 64-bit vectors.
#[inline(always)]
unsafe fn dw3_px8<const ACT: u8>(
    x: impl Fn(usize) -> int8x8_t,
    wv: &[int8x8_t; 9],
    epi: &([int32x4_t; 2], [float32x4_t; 2], [float32x4_t; 2]),
    hq: i8,
) -> int8x8_t {
    let (bias, mult, par) = epi;
    let mut acc = *bias;
    for pr in 0..5 {
        let p = if pr < 4 {
            vmlal_s8(
                vmull_s8(x(2 * pr), wv[2 * pr]),
                x(2 * pr + 1),
                wv[2 * pr + 1],
            )
        } else {
            vmull_s8(x(8), wv[8])
        };
        acc[0] = vaddw_s16(acc[0], vget_low_s16(p));
        acc[1] = vaddw_high_s16(acc[1], p);
    }
    let q: [int32x4_t; 2] = core::array::from_fn(|i| requant_q::<ACT>(acc[i], mult[i], par[i]));
    let v = vcombine_s8(narrow8(q[0], q[1]), vdup_n_s8(0));
    vget_low_s8(clamp16::<ACT>(v, hq))
}

/// 3×3 depthwise int8 along output row `oy`, columns `[xa, xb)` (all inside the image), for
/// every channel (C >= 8) in blocks of 16 then 8 ([`blocks8`]): per block the 9 weight
/// vectors, bias, multiplier and activation parameters are loaded once for the whole row;
/// per pixel, 9 loads and [`dw3_px16`] / [`dw3_px8`]. `orow` is output row `oy`.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw3_row_i8<const ACT: u8>(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    oy: usize,
    xa: usize,
    xb: usize,
    orow: *mut i8,
) {
    let (c, st) = (s.cin, s.stride);
    let rs = s.w * c;
    let ip = input.as_ptr().add((oy * st - s.pad) * rs);
    let wp = w.data.as_ptr();
    let hq = relu6_bound(epi);
    let mut c0 = 0;
    while c0 + 16 <= c {
        let wv: [int8x16_t; 9] = core::array::from_fn(|t| vld1q_s8(wp.add(t * c + c0)));
        let e = epi_vecs::<4>(epi, c0);
        for ox in xa..xb {
            let base = ip.add((ox * st - s.pad) * c + c0);
            let x = |t: usize| vld1q_s8(base.add((t / 3) * rs + (t % 3) * c));
            vst1q_s8(orow.add(ox * c + c0), dw3_px16::<ACT>(x, &wv, &e, hq));
        }
        c0 += 16;
    }
    for c0 in blocks8(c, c0) {
        let wv: [int8x8_t; 9] = core::array::from_fn(|t| vld1_s8(wp.add(t * c + c0)));
        let e = epi_vecs::<2>(epi, c0);
        for ox in xa..xb {
            let base = ip.add((ox * st - s.pad) * c + c0);
            let x = |t: usize| vld1_s8(base.add((t / 3) * rs + (t % 3) * c));
            vst1_s8(orow.add(ox * c + c0), dw3_px8::<ACT>(x, &wv, &e, hq));
        }
    }
}

/// One output pixel of a 3×3 depthwise int8 conv, every channel (C >= 8), tap `t` read at
/// `taps[t]` (channel 0; see [`tap_ptrs`]); `wp` the packed weights, `op` the pixel's output.
/// The weights and epilogue are loaded per block: this serves the border pixels only.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn dw3_px_i8<const ACT: u8>(
    taps: &[*const i8; 9],
    c: usize,
    wp: *const i8,
    epi: &EpiI8,
    hq: i8,
    op: *mut i8,
) {
    let mut c0 = 0;
    while c0 + 16 <= c {
        let wv: [int8x16_t; 9] = core::array::from_fn(|t| vld1q_s8(wp.add(t * c + c0)));
        let e = epi_vecs::<4>(epi, c0);
        let x = |t: usize| vld1q_s8(taps[t].add(c0));
        vst1q_s8(op.add(c0), dw3_px16::<ACT>(x, &wv, &e, hq));
        c0 += 16;
    }
    for c0 in blocks8(c, c0) {
        let wv: [int8x8_t; 9] = core::array::from_fn(|t| vld1_s8(wp.add(t * c + c0)));
        let e = epi_vecs::<2>(epi, c0);
        let x = |t: usize| vld1_s8(taps[t].add(c0));
        vst1_s8(op.add(c0), dw3_px8::<ACT>(x, &wv, &e, hq));
    }
}

/// Any other depthwise int8 (not 3×3, or C < 8), pixel by pixel: 16- and 8-channel blocks
/// over the window's taps inside the image, the channels left scalar.
#[target_feature(enable = "neon")]
unsafe fn dw_i8_any(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    y0: usize,
    y1: usize,
    out: &mut [i8],
) {
    let (c, k, ow) = (s.cin, s.kh, s.ow());
    let outp = out.as_mut_ptr();
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
            let op = outp.add(((oy - y0) * ow + ox) * c);
            let mut c0 = 0;
            while c0 + 16 <= c {
                dw_i8_block16(input, s, w, epi, win, c0, op);
                c0 += 16;
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

/// 16 lanes of `x0·w0 + x1·w1` in i16 (exact within ±127): (channels 0..8, 8..16). Asm
/// because LLVM otherwise moves the high halves down with `ext` before a plain `smull`.
#[inline(always)]
unsafe fn mul2(
    x0: int8x16_t,
    w0: int8x16_t,
    x1: int8x16_t,
    w1: int8x16_t,
) -> (int16x8_t, int16x8_t) {
    let (lo, hi): (int16x8_t, int16x8_t);
    // SAFETY: register-only NEON instructions.
    unsafe {
        asm!(
            "smull {lo:v}.8h, {x0:v}.8b, {w0:v}.8b",
            "smull2 {hi:v}.8h, {x0:v}.16b, {w0:v}.16b",
            "smlal {lo:v}.8h, {x1:v}.8b, {w1:v}.8b",
            "smlal2 {hi:v}.8h, {x1:v}.16b, {w1:v}.16b",
            x0 = in(vreg) x0, w0 = in(vreg) w0, x1 = in(vreg) x1, w1 = in(vreg) w1,
            lo = out(vreg) lo, hi = out(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (lo, hi)
}

/// 16 lanes of `x·w` in i16, as [`mul2`].
#[inline(always)]
unsafe fn mul1(x: int8x16_t, w: int8x16_t) -> (int16x8_t, int16x8_t) {
    let (lo, hi): (int16x8_t, int16x8_t);
    // SAFETY: register-only NEON instructions.
    unsafe {
        asm!(
            "smull {lo:v}.8h, {x:v}.8b, {w:v}.8b",
            "smull2 {hi:v}.8h, {x:v}.16b, {w:v}.16b",
            x = in(vreg) x, w = in(vreg) w, lo = out(vreg) lo, hi = lateout(vreg) hi,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (lo, hi)
}

/// Widen 16 i16 lanes (`lo`: channels 0..8, `hi`: 8..16) into four i32 accumulators.
#[inline(always)]
unsafe fn widen16(acc: [int32x4_t; 4], lo: int16x8_t, hi: int16x8_t) -> [int32x4_t; 4] {
    [
        vaddw_s16(acc[0], vget_low_s16(lo)),
        vaddw_high_s16(acc[1], lo),
        vaddw_s16(acc[2], vget_low_s16(hi)),
        vaddw_high_s16(acc[3], hi),
    ]
}

#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_i8_block16(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    win: Win,
    c0: usize,
    op: *mut i8,
) {
    let (c, k) = (s.cin, s.kh);
    let (ky0, ky1, kx0, kx1) = (win.ky0, win.ky1, win.kx0, win.kx1);
    let ip = input.as_ptr();
    let wp = w.data.as_ptr();
    let mut acc = [vdupq_n_s32(0); 4];
    // Taps go in pairs: `smull` + `smlal` sum two products per i16 lane (exact within ±127,
    // 2·127² < 32767), so one widening into i32 serves two taps.
    let mut pending: Option<(int8x16_t, int8x16_t)> = None;
    for ky in ky0..ky1 {
        let iy = (win.iy0 + ky as isize) as usize;
        for kx in kx0..kx1 {
            let ix = (win.ix0 + kx as isize) as usize;
            let x = vld1q_s8(ip.add((iy * s.w + ix) * c + c0));
            let y = vld1q_s8(wp.add((ky * k + kx) * c + c0));
            match pending.take() {
                None => pending = Some((x, y)),
                Some((x0, y0)) => {
                    let lo = vmlal_s8(
                        vmull_s8(vget_low_s8(x0), vget_low_s8(y0)),
                        vget_low_s8(x),
                        vget_low_s8(y),
                    );
                    let hi = vmlal_high_s8(vmull_high_s8(x0, y0), x, y);
                    acc = widen16(acc, lo, hi);
                }
            }
        }
    }
    if let Some((x, y)) = pending {
        acc = widen16(
            acc,
            vmull_s8(vget_low_s8(x), vget_low_s8(y)),
            vmull_high_s8(x, y),
        );
    }
    let a = narrow8(requant4(acc[0], epi, c0), requant4(acc[1], epi, c0 + 4));
    let b = narrow8(
        requant4(acc[2], epi, c0 + 8),
        requant4(acc[3], epi, c0 + 12),
    );
    vst1q_s8(op.add(c0), vcombine_s8(a, b));
}

#[target_feature(enable = "neon")]
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
    let mut acc = [vdupq_n_s32(0); 2];
    // Taps in pairs summed in i16, as dw_i8_block16.
    let mut pending: Option<int16x8_t> = None;
    for ky in win.ky0..win.ky1 {
        let iy = (win.iy0 + ky as isize) as usize;
        for kx in win.kx0..win.kx1 {
            let ix = (win.ix0 + kx as isize) as usize;
            let x = vld1_s8(ip.add((iy * s.w + ix) * c + c0));
            let y = vld1_s8(wp.add((ky * k + kx) * c + c0));
            match pending.take() {
                None => pending = Some(vmull_s8(x, y)),
                Some(p) => {
                    let p = vmlal_s8(p, x, y);
                    acc[0] = vaddw_s16(acc[0], vget_low_s16(p));
                    acc[1] = vaddw_high_s16(acc[1], p);
                }
            }
        }
    }
    if let Some(p) = pending {
        acc[0] = vaddw_s16(acc[0], vget_low_s16(p));
        acc[1] = vaddw_high_s16(acc[1], p);
    }
    vst1_s8(
        op.add(c0),
        narrow8(requant4(acc[0], epi, c0), requant4(acc[1], epi, c0 + 4)),
    );
}
