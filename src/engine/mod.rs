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

mod denormals;
mod fuse;
mod layers;
mod plan;
pub mod pool;
mod squeeze;

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::{ModelFile, Precision};
use crate::graph::{Graph, Op, ValueId};
use crate::kernels::{self, generic, kernels, Kernels};
use layers::{apply_act, upsample2x, Layer};
use plan::Plan;
use pool::{split, Pool};

/// Layers with less work than this (multiply-accumulates, see [`ELEMENT_WORK`] for the
/// cheap ops) run on one thread: handing them over costs more than it saves.
const MIN_PARALLEL_WORK: usize = 100_000;

/// The work of one output element of the ops that are not convolutions (adds, gates,
/// pooling, upsampling), in multiply-accumulates. Measured on the liveness network (int8,
/// AVX-512, 2 threads; a hand-over costs ~3 µs): a 32×32×64 add or gate (65,536 elements,
/// 12–15 µs on one core) takes 8 µs on two, a 16×16×128 one (32,768 elements, 6 µs) 11 µs.
/// At 2 the first kind is shared and the second is not.
const ELEMENT_WORK: usize = 2;

/// `FACEGATE_WINOGRAD=off` keeps every dense conv on im2col + GEMM (to compare the two on
/// one binary); anything else, or unset, lets eligible 3×3 convs use Winograd.
fn winograd_enabled() -> bool {
    std::env::var("FACEGATE_WINOGRAD").as_deref() != Ok("off")
}

/// Share `chunk` of `chunks` of `rows` rows, split in whole units of `unit` rows (the last
/// unit may be short).
fn split_rows(rows: usize, unit: usize, chunk: usize, chunks: usize) -> (usize, usize) {
    let (u0, u1) = split(rows.div_ceil(unit), chunk, chunks);
    ((u0 * unit).min(rows), (u1 * unit).min(rows))
}

/// Runs `job` over `rows` rows (in units of `unit`): in chunks over the pool's threads, or
/// on the calling thread alone when `work` is too small to share or there is one row.
fn run_rows(
    pool: &mut Pool,
    rows: usize,
    unit: usize,
    work: usize,
    job: &(dyn Fn(usize, usize, usize) + Sync),
) {
    if pool.threads() == 1 || work < MIN_PARALLEL_WORK || rows < 2 {
        job(0, 1, 0);
    } else {
        pool.run(
            (pool.threads() * pool::CHUNKS_PER_THREAD).min(rows.div_ceil(unit)),
            job,
        );
    }
}

/// The number of threads "all cores" means here.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

struct SyncPtr<T>(*mut T);
impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SyncPtr<T> {}
// SAFETY: the pointer is only used to build disjoint sub-slices, one per thread, of a buffer
// that outlives the parallel section.
unsafe impl<T> Send for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// (A method, so closures capture the whole `Sync` wrapper, not the raw field.)
    fn get(self) -> *mut T {
        self.0
    }

    /// Elements `[from, from + len)` of the buffer.
    ///
    /// # Safety
    /// The range is inside the buffer, which outlives the slice, and no other thread uses it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, from: usize, len: usize) -> &mut [T] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.get().add(from), len) }
    }
}

