//! Tests of the kernels: the generic ones against a naive NCHW reference written plainly
//! here (an independent definition of convolution), and every SIMD table against the
//! generic one on odd shapes and tails. i32 accumulators must match exactly, requantised
//! int8 within 1 LSB, f32 within `|a-b| <= 1e-5 * (1+|b|) * sqrt(K)`.

use super::*;

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

#[test]
fn generic_f32_matches_naive_nchw() {
    let g = Kernels::generic();
    let mut rng = Rng::new(1);
    let mut n = 0;
    for c in conv_cases() {
        let s = c.s;
        let (wl, kdim) = weights_len(&c);
        let x = rng.vf32(s.h * s.w * s.cin);
        let w = rng.vf32(wl);
        let bias = rng.vf32(s.cout);
        let alpha: Vec<f32> = rng.vf32(s.cout).iter().map(|a| a.abs() * 0.5).collect();
        let six = 0.3;
        let (r, oh, ow) = naive_conv_nchw(
            &nhwc_to_nchw(&x, s.h, s.w, s.cin),
            &w.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            s.h,
            s.w,
            s.cin,
            s.cout,
            (s.kh, s.kw),
            s.stride,
            s.pad,
            if c.dw { s.cin } else { 1 },
        );
        for kind in ACTS {
            let got = run_f32(&g, &c, &x, &w, &bias, make_act(kind, six, &alpha));
            let mut want = vec![0.0f32; got.len()];
            for oc in 0..s.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        want[(oy * ow + ox) * s.cout + oc] = naive_act(
                            kind,
                            (r[(oc * oh + oy) * ow + ox] + bias[oc] as f64) as f32,
                            six,
                            alpha[oc],
                        );
                    }
                }
            }
            assert_close_f32(
                &got,
                &want,
                kdim,
                &format!("generic f32 {:?} dw={} {kind:?}", s, c.dw),
            );
            n += 1;
        }
    }
    eprintln!("generic f32 vs naive: {n} cases");
}

/// Multipliers that spread outputs over the int8 range without saturating everything.
fn mults(rng: &mut Rng, n: usize, kdim: usize) -> Vec<f32> {
    let typical = 127.0 * 127.0 / 3.0 * (kdim as f32).sqrt();
    (0..n)
        .map(|_| (1.0 + 0.5 * rng.f32()) * 60.0 / typical)
        .collect()
}

#[test]
fn generic_i8_matches_naive_nchw() {
    let g = Kernels::generic();
    let mut rng = Rng::new(2);
    let mut n = 0;
    for c in conv_cases() {
        let s = c.s;
        let (wl, kdim) = weights_len(&c);
        let x = rng.vi8(s.h * s.w * s.cin);
        let w = rng.vi8(wl);
        let bias = rng.vi32(s.cout, 3000);
        let mult = mults(&mut rng, s.cout, kdim);
        let alpha: Vec<f32> = rng.vf32(s.cout).iter().map(|a| a.abs() * 0.5).collect();
        let six = 40.0;
        let (r, oh, ow) = naive_conv_nchw(
            &nhwc_to_nchw(&x, s.h, s.w, s.cin),
            &w.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            s.h,
            s.w,
            s.cin,
            s.cout,
            (s.kh, s.kw),
            s.stride,
            s.pad,
            if c.dw { s.cin } else { 1 },
        );
        for kind in ACTS {
            let epi = EpiI8 {
                bias: &bias,
                mult: &mult,
                act: make_act(kind, six, &alpha),
            };
            let got = run_i8(&g, &c, &x, &w, &epi);
            let mut want = vec![0i8; got.len()];
            for oc in 0..s.cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let acc = r[(oc * oh + oy) * ow + ox] as i32;
                        want[(oy * ow + ox) * s.cout + oc] =
                            naive_requant(acc, bias[oc], mult[oc], kind, six, alpha[oc]);
                    }
                }
            }
            assert_eq!(got, want, "generic i8 {:?} dw={} {kind:?}", s, c.dw);
            if !c.dw && s.kh > 1 {
                // the padded layout (kernel rows in whole groups of 4) gives the same result
                let pk = pack_conv_i8_padded(&w, s.cout, s.cin, s.kh, s.kw);
                let mut scratch = vec![0i8; s.im2col_len()];
                let mut padded = vec![0i8; want.len()];
                g.conv_i8(&x, &s, &pk, &epi, 0, oh, &mut scratch, &mut padded);
                assert_eq!(padded, want, "generic i8 padded {s:?} {kind:?}");
            }
            n += 1;
        }
    }
    eprintln!("generic i8 vs naive: {n} cases");
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

