//! The fused QK-norm + RoPE + KV-cache append (`Op::NormRope`): each new row of q or k is
//! normalised per head (RMSNorm or LayerNorm, optional weight and bias), rotated, and
//! written after the cached rows; with the cache grown in place only the new rows are
//! written.

use super::super::gen::{invalid, lt};
use super::super::gen::{to_f32, Gen, NodeLowering};
use super::super::ix::dim_seq_first as dim;
use super::super::norm::norm_apply;
use super::super::KernelError;
use super::rank3;
use crate::ir::{NormKind, NormRopeOp, Op};
use crate::kernel::build::{add, div, f, i, load, mul, past, sub, un, var};
use crate::kernel::{BufId, Elem, Expr, Kernel, LoopKind, Ty, UnOp};
use archc_spec::Pairing;

/// Element `c` of one head after the norm (the identity when `inv` is `None`).
struct NormAt {
    xb: BufId,
    base: Expr,
    mean: Option<Expr>,
    inv: Option<Expr>,
    weight: Option<BufId>,
    bias: Option<BufId>,
    plus_one: bool,
}

impl NormAt {
    fn at(&self, c: Expr) -> Expr {
        let x = load(self.xb, add(self.base.clone(), c.clone()));
        match &self.inv {
            Some(inv) => norm_apply(
                self.plus_one,
                x,
                (&self.mean, inv),
                (self.weight, self.bias),
                c,
            ),
            None => x,
        }
    }
}

/// `Op::NormRope`: operands x `[s, heads, d]`, positions `[s]`, the norm weight and bias
/// when the norm has them, the cache `[past, heads, d]` when appending. The parallel axis
/// is the result's rows: with `append`, rows below `past` copy the cache and the others
/// are the new rows `[past + t]`.
///
/// The inverse frequencies are the interpreter's table (`ir::rope::inv_freq`) as f32
/// literals, stored into a scratch table once per thread; angles are `inv_freq * p` in
/// f32 and cos/sin are multiplied by the attention factor, as the interpreter does.
pub(in crate::kernel::lower) fn norm_rope(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    match &cx.node().op {
        Op::NormRope(op) => norm_rope_with(cx, op, false),
        op => Err(KernelError::Unsupported {
            node: cx.id.0,
            op: crate::ir::op_text(op),
        }),
    }
}

/// `Op::NormRope` with `append` whose result is a `BufferKind::Append` of its cache
/// operand: the result's rows below `past` are the cache's own memory, so the kernel
/// writes only the `seq` new rows `[past + t]` and never reads the cache (no O(past) copy
/// per token).
pub(in crate::kernel::lower) fn norm_rope_in_place(
    cx: &NodeLowering,
) -> Result<Kernel, KernelError> {
    match &cx.node().op {
        Op::NormRope(op) if op.append => norm_rope_with(cx, op, true),
        _ => Err(invalid(
            cx.id,
            "an in-place append needs a norm_rope that appends",
        )),
    }
}

