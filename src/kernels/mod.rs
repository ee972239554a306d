//! Compute kernels for facegate: the hot loops of SCRFD and MobileFaceNet on the CPU.
//!
//! Why it is shaped so:
//! - Activations are NHWC, batch 1 (`index = (y*W + x)*C + c`): a 1×1 conv is then a GEMM
//!   `[H*W × Cin]·[Cin × Cout]`, and depthwise convs vectorise across channels.
//! - Weights are packed once at load time ([`pack_pw_f32`], [`pack_conv_i8`], ...) into one
//!   ISA-independent layout, so a model file loads the same way whichever table is chosen.
//! - The table of kernels ([`Kernels`]) is chosen once at start-up ([`kernels`], a
//!   `OnceLock`): start from the portable `generic` table, then the ISA module of the running
//!   CPU replaces the entries it implements after run-time feature detection. One binary runs
//!   on a Pi 4 (ARMv8.0) and uses `sdot` and, for f16 model files, f16 arithmetic
//!   ([`F16Kernels`]) on a Pi 5. `FACEGATE_KERNELS=generic|nodotprod|auto` forces a path so
//!   they can be compared on one machine (`nodotprod`: no ARMv8.2 extension at all).
//! - Every kernel is single-threaded over a range (GEMM rows `[m0,m1)` or output rows
//!   `[y0,y1)`) and writes only that range of the output, so the caller splits work across
//!   threads with `chunks_mut`.
//!
//! int8 scheme: activations symmetric per tensor (zero-point 0, ±127), weights symmetric per
//! output channel (±127), i32 accumulation, then per output channel `c`:
//! `real = (acc + bias[c]) as f32 * mult[c]`, activation in that domain, round, clamp ±127.
//! -128 never occurs (every producer clamps to ±127), and int8 kernels may rely on it:
//! NEON without dotprod sums two products in one i16 lane (2·127² = 32258 < 32767); an
//! input of -128 is outside the contract.
//! Rounding: the generic and NEON kernels round half away from zero (`f32::round`,
//! `vcvtaq`); AVX2 rounds half to even (`cvtps_epi32`). They can differ by 1 LSB on exact
//! ties, which the tests allow.

// Index loops over register arrays and 8-argument kernels are the natural shape here.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use std::sync::OnceLock;

// First: its macro serves the architecture modules below.
#[macro_use]
mod entries;
#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
pub(crate) mod generic;
#[cfg(test)]
mod tests;
pub(crate) mod winograd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

pub use winograd::{
    pack_wino_f32, pack_wino_from_conv, wino_scratch_len, wino_supports, PackedWino,
    TILE as WINO_TILE,
};

/// Width (output channels) of one packed weight panel, for every ISA.
pub const NR: usize = 8;

/// Fused activation. The bound of `Relu6` is given in the output domain: `6.0` for f32
/// kernels, `6.0 / out_scale` for int8 kernels. `PRelu` holds one slope per output channel.
#[derive(Clone, Copy, Debug)]
pub enum Act<'a> {
    None,
    Relu,
    Relu6(f32),
    PRelu(&'a [f32]),
}

impl Act<'_> {
    /// Scalar definition, the one every SIMD kernel must agree with.
    #[inline(always)]
    pub fn apply(&self, x: f32, c: usize) -> f32 {
        match *self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6(hi) => x.max(0.0).min(hi),
            Act::PRelu(a) => {
                if x < 0.0 {
                    x * a[c]
                } else {
                    x
                }
            }
        }
    }
    fn check(&self, n: usize) {
        if let Act::PRelu(a) = self {
            assert!(a.len() >= n, "PReLU slopes: {} < {} channels", a.len(), n);
        }
    }
}

/// f32 epilogue: `out = act(acc + bias[c])`.
#[derive(Clone, Copy, Debug)]
pub struct EpiF32<'a> {
    pub bias: &'a [f32],
    pub act: Act<'a>,
}

impl EpiF32<'_> {
    pub fn check(&self, n: usize) {
        assert!(
            self.bias.len() >= n,
            "bias: {} < {} channels",
            self.bias.len(),
            n
        );
        self.act.check(n);
    }
}

/// int8 epilogue: `real = (acc + bias[c]) as f32 * mult[c]`, `act(real)`, round, clamp ±127.
/// `mult[c] = in_scale * w_scale[c] / out_scale`.
#[derive(Clone, Copy, Debug)]
pub struct EpiI8<'a> {
    pub bias: &'a [i32],
    pub mult: &'a [f32],
    pub act: Act<'a>,
}

impl EpiI8<'_> {
    pub fn check(&self, n: usize) {
        assert!(
            self.bias.len() >= n,
            "bias: {} < {} channels",
            self.bias.len(),
            n
        );
        assert!(
            self.mult.len() >= n,
            "mult: {} < {} channels",
            self.mult.len(),
            n
        );
        self.act.check(n);
    }
    /// The scalar requantisation every kernel agrees with (SIMD within 1 LSB).
    #[inline(always)]
    pub fn requant(&self, acc: i32, c: usize) -> i8 {
        let real = (acc.wrapping_add(self.bias[c]) as f32) * self.mult[c];
        let real = self.act.apply(real, c);
        real.round().clamp(-127.0, 127.0) as i8
    }
}

