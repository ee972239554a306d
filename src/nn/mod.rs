//! Executes a layer program (`graph::Graph`) in f32 on candle tensors. This is the reference
//! path the reduced-precision ones are measured against: dense convolutions use candle's
//! conv2d, depthwise ones our `DepthwiseConv` op, and the model file's weights are turned
//! into tensors once, at load.

pub mod depthwise;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::format::ModelFile;
use crate::graph::{Act, Graph, Op, ValueId};
use depthwise::DepthwiseConv;

enum Layer {
    Conv {
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        pad: usize,
        groups: usize,
        alpha: Option<Tensor>,
        act: Act,
    },
    Depthwise {
        op: DepthwiseConv,
        alpha: Option<Tensor>,
        act: Act,
    },
    Add {
        act: Act,
    },
    Upsample2x,
    MaxPool2x,
    AvgPool2x,
    GlobalAvgPool,
    ChannelGate,
}

/// A network ready to run: the layer program and its weights as tensors.
pub struct Network {
    graph: Graph,
    layers: Vec<Layer>,
}

fn apply_act(x: Tensor, act: Act, alpha: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match act {
        Act::None => Ok(x),
        Act::Relu => x.relu(),
        Act::Clip { min, max } => x.clamp(min, max),
        Act::PRelu => {
            let alpha = alpha.expect("PReLU layers carry their slopes");
            let pos = x.relu()?;
            let neg = x.minimum(0f32)?.broadcast_mul(alpha)?;
            pos + neg
        }
    }
}

impl Network {
    /// Builds the network from a model file's layer program and tensors.
    pub fn new(file: &ModelFile) -> Result<Self> {
        let dev = Device::Cpu;
        let graph = file.config.graph().clone();
        let mut layers = Vec::with_capacity(graph.ops.len());
        for op in &graph.ops {
            let layer = match op {
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
                    let w = file.tensor_f32(&format!("{name}.weight"))?;
                    let b = file.tensor_f32(&format!("{name}.bias"))?;
                    let alpha = match act {
                        Act::PRelu => Some(Tensor::from_vec(
                            file.tensor_f32(&format!("{name}.alpha"))?,
                            (1, *cout, 1, 1),
                            &dev,
                        )?),
                        _ => None,
                    };
                    if *groups == *cin && *groups == *cout && *groups > 1 {
                        Layer::Depthwise {
                            op: DepthwiseConv {
                                weight: w,
                                bias: b,
                                channels: *cout,
                                kernel: *kernel,
                                stride: *stride,
                                pad: *pad,
                            },
                            alpha,
                            act: *act,
                        }
                    } else {
                        Layer::Conv {
                            weight: Tensor::from_vec(
                                w,
                                (*cout, cin / groups, *kernel, *kernel),
                                &dev,
                            )?,
                            bias: Tensor::from_vec(b, (1, *cout, 1, 1), &dev)?,
                            stride: *stride,
                            pad: *pad,
                            groups: *groups,
                            alpha,
                            act: *act,
                        }
                    }
                }
                Op::Add { act, .. } => Layer::Add { act: *act },
                Op::Upsample2x { .. } => Layer::Upsample2x,
                Op::MaxPool2x { .. } => Layer::MaxPool2x,
                Op::AvgPool2x { .. } => Layer::AvgPool2x,
                Op::GlobalAvgPool { .. } => Layer::GlobalAvgPool,
                Op::ChannelGate { .. } => Layer::ChannelGate,
            };
            layers.push(layer);
        }
        Ok(Network { graph, layers })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the network on a `1×C×H×W` input and returns the values listed in `outputs`
    /// (in that order). Intermediate values are dropped as soon as nothing reads them.
    pub fn forward(&self, input: &Tensor, outputs: &[ValueId]) -> Result<Vec<Tensor>> {
        let (_, c, _, _) = input.dims4()?;
        if c != self.graph.input_channels {
            return Err(Error::Shape {
                what: "network input".into(),
                expected: format!("{} channels", self.graph.input_channels),
                got: format!("{c} channels"),
            });
        }
        let last = self.graph.last_uses(outputs);
        let mut values: Vec<Option<Tensor>> = vec![None; self.graph.num_values()];
        values[0] = Some(input.clone());
        for (i, (op, layer)) in self.graph.ops.iter().zip(&self.layers).enumerate() {
            let get = |v: ValueId| values[v].as_ref().expect("values are computed in order");
            let y = match (op, layer) {
                (
                    Op::Conv { input, .. },
                    Layer::Conv {
                        weight,
                        bias,
                        stride,
                        pad,
                        groups,
                        alpha,
                        act,
                    },
                ) => {
                    let y = get(*input)
                        .conv2d(weight, *pad, *stride, 1, *groups)?
                        .broadcast_add(bias)?;
                    apply_act(y, *act, alpha.as_ref())?
                }
                (Op::Conv { input, .. }, Layer::Depthwise { op, alpha, act }) => {
                    let y = get(*input).contiguous()?.apply_op1_no_bwd(op)?;
                    apply_act(y, *act, alpha.as_ref())?
                }
                (Op::Add { a, b, .. }, Layer::Add { act }) => {
                    let (ta, tb) = (get(*a), get(*b));
                    if ta.dims() != tb.dims() {
                        return Err(Error::Shape {
                            what: format!("addition at layer {i}"),
                            expected: format!("{:?}", ta.dims()),
                            got: format!("{:?} (input size not a multiple of 32?)", tb.dims()),
                        });
                    }
                    apply_act((ta + tb)?, *act, None)?
                }
                (Op::Upsample2x { input }, Layer::Upsample2x) => {
                    let x = get(*input);
                    let (_, _, h, w) = x.dims4()?;
                    x.upsample_nearest2d(h * 2, w * 2)?
                }
                (Op::MaxPool2x { input }, Layer::MaxPool2x) => get(*input).max_pool2d(2)?,
                (Op::AvgPool2x { input }, Layer::AvgPool2x) => get(*input).avg_pool2d(2)?,
                (Op::GlobalAvgPool { input }, Layer::GlobalAvgPool) => {
                    get(*input).mean_keepdim(3)?.mean_keepdim(2)?
                }
                (Op::ChannelGate { input, gate }, Layer::ChannelGate) => {
                    let (x, g) = (get(*input), get(*gate));
                    let (_, c, gh, gw) = g.dims4()?;
                    if (gh, gw) != (1, 1) || x.dim(1)? != c {
                        return Err(Error::Shape {
                            what: format!("channel gate at layer {i}"),
                            expected: format!("a 1x1x{} gate", x.dim(1)?),
                            got: format!("{gh}x{gw}x{c}"),
                        });
                    }
                    // sigmoid(g) = 1 / (1 + exp(-g))
                    let s = (g.neg()?.exp()? + 1.0)?.recip()?;
                    x.broadcast_mul(&s)?
                }
                _ => unreachable!("layers are built from the ops in order"),
            };
            values[i + 1] = Some(y);
            for v in op.inputs() {
                if last[v] == i {
                    values[v] = None;
                }
            }
        }
        outputs
            .iter()
            .map(|&v| {
                values[v]
                    .clone()
                    .ok_or_else(|| Error::Msg(format!("value {v} was not kept")))
            })
            .collect()
    }
}
