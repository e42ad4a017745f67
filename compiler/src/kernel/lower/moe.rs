//! Kernel generators for mixture-of-experts ops: `Op::ExpertMatMul`, `Op::RouterSelect`,
//! `Op::RouterWeights` and the fused `Op::Moe` (see `mod.rs` for the buffer convention).
//!
//! Routing follows the interpreter exactly: scores (softmax or sigmoid), the correction
//! bias for selection only, group-limited selection (a group's score is the sum of its two
//! best scores; the best `keep` groups stay eligible), and top-k by repeated arg-max, where
//! a strict `>` keeps the lowest index among equal scores — the interpreter's stable sort.
//! Ineligible experts score `f32::MIN` (the interpreter's `-inf`), so they still come last
//! in index order if `k` exceeds the eligible experts.
//!
//! **Parallel axes.** The router kernels and the fused MoE run in parallel over tokens:
//! each token's experts, activations and weighted sum stay in one thread's scratch, so no
//! partial sums cross threads. A decode step (one token) therefore runs the fused MoE on
//! one thread; splitting it over output features would need the expert activations of
//! every feature, i.e. a second kernel, which is left to the speed milestone.
//! `ExpertMatMul` runs in parallel over (token, slot, output feature) triples.

use super::elementwise::unary_expr;
use super::gen::{and, exp, gt, invalid, konst, lt, max, min, neg, or, sigmoid};
use super::gen::{Gen, NodeLowering};
use super::ix::dim_seq_first as dim;
use super::KernelError;
use crate::ir::{ExpertAct, MoeOp, NodeId, Op, RouterSelectOp, RouterWeightsOp, UnaryOp};
use crate::kernel::build::{add, div, f, i, load, mul, select, sub, var};
use crate::kernel::{BufId, Elem, Expr, Kernel, LoopKind, Ty};
use archc_spec::RouterScore;

/// The kernels of `ExpertMatMul`, `RouterSelect`, `RouterWeights` and `Moe` nodes.
pub(super) fn kernel(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    match &cx.node().op {
        Op::ExpertMatMul => expert_matmul(cx),
        Op::RouterSelect(r) => router_select(cx, *r),
        Op::RouterWeights(r) => router_weights(cx, *r),
        Op::Moe(m) => moe(cx, m),
        op => Err(KernelError::Unsupported {
            node: cx.id.0,
            op: crate::ir::op_text(op),
        }),
    }
}

/// Ineligible experts' score: below every real score, and finite.
const MASKED: f32 = f32::MIN;

/// `[rows, cols]` with constant `cols`.
fn rank2(
    id: NodeId,
    t: &crate::ir::Type,
    what: &str,
) -> Result<(crate::ir::Dim, u64), KernelError> {
    match t.shape.as_slice() {
        [a, b] => Ok((*a, konst(id, *b, &format!("{what} dim 1"))?)),
        _ => Err(invalid(id, format!("{what} must have rank 2, found {t}"))),
    }
}

/// An expert index read from a buffer, clamped into `0..e` so that a corrupt index can
/// never address memory outside the weights (the interpreter reports it as an error).
fn clamp_index(x: Expr, e: u64) -> Expr {
    min(max(x, i(0)), i(e as i64 - 1))
}

/// The elementwise activation `u(x)` of an expert, as the matmul epilogues compute it,
/// its input bound first.
fn unary(g: &mut Gen, u: UnaryOp, x: Expr) -> Expr {
    let x = g.let_("ax", Ty::F32, x);
    let (st, y) = unary_expr(&mut g.k, u, x);
    g.extend(st);
    y
}

