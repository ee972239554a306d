//! `tract-runner MODEL.onnx WxH ITERS`: loads an ONNX model into tract-onnx (f32, graph
//! optimised as tract's users run it), then runs it ITERS times on one fixed input of shape
//! 1×3×H×W. Two uses: the cost of one more iteration counted from outside (instructions
//! under qemu, see ../qemu_insn.sh: ITERS=N+1 minus ITERS=N is one inference), and the
//! `tract` column of ../peers.py, for which the last stdout line is `{"median_ms": f}` (the
//! median of the ITERS timed runs after one untimed warm-up run). Single-threaded.

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} MODEL.onnx WxH ITERS", args[0]);
        std::process::exit(2);
    }
    let (w, h) = args[2]
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        .expect("size must be WxH");
    let iters: usize = args[3].parse().expect("ITERS must be a number");
    let model = tract_onnx::onnx()
        .model_for_path(&args[1])?
        .with_input_fact(0, f32::fact([1, 3, h, w]).into())?
        .into_optimized()?
        .into_runnable()?;
    // Deterministic values in [-1, 1): the content does not change the work done.
    let mut s = 0x9e37_79b9u32;
    let input = tract_ndarray::Array4::<f32>::from_shape_fn((1, 3, h, w), |_| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    });
    let input: Tensor = input.into();
    // One untimed warm-up run (a constant for the instruction counts).
    model.run(tvec!(input.clone().into_tvalue()))?;
    let mut sum = 0.0f32;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = std::time::Instant::now();
        let out = model.run(tvec!(input.clone().into_tvalue()))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        // Read one value so the run cannot be considered dead.
        sum += out[0].to_plain_array_view::<f32>()?.iter().next().copied().unwrap_or(0.0);
    }
    times.sort_by(f64::total_cmp);
    let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
    println!("iters {iters} checksum {sum}");
    println!("{{\"median_ms\": {median:.3}}}");
    Ok(())
}
