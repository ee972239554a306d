//! The A operand of a GEMM read in place: [`WindowRows`], a conv's im2col rows as a view
//! into its input (so interior pixels are never copied), and [`RowsPtr`], the raw form the
//! SIMD tiles walk, which also describes a plain `[M×K]` matrix, so one tile serves both.

/// The A operand of a GEMM as a view into a conv's input, so im2col never copies it: row `m`
/// is the receptive field of output pixel `m`, `segs` runs of `seg_len` elements (one kernel
/// row, `kw·cin` NHWC values, each), run `j` of row `m` starting at
/// `data[start + m·row_stride + j·seg_stride]`. For an output row of interior pixels:
/// `row_stride = stride·cin` and `seg_stride = W·cin`.
///
/// int8 kernels read runs as groups of 4 bytes, so for them `seg_len % 4 == 0`: a group never
/// straddles two runs and the weights keep the plain [`PackedI8`](super::PackedI8) layout of
/// K = `segs·seg_len`.
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