/// GPT-OSS's clamped SwiGLU: `(clamp(u, ±limit) + 1) * g * sigmoid(alpha * g)`, `g =
/// min(gate, limit)`. The same value as `elementwise::clamped_swiglu_expr`, in the form
/// the MoE kernels have always printed (changing it would rename every GPT-OSS expert
/// kernel).
fn clamped_swiglu(g: &mut Gen, alpha: f64, limit: f64, gate: Expr, up: Expr) -> Expr {
    let lim = f(limit as f32);
    let gv = g.let_("g", Ty::F32, min(gate, lim.clone()));
    let uv = min(max(up, neg(lim.clone())), lim);
    mul(
        mul(add(uv, f(1.0)), gv.clone()),
        sigmoid(mul(f(alpha as f32), gv)),
    )
}

/// Write `score(value(e))` for `e < n` into `dst[e]`: softmax over the `n` values or an
/// elementwise sigmoid.
fn score(g: &mut Gen, kind: RouterScore, n: u64, value: &dyn Fn(Expr) -> Expr, dst: BufId) {
    match kind {
        RouterScore::Sigmoid => g.range("e", i(n as i64), |g, e| {
            g.store(dst, e.clone(), sigmoid(value(e)));
        }),
        RouterScore::Softmax => {
            let mx = g.local("mx", Ty::F32, value(i(0)));
            g.for_("e", i(1), i(n as i64), 1, LoopKind::Serial, |g, e| {
                g.set(mx, max(var(mx), value(e)));
            });
            let sum = g.local("sum", Ty::F32, f(0.0));
            g.range("e", i(n as i64), |g, e| {
                let x = g.let_("ex", Ty::F32, exp(sub(value(e.clone()), var(mx))));
                g.store(dst, e, x.clone());
                g.set(sum, add(var(sum), x));
            });
            g.range("e", i(n as i64), |g, e| {
                g.store(dst, e.clone(), div(load(dst, e), var(sum)));
            });
        }
    }
}

/// The index in `0..n` with the largest `value` (lowest index among equals) among those
/// whose flag in `taken` is clear; sets its flag and returns it.
fn arg_max(g: &mut Gen, n: u64, value: &dyn Fn(Expr) -> Expr, taken: BufId) -> Expr {
    let best = g.local("best", Ty::I64, i(-1));
    let bv = g.local("bv", Ty::F32, f(0.0));
    g.range("e", i(n as i64), |g, e| {
        let v = g.let_("v", Ty::F32, value(e.clone()));
        let better = and(
            lt(load(taken, e.clone()), f(0.5)),
            or(lt(var(best), i(0)), gt(v.clone(), var(bv))),
        );
        let better = g.let_("better", Ty::Bool, better);
        g.set(best, select(better.clone(), e, var(best)));
        g.set(bv, select(better, v, var(bv)));
    });
    // `n >= 1` and at most `n` picks happen, so an unflagged index always exists.
    let b = g.let_("pick", Ty::I64, max(var(best), i(0)));
    g.store(taken, b.clone(), f(1.0));
    b
}

/// Scratch buffers of the expert selection.
struct SelectScratch {
    choice: BufId,
    taken: BufId,
    /// Group scores and kept flags, with group-limited routing.
    groups: Option<(BufId, BufId)>,
}

fn select_scratch(g: &mut Gen, r: &RouterSelectOp, e: u64) -> SelectScratch {
    SelectScratch {
        choice: g.scratch("choice", Elem::F32, e),
        taken: g.scratch("taken", Elem::F32, e),
        groups: r.groups.map(|(count, _)| {
            (
                g.scratch("group_score", Elem::F32, count),
                g.scratch("group_kept", Elem::F32, count),
            )
        }),
    }
}

/// One token's router logits: `experts` values from element `base` of `buf`.
struct Logits {
    buf: BufId,
    base: Expr,
    experts: u64,
}

impl Logits {
    fn at(&self, x: Expr) -> Expr {
        load(self.buf, add(self.base.clone(), x))
    }
}