/// Requantise a value already in output units (round half away from zero, clamp ±127).
#[inline(always)]
pub fn sat_i8(x: f32) -> i8 {
    x.round().clamp(-127.0, 127.0) as i8
}

// ------------------------------------------------------------------------------------------
// Packed weights
// ------------------------------------------------------------------------------------------

/// GEMM weights `[K × N]` packed in panels (pointwise and im2col'd dense convs), f32 or f16.
///
/// Layout: `ceil(N/8)` panels of 8 output channels; panel `p` holds `K` rows of 8 values:
/// `data[(p*K + k)*8 + j] = w[n = 8p + j][k]`; channels `n >= N` are zero. One f16 row is
/// then exactly one 128-bit vector (`.8h`), one f32 row two.
#[derive(Clone, Debug)]
pub struct PackedPanels<T> {
    pub k: usize,
    pub n: usize,
    pub data: Vec<T>,
}
pub type PackedF32 = PackedPanels<f32>;
/// f16 weights kept as f16, for the kernels with f16 arithmetic ([`F16Kernels`]).
pub type PackedF16 = PackedPanels<half::f16>;

impl<T> PackedPanels<T> {
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

impl PackedF16 {
    /// The same weights widened to f32 (exact), for the f32 kernels (Winograd).
    pub fn widen(&self) -> PackedF32 {
        PackedF32 {
            k: self.k,
            n: self.n,
            data: self.data.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// GEMM weights `[K × N]` packed for int8, in groups of 4 consecutive `k` (the `sdot` shape).
///
/// `kp = round_up(K, 4)`, `G = kp/4`. Layout: panels of 8 output channels; panel `p`, group
/// `g`, channel `j`, byte `r`: `data[((p*G + g)*8 + j)*4 + r] = w[8p + j][4g + r]`; padding
/// (`k >= K` or `n >= N`) is zero. So one group of one panel is 32 bytes = 8 channels × 4 k.
///
/// `wsum[n] = Σ_k w[n][k]` (`panels × 8` entries, zero for padding channels): kernels whose
/// dot-product instruction takes unsigned activations (x86 VNNI `vpdpbusd`) feed `a + 128`
/// and subtract `128 · wsum[n]`, which keeps the result exact.
#[derive(Clone, Debug)]
pub struct PackedI8 {
    pub k: usize,
    pub kp: usize,
    pub n: usize,
    pub data: Vec<i8>,
    pub wsum: Vec<i32>,
}

impl PackedI8 {
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
    pub fn groups(&self) -> usize {
        self.kp / 4
    }
}

/// Depthwise weights: `data[(ky*k + kx)*C + c]` (taps outer, channels contiguous).
#[derive(Clone, Debug)]
pub struct PackedDw<T> {
    pub k: usize,
    pub c: usize,
    pub data: Vec<T>,
    /// int8 3×3 only (filled by [`pack_dw_i8`], else empty): the taps in pairs
    /// `(0,1) (2,3) (4,5) (6,7) (8,–)`, widened to i16 and interleaved per channel, each pair's
    /// row `[w_a[j % C], w_b[j % C]]` for `j < C + DW_PAIR_PAD`. A kernel that walks a row's
    /// pixels and channels as one flat run reads the weights of any 32 consecutive lanes,
    /// starting at any channel, as one contiguous load.
    pub tap_pairs: Vec<i16>,
}

/// How far [`PackedDw::tap_pairs`] rows run past `C` (one 32-lane vector).
pub const DW_PAIR_PAD: usize = 32;
pub type PackedDwF32 = PackedDw<f32>;
pub type PackedDwI8 = PackedDw<i8>;
pub type PackedDwF16 = PackedDw<half::f16>;

/// Pack pointwise weights given as `[N][K]` row-major (ONNX/PyTorch `[Cout][Cin][1][1]`).
pub fn pack_pw_f32(w: &[f32], n: usize, k: usize) -> PackedF32 {
    pack_pw(w, n, k)
}

/// [`pack_pw_f32`] keeping f16 weights as f16.
pub fn pack_pw_f16(w: &[half::f16], n: usize, k: usize) -> PackedF16 {
    pack_pw(w, n, k)
}

/// Pack `[N][K]` row-major weights of any element type into panels.
pub fn pack_pw<T: Copy + Default>(w: &[T], n: usize, k: usize) -> PackedPanels<T> {
    assert_eq!(
        w.len(),
        n * k,
        "pointwise weights: len {} != {n}*{k}",
        w.len()
    );
    let panels = n.div_ceil(NR);
    let mut data = vec![T::default(); panels * k * NR];
    for nn in 0..n {
        let (p, j) = (nn / NR, nn % NR);
        for kk in 0..k {
            data[(p * k + kk) * NR + j] = w[nn * k + kk];
        }
    }
    PackedPanels { k, n, data }
}

/// Pack int8 pointwise weights given as `[N][K]` row-major.
pub fn pack_pw_i8(w: &[i8], n: usize, k: usize) -> PackedI8 {
    assert_eq!(
        w.len(),
        n * k,
        "pointwise weights: len {} != {n}*{k}",
        w.len()
    );
    let kp = k.div_ceil(4) * 4;
    let g = kp / 4;
    let panels = n.div_ceil(NR);
    let mut data = vec![0i8; panels * g * NR * 4];
    let mut wsum = vec![0i32; panels * NR];
    for nn in 0..n {
        let (p, j) = (nn / NR, nn % NR);
        for kk in 0..k {
            data[((p * g + kk / 4) * NR + j) * 4 + kk % 4] = w[nn * k + kk];
            wsum[nn] += i32::from(w[nn * k + kk]);
        }
    }
    PackedI8 {
        k,
        kp,
        n,
        data,
        wsum,
    }
}

/// The `[N][K]` row-major weights a [`PackedPanels`] was packed from (to repack, e.g. to fuse
/// convolutions side by side).
pub fn unpack_pw<T: Copy + Default>(b: &PackedPanels<T>) -> Vec<T> {
    let mut w = vec![T::default(); b.n * b.k];
    for nn in 0..b.n {
        let (p, j) = (nn / NR, nn % NR);
        for kk in 0..b.k {
            w[nn * b.k + kk] = b.data[(p * b.k + kk) * NR + j];
        }
    }
    w
}

/// The `[N][K]` row-major weights a [`PackedI8`] was packed from.
pub fn unpack_pw_i8(b: &PackedI8) -> Vec<i8> {
    let g = b.groups();
    let mut w = vec![0i8; b.n * b.k];
    for nn in 0..b.n {
        let (p, j) = (nn / NR, nn % NR);
        for kk in 0..b.k {
            w[nn * b.k + kk] = b.data[((p * g + kk / 4) * NR + j) * 4 + kk % 4];
        }
    }
    w
}

/// Reorder dense conv weights OIHW `[Cout][Cin][kh][kw]` to `[Cout][(ky,kx,ci)]`, the order of
/// the NHWC im2col rows.
fn oihw_to_ohwi<T: Copy>(w: &[T], cout: usize, cin: usize, kh: usize, kw: usize) -> Vec<T> {
    assert_eq!(
        w.len(),
        cout * cin * kh * kw,
        "conv weights: len {} != {cout}*{cin}*{kh}*{kw}",
        w.len()
    );
    let mut out = Vec::with_capacity(w.len());
    for o in 0..cout {
        for ky in 0..kh {
            for kx in 0..kw {
                for ci in 0..cin {
                    out.push(w[((o * cin + ci) * kh + ky) * kw + kx]);
                }
            }
        }
    }
    out
}

/// Pack dense conv weights (OIHW) for [`Kernels::conv_f32`]: `K = kh*kw*cin`, order (ky,kx,ci).
pub fn pack_conv_f32(w: &[f32], cout: usize, cin: usize, kh: usize, kw: usize) -> PackedF32 {
    pack_pw(&oihw_to_ohwi(w, cout, cin, kh, kw), cout, kh * kw * cin)
}

/// [`pack_conv_f32`] keeping f16 weights as f16 (for [`Kernels::conv_f16`]).
pub fn pack_conv_f16(w: &[half::f16], cout: usize, cin: usize, kh: usize, kw: usize) -> PackedF16 {
    pack_pw(&oihw_to_ohwi(w, cout, cin, kh, kw), cout, kh * kw * cin)
}

/// Pack int8 dense conv weights (OIHW) for [`Kernels::conv_i8`]: `K = kh*kw*cin`, order
/// (ky,kx,ci), as for f32.
pub fn pack_conv_i8(w: &[i8], cout: usize, cin: usize, kh: usize, kw: usize) -> PackedI8 {
    pack_pw_i8(&oihw_to_ohwi(w, cout, cin, kh, kw), cout, kh * kw * cin)
}

/// Pack int8 dense conv weights (OIHW) with every kernel row padded to whole 4-byte groups:
/// `K = kh * round_up(kw*cin, 4)`, zero weights in the padding. Tables with in-place windows
/// ([`Kernels::window_i8`]) then read a kernel row as whole groups even where `kw*cin` is not
/// a multiple of 4 (the 3-channel stems: 9 bytes read as 12, the last 3 times zero).
/// Identical to [`pack_conv_i8`] where `kw*cin % 4 == 0`.
pub fn pack_conv_i8_padded(w: &[i8], cout: usize, cin: usize, kh: usize, kw: usize) -> PackedI8 {
    let run = kw * cin;
    let run4 = run.next_multiple_of(4);
    let ohwi = oihw_to_ohwi(w, cout, cin, kh, kw);
    let mut padded = vec![0i8; cout * kh * run4];
    for (dst, src) in padded.chunks_exact_mut(run4).zip(ohwi.chunks_exact(run)) {
        dst[..run].copy_from_slice(src);
    }
    pack_pw_i8(&padded, cout, kh * run4)
}

/// Pack depthwise weights given as `[C][1][k][k]`.
pub fn pack_dw<T: Copy + Default>(w: &[T], c: usize, k: usize) -> PackedDw<T> {
    assert_eq!(
        w.len(),
        c * k * k,
        "depthwise weights: len {} != {c}*{k}*{k}",
        w.len()
    );
    let mut data = vec![T::default(); c * k * k];
    for cc in 0..c {
        for t in 0..k * k {
            data[t * c + cc] = w[cc * k * k + t];
        }
    }
    PackedDw {
        k,
        c,
        data,
        tap_pairs: Vec::new(),
    }
}

/// [`pack_dw`] for int8 weights, with [`PackedDw::tap_pairs`] for 3×3 filters.
pub fn pack_dw_i8(w: &[i8], c: usize, k: usize) -> PackedDwI8 {
    let mut p = pack_dw(w, c, k);
    if k == 3 {
        let run = c + DW_PAIR_PAD;
        p.tap_pairs = vec![0; 5 * run * 2];
        for q in 0..5 {
            for j in 0..run {
                let at = (q * run + j) * 2;
                p.tap_pairs[at] = p.data[2 * q * c + j % c] as i16;
                if 2 * q + 1 < 9 {
                    p.tap_pairs[at + 1] = p.data[(2 * q + 1) * c + j % c] as i16;
                }
            }
        }
    }
    p
}

// ------------------------------------------------------------------------------------------
// Shapes
// ------------------------------------------------------------------------------------------

/// A convolution's geometry (dense: `cin`→`cout`; depthwise: `cin == cout == C`).
/// Padding is symmetric zero padding of `pad` on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ConvShape {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// `[xa, xb)`: the output columns whose window lies wholly inside the image (no
    /// padding read), `xa <= xb`.
    pub fn interior_cols(&self) -> (usize, usize) {
        Self::interior(self.w, self.kw, self.pad, self.stride, self.ow())
    }
    /// `[ya, yb)`: the output rows whose window lies wholly inside the image.
    pub fn interior_rows(&self) -> (usize, usize) {
        Self::interior(self.h, self.kh, self.pad, self.stride, self.oh())
    }
    fn interior(size: usize, k: usize, pad: usize, stride: usize, out: usize) -> (usize, usize) {
        let a = pad.div_ceil(stride);
        // o·stride − pad + k <= size
        let b = if size + pad >= k {
            ((size + pad - k) / stride + 1).min(out)
        } else {
            0
        };
        (a.min(b), b)
    }
    /// Depthwise shape: `c` channels, `k×k` window.
    pub fn dw(h: usize, w: usize, c: usize, k: usize, stride: usize, pad: usize) -> Self {
        ConvShape {
            h,
            w,
            cin: c,
            cout: c,
            kh: k,
            kw: k,
            stride,
            pad,
        }
    }
    /// Elements of the scratch buffer [`Kernels::conv_f32`]/[`Kernels::conv_i8`] need
    /// (one output row of im2col; room for the padded int8 layout of
    /// [`pack_conv_i8_padded`] too).
    pub fn im2col_len(&self) -> usize {
        self.ow() * self.kh * (self.kw * self.cin).next_multiple_of(4)
    }
    /// Elements of one kernel row in the im2col rows of int8 weights `w`: `kw*cin`, or that
    /// rounded up to whole groups of 4 for [`pack_conv_i8_padded`] weights.
    pub(crate) fn run_i8(&self, w: &PackedI8) -> usize {
        let run = self.kw * self.cin;
        let run4 = run.next_multiple_of(4);
        assert!(
            w.k == self.kh * run || w.k == self.kh * run4,
            "conv weights K={} vs {self:?}",
            w.k
        );
        if w.k == self.kh * run {
            run
        } else {
            run4
        }
    }
    /// Multiply-accumulates of a dense conv (for benches).
    pub fn macs(&self) -> u64 {
        (self.oh() * self.ow() * self.cout * self.kh * self.kw * self.cin) as u64
    }
    pub(crate) fn check(&self) {
        assert!(
            self.stride >= 1 && self.kh >= 1 && self.kw >= 1,
            "bad conv shape {self:?}"
        );
        assert!(
            self.h + 2 * self.pad >= self.kh && self.w + 2 * self.pad >= self.kw,
            "window larger than padded input: {self:?}"
        );
        assert!(
            self.pad < self.kh && self.pad < self.kw,
            "pad >= kernel unsupported: {self:?}"
        );
    }
    /// Asserts the common contract of a conv-like kernel over output rows `[y0,y1)`.
    pub(crate) fn check_io(
        &self,
        in_len: usize,
        cin: usize,
        y0: usize,
        y1: usize,
        out_len: usize,
        cout: usize,
    ) {
        self.check();
        assert_eq!(
            in_len,
            self.h * self.w * cin,
            "input len {in_len} != {}x{}x{cin}",
            self.h,
            self.w
        );
        assert!(
            y0 <= y1 && y1 <= self.oh(),
            "rows [{y0},{y1}) outside [0,{})",
            self.oh()
        );
        assert_eq!(
            out_len,
            (y1 - y0) * self.ow() * cout,
            "output len {out_len} != ({y1}-{y0})x{}x{cout}",
            self.ow()
        );
    }
}

/// The A operand of a GEMM as a view into a conv's input, so im2col never copies it: row `m`
/// is the receptive field of output pixel `m`, `segs` runs of `seg_len` elements (one kernel
/// row, `kw·cin` NHWC values, each), run `j` of row `m` starting at
/// `data[start + m·row_stride + j·seg_stride]`. For an output row of interior pixels:
/// `row_stride = stride·cin` and `seg_stride = W·cin`.
///
/// int8 kernels read runs as groups of 4 bytes, so for them `seg_len % 4 == 0`: a group never
/// straddles two runs and the weights keep the plain [`PackedI8`] layout of K = `segs·seg_len`.
#[derive(Clone, Copy, Debug)]
pub struct WindowRows<'a, T> {
    pub data: &'a [T],
    pub start: usize,
    pub row_stride: usize,
    pub seg_stride: usize,
    pub seg_len: usize,
    pub segs: usize,
}
pub type WindowRowsI8<'a> = WindowRows<'a, i8>;

impl<T> WindowRows<'_, T> {
    /// Asserts that rows `[m0,m1)` lie inside `data`, that K = `k` and that runs are whole
    /// groups of `group` elements.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    pub(crate) fn check(&self, k: usize, group: usize, m0: usize, m1: usize) {
        assert!(
            self.segs >= 1 && self.seg_len > 0 && self.seg_len.is_multiple_of(group),
            "window rows: runs of {}, not whole groups of {group}",
            self.seg_len
        );
        assert_eq!(
            self.segs * self.seg_len,
            k,
            "window rows K != weights K={k}"
        );
        assert!(m0 <= m1, "rows [{m0},{m1})");
        if m1 > m0 {
            let last = self.start
                + (m1 - 1) * self.row_stride
                + (self.segs - 1) * self.seg_stride
                + self.seg_len;
            assert!(
                last <= self.data.len(),
                "window rows [{m0},{m1}) read up to {last} > input len {}",
                self.data.len()
            );
        }
    }
}

