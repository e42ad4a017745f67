//! Kernel generators that move whole rows: `last_row` copies the last row of a `[n, ...]`
//! activation (n symbolic) into a `[1, ...]` buffer, so that the final norm and the LM
//! head run for one token instead of `seq`; `append_rows` writes the new rows of a KV
//! cache that grows in place (`BufferKind::Append`), and `in_place_append` says which
//! nodes grow a cache that way.

use super::gen::{invalid, lp, Gen, NodeLowering};
use super::{ix, KernelError};
use crate::ir::{Graph, Io, NodeId, Op, Value};
use crate::kernel::build::{self, i, load};
use crate::kernel::{Expr, Kernel, LoopKind, Stmt, Ty};

/// `out[j] = x[(n - 1) * inner + j]` for `j < inner`, parallel over `j`.
pub(super) fn last_row(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let (mut g, ins) = Gen::with_operands(cx, &["x"])?;
    let ty = &ins[0].1;
    let Some((&rows, rest)) = ty.shape.split_first() else {
        return Err(invalid(cx.id, format!("`last_row` of a scalar {ty}")));
    };
    let inner = ix::prod(rest);
    let (xb, out) = (ins[0].0, g.out);
    let j = g.var("j", Ty::I64);
    let start = ix::mul(ix::sub(ix::dim(rows), i(1)), inner.clone());
    let copy = Stmt::Store {
        buf: out,
        index: build::var(j),
        value: load(xb, ix::add(start, build::var(j))),
    };
    g.push(lp(j, i(0), inner, LoopKind::Parallel, vec![copy]));
    Ok(g.finish())
}

/// The cache input that node `id` grows in place when lowered with
/// `KernelOptions::append_in_place`: the node appends to a cache (`norm_rope` with
/// `append`, its last operand; or `concat` along axis 0, its first operand), that operand
/// is a KV-cache input of the graph (`Io::Kv`), and the first graph output naming the node
/// is that same cache. The result buffer is then a `BufferKind::Append` of the input's buffer.
pub(super) fn in_place_append(graph: &Graph, id: NodeId) -> Option<NodeId> {
    let node = graph.nodes.get(id.0 as usize)?;
    let cache = match &node.op {
        Op::NormRope(n) if n.append => node.inputs.last()?,
        Op::Concat { axis: 0 } => node.inputs.first()?,
        _ => return None,
    };
    let Value::Node(c) = cache else {
        return None;
    };
    let Op::Input { io } = &graph.nodes.get(c.0 as usize)?.op else {
        return None;
    };
    let out = graph.outputs.iter().find(|o| o.node == id)?;
    (matches!(io, Io::Kv { .. }) && out.io == *io).then_some(*c)
}

/// `concat` along axis 0 of a cache `[past, ...]` and new rows `[n, ...]` into a result
/// that is the cache's memory grown in place (`BufferKind::Append`): only the new rows are
/// written, `out[(past + r) * inner + j] = new[r * inner + j]`, parallel over `r`.
pub(super) fn append_rows(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let (mut g, ins) = Gen::with_operands(cx, &["cache", "new"])?;
    let (ta, tb) = (&ins[0].1, &ins[1].1);
    let (Some((&old_rows, rest)), Some((&new_rows, _))) =
        (ta.shape.split_first(), tb.shape.split_first())
    else {
        return Err(invalid(cx.id, "`concat` of scalars"));
    };
    let inner = ix::prod(rest);
    let (new, out) = (ins[1].0, g.out);
    let r = g.var("r", Ty::I64);
    let j = g.var("j", Ty::I64);
    let row = |base: Expr| ix::mul(base, inner.clone());
    let copy = Stmt::Store {
        buf: out,
        index: ix::add(
            row(ix::add(ix::dim(old_rows), build::var(r))),
            build::var(j),
        ),
        value: load(new, ix::add(row(build::var(r)), build::var(j))),
    };
    let vector = LoopKind::Vector(g.schedule.vector);
    let inner_loop = lp(j, i(0), inner.clone(), vector, vec![copy]);
    g.push(lp(
        r,
        i(0),
        ix::dim(new_rows),
        LoopKind::Parallel,
        vec![inner_loop],
    ));
    Ok(g.finish())
}

#[cfg(test)]
mod tests {
    use super::super::{program_with, KernelOptions, Lowering};
    use crate::ir::{Io, Mode};
    use crate::kernel::interp::{run_program, KBufData, KData};
    use crate::kernel::verify::elem_count;
    use crate::kernel::{BufferKind, Elem, Program};
    use crate::lower::{lower_with, Logits, Options};
    use crate::testing;
    use archc_spec::Spec;
    use std::collections::BTreeMap;

