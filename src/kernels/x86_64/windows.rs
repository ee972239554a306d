//! Reading the A operand of the x86 GEMM tiles: one walk over K for a few rows, the same for
//! a plain `[M×K]` matrix and for a conv's windows read in place ([`RowsPtr`]), so every
//! tile serves both its plain and its window entry point. The walks are `inline(always)` and
//! take the tile's inner step as a closure, so the whole K loop compiles into the tile with
//! the tile's target features.

use crate::kernels::RowsPtr;

impl RowsPtr<i8> {
    /// Walks K in groups of 4 bytes for rows `m..m+MR`: `f(g, a)` with `a[r]` the 4 bytes of
    /// group `g` of row `m+r` as one i32 (the `vpmaddwd`/`vpdpbusd` operand shape).
    ///
    /// # Safety
    /// Rows `m..m+MR` exist (validated by the entry point).
    #[inline(always)]
    pub(super) unsafe fn for_each_group<const MR: usize>(
        &self,
        m: usize,
        mut f: impl FnMut(usize, [i32; MR]),
    ) {
        self.for_each_group_at::<MR>(m, |g, at| {
            f(g, at.map(|p| (p as *const i32).read_unaligned()))
        });
    }

    /// [`RowsPtr::for_each_group`] handing out where each row's 4 bytes are (for kernels that
    /// load them with a broadcast): `at[r]` points at 4 readable bytes.
    ///
    /// # Safety
    /// Rows `m..m+MR` exist (validated by the entry point).
    #[inline(always)]
    pub(super) unsafe fn for_each_group_at<const MR: usize>(
        &self,
        m: usize,
        mut f: impl FnMut(usize, [*const i8; MR]),
    ) {
        let rows: [*const i8; MR] =
            std::array::from_fn(|r| self.ptr.add((m + r) * self.row_stride));
        let (seg_groups, tail) = (self.seg_len / 4, self.seg_len % 4);
        debug_assert!(
            tail == 0 || self.segs == 1,
            "only a plain matrix ends in a partial group"
        );
        let mut g = 0;
        for j in 0..self.segs {
            let off = j * self.seg_stride;
            for i in 0..seg_groups {
                f(g, std::array::from_fn(|r| rows[r].add(off + 4 * i)));
                g += 1;
            }
        }
        if tail > 0 {
            // The partial last group reads only the row's bytes, copied to a zero-padded
            // group: the packed weights are zero beyond K, so the padding's value does not
            // matter. (Assembled by hand: a variable-length copy would be a `memcpy` call per
            // row.)
            let last: [[i8; 4]; MR] = std::array::from_fn(|r| {
                let mut v = [0i8; 4];
                for (j, b) in v.iter_mut().enumerate().take(tail) {
                    *b = *rows[r].add(4 * g + j);
                }
                v
            });
            f(g, std::array::from_fn(|r| last[r].as_ptr()));
        }
    }
}

impl RowsPtr<f32> {
    /// Walks K for rows `m..m+MR`: `f(kk, a)` with `a[r]` element `kk` of row `m+r`.
    ///
    /// # Safety
    /// Rows `m..m+MR` exist (validated by the entry point).
    #[inline(always)]
    pub(super) unsafe fn for_each_k<const MR: usize>(
        &self,
        m: usize,
        mut f: impl FnMut(usize, [f32; MR]),
    ) {
        let rows: [*const f32; MR] =
            std::array::from_fn(|r| self.ptr.add((m + r) * self.row_stride));
        let mut kk = 0;
        for j in 0..self.segs {
            let off = j * self.seg_stride;
            for i in 0..self.seg_len {
                f(kk, std::array::from_fn(|r| *rows[r].add(off + i)));
                kk += 1;
            }
        }
    }
}
