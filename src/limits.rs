//! Bounds on everything a model file's metadata can say, checked once when a file is read
//! and by the converter before it writes one, so that no later stage (engine planning, the
//! kernels, SCRFD decoding, letterboxing, embedding) can panic, divide by zero or try to
//! allocate gigabytes because of a number in a file. Every check returns a one-line reason;
//! the callers add the path (reading) or the ONNX node (converting).
//!
//! The limits are far above what any supported model uses (SCRFD and MobileFaceNet have at
//! most 1,280 channels, 7×7 kernels, stride 2, 640×640 or 112×112 inputs) and far below what
//! a 1 GB board could hold. A new op or family adds its arm to [`check_op`] or
//! [`check_config`].

use crate::format::{InputNorm, LivenessConfig, MobileFaceNetConfig, ModelConfig, ScrfdConfig};
use crate::graph::{Act, Graph, Op, ValueId};

/// Largest side of a model's fixed input (recogniser crop, detector export size).
pub const MAX_INPUT_SIDE: usize = 4096;
/// Largest recogniser crop side: an embedding is computed for every face of every frame.
pub const MAX_RECOGNISER_INPUT: usize = 1024;
/// Most channels of any value (also bounds an embedding's dimension).
pub const MAX_CHANNELS: usize = 8192;
/// Largest convolution kernel side.
pub const MAX_KERNEL: usize = 16;
/// Largest convolution stride.
pub const MAX_STRIDE: usize = 8;
/// Most ops in a layer program.
pub const MAX_OPS: usize = 4096;
/// Largest stride of a value relative to the network input.
pub const MAX_TOTAL_STRIDE: usize = 1 << 16;
/// Most elements (f32) of one activation at the model's own input size: 32 M floats are
/// 128 MB, a quarter of a Pi's memory.
pub const MAX_ACTIVATION: usize = 32 << 20;
/// Most anchors per SCRFD cell.
pub const MAX_ANCHORS: usize = 16;
/// Most SCRFD output levels.
pub const MAX_LEVELS: usize = 8;
/// Largest magnitude of a normalisation mean, standard deviation or clip bound.
pub const MAX_NORM: f32 = 1.0e4;
/// Smallest normalisation standard deviation (dividing by less would blow pixels up).
pub const MIN_STD: f32 = 1.0e-3;
/// The input size a detector without a fixed export size is checked at (its default).
const DEFAULT_DETECTOR_SIDE: usize = 640;

type Check = std::result::Result<(), String>;

/// One op's own numbers (the wiring between ops is [`Graph::validate`]'s job).
pub fn check_op(i: usize, op: &Op) -> Check {
    match op {
        Op::Conv {
            name,
            cin,
            cout,
            kernel,
            stride,
            pad,
            groups,
            act,
            ..
        } => {
            let at = || format!("conv {name} (op {i})");
            for (what, v) in [("input channels", cin), ("output channels", cout)] {
                if !(1..=MAX_CHANNELS).contains(v) {
                    return Err(format!(
                        "{}: {v} {what}, expected 1 to {MAX_CHANNELS}",
                        at()
                    ));
                }
            }
            if !(1..=MAX_KERNEL).contains(kernel) {
                return Err(format!(
                    "{}: kernel {kernel}, expected 1 to {MAX_KERNEL}",
                    at()
                ));
            }
            if !(1..=MAX_STRIDE).contains(stride) {
                return Err(format!(
                    "{}: stride {stride}, expected 1 to {MAX_STRIDE}",
                    at()
                ));
            }
            // A pad as wide as the kernel makes outputs that see nothing but padding.
            if pad >= kernel {
                return Err(format!(
                    "{}: pad {pad} for kernel {kernel}, expected less than the kernel",
                    at()
                ));
            }
            if *groups == 0 || cin % groups != 0 || cout % groups != 0 {
                return Err(format!(
                    "{}: groups {groups} do not divide {cin}->{cout}",
                    at()
                ));
            }
            check_act(act).map_err(|e| format!("{}: {e}", at()))
        }
        Op::Add { act, .. } => {
            if *act == Act::PRelu {
                return Err(format!("add op {i}: PReLU needs a convolution to own it"));
            }
            check_act(act).map_err(|e| format!("add op {i}: {e}"))
        }
        Op::Upsample2x { .. }
        | Op::MaxPool2x { .. }
        | Op::AvgPool2x { .. }
        | Op::GlobalAvgPool { .. }
        | Op::ChannelGate { .. } => Ok(()),
    }
}