/// The `top_k` experts of one token, largest first; `emit` receives each slot and its
/// expert index.
fn emit_select(
    g: &mut Gen,
    r: &RouterSelectOp,
    src: &Logits,
    bias: Option<BufId>,
    sc: &SelectScratch,
    emit: &mut dyn FnMut(&mut Gen, Expr, Expr),
) {
    let e = src.experts;
    let at = |x: Expr| src.at(x);
    let choice = sc.choice;
    if r.topk_first {
        // Raw logits decide; groups and the correction bias do not apply.
        g.range("e", i(e as i64), |g, x| g.store(choice, x.clone(), at(x)));
    } else {
        score(g, r.score, e, &at, choice);
        if let Some(b) = bias {
            g.range("e", i(e as i64), |g, x| {
                g.store(choice, x.clone(), add(load(choice, x.clone()), load(b, x)));
            });
        }
        if let (Some((count, keep)), Some((gs, kept))) = (r.groups, sc.groups) {
            let size = e / count.max(1);
            g.range("grp", i(count as i64), |g, grp| {
                let gb = g.let_("gbase", Ty::I64, mul(grp.clone(), i(size as i64)));
                let member = |x: Expr| load(choice, add(gb.clone(), x));
                let taken = sc.taken;
                // The group's two best scores: flag them in `taken` (cleared below).
                g.range("e", i(size as i64), |g, x| {
                    g.store(taken, x, f(0.0));
                });
                let first = arg_max(g, size, &member, taken);
                let v1 = g.let_("v1", Ty::F32, member(first));
                if size >= 2 {
                    let second = arg_max(g, size, &member, taken);
                    g.store(gs, grp.clone(), add(v1, member(second)));
                } else {
                    g.store(gs, grp.clone(), v1);
                }
                g.store(kept, grp, f(0.0));
            });
            for _ in 0..keep.min(count) {
                arg_max(g, count, &|x| load(gs, x), kept);
            }
            g.range("e", i(e as i64), |g, x| {
                let grp = div(x.clone(), i(size as i64));
                let v = select(
                    gt(load(kept, grp), f(0.5)),
                    load(choice, x.clone()),
                    f(MASKED),
                );
                g.store(choice, x, v);
            });
        }
    }
    let taken = sc.taken;
    g.range("e", i(e as i64), |g, x| g.store(taken, x, f(0.0)));
    g.range("slot", i(r.top_k as i64), |g, slot| {
        let best = arg_max(g, e, &|x| load(choice, x), taken);
        emit(g, slot, best);
    });
}

/// The routing weights of one token's `k` chosen experts (`sel(j)`, already in range),
/// into `dst[0..k]`.
fn emit_weights(
    g: &mut Gen,
    r: &RouterWeightsOp,
    src: &Logits,
    k: u64,
    sel: &dyn Fn(Expr) -> Expr,
    dst: BufId,
) {
    let e = src.experts;
    let at = |x: Expr| src.at(x);
    let picked = |j: Expr| at(sel(j));
    if r.topk_first {
        score(g, r.score, k, &picked, dst);
    } else {
        match r.score {
            RouterScore::Sigmoid => g.range("j", i(k as i64), |g, j| {
                g.store(dst, j.clone(), sigmoid(picked(j)));
            }),
            RouterScore::Softmax => {
                // The softmax over all experts, evaluated at the chosen ones only.
                let mx = g.local("mx", Ty::F32, at(i(0)));
                g.for_("e", i(1), i(e as i64), 1, LoopKind::Serial, |g, x| {
                    g.set(mx, max(var(mx), at(x)));
                });
                let sum = g.local("sum", Ty::F32, f(0.0));
                g.range("e", i(e as i64), |g, x| {
                    g.set(sum, add(var(sum), exp(sub(at(x), var(mx)))));
                });
                g.range("j", i(k as i64), |g, j| {
                    let w = div(exp(sub(picked(j.clone()), var(mx))), var(sum));
                    g.store(dst, j, w);
                });
            }
        }
    }
    if r.renormalize {
        let sum = g.local("wsum", Ty::F32, f(0.0));
        g.range("j", i(k as i64), |g, j| {
            g.set(sum, add(var(sum), load(dst, j)));
        });
        let den = g.let_("den", Ty::F32, add(var(sum), f(1e-20)));
        g.range("j", i(k as i64), |g, j| {
            g.store(dst, j.clone(), div(load(dst, j), den));
        });
    }
    let scale = r.scale as f32;
    if scale != 1.0 {
        g.range("j", i(k as i64), |g, j| {
            g.store(dst, j.clone(), mul(load(dst, j), f(scale)));
        });
    }
}

