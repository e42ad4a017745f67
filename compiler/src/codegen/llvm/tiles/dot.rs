//! Dot-product tiles on the CPU: every (row, column) sum of a tile whose operands are all
//! bf16 (on a CPU with AVX512-BF16) or all f32 (one row or one column, at least four
//! sums) runs its reduction on a `<16 x float>` accumulator: 32 bf16 pairs per step by
//! `vdpbf16ps`, or 16 f32 per step by fused multiply-adds. One butterfly of shuffles then
//! sums the lanes of up to 16 accumulators at once, and a scalar loop adds the elements
//! left over. Products of two bf16 are exact in f32, so only the summation order differs
//! from the tile's plain loop, which a tile allows (`vdpbf16ps` also treats subnormal
//! inputs and results as zero).

use crate::codegen::body::Emitter;
use crate::codegen::CodegenError;
use crate::kernel::{Elem, Tile, TileOut};
use inkwell::intrinsics::Intrinsic;
use inkwell::types::VectorType;
use inkwell::values::{BasicValue, FloatValue, IntValue, PointerValue};
use inkwell::IntPredicate;

/// Lowers `t` (`TileOut::Sums`, every operand of `elem`: bf16 or f32).
pub(super) fn dot_tile<'ctx>(
    e: &mut Emitter<'ctx, '_>,
    t: &Tile,
    elem: Elem,
) -> Result<(), CodegenError> {
    let TileOut::Sums(sums) = &t.out else {
        return Err(e.err("a dot-product tile stores no sums".into()));
    };
    let bf16 = elem == Elem::Bf16;
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
    // The sums start at zero (the tile declares them).
    for &v in sums {
        let (slot, _) = e.var_slot(v)?;
        e.b.build_store(slot, f32t.const_zero())?;
    }
    // Loop-invariant row and column pointers: each operand's buffer at its base.
    let elem_ty = if bf16 { i16t } else { ctx.i32_type() };
    let mut ptrs = Vec::with_capacity(t.rows.len() + t.cols.len());
    for r in t.rows.iter().chain(&t.cols) {
        let (ptr, _, _) = e.buf(r.buf)?;
        let at = e.int(&r.base, "tile base")?;
        let p = if bf16 {
            unsafe { e.b.build_in_bounds_gep(elem_ty, ptr, &[at], "row")? }
        } else {
            unsafe { e.b.build_in_bounds_gep(f32t, ptr, &[at], "row")? }
        };
        ptrs.push(p);
    }
    let lo = e.int(&t.start, "tile start")?;
    let hi = e.int(&t.end, "tile end")?;
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
    let accs: Vec<_> = sums
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
    // Element `base + k` of an operand is element `k - start` past its pointer plus
    // `start`: the pointers are at the bases, so index them by `k` directly.
    let mut vals = Vec::with_capacity(ptrs.len());
    for p in &ptrs {
        if bf16 {
            let at = unsafe { b.build_in_bounds_gep(i16t, *p, &[k], "")? };
            let v = b.build_load(v32i, at, "")?;
            if let Some(inst) = v.as_instruction_value() {
                let _ = inst.set_alignment(2);
            }
            vals.push(b.build_bit_cast(v, v32bf, "")?);
        } else {
            let at = unsafe { b.build_in_bounds_gep(f32t, *p, &[k], "")? };
            let v = b.build_load(v16f, at, "")?;
            if let Some(inst) = v.as_instruction_value() {
                let _ = inst.set_alignment(4);
            }
            vals.push(v);
        }
    }
    let n = t.n();
    let mut next = Vec::with_capacity(accs.len());
    for (j, acc) in accs.iter().enumerate() {
        let (x, y) = (vals[j / n].into(), vals[t.rows.len() + j % n].into());
        let acc = acc.as_basic_value().into();
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
    for (acc, nx) in accs.iter().zip(&next) {
        acc.add_incoming(&[(&zero, pre), (nx, latch)]);
    }

    b.position_at_end(done);
    // The lanes of up to 16 accumulators are summed together: a butterfly of shuffles
    // and adds leaves accumulator `i`'s total in lane `i` (30 shuffles and 15 adds for
    // 16 accumulators, instead of a separate reduction each).
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
            let mut nxt = Vec::with_capacity(level.len() / 2);
            for pair in level.chunks(2) {
                let lo = e.b.build_shuffle_vector(pair[0], pair[1], lo_mask, "")?;
                let hi = e.b.build_shuffle_vector(pair[0], pair[1], hi_mask, "")?;
                nxt.push(e.b.build_float_add(lo, hi, "")?);
            }
            level = nxt;
            w = half;
        }
        let total = level[0];
        for (l, &v) in sums[g * 16..].iter().take(chunk.len()).enumerate() {
            let (slot, _) = e.var_slot(v)?;
            let lane =
                e.b.build_extract_element(total, i32t.const_int(l as u64, false), "")?;
            e.b.build_store(slot, lane)?;
        }
    }
    remainder(e, t, &ptrs, main_end, hi, bf16)
}