/// The int8 side of an engine running an int8 model file: every value is an int8 NHWC
/// buffer with one scale; the network input is quantised from the f32 input buffer, and
/// the kept values (the outputs) are written as f32 too.
///
/// A mixed-precision file keeps a few convolutions in f32 (`ModelFile::float_layers`): such
/// a layer reads the f32 copy of its input (dequantised by the int8 producer, or written
/// directly by an int8 conv's f32 epilogue, or by another float layer) and writes f32,
/// quantised with its calibrated scale only where an int8 op reads it. All those f32
/// buffers are planned with the others, so a frame still allocates nothing.
struct Int8 {
    /// Real value per int8 step, per value.
    scales: Vec<f32>,
    /// Per op: a float layer (f32 weights; f32 in, f32 out).
    float_op: Vec<bool>,
    /// Per value: the int8 op producing it writes f32 only (every reader wants f32 — kept
    /// outputs or float layers — and the conv kind has an f32 epilogue).
    direct_f32: Vec<bool>,
    /// Per value: has an f32 copy (the input, kept values, values float layers read or
    /// write).
    has_f32: Vec<bool>,
    /// Per value: an int8 op reads it, so a float layer producing it also quantises it.
    read_i8: Vec<bool>,
    buffers: Vec<Vec<i8>>,
    scratch: Vec<i8>,
    acc: Vec<i32>,
    acc_len: usize,
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
    int8: Option<Int8>,
    /// Per op: the sibling group it leads (its layer computes them all, see `fuse`).
    siblings: Vec<Option<fuse::Siblings>>,
    /// Per op: a sibling computed by its group's lead, so skipped.
    fused_away: Vec<bool>,
    /// The last op a run computes ([`Engine::run_through`]; `usize::MAX`: all).
    last_op: usize,
}

