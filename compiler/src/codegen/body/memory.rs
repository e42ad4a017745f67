//! Loads and stores of buffer elements: each element type's conversion to and from the
//! kernel IR's f32 and i64 (bf16 rounding, f8 e4m3 decoding), with the store itself left
//! to the target (`Target::store`).

use super::expr::Val;
use super::Emitter;
use crate::codegen::CodegenError;
use crate::kernel::{Access, BufId, Elem, Expr, Ty};
use inkwell::values::{BasicValueEnum, FloatValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};

impl<'ctx> Emitter<'ctx, '_> {
    /// `buf[index] = value`, converted to the buffer's element type.
    pub(super) fn store(
        &mut self,
        buf: BufId,
        index: &Expr,
        value: &Expr,
    ) -> Result<(), CodegenError> {
        let (base, elem, access) = self.buf(buf)?;
        let text = || {
            format!(
                "{}[{}] = {}",
                self.k.bufs[buf.0 as usize].name,
                self.k.expr(index),
                self.k.expr(value)
            )
        };
        if access == Access::Read {
            return Err(self.err(format!("`{}` stores to a read-only buffer", text())));
        }
        if elem == Elem::F8 {
            return Err(self.err(format!("`{}` stores to an f8 buffer (read-only)", text())));
        }
        let idx = self.int(index, "store index")?;
        let v = self.expr(value)?;
        let want = match elem {
            Elem::I32 | Elem::U8 => Ty::I64,
            _ => Ty::F32,
        };
        if v.ty() != want {
            return Err(self.err(format!(
                "`{}`: a {} buffer stores {} but the value is {}",
                text(),
                elem.as_str(),
                want.as_str(),
                v.ty().as_str()
            )));
        }
        let ety = self.elem_ty(elem);
        let p = unsafe { self.b.build_in_bounds_gep(ety, base, &[idx], "")? };
        let stored: BasicValueEnum<'ctx> = match (elem, v) {
            (Elem::F32, Val::F(x)) => x.into(),
            (Elem::F16, Val::F(x)) => self.b.build_float_trunc(x, self.ctx.f16_type(), "")?.into(),
            (Elem::Bf16, Val::F(x)) => self.f32_to_bf16(x)?.into(),
            (Elem::I32, Val::I(x)) => self
                .b
                .build_int_truncate(x, self.ctx.i32_type(), "")?
                .into(),
            (Elem::U8, Val::I(x)) => self.b.build_int_truncate(x, self.ctx.i8_type(), "")?.into(),
            _ => return Err(self.err(format!("`{}`: mismatched store", text()))),
        };
        let target = self.target;
        target.store(self, p, stored, access)
    }

    /// f32 → bf16 bits, rounding to nearest even; NaN stays NaN (quiet bit set, sign kept).
    fn f32_to_bf16(&self, x: FloatValue<'ctx>) -> Result<IntValue<'ctx>, CodegenError> {
        let b = &self.b;
        let i32t = self.ctx.i32_type();
        let c = |v: u64| i32t.const_int(v, false);
        let bits = b.build_bit_cast(x, i32t, "")?.into_int_value();
        let lsb = b.build_and(b.build_right_shift(bits, c(16), false, "")?, c(1), "")?;
        let bias = b.build_int_add(c(0x7fff), lsb, "")?;
        let rounded = b.build_right_shift(b.build_int_add(bits, bias, "")?, c(16), false, "")?;
        let quiet = b.build_or(b.build_right_shift(bits, c(16), false, "")?, c(0x40), "")?;
        let is_nan = b.build_float_compare(FloatPredicate::UNO, x, x, "")?;
        let r = b.build_select(is_nan, quiet, rounded, "")?.into_int_value();
        Ok(b.build_int_truncate(r, self.ctx.i16_type(), "bf16")?)
    }

    /// `buf[index]`, widened to the kernel IR's f32 or i64.
    pub(super) fn load(&mut self, buf: BufId, index: &Expr) -> Result<Val<'ctx>, CodegenError> {
        let (base, elem, _) = self.buf(buf)?;
        let idx = self.int(index, "load index")?;
        let ety = self.elem_ty(elem);
        let p = unsafe { self.b.build_in_bounds_gep(ety, base, &[idx], "")? };
        let raw = self.b.build_load(ety, p, "")?;
        let (f32t, i32t) = (self.ctx.f32_type(), self.ctx.i32_type());
        Ok(match elem {
            Elem::F32 => Val::F(raw.into_float_value()),
            Elem::F16 => Val::F(self.b.build_float_ext(raw.into_float_value(), f32t, "")?),
            Elem::Bf16 => {
                let wide = self.b.build_int_z_extend(raw.into_int_value(), i32t, "")?;
                let bits = self
                    .b
                    .build_left_shift(wide, i32t.const_int(16, false), "")?;
                Val::F(self.b.build_bit_cast(bits, f32t, "")?.into_float_value())
            }
            Elem::I32 => Val::I(self.b.build_int_s_extend(
                raw.into_int_value(),
                self.ctx.i64_type(),
                "",
            )?),
            Elem::U8 => Val::I(self.b.build_int_z_extend(
                raw.into_int_value(),
                self.ctx.i64_type(),
                "",
            )?),
            Elem::F8 => Val::F(self.f8e4m3_to_f32(raw.into_int_value())?),
        })
    }

    /// f8 e4m3fn bits (an `i8`) → f32, exactly and without branches, so the load stays
    /// vectorizable: a normal number `s.e.m` (bias 7) has the f32 bits
    /// `s << 31 | (e + 120) << 23 | m << 20`; exponent 0 is `±m * 2^-9` (zero included);
    /// `s.1111.111` is a quiet NaN with the sign kept; there are no infinities.
    fn f8e4m3_to_f32(&self, raw: IntValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        let b = &self.b;
        let (i32t, f32t) = (self.ctx.i32_type(), self.ctx.f32_type());
        let c = |v: u64| i32t.const_int(v, false);
        let x = b.build_int_z_extend(raw, i32t, "f8")?;
        let sign = b.build_left_shift(b.build_right_shift(x, c(7), false, "")?, c(31), "f8.s")?;
        let exp = b.build_and(b.build_right_shift(x, c(3), false, "")?, c(0xf), "f8.e")?;
        let man = b.build_and(x, c(7), "f8.m")?;
        let normal = b.build_or(
            b.build_left_shift(b.build_int_add(exp, c(120), "")?, c(23), "")?,
            b.build_left_shift(man, c(20), "")?,
            "",
        )?;
        // m * 2^-9 is exact in f32; its bits carry no sign, which is or'ed in below.
        let sub = b.build_float_mul(
            b.build_unsigned_int_to_float(man, f32t, "")?,
            f32t.const_float(f64::from(f32::from_bits(0x3b00_0000))),
            "",
        )?;
        let sub = b.build_bit_cast(sub, i32t, "")?.into_int_value();
        let is_sub = b.build_int_compare(IntPredicate::EQ, exp, c(0), "")?;
        let mag = b.build_select(is_sub, sub, normal, "")?.into_int_value();
        let is_nan =
            b.build_int_compare(IntPredicate::EQ, b.build_and(x, c(0x7f), "")?, c(0x7f), "")?;
        let mag = b
            .build_select(is_nan, c(0x7fc0_0000), mag, "")?
            .into_int_value();
        let bits = b.build_or(sign, mag, "")?;
        Ok(b.build_bit_cast(bits, f32t, "f8.f32")?.into_float_value())
    }
}
