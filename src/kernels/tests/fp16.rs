//! The f16-arithmetic kernels (aarch64 FEAT_FP16) against generic f32 on the same
//! f16-rounded operands, within the bound of f16 summation (derived at the test).

use super::*;

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
