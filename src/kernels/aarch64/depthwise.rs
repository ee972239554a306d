//! What the aarch64 depthwise kernels share: the clipped tap window [`Win`] of one output
//! pixel. The kernels, vectorised across channels on ARMv8.0 NEON (the dotprod extension
//! adds none, the same kernels run there; the f16 depthwise is in `fp16.rs`), are in
//! `depthwise_f32.rs` (`fmla`) and `depthwise_i8.rs` (taps in pairs summed in i16 by
//! `smull` + `smlal`, exact within ±127, then widened into i32).

#[derive(Clone, Copy)]
pub(super) struct Win {
    pub(super) ky0: usize,
    pub(super) ky1: usize,
    pub(super) kx0: usize,
    pub(super) kx1: usize,
    pub(super) iy0: isize,
    pub(super) ix0: isize,
}
