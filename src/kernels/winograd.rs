//! Winograd F(4,3) for dense 3×3 stride-1 f32 convolutions: each 4×4 block of output pixels
//! costs 36 multiplies per (cin, cout) pair instead of 144, so these convolutions — most of
//! SCRFD's time — do 4× less GEMM work than with im2col.
//!
//! How (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; points
//! 0, ±1, ±2, ∞):
//! - weights: `U = G g Gᵀ` per (cout, cin), once at load, and packed as 36 GEMM matrices
//!   `[cin × cout]`, one per position of the 6×6 transformed tile ([`PackedWino`]);
//! - input: `V = Bᵀ d B` per 6×6 input tile. Activations are NHWC, so a tile's pixels are
//!   vectors of channels and the transform is a few adds on channel vectors;
//! - the 36 element-wise products summed over `cin` are 36 GEMMs `[tiles × cin]·[cin × cout]`
//!   through the table's packed f32 GEMM (pass-through epilogue);
//! - output: `Y = Aᵀ M A`, bias and activation fused, written as NHWC rows.
//!
//! Work goes in blocks of tiles sized so that the transformed input and the GEMM results
//! stay in cache; the caller's scratch holds them ([`wino_scratch_len`]). Output rows
//! `[y0, y1)` may start anywhere (tiles start at `y0`), so the engine's row split across
//! threads works unchanged; a band's last tile row and the last tile column may be partial.
//!
//! The transforms are plain Rust over fixed-width channel blocks (16, 8, 4, 1 lanes), which
//! the compiler vectorises; [`wino_f32_impl`] is `#[inline(always)]` so the ISA modules can
//! compile it again inside `#[target_feature]` functions (AVX2, AVX-512 on x86-64).
//!
//! F(4,3) rather than F(2,3): it saves 2.25× more multiplies, and in f32 its error on these
//! layers stays below 1e-5 relative (measured in the tests), far inside the engine's bar.

use super::{pack_pw_f32, unpack_pw_i8, Act, ConvShape, EpiF32, PackedF32, PackedI8, PwF32Fn, NR};

/// Output pixels per tile side.
pub const TILE: usize = 4;
/// Input pixels per tile side (`TILE + 3 - 1`).
const IN: usize = 6;
/// Positions of a transformed tile.
const POS: usize = IN * IN;

/// Floats of scratch a block of tiles aims to stay within (transformed input + GEMM
/// results): 128 KiB, inside a core's L2 with room for the weights.
const BLOCK_FLOATS: usize = 32 * 1024;

/// `G` of F(4,3): the 3-tap filter to 6 points.
const G: [[f64; 3]; IN] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Weights of a 3×3 conv transformed for F(4,3): `u[p]` is the `[cin × cout]` GEMM matrix of
/// tile position `p = 6i + j`, packed as [`pack_pw_f32`] does.
#[derive(Clone, Debug)]
pub struct PackedWino {
    pub cin: usize,
    pub cout: usize,
    pub u: Vec<PackedF32>,
    /// The GEMM's bias: zero (the real bias is added after the output transform).
    zero: Vec<f32>,
}

/// `U = G g Gᵀ` for every (cout, cin), `g(o, i, ky, kx)` reading the 3×3 weights, computed in
/// f64 so that the packing adds no error of its own.
fn pack_wino_with(
    cout: usize,
    cin: usize,
    g: impl Fn(usize, usize, usize, usize) -> f32,
) -> PackedWino {
    // per position: [cout][cin] row-major, the order pack_pw_f32 takes
    let mut per_pos = vec![vec![0.0f32; cout * cin]; POS];
    for o in 0..cout {
        for ci in 0..cin {
            // t = G g  (6×3)
            let mut t = [[0.0f64; 3]; IN];
            for (r, grow) in G.iter().enumerate() {
                for kx in 0..3 {
                    t[r][kx] = (0..3).map(|ky| grow[ky] * g(o, ci, ky, kx) as f64).sum();
                }
            }
            // U = t Gᵀ  (6×6)
            for i in 0..IN {
                for (j, gcol) in G.iter().enumerate() {
                    let u: f64 = (0..3).map(|kx| t[i][kx] * gcol[kx]).sum();
                    per_pos[i * IN + j][o * cin + ci] = u as f32;
                }
            }
        }
    }
    PackedWino {
        cin,
        cout,
        u: per_pos.iter().map(|w| pack_pw_f32(w, cout, cin)).collect(),
        zero: vec![0.0; cout],
    }
}

