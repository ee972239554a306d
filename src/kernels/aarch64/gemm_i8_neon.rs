//! int8 GEMM on ARMv8.0 NEON (Pi 4, Jetson Nano): 4 rows × 8 channels on the packed layout
//! (groups of 8 channels × 4 k, see [`PackedI8`]), for the plain GEMM and the window GEMM
//! (A read in place through [`RowsPtr`]), with a requantising (int8), dequantising (f32) or
//! raw i32 epilogue.
//!
//! Two groups at a time: `smull` + `smlal` put two products in each i16 lane (exact because
//! operands are within ±127, the int8 contract of `kernels`: 2·127² < 32767), then `sadalp`
//! adds lane pairs into i32: 16 products per 3 instructions, folded with `addp` at the end.
//! The inner products are `asm!` ([`mac2_lo`], [`mac2_hi`], [`mac1`], [`mac4_row`]): LLVM
//! turns `vpadalq_s16` into `saddlp` + `add`, and left to itself hoists every row's loads
//! above the products and spills accumulators. The first step of a plain tile starts its
//! accumulators with `saddlp` instead of zeroing them ([`mac4_row_first`]).
//!
//! Windows of 3 kernel rows of 12 bytes into 16 channels (the RGB stems) go to
//! `gemm_i8_narrow.rs` instead.

use core::arch::aarch64::*;
use core::arch::asm;

use super::epilogue::{store_tile, Sink};
use super::gemm_i8_narrow::{is_narrow_conv, narrow_conv_i8};
use super::has_neon;
use super::windows::dup_a4;
use crate::kernels::{EpiI8, PackedI8, RowsPtr, NR};

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
