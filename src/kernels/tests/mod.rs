//! Tests of the kernels: the generic ones against a naive NCHW reference written plainly
//! here (an independent definition of convolution), and every SIMD table against the
//! generic one on odd shapes and tails. i32 accumulators must match exactly, requantised
//! int8 within 1 LSB, f32 within `|a-b| <= 1e-5 * (1+|b|) * sqrt(K)`.
//!
//! The shared helpers are here: the PRNG, the naive references, the conv cases and how to
//! run them through a table, the tolerances, and [`simd_tables`] (every variant the CPU can
//! run). The tests are in one file per family: `reference.rs` (generic against naive),
//! `conv.rs`, `gemm.rs`, `elementwise.rs`, `pack.rs`, `fp16.rs`, `winograd.rs` and
//! `dispatch.rs`.

use super::pack::oihw_to_ohwi;
use super::*;

mod conv;
mod dispatch;
mod elementwise;
mod fp16;
mod gemm;
mod pack;
mod reference;
mod winograd;

/// Small deterministic PRNG (xorshift64*), no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn f32(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub(crate) fn vf32(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    pub(crate) fn vi8(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| (((self.next() >> 32) % 255) as i32 - 127) as i8)
            .collect()
    }
    pub(crate) fn vi32(&mut self, n: usize, r: i32) -> Vec<i32> {
        (0..n)
            .map(|_| ((self.next() >> 33) as i64 % (2 * r as i64 + 1)) as i32 - r)
            .collect()
    }
}

#[derive(Clone, Copy, Debug)]
enum ActKind {
    None,
    Relu,
    Relu6,
    PRelu,
}

const ACTS: [ActKind; 4] = [ActKind::None, ActKind::Relu, ActKind::Relu6, ActKind::PRelu];

fn make_act(kind: ActKind, six: f32, alpha: &[f32]) -> Act<'_> {
    match kind {
        ActKind::None => Act::None,
        ActKind::Relu => Act::Relu,
        ActKind::Relu6 => Act::Relu6(six),
        ActKind::PRelu => Act::PRelu(alpha),
    }
}

/// Plain activation, written independently of `Act::apply`.
fn naive_act(kind: ActKind, x: f32, six: f32, alpha: f32) -> f32 {
    match kind {
        ActKind::None => x,
        ActKind::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        ActKind::Relu6 => {
            if x < 0.0 {
                0.0
            } else if x > six {
                six
            } else {
                x
            }
        }
        ActKind::PRelu => {
            if x >= 0.0 {
                x
            } else {
                alpha * x
            }
        }
    }
}

fn naive_requant(acc: i32, bias: i32, mult: f32, kind: ActKind, six: f32, alpha: f32) -> i8 {
    let r = naive_act(kind, (acc + bias) as f32 * mult, six, alpha).round();
    if r > 127.0 {
        127
    } else if r < -127.0 {
        -127
    } else {
        r as i8
    }
}

fn assert_close_f32(got: &[f32], want: &[f32], k: usize, what: &str) {
    assert_close_f32_tol(got, want, 1e-5 * (k as f32).sqrt(), what)
}

/// `|a-b| <= tol · (1+|b|)` element-wise.
fn assert_close_f32_tol(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: len");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}: [{i}] got {a} want {b} (tol {tol})"
        );
    }
}

fn assert_within_1(got: &[i8], want: &[i8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: len");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a as i32 - b as i32).abs() <= 1,
            "{what}: [{i}] got {a} want {b}"
        );
    }
}