/// Packs OIHW `[cout][cin][3][3]` weights.
pub fn pack_wino_f32(w: &[f32], cout: usize, cin: usize) -> PackedWino {
    assert_eq!(
        w.len(),
        cout * cin * 9,
        "3x3 conv weights: len {} != {cout}*{cin}*9",
        w.len()
    );
    pack_wino_with(cout, cin, |o, i, ky, kx| {
        w[((o * cin + i) * 3 + ky) * 3 + kx]
    })
}

/// Repacks the im2col weights of a 3×3 conv ([`super::pack_conv_f32`]: `K = (ky, kx, ci)`).
pub fn pack_wino_from_conv(w: &PackedF32, cin: usize) -> PackedWino {
    assert_eq!(w.k, 9 * cin, "not 3x3 im2col weights: K={} cin={cin}", w.k);
    pack_wino_with(w.n, cin, |o, i, ky, kx| {
        let k = (ky * 3 + kx) * cin + i;
        w.data[((o / NR) * w.k + k) * NR + o % NR]
    })
}

/// Repacks the im2col weights of an int8 3×3 conv ([`super::pack_conv_i8`] or
/// [`super::pack_conv_i8_padded`]: `K = (ky, (kx, ci) padded to 4)`) as real f32 weights,
/// `w[o] * scale[o]`: an int8 layer computed in f32 (see [`super::Kernels::wino_for_i8`]).
pub fn pack_wino_from_i8(w: &PackedI8, cin: usize, scale: &[f32]) -> PackedWino {
    let run = w.k / 3;
    assert!(
        w.k.is_multiple_of(3) && run >= 3 * cin && run < 3 * cin + 4 && scale.len() == w.n,
        "not 3x3 int8 im2col weights: K={} cin={cin} scales={}",
        w.k,
        scale.len()
    );
    let rows = unpack_pw_i8(w);
    pack_wino_with(w.n, cin, |o, i, ky, kx| {
        f32::from(rows[o * w.k + ky * run + kx * cin + i]) * scale[o]
    })
}

/// Whether [`wino_f32_impl`] computes this conv: 3×3, stride 1, padding < 3.
pub fn wino_supports(s: &ConvShape) -> bool {
    s.kh == 3 && s.kw == 3 && s.stride == 1 && s.pad < 3
}

/// Tiles per block: as many as fit [`BLOCK_FLOATS`], at least 8 (one GEMM microtile of rows)
/// and no more than the image has.
fn tile_block(s: &ConvShape) -> usize {
    let per_tile = POS * (s.cin + s.cout);
    let tiles = s.oh().div_ceil(TILE) * s.ow().div_ceil(TILE);
    (BLOCK_FLOATS / per_tile).max(8).min(tiles.max(1))
}

/// Elements of scratch [`wino_f32_impl`] needs for this shape (per thread).
pub fn wino_scratch_len(s: &ConvShape) -> usize {
    POS * tile_block(s) * (s.cin + s.cout)
}

/// The portable entry of the kernel table ([`super::Kernels::wino_f32`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn wino_f32(
    gemm: PwF32Fn,
    input: &[f32],
    s: &ConvShape,
    w: &PackedWino,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    wino_f32_impl::<1>(gemm, input, s, w, epi, y0, y1, scratch, out)
}

