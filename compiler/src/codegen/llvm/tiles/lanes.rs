//! Tokens-in-lanes tiles on the CPU: a tile of 16 lanes whose rows are bf16 pairs
//! interleaved across the lanes (`[k/2][16][2]` per group) and whose columns are bf16
//! weight rows, its sums stored as f32. Each (group, column) sum is one `<16 x float>`
//! register for the whole reduction, lane `l` holding token `l`'s sum: per pair of the
//! reduction, the 32 activations of the group load as one vector and the column's
//! weight pair is broadcast to every lane; with AVX512-BF16 one `vdpbf16ps` adds the
//! products, elsewhere the even and odd bf16 of both widen to f32 and two fused
//! multiply-adds follow (the products are exact in f32 either way; only the summation
//! order differs, which a tile allows). No horizontal sums are needed; each register is
//! stored once at the end.

use crate::codegen::body::Emitter;
use crate::codegen::CodegenError;
use crate::kernel::{Tile, TileOut};
use inkwell::builder::BuilderError;
use inkwell::intrinsics::Intrinsic;
use inkwell::types::VectorType;
use inkwell::values::{BasicValue, BasicValueEnum};
use inkwell::IntPredicate;

/// Lowers `t` (16 lanes, bf16 operands, sums stored into f32).
pub(super) fn lane_tile<'ctx>(
    e: &mut Emitter<'ctx, '_>,
    t: &Tile,
    bf16_dot: bool,
) -> Result<(), CodegenError> {
    let TileOut::Store { buf: out, bases } = &t.out else {
        return Err(e.err("a tokens-in-lanes tile stores its sums".into()));
    };
    let lanes = u64::from(t.lanes);
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
    // Group and column pointers at their bases.
    let mut groups = Vec::with_capacity(t.rows.len());
    for r in &t.rows {
        let (ptr, _, _) = e.buf(r.buf)?;
        let at = e.int(&r.base, "tile base")?;
        groups.push(unsafe { e.b.build_in_bounds_gep(i16t, ptr, &[at], "group")? });
    }
    let mut cols = Vec::with_capacity(t.cols.len());
    for c in &t.cols {
        let (ptr, _, _) = e.buf(c.buf)?;
        let at = e.int(&c.base, "tile base")?;
        cols.push(unsafe { e.b.build_in_bounds_gep(i16t, ptr, &[at], "col")? });
    }
    // The reduction in pairs: `start / 2 .. end / 2` (the verifier keeps both even).
    let two = i64t.const_int(2, false);
    let start = e.int(&t.start, "tile start")?;
    let end = e.int(&t.end, "tile end")?;
    let lo = e.b.build_int_signed_div(start, two, "")?;
    let hi = e.b.build_int_signed_div(end, two, "")?;
    let pre =
        e.b.get_insert_block()
            .ok_or_else(|| e.err("no insert block".into()))?;
    let header = ctx.append_basic_block(e.f, "lanes.header");
    let body = ctx.append_basic_block(e.f, "lanes.body");
    let done = ctx.append_basic_block(e.f, "lanes.done");
    e.b.build_unconditional_branch(header)?;

    e.b.position_at_end(header);
    let iv = e.b.build_phi(i64t, "lanes.iv")?;
    let n = cols.len();
    let accs: Vec<_> = (0..groups.len() * n)
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
    let kp = iv.as_basic_value().into_int_value();
    // Pair `kp` of every lane: 32 bf16 at `kp * 2 * lanes` past the group's base.
    let at_group =
        e.b.build_int_mul(kp, i64t.const_int(2 * lanes, false), "")?;
    let mut xs = Vec::with_capacity(groups.len());
    for g in &groups {
        let p = unsafe { e.b.build_in_bounds_gep(i16t, *g, &[at_group], "")? };
        let v = e.b.build_load(v32i, p, "")?;
        if let Some(inst) = v.as_instruction_value() {
            let _ = inst.set_alignment(2);
        }
        xs.push(v.into_vector_value());
    }
    // The column's weight pair `kp` as one 32-bit word in every lane.
    let at_col = e.b.build_int_mul(kp, two, "")?;
    let mut ws = Vec::with_capacity(n);
    for c in &cols {
        let p = unsafe { e.b.build_in_bounds_gep(i16t, *c, &[at_col], "")? };
        let w = e.b.build_load(i32t, p, "")?;
        if let Some(inst) = w.as_instruction_value() {
            let _ = inst.set_alignment(2);
        }
        let zero = v16i.const_zero();
        let v =
            e.b.build_insert_element(zero, w.into_int_value(), i32t.const_zero(), "")?;
        let splat = e.b.build_shuffle_vector(v, zero, v16i.const_zero(), "")?;
        ws.push(e.b.build_bit_cast(splat, v32i, "")?.into_vector_value());
    }
    let shift = VectorType::const_vector(&[i32t.const_int(16, false); 16]);
    let high = VectorType::const_vector(&[i32t.const_int(0xffff_0000, false); 16]);
    let mut next = Vec::with_capacity(accs.len());
    for (j, acc) in accs.iter().enumerate() {
        let acc = acc.as_basic_value();
        let (x, w) = (xs[j / n], ws[j % n]);
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
    let k_next = e.b.build_int_add(kp, i64t.const_int(1, false), "")?;
    let latch =
        e.b.get_insert_block()
            .ok_or_else(|| e.err("no insert block".into()))?;
    e.b.build_unconditional_branch(header)?;
    iv.add_incoming(&[(&lo, pre), (&k_next, latch)]);
    let zero = v16f.const_zero();
    for (acc, nx) in accs.iter().zip(&next) {
        acc.add_incoming(&[(&zero, pre), (nx, latch)]);
    }

    e.b.position_at_end(done);
    let (ptr, _, _) = e.buf(*out)?;
    for (acc, base) in accs.iter().zip(bases) {
        let at = e.int(base, "store base")?;
        let p = unsafe { e.b.build_in_bounds_gep(f32t, ptr, &[at], "")? };
        let s = e.b.build_store(p, acc.as_basic_value())?;
        let _ = s.set_alignment(4);
    }
    Ok(())
}
