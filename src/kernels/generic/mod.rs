//! Portable Rust kernels: the reference every SIMD kernel is tested against, and the
//! fallback on any CPU. Written plainly (the compiler auto-vectorises the 8-wide panel
//! loops) and reading the same packed layouts as the SIMD kernels.

use super::{
    ConvShape, EpiF32, EpiI8, PackedDwF32, PackedDwI8, PackedF32, PackedI8, PackedPanels,
    PwPanelsFn, WindowPanelsFn, WindowRows, WindowRowsI8, NR,
};

/// Asserts the GEMM contract shared by every `pw_*` kernel.
pub(crate) fn check_gemm(a_len: usize, k: usize, n: usize, m0: usize, m1: usize, out_len: usize) {
    assert!(k > 0 && n > 0, "empty GEMM k={k} n={n}");
    assert_eq!(a_len % k, 0, "A len {a_len} not a multiple of K={k}");
    assert!(
        m0 <= m1 && m1 <= a_len / k,
        "rows [{m0},{m1}) outside [0,{})",
        a_len / k
    );
    assert_eq!(
        out_len,
        (m1 - m0) * n,
        "out len {out_len} != ({m1}-{m0})x{n}"
    );
}

/// f32 GEMM `[M×K]·[K×N]` + bias + activation, rows `[m0,m1)`.
pub(crate) fn pw_f32(
    a: &[f32],
    b: &PackedF32,
    epi: &EpiF32,
    m0: usize,
    m1: usize,
    out: &mut [f32],
) {
    let (k, n) = (b.k, b.n);
    check_gemm(a.len(), k, n, m0, m1, out.len());
    epi.check(n);
    for m in m0..m1 {
        let row = &a[m * k..(m + 1) * k];
        let orow = &mut out[(m - m0) * n..(m - m0 + 1) * n];
        for p in 0..b.panels() {
            let panel = &b.data[p * k * NR..(p + 1) * k * NR];
            let mut acc = [0.0f32; NR];
            for (kk, &x) in row.iter().enumerate() {
                let bw = &panel[kk * NR..kk * NR + NR];
                for j in 0..NR {
                    acc[j] += x * bw[j];
                }
            }
            for j in 0..NR.min(n - p * NR) {
                let c = p * NR + j;
                orow[c] = epi.act.apply(acc[j] + epi.bias[c], c);
            }
        }
    }
}

/// i32 accumulators of one row against one packed panel.
#[inline(always)]
fn acc_row_panel_i8(row: &[i8], b: &PackedI8, p: usize) -> [i32; NR] {
    let g = b.groups();
    let panel = &b.data[p * g * NR * 4..(p + 1) * g * NR * 4];
    let mut acc = [0i32; NR];
    for (kk, &x) in row.iter().enumerate() {
        let base = (kk / 4) * NR * 4 + kk % 4;
        for j in 0..NR {
            acc[j] += x as i32 * panel[base + j * 4] as i32;
        }
    }
    acc
}

/// int8 GEMM: i32 accumulators, no epilogue.
pub(crate) fn pw_i8_acc(a: &[i8], b: &PackedI8, m0: usize, m1: usize, out: &mut [i32]) {
    let (k, n) = (b.k, b.n);
    check_gemm(a.len(), k, n, m0, m1, out.len());
    for m in m0..m1 {
        let row = &a[m * k..(m + 1) * k];
        for p in 0..b.panels() {
            let acc = acc_row_panel_i8(row, b, p);
            for j in 0..NR.min(n - p * NR) {
                out[(m - m0) * n + p * NR + j] = acc[j];
            }
        }
    }
}

/// int8 GEMM with the fused requantising epilogue.
pub(crate) fn pw_i8(a: &[i8], b: &PackedI8, epi: &EpiI8, m0: usize, m1: usize, out: &mut [i8]) {
    let (k, n) = (b.k, b.n);
    check_gemm(a.len(), k, n, m0, m1, out.len());
    epi.check(n);
    for m in m0..m1 {
        let row = &a[m * k..(m + 1) * k];
        for p in 0..b.panels() {
            let acc = acc_row_panel_i8(row, b, p);
            for j in 0..NR.min(n - p * NR) {
                let c = p * NR + j;
                out[(m - m0) * n + c] = epi.requant(acc[j], c);
            }
        }
    }
}

/// Valid tap range `[lo,hi)` of a window starting at `o*stride - pad` over `0..len`.
#[inline(always)]
pub(crate) fn tap_range(
    o: usize,
    stride: usize,
    pad: usize,
    k: usize,
    len: usize,
) -> (usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let lo = (-start).max(0) as usize;
    let hi = ((len as isize - start).min(k as isize)).max(0) as usize;
    (lo.min(hi), hi)
}