/// Output rows `[y0, y1)` of the 3×3 stride-1 conv `s` (see the module doc); `scratch` holds
/// at least [`wino_scratch_len`] floats. `MR` is the row tile of `gemm`: a block holds a
/// multiple of it where it can, since a last partial row tile costs about as much as a whole
/// one (on NEON's 8×8 f32 tile, blocks of 9 tiles made the 36 GEMMs cost 1.7× blocks of 8).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn wino_f32_impl<const MR: usize>(
    gemm: PwF32Fn,
    input: &[f32],
    s: &ConvShape,
    w: &PackedWino,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    s.check_io(input.len(), s.cin, y0, y1, out.len(), s.cout);
    assert!(
        wino_supports(s),
        "winograd F(4,3) needs 3x3 stride 1: {s:?}"
    );
    assert!(
        w.cin == s.cin && w.cout == s.cout && w.u.len() == POS,
        "winograd weights {}->{} vs {s:?}",
        w.cin,
        w.cout
    );
    for u in &w.u {
        assert!(
            u.k == s.cin && u.n == s.cout && u.data.len() == u.panels() * u.k * NR,
            "winograd GEMM weights K={} N={} vs {s:?}",
            u.k,
            u.n
        );
    }
    epi.check(s.cout);
    let need = wino_scratch_len(s);
    assert!(
        scratch.len() >= need,
        "scratch {} < winograd scratch {need}",
        scratch.len()
    );
    let (cin, cout, ow) = (s.cin, s.cout, s.ow());
    let tiles_w = ow.div_ceil(TILE);
    let tiles = (y1 - y0).div_ceil(TILE) * tiles_w;
    let tb = match tile_block(s) {
        tb if tb >= MR => tb / MR * MR,
        tb => tb,
    };
    let (v, rest) = scratch.split_at_mut(POS * tb * cin);
    let m = &mut rest[..POS * tb * cout];
    let pass = EpiF32 {
        bias: &w.zero,
        act: Act::None,
    };
    let mut pads = Pads::new();
    let mut t0 = 0;
    while t0 < tiles {
        let nt = (tiles - t0).min(tb);
        for t in 0..nt {
            // tile t of the band: output origin (y0 + 4·(t / tiles_w), 4·(t % tiles_w))
            let (oy, ox) = (
                y0 + TILE * ((t0 + t) / tiles_w),
                TILE * ((t0 + t) % tiles_w),
            );
            let vb = &mut v[..POS * nt * cin];
            input_tile(input, s, oy, ox, vb, t * cin, nt * cin, &mut pads);
        }
        for p in 0..POS {
            gemm(
                &v[p * nt * cin..(p + 1) * nt * cin],
                &w.u[p],
                &pass,
                0,
                nt,
                &mut m[p * nt * cout..(p + 1) * nt * cout],
            );
        }
        for t in 0..nt {
            let (oy, ox) = (
                y0 + TILE * ((t0 + t) / tiles_w),
                TILE * ((t0 + t) % tiles_w),
            );
            let dst = OutTile {
                at: ((oy - y0) * ow + ox) * cout,
                row_stride: ow * cout,
                rows: (y1 - oy).min(TILE),
                cols: (ow - ox).min(TILE),
            };
            let mb = &m[..POS * nt * cout];
            output_tile(mb, cout, t * cout, nt * cout, epi, &dst, out, &mut pads);
        }
        t0 += nt;
    }
}

/// Calls `block::<L>(args)` on `n` channels in blocks of L = 16, then 8, 4 and 1, with `c0`
/// the block's first channel and `pad` its scratch of width L from `pads`. Every block has a
/// width known at compile time, so its loops vectorise without tails. (A macro, not a
/// closure per block: a closure is compiled on its own, without the caller's
/// `#[target_feature]`s.)
macro_rules! channel_blocks {
    ($n:expr, $pads:expr, |$c0:ident, $pad:ident| $block:ident($($arg:expr),*)) => {{
        let n = $n;
        let mut $c0 = 0;
        while n - $c0 >= 16 {
            let $pad = &mut $pads.l16;
            $block::<16>($($arg),*);
            $c0 += 16;
        }
        if n - $c0 >= 8 {
            let $pad = &mut $pads.l8;
            $block::<8>($($arg),*);
            $c0 += 8;
        }
        if n - $c0 >= 4 {
            let $pad = &mut $pads.l4;
            $block::<4>($($arg),*);
            $c0 += 4;
        }
        while $c0 < n {
            let $pad = &mut $pads.l1;
            $block::<1>($($arg),*);
            $c0 += 1;
        }
    }};
}

/// Transforms the 6×6 input tile whose output origin is `(oy, ox)` into the block's `V`
/// (`[36][nt][cin]`): position `p`, channel `c` at `v[p·stride + at + c]`.
///
/// Channels go in blocks of 16, 8, 4 and 1 ([`channel_blocks`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_tile(
    input: &[f32],
    s: &ConvShape,
    oy: usize,
    ox: usize,
    v: &mut [f32],
    at: usize,
    stride: usize,
    pads: &mut Pads,
) {
    channel_blocks!(s.cin, pads, |c0, pad| input_block(
        input, s, oy, ox, c0, v, at, stride, pad
    ));
}

/// Channels `[c0, c0+L)` of the 6 pixels of input row `oy + i - pad` from column
/// `ox - pad`, zero outside the image (the padding).
#[inline(always)]
fn load_row<const L: usize>(
    input: &[f32],
    s: &ConvShape,
    iy: Option<usize>,
    ox: usize,
    c0: usize,
) -> [Lanes<L>; IN] {
    let mut d = [Lanes::ZERO; IN];
    let Some(iy) = iy else {
        return d;
    };
    let cin = s.cin;
    let row = &input[iy * s.w * cin..(iy + 1) * s.w * cin];
    if ox >= s.pad && ox - s.pad + IN <= s.w {
        // the whole row inside: one bounds check for the 6 pixels
        let px = &row[(ox - s.pad) * cin..(ox - s.pad + IN) * cin];
        for (j, dj) in d.iter_mut().enumerate() {
            *dj = Lanes::load(&px[j * cin + c0..]);
        }
        return d;
    }
    for (j, dj) in d.iter_mut().enumerate() {
        if let Some(ix) = (ox + j).checked_sub(s.pad).filter(|&x| x < s.w) {
            *dj = Lanes::load(&row[ix * cin + c0..]);
        }
    }
    d
}

