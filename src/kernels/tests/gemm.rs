//! The int8 GEMMs on their own: raw accumulators exact against generic, and the fused f32
//! epilogue (plain rows and dense convs) against generic accumulators + the epilogue
//! written here.

use super::*;

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
