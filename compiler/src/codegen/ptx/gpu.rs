//! The NVPTX target of the body emitter: a kernel entry whose buffers are global-memory
//! parameters, the grid position from the special registers, grid-stride parallel loops,
//! scratch in local memory or a warp's slice of shared or global memory, the math of
//! `device.rs`, and in warp mode the vector loops a warp shares with their reductions
//! and stores by lane 0 (see `plan`).

use super::device::{self, GridPos, WARP};
use super::plan::{KernelPlan, Mode};
use crate::codegen::body::{
    self, param_bufs, symbol, Bounds, Declared, Emitter, HintArg, Loop, Lowered, MathFn, Scratch,
};
use crate::codegen::CodegenError;
use crate::kernel::{Access, Elem, Kernel, LoopKind, Stmt};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::{BasicMetadataTypeEnum, BasicType};
use inkwell::values::{BasicValueEnum, FloatValue, PointerValue};
use inkwell::IntPredicate;
use std::cell::Cell;

/// The GPU target for one kernel and its plan.
pub(super) struct Gpu<'ctx, 'a> {
    plan: &'a KernelPlan,
    /// Where this thread is, read by the prologue.
    grid: Cell<Option<GridPos<'ctx>>>,
    /// Whether the code being emitted runs in one lane per iteration of a distributed
    /// vector loop (otherwise, in warp mode, every lane of a warp runs it alike).
    distributed: Cell<bool>,
}

impl<'ctx, 'a> Gpu<'ctx, 'a> {
    pub(super) fn new(plan: &'a KernelPlan) -> Self {
        Gpu {
            plan,
            grid: Cell::new(None),
            distributed: Cell::new(false),
        }
    }

    /// Whether every lane of a warp runs the statement being emitted with the same values.
    fn redundant(&self) -> bool {
        self.plan.mode == Mode::Warp && !self.distributed.get()
    }

    fn grid(&self, e: &Emitter<'ctx, '_>) -> Result<GridPos<'ctx>, CodegenError> {
        self.grid
            .get()
            .ok_or_else(|| e.err("the grid position is used before the prologue".into()))
    }

    /// A vector loop the plan spreads over the lanes of a warp: lane `l` runs iterations
    /// `l, l + 32, ...`, and its reductions are combined across the warp after the loop.
    fn distributed_loop(
        &self,
        e: &mut Emitter<'ctx, '_>,
        lp: &Loop<'_>,
        reductions: &[(crate::kernel::VarId, super::plan::RedOp)],
    ) -> Result<(), CodegenError> {
        let i64t = e.ctx.i64_type();
        let mut range = e.bounds(lp)?;
        let lane = self.grid(e)?.lane;
        device::sync_warp(e.module, &e.b)?;
        // Lane 0 carries the value the accumulator had before the loop; the other
        // lanes start from the identity, so the combined result counts it once.
        let is_lane0 =
            e.b.build_int_compare(IntPredicate::EQ, lane, i64t.const_zero(), "lane0")?;
        for &(v, op) in reductions {
            let (vslot, vty) = e.var_slot(v)?;
            let cur = e.b.build_load(e.llvm_ty(vty), vslot, "")?;
            let id = device::identity(e.ctx, op, vty);
            let start = e.b.build_select(is_lane0, cur, id, "")?;
            e.b.build_store(vslot, start)?;
        }
        let first = e.b.build_int_mul(lane, range.step, "")?;
        range.lo = e.b.build_int_add(range.lo, first, "lane.lo")?;
        range.step = e.b.build_int_mul(
            i64t.const_int(WARP as u64, false),
            range.step,
            "lane.stride",
        )?;
        self.distributed.set(true);
        let r = e.counted_loop(lp, range);
        self.distributed.set(false);
        r?;
        // Every lane ends with the whole reduction (a butterfly gives each lane the
        // same bits: each step combines the same two values, in either order).
        for &(v, op) in reductions {
            let (vslot, vty) = e.var_slot(v)?;
            let part = e.b.build_load(e.llvm_ty(vty), vslot, "part")?;
            let all = device::warp_allreduce(e.ctx, e.module, &e.b, op, part)?;
            e.b.build_store(vslot, all)?;
        }
        device::sync_warp(e.module, &e.b)
    }
}

