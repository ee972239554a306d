//! Depthwise convolution (one filter per channel) in f32 as a candle `CustomOp1`. candle's
//! own grouped convolution runs one convolution per channel, which makes SCRFD-500M and
//! MobileFaceNet (mostly depthwise) 10× slower than they need to be even in the reference
//! f32 path.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};

/// A depthwise k×k convolution with its bias, stride and symmetric zero padding.
#[derive(Debug, Clone)]
pub struct DepthwiseConv {
    /// `channels × k × k`, row-major.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl DepthwiseConv {
    pub fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        let f = |i: usize| (i + 2 * self.pad).saturating_sub(self.kernel) / self.stride + 1;
        (f(h), f(w))
    }

    /// Computes one channel plane `src` (h×w) into `dst` (oh×ow).
    fn plane(
        &self,
        c: usize,
        src: &[f32],
        (h, w): (usize, usize),
        dst: &mut [f32],
        (oh, ow): (usize, usize),
    ) {
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        let wk = &self.weight[c * k * k..(c + 1) * k * k];
        dst.fill(self.bias[c]);
        for ky in 0..k {
            for kx in 0..k {
                let wv = wk[ky * k + kx];
                // Output columns whose input column ox*s + kx - p lies inside [0, w).
                let ox_lo = (p.saturating_sub(kx)).div_ceil(s);
                let ox_hi = if w + p > kx {
                    ((w + p - kx - 1) / s + 1).min(ow)
                } else {
                    0
                };
                if ox_lo >= ox_hi {
                    continue;
                }
                for oy in 0..oh {
                    let iy = (oy * s + ky) as isize - p as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let row = &src[iy as usize * w..(iy as usize + 1) * w];
                    let out = &mut dst[oy * ow..(oy + 1) * ow];
                    let x0 = ox_lo * s + kx - p;
                    if s == 1 {
                        let n = ox_hi - ox_lo;
                        for (o, i) in out[ox_lo..ox_hi].iter_mut().zip(&row[x0..x0 + n]) {
                            *o += wv * i;
                        }
                    } else {
                        for (j, o) in out[ox_lo..ox_hi].iter_mut().enumerate() {
                            *o += wv * row[x0 + j * s];
                        }
                    }
                }
            }
        }
    }
}

impl CustomOp1 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "facegate-depthwise-conv"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != self.channels {
            candle_core::bail!(
                "depthwise conv: {c} input channels, weights for {}",
                self.channels
            )
        }
        let src = match storage {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("depthwise conv: f32 input expected"),
        };
        let src = match layout.contiguous_offsets() {
            Some((a, b)) => &src[a..b],
            None => candle_core::bail!("depthwise conv: input must be contiguous"),
        };
        let (oh, ow) = self.out_size(h, w);
        let mut dst = vec![0f32; n * c * oh * ow];
        for (sb, db) in src
            .chunks_exact(c * h * w)
            .zip(dst.chunks_exact_mut(c * oh * ow))
        {
            for (ch, (sp, dp)) in sb
                .chunks_exact(h * w)
                .zip(db.chunks_exact_mut(oh * ow))
                .enumerate()
            {
                self.plane(ch, sp, (h, w), dp, (oh, ow));
            }
        }
        Ok((CpuStorage::F32(dst), Shape::from((n, c, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The depthwise op agrees with candle's own grouped convolution (an independent
    /// implementation) on odd sizes, strides 1 and 2 and kernels 3 and 7.
    #[test]
    fn matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        for &(c, h, w, k, s, p) in &[
            (3, 7, 5, 3, 1, 1),
            (5, 9, 11, 3, 2, 1),
            (4, 7, 7, 7, 1, 0),
            (2, 1, 3, 3, 1, 1),
            (3, 8, 6, 3, 2, 1),
        ] {
            let x: Vec<f32> = (0..c * h * w)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let wt: Vec<f32> = (0..c * k * k)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
                .collect();
            let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.5 - 1.0).collect();
            let xt = Tensor::from_vec(x, (1, c, h, w), &dev).unwrap();
            let wtt = Tensor::from_vec(wt.clone(), (c, 1, k, k), &dev).unwrap();
            let bt = Tensor::from_vec(bias.clone(), (1, c, 1, 1), &dev).unwrap();
            let want = xt
                .conv2d(&wtt, p, s, 1, c)
                .unwrap()
                .broadcast_add(&bt)
                .unwrap();
            let op = DepthwiseConv {
                weight: wt,
                bias,
                channels: c,
                kernel: k,
                stride: s,
                pad: p,
            };
            let got = xt.apply_op1_no_bwd(&op).unwrap();
            assert_eq!(got.dims(), want.dims(), "shape for {c}x{h}x{w} k{k} s{s}");
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "max diff {diff} for {c}x{h}x{w} k{k} s{s}");
        }
    }
}
