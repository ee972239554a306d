//! The public entry points of the SIMD GEMMs, declared once for every architecture: each
//! checks its operands and the CPU features, then enters its `unsafe` tile driver. Without
//! this, each of a dozen GEMMs per architecture would spell out the same twenty lines of
//! checks, and a check forgotten in one of them would be an out-of-bounds read.

use super::{PackedI8, PackedPanels, NR};

/// The weights' layout, checked by every entry point before its `unsafe` block.
pub(crate) trait CheckLayout {
    fn check_layout(&self);
}

impl<T> CheckLayout for PackedPanels<T> {
    fn check_layout(&self) {
        assert_eq!(
            self.data.len(),
            self.panels() * self.k * NR,
            "packed weights: bad length"
        );
    }
}

impl CheckLayout for PackedI8 {
    fn check_layout(&self) {
        assert!(
            self.kp == self.k.div_ceil(4) * 4,
            "packed i8 weights: kp {} for k {}",
            self.kp,
            self.k
        );
        assert_eq!(
            self.data.len(),
            self.panels() * self.groups() * NR * 4,
            "packed i8 weights: bad length"
        );
        assert_eq!(
            self.wsum.len(),
            self.panels() * NR,
            "packed i8 weights: bad wsum length"
        );
    }
}

/// Declares a GEMM's public entry points over one tile driver: `$name` on a plain `[M×K]`
/// A and, where a `/ $window` name is given, the same on in-place conv windows
/// ([`super::WindowRows`]). Each validates every operand once (A's rows in runs of whole
/// `$group`s, the packed weights, the output rows, the epilogue) and asserts the CPU features
/// (`$has()`), then runs `$drive` — which sees `a` as a [`super::RowsPtr`] — in `unsafe`.
/// With `const W` after the driver's arguments, `W` is a `bool` constant in `$drive`: true in
/// the window entry (for drivers specialised on the shape of A).
macro_rules! gemm_entries {
    (
        $(#[$doc:meta])*
        $name:ident / $window:ident: $t:ty, $packed:ident $(, $epi:ident: $et:ty)? => $o:ty;
        group $group:literal, $has:ident, $feat:literal;
        |$a:ident, $b:ident, $m0:ident, $m1:ident, $out:ident $(, const $w:ident)?| $drive:expr
    ) => {
        gemm_entries! {
            $(#[$doc])*
            $name: $t, $packed $(, $epi: $et)? => $o;
            group $group, $has, $feat;
            |$a, $b, $m0, $m1, $out $(, const $w)?| $drive
        }
        #[doc = concat!("[`", stringify!($name), "`] reading A in place through `WindowRows`.")]
        pub(crate) fn $window(
            $a: &$crate::kernels::WindowRows<$t>,
            $b: &$packed,
            $($epi: $et,)?
            $m0: usize,
            $m1: usize,
            $out: &mut [$o],
        ) {
            $a.check($b.k, $group, $m0, $m1);
            assert_eq!($out.len(), ($m1 - $m0) * $b.n, "out len vs rows [{}, {})", $m0, $m1);
            $crate::kernels::entries::CheckLayout::check_layout($b);
            $( $epi.check($b.n); )?
            assert!($has(), concat!(stringify!($window), " needs ", $feat));
            $( const $w: bool = true; )?
            // SAFETY: the CPU features are asserted; the window's rows [m0,m1) (validated by
            // `WindowRows::check`), the packed panels, the epilogue vectors and the output
            // are in bounds by the checks above.
            unsafe {
                let $a = $crate::kernels::RowsPtr::window($a);
                $drive
            }
        }
    };
    (
        $(#[$doc:meta])*
        $name:ident: $t:ty, $packed:ident $(, $epi:ident: $et:ty)? => $o:ty;
        group $group:literal, $has:ident, $feat:literal;
        |$a:ident, $b:ident, $m0:ident, $m1:ident, $out:ident $(, const $w:ident)?| $drive:expr
    ) => {
        $(#[$doc])*
        pub(crate) fn $name(
            $a: &[$t],
            $b: &$packed,
            $($epi: $et,)?
            $m0: usize,
            $m1: usize,
            $out: &mut [$o],
        ) {
            $crate::kernels::generic::check_gemm($a.len(), $b.k, $b.n, $m0, $m1, $out.len());
            $crate::kernels::entries::CheckLayout::check_layout($b);
            $( $epi.check($b.n); )?
            assert!($has(), concat!(stringify!($name), " needs ", $feat));
            $( const $w: bool = false; )?
            // SAFETY: the CPU features are asserted; rows [m0,m1) of A, the packed panels, the
            // epilogue vectors and the (m1-m0)×N output are in bounds by the checks above.
            unsafe {
                let $a = $crate::kernels::RowsPtr::matrix($a, $b.k);
                $drive
            }
        }
    };
}
