//! x86-64 kernels. [`install`] puts them in the table after run-time feature detection, in
//! tiers: AVX2/FMA (every op; required for any of the others), AVX-512F/DQ (f32 GEMM, f32
//! depthwise, Winograd), AVX-512F/BW/VL (int8 depthwise, int8 add) and the int8 dot-product
//! GEMMs on `vpdpbusd` (AVX-512 VNNI, preferred, then AVX-VNNI), which
//! `FACEGATE_KERNELS=nodotprod` withholds. Every public kernel re-asserts its features before
//! its `unsafe` block.
//!
//! This file holds only the feature detection (`has_*`), [`install`] and the `*_variants()`
//! lists (fastest first: the table takes the first, the tests and benches check them all).
//! The kernels are in one file per family:
//! - `windows.rs`: the A operand's walk over K, plain rows or a conv's windows in place;
//! - `epilogue.rs`: bias, activation, requantisation and stores, shared by every kernel;
//! - `gemm_f32.rs`: f32 GEMM tiles, AVX2 6×16 and AVX-512 8×32;
//! - `gemm_i8_avx2.rs`: int8 GEMM with `vpmaddwd` on sign-extended operands (every AVX2 CPU);
//! - `gemm_i8_vnni.rs`: int8 GEMM with AVX-VNNI `vpdpbusd`, 6×16;
//! - `gemm_i8_avx512.rs`: int8 GEMM with AVX-512 VNNI, 8×32 and 16×16 tiles;
//! - `depthwise.rs` (the shared entry macro), `depthwise_f32.rs`, `depthwise_i8.rs`;
//! - `winograd.rs`: the portable Winograd F(4,3) compiled for AVX2 and AVX-512;
//! - `elementwise.rs`: int8 residual add, input quantisation.
//!
//! Why written so: intrinsics under `#[target_feature]` throughout, so LLVM allocates
//! registers and schedules, with one exception, the `asm!` load of `gemm_i8_avx512.rs` that
//! LLVM cannot be brought to emit. Tiles are const-generic functions instantiated for each
//! partial shape, so edge tiles cost no branches in the inner loop. Requantisation rounds
//! half to even (`cvtps_epi32`); generic rounds half away from zero (1 LSB on exact ties).

use super::{
    AddI8Fn, DwF32Fn, DwI8Fn, Kernels, PwF32Fn, PwI8AccFn, PwI8F32Fn, PwI8Fn, WindowF32Fn,
    WindowI8F32Fn, WindowI8Fn, WinoF32Fn,
};

// First: its macro serves the two depthwise files.
#[macro_use]
mod depthwise;
mod depthwise_f32;
mod depthwise_i8;
mod elementwise;
mod epilogue;
mod gemm_f32;
mod gemm_i8_avx2;
mod gemm_i8_avx512;
mod gemm_i8_vnni;
mod windows;
mod winograd;

use depthwise_f32::{avx2_dw_f32, avx512_dw_f32};
use depthwise_i8::{avx2_dw_i8, avx512_dw_i8};
use elementwise::{avx2_add_i8, avx2_quantize_i8, avx512_add_i8};
use gemm_f32::{
    avx2_pw_f32_6x16, avx2_window_f32_6x16, avx512_pw_f32_8x32, avx512_window_f32_8x32,
};
use gemm_i8_avx2::{
    avx2_pw_i8_6x8, avx2_pw_i8_acc_6x8, avx2_pw_i8_f32_6x8, avx2_window_i8_6x8,
    avx2_window_i8_f32_6x8,
};
use gemm_i8_avx512::{AVX512_I8, AVX512_I8_16X16, AVX512_I8_8X32};
use gemm_i8_vnni::{
    vnni_pw_i8_6x16, vnni_pw_i8_acc_6x16, vnni_pw_i8_f32_6x16, vnni_window_i8_6x16,
    vnni_window_i8_f32_6x16,
};
use winograd::{avx2_wino_f32, avx512_wino_f32};

fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// AVX-VNNI (`vpdpbusd` on 256-bit registers): Alder Lake, Sapphire Rapids, Zen 5 and later.
fn has_avx_vnni() -> bool {
    has_avx2_fma() && std::is_x86_feature_detected!("avxvnni")
}

/// AVX-512 with the 256-bit insert/extract forms (Skylake server, Ice Lake, Zen 4 and later).
fn has_avx512() -> bool {
    has_avx2_fma()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512dq")
}

/// AVX-512 with byte/word and 128/256-bit forms (Skylake server and later, Zen 4 and later).
fn has_avx512bw() -> bool {
    has_avx2_fma()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
}

/// ... and VNNI (Ice Lake server, Sapphire Rapids, Zen 4 and later).
fn has_avx512_vnni() -> bool {
    has_avx512bw() && std::is_x86_feature_detected!("avx512vnni")
}

/// Replace the generic entries this CPU can run faster; `dot`: also use the dot-product
/// (VNNI) instructions when the CPU has them.
pub(crate) fn install(k: &mut Kernels, dot: bool) {
    if !has_avx2_fma() {
        return;
    }
    AVX2_I8.install(k);
    k.names.pw_i8 = "avx2_pw_i8_6x8";
    if let Some(&(name, add)) = add_i8_variants().first() {
        (k.add_i8, k.names.add_i8) = (add, name);
    }
    k.quantize_i8 = avx2_quantize_i8;
    k.names.quantize_i8 = "avx2_quantize_i8";
    if let Some(&(name, pw, window)) = pw_f32_variants().first() {
        (k.pw_f32, k.window_f32, k.names.pw_f32) = (pw, Some(window), name);
    }
    if let Some(&(name, dw)) = dw_f32_variants().first() {
        k.dw_f32 = dw;
        k.names.dw_f32 = name;
    }
    if let Some(&(name, wino)) = wino_f32_variants().first() {
        k.wino_f32 = wino;
        k.names.wino_f32 = name;
    }
    if let Some(&(name, dw)) = dw_i8_variants().first() {
        k.dw_i8 = dw;
        k.names.dw_i8 = name;
    }
    if dot {
        if let Some(gemms) = dot_pw_i8().first() {
            gemms.install(k);
        }
    }
}

