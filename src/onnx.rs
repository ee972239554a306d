//! Reads a published ONNX face model and lowers it to a facegate model file: walks the graph,
//! folds BatchNorm and scalar multiplies into the convolutions, fuses activations, recognises
//! the model family from the graph's structure (never from the file name) and gives the
//! tensors canonical names. A graph that is not a SCRFD, a MobileFaceNet or a MiniFASNet
//! anti-spoofing net is refused with the node and the pattern that did not fit.
//!
//! This lives in the library rather than in `quantize/` because `facegate detect --det X.onnx`
//! converts on the fly, and `quantize` (which needs the runtime for calibration) depends on
//! the library: the dependency can only point one way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::onnx_proto::{self as onnx, NodeProto, TensorProto};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::format::{
    InputNorm, LivenessConfig, MobileFaceNetConfig, ModelConfig, ModelFile, Precision, ScrfdConfig,
    ScrfdLevel, SourceInfo, TensorData,
};
use crate::graph::{Act, Graph, Op, ValueId};
use crate::limits::{MAX_CHANNELS, MAX_INPUT_SIDE, MAX_KERNEL, MAX_STRIDE};

/// SCRFD's input normalisation as InsightFace feeds it.
pub const SCRFD_NORM: InputNorm = InputNorm {
    mean: 127.5,
    std: 128.0,
};
/// The anti-spoofing models' input: RGB / 255.
pub const LIVENESS_NORM: InputNorm = InputNorm {
    mean: 0.0,
    std: 255.0,
};
/// The anti-spoofing models' crop: a square 1.5× the detector box's longer side.
pub const LIVENESS_CROP_SCALE: f32 = 1.5;
/// Largest class count read as an anti-spoofing classifier (a recogniser's embedding has
/// 64 dimensions or more).
const MAX_LIVENESS_CLASSES: usize = 8;

/// InsightFace's recogniser normalisation.
pub const RECOGNISER_NORM: InputNorm = InputNorm {
    mean: 127.5,
    std: 127.5,
};

const SUPPORTED: &str =
    "supported: Conv, BatchNormalization, Relu, Clip, PRelu, Add, Mul by a scalar, \
MaxPool/AveragePool 2x2, Resize (nearest), squeeze-excitation (GlobalAveragePool, Sigmoid, \
Mul by a channel gate), Flatten/Reshape to a vector then MatMul/Gemm linear layers, and the \
output Transpose/Reshape/Sigmoid";

/// Converts the ONNX file at `path` to an f32 model file in memory.
pub fn convert(path: &Path) -> Result<ModelFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let fail = |reason: String| Error::Model {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(fail("empty file (0 bytes), not an ONNX model".into()));
    }
    let model = onnx::ModelProto::decode(bytes.as_slice()).map_err(|e| {
        fail(format!(
            "not a readable ONNX model (truncated or not protobuf: {e})"
        ))
    })?;
    let graph = model
        .graph
        .as_ref()
        .filter(|g| !g.node.is_empty())
        .ok_or_else(|| fail("not an ONNX model: it has no graph nodes".into()))?;
    let sha256 = hex(&Sha256::digest(&bytes));
    let lowered = Lowering::new(graph).run().map_err(fail)?;
    let config = recognise_family(graph, &lowered).map_err(fail)?;
    let tensors = lowered.named_tensors(&config);
    let names = lowered.names_for(&config);
    let mut config = config;
    rename_ops(&mut config, &names);
    let file = ModelFile {
        config,
        precision: Precision::F32,
        source: SourceInfo {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256,
            calibration: None,
        },
        tensors,
        float_layers: Vec::new(),
    };
    // The same checks the runtime makes at load: what it would refuse is refused here.
    file.validate().map_err(fail)?;
    Ok(file)
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Weights of one convolution while the graph is lowered (names are given at the end).
struct ConvWeights {
    weight: Vec<f32>,
    shape: Vec<usize>,
    bias: Vec<f32>,
    alpha: Option<Vec<f32>>,
}

/// How a graph output is derived from a value: the layout ops in between.
#[derive(Clone, Debug)]
struct Formatted {
    value: ValueId,
    sigmoid: bool,
}

struct Lowered {
    ops: Vec<Op>,
    weights: Vec<Option<ConvWeights>>,
    formatted: HashMap<String, Formatted>,
    value_of: HashMap<String, ValueId>,
    input_channels: usize,
    input_hw: Option<[usize; 2]>,
    /// Values read by a linear layer (a MatMul lowered to a 1×1 conv): they must be 1×1
    /// maps, or the conv would not compute the flattened product.
    linear_inputs: Vec<(ValueId, String)>,
}

