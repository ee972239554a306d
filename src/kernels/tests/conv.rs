//! Whole convolutions (dense, pointwise, depthwise) through every SIMD table against the
//! generic table: the shared cases of `conv_cases`, and the depthwise channel blocks and
//! GEMM group counts those do not reach.

use super::*;

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

#[test]
fn simd_i8_matches_generic() {
    let g = Kernels::generic();
    for kt in simd_tables() {
        let n = check_i8_cases(&g, &kt, conv_cases(), &mut Rng::new(4));
        eprintln!("simd i8 vs generic [{}]: {n} cases", kt.describe());
    }
}

/// Paths the shared cases (`conv_cases`) do not reach (written for aarch64, run everywhere):
/// depthwise channel counts with an 8-channel block (C mod 16 >= 8) or none left over (C mod 16 = 0, where whole interior
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