    /// Deterministic values in [-0.5, 0.5) from an index and a salt.
    fn value(i: usize, salt: usize) -> f32 {
        let h = (i as u64 ^ (salt as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((h >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    /// Runs `p` for `seq` tokens after `past` cached ones with made-up weights and cache.
    fn run(p: &Program, seq: usize, past: usize) -> BTreeMap<String, KData> {
        let toks: Vec<i32> = (0..seq).map(|t| (t * 7 % 11) as i32).collect();
        let pos: Vec<i32> = (past..past + seq).map(|x| x as i32).collect();
        let mut owned: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for (bi, b) in p.buffers.iter().enumerate() {
            let fill = matches!(&b.kind, BufferKind::Param)
                || matches!(&b.kind, BufferKind::Input(io) if io.is_carried());
            if fill {
                assert_eq!(b.elem, Elem::F32, "{}", b.name);
                let n = elem_count(b, seq, past).expect("small sizes");
                owned.insert(b.name.clone(), (0..n).map(|i| value(i, bi)).collect());
            }
        }
        let mut inputs = BTreeMap::new();
        for b in &p.buffers {
            let view = match &b.kind {
                BufferKind::Input(Io::Tokens) => KBufData::I32Ro(&toks),
                BufferKind::Input(Io::Positions) => KBufData::I32Ro(&pos),
                BufferKind::Param | BufferKind::Input(_) => KBufData::F32Ro(&owned[&b.name]),
                _ => continue,
            };
            inputs.insert(b.name.clone(), view);
        }
        run_program(p, inputs, seq as i64, past as i64, 2)
            .unwrap_or_else(|e| panic!("{}: {e}", p.name))
    }

    fn programs(spec: &Spec, mode: Mode) -> (Program, Program) {
        let g = lower_with(spec, mode, &Options::default()).expect("lowers");
        let g = crate::passes::optimize(&g);
        let copy = program_with(&g, &Lowering::default()).expect("kernels");
        let in_place = Lowering {
            options: KernelOptions {
                append_in_place: true,
                ..KernelOptions::default()
            },
            ..Lowering::default()
        };
        let in_place = program_with(&g, &in_place).expect("kernels in place");
        (copy, in_place)
    }

    /// Appending in place computes exactly what appending by copy computes (logits and the
    /// grown caches), for plain GQA, LayerNorm with learned positions, and MLA's latent
    /// cache, in decode and in a prefill after cached tokens; every cache output is an
    /// append of its input.
    #[test]
    fn in_place_append_matches_the_copy() {
        let ffn = testing::swiglu(24);
        for spec in [
            testing::llama(ffn.clone()),
            testing::gpt2(ffn.clone()),
            testing::mla(ffn),
        ] {
            for (mode, seq, past) in [(Mode::Decode, 1, 3), (Mode::Prefill, 3, 2)] {
                let (copy, in_place) = programs(&spec, mode);
                let appends = in_place
                    .buffers
                    .iter()
                    .filter(|b| matches!(b.kind, BufferKind::Append { .. }))
                    .count();
                let caches = copy
                    .buffers
                    .iter()
                    .filter(|b| matches!(&b.kind, BufferKind::Output(io) if io.is_carried()))
                    .count();
                assert!(
                    caches > 0 && appends == caches,
                    "{}: {appends} of {caches}",
                    copy.name
                );
                assert!(in_place.to_string().contains("append to cache.0."));
                let (a, b) = (run(&copy, seq, past), run(&in_place, seq, past));
                assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
                for (name, x) in &a {
                    let (x, y) = (x.to_f32(), b[name].to_f32());
                    assert!(
                        x.len() == y.len()
                            && x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                        "{}: `{name}` differs with the cache appended in place",
                        copy.name
                    );
                }
            }
        }
    }

    /// With `Logits::Last` a prefill's logits are one row, the last row of the full
    /// prefill's (the kernel interpreter computes each row the same way).
    #[test]
    fn last_row_logits_are_the_last_row() {
        let spec = testing::llama(testing::swiglu(24));
        let full = lower_with(&spec, Mode::Prefill, &Options::default()).expect("lowers");
        let last = Options {
            logits: Logits::Last,
        };
        let last = lower_with(&spec, Mode::Prefill, &last).expect("lowers");
        crate::verify(&last).expect("verifies");
        assert!(last.to_string().contains("last_row"));
        let p = |g| program_with(&crate::passes::optimize(g), &Lowering::default());
        let (full, last) = (p(&full).expect("kernels"), p(&last).expect("kernels"));
        let (a, b) = (
            run(&full, 4, 0)["logits"].to_f32(),
            run(&last, 4, 0)["logits"].to_f32(),
        );
        let vocab = b.len();
        assert_eq!(a.len(), 4 * vocab);
        assert!(a[3 * vocab..]
            .iter()
            .zip(&b)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
