//! Winograd F(4,3), every entry this CPU can run, against the im2col conv, and its packing.

use super::*;

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

/// An int8 3×3 conv repacked for Winograd ([`pack_wino_from_i8`], how an ARMv8.0 table runs
/// int8 heads) computes the real conv of its int8 weights and inputs: against the naive f64
/// conv of `w·s_w` and `x·s_in`, from both int8 packings (plain and padded kernel rows), at
/// the bound of [`winograd_matches_im2col`] scaled by the operands' magnitude.
#[test]
fn winograd_of_int8_weights_is_the_real_int8_conv() {
    let mut rng = Rng::new(13);
    let s_in = 0.037f32;
    for kt in wino_tables() {
        for &(h, w, cin, cout) in &[
            (9usize, 11usize, 64usize, 30usize),
            (5, 7, 3, 8),
            (8, 8, 33, 17),
        ] {
            let s = ConvShape {
                h,
                w,
                cin,
                cout,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            };
            let xq = rng.vi8(h * w * cin);
            let wq = rng.vi8(cout * cin * 9);
            let s_w: Vec<f32> = (0..cout).map(|o| 0.002 + 0.0005 * o as f32).collect();
            let bias = rng.vf32(cout);
            let x: Vec<f32> = xq.iter().map(|&v| f32::from(v) * s_in).collect();
            let wide: Vec<f64> = wq
                .iter()
                .enumerate()
                .map(|(i, &v)| f64::from(v) * f64::from(s_w[i / (cin * 9)]))
                .collect();
            let xd = nhwc_to_nchw(&x, h, w, cin);
            let (want_nchw, oh, ow) = naive_conv_nchw(&xd, &wide, h, w, cin, cout, (3, 3), 1, 1, 1);
            let want: Vec<f32> = (0..oh * ow * cout)
                .map(|i| {
                    (want_nchw[(i % cout) * oh * ow + i / cout] + f64::from(bias[i % cout])) as f32
                })
                .collect();
            // the magnitude of a term: |x|·|w| ≤ 127·s_in · 127·s_w
            let unit = 127.0 * s_in * 127.0 * s_w[cout - 1];
            let epi = EpiF32 {
                bias: &bias,
                act: Act::None,
            };
            for packed in [
                pack_conv_i8(&wq, cout, cin, 3, 3),
                pack_conv_i8_padded(&wq, cout, cin, 3, 3),
            ] {
                let pw = pack_wino_from_i8(&packed, cin, &s_w);
                let got = run_wino(&kt, &s, &x, &pw, &epi);
                let what = format!("{} {s:?} K={}", kt.names.wino_f32, packed.k);
                let k = (9 * cin) as f32;
                for (&a, &b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-4 * k.sqrt() * (unit + b.abs()),
                        "{what}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
