//! Elementwise int8 kernels on NEON: the residual add (`out = sat(round(a·sa + b·sb))`) and
//! the input quantisation (`sat(round(x · inv_scale))`). Intrinsics; `fcvtas` rounds half
//! away from zero like `f32::round`, so both match the generic kernels exactly.

use core::arch::aarch64::*;

use super::epilogue::narrow8;

/// `out = sat(round(a*sa + b*sb))`, 8 lanes at a time (same rounding as generic).
pub(crate) fn neon_add_i8(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    crate::kernels::check_add_lens(a.len(), b.len(), out.len());
    // SAFETY: NEON architectural; indices < len by the loop bound.
    unsafe { add_i8_impl(a, sa, b, sb, out) }
}

#[target_feature(enable = "neon")]
unsafe fn add_i8_impl(a: &[i8], sa: f32, b: &[i8], sb: f32, out: &mut [i8]) {
    let n = a.len();
    let mut i = 0;
    while i + 8 <= n {
        let x = vmovl_s8(vld1_s8(a.as_ptr().add(i)));
        let y = vmovl_s8(vld1_s8(b.as_ptr().add(i)));
        let f = |xs: int16x4_t, ys: int16x4_t| {
            let r = vaddq_f32(
                vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(xs)), sa),
                vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(ys)), sb),
            );
            vcvtaq_s32_f32(r)
        };
        let q0 = f(vget_low_s16(x), vget_low_s16(y));
        let q1 = f(vget_high_s16(x), vget_high_s16(y));
        vst1_s8(out.as_mut_ptr().add(i), narrow8(q0, q1));
        i += 8;
    }
    for j in i..n {
        out[j] = crate::kernels::sat_i8(a[j] as f32 * sa + b[j] as f32 * sb);
    }
}

/// `out = sat(round(x · inv_scale))`, 16 lanes at a time: `fcvtas` rounds half away from zero
/// like `f32::round` and saturates to i32, the narrows saturate, and the clamp makes -128
/// -127 (a NaN becomes 0, as `as i8` does in the generic kernel).
pub(crate) fn neon_quantize_i8(x: &[f32], inv_scale: f32, out: &mut [i8]) {
    assert_eq!(
        x.len(),
        out.len(),
        "quantize: lens {} {}",
        x.len(),
        out.len()
    );
    // SAFETY: NEON architectural; indices < len by the loop bounds.
    unsafe { quantize_i8_impl(x, inv_scale, out) }
}

#[target_feature(enable = "neon")]
unsafe fn quantize_i8_impl(x: &[f32], inv_scale: f32, out: &mut [i8]) {
    let n = x.len();
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    let q = |i: usize| vcvtaq_s32_f32(vmulq_n_f32(vld1q_f32(xp.add(i)), inv_scale));
    let mut i = 0;
    while i + 16 <= n {
        let lo = narrow8(q(i), q(i + 4));
        let hi = narrow8(q(i + 8), q(i + 12));
        vst1q_s8(op.add(i), vcombine_s8(lo, hi));
        i += 16;
    }
    while i + 8 <= n {
        vst1_s8(op.add(i), narrow8(q(i), q(i + 4)));
        i += 8;
    }
    for j in i..n {
        out[j] = crate::kernels::sat_i8(x[j] * inv_scale);
    }
}
