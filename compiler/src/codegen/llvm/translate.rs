//! One `kernel::Kernel` to LLVM IR: an entry function with the common calling convention
//! that loads the buffer pointers and sizes once and calls an internal, always-inlined body
//! function whose buffer parameters are `noalias`.
//!
//! **Aliasing contract:** every non-scratch buffer parameter of the body is `noalias`, and
//! read-only ones are also `readonly`. That is sound because a launch binds the same
//! memory (a program buffer or any alias of it) to two parameters of one kernel only when
//! both are `Read`: LLVM's `noalias` only forbids overlap with a pointer that is written
//! through. The inliner turns these into scoped alias metadata, so loads of weights can be
//! hoisted and vectorized across stores to the output.
//!
//! Every variable lives in an `alloca` (mem2reg makes SSA of it), so any use the kernel
//! IR's scoping allows is dominated by a definition. Integer arithmetic wraps; division and
//! remainder by zero yield 0 instead of trapping (the interpreter reports an error there),
//! and `f32 → i64` saturates (NaN → 0), as Rust's `as` does.
//!
//! The same body builder also emits GPU kernels for the NVPTX backend (`translate_gpu`):
//! buffers are kernel parameters in the global address space, the parallel loop strides
//! over the grid, math uses the PTX approximations of `codegen::ptx::device`, and in warp
//! mode a warp cooperates on each parallel iteration (see `codegen::ptx::plan`).

use super::math::Math;
use super::CodegenError;
use crate::codegen::ptx::device as gpu_math;
use crate::codegen::ptx::plan::{KernelPlan, Mode as GpuMode};
use crate::kernel::{
    Access, BinOp, BufId, DimVar, Elem, Expr, Kernel, LoopKind, Stmt, Ty, UnOp, VarId,
};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, BasicType, BasicTypeEnum, VectorType};
use inkwell::values::{
    AsValueRef, BasicMetadataValueEnum, BasicValue, BasicValueEnum, FastMathFlags, FloatValue,
    FunctionValue, InstructionValue, IntValue, PointerValue,
};
use inkwell::{FloatPredicate, IntPredicate};

/// Scratch buffers up to this many bytes live on the stack; larger ones come from
/// `malloc`, so a big scratch cannot overflow a worker thread's stack.
pub(super) const MAX_STACK_SCRATCH: u64 = 256 * 1024;

/// The symbol of kernel `index`: a prefix keeps it clear of C library names (a kernel
/// may well be called `exp`), and the index keeps it unique in the module.
pub(crate) fn symbol(index: usize, kernel: &Kernel) -> String {
    let name: String = kernel
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("archc_k{index}_{name}")
}

impl From<BuilderError> for CodegenError {
    fn from(e: BuilderError) -> Self {
        CodegenError::Llvm {
            stage: "ir builder",
            message: e.to_string(),
        }
    }
}

/// A scalar value with its kernel IR type.
#[derive(Clone, Copy)]
enum Val<'ctx> {
    F(FloatValue<'ctx>),
    I(IntValue<'ctx>),
    B(IntValue<'ctx>),
}

impl<'ctx> Val<'ctx> {
    fn ty(self) -> Ty {
        match self {
            Val::F(_) => Ty::F32,
            Val::I(_) => Ty::I64,
            Val::B(_) => Ty::Bool,
        }
    }

    fn basic(self) -> BasicValueEnum<'ctx> {
        match self {
            Val::F(v) => v.into(),
            Val::I(v) | Val::B(v) => v.into(),
        }
    }
}

/// Function attributes naming the CPU: the JIT's backend takes its CPU from them (its own
/// target machine is generic), and the optimizer's cost model reads them too.
#[derive(Debug, Clone)]
pub(super) struct CpuAttrs {
    pub cpu: String,
    pub features: String,
}

impl CpuAttrs {
    /// Whether the CPU has the AVX-512 bf16 dot product (`vdpbf16ps`): named in the
    /// features (the host's list), or implied by a CPU that always has it.
    fn has_avx512bf16(&self) -> bool {
        let by_feature = self.features.split(',').any(|f| f == "+avx512bf16");
        let disabled = self.features.split(',').any(|f| f == "-avx512bf16");
        let by_cpu = matches!(
            self.cpu.as_str(),
            "cooperlake"
                | "sapphirerapids"
                | "emeraldrapids"
                | "graniterapids"
                | "znver4"
                | "znver5"
        );
        by_feature || (by_cpu && !disabled)
    }
}

/// Adds kernel `index` to `module`: the entry function `symbol(index, k)` and its body.
pub(super) fn translate<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    index: usize,
    k: &Kernel,
    cpu: &CpuAttrs,
) -> Result<FunctionValue<'ctx>, CodegenError> {
    let ptr = ctx.ptr_type(Default::default());
    let i64t = ctx.i64_type();
    let void = ctx.void_type();
    let name = symbol(index, k);
    let err = |message: String| CodegenError::Kernel {
        kernel: k.name.clone(),
        message,
    };

    let enum_attr = |n: &str| ctx.create_enum_attribute(Attribute::get_named_enum_kind_id(n), 0);
    let cpu_attrs = |f: FunctionValue<'ctx>| {
        f.add_attribute(AttributeLoc::Function, enum_attr("nounwind"));
        f.add_attribute(
            AttributeLoc::Function,
            ctx.create_string_attribute("target-cpu", &cpu.cpu),
        );
        if !cpu.features.is_empty() {
            f.add_attribute(
                AttributeLoc::Function,
                ctx.create_string_attribute("target-features", &cpu.features),
            );
        }
    };

    // The body: one pointer per non-scratch buffer, then seq, past, thread, threads.
    let params: Vec<usize> = (0..k.bufs.len())
        .filter(|&b| !matches!(k.bufs[b].access, Access::Scratch { .. }))
        .collect();
    let mut body_params: Vec<_> = params.iter().map(|_| ptr.into()).collect();
    body_params.extend([BasicMetadataTypeEnum::from(i64t); 4]);
    let body_fn = module.add_function(
        &format!("{name}.body"),
        void.fn_type(&body_params, false),
        Some(Linkage::Internal),
    );
    cpu_attrs(body_fn);
    body_fn.add_attribute(AttributeLoc::Function, enum_attr("alwaysinline"));
    for (p, &b) in params.iter().enumerate() {
        let loc = AttributeLoc::Param(p as u32);
        body_fn.add_attribute(loc, enum_attr("noalias"));
        body_fn.add_attribute(loc, enum_attr("nocapture"));
        if k.bufs[b].access == Access::Read {
            body_fn.add_attribute(loc, enum_attr("readonly"));
        }
        body_fn
            .get_nth_param(p as u32)
            .ok_or_else(|| err("missing body parameter".into()))?
            .set_name(&format!("b{b}"));
    }
    for (n, label) in ["seq", "past", "thread", "threads"].iter().enumerate() {
        if let Some(v) = body_fn.get_nth_param((params.len() + n) as u32) {
            v.set_name(label);
        }
    }

    // The entry: load pointers and sizes once, call the body.
    let entry_fn = module.add_function(
        &name,
        void.fn_type(&[ptr.into(), ptr.into(), i64t.into(), i64t.into()], false),
        None,
    );
    cpu_attrs(entry_fn);
    let b = ctx.create_builder();
    let bb = ctx.append_basic_block(entry_fn, "entry");
    b.position_at_end(bb);
    let nth = |n: u32| {
        entry_fn
            .get_nth_param(n)
            .ok_or_else(|| err("missing entry parameter".into()))
    };
    let (bufs, dims) = (nth(0)?.into_pointer_value(), nth(1)?.into_pointer_value());
    bufs.set_name("bufs");
    dims.set_name("dims");
    let (thread, threads) = (nth(2)?.into_int_value(), nth(3)?.into_int_value());
    thread.set_name("thread");
    threads.set_name("threads");
    let mut args: Vec<BasicMetadataValueEnum> = Vec::new();
    for &p in &params {
        // SAFETY (for LLVM): `bufs` has one entry per kernel parameter by convention.
        let slot =
            unsafe { b.build_in_bounds_gep(ptr, bufs, &[i64t.const_int(p as u64, false)], "")? };
        args.push(b.build_load(ptr, slot, &format!("b{p}"))?.into());
    }
    for (n, label) in [(0u64, "seq"), (1, "past")] {
        let slot = unsafe { b.build_in_bounds_gep(i64t, dims, &[i64t.const_int(n, false)], "")? };
        args.push(b.build_load(i64t, slot, label)?.into());
    }
    args.push(thread.into());
    args.push(threads.into());
    b.build_call(body_fn, &args, "")?;
    b.build_return(None)?;

    BodyBuilder::emit(ctx, module, k, body_fn, &params, None, cpu.has_avx512bf16())?;
    Ok(entry_fn)
}

