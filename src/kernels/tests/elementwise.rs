//! Adds, pooling, sigmoid and quantisation: every table against the plain definitions, and
//! the int8 pools against their f32 definition.

use super::*;

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