struct Lowering<'g> {
    graph: &'g onnx::GraphProto,
    constants: HashMap<String, &'g TensorProto>,
    consumers: HashMap<String, usize>,
    out: Lowered,
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a onnx::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

/// An integer attribute the runtime can hold: within `lo..=hi`, or a refusal naming the
/// node (a negative pad read as unsigned would be 2^64 - 5).
fn bounded(
    node: &NodeProto,
    what: &str,
    v: i64,
    lo: usize,
    hi: usize,
) -> std::result::Result<usize, String> {
    match usize::try_from(v) {
        Ok(u) if (lo..=hi).contains(&u) => Ok(u),
        _ => Err(format!(
            "{}: {what} {v}, the runtime supports {lo} to {hi}",
            node_label(node)
        )),
    }
}

fn node_label(node: &NodeProto) -> String {
    let name = if node.name.is_empty() {
        node.output.first().cloned().unwrap_or_default()
    } else {
        node.name.clone()
    };
    format!("node `{name}` ({})", node.op_type)
}

/// The float values of an ONNX tensor (raw little-endian or typed fields).
fn tensor_f32(t: &TensorProto) -> std::result::Result<Vec<f32>, String> {
    use onnx::tensor_proto::DataType;
    // Checked: a hostile file may claim dims whose product overflows.
    let n = t
        .dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| format!("tensor `{}` has an impossible shape {:?}", t.name, t.dims))?;
    let v: Vec<f32> = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if !t.float_data.is_empty() => t.float_data.clone(),
        Ok(DataType::Float) => t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Ok(DataType::Double) if !t.double_data.is_empty() => {
            t.double_data.iter().map(|&x| x as f32).collect()
        }
        Ok(DataType::Double) => t
            .raw_data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => {
            return Err(format!(
                "tensor `{}` has data type {}, expected float",
                t.name, t.data_type
            ))
        }
    };
    if v.len() != n {
        return Err(format!(
            "tensor `{}` holds {} values, its shape {:?} needs {n} (truncated file?)",
            t.name,
            v.len(),
            t.dims
        ));
    }
    Ok(v)
}

impl<'g> Lowering<'g> {
    fn new(graph: &'g onnx::GraphProto) -> Self {
        let mut constants: HashMap<String, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        for node in &graph.node {
            if node.op_type == "Constant" {
                if let (Some(out), Some(t)) = (
                    node.output.first(),
                    attr(node, "value").and_then(|a| a.t.as_ref()),
                ) {
                    constants.insert(out.clone(), t);
                }
            }
        }
        // Shape plumbing does not count as a use of a feature map: only data consumers matter
        // when deciding whether an activation may be fused into its producer.
        let mut consumers = HashMap::new();
        for node in &graph.node {
            if node.op_type == "Shape" {
                continue;
            }
            for i in &node.input {
                *consumers.entry(i.clone()).or_insert(0) += 1;
            }
        }
        for o in &graph.output {
            *consumers.entry(o.name.clone()).or_insert(0) += 1;
        }
        Lowering {
            graph,
            constants,
            consumers,
            out: Lowered {
                ops: Vec::new(),
                weights: Vec::new(),
                formatted: HashMap::new(),
                value_of: HashMap::new(),
                input_channels: 0,
                input_hw: None,
                linear_inputs: Vec::new(),
            },
        }
    }

    fn constant(&self, name: &str, node: &NodeProto) -> std::result::Result<Vec<f32>, String> {
        let t = self.constants.get(name).ok_or_else(|| {
            format!(
                "{}: input `{name}` should be a constant weight tensor",
                node_label(node)
            )
        })?;
        tensor_f32(t).map_err(|e| format!("{}: {e}", node_label(node)))
    }

    fn value(&self, name: &str, node: &NodeProto) -> std::result::Result<ValueId, String> {
        self.out.value_of.get(name).copied().ok_or_else(|| {
            format!(
                "{}: input `{name}` is not a feature map this converter knows ({SUPPORTED})",
                node_label(node)
            )
        })
    }

    fn push(&mut self, op: Op, weights: Option<ConvWeights>, output: &str) -> ValueId {
        self.out.ops.push(op);
        self.out.weights.push(weights);
        let id = self.out.ops.len();
        self.out.value_of.insert(output.to_string(), id);
        id
    }