/// Naive grouped convolution on NCHW data with OIHW weights: 7 nested loops, i64/f64-free
/// but plainly indexed. Returns NCHW output as f64 sums (f32 inputs) — used for both types.
#[allow(clippy::too_many_arguments)]
fn naive_conv_nchw(
    x: &[f64],
    w: &[f64],
    h: usize,
    wd: usize,
    cin: usize,
    cout: usize,
    k: (usize, usize),
    stride: usize,
    pad: usize,
    groups: usize,
) -> (Vec<f64>, usize, usize) {
    let (kh, kw) = k;
    let oh = (h + 2 * pad - kh) / stride + 1;
    let ow = (wd + 2 * pad - kw) / stride + 1;
    let cig = cin / groups;
    let cog = cout / groups;
    let mut out = vec![0.0f64; cout * oh * ow];
    for oc in 0..cout {
        let g = oc / cog;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0.0f64;
                for icg in 0..cig {
                    let ic = g * cig + icg;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as i64 - pad as i64;
                            let ix = (ox * stride + kx) as i64 - pad as i64;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                s += x[(ic * h + iy as usize) * wd + ix as usize]
                                    * w[((oc * cig + icg) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                out[(oc * oh + oy) * ow + ox] = s;
            }
        }
    }
    (out, oh, ow)
}

fn nhwc_to_nchw<T: Copy + Into<f64>>(x: &[T], h: usize, w: usize, c: usize) -> Vec<f64> {
    let mut o = vec![0.0; x.len()];
    for y in 0..h {
        for xx in 0..w {
            for cc in 0..c {
                o[(cc * h + y) * w + xx] = x[(y * w + xx) * c + cc].into();
            }
        }
    }
    o
}

struct ConvCase {
    s: ConvShape,
    dw: bool,
}

fn conv_cases() -> Vec<ConvCase> {
    let mut v = Vec::new();
    // dense (incl. 1x1 = pointwise and 3x3 stems)
    for &(h, w) in &[(1usize, 1usize), (3, 7), (7, 3), (15, 5), (5, 33)] {
        // (4, 9) and (12, 24): kernel rows of whole 4-byte groups, which int8 kernels may
        // read in place (`Kernels::window_i8`) instead of through im2col; (3, 16) and
        // (4, 16): the 12-byte kernel rows into 16 channels of the RGB stems (padded from 9
        // for 3 channels), which NEON computes tap by tap
        for &(cin, cout) in &[
            (1usize, 1usize),
            (3, 5),
            (5, 17),
            (17, 3),
            (33, 33),
            (4, 9),
            (12, 24),
            (3, 16),
            (4, 16),
        ] {
            for &(k, stride, pad) in &[(1usize, 1usize, 0usize), (3, 1, 1), (3, 2, 1)] {
                if h + 2 * pad < k || w + 2 * pad < k {
                    continue;
                }
                v.push(ConvCase {
                    s: ConvShape {
                        h,
                        w,
                        cin,
                        cout,
                        kh: k,
                        kw: k,
                        stride,
                        pad,
                    },
                    dw: false,
                });
            }
        }
    }
    v.push(ConvCase {
        s: ConvShape {
            h: 4,
            w: 4,
            cin: 130,
            cout: 130,
            kh: 1,
            kw: 1,
            stride: 1,
            pad: 0,
        },
        dw: false,
    });
    // depthwise
    // heights 1 and 2: the top and bottom border rows coincide or touch; c = 8 and 12: one
    // 8-channel block, two overlapping ones (NEON 3×3); c = 47: whole
    // 16- and 8-channel registers and a 7-channel tail; strides above 2 and pads above 1
    // take the 3×3 kernels' per-pixel paths; 16, 40 and 48 channels: the flat int8 kernel's
    // (`dw3_i8_flat`) fixed, periodic and plain epilogues; 64: whole 32-channel groups
    // (`dw3_i8_row32`)
    for &(h, w) in &[
        (1usize, 1usize),
        (3, 7),
        (7, 3),
        (15, 15),
        (33, 5),
        (6, 16),
        (1, 33),
        (2, 15),
    ] {
        for &c in &[1usize, 3, 5, 8, 12, 16, 17, 33, 40, 47, 48, 64, 130] {
            for &(k, stride, pad) in &[
                (3usize, 1usize, 1usize),
                (3, 2, 1),
                (3, 1, 0),
                (3, 3, 1),
                (3, 1, 2),
                (5, 2, 2),
            ] {
                if h + 2 * pad < k || w + 2 * pad < k {
                    continue;
                }
                v.push(ConvCase {
                    s: ConvShape::dw(h, w, c, k, stride, pad),
                    dw: true,
                });
            }
        }
    }
    for &c in &[1usize, 17, 130] {
        v.push(ConvCase {
            s: ConvShape::dw(7, 7, c, 7, 1, 0),
            dw: true,
        }); // GDC head
    }
    v
}

/// The float kernels of one table for weights of type `W`: depthwise, the GEMM, and the GEMM
/// on in-place windows (dense convs go through `generic::conv_f32_with` over the last two,
/// as `Kernels::conv_f32` does).
struct FloatKernels<W> {
    dw: DwPanelsFn<W>,
    pw: PwPanelsFn<W>,
    window: Option<WindowPanelsFn<W>>,
}

/// Runs a conv case through `k`: pointwise via the GEMM when 1x1/s1/p0, dense via windows +
/// im2col, depthwise via `dw`; output rows split in two calls to exercise ranges.
fn run_float<W: Copy + Default>(
    k: &FloatKernels<W>,
    c: &ConvCase,
    x: &[f32],
    w_oihw: &[W],
    bias: &[f32],
    act: Act,
) -> Vec<f32> {
    let s = c.s;
    let (oh, ow) = (s.oh(), s.ow());
    let mut out = vec![0.0f32; oh * ow * s.cout];
    let epi = EpiF32 { bias, act };
    let split = oh / 2;
    if c.dw {
        let pk = pack_dw(w_oihw, s.cin, s.kh);
        let (o1, o2) = out.split_at_mut(split * ow * s.cout);
        (k.dw)(x, &s, &pk, &epi, 0, split, o1);
        (k.dw)(x, &s, &pk, &epi, split, oh, o2);
    } else if s.kh == 1 && s.stride == 1 && s.pad == 0 {
        let pk = pack_pw(w_oihw, s.cout, s.cin);
        let m = s.h * s.w;
        let ms = m / 3;
        let (o1, o2) = out.split_at_mut(ms * s.cout);
        (k.pw)(x, &pk, &epi, 0, ms, o1);
        (k.pw)(x, &pk, &epi, ms, m, o2);
    } else {
        let pk = pack_pw(
            &oihw_to_ohwi(w_oihw, s.cout, s.cin, s.kh, s.kw),
            s.cout,
            s.kh * s.kw * s.cin,
        );
        let mut scratch = vec![0.0f32; s.im2col_len() + 3];
        let (o1, o2) = out.split_at_mut(split * ow * s.cout);
        for (y0, y1, o) in [(0, split, o1), (split, oh, o2)] {
            generic::conv_f32_with(k.pw, k.window, x, &s, &pk, &epi, y0, y1, &mut scratch, o);
        }
    }
    out
}

/// [`run_float`] through the f32 kernels of table `kt`.
fn run_f32(
    kt: &Kernels,
    c: &ConvCase,
    x: &[f32],
    w_oihw: &[f32],
    bias: &[f32],
    act: Act,
) -> Vec<f32> {
    let k = FloatKernels {
        dw: kt.dw_f32,
        pw: kt.pw_f32,
        window: kt.window_f32,
    };
    run_float(&k, c, x, w_oihw, bias, act)
}

fn run_i8(kt: &Kernels, c: &ConvCase, x: &[i8], w_oihw: &[i8], epi: &EpiI8) -> Vec<i8> {
    let s = c.s;
    let (oh, ow) = (s.oh(), s.ow());
    let mut out = vec![0i8; oh * ow * s.cout];
    let split = oh / 2;
    if c.dw {
        let pk = pack_dw_i8(w_oihw, s.cin, s.kh);
        let (o1, o2) = out.split_at_mut(split * ow * s.cout);
        (kt.dw_i8)(x, &s, &pk, epi, 0, split, o1);
        (kt.dw_i8)(x, &s, &pk, epi, split, oh, o2);
    } else if s.kh == 1 && s.stride == 1 && s.pad == 0 {
        let pk = pack_pw_i8(w_oihw, s.cout, s.cin);
        let m = s.h * s.w;
        let ms = m / 3;
        let (o1, o2) = out.split_at_mut(ms * s.cout);
        (kt.pw_i8)(x, &pk, epi, 0, ms, o1);
        (kt.pw_i8)(x, &pk, epi, ms, m, o2);
    } else {
        let pk = pack_conv_i8_for(kt, w_oihw, &s);
        let mut scratch = vec![0i8; s.im2col_len()];
        let (o1, o2) = out.split_at_mut(split * ow * s.cout);
        kt.conv_i8(x, &s, &pk, epi, 0, split, &mut scratch, o1);
        kt.conv_i8(x, &s, &pk, epi, split, oh, &mut scratch, o2);
    }
    out
}

/// Dense int8 weights in the layout the engine packs for table `kt` (kernel rows padded to
/// whole groups where the table reads windows in place).
fn pack_conv_i8_for(kt: &Kernels, w: &[i8], s: &ConvShape) -> PackedI8 {
    match kt.window_i8 {
        Some(_) => pack_conv_i8_padded(w, s.cout, s.cin, s.kh, s.kw),
        None => pack_conv_i8(w, s.cout, s.cin, s.kh, s.kw),
    }
}

fn weights_len(c: &ConvCase) -> (usize, usize) {
    let s = c.s;
    let cig = if c.dw { 1 } else { s.cin };
    (s.cout * cig * s.kh * s.kw, cig * s.kh * s.kw)
}

/// Multipliers that spread outputs over the int8 range without saturating everything.
fn mults(rng: &mut Rng, n: usize, kdim: usize) -> Vec<f32> {
    let typical = 127.0 * 127.0 / 3.0 * (kdim as f32).sqrt();
    (0..n)
        .map(|_| (1.0 + 0.5 * rng.f32()) * 60.0 / typical)
        .collect()
}

/// The SIMD tables this CPU can run, each to be checked against the generic one.
fn simd_tables() -> Vec<Kernels> {
    let mut v = Vec::new();
    let auto = Kernels::select(Mode::Auto);
    let nodot = Kernels::select(Mode::NoDotprod);
    if nodot.names.pw_i8 != Kernels::generic().names.pw_i8 {
        // every f32 GEMM the CPU can run, not only the one the table picks
        #[cfg(target_arch = "x86_64")]
        {
            for (name, pw, window) in x86_64::pw_f32_variants() {
                if name != nodot.names.pw_f32 {
                    let mut t = nodot;
                    (t.pw_f32, t.window_f32, t.names.pw_f32) = (pw, Some(window), name);
                    v.push(t);
                }
            }
            for (name, dw) in x86_64::dw_f32_variants() {
                if name != nodot.names.dw_f32 {
                    let mut t = nodot;
                    (t.dw_f32, t.names.dw_f32) = (dw, name);
                    v.push(t);
                }
            }
            for (name, dw) in x86_64::dw_i8_variants() {
                if name != nodot.names.dw_i8 {
                    let mut t = nodot;
                    (t.dw_i8, t.names.dw_i8) = (dw, name);
                    v.push(t);
                }
            }
            for (name, add) in x86_64::add_i8_variants() {
                if name != nodot.names.add_i8 {
                    let mut t = nodot;
                    (t.add_i8, t.names.add_i8) = (add, name);
                    v.push(t);
                }
            }
        }
        v.push(nodot);
    }
    if auto.names.pw_i8 != nodot.names.pw_i8 {
        // every dot-product GEMM the CPU can run, not only the one `auto` picks
        #[cfg(target_arch = "x86_64")]
        for gemms in x86_64::dot_pw_i8() {
            if gemms.name != auto.names.pw_i8 {
                let mut t = auto;
                gemms.install(&mut t);
                v.push(t);
            }
        }
        v.push(auto);
    } else if cfg!(target_arch = "aarch64") {
        eprintln!("SKIPPED: dotprod kernels (CPU lacks the dot-product extension); NEON tested");
    }
    if v.is_empty() {
        eprintln!(
            "SKIPPED: no SIMD kernels for this CPU (needs AVX2+FMA on x86_64, NEON on aarch64)"
        );
    }
    v
}

/// Runs every case with random int8 input, weights and epilogue, each activation, through `kt`
/// and the generic table `g`, and asserts outputs within 1 LSB; returns the cases run.
fn check_i8_cases(g: &Kernels, kt: &Kernels, cases: Vec<ConvCase>, rng: &mut Rng) -> usize {
    let mut n = 0;
    for c in cases {
        let s = c.s;
        let (wl, kdim) = weights_len(&c);
        let x = rng.vi8(s.h * s.w * s.cin);
        let w = rng.vi8(wl);
        let bias = rng.vi32(s.cout, 3000);
        let mult = mults(rng, s.cout, kdim);
        let alpha: Vec<f32> = rng.vf32(s.cout).iter().map(|a| a.abs() * 0.5).collect();
        for kind in ACTS {
            let epi = EpiI8 {
                bias: &bias,
                mult: &mult,
                act: make_act(kind, 40.0, &alpha),
            };
            let want = run_i8(g, &c, &x, &w, &epi);
            let got = run_i8(kt, &c, &x, &w, &epi);
            assert_within_1(
                &got,
                &want,
                &format!("{} {:?} dw={} {kind:?}", kt.describe(), s, c.dw),
            );
            n += 1;
        }
    }
    n
}

fn to_f16(x: &[f32]) -> Vec<half::f16> {
    x.iter().map(|&v| half::f16::from_f32(v)).collect()
}

fn widen(x: &[half::f16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}
