//! The dot-product idiom of CPU kernels: a `Vector` loop whose body is only dot products
//! runs its main part on `<16 x float>` accumulators (`vdpbf16ps` for bf16 pairs where
//! the CPU has AVX512-BF16, fused multiply-adds for f32 rows that share an operand),
//! and the ordinary loop finishes the remainder.

use super::mentions;
use crate::codegen::body::Emitter;
use crate::codegen::CodegenError;
use crate::kernel::{BinOp, BufId, Elem, Expr, Kernel, Stmt, VarId};
use inkwell::intrinsics::Intrinsic;
use inkwell::types::VectorType;
use inkwell::values::{BasicValue, IntValue};
use inkwell::IntPredicate;

/// A `Vector` loop body that is only dot products: `let v = buf[base + iv]` loads of
/// buffers of one element type and `acc = acc + a * b` updates of accumulators declared
/// outside, `a` and `b` among those loads.
pub(super) struct Dot {
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
    pub(super) fn many_rows(&self) -> bool {
        let shared = |pick: fn(&(VarId, usize, usize)) -> usize| {
            let first = self.sets.first().map(pick);
            self.sets.iter().all(|s| Some(pick(s)) == first)
        };
        self.sets.len() >= 4 && (shared(|s| s.1) || shared(|s| s.2))
    }
}

/// The [`Dot`] over `elem` buffers of a loop over `iv` with `body`, if the body has that
/// form.
pub(super) fn dot_plan(iv: VarId, body: &[Stmt], k: &Kernel, elem: Elem) -> Option<Dot> {
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

/// The main part of a dot-product loop (see [`dot_plan`]), whose accumulators each
/// become a `<16 x float>` whose lanes are added into the scalar accumulator at the
/// end. bf16: 32 iterations at a time, each product pair of bf16 vectors accumulated
/// by `vdpbf16ps`; products of two bf16 are exact in f32, so only the summation order
/// differs from the scalar loop, which a `Vector` loop allows (the instruction also
/// treats subnormal inputs and results as zero). f32: 16 iterations at a time, one
/// fused multiply-add per product (contraction, which a `Vector` loop allows too).
/// Returns where the ordinary loop takes over (`lo` plus a multiple of the step).
pub(super) fn dot_loop<'ctx>(
    e: &mut Emitter<'ctx, '_>,
    plan: &Dot,
    lo: IntValue<'ctx>,
    hi: IntValue<'ctx>,
) -> Result<IntValue<'ctx>, CodegenError> {
    let bf16 = plan.elem == Elem::Bf16;
    let lanes: u64 = if bf16 { 32 } else { 16 };
    let ctx = e.ctx;
    let i64t = ctx.i64_type();
    let i16t = ctx.i16_type();
    let f32t = ctx.f32_type();
    let v16f = f32t.vec_type(16);
    let v32i = i16t.vec_type(32);
    let v32bf = ctx.bf16_type().vec_type(32);
    let dp = if bf16 {
        Intrinsic::find("llvm.x86.avx512bf16.dpbf16ps.512")
            .and_then(|i| i.get_declaration(e.module, &[]))
            .ok_or_else(|| e.err("LLVM has no intrinsic `dpbf16ps.512`".into()))?
    } else {
        Intrinsic::find("llvm.fmuladd")
            .and_then(|i| i.get_declaration(e.module, &[v16f.into()]))
            .ok_or_else(|| e.err("LLVM has no intrinsic `fmuladd`".into()))?
    };
    // Loop-invariant row pointers: the buffer plus the index at iteration 0.
    let mut rows = Vec::with_capacity(plan.loads.len());
    for (_, buf, base) in &plan.loads {
        let (ptr, _, _) = e.buf(*buf)?;
        let p = match (base, bf16) {
            (Some(x), true) => {
                let at = e.int(x, "load index")?;
                unsafe { e.b.build_in_bounds_gep(i16t, ptr, &[at], "row")? }
            }
            (Some(x), false) => {
                let at = e.int(x, "load index")?;
                unsafe { e.b.build_in_bounds_gep(f32t, ptr, &[at], "row")? }
            }
            (None, _) => ptr,
        };
        rows.push(p);
    }
    let b = &e.b;
    let span = b.build_int_sub(hi, lo, "")?;
    let neg = b.build_int_compare(IntPredicate::SLT, span, i64t.const_zero(), "")?;
    let span = b
        .build_select(neg, i64t.const_zero(), span, "")?
        .into_int_value();
    let main = b.build_and(span, i64t.const_int(!(lanes - 1), true), "")?;
    let main_end = b.build_int_add(lo, main, "dot.end")?;
    let pre = b
        .get_insert_block()
        .ok_or_else(|| e.err("no insert block".into()))?;
    let header = ctx.append_basic_block(e.f, "dot.header");
    let body = ctx.append_basic_block(e.f, "dot.body");
    let done = ctx.append_basic_block(e.f, "dot.done");
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
            .ok_or_else(|| e.err("a dot-product step returned void".into()))?;
        next.push(r);
    }
    let k_next = b.build_int_add(k, i64t.const_int(lanes, false), "")?;
    let latch = b
        .get_insert_block()
        .ok_or_else(|| e.err("no insert block".into()))?;
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
                let lo = e.b.build_shuffle_vector(pair[0], pair[1], lo_mask, "")?;
                let hi = e.b.build_shuffle_vector(pair[0], pair[1], hi_mask, "")?;
                next.push(e.b.build_float_add(lo, hi, "")?);
            }
            level = next;
            w = half;
        }
        let total = level[0];
        for (l, (acc_var, _, _)) in plan.sets[g * 16..].iter().take(chunk.len()).enumerate() {
            let (slot, _) = e.var_slot(*acc_var)?;
            let cur = e.b.build_load(ctx.f32_type(), slot, "")?;
            let lane =
                e.b.build_extract_element(total, i32t.const_int(l as u64, false), "")?;
            let sum =
                e.b.build_float_add(cur.into_float_value(), lane.into_float_value(), "")?;
            e.b.build_store(slot, sum)?;
        }
    }
    Ok(main_end)
}
