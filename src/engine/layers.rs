//! The layers of the fast engine with their weights packed once, at load, into the kernels'
//! layouts, and how one layer computes a range of its output rows. A layer never allocates
//! while it runs: the caller hands it the input, the output rows and an im2col scratch.

use crate::error::{Error, Result};
use crate::format::ModelFile;
use crate::graph::{Act, Op};
use crate::kernels::{
    self, pack_conv_f32, pack_dw, pack_pw_f32, ConvShape, EpiF32, Kernels, PackedDwF32, PackedF32,
};

/// How a convolution is computed.
pub(crate) enum ConvWeights {
    /// 1×1, stride 1, no padding, dense: a GEMM over pixels straight on the NHWC input.
    Pointwise(PackedF32),
    /// Any other dense convolution: im2col of one output row at a time + the GEMM.
    Dense(PackedF32),
    /// One filter per channel.
    Depthwise(PackedDwF32),
}

pub(crate) struct ConvLayer {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub weights: ConvWeights,
    pub bias: Vec<f32>,
    pub alpha: Vec<f32>,
    pub act: Act,
}

pub(crate) enum Layer {
    Conv(ConvLayer),
    Add,
    Upsample2x,
    MaxPool2x,
    AvgPool2x,
}

/// The kernels' fused activation for a graph activation, plus a clamp to apply afterwards
/// when the kernels cannot fuse it (a `Clip` whose lower bound is not 0).
pub(crate) fn kernel_act(act: Act, alpha: &[f32]) -> (kernels::Act<'_>, Option<(f32, f32)>) {
    match act {
        Act::None => (kernels::Act::None, None),
        Act::Relu => (kernels::Act::Relu, None),
        Act::Clip { min: 0.0, max } => (kernels::Act::Relu6(max), None),
        Act::Clip { min, max } => (kernels::Act::None, Some((min, max))),
        Act::PRelu => (kernels::Act::PRelu(alpha), None),
    }
}

impl Layer {
    /// Packs the weights of one op of a model file (f32, or f16 widened to f32).
    pub fn new(op: &Op, file: &ModelFile) -> Result<Layer> {
        Ok(match op {
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
                let (cin, cout, k) = (*cin, *cout, *kernel);
                if *pad >= k {
                    return Err(Error::Msg(format!(
                        "conv {name}: padding {pad} >= kernel {k} is not supported by the fast engine"
                    )));
                }
                let w = file.tensor_f32(&format!("{name}.weight"))?;
                let weights = if *groups == 1 && k == 1 && *stride == 1 && *pad == 0 {
                    ConvWeights::Pointwise(pack_pw_f32(&w, cout, cin))
                } else if *groups == 1 {
                    ConvWeights::Dense(pack_conv_f32(&w, cout, cin, k, k))
                } else if *groups == cin && *groups == cout {
                    ConvWeights::Depthwise(pack_dw(&w, cout, k))
                } else {
                    return Err(Error::Msg(format!(
                        "conv {name}: grouped convolution ({groups} groups, {cin}->{cout}) is not supported by the fast engine"
                    )));
                };
                let alpha = if *act == Act::PRelu {
                    file.tensor_f32(&format!("{name}.alpha"))?
                } else {
                    Vec::new()
                };
                Layer::Conv(ConvLayer {
                    cin,
                    cout,
                    kernel: k,
                    stride: *stride,
                    pad: *pad,
                    weights,
                    bias: file.tensor_f32(&format!("{name}.bias"))?,
                    alpha,
                    act: *act,
                })
            }
            Op::Add { .. } => Layer::Add,
            Op::Upsample2x { .. } => Layer::Upsample2x,
            Op::MaxPool2x { .. } => Layer::MaxPool2x,
            Op::AvgPool2x { .. } => Layer::AvgPool2x,
        })
    }
}

/// Shape `[h, w, c]` of an NHWC value.
pub(crate) type Shape = [usize; 3];

impl ConvLayer {
    pub fn shape(&self, input: Shape) -> ConvShape {
        ConvShape {
            h: input[0],
            w: input[1],
            cin: self.cin,
            cout: self.cout,
            kh: self.kernel,
            kw: self.kernel,
            stride: self.stride,
            pad: self.pad,
        }
    }

    /// Computes output rows `[r0, r1)` — pixels for a pointwise conv, image rows otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        k: &Kernels,
        x: &[f32],
        input: Shape,
        r0: usize,
        r1: usize,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let (act, clamp) = kernel_act(self.act, &self.alpha);
        let epi = EpiF32 {
            bias: &self.bias,
            act,
        };
        match &self.weights {
            ConvWeights::Pointwise(w) => (k.pw_f32)(x, w, &epi, r0, r1, out),
            ConvWeights::Dense(w) => {
                k.conv_f32(x, &self.shape(input), w, &epi, r0, r1, scratch, out)
            }
            ConvWeights::Depthwise(w) => (k.dw_f32)(x, &self.shape(input), w, &epi, r0, r1, out),
        }
        if let Some((lo, hi)) = clamp {
            out.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
        }
    }
}

/// `act` applied in place (for additions; PReLU never reaches here).
pub(crate) fn apply_act(act: Act, v: &mut [f32]) {
    match act {
        Act::None | Act::PRelu => {}
        Act::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        Act::Clip { min, max } => v.iter_mut().for_each(|x| *x = x.max(min).min(max)),
    }
}

/// Nearest-neighbour 2× upsampling of `[h, w, c]` into output rows `[y0, y1)` of `[2h, 2w, c]`.
pub(crate) fn upsample2x(x: &[f32], input: Shape, y0: usize, y1: usize, out: &mut [f32]) {
    let [_, w, c] = input;
    let orow = 2 * w * c;
    for y in y0..y1 {
        let src = &x[(y / 2) * w * c..(y / 2 + 1) * w * c];
        let dst = &mut out[(y - y0) * orow..(y - y0 + 1) * orow];
        for (xx, px) in src.chunks_exact(c).enumerate() {
            dst[2 * xx * c..(2 * xx + 1) * c].copy_from_slice(px);
            dst[(2 * xx + 1) * c..(2 * xx + 2) * c].copy_from_slice(px);
        }
    }
}
