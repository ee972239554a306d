//! The layers of the fast engine with their weights packed once, at load, into the kernels'
//! layouts, and how one layer computes a range of its output rows. A layer never allocates
//! while it runs: the caller hands it the input, the output rows and an im2col scratch.

use crate::error::{Error, Result};
use crate::format::{ModelFile, Precision, TensorValues};
use crate::graph::{Act, Op};
use crate::kernels::{
    self, generic, pack_conv_f16, pack_conv_f32, pack_conv_i8, pack_conv_i8_padded, pack_dw,
    pack_dw_i8, pack_pw_f16, pack_pw_f32, pack_pw_i8, pack_wino_from_conv, pack_wino_from_i8,
    sat_i8, wino_scratch_len, ConvShape, EpiF32, EpiI8, F16Kernels, Kernels, PackedDwF16,
    PackedDwF32, PackedDwI8, PackedF16, PackedF32, PackedI8, PackedWino,
};

/// Pixels per block when a pointwise int8 conv writes f32 (its i32 accumulators go through
/// a per-thread scratch of this many rows).
pub(crate) const PW_F32_BLOCK: usize = 64;

/// Fewest input and output channels for which Winograd beats im2col (measured with
/// `facegate bench --profile`, see [`ConvLayer::use_winograd`]).
const WINO_MIN_CHANNELS: usize = 8;

/// Fewest input channels for which an int8 conv pays for leaving int8
/// ([`ConvLayer::use_winograd_for_i8`]): its input needs an f32 copy and its output maybe a
/// requantisation. Measured under `qemu-aarch64 -cpu cortex-a72` (SCRFD-500M): the 64-channel
/// heads lose 25–30 % of their instructions, the 16-channel convs lose nothing.
const WINO_I8_MIN_CHANNELS: usize = 32;

/// How a convolution is computed.
pub(crate) enum ConvWeights {
    /// 1×1, stride 1, no padding, dense: a GEMM over pixels straight on the NHWC input.
    Pointwise(PackedF32),
    /// Any other dense convolution: im2col of one output row at a time + the GEMM.
    Dense(PackedF32),
    /// A dense 3×3 stride-1 convolution by Winograd F(4,3) (chosen by
    /// [`ConvLayer::use_winograd`] where it is faster than im2col).
    Winograd(PackedWino),
    /// One filter per channel.
    Depthwise(PackedDwF32),
    /// The same three on int8 weights (an int8 model file).
    PointwiseI8(PackedI8),
    DenseI8(PackedI8),
    DepthwiseI8(PackedDwI8),
    /// The same three on f16 weights run with f16 arithmetic (an f16 model file on a CPU
    /// with [`F16Kernels`]; depthwise 3×3 only).
    PointwiseF16(PackedF16),
    DenseF16(PackedF16),
    DepthwiseF16(PackedDwF16),
}

impl ConvWeights {
    pub fn kind(&self) -> &'static str {
        match self {
            ConvWeights::Pointwise(_) => "pw",
            ConvWeights::Dense(_) => "conv",
            ConvWeights::Winograd(_) => "wino",
            ConvWeights::Depthwise(_) => "dw",
            ConvWeights::PointwiseI8(_) => "pw_i8",
            ConvWeights::DenseI8(_) => "conv_i8",
            ConvWeights::DepthwiseI8(_) => "dw_i8",
            ConvWeights::PointwiseF16(_) => "pw_f16",
            ConvWeights::DenseF16(_) => "conv_f16",
            ConvWeights::DepthwiseF16(_) => "dw_f16",
        }
    }
    pub fn is_depthwise(&self) -> bool {
        matches!(
            self,
            ConvWeights::Depthwise(_) | ConvWeights::DepthwiseI8(_) | ConvWeights::DepthwiseF16(_)
        )
    }
    pub fn is_pointwise(&self) -> bool {
        matches!(
            self,
            ConvWeights::Pointwise(_) | ConvWeights::PointwiseI8(_) | ConvWeights::PointwiseF16(_)
        )
    }
}

/// The int8 epilogue of a convolution, prepared at load from the calibrated scales:
/// `acc` (i32, input units × weight units) becomes `(acc + bias_q) * mult` in output units.
pub(crate) struct QuantConv {
    /// `round(bias / (s_in * s_w[c]))`.
    pub bias_q: Vec<i32>,
    /// `s_in * s_w[c] / s_out`.
    pub mult: Vec<f32>,
    /// `s_in * s_w[c]`: accumulator units to real values (for an f32 output).
    pub deq: Vec<f32>,
    /// `Clip { min: 0, max }` as the kernels' ReLU6 bound in output units (`max / s_out`).
    pub relu6_q: f32,
    /// Any other `Clip`, applied on the int8 output.
    pub clamp_q: Option<(i8, i8)>,
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
    /// Present for int8 weights (`None`: f32 weights, also inside an int8 model).
    pub q: Option<QuantConv>,
}

