//! Dense int8 convs with 12-byte kernel rows into 16 channels (the 3×3 RGB stems, 3 or 4
//! input channels), ARMv8.0 NEON, called from the NEON int8 GEMM's driver
//! (`gemm_i8_neon.rs`) for those windows: tap by tap, `smlal` by element on values widened
//! to i16, where the group-pair scheme of the GEMM tile would waste a quarter of its
//! products on padding. Intrinsics.

use core::arch::aarch64::*;
use core::arch::asm;

use super::epilogue::{store_tile, Sink};
use crate::kernels::{PackedI8, RowsPtr, NR};

/// Taps of a window with 3 kernel rows of 12 bytes.
const NARROW_TAPS: usize = 36;

/// Whether [`narrow_conv_i8`] computes this window GEMM: 3 kernel rows of 12 bytes (a 3×3
/// conv on 4 channels, or on 3 padded to whole groups: the RGB stems) into 16 channels.
#[inline(always)]
pub(super) fn is_narrow_conv(a: &RowsPtr<i8>, b: &PackedI8) -> bool {
    a.segs == 3 && a.seg_len == 12 && b.k == NARROW_TAPS && b.n == 16
}

/// The GEMM of [`is_narrow_conv`] windows. The group-pair scheme of `gemm_i8_neon::tile_i8` does badly
/// here: each 12-byte run is one pair and one lone group, and the padded stem multiplies a
/// quarter of its bytes by zero weights. Instead every tap is one input value times the 16
/// channels' weights, widened to i16: `smlal v.4s, w.4h, x.h[lane]` by element (4 products
/// each, no broadcast, exact in i32); the taps of a run past its last non-zero weight (the
/// padding) are skipped. The weights are widened once per call (one output row): `ld4` de-interleaves a
/// packed group into its 4 taps.
#[target_feature(enable = "neon")]
#[inline]
pub(super) unsafe fn narrow_conv_i8(
    a: RowsPtr<i8>,
    b: &PackedI8,
    m0: usize,
    m1: usize,
    sink: Sink,
) {
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