    /// The op producing `input` if the node may be fused into it: produced by a conv (or an
    /// add, for activations), with no activation yet, and read by nothing else.
    fn fusable(
        &self,
        input: &str,
        node: &NodeProto,
        allow_add: bool,
    ) -> std::result::Result<usize, String> {
        let v = self.value(input, node)?;
        let op_index = v
            .checked_sub(1)
            .ok_or_else(|| format!("{}: applied to the network input", node_label(node)))?;
        let ok_kind = match &self.out.ops[op_index] {
            Op::Conv { act, .. } => *act == Act::None,
            Op::Add { act, .. } => allow_add && *act == Act::None,
            _ => false,
        };
        if !ok_kind {
            return Err(format!(
                "{}: expected to follow a convolution{} without an activation",
                node_label(node),
                if allow_add { " or an addition" } else { "" }
            ));
        }
        if self.consumers.get(input).copied().unwrap_or(0) != 1 {
            return Err(format!(
                "{}: its input `{input}` is also read elsewhere, so it cannot be fused",
                node_label(node)
            ));
        }
        Ok(op_index)
    }

    /// For `Mul(x, sigmoid(g))` (either order) with the sigmoid read by this node alone: the
    /// map's name and the gate value `g`.
    fn gate_of<'n>(&self, node: &'n NodeProto) -> Option<(&'n String, ValueId)> {
        let [a, b] = &node.input[..] else {
            return None;
        };
        let gate = |n: &String| {
            self.out
                .formatted
                .get(n)
                .filter(|f| f.sigmoid && self.consumers.get(n).copied() == Some(1))
                .map(|f| f.value)
        };
        let is_map = |n: &String| self.out.value_of.contains_key(n);
        match (gate(b), gate(a)) {
            (Some(g), _) if is_map(a) => Some((a, g)),
            (_, Some(g)) if is_map(b) => Some((b, g)),
            _ => None,
        }
    }

    fn set_act(&mut self, op_index: usize, new_act: Act) {
        match &mut self.out.ops[op_index] {
            Op::Conv { act, .. } | Op::Add { act, .. } => *act = new_act,
            _ => unreachable!("fusable() only returns convs and adds"),
        }
    }

    fn run(mut self) -> std::result::Result<Lowered, String> {
        let inputs: Vec<&onnx::ValueInfoProto> = self
            .graph
            .input
            .iter()
            .filter(|i| !self.constants.contains_key(&i.name))
            .collect();
        if inputs.len() != 1 {
            return Err(format!(
                "expected one image input, the graph has {} ({})",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let dims = input_dims(inputs[0]);
        if dims.len() != 4 || dims[1] != Some(3) {
            return Err(format!(
                "input `{}` has shape {dims:?}, expected N×3×H×W",
                inputs[0].name
            ));
        }
        self.out.input_channels = 3;
        self.out.input_hw = match (dims[2], dims[3]) {
            (Some(h), Some(w)) => Some([h, w]),
            _ => None,
        };
        if let Some([h, w]) = self.out.input_hw {
            if h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
                return Err(format!(
                    "input `{}` is {w}x{h}, the runtime supports at most {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE}",
                    inputs[0].name
                ));
            }
        }
        self.out.value_of.insert(inputs[0].name.clone(), 0);

        for node in &self.graph.node {
            self.lower(node)?;
        }
        Ok(self.out)
    }

    fn lower(&mut self, node: &NodeProto) -> std::result::Result<(), String> {
        let label = || node_label(node);
        let output = node.output.first().cloned().unwrap_or_default();
        match node.op_type.as_str() {
            "Conv" => {
                let x = self.value(&node.input[0], node)?;
                let w_name = node
                    .input
                    .get(1)
                    .ok_or_else(|| format!("{}: no weight", label()))?;
                let w = self.constant(w_name, node)?;
                let wt = self.constants[w_name.as_str()];
                if wt.dims.len() != 4 {
                    return Err(format!(
                        "{}: weight shape {:?}, expected 4-D",
                        label(),
                        wt.dims
                    ));
                }
                // Every number is bounded before it becomes a usize (see `limits`).
                let shape: Vec<usize> = [
                    ("output channels", MAX_CHANNELS),
                    ("input channels per group", MAX_CHANNELS),
                    ("kernel height", MAX_KERNEL),
                    ("kernel width", MAX_KERNEL),
                ]
                .iter()
                .zip(&wt.dims)
                .map(|(&(what, hi), &d)| bounded(node, what, d, 1, hi))
                .collect::<std::result::Result<_, _>>()?;
                let (cout, cin_g, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
                let groups = bounded(
                    node,
                    "group",
                    attr_int(node, "group").unwrap_or(1),
                    1,
                    MAX_CHANNELS,
                )?;
                let strides = attr_ints(node, "strides").unwrap_or_else(|| vec![1, 1]);
                let pads = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                for &st in &strides {
                    bounded(node, "stride", st, 1, MAX_STRIDE)?;
                }
                for &p in &pads {
                    // A pad as wide as the kernel gives outputs that see only padding.
                    bounded(node, &format!("pad (kernel {kh})"), p, 0, kh - 1)?;
                }
                if cin_g.checked_mul(groups).is_none_or(|c| c > MAX_CHANNELS) {
                    return Err(format!(
                        "{}: {cin_g} input channels x {groups} groups, the runtime supports at most {MAX_CHANNELS} channels",
                        label()
                    ));
                }
                let dil = attr_ints(node, "dilations").unwrap_or_else(|| vec![1, 1]);
                if let Some(a) = attr(node, "auto_pad") {
                    let s = String::from_utf8_lossy(&a.s);
                    if !s.is_empty() && s != "NOTSET" {
                        return Err(format!("{}: auto_pad {s} is not supported", label()));
                    }
                }
                if kh != kw || strides.len() != 2 || strides[0] != strides[1] {
                    return Err(format!(
                        "{}: kernel {kh}x{kw} strides {strides:?}: expected square kernels and equal strides",
                        label()
                    ));
                }
                if pads.iter().any(|&p| p != pads[0]) || dil.iter().any(|&d| d != 1) {
                    return Err(format!(
                        "{}: pads {pads:?} dilations {dil:?}: expected symmetric padding and no dilation",
                        label()
                    ));
                }
                let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(b) => self.constant(b, node)?,
                    None => vec![0.0; cout],
                };
                if bias.len() != cout {
                    return Err(format!(
                        "{}: bias has {} values for {cout} channels",
                        label(),
                        bias.len()
                    ));
                }
                let op = Op::Conv {
                    name: String::new(),
                    input: x,
                    cin: cin_g * groups,
                    cout,
                    kernel: kh,
                    stride: strides[0] as usize,
                    pad: pads[0] as usize,
                    groups,
                    act: Act::None,
                };
                let weights = ConvWeights {
                    weight: w,
                    shape,
                    bias,
                    alpha: None,
                };
                self.push(op, Some(weights), &output);
            }
            "BatchNormalization" => {
                let i = self.fusable(&node.input[0], node, false)?;
                let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|k| {
                    node.input
                        .get(k)
                        .ok_or_else(|| format!("{}: missing input {k}", label()))
                        .and_then(|n| self.constant(n, node))
                });
                let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
                let eps = attr(node, "epsilon").map(|a| a.f).unwrap_or(1e-5);
                let w = self.out.weights[i].as_mut().expect("conv has weights");
                let cout = w.shape[0];
                if [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != cout) {
                    return Err(format!(
                        "{}: parameters do not have {cout} channels",
                        label()
                    ));
                }
                let per = w.weight.len() / cout;
                for c in 0..cout {
                    let s = gamma[c] / (var[c] + eps).sqrt();
                    w.weight[c * per..(c + 1) * per]
                        .iter_mut()
                        .for_each(|x| *x *= s);
                    w.bias[c] = (w.bias[c] - mean[c]) * s + beta[c];
                }
                let v = i + 1;
                self.out.value_of.insert(output, v);
            }
            "Mul" if self.gate_of(node).is_some() => {
                // Squeeze-excitation: a map times the sigmoid of its 1×1 channel gate.
                let (x, gate) = self.gate_of(node).expect("checked by the guard");
                let x = self.value(x, node)?;
                self.push(Op::ChannelGate { input: x, gate }, None, &output);
            }
            "GlobalAveragePool" => {
                let x = self.value(&node.input[0], node)?;
                self.push(Op::GlobalAvgPool { input: x }, None, &output);
            }
            "MatMul" | "Gemm" => {
                // A linear layer on a flattened 1×1 map is a 1×1 convolution.
                let src = &node.input[0];
                let x = match self.out.formatted.get(src) {
                    Some(f) if !f.sigmoid => f.value,
                    Some(_) => {
                        return Err(format!("{}: reads a sigmoid output", label()));
                    }
                    None => self.value(src, node)?,
                };
                let w_name = node
                    .input
                    .get(1)
                    .ok_or_else(|| format!("{}: no weight", label()))?;
                let w = self.constant(w_name, node)?;
                let dims: Vec<usize> = self.constants[w_name.as_str()]
                    .dims
                    .iter()
                    .map(|&d| d as usize)
                    .collect();
                let [rows, cols] = dims[..] else {
                    return Err(format!(
                        "{}: weight shape {dims:?}, expected a 2-D matrix",
                        label()
                    ));
                };
                let trans_a = attr_int(node, "transA").unwrap_or(0);
                let trans_b = node.op_type == "Gemm" && attr_int(node, "transB").unwrap_or(0) != 0;
                let alpha = attr(node, "alpha").map(|a| a.f).unwrap_or(1.0);
                let beta = attr(node, "beta").map(|a| a.f).unwrap_or(1.0);
                if trans_a != 0 || alpha != 1.0 || beta != 1.0 {
                    return Err(format!(
                        "{}: transA {trans_a}, alpha {alpha}, beta {beta}: expected a plain x·W + b",
                        label()
                    ));
                }
                // The conv weight is [out, in, 1, 1]: W transposed unless Gemm already is.
                let (cin, cout) = if trans_b { (cols, rows) } else { (rows, cols) };
                let weight: Vec<f32> = if trans_b {
                    w
                } else {
                    (0..cout)
                        .flat_map(|o| (0..cin).map(move |i| (o, i)))
                        .map(|(o, i)| w[i * cols + o])
                        .collect()
                };
                let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
                    Some(b) if node.op_type == "Gemm" => self.constant(b, node)?,
                    _ => vec![0.0; cout],
                };
                if bias.len() != cout {
                    return Err(format!(
                        "{}: bias has {} values for {cout} outputs",
                        label(),
                        bias.len()
                    ));
                }
                let op = Op::Conv {
                    name: String::new(),
                    input: x,
                    cin,
                    cout,
                    kernel: 1,
                    stride: 1,
                    pad: 0,
                    groups: 1,
                    act: Act::None,
                };
                let weights = ConvWeights {
                    weight,
                    shape: vec![cout, cin, 1, 1],
                    bias,
                    alpha: None,
                };
                self.out.linear_inputs.push((x, label()));
                self.push(op, Some(weights), &output);
            }
            "Mul" => {
                // SCRFD's per-level `Scale` on the box regression: fold it into the conv.
                let (x, k) = match (&node.input[0], &node.input[1]) {
                    (a, b) if self.constants.contains_key(b) => (a, b),
                    (a, b) if self.constants.contains_key(a) => (b, a),
                    _ => {
                        return Err(format!(
                            "{}: only multiplication by a constant scalar, or of a map by the sigmoid of its channel gate read by nothing else (squeeze-excitation), is supported",
                            label()
                        ))
                    }
                };
                let s = self.constant(k, node)?;
                if s.len() != 1 {
                    return Err(format!(
                        "{}: multiplies by a tensor of {} values, only a scalar can be folded",
                        label(),
                        s.len()
                    ));
                }
                let i = self.fusable(x, node, false)?;
                let w = self.out.weights[i].as_mut().expect("conv has weights");
                w.weight.iter_mut().for_each(|v| *v *= s[0]);
                w.bias.iter_mut().for_each(|v| *v *= s[0]);
                self.out.value_of.insert(output, i + 1);
            }
            "Relu" | "Clip" | "PRelu" => {
                let allow_add = node.op_type != "PRelu";
                let i = self.fusable(&node.input[0], node, allow_add)?;
                let act = match node.op_type.as_str() {
                    "Relu" => Act::Relu,
                    "Clip" => {
                        let bound = |k: usize, attr_name: &str, default: f32| match node
                            .input
                            .get(k)
                            .filter(|s| !s.is_empty())
                        {
                            Some(n) => self
                                .constant(n, node)
                                .map(|v| v.first().copied().unwrap_or(default)),
                            None => Ok(attr(node, attr_name).map(|a| a.f).unwrap_or(default)),
                        };
                        Act::Clip {
                            min: bound(1, "min", f32::NEG_INFINITY)?,
                            max: bound(2, "max", f32::INFINITY)?,
                        }
                    }
                    _ => {
                        let slope = self.constant(&node.input[1], node)?;
                        let w = self.out.weights[i].as_mut().expect("conv has weights");
                        let cout = w.shape[0];
                        let slope = match slope.len() {
                            1 => vec![slope[0]; cout],
                            n if n == cout => slope,
                            n => {
                                return Err(format!("{}: {n} slopes for {cout} channels", label()))
                            }
                        };
                        w.alpha = Some(slope);
                        Act::PRelu
                    }
                };
                self.set_act(i, act);
                self.out.value_of.insert(output, i + 1);
            }
            "Add" => {
                let a = self.value(&node.input[0], node)?;
                let b = self.value(&node.input[1], node)?;
                self.push(
                    Op::Add {
                        a,
                        b,
                        act: Act::None,
                    },
                    None,
                    &output,
                );
            }
            "MaxPool" | "AveragePool" => {
                let x = self.value(&node.input[0], node)?;
                let k = attr_ints(node, "kernel_shape").unwrap_or_default();
                let s = attr_ints(node, "strides").unwrap_or_default();
                let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                if k != [2, 2] || s != [2, 2] || p.iter().any(|&v| v != 0) {
                    return Err(format!(
                        "{}: kernel {k:?} strides {s:?} pads {p:?}; only 2x2 stride-2 pooling without padding is supported",
                        label()
                    ));
                }
                let op = if node.op_type == "MaxPool" {
                    Op::MaxPool2x { input: x }
                } else {
                    Op::AvgPool2x { input: x }
                };
                self.push(op, None, &output);
            }
            "Resize" | "Upsample" => {
                let mode = attr(node, "mode")
                    .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                    .unwrap_or_else(|| "nearest".into());
                if mode != "nearest" {
                    return Err(format!(
                        "{}: mode {mode}, only nearest upsampling is supported",
                        label()
                    ));
                }
                // Constant scales, where the export has them, must be 2x; size-driven resizes
                // (the dynamic exports) are checked against their Add partner at run time.
                if let Some(scales) = node
                    .input
                    .iter()
                    .skip(1)
                    .filter_map(|n| self.constants.get(n.as_str()))
                    .filter_map(|t| tensor_f32(t).ok())
                    .find(|v| v.len() == 4)
                {
                    if scales[2] != 2.0 || scales[3] != 2.0 {
                        return Err(format!(
                            "{}: scales {scales:?}, only 2x upsampling is supported",
                            label()
                        ));
                    }
                }
                let x = self.value(&node.input[0], node)?;
                self.push(Op::Upsample2x { input: x }, None, &output);
            }
            "Identity" | "Dropout" => {
                let x = self.value(&node.input[0], node)?;
                self.out.value_of.insert(output, x);
            }
            "Transpose" | "Reshape" | "Flatten" | "Sigmoid" => {
                let src = &node.input[0];
                let f = if let Some(f) = self.out.formatted.get(src) {
                    f.clone()
                } else {
                    Formatted {
                        value: self.value(src, node)?,
                        sigmoid: false,
                    }
                };
                let f = Formatted {
                    sigmoid: f.sigmoid || node.op_type == "Sigmoid",
                    ..f
                };
                self.out.formatted.insert(output, f);
            }
            "Shape" | "Gather" | "Unsqueeze" | "Squeeze" | "Slice" | "Concat" | "Cast"
            | "Constant" | "ConstantOfShape" | "Floor" | "Div" => {
                // Shape arithmetic for the dynamic Resize/Reshape targets; it computes no
                // feature map. (Div/Floor on shapes appear in some exports.) Any attempt to
                // use its result as a feature map fails in `value()` with the node's name.
                if matches!(node.op_type.as_str(), "Div" | "Floor")
                    && node.input.iter().any(|i| self.out.value_of.contains_key(i))
                {
                    return Err(format!(
                        "{}: arithmetic on a feature map is not supported",
                        label()
                    ));
                }
            }
            other => {
                return Err(format!(
                "{}: operator {other} is not part of a SCRFD, MobileFaceNet or MiniFASNet graph ({SUPPORTED})",
                label()
            ))
            }
        }
        Ok(())
    }
}