pub(crate) fn check_dw<T>(
    input_len: usize,
    s: &ConvShape,
    w: &super::PackedDw<T>,
    y0: usize,
    y1: usize,
    out_len: usize,
) {
    assert!(
        s.cin == s.cout && s.kh == s.kw,
        "depthwise shape must be square with cin==cout: {s:?}"
    );
    assert!(
        w.k == s.kh && w.c == s.cin,
        "depthwise weights k={} c={} vs {s:?}",
        w.k,
        w.c
    );
    assert_eq!(
        w.data.len(),
        w.k * w.k * w.c,
        "depthwise weights: bad length"
    );
    s.check_io(input_len, s.cin, y0, y1, out_len, s.cout);
}

const DW_CB: usize = 64;

/// Depthwise conv, any k×k / stride / pad, f32.
pub(crate) fn dw_f32(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDwF32,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    check_dw(input.len(), s, w, y0, y1, out.len());
    let (c, k, ow) = (s.cin, s.kh, s.ow());
    epi.check(c);
    for oy in y0..y1 {
        let (ky0, ky1) = tap_range(oy, s.stride, s.pad, k, s.h);
        for ox in 0..ow {
            let (kx0, kx1) = tap_range(ox, s.stride, s.pad, k, s.w);
            let obase = ((oy - y0) * ow + ox) * c;
            for c0 in (0..c).step_by(DW_CB) {
                let cb = DW_CB.min(c - c0);
                let mut acc = [0.0f32; DW_CB];
                for ky in ky0..ky1 {
                    let iy = oy * s.stride + ky - s.pad;
                    for kx in kx0..kx1 {
                        let ix = ox * s.stride + kx - s.pad;
                        let ib = (iy * s.w + ix) * c + c0;
                        let wb = (ky * k + kx) * c + c0;
                        for j in 0..cb {
                            acc[j] += input[ib + j] * w.data[wb + j];
                        }
                    }
                }
                for j in 0..cb {
                    out[obase + c0 + j] = epi.act.apply(acc[j] + epi.bias[c0 + j], c0 + j);
                }
            }
        }
    }
}

/// Depthwise conv, any k×k / stride / pad, int8 with requantising epilogue.
pub(crate) fn dw_i8(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    y0: usize,
    y1: usize,
    out: &mut [i8],
) {
    check_dw(input.len(), s, w, y0, y1, out.len());
    let (c, k, ow) = (s.cin, s.kh, s.ow());
    epi.check(c);
    for oy in y0..y1 {
        let (ky0, ky1) = tap_range(oy, s.stride, s.pad, k, s.h);
        for ox in 0..ow {
            let (kx0, kx1) = tap_range(ox, s.stride, s.pad, k, s.w);
            let obase = ((oy - y0) * ow + ox) * c;
            for c0 in (0..c).step_by(DW_CB) {
                let cb = DW_CB.min(c - c0);
                let mut acc = [0i32; DW_CB];
                for ky in ky0..ky1 {
                    let iy = oy * s.stride + ky - s.pad;
                    for kx in kx0..kx1 {
                        let ix = ox * s.stride + kx - s.pad;
                        let ib = (iy * s.w + ix) * c + c0;
                        let wb = (ky * k + kx) * c + c0;
                        for j in 0..cb {
                            acc[j] += input[ib + j] as i32 * w.data[wb + j] as i32;
                        }
                    }
                }
                for j in 0..cb {
                    out[obase + c0 + j] = epi.requant(acc[j], c0 + j);
                }
            }
        }
    }
}

/// im2col of output row `oy` into `dst` (`OW × kh*kw*cin`, order (ky,kx,ci), zeros for padding).
/// `dst.copy_from_slice(src)`, without a `memcpy` call for short runs such as the 3-channel
/// stem's (9 elements per kernel row, three times per output pixel): fixed-size chunks
/// become plain vector moves, and constant trip counts keep the compiler from turning the
/// loops back into a call.
#[inline(always)]
fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    const CHUNK: usize = 8;
    const MAX_CHUNKS: usize = 8;
    let n = dst.len();
    assert_eq!(n, src.len(), "copy_run: lens differ");
    if n > CHUNK * MAX_CHUNKS {
        dst.copy_from_slice(src);
        return;
    }
    let mut i = 0;
    for _ in 0..MAX_CHUNKS {
        if i + CHUNK > n {
            break;
        }
        let c: [T; CHUNK] = src[i..i + CHUNK].try_into().expect("chunk");
        dst[i..i + CHUNK].copy_from_slice(&c);
        i += CHUNK;
    }
    for _ in 0..CHUNK - 1 {
        if i >= n {
            break;
        }
        dst[i] = src[i];
        i += 1;
    }
}

