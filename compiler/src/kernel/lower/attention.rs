//! Kernel generators for attention (`Op::Attention`, `Op::FlashAttention`) and the fused
//! QK-norm + RoPE + KV-cache append (`Op::NormRope`); see `mod.rs` for the buffer
//! convention. Also the small statement builder and expression helpers that `moe.rs`
//! shares.
//!
//! Attention runs one online softmax per (query row, head) pair — the parallel axis — over
//! the visible key range only, a block of `BLOCK` keys at a time, exactly as the
//! interpreter's `flash_attention` does (but accumulating in f32). MLA's absorbed form over
//! the latent cache is a parameter of the same generator (a query prologue and an output
//! epilogue per pair), not a second kernel.

use super::KernelError;
use crate::ir::{AttnOp, DType, Dim, Graph, NodeId, NormKind, NormRopeOp, Op, Type};
use crate::kernel::build::{add, bin, div, f, i, load, mul, past, select, seq, sub, un, var};
use crate::kernel::{Access, BinOp, BufId, Elem, Expr, Kernel, LoopKind, Stmt, Ty, UnOp, VarId};
use archc_spec::Pairing;

pub(super) fn kernel(graph: &Graph, id: NodeId, name: &str) -> Result<Kernel, KernelError> {
    let node = graph.node(id);
    match &node.op {
        Op::Attention(a) => attention(graph, id, name, *a, false),
        Op::FlashAttention(fa) => attention(graph, id, name, fa.attn, fa.gate),
        Op::NormRope(n) => norm_rope(graph, id, name, n),
        op => Err(KernelError::Unsupported {
            node: id.0,
            op: crate::ir::op_text(op),
        }),
    }
}

/// Keys per block of the online softmax (the interpreter's block size).
const BLOCK: u64 = 16;

/// The most negative finite f32: the running maximum before any logit is seen. It keeps
/// infinities out of the kernels (`exp(MIN - m)` is 0 for every finite logit `m`).
const NO_MAX: f32 = f32::MIN;

// ---------------------------------------------------------------------------------------
// Shared helpers (also used by `moe.rs`).

/// A kernel under construction: statements go into the innermost open block.
pub(super) struct Gen {
    pub k: Kernel,
    blocks: Vec<Vec<Stmt>>,
}

impl Gen {
    pub fn new(name: &str) -> Gen {
        Gen {
            k: Kernel::new(name),
            blocks: vec![Vec::new()],
        }
    }

    fn push(&mut self, s: Stmt) {
        if let Some(b) = self.blocks.last_mut() {
            b.push(s);
        }
    }

    /// `let name = e`, returned as an expression.
    pub fn let_(&mut self, name: &str, ty: Ty, value: Expr) -> Expr {
        let v = self.k.var(name, ty);
        self.push(Stmt::Let { var: v, value });
        var(v)
    }

    /// `local name: ty = init`.
    pub fn local(&mut self, name: &str, ty: Ty, init: Expr) -> VarId {
        let v = self.k.var(name, ty);
        self.push(Stmt::Local { var: v, init });
        v
    }

    pub fn set(&mut self, v: VarId, value: Expr) {
        self.push(Stmt::Set { var: v, value });
    }

    pub fn store(&mut self, buf: BufId, index: Expr, value: Expr) {
        self.push(Stmt::Store { buf, index, value });
    }

    /// `for name in start..end step step { body }`; `body` gets the loop variable.
    pub fn for_(
        &mut self,
        name: &str,
        start: Expr,
        end: Expr,
        step: u64,
        kind: LoopKind,
        body: impl FnOnce(&mut Gen, Expr),
    ) {
        let v = self.k.var(name, Ty::I64);
        self.blocks.push(Vec::new());
        body(self, var(v));
        let body = self.blocks.pop().unwrap_or_default();
        self.push(Stmt::Loop {
            var: v,
            start,
            end,
            step,
            kind,
            body,
        });
    }

    /// `for name in 0..n` (serial, step 1).
    pub fn range(&mut self, name: &str, n: Expr, body: impl FnOnce(&mut Gen, Expr)) {
        self.for_(name, i(0), n, 1, LoopKind::Serial, body);
    }

    pub fn if_(&mut self, cond: Expr, then: impl FnOnce(&mut Gen), els: impl FnOnce(&mut Gen)) {
        self.blocks.push(Vec::new());
        then(self);
        let then = self.blocks.pop().unwrap_or_default();
        self.blocks.push(Vec::new());
        els(self);
        let els = self.blocks.pop().unwrap_or_default();
        self.push(Stmt::If { cond, then, els });
    }

