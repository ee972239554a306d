//! Sibling convolutions run as one: dense convs that read the same value, have no
//! activation, and whose outputs leave the network without any op reading them (SCRFD's
//! score, box and keypoint heads of a level). Put side by side they need one im2col instead
//! of three, and one GEMM wide enough to fill the vector registers — alone, 2, 8 and 20
//! output channels waste most lanes of a 16- or 32-channel tile.
//!
//! The last member of a group leads: its layer is replaced by the fused one, which computes
//! every member when the lead's turn comes; the other members are skipped. Producing their
//! values late is safe because no op reads them, and their buffers stay theirs until the
//! end of the run (kept values live to the end of the plan). The lead's buffer is planned
//! for the fused width; after the GEMM, [`scatter`] moves each member's channels into its
//! own buffer and compacts the lead's channels in place.

use super::layers::{ConvLayer, ConvWeights, Layer, QuantConv};
use crate::graph::{Act, Graph, Op, ValueId};
use crate::kernels::{pack_pw, pack_pw_i8, unpack_pw, unpack_pw_i8};

/// One group of sibling convolutions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Siblings {
    /// `(op index, first channel, channels)` per member in op order; the last one leads.
    pub members: Vec<(usize, usize, usize)>,
    /// Output channels of the fused convolution.
    pub total: usize,
}

impl Siblings {
    pub fn lead(&self) -> usize {
        self.members.last().expect("a group has members").0
    }
}

/// The groups of at least two siblings in `graph` (with its `layers`), given the values read
/// after each run (`keep`).
pub(crate) fn find(graph: &Graph, layers: &[Layer], keep: &[ValueId]) -> Vec<Siblings> {
    let mut read = vec![false; graph.num_values()];
    for op in &graph.ops {
        op.inputs().into_iter().for_each(|v| read[v] = true);
    }
    // (input, kernel, stride, pad, weights kind) -> op indices
    type Key = (ValueId, usize, usize, usize, &'static str);
    let mut groups: Vec<(Key, Vec<usize>)> = Vec::new();
    for (i, (op, layer)) in graph.ops.iter().zip(layers).enumerate() {
        let (Op::Conv { input, act, .. }, Layer::Conv(c)) = (op, layer) else {
            continue;
        };
        let kind = match c.weights {
            ConvWeights::Dense(_) | ConvWeights::DenseF16(_) | ConvWeights::DenseI8(_) => {
                c.weights.kind()
            }
            _ => continue,
        };
        let v = i + 1;
        if *act != Act::None || read[v] || !keep.contains(&v) {
            continue;
        }
        let key = (*input, c.kernel, c.stride, c.pad, kind);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, ops)) => ops.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups
        .into_iter()
        .filter(|(_, ops)| ops.len() >= 2)
        .map(|(_, ops)| {
            let mut members = Vec::new();
            let mut c0 = 0;
            for i in ops {
                let Layer::Conv(c) = &layers[i] else {
                    unreachable!("members are convolutions")
                };
                members.push((i, c0, c.cout));
                c0 += c.cout;
            }
            Siblings { members, total: c0 }
        })
        .collect()
}