/// Adds kernel `index` to `module` as a PTX kernel entry `symbol(index, k)`: one
/// parameter per non-scratch buffer (a global-memory pointer, `noalias`, and `readonly`
/// when the kernel only reads it, so loads may use the non-coherent cache), then `seq`
/// and `past`. Grid position, scratch and vector loops follow `plan`.
pub(crate) fn translate_gpu<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    index: usize,
    k: &Kernel,
    plan: &KernelPlan,
) -> Result<FunctionValue<'ctx>, CodegenError> {
    let global = ctx.ptr_type(inkwell::AddressSpace::from(1u16));
    let i64t = ctx.i64_type();
    let name = symbol(index, k);
    let params: Vec<usize> = (0..k.bufs.len())
        .filter(|&b| !matches!(k.bufs[b].access, Access::Scratch { .. }))
        .collect();
    let mut tys: Vec<BasicMetadataTypeEnum> = params.iter().map(|_| global.into()).collect();
    tys.extend([BasicMetadataTypeEnum::from(i64t); 2]);
    let f = module.add_function(&name, ctx.void_type().fn_type(&tys, false), None);
    let enum_attr = |n: &str| ctx.create_enum_attribute(Attribute::get_named_enum_kind_id(n), 0);
    f.add_attribute(AttributeLoc::Function, enum_attr("nounwind"));
    for (p, &b) in params.iter().enumerate() {
        let loc = AttributeLoc::Param(p as u32);
        f.add_attribute(loc, enum_attr("noalias"));
        f.add_attribute(loc, enum_attr("nocapture"));
        if k.bufs[b].access == Access::Read {
            f.add_attribute(loc, enum_attr("readonly"));
        }
        if let Some(v) = f.get_nth_param(p as u32) {
            v.set_name(&format!("b{b}"));
        }
    }
    for (n, label) in ["seq", "past"].iter().enumerate() {
        if let Some(v) = f.get_nth_param((params.len() + n) as u32) {
            v.set_name(label);
        }
    }
    BodyBuilder::emit(ctx, module, k, f, &params, Some(plan), false)?;
    Ok(f)
}

/// Emits the body of one kernel.
struct BodyBuilder<'ctx, 'a> {
    ctx: &'ctx Context,
    module: &'a Module<'ctx>,
    k: &'a Kernel,
    f: FunctionValue<'ctx>,
    b: Builder<'ctx>,
    /// Base pointer of each kernel buffer (parameters and scratch alike).
    bufs: Vec<PointerValue<'ctx>>,
    /// The stack slot of each variable.
    vars: Vec<PointerValue<'ctx>>,
    seq: IntValue<'ctx>,
    past: IntValue<'ctx>,
    thread: IntValue<'ctx>,
    threads: IntValue<'ctx>,
    /// How many loops enclose the statement being emitted.
    depth: usize,
    /// The depth inside the innermost enclosing `Vector` loop, if any.
    vector_depth: Option<usize>,
    /// The loop depth at which each local was declared.
    local_depth: Vec<usize>,
    /// Whether float ops being emitted accumulate into a local across a `Vector` loop
    /// and so may be reassociated and contracted.
    fast: bool,
    /// The GPU state when emitting a PTX kernel; `None` for CPUs.
    gpu: Option<Gpu<'ctx, 'a>>,
    /// Pre-order number of the next `Loop` statement, the key of `KernelPlan::distributed`.
    next_loop: usize,
    /// Whether bf16 dot-product loops may use `vdpbf16ps` (see `dot_loop`).
    bf16_dot: bool,
}

/// What the body builder needs to know while emitting a GPU kernel.
struct Gpu<'ctx, 'a> {
    plan: &'a KernelPlan,
    /// This thread's lane in its warp (i64).
    lane: IntValue<'ctx>,
    /// The index of this thread (thread mode) or warp (warp mode) in the grid, and the
    /// number of them: the parallel loop strides by the count.
    id: IntValue<'ctx>,
    count: IntValue<'ctx>,
    /// Whether the code being emitted runs in one lane per iteration of a distributed
    /// vector loop (otherwise, in warp mode, every lane of a warp runs it alike).
    distributed: bool,
}

impl Gpu<'_, '_> {
    /// Whether every lane of a warp runs the statement being emitted with the same values.
    fn redundant(&self) -> bool {
        self.plan.mode == GpuMode::Warp && !self.distributed
    }
}