    /// `sum_{c < len} a(c) * b(c)` accumulated in f32 in a vector loop.
    pub fn dot(
        &mut self,
        name: &str,
        len: u64,
        a: impl FnOnce(Expr) -> Expr,
        b: impl FnOnce(Expr) -> Expr,
    ) -> Expr {
        let acc = self.local(name, Ty::F32, f(0.0));
        self.for_("c", i(0), i(len as i64), 1, LoopKind::Vector(8), |g, c| {
            let term = mul(a(c.clone()), b(c));
            g.set(acc, add(var(acc), term));
        });
        var(acc)
    }

    pub fn finish(mut self) -> Kernel {
        self.k.body = self.blocks.pop().unwrap_or_default();
        self.k
    }
}

pub(super) fn max(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Max, a, b)
}
pub(super) fn min(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Min, a, b)
}
pub(super) fn lt(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Lt, a, b)
}
pub(super) fn gt(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Gt, a, b)
}
pub(super) fn eq(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Eq, a, b)
}
pub(super) fn and(a: Expr, b: Expr) -> Expr {
    bin(BinOp::And, a, b)
}
pub(super) fn or(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Or, a, b)
}
pub(super) fn rem(a: Expr, b: Expr) -> Expr {
    bin(BinOp::Rem, a, b)
}
pub(super) fn exp(a: Expr) -> Expr {
    un(UnOp::Exp, a)
}
pub(super) fn neg(a: Expr) -> Expr {
    un(UnOp::Neg, a)
}
pub(super) fn tanh(a: Expr) -> Expr {
    un(UnOp::Tanh, a)
}
pub(super) fn to_f32(a: Expr) -> Expr {
    un(UnOp::ToF32, a)
}

/// `1 / (1 + exp(-x))`, as the interpreter writes it.
pub(super) fn sigmoid(x: Expr) -> Expr {
    div(f(1.0), add(f(1.0), exp(neg(x))))
}

/// A symbolic dim as an `I64` expression of `seq` and `past`.
pub(super) fn dim(d: Dim) -> Expr {
    let mut e: Option<Expr> = None;
    let mut term = |t: Expr| {
        e = Some(match e.take() {
            Some(acc) => add(acc, t),
            None => t,
        });
    };
    if d.seq != 0 {
        term(if d.seq == 1 {
            seq()
        } else {
            mul(i(d.seq as i64), seq())
        });
    }
    if d.past != 0 {
        term(if d.past == 1 {
            past()
        } else {
            mul(i(d.past as i64), past())
        });
    }
    if d.konst != 0 {
        term(i(d.konst as i64));
    }
    e.unwrap_or(i(0))
}

pub(super) fn invalid(id: NodeId, message: impl Into<String>) -> KernelError {
    KernelError::Invalid {
        node: id.0,
        message: message.into(),
    }
}

/// The buffer element type of a graph dtype (f8 only ever as a read-only weight: the
/// program refuses nodes that compute f8).
pub(super) fn elem(id: NodeId, t: DType) -> Result<Elem, KernelError> {
    super::elem(t, id.0, "operand")
}

/// A constant dim, or an error naming what it is.
pub(super) fn konst(id: NodeId, d: Dim, what: &str) -> Result<u64, KernelError> {
    d.as_const()
        .ok_or_else(|| invalid(id, format!("{what} must be a concrete dim, found {d}")))
}