fn norm_rope_with(
    cx: &NodeLowering,
    op: &NormRopeOp,
    in_place: bool,
) -> Result<Kernel, KernelError> {
    let id = cx.id;
    let mut names = vec!["x", "positions"];
    if op.norm.is_some_and(|n| n.weight) {
        names.push("norm_w");
    }
    if op.norm.is_some_and(|n| n.bias) {
        names.push("norm_b");
    }
    if op.append {
        names.push("cache");
    }
    let (mut g, ins) = Gen::with_operands(cx, &names)?;
    let (xb, pb) = (ins[0].0, ins[1].0);
    let (s, heads, d) = rank3(id, &ins[0].1, "x")?;
    let mut next = 2;
    let mut take = |has: bool| {
        has.then(|| {
            next += 1;
            ins[next - 1].0
        })
    };
    let nw = take(op.norm.is_some_and(|n| n.weight));
    let nb = take(op.norm.is_some_and(|n| n.bias));
    let cache = take(op.append);
    let (inv_freq, factor) = crate::ir::rope::inv_freq(&op.rope);
    let half = inv_freq.len() as u64;
    if 2 * half > d {
        return Err(invalid(
            id,
            format!("rope rotates {} dims of heads of {d}", op.rope.dims),
        ));
    }
    let out = g.out;
    let rows_out = g.out_shape.first().copied().unwrap_or(s);
    let freq = g.scratch("inv_freq", Elem::F32, half);
    let cos = g.scratch("cos", Elem::F32, half);
    let sin = g.scratch("sin", Elem::F32, half);
    for (n, fr) in inv_freq.iter().enumerate() {
        g.store(freq, i(n as i64), f(*fr as f32));
    }
    let width = heads * d;
    let w = i(width as i64);

    let new_row = |g: &mut Gen, r: Expr, t: Expr| {
        let p = g.let_("p", Ty::F32, to_f32(load(pb, t.clone())));
        g.range("f", i(half as i64), |g, k| {
            let ang = g.let_("ang", Ty::F32, mul(load(freq, k.clone()), p));
            let (mut c, mut sn) = (un(UnOp::Cos, ang.clone()), un(UnOp::Sin, ang));
            if factor != 1.0 {
                c = mul(c, f(factor as f32));
                sn = mul(sn, f(factor as f32));
            }
            g.store(cos, k.clone(), c);
            g.store(sin, k, sn);
        });
        g.range("hd", i(heads as i64), |g, hd| {
            let xbase = g.let_(
                "xbase",
                Ty::I64,
                mul(add(mul(t, i(heads as i64)), hd.clone()), i(d as i64)),
            );
            let obase = g.let_(
                "obase",
                Ty::I64,
                mul(add(mul(r, i(heads as i64)), hd), i(d as i64)),
            );
            let mut na = NormAt {
                xb,
                base: xbase.clone(),
                mean: None,
                inv: None,
                weight: nw,
                bias: nb,
                plus_one: op.norm.is_some_and(|n| n.plus_one),
            };
            if let Some(n) = op.norm {
                let dn = f(d as f32);
                if n.kind == NormKind::Layer {
                    let sum = g.local("sum", Ty::F32, f(0.0));
                    g.for_("c", i(0), i(d as i64), 1, LoopKind::Vector(8), |g, c| {
                        g.set(sum, add(var(sum), load(xb, add(xbase.clone(), c))));
                    });
                    na.mean = Some(g.let_("mean", Ty::F32, div(var(sum), dn.clone())));
                }
                let ss = g.local("ss", Ty::F32, f(0.0));
                g.for_("c", i(0), i(d as i64), 1, LoopKind::Vector(8), |g, c| {
                    let x = load(xb, add(xbase.clone(), c));
                    let v = match &na.mean {
                        Some(m) => sub(x, m.clone()),
                        None => x,
                    };
                    let v = g.let_("v", Ty::F32, v);
                    g.set(ss, add(var(ss), mul(v.clone(), v)));
                });
                na.inv = Some(g.let_(
                    "inv",
                    Ty::F32,
                    div(
                        f(1.0),
                        un(UnOp::Sqrt, add(div(var(ss), dn), f(n.eps as f32))),
                    ),
                ));
            }
            let nv = |c: Expr| na.at(c);
            g.range("k", i(half as i64), |g, k| {
                let (i1, i2) = match op.rope.pairing {
                    Pairing::Half => (k.clone(), add(k.clone(), i(half as i64))),
                    Pairing::Interleaved => (mul(k.clone(), i(2)), add(mul(k.clone(), i(2)), i(1))),
                };
                let i1 = g.let_("i1", Ty::I64, i1);
                let i2 = g.let_("i2", Ty::I64, i2);
                let x1 = g.let_("x1", Ty::F32, nv(i1.clone()));
                let x2 = g.let_("x2", Ty::F32, nv(i2.clone()));
                let c = g.let_("cs", Ty::F32, load(cos, k.clone()));
                let sn = g.let_("sn", Ty::F32, load(sin, k));
                g.store(
                    out,
                    add(obase.clone(), i1),
                    sub(mul(x1.clone(), c.clone()), mul(x2.clone(), sn.clone())),
                );
                g.store(out, add(obase.clone(), i2), add(mul(x2, c), mul(x1, sn)));
            });
            if 2 * half < d {
                g.for_(
                    "c",
                    i(2 * half as i64),
                    i(d as i64),
                    1,
                    LoopKind::Serial,
                    |g, c| {
                        g.store(out, add(obase, c.clone()), nv(c));
                    },
                );
            }
        });
    };

    if in_place {
        g.for_("t", i(0), dim(s), 1, LoopKind::Parallel, |g, t| {
            let r = g.let_("r", Ty::I64, add(past(), t.clone()));
            new_row(g, r, t);
        });
        return Ok(g.finish());
    }
    g.for_(
        "r",
        i(0),
        dim(rows_out),
        1,
        LoopKind::Parallel,
        |g, r| match cache {
            Some(cb) => g.if_(
                lt(r.clone(), past()),
                |g| {
                    let base = g.let_("base", Ty::I64, mul(r.clone(), w.clone()));
                    g.for_("c", i(0), w.clone(), 1, LoopKind::Vector(8), |g, c| {
                        let at = add(base, c);
                        g.store(out, at.clone(), load(cb, at));
                    });
                },
                |g| {
                    let t = g.let_("t", Ty::I64, sub(r.clone(), past()));
                    new_row(g, r.clone(), t);
                },
            ),
            None => new_row(g, r.clone(), r),
        },
    );
    Ok(g.finish())
}
