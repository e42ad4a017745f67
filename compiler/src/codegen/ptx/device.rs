//! NVPTX building blocks for the GPU target (`gpu.rs`): the grid position from the special
//! registers, shared-memory scratch, warp barriers and butterfly reductions, and the math
//! functions (`exp`, `log`, `sin`, `cos`, `tanh`, `pow`) built from what PTX has natively,
//! because there is no libdevice to link.
//!
//! Accuracy of the math, against correctly rounded f32 results:
//! - `exp`: `ex2.approx` of `x·log2(e)` with the rounding error of that product folded back
//!   in (`fma`): about 2 ulp over the whole range (no `x·log2 e` cancellation loss).
//! - `log`: `lg2.approx(x)·ln 2`: about 1e-7 absolute near 1, 2 ulp relative elsewhere.
//! - `sin`, `cos`: Cody–Waite reduction by π/2 in three parts (with `fma`), then the
//!   Cephes minimax polynomials on [-π/4, π/4]: about 1 ulp for |x| up to ~1e5 (RoPE
//!   angles), degrading slowly beyond.
//! - `tanh`: the Cephes polynomial for |x| < 0.625, `1 - 2/(exp(2|x|)+1)` above: ~2 ulp.
//! - `pow(a, b)`: `ex2.approx(b·lg2.approx|a|)` with the sign and zero cases of `powf`:
//!   relative error about `|b·log2 a|·2^-22`.

use super::plan::{Home, KernelPlan, RedOp};
use crate::codegen::body::MathFn;
use crate::codegen::CodegenError;
use crate::kernel::Ty;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicType, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, BasicValueEnum, FloatValue, IntValue, PointerValue};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate};

/// Threads per warp on every NVIDIA GPU so far.
pub const WARP: u32 = 32;

/// Where this thread is: its lane, and its index and count in the grid (threads in thread
/// mode, warps in warp mode). All `i64`.
#[derive(Clone, Copy)]
pub(crate) struct GridPos<'ctx> {
    pub lane: IntValue<'ctx>,
    pub id: IntValue<'ctx>,
    pub count: IntValue<'ctx>,
}

fn llvm_err(message: String) -> CodegenError {
    CodegenError::Llvm {
        stage: "nvptx intrinsics",
        message,
    }
}

/// Calls a non-overloaded intrinsic (the NVVM ones are not overloaded) or one overloaded
/// on `tys`.
fn call<'ctx>(
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    name: &str,
    tys: &[BasicTypeEnum<'ctx>],
    args: &[BasicMetadataValueEnum<'ctx>],
) -> Result<Option<BasicValueEnum<'ctx>>, CodegenError> {
    let decl = Intrinsic::find(name)
        .and_then(|i| i.get_declaration(module, tys))
        .ok_or_else(|| llvm_err(format!("LLVM has no intrinsic `{name}`")))?;
    Ok(b.build_call(decl, args, "")?.try_as_basic_value().basic())
}

fn call_value<'ctx>(
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    name: &str,
    tys: &[BasicTypeEnum<'ctx>],
    args: &[BasicMetadataValueEnum<'ctx>],
) -> Result<BasicValueEnum<'ctx>, CodegenError> {
    call(module, b, name, tys, args)?.ok_or_else(|| llvm_err(format!("`{name}` returned void")))
}

/// A special register (`tid.x`, ...) widened to i64.
fn sreg<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    reg: &str,
) -> Result<IntValue<'ctx>, CodegenError> {
    let v = call_value(
        module,
        b,
        &format!("llvm.nvvm.read.ptx.sreg.{reg}"),
        &[],
        &[],
    )?
    .into_int_value();
    Ok(b.build_int_z_extend(v, ctx.i64_type(), reg)?)
}

