//! The CPU target of the body emitter: an entry function with the common calling
//! convention that loads the buffer pointers and sizes once and calls an internal,
//! always-inlined body function whose buffer parameters are `noalias`; a thread's
//! contiguous chunk of the parallel loop; scratch on the stack or from `malloc`; the
//! inline vector math of `math.rs`; vectorize and unroll hints; and the matmul tiles of
//! `tiles/`.
//!
//! **Aliasing contract:** every non-scratch buffer parameter of the body is `noalias`, and
//! read-only ones are also `readonly`. That is sound because a launch binds the same
//! memory (a program buffer or any alias of it) to two parameters of one kernel only when
//! both are `Read`: LLVM's `noalias` only forbids overlap with a pointer that is written
//! through. The inliner turns these into scoped alias metadata, so loads of weights can be
//! hoisted and vectorized across stores to the output.

use super::math::Math;
use super::tiles;
use crate::codegen::body::{
    self, param_bufs, symbol, Bounds, Declared, Emitter, HintArg, Loop, Lowered, MathFn, Scratch,
};
use crate::codegen::CodegenError;
use crate::kernel::{Access, Elem, Expr, Kernel, LoopKind, Stmt};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, BasicType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue,
};
use inkwell::IntPredicate;

/// Scratch buffers up to this many bytes live on the stack; larger ones come from
/// `malloc`, so a big scratch cannot overflow a worker thread's stack.
const MAX_STACK_SCRATCH: u64 = 256 * 1024;

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

/// The CPU target for the kernels of one module.
pub(super) struct Cpu<'a> {
    attrs: &'a CpuAttrs,
    /// Whether bf16 tiles may use `vdpbf16ps` (see `tiles`).
    bf16_dot: bool,
}

impl<'a> Cpu<'a> {
    pub(super) fn new(attrs: &'a CpuAttrs) -> Self {
        Cpu {
            attrs,
            bf16_dot: attrs.has_avx512bf16(),
        }
    }

    /// `k` as this target emits it: the tiles it lowers itself stay, every other tile
    /// becomes its plain loops (`Tile::expand`), which LLVM vectorizes.
    pub(super) fn prepare(&self, k: &Kernel) -> Kernel {
        crate::kernel::tile::expand_tiles_where(k, &|t| !tiles::lowers(t, k, self.bf16_dot))
    }

    /// `nounwind` and the CPU's name and features.
    fn add_cpu_attrs<'ctx>(&self, ctx: &'ctx Context, f: FunctionValue<'ctx>) {
        f.add_attribute(AttributeLoc::Function, enum_attr(ctx, "nounwind"));
        f.add_attribute(
            AttributeLoc::Function,
            ctx.create_string_attribute("target-cpu", &self.attrs.cpu),
        );
        if !self.attrs.features.is_empty() {
            f.add_attribute(
                AttributeLoc::Function,
                ctx.create_string_attribute("target-features", &self.attrs.features),
            );
        }
    }
}

fn enum_attr(ctx: &Context, name: &str) -> Attribute {
    ctx.create_enum_attribute(Attribute::get_named_enum_kind_id(name), 0)
}

/// `malloc` (returns ptr) or `free`, declared once per module.
fn libc_fn<'ctx>(e: &Emitter<'ctx, '_>, name: &str, returns: bool) -> FunctionValue<'ctx> {
    if let Some(f) = e.module.get_function(name) {
        return f;
    }
    let ptr = e.ctx.ptr_type(Default::default());
    let ty = if returns {
        ptr.fn_type(&[e.ctx.i64_type().into()], false)
    } else {
        e.ctx.void_type().fn_type(&[ptr.into()], false)
    };
    e.module.add_function(name, ty, None)
}

