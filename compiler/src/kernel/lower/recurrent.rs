//! Kernel generators for the linear-attention mixers (Gated DeltaNet, Kimi Delta
//! Attention): `Op::DepthwiseConv`, `Op::DecayGate`, `Op::DeltaRule`, and the row views
//! `Op::TailRows` / `Op::DropTailRows` through which the graph hands their state on.
//!
//! Each computes what the graph interpreter computes (`interp/linear.rs`), operation for
//! operation in f32 (the interpreter's decay gate rounds once from f64):
//!
//! - the convolution is parallel over output rows, vector over channels, its `K` taps
//!   summed in order;
//! - the decay gate is an elementwise kernel over `a` with its operands broadcast;
//! - the delta rule runs token by token (the recurrence; prefill's chunked form is the
//!   same sums reassociated), parallel over value heads: each head's `[dk, dv]` state
//!   lives in a scratch of its thread, copied in from the state operand and out into the
//!   result's state rows at the end.

use super::gen::{exp, gt, konst, neg, Gen, NodeLowering};
use super::ix;
use super::KernelError;
use crate::ir::{Dim, Op};
use crate::kernel::build::{self, add, f, i, load, mul, select, sub, un, var};
use crate::kernel::{BufId, Elem, Expr, Kernel, LoopKind, Stmt, Ty, UnOp};

/// The kernels of the linear-attention ops.
pub(super) fn kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    match &cx.node().op {
        Op::TailRows { n } => rows(cx, *n, true),
        Op::DropTailRows { n } => rows(cx, *n, false),
        Op::DepthwiseConv => depthwise_conv(cx),
        Op::DecayGate => decay_gate(cx),
        Op::DeltaRule => delta_rule(cx),
        op => Err(KernelError::Unsupported {
            node: cx.id.0,
            op: crate::ir::op_text(op),
        }),
    }
}

/// The last `n` rows of `x [m, ...]` (`tail`), or all but them: one parallel copy.
fn rows(cx: &NodeLowering, n: u64, tail: bool) -> Result<Kernel, KernelError> {
    let (mut g, ins) = Gen::with_operands(cx, &["x"])?;
    let Some((&m, rest)) = ins[0].1.shape.split_first() else {
        return Err(g.invalid(format!("rows of a scalar {}", ins[0].1)));
    };
    let inner = ix::prod(rest);
    let (xb, out) = (ins[0].0, g.out);
    let (from, count) = if tail {
        (ix::sub(ix::dim(m), i(n as i64)), i(n as i64))
    } else {
        (i(0), ix::sub(ix::dim(m), i(n as i64)))
    };
    let start = g.let_("start", Ty::I64, ix::mul(from, inner.clone()));
    g.for_(
        "j",
        i(0),
        ix::mul(count, inner),
        1,
        LoopKind::Parallel,
        |g, j| {
            g.store(out, j.clone(), load(xb, add(start, j)));
        },
    );
    Ok(g.finish())
}

/// `y[t, c] = Σ_j w[c, 0, j] * x[t + j, c]`: parallel over the `m - K + 1` output rows.
fn depthwise_conv(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let (mut g, ins) = Gen::with_operands(cx, &["x", "w"])?;
    let id = cx.id;
    let c = match ins[0].1.shape.as_slice() {
        [_, c] => konst(id, *c, "channels")?,
        _ => return Err(g.invalid(format!("depthwise_conv of x {}", ins[0].1))),
    };
    let k = match ins[1].1.shape.as_slice() {
        [wc, one, k] if konst(id, *wc, "w channels")? == c && konst(id, *one, "w dim 1")? == 1 => {
            konst(id, *k, "taps")?
        }
        _ => return Err(g.invalid(format!("depthwise_conv weights {}", ins[1].1))),
    };
    let rows = g.out_shape[0];
    let (xb, wb, out) = (ins[0].0, ins[1].0, g.out);
    let vector = g.schedule.vector;
    g.for_("t", i(0), ix::dim(rows), 1, LoopKind::Parallel, |g, t| {
        let xbase = g.let_("xbase", Ty::I64, mul(t.clone(), i(c as i64)));
        g.for_(
            "c",
            i(0),
            i(c as i64),
            1,
            LoopKind::Vector(vector),
            |g, ch| {
                let taps = (0..k as i64).map(|j| {
                    mul(
                        load(wb, add(mul(ch.clone(), i(k as i64)), i(j))),
                        load(xb, add(add(xbase.clone(), i(j * c as i64)), ch.clone())),
                    )
                });
                let y = taps.fold(f(0.0), add);
                g.store(out, add(xbase.clone(), ch), y);
            },
        );
    });
    Ok(g.finish())
}

/// `g = -exp(a_log) * softplus(a + dt_bias)`, torch's softplus (linear above 20).
fn decay_gate(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let (mut g, _) = Gen::with_operands(cx, &["a", "a_log", "dt_bias"])?;
    g.broadcast(&[0, 1, 2], |g, v| {
        let x = g.k.var("x", Ty::F32);
        let st = vec![Stmt::Let {
            var: x,
            value: add(v[0].clone(), v[2].clone()),
        }];
        let soft = select(
            gt(var(x), f(20.0)),
            var(x),
            un(UnOp::Log, add(f(1.0), exp(var(x)))),
        );
        (st, mul(neg(exp(v[1].clone())), soft))
    })?;
    Ok(g.finish())
}

/// `for e in 0..dv` as a vector loop.
fn columns(g: &mut Gen, dv: u64, body: impl FnOnce(&mut Gen, Expr)) {
    let vector = g.schedule.vector;
    g.for_("e", i(0), i(dv as i64), 1, LoopKind::Vector(vector), body);
}