/// Reads the grid position once, at the top of the kernel.
pub(crate) fn grid_position<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    plan: &KernelPlan,
) -> Result<GridPos<'ctx>, CodegenError> {
    let i64t = ctx.i64_type();
    let tid = sreg(ctx, module, b, "tid.x")?;
    let ntid = sreg(ctx, module, b, "ntid.x")?;
    let ctaid = sreg(ctx, module, b, "ctaid.x")?;
    let nctaid = sreg(ctx, module, b, "nctaid.x")?;
    let gtid = b.build_int_add(b.build_int_mul(ctaid, ntid, "")?, tid, "gtid")?;
    let gcount = b.build_int_mul(nctaid, ntid, "gthreads")?;
    let lane = b.build_and(tid, i64t.const_int(WARP as u64 - 1, false), "lane")?;
    Ok(match plan.mode {
        super::plan::Mode::Thread => GridPos {
            lane,
            id: gtid,
            count: gcount,
        },
        super::plan::Mode::Warp => {
            let shift = i64t.const_int(WARP.trailing_zeros() as u64, false);
            GridPos {
                lane,
                id: b.build_right_shift(gtid, shift, false, "gwarp")?,
                count: b.build_right_shift(gcount, shift, false, "gwarps")?,
            }
        }
    })
}

/// The symbol of a kernel's dynamic shared memory (`.extern .shared`, sized at launch).
pub const DYNAMIC_SHARED: &str = "archc_dynamic_shared";

/// The base of this warp's `len` elements of scratch array `name` (named
/// `<kernel>.scratch<buffer index>` by the translation), where the plan puts it: a
/// static shared array with one slice per warp of the block, or this warp's slice of
/// the kernel's dynamic shared memory or of its module-level global array.
pub(crate) fn shared_scratch<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    plan: &KernelPlan,
    name: &str,
    elem: BasicTypeEnum<'ctx>,
    len: u64,
) -> Result<PointerValue<'ctx>, CodegenError> {
    let i64t = ctx.i64_type();
    let shift = i64t.const_int(WARP.trailing_zeros() as u64, false);
    let tid = sreg(ctx, module, b, "tid.x")?;
    let warp = b.build_right_shift(tid, shift, false, "warp")?;
    let too_big = |what: String| CodegenError::Kernel {
        kernel: name.into(),
        message: what,
    };
    match plan.scratch.home {
        Home::Shared | Home::None | Home::Local => {
            let per_warp = len.max(1);
            let total = per_warp.saturating_mul(plan.warps_per_block as u64);
            let total = u32::try_from(total).map_err(|_| {
                too_big(format!(
                    "scratch of {total} elements does not fit in shared memory"
                ))
            })?;
            let arr = elem.array_type(total);
            let g = module.add_global(arr, Some(AddressSpace::from(3u16)), name);
            g.set_linkage(Linkage::Internal);
            // Shared memory cannot be initialised; `undef` is how NVPTX spells "no
            // initialiser".
            g.set_initializer(&arr.get_undef());
            g.set_alignment(16);
            let offset = b.build_int_mul(warp, i64t.const_int(per_warp, false), "")?;
            // SAFETY (for LLVM): `warp < warps_per_block`, so the slice is inside the array.
            let p = unsafe {
                b.build_in_bounds_gep(
                    elem,
                    g.as_pointer_value(),
                    &[offset],
                    &format!("{name}.warp"),
                )?
            };
            Ok(p)
        }
        Home::DynamicShared | Home::Global => {
            // The buffer's offset in a warp's slice, by the index the name ends with.
            let offset = name
                .rsplit_once(".scratch")
                .and_then(|(_, i)| i.parse::<usize>().ok())
                .and_then(|i| plan.scratch.offsets.get(&i).copied())
                .ok_or_else(|| too_big(format!("no scratch offset planned for `{name}`")))?;
            let i8t = ctx.i8_type();
            let (base, slot) = if plan.scratch.home == Home::DynamicShared {
                let g = match module.get_global(DYNAMIC_SHARED) {
                    Some(g) => g,
                    None => {
                        let g = module.add_global(
                            i8t.array_type(0),
                            Some(AddressSpace::from(3u16)),
                            DYNAMIC_SHARED,
                        );
                        g.set_linkage(Linkage::External);
                        g.set_alignment(16);
                        g
                    }
                };
                (g.as_pointer_value(), warp)
            } else {
                let sym = format!(
                    "{}.global",
                    name.rsplit_once(".scratch").map_or(name, |p| p.0)
                );
                let g = match module.get_global(&sym) {
                    Some(g) => g,
                    None => {
                        let bytes = plan.scratch.per_warp.saturating_mul(plan.scratch.slots);
                        let bytes = u32::try_from(bytes).map_err(|_| {
                            too_big(format!("{bytes} bytes of global scratch are too many"))
                        })?;
                        let arr = i8t.array_type(bytes);
                        let g = module.add_global(arr, Some(AddressSpace::from(1u16)), &sym);
                        g.set_linkage(Linkage::Internal);
                        // No initialiser in the PTX: the array is only written before read.
                        g.set_initializer(&arr.get_undef());
                        g.set_alignment(16);
                        g
                    }
                };
                // This warp's slot: its index in the grid, wrapped so that a grid larger
                // than `max_blocks` stays in bounds (such warps would share slices).
                let ntid = sreg(ctx, module, b, "ntid.x")?;
                let ctaid = sreg(ctx, module, b, "ctaid.x")?;
                let gtid = b.build_int_add(b.build_int_mul(ctaid, ntid, "")?, tid, "")?;
                let gwarp = b.build_right_shift(gtid, shift, false, "gwarp")?;
                let slots = i64t.const_int(plan.scratch.slots.max(1), false);
                (
                    g.as_pointer_value(),
                    b.build_int_unsigned_rem(gwarp, slots, "slot")?,
                )
            };
            let at = b.build_int_add(
                b.build_int_mul(slot, i64t.const_int(plan.scratch.per_warp, false), "")?,
                i64t.const_int(offset, false),
                "",
            )?;
            // SAFETY (for LLVM): the slot is below the slices the array (or the launch's
            // dynamic shared memory) holds, and the buffer lies inside its slice.
            let p = unsafe { b.build_in_bounds_gep(i8t, base, &[at], &format!("{name}.warp"))? };
            Ok(p)
        }
    }
}

