//! The two ops of a squeeze-excitation block that are not convolutions: the global average
//! pool (squeeze) and the sigmoid channel gate (excitation), on NHWC f32 and int8 values.
//!
//! They are plain Rust rather than kernel-table entries: the gate multiplies each value of a
//! feature map once (the anti-spoofing nets gate 32×32×64, 16×16×128 and 8×8×128 maps), so
//! one integer loop serves every ISA; on x86-64 it is compiled a second time for AVX2
//! (`avx2_twin!`), since the portable SSE2 build cannot vectorise it (3× slower). Neither
//! allocates: the gate's sigmoids go through a fixed stack block.

use crate::kernels::sat_i8;

/// Channels whose sigmoid is computed at once (a stack block; wider gates take several).
const BLOCK: usize = 64;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Mean of each channel of an `h×w×c` map into `out` (`c` values).
pub(crate) fn global_avg_pool_f32(x: &[f32], c: usize, out: &mut [f32]) {
    let out = &mut out[..c];
    out.fill(0.0);
    let pixels = x.len() / c;
    for px in x.chunks_exact(c) {
        for (o, &v) in out.iter_mut().zip(px) {
            *o += v;
        }
    }
    let inv = 1.0 / pixels as f32;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// [`global_avg_pool_f32`] of int8 values of scale `s_in`, written as int8 of scale `s_out`.
/// Sums run pixel by pixel over a block of channels (contiguous reads, i32 sums on the
/// stack).
pub(crate) fn global_avg_pool_i8(x: &[i8], c: usize, s_in: f32, s_out: f32, out: &mut [i8]) {
    let pixels = x.len() / c;
    let k = s_in / (s_out * pixels as f32);
    let mut sums = [0i32; BLOCK];
    for c0 in (0..c).step_by(BLOCK) {
        let n = BLOCK.min(c - c0);
        sums[..n].fill(0);
        sum_pixels(x, c, c0, &mut sums[..n]);
        for (o, &s) in out[c0..c0 + n].iter_mut().zip(&sums[..n]) {
            *o = sat_i8(s as f32 * k);
        }
    }
}

avx2_twin!(sum_pixels => sum_pixels_body(x: &[i8], c: usize, c0: usize, sums: &mut [i32]));

/// Adds channels `c0..c0 + sums.len()` of every pixel of `x` into `sums`.
#[inline(always)]
fn sum_pixels_body(x: &[i8], c: usize, c0: usize, sums: &mut [i32]) {
    let n = sums.len();
    for px in x.chunks_exact(c) {
        for (s, &v) in sums.iter_mut().zip(&px[c0..c0 + n]) {
            *s += v as i32;
        }
    }
}

/// Pixels of `x` (`c` channels each) times `sigmoid(gate)` per channel, into `out`.
pub(crate) fn channel_gate_f32(x: &[f32], gate: &[f32], c: usize, out: &mut [f32]) {
    let mut s = [0f32; BLOCK];
    for c0 in (0..c).step_by(BLOCK) {
        let n = BLOCK.min(c - c0);
        for (d, &g) in s[..n].iter_mut().zip(&gate[c0..c0 + n]) {
            *d = sigmoid(g);
        }
        for (px, o) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
            for ((o, &v), &g) in o[c0..c0 + n].iter_mut().zip(&px[c0..c0 + n]).zip(&s[..n]) {
                *o = v * g;
            }
        }
    }
}

/// Fixed-point bits of the int8 gate's per-channel multipliers.
const GATE_BITS: u32 = 16;

/// [`channel_gate_f32`] on int8 values: `x` of scale `s_x`, the gate's pre-sigmoid values of
/// scale `s_g`, the output of scale `s_out`. Each channel's `sigmoid · s_x / s_out` becomes
/// a 16-bit fixed-point multiplier once per call, so the map itself is integer arithmetic
/// (|x| ≤ 127 and multipliers below 2^23 keep the products inside i32).
pub(crate) fn channel_gate_i8(
    x: &[i8],
    gate: &[i8],
    c: usize,
    (s_x, s_g, s_out): (f32, f32, f32),
    out: &mut [i8],
) {
    let mut m = [0i32; BLOCK];
    let k = s_x / s_out * (1u32 << GATE_BITS) as f32;
    for c0 in (0..c).step_by(BLOCK) {
        let n = BLOCK.min(c - c0);
        for (d, &g) in m[..n].iter_mut().zip(&gate[c0..c0 + n]) {
            *d = (sigmoid(g as f32 * s_g) * k).round().min((1 << 23) as f32) as i32;
        }
        gate_pixels(x, c, c0, &m[..n], out);
    }
}