/// Where a SIMD tile's A rows are: row `m`, run `j`, element `i` at
/// `ptr + m·row_stride + j·seg_stride + i`, `segs` runs of `seg_len` elements. A plain
/// `[M×K]` matrix is one run of K; the in-place windows of [`WindowRows`] are `kh` runs, one
/// per kernel row. One tile then serves both GEMMs. (int8 tiles read runs in groups of 4
/// bytes; only a plain matrix may end in a partial group, which they read byte by byte.)
#[derive(Clone, Copy)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
pub(crate) struct RowsPtr<T> {
    pub ptr: *const T,
    pub row_stride: usize,
    pub seg_stride: usize,
    pub seg_len: usize,
    pub segs: usize,
}

#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
impl<T> RowsPtr<T> {
    pub(crate) fn matrix(a: &[T], k: usize) -> RowsPtr<T> {
        RowsPtr {
            ptr: a.as_ptr(),
            row_stride: k,
            seg_stride: 0,
            seg_len: k,
            segs: 1,
        }
    }
    /// # Safety
    /// `a` was validated ([`WindowRows::check`]) for the rows the kernel will read.
    pub(crate) unsafe fn window(a: &WindowRows<T>) -> RowsPtr<T> {
        RowsPtr {
            // SAFETY: `start` lies inside `data` (checked by the caller).
            ptr: unsafe { a.data.as_ptr().add(a.start) },
            row_stride: a.row_stride,
            seg_stride: a.seg_stride,
            seg_len: a.seg_len,
            segs: a.segs,
        }
    }
}

