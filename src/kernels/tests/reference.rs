//! The generic kernels against a naive NCHW convolution written plainly in `super` (an
//! independent definition), f32 and int8: the root of trust every other test builds on.

use super::*;

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