impl<'ctx> body::Target<'ctx> for Cpu<'_> {
    /// `void symbol(ptr bufs, ptr dims, i64 thread, i64 threads)` loads the pointers and
    /// sizes once and calls `symbol.body`, which takes one pointer per non-scratch buffer,
    /// then `seq`, `past`, `thread` and `threads`.
    fn declare(
        &self,
        ctx: &'ctx Context,
        module: &Module<'ctx>,
        index: usize,
        k: &Kernel,
    ) -> Result<Declared<'ctx>, CodegenError> {
        let ptr = ctx.ptr_type(Default::default());
        let i64t = ctx.i64_type();
        let void = ctx.void_type();
        let name = symbol(index, k);
        let err = |message: String| CodegenError::Kernel {
            kernel: k.name.clone(),
            message,
        };

        let params = param_bufs(k);
        let mut body_params: Vec<_> = params.iter().map(|_| ptr.into()).collect();
        body_params.extend([BasicMetadataTypeEnum::from(i64t); 4]);
        let body_fn = module.add_function(
            &format!("{name}.body"),
            void.fn_type(&body_params, false),
            Some(Linkage::Internal),
        );
        self.add_cpu_attrs(ctx, body_fn);
        body_fn.add_attribute(AttributeLoc::Function, enum_attr(ctx, "alwaysinline"));
        for (p, &b) in params.iter().enumerate() {
            let loc = AttributeLoc::Param(p as u32);
            body_fn.add_attribute(loc, enum_attr(ctx, "noalias"));
            body_fn.add_attribute(loc, enum_attr(ctx, "nocapture"));
            if k.bufs[b].access == Access::Read {
                body_fn.add_attribute(loc, enum_attr(ctx, "readonly"));
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

        let entry_fn = module.add_function(
            &name,
            void.fn_type(&[ptr.into(), ptr.into(), i64t.into(), i64t.into()], false),
            None,
        );
        self.add_cpu_attrs(ctx, entry_fn);
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
            let slot = unsafe {
                b.build_in_bounds_gep(ptr, bufs, &[i64t.const_int(p as u64, false)], "")?
            };
            args.push(b.build_load(ptr, slot, &format!("b{p}"))?.into());
        }
        for (n, label) in [(0u64, "seq"), (1, "past")] {
            let slot =
                unsafe { b.build_in_bounds_gep(i64t, dims, &[i64t.const_int(n, false)], "")? };
            args.push(b.build_load(i64t, slot, label)?.into());
        }
        args.push(thread.into());
        args.push(threads.into());
        b.build_call(body_fn, &args, "")?;
        b.build_return(None)?;
        Ok(Declared {
            entry: entry_fn,
            body: body_fn,
        })
    }

    /// Nothing to read: `thread` and `threads` are the body's last two parameters.
    fn prologue(&self, _e: &mut Emitter<'ctx, '_>) -> Result<(), CodegenError> {
        Ok(())
    }

    /// On the stack, 64-byte aligned, up to `MAX_STACK_SCRATCH`; from `malloc` above.
    fn scratch(
        &self,
        e: &mut Emitter<'ctx, '_>,
        buf: usize,
        elem: Elem,
        len: u64,
    ) -> Result<Scratch<'ctx>, CodegenError> {
        let ctx = e.ctx;
        let i64t = ctx.i64_type();
        let ty = e.elem_ty(elem);
        let bytes = len.saturating_mul(elem.bytes() as u64).max(1);
        if bytes <= MAX_STACK_SCRATCH {
            let arr = ty.array_type(len.max(1) as u32);
            let p = e.b.build_alloca(arr, &format!("scratch{buf}"))?;
            // Vector loads of scratch like aligned memory.
            if let Some(inst) = p.as_instruction() {
                let _ = inst.set_alignment(64);
            }
            return Ok(Scratch {
                base: p,
                heap: None,
            });
        }
        // 64 bytes more, so that the buffer can start on a cache line (vector loads that
        // straddle two lines cost twice).
        let malloc = libc_fn(e, "malloc", true);
        let call = e.b.build_call(
            malloc,
            &[i64t.const_int(bytes + 64, false).into()],
            &format!("scratch{buf}"),
        )?;
        let p = call
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| e.err("malloc returned void".into()))?
            .into_pointer_value();
        let addr = e.b.build_ptr_to_int(p, i64t, "")?;
        let mis = e.b.build_and(addr, i64t.const_int(63, false), "")?;
        let skip = e.b.build_and(
            e.b.build_int_sub(i64t.const_int(64, false), mis, "")?,
            i64t.const_int(63, false),
            "",
        )?;
        let base = unsafe {
            e.b.build_in_bounds_gep(ctx.i8_type(), p, &[skip], "scratch.al")?
        };
        Ok(Scratch {
            base,
            heap: Some(p),
        })
    }

    fn free_scratch(
        &self,
        e: &mut Emitter<'ctx, '_>,
        heap: &[PointerValue<'ctx>],
    ) -> Result<(), CodegenError> {
        let free = libc_fn(e, "free", false);
        for p in heap {
            e.b.build_call(free, &[(*p).into()], "")?;
        }
        Ok(())
    }

    /// The bounds of this thread's chunk: iterations `[t*c, min((t+1)*c, n))` with
    /// `c = ceil(n / threads)`, mapped back to loop-variable values.
    fn split_parallel(
        &self,
        e: &mut Emitter<'ctx, '_>,
        range: Bounds<'ctx>,
    ) -> Result<Bounds<'ctx>, CodegenError> {
        let n = e.f.count_params();
        let param = |i: u32| {
            e.f.get_nth_param(i)
                .map(|v| v.into_int_value())
                .ok_or_else(|| e.err("missing body parameter".into()))
        };
        let (thread, threads) = (param(n.wrapping_sub(2))?, param(n.wrapping_sub(1))?);
        let Bounds { lo, hi, step } = range;
        let i64t = e.ctx.i64_type();
        let (zero, one) = (i64t.const_zero(), i64t.const_int(1, false));
        let b = &e.b;
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
        let threads = smax(threads, one)?;
        let per = b.build_int_signed_div(
            b.build_int_add(trips, b.build_int_sub(threads, one, "")?, "")?,
            threads,
            "per_thread",
        )?;
        let t = smax(thread, zero)?;
        let first = smin(b.build_int_mul(t, per, "")?, trips)?;
        let last = smin(b.build_int_add(first, per, "")?, trips)?;
        let lo2 = b.build_int_add(lo, b.build_int_mul(first, step, "")?, "chunk.lo")?;
        let hi2 = b.build_int_add(lo, b.build_int_mul(last, step, "")?, "chunk.hi")?;
        Ok(Bounds {
            lo: lo2,
            hi: hi2,
            step,
        })
    }

    /// `exp` and `tanh` as inline polynomials, not libm calls, so vector loops stay vector
    /// code; `log`, `sin` and `cos` as LLVM intrinsics.
    fn math(
        &self,
        e: &mut Emitter<'ctx, '_>,
        f: MathFn,
        x: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        let math = Math {
            ctx: e.ctx,
            module: e.module,
            b: &e.b,
        };
        let intrinsic = |name: &str| -> Result<FloatValue<'ctx>, CodegenError> {
            let f32t = e.ctx.f32_type().into();
            Ok(e.intrinsic(name, f32t, &[x.into()])?.into_float_value())
        };
        match f {
            MathFn::Exp => math.exp(x),
            MathFn::Tanh => math.tanh(x),
            MathFn::Log => intrinsic("llvm.log"),
            MathFn::Sin => intrinsic("llvm.sin"),
            MathFn::Cos => intrinsic("llvm.cos"),
        }
    }

    fn pow(
        &self,
        e: &mut Emitter<'ctx, '_>,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        let f32t = e.ctx.f32_type().into();
        Ok(e.intrinsic("llvm.pow", f32t, &[a.into(), b.into()])?
            .into_float_value())
    }

    fn loop_hints(&self, lp: &Loop<'_>) -> Vec<(&'static str, HintArg)> {
        // A vector loop of a few constant vectors' worth of iterations: LLVM would
        // unroll it fully before vectorizing, leaving scalar code its straight-line
        // vectorizer often does not recover (masked selects, `maxnum`). Vectorize it as a
        // loop instead; the vector loop of a known trip count is then flattened anyway.
        let few = match (lp.kind, lp.start, lp.end) {
            (LoopKind::Vector(w), Expr::I64(a), Expr::I64(b)) if w > 1 => {
                let trips = (b.saturating_sub(*a) as u64).div_ceil(lp.step);
                trips >= w as u64 && trips <= 4 * w as u64
            }
            _ => false,
        };
        match lp.kind {
            // A serial loop runs as written: LLVM's own vectorizer would otherwise take
            // loops the lowering left scalar on purpose, such as a matmul epilogue that
            // walks down a column (it made gathers of the residual, slower than scalar
            // loads on x86: o-projection 580 → 750 GFLOP/s without them).
            LoopKind::Serial => vec![("llvm.loop.vectorize.enable", HintArg::Bool(false))],
            LoopKind::Parallel => vec![],
            LoopKind::Vector(w) if few => vec![
                ("llvm.loop.vectorize.width", HintArg::I32(w.max(1))),
                ("llvm.loop.vectorize.enable", HintArg::Bool(true)),
                ("llvm.loop.unroll.disable", HintArg::None),
            ],
            LoopKind::Vector(w) => vec![
                ("llvm.loop.vectorize.width", HintArg::I32(w.max(1))),
                ("llvm.loop.vectorize.enable", HintArg::Bool(true)),
            ],
            LoopKind::Unroll(n) => vec![("llvm.loop.unroll.count", HintArg::I32(n.max(1)))],
        }
    }

    /// The matmul tiles of `tiles/` (the others were expanded by `prepare`).
    fn lower_stmt(
        &self,
        e: &mut Emitter<'ctx, '_>,
        s: &Stmt,
        _first_loop: usize,
    ) -> Result<Lowered, CodegenError> {
        match s {
            Stmt::Tile(t) => {
                tiles::lower_tile(e, t, self.bf16_dot)?;
                Ok(Lowered::Handled)
            }
            _ => Ok(Lowered::NotMine),
        }
    }

    fn store(
        &self,
        e: &mut Emitter<'ctx, '_>,
        ptr: PointerValue<'ctx>,
        value: BasicValueEnum<'ctx>,
        _access: Access,
    ) -> Result<(), CodegenError> {
        e.b.build_store(ptr, value)?;
        Ok(())
    }
}
