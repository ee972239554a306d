//! aarch64 depthwise f32 (NEON, ARMv8.0), vectorised across channels with `fmla`.
//!
//! 3×3 with C a multiple of 4: interior pixels of a row go through [`dw3_row_f32`] (weights
//! held in registers along the row), the others pixel by pixel; any other k×k through
//! [`dw_f32_block`] on the clipped window. Intrinsics.

use core::arch::aarch64::*;

use super::depthwise::Win;
use super::epilogue::act4;
use crate::kernels::{generic, Act, ConvShape, EpiF32, PackedDwF32};

/// Depthwise f32, any k×k/stride/pad; fully unrolled 3×3 window in the interior.
pub(crate) fn neon_dw_f32(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF32,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    generic::check_dw(input.len(), s, w, y0, y1, out.len());
    epi.check(s.cin);
    // SAFETY: NEON architectural; tap ranges clipped to the image, output rows [y0,y1) only.
    unsafe {
        if s.kh == 3 {
            dw_f32_impl::<3>(input, s, w, epi, y0, y1, out)
        } else {
            dw_f32_impl::<0>(input, s, w, epi, y0, y1, out)
        }
    }
}

#[target_feature(enable = "neon")]
unsafe fn dw_f32_impl<const K: usize>(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF32,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    let (c, k, ow) = (s.cin, s.kh, s.ow());
    // 3×3 with C a multiple of 4: output columns [xa, xb) see a full horizontal window; on
    // rows with a full vertical window too, they go through dw3_row_f32 (weights held in
    // registers along the row), the border columns pixel by pixel below.
    let (xa, xb) = if K == 3 && c.is_multiple_of(4) {
        s.interior_cols()
    } else {
        (0, 0)
    };
    for oy in y0..y1 {
        let (ky0, ky1) = generic::tap_range(oy, s.stride, s.pad, k, s.h);
        let fast_row = xa < xb && ky0 == 0 && ky1 == 3;
        if fast_row {
            let orow = out.as_mut_ptr().add((oy - y0) * ow * c);
            match epi.act {
                Act::None => dw3_row_f32::<0>(input, s, w, epi, oy, xa, xb, orow),
                Act::Relu => dw3_row_f32::<1>(input, s, w, epi, oy, xa, xb, orow),
                Act::Relu6(_) => dw3_row_f32::<2>(input, s, w, epi, oy, xa, xb, orow),
                Act::PRelu(_) => dw3_row_f32::<3>(input, s, w, epi, oy, xa, xb, orow),
            }
        }
        let (ra, rb) = if fast_row { (xa, xb) } else { (0, 0) };
        for ox in (0..ra).chain(rb..ow) {
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
            let mut c0 = 0;
            while c0 + 16 <= c {
                if full {
                    dw_f32_block::<4, K>(input, s, w, epi, win, c0, op);
                } else {
                    dw_f32_block::<4, 0>(input, s, w, epi, win, c0, op);
                }
                c0 += 16;
            }
            while c0 + 4 <= c {
                dw_f32_block::<1, 0>(input, s, w, epi, win, c0, op);
                c0 += 4;
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

#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_f32_block<const NV: usize, const FK: usize>(
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
    let mut acc = [vdupq_n_f32(0.0); NV];
    for ky in ky0..ky1 {
        let iy = (win.iy0 + ky as isize) as usize;
        for kx in kx0..kx1 {
            let ix = (win.ix0 + kx as isize) as usize;
            let ib = ip.add((iy * s.w + ix) * c + c0);
            let wb = wp.add((ky * k + kx) * c + c0);
            for v in 0..NV {
                acc[v] = vfmaq_f32(acc[v], vld1q_f32(ib.add(4 * v)), vld1q_f32(wb.add(4 * v)));
            }
        }
    }
    for v in 0..NV {
        let cc = c0 + 4 * v;
        let x = vaddq_f32(acc[v], vld1q_f32(epi.bias.as_ptr().add(cc)));
        vst1q_f32(op.add(cc), act4(&epi.act, x, cc));
    }
}

/// [`act4`] with the activation chosen at compile time (`ACT`: 0 none, 1 ReLU, 2 ReLU6 with
/// bound `par`, 3 PReLU with slopes `par`): the same operations, so the same results.
#[inline(always)]
unsafe fn act_q<const ACT: u8>(v: float32x4_t, par: float32x4_t) -> float32x4_t {
    let zero = vdupq_n_f32(0.0);
    match ACT {
        1 => vmaxq_f32(v, zero),
        2 => vminq_f32(vmaxq_f32(v, zero), par),
        3 => vbslq_f32(vcltq_f32(v, zero), vmulq_f32(v, par), v),
        _ => v,
    }
}

/// 3×3 depthwise f32 along output row `oy`, columns `[xa, xb)` (all inside the image), C a
/// multiple of 4, in blocks of 8 channels then 4: per block the 9 weight vectors (18
/// registers for 8 channels), bias and activation parameters are loaded once for the whole
/// row (the per-pixel path reloads every weight for every pixel and loops over taps: 2–3
/// instructions per product). Per pixel the taps go in the per-pixel path's order (`fmla`
/// from zero, ky then kx, then the bias), so the results are the same. `orow` is output row
/// `oy`.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw3_row_f32<const ACT: u8>(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF32,
    epi: &EpiF32,
    oy: usize,
    xa: usize,
    xb: usize,
    orow: *mut f32,
) {
    let c = s.cin;
    let mut c0 = 0;
    while c0 + 8 <= c {
        dw3_row_f32_block::<ACT, 2>(input, s, w, epi, oy, xa, xb, c0, orow);
        c0 += 8;
    }
    if c0 < c {
        dw3_row_f32_block::<ACT, 1>(input, s, w, epi, oy, xa, xb, c0, orow);
    }
}

/// Channels `c0..c0 + 4·NV` of [`dw3_row_f32`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dw3_row_f32_block<const ACT: u8, const NV: usize>(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF32,
    epi: &EpiF32,
    oy: usize,
    xa: usize,
    xb: usize,
    c0: usize,
    orow: *mut f32,
) {
    let (c, st) = (s.cin, s.stride);
    let rs = s.w * c;
    let ip = input.as_ptr().add((oy * st - s.pad) * rs + c0);
    let wp = w.data.as_ptr().add(c0);
    let wv: [[float32x4_t; NV]; 9] =
        core::array::from_fn(|t| core::array::from_fn(|v| vld1q_f32(wp.add(t * c + 4 * v))));
    let bias: [float32x4_t; NV] =
        core::array::from_fn(|v| vld1q_f32(epi.bias.as_ptr().add(c0 + 4 * v)));
    let par: [float32x4_t; NV] = match epi.act {
        Act::Relu6(hi) => [vdupq_n_f32(hi); NV],
        Act::PRelu(a) => core::array::from_fn(|v| vld1q_f32(a.as_ptr().add(c0 + 4 * v))),
        _ => [vdupq_n_f32(0.0); NV],
    };
    for ox in xa..xb {
        let base = ip.add((ox * st - s.pad) * c);
        let mut acc = [vdupq_n_f32(0.0); NV];
        for (t, wt) in wv.iter().enumerate() {
            let x = base.add((t / 3) * rs + (t % 3) * c);
            for v in 0..NV {
                acc[v] = vfmaq_f32(acc[v], vld1q_f32(x.add(4 * v)), wt[v]);
            }
        }
        let op = orow.add(ox * c + c0);
        for v in 0..NV {
            vst1q_f32(
                op.add(4 * v),
                act_q::<ACT>(vaddq_f32(acc[v], bias[v]), par[v]),
            );
        }
    }
}