/// One int8 GEMM family: the same tiles with each epilogue (requantising, raw accumulators,
/// f32), over plain rows and over in-place conv windows.
#[derive(Clone, Copy)]
pub(crate) struct I8Gemms {
    pub name: &'static str,
    pub name_f32: &'static str,
    pub pw: PwI8Fn,
    pub acc: PwI8AccFn,
    pub pw_f32: PwI8F32Fn,
    pub window: WindowI8Fn,
    pub window_f32: WindowI8F32Fn,
}

impl I8Gemms {
    /// Makes this family the table's int8 GEMMs.
    pub(crate) fn install(&self, k: &mut Kernels) {
        (k.pw_i8, k.pw_i8_acc, k.names.pw_i8) = (self.pw, self.acc, self.name);
        (k.pw_i8_f32, k.names.pw_i8_f32) = (Some(self.pw_f32), self.name_f32);
        (k.window_i8, k.window_i8_f32) = (Some(self.window), Some(self.window_f32));
    }
}

/// `vpmaddwd` on sign-extended operands: every AVX2 CPU.
const AVX2_I8: I8Gemms = I8Gemms {
    name: "avx2_pw_i8_6x8",
    name_f32: "avx2_pw_i8_f32_6x8",
    pw: avx2_pw_i8_6x8,
    acc: avx2_pw_i8_acc_6x8,
    pw_f32: avx2_pw_i8_f32_6x8,
    window: avx2_window_i8_6x8,
    window_f32: avx2_window_i8_f32_6x8,
};

/// The f32 GEMMs this CPU can run (plain and in-place windows), fastest first: the table
/// takes the first, the tests check them all.
pub(crate) fn pw_f32_variants() -> Vec<(&'static str, PwF32Fn, WindowF32Fn)> {
    let mut v: Vec<(&'static str, PwF32Fn, WindowF32Fn)> = Vec::new();
    if has_avx512() {
        v.push((
            "avx512_pw_f32_8x32",
            avx512_pw_f32_8x32,
            avx512_window_f32_8x32,
        ));
    }
    if has_avx2_fma() {
        v.push(("avx2_pw_f32_6x16", avx2_pw_f32_6x16, avx2_window_f32_6x16));
    }
    v
}

/// The f32 depthwise kernels this CPU can run, fastest first.
pub(crate) fn dw_f32_variants() -> Vec<(&'static str, DwF32Fn)> {
    let mut v: Vec<(&'static str, DwF32Fn)> = Vec::new();
    if has_avx512() {
        v.push(("avx512_dw3x3_f32|avx2_dwkxk_f32", avx512_dw_f32));
    }
    if has_avx2_fma() {
        v.push(("avx2_dw3x3_f32|avx2_dwkxk_f32", avx2_dw_f32));
    }
    v
}

/// The Winograd convs this CPU can run, fastest first: the portable transforms compiled for
/// wider vectors (the GEMMs are the table's).
pub(crate) fn wino_f32_variants() -> Vec<(&'static str, WinoF32Fn)> {
    let mut v: Vec<(&'static str, WinoF32Fn)> = Vec::new();
    if has_avx512() {
        v.push(("avx512_wino_f32_4x3", avx512_wino_f32));
    }
    if has_avx2_fma() {
        v.push(("avx2_wino_f32_4x3", avx2_wino_f32));
    }
    v
}

/// The int8 residual adds this CPU can run, fastest first.
pub(crate) fn add_i8_variants() -> Vec<(&'static str, AddI8Fn)> {
    let mut v: Vec<(&'static str, AddI8Fn)> = Vec::new();
    if has_avx512bw() {
        v.push(("avx512_add_i8", avx512_add_i8));
    }
    if has_avx2_fma() {
        v.push(("avx2_add_i8", avx2_add_i8));
    }
    v
}

/// The int8 depthwise kernels this CPU can run, fastest first.
pub(crate) fn dw_i8_variants() -> Vec<(&'static str, DwI8Fn)> {
    let mut v: Vec<(&'static str, DwI8Fn)> = Vec::new();
    if has_avx512bw() {
        v.push(("avx512_dw3x3_i8|avx2_dwkxk_i8", avx512_dw_i8));
    }
    if has_avx2_fma() {
        v.push(("avx2_dw3x3_i8|avx2_dwkxk_i8", avx2_dw_i8));
    }
    v
}

/// The dot-product (VNNI) int8 GEMM families this CPU can run, fastest first: the table
/// takes the first, the tests check them all.
pub(crate) fn dot_pw_i8() -> Vec<I8Gemms> {
    let mut v = Vec::new();
    if has_avx512_vnni() {
        v.extend([AVX512_I8, AVX512_I8_8X32, AVX512_I8_16X16]);
    }
    if has_avx_vnni() {
        v.push(I8Gemms {
            name: "vnni_pw_i8_6x16",
            name_f32: "vnni_pw_i8_f32_6x16",
            pw: vnni_pw_i8_6x16,
            acc: vnni_pw_i8_acc_6x16,
            pw_f32: vnni_pw_i8_f32_6x16,
            window: vnni_window_i8_6x16,
            window_f32: vnni_window_i8_f32_6x16,
        });
    }
    v
}