/// The elements `lo..hi` of the reduction left after the vector steps, one at a time,
/// added into the sums' slots.
fn remainder<'ctx>(
    e: &mut Emitter<'ctx, '_>,
    t: &Tile,
    ptrs: &[PointerValue<'ctx>],
    lo: IntValue<'ctx>,
    hi: IntValue<'ctx>,
    bf16: bool,
) -> Result<(), CodegenError> {
    let TileOut::Sums(sums) = &t.out else {
        return Ok(());
    };
    let ctx = e.ctx;
    let i64t = ctx.i64_type();
    let pre =
        e.b.get_insert_block()
            .ok_or_else(|| e.err("no insert block".into()))?;
    let header = ctx.append_basic_block(e.f, "dot.rest.header");
    let body = ctx.append_basic_block(e.f, "dot.rest.body");
    let done = ctx.append_basic_block(e.f, "dot.rest.done");
    e.b.build_unconditional_branch(header)?;
    e.b.position_at_end(header);
    let iv = e.b.build_phi(i64t, "dot.rest.iv")?;
    let k = iv.as_basic_value().into_int_value();
    let more = e.b.build_int_compare(IntPredicate::SLT, k, hi, "")?;
    e.b.build_conditional_branch(more, body, done)?;
    e.b.position_at_end(body);
    let mut vals = Vec::with_capacity(ptrs.len());
    for p in ptrs {
        vals.push(load_one(e, *p, k, bf16)?);
    }
    let n = t.n();
    for (j, &v) in sums.iter().enumerate() {
        let (slot, _) = e.var_slot(v)?;
        let cur = e.b.build_load(ctx.f32_type(), slot, "")?.into_float_value();
        let prod =
            e.b.build_float_mul(vals[j / n], vals[t.rows.len() + j % n], "")?;
        let sum = e.b.build_float_add(cur, prod, "")?;
        e.b.build_store(slot, sum)?;
    }
    let k_next = e.b.build_int_add(k, i64t.const_int(1, false), "")?;
    let latch =
        e.b.get_insert_block()
            .ok_or_else(|| e.err("no insert block".into()))?;
    e.b.build_unconditional_branch(header)?;
    iv.add_incoming(&[(&lo, pre), (&k_next, latch)]);
    e.b.position_at_end(done);
    Ok(())
}

/// Element `k` past `p` as f32 (bf16: its 16 bits moved to the top of the word).
fn load_one<'ctx>(
    e: &mut Emitter<'ctx, '_>,
    p: PointerValue<'ctx>,
    k: IntValue<'ctx>,
    bf16: bool,
) -> Result<FloatValue<'ctx>, CodegenError> {
    let ctx = e.ctx;
    let f32t = ctx.f32_type();
    if !bf16 {
        let at = unsafe { e.b.build_in_bounds_gep(f32t, p, &[k], "")? };
        return Ok(e.b.build_load(f32t, at, "")?.into_float_value());
    }
    let i16t = ctx.i16_type();
    let i32t = ctx.i32_type();
    let at = unsafe { e.b.build_in_bounds_gep(i16t, p, &[k], "")? };
    let raw = e.b.build_load(i16t, at, "")?.into_int_value();
    let wide = e.b.build_int_z_extend(raw, i32t, "")?;
    let bits = e.b.build_left_shift(wide, i32t.const_int(16, false), "")?;
    Ok(e.b.build_bit_cast(bits, f32t, "")?.into_float_value())
}