impl<'ctx, 'a> BodyBuilder<'ctx, 'a> {
    fn emit(
        ctx: &'ctx Context,
        module: &'a Module<'ctx>,
        k: &'a Kernel,
        f: FunctionValue<'ctx>,
        params: &[usize],
        plan: Option<&'a KernelPlan>,
        bf16_dot: bool,
    ) -> Result<(), CodegenError> {
        let b = ctx.create_builder();
        let entry = ctx.append_basic_block(f, "entry");
        b.position_at_end(entry);
        let n = params.len() as u32;
        let int_param = |i: u32| -> Result<IntValue<'ctx>, CodegenError> {
            f.get_nth_param(n + i)
                .map(|v| v.into_int_value())
                .ok_or_else(|| CodegenError::Kernel {
                    kernel: k.name.clone(),
                    message: "missing body parameter".into(),
                })
        };
        // A GPU kernel takes only `seq` and `past`; its place in the grid comes from the
        // special registers.
        let (thread, threads, gpu) = match plan {
            None => (int_param(2)?, int_param(3)?, None),
            Some(plan) => {
                let g = gpu_math::grid_position(ctx, module, &b, plan)?;
                let gpu = Gpu {
                    plan,
                    lane: g.lane,
                    id: g.id,
                    count: g.count,
                    distributed: false,
                };
                (g.id, g.count, Some(gpu))
            }
        };
        let mut bb = BodyBuilder {
            ctx,
            module,
            k,
            f,
            b,
            bufs: Vec::with_capacity(k.bufs.len()),
            vars: Vec::with_capacity(k.vars.len()),
            seq: int_param(0)?,
            past: int_param(1)?,
            thread,
            threads,
            depth: 0,
            vector_depth: None,
            local_depth: vec![0; k.vars.len()],
            fast: false,
            gpu,
            next_loop: 0,
            bf16_dot,
        };
        bb.run(params)
    }

    fn err(&self, message: String) -> CodegenError {
        CodegenError::Kernel {
            kernel: self.k.name.clone(),
            message,
        }
    }

    fn run(&mut self, params: &[usize]) -> Result<(), CodegenError> {
        let ctx = self.ctx;
        let i64t = ctx.i64_type();
        // Allocas first, all in the entry block, so mem2reg and SROA see them.
        for (i, v) in self.k.vars.iter().enumerate() {
            let slot = self
                .b
                .build_alloca(self.llvm_ty(v.ty), &format!("{}_{i}", v.name))?;
            self.vars.push(slot);
        }
        let mut heap = Vec::new();
        let mut next_param = 0u32;
        for (i, kb) in self.k.bufs.iter().enumerate() {
            match kb.access {
                Access::Scratch { len } => {
                    let elem = self.elem_ty(kb.elem);
                    let bytes = len.saturating_mul(kb.elem.bytes() as u64).max(1);
                    let p = if let Some(gpu) = &self.gpu {
                        // Thread mode: local memory. Warp mode: the warp's slice of a
                        // shared-memory array, so every lane sees what any lane wrote.
                        match gpu.plan.mode {
                            GpuMode::Thread => {
                                let arr = elem.array_type(len.max(1) as u32);
                                self.b.build_alloca(arr, &format!("scratch{i}"))?
                            }
                            GpuMode::Warp => gpu_math::shared_scratch(
                                ctx,
                                self.module,
                                &self.b,
                                gpu.plan,
                                &format!("{}.scratch{i}", self.f.get_name().to_string_lossy()),
                                elem,
                                len,
                            )?,
                        }
                    } else if bytes <= MAX_STACK_SCRATCH {
                        let arr = elem.array_type(len.max(1) as u32);
                        let p = self.b.build_alloca(arr, &format!("scratch{i}"))?;
                        // Vector loads of scratch like aligned memory.
                        if let Some(inst) = p.as_instruction() {
                            let _ = inst.set_alignment(64);
                        }
                        p
                    } else {
                        // 64 bytes more, so that the buffer can start on a cache line
                        // (vector loads that straddle two lines cost twice).
                        let malloc = self.libc_fn("malloc", true)?;
                        let call = self.b.build_call(
                            malloc,
                            &[i64t.const_int(bytes + 64, false).into()],
                            &format!("scratch{i}"),
                        )?;
                        let p = call
                            .try_as_basic_value()
                            .basic()
                            .ok_or_else(|| self.err("malloc returned void".into()))?
                            .into_pointer_value();
                        heap.push(p);
                        let addr = self.b.build_ptr_to_int(p, i64t, "")?;
                        let mis = self.b.build_and(addr, i64t.const_int(63, false), "")?;
                        let skip = self.b.build_and(
                            self.b.build_int_sub(i64t.const_int(64, false), mis, "")?,
                            i64t.const_int(63, false),
                            "",
                        )?;
                        unsafe {
                            self.b
                                .build_in_bounds_gep(ctx.i8_type(), p, &[skip], "scratch.al")?
                        }
                    };
                    self.bufs.push(p);
                }
                _ => {
                    debug_assert_eq!(params.get(next_param as usize), Some(&i));
                    let p = self
                        .f
                        .get_nth_param(next_param)
                        .ok_or_else(|| self.err("missing buffer parameter".into()))?
                        .into_pointer_value();
                    next_param += 1;
                    self.bufs.push(p);
                }
            }
        }
        let exit = ctx.append_basic_block(self.f, "exit");
        if !heap.is_empty() {
            // Out of memory leaves the outputs unwritten rather than crashing the process.
            let mut ok = ctx.bool_type().const_int(1, false);
            for p in &heap {
                let nonnull = self.b.build_is_not_null(*p, "")?;
                ok = self.b.build_and(ok, nonnull, "")?;
            }
            let body = ctx.append_basic_block(self.f, "body");
            let free_bb = ctx.append_basic_block(self.f, "free");
            self.b.build_conditional_branch(ok, body, free_bb)?;
            self.b.position_at_end(body);
            self.block(&self.k.body)?;
            self.b.build_unconditional_branch(free_bb)?;
            self.b.position_at_end(free_bb);
            let free = self.libc_fn("free", false)?;
            for p in heap {
                self.b.build_call(free, &[p.into()], "")?;
            }
            self.b.build_unconditional_branch(exit)?;
        } else {
            self.block(&self.k.body)?;
            self.b.build_unconditional_branch(exit)?;
        }
        // The exit block was made first (the heap path needs it); it reads best last.
        if let Some(last) = self.f.get_last_basic_block() {
            let _ = exit.move_after(last);
        }
        self.b.position_at_end(exit);
        self.b.build_return(None)?;
        Ok(())
    }

    /// `malloc` (returns ptr) or `free`.
    fn libc_fn(&self, name: &str, returns: bool) -> Result<FunctionValue<'ctx>, CodegenError> {
        if let Some(f) = self.module.get_function(name) {
            return Ok(f);
        }
        let ptr = self.ctx.ptr_type(Default::default());
        let ty = if returns {
            ptr.fn_type(&[self.ctx.i64_type().into()], false)
        } else {
            self.ctx.void_type().fn_type(&[ptr.into()], false)
        };
        Ok(self.module.add_function(name, ty, None))
    }

    fn llvm_ty(&self, t: Ty) -> BasicTypeEnum<'ctx> {
        match t {
            Ty::F32 => self.ctx.f32_type().into(),
            Ty::I64 => self.ctx.i64_type().into(),
            Ty::Bool => self.ctx.bool_type().into(),
        }
    }

    fn elem_ty(&self, e: Elem) -> BasicTypeEnum<'ctx> {
        match e {
            Elem::F32 => self.ctx.f32_type().into(),
            Elem::Bf16 => self.ctx.i16_type().into(),
            Elem::F16 => self.ctx.f16_type().into(),
            Elem::I32 => self.ctx.i32_type().into(),
            Elem::U8 | Elem::F8 => self.ctx.i8_type().into(),
        }
    }

    fn var_slot(&self, v: VarId) -> Result<(PointerValue<'ctx>, Ty), CodegenError> {
        let i = v.0 as usize;
        match (self.vars.get(i), self.k.vars.get(i)) {
            (Some(p), Some(kv)) => Ok((*p, kv.ty)),
            _ => Err(self.err(format!(
                "variable id {i} out of range ({} variables)",
                self.k.vars.len()
            ))),
        }
    }

    fn buf(&self, id: BufId) -> Result<(PointerValue<'ctx>, Elem, Access), CodegenError> {
        let i = id.0 as usize;
        match (self.bufs.get(i), self.k.bufs.get(i)) {
            (Some(p), Some(kb)) => Ok((*p, kb.elem, kb.access)),
            _ => Err(self.err(format!(
                "buffer id {i} out of range ({} buffers)",
                self.k.bufs.len()
            ))),
        }
    }

    fn block(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn store_var(&mut self, var: VarId, value: &Expr, what: &str) -> Result<(), CodegenError> {
        let (slot, ty) = self.var_slot(var)?;
        let v = self.expr(value)?;
        if v.ty() != ty {
            return Err(self.err(format!(
                "`{what}` of `{}`: the variable is {} but `{}` is {}",
                self.k.vars[var.0 as usize].name,
                ty.as_str(),
                self.k.expr(value),
                v.ty().as_str()
            )));
        }
        self.b.build_store(slot, v.basic())?;
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), CodegenError> {
        match s {
            Stmt::Let { var, value } => self.store_var(*var, value, "let"),
            Stmt::Local { var, init } => {
                if let Some(d) = self.local_depth.get_mut(var.0 as usize) {
                    *d = self.depth;
                }
                self.store_var(*var, init, "local")
            }
            Stmt::Set { var, value } => {
                let declared = self.local_depth.get(var.0 as usize).copied().unwrap_or(0);
                let prev = self.fast;
                self.fast = self.vector_depth.is_some_and(|vd| declared < vd);
                let r = self.store_var(*var, value, "set");
                self.fast = prev;
                r
            }
            Stmt::Store { buf, index, value } => self.store(*buf, index, value),
            Stmt::If { cond, then, els } => {
                let c = match self.expr(cond)? {
                    Val::B(c) => c,
                    v => {
                        return Err(self.err(format!(
                            "`if {}`: the condition is {}, not bool",
                            self.k.expr(cond),
                            v.ty().as_str()
                        )))
                    }
                };
                let then_bb = self.ctx.append_basic_block(self.f, "then");
                let else_bb = self.ctx.append_basic_block(self.f, "else");
                let join = self.ctx.append_basic_block(self.f, "endif");
                self.b.build_conditional_branch(c, then_bb, else_bb)?;
                self.b.position_at_end(then_bb);
                self.block(then)?;
                self.b.build_unconditional_branch(join)?;
                self.b.position_at_end(else_bb);
                self.block(els)?;
                self.b.build_unconditional_branch(join)?;
                self.b.position_at_end(join);
                Ok(())
            }
            Stmt::Loop {
                var,
                start,
                end,
                step,
                kind,
                body,
            } => self.for_loop(*var, start, end, *step, *kind, body),
        }
    }

    fn int(&mut self, e: &Expr, what: &str) -> Result<IntValue<'ctx>, CodegenError> {
        match self.expr(e)? {
            Val::I(v) => Ok(v),
            v => Err(self.err(format!(
                "{what} `{}` is {}, not i64",
                self.k.expr(e),
                v.ty().as_str()
            ))),
        }
    }

    /// `for var in start..end step step` as preheader, header (test), body, latch, exit.
    /// A parallel loop runs only this thread's contiguous chunk of the iterations.
    fn for_loop(
        &mut self,
        var: VarId,
        start: &Expr,
        end: &Expr,
        step: u64,
        kind: LoopKind,
        body: &[Stmt],
    ) -> Result<(), CodegenError> {
        let i64t = self.ctx.i64_type();
        if step == 0 || step > i64::MAX as u64 {
            return Err(self.err(format!("loop step {step} is not in 1..=i64::MAX")));
        }
        let (slot, ty) = self.var_slot(var)?;
        if ty != Ty::I64 {
            return Err(self.err(format!(
                "loop variable `{}` is {}, not i64",
                self.k.vars[var.0 as usize].name,
                ty.as_str()
            )));
        }
        let ordinal = self.next_loop;
        self.next_loop += 1;
        if let (LoopKind::Vector(_), 1, None) = (kind, step, &self.gpu) {
            if let Some(plan) = lane_plan(var, start, end, body, self.k) {
                // The loop and the inner loop it holds.
                self.next_loop += 1;
                return self.lane_loop(&plan);
            }
        }
        let mut lo = self.int(start, "loop start")?;
        let mut hi = self.int(end, "loop end")?;
        let mut stepv = i64t.const_int(step, false);
        if let (LoopKind::Vector(_), 1, None) = (kind, step, &self.gpu) {
            if self.bf16_dot {
                if let Some(plan) = dot_plan(var, body, self.k, Elem::Bf16) {
                    // The bf16 pairs run as `vdpbf16ps`; this loop finishes the rest.
                    lo = self.dot_loop(&plan, lo, hi)?;
                }
            }
            if let Some(plan) = dot_plan(var, body, self.k, Elem::F32).filter(Dot::many_rows) {
                // Many f32 dot products against one shared row: 16 lanes at a time, one
                // butterfly at the end; this loop finishes the rest.
                lo = self.dot_loop(&plan, lo, hi)?;
            }
        }
        // A vector loop the plan spreads over the lanes of a warp, with its reductions.
        let reductions = self
            .gpu
            .as_ref()
            .filter(|g| g.redundant())
            .and_then(|g| g.plan.distributed.get(&ordinal))
            .cloned();
        if kind == LoopKind::Parallel {
            match &self.gpu {
                // Grid-stride: iteration `id`, `id + count`, ... so consecutive threads
                // (or warps) take consecutive iterations, and any grid size is correct.
                Some(gpu) => {
                    let first = self.b.build_int_mul(gpu.id, stepv, "")?;
                    lo = self.b.build_int_add(lo, first, "stride.lo")?;
                    stepv = self.b.build_int_mul(gpu.count, stepv, "stride")?;
                }
                None => (lo, hi) = self.thread_chunk(lo, hi, stepv)?,
            }
        }
        if let (Some(reds), Some(gpu)) = (&reductions, &self.gpu) {
            let lane = gpu.lane;
            gpu_math::sync_warp(self.module, &self.b)?;
            // Lane 0 carries the value the accumulator had before the loop; the other
            // lanes start from the identity, so the combined result counts it once.
            let is_lane0 =
                self.b
                    .build_int_compare(IntPredicate::EQ, lane, i64t.const_zero(), "lane0")?;
            for &(v, op) in reds {
                let (vslot, vty) = self.var_slot(v)?;
                let cur = self.b.build_load(self.llvm_ty(vty), vslot, "")?;
                let id = gpu_math::identity(self.ctx, op, vty);
                let start = self.b.build_select(is_lane0, cur, id, "")?;
                self.b.build_store(vslot, start)?;
            }
            let first = self.b.build_int_mul(lane, stepv, "")?;
            lo = self.b.build_int_add(lo, first, "lane.lo")?;
            stepv = self.b.build_int_mul(
                i64t.const_int(gpu_math::WARP as u64, false),
                stepv,
                "lane.stride",
            )?;
        }
        if reductions.is_some() {
            if let Some(g) = self.gpu.as_mut() {
                g.distributed = true;
            }
        }
        self.b.build_store(slot, lo)?;
        let header = self.ctx.append_basic_block(self.f, "loop.header");
        let body_bb = self.ctx.append_basic_block(self.f, "loop.body");
        let latch = self.ctx.append_basic_block(self.f, "loop.latch");
        let exit = self.ctx.append_basic_block(self.f, "loop.exit");
        self.b.build_unconditional_branch(header)?;

        self.b.position_at_end(header);
        let iv = self.b.build_load(i64t, slot, "iv")?.into_int_value();
        let more = self.b.build_int_compare(IntPredicate::SLT, iv, hi, "")?;
        self.b.build_conditional_branch(more, body_bb, exit)?;

        self.b.position_at_end(body_bb);
        self.depth += 1;
        let prev_vector = self.vector_depth;
        if matches!(kind, LoopKind::Vector(_)) {
            self.vector_depth = Some(self.depth);
        }
        let r = self.block(body);
        self.vector_depth = prev_vector;
        self.depth -= 1;
        r?;
        self.b.build_unconditional_branch(latch)?;

        self.b.position_at_end(latch);
        let iv = self.b.build_load(i64t, slot, "iv")?.into_int_value();
        let next = self.b.build_int_nsw_add(iv, stepv, "iv.next")?;
        self.b.build_store(slot, next)?;
        let back = self.b.build_unconditional_branch(header)?;
        // A vector loop of a few constant vectors' worth of iterations: LLVM would
        // unroll it fully before vectorizing, leaving scalar code its straight-line
        // vectorizer often does not recover (masked selects, `maxnum`). Vectorize it as a
        // loop instead; the vector loop of a known trip count is then flattened anyway.
        let few = match (kind, start, end) {
            (LoopKind::Vector(w), Expr::I64(a), Expr::I64(b)) if w > 1 => {
                let trips = (b.saturating_sub(*a) as u64).div_ceil(step);
                trips >= w as u64 && trips <= 4 * w as u64
            }
            _ => false,
        };
        self.loop_metadata(back, kind, few);
        self.b.position_at_end(exit);
        if let Some(reds) = &reductions {
            if let Some(g) = self.gpu.as_mut() {
                g.distributed = false;
            }
            // Every lane ends with the whole reduction (a butterfly gives each lane the
            // same bits: each step combines the same two values, in either order).
            for &(v, op) in reds {
                let (vslot, vty) = self.var_slot(v)?;
                let part = self.b.build_load(self.llvm_ty(vty), vslot, "part")?;
                let all = gpu_math::warp_allreduce(self.ctx, self.module, &self.b, op, part)?;
                self.b.build_store(vslot, all)?;
            }
            gpu_math::sync_warp(self.module, &self.b)?;
        }
        Ok(())
    }

    /// The main part of a dot-product loop (see [`dot_plan`]), whose accumulators each
    /// become a `<16 x float>` whose lanes are added into the scalar accumulator at the
    /// end. bf16: 32 iterations at a time, each product pair of bf16 vectors accumulated
    /// by `vdpbf16ps`; products of two bf16 are exact in f32, so only the summation order
    /// differs from the scalar loop, which a `Vector` loop allows (the instruction also
    /// treats subnormal inputs and results as zero). f32: 16 iterations at a time, one
    /// fused multiply-add per product (contraction, which a `Vector` loop allows too).
    /// Returns where the ordinary loop takes over (`lo` plus a multiple of the step).
    fn dot_loop(
        &mut self,
        plan: &Dot,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
    ) -> Result<IntValue<'ctx>, CodegenError> {
        let bf16 = plan.elem == Elem::Bf16;
        let lanes: u64 = if bf16 { 32 } else { 16 };
        let ctx = self.ctx;
        let i64t = ctx.i64_type();
        let i16t = ctx.i16_type();
        let f32t = ctx.f32_type();
        let v16f = f32t.vec_type(16);
        let v32i = i16t.vec_type(32);
        let v32bf = ctx.bf16_type().vec_type(32);
        let dp = if bf16 {
            Intrinsic::find("llvm.x86.avx512bf16.dpbf16ps.512")
                .and_then(|i| i.get_declaration(self.module, &[]))
                .ok_or_else(|| self.err("LLVM has no intrinsic `dpbf16ps.512`".into()))?
        } else {
            Intrinsic::find("llvm.fmuladd")
                .and_then(|i| i.get_declaration(self.module, &[v16f.into()]))
                .ok_or_else(|| self.err("LLVM has no intrinsic `fmuladd`".into()))?
        };
        // Loop-invariant row pointers: the buffer plus the index at iteration 0.
        let mut rows = Vec::with_capacity(plan.loads.len());
        for (_, buf, base) in &plan.loads {
            let (ptr, _, _) = self.buf(*buf)?;
            let p = match (base, bf16) {
                (Some(e), true) => {
                    let at = self.int(e, "load index")?;
                    unsafe { self.b.build_in_bounds_gep(i16t, ptr, &[at], "row")? }
                }
                (Some(e), false) => {
                    let at = self.int(e, "load index")?;
                    unsafe { self.b.build_in_bounds_gep(f32t, ptr, &[at], "row")? }
                }
                (None, _) => ptr,
            };
            rows.push(p);
        }
        let b = &self.b;
        let span = b.build_int_sub(hi, lo, "")?;
        let neg = b.build_int_compare(IntPredicate::SLT, span, i64t.const_zero(), "")?;
        let span = b
            .build_select(neg, i64t.const_zero(), span, "")?
            .into_int_value();
        let main = b.build_and(span, i64t.const_int(!(lanes - 1), true), "")?;
        let main_end = b.build_int_add(lo, main, "dot.end")?;
        let pre = b
            .get_insert_block()
            .ok_or_else(|| self.err("no insert block".into()))?;
        let header = ctx.append_basic_block(self.f, "dot.header");
        let body = ctx.append_basic_block(self.f, "dot.body");
        let done = ctx.append_basic_block(self.f, "dot.done");
        b.build_unconditional_branch(header)?;

        b.position_at_end(header);
        let iv = b.build_phi(i64t, "dot.iv")?;
        let accs: Vec<_> = plan
            .sets
            .iter()
            .map(|_| b.build_phi(v16f, "dot.acc"))
            .collect::<Result<_, _>>()?;
        let more = b.build_int_compare(
            IntPredicate::SLT,
            iv.as_basic_value().into_int_value(),
            main_end,
            "",
        )?;
        b.build_conditional_branch(more, body, done)?;

        b.position_at_end(body);
        let k = iv.as_basic_value().into_int_value();
        let mut vals = Vec::with_capacity(rows.len());
        for r in &rows {
            // Element `base + iv` of the buffer is element `iv` of its row pointer.
            if bf16 {
                let p = unsafe { b.build_in_bounds_gep(i16t, *r, &[k], "")? };
                let v = b.build_load(v32i, p, "")?;
                if let Some(inst) = v.as_instruction_value() {
                    let _ = inst.set_alignment(2);
                }
                vals.push(b.build_bit_cast(v, v32bf, "")?);
            } else {
                let p = unsafe { b.build_in_bounds_gep(f32t, *r, &[k], "")? };
                let v = b.build_load(v16f, p, "")?;
                if let Some(inst) = v.as_instruction_value() {
                    let _ = inst.set_alignment(4);
                }
                vals.push(v);
            }
        }
        let mut next = Vec::with_capacity(accs.len());
        for ((_, x, y), acc) in plan.sets.iter().zip(&accs) {
            let (acc, x, y) = (
                acc.as_basic_value().into(),
                vals[*x].into(),
                vals[*y].into(),
            );
            let args = if bf16 { [acc, x, y] } else { [x, y, acc] };
            let r = b
                .build_call(dp, &args, "")?
                .try_as_basic_value()
                .basic()
                .ok_or_else(|| self.err("a dot-product step returned void".into()))?;
            next.push(r);
        }
        let k_next = b.build_int_add(k, i64t.const_int(lanes, false), "")?;
        let latch = b
            .get_insert_block()
            .ok_or_else(|| self.err("no insert block".into()))?;
        b.build_unconditional_branch(header)?;
        iv.add_incoming(&[(&lo, pre), (&k_next, latch)]);
        let zero = v16f.const_zero();
        for (acc, n) in accs.iter().zip(&next) {
            acc.add_incoming(&[(&zero, pre), (n, latch)]);
        }

        b.position_at_end(done);
        // The lanes of up to 16 accumulators are summed together: a butterfly of
        // shuffles and adds leaves accumulator `i`'s total in lane `i` (30 shuffles and
        // 15 adds for 16 accumulators, instead of a separate reduction each).
        let vecs: Vec<_> = accs
            .iter()
            .map(|a| a.as_basic_value().into_vector_value())
            .collect();
        let i32t = ctx.i32_type();
        for (g, chunk) in vecs.chunks(16).enumerate() {
            let mut level = chunk.to_vec();
            level.resize(16, v16f.const_zero());
            // Each vector holds 16 / w accumulators with w partial sums each.
            let mut w = 16u32;
            while level.len() > 1 {
                let half = w / 2;
                let pick = |upper: bool| {
                    let idx: Vec<_> = (0..32 / w)
                        .flat_map(|grp| {
                            let first = grp * w + if upper { half } else { 0 };
                            (first..first + half).map(|l| i32t.const_int(l as u64, false))
                        })
                        .collect();
                    VectorType::const_vector(&idx)
                };
                let (lo_mask, hi_mask) = (pick(false), pick(true));
                let mut next = Vec::with_capacity(level.len() / 2);
                for pair in level.chunks(2) {
                    let lo = self.b.build_shuffle_vector(pair[0], pair[1], lo_mask, "")?;
                    let hi = self.b.build_shuffle_vector(pair[0], pair[1], hi_mask, "")?;
                    next.push(self.b.build_float_add(lo, hi, "")?);
                }
                level = next;
                w = half;
            }
            let total = level[0];
            for (l, (acc_var, _, _)) in plan.sets[g * 16..].iter().take(chunk.len()).enumerate() {
                let (slot, _) = self.var_slot(*acc_var)?;
                let cur = self.b.build_load(ctx.f32_type(), slot, "")?;
                let lane =
                    self.b
                        .build_extract_element(total, i32t.const_int(l as u64, false), "")?;
                let sum =
                    self.b
                        .build_float_add(cur.into_float_value(), lane.into_float_value(), "")?;
                self.b.build_store(slot, sum)?;
            }
        }
        Ok(main_end)
    }

    /// An outer-product tile (see [`LanePlan`]): every accumulator is a `<16 x float>`
    /// whose lane `l` is iteration `l` of the vector loop, updated once per iteration of
    /// the inner loop by a bf16 pair product, then stored as one vector. With
    /// AVX512-BF16 a product is one `vdpbf16ps` of the 32 activations at the pair's base
    /// and the weight pair broadcast to every lane; elsewhere the even and odd bf16 of
    /// both widen to f32 and two fused multiply-adds follow (the products are exact in
    /// f32 either way; only the summation order differs, which a `Vector` loop allows).
    fn lane_loop(&mut self, plan: &LanePlan) -> Result<(), CodegenError> {
        let ctx = self.ctx;
        let i64t = ctx.i64_type();
        let i32t = ctx.i32_type();
        let i16t = ctx.i16_type();
        let f32t = ctx.f32_type();
        let v16f = f32t.vec_type(16);
        let v16i = i32t.vec_type(16);
        let v32i = i16t.vec_type(32);
        let v32bf = ctx.bf16_type().vec_type(32);
        let dp = Intrinsic::find("llvm.x86.avx512bf16.dpbf16ps.512")
            .and_then(|i| i.get_declaration(self.module, &[]))
            .filter(|_| self.bf16_dot);
        let fma = Intrinsic::find("llvm.fmuladd")
            .and_then(|i| i.get_declaration(self.module, &[v16f.into()]))
            .ok_or_else(|| self.err("LLVM has no intrinsic `fmuladd`".into()))?;
        let lo = self.int(plan.start, "loop start")?;
        let hi = self.int(plan.end, "loop end")?;
        let (kp_slot, _) = self.var_slot(plan.kp)?;
        let pre = self
            .b
            .get_insert_block()
            .ok_or_else(|| self.err("no insert block".into()))?;
        let header = ctx.append_basic_block(self.f, "lanes.header");
        let body = ctx.append_basic_block(self.f, "lanes.body");
        let done = ctx.append_basic_block(self.f, "lanes.done");
        self.b.build_unconditional_branch(header)?;

        self.b.position_at_end(header);
        let iv = self.b.build_phi(i64t, "lanes.iv")?;
        let accs: Vec<_> = plan
            .steps
            .iter()
            .map(|_| self.b.build_phi(v16f, "lanes.acc"))
            .collect::<Result<_, _>>()?;
        let more = self.b.build_int_compare(
            IntPredicate::SLT,
            iv.as_basic_value().into_int_value(),
            hi,
            "",
        )?;
        self.b.build_conditional_branch(more, body, done)?;

        self.b.position_at_end(body);
        let k = iv.as_basic_value().into_int_value();
        self.b.build_store(kp_slot, k)?;
        // Each operand once: the activations as 32 bf16 from the pair's base, the weight
        // pair as one 32-bit word in every lane.
        let mut vals = Vec::with_capacity(plan.loads.len());
        for ld in &plan.loads {
            let (ptr, _, _) = self.buf(ld.buf)?;
            let at = self.int(&ld.base, "load index")?;
            let p = unsafe { self.b.build_in_bounds_gep(i16t, ptr, &[at], "")? };
            let v = if ld.lanes {
                let v = self.b.build_load(v32i, p, "")?;
                if let Some(inst) = v.as_instruction_value() {
                    let _ = inst.set_alignment(2);
                }
                v
            } else {
                let w = self.b.build_load(i32t, p, "")?;
                if let Some(inst) = w.as_instruction_value() {
                    let _ = inst.set_alignment(2);
                }
                let zero = v16i.const_zero();
                let v =
                    self.b
                        .build_insert_element(zero, w.into_int_value(), i32t.const_zero(), "")?;
                let splat = self
                    .b
                    .build_shuffle_vector(v, zero, v16i.const_zero(), "")?;
                self.b.build_bit_cast(splat, v32i, "")?
            };
            vals.push(v.into_vector_value());
        }
        let mut next = Vec::with_capacity(accs.len());
        let shift = VectorType::const_vector(&[i32t.const_int(16, false); 16]);
        let high = VectorType::const_vector(&[i32t.const_int(0xffff_0000, false); 16]);
        for (st, acc) in plan.steps.iter().zip(&accs) {
            let acc = acc.as_basic_value();
            let (x, w) = (vals[st.lanes], vals[st.uniform]);
            let r = match dp {
                Some(dp) => {
                    let x = self.b.build_bit_cast(x, v32bf, "")?;
                    let w = self.b.build_bit_cast(w, v32bf, "")?;
                    self.b
                        .build_call(dp, &[acc.into(), x.into(), w.into()], "")?
                        .try_as_basic_value()
                        .basic()
                        .ok_or_else(|| self.err("a dot-product step returned void".into()))?
                }
                None => {
                    // bf16 → f32 is the 16 bits moved to the top of the word.
                    let halves = |v: inkwell::values::VectorValue<'ctx>| {
                        let words = self.b.build_bit_cast(v, v16i, "")?.into_vector_value();
                        let even = self.b.build_left_shift(words, shift, "")?;
                        let odd = self.b.build_and(words, high, "")?;
                        Ok::<_, BuilderError>((
                            self.b.build_bit_cast(even, v16f, "")?,
                            self.b.build_bit_cast(odd, v16f, "")?,
                        ))
                    };
                    let (x0, x1) = halves(x)?;
                    let (w0, w1) = halves(w)?;
                    let call = |a: BasicValueEnum<'ctx>,
                                b: BasicValueEnum<'ctx>,
                                c: BasicValueEnum<'ctx>| {
                        self.b
                            .build_call(fma, &[a.into(), b.into(), c.into()], "")
                            .map(|r| r.try_as_basic_value().basic())
                    };
                    let a1 = call(x0, w0, acc)?
                        .ok_or_else(|| self.err("fmuladd returned void".into()))?;
                    call(x1, w1, a1)?.ok_or_else(|| self.err("fmuladd returned void".into()))?
                }
            };
            next.push(r);
        }
        let k_next = self.b.build_int_add(k, i64t.const_int(1, false), "")?;
        let latch = self
            .b
            .get_insert_block()
            .ok_or_else(|| self.err("no insert block".into()))?;
        self.b.build_unconditional_branch(header)?;
        iv.add_incoming(&[(&lo, pre), (&k_next, latch)]);
        let zero = v16f.const_zero();
        for (acc, n) in accs.iter().zip(&next) {
            acc.add_incoming(&[(&zero, pre), (n, latch)]);
        }

        self.b.position_at_end(done);
        for (st, acc) in plan.steps.iter().zip(&accs) {
            let (ptr, _, _) = self.buf(st.out)?;
            let at = self.int(&st.out_base, "store index")?;
            let p = unsafe { self.b.build_in_bounds_gep(f32t, ptr, &[at], "")? };
            let s = self.b.build_store(p, acc.as_basic_value())?;
            let _ = s.set_alignment(4);
        }
        Ok(())
    }

    /// The bounds of this thread's chunk: iterations `[t*c, min((t+1)*c, n))` with
    /// `c = ceil(n / threads)`, mapped back to loop-variable values.
    fn thread_chunk(
        &mut self,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
        step: IntValue<'ctx>,
    ) -> Result<(IntValue<'ctx>, IntValue<'ctx>), CodegenError> {
        let i64t = self.ctx.i64_type();
        let (zero, one) = (i64t.const_zero(), i64t.const_int(1, false));
        let b = &self.b;
        let smax = |x: IntValue<'ctx>, y: IntValue<'ctx>| -> Result<IntValue<'ctx>, CodegenError> {
            let gt = b.build_int_compare(IntPredicate::SGT, x, y, "")?;
            Ok(b.build_select(gt, x, y, "")?.into_int_value())
        };
        let smin = |x: IntValue<'ctx>, y: IntValue<'ctx>| -> Result<IntValue<'ctx>, CodegenError> {
            let lt = b.build_int_compare(IntPredicate::SLT, x, y, "")?;
            Ok(b.build_select(lt, x, y, "")?.into_int_value())
        };
        let span = smax(b.build_int_sub(hi, lo, "")?, zero)?;
        let step_m1 = b.build_int_sub(step, one, "")?;
        let trips = b.build_int_signed_div(b.build_int_add(span, step_m1, "")?, step, "trips")?;
        let threads = smax(self.threads, one)?;
        let per = b.build_int_signed_div(
            b.build_int_add(trips, b.build_int_sub(threads, one, "")?, "")?,
            threads,
            "per_thread",
        )?;
        let t = smax(self.thread, zero)?;
        let first = smin(b.build_int_mul(t, per, "")?, trips)?;
        let last = smin(b.build_int_add(first, per, "")?, trips)?;
        let lo2 = b.build_int_add(lo, b.build_int_mul(first, step, "")?, "chunk.lo")?;
        let hi2 = b.build_int_add(lo, b.build_int_mul(last, step, "")?, "chunk.hi")?;
        Ok((lo2, hi2))
    }

    /// The loop's hints for LLVM; `few`: a vector loop of a few vectors of iterations,
    /// not to be unrolled before it is vectorized.
    fn loop_metadata(&self, latch_br: InstructionValue<'ctx>, kind: LoopKind, few: bool) {
        let props: Vec<(&str, MdArg)> = match kind {
            // GPUs have no SIMD lanes within a thread to vectorize into.
            LoopKind::Serial | LoopKind::Vector(_) if self.gpu.is_some() => return,
            // A serial loop runs as written: LLVM's own vectorizer would otherwise take
            // loops the lowering left scalar on purpose, such as a matmul epilogue that
            // walks down a column (it made gathers of the residual, slower than scalar
            // loads on x86: o-projection 580 → 750 GFLOP/s without them).
            LoopKind::Serial => vec![("llvm.loop.vectorize.enable", MdArg::Bool(false))],
            LoopKind::Parallel => return,
            LoopKind::Vector(w) if few => vec![
                ("llvm.loop.vectorize.width", MdArg::I32(w.max(1))),
                ("llvm.loop.vectorize.enable", MdArg::Bool(true)),
                ("llvm.loop.unroll.disable", MdArg::None),
            ],
            LoopKind::Vector(w) => vec![
                ("llvm.loop.vectorize.width", MdArg::I32(w.max(1))),
                ("llvm.loop.vectorize.enable", MdArg::Bool(true)),
            ],
            LoopKind::Unroll(n) => vec![("llvm.loop.unroll.count", MdArg::I32(n.max(1)))],
        };
        attach_loop_id(self.ctx, latch_br, &props);
    }

    fn store(&mut self, buf: BufId, index: &Expr, value: &Expr) -> Result<(), CodegenError> {
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
        let lane = self.gpu.as_ref().filter(|g| g.redundant()).map(|g| g.lane);
        let stored: BasicValueEnum = match (elem, v) {
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
        let Some(lane) = lane else {
            self.b.build_store(p, stored)?;
            return Ok(());
        };
        // Every lane of the warp runs this store alike: lane 0 does it. A buffer the
        // kernel also reads needs barriers: before, so no lane still reads the old value;
        // after, so every lane reads the new one.
        let shared = access != Access::Write;
        if shared {
            gpu_math::sync_warp(self.module, &self.b)?;
        }
        let zero = self.ctx.i64_type().const_zero();
        let is_lane0 = self
            .b
            .build_int_compare(IntPredicate::EQ, lane, zero, "lane0")?;
        let st = self.ctx.append_basic_block(self.f, "lane0.store");
        let join = self.ctx.append_basic_block(self.f, "lane0.join");
        self.b.build_conditional_branch(is_lane0, st, join)?;
        self.b.position_at_end(st);
        self.b.build_store(p, stored)?;
        self.b.build_unconditional_branch(join)?;
        self.b.position_at_end(join);
        if shared {
            gpu_math::sync_warp(self.module, &self.b)?;
        }
        Ok(())
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

    fn load(&mut self, buf: BufId, index: &Expr) -> Result<Val<'ctx>, CodegenError> {
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

    /// The inline math functions, emitting at the builder's position.
    fn math(&self) -> Math<'ctx, '_> {
        Math {
            ctx: self.ctx,
            module: self.module,
            b: &self.b,
        }
    }

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

    fn intrinsic(
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

    fn expr(&mut self, e: &Expr) -> Result<Val<'ctx>, CodegenError> {
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
            (UnOp::Exp | UnOp::Log | UnOp::Sin | UnOp::Cos | UnOp::Tanh, Val::F(x))
                if self.gpu.is_some() =>
            {
                Val::F(gpu_math::unary(self.ctx, self.module, &self.b, op, x)?)
            }
            // Inline polynomials, not libm calls, so vector loops stay vector code.
            (UnOp::Exp, Val::F(x)) => Val::F(self.math().exp(x)?),
            (UnOp::Tanh, Val::F(x)) => Val::F(self.math().tanh(x)?),
            (UnOp::Log, Val::F(x)) => fl(self.intrinsic("llvm.log", f32t, &[x.into()])?),
            (UnOp::Sqrt, Val::F(x)) => fl(self.intrinsic("llvm.sqrt", f32t, &[x.into()])?),
            (UnOp::Sin, Val::F(x)) => fl(self.intrinsic("llvm.sin", f32t, &[x.into()])?),
            (UnOp::Cos, Val::F(x)) => fl(self.intrinsic("llvm.cos", f32t, &[x.into()])?),
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
                    BinOp::Pow if self.gpu.is_some() => {
                        Val::F(gpu_math::pow(self.ctx, self.module, b, a, c)?)
                    }
                    BinOp::Pow => Val::F(
                        self.intrinsic("llvm.pow", f32t, &[a.into(), c.into()])?
                            .into_float_value(),
                    ),
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

/// A `Vector` loop body that is only dot products: `let v = buf[base + iv]` loads of
/// buffers of one element type and `acc = acc + a * b` updates of accumulators declared
/// outside, `a` and `b` among those loads.
struct Dot {
    /// The element type of every loaded buffer (bf16 or f32).
    elem: Elem,
    /// `(variable, buffer, base)`: the load's index is `base + iv` (`iv` when `None`),
    /// `base` free of the loop's own variables.
    loads: Vec<(VarId, BufId, Option<Expr>)>,
    /// `(accumulator, index of a in loads, index of b in loads)`.
    sets: Vec<(VarId, usize, usize)>,
}

impl Dot {
    /// Whether the plan is at least 4 dot products that share one of their operands (a
    /// block of rows against one vector): one butterfly for all of their lane sums is
    /// then much cheaper than a horizontal reduction each, and each accumulator is an
    /// independent chain of fused multiply-adds.
    fn many_rows(&self) -> bool {
        let shared = |pick: fn(&(VarId, usize, usize)) -> usize| {
            let first = self.sets.first().map(pick);
            self.sets.iter().all(|s| Some(pick(s)) == first)
        };
        self.sets.len() >= 4 && (shared(|s| s.1) || shared(|s| s.2))
    }
}

/// The [`Dot`] over `elem` buffers of a loop over `iv` with `body`, if the body has that
/// form.
fn dot_plan(iv: VarId, body: &[Stmt], k: &Kernel, elem: Elem) -> Option<Dot> {
    let mut plan = Dot {
        elem,
        loads: Vec::new(),
        sets: Vec::new(),
    };
    let of_elem = |b: BufId| k.bufs.get(b.0 as usize).map(|kb| kb.elem) == Some(elem);
    let inner: Vec<VarId> = body
        .iter()
        .filter_map(|s| match s {
            Stmt::Let { var, .. } => Some(*var),
            _ => None,
        })
        .chain([iv])
        .collect();
    let free = |e: &Expr| !mentions(e, &inner);
    let load_of = |plan: &Dot, e: &Expr| match e {
        Expr::Var(v) => plan.loads.iter().position(|(lv, _, _)| lv == v),
        _ => None,
    };
    for s in body {
        match s {
            Stmt::Let {
                var,
                value: Expr::Load { buf, index },
            } if of_elem(*buf) => {
                let base = match &**index {
                    Expr::Var(v) if *v == iv => None,
                    Expr::Bin(BinOp::Add, a, c) => match (&**a, &**c) {
                        (e, Expr::Var(v)) | (Expr::Var(v), e) if *v == iv && free(e) => {
                            Some(e.clone())
                        }
                        _ => return None,
                    },
                    _ => return None,
                };
                plan.loads.push((*var, *buf, base));
            }
            Stmt::Set {
                var,
                value: Expr::Bin(BinOp::Add, a, prod),
            } => {
                if **a != Expr::Var(*var) || inner.contains(var) {
                    return None;
                }
                let Expr::Bin(BinOp::Mul, x, y) = &**prod else {
                    return None;
                };
                plan.sets
                    .push((*var, load_of(&plan, x)?, load_of(&plan, y)?));
            }
            _ => return None,
        }
    }
    // An accumulator updated twice would need its partial sums chained; not needed.
    let mut accs: Vec<VarId> = plan.sets.iter().map(|s| s.0).collect();
    accs.sort();
    accs.dedup();
    (!plan.sets.is_empty() && accs.len() == plan.sets.len()).then_some(plan)
}

/// A `Vector` loop of 16 iterations over `l` that is an outer-product tile: every
/// iteration (a lane) runs the same serial inner loop over `kp`, in which each
/// accumulator declared in the vector loop (`local acc = 0`) takes one bf16 pair
/// product `acc = acc + (x[b + 2l] * w[u] + x[b + 2l + 1] * w[u + 1])`, with `b` and `u`
/// free of `l`, and after which each accumulator is stored once, `out[o + l] = acc`.
/// Lanes become SIMD lanes, so the accumulators stay in registers for the whole inner
/// loop and no horizontal sums are needed.
struct LanePlan<'k> {
    kp: VarId,
    start: &'k Expr,
    end: &'k Expr,
    loads: Vec<LaneLoad>,
    steps: Vec<LaneStep>,
}

/// The operands of a [`LanePlan`]: 32 bf16 at `base` (`lanes`), or the pair of bf16 at
/// `base` and `base + 1` in every lane.
struct LaneLoad {
    buf: BufId,
    base: Expr,
    lanes: bool,
}

/// One accumulator of a [`LanePlan`]: its two operands (indices into `loads`) and where
/// its 16 lanes go (an f32 buffer).
struct LaneStep {
    lanes: usize,
    uniform: usize,
    out: BufId,
    out_base: Expr,
}

/// `e` as `base + coef * l` with `base` free of `l`, if it has that form.
fn lane_affine(e: &Expr, l: VarId) -> Option<(Expr, i64)> {
    use crate::kernel::lower::ix;
    if !mentions(e, &[l]) {
        return Some((e.clone(), 0));
    }
    match e {
        Expr::Var(v) if *v == l => Some((Expr::I64(0), 1)),
        Expr::Bin(BinOp::Add, a, b) => {
            let (ba, ca) = lane_affine(a, l)?;
            let (bb, cb) = lane_affine(b, l)?;
            Some((ix::add(ba, bb), ca.checked_add(cb)?))
        }
        Expr::Bin(BinOp::Mul, a, b) => match (&**a, &**b) {
            (x, Expr::I64(c)) | (Expr::I64(c), x) => {
                let (bx, cx) = lane_affine(x, l)?;
                Some((ix::mul(bx, Expr::I64(*c)), cx.checked_mul(*c)?))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The [`LanePlan`] of a vector loop over `l` from `start` to `end` with `body`, if the
/// loop has that form.
fn lane_plan<'k>(
    l: VarId,
    start: &Expr,
    end: &Expr,
    body: &'k [Stmt],
    k: &Kernel,
) -> Option<LanePlan<'k>> {
    use crate::kernel::lower::ix;
    if (start, end) != (&Expr::I64(0), &Expr::I64(16)) {
        return None;
    }
    let elem = |b: BufId| k.bufs.get(b.0 as usize).map(|kb| kb.elem);
    let mut accs = Vec::new();
    let mut it = body.iter().peekable();
    while let Some(Stmt::Local {
        var,
        init: Expr::F32(z),
    }) = it.peek()
    {
        if *z != 0.0 || z.is_sign_negative() {
            return None;
        }
        accs.push(*var);
        it.next();
    }
    let Some(Stmt::Loop {
        var: kp,
        start: k0,
        end: k1,
        step: 1,
        kind: LoopKind::Serial,
        body: inner,
    }) = it.next()
    else {
        return None;
    };
    if accs.is_empty() || mentions(k0, &[l]) || mentions(k1, &[l]) {
        return None;
    }
    // The inner loop: loads, then one pair product per accumulator.
    let mut lets: Vec<(VarId, BufId, Expr, i64)> = Vec::new();
    let mut updates: Vec<(VarId, usize, usize)> = Vec::new();
    let mut loads: Vec<LaneLoad> = Vec::new();
    let load_of = |loads: &mut Vec<LaneLoad>, buf: BufId, base: &Expr, lanes: bool| match loads
        .iter()
        .position(|ld| ld.buf == buf && ld.base == *base && ld.lanes == lanes)
    {
        Some(i) => i,
        None => {
            loads.push(LaneLoad {
                buf,
                base: base.clone(),
                lanes,
            });
            loads.len() - 1
        }
    };
    let inner_vars: Vec<VarId> = inner
        .iter()
        .filter_map(|s| match s {
            Stmt::Let { var, .. } => Some(*var),
            _ => None,
        })
        .chain([l])
        .collect();
    for s in inner {
        match s {
            Stmt::Let {
                var,
                value: Expr::Load { buf, index },
            } if elem(*buf) == Some(Elem::Bf16) => {
                let (base, coef) = lane_affine(index, l)?;
                if (coef != 0 && coef != 2)
                    || mentions(&base, &inner_vars)
                    || mentions(&base, &accs)
                {
                    return None;
                }
                lets.push((*var, *buf, base, coef));
            }
            Stmt::Set {
                var,
                value: Expr::Bin(BinOp::Add, a, sum),
            } if **a == Expr::Var(*var) && accs.contains(var) => {
                let Expr::Bin(BinOp::Add, p0, p1) = &**sum else {
                    return None;
                };
                let operands = |p: &Expr| -> Option<(usize, usize)> {
                    let Expr::Bin(BinOp::Mul, x, y) = p else {
                        return None;
                    };
                    let find = |e: &Expr| match e {
                        Expr::Var(v) => lets.iter().position(|t| t.0 == *v),
                        _ => None,
                    };
                    let (x, y) = (find(x)?, find(y)?);
                    match (lets[x].3, lets[y].3) {
                        (2, 0) => Some((x, y)),
                        (0, 2) => Some((y, x)),
                        _ => None,
                    }
                };
                let ((x0, w0), (x1, w1)) = (operands(p0)?, operands(p1)?);
                let next = |a: usize, b: usize| {
                    lets[a].1 == lets[b].1 && lets[b].2 == ix::add(lets[a].2.clone(), Expr::I64(1))
                };
                if !next(x0, x1) || !next(w0, w1) {
                    return None;
                }
                let xl = load_of(&mut loads, lets[x0].1, &lets[x0].2, true);
                let wl = load_of(&mut loads, lets[w0].1, &lets[w0].2, false);
                updates.push((*var, xl, wl));
            }
            _ => return None,
        }
    }
    // Then each accumulator stored once, lane `l` at `base + l`.
    let mut steps = Vec::new();
    for s in it {
        let Stmt::Store {
            buf,
            index,
            value: Expr::Var(acc),
        } = s
        else {
            return None;
        };
        let (base, 1) = lane_affine(index, l)? else {
            return None;
        };
        if elem(*buf) != Some(Elem::F32) || mentions(&base, &inner_vars) || mentions(&base, &[*kp])
        {
            return None;
        }
        let (_, xl, wl) = *updates.iter().find(|u| u.0 == *acc)?;
        steps.push((
            *acc,
            LaneStep {
                lanes: xl,
                uniform: wl,
                out: *buf,
                out_base: base,
            },
        ));
    }
    // Every accumulator updated once and stored once.
    let mut seen: Vec<VarId> = updates.iter().map(|u| u.0).collect();
    seen.sort();
    seen.dedup();
    let mut stored: Vec<VarId> = steps.iter().map(|s| s.0).collect();
    stored.sort();
    stored.dedup();
    let mut declared = accs.clone();
    declared.sort();
    if seen.len() != updates.len()
        || seen != declared
        || stored != declared
        || steps.len() != accs.len()
    {
        return None;
    }
    Some(LanePlan {
        kp: *kp,
        start: k0,
        end: k1,
        loads,
        steps: steps.into_iter().map(|s| s.1).collect(),
    })
}

/// Whether `e` reads any of `vars`.
fn mentions(e: &Expr, vars: &[VarId]) -> bool {
    match e {
        Expr::Var(v) => vars.contains(v),
        Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Dim(_) => false,
        Expr::Load { index, .. } => mentions(index, vars),
        Expr::Un(_, a) => mentions(a, vars),
        Expr::Bin(_, a, b) => mentions(a, vars) || mentions(b, vars),
        Expr::Select(c, a, b) => mentions(c, vars) || mentions(a, vars) || mentions(b, vars),
    }
}

/// An operand of a loop property node.
enum MdArg {
    I32(u32),
    Bool(bool),
    /// A property that is only its name (`!{!"llvm.loop.unroll.disable"}`).
    None,
}

/// Attaches `!llvm.loop !N` with `!N = distinct !{!N, props...}` to the latch branch.
/// The C API has no distinct nodes, so the self-reference is made through a temporary
/// node; LLVM turns a node that refers to itself into a distinct one.
fn attach_loop_id(ctx: &Context, latch_br: InstructionValue<'_>, props: &[(&str, MdArg)]) {
    use inkwell::llvm_sys::core::{
        LLVMConstInt, LLVMInt1TypeInContext, LLVMInt32TypeInContext, LLVMMDNodeInContext2,
        LLVMMDStringInContext2, LLVMMetadataAsValue, LLVMSetMetadata,
    };
    use inkwell::llvm_sys::debuginfo::{LLVMMetadataReplaceAllUsesWith, LLVMTemporaryMDNode};
    use inkwell::llvm_sys::prelude::LLVMMetadataRef;
    let raw = ctx.raw();
    // SAFETY: every reference passed belongs to `ctx`, which outlives the calls; the
    // temporary node is consumed (deleted) by the replace-all-uses call.
    unsafe {
        let mut nodes: Vec<LLVMMetadataRef> = Vec::with_capacity(props.len() + 1);
        let temp = LLVMTemporaryMDNode(raw, std::ptr::null_mut(), 0);
        nodes.push(temp);
        for (name, arg) in props {
            let key = LLVMMDStringInContext2(raw, name.as_ptr().cast(), name.len());
            let val = match arg {
                MdArg::I32(v) => LLVMConstInt(LLVMInt32TypeInContext(raw), *v as u64, 0),
                MdArg::Bool(v) => LLVMConstInt(LLVMInt1TypeInContext(raw), *v as u64, 0),
                MdArg::None => {
                    let mut only = [key];
                    nodes.push(LLVMMDNodeInContext2(raw, only.as_mut_ptr(), 1));
                    continue;
                }
            };
            let val = inkwell::llvm_sys::core::LLVMValueAsMetadata(val);
            let mut pair = [key, val];
            nodes.push(LLVMMDNodeInContext2(raw, pair.as_mut_ptr(), 2));
        }
        let id = LLVMMDNodeInContext2(raw, nodes.as_mut_ptr(), nodes.len());
        LLVMMetadataReplaceAllUsesWith(temp, id);
        let kind = ctx.get_kind_id("llvm.loop");
        LLVMSetMetadata(latch_br.as_value_ref(), kind, LLVMMetadataAsValue(raw, id));
    }
}
