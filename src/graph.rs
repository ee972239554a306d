//! The layer program a model file carries: a topologically ordered list of fused ops over
//! numbered values. The converter lowers an ONNX graph to this form (BatchNorm and scalar
//! multiplies folded into the convolutions, activations fused into their producer), and the
//! runtime executes it. Keeping the wiring as data rather than code is what lets every
//! variant of a family (SCRFD 500M/2.5G/10G, kps and bnkps exports, MobileFaceNet
//! PReLU/ReLU6) load without a code change; the family modules (`models/`) own what the
//! outputs mean.

use serde::{Deserialize, Serialize};

/// Index of a value: 0 is the network input, op `i` produces value `i + 1`.
pub type ValueId = usize;

/// An activation fused into the op that produces its input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Act {
    None,
    Relu,
    /// `min(max(x, min), max)`; ReLU6 is `Clip { min: 0, max: 6 }`.
    Clip {
        min: f32,
        max: f32,
    },
    /// Per-channel slope for negative inputs, stored as the tensor `<op name>.alpha`.
    PRelu,
}

/// One fused operation. Convolutions own their tensors `<name>.weight` (OIHW),
/// `<name>.bias` and, with PReLU, `<name>.alpha`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Conv {
        name: String,
        input: ValueId,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        act: Act,
    },
    /// Element-wise sum of two values of the same shape, then an activation
    /// (`Act::PRelu` is not allowed here: it has no tensor to own).
    Add { a: ValueId, b: ValueId, act: Act },
    /// Nearest-neighbour 2× upsampling (the FPN top-down path).
    Upsample2x { input: ValueId },
    /// 2×2 max pooling with stride 2.
    MaxPool2x { input: ValueId },
    /// 2×2 average pooling with stride 2.
    AvgPool2x { input: ValueId },
    /// The mean of each channel over the whole map: an `h×w×c` value becomes `1×1×c`
    /// (the squeeze of a squeeze-excitation block).
    GlobalAvgPool { input: ValueId },
    /// `input × sigmoid(gate)`, the gate being a `1×1×c` value broadcast over the map (the
    /// excitation of a squeeze-excitation block). The sigmoid lives here, not as an
    /// activation, so that no convolution kernel needs a sigmoid epilogue.
    ChannelGate { input: ValueId, gate: ValueId },
}

impl Op {
    /// The values this op reads.
    pub fn inputs(&self) -> Vec<ValueId> {
        match self {
            Op::Conv { input, .. }
            | Op::Upsample2x { input }
            | Op::MaxPool2x { input }
            | Op::AvgPool2x { input }
            | Op::GlobalAvgPool { input } => vec![*input],
            Op::Add { a, b, .. } => vec![*a, *b],
            Op::ChannelGate { input, gate } => vec![*input, *gate],
        }
    }

    /// Output spatial stride relative to this op's (first) input.
    pub fn stride_factor(&self) -> (usize, usize) {
        // (multiply, divide)
        match self {
            Op::Conv { stride, .. } => (*stride, 1),
            Op::MaxPool2x { .. } | Op::AvgPool2x { .. } => (2, 1),
            Op::Upsample2x { .. } => (1, 2),
            Op::Add { .. } | Op::ChannelGate { .. } => (1, 1),
            // The map collapses to one pixel: no stride relative to the input means anything.
            Op::GlobalAvgPool { .. } => (0, 1),
        }
    }
}

/// A layer program with its input channel count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub input_channels: usize,
    pub ops: Vec<Op>,
}

impl Graph {
    /// Number of values (the input plus one per op).
    pub fn num_values(&self) -> usize {
        self.ops.len() + 1
    }

    /// Channel count of every value.
    pub fn channels(&self) -> Vec<usize> {
        let mut ch = vec![self.input_channels];
        for op in &self.ops {
            let c = match op {
                Op::Conv { cout, .. } => *cout,
                Op::Add { a, .. } => ch[*a],
                Op::Upsample2x { input }
                | Op::MaxPool2x { input }
                | Op::AvgPool2x { input }
                | Op::GlobalAvgPool { input }
                | Op::ChannelGate { input, .. } => ch[*input],
            };
            ch.push(c);
        }
        ch
    }

    /// Spatial stride of every value relative to the network input (e.g. 8 for the first
    /// SCRFD level), or `None` where a value is finer than the input.
    pub fn strides(&self) -> Vec<Option<usize>> {
        let mut st: Vec<Option<usize>> = vec![Some(1)];
        for op in &self.ops {
            let base = st[op.inputs()[0]];
            let (mul, div) = op.stride_factor();
            st.push(base.and_then(|s| {
                let s = s * mul;
                (s > 0 && s % div == 0).then_some(s / div)
            }));
        }
        st
    }

    /// For every value, the index of the last op that reads it (so buffers can be freed),
    /// with `usize::MAX` for values that must be kept (the outputs).
    pub fn last_uses(&self, keep: &[ValueId]) -> Vec<usize> {
        let mut last = vec![0usize; self.num_values()];
        for (i, op) in self.ops.iter().enumerate() {
            for v in op.inputs() {
                last[v] = i;
            }
        }
        for &k in keep {
            last[k] = usize::MAX;
        }
        last
    }

    /// Checks that every op reads only earlier values, that channel counts agree and that
    /// each op's own numbers are within [`crate::limits::check_op`]'s bounds.
    pub fn validate(&self) -> Result<(), String> {
        let mut ch = vec![self.input_channels];
        for (i, op) in self.ops.iter().enumerate() {
            crate::limits::check_op(i, op)?;
            let produced = i + 1;
            for v in op.inputs() {
                if v >= produced {
                    return Err(format!("op {i} reads value {v} before it is produced"));
                }
            }
            let c = match op {
                Op::Conv {
                    name,
                    input,
                    cin,
                    cout,
                    groups,
                    kernel,
                    stride,
                    ..
                } => {
                    if ch[*input] != *cin {
                        return Err(format!(
                            "conv {name} expects {cin} input channels, value {input} has {}",
                            ch[*input]
                        ));
                    }
                    if *groups == 0 || cin % groups != 0 || cout % groups != 0 {
                        return Err(format!(
                            "conv {name}: groups {groups} do not divide {cin}->{cout}"
                        ));
                    }
                    if *kernel == 0 || *stride == 0 {
                        return Err(format!("conv {name}: kernel {kernel}, stride {stride}"));
                    }
                    *cout
                }
                Op::Add { a, b, act } => {
                    if ch[*a] != ch[*b] {
                        return Err(format!("add op {i}: {} vs {} channels", ch[*a], ch[*b]));
                    }
                    if *act == Act::PRelu {
                        return Err(format!("add op {i}: PReLU needs a convolution to own it"));
                    }
                    ch[*a]
                }
                Op::ChannelGate { input, gate } => {
                    if ch[*input] != ch[*gate] {
                        return Err(format!(
                            "channel gate op {i}: {} channels gated by {}",
                            ch[*input], ch[*gate]
                        ));
                    }
                    ch[*input]
                }
                Op::Upsample2x { input }
                | Op::MaxPool2x { input }
                | Op::AvgPool2x { input }
                | Op::GlobalAvgPool { input } => ch[*input],
            };
            ch.push(c);
        }
        Ok(())
    }
}
