//! Denormal floats read and written as zero while the engine computes.
//!
//! Why: MobileFaceNet's f32 activations and weights reach the denormal range (magnitudes
//! below 1.2e-38), and an x86 core takes a slow microcode path for every multiply that
//! reads or produces one. Measured on this project's AVX-512 machine, mobilefacenet_512 f32
//! took 2.54 ms a frame with denormals and 2.06 ms with them flushed. A value that small
//! changes no embedding, score or box (the tests against onnxruntime hold either way).
//!
//! The mode is per thread: [`FlushDenormals`] sets it for the length of a run on the calling
//! thread and restores the caller's own afterwards, so code around the engine never sees a
//! changed floating-point environment; the pool's workers set it once, as they run nothing
//! but the engine's layers. Other architectures keep their default mode (not measured
//! there: we have no ARM board).

/// While alive, the calling thread flushes denormal results to zero and reads denormal
/// operands as zero (x86-64: MXCSR FTZ and DAZ); dropping it restores the previous mode.
pub(crate) struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
mod mxcsr {
    /// MXCSR flush-to-zero (bit 15) and denormals-are-zero (bit 6).
    pub const FTZ_DAZ: u32 = 0x8040;

    pub fn get() -> u32 {
        let mut v = 0u32;
        // SAFETY: stmxcsr stores the 32-bit control register to a valid, aligned u32.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags));
        }
        v
    }

    pub fn set(v: u32) {
        // SAFETY: ldmxcsr loads a control word read back from this thread's own register with
        // only the FTZ/DAZ bits changed (never reserved bits, which would fault).
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, preserves_flags));
        }
    }
}

impl FlushDenormals {
    pub fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = mxcsr::get();
            mxcsr::set(saved | mxcsr::FTZ_DAZ);
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }

    /// Sets the mode for good on the calling thread (the engine's own worker threads).
    pub fn forever() {
        std::mem::forget(FlushDenormals::new());
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        mxcsr::set(self.saved);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The smallest normal f32 times 0.5 is denormal; under the guard it is flushed, and
    /// a denormal operand reads as zero; after the guard the caller's mode is back. (Every
    /// product goes through `black_box`, so none is computed once and reused across modes.)
    #[test]
    fn flushes_inside_and_restores_after() {
        use std::hint::black_box;
        let halve_smallest = || black_box(f32::MIN_POSITIVE) * black_box(0.5f32);
        let double_denormal = || black_box(f32::from_bits(1)) * black_box(2.0f32);
        let before = mxcsr::get();
        assert!(
            halve_smallest() > 0.0,
            "this thread starts without flushing"
        );
        {
            let _g = FlushDenormals::new();
            assert_eq!(halve_smallest(), 0.0, "denormal result flushed");
            assert_eq!(double_denormal(), 0.0, "denormal operand read as zero");
        }
        // (bits 0–5 are sticky exception flags, not the mode)
        assert_eq!(mxcsr::get() & !0x3f, before & !0x3f);
        assert!(halve_smallest() > 0.0, "the caller's mode is restored");
        assert!(double_denormal() > 0.0);
    }
}