/// `Σ_i s[i, e] * x[xbase + i]` over the `dk` rows of a head's scratch state `s`.
fn state_dot(
    g: &mut Gen,
    name: &str,
    s: BufId,
    (e, dv, dk): (&Expr, u64, u64),
    x: BufId,
    xbase: &Expr,
) -> Expr {
    let acc = g.local(name, Ty::F32, f(0.0));
    g.range("i", i(dk as i64), |g, row| {
        let at = add(mul(row.clone(), i(dv as i64)), e.clone());
        let term = mul(load(s, at), load(x, add(xbase.clone(), row)));
        g.set(acc, add(var(acc), term));
    });
    var(acc)
}

/// The gated delta rule (`Op::DeltaRule`): parallel over value heads, token by token.
fn delta_rule(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let names = ["q", "k", "v", "g", "beta", "state"];
    let (mut g, ins) = Gen::with_operands(cx, &names)?;
    let id = cx.id;
    let dims3 = |t: &crate::ir::Type, what: &str| -> Result<(Dim, u64, u64), KernelError> {
        match t.shape.as_slice() {
            [a, b, c] => Ok((*a, konst(id, *b, what)?, konst(id, *c, what)?)),
            _ => Err(super::gen::invalid(id, format!("delta_rule {what} {t}"))),
        }
    };
    let (s, hk, dk) = dims3(&ins[0].1, "q")?;
    let (_, h, dv) = dims3(&ins[2].1, "v")?;
    if hk == 0 || h % hk != 0 {
        return Err(g.invalid(format!("delta_rule with {hk} key heads, {h} value heads")));
    }
    let per_channel = ins[3].1.shape.len() == 3;
    let group = h / hk;
    let [qb, kb, vb, gb, bb, sb] = [0, 1, 2, 3, 4, 5].map(|j| ins[j].0);
    let out = g.out;
    let u = g.scratch("u", Elem::F32, dv);
    let sc = g.scratch("s", Elem::F32, dk * dv);
    let (hv, dvi) = (i(h as i64), i(dv as i64));
    let seq = ix::dim(s);
    // State element (row i, column e) of the head in scratch.
    let st_at = |row: Expr, e: Expr| add(mul(row, dvi.clone()), e);
    // Element (row i, column e) of head `head` in the `[dk, H, dv]` state layout, starting
    // at row `first` of a buffer.
    let layout = |first: Expr, head: &Expr, row: Expr, e: Expr| {
        let r = ix::add(ix::mul(ix::add(first, row), hv.clone()), head.clone());
        ix::add(ix::mul(r, dvi.clone()), e)
    };
    g.for_(
        "head",
        i(0),
        hv.clone(),
        1,
        LoopKind::Parallel,
        |g, head| {
            // The state operand's rows of this head into the scratch state.
            g.range("i", i(dk as i64), |g, row| {
                columns(g, dv, |g, e| {
                    let from = layout(i(0), &head, row.clone(), e.clone());
                    g.store(sc, st_at(row.clone(), e), load(sb, from));
                });
            });
            let kh = g.let_("kh", Ty::I64, build::div(head.clone(), i(group as i64)));
            g.range("t", seq.clone(), |g, t| {
                let th = g.let_("th", Ty::I64, add(mul(t.clone(), hv.clone()), head.clone()));
                let qk = g.let_(
                    "qk",
                    Ty::I64,
                    mul(add(mul(t.clone(), i(hk as i64)), kh.clone()), i(dk as i64)),
                );
                // S = exp(g) * S, row by row.
                let gh =
                    (!per_channel).then(|| g.let_("decay", Ty::F32, exp(load(gb, th.clone()))));
                g.range("i", i(dk as i64), |g, row| {
                    let decay = match &gh {
                        Some(d) => d.clone(),
                        None => {
                            let at = add(mul(th.clone(), i(dk as i64)), row.clone());
                            g.let_("decay", Ty::F32, exp(load(gb, at)))
                        }
                    };
                    columns(g, dv, |g, e| {
                        let at = st_at(row.clone(), e);
                        g.store(sc, at.clone(), mul(load(sc, at), decay));
                    });
                });
                // u = beta * (v - Sᵀ k)
                let beta = g.let_("beta", Ty::F32, load(bb, th.clone()));
                g.range("e", dvi.clone(), |g, e| {
                    let kv = state_dot(g, "kv", sc, (&e, dv, dk), kb, &qk);
                    let ve = load(vb, add(mul(th.clone(), dvi.clone()), e.clone()));
                    g.store(u, e, mul(sub(ve, kv), beta.clone()));
                });
                // S = S + k uᵀ
                g.range("i", i(dk as i64), |g, row| {
                    let ki = g.let_("ki", Ty::F32, load(kb, add(qk.clone(), row.clone())));
                    columns(g, dv, |g, e| {
                        let at = st_at(row.clone(), e.clone());
                        g.store(sc, at.clone(), add(load(sc, at), mul(ki, load(u, e))));
                    });
                });
                // o = Sᵀ q
                g.range("e", dvi.clone(), |g, e| {
                    let o = state_dot(g, "o", sc, (&e, dv, dk), qb, &qk);
                    g.store(out, add(mul(th.clone(), dvi.clone()), e), o);
                });
            });
            // The final state into the result's state rows.
            g.range("i", i(dk as i64), |g, row| {
                columns(g, dv, |g, e| {
                    let to = layout(seq.clone(), &head, row.clone(), e.clone());
                    g.store(out, to, load(sc, st_at(row.clone(), e)));
                });
            });
        },
    );
    Ok(g.finish())
}
