//! Empirical bias correction (Nagel et al., "Data-Free Quantization Through Weight
//! Equalization and Bias Correction", ICCV 2019, §4.2, in its empirical form): rounding the
//! weights and the activations of a convolution shifts the mean of its output channels, and
//! a shifted mean is not noise that averages out — every later layer and, in a detector,
//! every anchor score sees it. Depthwise layers suffer most: each output channel sums only
//! 9 weights, so one rounding decision moves the whole channel.
//!
//! Why it is shaped so:
//! - A convolution is linear, so the mean of its pre-activation output channel `c` over all
//!   positions is `b_c + Σ W[c, ci, tap] · S[ci, tap] / P`, with `S[ci, tap]` the sum of
//!   input channel `ci` over the positions that tap reads (padding reads zeros) and `P` the
//!   number of output positions. Only these tap sums are collected, not the outputs: the
//!   cost is that of one depthwise convolution per layer, and the pre-activation means come
//!   out exact even though the engine only keeps post-activation values.
//! - The shift of channel `c` is split in two: `own` = `Σ (Wq − W) · Sq` (this layer's
//!   rounded weights on what the int8 network really feeds it) and `input` = `Σ W · (Sq − S)`
//!   (what reaches it already shifted). Both are subtracted from the bias; a layer that the
//!   float-layer search later keeps in f32 has no rounded weights, so only its `input` part
//!   still applies (see [`BiasFix::apply`]).
//! - Sequential: layers are corrected wave by wave, a wave being the convolutions at the same
//!   depth (counted in convolutions from the input), and the int8 network is re-run with the
//!   earlier waves' corrections before the next is measured. Correcting every layer from one
//!   run would subtract an upstream shift twice: once where it arises, and again in every
//!   layer it reaches. Layers of one wave never feed each other, so they can share a run.
//! - The f32 tap sums do not change between waves and are collected once; each wave's int8
//!   run stops at the wave's last convolution ([`Engine::run_through`]).
//! - Only calibration images are used; the held-back ones then say whether it helped.
//!
//! Measured (WIDER subset AP, all faces / ≥ 16 px, f32 40.82 / 76.63): det_500m int8 went
//! from 38.36 / 75.96 to 40.26 / 75.67, and its float-layer search now keeps 3 layers in f32
//! instead of 8. On det_2.5g the held-back agreement with f32 gets worse (selection merit
//! 76.5 → 72.5, a systematic score shift on the matched faces), so it is not kept there —
//! although that model's WIDER AP would rise above f32's (48.71 against 48.05), which says
//! the shift is not fidelity. MobileFaceNet keeps it (held-back mean cosine 0.9919 → 0.9930
//! all-int8).

use image::RgbImage;

use crate::engine::Engine;
use crate::error::Result;
use crate::format::{ModelFile, TensorData};
use crate::graph::{Graph, Op};
use crate::preprocess::fill_nhwc;

use super::{all_values_engine, norm_of, run_on};

/// Per convolution (by op index): the mean shift of each output channel, split into what its
/// own rounded weights cause and what reaches it through its input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BiasFix {
    /// `(op index, own, input)` for every corrected convolution.
    pub layers: Vec<(usize, Vec<f32>, Vec<f32>)>,
}

impl BiasFix {
    /// `model` (int8, made from the same f32 model as the fix) with every corrected bias
    /// lowered by the shift its convolution was measured to add; a convolution that
    /// `model` keeps in f32 only loses the part that reaches it through its input.
    pub fn apply(&self, model: &ModelFile) -> Result<ModelFile> {
        let graph = model.config.graph();
        let mut out = model.clone();
        for (i, own, input) in &self.layers {
            let Op::Conv { name, .. } = &graph.ops[*i] else {
                unreachable!("bias fixes are for convolutions")
            };
            let key = format!("{name}.bias");
            let float = model.is_float_layer(name);
            let mut b = out.tensor_f32(&key)?;
            for ((b, &o), &x) in b.iter_mut().zip(own).zip(input) {
                *b -= if float { x } else { o + x };
            }
            let shape = out.tensors[&key].shape.clone();
            out.tensors.insert(key, TensorData::f32(shape, b));
        }
        Ok(out)
    }