/// `Bᵀ d B` on channels `[c0, c0+L)` of one tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_block<const L: usize>(
    input: &[f32],
    s: &ConvShape,
    oy: usize,
    ox: usize,
    c0: usize,
    v: &mut [f32],
    at: usize,
    stride: usize,
    pad: &mut Pad<L>,
) {
    // d B row by row, then Bᵀ (d B) column by column. (Arrays go by reference: copying
    // one whole makes the compiler move it in chunks that straddle the stores that wrote
    // it, and every load then stalls.)
    let Pad { t6: tmp, r6: r, .. } = pad;
    for (i, ti) in tmp.iter_mut().enumerate() {
        let iy = (oy + i).checked_sub(s.pad).filter(|&y| y < s.h);
        let d = load_row::<L>(input, s, iy, ox, c0);
        bt6([&d[0], &d[1], &d[2], &d[3], &d[4], &d[5]], ti);
    }
    for j in 0..IN {
        let col = [
            &tmp[0][j], &tmp[1][j], &tmp[2][j], &tmp[3][j], &tmp[4][j], &tmp[5][j],
        ];
        bt6(col, r);
        for (i, ri) in r.iter().enumerate() {
            let b = (i * IN + j) * stride + at + c0;
            v[b..b + L].copy_from_slice(&ri.0);
        }
    }
}

/// The channels `[c0, c0+L)` of one point of a tile, in a transform's intermediates.
///
/// Aligned to 64 bytes, so that two `L < 16` vectors are never adjacent in memory: the
/// compiler would otherwise join loads of neighbouring vectors into one 512-bit load that
/// straddles the two smaller stores that wrote them, and each such load stalls (store
/// forwarding fails) — measured at a third of the transforms' time.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes<const L: usize>([f32; L]);

impl<const L: usize> Lanes<L> {
    const ZERO: Self = Lanes([0.0; L]);

    /// The first `L` floats of `src`.
    #[inline(always)]
    fn load(src: &[f32]) -> Self {
        Lanes(src[..L].try_into().expect("L floats"))
    }
}

impl<const L: usize> std::ops::Index<usize> for Lanes<L> {
    type Output = f32;
    #[inline(always)]
    fn index(&self, l: usize) -> &f32 {
        &self.0[l]
    }
}

impl<const L: usize> std::ops::IndexMut<usize> for Lanes<L> {
    #[inline(always)]
    fn index_mut(&mut self, l: usize) -> &mut f32 {
        &mut self.0[l]
    }
}

/// A transform's intermediates for `L`-channel blocks, made once per kernel call (zeroing
/// them per tile cost as much as a transform).
struct Pad<const L: usize> {
    t6: [[Lanes<L>; IN]; IN],
    t4: [[Lanes<L>; IN]; TILE],
    c6: [Lanes<L>; IN],
    r6: [Lanes<L>; IN],
    r4: [Lanes<L>; TILE],
}

impl<const L: usize> Pad<L> {
    #[inline(always)]
    fn new() -> Self {
        Pad {
            t6: [[Lanes::ZERO; IN]; IN],
            t4: [[Lanes::ZERO; IN]; TILE],
            c6: [Lanes::ZERO; IN],
            r6: [Lanes::ZERO; IN],
            r4: [Lanes::ZERO; TILE],
        }
    }
}

/// One [`Pad`] per block width.
struct Pads {
    l16: Pad<16>,
    l8: Pad<8>,
    l4: Pad<4>,
    l1: Pad<1>,
}

impl Pads {
    #[inline(always)]
    fn new() -> Self {
        Pads {
            l16: Pad::new(),
            l8: Pad::new(),
            l4: Pad::new(),
            l1: Pad::new(),
        }
    }
}

/// `Bᵀ x` for 6 points, lane-wise. Rows of Bᵀ: (4,0,-5,0,1,0), (0,-4,-4,1,1,0),
/// (0,4,-4,-1,1,0), (0,-2,-1,2,1,0), (0,2,-1,-2,1,0), (0,4,0,-5,0,1); computed with shared
/// partial sums.
#[inline(always)]
fn bt6<const L: usize>(x: [&Lanes<L>; IN], r: &mut [Lanes<L>; IN]) {
    for l in 0..L {
        let [d0, d1, d2, d3, d4, d5] = [x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]];
        let a = d4 - 4.0 * d2;
        let b = d3 - 4.0 * d1;
        let c = d4 - d2;
        let e = 2.0 * (d3 - d1);
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = a + b;
        r[2][l] = a - b;
        r[3][l] = c + e;
        r[4][l] = c - e;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
}