impl Engine {
    /// Packs the weights of `file` (f32, f16 widened to f32, or int8 with its calibrated
    /// activation scales) for a network whose values `outputs` are read after each run;
    /// `threads` 0 means all cores.
    pub fn new(file: &ModelFile, outputs: &[ValueId], threads: usize) -> Result<Engine> {
        let scales =
            if file.precision == Precision::Int8 {
                Some(file.act_scales().ok_or_else(|| {
                    Error::Msg("int8 model file without activation scales".into())
                })?)
            } else {
                None
            };
        let graph = file.config.graph().clone();
        for &v in outputs {
            if v >= graph.num_values() {
                return Err(Error::Msg(format!(
                    "output value {v} does not exist ({} values)",
                    graph.num_values()
                )));
            }
        }
        let mut layers = graph
            .ops
            .iter()
            .map(|op| Layer::new(op, file, scales.as_deref(), kernels()))
            .collect::<Result<Vec<_>>>()?;
        // Sibling convolutions (SCRFD's heads of a level) become one wider conv.
        let mut siblings: Vec<Option<fuse::Siblings>> = vec![None; graph.ops.len()];
        let mut fused_away = vec![false; graph.ops.len()];
        for group in fuse::find(&graph, &layers, outputs) {
            let fused = {
                let members: Vec<&layers::ConvLayer> = group
                    .members
                    .iter()
                    .map(|&(i, _, _)| match &layers[i] {
                        Layer::Conv(c) => &**c,
                        _ => unreachable!("siblings are convolutions"),
                    })
                    .collect();
                fuse::fuse(&members)
            };
            let lead = group.lead();
            layers[lead] = Layer::Conv(Box::new(fused));
            for &(i, _, _) in &group.members[..group.members.len() - 1] {
                fused_away[i] = true;
            }
            siblings[lead] = Some(group);
        }
        // After fusing (which repacks im2col weights side by side): Winograd where it pays.
        if winograd_enabled() {
            for ((layer, op), _) in layers
                .iter_mut()
                .zip(&graph.ops)
                .zip(&fused_away)
                .filter(|(_, &f)| !f)
            {
                if let (Layer::Conv(c), Op::Conv { input, .. }) = (layer, op) {
                    c.use_winograd();
                    if let Some(s) = &scales {
                        c.use_winograd_for_i8(kernels(), s[*input]);
                    }
                }
            }
        }
        let int8 = scales.map(|scales| {
            let n = graph.num_values();
            let float_op: Vec<bool> = layers
                .iter()
                .map(|l| matches!(l, Layer::Conv(c) if c.is_float()))
                .collect();
            let mut wants_f32 = vec![false; n];
            outputs.iter().for_each(|&v| wants_f32[v] = true);
            let mut read_i8 = vec![false; n];
            for (i, op) in graph.ops.iter().enumerate() {
                for v in op.inputs() {
                    if float_op[i] {
                        wants_f32[v] = true;
                    } else {
                        read_i8[v] = true;
                    }
                }
            }
            let direct_f32 = (0..n)
                .map(|v| {
                    v > 0
                        && !float_op[v - 1]
                        && wants_f32[v]
                        && !read_i8[v]
                        && matches!(&layers[v - 1], Layer::Conv(c) if c.has_f32_output())
                })
                .collect();
            let has_f32 = (0..n)
                .map(|v| v == 0 || wants_f32[v] || float_op[v - 1])
                .collect();
            Int8 {
                scales,
                float_op,
                direct_f32,
                has_f32,
                read_i8,
                buffers: Vec::new(),
                scratch: Vec::new(),
                acc: Vec::new(),
                acc_len: 0,
            }
        });
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
            int8,
            siblings,
            fused_away,
            last_op: usize::MAX,
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
        let threads = self.pool.threads();
        if let Some(q) = self.int8.as_mut() {
            // f32 buffers only where the input, the kept values and the float layers'
            // inputs and outputs live.
            let mut f32_needed = vec![false; plan.buffer_lens.len()];
            for (v, &f) in q.has_f32.iter().enumerate() {
                if f {
                    f32_needed[plan.buffer_of[v]] = true;
                }
            }
            self.buffers = plan
                .buffer_lens
                .iter()
                .zip(&f32_needed)
                .map(|(&n, &f)| vec![0.0; if f { n } else { 0 }])
                .collect();
            q.buffers = plan.buffer_lens.iter().map(|&n| vec![0; n]).collect();
            q.scratch = vec![0; plan.scratch_len * threads];
            q.acc_len = (1..self.graph.num_values())
                .filter(|&v| q.direct_f32[v])
                .map(|v| match (&self.graph.ops[v - 1], &self.layers[v - 1]) {
                    (Op::Conv { input, .. }, Layer::Conv(c)) => c.acc_len(plan.shapes[*input]),
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            q.acc = vec![0; q.acc_len * threads];
            // The f32 im2col scratch, for float layers only.
            self.scratch = if q.float_op.iter().any(|&f| f) {
                vec![0.0; plan.scratch_len * threads]
            } else {
                Vec::new()
            };
        } else {
            self.buffers = plan.buffer_lens.iter().map(|&n| vec![0.0; n]).collect();
            self.scratch = vec![0.0; plan.scratch_len * threads];
        }
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
                let kind = c.weights.kind();
                format!(
                    "{kind} {0}x{0}/{1} {2}->{3} {name}",
                    c.kernel, c.stride, c.cin, c.cout
                )
            }
            (Op::Add { .. }, _) => "add".into(),
            (Op::Upsample2x { .. }, _) => "upsample2x".into(),
            (Op::MaxPool2x { .. }, _) => "maxpool2x".into(),
            (Op::AvgPool2x { .. }, _) => "avgpool2x".into(),
            (Op::GlobalAvgPool { .. }, _) => "global_avgpool".into(),
            (Op::ChannelGate { .. }, _) => "channel_gate".into(),
            _ => unreachable!(),
        };
        let fused = match self.fused_away[i] {
            true => {
                let lead = self
                    .siblings
                    .iter()
                    .flatten()
                    .find(|g| g.members.iter().any(|&(m, _, _)| m == i));
                format!(" (computed by op {})", lead.map_or(i, |g| g.lead()))
            }
            false => String::new(),
        };
        format!("{what}{shape}{fused}")
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

    /// The activation scales of an int8 engine (`None` for f32).
    pub fn act_scales(&self) -> Option<&[f32]> {
        self.int8.as_ref().map(|q| q.scales.as_slice())
    }

    /// Channels op `i` computes per output pixel: its value's, or all its siblings' when it
    /// leads a fused group.
    fn width(&self, i: usize, out_shape: [usize; 3]) -> usize {
        match &self.layers[i] {
            Layer::Conv(c) => c.cout,
            _ => out_shape[2],
        }
    }

    /// Rows a thread's share of op `i` should be a multiple of: a Winograd conv computes
    /// whole tiles of 4 rows, and a band ending mid-tile wastes the rest of that tile.
    fn row_unit(&self, i: usize) -> usize {
        match &self.layers[i] {
            Layer::Conv(c) if c.is_winograd() => kernels::WINO_TILE,
            _ => 1,
        }
    }

    /// (rows, work) of op `i`: how its output is split over threads (pixels for a pointwise
    /// conv, image rows otherwise) and how much work it is.
    fn rows_and_work(&self, plan: &Plan, i: usize) -> (usize, usize) {
        let out_shape = plan.shapes[i + 1];
        let out_len = out_shape[0] * out_shape[1] * self.width(i, out_shape);
        match (&self.graph.ops[i], &self.layers[i]) {
            (Op::Conv { input, .. }, Layer::Conv(c)) => {
                let x = plan.shapes[*input];
                let per_out =
                    c.kernel * c.kernel * if c.weights.is_depthwise() { 1 } else { c.cin };
                let rows = if c.weights.is_pointwise() {
                    x[0] * x[1]
                } else {
                    out_shape[0]
                };
                (rows, out_len * per_out)
            }
            _ => (out_shape[0], out_len * ELEMENT_WORK),
        }
    }

    /// [`Engine::run`] of ops `0..=last_op` only (and of the fused sibling groups they
    /// belong to, whose lead computes them all): the values of later ops are left as they
    /// were. Calibration that only needs the front of the network (bias correction's early
    /// layers) saves the rest.
    pub fn run_through(&mut self, last_op: usize) -> Result<()> {
        let stop = self
            .siblings
            .iter()
            .flatten()
            .filter(|g| g.members.iter().any(|&(m, _, _)| m <= last_op))
            .map(|g| g.lead())
            .fold(last_op, usize::max);
        self.last_op = stop;
        let r = self.run();
        self.last_op = usize::MAX;
        r
    }

    /// Runs the network on the input written through [`Engine::input_mut`].
    pub fn run(&mut self) -> Result<()> {
        let _flush = denormals::FlushDenormals::new();
        if self.int8.is_some() {
            return self.run_i8();
        }
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| Error::Msg("Engine::run before input_mut".into()))?;
        let k = self.kernels;
        for (i, (op, layer)) in self.graph.ops.iter().zip(&self.layers).enumerate() {
            if i > self.last_op {
                break;
            }
            if self.fused_away[i] {
                continue;
            }
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
                let out_len = out_shape[0] * out_shape[1] * self.width(i, out_shape);
                let outp = SyncPtr(out.as_mut_ptr());
                let scratch_len = plan.scratch_len;
                let scr = SyncPtr(self.scratch.as_mut_ptr());
                let (rows, work) = self.rows_and_work(plan, i);
                let unit = self.row_unit(i);
                let row_len = out_len / rows.max(1);
                debug_assert_eq!(row_len * rows, out_len);
                let job = |chunk: usize, chunks: usize, slot: usize| {
                    let (r0, r1) = split_rows(rows, unit, chunk, chunks);
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
                        (Op::GlobalAvgPool { input }, _) => {
                            squeeze::global_avg_pool_f32(value(*input), out_shape[2], o)
                        }
                        (Op::ChannelGate { input, gate }, _) => {
                            let r = r0 * row_len..r1 * row_len;
                            let c = out_shape[2];
                            squeeze::channel_gate_f32(&value(*input)[r], value(*gate), c, o)
                        }
                        _ => unreachable!("layers are built from the ops in order"),
                    }
                };
                run_rows(&mut self.pool, rows, unit, work, &job);
            }
            self.buffers[ob] = out;
            if let Some(g) = &self.siblings[i] {
                let pixels = out_shape[0] * out_shape[1];
                fuse::scatter(&mut self.buffers, |op| plan.buffer_of[op + 1], pixels, g);
            }
            if let (Some(t), Some(p)) = (start, self.profile.as_mut()) {
                p[i] += t.elapsed();
            }
        }
        Ok(())
    }

    /// [`Engine::run`] of an int8 model.
    fn run_i8(&mut self) -> Result<()> {
        let plan = self
            .plan
            .as_ref()
            .ok_or_else(|| Error::Msg("Engine::run before input_mut".into()))?;
        let k = self.kernels;
        let mut q = self.int8.take().expect("int8 engine");
        // The network input, quantised (unless only float layers read it), in bands of rows
        // over the threads: a 640×640 image is several megabytes to read.
        if q.read_i8[0] {
            let [h, w, c] = plan.shapes[0];
            let b = plan.buffer_of[0];
            let (src, inv) = (&self.buffers[b][..h * w * c], 1.0 / q.scales[0]);
            let dst = SyncPtr(q.buffers[b].as_mut_ptr());
            let job = |chunk: usize, chunks: usize, _slot: usize| {
                let (r0, r1) = split_rows(h, 1, chunk, chunks);
                let (from, len) = (r0 * w * c, (r1 - r0) * w * c);
                // SAFETY: rows [r0, r1) of the quantised input are this chunk's alone, inside
                // its buffer (as long as the f32 one, planned for the same shape).
                let d = unsafe { dst.slice(from, len) };
                (k.quantize_i8)(&src[from..from + len], inv, d);
            };
            run_rows(&mut self.pool, h, 1, h * w * c, &job);
        }
        for (i, (op, layer)) in self.graph.ops.iter().zip(&self.layers).enumerate() {
            if i > self.last_op {
                break;
            }
            if self.fused_away[i] {
                continue;
            }
            let start = self.profile.as_ref().map(|_| Instant::now());
            let v = i + 1;
            let out_shape = plan.shapes[v];
            let ob = plan.buffer_of[v];
            let mut out8 = std::mem::take(&mut q.buffers[ob]);
            let mut outf = std::mem::take(&mut self.buffers[ob]);
            {
                let bufs = &q.buffers;
                let value = |v: ValueId| {
                    let s = plan.shapes[v];
                    &bufs[plan.buffer_of[v]][..s[0] * s[1] * s[2]]
                };
                let fbufs = &self.buffers;
                let value_f32 = |v: ValueId| {
                    let s = plan.shapes[v];
                    &fbufs[plan.buffer_of[v]][..s[0] * s[1] * s[2]]
                };
                let scale = |v: ValueId| q.scales[v];
                let (float, direct, f32_copy, to_i8) =
                    (q.float_op[i], q.direct_f32[v], q.has_f32[v], q.read_i8[v]);
                let out_len = out_shape[0] * out_shape[1] * self.width(i, out_shape);
                debug_assert!(out8.len() >= out_len && (!f32_copy || outf.len() >= out_len));
                let o8p = SyncPtr(out8.as_mut_ptr());
                let ofp = SyncPtr(outf.as_mut_ptr());
                let scratch_len = plan.scratch_len;
                let scr = SyncPtr(q.scratch.as_mut_ptr());
                let scrf = SyncPtr(self.scratch.as_mut_ptr());
                let acc_len = q.acc_len;
                let accp = SyncPtr(q.acc.as_mut_ptr());
                let (rows, work) = self.rows_and_work(plan, i);
                let unit = self.row_unit(i);
                let row_len = out_len / rows.max(1);
                debug_assert_eq!(row_len * rows, out_len);
                let job = |chunk: usize, chunks: usize, slot: usize| {
                    let (r0, r1) = split_rows(rows, unit, chunk, chunks);
                    if r0 == r1 {
                        return;
                    }
                    let (from, len) = (r0 * row_len, (r1 - r0) * row_len);
                    // SAFETY (all slices below): rows [r0, r1) of the outputs are this
                    // thread's alone and inside the buffers (`out_len` fits both, checked
                    // above); scratch slot `slot` (< pool threads) belongs to this thread
                    // slot, which runs one chunk at a time; all outlive the job.
                    let s = unsafe { scr.slice(slot * scratch_len, scratch_len) };
                    if float {
                        let (Op::Conv { input, .. }, Layer::Conv(c)) = (op, layer) else {
                            unreachable!("float layers are convolutions")
                        };
                        // The f32 scratch has a slot per thread whenever a float layer exists.
                        let sf = unsafe { scrf.slice(slot * scratch_len, scratch_len) };
                        let of = unsafe { ofp.slice(from, len) };
                        c.run(k, value_f32(*input), plan.shapes[*input], r0, r1, sf, of);
                        if to_i8 {
                            let o = unsafe { o8p.slice(from, len) };
                            (k.quantize_i8)(of, 1.0 / scale(v), o);
                        }
                        return;
                    }
                    if direct {
                        let (Op::Conv { input, .. }, Layer::Conv(c)) = (op, layer) else {
                            unreachable!("direct f32 outputs are convolutions")
                        };
                        let of = unsafe { ofp.slice(from, len) };
                        let acc = unsafe { accp.slice(slot * acc_len, acc_len) };
                        c.run_i8_f32(k, value(*input), plan.shapes[*input], r0, r1, s, acc, of);
                        return;
                    }
                    let o = unsafe { o8p.slice(from, len) };
                    match (op, layer) {
                        (Op::Conv { input, .. }, Layer::Conv(c)) => {
                            c.run_i8(k, value(*input), plan.shapes[*input], r0, r1, s, o)
                        }
                        (Op::Add { a, b, act }, _) => {
                            let so = scale(v);
                            let r = from..from + len;
                            let (sa, sb) = (scale(*a) / so, scale(*b) / so);
                            (k.add_i8)(&value(*a)[r.clone()], sa, &value(*b)[r], sb, o);
                            layers::apply_act_i8(*act, so, o);
                        }
                        (Op::Upsample2x { input }, _) => {
                            upsample2x(value(*input), plan.shapes[*input], r0, r1, o)
                        }
                        (Op::MaxPool2x { input }, _) => {
                            let [h, w, c] = plan.shapes[*input];
                            generic::maxpool2_i8(value(*input), h, w, c, r0, r1, o)
                        }
                        (Op::AvgPool2x { input }, _) => {
                            let [h, w, c] = plan.shapes[*input];
                            generic::avgpool2_i8(value(*input), h, w, c, r0, r1, o)
                        }
                        (Op::GlobalAvgPool { input }, _) => {
                            let (si, so) = (scale(*input), scale(v));
                            squeeze::global_avg_pool_i8(value(*input), out_shape[2], si, so, o)
                        }
                        (Op::ChannelGate { input, gate }, _) => {
                            let scales = (scale(*input), scale(*gate), scale(v));
                            let x = &value(*input)[from..from + len];
                            squeeze::channel_gate_i8(x, value(*gate), out_shape[2], scales, o)
                        }
                        _ => unreachable!("layers are built from the ops in order"),
                    }
                    if f32_copy {
                        let of = unsafe { ofp.slice(from, len) };
                        let sv = scale(v);
                        for (f, &x) in of.iter_mut().zip(o.iter()) {
                            *f = x as f32 * sv;
                        }
                    }
                };
                run_rows(&mut self.pool, rows, unit, work, &job);
            }
            q.buffers[ob] = out8;
            self.buffers[ob] = outf;
            if let Some(g) = &self.siblings[i] {
                // fused siblings are direct f32 outputs: their values live in f32 buffers
                let pixels = out_shape[0] * out_shape[1];
                fuse::scatter(&mut self.buffers, |op| plan.buffer_of[op + 1], pixels, g);
            }
            if let (Some(t), Some(p)) = (start, self.profile.as_mut()) {
                p[i] += t.elapsed();
            }
        }
        self.int8 = Some(q);
        Ok(())
    }
}