impl<'ctx> body::Target<'ctx> for Gpu<'ctx, '_> {
    /// One PTX kernel entry: one parameter per non-scratch buffer (a global-memory
    /// pointer, `noalias`, and `readonly` when the kernel only reads it, so loads may use
    /// the non-coherent cache), then `seq` and `past`.
    fn declare(
        &self,
        ctx: &'ctx Context,
        module: &Module<'ctx>,
        index: usize,
        k: &Kernel,
    ) -> Result<Declared<'ctx>, CodegenError> {
        let global = ctx.ptr_type(inkwell::AddressSpace::from(1u16));
        let i64t = ctx.i64_type();
        let name = symbol(index, k);
        let params = param_bufs(k);
        let mut tys: Vec<BasicMetadataTypeEnum> = params.iter().map(|_| global.into()).collect();
        tys.extend([BasicMetadataTypeEnum::from(i64t); 2]);
        let f = module.add_function(&name, ctx.void_type().fn_type(&tys, false), None);
        let enum_attr =
            |n: &str| ctx.create_enum_attribute(Attribute::get_named_enum_kind_id(n), 0);
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
        Ok(Declared { entry: f, body: f })
    }

    /// The grid position, read once at the top of the kernel.
    fn prologue(&self, e: &mut Emitter<'ctx, '_>) -> Result<(), CodegenError> {
        let g = device::grid_position(e.ctx, e.module, &e.b, self.plan)?;
        self.grid.set(Some(g));
        Ok(())
    }

    /// Thread mode: local memory. Warp mode: the warp's slice of the memory the plan
    /// chose, so every lane sees what any lane wrote.
    fn scratch(
        &self,
        e: &mut Emitter<'ctx, '_>,
        buf: usize,
        elem: Elem,
        len: u64,
    ) -> Result<Scratch<'ctx>, CodegenError> {
        let ty = e.elem_ty(elem);
        let base = match self.plan.mode {
            Mode::Thread => {
                let arr = ty.array_type(len.max(1) as u32);
                e.b.build_alloca(arr, &format!("scratch{buf}"))?
            }
            Mode::Warp => device::shared_scratch(
                e.ctx,
                e.module,
                &e.b,
                self.plan,
                &format!("{}.scratch{buf}", e.f.get_name().to_string_lossy()),
                ty,
                len,
            )?,
        };
        Ok(Scratch { base, heap: None })
    }

    /// Nothing: GPU scratch is never allocated while the kernel runs.
    fn free_scratch(
        &self,
        _e: &mut Emitter<'ctx, '_>,
        _heap: &[PointerValue<'ctx>],
    ) -> Result<(), CodegenError> {
        Ok(())
    }

    /// Grid-stride: iteration `id`, `id + count`, ... so consecutive threads (or warps)
    /// take consecutive iterations, and any grid size is correct.
    fn split_parallel(
        &self,
        e: &mut Emitter<'ctx, '_>,
        range: Bounds<'ctx>,
    ) -> Result<Bounds<'ctx>, CodegenError> {
        let g = self.grid(e)?;
        let first = e.b.build_int_mul(g.id, range.step, "")?;
        Ok(Bounds {
            lo: e.b.build_int_add(range.lo, first, "stride.lo")?,
            hi: range.hi,
            step: e.b.build_int_mul(g.count, range.step, "stride")?,
        })
    }

    fn math(
        &self,
        e: &mut Emitter<'ctx, '_>,
        f: MathFn,
        x: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        device::unary(e.ctx, e.module, &e.b, f, x)
    }

    fn pow(
        &self,
        e: &mut Emitter<'ctx, '_>,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        device::pow(e.ctx, e.module, &e.b, a, b)
    }

    /// Only unroll counts: GPUs have no SIMD lanes within a thread to vectorize into.
    fn loop_hints(&self, lp: &Loop<'_>) -> Vec<(&'static str, HintArg)> {
        match lp.kind {
            LoopKind::Unroll(n) => vec![("llvm.loop.unroll.count", HintArg::I32(n.max(1)))],
            LoopKind::Serial | LoopKind::Vector(_) | LoopKind::Parallel => vec![],
        }
    }

    /// The vector loops the plan distributes over a warp, where every lane runs the code
    /// around them alike.
    fn lower_stmt(
        &self,
        e: &mut Emitter<'ctx, '_>,
        s: &Stmt,
        first_loop: usize,
    ) -> Result<Lowered, CodegenError> {
        let Some(lp) = Loop::of(s) else {
            return Ok(Lowered::NotMine);
        };
        let reductions = match self.plan.distributed.get(&first_loop) {
            Some(r) if self.redundant() => r,
            _ => return Ok(Lowered::NotMine),
        };
        self.distributed_loop(e, &lp, reductions)?;
        Ok(Lowered::Handled)
    }

    /// Where every lane of the warp runs the store alike, lane 0 does it. A buffer the
    /// kernel also reads needs barriers: before, so no lane still reads the old value;
    /// after, so every lane reads the new one.
    fn store(
        &self,
        e: &mut Emitter<'ctx, '_>,
        ptr: PointerValue<'ctx>,
        value: BasicValueEnum<'ctx>,
        access: Access,
    ) -> Result<(), CodegenError> {
        if !self.redundant() {
            e.b.build_store(ptr, value)?;
            return Ok(());
        }
        let lane = self.grid(e)?.lane;
        let shared = access != Access::Write;
        if shared {
            device::sync_warp(e.module, &e.b)?;
        }
        let zero = e.ctx.i64_type().const_zero();
        let is_lane0 =
            e.b.build_int_compare(IntPredicate::EQ, lane, zero, "lane0")?;
        let st = e.ctx.append_basic_block(e.f, "lane0.store");
        let join = e.ctx.append_basic_block(e.f, "lane0.join");
        e.b.build_conditional_branch(is_lane0, st, join)?;
        e.b.position_at_end(st);
        e.b.build_store(ptr, value)?;
        e.b.build_unconditional_branch(join)?;
        e.b.position_at_end(join);
        if shared {
            device::sync_warp(e.module, &e.b)?;
        }
        Ok(())
    }
}
