//! aarch64 kernels: NEON (ARMv8.0 baseline — Pi 4, Jetson Nano) and the dot-product
//! extension (`sdot`, ARMv8.2+ — Pi 5, Orin) selected at run time by
//! `is_aarch64_feature_detected!("dotprod")`. The binary is never built with +dotprod; the
//! `sdot` instruction lives only in `#[target_feature(enable = "dotprod")]` functions, as
//! inline asm because `vdotq_s32` is not stable Rust.
//!
//! int8 GEMM on the packed layout (groups of 8 channels × 4 k, see [`PackedI8`]):
//! - NEON: two groups at a time, `smull` + `smlal` put two products in each i16 lane (exact
//!   because operands are within ±127, the int8 contract of `kernels`: 2·127² < 32767), then
//!   `sadalp` adds lane pairs into i32: 16 products per 3 instructions, folded with `addp`
//!   at the end. Written as asm: LLVM turns `vpadalq_s16` into `saddlp` + `add`.
//! - The epilogue works on a whole tile: bias, multiplier and activation parameters are
//!   loaded once for its rows, and the activation is chosen once per tile.
//! - dotprod: `sdot v.4s, w.16b, a.4b[lane]`: one instruction = 4 channels × 4 k, with the 4
//!   activation bytes picked by lane from a 16-byte load of A (4 groups).
//!
//! Dense convs read interior windows in place: the tiles take A through [`RowsPtr`] (row
//! pointers and kernel-row runs), so one tile serves the plain GEMM and the window GEMM
//! (`neon_window_*`, `neon_dot_window_*`); im2col remains only at the borders. The int8
//! GEMMs also have a fused dequantising epilogue (`*_pw_i8_f32_*`, f32 out) for the network's
//! outputs and the f32 readers of mixed-precision models.
//!
//! Depthwise (`depthwise.rs`): int8 pairs taps the same way (`smull` + `smlal`, then
//! widening adds); 3×3 rows run interior pixels with the 9 weight vectors and the epilogue
//! held in registers, border pixels the same arithmetic with out-of-image taps read from zeros.
//!
//! The first step of a plain int8 GEMM tile starts its accumulators with `saddlp` instead of
//! zeroing them ([`mac4_row_first`]).
//!
//! 3×3 convs with 12-byte kernel rows into 16 channels (the RGB stem) go tap by tap,
//! with `smlal` by element on widened values (`narrow_conv_i8`).
//!
//! Requantisation uses `fcvtas` (round half away from zero, like `f32::round`) and
//! saturating narrows, so it matches the generic kernel exactly.

use core::arch::aarch64::*;
use core::arch::asm;

use super::generic;
use super::{
    Act, ConvShape, EpiF32, EpiI8, Kernels, PackedDwF32, PackedDwI8, PackedF32, PackedI8, RowsPtr,
    NR,
};

mod depthwise;
pub(crate) mod fp16;

use depthwise::{neon_dw_f32, neon_dw_i8};

fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// NEON is architectural on aarch64: always installed. The ARMv8.2 extensions (dotprod,
/// f16 arithmetic) only if `allow_ext` (mode auto) and the CPU has them.
pub(crate) fn install(k: &mut Kernels, allow_ext: bool) {
    k.pw_f32 = neon_pw_f32_8x8;
    k.pw_i8 = neon_pw_i8_4x8;
    k.pw_i8_acc = neon_pw_i8_acc_4x8;
    k.dw_f32 = neon_dw_f32;
    k.dw_i8 = neon_dw_i8;
    k.add_i8 = neon_add_i8;
    k.names.pw_f32 = "neon_pw_f32_8x8";
    k.names.pw_i8 = "neon_pw_i8_4x8";
    k.names.dw_f32 = "neon_dw3x3_f32|neon_dwkxk_f32";
    k.names.dw_i8 = "neon_dw3x3_i8|neon_dwkxk_i8";
    k.names.add_i8 = "neon_add_i8";
    k.quantize_i8 = neon_quantize_i8;
    k.names.quantize_i8 = "neon_quantize_i8";
    k.pw_i8_f32 = Some(neon_pw_i8_f32_4x8);
    k.names.pw_i8_f32 = "neon_pw_i8_f32_4x8";
    k.window_f32 = Some(neon_window_f32_8x8);
    k.window_i8 = Some(neon_window_i8_4x8);
    k.window_i8_f32 = Some(neon_window_i8_f32_4x8);
    if allow_ext && fp16::has_fp16() {
        k.f16 = Some(fp16::KERNELS);
    }
    if allow_ext && has_dotprod() {
        k.pw_i8 = neon_dot_pw_i8_8x8;
        k.pw_i8_acc = neon_dot_pw_i8_acc_8x8;
        k.names.pw_i8 = "neon_dot_pw_i8_8x8";
        k.pw_i8_f32 = Some(neon_dot_pw_i8_f32_8x8);
        k.names.pw_i8_f32 = "neon_dot_pw_i8_f32_8x8";
        k.window_i8 = Some(neon_dot_window_i8_8x8);
        k.window_i8_f32 = Some(neon_dot_window_i8_f32_8x8);
    }
}

/// The GEMM entries' feature check: NEON is architectural on aarch64.
fn has_neon() -> bool {
    true
}