/// A fused activation's parameters: `f32::clamp` panics on `min > max` or a NaN bound.
pub fn check_act(act: &Act) -> Check {
    match act {
        Act::Clip { min, max } => {
            let ok = |v: f32| v.is_finite() && v.abs() <= MAX_NORM;
            if !(ok(*min) && ok(*max) && min <= max) {
                return Err(format!(
                    "clip [{min}, {max}]: expected finite bounds with min <= max"
                ));
            }
            Ok(())
        }
        Act::None | Act::Relu | Act::PRelu => Ok(()),
    }
}

/// The graph as a whole: its size, and that no value is finer than the input (so repeated
/// upsampling cannot grow a buffer past the input size).
pub fn check_graph(g: &Graph) -> Check {
    if !(1..=MAX_CHANNELS).contains(&g.input_channels) {
        return Err(format!(
            "{} input channels, expected 1 to {MAX_CHANNELS}",
            g.input_channels
        ));
    }
    if g.ops.is_empty() || g.ops.len() > MAX_OPS {
        return Err(format!("{} ops, expected 1 to {MAX_OPS}", g.ops.len()));
    }
    g.validate()?;
    // `Graph::strides` multiplies without checks; walk it here with them first.
    let mut st: Vec<usize> = vec![1];
    for (i, op) in g.ops.iter().enumerate() {
        let (mul, div) = op.stride_factor();
        let s = st[op.inputs()[0]]
            .checked_mul(mul)
            .filter(|s| *s <= MAX_TOTAL_STRIDE);
        match s {
            Some(s) if s % div == 0 => st.push(s / div),
            Some(_) => {
                return Err(format!(
                    "op {i}: its output is finer than the network input"
                ))
            }
            None => return Err(format!("op {i}: a total stride above {MAX_TOTAL_STRIDE}")),
        }
    }
    Ok(())
}

/// The input normalisation: `(x - mean) / std` must stay finite.
pub fn check_norm(n: &InputNorm) -> Check {
    let ok = n.mean.is_finite()
        && n.mean.abs() <= MAX_NORM
        && n.std.is_finite()
        && (MIN_STD..=MAX_NORM).contains(&n.std);
    if !ok {
        return Err(format!(
            "input normalisation mean {} std {}: expected |mean| <= {MAX_NORM} and std in [{MIN_STD}, {MAX_NORM}]",
            n.mean, n.std
        ));
    }
    Ok(())
}

/// Spatial size of every value for an `h × w` input, in the engine's arithmetic, or an error
/// where an op would not fit (a kernel wider than its padded input, pooling a 1-pixel map,
/// adding maps of different sizes) or an activation would exceed [`MAX_ACTIVATION`].
pub fn check_sizes(g: &Graph, h: usize, w: usize) -> std::result::Result<Vec<[usize; 2]>, String> {
    let channels = g.channels();
    let mut s: Vec<[usize; 2]> = vec![[h, w]];
    for (i, op) in g.ops.iter().enumerate() {
        let [ih, iw] = s[op.inputs()[0]];
        let o = match op {
            Op::Conv {
                name,
                kernel,
                stride,
                pad,
                ..
            } => {
                if ih + 2 * pad < *kernel || iw + 2 * pad < *kernel {
                    return Err(format!(
                        "conv {name} (op {i}): {iw}x{ih} input is smaller than its {kernel}x{kernel} kernel at a {w}x{h} network input"
                    ));
                }
                let f = |x: usize| (x + 2 * pad - kernel) / stride + 1;
                [f(ih), f(iw)]
            }
            Op::Add { a, b, .. } => {
                if s[*a] != s[*b] {
                    return Err(format!(
                        "add op {i}: {:?} plus {:?} at a {w}x{h} network input",
                        s[*a], s[*b]
                    ));
                }
                [ih, iw]
            }
            Op::Upsample2x { .. } => [ih.saturating_mul(2), iw.saturating_mul(2)],
            Op::MaxPool2x { .. } | Op::AvgPool2x { .. } => {
                if ih < 2 || iw < 2 {
                    return Err(format!(
                        "pooling op {i}: {iw}x{ih} input at a {w}x{h} network input"
                    ));
                }
                [ih / 2, iw / 2]
            }
            Op::GlobalAvgPool { .. } => [1, 1],
            Op::ChannelGate { gate, .. } => {
                if s[*gate] != [1, 1] {
                    return Err(format!(
                        "channel gate op {i}: the gate is a {:?} map at a {w}x{h} network input, expected 1x1",
                        s[*gate]
                    ));
                }
                [ih, iw]
            }
        };
        let elems = o[0].saturating_mul(o[1]).saturating_mul(channels[i + 1]);
        if elems > MAX_ACTIVATION {
            return Err(format!(
                "op {i}: a {}x{}x{} activation at a {w}x{h} network input (more than {MAX_ACTIVATION} values)",
                o[1], o[0], channels[i + 1]
            ));
        }
        s.push(o);
    }
    Ok(s)
}

