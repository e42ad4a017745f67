//! The tokens-in-lanes idiom of CPU kernels (`LanePlan`): a `Vector` loop of 16
//! iterations that each run the same serial reduction of bf16 pair products becomes one
//! `<16 x float>` register per accumulator, updated by `vdpbf16ps` with a broadcast weight
//! pair where the CPU has AVX512-BF16 and by two fused multiply-adds over widened halves
//! elsewhere.

use super::mentions;
use crate::codegen::body::Emitter;
use crate::codegen::CodegenError;
use crate::kernel::lower::ix;
use crate::kernel::{BinOp, BufId, Elem, Expr, Kernel, LoopKind, Stmt, VarId};
use inkwell::builder::BuilderError;
use inkwell::intrinsics::Intrinsic;
use inkwell::types::VectorType;
use inkwell::values::{BasicValue, BasicValueEnum};
use inkwell::IntPredicate;

/// A `Vector` loop of 16 iterations over `l` that is an outer-product tile: every
/// iteration (a lane) runs the same serial inner loop over `kp`, in which each
/// accumulator declared in the vector loop (`local acc = 0`) takes one bf16 pair
/// product `acc = acc + (x[b + 2l] * w[u] + x[b + 2l + 1] * w[u + 1])`, with `b` and `u`
/// free of `l`, and after which each accumulator is stored once, `out[o + l] = acc`.
/// Lanes become SIMD lanes, so the accumulators stay in registers for the whole inner
/// loop and no horizontal sums are needed.
pub(super) struct LanePlan<'k> {
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
pub(super) fn lane_plan<'k>(
    l: VarId,
    start: &Expr,
    end: &Expr,
    body: &'k [Stmt],
    k: &Kernel,
) -> Option<LanePlan<'k>> {
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

