//! What the x86 depthwise kernels share: their entry-point macro (`dw_entry!`: checks,
//! feature assertion, then the 3×3 or the any-size instance) and the window of one output
//! pixel ([`Win`]). The kernels are in `depthwise_f32.rs` and `depthwise_i8.rs`.

/// The public depthwise entry points: check every slice and length once, assert the CPU
/// features, then run `$imp` (`WIDE` = `$wide` for 3×3 kernels; other sizes go through the
/// per-pixel path). Every input tap read lies inside the (validated) input since the tap
/// ranges are clipped to the image; outputs cover exactly rows [y0,y1).
macro_rules! dw_entry {
    ($name:ident, $t:ty, $pk:ty, $epi:ty, $imp:ident, $wide:literal, $has:ident, $feat:literal, $doc:literal) => {
        #[doc = $doc]
        pub(crate) fn $name(
            input: &[$t],
            s: &ConvShape,
            w: &$pk,
            epi: &$epi,
            y0: usize,
            y1: usize,
            out: &mut [$t],
        ) {
            $crate::kernels::generic::check_dw(input.len(), s, w, y0, y1, out.len());
            epi.check(s.cin);
            assert!($has(), concat!(stringify!($name), " needs ", $feat));
            // SAFETY: features asserted; reads and writes in bounds (see the macro's doc).
            unsafe {
                if s.kh == 3 {
                    $imp::<3, $wide>(input, s, w, epi, y0, y1, out)
                } else {
                    $imp::<0, false>(input, s, w, epi, y0, y1, out)
                }
            }
        }
    };
}

#[derive(Clone, Copy)]
pub(super) struct Win {
    pub(super) ky0: usize,
    pub(super) ky1: usize,
    pub(super) kx0: usize,
    pub(super) kx1: usize,
    pub(super) iy0: isize,
    pub(super) ix0: isize,
}
