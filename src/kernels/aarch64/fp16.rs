//! f16 arithmetic for f16 model files (FEAT_FP16, ARMv8.2: Cortex-A76 / Pi 5, Orin):
//! `fmla v.8h` does 8 multiply-adds where the f32 kernels' `fmla v.4s` does 4. Selected at
//! run time by `is_aarch64_feature_detected!("fp16")`; only these functions carry
//! `#[target_feature(enable = "fp16")]`, so the binary still runs on ARMv8.0 (Pi 4, Nano).
//! The f16 NEON intrinsics (`vfmaq_laneq_f16`, `H8`) are stable only since Rust
//! 1.94, above the crate's MSRV (1.89), so the few f16 instructions are inline asm, as
//! `sdot` is in `aarch64`: f16 vectors are carried as `uint16x8_t` bits ([`H8`]).
//!
//! Activations stay f32 in the engine's buffers: a kernel converts what it loads to f16
//! (`fcvtn`, round to nearest even) and its epilogue (bias, activation) works in f32. So
//! f16 and f32 layers mix freely, the rest of the engine is unchanged, and the conversion
//! is paid once per loaded element (GEMM: once per A row chunk for all panels; depthwise:
//! once per input column for its 3 windows).
//!
//! Precision: an f16 `fmla` rounds to 11 significant bits (unit roundoff u = 2⁻¹¹). A long
//! f16 accumulation would add an error growing with K on top of the operands' own rounding,
//! so the GEMM sums products in f16 over runs of [`KB`] consecutive k only and adds each
//! run's sum into f32 accumulators (`fcvtl` + `fadd`, two instructions per row and run).
//! The depthwise 3×3 sums its 9 products in f16. Values beyond ±65504 would overflow f16;
//! the networks' activations stay orders of magnitude below.

use core::arch::aarch64::*;
use core::arch::asm;

use super::super::{generic, ConvShape, EpiF32, F16Kernels, PackedDwF16, PackedF16, RowsPtr, NR};
use super::epilogue::store_epi_f32;

/// 8 f16 lanes, carried as their bits (the f16 vector types need Rust 1.94).
type H8 = uint16x8_t;

pub(super) fn has_fp16() -> bool {
    std::arch::is_aarch64_feature_detected!("fp16")
}

/// The table's f16 entries.
pub(super) const KERNELS: F16Kernels = F16Kernels {
    pw: fp16_pw_f16_6x8,
    window: fp16_window_f16_6x8,
    dw3x3: fp16_dw3x3_f16,
    pw_name: "fp16_pw_f16_6x8",
    dw3x3_name: "fp16_dw3x3_f16",
};

/// k per f16 partial sum (a multiple of 8, the unrolled step). MobileFaceNet-512 f16 vs
/// f32 embeddings on 20 LFW crops (`tests/engine.rs`, qemu `-cpu max`): with runs of 256
/// (the whole A chunk) worst cosine 0.999962, mean 1 − cos 2.4e-5; with 32, 0.999976 and
/// 6.9e-6, i.e. close to the f16 weights' own rounding, for 2 extra instructions per 32
/// `fmla`s of a row.
pub(crate) const KB: usize = 32;
/// k per chunk of A converted to f16 at once (a stack buffer shared by all panels of a row
/// block); f32 partial sums cross chunks through the output rows. A multiple of [`KB`].
const KC: usize = 256;
/// A row of the f16 A buffer: the chunk plus one vector, so the k tail loads whole vectors.
const KC_ROW: usize = KC + 8;
/// Rows per tile: 6 f16 + 12 f32 accumulators + 6 A vectors (lane operands, v0–v15) + B.
const MR: usize = 6;

gemm_entries! {
    /// GEMM on f16 weights, f32 activations in and out, rows `[m0,m1)`: the contract of
    /// [`super::super::PwF32Fn`].
    fp16_pw_f16_6x8 / fp16_window_f16_6x8: f32, PackedF16, epi: &EpiF32 => f32;
    group 1, has_fp16, "FEAT_FP16";
    |a, b, m0, m1, out| gemm(a, b, epi, m0, m1, out)
}

