//! aarch64 kernels: NEON (ARMv8.0 baseline — Pi 4, Jetson Nano), always installed, and the
//! ARMv8.2 extensions selected at run time when `allow_ext`: the dot product (`sdot`: Pi 5,
//! Orin) by `is_aarch64_feature_detected!("dotprod")`, f16 arithmetic (`fp16.rs`). The binary
//! is never built with +dotprod or +fp16: those instructions live only in
//! `#[target_feature]` functions, as inline asm where the intrinsic is not stable Rust.
//!
//! This file holds only the feature detection (`has_*`) and [`install`]. The kernels are in
//! one file per family:
//! - `epilogue.rs`: bias, activation, requantisation (`fcvtas` + saturating narrows, the
//!   generic kernel's results exactly) and stores, shared by every kernel;
//! - `windows.rs`: the int8 tiles' loads of A's 4-byte groups;
//! - `gemm_f32.rs`: f32 GEMM, 8×8, `fmla` by lane;
//! - `gemm_i8_neon.rs`: int8 GEMM on ARMv8.0, 4×8, `smull` + `smlal` + `sadalp` in asm;
//! - `gemm_i8_narrow.rs`: the RGB stems' 3×3 convs (12-byte kernel rows, 16 channels), tap
//!   by tap with `smlal` by element, called from the ARMv8.0 int8 GEMM;
//! - `gemm_i8_dot.rs`: int8 GEMM on the dotprod extension, 8×8, `sdot` by lane (asm);
//! - `depthwise_f32.rs`, `depthwise_i8.rs` (the int8 3×3 NEON kernel: `dw3_i8`), with the
//!   window type they share in `depthwise.rs`: 3×3 rows with the weights (and int8's
//!   epilogue) held in registers, any k×k on clipped windows;
//! - `winograd.rs`: the portable Winograd F(4,3) in blocks of the f32 GEMM's row tile;
//! - `elementwise.rs`: int8 residual add, input quantisation;
//! - `fp16.rs`: the f16 GEMM and 3×3 depthwise (`FACEGATE_KERNELS` mode auto on CPUs with
//!   f16 arithmetic).
//!
//! Why written so: intrinsics under `#[target_feature(enable = "neon")]` (architectural, so
//! always true) where LLVM does well; `asm!` where it does not (the int8 NEON products, whose
//! `sadalp` LLVM splits and whose loads it hoists into spills) or cannot (`sdot`, f16
//! arithmetic: not stable as intrinsics). Dense convs read interior windows in place: the
//! tiles take A through [`super::RowsPtr`], so one tile serves the plain GEMM and the window
//! GEMM (`neon_window_*`, `neon_dot_window_*`); im2col remains only at the borders. The int8
//! GEMMs also have a fused dequantising epilogue (`*_pw_i8_f32_*`, f32 out) for the network's
//! outputs and the f32 readers of mixed-precision models.

use super::Kernels;

mod depthwise;
mod depthwise_f32;
mod depthwise_i8;
mod elementwise;
mod epilogue;
pub(crate) mod fp16;
mod gemm_f32;
mod gemm_i8_dot;
mod gemm_i8_narrow;
mod gemm_i8_neon;
mod windows;
mod winograd;

use depthwise_f32::neon_dw_f32;
use depthwise_i8::neon_dw_i8;
use elementwise::{neon_add_i8, neon_quantize_i8};
use gemm_f32::{neon_pw_f32_8x8, neon_window_f32_8x8};
use gemm_i8_dot::{
    neon_dot_pw_i8_8x8, neon_dot_pw_i8_acc_8x8, neon_dot_pw_i8_f32_8x8, neon_dot_window_i8_8x8,
    neon_dot_window_i8_f32_8x8,
};
use gemm_i8_neon::{
    neon_pw_i8_4x8, neon_pw_i8_acc_4x8, neon_pw_i8_f32_4x8, neon_window_i8_4x8,
    neon_window_i8_f32_4x8,
};
use winograd::neon_wino_f32;

fn has_dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// NEON is architectural on aarch64: always installed. The ARMv8.2 extensions (dotprod,
/// f16 arithmetic) only if `allow_ext` (mode auto) and the CPU has them.
pub(crate) fn install(k: &mut Kernels, allow_ext: bool) {
    k.pw_f32 = neon_pw_f32_8x8;
    k.pw_i8 = neon_pw_i8_4x8;
    k.pw_i8_acc = neon_pw_i8_acc_4x8;
    k.dw_f32 = neon_dw_f32;
    k.dw_i8 = neon_dw_i8;
    k.add_i8 = neon_add_i8;
    k.names.pw_f32 = "neon_pw_f32_8x8";
    k.names.pw_i8 = "neon_pw_i8_4x8";
    k.names.dw_f32 = "neon_dw3x3_f32|neon_dwkxk_f32";
    k.names.dw_i8 = "neon_dw3x3_i8|neon_dwkxk_i8";
    k.names.add_i8 = "neon_add_i8";
    k.quantize_i8 = neon_quantize_i8;
    k.names.quantize_i8 = "neon_quantize_i8";
    k.pw_i8_f32 = Some(neon_pw_i8_f32_4x8);
    k.names.pw_i8_f32 = "neon_pw_i8_f32_4x8";
    k.window_f32 = Some(neon_window_f32_8x8);
    k.window_i8 = Some(neon_window_i8_4x8);
    k.window_i8_f32 = Some(neon_window_i8_f32_4x8);
    k.wino_f32 = neon_wino_f32;
    k.names.wino_f32 = "neon_wino_f32_4x3";
    k.wino_for_i8 = true;
    if allow_ext && fp16::has_fp16() {
        k.f16 = Some(fp16::KERNELS);
    }
    if allow_ext && has_dotprod() {
        k.pw_i8 = neon_dot_pw_i8_8x8;
        k.pw_i8_acc = neon_dot_pw_i8_acc_8x8;
        k.names.pw_i8 = "neon_dot_pw_i8_8x8";
        k.pw_i8_f32 = Some(neon_dot_pw_i8_f32_8x8);
        k.names.pw_i8_f32 = "neon_dot_pw_i8_f32_8x8";
        k.window_i8 = Some(neon_dot_window_i8_8x8);
        k.window_i8_f32 = Some(neon_dot_window_i8_f32_8x8);
        // `sdot`: 16 int8 multiplies per instruction, as many as Winograd saves
        k.wino_for_i8 = false;
    }
}

/// The GEMM entries' feature check: NEON is architectural on aarch64.
fn has_neon() -> bool {
    true
}