/// The im2col rows of output pixels `[ox0, ox1)` of output row `oy` into `dst` (row `i`
/// for pixel `ox0 + i`), each kernel row taking `run >= kw*cin` elements, zero beyond
/// `kw*cin` (the padded int8 layout, [`super::pack_conv_i8_padded`]).
pub(crate) fn im2col_pixels<T: Copy + Default>(
    input: &[T],
    s: &ConvShape,
    run: usize,
    oy: usize,
    ox0: usize,
    ox1: usize,
    dst: &mut [T],
) {
    let cin = s.cin;
    let taps = s.kw * cin;
    debug_assert!(run >= taps);
    let kdim = s.kh * run;
    for ox in ox0..ox1 {
        let row = &mut dst[(ox - ox0) * kdim..(ox - ox0 + 1) * kdim];
        if run > taps {
            for ky in 0..s.kh {
                row[ky * run + taps..(ky + 1) * run].fill(T::default());
            }
        }
        let ix0 = (ox * s.stride) as isize - s.pad as isize;
        for ky in 0..s.kh {
            let iy = (oy * s.stride + ky) as isize - s.pad as isize;
            let dst = &mut row[ky * run..ky * run + taps];
            if iy >= 0 && iy < s.h as isize && ix0 >= 0 && ix0 as usize + s.kw <= s.w {
                // whole kernel row inside: the kw taps are one contiguous NHWC run
                let b = (iy as usize * s.w + ix0 as usize) * cin;
                copy_run(dst, &input[b..b + taps]);
                continue;
            }
            for kx in 0..s.kw {
                let ix = (ox * s.stride + kx) as isize - s.pad as isize;
                let d = &mut dst[kx * cin..(kx + 1) * cin];
                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                    d.fill(T::default());
                } else {
                    let b = (iy as usize * s.w + ix as usize) * cin;
                    d.copy_from_slice(&input[b..b + cin]);
                }
            }
        }
    }
}

/// Dense f32 conv, one output row at a time: im2col into `scratch` + `gemm`, or, given a
/// `window` GEMM, interior pixels read in place and im2col only for the border pixels.
/// Generic over the weights' element type: f32 panels, or f16 for [`super::F16Kernels`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_f32_with<T>(
    gemm: PwPanelsFn<T>,
    window: Option<WindowPanelsFn<T>>,
    input: &[f32],
    s: &ConvShape,
    w: &PackedPanels<T>,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    s.check_io(input.len(), s.cin, y0, y1, out.len(), s.cout);
    assert!(
        w.k == s.kh * s.kw * s.cin && w.n == s.cout,
        "conv weights K={} N={} vs {s:?}",
        w.k,
        w.n
    );
    let rows = ConvRows::new(s, s.kw * s.cin, w.k, y0, y1, scratch.len());
    rows.run(
        input,
        scratch,
        out,
        |cols, m, o| gemm(cols, w, epi, 0, m, o),
        window.map(|f| move |a: &WindowRows<f32>, m: usize, o: &mut [f32]| f(a, w, epi, 0, m, o)),
    );
}

/// A [`super::WindowI8Fn`] or [`super::WindowI8F32Fn`], by output type.
type WindowGemm<O> = fn(&WindowRowsI8, &PackedI8, &EpiI8, usize, usize, &mut [O]);

/// int8 dense conv, as [`conv_f32_with`]. Windows are read as whole 4-byte groups, so they
/// need kernel rows of whole groups: `kw·cin % 4 == 0`, or weights packed with padded rows
/// ([`super::pack_conv_i8_padded`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_i8_with<O>(
    gemm: fn(&[i8], &PackedI8, &EpiI8, usize, usize, &mut [O]),
    window: Option<WindowGemm<O>>,
    input: &[i8],
    s: &ConvShape,
    w: &PackedI8,
    epi: &EpiI8,
    y0: usize,
    y1: usize,
    scratch: &mut [i8],
    out: &mut [O],
) {
    s.check_io(input.len(), s.cin, y0, y1, out.len(), s.cout);
    let run = s.run_i8(w);
    assert_eq!(w.n, s.cout, "conv weights N={} vs {s:?}", w.n);
    let rows = ConvRows::new(s, run, w.k, y0, y1, scratch.len());
    rows.run(
        input,
        scratch,
        out,
        |cols, m, o| gemm(cols, w, epi, 0, m, o),
        window
            .filter(|_| run.is_multiple_of(4))
            .map(|f| move |a: &WindowRowsI8, m: usize, o: &mut [O]| f(a, w, epi, 0, m, o)),
    );
}