// ------------------------------------------------------------------------------------------
// The kernel table
// ------------------------------------------------------------------------------------------

/// GEMM with fused epilogue: `a` is `[M × K]` (row-major, `K = packed.k`), computes rows
/// `[m0,m1)` into `out`, which is `[(m1-m0) × N]`; f32 activations, weights of type `T`.
pub type PwPanelsFn<T> =
    fn(a: &[f32], b: &PackedPanels<T>, epi: &EpiF32, m0: usize, m1: usize, out: &mut [f32]);
/// [`PwPanelsFn`] whose A operand is read in place through a [`WindowRows`] (a conv's
/// im2col rows over interior pixels, never materialised), rows `[m0,m1)` into `out`.
pub type WindowPanelsFn<T> = fn(
    a: &WindowRows<f32>,
    b: &PackedPanels<T>,
    epi: &EpiF32,
    m0: usize,
    m1: usize,
    out: &mut [f32],
);
pub type PwF32Fn = PwPanelsFn<f32>;
pub type PwI8Fn = fn(a: &[i8], b: &PackedI8, epi: &EpiI8, m0: usize, m1: usize, out: &mut [i8]);
/// int8 GEMM with a dequantising epilogue: `out = act((acc + bias) · mult)` as f32, not
/// rounded (an int8 conv whose output an f32 reader takes: the network's outputs, float
/// layers of a mixed-precision model).
pub type PwI8F32Fn = fn(a: &[i8], b: &PackedI8, epi: &EpiI8, m0: usize, m1: usize, out: &mut [f32]);
pub type WindowF32Fn = WindowPanelsFn<f32>;
/// int8 GEMM whose A operand is read in place through a [`WindowRowsI8`] (a conv's im2col
/// rows over interior pixels, never materialised), rows `[m0,m1)` into `out`.
pub type WindowI8Fn =
    fn(a: &WindowRowsI8, b: &PackedI8, epi: &EpiI8, m0: usize, m1: usize, out: &mut [i8]);
