//! The state of one kernel's emission and its frame: the entry block with a slot per
//! variable and a base per buffer, the body, and the single exit.

use super::expr::Val;
use super::{param_bufs, Target};
use crate::codegen::CodegenError;
use crate::kernel::{Access, BufId, Elem, Expr, Kernel, Ty, VarId};
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::BasicTypeEnum;
use inkwell::values::{FunctionValue, IntValue, PointerValue};

/// Emits the body of one kernel into a function that `Target::declare` made.
pub(crate) struct Emitter<'ctx, 'a> {
    pub ctx: &'ctx Context,
    pub module: &'a Module<'ctx>,
    pub k: &'a Kernel,
    /// The body function.
    pub f: FunctionValue<'ctx>,
    /// Where code goes; targets emit at its position and leave it where their code ends.
    pub b: Builder<'ctx>,
    pub(super) target: &'a dyn Target<'ctx>,
    /// Base pointer of each kernel buffer (parameters and scratch alike).
    pub(super) bufs: Vec<PointerValue<'ctx>>,
    /// The stack slot of each variable.
    pub(super) vars: Vec<PointerValue<'ctx>>,
    pub(super) seq: IntValue<'ctx>,
    pub(super) past: IntValue<'ctx>,
    /// How many loops enclose the statement being emitted.
    pub(super) depth: usize,
    /// The depth inside the innermost enclosing `Vector` loop, if any.
    pub(super) vector_depth: Option<usize>,
    /// The loop depth at which each local was declared.
    pub(super) local_depth: Vec<usize>,
    /// Whether float ops being emitted accumulate into a local across a `Vector` loop
    /// and so may be reassociated and contracted.
    pub(super) fast: bool,
    /// Pre-order number of the next `Loop` statement (see `Target::lower_stmt`).
    pub(super) next_loop: usize,
}

impl<'ctx, 'a> Emitter<'ctx, 'a> {
    /// An emitter at the top of `f`'s new entry block; `seq` and `past` are the
    /// parameters after the buffers.
    pub(super) fn new(
        ctx: &'ctx Context,
        module: &'a Module<'ctx>,
        k: &'a Kernel,
        f: FunctionValue<'ctx>,
        target: &'a dyn Target<'ctx>,
    ) -> Result<Self, CodegenError> {
        let b = ctx.create_builder();
        let entry = ctx.append_basic_block(f, "entry");
        b.position_at_end(entry);
        let n = param_bufs(k).len() as u32;
        let int_param = |i: u32| -> Result<IntValue<'ctx>, CodegenError> {
            f.get_nth_param(n + i)
                .map(|v| v.into_int_value())
                .ok_or_else(|| CodegenError::Kernel {
                    kernel: k.name.clone(),
                    message: "missing body parameter".into(),
                })
        };
        Ok(Emitter {
            ctx,
            module,
            k,
            f,
            b,
            target,
            bufs: Vec::with_capacity(k.bufs.len()),
            vars: Vec::with_capacity(k.vars.len()),
            seq: int_param(0)?,
            past: int_param(1)?,
            depth: 0,
            vector_depth: None,
            local_depth: vec![0; k.vars.len()],
            fast: false,
            next_loop: 0,
        })
    }

    /// An error about this kernel.
    pub fn err(&self, message: String) -> CodegenError {
        CodegenError::Kernel {
            kernel: self.k.name.clone(),
            message,
        }
    }

    /// The target's prologue, the frame, the body and the exit.
    pub(super) fn run(mut self) -> Result<(), CodegenError> {
        let target = self.target;
        target.prologue(&mut self)?;
        // Allocas first, all in the entry block, so mem2reg and SROA see them.
        for (i, v) in self.k.vars.iter().enumerate() {
            let slot = self
                .b
                .build_alloca(self.llvm_ty(v.ty), &format!("{}_{i}", v.name))?;
            self.vars.push(slot);
        }
        let heap = self.bind_buffers()?;
        let exit = self.ctx.append_basic_block(self.f, "exit");
        self.guarded_body(&heap, exit)?;
        // The exit block was made first (the heap path needs it); it reads best last.
        if let Some(last) = self.f.get_last_basic_block() {
            let _ = exit.move_after(last);
        }
        self.b.position_at_end(exit);
        self.b.build_return(None)?;
        Ok(())
    }

    /// The LLVM type of a kernel IR value type.
    pub fn llvm_ty(&self, t: Ty) -> BasicTypeEnum<'ctx> {
        match t {
            Ty::F32 => self.ctx.f32_type().into(),
            Ty::I64 => self.ctx.i64_type().into(),
            Ty::Bool => self.ctx.bool_type().into(),
        }
    }

    /// The LLVM type of a buffer element as stored (bf16 as its 16 bits).
    pub fn elem_ty(&self, e: Elem) -> BasicTypeEnum<'ctx> {
        match e {
            Elem::F32 => self.ctx.f32_type().into(),
            Elem::Bf16 => self.ctx.i16_type().into(),
            Elem::F16 => self.ctx.f16_type().into(),
            Elem::I32 => self.ctx.i32_type().into(),
            Elem::U8 | Elem::F8 => self.ctx.i8_type().into(),
        }
    }

    /// The slot of a variable and its type.
    pub fn var_slot(&self, v: VarId) -> Result<(PointerValue<'ctx>, Ty), CodegenError> {
        let i = v.0 as usize;
        match (self.vars.get(i), self.k.vars.get(i)) {
            (Some(p), Some(kv)) => Ok((*p, kv.ty)),
            _ => Err(self.err(format!(
                "variable id {i} out of range ({} variables)",
                self.k.vars.len()
            ))),
        }
    }

    /// The base pointer of a buffer, its element type and access.
    pub fn buf(&self, id: BufId) -> Result<(PointerValue<'ctx>, Elem, Access), CodegenError> {
        let i = id.0 as usize;
        match (self.bufs.get(i), self.k.bufs.get(i)) {
            (Some(p), Some(kb)) => Ok((*p, kb.elem, kb.access)),
            _ => Err(self.err(format!(
                "buffer id {i} out of range ({} buffers)",
                self.k.bufs.len()
            ))),
        }
    }

    /// An i64 expression; `what` names it in the error when it has another type.
    pub fn int(&mut self, e: &Expr, what: &str) -> Result<IntValue<'ctx>, CodegenError> {
        match self.expr(e)? {
            Val::I(v) => Ok(v),
            v => Err(self.err(format!(
                "{what} `{}` is {}, not i64",
                self.k.expr(e),
                v.ty().as_str()
            ))),
        }
    }
}
