//! Weights packed once at load time into one ISA-independent layout: panels of [`NR`]
//! output channels for the GEMMs (f32, f16, int8 in groups of 4 `k`), taps-outer for the
//! depthwise convs, and the reverse (`unpack_*`) for repacking. One layout for every table,
//! so a model file loads the same way whichever kernels the CPU gets.

/// Width (output channels) of one packed weight panel, for every ISA.
pub const NR: usize = 8;

/// GEMM weights `[K × N]` packed in panels (pointwise and im2col'd dense convs), f32 or f16.
///
/// Layout: `ceil(N/8)` panels of 8 output channels; panel `p` holds `K` rows of 8 values:
/// `data[(p*K + k)*8 + j] = w[n = 8p + j][k]`; channels `n >= N` are zero. One f16 row is
/// then exactly one 128-bit vector (`.8h`), one f32 row two.
#[derive(Clone, Debug)]
pub struct PackedPanels<T> {
    pub k: usize,
    pub n: usize,
    pub data: Vec<T>,
}
pub type PackedF32 = PackedPanels<f32>;
/// f16 weights kept as f16, for the kernels with f16 arithmetic
/// ([`F16Kernels`](super::F16Kernels)).
pub type PackedF16 = PackedPanels<half::f16>;

impl<T> PackedPanels<T> {
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
}

