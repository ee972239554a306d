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

use super::{pack_pw_f32, Act, ConvShape, EpiF32, PackedF32, PwF32Fn, NR};

/// Output pixels per tile side.
pub const TILE: usize = 4;
/// Input pixels per tile side (`TILE + 3 - 1`).
const IN: usize = 6;
/// Positions of a transformed tile.
const POS: usize = IN * IN;

/// Floats of scratch a block of tiles aims to stay within (transformed input + GEMM
/// results): 192 KiB, well inside a core's L2 and leaving room for the weights.
const BLOCK_FLOATS: usize = 48 * 1024;

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
    wino_f32_impl(gemm, input, s, w, epi, y0, y1, scratch, out)
}

/// Output rows `[y0, y1)` of the 3×3 stride-1 conv `s` (see the module doc); `scratch` holds
/// at least [`wino_scratch_len`] floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn wino_f32_impl(
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
    let tb = tile_block(s);
    let (v, rest) = scratch.split_at_mut(POS * tb * cin);
    let m = &mut rest[..POS * tb * cout];
    let pass = EpiF32 {
        bias: &w.zero,
        act: Act::None,
    };
    // tile t of the band: output origin (y0 + 4·(t / tiles_w), 4·(t % tiles_w))
    let origin = |t: usize| (y0 + TILE * (t / tiles_w), TILE * (t % tiles_w));
    let mut t0 = 0;
    while t0 < tiles {
        let nt = (tiles - t0).min(tb);
        for t in 0..nt {
            input_tile(input, s, origin(t0 + t), &mut v[..POS * nt * cin], t, nt);
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
            let (oy, ox) = origin(t0 + t);
            let rows = (y1 - oy).min(TILE);
            let cols = (ow - ox).min(TILE);
            let at = |r: usize, c: usize| ((oy + r - y0) * ow + ox + c) * cout;
            output_tile(&m[..POS * nt * cout], cout, t, nt, epi, rows, cols, at, out);
        }
        t0 += nt;
    }
}

/// Calls `f(c0, width)` over `[0, n)` in blocks of 16, then 8, 4 and 1 channels: every block
/// has a width known at compile time, so its loops vectorise without tails.
#[inline(always)]
fn channel_blocks(n: usize, mut f: impl FnMut(usize, usize)) {
    let mut c0 = 0;
    for width in [16, 8, 4] {
        while n - c0 >= width {
            f(c0, width);
            c0 += width;
        }
    }
    while c0 < n {
        f(c0, 1);
        c0 += 1;
    }
}

/// Transforms the 6×6 input tile whose output origin is `(oy, ox)` into tile `t` of the
/// block's `V` (`[36][nt][cin]`).
#[inline(always)]
fn input_tile(
    input: &[f32],
    s: &ConvShape,
    (oy, ox): (usize, usize),
    v: &mut [f32],
    t: usize,
    nt: usize,
) {
    channel_blocks(s.cin, |c0, width| match width {
        16 => input_block::<16>(input, s, oy, ox, c0, v, t, nt),
        8 => input_block::<8>(input, s, oy, ox, c0, v, t, nt),
        4 => input_block::<4>(input, s, oy, ox, c0, v, t, nt),
        _ => input_block::<1>(input, s, oy, ox, c0, v, t, nt),
    });
}

/// `Bᵀ d B` on channels `[c0, c0+L)` of one tile (zero outside the image: the padding).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn input_block<const L: usize>(
    input: &[f32],
    s: &ConvShape,
    oy: usize,
    ox: usize,
    c0: usize,
    v: &mut [f32],
    t: usize,
    nt: usize,
) {
    let cin = s.cin;
    let mut d = [[[0.0f32; L]; IN]; IN];
    for (i, drow) in d.iter_mut().enumerate() {
        let Some(iy) = (oy + i).checked_sub(s.pad).filter(|&y| y < s.h) else {
            continue;
        };
        for (j, dij) in drow.iter_mut().enumerate() {
            let Some(ix) = (ox + j).checked_sub(s.pad).filter(|&x| x < s.w) else {
                continue;
            };
            let b = (iy * s.w + ix) * cin + c0;
            dij.copy_from_slice(&input[b..b + L]);
        }
    }
    // Bᵀ d column by column, then (Bᵀ d) B row by row
    let mut tmp = [[[0.0f32; L]; IN]; IN];
    for j in 0..IN {
        let col = bt6(std::array::from_fn(|i| d[i][j]));
        for i in 0..IN {
            tmp[i][j] = col[i];
        }
    }
    for (i, trow) in tmp.iter().enumerate() {
        let r = bt6(*trow);
        for (j, rj) in r.iter().enumerate() {
            let b = ((i * IN + j) * nt + t) * cin + c0;
            v[b..b + L].copy_from_slice(rj);
        }
    }
}