/// [`WindowI8Fn`] with the dequantising epilogue of [`PwI8F32Fn`].
pub type WindowI8F32Fn =
    fn(a: &WindowRowsI8, b: &PackedI8, epi: &EpiI8, m0: usize, m1: usize, out: &mut [f32]);
/// Plain i32 accumulators, no bias/epilogue (for tests and for callers that fuse themselves).
pub type PwI8AccFn = fn(a: &[i8], b: &PackedI8, m0: usize, m1: usize, out: &mut [i32]);
/// Depthwise conv over output rows `[y0,y1)`; `input` is the whole `[H×W×C]` tensor, `out`
/// holds only rows `[y0,y1)`: `(y1-y0) × OW × C`. f32 activations, weights of type `T`.
pub type DwPanelsFn<T> = fn(
    input: &[f32],
    s: &ConvShape,
    w: &PackedDw<T>,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    out: &mut [f32],
);
pub type DwF32Fn = DwPanelsFn<f32>;
pub type DwI8Fn = fn(
    input: &[i8],
    s: &ConvShape,
    w: &PackedDwI8,
    epi: &EpiI8,
    y0: usize,
    y1: usize,
    out: &mut [i8],
);
/// Dense 3×3 stride-1 conv by Winograd F(4,3) (see `winograd`) over output rows `[y0,y1)`,
/// its 36 GEMMs through `gemm`; `scratch` holds [`wino_scratch_len`] floats.
pub type WinoF32Fn = fn(
    gemm: PwF32Fn,
    input: &[f32],
    s: &ConvShape,
    w: &PackedWino,
    epi: &EpiF32,
    y0: usize,
    y1: usize,
    scratch: &mut [f32],
    out: &mut [f32],
);
/// f32 activations × f16 weights with f16 arithmetic (see [`F16Kernels`]).
pub type PwF16Fn = PwPanelsFn<half::f16>;
pub type WindowF16Fn = WindowPanelsFn<half::f16>;
/// [`DwF32Fn`] on f16 weights, 3×3 filters only (any stride and padding).
pub type DwF16Fn = DwPanelsFn<half::f16>;

