//! The fast engine: executes a layer program (`graph::Graph`) with the kernel table
//! (`kernels`) on NHWC activations.
//!
//! Why it is shaped so:
//! - Weights are packed once, at load (`layers`), into the kernels' layouts.
//! - Activations live in buffers planned once per input size (`plan`) and reused frame after
//!   frame: in steady state a frame allocates nothing.
//! - NHWC is (y, x, channel) order, which is the layout of SCRFD's exported head outputs, so
//!   scores, boxes and keypoints come out ready to decode with no transpose.
//! - Each layer's output rows are split over a small persistent thread pool (`pool`); tiny
//!   layers run on the calling thread alone, where a hand-over would cost more than it saves.
//!
//! The candle executor in `nn` stays the f32 reference this engine is tested against.

mod layers;
mod plan;
pub mod pool;

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::{ModelFile, Precision};
use crate::graph::{Graph, Op, ValueId};
use crate::kernels::{kernels, Kernels};
use layers::{apply_act, upsample2x, Layer};
use plan::Plan;
use pool::{split, Pool};

/// Layers with less work than this (multiply-accumulates, or elements for the cheap ops)
/// run on one thread: handing them over costs more than it saves.
const MIN_PARALLEL_WORK: usize = 100_000;

/// The number of threads "all cores" means here.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: the pointer is only used to build disjoint sub-slices, one per thread, of a buffer
// that outlives the parallel section.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// (A method, so closures capture the whole `Sync` wrapper, not the raw field.)
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A network ready to run on the fast path.
pub struct Engine {
    graph: Graph,
    layers: Vec<Layer>,
    keep: Vec<ValueId>,
    kernels: &'static Kernels,
    pool: Pool,
    plan: Option<Plan>,
    buffers: Vec<Vec<f32>>,
    scratch: Vec<f32>,
    profile: Option<Vec<Duration>>,
}