// ------------------------------------------------------------------------------------------
// Epilogues
// ------------------------------------------------------------------------------------------

#[inline(always)]
unsafe fn act4(act: &Act, v: float32x4_t, c0: usize) -> float32x4_t {
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
unsafe fn requant4(acc: int32x4_t, epi: &EpiI8, c0: usize) -> int32x4_t {
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
unsafe fn narrow8(q0: int32x4_t, q1: int32x4_t) -> int8x8_t {
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
enum Sink<'a> {
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
unsafe fn store_tile<const MR: usize>(
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
fn relu6_i8(hi: f32) -> i32 {
    if hi.is_nan() {
        127
    } else {
        i32::from(super::sat_i8(hi))
    }
}

/// The activation of [`requant_rows`]'s `ACT` on 16 int8 results already clamped to ±127:
/// ReLU (1) and ReLU6 (2, bound `hq` from [`relu6_i8`]) clamp here, none and PReLU (done
/// in float) pass through.
#[inline(always)]
unsafe fn clamp16<const ACT: u8>(v: int8x16_t, hq: i8) -> int8x16_t {
    match ACT {
        1 => vmaxq_s8(v, vdupq_n_s8(0)),
        2 => vminq_s8(vmaxq_s8(v, vdupq_n_s8(0)), vdupq_n_s8(hq)),
        _ => v,
    }
}

// ------------------------------------------------------------------------------------------
// Pointwise f32: 8 rows × 8 channels, 16 accumulators, fmla by lane.
// ------------------------------------------------------------------------------------------

gemm_entries! {
    /// f32 GEMM + bias + activation, rows `[m0,m1)`; microkernel 8×8.
    neon_pw_f32_8x8 / neon_window_f32_8x8: f32, PackedF32, epi: &EpiF32 => f32;
    group 1, has_neon, "NEON";
    |a, b, m0, m1, out, const W| pw_f32_impl::<W>(a, b, epi, m0, m1, out)
}

#[target_feature(enable = "neon")]
unsafe fn pw_f32_impl<const W: bool>(
    a: RowsPtr<f32>,
    b: &PackedF32,
    epi: &EpiF32,
    m0: usize,
    m1: usize,
    out: &mut [f32],
) {
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(8);
        for p in 0..b.panels() {
            macro_rules! t {
                ($mr:literal) => {
                    tile_f32::<$mr, W>(a, b, epi, m, m - m0, p, out)
                };
            }
            match mr {
                8 => t!(8),
                7 => t!(7),
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

/// Rows `m..m+MR` × the 8 channels of panel `p`, epilogue included.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32<const MR: usize, const W: bool>(
    a: RowsPtr<f32>,
    b: &PackedF32,
    epi: &EpiF32,
    m: usize,
    orow: usize,
    p: usize,
    out: &mut [f32],
) {
    let acc = acc_f32::<MR, W>(a, b, m, p);
    for (r, acc) in acc.into_iter().enumerate() {
        store_epi_f32(
            acc,
            out.as_mut_ptr().add((orow + r) * b.n),
            p * NR,
            b.n,
            epi,
        );
    }
}

/// The accumulators of [`tile_f32`]: each run of A goes 4 elements at a time (`fmla` by
/// lane), then one by one. Returned by value, apart from the epilogue: with the epilogue's
/// loop over rows in the same function, LLVM kept `acc` in memory too and stored all 16
/// accumulators back after every `fmla` step (8 `stp` per 16 `fmla`).
#[inline(always)]
unsafe fn acc_f32<const MR: usize, const W: bool>(
    a: RowsPtr<f32>,
    b: &PackedF32,
    m: usize,
    p: usize,
) -> [[float32x4_t; 2]; MR] {
    let k = b.k;
    let rows: [*const f32; MR] = core::array::from_fn(|r| a.ptr.add((m + r) * a.row_stride));
    let bp = b.data.as_ptr().add(p * k * NR);
    let mut acc = [[vdupq_n_f32(0.0); 2]; MR];
    let mut kk = 0;
    // `W`: a window of several runs; otherwise a plain matrix, one run, whose loop the
    // compiler then drops (keeping the plain GEMMs' inner loops as they were).
    let (segs, seg_stride) = if W { (a.segs, a.seg_stride) } else { (1, 0) };
    for j in 0..segs {
        let off = j * seg_stride;
        let mut i = 0;
        while i + 4 <= a.seg_len {
            let mut av = [vdupq_n_f32(0.0); MR];
            for r in 0..MR {
                av[r] = vld1q_f32(rows[r].add(off + i));
            }
            macro_rules! step {
                ($l:literal) => {
                    let b0 = vld1q_f32(bp.add((kk + $l) * NR));
                    let b1 = vld1q_f32(bp.add((kk + $l) * NR + 4));
                    for r in 0..MR {
                        acc[r][0] = vfmaq_laneq_f32::<$l>(acc[r][0], b0, av[r]);
                        acc[r][1] = vfmaq_laneq_f32::<$l>(acc[r][1], b1, av[r]);
                    }
                };
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            kk += 4;
            i += 4;
        }
        while i < a.seg_len {
            let b0 = vld1q_f32(bp.add(kk * NR));
            let b1 = vld1q_f32(bp.add(kk * NR + 4));
            for r in 0..MR {
                let x = *rows[r].add(off + i);
                acc[r][0] = vfmaq_n_f32(acc[r][0], b0, x);
                acc[r][1] = vfmaq_n_f32(acc[r][1], b1, x);
            }
            kk += 1;
            i += 1;
        }
    }
    acc
}

/// `act(acc + bias)` of the 8 channels `n0..` of one output row at `row` (`n` channels),
/// vector stores where a quad is whole, scalar in a partial one. Caller: `n0 < n`.
#[inline(always)]
unsafe fn store_epi_f32(acc: [float32x4_t; 2], row: *mut f32, n0: usize, n: usize, epi: &EpiF32) {
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

// ------------------------------------------------------------------------------------------
// Pointwise int8, ARMv8.0 NEON: 4 rows × 8 channels, smull + sadalp.
// ------------------------------------------------------------------------------------------

/// Four activation bytes of group `g` of a row (zero-padded past K).
#[inline(always)]
unsafe fn load_a4(row: *const i8, g: usize, k: usize) -> i32 {
    if 4 * g + 4 <= k {
        (row.add(4 * g) as *const i32).read_unaligned()
    } else {
        let mut t = [0u8; 4];
        core::ptr::copy_nonoverlapping(row.add(4 * g) as *const u8, t.as_mut_ptr(), k - 4 * g);
        i32::from_ne_bytes(t)
    }
}

gemm_entries! {
    /// int8 GEMM with the requantising epilogue, rows `[m0,m1)`; microkernel 4×8.
    neon_pw_i8_4x8 / neon_window_i8_4x8: i8, PackedI8, epi: &EpiI8 => i8;
    group 4, has_neon, "NEON";
    |a, b, m0, m1, out, const W| {
        pw_i8_impl::<W>(a, b, m0, m1, Sink::I8(epi, out.as_mut_ptr()))
    }
}

gemm_entries! {
    /// [`neon_pw_i8_4x8`] with the dequantising epilogue (f32 out, not rounded).
    neon_pw_i8_f32_4x8 / neon_window_i8_f32_4x8: i8, PackedI8, epi: &EpiI8 => f32;
    group 4, has_neon, "NEON";
    |a, b, m0, m1, out, const W| {
        pw_i8_impl::<W>(a, b, m0, m1, Sink::F32(epi, out.as_mut_ptr()))
    }
}

gemm_entries! {
    /// [`neon_pw_i8_4x8`] with raw i32 accumulators.
    neon_pw_i8_acc_4x8: i8, PackedI8 => i32;
    group 4, has_neon, "NEON";
    |a, b, m0, m1, out, const W| pw_i8_impl::<W>(a, b, m0, m1, Sink::Acc(out.as_mut_ptr()))
}

#[target_feature(enable = "neon")]
#[inline]
unsafe fn pw_i8_impl<const W: bool>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m0: usize,
    m1: usize,
    sink: Sink,
) {
    if W && is_narrow_conv(&a, b) {
        return narrow_conv_i8(a, b, m0, m1, sink);
    }
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(4);
        for p in 0..b.panels() {
            macro_rules! t {
                ($mr:literal) => {{
                    let acc = tile_i8::<$mr, W>(a, b, m, p);
                    store_tile::<$mr>(sink, &acc, m - m0, p * NR, b.n);
                }};
            }
            match mr {
                4 => t!(4),
                3 => t!(3),
                2 => t!(2),
                _ => t!(1),
            }
        }
        m += mr;
    }
}

/// `acc += pairwise_i32(a0·b0 + a1·b1)` over the low 8 bytes (2 channels × 4 k of two
/// groups): `smull` + `smlal` sum two products per i16 lane, exact because both operands are
/// within ±127 (2·127² = 32258 < 32767), then `sadalp` folds lane pairs into i32.
/// Written as asm because LLVM splits `vpadalq_s16` into `saddlp` + `add` (one more
/// instruction per 8 products).
#[inline(always)]
unsafe fn mac2_lo(
    acc: int32x4_t,
    a0: int8x16_t,
    b0: int8x16_t,
    a1: int8x16_t,
    b1: int8x16_t,
) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only NEON instructions (NEON is architectural on aarch64).
    unsafe {
        asm!(
            "smull {t:v}.8h, {a0:v}.8b, {b0:v}.8b",
            "smlal {t:v}.8h, {a1:v}.8b, {b1:v}.8b",
            "sadalp {acc:v}.4s, {t:v}.8h",
            acc = inout(vreg) acc, a0 = in(vreg) a0, b0 = in(vreg) b0, a1 = in(vreg) a1,
            b1 = in(vreg) b1, t = out(vreg) _,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// [`mac2_lo`] on the high 8 bytes (the other 2 channels of a 16-byte half panel).
#[inline(always)]
unsafe fn mac2_hi(
    acc: int32x4_t,
    a0: int8x16_t,
    b0: int8x16_t,
    a1: int8x16_t,
    b1: int8x16_t,
) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: as mac2_lo.
    unsafe {
        asm!(
            "smull2 {t:v}.8h, {a0:v}.16b, {b0:v}.16b",
            "smlal2 {t:v}.8h, {a1:v}.16b, {b1:v}.16b",
            "sadalp {acc:v}.4s, {t:v}.8h",
            acc = inout(vreg) acc, a0 = in(vreg) a0, b0 = in(vreg) b0, a1 = in(vreg) a1,
            b1 = in(vreg) b1, t = out(vreg) _,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// One group only (odd group count, K tail): `smull` + `sadalp`, low or high 8 bytes.
#[inline(always)]
unsafe fn mac1<const HI: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: as mac2_lo.
    unsafe {
        if HI {
            asm!(
                "smull2 {t:v}.8h, {a:v}.16b, {b:v}.16b",
                "sadalp {acc:v}.4s, {t:v}.8h",
                acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b, t = out(vreg) _,
                options(pure, nomem, nostack, preserves_flags),
            );
        } else {
            asm!(
                "smull {t:v}.8h, {a:v}.8b, {b:v}.8b",
                "sadalp {acc:v}.4s, {t:v}.8h",
                acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b, t = out(vreg) _,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
    }
    acc
}

/// One row of a tile, four groups: `acc` (channel pairs as in [`tile_i8`]) += the 4 groups
/// of A at `a` against `b0` (groups g, g+1: channels 0–3 and 4–7 of each) and `b1` (groups
/// g+2, g+3). One `ld4r` broadcasts each 4-byte group into its own register, then 8 ×
/// ([`mac2_lo`] or [`mac2_hi`]). Asm because the broadcast needs four consecutive registers
/// and, left to itself, LLVM hoists every row's loads above the products and spills
/// accumulators (the tile holds 16 accumulators + 8 weight registers).
///
/// # Safety
/// `a..a+16` is readable (`ld4r` has no alignment requirement).
#[inline(always)]
unsafe fn mac4_row(
    acc: [int32x4_t; 4],
    a: *const i8,
    b0: [int8x16_t; 4],
    b1: [int8x16_t; 4],
) -> [int32x4_t; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = acc;
    // SAFETY: reads 16 bytes at `a` (the caller's contract), registers otherwise.
    unsafe { mac4_asm!("sadalp", inout, a, b0, b1, c0, c1, c2, c3) };
    [c0, c1, c2, c3]
}

/// [`mac4_row`] on accumulators that start at zero: the first product of each goes in with
/// `saddlp` (pairwise add, no accumulate), which saves zeroing the tile's 16 accumulators
/// (16 `movi` a tile: a tenth of a K = 16 tile's instructions).
///
/// # Safety
/// As [`mac4_row`].
#[inline(always)]
unsafe fn mac4_row_first(a: *const i8, b0: [int8x16_t; 4], b1: [int8x16_t; 4]) -> [int32x4_t; 4] {
    let (c0, c1, c2, c3): (int32x4_t, int32x4_t, int32x4_t, int32x4_t);
    // SAFETY: as mac4_row.
    unsafe { mac4_asm!("saddlp", out, a, b0, b1, c0, c1, c2, c3) };
    [c0, c1, c2, c3]
}

/// The asm of [`mac4_row`]: `$first` is the instruction that brings the first products into
/// each accumulator (`sadalp`, or `saddlp` with the accumulators `out` only).
macro_rules! mac4_asm {
    ($first:literal, $dir:ident, $a:ident, $b0:ident, $b1:ident, $c0:ident, $c1:ident,
     $c2:ident, $c3:ident) => {
        asm!(
            "ld4r {{v16.4s, v17.4s, v18.4s, v19.4s}}, [{a}]",
            "smull v20.8h, v16.8b, {p0:v}.8b",
            "smull2 v21.8h, v16.16b, {p0:v}.16b",
            "smlal v20.8h, v17.8b, {p2:v}.8b",
            "smlal2 v21.8h, v17.16b, {p2:v}.16b",
            concat!($first, " {c0:v}.4s, v20.8h"),
            concat!($first, " {c1:v}.4s, v21.8h"),
            "smull v20.8h, v16.8b, {p1:v}.8b",
            "smull2 v21.8h, v16.16b, {p1:v}.16b",
            "smlal v20.8h, v17.8b, {p3:v}.8b",
            "smlal2 v21.8h, v17.16b, {p3:v}.16b",
            concat!($first, " {c2:v}.4s, v20.8h"),
            concat!($first, " {c3:v}.4s, v21.8h"),
            "smull v20.8h, v18.8b, {q0:v}.8b",
            "smull2 v21.8h, v18.16b, {q0:v}.16b",
            "smlal v20.8h, v19.8b, {q2:v}.8b",
            "smlal2 v21.8h, v19.16b, {q2:v}.16b",
            "sadalp {c0:v}.4s, v20.8h",
            "sadalp {c1:v}.4s, v21.8h",
            "smull v20.8h, v18.8b, {q1:v}.8b",
            "smull2 v21.8h, v18.16b, {q1:v}.16b",
            "smlal v20.8h, v19.8b, {q3:v}.8b",
            "smlal2 v21.8h, v19.16b, {q3:v}.16b",
            "sadalp {c2:v}.4s, v20.8h",
            "sadalp {c3:v}.4s, v21.8h",
            a = in(reg) $a,
            p0 = in(vreg) $b0[0], p1 = in(vreg) $b0[1], p2 = in(vreg) $b0[2],
            p3 = in(vreg) $b0[3], q0 = in(vreg) $b1[0], q1 = in(vreg) $b1[1],
            q2 = in(vreg) $b1[2], q3 = in(vreg) $b1[3],
            c0 = $dir(vreg) $c0, c1 = $dir(vreg) $c1, c2 = $dir(vreg) $c2,
            c3 = $dir(vreg) $c3,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _,
            options(pure, readonly, nostack, preserves_flags),
        )
    };
}
use mac4_asm;

/// 4 activation bytes (one group) broadcast to all four 32-bit lanes.
#[inline(always)]
unsafe fn dup_a4(row: *const i8, g: usize, k: usize) -> int8x16_t {
    vreinterpretq_s8_s32(vdupq_n_s32(load_a4(row, g, k)))
}

/// MR rows × 8 channels of panel `p`: two groups (64 products per row) per step with
/// [`mac2_lo`]/[`mac2_hi`]; accumulator `acc[r][q]` holds channel pairs `(2q, 2q+1)` × k pairs,
/// folded with `addp` at the end. Groups pair up within each run of A (a window's kernel row);
/// a run's odd group and a plain matrix's partial last group go alone.
#[inline(always)]
unsafe fn tile_i8<const MR: usize, const W: bool>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m: usize,
    p: usize,
) -> [[int32x4_t; 2]; MR] {
    let rows: [*const i8; MR] = core::array::from_fn(|r| a.ptr.add((m + r) * a.row_stride));
    let bp = b.data.as_ptr().add(p * b.groups() * NR * 4);
    let (full, tail) = (a.seg_len / 4, a.seg_len % 4);
    // The first four groups of a plain matrix, when it has them, start the accumulators
    // ([`mac4_row_first`]); otherwise they start at zero. Not in windows: there LLVM then
    // allocates the tile's registers worse (+3 % on the detector's 3×3 64->30 heads).
    let first = !W && full >= 4;
    let mut acc = if first {
        let bl = vld1q_s8_x4(bp);
        let bh = vld1q_s8_x4(bp.add(64));
        let (b0, b1) = ([bl.0, bl.1, bl.2, bl.3], [bh.0, bh.1, bh.2, bh.3]);
        // SAFETY: the first 16 bytes of each row lie in the matrix (full >= 4).
        core::array::from_fn(|r| mac4_row_first(rows[r], b0, b1))
    } else {
        [[vdupq_n_s32(0); 4]; MR]
    };
    // One group alone: `$av(r)` the 4 bytes of row r broadcast.
    macro_rules! single {
        ($g:expr, |$r:ident| $av:expr) => {{
            let b0 = vld1q_s8(bp.add($g * 32));
            let b1 = vld1q_s8(bp.add($g * 32 + 16));
            for $r in 0..MR {
                let av = $av;
                acc[$r][0] = mac1::<false>(acc[$r][0], av, b0);
                acc[$r][1] = mac1::<true>(acc[$r][1], av, b0);
                acc[$r][2] = mac1::<false>(acc[$r][2], av, b1);
                acc[$r][3] = mac1::<true>(acc[$r][3], av, b1);
            }
        }};
    }
    debug_assert!(
        tail == 0 || a.segs == 1,
        "only a plain matrix ends in a partial group"
    );
    let mut g = if first { 4 } else { 0 };
    // `W`: a window of several runs; otherwise a plain matrix, one run, whose loop the
    // compiler then drops (keeping the plain GEMMs' inner loops as they were).
    let (segs, seg_stride) = if W { (a.segs, a.seg_stride) } else { (1, 0) };
    for j in 0..segs {
        let off = j * seg_stride;
        let mut i = if first && j == 0 { 4 } else { 0 };
        // Four groups per step: the 128 bytes of B in two 4-register loads (`ld1`), and per
        // row the four 4-byte groups of A broadcast, each into its own register, by one `ld4r`
        // (instead of four `ld1r`, each with its own address arithmetic).
        while i + 4 <= full {
            let bl = vld1q_s8_x4(bp.add(g * 32));
            let bh = vld1q_s8_x4(bp.add(g * 32 + 64));
            let (b0, b1) = ([bl.0, bl.1, bl.2, bl.3], [bh.0, bh.1, bh.2, bh.3]);
            for r in 0..MR {
                // SAFETY: the 16 bytes lie in this run (i + 4 <= full).
                acc[r] = mac4_row(acc[r], rows[r].add(off + 4 * i), b0, b1);
            }
            g += 4;
            i += 4;
        }
        if i + 2 <= full {
            let b = vld1q_s8_x4(bp.add(g * 32));
            for r in 0..MR {
                // SAFETY: as above, 8 bytes (`ld2r`).
                let av = vld2q_dup_s32(rows[r].add(off + 4 * i) as *const i32);
                let (a0, a1) = (vreinterpretq_s8_s32(av.0), vreinterpretq_s8_s32(av.1));
                acc[r][0] = mac2_lo(acc[r][0], a0, b.0, a1, b.2);
                acc[r][1] = mac2_hi(acc[r][1], a0, b.0, a1, b.2);
                acc[r][2] = mac2_lo(acc[r][2], a0, b.1, a1, b.3);
                acc[r][3] = mac2_hi(acc[r][3], a0, b.1, a1, b.3);
            }
            g += 2;
            i += 2;
        }
        if i < full {
            single!(g, |r| vreinterpretq_s8_s32(vdupq_n_s32(
                (rows[r].add(off + 4 * i) as *const i32).read_unaligned()
            )));
            g += 1;
        }
    }
    if tail > 0 {
        // the partial last group of a plain matrix (one run): zero-padded loads
        single!(g, |r| dup_a4(rows[r], full, a.seg_len));
    }
    let mut res = [[vdupq_n_s32(0); 2]; MR];
    for r in 0..MR {
        res[r] = [
            vpaddq_s32(acc[r][0], acc[r][1]),
            vpaddq_s32(acc[r][2], acc[r][3]),
        ];
    }
    res
}

// ------------------------------------------------------------------------------------------
// Dense int8 convs with 12-byte kernel rows and 16 output channels, ARMv8.0 NEON.
// ------------------------------------------------------------------------------------------

/// Taps of a window with 3 kernel rows of 12 bytes.
const NARROW_TAPS: usize = 36;

/// Whether [`narrow_conv_i8`] computes this window GEMM: 3 kernel rows of 12 bytes (a 3×3
/// conv on 4 channels, or on 3 padded to whole groups: the RGB stems) into 16 channels.
#[inline(always)]
fn is_narrow_conv(a: &RowsPtr<i8>, b: &PackedI8) -> bool {
    a.segs == 3 && a.seg_len == 12 && b.k == NARROW_TAPS && b.n == 16
}

/// The GEMM of [`is_narrow_conv`] windows. The group-pair scheme of [`tile_i8`] does badly
/// here: each 12-byte run is one pair and one lone group, and the padded stem multiplies a
/// quarter of its bytes by zero weights. Instead every tap is one input value times the 16
/// channels' weights, widened to i16: `smlal v.4s, w.4h, x.h[lane]` by element (4 products
/// each, no broadcast, exact in i32); the taps of a run past its last non-zero weight (the
/// padding) are skipped. The weights are widened once per call (one output row): `ld4` de-interleaves a
/// packed group into its 4 taps.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn narrow_conv_i8(a: RowsPtr<i8>, b: &PackedI8, m0: usize, m1: usize, sink: Sink) {
    let mut w = [[vdupq_n_s16(0); 2]; NARROW_TAPS];
    // 1 + the last tap of a run with a non-zero weight: 9 for the padded stems
    let mut taps = 0;
    let groups = b.groups();
    for g in 0..NARROW_TAPS / 4 {
        // panel p, group g: 8 channels × 4 taps; `ld4` gives one 8-channel vector per tap
        let p0 = vld4_s8(b.data.as_ptr().add(g * 32));
        let p1 = vld4_s8(b.data.as_ptr().add((groups + g) * 32));
        let quad = [(p0.0, p1.0), (p0.1, p1.1), (p0.2, p1.2), (p0.3, p1.3)];
        for (r, (lo, hi)) in quad.into_iter().enumerate() {
            let k = 4 * g + r;
            w[k] = [vmovl_s8(lo), vmovl_s8(hi)];
            if vmaxv_u8(vreinterpret_u8_s8(vorr_s8(lo, hi))) != 0 {
                taps = taps.max(k % 12 + 1);
            }
        }
    }
    // The tap count is a constant of the tile, so its loop unrolls without branches (a
    // branch per tap makes LLVM keep the 16 accumulators in memory).
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(4);
        macro_rules! t {
            ($mr:literal) => {
                if taps <= 9 {
                    narrow_tile::<$mr, 9>(a, &w, m, m - m0, sink)
                } else {
                    narrow_tile::<$mr, 12>(a, &w, m, m - m0, sink)
                }
            };
        }
        match mr {
            4 => t!(4),
            3 => t!(3),
            2 => t!(2),
            _ => t!(1),
        }
        m += mr;
    }
}

/// 8 bytes at `p` widened to i16 (`ldr d` + `sxtl`). Asm because when only one lane is used
/// (tap 8 of the 9-tap stems) LLVM loads that byte alone and widens it in 7 instructions
/// (`ldr b`, `dup`, `uxtl`, `shl`, `sshr`, `uzp1`, `ext`).
///
/// # Safety
/// `p..p+8` is readable.
#[inline(always)]
unsafe fn load_widen8(p: *const i8) -> int16x8_t {
    let x: int16x8_t;
    // SAFETY: reads 8 bytes at `p` (the caller's contract).
    unsafe {
        asm!(
            "ldr {x:d}, [{p}]",
            "sxtl {x:v}.8h, {x:v}.8b",
            p = in(reg) p, x = out(vreg) x,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    x
}

/// Rows `m..m+MR` of [`narrow_conv_i8`], stored at output rows `orow..`: the first `NT`
/// taps of each run (the weights of the others are zero).
#[target_feature(enable = "neon")]
#[inline]
unsafe fn narrow_tile<const MR: usize, const NT: usize>(
    a: RowsPtr<i8>,
    w: &[[int16x8_t; 2]; NARROW_TAPS],
    m: usize,
    orow: usize,
    sink: Sink,
) {
    let rows: [*const i8; MR] = core::array::from_fn(|r| a.ptr.add((m + r) * a.row_stride));
    // [row][panel of 8 channels][4 channels]
    let mut acc = [[[vdupq_n_s32(0); 2]; 2]; MR];
    for j in 0..3 {
        let off = j * a.seg_stride;
        // the run's 12 bytes widened: taps 0..8 in lanes 0..8 of `xl`, taps 8..12 in lanes
        // 4..8 of `xh` (bytes 4..12: two 8-byte loads inside the run)
        let mut xl = [vdupq_n_s16(0); MR];
        let mut xh = [vdupq_n_s16(0); MR];
        for r in 0..MR {
            let p = rows[r].add(off);
            xl[r] = load_widen8(p);
            xh[r] = load_widen8(p.add(4));
        }
        macro_rules! tap {
            ($t:literal, $x:ident, $l:literal) => {
                if $t < NT {
                    let [w0, w1] = w[12 * j + $t];
                    for r in 0..MR {
                        let x = $x[r];
                        acc[r][0][0] = vmlal_laneq_s16::<$l>(acc[r][0][0], vget_low_s16(w0), x);
                        acc[r][0][1] = vmlal_high_laneq_s16::<$l>(acc[r][0][1], w0, x);
                        acc[r][1][0] = vmlal_laneq_s16::<$l>(acc[r][1][0], vget_low_s16(w1), x);
                        acc[r][1][1] = vmlal_high_laneq_s16::<$l>(acc[r][1][1], w1, x);
                    }
                }
            };
        }
        tap!(0, xl, 0);
        tap!(1, xl, 1);
        tap!(2, xl, 2);
        tap!(3, xl, 3);
        tap!(4, xl, 4);
        tap!(5, xl, 5);
        tap!(6, xl, 6);
        tap!(7, xl, 7);
        tap!(8, xh, 4);
        tap!(9, xh, 5);
        tap!(10, xh, 6);
        tap!(11, xh, 7);
    }
    for p in 0..2 {
        let t: [[int32x4_t; 2]; MR] = core::array::from_fn(|r| acc[r][p]);
        store_tile::<MR>(sink, &t, orow, NR * p, 16);
    }
}

// ------------------------------------------------------------------------------------------
// Pointwise int8 with dotprod: 8 rows × 8 channels, sdot by lane.
// ------------------------------------------------------------------------------------------

/// `acc += dot4(b, a.s[L])` per 32-bit lane — `sdot` by element.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_lane<const L: i32>(acc: int32x4_t, b: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: register-only instruction; the dotprod feature is enabled on this function and
    // its callers only run after run-time detection.
    unsafe {
        asm!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[{l}]", inout(vreg) acc, in(vreg) b, in(vreg) a, l = const L, options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

gemm_entries! {
    /// int8 GEMM with the requantising epilogue on the dotprod extension (`sdot`), rows
    /// `[m0,m1)`; microkernel 8×8.
    neon_dot_pw_i8_8x8 / neon_dot_window_i8_8x8: i8, PackedI8, epi: &EpiI8 => i8;
    group 4, has_dotprod, "the dotprod extension";
    |a, b, m0, m1, out, const W| {
        pw_i8_dot_impl::<W>(a, b, m0, m1, Sink::I8(epi, out.as_mut_ptr()))
    }
}

gemm_entries! {
    /// [`neon_dot_pw_i8_8x8`] with the dequantising epilogue (f32 out, not rounded).
    neon_dot_pw_i8_f32_8x8 / neon_dot_window_i8_f32_8x8: i8, PackedI8, epi: &EpiI8 => f32;
    group 4, has_dotprod, "the dotprod extension";
    |a, b, m0, m1, out, const W| {
        pw_i8_dot_impl::<W>(a, b, m0, m1, Sink::F32(epi, out.as_mut_ptr()))
    }
}

gemm_entries! {
    /// [`neon_dot_pw_i8_8x8`] with raw i32 accumulators.
    neon_dot_pw_i8_acc_8x8: i8, PackedI8 => i32;
    group 4, has_dotprod, "the dotprod extension";
    |a, b, m0, m1, out, const W| {
        pw_i8_dot_impl::<W>(a, b, m0, m1, Sink::Acc(out.as_mut_ptr()))
    }
}

#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn pw_i8_dot_impl<const W: bool>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m0: usize,
    m1: usize,
    sink: Sink,
) {
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(8);
        for p in 0..b.panels() {
            macro_rules! t {
                ($mr:literal) => {{
                    let acc = tile_i8_dot::<$mr, W>(a, b, m, p);
                    store_tile::<$mr>(sink, &acc, m - m0, p * NR, b.n);
                }};
            }
            match mr {
                8 => t!(8),
                7 => t!(7),
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

/// MR rows × 8 channels of panel `p` with `sdot` by lane: within each run of A, 4 groups per
/// step from one 16-byte load per row, then 2 (an 8-byte load: a run never reads past its own
/// end, since the last run of the last row may end the input), then 1; a plain matrix's
/// partial last group goes zero-padded.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn tile_i8_dot<const MR: usize, const W: bool>(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m: usize,
    p: usize,
) -> [[int32x4_t; 2]; MR] {
    let rows: [*const i8; MR] = core::array::from_fn(|r| a.ptr.add((m + r) * a.row_stride));
    let bp = b.data.as_ptr().add(p * b.groups() * NR * 4);
    let mut acc = [[vdupq_n_s32(0); 2]; MR];
    macro_rules! step {
        ($g:expr, $l:literal, $av:expr) => {
            let b0 = vld1q_s8(bp.add(($g + $l) * 32));
            let b1 = vld1q_s8(bp.add(($g + $l) * 32 + 16));
            for r in 0..MR {
                acc[r][0] = sdot_lane::<$l>(acc[r][0], b0, $av[r]);
                acc[r][1] = sdot_lane::<$l>(acc[r][1], b1, $av[r]);
            }
        };
    }
    let (full, tail) = (a.seg_len / 4, a.seg_len % 4);
    debug_assert!(
        tail == 0 || a.segs == 1,
        "only a plain matrix ends in a partial group"
    );
    let mut g = 0;
    // `W`: a window of several runs; otherwise a plain matrix, one run, whose loop the
    // compiler then drops (keeping the plain GEMMs' inner loops as they were).
    let (segs, seg_stride) = if W { (a.segs, a.seg_stride) } else { (1, 0) };
    for j in 0..segs {
        let off = j * seg_stride;
        let mut i = 0;
        while i + 4 <= full {
            let av: [int8x16_t; MR] = core::array::from_fn(|r| vld1q_s8(rows[r].add(off + 4 * i)));
            step!(g, 0, av);
            step!(g, 1, av);
            step!(g, 2, av);
            step!(g, 3, av);
            g += 4;
            i += 4;
        }
        if i + 2 <= full {
            let av: [int8x16_t; MR] = core::array::from_fn(|r| {
                vcombine_s8(vld1_s8(rows[r].add(off + 4 * i)), vdup_n_s8(0))
            });
            step!(g, 0, av);
            step!(g, 1, av);
            g += 2;
            i += 2;
        }
        if i < full {
            let av: [int8x16_t; MR] = core::array::from_fn(|r| {
                vreinterpretq_s8_s32(vdupq_n_s32(
                    (rows[r].add(off + 4 * i) as *const i32).read_unaligned(),
                ))
            });
            step!(g, 0, av);
            g += 1;
        }
    }
    if tail > 0 {
        let av: [int8x16_t; MR] = core::array::from_fn(|r| {
            vreinterpretq_s8_s32(vdupq_n_s32(load_a4(rows[r], full, a.seg_len)))
        });
        step!(g, 0, av);
    }
    // A fresh array, not `acc` itself: returned directly, `acc` would live in the return slot
    // in memory and every `sdot` update would be stored there.
    core::array::from_fn(|r| acc[r])
}

// ------------------------------------------------------------------------------------------
// Elementwise
// ------------------------------------------------------------------------------------------

/// `out = sat(round(a*sa + b*sb))`, 8 lanes at a time (same rounding as generic).
pub(crate) fn neon_add_i8(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    super::check_add_lens(a.len(), b.len(), out.len());
    // SAFETY: NEON architectural; indices < len by the loop bound.
    unsafe { add_i8_impl(a, sa, b, sb, out) }
}

#[target_feature(enable = "neon")]
unsafe fn add_i8_impl(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    let n = a.len();
    let mut i = 0;
    while i + 8 <= n {
        let x = vmovl_s8(vld1_s8(a.as_ptr().add(i)));
        let y = vmovl_s8(vld1_s8(b.as_ptr().add(i)));
        let f = |xs: int16x4_t, ys: int16x4_t| {
            let r = vaddq_f32(
                vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(xs)), sa),
                vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(ys)), sb),
            );
            vcvtaq_s32_f32(r)
        };
        let q0 = f(vget_low_s16(x), vget_low_s16(y));
        let q1 = f(vget_high_s16(x), vget_high_s16(y));
        vst1_s8(out.as_mut_ptr().add(i), narrow8(q0, q1));
        i += 8;
    }
    for j in i..n {
        out[j] = super::sat_i8(a[j] as f32 * sa + b[j] as f32 * sb);
    }
}

/// `out = sat(round(x · inv_scale))`, 16 lanes at a time: `fcvtas` rounds half away from zero
/// like `f32::round` and saturates to i32, the narrows saturate, and the clamp makes -128
/// -127 (a NaN becomes 0, as `as i8` does in the generic kernel).
pub(crate) fn neon_quantize_i8(x: &[f32], inv_scale: f32, out: &mut [i8]) {
    assert_eq!(
        x.len(),
        out.len(),
        "quantize: lens {} {}",
        x.len(),
        out.len()
    );
    // SAFETY: NEON architectural; indices < len by the loop bounds.
    unsafe { quantize_i8_impl(x, inv_scale, out) }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_i8_impl(x: &[f32], inv_scale: f32, out: &mut [i8]) {
    let n = x.len();
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    let q = |i: usize| vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(xp.add(i)), inv_scale));
    let mut i = 0;
    while i + 16 <= n {
        let lo = narrow8(q(i), q(i + 4));
        let hi = narrow8(q(i + 8), q(i + 12));
        vst1q_s8(op.add(i), vcombine_s8(lo, hi));
        i += 16;
    }
    while i + 8 <= n {
        vst1_s8(op.add(i), narrow8(q(i), q(i + 4)));
        i += 8;
    }
    for j in i..n {
        out[j] = super::sat_i8(x[j] * inv_scale);
    }
}