/// `Op::RouterSelect`: logits `[s, E]`, [correction bias `[E]`] → indices `[s, k]` (i32).
fn router_select(cx: &NodeLowering, r: RouterSelectOp) -> Result<Kernel, KernelError> {
    let id = cx.id;
    let names: &[&str] = if r.correction_bias {
        &["logits", "correction_bias"]
    } else {
        &["logits"]
    };
    let (mut g, ins) = Gen::with_operands(cx, names)?;
    let (s, e) = rank2(id, &ins[0].1, "router logits")?;
    check_router(id, e, r.top_k, r.groups)?;
    let out = g.out;
    let sc = select_scratch(&mut g, &r, e);
    let (lb, bias) = (ins[0].0, r.correction_bias.then(|| ins[1].0));
    let k = r.top_k as i64;
    g.for_("t", i(0), dim(s), 1, LoopKind::Parallel, |g, t| {
        let base = g.let_("lbase", Ty::I64, mul(t.clone(), i(e as i64)));
        let src = Logits {
            buf: lb,
            base,
            experts: e,
        };
        emit_select(g, &r, &src, bias, &sc, &mut |g, slot, best| {
            g.store(out, add(mul(t.clone(), i(k)), slot), best);
        });
    });
    Ok(g.finish())
}

fn check_router(id: NodeId, e: u64, k: u64, groups: Option<(u64, u64)>) -> Result<(), KernelError> {
    if e == 0 || k == 0 || k > e {
        return Err(invalid(id, format!("top-{k} of {e} experts")));
    }
    if let Some((count, keep)) = groups {
        if count == 0 || e % count != 0 || keep == 0 || keep > count {
            return Err(invalid(
                id,
                format!("{e} experts do not split into {count} groups keeping {keep}"),
            ));
        }
    }
    Ok(())
}

/// `Op::RouterWeights`: logits `[s, E]`, indices `[s, k]` → weights `[s, k]`.
fn router_weights(cx: &NodeLowering, r: RouterWeightsOp) -> Result<Kernel, KernelError> {
    let id = cx.id;
    let (mut g, ins) = Gen::with_operands(cx, &["logits", "idx"])?;
    let (s, e) = rank2(id, &ins[0].1, "router logits")?;
    let (_, k) = rank2(id, &ins[1].1, "expert indices")?;
    let (lb, ib) = (ins[0].0, ins[1].0);
    let out = g.out;
    let wt = g.scratch("weights", Elem::F32, k);
    let kk = i(k as i64);
    g.for_("t", i(0), dim(s), 1, LoopKind::Parallel, |g, t| {
        let base = g.let_("lbase", Ty::I64, mul(t.clone(), i(e as i64)));
        let ibase = g.let_("ibase", Ty::I64, mul(t.clone(), kk.clone()));
        let sel = |j: Expr| clamp_index(load(ib, add(ibase.clone(), j)), e);
        let src = Logits {
            buf: lb,
            base,
            experts: e,
        };
        emit_weights(g, &r, &src, k, &sel, wt);
        g.range("j", kk.clone(), |g, j| {
            g.store(out, add(ibase.clone(), j.clone()), load(wt, j));
        });
    });
    Ok(g.finish())
}