impl Engine {
    /// Packs the weights of `file` (f32, or f16 widened to f32) for a network whose values
    /// `outputs` are read after each run; `threads` 0 means all cores.
    pub fn new(file: &ModelFile, outputs: &[ValueId], threads: usize) -> Result<Engine> {
        if file.precision == Precision::Int8 {
            return Err(Error::Msg(
                "int8 model files are not supported by the fast engine yet".into(),
            ));
        }
        let graph = file.config.graph().clone();
        for &v in outputs {
            if v >= graph.num_values() {
                return Err(Error::Msg(format!(
                    "output value {v} does not exist ({} values)",
                    graph.num_values()
                )));
            }
        }
        let layers = graph
            .ops
            .iter()
            .map(|op| Layer::new(op, file))
            .collect::<Result<Vec<_>>>()?;
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        Ok(Engine {
            graph,
            layers,
            keep: outputs.to_vec(),
            kernels: kernels(),
            pool: Pool::new(threads),
            plan: None,
            buffers: Vec::new(),
            scratch: Vec::new(),
            profile: None,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Plans buffers for a `height × width` input (nothing happens if already planned).
    pub fn prepare(&mut self, height: usize, width: usize) -> Result<()> {
        if let Some(p) = &self.plan {
            if (p.height, p.width) == (height, width) {
                return Ok(());
            }
        }
        self.plan = None;
        let plan = Plan::new(&self.graph, &self.layers, &self.keep, height, width)?;
        self.buffers = plan.buffer_lens.iter().map(|&n| vec![0.0; n]).collect();
        self.scratch = vec![0.0; plan.scratch_len * self.pool.threads()];
        self.plan = Some(plan);
        Ok(())
    }

    /// The NHWC input buffer (`height × width × channels`) to fill before [`Engine::run`].
    pub fn input_mut(&mut self, height: usize, width: usize) -> Result<&mut [f32]> {
        self.prepare(height, width)?;
        let plan = self.plan.as_ref().expect("prepared");
        let n = height * width * self.graph.input_channels;
        Ok(&mut self.buffers[plan.buffer_of[0]][..n])
    }

    /// Records per-layer times of the following runs (see [`Engine::layer_times`]).
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![Duration::ZERO; self.graph.ops.len()]);
    }

    /// Accumulated time per op since profiling was switched on.
    pub fn layer_times(&self) -> Option<&[Duration]> {
        self.profile.as_deref()
    }

    /// A short description of op `i` for profiles (`conv dw 3x3/2 64->64`, `add`, ...).
    pub fn describe_op(&self, i: usize) -> String {
        let shape = self
            .plan
            .as_ref()
            .map(|p| format!(" -> {:?}", p.shapes[i + 1]))
            .unwrap_or_default();
        let what = match (&self.graph.ops[i], &self.layers[i]) {
            (Op::Conv { name, .. }, Layer::Conv(c)) => {
                let kind = match c.weights {
                    layers::ConvWeights::Pointwise(_) => "pw",
                    layers::ConvWeights::Dense(_) => "conv",
                    layers::ConvWeights::Depthwise(_) => "dw",
                };
                format!(
                    "{kind} {0}x{0}/{1} {2}->{3} {name}",
                    c.kernel, c.stride, c.cin, c.cout
                )
            }
            (Op::Add { .. }, _) => "add".into(),
            (Op::Upsample2x { .. }, _) => "upsample2x".into(),
            (Op::MaxPool2x { .. }, _) => "maxpool2x".into(),
            (Op::AvgPool2x { .. }, _) => "avgpool2x".into(),
            _ => unreachable!(),
        };
        format!("{what}{shape}")
    }

    /// A kept value after a run: its NHWC data and `[h, w, c]`.
    pub fn output(&self, v: ValueId) -> Result<(&[f32], [usize; 3])> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| Error::Msg("the engine has not run yet".into()))?;
        if !self.keep.contains(&v) && v != 0 {
            return Err(Error::Msg(format!("value {v} is not an output")));
        }
        let s = plan.shapes[v];
        Ok((&self.buffers[plan.buffer_of[v]][..s[0] * s[1] * s[2]], s))
    }

    /// Runs the network on the input written through [`Engine::input_mut`].
    pub fn run(&mut self) -> Result<()> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| Error::Msg("Engine::run before input_mut".into()))?;
        let k = self.kernels;
        for (i, (op, layer)) in self.graph.ops.iter().zip(&self.layers).enumerate() {
            let start = self.profile.as_ref().map(|_| Instant::now());
            let out_shape = plan.shapes[i + 1];
            let ob = plan.buffer_of[i + 1];
            let mut out = std::mem::take(&mut self.buffers[ob]);
            {
                let bufs = &self.buffers;
                let value = |v: ValueId| {
                    let s = plan.shapes[v];
                    &bufs[plan.buffer_of[v]][..s[0] * s[1] * s[2]]
                };
                let out_len = out_shape[0] * out_shape[1] * out_shape[2];
                let outp = SyncPtr(out.as_mut_ptr());
                let scratch_len = plan.scratch_len;
                let scr = SyncPtr(self.scratch.as_mut_ptr());
                // (rows, elements per row, work) of this op.
                let (rows, work) = match (op, layer) {
                    (Op::Conv { input, .. }, Layer::Conv(c)) => {
                        let x = plan.shapes[*input];
                        let per_out = c.kernel
                            * c.kernel
                            * if matches!(c.weights, layers::ConvWeights::Depthwise(_)) {
                                1
                            } else {
                                c.cin
                            };
                        let rows = if matches!(c.weights, layers::ConvWeights::Pointwise(_)) {
                            x[0] * x[1]
                        } else {
                            out_shape[0]
                        };
                        (rows, out_len * per_out)
                    }
                    _ => (out_shape[0], out_len),
                };
                let row_len = out_len / rows.max(1);
                debug_assert_eq!(row_len * rows, out_len);
                let job = |chunk: usize, chunks: usize, slot: usize| {
                    let (r0, r1) = split(rows, chunk, chunks);
                    if r0 == r1 {
                        return;
                    }
                    // SAFETY: rows [r0, r1) of the output are this thread's alone, inside
                    // the buffer (`out_len <= out.len()`), which outlives the job.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(
                            outp.get().add(r0 * row_len),
                            (r1 - r0) * row_len,
                        )
                    };
                    match (op, layer) {
                        (Op::Conv { input, .. }, Layer::Conv(c)) => {
                            // SAFETY: the pool runs one chunk at a time per thread slot, and
                            // slot `slot` (< pool threads) owns scratch slot `slot`,
                            // allocated at plan time for every pool thread.
                            let s = unsafe {
                                std::slice::from_raw_parts_mut(
                                    scr.get().add(slot * scratch_len),
                                    scratch_len,
                                )
                            };
                            c.run(k, value(*input), plan.shapes[*input], r0, r1, s, o);
                        }
                        (Op::Add { a, b, act }, _) => {
                            let (a, b) = (value(*a), value(*b));
                            let r = r0 * row_len..r1 * row_len;
                            (k.add_f32)(&a[r.clone()], &b[r], o);
                            apply_act(*act, o);
                        }
                        (Op::Upsample2x { input }, _) => {
                            upsample2x(value(*input), plan.shapes[*input], r0, r1, o)
                        }
                        (Op::MaxPool2x { input }, _) => {
                            let [h, w, c] = plan.shapes[*input];
                            (k.maxpool2_f32)(value(*input), h, w, c, r0, r1, o)
                        }
                        (Op::AvgPool2x { input }, _) => {
                            let [h, w, c] = plan.shapes[*input];
                            (k.avgpool2_f32)(value(*input), h, w, c, r0, r1, o)
                        }
                        _ => unreachable!("layers are built from the ops in order"),
                    }
                };
                if self.pool.threads() == 1 || work < MIN_PARALLEL_WORK || rows < 2 {
                    job(0, 1, 0);
                } else {
                    let chunks = (self.pool.threads() * pool::CHUNKS_PER_THREAD).min(rows);
                    self.pool.run(chunks, &job);
                }
            }
            self.buffers[ob] = out;
            if let (Some(t), Some(p)) = (start, self.profile.as_mut()) {
                p[i] += t.elapsed();
            }
        }
        Ok(())
    }
}