/// `Bᵀ x` for 6 points, lane-wise. Rows of Bᵀ: (4,0,-5,0,1,0), (0,-4,-4,1,1,0),
/// (0,4,-4,-1,1,0), (0,-2,-1,2,1,0), (0,2,-1,-2,1,0), (0,4,0,-5,0,1); computed with shared
/// partial sums.
#[inline(always)]
fn bt6<const L: usize>(x: [[f32; L]; IN]) -> [[f32; L]; IN] {
    let mut r = [[0.0f32; L]; IN];
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
    r
}

/// `Aᵀ x` for 6 points to 4, lane-wise. Rows of Aᵀ: (1,1,1,1,1,0), (0,1,-1,2,-2,0),
/// (0,1,1,4,4,0), (0,1,-1,8,-8,1).
#[inline(always)]
fn at6<const L: usize>(x: [[f32; L]; IN]) -> [[f32; L]; TILE] {
    let mut r = [[0.0f32; L]; TILE];
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
    r
}

/// Transforms tile `t` of the block's GEMM results `M` (`[36][nt][cout]`) back to its
/// `rows × cols` output pixels (the rest of a partial tile is dropped), bias and activation
/// included; pixel `(r, c)` of the tile goes to `out[at(r, c)..]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_tile(
    m: &[f32],
    cout: usize,
    t: usize,
    nt: usize,
    epi: &EpiF32,
    rows: usize,
    cols: usize,
    at: impl Fn(usize, usize) -> usize,
    out: &mut [f32],
) {
    let src = |p: usize, c0: usize| (p * nt + t) * cout + c0;
    channel_blocks(cout, |c0, width| match width {
        16 => output_block::<16>(m, &src, epi, rows, cols, &at, c0, out),
        8 => output_block::<8>(m, &src, epi, rows, cols, &at, c0, out),
        4 => output_block::<4>(m, &src, epi, rows, cols, &at, c0, out),
        _ => output_block::<1>(m, &src, epi, rows, cols, &at, c0, out),
    });
}

/// `Aᵀ M A` + bias + activation on channels `[c0, c0+L)` of one tile; position `p` of the
/// tile is at `m[src(p, c0)..]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_block<const L: usize>(
    m: &[f32],
    src: &impl Fn(usize, usize) -> usize,
    epi: &EpiF32,
    rows: usize,
    cols: usize,
    at: &impl Fn(usize, usize) -> usize,
    c0: usize,
    out: &mut [f32],
) {
    let load = |p: usize| -> [f32; L] {
        let b = src(p, c0);
        m[b..b + L].try_into().expect("L floats")
    };
    // Aᵀ M column by column, then (Aᵀ M) A row by row
    let mut tmp = [[[0.0f32; L]; IN]; TILE];
    for j in 0..IN {
        let col = at6(std::array::from_fn(|i| load(i * IN + j)));
        for i in 0..TILE {
            tmp[i][j] = col[i];
        }
    }
    let bias: [f32; L] = epi.bias[c0..c0 + L].try_into().expect("L floats");
    for (r, trow) in tmp.iter().enumerate().take(rows) {
        let y = at6(*trow);
        for (c, yc) in y.iter().enumerate().take(cols) {
            let mut px = *yc;
            for l in 0..L {
                px[l] += bias[l];
            }
            activate(&epi.act, c0, &mut px);
            let b = at(r, c) + c0;
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
