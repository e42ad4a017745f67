//! One kernel of the kernel IR to a Cranelift function with the common calling convention
//! `void kernel(void **bufs, const int64_t *dims, int64_t thread, int64_t threads)`.
//!
//! The translation is literal: statements run in the order written, `Vector` and `Unroll`
//! loops run as plain loops, and no product is fused into an addition, so a kernel computes
//! what the kernel IR interpreter computes, operation for operation, except in the matmul
//! tiles `tile.rs` lowers with SIMD (the math functions
//! are the same Rust functions the interpreter calls). The `Parallel` loop is split into
//! the same contiguous chunks as on the LLVM CPU target. Integer division or remainder by
//! zero yields 0, as the LLVM targets define it, where the interpreter reports an error.

use super::helpers::{Helper, Imports};
use crate::codegen::body::param_bufs;
use crate::codegen::CodegenError;
use crate::kernel::{
    Access, BinOp, BufId, DimVar, Elem, Expr, Kernel, LoopKind, Stmt, Ty, UnOp, VarId,
};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, Block, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};

/// Scratch buffers up to this many bytes live on the stack; larger ones come from
/// `malloc`, as on the LLVM CPU target.
pub(super) const MAX_STACK_SCRATCH: u64 = 256 * 1024;

/// The state of one kernel's translation.
pub(super) struct Translator<'a, 'f> {
    pub(super) k: &'a Kernel,
    pub(super) b: FunctionBuilder<'f>,
    imports: &'a Imports,
    vars: Vec<Variable>,
    /// The base address of every buffer parameter, by buffer index.
    bases: Vec<Option<Value>>,
    seq: Value,
    past: Value,
    thread: Value,
    threads: Value,
    /// Scratch from `malloc`, freed at the exit.
    heap: Vec<Value>,
}

/// The Cranelift type of a kernel IR scalar type; bools are bytes holding 0 or 1.
fn ty_of(t: Ty) -> Type {
    match t {
        Ty::F32 => types::F32,
        Ty::I64 => types::I64,
        Ty::Bool => types::I8,
    }
}

