//! Inline f32 `exp` and `tanh` for CPU kernels: straight-line float and integer code with
//! no calls, so the loop vectorizer turns a `Vector` loop that uses them into SIMD code
//! (a call to libm's `expf` would be made once per lane).
//!
//! `exp(x)`: `n = rint(x / ln 2)`, `r = x - n ln 2` in two steps (Cody–Waite; `n * LN2_HI`
//! is exact for the `n` that occur), `exp(r)` by Cephes' degree-7 polynomial on
//! `|r| <= ln(2) / 2`, then the scale `2^n` applied as two factors `2^(n/2) * 2^(n - n/2)`
//! built from exponent bits, so results down to the subnormal range and up to overflow
//! need no special case. `x` is clamped to `[-104, 89]` first (below, every result rounds
//! to 0; above, to infinity), a NaN passes through.
//! **Maximum relative error: 2e-7 (about 2 ulp; 1.2e-7 measured) for normal results** (over a
//! dense sweep in `compiler/tests/llvm.rs`, `inline_exp_and_tanh_against_f64`); subnormal
//! results carry an absolute error below `1.5e-45`.
//!
//! `tanh(x)`: for `|x| < 0.25` the odd Taylor series to `x^11` (truncation below 1e-9
//! relative); otherwise `sign(x) (1 - e) / (1 + e)` with `e = exp(-2|x|)`, where `1 - e >=
//! 0.39` so no cancellation. **Maximum relative error: 4e-7 (1.8e-7 measured).** `tanh(±inf) = ±1`,
//! NaN stays.

use super::CodegenError;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::values::{BasicMetadataValueEnum, FloatValue};
use inkwell::FloatPredicate;

/// The Cephes `expf` polynomial: `exp(r) ~ 1 + r + r^2 * P(r)`, highest degree first.
const EXP_P: [f64; 6] = [
    1.987_569_150_0e-4,
    1.398_199_950_7e-3,
    8.333_451_907_3e-3,
    4.166_579_589_4e-2,
    1.666_666_545_9e-1,
    5.000_000_120_1e-1,
];
/// `ln 2 = LN2_HI + LN2_LO`, `LN2_HI` with few mantissa bits so `n * LN2_HI` is exact.
const LN2_HI: f64 = 0.693_359_375;
const LN2_LO: f64 = -2.121_944_400_546_905_8e-4;

/// The builder state the math functions need.
pub(super) struct Math<'ctx, 'a> {
    pub ctx: &'ctx Context,
    pub module: &'a Module<'ctx>,
    pub b: &'a Builder<'ctx>,
}

impl<'ctx> Math<'ctx, '_> {
    fn c(&self, v: f64) -> FloatValue<'ctx> {
        self.ctx.f32_type().const_float(v)
    }

    fn call(
        &self,
        name: &str,
        args: &[FloatValue<'ctx>],
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        let f32t = self.ctx.f32_type();
        let decl = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[f32t.into()]))
            .ok_or_else(|| CodegenError::Llvm {
                stage: "ir builder",
                message: format!("LLVM has no intrinsic `{name}`"),
            })?;
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|a| (*a).into()).collect();
        self.b
            .build_call(decl, &args, "")?
            .try_as_basic_value()
            .basic()
            .map(|v| v.into_float_value())
            .ok_or_else(|| CodegenError::Llvm {
                stage: "ir builder",
                message: format!("`{name}` returned void"),
            })
    }

    /// `a * b + c`, fused where the target has FMA.
    fn fmuladd(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
        c: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        self.call("llvm.fmuladd", &[a, b, c])
    }

    /// `if cond(x, y) { a } else { b }` with an ordered compare (false for NaN).
    fn select_cmp(
        &self,
        p: FloatPredicate,
        x: FloatValue<'ctx>,
        y: FloatValue<'ctx>,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        let cond = self.b.build_float_compare(p, x, y, "")?;
        Ok(self.b.build_select(cond, a, b, "")?.into_float_value())
    }

    /// `2^n` for an i32 `n` in `-126..=127`, from exponent bits.
    fn pow2(&self, n: inkwell::values::IntValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        let i32t = self.ctx.i32_type();
        let biased = self.b.build_int_add(n, i32t.const_int(127, false), "")?;
        let bits = self
            .b
            .build_left_shift(biased, i32t.const_int(23, false), "")?;
        Ok(self
            .b
            .build_bit_cast(bits, self.ctx.f32_type(), "")?
            .into_float_value())
    }

    /// `exp(x)`; see the module docs for the method and its error.
    pub fn exp(&self, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        let b = self.b;
        // NaN becomes 0 for the arithmetic (no poison from converting it) and is put back
        // at the end.
        let is_nan = b.build_float_compare(FloatPredicate::UNO, x, x, "exp.nan")?;
        let xc = self.select_cmp(FloatPredicate::OGT, x, self.c(89.0), self.c(89.0), x)?;
        let xc = self.select_cmp(FloatPredicate::OLT, xc, self.c(-104.0), self.c(-104.0), xc)?;
        let xc = b
            .build_select(is_nan, self.c(0.0), xc, "")?
            .into_float_value();
        let nf = self.call(
            "llvm.rint",
            &[b.build_float_mul(xc, self.c(std::f64::consts::LOG2_E), "")?],
        )?;
        let r = self.fmuladd(nf, self.c(-LN2_HI), xc)?;
        let r = self.fmuladd(nf, self.c(-LN2_LO), r)?;
        let mut p = self.c(EXP_P[0]);
        for &coef in &EXP_P[1..] {
            p = self.fmuladd(p, r, self.c(coef))?;
        }
        let r2 = b.build_float_mul(r, r, "")?;
        let e = self.fmuladd(p, r2, b.build_float_add(r, self.c(1.0), "")?)?;
        // n is in -150..=129: split it so each factor is a normal power of two.
        let i32t = self.ctx.i32_type();
        let n = b.build_float_to_signed_int(nf, i32t, "exp.n")?;
        let n1 = b.build_right_shift(n, i32t.const_int(1, false), true, "")?;
        let n2 = b.build_int_sub(n, n1, "")?;
        let y = b.build_float_mul(e, self.pow2(n1)?, "")?;
        let y = b.build_float_mul(y, self.pow2(n2)?, "")?;
        Ok(b.build_select(is_nan, x, y, "exp")?.into_float_value())
    }

    /// `tanh(x)`; see the module docs for the method and its error.
    pub fn tanh(&self, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        let b = self.b;
        let ax = self.call("llvm.fabs", &[x])?;
        // Small |x|: x + x^3 * (c3 + x^2 * (c5 + ...)), the Taylor coefficients of tanh.
        let x2 = b.build_float_mul(x, x, "")?;
        let mut p = self.c(-1382.0 / 155_925.0);
        for coef in [62.0 / 2835.0, -17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0] {
            p = self.fmuladd(p, x2, self.c(coef))?;
        }
        let x3 = b.build_float_mul(x2, x, "")?;
        let small = self.fmuladd(p, x3, x)?;
        // Large |x|: (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 0.61], sign copied back.
        let e = self.exp(b.build_float_mul(ax, self.c(-2.0), "")?)?;
        let one = self.c(1.0);
        let big = b.build_float_div(
            b.build_float_sub(one, e, "")?,
            b.build_float_add(one, e, "")?,
            "",
        )?;
        let big = self.call("llvm.copysign", &[big, x])?;
        // NaN compares false and takes the `small` arm, which keeps it NaN.
        self.select_cmp(FloatPredicate::OGE, ax, self.c(0.25), big, small)
    }
}