/// The fused layer of a group: the members' filters, biases and int8 epilogues side by side.
pub(crate) fn fuse(members: &[&ConvLayer]) -> ConvLayer {
    let first = members[0];
    let total = members.iter().map(|c| c.cout).sum();
    let cat = |f: &dyn Fn(&ConvLayer) -> Vec<f32>| members.iter().flat_map(|c| f(c)).collect();
    let weights = match &first.weights {
        ConvWeights::Dense(w) => {
            let all: Vec<f32> = members
                .iter()
                .flat_map(|c| match &c.weights {
                    ConvWeights::Dense(w) => unpack_pw(w),
                    _ => unreachable!("siblings share their kind"),
                })
                .collect();
            ConvWeights::Dense(pack_pw(&all, total, w.k))
        }
        ConvWeights::DenseF16(w) => {
            let all: Vec<half::f16> = members
                .iter()
                .flat_map(|c| match &c.weights {
                    ConvWeights::DenseF16(w) => unpack_pw(w),
                    _ => unreachable!("siblings share their kind"),
                })
                .collect();
            ConvWeights::DenseF16(pack_pw(&all, total, w.k))
        }
        ConvWeights::DenseI8(w) => {
            let all: Vec<i8> = members
                .iter()
                .flat_map(|c| match &c.weights {
                    ConvWeights::DenseI8(w) => unpack_pw_i8(w),
                    _ => unreachable!("siblings share their kind"),
                })
                .collect();
            ConvWeights::DenseI8(pack_pw_i8(&all, total, w.k))
        }
        _ => unreachable!("only dense convolutions are fused"),
    };
    let q = first.q.as_ref().map(|_| {
        let qs: Vec<&QuantConv> = members
            .iter()
            .map(|c| c.q.as_ref().expect("int8"))
            .collect();
        QuantConv {
            bias_q: qs.iter().flat_map(|q| q.bias_q.iter().copied()).collect(),
            mult: qs.iter().flat_map(|q| q.mult.iter().copied()).collect(),
            deq: qs.iter().flat_map(|q| q.deq.iter().copied()).collect(),
            relu6_q: 0.0,
            clamp_q: None,
        }
    });
    ConvLayer {
        cin: first.cin,
        cout: total,
        kernel: first.kernel,
        stride: first.stride,
        pad: first.pad,
        weights,
        bias: cat(&|c| c.bias.clone()),
        alpha: Vec::new(),
        act: Act::None,
        q,
    }
}

/// After the fused conv wrote `pixels × total` values into the lead's buffer: copies every
/// other member's channels into its buffer, then compacts the lead's own channels (the last
/// ones) to the front of its buffer. `buffer_of[m]` is the buffer of member `m`'s value.
pub(crate) fn scatter<T: Copy + Default>(
    buffers: &mut [Vec<T>],
    buffer_of: impl Fn(usize) -> usize,
    pixels: usize,
    group: &Siblings,
) {
    let total = group.total;
    let lead_buf = buffer_of(group.lead());
    let mut lead = std::mem::take(&mut buffers[lead_buf]);
    let (others, own) = group.members.split_at(group.members.len() - 1);
    for &(op, c0, c) in others {
        let dst = &mut buffers[buffer_of(op)];
        for (p, d) in dst[..pixels * c].chunks_exact_mut(c).enumerate() {
            d.copy_from_slice(&lead[p * total + c0..p * total + c0 + c]);
        }
    }
    let (_, c0, c) = own[0];
    // front to back: the destination never overtakes the source (p·c <= p·total + c0)
    for p in 0..pixels {
        lead.copy_within(p * total + c0..p * total + c0 + c, p * c);
    }
    buffers[lead_buf] = lead;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_splits_channels_and_compacts_the_lead() {
        // three members of 2, 1 and 3 channels over 4 pixels; value of channel c at pixel p
        // is 10p + c
        let group = Siblings {
            members: vec![(5, 0, 2), (6, 2, 1), (9, 3, 3)],
            total: 6,
        };
        let pixels = 4;
        let fused: Vec<i32> = (0..pixels * 6)
            .map(|i| (10 * (i / 6) + i % 6) as i32)
            .collect();
        let mut buffers = vec![vec![0; 8], vec![0; 4], fused];
        let buffer_of = |op: usize| match op {
            5 => 0,
            6 => 1,
            9 => 2,
            _ => unreachable!(),
        };
        scatter(&mut buffers, buffer_of, pixels, &group);
        assert_eq!(buffers[0], vec![0, 1, 10, 11, 20, 21, 30, 31]);
        assert_eq!(buffers[1], vec![2, 12, 22, 32]);
        assert_eq!(
            &buffers[2][..12],
            &[3, 4, 5, 13, 14, 15, 23, 24, 25, 33, 34, 35]
        );
    }
}