/// `Aᵀ x` for 6 points to 4, lane-wise. Rows of Aᵀ: (1,1,1,1,1,0), (0,1,-1,2,-2,0),
/// (0,1,1,4,4,0), (0,1,-1,8,-8,1).
#[inline(always)]
fn at6<const L: usize>(x: [&Lanes<L>; IN], r: &mut [Lanes<L>; TILE]) {
    for l in 0..L {
        let [m0, m1, m2, m3, m4, m5] = [x[0][l], x[1][l], x[2][l], x[3][l], x[4][l], x[5][l]];
        let a = m1 + m2;
        let b = m1 - m2;
        let c = m3 + m4;
        let e = m3 - m4;
        r[0][l] = m0 + a + c;
        r[1][l] = b + 2.0 * e;
        r[2][l] = a + 4.0 * c;
        r[3][l] = b + 8.0 * e + m5;
    }
}

/// Where an output tile goes: pixel `(r, c)` of the tile at `out[at + r·row_stride +
/// c·cout..]`, for `r < rows`, `c < cols` (the rest of a partial tile is dropped).
struct OutTile {
    at: usize,
    row_stride: usize,
    rows: usize,
    cols: usize,
}

/// Transforms one tile of the block's GEMM results `M` (`[36][nt][cout]`: position `p`,
/// channel `c` at `m[p·stride + at + c]`) back to output pixels, bias and activation
/// included; channel blocks as in [`input_tile`].
#[inline(always)]
fn output_tile(
    m: &[f32],
    cout: usize,
    at: usize,
    stride: usize,
    epi: &EpiF32,
    dst: &OutTile,
    out: &mut [f32],
    pads: &mut Pads,
) {
    channel_blocks!(cout, pads, |c0, pad| output_block(
        m, at, stride, epi, dst, cout, c0, out, pad
    ));
}

/// `Aᵀ M A` + bias + activation on channels `[c0, c0+L)` of one tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_block<const L: usize>(
    m: &[f32],
    at: usize,
    stride: usize,
    epi: &EpiF32,
    dst: &OutTile,
    cout: usize,
    c0: usize,
    out: &mut [f32],
    pad: &mut Pad<L>,
) {
    // Aᵀ M column by column, then (Aᵀ M) A row by row (by reference, as in `input_block`)
    let Pad {
        t4: tmp,
        c6: col,
        r4,
        ..
    } = pad;
    for j in 0..IN {
        for (i, ci) in col.iter_mut().enumerate() {
            let b = (i * IN + j) * stride + at + c0;
            ci.0 = m[b..b + L].try_into().expect("L floats");
        }
        at6([&col[0], &col[1], &col[2], &col[3], &col[4], &col[5]], r4);
        for i in 0..TILE {
            tmp[i][j].0 = r4[i].0;
        }
    }
    let bias: [f32; L] = epi.bias[c0..c0 + L].try_into().expect("L floats");
    for (r, trow) in tmp.iter().enumerate().take(dst.rows) {
        let y = &mut *r4;
        at6(
            [&trow[0], &trow[1], &trow[2], &trow[3], &trow[4], &trow[5]],
            y,
        );
        for (c, yc) in y.iter().enumerate().take(dst.cols) {
            let mut px = yc.0;
            for l in 0..L {
                px[l] += bias[l];
            }
            activate(&epi.act, c0, &mut px);
            let b = dst.at + r * dst.row_stride + c * cout + c0;
            out[b..b + L].copy_from_slice(&px);
        }
    }
}

/// The fused activation on one pixel's channels `[c0, c0+L)`, chosen once per block so the
/// lane loops stay branch-free.
#[inline(always)]
fn activate<const L: usize>(act: &Act, c0: usize, px: &mut [f32; L]) {
    match *act {
        Act::None => {}
        Act::Relu => px.iter_mut().for_each(|x| *x = x.max(0.0)),
        Act::Relu6(hi) => px.iter_mut().for_each(|x| *x = x.max(0.0).min(hi)),
        Act::PRelu(a) => {
            let a: &[f32; L] = a[c0..c0 + L].try_into().expect("L slopes");
            for l in 0..L {
                if px[l] < 0.0 {
                    px[l] *= a[l];
                }
            }
        }
    }
}
