//! Loads of the A operand's 4-byte groups (one group = 4 k of one row, zero-padded past K),
//! shared by the NEON ([`super::gemm_i8_neon`]) and dotprod ([`super::gemm_i8_dot`]) int8
//! tiles. The tiles take A through [`crate::kernels::RowsPtr`] (row pointers and kernel-row
//! runs), so one tile serves the plain GEMM and the window GEMM on a conv's windows read in
//! place. Intrinsics, `inline(always)`.

use core::arch::aarch64::*;

/// Four activation bytes of group `g` of a row (zero-padded past K).
#[inline(always)]
pub(super) unsafe fn load_a4(row: *const i8, g: usize, k: usize) -> i32 {
    if 4 * g + 4 <= k {
        (row.add(4 * g) as *const i32).read_unaligned()
    } else {
        let mut t = [0u8; 4];
        core::ptr::copy_nonoverlapping(row.add(4 * g) as *const u8, t.as_mut_ptr(), k - 4 * g);
        i32::from_ne_bytes(t)
    }
}

/// 4 activation bytes (one group) broadcast to all four 32-bit lanes.
#[inline(always)]
pub(super) unsafe fn dup_a4(row: *const i8, g: usize, k: usize) -> int8x16_t {
    vreinterpretq_s8_s32(vdupq_n_s32(load_a4(row, g, k)))
}
