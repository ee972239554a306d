//! What the aarch64 kernels do after accumulating: bias, activation, requantisation to int8
//! (`fcvtas`, round half away from zero like `f32::round`, then saturating narrows, so the
//! results are the generic kernel's exactly) or dequantisation to f32, and the stores.
//! Shared by the GEMM tiles (through [`Sink`] and [`store_tile`]), the depthwise kernels
//! (`act4`, `requant4`, `narrow8`, `relu6_i8`, `clamp16`), the fp16 GEMM (`store_epi_f32`)
//! and the int8 add (`narrow8`).
//!
//! A tile's epilogue works on the whole tile: bias, multiplier and activation parameters are
//! loaded once for its rows and the activation is chosen once per tile (const `ACT`); a
//! partial panel and raw i32 accumulators go the scalar way. Intrinsics, all
//! `inline(always)`: they compile into each kernel with its target features.

use core::arch::aarch64::*;

use crate::kernels::{Act, EpiF32, EpiI8, NR};

#[inline(always)]
pub(super) unsafe fn act4(act: &Act, v: float32x4_t, c0: usize) -> float32x4_t {
    let zero = vdupq_n_f32(0.0);
    match *act {
        Act::None => v,
        Act::Relu => vmaxq_f32(v, zero),
        Act::Relu6(hi) => vminq_f32(vmaxq_f32(v, zero), vdupq_n_f32(hi)),
        Act::PRelu(a) => {
            // SAFETY: caller guarantees c0 + 4 <= N <= a.len().
            let al = unsafe { vld1q_f32(a.as_ptr().add(c0)) };
            vbslq_f32(vcltq_f32(v, zero), vmulq_f32(v, al), v)
        }
    }
}

/// Requantise 4 accumulators (channels `c0..c0+4`) to i32 already rounded and saturated later.
#[inline(always)]
pub(super) unsafe fn requant4(acc: int32x4_t, epi: &EpiI8, c0: usize) -> int32x4_t {
    // SAFETY: caller guarantees c0 + 4 <= N <= bias.len(), mult.len().
    let (b, m) = unsafe {
        (
            vld1q_s32(epi.bias.as_ptr().add(c0)),
            vld1q_f32(epi.mult.as_ptr().add(c0)),
        )
    };
    let v = vmulq_f32(vcvtq_f32_s32(vaddq_s32(acc, b)), m);
    // SAFETY: same bound for PReLU slopes.
    let v = unsafe { act4(&epi.act, v, c0) };
    vcvtaq_s32_f32(v)
}

/// Two requantised quads → 8 i8 clamped to [-127, 127].
#[inline(always)]
pub(super) unsafe fn narrow8(q0: int32x4_t, q1: int32x4_t) -> int8x8_t {
    vmax_s8(
        vqmovn_s16(vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1))),
        vdup_n_s8(-127),
    )
}

/// Store 8 channels `n0..` of an output row (vector when the panel is full, else scalar
/// requantisation of the exact accumulators).
#[inline(always)]
unsafe fn store_requant8(acc: [int32x4_t; 2], epi: &EpiI8, orow: &mut [i8], n0: usize) {
    let n = orow.len();
    if n0 + NR <= n {
        let v = narrow8(requant4(acc[0], epi, n0), requant4(acc[1], epi, n0 + 4));
        vst1_s8(orow.as_mut_ptr().add(n0), v);
    } else {
        let mut t = [0i32; NR];
        vst1q_s32(t.as_mut_ptr(), acc[0]);
        vst1q_s32(t.as_mut_ptr().add(4), acc[1]);
        for j in 0..n - n0 {
            orow[n0 + j] = epi.requant(t[j], n0 + j);
        }
    }
}

#[inline(always)]
unsafe fn store_acc8(acc: [int32x4_t; 2], orow: &mut [i32], n0: usize) {
    let mut t = [0i32; NR];
    vst1q_s32(t.as_mut_ptr(), acc[0]);
    vst1q_s32(t.as_mut_ptr().add(4), acc[1]);
    let cnt = NR.min(orow.len() - n0);
    orow[n0..n0 + cnt].copy_from_slice(&t[..cnt]);
}

/// Where a GEMM tile goes: requantised int8 rows or plain i32 accumulators, `n` per row,
/// row 0 being the first row of the call's range.
#[derive(Clone, Copy)]
pub(super) enum Sink<'a> {
    I8(&'a EpiI8<'a>, *mut i8),
    /// Dequantised, not rounded: `act((acc + bias) · mult)` (the f32-output int8 GEMMs).
    F32(&'a EpiI8<'a>, *mut f32),
    Acc(*mut i32),
}