/// `Op::ExpertMatMul`: x `[s, k]` or `[s, slots, k]`, weights `[E, n, k]`, indices
/// `[s, slots]` → `[s, slots, n]`; parallel over every output element.
fn expert_matmul(cx: &NodeLowering) -> Result<Kernel, KernelError> {
    let id = cx.id;
    let (mut g, ins) = Gen::with_operands(cx, &["x", "w", "idx"])?;
    let (xb, wb, ib) = (ins[0].0, ins[1].0, ins[2].0);
    let (s, slots) = rank2(id, &ins[2].1, "expert indices")?;
    let (e, n, kd) = match ins[1].1.shape.as_slice() {
        [a, b, c] => (
            konst(id, *a, "experts")?,
            konst(id, *b, "expert rows")?,
            konst(id, *c, "expert columns")?,
        ),
        _ => {
            return Err(invalid(
                id,
                format!("expert weights must be [E, n, k], found {}", ins[1].1),
            ))
        }
    };
    let per_slot = ins[0].1.shape.len() == 3;
    let out = g.out;
    let total = mul(mul(dim(s), i(slots as i64)), i(n as i64));
    g.for_("q", i(0), total, 1, LoopKind::Parallel, |g, q| {
        let rs = g.let_("rs", Ty::I64, div(q.clone(), i(n as i64)));
        let o = g.let_("o", Ty::I64, sub(q.clone(), mul(rs.clone(), i(n as i64))));
        let ex = g.let_("ex", Ty::I64, clamp_index(load(ib, rs.clone()), e));
        let xrow = if per_slot {
            rs
        } else {
            div(rs, i(slots as i64))
        };
        let xbase = g.let_("xbase", Ty::I64, mul(xrow, i(kd as i64)));
        let wrow = g.let_("wr", Ty::I64, add(mul(ex, i(n as i64)), o));
        let y = g.row_dot("acc", kd, &|c| load(xb, add(xbase.clone(), c)), wb, wrow);
        g.store(out, q, y);
    });
    Ok(g.finish())
}

