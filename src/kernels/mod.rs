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
//!
//! Where things are: this file holds the table (the entries' signatures, [`Kernels`],
//! [`KernelNames`], [`Mode`], [`kernels`]) and nothing else. The data the kernels share is
//! one job a file: `epilogue.rs` (activations, epilogues), `pack.rs` (weight layouts and
//! packing), `shape.rs` (conv geometry, shared operand checks), `windows.rs` (the A operand
//! read in place). `entries.rs` declares the SIMD GEMMs' safe entry points. The kernels:
//! `generic/` (portable, the reference), `winograd.rs`, `x86_64/` and `aarch64/` (one file
//! per family under each), tested in `tests/`.

// Index loops over register arrays and 8-argument kernels are the natural shape here.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use std::sync::OnceLock;

// First: its macro serves the architecture modules below.
#[macro_use]
mod entries;
#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
mod epilogue;
pub(crate) mod generic;
mod pack;
mod shape;
#[cfg(test)]
mod tests;
mod windows;
pub(crate) mod winograd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

pub use epilogue::{sat_i8, Act, EpiF32, EpiI8};
pub use pack::{
    pack_conv_f16, pack_conv_f32, pack_conv_i8, pack_conv_i8_padded, pack_dw, pack_dw_i8, pack_pw,
    pack_pw_f16, pack_pw_f32, pack_pw_i8, unpack_pw, unpack_pw_i8, PackedDw, PackedDwF16,
    PackedDwF32, PackedDwI8, PackedF16, PackedF32, PackedI8, PackedPanels, DW_PAIR_PAD, NR,
};
pub(crate) use shape::check_add_lens;
pub use shape::ConvShape;
pub(crate) use windows::RowsPtr;
pub use windows::{WindowRows, WindowRowsI8};
pub use winograd::{
    pack_wino_f32, pack_wino_from_conv, pack_wino_from_i8, wino_scratch_len, wino_supports,
    PackedWino, TILE as WINO_TILE,
};

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
    /// int8 dense 3×3 stride-1 convs run as f32 Winograd F(4,3) on their dequantised
    /// weights: where the CPU has no int8 dot product (ARMv8.0 NEON), 36 f32 multiplies per
    /// 4×4 block of outputs cost fewer instructions than 144 int8 ones at 16 per 3
    /// instructions (see the engine's `Layer`s).
    pub wino_for_i8: bool,
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
            wino_for_i8: false,
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