/// The output rows `[y0,y1)` of a dense conv whose im2col rows hold kernel rows of `run`
/// elements (`kw·cin`, or padded beyond it), `kdim = kh·run` per pixel.
struct ConvRows<'s> {
    s: &'s ConvShape,
    run: usize,
    kdim: usize,
    y0: usize,
    y1: usize,
}

impl<'s> ConvRows<'s> {
    fn new(
        s: &'s ConvShape,
        run: usize,
        kdim: usize,
        y0: usize,
        y1: usize,
        scratch: usize,
    ) -> Self {
        let len = s.ow() * kdim;
        assert!(scratch >= len, "scratch {scratch} < im2col length {len}");
        ConvRows {
            s,
            run,
            kdim,
            y0,
            y1,
        }
    }

    /// Each output row: border pixels (and rows whose windows reach into the padding)
    /// through im2col + `gemm(cols, pixels, out)`; interior pixels through
    /// `window(rows, pixels, out)` when given, reading the input in place.
    fn run<T: Copy + Default, O>(
        &self,
        input: &[T],
        scratch: &mut [T],
        out: &mut [O],
        gemm: impl Fn(&[T], usize, &mut [O]),
        window: Option<impl Fn(&WindowRows<T>, usize, &mut [O])>,
    ) {
        let (s, run, kdim) = (self.s, self.run, self.kdim);
        let (ow, n) = (s.ow(), s.cout);
        let (ya, yb) = s.interior_rows();
        let (xa, mut xb) = s.interior_cols();
        // The last element a window of row `oy` over pixels [xa, x1) reads (+1). With padded
        // runs the last pixels of the image would read past the input: they take im2col.
        let window_end = |oy: usize, x1: usize| {
            ((oy * s.stride + s.kh - 1 - s.pad) * s.w + (x1 - 1) * s.stride - s.pad) * s.cin + run
        };
        for oy in self.y0..self.y1 {
            let orow = &mut out[(oy - self.y0) * ow * n..(oy - self.y0 + 1) * ow * n];
            let inside = (ya..yb).contains(&oy);
            if inside {
                while xb > xa && window_end(oy, xb) > input.len() {
                    xb -= 1;
                }
            }
            let Some(window) = window.as_ref().filter(|_| inside && xa < xb) else {
                let cols = &mut scratch[..ow * kdim];
                im2col_pixels(input, s, run, oy, 0, ow, cols);
                gemm(cols, ow, orow);
                continue;
            };
            let (left, rest) = orow.split_at_mut(xa * n);
            let (mid, right) = rest.split_at_mut((xb - xa) * n);
            for (x0, x1, o) in [(0, xa, left), (xb, ow, right)] {
                if x0 < x1 {
                    let cols = &mut scratch[..(x1 - x0) * kdim];
                    im2col_pixels(input, s, run, oy, x0, x1, cols);
                    gemm(cols, x1 - x0, o);
                }
            }
            let rows = WindowRows {
                data: input,
                start: ((oy * s.stride - s.pad) * s.w + xa * s.stride - s.pad) * s.cin,
                row_stride: s.stride * s.cin,
                seg_stride: s.w * s.cin,
                seg_len: run,
                segs: s.kh,
            };
            window(&rows, xb - xa, mid);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Elementwise
// ------------------------------------------------------------------------------------------

pub(crate) fn add_f32(a: &[f32], b: &[f32], out: &mut [f32]) {
    super::check_add_lens(a.len(), b.len(), out.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

pub(crate) fn quantize_i8(x: &[f32], inv_scale: f32, out: &mut [i8]) {
    assert_eq!(
        x.len(),
        out.len(),
        "quantize: lens {} {}",
        x.len(),
        out.len()
    );
    for (o, &v) in out.iter_mut().zip(x) {
        *o = super::sat_i8(v * inv_scale);
    }
}

pub(crate) fn add_i8(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    super::check_add_lens(a.len(), b.len(), out.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = super::sat_i8(x as f32 * sa + y as f32 * sb);
    }
}

pub(crate) fn check_up2(
    a_len: usize,
    b_len: usize,
    h: usize,
    w: usize,
    c: usize,
    y0: usize,
    y1: usize,
    out_len: usize,
) {
    assert_eq!(a_len, h * w * c, "up2_add: a len {a_len} != {h}x{w}x{c}");
    assert_eq!(
        b_len,
        h.div_ceil(2) * w.div_ceil(2) * c,
        "up2_add: b len {b_len} != ceil({h}/2)xceil({w}/2)x{c}"
    );
    assert!(
        y0 <= y1 && y1 <= h,
        "up2_add rows [{y0},{y1}) outside [0,{h})"
    );
    assert_eq!(out_len, (y1 - y0) * w * c, "up2_add: out len");
}

pub(crate) fn up2_add_f32(
    a: &[f32],
    b: &[f32],
    h: usize,
    w: usize,
    c: usize,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    check_up2(a.len(), b.len(), h, w, c, y0, y1, out.len());
    let wb = w.div_ceil(2);
    for y in y0..y1 {
        for x in 0..w {
            let ai = (y * w + x) * c;
            let bi = ((y / 2) * wb + x / 2) * c;
            let oi = ((y - y0) * w + x) * c;
            for j in 0..c {
                out[oi + j] = a[ai + j] + b[bi + j];
            }
        }
    }
}

pub(crate) fn check_pool2(
    in_len: usize,
    h: usize,
    w: usize,
    c: usize,
    y0: usize,
    y1: usize,
    out_len: usize,
) {
    assert_eq!(
        in_len,
        h * w * c,
        "pool2: input len {in_len} != {h}x{w}x{c}"
    );
    assert!(
        y0 <= y1 && y1 <= h / 2,
        "pool2 rows [{y0},{y1}) outside [0,{})",
        h / 2
    );
    assert_eq!(out_len, (y1 - y0) * (w / 2) * c, "pool2: out len");
}

/// 2×2 stride-2 pooling of output rows `[y0,y1)`: each output value is `f` of the four
/// input values under it (top left, top right, bottom left, bottom right).
#[allow(clippy::too_many_arguments)]
fn pool2<T: Copy>(
    input: &[T],
    h: usize,
    w: usize,
    c: usize,
    y0: usize,
    y1: usize,
    out: &mut [T],
    f: impl Fn(T, T, T, T) -> T,
) {
    check_pool2(input.len(), h, w, c, y0, y1, out.len());
    let ow = w / 2;
    for oy in y0..y1 {
        for ox in 0..ow {
            let i00 = ((2 * oy) * w + 2 * ox) * c;
            let i10 = i00 + w * c;
            let o = ((oy - y0) * ow + ox) * c;
            for j in 0..c {
                out[o + j] = f(
                    input[i00 + j],
                    input[i00 + c + j],
                    input[i10 + j],
                    input[i10 + c + j],
                );
            }
        }
    }
}

pub(crate) fn maxpool2_f32(
    input: &[f32],
    h: usize,
    w: usize,
    c: usize,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    pool2(input, h, w, c, y0, y1, out, |p, q, r, s| {
        p.max(q).max(r.max(s))
    });
}

pub(crate) fn avgpool2_f32(
    input: &[f32],
    h: usize,
    w: usize,
    c: usize,
    y0: usize,
    y1: usize,
    out: &mut [f32],
) {
    pool2(input, h, w, c, y0, y1, out, |p, q, r, s| {
        ((p + q) + (r + s)) * 0.25
    });
}

/// int8 2×2 max pooling: exact, the output keeps the input's scale.
pub(crate) fn maxpool2_i8(
    input: &[i8],
    h: usize,
    w: usize,
    c: usize,
    y0: usize,
    y1: usize,
    out: &mut [i8],
) {
    pool2(input, h, w, c, y0, y1, out, |p, q, r, s| {
        p.max(q).max(r.max(s))
    });
}

/// int8 2×2 average pooling with the output in the input's scale: the mean of four int8
/// values is inside ±127, so only the rounding (half away from zero) is inexact.
pub(crate) fn avgpool2_i8(
    input: &[i8],
    h: usize,
    w: usize,
    c: usize,
    y0: usize,
    y1: usize,
    out: &mut [i8],
) {
    pool2(input, h, w, c, y0, y1, out, |p, q, r, s| {
        let sum = p as i32 + q as i32 + r as i32 + s as i32;
        // round(sum / 4), half away from zero, in integers.
        ((sum + 2 * sum.signum()) / 4) as i8
    });
}

pub(crate) fn sigmoid_f32(x: &mut [f32]) {
    for v in x {
        *v = 1.0 / (1.0 + (-*v).exp());
    }
}