/// Kernels that compute in f16 (for the layers of an f16 model file) where the CPU has
/// half-precision arithmetic (aarch64 FEAT_FP16: Cortex-A76/Pi 5, Orin). Activations stay
/// f32 in the engine's buffers: a kernel converts them to f16 as it loads them, multiplies
/// and adds in f16, and returns to f32 in the epilogue (bias, activation), so f32 and f16
/// layers mix freely and the rest of the engine is unchanged. Without such a table an f16
/// file's weights are widened to f32 at load and run on the f32 kernels.
#[derive(Clone, Copy)]
pub struct F16Kernels {
    pub pw: PwF16Fn,
    /// Dense convs read in place over interior pixels (im2col + `pw` at the borders).
    pub window: WindowF16Fn,
    pub dw3x3: DwF16Fn,
    pub pw_name: &'static str,
    pub dw3x3_name: &'static str,
}

/// `out = a + b` (same length).
pub type AddF32Fn = fn(a: &[f32], b: &[f32], out: &mut [f32]);
/// `out = sat(round(a*sa + b*sb))`, `sa = a_scale/out_scale`, `sb = b_scale/out_scale`.
pub type AddI8Fn = fn(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]);
/// FPN top-down: `out[y][x][c] = a[y][x][c] + b[y/2][x/2][c]` for output rows `[y0,y1)`;
/// `a` is `[h×w×c]`, `b` is `[ceil(h/2) × ceil(w/2) × c]`, `out` is `(y1-y0) × w × c`.
pub type Up2AddF32Fn =
    fn(a: &[f32], b: &[f32], h: usize, w: usize, c: usize, y0: usize, y1: usize, out: &mut [f32]);
/// 2×2 stride-2 pooling of `[h×w×c]` into output rows `[y0,y1)` of `[h/2 × w/2 × c]`.
pub type Pool2F32Fn =
    fn(input: &[f32], h: usize, w: usize, c: usize, y0: usize, y1: usize, out: &mut [f32]);
/// In place logistic sigmoid.
pub type SigmoidF32Fn = fn(x: &mut [f32]);
/// `out = sat(round(x * inv_scale))`: an f32 tensor into int8 steps (the network input of an
/// int8 model).
pub type QuantizeI8Fn = fn(x: &[f32], inv_scale: f32, out: &mut [i8]);

/// Which path the table was built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Portable Rust only.
    Generic,
    /// SIMD of the baseline ISA only, without the later extensions: NEON without `sdot`
    /// and without f16 arithmetic on aarch64 (the Pi 4 / ARMv8.0 path; an f16 model then
    /// runs on f32 kernels), AVX2 without VNNI (`vpdpbusd`) on x86-64. Lets one machine
    /// test and count both paths.
    NoDotprod,
    /// Everything the CPU has.
    Auto,
}