pub(crate) enum Layer {
    Conv(Box<ConvLayer>),
    Add,
    Upsample2x,
    MaxPool2x,
    AvgPool2x,
    GlobalAvgPool,
    ChannelGate,
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

/// The layer of conv `op` with its packed weights and epilogue (`q`: int8 weights).
fn conv_layer(
    op: &Op,
    weights: ConvWeights,
    bias: Vec<f32>,
    alpha: Vec<f32>,
    q: Option<QuantConv>,
) -> Layer {
    let Op::Conv {
        cin,
        cout,
        kernel,
        stride,
        pad,
        act,
        ..
    } = op
    else {
        unreachable!("conv_layer of a conv op")
    };
    Layer::Conv(Box::new(ConvLayer {
        cin: *cin,
        cout: *cout,
        kernel: *kernel,
        stride: *stride,
        pad: *pad,
        weights,
        bias,
        alpha,
        act: *act,
        q,
    }))
}

impl Layer {
    /// Packs the weights of one op of a model file (f32, or f16 widened to f32; int8 with
    /// `scales`, the activation scale of every value) into the layouts of the kernels `k`
    /// that will run it.
    pub fn new(
        op: &Op,
        file: &ModelFile,
        scales: Option<&[f32]>,
        kernels: &Kernels,
    ) -> Result<Layer> {
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
                let alpha = if *act == Act::PRelu {
                    file.tensor_f32(&format!("{name}.alpha"))?
                } else {
                    Vec::new()
                };
                let bias = file.tensor_f32(&format!("{name}.bias"))?;
                // A float layer of a mixed-precision int8 model packs its f32 weights as an
                // f32 model's would; the engine converts at its boundaries.
                if file.precision == Precision::Int8 && !file.is_float_layer(name) {
                    let Op::Conv { input, .. } = op else {
                        unreachable!()
                    };
                    let scales = scales
                        .ok_or_else(|| Error::Msg("int8 model without activation scales".into()))?;
                    let (s_in, s_out) = (scales[*input], scales[file_value_of(file, name)?]);
                    let w = match &file.tensors[&format!("{name}.weight")].values {
                        TensorValues::I8(v) => v,
                        _ => {
                            return Err(Error::Msg(format!("int8 model: {name}.weight is not i8")))
                        }
                    };
                    // The kernels rely on the symmetric scheme: a NEON GEMM sums two
                    // products in i16, exact only while no operand is -128 (our quantiser
                    // clamps to ±127; a file from elsewhere might not).
                    if w.contains(&i8::MIN) {
                        return Err(Error::Msg(format!(
                            "int8 model: {name}.weight holds -128; int8 weights must lie in ±127"
                        )));
                    }
                    let w_scale = file.tensor_f32(&format!("{name}.w_scale"))?;
                    let weights = if *groups == 1 && k == 1 && *stride == 1 && *pad == 0 {
                        ConvWeights::PointwiseI8(pack_pw_i8(w, cout, cin))
                    } else if *groups == 1 {
                        // kernel rows in whole 4-byte groups where the table reads
                        // windows in place
                        let pack = match kernels.window_i8 {
                            Some(_) => pack_conv_i8_padded,
                            None => pack_conv_i8,
                        };
                        ConvWeights::DenseI8(pack(w, cout, cin, k, k))
                    } else if *groups == cin && *groups == cout {
                        ConvWeights::DepthwiseI8(pack_dw_i8(w, cout, k))
                    } else {
                        return Err(Error::Msg(format!(
                            "conv {name}: grouped convolution ({groups} groups, {cin}->{cout}) is not supported by the fast engine"
                        )));
                    };
                    let deq: Vec<f32> = w_scale.iter().map(|&sw| s_in * sw).collect();
                    let q = QuantConv {
                        bias_q: bias
                            .iter()
                            .zip(&deq)
                            .map(|(&b, &d)| (b as f64 / d as f64).round() as i32)
                            .collect(),
                        mult: deq.iter().map(|&d| d / s_out).collect(),
                        relu6_q: match act {
                            Act::Clip { max, .. } => max / s_out,
                            _ => 0.0,
                        },
                        clamp_q: match act {
                            Act::Clip { min, max } if *min != 0.0 => {
                                Some((sat_i8(min / s_out), sat_i8(max / s_out)))
                            }
                            _ => None,
                        },
                        deq,
                    };
                    return Ok(conv_layer(op, weights, bias, alpha, Some(q)));
                }
                if let Some(weights) = f16_weights(file, name, kernels, cin, cout, k, op)? {
                    return Ok(conv_layer(op, weights, bias, alpha, None));
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
                conv_layer(op, weights, bias, alpha, None)
            }
            Op::Add { .. } => Layer::Add,
            Op::Upsample2x { .. } => Layer::Upsample2x,
            Op::MaxPool2x { .. } => Layer::MaxPool2x,
            Op::AvgPool2x { .. } => Layer::AvgPool2x,
            Op::GlobalAvgPool { .. } => Layer::GlobalAvgPool,
            Op::ChannelGate { .. } => Layer::ChannelGate,
        })
    }
}

