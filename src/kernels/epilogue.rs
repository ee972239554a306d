//! What every kernel applies after accumulating, as data: the fused activation ([`Act`]) and
//! the f32 and int8 epilogues ([`EpiF32`], [`EpiI8`]), with the scalar definitions every SIMD
//! kernel must agree with. Kept apart from the table so that the ISA modules and the engine
//! share one definition.

/// Fused activation. The bound of `Relu6` is given in the output domain: `6.0` for f32
/// kernels, `6.0 / out_scale` for int8 kernels. `PRelu` holds one slope per output channel.
#[derive(Clone, Copy, Debug)]
pub enum Act<'a> {
    None,
    Relu,
    Relu6(f32),
    PRelu(&'a [f32]),
}

impl Act<'_> {
    /// Scalar definition, the one every SIMD kernel must agree with.
    #[inline(always)]
    pub fn apply(&self, x: f32, c: usize) -> f32 {
        match *self {
            Act::None => x,
            Act::Relu => x.max(0.0),
            Act::Relu6(hi) => x.max(0.0).min(hi),
            Act::PRelu(a) => {
                if x < 0.0 {
                    x * a[c]
                } else {
                    x
                }
            }
        }
    }
    fn check(&self, n: usize) {
        if let Act::PRelu(a) = self {
            assert!(a.len() >= n, "PReLU slopes: {} < {} channels", a.len(), n);
        }
    }
}

/// f32 epilogue: `out = act(acc + bias[c])`.
#[derive(Clone, Copy, Debug)]
pub struct EpiF32<'a> {
    pub bias: &'a [f32],
    pub act: Act<'a>,
}

impl EpiF32<'_> {
    pub fn check(&self, n: usize) {
        assert!(
            self.bias.len() >= n,
            "bias: {} < {} channels",
            self.bias.len(),
            n
        );
        self.act.check(n);
    }
}

/// int8 epilogue: `real = (acc + bias[c]) as f32 * mult[c]`, `act(real)`, round, clamp ±127.
/// `mult[c] = in_scale * w_scale[c] / out_scale`.
#[derive(Clone, Copy, Debug)]
pub struct EpiI8<'a> {
    pub bias: &'a [i32],
    pub mult: &'a [f32],
    pub act: Act<'a>,
}

impl EpiI8<'_> {
    pub fn check(&self, n: usize) {
        assert!(
            self.bias.len() >= n,
            "bias: {} < {} channels",
            self.bias.len(),
            n
        );
        assert!(
            self.mult.len() >= n,
            "mult: {} < {} channels",
            self.mult.len(),
            n
        );
        self.act.check(n);
    }
    /// The scalar requantisation every kernel agrees with (SIMD within 1 LSB).
    #[inline(always)]
    pub fn requant(&self, acc: i32, c: usize) -> i8 {
        let real = (acc.wrapping_add(self.bias[c]) as f32) * self.mult[c];
        let real = self.act.apply(real, c);
        real.round().clamp(-127.0, 127.0) as i8
    }
}

/// Requantise a value already in output units (round half away from zero, clamp ±127).
#[inline(always)]
pub fn sat_i8(x: f32) -> i8 {
    x.round().clamp(-127.0, 127.0) as i8
}
