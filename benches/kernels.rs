//! Kernel throughput on real facegate layer shapes, generic vs the table chosen for this CPU.
//! Throughput is in multiply-accumulates (criterion's "elem/s" = MAC/s; GOP/s = 2×).
//! Run: `cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use facegate::kernels::*;

fn vf32(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}
fn vi8(n: usize, seed: u32) -> Vec<i8> {
    vf32(n, seed).iter().map(|v| (v * 250.0) as i8).collect()
}

fn tables() -> Vec<(&'static str, Kernels)> {
    let mut v = vec![("generic", Kernels::generic())];
    let auto = Kernels::select(Mode::Auto);
    if auto.names.pw_f32 != v[0].1.names.pw_f32 {
        v.push(("simd", auto));
    }
    let nodot = Kernels::select(Mode::NoDotprod);
    if nodot.names.pw_i8 != auto.names.pw_i8 {
        v.push(("nodotprod", nodot));
    }
    v
}

/// [`tables`] plus the other tile shapes of the chosen int8 GEMM family, for the int8 GEMM
/// benches (compared in the same run).
fn i8_gemm_tables() -> Vec<(&'static str, Kernels)> {
    let mut v = tables();
    v.extend(
        Kernels::dot_i8_variants()
            .into_iter()
            .skip(1)
            .map(|k| ("tiles", k)),
    );
    v
}

fn bench_pw(c: &mut Criterion) {
    // MobileFaceNet's largest pointwise layer, and SCRFD-500M's first (K = N = 16 at 320×320:
    // the epilogue and memory traffic weigh as much as the products)
    for (label, m, k, n) in [
        ("pw_56x56x64to128", 56 * 56, 64, 128),
        ("pw_320x320x16to16", 320 * 320, 16, 16),
        // SCRFD-500M's narrow stages: N = 40 and 72 (one panel past a register boundary)
        ("pw_160x160x16to40", 160 * 160, 16, 40),
        ("pw_160x160x40to40", 160 * 160, 40, 40),
        ("pw_80x80x72to72", 80 * 80, 72, 72),
    ] {
        bench_pw_shape(c, label, m, k, n);
    }
}

fn bench_pw_shape(c: &mut Criterion, label: &str, m: usize, k: usize, n: usize) {
    let mut g = c.benchmark_group(label);
    g.throughput(Throughput::Elements((m * k * n) as u64));
    let a = vf32(m * k, 1);
    let w = vf32(n * k, 2);
    let bias = vf32(n, 3);
    let pf = pack_pw_f32(&w, n, k);
    let ai = vi8(m * k, 4);
    let pi = pack_pw_i8(&vi8(n * k, 5), n, k);
    let bi = vec![10i32; n];
    let mult = vec![0.001f32; n];
    let mut of = vec![0.0f32; m * n];
    let mut oi = vec![0i8; m * n];
    for (name, kt) in tables() {
        let epi = EpiF32 {
            bias: &bias,
            act: Act::Relu6(6.0),
        };
        g.bench_function(
            BenchmarkId::new("f32", format!("{name}:{}", kt.names.pw_f32)),
            |b| b.iter(|| (kt.pw_f32)(&a, &pf, &epi, 0, m, &mut of)),
        );
    }
    for (name, kt) in i8_gemm_tables() {
        let epi = EpiI8 {
            bias: &bi,
            mult: &mult,
            act: Act::Relu,
        };
        g.bench_function(
            BenchmarkId::new("i8", format!("{name}:{}", kt.names.pw_i8)),
            |b| b.iter(|| (kt.pw_i8)(&ai, &pi, &epi, 0, m, &mut oi)),
        );
    }
    g.finish();
}

fn bench_dw(c: &mut Criterion) {
    // MobileFaceNet's depthwise layers and SCRFD-500M's 16- and 40-channel ones
    for (label, hw, ch, stride) in [
        ("dw3x3_56x56x128_s1", 56, 128, 1),
        ("dw3x3_56x56x64_s1", 56, 64, 1),
        ("dw3x3_56x56x128_s2", 56, 128, 2),
        ("dw3x3_28x28x128_s1", 28, 128, 1),
        ("dw3x3_14x14x256_s1", 14, 256, 1),
        ("dw3x3_7x7x256_s1", 7, 256, 1),
        ("dw3x3_320x320x16_s1", 320, 16, 1),
        ("dw3x3_160x160x40_s1", 160, 40, 1),
    ] {
        bench_dw_shape(c, label, ConvShape::dw(hw, hw, ch, 3, stride, 1));
    }
}