/// Declare the node's operands as read buffers named by their roles (`names`, one per
/// operand: a kernel is shared by every launch, so it names roles, not program buffers)
/// and return them with their types.
pub(super) fn operands(
    g: &mut Gen,
    graph: &Graph,
    id: NodeId,
    names: &[&str],
) -> Result<Vec<(BufId, Type)>, KernelError> {
    let node = graph.node(id);
    if node.inputs.len() != names.len() {
        return Err(invalid(
            id,
            format!(
                "{} expects {} operands ({}), found {}",
                crate::ir::op_text(&node.op),
                names.len(),
                names.join(", "),
                node.inputs.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(names.len());
    for (n, (v, name)) in node.inputs.iter().zip(names).enumerate() {
        let ty = graph
            .value_type(*v)
            .ok_or_else(|| invalid(id, format!("operand {n} ({name}) does not exist")))?;
        let b = g.k.buf(*name, elem(id, ty.dtype)?, Access::Read);
        out.push((b, ty));
    }
    Ok(out)
}

/// Declare the node's result buffer (`out`).
pub(super) fn result(g: &mut Gen, graph: &Graph, id: NodeId) -> Result<BufId, KernelError> {
    let ty = &graph.node(id).ty;
    Ok(g.k.buf("out", elem(id, ty.dtype)?, Access::Write))
}

pub(super) fn scratch(g: &mut Gen, name: &str, elem: Elem, len: u64) -> BufId {
    g.k.buf(name, elem, Access::Scratch { len: len.max(1) })
}

/// The shape of a rank-3 operand as (dim 0, const dim 1, const dim 2).
fn rank3(id: NodeId, t: &Type, what: &str) -> Result<(Dim, u64, u64), KernelError> {
    match t.shape.as_slice() {
        [a, b, c] => Ok((
            *a,
            konst(id, *b, &format!("{what} dim 1"))?,
            konst(id, *c, &format!("{what} dim 2"))?,
        )),
        _ => Err(invalid(id, format!("{what} must have rank 3, found {t}"))),
    }
}

// ---------------------------------------------------------------------------------------
// Attention.

/// `Op::Attention` (`gate` false, result `[s, H, dv]`) and `Op::FlashAttention` (result
/// `[s, H * dv]`, the same memory layout). Operands: q, k, v, positions, [sinks], [gate].
///
/// With `at.mla` (MLA's latent cache, see `ir::MlaAttn`) the operands are q `[s, H, nope +
/// rope]`, the latent rows kv `[t, 1, rank + rope]`, `w = kv_b.weight [H * (nope + v),
/// rank]`, positions, [sinks], [gate], and the same loop nest gains a prologue and an
/// epilogue per (row, head): the absorbed query `q_lat = q_nope · W_UK_h` goes into a
/// scratch of `rank`, logits are `q_lat · c_j + q_rope · k_rope_j`, the accumulator sums the
/// latent rows `c_j` (`rank` wide), and the output is `W_UV_h · acc / l` (`v` wide). No key
/// or value of any head is ever formed.
fn attention(
    graph: &Graph,
    id: NodeId,
    name: &str,
    at: AttnOp,
    gated: bool,
) -> Result<Kernel, KernelError> {
    let mut g = Gen::new(name);
    let mut names = match at.mla {
        Some(_) => vec!["q", "kv", "w_kv_b", "positions"],
        None => vec!["q", "k", "v", "positions"],
    };
    if at.sinks {
        names.push("sinks");
    }
    if gated {
        names.push("gate");
    }
    let ins = operands(&mut g, graph, id, &names)?;
    let (qb, kb, vb, pb) = (ins[0].0, ins[1].0, ins[2].0, ins[3].0);
    let sinks = at.sinks.then(|| ins[4].0);
    let gate = gated.then(|| ins[4 + at.sinks as usize].0);
    let (s, h, d) = rank3(id, &ins[0].1, "q")?;
    let (t, kvh, dk) = rank3(id, &ins[1].1, "k")?;
    let misfit = || {
        invalid(
            id,
            format!(
                "attention shapes do not fit: q {}, k {}, v {}",
                ins[0].1, ins[1].1, ins[2].1
            ),
        )
    };
    // `dacc`: the accumulator's width (values, or MLA's latent); `dv`: the output's.
    let (dacc, dv) = match at.mla {
        Some(m) => {
            let fits = kvh == 1
                && d >= m.nope
                && dk >= m.rank
                && d - m.nope == dk - m.rank
                && m.rank > 0
                && m.v > 0;
            if !fits {
                return Err(misfit());
            }
            (m.rank, m.v)
        }
        None => {
            let (_, kvh2, dv) = rank3(id, &ins[2].1, "v")?;
            if dk != d || kvh2 != kvh || kvh == 0 || h % kvh != 0 {
                return Err(misfit());
            }
            (dv, dv)
        }
    };
    let group = h / kvh;
    let out = result(&mut g, graph, id)?;
    let acc = scratch(&mut g, "acc", Elem::F32, dacc);
    let sc = scratch(&mut g, "scores", Elem::F32, BLOCK);
    let qlat = at.mla.map(|m| scratch(&mut g, "q_lat", Elem::F32, m.rank));
    let (hh, dd, dacc_e, dvv, kk) = (
        i(h as i64),
        i(d as i64),
        i(dacc as i64),
        i(dv as i64),
        i(kvh as i64),
    );

    let rows = mul(dim(s), hh.clone());
    g.for_("r", i(0), rows, 1, LoopKind::Parallel, |g, r| {
        let row = g.let_("row", Ty::I64, div(r.clone(), hh.clone()));
        let head = g.let_("head", Ty::I64, rem(r.clone(), hh.clone()));
        // MLA's latent rows are shared by every head: there is no KV head to pick.
        let kv = match at.mla {
            Some(_) => i(0),
            None => g.let_("kv", Ty::I64, div(head.clone(), i(group as i64))),
        };
        let p = g.let_("p", Ty::I64, load(pb, row));
        // The visible keys are one contiguous range [lo, hi): every mask is an interval.
        let mut lo = i(0);
        let mut hi = dim(t);
        if at.causal {
            hi = min(hi, add(p.clone(), i(1)));
        }
        if let Some(w) = at.window {
            lo = max(lo, sub(add(p.clone(), i(1)), i(w as i64)));
        }
        if let Some(c) = at.chunk {
            let c = i(c as i64);
            let start = g.let_("chunk", Ty::I64, mul(div(p.clone(), c.clone()), c.clone()));
            lo = max(lo, start.clone());
            hi = min(hi, add(start, c));
        }
        let lo = g.let_("lo", Ty::I64, lo);
        let hi = g.let_("hi", Ty::I64, hi);
        // A sink is one more logit with no value row: it starts the running sums.
        let (m0, l0) = match sinks {
            Some(sb) => (load(sb, head.clone()), f(1.0)),
            None => (f(NO_MAX), f(0.0)),
        };
        let m = g.local("m", Ty::F32, m0);
        let l = g.local("l", Ty::F32, l0);
        g.for_("c", i(0), dacc_e.clone(), 1, LoopKind::Vector(8), |g, c| {
            g.store(acc, c, f(0.0));
        });
        let qbase = g.let_("qbase", Ty::I64, mul(r.clone(), dd.clone()));
        // MLA: the first row of this head's W_UK and the absorbed query q_lat (a sum of
        // W_UK's rows weighted by q_nope, so the weight is read row by row).
        let mla = at.mla.zip(qlat).map(|(ml, qlat)| {
            let wbase = g.let_(
                "wbase",
                Ty::I64,
                mul(head.clone(), i(((ml.nope + ml.v) * ml.rank) as i64)),
            );
            let rk = i(ml.rank as i64);
            g.for_("c", i(0), rk.clone(), 1, LoopKind::Vector(8), |g, c| {
                g.store(qlat, c, f(0.0));
            });
            g.range("n", i(ml.nope as i64), |g, n| {
                let qn = g.let_("qn", Ty::F32, load(qb, add(qbase.clone(), n.clone())));
                let wrow = g.let_("wrow", Ty::I64, add(wbase.clone(), mul(n, rk.clone())));
                g.for_("c", i(0), rk.clone(), 1, LoopKind::Vector(8), |g, c| {
                    let upd = add(
                        load(qlat, c.clone()),
                        mul(qn, load(vb, add(wrow, c.clone()))),
                    );
                    g.store(qlat, c, upd);
                });
            });
            (ml, qlat, wbase)
        });
        // Where key row `j` and value row `j` start, in `kb` and in the value buffer.
        let kbase_of = |j: Expr| match at.mla {
            Some(_) => mul(j, i(dk as i64)),
            None => mul(add(mul(j, kk.clone()), kv.clone()), dd.clone()),
        };
        let (vbuf, vbase_of): (BufId, Box<dyn Fn(Expr) -> Expr>) = match at.mla {
            Some(_) => (kb, Box::new(move |j| mul(j, i(dk as i64)))),
            None => {
                let (kk, kv, dvv) = (kk.clone(), kv.clone(), dvv.clone());
                (
                    vb,
                    Box::new(move |j| mul(add(mul(j, kk.clone()), kv.clone()), dvv.clone())),
                )
            }
        };
        g.for_("jb", lo, hi.clone(), BLOCK, LoopKind::Serial, |g, jb| {
            let je = g.let_("je", Ty::I64, min(add(jb.clone(), i(BLOCK as i64)), hi));
            let bm = g.local("bm", Ty::F32, f(NO_MAX));
            g.for_("j", jb.clone(), je.clone(), 1, LoopKind::Serial, |g, j| {
                let kbase = g.let_("kbase", Ty::I64, kbase_of(j.clone()));
                let dot = match mla {
                    Some((ml, qlat, _)) => {
                        let lat = g.dot(
                            "dot",
                            ml.rank,
                            |c| load(qlat, c),
                            |c| load(kb, add(kbase.clone(), c)),
                        );
                        let rope = d - ml.nope;
                        let qr = add(qbase.clone(), i(ml.nope as i64));
                        let kr = add(kbase, i(ml.rank as i64));
                        let rot = g.dot(
                            "dot_rope",
                            rope,
                            |c| load(qb, add(qr, c)),
                            |c| load(kb, add(kr, c)),
                        );
                        add(lat, rot)
                    }
                    None => g.dot(
                        "dot",
                        d,
                        |c| load(qb, add(qbase.clone(), c)),
                        |c| load(kb, add(kbase, c)),
                    ),
                };
                let mut x = mul(dot, f(at.scale as f32));
                if let Some(cap) = at.softcap {
                    let cap = f(cap as f32);
                    let xv = g.let_("x", Ty::F32, x);
                    x = mul(cap.clone(), tanh(div(xv, cap)));
                }
                let x = g.let_("logit", Ty::F32, x);
                g.store(sc, sub(j, jb.clone()), x.clone());
                g.set(bm, max(var(bm), x));
            });
            let new_m = g.let_("new_m", Ty::F32, max(var(m), var(bm)));
            let corr = g.let_("corr", Ty::F32, exp(sub(var(m), new_m.clone())));
            g.set(l, mul(var(l), corr.clone()));
            g.for_("c", i(0), dacc_e.clone(), 1, LoopKind::Vector(8), |g, c| {
                g.store(acc, c.clone(), mul(load(acc, c), corr));
            });
            g.for_("j", jb.clone(), je, 1, LoopKind::Serial, |g, j| {
                let e = g.let_(
                    "e",
                    Ty::F32,
                    exp(sub(load(sc, sub(j.clone(), jb)), new_m.clone())),
                );
                g.set(l, add(var(l), e.clone()));
                let vbase = g.let_("vbase", Ty::I64, vbase_of(j));
                g.for_("c", i(0), dacc_e.clone(), 1, LoopKind::Vector(8), |g, c| {
                    let upd = add(
                        load(acc, c.clone()),
                        mul(e, load(vbuf, add(vbase, c.clone()))),
                    );
                    g.store(acc, c, upd);
                });
            });
            g.set(m, new_m);
        });
        // No visible key and no sink leaves l = 0 and acc = 0: the row is zero.
        let den = g.let_("den", Ty::F32, select(eq(var(l), f(0.0)), f(1.0), var(l)));
        let obase = g.let_("obase", Ty::I64, mul(r, dvv.clone()));
        match mla {
            // MLA: each output is a row of W_UV_h dotted with the latent accumulator.
            Some((ml, _, wbase)) => g.range("o", dvv, |g, o| {
                let wrow = g.let_(
                    "wrow",
                    Ty::I64,
                    add(
                        wbase,
                        mul(add(o.clone(), i(ml.nope as i64)), i(ml.rank as i64)),
                    ),
                );
                let y = g.dot("up", ml.rank, |c| load(acc, c), |c| load(vb, add(wrow, c)));
                let at_o = add(obase, o);
                let mut y = div(y, den);
                if let Some(gb) = gate {
                    y = mul(y, sigmoid(load(gb, at_o.clone())));
                }
                g.store(out, at_o, y);
            }),
            None => g.for_("c", i(0), dvv, 1, LoopKind::Vector(8), |g, c| {
                let o = add(obase, c.clone());
                let mut y = div(load(acc, c), den);
                if let Some(gb) = gate {
                    y = mul(y, sigmoid(load(gb, o.clone())));
                }
                g.store(out, o, y);
            }),
        }
    });
    Ok(g.finish())
}

// ---------------------------------------------------------------------------------------
// Norm + RoPE + cache append.

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
        let Some(inv) = &self.inv else {
            return x;
        };
        let mut y = match &self.mean {
            Some(m) => mul(sub(x, m.clone()), inv.clone()),
            None => mul(x, inv.clone()),
        };
        if let Some(wb) = self.weight {
            let wv = load(wb, c.clone());
            y = mul(y, if self.plus_one { add(f(1.0), wv) } else { wv });
        }
        if let Some(bb) = self.bias {
            y = add(y, load(bb, c));
        }
        y
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
fn norm_rope(
    graph: &Graph,
    id: NodeId,
    name: &str,
    op: &NormRopeOp,
) -> Result<Kernel, KernelError> {
    let mut g = Gen::new(name);
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
    let ins = operands(&mut g, graph, id, &names)?;
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
    let out = result(&mut g, graph, id)?;
    let rows_out = graph.node(id).ty.shape.first().copied().unwrap_or(s);
    let freq = scratch(&mut g, "inv_freq", Elem::F32, half);
    let cos = scratch(&mut g, "cos", Elem::F32, half);
    let sin = scratch(&mut g, "sin", Elem::F32, half);
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