impl Mode {
    /// Reads `FACEGATE_KERNELS` (`generic|nodotprod|auto`, default auto). An unknown value
    /// warns on stderr and means auto.
    pub fn from_env() -> Mode {
        match std::env::var("FACEGATE_KERNELS").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Mode::Auto,
            Ok("generic") => Mode::Generic,
            Ok("nodotprod") => Mode::NoDotprod,
            Ok(other) => {
                eprintln!("facegate: FACEGATE_KERNELS={other:?} unknown (generic|nodotprod|auto); using auto");
                Mode::Auto
            }
        }
    }
}

/// The check every elementwise add entry (generic and SIMD) makes before touching memory:
/// both inputs and the output have one length.
pub(crate) fn check_add_lens(a: usize, b: usize, out: usize) {
    assert!(a == b && a == out, "add: lens {a} {b} {out}");
}

/// One entry per op/type, plus the name of the kernel chosen for it.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub mode: Mode,
    pub pw_f32: PwF32Fn,
    pub pw_i8: PwI8Fn,
    pub pw_i8_acc: PwI8AccFn,
    /// Only where a kernel fuses the f32 epilogue; otherwise callers take the accumulators
    /// (`pw_i8_acc`) and apply it themselves.
    pub pw_i8_f32: Option<PwI8F32Fn>,
    /// Where a kernel reads dense convs' windows in place; otherwise im2col + the GEMM.
    pub window_f32: Option<WindowF32Fn>,
    pub window_i8: Option<WindowI8Fn>,
    /// With `pw_i8_f32`: the same for int8 convs with f32 outputs.
    pub window_i8_f32: Option<WindowI8F32Fn>,
    pub dw_f32: DwF32Fn,
    pub dw_i8: DwI8Fn,
    pub wino_f32: WinoF32Fn,
    pub add_f32: AddF32Fn,
    pub add_i8: AddI8Fn,
    pub up2_add_f32: Up2AddF32Fn,
    pub maxpool2_f32: Pool2F32Fn,
    pub avgpool2_f32: Pool2F32Fn,
    pub sigmoid_f32: SigmoidF32Fn,
    pub quantize_i8: QuantizeI8Fn,
    /// f16 arithmetic for f16 model files, where the CPU has it.
    pub f16: Option<F16Kernels>,
    pub names: KernelNames,
}

/// The chosen kernel's name per entry (`neon_dot_pw_i8_8x8`, ...).
#[derive(Clone, Copy, Debug)]
pub struct KernelNames {
    pub pw_f32: &'static str,
    pub pw_i8: &'static str,
    pub dw_f32: &'static str,
    pub dw_i8: &'static str,
    pub wino_f32: &'static str,
    pub add_f32: &'static str,
    pub add_i8: &'static str,
    pub up2_add_f32: &'static str,
    pub pool2_f32: &'static str,
    pub sigmoid_f32: &'static str,
    pub quantize_i8: &'static str,
    pub pw_i8_f32: &'static str,
}

impl Kernels {
    /// The portable table, the reference for every other.
    pub fn generic() -> Kernels {
        Kernels {
            mode: Mode::Generic,
            pw_f32: generic::pw_f32,
            pw_i8: generic::pw_i8,
            pw_i8_acc: generic::pw_i8_acc,
            pw_i8_f32: None,
            window_f32: None,
            window_i8: None,
            window_i8_f32: None,
            dw_f32: generic::dw_f32,
            dw_i8: generic::dw_i8,
            wino_f32: winograd::wino_f32,
            add_f32: generic::add_f32,
            add_i8: generic::add_i8,
            up2_add_f32: generic::up2_add_f32,
            maxpool2_f32: generic::maxpool2_f32,
            avgpool2_f32: generic::avgpool2_f32,
            sigmoid_f32: generic::sigmoid_f32,
            quantize_i8: generic::quantize_i8,
            f16: None,
            names: KernelNames {
                pw_f32: "generic_pw_f32_1x8",
                pw_i8: "generic_pw_i8_1x8",
                dw_f32: "generic_dw_f32",
                dw_i8: "generic_dw_i8",
                wino_f32: "generic_wino_f32_4x3",
                add_f32: "generic_add_f32",
                add_i8: "generic_add_i8",
                up2_add_f32: "generic_up2_add_f32",
                pool2_f32: "generic_pool2_f32",
                sigmoid_f32: "generic_sigmoid_f32",
                quantize_i8: "generic_quantize_i8",
                pw_i8_f32: "pw_i8_acc+epilogue",
            },
        }
    }

    /// Build the table for `mode` on the running CPU (what [`kernels`] does once).
    pub fn select(mode: Mode) -> Kernels {
        #[allow(unused_mut)]
        let mut k = Kernels::generic();
        k.mode = mode;
        if mode == Mode::Generic {
            return k;
        }
        #[cfg(target_arch = "x86_64")]
        x86_64::install(&mut k, mode == Mode::Auto);
        #[cfg(target_arch = "aarch64")]
        aarch64::install(&mut k, mode == Mode::Auto);
        k
    }