#[test]
fn simd_f32_matches_generic() {
    let g = Kernels::generic();
    for kt in simd_tables() {
        let mut rng = Rng::new(3);
        let mut n = 0;
        for c in conv_cases() {
            let s = c.s;
            let (wl, kdim) = weights_len(&c);
            let x = rng.vf32(s.h * s.w * s.cin);
            let w = rng.vf32(wl);
            let bias = rng.vf32(s.cout);
            let alpha: Vec<f32> = rng.vf32(s.cout).iter().map(|a| a.abs() * 0.5).collect();
            for kind in ACTS {
                let act = make_act(kind, 0.3, &alpha);
                let want = run_f32(&g, &c, &x, &w, &bias, act);
                let got = run_f32(&kt, &c, &x, &w, &bias, act);
                assert_close_f32(
                    &got,
                    &want,
                    kdim,
                    &format!("{} {:?} dw={} {kind:?}", kt.describe(), s, c.dw),
                );
                n += 1;
            }
        }
        eprintln!("simd f32 vs generic [{}]: {n} cases", kt.describe());
    }
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

#[test]
fn simd_i8_matches_generic() {
    let g = Kernels::generic();
    for kt in simd_tables() {
        let n = check_i8_cases(&g, &kt, conv_cases(), &mut Rng::new(4));
        eprintln!("simd i8 vs generic [{}]: {n} cases", kt.describe());
    }
}

#[test]
fn simd_pw_i8_accumulators_exact() {
    let g = Kernels::generic();
    for kt in simd_tables() {
        let mut rng = Rng::new(5);
        let mut n = 0;
        for &m in &[1usize, 3, 7, 15, 33, 64] {
            for &k in &[1usize, 3, 4, 5, 17, 33, 130] {
                for &nn in &[1usize, 3, 5, 8, 17, 33, 130] {
                    // include the extremes of the int8 domain, ±127 (symmetric scheme: -128
                    // never occurs, see the module docs), to prove no saturation: NEON sums
                    // two products in i16 (2·127² < 32767).
                    let mut a = rng.vi8(m * k);
                    let mut w = rng.vi8(nn * k);
                    if n % 3 == 0 {
                        a.iter_mut().for_each(|v| *v = -127);
                        w.iter_mut()
                            .enumerate()
                            .for_each(|(i, v)| *v = if i % 2 == 0 { -127 } else { 127 });
                    }
                    let pk = pack_pw_i8(&w, nn, k);
                    let mut want = vec![0i32; m * nn];
                    let mut got = vec![0i32; m * nn];
                    (g.pw_i8_acc)(&a, &pk, 0, m, &mut want);
                    let ms = m / 2;
                    let (g1, g2) = got.split_at_mut(ms * nn);
                    (kt.pw_i8_acc)(&a, &pk, 0, ms, g1);
                    (kt.pw_i8_acc)(&a, &pk, ms, m, g2);
                    assert_eq!(got, want, "{} m={m} k={k} n={nn}", kt.names.pw_i8);
                    n += 1;
                }
            }
        }
        eprintln!(
            "simd pw_i8 accumulators exact [{}]: {n} cases",
            kt.names.pw_i8
        );
    }
}

#[test]
fn simd_elementwise_matches_generic() {
    let g = Kernels::generic();
    let mut tables = simd_tables();
    tables.push(Kernels::generic()); // also run the generic ones against the plain definitions
    for kt in tables {
        let mut rng = Rng::new(6);
        for &(h, w) in &[(1usize, 1usize), (3, 7), (7, 3), (15, 15), (2, 33), (6, 4)] {
            for &c in &[1usize, 3, 5, 17, 33, 130] {
                let len = h * w * c;
                let a = rng.vf32(len);
                let b = rng.vf32(len);
                let mut o1 = vec![0.0; len];
                let mut o2 = vec![0.0; len];
                (kt.add_f32)(&a, &b, &mut o1);
                for i in 0..len {
                    o2[i] = a[i] + b[i];
                }
                assert_close_f32(&o1, &o2, 1, "add_f32");

                let ai = rng.vi8(len);
                let bi = rng.vi8(len);
                let (sa, sb) = (0.7, 1.3);
                let mut q1 = vec![0i8; len];
                let mut q2 = vec![0i8; len];
                // quantisation of an f32 tensor, values from far below to far above ±127
                let big: Vec<f32> = a.iter().map(|v| v * 300.0).collect();
                (kt.quantize_i8)(&big, 0.77, &mut q1);
                for i in 0..len {
                    let r = (big[i] * 0.77).round().clamp(-127.0, 127.0) as i32;
                    assert!(
                        (q1[i] as i32 - r).abs() <= 1,
                        "{}: {} -> {} (want {r})",
                        kt.names.quantize_i8,
                        big[i],
                        q1[i]
                    );
                }
                (kt.add_i8)(&ai, sa, &bi, sb, &mut q1);
                (g.add_i8)(&ai, sa, &bi, sb, &mut q2);
                assert_within_1(&q1, &q2, "add_i8");
                for i in 0..len {
                    let r = (ai[i] as f32 * sa + bi[i] as f32 * sb)
                        .round()
                        .clamp(-127.0, 127.0) as i8;
                    assert!((q2[i] as i32 - r as i32).abs() <= 1);
                }

                // upsample + add, rows split in two
                let bsm = rng.vf32(h.div_ceil(2) * w.div_ceil(2) * c);
                let mut u1 = vec![0.0; len];
                let split = h / 2;
                let (u1a, u1b) = u1.split_at_mut(split * w * c);
                (kt.up2_add_f32)(&a, &bsm, h, w, c, 0, split, u1a);
                (kt.up2_add_f32)(&a, &bsm, h, w, c, split, h, u1b);
                for y in 0..h {
                    for x in 0..w {
                        for cc in 0..c {
                            let want = a[(y * w + x) * c + cc]
                                + bsm[((y / 2) * w.div_ceil(2) + x / 2) * c + cc];
                            assert_eq!(u1[(y * w + x) * c + cc], want, "up2_add");
                        }
                    }
                }

                // pools
                let (oh, ow) = (h / 2, w / 2);
                let mut p1 = vec![0.0; oh * ow * c];
                let mut p2 = vec![0.0; oh * ow * c];
                (kt.maxpool2_f32)(&a, h, w, c, 0, oh, &mut p1);
                (kt.avgpool2_f32)(&a, h, w, c, 0, oh, &mut p2);
                for y in 0..oh {
                    for x in 0..ow {
                        for cc in 0..c {
                            let v = [
                                a[((2 * y) * w + 2 * x) * c + cc],
                                a[((2 * y) * w + 2 * x + 1) * c + cc],
                                a[((2 * y + 1) * w + 2 * x) * c + cc],
                                a[((2 * y + 1) * w + 2 * x + 1) * c + cc],
                            ];
                            let mx = v.iter().cloned().fold(f32::MIN, f32::max);
                            let av = (v[0] + v[1] + v[2] + v[3]) / 4.0;
                            assert_eq!(p1[(y * ow + x) * c + cc], mx, "maxpool");
                            assert!((p2[(y * ow + x) * c + cc] - av).abs() <= 1e-6, "avgpool");
                        }
                    }
                }

                // sigmoid
                let mut s1: Vec<f32> = a.iter().map(|v| v * 12.0).collect();
                let s0 = s1.clone();
                (kt.sigmoid_f32)(&mut s1);
                for (i, &v) in s1.iter().enumerate() {
                    let want = 1.0 / (1.0 + (-(s0[i] as f64)).exp());
                    assert!(
                        (v as f64 - want).abs() <= 1e-6 * (1.0 + want),
                        "sigmoid({}) = {v} want {want}",
                        s0[i]
                    );
                }
            }
        }
        eprintln!("elementwise ok [{}]", kt.describe());
    }
}

fn to_f16(x: &[f32]) -> Vec<half::f16> {
    x.iter().map(|&v| half::f16::from_f32(v)).collect()
}
fn widen(x: &[half::f16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

#[test]
fn f16_packing_matches_f32() {
    let mut rng = Rng::new(7);
    let wh = to_f16(&rng.vf32(17 * 33));
    let w = widen(&wh);
    let p16 = pack_pw_f16(&wh, 17, 33);
    assert_eq!(widen(&p16.data), pack_pw_f32(&w, 17, 33).data);
    assert_eq!(p16.widen().data, pack_pw_f32(&w, 17, 33).data);
    let d = pack_dw(&wh[..17 * 9], 17, 3);
    assert_eq!(widen(&d.data), pack_dw(&w[..17 * 9], 17, 3).data);
    let c = pack_conv_f16(&wh[..5 * 3 * 9], 5, 3, 3, 3);
    assert_eq!((c.k, c.n), (27, 5));
    assert_eq!(
        widen(&c.data),
        pack_conv_f32(&w[..5 * 3 * 9], 5, 3, 3, 3).data
    );
}

/// The f16-arithmetic kernels of the CPU's table (none without FEAT_FP16, or on x86-64).
fn f16_kernels() -> Option<F16Kernels> {
    let f = Kernels::select(Mode::Auto).f16;
    if f.is_none() {
        eprintln!("SKIPPED: f16 arithmetic kernels (CPU lacks FEAT_FP16 or not aarch64)");
    }
    assert!(
        Kernels::select(Mode::NoDotprod).f16.is_none(),
        "nodotprod has no f16"
    );
    assert!(Kernels::generic().f16.is_none(), "generic has no f16");
    f
}

/// [`run_float`] through the f16 kernels `f`.
fn run_f16(
    f: &F16Kernels,
    c: &ConvCase,
    x: &[f32],
    w_oihw: &[half::f16],
    bias: &[f32],
    act: Act,
) -> Vec<f32> {
    let k = FloatKernels {
        dw: f.dw3x3,
        pw: f.pw,
        window: Some(f.window),
    };
    run_float(&k, c, x, w_oihw, bias, act)
}

/// The conv cases the f16 kernels take (depthwise 3×3 only), plus K beyond one chunk of
/// converted A (256): a 1×1 with K = 300 and a 3×3 with K = 9·33 whose chunks end inside a
/// window run.
fn f16_cases() -> Vec<ConvCase> {
    let mut v: Vec<ConvCase> = conv_cases()
        .into_iter()
        .filter(|c| !c.dw || c.s.kh == 3)
        .collect();
    for &(cin, k, pad) in &[(300usize, 1usize, 0usize), (33, 3, 1)] {
        v.push(ConvCase {
            s: ConvShape {
                h: 5,
                w: 7,
                cin,
                cout: 17,
                kh: k,
                kw: k,
                stride: 1,
                pad,
            },
            dw: false,
        });
    }
    v
}

/// The f16 kernels against the generic f32 kernels given the same f16-rounded operands.
///
/// Error bound. Operands exactly representable in f16 have products exact in f32 (11 × 11
/// significant bits), so the reference is exact to f32 rounding, and the f16 kernel's only
/// error is the rounding of its running f16 sums: each `fmla` rounds to nearest with unit
/// roundoff u = 2⁻¹¹, and a recursive sum of n terms is off by at most about (n−1)·u·Σ|terms|
/// (Higham, γ_{n−1}). The GEMM sums at most `KB` terms in f16 before adding into f32, the
/// depthwise 9; f32 additions and the epilogue add f32-size errors. So, element-wise,
/// `|got − want| ≤ n·u·Σ|a·w| + 1e-5·(1 + |want|)` with n = min(KB, K) or 9, and Σ|a·w| the
/// same conv run on |x|, |w| without bias or activation (activations are 1-Lipschitz: the
/// PReLU slopes are below 1). The inputs are given unrounded to the f16 kernel, rounded to
/// the reference: the kernel's own conversion must round to nearest even as well.
#[test]
fn f16_kernels_match_generic_within_f16_bound() {
    let Some(f) = f16_kernels() else { return };
    let g = Kernels::generic();
    let u = (2.0f32).powi(-11);
    let mut rng = Rng::new(16);
    let (mut n, mut worst) = (0, 0.0f32);
    for c in f16_cases() {
        let s = c.s;
        let (wl, kdim) = weights_len(&c);
        let x = rng.vf32(s.h * s.w * s.cin);
        let x16 = widen(&to_f16(&x));
        let wh = to_f16(&rng.vf32(wl));
        let w = widen(&wh);
        let bias = rng.vf32(s.cout);
        let alpha: Vec<f32> = rng.vf32(s.cout).iter().map(|a| a.abs() * 0.5).collect();
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        let zeros = vec![0.0f32; s.cout];
        let mag = run_f32(&g, &c, &abs(&x16), &abs(&w), &zeros, Act::None);
        let terms = if c.dw { 9 } else { kdim.min(aarch64_kb()) };
        for kind in ACTS {
            let act = make_act(kind, 0.3, &alpha);
            let want = run_f32(&g, &c, &x16, &w, &bias, act);
            let got = run_f16(&f, &c, &x, &wh, &bias, act);
            for (i, ((&a, &b), &m)) in got.iter().zip(&want).zip(&mag).enumerate() {
                let bound = terms as f32 * u * m + 1e-5 * (1.0 + b.abs());
                assert!(
                    (a - b).abs() <= bound,
                    "{s:?} dw={} {kind:?} [{i}]: got {a} want {b}, bound {bound}",
                    c.dw
                );
                if m > 0.0 {
                    worst = worst.max((a - b).abs() / (u * m));
                }
            }
            n += 1;
        }
    }
    eprintln!(
        "f16 kernels vs generic: {n} cases, worst error {worst:.2}·u·Σ|a·w| ({} {})",
        f.pw_name, f.dw3x3_name
    );
}

/// The GEMM's f16 run length (k summed in f16 before f32), as the bound needs it.
fn aarch64_kb() -> usize {
    #[cfg(target_arch = "aarch64")]
    {
        aarch64::fp16::KB
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        usize::MAX
    }
}

/// Which table was chosen, and does it agree with the CPU's features read independently
/// (from /proc/cpuinfo on aarch64)?
#[test]
fn dispatch_matches_cpu() {
    let k = kernels();
    eprintln!("kernel table: {}", k.describe());
    let auto = Kernels::select(Mode::Auto);
    assert_eq!(
        Kernels::select(Mode::Generic).names.pw_i8,
        "generic_pw_i8_1x8"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        assert_eq!(
            auto.names.pw_f32.starts_with("avx2_") || auto.names.pw_f32.starts_with("avx512_"),
            avx2,
            "{}",
            auto.describe()
        );
        if !avx2 {
            eprintln!("SKIPPED: AVX2+FMA not on this CPU, generic table in use");
        }
        // VNNI read independently of std's detection, from the kernel's flags: AVX-512 VNNI
        // is preferred to AVX-VNNI.
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let has = |f: &str| flags.contains(&f);
        assert_eq!(
            auto.names.pw_f32.starts_with("avx512_"),
            avx2 && has("avx512f") && has("avx512dq"),
            "AVX-512 f32 GEMM vs /proc/cpuinfo: {}",
            auto.describe()
        );
        let want = if !avx2 {
            "generic_"
        } else if has("avx512f") && has("avx512_vnni") {
            "avx512vnni_"
        } else if has("avx_vnni") {
            "vnni_"
        } else {
            "avx2_"
        };
        assert!(
            auto.names.pw_i8.starts_with(want),
            "VNNI table vs /proc/cpuinfo (want {want}...): {}",
            auto.describe()
        );
        assert!(
            !Kernels::select(Mode::NoDotprod)
                .names
                .pw_i8
                .contains("vnni"),
            "nodotprod must not use VNNI"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        // Independent of std's detection: AT_HWCAP (16) from /proc/self/auxv, bit 20 =
        // HWCAP_ASIMDDP (qemu-user emulates auxv but shows the host's /proc/cpuinfo).
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        let hwcap = auxv.chunks_exact(16).find_map(|e| {
            let t = u64::from_ne_bytes(e[..8].try_into().unwrap());
            (t == 16).then(|| u64::from_ne_bytes(e[8..].try_into().unwrap()))
        });
        let has_dot = match hwcap {
            Some(h) => h & (1 << 20) != 0,
            None => {
                let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
                cpuinfo
                    .lines()
                    .filter(|l| l.starts_with("Features"))
                    .any(|l| l.split_whitespace().any(|f| f == "asimddp"))
            }
        };
        eprintln!(
            "AT_HWCAP = {:?}: asimddp = {has_dot}; is_aarch64_feature_detected!(dotprod) = {}",
            hwcap.map(|h| format!("{h:#x}")),
            std::arch::is_aarch64_feature_detected!("dotprod")
        );
        assert!(
            auto.names.pw_f32.starts_with("neon_"),
            "{}",
            auto.describe()
        );
        assert_eq!(
            auto.names.pw_i8.starts_with("neon_dot_"),
            has_dot,
            "dotprod table vs cpuinfo: {}",
            auto.describe()
        );
        let nodot = Kernels::select(Mode::NoDotprod);
        assert!(
            !nodot.names.pw_i8.starts_with("neon_dot_"),
            "{}",
            nodot.describe()
        );
        // f16 arithmetic: AT_HWCAP bit 10 = HWCAP_ASIMDHP (half-precision NEON).
        let has_fp16 = hwcap.map(|h| h & (1 << 10) != 0).unwrap_or_else(|| {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            cpuinfo
                .lines()
                .filter(|l| l.starts_with("Features"))
                .any(|l| l.split_whitespace().any(|f| f == "asimdhp"))
        });
        eprintln!(
            "asimdhp = {has_fp16}; is_aarch64_feature_detected!(fp16) = {}",
            std::arch::is_aarch64_feature_detected!("fp16")
        );
        assert_eq!(
            auto.f16.is_some(),
            has_fp16,
            "f16 kernels vs AT_HWCAP: {}",
            auto.describe()
        );
        assert!(nodot.f16.is_none(), "nodotprod: {}", nodot.describe());
    }
    let _ = auto;
}

#[test]
fn int8_pools_match_their_f32_definition() {
    let mut rng = Rng::new(77);
    for &(h, w, c) in &[(2, 2, 1), (4, 6, 3), (5, 7, 17), (8, 8, 32)] {
        let a = rng.vi8(h * w * c);
        let (oh, ow) = (h / 2, w / 2);
        let mut mx = vec![0i8; oh * ow * c];
        let mut av = vec![0i8; oh * ow * c];
        generic::maxpool2_i8(&a, h, w, c, 0, oh, &mut mx);
        // Two row ranges, as the engine's threads call it.
        let split = oh / 2;
        let (av0, av1) = av.split_at_mut(split * ow * c);
        generic::avgpool2_i8(&a, h, w, c, 0, split, av0);
        generic::avgpool2_i8(&a, h, w, c, split, oh, av1);
        for y in 0..oh {
            for x in 0..ow {
                for cc in 0..c {
                    let v = [
                        a[((2 * y) * w + 2 * x) * c + cc],
                        a[((2 * y) * w + 2 * x + 1) * c + cc],
                        a[((2 * y + 1) * w + 2 * x) * c + cc],
                        a[((2 * y + 1) * w + 2 * x + 1) * c + cc],
                    ];
                    let o = (y * ow + x) * c + cc;
                    assert_eq!(mx[o], *v.iter().max().unwrap(), "maxpool");
                    let mean = v.iter().map(|&q| q as f32).sum::<f32>() / 4.0;
                    assert_eq!(av[o], sat_i8(mean), "avgpool of {v:?}");
                }
            }
        }
    }
}

#[test]
fn packing_round_trips() {
    let mut rng = Rng::new(9);
    for &(n, k) in &[(1usize, 1usize), (2, 576), (20, 27), (30, 5), (130, 33)] {
        let w = rng.vf32(n * k);
        assert_eq!(unpack_pw(&pack_pw_f32(&w, n, k)), w, "f32 n={n} k={k}");
        let w = rng.vi8(n * k);
        assert_eq!(unpack_pw_i8(&pack_pw_i8(&w, n, k)), w, "i8 n={n} k={k}");
    }
}

/// The fused f32-output int8 GEMMs against the generic accumulators + the plain epilogue.
#[test]
fn simd_pw_i8_f32_matches_accumulators() {
    let g = Kernels::generic();
    for kt in simd_tables() {
        let Some(gemm) = kt.pw_i8_f32 else { continue };
        let mut rng = Rng::new(11);
        let mut n = 0;
        for &m in &[1usize, 3, 7, 15, 33] {
            for &k in &[1usize, 3, 5, 27, 130] {
                for &nn in &[1usize, 3, 17, 30, 33] {
                    let a = rng.vi8(m * k);
                    let w = rng.vi8(nn * k);
                    let bias = rng.vi32(nn, 3000);
                    let mult: Vec<f32> = rng.vf32(nn).iter().map(|x| x.abs() * 1e-3).collect();
                    let alpha: Vec<f32> = rng.vf32(nn).iter().map(|x| x.abs() * 0.5).collect();
                    let pk = pack_pw_i8(&w, nn, k);
                    let mut acc = vec![0i32; m * nn];
                    (g.pw_i8_acc)(&a, &pk, 0, m, &mut acc);
                    for kind in ACTS {
                        let epi = EpiI8 {
                            bias: &bias,
                            mult: &mult,
                            act: make_act(kind, 0.3, &alpha),
                        };
                        let want: Vec<f32> = acc
                            .iter()
                            .enumerate()
                            .map(|(i, &x)| {
                                let c = i % nn;
                                let real = (x + bias[c]) as f32 * mult[c];
                                naive_act(kind, real, 0.3, alpha[c])
                            })
                            .collect();
                        let mut got = vec![0.0f32; m * nn];
                        let ms = m / 2;
                        let (g1, g2) = got.split_at_mut(ms * nn);
                        gemm(&a, &pk, &epi, 0, ms, g1);
                        gemm(&a, &pk, &epi, ms, m, g2);
                        assert_close_f32(&got, &want, 1, &format!("m={m} k={k} n={nn} {kind:?}"));
                        n += 1;
                    }
                }
            }
        }
        eprintln!(
            "simd pw_i8_f32 vs accumulators [{}]: {n} cases",
            kt.names.pw_i8
        );
    }
}

/// Paths the shared cases above do not reach (written for aarch64, run everywhere): depthwise channel counts with an
/// 8-channel block (C mod 16 >= 8) or none left over (C mod 16 = 0, where whole interior
/// pixels go through the 3×3 row kernel), and int8 GEMMs whose K has an odd number of 4-byte
/// groups, against the generic kernels, every activation, outputs within 1 LSB.
#[test]
fn simd_i8_dw_blocks_and_gemm_groups_match_generic() {
    let g = Kernels::generic();
    for kt in simd_tables() {
        let mut cases = Vec::new();
        for &(h, w) in &[(1usize, 1usize), (4, 3), (3, 7), (5, 15), (3, 33)] {
            for &c in &[8usize, 16, 24, 40, 47] {
                for &(k, stride, pad) in
                    &[(3usize, 1usize, 1usize), (3, 2, 1), (3, 1, 0), (5, 1, 2)]
                {
                    if h + 2 * pad >= k && w + 2 * pad >= k {
                        cases.push(ConvCase {
                            s: ConvShape::dw(h, w, c, k, stride, pad),
                            dw: true,
                        });
                    }
                }
            }
        }
        for &(m, k, nn) in &[
            (33usize, 16usize, 16usize),
            (7, 20, 24),
            (15, 40, 40),
            (3, 27, 16),
        ] {
            // as a 1×1 conv over an m×1 image
            cases.push(ConvCase {
                s: ConvShape {
                    h: m,
                    w: 1,
                    cin: k,
                    cout: nn,
                    kh: 1,
                    kw: 1,
                    stride: 1,
                    pad: 0,
                },
                dw: false,
            });
        }
        let n = check_i8_cases(&g, &kt, cases, &mut Rng::new(7));
        eprintln!("simd i8 blocks vs generic [{}]: {n} cases", kt.describe());
    }
}

/// Dense int8 convs with f32 outputs (the network's outputs): every SIMD table's
/// `conv_i8_f32` — in-place windows where the table has them, im2col at the borders — against
/// generic im2col + i32 accumulators + the epilogue written here.
#[test]
fn simd_conv_i8_f32_matches_accumulators() {
    let g = Kernels::generic();
    for kt in simd_tables() {
        let Some(gemm) = kt.pw_i8_f32 else { continue };
        let mut rng = Rng::new(12);
        let mut n = 0;
        for c in conv_cases().into_iter().filter(|c| !c.dw && c.s.kh == 3) {
            let s = c.s;
            let (oh, ow, k) = (s.oh(), s.ow(), s.kh * s.kw * s.cin);
            let x = rng.vi8(s.h * s.w * s.cin);
            let wts = rng.vi8(s.cout * k);
            let pk = pack_conv_i8(&wts, s.cout, s.cin, s.kh, s.kw);
            let bias = rng.vi32(s.cout, 3000);
            let mult: Vec<f32> = rng.vf32(s.cout).iter().map(|x| x.abs() * 1e-3).collect();
            let mut cols = vec![0i8; s.im2col_len()];
            let mut acc = vec![0i32; oh * ow * s.cout];
            for oy in 0..oh {
                let cols = &mut cols[..ow * k];
                generic::im2col_pixels(&x, &s, s.kw * s.cin, oy, 0, ow, cols);
                let row = &mut acc[oy * ow * s.cout..(oy + 1) * ow * s.cout];
                (g.pw_i8_acc)(cols, &pk, 0, ow, row);
            }
            let epi = EpiI8 {
                bias: &bias,
                mult: &mult,
                act: Act::Relu,
            };
            let want: Vec<f32> = acc
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    naive_act(
                        ActKind::Relu,
                        (v + bias[i % s.cout]) as f32 * mult[i % s.cout],
                        0.0,
                        0.0,
                    )
                })
                .collect();
            let mut got = vec![0.0f32; want.len()];
            let split = oh / 2;
            let (g1, g2) = got.split_at_mut(split * ow * s.cout);
            let pk = pack_conv_i8_for(&kt, &wts, &s);
            kt.conv_i8_f32(gemm, &x, &s, &pk, &epi, 0, split, &mut cols, g1);
            kt.conv_i8_f32(gemm, &x, &s, &pk, &epi, split, oh, &mut cols, g2);
            assert_close_f32(&got, &want, 1, &format!("{s:?}"));
            n += 1;
        }
        eprintln!(
            "simd conv_i8_f32 vs accumulators [{}]: {n} cases",
            kt.describe()
        );
    }
}

/// Every Winograd entry this CPU can run, each with the GEMM it is installed with.
fn wino_tables() -> Vec<Kernels> {
    let mut v = vec![Kernels::generic()];
    #[cfg(target_arch = "x86_64")]
    {
        let auto = Kernels::select(Mode::Auto);
        for (name, wino) in x86_64::wino_f32_variants() {
            let mut t = auto;
            (t.wino_f32, t.names.wino_f32) = (wino, name);
            v.push(t);
        }
    }
    #[cfg(target_arch = "aarch64")]
    v.push(Kernels::select(Mode::Auto));
    v
}

/// Output rows of a 3×3 stride-1 conv by Winograd, in three bands that start at neither 0
/// nor a multiple of the tile, as the engine's row split may hand out.
fn run_wino(kt: &Kernels, s: &ConvShape, x: &[f32], w: &PackedWino, epi: &EpiF32) -> Vec<f32> {
    let (oh, ow) = (s.oh(), s.ow());
    let mut out = vec![0.0f32; oh * ow * s.cout];
    let mut scratch = vec![0.0f32; wino_scratch_len(s)];
    let cuts = [0, oh / 3, (2 * oh / 3 + 1).min(oh), oh];
    for b in cuts.windows(2) {
        let o = &mut out[b[0] * ow * s.cout..b[1] * ow * s.cout];
        kt.conv_wino_f32(x, s, w, epi, b[0], b[1], &mut scratch, o);
    }
    out
}

/// Winograd F(4,3) against the generic im2col conv on odd shapes, partial tiles, every
/// activation and banded rows.
///
/// The bound, `|a-b| <= 1e-4 · (1+|b|) · sqrt(9·cin)`, is ten times the one for the direct
/// kernels: Winograd rounds in transformed space, where the input transform scales values
/// by up to 10 per axis (row sums of |Bᵀ| ≤ 10) and the output transform by up to 18 (row
/// sums of |Aᵀ|), so a rounding error of ε·|v| in `V` or `M` may grow by ~100 before it
/// reaches an output pixel of magnitude ~|v|. With inputs and weights in [-1, 1] the
/// measured worst case (printed) is about 1e-5 in these units: a tenfold margin.
#[test]
fn winograd_matches_im2col() {
    let g = Kernels::generic();
    let sizes = [
        (1usize, 1usize),
        (3, 3),
        (7, 7),
        (15, 15),
        (33, 33),
        (1, 15),
        (33, 7),
        (7, 33),
        (3, 1),
    ];
    let chans = [
        (1usize, 1usize),
        (3, 5),
        (5, 17),
        (17, 3),
        (33, 33),
        (12, 12),
        (12, 24),
        (24, 24),
        (48, 48),
        (64, 64),
        (64, 30),
    ];
    let mut rng = Rng::new(11);
    let mut worst = 0.0f32;
    let mut n = 0;
    for kt in wino_tables() {
        for &(h, w) in &sizes {
            for &(cin, cout) in &chans {
                // the big channel counts on fewer sizes, to keep the test short
                if cin * cout > 600 && h * w != 33 * 33 && h * w > 9 {
                    continue;
                }
                for pad in [1usize, 0] {
                    if h + 2 * pad < 3 || w + 2 * pad < 3 {
                        continue;
                    }
                    let s = ConvShape {
                        h,
                        w,
                        cin,
                        cout,
                        kh: 3,
                        kw: 3,
                        stride: 1,
                        pad,
                    };
                    let x = rng.vf32(h * w * cin);
                    let wt = rng.vf32(cout * cin * 9);
                    let bias = rng.vf32(cout);
                    let alpha: Vec<f32> = rng.vf32(cout).iter().map(|a| a.abs() * 0.5).collect();
                    let pw = pack_wino_f32(&wt, cout, cin);
                    let pc = pack_conv_f32(&wt, cout, cin, 3, 3);
                    let mut scratch = vec![0.0f32; s.im2col_len()];
                    for kind in ACTS {
                        let epi = EpiF32 {
                            bias: &bias,
                            act: make_act(kind, 0.3, &alpha),
                        };
                        let mut want = vec![0.0f32; s.oh() * s.ow() * cout];
                        g.conv_f32(&x, &s, &pc, &epi, 0, s.oh(), &mut scratch, &mut want);
                        let got = run_wino(&kt, &s, &x, &pw, &epi);
                        let what = format!("{} {s:?} {kind:?}", kt.names.wino_f32);
                        let k = (9 * cin) as f32;
                        for (&a, &b) in got.iter().zip(&want) {
                            worst = worst.max((a - b).abs() / ((1.0 + b.abs()) * k.sqrt()));
                        }
                        assert_close_f32_tol(&got, &want, 1e-4 * k.sqrt(), &what);
                        n += 1;
                    }
                }
            }
        }
    }
    eprintln!("winograd vs im2col: {n} cases, worst |a-b|/((1+|b|)·sqrt(K)) = {worst:e}");
}

/// Repacking the im2col weights for Winograd gives the same matrices as packing the OIHW
/// weights directly (the engine repacks after fusing sibling convs).
#[test]
fn winograd_packing_from_im2col_weights() {
    let mut rng = Rng::new(12);
    for &(cin, cout) in &[(1usize, 1usize), (5, 17), (64, 30)] {
        let w = rng.vf32(cout * cin * 9);
        let a = pack_wino_f32(&w, cout, cin);
        let b = pack_wino_from_conv(&pack_conv_f32(&w, cout, cin, 3, 3), cin);
        for (ua, ub) in a.u.iter().zip(&b.u) {
            assert_eq!(ua.data, ub.data, "{cin}->{cout}");
        }
    }
}