avx2_twin!(gate_pixels => gate_pixels_body(x: &[i8], c: usize, c0: usize, m: &[i32], out: &mut [i8]));

/// Channels `c0..c0 + m.len()` of every pixel of `x` times their fixed-point multipliers
/// `m`, rounded, into `out`.
#[inline(always)]
fn gate_pixels_body(x: &[i8], c: usize, c0: usize, m: &[i32], out: &mut [i8]) {
    const HALF: i32 = 1 << (GATE_BITS - 1);
    let n = m.len();
    for (px, o) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        for ((o, &v), &g) in o[c0..c0 + n].iter_mut().zip(&px[c0..c0 + n]).zip(m) {
            *o = ((v as i32 * g + HALF) >> GATE_BITS).clamp(-127, 127) as i8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_pool_by_hand() {
        // 2×2 pixels, 2 channels: channel 0 is 1,2,3,6 (mean 3); channel 1 is -4,0,0,0 (-1).
        let x = [1.0, -4.0, 2.0, 0.0, 3.0, 0.0, 6.0, 0.0];
        let mut o = [9.0; 2];
        global_avg_pool_f32(&x, 2, &mut o);
        assert_eq!(o, [3.0, -1.0]);
        // The same in int8 at scale 0.5 in and 0.25 out: means 3 and -1 real → 12, -4.
        let xi: Vec<i8> = x.iter().map(|&v| (v / 0.5) as i8).collect();
        let mut oi = [0i8; 2];
        global_avg_pool_i8(&xi, 2, 0.5, 0.25, &mut oi);
        assert_eq!(oi, [12, -4]);
    }

    #[test]
    fn gate_by_hand() {
        // sigmoid(0) = 0.5; sigmoid(ln 3) = 0.75.
        let g = [0.0, 3f32.ln()];
        let x = [2.0, 4.0, -8.0, 1.0];
        let mut o = [0.0; 4];
        channel_gate_f32(&x, &g, 2, &mut o);
        let want = [1.0, 3.0, -4.0, 0.75];
        for (a, b) in o.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{o:?} vs {want:?}");
        }
        // int8: x at scale 0.5 (4, 8, -16, 2 → 2, 4, -8, 1 real), gate at scale 1 (0 and 1 →
        // sigmoids 0.5, 0.731), out at 0.25: 1/0.25 = 4, 2.92/0.25 = 11.7 → 12, -4/0.25 = -16,
        // 0.731/0.25 = 2.9 → 3.
        let xi = [4i8, 8, -16, 2];
        let mut oi = [0i8; 4];
        channel_gate_i8(&xi, &[0, 1], 2, (0.5, 1.0, 0.25), &mut oi);
        assert_eq!(oi, [4, 12, -16, 3]);
    }

    #[test]
    fn int8_gate_is_within_one_step_of_the_real_product() {
        // Many channels (several blocks), every int8 input value: the fixed-point multiply
        // lands within one output step of round(x · s_x · sigmoid(g · s_g) / s_out).
        let c = BLOCK + 9;
        let gate: Vec<i8> = (0..c).map(|i| (i as i32 * 7 % 255 - 127) as i8).collect();
        let x: Vec<i8> = (0..255 * c).map(|i| ((i / c) as i32 - 127) as i8).collect();
        let (sx, sg, so) = (0.05, 0.08, 0.04);
        let mut o = vec![0i8; x.len()];
        channel_gate_i8(&x, &gate, c, (sx, sg, so), &mut o);
        for (i, (&v, &y)) in x.iter().zip(&o).enumerate() {
            let real = v as f32 * sx * sigmoid(gate[i % c] as f32 * sg) / so;
            let want = real.round().clamp(-127.0, 127.0);
            assert!(
                (y as f32 - want).abs() <= 1.0,
                "x {v} gate {}: {y} vs {real}",
                gate[i % c]
            );
        }
    }

    #[test]
    fn wide_gates_cross_blocks() {
        // More channels than one stack block: every channel still gets its own gate.
        let c = BLOCK * 2 + 5;
        let g: Vec<f32> = (0..c).map(|i| i as f32 * 0.01 - 0.5).collect();
        let x: Vec<f32> = (0..3 * c).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut o = vec![0.0; 3 * c];
        channel_gate_f32(&x, &g, c, &mut o);
        for (i, (&v, &y)) in x.iter().zip(&o).enumerate() {
            let want = v / (1.0 + (-g[i % c]).exp());
            assert!((y - want).abs() < 1e-6);
        }
    }
}