/// Store a tile of MR rows × 8 channels `n0..` at output rows `orow..`. Full panels of an
/// int8 sink requantise with the per-channel bias, multiplier and activation loaded once
/// for all MR rows and the activation chosen once per tile (the epilogue is otherwise a
/// visible share of a 1×1 conv's instructions); a partial panel goes the exact scalar way.
/// Caller: rows `orow..orow+MR` and channels `n0..min(n0+8, n)` lie inside the output.
#[inline(always)]
pub(super) unsafe fn store_tile<const MR: usize>(
    sink: Sink,
    acc: &[[int32x4_t; 2]; MR],
    orow: usize,
    n0: usize,
    n: usize,
) {
    match sink {
        Sink::F32(_, _) | Sink::I8(_, _) if n0 + NR > n => {
            store_tile_scalar::<MR>(sink, *acc, orow, n0, n)
        }
        Sink::Acc(_) => store_tile_scalar::<MR>(sink, *acc, orow, n0, n),
        Sink::F32(epi, out) => {
            let op = out.add(orow * n + n0);
            let (bias, mult) = tile_epi(epi, n0);
            match epi.act {
                Act::None => dequant_rows::<MR, 0>(acc, bias, mult, [vdupq_n_f32(0.0); 2], op, n),
                Act::Relu => dequant_rows::<MR, 1>(acc, bias, mult, [vdupq_n_f32(0.0); 2], op, n),
                Act::Relu6(hi) => {
                    dequant_rows::<MR, 2>(acc, bias, mult, [vdupq_n_f32(hi); 2], op, n)
                }
                Act::PRelu(al) => {
                    let al = [
                        vld1q_f32(al.as_ptr().add(n0)),
                        vld1q_f32(al.as_ptr().add(n0 + 4)),
                    ];
                    dequant_rows::<MR, 3>(acc, bias, mult, al, op, n)
                }
            }
        }
        Sink::I8(epi, out) => {
            let op = out.add(orow * n + n0);
            let (bias, mult) = tile_epi(epi, n0);
            match epi.act {
                Act::None => requant_rows::<MR, 0>(acc, bias, mult, [vdupq_n_f32(0.0); 2], op, n),
                Act::Relu => requant_rows::<MR, 1>(acc, bias, mult, [vdupq_n_f32(0.0); 2], op, n),
                Act::Relu6(hi) => {
                    let hi = [
                        vdupq_n_f32(hi),
                        vreinterpretq_f32_s32(vdupq_n_s32(relu6_i8(hi))),
                    ];
                    requant_rows::<MR, 2>(acc, bias, mult, hi, op, n)
                }
                Act::PRelu(al) => {
                    let al = [
                        vld1q_f32(al.as_ptr().add(n0)),
                        vld1q_f32(al.as_ptr().add(n0 + 4)),
                    ];
                    requant_rows::<MR, 3>(acc, bias, mult, al, op, n)
                }
            }
        }
    }
}

/// The exact scalar ways of [`store_tile`] (a partial panel, raw accumulators), out of
/// line: inlined, LLVM stored every tile's accumulators to the stack for them before
/// choosing the way (8 `stp` a tile).
#[cold]
#[inline(never)]
unsafe fn store_tile_scalar<const MR: usize>(
    sink: Sink,
    acc: [[int32x4_t; 2]; MR],
    orow: usize,
    n0: usize,
    n: usize,
) {
    match sink {
        Sink::Acc(out) => {
            for r in 0..MR {
                let row = core::slice::from_raw_parts_mut(out.add((orow + r) * n), n);
                store_acc8(acc[r], row, n0);
            }
        }
        Sink::F32(epi, out) => {
            for r in 0..MR {
                let mut t = [0i32; NR];
                vst1q_s32(t.as_mut_ptr(), acc[r][0]);
                vst1q_s32(t.as_mut_ptr().add(4), acc[r][1]);
                let row = out.add((orow + r) * n);
                for j in 0..(n - n0).min(NR) {
                    let real = t[j].wrapping_add(epi.bias[n0 + j]) as f32 * epi.mult[n0 + j];
                    *row.add(n0 + j) = epi.act.apply(real, n0 + j);
                }
            }
        }
        Sink::I8(epi, out) => {
            for r in 0..MR {
                let row = core::slice::from_raw_parts_mut(out.add((orow + r) * n), n);
                store_requant8(acc[r], epi, row, n0);
            }
        }
    }
}

/// Bias and multiplier of the full panel at channel `n0` (caller: `n0 + 8 <= n`).
#[inline(always)]
unsafe fn tile_epi(epi: &EpiI8, n0: usize) -> ([int32x4_t; 2], [float32x4_t; 2]) {
    (
        [
            vld1q_s32(epi.bias.as_ptr().add(n0)),
            vld1q_s32(epi.bias.as_ptr().add(n0 + 4)),
        ],
        [
            vld1q_f32(epi.mult.as_ptr().add(n0)),
            vld1q_f32(epi.mult.as_ptr().add(n0 + 4)),
        ],
    )
}

/// `act((acc + bias) · mult)` of a dequantised activation, `ACT` as [`requant_rows`].
#[inline(always)]
unsafe fn dequant_act<const ACT: u8>(
    acc: int32x4_t,
    bias: int32x4_t,
    mult: float32x4_t,
    p: float32x4_t,
) -> float32x4_t {
    let zero = vdupq_n_f32(0.0);
    let v = vmulq_f32(vcvtq_f32_s32(vaddq_s32(acc, bias)), mult);
    match ACT {
        0 => v,
        1 => vmaxq_f32(v, zero),
        2 => vminq_f32(vmaxq_f32(v, zero), p),
        _ => vbslq_f32(vcltq_f32(v, zero), vmulq_f32(v, p), v),
    }
}

