//! int8 GEMM on AVX-512 VNNI (`vpdpbusd` on 512-bit registers), in three families that
//! differ only in tile shape ([`Tiles`]): 8 rows × 32 channels, 16 rows × 16 channels, and
//! the one the table installs, which picks between them by N and K. One driver
//! ([`pw_i8_avx512_impl`]) serves the three epilogues through closures; each epilogue is a
//! single `inline(never)` function shared by the families, so the tile code exists once per
//! epilogue, not once per family.
//!
//! This file holds the crate's one x86 `asm!` ([`flip_broadcast`]): the activations' load
//! with an embedded broadcast and XOR, which LLVM does not produce from the intrinsics and
//! which sets the pace of the inner loop. Everything else is intrinsics.

use core::arch::x86_64::*;

use super::epilogue::{lanes16, Dequant16};
use super::{has_avx512_vnni, I8Gemms};
use crate::kernels::{EpiI8, PackedI8, RowsPtr, NR};

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
        pub(super) const $gemms: I8Gemms = I8Gemms {
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
    /// picked by N ([`Tiles::ByN`]). The same scheme as
    /// [`vnni_pw_i8_6x16`](super::gemm_i8_vnni::vnni_pw_i8_6x16) on registers twice
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