/// `bar.warp.sync 0xffffffff`: the lanes of the warp meet, and memory written by any of
/// them before is visible to all after.
pub(crate) fn sync_warp<'ctx>(
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
) -> Result<(), CodegenError> {
    let ctx = module.get_context();
    let all = ctx.i32_type().const_all_ones();
    call(module, b, "llvm.nvvm.bar.warp.sync", &[], &[all.into()])?;
    Ok(())
}

/// The value that leaves a reduction unchanged.
pub(crate) fn identity<'ctx>(ctx: &'ctx Context, op: RedOp, ty: Ty) -> BasicValueEnum<'ctx> {
    match ty {
        Ty::F32 => {
            let x = match op {
                RedOp::Add => 0.0,
                RedOp::Mul => 1.0,
                RedOp::Max => f64::NEG_INFINITY,
                RedOp::Min => f64::INFINITY,
            };
            ctx.f32_type().const_float(x).into()
        }
        _ => {
            let x = match op {
                RedOp::Add => 0,
                RedOp::Mul => 1,
                RedOp::Max => i64::MIN,
                RedOp::Min => i64::MAX,
            };
            ctx.i64_type().const_int(x as u64, true).into()
        }
    }
}

/// One value per lane in, the reduction over the 32 lanes out (in every lane): five
/// butterfly shuffles.
pub(crate) fn warp_allreduce<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    op: RedOp,
    v: BasicValueEnum<'ctx>,
) -> Result<BasicValueEnum<'ctx>, CodegenError> {
    let i32t = ctx.i32_type();
    let all = i32t.const_all_ones();
    let clamp = i32t.const_int(WARP as u64 - 1, false);
    let mut v = v;
    let mut offset = WARP / 2;
    while offset > 0 {
        let lanes = i32t.const_int(offset as u64, false);
        let shfl = |x: BasicValueEnum<'ctx>, name: &str| {
            call_value(
                module,
                b,
                name,
                &[],
                &[all.into(), x.into(), lanes.into(), clamp.into()],
            )
        };
        v = match v {
            BasicValueEnum::FloatValue(x) => {
                let other = shfl(x.into(), "llvm.nvvm.shfl.sync.bfly.f32")?.into_float_value();
                combine_f32(module, b, op, x, other)?.into()
            }
            BasicValueEnum::IntValue(x) => {
                // 64 bits travel as two 32-bit halves.
                let i64t = ctx.i64_type();
                let lo = b.build_int_truncate(x, i32t, "")?;
                let hi = b.build_int_truncate(
                    b.build_right_shift(x, i64t.const_int(32, false), false, "")?,
                    i32t,
                    "",
                )?;
                let lo = shfl(lo.into(), "llvm.nvvm.shfl.sync.bfly.i32")?.into_int_value();
                let hi = shfl(hi.into(), "llvm.nvvm.shfl.sync.bfly.i32")?.into_int_value();
                let lo = b.build_int_z_extend(lo, i64t, "")?;
                let hi = b.build_left_shift(
                    b.build_int_z_extend(hi, i64t, "")?,
                    i64t.const_int(32, false),
                    "",
                )?;
                let other = b.build_or(hi, lo, "")?;
                combine_i64(module, b, op, x, other)?.into()
            }
            other => {
                return Err(llvm_err(format!(
                    "cannot reduce a value of type {:?} across a warp",
                    other.get_type()
                )))
            }
        };
        offset /= 2;
    }
    Ok(v)
}