/// The weights of conv `op` packed as f16 for the f16 kernels, where the file stores them as
/// f16 and `kernels` has f16 arithmetic; `None` otherwise (they are then widened to f32).
/// Depthwise convs other than 3×3 also stay f32: the f16 kernels have only the 3×3 filter.
fn f16_weights(
    file: &ModelFile,
    name: &str,
    kernels: &Kernels,
    cin: usize,
    cout: usize,
    k: usize,
    op: &Op,
) -> Result<Option<ConvWeights>> {
    let Op::Conv {
        stride,
        pad,
        groups,
        ..
    } = op
    else {
        return Ok(None);
    };
    let key = format!("{name}.weight");
    let w = match (&kernels.f16, file.tensors.get(&key).map(|t| &t.values)) {
        (Some(_), Some(TensorValues::F16(w))) => w,
        _ => return Ok(None),
    };
    Ok(if *groups == 1 && k == 1 && *stride == 1 && *pad == 0 {
        Some(ConvWeights::PointwiseF16(pack_pw_f16(w, cout, cin)))
    } else if *groups == 1 {
        Some(ConvWeights::DenseF16(pack_conv_f16(w, cout, cin, k, k)))
    } else if *groups == cin && *groups == cout && k == 3 {
        Some(ConvWeights::DepthwiseF16(pack_dw(w, cout, k)))
    } else {
        None
    })
}