fn bench_dw_shape(c: &mut Criterion, label: &str, s: ConvShape) {
    let (hw, ch) = (s.h * s.w, s.cin);
    let mut g = c.benchmark_group(label);
    g.throughput(Throughput::Elements((s.oh() * s.ow() * ch * 9) as u64));
    let x = vf32(hw * ch, 1);
    let wf = pack_dw(&vf32(ch * 9, 2), ch, 3);
    let bias = vf32(ch, 3);
    let xi = vi8(hw * ch, 4);
    // without `tap_pairs` the int8 kernels run per pixel; with them, flat rows where they can
    let wi = vi8(ch * 9, 5);
    let (rows, flat) = (pack_dw(&wi, ch, 3), pack_dw_i8(&wi, ch, 3));
    let bi = vec![10i32; ch];
    let mult = vec![0.01f32; ch];
    let mut of = vec![0.0f32; s.oh() * s.ow() * ch];
    let mut oi = vec![0i8; s.oh() * s.ow() * ch];
    let epi = EpiF32 {
        bias: &bias,
        act: Act::Relu,
    };
    for (name, kt) in tables() {
        g.bench_function(
            BenchmarkId::new("f32", format!("{name}:{}", kt.names.dw_f32)),
            |b| b.iter(|| (kt.dw_f32)(&x, &s, &wf, &epi, 0, s.oh(), &mut of)),
        );
        let epi = EpiI8 {
            bias: &bi,
            mult: &mult,
            act: Act::Relu,
        };
        for (packing, wi) in [("per-pixel", &rows), ("flat", &flat)] {
            g.bench_function(
                BenchmarkId::new("i8", format!("{name}:{}:{packing}", kt.names.dw_i8)),
                |b| b.iter(|| (kt.dw_i8)(&xi, &s, wi, &epi, 0, s.oh(), &mut oi)),
            );
        }
    }
    g.finish();
}

