//! Expressions: constants, variables, arithmetic with the kernel IR's semantics (wrapping
//! integers, division by zero giving 0), fast-math flags as the `Vector` contract allows,
//! and the math functions whose code the target chooses (`Target::math`, `Target::pow`).

use super::{Emitter, MathFn};
use crate::codegen::CodegenError;
use crate::kernel::{BinOp, DimVar, Expr, Ty, UnOp};
use inkwell::intrinsics::Intrinsic;
use inkwell::types::BasicTypeEnum;
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FastMathFlags, FloatValue, IntValue,
};
use inkwell::{FloatPredicate, IntPredicate};

/// A scalar value with its kernel IR type.
#[derive(Clone, Copy)]
pub(super) enum Val<'ctx> {
    F(FloatValue<'ctx>),
    I(IntValue<'ctx>),
    B(IntValue<'ctx>),
}

impl<'ctx> Val<'ctx> {
    pub(super) fn ty(self) -> Ty {
        match self {
            Val::F(_) => Ty::F32,
            Val::I(_) => Ty::I64,
            Val::B(_) => Ty::Bool,
        }
    }

    pub(super) fn basic(self) -> BasicValueEnum<'ctx> {
        match self {
            Val::F(v) => v.into(),
            Val::I(v) | Val::B(v) => v.into(),
        }
    }
}

impl<'ctx> Emitter<'ctx, '_> {
    /// Sets fast-math flags on a float op as the kernel IR's `Vector` contract allows:
    /// `reassoc contract` on one that accumulates into a local across a vector loop, and
    /// `contract` on any other inside a vector loop, so a multiply feeding an add (a
    /// store's update, a sum of products) may become one FMA. Whether a pair is fused is
    /// decided once per compiled kernel, so every run and every thread count computes the
    /// same bits.
    fn fmf(&self, v: impl BasicValue<'ctx>) {
        let flags = if self.fast {
            FastMathFlags::AllowReassoc | FastMathFlags::AllowContract
        } else if self.vector_depth.is_some() {
            FastMathFlags::AllowContract
        } else {
            return;
        };
        if let Some(inst) = v.as_instruction_value() {
            let _ = inst.set_fast_math_flags(flags);
        }
    }

    /// A call of intrinsic `name` overloaded on `ty`, with the fast-math flags of its
    /// place (see `fmf`).
    pub fn intrinsic(
        &self,
        name: &str,
        ty: BasicTypeEnum<'ctx>,
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> Result<BasicValueEnum<'ctx>, CodegenError> {
        let decl = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[ty]))
            .ok_or_else(|| self.err(format!("LLVM has no intrinsic `{name}`")))?;
        let call = self.b.build_call(decl, args, "")?;
        let v = call
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| self.err(format!("`{name}` returned void")))?;
        self.fmf(v);
        Ok(v)
    }

    /// `f(x)` as the target computes it.
    fn math(&mut self, f: MathFn, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        let target = self.target;
        target.math(self, f, x)
    }

    pub(super) fn expr(&mut self, e: &Expr) -> Result<Val<'ctx>, CodegenError> {
        let ctx = self.ctx;
        Ok(match e {
            Expr::F32(x) => Val::F(ctx.f32_type().const_float(*x as f64)),
            Expr::I64(x) => Val::I(ctx.i64_type().const_int(*x as u64, true)),
            Expr::Bool(x) => Val::B(ctx.bool_type().const_int(*x as u64, false)),
            Expr::Var(v) => {
                let (slot, ty) = self.var_slot(*v)?;
                let raw = self.b.build_load(self.llvm_ty(ty), slot, "")?;
                match ty {
                    Ty::F32 => Val::F(raw.into_float_value()),
                    Ty::I64 => Val::I(raw.into_int_value()),
                    Ty::Bool => Val::B(raw.into_int_value()),
                }
            }
            Expr::Dim(DimVar::Seq) => Val::I(self.seq),
            Expr::Dim(DimVar::Past) => Val::I(self.past),
            Expr::Load { buf, index } => self.load(*buf, index)?,
            Expr::Un(op, a) => {
                let v = self.expr(a)?;
                self.unary(*op, v, e)?
            }
            Expr::Bin(op, a, c) => {
                let x = self.expr(a)?;
                let y = self.expr(c)?;
                self.binary(*op, x, y, e)?
            }
            Expr::Select(c, a, d) => {
                let cond = self.expr(c)?;
                let x = self.expr(a)?;
                let y = self.expr(d)?;
                let Val::B(cond) = cond else {
                    return Err(self.err(format!(
                        "`{}`: the condition is {}, not bool",
                        self.k.expr(e),
                        cond.ty().as_str()
                    )));
                };
                if x.ty() != y.ty() {
                    return Err(self.err(format!(
                        "`{}`: the arms are {} and {}",
                        self.k.expr(e),
                        x.ty().as_str(),
                        y.ty().as_str()
                    )));
                }
                let r = self.b.build_select(cond, x.basic(), y.basic(), "")?;
                match x {
                    Val::F(_) => Val::F(r.into_float_value()),
                    Val::I(_) => Val::I(r.into_int_value()),
                    Val::B(_) => Val::B(r.into_int_value()),
                }
            }
        })
    }

    fn unary(&mut self, op: UnOp, v: Val<'ctx>, e: &Expr) -> Result<Val<'ctx>, CodegenError> {
        let f32t: BasicTypeEnum = self.ctx.f32_type().into();
        let i64t = self.ctx.i64_type();
        let fl = |r: BasicValueEnum<'ctx>| Val::F(r.into_float_value());
        Ok(match (op, v) {
            (UnOp::Neg, Val::F(x)) => {
                let r = self.b.build_float_neg(x, "")?;
                self.fmf(r);
                Val::F(r)
            }
            (UnOp::Neg, Val::I(x)) => Val::I(self.b.build_int_neg(x, "")?),
            (UnOp::Abs, Val::F(x)) => fl(self.intrinsic("llvm.fabs", f32t, &[x.into()])?),
            (UnOp::Abs, Val::I(x)) => {
                let poison = self.ctx.bool_type().const_zero();
                Val::I(
                    self.intrinsic("llvm.abs", i64t.into(), &[x.into(), poison.into()])?
                        .into_int_value(),
                )
            }
            (UnOp::Exp, Val::F(x)) => Val::F(self.math(MathFn::Exp, x)?),
            (UnOp::Log, Val::F(x)) => Val::F(self.math(MathFn::Log, x)?),
            (UnOp::Sin, Val::F(x)) => Val::F(self.math(MathFn::Sin, x)?),
            (UnOp::Cos, Val::F(x)) => Val::F(self.math(MathFn::Cos, x)?),
            (UnOp::Tanh, Val::F(x)) => Val::F(self.math(MathFn::Tanh, x)?),
            (UnOp::Sqrt, Val::F(x)) => fl(self.intrinsic("llvm.sqrt", f32t, &[x.into()])?),
            (UnOp::Floor, Val::F(x)) => fl(self.intrinsic("llvm.floor", f32t, &[x.into()])?),
            (UnOp::ToF32, Val::I(x)) => Val::F(self.b.build_signed_int_to_float(
                x,
                self.ctx.f32_type(),
                "",
            )?),
            (UnOp::ToI64, Val::F(x)) => Val::I(
                self.intrinsic_2ty("llvm.fptosi.sat", i64t.into(), f32t, x.into())?
                    .into_int_value(),
            ),
            (UnOp::Not, Val::B(x)) => Val::B(self.b.build_not(x, "")?),
            (UnOp::F16Bits, Val::I(x)) => {
                let h = self.b.build_int_truncate(x, self.ctx.i16_type(), "")?;
                let h = self.b.build_bit_cast(h, self.ctx.f16_type(), "")?;
                Val::F(
                    self.b
                        .build_float_ext(h.into_float_value(), self.ctx.f32_type(), "")?,
                )
            }
            (UnOp::F32Bits, Val::I(x)) => {
                let w = self.b.build_int_truncate(x, self.ctx.i32_type(), "")?;
                Val::F(
                    self.b
                        .build_bit_cast(w, self.ctx.f32_type(), "")?
                        .into_float_value(),
                )
            }
            _ => {
                return Err(self.err(format!(
                    "`{}`: operand is {}",
                    self.k.expr(e),
                    v.ty().as_str()
                )))
            }
        })
    }

    /// An intrinsic overloaded on its result and argument types.
    fn intrinsic_2ty(
        &self,
        name: &str,
        ret: BasicTypeEnum<'ctx>,
        arg_ty: BasicTypeEnum<'ctx>,
        arg: BasicMetadataValueEnum<'ctx>,
    ) -> Result<BasicValueEnum<'ctx>, CodegenError> {
        let decl = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[ret, arg_ty]))
            .ok_or_else(|| self.err(format!("LLVM has no intrinsic `{name}`")))?;
        self.b
            .build_call(decl, &[arg], "")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| self.err(format!("`{name}` returned void")))
    }

    fn binary(
        &mut self,
        op: BinOp,
        x: Val<'ctx>,
        y: Val<'ctx>,
        e: &Expr,
    ) -> Result<Val<'ctx>, CodegenError> {
        if x.ty() != y.ty() {
            return Err(self.err(format!(
                "`{}`: operands are {} and {}",
                self.k.expr(e),
                x.ty().as_str(),
                y.ty().as_str()
            )));
        }
        let b = &self.b;
        let f32t: BasicTypeEnum = self.ctx.f32_type().into();
        let i64t = self.ctx.i64_type();
        let bad = || {
            self.err(format!(
                "`{}`: no such operation on {}",
                self.k.expr(e),
                x.ty().as_str()
            ))
        };
        Ok(match (x, y) {
            (Val::F(a), Val::F(c)) => {
                let fr = |r: FloatValue<'ctx>| {
                    self.fmf(r);
                    Val::F(r)
                };
                let cmp = |p: FloatPredicate| -> Result<Val<'ctx>, CodegenError> {
                    Ok(Val::B(b.build_float_compare(p, a, c, "")?))
                };
                match op {
                    BinOp::Add => fr(b.build_float_add(a, c, "")?),
                    BinOp::Sub => fr(b.build_float_sub(a, c, "")?),
                    BinOp::Mul => fr(b.build_float_mul(a, c, "")?),
                    BinOp::Div => Val::F(b.build_float_div(a, c, "")?),
                    BinOp::Min => Val::F(
                        self.intrinsic("llvm.minnum", f32t, &[a.into(), c.into()])?
                            .into_float_value(),
                    ),
                    BinOp::Max => Val::F(
                        self.intrinsic("llvm.maxnum", f32t, &[a.into(), c.into()])?
                            .into_float_value(),
                    ),
                    BinOp::Pow => {
                        let target = self.target;
                        Val::F(target.pow(self, a, c)?)
                    }
                    BinOp::Lt => cmp(FloatPredicate::OLT)?,
                    BinOp::Le => cmp(FloatPredicate::OLE)?,
                    BinOp::Gt => cmp(FloatPredicate::OGT)?,
                    BinOp::Ge => cmp(FloatPredicate::OGE)?,
                    BinOp::Eq => cmp(FloatPredicate::OEQ)?,
                    // Rust's `!=`: true when either side is NaN.
                    BinOp::Ne => cmp(FloatPredicate::UNE)?,
                    BinOp::Rem
                    | BinOp::And
                    | BinOp::Or
                    | BinOp::Shl
                    | BinOp::Shr
                    | BinOp::BitAnd
                    | BinOp::BitOr => return Err(bad()),
                }
            }
            (Val::I(a), Val::I(c)) => {
                let cmp = |p: IntPredicate| -> Result<Val<'ctx>, CodegenError> {
                    Ok(Val::B(b.build_int_compare(p, a, c, "")?))
                };
                match op {
                    BinOp::Add => Val::I(b.build_int_add(a, c, "")?),
                    BinOp::Sub => Val::I(b.build_int_sub(a, c, "")?),
                    BinOp::Mul => Val::I(b.build_int_mul(a, c, "")?),
                    BinOp::Div | BinOp::Rem => {
                        // Division by zero gives 0 and `i64::MIN / -1` wraps instead of
                        // trapping; a constant divisor folds the guards away.
                        let zero = i64t.const_zero();
                        let is_zero = b.build_int_compare(IntPredicate::EQ, c, zero, "")?;
                        let minus_one = i64t.const_all_ones();
                        let is_m1 = b.build_int_compare(IntPredicate::EQ, c, minus_one, "")?;
                        let unsafe_divisor = b.build_or(is_zero, is_m1, "")?;
                        let safe = b
                            .build_select(unsafe_divisor, i64t.const_int(1, false), c, "")?
                            .into_int_value();
                        let r = if op == BinOp::Div {
                            let q = b.build_int_signed_div(a, safe, "")?;
                            let neg = b.build_int_sub(zero, a, "")?;
                            let q = b.build_select(is_m1, neg, q, "")?.into_int_value();
                            b.build_select(is_zero, zero, q, "")?
                        } else {
                            let r = b.build_int_signed_rem(a, safe, "")?;
                            b.build_select(unsafe_divisor, zero, r, "")?
                        };
                        Val::I(r.into_int_value())
                    }
                    BinOp::Min => Val::I(
                        self.intrinsic("llvm.smin", i64t.into(), &[a.into(), c.into()])?
                            .into_int_value(),
                    ),
                    BinOp::Max => Val::I(
                        self.intrinsic("llvm.smax", i64t.into(), &[a.into(), c.into()])?
                            .into_int_value(),
                    ),
                    BinOp::Lt => cmp(IntPredicate::SLT)?,
                    BinOp::Le => cmp(IntPredicate::SLE)?,
                    BinOp::Gt => cmp(IntPredicate::SGT)?,
                    BinOp::Ge => cmp(IntPredicate::SGE)?,
                    BinOp::Eq => cmp(IntPredicate::EQ)?,
                    BinOp::Ne => cmp(IntPredicate::NE)?,
                    // Amounts outside 0..64 are poison; verified kernels never shift so.
                    BinOp::Shl => Val::I(b.build_left_shift(a, c, "")?),
                    BinOp::Shr => Val::I(b.build_right_shift(a, c, true, "")?),
                    BinOp::BitAnd => Val::I(b.build_and(a, c, "")?),
                    BinOp::BitOr => Val::I(b.build_or(a, c, "")?),
                    BinOp::Pow | BinOp::And | BinOp::Or => return Err(bad()),
                }
            }
            (Val::B(a), Val::B(c)) => match op {
                BinOp::And => Val::B(b.build_and(a, c, "")?),
                BinOp::Or => Val::B(b.build_or(a, c, "")?),
                BinOp::Eq => Val::B(b.build_int_compare(IntPredicate::EQ, a, c, "")?),
                BinOp::Ne => Val::B(b.build_int_compare(IntPredicate::NE, a, c, "")?),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        })
    }
}
