//! The memory plan for one input size: the NHWC shape of every value and which buffer holds
//! it. Values share buffers once nothing reads them any more (a greedy best-fit over the
//! values' lifetimes), so a 640×640 SCRFD needs a handful of buffers rather than one per
//! layer. Planning happens once per input size; running a frame then allocates nothing.

use super::layers::{Layer, Shape};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, ValueId};

pub(crate) struct Plan {
    pub height: usize,
    pub width: usize,
    /// `[h, w, c]` of every value.
    pub shapes: Vec<Shape>,
    /// The buffer holding every value.
    pub buffer_of: Vec<usize>,
    /// Length (elements) of every buffer.
    pub buffer_lens: Vec<usize>,
    /// Elements of scratch (im2col rows, Winograd tiles) one thread needs.
    pub scratch_len: usize,
}

fn len(s: &Shape) -> usize {
    s[0] * s[1] * s[2]
}

impl Plan {
    pub fn new(
        graph: &Graph,
        layers: &[Layer],
        keep: &[ValueId],
        height: usize,
        width: usize,
    ) -> Result<Plan> {
        let channels = graph.channels();
        let mut shapes: Vec<Shape> = vec![[height, width, graph.input_channels]];
        let mut scratch_len = 0;
        for (i, (op, layer)) in graph.ops.iter().zip(layers).enumerate() {
            let c = channels[i + 1];
            let s = match (op, layer) {
                (Op::Conv { input, name, .. }, Layer::Conv(conv)) => {
                    let x = shapes[*input];
                    let cs = conv.shape(x);
                    if x[0] + 2 * cs.pad < cs.kh || x[1] + 2 * cs.pad < cs.kw {
                        return Err(Error::Shape {
                            what: format!("input of conv {name}"),
                            expected: format!("at least {0}x{0} after padding", cs.kh),
                            got: format!("{}x{} (input {width}x{height} too small)", x[1], x[0]),
                        });
                    }
                    scratch_len = scratch_len.max(conv.scratch_len(x));
                    [cs.oh(), cs.ow(), c]
                }
                (Op::Add { a, b, .. }, _) => {
                    if shapes[*a] != shapes[*b] {
                        return Err(Error::Shape {
                            what: format!("addition at layer {i}"),
                            expected: format!("{:?}", shapes[*a]),
                            got: format!(
                                "{:?} (input size {width}x{height} not a multiple of 32?)",
                                shapes[*b]
                            ),
                        });
                    }
                    shapes[*a]
                }
                (Op::Upsample2x { input }, _) => {
                    let x = shapes[*input];
                    [2 * x[0], 2 * x[1], c]
                }
                (Op::MaxPool2x { input } | Op::AvgPool2x { input }, _) => {
                    let x = shapes[*input];
                    if x[0] < 2 || x[1] < 2 {
                        return Err(Error::Shape {
                            what: format!("input of pooling layer {i}"),
                            expected: "at least 2x2".into(),
                            got: format!("{}x{} (input {width}x{height} too small)", x[1], x[0]),
                        });
                    }
                    [x[0] / 2, x[1] / 2, c]
                }
                (Op::GlobalAvgPool { .. }, _) => [1, 1, c],
                (Op::ChannelGate { input, gate }, _) => {
                    if shapes[*gate] != [1, 1, c] {
                        return Err(Error::Shape {
                            what: format!("gate of channel gate layer {i}"),
                            expected: format!("[1, 1, {c}]"),
                            got: format!("{:?}", shapes[*gate]),
                        });
                    }
                    shapes[*input]
                }
                _ => unreachable!("layers are built from the ops in order"),
            };
            shapes.push(s);
        }

        // Greedy buffer sharing over value lifetimes.
        let last = graph.last_uses(keep);
        let mut buffer_lens: Vec<usize> = vec![len(&shapes[0])];
        let mut buffer_of = vec![0usize; shapes.len()];
        let mut free: Vec<usize> = Vec::new();
        for (i, op) in graph.ops.iter().enumerate() {
            // a conv's buffer holds all the channels it computes (more than its value's
            // when it leads fused siblings, see `fuse`)
            let s = shapes[i + 1];
            let need = match &layers[i] {
                Layer::Conv(c) => s[0] * s[1] * c.cout.max(s[2]),
                _ => len(&s),
            };
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &b)| buffer_lens[b] >= need)
                .min_by_key(|(_, &b)| buffer_lens[b])
                .or_else(|| free.iter().enumerate().max_by_key(|(_, &b)| buffer_lens[b]))
                .map(|(slot, _)| slot);
            let b = match fit {
                Some(slot) => {
                    let b = free.swap_remove(slot);
                    buffer_lens[b] = buffer_lens[b].max(need);
                    b
                }
                None => {
                    buffer_lens.push(need);
                    buffer_lens.len() - 1
                }
            };
            buffer_of[i + 1] = b;
            let mut inputs = op.inputs();
            inputs.dedup();
            for v in inputs {
                if last[v] == i && !free.contains(&buffer_of[v]) {
                    free.push(buffer_of[v]);
                }
            }
        }
        Ok(Plan {
            height,
            width,
            shapes,
            buffer_of,
            buffer_lens,
            scratch_len,
        })
    }
}