/// A value index the config names: produced by the program, and not the input.
fn check_value(g: &Graph, v: ValueId, what: &str) -> Check {
    if v == 0 || v >= g.num_values() {
        return Err(format!(
            "{what} is value {v}, expected 1 to {}",
            g.num_values() - 1
        ));
    }
    Ok(())
}

/// Everything a model file's config says, per family.
pub fn check_config(c: &ModelConfig) -> Check {
    check_graph(c.graph())?;
    match c {
        ModelConfig::Scrfd(s) => check_scrfd(s),
        ModelConfig::MobileFaceNet(m) => check_mobilefacenet(m),
        ModelConfig::Liveness(l) => check_liveness(l),
    }
}

fn check_scrfd(c: &ScrfdConfig) -> Check {
    let g = &c.graph;
    check_norm(&c.norm)?;
    // The frame is filled as RGB.
    if g.input_channels != 3 {
        return Err(format!(
            "{} input channels, expected 3 (RGB)",
            g.input_channels
        ));
    }
    let a = c.anchors_per_cell;
    if !(1..=MAX_ANCHORS).contains(&a) {
        return Err(format!("{a} anchors per cell, expected 1 to {MAX_ANCHORS}"));
    }
    if c.levels.is_empty() || c.levels.len() > MAX_LEVELS {
        return Err(format!(
            "{} output levels, expected 1 to {MAX_LEVELS}",
            c.levels.len()
        ));
    }
    let channels = g.channels();
    let strides = g.strides();
    for (i, l) in c.levels.iter().enumerate() {
        let parts = [("scores", Some(l.score), 1), ("boxes", Some(l.bbox), 4)];
        for (what, v, k) in parts.into_iter().chain([("keypoints", l.kps, 10)]) {
            let Some(v) = v else { continue };
            let what = format!("level {i} {what}");
            check_value(g, v, &what)?;
            if channels[v] != a * k {
                return Err(format!(
                    "{what} (value {v}) has {} channels, expected {a} anchors x {k}",
                    channels[v]
                ));
            }
            if strides[v] != Some(l.stride) {
                return Err(format!(
                    "{what} (value {v}) is at stride {:?}, the level says {}",
                    strides[v], l.stride
                ));
            }
        }
    }
    let max_stride = c.levels.iter().map(|l| l.stride).max().unwrap_or(1);
    let [w, h] = c
        .export_size
        .unwrap_or([DEFAULT_DETECTOR_SIDE, DEFAULT_DETECTOR_SIDE]);
    for side in [w, h] {
        if !(1..=MAX_INPUT_SIDE).contains(&side) || side % max_stride != 0 {
            return Err(format!(
                "export size {w}x{h}: expected sides of 1 to {MAX_INPUT_SIDE}, multiples of the largest stride {max_stride}"
            ));
        }
    }
    check_sizes(g, h, w)?;
    Ok(())
}

/// What the recogniser and the liveness classifier share: an RGB crop of `s × s` pixels,
/// normalised by `norm`.
fn check_crop_input(g: &Graph, norm: &InputNorm, s: usize) -> Check {
    check_norm(norm)?;
    if g.input_channels != 3 {
        return Err(format!(
            "{} input channels, expected 3 (RGB)",
            g.input_channels
        ));
    }
    if !(1..=MAX_RECOGNISER_INPUT).contains(&s) {
        return Err(format!(
            "input size {s}, expected 1 to {MAX_RECOGNISER_INPUT}"
        ));
    }
    Ok(())
}