impl PackedF16 {
    /// The same weights widened to f32 (exact), for the f32 kernels (Winograd).
    pub fn widen(&self) -> PackedF32 {
        PackedF32 {
            k: self.k,
            n: self.n,
            data: self.data.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// GEMM weights `[K × N]` packed for int8, in groups of 4 consecutive `k` (the `sdot` shape).
///
/// `kp = round_up(K, 4)`, `G = kp/4`. Layout: panels of 8 output channels; panel `p`, group
/// `g`, channel `j`, byte `r`: `data[((p*G + g)*8 + j)*4 + r] = w[8p + j][4g + r]`; padding
/// (`k >= K` or `n >= N`) is zero. So one group of one panel is 32 bytes = 8 channels × 4 k.
///
/// `wsum[n] = Σ_k w[n][k]` (`panels × 8` entries, zero for padding channels): kernels whose
/// dot-product instruction takes unsigned activations (x86 VNNI `vpdpbusd`) feed `a + 128`
/// and subtract `128 · wsum[n]`, which keeps the result exact.
#[derive(Clone, Debug)]
pub struct PackedI8 {
    pub k: usize,
    pub kp: usize,
    pub n: usize,
    pub data: Vec<i8>,
    pub wsum: Vec<i32>,
}

impl PackedI8 {
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }
    pub fn groups(&self) -> usize {
        self.kp / 4
    }
}

/// Depthwise weights: `data[(ky*k + kx)*C + c]` (taps outer, channels contiguous).
#[derive(Clone, Debug)]
pub struct PackedDw<T> {
    pub k: usize,
    pub c: usize,
    pub data: Vec<T>,
    /// int8 3×3 only (filled by [`pack_dw_i8`], else empty): the taps in pairs
    /// `(0,1) (2,3) (4,5) (6,7) (8,–)`, widened to i16 and interleaved per channel, each pair's
    /// row `[w_a[j % C], w_b[j % C]]` for `j < C + DW_PAIR_PAD`. A kernel that walks a row's
    /// pixels and channels as one flat run reads the weights of any 32 consecutive lanes,
    /// starting at any channel, as one contiguous load.
    pub tap_pairs: Vec<i16>,
}

/// How far [`PackedDw::tap_pairs`] rows run past `C` (one 32-lane vector).
pub const DW_PAIR_PAD: usize = 32;
pub type PackedDwF32 = PackedDw<f32>;
pub type PackedDwI8 = PackedDw<i8>;
pub type PackedDwF16 = PackedDw<half::f16>;

/// Pack pointwise weights given as `[N][K]` row-major (ONNX/PyTorch `[Cout][Cin][1][1]`).
pub fn pack_pw_f32(w: &[f32], n: usize, k: usize) -> PackedF32 {
    pack_pw(w, n, k)
}

/// [`pack_pw_f32`] keeping f16 weights as f16.
pub fn pack_pw_f16(w: &[half::f16], n: usize, k: usize) -> PackedF16 {
    pack_pw(w, n, k)
}

/// Pack `[N][K]` row-major weights of any element type into panels.
pub fn pack_pw<T: Copy + Default>(w: &[T], n: usize, k: usize) -> PackedPanels<T> {
    assert_eq!(
        w.len(),
        n * k,
        "pointwise weights: len {} != {n}*{k}",
        w.len()
    );
    let panels = n.div_ceil(NR);
    let mut data = vec![T::default(); panels * k * NR];
    for nn in 0..n {
        let (p, j) = (nn / NR, nn % NR);
        for kk in 0..k {
            data[(p * k + kk) * NR + j] = w[nn * k + kk];
        }
    }
    PackedPanels { k, n, data }
}

/// Pack int8 pointwise weights given as `[N][K]` row-major.
pub fn pack_pw_i8(w: &[i8], n: usize, k: usize) -> PackedI8 {
    assert_eq!(
        w.len(),
        n * k,
        "pointwise weights: len {} != {n}*{k}",
        w.len()
    );
    let kp = k.div_ceil(4) * 4;
    let g = kp / 4;
    let panels = n.div_ceil(NR);
    let mut data = vec![0i8; panels * g * NR * 4];
    let mut wsum = vec![0i32; panels * NR];
    for nn in 0..n {
        let (p, j) = (nn / NR, nn % NR);
        for kk in 0..k {
            data[((p * g + kk / 4) * NR + j) * 4 + kk % 4] = w[nn * k + kk];
            wsum[nn] += i32::from(w[nn * k + kk]);
        }
    }
    PackedI8 {
        k,
        kp,
        n,
        data,
        wsum,
    }
}

/// The `[N][K]` row-major weights a [`PackedPanels`] was packed from (to repack, e.g. to fuse
/// convolutions side by side).
pub fn unpack_pw<T: Copy + Default>(b: &PackedPanels<T>) -> Vec<T> {
    let mut w = vec![T::default(); b.n * b.k];
    for nn in 0..b.n {
        let (p, j) = (nn / NR, nn % NR);
        for kk in 0..b.k {
            w[nn * b.k + kk] = b.data[(p * b.k + kk) * NR + j];
        }
    }
    w
}

/// The `[N][K]` row-major weights a [`PackedI8`] was packed from.
pub fn unpack_pw_i8(b: &PackedI8) -> Vec<i8> {
    let g = b.groups();
    let mut w = vec![0i8; b.n * b.k];
    for nn in 0..b.n {
        let (p, j) = (nn / NR, nn % NR);
        for kk in 0..b.k {
            w[nn * b.k + kk] = b.data[((p * g + kk / 4) * NR + j) * 4 + kk % 4];
        }
    }
    w
}

/// Reorder dense conv weights OIHW `[Cout][Cin][kh][kw]` to `[Cout][(ky,kx,ci)]`, the order of
/// the NHWC im2col rows.
pub(super) fn oihw_to_ohwi<T: Copy>(
    w: &[T],
    cout: usize,
    cin: usize,
    kh: usize,
    kw: usize,
) -> Vec<T> {
    assert_eq!(
        w.len(),
        cout * cin * kh * kw,
        "conv weights: len {} != {cout}*{cin}*{kh}*{kw}",
        w.len()
    );
    let mut out = Vec::with_capacity(w.len());
    for o in 0..cout {
        for ky in 0..kh {
            for kx in 0..kw {
                for ci in 0..cin {
                    out.push(w[((o * cin + ci) * kh + ky) * kw + kx]);
                }
            }
        }
    }
    out
}

/// Pack dense conv weights (OIHW) for [`Kernels::conv_f32`](super::Kernels::conv_f32):
/// `K = kh*kw*cin`, order (ky,kx,ci).
pub fn pack_conv_f32(w: &[f32], cout: usize, cin: usize, kh: usize, kw: usize) -> PackedF32 {
    pack_pw(&oihw_to_ohwi(w, cout, cin, kh, kw), cout, kh * kw * cin)
}

/// [`pack_conv_f32`] keeping f16 weights as f16 (for
/// [`Kernels::conv_f16`](super::Kernels::conv_f16)).
pub fn pack_conv_f16(w: &[half::f16], cout: usize, cin: usize, kh: usize, kw: usize) -> PackedF16 {
    pack_pw(&oihw_to_ohwi(w, cout, cin, kh, kw), cout, kh * kw * cin)
}

/// Pack int8 dense conv weights (OIHW) for [`Kernels::conv_i8`](super::Kernels::conv_i8):
/// `K = kh*kw*cin`, order (ky,kx,ci), as for f32.
pub fn pack_conv_i8(w: &[i8], cout: usize, cin: usize, kh: usize, kw: usize) -> PackedI8 {
    pack_pw_i8(&oihw_to_ohwi(w, cout, cin, kh, kw), cout, kh * kw * cin)
}

/// Pack int8 dense conv weights (OIHW) with every kernel row padded to whole 4-byte groups:
/// `K = kh * round_up(kw*cin, 4)`, zero weights in the padding. Tables with in-place windows
/// ([`Kernels::window_i8`](super::Kernels::window_i8)) then read a kernel row as whole
/// groups even where `kw*cin` is not a multiple of 4 (the 3-channel stems: 9 bytes read as 12, the last 3 times zero).
/// Identical to [`pack_conv_i8`] where `kw*cin % 4 == 0`.
pub fn pack_conv_i8_padded(w: &[i8], cout: usize, cin: usize, kh: usize, kw: usize) -> PackedI8 {
    let run = kw * cin;
    let run4 = run.next_multiple_of(4);
    let ohwi = oihw_to_ohwi(w, cout, cin, kh, kw);
    let mut padded = vec![0i8; cout * kh * run4];
    for (dst, src) in padded.chunks_exact_mut(run4).zip(ohwi.chunks_exact(run)) {
        dst[..run].copy_from_slice(src);
    }
    pack_pw_i8(&padded, cout, kh * run4)
}

/// Pack depthwise weights given as `[C][1][k][k]`.
pub fn pack_dw<T: Copy + Default>(w: &[T], c: usize, k: usize) -> PackedDw<T> {
    assert_eq!(
        w.len(),
        c * k * k,
        "depthwise weights: len {} != {c}*{k}*{k}",
        w.len()
    );
    let mut data = vec![T::default(); c * k * k];
    for cc in 0..c {
        for t in 0..k * k {
            data[t * c + cc] = w[cc * k * k + t];
        }
    }
    PackedDw {
        k,
        c,
        data,
        tap_pairs: Vec::new(),
    }
}

/// [`pack_dw`] for int8 weights, with [`PackedDw::tap_pairs`] for 3×3 filters.
pub fn pack_dw_i8(w: &[i8], c: usize, k: usize) -> PackedDwI8 {
    let mut p = pack_dw(w, c, k);
    if k == 3 {
        let run = c + DW_PAIR_PAD;
        p.tap_pairs = vec![0; 5 * run * 2];
        for q in 0..5 {
            for j in 0..run {
                let at = (q * run + j) * 2;
                p.tap_pairs[at] = p.data[2 * q * c + j % c] as i16;
                if 2 * q + 1 < 9 {
                    p.tap_pairs[at + 1] = p.data[(2 * q + 1) * c + j % c] as i16;
                }
            }
        }
    }
    p
}