fn bench_dense(c: &mut Criterion) {
    for (label, s) in [
        (
            "conv3x3_320x320x3to16_s2",
            ConvShape {
                h: 320,
                w: 320,
                cin: 3,
                cout: 16,
                kh: 3,
                kw: 3,
                stride: 2,
                pad: 1,
            },
        ),
        (
            "conv3x3_320x320x12to24_s1",
            ConvShape {
                h: 320,
                w: 320,
                cin: 12,
                cout: 24,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            },
        ),
        (
            "conv3x3_80x80x48to48_s1",
            ConvShape {
                h: 80,
                w: 80,
                cin: 48,
                cout: 48,
                kh: 3,
                kw: 3,
                stride: 1,
                pad: 1,
            },
        ),
    ] {
        let mut g = c.benchmark_group(label);
        g.throughput(Throughput::Elements(s.macs()));
        let x = vf32(s.h * s.w * s.cin, 1);
        let wf = pack_conv_f32(&vf32(s.cout * s.cin * 9, 2), s.cout, s.cin, 3, 3);
        let ww = pack_wino_from_conv(&wf, s.cin);
        let mut sw = vec![0.0f32; wino_scratch_len(&s)];
        let bias = vf32(s.cout, 3);
        let xi = vi8(s.h * s.w * s.cin, 4);
        let wraw = vi8(s.cout * s.cin * 9, 5);
        let wi = pack_conv_i8(&wraw, s.cout, s.cin, 3, 3);
        // the layout the engine packs for tables that read windows in place
        let wpad = pack_conv_i8_padded(&wraw, s.cout, s.cin, 3, 3);
        let bi = vec![10i32; s.cout];
        let mult = vec![0.001f32; s.cout];
        let mut sf = vec![0.0f32; s.im2col_len()];
        let mut si = vec![0i8; s.im2col_len()];
        let mut of = vec![0.0f32; s.oh() * s.ow() * s.cout];
        let mut oi = vec![0i8; s.oh() * s.ow() * s.cout];
        for (name, kt) in tables() {
            let epi = EpiF32 {
                bias: &bias,
                act: Act::Relu,
            };
            g.bench_function(
                BenchmarkId::new("f32", format!("{name}:im2col+{}", kt.names.pw_f32)),
                |b| {
                    let kt = Kernels {
                        window_f32: None,
                        ..kt
                    };
                    b.iter(|| kt.conv_f32(&x, &s, &wf, &epi, 0, s.oh(), &mut sf, &mut of))
                },
            );
            if kt.window_f32.is_some() {
                g.bench_function(
                    BenchmarkId::new("f32", format!("{name}:window+{}", kt.names.pw_f32)),
                    |b| b.iter(|| kt.conv_f32(&x, &s, &wf, &epi, 0, s.oh(), &mut sf, &mut of)),
                );
            }
            if wino_supports(&s) {
                // same MACs counted as im2col's, so the throughputs compare directly
                g.bench_function(
                    BenchmarkId::new(
                        "f32",
                        format!("{name}:{}+{}", kt.names.wino_f32, kt.names.pw_f32),
                    ),
                    |b| b.iter(|| kt.conv_wino_f32(&x, &s, &ww, &epi, 0, s.oh(), &mut sw, &mut of)),
                );
            }
        }
        for (name, kt) in i8_gemm_tables() {
            let epi = EpiI8 {
                bias: &bi,
                mult: &mult,
                act: Act::Relu,
            };
            g.bench_function(
                BenchmarkId::new("i8", format!("{name}:im2col+{}", kt.names.pw_i8)),
                |b| {
                    let kt = Kernels {
                        window_i8: None,
                        ..kt
                    };
                    b.iter(|| kt.conv_i8(&xi, &s, &wi, &epi, 0, s.oh(), &mut si, &mut oi))
                },
            );
            if kt.window_i8.is_some() {
                g.bench_function(
                    BenchmarkId::new("i8", format!("{name}:window+{}", kt.names.pw_i8)),
                    |b| b.iter(|| kt.conv_i8(&xi, &s, &wpad, &epi, 0, s.oh(), &mut si, &mut oi)),
                );
            }
        }
        g.finish();
    }
}

fn bench_elementwise(c: &mut Criterion) {
    let (h, w, ch) = (80, 80, 64);
    let n = h * w * ch;
    let mut g = c.benchmark_group("elementwise_80x80x64");
    g.throughput(Throughput::Elements(n as u64));
    let a = vf32(n, 1);
    let b = vf32(n, 2);
    let bs = vf32(40 * 40 * ch, 3);
    let ai = vi8(n, 4);
    let bi = vi8(n, 5);
    let mut o = vec![0.0f32; n];
    let mut oi = vec![0i8; n];
    let mut op = vec![0.0f32; n / 4];
    for (name, kt) in tables() {
        g.bench_function(
            BenchmarkId::new("add_f32", format!("{name}:{}", kt.names.add_f32)),
            |bn| bn.iter(|| (kt.add_f32)(&a, &b, &mut o)),
        );
        g.bench_function(
            BenchmarkId::new("add_i8", format!("{name}:{}", kt.names.add_i8)),
            |bn| bn.iter(|| (kt.add_i8)(&ai, 0.7, &bi, 1.2, &mut oi)),
        );
        g.bench_function(
            BenchmarkId::new("up2_add_f32", format!("{name}:{}", kt.names.up2_add_f32)),
            |bn| bn.iter(|| (kt.up2_add_f32)(&a, &bs, h, w, ch, 0, h, &mut o)),
        );
        g.bench_function(
            BenchmarkId::new("maxpool2_f32", format!("{name}:{}", kt.names.pool2_f32)),
            |bn| bn.iter(|| (kt.maxpool2_f32)(&a, h, w, ch, 0, h / 2, &mut op)),
        );
    }
    g.finish();
}

criterion_group!(benches, bench_pw, bench_dw, bench_dense, bench_elementwise);
criterion_main!(benches);
