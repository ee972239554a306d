//! The geometry of a convolution ([`ConvShape`]: output size, interior region, scratch
//! sizes) and the operand checks the entry points of every ISA share
//! ([`ConvShape::check_io`], [`check_add_lens`]), written once so that no kernel's entry
//! can check differently before its `unsafe` block.

use super::PackedI8;

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
    /// Elements of the scratch buffer [`Kernels::conv_f32`](super::Kernels::conv_f32)/[`Kernels::conv_i8`](super::Kernels::conv_i8) need
    /// (one output row of im2col; room for the padded int8 layout of
    /// [`pack_conv_i8_padded`](super::pack_conv_i8_padded) too).
    pub fn im2col_len(&self) -> usize {
        self.ow() * self.kh * (self.kw * self.cin).next_multiple_of(4)
    }
    /// Elements of one kernel row in the im2col rows of int8 weights `w`: `kw*cin`, or that
    /// rounded up to whole groups of 4 for [`pack_conv_i8_padded`](super::pack_conv_i8_padded) weights.
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

/// The check every elementwise add entry (generic and SIMD) makes before touching memory:
/// both inputs and the output have one length.
pub(crate) fn check_add_lens(a: usize, b: usize, out: usize) {
    assert!(a == b && a == out, "add: lens {a} {b} {out}");
}