/// An outer-product tile (see [`LanePlan`]): every accumulator is a `<16 x float>`
/// whose lane `l` is iteration `l` of the vector loop, updated once per iteration of
/// the inner loop by a bf16 pair product, then stored as one vector. With
/// AVX512-BF16 a product is one `vdpbf16ps` of the 32 activations at the pair's base
/// and the weight pair broadcast to every lane; elsewhere the even and odd bf16 of
/// both widen to f32 and two fused multiply-adds follow (the products are exact in
/// f32 either way; only the summation order differs, which a `Vector` loop allows).
pub(super) fn lane_loop<'ctx>(
    e: &mut Emitter<'ctx, '_>,
    plan: &LanePlan,
    bf16_dot: bool,
) -> Result<(), CodegenError> {
    let ctx = e.ctx;
    let i64t = ctx.i64_type();
    let i32t = ctx.i32_type();
    let i16t = ctx.i16_type();
    let f32t = ctx.f32_type();
    let v16f = f32t.vec_type(16);
    let v16i = i32t.vec_type(16);
    let v32i = i16t.vec_type(32);
    let v32bf = ctx.bf16_type().vec_type(32);
    // Declared only where the CPU has it: a module for another CPU names no x86
    // intrinsic it does not call.
    let dp = if bf16_dot {
        Intrinsic::find("llvm.x86.avx512bf16.dpbf16ps.512")
            .and_then(|i| i.get_declaration(e.module, &[]))
    } else {
        None
    };
    let fma = Intrinsic::find("llvm.fmuladd")
        .and_then(|i| i.get_declaration(e.module, &[v16f.into()]))
        .ok_or_else(|| e.err("LLVM has no intrinsic `fmuladd`".into()))?;
    let lo = e.int(plan.start, "loop start")?;
    let hi = e.int(plan.end, "loop end")?;
    let (kp_slot, _) = e.var_slot(plan.kp)?;
    let pre =
        e.b.get_insert_block()
            .ok_or_else(|| e.err("no insert block".into()))?;
    let header = ctx.append_basic_block(e.f, "lanes.header");
    let body = ctx.append_basic_block(e.f, "lanes.body");
    let done = ctx.append_basic_block(e.f, "lanes.done");
    e.b.build_unconditional_branch(header)?;

    e.b.position_at_end(header);
    let iv = e.b.build_phi(i64t, "lanes.iv")?;
    let accs: Vec<_> = plan
        .steps
        .iter()
        .map(|_| e.b.build_phi(v16f, "lanes.acc"))
        .collect::<Result<_, _>>()?;
    let more = e.b.build_int_compare(
        IntPredicate::SLT,
        iv.as_basic_value().into_int_value(),
        hi,
        "",
    )?;
    e.b.build_conditional_branch(more, body, done)?;

    e.b.position_at_end(body);
    let k = iv.as_basic_value().into_int_value();
    e.b.build_store(kp_slot, k)?;
    // Each operand once: the activations as 32 bf16 from the pair's base, the weight
    // pair as one 32-bit word in every lane.
    let mut vals = Vec::with_capacity(plan.loads.len());
    for ld in &plan.loads {
        let (ptr, _, _) = e.buf(ld.buf)?;
        let at = e.int(&ld.base, "load index")?;
        let p = unsafe { e.b.build_in_bounds_gep(i16t, ptr, &[at], "")? };
        let v = if ld.lanes {
            let v = e.b.build_load(v32i, p, "")?;
            if let Some(inst) = v.as_instruction_value() {
                let _ = inst.set_alignment(2);
            }
            v
        } else {
            let w = e.b.build_load(i32t, p, "")?;
            if let Some(inst) = w.as_instruction_value() {
                let _ = inst.set_alignment(2);
            }
            let zero = v16i.const_zero();
            let v =
                e.b.build_insert_element(zero, w.into_int_value(), i32t.const_zero(), "")?;
            let splat = e.b.build_shuffle_vector(v, zero, v16i.const_zero(), "")?;
            e.b.build_bit_cast(splat, v32i, "")?
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
                let x = e.b.build_bit_cast(x, v32bf, "")?;
                let w = e.b.build_bit_cast(w, v32bf, "")?;
                e.b.build_call(dp, &[acc.into(), x.into(), w.into()], "")?
                    .try_as_basic_value()
                    .basic()
                    .ok_or_else(|| e.err("a dot-product step returned void".into()))?
            }
            None => {
                // bf16 → f32 is the 16 bits moved to the top of the word.
                let halves = |v: inkwell::values::VectorValue<'ctx>| {
                    let words = e.b.build_bit_cast(v, v16i, "")?.into_vector_value();
                    let even = e.b.build_left_shift(words, shift, "")?;
                    let odd = e.b.build_and(words, high, "")?;
                    Ok::<_, BuilderError>((
                        e.b.build_bit_cast(even, v16f, "")?,
                        e.b.build_bit_cast(odd, v16f, "")?,
                    ))
                };
                let (x0, x1) = halves(x)?;
                let (w0, w1) = halves(w)?;
                let call =
                    |a: BasicValueEnum<'ctx>, b: BasicValueEnum<'ctx>, c: BasicValueEnum<'ctx>| {
                        e.b.build_call(fma, &[a.into(), b.into(), c.into()], "")
                            .map(|r| r.try_as_basic_value().basic())
                    };
                let a1 = call(x0, w0, acc)?.ok_or_else(|| e.err("fmuladd returned void".into()))?;
                call(x1, w1, a1)?.ok_or_else(|| e.err("fmuladd returned void".into()))?
            }
        };
        next.push(r);
    }
    let k_next = e.b.build_int_add(k, i64t.const_int(1, false), "")?;
    let latch =
        e.b.get_insert_block()
            .ok_or_else(|| e.err("no insert block".into()))?;
    e.b.build_unconditional_branch(header)?;
    iv.add_incoming(&[(&lo, pre), (&k_next, latch)]);
    let zero = v16f.const_zero();
    for (acc, n) in accs.iter().zip(&next) {
        acc.add_incoming(&[(&zero, pre), (n, latch)]);
    }

    e.b.position_at_end(done);
    for (st, acc) in plan.steps.iter().zip(&accs) {
        let (ptr, _, _) = e.buf(st.out)?;
        let at = e.int(&st.out_base, "store index")?;
        let p = unsafe { e.b.build_in_bounds_gep(f32t, ptr, &[at], "")? };
        let s = e.b.build_store(p, acc.as_basic_value())?;
        let _ = s.set_alignment(4);
    }
    Ok(())
}