    /// Largest correction of any channel relative to the typical size of its layer's output
    /// (`scales[v] * 127`, the calibrated range): how much the fix moves things.
    pub fn largest_relative(&self, scales: &[f32]) -> f64 {
        self.layers
            .iter()
            .map(|(i, own, input)| {
                let range = (scales[i + 1] * 127.0).max(1e-30) as f64;
                own.iter()
                    .zip(input)
                    .map(|(o, x)| ((o + x) as f64).abs() / range)
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    }
}

/// Sums of an NHWC input (`[h, w, c]`) over the positions each tap of a `k × k`
/// convolution with `stride` and `pad` reads, added to `out` (`[tap][c]`, tap = ky·k + kx);
/// returns the number of output positions. Rows first, then columns: `k` times cheaper
/// than visiting every (output position, tap) pair.
pub fn add_tap_sums(
    x: &[f32],
    [h, w, c]: [usize; 3],
    k: usize,
    stride: usize,
    pad: usize,
    out: &mut [f64],
) -> usize {
    assert_eq!(x.len(), h * w * c, "input of {h}×{w}×{c}");
    assert_eq!(out.len(), k * k * c, "tap sums of {k}×{k}×{c}");
    let outs = |n: usize| (n + 2 * pad).saturating_sub(k) / stride + 1;
    let (ho, wo) = (outs(h), outs(w));
    // The input rows (or columns) tap offset `t` reads, over all output rows.
    let read = |t: usize, n_out: usize, n_in: usize| {
        (0..n_out)
            .map(move |o| (o * stride + t) as isize - pad as isize)
            .filter(move |&i| i >= 0 && (i as usize) < n_in)
            .map(|i| i as usize)
    };
    let mut rows = vec![0f64; w * c];
    for ky in 0..k {
        rows.fill(0.0);
        for iy in read(ky, ho, h) {
            for (r, &v) in rows.iter_mut().zip(&x[iy * w * c..(iy + 1) * w * c]) {
                *r += v as f64;
            }
        }
        for kx in 0..k {
            let o = &mut out[(ky * k + kx) * c..(ky * k + kx + 1) * c];
            for ix in read(kx, wo, w) {
                for (s, &r) in o.iter_mut().zip(&rows[ix * c..(ix + 1) * c]) {
                    *s += r;
                }
            }
        }
    }
    ho * wo
}

/// `x` as the int8 engine's readers of a value with scale `s` see it: rounded to int8
/// steps (idempotent on values that are int8 already, as the engine's kept copies are).
fn requantised(x: &[f32], s: f32) -> Vec<f32> {
    x.iter()
        .map(|&v| (v / s).round().clamp(-127.0, 127.0) * s)
        .collect()
}

/// Mean shift per output channel of convolution `op` (OIHW weights `wq` of the int8
/// model, `wf` of the f32 one) from the tap sums `sq`, `sf` (`[tap][cin]`) over `n` output
/// positions: `(own, input)` as in the module notes.
pub fn channel_shift(
    op: &Op,
    wq: &[f32],
    wf: &[f32],
    sq: &[f64],
    sf: &[f64],
    n: usize,
) -> (Vec<f32>, Vec<f32>) {
    let Op::Conv {
        cin,
        cout,
        kernel,
        groups,
        ..
    } = op
    else {
        unreachable!("a convolution")
    };
    let (kk, per_group_in) = (kernel * kernel, cin / groups);
    let per_group_out = cout / groups;
    let n = n.max(1) as f64;
    let mut own = vec![0f32; *cout];
    let mut input = vec![0f32; *cout];
    for c in 0..*cout {
        let g = c / per_group_out;
        let (mut a, mut b) = (0f64, 0f64);
        for j in 0..per_group_in {
            let ci = g * per_group_in + j;
            for t in 0..kk {
                let wi = (c * per_group_in + j) * kk + t;
                let (q, f) = (wq[wi] as f64, wf[wi] as f64);
                let (xq, xf) = (sq[t * cin + ci], sf[t * cin + ci]);
                a += (q - f) * xq;
                b += f * (xq - xf);
            }
        }
        own[c] = (a / n) as f32;
        input[c] = (b / n) as f32;
    }
    (own, input)
}

/// Convolution depth of every op's input (the wave it is corrected in): convolutions on
/// the network input are wave 0, a convolution reading one of wave `d` is wave `d + 1` or
/// later; ops other than convolutions pass their inputs' deepest depth on.
pub fn waves(graph: &Graph) -> Vec<usize> {
    let mut depth = vec![0usize; graph.num_values()];
    let mut wave = Vec::with_capacity(graph.ops.len());
    for (i, op) in graph.ops.iter().enumerate() {
        let d = op.inputs().iter().map(|&v| depth[v]).max().unwrap_or(0);
        wave.push(d);
        depth[i + 1] = if matches!(op, Op::Conv { .. }) {
            d + 1
        } else {
            d
        };
    }
    wave
}

/// Tap sums of the inputs of the convolutions `ops` (op indices) of an engine that kept
/// every value, added to `sums` (per op); with int8 `scales`, inputs are requantised as
/// the int8 layers read them (`float[i]`: op `i` runs in f32 and reads the f32 copy).
fn add_sums(
    e: &Engine,
    graph: &Graph,
    ops: &[usize],
    scales: Option<&[f32]>,
    float: &[bool],
    sums: &mut [(Vec<f64>, usize)],
) -> Result<()> {
    for (&i, (s, n)) in ops.iter().zip(sums.iter_mut()) {
        let Op::Conv {
            input,
            kernel,
            stride,
            pad,
            ..
        } = &graph.ops[i]
        else {
            unreachable!("a convolution")
        };
        let (x, shape) = e.output(*input)?;
        let x = match scales {
            Some(sc) if !float[i] => requantised(x, sc[*input]),
            _ => x.to_vec(),
        };
        *n += add_tap_sums(&x, shape, *kernel, *stride, *pad, s);
    }
    Ok(())
}

/// Measures and corrects the mean shift of every convolution of the int8 `model` (made
/// from the f32 `file`), wave by wave, on the calibration `inputs`; returns the corrected
/// model and the fix (to apply to other int8 models of `file`, e.g. with float layers).
pub fn correct(
    file: &ModelFile,
    model: &ModelFile,
    inputs: &[RgbImage],
    threads: usize,
    tick: &mut dyn FnMut(),
) -> Result<(ModelFile, BiasFix)> {
    let graph = file.config.graph();
    let norm = norm_of(file);
    let convs: Vec<usize> = (0..graph.ops.len())
        .filter(|&i| matches!(graph.ops[i], Op::Conv { .. }))
        .collect();
    let wave = waves(graph);
    let float: Vec<bool> = graph
        .ops
        .iter()
        .map(|op| matches!(op, Op::Conv { name, .. } if model.is_float_layer(name)))
        .collect();
    let sized = |i: usize| match &graph.ops[i] {
        Op::Conv { cin, kernel, .. } => (vec![0f64; kernel * kernel * cin], 0),
        _ => unreachable!("a convolution"),
    };
    // The f32 side, once.
    let mut f_sums: Vec<(Vec<f64>, usize)> = convs.iter().map(|&i| sized(i)).collect();
    {
        let mut e = all_values_engine(file, threads)?;
        for img in inputs {
            run_on(&mut e, img, norm)?;
            add_sums(&e, graph, &convs, None, &float, &mut f_sums)?;
            tick();
        }
    }
    let scales = model
        .act_scales()
        .ok_or_else(|| crate::Error::Msg("bias correction of a model without scales".into()))?;
    let weights = |m: &ModelFile, i: usize| -> Result<Vec<f32>> {
        let Op::Conv { name, .. } = &graph.ops[i] else {
            unreachable!("a convolution")
        };
        m.tensor_f32(&format!("{name}.weight"))
    };
    // The int8 weights as the engine multiplies them: `q * w_scale` (f32 layers: themselves).
    let dq = model.dequantize();
    let mut fix = BiasFix::default();
    let mut current = model.clone();
    let last = convs.iter().map(|&i| wave[i]).max().unwrap_or(0);
    for w in 0..=last {
        let ops: Vec<usize> = convs.iter().copied().filter(|&i| wave[i] == w).collect();
        if ops.is_empty() {
            continue;
        }
        let mut q_sums: Vec<(Vec<f64>, usize)> = ops.iter().map(|&i| sized(i)).collect();
        let mut e = all_values_engine(&current, threads)?;
        // Only the front of the network up to this wave's inputs matters.
        let through = ops.iter().max().copied().unwrap_or(0);
        for img in inputs {
            let (h, w) = (img.height() as usize, img.width() as usize);
            fill_nhwc(img, norm, e.input_mut(h, w)?);
            e.run_through(through)?;
            add_sums(&e, graph, &ops, Some(&scales), &float, &mut q_sums)?;
        }
        let mut step = BiasFix::default();
        for (&i, (sq, n)) in ops.iter().zip(&q_sums) {
            let k = convs.iter().position(|&c| c == i).expect("a convolution");
            let wq = weights(&dq, i)?;
            let wf = weights(file, i)?;
            let (own, input) = channel_shift(&graph.ops[i], &wq, &wf, sq, &f_sums[k].0, *n);
            step.layers.push((i, own, input));
        }
        current = step.apply(&current)?;
        fix.layers.extend(step.layers);
        tick();
    }
    Ok((current, fix))
}

/// Waves [`correct`] runs (its progress ticks: one per image, then one per wave).
pub fn steps(graph: &Graph, images: usize) -> usize {
    let wave = waves(graph);
    let mut used: Vec<usize> = graph
        .ops
        .iter()
        .zip(&wave)
        .filter(|(op, _)| matches!(op, Op::Conv { .. }))
        .map(|(_, &w)| w)
        .collect();
    used.sort();
    used.dedup();
    images + used.len()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::format::{InputNorm, MobileFaceNetConfig, ModelConfig, Precision, SourceInfo};
    use crate::graph::Act;

    /// A deterministic pseudo-random sequence in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Mean over positions of each output channel of a direct NHWC convolution (OIHW
    /// weights, zero padding, no bias): what the tap sums must reproduce.
    fn direct_means(x: &[f32], [h, w, c]: [usize; 3], wt: &[f32], op: &Op) -> Vec<f64> {
        let Op::Conv {
            cout,
            kernel: k,
            stride,
            pad,
            groups,
            ..
        } = op
        else {
            unreachable!()
        };
        let (gi, go) = (c / groups, cout / groups);
        let outs = |n: usize| (n + 2 * pad - k) / stride + 1;
        let (ho, wo) = (outs(h), outs(w));
        let mut m = vec![0f64; *cout];
        for oy in 0..ho {
            for ox in 0..wo {
                for (o, m) in m.iter_mut().enumerate() {
                    for j in 0..gi {
                        let ci = (o / go) * gi + j;
                        for ky in 0..*k {
                            for kx in 0..*k {
                                let iy = (oy * stride + ky) as isize - *pad as isize;
                                let ix = (ox * stride + kx) as isize - *pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let v = x[(iy as usize * w + ix as usize) * c + ci];
                                *m += (v * wt[((o * gi + j) * k + ky) * k + kx]) as f64;
                            }
                        }
                    }
                }
            }
        }
        m.iter().map(|s| s / (ho * wo) as f64).collect()
    }

    fn conv(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Op {
        conv_on(0, cin, cout, kernel, stride, pad, groups)
    }

    fn conv_on(
        input: usize,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Op {
        Op::Conv {
            name: "body.0".into(),
            input,
            cin,
            cout,
            kernel,
            stride,
            pad,
            groups,
            act: Act::None,
        }
    }

    /// The shift from tap sums equals the difference of directly computed output means, for
    /// dense and depthwise, strided and padded convolutions on odd sizes.
    #[test]
    fn shift_from_tap_sums_matches_direct_convolution() {
        // (cin, cout, kernel, stride, pad, groups), input shape
        for ((cin, cout, k, stride, pad, groups), shape) in [
            ((3, 4, 3, 2, 1, 1), [7, 9, 3]),
            ((5, 5, 3, 1, 1, 5), [6, 5, 5]),
            ((4, 2, 1, 1, 0, 1), [3, 4, 4]),
            ((2, 3, 3, 2, 0, 1), [8, 7, 2]),
        ] {
            let op = conv(cin, cout, k, stride, pad, groups);
            let n = shape.iter().product();
            let (xf, xq) = (noise(n, 1), noise(n, 2));
            let nw = cout * cin / groups * k * k;
            let (wf, wq) = (noise(nw, 3), noise(nw, 4));
            let (mut sf, mut sq) = (vec![0f64; k * k * cin], vec![0f64; k * k * cin]);
            let p = add_tap_sums(&xf, shape, k, stride, pad, &mut sf);
            assert_eq!(add_tap_sums(&xq, shape, k, stride, pad, &mut sq), p);
            let (own, input) = channel_shift(&op, &wq, &wf, &sq, &sf, p);
            let (mq, mf) = (
                direct_means(&xq, shape, &wq, &op),
                direct_means(&xf, shape, &wf, &op),
            );
            for c in 0..cout {
                let want = mq[c] - mf[c];
                let got = (own[c] + input[c]) as f64;
                assert!(
                    (want - got).abs() < 1e-5,
                    "{op:?} channel {c}: {got} vs {want}"
                );
                // Own: the rounded weights on the int8 inputs; input: the f32 weights on
                // the input's shift.
                let own_want =
                    direct_means(&xq, shape, &wq, &op)[c] - direct_means(&xq, shape, &wf, &op)[c];
                assert!((own[c] as f64 - own_want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn waves_count_convolutions_from_the_input() {
        let graph = Graph {
            input_channels: 3,
            ops: vec![
                conv(3, 4, 3, 2, 1, 1),       // v1, wave 0
                conv_on(1, 4, 4, 3, 1, 1, 4), // v2, wave 1
                Op::Add {
                    a: 1,
                    b: 2,
                    act: Act::None,
                }, // v3, reads depth 2
                conv_on(1, 4, 4, 1, 1, 0, 1), // v4, wave 1: a sibling of v2
                conv_on(3, 4, 4, 1, 1, 0, 1), // v5, wave 2
            ],
        };
        // The addition reads depths 1 and 2; the entry is for every op, not only convs.
        assert_eq!(waves(&graph), vec![0, 1, 2, 1, 2]);
    }

    /// One 1×1 convolution of an RGB image whose pixels are 0 or 255 (with this
    /// normalisation ±1, exact int8 inputs, so only the weights round). Weights (1, 0.0053,
    /// 0.25) have the per-channel int8 step 1/127: 0.0053 becomes 1/127 (+0.002574) and 0.25
    /// becomes 32/127 (+0.001969). G is 1 everywhere, B a checkerboard of ±1 (mean 0), so
    /// the mean shift is 0.002574 · 1 + 0.001969 · 0, all of it the layer's own.
    fn one_conv() -> ModelFile {
        let graph = Graph {
            input_channels: 3,
            ops: vec![conv(3, 1, 1, 1, 0, 1)],
        };
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "body.0.weight".into(),
            TensorData::f32(vec![1, 3, 1, 1], vec![1.0, 0.0053, 0.25]),
        );
        tensors.insert("body.0.bias".into(), TensorData::f32(vec![1], vec![0.1]));
        ModelFile {
            config: ModelConfig::MobileFaceNet(MobileFaceNetConfig {
                graph,
                norm: InputNorm {
                    mean: 127.5,
                    std: 127.5,
                },
                input_size: 8,
                embedding: 1,
                dim: 1,
                match_threshold: None,
            }),
            precision: Precision::F32,
            source: SourceInfo {
                file: "one_conv.onnx".into(),
                sha256: "00".repeat(32),
                calibration: None,
            },
            tensors,
            float_layers: Vec::new(),
        }
    }

    fn checkerboard() -> RgbImage {
        RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([255, 255, if (x + y) % 2 == 0 { 255 } else { 0 }])
        })
    }

    /// Mean over positions of the model's one output channel.
    fn mean_output(m: &ModelFile, img: &RgbImage) -> f64 {
        let mut e = all_values_engine(m, 1).unwrap();
        run_on(&mut e, img, norm_of(m)).unwrap();
        let o = e.output(1).unwrap().0;
        o.iter().map(|&v| v as f64).sum::<f64>() / o.len() as f64
    }

    #[test]
    fn corrects_the_known_mean_rounding_error_of_one_conv() {
        let f = one_conv();
        let q = f.quantize_int8(&[1.0 / 127.0, 2.0 / 127.0]).unwrap();
        let img = checkerboard();
        let (fixed, fix) = correct(&f, &q, std::slice::from_ref(&img), 1, &mut || {}).unwrap();
        let want = 1.0 / 127.0 - 0.0053;
        let [(0, own, input)] = &fix.layers[..] else {
            panic!("one layer: {fix:?}")
        };
        assert!(
            (own[0] - want).abs() < 1e-6,
            "own shift {} vs {want}",
            own[0]
        );
        assert!(input[0].abs() < 1e-6, "input shift {}", input[0]);
        let bias = fixed.tensor_f32("body.0.bias").unwrap()[0];
        assert!((bias - (0.1 - want)).abs() < 1e-6, "bias {bias}");
        // The engine agrees: the output (the model's output, computed straight from the
        // i32 accumulators, so not rounded again) is off by the shift before, and only by
        // the bias's own rounding to 1/127² steps after.
        let reference = mean_output(&f, &img);
        let before = mean_output(&q, &img) - reference;
        let after = mean_output(&fixed, &img) - reference;
        assert!((before - want as f64).abs() < 1e-4, "before {before}");
        assert!(after.abs() < 1e-4, "after {after}");
    }

    /// The wave runs stop early: after `run_through(0)` on a second image, the first conv's
    /// output is that image's and the second conv's still the first image's.
    #[test]
    fn run_through_computes_only_the_front() {
        let mut f = one_conv();
        let ModelConfig::MobileFaceNet(c) = &mut f.config else {
            unreachable!()
        };
        c.graph.ops.push(conv_on(1, 1, 1, 1, 1, 0, 1));
        c.embedding = 2;
        let Op::Conv { name, .. } = &mut c.graph.ops[1] else {
            unreachable!()
        };
        *name = "body.1".into();
        f.tensors.insert(
            "body.1.weight".into(),
            TensorData::f32(vec![1, 1, 1, 1], vec![2.0]),
        );
        f.tensors
            .insert("body.1.bias".into(), TensorData::f32(vec![1], vec![0.5]));
        let (a, b) = (
            checkerboard(),
            RgbImage::from_pixel(8, 8, image::Rgb([0, 0, 0])),
        );
        let full = |img: &RgbImage| {
            let mut e = all_values_engine(&f, 1).unwrap();
            run_on(&mut e, img, norm_of(&f)).unwrap();
            (
                e.output(1).unwrap().0.to_vec(),
                e.output(2).unwrap().0.to_vec(),
            )
        };
        let ((_, a2), (b1, _)) = (full(&a), full(&b));
        let mut e = all_values_engine(&f, 1).unwrap();
        run_on(&mut e, &a, norm_of(&f)).unwrap();
        fill_nhwc(&b, norm_of(&f), e.input_mut(8, 8).unwrap());
        e.run_through(0).unwrap();
        assert_eq!(e.output(1).unwrap().0, &b1[..]);
        assert_eq!(e.output(2).unwrap().0, &a2[..]);
        assert_ne!(b1, full(&a).0, "the two images differ at the first conv");
    }

    /// A layer the float-layer search keeps in f32 has no rounded weights: applying the fix
    /// to such a model leaves its bias alone (its own part is dropped).
    #[test]
    fn a_float_layer_keeps_only_the_input_part() {
        let f = one_conv();
        let fix = BiasFix {
            layers: vec![(0, vec![0.25], vec![0.5])],
        };
        let scales = [1.0 / 127.0, 2.0 / 127.0];
        let int8 = fix.apply(&f.quantize_int8(&scales).unwrap()).unwrap();
        let mixed = f
            .quantize_int8_mixed(&scales, &["body.0".to_string()])
            .unwrap();
        let mixed = fix.apply(&mixed).unwrap();
        assert_eq!(int8.tensor_f32("body.0.bias").unwrap(), vec![0.1 - 0.75]);
        assert_eq!(mixed.tensor_f32("body.0.bias").unwrap(), vec![0.1 - 0.5]);
    }
}