#[target_feature(enable = "neon,fp16")]
unsafe fn gemm(
    a: RowsPtr<f32>,
    b: &PackedF16,
    epi: &EpiF32,
    m0: usize,
    m1: usize,
    out: &mut [f32],
) {
    let mut m = m0;
    while m < m1 {
        let mr = (m1 - m).min(MR);
        macro_rules! rows {
            ($mr:literal) => {
                rows_f16::<$mr>(a, b, epi, m, m - m0, out)
            };
        }
        match mr {
            6 => rows!(6),
            5 => rows!(5),
            4 => rows!(4),
            3 => rows!(3),
            2 => rows!(2),
            _ => rows!(1),
        }
        m += mr;
    }
}

/// Rows `m..m+R` of A (output rows `orow..`) × every panel. K goes in chunks of [`KC`]:
/// each chunk of the R rows is converted to f16 once, then multiplied by every panel; the
/// f32 sums of earlier chunks wait in the output rows, the last chunk applies the epilogue.
#[target_feature(enable = "neon,fp16")]
unsafe fn rows_f16<const R: usize>(
    a: RowsPtr<f32>,
    b: &PackedF16,
    epi: &EpiF32,
    m: usize,
    orow: usize,
    out: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    let mut a16 = [0u16; MR * KC_ROW];
    let bp = b.data.as_ptr() as *const u16;
    let mut kc = 0;
    loop {
        let len = (k - kc).min(KC);
        for r in 0..R {
            convert_row(a, m + r, kc, len, a16.as_mut_ptr().add(r * KC_ROW));
        }
        let last = kc + len == k;
        for p in 0..b.panels() {
            let n0 = p * NR;
            let mut acc = [[vdupq_n_f32(0.0); 2]; R];
            if kc > 0 {
                for r in 0..R {
                    acc[r] = load_partial(out.as_ptr().add((orow + r) * n), n0, n);
                }
            }
            panel_f16::<R>(a16.as_ptr(), bp.add((p * k + kc) * NR), len, &mut acc);
            for r in 0..R {
                let row = out.as_mut_ptr().add((orow + r) * n);
                if last {
                    store_epi_f32(acc[r], row, n0, n, epi);
                } else {
                    store_partial(acc[r], row, n0, n);
                }
            }
        }
        kc += len;
        if kc >= k {
            break;
        }
    }
}

/// `acc[r] += Σ_k a16[r][k] · b[k]` over `len` k of a panel (`b`: rows of 8 f16): f16
/// `fmla` by lane over runs of [`KB`] k, each run's f16 sums widened and added into `acc`.
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn panel_f16<const R: usize>(
    a16: *const u16,
    bp: *const u16,
    len: usize,
    acc: &mut [[float32x4_t; 2]; R],
) {
    let mut kk = 0;
    while kk < len {
        let end = (kk + KB).min(len);
        let mut s = [zero16(); R];
        while kk + 8 <= end {
            let mut av = [zero16(); R];
            for r in 0..R {
                av[r] = ld16(a16.add(r * KC_ROW + kk));
            }
            macro_rules! step {
                ($l:literal) => {
                    let bv = ld16(bp.add((kk + $l) * NR));
                    for r in 0..R {
                        s[r] = fmla_lane::<$l>(s[r], bv, av[r]);
                    }
                };
            }
            step!(0);
            step!(1);
            step!(2);
            step!(3);
            step!(4);
            step!(5);
            step!(6);
            step!(7);
            kk += 8;
        }
        while kk < end {
            let bv = ld16(bp.add(kk * NR));
            for r in 0..R {
                s[r] = fmla_lane::<0>(s[r], bv, ld16(a16.add(r * KC_ROW + kk)));
            }
            kk += 1;
        }
        for r in 0..R {
            acc[r] = widen_add(acc[r], s[r]);
        }
    }
}

// The f16 instructions. All register-only; the callers run only after FEAT_FP16 was
// detected (asserted at every entry).