/// The fused MoE layer, parallel over tokens. Per token: select the experts and their
/// weights into scratch, run each chosen expert's up (and gate) projection and activation
/// into `act[slot, I]`, then every output feature sums the chosen experts' down
/// projections (weighted unless `weight_input`) in slot order.
fn moe(cx: &NodeLowering, op: &MoeOp) -> Result<Kernel, KernelError> {
    let id = cx.id;
    let mut names = vec!["x", "logits"];
    if op.select.correction_bias {
        names.push("correction_bias");
    }
    let mats: &[&str] = if op.gated() {
        &["up", "gate", "down"]
    } else {
        &["up", "down"]
    };
    names.extend_from_slice(mats);
    if op.bias {
        let biases: &[&str] = if op.gated() {
            &["up_b", "gate_b", "down_b"]
        } else {
            &["up_b", "down_b"]
        };
        names.extend_from_slice(biases);
    }
    let (mut g, ins) = Gen::with_operands(cx, &names)?;
    let (s, hidden) = rank2(id, &ins[0].1, "moe input")?;
    let (_, e) = rank2(id, &ins[1].1, "router logits")?;
    let k = op.select.top_k;
    check_router(id, e, k, op.select.groups)?;
    let cb = op.select.correction_bias as usize;
    let (xb, lb, bias) = (
        ins[0].0,
        ins[1].0,
        op.select.correction_bias.then(|| ins[2].0),
    );
    let w0 = 2 + cb;
    let m = op.matrices();
    let up = ins[w0].0;
    let gate = op.gated().then(|| ins[w0 + 1].0);
    let down = ins[w0 + m - 1].0;
    let inter = match ins[w0].1.shape.as_slice() {
        [_, n, _] => konst(id, *n, "expert hidden size")?,
        _ => {
            return Err(invalid(
                id,
                format!("expert weights must be [E, n, k], found {}", ins[w0].1),
            ))
        }
    };
    let b_up = op.bias.then(|| ins[w0 + m].0);
    let b_gate = (op.bias && op.gated()).then(|| ins[w0 + m + 1].0);
    let b_down = op.bias.then(|| ins[w0 + 2 * m - 1].0);
    let out = g.out;
    let sc = select_scratch(&mut g, &op.select, e);
    let sel = g.scratch("selected", Elem::I32, k);
    let wt = g.scratch("weights", Elem::F32, k);
    let act = g.scratch("act", Elem::F32, k * inter);
    let (h, ii) = (i(hidden as i64), i(inter as i64));

    g.for_("t", i(0), dim(s), 1, LoopKind::Parallel, |g, t| {
        let base = g.let_("lbase", Ty::I64, mul(t.clone(), i(e as i64)));
        let src = Logits {
            buf: lb,
            base,
            experts: e,
        };
        emit_select(g, &op.select, &src, bias, &sc, &mut |g, slot, best| {
            g.store(sel, slot, best);
        });
        emit_weights(g, &op.weights, &src, k, &|j| load(sel, j), wt);
        let xbase = g.let_("xbase", Ty::I64, mul(t.clone(), h.clone()));
        g.range("slot", i(k as i64), |g, slot| {
            let ex = g.let_("ex", Ty::I64, load(sel, slot.clone()));
            let w = g.let_("w", Ty::F32, load(wt, slot.clone()));
            let abase = g.let_("abase", Ty::I64, mul(slot, ii.clone()));
            g.range("n", ii.clone(), |g, n| {
                let row = g.let_("row", Ty::I64, add(mul(ex.clone(), ii.clone()), n.clone()));
                // Llama 4 scales the expert's input by its weight, element by element.
                let input = |c: Expr| {
                    let x = load(xb, add(xbase.clone(), c));
                    if op.weight_input {
                        mul(x, w.clone())
                    } else {
                        x
                    }
                };
                let proj = |g: &mut Gen, wbuf: BufId, b: Option<BufId>, nm: &str| {
                    let y = g.row_dot(nm, hidden, &input, wbuf, row.clone());
                    match b {
                        Some(bb) => add(y, load(bb, row.clone())),
                        None => y,
                    }
                };
                let u = proj(g, up, b_up, "up");
                let u = g.let_("u", Ty::F32, u);
                let a = match (op.act, gate) {
                    (ExpertAct::Plain(fun), _) => unary(g, fun, u),
                    (ExpertAct::Glu(fun), Some(gb)) => {
                        let gv = proj(g, gb, b_gate, "gate");
                        let a = unary(g, fun, gv);
                        mul(a, u)
                    }
                    (ExpertAct::Clamped { alpha, limit }, Some(gb)) => {
                        let gv = proj(g, gb, b_gate, "gate");
                        clamped_swiglu(g, alpha, limit, gv, u)
                    }
                    // `gated()` is true exactly for these two, so the gate exists.
                    (_, None) => u,
                };
                g.store(act, add(abase.clone(), n), a);
            });
        });
        g.range("o", h.clone(), |g, o| {
            let y = g.local("y", Ty::F32, f(0.0));
            g.range("slot", i(k as i64), |g, slot| {
                let ex = g.let_("ex", Ty::I64, load(sel, slot.clone()));
                let row = g.let_("drow", Ty::I64, add(mul(ex, h.clone()), o.clone()));
                let abase = g.let_("abase", Ty::I64, mul(slot.clone(), ii.clone()));
                let a = |c: Expr| load(act, add(abase.clone(), c));
                let d = g.row_dot("down", inter, &a, down, row.clone());
                let mut d = match b_down {
                    Some(bb) => add(d, load(bb, row)),
                    None => d,
                };
                if !op.weight_input {
                    d = mul(d, load(wt, slot));
                }
                g.set(y, add(var(y), d));
            });
            g.store(out, add(mul(t.clone(), h.clone()), o), var(y));
        });
    });
    Ok(g.finish())
}