fn combine_f32<'ctx>(
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    op: RedOp,
    x: FloatValue<'ctx>,
    y: FloatValue<'ctx>,
) -> Result<FloatValue<'ctx>, CodegenError> {
    let f32t: BasicTypeEnum = x.get_type().into();
    Ok(match op {
        RedOp::Add => b.build_float_add(x, y, "")?,
        RedOp::Mul => b.build_float_mul(x, y, "")?,
        RedOp::Max => {
            call_value(module, b, "llvm.maxnum", &[f32t], &[x.into(), y.into()])?.into_float_value()
        }
        RedOp::Min => {
            call_value(module, b, "llvm.minnum", &[f32t], &[x.into(), y.into()])?.into_float_value()
        }
    })
}

fn combine_i64<'ctx>(
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    op: RedOp,
    x: IntValue<'ctx>,
    y: IntValue<'ctx>,
) -> Result<IntValue<'ctx>, CodegenError> {
    let t: BasicTypeEnum = x.get_type().into();
    Ok(match op {
        RedOp::Add => b.build_int_add(x, y, "")?,
        RedOp::Mul => b.build_int_mul(x, y, "")?,
        RedOp::Max => {
            call_value(module, b, "llvm.smax", &[t], &[x.into(), y.into()])?.into_int_value()
        }
        RedOp::Min => {
            call_value(module, b, "llvm.smin", &[t], &[x.into(), y.into()])?.into_int_value()
        }
    })
}

/// Small float helpers over one builder.
struct F<'a, 'ctx> {
    ctx: &'ctx Context,
    module: &'a Module<'ctx>,
    b: &'a Builder<'ctx>,
}