/// `acc + b · a[L]` in f16 (`fmla` by element: the lane operand must sit in v0–v15).
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn fmla_lane<const L: i32>(acc: H8, b: H8, a: H8) -> H8 {
    let mut acc = acc;
    // SAFETY: register-only instruction, FEAT_FP16 present (see above).
    unsafe {
        asm!("fmla {0:v}.8h, {1:v}.8h, {2:v}.h[{l}]", inout(vreg) acc, in(vreg) b, in(vreg_low16) a, l = const L, options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

/// `acc + b · a` in f16, lane by lane.
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn fmla(acc: H8, b: H8, a: H8) -> H8 {
    let mut acc = acc;
    // SAFETY: as `fmla_lane`.
    unsafe {
        asm!("fmla {0:v}.8h, {1:v}.8h, {2:v}.8h", inout(vreg) acc, in(vreg) b, in(vreg) a, options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

/// `a · b` in f16, lane by lane.
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn fmul(a: H8, b: H8) -> H8 {
    let p: H8;
    // SAFETY: as `fmla_lane`.
    unsafe {
        asm!("fmul {0:v}.8h, {1:v}.8h, {2:v}.8h", out(vreg) p, in(vreg) a, in(vreg) b, options(pure, nomem, nostack, preserves_flags));
    }
    p
}

/// `acc + s` with the 8 f16 of `s` widened to f32 (`fcvtl`, exact).
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn widen_add(acc: [float32x4_t; 2], s: H8) -> [float32x4_t; 2] {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: register-only (ARMv8.0 conversions).
    unsafe {
        asm!("fcvtl {0:v}.4s, {2:v}.4h", "fcvtl2 {1:v}.4s, {2:v}.8h", out(vreg) lo, out(vreg) hi, in(vreg) s, options(pure, nomem, nostack, preserves_flags));
    }
    [vaddq_f32(acc[0], lo), vaddq_f32(acc[1], hi)]
}

/// 8 f32 at `p` rounded to f16 (`fcvtn`: to nearest, ties to even).
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn to_f16x8(p: *const f32) -> H8 {
    let h: H8;
    // SAFETY: register-only (ARMv8.0 conversions); the loads are the caller's.
    unsafe {
        asm!("fcvtn {0:v}.4h, {1:v}.4s", "fcvtn2 {0:v}.8h, {2:v}.4s", out(vreg) h, in(vreg) vld1q_f32(p), in(vreg) vld1q_f32(p.add(4)), options(pure, nomem, nostack, preserves_flags));
    }
    h
}

#[inline(always)]
unsafe fn zero16() -> H8 {
    vdupq_n_u16(0)
}

/// 8 f16 (as bits) at `p`.
#[inline(always)]
unsafe fn ld16(p: *const u16) -> H8 {
    vld1q_u16(p)
}

/// Row `m` of A, elements `[k0, k0+len)` (across the runs of a window), to f16 at `dst`.
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn convert_row(a: RowsPtr<f32>, m: usize, k0: usize, len: usize, dst: *mut u16) {
    let row = a.ptr.add(m * a.row_stride);
    let end = k0 + len;
    let mut kk = k0;
    while kk < end {
        let (j, i) = (kk / a.seg_len, kk % a.seg_len);
        let run = (a.seg_len - i).min(end - kk);
        let (src, d) = (row.add(j * a.seg_stride + i), dst.add(kk - k0));
        let mut t = 0;
        while t + 8 <= run {
            vst1q_u16(d.add(t), to_f16x8(src.add(t)));
            t += 8;
        }
        for t in t..run {
            // the same rounding as `fcvtn` (to nearest, ties to even)
            *d.add(t) = half::f16::from_f32(*src.add(t)).to_bits();
        }
        kk += run;
    }
}

/// The 8 f32 at channels `n0..` of an output row of `n` (zero past `n`).
#[inline(always)]
unsafe fn load_partial(row: *const f32, n0: usize, n: usize) -> [float32x4_t; 2] {
    let mut t = [0.0f32; NR];
    core::ptr::copy_nonoverlapping(row.add(n0), t.as_mut_ptr(), NR.min(n - n0));
    [vld1q_f32(t.as_ptr()), vld1q_f32(t.as_ptr().add(4))]
}

/// Stores the channels `n0..min(n0+8, n)` of `v` into an output row of `n`.
#[inline(always)]
unsafe fn store_partial(v: [float32x4_t; 2], row: *mut f32, n0: usize, n: usize) {
    let mut t = [0.0f32; NR];
    vst1q_f32(t.as_mut_ptr(), v[0]);
    vst1q_f32(t.as_mut_ptr().add(4), v[1]);
    core::ptr::copy_nonoverlapping(t.as_ptr(), row.add(n0), NR.min(n - n0));
}

// ------------------------------------------------------------------------------------------
// Depthwise 3×3
// ------------------------------------------------------------------------------------------

/// Depthwise 3×3 on f16 weights, any stride and padding, output rows `[y0,y1)`: the
/// contract of [`super::super::DwF32Fn`].
pub(crate) fn fp16_dw3x3_f16(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF16,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    generic::check_dw(input.len(), s, w, y0, y1, out.len());
    assert!(s.kh == 3, "fp16_dw3x3_f16: 3x3 filters only, {s:?}");
    epi.check(s.cin);
    assert!(has_fp16(), "f16 kernels need FEAT_FP16");
    // SAFETY: FEAT_FP16 asserted; every input read is clipped to the image (padding reads
    // as zero) and only output rows [y0,y1) are written.
    unsafe { dw3(input, s, w, epi, y0, y1, out) }
}

/// The 3 input rows of a window (`None` in the padding).
type Rows3 = [Option<*const f32>; 3];

#[target_feature(enable = "neon,fp16")]
unsafe fn dw3(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF16,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    let (c, ow) = (s.cin, s.ow());
    for oy in y0..y1 {
        let iy0 = (oy * s.stride) as isize - s.pad as isize;
        let mut rows: Rows3 = [None; 3];
        for (ky, r) in rows.iter_mut().enumerate() {
            let iy = iy0 + ky as isize;
            if (0..s.h as isize).contains(&iy) {
                *r = Some(input.as_ptr().add(iy as usize * s.w * c));
            }
        }
        let orow = out.as_mut_ptr().add((oy - y0) * ow * c);
        for c0 in (0..c).step_by(NR) {
            dw3_strip(&rows, s, w, epi, c0, orow);
        }
    }
}

/// One output row, channels `c0..c0+8` (fewer at the end): the 9 filter taps and the
/// window's 3 columns stay in registers as f16; moving by `stride` converts only the
/// columns that enter the window (one of three at stride 1).
#[target_feature(enable = "neon,fp16")]
unsafe fn dw3_strip(
    rows: &Rows3,
    s: &ConvShape,
    w: &PackedDwF16,
    epi: &EpiF32,
    c0: usize,
    orow: *mut f32,
) {
    let c = s.cin;
    let cn = (c - c0).min(NR);
    let wp = w.data.as_ptr() as *const u16;
    let mut taps = [zero16(); 9];
    for (t, tap) in taps.iter_mut().enumerate() {
        let mut h = [0u16; NR];
        core::ptr::copy_nonoverlapping(wp.add(t * c + c0), h.as_mut_ptr(), cn);
        *tap = ld16(h.as_ptr());
    }
    macro_rules! col {
        ($ix:expr) => {
            column(rows, $ix, s.w, c, c0, cn)
        };
    }
    let ix0 = -(s.pad as isize);
    let mut cols = [col!(ix0), col!(ix0 + 1), col!(ix0 + 2)];
    let keep = 3usize.saturating_sub(s.stride);
    for ox in 0..s.ow() {
        let mut acc = fmul(cols[0][0], taps[0]);
        for t in 1..9 {
            acc = fmla(acc, cols[t % 3][t / 3], taps[t]);
        }
        let v = widen_add([vdupq_n_f32(0.0); 2], acc);
        store_epi_f32(v, orow.add(ox * c), c0, c, epi);
        let next = ix0 + ((ox + 1) * s.stride) as isize;
        for i in 0..keep {
            cols[i] = cols[i + s.stride];
        }
        for (i, cl) in cols.iter_mut().enumerate().skip(keep) {
            *cl = col!(next + i as isize);
        }
    }
}

/// Input column `ix` of the window's rows, channels `c0..c0+cn` as f16 (zero in the
/// padding and past `cn`).
#[target_feature(enable = "neon,fp16")]
#[inline]
unsafe fn column(rows: &Rows3, ix: isize, width: usize, c: usize, c0: usize, cn: usize) -> [H8; 3] {
    let mut col = [zero16(); 3];
    if !(0..width as isize).contains(&ix) {
        return col;
    }
    for (v, r) in col.iter_mut().zip(rows) {
        if let Some(r) = r {
            let p = r.add(ix as usize * c + c0);
            *v = if cn == NR {
                to_f16x8(p)
            } else {
                let mut t = [0.0f32; NR];
                core::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), cn);
                to_f16x8(t.as_ptr())
            };
        }
    }
    col
}