/// [`store_tile`]'s vector path for the f32 sink: MR rows of 8 channels at `op`.
#[inline(always)]
unsafe fn dequant_rows<const MR: usize, const ACT: u8>(
    acc: &[[int32x4_t; 2]; MR],
    bias: [int32x4_t; 2],
    mult: [float32x4_t; 2],
    p: [float32x4_t; 2],
    op: *mut f32,
    n: usize,
) {
    for r in 0..MR {
        for h in 0..2 {
            let v = dequant_act::<ACT>(acc[r][h], bias[h], mult[h], p[h]);
            vst1q_f32(op.add(r * n + 4 * h), v);
        }
    }
}

/// [`store_tile`]'s vector path; `ACT`: 0 none, 1 ReLU, 2 ReLU6 (lane 0 of `p[1]` holds the
/// bits of the i32 bound from [`relu6_i8`]), 3 PReLU (slopes in `p`). Same results as [`requant4`],
/// but ReLU and ReLU6 clamp the int8 result instead of the float: rounding (`fcvtas`) and
/// the saturating narrows are monotonic, so `round(clamp(x)) = clamp(round(x))` with the
/// bounds rounded the same way, and the clamp costs one or two instructions per 8 values
/// instead of two or four per 8 floats.
#[inline(always)]
unsafe fn requant_rows<const MR: usize, const ACT: u8>(
    acc: &[[int32x4_t; 2]; MR],
    bias: [int32x4_t; 2],
    mult: [float32x4_t; 2],
    p: [float32x4_t; 2],
    op: *mut i8,
    n: usize,
) {
    let lo = vdup_n_s8(if ACT == 1 || ACT == 2 { 0 } else { -127 });
    let hi = vdup_n_s8(vgetq_lane_s32::<0>(vreinterpretq_s32_f32(p[1])) as i8);
    for r in 0..MR {
        let mut q = [vdupq_n_s32(0); 2];
        for h in 0..2 {
            let v = if ACT == 3 {
                dequant_act::<3>(acc[r][h], bias[h], mult[h], p[h])
            } else {
                dequant_act::<0>(acc[r][h], bias[h], mult[h], p[h])
            };
            q[h] = vcvtaq_s32_f32(v);
        }
        let v = vmax_s8(
            vqmovn_s16(vcombine_s16(vqmovn_s32(q[0]), vqmovn_s32(q[1]))),
            lo,
        );
        let v = if ACT == 2 { vmin_s8(v, hi) } else { v };
        vst1_s8(op.add(r * n), v);
    }
}

/// The ReLU6 bound `hi` (output units) as the int8 clamp of [`requant_rows`]:
/// `round(min(x, hi)) = min(round(x), round(hi))`, saturated to ±127 like every output. A
/// NaN bound bounds nothing in the float definition (`f32::min`), hence 127.
#[inline(always)]
pub(super) fn relu6_i8(hi: f32) -> i32 {
    if hi.is_nan() {
        127
    } else {
        i32::from(crate::kernels::sat_i8(hi))
    }
}

/// The activation of [`requant_rows`]'s `ACT` on 16 int8 results already clamped to ±127:
/// ReLU (1) and ReLU6 (2, bound `hq` from [`relu6_i8`]) clamp here, none and PReLU (done
/// in float) pass through.
#[inline(always)]
pub(super) unsafe fn clamp16<const ACT: u8>(v: int8x16_t, hq: i8) -> int8x16_t {
    match ACT {
        1 => vmaxq_s8(v, vdupq_n_s8(0)),
        2 => vminq_s8(vmaxq_s8(v, vdupq_n_s8(0)), vdupq_n_s8(hq)),
        _ => v,
    }
}

/// `act(acc + bias)` of the 8 channels `n0..` of one output row at `row` (`n` channels),
/// vector stores where a quad is whole, scalar in a partial one. Caller: `n0 < n`.
#[inline(always)]
pub(super) unsafe fn store_epi_f32(
    acc: [float32x4_t; 2],
    row: *mut f32,
    n0: usize,
    n: usize,
    epi: &EpiF32,
) {
    for h in 0..2 {
        let c0 = n0 + 4 * h;
        if c0 + 4 <= n {
            let v = vaddq_f32(acc[h], vld1q_f32(epi.bias.as_ptr().add(c0)));
            vst1q_f32(row.add(c0), act4(&epi.act, v, c0));
        } else if c0 < n {
            let mut t = [0.0f32; 4];
            vst1q_f32(t.as_mut_ptr(), acc[h]);
            for j in 0..n - c0 {
                *row.add(c0 + j) = epi.act.apply(t[j] + epi.bias[c0 + j], c0 + j);
            }
        }
    }
}