impl<'ctx> F<'_, 'ctx> {
    fn c(&self, x: f64) -> FloatValue<'ctx> {
        self.ctx.f32_type().const_float(x)
    }
    fn ty(&self) -> BasicTypeEnum<'ctx> {
        self.ctx.f32_type().into()
    }
    fn un(&self, name: &str, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        let tys: &[BasicTypeEnum] = if name.starts_with("llvm.nvvm.") {
            &[]
        } else {
            &[self.ty()]
        };
        Ok(call_value(self.module, self.b, name, tys, &[x.into()])?.into_float_value())
    }
    fn fma(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
        c: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        Ok(call_value(
            self.module,
            self.b,
            "llvm.fma",
            &[self.ty()],
            &[a.into(), b.into(), c.into()],
        )?
        .into_float_value())
    }
    fn mul(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        Ok(self.b.build_float_mul(a, b, "")?)
    }
    fn add(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        Ok(self.b.build_float_add(a, b, "")?)
    }
    fn sub(
        &self,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        Ok(self.b.build_float_sub(a, b, "")?)
    }
    fn neg(&self, a: FloatValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        Ok(self.b.build_float_neg(a, "")?)
    }
    fn cmp(
        &self,
        p: FloatPredicate,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<IntValue<'ctx>, CodegenError> {
        Ok(self.b.build_float_compare(p, a, b, "")?)
    }
    fn sel(
        &self,
        c: IntValue<'ctx>,
        a: FloatValue<'ctx>,
        b: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        Ok(self.b.build_select(c, a, b, "")?.into_float_value())
    }
    /// Horner's rule with `fma`: `c[0]·x^n + ... + c[n]`.
    fn poly(&self, x: FloatValue<'ctx>, c: &[f64]) -> Result<FloatValue<'ctx>, CodegenError> {
        let mut acc = self.c(c[0]);
        for &k in &c[1..] {
            acc = self.fma(acc, x, self.c(k))?;
        }
        Ok(acc)
    }

    fn exp(&self, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        const LOG2E: f64 = 1.442_695_021_629_333_5;
        const LOG2E_LO: f64 = 1.925_963_033_500_011e-8;
        const LN2: f64 = std::f64::consts::LN_2;
        let t = self.mul(x, self.c(LOG2E))?;
        // x·log2(e) - t, exactly (fma), plus the part of log2(e) that f32 drops.
        let e = self.fma(x, self.c(LOG2E), self.neg(t)?)?;
        let e = self.fma(x, self.c(LOG2E_LO), e)?;
        let r = self.un("llvm.nvvm.ex2.approx.f", t)?;
        // At ±inf (and NaN) the correction is NaN; the plain result is right there.
        let finite = self.cmp(
            FloatPredicate::OLT,
            self.un("llvm.fabs", t)?,
            self.c(f64::INFINITY),
        )?;
        let e = self.sel(finite, e, self.c(0.0))?;
        self.fma(r, self.mul(e, self.c(LN2))?, r)
    }

    fn log(&self, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        let l2 = self.un("llvm.nvvm.lg2.approx.f", x)?;
        self.mul(l2, self.c(std::f64::consts::LN_2))
    }

    /// `sin(x)` or `cos(x)`.
    fn sincos(&self, x: FloatValue<'ctx>, cos: bool) -> Result<FloatValue<'ctx>, CodegenError> {
        const TWO_OVER_PI: f64 = 0.636_619_746_685_028;
        // π/2 = C1 + C2 + C3, each an f32.
        const C1: f64 = 1.570_796_370_506_286_6;
        const C2: f64 = -4.371_138_828_673_793e-8;
        const C3: f64 = -1.715_124_510_005_881_9e-15;
        let k = self.un("llvm.rint", self.mul(x, self.c(TWO_OVER_PI))?)?;
        let nk = self.neg(k)?;
        let r = self.fma(nk, self.c(C1), x)?;
        let r = self.fma(nk, self.c(C2), r)?;
        let r = self.fma(nk, self.c(C3), r)?;
        let z = self.mul(r, r)?;
        // Cephes sinf/cosf minimax polynomials on [-π/4, π/4].
        let sp = self.poly(
            z,
            &[-1.951_529_589_1e-4, 8.332_160_873_6e-3, -1.666_665_461_1e-1],
        )?;
        let s = self.fma(self.mul(sp, z)?, r, r)?;
        let cp = self.poly(
            z,
            &[
                2.443_315_711_809_948e-5,
                -1.388_731_625_493_765e-3,
                4.166_664_568_298_827e-2,
            ],
        )?;
        let c = self.fma(self.mul(cp, z)?, z, self.fma(self.c(-0.5), z, self.c(1.0))?)?;
        // The quadrant: k mod 4, plus one for cos (cos x = sin(x + π/2)).
        let i64t = self.ctx.i64_type();
        let q = call_value(
            self.module,
            self.b,
            "llvm.fptosi.sat",
            &[i64t.into(), self.ty()],
            &[k.into()],
        )?
        .into_int_value();
        let q = if cos {
            self.b.build_int_add(q, i64t.const_int(1, false), "")?
        } else {
            q
        };
        let q = self.b.build_and(q, i64t.const_int(3, false), "quadrant")?;
        let odd = self.b.build_int_compare(
            IntPredicate::NE,
            self.b.build_and(q, i64t.const_int(1, false), "")?,
            i64t.const_zero(),
            "",
        )?;
        let negative = self.b.build_int_compare(
            IntPredicate::NE,
            self.b.build_and(q, i64t.const_int(2, false), "")?,
            i64t.const_zero(),
            "",
        )?;
        let v = self.sel(odd, c, s)?;
        self.sel(negative, self.neg(v)?, v)
    }

    fn tanh(&self, x: FloatValue<'ctx>) -> Result<FloatValue<'ctx>, CodegenError> {
        let ax = self.un("llvm.fabs", x)?;
        // Small |x|: Cephes tanhf's odd polynomial.
        let z = self.mul(x, x)?;
        let p = self.poly(
            z,
            &[
                -5.704_988_727_45e-3,
                2.063_908_879_54e-2,
                -5.373_971_555_31e-2,
                1.333_144_220_36e-1,
                -3.333_328_194_22e-1,
            ],
        )?;
        let small = self.fma(self.mul(p, z)?, x, x)?;
        // Large |x|: 1 - 2/(e^{2|x|} + 1), which saturates to 1 without overflow trouble.
        let e = self.exp(self.add(ax, ax)?)?;
        let big = self.sub(
            self.c(1.0),
            self.b
                .build_float_div(self.c(2.0), self.add(e, self.c(1.0))?, "")?,
        )?;
        let big = call_value(
            self.module,
            self.b,
            "llvm.copysign",
            &[self.ty()],
            &[big.into(), x.into()],
        )?
        .into_float_value();
        let is_small = self.cmp(FloatPredicate::OLT, ax, self.c(0.625))?;
        // NaN fails the comparison and takes the large path, which keeps it NaN.
        self.sel(is_small, small, big)
    }

    fn pow(
        &self,
        a: FloatValue<'ctx>,
        e: FloatValue<'ctx>,
    ) -> Result<FloatValue<'ctx>, CodegenError> {
        let aa = self.un("llvm.fabs", a)?;
        let l = self.un("llvm.nvvm.lg2.approx.f", aa)?;
        let r = self.un("llvm.nvvm.ex2.approx.f", self.mul(e, l)?)?;
        // A negative base: real only for an integer exponent, negative for an odd one.
        let is_int = self.cmp(FloatPredicate::OEQ, self.un("llvm.floor", e)?, e)?;
        let half = self.mul(e, self.c(0.5))?;
        let is_odd = self.b.build_and(
            is_int,
            self.cmp(FloatPredicate::UNE, self.un("llvm.floor", half)?, half)?,
            "",
        )?;
        let signed = self.sel(is_odd, self.neg(r)?, r)?;
        let neg_base = self.sel(is_int, signed, self.c(f64::NAN))?;
        let is_neg = self.cmp(FloatPredicate::OLT, a, self.c(0.0))?;
        let r = self.sel(is_neg, neg_base, r)?;
        // x^0 = 1 for every x, NaN included, as powf says.
        let zero_exp = self.cmp(FloatPredicate::OEQ, e, self.c(0.0))?;
        self.sel(zero_exp, self.c(1.0), r)
    }
}

/// `exp`, `log`, `sin`, `cos` or `tanh` of an f32.
pub(crate) fn unary<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    op: MathFn,
    x: FloatValue<'ctx>,
) -> Result<FloatValue<'ctx>, CodegenError> {
    let f = F { ctx, module, b };
    match op {
        MathFn::Exp => f.exp(x),
        MathFn::Log => f.log(x),
        MathFn::Sin => f.sincos(x, false),
        MathFn::Cos => f.sincos(x, true),
        MathFn::Tanh => f.tanh(x),
    }
}

/// `powf(a, e)`.
pub(crate) fn pow<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    b: &Builder<'ctx>,
    a: FloatValue<'ctx>,
    e: FloatValue<'ctx>,
) -> Result<FloatValue<'ctx>, CodegenError> {
    F { ctx, module, b }.pow(a, e)
}