/// The value a named convolution produces.
fn file_value_of(file: &ModelFile, conv: &str) -> Result<usize> {
    file.config
        .graph()
        .ops
        .iter()
        .position(|op| matches!(op, Op::Conv { name, .. } if name == conv))
        .map(|i| i + 1)
        .ok_or_else(|| Error::Msg(format!("conv {conv} not in the layer program")))
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

    /// Elements of scratch (per thread) [`ConvLayer::run`] / [`ConvLayer::run_i8`] need for
    /// this input: an im2col row, or the Winograd tile blocks.
    pub fn scratch_len(&self, input: Shape) -> usize {
        let s = self.shape(input);
        match &self.weights {
            ConvWeights::Dense(_) | ConvWeights::DenseI8(_) | ConvWeights::DenseF16(_) => {
                s.im2col_len()
            }
            ConvWeights::Winograd(_) => wino_scratch_len(&s),
            _ => 0,
        }
    }

    pub fn is_winograd(&self) -> bool {
        matches!(self.weights, ConvWeights::Winograd(_))
    }

    /// Switches an f32 3×3 stride-1 dense conv to Winograd F(4,3) where that is faster
    /// than im2col + GEMM: enough input and output channels that the 36 GEMMs stay
    /// efficient and the transforms are paid back.
    ///
    /// f16 weights too, widened: Winograd's 4× fewer multiplications beat the 2× of f16
    /// arithmetic, and its transforms would lose more precision in f16.
    pub fn use_winograd(&mut self) {
        let s = self.shape([8, 8, self.cin]);
        if !(kernels::wino_supports(&s)
            && self.cin >= WINO_MIN_CHANNELS
            && self.cout >= WINO_MIN_CHANNELS)
        {
            return;
        }
        let packed = match &self.weights {
            ConvWeights::Dense(w) => pack_wino_from_conv(w, self.cin),
            ConvWeights::DenseF16(w) => pack_wino_from_conv(&w.widen(), self.cin),
            _ => return,
        };
        self.weights = ConvWeights::Winograd(packed);
    }

    /// Where the kernel table says so ([`Kernels::wino_for_i8`]: no int8 dot product), turns
    /// an int8 3×3 stride-1 dense conv into a float layer computed by Winograd F(4,3) on its
    /// dequantised weights, `s_in` being its input's activation scale. Its results are the
    /// int8 layer's up to f32 rounding (the same int8 weights and int8 inputs; no rounding to
    /// int8 at the output where f32 is read); the engine converts at its boundaries as for
    /// any float layer. Only with [`WINO_I8_MIN_CHANNELS`] input channels.
    pub fn use_winograd_for_i8(&mut self, k: &Kernels, s_in: f32) {
        let s = self.shape([8, 8, self.cin]);
        let (Some(q), ConvWeights::DenseI8(w)) = (&self.q, &self.weights) else {
            return;
        };
        if !(k.wino_for_i8
            && kernels::wino_supports(&s)
            && self.cin >= WINO_I8_MIN_CHANNELS
            && self.cout >= WINO_MIN_CHANNELS)
        {
            return;
        }
        // deq = s_in * s_w: the real weights are w * s_w
        let scale: Vec<f32> = q.deq.iter().map(|&d| d / s_in).collect();
        self.weights = ConvWeights::Winograd(pack_wino_from_i8(w, self.cin, &scale));
        self.q = None;
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
            ConvWeights::Winograd(w) => {
                k.conv_wino_f32(x, &self.shape(input), w, &epi, r0, r1, scratch, out)
            }
            ConvWeights::Depthwise(w) => (k.dw_f32)(x, &self.shape(input), w, &epi, r0, r1, out),
            ConvWeights::PointwiseF16(w) => (f16_of(k).pw)(x, w, &epi, r0, r1, out),
            ConvWeights::DenseF16(w) => Kernels::conv_f16(
                f16_of(k),
                x,
                &self.shape(input),
                w,
                &epi,
                r0,
                r1,
                scratch,
                out,
            ),
            ConvWeights::DepthwiseF16(w) => {
                (f16_of(k).dw3x3)(x, &self.shape(input), w, &epi, r0, r1, out)
            }
            _ => unreachable!("int8 weights run through run_i8"),
        }
        if let Some((lo, hi)) = clamp {
            out.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
        }
    }

    /// The kernels' epilogue of an int8 conv.
    fn epi_i8(&self) -> EpiI8<'_> {
        let q = self.q.as_ref().expect("int8 layer");
        let act = match self.act {
            Act::None => kernels::Act::None,
            Act::Relu => kernels::Act::Relu,
            Act::Clip { min: 0.0, .. } => kernels::Act::Relu6(q.relu6_q),
            Act::Clip { .. } => kernels::Act::None,
            Act::PRelu => kernels::Act::PRelu(&self.alpha),
        };
        EpiI8 {
            bias: &q.bias_q,
            mult: &q.mult,
            act,
        }
    }

    /// int8 in, int8 out: output rows `[r0, r1)` (pixels for a pointwise conv).
    #[allow(clippy::too_many_arguments)]
    pub fn run_i8(
        &self,
        k: &Kernels,
        x: &[i8],
        input: Shape,
        r0: usize,
        r1: usize,
        scratch: &mut [i8],
        out: &mut [i8],
    ) {
        let epi = self.epi_i8();
        match &self.weights {
            ConvWeights::PointwiseI8(w) => (k.pw_i8)(x, w, &epi, r0, r1, out),
            ConvWeights::DenseI8(w) => {
                k.conv_i8(x, &self.shape(input), w, &epi, r0, r1, scratch, out)
            }
            ConvWeights::DepthwiseI8(w) => (k.dw_i8)(x, &self.shape(input), w, &epi, r0, r1, out),
            _ => unreachable!("f32 weights run through run"),
        }
        if let Some((lo, hi)) = self.q.as_ref().and_then(|q| q.clamp_q) {
            out.iter_mut().for_each(|v| *v = (*v).clamp(lo, hi));
        }
    }

    /// An f32 layer (of an f32 model, or a float layer kept in an int8 model).
    pub fn is_float(&self) -> bool {
        self.q.is_none()
    }

    /// Whether [`ConvLayer::run_i8_f32`] can compute this layer.
    pub fn has_f32_output(&self) -> bool {
        matches!(
            self.weights,
            ConvWeights::PointwiseI8(_) | ConvWeights::DenseI8(_)
        )
    }

    /// i32 scratch (per thread) [`ConvLayer::run_i8_f32`] needs for this input.
    pub fn acc_len(&self, input: Shape) -> usize {
        if self.weights.is_pointwise() {
            PW_F32_BLOCK * self.cout
        } else {
            self.shape(input).ow() * self.cout
        }
    }

    /// int8 in, f32 out (the network's outputs: no rounding to int8 at the end), rows as
    /// [`ConvLayer::run_i8`]: i32 accumulators, then `act((acc + bias_q) * s_in * s_w)`.
    #[allow(clippy::too_many_arguments)]
    pub fn run_i8_f32(
        &self,
        k: &Kernels,
        x: &[i8],
        input: Shape,
        r0: usize,
        r1: usize,
        scratch: &mut [i8],
        acc: &mut [i32],
        out: &mut [f32],
    ) {
        let q = self.q.as_ref().expect("int8 layer");
        let n = self.cout;
        if let Some(gemm) = k.pw_i8_f32 {
            // the kernel fuses the epilogue, in real units
            let (act, clamp) = kernel_act(self.act, &self.alpha);
            let epi = EpiI8 {
                bias: &q.bias_q,
                mult: &q.deq,
                act,
            };
            match &self.weights {
                ConvWeights::PointwiseI8(w) => gemm(x, w, &epi, r0, r1, out),
                ConvWeights::DenseI8(w) => {
                    k.conv_i8_f32(gemm, x, &self.shape(input), w, &epi, r0, r1, scratch, out)
                }
                _ => unreachable!("checked by has_f32_output"),
            }
            if let Some((lo, hi)) = clamp {
                out.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
            }
            return;
        }
        // Plain loops over whole rows, the activation chosen once per row: the compiler
        // vectorises them (a `match` per element would not be).
        let epilogue = |acc: &[i32], out: &mut [f32]| {
            for (a, o) in acc.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
                for ((o, &a), (&b, &d)) in o.iter_mut().zip(a).zip(q.bias_q.iter().zip(&q.deq)) {
                    *o = a.wrapping_add(b) as f32 * d;
                }
                match self.act {
                    Act::None => {}
                    Act::Relu => o.iter_mut().for_each(|x| *x = x.max(0.0)),
                    Act::Clip { min, max } => o.iter_mut().for_each(|x| *x = x.max(min).min(max)),
                    Act::PRelu => {
                        for (x, &al) in o.iter_mut().zip(&self.alpha) {
                            if *x < 0.0 {
                                *x *= al;
                            }
                        }
                    }
                }
            }
        };
        match &self.weights {
            ConvWeights::PointwiseI8(w) => {
                let mut m = r0;
                while m < r1 {
                    let m1 = (m + PW_F32_BLOCK).min(r1);
                    let a = &mut acc[..(m1 - m) * n];
                    (k.pw_i8_acc)(x, w, m, m1, a);
                    epilogue(a, &mut out[(m - r0) * n..(m1 - r0) * n]);
                    m = m1;
                }
            }
            ConvWeights::DenseI8(w) => {
                let s = self.shape(input);
                s.check_io(x.len(), s.cin, r0, r1, out.len(), s.cout);
                let ow = s.ow();
                let run = s.run_i8(w);
                let cols = &mut scratch[..ow * w.k];
                let a = &mut acc[..ow * n];
                for oy in r0..r1 {
                    generic::im2col_pixels(x, &s, run, oy, 0, ow, cols);
                    (k.pw_i8_acc)(cols, w, 0, ow, a);
                    epilogue(a, &mut out[(oy - r0) * ow * n..(oy - r0 + 1) * ow * n]);
                }
            }
            _ => unreachable!("checked by has_f32_output"),
        }
    }
}

/// The f16 kernels of the table that packed f16 weights (the same table runs them).
fn f16_of(k: &Kernels) -> &F16Kernels {
    k.f16
        .as_ref()
        .expect("f16 weights are packed only for a table with f16 kernels")
}

/// `act` applied in place on int8 values of scale `s` (for additions).
pub(crate) fn apply_act_i8(act: Act, s: f32, v: &mut [i8]) {
    match act {
        Act::None | Act::PRelu => {}
        Act::Relu => v.iter_mut().for_each(|x| *x = (*x).max(0)),
        Act::Clip { min, max } => {
            let (lo, hi) = (sat_i8(min / s), sat_i8(max / s));
            v.iter_mut().for_each(|x| *x = (*x).clamp(lo, hi));
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
pub(crate) fn upsample2x<T: Copy>(x: &[T], input: Shape, y0: usize, y1: usize, out: &mut [T]) {
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