/// Memory the kernel calling convention makes valid: aligned for the element type, and
/// in bounds wherever the kernel IR indexes it.
pub(super) fn mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl<'a, 'f> Translator<'a, 'f> {
    /// Emits the entry block: buffer bases and sizes loaded once, every variable given a
    /// zero so that any use is defined, and the scratch buffers.
    pub(super) fn new(
        k: &'a Kernel,
        mut b: FunctionBuilder<'f>,
        imports: &'a Imports,
    ) -> Result<Self, CodegenError> {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let params = b.block_params(entry).to_vec();
        let [bufs, dims, thread, threads] = params[..] else {
            return Err(CodegenError::Kernel {
                kernel: k.name.clone(),
                message: format!("the entry has {} parameters, not 4", params.len()),
            });
        };
        let mut bases = vec![None; k.bufs.len()];
        for p in param_bufs(k) {
            let offset = i32::try_from(8 * p).map_err(|_| CodegenError::Kernel {
                kernel: k.name.clone(),
                message: format!("buffer {p} is out of reach"),
            })?;
            bases[p] = Some(b.ins().load(types::I64, mem(), bufs, offset));
        }
        let seq = b.ins().load(types::I64, mem(), dims, 0);
        let past = b.ins().load(types::I64, mem(), dims, 8);
        let vars = k
            .vars
            .iter()
            .map(|v| {
                let var = b.declare_var(ty_of(v.ty));
                let zero = match v.ty {
                    Ty::F32 => b.ins().f32const(0.0),
                    Ty::I64 => b.ins().iconst(types::I64, 0),
                    Ty::Bool => b.ins().iconst(types::I8, 0),
                };
                b.def_var(var, zero);
                var
            })
            .collect();
        let mut t = Translator {
            k,
            b,
            imports,
            vars,
            bases,
            seq,
            past,
            thread,
            threads,
            heap: Vec::new(),
        };
        t.scratch()?;
        Ok(t)
    }

    pub(super) fn err(&self, message: impl Into<String>) -> CodegenError {
        CodegenError::Kernel {
            kernel: self.k.name.clone(),
            message: message.into(),
        }
    }

    /// Stack slots for small scratch buffers, `malloc` for large ones.
    fn scratch(&mut self) -> Result<(), CodegenError> {
        for (i, buf) in self.k.bufs.iter().enumerate() {
            let Access::Scratch { len } = buf.access else {
                continue;
            };
            let bytes = len.saturating_mul(buf.elem.bytes() as u64).max(1);
            if bytes <= MAX_STACK_SCRATCH {
                let slot = self.b.create_sized_stack_slot(StackSlotData::new(
                    StackSlotKind::ExplicitSlot,
                    bytes as u32,
                    6,
                ));
                self.bases[i] = Some(self.b.ins().stack_addr(types::I64, slot, 0));
            } else {
                let n = self.b.ins().iconst(types::I64, bytes as i64);
                let p = self.call(Helper::Malloc, &[n])?;
                self.heap.push(p);
                self.bases[i] = Some(p);
            }
        }
        Ok(())
    }

    /// Translates the body and returns: the body runs only when every `malloc` of
    /// scratch succeeded, and the exit frees them.
    pub(super) fn finish(mut self, config: TargetFrontendConfig) -> Result<(), CodegenError> {
        let exit = self.b.create_block();
        if !self.heap.is_empty() {
            let run = self.b.create_block();
            let mut ok = self.b.ins().iconst(types::I8, 1);
            for &p in &self.heap.clone() {
                let nonnull = self.b.ins().icmp_imm_s(IntCC::NotEqual, p, 0);
                ok = self.b.ins().band(ok, nonnull);
            }
            self.b.ins().brif(ok, run, &[], exit, &[]);
            self.b.seal_block(run);
            self.b.switch_to_block(run);
        }
        let body = self.k.body.clone();
        self.block(&body)?;
        self.b.ins().jump(exit, &[]);
        self.b.seal_block(exit);
        self.b.switch_to_block(exit);
        for p in self.heap.clone() {
            self.call_void(Helper::Free, &[p])?;
        }
        self.b.ins().return_(&[]);
        self.b.finalize(config);
        Ok(())
    }

    fn call(&mut self, h: Helper, args: &[Value]) -> Result<Value, CodegenError> {
        let f = self
            .imports
            .get(h)
            .ok_or_else(|| self.err(format!("helper `{}` was not imported", h.symbol())))?;
        let inst = self.b.ins().call(f, args);
        self.b
            .inst_results(inst)
            .first()
            .copied()
            .ok_or_else(|| self.err(format!("helper `{}` returns nothing", h.symbol())))
    }

    fn call_void(&mut self, h: Helper, args: &[Value]) -> Result<(), CodegenError> {
        let f = self
            .imports
            .get(h)
            .ok_or_else(|| self.err(format!("helper `{}` was not imported", h.symbol())))?;
        self.b.ins().call(f, args);
        Ok(())
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        body.iter().try_for_each(|s| self.stmt(s))
    }

    pub(super) fn var(&self, v: VarId) -> Result<(Variable, Ty), CodegenError> {
        let i = v.0 as usize;
        match (self.vars.get(i), self.k.vars.get(i)) {
            (Some(&var), Some(kv)) => Ok((var, kv.ty)),
            _ => Err(self.err(format!("variable {i} is not declared"))),
        }
    }

    fn assign(&mut self, v: VarId, value: &Expr) -> Result<(), CodegenError> {
        let (var, ty) = self.var(v)?;
        let (x, got) = self.expr(value)?;
        if got != ty {
            return Err(self.err(format!(
                "`{}` is {} but `{}` is {}",
                self.k.vars[v.0 as usize].name,
                ty.as_str(),
                self.k.expr(value),
                got.as_str()
            )));
        }
        self.b.def_var(var, x);
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), CodegenError> {
        match s {
            Stmt::Let { var, value } => self.assign(*var, value),
            Stmt::Local { var, init } => self.assign(*var, init),
            Stmt::Set { var, value } => self.assign(*var, value),
            Stmt::Store { buf, index, value } => self.store(*buf, index, value),
            Stmt::If { cond, then, els } => {
                let c = self.typed(cond, Ty::Bool, "an if condition")?;
                let (t, e, join) = (
                    self.b.create_block(),
                    self.b.create_block(),
                    self.b.create_block(),
                );
                self.b.ins().brif(c, t, &[], e, &[]);
                self.b.seal_block(t);
                self.b.seal_block(e);
                self.b.switch_to_block(t);
                self.block(then)?;
                self.b.ins().jump(join, &[]);
                self.b.switch_to_block(e);
                self.block(els)?;
                self.b.ins().jump(join, &[]);
                self.b.seal_block(join);
                self.b.switch_to_block(join);
                Ok(())
            }
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => {
                let lo = self.typed(start, Ty::I64, "a loop start")?;
                let hi = self.typed(end, Ty::I64, "a loop end")?;
                if *step == 0 || *step > i64::MAX as u64 {
                    return Err(self.err(format!("a loop step of {step}")));
                }
                let step = *step as i64;
                let (lo, hi) = if *kind == LoopKind::Parallel {
                    self.split(lo, hi, step)
                } else {
                    (lo, hi)
                };
                self.counted(*var, lo, hi, step, body)
            }
            Stmt::Tile(t) => self.tile(t),
        }
    }

    /// `for var in lo..hi step step { body }`.
    fn counted(
        &mut self,
        var: VarId,
        lo: Value,
        hi: Value,
        step: i64,
        body: &[Stmt],
    ) -> Result<(), CodegenError> {
        let (v, ty) = self.var(var)?;
        if ty != Ty::I64 {
            return Err(self.err("a loop variable that is not i64"));
        }
        self.loop_on(v, lo, hi, step, &mut |t, _| t.block(body))
    }

    /// `for v in lo..hi step step { body(v) }` over the i64 variable `v`: a header that
    /// tests, the body, the increment, and the exit block the builder is left in.
    pub(super) fn loop_on(
        &mut self,
        v: Variable,
        lo: Value,
        hi: Value,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let (head, inner, done): (Block, Block, Block) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.def_var(v, lo);
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let i = self.b.use_var(v);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(more, inner, &[], done, &[]);
        self.b.seal_block(inner);
        self.b.switch_to_block(inner);
        let i = self.b.use_var(v);
        body(self, i)?;
        let i = self.b.use_var(v);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(v, next);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(head);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(())
    }

    /// This thread's chunk of `lo..hi` by `step`: iterations `[t*c, min((t+1)*c, n))` with
    /// `c = ceil(n / threads)`, as the LLVM CPU target splits it.
    fn split(&mut self, lo: Value, hi: Value, step: i64) -> (Value, Value) {
        let b = &mut self.b;
        let zero = b.ins().iconst(types::I64, 0);
        let one = b.ins().iconst(types::I64, 1);
        let span = b.ins().isub(hi, lo);
        let span = b.ins().smax(span, zero);
        let trips = b.ins().iadd_imm_s(span, step - 1);
        let trips = b.ins().sdiv_imm_s(trips, step);
        let threads = b.ins().smax(self.threads, one);
        let per = b.ins().iadd(trips, threads);
        let per = b.ins().iadd_imm_s(per, -1);
        let per = b.ins().sdiv(per, threads);
        let t = b.ins().smax(self.thread, zero);
        let first = b.ins().imul(t, per);
        let first = b.ins().smin(first, trips);
        let last = b.ins().iadd(first, per);
        let last = b.ins().smin(last, trips);
        let first = b.ins().imul_imm_s(first, step);
        let last = b.ins().imul_imm_s(last, step);
        (b.ins().iadd(lo, first), b.ins().iadd(lo, last))
    }

    pub(super) fn buf(&self, buf: BufId) -> Result<(Value, Elem, Access), CodegenError> {
        let i = buf.0 as usize;
        match (self.bases.get(i).copied().flatten(), self.k.bufs.get(i)) {
            (Some(base), Some(p)) => Ok((base, p.elem, p.access)),
            _ => Err(self.err(format!("buffer {i} is not a parameter"))),
        }
    }

    /// The address of element `index` of `buf`.
    fn addr(&mut self, base: Value, elem: Elem, index: &Expr) -> Result<Value, CodegenError> {
        let i = self.typed(index, Ty::I64, "an index")?;
        let off = self.b.ins().imul_imm_s(i, elem.bytes() as i64);
        Ok(self.b.ins().iadd(base, off))
    }

    fn store(&mut self, buf: BufId, index: &Expr, value: &Expr) -> Result<(), CodegenError> {
        let elem = self.buf(buf)?.1;
        let want = match elem {
            Elem::I32 | Elem::U8 => Ty::I64,
            _ => Ty::F32,
        };
        let v = self.typed(value, want, "a stored value")?;
        let i = self.typed(index, Ty::I64, "an index")?;
        self.store_at(buf, i, v)
    }

    /// `buf[i] = v`, `v` already of the type the buffer stores (f32 or i64).
    pub(super) fn store_at(&mut self, buf: BufId, i: Value, v: Value) -> Result<(), CodegenError> {
        let (base, elem, access) = self.buf(buf)?;
        if access == Access::Read || elem == Elem::F8 {
            return Err(self.err(format!(
                "a store to read-only `{}`",
                self.k.bufs[buf.0 as usize].name
            )));
        }
        let off = self.b.ins().imul_imm_s(i, elem.bytes() as i64);
        let p = self.b.ins().iadd(base, off);
        match elem {
            Elem::F32 => {
                self.b.ins().store(mem(), v, p, 0);
            }
            Elem::Bf16 => {
                let bits = self.f32_to_bf16(v);
                self.b.ins().istore16(mem(), bits, p, 0);
            }
            Elem::F16 => {
                let bits = self.call(Helper::F32ToF16, &[v])?;
                self.b.ins().istore16(mem(), bits, p, 0);
            }
            Elem::I32 => {
                self.b.ins().istore32(mem(), v, p, 0);
            }
            Elem::U8 => {
                self.b.ins().istore8(mem(), v, p, 0);
            }
            Elem::F8 => return Err(self.err("a store to an f8 buffer")),
        }
        Ok(())
    }

    /// f32 → bf16 bits in an i32, rounding to nearest even; NaN stays NaN (quiet bit set).
    fn f32_to_bf16(&mut self, x: Value) -> Value {
        let b = &mut self.b;
        let bits = b.ins().bitcast(types::I32, MemFlagsData::new(), x);
        let high = b.ins().ushr_imm_s(bits, 16);
        let lsb = b.ins().band_imm_s(high, 1);
        let bias = b.ins().iadd_imm_s(lsb, 0x7fff);
        let sum = b.ins().iadd(bits, bias);
        let rounded = b.ins().ushr_imm_s(sum, 16);
        let quiet = b.ins().bor_imm_s(high, 0x40);
        let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
        b.ins().select(nan, quiet, rounded)
    }

    fn load(&mut self, buf: BufId, index: &Expr) -> Result<(Value, Ty), CodegenError> {
        let (base, elem, _) = self.buf(buf)?;
        let p = self.addr(base, elem, index)?;
        Ok(match elem {
            Elem::F32 => (self.b.ins().load(types::F32, mem(), p, 0), Ty::F32),
            Elem::Bf16 => {
                let h = self.b.ins().uload16(types::I32, mem(), p, 0);
                let bits = self.b.ins().ishl_imm_s(h, 16);
                (
                    self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits),
                    Ty::F32,
                )
            }
            Elem::F16 => {
                let h = self.b.ins().uload16(types::I32, mem(), p, 0);
                (self.call(Helper::F16ToF32, &[h])?, Ty::F32)
            }
            Elem::F8 => {
                let h = self.b.ins().uload8(types::I32, mem(), p, 0);
                (self.call(Helper::F8ToF32, &[h])?, Ty::F32)
            }
            Elem::I32 => (self.b.ins().sload32(mem(), p, 0), Ty::I64),
            Elem::U8 => (self.b.ins().uload8(types::I64, mem(), p, 0), Ty::I64),
        })
    }

    pub(super) fn typed(&mut self, e: &Expr, want: Ty, what: &str) -> Result<Value, CodegenError> {
        let (v, ty) = self.expr(e)?;
        if ty != want {
            return Err(self.err(format!(
                "{what} `{}` is {}, not {}",
                self.k.expr(e),
                ty.as_str(),
                want.as_str()
            )));
        }
        Ok(v)
    }

    pub(super) fn expr(&mut self, e: &Expr) -> Result<(Value, Ty), CodegenError> {
        Ok(match e {
            Expr::F32(x) => (self.b.ins().f32const(*x), Ty::F32),
            Expr::I64(x) => (self.b.ins().iconst(types::I64, *x), Ty::I64),
            Expr::Bool(x) => (self.b.ins().iconst(types::I8, i64::from(*x)), Ty::Bool),
            Expr::Var(v) => {
                let (var, ty) = self.var(*v)?;
                (self.b.use_var(var), ty)
            }
            Expr::Dim(DimVar::Seq) => (self.seq, Ty::I64),
            Expr::Dim(DimVar::Past) => (self.past, Ty::I64),
            Expr::Load { buf, index } => self.load(*buf, index)?,
            Expr::Un(op, x) => {
                let (x, ty) = self.expr(x)?;
                self.unary(*op, x, ty)?
            }
            Expr::Bin(op, x, y) => {
                let (x, tx) = self.expr(x)?;
                let (y, ty) = self.expr(y)?;
                if tx != ty {
                    return Err(self.err(format!(
                        "`{}` mixes {} and {}",
                        self.k.expr(e),
                        tx.as_str(),
                        ty.as_str()
                    )));
                }
                self.binary(*op, x, y, tx)?
            }
            Expr::Select(c, a, b) => {
                let c = self.typed(c, Ty::Bool, "a select condition")?;
                let (a, ta) = self.expr(a)?;
                let (b, tb) = self.expr(b)?;
                if ta != tb {
                    return Err(self.err(format!("`{}` selects between types", self.k.expr(e))));
                }
                (self.b.ins().select(c, a, b), ta)
            }
        })
    }

    fn unary(&mut self, op: UnOp, x: Value, ty: Ty) -> Result<(Value, Ty), CodegenError> {
        let f = |v| (v, Ty::F32);
        Ok(match (op, ty) {
            (UnOp::Neg, Ty::F32) => f(self.b.ins().fneg(x)),
            (UnOp::Neg, Ty::I64) => (self.b.ins().ineg(x), Ty::I64),
            (UnOp::Abs, Ty::F32) => f(self.b.ins().fabs(x)),
            (UnOp::Abs, Ty::I64) => (self.b.ins().iabs(x), Ty::I64),
            (UnOp::Sqrt, Ty::F32) => f(self.b.ins().sqrt(x)),
            (UnOp::Floor, Ty::F32) => f(self.b.ins().floor(x)),
            (UnOp::Exp, Ty::F32) => f(self.call(Helper::Exp, &[x])?),
            (UnOp::Log, Ty::F32) => f(self.call(Helper::Log, &[x])?),
            (UnOp::Tanh, Ty::F32) => f(self.call(Helper::Tanh, &[x])?),
            (UnOp::Sin, Ty::F32) => f(self.call(Helper::Sin, &[x])?),
            (UnOp::Cos, Ty::F32) => f(self.call(Helper::Cos, &[x])?),
            (UnOp::ToF32, Ty::I64) => f(self.b.ins().fcvt_from_sint(types::F32, x)),
            (UnOp::ToI64, Ty::F32) => (self.b.ins().fcvt_to_sint_sat(types::I64, x), Ty::I64),
            (UnOp::Not, Ty::Bool) => (self.b.ins().bxor_imm_s(x, 1), Ty::Bool),
            (UnOp::F16Bits, Ty::I64) => {
                let low = self.b.ins().ireduce(types::I32, x);
                let low = self.b.ins().band_imm_s(low, 0xffff);
                f(self.call(Helper::F16ToF32, &[low])?)
            }
            (UnOp::F32Bits, Ty::I64) => {
                let low = self.b.ins().ireduce(types::I32, x);
                f(self
                    .b
                    .ins()
                    .bitcast(types::F32, cranelift_codegen::ir::MemFlagsData::new(), low))
            }
            _ => return Err(self.err(format!("{op:?} of a {} value", ty.as_str()))),
        })
    }

    fn binary(
        &mut self,
        op: BinOp,
        x: Value,
        y: Value,
        ty: Ty,
    ) -> Result<(Value, Ty), CodegenError> {
        use BinOp::*;
        let b = &mut self.b;
        let cmp_f = |cc| Some(cc);
        let bool_of = |v| (v, Ty::Bool);
        Ok(match ty {
            Ty::F32 => {
                let fcc = match op {
                    Lt => cmp_f(FloatCC::LessThan),
                    Le => cmp_f(FloatCC::LessThanOrEqual),
                    Gt => cmp_f(FloatCC::GreaterThan),
                    Ge => cmp_f(FloatCC::GreaterThanOrEqual),
                    Eq => cmp_f(FloatCC::Equal),
                    Ne => cmp_f(FloatCC::NotEqual),
                    _ => None,
                };
                if let Some(cc) = fcc {
                    return Ok(bool_of(b.ins().fcmp(cc, x, y)));
                }
                let v = match op {
                    Add => b.ins().fadd(x, y),
                    Sub => b.ins().fsub(x, y),
                    Mul => b.ins().fmul(x, y),
                    Div => b.ins().fdiv(x, y),
                    // Rust's `min`/`max`: a NaN operand gives the other one.
                    Min | Max => {
                        let cc = if op == Min {
                            FloatCC::LessThan
                        } else {
                            FloatCC::GreaterThan
                        };
                        let pick_y = b.ins().fcmp(cc, y, x);
                        let m = b.ins().select(pick_y, y, x);
                        let x_nan = b.ins().fcmp(FloatCC::Unordered, x, x);
                        b.ins().select(x_nan, y, m)
                    }
                    Pow => return Ok((self.call(Helper::Pow, &[x, y])?, Ty::F32)),
                    _ => return Err(self.err(format!("{op:?} of f32 values"))),
                };
                (v, Ty::F32)
            }
            Ty::I64 => {
                let icc = match op {
                    Lt => Some(IntCC::SignedLessThan),
                    Le => Some(IntCC::SignedLessThanOrEqual),
                    Gt => Some(IntCC::SignedGreaterThan),
                    Ge => Some(IntCC::SignedGreaterThanOrEqual),
                    Eq => Some(IntCC::Equal),
                    Ne => Some(IntCC::NotEqual),
                    _ => None,
                };
                if let Some(cc) = icc {
                    return Ok(bool_of(b.ins().icmp(cc, x, y)));
                }
                let v = match op {
                    Add => b.ins().iadd(x, y),
                    Sub => b.ins().isub(x, y),
                    Mul => b.ins().imul(x, y),
                    Div | Rem => {
                        // No trap: a zero divisor gives 0, and -1 (whose quotient of
                        // i64::MIN overflows) divides as a negation, remainder 0.
                        let zero = b.ins().iconst(types::I64, 0);
                        let one = b.ins().iconst(types::I64, 1);
                        let is_zero = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                        let is_m1 = b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                        let odd = b.ins().bor(is_zero, is_m1);
                        let safe = b.ins().select(odd, one, y);
                        let (q, special) = if op == Div {
                            (b.ins().sdiv(x, safe), b.ins().ineg(x))
                        } else {
                            (b.ins().srem(x, safe), zero)
                        };
                        let v = b.ins().select(is_m1, special, q);
                        b.ins().select(is_zero, zero, v)
                    }
                    Min => b.ins().smin(x, y),
                    Max => b.ins().smax(x, y),
                    Shl => b.ins().ishl(x, y),
                    Shr => b.ins().sshr(x, y),
                    BitAnd => b.ins().band(x, y),
                    BitOr => b.ins().bor(x, y),
                    _ => return Err(self.err(format!("{op:?} of i64 values"))),
                };
                (v, Ty::I64)
            }
            Ty::Bool => bool_of(match op {
                And => b.ins().band(x, y),
                Or => b.ins().bor(x, y),
                Eq => b.ins().icmp(IntCC::Equal, x, y),
                Ne => b.ins().icmp(IntCC::NotEqual, x, y),
                _ => return Err(self.err(format!("{op:?} of bool values"))),
            }),
        })
    }
}