    /// The automatic table once per int8 dot-product GEMM family this CPU can run (tile
    /// shapes), the one it picks first: benches compare them in one run.
    pub fn dot_i8_variants() -> Vec<Kernels> {
        #[allow(unused_mut)]
        let mut v = vec![Kernels::select(Mode::Auto)];
        #[cfg(target_arch = "x86_64")]
        for gemms in x86_64::dot_pw_i8().iter().skip(1) {
            let mut k = v[0];
            gemms.install(&mut k);
            v.push(k);
        }
        v
    }

    /// `"mode=Auto pw_f32=avx2_pw_f32_6x16 pw_i8=... ..."`.
    pub fn describe(&self) -> String {
        let n = &self.names;
        // in-place windows (the same GEMM tiles) for interior pixels, im2col at the borders
        let window = |has: bool| if has { "window|" } else { "" };
        let f16 = match &self.f16 {
            Some(f) => format!(
                "pw_f16={0} conv_f16=window|im2col+{0} dw3x3_f16={1}",
                f.pw_name, f.dw3x3_name
            ),
            None => "f16=widened_to_f32".into(),
        };
        format!(
            "mode={:?} pw_f32={} pw_i8={} dw_f32={} dw_i8={} conv_f32={}im2col+{} conv3x3s1_f32={}+{} conv_i8={}im2col+{} pw_i8_f32={} add_f32={} add_i8={} up2_add_f32={} pool2_f32={} sigmoid_f32={} quantize_i8={} {f16}",
            self.mode, n.pw_f32, n.pw_i8, n.dw_f32, n.dw_i8, window(self.window_f32.is_some()), n.pw_f32, n.wino_f32, n.pw_f32, window(self.window_i8.is_some()), n.pw_i8, n.pw_i8_f32, n.add_f32, n.add_i8, n.up2_add_f32, n.pool2_f32, n.sigmoid_f32, n.quantize_i8
        )
    }

    /// Dense conv (any kh×kw, stride, pad) for output rows `[y0,y1)`: im2col of one output
    /// row at a time into `scratch` (len >= [`ConvShape::im2col_len`], reused, never
    /// allocated here) + this table's GEMM. `w` from [`pack_conv_f32`].
    #[allow(clippy::too_many_arguments)]
    pub fn conv_f32(
        &self,
        input: &[f32],
        s: &ConvShape,
        w: &PackedF32,
        epi: &EpiF32,
        y0: usize,
        y1: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let window = self.window_f32;
        generic::conv_f32_with(self.pw_f32, window, input, s, w, epi, y0, y1, scratch, out)
    }

    /// Dense conv on f16 weights with the f16 kernels `f` (in place over interior pixels,
    /// im2col at the borders), as [`Kernels::conv_f32`]. `w` from [`pack_conv_f16`].
    #[allow(clippy::too_many_arguments)]
    pub fn conv_f16(
        f: &F16Kernels,
        input: &[f32],
        s: &ConvShape,
        w: &PackedF16,
        epi: &EpiF32,
        y0: usize,
        y1: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        generic::conv_f32_with(f.pw, Some(f.window), input, s, w, epi, y0, y1, scratch, out)
    }

    /// Dense 3×3 stride-1 conv by Winograd F(4,3), as [`Kernels::conv_f32`] but with
    /// [`wino_scratch_len`] floats of scratch. `w` from [`pack_wino_f32`].
    #[allow(clippy::too_many_arguments)]
    pub fn conv_wino_f32(
        &self,
        input: &[f32],
        s: &ConvShape,
        w: &PackedWino,
        epi: &EpiF32,
        y0: usize,
        y1: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        (self.wino_f32)(self.pw_f32, input, s, w, epi, y0, y1, scratch, out)
    }

    /// int8 dense conv with f32 output through `gemm` (a [`Kernels::pw_i8_f32`]), as
    /// [`Kernels::conv_f32`].
    #[allow(clippy::too_many_arguments)]
    pub fn conv_i8_f32(
        &self,
        gemm: PwI8F32Fn,
        input: &[i8],
        s: &ConvShape,
        w: &PackedI8,
        epi: &EpiI8,
        y0: usize,
        y1: usize,
        scratch: &mut [i8],
        out: &mut [f32],
    ) {
        let window = self.window_i8_f32;
        generic::conv_i8_with(gemm, window, input, s, w, epi, y0, y1, scratch, out)
    }

    /// int8 dense conv, as [`Kernels::conv_f32`]. `w` from [`pack_conv_i8`].
    #[allow(clippy::too_many_arguments)]
    pub fn conv_i8(
        &self,
        input: &[i8],
        s: &ConvShape,
        w: &PackedI8,
        epi: &EpiI8,
        y0: usize,
        y1: usize,
        scratch: &mut [i8],
        out: &mut [i8],
    ) {
        let window = self.window_i8;
        generic::conv_i8_with(self.pw_i8, window, input, s, w, epi, y0, y1, scratch, out)
    }
}

/// The process-wide table, chosen on first use from the CPU and `FACEGATE_KERNELS`.
pub fn kernels() -> &'static Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    K.get_or_init(|| Kernels::select(Mode::from_env()))
}