fn check_mobilefacenet(c: &MobileFaceNetConfig) -> Check {
    let g = &c.graph;
    let s = c.input_size;
    check_crop_input(g, &c.norm, s)?;
    check_value(g, c.embedding, "the embedding")?;
    let sizes = check_sizes(g, s, s)?;
    let ch = g.channels()[c.embedding];
    if sizes[c.embedding] != [1, 1] || ch != c.dim {
        return Err(format!(
            "the embedding (value {}) is a {:?} map of {ch} channels at a {s}x{s} input; the config says a 1x1 map of dim {}",
            c.embedding, sizes[c.embedding], c.dim
        ));
    }
    if let Some(t) = c.match_threshold {
        if !(t.is_finite() && t > 0.0 && t < 1.0) {
            return Err(format!("match threshold {t}, expected a cosine in (0, 1)"));
        }
    }
    Ok(())
}

/// Most classes of an anti-spoofing model (live plus the attack types).
pub const MAX_LIVENESS_CLASSES: usize = 16;
/// Largest liveness crop, in multiples of the detector box's longer side.
pub const MAX_CROP_SCALE: f32 = 4.0;

fn check_liveness(c: &LivenessConfig) -> Check {
    let g = &c.graph;
    let s = c.input_size;
    check_crop_input(g, &c.norm, s)?;
    if !(c.crop_scale.is_finite() && (1.0..=MAX_CROP_SCALE).contains(&c.crop_scale)) {
        return Err(format!(
            "crop scale {}, expected 1 to {MAX_CROP_SCALE}",
            c.crop_scale
        ));
    }
    check_value(g, c.logits, "the logits")?;
    let n = c.classes.len();
    if !(2..=MAX_LIVENESS_CLASSES).contains(&n) {
        return Err(format!(
            "{n} classes, expected live and 1 to {} attack classes",
            MAX_LIVENESS_CLASSES - 1
        ));
    }
    let sizes = check_sizes(g, s, s)?;
    let ch = g.channels()[c.logits];
    if sizes[c.logits] != [1, 1] || ch != n {
        return Err(format!(
            "the logits (value {}) are a {:?} map of {ch} channels at a {s}x{s} input; the config names {n} classes",
            c.logits, sizes[c.logits]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(input: ValueId, cin: usize, cout: usize, kernel: usize, stride: usize) -> Op {
        Op::Conv {
            name: format!("c{input}"),
            input,
            cin,
            cout,
            kernel,
            stride,
            pad: kernel / 2,
            groups: 1,
            act: Act::Relu,
        }
    }

    #[test]
    fn clip_bounds_must_be_ordered_and_finite() {
        assert!(check_act(&Act::Clip { min: 0.0, max: 6.0 }).is_ok());
        assert!(check_act(&Act::Clip { min: 2.0, max: 2.0 }).is_ok());
        for (min, max) in [(6.0, 0.0), (f32::NAN, 6.0), (0.0, f32::INFINITY)] {
            assert!(check_act(&Act::Clip { min, max }).is_err(), "{min} {max}");
        }
    }

    #[test]
    fn a_long_chain_of_strides_is_refused_without_overflow() {
        // 8^30 overflows a usize: the walk must stop at MAX_TOTAL_STRIDE, not panic.
        let ops = (0..30).map(|i| conv(i, 8, 8, 3, 8)).collect();
        let g = Graph {
            input_channels: 8,
            ops,
        };
        let e = check_graph(&g).unwrap_err();
        assert!(e.contains("total stride"), "{e}");
    }

    #[test]
    fn sizes_follow_the_conv_formula_and_refuse_what_does_not_fit() {
        let g = Graph {
            input_channels: 3,
            ops: vec![conv(0, 3, 4, 3, 2), Op::MaxPool2x { input: 1 }],
        };
        // (9 + 2 - 3) / 2 + 1 = 5, then pooled to 2.
        assert_eq!(check_sizes(&g, 9, 9).unwrap(), vec![[9, 9], [5, 5], [2, 2]]);
        assert!(check_sizes(&g, 1, 9).unwrap_err().contains("pooling"));
        let wide = Graph {
            input_channels: 3,
            ops: vec![conv(0, 3, MAX_CHANNELS, 1, 1)],
        };
        // 64 × 64 × 8192 = 32 M values is the limit; one row more is refused.
        assert!(check_sizes(&wide, 64, 64).is_ok());
        assert!(check_sizes(&wide, 65, 64)
            .unwrap_err()
            .contains("activation"));
    }
}
