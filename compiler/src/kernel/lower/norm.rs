//! Norm kernels (`Op::Norm`: RMSNorm and LayerNorm, with optional weight, `1 + w` and
//! bias), and the per-row statistics and normalisation that the matmuls' norm prologues
//! share. Statistics accumulate in f32 where the interpreter uses f64, which the
//! differential tests bound; the order of every operation is the interpreter's.
//!
//! Shape: parallel over rows, vector loops over the row for the statistics and the result.

use super::gen::{count_f32, lp, Gen, NodeLowering};
use super::{ix, KernelError};
use crate::ir::{NormKind, NormOp};
use crate::kernel::build::{self, f, i, load, un};
use crate::kernel::{BufId, Expr, Kernel, LoopKind, Stmt, Ty, UnOp};

/// The kernel of an `Op::Norm` node: operands x, [weight], [bias].
pub(super) fn kernel(cx: &NodeLowering, n: &NormOp) -> Result<Kernel, KernelError> {
    let mut roles = vec!["x"];
    if n.weight {
        roles.push("weight");
    }
    if n.bias {
        roles.push("bias");
    }
    let mut g = Gen::new(cx, &roles)?;
    g.norm(n)?;
    Ok(g.finish())
}

impl Gen {
    /// Per-row norm statistics of `src[base..base + k]`: statements, then `(mean, inv)`
    /// where `mean` is `None` for RMSNorm.
    fn norm_stats(
        &mut self,
        n: &NormOp,
        src: BufId,
        base: Expr,
        k: Expr,
    ) -> (Vec<Stmt>, Option<Expr>, Expr) {
        let mut out = Vec::new();
        let kf = count_f32(k.clone());
        let eps = f(n.eps as f32);
        let mean = match n.kind {
            NormKind::Rms => None,
            NormKind::Layer => {
                let sum = self.var("sum", Ty::F32);
                let kk = self.var("kk", Ty::I64);
                out.push(Stmt::Local {
                    var: sum,
                    init: f(0.0),
                });
                out.push(lp(
                    kk,
                    i(0),
                    k.clone(),
                    LoopKind::Vector(self.schedule.vector),
                    vec![Stmt::Set {
                        var: sum,
                        value: build::add(
                            build::var(sum),
                            load(src, ix::add(base.clone(), build::var(kk))),
                        ),
                    }],
                ));
                let (st, m) = self.bind("mean", Ty::F32, build::div(build::var(sum), kf.clone()));
                out.push(st);
                Some(m)
            }
        };
        let sq = self.var("sq", Ty::F32);
        let kk = self.var("kk", Ty::I64);
        let x = load(src, ix::add(base, build::var(kk)));
        let (dst, d) = match &mean {
            Some(m) => self.bind("d", Ty::F32, build::sub(x, m.clone())),
            None => self.bind("d", Ty::F32, x),
        };
        out.push(Stmt::Local {
            var: sq,
            init: f(0.0),
        });
        out.push(lp(
            kk,
            i(0),
            k,
            LoopKind::Vector(self.schedule.vector),
            vec![
                dst,
                Stmt::Set {
                    var: sq,
                    value: build::add(build::var(sq), build::mul(d.clone(), d)),
                },
            ],
        ));
        let inv = build::div(
            f(1.0),
            un(UnOp::Sqrt, build::add(build::div(build::var(sq), kf), eps)),
        );
        let (st, inv) = self.bind("inv", Ty::F32, inv);
        out.push(st);
        (out, mean, inv)
    }

    fn norm(&mut self, n: &NormOp) -> Result<(), KernelError> {
        let x = self.shape(0, 1)?;
        let r = x.len();
        let k = ix::dim(x[r - 1]);
        let rows = ix::prod(&x[..r - 1]);
        let xb = self.ins[0].buf;
        let w = n.weight.then(|| self.ins.get(1).map(|o| o.buf)).flatten();
        let b = n
            .bias
            .then(|| self.ins.get(1 + n.weight as usize).map(|o| o.buf))
            .flatten();
        if n.weight && w.is_none() || n.bias && b.is_none() {
            return Err(self.invalid("norm weight or bias operand missing"));
        }
        let t = self.var("t", Ty::I64);
        let (base_st, base) = self.bind("base", Ty::I64, ix::mul(build::var(t), k.clone()));
        let (mut body, mean, inv) = self.norm_stats(n, xb, base.clone(), k.clone());
        body.insert(0, base_st);
        let kk = self.var("kk", Ty::I64);
        let at = ix::add(base, build::var(kk));
        let y = norm_apply(
            n.plus_one,
            load(xb, at.clone()),
            (&mean, &inv),
            (w, b),
            build::var(kk),
        );
        body.push(lp(
            kk,
            i(0),
            k,
            LoopKind::Vector(self.schedule.vector),
            vec![Stmt::Store {
                buf: self.out,
                index: at,
                value: y,
            }],
        ));
        self.push(lp(t, i(0), rows, LoopKind::Parallel, body));
        Ok(())
    }

    /// `src[base..base + k]` normalised by `n` (weight and bias `wb`), element `kk` into
    /// `xs[dst(kk)]`: a matmul's norm prologue.
    pub(super) fn norm_row_to(
        &mut self,
        n: &NormOp,
        (src, base): (BufId, Expr),
        k: Expr,
        wb: (Option<BufId>, Option<BufId>),
        (xs, dst): (BufId, &dyn Fn(Expr) -> Expr),
    ) -> Vec<Stmt> {
        let (mut out, mean, inv) = self.norm_stats(n, src, base.clone(), k.clone());
        let kk = self.var("kk", Ty::I64);
        let y = norm_apply(
            n.plus_one,
            load(src, ix::add(base, build::var(kk))),
            (&mean, &inv),
            wb,
            build::var(kk),
        );
        out.push(lp(
            kk,
            i(0),
            k,
            LoopKind::Vector(self.schedule.vector),
            vec![Stmt::Store {
                buf: xs,
                index: dst(build::var(kk)),
                value: y,
            }],
        ));
        out
    }
}

/// `((x - mean) * inv) * w + b` for element `kk` of a row, as the interpreter orders it;
/// `(mean, inv)` come from the row's statistics, then the weight and bias buffers;
/// `plus_one` scales by `1 + w` (Gemma).
pub(super) fn norm_apply(
    plus_one: bool,
    x: Expr,
    (mean, inv): (&Option<Expr>, &Expr),
    (w, b): (Option<BufId>, Option<BufId>),
    kk: Expr,
) -> Expr {
    let centered = match mean {
        Some(m) => build::sub(x, m.clone()),
        None => x,
    };
    let mut y = build::mul(centered, inv.clone());
    if let Some(w) = w {
        let wv = load(w, kk.clone());
        let wv = if plus_one { build::add(f(1.0), wv) } else { wv };
        y = build::mul(y, wv);
    }
    if let Some(b) = b {
        y = build::add(y, load(b, kk));
    }
    y
}