fn input_dims(v: &onnx::ValueInfoProto) -> Vec<Option<usize>> {
    use onnx::tensor_shape_proto::dimension::Value;
    let Some(onnx::type_proto::Value::TensorType(t)) =
        v.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return vec![];
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(n)) if n > 0 => Some(n as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Lowered {
    fn graph(&self) -> Graph {
        Graph {
            input_channels: self.input_channels,
            ops: self.ops.clone(),
        }
    }

    fn output(&self, name: &str) -> std::result::Result<Formatted, String> {
        if let Some(f) = self.formatted.get(name) {
            return Ok(f.clone());
        }
        self.value_of
            .get(name)
            .map(|&value| Formatted {
                value,
                sigmoid: false,
            })
            .ok_or_else(|| {
                format!("graph output `{name}` is not computed by the supported operators")
            })
    }

    /// Canonical names: SCRFD ops that feed a single output level are that level's head
    /// (`head.s8.0`, and `head.s8.cls|reg|kps` for the final convs); everything else is the
    /// shared body (`body.N`). A recogniser is all body, its last conv named `embedding`.
    fn names_for(&self, config: &ModelConfig) -> Vec<String> {
        let n = self.ops.len();
        let mut names: Vec<String> = (0..n).map(|i| format!("body.{i}")).collect();
        match config {
            ModelConfig::Scrfd(c) => {
                let mut feeds: Vec<HashSet<usize>> = vec![HashSet::new(); n + 1];
                for (li, level) in c.levels.iter().enumerate() {
                    let mut stack: Vec<ValueId> = [Some(level.score), Some(level.bbox), level.kps]
                        .into_iter()
                        .flatten()
                        .collect();
                    while let Some(v) = stack.pop() {
                        if feeds[v].insert(li) && v > 0 {
                            stack.extend(self.ops[v - 1].inputs());
                        }
                    }
                }
                let mut tower_index: HashMap<usize, usize> = HashMap::new();
                for (i, name) in names.iter_mut().enumerate() {
                    let v = i + 1;
                    if feeds[v].len() == 1 {
                        let li = *feeds[v].iter().next().expect("one level");
                        let level = &c.levels[li];
                        let s = level.stride;
                        *name = if v == level.score {
                            format!("head.s{s}.cls")
                        } else if v == level.bbox {
                            format!("head.s{s}.reg")
                        } else if Some(v) == level.kps {
                            format!("head.s{s}.kps")
                        } else {
                            let k = tower_index.entry(li).or_insert(0);
                            *k += 1;
                            format!("head.s{s}.{}", *k - 1)
                        };
                    }
                }
            }
            ModelConfig::MobileFaceNet(c) => {
                if c.embedding > 0 {
                    names[c.embedding - 1] = "embedding".into();
                }
            }
            ModelConfig::Liveness(c) => {
                if c.logits > 0 {
                    names[c.logits - 1] = "logits".into();
                }
            }
        }
        names
    }

    fn named_tensors(&self, config: &ModelConfig) -> BTreeMap<String, TensorData> {
        let names = self.names_for(config);
        let mut out = BTreeMap::new();
        for (w, name) in self.weights.iter().zip(&names) {
            if let Some(w) = w {
                out.insert(
                    format!("{name}.weight"),
                    TensorData::f32(w.shape.clone(), w.weight.clone()),
                );
                out.insert(
                    format!("{name}.bias"),
                    TensorData::f32(vec![w.bias.len()], w.bias.clone()),
                );
                if let Some(a) = &w.alpha {
                    out.insert(
                        format!("{name}.alpha"),
                        TensorData::f32(vec![a.len()], a.clone()),
                    );
                }
            }
        }
        out
    }
}

fn rename_ops(config: &mut ModelConfig, names: &[String]) {
    let graph = match config {
        ModelConfig::Scrfd(c) => &mut c.graph,
        ModelConfig::MobileFaceNet(c) => &mut c.graph,
        ModelConfig::Liveness(c) => &mut c.graph,
    };
    for (op, n) in graph.ops.iter_mut().zip(names) {
        if let Op::Conv { name, .. } = op {
            *name = n.clone();
        }
    }
}

/// Spatial size of every value for an input of `h`×`w`.
pub fn spatial_sizes(graph: &Graph, h: usize, w: usize) -> Vec<(usize, usize)> {
    let mut s = vec![(h, w)];
    for op in &graph.ops {
        let (ih, iw) = s[op.inputs()[0]];
        let o = match op {
            Op::Conv {
                kernel,
                stride,
                pad,
                ..
            } => {
                let f = |i: usize| (i + 2 * pad).saturating_sub(*kernel) / stride + 1;
                (f(ih), f(iw))
            }
            Op::Add { .. } | Op::ChannelGate { .. } => (ih, iw),
            Op::GlobalAvgPool { .. } => (1, 1),
            Op::Upsample2x { .. } => (ih * 2, iw * 2),
            Op::MaxPool2x { .. } | Op::AvgPool2x { .. } => (ih / 2, iw / 2),
        };
        s.push(o);
    }
    s
}

/// Decides the family from the outputs' structure: SCRFD has score/box(/keypoint) maps per
/// stride with `A`, `4A` and `10A` channels, the scores passing a sigmoid; a recogniser has a
/// single output that is a 1×1 map over a 112×112 input.
fn recognise_family(
    graph: &onnx::GraphProto,
    l: &Lowered,
) -> std::result::Result<ModelConfig, String> {
    let outputs: Vec<Formatted> = graph
        .output
        .iter()
        .map(|o| l.output(&o.name))
        .collect::<std::result::Result<_, _>>()?;
    let g = l.graph();
    g.validate()?;
    let channels = g.channels();
    let strides = g.strides();
    let gated = g
        .ops
        .iter()
        .any(|op| matches!(op, Op::GlobalAvgPool { .. } | Op::ChannelGate { .. }));
    if let Some(hw) = l.input_hw {
        let sizes = spatial_sizes(&g, hw[0], hw[1]);
        for (i, op) in g.ops.iter().enumerate() {
            if let Op::ChannelGate { gate, .. } = op {
                if sizes[*gate] != (1, 1) {
                    return Err(format!(
                        "channel gate op {i}: the gate is a {:?} map, expected 1x1 (squeeze-excitation)",
                        sizes[*gate]
                    ));
                }
            }
        }
        for (v, node) in &l.linear_inputs {
            if sizes[*v] != (1, 1) {
                return Err(format!(
                    "{node}: a linear layer on a {:?} map; only a flattened 1x1 map is supported",
                    sizes[*v]
                ));
            }
        }
    } else if gated || !l.linear_inputs.is_empty() {
        return Err(
            "squeeze-excitation or linear layers with a dynamic input size: expected a fixed-size classifier"
                .into(),
        );
    }
    match outputs.len() {
        1 if l.input_hw.is_some_and(|[h, w]| {
            let v = outputs[0].value;
            h == w
                && spatial_sizes(&g, h, w)[v] == (1, 1)
                && (2..=MAX_LIVENESS_CLASSES).contains(&channels[v])
        }) =>
        {
            // A handful of logits from a fixed square input: an anti-spoofing classifier
            // (MiniFASNet: live, then the attack classes).
            let f = &outputs[0];
            if f.sigmoid {
                return Err("a classifier output after a sigmoid: expected raw logits".into());
            }
            let [h, _] = l.input_hw.expect("checked by the guard");
            let classes = match channels[f.value] {
                2 => vec!["live", "spoof"],
                3 => vec!["live", "print", "replay"],
                n => {
                    return Err(format!(
                        "{n} logits: expected an anti-spoofing classifier with 2 (live, spoof) or 3 (live, print, replay) classes"
                    ))
                }
            };
            Ok(ModelConfig::Liveness(LivenessConfig {
                graph: g,
                norm: LIVENESS_NORM,
                input_size: h,
                crop_scale: LIVENESS_CROP_SCALE,
                logits: f.value,
                classes: classes.into_iter().map(String::from).collect(),
            }))
        }
        1 => {
            let hw = l.input_hw.ok_or("a one-output graph with a dynamic input size: expected a 112x112 recogniser")?;
            let v = outputs[0].value;
            let sizes = spatial_sizes(&g, hw[0], hw[1]);
            if hw[0] != hw[1] || sizes[v] != (1, 1) || outputs[0].sigmoid {
                return Err(format!(
                    "one output of spatial size {:?} from a {}x{} input: expected a MobileFaceNet embedding (a 1x1 map)",
                    sizes[v], hw[1], hw[0]
                ));
            }
            Ok(ModelConfig::MobileFaceNet(MobileFaceNetConfig {
                graph: g,
                norm: RECOGNISER_NORM,
                input_size: hw[0],
                embedding: v,
                dim: channels[v],
                match_threshold: None,
            }))
        }
        6 | 9 | 10 | 15 => {
            let n = outputs.len();
            let (fmc, kps) = match n {
                6 => (3, false),
                9 => (3, true),
                10 => (5, false),
                _ => (5, true),
            };
            let anchors = channels[outputs[0].value];
            let mut levels = Vec::new();
            for i in 0..fmc {
                let score = &outputs[i];
                let bbox = &outputs[i + fmc];
                let kp = kps.then(|| &outputs[i + 2 * fmc]);
                let stride = strides[score.value].ok_or("a score map finer than the input")?;
                let check = |f: &Formatted, what: &str, k: usize, sig: bool| {
                    if channels[f.value] != anchors * k || f.sigmoid != sig || strides[f.value] != Some(stride) {
                        Err(format!(
                            "output {what} of level {i}: {} channels at stride {:?}{}; expected {} channels at stride {stride}{}",
                            channels[f.value],
                            strides[f.value],
                            if f.sigmoid { " after a sigmoid" } else { "" },
                            anchors * k,
                            if sig { " after a sigmoid" } else { "" }
                        ))
                    } else {
                        Ok(())
                    }
                };
                check(score, "scores", 1, true)?;
                check(bbox, "boxes", 4, false)?;
                if let Some(kp) = kp {
                    check(kp, "keypoints", 10, false)?;
                }
                levels.push(ScrfdLevel {
                    stride,
                    score: score.value,
                    bbox: bbox.value,
                    kps: kp.map(|f| f.value),
                });
            }
            if levels.windows(2).any(|w| w[0].stride >= w[1].stride) {
                return Err(format!(
                    "detector levels have strides {:?}, expected increasing strides",
                    levels.iter().map(|l| l.stride).collect::<Vec<_>>()
                ));
            }
            Ok(ModelConfig::Scrfd(ScrfdConfig {
                graph: g,
                norm: SCRFD_NORM,
                anchors_per_cell: anchors,
                levels,
                export_size: l.input_hw.map(|[h, w]| [w, h]),
            }))
        }
        n => Err(format!(
            "{n} outputs: expected a SCRFD detector (6 or 9 outputs: scores, boxes, keypoints per stride) \
             or a MobileFaceNet recogniser (one embedding)"
        )),
    }
}
